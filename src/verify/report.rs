//! What `verify` found: counts per stream and segment, and each finding with where it is.
//! Serialised as the JSON report on stdout; [`Report::summary`] is the text for stderr.

use std::fmt::Write as _;

use serde::Serialize;

/// At most this many findings are listed in the report (all are counted): a topic of a
/// million records without chain headers is one problem, not a million lines.
pub(crate) const MAX_LISTED: usize = 10_000;

/// A sign of tampering or loss. Each is a reason for exit code 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A record without the chain headers (or with ones that cannot be read): nothing
    /// proves where it came from.
    Unchained,
    /// The link recomputed from the record's value, `chain_seq` and `chain_prev` is not its
    /// `chain_hash`: the value or those headers were changed.
    HashMismatch,
    /// `chain_prev` is not the hash of the segment's previous link (the genesis hash for
    /// seq 1): a record was replaced, inserted or re-hashed.
    BrokenLink,
    /// Two different records claim the same seq of one segment.
    Conflict,
    /// Seqs no record in the topics carries (up to the highest seq seen or signed).
    Missing,
    /// A seq lower than one already read from the same partition for the same segment, and
    /// not a duplicate: records were reordered.
    Reordered,
    /// A link claims plain SHA-256 although the chain is keyed (`--chain-key-file`): it could
    /// have been made by anyone.
    UnkeyedLink,
    /// Links are HMAC-SHA-256 but no `--chain-key-file` was given: they were not recomputed.
    KeyNeeded,
    /// A `chain_alg` this version does not know.
    UnknownAlgorithm,
    /// A chunked record whose joined chunks do not match its `chunk_sha256`.
    ChunkChecksum,
    /// A chunked record some chunks of which never arrived (or chunk headers that cannot be
    /// read).
    IncompleteChunks,
    /// A digest record whose value is not a signed digest.
    DigestUnreadable,
    /// A digest whose signature is not valid for the public key.
    DigestBadSignature,
    /// A digest signed by another key than the one given (`key_id` differs).
    DigestOtherKey,
    /// A digest whose `last_hash` is not the hash of the record at its `last_seq`.
    DigestMismatch,
    /// A digest names a `last_seq` no record in the topics carries (records lost, e.g. at the
    /// segment's tail).
    DigestWithoutRecord,
    /// A digest's `prev_signature` is not the signature of any digest of its segment (and it
    /// is not the segment's first digest).
    DigestChainBroken,
}

/// One finding, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    /// The stream and segment (empty when the record carries none).
    pub stream: String,
    pub segment: String,
    /// The seq (the first of a range).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The last seq of a range ([`FindingKind::Missing`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    pub detail: String,
}

/// Counts of one segment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SegmentReport {
    pub segment: String,
    /// Records read, duplicates included.
    pub records: u64,
    /// Distinct seqs read.
    pub distinct: u64,
    /// Records read again with the same seq and hash (expected under at-least-once).
    pub duplicates: u64,
    /// Gap records (type `auditrail.gap`): a known loss the chain carries, not a failure.
    pub gaps: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Missing seq ranges, inclusive.
    pub missing: Vec<[u64; 2]>,
    pub hash_mismatches: u64,
    pub broken_links: u64,
    pub conflicts: u64,
    pub reorderings: u64,
    pub digests: DigestCounts,
}

/// The digests of one segment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DigestCounts {
    pub total: u64,
    /// Signature valid for the given key and agreeing with the records.
    pub valid: u64,
    /// Signature not checked (no `--public-key`), agreeing with the records.
    pub unchecked: u64,
    pub failed: u64,
    /// The highest `last_seq` a digest covers, and that digest's time: records after it are
    /// not covered by any digest yet (a truncated tail shows only here).
    pub last_seq_signed: Option<u64>,
    pub last_time: Option<String>,
}

/// The segments of one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StreamReport {
    pub stream: String,
    pub segments: Vec<SegmentReport>,
}

/// What a run read and found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// No finding: see `verify`'s module doc for what that proves.
    pub clean: bool,
    pub topics: Vec<String>,
    pub digest_topic: Option<String>,
    /// Whether digest signatures were checked (`--public-key`).
    pub signatures_checked: bool,
    /// Whether links were recomputed as HMAC (`--chain-key-file`).
    pub keyed: bool,
    /// Kafka messages read (chunks counted one by one).
    pub messages: u64,
    /// Whole records read (after reassembly), digests not included.
    pub records: u64,
    pub duplicates: u64,
    pub gaps: u64,
    pub digests: u64,
    /// Records without chain headers.
    pub unchained: u64,
    /// Sendings of chunked records left incomplete because another sending arrived whole.
    pub abandoned_chunk_sendings: u64,
    /// Findings by kind (all of them, listed or not).
    pub finding_counts: std::collections::BTreeMap<FindingKind, u64>,
    /// Findings beyond [`MAX_LISTED`], counted but not listed.
    pub findings_not_listed: u64,
    pub streams: Vec<StreamReport>,
    pub findings: Vec<Finding>,
    /// What the reader should know to read the report (partitions whose first records were
    /// deleted by retention, signatures not checked).
    pub notes: Vec<String>,
}

impl Report {
    /// The human summary for stderr: totals, each segment with something to say, and the
    /// first findings.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let verdict = if self.clean {
            "clean"
        } else {
            "TAMPERING OR LOSS FOUND"
        };
        let _ = writeln!(
            s,
            "auditrail verify: {verdict}: {} messages, {} records in {} segment(s), {} duplicates, {} gap records, {} digests, {} findings",
            self.messages,
            self.records,
            self.streams.iter().map(|s| s.segments.len()).sum::<usize>(),
            self.duplicates,
            self.gaps,
            self.digests,
            self.finding_counts.values().sum::<u64>()
        );
        for (kind, n) in &self.finding_counts {
            let _ = writeln!(s, "  {n} × {}", kind_name(*kind));
        }
        for f in self.findings.iter().take(20) {
            let at = match (f.seq, f.last_seq) {
                (Some(a), Some(b)) if a != b => format!(" seq {a}-{b}"),
                (Some(a), _) => format!(" seq {a}"),
                _ => String::new(),
            };
            let place = match (&f.topic, f.partition, f.offset) {
                (Some(t), Some(p), Some(o)) => format!(" ({t}/{p}@{o})"),
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "  {}: stream {:?} segment {:?}{at}{place}: {}",
                kind_name(f.kind),
                f.stream,
                f.segment,
                f.detail
            );
        }
        let listed = self.findings.len() as u64 + self.findings_not_listed;
        let total: u64 = self.finding_counts.values().sum();
        if total > 20.min(listed) {
            let _ = writeln!(s, "  … the JSON report on stdout lists the rest");
        }
        for note in &self.notes {
            let _ = writeln!(s, "  note: {note}");
        }
        s
    }
}

fn kind_name(kind: FindingKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
