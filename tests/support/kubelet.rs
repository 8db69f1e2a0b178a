//! A kubelet simulator: the files a node leaves under `/var/log/pods/<ns>_<pod>_<uid>/` for
//! one container, written the way containerd writes them and rotated the way the kubelet
//! rotates them (facts and sources: `/work/shared/field-facts.md` §1–§2).
//!
//! ```text
//! let mut app = Kubelet::new(&pod_dir);           // <pod_dir>/app/0.log, mode 0640
//! let written = app.write_audit(Stdout, 100, 300); // 100 audit records of 300 bytes each
//! app.rotate();                                    // 0.log -> 0.log.<YYYYMMDD-HHMMSS>, new 0.log
//! ```
//!
//! What it models:
//! - **containerd's CRI logger** (`internal/cri/io/logger.go` redirectLogs): the application
//!   writes bytes to stdout or stderr ([`Kubelet::write`]); each stream is cut into lines
//!   `<RFC3339Nano> <stdout|stderr> <P|F> <content>\n`. A trailing `\n` or `\r\n` is removed
//!   from the content. A line longer than `max_line` goes out as `P` chunks of exactly
//!   `max_line` bytes and a final `F` (a line of exactly `max_line` bytes is one `F`); bytes
//!   without a newline wait in the stream's buffer (they are written as `P` chunks only once
//!   more than `max_line` of them are waiting), and when the container exits
//!   ([`Kubelet::exit`]) what is left is written as a lone `P` line ("log ends without
//!   newline"). Both streams go to the one file through one writer, so their lines
//!   interleave in the order the application wrote them. [`Framing::Raw`] instead writes the
//!   application's bytes as they are: an application that writes its own log file.
//! - **the kubelet's rotation** (`pkg/kubelet/logs/container_log_manager.go` rotateLog):
//!   delete `*.tmp` and uncompressed files that already have a `.gz`; delete the oldest
//!   rotated files until `max_files - 2` remain; gzip every rotated file not yet compressed
//!   (to `<f>.tmp` with the source's mode, rename to `<f>.gz`, remove `<f>`); rename the log
//!   to `<log>.<YYYYMMDD-HHMMSS>`; then the runtime reopens the log (`O_CREAT|O_APPEND`,
//!   0640), a new file. Between the rename and the reopen the runtime keeps writing to the
//!   renamed file through the handle it holds ([`Kubelet::rename_for_rotation`],
//!   [`Kubelet::reopen`]).
//! - copy-truncate (logrotate's `copytruncate`), truncate-and-rewrite, delete-and-recreate,
//!   container restart (`<restartCount>.log`) and container removal.
//!
//! It is deterministic: no randomness, and a simulated clock. Each physical line takes the
//! clock's time and moves it on by [`LINE_TICK_NANOS`]; Go's RFC3339Nano drops trailing zeros
//! of the fraction, so timestamps vary in width as they do on a node.
//!
//! Rotated names and the same second: the real kubelet names a rotated file after the second
//! it rotates in and `os.Rename`s onto that name, so two rotations of one container in the
//! same second would replace the first rotated file (and at the next rotation its `.gz`).
//! That cannot happen on a node: the kubelet looks at a container at most once per
//! `containerLogMonitorInterval` (10 s by default). The simulator keeps that property rather
//! than the overwrite: every rotation (and copy-truncate) first moves the simulated clock on
//! by [`MONITOR_INTERVAL_SECS`], so names are unique and sort oldest first, and it panics if
//! the name is nevertheless taken. Unlike the kubelet it rotates when asked, whatever the
//! file's size (the test decides when `containerLogMaxSize` is reached) and also after the
//! container exited (the kubelet rotates running containers only).
//!
//! Writes: each call writes what it produced with one `write(2)`, so a test that writes many
//! records at once produces one burst (containerd writes each line on its own; a reader must
//! cope with both, and with a line cut anywhere).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chrono::{DateTime, Duration, TimeZone, Utc};

/// containerd's default `max_container_log_line_size`.
pub const CONTAINERD_MAX_LINE: usize = 16 * 1024;
/// The kubelet's default `containerLogMaxFiles`.
pub const KUBELET_MAX_FILES: usize = 5;
/// The kubelet's default `containerLogMonitorInterval`: at most one rotation per container in
/// that time.
pub const MONITOR_INTERVAL_SECS: i64 = 10;
/// How far the simulated clock moves per physical line (about a millisecond; not round, so
/// the RFC3339Nano fraction varies in width).
pub const LINE_TICK_NANOS: i64 = 1_000_013;
/// The shortest record [`audit_record`] makes.
pub const MIN_RECORD: usize = 96;

