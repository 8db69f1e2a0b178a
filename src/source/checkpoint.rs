//! Checkpoints of the file source: the read position of every file, saved so that a restart
//! resumes where it stopped.
//!
//! One JSON file, `checkpoints.json` in `source.checkpoint_dir`, with a version tag, written
//! through [`StateFile`] (atomic and durable):
//! `{"version":2,"files":[{"fingerprint":"…","dev":1,"ino":2,"path":"…","offset":123,
//! "tail":"64:…","size":456,"updated":"…"}],"followed":[{"dir":"…","base":"0.log",
//! "updated":"…"}]}`. Version 1 files (fingerprint only) are read. `followed` (optional) names
//! the container logs followed, also while still empty, so that their rotated siblings are
//! looked for after a restart; an entry's optional `sealed` says its file was rotated and its
//! runtime writes elsewhere, so its `size` is final.
//!
//! An entry is a file's identity ([`FileKey`]: device, inode, first-line fingerprint), the
//! offset a restart resumes from, the [`Tail`] before that offset (so a file that starts like
//! the known one but holds other bytes is not resumed into), and the file's size when last
//! seen (so bytes that can no longer be read are known as a range).
//!
//! The saved offset of a file is [`Progress::committed`]: only lines whose records every
//! output confirmed are behind it. Entries of files no longer read are kept for a day, so a
//! rotated file found again after a restart resumes where it stopped.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::identity::{FileKey, Tail};
use super::store::{CheckpointError, StateFile};
use super::Checkpoint;
use crate::ack::Progress;
use crate::integrity::ChainPoint;

/// The checkpoint format version this build writes; it reads this one and version 1.
const VERSION: u32 = 2;
const FILE_NAME: &str = "checkpoints.json";
/// How long the entry of a file no longer watched is kept.
pub(crate) const KEEP_FINISHED: Duration = Duration::hours(24);

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointFile {
    version: u32,
    files: Vec<Entry>,
    /// Containers' logs followed (directory and base name, `0.log`), with when they were last
    /// followed: a log followed while it was still empty has no entry in `files`, yet its
    /// rotated siblings written after that time must be read after a restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    followed: Vec<Followed>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Followed {
    dir: String,
    base: String,
    updated: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    /// The fingerprint of the file's first line, 16 hex digits.
    fingerprint: String,
    /// Device and inode (absent in version 1 files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dev: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ino: Option<u64>,
    /// The last path the file was seen at.
    path: String,
    offset: u64,
    /// The bytes before `offset` (`<count>:<hash>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tail: Option<String>,
    /// The file's size when last seen.
    #[serde(default)]
    size: u64,
    /// Where the file's integrity chain stood at `offset` (absent without the chain, and in
    /// files written before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chain: Option<ChainPoint>,
    /// Read to its end and let go (a rotated file): nothing of it can be missing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    done: bool,
    /// Its content was replaced (truncated and rewritten) while it was known: it is never
    /// resumed into, and what of it was not confirmed is reported lost.
    #[serde(default, skip_serializing_if = "is_zero")]
    generation: u32,
    /// It was rotated and its runtime writes to a newer file: `size` is final, so a file
    /// confirmed up to it and then deleted lost nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    sealed: bool,
    updated: DateTime<Utc>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug)]
struct Slot {
    path: PathBuf,
    offset: u64,
    /// The chain point that goes with `offset`: saved together, always.
    chain: Option<ChainPoint>,
    tail: Option<Tail>,
    size: u64,
    done: bool,
    /// Becomes `done` once its records (a gap record) are confirmed.
    done_when_confirmed: bool,
    /// Nothing writes to it any more: `size` is final.
    sealed: bool,
    updated: DateTime<Utc>,
    /// Loaded from a version 1 file: known by its fingerprint only.
    legacy: bool,
    /// The live progress while the file is watched or its records are in flight.
    progress: Option<Arc<Progress>>,
    /// The open file, to read the tail before the committed offset when saving.
    file: Option<Arc<File>>,
    watched: bool,
}

