//! Splits a byte stream into physical lines and frames them, with bounded memory.
//!
//! A line is only handed on once its `\n` has been read: a partial last line waits. A line
//! longer than the limit is dropped as it streams past (reported once as oversize) instead of
//! being buffered whole.

use std::io::{self, Read};

use super::framing::{Format, Framer};
use crate::line::{Framed, Line};

/// How much is read from the file at a time.
const READ_CHUNK: usize = 128 * 1024;
/// Room for the framing around the text (CRI timestamp, stream and tag; docker's JSON).
const FRAMING_ALLOWANCE: usize = 4096;
/// Processed bytes kept before the read position, for the check that they are still there.
const KEEP_BEHIND: usize = crate::source::identity::TAIL_MAX;

/// The physical line a framing result came from, for `check --explain`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Physical<'a> {
    /// This physical line, without its `\n`.
    Line(&'a [u8]),
    /// A physical line too long to hold, skipped as it streamed past.
    Skipped,
    /// No physical line: a partial line whose end never came, handed out as it stands.
    None,
}

/// Reads one stream (a file or stdin).
#[derive(Debug)]
pub(crate) struct LineReader {
    /// Read bytes are `buf[..end]`; the rest is room for the next read. The buffer keeps its
    /// length, so a read does not write zeros over the room before the kernel fills it.
    buf: Vec<u8>,
    /// The end of the bytes read.
    end: usize,
    /// Bytes before this index have been processed.
    start: usize,
    /// The stream offset of `buf[0]`.
    base: u64,
    /// Dropping an oversize physical line until its `\n`, which started at this offset.
    discarding: Option<u64>,
    /// The bytes after the last `\n` starting here were handed out as they stand once.
    tail_shipped: Option<u64>,
    max_physical: usize,
    pub framer: Framer,
}

impl LineReader {
    pub(crate) fn new(format: Format, max_line_bytes: usize, offset: u64) -> LineReader {
        LineReader {
            buf: Vec::with_capacity(READ_CHUNK),
            end: 0,
            start: 0,
            base: offset,
            discarding: None,
            tail_shipped: None,
            max_physical: max_line_bytes.saturating_add(FRAMING_ALLOWANCE),
            framer: Framer::new(format, max_line_bytes),
        }
    }

    /// Bytes its buffers hold (read, and partial lines being joined).
    pub(crate) fn held_bytes(&self) -> usize {
        self.buf.capacity() + self.framer.held_bytes()
    }

    /// The offset up to which every physical line has been processed.
    pub(crate) fn offset(&self) -> u64 {
        self.base + self.start as u64
    }

