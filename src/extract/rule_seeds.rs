//! Each built-in format written as a custom rule (`examples/rules-as-formats.yaml`, the file
//! the README's "Writing a format as a rule" points to) finds what the built-in finds: over
//! every sample line, the nastier lines of the extractor's table and lines made here to sit on
//! each format's edges, the rule's [`Extraction`] equals the built-in's in everything but the
//! format name.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::extractor::tests::CASES;
use super::{AuditConfig, Extraction, Extractor, InvalidReason};

/// The rules file, read at build time: the test and the README's copy cannot drift apart.
const RULES: &str = include_str!("../../examples/rules-as-formats.yaml");

#[derive(Deserialize)]
struct RulesFile {
    audit: AuditConfig,
}

fn rules_file() -> AuditConfig {
    crate::yaml::from_str::<RulesFile>(RULES).unwrap().audit
}

/// An extractor with only these built-in formats, or only these rules of the file.
fn builtin(names: &[&str]) -> Extractor {
    let config = AuditConfig::only(names.iter().map(|n| n.parse().unwrap()).collect(), vec![]);
    Extractor::new(&config).unwrap()
}

fn rules(names: &[&str]) -> Extractor {
    let all = rules_file().rules;
    let rules = names
        .iter()
        .map(|n| all.iter().find(|r| r.name == *n).unwrap().clone())
        .collect();
    let config = AuditConfig::only(vec![], rules);
    Extractor::new(&config).unwrap()
}

/// An [`Extraction`] with everything but the format's name.
#[derive(Debug, PartialEq)]
enum Seen {
    Ordinary,
    Invalid(InvalidReason),
    Audit {
        record_type: String,
        time: Option<DateTime<Utc>>,
        prefix: String,
        record: String,
        suffix: String,
        natural_id: Option<String>,
        fields: Vec<(String, String)>,
    },
}

fn seen(x: Extraction<'_>) -> Seen {
    match x {
        Extraction::Ordinary => Seen::Ordinary,
        Extraction::Invalid(r) => Seen::Invalid(r),
        Extraction::Audit(a) => Seen::Audit {
            record_type: a.record_type.into_owned(),
            time: a.time,
            prefix: a.prefix.to_owned(),
            record: a.record.to_owned(),
            suffix: a.suffix.to_owned(),
            natural_id: a.natural_id.map(Cow::into_owned),
            fields: a
                .fields
                .into_iter()
                .map(|f| (f.name.into_owned(), f.json.into_owned()))
                .collect(),
        },
    }
}

/// The application's lines in the samples: raw files as they are, docker's `log` values and
/// CRI's chunks joined, as the source frames them.
fn sample_lines() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/samples");
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.ends_with(".md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut partial = String::new();
        for physical in text.lines() {
            if name.starts_with("docker-") {
                let v: serde_json::Value = serde_json::from_str(physical).unwrap();
                let log = v["log"].as_str().unwrap();
                lines.push(log.strip_suffix('\n').unwrap().to_owned());
            } else if name.starts_with("cri-") {
                let mut parts = physical.splitn(4, ' ');
                let (_, _, tag, chunk) = (parts.next(), parts.next(), parts.next(), parts.next());
                partial.push_str(chunk.unwrap());
                if tag == Some("F") {
                    lines.push(std::mem::take(&mut partial));
                }
            } else {
                lines.push(physical.to_owned());
            }
        }
        assert!(partial.is_empty(), "{name}");
    }
    assert!(lines.len() > 100, "{}", lines.len());
    lines
}

