//! Finding 9 of issue 13: TLS and SASL were configured and rendered by the chart but never
//! shipped over in a test, and credentials in mounted files were read once at start.
//!
//! Real brokers, real processes: `tansu` behind `stunnel` for TLS (a throwaway CA made with
//! `openssl`), `tansu --authentication` for SASL/SCRAM, and Secret volumes updated the way the
//! kubelet does. What is asserted is what a consumer reads back, and what `/readyz` and the
//! logs tell an operator. See `support::secure`.

// Test code: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use support::broker::{consume_with, Consumed};
use support::secure::{Ca, SaslBroker, SecretVolume, TlsBroker};
use support::*;

const TOPIC: &str = "audit-60d";

/// A `run` config following `dir/logs/*.log` into Kafka at `brokers`, with `kafka` (keys
/// indented four spaces) added to `outputs.kafka`.
fn config(dir: &Path, brokers: &str, kafka: &str) -> PathBuf {
    let base = service_yaml(dir);
    let yaml = format!(
        r#"{base}retention:
  default: standard
  classes:
    standard: {{days: 60, topic: {TOPIC}}}
outputs:
  kafka:
    brokers: "{brokers}"
    key: id
    create_topics: true
    topic_settings: {{partitions: 2, replication_factor: 1}}
    linger: 5ms
{kafka}
"#
    );
    write_config(dir, "auditrail.yaml", &yaml)
}

/// Appends `n` audit records tagged `tag` to `dir/logs/0.log`; returns their ids.
fn write_records(dir: &Path, tag: &str, from: usize, n: usize) -> BTreeSet<String> {
    let mut text = String::new();
    let mut ids = BTreeSet::new();
    for i in from..from + n {
        text.push_str(&audit_line(tag, i));
        text.push('\n');
        ids.insert(format!("{tag}-{i:06}"));
    }
    append(&dir.join("logs/0.log"), text);
    ids
}

fn record_id(c: &Consumed) -> String {
    c.value["record"]["id"].as_str().unwrap().to_owned()
}

/// Consumes the topic until every id of `want` was read or `wait` passed; returns all read.
/// One consumer reads from the beginning until it has as many messages as are wanted (tansu's
/// SQLite storage takes seconds to serve a large fetch: short reads would never finish).
fn consume_until(client: &ClientConfig, want: &BTreeSet<String>, wait: Duration) -> Vec<Consumed> {
    let deadline = Instant::now() + wait;
    let mut count = want.len();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let all = consume_with(
            client.clone(),
            TOPIC,
            count,
            left.max(Duration::from_secs(2)),
        );
        let ids: BTreeSet<String> = all.iter().map(record_id).collect();
        if want.is_subset(&ids) || Instant::now() > deadline {
            return all;
        }
        // Duplicates took the place of some wanted records: read that many more.
        count = all.len() + want.difference(&ids).count();
    }
}

/// Asserts every record of `want` arrived; returns how many arrived twice (a duplicate
/// carries its record's first envelope id).
fn assert_all_arrived(consumed: &[Consumed], want: &BTreeSet<String>, logs: &[String]) -> usize {
    let mut ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for c in consumed {
        ids.entry(record_id(c)).or_default().insert(c.id());
    }
    let missing: Vec<&String> = want.iter().filter(|id| !ids.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} records lost (first: {:?}); logs:\n{}",
        missing.len(),
        want.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        logs.join("\n")
    );
    assert!(
        ids.values().all(|envelopes| envelopes.len() == 1),
        "a re-sent record carries its first id"
    );
    consumed.len() - ids.len()
}

/// Records a replaced producer gave back to be re-sent on the new one, from `/metrics`.
fn re_sent(run: &mut Daemon) -> u64 {
    let addr = run.metrics_address();
    let samples = metric_samples(&http_get(&addr, "/metrics").1);
    ["PurgeQueue", "PurgeInflight"]
        .iter()
        .map(|reason| {
            metric_sum(
                &samples,
                "auditrail_output_records_failed_total",
                &[&format!("reason=\"{reason}\"")],
            )
        })
        .sum::<f64>() as u64
}

