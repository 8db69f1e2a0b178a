//! Integrity: the tamper-evident chain and the signed digests, as both ends compute them.
//!
//! This module is the protocol, shared by the pipeline that writes the chain and by
//! `auditrail verify` that checks it; it knows nothing of sources or outputs.
//!
//! **The chain.** Records are chained per *segment*: one file of a container's log file set
//! (its identity survives renames), or one stream of the pods/log API. A segment's records
//! are numbered `seq` 1, 2, 3, … in the order auditrail read them, and each link's hash covers
//! its number, the previous link's hash and the record's value (the envelope bytes, whole,
//! before any chunking):
//!
//! ```text
//! genesis  = SHA-256("auditrail-chain-v1 genesis\n" stream "\n" segment)
//! hash(n)  = SHA-256("auditrail-chain-v1\n" seq_n as 8 bytes big-endian ‖ hash(n-1) ‖ value_n)
//!            (HMAC-SHA-256 keyed with the chain key instead, when one is configured)
//! hash(0)  = genesis
//! value_n  = the envelope bytes without the text of the `observed_time` member's value,
//!            nor that of `expires_at` when it counts from the moment of reading
//!            ([`chained_parts`]): the moment of reading differs when a record is sent
//!            again after a crash, and the link must not
//! ```
//!
//! Why per segment and not per file set: a record sent again after a crash must carry the
//! same `seq` and `hash` as the first time, and only a segment is read in one order every
//! time; the files of a set are read side by side around a rotation. The `stream` names the
//! set, so `verify` groups a set's segments under it.
//!
//! Each record carries the link in Kafka headers ([`HEADER_STREAM`] …, lowercase hex for
//! hashes, decimal for `seq`). Gap records (a known loss) are links like any record.
//!
//! **Digests.** Every so many records or seconds, a segment's chain is summed up in a digest
//! record naming its `seq` range, the last hash and the previous digest's signature, signed
//! with Ed25519 over [`Digest::signed_text`]. A digest is itself a record: checkpointed,
//! re-sent after a crash like any other.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// Kafka header: the stream (a container's log file set, or an API stream) the segment is part of.
pub const HEADER_STREAM: &str = "chain_stream";
/// Kafka header: the segment (a file's identity, or an API stream) the chain runs in.
pub const HEADER_SEGMENT: &str = "chain_segment";
/// Kafka header: the record's number in its segment, from 1 (decimal).
pub const HEADER_SEQ: &str = "chain_seq";
/// Kafka header: the previous link's hash (hex; the genesis hash for `seq` 1).
pub const HEADER_PREV: &str = "chain_prev";
/// Kafka header: this link's hash (hex).
pub const HEADER_HASH: &str = "chain_hash";
/// Kafka header: `hmac-sha256` when the hash is keyed, `sha256` otherwise.
pub const HEADER_ALGORITHM: &str = "chain_alg";

/// The record type of a digest.
pub const DIGEST_TYPE: &str = "auditrail.digest";

/// A SHA-256 (or HMAC-SHA-256) value.
pub type Hash = [u8; 32];

/// `integrity`: the chain and the digests, as the writer applies them.
#[derive(Debug, Clone, Default, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IntegrityConfig {
    /// Every shipped record carries a link of its segment's chain (headers `chain_*`).
    pub chain: bool,
    /// A secret (a mounted Secret's file): links are HMAC-SHA-256 keyed with its bytes.
    pub chain_key_file: Option<PathBuf>,
    /// Signed digests of every segment's chain, to a topic of their own.
    pub digests: Option<DigestsConfig>,
}

/// `integrity.digests`.
#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DigestsConfig {
    pub topic: String,
    /// Ed25519 private key, PKCS#8 PEM (`openssl genpkey -algorithm ed25519`).
    pub signing_key_file: PathBuf,
    /// A digest after this many records of a segment …
    #[serde(default = "default_every_records")]
    pub every_records: u64,
    /// … or this long after the last one, when a record was chained since.
    #[serde(default = "default_every", with = "humantime_serde")]
    pub every: std::time::Duration,
}

