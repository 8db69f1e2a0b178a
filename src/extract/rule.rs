//! Custom rules (`audit.rules`): an audit format described in the config instead of in code.
//!
//! ```yaml
//! rules:
//!   - name: payments
//!     match: {/kind: audit, /v: 2}   # every pointer holds exactly this JSON value
//!     present: [/event]              # every pointer holds some value
//!     pattern: {/event/name: '^pay'} # every pointer holds a string the regex finds
//!     prefix: '^\S+ (?P<time>\S+) '  # the text before the object matches (implies embedded)
//!     suffix: '^(?: \[\])?$'         # the text after the object matches (implies embedded)
//!     type: [/event/name, /kind]     # the first non-empty string wins, else `unknown`
//!     require_type: false            # true: no string at any `type` pointer, no record
//!     time: [/ts, /at]               # the first that holds a time wins, else the prefix's
//!                                    # `time` capture
//!     id: /id                        # the producer's own id for the record
//!     fields: {user: /user/id}       # name -> pointer, the member's JSON text
//!     json_captures: [tags]          # prefix captures kept as JSON, not quoted
//!     signature: 'payments-audit'    # the pre-check's needle, when the derived one is poor
//!     embedded: false                # whether a text prefix may come before the object
//! ```
//!
//! A rule is a [`Format`] like the built-in ones. The tests are in separate keys, not inside
//! `match`, so that every `match` value stays what it always was: a JSON value to equal, objects
//! included (`{/x: {present: true}}` is the object `{"present": true}`).
//!
//! A prefix's named captures other than `time` become the record's fields, as JSON strings, or
//! as the JSON text they hold when listed in `json_captures` (a capture that is not valid JSON
//! is left out; the record is still a record). A capture that did not take part is left out.
//! The suffix is only a test: a named capture in it is refused, as nothing would read it.
//!
//! Its pre-check signature is one of, in this order: `signature` (these exact bytes); the first
//! `match` in pointer order (the pointer's last key, followed by the value when the value is
//! written the same way by any JSON encoder: a plain ASCII string, `true`, `false`, `null`);
//! the longest literal the prefix, else the suffix, requires, when it has at least
//! [`MIN_LITERAL`] bytes; with `require_type`, every `type` pointer's last key followed by `:`;
//! the first `present`, then the first `pattern` pointer's last key followed by `:`. A pointer's
//! "key" is its last segment that is surely a member name (not an array index such as the `0`
//! of `/tags/0`, which has no name in the line) and that every JSON encoder writes as it is
//! (printable ASCII without `/`, `<`, `>`, `&`, `=`, `'`: PHP writes `\/`, Go `\u0026`, PHP
//! and Python escape non-ASCII); a value is added only on the same terms. A rule with none of
//! them would make every line a candidate and is refused. A line that holds the
//! signature but no valid object that accounts for it is counted invalid, as for the built-in
//! formats.
//!
//! Unless `embedded`, `prefix` or `suffix`, the object must be the whole line, surrounding
//! whitespace aside. Regexes are compiled once, when the extractor is built, and run only on
//! candidate objects that passed every other test (the suffix before the prefix: the text after
//! a record is usually the shorter); the `regex` crate's matching time is linear in the text.
//! Each sees only its side of the object: in the prefix `^` is the line's start and `$` the
//! object's, in the suffix `^` is the object's end and `$` the line's. So a rule can say where
//! on the line its record sits, which the JSON alone cannot: monolog's LineFormatter context is
//! the object followed by ` `, ` []` or ` {extra}` to the end of the line
//! (`examples/rules-as-formats.yaml`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::format::{Detected, Format, Signature, Tail};
use super::json::{self, as_str, Located, Object};
use super::time::{parse_time_text, parse_time_value};
use super::{ExtractError, Field, UNKNOWN_TYPE};
use crate::problem::Problem;

/// The shortest literal of a prefix that may serve as a signature: a needle of one or two
/// bytes (`[`, `: `) is in nearly every line, and each hit costs a parse.
pub(crate) const MIN_LITERAL: usize = 3;

/// The prefix capture that gives the record's time.
const TIME_CAPTURE: &str = "time";

