//! The record as shipped: the application's original JSON, byte for byte, inside an envelope
//! of metadata, plus what an output needs to send it (topic, key, headers).
//!
//! The envelope is written by hand rather than through a serde model so that the record's own
//! text is spliced in unchanged: key order, number text (`1.10`, `1e2`, big integers) and
//! escapes survive exactly as the application wrote them.
//!
//! ```json
//! {"id":"…","record_id":"…","type":"sqlQuery","format":"immuta","time":"2021-08-09T16:02:27.345Z",
//!  "observed_time":"…","retention":{"class":"forever","days":null,"expires_at":null},
//!  "source":{"file":"/var/log/pods/…/0.log","stream":"stdout","offset":1234,"time":"…"},
//!  "kubernetes":{…},"fields":{…},"prefix":"…","suffix":"…","record":{…the original object…}}
//! ```
//!
//! The `id` is derived from where the line was read (the file's fingerprint and the line's
//! offset) and from the line's bytes, so reading the same line again after a restart gives the
//! same id, and two different lines never share one: it deduplicates auditrail's own
//! redelivery. The `record_id` is the producer's own id for the record (Sym's `id`, or the
//! value at a configured `audit.ids` pointer), so the producer's duplicates share it; a record
//! without one gets its `id`. `fields` (only when the format found some) holds the values a
//! format read outside the record (Pryv's `userid`), as JSON.

use std::io::Write;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::ack::Ack;
use crate::budget::Charge;
use crate::extract::Field;
use crate::integrity::{self, Link};

/// `outputs.kafka.key`: what the Kafka record key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStrategy {
    /// The pod's uid: one pod's records stay ordered in one partition. Without pod metadata
    /// the record has no key.
    #[default]
    PodUid,
    /// The record id (`id`): one per line read.
    Id,
    /// The producer's id (`record_id`, else `id`): the producer's duplicates of a record share
    /// a key, so they reach one partition, where a consumer can deduplicate them.
    RecordId,
    /// The record type.
    Type,
}

/// Where a line was read from: enough to find it again and to give it a stable id.
#[derive(Debug, Clone)]
pub struct LineOrigin<'a> {
    /// The file path as read (`-` for stdin).
    pub file: &'a str,
    /// A stable identity of the stream (a file's fingerprint), part of the record id.
    pub identity: u64,
    /// `stdout` or `stderr` when the framing says so.
    pub stream: Option<&'a str>,
    /// Byte offset of the line's first byte in the stream.
    pub offset: u64,
    /// What the record id hashes as the line's place in the stream: `offset`, unless the
    /// source knows a more stable one ([`crate::line::Line::id_position`]).
    pub id_position: u64,
    /// The container runtime's timestamp of the line (CRI or docker framing), as written.
    pub time: Option<&'a str>,
    /// The line's end never came; it was processed as it stood (`source.unterminated`).
    pub unterminated: bool,
}

