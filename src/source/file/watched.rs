//! One file being followed: its handle (a plain file, or a compressed rotated copy read
//! through a decoder), its identity once known, its reader, and what rotation did to it.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use flate2::read::MultiGzDecoder;

use crate::source::identity::{fingerprint, FileKey, Tail};
use crate::source::rotation;
use crate::source::stream::StreamReader;

/// How a file is read.
pub(super) enum Handle {
    Plain(Arc<File>),
    /// A gzip-compressed rotated copy (after a restart); it cannot seek, and its length is
    /// only known at its end. A decoder that failed is never read again (it may never
    /// return): the file is opened anew.
    Gzip(Box<MultiGzDecoder<File>>),
}

impl Read for Handle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Handle::Plain(file) => (&**file).read(buf),
            Handle::Gzip(gz) => gz.read(buf),
        }
    }
}

/// Where a file starts being read once it is identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    /// Its checkpoint, if one applies; else its beginning.
    Checkpoint,
    /// Its checkpoint, if one applies; else the end of its last complete line when it was
    /// found at startup (`read_from: end`, for a container no checkpoint knows).
    CheckpointOrEnd(u64),
    /// Its beginning, whatever a checkpoint says (it was truncated).
    Beginning,
    /// Here, as `key` (a rotated copy of a known file, or the copy a copy-truncate made).
    At(u64, FileKey),
}

/// One file being followed.
pub(super) struct Watched {
    /// The path it was found at (for records and logs).
    pub(super) path: PathBuf,
    /// Directory and base name (`0.log`) of the file itself, symlinks resolved: where its
    /// rotated siblings are. Files of one base are read oldest first.
    pub(super) base: Option<(PathBuf, String)>,
    pub(super) handle: Handle,
    pub(super) dev_ino: (u64, u64),
    /// The checkpoint identity, once the file has a first line.
    pub(super) key: Option<FileKey>,
    /// `None` until the file is identified and positioned.
    pub(super) reader: Option<StreamReader>,
    pub(super) start: Start,
    /// The bytes before the read position as they were read, to notice content replaced
    /// under it.
    pub(super) tail: Tail,
    pub(super) tail_checked: Instant,
    /// When the file was found missing from the matching paths (rotated or deleted).
    pub(super) rotated_at: Option<Instant>,
    /// Nothing writes to it any more (a compressed copy, the copy of a copy-truncate): it is
    /// let go as soon as it is read to its end.
    pub(super) writer_gone: bool,
    /// Its checkpoint says its size is final (rotated, and its runtime writes to a newer file).
    pub(super) sealed: bool,
    /// The last read found nothing more.
    pub(super) at_eof: bool,
    /// Reading a compressed copy failed since then (it may still be being written).
    pub(super) failing_since: Option<Instant>,
    pub(super) last_data: Instant,
    /// The file's size at the last look, for the unread range when it shrinks.
    pub(super) len_seen: u64,
    /// The enrichment version the reader's pod metadata was built from.
    pub(super) meta_version: Option<u64>,
    /// The content it held before it was truncated and written again while read: its
    /// fingerprint and the segment its records were chained in, which the new content must
    /// not number again should it begin with the same line.
    pub(super) rewritten: Option<(u64, std::sync::Arc<str>)>,
}

impl Watched {
    /// A file to follow, identified when it has a first line.
    pub(super) fn new(path: PathBuf, handle: Handle, dev_ino: (u64, u64), start: Start) -> Watched {
        let real = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        Watched {
            base: rotation::base_of(&real),
            path,
            handle,
            dev_ino,
            key: None,
            reader: None,
            start,
            tail: Tail::default(),
            tail_checked: Instant::now(),
            rotated_at: None,
            writer_gone: false,
            sealed: false,
            at_eof: false,
            failing_since: None,
            last_data: Instant::now(),
            len_seen: 0,
            meta_version: None,
            rewritten: None,
        }
    }

    /// Opens a plain file.
    pub(super) fn open(path: &Path, start: Start) -> io::Result<Watched> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        Ok(Watched::new(
            path.to_path_buf(),
            Handle::Plain(Arc::new(file)),
            (meta.dev(), meta.ino()),
            start,
        ))
    }

    /// The open file, unless it is read through a decoder.
    pub(super) fn file(&self) -> Option<&Arc<File>> {
        match &self.handle {
            Handle::Plain(file) => Some(file),
            Handle::Gzip(_) => None,
        }
    }

    /// The file's length now (`None` for a compressed copy).
    pub(super) fn len(&self) -> Option<u64> {
        self.file()?.metadata().ok().map(|m| m.len())
    }

    /// How far the file has been read (0 before it is positioned).
    pub(super) fn position(&self) -> u64 {
        self.reader.as_ref().map_or(0, StreamReader::position)
    }

    /// Whether everything the file holds has been read. A file never identified (it has no
    /// first line) is read to its end while it is empty.
    pub(super) fn read_to_end(&self) -> bool {
        if self.reader.is_none() {
            return self.len() == Some(0);
        }
        match self.len() {
            Some(len) => self.position() >= len && self.at_eof,
            None => self.at_eof,
        }
    }

    /// The key of a plain file: its device and inode with the fingerprint of its first line;
    /// `None` while it has no complete first line.
    pub(super) fn identify(&self) -> io::Result<Option<FileKey>> {
        let Some(file) = self.file() else {
            return Ok(None);
        };
        Ok(fingerprint(&mut &**file)?.map(|fingerprint| FileKey {
            dev: self.dev_ino.0,
            ino: self.dev_ino.1,
            fingerprint,
            generation: 0,
        }))
    }

    /// Positions the file at `offset`: a plain file seeks; a compressed copy is opened anew
    /// and read up to it (a decoder that failed is never used again).
    pub(super) fn seek(&mut self, offset: u64) -> io::Result<()> {
        match &self.handle {
            Handle::Plain(file) => (&**file).seek(SeekFrom::Start(offset)).map(|_| ()),
            Handle::Gzip(_) => {
                let mut gz = rotation::open_gzip(&self.path)?;
                let skipped = rotation::skip(&mut gz, offset)?;
                if skipped < offset {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the compressed file is shorter than the position",
                    ));
                }
                self.handle = Handle::Gzip(Box::new(gz));
                Ok(())
            }
        }
    }
}

/// The offset just past the last `\n` at or before `len` (0 when there is none in the last
/// 64 KiB): `read_from: end` must not start in the middle of a line being written.
pub(super) fn end_of_last_line(file: &File, len: u64) -> u64 {
    let start = len.saturating_sub(64 * 1024);
    let mut tail = Vec::new();
    let mut reader = file;
    let read = reader
        .seek(SeekFrom::Start(start))
        .and_then(|_| reader.take(len - start).read_to_end(&mut tail));
    match read {
        Ok(_) => memchr::memrchr(b'\n', &tail).map_or(start, |nl| start + nl as u64 + 1),
        Err(_) => len,
    }
}
