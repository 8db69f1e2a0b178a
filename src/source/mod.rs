//! Source: read the application container's stdout, from the kubelet's log files, a shared
//! file, or stdin, and hand on its logical lines with their offsets.
//!
//! Guarantees:
//! - a line is handed on only once its `\n` is read; a longer line than `max_line_bytes` is
//!   skipped and counted, never held whole in memory;
//! - a file renamed away by rotation is read to its end before it is let go; a file that
//!   shrinks (copy-truncate) is read again from offset 0, and counted;
//! - files are known by a fingerprint of their first line, not by path or inode alone;
//! - the checkpoint of a file only moves past a line once its record has been confirmed by
//!   every output that took it ([`crate::ack`]), so a restart neither loses nor skips.

pub mod checkpoint;
pub mod file;
pub mod framing;
pub mod kubernetes;
pub mod reader;

use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::problem::{Problem, Purpose};
pub use framing::Format;
pub use reader::LineReader;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::line::Stats;
use crate::metrics::{Health, Metrics};

/// How often metrics and readiness are brought up to date.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// What the tailer reports: metrics (as deltas of its counts), liveness and readiness.
pub struct Telemetry {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// Readiness fails above this many bytes not yet read and acknowledged.
    pub max_backlog_bytes: u64,
    published: Stats,
    last_publish: Option<Instant>,
}

impl Telemetry {
    pub fn new(metrics: Arc<Metrics>, health: Arc<Health>, max_backlog_bytes: u64) -> Telemetry {
        Telemetry {
            metrics,
            health,
            max_backlog_bytes,
            published: Stats::default(),
            last_publish: None,
        }
    }
}

impl Telemetry {
    /// Beats the liveness heartbeat and, at most once a second unless `now`, copies `local`
    /// into `shared` and adds what it counted since the last time to the metrics. Returns
    /// whether it published (the caller then updates its own gauges).
    pub fn publish_counts(&mut self, local: &Stats, shared: &Mutex<Stats>, now: bool) -> bool {
        self.health.beat();
        if !now
            && self
                .last_publish
                .is_some_and(|at| at.elapsed() < PUBLISH_EVERY)
        {
            return false;
        }
        self.last_publish = Some(Instant::now());
        *shared.lock().unwrap_or_else(|e| e.into_inner()) = *local;
        let (s, p) = (local, &self.published);
        let src = &self.metrics.source;
        src.lines
            .with_label_values(&["stdout"])
            .inc_by(s.stdout - p.stdout);
        src.lines
            .with_label_values(&["stderr"])
            .inc_by(s.stderr - p.stderr);
        let other = |x: &Stats| x.lines - x.stdout - x.stderr;
        src.lines
            .with_label_values(&["none"])
            .inc_by(other(s) - other(p));
        src.bytes.inc_by(s.bytes - p.bytes);
        src.rotations.inc_by(s.rotations - p.rotations);
        src.truncations.inc_by(s.truncations - p.truncations);
        src.partial_chunks.inc_by(s.partials - p.partials);
        src.malformed.inc_by(s.malformed - p.malformed);
        src.incomplete.inc_by(s.incomplete - p.incomplete);
        let rec = &self.metrics.records;
        rec.ordinary.inc_by(s.ordinary - p.ordinary);
        rec.oversize.inc_by(s.oversize - p.oversize);
        rec.invalid
            .with_label_values(&["invalid_utf8"])
            .inc_by(s.invalid_utf8 - p.invalid_utf8);
        let json = |x: &Stats| x.invalid - x.invalid_utf8;
        rec.invalid
            .with_label_values(&["invalid_json"])
            .inc_by(json(s) - json(p));
        self.published = *local;
        true
    }
}

/// `source.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Tail files matched by `paths`.
    #[default]
    File,
    /// Follow `source.container`'s log through the Kubernetes API (`pods/log`): no hostPath.
    Kubernetes,
}

/// `source.read_from`: where to start in a file that has no checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadFrom {
    #[default]
    Beginning,
    End,
}

/// The `source` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    pub kind: SourceKind,
    /// Glob patterns of the files to tail (`/var/log/pods/*_*_*/app/*.log`).
    pub paths: Vec<String>,
    /// Glob patterns of files never to tail.
    pub exclude: Vec<String>,
    pub format: Format,
    /// For files without a checkpoint found at startup; files that appear later (after a
    /// rotation) are always read from their beginning.
    pub read_from: ReadFrom,
    /// Where read positions are saved.
    pub checkpoint_dir: PathBuf,
    /// The longest logical line (after joining partial chunks) that is processed.
    pub max_line_bytes: usize,
    /// How often files are read when no filesystem event arrives (the polling fallback).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How often the glob patterns are expanded again, to find new and rotated files.
    #[serde(with = "humantime_serde")]
    pub scan_interval: Duration,
    /// How often checkpoints are saved (they are always saved on shutdown).
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// How long a rotated file stays open after its last new data, for a runtime that keeps
    /// writing to it until it reopens its log.
    #[serde(with = "humantime_serde")]
    pub rotate_wait: Duration,
    /// `kind: kubernetes`: the application container whose log is followed (required).
    pub container: Option<String>,
    /// `kind: kubernetes`: the pod, by default this pod (`POD_NAME`, from the Downward API).
    pub pod: Option<String>,
    /// `kind: kubernetes`: its namespace, by default `POD_NAMESPACE` or the service
    /// account's namespace.
    pub namespace: Option<String>,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            kind: SourceKind::File,
            paths: Vec::new(),
            exclude: Vec::new(),
            format: Format::Auto,
            read_from: ReadFrom::Beginning,
            checkpoint_dir: PathBuf::from("/var/lib/auditrail"),
            max_line_bytes: 1024 * 1024,
            poll_interval: Duration::from_millis(250),
            scan_interval: Duration::from_secs(1),
            checkpoint_interval: Duration::from_secs(1),
            rotate_wait: Duration::from_secs(5),
            container: None,
            pod: None,
            namespace: None,
        }
    }
}

