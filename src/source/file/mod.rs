//! The file tailer: follows the files matched by `source.paths` through rotation, truncation,
//! restarts and pod termination, on one dedicated thread.
//!
//! - New data is noticed through filesystem events (`notify`: inotify on the directories the
//!   patterns start from, recursively, and on every followed file). Events are only a
//!   wake-up; reading is decided by looking at the files, so polling alone is correct. Without
//!   events (no inotify, a directory not there yet) files are polled every `poll_interval`;
//!   with them, a quiet loop sleeps until an event or what is due next (a partial line's
//!   expiry, a rotated file's `rotate_wait`, records waiting for acknowledgement, metrics not
//!   yet published), and at most [`EVENT_FALLBACK`]: an idle sidecar wakes rarely.
//! - The glob patterns are expanded every `scan_interval` (with events: at once when a file or
//!   directory is created or renamed, at most [`SCAN_GAP`] after other events, every
//!   `scan_interval` while a rotated file waits for its container's new log, and every
//!   [`EVENT_FALLBACK`] at least). A newly identified file is saved to the checkpoints at
//!   once, so a log that a rotation made and that is deleted while auditrail is down (after
//!   a SIGKILL) is known and its loss named. A watched file no longer found at
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

mod restart;
mod watched;

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::Watcher;

use self::watched::{end_of_last_line, Handle, Start, Watched};
use super::chain::SegmentChain;
use super::checkpoint::{Checkpoints, Resume};
use super::framing::cri_chunk;
use super::identity::Tail;
use super::stream::StreamReader;
use super::{Checkpoint, Context, Quiet, ReadFrom, SourceConfig};
use crate::ack::Progress;
use crate::budget::BATCH_BYTES;
use crate::envelope::Record;
use crate::line::{Stats, StreamInfo};
use crate::pipeline::{Gap, Processor};

