//! Extract: decide which lines are audit records, and find the record's JSON inside the line.
//!
//! Most lines in a real pod are ordinary logs, so the decision is made in two steps:
//! 1. a cheap pre-check (`prefilter.rs`): one pass of a packed multi-needle searcher looks for
//!    each enabled detector's *signature* (for Immuta, `"level"` followed by `:` and `"audit"`,
//!    whitespace allowed). A line without any signature is ordinary and costs nothing more: no
//!    UTF-8 validation, no parse, no allocation.
//! 2. for the few candidates, the line's JSON objects are parsed (top-level members only, as
//!    borrowed raw text) and each candidate detector, in configured order, looks at them.
//!
//! A detector is a `Format` (`format.rs`): a built-in format, one file each (`immuta.rs`,
//! `sym.rs`, `monolog.rs`, `pryv.rs`), or a custom rule from the config (`rule.rs`).
//!
//! Guarantees:
//! - the record is the object's exact text, never a re-serialisation;
//! - only top-level members count: a nested `{"level":"audit"}` or that text inside a string
//!   is not an audit record;
//! - a line that carries a signature that no valid JSON object accounts for (truncated JSON,
//!   invalid UTF-8) is reported as [`Extraction::Invalid`], never shipped half-parsed.

mod extractor;
mod format;
pub mod json;
mod prefilter;
mod rule;
mod time;

mod immuta;
mod monolog;
mod pryv;
mod sym;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::problem::Problem;
pub use extractor::Extractor;
use format::Format;
pub use rule::RuleConfig;
pub use time::parse_time_text;

/// The built-in detectors, from the seed documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuiltinFormat {
    /// Immuta: top-level `"level": "audit"`; type `/recordType`; time `/dateTime`, else `/timestamp`.
    Immuta,
    /// Sym LogEntry: top-level `"type": "event"` and a string `/event/type` (the type);
    /// time `/event/timestamp`.
    Sym,
    /// Laravel/monolog: a JSON object with string `/channel` and `/message_slug` (the type),
    /// time `/timestamp`; or a LineFormatter line `[ts] channel.LEVEL: message {context} [extra]`
    /// whose context has `log_event_type` (the type).
    Monolog,
    /// Pryv.io audit syslog line: a `pryv-audit[pid]:` tag and a JSON object with `/action`.
    Pryv,
}

impl BuiltinFormat {
    pub fn name(self) -> &'static str {
        match self {
            BuiltinFormat::Immuta => "immuta",
            BuiltinFormat::Sym => "sym",
            BuiltinFormat::Monolog => "monolog",
            BuiltinFormat::Pryv => "pryv",
        }
    }

    fn format(self) -> &'static dyn Format {
        match self {
            BuiltinFormat::Immuta => &immuta::Immuta,
            BuiltinFormat::Sym => &sym::Sym,
            BuiltinFormat::Monolog => &monolog::Monolog,
            BuiltinFormat::Pryv => &pryv::Pryv,
        }
    }
}

/// The `audit` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Built-in detectors to enable, tried in this order.
    pub formats: Vec<BuiltinFormat>,
    /// Custom detectors, tried after the built-in ones, in this order.
    pub rules: Vec<RuleConfig>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            formats: vec![
                BuiltinFormat::Immuta,
                BuiltinFormat::Sym,
                BuiltinFormat::Monolog,
                BuiltinFormat::Pryv,
            ],
            rules: Vec::new(),
        }
    }
}

impl AuditConfig {
    pub fn validate(&self, path: &str, problems: &mut Vec<Problem>) {
        if self.formats.is_empty() && self.rules.is_empty() {
            problems.push(Problem::new(
                path,
                "no detector enabled: list built-in formats under `formats` or add `rules`",
            ));
        }
        for (i, f) in self.formats.iter().enumerate() {
            if self.formats[..i].contains(f) {
                problems.push(Problem::new(
                    format!("{path}.formats[{i}]"),
                    format!("`{}` is listed twice", f.name()),
                ));
            }
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let at = format!("{path}.rules[{i}]");
            if rule.name.trim().is_empty() {
                problems.push(Problem::new(format!("{at}.name"), "must not be empty"));
            }
            let builtin = ["immuta", "sym", "monolog", "pryv"].contains(&rule.name.as_str());
            let twice = self.rules[..i].iter().any(|r| r.name == rule.name);
            if builtin || twice {
                problems.push(Problem::new(
                    format!("{at}.name"),
                    format!("`{}` is already the name of another detector", rule.name),
                ));
            }
            rule.validate(&at, problems);
        }
    }
}

/// What a line turned out to be.
#[derive(Debug)]
pub enum Extraction<'a> {
    /// Not an audit record.
    Ordinary,
    /// It looked like an audit record but could not be read as one.
    Invalid(InvalidReason),
    /// An audit record.
    Audit(AuditRecord<'a>),
}

/// Why a line that looked like an audit record was not shipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidReason {
    /// The line is not valid UTF-8.
    Utf8,
    /// No valid JSON object holds the audit signature.
    Json,
}

impl InvalidReason {
    /// A bounded label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidReason::Utf8 => "invalid_utf8",
            InvalidReason::Json => "invalid_json",
        }
    }
}

/// An audit record found in a line, borrowed from it.
#[derive(Debug)]
pub struct AuditRecord<'a> {
    /// The detector that recognised it (`immuta`, …, or a rule's name).
    pub format: &'a Arc<str>,
    /// The record type (`sqlQuery`, `events.get`, …); `unknown` when the record has none.
    pub record_type: std::borrow::Cow<'a, str>,
    /// The application's own time for the record, when it has one that parses.
    pub time: Option<DateTime<Utc>>,
    /// Text before the object (the line prefix of an embedded object).
    pub prefix: &'a str,
    /// The object's exact text.
    pub record: &'a str,
    /// Text after the object.
    pub suffix: &'a str,
}

/// The type given to an audit record whose type field is missing or not a string.
pub const UNKNOWN_TYPE: &str = "unknown";
