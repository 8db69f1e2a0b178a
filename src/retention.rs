//! Retention: map each record type to a retention class, and each class to the Kafka topic
//! whose own `retention.ms` enforces it.
//!
//! Kafka deletes by topic, not by record, so a class is only as good as its topic: the Kafka
//! output checks each class topic's retention on the broker. Here the class is decided and the
//! record is tagged with `expires_at` = event time + days (or `null` for kept forever).
//!
//! ```yaml
//! retention:
//!   default: standard
//!   classes:
//!     standard: {days: 60, topic: audit-60d}
//!     forever:  {days: null, topic: audit-forever}
//!   types:
//!     forever: [blobFetch, sqlQuery, events.all]
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;

use crate::envelope::RetentionTag;
use crate::filter::pattern_matches;
use crate::problem::Problem;

/// One retention class.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassConfig {
    /// Days a record is kept; `null` keeps it forever. Required, so that a forgotten key is
    /// not silently "forever".
    #[serde(deserialize_with = "Option::deserialize")]
    pub days: Option<u32>,
    /// The Kafka topic for this class.
    pub topic: String,
}

/// The `retention` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// The class of every type not listed under `types`.
    pub default: String,
    pub classes: BTreeMap<String, ClassConfig>,
    /// Class name -> the record types (or `resource.all` patterns) in that class.
    pub types: BTreeMap<String, Vec<String>>,
}

impl Default for RetentionConfig {
    /// Without a `retention` section nothing is ever marked for deletion: one class, kept
    /// forever, on the topic `audit`.
    fn default() -> Self {
        RetentionConfig {
            default: "audit".into(),
            classes: BTreeMap::from([(
                "audit".into(),
                ClassConfig {
                    days: None,
                    topic: "audit".into(),
                },
            )]),
            types: BTreeMap::new(),
        }
    }
}

/// Kafka's rule for topic names.
pub(crate) fn topic_problem(topic: &str) -> Option<String> {
    if topic.is_empty() || topic.len() > 249 {
        return Some(format!("topic {topic:?} must be 1 to 249 characters"));
    }
    if topic == "." || topic == ".." {
        return Some(format!("topic {topic:?} is not allowed by Kafka"));
    }
    if let Some(c) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Some(format!(
            "topic {topic:?} has {c:?}; Kafka allows only ASCII letters, digits, '.', '_' and '-'"
        ));
    }
    None
}

impl RetentionConfig {
    pub fn validate(&self, path: &str, problems: &mut Vec<Problem>) {
        if self.classes.is_empty() {
            problems.push(Problem::new(
                format!("{path}.classes"),
                "at least one class is needed",
            ));
        }
        if !self.classes.contains_key(&self.default) {
            problems.push(Problem::new(
                format!("{path}.default"),
                format!(
                    "class {:?} is not defined under {path}.classes",
                    self.default
                ),
            ));
        }
        let mut topics: HashMap<&str, (&str, Option<u32>)> = HashMap::new();
        for (name, class) in &self.classes {
            let at = format!("{path}.classes.{name}");
            if class.days == Some(0) {
                problems.push(Problem::new(
                    format!("{at}.days"),
                    "must be at least 1, or null to keep records forever",
                ));
            }
            if let Some(p) = topic_problem(&class.topic) {
                problems.push(Problem::new(format!("{at}.topic"), p));
            }
            match topics.get(class.topic.as_str()) {
                Some((other, days)) if *days != class.days => problems.push(Problem::new(
                    format!("{at}.topic"),
                    format!(
                        "topic {:?} is also used by class {other:?} with a different retention; Kafka retention is per topic",
                        class.topic
                    ),
                )),
                _ => {
                    topics.insert(&class.topic, (name, class.days));
                }
            }
        }
        let mut seen: HashMap<&str, &str> = HashMap::new();
        for (class, types) in &self.types {
            if !self.classes.contains_key(class) {
                problems.push(Problem::new(
                    format!("{path}.types.{class}"),
                    format!("class {class:?} is not defined under {path}.classes"),
                ));
            }
            for (i, t) in types.iter().enumerate() {
                if let Some(other) = seen.insert(t, class) {
                    problems.push(Problem::new(
                        format!("{path}.types.{class}[{i}]"),
                        format!("type {t:?} is already in class {other:?}"),
                    ));
                }
            }
        }
    }
}

