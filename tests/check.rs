//! `auditrail check`, `auditrail validate` and exit codes, on the samples and on generated
//! nasty inputs written to real files.
// Test code: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod support;

use std::collections::{BTreeMap, HashSet};
use std::fs;

use serde_json::Value;
use support::*;

/// An empty config file is valid for `check`: all four built-in detectors, no filter, one
/// class kept forever.
fn empty_config(dir: &std::path::Path) -> std::path::PathBuf {
    write_config(dir, "empty.yaml", "")
}

#[test]
fn every_sample_gives_the_expected_audit_count() {
    let dir = tempdir();
    let config = empty_config(dir.path());
    // (file, physical lines, audit records, partial chunks, detector)
    let table = [
        ("immuta.jsonl", 40, 21, 0, "immuta"),
        ("cri-immuta.log", 23, 9, 2, "immuta"),
        ("docker-immuta.log", 20, 13, 0, "immuta"),
        ("sym.jsonl", 10, 10, 0, "sym"),
        ("laravel-json.jsonl", 10, 10, 0, "monolog"),
        ("laravel-line.log", 10, 10, 0, "monolog"),
        ("pryv-syslog.log", 10, 10, 0, "pryv"),
    ];
    for (file, lines, audit, partials, format) in table {
        let out = check(&config, sample(file));
        let summary = out.summary();
        let bytes = fs::metadata(sample(file)).unwrap().len();
        summary.assert_counts(&[
            ("lines", lines),
            ("bytes", bytes),
            ("audit", audit),
            ("shipped", audit),
            ("filtered_out", 0),
            ("invalid", 0),
            ("oversize", 0),
            ("partials", partials),
            ("malformed", 0),
            ("incomplete", 0),
        ]);
        for r in out.records() {
            assert_eq!(r["value"]["format"], format, "{file}: {r}");
            assert_eq!(r["headers"]["format"], format, "{file}");
            assert_eq!(r["topic"], "audit", "{file}: the default class's topic");
            assert_eq!(r["value"]["retention"]["expires_at"], Value::Null, "{file}");
        }
    }
}

#[test]
fn seed_formats_written_as_rules_ship_what_the_builtins_ship() {
    let dir = tempdir();
    let builtin = empty_config(dir.path());
    let rules = rules_config();
    // (file, the rules that must have recognised its records)
    let table: [(&str, &[&str]); 7] = [
        ("immuta.jsonl", &["immuta-rule"]),
        ("cri-immuta.log", &["immuta-rule"]),
        ("docker-immuta.log", &["immuta-rule"]),
        ("sym.jsonl", &["sym-rule"]),
        ("laravel-json.jsonl", &["monolog-json-rule"]),
        ("laravel-line.log", &["monolog-line-context-rule"]),
        ("pryv-syslog.log", &["pryv-rule"]),
    ];
    for (file, names) in table {
        let by_builtin = check(&builtin, sample(file));
        let by_rules = check(&rules, sample(file));
        assert_eq!(
            by_builtin.summary().0,
            by_rules.summary().0,
            "{file}: the same counts"
        );
        let want = by_builtin.records();
        let got = by_rules.records();
        assert!(!got.is_empty(), "{file}");
        assert_eq!(got.len(), want.len(), "{file}");
        for (g, w) in got.iter().zip(&want) {
            let format = g["value"]["format"].as_str().unwrap();
            assert!(names.contains(&format), "{file}: {format}");
            assert_eq!(g["headers"]["format"], format, "{file}");
            assert_eq!(
                without_format(g.clone()),
                without_format(w.clone()),
                "{file}"
            );
        }
        // Byte for byte, as the built-in ships them.
        let texts = |out: &Finished| -> Vec<String> {
            out.lines()
                .into_iter()
                .map(|l| record_text(l).to_owned())
                .collect()
        };
        assert_eq!(texts(&by_rules), texts(&by_builtin), "{file}");
    }
}