/// A custom detector.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The detector's name; it becomes the record's `format`.
    pub name: String,
    /// JSON pointer -> value; all must hold for an object to be this rule's record.
    #[serde(rename = "match", default)]
    pub matches: BTreeMap<String, serde_json::Value>,
    /// JSON pointers that must hold a value, any value.
    #[serde(default)]
    pub present: Vec<String>,
    /// JSON pointer -> regex; each must hold a string the regex finds (`''`: any string).
    #[serde(default)]
    pub pattern: BTreeMap<String, String>,
    /// A regex the text before the object must match; implies `embedded`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// A regex the text after the object must match; implies `embedded`.
    #[serde(default)]
    pub suffix: Option<String>,
    /// JSON pointers to the record type; the first non-empty string wins.
    #[serde(rename = "type")]
    pub type_pointer: Pointers,
    /// Whether an object without a string at any `type` pointer is not a record.
    #[serde(default)]
    pub require_type: bool,
    /// JSON pointers to the record's time (epoch seconds or milliseconds, or ISO-8601 text);
    /// the first that holds a time wins.
    #[serde(default)]
    pub time: Pointers,
    /// JSON pointers to the producer's own id for the record; the first string (or number)
    /// wins.
    #[serde(default)]
    pub id: Pointers,
    /// Field name -> JSON pointer; the member's JSON text, when it is there.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// Prefix captures whose text is JSON, kept as it is instead of quoted as a string.
    #[serde(default)]
    pub json_captures: Vec<String>,
    /// The bytes every record's line holds, for the pre-check; derived when not given.
    #[serde(default)]
    pub signature: Option<String>,
    /// Whether the object may follow a text prefix (`2021-08-09 INFO {...}`).
    #[serde(default)]
    pub embedded: Option<bool>,
}

/// One JSON pointer or a list of them, as written: `type: /a` or `type: [/a, /b]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Pointers {
    #[default]
    None,
    One(String),
    List(Vec<String>),
}

impl Pointers {
    /// Each pointer with its YAML path under `at` (`at` itself for a single one).
    fn each(&self, at: &str) -> Vec<(String, &str)> {
        match self {
            Pointers::None => vec![],
            Pointers::One(p) => vec![(at.to_owned(), p.as_str())],
            Pointers::List(l) => l
                .iter()
                .enumerate()
                .map(|(i, p)| (format!("{at}[{i}]"), p.as_str()))
                .collect(),
        }
    }
}

impl From<&str> for Pointers {
    fn from(p: &str) -> Pointers {
        Pointers::One(p.to_owned())
    }
}

impl<'de> Deserialize<'de> for Pointers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PointersVisitor;
        impl<'de> Visitor<'de> for PointersVisitor {
            type Value = Pointers;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON pointer or a list of JSON pointers")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Pointers, E> {
                Ok(Pointers::One(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Pointers, A::Error> {
                let mut list = Vec::new();
                while let Some(p) = seq.next_element::<String>()? {
                    list.push(p);
                }
                Ok(Pointers::List(list))
            }
        }
        deserializer.deserialize_any(PointersVisitor)
    }
}

impl RuleConfig {
    /// Checks the rule on its own; its name, which must differ from every other detector's,
    /// is checked by `AuditConfig::validate`. `at` is the rule's YAML path.
    pub(crate) fn validate(&self, at: &str, problems: &mut Vec<Problem>) {
        problems.extend(build(self, at).err().unwrap_or_default());
    }
}

/// A rule, its pointers parsed and its regexes compiled once.
#[derive(Debug)]
pub(crate) struct Rule {
    name: String,
    matches: Vec<(Vec<String>, serde_json::Value)>,
    present: Vec<Vec<String>>,
    patterns: Vec<(Vec<String>, Regex)>,
    prefix: Option<Prefix>,
    suffix: Option<Regex>,
    types: Vec<Vec<String>>,
    require_type: bool,
    times: Vec<Vec<String>>,
    ids: Vec<Vec<String>>,
    fields: Vec<(String, Vec<String>)>,
    embedded: bool,
    signatures: Vec<Signature>,
}

/// The prefix regex and what its captures give.
#[derive(Debug)]
struct Prefix {
    regex: Regex,
    /// The index of the `time` capture.
    time: Option<usize>,
    /// (index, name, kept as JSON) of every other named capture, in the regex's order.
    fields: Vec<(usize, String, bool)>,
}

impl Rule {
    pub(crate) fn new(config: &RuleConfig) -> Result<Rule, ExtractError> {
        // Only a config that skipped `AuditConfig::validate` gets here with a problem.
        let at = format!("audit.rules[`{}`]", config.name);
        build(config, &at).map_err(|problems| ExtractError::Rule {
            problems: problems.iter().map(ToString::to_string).collect(),
        })
    }
}

