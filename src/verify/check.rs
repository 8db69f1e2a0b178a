//! The checks, on messages in the order they were read; no Kafka here (`consume` feeds it).
//!
//! Per message: chunks are joined (`chunks`); a digest is kept for the end; a record's link is
//! recomputed from its value and headers at once (hash mismatch), its seq compared with what
//! its segment already holds (duplicate, conflict) and with the last seq read from the same
//! partition for the segment (reordering). At the end, per segment: each `chain_prev` against
//! the previous link's hash (or the genesis hash), the missing seq ranges, and the digests.
//!
//! Memory: per segment a map seq → (hash, prev, where read), about 120 bytes a record:
//! O(records), which is fine for the archives verify is run on today (10 million records ≈
//! 1.2 GB). The links are needed at the end because a segment's records may come from several
//! topics and partitions in any interleaving; a streaming check of one partition at a time
//! would bound it, and is left for when archives outgrow this.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::chunks::{Piece, Reassembler};
use super::report::{
    DigestCounts, Finding, FindingKind, Report, SegmentReport, StreamReport, MAX_LISTED,
};
use super::Message;
use crate::integrity::{
    genesis, hex, parse_hex, ChainHasher, Hash, SignedDigest, Verifier, DIGEST_TYPE,
    HEADER_ALGORITHM, HEADER_HASH, HEADER_PREV, HEADER_SEGMENT, HEADER_SEQ, HEADER_STREAM,
};
use crate::pipeline::GAP_TYPE;

/// How records are checked.
#[derive(Debug, Default)]
pub(crate) struct Settings {
    /// The chain key (`--chain-key-file`): links are recomputed as HMAC-SHA-256 with it.
    pub(crate) key: Option<ChainHasher>,
    /// The public key digests must be signed with (`--public-key`).
    pub(crate) verifier: Option<Verifier>,
    /// Every message of this topic is a digest (so is any message of type `auditrail.digest`).
    pub(crate) digest_topic: Option<String>,
}

/// Where a message was read.
#[derive(Debug, Clone)]
struct Location {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
}

/// A link as read from its record's headers.
#[derive(Debug)]
struct Link {
    hash: Hash,
    prev: Hash,
    at: Location,
}

#[derive(Debug, Default)]
struct Segment {
    links: BTreeMap<u64, Link>,
    records: u64,
    duplicates: u64,
    gaps: u64,
    /// The highest seq read for this segment from each (topic, partition).
    last_in_partition: HashMap<(Arc<str>, i32), u64>,
    hash_mismatches: u64,
    broken_links: u64,
    conflicts: u64,
    reorderings: u64,
    key_needed_reported: bool,
    digests: Vec<(SignedDigest, Location)>,
}

#[derive(Debug, Default)]
struct Findings {
    listed: Vec<Finding>,
    counts: BTreeMap<FindingKind, u64>,
    not_listed: u64,
}

impl Findings {
    fn add(
        &mut self,
        kind: FindingKind,
        (stream, segment): (&str, &str),
        seq: Option<u64>,
        at: Option<&Location>,
        detail: String,
    ) {
        *self.counts.entry(kind).or_default() += 1;
        if self.listed.len() >= MAX_LISTED {
            self.not_listed += 1;
            return;
        }
        self.listed.push(Finding {
            kind,
            stream: stream.to_owned(),
            segment: segment.to_owned(),
            seq,
            last_seq: None,
            topic: at.map(|a| a.topic.to_string()),
            partition: at.map(|a| a.partition),
            offset: at.map(|a| a.offset),
            detail,
        });
    }
}

/// The chain headers of a record, parsed.
struct Chain<'a> {
    stream: &'a str,
    segment: &'a str,
    seq: u64,
    prev: Hash,
    hash: Hash,
    algorithm: &'a str,
}

fn chain_headers(m: &Message) -> Result<Chain<'_>, String> {
    let get = |name: &str| m.header(name).ok_or_else(|| format!("no {name} header"));
    let stream = get(HEADER_STREAM)?;
    let segment = get(HEADER_SEGMENT)?;
    let seq = get(HEADER_SEQ)?
        .parse::<u64>()
        .ok()
        .filter(|s| *s >= 1)
        .ok_or_else(|| format!("{HEADER_SEQ} is not a number from 1"))?;
    let hash_header = |name: &str| {
        get(name).and_then(|h| {
            parse_hex::<32>(h).ok_or_else(|| format!("{name} is not 32 bytes of hex"))
        })
    };
    Ok(Chain {
        stream,
        segment,
        seq,
        prev: hash_header(HEADER_PREV)?,
        hash: hash_header(HEADER_HASH)?,
        algorithm: get(HEADER_ALGORITHM)?,
    })
}

