//! The pipeline's per-line stages: extract → filter → retention → envelope.
//!
//! They run inline in the source's read loop through a [`Processor`], because 9 lines in 10
//! are dropped after the cheap pre-check and must cost no allocation or hand-off. Only records
//! cross a bounded channel to the outputs; acknowledgements come back through [`crate::ack`].
//!
//! Guarantees: every line handed in is counted exactly once in [`Stats`] (ordinary, audit,
//! invalid, oversize or partial), so `lines + incomplete = ordinary + audit + invalid +
//! oversize + partials`; a record is registered for acknowledgement with the number
//! of outputs whose type filter takes it, so its checkpoint waits for every one of them.
//!
//! A range of a stream that can no longer be read (skipped as oversize, truncated or deleted
//! before it was read) becomes a [`Gap`] record: type `auditrail.gap`, in the class that keeps
//! records longest, sent to every output whatever its filter, so a known loss is visible.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::ack::Ack;
use crate::envelope::{EnvelopeParts, KeyStrategy, LineOrigin, Record};
use crate::extract::{
    parse_time_text, AuditConfig, ExtractError, Extraction, Extractor, InvalidReason,
};
use crate::filter::{TypeFilter, TypesConfig};
use crate::integrity::ChainHasher;
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
    /// Bit `i` set when the `i`-th output is required: only those acknowledge a record.
    required: u32,
    retention: RetentionPolicy,
    key: KeyStrategy,
    /// Per-record metrics (`run` only).
    metrics: Option<Arc<Metrics>>,
    /// The `format` of gap records.
    gap_format: Arc<str>,
    /// How the sources link records into their segments' chains (`integrity.chain`); `None`:
    /// no chain, and no work for it on the hot path.
    chain: Option<Arc<ChainHasher>>,
}

/// The record type of a gap record.
pub const GAP_TYPE: &str = "auditrail.gap";

