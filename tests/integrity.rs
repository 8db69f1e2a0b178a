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
