//! Acknowledgements: how a source learns that the records it read are safe downstream.
//!
//! A source registers every record it hands to the outputs with the [`Progress`] of the stream
//! it came from (a file, stdin). Each record carries an [`Ack`]; an output calls
//! [`Ack::confirm`] once the record is durably delivered (written, or acknowledged by Kafka).
//! The checkpoint of a stream is [`Progress::committed`]: the offset before which every line
//! has been dealt with: skipped, counted, or confirmed by every output that took its record.
//! Records may be registered out of offset order (a long line joined from `P` chunks is
//! registered at its first chunk's offset after shorter lines of the other stream) and
//! confirmed out of order (Kafka partitions complete independently): pending records are kept
//! ordered by offset, so the committed offset is always below the lowest unconfirmed one.
//! Memory per stream is one entry per record in flight, which the outputs' limits bound.
//!
//! An `Ack` that is dropped without being confirmed (an output gave up on it) keeps the
//! checkpoint where it is, so the record is read again after a restart: never lost.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::integrity::{hex, ChainPoint, DigestPoint, Hash};

/// The acknowledgement state of one stream (one file identity).
#[derive(Debug, Default)]
pub struct Progress {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Records handed downstream and not yet fully confirmed, by the start offset of their
    /// line: (confirmations still awaited, when it was registered).
    pending: BTreeMap<u64, (u32, Instant)>,
    /// The offset up to which every line has been read and dealt with by the source.
    read_to: u64,
    /// The start of the oldest line still being assembled (a CRI `P` chunk waiting for its
    /// `F`); the checkpoint must not move past it.
    floor: Option<u64>,
    /// The stream's chain (`integrity.chain`), to save with its checkpoint.
    chain: Option<ChainLog>,
}

/// A segment's chain as the checkpoint needs it: which link each record read since the last
/// save got, in the order they were read (which is not always offset order).
///
/// The rule: for a saved offset `C`, the saved chain point is where the chain stood just
/// before the first record a restart at `C` reads again. A restart at `C` reads again exactly
/// the records whose line starts at `C` or later, in the order they were first read; so the
/// saved point is right only when those records are a *suffix* of the reading order. Records
/// are registered out of offset order when a line joined from CRI `P` chunks completes after
/// shorter lines of the other stream: then the committed offset can fall between them
/// (`[100 (stderr), 0 (stdout, joined)]` with 0 confirmed and 100 not: committed 100, yet the
/// record at 0 came after). [`Progress::checkpoint`] moves the saved offset down to the
/// lowest offset of the suffix until it is one: more is read again, nothing gets another
/// number.
#[derive(Debug)]
struct ChainLog {
    segment: Arc<str>,
    algorithm: &'static str,
    /// [`crate::integrity::ChainHasher::key_id`] of a keyed chain.
    key: Option<Arc<str>>,
    /// (offset the record was registered at, the chain point before its link), in reading
    /// order, since the last cut.
    links: VecDeque<(u64, u64, Hash)>,
    /// The chain point after the last link.
    head: (u64, Hash),
    /// The segment's digests made since the last cut, in order: (last seq covered,
    /// signature). The one saved with a chain point at seq `P` is the last with a seq `<= P`:
    /// a digest is made right after the link it ends with, and is registered at that link's
    /// offset, so it is confirmed when that link is (the link's line is before the saved
    /// offset); the digests after it are made again, over the same ranges, when their links
    /// are read again.
    digests: VecDeque<(u64, Arc<str>)>,
    /// The last digest before those (none yet: the segment's first digest will have an empty
    /// `prev_signature`).
    digest_base: Option<(u64, Arc<str>)>,
}

impl Progress {
    pub fn new(start: u64) -> Arc<Progress> {
        Arc::new(Progress {
            inner: Mutex::new(Inner {
                read_to: start,
                ..Inner::default()
            }),
        })
    }

    /// A stream read from `start` whose chain (segment `segment`, links hashed with
    /// `algorithm`) stands at `seq` and `hash` there.
    pub fn chained(
        start: u64,
        segment: Arc<str>,
        algorithm: &'static str,
        seq: u64,
        hash: Hash,
    ) -> Arc<Progress> {
        Arc::new(Progress {
            inner: Mutex::new(Inner {
                read_to: start,
                chain: Some(ChainLog {
                    segment,
                    algorithm,
                    key: None,
                    links: VecDeque::new(),
                    head: (seq, hash),
                    digests: VecDeque::new(),
                    digest_base: None,
                }),
                ..Inner::default()
            }),
        })
    }

    /// The chain's links are keyed with the key `id` names, saved with its point.
    pub fn chain_key(&self, id: Arc<str>) {
        if let Some(chain) = &mut self.lock().chain {
            chain.key = Some(id);
        }
    }