/// Waits until `/readyz` answers 503 with a reason containing `text`; returns the body.
fn wait_not_ready_because(run: &mut Daemon, text: &str) -> String {
    let addr = run.metrics_address();
    let start = Instant::now();
    loop {
        let (code, body) = http_get(&addr, "/readyz");
        if code == 503 && body.contains(text) {
            return body;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "/readyz never said {text:?}: {code} {body}\nlogs:\n{}",
            run.stderr_lines().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_ready(run: &mut Daemon) {
    let addr = run.metrics_address();
    let start = Instant::now();
    loop {
        let (code, body) = http_get(&addr, "/readyz");
        if code == 200 {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "not ready: {code} {body}\nlogs:\n{}",
            run.stderr_lines().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The TLS settings of auditrail's config, the CA given as a file.
fn tls_properties(ca: &Ca) -> String {
    format!(
        "    properties:\n      security.protocol: ssl\n      ssl.ca.location: {}\n      broker.address.family: v4\n",
        yaml_str(ca.cert.to_str().unwrap())
    )
}

// === TLS ===

/// Finding 9: records ship over TLS with the broker's certificate verified against the CA,
/// and a consumer reads every one back.
#[test]
fn tls_ships_every_record_with_the_ca_verified() {
    let dir = tempdir();
    let ca = Ca::new(dir.path(), "good");
    let broker = TlsBroker::start(dir.path(), &ca, "localhost");
    let config = config(dir.path(), &broker.address(), &tls_properties(&ca));
    let ids = write_records(dir.path(), "tls", 0, 300);
    let mut run = Daemon::start(&config);
    let consumed = consume_until(&broker.client(&ca), &ids, Duration::from_secs(30));
    wait_ready(&mut run);
    let stopped = run.stop_cleanly();
    let duplicates = assert_all_arrived(&consumed, &ids, &stopped.stderr);
    assert_eq!(duplicates, 0);
}

/// Finding 9: a broker certificate signed by another CA is refused: a clear error in the log,
/// `/readyz` 503 naming TLS, and nothing shipped.
#[test]
fn tls_with_the_wrong_ca_is_refused_and_says_why() {
    let dir = tempdir();
    let ca = Ca::new(dir.path(), "good");
    let other = Ca::new(dir.path(), "other");
    let broker = TlsBroker::start(dir.path(), &ca, "localhost");
    let config = config(dir.path(), &broker.address(), &tls_properties(&other));
    write_records(dir.path(), "wrongca", 0, 50);
    let mut run = Daemon::start(&config);
    let body = wait_not_ready_because(&mut run, "not signed by a CA auditrail trusts");
    eprintln!("/readyz: {body}");
    assert!(
        body.contains("auditrail test CA good"),
        "names the issuer: {body}"
    );
    run.wait_for_log("not signed by a CA auditrail trusts");
    assert_nothing_shipped(&broker.client(&ca));
    let stopped = run.terminate();
    let logs = stopped.stderr.join("\n");
    assert!(logs.contains("TLS with the broker failed"), "{logs}");
    assert!(!logs.contains("does not name"), "{logs}");
}

/// Finding 9: a broker certificate for another host name is refused the same way.
#[test]
fn tls_with_the_wrong_hostname_is_refused_and_says_why() {
    let dir = tempdir();
    let ca = Ca::new(dir.path(), "good");
    let broker = TlsBroker::start(dir.path(), &ca, "kafka.elsewhere.test");
    let config = config(dir.path(), &broker.address(), &tls_properties(&ca));
    write_records(dir.path(), "wronghost", 0, 50);
    let mut run = Daemon::start(&config);
    let body = wait_not_ready_because(&mut run, "does not name \"localhost\"");
    eprintln!("/readyz: {body}");
    assert!(
        body.contains("kafka.elsewhere.test"),
        "names what it is for: {body}"
    );
    run.wait_for_log("does not name");
    // A consumer that does not check the name reads the topic: nothing arrived.
    let mut client = broker.client(&ca);
    client.set("ssl.endpoint.identification.algorithm", "none");
    assert_nothing_shipped(&client);
    run.terminate();
}

fn assert_nothing_shipped(client: &ClientConfig) {
    let consumed = consume_with(client.clone(), TOPIC, usize::MAX, Duration::from_secs(3));
    assert!(consumed.is_empty(), "{} records shipped", consumed.len());
}

/// Finding 9: a CA certificate rotated in the mounted Secret is picked up without a restart:
/// a wrong one is fixed by the Secret, and a later rotation while records stream loses none.
#[test]
fn a_ca_rotated_in_the_mounted_secret_is_picked_up_without_a_restart() {
    let dir = tempdir();
    let ca = Ca::new(dir.path(), "good");
    let other = Ca::new(dir.path(), "other");
    let broker = TlsBroker::start(dir.path(), &ca, "localhost");
    let mut secret = SecretVolume::new(&dir.path().join("secret"), &[("ca.crt", &other.pem())]);
    let kafka = format!(
        "    properties:\n      security.protocol: ssl\n      broker.address.family: v4\n    secret_files:\n      ssl.ca.pem: {}\n",
        yaml_str(secret.path("ca.crt").to_str().unwrap())
    );
    let config = config(dir.path(), &broker.address(), &kafka);
    let mut ids = write_records(dir.path(), "rot", 0, 200);
    let mut run = Daemon::start(&config);
    wait_not_ready_because(&mut run, "TLS with the broker failed");
    assert_nothing_shipped(&broker.client(&ca));

    // The operator fixes the Secret: the right CA, no restart.
    secret.update(&[("ca.crt", &ca.pem())]);
    let consumed = consume_until(&broker.client(&ca), &ids, Duration::from_secs(30));
    assert_all_arrived(&consumed, &ids, &run.stderr_lines());
    wait_ready(&mut run);

    // Rotated again while records stream: the same CA in a new file (a bundle with the old
    // one), so the old producer still works and has records in flight at the switch.
    let (writer, written) = stream_records(dir.path(), "live", 20, Duration::from_millis(5));
    std::thread::sleep(Duration::from_millis(500));
    secret.update(&[("ca.crt", &format!("{}{}", ca.pem(), other.pem()))]);
    run.wait_for_log("new clients take over");
    std::thread::sleep(Duration::from_millis(500));
    let streamed = stop_streaming(writer, written);
    ids.extend(streamed);
    let consumed = consume_until(&broker.client(&ca), &ids, Duration::from_secs(60));
    let re_sent = re_sent(&mut run);
    let stopped = run.stop_cleanly();
    let duplicates = assert_all_arrived(&consumed, &ids, &stopped.stderr);
    let switches = stopped
        .stderr
        .iter()
        .filter(|l| l.contains("new clients take over"))
        .count();
    assert_eq!(switches, 2, "one switch per rotation");
    eprintln!(
        "{} records, {re_sent} re-sent on a new producer, {duplicates} duplicates across two switches",
        ids.len()
    );
}

/// Appends `per_tick` records every `tick` on a thread until [`stop_streaming`].
fn stream_records(
    dir: &Path,
    tag: &'static str,
    per_tick: usize,
    tick: Duration,
) -> (std::thread::JoinHandle<BTreeSet<String>>, Arc<AtomicBool>) {
    let dir = dir.to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let handle = std::thread::spawn(move || {
        let mut ids = BTreeSet::new();
        let mut i = 0;
        while !stopped.load(Ordering::SeqCst) {
            ids.extend(write_records(&dir, tag, i, per_tick));
            i += per_tick;
            std::thread::sleep(tick);
        }
        ids
    });
    (handle, stop)
}

/// Stops the writer; the ids of every record it wrote.
fn stop_streaming(
    writer: std::thread::JoinHandle<BTreeSet<String>>,
    stop: Arc<AtomicBool>,
) -> BTreeSet<String> {
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap()
}

// === SASL ===

const READER: (&str, &str) = ("reader", "reader-secret");

fn sasl_kafka(secret: &SecretVolume) -> String {
    format!(
        "    properties:\n      security.protocol: sasl_plaintext\n      sasl.mechanism: SCRAM-SHA-512\n    secret_files:\n      sasl.username: {}\n      sasl.password: {}\n",
        yaml_str(secret.path("username").to_str().unwrap()),
        yaml_str(secret.path("password").to_str().unwrap()),
    )
}

/// Finding 9: records ship to a broker that enforces SASL/SCRAM, with the credentials read
/// from mounted files; a wrong password is refused with a clear error and a readiness reason.
#[test]
fn sasl_scram_ships_every_record_and_a_wrong_password_is_refused() {
    let dir = tempdir();
    let broker = SaslBroker::start(
        &dir.path().join("broker"),
        &[("auditrail", "right-password"), READER],
    );
    let reader = broker.client(READER.0, READER.1);

    // A wrong password first: refused, said, nothing shipped.
    let wrong = dir.path().join("wrong");
    let secret = SecretVolume::new(
        &wrong.join("secret"),
        &[("username", "auditrail"), ("password", "wrong-password\n")],
    );
    let config_wrong = config(&wrong, &broker.address(), &sasl_kafka(&secret));
    write_records(&wrong, "wrongpw", 0, 50);
    let mut run = Daemon::start(&config_wrong);
    let body = wait_not_ready_because(&mut run, "SASL authentication with the broker failed");
    eprintln!("/readyz: {body}");
    assert!(body.contains("sasl.password"), "{body}");
    assert_nothing_shipped(&reader);
    run.terminate();

    // The right one: everything arrives.
    let right = dir.path().join("right");
    let secret = SecretVolume::new(
        &right.join("secret"),
        &[("username", "auditrail"), ("password", "right-password\n")],
    );
    let config_right = config(&right, &broker.address(), &sasl_kafka(&secret));
    let ids = write_records(&right, "sasl", 0, 300);
    let mut run = Daemon::start(&config_right);
    let consumed = consume_until(&reader, &ids, Duration::from_secs(30));
    wait_ready(&mut run);
    let stopped = run.stop_cleanly();
    assert_eq!(assert_all_arrived(&consumed, &ids, &stopped.stderr), 0);
}

/// Finding 9: the password is rotated on the broker (which then refuses the old one), then in
/// the mounted Secret: auditrail builds a new producer without a restart, re-sends what the
/// old one could not deliver, and no record is lost.
#[test]
fn a_password_rotated_on_the_broker_and_in_the_secret_is_picked_up_and_nothing_is_lost() {
    let dir = tempdir();
    let mut broker = SaslBroker::start(
        &dir.path().join("broker"),
        &[("auditrail", "first-password"), READER],
    );
    let reader = broker.client(READER.0, READER.1);
    let mut secret = SecretVolume::new(
        &dir.path().join("secret"),
        &[("username", "auditrail"), ("password", "first-password\n")],
    );
    let config = config(dir.path(), &broker.address(), &sasl_kafka(&secret));
    let mut ids = write_records(dir.path(), "before", 0, 300);
    let mut run = Daemon::start(&config);
    consume_until(&reader, &ids, Duration::from_secs(30));
    wait_ready(&mut run);

    // Records keep coming while the broker's password changes: the old one is refused.
    let (writer, written) = stream_records(dir.path(), "during", 5, Duration::from_millis(50));
    let rotating = Instant::now();
    broker.set_users(&[("auditrail", "second-password")]);
    eprintln!("broker password rotated in {:?}", rotating.elapsed());
    wait_not_ready_because(&mut run, "SASL authentication with the broker failed");

    // The Secret follows: new clients, and the records held since flow again.
    secret.update(&[("username", "auditrail"), ("password", "second-password\n")]);
    run.wait_for_log("new clients take over");
    std::thread::sleep(Duration::from_secs(1));
    ids.extend(stop_streaming(writer, written));
    ids.extend(write_records(dir.path(), "after", 0, 300));
    let consumed = consume_until(&reader, &ids, Duration::from_secs(60));
    wait_ready(&mut run);
    let re_sent = re_sent(&mut run);
    let stopped = run.stop_cleanly();
    let duplicates = assert_all_arrived(&consumed, &ids, &stopped.stderr);
    eprintln!(
        "{} records, {re_sent} held by the refused producer and re-sent on the new one, {duplicates} duplicates",
        ids.len()
    );
    // Whether the old producer held records at the switch depends on tansu: a connection
    // authenticated before the password changed may stay open and keep delivering (CI saw
    // 0 held once in four runs). What users rely on is asserted above: every record arrived.
    // The re-send of purged records is covered by the unit tests of the sink.
}
