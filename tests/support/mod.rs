//! Shared helpers for the integration tests: the real `auditrail` binary, real files in
//! temporary directories, and a real `auditrail run` process whose output is read line by line.
//!
//! Waits have a generous deadline and return as soon as their condition holds: the deadline
//! only turns a hang into a readable failure, it is never a performance assertion.
#![allow(dead_code)]

pub mod broker;
mod daemon;
pub mod fake_api;
mod http;
pub mod kubelet;
mod oneshot;
pub mod secure;
pub mod syslog;

// Each test binary uses some of these.
#[allow(unused_imports)]
pub use daemon::*;
#[allow(unused_imports)]
pub use http::*;
#[allow(unused_imports)]
pub use oneshot::*;

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a wait may take before the test fails: long enough for a loaded CI machine.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_auditrail")
}

/// A file of `tests/samples`.
pub fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/samples")
        .join(name)
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temporary directory")
}

/// Writes `yaml` to `dir/name` and returns its path.
pub fn write_config(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, yaml).expect("write config");
    path
}

/// A path or other string as a YAML scalar (JSON strings are YAML).
pub fn yaml_str(s: impl AsRef<str>) -> String {
    serde_json::to_string(s.as_ref()).expect("a string serialises")
}

/// Appends `text` to `path`, creating it if needed, like a container runtime writing a log.
pub fn append(path: &Path, text: impl AsRef<[u8]>) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log for appending");
    f.write_all(text.as_ref()).expect("append to log");
    f.flush().expect("flush log");
}

// === generated log lines ===

/// An Immuta audit record, distinct for each (tag, n).
pub fn audit_line(tag: &str, n: usize) -> String {
    format!(
        r#"{{"level": "audit", "timestamp": "2021-08-09T16:02:27.345Z", "message": "Audit - {tag}", "id": "{tag}-{n:06}", "dateTime": 1628524947345, "recordType": "{tag}", "seq": {n}, "success": true}}"#
    )
}

/// An ordinary (non-audit) log line.
pub fn ordinary_line(n: usize) -> String {
    format!(
        r#"{{"level": "info", "timestamp": "2021-08-09T16:02:27.345Z", "message": "Request received", "seq": {n}, "path": "/dataSource"}}"#
    )
}

/// Waits until `cond` holds; fails the test after [`DEADLINE`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A tool installed by scripts/deploy-tools.sh.
pub fn tool(name: &str) -> PathBuf {
    let mut dirs = Vec::new();
    if let Some(t) = std::env::var_os("AUDITRAIL_TOOLS") {
        dirs.push(PathBuf::from(t).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".local/auditrail-tools/bin"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed (looked in $AUDITRAIL_TOOLS/bin, \
                 ~/.local/auditrail-tools/bin and PATH). Install the deploy tools with:\n\n    \
                 bash scripts/deploy-tools.sh\n"
            )
        })
}

/// `examples/rules-as-formats.yaml`: every seed format written as custom rules, no built-in
/// format enabled.
pub fn rules_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rules-as-formats.yaml")
}

/// A shipped record less what differs between a built-in format and the rule written for it
/// (the format's name), and what differs between two runs (the read time).
pub fn without_format(mut record: serde_json::Value) -> serde_json::Value {
    record["headers"]["format"] = serde_json::Value::Null;
    record["value"]["format"] = serde_json::Value::Null;
    record["value"]["observed_time"] = serde_json::Value::Null;
    record
}

/// Every thread of a live process so far, by thread id: (name, context switches voluntary and
/// not, ns on a CPU from `schedstat`).
pub type Threads = BTreeMap<u32, (String, u64, u64)>;

/// The threads of `pid` now ([`Threads`]); a thread that ends while it is read is left out.
pub fn threads(pid: u32) -> Threads {
    let mut by_tid = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let (Ok(status), Ok(schedstat)) = (
            std::fs::read_to_string(task.path().join("status")),
            std::fs::read_to_string(task.path().join("schedstat")),
        ) else {
            continue; // the thread ended
        };
        let mut name = String::new();
        let mut switches = 0;
        for line in status.lines() {
            if let Some(n) = line.strip_prefix("Name:") {
                name = n.trim().to_owned();
            }
            if line.starts_with("voluntary_ctxt_switches:")
                || line.starts_with("nonvoluntary_ctxt_switches:")
            {
                switches += line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        let cpu_ns: u64 = schedstat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        by_tid.insert(tid, (name, switches, cpu_ns));
    }
    by_tid
}

/// What the threads did between two [`threads`] readings, summed by thread name: (context
/// switches, ns on a CPU). Counted per thread id, so a thread that ended in between is left
/// out rather than mistaken for fewer switches of the others; one that started counts in full.
pub fn activity_between(before: &Threads, after: &Threads) -> BTreeMap<String, (u64, u64)> {
    let mut by_name = BTreeMap::new();
    for (tid, (name, switches, cpu_ns)) in after {
        let (n0, ns0) = before.get(tid).map_or((0, 0), |(_, n, ns)| (*n, *ns));
        let entry = by_name.entry(name.clone()).or_insert((0, 0));
        entry.0 += switches.saturating_sub(n0);
        entry.1 += cpu_ns.saturating_sub(ns0);
    }
    by_name
}