    /// The record registered at `offset` got link `seq` with hash `hash` after `prev`
    /// (called in reading order, right after it was linked).
    pub fn linked(&self, offset: u64, seq: u64, prev: &Hash, hash: &Hash) {
        let mut inner = self.lock();
        if let Some(chain) = &mut inner.chain {
            chain.links.push_back((offset, seq - 1, *prev));
            chain.head = (seq, *hash);
        }
    }

    /// A digest covering the chain up to `seq` was made with `signature` (called right after
    /// the link `seq`, or when a chain is resumed with the digest its checkpoint saved).
    pub fn digested(&self, seq: u64, signature: &str) {
        let mut inner = self.lock();
        if let Some(chain) = &mut inner.chain {
            chain.digests.push_back((seq, Arc::from(signature)));
        }
    }

    /// The offset to save and the chain point that goes with it (see [`ChainLog`]): the
    /// committed offset, moved down where the chain needs it; without a chain, just
    /// [`Progress::committed`]. Forgets the links a later save cannot need.
    pub fn checkpoint(&self) -> (u64, Option<ChainPoint>) {
        let mut inner = self.lock();
        let mut at = inner.committed();
        let Some(chain) = &mut inner.chain else {
            return (at, None);
        };
        // `at` only goes down, so this ends.
        let first = loop {
            let Some(first) = chain.links.iter().position(|&(o, _, _)| o >= at) else {
                break None;
            };
            let lowest = chain
                .links
                .iter()
                .skip(first)
                .map(|&(o, _, _)| o)
                .min()
                .unwrap_or(at);
            if lowest >= at {
                break Some(first);
            }
            at = lowest;
        };
        let (seq, hash) = match first {
            Some(first) => {
                // The links before the cut have lines before `at`: a restart does not read
                // them again, and the committed offset never goes back below `at`.
                chain.links.drain(..first);
                chain
                    .links
                    .front()
                    .map_or(chain.head, |&(_, seq, hash)| (seq, hash))
            }
            None => {
                chain.links.clear();
                chain.head
            }
        };
        while chain.digests.front().is_some_and(|&(last, _)| last <= seq) {
            chain.digest_base = chain.digests.pop_front();
        }
        let point = ChainPoint {
            segment: chain.segment.to_string(),
            alg: chain.algorithm.to_owned(),
            key: chain.key.as_deref().map(str::to_owned),
            seq,
            hash: hex(&hash),
            digest: chain
                .digest_base
                .as_ref()
                .map(|(seq, signature)| DigestPoint {
                    seq: *seq,
                    signature: signature.to_string(),
                }),
        };
        (at, Some(point))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave `Inner` half-updated in a way that
        // matters more than losing the process, so a poisoned lock is simply taken over.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a record starting at `offset` that `outputs` outputs must confirm.
    /// Returns the `Ack` to send along with it.
    pub fn register(self: &Arc<Self>, offset: u64, outputs: u32) -> Ack {
        self.hold(offset, outputs);
        Ack {
            progress: Some(Arc::clone(self)),
            offset,
            also: None,
        }
    }

    fn hold(&self, offset: u64, outputs: u32) {
        let mut inner = self.lock();
        if outputs > 0 {
            let entry = inner.pending.entry(offset).or_insert((0, Instant::now()));
            entry.0 += outputs;
        }
    }

    /// The source has dealt with every line before `offset`, and the oldest line still being
    /// assembled (if any) starts at `floor`.
    pub fn set_read(&self, offset: u64, floor: Option<u64>) {
        let mut inner = self.lock();
        inner.read_to = offset;
        inner.floor = floor;
    }

    fn confirm(&self, offset: u64) {
        let mut inner = self.lock();
        if let Some(entry) = inner.pending.get_mut(&offset) {
            entry.0 = entry.0.saturating_sub(1);
            if entry.0 == 0 {
                inner.pending.remove(&offset);
            }
        }
    }

    /// The offset a restart may resume from without losing anything.
    pub fn committed(&self) -> u64 {
        self.lock().committed()
    }

    /// Records handed downstream and not yet confirmed.
    pub fn in_flight(&self) -> usize {
        self.lock().pending.len()
    }

    /// How long the record that holds the checkpoint (the lowest unconfirmed one) has been
    /// waiting.
    pub fn oldest_wait(&self) -> Option<Duration> {
        self.lock()
            .pending
            .first_key_value()
            .map(|(_, &(_, at))| at.elapsed())
    }
}

impl Inner {
    fn committed(&self) -> u64 {
        let mut at = self.read_to;
        if let Some((&offset, _)) = self.pending.first_key_value() {
            at = at.min(offset);
        }
        if let Some(floor) = self.floor {
            at = at.min(floor);
        }
        at
    }
}

/// The receipt an output gives back for one record.
#[derive(Debug)]
pub struct Ack {
    progress: Option<Arc<Progress>>,
    offset: u64,
    /// A second stream the record also holds back: a line that began in a rotated file and
    /// ended in the next one holds both checkpoints until it is confirmed.
    also: Option<(Arc<Progress>, u64)>,
}

impl Ack {
    /// An ack that tracks nothing (for `check`, where there is no checkpoint).
    pub fn none() -> Ack {
        Ack {
            progress: None,
            offset: 0,
            also: None,
        }
    }

