//! `auditrail run` as a real process: its config, its output read line by line, its
//! checkpoints, and how it stops.

use std::fs::{self};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

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

/// [`run_config`] following the glob `patterns` instead of `dir/logs/*.log` (for the kubelet
/// simulator's layout, `<pod dir>/*/*.log`): checkpoints in `dir/checkpoints`, the same short
/// intervals and `rotate_wait: 1s`; `extra_source` adds keys to the `source` section.
pub fn run_config_following(dir: &Path, patterns: &[&Path], extra_source: &str) -> PathBuf {
    let paths: Vec<String> = patterns
        .iter()
        .map(|p| yaml_str(p.to_str().expect("UTF-8 temp path")))
        .collect();
    let yaml = format!(
        "metrics:\n  listen: 127.0.0.1:0\nsource:\n  paths: [{}]\n  checkpoint_dir: {}\n  poll_interval: 50ms\n  scan_interval: 100ms\n  checkpoint_interval: 100ms\n  rotate_wait: 1s\n{}",
        paths.join(", "),
        yaml_str(dir.join("checkpoints").to_str().expect("UTF-8 temp path")),
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
    /// The identities of the final stats: `lines + incomplete = ordinary + audit + invalid +
    /// oversize + partials` and `audit = shipped + filtered_out`; and one stdout line per
    /// record shipped and per gap record.
    pub fn assert_stat_identities(&self) {
        let g = |k| self.stopped_stat(k);
        assert_eq!(
            g("lines") + g("incomplete"),
            g("ordinary") + g("audit") + g("invalid") + g("oversize") + g("partials")
        );
        assert_eq!(g("audit"), g("shipped") + g("filtered_out"));
        assert_eq!((g("shipped") + g("gaps")) as usize, self.stdout.len());
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

    /// The regular files the process holds open now: device, inode, and the path the kernel
    /// gives for it (with " (deleted)" once its last name is gone). A deleted file it holds
    /// is still readable by it; one nothing holds is gone.
    pub fn open_files(&self) -> Vec<(u64, u64, String)> {
        use std::os::unix::fs::MetadataExt;
        let fds = PathBuf::from(format!("/proc/{}/fd", self.pid()));
        let Ok(entries) = fs::read_dir(&fds) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let target = fs::read_link(e.path()).ok()?;
                let meta = fs::metadata(e.path()).ok()?;
                meta.is_file().then(|| {
                    (
                        meta.dev(),
                        meta.ino(),
                        target.to_string_lossy().into_owned(),
                    )
                })
            })
            .collect()
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
    pub fn wait_for(&mut self, what: &str, cond: impl FnMut(&[String]) -> bool) {
        self.wait_for_within(what, DEADLINE, cond);
    }

    /// [`Daemon::wait_for`] with another deadline: for a test that knows how soon something
    /// must happen (the deadline is then part of what it asserts).
    pub fn wait_for_within(
        &mut self,
        what: &str,
        deadline: Duration,
        mut cond: impl FnMut(&[String]) -> bool,
    ) {
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
            if start.elapsed() > deadline {
                panic!(
                    "timed out ({deadline:?}) waiting for {what}; {} stdout lines; stderr:\n{}",
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

    /// Sends SIGTERM and waits at most `within` for the process to exit; if it does not, sends
    /// SIGKILL. `Ok` when it exited on its own, `Err` (what it printed) when it was killed.
    pub fn terminate_within(self, within: Duration) -> Result<Stopped, Stopped> {
        self.send("TERM");
        self.exit_within(within)
    }

    /// Sends `signal` (`TERM`, `KILL`, ...) and returns at once, as a kubelet does: the process
    /// goes on draining while the caller does other things (the pod simulator's application
    /// keeps writing); [`Daemon::exit_within`] then waits for the exit.
    pub fn send(&self, signal: &str) {
        let pid = self.pid();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// Waits at most `within` for the process to exit on its own (after a signal sent with
    /// [`Daemon::send`]); if it does not, sends SIGKILL, as a kubelet does at the end of the
    /// grace period. `Ok` when it exited on its own, `Err` (what it printed) when it was killed.
    pub fn exit_within(mut self, within: Duration) -> Result<Stopped, Stopped> {
        let start = Instant::now();
        while start.elapsed() < within {
            let child = self.child.as_mut().expect("running");
            if child.try_wait().expect("try_wait").is_some() {
                // Reaped: collect what it printed the usual way, without signalling again.
                self.stdout_limit.store(usize::MAX, Ordering::SeqCst);
                let status = self.child.take().expect("running").wait().expect("wait");
                for reader in self.readers.drain(..) {
                    reader.join().expect("pipe reader");
                }
                return Ok(Stopped {
                    status,
                    stdout: self.stdout_lines(),
                    stderr: self.stderr_lines(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(self.kill())
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
