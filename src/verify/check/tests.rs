//! The checker on hand-built message sequences: the chain made with `integrity`'s own
//! `ChainHasher` and `Signer`, as the writer makes it, then dropped, duplicated, reordered
//! or altered by hand.

use super::*;
use crate::integrity::{Digest, Signer, HEADER_SEQ};
use crate::verify::chunks::tests::chunked;

const STREAM: &str = "pod-uid/app/0.log";
const SEGMENT: &str = "00000000000000aa";

/// Makes a segment's records one after another, as the writer would.
struct Writer {
    hasher: ChainHasher,
    seq: u64,
    prev: Hash,
    offset: i64,
}

impl Writer {
    fn new(hasher: ChainHasher) -> Writer {
        Writer {
            hasher,
            seq: 0,
            prev: genesis(STREAM, SEGMENT),
            offset: 0,
        }
    }

    /// The chain headers of the next record with `value`, and its hash.
    fn next_headers(&mut self, record_type: &str, value: &[u8]) -> Vec<(String, String)> {
        self.seq += 1;
        let hash = self.hasher.link(self.seq, &self.prev, value);
        let headers = vec![
            ("id".to_owned(), format!("id-{}", self.seq)),
            ("type".to_owned(), record_type.to_owned()),
            (HEADER_STREAM.to_owned(), STREAM.to_owned()),
            (HEADER_SEGMENT.to_owned(), SEGMENT.to_owned()),
            (HEADER_SEQ.to_owned(), self.seq.to_string()),
            (HEADER_PREV.to_owned(), hex(&self.prev)),
            (HEADER_HASH.to_owned(), hex(&hash)),
            (
                HEADER_ALGORITHM.to_owned(),
                self.hasher.algorithm().to_owned(),
            ),
        ];
        self.prev = hash;
        headers
    }