/// Lines on the edges of each format, records or not.
const EDGES: &[&str] = &[
    // Immuta.
    r#"{"level":"audit","recordType":"x","dateTime":"garbage","timestamp":"2021-08-09T16:02:27Z"}"#,
    r#"{"level":"audit","recordType":"x","dateTime":"1628524947022"}"#,
    r#"{"level":"audit","recordType":5}"#,
    r#"{"level":"audit","recordType":""}"#,
    r#"{"level":"AUDIT","recordType":"x"}"#,
    r#"{"level":"audit","recordType":"first"} {"level":"audit","recordType":"second"}"#,
    r#"{"le\u0076el": "audit"}"#,
    r#"{"level": "au\u0064it", "recordType": "x"}"#,
    r#"{"level":"audit","level":"info"}"#,
    r#"{"level":"info","x":"audit"}"#,
    r#"text {"level":"audit","recordType":"mid"} text"#,
    r#"{"level":"audit""#,
    // Sym.
    r#"{"type":"event","event":{"type":5}}"#,
    r#"{"type":"event","event":"approve"}"#,
    r#"{"type":"event","event":{"type":"approve","timestamp":1628524947}}"#,
    r#"{"id":"i-1","type":"event","event":{"type":"approve","timestamp":"nonsense"}}"#,
    r#"pre {"type" : "event","event":{"type":"x"},"id":"i-2"} post"#,
    r#"{"type":"event","event":{"type":"approve"}"#,
    r#"{"type":"events","event":{"type":"approve"}}"#,
    // Monolog JsonFormatter, flattened.
    r#"{"channel":"a","message_slug":""}"#,
    r#"{"channel":1,"message_slug":"x"}"#,
    r#"{"channel":"a","message_slug":null}"#,
    r#"{"message_slug":"x"}"#,
    r#"{"channel":"a","message_slug":"x","timestamp":"2021-08-09T16:02:45+02:00"}"#,
    r#"{"channel":"a","message_slug":"x","timestamp":"2021-08-09 16:02:45"} []"#,
    r#"{"channel":"a","message_slug":"x""#,
    // Monolog LineFormatter.
    r#"[2021-08-09 16:02:45] app.INFO: msg {"log_event_type": 5} []"#,
    r#"[2021-08-09 16:02:45] app.INFO: msg: with colon {"log_event_type":"x"} []"#,
    r#"[2021-08-09 16:02:45] app INFO: no dot {"log_event_type":"x"} []"#,
    r#"[2021-08-09 16:02:45] app:x INFO.x: m {"log_event_type":"x"}"#,
    r#"[2021-08-09 16:02:45] app: x.y: m {"log_event_type":"x"}"#,
    r#"[2021-08-09 16:02:45] a::b.c: m {"log_event_type":"x"}"#,
    r#"[2021-08-09 16:02:45] a:.b: m {"log_event_type":"x"}"#,
    r#"[garbage] a.b: m {"log_event_type":"x"}"#,
    r#"[] a.b: m {"log_event_type":"x"}"#,
    r#" [2021-08-09 16:02:45] a.b: m {"log_event_type":"x"}"#,
    r#"[2021-08-09 16:02:45]a.INFO: m {"log_event_type":"x"}"#,
    r#"[2021-08-09 16:02:45] my chan.INFO: m {"log_event_type":"x"}"#,
    "[2021-08-09 16:02:45]\u{3000}a.INFO: m {\"log_event_type\":\"x\"}",
    "[2021-08-09 16:02:45] a.INFO:\tm {\"log_event_type\":\"x\"}",
    r#"[2021-08-09T16:02:45+02:00] a.INFO: m {"log_event_type":"x"} {"extra":1}"#,
    r#"{"log_event_type":"x"}"#,
    r#"[2021-08-09 16:02:45] a.INFO: m {"ctx":1} {"log_event_type":"second"} []"#,
    // Pryv.
    r#"x pryv-audit[1]x]: {"action":"a"}"#,
    r#"pryv-audit[1] {"action":"a"}"#,
    r#"pryv-audit[1]: {"action": 5}"#,
    r#"pryv-audit[1]: {"foo":1} {"action":"a"}"#,
    r#"{"action":"a"} pryv-audit[1]:"#,
    r#"{"action":"a"} pryv-audit[1]: {"action":"b"}"#,
    r#"Aug 09 host pryv-audit[57]: ck6 audit-log/pryv-api createdBy:system ["s1"] {"action":"events.get"}"#,
    r#"pryv-audit[57]: only-user {"action":"a"}"#,
    // Ordinary.
    "",
    "just a log line",
    r#"{"level":"info","type":"request"}"#,
    r#"{"channel":"a","message":"m","context":{},"extra":{}}"#,
];

fn all_lines() -> Vec<String> {
    let mut lines = sample_lines();
    lines.extend(CASES.iter().map(|(line, _)| (*line).to_owned()));
    lines.extend(EDGES.iter().map(|line| (*line).to_owned()));
    lines
}

