//! The values that flow between the stages: a logical line of the container's output
//! ([`Line`], what the framer made of a physical line: [`Framed`]), the stream it came from
//! ([`StreamInfo`]), and the counts of what happened to lines ([`Stats`]).
//!
//! Sources produce them, the [`crate::pipeline`] processor consumes them; they sit on the
//! ground floor so that neither has to import the other's types.

use serde::Serialize;

/// Which output stream of the container a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn parse(s: &[u8]) -> Option<Stream> {
        match s {
            b"stdout" => Some(Stream::Stdout),
            b"stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }
}

/// A logical line.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    pub text: &'a [u8],
    pub stream: Option<Stream>,
    /// The runtime's timestamp as written (CRI, docker), for the envelope's `source.time`.
    pub time: Option<&'a str>,
    /// Offset of the first byte of the line's first physical line.
    pub offset: u64,
    /// The line's end never came (a last `P` chunk, a docker chunk without `\n`, a file's
    /// last bytes without `\n`): it is processed as it stands, at a drain, when its file is
    /// released, or after `source.partial_line_expiry`.
    pub unterminated: bool,
    /// Where the line is, for its record id, when the byte offset is not stable: a line the
    /// Kubernetes API serves again after a reconnect or restart starts at another offset, so
    /// that source sets this from the line's timestamp and how many lines before it carried
    /// the same one. `None`: the id uses `offset`.
    pub id_position: Option<u64>,
}

/// What the framer made of a physical line.
#[derive(Debug, Clone, Copy)]
pub enum Framed<'a> {
    /// A complete logical line.
    Line(Line<'a>),
    /// A logical line that exceeded the limit, starting at this offset (`unterminated`: its
    /// end never came, see [`Line::unterminated`]).
    Oversize { offset: u64, unterminated: bool },
    /// A partial chunk was stored; nothing to process yet.
    Pending,
}

/// What happened to the lines of a run.
/// `lines + incomplete = ordinary + audit + invalid + oversize + partials` and
/// `audit = shipped + filtered_out` (in `run`, `shipped` counts records handed to the outputs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Physical lines read (what `wc -l` counts). With `incomplete`:
    /// `lines + incomplete = ordinary + audit + invalid + oversize + partials`.
    pub lines: u64,
    /// Logical lines from the container's stdout and stderr (CRI and docker framing).
    pub stdout: u64,
    pub stderr: u64,
    /// Bytes read from the input.
    pub bytes: u64,
    /// Lines that are not audit records.
    pub ordinary: u64,
    /// Audit records found.
    pub audit: u64,
    /// Audit records passed on to the outputs.
    pub shipped: u64,
    /// Audit records dropped by the type filter.
    pub filtered_out: u64,
    /// Lines that looked like audit records but were not valid JSON or UTF-8.
    pub invalid: u64,
    /// Of `invalid`, those that were not valid UTF-8.
    pub invalid_utf8: u64,
    /// Lines longer than `source.max_line_bytes`.
    pub oversize: u64,
    /// Physical lines that are a partial chunk (CRI `P`, docker without `\n`) of a longer line;
    /// the line is counted once, at its final chunk.
    pub partials: u64,
    /// Physical lines that did not fit the framing (processed as raw text).
    pub malformed: u64,
    /// Files that shrank and were read again from the start.
    pub truncations: u64,
    /// Files renamed away by rotation.
    pub rotations: u64,
    /// Partial lines (CRI `P`, docker chunks, a last line without `\n`) whose end never came:
    /// processed as they stood, marked unterminated.
    pub incomplete: u64,
    /// Byte ranges that could no longer be read, each shipped as a gap record.
    pub gaps: u64,
    /// The bytes of those ranges.
    pub gap_bytes: u64,
}

/// Where a processed line came from, fixed per stream.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    pub file: String,
    pub identity: u64,
    /// The pre-serialised `kubernetes` object spliced into this stream's envelopes.
    pub kubernetes: Option<std::sync::Arc<str>>,
    /// The pod's uid, when known (a possible Kafka key).
    pub pod_uid: Option<std::sync::Arc<str>>,
}

impl StreamInfo {
    /// A stream without pod metadata.
    pub fn new(file: impl Into<String>, identity: u64) -> StreamInfo {
        StreamInfo {
            file: file.into(),
            identity,
            kubernetes: None,
            pod_uid: None,
        }
    }
}