fn default_every_records() -> u64 {
    1000
}

fn default_every() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}

impl IntegrityConfig {
    /// The problems of this section alone; `config` adds those that concern other sections
    /// (the digest topic's name, per-output filters).
    pub fn validate(&self, path: &str, problems: &mut Vec<crate::problem::Problem>) {
        use crate::problem::Problem;
        if !self.chain && self.chain_key_file.is_some() {
            problems.push(Problem::new(
                format!("{path}.chain_key_file"),
                "is set but `chain` is false: no link would use the key",
            ));
        }
        if self
            .chain_key_file
            .as_ref()
            .is_some_and(|f| f.as_os_str().is_empty())
        {
            problems.push(Problem::new(
                format!("{path}.chain_key_file"),
                "must name a file",
            ));
        }
        if let Some(d) = &self.digests {
            if !self.chain {
                problems.push(Problem::new(
                    format!("{path}.digests"),
                    "needs `chain: true`: a digest signs a chain",
                ));
            }
            if d.signing_key_file.as_os_str().is_empty() {
                problems.push(Problem::new(
                    format!("{path}.digests.signing_key_file"),
                    "must name a file",
                ));
            }
            if d.every_records == 0 {
                problems.push(Problem::new(
                    format!("{path}.digests.every_records"),
                    "must be at least 1",
                ));
            }
            if d.every < std::time::Duration::from_secs(1) {
                problems.push(Problem::new(
                    format!("{path}.digests.every"),
                    "must be at least 1s",
                ));
            }
        }
    }

    /// The link hasher in force (`None` when the chain is off), the key read now: a key that
    /// cannot be read stops the start with its path.
    pub fn hasher(&self) -> Result<Option<ChainHasher>, KeyError> {
        if !self.chain {
            return Ok(None);
        }
        match &self.chain_key_file {
            Some(path) => ChainHasher::keyed_from_file(path).map(Some),
            None => Ok(Some(ChainHasher::plain())),
        }
    }
}

/// Why a key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {} is empty", path.display())]
    Empty { path: PathBuf },
    #[error("key file {} holds no Ed25519 key in PEM", path.display())]
    NotEd25519 {
        path: PathBuf,
        #[source]
        source: openssl::error::ErrorStack,
    },
    #[error("cannot sign or verify with the Ed25519 key")]
    Crypto(#[source] openssl::error::ErrorStack),
}

/// How links are hashed: plain SHA-256, or HMAC-SHA-256 with a secret key.
#[derive(Clone, Default)]
pub struct ChainHasher {
    /// HMAC state with the key already absorbed, cloned per link.
    key: Option<hmac::Hmac<Sha256>>,
}

impl std::fmt::Debug for ChainHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        f.debug_struct("ChainHasher")
            .field("keyed", &self.key.is_some())
            .finish()
    }
}

impl ChainHasher {
    /// Plain SHA-256 links.
    pub fn plain() -> ChainHasher {
        ChainHasher { key: None }
    }

    /// HMAC-SHA-256 links keyed with the file's bytes (a mounted Secret; a trailing line
    /// break, as `kubectl create secret --from-file` keeps it, is part of the key).
    pub fn keyed_from_file(path: &Path) -> Result<ChainHasher, KeyError> {
        let key = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        ChainHasher::keyed(&key).ok_or_else(|| KeyError::Empty {
            path: path.to_owned(),
        })
    }

    /// HMAC-SHA-256 links keyed with `key`; `None` for an empty key.
    pub fn keyed(key: &[u8]) -> Option<ChainHasher> {
        use hmac::Mac as _;
        if key.is_empty() {
            return None;
        }
        // HMAC takes a key of any length: this cannot fail.
        let mac = hmac::Hmac::<Sha256>::new_from_slice(key).ok()?;
        Some(ChainHasher { key: Some(mac) })
    }