/// Parses and compiles a rule; every problem found is at its YAML path under `at`.
fn build(config: &RuleConfig, at: &str) -> Result<Rule, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut pointer = |path: String, p: &str| match json::parse_pointer(p) {
        Ok(segments) => segments,
        Err(e) => {
            problems.push(Problem::new(path, e));
            Vec::new()
        }
    };
    let matches: Vec<_> = config
        .matches
        .iter()
        .map(|(p, v)| (pointer(format!("{at}.match"), p), v.clone()))
        .collect();
    let present: Vec<_> = (config.present.iter().enumerate())
        .map(|(i, p)| pointer(format!("{at}.present[{i}]"), p))
        .collect();
    let mut pattern_texts = Vec::new();
    for (p, text) in &config.pattern {
        pattern_texts.push((pointer(format!("{at}.pattern.{p}"), p), p, text));
    }
    let types: Vec<_> = (config.type_pointer.each(&format!("{at}.type")).into_iter())
        .map(|(path, p)| pointer(path, p))
        .collect();
    let times: Vec<_> = (config.time.each(&format!("{at}.time")).into_iter())
        .map(|(path, p)| pointer(path, p))
        .collect();
    let ids: Vec<_> = (config.id.each(&format!("{at}.id")).into_iter())
        .map(|(path, p)| pointer(path, p))
        .collect();
    let fields: Vec<_> = (config.fields.iter())
        .map(|(name, p)| (name.clone(), pointer(format!("{at}.fields.{name}"), p)))
        .collect();

    let mut patterns = Vec::new();
    for (segments, p, text) in pattern_texts {
        match Regex::new(text) {
            Ok(regex) => patterns.push((segments, regex)),
            Err(e) => problems.push(Problem::new(format!("{at}.pattern.{p}"), regex_error(&e))),
        }
    }
    if types.is_empty() {
        problems.push(Problem::new(
            format!("{at}.type"),
            "needs at least one JSON pointer to the record type",
        ));
    }
    let prefix =
        config
            .prefix
            .as_deref()
            .and_then(|text| match Prefix::new(text, &config.json_captures) {
                Ok(prefix) => Some(prefix),
                Err(e) => {
                    problems.push(Problem::new(format!("{at}.prefix"), e));
                    None
                }
            });
    let suffix = config
        .suffix
        .as_deref()
        .and_then(|text| match suffix_regex(text) {
            Ok(regex) => Some(regex),
            Err(e) => {
                problems.push(Problem::new(format!("{at}.suffix"), e));
                None
            }
        });
    check_captures(config, prefix.as_ref(), at, &mut problems);
    if config.embedded == Some(false) {
        if config.prefix.is_some() {
            problems.push(Problem::new(
                format!("{at}.embedded"),
                "a rule with a `prefix` always follows text: leave `embedded` out",
            ));
        } else if config.suffix.is_some() {
            problems.push(Problem::new(
                format!("{at}.embedded"),
                "a rule with a `suffix` always precedes text: leave `embedded` out",
            ));
        }
    }
    // From the config, not from what compiled: a refused test is not a missing one.
    let recognises_all = config.matches.is_empty()
        && config.present.is_empty()
        && config.pattern.is_empty()
        && config.prefix.is_none()
        && config.suffix.is_none()
        && !config.require_type;
    if recognises_all {
        problems.push(Problem::new(
            at,
            "recognises every JSON object: give it a `match`, `present`, `pattern`, `prefix`, \
             `suffix` or `require_type`",
        ));
    }
    let signatures = signatures(config, &matches, &present, &patterns, &types);
    match config.signature.as_deref() {
        Some("") => problems.push(Problem::new(
            format!("{at}.signature"),
            "must not be empty: every line would be a candidate",
        )),
        // Derived from the tests that compiled: only meaningful when all of them did.
        None if signatures.is_empty() && problems.is_empty() => problems.push(Problem::new(
            at,
            format!(
                "has no pre-check signature, so every line would be a candidate: give it a \
                 `match`, `present`, `pattern` or `require_type`, a `prefix` or `suffix` that \
                 requires a literal of at least {MIN_LITERAL} bytes, or a `signature` (a \
                 member name serves only when it is not an array index and every JSON encoder \
                 writes it as it is: printable ASCII without `/`, `<`, `>`, `&`, `=`, `'`)"
            ),
        )),
        _ => {}
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Rule {
        name: config.name.clone(),
        matches,
        present,
        patterns,
        prefix,
        suffix,
        types,
        require_type: config.require_type,
        times,
        ids,
        fields,
        embedded: config.embedded.unwrap_or(false)
            || config.prefix.is_some()
            || config.suffix.is_some(),
        signatures,
    })
}

/// `json_captures` names captures of the prefix; no field name is given twice.
fn check_captures(
    config: &RuleConfig,
    prefix: Option<&Prefix>,
    at: &str,
    problems: &mut Vec<Problem>,
) {
    for (i, name) in config.json_captures.iter().enumerate() {
        let path = format!("{at}.json_captures[{i}]");
        match (&config.prefix, prefix) {
            (None, _) => problems.push(Problem::new(path, "there is no `prefix` to capture from")),
            // The prefix itself is refused; its captures cannot be checked.
            (Some(_), None) => {}
            (Some(_), Some(_)) if name == TIME_CAPTURE => {
                problems.push(Problem::new(
                    path,
                    "`time` gives the record's time, not a field",
                ));
            }
            (Some(_), Some(p)) if !p.fields.iter().any(|(_, n, _)| n == name) => {
                problems.push(Problem::new(
                    path,
                    format!("the prefix has no capture named `{name}`"),
                ));
            }
            (Some(_), Some(_)) => {}
        }
    }
    if let Some(p) = prefix {
        for name in config.fields.keys() {
            if p.fields.iter().any(|(_, n, _)| n == name) {
                problems.push(Problem::new(
                    format!("{at}.fields.{name}"),
                    format!("the prefix's capture `{name}` already gives this field"),
                ));
            }
        }
    }
}

