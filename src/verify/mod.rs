//! `auditrail verify`: reads the audit topics (and the digest topic) from their beginning to
//! where they ended when it started, and checks the chain of every segment (see
//! [`crate::integrity`] for the protocol).
//!
//! **What is checked**, per stream and segment, after chunked records are joined (`chunks`):
//! - every record carries the chain headers, and its link recomputed from its value, `seq` and
//!   `prev` (HMAC-SHA-256 with `--chain-key-file`) is its `chain_hash`;
//! - every `chain_prev` is the hash of the segment's previous link (the genesis hash for
//!   seq 1);
//! - no seq is missing from 1 to the highest seq read or signed; no seq is carried by two
//!   different records; within one partition a segment's seqs never go back except for
//!   duplicates;
//! - duplicates (same seq, same hash: a record sent again under at-least-once) and gap records
//!   (type `auditrail.gap`: a loss auditrail knew of and chained) are counted, not failures;
//! - digests: signed by the given public key (`--public-key`; by its `key_id` first), their
//!   `last_hash` the hash of the record at their `last_seq`, and their `prev_signature` the
//!   signature of another digest of the segment (except for the segment's first digest).
//!
//! **What a clean report proves**: every record read is the one auditrail sent (value and
//! position in its segment), none between the first and the last seq read or signed is
//! missing, and none was moved. With `--public-key`, the highest seq each segment's digests
//! sign is a floor: records cut off the tail after it was signed show as missing. It does
//! **not** prove that what auditrail sent was true (a compromised pod signs lies), nor that no
//! record was cut off a segment's tail after its last digest, and without `--chain-key-file`
//! a chain rewritten from some record on (values and hashes recomputed) is caught only by the
//! digests. Headers other than the chain's (`id`, `type`, `retention_class`, `expires_at`) are
//! not covered; the value (the envelope) carries the same facts and is covered.
//!
//! **Exit codes** (set by the binary): 0 clean, 1 any finding, 2 a usage, config, key or
//! connection error (nothing was verified).

mod check;
mod chunks;
mod consume;
mod report;

use std::path::PathBuf;
use std::time::Duration;

pub use report::{DigestCounts, Finding, FindingKind, Report, SegmentReport, StreamReport};

use crate::config::{Config, ConfigError, Purpose};
use crate::integrity::{ChainHasher, KeyError, Verifier};

/// One Kafka message, as the checks take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    /// Headers in order (text: auditrail's headers are all text).
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) value: Vec<u8>,
}

impl Message {
    /// The first header named `name`.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What to verify and how to connect, from the command line.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `host:port[,host:port…]`; wins over the config's `outputs.kafka.brokers`.
    pub brokers: Option<String>,
    /// An auditrail config: brokers and security from `outputs.kafka`, topics from
    /// `retention.classes` (and the dead-letter topic) unless `topics` are given, the digest
    /// topic and the chain key from `integrity` unless `digest_topic`/`chain_key_file` are.
    pub config: Option<PathBuf>,
    pub topics: Vec<String>,
    pub digest_topic: Option<String>,
    pub public_key: Option<PathBuf>,
    pub chain_key_file: Option<PathBuf>,
    /// Give up (a connection error) when nothing could be read for this long.
    pub stall_timeout: Duration,
    /// How often a progress line goes to stderr.
    pub progress_every: Duration,
}