    /// The offset a checkpoint may move to: processed lines, less any partial line waiting for
    /// its end (a CRI `P` chunk, or a line without `\n` yet).
    pub(crate) fn floor(&self) -> Option<u64> {
        match (self.framer.floor(), self.discarding) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The bytes read last, ending at the read position: at least the last 1 KiB, unless the
    /// stream is shorter.
    pub(crate) fn recent(&self) -> &[u8] {
        &self.buf[..self.end]
    }

    /// Bytes read but not yet processed (a partial last line).
    pub(crate) fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Reads once from `src`. Returns the number of bytes read; 0 at end of input.
    pub(crate) fn fill(&mut self, src: &mut impl Read) -> io::Result<usize> {
        let done = self.start.saturating_sub(KEEP_BEHIND);
        if done > 0 {
            self.buf.copy_within(done..self.end, 0);
            self.base += done as u64;
            self.start -= done;
            self.end -= done;
        }
        let len = self.end;
        if self.buf.len() < len + READ_CHUNK {
            self.buf.resize(len + READ_CHUNK, 0);
        }
        let n = loop {
            match src.read(&mut self.buf[len..len + READ_CHUNK]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        self.end = len + n;
        Ok(n)
    }

    /// Gives back the last `n` bytes [`LineReader::fill`] read (they were not the file's any
    /// more: it was replaced under the read).
    pub(crate) fn unfill(&mut self, n: usize) {
        self.end = self.end.saturating_sub(n).max(self.start);
    }

    /// Frames every complete line in the buffer. `f` gets each framing result and the offset
    /// just past the physical line it came from.
    pub(crate) fn drain(&mut self, mut f: impl FnMut(Framed<'_>, u64)) {
        self.drain_physical(|_, framed, end| f(framed, end));
    }

    /// As [`LineReader::drain`], and `f` also gets the physical line (`check --explain`):
    /// called exactly once per physical line, in order.
    pub(crate) fn drain_physical(&mut self, mut f: impl FnMut(Physical<'_>, Framed<'_>, u64)) {
        let LineReader {
            buf,
            end,
            start,
            base,
            discarding,
            max_physical,
            framer,
            ..
        } = self;
        let buf = &buf[..*end];
        while let Some(nl) = memchr::memchr(b'\n', &buf[*start..]) {
            let line_start = *start;
            let line_end = line_start + nl;
            *start = line_end + 1;
            let end_offset = *base + *start as u64;
            if let Some(offset) = discarding.take() {
                f(
                    Physical::Skipped,
                    Framed::Oversize {
                        offset,
                        unterminated: false,
                    },
                    end_offset,
                );
                continue;
            }
            let offset = *base + line_start as u64;
            if nl > *max_physical {
                f(
                    Physical::Skipped,
                    Framed::Oversize {
                        offset,
                        unterminated: false,
                    },
                    end_offset,
                );
                continue;
            }
            let physical = &buf[line_start..line_end];
            let framed = framer.frame(physical, offset);
            f(Physical::Line(physical), framed, end_offset);
        }
        // No newline in what is left: if it is already too long, stop holding it.
        if buf.len() - *start > *max_physical {
            if discarding.is_none() {
                *discarding = Some(*base + *start as u64);
            }
            *start = buf.len();
        }
    }

    /// Something waits for an end that may still come, and must not be lost should it not
    /// (a drain, an expired partial line): hands it out as it stands, marked unterminated,
    /// without ending it, each once: the bytes after the last `\n` of a raw stream, and the
    /// framing's partial lines. The checkpoint stays before them, so after a restart they are
    /// read again and join their end if it came.
    pub(crate) fn snapshot_unterminated(&mut self, mut f: impl FnMut(Framed<'_>, u64)) {
        let end = self.base + self.end as u64;
        let tail_start = self.base + self.start as u64;
        let raw = matches!(self.framer.format(), Format::Raw | Format::Auto);
        if raw
            && self.buffered() > 0
            && self.discarding.is_none()
            && self.tail_shipped != Some(tail_start)
        {
            self.tail_shipped = Some(tail_start);
            f(
                Framed::Line(Line {
                    text: &self.buf[self.start..self.end],
                    stream: None,
                    time: None,
                    offset: tail_start,
                    unterminated: true,
                    id_position: None,
                }),
                end,
            );
        }
        self.framer.snapshot_unterminated(|framed| f(framed, end));
    }

    /// The end of what waits for one is not coming (the input ended, a drain, a released file,
    /// an expired partial line): hands out, as it stands and marked unterminated, the bytes
    /// after the last `\n` and every partial line of the framing. `f` gets each and the offset
    /// just past what has been read.
    pub(crate) fn flush_unterminated(&mut self, mut f: impl FnMut(Framed<'_>, u64)) {
        self.flush_physical(|_, framed, end| {
            // A last `P` chunk without its `\n` is held by the framing, handed out below.
            if !matches!(framed, Framed::Pending) {
                f(framed, end)
            }
        });
    }

    /// As [`LineReader::flush_unterminated`], and `f` also gets the physical line each result
    /// came from (`check --explain`): the bytes after the last `\n` are one (a partial chunk
    /// among them is passed on as [`Framed::Pending`]); a partial line of the framing is none.
    pub(crate) fn flush_physical(&mut self, mut f: impl FnMut(Physical<'_>, Framed<'_>, u64)) {
        let LineReader {
            buf,
            end: filled,
            start,
            base,
            discarding,
            framer,
            ..
        } = self;
        let buf = &buf[..*filled];
        let end = *base + buf.len() as u64;
        if *start < buf.len() {
            let tail = *start;
            *start = buf.len();
            match discarding.take() {
                Some(offset) => f(
                    Physical::Skipped,
                    Framed::Oversize {
                        offset,
                        unterminated: true,
                    },
                    end,
                ),
                None => {
                    let physical = &buf[tail..];
                    match framer.frame(physical, *base + tail as u64) {
                        Framed::Line(mut line) => {
                            line.unterminated = true;
                            f(Physical::Line(physical), Framed::Line(line), end)
                        }
                        Framed::Oversize { offset, .. } => f(
                            Physical::Line(physical),
                            Framed::Oversize {
                                offset,
                                unterminated: true,
                            },
                            end,
                        ),
                        // A `P` chunk without its `\n`: the framing holds it, handed out below.
                        Framed::Pending => f(Physical::Line(physical), Framed::Pending, end),
                    }
                }
            }
        }
        while let Some(framed) = framer.take_unterminated() {
            f(Physical::None, framed, end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(reader: &mut LineReader, input: &[u8]) -> Vec<String> {
        let mut src = input;
        let mut out = Vec::new();
        while reader.fill(&mut src).unwrap() > 0 {
            reader.drain(|framed, end| match framed {
                Framed::Line(l) => out.push(format!(
                    "{}..{}:{}",
                    l.offset,
                    end,
                    String::from_utf8_lossy(l.text)
                )),
                Framed::Oversize { offset, .. } => out.push(format!("oversize@{offset}..{end}")),
                Framed::Pending => {}
            });
        }
        out
    }

    #[test]
    fn lines_offsets_crlf_and_a_partial_last_line() {
        let mut r = LineReader::new(Format::Raw, 100, 0);
        let out = collect(&mut r, b"a\r\nbb\n\nccc");
        assert_eq!(out, vec!["0..3:a\r", "3..6:bb", "6..7:"]);
        assert_eq!(r.offset(), 7);
        assert_eq!(
            r.buffered(),
            3,
            "the partial last line waits for its newline"
        );
    }

    #[test]
    fn a_huge_line_streams_past_in_bounded_memory() {
        let max = 1000;
        let mut r = LineReader::new(Format::Raw, max, 0);
        let mut input = b"ok\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 10 * 1024 * 1024));
        input.extend_from_slice(b"\nafter\n");
        let out = collect(&mut r, &input);
        assert_eq!(
            out,
            vec![
                "0..3:ok".to_string(),
                format!("oversize@3..{}", 3 + 10 * 1024 * 1024 + 1),
                format!("{}..{}:after", 10485764, 10485770)
            ]
        );
        assert!(
            r.buf.capacity() < max + FRAMING_ALLOWANCE + 2 * READ_CHUNK,
            "capacity {}",
            r.buf.capacity()
        );
    }
}