/// Compares a built-in format with the rules written for it on every line; `adjust` removes
/// from the rule's finding what the built-in does not give yet (and checks it by hand).
/// Returns how many lines were records.
fn compare(format: &str, names: &[&str], adjust: impl Fn(&str, &mut Seen)) -> usize {
    let (b, r) = (builtin(&[format]), rules(names));
    let mut records = 0;
    for line in all_lines() {
        let want = seen(b.extract(line.as_bytes()));
        let mut got = seen(r.extract(line.as_bytes()));
        if let (Extraction::Audit(a), Seen::Audit { .. }) = (r.extract(line.as_bytes()), &got) {
            assert!(names.contains(&&**a.format), "{}", a.format);
            records += 1;
        }
        adjust(&line, &mut got);
        assert_eq!(got, want, "{format}, line: {line}");
    }
    records
}

#[test]
fn immuta_written_as_a_rule_finds_what_the_builtin_finds() {
    // Records: the three Immuta samples, 5 lines of the table, 6 edges.
    assert_eq!(
        compare("immuta", &["immuta-rule"], |_, _| {}),
        21 + 9 + 13 + 5 + 6
    );
}

#[test]
fn sym_written_as_a_rule_finds_what_the_builtin_finds() {
    let records = compare("sym", &["sym-rule"], |line, got| {
        // The built-in Sym gives no natural id yet (another branch adds `/id`): the rule's is
        // checked by hand here, and compared with the built-in's once both are merged.
        if let Seen::Audit {
            natural_id, record, ..
        } = got
        {
            let v: serde_json::Value = serde_json::from_str(record).unwrap();
            assert_eq!(natural_id.as_deref(), v["id"].as_str(), "{line}");
            *natural_id = None;
        }
    });
    // The sample, 1 line of the table, 3 edges.
    assert_eq!(records, 10 + 1 + 3);
}

#[test]
fn the_sym_rule_gives_the_producers_id() {
    let r = rules(&["sym-rule"]);
    let line = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/samples/sym.jsonl"
    ))
    .unwrap();
    let Extraction::Audit(a) = r.extract(line.lines().next().unwrap().as_bytes()) else {
        panic!("not a record")
    };
    assert_eq!(
        a.natural_id.as_deref(),
        Some("8fcd7f40-73c1-cd2c-81f9-8b521905d591")
    );
}

#[test]
fn monolog_written_as_two_rules_finds_what_the_builtin_finds() {
    let records = compare(
        "monolog",
        &["monolog-json-rule", "monolog-line-rule"],
        |_, _| {},
    );
    // The two samples, 2 lines of the table, 3 JsonFormatter and 12 LineFormatter edges.
    assert_eq!(records, 10 + 10 + 2 + 3 + 12);
}

#[test]
fn pryv_written_as_a_rule_finds_what_the_builtin_finds() {
    let records = compare("pryv", &["pryv-rule"], |_, got| {
        // The built-in Pryv gives no fields yet (another branch adds them): the rule's are
        // checked by hand in `the_pryv_rule_reads_its_fields_from_the_prefix`, and compared
        // with the built-in's once both are merged.
        if let Seen::Audit { fields, .. } = got {
            fields.clear();
        }
    });
    // The sample, 1 line of the table, 5 edges.
    assert_eq!(records, 10 + 1 + 5);
}

