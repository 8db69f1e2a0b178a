//! Each built-in format written as a custom rule (`examples/rules-as-formats.yaml`, the file
//! the README's "Writing a format as a rule" points to) finds what the built-in finds: over
//! every sample line, the nastier lines of the extractor's table, the built-ins' own test lines
//! and lines made here to sit on each format's edges, the rules' [`Extraction`] equals the
//! built-in's in everything but the format name (type, time, prefix, record, suffix, natural
//! id, fields). The few corners where a rule cannot say what the built-in checks are pinned,
//! line by line, in `the_known_differences_are_the_ones_the_readme_lists`, and listed in the
//! README; the real monolog's output is compared in `tests/producers.rs`.

use std::borrow::Cow;
use std::collections::BTreeMap;

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

/// The four rules that write the built-in monolog.
const MONOLOG_RULES: &[&str] = &[
    "monolog-json-rule",
    "monolog-nested-rule",
    "monolog-line-context-rule",
    "monolog-line-extra-rule",
];

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
    // Sym's natural id (the built-in's own test lines): a string, escaped, empty, a number.
    r#"{"id": "8fcd-7f40", "event": {"type": "approve"}, "type": "event"}"#,
    r#"{"id": "a\u0062", "event": {"type": "approve"}, "type": "event"}"#,
    r#"{"id": "", "event": {"type": "approve"}, "type": "event"}"#,
    // Monolog, flattened JSON (the seed's shape).
    r#"{"channel":"a","message_slug":""}"#,
    r#"{"channel":1,"message_slug":"x"}"#,
    r#"{"channel":"a","message_slug":null}"#,
    r#"{"message_slug":"x"}"#,
    r#"{"channel":"a","message_slug":"x","timestamp":"2021-08-09T16:02:45+02:00"}"#,
    r#"{"channel":"a","message_slug":"x","timestamp":"2021-08-09 16:02:45"} []"#,
    r#"{"channel":"a","message_slug":"x""#,
    r#"{"channel": "auth", "message_slug": "auth-login-success", "timestamp": "2021-08-09 16:02:45"}"#,
    // Monolog JsonFormatter, the context nested (with the built-in's own test lines).
    r#"{"message":"m","context":{"message_slug":"a","x":1},"level":200,"level_name":"INFO","channel":"auth","datetime":"2021-08-09T18:02:45.123456+02:00","extra":{}}"#,
    r#"{"message":"m","context":{"log_event_type":"b"},"channel":"auth","datetime":"2021-08-09T16:02:45+00:00","extra":{"uid":"1"}}"#,
    r#"{"message":"m","level":200,"channel":"auth","datetime":"x","extra":{"uid":"1","message_slug":"c"}}"#,
    r#"{"context":{"message_slug":"s","log_event_type":"t"},"channel":"a"}"#,
    r#"{"message":"m","context":{"message_slug":"a"},"datetime":"x"}"#,
    r#"{"context":{"data":{"message_slug":"a"}},"channel":"a","extra":{}}"#,
    r#"{"context":"{\"message_slug\":\"a\"}","channel":"a"}"#,
    r#"{"context":[{"message_slug":"a"}],"channel":"a"}"#,
    r#"{"message":"m","context":{},"channel":"auth","datetime":"x","extra":{"message_slug":"e"}}"#,
    r#"{"message":"m","context":{"message_slug":"","log_event_type":"second"},"channel":"a"}"#,
    r#"{"message":"m","context":{"message_slug":""},"channel":"a"}"#,
    r#"{"message":"m","context":{"foo":1},"channel":"a","extra":{"message_slug":"x","log_event_type":"y"}}"#,
    r#"{"message":"m","context":{"message_slug":"x"},"channel":1}"#,
    r#"x {"message":"m","context":{"log_event_type":"t"},"channel":"a"} y"#,
    // Monolog LineFormatter: the built-in's own test lines.
    r#"[2021-08-09 16:02:45] auth.INFO: ok {"log_event_type":"a"} "#,
    r#"[2021-08-09 16:02:45] auth.INFO: ok {"log_event_type":"a"} {"uid":"1"}"#,
    r#"[2021-08-09T18:02:45.123456+02:00] my.app.NOTICE: ok {"log_event_type":"a"} []"#,
    "[2021-08-09 16:02:45] auth.INFO: ok {\"log_event_type\":\"a\"} []\r",
    r#"[2021-08-09 16:02:45] a.INFO: ok [] {"message_slug":"e","uid":"1"}"#,
    r#"[2021-08-09 16:02:45] a.INFO: ok  {"message_slug":"e"}"#,
    r#"[2021-08-09 16:02:45] a.INFO: ok {"a":1} {"message_slug":"e"}"#,
    r#"to admin {"log_event_type":"a"} "#,
    r#" {"log_event_type":"a"} "#,
    r#"[2021-08-09 16:02:45] something else: {"log_event_type":"a"} []"#,
    r#"[2021-08-09 16:02:45] a.INFO: see {"log_event_type":"a"}  "#,
    r#"[2021-08-09 16:02:45] a.INFO: see {"log_event_type":"a"} [] []"#,
    r#"[2021-08-09 16:02:45] a.INFO: see {"log_event_type":"a"} {"b":1} "#,
    r#"[2021-08-09 16:02:45] a.INFO: see {"log_event_type":"a"} {"b":1} []"#,
    r#"[2021-08-09 16:02:45] a.INFO: see {"log_event_type":"a"}  {"uid":"1"}"#,
    r#"[2021-08-09 16:02:45] a.INFO: see {"log_event_type":"a"} upstream {"b":1} "#,
    r#"[2021-08-09 16:02:45] a.INFO: see {"log_event_type":"a"} []  "#,
    r#"{"log_event_type":"a"}  "#,
    r#"{"log_event_type":"a"}"#,
    r#"payload: {"log_event_type":"a"}"#,
    r#"{"log_event_type":"a"} "#,
    // Monolog LineFormatter: the header, which gives only the time.
    r#"[2021-08-09 16:02:45] app.INFO: msg: with colon {"log_event_type":"x"} []"#,
    r#"[2021-08-09 16:02:45] app INFO: no dot {"log_event_type":"x"} []"#,
    r#"[2021-08-09 16:02:45] app.FOO: not a level {"log_event_type":"x"} []"#,
    r#"[2021-08-09 16:02:45] app.info: lower case {"log_event_type":"x"} []"#,
    r#"[2021-08-09 16:02:45] app:x INFO.x: m {"log_event_type":"x"} []"#,
    r#"[2021-08-09 16:02:45] app:x.INFO: m {"log_event_type":"x"} []"#,
    r#"[2021-08-09 16:02:45] app: x.INFO: m {"log_event_type":"x"} []"#,
    r#"[2021-08-09 16:02:45] a::b.ERROR: m {"log_event_type":"x"} []"#,
    r#"[2021-08-09 16:02:45] a:.DEBUG: m {"log_event_type":"x"} []"#,
    r#"[2021-08-09 16:02:45] .EMERGENCY: m {"log_event_type":"x"} []"#,
    r#"[2021-08-09 16:02:45] a.b.INFO.WARNING: m {"log_event_type":"x"} []"#,
    r#"[2021-08-09 16:02:45] a.INFO.b: m {"log_event_type":"x"} []"#,
    r#"[garbage] a.INFO: m {"log_event_type":"x"} []"#,
    r#"[] a.INFO: m {"log_event_type":"x"} []"#,
    r#"[2021-08-09 16:02:45]] a.INFO: m {"log_event_type":"x"} []"#,
    r#"[2021-08-09 16:02:45]x] a.INFO: m {"log_event_type":"x"} []"#,
    r#"[2021-08-09 16:02:45] x] a.INFO: m {"log_event_type":"x"} []"#,
    r#"[a] b: [2021-08-09 16:02:45] c.INFO: m {"log_event_type":"x"} []"#,
    r#" [2021-08-09 16:02:45] a.INFO: m {"log_event_type":"x"} []"#,
    r#"[2021-08-09 16:02:45]a.INFO: m {"log_event_type":"x"} []"#,
    r#"[2021-08-09 16:02:45] my chan.INFO: m {"log_event_type":"x"} []"#,
    "[2021-08-09 16:02:45]\u{3000}a.INFO: m {\"log_event_type\":\"x\"} []",
    "[2021-08-09 16:02:45] a.INFO:\tm {\"log_event_type\":\"x\"} []",
    r#"[2021-08-09T16:02:45+02:00] a.INFO: m {"log_event_type":"x"} {"extra":1}"#,
    r#"[2021-08-09 16:02:45] a.INFO: m {"ctx":1} {"log_event_type":"second"} []"#,
    // An empty message: the header's space is the message's.
    r#"[2021-08-09 16:02:45] a.INFO:  {"log_event_type":"x"} []"#,
    r#"[2021-08-09 16:02:45] a.INFO: {"log_event_type":"x"} []"#,
    r#"[2021-08-09 16:02:45] a.INFO:  {"message_slug":"e"}"#,
    r#"[2021-08-09 16:02:45] a.INFO:   {"message_slug":"e"}"#,
    r#"[2021-08-09 16:02:45] a.INFO:  [] {"message_slug":"e"}"#,
    r#"[2021-08-09 16:02:45] a.INFO: {"message_slug":"e"}"#,
    // The line's end: one `\r` is the line's, a second is not.
    "[2021-08-09 16:02:45] a.INFO: m {\"log_event_type\":\"x\"} \r",
    "[2021-08-09 16:02:45] a.INFO: m {\"log_event_type\":\"x\"} []\r\r",
    "[2021-08-09 16:02:45] a.INFO: m [] {\"message_slug\":\"e\"}\r",
    "[2021-08-09 16:02:45] a.INFO: m [] {\"message_slug\":\"e\"}\r\r",
    "[2021-08-09 16:02:45] a.INFO: m {\"log_event_type\":\"x\"} {\"u\":1}\r",
    // The extra after a context: one JSON object, nested, strings holding braces; or not.
    r#"[2021-08-09 16:02:45] a.INFO: m {"log_event_type":"x"} {"git":{"branch":"main","commit":"abc"}}"#,
    r#"[2021-08-09 16:02:45] a.INFO: m {"log_event_type":"x"} {"a":{"b":{"c":{"d":1}}}}"#,
    r#"[2021-08-09 16:02:45] a.INFO: m {"log_event_type":"x"} {"a":[{"b":1},{"c":[{"d":2}]}]}"#,
    r#"[2021-08-09 16:02:45] a.INFO: m {"log_event_type":"x"} {"a":"} {","b":"\"} {\\"}"#,
    r#"[2021-08-09 16:02:45] a.INFO: see {"log_event_type":"x"} {"a":1} {"uid":"1"}"#,
    r#"[2021-08-09 16:02:45] a.INFO: see {"log_event_type":"x"} {"a":1}}"#,
    r#"[2021-08-09 16:02:45] a.INFO: see {"log_event_type":"x"} {"a":"}"#,
    // Both type keys, each in its place.
    r#"[2021-08-09 16:02:45] a.INFO: m {"message_slug":"s","log_event_type":"t"} []"#,
    r#"[2021-08-09 16:02:45] a.INFO: m {"message_slug":"s"} {"log_event_type":"t"}"#,
    r#"[2021-08-09 16:02:45] a.INFO: m {"channel":"c","message_slug":"flat"} []"#,
    r#"[2021-08-09 16:02:45] a.INFO: m {"channel":"c","context":{"log_event_type":"nested"}} []"#,
    // Pryv.
    r#"x pryv-audit[1]x]: {"action":"a"}"#,
    r#"pryv-audit[1] {"action":"a"}"#,
    r#"pryv-audit[1]: {"action": 5}"#,
    r#"pryv-audit[1]: {"foo":1} {"action":"a"}"#,
    r#"{"action":"a"} pryv-audit[1]:"#,
    r#"{"action":"a"} pryv-audit[1]: {"action":"b"}"#,
    r#"Aug 09 host pryv-audit[57]: ck6 audit-log/pryv-api createdBy:system ["s1"] {"action":"events.get"}"#,
    r#"pryv-audit[57]: only-user {"action":"a"}"#,
    // Pryv's fields (the built-in's own test lines): exactly its template's shape, or none.
    r#"Oct 26 14:58:46 co1-pryv-li pryv-audit[57]: ck6j759f000011ps2octzo1ds audit-log/pryv-api createdBy:system ["access-ck6j78uj600011ss2neygkpub","action-events.get"] {"source":{"name":"http"},"action":"events.get"}"#,
    r#"x pryv-audit[1]: u t createdBy: ["a{b", "c\"d"] {"action":"events.get"}"#,
    r#"x pryv-audit[1]: u t createdBy:c ["a{b", "c\"d"] {"action":"events.get"}"#,
    r#"x pryv-audit[1]: u\ t createdBy:c [] {"action":"events.get"}"#,
    r#"x pryv-audit[1]: {"action":"events.get"}"#,
    r#"x pryv-audit[1]: u t createdBy:c {"action":"events.get"}"#,
    r#"x pryv-audit[1]: u t creator:c [] {"action":"events.get"}"#,
    r#"x pryv-audit[1]: u  t createdBy:c [] {"action":"events.get"}"#,
    r#"x pryv-audit[1]: u t createdBy:c []  {"action":"events.get"}"#,
    r#"x pryv-audit[1]:u t createdBy:c [] {"action":"events.get"}"#,
    r#"x pryv-audit[1]: u t createdBy:c [] x {"action":"events.get"}"#,
    // Ordinary.
    "",
    "just a log line",
    r#"{"level":"info","type":"request"}"#,
    r#"{"channel":"a","message":"m","context":{},"extra":{}}"#,
];

