//! Retention enforced, not just tagged: each class topic's own configuration is read from
//! the broker (DescribeConfigs) and compared with what its class needs.
//!
//! A topic is refused when it would delete a record before the record's class allows:
//! `retention.ms` shorter than the class's days (or finite for a forever class), a finite
//! `retention.bytes` (size-based deletion ignores age), or `cleanup.policy` with `compact`
//! (compaction keeps only the newest record per key). A missing topic is created with the
//! right settings when `create_topics` is on, and refused otherwise.
//!
//! The check also reads each topic's `max.message.bytes`, the size above which the output
//! sends a record in chunks (see `chunk`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::watch;
use tokio::time::Instant;

use super::health::{KafkaContext, KafkaHealth};
use super::{chunk, CreateTopics, KafkaConfig};
use crate::metrics::OutputHandles;

const DAY_MS: i64 = 86_400_000;

/// What one topic must provide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Requirement {
    pub topic: String,
    /// `None`: kept forever.
    pub days: Option<u32>,
}

/// The settings that decide when Kafka deletes a record, as the broker reported them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct TopicSettings {
    pub retention_ms: Option<String>,
    pub retention_bytes: Option<String>,
    pub cleanup_policy: Option<String>,
    pub max_message_bytes: Option<String>,
}

impl TopicSettings {
    /// The largest message the topic takes: its `max.message.bytes`, or Kafka's default when
    /// the broker does not report it.
    fn message_limit(&self) -> usize {
        self.max_message_bytes
            .as_deref()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(chunk::KAFKA_DEFAULT_MAX_MESSAGE_BYTES)
    }
}

/// What a check found: why topics are refused, and the message size limit of those that are
/// fit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Verdict {
    pub refused: BTreeMap<String, String>,
    pub fit: BTreeMap<String, usize>,
}

/// Why a topic cannot hold a class's records; `None` when it can.
pub(super) fn judge(req: &Requirement, found: &TopicSettings) -> Option<String> {
    let topic = &req.topic;
    if let Some(policy) = &found.cleanup_policy {
        if policy.contains("compact") {
            return Some(format!(
                "topic {topic} has cleanup.policy={policy}: compaction keeps only the newest record per key"
            ));
        }
    }
    if let Some(bytes) = &found.retention_bytes {
        if bytes.trim() != "-1" {
            return Some(format!(
                "topic {topic} has retention.bytes={bytes}: size-based deletion ignores the class's retention; set it to -1"
            ));
        }
    }
    let Some(ms_text) = &found.retention_ms else {
        return Some(format!(
            "topic {topic}: the broker did not report retention.ms"
        ));
    };
    let Ok(ms) = ms_text.trim().parse::<i64>() else {
        return Some(format!(
            "topic {topic} has an unreadable retention.ms={ms_text}"
        ));
    };
    match req.days {
        None if ms >= 0 => Some(format!(
            "topic {topic} has retention.ms={ms} but its class keeps records forever (needs -1)"
        )),
        Some(days) if ms >= 0 && ms < i64::from(days) * DAY_MS => Some(format!(
            "topic {topic} has retention.ms={ms} ({:.1} days) but its class needs {days} days ({} ms)",
            ms as f64 / DAY_MS as f64,
            i64::from(days) * DAY_MS
        )),
        _ => None,
    }
}