/// Checks messages as they come, and reports at the end.
#[derive(Debug, Default)]
pub(crate) struct Checker {
    settings: Settings,
    plain: ChainHasher,
    reassembler: Reassembler,
    topics: HashMap<String, Arc<str>>,
    streams: BTreeMap<String, BTreeMap<String, Segment>>,
    findings: Findings,
    messages: u64,
    records: u64,
    digests: u64,
    unchained: u64,
}

impl Checker {
    pub(crate) fn new(settings: Settings) -> Checker {
        Checker {
            settings,
            ..Checker::default()
        }
    }

    /// Messages taken so far (chunks one by one, digests included).
    pub(crate) fn messages(&self) -> u64 {
        self.messages
    }

    /// Findings so far (those found only at the end not included).
    pub(crate) fn findings(&self) -> u64 {
        self.findings.counts.values().sum()
    }

    /// Takes the next message read (in the order of its partition).
    pub(crate) fn message(&mut self, message: Message) {
        self.messages += 1;
        match self.reassembler.take(message) {
            Piece::Pending => {}
            Piece::Whole(m) => self.record(m),
            Piece::BadChecksum { message, id } => {
                let at = self.location(&message);
                self.findings.add(
                    FindingKind::ChunkChecksum,
                    names(&message),
                    None,
                    Some(&at),
                    format!("the chunks of record {id} joined do not match its chunk_sha256"),
                );
            }
            Piece::BadChunk { message, why } => {
                let at = self.location(&message);
                self.findings.add(
                    FindingKind::IncompleteChunks,
                    names(&message),
                    None,
                    Some(&at),
                    why,
                );
            }
        }
    }

    fn location(&mut self, m: &Message) -> Location {
        let topic = match self.topics.get(&m.topic) {
            Some(t) => Arc::clone(t),
            None => {
                let t: Arc<str> = Arc::from(m.topic.as_str());
                self.topics.insert(m.topic.clone(), Arc::clone(&t));
                t
            }
        };
        Location {
            topic,
            partition: m.partition,
            offset: m.offset,
        }
    }

    fn record(&mut self, m: Message) {
        let at = self.location(&m);
        if self.settings.digest_topic.as_deref() == Some(m.topic.as_str())
            || m.header("type") == Some(DIGEST_TYPE)
        {
            self.digest(&m, at);
            return;
        }
        self.records += 1;
        let chain = match chain_headers(&m) {
            Ok(chain) => chain,
            Err(why) => {
                self.unchained += 1;
                self.findings.add(
                    FindingKind::Unchained,
                    names(&m),
                    None,
                    Some(&at),
                    format!("record {}: {why}", m.header("id").unwrap_or("without id")),
                );
                return;
            }
        };
        let place = (chain.stream, chain.segment);
        let segment = self
            .streams
            .entry(chain.stream.to_owned())
            .or_default()
            .entry(chain.segment.to_owned())
            .or_default();
        segment.records += 1;

        // The link, recomputed with the hasher its algorithm names.
        let hasher = match (chain.algorithm, &self.settings.key) {
            ("hmac-sha256", Some(key)) => Some(key),
            ("hmac-sha256", None) => {
                if !segment.key_needed_reported {
                    segment.key_needed_reported = true;
                    self.findings.add(
                        FindingKind::KeyNeeded,
                        place,
                        Some(chain.seq),
                        Some(&at),
                        "the links are HMAC-SHA-256: give --chain-key-file to recompute them; only their order and succession were checked".into(),
                    );
                }
                None
            }
            ("sha256", key) => {
                if key.is_some() {
                    self.findings.add(
                        FindingKind::UnkeyedLink,
                        place,
                        Some(chain.seq),
                        Some(&at),
                        "the link is plain SHA-256 although the chain is keyed: anyone could have made it".into(),
                    );
                }
                Some(&self.plain)
            }
            (other, _) => {
                self.findings.add(
                    FindingKind::UnknownAlgorithm,
                    place,
                    Some(chain.seq),
                    Some(&at),
                    format!("{HEADER_ALGORITHM} {other:?} is not one this version knows"),
                );
                None
            }
        };
        if let Some(hasher) = hasher {
            if hasher.link(chain.seq, &chain.prev, &m.value) != chain.hash {
                segment.hash_mismatches += 1;
                self.findings.add(
                    FindingKind::HashMismatch,
                    place,
                    Some(chain.seq),
                    Some(&at),
                    format!(
                        "record {}: the hash of its value, seq and prev is not its {HEADER_HASH}",
                        m.header("id").unwrap_or("without id")
                    ),
                );
            }
        }

        let last = segment
            .last_in_partition
            .entry((Arc::clone(&at.topic), at.partition))
            .or_default();
        let highest = *last;
        *last = highest.max(chain.seq);
        match segment.links.get(&chain.seq) {
            Some(link) if link.hash == chain.hash && link.prev == chain.prev => {
                segment.duplicates += 1;
            }
            Some(link) => {
                segment.conflicts += 1;
                let first = format!("{}/{}@{}", link.at.topic, link.at.partition, link.at.offset);
                self.findings.add(
                    FindingKind::Conflict,
                    place,
                    Some(chain.seq),
                    Some(&at),
                    format!("another record with this seq and another hash was read at {first}"),
                );
            }
            None => {
                if chain.seq < highest {
                    segment.reorderings += 1;
                    self.findings.add(
                        FindingKind::Reordered,
                        place,
                        Some(chain.seq),
                        Some(&at),
                        format!("read after seq {highest} of the same segment in this partition"),
                    );
                }
                if m.header("type") == Some(GAP_TYPE) {
                    segment.gaps += 1;
                }
                segment.links.insert(
                    chain.seq,
                    Link {
                        hash: chain.hash,
                        prev: chain.prev,
                        at,
                    },
                );
            }
        }
    }

