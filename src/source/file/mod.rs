//! The file tailer: follows the files matched by `source.paths` through rotation, truncation,
//! restarts and pod termination, on one dedicated thread.
//!
//! - New data is noticed through filesystem events (`notify`), with polling every
//!   `poll_interval` as the fallback (events are only a wake-up; polling alone is correct).
//! - The glob patterns are expanded every `scan_interval`. A watched file no longer found at
//!   any matching path (the kubelet renamed `0.log` to `0.log.<timestamp>`) keeps being read
//!   through its open handle. It is let go only once read to its end and quiet for
//!   `rotate_wait` (a runtime may write a little more before it reopens its log): a slow
//!   output delays it, never cuts it. Files of one container are read oldest first.
//! - A file is known by device, inode and first line, and by the bytes before its read
//!   position ([`crate::source::identity`]): one that shrank, or whose bytes before the
//!   position changed (copy-truncate, rewrite), is read again from its start, and the range
//!   it lost unread is shipped as a gap record.
//! - After a restart, files the checkpoints know that now exist only as rotated siblings
//!   (`0.log.<ts>`, `0.log.<ts>.gz`) are read from their checkpoint first, and siblings
//!   rotated since then from their start ([`crate::source::rotation`]); a known file that is
//!   gone with bytes unread becomes a gap record.
//! - A partial line whose end does not come within `partial_line_expiry` of quiet, or at a
//!   drain, or when its file is let go, is processed as it stands, marked unterminated.
//! - On SIGTERM reading goes on until the files are quiet for `drain_quiet` (at most
//!   `drain_timeout`), then what waits for an end is shipped as it stands.
//! - Records go to the outputs in batches over a bounded channel; when the outputs are slow
//!   the channel fills and this thread stops reading (backpressure). The files are the buffer.

mod watched;

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::Watcher;

use self::watched::{end_of_last_line, Handle, Start, Watched};
use super::checkpoint::{Checkpoints, Known};
use super::identity::{fingerprint_head, read_head, FileKey, Tail};
use super::rotation;
use super::stream::StreamReader;
use super::{Context, Quiet, ReadFrom, SourceConfig};
use crate::ack::Progress;
use crate::envelope::Record;
use crate::line::{Stats, StreamInfo};
use crate::pipeline::{Gap, Processor};

