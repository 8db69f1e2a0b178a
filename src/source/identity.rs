//! Which file is which.
//!
//! A file is known by its device and inode (a rotation renames it, a copy-truncate keeps it)
//! together with a fingerprint of its first line (inodes are reused, and two files may start
//! with the same banner); and what was read of it is known by the bytes just before the read
//! position ([`Tail`]). A file whose bytes before the position are not those that were read
//! has been replaced (truncated and rewritten, perhaps longer than before): it is read again
//! from its start. The fingerprint, not the inode, is part of each record's id, so a line read
//! again from a renamed or compressed copy of its file keeps its id.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

/// A file as checkpoints know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileKey {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) fingerprint: u64,
    /// 0 for a file as it is; above 0 for content that was replaced under the same identity
    /// (truncated and rewritten with the same first line) while records of it were in flight.
    pub(crate) generation: u32,
}

/// How many bytes before the read position are compared: enough to hold a whole ordinary
/// line, its timestamp included (64 bytes of padding look alike in every record).
pub(crate) const TAIL_MAX: usize = 1024;

/// The bytes just before a read position, as a hash of their count and content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Tail {
    len: u16,
    hash: u64,
}

impl Tail {
    /// The tail of what was just read: the last bytes of `read` (at most 1 KiB).
    pub(crate) fn of(read: &[u8]) -> Tail {
        let bytes = &read[read.len().saturating_sub(TAIL_MAX)..];
        Tail {
            len: bytes.len() as u16,
            hash: xxhash_rust::xxh3::xxh3_64(bytes),
        }
    }

    /// The tail of `file` before `position` (1 KiB, less near the start).
    pub(crate) fn read(file: &File, position: u64) -> io::Result<Tail> {
        let len = position.min(TAIL_MAX as u64) as usize;
        Tail::read_len(file, position, len)
    }

    fn read_len(file: &File, position: u64, len: usize) -> io::Result<Tail> {
        let mut bytes = vec![0u8; len];
        file.read_exact_at(&mut bytes, position - len as u64)?;
        Ok(Tail::of(&bytes))
    }

    /// Whether `file` still holds these bytes just before `position`.
    /// An empty tail (nothing was read) holds anywhere.
    pub(crate) fn holds(&self, file: &File, position: u64) -> io::Result<bool> {
        if self.len == 0 {
            return Ok(true);
        }
        if position < u64::from(self.len) {
            return Ok(false);
        }
        match Tail::read_len(file, position, usize::from(self.len)) {
            Ok(tail) => Ok(tail == *self),
            // The file is shorter than the position now.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// For the checkpoint file: `<count>:<hash>`.
    pub(crate) fn to_text(self) -> String {
        format!("{}:{:016x}", self.len, self.hash)
    }

    pub(crate) fn from_text(text: &str) -> Option<Tail> {
        let (len, hash) = text.split_once(':')?;
        Some(Tail {
            len: len.parse().ok().filter(|l| usize::from(*l) <= TAIL_MAX)?,
            hash: u64::from_str_radix(hash, 16).ok()?,
        })
    }
}

/// How many leading bytes identify a file, at most.
pub(super) const FINGERPRINT_MAX: usize = 1024;

/// A file's identity: XXH3 of its first line (up to [`FINGERPRINT_MAX`] bytes). `None` while
/// the file has neither a complete first line nor that many bytes. The file position is
/// restored afterwards.
pub(crate) fn fingerprint(file: &mut (impl Read + Seek)) -> io::Result<Option<u64>> {
    let position = file.stream_position()?;
    file.seek(SeekFrom::Start(0))?;
    let head = read_head(file)?;
    file.seek(SeekFrom::Start(position))?;
    Ok(fingerprint_head(&head))
}

/// Reads the start of a stream: up to its first `\n`, [`FINGERPRINT_MAX`] bytes, or its end.
/// For a stream that cannot seek (stdin), the bytes read must be put back in front of it.
pub(crate) fn read_head(src: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut head = vec![0u8; FINGERPRINT_MAX];
    let mut len = 0;
    while len < head.len() && memchr::memchr(b'\n', &head[..len]).is_none() {
        match src.read(&mut head[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(len);
    Ok(head)
}

/// The identity of a stream that starts with `head` (see [`fingerprint`]).
pub(crate) fn fingerprint_head(head: &[u8]) -> Option<u64> {
    let head = &head[..head.len().min(FINGERPRINT_MAX)];
    let end = match memchr::memchr(b'\n', head) {
        Some(nl) => nl + 1,
        None if head.len() == FINGERPRINT_MAX => head.len(),
        None => return None,
    };
    Some(xxhash_rust::xxh3::xxh3_64(&head[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn a_tail_tells_the_bytes_before_a_position_and_survives_the_checkpoint_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"first\nsecond line\n").unwrap();
        let file = File::open(&path).unwrap();
        let tail = Tail::read(&file, 18).unwrap();
        assert_eq!(tail, Tail::of(b"first\nsecond line\n"));
        assert!(tail.holds(&file, 18).unwrap());
        assert!(!tail.holds(&file, 17).unwrap());
        assert_eq!(Tail::from_text(&tail.to_text()), Some(tail));
        // The same length, other bytes: rewritten in place.
        std::fs::write(&path, b"first\nsecond LINE\n").unwrap();
        assert!(!tail.holds(&File::open(&path).unwrap(), 18).unwrap());
        assert!(Tail::default().holds(&file, 0).unwrap());
    }

    #[test]
    fn fingerprint_waits_for_a_first_line_and_ignores_what_follows() {
        assert_eq!(
            fingerprint(&mut Cursor::new(b"no newline yet".to_vec())).unwrap(),
            None
        );
        let a = fingerprint(&mut Cursor::new(b"first\nsecond\n".to_vec())).unwrap();
        let b = fingerprint(&mut Cursor::new(b"first\nother\n".to_vec())).unwrap();
        let c = fingerprint(&mut Cursor::new(b"First\n".to_vec())).unwrap();
        assert!(a.is_some());
        assert_eq!(a, b);
        assert_ne!(a, c);
        let long = vec![b'x'; 5000];
        assert!(fingerprint(&mut Cursor::new(long)).unwrap().is_some());
    }
}
