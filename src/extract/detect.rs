//! The detectors and the cheap pre-check that runs before them.

use std::borrow::Cow;
use std::sync::Arc;

use aho_corasick::AhoCorasick;
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

use super::json::{self, as_str, Object, Objects};
use super::time::{parse_time_text, parse_time_value};
use super::{AuditConfig, AuditRecord, BuiltinFormat, Extraction, InvalidReason, UNKNOWN_TYPE};

/// Recognises audit records; built once from the config, shared by every source.
#[derive(Debug)]
pub struct Extractor {
    detectors: Vec<Detector>,
    signatures: Vec<Signature>,
    finder: Finder,
}

/// The multi-needle search of the pre-check: the SIMD "packed" (Teddy) searcher where the CPU
/// has it, a plain Aho-Corasick automaton otherwise. (Aho-Corasick's own prefilter keys on the
/// rarest byte of the needles, here `"`, which JSON lines are full of: the packed searcher is
/// about ten times faster on them.)
#[derive(Debug)]
enum Finder {
    Packed(aho_corasick::packed::Searcher),
    Automaton(AhoCorasick),
}

impl Finder {
    fn new(needles: &[&[u8]]) -> Result<Finder, String> {
        let mut builder = aho_corasick::packed::Config::new().builder();
        builder.extend(needles);
        if let Some(searcher) = builder.build() {
            return Ok(Finder::Packed(searcher));
        }
        AhoCorasick::new(needles)
            .map(Finder::Automaton)
            .map_err(|e| format!("cannot build the audit pre-check: {e}"))
    }

    fn find_iter<'a>(
        &'a self,
        haystack: &'a [u8],
    ) -> Box<dyn Iterator<Item = aho_corasick::Match> + 'a> {
        match self {
            Finder::Packed(s) => Box::new(s.find_iter(haystack)),
            Finder::Automaton(a) => Box::new(a.find_iter(haystack)),
        }
    }
}

#[derive(Debug)]
struct Detector {
    name: Arc<str>,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Immuta,
    Sym,
    Monolog,
    Pryv,
    Rule(Rule),
}

#[derive(Debug)]
struct Rule {
    matches: Vec<(Vec<String>, serde_json::Value)>,
    type_pointer: Vec<String>,
    time_pointer: Option<Vec<String>>,
    embedded: bool,
}

/// A byte pattern whose presence makes a line a candidate for one detector: the needle found
/// by Aho-Corasick, then what must follow it.
#[derive(Debug)]
struct Signature {
    detector: usize,
    needle: Vec<u8>,
    tail: Tail,
}

#[derive(Debug)]
enum Tail {
    /// Nothing more.
    Nothing,
    /// Optional whitespace, `:`.
    Colon,
    /// Optional whitespace, `:`, optional whitespace, then these exact bytes.
    ColonThen(Vec<u8>),
    /// The needle is a value: before it come these exact bytes (a key), optional whitespace,
    /// `:`, optional whitespace.
    KeyBefore(Vec<u8>),
}

/// At most this many detectors are candidates at once (a bit set).
const MAX_DETECTORS: usize = 64;

impl Extractor {
    pub fn new(config: &AuditConfig) -> Result<Extractor, String> {
        let mut detectors = Vec::new();
        let mut signatures = Vec::new();
        for format in &config.formats {
            let d = detectors.len();
            let (kind, sigs): (Kind, Vec<(&str, Tail)>) = match format {
                BuiltinFormat::Immuta => (
                    Kind::Immuta,
                    // Anchored on the value, which ordinary lines rarely contain, not on the
                    // key every JSON log line has.
                    vec![("\"audit\"", Tail::KeyBefore(b"\"level\"".to_vec()))],
                ),
                BuiltinFormat::Sym => (
                    Kind::Sym,
                    vec![("\"event\"", Tail::KeyBefore(b"\"type\"".to_vec()))],
                ),
                BuiltinFormat::Monolog => (
                    Kind::Monolog,
                    vec![
                        ("\"message_slug\"", Tail::Colon),
                        ("\"log_event_type\"", Tail::Colon),
                    ],
                ),
                BuiltinFormat::Pryv => (Kind::Pryv, vec![("pryv-audit[", Tail::Nothing)]),
            };
            for (needle, tail) in sigs {
                signatures.push(Signature {
                    detector: d,
                    needle: needle.as_bytes().to_vec(),
                    tail,
                });
            }
            detectors.push(Detector {
                name: Arc::from(format.name()),
                kind,
            });
        }
        for rule in &config.rules {
            let d = detectors.len();
            let mut matches = Vec::new();
            for (pointer, value) in &rule.matches {
                matches.push((json::parse_pointer(pointer)?, value.clone()));
            }
            // The signature is the first equality's last key, and its value when that value
            // is a string or scalar written the same way by any JSON encoder.
            let (segments, value) = matches
                .first()
                .ok_or_else(|| format!("rule {} has no `match`", rule.name))?;
            let key = segments.last().cloned().unwrap_or_default();
            let needle = serde_json::to_vec(&key).map_err(|e| e.to_string())?;
            let tail = match value {
                serde_json::Value::String(s) if !s.contains(['"', '\\']) && s.is_ascii() => {
                    Tail::ColonThen(format!("\"{s}\"").into_bytes())
                }
                serde_json::Value::Bool(_) | serde_json::Value::Null => {
                    Tail::ColonThen(value.to_string().into_bytes())
                }
                _ => Tail::Colon,
            };
            signatures.push(Signature {
                detector: d,
                needle,
                tail,
            });
            detectors.push(Detector {
                name: Arc::from(rule.name.as_str()),
                kind: Kind::Rule(Rule {
                    matches,
                    type_pointer: json::parse_pointer(&rule.type_pointer)?,
                    time_pointer: rule.time.as_deref().map(json::parse_pointer).transpose()?,
                    embedded: rule.embedded,
                }),
            });
        }
        if detectors.len() > MAX_DETECTORS {
            return Err(format!("at most {MAX_DETECTORS} detectors are supported"));
        }
        let needles: Vec<&[u8]> = signatures.iter().map(|s| s.needle.as_slice()).collect();
        let finder = Finder::new(&needles)?;
        Ok(Extractor {
            detectors,
            signatures,
            finder,
        })
    }

