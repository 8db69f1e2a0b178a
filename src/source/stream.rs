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

use super::chain::SegmentChain;
use super::framing::Format;
use super::reader::{LineReader, Physical};
use crate::ack::{Ack, Progress};
use crate::budget::Charge;
use crate::envelope::Record;
use crate::line::{Framed, Line, Stats, StreamInfo};
use crate::pipeline::{Gap, Processor};

/// One stream being read.
#[derive(Debug)]
pub(crate) struct StreamReader {
    lines: LineReader,
    format: Format,
    max_line_bytes: usize,
    /// Where the stream comes from, spliced into every record's envelope.
    pub info: StreamInfo,
    /// `None` for `check`, where nothing is acknowledged.
    progress: Option<Arc<Progress>>,
    /// What its buffers hold of the memory budget.
    charge: Charge,
    /// Its segment's chain (`integrity.chain`), linking every record it ships.
    chain: Option<SegmentChain>,
}

impl StreamReader {
    /// A stream framed as `format`, read from `offset` on.
    pub(crate) fn new(
        format: Format,
        max_line_bytes: usize,
        offset: u64,
        info: StreamInfo,
        progress: Option<Arc<Progress>>,
        charge: Charge,
    ) -> StreamReader {
        let mut reader = StreamReader {
            lines: LineReader::new(format, max_line_bytes, offset),
            format,
            max_line_bytes,
            info,
            progress,
            charge,
            chain: None,
        };
        reader.charge.resize(reader.lines.held_bytes());
        reader
    }

    /// Links every record into `chain` (whose progress is this reader's).
    pub(crate) fn with_chain(mut self, chain: Option<SegmentChain>) -> StreamReader {
        self.chain = chain;
        self
    }

    /// Goes on from `offset` (a later offset of the same stream: what lies before it was dealt
    /// with elsewhere), with fresh framing.
    pub(crate) fn skip_to(&mut self, offset: u64) {
        self.lines = LineReader::new(self.format, self.max_line_bytes, offset);
        if let Some(p) = &self.progress {
            p.set_read(offset, None);
        }
    }

    /// Reads once from `src`. Returns the number of bytes read; 0 at end of input.
    pub(crate) fn fill(&mut self, src: &mut impl Read) -> io::Result<usize> {
        let n = self.lines.fill(src);
        self.charge.resize(self.lines.held_bytes());
        n
    }

