//! The Kafka output under broker faults, against the real `tansu` broker (issue 13, finding 8
//! and Deliver 8): the broker killed and restarted, an outage longer than
//! `message.timeout.ms`, the in-flight limits reached, the dead-letter topic end to end, two
//! outputs with one stalled, and the file source's crash loop with Kafka as the output.
//!
//! Every test counts by consuming the topics back from their beginning and asserts the
//! at-least-once promise: every record written is delivered (zero lost), nothing is delivered
//! that was not written, and a record delivered twice carries the same envelope `id` both
//! times, so a consumer deduplicates on it. Each prints how many duplicates it saw
//! (`cargo test --test kafka_faults -- --nocapture` shows them).
//!
//! What tansu offers here, found by trying (tansu 0.6.0):
//! - storage that survives a restart: its default `memory://` does not, and its
//!   `postgres://` engine is neither compiled into `--features dynostore` nor able to create
//!   its own schema (the DDL lives in tansu's repository, not in the crate); its `sqlite://`
//!   engine (`--features libsql`) creates its tables itself in a file, so that is what
//!   [`Broker::start_persistent`] uses;
//! - a permanent rejection: tansu enforces no `max.message.bytes` and no ACLs, but with a
//!   schema registry (`--schema-registry file://…`, `<topic>.json`) it rejects a batch whose
//!   record fails the topic's JSON schema with `INVALID_RECORD`, which auditrail treats as
//!   permanent ([`Broker::start_with_schemas`]);
//! - the idempotent producer's epoch bump: after a delivery whose outcome is unknown (a request
//!   timed out in flight) or a permanent error, librdkafka drains and bumps the producer's epoch
//!   itself (`rd_kafka_idemp_drain_done`: "the idempotent producer can bump its own epoch"),
//!   which Kafka accepts. tansu does not: its memory storage answers every later produce with
//!   `PRODUCER_FENCED`, and its SQLite storage panics in `idempotent_message_check` ("more or
//!   less than one row") and stops serving. So an outage past `message.timeout.ms` is tested
//!   with the broker paused (memory storage), not killed: a broker down while records time out
//!   cannot be brought back with tansu's SQLite storage.
//!
//! Against tansu, that epoch bump wedged auditrail: it retried `ProducerFenced` on the same
//! producer forever, reporting ready. Now a fenced producer is replaced by a new one (a new
//! id) and its records re-sent; the tests that reach it (the outage past
//! `message.timeout.ms`, the dead-letter tests) failed before that. On a failure they restart
//! auditrail to tell a loss (records missing after a restart) from a stall (the checkpoint
//! held them).
//!
//! The 100-kill crash loop is `#[ignore]`d (a few minutes); BENCHMARKS.md has its figures and
//! the command that ran it.

// Test code: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

use support::broker::{Broker, Consumed};
use support::kubelet::{audit_record, record_id, Kubelet, Stream};
use support::*;

const STANDARD: &str = "audit-60d";
const FOREVER: &str = "audit-forever";
const DEAD_LETTER: &str = "audit-dead-letter";

// === setup ===

struct Setup {
    dir: tempfile::TempDir,
    log: PathBuf,
    config: PathBuf,
}

impl Setup {
    fn checkpoint_offset(&self) -> u64 {
        saved_checkpoints(self.dir.path())
            .iter()
            .find(|(path, _)| Path::new(path) == self.log)
            .map_or(0, |(_, offset)| *offset)
    }

    fn log_len(&self) -> u64 {
        std::fs::metadata(&self.log).map_or(0, |m| m.len())
    }
}

/// The retention classes and the Kafka output of every test: `sqlQuery` kept forever, the
/// rest 60 days; `kafka` adds keys to `outputs.kafka` (indented four spaces), `outputs` adds
/// other outputs (indented two).
fn outputs_yaml(broker: &Broker, kafka: &str, outputs: &str) -> String {
    format!(
        r#"retention:
  default: standard
  classes:
    standard: {{days: 60, topic: {STANDARD}}}
    forever: {{days: null, topic: {FOREVER}}}
  types:
    forever: [sqlQuery]
outputs:
  kafka:
    brokers: "{address}"
    key: id
    create_topics: true
    topic_settings: {{partitions: 2, replication_factor: 1}}
    linger: 5ms
{kafka}
{outputs}
"#,
        address = broker.address(),
    )
}

/// A service following `dir/logs/*.log` (the file `dir/logs/0.log`), shipping to `broker`.
fn setup(broker: &Broker, kafka: &str, outputs: &str) -> Setup {
    let dir = tempdir();
    let base = service_yaml(dir.path());
    let config = dir.path().join("auditrail.yaml");
    std::fs::write(
        &config,
        format!("{base}{}", outputs_yaml(broker, kafka, outputs)),
    )
    .unwrap();
    Setup {
        log: dir.path().join("logs/0.log"),
        dir,
        config,
    }
}

/// Appends `n` audit records of `len` bytes (type `tag`, ids `tag-000000`…) to `path` in one
/// write, one ordinary line after every ninth; returns their texts.
fn write_audit(path: &Path, tag: &str, start: usize, n: usize, len: usize) -> Vec<String> {
    let mut text = String::new();
    let mut records = Vec::with_capacity(n);
    for i in start..start + n {
        let record = audit_record(tag, i, len);
        text.push_str(&record);
        text.push('\n');
        if i % 9 == 8 {
            text.push_str(&ordinary_line(i));
            text.push('\n');
        }
        records.push(record);
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
    records
}

/// Writes bursts of records to `path` on a thread: `bursts` of `per_burst` records of
/// `len` bytes, `every` apart. The thread returns what it wrote.
fn write_in_bursts(
    path: &Path,
    tag: &'static str,
    start: usize,
    bursts: usize,
    per_burst: usize,
    len: usize,
    every: Duration,
) -> std::thread::JoinHandle<Vec<String>> {
    let path = path.to_owned();
    std::thread::spawn(move || {
        let mut written = Vec::new();
        for b in 0..bursts {
            written.extend(write_audit(
                &path,
                tag,
                start + b * per_burst,
                per_burst,
                len,
            ));
            std::thread::sleep(every);
        }
        written
    })
}

// === counting by consuming ===

/// What the topics held, judged against what was written.
#[derive(Debug, Default)]
struct Tally {
    /// Messages consumed (audit records; gap records are counted apart).
    messages: usize,
    /// Distinct records among them.
    distinct: usize,
    /// Written, never delivered.
    lost: Vec<String>,
    /// Delivered, never written (or not byte for byte the record written).
    unexpected: Vec<String>,
    /// Records delivered more than once with different envelope ids.
    ids_differ: Vec<String>,
    /// Gap records (a byte range auditrail could no longer read): their records.
    gaps: Vec<Value>,
}

impl Tally {
    fn duplicates(&self) -> usize {
        self.messages - self.distinct
    }

    /// Fails the test with what was lost; for a test that already knows something was.
    fn fail(&self, context: &str) -> ! {
        self.assert_nothing_lost(context);
        panic!("{context}: nothing lost, yet the test failed");
    }

    fn assert_nothing_lost(&self, context: &str) {
        assert!(
            self.lost.is_empty(),
            "{} of the records written were never delivered ({context}); the first: {:?}",
            self.lost.len(),
            &self.lost[..self.lost.len().min(20)]
        );
        assert!(
            self.unexpected.is_empty(),
            "delivered but never written ({context}): {:?}",
            &self.unexpected[..self.unexpected.len().min(5)]
        );
        assert!(
            self.ids_differ.is_empty(),
            "records delivered twice under different envelope ids ({context}): {:?}",
            &self.ids_differ[..self.ids_differ.len().min(20)]
        );
        let lost_ranges: Vec<&Value> = self
            .gaps
            .iter()
            .filter(|g| g["end"].as_u64() > g["start"].as_u64())
            .collect();
        assert!(
            lost_ranges.is_empty(),
            "gap records: byte ranges never read ({context}): {lost_ranges:?}"
        );
    }
}

fn is_gap(c: &Consumed) -> bool {
    c.value["type"] == "auditrail.gap"
}

/// The application's record id of a consumed message.
fn consumed_record_id(c: &Consumed) -> Option<String> {
    c.value["record"]["id"].as_str().map(str::to_owned)
}

fn tally(consumed: &[Consumed], written: &[String]) -> Tally {
    let by_id: BTreeMap<String, Value> = written
        .iter()
        .map(|r| {
            (
                record_id(r).expect("written records have ids"),
                serde_json::from_str(r).unwrap(),
            )
        })
        .collect();
    assert_eq!(by_id.len(), written.len(), "written ids are distinct");
    let mut envelope_ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut t = Tally::default();
    for c in consumed {
        if is_gap(c) {
            t.gaps.push(c.value["record"].clone());
            continue;
        }
        t.messages += 1;
        let id = consumed_record_id(c);
        match id.as_ref().and_then(|id| by_id.get(id)) {
            Some(record) if *record == c.value["record"] => {
                envelope_ids.entry(id.unwrap()).or_default().insert(c.id());
            }
            _ => t
                .unexpected
                .push(c.value.to_string().chars().take(300).collect()),
        }
    }
    t.distinct = envelope_ids.len();
    t.lost = by_id
        .keys()
        .filter(|id| !envelope_ids.contains_key(*id))
        .cloned()
        .collect();
    t.ids_differ = envelope_ids
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(id, _)| id.clone())
        .collect();
    t
}

