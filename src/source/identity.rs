//! Which file is which: a file is known by a fingerprint of its first line, not by its path
//! (rotation renames it) nor its inode alone (inodes are reused).

use std::io::{self, Read, Seek, SeekFrom};

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