/// A container's output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// How the application's output reaches the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// containerd's CRI logger (the kubelet's files).
    Cri,
    /// The application writes its own log file: its bytes as they are, both streams alike.
    Raw,
}

/// An Immuta audit record of exactly `len` bytes (at least [`MIN_RECORD`]) whose type is
/// `tag` and whose `id` is `{tag}-{n:06}`: distinct for each (tag, n), so the records a test
/// wrote can be told apart from what was shipped by their id.
pub fn audit_record(tag: &str, n: usize, len: usize) -> String {
    let head = format!(
        r#"{{"level": "audit", "recordType": "{tag}", "id": "{tag}-{n:06}", "seq": {n}, "pad": ""#
    );
    let tail = r#""}"#;
    assert!(
        len >= MIN_RECORD.max(head.len() + tail.len()),
        "a record of {len} bytes is too short for {head}"
    );
    let mut record = head;
    let pad = len - record.len() - tail.len();
    record.extend(std::iter::repeat_n('x', pad));
    record.push_str(tail);
    debug_assert_eq!(record.len(), len);
    record
}

/// The `id` of a record [`audit_record`] made (or any JSON object with a string `id`).
pub fn record_id(record: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(record).ok()?;
    v["id"].as_str().map(str::to_owned)
}

/// Go's `time.RFC3339Nano` in UTC: `2006-01-02T15:04:05.999999999Z`, trailing zeros of the
/// fraction dropped (and the dot with them when the fraction is zero).
pub fn rfc3339_nano(t: DateTime<Utc>) -> String {
    let mut s = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.timestamp_subsec_nanos();
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        s.push('.');
        s.push_str(fraction.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// One physical line of a CRI file, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriLine {
    pub time: String,
    pub stream: String,
    /// `P` or `F` (with any `:flags`).
    pub tag: String,
    pub content: Vec<u8>,
}

/// Reads a CRI file back into its physical lines (a last line without `\n` included).
pub fn cri_lines(path: &Path) -> Vec<CriLine> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    bytes
        .split_inclusive(|b| *b == b'\n')
        .map(|line| {
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            let mut fields = line.splitn(4, |b| *b == b' ');
            let mut next =
                || String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
            let (time, stream, tag) = (next(), next(), next());
            let header = time.len() + stream.len() + tag.len() + 3;
            CriLine {
                time,
                stream,
                tag,
                content: line.get(header..).unwrap_or_default().to_vec(),
            }
        })
        .collect()
}

/// One container's log files, written as containerd and the kubelet write them.
#[derive(Debug)]
pub struct Kubelet {
    /// `<pod dir>/<container>`.
    dir: PathBuf,
    container: String,
    restart_count: u32,
    framing: Framing,
    /// containerd's `max_container_log_line_size`; 0 means no limit.
    max_line: usize,
    max_files: usize,
    now: DateTime<Utc>,
    /// The runtime's handle on the current log (`None` once the container exited).
    file: Option<File>,
    /// Per stream, what the application wrote after its last newline.
    pending: [Vec<u8>; 2],
    /// The number of the next record [`Kubelet::write_audit`] makes.
    next_record: usize,
    /// The number of the next ordinary line.
    next_ordinary: usize,
    /// While rewriting ([`Kubelet::truncate_and_rewrite`]): what the writes produced.
    capture: Option<Vec<u8>>,
}

impl Kubelet {
    /// Container `app` of the pod whose log directory is `pod_dir`: creates
    /// `<pod_dir>/app/0.log` (empty, mode 0640), as the runtime does when the container starts.
    pub fn new(pod_dir: &Path) -> Kubelet {
        Kubelet::for_container(pod_dir, "app")
    }

    /// Container `name` of the pod whose log directory is `pod_dir`.
    pub fn for_container(pod_dir: &Path, name: &str) -> Kubelet {
        let dir = pod_dir.join(name);
        // The kubelet creates the pod directory (0755), containerd the container's (0755).
        fs::create_dir_all(&dir).expect("create the container's log directory");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod 0755");
        let mut kubelet = Kubelet {
            dir,
            container: name.to_owned(),
            restart_count: 0,
            framing: Framing::Cri,
            max_line: CONTAINERD_MAX_LINE,
            max_files: KUBELET_MAX_FILES,
            now: Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap(),
            file: None,
            pending: [Vec::new(), Vec::new()],
            next_record: 0,
            next_ordinary: 0,
            capture: None,
        };
        kubelet.reopen();
        kubelet
    }