/// A file the checkpoints know and nothing reads yet (after a restart): where it was, how far
/// it was read, how large it was.
#[derive(Debug, Clone)]
pub(crate) struct Known {
    pub(crate) key: FileKey,
    pub(crate) path: PathBuf,
    pub(crate) offset: u64,
    pub(crate) size: u64,
    /// It was read to its end and let go.
    pub(crate) done: bool,
    /// Its content was replaced under its identity: it cannot be read again.
    pub(crate) replaced: bool,
    /// Nothing wrote to it any more when it was last saved: `size` was final.
    pub(crate) sealed: bool,
    pub(crate) updated: DateTime<Utc>,
}

/// What a checkpoint says about a file found.
#[derive(Debug)]
pub(crate) enum Resume {
    /// Resume here.
    At(u64),
    /// No checkpoint knows it.
    Unknown,
    /// A checkpoint knew a file of this identity, but the file holds other bytes now
    /// (truncated and rewritten while nothing read it): it is read from its start, and what
    /// the known file held past its checkpoint is lost.
    Replaced(Known),
}

/// A container's log: its directory and base name (`0.log`).
type Base = (PathBuf, String);

/// All checkpoints: those loaded at startup and those of the files being read.
#[derive(Debug)]
pub(crate) struct Checkpoints {
    file: StateFile,
    slots: Mutex<HashMap<FileKey, Slot>>,
    /// Containers' logs followed, by directory and base name: when last followed, and
    /// whether followed now.
    followed: Mutex<HashMap<Base, (DateTime<Utc>, bool)>>,
    /// Those the file held at startup.
    followed_before: Vec<(Base, DateTime<Utc>)>,
    /// What the last save wrote (its [`Digest`], timestamps left out) and when: a save that
    /// would write the same is skipped, so a quiet source does not write (nor wake) every
    /// `checkpoint_interval`.
    saved: Mutex<Option<Saved>>,
    /// One save at a time, from reading the offsets to recording what was written: the
    /// tailer saves a new file's identity at once while the periodic saver may be saving.
    /// Two overlapping saves could write the older state last yet record the newer one as
    /// saved, and a new file would then be missing from the file until something else changed.
    saving: Mutex<()>,
}

/// What the last save wrote.
#[derive(Debug, Clone, Copy)]
struct Saved {
    digest: u64,
    at: std::time::Instant,
    /// The file it wrote (device, inode): one deleted or replaced since is written again,
    /// whatever its content.
    file: Option<(u64, u64)>,
}

/// The longest a checkpoint file goes without being written again although nothing in it
/// changed: its `updated` times stay recent.
const REFRESH: std::time::Duration = std::time::Duration::from_secs(300);

/// A digest of what a checkpoint file would hold, timestamps left out: entries are hashed
/// one by one and summed, so the order of a map does not matter.
#[derive(Default)]
struct Digest(u64);

impl Digest {
    fn add(&mut self, item: impl std::hash::Hash) {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let hash = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
            .hash_one(item);
        self.0 = self.0.wrapping_add(hash);
    }

    /// One entry: what its line in the file says, and whether its live progress would be let
    /// go by a save (`settled`).
    fn slot(&mut self, key: FileKey, s: &Slot, offset: u64, settled: bool) {
        self.add((
            (key.dev, key.ino, key.fingerprint, key.generation),
            (
                &s.path,
                offset,
                s.size,
                s.done,
                s.done_when_confirmed,
                s.sealed,
            ),
            (s.legacy, s.watched, s.progress.is_some(), settled),
        ));
    }
}

