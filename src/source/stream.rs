//! The one read loop every source uses: bytes of one stream in, records out.
//!
//! A [`StreamReader`] owns a stream's [`LineReader`] (physical lines, framing), where the stream
//! came from ([`StreamInfo`]) and, in `run`, its acknowledgement state ([`Progress`]). A source
//! calls [`StreamReader::fill`] with whatever it reads from (a file, a network stream, stdin)
//! and [`StreamReader::process`] to pass every complete line through the [`Processor`]: each
//! record is registered with the stream's progress before it is handed on, and the progress
//! learns how far the stream has been dealt with, so the checkpoint can only pass lines that
//! are counted or confirmed.

use std::io::{self, Read};
use std::sync::Arc;

use super::framing::Format;
use super::reader::LineReader;
use crate::ack::{Ack, Progress};
use crate::envelope::Record;
use crate::line::{Framed, Line, Stats, StreamInfo};
use crate::pipeline::{Gap, Processor};

/// One stream being read.
#[derive(Debug)]
pub(crate) struct StreamReader {
    lines: LineReader,
    /// Where the stream comes from, spliced into every record's envelope.
    pub info: StreamInfo,
    /// `None` for `check`, where nothing is acknowledged.
    progress: Option<Arc<Progress>>,
}

impl StreamReader {
    /// A stream framed as `format`, read from `offset` on.
    pub(crate) fn new(
        format: Format,
        max_line_bytes: usize,
        offset: u64,
        info: StreamInfo,
        progress: Option<Arc<Progress>>,
    ) -> StreamReader {
        StreamReader {
            lines: LineReader::new(format, max_line_bytes, offset),
            info,
            progress,
        }
    }

    /// Reads once from `src`. Returns the number of bytes read; 0 at end of input.
    pub(crate) fn fill(&mut self, src: &mut impl Read) -> io::Result<usize> {
        self.lines.fill(src)
    }

    /// Passes every complete line read so far through `processor`; records are pushed onto
    /// `records`.
    pub(crate) fn process(
        &mut self,
        processor: &Processor,
        stats: &mut Stats,
        records: &mut Vec<Record>,
    ) {
        self.process_admitted(processor, stats, records, |_| true);
    }

    /// As [`StreamReader::process`], but a line `admit` refuses is skipped, uncounted (a line
    /// the source has already dealt with before a reconnect).
    pub(crate) fn process_admitted(
        &mut self,
        processor: &Processor,
        stats: &mut Stats,
        records: &mut Vec<Record>,
        mut admit: impl FnMut(&Line<'_>) -> bool,
    ) {
        let StreamReader {
            lines,
            info,
            progress,
        } = self;
        let progress = progress.as_ref();
        lines.drain(|framed, end| {
            if let Framed::Line(line) = &framed {
                if !admit(line) {
                    return;
                }
            }
            handle(processor, info, progress, stats, records, framed, end);
        });
        if let Some(p) = progress {
            p.set_read(lines.offset(), lines.floor());
        }
        stats.malformed += std::mem::take(&mut lines.framer.malformed);
    }

    /// The end of what waits for one is not coming (the input ended, a drain, the file is
    /// released, a partial line expired): processes it as it stands, marked unterminated.
    /// Returns how many lines that was.
    pub(crate) fn flush_unterminated(
        &mut self,
        processor: &Processor,
        stats: &mut Stats,
        records: &mut Vec<Record>,
    ) -> u64 {
        let StreamReader {
            lines,
            info,
            progress,
        } = self;
        let progress = progress.as_ref();
        let mut flushed = 0;
        // Counted in `incomplete` (not `lines`) by the processor.
        lines.flush_unterminated(|framed, end| {
            flushed += 1;
            handle(processor, info, progress, stats, records, framed, end);
        });
        if let Some(p) = progress {
            p.set_read(lines.offset(), lines.floor());
        }
        stats.malformed += std::mem::take(&mut lines.framer.malformed);
        flushed
    }

    /// Whether something waits for an end that may never come: a partial line of the framing,
    /// or bytes after the last `\n`.
    pub(crate) fn has_unterminated(&self) -> bool {
        self.lines.framer.pending() > 0 || self.lines.buffered() > 0
    }

    /// Ships a gap record for `gap` of this stream, registered at its start.
    pub(crate) fn report_gap(
        &self,
        processor: &Processor,
        gap: Gap,
        stats: &mut Stats,
        records: &mut Vec<Record>,
    ) {
        let ack = |offset, outputs| register(self.progress.as_ref(), offset, outputs);
        records.push(processor.gap(&self.info, gap, stats, ack));
    }

    /// The bytes read last, ending at [`StreamReader::position`].
    pub(crate) fn recent(&self) -> &[u8] {
        self.lines.recent()
    }

    /// How far the stream has been read: processed lines plus a partial last line.
    pub(crate) fn position(&self) -> u64 {
        self.lines.offset() + self.lines.buffered() as u64
    }

    /// The acknowledgement state, in `run`.
    pub(crate) fn progress(&self) -> Option<&Arc<Progress>> {
        self.progress.as_ref()
    }
}

fn register(progress: Option<&Arc<Progress>>, offset: u64, outputs: u32) -> Ack {
    match progress {
        Some(p) => p.register(offset, outputs),
        None => Ack::none(),
    }
}

/// One framing result through the processor: a record is registered and kept; a line too long
/// to process also becomes a gap record for its byte range.
fn handle(
    processor: &Processor,
    info: &StreamInfo,
    progress: Option<&Arc<Progress>>,
    stats: &mut Stats,
    records: &mut Vec<Record>,
    framed: Framed<'_>,
    end: u64,
) {
    let oversize = match framed {
        Framed::Oversize { offset, .. } => Some(offset),
        _ => None,
    };
    let ack = |offset, outputs| register(progress, offset, outputs);
    if let Some(record) = processor.process(framed, info, stats, ack) {
        records.push(record);
    }
    if let Some(start) = oversize {
        let gap = Gap {
            reason: "oversize",
            start,
            end,
        };
        let ack = |offset, outputs| register(progress, offset, outputs);
        records.push(processor.gap(info, gap, stats, ack));
    }
}