/// Everything in `topics`, read from their beginning, until every id in `want` is there or
/// `wait` passed (a read that has begun is finished first).
fn consume_until(
    broker: &Broker,
    topics: &[&str],
    want: &BTreeSet<String>,
    wait: Duration,
) -> Vec<Consumed> {
    let deadline = Instant::now() + wait;
    loop {
        let mut all = Vec::new();
        for topic in topics {
            // Until the topic has been quiet for a while: a fixed wait reads only the first
            // part of a large topic.
            all.extend(broker.consume_all(
                topic,
                Duration::from_millis(1500),
                Duration::from_secs(120),
            ));
        }
        let have: BTreeSet<String> = all.iter().filter_map(consumed_record_id).collect();
        if want.is_subset(&have) || Instant::now() > deadline {
            return all;
        }
    }
}

fn ids(written: &[String]) -> BTreeSet<String> {
    written.iter().filter_map(|r| record_id(r)).collect()
}

// === metrics ===

fn scrape(addr: &str) -> BTreeMap<String, f64> {
    metric_samples(&http_get(addr, "/metrics").1)
}

fn metric(addr: &str, name: &str, labels: &[&str]) -> f64 {
    // `+ 0.0`: an empty sum is -0.0.
    metric_sum(&scrape(addr), name, labels) + 0.0
}

