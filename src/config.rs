//! The YAML configuration: one document, one section per pipeline stage.
//!
//! Each stage owns its section's struct (`source::SourceConfig`, `extract::AuditConfig`,
//! `filter::TypesConfig`, `retention::RetentionConfig`, `output::OutputsConfig`); this module
//! puts them together, reads the file, and collects every problem a config has so that
//! `auditrail validate` can explain all of them at once, each with its YAML path.
//!
//! Unknown keys are errors everywhere (`deny_unknown_fields`): a typo in a ConfigMap must not
//! silently turn a filter off.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::budget::MemoryConfig;
use crate::enrich::EnrichConfig;
use crate::extract::AuditConfig;
use crate::filter::TypesConfig;
use crate::integrity::IntegrityConfig;
use crate::metrics::MetricsConfig;
use crate::output::OutputsConfig;
use crate::pipeline::Stages;
pub use crate::problem::{Problem, Purpose};
use crate::retention::RetentionConfig;
use crate::source::config::SourceConfig;
use crate::yaml::YamlError;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where lines come from and how they are framed.
    pub source: SourceConfig,
    /// Which lines are audit records.
    pub audit: AuditConfig,
    /// Which record types are shipped.
    pub types: TypesConfig,
    /// Retention classes and the topic of each.
    pub retention: RetentionConfig,
    /// Where records go.
    pub outputs: OutputsConfig,
    /// The metrics and health endpoints.
    pub metrics: MetricsConfig,
    /// Pod metadata on every record.
    pub enrich: EnrichConfig,
    /// How much memory records and buffers may hold.
    pub memory: MemoryConfig,
    /// The tamper-evident chain and signed digests.
    pub integrity: IntegrityConfig,
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not fit the schema (the source names the YAML path, line and column).
    #[error("config {path}")]
    Syntax {
        path: PathBuf,
        #[source]
        source: YamlError,
    },
    /// The YAML fits the schema but its values do not make sense together.
    #[error("config {path} has {} problem(s): {}", problems.len(), join(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn join(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl ConfigError {
    /// Every problem, one per line, for `auditrail validate`.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid { problems, .. } => {
                problems.iter().map(ToString::to_string).collect()
            }
            other => vec![crate::report(other)],
        }
    }
}

impl Config {
    /// Reads, parses and validates the config at `path`.
    pub fn load(path: &Path, purpose: Purpose) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_yaml(&text, purpose).map_err(|e| match e {
            ConfigError::Syntax { source, .. } => ConfigError::Syntax {
                path: path.to_path_buf(),
                source,
            },
            ConfigError::Invalid { problems, .. } => ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            },
            other => other,
        })
    }

    /// Parses and validates a config from YAML text.
    pub fn from_yaml(text: &str, purpose: Purpose) -> Result<Config, ConfigError> {
        // An empty document (or one holding only comments) means "all defaults".
        let config: Config = if text.trim().is_empty() || is_only_comments(text) {
            Config::default()
        } else {
            crate::yaml::from_str(text).map_err(|source| ConfigError::Syntax {
                path: PathBuf::from("<text>"),
                source,
            })?
        };
        let problems = config.problems(purpose);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: PathBuf::from("<text>"),
                problems,
            })
        }
    }

    /// The sections the per-line stages are built from.
    pub fn stages(&self) -> Stages<'_> {
        Stages {
            audit: &self.audit,
            types: &self.types,
            retention: &self.retention,
            outputs: &self.outputs,
        }
    }

    /// Every problem with this config; empty when it is usable.
    pub fn problems(&self, purpose: Purpose) -> Vec<Problem> {
        let mut problems = Vec::new();
        self.source.validate("source", purpose, &mut problems);
        self.audit.validate("audit", &mut problems);
        self.types.validate("types", &mut problems);
        self.retention.validate("retention", &mut problems);
        self.outputs.validate("outputs", &mut problems);
        self.metrics.validate("metrics", &mut problems);
        self.enrich.validate("enrich", &mut problems);
        self.memory.validate("memory", &mut problems);
        self.integrity.validate("integrity", &mut problems);
        self.integrity_across_sections(&mut problems);
        problems
    }
}

impl Config {
    /// What `integrity` asks of the other sections.
    fn integrity_across_sections(&self, problems: &mut Vec<Problem>) {
        if self.integrity.chain && self.source.kind == crate::source::SourceKind::Kubernetes {
            // The API source's checkpoint (a line's timestamp) does not save a chain point
            // yet: a restart would give records read again other numbers.
            problems.push(Problem::new(
                "integrity.chain",
                "is not available with `source.kind: kubernetes` yet; use the file source",
            ));
        }
        if self.integrity.chain {
            // The chain numbers every shipped record; an output that filters more than the
            // others would hold a chain with holes that look like removed records.
            for o in self.outputs.enabled() {
                if o.types.is_some() {
                    problems.push(Problem::new(
                        format!("outputs.{}.types", o.name),
                        "cannot be used with `integrity.chain`: the chain numbers every shipped \
                         record, and an output that filters on its own would show missing \
                         `chain_seq`; filter with the global `types` instead",
                    ));
                }
            }
        }
        if let Some(d) = &self.integrity.digests {
            if let Some(p) = crate::retention::topic_problem(&d.topic) {
                problems.push(Problem::new("integrity.digests.topic", p));
            }
            if self.outputs.kafka.is_none() {
                problems.push(Problem::new(
                    "integrity.digests",
                    "needs `outputs.kafka`: digests are shipped to a Kafka topic",
                ));
            }
            // A topic of its own: a class topic's records would mix with them, and the digest
            // topic's retention is checked as the longest class's.
            let taken = self
                .retention
                .classes
                .iter()
                .find(|(_, c)| c.topic == d.topic)
                .map(|(name, _)| format!("retention class `{name}`"))
                .or_else(|| {
                    self.outputs
                        .kafka
                        .as_ref()
                        .and_then(|k| k.dead_letter_topic.as_deref())
                        .filter(|t| *t == d.topic)
                        .map(|_| "`outputs.kafka.dead_letter_topic`".to_owned())
                });
            if let Some(taken) = taken {
                problems.push(Problem::new(
                    "integrity.digests.topic",
                    format!("is also the topic of {taken}: digests need a topic of their own"),
                ));
            }
        }
    }
}

