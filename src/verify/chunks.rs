//! Chunked records put back together before they are checked.
//!
//! The protocol is `output::kafka::chunk`'s (its module doc): the chunks of one sending share
//! the record's `id` and `chunk_size`, carry `chunk_index` and `chunk_count`, and the whole
//! value's SHA-256 in `chunk_sha256`; a chunk may come more than once (keep one), another
//! `chunk_size` is another complete sending. A message without `chunk_count` is a whole record.
//!
//! Unlike `scripts/reassemble.py`, which prints each id once, every complete sending is given
//! to the checker: a record sent whole twice is a duplicate the chain check counts as such.
//!
//! Memory: the chunks of sendings not complete yet, and the ids of completed chunked records
//! (to tell an abandoned sending of a record that arrived whole from a record that never did).

use std::collections::{BTreeMap, HashMap, HashSet};

use sha2::{Digest as _, Sha256};

use super::Message;
use crate::integrity::hex;

const CHUNK_HEADERS: [&str; 4] = ["chunk_index", "chunk_count", "chunk_size", "chunk_sha256"];

/// What a message became.
#[derive(Debug)]
pub(crate) enum Piece {
    /// A whole record: the message itself, or the chunks of one sending joined (its location
    /// is the first chunk's, its headers the record's without the `chunk_*` ones).
    Whole(Message),
    /// A chunk, kept until its sending is complete.
    Pending,
    /// A sending whose joined value does not match its `chunk_sha256`.
    BadChecksum { message: Message, id: String },
    /// A chunk whose `chunk_*` headers are not numbers, or an index beyond the count.
    BadChunk { message: Message, why: String },
}

/// One sending of a chunked record, being collected.
#[derive(Debug)]
struct Sending {
    count: usize,
    sha256: String,
    /// The first chunk seen (its headers and location stand for the record).
    first: Option<Message>,
    chunks: BTreeMap<usize, Vec<u8>>,
}

/// Chunks of sendings not complete yet, by (topic, partition, id, chunk_size).
#[derive(Debug, Default)]
pub(crate) struct Reassembler {
    pending: HashMap<(String, i32, String, String), Sending>,
    /// Ids of chunked records that arrived whole at least once.
    completed: HashSet<String>,
}

/// Sendings left incomplete at the end.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Leftovers {
    /// Of records another sending of which arrived whole: a retry, nothing lost.
    pub(crate) abandoned: usize,
    /// Of records that never arrived whole: (a message of it, chunks seen, chunk count).
    pub(crate) incomplete: Vec<(Message, usize, usize)>,
}

impl Reassembler {
    pub(crate) fn take(&mut self, message: Message) -> Piece {
        let Some(count) = message.header("chunk_count") else {
            return Piece::Whole(message);
        };
        let count = count.parse::<usize>();
        let index = message.header("chunk_index").map(str::parse::<usize>);
        let (count, index) = match (count, index) {
            (Ok(count), Some(Ok(index))) if index < count => (count, index),
            _ => {
                return Piece::BadChunk {
                    why: "chunk_index or chunk_count is not a number, or the index is not below the count".into(),
                    message,
                }
            }
        };
        let id = message.header("id").unwrap_or_default().to_owned();
        let size = message
            .header("chunk_size")
            .unwrap_or_else(|| message.header("chunk_count").unwrap_or_default())
            .to_owned();
        let key = (message.topic.clone(), message.partition, id.clone(), size);
        let sending = self.pending.entry(key.clone()).or_insert_with(|| Sending {
            count,
            sha256: message
                .header("chunk_sha256")
                .unwrap_or_default()
                .to_owned(),
            first: None,
            chunks: BTreeMap::new(),
        });
        // Duplicates of an index within one chunk size are equal: the first is kept.
        sending
            .chunks
            .entry(index)
            .or_insert_with(|| message.value.clone());
        if sending.first.is_none() {
            sending.first = Some(message);
        }
        if sending.chunks.len() < sending.count {
            return Piece::Pending;
        }
        let Some(sending) = self.pending.remove(&key) else {
            return Piece::Pending;
        };
        let Some(mut first) = sending.first else {
            return Piece::Pending;
        };
        let value: Vec<u8> = sending.chunks.into_values().flatten().collect();
        first
            .headers
            .retain(|(name, _)| !CHUNK_HEADERS.contains(&name.as_str()));
        first.value = value;
        if hex(&Sha256::digest(&first.value)) != sending.sha256.to_ascii_lowercase() {
            return Piece::BadChecksum { message: first, id };
        }
        self.completed.insert(id);
        Piece::Whole(first)
    }