/// Why nothing could be verified (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("no topic to verify: give --topic, or --config with retention classes")]
    NoTopics,
    #[error("no brokers: give --brokers, or --config with outputs.kafka")]
    NoBrokers,
    #[error("config {} has no outputs.kafka: give --brokers", path.display())]
    NoKafka { path: PathBuf },
    #[error(
        "--public-key checks digests: give --digest-topic too (or --config with integrity.digests)"
    )]
    KeyWithoutDigestTopic,
    #[error("cannot use the config")]
    Config(#[from] ConfigError),
    #[error("cannot load a key")]
    Key(#[from] KeyError),
    #[error("cannot set up the Kafka client")]
    Client(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot read the partitions of topic {topic}")]
    Metadata {
        topic: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("topic {topic} does not exist")]
    NoSuchTopic { topic: String },
    #[error("cannot read where partition {partition} of topic {topic} ends")]
    Watermarks {
        topic: String,
        partition: i32,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("nothing could be read for {seconds} s; {partitions} partition(s) not read to their end{}", last_error.as_deref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    Stalled {
        seconds: u64,
        partitions: usize,
        last_error: Option<String>,
    },
}

/// Reads the topics `options` name and checks them; the report says what was found.
pub fn run(options: &Options) -> Result<Report, VerifyError> {
    let config = match &options.config {
        Some(path) => Some((path, Config::load(path, Purpose::Check)?)),
        None => None,
    };
    let kafka = config.as_ref().and_then(|(_, c)| c.outputs.kafka.as_ref());
    let mut client = match (&options.brokers, kafka, &config) {
        (Some(brokers), Some(kafka), _) => {
            let mut client = crate::output::kafka::client_config(kafka)
                .map_err(|e| VerifyError::Client(Box::new(e)))?;
            client.set("bootstrap.servers", brokers);
            client
        }
        (Some(brokers), None, _) => {
            let mut client = rdkafka::config::ClientConfig::new();
            client.set("bootstrap.servers", brokers);
            client
        }
        (None, Some(kafka), _) => crate::output::kafka::client_config(kafka)
            .map_err(|e| VerifyError::Client(Box::new(e)))?,
        (None, None, Some((path, _))) => {
            return Err(VerifyError::NoKafka {
                path: (*path).clone(),
            })
        }
        (None, None, None) => return Err(VerifyError::NoBrokers),
    };
    client.set("client.id", "auditrail-verify");

    let mut topics = options.topics.clone();
    if topics.is_empty() {
        if let Some((_, config)) = &config {
            // Every class topic, and the dead-letter topic: a record may be in any of them.
            topics.extend(config.retention.classes.values().map(|c| c.topic.clone()));
            topics.extend(kafka.and_then(|k| k.dead_letter_topic.clone()));
        }
    }
    topics.sort();
    topics.dedup();
    if topics.is_empty() {
        return Err(VerifyError::NoTopics);
    }
    // The digest topic and the chain key from the config's `integrity` when no flag gives
    // them; the public key only from its flag (the config names the signing key, which the
    // verifier should not hold).
    let integrity = config.as_ref().map(|(_, c)| &c.integrity);
    let digest_topic = options.digest_topic.clone().or_else(|| {
        integrity
            .and_then(|i| i.digests.as_ref())
            .map(|d| d.topic.clone())
    });
    let chain_key_file = options
        .chain_key_file
        .clone()
        .or_else(|| integrity.and_then(|i| i.chain_key_file.clone()));
    if options.public_key.is_some() && digest_topic.is_none() {
        return Err(VerifyError::KeyWithoutDigestTopic);
    }
    let settings = check::Settings {
        key: chain_key_file
            .as_deref()
            .map(ChainHasher::keyed_from_file)
            .transpose()?,
        verifier: options
            .public_key
            .as_deref()
            .map(Verifier::from_pem_file)
            .transpose()?,
        digest_topic: digest_topic.clone(),
    };
    let mut all_topics = topics.clone();
    all_topics.extend(digest_topic);
    all_topics.sort();
    all_topics.dedup();

    let mut checker = check::Checker::new(settings);
    let read = consume::read(client, &all_topics, &mut checker, options)?;
    let mut report = checker.finish();
    report.topics = topics;
    report.notes.extend(read.notes);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_brokers_or_topics_it_says_what_to_give() {
        let err = run(&Options::default()).unwrap_err();
        assert!(matches!(err, VerifyError::NoBrokers), "{err}");
        let err = run(&Options {
            brokers: Some("127.0.0.1:1".into()),
            ..Options::default()
        })
        .unwrap_err();
        assert!(matches!(err, VerifyError::NoTopics), "{err}");
        let err = run(&Options {
            brokers: Some("127.0.0.1:1".into()),
            topics: vec!["t".into()],
            public_key: Some("k.pem".into()),
            ..Options::default()
        })
        .unwrap_err();
        assert!(matches!(err, VerifyError::KeyWithoutDigestTopic), "{err}");
    }
}
