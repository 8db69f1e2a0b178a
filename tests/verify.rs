//! `auditrail verify` (the real binary) against the real tansu broker (`support::broker`).
//!
//! The chained records are produced by the test itself with rdkafka, their links computed with
//! `integrity::ChainHasher` and their digests signed with `integrity::Signer`, exactly as the
//! protocol says: this stands in for the writer (being built in parallel) until the end-to-end
//! test, `auditrail run` with `integrity` on and then `verify`, exists.
//!
//! Tampering is done as someone with write access to the archive would: every message of a
//! topic is copied, in order, into a new topic, one of them changed, left out, or moved; or a
//! digest forged. `verify` must exit 1 and name the finding with its segment and seq.
// Test code: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use auditrail::integrity::{
    genesis, hex, ChainHasher, Digest, Hash, Signer, DIGEST_TYPE, HEADER_ALGORITHM, HEADER_HASH,
    HEADER_PREV, HEADER_SEGMENT, HEADER_SEQ, HEADER_STREAM,
};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use support::broker::Broker;

const DIGESTS: &str = "audit-digests";

/// One Kafka message, raw.
#[derive(Debug, Clone)]
struct Msg {
    partition: i32,
    key: String,
    headers: Vec<(String, String)>,
    value: Vec<u8>,
}

impl Msg {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap()
    }
}

/// One segment's chain, made as the writer makes it.
struct Segment {
    stream: String,
    segment: String,
    hasher: ChainHasher,
    seq: u64,
    prev: Hash,
}

impl Segment {
    fn new(stream: &str, segment: &str) -> Segment {
        Segment {
            stream: stream.into(),
            segment: segment.into(),
            hasher: ChainHasher::plain(),
            seq: 0,
            prev: genesis(stream, segment),
        }
    }

    /// The next record of this segment (an envelope-like value, headers as the Kafka output
    /// sets them plus the chain's).
    fn next(&mut self, record_type: &str, partition: i32) -> Msg {
        let id = format!("{}-{}", self.segment, self.seq + 1);
        let value = serde_json::to_vec(&serde_json::json!({
            "id": id, "type": record_type, "format": "immuta",
            "record": {"seq": self.seq + 1, "query": format!("SELECT {}", self.seq + 1)},
        }))
        .unwrap();
        self.next_with(&id, record_type, partition, value)
    }