    /// containerd's `max_container_log_line_size` (default [`CONTAINERD_MAX_LINE`]); 0 or
    /// less there means no limit, 0 here.
    pub fn max_line(mut self, max_line: usize) -> Kubelet {
        self.max_line = max_line;
        self
    }

    /// The kubelet's `containerLogMaxFiles` (default [`KUBELET_MAX_FILES`], at least 2).
    pub fn max_files(mut self, max_files: usize) -> Kubelet {
        assert!(
            max_files > 1,
            "the kubelet requires containerLogMaxFiles > 1"
        );
        self.max_files = max_files;
        self
    }

    /// The application writes its own file: no CRI framing ([`Framing::Raw`]).
    pub fn raw(mut self) -> Kubelet {
        self.framing = Framing::Raw;
        self
    }

    /// Sets the simulated clock.
    pub fn clock(mut self, now: DateTime<Utc>) -> Kubelet {
        self.now = now;
        self
    }

    /// The container's name (also the type and id prefix of the records it writes).
    pub fn name(&self) -> &str {
        &self.container
    }

    /// The directory of the container's logs: `<pod dir>/<container>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current log: `<pod dir>/<container>/<restartCount>.log`.
    pub fn path(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.restart_count))
    }

    /// The current log's length.
    pub fn len(&self) -> u64 {
        fs::metadata(self.path()).map(|m| m.len()).unwrap_or(0)
    }

    /// The length of the file the runtime writes to now (through its handle): the current
    /// log, or the renamed one between [`Kubelet::rename_for_rotation`] and
    /// [`Kubelet::reopen`]. 0 once the container exited.
    pub fn written_len(&self) -> u64 {
        self.file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len())
    }

    /// The rotated files of the current log (`<log>.*`: uncompressed, `.gz`, `.tmp`), oldest
    /// first.
    pub fn rotated(&self) -> Vec<PathBuf> {
        let prefix = format!("{}.log.", self.restart_count);
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)
            .expect("list the container's log directory")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect();
        files.sort();
        files
    }

    // === the application's output ===

    /// The application writes `bytes` to `stream`.
    pub fn write(&mut self, stream: Stream, bytes: impl AsRef<[u8]>) {
        let bytes = bytes.as_ref();
        let mut out = Vec::new();
        match self.framing {
            Framing::Raw => out.extend_from_slice(bytes),
            Framing::Cri => {
                let mut rest = bytes;
                while !rest.is_empty() {
                    match memchr(b'\n', rest) {
                        Some(nl) => {
                            self.pending[stream.index()].extend_from_slice(&rest[..=nl]);
                            rest = &rest[nl + 1..];
                            let mut line = std::mem::take(&mut self.pending[stream.index()]);
                            // readLine drops the `\n`, and a `\r` just before it.
                            line.pop();
                            if line.last() == Some(&b'\r') {
                                line.pop();
                            }
                            let mut line = &line[..];
                            while self.max_line > 0 && line.len() > self.max_line {
                                self.cri_line(&mut out, stream, "P", &line[..self.max_line]);
                                line = &line[self.max_line..];
                            }
                            self.cri_line(&mut out, stream, "F", line);
                        }
                        None => {
                            self.pending[stream.index()].extend_from_slice(rest);
                            rest = &[];
                            // More than max_line waiting without a newline: a P chunk of
                            // exactly max_line bytes goes out, the rest keeps waiting.
                            while self.max_line > 0
                                && self.pending[stream.index()].len() > self.max_line
                            {
                                let chunk: Vec<u8> = self.pending[stream.index()]
                                    .drain(..self.max_line)
                                    .collect();
                                self.cri_line(&mut out, stream, "P", &chunk);
                            }
                        }
                    }
                }
            }
        }
        self.emit(&out);
    }

    /// Writes `n` audit records of `len` bytes each to `stream`, each a whole line; returns
    /// their texts (type and id prefix: the container's name).
    pub fn write_audit(&mut self, stream: Stream, n: usize, len: usize) -> Vec<String> {
        let records: Vec<String> = (0..n).map(|_| self.next_audit_record(len)).collect();
        let mut text = String::with_capacity(n * (len + 1));
        for r in &records {
            text.push_str(r);
            text.push('\n');
        }
        self.write(stream, text);
        records
    }

    /// The next audit record this container would write ([`audit_record`]), without writing
    /// it: for a test that writes it in pieces.
    pub fn next_audit_record(&mut self, len: usize) -> String {
        let record = audit_record(&self.container, self.next_record, len);
        self.next_record += 1;
        record
    }

    /// Writes `n` ordinary (non-audit) lines to `stream`.
    pub fn write_ordinary(&mut self, stream: Stream, n: usize) {
        let mut text = String::new();
        for _ in 0..n {
            text.push_str(&super::ordinary_line(self.next_ordinary));
            text.push('\n');
            self.next_ordinary += 1;
        }
        self.write(stream, text);
    }

    /// Writes ordinary lines to `stream` until at least `bytes` bytes of them were written.
    pub fn write_ordinary_bytes(&mut self, stream: Stream, bytes: usize) {
        let mut text = String::with_capacity(bytes + 256);
        while text.len() < bytes {
            text.push_str(&super::ordinary_line(self.next_ordinary));
            text.push('\n');
            self.next_ordinary += 1;
        }
        self.write(stream, text);
    }

    /// Everything `writes` writes goes to the file in one `write(2)`: a reader sees all of it
    /// or none of it (say, P chunks of one stream and a line of the other between them).
    pub fn in_one_write<T>(&mut self, writes: impl FnOnce(&mut Kubelet) -> T) -> T {
        assert!(self.capture.is_none(), "bursts do not nest");
        self.capture = Some(Vec::new());
        let result = writes(self);
        let content = self.capture.take().expect("capturing");
        self.emit(&content);
        result
    }

    /// The container stops: its streams close, and what each holds without a newline is
    /// written as a lone `P` line. Writing afterwards panics until [`Kubelet::restart`].
    pub fn exit(&mut self) {
        let mut out = Vec::new();
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = std::mem::take(&mut self.pending[stream.index()]);
            if !rest.is_empty() && self.framing == Framing::Cri {
                self.cri_line(&mut out, stream, "P", &rest);
            }
        }
        self.emit(&out);
        self.file = None;
    }

    /// The container restarts: the old instance exits ([`Kubelet::exit`]) and the new one
    /// writes `<restartCount + 1>.log`; the old log stays until container GC removes it.
    pub fn restart(&mut self) {
        if self.file.is_some() {
            self.exit();
        }
        self.restart_count += 1;
        self.reopen();
    }

    // === the kubelet and other rotators ===

    /// A kubelet rotation: [`Kubelet::rename_for_rotation`] then [`Kubelet::reopen`]. Returns
    /// the rotated file.
    pub fn rotate(&mut self) -> PathBuf {
        let rotated = self.rename_for_rotation();
        self.reopen();
        rotated
    }

    /// The kubelet's rotateLog up to the rename: clean up, remove the oldest rotated files
    /// beyond `max_files - 2`, gzip the uncompressed rotated files, rename the log to
    /// `<log>.<YYYYMMDD-HHMMSS>`. Until [`Kubelet::reopen`], the application's output still
    /// goes to the renamed file (the runtime's open handle). Returns the renamed file.
    pub fn rename_for_rotation(&mut self) -> PathBuf {
        let log = self.path();
        // cleanupUnusedLogs
        for f in self.rotated() {
            let name = f.to_string_lossy().into_owned();
            if name.ends_with(".tmp")
                || (!name.ends_with(".gz") && Path::new(&format!("{name}.gz")).exists())
            {
                fs::remove_file(&f).expect("remove an unused log");
            }
        }
        // removeExcessLogs: oldest first (names sort by time)
        let rotated = self.rotated();
        let keep = self.max_files.saturating_sub(2);
        let excess = rotated.len().saturating_sub(keep);
        for f in &rotated[..excess] {
            fs::remove_file(f).expect("remove an excess log");
        }
        // compressLog for every rotated file not yet compressed
        for f in &rotated[excess..] {
            if f.extension().is_none_or(|e| e != "gz") {
                gzip(f);
            }
        }
        let target = self.next_rotated_name();
        fs::rename(&log, &target).expect("rename the log for rotation");
        target
    }

    /// ReopenContainerLog: the runtime opens `<log>` again (`O_WRONLY|O_CREAT|O_APPEND`, 0640):
    /// a new file after a rename or a deletion, the same one otherwise.
    pub fn reopen(&mut self) {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(self.path())
            .expect("open the log");
        self.file = Some(file);
    }

    /// logrotate's `copytruncate`: the log is copied to `<log>.<YYYYMMDD-HHMMSS>` (named as
    /// the kubelet names rotated files, so the glob `*.log` does not match it) and truncated
    /// in place; the runtime keeps appending to the same file, from offset 0. Returns the copy.
    pub fn copy_truncate(&mut self) -> PathBuf {
        let target = self.next_rotated_name();
        fs::copy(self.path(), &target).expect("copy the log");
        self.truncate();
        target
    }

    /// Truncates the log in place (same file; the runtime's appends continue from 0).
    pub fn truncate(&mut self) {
        OpenOptions::new()
            .write(true)
            .open(self.path())
            .and_then(|f| f.set_len(0))
            .expect("truncate the log");
    }

    /// The log is truncated and rewritten with what `rewrite` writes, in the same file.
    ///
    /// A reader that polls sees the file before and after, seldom the moment in between; so
    /// that tests do not depend on that luck, a rewrite at least as long as the old content
    /// is written over it from offset 0 (the file never looks shorter), and a shorter one
    /// is written after a real truncation.
    pub fn truncate_and_rewrite<T>(&mut self, rewrite: impl FnOnce(&mut Kubelet) -> T) -> T {
        assert!(self.capture.is_none(), "rewrites do not nest");
        self.capture = Some(Vec::new());
        let result = rewrite(self);
        let content = self.capture.take().expect("capturing");
        let path = self.path();
        let old_len = self.len();
        if (content.len() as u64) < old_len {
            self.truncate();
            self.emit(&content);
        } else {
            OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.write_all_at(&content, 0))
                .expect("rewrite the log");
        }
        result
    }

    /// The log is deleted, and the kubelet, finding it missing, has the runtime reopen it: a
    /// new file at the same path (the filesystem may give it the old inode number).
    pub fn delete_and_recreate(&mut self) {
        fs::remove_file(self.path()).expect("delete the log");
        self.reopen();
    }

    /// Container removal (logManager.Clean): the current and rotated logs are deleted.
    pub fn remove_logs(&mut self) {
        for f in self.rotated() {
            let _ = fs::remove_file(f);
        }
        let _ = fs::remove_file(self.path());
        self.file = None;
    }

    // === internals ===

    /// Moves the clock on by a monitor interval and names the rotated file after it.
    fn next_rotated_name(&mut self) -> PathBuf {
        self.now += Duration::seconds(MONITOR_INTERVAL_SECS);
        let target = self.dir.join(format!(
            "{}.log.{}",
            self.restart_count,
            self.now.format("%Y%m%d-%H%M%S")
        ));
        let gz = PathBuf::from(format!("{}.gz", target.display()));
        assert!(
            !target.exists() && !gz.exists(),
            "{} exists: the kubelet would overwrite it",
            target.display()
        );
        target
    }

    /// Appends one CRI line, stamped with the simulated clock.
    fn cri_line(&mut self, out: &mut Vec<u8>, stream: Stream, tag: &str, content: &[u8]) {
        out.extend_from_slice(rfc3339_nano(self.now).as_bytes());
        out.push(b' ');
        out.extend_from_slice(stream.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(tag.as_bytes());
        out.push(b' ');
        out.extend_from_slice(content);
        out.push(b'\n');
        self.now += Duration::nanoseconds(LINE_TICK_NANOS);
    }

    /// Writes `bytes` through the runtime's handle, in one `write(2)`.
    fn emit(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if let Some(capture) = &mut self.capture {
            capture.extend_from_slice(bytes);
            return;
        }
        let file = self
            .file
            .as_mut()
            .unwrap_or_else(|| panic!("container {} has exited", self.container));
        file.write_all(bytes).expect("write the log");
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|b| *b == needle)
}

/// compressLog: gzip `f` to `<f>.tmp` with `f`'s mode, rename it to `<f>.gz`, remove `f`.
/// Uses the system's `gzip -n` (no name, no time: the same bytes every time).
fn gzip(f: &Path) {
    let tmp = PathBuf::from(format!("{}.tmp", f.display()));
    let gz = PathBuf::from(format!("{}.gz", f.display()));
    let mode = fs::metadata(f)
        .expect("stat the rotated log")
        .permissions()
        .mode();
    let out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode & 0o777)
        .open(&tmp)
        .expect("create the .tmp file");
    let status = Command::new("gzip")
        .args(["-n", "-c"])
        .stdin(File::open(f).expect("open the rotated log"))
        .stdout(Stdio::from(out))
        .status()
        .unwrap_or_else(|e| panic!("cannot run gzip ({e}); the kubelet simulator needs it"));
    assert!(status.success(), "gzip {} failed", f.display());
    fs::rename(&tmp, &gz).expect("rename the .tmp file to .gz");
    fs::remove_file(f).expect("remove the compressed log");
}
