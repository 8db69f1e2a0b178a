//! Metrics and health: what an operator sees, decided in one place.
//!
//! Every metric auditrail exports is defined here, grouped by pipeline stage, registered once
//! at startup; hot paths hold the handles and never look a metric up by name. Label values are
//! bounded: record types beyond [`MAX_TYPE_LABELS`] distinct values are counted as `other`.
//!
//! The HTTP server on `metrics.listen` serves `/metrics` (Prometheus text format), `/healthz`
//! (liveness: the process and its reading loop are alive) and `/readyz` (readiness: sources
//! open, Kafka reachable and class topics verified, backlog under the limit; the body says why
//! when not ready).
//!
//! Accounting: `auditrail_source_lines_total + incomplete = ordinary + records + invalid +
//! oversize + partial_chunks`, and `records + gap_records = filtered_out + acked + in_flight`
//! for each output (a record is never dropped, so nothing else is possible).

mod health;
mod server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use serde::Deserialize;

use crate::problem::Problem;
pub(crate) use health::Health;
pub(crate) use server::{start, ListenError};

/// Distinct record types that get their own label value; the rest count as `other`.
pub(crate) const MAX_TYPE_LABELS: usize = 100;

/// The `metrics` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the HTTP server for `/metrics`, `/healthz` and `/readyz`; `null` turns it off.
    pub listen: Option<String>,
    /// Readiness fails when the unread and unacknowledged bytes of the tailed files exceed this.
    pub max_backlog_bytes: u64,
    /// Liveness fails when the reading loop has not turned for this long.
    #[serde(with = "humantime_serde")]
    pub stall_timeout: Duration,
}

/// The default metrics port.
pub(crate) const DEFAULT_LISTEN: &str = "0.0.0.0:9464";

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: Some(DEFAULT_LISTEN.into()),
            max_backlog_bytes: 256 * 1024 * 1024,
            stall_timeout: Duration::from_secs(60),
        }
    }
}

impl MetricsConfig {
    pub fn validate(&self, path: &str, problems: &mut Vec<Problem>) {
        if let Some(listen) = &self.listen {
            if listen.parse::<SocketAddr>().is_err() {
                problems.push(Problem::new(
                    format!("{path}.listen"),
                    format!("{listen:?} is not an address like 0.0.0.0:9464"),
                ));
            }
        }
        if self.stall_timeout < Duration::from_secs(1) {
            problems.push(Problem::new(
                format!("{path}.stall_timeout"),
                "must be at least 1s",
            ));
        }
    }
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).unwrap_or_else(|e| unreachable_metric(name, e));
    register(registry, c.clone(), name);
    c
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable_metric(name, e));
    register(registry, c.clone(), name);
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).unwrap_or_else(|e| unreachable_metric(name, e));
    register(registry, g.clone(), name);
    g
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable_metric(name, e));
    register(registry, g.clone(), name);
    g
}

fn register<C: prometheus::core::Collector + 'static>(registry: &Registry, c: C, name: &str) {
    if let Err(e) = registry.register(Box::new(c)) {
        unreachable_metric(name, e)
    }
}

/// Metric names and help texts are constants of this file, registered once each; a failure
/// here is a programming error caught by the unit tests, never caused by input.
fn unreachable_metric(name: &str, e: prometheus::Error) -> ! {
    panic!("metric {name} cannot be defined: {e}")
}

// === source ===

/// Metrics of the file source.
#[derive(Clone)]
pub struct SourceMetrics {
    pub lines: IntCounterVec,
    pub bytes: IntCounter,
    pub files_watched: IntGauge,
    pub rotations: IntCounter,
    pub truncations: IntCounter,
    pub partial_chunks: IntCounter,
    pub malformed: IntCounter,
    pub incomplete: IntCounter,
    pub lag_bytes: IntGauge,
    pub lag_seconds: IntGauge,
    pub reconnects: IntCounter,
    pub gaps: IntCounter,
    pub gap_bytes: IntCounterVec,
    pub gap_records: IntCounterVec,
    pub checkpoint_errors: IntCounter,
}