    /// What names the key of a keyed hasher without revealing it (16 hex digits of an HMAC
    /// of a constant): a checkpoint saves it with the chain point, so a chain is not continued
    /// under another key. `None` when plain.
    pub fn key_id(&self) -> Option<String> {
        use hmac::Mac as _;
        self.key.as_ref().map(|key| {
            let mut mac = key.clone();
            mac.update(b"auditrail-chain-v1 key id\n");
            hex(&mac.finalize().into_bytes()[..8])
        })
    }

    /// The value of the [`HEADER_ALGORITHM`] header.
    pub fn algorithm(&self) -> &'static str {
        if self.key.is_some() {
            "hmac-sha256"
        } else {
            "sha256"
        }
    }

    /// The hash of link `seq` after `prev`, over the record's `value` less the text of the
    /// members that hold the moment of reading ([`chained_parts`]).
    pub fn link(&self, seq: u64, prev: &Hash, value: &[u8]) -> Hash {
        const DOMAIN: &[u8] = b"auditrail-chain-v1\n";
        let parts = chained_parts(value);
        match &self.key {
            None => {
                let mut h = Sha256::new();
                h.update(DOMAIN);
                h.update(seq.to_be_bytes());
                h.update(prev);
                for part in parts {
                    h.update(part);
                }
                h.finalize().into()
            }
            Some(key) => {
                use hmac::Mac as _;
                let mut mac = key.clone();
                mac.update(DOMAIN);
                mac.update(&seq.to_be_bytes());
                mac.update(prev);
                for part in parts {
                    mac.update(part);
                }
                mac.finalize().into_bytes().into()
            }
        }
    }
}

/// The bytes of an envelope `value` a link covers, as three consecutive runs: all of it
/// except the text of the values of the members that hold the moment auditrail read the line,
/// which differs between two sendings of one record (a re-send after a crash):
/// - `observed_time` (a JSON string or `null`), always;
/// - `retention.expires_at`, only when the record has no time of its own (`time` is `null`)
///   and no runtime timestamp (`source.time` is `null`): its expiry then counts from the
///   moment of reading (a raw line without a time; a gap record, whose moment of finding the
///   loss is its `observed_time`). Otherwise it counts from a time the link covers, and is
///   covered itself: shortening a record's retention in the archive is tampering.
///
/// A member left out is left out whole (its value's text); a value without it is all in the
/// first run. Members are found by their first `,"name":` in order: the envelope writes `id`,
/// `record_id`, `type`, `format`, `time`, `observed_time`, `retention` (`class`, `days`,
/// `expires_at`), then `source` (`file`, `stream`, `offset`, `time`), whose values before
/// these are JSON strings, numbers or `null`; inside a JSON string a `"` is always escaped, so
/// `,"` cannot occur in them. The record and the pod metadata, which may hold anything, come
/// after them.
pub fn chained_parts(value: &[u8]) -> [&[u8]; 3] {
    let whole = [value, &[][..], &[][..]];
    let Some((observed, after_observed)) = time_value(value, 0, b",\"observed_time\":") else {
        return whole;
    };
    let timeless = value[..observed].ends_with(b",\"time\":null,\"observed_time\":");
    let expires = timeless
        .then(|| time_value(value, after_observed, b",\"expires_at\":"))
        .flatten()
        .filter(|&(at, _)| value[at..].first() == Some(&b'"'))
        .filter(|&(_, after)| {
            let source = b"},\"source\":{\"file\":";
            memchr::memmem::find(&value[after..], source)
                .and_then(|s| time_value(value, after + s, b",\"time\":"))
                .is_some_and(|(t, _)| value[t..].starts_with(b"null"))
        });
    match expires {
        Some((at, after)) => [
            &value[..observed],
            &value[after_observed..at],
            &value[after..],
        ],
        None => [&value[..observed], &value[after_observed..], &[][..]],
    }
}

