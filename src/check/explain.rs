//! `auditrail check --explain`: for each physical line of the input (or of `--lines N-M`), why
//! it was or was not shipped.
//!
//! The input is read exactly as `check` reads it (the same stream reader, framing and
//! processor), and each stage is asked for its own decision rather than judged again here:
//! the extractor's walk reports what it decides through an observer
//! ([`crate::extract::Trace`]), the type filter names the pattern that decided
//! ([`crate::filter::Decision`]), the retention policy the entry that chose the class, and
//! whether a line was shipped is whether the processor made a record of it. So the
//! explanation cannot disagree with `check`: the ids it prints are the records' ids.
//!
//! Numbering: lines are the physical lines of the input as written, from 1, as `grep -n`
//! counts them (a last line without `\n` counts too). Each gets one entry, in order. A line
//! joined from partial chunks (CRI `P`, docker `log` without `\n`) is explained at its final
//! chunk, whose entry lists every chunk's line under `joined` (its first and last included);
//! each `P` chunk's own entry says it is held. A partial line whose end never came is
//! explained after the last line, at the line of its last chunk. With `--lines`, an entry is
//! printed when its line, or one of its chunks, is in the range; the whole input is still read
//! (the summary on stderr is the whole input's, as `check` prints it).
//!
//! Output: `text` (the default) for people, a block per entry starting with `line N`; `json`,
//! one object per entry, for tools and tests. Both are written from the same [`Entry`].

use std::io::{Read, Write};
use std::str::FromStr;

use serde::Serialize;

use super::{open, CheckError};
use crate::config::Config;
use crate::envelope::{format_time, Record};
use crate::extract::{Extraction, InvalidReason, Trace};
use crate::filter::Decision;
use crate::line::{Framed, Stats, Stream};
use crate::pipeline::Processor;
use crate::retention::ClassBy;
use crate::source::framing::{self, Format};
use crate::source::Physical;

/// Which physical lines to explain: `first` to `last` (inclusive, from 1); `last: None` runs
/// to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRange {
    pub first: u64,
    pub last: Option<u64>,
}

impl LineRange {
    /// Every line.
    pub const ALL: LineRange = LineRange {
        first: 1,
        last: None,
    };

    fn contains(self, line: u64) -> bool {
        line >= self.first && self.last.is_none_or(|l| line <= l)
    }
}

/// A `--lines` value that is not `N`, `N-M` or `N-` with 1 <= N <= M.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not N, N-M or N- (physical line numbers from 1, N <= M)")]
pub struct LineRangeError(String);

impl FromStr for LineRange {
    type Err = LineRangeError;

    fn from_str(s: &str) -> Result<LineRange, LineRangeError> {
        let bad = || LineRangeError(s.to_owned());
        let number = |t: &str| -> Result<u64, LineRangeError> {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            t.parse::<u64>().ok().filter(|n| *n >= 1).ok_or_else(bad)
        };
        let range = match s.split_once('-') {
            None => {
                let n = number(s)?;
                LineRange {
                    first: n,
                    last: Some(n),
                }
            }
            Some((a, "")) => LineRange {
                first: number(a)?,
                last: None,
            },
            Some((a, b)) => LineRange {
                first: number(a)?,
                last: Some(number(b)?),
            },
        };
        if range.last.is_some_and(|l| l < range.first) {
            return Err(bad());
        }
        Ok(range)
    }
}

/// `--explain-format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExplainFormat {
    #[default]
    Text,
    Json,
}