/// A byte range of a stream that can no longer be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// Why: `oversize`, `truncated`, `deleted`, `unreadable` (a bounded metric label).
    pub reason: &'static str,
    pub start: u64,
    /// Exclusive; when `end_known` is false, the last size seen: the loss starts at `start`
    /// and may go beyond `end` (a file deleted or rewritten while nothing read it).
    pub end: u64,
    pub end_known: bool,
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
                .map(|o| TypeFilter::new(o.types.unwrap_or(config.types)))
                .collect(),
            required: config
                .outputs
                .enabled()
                .iter()
                .enumerate()
                .filter(|(_, o)| o.required)
                .fold(0, |mask, (i, _)| mask | 1 << i),
            retention: RetentionPolicy::new(config.retention),
            key: config.outputs.key(),
            metrics: None,
            gap_format: Arc::from("auditrail"),
            chain: None,
        })
    }

    /// Counts every audit record in `metrics`, by format, type and class.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Processor {
        self.metrics = Some(metrics);
        self
    }

    /// Links every record into its segment's chain with `hasher` (`integrity.chain`).
    pub fn with_chain(mut self, hasher: Option<Arc<ChainHasher>>) -> Processor {
        self.chain = hasher;
        self
    }

    /// The chain's hasher, when `integrity.chain` is on.
    pub fn chain(&self) -> Option<&Arc<ChainHasher>> {
        self.chain.as_ref()
    }

    pub fn retention(&self) -> &RetentionPolicy {
        &self.retention
    }

    /// The extractor, for `check --explain`.
    pub(crate) fn extractor(&self) -> &Extractor {
        &self.extractor
    }

    /// The type filter in force for each output, in the order of `OutputsConfig::enabled`
    /// (bit `i` of a record's `outputs`), for `check --explain`.
    pub(crate) fn routes(&self) -> &[TypeFilter] {
        &self.routes
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
        // A line whose end never came is no physical line of its own: `incomplete` counts it.
        let line = match framed {
            Framed::Pending => {
                stats.lines += 1;
                stats.partials += 1;
                return None;
            }
            Framed::Oversize { unterminated, .. } => {
                count_physical(stats, unterminated, None);
                stats.oversize += 1;
                return None;
            }
            Framed::Line(line) => line,
        };
        count_physical(stats, line.unterminated, line.stream);
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
            id_position: line.id_position.unwrap_or(line.offset),
            time: line.time,
            unterminated: line.unterminated,
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
                natural_id: audit.natural_id.as_deref(),
                fields: &audit.fields,
            },
            self.key,
            ack(line.offset, (outputs & self.required).count_ones()),
        );
        let mut record = record;
        record.outputs = outputs;
        stats.shipped += 1;
        Some(record)
    }

    /// The record that reports `gap` of `stream`: `{"file","reason","start","end","end_known"}`,
    /// registered through `ack` at the gap's start for every output; the moment the loss was
    /// found is its `observed_time` (its `time` is `null`). Its id depends only on the stream,
    /// the range and the reason, so a gap reported again after a restart has the same id; its
    /// chain link too ([`crate::integrity::chained_parts`]).
    pub fn gap(
        &self,
        stream: &StreamInfo,
        gap: Gap,
        stats: &mut Stats,
        ack: impl FnOnce(u64, u32) -> Ack,
    ) -> Record {
        let now = Utc::now();
        tracing::warn!(
            file = %stream.file,
            start = gap.start,
            end = gap.end,
            reason = gap.reason,
            "bytes that can no longer be read; shipping a gap record"
        );
        stats.gaps += 1;
        stats.gap_bytes += gap.end.saturating_sub(gap.start);
        if let Some(m) = &self.metrics {
            m.source
                .gap_bytes
                .with_label_values(&[gap.reason])
                .inc_by(gap.end.saturating_sub(gap.start));
            m.source.gap_records.with_label_values(&[gap.reason]).inc();
        }
        let record = serde_json::json!({
            "file": stream.file,
            "reason": gap.reason,
            "start": gap.start,
            "end": gap.end,
            "end_known": gap.end_known,
        })
        .to_string();
        let id_source = format!("{GAP_TYPE} {} {} {}", gap.reason, gap.start, gap.end);
        let outputs = u32::MAX >> (32 - self.routes.len().clamp(1, 32));
        let origin = LineOrigin {
            file: &stream.file,
            identity: stream.identity,
            stream: None,
            offset: gap.start,
            id_position: gap.start,
            time: None,
            unterminated: false,
        };
        let mut record = Record::build(
            EnvelopeParts {
                origin: &origin,
                line: id_source.as_bytes(),
                format: &self.gap_format,
                record_type: GAP_TYPE,
                // The moment the loss was found is its `observed_time`: a gap reported again
                // after a restart is found at another moment, and must carry the chain link
                // it had the first time (which leaves the moment of reading out).
                time: None,
                retention: self.retention.longest(now),
                kubernetes: stream.kubernetes.as_deref(),
                pod_uid: stream.pod_uid.as_deref(),
                prefix: "",
                record: &record,
                suffix: "",
                read_time: now,
                natural_id: None,
                fields: &[],
            },
            self.key,
            ack(gap.start, (outputs & self.required).count_ones()),
        );
        record.outputs = outputs;
        record
    }
}

/// Counts a physical line of `stream`, or one line processed without its end.
fn count_physical(stats: &mut Stats, unterminated: bool, stream: Option<Stream>) {
    if unterminated {
        stats.incomplete += 1;
        return;
    }
    stats.lines += 1;
    match stream {
        Some(Stream::Stdout) => stats.stdout += 1,
        Some(Stream::Stderr) => stats.stderr += 1,
        None => {}
    }
}

/// The processor in force, for the sources of `run`; a config reload swaps it between two
/// read turns, so every line is processed whole by one version.
pub type SharedProcessor = Arc<std::sync::RwLock<Arc<Processor>>>;
