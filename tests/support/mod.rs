//! Shared helpers for the integration tests: the real `auditrail` binary, real files in
//! temporary directories, and a real `auditrail run` process whose output is read line by line.
//!
//! Waits have a generous deadline and return as soon as their condition holds: the deadline
//! only turns a hang into a readable failure, it is never a performance assertion.
#![allow(dead_code)]

pub mod broker;
pub mod fake_api;

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

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

// === check and validate ===

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
            summary.get("shipped") as usize,
            self.lines().len(),
            "one stdout line per shipped record"
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
            g("lines"),
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

// === auditrail run ===

/// The start of a `run` config shared by the service tests: metrics on an ephemeral port, and a
/// `source` section (left open, so callers may add keys indented two spaces) following
/// `dir/logs/*.log` with checkpoints in `dir/checkpoints` and short intervals.
pub fn service_yaml(dir: &Path) -> String {
    fs::create_dir_all(dir.join("logs")).expect("create logs dir");
    format!(
        "metrics:\n  listen: 127.0.0.1:0\nsource:\n  paths: [{}]\n  checkpoint_dir: {}\n  poll_interval: 50ms\n  scan_interval: 100ms\n  checkpoint_interval: 100ms\n",
        yaml_str(dir.join("logs").join("*.log").to_str().expect("UTF-8 temp path")),
        yaml_str(dir.join("checkpoints").to_str().expect("UTF-8 temp path")),
    )
}

/// A config for `run` following `logs/*.log` in `dir`, with checkpoints in `dir/checkpoints`
/// and short intervals; `extra_source` adds keys to the `source` section (indented two
/// spaces).
pub fn run_config(dir: &Path, extra_source: &str) -> PathBuf {
    run_config_with_scan(dir, "100ms", extra_source)
}

/// [`run_config`] with another `scan_interval`.
pub fn run_config_with_scan(dir: &Path, scan_interval: &str, extra_source: &str) -> PathBuf {
    let pattern = dir.join("logs").join("*.log");
    let checkpoints = dir.join("checkpoints");
    fs::create_dir_all(dir.join("logs")).expect("create logs dir");
    let yaml = format!(
        "metrics:\n  listen: 127.0.0.1:0\nsource:\n  paths: [{}]\n  checkpoint_dir: {}\n  poll_interval: 50ms\n  scan_interval: {scan_interval}\n  checkpoint_interval: 100ms\n  rotate_wait: 1s\n{}",
        yaml_str(pattern.to_str().expect("UTF-8 temp path")),
        yaml_str(checkpoints.to_str().expect("UTF-8 temp path")),
        extra_source
    );
    write_config(dir, "run.yaml", &yaml)
}

/// The checkpoint entries saved in `dir/checkpoints/checkpoints.json`: (path, offset). A
/// path can appear twice: a file rotated away keeps the last path it was seen at.
pub fn saved_checkpoints(dir: &Path) -> Vec<(String, u64)> {
    let Ok(text) = fs::read_to_string(dir.join("checkpoints").join("checkpoints.json")) else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_str::<Value>(&text) else {
        return Vec::new();
    };
    v["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e["path"].as_str()?.to_owned(), e["offset"].as_u64()?)))
        .collect()
}

/// Whether a checkpoint of `file` is saved at `offset`.
pub fn has_checkpoint(dir: &Path, file: &Path, offset: u64) -> bool {
    let key = file.to_str().expect("UTF-8 path");
    saved_checkpoints(dir)
        .iter()
        .any(|(path, at)| path == key && *at == offset)
}

/// Lines read from one of the child's pipes.
#[derive(Debug, Default)]
struct Lines {
    complete: Vec<String>,
    /// A last line cut off without its `\n` (the process was killed mid-write).
    torn: Option<String>,
}

/// Reads `pipe` line by line on a thread, holding off (leaving the pipe to fill up) while
/// `limit` lines have been read.
fn read_lines(
    pipe: impl Read + Send + 'static,
    limit: Arc<AtomicUsize>,
) -> (Arc<Mutex<Lines>>, JoinHandle<()>) {
    let lines = Arc::new(Mutex::new(Lines::default()));
    let shared = Arc::clone(&lines);
    let handle = std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            while shared.lock().expect("lines lock").complete.len() >= limit.load(Ordering::SeqCst)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    let mut l = shared.lock().expect("lines lock");
                    match text.strip_suffix('\n') {
                        Some(line) => l.complete.push(line.to_owned()),
                        None => l.torn = Some(text),
                    }
                }
            }
        }
    });
    (lines, handle)
}