    /// Gives back the last `n` bytes read, unprocessed.
    pub(crate) fn unfill(&mut self, n: usize) {
        self.lines.unfill(n);
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
    /// the source has already dealt with before a reconnect); `admit` may set the line's
    /// [`Line::id_position`].
    pub(crate) fn process_admitted(
        &mut self,
        processor: &Processor,
        stats: &mut Stats,
        records: &mut Vec<Record>,
        mut admit: impl FnMut(&mut Line<'_>) -> bool,
    ) {
        let StreamReader {
            lines,
            info,
            progress,
            chain,
            ..
        } = self;
        let mut to = Destination {
            processor,
            info,
            progress: progress.as_ref(),
            stats,
            records,
        };
        lines.drain(|mut framed, end| {
            if let Framed::Line(line) = &mut framed {
                if !admit(line) {
                    return;
                }
            }
            to.handle(chain.as_mut(), framed, end);
        });
        read_up_to(lines, progress.as_ref(), stats);
    }

    /// Something waits for an end that may still come (a drain, an expired partial line):
    /// ships it as it stands, marked unterminated, without ending it (each once). The
    /// checkpoint stays before it: should its end come, it still joins it, also after a
    /// restart. Returns how many lines that was.
    pub(crate) fn snapshot_unterminated(
        &mut self,
        processor: &Processor,
        stats: &mut Stats,
        records: &mut Vec<Record>,
    ) -> u64 {
        let StreamReader {
            lines,
            info,
            progress,
            chain,
            ..
        } = self;
        let mut to = Destination {
            processor,
            info,
            progress: progress.as_ref(),
            stats,
            records,
        };
        let mut shipped = 0;
        lines.snapshot_unterminated(|framed, end| {
            shipped += 1;
            // Not a link of the stream's chain: its own segment (see the method's doc).
            let start = match &framed {
                Framed::Line(line) => line.offset,
                Framed::Oversize { offset, .. } => *offset,
                Framed::Pending => end,
            };
            let mut side = chain.as_ref().map(|c| c.unterminated(start, end));
            to.handle(side.as_mut(), framed, end);
        });
        shipped
    }

    /// As [`StreamReader::process`] and, when `at_end`, [`StreamReader::flush_unterminated`]
    /// (for `check`, where nothing is acknowledged), telling `each` about every physical line:
    /// the line, its framing result, the offset just past it and the records that result gave
    /// (`check --explain`).
    /// A partial line handed out at the end comes with [`Physical::None`].
    pub(crate) fn process_traced(
        &mut self,
        processor: &Processor,
        stats: &mut Stats,
        at_end: bool,
        mut each: impl FnMut(Physical<'_>, Framed<'_>, u64, Vec<Record>),
    ) {
        let StreamReader { lines, info, .. } = self;
        let mut step = |physical: Physical<'_>, framed: Framed<'_>, end: u64, counted: bool| {
            let mut records = Vec::new();
            if counted {
                let ack = |_, _| Ack::none();
                let to = Linked::new(&mut records, None, None);
                process_one(processor, info, ack, stats, to, framed, end);
            }
            each(physical, framed, end, records);
        };
        lines.drain_physical(|physical, framed, end| step(physical, framed, end, true));
        if at_end {
            // A last `P` chunk without `\n` is not counted (no `\n`, as in `check`); the
            // partial line it ends is, as it stands.
            lines.flush_physical(|physical, framed, end| {
                let counted = !matches!(framed, Framed::Pending);
                step(physical, framed, end, counted)
            });
        }
        stats.malformed += std::mem::take(&mut lines.framer.malformed);
    }

    /// Whether a partial line of the framing waits for its final chunk.
    pub(crate) fn has_partial_line(&self) -> bool {
        self.lines.framer.pending() > 0
    }

    /// Whether a partial line of `stream` waits for its final chunk.
    pub(crate) fn waits_on(&self, stream: crate::line::Stream) -> bool {
        self.lines.framer.waits_on(stream)
    }

    /// A line that began in this stream (a rotated file) goes on in the next one: feeds the
    /// next stream's leading chunks to this stream's framing. A record completed this way is
    /// registered here at its start, and also holds `next` at `next_offset` (where those
    /// chunks begin) until it is confirmed, so neither checkpoint passes it unconfirmed.
    pub(crate) fn join_continuation(
        &mut self,
        chunks: &[&[u8]],
        processor: &Processor,
        stats: &mut Stats,
        records: &mut Vec<Record>,
        next: (&Arc<Progress>, u64),
    ) {
        let StreamReader {
            lines,
            info,
            progress,
            chain,
            ..
        } = self;
        let end = lines.offset();
        for chunk in chunks {
            let framed = lines.framer.frame(chunk, end);
            let ack = |offset, outputs| {
                register(progress.as_ref(), offset, outputs).also(next.0, next.1, outputs)
            };
            let to = Linked::new(records, chain.as_mut(), progress.as_ref());
            process_one(processor, info, ack, stats, to, framed, end);
        }
        if let Some(p) = progress {
            p.set_read(lines.offset(), lines.floor());
        }
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
            chain,
            ..
        } = self;
        let mut to = Destination {
            processor,
            info,
            progress: progress.as_ref(),
            stats,
            records,
        };
        let mut flushed = 0;
        // Counted in `incomplete` (not `lines`) by the processor.
        lines.flush_unterminated(|framed, end| {
            flushed += 1;
            to.handle(chain.as_mut(), framed, end);
        });
        read_up_to(lines, progress.as_ref(), stats);
        flushed
    }

    /// Whether something waits for an end that may never come: a partial line of the framing,
    /// or bytes after the last `\n`.
    pub(crate) fn has_unterminated(&self) -> bool {
        self.lines.framer.pending() > 0 || self.lines.buffered() > 0
    }

    /// Ships a gap record for `gap` of this stream, registered at its start.
    pub(crate) fn report_gap(
        &mut self,
        processor: &Processor,
        gap: Gap,
        stats: &mut Stats,
        records: &mut Vec<Record>,
    ) {
        let ack = |offset, outputs| register(self.progress.as_ref(), offset, outputs);
        let record = processor.gap(&self.info, gap, stats, ack);
        Linked::new(records, self.chain.as_mut(), self.progress.as_ref()).push(record);
    }

    /// The bytes read last, ending at [`StreamReader::position`].
    pub(crate) fn recent(&self) -> &[u8] {
        self.lines.recent()
    }

    /// How far the stream has been read: processed lines plus a partial last line.
    pub(crate) fn position(&self) -> u64 {
        self.lines.offset() + self.lines.buffered() as u64
    }

    /// The name of its segment's chain, when chained.
    pub(crate) fn segment(&self) -> Option<&Arc<str>> {
        self.chain.as_ref().map(|c| c.segment())
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

/// Where records go: onto the batch, each linked into the segment's chain first when there
/// is one.
pub(crate) struct Linked<'a> {
    records: &'a mut Vec<Record>,
    chain: Option<&'a mut SegmentChain>,
    progress: Option<&'a Arc<Progress>>,
}

impl<'a> Linked<'a> {
    pub(crate) fn new(
        records: &'a mut Vec<Record>,
        chain: Option<&'a mut SegmentChain>,
        progress: Option<&'a Arc<Progress>>,
    ) -> Linked<'a> {
        Linked {
            records,
            chain,
            progress,
        }
    }

    pub(crate) fn push(&mut self, mut record: Record) {
        let digest = match self.chain.as_deref_mut() {
            Some(chain) => chain.link(&mut record, self.progress),
            None => None,
        };
        self.records.push(record);
        // A digest follows the last record it covers.
        self.records.extend(digest);
    }
}

/// Where a pass's framing results go: through the processor, each record registered with
/// `progress` and linked by the stream's chain (or a side segment's), into `records`.
struct Destination<'a> {
    processor: &'a Processor,
    info: &'a StreamInfo,
    progress: Option<&'a Arc<Progress>>,
    stats: &'a mut Stats,
    records: &'a mut Vec<Record>,
}