/// Scrapes the metrics server every 10 ms on a thread until stopped, keeping the largest
/// value seen of each sample.
struct Sampler {
    stop: Arc<AtomicBool>,
    max: Arc<Mutex<BTreeMap<String, f64>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(addr: &str) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(Mutex::new(BTreeMap::new()));
        let (s, m, addr) = (Arc::clone(&stop), Arc::clone(&max), addr.to_owned());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                if let Ok((_, text)) = try_http_get(&addr, "/metrics") {
                    let mut max = m.lock().unwrap();
                    for (k, v) in metric_samples(&text) {
                        let e = max.entry(k).or_insert(v);
                        *e = e.max(v);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Sampler {
            stop,
            max,
            handle: Some(handle),
        }
    }

    fn max(&self, name: &str, labels: &[&str]) -> f64 {
        metric_sum(&self.max.lock().unwrap(), name, labels)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Writes `text` to `<target tmp>/kafka_faults/<name>.log` and returns the path, for the logs
/// of a failed test that are too long to print.
fn keep_log(name: &str, text: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kafka_faults");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.log"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The failed delivery attempts by reason, and what `/readyz` says: for failure messages.
fn delivery_state(addr: &str) -> String {
    let samples = scrape(addr);
    let failed: Vec<String> = samples
        .iter()
        .filter(|(k, _)| k.starts_with("auditrail_output_records_failed_total"))
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let (code, body) = http_get(addr, "/readyz");
    format!(
        "failed attempts: {failed:?}; in flight: {}; /readyz {code}: {}",
        metric_sum(&samples, "auditrail_output_in_flight_records", &[]),
        body.trim()
    )
}

/// Why records were not delivered: the delivery state, the logs of auditrail and tansu (kept
/// in files), and whether a restart of auditrail (a new producer) delivers them, that is
/// whether they were lost or only held behind the checkpoint.
fn diagnose(
    name: &str,
    run: Daemon,
    addr: &str,
    config: &Path,
    broker: &Broker,
    topics: &[&str],
    written: &[String],
) -> String {
    let state = delivery_state(addr);
    let stopped = match run.terminate_within(Duration::from_secs(3)) {
        Ok(s) | Err(s) => s,
    };
    let auditrail_log = keep_log(&format!("{name}-auditrail"), &stopped.stderr.join("\n"));
    let tansu_log = keep_log(&format!("{name}-tansu"), &broker.log());
    let run = Daemon::start(config);
    let consumed = consume_until(broker, topics, &ids(written), Duration::from_secs(20));
    let t = tally(&consumed, written);
    let _ = run.terminate_within(Duration::from_secs(3));
    format!(
        "{state}\nafter a restart of auditrail (a new producer): {} of {} records delivered, {} missing{}\nlogs: {} {}",
        t.distinct,
        written.len(),
        t.lost.len(),
        if t.lost.is_empty() {
            " (nothing was lost: the checkpoint had held them)"
        } else {
            ""
        },
        auditrail_log.display(),
        tansu_log.display()
    )
}

fn stderr_tail(run: &Daemon, n: usize) -> String {
    let lines = run.stderr_lines();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// === 1. the broker killed and restarted ===

/// The broker is killed with SIGKILL twice while auditrail ships bursts of records, and
/// started again on the same port with its topics (SQLite storage). What it had before the
/// first kill is still there after the restart (the storage survives), and in the end every
/// record written is in its topic.
#[test]
fn a_broker_killed_and_restarted_while_shipping_loses_nothing() {
    let storage = tempdir();
    let mut broker = Broker::start_persistent(storage.path());
    let s = setup(&broker, "", "");
    let mut written = write_audit(&s.log, "beforeKill", 0, 1000, 300);
    let mut run = Daemon::start(&s.config);
    let before = consume_until(
        &broker,
        &[STANDARD],
        &ids(&written),
        Duration::from_secs(30),
    );
    tally(&before, &written).assert_nothing_lost("before the first kill");
    let addr = run.metrics_address();

    let writer = write_in_bursts(
        &s.log,
        "whileKilled",
        0,
        60,
        100,
        300,
        Duration::from_millis(100),
    );
    std::thread::sleep(Duration::from_millis(800));
    broker.kill();
    std::thread::sleep(Duration::from_secs(2));
    broker.restart();
    // The storage survived: what was delivered before the kill is still there.
    let after_restart = broker.consume(STANDARD, before.len(), Duration::from_secs(20));
    assert!(
        after_restart.len() >= before.len(),
        "{} messages before the kill, {} after the restart: the topics did not survive",
        before.len(),
        after_restart.len()
    );
    std::thread::sleep(Duration::from_millis(1500));
    broker.kill();
    std::thread::sleep(Duration::from_secs(1));
    broker.restart();
    written.extend(writer.join().unwrap());

    let consumed = consume_until(
        &broker,
        &[STANDARD],
        &ids(&written),
        Duration::from_secs(60),
    );
    let failed = metric(&addr, "auditrail_output_records_failed_total", &[]);
    let t = tally(&consumed, &written);
    eprintln!(
        "broker killed twice: {} records written, {} messages, {} duplicates, {} failed delivery attempts",
        written.len(),
        t.messages,
        t.duplicates(),
        failed as u64
    );
    if !t.lost.is_empty() {
        let why = diagnose(
            "broker-killed",
            run,
            &addr,
            &s.config,
            &broker,
            &[STANDARD],
            &written,
        );
        eprintln!("60 s after the last restart: {why}");
        t.fail("broker killed twice");
    }
    t.assert_nothing_lost("broker killed twice");
    let stopped = run.stop_cleanly();
    assert!(stopped.status.success());
    assert_eq!(
        s.checkpoint_offset(),
        s.log_len(),
        "the checkpoint reached the end"
    );
}

// === 2. an outage longer than message.timeout.ms ===

/// `message.timeout.ms` is 3 s and the broker is paused (SIGSTOP: its connections stay open
/// and unanswered) for 9 s while records are written: librdkafka times out the records in
/// flight and queued (`MessageTimedOut`). auditrail must produce them again, not drop them,
/// and deliver them once the broker answers again.
///
/// Against tansu this fails: the requests timed out in flight make librdkafka bump the
/// producer's epoch, tansu fences every later produce, and auditrail retries on the same
/// producer for ever while `/readyz` says ready; a restart delivers everything (nothing lost).
#[test]
fn an_outage_longer_than_the_message_timeout_retries_what_timed_out() {
    let broker = Broker::start();
    let s = setup(
        &broker,
        "    properties: {message.timeout.ms: \"3000\"}",
        "",
    );
    let mut written = write_audit(&s.log, "beforePause", 0, 300, 300);
    let mut run = Daemon::start(&s.config);
    let addr = run.metrics_address();
    let before = consume_until(
        &broker,
        &[STANDARD],
        &ids(&written),
        Duration::from_secs(30),
    );
    tally(&before, &written).assert_nothing_lost("before the pause");

    broker.signal("-STOP");
    let writer = write_in_bursts(
        &s.log,
        "duringPause",
        0,
        20,
        100,
        300,
        Duration::from_millis(100),
    );
    std::thread::sleep(Duration::from_secs(9));
    let timed_out = metric(
        &addr,
        "auditrail_output_records_failed_total",
        &["reason=\"MessageTimedOut\""],
    );
    let offset_during = s.checkpoint_offset();
    broker.signal("-CONT");
    written.extend(writer.join().unwrap());

    let consumed = consume_until(
        &broker,
        &[STANDARD],
        &ids(&written),
        Duration::from_secs(30),
    );
    let t = tally(&consumed, &written);
    eprintln!(
        "paused 9 s with message.timeout.ms=3000: {timed_out} deliveries timed out and were retried; {} records, {} messages, {} duplicates",
        written.len(),
        t.messages,
        t.duplicates()
    );
    if !t.lost.is_empty() {
        let why = diagnose(
            "outage-paused",
            run,
            &addr,
            &s.config,
            &broker,
            &[STANDARD],
            &written,
        );
        eprintln!("30 s after the broker resumed: {why}");
        t.fail("an outage longer than message.timeout.ms");
    }
    t.assert_nothing_lost("an outage longer than message.timeout.ms");
    assert!(
        timed_out > 0.0,
        "no delivery timed out: the outage did not reach the retry path; auditrail:\n{}",
        stderr_tail(&run, 30)
    );
    assert!(
        run.stderr_lines()
            .iter()
            .any(|l| l.contains("delivery failed; retrying") && l.contains("timed out")),
        "no retry of a timed-out record was logged"
    );
    assert!(
        offset_during < s.log_len(),
        "the checkpoint passed records the broker never acknowledged"
    );
    run.stop_cleanly();
    assert_eq!(s.checkpoint_offset(), s.log_len());
}

/// Issue 16: a hung broker must not cost a core. With the broker paused (SIGSTOP: the
/// connection stays up, nothing answers) and records in flight and queued behind them,
/// librdkafka's broker thread polled with a zero timeout in a loop for as long as the pause
/// lasted (its idempotent in-flight window full, yet a wakeup asked for at the lingered batch's
/// due time, long past): a whole core. The vendored librdkafka (vendor/rdkafka-sys) asks for
/// no wakeup then.
///
/// Measured as the share of the pause the broker threads were runnable (on a CPU or waiting
/// for one, from `/proc/<pid>/task/<tid>/schedstat`), which does not depend on how busy the
/// machine is: about 1.0 for a thread that spins, near 0 for one that sleeps. Every record
/// still arrives after the broker resumes.
#[test]
fn a_paused_broker_does_not_make_the_producer_spin() {
    let broker = Broker::start();
    let s = setup(&broker, "", "");
    let mut written = write_audit(&s.log, "beforeHang", 0, 300, 300);
    let run = Daemon::start(&s.config);
    let before = consume_until(
        &broker,
        &[STANDARD],
        &ids(&written),
        Duration::from_secs(30),
    );
    tally(&before, &written).assert_nothing_lost("before the pause");

    broker.signal("-STOP");
    // Bursts, so that one request goes out and the rest queue behind it, past `linger`.
    let writer = write_in_bursts(
        &s.log,
        "duringHang",
        0,
        10,
        200,
        300,
        Duration::from_millis(100),
    );
    written.extend(writer.join().unwrap());
    std::thread::sleep(Duration::from_secs(2));
    let (runnable0, at0) = (broker_threads_runnable_ns(run.pid()), Instant::now());
    std::thread::sleep(Duration::from_secs(4));
    let (runnable1, at1) = (broker_threads_runnable_ns(run.pid()), Instant::now());
    broker.signal("-CONT");
    let share = (runnable1 - runnable0) as f64 / (at1 - at0).as_nanos() as f64;

    let consumed = consume_until(
        &broker,
        &[STANDARD],
        &ids(&written),
        Duration::from_secs(60),
    );
    let t = tally(&consumed, &written);
    eprintln!(
        "broker threads runnable for {:.1}% of the pause; {} records, {} duplicates",
        100.0 * share,
        written.len(),
        t.duplicates()
    );
    t.assert_nothing_lost("after the paused broker resumed");
    assert!(
        share < 0.25,
        "librdkafka's broker threads were runnable {:.0}% of the time the broker was paused: \
         they spin instead of waiting for its answer",
        100.0 * share
    );
    run.stop_cleanly();
    assert_eq!(s.checkpoint_offset(), s.log_len());
}

/// Nanoseconds librdkafka's broker threads (`rdk:broker…`) of process `pid` have been on a CPU
/// or waiting for one (the first two fields of `schedstat`).
fn broker_threads_runnable_ns(pid: u32) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if !comm.starts_with("rdk:broker") {
            continue;
        }
        let stat = std::fs::read_to_string(task.join("schedstat")).unwrap_or_default();
        total += stat
            .split_whitespace()
            .take(2)
            .map(|v| v.parse::<u64>().unwrap())
            .sum::<u64>();
    }
    total
}

// === 3. the in-flight limits ===

/// Ships `first` records with tiny limits, then pauses the broker while `paused` more records
/// are written (more than the queues in front of the output hold: 8 batches of 256): the
/// records in flight never exceed the limit, reading stops once the queues in front of the
/// output are full (the file is the buffer), and after the broker resumes everything arrives.
fn in_flight_limit_case(
    kafka: &str,
    record_len: usize,
    (first, paused): (usize, usize),
    max_records: f64,
    max_bytes: f64,
) {
    let broker = Broker::start();
    let s = setup(&broker, kafka, "");
    let mut written = write_audit(&s.log, "underLimit", 0, first, record_len);
    let mut run = Daemon::start(&s.config);
    let addr = run.metrics_address();
    let sampler = Sampler::start(&addr);
    let flowing = consume_until(
        &broker,
        &[STANDARD],
        &ids(&written),
        Duration::from_secs(40),
    );
    tally(&flowing, &written).assert_nothing_lost("with the broker up");

    broker.signal("-STOP");
    let paused = write_audit(&s.log, "paused", 0, paused, record_len);
    let lines = |addr: &str| metric(addr, "auditrail_source_lines_total", &[]);
    // Reading stops: the lines read stay put for a second.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = lines(&addr);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = lines(&addr);
        if now == last {
            break;
        }
        assert!(Instant::now() < deadline, "reading never stopped");
        last = now;
    }
    let total_lines = std::fs::read_to_string(&s.log).unwrap().lines().count() as f64;
    let unread = total_lines - last;
    let in_flight = metric(&addr, "auditrail_output_in_flight_records", &[]);
    let lag = metric(&addr, "auditrail_source_lag_bytes", &[]);
    broker.signal("-CONT");
    written.extend(paused);

    let consumed = consume_until(
        &broker,
        &[STANDARD],
        &ids(&written),
        Duration::from_secs(40),
    );
    let t = tally(&consumed, &written);
    let (seen_records, seen_bytes) = (
        sampler.max("auditrail_output_in_flight_records", &[]),
        sampler.max("auditrail_output_in_flight_bytes", &[]),
    );
    drop(sampler);
    eprintln!(
        "limits {kafka:?}: at most {seen_records} records / {seen_bytes} bytes in flight; paused: {in_flight} in flight, {unread} of {total_lines} lines left unread, lag {lag} bytes; {} records, {} duplicates",
        written.len(),
        t.duplicates()
    );
    t.assert_nothing_lost("in-flight limits");
    assert!(
        seen_records <= max_records,
        "{seen_records} records in flight, limit {max_records}"
    );
    assert!(
        seen_bytes <= max_bytes,
        "{seen_bytes} bytes in flight, limit {max_bytes}"
    );
    assert!(in_flight > 0.0, "the limit was reached while paused");
    assert!(
        unread > 0.0,
        "reading did not back off: every line of the file was read while the broker was paused"
    );
    run.stop_cleanly();
}

#[test]
fn the_in_flight_record_limit_backs_reading_off_and_loses_nothing() {
    // 5 records of 300 bytes: the record limit binds.
    in_flight_limit_case(
        "    max_in_flight_records: 5\n    max_in_flight_bytes: 65536",
        300,
        (2_000, 10_000),
        5.0,
        65536.0,
    );
}

#[test]
fn the_in_flight_byte_limit_backs_reading_off_and_loses_nothing() {
    // 8 kB records: the byte limit binds at 8 or 9 records (the limit is checked before each
    // record is added, so one record, with its envelope, may go over it).
    let envelope = 2_000.0;
    in_flight_limit_case(
        "    max_in_flight_records: 1000\n    max_in_flight_bytes: 65536",
        8_000,
        (500, 4_000),
        1000.0,
        65536.0 + 8_000.0 + envelope,
    );
}

/// While backpressure holds reading back, `auditrail_source_lag_bytes` must count what the
/// file holds beyond the checkpoint (what an operator alerts on during a Kafka outage).
///
/// It failed before the read loop published the gauge (and the `backlog` readiness check)
/// while it waits for room in the output's channel too: the gauge kept its value from before
/// the outage (0 here) for as long as the outage lasted.
#[test]
fn the_lag_metric_counts_what_backpressure_leaves_unread() {
    let broker = Broker::start();
    let s = setup(
        &broker,
        "    max_in_flight_records: 5\n    max_in_flight_bytes: 65536",
        "",
    );
    let mut written = write_audit(&s.log, "beforePause", 0, 200, 300);
    let mut run = Daemon::start(&s.config);
    let addr = run.metrics_address();
    consume_until(
        &broker,
        &[STANDARD],
        &ids(&written),
        Duration::from_secs(30),
    );
    wait_until("the checkpoint reaches the end", || {
        s.checkpoint_offset() == s.log_len()
    });
    broker.signal("-STOP");
    written.extend(write_audit(&s.log, "paused", 0, 5_000, 300));
    let lines = |addr: &str| metric(addr, "auditrail_source_lines_total", &[]);
    let mut last = lines(&addr);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = lines(&addr);
        if now == last {
            break;
        }
        last = now;
    }
    // The gauge is published at most once a second: it must come to count what is unread
    // within a generous deadline, while reading stays blocked.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (lag, behind) = loop {
        let lag = metric(&addr, "auditrail_source_lag_bytes", &[]);
        let behind = s.log_len() - s.checkpoint_offset();
        if lag >= behind as f64 || Instant::now() > deadline {
            break (lag, behind);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    broker.signal("-CONT");
    let consumed = consume_until(
        &broker,
        &[STANDARD],
        &ids(&written),
        Duration::from_secs(30),
    );
    tally(&consumed, &written).assert_nothing_lost("after the pause");
    run.stop_cleanly();
    eprintln!("paused: {behind} bytes behind the checkpoint, lag gauge {lag}");
    assert!(
        lag >= behind as f64,
        "auditrail_source_lag_bytes is {lag} while {behind} bytes of the file are beyond the checkpoint"
    );
}

// === 4. the dead-letter topic ===

/// A JSON schema for the standard topic that rejects every envelope whose record has a
/// `poison` member.
const NO_POISON: &str = r#"{"type": "object", "properties": {"value": {"type": "object", "not": {"required": ["record"], "properties": {"record": {"required": ["poison"]}}}}}}"#;

fn poison_record(n: usize) -> String {
    format!(
        r#"{{"level": "audit", "recordType": "dataSourceGet", "id": "poison-{n:06}", "poison": true, "seq": {n}}}"#
    )
}

/// The broker rejects one record for good (`INVALID_RECORD`: it fails the topic's schema):
/// it goes to the dead-letter topic with its reason and original topic in headers, and the
/// records before and after it flow to their topic.
///
/// Against tansu this fails: the permanent error makes librdkafka bump the producer's epoch,
/// tansu fences the dead-letter send and everything after it, and auditrail retries on the
/// same producer for ever; a restart reads the rejected record again and wedges the same way.
#[test]
fn a_record_the_broker_rejects_goes_to_the_dead_letter_topic_and_the_rest_flow() {
    let registry = tempdir();
    std::fs::create_dir_all(registry.path().join("schemas")).unwrap();
    std::fs::write(
        registry.path().join(format!("schemas/{STANDARD}.json")),
        NO_POISON,
    )
    .unwrap();
    let broker = Broker::start_with_schemas(registry.path());
    let s = setup(
        &broker,
        &format!("    dead_letter_topic: {DEAD_LETTER}"),
        "",
    );
    let mut good = write_audit(&s.log, "beforePoison", 0, 200, 300);
    let mut run = Daemon::start(&s.config);
    let addr = run.metrics_address();
    let first = consume_until(&broker, &[STANDARD], &ids(&good), Duration::from_secs(30));
    tally(&first, &good).assert_nothing_lost("before the poison record");

    // Alone in its batch: only it is rejected.
    let poison = poison_record(0);
    append(&s.log, format!("{poison}\n"));
    let dead = consume_until(
        &broker,
        &[DEAD_LETTER],
        &ids(std::slice::from_ref(&poison)),
        Duration::from_secs(15),
    );
    good.extend(write_audit(&s.log, "afterPoison", 0, 200, 300));
    let consumed = consume_until(&broker, &[STANDARD], &ids(&good), Duration::from_secs(15));

    let t = tally(&consumed, &good);
    if !t.lost.is_empty() || dead.is_empty() {
        let mut all = good.clone();
        all.push(poison.clone());
        let why = diagnose(
            "poison-alone",
            run,
            &addr,
            &s.config,
            &broker,
            &[STANDARD, DEAD_LETTER],
            &all,
        );
        eprintln!(
            "15 s after the record was rejected: {} in the dead-letter topic; {why}",
            dead.len()
        );
        t.assert_nothing_lost("the records around the rejected one");
        panic!("the rejected record never reached the dead-letter topic");
    }
    t.assert_nothing_lost("the records around the rejected one");
    assert!(
        consumed
            .iter()
            .all(|c| c.value["record"]["poison"].is_null()),
        "the rejected record is in {STANDARD}"
    );
    assert_eq!(
        dead.len(),
        1,
        "the rejected record, once, in the dead-letter topic: {dead:?}; auditrail:\n{}",
        stderr_tail(&run, 30)
    );
    let d = &dead[0];
    assert_eq!(
        d.value["record"],
        serde_json::from_str::<Value>(&poison).unwrap()
    );
    assert_eq!(d.headers["original_topic"], STANDARD);
    assert_eq!(d.headers["id"], d.id());
    let reason = &d.headers["dead_letter_reason"];
    assert!(
        reason.to_lowercase().contains("invalid record") || reason.contains("InvalidRecord"),
        "reason header: {reason:?}"
    );
    assert_eq!(
        metric(
            &addr,
            "auditrail_output_records_dead_lettered_total",
            &[&format!("topic=\"{STANDARD}\"")]
        ),
        1.0
    );
    wait_until("the checkpoint passes the rejected record", || {
        s.checkpoint_offset() == s.log_len()
    });
    eprintln!(
        "dead letter: reason {reason:?}; {} records around it delivered, {} duplicates",
        good.len(),
        t.duplicates()
    );
    run.stop_cleanly();
}

/// Poison records in the middle of a burst: each goes to the dead-letter topic and nothing
/// is lost. tansu rejects the whole batch a poison record is in, so records batched with it
/// are rejected too; they must not be lost either (they go to the dead-letter topic with the
/// same reason). How many did is printed.
#[test]
fn poison_records_inside_a_burst_lose_nothing() {
    let registry = tempdir();
    std::fs::create_dir_all(registry.path().join("schemas")).unwrap();
    std::fs::write(
        registry.path().join(format!("schemas/{STANDARD}.json")),
        NO_POISON,
    )
    .unwrap();
    let broker = Broker::start_with_schemas(registry.path());
    let s = setup(
        &broker,
        &format!("    dead_letter_topic: {DEAD_LETTER}"),
        "",
    );
    let mut run = Daemon::start(&s.config);
    let addr = run.metrics_address();
    // 1,000 records with a poison record after every 200th, in one write.
    let mut good = Vec::new();
    let mut poison = Vec::new();
    let mut text = String::new();
    for i in 0..1000 {
        let r = audit_record("burst", i, 300);
        text.push_str(&r);
        text.push('\n');
        good.push(r);
        if i % 200 == 100 {
            let p = poison_record(i);
            text.push_str(&p);
            text.push('\n');
            poison.push(p);
        }
    }
    append(&s.log, text);
    let all: Vec<String> = good.iter().chain(&poison).cloned().collect();
    let consumed = consume_until(
        &broker,
        &[STANDARD, DEAD_LETTER],
        &ids(&all),
        Duration::from_secs(30),
    );
    let t = tally(&consumed, &all);
    let dead: Vec<&Consumed> = consumed.iter().filter(|c| c.topic == DEAD_LETTER).collect();
    let collateral = dead
        .iter()
        .filter(|c| c.value["record"]["poison"].is_null())
        .count();
    let dead_lettered = metric(&addr, "auditrail_output_records_dead_lettered_total", &[]);
    eprintln!(
        "poison in a burst: {} poison records, {} messages in the dead-letter topic of which {collateral} were good records rejected with their batch; {} duplicates",
        poison.len(),
        dead.len(),
        t.duplicates()
    );
    if !t.lost.is_empty() {
        let why = diagnose(
            "poison-burst",
            run,
            &addr,
            &s.config,
            &broker,
            &[STANDARD, DEAD_LETTER],
            &all,
        );
        eprintln!("30 s after the burst was written: {why}");
        t.fail("poison records inside a burst");
    }
    t.assert_nothing_lost("poison records inside a burst");
    for c in &consumed {
        if c.topic == STANDARD {
            assert!(
                c.value["record"]["poison"].is_null(),
                "poison in {STANDARD}"
            );
        } else {
            assert_eq!(c.headers["original_topic"], STANDARD);
            assert!(!c.headers["dead_letter_reason"].is_empty());
        }
    }
    assert_eq!(dead_lettered as usize, dead.len());
    wait_until("the checkpoint reaches the end", || {
        s.checkpoint_offset() == s.log_len()
    });
    run.stop_cleanly();
}

/// Finding 3, end to end: a record of 8 kB, above the producer's `message.max.bytes` (4,096
/// here, the lowest auditrail takes), with a dead-letter topic set. It must reach its topic
/// in chunks (the README's chunk protocol; reassembled here as `scripts/reassemble.py` does),
/// never the dead-letter topic, and the records after it must flow.
///
/// It failed before the `outputs` branch sent such records in chunks: the dead-letter topic
/// got the identical payload, which was rejected again, so the record was held and the
/// records behind it waited.
#[test]
fn a_record_too_large_for_the_producer_is_not_lost_and_the_rest_flow() {
    let broker = Broker::start();
    let s = setup(
        &broker,
        &format!(
            "    dead_letter_topic: {DEAD_LETTER}\n    properties: {{message.max.bytes: \"4096\"}}"
        ),
        "",
    );
    let mut written = write_audit(&s.log, "beforeBig", 0, 50, 300);
    let big = audit_record("tooBig", 0, 8000);
    append(&s.log, format!("{big}\n"));
    written.extend(write_audit(&s.log, "afterBig", 0, 50, 300));
    let mut run = Daemon::start(&s.config);
    let addr = run.metrics_address();
    let mut all = written.clone();
    all.push(big.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    let consumed = loop {
        let consumed = reassembled(broker.consume_all(
            STANDARD,
            Duration::from_millis(1500),
            Duration::from_secs(60),
        ));
        let have: BTreeSet<String> = consumed.iter().filter_map(consumed_record_id).collect();
        if ids(&all).is_subset(&have) || Instant::now() > deadline {
            break consumed;
        }
    };
    let t = tally(&consumed, &all);
    let dead = broker.consume(DEAD_LETTER, 1, Duration::from_secs(3));
    let chunked = metric(&addr, "auditrail_kafka_records_chunked_total", &[]);
    eprintln!(
        "too large for the producer: {} of {} records delivered ({} messages), {} duplicates, {} records chunked, {} in the dead-letter topic",
        t.distinct,
        all.len(),
        t.messages,
        t.duplicates(),
        chunked,
        dead.len()
    );
    let stderr = stderr_tail(&run, 20);
    run.stop_cleanly();
    assert!(
        t.lost.is_empty(),
        "{} records never arrived (first: {:?}); auditrail:\n{stderr}",
        t.lost.len(),
        t.lost.first()
    );
    assert!(t.ids_differ.is_empty(), "duplicates with different ids");
    assert!(chunked >= 1.0, "the big record was not chunked");
    assert!(dead.is_empty(), "a record went to the dead-letter topic");
}

/// Chunked messages (`chunk_count` header) joined into the record they carry, as
/// `scripts/reassemble.py` does: by id, by index, a repeated index kept once, the SHA-256 of
/// the whole checked. Incomplete records are left out; whole messages pass unchanged.
fn reassembled(consumed: Vec<Consumed>) -> Vec<Consumed> {
    use sha2::{Digest, Sha256};
    let mut out = Vec::new();
    let mut parts: BTreeMap<String, (Consumed, BTreeMap<usize, String>)> = BTreeMap::new();
    for c in consumed {
        let Some(count) = c
            .headers
            .get("chunk_count")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            out.push(c);
            continue;
        };
        let id = c.headers["id"].clone();
        let index: usize = c.headers["chunk_index"].parse().unwrap();
        let text = match &c.value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        let entry = parts.entry(id).or_insert_with(|| {
            (
                Consumed {
                    topic: c.topic.clone(),
                    partition: c.partition,
                    offset: c.offset,
                    key: c.key.clone(),
                    headers: c.headers.clone(),
                    value: Value::Null,
                    raw: Vec::new(),
                },
                BTreeMap::new(),
            )
        });
        entry.1.insert(index, text);
        if entry.1.len() == count {
            let (mut whole, chunks) = parts.remove(&c.headers["id"]).unwrap();
            let joined: String = chunks.into_values().collect();
            let sha = format!("{:x}", Sha256::digest(joined.as_bytes()));
            assert_eq!(
                sha, whole.headers["chunk_sha256"],
                "chunks of {}",
                whole.headers["id"]
            );
            whole.value = serde_json::from_str(&joined).unwrap();
            // A later copy of the record's chunks starts a new reassembly.
            out.push(whole);
        }
    }
    out
}

// === 5. two outputs, one stalled ===

/// Kafka required and stdout optional (`required: false`); stdout's reader stops reading:
/// Kafka gets every record, the checkpoint reaches the end, and stdout's missed batches are
/// counted as dropped.
#[test]
fn an_optional_stdout_that_stalls_does_not_hold_kafka() {
    let broker = Broker::start();
    let s = setup(
        &broker,
        "",
        "  stdout: {required: false, drain_timeout: 1s}",
    );
    let written = write_audit(&s.log, "optionalStdout", 0, 100, 300);
    let mut run = Daemon::start(&s.config);
    let addr = run.metrics_address();
    run.wait_for_records(10);
    run.hold_stdout_after(10);
    let mut all = written.clone();
    all.extend(write_audit(&s.log, "stdoutStalled", 0, 20_000, 300));
    let consumed = consume_until(&broker, &[STANDARD], &ids(&all), Duration::from_secs(45));
    let t = tally(&consumed, &all);
    let dropped = metric(
        &addr,
        "auditrail_output_records_dropped_total",
        &["output=\"stdout\""],
    );
    let on_stdout = run.stdout_lines().len();
    eprintln!(
        "stdout optional and stalled: Kafka got {} of {} records ({} duplicates); stdout printed {on_stdout}, dropped {dropped}",
        t.distinct,
        all.len(),
        t.duplicates()
    );
    t.assert_nothing_lost("Kafka, with an optional stdout stalled");
    wait_until("the checkpoint reaches the end", || {
        s.checkpoint_offset() == s.log_len()
    });
    assert!(
        dropped > 0.0,
        "the stalled optional output dropped nothing?"
    );
    run.terminate();
}

/// Kafka optional (`required: false`) and stdout required; the broker is paused: stdout gets
/// every record at once and the checkpoint reaches the end while the broker is paused;
/// Kafka's missed batches are counted as dropped, and what Kafka did get carries the ids
/// stdout printed.
#[test]
fn an_optional_kafka_whose_broker_stalls_does_not_hold_stdout() {
    let broker = Broker::start();
    let s = setup(&broker, "    required: false", "  stdout: {}");
    let first = write_audit(&s.log, "beforeStall", 0, 100, 300);
    let mut run = Daemon::start(&s.config);
    let addr = run.metrics_address();
    consume_until(&broker, &[STANDARD], &ids(&first), Duration::from_secs(30));
    broker.signal("-STOP");
    let mut all = first.clone();
    all.extend(write_audit(&s.log, "kafkaStalled", 0, 20_000, 300));
    let started = Instant::now();
    run.wait_for_within(
        "every record on stdout while the broker is paused",
        Duration::from_secs(30),
        |lines| lines.len() >= all.len(),
    );
    let took = started.elapsed();
    wait_until(
        "the checkpoint reaches the end while Kafka is stalled",
        || s.checkpoint_offset() == s.log_len(),
    );
    let dropped = metric(
        &addr,
        "auditrail_output_records_dropped_total",
        &["output=\"kafka\""],
    );
    broker.signal("-CONT");
    let stopped = run.stop_cleanly();
    let printed: BTreeMap<String, String> = stopped
        .stdout
        .iter()
        .map(|l| (id_of(l), record_text(l).to_owned()))
        .collect();
    let printed_ids: BTreeSet<String> = printed.values().filter_map(|r| record_id(r)).collect();
    assert_eq!(printed_ids, ids(&all), "stdout got every record");
    let in_kafka = consume_until(
        &broker,
        &[STANDARD],
        &BTreeSet::new(),
        Duration::from_secs(3),
    );
    for c in &in_kafka {
        let text = printed
            .get(&c.id())
            .unwrap_or_else(|| panic!("Kafka has {} under an id stdout never printed", c.id()));
        assert_eq!(record_id(text), consumed_record_id(c));
    }
    let kafka_distinct: BTreeSet<String> = in_kafka.iter().filter_map(consumed_record_id).collect();
    eprintln!(
        "Kafka optional and stalled: stdout printed all {} records in {took:?}; Kafka dropped {dropped} and holds {} of them",
        all.len(),
        kafka_distinct.len()
    );
    assert!(
        dropped > 0.0,
        "the stalled optional Kafka output dropped nothing?"
    );
}

/// Both required (the default) and the broker paused: the checkpoint stays behind what Kafka
/// did not acknowledge (stdout alone cannot move it) and stdout falls silent once the queues
/// in front of Kafka are full; when the broker resumes both get every record.
#[test]
fn a_required_kafka_that_stalls_holds_the_checkpoint_for_both() {
    let broker = Broker::start();
    let s = setup(&broker, "", "  stdout: {}");
    let first = write_audit(&s.log, "beforeStall", 0, 100, 300);
    let mut run = Daemon::start(&s.config);
    consume_until(&broker, &[STANDARD], &ids(&first), Duration::from_secs(30));
    run.wait_for_records(first.len());
    wait_until("the checkpoint reaches the end", || {
        s.checkpoint_offset() == s.log_len()
    });
    let offset_before = s.checkpoint_offset();
    broker.signal("-STOP");
    let mut all = first.clone();
    all.extend(write_audit(&s.log, "kafkaStalled", 0, 20_000, 300));
    std::thread::sleep(Duration::from_secs(5));
    let printed_during = run.stdout_lines().len() - first.len();
    let offset_during = s.checkpoint_offset();
    broker.signal("-CONT");
    let consumed = consume_until(&broker, &[STANDARD], &ids(&all), Duration::from_secs(45));
    let t = tally(&consumed, &all);
    t.assert_nothing_lost("a required Kafka that stalled");
    run.wait_for("every record on stdout", |lines| lines.len() >= all.len());
    wait_until("the checkpoint reaches the end", || {
        s.checkpoint_offset() == s.log_len()
    });
    eprintln!(
        "both required, broker paused 5 s: stdout printed {printed_during} of 20000 new records meanwhile; the checkpoint moved {} bytes (of {}); then all arrived ({} Kafka duplicates)",
        offset_during - offset_before,
        s.log_len() - offset_before,
        t.duplicates()
    );
    assert!(
        offset_during < s.log_len(),
        "the checkpoint passed records Kafka never acknowledged"
    );
    let stopped = run.stop_cleanly();
    let printed: BTreeSet<String> = stopped
        .stdout
        .iter()
        .filter_map(|l| record_id(record_text(l)))
        .collect();
    assert_eq!(printed, ids(&all));
}

// === 6. the crash loop with Kafka ===

/// splitmix64: reproducible randomness from a printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn seed() -> u64 {
    std::env::var("AUDITRAIL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// One run of auditrail in the crash loop: when it ran.
struct RunWindow {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

/// The file source's crash loop with Kafka as the output: the kubelet simulator writes
/// bursts of records of random sizes and rotates the log (rotated files compressed, none
/// deleted), while auditrail is killed with SIGKILL `kills` times at random moments and
/// restarted. In the end the records consumed, deduplicated by id, are exactly the records
/// written; duplicates carry their first envelope id. Returns the duplicates per restart.
fn crash_loop(kills: usize) -> Vec<usize> {
    let seed = seed();
    eprintln!("crash loop: {kills} kills, AUDITRAIL_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let broker = Broker::start();
    let dir = tempdir();
    let pod = dir
        .path()
        .join("pods/shop_api-7d9f8_0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d");
    std::fs::create_dir_all(&pod).unwrap();
    let pattern = pod.join("*").join("*.log");
    let config = run_config_following(dir.path(), &[&pattern], "");
    let mut yaml = std::fs::read_to_string(&config).unwrap();
    yaml.push_str(&outputs_yaml(&broker, "", ""));
    std::fs::write(&config, yaml).unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let done = Arc::clone(&done);
        let mut rng = Rng(seed ^ 0x5EED);
        let app = Kubelet::new(&pod).max_files(10_000);
        std::thread::spawn(move || {
            let mut app = app;
            let mut written = Vec::new();
            // Where and when each record was written: (rotations before it, ms since start).
            let mut whence = Vec::new();
            let (started, mut rotations) = (Instant::now(), 0usize);
            let mut next_rotation = Instant::now() + Duration::from_millis(rng.between(500, 2000));
            while !done.load(Ordering::SeqCst) {
                let n = rng.between(1, 40) as usize;
                let len = rng.between(120, 3000) as usize;
                written.extend(app.write_audit(Stream::Stdout, n, len));
                whence.extend(std::iter::repeat_n(
                    (rotations, started.elapsed().as_millis()),
                    n,
                ));
                if rng.between(0, 3) == 0 {
                    app.write_ordinary(Stream::Stderr, rng.between(1, 5) as usize);
                }
                if Instant::now() >= next_rotation {
                    app.rotate();
                    rotations += 1;
                    next_rotation = Instant::now() + Duration::from_millis(rng.between(500, 2000));
                }
                std::thread::sleep(Duration::from_millis(rng.between(10, 80)));
            }
            written.extend(app.write_audit(Stream::Stdout, 20, 300));
            whence.extend(std::iter::repeat_n(
                (rotations, started.elapsed().as_millis()),
                20,
            ));
            (app, written, whence)
        })
    };

    let mut windows = Vec::new();
    let mut logs = Vec::new();
    let loop_started = Instant::now();
    for _ in 0..kills {
        let start = Utc::now();
        let run = Daemon::start(&config);
        std::thread::sleep(Duration::from_millis(rng.between(150, 2500)));
        let stopped = run.kill();
        windows.push(RunWindow {
            start,
            end: Utc::now(),
        });
        logs.push((loop_started.elapsed().as_millis(), stopped.stderr));
        std::thread::sleep(Duration::from_millis(rng.between(0, 300)));
    }
    done.store(true, Ordering::SeqCst);
    let (app, written, whence) = writer.join().unwrap();

    let start = Utc::now();
    let run = Daemon::start(&config);
    // Gap records go to the class that keeps records longest: the forever topic.
    let consumed = consume_until(
        &broker,
        &[STANDARD, FOREVER],
        &ids(&written),
        Duration::from_secs(60),
    );
    wait_for_checkpoint(dir.path(), &app.path(), app.len());
    let stopped = run.stop_cleanly();
    windows.push(RunWindow {
        start,
        end: Utc::now(),
    });

    let t = tally(&consumed, &written);
    logs.push((loop_started.elapsed().as_millis(), stopped.stderr));
    let empty_gaps = t
        .gaps
        .iter()
        .filter(|g| g["end"].as_u64() <= g["start"].as_u64())
        .count();
    if !t.lost.is_empty() || t.gaps.len() > empty_gaps {
        // Where the lost records were written, and every run's log.
        let index: BTreeMap<String, (usize, u128)> = written
            .iter()
            .zip(&whence)
            .map(|(r, w)| (record_id(r).unwrap(), *w))
            .collect();
        let mut by_file: BTreeMap<usize, (usize, u128, u128)> = BTreeMap::new();
        for id in &t.lost {
            let (file, at) = index[id];
            let e = by_file.entry(file).or_insert((0, at, at));
            *e = (e.0 + 1, e.1.min(at), e.2.max(at));
        }
        let rotated = app.rotated();
        for (file, (n, from, to)) in &by_file {
            let name = rotated.get(*file).map_or_else(|| app.path(), Clone::clone);
            eprintln!(
                "lost: {n} records written to {} between {from} and {to} ms",
                name.display()
            );
        }
        for gap in consumed.iter().filter(|c| is_gap(c)) {
            eprintln!("gap record: {}", gap.value["record"]);
        }
        for (k, (ended, log)) in logs.iter().enumerate() {
            keep_log(
                &format!("crash-loop-run-{k:03}-ended-at-{ended}ms"),
                &log.join("\n"),
            );
        }
        eprintln!(
            "runs' logs in {}/crash-loop-run-*; checkpoints and logs kept in {}",
            Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join("kafka_faults")
                .display(),
            dir.keep().display()
        );
    }
    // Duplicates per restart: a copy of a record counts for the run that shipped it (its
    // observed_time, the time auditrail read the line, falls in that run) when an earlier
    // run shipped the record already.
    let window_of = |c: &Consumed| -> Option<usize> {
        let t: DateTime<Utc> = c.value["observed_time"].as_str()?.parse().ok()?;
        windows
            .iter()
            .position(|w| w.start - chrono::Duration::milliseconds(5) <= t && t <= w.end)
    };
    let mut copies: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut unplaced = 0;
    for c in consumed.iter().filter(|c| !is_gap(c)) {
        match (consumed_record_id(c), window_of(c)) {
            (Some(id), Some(w)) => copies.entry(id).or_default().push(w),
            _ => unplaced += 1,
        }
    }
    let mut per_restart = vec![0usize; windows.len()];
    let mut first_shipped = vec![0usize; windows.len()];
    let mut within_a_run = 0;
    for runs in copies.values_mut() {
        runs.sort_unstable();
        first_shipped[runs[0]] += 1;
        for pair in runs.windows(2) {
            if pair[1] == pair[0] {
                within_a_run += 1;
            }
            per_restart[pair[1]] += usize::from(pair[1] != pair[0]);
        }
    }
    eprintln!(
        "per run (ms alive, records first shipped, duplicates): {:?}",
        windows
            .iter()
            .zip(first_shipped.iter().zip(&per_restart))
            .map(|(w, (f, d))| ((w.end - w.start).num_milliseconds(), *f, *d))
            .collect::<Vec<_>>()
    );
    // Run 0 follows no kill; run k (k >= 1) follows kill k.
    let per_restart: Vec<usize> = per_restart[1..].to_vec();
    let mut sorted = per_restart.clone();
    sorted.sort_unstable();
    eprintln!(
        "crash loop (seed {seed}): {kills} kills, {} records written in {} files, {} messages, {} duplicates ({within_a_run} within one run, {unplaced} not placed); per restart min {} median {} max {}; {} gap records ({empty_gaps} of an empty range)",
        written.len(),
        app.rotated().len() + 1,
        t.messages,
        t.duplicates(),
        sorted.first().copied().unwrap_or(0),
        sorted.get(sorted.len() / 2).copied().unwrap_or(0),
        sorted.last().copied().unwrap_or(0),
        t.gaps.len()
    );
    t.assert_nothing_lost(&format!("crash loop, AUDITRAIL_CRASH_SEED={seed}"));
    per_restart
}

/// The loss the 100-kill crash loop found (run 1 in BENCHMARKS.md), provoked: auditrail is
/// killed while the broker is paused (so its checkpoint of `0.log` stays behind what it had
/// read), the kubelet rotates the log while it is down, and rotates again just as auditrail
/// starts, which gzips the rotated file (`.gz` written, the original removed) while
/// auditrail's startup scan (`resume_rotated`, `src/source/file/restart.rs`) is between
/// listing the directory and opening the file. The open fails (ENOENT, "cannot read a rotated
/// file"), the checkpoint's unread range is reported as a `deleted` gap and passed, and the
/// next start resumes the `.gz` after it: records that were never gone are never shipped.
///
/// It is a race: each attempt starts the second rotation after a different delay (a hundred
/// older compressed siblings make the scan long enough to hit), until records are lost or
/// ten attempts passed. It hit about one attempt in three for the helper that wrote it, and
/// in none of ten on a later run before the fix: timing-dependent and about 2.5 minutes, so
/// it is `#[ignore]`d, a reproducer to run by hand. The deterministic test of the fix is
/// `a_sibling_compressed_between_listing_and_open_is_found_compressed` in
/// `src/source/file/restart.rs` (the startup scan lists the siblings again when one vanished).
#[test]
#[ignore = "a timing-dependent reproducer (about 2.5 min); see the unit test in src/source/file/restart.rs"]
fn a_rotated_file_compressed_during_the_startup_scan_is_not_skipped() {
    let mut rng = Rng(seed());
    for attempt in 0..10 {
        let delay = Duration::from_millis(rng.between(40, 160));
        let (lost, gaps) = compressed_during_the_scan(delay);
        eprintln!(
            "attempt {attempt}: second rotation {delay:?} after the start: {} records lost, gap records {gaps:?}",
            lost.len()
        );
        assert!(
            lost.is_empty(),
            "{} records written before the kill never shipped, after two more starts (first: {:?}); gap records: {gaps:?}",
            lost.len(),
            lost.first()
        );
    }
}

/// One attempt of [`a_rotated_file_compressed_during_the_startup_scan_is_not_skipped`]: the
/// records never shipped, and the gap records.
fn compressed_during_the_scan(delay: Duration) -> (Vec<String>, Vec<Value>) {
    let broker = Broker::start();
    let dir = tempdir();
    let pod = dir
        .path()
        .join("pods/shop_api-7d9f8_0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d");
    std::fs::create_dir_all(&pod).unwrap();
    let pattern = pod.join("*").join("*.log");
    let config = run_config_following(dir.path(), &[&pattern], "");
    let mut yaml = std::fs::read_to_string(&config).unwrap();
    yaml.push_str(&outputs_yaml(&broker, "", ""));
    std::fs::write(&config, yaml).unwrap();
    // A hundred older rotated files, compressed: a first start without checkpoints does not
    // read them (and they are not counted), a later one opens each while it scans.
    let mut app = Kubelet::new(&pod).max_files(1000);
    let mut old = Vec::new();
    for _ in 0..100 {
        old.extend(app.write_audit(Stream::Stdout, 2, 200));
        app.rotate();
    }
    let mut written = app.write_audit(Stream::Stdout, 20, 300);
    let mut run = Daemon::start(&config);
    let addr = run.metrics_address();
    consume_until(
        &broker,
        &[STANDARD],
        &ids(&written),
        Duration::from_secs(30),
    );
    wait_for_checkpoint(dir.path(), &app.path(), app.len());

    // Read, not acknowledged: the checkpoint stays behind the size auditrail saw.
    broker.signal("-STOP");
    let before = metric(&addr, "auditrail_source_lines_total", &[]);
    written.extend(app.write_audit(Stream::Stdout, 200, 300));
    wait_until("the new records read", || {
        metric(&addr, "auditrail_source_lines_total", &[]) >= before + 200.0
    });
    std::thread::sleep(Duration::from_millis(300));
    run.kill();
    broker.signal("-CONT");

    app.rotate();
    let run = Daemon::start(&config);
    std::thread::sleep(delay);
    app.rotate(); // gzips the file rotated while auditrail was down
    written.extend(app.write_audit(Stream::Stdout, 5, 300));
    std::thread::sleep(Duration::from_millis(2500));
    run.kill();
    // A third start reads what can still be read.
    let run = Daemon::start(&config);
    let consumed = consume_until(
        &broker,
        &[STANDARD, FOREVER],
        &ids(&written),
        Duration::from_secs(8),
    );
    run.kill();
    let all: Vec<String> = old.iter().chain(&written).cloned().collect();
    let t = tally(&consumed, &all);
    let old_ids = ids(&old);
    let lost = t
        .lost
        .into_iter()
        .filter(|id| !old_ids.contains(id))
        .collect();
    (lost, t.gaps)
}

/// Ten kills, for CI.
#[test]
fn a_crash_loop_with_kafka_as_the_output_loses_nothing() {
    crash_loop(10);
}

/// The long run: a hundred kills (a few minutes). BENCHMARKS.md has its figures.
#[test]
#[ignore = "long: run with --ignored"]
fn a_crash_loop_of_a_hundred_kills_with_kafka_loses_nothing() {
    let kills = std::env::var("AUDITRAIL_CRASH_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(100);
    crash_loop(kills);
}