/// A regex error on one line: the `regex` crate's message spans several, with a caret.
fn regex_error(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(text) => {
            let last = text.lines().last().unwrap_or(text).trim();
            format!("not a valid regex: {last}")
        }
        other => format!("not a valid regex: {other}"),
    }
}

/// The suffix regex, which may not name captures: it is a test, it gives nothing.
fn suffix_regex(text: &str) -> Result<Regex, String> {
    let regex = Regex::new(text).map_err(|e| regex_error(&e))?;
    match regex.capture_names().flatten().next() {
        Some(name) => Err(format!(
            "names the capture `{name}`: the suffix is a test, only the prefix's captures give \
             the time and fields"
        )),
        None => Ok(regex),
    }
}

impl Prefix {
    fn new(text: &str, json_captures: &[String]) -> Result<Prefix, String> {
        let regex = Regex::new(text).map_err(|e| regex_error(&e))?;
        let mut time = None;
        let mut fields = Vec::new();
        for (i, name) in regex.capture_names().enumerate() {
            match name {
                Some(TIME_CAPTURE) => time = Some(i),
                Some(name) => {
                    let json = json_captures.iter().any(|j| j == name);
                    fields.push((i, name.to_owned(), json));
                }
                None => {}
            }
        }
        Ok(Prefix {
            regex,
            time,
            fields,
        })
    }
}

/// The pre-check signatures, in the order the module docs give; empty when none applies.
fn signatures(
    config: &RuleConfig,
    matches: &[(Vec<String>, serde_json::Value)],
    present: &[Vec<String>],
    patterns: &[(Vec<String>, Regex)],
    types: &[Vec<String>],
) -> Vec<Signature> {
    if let Some(text) = config.signature.as_deref().filter(|s| !s.is_empty()) {
        return vec![Signature::new(text.as_bytes(), Tail::Nothing)];
    }
    if let Some(signature) = matches.iter().find_map(|(segments, value)| {
        let (needle, last) = key_needle(segments)?;
        let tail = match value {
            // The value follows the key only when the key is the pointer's last segment.
            serde_json::Value::String(s) if last && written_as_is(s) => {
                Tail::ColonThen(format!("\"{s}\"").into_bytes())
            }
            serde_json::Value::Bool(_) | serde_json::Value::Null if last => {
                Tail::ColonThen(value.to_string().into_bytes())
            }
            _ => Tail::Colon,
        };
        Some(Signature::new(needle, tail))
    }) {
        return vec![signature];
    }
    let literal = (config.prefix.as_deref().and_then(longest_literal))
        .or_else(|| config.suffix.as_deref().and_then(longest_literal));
    if let Some(literal) = literal {
        return vec![Signature::new(literal, Tail::Nothing)];
    }
    if config.require_type {
        // Every type pointer needs a needle: a record typed only by the one without would
        // never be a candidate.
        let keys: Option<Vec<String>> = types.iter().map(|t| Some(key_needle(t)?.0)).collect();
        if let Some(mut keys) = keys {
            keys.sort();
            keys.dedup();
            return keys
                .into_iter()
                .map(|k| Signature::new(k, Tail::Colon))
                .collect();
        }
    }
    present
        .iter()
        .chain(patterns.iter().map(|(segments, _)| segments))
        .find_map(|segments| key_needle(segments))
        .map(|(needle, _)| vec![Signature::new(needle, Tail::Colon)])
        .unwrap_or_default()
}

/// The needle (a quoted member name) that every object holding `segments` has, and whether
/// it is the pointer's last segment: the last segment that is surely a member name (the
/// first, as a record is an object, or one that is not an array index) and that every JSON
/// encoder writes as it is. `None` when no segment is both.
fn key_needle(segments: &[String]) -> Option<(String, bool)> {
    let surely_key = |i: usize, s: &str| i == 0 || !s.bytes().all(|b| b.is_ascii_digit());
    let (i, segment) = segments
        .iter()
        .enumerate()
        .rev()
        .find(|(i, s)| surely_key(*i, s) && !s.is_empty() && written_as_is(s))?;
    Some((format!("\"{segment}\""), i + 1 == segments.len()))
}

/// Whether every common JSON encoder writes `s`, inside a string, as these same bytes: not
/// PHP (`/` as `\/`, non-ASCII as `\u00f6`), Python (non-ASCII), Go (`&`, `<`, `>` as
/// `\u0026`…), Gson (also `=` and `'`), nor any (`"`, `\`, control characters).
fn written_as_is(s: &str) -> bool {
    s.bytes().all(|b| {
        (b.is_ascii_graphic() || b == b' ')
            && !matches!(b, b'"' | b'\\' | b'/' | b'<' | b'>' | b'&' | b'=' | b'\'')
    })
}