impl Checkpoints {
    /// Loads the checkpoints in `dir`, creating the directory if needed.
    pub(crate) fn load(dir: &Path) -> Result<Arc<Checkpoints>, CheckpointError> {
        let file = StateFile::open(dir, FILE_NAME)?;
        let mut slots = HashMap::new();
        let (files, followed) = file
            .load::<CheckpointFile>(1..=VERSION)?
            .map_or_else(Default::default, |f| (f.files, f.followed));
        let followed_before: Vec<_> = followed
            .into_iter()
            .map(|f| ((PathBuf::from(f.dir), f.base), f.updated))
            .collect();
        for e in files {
            let Ok(fingerprint) = u64::from_str_radix(&e.fingerprint, 16) else {
                continue;
            };
            let legacy = e.dev.is_none() || e.ino.is_none();
            let key = FileKey {
                dev: e.dev.unwrap_or(0),
                ino: e.ino.unwrap_or(0),
                fingerprint,
                generation: e.generation,
            };
            slots.insert(
                key,
                Slot {
                    path: PathBuf::from(e.path),
                    offset: e.offset,
                    chain: e.chain,
                    tail: e.tail.as_deref().and_then(Tail::from_text),
                    size: e.size.max(e.offset),
                    done: e.done,
                    done_when_confirmed: false,
                    sealed: e.sealed,
                    updated: e.updated,
                    legacy,
                    progress: None,
                    file: None,
                    watched: false,
                },
            );
        }
        Ok(Arc::new(Checkpoints {
            file,
            slots: Mutex::new(slots),
            followed: Mutex::new(
                followed_before
                    .iter()
                    .map(|(base, at)| (base.clone(), (*at, false)))
                    .collect(),
            ),
            followed_before,
            saved: Mutex::new(None),
            saving: Mutex::new(()),
        }))
    }

    /// The digest of the state now, with each live offset as its progress has it.
    fn digest(&self) -> u64 {
        let mut digest = Digest::default();
        for (key, s) in self.lock().iter() {
            let (offset, settled) = match &s.progress {
                Some(p) => (p.committed(), !s.watched && p.in_flight() == 0),
                None => (s.offset, false),
            };
            digest.slot(*key, s, offset, settled);
        }
        self.digest_followed(&mut digest);
        digest.0
    }

