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
//! The walk of step 2 tells an observer what it decides; `explain.rs` records it for
//! `check --explain`, and `extract` uses an observer that records nothing.
//!
//! A detector is a `Format` (`format.rs`): a built-in format, one file each (`immuta.rs`,
//! `sym.rs`, `monolog.rs`, `pryv.rs`), or a custom rule from the config (`rule.rs`).
//! `BUILTIN` below is the one list of built-in formats: adding one is its own file, its `mod`
//! line and its entry there (and the Helm chart's `values.schema.json` enums of `formats` and
//! `ids`).
//!
//! Guarantees:
//! - the record is the object's exact text, never a re-serialisation;
//! - only top-level members count: a nested `{"level":"audit"}` or that text inside a string
//!   is not an audit record;
//! - a line that is as a whole a JSON value other than an object (an array of records) holds
//!   no audit record: the search for objects embedded in text is for lines that are not JSON;
//! - a line that carries a signature that no valid JSON object accounts for (truncated JSON,
//!   invalid UTF-8) is reported as [`Extraction::Invalid`], never shipped half-parsed.

mod explain;
mod extractor;
mod format;
pub mod json;
mod prefilter;
mod rule;
#[cfg(test)]
mod rule_seeds;
mod time;

// The built-in formats: one module each, and one entry each in `BUILTIN`.
mod immuta;
mod monolog;
mod pryv;
mod sym;
#[cfg(test)]
mod toy;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{de, Deserialize, Deserializer};

use crate::problem::Problem;
pub use explain::{ObjectTrace, RejectedTrace, Trace};
pub use extractor::Extractor;
use format::Format;
pub use rule::RuleConfig;
pub use time::parse_time_text;

/// The built-in formats, in their default order. This list is the only place that names them:
/// `audit.formats` accepts these names, the default enables all of them in this order, and no
/// custom rule may take one of them.
const BUILTIN: &[&dyn Format] = &[
    &immuta::Immuta,
    &sym::Sym,
    &monolog::Monolog,
    &pryv::Pryv,
    #[cfg(test)]
    &toy::Toy,
];

/// The names of the built-in formats, in their default order.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|f| f.name())
}

/// The names of the fields (`{userid}` in a syslog template) that a built-in format may find
/// besides its record ([`Field`]), each once, in list order. A syslog template accepts these
/// bare names when the config is loaded and refuses others, so a typo is caught there.
pub fn field_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for name in BUILTIN.iter().flat_map(|f| f.fields()) {
        if !names.contains(name) {
            names.push(name);
        }
    }
    names
}

/// A built-in format, as named in `audit.formats`: one of [`builtin_names`].
#[derive(Clone, Copy)]
pub struct BuiltinFormat(&'static dyn Format);

impl BuiltinFormat {
    pub fn name(self) -> &'static str {
        self.0.name()
    }

    fn format(self) -> &'static dyn Format {
        self.0
    }
}

/// A name in `audit.formats` that is not a built-in format.
#[derive(Debug, thiserror::Error)]
#[error("unknown format `{0}`, expected one of {known}", known = known_names())]
pub struct UnknownFormat(String);

fn known_names() -> String {
    builtin_names()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl FromStr for BuiltinFormat {
    type Err = UnknownFormat;

    fn from_str(name: &str) -> Result<BuiltinFormat, UnknownFormat> {
        BUILTIN
            .iter()
            .find(|f| f.name() == name)
            .map(|f| BuiltinFormat(*f))
            .ok_or_else(|| UnknownFormat(name.to_owned()))
    }
}

impl<'de> Deserialize<'de> for BuiltinFormat {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A visitor, not `String::deserialize` then a lookup: an error raised while the name
        // is read carries the name's own YAML path (`audit.formats[1]`) and position.
        struct Name;
        impl de::Visitor<'_> for Name {
            type Value = BuiltinFormat;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the name of a built-in format")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<BuiltinFormat, E> {
                name.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Name)
    }
}

impl PartialEq for BuiltinFormat {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for BuiltinFormat {}

impl fmt::Debug for BuiltinFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The `audit` section: which formats and rules are enabled, in order, and where the records
/// of a built-in format carry their producer's own id.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Built-in detectors to enable, tried in this order.
    pub formats: Vec<BuiltinFormat>,
    /// Custom detectors, tried after the built-in ones, in this order.
    pub rules: Vec<RuleConfig>,
    /// `ids`: a built-in format's name -> a JSON pointer to the producer's id in its records
    /// (the envelope's `record_id`); it takes precedence over the format's own (Sym's `/id`).
    /// A rule names its own with `id`.
    pub ids: BTreeMap<String, String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            formats: BUILTIN.iter().map(|f| BuiltinFormat(*f)).collect(),
            rules: Vec::new(),
            ids: BTreeMap::new(),
        }
    }
}