    fn next_of(&mut self, record_type: &str) -> Message {
        let value =
            format!(r#"{{"id":"id-{}","type":"{record_type}"}}"#, self.seq + 1).into_bytes();
        let headers = self.next_headers(record_type, &value);
        self.offset += 1;
        Message {
            topic: "audit".into(),
            partition: 0,
            offset: self.offset - 1,
            headers,
            value,
        }
    }

    fn next(&mut self) -> Message {
        self.next_of("event")
    }

    fn records(&mut self, n: usize) -> Vec<Message> {
        (0..n).map(|_| self.next()).collect()
    }
}

fn check(messages: impl IntoIterator<Item = Message>) -> Report {
    check_with(Settings::default(), messages)
}

fn check_with(settings: Settings, messages: impl IntoIterator<Item = Message>) -> Report {
    let mut checker = Checker::new(settings);
    for m in messages {
        checker.message(m);
    }
    checker.finish()
}

fn segment(report: &Report) -> &SegmentReport {
    &report.streams[0].segments[0]
}

/// (kind, seq) of every finding, in order.
fn findings(report: &Report) -> Vec<(FindingKind, Option<u64>)> {
    report.findings.iter().map(|f| (f.kind, f.seq)).collect()
}

fn set_header(m: &mut Message, name: &str, value: &str) {
    for (n, v) in &mut m.headers {
        if n == name {
            *v = value.to_owned();
        }
    }
}

fn keys(dir: &std::path::Path, name: &str) -> (Signer, Verifier) {
    let key = openssl::pkey::PKey::generate_ed25519().unwrap();
    let private = dir.join(format!("{name}.pem"));
    std::fs::write(&private, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let verifier = Verifier::from_pem(&key.public_key_to_pem().unwrap()).unwrap();
    (Signer::from_pem_file(&private).unwrap(), verifier)
}

/// A digest record of `first..=last` whose last link is `records[last - 1]`'s.
fn digest(
    signer: &Signer,
    records: &[Message],
    first: u64,
    last: u64,
    prev_signature: &str,
) -> (SignedDigest, Message) {
    let last_hash = records[last as usize - 1]
        .header(HEADER_HASH)
        .unwrap()
        .to_owned();
    let signed = signer
        .sign(Digest {
            stream: STREAM.into(),
            segment: SEGMENT.into(),
            first_seq: first,
            last_seq: last,
            last_hash,
            prev_signature: prev_signature.into(),
            time: "2026-12-02T09:00:00.000Z".into(),
            key_id: signer.key_id().into(),
        })
        .unwrap();
    let message = digest_message(&signed, last as i64);
    (signed, message)
}

fn digest_message(signed: &SignedDigest, offset: i64) -> Message {
    Message {
        topic: "audit-digests".into(),
        partition: 0,
        offset,
        headers: vec![("type".into(), DIGEST_TYPE.into())],
        value: serde_json::to_vec(signed).unwrap(),
    }
}

fn with_key(verifier: Verifier) -> Settings {
    Settings {
        verifier: Some(verifier),
        digest_topic: Some("audit-digests".into()),
        ..Settings::default()
    }
}

#[test]
fn a_clean_chain_over_two_topics_and_partitions_passes() {
    let mut w = Writer::new(ChainHasher::plain());
    let mut records = w.records(6);
    // Records of one segment go to several class topics and partitions.
    records[1].topic = "audit-forever".into();
    records[4].partition = 1;
    records[5].partition = 1;
    let report = check(records);
    assert!(report.clean, "{:?}", report.findings);
    let s = segment(&report);
    assert_eq!((s.records, s.distinct, s.duplicates), (6, 6, 0));
    assert_eq!((s.first_seq, s.last_seq), (Some(1), Some(6)));
    assert!(s.missing.is_empty());
    assert_eq!(report.streams[0].stream, STREAM);
}

#[test]
fn a_record_sent_again_after_a_restart_is_a_counted_duplicate() {
    let mut w = Writer::new(ChainHasher::plain());
    let records = w.records(5);
    // The restart re-reads from seq 3: the same seq and hash again.
    let mut sent: Vec<Message> = records.clone();
    sent.extend(records[2..].iter().cloned());
    sent.extend(w.records(2));
    let report = check(sent);
    assert!(report.clean, "{:?}", report.findings);
    assert_eq!(
        (segment(&report).records, segment(&report).duplicates),
        (10, 3)
    );
    assert_eq!(report.duplicates, 3);
}

#[test]
fn a_dropped_record_is_a_missing_range() {
    let mut w = Writer::new(ChainHasher::plain());
    let mut records = w.records(6);
    records.remove(2);
    records.remove(2);
    let report = check(records);
    assert!(!report.clean);
    assert_eq!(findings(&report), vec![(FindingKind::Missing, Some(3))]);
    assert_eq!(report.findings[0].last_seq, Some(4));
    assert_eq!(segment(&report).missing, vec![[3, 4]]);
}

#[test]
fn two_records_swapped_in_a_partition_are_a_reordering() {
    let mut w = Writer::new(ChainHasher::plain());
    let mut records = w.records(5);
    records.swap(2, 3);
    let report = check(records);
    assert_eq!(findings(&report), vec![(FindingKind::Reordered, Some(3))]);
    assert_eq!(segment(&report).reorderings, 1);
    assert!(segment(&report).missing.is_empty());
}

#[test]
fn an_altered_value_is_a_hash_mismatch_at_its_seq() {
    let mut w = Writer::new(ChainHasher::plain());
    let mut records = w.records(5);
    records[2].value = br#"{"id":"id-3","type":"innocent"}"#.to_vec();
    let report = check(records);
    assert_eq!(
        findings(&report),
        vec![(FindingKind::HashMismatch, Some(3))]
    );
    assert_eq!(report.findings[0].offset, Some(2));
}

#[test]
fn an_altered_chain_header_is_a_hash_mismatch_and_a_broken_link() {
    let mut w = Writer::new(ChainHasher::plain());
    let mut records = w.records(5);
    set_header(&mut records[2], HEADER_PREV, &hex(&[0u8; 32]));
    let report = check(records);
    assert_eq!(
        findings(&report),
        vec![
            (FindingKind::HashMismatch, Some(3)),
            (FindingKind::BrokenLink, Some(3))
        ]
    );
}

#[test]
fn a_record_altered_and_hashed_again_breaks_the_next_link() {
    let mut w = Writer::new(ChainHasher::plain());
    let mut records = w.records(5);
    // Whoever alters a record without the chain key can recompute its own hash, not the
    // next record's prev.
    let value = br#"{"id":"id-3","type":"innocent"}"#.to_vec();
    let prev = parse_hex::<32>(records[2].header(HEADER_PREV).unwrap()).unwrap();
    let hash = ChainHasher::plain().link(3, &prev, &value);
    records[2].value = value;
    set_header(&mut records[2], HEADER_HASH, &hex(&hash));
    let report = check(records);
    assert_eq!(findings(&report), vec![(FindingKind::BrokenLink, Some(4))]);
}

#[test]
fn two_different_records_with_one_seq_are_a_conflict() {
    let mut w = Writer::new(ChainHasher::plain());
    let records = w.records(3);
    let mut other = Writer::new(ChainHasher::plain());
    let mut forged = other.records(2).remove(1);
    forged.value = b"{}".to_vec();
    let prev = parse_hex::<32>(forged.header(HEADER_PREV).unwrap()).unwrap();
    set_header(
        &mut forged,
        HEADER_HASH,
        &hex(&ChainHasher::plain().link(2, &prev, b"{}")),
    );
    let mut all = records;
    all.push(forged);
    let report = check(all);
    assert_eq!(findings(&report), vec![(FindingKind::Conflict, Some(2))]);
}

#[test]
fn a_gap_record_is_a_counted_link_not_a_failure() {
    let mut w = Writer::new(ChainHasher::plain());
    let mut records = w.records(2);
    records.push(w.next_of(GAP_TYPE));
    records.extend(w.records(2));
    let report = check(records);
    assert!(report.clean, "{:?}", report.findings);
    assert_eq!((segment(&report).gaps, report.gaps), (1, 1));
    assert_eq!(segment(&report).distinct, 5);
}

#[test]
fn a_record_without_chain_headers_is_unchained() {
    let mut w = Writer::new(ChainHasher::plain());
    let mut records = w.records(2);
    let mut bare = w.next();
    bare.headers.retain(|(n, _)| !n.starts_with("chain_"));
    records.push(bare);
    let report = check(records);
    assert_eq!(report.unchained, 1);
    assert_eq!(findings(&report), vec![(FindingKind::Unchained, None)]);
}

#[test]
fn a_chunked_record_is_joined_then_checked() {
    let mut w = Writer::new(ChainHasher::plain());
    let mut messages = w.records(1);
    let big = format!(r#"{{"id":"id-2","record":"{}"}}"#, "x".repeat(5000)).into_bytes();
    let headers = w.next_headers("event", &big);
    let borrowed: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let chunks = chunked("audit", 1, &borrowed, &big, 1000);
    assert_eq!(chunks.len(), 6);
    messages.extend(chunks.iter().cloned());
    messages.extend(w.records(1));
    let report = check(messages.clone());
    assert!(report.clean, "{:?}", report.findings);
    assert_eq!((report.messages, report.records), (8, 3));
    assert_eq!(segment(&report).distinct, 3);

    // One chunk changed: the joined record fails its checksum, and its seq is missing.
    messages[3].value[10] ^= 1;
    let report = check(messages);
    assert_eq!(
        findings(&report),
        vec![
            (FindingKind::ChunkChecksum, None),
            (FindingKind::Missing, Some(2))
        ]
    );
}

#[test]
fn signed_digests_that_agree_with_the_records_pass() {
    let dir = tempfile::tempdir().unwrap();
    let (signer, verifier) = keys(dir.path(), "signing");
    let mut w = Writer::new(ChainHasher::plain());
    let records = w.records(6);
    let (first, first_message) = digest(&signer, &records, 1, 3, "");
    let (_, second_message) = digest(&signer, &records, 4, 6, &first.signature);
    let mut all = records;
    all.push(first_message);
    all.push(second_message);
    let report = check_with(with_key(verifier), all);
    assert!(report.clean, "{:?}", report.findings);
    let d = &segment(&report).digests;
    assert_eq!((d.total, d.valid, d.failed), (2, 2, 0));
    assert_eq!(d.last_seq_signed, Some(6));
}

#[test]
fn a_changed_digest_fails_its_signature() {
    let dir = tempfile::tempdir().unwrap();
    let (signer, verifier) = keys(dir.path(), "signing");
    let mut w = Writer::new(ChainHasher::plain());
    let records = w.records(4);
    let (mut signed, _) = digest(&signer, &records, 1, 4, "");
    signed.digest.last_seq = 3;
    let mut all = records;
    all.push(digest_message(&signed, 0));
    let report = check_with(with_key(verifier), all);
    assert_eq!(
        findings(&report),
        vec![(FindingKind::DigestBadSignature, Some(3))]
    );
    assert_eq!(segment(&report).digests.failed, 1);
}

#[test]
fn a_digest_signed_with_another_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (_, verifier) = keys(dir.path(), "signing");
    let (other, _) = keys(dir.path(), "other");
    let mut w = Writer::new(ChainHasher::plain());
    let records = w.records(4);
    let (_, message) = digest(&other, &records, 1, 4, "");
    let mut all = records;
    all.push(message);
    let report = check_with(with_key(verifier), all);
    assert_eq!(
        findings(&report),
        vec![(FindingKind::DigestOtherKey, Some(4))]
    );
    assert!(report.findings[0].detail.contains(other.key_id()));
}

#[test]
fn a_digest_beyond_the_records_shows_a_truncated_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (signer, verifier) = keys(dir.path(), "signing");
    let mut w = Writer::new(ChainHasher::plain());
    let mut records = w.records(6);
    let (_, message) = digest(&signer, &records, 1, 6, "");
    records.truncate(4);
    records.push(message);
    let report = check_with(with_key(verifier), records);
    assert_eq!(
        findings(&report),
        vec![
            (FindingKind::DigestWithoutRecord, Some(6)),
            (FindingKind::Missing, Some(5))
        ]
    );
    assert_eq!(segment(&report).missing, vec![[5, 6]]);
}

#[test]
fn a_signed_digest_that_disagrees_with_the_records_or_its_predecessor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (signer, verifier) = keys(dir.path(), "signing");
    let mut w = Writer::new(ChainHasher::plain());
    let records = w.records(6);
    // Signed by the right key over the hash of seq 2, but naming seq 3.
    let (_, first) = digest(&signer, &records, 1, 2, "");
    let mut wrong: SignedDigest = serde_json::from_slice(&first.value).unwrap();
    wrong.digest.last_seq = 3;
    let wrong = signer.sign(wrong.digest).unwrap();
    let (_, orphan) = digest(&signer, &records, 4, 6, "not-a-signature-of-this-segment");
    let mut all = records;
    all.push(digest_message(&wrong, 0));
    all.push(orphan);
    let report = check_with(with_key(verifier), all);
    assert_eq!(
        findings(&report),
        vec![
            (FindingKind::DigestMismatch, Some(3)),
            (FindingKind::DigestChainBroken, Some(4))
        ]
    );
}