    /// The sendings never completed.
    pub(crate) fn finish(self) -> Leftovers {
        let mut left = Leftovers::default();
        for ((_, _, id, _), sending) in self.pending {
            if self.completed.contains(&id) {
                left.abandoned += 1;
            } else if let Some(first) = sending.first {
                left.incomplete
                    .push((first, sending.chunks.len(), sending.count));
            }
        }
        left.incomplete.sort_by(|a, b| {
            (&a.0.topic, a.0.partition, a.0.offset).cmp(&(&b.0.topic, b.0.partition, b.0.offset))
        });
        left
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The messages the Kafka output sends for `value` cut into `size`-byte chunks, with
    /// `headers` (the record's) on each: the chunk protocol, built here by hand.
    pub(crate) fn chunked(
        topic: &str,
        first_offset: i64,
        headers: &[(&str, &str)],
        value: &[u8],
        size: usize,
    ) -> Vec<Message> {
        let count = value.len().div_ceil(size);
        let sha = hex(&Sha256::digest(value));
        value
            .chunks(size)
            .enumerate()
            .map(|(i, part)| {
                let mut h: Vec<(String, String)> = headers
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect();
                h.push(("chunk_index".into(), i.to_string()));
                h.push(("chunk_count".into(), count.to_string()));
                h.push(("chunk_size".into(), size.to_string()));
                h.push(("chunk_sha256".into(), sha.clone()));
                Message {
                    topic: topic.into(),
                    partition: 0,
                    offset: first_offset + i as i64,
                    headers: h,
                    value: part.to_vec(),
                }
            })
            .collect()
    }

    fn whole(pieces: Vec<Piece>) -> Vec<Message> {
        pieces
            .into_iter()
            .filter_map(|p| match p {
                Piece::Whole(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn chunks_with_a_duplicate_and_a_second_sending_give_the_record_twice() {
        let value = b"{\"id\":\"r1\",\"record\":{\"text\":\"0123456789abcdef\"}}".to_vec();
        let mut chunks = chunked("t", 0, &[("id", "r1")], &value, 10);
        let n = chunks.len();
        // A chunk duplicated within the sending, then the whole record sent again.
        chunks.insert(1, chunks[0].clone());
        chunks.extend(chunked("t", 100, &[("id", "r1")], &value, 10));
        let mut r = Reassembler::default();
        let pieces: Vec<Piece> = chunks.into_iter().map(|m| r.take(m)).collect();
        let records = whole(pieces);
        assert_eq!(records.len(), 2);
        for m in &records {
            assert_eq!(m.value, value);
            assert_eq!(m.header("chunk_index"), None, "the chunk headers are gone");
            assert_eq!(m.header("id"), Some("r1"));
        }
        assert_eq!(records[0].offset, 0);
        assert_eq!(records[1].offset, 100);
        assert!(n > 1);
        assert_eq!(r.finish(), Leftovers::default());
    }

    #[test]
    fn a_changed_chunk_fails_the_checksum_and_a_missing_one_is_left_incomplete() {
        let value = vec![b'x'; 35];
        let mut chunks = chunked("t", 0, &[("id", "r1")], &value, 10);
        chunks[2].value[0] = b'y';
        let mut r = Reassembler::default();
        let pieces: Vec<Piece> = chunks.into_iter().map(|m| r.take(m)).collect();
        assert!(matches!(pieces.last(), Some(Piece::BadChecksum { id, .. }) if id == "r1"));

        let mut chunks = chunked("t", 0, &[("id", "r2")], &value, 10);
        chunks.remove(1);
        let mut r = Reassembler::default();
        assert!(chunks
            .into_iter()
            .all(|m| matches!(r.take(m), Piece::Pending)));
        let left = r.finish();
        assert_eq!(left.abandoned, 0);
        assert_eq!(left.incomplete.len(), 1);
        assert_eq!((left.incomplete[0].1, left.incomplete[0].2), (3, 4));
    }
}
