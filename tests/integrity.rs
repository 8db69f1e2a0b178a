//! The integrity chain through the real binary and a real Kafka-protocol broker (`tansu`, see
//! `support::broker`): what a consumer reads back is checked with the protocol module
//! (`auditrail::integrity`), as `auditrail verify` would.
// Test code: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use auditrail::integrity::{genesis, parse_hex, ChainHasher};
use support::broker::{Broker, Consumed};
use support::Daemon;

const TOPIC: &str = "audit-chain";

/// Writes `n` lines, every tenth an Immuta audit record; returns how many records.
fn write_lines(path: &Path, n: usize) -> usize {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut text = String::new();
    let mut records = 0;
    for i in 0..n {
        if i % 10 == 0 {
            records += 1;
            text.push_str(&format!(
                r#"{{"level": "audit", "recordType": "dataSourceGet", "dateTime": {}, "id": "rec-{i}"}}"#,
                1_628_524_947_000u64 + i as u64
            ));
        } else {
            text.push_str(&format!(
                r#"{{"level": "info", "message": "request {i} served"}}"#
            ));
        }
        text.push('\n');
    }
    file.write_all(text.as_bytes()).unwrap();
    records
}

/// A link as first seen: id, prev, hash, and how many copies arrived.
type Copies = (String, String, String, usize);

/// The first file's entry of the checkpoints saved under `dir` (null until one is saved).
fn first_saved_file(dir: &Path) -> serde_json::Value {
    std::fs::read_to_string(dir.join("checkpoints/checkpoints.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .map(|v| v["files"][0].clone())
        .unwrap_or_default()
}

fn distinct(consumed: &[Consumed]) -> usize {
    consumed
        .iter()
        .map(|c| c.headers["id"].clone())
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

#[test]
fn chained_records_arrive_with_links_that_recompute_and_keep_them_when_sent_again_after_sigkill() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("chain.key");
    std::fs::write(&key, b"a secret\n").unwrap();
    let config = dir.path().join("auditrail.yaml");
    std::fs::write(
        &config,
        format!(
            "{base}retention:\n  default: all\n  classes:\n    all: {{days: null, topic: {TOPIC}}}\n\
             integrity:\n  chain: true\n  chain_key_file: {key}\n\
             outputs:\n  kafka:\n    brokers: \"{address}\"\n    key: id\n    create_topics: true\n    \
             topic_settings: {{partitions: 2, replication_factor: 1}}\n    linger: 5ms\n",
            base = support::service_yaml(dir.path()),
            key = key.display(),
            address = broker.address(),
        ),
    )
    .unwrap();
    let log = dir.path().join("logs/0.log");
    let records = write_lines(&log, 100_000);
    let size = std::fs::metadata(&log).unwrap().len();
    let saved = || first_saved_file(dir.path());

    let run = Daemon::start(&config);
    let deadline = Instant::now() + Duration::from_secs(30);
    while saved()["offset"].as_u64().unwrap_or(0) == 0 {
        assert!(
            Instant::now() < deadline,
            "no checkpoint moved:\n{}",
            run.stderr_lines().join("\n")
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    run.kill();
    let entry = saved();
    let offset = entry["offset"].as_u64().unwrap();
    assert!(
        offset < size,
        "the kill came after the whole file was acknowledged"
    );
    assert!(
        entry["chain"]["seq"].as_u64().is_some(),
        "chain state saved: {entry}"
    );

    let run = Daemon::start(&config);
    let deadline = Instant::now() + Duration::from_secs(90);
    let consumed = loop {
        let all = broker.consume(TOPIC, usize::MAX, Duration::from_millis(1500));
        if distinct(&all) >= records || Instant::now() > deadline {
            break all;
        }
    };
    run.stop_cleanly();
    assert_eq!(distinct(&consumed), records, "every record arrives");

    let hasher = ChainHasher::keyed(b"a secret\n").unwrap();
    // segment -> seq -> (id, prev, hash, copies)
    let mut chains: BTreeMap<String, BTreeMap<u64, Copies>> = BTreeMap::new();
    let mut stream = String::new();
    for c in &consumed {
        let h = &c.headers;
        assert_eq!(h["chain_alg"], "hmac-sha256");
        let seq: u64 = h["chain_seq"].parse().unwrap();
        let prev = parse_hex::<32>(&h["chain_prev"]).unwrap();
        let link = hasher.link(seq, &prev, &c.raw);
        assert_eq!(
            auditrail::integrity::hex(&link),
            h["chain_hash"],
            "the link recomputes"
        );
        stream.clone_from(&h["chain_stream"]);
        let seg = chains.entry(h["chain_segment"].clone()).or_default();
        let first = seg.entry(seq).or_insert_with(|| {
            (
                h["id"].clone(),
                h["chain_prev"].clone(),
                h["chain_hash"].clone(),
                0,
            )
        });
        assert_eq!(
            (&first.0, &first.1, &first.2),
            (&h["id"], &h["chain_prev"], &h["chain_hash"]),
            "a copy sent again carries the first copy's id, prev and hash (seq {seq})"
        );
        first.3 += 1;
    }
    assert_eq!(
        chains.len(),
        1,
        "one file, one segment: {:?}",
        chains.keys()
    );
    let (segment, links) = chains.iter().next().unwrap();
    assert_eq!(stream, log.display().to_string());
    assert_eq!(
        links.keys().copied().collect::<Vec<_>>(),
        (1..=records as u64).collect::<Vec<_>>()
    );
    let mut prev = auditrail::integrity::hex(&genesis(&stream, segment));
    for (id, p, hash, _) in links.values() {
        assert_eq!(p, &prev, "prev is the previous link's hash ({id})");
        prev.clone_from(hash);
    }
    let duplicates: usize = links.values().map(|l| l.3 - 1).sum();
    eprintln!(
        "{records} records, checkpoint at {offset} of {size} bytes at the kill, {duplicates} sent again with their first links"
    );
}

/// A config chaining (plain SHA-256) every record of `dir/logs/*.log` to `topic`.
fn chained_config(
    dir: &Path,
    broker: &Broker,
    topic: &str,
    source_extra: &str,
) -> std::path::PathBuf {
    let config = dir.join("auditrail.yaml");
    std::fs::write(
        &config,
        format!(
            "{base}{source_extra}retention:\n  default: all\n  classes:\n    all: {{days: null, topic: {topic}}}\n\
             integrity:\n  chain: true\n\
             outputs:\n  kafka:\n    brokers: \"{address}\"\n    key: id\n    create_topics: true\n    \
             topic_settings: {{partitions: 1, replication_factor: 1}}\n    linger: 5ms\n",
            base = support::service_yaml(dir),
            address = broker.address(),
        ),
    )
    .unwrap();
    config
}

/// Waits until `topic` holds `n` distinct record ids; returns what it holds.
fn wait_for_records(broker: &Broker, topic: &str, n: usize) -> Vec<Consumed> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all = broker.consume(topic, usize::MAX, Duration::from_millis(1000));
        if distinct(&all) >= n {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} records arrived",
            distinct(&all)
        );
    }
}

/// `auditrail verify` of `topic`: its exit code and JSON report.
fn verify_topic(broker: &Broker, topic: &str) -> (i32, serde_json::Value) {
    let out = std::process::Command::new(support::bin())
        .args(["verify", "--brokers", &broker.address(), "--topic", topic])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_default();
    eprintln!("verify: {}", String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), report)
}

