//! Adversarial tests of the file source: interleavings, crash points, stalls and odd file
//! operations chosen to break the core promise:
//!
//! > every audit record written to a log reaches an output, or its loss is reported (a gap
//! > record of type `auditrail.gap`); a checkpoint never passes a record that no output
//! > confirmed.
//!
//! Every test drives the real `auditrail run` (stdout output) over real files written by the
//! kubelet simulator (or by hand, for docker and raw files), and asserts the promise with
//! [`assert_promise`]: every record written was shipped at least once (by id, across runs), or
//! a gap record names its container's file and a byte range that covers it; nothing was
//! shipped that was not written, byte for byte.
//!
//! Tests whose name starts with `held_` are attacks the code withstood when they were
//! written; the others broke the promise then (see the doc comment of each for the
//! mechanism).

// Test code: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use support::kubelet::{record_id, Kubelet, Stream};
use support::*;
use Stream::Stdout;

const GAP_TYPE: &str = "auditrail.gap";
/// How long a test gives records to arrive once nothing stands in their way.
const SOON: Duration = Duration::from_secs(5);
/// Length of the audit records the tests write.
const LEN: usize = 300;
const BANNER: &str = "=== shop-api 1.4.2 starting ===\n";

// === the ledger: what was written where ===

/// Records written in one go to one physical file, at `[start, end)` of that file.
#[derive(Debug, Clone)]
struct Batch {
    what: String,
    /// The container's log directory (a gap must name a file in it).
    dir: PathBuf,
    start: u64,
    end: u64,
    records: Vec<String>,
}

/// Everything a test wrote, batch by batch.
#[derive(Debug, Default)]
struct Ledger {
    batches: Vec<Batch>,
}

impl Ledger {
    /// `app` writes `n` audit records to stdout, in one write; noted as `what`.
    fn audit(&mut self, app: &mut Kubelet, n: usize, what: &str) -> Vec<String> {
        let start = app.written_len();
        let records = app.write_audit(Stdout, n, LEN);
        let end = app.written_len();
        self.note(what, app.dir(), start, end, records.clone());
        records
    }

    fn note(&mut self, what: &str, dir: &Path, start: u64, end: u64, records: Vec<String>) {
        self.batches.push(Batch {
            what: what.to_owned(),
            dir: dir.to_path_buf(),
            start,
            end,
            records,
        });
    }

    fn all(&self) -> Vec<String> {
        self.batches
            .iter()
            .flat_map(|b| b.records.iter().cloned())
            .collect()
    }
}

// === reading the output ===

fn value(line: &str) -> Value {
    parse_line(line)["value"].clone()
}

