//! What the Kafka output tells `/readyz`, and librdkafka's own logs and errors routed into
//! `tracing` and that state.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::output::{OutputHealth, STALL};

/// What an operator (and `/readyz`) needs to know about the Kafka output.
#[derive(Debug, Default)]
pub(crate) struct KafkaHealth {
    inner: Mutex<HealthState>,
}

/// A snapshot of [`KafkaHealth`].
#[derive(Debug, Default, Clone)]
pub(crate) struct HealthState {
    /// The broker answered recently (a delivery or a topic check succeeded).
    pub connected: bool,
    /// Class topics have been checked at least once.
    pub topics_checked: bool,
    /// Topic -> why records are not shipped there.
    pub refused: BTreeMap<String, String>,
    /// Records held because the broker rejected them for good and no dead-letter topic is set.
    pub blocked: u64,
    /// Records sent and not yet acknowledged.
    pub in_flight: usize,
    /// The last acknowledgement, or when records started waiting for one.
    pub last_progress: Option<std::time::Instant>,
}

impl HealthState {
    /// Why the Kafka output is not ready; empty when it is. `stall` is how long records may
    /// wait for an acknowledgement before the broker counts as unresponsive.
    pub(crate) fn reasons(&self, stall: Duration) -> Vec<String> {
        let mut reasons = Vec::new();
        if !self.connected {
            reasons.push("kafka: the broker is unreachable".to_owned());
        }
        if !self.topics_checked {
            reasons.push("kafka: class topics are not verified on the broker yet".to_owned());
        }
        for reason in self.refused.values() {
            reasons.push(format!("kafka: {reason}"));
        }
        if self.blocked > 0 {
            reasons.push(
                "kafka: a record rejected by the broker holds progress (see the logs)".to_owned(),
            );
        }
        if let Some(since) = self.last_progress {
            if self.in_flight > 0 && since.elapsed() > stall {
                reasons.push(format!(
                    "kafka: {} records unacknowledged for {} s",
                    self.in_flight,
                    since.elapsed().as_secs()
                ));
            }
        }
        reasons
    }
}

impl KafkaHealth {
    pub(super) fn update(&self, f: impl FnOnce(&mut HealthState)) {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub(crate) fn snapshot(&self) -> HealthState {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Routes librdkafka's own logs and errors into `tracing` and the health state.
pub(super) struct KafkaContext {
    pub(super) health: Arc<KafkaHealth>,
}

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(facility = fac, "librdkafka: {message}"),
            RDKafkaLogLevel::Warning => tracing::warn!(facility = fac, "librdkafka: {message}"),
            _ => tracing::debug!(facility = fac, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: RdKafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.health.update(|h| h.connected = false);
        }
        tracing::warn!(error = %error, reason, "kafka client error");
    }
}

impl OutputHealth for KafkaHealth {
    fn not_ready(&self) -> Vec<String> {
        self.snapshot().reasons(STALL)
    }
}
