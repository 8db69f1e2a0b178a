//! What the Kafka output tells `/readyz`, and librdkafka's own logs and errors routed into
//! `tracing` and that state.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::types::RDKafkaErrorCode;

use super::tls::TlsDiagnosis;
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
    /// Why the broker refused the connection (TLS, SASL), until the clients connect or are
    /// built anew.
    pub refused_connection: Option<String>,
    /// Which clients are in use: each set built from new credentials is one more. What the
    /// clients they replaced report no longer counts.
    pub generation: u64,
}

impl HealthState {
    /// Why the Kafka output is not ready; empty when it is. `stall` is how long records may
    /// wait for an acknowledgement before the broker counts as unresponsive.
    pub(crate) fn reasons(&self, stall: Duration) -> Vec<String> {
        let mut reasons = Vec::new();
        if !self.connected {
            reasons.push("kafka: the broker is unreachable".to_owned());
        }
        if let Some(why) = &self.refused_connection {
            reasons.push(format!("kafka: {why}"));
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
#[derive(Clone)]
pub(super) struct KafkaContext {
    pub(super) health: Arc<KafkaHealth>,
    /// The generation of the clients this context belongs to (see [`HealthState::generation`]).
    pub(super) generation: u64,
    /// Explains a refused broker certificate, when the clients verify one.
    pub(super) tls: Option<Arc<TlsDiagnosis>>,
    /// Where the producer's delivery callback puts its reports (see `delivery`); the admin
    /// client, which produces nothing, has the same queue and never uses it.
    pub(super) reports: Arc<super::reports::Reports>,
}

impl KafkaContext {
    /// Probes the broker `reason` names once, on a thread of its own (this runs on
    /// librdkafka's), and puts what it finds in the readiness reason and the log.
    fn diagnose(&self, tls: &Arc<TlsDiagnosis>, reason: &str) {
        let Some(address) = tls.start_probe(reason) else {
            return;
        };
        let (tls, health, generation) =
            (Arc::clone(tls), Arc::clone(&self.health), self.generation);
        std::thread::spawn(move || {
            let Some(found) = tls.probe(&address) else {
                return;
            };
            let why = format!("TLS with the broker failed: {found}");
            let mut current = false;
            health.update(|h| {
                current = h.generation == generation && h.refused_connection.is_some();
                if current {
                    h.refused_connection = Some(why.clone());
                }
            });
            if current {
                tracing::error!(broker = %address, "kafka: {why}; nothing is shipped until it is fixed");
            }
        });
    }
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
        let code = error.rdkafka_error_code();
        let mut refused = refusal(code, reason);
        if let (Some(tls), Some(RDKafkaErrorCode::SSL)) = (&self.tls, code) {
            match tls.found(reason) {
                Some(found) => refused = Some(format!("TLS with the broker failed: {found}")),
                None if reason.contains("certificate verify failed") => self.diagnose(tls, reason),
                None => {}
            }
        }
        let mut current = true;
        self.health.update(|h| {
            current = h.generation == self.generation;
            if !current {
                return;
            }
            if code == Some(RDKafkaErrorCode::AllBrokersDown) {
                h.connected = false;
            }
            if let Some(why) = &refused {
                h.connected = false;
                h.refused_connection = Some(why.clone());
            }
        });
        match refused {
            Some(why) if current => {
                tracing::error!(reason, "kafka: {why}; nothing is shipped until it is fixed")
            }
            _ => tracing::warn!(error = %error, reason, current, "kafka client error"),
        }
    }
}

/// What to tell an operator when the broker refused the connection itself: a TLS handshake
/// that failed (a certificate not signed by the configured CA, or not naming the broker's
/// host) or SASL credentials it did not accept; `None` for any other error.
fn refusal(code: Option<RDKafkaErrorCode>, reason: &str) -> Option<String> {
    match code? {
        RDKafkaErrorCode::SSL => {
            let hint = if reason.contains("certificate verify failed")
                || reason.contains("verify broker certificate")
            {
                " (the broker's certificate must be signed by the CA of ssl.ca.location or \
                 ssl.ca.pem, and name the host in `brokers` and in the broker's advertised \
                 listeners)"
            } else {
                ""
            };
            Some(format!("TLS with the broker failed: {reason}{hint}"))
        }
        RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed => Some(
            format!("SASL authentication with the broker failed: {reason} (check sasl.mechanism, sasl.username and sasl.password)"),
        ),
        _ => None,
    }
}

impl OutputHealth for KafkaHealth {
    fn not_ready(&self) -> Vec<String> {
        self.snapshot().reasons(STALL)
    }
}