/// The PHP script that logs through the real monolog: an audit record and an ordinary line with
/// each of JsonFormatter (context nested) and LineFormatter.
const MONOLOG_SCRIPT: &str = r#"<?php
require '/usr/share/php/Monolog/autoload.php';
use Monolog\Logger;
use Monolog\Handler\StreamHandler;
use Monolog\Formatter\JsonFormatter;
use Monolog\Formatter\LineFormatter;
$json = new StreamHandler('php://stdout');
$json->setFormatter(new JsonFormatter());
$line = new StreamHandler('php://stdout');
$line->setFormatter(new LineFormatter(null, 'Y-m-d H:i:s'));
$a = new Logger('access-manager-auth', [$json]);
$b = new Logger('access-manager-auth', [$line]);
$a->info('User authentication successful.', ['message_slug' => 'auth-login-success', 'ip' => '127.0.0.1']);
$a->info('Ordinary', ['foo' => 1]);
$b->info('User {id} logged in.', ['log_event_type' => 'auth-logout', 'class' => 'App\\Http\\X']);
$b->info('Ordinary line', ['foo' => 1]);
"#;

#[test]
fn the_monolog_rules_read_what_the_real_monolog_writes() {
    let dir = tempdir();
    let script = dir.path().join("log.php");
    fs::write(&script, MONOLOG_SCRIPT).unwrap();
    let out = std::process::Command::new("php")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("php is needed (bash scripts/test.sh installs it): {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = dir.path().join("app.log");
    fs::write(&log, &out.stdout).unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");

    let by_rules = check(&rules_config(), &log);
    let summary = by_rules.summary();
    summary.assert_counts(&[("lines", 4), ("audit", 2), ("ordinary", 2), ("invalid", 0)]);
    let records = by_rules.records();
    let nested: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(records[0]["value"]["format"], "monolog-nested-rule");
    assert_eq!(records[0]["value"]["type"], "auth-login-success");
    assert_eq!(record_text(by_rules.lines()[0]), lines[0]);
    // monolog writes microseconds and `+00:00`; the envelope has milliseconds and `Z`.
    let written = nested["datetime"].as_str().unwrap();
    let time = records[0]["value"]["time"].as_str().unwrap();
    assert_eq!(time[..23], written[..23], "{time} from {written}");
    assert_eq!(records[1]["value"]["format"], "monolog-line-context-rule");
    assert_eq!(records[1]["value"]["type"], "auth-logout");
    let stamp = &lines[2][1..20]; // `[Y-m-d H:i:s]`
    let time = records[1]["value"]["time"].as_str().unwrap();
    assert_eq!(time[..19], stamp.replace(' ', "T"), "{time} from {stamp}");

    // The LineFormatter record is the built-in's, but for the format's name.
    let by_builtin = check(&empty_config(dir.path()), &log);
    let builtin_line = by_builtin
        .records()
        .into_iter()
        .find(|r| r["value"]["type"] == "auth-logout")
        .unwrap();
    assert_eq!(
        without_format(builtin_line),
        without_format(records[1].clone())
    );
}

#[test]
fn the_cri_sample_joins_the_40_kib_record_from_its_chunks() {
    let dir = tempdir();
    let out = check(&empty_config(dir.path()), sample("cri-immuta.log"));
    out.summary();
    let input = fs::read_to_string(sample("cri-immuta.log")).unwrap();
    // The P, P, F chunks of the last record, after `<ts> stdout P ` etc.
    let chunks: Vec<&str> = input
        .lines()
        .skip(20)
        .map(|l| l.splitn(4, ' ').nth(3).unwrap())
        .collect();
    assert_eq!(chunks.len(), 3);
    let joined = chunks.concat();
    assert!(joined.len() > 40_000, "{}", joined.len());
    let lines = out.lines();
    let last = lines.last().unwrap();
    assert_eq!(record_text(last), joined);
    let v = parse_line(last);
    assert_eq!(v["value"]["type"], "sqlQuery");
    assert_eq!(v["value"]["source"]["stream"], "stdout");
    // The joined line starts where its first chunk does.
    let first_chunk_offset: usize = input.lines().take(20).map(|l| l.len() + 1).sum();
    assert_eq!(v["value"]["source"]["offset"], first_chunk_offset as u64);
    // Each record keeps the stream it was written to (the sample has audit records on both).
    let records = out.records();
    let streams: Vec<&str> = records
        .iter()
        .map(|r| r["value"]["source"]["stream"].as_str().unwrap())
        .collect();
    let mut want_streams: Vec<&str> = input
        .lines()
        .take(20)
        .filter(|l| {
            l.splitn(4, ' ')
                .nth(3)
                .unwrap()
                .starts_with(r#"{"level": "audit""#)
        })
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    want_streams.push("stdout");
    assert_eq!(streams, want_streams);
    assert!(
        want_streams.contains(&"stderr"),
        "the sample has stderr records"
    );
}

/// Checks every shipped record of a raw input against the input line at its offset:
/// `prefix + record + suffix` is that line, byte for byte.
fn assert_records_are_the_input_lines(input: &[u8], out: &Finished, whole_line: bool) {
    let mut previous = None;
    for line in out.lines() {
        let v = parse_line(line);
        let offset = v["value"]["source"]["offset"].as_u64().unwrap() as usize;
        assert!(previous < Some(offset), "one record per line, in order");
        previous = Some(offset);
        let end = offset + input[offset..].iter().position(|b| *b == b'\n').unwrap();
        let original = std::str::from_utf8(&input[offset..end]).unwrap();
        let prefix = v["value"]["prefix"].as_str().unwrap_or("");
        let suffix = v["value"]["suffix"].as_str().unwrap_or("");
        let rebuilt = format!("{prefix}{}{suffix}", record_text(line));
        assert_eq!(rebuilt, original);
        if whole_line {
            assert_eq!(record_text(line), original);
            assert!(v["value"].get("prefix").is_none() && v["value"].get("suffix").is_none());
        }
    }
}

#[test]
fn records_are_shipped_byte_for_byte() {
    let dir = tempdir();
    let config = empty_config(dir.path());
    for (file, whole_line, count) in [
        ("immuta.jsonl", true, 21),
        ("sym.jsonl", true, 10),
        ("laravel-json.jsonl", true, 10),
        ("laravel-line.log", false, 10),
        ("pryv-syslog.log", false, 10),
    ] {
        let out = check(&config, sample(file));
        assert_eq!(out.summary().get("shipped"), count, "{file}");
        assert_records_are_the_input_lines(&fs::read(sample(file)).unwrap(), &out, whole_line);
    }
    // The trailing ` []` of a LineFormatter line is not part of the record.
    let out = check(&config, sample("laravel-line.log"));
    for r in out.records() {
        assert_eq!(r["value"]["suffix"], " []");
        assert!(r["value"]["record"]["log_event_type"].is_string());
    }

    // Number text, big integers, escapes and key order that a re-serialisation would change.
    let hand_made = [
        r#"{"recordType":"handMade","n":1.10,"e":1e2,"E":-2.50E-3,"big":123456789012345678901234567890,"s":"caf\u00e9 \"q\" \/ é","level":"audit","z":{"b":1,"a":[1.0,-0.0]}}"#,
        r#"{ "zeta" : 0.000 ,  "level" :"audit" , "alpha":{"level":"audit"},"recordType" : "spaced"   }"#,
    ];
    let mut input = String::new();
    input.push_str(&ordinary_line(1));
    input.push('\n');
    for l in hand_made {
        input.push_str(l);
        input.push('\n');
    }
    let path = dir.path().join("hand.jsonl");
    fs::write(&path, &input).unwrap();
    let out = check(&config, &path);
    assert_eq!(out.summary().get("shipped"), 2);
    let texts: Vec<&str> = out.lines().into_iter().map(record_text).collect();
    assert_eq!(texts, hand_made);
    let types: Vec<Value> = out
        .records()
        .iter()
        .map(|r| r["value"]["type"].clone())
        .collect();
    assert_eq!(types, ["handMade", "spaced"]);
    assert_records_are_the_input_lines(input.as_bytes(), &out, true);
}

const TS: &str = "2026-11-23T12:00:00.000000000Z";

#[test]
fn nasty_raw_input_is_counted_and_what_follows_is_still_read() {
    let dir = tempdir();
    let config = empty_config(dir.path());
    let mut input: Vec<u8> = Vec::new();
    let mut line = |bytes: &[u8]| {
        input.extend_from_slice(bytes);
        input.push(b'\n');
    };
    line(audit_line("first", 1).as_bytes());
    // A 10 MiB line that is an audit record: over the 1 MiB default limit.
    let mut huge = br#"{"level": "audit", "recordType": "huge", "blob": ""#.to_vec();
    huge.resize(10 * 1024 * 1024, b'x');
    huge.extend_from_slice(b"\"}");
    line(&huge);
    line(audit_line("afterHuge", 2).as_bytes());
    // Invalid UTF-8 inside an audit record.
    let mut bad = br#"{"level": "audit", "recordType": "badUtf8", "m": ""#.to_vec();
    bad.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    bad.extend_from_slice(b"\"}");
    line(&bad);
    // Invalid UTF-8 in an ordinary line is just ordinary.
    line(&[b'o', b'k', 0xff, b' ', b'x']);
    // A truncated audit record.
    line(br#"{"level": "audit", "recordType": "truncated", "query": "SELECT * FR"#);
    // Spacing variant: still an audit record.
    let spaced = r#"{"level" : "audit", "recordType" : "spacing"}"#;
    line(spaced.as_bytes());
    // Tab and newline escapes around the colon (JSON whitespace).
    let tabbed = "{\"level\"\t:\t\"audit\",\"recordType\":\"tabbed\"}";
    line(tabbed.as_bytes());
    // Nested `level: audit` in an error line: ordinary.
    line(br#"{"level": "error", "message": "Error Response Sent", "query": {"level": "audit"}}"#);
    // The signature inside a string: ordinary.
    line(br#"{"level": "info", "message": "{\"level\": \"audit\"}"}"#);
    // Empty lines and CRLF.
    line(b"");
    let crlf = audit_line("crlf", 3);
    line(format!("{crlf}\r").as_bytes());
    // The last line has no `\n`: the input ended, so it ships as it stands, marked
    // unterminated (counted `incomplete`, not as a physical line).
    input.extend_from_slice(audit_line("noNewline", 4).as_bytes());

    let path = dir.path().join("nasty.log");
    fs::write(&path, &input).unwrap();
    let out = check(&config, &path);
    out.summary().assert_counts(&[
        ("lines", 12),
        ("bytes", input.len() as u64),
        ("ordinary", 4),
        ("audit", 6),
        ("shipped", 6),
        ("invalid", 2),
        ("oversize", 1),
        ("partials", 0),
        ("malformed", 0),
        ("incomplete", 1),
        ("gaps", 1),
        ("gap_bytes", huge.len() as u64 + 1),
    ]);
    // The huge line's byte range ships as a gap record, in its place.
    let all = out.records();
    let gap = &all[1]["value"];
    assert_eq!(gap["type"], "auditrail.gap");
    let first_len = audit_line("first", 1).len() as u64 + 1;
    assert_eq!(
        (
            &gap["record"]["reason"],
            &gap["record"]["start"],
            &gap["record"]["end"]
        ),
        (
            &Value::from("oversize"),
            &Value::from(first_len),
            &Value::from(first_len + huge.len() as u64 + 1)
        )
    );
    let lines: Vec<&str> = out
        .lines()
        .into_iter()
        .filter(|l| parse_line(l)["value"]["type"] != "auditrail.gap")
        .collect();
    let records: Vec<Value> = lines.iter().map(|l| parse_line(l)).collect();
    let types: Vec<&str> = records
        .iter()
        .map(|r| r["value"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "first",
            "afterHuge",
            "spacing",
            "tabbed",
            "crlf",
            "noNewline"
        ]
    );
    let texts: Vec<&str> = lines.iter().map(|l| record_text(l)).collect();
    assert_eq!(texts[2], spaced);
    assert_eq!(texts[3], tabbed);
    assert_eq!(texts[4], crlf, "the \\r is not part of the record");
    assert_eq!(records[4]["value"]["suffix"], "\r", "it is the suffix's");
    assert_eq!(texts[5], audit_line("noNewline", 4));
    assert_eq!(records[5]["value"]["source"]["unterminated"], true);
    assert!(records[4]["value"]["source"].get("unterminated").is_none());
}

#[test]
fn cri_partial_chunks_join_per_stream_and_an_oversize_join_is_skipped() {
    let dir = tempdir();
    let config = write_config(dir.path(), "cri.yaml", "source:\n  max_line_bytes: 32768\n");
    let mut input = String::new();
    let mut cri = |stream: &str, tag: &str, text: &str| {
        input.push_str(&format!("{TS} {stream} {tag} {text}\n"));
    };
    // Two records split in chunks, their chunks interleaved across stdout and stderr.
    cri("stdout", "P", r#"{"level": "audit", "recordType": "out", "#);
    cri("stderr", "F", "not json, an ordinary stderr line");
    cri("stderr", "P", r#"{"level": "audit", "#);
    cri("stdout", "P", r#""part": 2, "#);
    cri("stderr", "P", r#""recordType": "err"}"#);
    cri("stdout", "F", r#""part": 3}"#);
    // The stderr record's F chunk carries nothing more.
    cri("stderr", "F", "");
    // A record split at 16 KiB the way containerd does, 40 KiB in all: over the 32 KiB limit.
    let big = format!(
        r#"{{"level": "audit", "recordType": "tooBig", "q": "{}"}}"#,
        "y".repeat(40 * 1024)
    );
    let (a, rest) = big.split_at(16 * 1024);
    let (b, c) = rest.split_at(16 * 1024);
    cri("stdout", "P", a);
    cri("stdout", "P", b);
    cri("stdout", "F", c);
    // What follows is still read.
    cri("stdout", "F:x", &audit_line("after", 1));
    // A physical line that is not CRI: malformed, passed on as raw text.
    input.push_str(&audit_line("malformed", 2));
    input.push('\n');

    let path = dir.path().join("0.log");
    fs::write(&path, &input).unwrap();
    let out = check(&config, &path);
    out.summary().assert_counts(&[
        ("lines", 12),
        ("ordinary", 1),
        ("audit", 4),
        ("shipped", 4),
        ("invalid", 0),
        ("oversize", 1),
        ("partials", 6),
        ("malformed", 1),
        ("incomplete", 0),
        ("gaps", 1),
    ]);
    // The oversize join's byte range (from its first chunk to the end of its last) ships as a
    // gap record, in its place.
    let (gaps, lines): (Vec<&str>, Vec<&str>) = out
        .lines()
        .into_iter()
        .partition(|l| parse_line(l)["value"]["type"] == "auditrail.gap");
    let gap = parse_line(gaps[0])["value"]["record"].clone();
    let big_start = input
        .find(&format!(
            "{TS} stdout P {{\"level\": \"audit\", \"recordType\": \"tooBig\""
        ))
        .unwrap();
    let after_start = input.find(&format!("{TS} stdout F:x")).unwrap();
    assert_eq!(
        (&gap["reason"], &gap["start"], &gap["end"]),
        (
            &Value::from("oversize"),
            &Value::from(big_start),
            &Value::from(after_start)
        )
    );
    let texts: Vec<&str> = lines.iter().map(|l| record_text(l)).collect();
    assert_eq!(
        texts,
        [
            r#"{"level": "audit", "recordType": "out", "part": 2, "part": 3}"#,
            r#"{"level": "audit", "recordType": "err"}"#,
            audit_line("after", 1).as_str(),
            audit_line("malformed", 2).as_str(),
        ]
    );
    let records: Vec<Value> = lines.iter().map(|l| parse_line(l)).collect();
    let streams: Vec<Value> = records
        .iter()
        .map(|r| r["value"]["source"]["stream"].clone())
        .collect();
    assert_eq!(
        streams,
        [
            Value::from("stdout"),
            Value::from("stderr"),
            Value::from("stdout"),
            Value::Null
        ]
    );
    // A joined record starts at its first chunk.
    assert_eq!(records[0]["value"]["source"]["offset"], 0);
    let third_line: usize = input.lines().take(2).map(|l| l.len() + 1).sum();
    assert_eq!(records[1]["value"]["source"]["offset"], third_line as u64);
    assert_eq!(records[0]["value"]["source"]["time"], TS);
}

#[test]
fn a_cri_file_ending_inside_a_partial_line_reports_it_incomplete() {
    let dir = tempdir();
    let config = empty_config(dir.path());
    let path = dir.path().join("0.log");
    let input = format!(
        "{TS} stdout F {}\n{TS} stdout P {{\"level\": \"audit\", \n",
        audit_line("whole", 1)
    );
    fs::write(&path, input).unwrap();
    let out = check(&config, &path);
    out.summary().assert_counts(&[
        ("lines", 2),
        ("audit", 1),
        ("partials", 1),
        ("incomplete", 1),
    ]);
}

#[test]
fn docker_partial_chunks_are_joined() {
    let dir = tempdir();
    let config = empty_config(dir.path());
    let docker = |log: &str, stream: &str| {
        format!(
            "{}\n",
            serde_json::json!({"log": log, "stream": stream, "time": "2026-11-23T12:00:00.000Z"})
        )
    };
    let record = r#"{"level": "audit", "recordType": "dockerJoined", "s": "é\t", "n": 1.10}"#;
    let (a, b) = record.split_at(30);
    let mut input = String::new();
    input.push_str(&docker(a, "stdout"));
    input.push_str(&docker("stderr interleaved\n", "stderr"));
    input.push_str(&docker(&format!("{b}\n"), "stdout"));
    input.push_str(&docker(&format!("{}\n", audit_line("whole", 1)), "stderr"));
    let path = dir.path().join("docker.log");
    fs::write(&path, &input).unwrap();
    let out = check(&config, &path);
    out.summary().assert_counts(&[
        ("lines", 4),
        ("ordinary", 1),
        ("audit", 2),
        ("partials", 1),
        ("malformed", 0),
        ("incomplete", 0),
    ]);
    let lines = out.lines();
    assert_eq!(record_text(lines[0]), record);
    assert_eq!(record_text(lines[1]), audit_line("whole", 1));
    let records = out.records();
    assert_eq!(records[0]["value"]["source"]["stream"], "stdout");
    assert_eq!(records[0]["value"]["source"]["offset"], 0);
    assert_eq!(records[1]["value"]["source"]["stream"], "stderr");
    assert_eq!(
        records[0]["value"]["source"]["time"],
        "2026-11-23T12:00:00.000Z"
    );
}

/// The output of `check` without what legitimately differs between runs and inputs.
fn comparable(line: &str) -> (Value, String) {
    let mut v = parse_line(line);
    v["value"]["observed_time"] = Value::Null;
    v["value"]["source"]["file"] = Value::Null;
    (v, record_text(line).to_owned())
}

#[test]
fn stdin_gives_the_same_records_and_ids_as_the_file() {
    let dir = tempdir();
    let config = empty_config(dir.path());
    let path = sample("immuta.jsonl");
    let from_file = check(&config, &path);
    let from_stdin = check_stdin(&config, &fs::read(&path).unwrap());
    assert_eq!(from_file.summary().0, from_stdin.summary().0);
    let file_lines = from_file.lines();
    let stdin_lines = from_stdin.lines();
    assert_eq!(file_lines.len(), 21);
    assert_eq!(stdin_lines.len(), 21);
    for (f, s) in file_lines.iter().zip(&stdin_lines) {
        assert_eq!(comparable(f), comparable(s));
        assert_eq!(parse_line(s)["value"]["source"]["file"], "-");
        assert_eq!(
            parse_line(f)["value"]["source"]["file"],
            path.to_str().unwrap()
        );
    }

    // Ids are stable from run to run, and distinct within a run.
    let again = check(&config, &path);
    let ids = |out: &Finished| -> Vec<String> { out.lines().into_iter().map(id_of).collect() };
    let first = ids(&from_file);
    assert_eq!(first, ids(&again));
    assert_eq!(first.iter().collect::<HashSet<_>>().len(), 21);
}

#[test]
fn identical_lines_get_distinct_ids() {
    let dir = tempdir();
    let config = empty_config(dir.path());
    let line = audit_line("same", 1);
    let path = dir.path().join("same.jsonl");
    fs::write(&path, format!("{line}\n{line}\n{line}\n")).unwrap();
    let out = check(&config, &path);
    assert_eq!(out.summary().get("shipped"), 3);
    let ids: HashSet<String> = out.lines().into_iter().map(id_of).collect();
    assert_eq!(
        ids.len(),
        3,
        "a repeated line is a new record, with its own id"
    );
}

#[test]
fn the_type_filter_ships_included_types_minus_excluded_ones() {
    let dir = tempdir();
    let config = write_config(
        dir.path(),
        "filter.yaml",
        "types:\n  include: [events.all]\n  exclude: [events.get]\n",
    );
    let out = check(&config, sample("pryv-syslog.log"));
    out.summary().assert_counts(&[
        ("lines", 10),
        ("audit", 10),
        ("shipped", 2),
        ("filtered_out", 8),
    ]);
    let types: Vec<Value> = out
        .records()
        .iter()
        .map(|r| r["value"]["type"].clone())
        .collect();
    assert_eq!(types, ["events.create", "events.create"]);

    // Exclude only: everything else is shipped.
    let config = write_config(
        dir.path(),
        "exclude.yaml",
        "types:\n  include: []\n  exclude: [accesses.all, auth.login]\n",
    );
    let out = check(&config, sample("pryv-syslog.log"));
    out.summary()
        .assert_counts(&[("audit", 10), ("shipped", 6), ("filtered_out", 4)]);
}

#[test]
fn retention_classes_route_to_their_topics_with_expiry_from_the_event_time() {
    let dir = tempdir();
    let config = write_config(
        dir.path(),
        "retention.yaml",
        r#"
retention:
  default: standard
  classes:
    standard: {days: 60, topic: audit-60d}
    short: {days: 7, topic: audit-7d}
    forever: {days: null, topic: audit-forever}
  types:
    short: [accessUser, authenticate]
    forever: [blobFetch, blobDelete, createQuery]
"#,
    );
    let out = check(&config, sample("immuta.jsonl"));
    assert_eq!(out.summary().get("shipped"), 21);
    let records = out.records();
    let mut per_topic: BTreeMap<String, usize> = BTreeMap::new();
    for r in &records {
        let topic = r["topic"].as_str().unwrap().to_owned();
        let class = r["value"]["retention"]["class"].as_str().unwrap();
        assert_eq!(r["headers"]["retention_class"], class);
        let want_topic = match class {
            "standard" => "audit-60d",
            "short" => "audit-7d",
            "forever" => "audit-forever",
            other => panic!("unexpected class {other}"),
        };
        assert_eq!(topic, want_topic);
        if class == "forever" {
            assert_eq!(r["value"]["retention"]["expires_at"], Value::Null);
            assert_eq!(r["value"]["retention"]["days"], Value::Null);
            assert_eq!(r["headers"]["expires_at"], "");
        }
        *per_topic.entry(topic).or_default() += 1;
    }
    let want: BTreeMap<String, usize> = [("audit-60d", 14), ("audit-7d", 3), ("audit-forever", 4)]
        .into_iter()
        .map(|(t, n)| (t.to_owned(), n))
        .collect();
    assert_eq!(per_topic, want);

    let by_immuta_id = |id: &str| {
        records
            .iter()
            .find(|r| r["value"]["record"]["id"] == id)
            .unwrap_or_else(|| panic!("no record {id}"))
    };
    // dateTime 1628524947345 (epoch ms) = 2021-08-09T16:02:27.345Z, + 60 days.
    let r = by_immuta_id("1818e811-892f-902b-d23f-0824128b2f33");
    assert_eq!(r["value"]["time"], "2021-08-09T16:02:27.345Z");
    assert_eq!(r["value"]["retention"]["days"], 60);
    assert_eq!(
        r["value"]["retention"]["expires_at"],
        "2021-10-08T16:02:27.345Z"
    );
    assert_eq!(r["headers"]["expires_at"], "2021-10-08T16:02:27.345Z");
    // dateTime as ISO text, class short: + 7 days.
    let r = by_immuta_id("66d22876-72fd-f202-2a96-fb1a14a0f9e7");
    assert_eq!(r["value"]["type"], "accessUser");
    assert_eq!(
        r["value"]["retention"]["expires_at"],
        "2021-08-16T16:02:34.255Z"
    );
    assert_eq!(r["headers"]["expires_at"], "2021-08-16T16:02:34.255Z");
}

/// Asserts a usage error: exit 2 and exactly one stderr line, containing each of `names`.
fn assert_usage_error(out: &Finished, names: &[&str]) {
    assert_eq!(out.code(), Some(2), "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "", "nothing is shipped");
    let lines = out.stderr_lines();
    assert_eq!(lines.len(), 1, "one error line: {lines:?}");
    for name in names {
        assert!(lines[0].contains(name), "{name:?} not in {:?}", lines[0]);
    }
}

#[test]
fn bad_configs_and_inputs_exit_2_with_one_line_naming_the_problem() {
    let dir = tempdir();
    let input = sample("immuta.jsonl");

    let bad_yaml = write_config(dir.path(), "bad.yaml", "source:\n  paths: [unclosed\n");
    assert_usage_error(&check(&bad_yaml, &input), &["bad.yaml", "line"]);

    let unknown = write_config(dir.path(), "unknown.yaml", "source:\n  pathz: [a]\n");
    assert_usage_error(
        &check(&unknown, &input),
        &["unknown.yaml", "source", "pathz"],
    );

    let empty_types = write_config(
        dir.path(),
        "types.yaml",
        "types:\n  include: []\n  exclude: []\n",
    );
    assert_usage_error(&check(&empty_types, &input), &["types.yaml", "types:"]);

    let missing_config = dir.path().join("nope.yaml");
    assert_usage_error(&check(&missing_config, &input), &["nope.yaml"]);

    let ok = empty_config(dir.path());
    let missing_input = dir.path().join("missing.log");
    assert_usage_error(&check(&ok, &missing_input), &["missing.log"]);
}

#[test]
fn validate_lists_every_problem_with_its_path() {
    let dir = tempdir();
    let config = write_config(
        dir.path(),
        "many.yaml",
        r#"
source:
  max_line_bytes: 10
  poll_interval: 0s
types: {include: [], exclude: []}
retention:
  default: missing
  classes:
    short: {days: 0, topic: "bad topic!"}
"#,
    );
    let out = validate(&config);
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    let paths: HashSet<&str> = out
        .stderr_lines()
        .iter()
        .filter_map(|l| l.trim().split_once(": ").map(|(p, _)| p))
        .collect();
    for want in [
        "source.paths",
        "source.max_line_bytes",
        "source.poll_interval",
        "types",
        "retention.default",
        "retention.classes.short.days",
        "retention.classes.short.topic",
    ] {
        assert!(
            paths.contains(want),
            "{want} not listed in:\n{}",
            out.stderr
        );
    }

    let good = write_config(
        dir.path(),
        "good.yaml",
        "source:\n  paths: [/var/log/pods/*/app/*.log]\n",
    );
    let out = validate(&good);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
}

/// Issue 15, finding 4: Sym guarantees its `id` is the same across duplicate LogEntry
/// records. Two copies of one LogEntry at different offsets (and a third, re-sent with a
/// changed state) share the envelope's `record_id` and its header, and with
/// `outputs.kafka.key: record_id` the same Kafka key, while their `id`s (one per line read)
/// differ. A configured `audit.ids` pointer gives Immuta records the same, and a record without
/// a producer id gets its `id` as `record_id`.
#[test]
fn finding_4_sym_duplicates_share_record_id() {
    let dir = tempdir();
    let sym = fs::read_to_string(sample("sym.jsonl")).unwrap();
    let lines: Vec<&str> = sym.lines().collect();
    let (first, other) = (lines[0], lines[1]);
    let resent = first.replace(r#""status": "completed""#, r#""status": "retried""#);
    assert_ne!(resent, first);
    let no_id = other.replace(r#""id": "f92e2339-9cce-a098-535b-6a437178ba0a", "#, "");
    assert_ne!(no_id, other);
    let immuta = |n: u32| {
        format!(r#"{{"level": "audit", "recordType": "sqlQuery", "requestId": "req-7", "n": {n}}}"#)
    };
    let input = dir.path().join("in.log");
    fs::write(
        &input,
        [first, other, first, &resent, &no_id, &immuta(1), &immuta(2)].join("\n") + "\n",
    )
    .unwrap();
    let config = write_config(
        dir.path(),
        "c.yaml",
        "audit: {ids: {immuta: /requestId}}\noutputs: {kafka: {brokers: \"127.0.0.1:9\", key: record_id}}\n",
    );
    let out = check(&config, &input);
    out.summary().assert_counts(&[("shipped", 7)]);
    let records = out.records();
    let field = |i: usize, f: &str| records[i]["value"][f].as_str().unwrap().to_owned();
    let sym_id = "8fcd7f40-73c1-cd2c-81f9-8b521905d591";
    for i in [0, 2, 3] {
        assert_eq!(field(i, "record_id"), sym_id, "{}", records[i]);
        assert_eq!(records[i]["headers"]["record_id"], sym_id);
        assert_eq!(records[i]["key"], sym_id);
    }
    let ids: HashSet<String> = (0..7).map(|i| field(i, "id")).collect();
    assert_eq!(ids.len(), 7, "every line read has its own id");
    assert_eq!(
        field(1, "record_id"),
        "f92e2339-9cce-a098-535b-6a437178ba0a"
    );
    assert_eq!(
        field(4, "record_id"),
        field(4, "id"),
        "no producer id: the line's id"
    );
    assert_eq!(records[4]["key"], field(4, "id").as_str());
    assert_eq!(field(5, "record_id"), "req-7");
    assert_eq!(field(6, "record_id"), "req-7");
    assert_eq!(records[6]["key"], "req-7");
}