impl SourceConfig {
    pub fn validate(&self, path: &str, purpose: Purpose, problems: &mut Vec<Problem>) {
        if self.kind == SourceKind::Kubernetes {
            if self.container.as_deref().is_none_or(str::is_empty) {
                problems.push(Problem::new(
                    format!("{path}.container"),
                    "kind: kubernetes needs the application container's name",
                ));
            }
            if !self.paths.is_empty() {
                problems.push(Problem::new(
                    format!("{path}.paths"),
                    "kind: kubernetes reads the log through the API; paths are for kind: file",
                ));
            }
        } else if purpose == Purpose::Run && self.paths.is_empty() {
            problems.push(Problem::new(
                format!("{path}.paths"),
                "at least one file pattern is needed (for example /var/log/pods/*/app/*.log)",
            ));
        }
        for (list, name) in [(&self.paths, "paths"), (&self.exclude, "exclude")] {
            for (i, p) in list.iter().enumerate() {
                if let Err(e) = glob::Pattern::new(p) {
                    problems.push(Problem::new(
                        format!("{path}.{name}[{i}]"),
                        format!("{p:?} is not a valid glob pattern: {e}"),
                    ));
                }
            }
        }
        if self.max_line_bytes < 1024 {
            problems.push(Problem::new(
                format!("{path}.max_line_bytes"),
                "must be at least 1024",
            ));
        }
        if self.max_line_bytes > 64 * 1024 * 1024 {
            problems.push(Problem::new(
                format!("{path}.max_line_bytes"),
                "must be at most 64 MiB: a sidecar must stay small",
            ));
        }
        for (value, name) in [
            (self.poll_interval, "poll_interval"),
            (self.scan_interval, "scan_interval"),
            (self.checkpoint_interval, "checkpoint_interval"),
        ] {
            if value.is_zero() {
                problems.push(Problem::new(
                    format!("{path}.{name}"),
                    "must be more than 0",
                ));
            }
        }
    }
}

/// Errors of the file source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot use checkpoint directory {path}: {source}")]
    Checkpoint {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot watch files: {0}")]
    Watch(#[from] notify::Error),
}

/// How many leading bytes identify a file, at most.
pub const FINGERPRINT_MAX: usize = 1024;

/// A file's identity: XXH3 of its first line (up to [`FINGERPRINT_MAX`] bytes). `None` while
/// the file has neither a complete first line nor that many bytes. The file position is
/// restored afterwards.
pub fn fingerprint(file: &mut (impl Read + Seek)) -> io::Result<Option<u64>> {
    let position = file.stream_position()?;
    file.seek(SeekFrom::Start(0))?;
    let head = read_head(file)?;
    file.seek(SeekFrom::Start(position))?;
    Ok(fingerprint_head(&head))
}

/// Reads the start of a stream: up to its first `\n`, [`FINGERPRINT_MAX`] bytes, or its end.
/// For a stream that cannot seek (stdin), the bytes read must be put back in front of it.
pub fn read_head(src: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut head = vec![0u8; FINGERPRINT_MAX];
    let mut len = 0;
    while len < head.len() && memchr::memchr(b'\n', &head[..len]).is_none() {
        match src.read(&mut head[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(len);
    Ok(head)
}

/// The identity of a stream that starts with `head` (see [`fingerprint`]).
pub fn fingerprint_head(head: &[u8]) -> Option<u64> {
    let head = &head[..head.len().min(FINGERPRINT_MAX)];
    let end = match memchr::memchr(b'\n', head) {
        Some(nl) => nl + 1,
        None if head.len() == FINGERPRINT_MAX => head.len(),
        None => return None,
    };
    Some(xxhash_rust::xxh3::xxh3_64(&head[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn fingerprint_waits_for_a_first_line_and_ignores_what_follows() {
        assert_eq!(
            fingerprint(&mut Cursor::new(b"no newline yet".to_vec())).unwrap(),
            None
        );
        let a = fingerprint(&mut Cursor::new(b"first\nsecond\n".to_vec())).unwrap();
        let b = fingerprint(&mut Cursor::new(b"first\nother\n".to_vec())).unwrap();
        let c = fingerprint(&mut Cursor::new(b"First\n".to_vec())).unwrap();
        assert!(a.is_some());
        assert_eq!(a, b);
        assert_ne!(a, c);
        let long = vec![b'x'; 5000];
        assert!(fingerprint(&mut Cursor::new(long)).unwrap().is_some());
    }
}
