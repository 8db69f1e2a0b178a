//! The `outputs.kafka` section: brokers, delivery limits, topics, and what may never be
//! weakened (`acks=all`, idempotence).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::envelope::KeyStrategy;
use crate::filter::TypesConfig;
use crate::problem::Problem;
use crate::retention::topic_problem;

/// `outputs.kafka.brokers`: a string or a list of `host:port`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Brokers {
    One(String),
    Many(Vec<String>),
}

impl Default for Brokers {
    fn default() -> Self {
        Brokers::Many(Vec::new())
    }
}

impl Brokers {
    pub fn list(&self) -> Vec<String> {
        match self {
            Brokers::One(s) => s
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            Brokers::Many(v) => v.clone(),
        }
    }
}

/// Topic creation settings, for `create_topics: true`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CreateTopics {
    pub partitions: i32,
    pub replication_factor: i32,
}

impl Default for CreateTopics {
    fn default() -> Self {
        CreateTopics {
            partitions: 3,
            replication_factor: 3,
        }
    }
}

/// The codecs `compression` accepts: every one the bundled librdkafka is built with.
pub(super) const COMPRESSIONS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

/// The `outputs.kafka` section.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    pub brokers: Brokers,
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    pub compression: String,
    /// How long the producer waits to fill a batch (librdkafka `linger.ms`).
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    pub key: KeyStrategy,
    /// Any librdkafka property (TLS, SASL, timeouts). `acks` and `enable.idempotence` cannot
    /// be weakened: they are what at-least-once rests on.
    pub properties: BTreeMap<String, String>,
    /// librdkafka property -> file whose content is its value (`sasl.password`), for secrets
    /// mounted from a Kubernetes Secret.
    pub secret_files: BTreeMap<String, PathBuf>,
    /// Records sent and not yet acknowledged, at most.
    pub max_in_flight_records: usize,
    /// Bytes of records sent and not yet acknowledged, at most.
    pub max_in_flight_bytes: usize,
    /// Where records the broker rejects for good are sent, with the reason in a header.
    pub dead_letter_topic: Option<String>,
    /// Create missing class topics with the right `retention.ms`.
    pub create_topics: bool,
    /// Partitions and replication factor of created topics.
    pub topic_settings: CreateTopics,
    /// How often class topics are checked again on the broker.
    #[serde(with = "humantime_serde")]
    pub topic_check_interval: Duration,
    /// How long shutdown waits for acknowledgements of records in flight.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// This output's own type filter; without one it takes the global `types`.
    pub types: Option<TypesConfig>,
    /// Whether the checkpoint waits for this output (see `OutputConfig::required`).
    pub required: bool,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: Brokers::default(),
            compression: "lz4".into(),
            linger: Duration::from_millis(20),
            key: KeyStrategy::PodUid,
            properties: BTreeMap::new(),
            secret_files: BTreeMap::new(),
            // Issue 16: what the output holds during a broker outage is this many records
            // twice (ours and librdkafka's copy) plus librdkafka's per-message overhead;
            // 2,500 keeps a 30 s outage at 10 MB/s under 48 MiB (5,000 peaked at 56-61 MiB),
            // and `run` to Kafka was no slower (librdkafka's idempotent producer has one
            // request in flight per partition: 2,500 records still fill a 1 MB batch).
            max_in_flight_records: 2_500,
            max_in_flight_bytes: 8 * 1024 * 1024,
            dead_letter_topic: None,
            create_topics: false,
            topic_settings: CreateTopics::default(),
            topic_check_interval: Duration::from_secs(300),
            drain_timeout: Duration::from_secs(30),
            types: None,
            required: true,
        }
    }
}

/// The smallest producer `message.max.bytes` accepted: a chunk's headers and some value.
const MIN_MESSAGE_MAX_BYTES: usize = 4096;

/// Properties auditrail sets itself; setting them under `properties` is refused.
const OWN_PROPERTIES: &[&str] = &["bootstrap.servers", "metadata.broker.list"];