fn is_gap(line: &str) -> bool {
    value(line)["type"] == GAP_TYPE
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct GapRecord {
    file: String,
    reason: String,
    start: u64,
    end: u64,
    end_known: bool,
}

impl GapRecord {
    /// Whether this gap reports a loss in `batch`: it names a file of the batch's container
    /// and its range overlaps the batch. A gap whose end is not known (`end_known: false`:
    /// the end is only the last size seen, the loss "may go beyond end") covers everything
    /// from its start.
    fn covers(&self, batch: &Batch) -> bool {
        let same_dir = Path::new(&self.file).parent() == Some(batch.dir.as_path());
        let open_ended = !self.end_known;
        same_dir && self.start < batch.end && (open_ended || self.end > batch.start)
    }
}

fn gaps(lines: &[String]) -> Vec<GapRecord> {
    let set: BTreeSet<GapRecord> = lines
        .iter()
        .filter(|l| is_gap(l))
        .map(|l| {
            let r: Value = serde_json::from_str(record_text(l)).unwrap();
            GapRecord {
                file: r["file"].as_str().unwrap_or_default().to_owned(),
                reason: r["reason"].as_str().unwrap_or_default().to_owned(),
                start: r["start"].as_u64().unwrap_or(0),
                end: r["end"].as_u64().unwrap_or(0),
                end_known: r["end_known"].as_bool().unwrap_or(true),
            }
        })
        .collect();
    set.into_iter().collect()
}

fn shipped_ids(lines: &[String]) -> BTreeSet<String> {
    lines
        .iter()
        .filter(|l| !is_gap(l))
        .filter_map(|l| record_id(record_text(l)))
        .collect()
}

fn ids_of(written: &[String]) -> BTreeSet<String> {
    written.iter().filter_map(|r| record_id(r)).collect()
}

/// The promise, over everything every run shipped: each record of the ledger was shipped at
/// least once, or a gap record covers its batch; and every shipped audit record is a written
/// record, byte for byte.
fn assert_promise(shipped: &[String], ledger: &Ledger, context: &str) {
    let written = ledger.all();
    let by_id: BTreeMap<String, &str> = written
        .iter()
        .map(|r| (record_id(r).expect("written records have ids"), r.as_str()))
        .collect();
    assert_eq!(by_id.len(), written.len(), "written ids are distinct");
    let mut seen = BTreeSet::new();
    let mut never_written = Vec::new();
    for line in shipped.iter().filter(|l| !is_gap(l)) {
        let text = record_text(line);
        match record_id(text) {
            Some(id) if by_id.get(&id) == Some(&text) => {
                seen.insert(id);
            }
            _ => never_written.push(text.chars().take(120).collect::<String>()),
        }
    }
    let gaps = gaps(shipped);
    let mut unreported = Vec::new();
    let mut reported = 0;
    for batch in &ledger.batches {
        let missing: Vec<String> = batch
            .records
            .iter()
            .filter_map(|r| record_id(r))
            .filter(|id| !seen.contains(id))
            .collect();
        if missing.is_empty() {
            continue;
        }
        if gaps.iter().any(|g| g.covers(batch)) {
            reported += missing.len();
        } else {
            unreported.push(format!(
                "{} of {} records of {:?} (bytes {}..{} of a file in {}), first {:?}",
                missing.len(),
                batch.records.len(),
                batch.what,
                batch.start,
                batch.end,
                batch.dir.display(),
                missing.first()
            ));
        }
    }
    assert!(
        unreported.is_empty() && never_written.is_empty(),
        "PROMISE BROKEN{context}\n  lost without a gap record: {unreported:#?}\n  \
         shipped but never written: {never_written:?}\n  ({reported} missing records covered \
         by gaps; gap records: {gaps:#?})"
    );
}

// === driving ===

fn pod_dir(dir: &Path) -> (PathBuf, PathBuf) {
    let pod = dir.join("pods/shop_api-7d9f8_0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d");
    fs::create_dir_all(&pod).expect("create the pod's log directory");
    let pattern = pod.join("*").join("*.log");
    (pod, pattern)
}

fn config_for(dir: &Path, pattern: &Path, extra_source: &str) -> PathBuf {
    run_config_following(dir, &[pattern], extra_source)
}

/// Waits (at most `within`) until every record of `written` has been shipped by `daemon`.
fn give_time_to_ship(daemon: &Daemon, written: &[String], within: Duration) {
    let want = ids_of(written);
    let start = Instant::now();
    while start.elapsed() < within && !shipped_ids(&daemon.stdout_lines()).is_superset(&want) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn concat(runs: &[&[String]]) -> Vec<String> {
    runs.iter().flat_map(|r| r.iter().cloned()).collect()
}

/// Sends `signal` (STOP, CONT) to the daemon.
fn signal(daemon: &Daemon, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(daemon.pid().to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// The daemon's stderr lines containing `text`.
fn log_lines(lines: &[String], text: &str) -> Vec<String> {
    lines.iter().filter(|l| l.contains(text)).cloned().collect()
}

/// Blocks the daemon's stdout output: it writes no more than what the pipe holds, so what
/// it reads stays in flight, unconfirmed; with enough records the file tailer itself blocks
/// on the full channel (backpressure).
fn stall(daemon: &Daemon) {
    daemon.hold_stdout_after(0);
}

fn unstall(daemon: &Daemon) {
    daemon.hold_stdout_after(usize::MAX);
}

/// gzip `bytes` as the kubelet and docker do.
fn gzip_bytes(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

// =====================================================================================
// read_from: end
// =====================================================================================

/// `read_from: end` is for content that existed when auditrail started. A container's log
/// that exists but is still empty at startup (the runtime creates it when the container is
/// created; a regular sidecar starts alongside the application) gets its first records a
/// moment later, while auditrail runs.
///
/// Mechanism: `scan(true)` opens the empty file with `Start::CheckpointOrEnd`; `start_file`
/// cannot identify it (no first line) and returns false, leaving `start` as it is. When the
/// first write arrives, `start_file` runs with `CheckpointOrEnd` and seeks to
/// `end_of_last_line`, skipping every record written since startup, without a gap.
#[test]
fn read_from_end_skips_records_written_after_startup_into_an_empty_log() {
    let dir = tempdir();
    let (pod, pattern) = pod_dir(dir.path());
    let config = config_for(dir.path(), &pattern, "  read_from: end\n");
    let mut app = Kubelet::new(&pod); // 0.log exists, empty
    let mut daemon = Daemon::start(&config);
    daemon.wait_for_log("watching file");
    std::thread::sleep(Duration::from_millis(300));

    let mut ledger = Ledger::default();
    ledger.audit(&mut app, 50, "written after startup");
    give_time_to_ship(&daemon, &ledger.all(), SOON);
    let stopped = daemon.stop_cleanly();
    assert_promise(&stopped.stdout, &ledger, "");
}

/// With `read_from: end`, "files of a container that was followed before are always read
/// from their beginning". auditrail is down while the application container restarts: the
/// new instance writes `1.log` in the same container directory. At startup `1.log` is read
/// from its end, because `known_bases` holds `(dir, "0.log")` and `rotation::base_of` of
/// `1.log` is `(dir, "1.log")`: the restart count is part of the base. The records the new
/// instance wrote while auditrail was down are skipped without a gap.
#[test]
fn read_from_end_skips_a_restarted_container_log_written_while_down() {
    let dir = tempdir();
    let (pod, pattern) = pod_dir(dir.path());
    let config = config_for(dir.path(), &pattern, "  read_from: end\n");
    let mut app = Kubelet::new(&pod);
    app.write_ordinary(Stdout, 1);
    let mut ledger = Ledger::default();
    let daemon = Daemon::start(&config);
    wait_for_checkpoint(dir.path(), &app.path(), app.len());
    let first_written = ledger.audit(&mut app, 10, "0.log while running");
    give_time_to_ship(&daemon, &first_written, SOON);
    wait_for_checkpoint(dir.path(), &app.path(), app.len());
    let first = daemon.stop_cleanly();

    app.restart(); // 1.log
    ledger.audit(&mut app, 100, "1.log written while auditrail was down");

    let daemon = Daemon::start(&config);
    give_time_to_ship(&daemon, &ledger.all(), SOON);
    let second = daemon.stop_cleanly();
    assert_promise(&concat(&[&first.stdout, &second.stdout]), &ledger, "");
}

// =====================================================================================
// stalls
// =====================================================================================

/// The output stalls (Kafka down) long enough for the kubelet to rotate twice: the tailer is
/// blocked in `flush_batch` (backpressure) and does not scan. The log that lived between the
/// two rotations (`U`, now `0.log.<ts2>`) was never opened: when the output recovers, the
/// scan finds the newest `0.log` and the old file through its handle, but nothing matches
/// `U` any more (`*.log` does not match rotated names), and no checkpoint knows it. Its
/// records are never read and no gap is reported, although `U` is still on disk.
/// "The files are the buffer" only holds for files auditrail has opened.
#[test]
fn an_output_stall_across_two_rotations_loses_the_log_in_between() {
    let dir = tempdir();
    let (pod, pattern) = pod_dir(dir.path());
    let config = config_for(dir.path(), &pattern, "");
    let mut app = Kubelet::new(&pod);
    app.write_ordinary(Stdout, 1);
    let daemon = Daemon::start(&config);
    wait_for_checkpoint(dir.path(), &app.path(), app.len());

    let mut ledger = Ledger::default();
    stall(&daemon);
    ledger.audit(&mut app, 4_000, "K (0.log), read during the stall");
    std::thread::sleep(Duration::from_millis(1_000));
    app.rotate();
    ledger.audit(&mut app, 100, "U (0.log between the rotations)");
    app.rotate();
    ledger.audit(&mut app, 100, "V (the newest 0.log)");
    std::thread::sleep(Duration::from_millis(500));
    unstall(&daemon);

    give_time_to_ship(&daemon, &ledger.all(), Duration::from_secs(8));
    let stopped = daemon.stop_cleanly();
    assert_promise(
        &stopped.stdout,
        &ledger,
        &format!("; rotated files on disk: {:?}", app.rotated()),
    );
}

/// A stalled output, a rotation auditrail has not noticed (the tailer is blocked), a crash,
/// and while auditrail is down the kubelet rotates again and deletes the first rotated file
/// (`containerLogMaxFiles: 2`).
///
/// At restart `K` (the known file) is gone: a `deleted` gap rightly reports its unconfirmed
/// range. `U` (`0.log.<ts2>`, still on disk) is a sibling no checkpoint knows; with no known
/// sibling left, `resume_rotated` reads it only if its mtime is newer than the last checkpoint
/// update of its base. But `K` was watched, so its entry's `updated` is refreshed at every
/// save (every 100 ms) until the crash, after `U` was last written: `U` is judged old and
/// skipped. Its records are lost and no gap names them. (K is padded with 100 KB of ordinary
/// lines so that K's gap range cannot be mistaken for U's bytes.)
#[test]
fn a_restart_skips_an_unseen_rotated_log_older_than_the_last_save() {
    let dir = tempdir();
    let (pod, pattern) = pod_dir(dir.path());
    let config = config_for(dir.path(), &pattern, "");
    let mut app = Kubelet::new(&pod).max_files(2);
    app.write_ordinary_bytes(Stdout, 100_000);
    let daemon = Daemon::start(&config);
    wait_for_checkpoint(dir.path(), &app.path(), app.len());

    let mut ledger = Ledger::default();
    stall(&daemon);
    ledger.audit(&mut app, 4_000, "K, read during the stall");
    std::thread::sleep(Duration::from_millis(1_000));
    app.rotate();
    ledger.audit(&mut app, 30, "U, never seen by the stalled tailer");
    std::thread::sleep(Duration::from_millis(600)); // checkpoints of K saved meanwhile
    let first = daemon.kill();

    app.rotate(); // deletes K (max_files 2), U -> 0.log.<ts2>
    ledger.audit(&mut app, 10, "V, the live log at restart");
    let daemon = Daemon::start(&config);
    wait_for_checkpoint(dir.path(), &app.path(), app.len());
    give_time_to_ship(&daemon, &ledger.all(), SOON);
    let second = daemon.stop_cleanly();
    assert_promise(
        &concat(&[&first.stdout, &second.stdout]),
        &ledger,
        &format!("; rotated files on disk: {:?}", app.rotated()),
    );
}

// =====================================================================================
// partial lines at boundaries
// =====================================================================================

/// containerd splits a long line into `P` chunks; the kubelet rotates between two chunks of
/// one line (the runtime writes the `P` chunks to the renamed file, the `F` chunk to the new
/// one). auditrail processes the renamed file's `P` chunks "as they stand" when it lets the
/// file go (`let_go_of_rotated` → `flush_unterminated`): the head of a JSON record is not
/// valid JSON, so the extractor counts it `invalid` and nothing ships; the `F` chunk at the
/// start of the new file is a fragment, not a record. The record is lost, no gap record.
#[test]
fn a_cri_line_split_by_a_rotation_is_lost_without_a_gap() {
    let dir = tempdir();
    let (pod, pattern) = pod_dir(dir.path());
    let config = config_for(dir.path(), &pattern, "");
    let mut app = Kubelet::new(&pod).max_line(1024);
    let mut ledger = Ledger::default();
    ledger.audit(&mut app, 5, "before");
    let daemon = Daemon::start(&config);
    give_time_to_ship(&daemon, &ledger.all(), SOON);

    let long = app.next_audit_record(3_000);
    let start = app.written_len();
    app.write(Stdout, &long[..2_100]); // two P chunks of 1024 bytes; 52 bytes wait
    let end = app.written_len();
    ledger.note(
        "the long record whose P chunks end the rotated file",
        app.dir(),
        start,
        end,
        vec![long.clone()],
    );
    app.rotate();
    app.write(Stdout, format!("{}\n", &long[2_100..])); // the F chunk, in the new 0.log
    ledger.audit(&mut app, 5, "after");

    give_time_to_ship(&daemon, &ledger.all(), SOON);
    let stopped = daemon.stop_cleanly();
    assert_promise(
        &stopped.stdout,
        &ledger,
        &format!(
            "; invalid = {}, incomplete = {}",
            stopped.stopped_stat("invalid"),
            stopped.stopped_stat("incomplete")
        ),
    );
}

/// The sidecar alone is restarted (a liveness failure, a rollout of its config) while the
/// application is in the middle of a long line: its `P` chunks are in the file, the `F` is
/// not yet. The drain processes the `P` chunks as they stand (`run` → `flush_unterminated`):
/// the head of the record is invalid JSON, nothing ships, and `set_read(end, None)` lets the
/// checkpoint pass the line. After the restart the `F` chunk is read on its own. The record
/// is lost, no gap record.
#[test]
fn a_partial_line_cut_by_the_drain_is_lost_after_a_sidecar_restart() {
    let dir = tempdir();
    let (pod, pattern) = pod_dir(dir.path());
    let config = config_for(dir.path(), &pattern, "  drain_quiet: 300ms\n");
    let mut app = Kubelet::new(&pod).max_line(1024);
    let mut ledger = Ledger::default();
    ledger.audit(&mut app, 3, "before");
    let daemon = Daemon::start(&config);
    give_time_to_ship(&daemon, &ledger.all(), SOON);

    let long = app.next_audit_record(3_000);
    let start = app.written_len();
    app.write(Stdout, &long[..2_100]);
    let end = app.written_len();
    ledger.note(
        "the long record being written at SIGTERM",
        app.dir(),
        start,
        end,
        vec![long.clone()],
    );
    std::thread::sleep(Duration::from_millis(300));
    let first = daemon.stop_cleanly();

    app.write(Stdout, format!("{}\n", &long[2_100..]));
    ledger.audit(&mut app, 3, "after");
    let daemon = Daemon::start(&config);
    wait_for_checkpoint(dir.path(), &app.path(), app.len());
    give_time_to_ship(&daemon, &ledger.all(), Duration::from_secs(2));
    let second = daemon.stop_cleanly();
    assert_promise(
        &concat(&[&first.stdout, &second.stdout]),
        &ledger,
        &format!("; saved: {:?}", saved_checkpoints(dir.path())),
    );
}

/// A slow writer: the `P` chunks of a long record, then a pause longer than
/// `partial_line_expiry` (1 s here; 10 s by default), then its `F`. `expire_partial_lines`
/// processes the `P` chunks as they stand (invalid JSON: nothing ships), and the `F` chunk
/// is then a fragment on its own. The record is lost, no gap record: an expiry that cuts a
/// record is a loss the promise says must be reported.
#[test]
fn a_partial_line_cut_by_the_expiry_is_lost_without_a_gap() {
    let dir = tempdir();
    let (pod, pattern) = pod_dir(dir.path());
    let config = config_for(dir.path(), &pattern, "  partial_line_expiry: 1s\n");
    let mut app = Kubelet::new(&pod).max_line(1024);
    let mut ledger = Ledger::default();
    ledger.audit(&mut app, 3, "before");
    let daemon = Daemon::start(&config);
    give_time_to_ship(&daemon, &ledger.all(), SOON);

    let long = app.next_audit_record(3_000);
    let start = app.written_len();
    app.write(Stdout, &long[..2_100]);
    let end = app.written_len();
    ledger.note(
        "the slow long record",
        app.dir(),
        start,
        end,
        vec![long.clone()],
    );
    std::thread::sleep(Duration::from_millis(2_500));
    app.write(Stdout, format!("{}\n", &long[2_100..]));
    ledger.audit(&mut app, 3, "after");

    give_time_to_ship(&daemon, &ledger.all(), Duration::from_secs(2));
    let stopped = daemon.stop_cleanly();
    assert_promise(&stopped.stdout, &ledger, "");
}

// =====================================================================================
// released files with records in flight
// =====================================================================================

/// A rotated file found at startup (`writer_gone`) is read and let go in one loop turn:
/// `let_go_of_rotated` runs before `publish`, so `Checkpoints::seen` never records its new
/// size, and `release` marks the entry `done` while its records are still in flight (the
/// output is stalled). The saved entry says offset A, size A (the size of the previous run),
/// done. auditrail crashes; the kubelet deletes the rotated file. At the next start
/// `resume_rotated` reports a gone file only if `!done || offset < size`: neither holds, so
/// the unconfirmed records of the rotated file are lost without a gap record.
#[test]
fn a_released_file_with_records_in_flight_then_deleted_is_lost_without_a_gap() {
    let dir = tempdir();
    let (pod, pattern) = pod_dir(dir.path());
    let config = config_for(dir.path(), &pattern, "");
    let mut app = Kubelet::new(&pod).max_files(2);
    app.write_ordinary(Stdout, 1);
    let daemon = Daemon::start(&config);
    wait_for_checkpoint(dir.path(), &app.path(), app.len());
    let first = daemon.stop_cleanly();

    let mut ledger = Ledger::default();
    ledger.audit(
        &mut app,
        1_000,
        "K's tail, written while down, then rotated",
    );
    app.rotate();
    ledger.audit(&mut app, 5, "V, the live log");

    // Second run: the output is stuck from the start.
    let mut daemon = Daemon::start(&config);
    stall(&daemon);
    daemon.wait_for_log("rotated file read to its end; closed");
    std::thread::sleep(Duration::from_millis(600)); // a few checkpoint saves
    let saved = saved_checkpoints(dir.path());
    let raw = fs::read_to_string(dir.path().join("checkpoints/checkpoints.json")).unwrap();
    let second = daemon.kill();

    app.rotate(); // the kubelet deletes K (max_files 2); V -> 0.log.<ts>
    ledger.audit(&mut app, 5, "W, the live log at the third start");
    let daemon = Daemon::start(&config);
    wait_for_checkpoint(dir.path(), &app.path(), app.len());
    give_time_to_ship(&daemon, &ledger.all(), SOON);
    let third = daemon.stop_cleanly();
    assert_promise(
        &concat(&[&first.stdout, &second.stdout, &third.stdout]),
        &ledger,
        &format!("; checkpoints saved while K's records were in flight: {saved:?}\n{raw}"),
    );
}

// =====================================================================================
// truncation
// =====================================================================================

/// An application truncates its own log and writes it again from its banner while the
/// records of the old content are in flight (the output is stalled). `read_again_from_start`
/// unwatches the key and `start_file` identifies the file again: same device, inode and
/// first line, so the *same* `FileKey`; `Checkpoints::watch` replaces the slot, dropping the
/// old `Progress` whose records are unconfirmed (the design keeps such entries "while
/// records are in flight" — but only under another key). auditrail crashes: the saved
/// checkpoint is the new content's, the old records are gone from the file, and no gap
/// record reports them.
#[test]
fn a_rewrite_with_the_same_banner_orphans_records_in_flight() {
    let dir = tempdir();
    let (pod, pattern) = pod_dir(dir.path());
    let config = config_for(dir.path(), &pattern, "");
    let mut app = Kubelet::new(&pod).raw();
    let mut ledger = Ledger::default();
    app.write(Stdout, BANNER);
    let daemon = Daemon::start(&config);
    stall(&daemon);
    wait_for_checkpoint(dir.path(), &app.path(), app.len());
    ledger.audit(&mut app, 1_000, "old content, in flight");
    std::thread::sleep(Duration::from_millis(800));

    let new = app.truncate_and_rewrite(|app| {
        app.write(Stdout, BANNER);
        app.write_audit(Stdout, 10, LEN)
    });
    ledger.note(
        "new content",
        app.dir(),
        BANNER.len() as u64,
        app.len(),
        new,
    );
    std::thread::sleep(Duration::from_millis(800));
    let saved = saved_checkpoints(dir.path());
    let first = daemon.kill();

    let daemon = Daemon::start(&config);
    wait_for_checkpoint(dir.path(), &app.path(), app.len());
    give_time_to_ship(&daemon, &ledger.all(), Duration::from_secs(2));
    let second = daemon.stop_cleanly();
    assert_promise(
        &concat(&[&first.stdout, &second.stdout]),
        &ledger,
        &format!("; saved before the crash: {saved:?}"),
    );
}

/// auditrail is down while an application truncates its own log and starts it again with
/// its banner. At restart the file has the known key (same device, inode, first line);
/// `Checkpoints::resume` finds that the tail before the saved offset no longer holds and
/// returns `None` ("reading it from its start", a warning), and `start_file` claims the entry
/// with `watch`. The bytes written after the checkpoint and truncated away unread are never
/// reported: no gap. (Live, `read_again_from_start` reports such a range as `truncated`.)
#[test]
fn a_truncation_while_down_of_a_log_with_a_banner_is_not_reported() {
    let dir = tempdir();
    let (pod, pattern) = pod_dir(dir.path());
    let config = config_for(dir.path(), &pattern, "");
    let mut app = Kubelet::new(&pod).raw();
    let mut ledger = Ledger::default();
    app.write(Stdout, BANNER);
    ledger.audit(&mut app, 10, "read before the crash");
    let daemon = Daemon::start(&config);
    give_time_to_ship(&daemon, &ledger.all(), SOON);
    wait_for_checkpoint(dir.path(), &app.path(), app.len());
    let first = daemon.kill();

    ledger.audit(&mut app, 100, "written while down, then truncated away");
    let new = app.truncate_and_rewrite(|app| {
        app.write(Stdout, BANNER);
        app.write_audit(Stdout, 5, LEN)
    });
    ledger.note(
        "new content",
        app.dir(),
        BANNER.len() as u64,
        app.len(),
        new,
    );

    let daemon = Daemon::start(&config);
    wait_for_checkpoint(dir.path(), &app.path(), app.len());
    give_time_to_ship(&daemon, &ledger.all(), Duration::from_secs(2));
    let second = daemon.stop_cleanly();
    assert_promise(&concat(&[&first.stdout, &second.stdout]), &ledger, "");
}

/// Control for the test above: the same truncation while down, of a CRI log (whose new first
/// line differs: a new timestamp). The old entry stays unread and `resume_rotated` reports it
/// as `deleted`.
#[test]
fn held_a_truncation_while_down_of_a_cri_log_is_reported() {
    let dir = tempdir();
    let (pod, pattern) = pod_dir(dir.path());
    let config = config_for(dir.path(), &pattern, "");
    let mut app = Kubelet::new(&pod);
    let mut ledger = Ledger::default();
    ledger.audit(&mut app, 10, "read before the crash");
    let daemon = Daemon::start(&config);
    give_time_to_ship(&daemon, &ledger.all(), SOON);
    wait_for_checkpoint(dir.path(), &app.path(), app.len());
    let first = daemon.kill();

    ledger.audit(&mut app, 100, "written while down, then truncated away");
    app.truncate();
    ledger.audit(&mut app, 5, "new content");

    let daemon = Daemon::start(&config);
    wait_for_checkpoint(dir.path(), &app.path(), app.len());
    give_time_to_ship(&daemon, &ledger.all(), Duration::from_secs(2));
    let second = daemon.stop_cleanly();
    assert_promise(&concat(&[&first.stdout, &second.stdout]), &ledger, "");
}

/// logrotate's copytruncate between two looks of auditrail (the daemon is frozen with
/// SIGSTOP for the moment, as a CPU-throttled sidecar may be): records appended, the log
/// copied to `0.log.<ts>` and truncated, new records appended. `read_turn` sees the file
/// shorter than its position and `read_again_from_start` reports `[position, len_seen)`;
/// but `len_seen` is the length at the end of the last read turn, which is the position, so
/// no gap is reported for the records appended after it. They are only in the copy, which
/// nothing reads (`*.log` does not match it). Lost without a gap, for as long as auditrail
/// runs.
#[test]
fn a_copy_truncate_between_two_polls_is_not_reported() {
    let dir = tempdir();
    let (pod, pattern) = pod_dir(dir.path());
    let config = config_for(dir.path(), &pattern, "");
    let mut app = Kubelet::new(&pod);
    let mut ledger = Ledger::default();
    ledger.audit(&mut app, 10, "read before");
    let daemon = Daemon::start(&config);
    give_time_to_ship(&daemon, &ledger.all(), SOON);
    wait_for_checkpoint(dir.path(), &app.path(), app.len());

    signal(&daemon, "STOP");
    ledger.audit(&mut app, 100, "appended, then copied away and truncated");
    app.copy_truncate();
    ledger.audit(&mut app, 5, "after the truncation");
    signal(&daemon, "CONT");

    give_time_to_ship(&daemon, &ledger.all(), Duration::from_secs(3));
    let stopped = daemon.stop_cleanly();
    assert_promise(
        &stopped.stdout,
        &ledger,
        &format!("; truncations = {}", stopped.stopped_stat("truncations")),
    );
}

/// An application rewrites its log in place with content of exactly the same length (the
/// same banner, the same number of records of the same size). `read_turn` only compares the
/// tail before the read position when the file is *longer* than the position
/// (`len > position && !tail.holds`): at equal length nothing is noticed, nothing is read,
/// and the new records are not shipped while auditrail runs (not even by the drain).
#[test]
fn an_equal_length_rewrite_is_not_noticed() {
    let dir = tempdir();
    let (pod, pattern) = pod_dir(dir.path());
    let config = config_for(dir.path(), &pattern, "");
    let mut app = Kubelet::new(&pod).raw();
    let mut ledger = Ledger::default();
    app.write(Stdout, BANNER);
    ledger.audit(&mut app, 10, "first content");
    let daemon = Daemon::start(&config);
    give_time_to_ship(&daemon, &ledger.all(), SOON);
    wait_for_checkpoint(dir.path(), &app.path(), app.len());

    let old_len = app.len();
    let new = app.truncate_and_rewrite(|app| {
        app.write(Stdout, BANNER);
        app.write_audit(Stdout, 10, LEN)
    });
    assert_eq!(app.len(), old_len, "the rewrite has the same length");
    ledger.note(
        "rewritten content",
        app.dir(),
        BANNER.len() as u64,
        app.len(),
        new,
    );

    give_time_to_ship(&daemon, &ledger.all(), Duration::from_secs(3));
    let stopped = daemon.stop_cleanly();
    assert_promise(&stopped.stdout, &ledger, "");
}

// =====================================================================================
// rotation windows and names
// =====================================================================================

/// auditrail restarts inside the kubelet's rotation window: `0.log` has been renamed to
/// `0.log.<ts>`, the runtime has not reopened yet and still writes to the renamed file.
/// `resume_rotated` finds the known file among the siblings and marks it `writer_gone`, so it
/// is let go as soon as it is read to its end (no `rotate_wait`). What the runtime writes to
/// it afterwards, before its reopen, is never read, and its entry is `done`: lost without a
/// gap.
#[test]
fn a_restart_inside_the_rename_reopen_window_loses_the_last_writes() {
    let dir = tempdir();
    let (pod, pattern) = pod_dir(dir.path());
    let config = config_for(dir.path(), &pattern, "");
    let mut app = Kubelet::new(&pod);
    let mut ledger = Ledger::default();
    ledger.audit(&mut app, 10, "read before the crash");
    let daemon = Daemon::start(&config);
    give_time_to_ship(&daemon, &ledger.all(), SOON);
    wait_for_checkpoint(dir.path(), &app.path(), app.len());
    let first = daemon.kill();

    ledger.audit(&mut app, 10, "written while down");
    app.rename_for_rotation(); // no reopen yet
    let daemon = Daemon::start(&config);
    // Longer than rotate_wait (1 s): a file let go on quiet alone would be closed by now.
    std::thread::sleep(Duration::from_secs(3));
    ledger.audit(
        &mut app,
        20,
        "written to the renamed file before the reopen",
    );
    app.reopen();
    ledger.audit(&mut app, 10, "the new 0.log");

    give_time_to_ship(&daemon, &ledger.all(), SOON);
    let second = daemon.stop_cleanly();
    assert_promise(&concat(&[&first.stdout, &second.stdout]), &ledger, "");
}

/// The kubelet names rotated files after its wall clock (`20060102-150405`); a clock stepped
/// back (NTP correction, a VM restored) gives a newer rotated file an older name. While
/// auditrail is down: the known log K is rotated (and gzipped at the next rotation), the next
/// log U is rotated with a name from before K's. `rotation::siblings` orders by name, so U
/// comes before K; `resume_rotated` reads unknown siblings only after the newest known one,
/// so U is skipped: lost without a gap.
#[test]
fn a_clock_stepped_back_hides_a_rotated_log_at_restart() {
    let dir = tempdir();
    let (pod, pattern) = pod_dir(dir.path());
    let config = config_for(dir.path(), &pattern, "");
    let mut app = Kubelet::new(&pod);
    let mut ledger = Ledger::default();
    ledger.audit(&mut app, 10, "read before the crash");
    let daemon = Daemon::start(&config);
    give_time_to_ship(&daemon, &ledger.all(), SOON);
    wait_for_checkpoint(dir.path(), &app.path(), app.len());
    let first = daemon.kill();

    ledger.audit(&mut app, 50, "K's tail, written while down");
    let k = app.rotate(); // 0.log.20261123-120010
    ledger.audit(&mut app, 50, "U, rotated under a stepped-back clock");
    // The kubelet's next rotateLog, an hour back in time: gzip K, rename 0.log.
    let gz = PathBuf::from(format!("{}.gz", k.display()));
    fs::write(&gz, gzip_bytes(&fs::read(&k).unwrap())).unwrap();
    fs::remove_file(&k).unwrap();
    fs::rename(app.path(), app.dir().join("0.log.20261123-110010")).unwrap();
    app.reopen();
    ledger.audit(&mut app, 10, "V, the live log");

    let daemon = Daemon::start(&config);
    wait_for_checkpoint(dir.path(), &app.path(), app.len());
    give_time_to_ship(&daemon, &ledger.all(), SOON);
    let second = daemon.stop_cleanly();
    assert_promise(
        &concat(&[&first.stdout, &second.stdout]),
        &ledger,
        &format!("; rotated files: {:?}", app.rotated()),
    );
}

/// docker's json-file driver with `compress`: at rotation `<f>` is renamed `<f>.1` and a
/// goroutine writes `<f>.1.gz` in place (`O_TRUNC`, no `.tmp`), removing `<f>.1` only when it
/// is complete (moby `loggerutils/logfile.go` compressFile). auditrail restarts while the
/// `.gz` is half written: it reads the known `<f>.1` from its checkpoint, and the half `.gz`
/// as an unknown sibling after it, from its start. The compression then completes, and
/// everything must be shipped: the records of `<f>.1` and those of the live log.
///
/// What happens: reading the half `.gz` fails ("incomplete deflate stream", retried every
/// poll), so it is never `read_to_end` and the live log waits behind it
/// (`waits_for_an_older_file`): nothing of the live log ships. Once docker finishes the
/// `.gz`, the next `MultiGzDecoder::read` on the handle that already failed never returns
/// (flate2 1.1.11 spins at 100 % CPU; reproduced outside auditrail): the tailer thread hangs
/// in `read_turn`, no file is read any more, and SIGTERM cannot stop it (the drain's deadline
/// is only checked between reads), so only SIGKILL ends the process.
#[test]
fn docker_compression_in_progress_at_restart() {
    let dir = tempdir();
    let config = run_config(dir.path(), "  drain_timeout: 2s\n");
    let logs = dir.path().join("logs");
    let live = logs.join("4f1c2d3e5a6b-json.log");
    let mut n = 0;
    let mut docker_write = |path: &Path, count: usize| -> (Vec<String>, u64, u64) {
        let start = fs::metadata(path).map_or(0, |m| m.len());
        let mut text = String::new();
        let mut records = Vec::new();
        for _ in 0..count {
            let r = support::kubelet::audit_record("docker", n, LEN);
            n += 1;
            let line = serde_json::json!({"log": format!("{r}\n"), "stream": "stdout", "time": "2026-11-23T12:00:00.123456789Z"});
            text.push_str(&format!("{line}\n"));
            records.push(r);
        }
        append(path, &text);
        (records, start, fs::metadata(path).unwrap().len())
    };
    let mut ledger = Ledger::default();
    let (r, s, e) = docker_write(&live, 10);
    ledger.note("read before the crash", &logs, s, e, r);
    let daemon = Daemon::start(&config);
    give_time_to_ship(&daemon, &ledger.all(), SOON);
    wait_for_checkpoint(dir.path(), &live, fs::metadata(&live).unwrap().len());
    let first = daemon.kill();

    let (r, s, e) = docker_write(&live, 60);
    ledger.note("written while down, rotated to .1", &logs, s, e, r);
    let one = logs.join("4f1c2d3e5a6b-json.log.1");
    fs::rename(&live, &one).unwrap();
    fs::File::create(&live).unwrap();
    let (r, s, e) = docker_write(&live, 10);
    ledger.note("the new live log", &logs, s, e, r);
    let gz = gzip_bytes(&fs::read(&one).unwrap());
    let gz_path = logs.join("4f1c2d3e5a6b-json.log.1.gz");
    let half = gz.len() / 2;
    fs::write(&gz_path, &gz[..half]).unwrap();

    let daemon = Daemon::start(&config);
    std::thread::sleep(Duration::from_millis(1_500));
    OpenOptions::new()
        .append(true)
        .open(&gz_path)
        .unwrap()
        .write_all(&gz[half..])
        .unwrap();
    fs::remove_file(&one).unwrap();
    let (r, s, e) = docker_write(&live, 10);
    ledger.note("the live log after the compression", &logs, s, e, r);

    give_time_to_ship(&daemon, &ledger.all(), SOON);
    let (exited, second) = match daemon.terminate_within(Duration::from_secs(4)) {
        Ok(stopped) => (true, stopped),
        Err(killed) => (false, killed),
    };
    let stderr = second.stderr.clone();
    assert_promise(
        &concat(&[&first.stdout, &second.stdout]),
        &ledger,
        &format!(
            "; exited on SIGTERM within 4 s: {exited}; read failures logged: {}, first: {:?}; \
             last log line: {:?}",
            log_lines(&stderr, "read failed").len(),
            log_lines(&stderr, "read failed").first(),
            stderr.last()
        ),
    );
    assert!(
        exited,
        "auditrail did not exit on SIGTERM (drain_timeout is 2 s)"
    );
}

/// A compressed rotated file that is cut short (the kubelet's compressLog neither fsyncs
/// the `.gz` nor keeps the original: a node crash can leave a truncated `.gz` behind). At
/// restart it is matched to its checkpoint by its first line and read from there; reading
/// fails at the cut ("read failed; retrying at the next poll", forever), so it is never read
/// to its end: no gap reports its lost tail, it is never let go, and the container's live log
/// waits behind it (`waits_for_an_older_file`) for as long as auditrail runs: nothing written
/// to the live log ships.
#[test]
fn a_truncated_gz_of_a_known_file_blocks_the_live_log() {
    let dir = tempdir();
    let (pod, pattern) = pod_dir(dir.path());
    let config = config_for(dir.path(), &pattern, "");
    let mut app = Kubelet::new(&pod);
    let mut ledger = Ledger::default();
    ledger.audit(&mut app, 10, "read before the crash");
    let daemon = Daemon::start(&config);
    give_time_to_ship(&daemon, &ledger.all(), SOON);
    wait_for_checkpoint(dir.path(), &app.path(), app.len());
    let first = daemon.kill();

    ledger.audit(&mut app, 200, "K's tail, in the truncated gz");
    app.rotate();
    ledger.audit(&mut app, 10, "U, rotated");
    app.rotate(); // gzips K
    ledger.audit(&mut app, 10, "the live log");
    let gz = app.rotated()[0].clone();
    assert!(gz.to_string_lossy().ends_with(".gz"));
    let bytes = fs::read(&gz).unwrap();
    fs::write(&gz, &bytes[..bytes.len() / 2]).unwrap();

    let daemon = Daemon::start(&config);
    give_time_to_ship(&daemon, &ledger.all(), SOON);
    let second = daemon.stop_cleanly();
    assert_promise(
        &concat(&[&first.stdout, &second.stdout]),
        &ledger,
        &format!(
            "; read failures logged: {}",
            log_lines(&second.stderr, "read failed").len()
        ),
    );
}

/// Stricter than the promise (the loss *is* reported), but a user following the kubelet's
/// symlinks (`/var/log/containers/*.log`, which the tailer supports) loses records that are
/// still on disk: checkpoints keep the matched (symlink) path, and after a restart
/// `rotation::siblings` looks for `<name>.log.*` next to the symlink, where the kubelet
/// never puts rotated files (they are in `/var/log/pods/.../<container>/`). The unread tail
/// of the rotated file is reported `deleted` instead of being read.
#[test]
fn a_restart_following_symlinks_reports_a_readable_rotated_tail_as_lost() {
    let dir = tempdir();
    let (pod, _) = pod_dir(dir.path());
    let links = dir.path().join("containers");
    fs::create_dir_all(&links).unwrap();
    let mut app = Kubelet::new(&pod);
    let link = links.join(
        "api-7d9f8_shop_app-4f1c2d3e5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d.log",
    );
    std::os::unix::fs::symlink(app.path(), &link).unwrap();
    let config = config_for(dir.path(), &links.join("*.log"), "");
    // Gaps name the symlink (the path auditrail follows): the ledger notes that directory.
    let mut ledger = Ledger::default();
    let write = |app: &mut Kubelet, ledger: &mut Ledger, n: usize, what: &str| {
        let start = app.written_len();
        let records = app.write_audit(Stdout, n, LEN);
        ledger.note(what, &links, start, app.written_len(), records.clone());
        records
    };
    write(&mut app, &mut ledger, 10, "read before the crash");
    let daemon = Daemon::start(&config);
    give_time_to_ship(&daemon, &ledger.all(), SOON);
    // Checkpoints keep the file's own path (symlinks resolved): its rotated siblings are there.
    wait_for_checkpoint(dir.path(), &app.path(), app.len());
    let first = daemon.kill();

    let tail = write(
        &mut app,
        &mut ledger,
        50,
        "written while down, then rotated",
    );
    app.rotate();
    write(&mut app, &mut ledger, 10, "the new log");
    let daemon = Daemon::start(&config);
    wait_for_checkpoint(dir.path(), &app.path(), app.len());
    give_time_to_ship(&daemon, &ledger.all(), Duration::from_secs(2));
    let second = daemon.stop_cleanly();
    let shipped = concat(&[&first.stdout, &second.stdout]);
    assert_promise(&shipped, &ledger, "");
    let missing = ids_of(&tail).difference(&shipped_ids(&shipped)).count();
    assert_eq!(
        missing,
        0,
        "{missing} records still on disk in {} were reported lost instead of read; gaps: {:?}",
        app.rotated()[0].display(),
        gaps(&shipped)
    );
}

// =====================================================================================
// attacks the code withstood
// =====================================================================================

/// The kubelet dies in the middle of compressLog: `0.log.<ts>.tmp` is half written next to
/// the uncompressed `0.log.<ts>`. At restart the `.tmp` is left out and the known rotated file
/// is read from its checkpoint.
#[test]
fn held_a_kubelet_gzip_tmp_at_restart() {
    let dir = tempdir();
    let (pod, pattern) = pod_dir(dir.path());
    let config = config_for(dir.path(), &pattern, "");
    let mut app = Kubelet::new(&pod);
    let mut ledger = Ledger::default();
    ledger.audit(&mut app, 10, "read before the crash");
    let daemon = Daemon::start(&config);
    give_time_to_ship(&daemon, &ledger.all(), SOON);
    wait_for_checkpoint(dir.path(), &app.path(), app.len());
    let first = daemon.kill();

    ledger.audit(&mut app, 50, "K's tail, written while down");
    let k = app.rotate();
    ledger.audit(&mut app, 10, "the new log");
    let gz = gzip_bytes(&fs::read(&k).unwrap());
    fs::write(format!("{}.tmp", k.display()), &gz[..gz.len() / 2]).unwrap();

    let daemon = Daemon::start(&config);
    wait_for_checkpoint(dir.path(), &app.path(), app.len());
    give_time_to_ship(&daemon, &ledger.all(), SOON);
    let second = daemon.stop_cleanly();
    assert_promise(&concat(&[&first.stdout, &second.stdout]), &ledger, "");
}

/// A loss reported once is not reported again: after the gap record of a deleted file was
/// confirmed and saved, a further restart ships no gap record.
#[test]
fn held_a_gap_is_reported_once() {
    let dir = tempdir();
    let (pod, pattern) = pod_dir(dir.path());
    let config = config_for(dir.path(), &pattern, "");
    let mut app = Kubelet::new(&pod).max_files(2);
    let mut ledger = Ledger::default();
    ledger.audit(&mut app, 10, "read before the crash");
    let daemon = Daemon::start(&config);
    give_time_to_ship(&daemon, &ledger.all(), SOON);
    wait_for_checkpoint(dir.path(), &app.path(), app.len());
    let first = daemon.kill();

    ledger.audit(&mut app, 100, "lost with the file");
    app.rotate();
    ledger.audit(&mut app, 10, "kept");
    app.rotate(); // deletes the first rotated file
    ledger.audit(&mut app, 10, "live");

    let mut daemon = Daemon::start(&config);
    wait_for_checkpoint(dir.path(), &app.path(), app.len());
    daemon.wait_for_within("a gap record", SOON, |lines| {
        lines.iter().any(|l| is_gap(l))
    });
    give_time_to_ship(&daemon, &ledger.all(), Duration::from_secs(2));
    let second = daemon.stop_cleanly();
    assert_promise(&concat(&[&first.stdout, &second.stdout]), &ledger, "");

    let daemon = Daemon::start(&config);
    std::thread::sleep(Duration::from_millis(1_500));
    let third = daemon.stop_cleanly();
    assert_eq!(
        gaps(&third.stdout),
        Vec::new(),
        "the gap was confirmed and saved in the second run"
    );
}

/// The checkpoint cannot be saved (its temporary file's name is taken by a directory, so
/// every save fails, even as root). Records keep shipping; after a crash auditrail resumes
/// from the last checkpoint that was saved and ships again: duplicates, nothing lost.
#[test]
fn held_checkpoints_that_cannot_be_saved_lose_nothing() {
    let dir = tempdir();
    let (pod, pattern) = pod_dir(dir.path());
    let config = config_for(dir.path(), &pattern, "");
    let mut app = Kubelet::new(&pod);
    let mut ledger = Ledger::default();
    ledger.audit(&mut app, 10, "before saves fail");
    let daemon = Daemon::start(&config);
    give_time_to_ship(&daemon, &ledger.all(), SOON);
    wait_for_checkpoint(dir.path(), &app.path(), app.len());
    let blocker = dir.path().join("checkpoints/checkpoints.json.tmp");
    fs::create_dir(&blocker).unwrap();
    ledger.audit(&mut app, 20, "while saves fail");
    ledger.audit(&mut app, 20, "more while saves fail");
    give_time_to_ship(&daemon, &ledger.all(), SOON);
    std::thread::sleep(Duration::from_millis(300));
    let first = daemon.kill();

    fs::remove_dir(&blocker).unwrap();
    ledger.audit(&mut app, 10, "while down");
    app.rotate();
    ledger.audit(&mut app, 10, "new log");
    let daemon = Daemon::start(&config);
    wait_for_checkpoint(dir.path(), &app.path(), app.len());
    give_time_to_ship(&daemon, &ledger.all(), SOON);
    let second = daemon.stop_cleanly();
    assert_promise(&concat(&[&first.stdout, &second.stdout]), &ledger, "");
}

/// A crash loop under load: a writer writes bursts of records and the kubelet rotates every
/// 600 ms (`containerLogMaxFiles` 5: compression, and after four rotations deletion), while
/// auditrail is killed with SIGKILL and restarted eight times at fixed intervals, down for
/// 250 ms each time. Every record must be shipped, or reported by a gap.
#[test]
fn held_a_crash_loop_during_rotations() {
    let dir = tempdir();
    let (pod, pattern) = pod_dir(dir.path());
    let config = config_for(dir.path(), &pattern, "");
    let app = Kubelet::new(&pod);
    let writer = std::thread::spawn(move || {
        let mut app = app;
        let mut ledger = Ledger::default();
        for i in 0..60 {
            ledger.audit(&mut app, 20, &format!("burst {i}"));
            std::thread::sleep(Duration::from_millis(100));
            if i % 6 == 5 {
                app.rotate();
            }
        }
        ledger.audit(&mut app, 20, "last burst");
        (app, ledger)
    });
    let mut shipped = Vec::new();
    for _ in 0..8 {
        let daemon = Daemon::start(&config);
        std::thread::sleep(Duration::from_millis(500));
        shipped.extend(daemon.kill().stdout);
        std::thread::sleep(Duration::from_millis(250));
    }
    let (app, ledger) = writer.join().unwrap();
    let daemon = Daemon::start(&config);
    wait_for_checkpoint(dir.path(), &app.path(), app.len());
    give_time_to_ship(&daemon, &ledger.all(), SOON);
    shipped.extend(daemon.stop_cleanly().stdout);
    assert_promise(&shipped, &ledger, "");
}

// =====================================================================================
// idle (issue 16): a tailer that sleeps until a filesystem event
// =====================================================================================

/// How long `written` takes to be shipped by `daemon` (at most `within`).
fn time_to_ship(daemon: &Daemon, written: &[String], within: Duration) -> Duration {
    let want = ids_of(written);
    let start = Instant::now();
    while start.elapsed() < within && !shipped_ids(&daemon.stdout_lines()).is_superset(&want) {
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

/// Following `/var/log/containers/*.log` (symlinks into `/var/log/pods`), only the watch on
/// each followed file announces its writes: the directory watched holds the links, not the
/// files. notify keeps its watches by path, and every file the link pointed to was watched
/// under the link's path. When the kubelet's next rotation gzips and deletes the previous
/// rotated file, its `IN_DELETE_SELF` makes notify remove "the watch of that path", which is
/// now the live file's: its rename goes unannounced, and so do the writes to the new log. A
/// record then waits for the 5 s fallback instead of arriving at once (it took 50 ms,
/// `poll_interval`, before issue 16).
#[test]
fn a_rotated_file_deleted_takes_the_live_files_watch_with_it() {
    let dir = tempdir();
    let (pod, _) = pod_dir(dir.path());
    let links = dir.path().join("containers");
    fs::create_dir_all(&links).unwrap();
    let mut app = Kubelet::new(&pod);
    let link = links.join("api-7d9f8_shop_app-4f1c2d3e5a6b.log");
    std::os::unix::fs::symlink(app.path(), &link).unwrap();
    let config = config_for(dir.path(), &links.join("*.log"), "");
    let mut ledger = Ledger::default();
    let mut write = |app: &mut Kubelet, n: usize, what: &str| {
        let start = app.written_len();
        let records = app.write_audit(Stdout, n, LEN);
        ledger.note(what, &links, start, app.written_len(), records.clone());
        records
    };
    let mut daemon = Daemon::start(&config);
    let first = write(&mut app, 1, "first log");
    give_time_to_ship(&daemon, &first, SOON);
    app.rotate();
    let second = write(&mut app, 1, "second log");
    give_time_to_ship(&daemon, &second, SOON);
    // rotate_wait (1 s) over: the first file is let go (closed, still watched by the kernel).
    daemon.wait_for_log("rotated file read to its end; closed");
    // The kubelet's next rotation gzips the first rotated file and deletes it, then renames.
    app.rotate();
    // Its rotated file let go too; the tailer has nothing left to wait for but events.
    let start = Instant::now();
    while log_lines(
        &daemon.stderr_lines(),
        "rotated file read to its end; closed",
    )
    .len()
        < 2
    {
        assert!(
            start.elapsed() < SOON * 2,
            "the second rotated file was never let go"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let mut slowest = Duration::ZERO;
    for i in 0..3 {
        let records = write(&mut app, 1, &format!("third log, write {i}"));
        slowest = slowest.max(time_to_ship(&daemon, &records, Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(300));
    }
    let stopped = daemon.stop_cleanly();
    assert_promise(&stopped.stdout, &ledger, "");
    assert!(
        slowest < Duration::from_millis(1500),
        "a record written to the live log took {slowest:?} to ship (poll_interval 50 ms)"
    );
}

/// Checkpoints are written only when their content changed (issue 16). One deleted or
/// replaced (its directory emptied and made again: a volume restored, a node agent cleaning)
/// while nothing moves is not written again for up to 5 minutes; a restart meanwhile finds
/// none and reads every log from its start (or, with `read_from: end`, from its end:
/// whatever was written while auditrail was down is skipped without a gap).
#[test]
fn a_deleted_checkpoint_file_is_not_written_again_while_nothing_moves() {
    let dir = tempdir();
    let (pod, pattern) = pod_dir(dir.path());
    let config = config_for(dir.path(), &pattern, "");
    let mut app = Kubelet::new(&pod);
    let mut ledger = Ledger::default();
    ledger.audit(&mut app, 10, "before");
    let daemon = Daemon::start(&config);
    give_time_to_ship(&daemon, &ledger.all(), SOON);
    wait_for_checkpoint(dir.path(), &app.path(), app.len());
    let file = dir.path().join("checkpoints/checkpoints.json");
    fs::remove_file(&file).unwrap();
    // checkpoint_interval is 100 ms: twenty saves' time.
    std::thread::sleep(Duration::from_secs(2));
    let rewritten = file.exists();
    let stopped = daemon.stop_cleanly();
    assert_promise(&stopped.stdout, &ledger, "");
    assert!(
        rewritten,
        "checkpoints.json deleted 2 s ago was not written again (checkpoint_interval 100ms)"
    );
}

/// A container directory made while auditrail runs (a new container of the pod): notify
/// watches it only once it has handled its creation, and the tailer's scan for that event
/// may come before the runtime created the log in it. Its first records would then wait for
/// the next event or the 5 s fallback scan (held: the log's creation comes after notify
/// watches the directory, 8 of 8 times).
#[test]
fn held_a_container_directory_made_while_running_is_read_at_once() {
    let dir = tempdir();
    let (pod, pattern) = pod_dir(dir.path());
    let config = config_for(dir.path(), &pattern, "");
    let mut app = Kubelet::new(&pod);
    let mut ledger = Ledger::default();
    ledger.audit(&mut app, 1, "app");
    let daemon = Daemon::start(&config);
    give_time_to_ship(&daemon, &ledger.all(), SOON);
    let mut slowest = Duration::ZERO;
    for i in 0..8 {
        // Quiet: the tailer sleeps on events.
        std::thread::sleep(Duration::from_millis(700));
        let mut c = Kubelet::for_container(&pod, &format!("sidecar-{i}"));
        let records = ledger.audit(&mut c, 1, &format!("container {i}"));
        slowest = slowest.max(time_to_ship(&daemon, &records, Duration::from_secs(10)));
    }
    let stopped = daemon.stop_cleanly();
    assert_promise(&stopped.stdout, &ledger, "");
    assert!(
        slowest < Duration::from_millis(1500),
        "the first record of a new container took {slowest:?} to ship"
    );
}
