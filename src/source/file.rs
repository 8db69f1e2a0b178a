//! The file tailer: follows the files matched by `source.paths` through rotation and
//! truncation, on one dedicated thread.
//!
//! - New data is noticed through filesystem events (`notify`), with polling every
//!   `poll_interval` as the fallback (events are only a wake-up; polling alone is correct).
//! - The glob patterns are expanded every `scan_interval`. A watched file no longer found at
//!   any matching path (kubelet renamed `0.log` to `0.log.<timestamp>`) keeps being read through
//!   its open handle, to its end and for `rotate_wait` more, before it is let go.
//! - A file smaller than the position read, or whose first line changed, was truncated
//!   (copy-truncate): it is read again from offset 0 and counted.
//! - Records go to the outputs in batches over a bounded channel; when the outputs are slow
//!   the channel fills and this thread stops reading (backpressure). The files are the buffer.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::Watcher;

use super::checkpoint::Checkpoints;
use super::identity::fingerprint;
use super::stream::StreamReader;
use super::{Context, ReadFrom, SourceConfig};
use crate::ack::Progress;
use crate::envelope::Record;
use crate::line::{Stats, StreamInfo};

/// Records per batch sent to the outputs.
const BATCH_RECORDS: usize = 256;
/// Bytes read from one file before the others get a turn.
const TURN_BYTES: u64 = 4 * 1024 * 1024;

/// One file being followed.
#[derive(Debug)]
struct Watched {
    path: PathBuf,
    file: File,
    dev_ino: (u64, u64),
    /// `None` until the file has a complete first line.
    fingerprint: Option<u64>,
    /// `None` until the file is identified and positioned.
    reader: Option<StreamReader>,
    /// Found at the first scan (so `read_from` applies to it).
    at_startup: bool,
    /// Read again from 0 after a truncation: its old checkpoint must not be used.
    truncated: bool,
    /// When the file was last found missing from the matching paths (rotated or deleted).
    rotated_at: Option<Instant>,
    last_data: Instant,
    /// The enrichment version `stream`'s pod metadata was built from.
    meta_version: Option<u64>,
}

impl Watched {
    /// How far the file has been read (0 before it is positioned).
    fn position(&self) -> u64 {
        self.reader.as_ref().map_or(0, StreamReader::position)
    }
}

/// Follows the configured files; see the module documentation.
pub(super) struct FileTailer {
    config: SourceConfig,
    exclude: Vec<glob::Pattern>,
    checkpoints: Arc<Checkpoints>,
    context: Context,
    watched: Vec<Watched>,
    batch: Vec<Record>,
    local: Stats,
    runtime: tokio::runtime::Handle,
}

impl FileTailer {
    pub(super) fn new(
        config: SourceConfig,
        checkpoints: Arc<Checkpoints>,
        context: Context,
        runtime: tokio::runtime::Handle,
    ) -> FileTailer {
        let exclude = config
            .exclude
            .iter()
            .filter_map(|p| glob::Pattern::new(p).ok())
            .collect();
        FileTailer {
            config,
            exclude,
            checkpoints,
            context,
            watched: Vec::new(),
            batch: Vec::with_capacity(BATCH_RECORDS),
            local: Stats::default(),
            runtime,
        }
    }

    /// Follows the files until `stop` is set. Returns when stopped; the sender is dropped on
    /// return, which lets the outputs drain and finish.
    pub(super) fn run(mut self) {
        let (wake_tx, wake_rx) = std_mpsc::sync_channel::<()>(1);
        let _watcher = self.watch_events(wake_tx);
        self.scan(true);
        let mut last_scan = Instant::now();
        while !self.context.stopping() {
            if last_scan.elapsed() >= self.config.scan_interval {
                self.scan(false);
                last_scan = Instant::now();
            }
            let mut progressed = false;
            for i in 0..self.watched.len() {
                progressed |= self.read_turn(i);
                if self.context.stopping() {
                    break;
                }
            }
            self.flush_batch();
            self.let_go_of_rotated();
            self.publish(false);
            // An event may be a new file: look now rather than at the next scan.
            if !progressed
                && wake_rx.recv_timeout(self.config.poll_interval).is_ok()
                && last_scan.elapsed() >= Duration::from_millis(100)
            {
                self.scan(false);
                last_scan = Instant::now();
            }
        }
        self.flush_batch();
        self.publish(true);
    }

