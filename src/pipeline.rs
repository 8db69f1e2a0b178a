//! The pipeline: source → extract → filter → retention → envelope → outputs.
//!
//! The per-line stages (extract, filter, retention, envelope) run inline in the source's
//! reading loop through a [`Processor`], because 9 lines in 10 are dropped after the cheap
//! pre-check and must cost no allocation or hand-off. Only records cross a bounded channel to
//! the outputs; acknowledgements come back through [`crate::ack`].
//!
//! `check` runs the same processor over a finite input, synchronously, and prints what it
//! would ship; `run` is in [`crate::run`].

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ack::Ack;
use crate::config::Config;
use crate::enrich::{self, Enrichment};
use crate::envelope::{EnvelopeParts, KeyStrategy, LineOrigin, Record};
use crate::extract::{parse_time_text, Extraction, Extractor, InvalidReason};
use crate::filter::TypeFilter;
use crate::metrics::Metrics;
use crate::retention::RetentionPolicy;
use crate::source::{fingerprint, fingerprint_head, read_head, Framed, LineReader, Stream};

/// What happened to the lines of a run.
/// `lines = ordinary + audit + invalid + oversize + partials` and
/// `audit = shipped + filtered_out` (in `run`, `shipped` counts records handed to the outputs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Physical lines read (a last line without `\n` counts too, once the input ends).
    pub lines: u64,
    /// Logical lines from the container's stdout and stderr (CRI and docker framing).
    pub stdout: u64,
    pub stderr: u64,
    /// Bytes read from the input.
    pub bytes: u64,
    /// Lines that are not audit records.
    pub ordinary: u64,
    /// Audit records found.
    pub audit: u64,
    /// Audit records passed on to the outputs.
    pub shipped: u64,
    /// Audit records dropped by the type filter.
    pub filtered_out: u64,
    /// Lines that looked like audit records but were not valid JSON or UTF-8.
    pub invalid: u64,
    /// Of `invalid`, those that were not valid UTF-8.
    pub invalid_utf8: u64,
    /// Lines longer than `source.max_line_bytes`.
    pub oversize: u64,
    /// Physical lines that are a partial chunk (CRI `P`, docker without `\n`) of a longer line;
    /// the line is counted once, at its final chunk.
    pub partials: u64,
    /// Physical lines that did not fit the framing (processed as raw text).
    pub malformed: u64,
    /// Files that shrank and were read again from the start.
    pub truncations: u64,
    /// Files renamed away by rotation.
    pub rotations: u64,
    /// Partial lines (CRI `P`, docker chunks) whose final chunk never came before the input
    /// ended (`check` only; `run` waits for it).
    pub incomplete: u64,
}

/// Where a processed line came from, fixed per stream.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    pub file: String,
    pub identity: u64,
    /// The pre-serialised `kubernetes` object spliced into this stream's envelopes.
    pub kubernetes: Option<std::sync::Arc<str>>,
    /// The pod's uid, when known (a possible Kafka key).
    pub pod_uid: Option<std::sync::Arc<str>>,
}

impl StreamInfo {
    /// A stream without pod metadata.
    pub fn new(file: impl Into<String>, identity: u64) -> StreamInfo {
        StreamInfo {
            file: file.into(),
            identity,
            kubernetes: None,
            pod_uid: None,
        }
    }
}

/// The per-line stages, built once from the config and shared by every source.
#[derive(Debug)]
pub struct Processor {
    extractor: Extractor,
    /// The type filter of each output in force (its own, or the global one), in the order
    /// of `OutputsConfig::enabled`.
    routes: Vec<TypeFilter>,
    retention: RetentionPolicy,
    key: KeyStrategy,
    /// Per-record metrics (`run` only).
    metrics: Option<Arc<Metrics>>,
}

/// Why a processor could not be built from a config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("audit detectors: {0}")]
    Extract(String),
}