impl SourceMetrics {
    fn register(r: &Registry) -> Self {
        let m = SourceMetrics::define(r);
        // Series with bounded, known label values exist from the start (at 0), so a rate over
        // the first increase is right and a scrape always shows them.
        for stream in ["stdout", "stderr", "none"] {
            m.lines.with_label_values(&[stream]);
        }
        for reason in ["oversize", "truncated", "deleted", "unreadable"] {
            m.gap_bytes.with_label_values(&[reason]);
            m.gap_records.with_label_values(&[reason]);
        }
        m
    }

    fn define(r: &Registry) -> Self {
        SourceMetrics {
            lines: counter_vec(r, "auditrail_source_lines_total", "Physical lines read, by container stream.", &["stream"]),
            bytes: counter(r, "auditrail_source_bytes_total", "Bytes read from the tailed files."),
            files_watched: gauge(r, "auditrail_source_files_watched", "Files open for reading (rotated ones included until read to their end)."),
            rotations: counter(r, "auditrail_source_rotations_total", "Files renamed away by rotation."),
            truncations: counter(r, "auditrail_source_truncations_total", "Files that shrank (copy-truncate) and were read again from the start."),
            partial_chunks: counter(r, "auditrail_source_partial_chunks_total", "Physical lines that were a partial chunk (CRI P) of a longer line."),
            malformed: counter(r, "auditrail_source_malformed_lines_total", "Physical lines that did not fit the framing (processed as raw text)."),
            incomplete: counter(r, "auditrail_source_incomplete_lines_total", "Lines whose end never came (a last P chunk, a last line without a newline), processed as they stood and marked unterminated."),
            lag_bytes: gauge(r, "auditrail_source_lag_bytes", "Bytes of the tailed files not yet read and acknowledged (file size minus checkpoint)."),
            reconnects: counter(r, "auditrail_source_reconnects_total", "Times the Kubernetes log stream (kind: kubernetes) was opened again after it ended or failed."),
            gaps: counter(r, "auditrail_source_gaps_total", "Times the Kubernetes log stream resumed past lines that can no longer be read (rotated away or the container restarted while disconnected)."),
            gap_bytes: counter_vec(r, "auditrail_source_gap_bytes_total", "Bytes that could no longer be read, each range shipped as an auditrail.gap record, by reason (oversize, truncated, deleted, unreadable).", &["reason"]),
            checkpoint_errors: counter(r, "auditrail_checkpoint_errors_total", "Checkpoint saves that failed (a read-only or full volume); the pod is not ready until one works."),
            gap_records: counter_vec(r, "auditrail_source_gap_records_total", "Gap records (type auditrail.gap) shipped to every output, one per byte range that could no longer be read, by reason.", &["reason"]),
            lag_seconds: gauge(r, "auditrail_source_lag_seconds", "Seconds since the line of the last acknowledged record was read; 0 when nothing is waiting."),
        }
    }
}

// === extract, filter, retention ===

/// Per-record metrics (audit records are about one line in ten, so a lookup per record is
/// affordable; ordinary lines are counted in bulk).
pub struct RecordMetrics {
    pub ordinary: IntCounter,
    pub invalid: IntCounterVec,
    pub oversize: IntCounter,
    records: IntCounterVec,
    filtered_out: IntCounterVec,
    classes: IntCounterVec,
    types: Mutex<TypeHandles>,
}

/// The handles of the types and classes seen so far, looked up by `&str` so that counting a
/// record allocates nothing once its labels are known.
#[derive(Default)]
struct TypeHandles {
    /// Format → type → (found, filtered out).
    by_format: HashMap<String, HashMap<String, (IntCounter, IntCounter)>>,
    /// (format, type) pairs in `by_format`: at most [`MAX_TYPE_LABELS`].
    len: usize,
    classes: HashMap<String, IntCounter>,
}

impl RecordMetrics {
    fn register(r: &Registry) -> Self {
        let m = RecordMetrics::define(r);
        for reason in ["invalid_json", "invalid_utf8"] {
            m.invalid.with_label_values(&[reason]);
        }
        m
    }