/// Records per batch sent to the outputs.
const BATCH_RECORDS: usize = 256;
/// Bytes read from one file before the others get a turn.
const TURN_BYTES: u64 = 4 * 1024 * 1024;

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
    /// Containers (directory and base name) the checkpoints knew at startup: a file of theirs
    /// without a checkpoint was written while nothing read it, so `read_from: end` does not
    /// apply to it.
    known_bases: BTreeSet<(PathBuf, String)>,
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
        let known_bases = checkpoints.bases();
        FileTailer {
            config,
            exclude,
            checkpoints,
            context,
            watched: Vec::new(),
            batch: Vec::with_capacity(BATCH_RECORDS),
            local: Stats::default(),
            runtime,
            known_bases,
        }
    }

    /// Follows the files until the service stops and they have been quiet for `drain_quiet`
    /// (or the drain's time is up). The sender is dropped on return, which lets the outputs
    /// drain and finish.
    pub(super) fn run(mut self) {
        let (wake_tx, wake_rx) = std_mpsc::sync_channel::<()>(1);
        let _watcher = self.watch_events(wake_tx);
        self.scan(true);
        self.resume_rotated();
        let mut last_scan = Instant::now();
        let mut quiet = Quiet::new(self.config.drain_quiet);
        while !quiet.over(&self.context.stop) {
            if last_scan.elapsed() >= self.config.scan_interval {
                self.scan(false);
                last_scan = Instant::now();
            }
            let mut progressed = false;
            for i in 0..self.watched.len() {
                if self.waits_for_an_older_file(i) {
                    continue;
                }
                progressed |= self.read_turn(i);
            }
            if progressed {
                quiet.data();
            }
            self.expire_partial_lines();
            self.flush_batch();
            self.let_go_of_rotated();
            self.publish(false);
            // An event may be a new file: look now rather than at the next scan.
            let wait = if self.context.stop.requested() {
                self.config.poll_interval.min(Duration::from_millis(100))
            } else {
                self.config.poll_interval
            };
            if !progressed
                && wake_rx.recv_timeout(wait).is_ok()
                && last_scan.elapsed() >= Duration::from_millis(100)
            {
                self.scan(false);
                last_scan = Instant::now();
            }
        }
        // The drain is over: what still waits for an end ships as it stands.
        let processor = self.context.processor();
        for w in &mut self.watched {
            if let Some(reader) = w.reader.as_mut() {
                reader.flush_unterminated(&processor, &mut self.local, &mut self.batch);
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
            let len = w.len().unwrap_or(0);
            if let Some(key) = w.key {
                self.checkpoints.seen(key, len);
            }
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
        let mut found: HashMap<(u64, u64), PathBuf> = HashMap::new();
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
                    found.entry((meta.dev(), meta.ino())).or_insert(path);
                }
            }
        }
        for w in &mut self.watched {
            if w.writer_gone {
                continue;
            }
            match found.remove(&w.dev_ino) {
                Some(path) => {
                    if path != w.path {
                        tracing::info!(from = %w.path.display(), to = %path.display(), "file renamed");
                        if let Some(key) = w.key {
                            self.checkpoints.rename(key, &path);
                        }
                        w.path = path;
                    }
                    w.rotated_at = None;
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
        for (_, path) in found {
            let known = rotation::base_of(&path).is_some_and(|b| self.known_bases.contains(&b));
            let start = if startup && !known && self.config.read_from == ReadFrom::End {
                Start::CheckpointOrEnd
            } else {
                Start::Checkpoint
            };
            match Watched::open(&path, start) {
                Ok(w) => {
                    tracing::info!(path = %path.display(), "watching file");
                    self.watched.push(w);
                }
                Err(e) => tracing::warn!(error = %e, path = %path.display(), "cannot open file"),
            }
        }
    }

    /// At startup: files the checkpoints know that nothing matched are looked for among the
    /// rotated siblings of their path and read from their checkpoint, before the live files;
    /// siblings rotated since are read from their start; a known file that is gone with
    /// bytes unread becomes a gap record.
    fn resume_rotated(&mut self) {
        // Live files claim their checkpoints first.
        for i in 0..self.watched.len() {
            self.start_file(i);
        }
        let mut by_base: HashMap<(PathBuf, String), Vec<Known>> = HashMap::new();
        for known in self.checkpoints.unread() {
            if let Some(base) = rotation::base_of(&known.path) {
                by_base.entry(base).or_default().push(known);
            }
        }
        let live: BTreeSet<PathBuf> = self.watched.iter().map(|w| w.path.clone()).collect();
        let mut rotated = Vec::new();
        for ((dir, base), mut unread) in by_base {
            let last_update = unread.iter().map(|k| k.updated).max();
            let mut newest_known = None;
            let mut candidates = Vec::new();
            for path in rotation::siblings(&dir, &base) {
                if live.contains(&path) {
                    continue;
                }
                match open_sibling(&path, &mut unread) {
                    Ok(Some(Sibling::Known(w))) => {
                        newest_known = Some(candidates.len());
                        candidates.push((w, true, false));
                    }
                    Ok(Some(Sibling::Unknown(w, modified))) => {
                        let newer = last_update.is_none_or(|u| modified > u);
                        candidates.push((w, false, newer));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, path = %path.display(), "cannot read a rotated file")
                    }
                }
            }
            // Known files resume at their checkpoint; unknown ones are read from their start when
            // rotated after a known one, or (none known any more) written after the last save.
            for (i, (mut w, known, newer)) in candidates.into_iter().enumerate() {
                let after_known = newest_known.is_some_and(|k| i > k);
                if known || after_known || (newest_known.is_none() && newer) {
                    tracing::info!(path = %w.path.display(), "reading a rotated file after a restart");
                    w.writer_gone = true;
                    w.rotated_at = Some(Instant::now());
                    rotated.push(w);
                }
            }
            // Gone before it was read to its end: how much more it held is unknown when it was
            // still being written (the range ends at its last size seen).
            for gone in unread.iter().filter(|k| !k.done || k.offset < k.size) {
                self.report_lost(gone, "deleted");
            }
        }
        let n = rotated.len();
        rotated.append(&mut self.watched);
        self.watched = rotated;
        for i in 0..n {
            self.start_file(i);
        }
    }

    /// A known file is gone with `[offset, size)` unread: ships a gap record for it. Its
    /// checkpoint moves past the range once the record is confirmed, so it is reported once.
    fn report_lost(&mut self, gone: &Known, reason: &'static str) {
        let progress = Progress::new(gone.offset);
        self.checkpoints.report_gone(gone, Arc::clone(&progress));
        let info = StreamInfo::new(gone.path.display().to_string(), gone.key.fingerprint);
        let gap = Gap {
            reason,
            start: gone.offset,
            end: gone.size,
        };
        let processor = self.context.processor();
        let record = processor.gap(&info, gap, &mut self.local, |offset, outputs| {
            progress.register(offset, outputs)
        });
        progress.set_read(gone.size, None);
        self.batch.push(record);
    }

    /// Whether file `i` must wait: an older file of the same container (a rotated one, read
    /// first so records keep their order) is not yet read to its end.
    fn waits_for_an_older_file(&self, i: usize) -> bool {
        let Some(base) = &self.watched[i].base else {
            return false;
        };
        self.watched[..i].iter().any(|older| {
            older.rotated_at.is_some() && older.base.as_ref() == Some(base) && !older.read_to_end()
        })
    }

    /// Reads one turn of file `i`. Returns whether any byte was read.
    fn read_turn(&mut self, i: usize) -> bool {
        if self.watched[i].reader.is_none() && !self.start_file(i) {
            return false;
        }
        // Content replaced under the read position must be noticed before reading: reading on
        // would skip the start of the new content, or ship parts of it twice.
        // (Only when there is something to read: one `pread` of the bytes before the position.)
        let w = &self.watched[i];
        if let (Some(file), Some(len)) = (w.file(), w.len()) {
            let position = w.position();
            let replaced =
                len < position || (len > position && !w.tail.holds(file, position).unwrap_or(true));
            if replaced {
                self.read_again_from_start(i, len);
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
        while read < TURN_BYTES && !self.context.stop.expired() {
            let w = &mut self.watched[i];
            let Some(reader) = w.reader.as_mut() else {
                break;
            };
            let n = match reader.fill(&mut w.handle) {
                Ok(0) => {
                    w.at_eof = true;
                    break;
                }
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, path = %w.path.display(), "read failed; retrying at the next poll");
                    break;
                }
            };
            w.at_eof = false;
            read += n as u64;
            w.last_data = Instant::now();
            self.local.bytes += n as u64;
            // The processor in force for this turn; a reload takes effect at the next one.
            let processor = self.context.processor();
            reader.process(&processor, &mut self.local, &mut self.batch);
            w.tail = Tail::of(reader.recent());
            w.len_seen = w.len_seen.max(reader.position());
            if self.batch.len() >= BATCH_RECORDS {
                self.flush_batch();
            }
        }
        if let Some(len) = self.watched[i].len() {
            self.watched[i].len_seen = len;
        }
        read > 0
    }

    /// File `i` was truncated or rewritten: what it held beyond the read position is lost
    /// (a gap record says so), and it is read again from its start.
    fn read_again_from_start(&mut self, i: usize, len_now: u64) {
        let processor = self.context.processor();
        let w = &mut self.watched[i];
        tracing::warn!(path = %w.path.display(), len = len_now, position = w.position(), "file truncated or rewritten; reading it again from the start");
        self.local.truncations += 1;
        if let Some(reader) = w.reader.take() {
            let position = reader.position();
            if w.len_seen > position {
                let gap = Gap {
                    reason: "truncated",
                    start: position,
                    end: w.len_seen,
                };
                reader.report_gap(&processor, gap, &mut self.local, &mut self.batch);
            }
        }
        if let Some(key) = w.key.take() {
            self.checkpoints.unwatch(key);
        }
        w.start = Start::Beginning;
        w.tail = Tail::default();
        w.len_seen = len_now;
        let _ = w.seek(0);
    }

    /// Identifies file `i` and positions it. Returns false while it has no first line yet.
    fn start_file(&mut self, i: usize) -> bool {
        let w = &mut self.watched[i];
        if w.reader.is_some() {
            return true;
        }
        let (key, offset) = match w.start {
            Start::At(offset, key) => (key, offset),
            start => {
                let key = match w.identify() {
                    Ok(Some(key)) => key,
                    Ok(None) => return false,
                    Err(e) => {
                        tracing::warn!(error = %e, path = %w.path.display(), "cannot read file");
                        return false;
                    }
                };
                let Some(file) = w.file() else {
                    return false;
                };
                let resumed = match start {
                    Start::Beginning => None,
                    _ => self.checkpoints.resume(key, file),
                };
                let offset = match (resumed, start) {
                    (Some(offset), _) => offset,
                    (None, Start::CheckpointOrEnd) => end_of_last_line(file, w.len().unwrap_or(0)),
                    (None, _) => 0,
                };
                if let Err(e) = w.seek(offset) {
                    tracing::warn!(error = %e, path = %w.path.display(), "cannot seek");
                    return false;
                }
                (key, offset)
            }
        };
        if offset > 0 {
            tracing::info!(path = %w.path.display(), offset, "resuming from checkpoint");
        }
        w.key = Some(key);
        w.tail = w
            .file()
            .and_then(|f| Tail::read(f, offset).ok())
            .unwrap_or_default();
        let progress = Progress::new(offset);
        self.checkpoints
            .watch(key, &w.path, Arc::clone(&progress), w.file().cloned());
        w.reader = Some(StreamReader::new(
            self.config.format,
            self.config.max_line_bytes,
            offset,
            StreamInfo::new(w.path.display().to_string(), key.fingerprint),
            Some(progress),
        ));
        w.meta_version = None;
        true
    }

    /// Partial lines whose end did not come while their file stayed quiet for
    /// `partial_line_expiry` are processed as they stand.
    fn expire_partial_lines(&mut self) {
        let expiry = self.config.partial_line_expiry;
        let mut processor: Option<Arc<Processor>> = None;
        for w in &mut self.watched {
            let Some(reader) = w.reader.as_mut() else {
                continue;
            };
            if w.last_data.elapsed() < expiry || !reader.has_unterminated() {
                continue;
            }
            let processor = processor.get_or_insert_with(|| self.context.processor());
            let n = reader.flush_unterminated(processor, &mut self.local, &mut self.batch);
            tracing::warn!(path = %w.path.display(), lines = n, "a partial line's end did not come; processed as it stands");
        }
    }

    /// Sends the pending batch, waiting while the outputs are busy (backpressure) but giving
    /// up when the drain's time is up: unsent records are unconfirmed and will be read again.
    fn flush_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_RECORDS));
        self.runtime.block_on(self.context.send(batch));
    }

    /// Lets go of rotated files that are read to their end and that nothing writes to any
    /// more (quiet for `rotate_wait`); a partial line they end with ships as it stands.
    fn let_go_of_rotated(&mut self) {
        let wait = self.config.rotate_wait;
        let done: Vec<usize> = (0..self.watched.len())
            .filter(|&i| {
                let w = &self.watched[i];
                let Some(rotated_at) = w.rotated_at else {
                    return false;
                };
                let quiet = w.writer_gone
                    || (w.last_data.elapsed() >= wait && rotated_at.elapsed() >= wait);
                quiet && w.read_to_end()
            })
            .collect();
        if done.is_empty() {
            return;
        }
        let processor = self.context.processor();
        for i in done.into_iter().rev() {
            let mut w = self.watched.remove(i);
            if let Some(reader) = w.reader.as_mut() {
                let n = reader.flush_unterminated(&processor, &mut self.local, &mut self.batch);
                if n > 0 {
                    tracing::warn!(path = %w.path.display(), lines = n, "rotated file ended inside a line; processed as it stands");
                }
            }
            tracing::info!(path = %w.path.display(), "rotated file read to its end; closed");
            if let Some(key) = w.key {
                self.checkpoints.release(key);
            }
        }
    }
}