/// Regression (adversarial review of issue 17, weak spot 3): a file truncated and written
/// again with the same first line while auditrail runs is read again from 0 under the same
/// identity; its new records took seq 1… of the segment the old content had used: conflicts
/// (one seq, two records) that `verify` reports as tampering.
#[test]
fn a_file_rewritten_with_the_same_first_line_while_running_does_not_reuse_its_chain() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let topic = "audit-rewrite";
    let config = chained_config(dir.path(), &broker, topic, "");
    let log = dir.path().join("logs/0.log");
    let head = support::ordinary_line(0) + "\n";
    let old: String = (1..=5)
        .map(|n| support::audit_line("old", n) + "\n")
        .collect();
    support::append(&log, format!("{head}{old}"));
    let run = Daemon::start(&config);
    wait_for_records(&broker, topic, 5);
    // Truncated and written again, longer, beginning with the same line.
    let new: String = (1..=8)
        .map(|n| support::audit_line("new", n) + "\n")
        .collect();
    std::fs::write(&log, format!("{head}{new}")).unwrap();
    let consumed = wait_for_records(&broker, topic, 13);
    run.stop_cleanly();
    let mut links: BTreeMap<(String, u64), std::collections::BTreeSet<String>> = BTreeMap::new();
    for c in &consumed {
        let h = &c.headers;
        links
            .entry((h["chain_segment"].clone(), h["chain_seq"].parse().unwrap()))
            .or_default()
            .insert(h["chain_hash"].clone());
    }
    let conflicts: Vec<_> = links
        .iter()
        .filter(|(_, hashes)| hashes.len() > 1)
        .collect();
    assert!(conflicts.is_empty(), "one seq, two records: {conflicts:?}");
    let (code, report) = verify_topic(&broker, topic);
    assert_eq!(code, 0, "verify reports no tampering: {report}");
}