/// Retention decided for a record.
#[derive(Debug, Clone)]
pub struct RetentionTag {
    pub class: Arc<str>,
    /// `None` means kept forever.
    pub days: Option<u32>,
    pub topic: Arc<str>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// One audit record ready for an output.
#[derive(Debug)]
pub struct Record {
    pub id: String,
    /// The producer's id for the record, else `id`.
    pub record_id: String,
    pub record_type: String,
    pub format: Arc<str>,
    pub retention: RetentionTag,
    /// The Kafka key; `None` sends no key.
    pub key: Option<String>,
    /// The envelope JSON (the Kafka value).
    pub value: Vec<u8>,
    /// When auditrail read the line: the Kafka record timestamp.
    pub read_time: DateTime<Utc>,
    /// Confirmed by the output once the record is durable.
    pub ack: Ack,
    /// Which outputs take the record: bit `i` is the `i`-th of `OutputsConfig::enabled`.
    pub outputs: u32,
    /// What the record holds of the memory budget (charged when a source sends it).
    pub charge: Charge,
    /// Its link of its segment's chain (`integrity.chain`): six more headers.
    pub chain: Option<Box<Link>>,
}

/// The inputs of an envelope, borrowed from the line being processed.
#[derive(Debug)]
pub struct EnvelopeParts<'a> {
    pub origin: &'a LineOrigin<'a>,
    /// The whole line's text (for the id).
    pub line: &'a [u8],
    pub format: &'a Arc<str>,
    pub record_type: &'a str,
    pub time: Option<DateTime<Utc>>,
    pub retention: RetentionTag,
    /// Pre-serialised `kubernetes` object to splice in, built once per source.
    pub kubernetes: Option<&'a str>,
    /// The pod's uid, when known (a possible Kafka key).
    pub pod_uid: Option<&'a str>,
    pub prefix: &'a str,
    pub record: &'a str,
    pub suffix: &'a str,
    pub read_time: DateTime<Utc>,
    /// The producer's own id for the record, when it has one (the `record_id`).
    pub natural_id: Option<&'a str>,
    /// Values the format read outside the record (the `fields` object, omitted when empty).
    pub fields: &'a [Field<'a>],
}

/// A stable id: 128 bits of XXH3 over the stream identity, the line's place in it and its bytes.
pub fn record_id(identity: u64, offset: u64, line: &[u8]) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&identity.to_le_bytes());
    hasher.update(&offset.to_le_bytes());
    hasher.update(line);
    // `{:032x}` written by hand: the formatting machinery costs more than the hash.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = hasher.digest128();
    let mut id = String::with_capacity(32);
    for shift in (0..32).rev() {
        id.push(char::from(HEX[((digest >> (shift * 4)) & 0xf) as usize]));
    }
    id
}

/// Formats a time the way every time in the envelope is written (RFC 3339, UTC, milliseconds).
pub fn format_time(t: &DateTime<Utc>) -> String {
    let mut out = TimeText::default();
    match out.write(t) {
        Some(text) => text.to_owned(),
        None => t.to_rfc3339_opts(SecondsFormat::Millis, true),
    }
}

/// [`format_time`] without an allocation: `YYYY-MM-DDTHH:MM:SS.mmmZ` on the stack, for the
/// years 0 to 9999 outside a leap second (chrono's text for those, byte for byte); `None` for
/// the rest, which [`format_time`] leaves to chrono.
#[derive(Default)]
pub(crate) struct TimeText([u8; 24]);