/// A running `auditrail run`. Killed when dropped, so a failing test leaves no process behind.
pub struct Daemon {
    child: Option<Child>,
    stdout: Arc<Mutex<Lines>>,
    /// Stdout is not read beyond this many lines (see [`Daemon::hold_stdout_after`]).
    stdout_limit: Arc<AtomicUsize>,
    stderr: Arc<Mutex<Lines>>,
    readers: Vec<JoinHandle<()>>,
}

/// What a stopped `auditrail run` printed.
#[derive(Debug)]
pub struct Stopped {
    pub status: ExitStatus,
    /// Complete stdout lines: one shipped record each.
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

impl Stopped {
    /// A counter from the final "auditrail stopped" log line.
    pub fn stopped_stat(&self, name: &str) -> u64 {
        let line = self
            .stderr
            .iter()
            .rev()
            .find(|l| l.contains("auditrail stopped"))
            .unwrap_or_else(|| {
                panic!(
                    "no \"auditrail stopped\" line in:\n{}",
                    self.stderr.join("\n")
                )
            });
        stat_in(line, name).unwrap_or_else(|| panic!("no {name} in {line}"))
    }
}

impl Stopped {
    /// The identities of the final stats: `lines = ordinary + audit + invalid + oversize +
    /// partials` and `audit = shipped + filtered_out`; and one stdout line per record shipped.
    pub fn assert_stat_identities(&self) {
        let g = |k| self.stopped_stat(k);
        assert_eq!(
            g("lines"),
            g("ordinary") + g("audit") + g("invalid") + g("oversize") + g("partials")
        );
        assert_eq!(g("audit"), g("shipped") + g("filtered_out"));
        assert_eq!(g("shipped") as usize, self.stdout.len());
    }
}

/// Finds `name` followed by `:` (JSON `"name":N` or Debug `name: N`) and reads the number.
fn stat_in(line: &str, name: &str) -> Option<u64> {
    let mut rest = line;
    while let Some(at) = rest.find(name) {
        let after = &rest[at + name.len()..];
        let after = after.strip_prefix('"').unwrap_or(after).trim_start();
        if let Some(after) = after.strip_prefix(':') {
            let digits: String = after
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            if let Ok(n) = digits.parse() {
                return Some(n);
            }
        }
        rest = &rest[at + name.len()..];
    }
    None
}

impl Daemon {
    /// Starts `auditrail run --config C`.
    pub fn start(config: &Path) -> Daemon {
        Daemon::start_with_env(config, &[])
    }

    /// Starts `auditrail run --config C` with extra environment variables (the Downward API
    /// ones, `KUBECONFIG`); the Kubernetes variables of the machine are removed first.
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Daemon {
        let mut command = Command::new(bin());
        for var in [
            "POD_NAME",
            "POD_NAMESPACE",
            "POD_UID",
            "NODE_NAME",
            "POD_IP",
            "KUBECONFIG",
            "KUBERNETES_SERVICE_HOST",
        ] {
            command.env_remove(var);
        }
        command.envs(env.iter().copied());
        command
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info");
        Daemon::spawn(command)
    }

