//! Checkpoints: the read position of every file, saved so that a restart resumes where it
//! stopped.
//!
//! One JSON file, `checkpoints.json` in `source.checkpoint_dir`, with a version tag:
//! `{"version":1,"files":[{"fingerprint":"…","path":"…","offset":123,"updated":"…"}]}`.
//! It is written to a temporary file, fsynced, and renamed over the old one (then the
//! directory is fsynced), so a crash leaves either the old or the new file, never a torn one.
//!
//! The saved offset of a file is [`Progress::committed`]: only lines whose records every
//! output confirmed are behind it. Entries of files that are gone are kept for a day, so a
//! file found again (a glob that also matches rotated names) is not read twice.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

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
pub struct Checkpoints {
    dir: PathBuf,
    slots: Mutex<HashMap<u64, Slot>>,
    /// One save at a time: two writers of the temporary file would rename each other's away.
    saving: Mutex<()>,
}

/// Why checkpoints could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint directory {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Checkpoints {
    /// Loads the checkpoints in `dir`, creating the directory if needed. An unreadable or
    /// corrupt checkpoint file is moved aside with a warning: re-reading files may repeat
    /// records (with the same ids) but never loses them.
    pub fn load(dir: &Path) -> Result<Arc<Checkpoints>, CheckpointError> {
        let io_err = |source| CheckpointError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(io_err)?;
        let path = dir.join(FILE_NAME);
        let mut slots = HashMap::new();
        match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<CheckpointFile>(&bytes) {
                Ok(file) if file.version == VERSION => {
                    for e in file.files {
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
                }
                Ok(file) => {
                    tracing::warn!(version = file.version, path = %path.display(), "checkpoint file has an unknown version; starting without checkpoints");
                    set_aside(&path);
                }
                Err(e) => {
                    tracing::warn!(error = %e, path = %path.display(), "checkpoint file is corrupt; it is kept as checkpoints.json.corrupt and files are read from their start");
                    set_aside(&path);
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        // Fail now, not at the first save, when the directory is not writable.
        let probe = dir.join(".write-test");
        File::create(&probe).map_err(io_err)?;
        let _ = fs::remove_file(&probe);
        Ok(Arc::new(Checkpoints {
            dir: dir.to_path_buf(),
            slots: Mutex::new(slots),
            saving: Mutex::new(()),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The saved offset of a file, if it has one.
    pub fn resume(&self, fingerprint: u64) -> Option<u64> {
        self.lock().get(&fingerprint).map(|s| s.offset)
    }

    /// Starts tracking a file being read.
    pub fn watch(&self, fingerprint: u64, path: &Path, progress: Arc<Progress>) {
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
    pub fn rename(&self, fingerprint: u64, path: &Path) {
        if let Some(slot) = self.lock().get_mut(&fingerprint) {
            slot.path = path.display().to_string();
        }
    }

    /// The file is no longer read; its entry stays while records are in flight and for a day.
    pub fn unwatch(&self, fingerprint: u64) {
        if let Some(slot) = self.lock().get_mut(&fingerprint) {
            slot.watched = false;
        }
    }

    /// Records handed to outputs and not yet confirmed, over every file.
    pub fn in_flight(&self) -> usize {
        self.lock()
            .values()
            .filter_map(|s| s.progress.as_ref())
            .map(|p| p.in_flight())
            .sum()
    }

    /// Writes every checkpoint, atomically.
    pub fn save(&self) -> Result<(), CheckpointError> {
        let _saving = self.saving.lock().unwrap_or_else(|e| e.into_inner());
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
        let body = serde_json::to_vec_pretty(&CheckpointFile {
            version: VERSION,
            files,
        })
        .map_err(|e| self.io(io::Error::other(e)))?;
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            fs::rename(&tmp, self.dir.join(FILE_NAME))?;
            // The rename is durable once the directory is.
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| self.io(e))
    }

    fn io(&self, source: io::Error) -> CheckpointError {
        CheckpointError::Io {
            dir: self.dir.clone(),
            source,
        }
    }
}

fn set_aside(path: &Path) {
    let _ = fs::rename(path, path.with_extension("json.corrupt"));
}

#[cfg(test)]
mod tests {
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