impl Destination<'_> {
    /// One framing result, linked by `chain`.
    fn handle(&mut self, chain: Option<&mut SegmentChain>, framed: Framed<'_>, end: u64) {
        let progress = self.progress;
        let ack = |offset, outputs| register(progress, offset, outputs);
        let to = Linked::new(self.records, chain, progress);
        process_one(self.processor, self.info, ack, self.stats, to, framed, end);
    }
}

/// After a pass over the reader's lines: tells `progress` how far they were read (and the
/// floor a checkpoint may not pass), and counts the framing's malformed lines.
fn read_up_to(lines: &mut LineReader, progress: Option<&Arc<Progress>>, stats: &mut Stats) {
    if let Some(p) = progress {
        p.set_read(lines.offset(), lines.floor());
    }
    stats.malformed += std::mem::take(&mut lines.framer.malformed);
}

/// One framing result through the processor: a record is registered through `ack` and kept;
/// a line too long to process also becomes a gap record for its byte range.
fn process_one(
    processor: &Processor,
    info: &StreamInfo,
    ack: impl Fn(u64, u32) -> Ack,
    stats: &mut Stats,
    mut records: Linked<'_>,
    framed: Framed<'_>,
    end: u64,
) {
    let oversize = match framed {
        Framed::Oversize { offset, .. } => Some(offset),
        _ => None,
    };
    if let Some(record) = processor.process(framed, info, stats, &ack) {
        records.push(record);
    }
    if let Some(start) = oversize {
        let gap = Gap {
            reason: "oversize",
            start,
            end,
            end_known: true,
        };
        records.push(processor.gap(info, gap, stats, &ack));
    }
}
