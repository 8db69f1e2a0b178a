//! What the tailer finds besides the live files: rotated siblings of files the checkpoints
//! know (after a restart), and the copy a copy-truncate left (while running).
//!
//! After a restart, a known file that now exists only as a rotated sibling is read from its
//! checkpoint, before the live file; siblings no checkpoint knows are read from their start
//! when they were rotated after a known one, or written after the last checkpoint of their
//! container; a compressed sibling that repeats an uncompressed one (docker writes `.1.gz`
//! from `.1`) is left alone. A known file that is gone with bytes unread, or whose content
//! was replaced, is reported by a gap record, once.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::watched::{Handle, Start, Watched};
use super::FileTailer;
use crate::ack::Progress;
use crate::line::StreamInfo;
use crate::pipeline::Gap;
use crate::source::chain::SegmentChain;
use crate::source::checkpoint::Known;
use crate::source::identity::{fingerprint_head, read_head, FileKey, Tail};
use crate::source::rotation;

/// A rotated sibling found at startup.
struct Sibling {
    watched: Watched,
    /// The checkpoint entry it is the file of.
    known: Option<Known>,
    fingerprint: u64,
    modified: chrono::DateTime<chrono::Utc>,
}

impl FileTailer {
    /// At startup, after the live files claimed their checkpoints: rotated siblings of the
    /// files the checkpoints know, read first; known files gone unread, reported.
    pub(super) fn resume_rotated(&mut self) {
        let mut by_base: HashMap<(PathBuf, String), Vec<Known>> = HashMap::new();
        // Container logs followed before, though no file of theirs has a checkpoint (they were
        // empty): their siblings rotated since are read too.
        let followed: HashMap<(PathBuf, String), chrono::DateTime<chrono::Utc>> =
            self.checkpoints.followed_before().iter().cloned().collect();
        for base in followed.keys() {
            by_base.entry(base.clone()).or_default();
        }
        // Logs of a followed container never known at all (a container restarted as `1.log`
        // and rotated while auditrail was down): their rotated siblings are read, those
        // written in the time a checkpoint of them would have been kept.
        let never_known = self.never_known_bases();
        let recent = chrono::Utc::now() - crate::source::checkpoint::KEEP_FINISHED;
        for base in &never_known {
            by_base.entry(base.clone()).or_default();
        }
        for known in self.checkpoints.unread() {
            if known.replaced {
                // Its content is gone: only its gap remains to be reported.
                if !known.done {
                    self.report_lost(&known, "truncated");
                }
                continue;
            }
            if let Some(base) = rotation::base_of(&known.path) {
                by_base.entry(base).or_default().push(known);
            }
        }
        let live: BTreeSet<PathBuf> = self
            .watched
            .iter()
            .filter_map(|w| std::fs::canonicalize(&w.path).ok())
            .collect();
        let mut rotated = Vec::new();
        for ((dir, base), unread) in by_base {
            let last_update = unread
                .iter()
                .map(|k| k.updated)
                .chain(followed.get(&(dir.clone(), base.clone())).copied())
                .chain(
                    never_known
                        .contains(&(dir.clone(), base.clone()))
                        .then_some(recent),
                )
                .max();
            let list = || {
                rotation::siblings(&dir, &base)
                    .into_iter()
                    .filter(|p| !live.contains(p))
                    .collect()
            };
            let (siblings, unread) = open_siblings(list, unread);
            let newest_known = siblings.iter().rposition(|s| s.known.is_some());
            let plain_fingerprints: BTreeSet<u64> = siblings
                .iter()
                .filter(|s| matches!(s.watched.handle, Handle::Plain(_)))
                .map(|s| s.fingerprint)
                .collect();
            for (i, mut sibling) in siblings.into_iter().enumerate() {
                let compressed = matches!(sibling.watched.handle, Handle::Gzip(_));
                let read = match &sibling.known {
                    Some(_) => true,
                    // A compressed copy of a file read uncompressed.
                    None if compressed && plain_fingerprints.contains(&sibling.fingerprint) => {
                        false
                    }
                    None => {
                        newest_known.is_some_and(|k| i > k)
                            || last_update.is_none_or(|u| sibling.modified > u)
                    }
                };
                if let (Some(known), Start::At(offset, _)) = (&sibling.known, sibling.watched.start)
                {
                    if offset < known.offset {
                        // The compressed copy could not be read up to the checkpoint.
                        self.report_lost(known, "unreadable");
                        continue;
                    }
                }
                if read {
                    tracing::info!(path = %sibling.watched.path.display(), "reading a rotated file after a restart");
                    // Only a compressed copy is surely written no more; an uncompressed one
                    // may still get the runtime's last writes before it reopens its log.
                    sibling.watched.writer_gone = compressed;
                    sibling.watched.rotated_at = Some(Instant::now());
                    rotated.push(sibling.watched);
                }
            }
            // Gone with bytes unread, or perhaps grown after its last save (not let go, and its
            // runtime could still write to it).
            for gone in unread
                .iter()
                .filter(|k| k.offset < k.size || !(k.done || k.sealed))
            {
                self.report_lost(gone, "deleted");
            }
        }
        let n = rotated.len();
        for w in &rotated {
            if !w.writer_gone {
                self.watch_file(&w.path);
            }
        }
        rotated.append(&mut self.watched);
        self.watched = rotated;
        for i in 0..n {
            self.start_file(i);
        }
    }

