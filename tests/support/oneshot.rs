//! `auditrail check` and `auditrail validate`, run once: their exit, records and summary.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};

use serde_json::Value;

use super::*;

/// What a finished `auditrail check` or `validate` printed.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The stdout lines (one shipped record each for `check`).
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// Every stdout line parsed as JSON.
    pub fn records(&self) -> Vec<Value> {
        self.lines().into_iter().map(parse_line).collect()
    }

    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr.lines().collect()
    }

    /// The summary `check` prints as its last stderr line; its identities are asserted here,
    /// so every test that reads a summary also checks them.
    pub fn summary(&self) -> Summary {
        assert_eq!(
            self.code(),
            Some(0),
            "check failed: stderr:\n{}",
            self.stderr
        );
        let last = self
            .stderr
            .lines()
            .last()
            .unwrap_or_else(|| panic!("no summary on stderr"));
        let summary = Summary(serde_json::from_str(last).expect("the summary is JSON"));
        summary.assert_identities();
        assert_eq!(
            (summary.get("shipped") + summary.get("gaps")) as usize,
            self.lines().len(),
            "one stdout line per shipped record and per gap record"
        );
        summary
    }
}

fn finish(child: Child) -> Finished {
    let out = child.wait_with_output().expect("wait for auditrail");
    Finished {
        status: out.status,
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    }
}

/// `auditrail check --config C --input F`.
pub fn check(config: &Path, input: impl AsRef<std::ffi::OsStr>) -> Finished {
    let child = Command::new(bin())
        .arg("check")
        .arg("--config")
        .arg(config)
        .arg("--input")
        .arg(input)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn auditrail check");
    finish(child)
}

/// `auditrail check --config C --input -` with `data` on stdin.
pub fn check_stdin(config: &Path, data: &[u8]) -> Finished {
    let mut child = Command::new(bin())
        .arg("check")
        .arg("--config")
        .arg(config)
        .arg("--input")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn auditrail check");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let data = data.to_vec();
    // Written from a thread so that a full stdout pipe cannot deadlock the test.
    let writer = std::thread::spawn(move || {
        stdin.write_all(&data).expect("write stdin");
    });
    let finished = finish(child);
    writer.join().expect("stdin writer");
    finished
}

/// `auditrail validate --config C`.
pub fn validate(config: &Path) -> Finished {
    let child = Command::new(bin())
        .arg("validate")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn auditrail validate");
    finish(child)
}

/// The counts `check` prints on stderr.
#[derive(Debug, Clone)]
pub struct Summary(pub Value);

impl Summary {
    pub fn get(&self, key: &str) -> u64 {
        self.0[key]
            .as_u64()
            .unwrap_or_else(|| panic!("summary has no integer {key:?}: {}", self.0))
    }

    /// `lines = ordinary + audit + invalid + oversize + partials`, `audit = shipped + filtered_out`.
    pub fn assert_identities(&self) {
        let g = |k| self.get(k);
        assert_eq!(
            g("lines") + g("incomplete"),
            g("ordinary") + g("audit") + g("invalid") + g("oversize") + g("partials"),
            "lines identity: {}",
            self.0
        );
        assert_eq!(
            g("audit"),
            g("shipped") + g("filtered_out"),
            "audit identity: {}",
            self.0
        );
    }

    /// Asserts the named counts, listing every difference at once.
    pub fn assert_counts(&self, want: &[(&str, u64)]) {
        let got: Vec<(&str, u64)> = want.iter().map(|(k, _)| (*k, self.get(k))).collect();
        assert_eq!(got, want, "summary: {}", self.0);
    }
}

// === output lines ===

pub fn parse_line(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("output line is not JSON ({e}): {line}"))
}

/// The record's text exactly as shipped: what follows the envelope's `"record":`, less the
/// closing braces of the envelope and of the line. (Everything before it in the line is either
/// a key or an escaped JSON string, so the first `"record":` is the envelope's.)
pub fn record_text(line: &str) -> &str {
    let at = line
        .find("\"record\":")
        .unwrap_or_else(|| panic!("no record in {line}"));
    line[at + "\"record\":".len()..]
        .strip_suffix("}}")
        .unwrap_or_else(|| panic!("line does not end with }}}}: {line}"))
}

/// `value.id` of an output line.
pub fn id_of(line: &str) -> String {
    let v = parse_line(line);
    let id = v["value"]["id"].as_str().expect("value.id").to_owned();
    assert_eq!(v["headers"]["id"], id.as_str(), "header id = value id");
    id
}