    fn define(r: &Registry) -> Self {
        RecordMetrics {
            ordinary: counter(r, "auditrail_extract_ordinary_lines_total", "Lines that are not audit records."),
            invalid: counter_vec(r, "auditrail_extract_invalid_lines_total", "Lines that looked like audit records but were not valid JSON or UTF-8 (not shipped).", &["reason"]),
            oversize: counter(r, "auditrail_extract_oversize_lines_total", "Lines longer than source.max_line_bytes (skipped)."),
            records: counter_vec(r, "auditrail_extract_records_total", "Audit records found, by detector and type (types beyond the label cap count as other).", &["format", "type"]),
            filtered_out: counter_vec(r, "auditrail_filter_filtered_out_total", "Audit records dropped by the type filter, by type.", &["type"]),
            classes: counter_vec(r, "auditrail_retention_records_total", "Audit records passed on to the outputs, by retention class.", &["class"]),
            types: Mutex::new(TypeHandles::default()),
        }
    }

    /// Counts one audit record of `format` and `record_type`; `shipped` tells whether it
    /// passed the filter, and `class` is its retention class when it did.
    pub fn record(&self, format: &str, record_type: &str, class: Option<&str>) {
        let mut guard = self.types.lock().unwrap_or_else(|e| e.into_inner());
        let types = &mut *guard;
        let known = types
            .by_format
            .get(format)
            .and_then(|by_type| by_type.get(record_type));
        let (found, filtered) = match known {
            Some((found, filtered)) => (found, filtered),
            None => {
                let label = if types.len < MAX_TYPE_LABELS {
                    record_type
                } else {
                    "other"
                };
                let handles = (
                    self.records.with_label_values(&[format, label]),
                    self.filtered_out.with_label_values(&[label]),
                );
                if types.len >= MAX_TYPE_LABELS {
                    // Beyond the cap: counted as `other`, not remembered.
                    handles.0.inc();
                    match class {
                        Some(class) => self.classes.with_label_values(&[class]).inc(),
                        None => handles.1.inc(),
                    }
                    return;
                }
                types.len += 1;
                let (found, filtered) = types
                    .by_format
                    .entry(format.to_owned())
                    .or_default()
                    .entry(record_type.to_owned())
                    .or_insert(handles);
                (&*found, &*filtered)
            }
        };
        found.inc();
        match class {
            Some(class) => match types.classes.get(class) {
                Some(counter) => counter.inc(),
                None => {
                    let counter = self.classes.with_label_values(&[class]);
                    counter.inc();
                    types.classes.insert(class.to_owned(), counter);
                }
            },
            None => filtered.inc(),
        }
    }
}

// === outputs ===

/// Metrics of one output (`stdout`, `kafka`).
#[derive(Clone)]
pub struct OutputMetrics {
    pub sent: IntCounterVec,
    pub sent_bytes: IntCounterVec,
    pub acked: IntCounterVec,
    pub failed: IntCounterVec,
    pub dead_lettered: IntCounterVec,
    pub chunked: IntCounterVec,
    pub producer_restarts: IntCounterVec,
    pub dropped: IntCounterVec,
    pub in_flight_records: IntGaugeVec,
    pub in_flight_bytes: IntGaugeVec,
    pub blocked: IntGaugeVec,
    pub latency: HistogramVec,
    pub broker_up: IntGauge,
    pub topic_refused: IntGaugeVec,
}

