//! Custom rules (`audit.rules`): an audit format described in the config instead of in code.
//!
//! ```yaml
//! rules:
//!   - name: payments
//!     match: {/kind: audit, /v: 2}   # every pointer must hold exactly this JSON value
//!     type: /event/name
//!     time: /ts                      # optional
//!     embedded: false                # whether a text prefix may come before the object
//! ```
//!
//! A rule is a [`Format`] like the built-in ones. Its signature is derived from its first
//! `match` (in pointer order): the pointer's last key, followed by the value when the value is
//! written the same way by any JSON encoder (a plain ASCII string, `true`, `false`, `null`).
//! Unless `embedded`, the object must be the whole line, surrounding whitespace aside.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::format::{string_or_unknown, Detected, Format, Signature, Tail};
use super::json::{self, Located};
use super::time::parse_time_value;
use super::ExtractError;
use crate::problem::Problem;

/// A custom detector.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The detector's name; it becomes the record's `format`.
    pub name: String,
    /// JSON pointer -> value; all must hold for a line to be this rule's record.
    #[serde(rename = "match")]
    pub matches: BTreeMap<String, serde_json::Value>,
    /// JSON pointer to the record type (a string).
    #[serde(rename = "type")]
    pub type_pointer: String,
    /// JSON pointer to the record's time (epoch seconds or milliseconds, or ISO-8601 text).
    #[serde(default)]
    pub time: Option<String>,
    /// Whether the object may follow a text prefix (`2021-08-09 INFO {...}`).
    #[serde(default)]
    pub embedded: bool,
}

impl RuleConfig {
    /// Checks the rule on its own; its name, which must differ from every other detector's,
    /// is checked by `AuditConfig::validate`. `at` is the rule's YAML path.
    pub(crate) fn validate(&self, at: &str, problems: &mut Vec<Problem>) {
        if self.matches.is_empty() {
            problems.push(Problem::new(
                format!("{at}.match"),
                "needs at least one `pointer: value` to recognise the record",
            ));
        }
        for pointer in self.matches.keys() {
            if let Err(e) = json::parse_pointer(pointer) {
                problems.push(Problem::new(format!("{at}.match"), e));
            }
        }
        if let Err(e) = json::parse_pointer(&self.type_pointer) {
            problems.push(Problem::new(format!("{at}.type"), e));
        }
        if let Some(Err(e)) = self.time.as_deref().map(json::parse_pointer) {
            problems.push(Problem::new(format!("{at}.time"), e));
        }
    }
}

/// A rule, its pointers parsed once.
#[derive(Debug)]
pub(crate) struct Rule {
    name: String,
    /// Never empty.
    matches: Vec<(Vec<String>, serde_json::Value)>,
    type_pointer: Vec<String>,
    time_pointer: Option<Vec<String>>,
    embedded: bool,
}

impl Rule {
    pub(crate) fn new(config: &RuleConfig) -> Result<Rule, ExtractError> {
        let pointer = |p: &str| {
            json::parse_pointer(p).map_err(|message| ExtractError::Pointer {
                rule: config.name.clone(),
                message,
            })
        };
        let mut matches = Vec::new();
        for (p, value) in &config.matches {
            matches.push((pointer(p)?, value.clone()));
        }
        if matches.is_empty() {
            return Err(ExtractError::NoMatch {
                rule: config.name.clone(),
            });
        }
        Ok(Rule {
            name: config.name.clone(),
            matches,
            type_pointer: pointer(&config.type_pointer)?,
            time_pointer: config.time.as_deref().map(pointer).transpose()?,
            embedded: config.embedded,
        })
    }
}

fn whole_line(text: &str, located: &Located<'_>) -> bool {
    text[..located.start].trim().is_empty() && text[located.end..].trim().is_empty()
}

impl Format for Rule {
    fn name(&self) -> &str {
        &self.name
    }

    fn signatures(&self) -> Vec<Signature> {
        // The first equality's last key, and its value when that value is a string or scalar
        // written the same way by any JSON encoder.
        let (segments, value) = &self.matches[0];
        let key = serde_json::Value::String(segments.last().cloned().unwrap_or_default());
        let tail = match value {
            serde_json::Value::String(s) if !s.contains(['"', '\\']) && s.is_ascii() => {
                Tail::ColonThen(format!("\"{s}\"").into_bytes())
            }
            serde_json::Value::Bool(_) | serde_json::Value::Null => {
                Tail::ColonThen(value.to_string().into_bytes())
            }
            _ => Tail::Colon,
        };
        vec![Signature::new(key.to_string(), tail)]
    }

    fn detect<'a>(&self, text: &'a str, located: &Located<'a>) -> Option<Detected<'a>> {
        if !self.embedded && !whole_line(text, located) {
            return None;
        }
        let o = &located.object;
        for (pointer, want) in &self.matches {
            let raw = o.pointer(pointer)?;
            let got: serde_json::Value = serde_json::from_str(raw.get()).ok()?;
            if &got != want {
                return None;
            }
        }
        let record_type = string_or_unknown(o.pointer(&self.type_pointer));
        let time = self
            .time_pointer
            .as_ref()
            .and_then(|p| o.pointer(p))
            .and_then(parse_time_value);
        Some(Detected::new(record_type, time))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::{AuditConfig, Extraction, Extractor};

    #[test]
    fn custom_rules_match_pointers_and_respect_embedding() {
        let rule = |embedded| RuleConfig {
            name: "payments".into(),
            matches: [
                ("/kind".to_string(), serde_json::json!("audit")),
                ("/v".to_string(), serde_json::json!(2)),
            ]
            .into(),
            type_pointer: "/event/name".into(),
            time: Some("/ts".into()),
            embedded,
        };
        let cfg = AuditConfig {
            formats: vec![],
            rules: vec![rule(false)],
        };
        let x = Extractor::new(&cfg).unwrap();
        let line = br#"{"kind": "audit", "v": 2, "event": {"name": "refund"}, "ts": 1628524947}"#;
        let Extraction::Audit(a) = x.extract(line) else {
            panic!("not audit")
        };
        assert_eq!(
            (&*a.format.to_string(), &*a.record_type),
            ("payments", "refund")
        );
        assert_eq!(a.time.map(|t| t.timestamp()), Some(1628524947));
        assert!(matches!(
            x.extract(br#"{"kind": "audit", "v": 3}"#),
            Extraction::Ordinary
        ));
        let prefixed = br#"INFO {"kind": "audit", "v": 2, "event": {"name": "refund"}}"#;
        assert!(matches!(x.extract(prefixed), Extraction::Ordinary));
        let cfg = AuditConfig {
            formats: vec![],
            rules: vec![rule(true)],
        };
        let x = Extractor::new(&cfg).unwrap();
        assert!(matches!(x.extract(prefixed), Extraction::Audit(_)));
    }
}