/// Checks every requirement. An error means the broker could not be asked at all.
pub(super) async fn check<C: ClientContext + 'static>(
    admin: &AdminClient<C>,
    requirements: &[Requirement],
    create: Option<&CreateTopics>,
    timeout: Duration,
) -> Result<Verdict, rdkafka::error::KafkaError> {
    let options = AdminOptions::new().request_timeout(Some(timeout));
    let mut refused = BTreeMap::new();
    let mut fit = BTreeMap::new();
    // Which topics exist, from the metadata of all topics: asking for one topic by name can
    // create it on a broker with auto-creation on, and not every broker answers
    // DescribeConfigs for a missing topic with an error.
    let metadata = tokio::task::block_in_place(|| admin.inner().fetch_metadata(None, timeout))?;
    let existing: BTreeSet<&str> = metadata.topics().iter().map(|t| t.name()).collect();
    let (present, mut missing): (Vec<Requirement>, Vec<Requirement>) = requirements
        .iter()
        .cloned()
        .partition(|r| existing.contains(r.topic.as_str()));
    let described = describe(admin, &present, &options).await?;
    for (req, result) in present.iter().zip(described) {
        match result {
            Ok(settings) => match judge(req, &settings) {
                Some(reason) => {
                    refused.insert(req.topic.clone(), reason);
                }
                None => {
                    fit.insert(req.topic.clone(), settings.message_limit());
                }
            },
            Err(RDKafkaErrorCode::UnknownTopicOrPartition)
            | Err(RDKafkaErrorCode::UnknownTopic) => missing.push(req.clone()),
            Err(code) => {
                refused.insert(
                    req.topic.clone(),
                    format!("topic {}: cannot read its configuration: {code}", req.topic),
                );
            }
        }
    }
    if missing.is_empty() {
        return Ok(Verdict { refused, fit });
    }
    let Some(create) = create else {
        for req in missing {
            refused.insert(
                req.topic.clone(),
                format!(
                    "topic {} does not exist (create it, or set create_topics: true)",
                    req.topic
                ),
            );
        }
        return Ok(Verdict { refused, fit });
    };
    let retention: Vec<String> = missing
        .iter()
        .map(|r| r.days.map_or(-1, |d| i64::from(d) * DAY_MS).to_string())
        .collect();
    let new_topics: Vec<NewTopic<'_>> = missing
        .iter()
        .zip(&retention)
        .map(|(req, ms)| {
            NewTopic::new(
                &req.topic,
                create.partitions,
                TopicReplication::Fixed(create.replication_factor),
            )
            .set("retention.ms", ms)
            .set("retention.bytes", "-1")
            .set("cleanup.policy", "delete")
        })
        .collect();
    for result in admin.create_topics(&new_topics, &options).await? {
        match result {
            Ok(topic) => tracing::info!(topic, "created topic"),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::info!(topic, "topic already exists")
            }
            Err((topic, code)) => {
                refused.insert(
                    topic.clone(),
                    format!("topic {topic} cannot be created: {code}"),
                );
            }
        }
    }
    // Check what was created, as for any other topic.
    let described = describe(admin, &missing, &options).await?;
    for (req, result) in missing.iter().zip(described) {
        if refused.contains_key(&req.topic) {
            continue;
        }
        let reason = match result {
            Ok(settings) => {
                let reason = judge(req, &settings);
                if reason.is_none() {
                    fit.insert(req.topic.clone(), settings.message_limit());
                }
                reason
            }
            Err(code) => Some(format!(
                "topic {}: cannot read its configuration after creating it: {code}",
                req.topic
            )),
        };
        if let Some(reason) = reason {
            refused.insert(req.topic.clone(), reason);
        }
    }
    Ok(Verdict { refused, fit })
}

async fn describe<C: ClientContext + 'static>(
    admin: &AdminClient<C>,
    requirements: &[Requirement],
    options: &AdminOptions,
) -> Result<Vec<Result<TopicSettings, RDKafkaErrorCode>>, rdkafka::error::KafkaError> {
    if requirements.is_empty() {
        return Ok(Vec::new());
    }
    let specifiers: Vec<ResourceSpecifier<'_>> = requirements
        .iter()
        .map(|r| ResourceSpecifier::Topic(&r.topic))
        .collect();
    let results = admin.describe_configs(&specifiers, options).await?;
    Ok(results
        .into_iter()
        .map(|r| {
            r.map(|resource| {
                let entries = resource.entry_map();
                let value = |name: &str| entries.get(name).and_then(|e| e.value.clone());
                TopicSettings {
                    retention_ms: value("retention.ms"),
                    retention_bytes: value("retention.bytes"),
                    cleanup_policy: value("cleanup.policy"),
                    max_message_bytes: value("max.message.bytes"),
                }
            })
        })
        .collect())
}

/// The (topic, days) of every retention class; `None` days = forever.
pub(crate) type Classes = Vec<(String, Option<u32>)>;

/// What the broker must provide: each class topic's retention, and the dead-letter topic's
/// (the longest of all, since it holds records of every class).
fn requirements(classes: &Classes, dead_letter_topic: Option<&str>) -> Vec<Requirement> {
    let mut requirements: Vec<Requirement> = Vec::new();
    for (topic, days) in classes {
        if !requirements.iter().any(|r| &r.topic == topic) {
            requirements.push(Requirement {
                topic: topic.clone(),
                days: *days,
            });
        }
    }
    if let Some(dlq) = dead_letter_topic {
        let days = if classes.iter().any(|(_, d)| d.is_none()) {
            None
        } else {
            classes.iter().filter_map(|(_, d)| *d).max()
        };
        requirements.push(Requirement {
            topic: dlq.to_owned(),
            days,
        });
    }
    requirements
}

/// The admin client of the topic checks, made for each check and let go after it: an admin
/// client holds threads (librdkafka's main and broker threads, rdkafka's polling thread) that
/// wake several times a second, for checks that run every `topic_check_interval`.
pub(super) struct Admin {
    /// The client made with the producer (which proves the config builds), for the first check.
    first: Option<AdminClient<KafkaContext>>,
    config: ClientConfig,
    context: KafkaContext,
}

