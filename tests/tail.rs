//! `auditrail run` following real files while they are written, rotated, truncated, and while
//! auditrail itself is stopped or killed. Every test compares what was written with what was
//! printed on stdout (the default output), record by record.
// Test code: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::path::Path;
use std::time::Duration;

use support::*;

/// Appends records `from..to` of `tag` to `path`, each after an ordinary line, and returns
/// the records' texts.
fn write_records(path: &Path, tag: &str, from: usize, to: usize) -> Vec<String> {
    let mut text = String::new();
    let mut records = Vec::new();
    for n in from..to {
        text.push_str(&ordinary_line(n));
        text.push('\n');
        let record = audit_line(tag, n);
        text.push_str(&record);
        text.push('\n');
        records.push(record);
    }
    append(path, text);
    records
}

fn texts(lines: &[String]) -> Vec<String> {
    lines.iter().map(|l| record_text(l).to_owned()).collect()
}

/// Asserts that `got` holds each of `want` exactly once and nothing else.
fn assert_exactly_once(got: &[String], want: &[String]) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for t in got {
        *counts.entry(t).or_default() += 1;
    }
    let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "records shipped more than once: {repeated:?}"
    );
    let got: BTreeSet<&str> = counts.keys().copied().collect();
    let want: BTreeSet<&str> = want.iter().map(String::as_str).collect();
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing: {missing:?}\nextra: {extra:?}"
    );
}

fn len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

#[test]
fn every_record_arrives_once_across_a_rename_rotation() {
    let dir = tempdir();
    let config = run_config(dir.path(), "");
    let log = dir.path().join("logs/0.log");
    let rotated = dir.path().join("logs/0.log.20261123-120000");
    let mut written = write_records(&log, "rotation", 0, 10);

    let mut daemon = Daemon::start(&config);
    daemon.wait_for_records(10);
    // kubelet renames the log; the runtime keeps writing to the file it has open...
    fs::rename(&log, &rotated).unwrap();
    daemon.wait_for_log("rotated away");
    written.extend(write_records(&rotated, "rotation", 10, 15));
    // ...until it reopens `0.log`, a new file.
    written.extend(write_records(&log, "rotation", 15, 25));
    daemon.wait_for_records(25);
    // Quiet: the new file is read to its end and the rotated one let go.
    wait_for_checkpoint(dir.path(), &log, len(&log));
    daemon.wait_for_log("rotated file read to its end");

    let stopped = daemon.terminate();
    assert!(stopped.status.success(), "{:?}", stopped.status);
    stopped.assert_stat_identities();
    assert_exactly_once(&texts(&stopped.stdout), &written);
    assert_eq!(stopped.stopped_stat("rotations"), 1);
    assert_eq!(stopped.stopped_stat("shipped"), 25);
    assert_eq!(stopped.stopped_stat("truncations"), 0);
    // The records of the new file start at its offset 0: it was read from its beginning.
    let first_new = stopped
        .stdout
        .iter()
        .find(|l| record_text(l) == audit_line("rotation", 15))
        .unwrap();
    let v = parse_line(first_new);
    assert_eq!(v["value"]["source"]["file"], log.to_str().unwrap());
    assert_eq!(
        v["value"]["source"]["offset"],
        ordinary_line(15).len() as u64 + 1
    );
}

#[test]
fn records_written_after_a_copy_truncate_arrive() {
    let dir = tempdir();
    let config = run_config(dir.path(), "");
    let log = dir.path().join("logs/0.log");
    let mut written = write_records(&log, "beforeTruncate", 0, 10);

    let mut daemon = Daemon::start(&config);
    daemon.wait_for_records(10);
    // logrotate's copytruncate: copy the file aside, then truncate it in place (same inode).
    fs::copy(&log, dir.path().join("logs/0.log.1")).unwrap();
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .unwrap();
    // Less than was there before, so the file is visibly shorter.
    written.extend(write_records(&log, "afterTruncate", 0, 3));
    daemon.wait_for_records(13);
    written.extend(write_records(&log, "afterTruncate", 3, 8));
    daemon.wait_for_records(18);
    wait_for_checkpoint(dir.path(), &log, len(&log));

    let stopped = daemon.terminate();
    assert!(stopped.status.success(), "{:?}", stopped.status);
    stopped.assert_stat_identities();
    assert_exactly_once(&texts(&stopped.stdout), &written);
    assert!(stopped.stopped_stat("truncations") >= 1);
    let first_after = stopped
        .stdout
        .iter()
        .find(|l| record_text(l) == audit_line("afterTruncate", 0))
        .unwrap();
    assert_eq!(
        parse_line(first_after)["value"]["source"]["offset"],
        ordinary_line(0).len() as u64 + 1,
        "the truncated file is read again from its start"
    );
}

