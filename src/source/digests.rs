//! The writer's side of signed digests (`integrity.digests`): per segment, every
//! `every_records` records, or on the first record linked once `every` has passed since the
//! segment's last digest (or since it was opened), a [`SignedDigest`] of the chain so far, shipped
//! as a record of its own to the digest topic (protocol: [`crate::integrity`]).
//!
//! **When.** The count trigger is exact: a digest ends at every seq `D + every_records`
//! after the last digest `D`, so a segment read again after a crash gets its digests over the
//! same ranges. The time trigger is checked when a record is linked, not by a timer: a
//! segment that goes quiet keeps its last records (fewer than `every_records`) unsigned until
//! its next record. Reason: a digest is registered for acknowledgement at the offset of the
//! link it ends with, which is what lets the checkpoint save it exactly (see `ack::ChainLog`);
//! a digest made later, by a timer, would have to be registered at an offset the checkpoint
//! may already have passed.
//!
//! **Delivery.** The digest is a [`Record`] like any other: value = the `SignedDigest` JSON,
//! topic = the digest topic, key = the segment, headers `type: auditrail.digest`,
//! `chain_stream`, `chain_segment`; it goes to the Kafka output only, registered with the
//! stream's progress at its last link's offset, so the checkpoint waits for it and a crash
//! before it was confirmed makes it again. The segment's `prev_signature` chain is saved with
//! the chain point ([`crate::integrity::DigestPoint`]). A digest made again after a crash has
//! another `time`, so another signature: `verify` accepts digests over overlapping ranges as
//! long as each is signed and agrees with the records.
//!
//! Cost: one Ed25519 signature (tens of microseconds) per `every_records` records, and one
//! comparison per record.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::ack::Progress;
use crate::budget::Charge;
use crate::envelope::{Record, RetentionTag};
use crate::integrity::{
    hex, Digest, DigestPoint, DigestsConfig, Hash, KeyError, Link, Signer, DIGEST_TYPE,
};

/// How every segment's digests are made and shipped; one per process.
#[derive(Debug)]
pub(crate) struct DigestSettings {
    signer: Signer,
    topic: Arc<str>,
    every_records: u64,
    every: Duration,
    /// The output bit of the Kafka output (`OutputsConfig::enabled` order).
    outputs: u32,
    /// Confirmations the digest waits for: 1 when the Kafka output is required.
    confirmations: u32,
}

impl DigestSettings {
    /// The settings of `config`, the signing key read now (a missing or wrong key stops the
    /// start, naming the file). `kafka` is the Kafka output's place among the enabled outputs
    /// and whether it is required.
    pub(crate) fn load(
        config: &DigestsConfig,
        kafka: (usize, bool),
    ) -> Result<DigestSettings, KeyError> {
        let signer = Signer::from_pem_file(&config.signing_key_file)?;
        Ok(DigestSettings::new(signer, config, kafka))
    }

    pub(crate) fn new(signer: Signer, config: &DigestsConfig, kafka: (usize, bool)) -> Self {
        DigestSettings {
            signer,
            topic: Arc::from(config.topic.as_str()),
            every_records: config.every_records.max(1),
            every: config.every,
            outputs: 1u32.checked_shl(kafka.0 as u32).unwrap_or(0),
            confirmations: u32::from(kafka.1),
        }
    }

    pub(crate) fn key_id(&self) -> &str {
        self.signer.key_id()
    }
}

/// Where one segment's digests stand.
#[derive(Debug)]
pub(crate) struct SegmentDigests {
    settings: Arc<DigestSettings>,
    /// The last seq the last digest covered (0: none yet).
    last_seq: u64,
    /// Its signature (hex); empty before the segment's first digest.
    prev_signature: String,
    /// When the last digest was made, or the segment opened.
    since: Instant,
}

impl SegmentDigests {
    /// A segment's digests from where its checkpoint saved them (`None`: from its start).
    pub(crate) fn resume(settings: Arc<DigestSettings>, saved: Option<DigestPoint>) -> Self {
        let (last_seq, prev_signature) = saved.map_or((0, String::new()), |p| (p.seq, p.signature));
        SegmentDigests {
            settings,
            last_seq,
            prev_signature,
            since: Instant::now(),
        }
    }