/// The longest literal every match of the regex holds, when it has at least [`MIN_LITERAL`]
/// bytes: a run of literals in a sequence that every match goes through (not inside an
/// alternation or an optional part).
fn longest_literal(regex: &str) -> Option<Vec<u8>> {
    let hir = regex_syntax::Parser::new().parse(regex).ok()?;
    let mut runs = Vec::new();
    required_runs(&hir, &mut runs);
    runs.into_iter()
        .filter(|r| r.len() >= MIN_LITERAL)
        .max_by_key(Vec::len)
}

fn required_runs(hir: &regex_syntax::hir::Hir, runs: &mut Vec<Vec<u8>>) {
    use regex_syntax::hir::HirKind;
    match hir.kind() {
        HirKind::Literal(lit) => runs.push(lit.0.to_vec()),
        HirKind::Capture(c) => required_runs(&c.sub, runs),
        HirKind::Repetition(r) if r.min >= 1 => required_runs(&r.sub, runs),
        HirKind::Concat(subs) => {
            let mut run = Vec::new();
            for sub in subs {
                match sub.kind() {
                    HirKind::Literal(lit) => run.extend_from_slice(&lit.0),
                    _ => {
                        runs.push(std::mem::take(&mut run));
                        required_runs(sub, runs);
                    }
                }
            }
            runs.push(run);
        }
        _ => {}
    }
}

fn whole_line(text: &str, located: &Located<'_>) -> bool {
    text[..located.start].trim().is_empty() && text[located.end..].trim().is_empty()
}

/// The first pointer whose value `read` accepts.
fn first<'a, T>(
    o: &Object<'a>,
    pointers: &[Vec<String>],
    read: impl Fn(&'a RawValue) -> Option<T>,
) -> Option<T> {
    pointers.iter().find_map(|p| o.pointer(p).and_then(&read))
}

/// A natural id: a string's text, or a number's.
fn id_text(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    if text.starts_with('"') {
        return as_str(raw).filter(|s| !s.is_empty());
    }
    text.starts_with(|c: char| c == '-' || c.is_ascii_digit())
        .then_some(Cow::Borrowed(text))
}

impl Format for Rule {
    fn name(&self) -> &str {
        &self.name
    }