/// Records per batch sent to the outputs.
const BATCH_RECORDS: usize = 256;
/// Bytes read from one file before the others get a turn.
const TURN_BYTES: u64 = 4 * 1024 * 1024;
/// How long a compressed copy that fails to read (docker may still be writing it) is tried
/// again before what it holds past the read position is reported lost.
const UNREADABLE_AFTER: Duration = Duration::from_secs(3);
/// How far into the next file a line begun in a rotated file is looked for.
const CONTINUATION_MAX: usize = 256 * 1024;
/// With filesystem events, how often files are read and the patterns expanded anyway (a
/// change an event did not announce: a filesystem that reports none for some writes).
const EVENT_FALLBACK: Duration = Duration::from_secs(5);
/// The least time between two scans an event asks for (an event comes in bursts).
const SCAN_GAP: Duration = Duration::from_millis(100);
/// A rotated file its runtime may still write to is taken as no longer written after this.
const ROTATED_LONG_AGO: Duration = Duration::from_secs(60);
/// While files are being written, the least time between two reading passes that a write
/// wakes: the writes in between are read together ([`FileTailer::gather`]). A runtime writes
/// a busy container's log in many small writes (containerd: one per line); reading each on
/// its own costs a wake-up of this thread, of the outputs and of the producer per write. A
/// write after a quiet spell is read at once.
const READ_GAP: Duration = Duration::from_millis(50);

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
    /// Container directories the checkpoints knew at startup: a file in one of them without
    /// a checkpoint was written while nothing read it (a rotation, a container restart), so
    /// `read_from: end` does not apply to it.
    known_dirs: BTreeSet<PathBuf>,
    /// The logs (directory and base name) the checkpoints knew at startup.
    known_bases: BTreeSet<(PathBuf, String)>,
    last_scan: Instant,
    /// The filesystem watcher; `None` when events are unavailable (polling only).
    watcher: Option<notify::RecommendedWatcher>,
    /// Directories the patterns start from that could not be watched (not there yet): tried
    /// again at each scan, and polled meanwhile.
    unwatched_dirs: Vec<PathBuf>,
    /// A followed file could not be watched: polled from then on.
    file_unwatched: bool,
    /// An event came too soon after a scan to scan again at once: one is due [`SCAN_GAP`]
    /// after the last.
    scan_soon: bool,
    /// A removal or rename was announced: notify may have dropped the watch of a live file
    /// (it keeps watches by path; see [`FileTailer::rewatch_live_files`]).
    rewatch: Arc<AtomicBool>,
    /// A file or directory was created or renamed in a watched directory: the patterns are
    /// expanded at once, without [`SCAN_GAP`] (a log a rotation made may be written, renamed
    /// and deleted within a monitor interval; until a scan finds it nothing can name it).
    appeared: Arc<AtomicBool>,
    /// A file was identified that no saved checkpoint may know yet: the checkpoints are
    /// saved before the loop sleeps or reads on ([`FileTailer::save_new_identities`]).
    identified: bool,
    /// When the last reading pass that found data began.
    last_data: Option<Instant>,
    /// The loop waits out [`READ_GAP`]: a plain write, or the close after it, does not wake
    /// it (a creation, rename, removal or the stop still does).
    gathering: Arc<AtomicBool>,
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
        let known_dirs = known_bases.iter().map(|(dir, _)| dir.clone()).collect();
        FileTailer {
            config,
            exclude,
            checkpoints,
            context,
            watched: Vec::new(),
            batch: Vec::with_capacity(BATCH_RECORDS),
            local: Stats::default(),
            runtime,
            known_dirs,
            known_bases,
            last_scan: Instant::now(),
            watcher: None,
            unwatched_dirs: Vec::new(),
            file_unwatched: false,
            scan_soon: false,
            rewatch: Arc::new(AtomicBool::new(false)),
            appeared: Arc::new(AtomicBool::new(false)),
            identified: false,
            last_data: None,
            gathering: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Follows the files until the service stops and they have been quiet for `drain_quiet`
    /// (or the drain's time is up). The sender is dropped on return, which lets the outputs
    /// drain and finish.
    pub(super) fn run(mut self) {
        let (wake_tx, wake_rx) = std_mpsc::sync_channel::<()>(1);
        self.context.stop.wake_with(wake_tx.clone());
        self.watcher = self.watch_events(wake_tx);
        self.scan(true);
        self.resume_rotated();
        self.save_new_identities();
        let mut quiet = Quiet::new(self.config.drain_quiet);
        while !quiet.over(&self.context.stop) {
            // While draining, new files are looked for often: a log the runtime reopened
            // just before SIGTERM must be found before the files have been quiet long enough.
            let scan_every = if self.context.stop.requested() {
                self.config
                    .scan_interval
                    .min(Duration::from_millis(100))
                    .min(self.config.drain_quiet / 2)
            } else {
                self.scan_every()
            };
            // A creation announced while this loop was reading (not sleeping) is looked at now,
            // also when reading goes on without a pause.
            if self.appeared.swap(false, Ordering::SeqCst)
                || self.last_scan.elapsed() >= scan_every
                || (self.scan_soon && self.last_scan.elapsed() >= SCAN_GAP)
            {
                self.scan(false);
            }
            let pass = Instant::now();
            let mut progressed = false;
            for i in 0..self.watched.len() {
                if self.waits_for_an_older_file(i) {
                    continue;
                }
                progressed |= self.read_turn(i);
            }
            // Before the records are sent and before a sleep: a file identified in this turn is
            // durable before anything else happens (a SIGKILL now must not forget it).
            self.save_new_identities();
            if progressed {
                quiet.data();
                self.last_data = Some(pass);
            }
            self.expire_partial_lines();
            self.flush_batch();
            let released = self.let_go_of_rotated();
            self.publish(false);
            // A file let go may be what a newer file of its container waited for: read on.
            if progressed || released {
                continue;
            }
            // Nothing new: sleep until a filesystem event, the stop, or the next thing that
            // is due. An event may be a new file: look now rather than at the next scan.
            let wait = self.wait(scan_every);
            self.context.telemetry.health.beat_until(wait);
            if wake_rx.recv_timeout(wait).is_ok() {
                // A creation or rename is looked at at once. Another event just after a scan is
                // not dropped: the scan comes at most SCAN_GAP later, not at the next fallback.
                if self.appeared.swap(false, Ordering::SeqCst)
                    || self.last_scan.elapsed() >= SCAN_GAP
                {
                    self.scan(false);
                } else {
                    self.scan_soon = true;
                }
                self.gather(&wake_rx, scan_every);
            }
        }
        // The drain is over. What waits for an end ships as it stands, without moving the
        // checkpoint past it: in a pod that is going away the line ends here; a restarted
        // sidecar reads it again and joins its end, should that come.
        let processor = self.context.processor();
        for w in &mut self.watched {
            if let Some(reader) = w.reader.as_mut() {
                reader.snapshot_unterminated(&processor, &mut self.local, &mut self.batch);
            }
        }
        self.flush_batch();
        self.publish(true);
    }

    /// Woken by a write less than [`READ_GAP`] after the last pass that found data: waits out
    /// the rest of the gap, so that the writes of a busy file are read together. Only plain
    /// writes (and closes after writing) are held back: a creation or rename (a scan is due
    /// at once), a removal (a watch to renew) and the stop end the wait, and nothing is
    /// skipped, only read later. Nothing else that is due (a scan, a partial line's expiry,
    /// a rotated file's `rotate_wait`) waits for the gap: the wait ends when the first is due.
    fn gather(&mut self, wake_rx: &std_mpsc::Receiver<()>, scan_every: Duration) {
        let Some(gap_over) = self.last_data.map(|at| at + READ_GAP) else {
            return;
        };
        let until = gap_over.min(Instant::now() + self.wait(scan_every));
        self.gathering.store(true, Ordering::SeqCst);
        loop {
            if self.context.stop.requested()
                || self.appeared.load(Ordering::SeqCst)
                || self.rewatch.load(Ordering::SeqCst)
            {
                break;
            }
            let Some(left) = until.checked_duration_since(Instant::now()) else {
                break;
            };
            if wake_rx.recv_timeout(left).is_err() {
                break;
            }
        }
        self.gathering.store(false, Ordering::SeqCst);
        // A removal's wake-up taken by this wait still asks for the scan that renews the
        // watches (the main loop asks for it on the wake-ups it takes itself).
        if self.rewatch.load(Ordering::SeqCst) {
            self.scan_soon = true;
        }
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
            let len = w.len().unwrap_or(w.len_seen);
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

    /// Watches the directories the patterns start from (recursively: new pod and container
    /// directories, new and renamed files); events only wake the loop up. Each followed file
    /// is watched too ([`FileTailer::watch_file`]).
    fn watch_events(
        &mut self,
        wake: std_mpsc::SyncSender<()>,
    ) -> Option<notify::RecommendedWatcher> {
        let rewatch = Arc::clone(&self.rewatch);
        let appeared = Arc::clone(&self.appeared);
        let gathering = Arc::clone(&self.gathering);
        let handler = move |event: notify::Result<notify::Event>| {
            // Set before the wake-up is sent, so that the loop sees it when it wakes.
            if event.as_ref().is_ok_and(|e| {
                matches!(
                    e.kind,
                    notify::EventKind::Create(_)
                        | notify::EventKind::Modify(notify::event::ModifyKind::Name(_))
                )
            }) {
                appeared.store(true, Ordering::SeqCst);
            }
            // Set before notify drops the watch the event names, which it does after this
            // handler returns and before it takes the tailer's next watch request.
            if event.as_ref().is_ok_and(|e| {
                matches!(
                    e.kind,
                    notify::EventKind::Remove(_)
                        | notify::EventKind::Modify(notify::event::ModifyKind::Name(_))
                )
            }) {
                rewatch.store(true, Ordering::SeqCst);
            }
            // An open changes nothing to read, and the tailer's own scans open the
            // directories: without this, each scan would wake the loop again.
            // While the loop waits out READ_GAP, a plain write need not wake it: it reads
            // what came when the gap is over. Nor need the close after a write: a writer
            // that opens, appends and closes for each line (PHP's error_log to a file) would
            // otherwise wake the loop once per line all the same.
            let held = gathering.load(Ordering::SeqCst)
                && event.as_ref().is_ok_and(|e| {
                    matches!(
                        e.kind,
                        notify::EventKind::Modify(notify::event::ModifyKind::Data(_))
                            | notify::EventKind::Modify(notify::event::ModifyKind::Any)
                            | notify::EventKind::Access(notify::event::AccessKind::Close(
                                notify::event::AccessMode::Write
                            ))
                    )
                });
            if !held && !event.as_ref().is_ok_and(super::only_opened) {
                let _ = wake.try_send(());
            }
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
                self.unwatched_dirs.push(dir);
            }
        }
        Some(watcher)
    }

    /// Watches a followed file itself, by its inode: its writes wake the loop even where its
    /// directory is not watched (`/var/log/containers/*.log` are symlinks into
    /// `/var/log/pods`) and after it was renamed or deleted. The kernel drops the watch when
    /// the file is gone and closed.
    fn watch_file(&mut self, path: &Path) {
        if let Some(watcher) = self.watcher.as_mut() {
            if let Err(e) = watcher.watch(path, notify::RecursiveMode::NonRecursive) {
                // Its directory's events may not cover it (a symlink's target): poll.
                tracing::warn!(error = %e, path = %path.display(), "cannot watch file; polling");
                self.file_unwatched = true;
            }
        }
    }

    /// Watches the live files again. notify keeps one watch per path, and every file a path
    /// named was watched under it: when an older one (rotated away, let go) is deleted or
    /// renamed, notify drops the watch that path has now, the live file's. Following
    /// `/var/log/containers` links, that watch is the only one announcing its writes. Watching
    /// the same file again adds nothing.
    fn rewatch_live_files(&mut self) {
        let live: Vec<PathBuf> = self
            .watched
            .iter()
            .filter(|w| w.rotated_at.is_none() && !w.writer_gone)
            .map(|w| w.path.clone())
            .collect();
        for path in live {
            self.watch_file(&path);
        }
    }

    /// Whether filesystem events cover every directory the patterns start from.
    fn events_work(&self) -> bool {
        self.watcher.is_some() && self.unwatched_dirs.is_empty() && !self.file_unwatched
    }

    /// How often the patterns are expanded again: `scan_interval` when polling; with
    /// filesystem events (which announce new files at once), only as a slow fallback.
    fn scan_every(&self) -> Duration {
        if self.events_work() && !self.awaits_a_new_log() {
            self.config.scan_interval.max(EVENT_FALLBACK)
        } else {
            self.config.scan_interval
        }
    }

    /// Whether a followed file was rotated away and no newer file of its container is
    /// followed yet. Its runtime is about to open a new log, and the event announcing it
    /// may not come: following `/var/log/containers` links, the new file is made in a
    /// directory that is not watched (the link does not change). Until it is found, the
    /// patterns are expanded every `scan_interval`, as without events.
    fn awaits_a_new_log(&self) -> bool {
        (0..self.watched.len()).any(|i| {
            let w = &self.watched[i];
            w.rotated_at.is_some() && !w.writer_gone && !self.writer_moved_on(i)
        })
    }

    /// How long the loop may sleep when nothing was read: until a filesystem event (which
    /// ends the sleep at once), or else the first of what is due. Polling every
    /// `poll_interval` without events, or while records wait for acknowledgement (the lag
    /// and readiness they show change), or a file fails to read; with events, only every
    /// [`EVENT_FALLBACK`]. A quiet, fully acknowledged source therefore sleeps for seconds.
    fn wait(&self, scan_every: Duration) -> Duration {
        let poll = self.config.poll_interval;
        if self.context.stop.requested() {
            return poll.min(Duration::from_millis(100));
        }
        let now = Instant::now();
        let mut due = now
            + if self.events_work() {
                EVENT_FALLBACK.max(poll)
            } else {
                poll
            };
        // Deadlines still ahead; those passed were dealt with in this turn (or wait on
        // something else, which wakes the loop itself).
        let mut until = |at: Instant| {
            if at > now {
                due = due.min(at);
            }
        };
        until(self.last_scan + scan_every);
        if self.scan_soon {
            until(self.last_scan + SCAN_GAP);
        }
        if let Some(at) = self.context.telemetry.publish_due(&self.local) {
            until(at.max(now + Duration::from_millis(1)));
        }
        let expiry = self.config.partial_line_expiry;
        let rotate_wait = self.config.rotate_wait;
        for w in &self.watched {
            let polled = w.failing_since.is_some()
                || w.reader.is_none()
                || w.reader
                    .as_ref()
                    .and_then(StreamReader::progress)
                    .is_some_and(|p| p.in_flight() > 0);
            if polled {
                until(now + poll);
            }
            if w.reader
                .as_ref()
                .is_some_and(StreamReader::has_unterminated)
            {
                until(w.last_data + expiry);
            }
            if let Some(rotated_at) = w.rotated_at {
                until(rotated_at + rotate_wait);
                until(w.last_data + rotate_wait);
                until(rotated_at + ROTATED_LONG_AGO);
            }
        }
        due.saturating_duration_since(now)
            .max(Duration::from_millis(1))
    }

    /// Expands the patterns and reconciles the result with the watched files. A new file is
    /// opened and identified at once: its open handle keeps its content readable through any
    /// later rotation, even while the outputs hold reading back.
    fn scan(&mut self, startup: bool) {
        self.last_scan = Instant::now();
        self.scan_soon = false;
        if let Some(watcher) = self.watcher.as_mut() {
            self.unwatched_dirs.retain(|dir| {
                let failed = watcher
                    .watch(dir, notify::RecursiveMode::Recursive)
                    .is_err();
                if !failed {
                    tracing::info!(dir = %dir.display(), "watching directory");
                }
                failed
            });
        }
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
        let mut rotated_now = Vec::new();
        for (i, w) in self.watched.iter_mut().enumerate() {
            if w.writer_gone {
                continue;
            }
            match found.remove(&w.dev_ino) {
                Some(path) => {
                    if path != w.path {
                        tracing::info!(from = %w.path.display(), to = %path.display(), "file renamed");
                        if let Some(key) = w.key {
                            let real =
                                std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
                            self.checkpoints.rename(key, &real);
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
                        rotated_now.push(i);
                    }
                }
            }
        }
        if self.rewatch.swap(false, Ordering::SeqCst) {
            self.rewatch_live_files();
        }
        // Files rotated since the last look may have been followed by more rotations than one:
        // the files in between are read too.
        for &i in rotated_now.iter().rev() {
            self.adopt_newer_siblings(i);
        }
        for (_, path) in found {
            let real = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            let known = real.parent().is_some_and(|d| self.known_dirs.contains(d));
            let start = match std::fs::metadata(&path) {
                Ok(meta) if startup && !known && self.config.read_from == ReadFrom::End => {
                    Start::CheckpointOrEnd(meta.len())
                }
                _ => Start::Checkpoint,
            };
            match Watched::open(&path, start) {
                Ok(w) => {
                    tracing::info!(path = %path.display(), "watching file");
                    // Known as followed even while it is empty and has no checkpoint: its
                    // rotated siblings are looked for after a restart.
                    if let Some(base) = &w.base {
                        self.checkpoints.follow(base);
                    }
                    self.watch_file(&path);
                    self.watched.push(w);
                    self.start_file(self.watched.len() - 1);
                }
                Err(e) => tracing::warn!(error = %e, path = %path.display(), "cannot open file"),
            }
        }
        // A scan may run while the outputs hold the loop back (flush_batch): what it found
        // is made durable here, not after the backpressure ends.
        self.save_new_identities();
    }

    /// Whether file `i` must wait: an older file of the same container (a rotated one, read
    /// first so records keep their order) is not yet read to its end, or ends inside a line
    /// whose end may be at the start of file `i`.
    fn waits_for_an_older_file(&self, i: usize) -> bool {
        let Some(base) = &self.watched[i].base else {
            return false;
        };
        self.watched[..i].iter().any(|older| {
            older.rotated_at.is_some()
                && older.base.as_ref() == Some(base)
                && older.failing_since.is_none()
                && (!older.read_to_end()
                    || older
                        .reader
                        .as_ref()
                        .is_some_and(StreamReader::has_partial_line))
        })
    }

    /// Reads one turn of file `i`. Returns whether any byte was read.
    fn read_turn(&mut self, i: usize) -> bool {
        if self.watched[i].reader.is_none() && !self.start_file(i) {
            return false;
        }
        if self.replaced(i) {
            self.read_again_from_start(i);
            if !self.start_file(i) {
                return false;
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
        let mut replaced_midway = false;
        while read < TURN_BYTES && !self.context.stop.expired() {
            let w = &mut self.watched[i];
            let Some(reader) = w.reader.as_mut() else {
                break;
            };
            let before = reader.position();
            let n = match reader.fill(&mut w.handle) {
                Ok(0) => {
                    w.at_eof = true;
                    w.failing_since = None;
                    break;
                }
                Ok(n) => n,
                Err(e) => {
                    let first = w.failing_since.is_none();
                    let since = *w.failing_since.get_or_insert_with(Instant::now);
                    if first {
                        tracing::warn!(error = %e, path = %w.path.display(), "read failed; retrying");
                    }
                    if matches!(w.handle, Handle::Gzip(_)) {
                        self.retry_compressed(i, since);
                    }
                    break;
                }
            };
            // What was just read follows what was read before only if the file still holds
            // those bytes before it: truncated and written again since the turn's check, the
            // read landed in the middle of the new content. It is given back unprocessed.
            if let Handle::Plain(file) = &w.handle {
                if !w.tail.holds(file, before).unwrap_or(true) {
                    reader.unfill(n);
                    replaced_midway = true;
                    break;
                }
            }
            w.at_eof = false;
            w.failing_since = None;
            read += n as u64;
            w.last_data = Instant::now();
            self.local.bytes += n as u64;
            // The processor in force for this turn; a reload takes effect at the next one.
            let processor = self.context.processor();
            reader.process(&processor, &mut self.local, &mut self.batch);
            w.tail = Tail::of(reader.recent());
            w.len_seen = w.len_seen.max(reader.position());
            if self.batch.len() >= BATCH_RECORDS
                || self.batch.iter().map(|r| r.value.len()).sum::<usize>() >= BATCH_BYTES
            {
                self.flush_batch();
                // The outputs may have held this turn for long: the file may have been
                // truncated (and written again) meanwhile. Reading on at the old position
                // would land in the middle of the new content; the next turn starts over.
                if self.replaced(i) {
                    replaced_midway = true;
                    break;
                }
            }
        }
        if replaced_midway {
            // `len_seen` stays what it was: the unread range of the old content.
            self.read_again_from_start(i);
            return true;
        }
        let w = &mut self.watched[i];
        if let Some(len) = w.len() {
            w.len_seen = len;
        }
        if let Some(key) = w.key {
            self.checkpoints.seen(key, w.len_seen);
        }
        read > 0
    }

    /// Whether file `i` holds other bytes before its read position than were read there (or
    /// is shorter): truncated, or rewritten. Checked before every read of new bytes, and now
    /// and then when nothing is new (a rewrite to the same length).
    fn replaced(&mut self, i: usize) -> bool {
        let interval = self.config.scan_interval;
        let w = &mut self.watched[i];
        let (Some(file), Some(len)) = (w.file(), w.len()) else {
            return false;
        };
        let position = w.position();
        if len < position {
            return true;
        }
        let check = len > position || w.tail_checked.elapsed() >= interval;
        if !check {
            return false;
        }
        let holds = w.tail.holds(file, position).unwrap_or(true);
        w.tail_checked = Instant::now();
        !holds
    }

    /// File `i` was truncated or rewritten. What it held past the read position is read from
    /// the copy a copy-truncate made, if there is one; else the part known unread is reported
    /// lost. It is then read again from its start.
    fn read_again_from_start(&mut self, i: usize) {
        let found_copy = self.read_the_copy(i);
        let i = if found_copy { i + 1 } else { i };
        let processor = self.context.processor();
        let w = &mut self.watched[i];
        let len_now = w.len().unwrap_or(0);
        tracing::warn!(path = %w.path.display(), len = len_now, position = w.position(), "file truncated or rewritten; reading it again from the start");
        self.local.truncations += 1;
        if let Some(mut reader) = w.reader.take() {
            w.rewritten = w
                .key
                .zip(reader.segment().cloned())
                .map(|(k, s)| (k.fingerprint, s));
            let position = reader.position();
            if !found_copy && w.len_seen > position {
                let gap = Gap {
                    reason: "truncated",
                    start: position,
                    end: w.len_seen,
                    end_known: true,
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

    /// A compressed copy fails to read: opened anew and read up to where it was (a decoder
    /// that failed is never read again). Failing for longer than [`UNREADABLE_AFTER`], what
    /// it holds past that point is reported lost and the file is let go.
    fn retry_compressed(&mut self, i: usize, since: Instant) {
        let w = &mut self.watched[i];
        let position = w.position();
        if since.elapsed() < UNREADABLE_AFTER && w.seek(position).is_ok() {
            return;
        }
        tracing::warn!(path = %w.path.display(), position, "a compressed file cannot be read past this point; the rest is reported lost");
        let processor = self.context.processor();
        if let Some(reader) = w.reader.as_mut() {
            let gap = Gap {
                reason: "unreadable",
                start: position,
                end: w.len_seen.max(position),
                end_known: false,
            };
            reader.report_gap(&processor, gap, &mut self.local, &mut self.batch);
        }
        w.at_eof = true;
        w.writer_gone = true;
        w.failing_since = None;
    }

    /// Identifies file `i` and positions it. Returns false while it has no first line yet.
    fn start_file(&mut self, i: usize) -> bool {
        let w = &mut self.watched[i];
        if w.reader.is_some() {
            return true;
        }
        let mut replaced: Option<u32> = None;
        let (key, offset) = match w.start {
            Start::At(offset, key) => {
                if let Err(e) = w.seek(offset) {
                    tracing::warn!(error = %e, path = %w.path.display(), "cannot position the file");
                    return false;
                }
                (key, offset)
            }
            start => {
                let key = match w.identify() {
                    Ok(Some(key)) => key,
                    Ok(None) => return false,
                    Err(e) => {
                        tracing::warn!(error = %e, path = %w.path.display(), "cannot read file");
                        return false;
                    }
                };
                let Some(file) = w.file().cloned() else {
                    return false;
                };
                let resumed = match start {
                    Start::Beginning => Resume::Unknown,
                    _ => self.checkpoints.resume(key, &file),
                };
                self.identified = true;
                let offset = match (resumed, start) {
                    (Resume::At(offset), _) => offset,
                    (Resume::Replaced(known), _) => {
                        if !known.done {
                            self.report_lost(&known, "truncated");
                        }
                        // New content under a known identity: its chain must not reuse the
                        // numbers of the content it replaced.
                        replaced = Some(known.key.generation);
                        0
                    }
                    (Resume::Unknown, Start::CheckpointOrEnd(len)) => end_of_last_line(&file, len),
                    (Resume::Unknown, _) => 0,
                };
                let w = &mut self.watched[i];
                if let Err(e) = w.seek(offset) {
                    tracing::warn!(error = %e, path = %w.path.display(), "cannot seek");
                    return false;
                }
                (key, offset)
            }
        };
        let w = &mut self.watched[i];
        if offset > 0 {
            tracing::info!(path = %w.path.display(), offset, "resuming from checkpoint");
        }
        w.key = Some(key);
        w.tail = w
            .file()
            .and_then(|f| Tail::read(f, offset).ok())
            .unwrap_or_default();
        w.len_seen = w.len().unwrap_or(offset).max(offset);
        let chain = self.context.processor().chain().map(|hasher| {
            // The set: the container's live log (`…/<container>/0.log`), stable across
            // rotations, renames and restarts.
            let stream = match &w.base {
                Some((dir, base)) => dir.join(base).display().to_string(),
                None => w.path.display().to_string(),
            };
            // Content replaced under the same first line while it was read: the checkpoint
            // entry of the key is the old content's, and so would its segment be.
            let rewritten = w
                .rewritten
                .take()
                .filter(|(fingerprint, _)| *fingerprint == key.fingerprint);
            let identity = match (replaced, &rewritten) {
                (Some(generation), _) => format!("{:016x}~{generation}", key.fingerprint),
                (None, Some((_, old))) => format!("{old}~r"),
                (None, None) => format!("{:016x}", key.fingerprint),
            };
            let saved = match rewritten {
                Some(_) => None,
                None => self.checkpoints.chain_at(key, offset),
            };
            SegmentChain::resume(Arc::clone(hasher), &stream, &identity, offset, saved)
                .with_digests(self.context.digests.clone())
        });
        let progress = match &chain {
            Some(chain) => chain.progress(offset),
            None => Progress::new(offset),
        };
        let real = std::fs::canonicalize(&w.path).unwrap_or_else(|_| w.path.clone());
        self.checkpoints
            .watch(key, &real, Arc::clone(&progress), w.file().cloned());
        w.reader = Some(
            StreamReader::new(
                self.config.format,
                self.config.max_line_bytes,
                offset,
                StreamInfo::new(w.path.display().to_string(), key.fingerprint),
                Some(progress),
                self.context.budget.charge(0),
            )
            .with_chain(chain),
        );
        w.meta_version = None;
        true
    }

    /// Saves the checkpoints now if a file was identified since the last call: its identity
    /// (and where it is read from) is then on disk before the tailer reads on or sleeps, so a
    /// SIGKILL right after cannot forget it. After a restart a known file gone with bytes
    /// unread becomes a gap record; an unknown one cannot be named at all. The periodic saver
    /// would write it only at its next tick. A failed save is the periodic saver's to report
    /// (it tries again and makes the pod not ready).
    fn save_new_identities(&mut self) {
        if !std::mem::take(&mut self.identified) {
            return;
        }
        if let Err(e) = self.checkpoints.save() {
            tracing::warn!(error = %e, "cannot save the checkpoint of a new file; the periodic save tries again");
        }
    }

    /// Partial lines whose end did not come while their file stayed quiet for
    /// `partial_line_expiry` ship as they stand; they still wait for their end, which they
    /// join should it come after all.
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
            let n = reader.snapshot_unterminated(processor, &mut self.local, &mut self.batch);
            if n > 0 {
                tracing::warn!(path = %w.path.display(), lines = n, "a partial line's end did not come; shipped as it stands");
            }
        }
    }

    /// Sends the pending batch, waiting while the outputs are busy (backpressure) but giving
    /// up when the drain's time is up: unsent records are unconfirmed and will be read again.
    /// While it waits it keeps scanning, so that files created and rotated away meanwhile are
    /// held open and read later.
    fn flush_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let mut batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_RECORDS));
        loop {
            let wait = Duration::from_millis(200);
            match self.runtime.block_on(self.context.send_within(batch, wait)) {
                Ok(()) => return,
                Err(Some(unsent)) if !self.context.stop.expired() => {
                    batch = unsent;
                    if self.last_scan.elapsed() >= self.config.scan_interval {
                        self.scan(false);
                    }
                    // Backpressure holds reading, not the lag gauge and the backlog check:
                    // what the outputs leave unread is what they must show.
                    self.publish(false);
                }
                Err(_) => return,
            }
        }
    }

    /// Lets go of rotated files that are read to their end and that nothing writes to any
    /// more (quiet for `rotate_wait`). A line a released file ends inside goes on at the start
    /// of the next file of its container (the kubelet rotated between its chunks): it is
    /// joined with its end there; without one it ships as it stands.
    /// Returns whether it let go of any.
    fn let_go_of_rotated(&mut self) -> bool {
        // A rotated file whose runtime writes to a newer one grows no more: its checkpoint
        // says so, and once confirmed to that size nothing of it can be lost should it be
        // deleted while auditrail is down.
        for i in 0..self.watched.len() {
            let w = &self.watched[i];
            if w.sealed || w.rotated_at.is_none() || !self.writer_moved_on(i) {
                continue;
            }
            if let Some(key) = w.key {
                self.checkpoints.seal(key);
                self.watched[i].sealed = true;
            }
        }
        let wait = self.config.rotate_wait;
        let done: Vec<usize> = (0..self.watched.len())
            .filter(|&i| {
                let w = &self.watched[i];
                let Some(rotated_at) = w.rotated_at else {
                    return false;
                };
                let quiet = w.writer_gone
                    || (w.last_data.elapsed() >= wait
                        && rotated_at.elapsed() >= wait
                        && self.writer_moved_on(i));
                quiet && w.read_to_end()
            })
            .collect();
        if done.is_empty() {
            return false;
        }
        let processor = self.context.processor();
        for i in done.into_iter().rev() {
            self.join_with_the_next_file(i, &processor);
            let mut w = self.watched.remove(i);
            if let Some(reader) = w.reader.as_mut() {
                let n = reader.flush_unterminated(&processor, &mut self.local, &mut self.batch);
                if n > 0 {
                    tracing::warn!(path = %w.path.display(), lines = n, "rotated file ended inside a line; processed as it stands");
                }
            }
            tracing::info!(path = %w.path.display(), "rotated file read to its end; closed");
            if let Some(key) = w.key {
                self.checkpoints.seen(key, w.position());
                self.checkpoints.release(key);
            }
            if let Some(base) = &w.base {
                if !self.watched.iter().any(|o| o.base.as_ref() == Some(base)) {
                    self.checkpoints.unfollow(base);
                }
            }
        }
        true
    }

    /// Whether the runtime writes to rotated file `i` no more: it reopened its log (a newer
    /// file of the same container is followed), or the file was deleted, or it has been
    /// rotated for a long while. Until then it may still get the last writes before a reopen.
    fn writer_moved_on(&self, i: usize) -> bool {
        let w = &self.watched[i];
        let successor = self.watched[i + 1..]
            .iter()
            .any(|n| n.base.is_some() && n.base == w.base && n.rotated_at.is_none());
        let deleted = w
            .file()
            .and_then(|f| f.metadata().ok())
            .is_some_and(|m| m.nlink() == 0);
        let long_ago = w
            .rotated_at
            .is_some_and(|at| at.elapsed() >= ROTATED_LONG_AGO);
        successor || deleted || long_ago
    }

    /// File `i` (rotated, read to its end) ends inside a line: the chunks that end it are the
    /// first lines of the next file of its container, which waited for this. They are joined
    /// here; the next file goes on after them, its checkpoint held before them until the
    /// joined record is confirmed.
    fn join_with_the_next_file(&mut self, i: usize, processor: &Processor) {
        let (before, after) = self.watched.split_at_mut(i + 1);
        let w = &mut before[i];
        let Some(reader) = w.reader.as_mut() else {
            return;
        };
        if !reader.has_partial_line() {
            return;
        }
        let Some(next) = after
            .iter_mut()
            .find(|n| n.base.is_some() && n.base == w.base)
        else {
            return;
        };
        let Some(file) = next.file().cloned() else {
            return;
        };
        let Some(next_reader) = next.reader.as_mut() else {
            return;
        };
        let from = next_reader.position();
        let mut head = vec![0u8; CONTINUATION_MAX];
        let n = std::os::unix::fs::FileExt::read_at(&*file, &mut head, from).unwrap_or(0);
        head.truncate(n);
        // The leading physical lines of the next file that continue a waiting line.
        let mut chunks: Vec<&[u8]> = Vec::new();
        let mut consumed = 0usize;
        let mut waiting: Vec<_> = [crate::line::Stream::Stdout, crate::line::Stream::Stderr]
            .into_iter()
            .filter(|s| reader.waits_on(*s))
            .collect();
        for line in head.split_inclusive(|b| *b == b'\n') {
            if waiting.is_empty() || !line.ends_with(b"\n") {
                break;
            }
            let physical = &line[..line.len() - 1];
            let Some((stream, full)) = cri_chunk(physical) else {
                break;
            };
            if !waiting.contains(&stream) {
                break;
            }
            chunks.push(physical);
            consumed += line.len();
            if full {
                waiting.retain(|s| *s != stream);
            }
        }
        if chunks.is_empty() {
            return;
        }
        let Some(next_progress) = next_reader.progress().cloned() else {
            return;
        };
        tracing::info!(from = %w.path.display(), to = %next.path.display(), chunks = chunks.len(), "a line split by the rotation is joined across the two files");
        reader.join_continuation(
            &chunks,
            processor,
            &mut self.local,
            &mut self.batch,
            (&next_progress, from),
        );
        next_reader.skip_to(from + consumed as u64);
        let _ = next.seek(from + consumed as u64);
    }
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