/// Where a compared line comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    /// `tests/samples/`.
    Samples,
    /// The extractor's table of lines (`extractor.rs`).
    Table,
    /// [`EDGES`].
    Edges,
}

fn all_lines() -> Vec<(Source, String)> {
    let mut lines: Vec<(Source, String)> = (sample_lines().into_iter())
        .map(|line| (Source::Samples, line))
        .collect();
    lines.extend(
        CASES
            .iter()
            .map(|(line, _)| (Source::Table, (*line).to_owned())),
    );
    lines.extend(EDGES.iter().map(|line| (Source::Edges, (*line).to_owned())));
    lines
}

/// How many lines were records, by where the line comes from and which rule found it.
type Counts = BTreeMap<(Source, String), usize>;

fn counts(list: &[(Source, &str, usize)]) -> Counts {
    (list.iter())
        .map(|(source, rule, n)| ((*source, (*rule).to_owned()), *n))
        .collect()
}

/// Compares a built-in format with the rules written for it on every line: the rules'
/// [`Extraction`] must be the built-in's in everything but the format's name.
fn compare(format: &str, names: &[&str]) -> Counts {
    let (b, r) = (builtin(&[format]), rules(names));
    let mut records = Counts::new();
    for (source, line) in all_lines() {
        let want = seen(b.extract(line.as_bytes()));
        if let Extraction::Audit(a) = r.extract(line.as_bytes()) {
            assert!(names.contains(&&**a.format), "{}", a.format);
            *records.entry((source, a.format.to_string())).or_default() += 1;
        }
        let got = seen(r.extract(line.as_bytes()));
        assert_eq!(got, want, "{format}, line: {line}");
    }
    records
}

