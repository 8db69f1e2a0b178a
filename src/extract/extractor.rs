//! The [`Extractor`]: the enabled formats, in order, behind one pre-check.
//!
//! Built once from the config. For each line it runs the pre-check (`prefilter.rs`); for a
//! candidate it walks the line's top-level JSON objects from left to right and asks each
//! detector whose signature is present, in configured order (built-in formats, then custom
//! rules), whether the object is its record. The first yes wins.
//!
//! A candidate line that is, as a whole, a JSON value other than an object (an array of
//! records, say) is ordinary: only a top-level object can be an audit record, and the search
//! for objects embedded in text applies only to lines that are not JSON.
//!
//! The record's natural id (the producer's own id, the envelope's `record_id`) is the value at
//! the format's `audit.ids` pointer when one is configured and it holds a non-empty string or a
//! number (its text as written), else the one the format itself reads (Sym's `/id`), else none.

use std::borrow::Cow;
use std::sync::Arc;

use super::explain::{Observer, Quiet};
use super::format::Format;
use super::json::{as_str, is_non_object_json, parse_pointer, Objects};
use super::prefilter::{Prefilter, MAX_DETECTORS};
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
    /// The configured pointer to the producer's id (`audit.ids`), as unescaped segments.
    id: Option<Vec<String>>,
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
        Detector {
            name,
            kind,
            id: None,
        }
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
    /// The extractor of the detectors `config`, without configured ids.
    pub fn new(config: &AuditConfig) -> Result<Extractor, ExtractError> {
        let ids = &config.ids;
        let mut detectors = Vec::new();
        for format in &config.formats {
            let mut detector = Detector::new(Kind::Builtin(format.format()));
            if let Some(pointer) = ids.get(format.name()) {
                let segments =
                    parse_pointer(pointer).map_err(|message| ExtractError::IdPointer {
                        format: format.name().to_owned(),
                        message,
                    })?;
                detector.id = Some(segments);
            }
            detectors.push(detector);
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
        self.walk(line, &mut Quiet)
    }

    /// The names of the detectors, in the order they are tried.
    pub(super) fn names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.detectors.iter().map(|d| &d.name)
    }

    /// The one walk [`Extractor::extract`] and `check --explain` share: `seen` is told every
    /// decision as it is made. For `extract` it is [`Quiet`], whose calls compile to nothing.
    pub(super) fn walk<'a>(&'a self, line: &'a [u8], seen: &mut impl Observer) -> Extraction<'a> {
        // Step 1: which detectors' signatures are present, and where.
        let candidates = self.prefilter.scan(line);
        seen.scanned(&candidates);
        if candidates.is_empty() {
            return Extraction::Ordinary;
        }
        // Step 2: the candidate's objects.
        let Ok(text) = std::str::from_utf8(line) else {
            return Extraction::Invalid(InvalidReason::Utf8);
        };
        if is_non_object_json(text) {
            // Issue 15, finding 5: only a top-level object can be a record; every signature is
            // inside this valid JSON value.
            seen.not_an_object();
            return Extraction::Ordinary;
        }
        // Where the valid objects are: a signature inside none makes the line invalid.
        let mut spans: Vec<(usize, usize)> = Vec::new();
        let mut objects = Objects::new(text);
        while let Some(attempt) = objects.next_attempt() {
            let located = match attempt {
                Ok(located) => located,
                Err(rejected) => {
                    seen.rejected(&rejected);
                    continue;
                }
            };
            seen.object(&located);
            spans.push((located.start, located.end));
            for (d, detector) in self.detectors.iter().enumerate() {
                if !candidates.includes(d) {
                    continue;
                }
                let found = detector.kind.format().detect(text, &located);
                seen.tried(&detector.name, found.is_some());
                if let Some(found) = found {
                    let configured = detector.id.as_ref().and_then(|pointer| {
                        let raw = located.object.pointer(pointer)?;
                        let text = raw.get();
                        match text.as_bytes().first()? {
                            b'"' => as_str(raw).filter(|s| !s.is_empty()),
                            b'-' | b'0'..=b'9' => Some(Cow::Borrowed(text)),
                            _ => None,
                        }
                    });
                    return Extraction::Audit(AuditRecord {
                        format: &detector.name,
                        record_type: found.record_type,
                        time: found.time,
                        natural_id: configured.or(found.natural_id),
                        fields: found.fields,
                        prefix: &text[..located.start],
                        record: &text[located.start..located.end],
                        suffix: &text[located.end..],
                    });
                }
            }
        }
        // Every signature's place counts, not only the first few the pre-check keeps.
        let all;
        let hits = if candidates.more() {
            all = self.prefilter.all_hits(line);
            &all[..]
        } else {
            candidates.hits()
        };
        let covered: Vec<bool> = (hits.iter())
            .map(|h| spans.iter().any(|(start, end)| start <= h && h < end))
            .collect();
        seen.coverage(hits, &covered);
        if covered.iter().all(|c| *c) {
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

    /// Issue 15, finding 5: a line that is itself valid JSON but not an object (an array
    /// holding an audit-looking object) was shipped as an audit record with prefix `[`. Only a
    /// top-level object can be a record: the signatures sit inside valid JSON, so the line is
    /// ordinary. A line that is not JSON as a whole is still searched for embedded objects.
    #[test]
    fn finding_5_a_line_that_is_a_json_array_is_not_an_audit_record() {
        let x = extractor();
        for line in [
            r#"[{"level":"audit","recordType":"sqlQuery"}]"#,
            r#" [ {"level": "audit"}, 2 ] "#,
            r#"[1, {"channel": "auth", "message_slug": "auth-login-success"}]"#,
            r#"[{"message":"m","context":{"message_slug":"s"},"channel":"app","datetime":"2026-01-01T00:00:00+00:00","extra":{}}]"#,
            r#"[[{"id": "x", "event": {"type": "approve"}, "type": "event"}]]"#,
        ] {
            let got = x.extract(line.as_bytes());
            assert!(matches!(got, Extraction::Ordinary), "{line}: {got:?}");
        }
        // Not JSON as a whole: the embedded object is still found.
        let line = r#"[1] {"level":"audit","recordType":"spark"}"#;
        let Extraction::Audit(a) = x.extract(line.as_bytes()) else {
            panic!("not audit: {line}")
        };
        assert_eq!(
            (a.prefix, a.record),
            ("[1] ", r#"{"level":"audit","recordType":"spark"}"#)
        );
    }

    /// Finding (adv15) 3: only the first four signature places were checked against the
    /// valid objects, so a line whose first four signatures sat inside valid objects that are
    /// not records (a message quoting audit-looking JSON) and whose fifth was in a record cut
    /// short (a Laravel context cut by a line break) was `ordinary`: the cut record lost
    /// without a count. Every place counts, however many there are.
    #[test]
    fn finding_3_a_cut_record_after_four_quoted_signatures_is_counted_invalid() {
        let x = extractor();
        let quoted = r#"{"log_event_type":"q"} "#.repeat(crate::extract::prefilter::MAX_HITS);
        let line = format!(
            r#"[2026-01-01 00:00:00] a.INFO: see {quoted}{{"log_event_type":"real","x":"cut"#
        );
        let got = x.extract(line.as_bytes());
        assert!(
            matches!(got, Extraction::Invalid(InvalidReason::Json)),
            "{line}: {got:?}"
        );
        // Every place inside valid objects that are not records: ordinary, as before.
        let line = format!("[2026-01-01 00:00:00] a.INFO: see {quoted}{quoted}[] []");
        assert!(matches!(x.extract(line.as_bytes()), Extraction::Ordinary));
    }

    /// Finding (adv15) 4: the walk gave up after 32 `{` per line, valid objects included, so
    /// a Laravel line whose message holds a JSON array of 40 rows
    /// (`Log::info('Imported '.json_encode($rows), [...])`) or 17 Blade `{{ x }}` never reached
    /// its context: the audit event was counted invalid, not shipped. Both lines are what the
    /// real monolog 2.9.1 writes with Laravel's LineFormatter. Valid objects cost linear work
    /// (their inside is never tried again); only the `{` that start none are bounded.
    #[test]
    fn finding_4_a_message_with_many_braces_does_not_hide_the_context() {
        let x = extractor();
        let rows: Vec<String> = (0..40).map(|i| format!(r#"{{"id":{i}}}"#)).collect();
        let blade = "{{ x }} ".repeat(17);
        for (line, want) in [
            (
                format!(
                    r#"[2026-12-02 06:52:09] app.INFO: Imported rows [{}] {{"log_event_type":"rows-imported","count":40}} "#,
                    rows.join(",")
                ),
                "rows-imported",
            ),
            (
                format!(
                    r#"[2026-12-02 06:52:09] app.INFO: Template {blade}rendered {{"log_event_type":"template-rendered"}} "#
                ),
                "template-rendered",
            ),
        ] {
            match x.extract(line.as_bytes()) {
                Extraction::Audit(a) => assert_eq!(a.record_type, want),
                other => panic!("{line}: {other:?}"),
            }
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
        let only_sym = AuditConfig::only(vec!["sym".parse().unwrap()], vec![]);
        let x = Extractor::new(&only_sym).unwrap();
        assert!(matches!(
            x.extract(br#"{"level":"audit"}"#),
            Extraction::Ordinary
        ));
    }

    #[test]
    fn finding_4_a_configured_id_pointer_supplies_or_overrides_the_natural_id() {
        let section: AuditConfig =
            crate::yaml::from_str("ids: {immuta: /request/id, sym: /meta/id}").unwrap();
        let x = Extractor::new(&section).unwrap();
        let id = |line: &str| match x.extract(line.as_bytes()) {
            Extraction::Audit(a) => a.natural_id.map(Cow::into_owned),
            other => panic!("{other:?}: {line}"),
        };
        let immuta = |v: &str| format!(r#"{{"level": "audit", "request": {{"id": {v}}}}}"#);
        assert_eq!(id(&immuta(r#""r-1""#)).as_deref(), Some("r-1"));
        assert_eq!(
            id(&immuta("1.10")).as_deref(),
            Some("1.10"),
            "number text as written"
        );
        assert_eq!(id(&immuta("-7")).as_deref(), Some("-7"));
        assert_eq!(id(&immuta(r#""""#)), None);
        assert_eq!(id(&immuta("null")), None);
        assert_eq!(id(&immuta(r#"{"x": 1}"#)), None);
        assert_eq!(id(r#"{"level": "audit"}"#), None);
        let sym = |meta: &str| {
            format!(
                r#"{{"id": "own", "meta": {meta}, "event": {{"type": "approve"}}, "type": "event"}}"#
            )
        };
        assert_eq!(
            id(&sym(r#"{"id": "m-1"}"#)).as_deref(),
            Some("m-1"),
            "overrides"
        );
        assert_eq!(
            id(&sym("{}")).as_deref(),
            Some("own"),
            "else the format's own"
        );
        // Without `ids`, Immuta has none and Sym its own.
        let x = extractor();
        let line = immuta(r#""r-1""#);
        let Extraction::Audit(a) = x.extract(line.as_bytes()) else {
            panic!()
        };
        assert_eq!(a.natural_id, None);
    }

    #[test]
    fn more_detectors_than_the_pre_check_can_track_are_refused() {
        let rule = |i| crate::extract::RuleConfig {
            name: format!("r{i}"),
            matches: [(format!("/k{i}"), serde_json::json!("audit"))].into(),
            type_pointer: "/t".into(),
            ..crate::extract::RuleConfig::default()
        };
        let mut config = AuditConfig::only(vec![], (0..MAX_DETECTORS).map(rule).collect());
        assert!(Extractor::new(&config).is_ok());
        config.rules.push(rule(MAX_DETECTORS));
        let err = Extractor::new(&config).unwrap_err();
        assert_eq!(
            err.to_string(),
            "65 audit detectors are enabled, at most 64 are supported"
        );
    }
}