    fn digest(&mut self, m: &Message, at: Location) {
        self.digests += 1;
        match serde_json::from_slice::<SignedDigest>(&m.value) {
            Ok(signed) => {
                let d = &signed.digest;
                self.streams
                    .entry(d.stream.clone())
                    .or_default()
                    .entry(d.segment.clone())
                    .or_default()
                    .digests
                    .push((signed, at));
            }
            Err(e) => self.findings.add(
                FindingKind::DigestUnreadable,
                names(m),
                None,
                Some(&at),
                format!("not a signed digest: {e}"),
            ),
        }
    }

    /// The checks that need every record, and the report.
    pub(crate) fn finish(mut self) -> Report {
        let left = std::mem::take(&mut self.reassembler).finish();
        for (message, seen, count) in &left.incomplete {
            let at = self.location(message);
            self.findings.add(
                FindingKind::IncompleteChunks,
                names(message),
                None,
                Some(&at),
                format!(
                    "record {}: {seen} of {count} chunks arrived, and no other sending of it",
                    message.header("id").unwrap_or("without id")
                ),
            );
        }
        let mut report = Report {
            signatures_checked: self.settings.verifier.is_some(),
            keyed: self.settings.key.is_some(),
            messages: self.messages,
            records: self.records,
            digests: self.digests,
            unchained: self.unchained,
            abandoned_chunk_sendings: left.abandoned as u64,
            digest_topic: self.settings.digest_topic.clone(),
            ..Report::default()
        };
        let streams = std::mem::take(&mut self.streams);
        for (stream, segments) in streams {
            let mut stream_report = StreamReport {
                stream: stream.clone(),
                segments: Vec::new(),
            };
            for (name, segment) in segments {
                let r = self.finish_segment(&stream, &name, segment);
                report.duplicates += r.duplicates;
                report.gaps += r.gaps;
                stream_report.segments.push(r);
            }
            report.streams.push(stream_report);
        }
        report.finding_counts = self.findings.counts;
        report.findings_not_listed = self.findings.not_listed;
        report.findings = self.findings.listed;
        report.clean = report.finding_counts.is_empty();
        if !report.signatures_checked && report.digests > 0 {
            report.notes.push(
                "digest signatures were not checked (no --public-key): the digests were only compared with the records".into(),
            );
        }
        report
    }

    fn finish_segment(&mut self, stream: &str, name: &str, mut s: Segment) -> SegmentReport {
        let place = (stream, name);
        let digests = self.check_digests(place, &mut s);

        // Each link's prev is its predecessor's hash (the genesis hash for seq 1).
        let start = genesis(stream, name);
        let mut before: Option<(u64, Hash)> = None;
        for (&seq, link) in &s.links {
            let expected = if seq == 1 {
                Some(start)
            } else {
                before.filter(|(b, _)| *b == seq - 1).map(|(_, h)| h)
            };
            if let Some(expected) = expected {
                if link.prev != expected {
                    s.broken_links += 1;
                    let what = if seq == 1 {
                        "the segment's genesis hash".to_owned()
                    } else {
                        format!("the hash of seq {}", seq - 1)
                    };
                    self.findings.add(
                        FindingKind::BrokenLink,
                        place,
                        Some(seq),
                        Some(&link.at),
                        format!("{HEADER_PREV} is not {what}"),
                    );
                }
            }
            before = Some((seq, link.hash));
        }

        // Missing: every seq from 1 to the highest read or signed that no record carries.
        let highest = s
            .links
            .keys()
            .next_back()
            .copied()
            .max(digests.last_seq_signed)
            .unwrap_or(0);
        let mut missing = Vec::new();
        let mut next = 1u64;
        for &seq in s.links.keys().chain(std::iter::once(&(highest + 1))) {
            if seq > next {
                missing.push([next, seq - 1]);
            }
            next = next.max(seq + 1);
        }
        for [a, b] in &missing {
            *self
                .findings
                .counts
                .entry(FindingKind::Missing)
                .or_default() += 1;
            if self.findings.listed.len() >= MAX_LISTED {
                self.findings.not_listed += 1;
                continue;
            }
            self.findings.listed.push(Finding {
                kind: FindingKind::Missing,
                stream: stream.to_owned(),
                segment: name.to_owned(),
                seq: Some(*a),
                last_seq: Some(*b),
                topic: None,
                partition: None,
                offset: None,
                detail: format!("{} record(s) no topic holds", b - a + 1),
            });
        }

        SegmentReport {
            segment: name.to_owned(),
            records: s.records,
            distinct: s.links.len() as u64,
            duplicates: s.duplicates,
            gaps: s.gaps,
            first_seq: s.links.keys().next().copied(),
            last_seq: s.links.keys().next_back().copied(),
            missing,
            hash_mismatches: s.hash_mismatches,
            broken_links: s.broken_links,
            conflicts: s.conflicts,
            reorderings: s.reorderings,
            digests,
        }
    }