#[test]
fn immuta_written_as_a_rule_finds_what_the_builtin_finds() {
    // Records: the three Immuta samples (21 + 9 + 13), 5 lines of the table, 6 edges.
    let want = counts(&[
        (Source::Samples, "immuta-rule", 21 + 9 + 13),
        (Source::Table, "immuta-rule", 5),
        (Source::Edges, "immuta-rule", 6),
    ]);
    assert_eq!(compare("immuta", &["immuta-rule"]), want);
}

#[test]
fn sym_written_as_a_rule_finds_what_the_builtin_finds() {
    let records = compare("sym", &["sym-rule"]);
    // The sample, 1 line of the table, 3 edges and 3 with an id (the built-in's own lines).
    let want = counts(&[
        (Source::Samples, "sym-rule", 10),
        (Source::Table, "sym-rule", 1),
        (Source::Edges, "sym-rule", 3 + 3),
    ]);
    assert_eq!(records, want);
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
fn monolog_written_as_four_rules_finds_what_the_builtin_finds() {
    let records = compare("monolog", MONOLOG_RULES);
    // The two samples, 2 lines of the table. Edges: 4 flattened; 9 nested; of the
    // LineFormatter's own lines 7 contexts and 3 extras; 25 headers; of the empty messages 2
    // contexts and 3 extras; 3 of the `\r` lines (2 contexts, 1 extra); 4 contexts before an
    // extra that is one JSON object; 2 with both keys; and a flattened and a nested object in
    // the context's place, found by the JSON rules, as the built-in tries those shapes first.
    let want = counts(&[
        (Source::Samples, "monolog-json-rule", 10),
        (Source::Samples, "monolog-line-context-rule", 10),
        (Source::Table, "monolog-json-rule", 1),
        (Source::Table, "monolog-line-context-rule", 1),
        (Source::Edges, "monolog-json-rule", 4 + 1),
        (Source::Edges, "monolog-nested-rule", 9 + 1),
        (
            Source::Edges,
            "monolog-line-context-rule",
            7 + 25 + 2 + 2 + 4 + 2,
        ),
        (Source::Edges, "monolog-line-extra-rule", 3 + 3 + 1),
    ]);
    assert_eq!(records, want);
}

#[test]
fn pryv_written_as_a_rule_finds_what_the_builtin_finds() {
    let records = compare("pryv", &["pryv-rule"]);
    // The sample, 1 line of the table, 5 edges and 11 of the built-in's own lines.
    let want = counts(&[
        (Source::Samples, "pryv-rule", 10),
        (Source::Table, "pryv-rule", 1),
        (Source::Edges, "pryv-rule", 5 + 11),
    ]);
    assert_eq!(records, want);
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
            r#"{"message":"m","context":{"message_slug":"","log_event_type":"second"},"channel":"a"}"#,
            Some(("second", None)),
        ),
        (
            r#"{"message":"m","context":{"message_slug":""},"channel":"a"}"#,
            Some(("unknown", None)),
        ),
        // Not records: no string type anywhere, no string channel, not an object.
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

/// What a finding says, in short: `ordinary`, `invalid`, or the record's type, then its
/// natural id and its fields' names when it has them.
fn brief(finding: Seen) -> String {
    match finding {
        Seen::Ordinary => "ordinary".into(),
        Seen::Invalid(_) => "invalid".into(),
        Seen::Audit {
            record_type,
            natural_id,
            fields,
            ..
        } => {
            let mut out = format!("{record_type:?}");
            if let Some(id) = natural_id {
                out += &format!(" id {id:?}");
            }
            if !fields.is_empty() {
                let names: Vec<String> = fields.into_iter().map(|(name, _)| name).collect();
                out += &format!(" fields {}", names.join(","));
            }
            out
        }
    }
}

/// The corners where a rule and a built-in differ, as the README lists them, in its order:
/// when a built-in or a rule changes, this test says so, and the README's list is to be
/// updated. Every other line the tests compare is found alike.
#[test]
fn the_known_differences_are_the_ones_the_readme_lists() {
    let monolog = MONOLOG_RULES;
    for (format, names, line, by_builtin, by_rules) in [
        // A type that is an empty string.
        (
            "sym",
            &["sym-rule"][..],
            r#"{"type":"event","event":{"type":""}}"#,
            r#""""#,
            r#""unknown""#,
        ),
        (
            "pryv",
            &["pryv-rule"][..],
            r#"pryv-audit[1]: {"action":""}"#,
            r#""""#,
            r#""unknown""#,
        ),
        // A monolog type key that holds no non-empty string: the built-in takes the first type
        // key there is, the rules the first non-empty string, and without one no record.
        (
            "monolog",
            monolog,
            r#"[2021-08-09 16:02:45] app.INFO: msg {"log_event_type": 5} []"#,
            r#""unknown""#,
            "ordinary",
        ),
        (
            "monolog",
            monolog,
            r#"[2021-08-09 16:02:45] app.INFO: msg {"log_event_type":"","message_slug":"s"} []"#,
            r#""unknown""#,
            r#""s""#,
        ),
        (
            "monolog",
            monolog,
            r#"{"context":{"log_event_type":7},"channel":"a"}"#,
            r#""unknown""#,
            "ordinary",
        ),
        (
            "monolog",
            monolog,
            r#"{"message":"m","context":{"message_slug":1},"channel":"a","extra":{}}"#,
            r#""unknown""#,
            "ordinary",
        ),
        (
            "monolog",
            monolog,
            r#"{"message":"m","context":{"message_slug":5},"channel":"a","extra":{"log_event_type":"last"}}"#,
            r#""unknown""#,
            r#""last""#,
        ),
        // A string `channel` and a `message_slug` that is not a string: the built-in takes
        // the object for the flattened shape and stops.
        (
            "monolog",
            monolog,
            r#"{"channel": "auth", "message_slug": 1, "context": {"message_slug": "x"}}"#,
            "ordinary",
            r#""x""#,
        ),
        (
            "monolog",
            monolog,
            r#"[2021-08-09 16:02:45] a.INFO: m {"channel":"c","message_slug":1,"log_event_type":"t"} []"#,
            "ordinary",
            r#""t""#,
        ),
        // After a context, ` {…}` whose braces balance but that is not JSON, or an extra
        // nested deeper than the rule's regex follows.
        (
            "monolog",
            monolog,
            r#"[2021-08-09 16:02:45] a.INFO: see {"log_event_type":"x"} {not json}"#,
            "ordinary",
            r#""x""#,
        ),
        (
            "monolog",
            monolog,
            r#"[2021-08-09 16:02:45] a.INFO: m {"log_event_type":"x"} {"a":{"b":{"c":{"d":{"e":1}}}}}"#,
            r#""x""#,
            "ordinary",
        ),
        // A number at Sym's `/id`.
        (
            "sym",
            &["sym-rule"][..],
            r#"{"id": 7, "event": {"type": "approve"}, "type": "event"}"#,
            r#""approve""#,
            r#""approve" id "7""#,
        ),
        // Pryv's `streamIds` that is not JSON.
        (
            "pryv",
            &["pryv-rule"][..],
            r#"x pryv-audit[1]: u t createdBy:c [1,] {"action":"events.get"}"#,
            r#""events.get""#,
            r#""events.get" fields userid,type,createdBy"#,
        ),
    ] {
        let found = |x: Extractor| brief(seen(x.extract(line.as_bytes())));
        assert_eq!(
            found(builtin(&[format])),
            by_builtin,
            "built-in {format}: {line}"
        );
        assert_eq!(found(rules(names)), by_rules, "rules: {line}");
    }
}