impl OutputMetrics {
    fn register(r: &Registry) -> Self {
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "auditrail_output_delivery_latency_seconds",
                "From reading a record's line to its acknowledgement by the output.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
            &["output"],
        )
        .unwrap_or_else(|e| unreachable_metric("auditrail_output_delivery_latency_seconds", e));
        register(
            r,
            latency.clone(),
            "auditrail_output_delivery_latency_seconds",
        );
        OutputMetrics {
            sent: counter_vec(r, "auditrail_output_records_sent_total", "Records handed to an output's client (retries included).", &["output", "topic"]),
            sent_bytes: counter_vec(r, "auditrail_output_bytes_sent_total", "Bytes of records handed to an output's client.", &["output", "topic"]),
            acked: counter_vec(r, "auditrail_output_records_acked_total", "Records durably delivered (Kafka: acknowledged by the broker).", &["output", "topic"]),
            failed: counter_vec(r, "auditrail_output_records_failed_total", "Delivery attempts that failed (the record is retried, dead-lettered or held; never dropped).", &["output", "topic", "reason"]),
            dead_lettered: counter_vec(r, "auditrail_output_records_dead_lettered_total", "Records the broker rejected for good, sent to the dead-letter topic.", &["output", "topic"]),
            producer_restarts: counter_vec(r, "auditrail_kafka_producer_restarts_total", "New Kafka producers that took over: after a fatal producer error (fatal), after the broker fenced the producer (fenced), when the mounted credentials changed (credentials), or when the producer's polling thread ended (poll).", &["reason"]),
            chunked: counter_vec(r, "auditrail_kafka_records_chunked_total", "Records larger than their topic takes, sent in chunks (see the README's chunk protocol).", &["topic"]),
            dropped: counter_vec(r, "auditrail_output_records_dropped_total", "Records an optional output (required: false) had no room for while it fell behind; never for a required output.", &["output"]),
            in_flight_records: gauge_vec(r, "auditrail_output_in_flight_records", "Records taken by an output and not yet acknowledged.", &["output"]),
            in_flight_bytes: gauge_vec(r, "auditrail_output_in_flight_bytes", "Bytes of records taken by an output and not yet acknowledged.", &["output"]),
            blocked: gauge_vec(r, "auditrail_output_blocked_records", "Records held because the broker rejected them for good and no dead-letter topic takes them, or their topic is refused.", &["output"]),
            latency,
            broker_up: gauge(r, "auditrail_kafka_broker_up", "1 when the Kafka broker answered recently, else 0."),
            topic_refused: gauge_vec(r, "auditrail_kafka_topic_refused", "1 when a class topic's retention or policy is refused, else 0.", &["topic"]),
        }
    }

    /// The handles of one output, for its hot path.
    pub fn for_output(&self, output: &'static str) -> OutputHandles {
        OutputHandles {
            output,
            metrics: self.clone(),
            in_flight_records: self.in_flight_records.with_label_values(&[output]),
            in_flight_bytes: self.in_flight_bytes.with_label_values(&[output]),
            dropped: self.dropped.with_label_values(&[output]),
            blocked: self.blocked.with_label_values(&[output]),
            latency: self.latency.with_label_values(&[output]),
            topics: HashMap::new(),
        }
    }
}

/// Handles cached per output and topic (class topics are few and fixed).
#[derive(Clone)]
pub struct OutputHandles {
    pub output: &'static str,
    metrics: OutputMetrics,
    pub in_flight_records: IntGauge,
    pub in_flight_bytes: IntGauge,
    pub dropped: IntCounter,
    pub blocked: IntGauge,
    pub latency: Histogram,
    topics: HashMap<String, (IntCounter, IntCounter, IntCounter)>,
}

impl OutputHandles {
    fn topic(&mut self, topic: &str) -> &(IntCounter, IntCounter, IntCounter) {
        // Look up before inserting: the hot path must not allocate a key per record.
        if !self.topics.contains_key(topic) {
            let m = &self.metrics;
            let handles = (
                m.sent.with_label_values(&[self.output, topic]),
                m.sent_bytes.with_label_values(&[self.output, topic]),
                m.acked.with_label_values(&[self.output, topic]),
            );
            self.topics.insert(topic.to_owned(), handles);
        }
        &self.topics[topic]
    }

    pub fn sent(&mut self, topic: &str, bytes: usize) {
        let (sent, sent_bytes, _) = self.topic(topic);
        sent.inc();
        sent_bytes.inc_by(bytes as u64);
    }

    pub fn acked(&mut self, topic: &str, read_time: chrono::DateTime<chrono::Utc>) {
        self.topic(topic).2.inc();
        let seconds = (chrono::Utc::now() - read_time)
            .num_microseconds()
            .unwrap_or(0) as f64
            / 1e6;
        self.latency.observe(seconds.max(0.0));
    }

    /// `reason` must be a bounded label (an error code name, not a message).
    pub fn failed(&self, topic: &str, reason: &str) {
        self.metrics
            .failed
            .with_label_values(&[self.output, topic, reason])
            .inc();
    }

    pub fn dead_lettered(&self, topic: &str) {
        self.metrics
            .dead_lettered
            .with_label_values(&[self.output, topic])
            .inc();
    }