/// What put a record type in its class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClassBy<'a> {
    /// The type is listed under `retention.types`.
    Type(&'a str),
    /// An `all` or `resource.all` pattern under `retention.types` matches it.
    Pattern(&'a str),
    /// Nothing lists it: `retention.default`.
    Default,
}

#[derive(Debug)]
struct Class {
    tag: RetentionTag,
}

/// A compiled retention policy.
#[derive(Debug)]
pub struct RetentionPolicy {
    classes: Vec<Class>,
    /// Exact type -> class index.
    exact: HashMap<String, usize>,
    /// `resource.all` patterns, in config order.
    patterns: Vec<(String, usize)>,
    default: usize,
}

impl RetentionPolicy {
    /// Builds the policy from a validated config.
    pub fn new(config: &RetentionConfig) -> RetentionPolicy {
        let mut classes = Vec::new();
        let mut index = HashMap::new();
        for (name, c) in &config.classes {
            index.insert(name.as_str(), classes.len());
            classes.push(Class {
                tag: RetentionTag {
                    class: Arc::from(name.as_str()),
                    days: c.days,
                    topic: Arc::from(c.topic.as_str()),
                    expires_at: None,
                },
            });
        }
        let mut exact = HashMap::new();
        let mut patterns = Vec::new();
        for (class, types) in &config.types {
            let Some(&i) = index.get(class.as_str()) else {
                continue;
            };
            for t in types {
                if t == "all" || t.ends_with(".all") {
                    patterns.push((t.clone(), i));
                } else {
                    exact.insert(t.clone(), i);
                }
            }
        }
        let default = index.get(config.default.as_str()).copied().unwrap_or(0);
        RetentionPolicy {
            classes,
            exact,
            patterns,
            default,
        }
    }

    /// The retention of a record of `record_type` whose time is `time`.
    pub fn tag(&self, record_type: &str, time: DateTime<Utc>) -> RetentionTag {
        self.tag_of(self.class_of(record_type).0, time)
    }

    /// The class of `record_type` (its tag without `expires_at`) and what put it there: the
    /// one place the class is decided, which [`RetentionPolicy::tag`] and `check --explain`
    /// both use.
    pub(crate) fn classify(&self, record_type: &str) -> (RetentionTag, ClassBy<'_>) {
        let (i, by) = self.class_of(record_type);
        let mut tag = self.tag_of(i, DateTime::<Utc>::MIN_UTC);
        tag.expires_at = None;
        (tag, by)
    }

    fn class_of(&self, record_type: &str) -> (usize, ClassBy<'_>) {
        if let Some((t, &i)) = self.exact.get_key_value(record_type) {
            return (i, ClassBy::Type(t));
        }
        match self
            .patterns
            .iter()
            .find(|(p, _)| pattern_matches(p, record_type))
        {
            Some((p, i)) => (*i, ClassBy::Pattern(p)),
            None => (self.default, ClassBy::Default),
        }
    }

    /// The retention of the class that keeps records longest (a forever class if there is
    /// one): for what must outlive every record it speaks of, such as a gap record.
    pub fn longest(&self, time: DateTime<Utc>) -> RetentionTag {
        let i = (0..self.classes.len())
            .max_by_key(|&i| self.classes[i].tag.days.map_or(u64::MAX, u64::from))
            .unwrap_or(self.default);
        self.tag_of(i, time)
    }

    fn tag_of(&self, i: usize, time: DateTime<Utc>) -> RetentionTag {
        // Classes were built from a validated config, which has at least one.
        let mut tag = self.classes[i.min(self.classes.len().saturating_sub(1))]
            .tag
            .clone();
        tag.expires_at = tag
            .days
            .and_then(|d| time.checked_add_signed(Duration::days(i64::from(d))));
        tag
    }

    /// Every (class, days, topic), for checking topics on the broker.
    pub fn classes(&self) -> impl Iterator<Item = &RetentionTag> {
        self.classes.iter().map(|c| &c.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn immuta_policy() -> RetentionPolicy {
        let yaml = r#"
default: standard
classes:
  standard: {days: 60, topic: audit-60d}
  forever: {days: null, topic: audit-forever}
types:
  forever: [blobFetch, sqlQuery, events.all]
"#;
        let config: RetentionConfig = crate::yaml::from_str(yaml).unwrap();
        let mut problems = Vec::new();
        config.validate("retention", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        RetentionPolicy::new(&config)
    }

    #[test]
    fn types_map_to_classes_and_expiry() {
        let p = immuta_policy();
        let t = DateTime::parse_from_rfc3339("2021-08-09T16:02:27.022Z")
            .unwrap()
            .with_timezone(&Utc);
        let std = p.tag("dataSourceGet", t);
        assert_eq!(
            (&*std.class, &*std.topic, std.days),
            ("standard", "audit-60d", Some(60))
        );
        assert_eq!(
            std.expires_at.unwrap().to_rfc3339(),
            "2021-10-08T16:02:27.022+00:00"
        );
        let forever = p.tag("sqlQuery", t);
        assert_eq!((&*forever.class, forever.expires_at), ("forever", None));
        assert_eq!(&*p.tag("events.get", t).class, "forever");
        assert_eq!(&*p.tag("eventsx.get", t).class, "standard");
        assert_eq!(p.classify("sqlQuery").1, ClassBy::Type("sqlQuery"));
        assert_eq!(p.classify("events.get").1, ClassBy::Pattern("events.all"));
        let (tag, by) = p.classify("eventsx.get");
        assert_eq!(
            (&*tag.class, tag.expires_at, by),
            ("standard", None, ClassBy::Default)
        );
    }

    #[test]
    fn days_is_required() {
        let err = crate::yaml::from_str::<RetentionConfig>("classes: {a: {topic: t}}\ndefault: a")
            .unwrap_err();
        assert!(err.to_string().contains("missing field `days`"), "{err}");
    }

    #[test]
    fn one_topic_cannot_carry_two_retentions() {
        let config: RetentionConfig = crate::yaml::from_str(
            "default: a\nclasses: {a: {days: 1, topic: t}, b: {days: 2, topic: t}}",
        )
        .unwrap();
        let mut problems = Vec::new();
        config.validate("retention", &mut problems);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, "retention.classes.b.topic");
    }
}
