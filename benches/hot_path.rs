//! Micro-benchmarks of the per-line hot path (issue 8), so a regression shows up per function:
//!
//! - `frame/cri_ordinary`: CRI framing of an ordinary line (`Framer::frame`);
//! - `extract/ordinary`: the cheap pre-check rejecting an ordinary line (`Extractor::extract`
//!   returning `Ordinary`): this is what 9 lines in 10 cost after framing;
//! - `extract/audit`: detection of an Immuta audit line (pre-check, object parse, type, time);
//! - `envelope/build`: `Record::build` for that record (id hash, envelope JSON);
//! - `envelope/digest_sign`: one signed digest (`integrity.digests`), paid once per
//!   `every_records` records;
//! - `process/mixed_1000`: `Framer` + `Processor::process` over 1,000 lines of the standard
//!   workload's shape (10% audit), per line, without I/O or outputs.
//!
//! The lines have the shape `auditrail-gen` writes (see BENCHMARKS.md).
//!
//! ```sh
//! cargo bench --bench hot_path
//! cargo bench --bench hot_path -- extract/   # one group
//! ```
// Test code: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::hint::black_box;
use std::sync::Arc;

use auditrail::ack::Ack;
use auditrail::config::{Config, Purpose};
use auditrail::envelope::{EnvelopeParts, KeyStrategy, LineOrigin, Record, RetentionTag};
use auditrail::extract::{AuditConfig, Extraction, Extractor};
use auditrail::framing::{Format, Framer};
use auditrail::integrity::{ChainHasher, Digest, Signer};
use auditrail::line::{Framed, Stats, StreamInfo};
use auditrail::pipeline::Processor;
use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const ORDINARY: &str = r#"2026-01-01T00:00:00.000272000Z stdout F {"level":"info","timestamp":"2025-12-31T23:59:59.998Z","message":"user session refreshed","requestId":"6f9b6dae6f4c57a8","durationMs":334,"path":"/api/v2/user/profile/81535"}"#;

const AUDIT: &str = r#"2026-01-01T00:00:00.000409000Z stdout F {"level":"audit","timestamp":"2025-12-31T23:59:59.995Z","message":"Audit - blobFetch","id":"1f841063-3ef3-46ac-8973-05c5d1aab99f","dateTime":1767225599995,"component":"dataSource","profileId":2577,"userId":"user71377@example.com","recordType":"blobFetch","success":true,"dataAccess":{"dataSourceId":9977,"projectId":597,"purposeIds":[58,39],"query":"SELECT region_code, created_at, account_status FROM hr.employee_compensation WHERE account_status = '748235' AND postal_code > '2025-09-25' LIMIT 710"},"sessionId":"3c821fbf-5910-4163-a7ff-0d388687ffb2"}"#;

/// The text after the CRI prefix (`<time> stdout F `).
fn payload(line: &str) -> &str {
    line.splitn(4, ' ').nth(3).unwrap()
}

fn frame(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Elements(1));
    let mut framer = Framer::new(Format::Cri, 1 << 20);
    let line = ORDINARY.as_bytes();
    g.bench_function("cri_ordinary", |b| {
        b.iter(|| match framer.frame(black_box(line), black_box(4096)) {
            Framed::Line(l) => l.text.len(),
            _ => unreachable!(),
        })
    });
    g.finish();
}

fn extract(c: &mut Criterion) {
    let extractor = Extractor::new(&AuditConfig::default()).unwrap();
    let ordinary = payload(ORDINARY).as_bytes();
    let audit = payload(AUDIT).as_bytes();
    assert!(matches!(extractor.extract(ordinary), Extraction::Ordinary));
    assert!(matches!(extractor.extract(audit), Extraction::Audit(_)));
    let mut g = c.benchmark_group("extract");
    g.throughput(Throughput::Elements(1));
    g.bench_function("ordinary", |b| {
        b.iter(|| matches!(extractor.extract(black_box(ordinary)), Extraction::Ordinary))
    });
    g.bench_function("audit", |b| {
        b.iter(|| match extractor.extract(black_box(audit)) {
            Extraction::Audit(a) => a.record.len(),
            _ => unreachable!(),
        })
    });
    g.finish();
}