fn is_only_comments(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_all_defaults_and_valid_for_check() {
        let c = Config::from_yaml("", Purpose::Check).unwrap();
        assert!(c.source.paths.is_empty());
        assert!(Config::from_yaml("# nothing\n", Purpose::Check).is_ok());
    }

    #[test]
    fn run_needs_source_paths() {
        let err = Config::from_yaml("", Purpose::Run).unwrap_err();
        let problems = err.problems();
        assert!(
            problems.iter().any(|p| p.starts_with("source.paths:")),
            "{problems:?}"
        );
    }

    #[test]
    fn unknown_keys_are_errors_with_their_path() {
        let err = Config::from_yaml("source:\n  pathz: [a]\n", Purpose::Check).unwrap_err();
        let text = crate::report(&err);
        assert!(text.contains("unknown field `pathz`"), "{text}");
        assert!(text.contains("source"), "{text}");
    }

    #[test]
    fn every_semantic_problem_is_reported_not_only_the_first() {
        let yaml = r#"
types: {include: [], exclude: []}
retention:
  default: missing
  classes:
    short: {days: 0, topic: "bad topic!"}
"#;
        let err = Config::from_yaml(yaml, Purpose::Check).unwrap_err();
        let problems = err.problems();
        assert!(
            problems.iter().any(|p| p.starts_with("types:")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.starts_with("retention.default:")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("retention.classes.short.days:")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("retention.classes.short.topic:")),
            "{problems:?}"
        );
    }

    #[test]
    fn integrity_problems_are_reported_with_their_paths() {
        let ok = Config::from_yaml(
            "integrity: {chain: true, chain_key_file: /etc/auditrail/chain/key}\n",
            Purpose::Check,
        )
        .unwrap();
        assert!(ok.integrity.chain);
        let yaml = r#"
integrity:
  chain: false
  chain_key_file: /k
  digests: {topic: "bad topic", signing_key_file: "", every_records: 0, every: 10ms}
outputs:
  stdout: {types: {exclude: [x]}}
"#;
        let problems = Config::from_yaml(yaml, Purpose::Check)
            .unwrap_err()
            .problems();
        for path in [
            "integrity.chain_key_file:",
            "integrity.digests:",
            "integrity.digests.signing_key_file:",
            "integrity.digests.every_records:",
            "integrity.digests.every:",
            "integrity.digests.topic:",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(path)),
                "{path} {problems:?}"
            );
        }
        let filtered = "integrity: {chain: true}\noutputs:\n  stdout: {types: {exclude: [x]}}\n";
        let problems = Config::from_yaml(filtered, Purpose::Check)
            .unwrap_err()
            .problems();
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("outputs.stdout.types:")),
            "{problems:?}"
        );
        let typo = Config::from_yaml("integrity: {chian: true}\n", Purpose::Check);
        assert!(typo.is_err());
    }

    #[test]
    fn digests_need_kafka_and_a_topic_of_their_own() {
        let digests =
            "integrity:\n  chain: true\n  digests: {topic: audit, signing_key_file: /k.pem}\n";
        let problems = Config::from_yaml(digests, Purpose::Check)
            .unwrap_err()
            .problems();
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("integrity.digests:") && p.contains("outputs.kafka")),
            "{problems:?}"
        );
        let kafka = "outputs:\n  kafka: {brokers: [\"k:9092\"], dead_letter_topic: dlq}\n";
        let ok = Config::from_yaml(
            &format!("{digests}{kafka}").replace("topic: audit,", "topic: audit-digests,"),
            Purpose::Check,
        )
        .unwrap();
        let d = ok.integrity.digests.unwrap();
        assert_eq!(
            (d.every_records, d.every),
            (1000, std::time::Duration::from_secs(60)),
            "the defaults"
        );
        for taken in ["audit", "dlq"] {
            let yaml =
                format!("{digests}{kafka}").replace("topic: audit,", &format!("topic: {taken},"));
            let problems = Config::from_yaml(&yaml, Purpose::Check)
                .unwrap_err()
                .problems();
            assert!(
                problems
                    .iter()
                    .any(|p| p.starts_with("integrity.digests.topic:") && p.contains("own")),
                "{taken}: {problems:?}"
            );
        }
    }
}