const DIGEST_TOPIC: &str = "audit-digests";

/// Copies every message of the single-partition `from` (`want` of them, raw) into a new
/// topic `to`, in order, passing them through `change` first: tampering as someone with write
/// access to the archive would do it.
fn copy_topic(
    broker: &Broker,
    from: &str,
    want: usize,
    to: &str,
    change: impl FnOnce(&mut Vec<Consumed>),
) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let mut all = broker.consume(from, want, Duration::from_secs(60));
    assert_eq!(all.len(), want, "read back all of {from}");
    all.sort_by_key(|c| c.offset);
    change(&mut all);
    broker.create_topic(to, 1, "-1");
    let producer: BaseProducer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for c in &all {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &c.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut record = BaseRecord::to(to)
            .partition(0)
            .payload(&c.raw)
            .headers(headers);
        if let Some(key) = &c.key {
            record = record.key(key);
        }
        let mut record = Some(record);
        while let Some(r) = record.take() {
            if let Err((e, r)) = producer.send(r) {
                assert!(
                    matches!(
                        e.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ),
                    "{e}"
                );
                producer.poll(Duration::from_millis(50));
                record = Some(r);
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// `auditrail verify` (the real binary): exit code, JSON report, stderr.
fn verify(args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = std::process::Command::new(support::bin())
        .arg("verify")
        .args(args)
        .args(["--progress-every", "0"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), report, stderr)
}

#[test]
fn signed_digests_from_a_run_killed_and_restarted_verify_clean_and_an_altered_copy_is_named() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    // The signing key as the README says to make it.
    let signing = dir.path().join("signing.pem");
    let made = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&signing)
        .status()
        .unwrap();
    assert!(made.success(), "openssl genpkey");
    let chain_key = dir.path().join("chain.key");
    std::fs::write(&chain_key, b"a secret\n").unwrap();
    let config = dir.path().join("auditrail.yaml");
    std::fs::write(
        &config,
        format!(
            "{base}retention:\n  default: all\n  classes:\n    all: {{days: null, topic: {TOPIC}}}\n\
             integrity:\n  chain: true\n  chain_key_file: {key}\n  digests:\n    topic: {DIGEST_TOPIC}\n    \
             signing_key_file: {signing}\n    every_records: 50\n\
             outputs:\n  kafka:\n    brokers: \"{address}\"\n    key: id\n    create_topics: true\n    \
             topic_settings: {{partitions: 1, replication_factor: 1}}\n    linger: 5ms\n",
            // Saves a second apart: the kill below comes between two, so records delivered
            // after the last save are sent again.
            base = support::service_yaml(dir.path())
                .replace("checkpoint_interval: 100ms", "checkpoint_interval: 1s"),
            key = chain_key.display(),
            signing = signing.display(),
            address = broker.address(),
        ),
    )
    .unwrap();
    // The public key as an operator exports it, for `verify`.
    let exported = std::process::Command::new(support::bin())
        .args(["integrity", "public-key", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(exported.status.success(), "{exported:?}");
    let public = dir.path().join("public.pem");
    std::fs::write(&public, &exported.stdout).unwrap();
    let by_file = std::process::Command::new(support::bin())
        .args(["integrity", "public-key", "--signing-key-file"])
        .arg(&signing)
        .output()
        .unwrap();
    assert_eq!(by_file.stdout, exported.stdout, "the same key either way");

    let log = dir.path().join("logs/0.log");
    // Written while the first run reads, so that records are in flight at the kill.
    std::fs::write(&log, b"").unwrap();
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            (0..100)
                .map(|_| {
                    std::thread::sleep(Duration::from_millis(20));
                    write_lines(&log, 1000)
                })
                .sum::<usize>()
        })
    };
    let saved = || first_saved_file(dir.path());
    let run = Daemon::start(&config);
    let deadline = Instant::now() + Duration::from_secs(30);
    // Killed once a digest is saved with the chain: the restart goes on from it.
    while saved()["chain"]["digest"]["seq"].as_u64().unwrap_or(0) == 0 {
        assert!(
            Instant::now() < deadline,
            "no digest state saved:\n{}",
            run.stderr_lines().join("\n")
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(300));
    run.kill();
    let at_kill = saved();
    eprintln!("checkpoint at the kill: {at_kill}");
    let records = writer.join().unwrap();

    let run = Daemon::start(&config);
    let deadline = Instant::now() + Duration::from_secs(120);
    let consumed = loop {
        let all = broker.consume(TOPIC, usize::MAX, Duration::from_millis(1500));
        if distinct(&all) >= records || Instant::now() > deadline {
            break all;
        }
    };
    // The last digest is due at the last multiple of 50: wait until it is there.
    let want_digests = records / 50;
    let digests = loop {
        let d = broker.consume(DIGEST_TOPIC, usize::MAX, Duration::from_millis(1000));
        let last = d
            .iter()
            .filter_map(|c| c.value["last_seq"].as_u64())
            .max()
            .unwrap_or(0);
        if last >= (want_digests * 50) as u64 || Instant::now() > deadline {
            break d;
        }
    };
    run.stop_cleanly();
    assert_eq!(distinct(&consumed), records, "every record arrives");
    let d = &digests[0];
    assert_eq!(d.headers["type"], "auditrail.digest");
    assert_eq!(d.headers["chain_stream"], log.display().to_string());
    assert_eq!(d.key.as_deref(), Some(d.headers["chain_segment"].as_str()));
    assert!(!d.headers.contains_key("chain_seq"), "a digest is no link");
    // The restart went on from the digest state the checkpoint saved.
    let saved_digest = &at_kill["chain"]["digest"];
    let from_saved = digests
        .iter()
        .filter(|c| {
            c.value["first_seq"].as_u64() == saved_digest["seq"].as_u64().map(|s| s + 1)
                && c.value["prev_signature"] == saved_digest["signature"]
        })
        .count();
    assert!(
        from_saved >= 1,
        "a digest after the restart names the saved one: {saved_digest}"
    );

    let public_arg = public.to_str().unwrap();
    let config_arg = config.to_str().unwrap();
    let (code, report, stderr) = verify(&["--config", config_arg, "--public-key", public_arg]);
    assert_eq!(code, 0, "clean:\n{stderr}\n{report:#}");
    assert_eq!(report["clean"], true);
    assert_eq!(report["keyed"], true, "the chain key came from the config");
    assert_eq!(
        report["digest_topic"], DIGEST_TOPIC,
        "so did the digest topic"
    );
    assert_eq!(report["signatures_checked"], true);
    assert_eq!(report["findings"].as_array().unwrap().len(), 0);
    let segment = &report["streams"][0]["segments"][0];
    assert_eq!(segment["distinct"], records as u64, "{segment}");
    assert!(
        report["duplicates"].as_u64().unwrap() > 0,
        "the kill left records sent twice: {report:#}"
    );
    assert!(segment["digests"]["valid"].as_u64().unwrap() >= want_digests as u64);
    assert_eq!(segment["digests"]["failed"], 0);
    assert_eq!(
        segment["digests"]["last_seq_signed"],
        (want_digests * 50) as u64
    );
    eprintln!(
        "{records} records, {} duplicates, {} digests valid",
        report["duplicates"], segment["digests"]["valid"]
    );

    // One record's value changed in a copy of the topic: a hash mismatch at its seq.
    let messages = consumed.len();
    let mut altered_seq = 0;
    copy_topic(&broker, TOPIC, messages, "audit-altered", |all| {
        let m = &mut all[messages / 3];
        altered_seq = m.headers["chain_seq"].parse().unwrap();
        let text = String::from_utf8(m.raw.clone()).unwrap();
        let changed = text.replacen("dataSourceGet", "dataSourceGot", 1);
        assert_ne!(text, changed);
        m.raw = changed.into_bytes();
    });
    let (code, report, stderr) = verify(&[
        "--config",
        config_arg,
        "--public-key",
        public_arg,
        "--topic",
        "audit-altered",
    ]);
    assert_eq!(code, 1, "tampering:\n{stderr}");
    let mismatches: Vec<_> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "hash_mismatch")
        .collect();
    assert!(!mismatches.is_empty(), "{report:#}");
    assert!(
        mismatches.iter().all(|f| f["seq"] == altered_seq),
        "named at seq {altered_seq}: {mismatches:?}"
    );
    assert!(stderr.contains("hash_mismatch"), "{stderr}");
}

#[test]
fn a_missing_signing_key_stops_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("signing/ed25519.pem");
    let config = dir.path().join("auditrail.yaml");
    std::fs::write(
        &config,
        format!(
            "{base}integrity:\n  chain: true\n  digests: {{topic: {DIGEST_TOPIC}, signing_key_file: {key}}}\n\
             outputs:\n  kafka: {{brokers: \"127.0.0.1:1\"}}\n",
            base = support::service_yaml(dir.path()),
            key = missing.display(),
        ),
    )
    .unwrap();
    let out = std::process::Command::new(support::bin())
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "a usage error:\n{stderr}");
    assert!(stderr.contains("ed25519.pem"), "names the file:\n{stderr}");
    let exported = std::process::Command::new(support::bin())
        .args(["integrity", "public-key", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(exported.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&exported.stderr).contains("ed25519.pem"));
}