#[test]
fn a_restart_resumes_where_the_last_run_stopped() {
    let dir = tempdir();
    let config = run_config(dir.path(), "");
    let log = dir.path().join("logs/0.log");

    let mut daemon = Daemon::start(&config);
    // The file appears after startup, as a container's first log does.
    let first = write_records(&log, "restart", 0, 30);
    daemon.wait_for_records(30);
    let stopped = daemon.terminate();
    assert_eq!(
        stopped.status.code(),
        Some(0),
        "{}",
        stopped.stderr.join("\n")
    );
    stopped.assert_stat_identities();
    assert_exactly_once(&texts(&stopped.stdout), &first);
    assert!(
        has_checkpoint(dir.path(), &log, len(&log)),
        "the checkpoint saved at shutdown covers everything shipped: {:?}",
        saved_checkpoints(dir.path())
    );

    // Written while auditrail is down.
    let second = write_records(&log, "restart", 30, 50);
    let mut daemon = Daemon::start(&config);
    daemon.wait_for_records(20);
    wait_for_checkpoint(dir.path(), &log, len(&log));
    let stopped = daemon.terminate();
    assert_eq!(stopped.status.code(), Some(0));
    stopped.assert_stat_identities();
    assert_exactly_once(&texts(&stopped.stdout), &second);
    assert_eq!(stopped.stopped_stat("shipped"), 20);
}

#[test]
fn after_a_sigkill_a_restart_loses_nothing_and_repeats_only_with_the_same_id() {
    let dir = tempdir();
    let config = run_config(dir.path(), "");
    let log = dir.path().join("logs/0.log");
    // 20,000 lines, one in ten an audit record.
    let lines = |from: usize, to: usize, written: &mut Vec<String>| -> String {
        let mut text = String::new();
        for n in from..to {
            let line = if n % 10 == 9 {
                let r = audit_line("killed", n);
                written.push(r.clone());
                r
            } else {
                ordinary_line(n)
            };
            text.push_str(&line);
            text.push('\n');
        }
        text
    };
    let mut head = Vec::new();
    append(&log, lines(0, 1_000, &mut head));

    let mut daemon = Daemon::start(&config);
    daemon.wait_for_records(head.len());
    wait_for_checkpoint(dir.path(), &log, len(&log));
    // The consumer of stdout gets stuck after a few more records: auditrail is in the middle
    // of shipping the rest of the file, with records written but not confirmed, when it is
    // killed.
    daemon.hold_stdout_after(head.len() + 5);
    let mut tail = Vec::new();
    append(&log, lines(1_000, 20_000, &mut tail));
    daemon.wait_for_records(head.len() + 5);
    let killed = daemon.kill();
    let first = killed.stdout;
    assert!(first.len() >= head.len() + 5, "{} records", first.len());

    let mut daemon = Daemon::start(&config);
    daemon.wait_for_records(tail.len());
    wait_for_checkpoint(dir.path(), &log, len(&log));
    let second = daemon.terminate();
    assert!(second.status.success());
    second.assert_stat_identities();

    // The second run resumed at the checkpoint: it ships the records the first did not
    // confirm, every one of them, and none of those it confirmed.
    assert_exactly_once(&texts(&second.stdout), &tail);
    let first_texts = texts(&first);
    assert_eq!(first_texts[..head.len()], head[..]);
    // Over both runs: every record, and a record shipped twice has the same id both times.
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    let mut repeated = 0;
    for line in first.iter().chain(&second.stdout) {
        let id = id_of(line);
        let text = record_text(line).to_owned();
        if let Some(earlier) = ids.insert(text.clone(), id.clone()) {
            assert_eq!(earlier, id, "a repeated record must keep its id: {text}");
            repeated += 1;
        }
    }
    assert!(repeated >= 5, "the unconfirmed records are shipped again");
    let all: Vec<String> = head.iter().chain(&tail).cloned().collect();
    assert_eq!(all.len(), 2_000);
    assert_exactly_once(&ids.into_keys().collect::<Vec<_>>(), &all);
}