    /// Brings the shared stats, the metrics and the health up to date (at most once a second
    /// unless `now`): the hot path only counts in a local struct.
    fn publish(&mut self, now: bool) {
        let context = &mut self.context;
        if !context
            .telemetry
            .publish_counts(&self.local, &context.stats, now)
        {
            return;
        }
        let t = &context.telemetry;
        let src = &t.metrics.source;
        // Lag: what the files hold beyond what is acknowledged, and the oldest wait.
        let mut lag_bytes = 0u64;
        let mut oldest = Duration::ZERO;
        for w in &self.watched {
            let len = w.file.metadata().map(|m| m.len()).unwrap_or(0);
            let progress = w.reader.as_ref().and_then(StreamReader::progress);
            let committed = progress.map_or(0, |p| p.committed());
            lag_bytes += len.saturating_sub(committed);
            if let Some(wait) = progress.and_then(|p| p.oldest_wait()) {
                oldest = oldest.max(wait);
            }
        }
        src.files_watched.set(self.watched.len() as i64);
        src.lag_bytes.set(lag_bytes as i64);
        src.lag_seconds.set(oldest.as_secs() as i64);
        let mut reasons = Vec::new();
        if self.watched.is_empty() {
            reasons.push(format!("source: no file matches {:?}", self.config.paths));
        }
        t.health.set("source", reasons);
        let backlog = if lag_bytes > t.max_backlog_bytes {
            vec![format!(
                "backlog: {lag_bytes} bytes not yet shipped (limit {})",
                t.max_backlog_bytes
            )]
        } else {
            Vec::new()
        };
        t.health.set("backlog", backlog);
    }