    fn signatures(&self) -> Vec<Signature> {
        self.signatures.clone()
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
        for pointer in &self.present {
            o.pointer(pointer)?;
        }
        for (pointer, regex) in &self.patterns {
            if !regex.is_match(&as_str(o.pointer(pointer)?)?) {
                return None;
            }
        }
        if self.require_type {
            first(o, &self.types, as_str)?;
        }
        // The regexes last: they are the dearest tests. The suffix first: the text after a
        // record is usually the shorter.
        if let Some(suffix) = &self.suffix {
            if !suffix.is_match(&text[located.end..]) {
                return None;
            }
        }
        let captures = match &self.prefix {
            Some(p) => Some((p, p.regex.captures(&text[..located.start])?)),
            None => None,
        };
        let record_type = first(o, &self.types, |raw| as_str(raw).filter(|s| !s.is_empty()))
            .unwrap_or(Cow::Borrowed(UNKNOWN_TYPE));
        let mut time = first(o, &self.times, parse_time_value);
        let mut fields = Vec::new();
        if let Some((p, caps)) = &captures {
            if time.is_none() {
                time = p
                    .time
                    .and_then(|i| caps.get(i))
                    .and_then(|m| parse_time_text(m.as_str()));
            }
            for (i, name, json) in &p.fields {
                let Some(m) = caps.get(*i) else { continue };
                let value = if *json {
                    // Kept only when it is JSON: a field's text is always valid JSON.
                    let text = m.as_str().trim();
                    match serde_json::from_str::<&RawValue>(text) {
                        Ok(_) => Cow::Borrowed(text),
                        Err(_) => continue,
                    }
                } else {
                    Cow::Owned(serde_json::Value::String(m.as_str().to_owned()).to_string())
                };
                fields.push(Field {
                    name: Cow::Owned(name.clone()),
                    json: value,
                });
            }
        }
        for (name, pointer) in &self.fields {
            if let Some(raw) = o.pointer(pointer) {
                fields.push(Field {
                    name: Cow::Owned(name.clone()),
                    json: Cow::Borrowed(raw.get()),
                });
            }
        }
        Some(Detected {
            record_type,
            time,
            natural_id: first(o, &self.ids, id_text),
            fields,
        })
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
            time: "/ts".into(),
            embedded: Some(embedded),
            ..RuleConfig::default()
        };
        let cfg = AuditConfig::only(vec![], vec![rule(false)]);
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
        let cfg = AuditConfig::only(vec![], vec![rule(true)]);
        let x = Extractor::new(&cfg).unwrap();
        assert!(matches!(x.extract(prefixed), Extraction::Audit(_)));
    }

    #[test]
    fn a_suffix_is_matched_against_the_text_after_the_object() {
        let config: AuditConfig = crate::yaml::from_str(
            r"
formats: []
rules:
  - {name: r, suffix: '^(?: | \[\]| \{.*\})\r?$', present: [/t], type: /t}
",
        )
        .unwrap();
        let x = Extractor::new(&config).unwrap();
        for (line, want) in [
            // The suffix implies `embedded`: text may come before the object.
            (r#"msg {"t":"a"} []"#, Some(r#"{"t":"a"}"#)),
            ("msg {\"t\":\"a\"} []\r", Some(r#"{"t":"a"}"#)),
            (r#"{"t":"a"} "#, Some(r#"{"t":"a"}"#)),
            (r#"msg {"t":"a"} {"u":1}"#, Some(r#"{"t":"a"}"#)),
            // Each object is tried with the text after it.
            (r#"{"t":"a"} x {"t":"b"} []"#, Some(r#"{"t":"b"}"#)),
            // Not records: the text after does not match.
            (r#"msg {"t":"a"}"#, None),
            (r#"msg {"t":"a"} [] []"#, None),
            (r#"msg {"t":"a"} {"u":1} x"#, None),
        ] {
            let got = match x.extract(line.as_bytes()) {
                Extraction::Audit(a) => Some(a.record),
                _ => None,
            };
            assert_eq!(got, want, "{line:?}");
        }
    }

    /// The problems of an `audit` section whose rules are `rules` (YAML flow items).
    fn problems(rules: &[&str]) -> Vec<String> {
        let items: Vec<String> = rules.iter().map(|r| format!("  - {r}\n")).collect();
        crate::extract::tests::problems(&format!("formats: []\nrules:\n{}", items.concat()))
    }

    #[test]
    fn every_new_key_is_checked_at_its_yaml_path() {
        let regex_error = "not a valid regex: error: unclosed group";
        let pointer_error = |p: &str| format!("JSON pointer {p:?} must start with '/'");
        for (rule, want) in [
            (
                r"{name: r, present: [nope], type: /t}",
                format!("audit.rules[0].present[0]: {}", pointer_error("nope")),
            ),
            (
                r"{name: r, pattern: {/x: '('}, type: /t}",
                format!("audit.rules[0].pattern./x: {regex_error}"),
            ),
            (
                r"{name: r, pattern: {x: ''}, type: /t}",
                format!("audit.rules[0].pattern.x: {}", pointer_error("x")),
            ),
            (
                r"{name: r, match: {/k: v}, type: []}",
                "audit.rules[0].type: needs at least one JSON pointer to the record type".into(),
            ),
            (
                r"{name: r, match: {/k: v}, type: [/a, b]}",
                format!("audit.rules[0].type[1]: {}", pointer_error("b")),
            ),
            (
                r"{name: r, match: {/k: v}, type: /t, time: x}",
                format!("audit.rules[0].time: {}", pointer_error("x")),
            ),
            (
                r"{name: r, match: {/k: v}, type: /t, id: [/id, x]}",
                format!("audit.rules[0].id[1]: {}", pointer_error("x")),
            ),
            (
                r"{name: r, match: {/k: v}, type: /t, fields: {user: x}}",
                format!("audit.rules[0].fields.user: {}", pointer_error("x")),
            ),
            (
                r"{name: r, prefix: 'tag(', type: /t}",
                format!("audit.rules[0].prefix: {regex_error}"),
            ),
            (
                r"{name: r, suffix: '[]', type: /t}",
                "audit.rules[0].suffix: not a valid regex: error: unclosed character class".into(),
            ),
            (
                r"{name: r, suffix: ' \[\]$', type: /t, embedded: false}",
                "audit.rules[0].embedded: a rule with a `suffix` always precedes text: leave \
                 `embedded` out"
                    .into(),
            ),
            (
                r"{name: r, suffix: ' (?P<extra>\{.*\})$', type: /t}",
                "audit.rules[0].suffix: names the capture `extra`: the suffix is a test, only \
                 the prefix's captures give the time and fields"
                    .into(),
            ),
            (
                r"{name: r, match: {/k: v}, type: /t, json_captures: [ids]}",
                "audit.rules[0].json_captures[0]: there is no `prefix` to capture from".into(),
            ),
            (
                r"{name: r, prefix: 'tag (?P<ids>\S+)', type: /t, json_captures: [ids, idz]}",
                "audit.rules[0].json_captures[1]: the prefix has no capture named `idz`".into(),
            ),
            (
                r"{name: r, prefix: 'tag (?P<time>\S+)', type: /t, json_captures: [time]}",
                "audit.rules[0].json_captures[0]: `time` gives the record's time, not a field"
                    .into(),
            ),
            (
                r"{name: r, prefix: 'tag (?P<user>\S+)', type: /t, fields: {user: /u}}",
                "audit.rules[0].fields.user: the prefix's capture `user` already gives this field"
                    .into(),
            ),
            (
                r"{name: r, prefix: 'tag ', type: /t, embedded: false}",
                "audit.rules[0].embedded: a rule with a `prefix` always follows text: leave \
                 `embedded` out"
                    .into(),
            ),
            (
                r"{name: r, type: /t}",
                "audit.rules[0]: recognises every JSON object: give it a `match`, `present`, \
                 `pattern`, `prefix`, `suffix` or `require_type`"
                    .into(),
            ),
            (
                r"{name: r, prefix: '^\[\d+\] ', type: /t}",
                "audit.rules[0]: has no pre-check signature, so every line would be a \
                 candidate: give it a `match`, `present`, `pattern` or `require_type`, a \
                 `prefix` or `suffix` that requires a literal of at least 3 bytes, or a \
                 `signature` (a member name serves only when it is not an array index and \
                 every JSON encoder writes it as it is: printable ASCII without `/`, `<`, \
                 `>`, `&`, `=`, `'`)"
                    .into(),
            ),
            (
                r"{name: r, match: {/k: v}, type: /t, signature: ''}",
                "audit.rules[0].signature: must not be empty: every line would be a candidate"
                    .into(),
            ),
        ] {
            let got = problems(&[rule]);
            assert_eq!(got, vec![want], "{rule}");
        }
        // A type that is neither a pointer nor a list, at its path.
        let got = problems(&["{name: r, match: {/k: v}, type: 5}"]);
        assert_eq!(got.len(), 1);
        assert!(got[0].starts_with("audit.rules[0].type: "), "{got:?}");
        // The problem is at the rule's own index.
        let got = problems(&["{name: a, match: {/k: v}, type: /t}", "{name: b, type: /t}"]);
        assert_eq!(got.len(), 1);
        assert!(got[0].starts_with("audit.rules[1]: recognises"), "{got:?}");
    }

    #[test]
    fn two_rules_keyed_on_the_same_member_each_find_their_records() {
        // Both rules' signature is the needle `"kind"`, and the second rule's shares the
        // built-in monolog's `"message_slug"`: before the pre-check shared a needle between
        // detectors, only the first detector with it ever saw a candidate.
        let yaml = r#"
formats: [monolog]
rules:
  - {name: a, match: {/kind: a}, type: /t}
  - {name: b, match: {/kind: b}, type: /t}
  - {name: c, present: [/message_slug], type: /message_slug}
"#;
        let config: AuditConfig = crate::yaml::from_str(yaml).unwrap();
        let x = Extractor::new(&config).unwrap();
        for (line, want) in [
            (r#"{"kind": "a", "t": "x"}"#, "a"),
            (r#"{"kind": "b", "t": "x"}"#, "b"),
            (r#"{"message_slug": "s"}"#, "c"),
            (r#"{"channel": "ch", "message_slug": "s"}"#, "monolog"),
        ] {
            let Extraction::Audit(a) = x.extract(line.as_bytes()) else {
                panic!("not a record: {line}")
            };
            assert_eq!(&**a.format, want, "{line}");
        }
    }

    #[test]
    fn a_rule_that_skipped_validation_is_refused_by_the_extractor() {
        let config: AuditConfig =
            crate::yaml::from_str("formats: []\nrules: [{name: r, present: [x], type: /t}]")
                .unwrap();
        let err = Extractor::new(&config).unwrap_err().to_string();
        assert_eq!(
            err,
            "audit.rules[`r`].present[0]: JSON pointer \"x\" must start with '/'"
        );
    }

    #[test]
    fn the_new_keys_are_optional_and_a_match_value_is_still_any_json() {
        // Every rule of the old shape is still valid, and an object in `match` is a value
        // to equal, not a test.
        assert_eq!(
            problems(&["{name: r, match: {/x: {present: true}}, type: /t, time: /ts}"]),
            Vec::<String>::new()
        );
        let config: AuditConfig = crate::yaml::from_str(
            "formats: []\nrules: [{name: r, match: {/x: {present: true}}, type: /t}]",
        )
        .unwrap();
        let x = Extractor::new(&config).unwrap();
        assert!(matches!(
            x.extract(br#"{"x": {"present": true}, "t": "a"}"#),
            Extraction::Audit(_)
        ));
        assert!(matches!(
            x.extract(br#"{"x": 1, "t": "a"}"#),
            Extraction::Ordinary
        ));
    }

    /// The pre-check needles of a rule written in YAML, with their tails.
    fn needles(rule: &str) -> Vec<String> {
        let config: RuleConfig = crate::yaml::from_str(rule).unwrap();
        Rule::new(&config)
            .unwrap()
            .signatures()
            .into_iter()
            .map(|s| {
                let needle = String::from_utf8(s.needle).unwrap();
                match s.tail {
                    Tail::Nothing => needle,
                    Tail::Colon => format!("{needle}:"),
                    Tail::ColonThen(v) => format!("{needle}:{}", String::from_utf8(v).unwrap()),
                    Tail::KeyBefore(k) => format!("{}:{needle}", String::from_utf8(k).unwrap()),
                }
            })
            .collect()
    }

    #[test]
    fn the_signature_is_derived_from_the_most_telling_test() {
        for (rule, want) in [
            // An explicit signature wins.
            (
                r"{name: r, match: {/k: v}, type: /t, signature: 'my-app audit'}",
                vec!["my-app audit"],
            ),
            // Then the first equality, as before.
            (
                r"{name: r, match: {/b: 2, /a: x}, prefix: 'long-literal', type: /t}",
                vec![r#""a":"x""#],
            ),
            // Then the prefix's longest required literal (not one inside an optional part).
            (
                r"{name: r, prefix: '^\d+ pryv-audit\[\d+\]:(?: optional-longer-text)?', present: [/k], type: /t}",
                vec![" pryv-audit["],
            ),
            // Then the suffix's, when the prefix has none long enough.
            (
                r"{name: r, prefix: '^\[', suffix: '^ \[\] (?:end-of-record)?$', present: [/k], type: /t}",
                vec![" [] "],
            ),
            (
                r"{name: r, prefix: 'prefix-literal', suffix: '^ suffix-literal-longer$', type: /t}",
                vec!["prefix-literal"],
            ),
            // A short literal is not enough: then the type keys when the type is required.
            (
                r"{name: r, prefix: '^\[', present: [/k], type: [/a/slug, /b/slug, /c/kind], require_type: true}",
                vec![r#""kind":"#, r#""slug":"#],
            ),
            // Then the first `present`, then the first `pattern`.
            (
                r"{name: r, present: [/k/z, /j], pattern: {/a: ''}, type: /t}",
                vec![r#""z":"#],
            ),
            (
                r"{name: r, pattern: {/a: x, /b: y}, type: /t}",
                vec![r#""a":"#],
            ),
        ] {
            assert_eq!(needles(rule), want, "{rule}");
        }
    }

    /// Finding (adv15) 1: the derived signature assumed how the producer's JSON encoder writes
    /// the key and the value, and that every pointer segment is a key. PHP's `json_encode`
    /// writes `/` as `\/`, PHP and Python (`ensure_ascii`) write non-ASCII as `\u00f6`, Go
    /// writes `&` `<` `>` as `\u0026`…, and `/tags/0` names an array element, which has no
    /// key: `"0":` is never in the line. Each such rule loaded, then silently never saw a
    /// candidate: every record counted `ordinary`. The lines below are what `php -r 'echo
    /// json_encode([...]);'` and `python3 -c 'print(json.dumps({...}))'` print (run when this
    /// test was written) and what Go's `encoding/json` writes for `a&b`.
    #[test]
    fn finding_1_a_derived_signature_holds_however_the_encoder_escapes_or_indexes() {
        let yaml = r#"
formats: []
rules:
  - {name: slash, match: {/kind: "audit/v1"}, type: /t}
  - {name: index, present: [/tags/0], type: /t2}
  - {name: index-match, match: {/labels/0: audit}, type: /t3}
  - {name: key-slash, present: ["/a~1b", /k], type: /t4}
  - {name: html, match: {/k: "a&b"}, type: /t5}
  - {name: typed, type: [/events/0, /event_kind], require_type: true}
"#;
        let config: AuditConfig = crate::yaml::from_str(yaml).unwrap();
        let x = Extractor::new(&config).unwrap();
        for (line, want) in [
            (r#"{"kind":"audit\/v1","t":"x"}"#, "slash"),
            (r#"{"kind": "audit/v1", "t": "x"}"#, "slash"),
            (r#"{"tags":["a"],"t2":"y"}"#, "index"),
            (r#"{"labels": ["audit"], "t3": "z"}"#, "index-match"),
            (r#"{"a\/b":1,"k":2,"t4":"w"}"#, "key-slash"),
            (r#"{"k":"a\u0026b","t5":"v"}"#, "html"),
            (r#"{"events":["login"]}"#, "typed"),
        ] {
            match x.extract(line.as_bytes()) {
                Extraction::Audit(a) => assert_eq!(&**a.format, want, "{line}"),
                other => panic!("{want}: {line} is {other:?}"),
            }
        }
        // A rule whose every test names a key no needle can stand for (a non-ASCII key, which
        // PHP and Python escape) is refused, so the user gives a `signature`, instead of
        // loading and never matching.
        let got = problems(&["{name: r, present: [/größe], type: /t}"]);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].contains("`signature`"), "{got:?}");
        assert!(problems(&["{name: r, present: [/größe], type: /t, signature: 'gr'}"]).is_empty());
    }
}
