//! What the syslog tests share (tests/syslog.rs against receivers the test owns,
//! tests/rsyslog.rs against a real rsyslogd): a `run` config with an `outputs` section, the
//! Pryv sample as the followed log, the envelopes `outputs.stdout` printed (what each
//! message is expected from), and a run that ends once everything was confirmed.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::*;

/// A `run` config following `dir/logs/*.log` with the given `outputs` section (indented two
/// spaces).
pub fn config(dir: &Path, outputs: &str) -> PathBuf {
    let base = service_yaml(dir);
    let yaml = format!("{base}outputs:\n{outputs}\n");
    let path = dir.join("auditrail.yaml");
    std::fs::write(&path, yaml).expect("write config");
    path
}

/// Copies the Pryv sample into `dir/logs/0.log`, with `extra` lines after it; returns the
/// log's path and size.
pub fn pryv_log(dir: &Path, extra: &str) -> (PathBuf, u64) {
    std::fs::create_dir_all(dir.join("logs")).expect("create logs dir");
    let mut text = std::fs::read_to_string(sample("pryv-syslog.log")).expect("read the sample");
    text.push_str(extra);
    let path = dir.join("logs/0.log");
    std::fs::write(&path, &text).expect("write the log");
    (path, text.len() as u64)
}

/// The envelopes `outputs.stdout` printed, in order: (envelope, record text as written).
pub fn envelopes(lines: &[String]) -> Vec<(Value, String)> {
    lines
        .iter()
        .map(|l| (parse_line(l)["value"].clone(), record_text(l).to_owned()))
        .collect()
}

/// The string at `pointer` in `v`.
pub fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {v}"))
}

/// Runs auditrail until every record reached stdout and the checkpoint passed the whole
/// log, then stops it: (stdout lines, pid).
pub fn run_until_confirmed(
    dir: &Path,
    cfg: &Path,
    log: &Path,
    size: u64,
    records: usize,
) -> (Vec<String>, u32) {
    let mut run = Daemon::start(cfg);
    let pid = run.pid();
    run.wait_for_records(records);
    wait_for_checkpoint(dir, log, size);
    let stopped = run.stop_cleanly();
    assert_eq!(stopped.stdout.len(), records);
    (stopped.stdout, pid)
}
