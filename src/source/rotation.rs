//! What rotation leaves behind, and how to read it again.
//!
//! The kubelet renames `0.log` to `0.log.<YYYYMMDD-HHMMSS>` (the runtime then reopens
//! `0.log`), gzips that file at the next rotation (`0.log.<ts>.gz`, via a `.tmp` file that is
//! renamed) and deletes the oldest beyond `containerLogMaxFiles`; docker's json-file driver
//! shifts `<f>.1`, `<f>.2`… (newest first), optionally gzipped. These are the *siblings* of a
//! file: same directory, name starting with the file's base name and a dot.
//!
//! After a restart, a file the checkpoints know may only exist as such a sibling, perhaps
//! compressed: its unread tail is read from there, before the live file, so that a restart
//! between a rotation and the read loses nothing.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

/// The directory and base name of a log file: `0.log` for `0.log`, `0.log.20240101-120000`
/// and `0.log.20240101-120000.gz`; `<id>-json.log` for `<id>-json.log.1`.
pub(crate) fn base_of(path: &Path) -> Option<(PathBuf, String)> {
    let dir = path.parent()?.to_path_buf();
    let name = path.file_name()?.to_str()?;
    let base = match name.find(".log") {
        Some(i) => &name[..i + ".log".len()],
        None => name,
    };
    Some((dir, base.to_owned()))
}

/// The rotated siblings of `base` in `dir`, oldest first (kubelet timestamps sort by name;
/// docker's numbers count down from the newest). Temporary files (`.tmp`) are left out: the
/// kubelet is still writing them.
pub(crate) fn siblings(dir: &Path, base: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let prefix = format!("{base}.");
    let mut found: Vec<(SortKey, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let suffix = name.strip_prefix(&prefix)?;
            if suffix.is_empty() || suffix.ends_with(".tmp") {
                return None;
            }
            Some((sort_key(suffix), e.path()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, path)| path).collect()
}

/// Orders siblings oldest first.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum SortKey {
    /// Docker's `.N`: a higher number is older.
    Numbered(std::cmp::Reverse<u64>),
    /// The kubelet's timestamp (and anything else): by name.
    Named(String),
}

fn sort_key(suffix: &str) -> SortKey {
    let stem = suffix.strip_suffix(".gz").unwrap_or(suffix);
    match stem.parse::<u64>() {
        Ok(n) if !stem.starts_with('0') || stem == "0" => SortKey::Numbered(std::cmp::Reverse(n)),
        _ => SortKey::Named(stem.to_owned()),
    }
}

/// Whether the file is gzip-compressed (by its name, as the kubelet and docker name them).
pub(crate) fn is_gzip(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "gz")
}

/// A gzip-compressed file, decompressed as it is read.
pub(crate) fn open_gzip(path: &Path) -> io::Result<MultiGzDecoder<File>> {
    Ok(MultiGzDecoder::new(File::open(path)?))
}

/// Reads and drops `n` bytes of `src` (to position a stream that cannot seek). Returns how
/// many there were (fewer at its end).
pub(crate) fn skip(src: &mut impl Read, n: u64) -> io::Result<u64> {
    io::copy(&mut src.take(n), &mut io::sink())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn base_names_and_siblings_oldest_first() {
        assert_eq!(
            base_of(Path::new("/p/app/0.log.20240101-120000.gz")),
            Some((PathBuf::from("/p/app"), "0.log".to_owned()))
        );
        assert_eq!(
            base_of(Path::new("/d/abc-json.log.2")).map(|b| b.1),
            Some("abc-json.log".to_owned())
        );
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "0.log",
            "0.log.20240101-130000",
            "0.log.20240101-120000.gz",
            "0.log.20240101-140000.gz.tmp",
            "1.log",
            "x-json.log.1",
            "x-json.log.2.gz",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let names = |base| -> Vec<String> {
            siblings(dir.path(), base)
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(
            names("0.log"),
            ["0.log.20240101-120000.gz", "0.log.20240101-130000"]
        );
        assert_eq!(names("x-json.log"), ["x-json.log.2.gz", "x-json.log.1"]);
    }

    #[test]
    fn a_compressed_sibling_reads_from_an_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log.1.gz");
        let mut gz = flate2::write::GzEncoder::new(
            File::create(&path).unwrap(),
            flate2::Compression::default(),
        );
        gz.write_all(b"first\nsecond\n").unwrap();
        gz.finish().unwrap();
        assert!(is_gzip(&path));
        let mut src = open_gzip(&path).unwrap();
        assert_eq!(skip(&mut src, 6).unwrap(), 6);
        let mut rest = String::new();
        src.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "second\n");
    }
}