impl Admin {
    pub(super) fn new(
        first: AdminClient<KafkaContext>,
        config: ClientConfig,
        context: KafkaContext,
    ) -> Admin {
        Admin {
            first: Some(first),
            config,
            context,
        }
    }

    fn client(&mut self) -> Result<AdminClient<KafkaContext>, rdkafka::error::KafkaError> {
        match self.first.take() {
            Some(client) => Ok(client),
            None => self.config.create_with_context(self.context.clone()),
        }
    }
}

/// Lets an admin client go off the runtime's threads (dropping it joins its threads).
async fn release(admin: AdminClient<KafkaContext>) {
    let _ = tokio::task::spawn_blocking(move || drop(admin)).await;
}

/// Checks class topics at startup, periodically, and whenever the classes change (a config
/// reload); publishes the topics that are fit to ship to, with their message size limits.
pub(super) async fn check_topics(
    mut admin: Admin,
    mut classes: watch::Receiver<Classes>,
    config: KafkaConfig,
    health: Arc<KafkaHealth>,
    metrics: OutputHandles,
    verified_tx: watch::Sender<Arc<BTreeMap<String, usize>>>,
) {
    let create = config.create_topics.then_some(&config.topic_settings);
    let mut last: Option<(Vec<Requirement>, Verdict)> = None;
    let mut classes_open = true;
    loop {
        let requirements = requirements(
            &classes.borrow_and_update(),
            config.dead_letter_topic.as_deref(),
        );
        let checked = match admin.client() {
            Ok(client) => {
                let checked = check(&client, &requirements, create, Duration::from_secs(10)).await;
                release(client).await;
                checked
            }
            Err(e) => Err(e),
        };
        let retry_soon = match checked {
            Ok(verdict) => {
                let refused = &verdict.refused;
                let seen = (requirements.clone(), verdict.clone());
                if last.as_ref() != Some(&seen) {
                    for (topic, reason) in refused {
                        tracing::error!(topic, reason, "refusing to ship to this topic");
                    }
                    if refused.is_empty() {
                        tracing::info!(
                            topics = requirements.len(),
                            "class topics verified on the broker"
                        );
                    }
                    for req in &requirements {
                        metrics.topic_refused(&req.topic, refused.contains_key(&req.topic));
                    }
                    let _ = verified_tx.send(Arc::new(verdict.fit.clone()));
                    health.update(|h| {
                        h.topics_checked = true;
                        h.refused = refused.clone();
                    });
                    last = Some(seen);
                }
                metrics.broker_up(true);
                health.update(|h| {
                    h.connected = true;
                    h.refused_connection = None;
                });
                !refused.is_empty()
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot check class topics on the broker; retrying");
                metrics.broker_up(false);
                health.update(|h| h.connected = false);
                true
            }
        };
        let wait = if retry_soon {
            config.topic_check_interval.min(Duration::from_secs(10))
        } else {
            config.topic_check_interval
        };
        // Sleep in short steps so that a broker lost in the meantime (seen by the client) is
        // checked again soon, and a config reload is checked at once.
        let deadline = Instant::now() + wait;
        loop {
            let step = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(5));
            let mut reloaded = false;
            tokio::select! {
                _ = tokio::time::sleep(step) => {}
                changed = classes.changed(), if classes_open => {
                    classes_open = changed.is_ok();
                    reloaded = changed.is_ok();
                }
            }
            if reloaded || Instant::now() >= deadline || !health.snapshot().connected {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(ms: &str, bytes: &str, policy: &str) -> TopicSettings {
        TopicSettings {
            retention_ms: Some(ms.into()),
            retention_bytes: Some(bytes.into()),
            cleanup_policy: Some(policy.into()),
            max_message_bytes: None,
        }
    }

    #[test]
    fn retention_rules() {
        let days60 = Requirement {
            topic: "t".into(),
            days: Some(60),
        };
        let forever = Requirement {
            topic: "t".into(),
            days: None,
        };
        let ms60 = (60 * DAY_MS).to_string();
        assert_eq!(judge(&days60, &settings(&ms60, "-1", "delete")), None);
        assert_eq!(judge(&days60, &settings("-1", "-1", "delete")), None);
        assert!(judge(&days60, &settings("604800000", "-1", "delete"))
            .unwrap()
            .contains("needs 60 days"));
        assert_eq!(judge(&forever, &settings("-1", "-1", "delete")), None);
        assert!(judge(&forever, &settings(&ms60, "-1", "delete"))
            .unwrap()
            .contains("forever"));
        assert!(judge(&forever, &settings("-1", "1000", "delete"))
            .unwrap()
            .contains("retention.bytes"));
        assert!(judge(&forever, &settings("-1", "-1", "compact"))
            .unwrap()
            .contains("compaction"));
        assert!(judge(&forever, &TopicSettings::default())
            .unwrap()
            .contains("did not report"));
    }
}
