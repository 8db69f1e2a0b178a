//! Outputs and what stands behind them (issue 13): an output that dies, a checkpoint that
//! cannot be saved, an output that stalls, each with the real binary and real files.
//!
//! One test per finding, named after it.

// Test code: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod support;

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

fn write_records(dir: &std::path::Path, tag: &str, n: usize) -> Vec<String> {
    let path = dir.join("logs/0.log");
    let mut text = String::new();
    let mut records = Vec::new();
    for i in 0..n {
        let record = audit_line(tag, i);
        text.push_str(&record);
        text.push('\n');
        records.push(record);
    }
    append(&path, text);
    records
}

/// Waits for `child` to exit within `limit`; its exit status, or `None` if it did not.
fn exit_within(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Finding 2. The stdout output's reader went away (EPIPE): auditrail used to stay up and
/// ready, reading and discarding. It must end with a non-zero exit (the kubelet restarts it
/// and the checkpoint replays), and a restart with a working output ships every record.
#[test]
fn a_dead_output_ends_the_process_with_a_non_zero_exit() {
    let dir = tempdir();
    let config = run_config(dir.path(), "");
    write_records(dir.path(), "beforeDeath", 50);
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read a little, then close the pipe: the next write fails with EPIPE.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 64];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    // What was already written into the pipe counts as delivered (the stdout output's standard);
    // what comes after the reader went away must not be read on and lost.
    let written = write_records(dir.path(), "afterDeath", 50);
    let status = exit_within(&mut child, Duration::from_secs(10));
    let _ = child.kill();
    let _ = child.wait();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .ok();
    let status =
        status.unwrap_or_else(|| panic!("still running 10 s after its output died:\n{stderr}"));
    assert!(!status.success(), "exit {status}:\n{stderr}");

    // The checkpoint only covers what was written: a restart ships the rest.
    let mut daemon = Daemon::start(&config);
    daemon.wait_for("every record written after the output died", |lines| {
        let shipped: Vec<&str> = lines.iter().map(|l| record_text(l)).collect();
        written.iter().all(|r| shipped.contains(&r.as_str()))
    });
    let stopped = daemon.stop_cleanly();
    let shipped: std::collections::BTreeSet<String> = stopped
        .stdout
        .iter()
        .map(|l| record_text(l).to_owned())
        .collect();
    for record in &written {
        assert!(shipped.contains(record), "{record} was never shipped");
    }
}

/// Finding 5. A checkpoint that cannot be saved (a read-only or full volume: here the
/// directory is replaced by a file, which even root cannot write into) used to log a warning
/// only: readiness stayed 200 and nothing counted it. It must be counted, make the pod not
/// ready, and clear when saving works again.
#[test]
fn a_checkpoint_save_failure_fails_readiness_is_counted_and_recovers() {
    let dir = tempdir();
    let config = run_config(dir.path(), "");
    write_records(dir.path(), "saved", 5);
    let mut daemon = Daemon::start(&config);
    daemon.wait_for_records(5);
    let addr = daemon.metrics_address();
    wait_until("ready", || {
        try_http_get(&addr, "/readyz").is_ok_and(|(c, _)| c == 200)
    });

    let checkpoints = dir.path().join("checkpoints");
    let aside = dir.path().join("checkpoints.aside");
    fs::rename(&checkpoints, &aside).unwrap();
    fs::write(&checkpoints, b"not a directory").unwrap();
    wait_until("not ready because of the checkpoint", || {
        http_get(&addr, "/readyz").0 == 503
    });
    let (_, body) = http_get(&addr, "/readyz");
    assert!(body.contains("checkpoint"), "{body}");
    wait_until("the failures counted", || {
        let (_, text) = http_get(&addr, "/metrics");
        metric_samples(&text)
            .get("auditrail_checkpoint_errors_total")
            .is_some_and(|v| *v > 0.0)
    });

    fs::remove_file(&checkpoints).unwrap();
    fs::rename(&aside, &checkpoints).unwrap();
    wait_until("ready again", || http_get(&addr, "/readyz").0 == 200);
    let stopped = daemon.stop_cleanly();
    assert!(stopped.status.success());
}