/// The value of the first member `name` (given as `,"name":`) at or after `from`, when it is
/// a time (a JSON string without escapes) or `null`: where its text starts and ends.
fn time_value(value: &[u8], from: usize, name: &[u8]) -> Option<(usize, usize)> {
    let start = from + memchr::memmem::find(&value[from..], name)? + name.len();
    let rest = &value[start..];
    let len = if rest.starts_with(b"null") {
        4
    } else if rest.first() == Some(&b'"') {
        // A time's text holds no escapes: the string ends at the next quote.
        memchr::memchr(b'"', &rest[1..])? + 2
    } else {
        return None;
    };
    Some((start, start + len))
}

/// A link of a segment's chain, as a record carries it to the outputs (headers `chain_*`).
/// A digest record carries one with `seq` 0: it is not a link, and only names its stream and
/// segment (headers `chain_stream`, `chain_segment`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub stream: std::sync::Arc<str>,
    pub segment: std::sync::Arc<str>,
    pub seq: u64,
    pub prev: Hash,
    pub hash: Hash,
    /// [`ChainHasher::algorithm`].
    pub algorithm: &'static str,
}

/// Where a segment's chain stands: its last link's `seq` and `hash` (0 and the genesis hash
/// before its first), as a checkpoint saves it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChainPoint {
    pub segment: String,
    /// [`ChainHasher::algorithm`]: a chain is not continued with another one.
    pub alg: String,
    /// [`ChainHasher::key_id`] of a keyed chain: nor with another key (a rotated Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub seq: u64,
    /// Hex.
    pub hash: String,
    /// Where the segment's digests stood at this point (`integrity.digests`): absent without
    /// digests, and in checkpoints written before them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<DigestPoint>,
}

/// The last digest of a segment made before a chain point: the `last_seq` it covered and its
/// signature (hex), the next digest's `first_seq - 1` and `prev_signature`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DigestPoint {
    pub seq: u64,
    pub signature: String,
}

/// The hash a segment's chain starts from (`prev` of `seq` 1).
pub fn genesis(stream: &str, segment: &str) -> Hash {
    let mut h = Sha256::new();
    h.update(b"auditrail-chain-v1 genesis\n");
    h.update(stream.as_bytes());
    h.update(b"\n");
    h.update(segment.as_bytes());
    h.finalize().into()
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The bytes of lowercase or uppercase hex text; `None` when it is not hex of `N` bytes.
pub fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.as_bytes();
    if text.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

/// A digest: what a signer asserts about a range of one segment's chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Digest {
    pub stream: String,
    pub segment: String,
    /// The first and last `seq` the digest covers (inclusive).
    pub first_seq: u64,
    pub last_seq: u64,
    /// `hash` of link `last_seq` (hex).
    pub last_hash: String,
    /// The signature of the segment's previous digest (hex), empty for its first.
    pub prev_signature: String,
    /// When it was made (RFC 3339), for people; signed like the rest.
    pub time: String,
    /// Which key signed: hex of the first 8 bytes of SHA-256 over the raw public key.
    pub key_id: String,
}

impl Digest {
    /// The exact text the signature covers: one field per line, in this order.
    pub fn signed_text(&self) -> String {
        format!(
            "auditrail-digest-v1\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n",
            self.stream,
            self.segment,
            self.first_seq,
            self.last_seq,
            self.last_hash,
            self.prev_signature,
            self.time,
            self.key_id
        )
    }
}

/// A digest as shipped (the Kafka value of a digest record): the digest's fields and
/// `signature` (hex), one JSON object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SignedDigest {
    #[serde(flatten)]
    pub digest: Digest,
    pub signature: String,
}