    fn next_with(&mut self, id: &str, record_type: &str, partition: i32, value: Vec<u8>) -> Msg {
        self.seq += 1;
        let hash = self.hasher.link(self.seq, &self.prev, &value);
        let headers = [
            ("id", id.to_owned()),
            ("record_id", id.to_owned()),
            ("type", record_type.to_owned()),
            ("format", "immuta".to_owned()),
            ("retention_class", "standard".to_owned()),
            ("expires_at", String::new()),
            (HEADER_STREAM, self.stream.clone()),
            (HEADER_SEGMENT, self.segment.clone()),
            (HEADER_SEQ, self.seq.to_string()),
            (HEADER_PREV, hex(&self.prev)),
            (HEADER_HASH, hex(&hash)),
            (HEADER_ALGORITHM, self.hasher.algorithm().to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        self.prev = hash;
        Msg {
            partition,
            key: self.stream.clone(),
            headers,
            value,
        }
    }

    /// A digest of `first..=self.seq`, after the digest signed `prev_signature`.
    fn digest(&self, signer: &Signer, first: u64, prev_signature: &str) -> (String, Msg) {
        let signed = signer
            .sign(Digest {
                stream: self.stream.clone(),
                segment: self.segment.clone(),
                first_seq: first,
                last_seq: self.seq,
                last_hash: hex(&self.prev),
                prev_signature: prev_signature.into(),
                time: "2026-12-02T09:00:00.000Z".into(),
                key_id: signer.key_id().into(),
            })
            .unwrap();
        let message = digest_message(&self.stream, &self.segment, &signed);
        (signed.signature, message)
    }
}

fn digest_message(stream: &str, segment: &str, signed: &auditrail::integrity::SignedDigest) -> Msg {
    Msg {
        partition: 0,
        key: segment.into(),
        headers: vec![
            ("type".into(), DIGEST_TYPE.into()),
            (HEADER_STREAM.into(), stream.into()),
            (HEADER_SEGMENT.into(), segment.into()),
        ],
        value: serde_json::to_vec(signed).unwrap(),
    }
}

/// The messages the Kafka output sends for a record too large for its topic (the chunk
/// protocol of `output/kafka/chunk.rs`): `size` bytes of value each, the record's headers
/// and the four chunk headers on every one.
fn chunks(record: &Msg, size: usize) -> Vec<Msg> {
    use sha2::Digest as _;
    let sha = hex(&sha2::Sha256::digest(&record.value));
    let count = record.value.len().div_ceil(size);
    record
        .value
        .chunks(size)
        .enumerate()
        .map(|(i, part)| {
            let mut m = record.clone();
            m.value = part.to_vec();
            m.headers.extend([
                ("chunk_index".to_owned(), i.to_string()),
                ("chunk_count".to_owned(), count.to_string()),
                ("chunk_size".to_owned(), size.to_string()),
                ("chunk_sha256".to_owned(), sha.clone()),
            ]);
            m
        })
        .collect()
}

/// An Ed25519 key pair in `dir`: the signer and the public key's file.
fn keys(dir: &Path, name: &str) -> (Signer, PathBuf) {
    let key = openssl::pkey::PKey::generate_ed25519().unwrap();
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    std::fs::write(&private, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    std::fs::write(&public, key.public_key_to_pem().unwrap()).unwrap();
    (Signer::from_pem_file(&private).unwrap(), public)
}

/// Produces `messages` to `topic` in order, each to its partition, and waits for all acks.
fn produce(broker: &Broker, topic: &str, messages: &[Msg]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("enable.idempotence", "true")
        .set("linger.ms", "0")
        .create()
        .unwrap();
    for m in messages {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &m.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let record = BaseRecord::to(topic)
            .partition(m.partition)
            .key(&m.key)
            .payload(&m.value)
            .headers(headers);
        producer.send(record).map_err(|(e, _)| e).unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Every message of partition `partition` of `topic`, raw and in order (`want` of them).
fn read_back(broker: &Broker, topic: &str, partition: i32, want: usize) -> Vec<Msg> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("group.id", "verify-test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while out.len() < want {
        assert!(Instant::now() < deadline, "read {} of {want}", out.len());
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                String::from_utf8(h.value.unwrap_or_default().to_vec()).unwrap(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(Msg {
                partition: m.partition(),
                key: String::from_utf8(m.key().unwrap_or_default().to_vec()).unwrap(),
                headers,
                value: m.payload().unwrap_or_default().to_vec(),
            });
        }
    }
    out
}

/// What `auditrail verify` said: its exit code, its JSON report, its stderr.
struct Verdict {
    code: i32,
    report: Value,
    stderr: String,
}

impl Verdict {
    /// The findings of `kind`, as (stream, segment, seq, last_seq, topic).
    fn findings(&self, kind: &str) -> Vec<Value> {
        self.report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["kind"] == kind)
            .cloned()
            .collect()
    }

    /// Every finding's kind.
    fn kinds(&self) -> Vec<String> {
        self.report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["kind"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn verify(args: &[&str]) -> Verdict {
    let out = Command::new(support::bin())
        .arg("verify")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    Verdict {
        code: out.status.code().unwrap_or(-1),
        report,
        stderr,
    }
}

/// A topic of one segment, 10 records in one partition, and its two digests (seq 1-5, 6-10):
/// the original the tampering tests copy from. Returns the records and the digests.
fn original(broker: &Broker, signer: &Signer) -> (Vec<Msg>, Vec<Msg>) {
    broker.create_topic("audit", 1, "-1");
    broker.create_topic(DIGESTS, 1, "-1");
    let mut s = Segment::new("pod-1/app/live.log", "00000000000000a1");
    let mut records: Vec<Msg> = (0..5).map(|_| s.next("sqlQuery", 0)).collect();
    let (first, d1) = s.digest(signer, 1, "");
    records.extend((0..5).map(|_| s.next("sqlQuery", 0)));
    let (_, d2) = s.digest(signer, 6, &first);
    produce(broker, "audit", &records);
    produce(broker, DIGESTS, &[d1.clone(), d2.clone()]);
    (records, vec![d1, d2])
}

/// Copies every message of the single-partition `from` into a new topic `to`, passing the
/// list (read back from the broker, raw) through `change` first.
fn copy_topic(
    broker: &Broker,
    from: &str,
    want: usize,
    to: &str,
    change: impl FnOnce(&mut Vec<Msg>),
) {
    let mut all = read_back(broker, from, 0, want);
    change(&mut all);
    broker.create_topic(to, 1, "-1");
    produce(broker, to, &all);
}

fn tampered(broker: &Broker, public: &Path, topic: &str, digests: &str) -> Verdict {
    verify(&[
        "--brokers",
        &broker.address(),
        "--topic",
        topic,
        "--digest-topic",
        digests,
        "--public-key",
        public.to_str().unwrap(),
        "--progress-every",
        "0",
    ])
}

const SEGMENT: &str = "00000000000000a1";

/// Asserts one finding of `kind` at `seq` in the tampering tests' segment.
fn assert_one(v: &Verdict, kind: &str, seq: u64) -> Value {
    assert_eq!(v.code, 1, "exit 1 on tampering; stderr:\n{}", v.stderr);
    assert_eq!(v.report["clean"], false);
    let found = v.findings(kind);
    assert_eq!(found.len(), 1, "one {kind}: {:?}", v.kinds());
    let f = found[0].clone();
    assert_eq!(f["segment"], SEGMENT);
    assert_eq!(f["stream"], "pod-1/app/live.log");
    assert_eq!(f["seq"], seq, "{f}");
    assert!(
        v.stderr.contains(kind),
        "the summary names it:\n{}",
        v.stderr
    );
    f
}

// === tests ===

#[test]
fn a_clean_archive_with_duplicates_a_gap_and_a_chunked_record_passes_with_the_right_counts() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let (signer, public) = keys(dir.path(), "signing");
    broker.create_topic("audit-60d", 2, "5184000000");
    broker.create_topic("audit-forever", 1, "-1");
    broker.create_topic(DIGESTS, 1, "-1");

    // Segment a: 12 records in two class topics, one of them a record in chunks; 3 sent twice
    // (a re-send after a crash); digests at 6 and 12. Segment b: 5 records with a gap record,
    // in the other partition; one digest.
    let mut a = Segment::new("pod-1/app/live.log", "00000000000000a1");
    let mut b = Segment::new("pod-1/app/live.log", "00000000000000b2");
    let mut standard = Vec::new();
    let mut forever = Vec::new();
    let mut digests = Vec::new();
    for i in 0..6 {
        let m = a.next("dataSourceGet", 0);
        if i == 2 {
            forever.push(m);
        } else {
            standard.push(m);
        }
    }
    let (sig, d) = a.digest(&signer, 1, "");
    digests.push(d);
    standard.extend(standard[2..5].to_vec()); // the re-send: seq 4, 5, 6 again
    let big = serde_json::to_vec(&serde_json::json!({
        "id": "big", "type": "dataSourceGet", "record": {"blob": "x".repeat(20_000)}
    }))
    .unwrap();
    let record = a.next_with("big", "dataSourceGet", 0, big);
    standard.extend(chunks(&record, 4096));
    for _ in 0..5 {
        standard.push(a.next("dataSourceGet", 0));
    }
    digests.push(a.digest(&signer, 7, &sig).1);
    for i in 0..5 {
        let kind = if i == 2 {
            "auditrail.gap"
        } else {
            "dataSourceGet"
        };
        standard.push(b.next(kind, 1));
    }
    digests.push(b.digest(&signer, 1, "").1);
    produce(&broker, "audit-60d", &standard);
    produce(&broker, "audit-forever", &forever);
    produce(&broker, DIGESTS, &digests);

    // Brokers and topics from an auditrail config, as the CronJob runs it.
    let config = dir.path().join("auditrail.yaml");
    std::fs::write(
        &config,
        format!(
            "retention:\n  default: standard\n  classes:\n    standard: {{days: 60, topic: audit-60d}}\n    forever: {{days: null, topic: audit-forever}}\noutputs:\n  kafka:\n    brokers: \"{}\"\n",
            broker.address()
        ),
    )
    .unwrap();
    let v = verify(&[
        "--config",
        config.to_str().unwrap(),
        "--digest-topic",
        DIGESTS,
        "--public-key",
        public.to_str().unwrap(),
    ]);
    assert_eq!(v.code, 0, "clean: {:?}\n{}", v.kinds(), v.stderr);
    let r = &v.report;
    assert_eq!(r["clean"], true);
    assert_eq!(
        r["topics"],
        serde_json::json!(["audit-60d", "audit-forever"])
    );
    assert_eq!(
        r["records"],
        12 + 3 + 5,
        "whole records, the chunked one once"
    );
    assert_eq!(
        r["messages"],
        12 + 3 + 5 + 4 + 3,
        "chunks one by one, and the digests"
    );
    assert_eq!(r["duplicates"], 3);
    assert_eq!(r["gaps"], 1);
    assert_eq!(r["digests"], 3);
    let segments = r["streams"][0]["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 2);
    let (sa, sb) = (&segments[0], &segments[1]);
    assert_eq!(
        (sa["distinct"].as_u64(), sa["duplicates"].as_u64()),
        (Some(12), Some(3))
    );
    assert_eq!(sa["digests"]["valid"], 2);
    assert_eq!(sa["digests"]["last_seq_signed"], 12);
    assert_eq!(
        (sb["distinct"].as_u64(), sb["gaps"].as_u64()),
        (Some(5), Some(1))
    );
    assert!(v.stderr.contains("clean"), "{}", v.stderr);
}

#[test]
fn an_altered_record_in_a_copy_of_the_topic_is_a_hash_mismatch_at_its_seq() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let (signer, public) = keys(dir.path(), "signing");
    original(&broker, &signer);
    copy_topic(&broker, "audit", 10, "audit-altered", |all| {
        let text = String::from_utf8(all[3].value.clone()).unwrap();
        all[3].value = text.replace("SELECT 4", "SELECT 0").into_bytes();
    });
    let untouched = tampered(&broker, &public, "audit", DIGESTS);
    assert_eq!(
        untouched.code,
        0,
        "the original is clean: {:?}",
        untouched.kinds()
    );

    let v = tampered(&broker, &public, "audit-altered", DIGESTS);
    let f = assert_one(&v, "hash_mismatch", 4);
    assert_eq!(
        (f["topic"].as_str(), f["offset"].as_i64()),
        (Some("audit-altered"), Some(3))
    );
    assert_eq!(v.kinds(), vec!["hash_mismatch"]);
}

#[test]
fn a_dropped_record_is_a_missing_seq() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let (signer, public) = keys(dir.path(), "signing");
    original(&broker, &signer);
    copy_topic(&broker, "audit", 10, "audit-dropped", |all| {
        all.remove(6);
    });
    let v = tampered(&broker, &public, "audit-dropped", DIGESTS);
    let f = assert_one(&v, "missing", 7);
    assert_eq!(f["last_seq"], 7);
    assert_eq!(v.kinds(), vec!["missing"]);
}

#[test]
fn the_tail_cut_off_shows_through_the_digest() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let (signer, public) = keys(dir.path(), "signing");
    original(&broker, &signer);
    copy_topic(&broker, "audit", 10, "audit-cut", |all| {
        all.truncate(8);
    });
    let v = tampered(&broker, &public, "audit-cut", DIGESTS);
    assert_one(&v, "digest_without_record", 10);
    let f = assert_one(&v, "missing", 9);
    assert_eq!(f["last_seq"], 10);
}

#[test]
fn two_records_swapped_are_a_reordering() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let (signer, public) = keys(dir.path(), "signing");
    original(&broker, &signer);
    copy_topic(&broker, "audit", 10, "audit-reordered", |all| {
        all.swap(2, 3);
    });
    let v = tampered(&broker, &public, "audit-reordered", DIGESTS);
    let f = assert_one(&v, "reordered", 3);
    assert_eq!(f["offset"], 3);
    assert_eq!(v.kinds(), vec!["reordered"]);
}

#[test]
fn a_forged_digest_and_one_signed_with_another_key_are_named() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let (signer, public) = keys(dir.path(), "signing");
    let (other, _) = keys(dir.path(), "other");
    let (records, digests) = original(&broker, &signer);
    // The second digest changed to end at seq 8 (to hide 9 and 10); and a digest of the same
    // range signed by someone else's key.
    copy_topic(&broker, DIGESTS, 2, "digests-forged", |all| {
        let mut forged: auditrail::integrity::SignedDigest =
            serde_json::from_slice(&all[1].value).unwrap();
        forged.digest.last_seq = 8;
        forged.digest.last_hash = records[7].header(HEADER_HASH).to_owned();
        all[1].value = serde_json::to_vec(&forged).unwrap();
        let mut theirs = forged.digest.clone();
        theirs.key_id = other.key_id().to_owned();
        let signed = other.sign(theirs).unwrap();
        all.push(digest_message("pod-1/app/live.log", SEGMENT, &signed));
    });
    assert_eq!(digests.len(), 2);
    let v = tampered(&broker, &public, "audit", "digests-forged");
    assert_one(&v, "digest_bad_signature", 8);
    let f = assert_one(&v, "digest_other_key", 8);
    assert!(
        f["detail"].as_str().unwrap().contains(other.key_id()),
        "{f}"
    );
    assert_eq!(f["topic"], "digests-forged");
}

#[test]
fn no_broker_is_a_connection_error_with_exit_code_2() {
    let port = support::broker::free_port();
    let v = verify(&[
        "--brokers",
        &format!("127.0.0.1:{port}"),
        "--topic",
        "audit",
    ]);
    assert_eq!(v.code, 2, "{}", v.stderr);
    assert!(v.stderr.contains("topic audit"), "{}", v.stderr);
    assert_eq!(v.report, Value::Null, "no report when nothing was verified");
}

/// A figure, not a check of one (run by hand: `cargo test --test verify throughput --
/// --ignored --nocapture`): records verified per second, one segment of `AUDITRAIL_VERIFY_N`
/// records (100,000 by default) in 2 partitions; and the progress line on stderr.
#[test]
#[ignore]
fn throughput() {
    let n: usize = std::env::var("AUDITRAIL_VERIFY_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let broker = Broker::start();
    broker.create_topic("audit", 2, "-1");
    let mut s = Segment::new("pod-1/app/live.log", "00000000000000a1");
    let records: Vec<Msg> = (0..n).map(|i| s.next("sqlQuery", (i % 2) as i32)).collect();
    let bytes: usize = records.iter().map(|m| m.value.len()).sum();
    produce(&broker, "audit", &records);
    let start = Instant::now();
    let v = verify(&[
        "--brokers",
        &broker.address(),
        "--topic",
        "audit",
        "--progress-every",
        "1",
    ]);
    let took = start.elapsed();
    assert_eq!(v.code, 0, "{}", v.stderr);
    assert_eq!(v.report["records"], n);
    eprintln!(
        "verified {n} records ({} bytes of values) in {:.2} s: {:.0} records/s\n{}",
        bytes,
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        v.stderr
    );
    if took > Duration::from_secs(2) {
        assert!(
            v.stderr.contains("messages read ("),
            "a progress line:\n{}",
            v.stderr
        );
    }
}