fn envelope(c: &mut Criterion) {
    let extractor = Extractor::new(&AuditConfig::default()).unwrap();
    let text = payload(AUDIT).as_bytes();
    let Extraction::Audit(audit) = extractor.extract(text) else {
        unreachable!()
    };
    let origin = LineOrigin {
        file:
            "/var/log/pods/shop_api-7d9f8c6b5-x2x9z_0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0/app/0.log",
        identity: 0x1234_5678_9abc_def0,
        stream: Some("stdout"),
        offset: 123_456_789,
        id_position: 123_456_789,
        time: Some("2026-01-01T00:00:00.000409000Z"),
        unterminated: false,
    };
    let retention = RetentionTag {
        class: Arc::from("forever"),
        days: None,
        topic: Arc::from("audit-forever"),
        expires_at: None,
    };
    let read_time: DateTime<Utc> = DateTime::from_timestamp_millis(1_767_225_600_123).unwrap();
    let mut g = c.benchmark_group("envelope");
    g.throughput(Throughput::Elements(1));
    g.bench_function("build", |b| {
        b.iter(|| {
            let r = build(&origin, black_box(text), &audit, &retention, read_time);
            r.value.len()
        })
    });
    // The chain's cost per record (`integrity.chain`): the envelope built and linked, with
    // plain SHA-256 and with HMAC; compare with `envelope/build` (the chain off does no work).
    let sample = build(&origin, text, &audit, &retention, read_time);
    let plain = ChainHasher::plain();
    let keyed = ChainHasher::keyed(b"a chain key from a Secret\n").unwrap_or_default();
    let prev = [7u8; 32];
    for (name, hasher) in [
        ("build_chained_sha256", &plain),
        ("build_chained_hmac", &keyed),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let r = build(&origin, black_box(text), &audit, &retention, read_time);
                hasher.link(1, &prev, &r.value)[0]
            })
        });
    }
    g.bench_function("link_sha256_only", |b| {
        b.iter(|| plain.link(1, &prev, black_box(&sample.value))[0])
    });
    // One digest's signature (`integrity.digests`): paid once per `every_records` records.
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("signing.pem");
    let key = openssl::pkey::PKey::generate_ed25519().unwrap();
    std::fs::write(&pem, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let signer = Signer::from_pem_file(&pem).unwrap();
    let digest = Digest {
        stream: "/var/log/pods/ns_pod_uid/app/0.log".into(),
        segment: "00000000000000ab".into(),
        first_seq: 1,
        last_seq: 1000,
        last_hash: auditrail::integrity::hex(&prev),
        prev_signature: "ab".repeat(64),
        time: "2026-12-02T09:00:00.000Z".into(),
        key_id: signer.key_id().into(),
    };
    g.bench_function("digest_sign", |b| {
        b.iter(|| {
            signer
                .sign(black_box(digest.clone()))
                .unwrap()
                .signature
                .len()
        })
    });
    g.finish();
}

fn build(
    origin: &LineOrigin<'_>,
    text: &[u8],
    audit: &auditrail::extract::AuditRecord<'_>,
    retention: &RetentionTag,
    read_time: DateTime<Utc>,
) -> Record {
    Record::build(
        EnvelopeParts {
            origin,
            line: text,
            format: audit.format,
            record_type: &audit.record_type,
            time: audit.time,
            retention: retention.clone(),
            kubernetes: None,
            pod_uid: None,
            prefix: audit.prefix,
            record: audit.record,
            suffix: audit.suffix,
            read_time,
            natural_id: audit.natural_id.as_deref(),
            fields: &audit.fields,
        },
        KeyStrategy::PodUid,
        Ack::none(),
    )
}

fn process(c: &mut Criterion) {
    let config = Config::from_yaml(
        r#"
source: {format: cri}
retention:
  default: standard
  classes:
    standard: {days: 60, topic: audit-60d}
    forever: {days: null, topic: audit-forever}
  types:
    forever: [sqlQuery, blobFetch, spark, globalPolicyCreate, policyExemption, dataSourceSubscription]
"#,
        Purpose::Check,
    )
    .unwrap();
    let processor = Processor::new(config.stages()).unwrap();
    let stream = StreamInfo::new("/var/log/pods/shop_api/app/0.log", 42);
    // Every tenth line an audit record, as in the standard workload.
    let lines: Vec<&[u8]> = (0..1000)
        .map(|i| if i % 10 == 0 { AUDIT } else { ORDINARY }.as_bytes())
        .collect();
    let mut g = c.benchmark_group("process");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("mixed_1000", |b| {
        let mut framer = Framer::new(Format::Cri, 1 << 20);
        b.iter(|| {
            let mut stats = Stats::default();
            let mut offset = 0u64;
            let mut bytes = 0usize;
            for line in &lines {
                let framed = framer.frame(line, offset);
                if let Some(r) = processor.process(framed, &stream, &mut stats, |_, _| Ack::none())
                {
                    bytes += r.value.len();
                }
                offset += line.len() as u64 + 1;
            }
            assert_eq!(stats.shipped, 100);
            bytes
        })
    });
    g.finish();
}

criterion_group!(benches, frame, extract, envelope, process);
criterion_main!(benches);