impl AuditConfig {
    /// Only these detectors, no `ids`.
    pub fn only(formats: Vec<BuiltinFormat>, rules: Vec<RuleConfig>) -> AuditConfig {
        AuditConfig {
            formats,
            rules,
            ids: BTreeMap::new(),
        }
    }

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
            // Every built-in name is taken, enabled or not, so enabling one later cannot
            // make two detectors share a name.
            let builtin = builtin_names().any(|n| n == rule.name);
            let twice = self.rules[..i].iter().any(|r| r.name == rule.name);
            if builtin || twice {
                problems.push(Problem::new(
                    format!("{at}.name"),
                    format!("`{}` is already the name of another detector", rule.name),
                ));
            }
            rule.validate(&at, problems);
        }
        for (name, pointer) in &self.ids {
            let at = format!("{path}.ids.{name}");
            match name.parse::<BuiltinFormat>() {
                Err(e) => problems.push(Problem::new(&at, e.to_string())),
                Ok(format) if !self.formats.contains(&format) => problems.push(Problem::new(
                    &at,
                    format!("`{name}` is not enabled in `{path}.formats`"),
                )),
                Ok(_) => {}
            }
            if let Err(message) = json::parse_pointer(pointer) {
                problems.push(Problem::new(&at, message));
            }
        }
    }
}

/// Why an [`Extractor`] could not be built from an `audit` section. A config that passed
/// [`AuditConfig::validate`] can fail only with `TooMany`.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("{}", problems.join("; "))]
    Rule { problems: Vec<String> },
    #[error("{count} audit detectors are enabled, at most {max} are supported")]
    TooMany { count: usize, max: usize },
    #[error("audit.ids.{format}: {message}")]
    IdPointer { format: String, message: String },
    #[error("cannot build the audit pre-check")]
    Prefilter(#[source] aho_corasick::BuildError),
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
    /// The producer's own id for the record, when its format has one (Sym's `id`).
    pub natural_id: Option<std::borrow::Cow<'a, str>>,
    /// Values the format read outside the record object (Pryv's `userid`, …).
    pub fields: Vec<Field<'a>>,
}

/// A named value a format reads besides the record object, as JSON text (a string value is
/// quoted): Pryv's `userid` and `streamIds` from the text before its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field<'a> {
    pub name: std::borrow::Cow<'a, str>,
    pub json: std::borrow::Cow<'a, str>,
}

/// The type given to an audit record whose type field is missing or not a string.
pub const UNKNOWN_TYPE: &str = "unknown";

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The problems of an `audit` section, with their paths from the top of the config.
    pub(super) fn problems(yaml: &str) -> Vec<String> {
        match crate::yaml::from_str::<AuditConfig>(yaml) {
            Err(e) => vec![format!("audit.{e}")],
            Ok(config) => {
                let mut problems = Vec::new();
                config.validate("audit", &mut problems);
                problems.iter().map(ToString::to_string).collect()
            }
        }
    }

    #[test]
    fn the_default_enables_every_builtin_format_in_list_order() {
        let names: Vec<&str> = AuditConfig::default()
            .formats
            .iter()
            .map(|f| f.name())
            .collect();
        assert_eq!(names, builtin_names().collect::<Vec<_>>());
        assert_eq!(names[..4], ["immuta", "sym", "monolog", "pryv"]);
    }

    #[test]
    fn an_unknown_format_is_refused_at_its_path_with_the_known_names() {
        let problems = problems("formats: [immuta, foo]");
        assert_eq!(problems.len(), 1, "{problems:?}");
        let want = "audit.formats[1]: unknown format `foo`, expected one of `immuta`, `sym`, `monolog`, `pryv`";
        assert!(problems[0].contains(want), "{problems:?}");
    }

    #[test]
    fn a_format_listed_twice_is_refused() {
        assert_eq!(
            problems("formats: [immuta, sym, immuta]"),
            vec!["audit.formats[2]: `immuta` is listed twice"]
        );
    }

    #[test]
    fn a_rule_may_not_take_a_builtin_name_or_another_rules_name() {
        let yaml = r#"
formats: [immuta]
rules:
  - {name: pryv, match: {/kind: audit}, type: /t}
  - {name: mine, match: {/kind: audit}, type: /t}
  - {name: mine, match: {/kind: audit}, type: /t}
"#;
        assert_eq!(
            problems(yaml),
            vec![
                "audit.rules[0].name: `pryv` is already the name of another detector",
                "audit.rules[2].name: `mine` is already the name of another detector",
            ]
        );
    }

    #[test]
    fn ids_name_an_enabled_builtin_format_and_a_json_pointer() {
        assert_eq!(
            problems("ids: {immuta: /requestId, sym: /meta/id}"),
            Vec::<String>::new()
        );
        let problems = problems("formats: [immuta]\nids: {sym: /id, nope: /x, immuta: requestId}");
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert_eq!(
            problems[0],
            "audit.ids.immuta: JSON pointer \"requestId\" must start with '/'"
        );
        assert!(
            problems[1]
                .starts_with("audit.ids.nope: unknown format `nope`, expected one of `immuta`"),
            "{problems:?}"
        );
        assert_eq!(
            problems[2],
            "audit.ids.sym: `sym` is not enabled in `audit.formats`"
        );
    }

    #[test]
    fn the_field_names_are_those_the_builtin_formats_read() {
        assert_eq!(field_names(), ["userid", "type", "createdBy", "streamIds"]);
    }
}