    fn check_digests(&mut self, place: (&str, &str), s: &mut Segment) -> DigestCounts {
        let mut counts = DigestCounts {
            total: s.digests.len() as u64,
            ..DigestCounts::default()
        };
        let signatures: HashSet<&str> = s
            .digests
            .iter()
            .map(|(d, _)| d.signature.as_str())
            .collect();
        // The segment's first digest (the lowest first_seq) may name a predecessor that is
        // not there (deleted with its topic's retention); every later one must find its own.
        let first = s.digests.iter().map(|(d, _)| d.digest.first_seq).min();
        for (signed, at) in &s.digests {
            let d = &signed.digest;
            let before = self.findings.counts.values().sum::<u64>();
            let mut signature_ok = true;
            if let Some(verifier) = &self.settings.verifier {
                if d.key_id != verifier.key_id() {
                    signature_ok = false;
                    self.findings.add(
                        FindingKind::DigestOtherKey,
                        place,
                        Some(d.last_seq),
                        Some(at),
                        format!(
                            "seq {}-{} signed by key {:?}, not by the given key {:?}",
                            d.first_seq,
                            d.last_seq,
                            d.key_id,
                            verifier.key_id()
                        ),
                    );
                } else if !verifier.verify(signed) {
                    signature_ok = false;
                    self.findings.add(
                        FindingKind::DigestBadSignature,
                        place,
                        Some(d.last_seq),
                        Some(at),
                        format!(
                            "seq {}-{}: the signature is not valid for what the digest says",
                            d.first_seq, d.last_seq
                        ),
                    );
                }
            }
            if signature_ok {
                match s.links.get(&d.last_seq) {
                    None => self.findings.add(
                        FindingKind::DigestWithoutRecord,
                        place,
                        Some(d.last_seq),
                        Some(at),
                        format!(
                            "a digest signed at {} covers seq {}-{}, but no topic holds seq {}",
                            d.time, d.first_seq, d.last_seq, d.last_seq
                        ),
                    ),
                    Some(link) if !hex(&link.hash).eq_ignore_ascii_case(&d.last_hash) => {
                        self.findings.add(
                            FindingKind::DigestMismatch,
                            place,
                            Some(d.last_seq),
                            Some(at),
                            format!(
                                "the digest's last_hash is not the hash of the record at seq {} ({}/{}@{})",
                                d.last_seq, link.at.topic, link.at.partition, link.at.offset
                            ),
                        )
                    }
                    Some(_) => {}
                }
                if Some(d.first_seq) != first && !signatures.contains(d.prev_signature.as_str()) {
                    self.findings.add(
                        FindingKind::DigestChainBroken,
                        place,
                        Some(d.first_seq),
                        Some(at),
                        format!(
                            "the digest of seq {}-{} names a previous digest that is not there",
                            d.first_seq, d.last_seq
                        ),
                    );
                }
            }
            let clean = self.findings.counts.values().sum::<u64>() == before;
            match (clean, signature_ok && self.settings.verifier.is_some()) {
                (false, _) => counts.failed += 1,
                (true, true) => counts.valid += 1,
                (true, false) => counts.unchecked += 1,
            }
            if signature_ok && counts.last_seq_signed.is_none_or(|l| d.last_seq > l) {
                counts.last_seq_signed = Some(d.last_seq);
                counts.last_time = Some(d.time.clone());
            }
        }
        counts
    }
}

/// The stream and segment a message names in its headers ("" when it does not).
fn names(m: &Message) -> (&str, &str) {
    (
        m.header(HEADER_STREAM).unwrap_or_default(),
        m.header(HEADER_SEGMENT).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests;