    /// Decides what `line` is. Ordinary lines return after one pass of the pre-check.
    pub fn extract<'a>(&'a self, line: &'a [u8]) -> Extraction<'a> {
        // Step 1: which detectors' signatures are present, and where.
        let mut candidates: u64 = 0;
        let mut first_hit = usize::MAX;
        let mut hits: [usize; 4] = [0; 4];
        let mut nhits = 0;
        for m in self.finder.find_iter(line) {
            let sig = &self.signatures[m.pattern().as_usize()];
            if sig.tail.matches(&line[..m.start()], &line[m.end()..]) {
                candidates |= 1 << sig.detector;
                first_hit = first_hit.min(m.start());
                if nhits < hits.len() {
                    hits[nhits] = m.start();
                    nhits += 1;
                }
            }
        }
        if candidates == 0 {
            return Extraction::Ordinary;
        }
        // Step 2: the candidate's objects.
        let Ok(text) = std::str::from_utf8(line) else {
            return Extraction::Invalid(InvalidReason::Utf8);
        };
        let mut covered = [false; 4];
        for located in Objects::new(text) {
            for (i, hit) in hits[..nhits].iter().enumerate() {
                covered[i] |= located.start <= *hit && *hit < located.end;
            }
            for (d, detector) in self.detectors.iter().enumerate() {
                if candidates & (1 << d) == 0 {
                    continue;
                }
                if let Some((record_type, time)) = detector.detect(text, &located) {
                    return Extraction::Audit(AuditRecord {
                        format: &detector.name,
                        record_type,
                        time,
                        prefix: &text[..located.start],
                        record: &text[located.start..located.end],
                        suffix: &text[located.end..],
                    });
                }
            }
        }
        if covered[..nhits].iter().all(|c| *c) {
            // Every signature sits inside valid JSON that is not an audit record (a nested
            // `{"level":"audit"}`, or a `"type":"event"` without `/event/type`).
            Extraction::Ordinary
        } else {
            Extraction::Invalid(InvalidReason::Json)
        }
    }
}

// === impl Tail ===

