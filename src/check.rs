//! `auditrail check`: read a finite input once through every stage except the outputs and
//! print, one JSON line each, exactly what the outputs would be sent.
//!
//! Pod metadata comes from the Downward API (environment and `enrich.podinfo_dir`) and the
//! input's path; `check` never contacts the Kubernetes API.
//!
//! `check --explain` (`explain.rs`) reads the input the same way and says, for each physical
//! line, why it was or was not shipped.

mod explain;

pub use explain::{explain, ExplainFormat, ExplainOptions, LineRange, LineRangeError};

use std::io::{self, Read, Write};
use std::path::Path;

use crate::budget::Charge;
use crate::config::Config;
use crate::enrich::{self, Enrichment};
use crate::line::{Stats, StreamInfo};
use crate::pipeline::Processor;
use crate::source::{fingerprint, fingerprint_head, read_head, StreamReader};

/// Why `check` could not finish.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("cannot read input {path}")]
    Input {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot write output")]
    Output(#[source] io::Error),
}

/// Reads `input` (a path, or `-` for stdin) once, writes every record it would ship to `out`
/// as one JSON line each, and returns the counts.
pub fn check(
    config: &Config,
    processor: &Processor,
    input: &str,
    out: &mut impl Write,
) -> Result<Stats, CheckError> {
    let input_error = |source| CheckError::Input {
        path: input.to_owned(),
        source,
    };
    let (mut src, mut reader) = open(config, input)?;
    let mut stats = Stats::default();
    let mut records = Vec::new();
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        let n = reader.fill(&mut src).map_err(input_error)?;
        stats.bytes += n as u64;
        let at_end = n == 0;
        reader.process(processor, &mut stats, &mut records);
        if at_end {
            // What waits for an end (a last line without `\n`, a last `P` chunk) ships as
            // it stands, marked unterminated.
            reader.flush_unterminated(processor, &mut stats, &mut records);
        }
        for record in records.drain(..) {
            record.write_json_line(&mut buf);
        }
        if buf.len() >= 32 * 1024 || at_end {
            out.write_all(&buf).map_err(CheckError::Output)?;
            buf.clear();
        }
        if at_end {
            break;
        }
    }
    out.flush().map_err(CheckError::Output)?;
    Ok(stats)
}

/// Opens `input` and the stream reader `check` reads it with: the stream identified and
/// enriched as `run` would.
fn open(config: &Config, input: &str) -> Result<(Box<dyn Read>, StreamReader), CheckError> {
    let input_error = |source| CheckError::Input {
        path: input.to_owned(),
        source,
    };
    let (src, identity): (Box<dyn Read>, u64) = if input == "-" {
        // Identified by its first line, as a file is, so that a file piped in gives the same
        // record ids as the file read by path.
        let mut stdin = io::stdin().lock();
        let head = read_head(&mut stdin).map_err(input_error)?;
        let identity = fingerprint_head(&head).unwrap_or(0);
        (Box::new(io::Cursor::new(head).chain(stdin)), identity)
    } else {
        let mut file = std::fs::File::open(Path::new(input)).map_err(input_error)?;
        let identity = fingerprint(&mut file).map_err(input_error)?.unwrap_or(0);
        (Box::new(file), identity)
    };
    let mut info = StreamInfo::new(input, identity);
    if config.enrich.kubernetes != enrich::Mode::Off {
        let enrichment = Enrichment::new(config.enrich.clone());
        let env = |name: &str| std::env::var(name).ok();
        enrichment.set_downward(enrich::downward(&env, &config.enrich.podinfo_dir));
        let path = (input != "-").then(|| Path::new(input));
        let meta = enrichment.for_stream(path, config.source.container.as_deref());
        info.kubernetes = meta.json;
        info.pod_uid = meta.pod_uid;
    }
    let reader = StreamReader::new(
        config.source.format,
        config.source.max_line_bytes,
        0,
        info,
        None,
        Charge::none(),
    );
    Ok((src, reader))
}