    /// Tells `progress` (of a chain resumed with this state) where the digests stand.
    pub(crate) fn seed(&self, progress: &Progress) {
        if self.last_seq > 0 {
            progress.digested(self.last_seq, &self.prev_signature);
        }
    }

    /// Whether a digest is due right after link `seq`, at `now`.
    pub(crate) fn due(&self, seq: u64, now: Instant) -> bool {
        seq > self.last_seq
            && (seq - self.last_seq >= self.settings.every_records
                || now.saturating_duration_since(self.since) >= self.settings.every)
    }

    /// The digest of `link` and the links before it since the last digest, signed; the state
    /// moves on to it.
    pub(crate) fn sign(
        &mut self,
        link: &Link,
        now: Instant,
    ) -> Result<crate::integrity::SignedDigest, KeyError> {
        let digest = Digest {
            stream: link.stream.to_string(),
            segment: link.segment.to_string(),
            first_seq: self.last_seq + 1,
            last_seq: link.seq,
            last_hash: hex(&link.hash),
            prev_signature: self.prev_signature.clone(),
            time: Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            key_id: self.settings.signer.key_id().to_owned(),
        };
        let signed = self.settings.signer.sign(digest)?;
        self.last_seq = link.seq;
        self.prev_signature.clone_from(&signed.signature);
        self.since = now;
        Ok(signed)
    }