    /// Starts `command`, an `auditrail run` whose arguments and environment the caller set
    /// (a container's rendered args and env), with stdin closed and both outputs read line by
    /// line.
    pub fn spawn(mut command: Command) -> Daemon {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn auditrail run");
        let stdout_limit = Arc::new(AtomicUsize::new(usize::MAX));
        let (stdout, out_reader) = read_lines(
            child.stdout.take().expect("stdout is piped"),
            Arc::clone(&stdout_limit),
        );
        let (stderr, err_reader) = read_lines(
            child.stderr.take().expect("stderr is piped"),
            Arc::new(AtomicUsize::new(usize::MAX)),
        );
        Daemon {
            child: Some(child),
            stdout,
            stdout_limit,
            stderr,
            readers: vec![out_reader, err_reader],
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Stops reading stdout once `lines` lines have been read, like a stuck consumer: the
    /// pipe fills up and auditrail's stdout output blocks, so the records it is writing are
    /// never confirmed. Reading resumes when the process is stopped.
    pub fn hold_stdout_after(&self, lines: usize) {
        self.stdout_limit.store(lines, Ordering::SeqCst);
    }

    /// The complete stdout lines so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().expect("lines lock").complete.clone()
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().expect("lines lock").complete.clone()
    }

    /// Waits until `cond` holds for the stdout lines; fails the test (with the logs) after
    /// [`DEADLINE`] or when the process exits first.
    pub fn wait_for(&mut self, what: &str, mut cond: impl FnMut(&[String]) -> bool) {
        let start = Instant::now();
        loop {
            if cond(&self.stdout.lock().expect("lines lock").complete) {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "auditrail exited ({status}) while waiting for {what}; stderr:\n{}",
                    self.stderr_lines().join("\n")
                );
            }
            if start.elapsed() > DEADLINE {
                panic!(
                    "timed out waiting for {what}; {} stdout lines; stderr:\n{}",
                    self.stdout_lines().len(),
                    self.stderr_lines().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until a log line on stderr contains `text`.
    pub fn wait_for_log(&mut self, text: &str) {
        let stderr = Arc::clone(&self.stderr);
        self.wait_for(&format!("a log line with {text:?}"), |_| {
            stderr
                .lock()
                .expect("lines lock")
                .complete
                .iter()
                .any(|l| l.contains(text))
        });
    }

    /// Waits until at least `n` records have been printed.
    pub fn wait_for_records(&mut self, n: usize) {
        self.wait_for(&format!("{n} records"), |lines| lines.len() >= n);
    }

    /// Sends SIGTERM and waits for the process to drain and exit.
    pub fn terminate(self) -> Stopped {
        self.signal("TERM")
    }

    /// The address the metrics server bound (test configs ask for port 0), from its log.
    pub fn metrics_address(&mut self) -> String {
        self.wait_for_log("serving /metrics");
        let line = self
            .stderr_lines()
            .into_iter()
            .find(|l| l.contains("serving /metrics"))
            .expect("the line waited for");
        let v: Value = serde_json::from_str(&line).expect("a JSON log line");
        v["listen"].as_str().expect("a listen field").to_owned()
    }

    /// Sends SIGTERM; the exit must be clean (0), else the test fails with the logs.
    pub fn stop_cleanly(self) -> Stopped {
        let stopped = self.terminate();
        assert_eq!(
            stopped.status.code(),
            Some(0),
            "auditrail exited with {}; stderr:\n{}",
            stopped.status,
            stopped.stderr.join("\n")
        );
        stopped
    }

    /// Sends SIGKILL: no drain, no last checkpoint.
    pub fn kill(self) -> Stopped {
        self.signal("KILL")
    }

    fn signal(mut self, signal: &str) -> Stopped {
        let pid = self.pid();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
        self.stdout_limit.store(usize::MAX, Ordering::SeqCst);
        let mut child = self.child.take().expect("running");
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if start.elapsed() > DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "auditrail did not exit after SIG{signal}; stderr:\n{}",
                    self.stderr_lines().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for reader in self.readers.drain(..) {
            reader.join().expect("pipe reader");
        }
        Stopped {
            status,
            stdout: self.stdout_lines(),
            stderr: self.stderr_lines(),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stdout_limit.store(usize::MAX, Ordering::SeqCst);
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until a checkpoint of `file` is saved at `offset`.
pub fn wait_for_checkpoint(dir: &Path, file: &Path, offset: u64) {
    let start = Instant::now();
    while !has_checkpoint(dir, file, offset) {
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for the checkpoint of {} at {offset}; saved: {:?}",
            file.display(),
            saved_checkpoints(dir)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `cond` holds; fails the test after [`DEADLINE`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// === HTTP and metrics ===

/// A plain HTTP/1.0 GET: (status code, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    try_http_get(addr, path).unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// [`http_get`], with connection errors returned (a server that is still starting).
pub fn try_http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_owned()))
}

/// Every sample of a Prometheus scrape: `name{labels}` -> value.
pub fn metric_samples(text: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of every series of metric `name` whose labels contain all of `labels`.
pub fn metric_sum(
    samples: &std::collections::BTreeMap<String, f64>,
    name: &str,
    labels: &[&str],
) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| {
            let metric = series.split('{').next().unwrap_or("");
            metric == name && labels.iter().all(|l| series.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}