    fn digest_followed(&self, digest: &mut Digest) {
        let followed = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        for (base, (_, now)) in followed.iter() {
            digest.add((base, now));
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<FileKey, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where to resume `file` (known as `key`), if its checkpoint applies: the entry of the
    /// same device, inode and fingerprint (or, from a version 1 file, the same fingerprint),
    /// whose tail the file still holds.
    pub(crate) fn resume(&self, key: FileKey, file: &File) -> Resume {
        let mut slots = self.lock();
        let found = slots.get_key_value(&key).map(|(k, _)| *k).or_else(|| {
            slots
                .iter()
                .find(|(k, s)| s.legacy && k.fingerprint == key.fingerprint && !s.watched)
                .map(|(k, _)| *k)
        });
        let Some(known_key) = found else {
            return Resume::Unknown;
        };
        let Some(slot) = slots.get(&known_key) else {
            return Resume::Unknown;
        };
        let holds = match slot.tail {
            Some(tail) => tail.holds(file, slot.offset).unwrap_or(false),
            None => file.metadata().is_ok_and(|m| m.len() >= slot.offset),
        };
        if holds {
            return Resume::At(slot.offset);
        }
        tracing::warn!(path = %slot.path.display(), offset = slot.offset, "a file starts like a known one but holds other bytes; reading it from its start");
        match retire(&mut slots, known_key) {
            Some(known) => Resume::Replaced(known),
            None => Resume::Unknown,
        }
    }

    /// Starts tracking a file being read (known as `key`; a legacy entry of the same
    /// fingerprint is replaced). `file` is kept to read the tail before the committed offset.
    pub(crate) fn watch(
        &self,
        key: FileKey,
        path: &Path,
        progress: Arc<Progress>,
        file: Option<Arc<File>>,
    ) {
        let mut slots = self.lock();
        slots.retain(|k, s| !(s.legacy && k.fingerprint == key.fingerprint && !s.watched));
        // The same identity with records still in flight: its content was replaced (a
        // truncate-and-rewrite with the same first line). It keeps its own entry, so those
        // records still count, and are reported lost should they never be confirmed.
        if slots
            .get(&key)
            .is_some_and(|s| s.progress.as_ref().is_some_and(|p| p.in_flight() > 0))
        {
            retire(&mut slots, key);
        }
        let size = slots.get(&key).map_or(0, |s| s.size);
        let (offset, chain) = progress.checkpoint();
        slots.insert(
            key,
            Slot {
                path: path.to_path_buf(),
                offset,
                chain,
                tail: None,
                size,
                done: false,
                done_when_confirmed: false,
                sealed: false,
                updated: Utc::now(),
                legacy: false,
                progress: Some(progress),
                file,
                watched: true,
            },
        );
    }

    /// The chain point saved with the checkpoint of `key` at `offset`, if that is where it
    /// is (the entry [`Checkpoints::resume`] found).
    pub(crate) fn chain_at(&self, key: FileKey, offset: u64) -> Option<ChainPoint> {
        let slots = self.lock();
        slots
            .get(&key)
            .filter(|s| s.offset == offset)
            .and_then(|s| s.chain.clone())
    }

    /// The file was renamed.
    pub(crate) fn rename(&self, key: FileKey, path: &Path) {
        if let Some(slot) = self.lock().get_mut(&key) {
            slot.path = path.to_path_buf();
        }
    }

    /// The file's size now, for the range of a gap should it disappear unread.
    pub(crate) fn seen(&self, key: FileKey, size: u64) {
        if let Some(slot) = self.lock().get_mut(&key) {
            slot.size = size;
        }
    }

    /// The file was rotated and its runtime writes to a newer one: its size is final.
    pub(crate) fn seal(&self, key: FileKey) {
        if let Some(slot) = self.lock().get_mut(&key) {
            slot.sealed = true;
        }
    }

    /// A file of this container log (directory and base name) is followed, identified or not.
    pub(crate) fn follow(&self, base: &Base) {
        let mut followed = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        followed.insert(base.clone(), (Utc::now(), true));
    }

    /// No file of this container log is followed any more.
    pub(crate) fn unfollow(&self, base: &Base) {
        let mut followed = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, now)) = followed.get_mut(base) {
            *now = false;
        }
    }

    /// The container logs followed before this start, with when they were last followed.
    pub(crate) fn followed_before(&self) -> &[(Base, DateTime<Utc>)] {
        &self.followed_before
    }

    /// The file is no longer read; its entry stays while records are in flight and for a day.
    pub(crate) fn unwatch(&self, key: FileKey) {
        if let Some(slot) = self.lock().get_mut(&key) {
            slot.watched = false;
        }
    }

    /// A known file is gone and `progress` carries the gap record that reports it: once that
    /// is confirmed, the entry is done and the loss is not reported again.
    pub(crate) fn report_gone(&self, known: &Known, progress: Arc<Progress>) {
        if let Some(slot) = self.lock().get_mut(&known.key) {
            slot.progress = Some(progress);
            slot.done_when_confirmed = true;
        }
    }

    /// The file was read to its end and let go: should it be gone after a restart, nothing of
    /// it is missing.
    pub(crate) fn release(&self, key: FileKey) {
        if let Some(slot) = self.lock().get_mut(&key) {
            slot.watched = false;
            slot.done = true;
        }
    }

    /// The files the checkpoints know that nothing reads yet, oldest first.
    pub(crate) fn unread(&self) -> Vec<Known> {
        let mut known: Vec<Known> = self
            .lock()
            .iter()
            .filter(|(_, s)| !s.watched && s.progress.is_none())
            .map(|(key, s)| known(*key, s))
            .collect();
        known.sort_by_key(|k| (k.updated, k.path.clone()));
        known
    }