#[test]
fn keyed_links_are_recomputed_with_the_key_and_unkeyed_ones_named() {
    let key = ChainHasher::keyed(b"chain secret\n").unwrap();
    let mut w = Writer::new(key.clone());
    let records = w.records(3);
    let keyed = || Settings {
        key: Some(ChainHasher::keyed(b"chain secret\n").unwrap()),
        ..Settings::default()
    };
    let report = check_with(keyed(), records.clone());
    assert!(report.clean, "{:?}", report.findings);
    assert!(report.keyed);

    // Without the key: the links cannot be recomputed, and the report says so once.
    let report = check(records.clone());
    assert_eq!(findings(&report), vec![(FindingKind::KeyNeeded, Some(1))]);

    // A wrong key: every link mismatches.
    let wrong = Settings {
        key: Some(ChainHasher::keyed(b"another").unwrap()),
        ..Settings::default()
    };
    assert_eq!(
        check_with(wrong, records).finding_counts[&FindingKind::HashMismatch],
        3
    );

    // A chain rewritten without the key, in plain SHA-256.
    let mut plain = Writer::new(ChainHasher::plain());
    let report = check_with(keyed(), plain.records(2));
    assert_eq!(
        findings(&report),
        vec![
            (FindingKind::UnkeyedLink, Some(1)),
            (FindingKind::UnkeyedLink, Some(2))
        ]
    );
}

#[test]
fn the_report_serialises_with_each_finding_where_it_is() {
    let mut w = Writer::new(ChainHasher::plain());
    let mut records = w.records(3);
    records[1].value = b"{}".to_vec();
    let report = check(records);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["clean"], false);
    let f = &json["findings"][0];
    assert_eq!(f["kind"], "hash_mismatch");
    assert_eq!(f["stream"], STREAM);
    assert_eq!(f["segment"], SEGMENT);
    assert_eq!(f["seq"], 2);
    assert_eq!(
        (
            f["topic"].as_str(),
            f["partition"].as_i64(),
            f["offset"].as_i64()
        ),
        (Some("audit"), Some(0), Some(1))
    );
    assert_eq!(json["finding_counts"]["hash_mismatch"], 1);
    assert_eq!(json["streams"][0]["segments"][0]["hash_mismatches"], 1);
    assert!(
        report.summary().contains("hash_mismatch"),
        "{}",
        report.summary()
    );
}
