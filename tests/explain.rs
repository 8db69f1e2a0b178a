//! `auditrail check --explain`: for each physical line of the input (or of `--lines N-M`), why
//! it was or was not shipped, read through the real binary from `--explain-format json` (one
//! JSON object per entry), on the samples and on hand-made inputs written to real files.
// Test code: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod support;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use support::*;

const TS: &str = "2026-11-23T12:00:00.000000000Z";

/// `auditrail check --config C --input F --explain` with `extra` arguments.
fn explain(config: &Path, input: &Path, extra: &[&str]) -> Finished {
    let out = Command::new(bin())
        .arg("check")
        .arg("--config")
        .arg(config)
        .arg("--input")
        .arg(input)
        .arg("--explain")
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run auditrail check --explain");
    Finished {
        status: out.status,
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    }
}

/// The JSON entries of `--explain --explain-format json`, after checking the run succeeded.
fn entries(config: &Path, input: &Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["--explain-format", "json"];
    args.extend_from_slice(extra);
    let out = explain(config, input, &args);
    assert_eq!(out.code(), Some(0), "stderr:\n{}", out.stderr);
    out.lines()
        .into_iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The entry for physical line `n`.
fn at(entries: &[Value], n: u64) -> &Value {
    entries
        .iter()
        .find(|e| e["line"] == n)
        .unwrap_or_else(|| panic!("no entry for line {n} in {entries:#?}"))
}

fn empty_config(dir: &Path) -> std::path::PathBuf {
    write_config(dir, "empty.yaml", "")
}

fn write_input(dir: &Path, name: &str, lines: &[&[u8]]) -> std::path::PathBuf {
    let mut bytes = Vec::new();
    for l in lines {
        bytes.extend_from_slice(l);
        bytes.push(b'\n');
    }
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn explain_an_ordinary_line_has_no_signature_and_is_not_parsed() {
    let dir = tempdir();
    let input = write_input(dir.path(), "o.log", &[ordinary_line(1).as_bytes()]);
    let all = entries(&empty_config(dir.path()), &input, &[]);
    assert_eq!(all.len(), 1, "{all:#?}");
    let e = &all[0];
    assert_eq!(e["line"], 1);
    assert_eq!(e["offset"], 0);
    assert_eq!(e["framing"]["format"], "raw");
    assert_eq!(e["result"], "ordinary");
    assert_eq!(e["precheck"]["detectors"], json!([]));
    assert!(
        e.get("objects").is_none(),
        "an ordinary line is not parsed: {e}"
    );
    assert_eq!(e["shipped"], false);
}

#[test]
fn explain_a_nested_level_audit_is_a_candidate_that_no_detector_claims() {
    let dir = tempdir();
    let line =
        r#"{"level": "error", "message": "Error Response Sent", "query": {"level": "audit"}}"#;
    let input = write_input(dir.path(), "n.log", &[line.as_bytes()]);
    let e = &entries(&empty_config(dir.path()), &input, &[])[0];
    assert_eq!(e["result"], "ordinary", "{e}");
    assert_eq!(e["precheck"]["detectors"], json!(["immuta"]));
    let hit = line.rfind(r#""audit""#).unwrap();
    assert_eq!(e["precheck"]["at"], json!([hit]));
    // One top-level object, the whole line; the nested one is never looked at on its own.
    assert_eq!(
        e["objects"],
        json!([{"start": 0, "end": line.len(), "tried": [{"detector": "immuta", "claimed": false}]}])
    );
    assert_eq!(
        e["outside"],
        json!([]),
        "the signature is inside valid JSON"
    );
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .contains("no detector claimed"),
        "{e}"
    );
}

#[test]
fn explain_a_json_array_line_says_only_an_object_can_be_a_record() {
    // Issue 15, finding 5: the array's object is not searched for, and explain says why.
    let dir = tempdir();
    let line = r#"[{"level": "audit", "recordType": "sqlQuery"}]"#;
    let input = write_input(dir.path(), "a.log", &[line.as_bytes()]);
    let e = &entries(&empty_config(dir.path()), &input, &[])[0];
    assert_eq!(e["result"], "ordinary", "{e}");
    assert_eq!(e["precheck"]["detectors"], json!(["immuta"]));
    let reason = e["reason"].as_str().unwrap();
    assert!(reason.contains("not an object"), "{e}");
    assert_eq!(e["shipped"], false, "{e}");
}

#[test]
fn explain_an_invalid_json_candidate_names_the_rejected_object() {
    let dir = tempdir();
    let line = r#"{"level": "audit", "recordType": "truncated", "query": "SELECT * FR"#;
    let input = write_input(dir.path(), "j.log", &[line.as_bytes()]);
    let e = &entries(&empty_config(dir.path()), &input, &[])[0];
    assert_eq!(e["result"], "invalid", "{e}");
    assert_eq!(e["invalid"], "invalid_json");
    assert_eq!(e["objects"], json!([]));
    assert_eq!(e["rejected"][0]["start"], 0, "{e}");
    assert!(
        e["rejected"][0]["error"].as_str().unwrap().contains("EOF"),
        "{e}"
    );
    assert_eq!(
        e["outside"],
        json!([10]),
        "the signature lies in no valid object"
    );
    assert_eq!(e["shipped"], false);
}

#[test]
fn explain_an_invalid_utf8_candidate_says_so() {
    let dir = tempdir();
    let mut bad = br#"{"level": "audit", "recordType": "badUtf8", "m": ""#.to_vec();
    bad.extend_from_slice(&[0xff, 0xfe]);
    bad.extend_from_slice(b"\"}");
    let input = write_input(dir.path(), "u.log", &[&bad, &[b'o', b'k', 0xff]]);
    let all = entries(&empty_config(dir.path()), &input, &[]);
    let e = at(&all, 1);
    assert_eq!(e["result"], "invalid", "{e}");
    assert_eq!(e["invalid"], "invalid_utf8");
    assert_eq!(e["precheck"]["detectors"], json!(["immuta"]));
    assert!(e.get("objects").is_none(), "not parsed: {e}");
    // Invalid UTF-8 without a signature is just ordinary.
    assert_eq!(at(&all, 2)["result"], "ordinary");
}

const RETENTION: &str = r#"
retention:
  default: standard
  classes:
    standard: {days: 60, topic: audit-60d}
    forever: {days: null, topic: audit-forever}
  types:
    forever: [globalPolicyApprovalRescinded, events.all]
"#;

#[test]
fn explain_a_shipped_record_names_detector_type_class_and_topic_as_check_ships_it() {
    let dir = tempdir();
    let config = write_config(dir.path(), "r.yaml", RETENTION);
    let input = sample("immuta.jsonl");
    let all = entries(&config, &input, &[]);
    let lines = fs::read_to_string(&input).unwrap().lines().count();
    assert_eq!(all.len(), lines, "one entry per physical line");
    let first = at(&all, 1);
    assert_eq!(first["result"], "shipped", "{first}");
    assert_eq!(first["detector"], "immuta");
    assert_eq!(first["type"], "globalPolicyApprovalRescinded");
    assert_eq!(first["time"], "2021-08-09T16:02:27.345Z");
    assert_eq!(
        first["objects"][0]["tried"],
        json!([{"detector": "immuta", "claimed": true}])
    );
    assert_eq!(
        first["filters"],
        json!([{"output": "stdout", "filter": "types", "decision": "included", "pattern": "all"}])
    );
    assert_eq!(
        first["retention"],
        json!({"class": "forever", "days": null, "topic": "audit-forever", "by": "type", "pattern": "globalPolicyApprovalRescinded", "expires_at": null})
    );
    assert_eq!(first["shipped"], true);
    assert_eq!(first["outputs"], json!(["stdout"]));
    let fifth = at(&all, 5);
    assert_eq!(fifth["type"], "dataSourceCreate");
    assert_eq!(fifth["retention"]["class"], "standard");
    assert_eq!(fifth["retention"]["by"], "default");
    assert_eq!(fifth["retention"]["topic"], "audit-60d");
    assert_eq!(fifth["retention"]["expires_at"], "2021-10-08T16:02:28.109Z");

    // What explain says is shipped is what check ships: same ids, same order, same summary.
    let checked = check(&config, &input);
    let want: Vec<Value> = checked
        .records()
        .iter()
        .map(|r| r["headers"]["id"].clone())
        .collect();
    let got: Vec<Value> = all
        .iter()
        .filter(|e| e["shipped"] == true)
        .map(|e| e["id"].clone())
        .collect();
    assert_eq!(got, want);
    let explained = explain(&config, &input, &["--explain-format", "json"]);
    assert_eq!(
        explained.stderr_lines().last(),
        checked.stderr_lines().last(),
        "the same summary"
    );
}

#[test]
fn explain_a_record_dropped_by_the_filter_names_the_pattern() {
    let dir = tempdir();
    let config = write_config(
        dir.path(),
        "f.yaml",
        "types:\n  include: [events.all]\n  exclude: [events.get]\n",
    );
    let all = entries(&config, &sample("pryv-syslog.log"), &[]);
    // Line 1 is accesses.delete, line 2 events.get.
    let accesses = at(&all, 1);
    assert_eq!(accesses["type"], "accesses.delete");
    assert_eq!(accesses["result"], "filtered_out");
    assert_eq!(
        accesses["filters"],
        json!([{"output": "stdout", "filter": "types", "decision": "not_included"}])
    );
    let get = at(&all, 2);
    assert_eq!(get["detector"], "pryv");
    assert_eq!(get["type"], "events.get");
    assert_eq!(get["result"], "filtered_out", "{get}");
    assert_eq!(
        get["filters"],
        json!([{"output": "stdout", "filter": "types", "decision": "excluded", "pattern": "events.get"}])
    );
    assert_eq!(get["shipped"], false);
    assert!(get.get("id").is_none());
    let shipped: Vec<&Value> = all.iter().filter(|e| e["shipped"] == true).collect();
    assert_eq!(shipped.len(), 2);
    for e in shipped {
        assert_eq!(e["type"], "events.create");
        assert_eq!(e["filters"][0]["pattern"], "events.all");
    }
}

#[test]
fn explain_one_output_filters_out_what_another_ships() {
    let dir = tempdir();
    let config = write_config(
        dir.path(),
        "o.yaml",
        "outputs:\n  stdout: {}\n  syslog:\n    address: 'udp://127.0.0.1:9'\n    required: false\n    types: {include: [events.all], exclude: [events.get]}\n",
    );
    let all = entries(&config, &sample("pryv-syslog.log"), &[]);
    let get = at(&all, 2);
    assert_eq!(get["type"], "events.get");
    assert_eq!(get["result"], "shipped", "{get}");
    assert_eq!(
        get["filters"],
        json!([
            {"output": "syslog", "filter": "outputs.syslog.types", "decision": "excluded", "pattern": "events.get"},
            {"output": "stdout", "filter": "types", "decision": "included", "pattern": "all"},
        ])
    );
    assert_eq!(get["outputs"], json!(["stdout"]));
    let create = all.iter().find(|e| e["type"] == "events.create").unwrap();
    assert_eq!(create["outputs"], json!(["syslog", "stdout"]));
}

#[test]
fn explain_cri_p_p_f_chunks_joined_into_one_record() {
    let dir = tempdir();
    let mut input = String::new();
    let mut cri = |stream: &str, tag: &str, text: &str| {
        input.push_str(&format!("{TS} {stream} {tag} {text}\n"));
    };
    cri("stdout", "P", r#"{"level": "audit", "#);
    cri("stderr", "F", "an ordinary stderr line");
    cri("stdout", "P", r#""recordType": "joined", "#);
    cri("stdout", "F", r#""part": 3}"#);
    cri("stdout", "F", "after");
    let path = dir.path().join("0.log");
    fs::write(&path, &input).unwrap();
    let all = entries(&empty_config(dir.path()), &path, &[]);
    assert_eq!(all.len(), 5, "{all:#?}");
    for n in [1, 3] {
        let p = at(&all, n);
        assert_eq!(p["result"], "partial", "{p}");
        assert_eq!(
            p["framing"],
            json!({"format": "cri", "stream": "stdout", "chunk": "P", "time": TS})
        );
        assert_eq!(p["shipped"], false);
    }
    let stderr = at(&all, 2);
    assert_eq!(stderr["framing"]["stream"], "stderr");
    assert_eq!(stderr["result"], "ordinary");
    let joined = at(&all, 4);
    assert_eq!(joined["joined"], json!([1, 3, 4]), "{joined}");
    assert_eq!(
        joined["offset"], 0,
        "a joined line starts at its first chunk"
    );
    assert_eq!(joined["framing"]["chunk"], "F");
    assert_eq!(joined["result"], "shipped");
    assert_eq!(joined["type"], "joined");
    assert_eq!(at(&all, 5)["result"], "ordinary");
    assert!(at(&all, 5).get("joined").is_none());
}

#[test]
fn explain_a_last_partial_chunk_without_its_end_and_an_oversize_line() {
    let dir = tempdir();
    let config = write_config(
        dir.path(),
        "small.yaml",
        "source:\n  max_line_bytes: 1024\n",
    );
    let huge = format!(
        r#"{{"level": "audit", "recordType": "huge", "b": "{}"}}"#,
        "x".repeat(2000)
    );
    let input = format!(
        "{TS} stdout F {huge}\n{TS} stdout P {{\"level\": \"audit\", \n{TS} stdout P \"recordType\": \"cut\"}}\n"
    );
    let path = dir.path().join("0.log");
    fs::write(&path, &input).unwrap();
    let all = entries(&config, &path, &[]);
    let big = at(&all, 1);
    assert_eq!(big["result"], "oversize", "{big}");
    let first_len = input.find('\n').unwrap() + 1;
    assert_eq!(big["gap"], json!({"start": 0, "end": first_len}));
    // The partial line whose end never came is processed as it stands at the end of input:
    // an entry of its own after its chunks', at its last chunk's line.
    let cut: Vec<&Value> = all.iter().filter(|e| e["line"] == 3).collect();
    assert_eq!(cut.len(), 2, "{all:#?}");
    assert_eq!(cut[0]["result"], "partial");
    assert_eq!(cut[1]["joined"], json!([2, 3]));
    assert_eq!(cut[1]["framing"]["unterminated"], true);
    assert_eq!(cut[1]["type"], "cut");
    assert_eq!(cut[1]["result"], "shipped");
}

#[test]
fn explain_lines_selects_a_range() {
    let dir = tempdir();
    let config = empty_config(dir.path());
    let input = sample("immuta.jsonl");
    let all = entries(&config, &input, &["--lines", "3-5"]);
    let numbers: Vec<&Value> = all.iter().map(|e| &e["line"]).collect();
    assert_eq!(numbers, [3, 4, 5]);
    let one = entries(&config, &input, &["--lines", "10"]);
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["line"], 10);
    assert_eq!(one[0]["type"], "dataSourceGet");
    let tail = entries(&config, &input, &["--lines", "39-"]);
    let numbers: Vec<&Value> = tail.iter().map(|e| &e["line"]).collect();
    assert_eq!(numbers, [39, 40]);

    // A joined line is explained when any of its chunks is in the range.
    let mut cri = String::new();
    cri.push_str(&format!("{TS} stdout P {{\"level\": \"audit\", \n"));
    cri.push_str(&format!("{TS} stdout F \"recordType\": \"x\"}}\n"));
    let path = dir.path().join("0.log");
    fs::write(&path, cri).unwrap();
    let first = entries(&config, &path, &["--lines", "1"]);
    assert_eq!(first.len(), 2, "{first:#?}");
    assert_eq!(first[1]["joined"], json!([1, 2]));
    assert_eq!(first[1]["result"], "shipped");
}

#[test]
fn explain_a_bad_lines_value_is_a_usage_error() {
    let dir = tempdir();
    let config = empty_config(dir.path());
    let input = sample("immuta.jsonl");
    for bad in ["x", "0", "5-3", "1-2-3", "-4", ""] {
        let out = explain(&config, &input, &["--lines", bad]);
        assert_eq!(out.code(), Some(2), "{bad:?}: {}", out.stderr);
        assert_eq!(out.stdout, "", "{bad:?}");
        assert!(out.stderr.contains("--lines"), "{bad:?}: {}", out.stderr);
    }
    // --lines and --explain-format only make sense with --explain.
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&config)
        .arg("--input")
        .arg(&input)
        .args(["--lines", "3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--explain"));
}

#[test]
fn explain_text_mentions_the_same_facts() {
    let dir = tempdir();
    let config = write_config(
        dir.path(),
        "f.yaml",
        &format!("types:\n  include: [all]\n  exclude: [dataSourceCreate]\n{RETENTION}"),
    );
    let input = sample("immuta.jsonl");
    let out = explain(&config, &input, &["--lines", "1-5"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let text = &out.stdout;
    let block = |n: u64| -> String {
        let head = format!("line {n} ");
        let start = text
            .find(&head)
            .unwrap_or_else(|| panic!("no {head:?} in\n{text}"));
        let rest = &text[start + head.len()..];
        let end = rest.find("\nline ").map_or(rest.len(), |i| i + 1);
        rest[..end].to_owned()
    };
    let first = block(1);
    for fact in [
        "raw",
        "immuta",
        "globalPolicyApprovalRescinded",
        "class forever",
        "audit-forever",
        "shipped",
        "stdout",
    ] {
        assert!(first.contains(fact), "{fact:?} not in\n{first}");
    }
    let second = block(2);
    assert!(second.contains("no signature"), "{second}");
    let third = block(3);
    assert!(third.contains("no detector claimed"), "{third}");
    let fifth = block(5);
    for fact in [
        "dataSourceCreate",
        "excluded by `dataSourceCreate`",
        "not shipped",
    ] {
        assert!(fifth.contains(fact), "{fact:?} not in\n{fifth}");
    }
    // JSON and text say the same about each line.
    let json = entries(&config, &input, &["--lines", "1-5"]);
    assert_eq!(json.len(), text.matches("\nline ").count() + 1);
}