    /// The directories and base names (`0.log`) of every file the checkpoints know, and of
    /// the container logs followed before.
    pub(crate) fn bases(&self) -> BTreeSet<(PathBuf, String)> {
        self.lock()
            .values()
            .filter_map(|s| super::rotation::base_of(&s.path))
            .chain(self.followed_before.iter().map(|(base, _)| base.clone()))
            .collect()
    }
}

impl Checkpoint for Checkpoints {
    /// Whether a save would write anything new (or the file was last written [`REFRESH`]
    /// ago, or never, or the file it wrote was deleted or replaced since, or its directory is
    /// gone: the save then fails and says so). A volume that turned read-only or full is noticed
    /// at the next save that has something to write.
    fn changed(&self) -> bool {
        let saved = *self.saved.lock().unwrap_or_else(|e| e.into_inner());
        saved.is_none_or(|s| {
            s.at.elapsed() >= REFRESH
                || s.file.is_none()
                || s.file != self.file.identity()
                || s.digest != self.digest()
        }) || !self.file.dir_usable()
    }

    /// Records handed to outputs and not yet confirmed, over every file.
    fn in_flight(&self) -> usize {
        self.lock()
            .values()
            .filter_map(|s| s.progress.as_ref())
            .map(|p| p.in_flight())
            .sum()
    }

    /// Writes every checkpoint, atomically.
    fn save(&self) -> Result<(), CheckpointError> {
        let _one_at_a_time = self.saving.lock().unwrap_or_else(|e| e.into_inner());
        let now = Utc::now();
        // The digest of what this save writes, from the very offsets it writes: an offset
        // that moves while it saves differs from it, and the next save writes it.
        let mut digest = Digest::default();
        let files = {
            let mut slots = self.lock();
            for (key, slot) in slots.iter_mut() {
                if let Some(p) = &slot.progress {
                    // The offset and its chain point come from one look at the progress.
                    let (offset, chain) = p.checkpoint();
                    if offset != slot.offset || slot.watched {
                        slot.offset = offset;
                        slot.chain = chain;
                        slot.updated = now;
                        slot.tail = slot.file.as_ref().and_then(|f| Tail::read(f, offset).ok());
                    }
                    if !slot.watched && p.in_flight() == 0 {
                        slot.progress = None;
                        slot.file = None;
                        slot.done |= std::mem::take(&mut slot.done_when_confirmed);
                    }
                }
                // A progress kept is not settled (else it was let go just above).
                let offset = slot.offset;
                digest.slot(*key, slot, offset, false);
            }
            slots.retain(|_, s| {
                s.watched || s.progress.is_some() || now - s.updated < KEEP_FINISHED
            });
            let mut files: Vec<Entry> = slots
                .iter()
                .map(|(key, s)| Entry {
                    fingerprint: format!("{:016x}", key.fingerprint),
                    dev: (!s.legacy).then_some(key.dev),
                    ino: (!s.legacy).then_some(key.ino),
                    path: s.path.display().to_string(),
                    offset: s.offset,
                    tail: s.tail.map(Tail::to_text),
                    size: s.size.max(s.offset),
                    chain: s.chain.clone(),
                    done: s.done,
                    generation: key.generation,
                    sealed: s.sealed,
                    updated: s.updated,
                })
                .collect();
            files.sort_by(|a, b| a.path.cmp(&b.path).then(a.fingerprint.cmp(&b.fingerprint)));
            files
        };
        let followed = {
            let mut followed = self.followed.lock().unwrap_or_else(|e| e.into_inner());
            for (at, now_followed) in followed.values_mut() {
                if *now_followed {
                    *at = now;
                }
            }
            followed.retain(|_, (at, _)| now - *at < KEEP_FINISHED);
            let mut list: Vec<Followed> = followed
                .iter()
                .map(|((dir, base), (at, _))| Followed {
                    dir: dir.display().to_string(),
                    base: base.clone(),
                    updated: *at,
                })
                .collect();
            list.sort_by(|a, b| a.dir.cmp(&b.dir).then(a.base.cmp(&b.base)));
            list
        };
        self.digest_followed(&mut digest);
        self.file.save(&CheckpointFile {
            version: VERSION,
            files,
            followed,
        })?;
        *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = Some(Saved {
            digest: digest.0,
            at: std::time::Instant::now(),
            file: self.file.identity(),
        });
        Ok(())
    }
}