/// An Ed25519 private key, from a PEM file (PKCS#8, as `openssl genpkey -algorithm ed25519`
/// writes it).
pub struct Signer {
    key: openssl::pkey::PKey<openssl::pkey::Private>,
    key_id: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .finish()
    }
}

impl Signer {
    pub fn from_pem_file(path: &Path) -> Result<Signer, KeyError> {
        let pem = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let key = openssl::pkey::PKey::private_key_from_pem(&pem)
            .and_then(|k| {
                if k.id() == openssl::pkey::Id::ED25519 {
                    Ok(k)
                } else {
                    Err(openssl::error::ErrorStack::get())
                }
            })
            .map_err(|source| KeyError::NotEd25519 {
                path: path.to_owned(),
                source,
            })?;
        let raw = key.raw_public_key().map_err(KeyError::Crypto)?;
        Ok(Signer {
            key_id: key_id(&raw),
            key,
        })
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key in PEM (SubjectPublicKeyInfo), for `verify` and for people.
    pub fn public_pem(&self) -> Result<String, KeyError> {
        let pem = self.key.public_key_to_pem().map_err(KeyError::Crypto)?;
        Ok(String::from_utf8_lossy(&pem).into_owned())
    }

    /// Signs `digest` (whose `key_id` must be this key's).
    pub fn sign(&self, digest: Digest) -> Result<SignedDigest, KeyError> {
        let mut signer =
            openssl::sign::Signer::new_without_digest(&self.key).map_err(KeyError::Crypto)?;
        let signature = signer
            .sign_oneshot_to_vec(digest.signed_text().as_bytes())
            .map_err(KeyError::Crypto)?;
        Ok(SignedDigest {
            digest,
            signature: hex(&signature),
        })
    }
}

/// An Ed25519 public key, from a PEM file, that checks digests.
pub struct Verifier {
    key: openssl::pkey::PKey<openssl::pkey::Public>,
    key_id: String,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("key_id", &self.key_id)
            .finish()
    }
}

impl Verifier {
    pub fn from_pem_file(path: &Path) -> Result<Verifier, KeyError> {
        let pem = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Verifier::from_pem(&pem).map_err(|source| KeyError::NotEd25519 {
            path: path.to_owned(),
            source,
        })
    }