#[test]
fn the_pryv_rule_reads_its_fields_from_the_prefix() {
    let r = rules(&["pryv-rule"]);
    let fields = |line: &str| match seen(r.extract(line.as_bytes())) {
        Seen::Audit { fields, .. } => fields,
        other => panic!("not a record: {other:?}"),
    };
    let line = r#"Aug 09 16:02:45 co1-pryv-li pryv-audit[57]: ck6j759f000011ps2octzo1ds audit-log/pryv-api createdBy:system ["access-ck6j78uj600011ss2neygkpub","action-accesses.delete"] {"source": {"name": "http", "ip": "85.5.192.175"}, "action": "accesses.delete"}"#;
    let want = [
        ("userid", r#""ck6j759f000011ps2octzo1ds""#),
        ("type", r#""audit-log/pryv-api""#),
        ("createdBy", r#""system""#),
        (
            "streamIds",
            r#"["access-ck6j78uj600011ss2neygkpub","action-accesses.delete"]"#,
        ),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(n, j)| ((*n).to_owned(), (*j).to_owned()))
        .collect();
    assert_eq!(fields(line), want);
    // A capture that is text is a JSON string, escapes included.
    let line = r#"pryv-audit[1]: us"er t createdBy:x ["a{b"] {"action":"a"}"#;
    assert_eq!(fields(line)[0], ("userid".into(), r#""us\"er""#.into()));
    // A JSON capture that is not JSON is left out; the record is still a record.
    let line = r#"pryv-audit[1]: u t createdBy:x [not json] {"action":"a"}"#;
    let names: Vec<String> = fields(line).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["userid", "type", "createdBy"]);
    // Text that does not fit the optional part: a record without fields.
    assert_eq!(
        fields(r#"pryv-audit[57]: only-user {"action":"a"}"#),
        vec![]
    );
}

#[test]
fn the_nested_monolog_json_formatter_as_a_rule() {
    let r = rules(&["monolog-nested-rule"]);
    let time = |s: &str| Some(s.parse::<DateTime<Utc>>().unwrap());
    for (line, want) in [
        (
            r#"{"message":"User logged in","context":{"message_slug":"auth-login-success","ip":"1"},"level":200,"level_name":"INFO","channel":"auth","datetime":"2021-08-09T16:02:45.123456+00:00","extra":{}}"#,
            Some(("auth-login-success", time("2021-08-09T16:02:45.123456Z"))),
        ),
        (
            r#"{"message":"m","context":{"log_event_type":"auth-logout"},"channel":"auth","datetime":"2021-08-09T18:02:45+02:00","extra":[]}"#,
            Some(("auth-logout", time("2021-08-09T16:02:45Z"))),
        ),
        (
            r#"{"message":"m","context":{},"channel":"auth","datetime":"x","extra":{"message_slug":"from-extra"}}"#,
            Some(("from-extra", None)),
        ),
        (
            r#"{"message":"m","context":{"message_slug":5},"channel":"a","extra":{"log_event_type":"last"}}"#,
            Some(("last", None)),
        ),
        (
            r#"{"message":"m","context":{"message_slug":"","log_event_type":"second"},"channel":"a"}"#,
            Some(("second", None)),
        ),
        (
            r#"{"message":"m","context":{"message_slug":""},"channel":"a"}"#,
            Some(("unknown", None)),
        ),
        // Not records: no string type anywhere, no string channel, not an object.
        (
            r#"{"message":"m","context":{"message_slug":1},"channel":"a","extra":{}}"#,
            None,
        ),
        (
            r#"{"message":"m","context":{"message_slug":"x"},"channel":1}"#,
            None,
        ),
        (r#"{"message":"m","message_slug":"x"}"#, None),
        (r#"{"message_slug":"x","context":"c"}"#, None),
    ] {
        let got = match r.extract(line.as_bytes()) {
            Extraction::Audit(a) => {
                assert_eq!(a.record, line);
                Some((a.record_type.into_owned(), a.time))
            }
            Extraction::Ordinary => None,
            Extraction::Invalid(reason) => panic!("{line}: {reason:?}"),
        };
        assert_eq!(got, want.map(|(t, time)| (t.to_owned(), time)), "{line}");
    }
}

#[test]
fn the_readme_shows_the_rules_file_as_it_is() {
    let readme = include_str!("../../README.md");
    let rules = &RULES[RULES.find("audit:").unwrap()..];
    assert!(
        readme.contains(&format!("```yaml\n{rules}```\n")),
        "README.md's \"Writing a format as a rule\" must hold examples/rules-as-formats.yaml \
         from `audit:` on"
    );
}

/// The corners where a rule and a built-in differ, as the README lists them: when a built-in
/// changes, this test says so, and the README's list is to be updated.
#[test]
fn the_known_differences_are_the_ones_the_readme_lists() {
    let kind = |x: &Extractor, line: &str| match seen(x.extract(line.as_bytes())) {
        Seen::Audit { record_type, .. } => Some(record_type),
        _ => None,
    };
    for (format, names, line, builtin_type, rule_type) in [
        (
            "sym",
            &["sym-rule"][..],
            r#"{"type":"event","event":{"type":""}}"#,
            Some(""),
            Some("unknown"),
        ),
        (
            "pryv",
            &["pryv-rule"][..],
            r#"pryv-audit[1]: {"action":""}"#,
            Some(""),
            Some("unknown"),
        ),
        (
            "monolog",
            &["monolog-json-rule", "monolog-line-rule"][..],
            r#"[2021-08-09 16:02:45] a.INFO: m {"channel":"c","message_slug":1,"log_event_type":"t"}"#,
            None,
            Some("t"),
        ),
    ] {
        assert_eq!(
            kind(&builtin(&[format]), line).as_deref(),
            builtin_type,
            "{line}"
        );
        assert_eq!(kind(&rules(names), line).as_deref(), rule_type, "{line}");
    }
}