fn known(key: FileKey, s: &Slot) -> Known {
    Known {
        key,
        path: s.path.clone(),
        offset: s.offset,
        size: s.size,
        done: s.done,
        replaced: key.generation > 0,
        sealed: s.sealed,
        updated: s.updated,
    }
}

/// Moves the entry of `key` to a generation of its own (its content was replaced): it is
/// never resumed into, and keeps what it knew for the gap that reports it.
fn retire(slots: &mut HashMap<FileKey, Slot>, key: FileKey) -> Option<Known> {
    let mut slot = slots.remove(&key)?;
    slot.watched = false;
    slot.legacy = false;
    let generation = slots
        .keys()
        .filter(|k| {
            FileKey {
                generation: 0,
                ..**k
            } == FileKey {
                generation: 0,
                ..key
            }
        })
        .map(|k| k.generation)
        .max()
        .unwrap_or(0)
        + 1;
    let retired = FileKey { generation, ..key };
    let k = known(retired, &slot);
    slots.insert(retired, slot);
    Some(k)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn key(ino: u64) -> FileKey {
        FileKey {
            dev: 1,
            ino,
            fingerprint: 0xabc,
            generation: 0,
        }
    }

    #[test]
    fn saved_offsets_survive_a_reload_and_only_cover_confirmed_records() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        fs::write(&log, vec![b'x'; 300]).unwrap();
        let file = Arc::new(File::open(&log).unwrap());
        let cps = Checkpoints::load(dir.path()).unwrap();
        let p = Progress::new(0);
        cps.watch(key(7), &log, Arc::clone(&p), Some(Arc::clone(&file)));
        let ack = p.register(100, 1);
        p.set_read(200, None);
        cps.save().unwrap();
        let reloaded = Checkpoints::load(dir.path()).unwrap();
        assert!(matches!(reloaded.resume(key(7), &file), Resume::At(100)));
        ack.confirm();
        cps.save().unwrap();
        let reloaded = Checkpoints::load(dir.path()).unwrap();
        assert!(matches!(reloaded.resume(key(7), &file), Resume::At(200)));
        assert!(
            matches!(reloaded.resume(key(8), &file), Resume::Unknown),
            "another inode"
        );
        let text = fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert!(text.contains("\"version\": 2"), "{text}");
    }

    /// Regression (issue 16, idle cost): the saver wrote and synced the checkpoint file every
    /// `checkpoint_interval` although nothing had moved, waking a blocking thread each time.
    #[test]
    fn checkpoints_are_not_written_again_while_nothing_changes() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        fs::write(&log, vec![b'x'; 300]).unwrap();
        let file = Arc::new(File::open(&log).unwrap());
        let cps = Checkpoints::load(dir.path()).unwrap();
        assert!(cps.changed(), "never saved");
        let p = Progress::new(0);
        cps.watch(key(7), &log, Arc::clone(&p), Some(Arc::clone(&file)));
        let ack = p.register(100, 1);
        p.set_read(200, None);
        cps.save().unwrap();
        assert!(!cps.changed(), "saved, nothing moved since");
        ack.confirm();
        assert!(cps.changed(), "a confirmation moves the offset");
        cps.save().unwrap();
        assert!(!cps.changed());
        cps.follow(&(dir.path().to_path_buf(), "1.log".into()));
        assert!(cps.changed(), "a log followed");
        cps.save().unwrap();
        cps.seal(key(7));
        assert!(cps.changed(), "a file sealed");
        cps.save().unwrap();
        cps.unwatch(key(7));
        assert!(cps.changed(), "a file let go");
    }

    #[test]
    fn a_file_with_other_bytes_before_the_offset_is_not_resumed_into() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        fs::write(&log, b"banner\naaaa\n").unwrap();
        let file = Arc::new(File::open(&log).unwrap());
        let cps = Checkpoints::load(dir.path()).unwrap();
        let p = Progress::new(0);
        cps.watch(key(7), &log, Arc::clone(&p), Some(file));
        p.set_read(12, None);
        cps.save().unwrap();
        fs::write(&log, b"banner\nbbbbbbbb\n").unwrap();
        let reloaded = Checkpoints::load(dir.path()).unwrap();
        let replaced = reloaded.resume(key(7), &File::open(&log).unwrap());
        assert!(
            matches!(&replaced, Resume::Replaced(k) if k.offset == 12 && k.replaced),
            "{replaced:?}"
        );
        assert_eq!(
            reloaded.unread().len(),
            1,
            "kept to report its unread range"
        );
    }

    #[test]
    fn version_1_entries_are_resumed_by_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        fs::write(&log, vec![b'x'; 50]).unwrap();
        fs::write(
            dir.path().join(FILE_NAME),
            r#"{"version":1,"files":[{"fingerprint":"0000000000000abc","path":"/x/0.log","offset":40,"updated":"2026-01-01T00:00:00Z"}]}"#,
        )
        .unwrap();
        let cps = Checkpoints::load(dir.path()).unwrap();
        assert!(matches!(
            cps.resume(key(9), &File::open(&log).unwrap()),
            Resume::At(40)
        ));
    }

    #[test]
    fn a_corrupt_file_is_set_aside_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        let cps = Checkpoints::load(dir.path()).unwrap();
        assert!(cps.unread().is_empty());
        assert!(dir.path().join("checkpoints.json.corrupt").exists());
    }

    #[test]
    fn the_chain_point_is_saved_and_loaded_with_its_offset_and_old_files_have_none() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("0.log");
        fs::write(&log, vec![b'x'; 300]).unwrap();
        let file = Arc::new(File::open(&log).unwrap());
        let cps = Checkpoints::load(dir.path()).unwrap();
        let p = Progress::chained(0, Arc::from("seg"), "sha256", 0, [0; 32]);
        cps.watch(key(7), &log, Arc::clone(&p), Some(Arc::clone(&file)));
        let ack = p.register(100, 1);
        p.linked(100, 1, &[0; 32], &[5; 32]);
        p.set_read(200, None);
        cps.save().unwrap();
        let reloaded = Checkpoints::load(dir.path()).unwrap();
        assert!(matches!(reloaded.resume(key(7), &file), Resume::At(100)));
        let point = reloaded.chain_at(key(7), 100).unwrap();
        assert_eq!(
            (point.segment.as_str(), point.seq),
            ("seg", 0),
            "before the record at 100"
        );
        assert!(
            reloaded.chain_at(key(7), 200).is_none(),
            "only with its own offset"
        );
        ack.confirm();
        cps.save().unwrap();
        let reloaded = Checkpoints::load(dir.path()).unwrap();
        let point = reloaded.chain_at(key(7), 200).unwrap();
        assert_eq!(
            (point.seq, point.hash),
            (1, crate::integrity::hex(&[5; 32]))
        );
        // A checkpoint written before the chain existed loads, without a point.
        fs::write(
            dir.path().join(FILE_NAME),
            r#"{"version":2,"files":[{"fingerprint":"0000000000000abc","dev":1,"ino":7,"path":"/x/0.log","offset":40,"size":50,"updated":"2026-01-01T00:00:00Z"}]}"#,
        )
        .unwrap();
        let old = Checkpoints::load(dir.path()).unwrap();
        assert!(matches!(old.resume(key(7), &file), Resume::At(40)));
        assert!(old.chain_at(key(7), 40).is_none());
    }
}