    pub fn producer_restarted(&self, reason: &str) {
        self.metrics
            .producer_restarts
            .with_label_values(&[reason])
            .inc();
    }

    pub fn chunked(&self, topic: &str) {
        self.metrics.chunked.with_label_values(&[topic]).inc();
    }

    pub fn broker_up(&self, up: bool) {
        self.metrics.broker_up.set(i64::from(up));
    }

    pub fn topic_refused(&self, topic: &str, refused: bool) {
        self.metrics
            .topic_refused
            .with_label_values(&[topic])
            .set(i64::from(refused));
    }
}

// === process ===

/// Metrics of the process itself.
pub struct ProcessMetrics {
    pub reloads: IntCounterVec,
    /// What `/readyz` answers, as a metric (alerts cannot read HTTP status codes); set by
    /// each scrape of `/metrics` and each `/readyz`, not by a timer.
    pub ready: IntGauge,
    /// The memory budget (`memory.budget_bytes` or derived), and what is charged to it.
    pub memory_budget: IntGauge,
    pub memory_used: IntGauge,
}

impl ProcessMetrics {
    fn register(r: &Registry) -> Self {
        let info = gauge_vec(
            r,
            "auditrail_build_info",
            "Always 1; the labels say which build runs.",
            &["version", "commit"],
        );
        info.with_label_values(&[
            env!("CARGO_PKG_VERSION"),
            option_env!("AUDITRAIL_COMMIT").unwrap_or("unknown"),
        ])
        .set(1);
        #[cfg(target_os = "linux")]
        register(
            r,
            prometheus::process_collector::ProcessCollector::for_self(),
            "process",
        );
        ProcessMetrics {
            reloads: counter_vec(
                r,
                "auditrail_config_reloads_total",
                "Config reloads, by result (success, failure).",
                &["result"],
            ),
            ready: gauge(
                r,
                "auditrail_ready",
                "1 when /readyz answers ready, else 0.",
            ),
            memory_budget: gauge(
                r,
                "auditrail_memory_budget_bytes",
                "Bytes records and read buffers may hold before reading stops (memory.budget_bytes).",
            ),
            memory_used: gauge(
                r,
                "auditrail_memory_used_bytes",
                "Bytes records and read buffers hold now, charged to the memory budget.",
            ),
        }
    }
}

/// All metrics.
pub struct Metrics {
    pub registry: Registry,
    pub source: SourceMetrics,
    pub records: RecordMetrics,
    pub outputs: OutputMetrics,
    pub process: ProcessMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        Arc::new(Metrics {
            source: SourceMetrics::register(&registry),
            records: RecordMetrics::register(&registry),
            outputs: OutputMetrics::register(&registry),
            process: ProcessMetrics::register(&registry),
            registry,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec only fails on metric families that cannot exist here.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_registers_and_follows_the_naming_rules() {
        let m = Metrics::new();
        m.source.lines.with_label_values(&["stdout"]).inc();
        m.records.record("immuta", "sqlQuery", Some("forever"));
        let text = m.encode();
        for line in text.lines().filter(|l| l.starts_with("# TYPE auditrail_")) {
            let mut parts = line.split_whitespace().skip(2);
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            match kind {
                "counter" => assert!(name.ends_with("_total"), "{name}"),
                "histogram" => assert!(name.ends_with("_seconds"), "{name}"),
                _ => assert!(!name.ends_with("_total"), "{name}"),
            }
        }
        assert!(
            text.contains("auditrail_extract_records_total{format=\"immuta\",type=\"sqlQuery\"} 1"),
            "{text}"
        );
        assert!(text.contains("auditrail_retention_records_total{class=\"forever\"} 1"));
    }

    #[test]
    fn type_labels_are_bounded() {
        let m = Metrics::new();
        for i in 0..MAX_TYPE_LABELS + 50 {
            m.records.record("immuta", &format!("type{i}"), None);
        }
        let text = m.encode();
        let series = text
            .lines()
            .filter(|l| l.starts_with("auditrail_extract_records_total{"))
            .count();
        assert_eq!(series, MAX_TYPE_LABELS + 1, "the cap plus `other`");
        assert!(text.contains("type=\"other\"} 50"));
    }
}