    /// Watches the directories the patterns start from; events only wake the loop up.
    fn watch_events(&self, wake: std_mpsc::SyncSender<()>) -> Option<notify::RecommendedWatcher> {
        let handler = move |_event: notify::Result<notify::Event>| {
            let _ = wake.try_send(());
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "filesystem events unavailable; polling only");
                return None;
            }
        };
        for pattern in &self.config.paths {
            let dir = static_prefix(pattern);
            if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::Recursive) {
                tracing::warn!(error = %e, dir = %dir.display(), "cannot watch directory; polling it");
            }
        }
        Some(watcher)
    }

    /// Expands the patterns and reconciles the result with the watched files.
    fn scan(&mut self, startup: bool) {
        let mut found: HashMap<(u64, u64), (PathBuf, u64)> = HashMap::new();
        for pattern in &self.config.paths {
            let Ok(paths) = glob::glob(pattern) else {
                continue;
            };
            for path in paths.flatten() {
                if self.exclude.iter().any(|p| p.matches_path(&path)) {
                    continue;
                }
                // Follows symlinks (/var/log/containers points into /var/log/pods).
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                if meta.is_file() {
                    found
                        .entry((meta.dev(), meta.ino()))
                        .or_insert((path, meta.len()));
                }
            }
        }
        for w in &mut self.watched {
            match found.remove(&w.dev_ino) {
                Some((path, len)) => {
                    if path != w.path {
                        tracing::info!(from = %w.path.display(), to = %path.display(), "file renamed");
                        if let Some(fp) = w.fingerprint {
                            self.checkpoints.rename(fp, &path);
                        }
                        w.path = path;
                    }
                    w.rotated_at = None;
                    if len < w.position() || first_line_changed(w) {
                        truncate(w, &self.checkpoints, &mut self.local);
                    }
                }
                None => {
                    if w.rotated_at.is_none() {
                        tracing::info!(path = %w.path.display(), "file rotated away; reading it to its end");
                        self.local.rotations += 1;
                        w.rotated_at = Some(Instant::now());
                    }
                }
            }
        }
        for (dev_ino, (path, _)) in found {
            match File::open(&path) {
                Ok(file) => {
                    tracing::info!(path = %path.display(), "watching file");
                    self.watched.push(Watched {
                        path,
                        file,
                        dev_ino,
                        fingerprint: None,
                        reader: None,
                        at_startup: startup,
                        truncated: false,
                        rotated_at: None,
                        last_data: Instant::now(),
                        meta_version: None,
                    });
                }
                Err(e) => tracing::warn!(error = %e, path = %path.display(), "cannot open file"),
            }
        }
    }

    /// Reads one turn of file `i`. Returns whether any byte was read.
    fn read_turn(&mut self, i: usize) -> bool {
        if self.watched[i].reader.is_none() && !self.start_file(i) {
            return false;
        }
        // A copy-truncate must be noticed before reading, not only at the next scan: reading
        // on from the old position would skip the start of the new content, or ship it twice.
        let w = &mut self.watched[i];
        if let Ok(meta) = w.file.metadata() {
            let (position, len) = (w.position(), meta.len());
            if len < position || (len > position && first_line_changed(w)) {
                truncate(w, &self.checkpoints, &mut self.local);
                if !self.start_file(i) {
                    return false;
                }
            }
        }
        // Pod metadata: built once per file and enrichment version, spliced into each record.
        let version = self.context.enrichment.version();
        let w = &mut self.watched[i];
        let Some(reader) = w.reader.as_mut() else {
            return false;
        };
        if w.meta_version != Some(version) {
            let meta = self.context.enrichment.for_stream(Some(&w.path), None);
            reader.info.kubernetes = meta.json;
            reader.info.pod_uid = meta.pod_uid;
            w.meta_version = Some(meta.version);
        }
        let mut read = 0u64;
        while read < TURN_BYTES && !self.context.stopping() {
            let w = &mut self.watched[i];
            let Some(reader) = w.reader.as_mut() else {
                break;
            };
            let n = match reader.fill(&mut w.file) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, path = %w.path.display(), "read failed; retrying at the next poll");
                    break;
                }
            };
            read += n as u64;
            w.last_data = Instant::now();
            self.local.bytes += n as u64;
            // The processor in force for this turn; a reload takes effect at the next one.
            let processor = self.context.processor();
            reader.process(&processor, &mut self.local, &mut self.batch);
            if self.batch.len() >= BATCH_RECORDS {
                self.flush_batch();
            }
        }
        read > 0
    }

    /// Identifies file `i` and positions it. Returns false while it has no first line yet.
    fn start_file(&mut self, i: usize) -> bool {
        let w = &mut self.watched[i];
        let fp = match fingerprint(&mut w.file) {
            Ok(Some(fp)) => fp,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(error = %e, path = %w.path.display(), "cannot read file");
                return false;
            }
        };
        let len = w.file.metadata().map(|m| m.len()).unwrap_or(0);
        let checkpoint = if w.truncated {
            None
        } else {
            self.checkpoints.resume(fp)
        };
        let mut offset = match checkpoint {
            Some(offset) => offset,
            None if w.at_startup && self.config.read_from == ReadFrom::End => {
                end_of_last_line(&mut w.file, len)
            }
            None => 0,
        };
        if offset > len {
            tracing::warn!(path = %w.path.display(), checkpoint = offset, len, "file is shorter than its checkpoint; reading it from the start");
            self.local.truncations += 1;
            offset = 0;
        }
        if let Err(e) = w.file.seek(SeekFrom::Start(offset)) {
            tracing::warn!(error = %e, path = %w.path.display(), "cannot seek");
            return false;
        }
        if offset > 0 {
            tracing::info!(path = %w.path.display(), offset, "resuming from checkpoint");
        }
        w.fingerprint = Some(fp);
        let progress = Progress::new(offset);
        self.checkpoints.watch(fp, &w.path, Arc::clone(&progress));
        w.reader = Some(StreamReader::new(
            self.config.format,
            self.config.max_line_bytes,
            offset,
            StreamInfo::new(w.path.display().to_string(), fp),
            Some(progress),
        ));
        w.meta_version = None;
        true
    }

    /// Sends the pending batch, waiting while the outputs are busy (backpressure) but giving
    /// up when asked to stop: unsent records are unconfirmed and will be read again.
    fn flush_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_RECORDS));
        self.runtime.block_on(self.context.send(batch));
    }

    /// Closes rotated files that have been read to their end and stayed quiet.
    fn let_go_of_rotated(&mut self) {
        let checkpoints = &self.checkpoints;
        let stats = &mut self.local;
        let wait = self.config.rotate_wait;
        self.watched.retain(|w| {
            let Some(rotated_at) = w.rotated_at else {
                return true;
            };
            let quiet = w.last_data.elapsed() >= wait && rotated_at.elapsed() >= wait;
            if !quiet {
                return true;
            }
            let pending = w.reader.as_ref().map_or(0, StreamReader::incomplete);
            if pending > 0 {
                tracing::warn!(path = %w.path.display(), pending, "rotated file ended inside a partial line");
                stats.incomplete += pending;
            }
            tracing::info!(path = %w.path.display(), "rotated file read to its end; closed");
            if let Some(fp) = w.fingerprint {
                checkpoints.unwatch(fp);
            }
            false
        });
    }
}