impl FromStr for ExplainFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<ExplainFormat, String> {
        match s {
            "text" => Ok(ExplainFormat::Text),
            "json" => Ok(ExplainFormat::Json),
            _ => Err(format!("{s:?} is not `text` or `json`")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExplainOptions {
    pub lines: LineRange,
    pub format: ExplainFormat,
}

/// Reads `input` once as [`super::check`] does and writes to `out` why each physical line in
/// `options.lines` was or was not shipped. Returns the counts, as `check` does.
pub fn explain(
    config: &Config,
    processor: &Processor,
    input: &str,
    options: ExplainOptions,
    out: &mut impl Write,
) -> Result<Stats, CheckError> {
    let input_error = |source| CheckError::Input {
        path: input.to_owned(),
        source,
    };
    let (mut src, mut reader): (Box<dyn Read>, _) = open(config, input)?;
    let outputs: Vec<(&'static str, bool)> = config
        .outputs
        .enabled()
        .iter()
        .map(|o| (o.name, o.types.is_some()))
        .collect();
    let mut explainer = Explainer {
        processor,
        outputs,
        configured: config.source.format,
        max_line_bytes: config.source.max_line_bytes,
        format: None,
        line: 0,
        position: 0,
        pending: [Vec::new(), Vec::new()],
        options,
        buf: Vec::new(),
    };
    let mut stats = Stats::default();
    loop {
        let n = reader.fill(&mut src).map_err(input_error)?;
        stats.bytes += n as u64;
        let at_end = n == 0;
        reader.process_traced(
            processor,
            &mut stats,
            at_end,
            |physical, framed, end, records| {
                explainer.step(physical, framed, end, &records);
            },
        );
        if explainer.buf.len() >= 32 * 1024 || at_end {
            out.write_all(&explainer.buf).map_err(CheckError::Output)?;
            explainer.buf.clear();
        }
        if at_end {
            break;
        }
    }
    out.flush().map_err(CheckError::Output)?;
    Ok(stats)
}

/// The state of an explanation: where in the input it is, and the chunks of partial lines.
struct Explainer<'p> {
    processor: &'p Processor,
    /// Each output in force (the order of a record's `outputs` bits) and whether it has its
    /// own `types` filter.
    outputs: Vec<(&'static str, bool)>,
    configured: Format,
    max_line_bytes: usize,
    /// The framing in force, once the first line decided it.
    format: Option<Format>,
    /// Physical lines seen.
    line: u64,
    /// The offset where the next physical line starts.
    position: u64,
    /// Per stream, the (line, offset) of each chunk of the partial line being joined.
    pending: [Vec<(u64, u64)>; 2],
    options: ExplainOptions,
    buf: Vec<u8>,
}

impl Explainer<'_> {
    fn step(&mut self, physical: Physical<'_>, framed: Framed<'_>, end: u64, records: &[Record]) {
        let start = self.position;
        let (number, chunk) = match physical {
            Physical::Line(bytes) => {
                self.line += 1;
                self.position = end;
                let format = *self
                    .format
                    .get_or_insert_with(|| framing::decide(self.configured, bytes));
                (Some(self.line), Some(framing::describe(format, bytes)))
            }
            Physical::Skipped => {
                self.line += 1;
                self.position = end;
                (Some(self.line), None)
            }
            Physical::None => (None, None),
        };
        let framing = match (&chunk, physical) {
            (Some(c), _) => FramingOut {
                format: format_name(c.format),
                malformed: c.malformed,
                stream: c.stream.map(Stream::as_str),
                chunk: c.full.map(|full| if full { "F" } else { "P" }),
                time: c.time.clone(),
                ..FramingOut::default()
            },
            (None, Physical::Skipped) => FramingOut {
                format: "unread",
                skipped: true,
                ..FramingOut::default()
            },
            // A partial line handed out at the end, without a physical line of its own.
            (None, _) => FramingOut {
                format: format_name(self.format.unwrap_or(self.configured)),
                ..FramingOut::default()
            },
        };
        let mut entry = Entry::new(number.unwrap_or(self.line), start, framing);
        match framed {
            Framed::Pending => {
                let stream = chunk
                    .as_ref()
                    .and_then(|c| c.stream)
                    .unwrap_or(Stream::Stdout);
                self.pending[stream.index()].push((entry.line, start));
                entry.result = "partial";
                entry.reason = format!(
                    "a partial chunk of a {} line: held until that stream's final chunk, and explained there",
                    stream.as_str()
                );
                if self.options.lines.contains(entry.line) {
                    self.write(&entry);
                }
                return;
            }
            Framed::Oversize {
                offset,
                unterminated,
            } => {
                let chunks = self.chunks(offset, number);
                entry.set_joined(offset, chunks, unterminated);
                entry.result = "oversize";
                entry.reason = format!(
                    "longer than source.max_line_bytes ({}): skipped without being read; a gap record (auditrail.gap) covers its bytes",
                    self.max_line_bytes
                );
                entry.gap = Some(GapOut { start: offset, end });
            }
            Framed::Line(line) => {
                let chunks = self.chunks(line.offset, number);
                entry.set_joined(line.offset, chunks, line.unterminated);
                if number.is_none() {
                    entry.framing.stream = line.stream.map(Stream::as_str);
                    entry.framing.time = line.time.map(str::to_owned);
                }
                if !self.in_range(&entry) {
                    return;
                }
                self.explain_line(&mut entry, line.text, records);
            }
        }
        if self.in_range(&entry) {
            self.write(&entry);
        }
    }

    /// The lines of the chunks a logical line starting at `offset` was joined from (with its
    /// final chunk's line `number`, when it came with one).
    fn chunks(&mut self, offset: u64, number: Option<u64>) -> Vec<u64> {
        let mut lines = Vec::new();
        for p in &mut self.pending {
            if p.first().is_some_and(|(_, o)| *o == offset) {
                lines.extend(p.drain(..).map(|(l, _)| l));
                break;
            }
        }
        lines.extend(number);
        lines
    }

    fn in_range(&self, entry: &Entry) -> bool {
        let range = self.options.lines;
        range.contains(entry.line)
            || entry
                .joined
                .as_ref()
                .is_some_and(|j| j.iter().any(|l| range.contains(*l)))
    }

    /// Extraction, filters and retention of a logical line, as the processor decided them.
    fn explain_line(&self, entry: &mut Entry, text: &[u8], records: &[Record]) {
        let (extraction, trace) = self.processor.extractor().explain(text);
        entry.set_trace(&trace);
        let names = || trace.candidates.join(", ");
        match extraction {
            Extraction::Ordinary if trace.candidates.is_empty() => {
                entry.result = "ordinary";
                entry.reason =
                    "no signature of any enabled detector: an ordinary line, not parsed".into();
            }
            Extraction::Ordinary if trace.not_an_object => {
                entry.result = "ordinary";
                entry.reason = format!(
                    "a signature of {} was found, but the whole line is JSON that is not an object (an array, say): only a top-level object can be a record, so nothing in it is searched",
                    names()
                );
            }
            Extraction::Ordinary => {
                entry.result = "ordinary";
                entry.reason = format!(
                    "a signature of {} was found, but no detector claimed any top-level object, and every signature lies inside valid JSON (nested, or in a string): an ordinary line",
                    names()
                );
            }
            Extraction::Invalid(reason) => {
                entry.result = "invalid";
                entry.invalid = Some(reason.as_str());
                entry.reason = match reason {
                    InvalidReason::Utf8 => format!(
                        "a signature of {} was found, but the line is not valid UTF-8: invalid, never shipped half-read",
                        names()
                    ),
                    InvalidReason::Json => format!(
                        "a signature of {} lies in no valid JSON object (truncated or malformed JSON), and no detector claimed an object: invalid, never shipped half-parsed",
                        names()
                    ),
                };
            }
            Extraction::Audit(audit) => {
                entry.detector = Some(audit.format.to_string());
                entry.record_type = Some(audit.record_type.to_string());
                entry.time = audit.time.as_ref().map(format_time);
                let filters: Vec<FilterOut> = self
                    .processor
                    .routes()
                    .iter()
                    .zip(&self.outputs)
                    .map(|(route, (name, own))| {
                        FilterOut::new(name, *own, route.decide(&audit.record_type))
                    })
                    .collect();
                entry.filters = Some(filters);
                let (tag, by) = self.processor.retention().classify(&audit.record_type);
                let record = records
                    .iter()
                    .find(|r| r.record_type != crate::pipeline::GAP_TYPE);
                let (by, pattern) = match by {
                    ClassBy::Type(t) => ("type", Some(t.to_owned())),
                    ClassBy::Pattern(p) => ("pattern", Some(p.to_owned())),
                    ClassBy::Default => ("default", None),
                };
                entry.retention = Some(RetentionOut {
                    class: tag.class.to_string(),
                    days: tag.days,
                    topic: tag.topic.to_string(),
                    by,
                    pattern,
                    expires_at: record
                        .and_then(|r| r.retention.expires_at.as_ref())
                        .map(format_time),
                });
                match record {
                    Some(r) => {
                        let outputs: Vec<&'static str> = self
                            .outputs
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| r.outputs & (1 << i) != 0)
                            .map(|(_, (name, _))| *name)
                            .collect();
                        entry.result = "shipped";
                        entry.reason = format!(
                            "an audit record of {}, type {}: shipped to {}",
                            audit.format,
                            audit.record_type,
                            outputs.join(", ")
                        );
                        entry.shipped = true;
                        entry.outputs = Some(outputs);
                        entry.id = Some(r.id.clone());
                    }
                    None => {
                        entry.result = "filtered_out";
                        entry.reason = format!(
                            "an audit record of {}, type {}, but no output's type filter takes it: not shipped",
                            audit.format, audit.record_type
                        );
                    }
                }
            }
        }
    }

    fn write(&mut self, entry: &Entry) {
        match self.options.format {
            ExplainFormat::Json => {
                // An entry is plain data: it always serialises.
                if serde_json::to_writer(&mut self.buf, entry).is_ok() {
                    self.buf.push(b'\n');
                }
            }
            ExplainFormat::Text => entry.write_text(&mut self.buf),
        }
    }
}

/// Why one line was or was not shipped: one JSON object, or one block of text.
#[derive(Debug, Serialize)]
struct Entry {
    /// The physical line, from 1 (for a joined line, its final chunk's).
    line: u64,
    /// The lines of every chunk a joined line was made of.
    #[serde(skip_serializing_if = "Option::is_none")]
    joined: Option<Vec<u64>>,
    /// The byte offset of the (logical) line's first byte.
    offset: u64,
    framing: FramingOut,
    /// `partial`, `oversize`, `ordinary`, `invalid`, `filtered_out` or `shipped`.
    result: &'static str,
    reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    invalid: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    precheck: Option<PrecheckOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    objects: Option<Vec<ObjectOut>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected: Option<Vec<RejectedOut>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outside: Option<Vec<usize>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detector: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    record_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    filters: Option<Vec<FilterOut>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retention: Option<RetentionOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gap: Option<GapOut>,
    shipped: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    outputs: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
}

#[derive(Debug, Default, Serialize)]
struct FramingOut {
    format: &'static str,
    /// The physical line does not fit the framing: processed as raw text.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    malformed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<&'static str>,
    /// `P` (partial) or `F` (final or whole), for CRI and docker.
    #[serde(skip_serializing_if = "Option::is_none")]
    chunk: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<String>,
    /// Its end never came: processed as it stood at the end of the input.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    unterminated: bool,
    /// Too long to hold: skipped as it streamed past, its framing unread.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    skipped: bool,
}

#[derive(Debug, Serialize)]
struct PrecheckOut {
    /// The detectors whose signature was found; empty: an ordinary line, not parsed.
    detectors: Vec<String>,
    /// Where the first (at most four) signatures start.
    at: Vec<usize>,
}

#[derive(Debug, Serialize)]
struct ObjectOut {
    start: usize,
    end: usize,
    tried: Vec<TriedOut>,
}

#[derive(Debug, Serialize)]
struct TriedOut {
    detector: String,
    claimed: bool,
}

#[derive(Debug, Serialize)]
struct RejectedOut {
    start: usize,
    at: usize,
    error: String,
}

#[derive(Debug, Serialize)]
struct FilterOut {
    output: &'static str,
    /// `types`, or the output's own `outputs.<name>.types`.
    filter: String,
    /// `included`, `excluded`, `not_included` or `not_excluded` (an empty include list).
    decision: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pattern: Option<String>,
}

impl FilterOut {
    fn new(output: &'static str, own: bool, decision: Decision<'_>) -> FilterOut {
        let (decision, pattern) = match decision {
            Decision::Included(p) => ("included", Some(p.to_owned())),
            Decision::Excluded(p) => ("excluded", Some(p.to_owned())),
            Decision::NotIncluded => ("not_included", None),
            Decision::NotExcluded => ("not_excluded", None),
        };
        FilterOut {
            output,
            filter: if own {
                format!("outputs.{output}.types")
            } else {
                "types".to_owned()
            },
            decision,
            pattern,
        }
    }
}

#[derive(Debug, Serialize)]
struct RetentionOut {
    class: String,
    days: Option<u32>,
    topic: String,
    /// `type` (listed under `retention.types`), `pattern` (an `all` pattern there) or
    /// `default`.
    by: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pattern: Option<String>,
    /// Of the shipped record; `null` when kept forever or not shipped.
    expires_at: Option<String>,
}

#[derive(Debug, Serialize)]
struct GapOut {
    start: u64,
    end: u64,
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::Cri => "cri",
        Format::Docker => "docker",
        Format::Raw | Format::Auto => "raw",
        Format::Timestamped => "timestamped",
    }
}

impl Entry {
    fn new(line: u64, offset: u64, framing: FramingOut) -> Entry {
        Entry {
            line,
            joined: None,
            offset,
            framing,
            result: "",
            reason: String::new(),
            invalid: None,
            precheck: None,
            objects: None,
            rejected: None,
            outside: None,
            detector: None,
            record_type: None,
            time: None,
            filters: None,
            retention: None,
            gap: None,
            shipped: false,
            outputs: None,
            id: None,
        }
    }

