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
    let checkpoint = dir.path().join("checkpoints/checkpoints.json");
    let saved = || {
        std::fs::read_to_string(&checkpoint)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .map(|v| v["files"][0].clone())
            .unwrap_or_default()
    };

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
fn verify(broker: &Broker, topic: &str) -> (i32, serde_json::Value) {
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
    let (code, report) = verify(&broker, topic);
    assert_eq!(code, 0, "verify reports no tampering: {report}");
}
