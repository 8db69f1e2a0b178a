//! The `source` section: which files (or which container's log through the API), how they
//! are framed, where checkpoints go, and how often things are looked at.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::framing::Format;
use crate::problem::{Problem, Purpose};

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
    /// For files found at startup that no checkpoint knows, of containers no checkpoint knows
    /// either; files that appear later (after a rotation), and files of a container that was
    /// followed before, are always read from their beginning.
    pub read_from: ReadFrom,
    /// Where read positions are saved.
    pub checkpoint_dir: PathBuf,
    /// The longest logical line (after joining partial chunks) that is processed.
    pub max_line_bytes: usize,
    /// How often files are read without filesystem events (the polling fallback), and while
    /// records wait for acknowledgement; with events, a quiet source looks every 5 s.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How often the glob patterns are expanded again, to find new and rotated files (with
    /// filesystem events, which announce new files, at least 5 s, except while a rotated file
    /// waits for its container's new log).
    #[serde(with = "humantime_serde")]
    pub scan_interval: Duration,
    /// How often checkpoints are saved when they changed (they are always saved on shutdown,
    /// and at once when a new file is identified).
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// How long a rotated file stays open after its last new data, for a runtime that keeps
    /// writing to it until it reopens its log. A rotated file is only let go once read to its
    /// end: this bounds the wait for a writer, never what is read.
    #[serde(with = "humantime_serde")]
    pub rotate_wait: Duration,
    /// How long a partial line (a `P` chunk, a docker chunk, bytes after the last newline)
    /// waits for its end while its file is quiet; then it is processed as it stands and
    /// marked unterminated. Long enough not to cut a slow writer.
    #[serde(with = "humantime_serde")]
    pub partial_line_expiry: Duration,
    /// On SIGTERM: reading goes on until the files have been quiet this long ...
    #[serde(with = "humantime_serde")]
    pub drain_quiet: Duration,
    /// ... or for at most this long; then the outputs drain what they hold.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
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
            partial_line_expiry: Duration::from_secs(10),
            drain_quiet: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(10),
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
            (self.partial_line_expiry, "partial_line_expiry"),
            (self.drain_quiet, "drain_quiet"),
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