/// Finding 7, first half. The stdout output had no drain timeout: with its reader stuck, the
/// process was still running 8 s after SIGTERM. Every output has one.
#[test]
fn the_stdout_output_gives_up_after_its_drain_timeout() {
    let dir = tempdir();
    let config = write_config(
        dir.path(),
        "run.yaml",
        &format!(
            "{}  drain_timeout: 1s\n  drain_quiet: 200ms\noutputs:\n  stdout: {{drain_timeout: 1s}}\n",
            service_yaml(dir.path())
        ),
    );
    // Enough records to fill the pipe once the reader stops.
    write_records(dir.path(), "stuck", 2_000);
    let mut daemon = Daemon::start(&config);
    daemon.wait_for_records(10);
    daemon.hold_stdout_after(10);
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let stopped = daemon.terminate();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?} to stop",
        started.elapsed()
    );
    assert!(stopped.status.success());
}

/// Finding 7, second half. One stalled output halted every output. A syslog output marked
/// `required: false` (Pryv sends alerts there) whose receiver stops reading must count its
/// failures and never hold the required stdout output back.
#[test]
fn an_optional_output_that_stalls_never_blocks_the_others() {
    let dir = tempdir();
    // A TCP receiver that accepts and never reads: the socket buffers fill, then writes block.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let _held = std::thread::spawn(move || {
        let conns: Vec<_> = listener.incoming().take(4).collect();
        std::thread::sleep(Duration::from_secs(60));
        drop(conns);
    });
    let config = write_config(
        dir.path(),
        "run.yaml",
        &format!(
            "{}outputs:\n  stdout: {{}}\n  syslog: {{address: 'tcp://127.0.0.1:{port}', required: false}}\n",
            service_yaml(dir.path())
        ),
    );
    let written = write_records(dir.path(), "big", 20_000);
    let mut daemon = Daemon::start(&config);
    daemon.wait_for_within("every record on stdout", Duration::from_secs(20), |lines| {
        lines.len() >= written.len()
    });
    let stopped = daemon.stop_cleanly();
    assert!(stopped.status.success());
}

/// Finding 1. Memory was bounded per channel in batches, not in bytes: with 40 KiB records
/// and a stalled output, 85 MiB RSS against the chart's 128 MiB limit. With a budget of 4 MiB
/// (less than the channels alone would hold), what auditrail reads ahead of a stalled output
/// and what it holds stay within the budget plus one batch. The RSS figures are in
/// BENCHMARKS.md (`scripts/bench-memory.sh`).
#[test]
fn memory_is_bounded_in_bytes_with_large_records_and_a_stalled_output() {
    const BUDGET: u64 = 4 * 1024 * 1024;
    let dir = tempdir();
    let config = write_config(
        dir.path(),
        "run.yaml",
        &format!(
            "{}memory:\n  budget_bytes: {BUDGET}\noutputs:\n  stdout: {{drain_timeout: 1s}}\n",
            service_yaml(dir.path())
        ),
    );
    // 2,000 records of 40 KiB: 80 MiB, ten times the budget.
    let blob = "b".repeat(40 * 1024);
    let mut text = String::new();
    for i in 0..2_000 {
        text.push_str(&format!(
            r#"{{"level": "audit", "recordType": "bulkExport", "id": "large-{i}", "blob": "{blob}"}}"#
        ));
        text.push('\n');
    }
    append(&dir.path().join("logs/0.log"), text);
    let mut daemon = Daemon::start(&config);
    daemon.wait_for_records(10);
    daemon.hold_stdout_after(10);
    let address = daemon.metrics_address();
    // Wait until reading has stopped: the output's backpressure reached the source.
    let mut last = -1.0;
    let mut still = 0;
    let deadline = Instant::now() + DEADLINE;
    let scrape = loop {
        std::thread::sleep(Duration::from_millis(250));
        let scrape = metric_samples(&http_get(&address, "/metrics").1);
        let read = metric_sum(&scrape, "auditrail_source_bytes_total", &[]);
        still = if read == last { still + 1 } else { 0 };
        last = read;
        if still >= 4 || Instant::now() > deadline {
            break scrape;
        }
    };
    let read = metric_sum(&scrape, "auditrail_source_bytes_total", &[]) as u64;
    let held = metric_sum(&scrape, "auditrail_memory_used_bytes", &[]) as u64;
    let budget = metric_sum(&scrape, "auditrail_memory_budget_bytes", &[]) as u64;
    assert_eq!(budget, BUDGET);
    // One batch (1 MiB) past the budget, the pipe, what the test read and the reader's buffer.
    let slack = 3 * 1024 * 1024;
    assert!(
        read <= BUDGET + slack,
        "read {read} bytes ahead of a stalled output"
    );
    assert!(held <= BUDGET + slack, "holds {held} bytes");
    assert!(held > BUDGET / 2, "the budget is used ({held} bytes)");
    let _ = daemon.terminate();
}
