//! Checkpoints of the file source: the read position of every file, saved so that a restart
//! resumes where it stopped.
//!
//! One JSON file, `checkpoints.json` in `source.checkpoint_dir`, with a version tag:
//! `{"version":1,"files":[{"fingerprint":"…","path":"…","offset":123,"updated":"…"}]}`,
//! written through [`StateFile`] (atomic and durable).
//!
//! The saved offset of a file is [`Progress::committed`]: only lines whose records every
//! output confirmed are behind it. Entries of files that are gone are kept for a day, so a
//! file found again (a glob that also matches rotated names) is not read twice.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::store::{CheckpointError, StateFile};
use super::Checkpoint;
use crate::ack::Progress;

/// The checkpoint format version this build writes and reads.
const VERSION: u32 = 1;
const FILE_NAME: &str = "checkpoints.json";
/// How long the entry of a file no longer watched is kept.
const KEEP_FINISHED: Duration = Duration::hours(24);

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointFile {
    version: u32,
    files: Vec<Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    /// The file's fingerprint, 16 hex digits.
    fingerprint: String,
    /// The last path the file was seen at (for people; files are matched by fingerprint).
    path: String,
    offset: u64,
    updated: DateTime<Utc>,
}

#[derive(Debug)]
struct Slot {
    path: String,
    offset: u64,
    updated: DateTime<Utc>,
    /// The live progress while the file is watched or its records are in flight.
    progress: Option<Arc<Progress>>,
    watched: bool,
}

/// All checkpoints: those loaded at startup and those of the files being read.
#[derive(Debug)]
pub(crate) struct Checkpoints {
    file: StateFile,
    slots: Mutex<HashMap<u64, Slot>>,
}

impl Checkpoints {
    /// Loads the checkpoints in `dir`, creating the directory if needed.
    pub(crate) fn load(dir: &Path) -> Result<Arc<Checkpoints>, CheckpointError> {
        let file = StateFile::open(dir, FILE_NAME)?;
        let mut slots = HashMap::new();
        for e in file
            .load::<CheckpointFile>(VERSION)?
            .map_or_else(Vec::new, |f| f.files)
        {
            let Ok(fp) = u64::from_str_radix(&e.fingerprint, 16) else {
                continue;
            };
            slots.insert(
                fp,
                Slot {
                    path: e.path,
                    offset: e.offset,
                    updated: e.updated,
                    progress: None,
                    watched: false,
                },
            );
        }
        Ok(Arc::new(Checkpoints {
            file,
            slots: Mutex::new(slots),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The saved offset of a file, if it has one.
    pub(crate) fn resume(&self, fingerprint: u64) -> Option<u64> {
        self.lock().get(&fingerprint).map(|s| s.offset)
    }

    /// Starts tracking a file being read.
    pub(crate) fn watch(&self, fingerprint: u64, path: &Path, progress: Arc<Progress>) {
        self.lock().insert(
            fingerprint,
            Slot {
                path: path.display().to_string(),
                offset: progress.committed(),
                updated: Utc::now(),
                progress: Some(progress),
                watched: true,
            },
        );
    }

    /// The file was renamed.
    pub(crate) fn rename(&self, fingerprint: u64, path: &Path) {
        if let Some(slot) = self.lock().get_mut(&fingerprint) {
            slot.path = path.display().to_string();
        }
    }

    /// The file is no longer read; its entry stays while records are in flight and for a day.
    pub(crate) fn unwatch(&self, fingerprint: u64) {
        if let Some(slot) = self.lock().get_mut(&fingerprint) {
            slot.watched = false;
        }
    }
}

impl Checkpoint for Checkpoints {
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
        let now = Utc::now();
        let files = {
            let mut slots = self.lock();
            for slot in slots.values_mut() {
                if let Some(p) = &slot.progress {
                    let offset = p.committed();
                    if offset != slot.offset || slot.watched {
                        slot.offset = offset;
                        slot.updated = now;
                    }
                    if !slot.watched && p.in_flight() == 0 {
                        slot.progress = None;
                    }
                }
            }
            slots.retain(|_, s| {
                s.watched || s.progress.is_some() || now - s.updated < KEEP_FINISHED
            });
            let mut files: Vec<Entry> = slots
                .iter()
                .map(|(fp, s)| Entry {
                    fingerprint: format!("{fp:016x}"),
                    path: s.path.clone(),
                    offset: s.offset,
                    updated: s.updated,
                })
                .collect();
            files.sort_by(|a, b| a.path.cmp(&b.path).then(a.fingerprint.cmp(&b.fingerprint)));
            files
        };
        self.file.save(&CheckpointFile {
            version: VERSION,
            files,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn saved_offsets_survive_a_reload_and_only_cover_confirmed_records() {
        let dir = tempfile::tempdir().unwrap();
        let cps = Checkpoints::load(dir.path()).unwrap();
        let p = Progress::new(0);
        cps.watch(0xabc, Path::new("/x/0.log"), Arc::clone(&p));
        let ack = p.register(100, 1);
        p.set_read(200, None);
        cps.save().unwrap();
        assert_eq!(
            Checkpoints::load(dir.path()).unwrap().resume(0xabc),
            Some(100)
        );
        ack.confirm();
        cps.save().unwrap();
        assert_eq!(
            Checkpoints::load(dir.path()).unwrap().resume(0xabc),
            Some(200)
        );
        let text = fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert!(text.contains("\"version\": 1"), "{text}");
    }

    #[test]
    fn a_corrupt_file_is_set_aside_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        let cps = Checkpoints::load(dir.path()).unwrap();
        assert_eq!(cps.resume(1), None);
        assert!(dir.path().join("checkpoints.json.corrupt").exists());
    }
}
