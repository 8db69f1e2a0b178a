//! The pipeline's per-line stages: extract → filter → retention → envelope.
//!
//! They run inline in the source's read loop through a [`Processor`], because 9 lines in 10
//! are dropped after the cheap pre-check and must cost no allocation or hand-off. Only records
//! cross a bounded channel to the outputs; acknowledgements come back through [`crate::ack`].
//!
//! Guarantees: every line handed in is counted exactly once in [`Stats`] (ordinary, audit,
//! invalid, oversize or partial); a record is registered for acknowledgement with the number
//! of outputs whose type filter takes it, so its checkpoint waits for every one of them.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::ack::Ack;
use crate::envelope::{EnvelopeParts, KeyStrategy, LineOrigin, Record};
use crate::extract::{
    parse_time_text, AuditConfig, ExtractError, Extraction, Extractor, InvalidReason,
};
use crate::filter::{TypeFilter, TypesConfig};
use crate::line::{Framed, Stats, Stream, StreamInfo};
use crate::metrics::Metrics;
use crate::output::OutputsConfig;
use crate::retention::{RetentionConfig, RetentionPolicy};

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
    #[error(transparent)]
    Extract(ExtractError),
}

/// The config sections the per-line stages are built from.
#[derive(Debug, Clone, Copy)]
pub struct Stages<'a> {
    pub audit: &'a AuditConfig,
    pub types: &'a TypesConfig,
    pub retention: &'a RetentionConfig,
    pub outputs: &'a OutputsConfig,
}

impl Processor {
    pub fn new(config: Stages<'_>) -> Result<Processor, BuildError> {
        Ok(Processor {
            extractor: Extractor::new(config.audit).map_err(BuildError::Extract)?,
            routes: config
                .outputs
                .enabled()
                .into_iter()
                .map(|(_, own)| TypeFilter::new(own.unwrap_or(config.types)))
                .collect(),
            retention: RetentionPolicy::new(config.retention),
            key: config.outputs.key(),
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

/// The processor in force, for the sources of `run`; a config reload swaps it between two
/// read turns, so every line is processed whole by one version.
pub type SharedProcessor = Arc<std::sync::RwLock<Arc<Processor>>>;
