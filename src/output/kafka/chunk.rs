//! Records larger than a topic takes are sent in chunks, never dropped or dead-lettered.
//!
//! The protocol, for consumers (`scripts/reassemble.py` is a reference implementation):
//! - a record whose message would exceed its topic's `max.message.bytes` (read from the
//!   broker with DescribeConfigs; Kafka's default 1,048,588 when the broker does not say) or
//!   the producer's `message.max.bytes` (librdkafka's default 1,000,000) is cut into chunks:
//!   consecutive byte ranges of the record's value (the envelope JSON), in order;
//! - every chunk carries the record's usual headers (`id`, `record_id`, `type`, `format`,
//!   `retention_class`, `expires_at`) and four more: `chunk_index` (0-based),
//!   `chunk_count` and `chunk_size` (bytes of value per chunk; decimal text), and
//!   `chunk_sha256` (hex SHA-256 of the whole value);
//! - every chunk has the same key (the record's key, or its id when it has none), so all
//!   chunks of a record go to one partition, in order;
//!   (with `key: record_id`, a producer's duplicates share that key: their chunks are still
//!   told apart by `id`);
//! - a consumer collects the chunks of an id and `chunk_size`, concatenates them by index
//!   once it has `chunk_count` of them, and checks the SHA-256. A chunk may arrive more than
//!   once (a record is sent again whole when any of its chunks failed, and after a restart):
//!   within one `chunk_size` duplicates of an index are equal, keep one. Another
//!   `chunk_size` is another complete sending (smaller chunks after the broker refused one,
//!   or a topic limit changed before a restart); the first complete one wins. A message
//!   without `chunk_count` is a whole record.
//! - the chunk size is fixed when a record is first produced: retries send the same chunks.
//!
//! A record is confirmed to its source only once every chunk is acknowledged.

use std::ops::Range;

use sha2::{Digest, Sha256};

/// Room left in each message, beyond its key and headers, for Kafka's framing of a record and
/// of a batch (about 70 and 61 bytes).
const OVERHEAD: usize = 256;

/// No chunk is smaller than this: a limit so low is a misconfiguration, not a reason to send a
/// record as thousands of messages.
pub(super) const MIN_CHUNK: usize = 512;

/// Kafka's default `max.message.bytes` of a topic, when the broker does not report one.
pub(super) const KAFKA_DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_588;

/// librdkafka's default `message.max.bytes`.
pub(super) const PRODUCER_DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;

/// How many bytes of value fit in one message of a topic whose limit is `max_message_bytes`,
/// with this much key and headers.
pub(super) fn payload_limit(max_message_bytes: usize, key_and_headers: usize) -> usize {
    max_message_bytes
        .saturating_sub(key_and_headers + OVERHEAD)
        .max(MIN_CHUNK)
}

/// The byte ranges to send `len` bytes in, at most `limit` each: one range when it fits.
pub(super) fn ranges(len: usize, limit: usize) -> Vec<Range<usize>> {
    let limit = limit.max(1);
    if len <= limit {
        #[allow(clippy::single_range_in_vec_init)] // one range: the whole value
        return vec![0..len];
    }
    (0..len.div_ceil(limit))
        .map(|i| i * limit..((i + 1) * limit).min(len))
        .collect()
}

/// The `chunk_sha256` header of a value.
pub(super) fn sha256_hex(value: &[u8]) -> String {
    let digest = Sha256::digest(value);
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        hex.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_that_fits_is_one_range() {
        assert_eq!(ranges(10, 10), vec![0..10]);
        assert_eq!(ranges(0, 10), vec![0..0]);
    }

    #[test]
    fn ranges_cover_the_value_in_order_none_over_the_limit() {
        let r = ranges(25, 10);
        assert_eq!(r, vec![0..10, 10..20, 20..25]);
        for len in [1usize, 9, 10, 11, 99, 100, 101, 12_345] {
            for limit in [1usize, 7, 10, 100] {
                let r = ranges(len, limit);
                assert_eq!(r.first().map(|r| r.start), Some(0));
                assert_eq!(r.last().map(|r| r.end), Some(len));
                assert!(r.windows(2).all(|w| w[0].end == w[1].start));
                assert!(r.iter().all(|r| r.len() <= limit && !r.is_empty()));
            }
        }
    }

    #[test]
    fn the_payload_limit_leaves_room_for_headers_and_never_goes_below_the_floor() {
        assert_eq!(payload_limit(1_000_000, 500), 1_000_000 - 500 - OVERHEAD);
        assert_eq!(payload_limit(100, 500), MIN_CHUNK);
    }

    #[test]
    fn sha256_is_the_standard_one() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
