//! The one place checkpoints touch the disk: a small JSON state file, with a version tag,
//! written so that a crash leaves either the old or the new file and never a torn one.
//!
//! A save writes a temporary file, fsyncs it, renames it over the old one and fsyncs the
//! directory (the rename is only durable once the directory is). A file that cannot be read
//! back (corrupt, or of an unknown version) is moved aside with a warning: re-reading logs
//! may repeat records (with the same ids) but never loses them.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Why checkpoints cannot be read or saved.
#[derive(Debug, thiserror::Error)]
#[error("checkpoint directory {dir}")]
pub(crate) struct CheckpointError {
    dir: PathBuf,
    #[source]
    source: io::Error,
}

/// One state file in the checkpoint directory.
#[derive(Debug)]
pub(super) struct StateFile {
    dir: PathBuf,
    name: String,
    /// One save at a time: two writers of the temporary file would rename each other's away.
    saving: Mutex<()>,
}

#[derive(Deserialize)]
struct VersionTag {
    version: u32,
}

impl StateFile {
    /// The state file `name` in `dir`; the directory is created if needed and must be
    /// writable (checked now, not at the first save).
    pub(super) fn open(dir: &Path, name: &str) -> Result<StateFile, CheckpointError> {
        let file = StateFile {
            dir: dir.to_path_buf(),
            name: name.to_owned(),
            saving: Mutex::new(()),
        };
        fs::create_dir_all(dir).map_err(|e| file.error(e))?;
        let probe = dir.join(format!(".{name}.write-test"));
        File::create(&probe).map_err(|e| file.error(e))?;
        let _ = fs::remove_file(&probe);
        Ok(file)
    }

    pub(super) fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    /// The saved state, if there is one this build can read. `versions` are the formats this
    /// build reads (the one it writes, and older ones it still understands); a file of another
    /// version, or one that does not parse, is set aside.
    pub(super) fn load<T: DeserializeOwned>(
        &self,
        versions: std::ops::RangeInclusive<u32>,
    ) -> Result<Option<T>, CheckpointError> {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.error(e)),
        };
        match serde_json::from_slice::<VersionTag>(&bytes) {
            Ok(tag) if !versions.contains(&tag.version) => {
                tracing::warn!(version = tag.version, path = %path.display(), "checkpoint file has an unknown version; it is kept as .corrupt and logs are read from their start");
                self.set_aside();
                return Ok(None);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "checkpoint file is corrupt; it is kept as .corrupt and logs are read from their start");
                self.set_aside();
                return Ok(None);
            }
        }
        match serde_json::from_slice::<T>(&bytes) {
            Ok(state) => Ok(Some(state)),
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "checkpoint file is corrupt; it is kept as .corrupt and logs are read from their start");
                self.set_aside();
                Ok(None)
            }
        }
    }

    /// Writes `state` atomically and durably.
    pub(super) fn save<T: Serialize>(&self, state: &T) -> Result<(), CheckpointError> {
        let _saving = self.saving.lock().unwrap_or_else(|e| e.into_inner());
        let body = serde_json::to_vec_pretty(state).map_err(|e| self.error(io::Error::other(e)))?;
        let tmp = self.dir.join(format!("{}.tmp", self.name));
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            fs::rename(&tmp, self.path())?;
            // The rename is durable once the directory is.
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| self.error(e))
    }

    /// The device and inode of the file as it is now, if it exists: a file deleted or
    /// replaced since the last save has another (or none).
    pub(super) fn identity(&self) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(self.path()).ok().map(|m| (m.dev(), m.ino()))
    }

    /// Whether its directory is still one (not removed, not replaced): a cheap look when
    /// there is nothing new to write, so a volume gone bad is still reported.
    pub(super) fn dir_usable(&self) -> bool {
        fs::metadata(&self.dir).is_ok_and(|m| m.is_dir())
    }

    fn set_aside(&self) {
        let path = self.path();
        let _ = fs::rename(&path, self.dir.join(format!("{}.corrupt", self.name)));
    }

    fn error(&self, source: io::Error) -> CheckpointError {
        CheckpointError {
            dir: self.dir.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct State {
        version: u32,
        offset: u64,
    }

    #[test]
    fn a_saved_state_reads_back_and_nothing_temporary_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::open(dir.path(), "state.json").unwrap();
        assert_eq!(file.load::<State>(1..=1).unwrap(), None);
        let state = State {
            version: 1,
            offset: 7,
        };
        file.save(&state).unwrap();
        assert_eq!(file.load::<State>(1..=1).unwrap(), Some(state));
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["state.json"]);
    }

    #[test]
    fn a_corrupt_or_unknown_version_file_is_set_aside_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::open(dir.path(), "state.json").unwrap();
        fs::write(file.path(), b"{not json").unwrap();
        assert_eq!(file.load::<State>(1..=1).unwrap(), None);
        assert!(dir.path().join("state.json.corrupt").exists());
        fs::write(file.path(), br#"{"version": 9, "offset": 1}"#).unwrap();
        assert_eq!(file.load::<State>(1..=1).unwrap(), None);
        assert!(!file.path().exists());
    }

    #[test]
    fn a_directory_that_cannot_be_written_is_an_error_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        fs::write(&blocker, b"").unwrap();
        assert!(StateFile::open(&blocker, "state.json").is_err());
    }
}