#[test]
fn a_last_line_without_newline_waits_for_it() {
    let dir = tempdir();
    let config = run_config(dir.path(), "");
    let log = dir.path().join("logs/0.log");
    let complete = audit_line("complete", 0);
    append(&log, format!("{complete}\n"));

    let mut daemon = Daemon::start(&config);
    daemon.wait_for_records(1);
    wait_for_checkpoint(dir.path(), &log, len(&log));
    let complete_len = len(&log);

    // The application is half-way through writing a record.
    let partial = audit_line("partial", 1);
    let (a, b) = partial.split_at(partial.len() / 2);
    append(&log, a);
    std::thread::sleep(Duration::from_millis(500));
    append(&log, b);
    // Ten poll intervals: long enough for the tailer to have read the partial line.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        daemon.stdout_lines().len(),
        1,
        "a line without its newline is not shipped"
    );
    assert!(
        has_checkpoint(dir.path(), &log, complete_len),
        "the checkpoint stays before the unfinished line: {:?}",
        saved_checkpoints(dir.path())
    );

    append(&log, "\n");
    daemon.wait_for_records(2);
    wait_for_checkpoint(dir.path(), &log, len(&log));
    let stopped = daemon.terminate();
    assert!(stopped.status.success());
    stopped.assert_stat_identities();
    assert_eq!(texts(&stopped.stdout), [complete, partial]);
}

#[test]
fn read_from_end_skips_what_was_there_at_startup() {
    let dir = tempdir();
    let config = run_config(dir.path(), "  read_from: end\n");
    let log = dir.path().join("logs/0.log");
    write_records(&log, "old", 0, 5);
    let old_len = len(&log);

    let mut daemon = Daemon::start(&config);
    // Positioned at the end of the file.
    wait_for_checkpoint(dir.path(), &log, old_len);
    let mut written = write_records(&log, "new", 0, 3);
    daemon.wait_for_records(3);
    // A file that appears later (a rotation) is read from its beginning.
    let later = dir.path().join("logs/1.log");
    written.extend(write_records(&later, "later", 0, 2));
    daemon.wait_for_records(5);
    wait_for_checkpoint(dir.path(), &log, len(&log));
    wait_for_checkpoint(dir.path(), &later, len(&later));

    let stopped = daemon.terminate();
    assert!(stopped.status.success());
    stopped.assert_stat_identities();
    assert_exactly_once(&texts(&stopped.stdout), &written);
}

/// Regression: a truncation was only noticed by the periodic scan, so a file polled in
/// between was read on from its old position: the new content's start was skipped until the
/// scan (or for good, when the scan saw nothing wrong), or shipped twice. The log here is a
/// symlink, as under /var/log/containers, so no filesystem event reaches the watch: only
/// polling reads it, and the scan does not run during the test.
#[test]
fn a_copy_truncate_is_noticed_when_polling_between_scans() {
    let dir = tempdir();
    let config = run_config_with_scan(dir.path(), "1h", "");
    let real_dir = dir.path().join("pods");
    fs::create_dir_all(&real_dir).unwrap();
    let real = real_dir.join("0.log");
    let log = dir.path().join("logs/0.log");
    let mut written = write_records(&real, "beforeTruncate", 0, 10);
    std::os::unix::fs::symlink(&real, &log).unwrap();

    let mut daemon = Daemon::start(&config);
    daemon.wait_for_records(10);
    // Checkpoints keep the file's own path, symlinks resolved (where its rotated siblings are).
    wait_for_checkpoint(dir.path(), &real, len(&real));
    let truncate = || {
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&real)
            .unwrap();
    };
    // Shorter than before, with the same first line.
    truncate();
    let after = write_records(&real, "afterTruncate", 0, 3);
    daemon.wait_for_records(13);
    wait_for_checkpoint(dir.path(), &real, len(&real));
    assert_exactly_once(
        &texts(&daemon.stdout_lines()),
        &[written.clone(), after.clone()].concat(),
    );
    written.extend(after);
    // Longer than before, with another first line.
    truncate();
    append(&real, "a new first line\n");
    written.extend(write_records(&real, "afterSecondTruncate", 0, 20));
    daemon.wait_for_records(33);
    wait_for_checkpoint(dir.path(), &real, len(&real));

    let stopped = daemon.terminate();
    assert!(stopped.status.success());
    stopped.assert_stat_identities();
    let got = texts(&stopped.stdout);
    let got_set: BTreeSet<&String> = got.iter().collect();
    let missing: Vec<_> = written.iter().filter(|w| !got_set.contains(w)).collect();
    assert!(missing.is_empty(), "missing: {missing:?}");
    assert_eq!(stopped.stopped_stat("truncations"), 2);
    assert_eq!(
        stopped.stopped_stat("invalid"),
        0,
        "no line read from the middle"
    );
}