    /// This receipt also holds `progress` at `offset` back, for `outputs` confirmations.
    pub(crate) fn also(mut self, progress: &Arc<Progress>, offset: u64, outputs: u32) -> Ack {
        if outputs > 0 {
            progress.hold(offset, outputs);
            self.also = Some((Arc::clone(progress), offset));
        }
        self
    }

    /// The offset the record was registered at.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Another receipt for the same record, for a second output that took it.
    pub fn share(&self) -> Ack {
        Ack {
            progress: self.progress.clone(),
            offset: self.offset,
            also: self.also.clone(),
        }
    }

    /// The record is durably delivered by this output.
    pub fn confirm(self) {
        if let Some(p) = &self.progress {
            p.confirm(self.offset);
        }
        if let Some((p, offset)) = &self.also {
            p.confirm(*offset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_waits_for_the_oldest_unconfirmed_record() {
        let p = Progress::new(0);
        let a = p.register(10, 1);
        let b = p.register(20, 1);
        let c = p.register(30, 1);
        p.set_read(40, None);
        assert_eq!(p.committed(), 10);
        c.confirm();
        assert_eq!(
            p.committed(),
            10,
            "out-of-order confirmation must not move the checkpoint"
        );
        a.confirm();
        assert_eq!(p.committed(), 20);
        b.confirm();
        assert_eq!(p.committed(), 40);
    }

    #[test]
    fn a_record_taken_by_two_outputs_needs_both() {
        let p = Progress::new(0);
        let a = p.register(5, 2);
        let a2 = a.share();
        p.set_read(9, None);
        a.confirm();
        assert_eq!(p.committed(), 5);
        a2.confirm();
        assert_eq!(p.committed(), 9);
    }

    #[test]
    fn a_dropped_ack_holds_the_checkpoint() {
        let p = Progress::new(0);
        drop(p.register(3, 1));
        p.set_read(100, None);
        assert_eq!(p.committed(), 3);
    }

    #[test]
    fn records_registered_out_of_offset_order_hold_the_checkpoint_at_the_lowest() {
        // A long stdout line in P chunks from offset 0, a stderr line at 500 completed first.
        let p = Progress::new(0);
        let stderr = p.register(500, 1);
        let stdout = p.register(0, 1);
        p.set_read(1000, None);
        stderr.confirm();
        assert_eq!(p.committed(), 0, "the stdout record at 0 is not confirmed");
        stdout.confirm();
        assert_eq!(p.committed(), 1000);
        assert_eq!(p.in_flight(), 0, "nothing is left behind");
    }

    #[test]
    fn a_record_across_two_streams_holds_both_until_confirmed() {
        let (first, second) = (Progress::new(0), Progress::new(0));
        let ack = first.register(700, 1).also(&second, 0, 1);
        first.set_read(900, None);
        second.set_read(40, None);
        assert_eq!((first.committed(), second.committed()), (700, 0));
        ack.confirm();
        assert_eq!((first.committed(), second.committed()), (900, 40));
    }

    #[test]
    fn an_unfinished_partial_line_is_a_floor() {
        let p = Progress::new(0);
        p.set_read(500, Some(120));
        assert_eq!(p.committed(), 120);
    }

    #[test]
    fn the_chain_point_saved_goes_with_an_offset_the_records_after_it_follow() {
        // Read order: a stderr line at 100, then a stdout line at 0 joined from P chunks.
        let p = Progress::chained(0, Arc::from("seg"), "sha256", 0, [0; 32]);
        let stderr = p.register(100, 1);
        p.linked(100, 1, &[0; 32], &[1; 32]);
        let stdout = p.register(0, 1);
        p.linked(0, 2, &[1; 32], &[2; 32]);
        p.set_read(300, None);
        stdout.confirm();
        assert_eq!(p.committed(), 100);
        let (offset, point) = p.checkpoint();
        assert_eq!(
            offset, 0,
            "the record at 0 came after the one at 100: both are read again"
        );
        assert_eq!(point.unwrap().seq, 0);
        stderr.confirm();
        let (offset, point) = p.checkpoint();
        let point = point.unwrap();
        assert_eq!(
            (offset, point.seq, point.hash),
            (300, 2, crate::integrity::hex(&[2; 32]))
        );
        assert_eq!(
            Progress::new(0).checkpoint(),
            (0, None),
            "no chain, no point"
        );
    }
}