    /// Logs (directory and base name) with rotated files in the directories the checkpoints
    /// knew at startup, of which they knew no file, and which are logs auditrail follows: a
    /// pattern matches the live log's path, or it is a kubelet container log (`<n>.log`) in a
    /// directory of one (the patterns may name the `/var/log/containers` links instead).
    fn never_known_bases(&self) -> BTreeSet<(PathBuf, String)> {
        let known = &self.known_bases;
        let patterns: Vec<glob::Pattern> = self
            .config
            .paths
            .iter()
            .filter_map(|p| glob::Pattern::new(p).ok())
            .collect();
        let container_log = |base: &str| {
            base.strip_suffix(".log")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        };
        let followed = |(dir, base): &(PathBuf, String)| {
            let live = dir.join(base);
            if self.exclude.iter().any(|p| p.matches_path(&live)) {
                return false;
            }
            patterns.iter().any(|p| p.matches_path(&live))
                || (container_log(base) && known.iter().any(|(d, b)| d == dir && container_log(b)))
        };
        let mut found = BTreeSet::new();
        for dir in &self.known_dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Some(base) = rotation::base_of(&path) else {
                    continue;
                };
                let rotated = path.file_name().and_then(|n| n.to_str()) != Some(&base.1);
                if rotated && !known.contains(&base) && followed(&base) {
                    found.insert(base);
                }
            }
        }
        found
    }

    /// A known file is gone (or its content replaced) with `[offset, size)` unread: ships a
    /// gap record for it. Its checkpoint moves past the range once the record is confirmed,
    /// so it is reported once.
    pub(super) fn report_lost(&mut self, gone: &Known, reason: &'static str) {
        let processor = self.context.processor();
        // The gap is the next link of the gone file's chain, from where its checkpoint left
        // it.
        let mut chain = processor.chain().map(|hasher| {
            let stream = match rotation::base_of(&gone.path) {
                Some((dir, base)) => dir.join(base).display().to_string(),
                None => gone.path.display().to_string(),
            };
            let identity = format!("{:016x}", gone.key.fingerprint);
            let saved = self.checkpoints.chain_at(gone.key, gone.offset);
            SegmentChain::resume(Arc::clone(hasher), &stream, &identity, gone.offset, saved)
        });
        let progress = match &chain {
            Some(chain) => chain.progress(gone.offset),
            None => Progress::new(gone.offset),
        };
        self.checkpoints.report_gone(gone, Arc::clone(&progress));
        let info = StreamInfo::new(gone.path.display().to_string(), gone.key.fingerprint);
        let gap = Gap {
            reason,
            start: gone.offset,
            end: gone.size.max(gone.offset),
            end_known: false,
        };
        let mut record = processor.gap(&info, gap, &mut self.local, |offset, outputs| {
            progress.register(offset, outputs)
        });
        if let Some(chain) = &mut chain {
            // Without digests: the gone file's chain ends with this gap record.
            let _ = chain.link(&mut record, Some(&progress));
        }
        progress.set_read(gap.end, None);
        self.batch.push(record);
    }

    /// File `i` was just found rotated. Should the kubelet have rotated more than once since
    /// the last look (reading was held back), the files rotated after it are read too, after
    /// it: found among its siblings after its own rotated name.
    pub(super) fn adopt_newer_siblings(&mut self, i: usize) {
        let w = &self.watched[i];
        let (Some((dir, base)), Some(key)) = (w.base.clone(), w.key) else {
            return;
        };
        let own = w.dev_ino;
        let siblings = rotation::siblings(&dir, &base);
        let is_self = |path: &Path| -> bool {
            let Ok(meta) = std::fs::metadata(path) else {
                return false;
            };
            if (meta.dev(), meta.ino()) == own {
                return true;
            }
            rotation::is_gzip(path)
                && rotation::open_gzip(path)
                    .and_then(|mut gz| read_head(&mut gz))
                    .is_ok_and(|head| fingerprint_head(&head) == Some(key.fingerprint))
        };
        let Some(at) = siblings.iter().position(|p| is_self(p)) else {
            return;
        };
        let mut adopted = Vec::new();
        for path in &siblings[at + 1..] {
            let Ok(meta) = std::fs::metadata(path) else {
                continue;
            };
            let dev_ino = (meta.dev(), meta.ino());
            if self.watched.iter().any(|o| o.dev_ino == dev_ino) {
                continue;
            }
            let watched = if rotation::is_gzip(path) {
                let head = rotation::open_gzip(path).and_then(|mut gz| read_head(&mut gz));
                let Some(fingerprint) = head.ok().and_then(|h| fingerprint_head(&h)) else {
                    continue;
                };
                let Ok(gz) = rotation::open_gzip(path) else {
                    continue;
                };
                let key = FileKey {
                    dev: dev_ino.0,
                    ino: dev_ino.1,
                    fingerprint,
                    generation: 0,
                };
                let mut w = Watched::new(
                    path.clone(),
                    Handle::Gzip(Box::new(gz)),
                    dev_ino,
                    Start::At(0, key),
                );
                w.writer_gone = true;
                w
            } else {
                match Watched::open(path, Start::Checkpoint) {
                    Ok(w) => w,
                    Err(_) => continue,
                }
            };
            tracing::info!(path = %path.display(), "reading a file rotated away before it was seen");
            adopted.push(watched);
        }
        for (k, mut watched) in adopted.into_iter().enumerate() {
            watched.rotated_at = Some(Instant::now());
            if !watched.writer_gone {
                // Its runtime may write its last lines to it before it reopens its log.
                self.watch_file(&watched.path);
            }
            self.watched.insert(i + 1 + k, watched);
            self.start_file(i + 1 + k);
        }
    }

    /// File `i` shrank or was rewritten. A copy-truncate left its old content in a sibling
    /// (`0.log.1`): the copy starts with the same first line and holds the bytes read so far.
    /// Found, it is read from where file `i` was, as a file nothing writes to. Returns
    /// whether it was found.
    pub(super) fn read_the_copy(&mut self, i: usize) -> bool {
        let w = &self.watched[i];
        let (Some((dir, base)), Some(key), Some(reader)) = (&w.base, w.key, &w.reader) else {
            return false;
        };
        let position = reader.position();
        let tail = w.tail;
        let own = w.dev_ino;
        for path in rotation::siblings(dir, base) {
            if rotation::is_gzip(&path) {
                continue;
            }
            let Ok(mut copy) = Watched::open(&path, Start::Beginning) else {
                continue;
            };
            if copy.dev_ino == own || self.watched.iter().any(|o| o.dev_ino == copy.dev_ino) {
                continue;
            }
            let same = copy.identify().ok().flatten().is_some_and(|k| {
                k.fingerprint == key.fingerprint
                    && copy
                        .file()
                        .is_some_and(|f| tail.holds(f, position).unwrap_or(false))
            });
            if !same {
                continue;
            }
            let copy_key = FileKey {
                dev: copy.dev_ino.0,
                ino: copy.dev_ino.1,
                fingerprint: key.fingerprint,
                generation: 0,
            };
            tracing::info!(path = %path.display(), offset = position, "reading the rest of a copy-truncated file from its copy");
            copy.start = Start::At(position, copy_key);
            copy.writer_gone = true;
            copy.rotated_at = Some(Instant::now());
            self.watched.insert(i, copy);
            self.start_file(i);
            return true;
        }
        false
    }
}