    /// Where the logical line starts and the lines it was joined from.
    fn set_joined(&mut self, offset: u64, chunks: Vec<u64>, unterminated: bool) {
        self.offset = offset;
        if let Some(last) = chunks.last() {
            self.line = *last;
        }
        if chunks.len() > 1 {
            self.joined = Some(chunks);
        }
        self.framing.unterminated = unterminated;
    }

    fn set_trace(&mut self, trace: &Trace) {
        self.precheck = Some(PrecheckOut {
            detectors: trace.candidates.iter().map(|d| d.to_string()).collect(),
            at: trace.hits.clone(),
        });
        // Parsed only when the walk got to the objects: a candidate in valid UTF-8.
        let parsed =
            !trace.objects.is_empty() || !trace.rejected.is_empty() || trace.outside.is_some();
        if parsed {
            self.objects = Some(
                trace
                    .objects
                    .iter()
                    .map(|o| ObjectOut {
                        start: o.start,
                        end: o.end,
                        tried: o
                            .tried
                            .iter()
                            .map(|(d, claimed)| TriedOut {
                                detector: d.to_string(),
                                claimed: *claimed,
                            })
                            .collect(),
                    })
                    .collect(),
            );
            self.rejected = Some(
                trace
                    .rejected
                    .iter()
                    .map(|r| RejectedOut {
                        start: r.start,
                        at: r.at,
                        error: r.error.clone(),
                    })
                    .collect(),
            );
            self.outside = trace.outside.clone();
        }
    }