/// The offset just past the last `\n` at or before `len` (0 when there is none in the last
/// 64 KiB): `read_from: end` must not start in the middle of a line being written.
fn end_of_last_line(file: &mut File, len: u64) -> u64 {
    use std::io::Read;
    let start = len.saturating_sub(64 * 1024);
    let mut tail = Vec::new();
    let read = file
        .seek(SeekFrom::Start(start))
        .and_then(|_| file.take(len - start).read_to_end(&mut tail));
    match read {
        Ok(_) => memchr::memrchr(b'\n', &tail).map_or(start, |nl| start + nl as u64 + 1),
        Err(_) => len,
    }
}

/// Re-reads the first line of a watched file to see whether its content was replaced.
fn first_line_changed(w: &mut Watched) -> bool {
    match (w.fingerprint, fingerprint(&mut w.file)) {
        (Some(old), Ok(Some(now))) => old != now,
        (Some(_), Ok(None)) => true,
        _ => false,
    }
}

fn truncate(w: &mut Watched, checkpoints: &Checkpoints, stats: &mut Stats) {
    tracing::warn!(path = %w.path.display(), "file truncated; reading it again from the start");
    stats.truncations += 1;
    if let Some(fp) = w.fingerprint.take() {
        checkpoints.unwatch(fp);
    }
    w.reader = None;
    w.truncated = true;
    let _ = w.file.seek(SeekFrom::Start(0));
}

/// The directory a glob pattern starts from: its leading components without wildcards.
fn static_prefix(pattern: &str) -> PathBuf {
    let mut prefix = PathBuf::new();
    for component in Path::new(pattern).components() {
        let s = component.as_os_str().to_string_lossy();
        if s.contains(['*', '?', '[']) {
            break;
        }
        prefix.push(component);
    }
    if prefix == Path::new(pattern) {
        prefix.pop();
    }
    if prefix.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        prefix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_prefix_stops_at_the_first_wildcard() {
        assert_eq!(
            static_prefix("/var/log/pods/*/app/*.log"),
            PathBuf::from("/var/log/pods")
        );
        assert_eq!(static_prefix("/data/app.log"), PathBuf::from("/data"));
        assert_eq!(static_prefix("*.log"), PathBuf::from("."));
    }
}