impl TimeText {
    pub(crate) fn write(&mut self, t: &DateTime<Utc>) -> Option<&str> {
        use chrono::{Datelike, Timelike};
        let (year, nanos) = (t.year(), t.nanosecond());
        if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
            return None;
        }
        let b = &mut self.0;
        let mut put = |at: usize, value: u32, digits: usize| {
            let mut v = value;
            for i in (0..digits).rev() {
                b[at + i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, year as u32, 4);
        put(5, t.month(), 2);
        put(8, t.day(), 2);
        put(11, t.hour(), 2);
        put(14, t.minute(), 2);
        put(17, t.second(), 2);
        put(20, nanos / 1_000_000, 3);
        for (at, c) in [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'.'),
            (23, b'Z'),
        ] {
            b[at] = c;
        }
        std::str::from_utf8(&self.0).ok()
    }
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    // Most strings here (ids, names, times, paths) need no escape: copied as they are, which
    // is what serde_json writes for them, without its per-byte escape table.
    // (A fold without an early exit, so that the check is vectorised.)
    let escapes = s.bytes().fold(false, |found, b| {
        found | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if !escapes {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn json_opt_time(out: &mut Vec<u8>, t: Option<&DateTime<Utc>>) {
    match t {
        Some(t) => match TimeText::default().write(t) {
            // Digits and punctuation only: nothing to escape.
            Some(text) => {
                out.push(b'"');
                out.extend_from_slice(text.as_bytes());
                out.push(b'"');
            }
            None => json_str(out, &format_time(t)),
        },
        None => out.extend_from_slice(b"null"),
    }
}

impl Record {
    /// Builds the record and its envelope.
    pub fn build(parts: EnvelopeParts<'_>, key: KeyStrategy, ack: Ack) -> Record {
        let id = record_id(parts.origin.identity, parts.origin.id_position, parts.line);
        let natural_id = parts.natural_id.map_or_else(|| id.clone(), str::to_owned);
        let key = match key {
            KeyStrategy::PodUid => parts.pod_uid.map(str::to_owned),
            KeyStrategy::Id => Some(id.clone()),
            KeyStrategy::RecordId => Some(natural_id.clone()),
            KeyStrategy::Type => Some(parts.record_type.to_owned()),
        };
        // The envelope's fixed text takes at most 400 bytes; with the variable parts, this is
        // its length unless a string needs escapes: one allocation, no regrowth.
        let variable = [
            parts.record,
            parts.prefix,
            parts.suffix,
            parts.origin.file,
            parts.origin.time.unwrap_or(""),
            parts.kubernetes.unwrap_or(""),
            parts.record_type,
            &**parts.format,
            &*parts.retention.class,
            natural_id.as_str(),
        ]
        .iter()
        .map(|s| s.len())
        .sum::<usize>()
            + parts
                .fields
                .iter()
                .map(|f| f.name.len() + f.json.len() + 4)
                .sum::<usize>();
        let mut v = Vec::with_capacity(variable + 400);
        v.extend_from_slice(b"{\"id\":");
        json_str(&mut v, &id);
        v.extend_from_slice(b",\"record_id\":");
        json_str(&mut v, &natural_id);
        v.extend_from_slice(b",\"type\":");
        json_str(&mut v, parts.record_type);
        v.extend_from_slice(b",\"format\":");
        json_str(&mut v, parts.format);
        v.extend_from_slice(b",\"time\":");
        json_opt_time(&mut v, parts.time.as_ref());
        v.extend_from_slice(b",\"observed_time\":");
        json_opt_time(&mut v, Some(&parts.read_time));
        v.extend_from_slice(b",\"retention\":{\"class\":");
        json_str(&mut v, &parts.retention.class);
        v.extend_from_slice(b",\"days\":");
        match parts.retention.days {
            Some(d) => {
                let _ = write!(v, "{d}");
            }
            None => v.extend_from_slice(b"null"),
        }
        v.extend_from_slice(b",\"expires_at\":");
        json_opt_time(&mut v, parts.retention.expires_at.as_ref());
        v.extend_from_slice(b"},\"source\":{\"file\":");
        json_str(&mut v, parts.origin.file);
        v.extend_from_slice(b",\"stream\":");
        match parts.origin.stream {
            Some(s) => json_str(&mut v, s),
            None => v.extend_from_slice(b"null"),
        }
        let _ = write!(v, ",\"offset\":{}", parts.origin.offset);
        v.extend_from_slice(b",\"time\":");
        match parts.origin.time {
            Some(t) => json_str(&mut v, t),
            None => v.extend_from_slice(b"null"),
        }
        if parts.origin.unterminated {
            v.extend_from_slice(b",\"unterminated\":true");
        }
        v.push(b'}');
        if let Some(k8s) = parts.kubernetes {
            v.extend_from_slice(b",\"kubernetes\":");
            v.extend_from_slice(k8s.as_bytes());
        }
        if !parts.fields.is_empty() {
            v.extend_from_slice(b",\"fields\":{");
            for (i, field) in parts.fields.iter().enumerate() {
                if i > 0 {
                    v.push(b',');
                }
                json_str(&mut v, &field.name);
                v.push(b':');
                // A field's JSON text, as the format wrote it (a quoted string, an array).
                v.extend_from_slice(field.json.as_bytes());
            }
            v.push(b'}');
        }
        if !parts.prefix.is_empty() {
            v.extend_from_slice(b",\"prefix\":");
            json_str(&mut v, parts.prefix);
        }
        if !parts.suffix.is_empty() {
            v.extend_from_slice(b",\"suffix\":");
            json_str(&mut v, parts.suffix);
        }
        v.extend_from_slice(b",\"record\":");
        v.extend_from_slice(parts.record.as_bytes());
        v.push(b'}');
        Record {
            id,
            record_id: natural_id,
            record_type: parts.record_type.to_owned(),
            format: Arc::clone(parts.format),
            retention: parts.retention,
            key,
            value: v,
            read_time: parts.read_time,
            ack,
            outputs: 1,
            charge: Charge::none(),
            chain: None,
        }
    }

    /// A copy for a second output, with its own share of the acknowledgement.
    pub fn duplicate(&self) -> Record {
        Record {
            id: self.id.clone(),
            record_id: self.record_id.clone(),
            record_type: self.record_type.clone(),
            format: Arc::clone(&self.format),
            retention: self.retention.clone(),
            key: self.key.clone(),
            value: self.value.clone(),
            read_time: self.read_time,
            ack: self.ack.share(),
            outputs: self.outputs,
            charge: self.charge.another(self.charge.bytes()),
            chain: self.chain.clone(),
        }
    }

    /// The Kafka headers: what a consumer needs to route and deduplicate without parsing the
    /// value. Values are UTF-8 text; a forever record's `expires_at` header is empty.
    pub fn headers(&self) -> [(&'static str, String); 6] {
        [
            ("id", self.id.clone()),
            ("record_id", self.record_id.clone()),
            ("type", self.record_type.clone()),
            ("format", self.format.to_string()),
            ("retention_class", self.retention.class.to_string()),
            (
                "expires_at",
                self.retention
                    .expires_at
                    .as_ref()
                    .map(format_time)
                    .unwrap_or_default(),
            ),
        ]
    }

    /// [`Record::headers`] without allocating: `each` gets every name and value, in order.
    pub fn for_each_header(&self, mut each: impl FnMut(&'static str, &str)) {
        self.fold_headers((), |(), name, value| each(name, value));
    }

    /// [`Record::headers`] without allocating, folded into `init` (a Kafka producer's
    /// headers, built by value) name by name, in order.
    pub fn fold_headers<T>(&self, init: T, mut each: impl FnMut(T, &'static str, &str) -> T) -> T {
        let mut acc = init;
        acc = each(acc, "id", &self.id);
        acc = each(acc, "record_id", &self.record_id);
        acc = each(acc, "type", &self.record_type);
        acc = each(acc, "format", &self.format);
        acc = each(acc, "retention_class", &self.retention.class);
        let mut text = TimeText::default();
        acc = match &self.retention.expires_at {
            None => each(acc, "expires_at", ""),
            Some(t) => match text.write(t) {
                Some(s) => each(acc, "expires_at", s),
                None => each(acc, "expires_at", &format_time(t)),
            },
        };
        let Some(link) = &self.chain else {
            return acc;
        };
        let mut seq = [0u8; 20];
        let mut prev = [0u8; 64];
        let mut hash = [0u8; 64];
        acc = each(acc, integrity::HEADER_STREAM, &link.stream);
        acc = each(acc, integrity::HEADER_SEGMENT, &link.segment);
        if link.seq == 0 {
            // A digest: it names its segment and is no link of it.
            return acc;
        }
        acc = each(acc, integrity::HEADER_SEQ, decimal(link.seq, &mut seq));
        acc = each(acc, integrity::HEADER_PREV, hex_text(&link.prev, &mut prev));
        acc = each(acc, integrity::HEADER_HASH, hex_text(&link.hash, &mut hash));
        each(acc, integrity::HEADER_ALGORITHM, link.algorithm)
    }

    /// The line `check` and `outputs.stdout` print: `{"topic","key","headers","value"}`.
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"topic\":");
        json_str(out, &self.retention.topic);
        out.extend_from_slice(b",\"key\":");
        match &self.key {
            Some(k) => json_str(out, k),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"headers\":{");
        let mut first = true;
        self.for_each_header(|name, value| {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            json_str(out, name);
            out.push(b':');
            json_str(out, value);
        });
        out.extend_from_slice(b"},\"value\":");
        out.extend_from_slice(&self.value);
        out.extend_from_slice(b"}\n");
    }
}

/// `n` in decimal, written into `buf` (no allocation per header).
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[at..]).unwrap_or("0")
}

/// Lowercase hex of `hash`, written into `buf`.
fn hex_text<'a>(hash: &integrity::Hash, buf: &'a mut [u8; 64]) -> &'a str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in hash.iter().enumerate() {
        buf[2 * i] = HEX[usize::from(b >> 4)];
        buf[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
    std::str::from_utf8(buf).unwrap_or("")
}

/// A record for the tests of what comes after the envelope (outputs), built the way the
/// processor builds one: a Pryv record of `record_type` at `offset` of `/logs/0.log`, class
/// `standard` (60 days) on topic `audit`, read at 2021-08-09T16:02:45.123Z.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use super::{EnvelopeParts, KeyStrategy, LineOrigin, Record, RetentionTag};
    use crate::ack::Ack;

    /// The record's text.
    pub(crate) const RECORD: &str = r#"{"action": "events.get", "source": {"ip": "85.5.192.175"}}"#;

    pub(crate) fn record(record_type: &str, offset: u64, ack: Ack) -> Record {
        let origin = LineOrigin {
            file: "/logs/0.log",
            identity: 1,
            stream: Some("stdout"),
            offset,
            id_position: offset,
            time: None,
            unterminated: false,
        };
        let format: Arc<str> = Arc::from("pryv");
        // 2021-08-09T16:02:45.123Z
        let read_time =
            chrono::DateTime::from_timestamp_millis(1_628_524_965_123).unwrap_or_default();
        Record::build(
            EnvelopeParts {
                origin: &origin,
                line: RECORD.as_bytes(),
                format: &format,
                record_type,
                time: None,
                retention: RetentionTag {
                    class: Arc::from("standard"),
                    days: Some(60),
                    topic: Arc::from("audit"),
                    expires_at: None,
                },
                kubernetes: None,
                pod_uid: None,
                prefix: "",
                record: RECORD,
                suffix: "",
                read_time,
                natural_id: None,
                fields: &[],
            },
            KeyStrategy::Id,
            ack,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts<'a>(
        origin: &'a LineOrigin<'a>,
        format: &'a Arc<str>,
        record: &'a str,
    ) -> EnvelopeParts<'a> {
        EnvelopeParts {
            origin,
            line: record.as_bytes(),
            format,
            record_type: "sqlQuery",
            time: None,
            retention: RetentionTag {
                class: Arc::from("forever"),
                days: None,
                topic: Arc::from("audit-forever"),
                expires_at: None,
            },
            kubernetes: None,
            pod_uid: None,
            prefix: "host app[1]: ",
            record,
            suffix: "",
            read_time: DateTime::from_timestamp_millis(0).unwrap(),
            natural_id: None,
            fields: &[],
        }
    }

    #[test]
    fn the_record_text_is_spliced_byte_for_byte() {
        let record = r#"{"z":1.10,"a":1e2,"big":123456789012345678901234567890,"s":"\u00e9\n"}"#;
        let origin = LineOrigin {
            file: "f",
            identity: 1,
            stream: Some("stdout"),
            offset: 7,
            id_position: 7,
            time: None,
            unterminated: false,
        };
        let format: Arc<str> = Arc::from("immuta");
        let r = Record::build(
            parts(&origin, &format, record),
            KeyStrategy::Id,
            Ack::none(),
        );
        assert_eq!(r.key.as_deref(), Some(r.id.as_str()));
        let text = String::from_utf8(r.value.clone()).unwrap();
        assert!(text.ends_with(&format!(",\"record\":{record}}}")), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["prefix"], "host app[1]: ");
        assert_eq!(v["retention"]["days"], serde_json::Value::Null);
        assert_eq!(v["source"]["offset"], 7);
        assert!(v.get("suffix").is_none());
    }

    #[test]
    fn times_are_written_as_chrono_writes_them() {
        // The hand-written formatter against chrono's RFC 3339 text, across the range it
        // takes and around its edges (the rest goes to chrono).
        let mut ms: Vec<i64> = vec![
            0,
            1,
            999,
            -1,
            -62_167_219_200_000, // 0000-01-01
            -62_167_219_200_001, // before year 0: chrono
            253_402_300_799_999, // 9999-12-31T23:59:59.999
            253_402_300_800_000, // 10000-01-01: chrono
            1_628_524_947_022,
            951_782_400_000, // 2000-02-29
        ];
        let mut x: u64 = 1;
        for _ in 0..20_000 {
            // splitmix64
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ms.push((z >> 1) as i64 % 400_000_000_000_000 - 100_000_000_000_000);
        }
        for ms in ms {
            let Some(t) = DateTime::from_timestamp_millis(ms) else {
                continue;
            };
            let t = t + chrono::Duration::nanoseconds(ms.rem_euclid(7) * 123_457);
            let want = t.to_rfc3339_opts(SecondsFormat::Millis, true);
            assert_eq!(format_time(&t), want, "{ms}");
            let mut out = Vec::new();
            json_opt_time(&mut out, Some(&t));
            assert_eq!(out, serde_json::to_vec(&want).unwrap(), "{ms}");
        }
        // A leap second: chrono's text.
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_milli_opt(23, 59, 59, 1_500))
            .unwrap()
            .and_utc();
        assert_eq!(
            format_time(&leap),
            leap.to_rfc3339_opts(SecondsFormat::Millis, true)
        );
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        for s in [
            "",
            "plain",
            "/var/log/pods/ns_pod_uid/c/0.log",
            "quote \" here",
            "back\\slash",
            "ctl \u{1}\u{1f}\n\r\t\u{8}\u{c}",
            "del \u{7f} é 日本 🎉",
        ] {
            let mut out = Vec::new();
            json_str(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn ids_are_the_hash_in_32_hex_digits() {
        for (identity, offset, line) in [(0, 0u64, &b""[..]), (1, 10, b"x"), (u64::MAX, 7, b"{}")] {
            let mut hasher = xxhash_rust::xxh3::Xxh3::new();
            hasher.update(&identity.to_le_bytes());
            hasher.update(&offset.to_le_bytes());
            hasher.update(line);
            assert_eq!(
                record_id(identity, offset, line),
                format!("{:032x}", hasher.digest128())
            );
        }
    }

    #[test]
    fn the_headers_without_allocation_are_the_headers() {
        let mut r = testing::record("sqlQuery", 3, Ack::none());
        for expires_at in [
            None,
            DateTime::from_timestamp_millis(1_628_524_947_022),
            DateTime::from_timestamp_millis(253_402_300_800_000),
        ] {
            r.retention.expires_at = expires_at;
            let mut seen = Vec::new();
            r.for_each_header(|k, v| seen.push((k, v.to_owned())));
            assert_eq!(seen, r.headers().to_vec());
        }
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(record_id(1, 10, b"x"), record_id(1, 10, b"x"));
        assert_ne!(record_id(1, 10, b"x"), record_id(1, 11, b"x"));
        assert_ne!(record_id(1, 10, b"x"), record_id(2, 10, b"x"));
        assert_ne!(record_id(1, 10, b"x"), record_id(1, 10, b"y"));
        assert_eq!(record_id(1, 10, b"x").len(), 32);
    }

    #[test]
    fn finding_4_the_producers_id_is_the_record_id_and_can_be_the_key() {
        let format: Arc<str> = Arc::from("sym");
        let record = r#"{"id":"e-1","type":"event"}"#;
        let build = |offset: u64, natural_id: Option<&str>, key| {
            let origin = LineOrigin {
                file: "f",
                identity: 1,
                stream: None,
                offset,
                id_position: offset,
                time: None,
                unterminated: false,
            };
            let mut p = parts(&origin, &format, record);
            p.natural_id = natural_id;
            Record::build(p, key, Ack::none())
        };
        let a = build(0, Some("e-1"), KeyStrategy::RecordId);
        let b = build(100, Some("e-1"), KeyStrategy::RecordId);
        assert_ne!(a.id, b.id, "two lines read: two ids");
        assert_eq!((a.record_id.as_str(), b.record_id.as_str()), ("e-1", "e-1"));
        assert_eq!(
            (a.key.as_deref(), b.key.as_deref()),
            (Some("e-1"), Some("e-1"))
        );
        assert!(a.headers().contains(&("record_id", "e-1".to_owned())));
        let v: serde_json::Value = serde_json::from_slice(&a.value).unwrap();
        assert_eq!(
            (v["id"].as_str(), v["record_id"].as_str()),
            (Some(a.id.as_str()), Some("e-1"))
        );

        let none = build(0, None, KeyStrategy::RecordId);
        assert_eq!(
            none.record_id, none.id,
            "without a producer id, the line's id"
        );
        assert_eq!(none.key.as_deref(), Some(none.id.as_str()));
        assert_eq!(
            build(0, Some("e-1"), KeyStrategy::Id).key,
            Some(a.id.clone())
        );
        assert!(v.get("fields").is_none(), "no fields: no object");
    }

    #[test]
    fn fields_are_an_object_of_their_json_text() {
        let origin = LineOrigin {
            file: "f",
            identity: 1,
            stream: None,
            offset: 0,
            id_position: 0,
            time: None,
            unterminated: false,
        };
        let format: Arc<str> = Arc::from("pryv");
        let fields = [
            Field {
                name: "userid".into(),
                json: r#""ck6""#.into(),
            },
            Field {
                name: "streamIds".into(),
                json: r#"["a", "b"]"#.into(),
            },
        ];
        let mut p = parts(&origin, &format, "{}");
        p.fields = &fields;
        let r = Record::build(p, KeyStrategy::Id, Ack::none());
        let text = String::from_utf8(r.value).unwrap();
        assert!(
            text.contains(r#","fields":{"userid":"ck6","streamIds":["a", "b"]},"prefix":"#),
            "{text}"
        );
    }

    #[test]
    fn a_chained_record_carries_the_six_chain_headers_after_the_others() {
        let mut r = super::testing::record("events.get", 0, Ack::none());
        let plain = r.fold_headers(0, |n, _, _| n + 1);
        r.chain = Some(Box::new(Link {
            stream: Arc::from("/logs/0.log"),
            segment: Arc::from("00000000000000ab"),
            seq: 1234567,
            prev: [0xab; 32],
            hash: [0x01; 32],
            algorithm: "sha256",
        }));
        let mut seen = Vec::new();
        r.for_each_header(|k, v| seen.push((k, v.to_owned())));
        assert_eq!(seen.len(), plain + 6);
        let chain: Vec<_> = seen[plain..]
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        assert_eq!(
            chain,
            [
                ("chain_stream", "/logs/0.log"),
                ("chain_segment", "00000000000000ab"),
                ("chain_seq", "1234567"),
                ("chain_prev", "ab".repeat(32).as_str()),
                ("chain_hash", "01".repeat(32).as_str()),
                ("chain_alg", "sha256"),
            ]
        );
        let mut line = Vec::new();
        r.write_json_line(&mut line);
        let json: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(json["headers"]["chain_seq"], "1234567");
        assert_eq!(
            r.duplicate().chain,
            r.chain,
            "a second output's copy keeps the link"
        );
        assert_eq!(decimal(0, &mut [0; 20]), "0");
        assert_eq!(decimal(u64::MAX, &mut [0; 20]), u64::MAX.to_string());
    }
}