impl Processor {
    pub fn new(config: &Config) -> Result<Processor, BuildError> {
        Ok(Processor {
            extractor: Extractor::new(&config.audit).map_err(BuildError::Extract)?,
            routes: config
                .outputs
                .enabled()
                .into_iter()
                .map(|(_, own)| TypeFilter::new(own.unwrap_or(&config.types)))
                .collect(),
            retention: RetentionPolicy::new(&config.retention),
            key: config
                .outputs
                .kafka
                .as_ref()
                .map(|k| k.key)
                .unwrap_or_default(),
            metrics: None,
        })
    }

    /// Counts every audit record in `metrics`, by format, type and class.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Processor {
        self.metrics = Some(metrics);
        self
    }

    pub fn retention(&self) -> &RetentionPolicy {
        &self.retention
    }

    /// Handles one framing result. Returns the record to ship, if any; `ack` is called only
    /// for a record, with the offset of its line and the number of outputs that take it, to
    /// register it for acknowledgement.
    pub fn process(
        &self,
        framed: Framed<'_>,
        stream: &StreamInfo,
        stats: &mut Stats,
        ack: impl FnOnce(u64, u32) -> Ack,
    ) -> Option<Record> {
        let line = match framed {
            Framed::Pending => {
                stats.lines += 1;
                stats.partials += 1;
                return None;
            }
            Framed::Oversize { .. } => {
                stats.lines += 1;
                stats.oversize += 1;
                return None;
            }
            Framed::Line(line) => line,
        };
        stats.lines += 1;
        match line.stream {
            Some(Stream::Stdout) => stats.stdout += 1,
            Some(Stream::Stderr) => stats.stderr += 1,
            None => {}
        }
        let audit = match self.extractor.extract(line.text) {
            Extraction::Ordinary => {
                stats.ordinary += 1;
                return None;
            }
            Extraction::Invalid(reason) => {
                stats.invalid += 1;
                if reason == InvalidReason::Utf8 {
                    stats.invalid_utf8 += 1;
                }
                tracing::debug!(file = %stream.file, offset = line.offset, reason = reason.as_str(), "invalid audit line skipped");
                return None;
            }
            Extraction::Audit(audit) => audit,
        };
        stats.audit += 1;
        let outputs = self
            .routes
            .iter()
            .enumerate()
            .filter(|(_, f)| f.accepts(&audit.record_type))
            .fold(0u32, |mask, (i, _)| mask | 1 << i);
        if outputs == 0 {
            stats.filtered_out += 1;
            if let Some(m) = &self.metrics {
                m.records.record(audit.format, &audit.record_type, None);
            }
            return None;
        }
        let read_time = Utc::now();
        // Expiry counts from the record's own time, else the runtime's timestamp of the line,
        // else the moment it was read.
        let base_time: DateTime<Utc> = audit
            .time
            .or_else(|| line.time.and_then(parse_time_text))
            .unwrap_or(read_time);
        let retention = self.retention.tag(&audit.record_type, base_time);
        if let Some(m) = &self.metrics {
            m.records
                .record(audit.format, &audit.record_type, Some(&retention.class));
        }
        let origin = LineOrigin {
            file: &stream.file,
            identity: stream.identity,
            stream: line.stream.map(|s| s.as_str()),
            offset: line.offset,
            time: line.time,
        };
        let record = Record::build(
            EnvelopeParts {
                origin: &origin,
                line: line.text,
                format: audit.format,
                record_type: &audit.record_type,
                time: audit.time,
                retention,
                kubernetes: stream.kubernetes.as_deref(),
                pod_uid: stream.pod_uid.as_deref(),
                prefix: audit.prefix,
                record: audit.record,
                suffix: audit.suffix,
                read_time,
            },
            self.key,
            ack(line.offset, outputs.count_ones()),
        );
        let mut record = record;
        record.outputs = outputs;
        stats.shipped += 1;
        Some(record)
    }
}

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

/// The processor in force, for the sources of `run`; a config reload swaps it between two
/// read turns, so every line is processed whole by one version.
pub type SharedProcessor = Arc<std::sync::RwLock<Arc<Processor>>>;