fn skip_ws(b: &[u8]) -> &[u8] {
    let n = b
        .iter()
        .position(|c| !matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(b.len());
    &b[n..]
}

fn skip_ws_back(b: &[u8]) -> &[u8] {
    let n = b
        .iter()
        .rposition(|c| !matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
        .map_or(0, |i| i + 1);
    &b[..n]
}

impl Tail {
    fn matches(&self, before: &[u8], after: &[u8]) -> bool {
        match self {
            Tail::KeyBefore(key) => match skip_ws_back(before).split_last() {
                Some((b':', rest)) => skip_ws_back(rest).ends_with(key),
                _ => false,
            },
            Tail::Nothing => true,
            Tail::Colon => skip_ws(after).first() == Some(&b':'),
            Tail::ColonThen(value) => match skip_ws(after).split_first() {
                Some((b':', rest)) => skip_ws(rest).starts_with(value),
                _ => false,
            },
        }
    }
}

// === impl Detector ===

type Detected<'a> = (Cow<'a, str>, Option<DateTime<Utc>>);

fn string_or_unknown(raw: Option<&RawValue>) -> Cow<'_, str> {
    raw.and_then(as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(Cow::Borrowed(UNKNOWN_TYPE))
}

fn whole_line(text: &str, located: &json::Located<'_>) -> bool {
    text[..located.start].trim().is_empty() && text[located.end..].trim().is_empty()
}

impl Detector {
    fn detect<'a>(&self, text: &'a str, located: &json::Located<'a>) -> Option<Detected<'a>> {
        let o = &located.object;
        match &self.kind {
            Kind::Immuta => {
                if o.get_str("level")? != "audit" {
                    return None;
                }
                let time = o
                    .get("dateTime")
                    .and_then(parse_time_value)
                    .or_else(|| o.get("timestamp").and_then(parse_time_value));
                Some((string_or_unknown(o.get("recordType")), time))
            }
            Kind::Sym => {
                if o.get_str("type")? != "event" {
                    return None;
                }
                let event = Object::parse(o.get("event")?.get())?;
                let record_type = event.get_str("type")?;
                let time = event.get("timestamp").and_then(parse_time_value);
                Some((record_type, time))
            }
            Kind::Monolog => {
                if let (Some(_), Some(slug)) = (o.get_str("channel"), o.get("message_slug")) {
                    as_str(slug)?;
                    let time = o.get("timestamp").and_then(parse_time_value);
                    return Some((string_or_unknown(Some(slug)), time));
                }
                // LineFormatter: `[ts] channel.LEVEL: message {context} [extra]`.
                let event_type = o.get("log_event_type")?;
                let prefix = &text[..located.start];
                let rest = prefix.strip_prefix('[')?;
                let close = rest.find(']')?;
                let header = rest[close + 1..].trim_start();
                // `channel.LEVEL:` must follow the timestamp.
                let colon = header.find(": ")?;
                if !header[..colon].contains('.') {
                    return None;
                }
                Some((
                    string_or_unknown(Some(event_type)),
                    parse_time_text(&rest[..close]),
                ))
            }
            Kind::Pryv => {
                let prefix = &text[..located.start];
                let tag = prefix.find("pryv-audit[")?;
                prefix[tag..].find("]:")?;
                let action = as_str(o.get("action")?)?;
                Some((action, None))
            }
            Kind::Rule(rule) => {
                if !rule.embedded && !whole_line(text, located) {
                    return None;
                }
                for (pointer, want) in &rule.matches {
                    let raw = o.pointer(pointer)?;
                    let got: serde_json::Value = serde_json::from_str(raw.get()).ok()?;
                    if &got != want {
                        return None;
                    }
                }
                let record_type = string_or_unknown(o.pointer(&rule.type_pointer));
                let time = rule
                    .time_pointer
                    .as_ref()
                    .and_then(|p| o.pointer(p))
                    .and_then(parse_time_value);
                Some((record_type, time))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::RuleConfig;

    fn extractor() -> Extractor {
        Extractor::new(&AuditConfig::default()).unwrap()
    }

    /// (line, expected): `Some((format, type, record))`, `None` for ordinary, `Err(reason)`.
    type Case = (
        &'static str,
        Result<Option<(&'static str, &'static str, &'static str)>, InvalidReason>,
    );

    const CASES: &[Case] = &[
        // Immuta.
        (
            r#"{"level": "audit", "recordType": "sqlQuery", "dateTime": 1}"#,
            Ok(Some((
                "immuta",
                "sqlQuery",
                r#"{"level": "audit", "recordType": "sqlQuery", "dateTime": 1}"#,
            ))),
        ),
        (
            r#"{"level" :  "audit","recordType":"blobFetch"}"#,
            Ok(Some((
                "immuta",
                "blobFetch",
                r#"{"level" :  "audit","recordType":"blobFetch"}"#,
            ))),
        ),
        (
            r#"{"level":"audit"}"#,
            Ok(Some(("immuta", "unknown", r#"{"level":"audit"}"#))),
        ),
        (
            r#"{"level": "info", "message": "user searched for 'audit'"}"#,
            Ok(None),
        ),
        (
            r#"{"level": "error", "message": "Error Response Sent", "query": {"level": "audit"}}"#,
            Ok(None),
        ),
        (
            r#"{"level": "info", "message": "{\"level\": \"audit\"}"}"#,
            Ok(None),
        ),
        (
            r#"{"level": "audit", "recordType": "sqlQuery", "query": "SELECT"#,
            Err(InvalidReason::Json),
        ),
        (
            r#"{"level": "audit", "recordType": "sqlQuery",}"#,
            Err(InvalidReason::Json),
        ),
        (
            r#"plain text "level": "audit" but no object"#,
            Err(InvalidReason::Json),
        ),
        (
            r#"2021-08-09 INFO {"level":"audit","recordType":"spark"} trailing"#,
            Ok(Some((
                "immuta",
                "spark",
                r#"{"level":"audit","recordType":"spark"}"#,
            ))),
        ),
        (
            r#"{"level":"audit","n":1.10,"big":123456789012345678901234567890,"e":1e2,"s":"\u00e9"}"#,
            Ok(Some((
                "immuta",
                "unknown",
                r#"{"level":"audit","n":1.10,"big":123456789012345678901234567890,"e":1e2,"s":"\u00e9"}"#,
            ))),
        ),
        // Sym.
        (
            r#"{"id": "x", "event": {"type": "approve", "timestamp": "2021-08-09T16:02:45.377+00:00"}, "type": "event"}"#,
            Ok(Some((
                "sym",
                "approve",
                r#"{"id": "x", "event": {"type": "approve", "timestamp": "2021-08-09T16:02:45.377+00:00"}, "type": "event"}"#,
            ))),
        ),
        (
            r#"{"event": {"kind": "approve"}, "type": "event"}"#,
            Ok(None),
        ),
        // Monolog JSON and line formats.
        (
            r#"{"channel": "auth", "message_slug": "auth-login-success", "timestamp": "2021-08-09 16:02:45"}"#,
            Ok(Some((
                "monolog",
                "auth-login-success",
                r#"{"channel": "auth", "message_slug": "auth-login-success", "timestamp": "2021-08-09 16:02:45"}"#,
            ))),
        ),
        (
            r#"[2021-08-09 16:02:45] access-manager-auth.INFO: User {id} ok. {"log_event_type": "auth-login-success", "ip": "1"} []"#,
            Ok(Some((
                "monolog",
                "auth-login-success",
                r#"{"log_event_type": "auth-login-success", "ip": "1"}"#,
            ))),
        ),
        (
            r#"[2021-08-09 16:02:45] app.INFO: no context here {"log_event_type": "x""#,
            Err(InvalidReason::Json),
        ),
        // Pryv.
        (
            r#"Aug 09 16:02:45 host pryv-audit[57]: ck6 audit-log/pryv-api createdBy:system ["a{b","action-events.get"] {"source": {"name": "http"}, "action": "events.get"}"#,
            Ok(Some((
                "pryv",
                "events.get",
                r#"{"source": {"name": "http"}, "action": "events.get"}"#,
            ))),
        ),
        (
            r#"Aug 09 16:02:45 host pryv-audit[57]: ck6 broken {"action": "events.get""#,
            Err(InvalidReason::Json),
        ),
        // Ordinary.
        ("", Ok(None)),
        ("just a log line", Ok(None)),
        (r#"{"level":"info","type":"request"}"#, Ok(None)),
    ];

    #[test]
    fn table() {
        let x = extractor();
        for (line, want) in CASES {
            let got = match x.extract(line.as_bytes()) {
                Extraction::Ordinary => Ok(None),
                Extraction::Invalid(r) => Err(r),
                Extraction::Audit(a) => Ok(Some((
                    a.format.to_string(),
                    a.record_type.to_string(),
                    a.record.to_string(),
                ))),
            };
            let want =
                want.map(|o| o.map(|(f, t, r)| (f.to_string(), t.to_string(), r.to_string())));
            assert_eq!(got, want, "line: {line}");
        }
    }

    #[test]
    fn embedded_record_keeps_prefix_and_suffix() {
        let x = extractor();
        let line = r#"[2021-08-09 16:02:45] auth.INFO: ok. {"log_event_type": "a"} []"#;
        let Extraction::Audit(a) = x.extract(line.as_bytes()) else {
            panic!("not audit")
        };
        assert_eq!(a.prefix, "[2021-08-09 16:02:45] auth.INFO: ok. ");
        assert_eq!(a.suffix, " []");
        assert_eq!(a.time.map(|t| t.timestamp()), Some(1628524965));
    }

    #[test]
    fn invalid_utf8_in_a_candidate_is_invalid_and_elsewhere_ordinary() {
        let x = extractor();
        let mut bad = br#"{"level": "audit", "m": ""#.to_vec();
        bad.extend_from_slice(&[0xff, 0xfe]);
        bad.extend_from_slice(b"\"}");
        assert!(matches!(
            x.extract(&bad),
            Extraction::Invalid(InvalidReason::Utf8)
        ));
        assert!(matches!(
            x.extract(&[0xff, 0xfe, b'x']),
            Extraction::Ordinary
        ));
    }

    #[test]
    fn detectors_can_be_disabled_and_ordered() {
        let only_sym = AuditConfig {
            formats: vec![BuiltinFormat::Sym],
            rules: vec![],
        };
        let x = Extractor::new(&only_sym).unwrap();
        assert!(matches!(
            x.extract(br#"{"level":"audit"}"#),
            Extraction::Ordinary
        ));
    }

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