/// A rotated sibling found at startup.
enum Sibling {
    /// The file of a known checkpoint, positioned at it.
    Known(Watched),
    /// A file no checkpoint knows, and when it was last written.
    Unknown(Watched, chrono::DateTime<chrono::Utc>),
}

/// Opens a rotated sibling and tells whether it is one of `unread` (by device and inode, or
/// for a compressed copy by its first line); a matched entry is taken out of `unread`.
fn open_sibling(path: &Path, unread: &mut Vec<Known>) -> std::io::Result<Option<Sibling>> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Ok(None);
    }
    let modified: chrono::DateTime<chrono::Utc> = meta.modified()?.into();
    let dev_ino = (meta.dev(), meta.ino());
    if rotation::is_gzip(path) {
        let head = read_head(&mut rotation::open_gzip(path)?)?;
        let Some(fingerprint) = fingerprint_head(&head) else {
            return Ok(None);
        };
        let mut gz = rotation::open_gzip(path)?;
        let known = take_known(unread, |k| k.key.fingerprint == fingerprint);
        let start = match &known {
            Some(k) => {
                rotation::skip(&mut gz, k.offset)?;
                Start::At(k.offset, k.key)
            }
            None => Start::At(
                0,
                FileKey {
                    dev: dev_ino.0,
                    ino: dev_ino.1,
                    fingerprint,
                },
            ),
        };
        let w = Watched::new(
            path.to_path_buf(),
            Handle::Gzip(Box::new(gz)),
            dev_ino,
            start,
        );
        return Ok(Some(match known {
            Some(_) => Sibling::Known(w),
            None => Sibling::Unknown(w, modified),
        }));
    }
    let mut w = Watched::open(path, Start::Beginning)?;
    let Some(key) = w.identify()? else {
        return Ok(None);
    };
    // By device, inode and first line; an entry from a version 1 file by its first line.
    let known = take_known(unread, |k| {
        k.key == key || ((k.key.dev, k.key.ino) == (0, 0) && k.key.fingerprint == key.fingerprint)
    });
    if known.is_some() {
        w.start = Start::Checkpoint;
    }
    Ok(Some(match known {
        Some(_) => Sibling::Known(w),
        None => Sibling::Unknown(w, modified),
    }))
}

fn take_known(unread: &mut Vec<Known>, matches: impl Fn(&Known) -> bool) -> Option<Known> {
    let i = unread.iter().position(matches)?;
    Some(unread.remove(i))
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