    /// After `record` was linked: the digest record when one is due, registered with
    /// `progress` at the record's offset (and told to it, for the checkpoint). A digest that
    /// cannot be signed is logged and tried again at the next link: the records are shipped
    /// all the same, and the next digest covers them.
    pub(crate) fn after(
        &mut self,
        record: &Record,
        progress: Option<&Arc<Progress>>,
    ) -> Option<Record> {
        let link = record.chain.as_deref()?;
        let now = Instant::now();
        if !self.due(link.seq, now) {
            return None;
        }
        let signed = match self.sign(link, now) {
            Ok(signed) => signed,
            Err(e) => {
                // Debug shows the cause chain (`crate::report` lives above this floor).
                tracing::error!(error = ?e, segment = %link.segment, "cannot sign a digest");
                return None;
            }
        };
        let offset = record.ack.offset();
        if let Some(p) = progress {
            p.digested(link.seq, &signed.signature);
        }
        let ack = match progress {
            Some(p) => p.register(offset, self.settings.confirmations),
            None => crate::ack::Ack::none(),
        };
        let d = &signed.digest;
        let id = format!("digest:{}:{}-{}", d.segment, d.first_seq, d.last_seq);
        // Serializing a struct of strings and numbers cannot fail.
        let value = serde_json::to_vec(&signed).unwrap_or_default();
        Some(Record {
            record_id: id.clone(),
            id,
            record_type: DIGEST_TYPE.to_owned(),
            format: Arc::from("auditrail"),
            retention: RetentionTag {
                class: Arc::from("digests"),
                days: None,
                topic: Arc::clone(&self.settings.topic),
                expires_at: None,
            },
            key: Some(link.segment.to_string()),
            value,
            read_time: Utc::now(),
            ack,
            outputs: self.settings.outputs,
            charge: Charge::none(),
            chain: Some(Box::new(Link {
                stream: Arc::clone(&link.stream),
                segment: Arc::clone(&link.segment),
                seq: 0,
                prev: Hash::default(),
                hash: Hash::default(),
                algorithm: link.algorithm,
            })),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::ack::Ack;
    use crate::integrity::{ChainPoint, SignedDigest, Verifier};
    use crate::pipeline::Processor;
    use crate::source::stream::StreamReader;

    use crate::source::chain::test_support::{self, STREAM};

    /// Settings with a fresh key (written where `dir` says) and its verifier.
    fn settings(
        dir: &Path,
        every_records: u64,
        every: Duration,
    ) -> (Arc<DigestSettings>, Verifier) {
        let key = openssl::pkey::PKey::generate_ed25519().unwrap();
        let file = dir.join("signing.pem");
        std::fs::write(&file, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        let config = DigestsConfig {
            topic: "audit-digests".into(),
            signing_key_file: file,
            every_records,
            every,
        };
        let verifier = Verifier::from_pem(&key.public_key_to_pem().unwrap()).unwrap();
        (
            Arc::new(DigestSettings::load(&config, (0, true)).unwrap()),
            verifier,
        )
    }

    fn link(seq: u64) -> Link {
        Link {
            stream: Arc::from(STREAM),
            segment: Arc::from("00000000000000ab"),
            seq,
            prev: [0; 32],
            hash: [seq as u8; 32],
            algorithm: "sha256",
        }
    }

    #[test]
    fn a_digest_is_due_every_n_records_and_chains_to_the_previous_signature() {
        let dir = tempfile::tempdir().unwrap();
        let (settings, verifier) = settings(dir.path(), 3, Duration::from_secs(3600));
        let mut d = SegmentDigests::resume(settings, None);
        let now = Instant::now();
        let mut made = Vec::new();
        for seq in 1..=7 {
            if d.due(seq, now) {
                made.push(d.sign(&link(seq), now).unwrap());
            }
        }
        let ranges: Vec<_> = made
            .iter()
            .map(|s| (s.digest.first_seq, s.digest.last_seq))
            .collect();
        assert_eq!(ranges, [(1, 3), (4, 6)], "every 3 records, not before");
        assert_eq!(
            made[0].digest.prev_signature, "",
            "the segment's first digest"
        );
        assert_eq!(made[1].digest.prev_signature, made[0].signature);
        assert_eq!(made[1].digest.last_hash, hex(&[6; 32]));
        assert!(made.iter().all(|s| verifier.verify(s)));
    }

    #[test]
    fn the_time_trigger_needs_a_record_since_the_last_digest() {
        let dir = tempfile::tempdir().unwrap();
        let (settings, _) = settings(dir.path(), 1000, Duration::from_secs(60));
        let mut d = SegmentDigests::resume(settings, None);
        let start = d.since;
        assert!(!d.due(1, start + Duration::from_secs(59)), "not yet");
        assert!(
            d.due(1, start + Duration::from_secs(60)),
            "60 s and a record"
        );
        let later = start + Duration::from_secs(60);
        let signed = d.sign(&link(1), later).unwrap();
        assert_eq!((signed.digest.first_seq, signed.digest.last_seq), (1, 1));
        assert!(
            !d.due(1, later + Duration::from_secs(600)),
            "no record linked since: no digest, however long"
        );
        assert!(!d.due(2, later + Duration::from_secs(59)));
        assert!(d.due(2, later + Duration::from_secs(60)));
    }

    fn processor() -> Processor {
        let outputs: crate::output::OutputsConfig = crate::yaml::from_str("stdout: {}").unwrap();
        Processor::new(crate::pipeline::Stages {
            audit: &Default::default(),
            types: &Default::default(),
            retention: &Default::default(),
            outputs: &outputs,
        })
        .unwrap()
    }

    fn reader(
        settings: &Arc<DigestSettings>,
        offset: u64,
        saved: Option<ChainPoint>,
    ) -> (StreamReader, Arc<Progress>) {
        test_support::reader(offset, saved, Some(Arc::clone(settings)))
    }

    fn feed(reader: &mut StreamReader, bytes: &[u8]) -> Vec<Record> {
        test_support::feed(reader, &processor(), bytes)
    }

    fn digests_of(records: &[Record]) -> Vec<SignedDigest> {
        records
            .iter()
            .filter(|r| r.record_type == DIGEST_TYPE)
            .map(|r| serde_json::from_slice(&r.value).unwrap())
            .collect()
    }

    #[test]
    fn a_restart_from_the_checkpoint_goes_on_with_the_saved_digest_state() {
        let dir = tempfile::tempdir().unwrap();
        let (settings, verifier) = settings(dir.path(), 10, Duration::from_secs(3600));
        let lines: Vec<String> = (0..25)
            .map(|n| {
                format!(
                    "2026-12-02T09:00:00.{n:09}Z stdout F pryv-audit[57]: ck6 x {{\"action\": \"a.n{n}\"}}\n"
                )
            })
            .collect();
        let all = lines.concat();
        let (mut first, progress) = reader(&settings, 0, None);
        let mut shipped = feed(&mut first, all.as_bytes());
        let made = digests_of(&shipped);
        let ranges: Vec<_> = made
            .iter()
            .map(|s| (s.digest.first_seq, s.digest.last_seq))
            .collect();
        assert_eq!(ranges, [(1, 10), (11, 20)]);
        // The digest follows the record it ends with, on the digest topic, to Kafka only.
        let at = shipped
            .iter()
            .position(|r| r.record_type == DIGEST_TYPE)
            .unwrap();
        assert_eq!(shipped[at - 1].chain.as_ref().unwrap().seq, 10);
        assert_eq!(&*shipped[at].retention.topic, "audit-digests");
        assert_eq!(shipped[at].key.as_deref(), Some("00000000000000ab"));
        assert_eq!(shipped[at].outputs, 1);
        let mut headers = Vec::new();
        shipped[at].for_each_header(|n, v| headers.push((n, v.to_owned())));
        assert!(headers.contains(&("type", DIGEST_TYPE.to_owned())));
        assert!(headers.contains(&("chain_segment", "00000000000000ab".to_owned())));
        assert!(!headers.iter().any(|(n, _)| *n == "chain_seq"), "no link");
        // Everything of the first 15 lines (digest 1-10 too) is confirmed; then a crash.
        let line15 = lines[..15].concat().len() as u64;
        for r in shipped.iter_mut() {
            if r.ack.offset() < line15 {
                std::mem::replace(&mut r.ack, Ack::none()).confirm();
            }
        }
        let (offset, point) = progress.checkpoint();
        let point = point.unwrap();
        assert_eq!((offset, point.seq), (line15, 15));
        let saved = point.digest.clone().expect("the digest state is saved");
        assert_eq!((saved.seq, &saved.signature), (10, &made[0].signature));
        // Saved and loaded as the checkpoint file holds it.
        let point: ChainPoint =
            serde_json::from_str(&serde_json::to_string(&point).unwrap()).unwrap();
        let (mut again, _) = reader(&settings, offset, Some(point));
        let replayed = feed(&mut again, &all.as_bytes()[offset as usize..]);
        let remade = digests_of(&replayed);
        assert_eq!(remade.len(), 1);
        let d = &remade[0].digest;
        assert_eq!(
            (d.first_seq, d.last_seq, &d.last_hash),
            (11, 20, &made[1].digest.last_hash),
            "the same range and the same last hash as the first time"
        );
        assert_eq!(
            d.prev_signature, made[0].signature,
            "the chain of digests goes on"
        );
        assert!(verifier.verify(&remade[0]));
    }

    #[test]
    fn a_digest_not_yet_confirmed_holds_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (settings, _) = settings(dir.path(), 2, Duration::from_secs(3600));
        let text = "2026-12-02T09:00:00.1Z stdout F pryv-audit[57]: ck6 x {\"action\": \"a\"}\n\
                    2026-12-02T09:00:00.2Z stdout F pryv-audit[57]: ck6 x {\"action\": \"b\"}\n";
        let (mut reader, progress) = reader(&settings, 0, None);
        let mut shipped = feed(&mut reader, text.as_bytes());
        assert_eq!(shipped.len(), 3, "two records and a digest");
        for r in shipped.iter_mut().filter(|r| r.record_type != DIGEST_TYPE) {
            std::mem::replace(&mut r.ack, Ack::none()).confirm();
        }
        let (offset, point) = progress.checkpoint();
        let second = text.find("\n").unwrap() as u64 + 1;
        assert_eq!(
            offset, second,
            "the digest holds the offset of its last record"
        );
        assert_eq!(point.unwrap().digest, None, "and it is not saved as made");
        let digest = shipped.pop().unwrap();
        digest.ack.confirm();
        let (offset, point) = progress.checkpoint();
        assert_eq!(offset, text.len() as u64);
        assert_eq!(point.unwrap().digest.map(|d| d.seq), Some(2));
    }
}