    pub fn from_pem(pem: &[u8]) -> Result<Verifier, openssl::error::ErrorStack> {
        let key = openssl::pkey::PKey::public_key_from_pem(pem)?;
        if key.id() != openssl::pkey::Id::ED25519 {
            return Err(openssl::error::ErrorStack::get());
        }
        let raw = key.raw_public_key()?;
        Ok(Verifier {
            key_id: key_id(&raw),
            key,
        })
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Whether `signed` carries a valid signature by this key over its digest.
    pub fn verify(&self, signed: &SignedDigest) -> bool {
        let Some(signature) = parse_hex::<64>(&signed.signature) else {
            return false;
        };
        openssl::sign::Verifier::new_without_digest(&self.key)
            .and_then(|mut v| v.verify_oneshot(&signature, signed.digest.signed_text().as_bytes()))
            .unwrap_or(false)
    }
}

fn key_id(raw_public: &[u8]) -> String {
    let digest: Hash = Sha256::digest(raw_public).into();
    hex(&digest[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_pair(dir: &Path) -> (PathBuf, PathBuf) {
        let key = openssl::pkey::PKey::generate_ed25519().unwrap();
        let private = dir.join("signing.pem");
        let public = dir.join("public.pem");
        std::fs::write(&private, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        std::fs::write(&public, key.public_key_to_pem().unwrap()).unwrap();
        (private, public)
    }

    fn digest(key_id: &str) -> Digest {
        Digest {
            stream: "pod/app/0.log".into(),
            segment: "00ff".into(),
            first_seq: 1,
            last_seq: 100,
            last_hash: hex(&[7; 32]),
            prev_signature: String::new(),
            time: "2026-12-02T09:00:00.000Z".into(),
            key_id: key_id.into(),
        }
    }

    #[test]
    fn a_link_depends_on_its_number_its_predecessor_and_its_value() {
        let h = ChainHasher::plain();
        let g = genesis("s", "1");
        let base = h.link(1, &g, b"{}");
        assert_eq!(base, h.link(1, &g, b"{}"));
        assert_ne!(base, h.link(2, &g, b"{}"));
        assert_ne!(base, h.link(1, &genesis("s", "2"), b"{}"));
        assert_ne!(base, h.link(1, &g, b"{ }"));
        let keyed = ChainHasher::keyed(b"secret").unwrap();
        assert_ne!(base, keyed.link(1, &g, b"{}"));
        assert_ne!(
            keyed.link(1, &g, b"{}"),
            ChainHasher::keyed(b"secret\n").unwrap().link(1, &g, b"{}")
        );
    }

    #[test]
    fn the_plain_link_is_sha256_of_the_documented_bytes() {
        let prev = [9u8; 32];
        let mut bytes = b"auditrail-chain-v1\n".to_vec();
        bytes.extend_from_slice(&3u64.to_be_bytes());
        bytes.extend_from_slice(&prev);
        bytes.extend_from_slice(b"{\"a\":1}");
        let expected: Hash = Sha256::digest(&bytes).into();
        assert_eq!(ChainHasher::plain().link(3, &prev, b"{\"a\":1}"), expected);
    }

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_hex() {
        let h = [0xab; 32];
        assert_eq!(parse_hex::<32>(&hex(&h)), Some(h));
        assert_eq!(parse_hex::<32>(&hex(&h).to_uppercase()), Some(h));
        assert_eq!(parse_hex::<32>("ab"), None);
        assert_eq!(parse_hex::<2>("zz00"), None);
    }

    #[test]
    fn a_signed_digest_verifies_and_any_change_breaks_it() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = pem_pair(dir.path());
        let signer = Signer::from_pem_file(&private).unwrap();
        let verifier = Verifier::from_pem_file(&public).unwrap();
        assert_eq!(signer.key_id(), verifier.key_id());
        let signed = signer.sign(digest(signer.key_id())).unwrap();
        assert!(verifier.verify(&signed));
        let json = serde_json::to_string(&signed).unwrap();
        let back: SignedDigest = serde_json::from_str(&json).unwrap();
        assert!(verifier.verify(&back));
        let mut forged = signed.clone();
        forged.digest.last_seq = 99;
        assert!(!verifier.verify(&forged));
        let mut garbled = signed.clone();
        garbled.signature.replace_range(0..2, "00");
        assert!(!verifier.verify(&garbled) || signed.signature.starts_with("00"));
        let other_dir = tempfile::tempdir().unwrap();
        let (_, other_public) = pem_pair(other_dir.path());
        let other = Verifier::from_pem_file(&other_public).unwrap();
        assert!(!other.verify(&signed));
        assert_eq!(
            Verifier::from_pem(signer.public_pem().unwrap().as_bytes())
                .unwrap()
                .key_id(),
            signer.key_id()
        );
    }

    #[test]
    fn keys_that_are_missing_empty_or_not_ed25519_are_refused_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        assert!(matches!(
            Signer::from_pem_file(&missing),
            Err(KeyError::Read { .. })
        ));
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(
            ChainHasher::keyed_from_file(&empty),
            Err(KeyError::Empty { .. })
        ));
        let rsa = dir.path().join("rsa.pem");
        let key =
            openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        std::fs::write(&rsa, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        let err = Signer::from_pem_file(&rsa).unwrap_err();
        assert!(matches!(err, KeyError::NotEd25519 { .. }));
        assert!(crate::report(&err).contains("rsa.pem"));
    }

    #[test]
    fn the_config_reads_the_chain_key_at_startup_and_names_a_missing_one() {
        let off = IntegrityConfig::default();
        assert!(off.hasher().unwrap().is_none(), "no chain, no hasher");
        let plain = IntegrityConfig {
            chain: true,
            ..IntegrityConfig::default()
        };
        assert_eq!(plain.hasher().unwrap().unwrap().algorithm(), "sha256");
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, b"secret").unwrap();
        let keyed = IntegrityConfig {
            chain: true,
            chain_key_file: Some(key),
            digests: None,
        };
        assert_eq!(keyed.hasher().unwrap().unwrap().algorithm(), "hmac-sha256");
        let missing = IntegrityConfig {
            chain: true,
            chain_key_file: Some(dir.path().join("absent")),
            digests: None,
        };
        let err = missing.hasher().unwrap_err();
        assert!(
            crate::report(&err).contains("absent"),
            "{}",
            crate::report(&err)
        );
    }

    #[test]
    fn a_record_sent_again_with_another_observed_time_keeps_its_link() {
        // The same line read twice (before and after a crash): only the moment of reading
        // differs, and the link must not.
        let first = br#"{"id":"a","type":"t","format":"f","time":null,"observed_time":"2026-12-02T09:00:00.000Z","retention":{"class":"c"},"record":{"x":1}}"#;
        let again = br#"{"id":"a","type":"t","format":"f","time":null,"observed_time":"2026-12-02T09:05:17.250Z","retention":{"class":"c"},"record":{"x":1}}"#;
        let h = ChainHasher::plain();
        let g = genesis("s", "1");
        assert_eq!(h.link(1, &g, first), h.link(1, &g, again));
        let altered = br#"{"id":"a","type":"t","format":"f","time":null,"observed_time":"2026-12-02T09:00:00.000Z","retention":{"class":"d"},"record":{"x":1}}"#;
        assert_ne!(
            h.link(1, &g, first),
            h.link(1, &g, altered),
            "the rest still counts"
        );
    }
    /// `expires_at` is left out only when it counts from the moment of reading: with a time
    /// of its own or a runtime timestamp, shortening it is tampering and changes the link.
    #[test]
    fn expires_at_is_left_out_of_the_link_only_when_it_counts_from_the_reading() {
        let h = ChainHasher::plain();
        let g = genesis("s", "1");
        let value = |time: &str, observed: &str, expires: &str, source_time: &str| {
            format!(
                r#"{{"id":"a","record_id":"r","type":"t","format":"f","time":{time},"observed_time":"{observed}","retention":{{"class":"c","days":30,"expires_at":"{expires}"}},"source":{{"file":"/l,\"time\":null","stream":null,"offset":0,"time":{source_time}}},"record":{{"time":null}}}}"#
            )
        };
        let link = |v: String| h.link(1, &g, v.as_bytes());
        let (t0, t1) = ("2026-12-02T09:00:00.000Z", "2026-12-02T09:05:00.000Z");
        let (e0, e1) = ("2027-01-01T09:00:00.000Z", "2027-01-01T09:05:00.000Z");
        // Neither a time nor a runtime timestamp: read again later, the same link.
        assert_eq!(
            link(value("null", t0, e0, "null")),
            link(value("null", t1, e1, "null"))
        );
        // A time of its own, or a runtime timestamp: expires_at is covered.
        let own = format!("\"{t0}\"");
        assert_ne!(
            link(value(&own, t0, e0, "null")),
            link(value(&own, t0, e1, "null"))
        );
        assert_ne!(
            link(value("null", t0, e0, "\"2026-12-02T08:59:59.999999999Z\"")),
            link(value("null", t0, e1, "\"2026-12-02T08:59:59.999999999Z\""))
        );
        // What is left out is only the value's text: the rest of a timeless record counts.
        assert_ne!(
            link(value("null", t0, e0, "null")),
            link(value("null", t0, e0, "null").replace("\"days\":30", "\"days\":3"))
        );
    }
}
