//! The [`Extractor`]: the enabled formats, in order, behind one pre-check.
//!
//! Built once from the config. For each line it runs the pre-check (`prefilter.rs`); for a
//! candidate it walks the line's top-level JSON objects from left to right and asks each
//! detector whose signature is present, in configured order (built-in formats, then custom
//! rules), whether the object is its record. The first yes wins.

use std::sync::Arc;

use super::format::Format;
use super::json::Objects;
use super::prefilter::{Prefilter, MAX_DETECTORS, MAX_HITS};
use super::rule::Rule;
use super::{AuditConfig, AuditRecord, ExtractError, Extraction, InvalidReason};

/// Recognises audit records; built once from the config, shared by every source.
#[derive(Debug)]
pub struct Extractor {
    detectors: Vec<Detector>,
    prefilter: Prefilter,
}

/// An enabled format, under the name its records carry.
#[derive(Debug)]
struct Detector {
    name: Arc<str>,
    kind: Kind,
}

/// A built-in format from the list, or a custom rule built from the config.
#[derive(Debug)]
enum Kind {
    Builtin(&'static dyn Format),
    // Boxed: a compiled rule (its regexes) is far larger than a built-in's reference.
    Rule(Box<Rule>),
}

impl Detector {
    fn new(kind: Kind) -> Detector {
        let name = Arc::from(kind.format().name());
        Detector { name, kind }
    }
}

impl Kind {
    fn format(&self) -> &dyn Format {
        match self {
            Kind::Builtin(format) => *format,
            Kind::Rule(rule) => &**rule,
        }
    }
}

impl Extractor {
    pub fn new(config: &AuditConfig) -> Result<Extractor, ExtractError> {
        let mut detectors = Vec::new();
        for format in &config.formats {
            detectors.push(Detector::new(Kind::Builtin(format.format())));
        }
        for rule in &config.rules {
            detectors.push(Detector::new(Kind::Rule(Box::new(Rule::new(rule)?))));
        }
        if detectors.len() > MAX_DETECTORS {
            return Err(ExtractError::TooMany {
                count: detectors.len(),
                max: MAX_DETECTORS,
            });
        }
        let signatures = detectors
            .iter()
            .enumerate()
            .flat_map(|(d, detector)| {
                let format = detector.kind.format();
                format.signatures().into_iter().map(move |s| (d, s))
            })
            .collect();
        let prefilter = Prefilter::new(signatures).map_err(ExtractError::Prefilter)?;
        Ok(Extractor {
            detectors,
            prefilter,
        })
    }

    /// Decides what `line` is. Ordinary lines return after one pass of the pre-check.
    pub fn extract<'a>(&'a self, line: &'a [u8]) -> Extraction<'a> {
        // Step 1: which detectors' signatures are present, and where.
        let candidates = self.prefilter.scan(line);
        if candidates.is_empty() {
            return Extraction::Ordinary;
        }
        // Step 2: the candidate's objects.
        let Ok(text) = std::str::from_utf8(line) else {
            return Extraction::Invalid(InvalidReason::Utf8);
        };
        let hits = candidates.hits();
        let mut covered = [false; MAX_HITS];
        for located in Objects::new(text) {
            for (i, hit) in hits.iter().enumerate() {
                covered[i] |= located.start <= *hit && *hit < located.end;
            }
            for (d, detector) in self.detectors.iter().enumerate() {
                if !candidates.includes(d) {
                    continue;
                }
                if let Some(found) = detector.kind.format().detect(text, &located) {
                    return Extraction::Audit(AuditRecord {
                        format: &detector.name,
                        record_type: found.record_type,
                        time: found.time,
                        natural_id: found.natural_id,
                        fields: found.fields,
                        prefix: &text[..located.start],
                        record: &text[located.start..located.end],
                        suffix: &text[located.end..],
                    });
                }
            }
        }
        if covered[..hits.len()].iter().all(|c| *c) {
            // Every signature sits inside valid JSON that is not an audit record (a nested
            // `{"level":"audit"}`, or a `"type":"event"` without `/event/type`).
            Extraction::Ordinary
        } else {
            Extraction::Invalid(InvalidReason::Json)
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn extractor() -> Extractor {
        Extractor::new(&AuditConfig::default()).unwrap()
    }

    /// (line, expected): `Some((format, type, record))`, `None` for ordinary, `Err(reason)`.
    pub(crate) type Case = (
        &'static str,
        Result<Option<(&'static str, &'static str, &'static str)>, InvalidReason>,
    );

    /// Shared with `rule_seeds.rs`, which runs every line through the seed formats' rules.
    pub(crate) const CASES: &[Case] = &[
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
            formats: vec!["sym".parse().unwrap()],
            rules: vec![],
        };
        let x = Extractor::new(&only_sym).unwrap();
        assert!(matches!(
            x.extract(br#"{"level":"audit"}"#),
            Extraction::Ordinary
        ));
    }

    #[test]
    fn more_detectors_than_the_pre_check_can_track_are_refused() {
        let rule = |i| crate::extract::RuleConfig {
            name: format!("r{i}"),
            matches: [(format!("/k{i}"), serde_json::json!("audit"))].into(),
            type_pointer: "/t".into(),
            ..crate::extract::RuleConfig::default()
        };
        let mut config = AuditConfig {
            formats: vec![],
            rules: (0..MAX_DETECTORS).map(rule).collect(),
        };
        assert!(Extractor::new(&config).is_ok());
        config.rules.push(rule(MAX_DETECTORS));
        let err = Extractor::new(&config).unwrap_err();
        assert_eq!(
            err.to_string(),
            "65 audit detectors are enabled, at most 64 are supported"
        );
    }
}
