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
use crate::pipeline::Processor;

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

    /// The input has ended for good (`check`): a last line without `\n` is complete.
    pub(crate) fn finish_input(&mut self) {
        self.lines.finish_input();
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
        lines.drain(|framed, _| {
            if let Framed::Line(line) = &framed {
                if !admit(line) {
                    return;
                }
            }
            let register = |offset, outputs| match progress {
                Some(p) => p.register(offset, outputs),
                None => Ack::none(),
            };
            if let Some(record) = processor.process(framed, info, stats, register) {
                records.push(record);
            }
        });
        if let Some(p) = progress {
            p.set_read(lines.offset(), lines.floor());
        }
        stats.malformed += std::mem::take(&mut lines.framer.malformed);
    }

    /// How far the stream has been read: processed lines plus a partial last line.
    pub(crate) fn position(&self) -> u64 {
        self.lines.offset() + self.lines.buffered() as u64
    }

    /// Partial lines (CRI `P`, docker chunks) still waiting for their final chunk.
    pub(crate) fn incomplete(&self) -> u64 {
        self.lines.framer.pending()
    }

    /// The acknowledgement state, in `run`.
    pub(crate) fn progress(&self) -> Option<&Arc<Progress>> {
        self.progress.as_ref()
    }
}
