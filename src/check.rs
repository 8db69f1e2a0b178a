//! `auditrail check`: read a finite input once through every stage except the outputs and
//! print, one JSON line each, exactly what the outputs would be sent.
//!
//! Pod metadata comes from the Downward API (environment and `enrich.podinfo_dir`) and the
//! input's path; `check` never contacts the Kubernetes API.

use std::io::{self, Read, Write};
use std::path::Path;

use crate::ack::Ack;
use crate::config::Config;
use crate::enrich::{self, Enrichment};
use crate::line::{Stats, StreamInfo};
use crate::pipeline::Processor;
use crate::source::{fingerprint, fingerprint_head, read_head, LineReader};

/// Why `check` could not finish.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("cannot read input {path}: {source}")]
    Input {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot write output: {0}")]
    Output(#[source] io::Error),
}

/// Reads `input` (a path, or `-` for stdin) once, writes every record it would ship to `out`
/// as one JSON line each, and returns the counts.
///
/// Pod metadata comes from the Downward API (environment and `enrich.podinfo_dir`) and the
/// input's path; `check` never contacts the Kubernetes API.
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
    let (mut reader, identity): (Box<dyn Read>, u64) = if input == "-" {
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
    let mut stream = StreamInfo::new(input, identity);
    let enrichment = Enrichment::new(config.enrich.clone());
    if config.enrich.kubernetes != enrich::Mode::Off {
        let env = |name: &str| std::env::var(name).ok();
        enrichment.set_downward(enrich::downward(&env, &config.enrich.podinfo_dir));
        let path = (input != "-").then(|| Path::new(input));
        let meta = enrichment.for_stream(path, config.source.container.as_deref());
        stream.kubernetes = meta.json;
        stream.pod_uid = meta.pod_uid;
    }
    let mut lines = LineReader::new(config.source.format, config.source.max_line_bytes, 0);
    let mut stats = Stats::default();
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut write_error = None;
    loop {
        let n = lines.fill(&mut reader).map_err(input_error)?;
        stats.bytes += n as u64;
        let at_end = n == 0;
        if at_end {
            // A last line without `\n` is complete once the input ends.
            lines.finish_input();
        }
        lines.drain(|framed, _| {
            if let Some(record) = processor.process(framed, &stream, &mut stats, |_, _| Ack::none())
            {
                record.write_json_line(&mut buf);
            }
        });
        if buf.len() >= 32 * 1024 || at_end {
            if let Err(e) = out.write_all(&buf) {
                write_error = Some(e);
                break;
            }
            buf.clear();
        }
        if at_end {
            break;
        }
    }
    if let Some(e) = write_error {
        return Err(CheckError::Output(e));
    }
    out.flush().map_err(CheckError::Output)?;
    stats.malformed = lines.framer.malformed;
    stats.incomplete = lines.framer.pending();
    Ok(stats)
}