/// How many times the siblings of a file are listed again when one vanished between the
/// listing and its open.
const LIST_ATTEMPTS: usize = 5;

/// Opens the rotated siblings `list` gives (oldest first): the siblings, and the entries of
/// `unread` none of them is. A sibling gone between the listing and its open was most likely
/// compressed meanwhile (the kubelet writes `.gz`, then removes the original): the siblings
/// are listed again, so that its checkpoint finds the compressed copy rather than being
/// reported as a file deleted unread.
fn open_siblings(
    mut list: impl FnMut() -> Vec<PathBuf>,
    unread: Vec<Known>,
) -> (Vec<Sibling>, Vec<Known>) {
    let mut attempt = 1;
    loop {
        let mut left = unread.clone();
        let mut siblings = Vec::new();
        let mut vanished = false;
        for path in list() {
            match open_sibling(&path, &mut left) {
                Ok(Some(sibling)) => siblings.push(sibling),
                Ok(None) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempt < LIST_ATTEMPTS => {
                    tracing::debug!(path = %path.display(), "a rotated file vanished while listed; listing again");
                    vanished = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, path = %path.display(), "cannot read a rotated file")
                }
            }
        }
        if !vanished {
            return (siblings, left);
        }
        attempt += 1;
    }
}

/// Opens a rotated sibling and tells whether it is one of `unread` (by device, inode and first
/// line; a compressed copy by its first line; an entry of a version 1 file by its first line):
/// a matched entry is taken out of `unread`, and the sibling positioned at its checkpoint.
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
        let known = take_known(unread, |k| k.key.fingerprint == fingerprint);
        let own_key = FileKey {
            dev: dev_ino.0,
            ino: dev_ino.1,
            fingerprint,
            generation: 0,
        };
        let (offset, key) = known.as_ref().map_or((0, own_key), |k| (k.offset, k.key));
        let mut gz = rotation::open_gzip(path)?;
        // Positioned as far as it can be read: short of the checkpoint, the rest is lost.
        let reached = rotation::skip(&mut gz, offset).unwrap_or(0);
        let watched = Watched::new(
            path.to_path_buf(),
            Handle::Gzip(Box::new(gz)),
            dev_ino,
            Start::At(reached, key),
        );
        return Ok(Some(Sibling {
            watched,
            known,
            fingerprint,
            modified,
        }));
    }
    let mut watched = Watched::open(path, Start::Beginning)?;
    let Some(key) = watched.identify()? else {
        return Ok(None);
    };
    let known = take_known(unread, |k| {
        k.key == key || ((k.key.dev, k.key.ino) == (0, 0) && k.key.fingerprint == key.fingerprint)
    });
    if let Some(k) = &known {
        let holds = watched
            .file()
            .is_some_and(|f| Tail::read(f, k.offset).is_ok() || k.offset == 0);
        watched.start = if holds {
            Start::At(k.offset, key)
        } else {
            Start::At(0, key)
        };
    }
    Ok(Some(Sibling {
        watched,
        known,
        fingerprint: key.fingerprint,
        modified,
    }))
}