    /// The same facts as the JSON, for people: `line N ...` then indented details.
    fn write_text(&self, out: &mut Vec<u8>) {
        let mut t = String::new();
        let f = &self.framing;
        let mut framing = vec![if f.skipped {
            "too long to hold, its framing unread"
        } else {
            f.format
        }
        .to_owned()];
        if f.malformed {
            framing.push("malformed, read as raw text".into());
        }
        framing.extend(f.stream.map(str::to_owned));
        framing.extend(f.chunk.map(str::to_owned));
        framing.extend(f.time.clone());
        if f.unterminated {
            framing.push("unterminated".into());
        }
        t.push_str(&format!(
            "line {} (offset {}): {}\n  framing: {}\n",
            self.line,
            self.offset,
            self.result,
            framing.join(", ")
        ));
        if let Some(j) = &self.joined {
            let lines: Vec<String> = j.iter().map(u64::to_string).collect();
            t.push_str(&format!(
                "  joined from the chunks on lines {}\n",
                lines.join(", ")
            ));
        }
        if let Some(p) = &self.precheck {
            if p.detectors.is_empty() {
                t.push_str("  pre-check: no signature: ordinary, not parsed\n");
            } else {
                let at: Vec<String> = p.at.iter().map(usize::to_string).collect();
                t.push_str(&format!(
                    "  pre-check: signature of {} at byte {}\n",
                    p.detectors.join(", "),
                    at.join(", ")
                ));
            }
        }
        for r in self.rejected.iter().flatten() {
            t.push_str(&format!(
                "  `{{` at byte {}: no valid JSON object ({} at byte {})\n",
                r.start, r.error, r.at
            ));
        }
        for o in self.objects.iter().flatten() {
            let tried: Vec<String> = o
                .tried
                .iter()
                .map(|d| {
                    format!(
                        "{} {}",
                        d.detector,
                        if d.claimed {
                            "claimed it"
                        } else {
                            "did not claim it"
                        }
                    )
                })
                .collect();
            let tried = if tried.is_empty() {
                "no candidate detector left to ask".to_owned()
            } else {
                tried.join("; ")
            };
            t.push_str(&format!(
                "  object at bytes {}..{}: {}\n",
                o.start, o.end, tried
            ));
        }
        if let Some(outside) = &self.outside {
            if !outside.is_empty() {
                let at: Vec<String> = outside.iter().map(usize::to_string).collect();
                t.push_str(&format!(
                    "  signature at byte {} is inside no valid JSON object\n",
                    at.join(", ")
                ));
            }
        }
        if let (Some(d), Some(ty)) = (&self.detector, &self.record_type) {
            t.push_str(&format!("  record: {d}, type {ty}"));
            if let Some(time) = &self.time {
                t.push_str(&format!(", time {time}"));
            }
            t.push('\n');
        }
        for fo in self.filters.iter().flatten() {
            let why = match (fo.decision, &fo.pattern) {
                ("included", Some(p)) => format!("included by `{p}`"),
                ("excluded", Some(p)) => format!("excluded by `{p}`"),
                ("not_included", _) => "not included by any pattern".to_owned(),
                _ => "not excluded (include list empty)".to_owned(),
            };
            t.push_str(&format!(
                "  filter of {} ({}): {why}\n",
                fo.output, fo.filter
            ));
        }
        if let Some(r) = &self.retention {
            let days = r
                .days
                .map_or_else(|| "kept forever".to_owned(), |d| format!("{d} days"));
            let by = match &r.pattern {
                Some(p) => format!("{} `{p}`", r.by),
                None => "default".to_owned(),
            };
            t.push_str(&format!(
                "  retention: class {} ({days}), topic {}, by {by}",
                r.class, r.topic
            ));
            if let Some(e) = &r.expires_at {
                t.push_str(&format!(", expires {e}"));
            }
            t.push('\n');
        }
        if let Some(g) = &self.gap {
            t.push_str(&format!("  gap record for bytes {}..{}\n", g.start, g.end));
        }
        if self.shipped {
            let outputs = self.outputs.as_deref().unwrap_or_default().join(", ");
            let id = self.id.as_deref().unwrap_or("");
            t.push_str(&format!("  shipped to {outputs}, id {id}\n"));
        } else {
            t.push_str("  not shipped\n");
        }
        t.push_str(&format!("  why: {}\n", self.reason));
        out.extend_from_slice(t.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_ranges_parse_or_say_what_is_wrong() {
        let ok = |s: &str| s.parse::<LineRange>().unwrap();
        assert_eq!(
            ok("3"),
            LineRange {
                first: 3,
                last: Some(3)
            }
        );
        assert_eq!(
            ok("3-5"),
            LineRange {
                first: 3,
                last: Some(5)
            }
        );
        assert_eq!(
            ok("7-"),
            LineRange {
                first: 7,
                last: None
            }
        );
        for bad in ["", "0", "x", "5-3", "1-2-3", "-4", "+1", "1-0", " 1"] {
            let err = bad.parse::<LineRange>().unwrap_err();
            assert!(err.to_string().contains("N-M"), "{bad:?}: {err}");
        }
        assert!(ok("3-5").contains(5) && !ok("3-5").contains(6) && ok("7-").contains(u64::MAX));
    }
}