impl KafkaConfig {
    pub fn validate(&self, path: &str, problems: &mut Vec<Problem>) {
        let brokers = self.brokers.list();
        if brokers.is_empty() {
            problems.push(Problem::new(
                format!("{path}.brokers"),
                "at least one broker (host:port) is needed",
            ));
        }
        for (i, b) in brokers.iter().enumerate() {
            let port_ok = b
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                problems.push(Problem::new(
                    format!("{path}.brokers[{i}]"),
                    format!("{b:?} is not host:port"),
                ));
            }
        }
        if !COMPRESSIONS.contains(&self.compression.as_str()) {
            problems.push(Problem::new(
                format!("{path}.compression"),
                format!(
                    "{:?} is not one of none, gzip, snappy, lz4, zstd",
                    self.compression
                ),
            ));
        }
        for (name, value) in &self.properties {
            let at = format!("{path}.properties.{name}");
            if OWN_PROPERTIES.contains(&name.as_str()) {
                problems.push(Problem::new(at, "set `brokers` instead"));
            } else if (name == "acks" || name == "request.required.acks")
                && !matches!(value.as_str(), "all" | "-1")
            {
                problems.push(Problem::new(
                    at,
                    "must be `all`: at-least-once delivery needs every in-sync replica",
                ));
            } else if name == "enable.idempotence" && value != "true" {
                problems.push(Problem::new(
                    at,
                    "must be true: retries must not duplicate or reorder records",
                ));
            } else if name == "message.max.bytes"
                && !value
                    .trim()
                    .parse::<usize>()
                    .is_ok_and(|n| n >= MIN_MESSAGE_MAX_BYTES)
            {
                problems.push(Problem::new(
                    at,
                    format!(
                        "must be a number of at least {MIN_MESSAGE_MAX_BYTES}: records larger than it are sent in chunks of this size, with their headers"
                    ),
                ));
            }
        }
        for name in self.secret_files.keys() {
            if self.properties.contains_key(name) {
                problems.push(Problem::new(
                    format!("{path}.secret_files.{name}"),
                    "is also set under `properties`; keep secrets in files only",
                ));
            }
        }
        if self.max_in_flight_records == 0 {
            problems.push(Problem::new(
                format!("{path}.max_in_flight_records"),
                "must be at least 1",
            ));
        }
        if self.max_in_flight_bytes < 64 * 1024 {
            problems.push(Problem::new(
                format!("{path}.max_in_flight_bytes"),
                "must be at least 65536",
            ));
        }
        if let Some(p) = self.dead_letter_topic.as_deref().and_then(topic_problem) {
            problems.push(Problem::new(format!("{path}.dead_letter_topic"), p));
        }
        if self.topic_settings.partitions < 1 {
            problems.push(Problem::new(
                format!("{path}.topic_settings.partitions"),
                "must be at least 1",
            ));
        }
        if self.topic_settings.replication_factor < 1 {
            problems.push(Problem::new(
                format!("{path}.topic_settings.replication_factor"),
                "must be at least 1",
            ));
        }
        if let Some(types) = &self.types {
            types.validate(&format!("{path}.types"), problems);
        }
        if self.topic_check_interval < Duration::from_secs(1) {
            problems.push(Problem::new(
                format!("{path}.topic_check_interval"),
                "must be at least 1s",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<String> {
        let c: KafkaConfig = crate::yaml::from_str(yaml).unwrap();
        let mut p = Vec::new();
        c.validate("outputs.kafka", &mut p);
        p.into_iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn the_smallest_config_works_with_a_string_or_a_list() {
        assert!(problems("brokers: 127.0.0.1:9092").is_empty());
        assert!(problems("brokers: [a:1, b:2]").is_empty());
        let c: KafkaConfig = crate::yaml::from_str("brokers: a:1,b:2").unwrap();
        assert_eq!(c.brokers.list(), vec!["a:1", "b:2"]);
    }

    #[test]
    fn at_least_once_cannot_be_weakened() {
        let p = problems("brokers: a:1\nproperties: {acks: '1', enable.idempotence: 'false', bootstrap.servers: x, message.max.bytes: '100'}");
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p
            .iter()
            .any(|p| p.starts_with("outputs.kafka.properties.acks:")));
    }

    #[test]
    fn bad_values_name_their_path() {
        let p = problems("brokers: nohost\ncompression: brotli\ndead_letter_topic: 'a b'");
        assert!(
            p.iter().any(|p| p.starts_with("outputs.kafka.brokers[0]:")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.starts_with("outputs.kafka.compression:")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.starts_with("outputs.kafka.dead_letter_topic:")),
            "{p:?}"
        );
    }
}