fn take_known(unread: &mut Vec<Known>, matches: impl Fn(&Known) -> bool) -> Option<Known> {
    let i = unread.iter().position(matches)?;
    Some(unread.remove(i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// The crash loop's loss: a rotated file compressed between the startup scan's listing
    /// and its open (`.gz` written, the original removed) is found as its compressed copy,
    /// not reported deleted.
    #[test]
    fn a_sibling_compressed_between_listing_and_open_is_found_compressed() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("0.log.20261123-120816");
        let gz = dir.path().join("0.log.20261123-120816.gz");
        let text = b"2026-11-23T12:08:16Z stdout F first\n2026-11-23T12:08:16Z stdout F second\n";
        std::fs::write(&plain, text).unwrap();
        let mut listings = 0;
        let list = || {
            listings += 1;
            if listings == 1 {
                // Listed uncompressed; the kubelet compresses it before it is opened.
                let mut encoder = flate2::write::GzEncoder::new(
                    std::fs::File::create(&gz).unwrap(),
                    flate2::Compression::default(),
                );
                encoder.write_all(text).unwrap();
                encoder.finish().unwrap();
                std::fs::remove_file(&plain).unwrap();
                vec![plain.clone()]
            } else {
                rotation::siblings(dir.path(), "0.log")
            }
        };
        let (siblings, unread) = open_siblings(list, Vec::new());
        assert!(unread.is_empty());
        let paths: Vec<&Path> = siblings.iter().map(|s| s.watched.path.as_path()).collect();
        assert_eq!(paths, [gz.as_path()]);
        assert!(matches!(siblings[0].watched.handle, Handle::Gzip(_)));
    }
}
