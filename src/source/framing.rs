//! Framing: turn the physical lines of a container log into the application's logical lines.
//!
//! - `cri`: `<RFC3339Nano> <stdout|stderr> <P|F>[:flags] <text>`. `P` chunks (containerd
//!   splits lines at 16 KiB) are joined per stream until that stream's `F` chunk, even when
//!   the other stream's lines are interleaved.
//! - `docker`: json-file lines `{"log": "...", "stream": "...", "time": "..."}`; a `log` value
//!   without a final `\n` is a partial chunk, joined the same way.
//! - `raw`: the line as it is (`\n` or `\r\n`).
//! - `auto`: decided per file from its first line.
//!
//! A logical line longer than `max_line_bytes` is reported as [`Framed::Oversize`] and never
//! held in memory beyond the limit. A physical line that does not fit its framing is counted
//! as malformed and passed on as raw text, so an audit record is never lost to a framing error.

use std::borrow::Cow;

use serde::Deserialize;

use crate::line::{Framed, Line, Stream};

/// `source.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Cri,
    Docker,
    Raw,
    #[default]
    Auto,
    /// `<RFC3339Nano> <text>`: the Kubernetes API's `pods/log` with `timestamps=true`. Not a
    /// `source.format` value: `source.kind: kubernetes` uses it.
    #[serde(skip)]
    Timestamped,
}

/// A partial line being joined for one stream.
#[derive(Debug, Default)]
struct Partial {
    buf: Vec<u8>,
    start: Option<u64>,
    oversize: bool,
    time: String,
    /// Handed out as it stands once already (a drain, an expiry); it still waits for its end.
    shipped: bool,
}

/// Per-file framing state.
#[derive(Debug)]
pub struct Framer {
    format: Format,
    max_line_bytes: usize,
    partial: [Partial; 2],
    /// Scratch for a docker line's unescaped `log` text.
    scratch: Vec<u8>,
    time: String,
    /// Physical lines that did not fit the framing.
    pub malformed: u64,
}

impl Framer {
    pub fn new(format: Format, max_line_bytes: usize) -> Framer {
        Framer {
            format,
            max_line_bytes,
            partial: Default::default(),
            scratch: Vec::new(),
            time: String::new(),
            malformed: 0,
        }
    }

    /// Bytes its buffers hold (partial lines being joined, scratch).
    pub fn held_bytes(&self) -> usize {
        self.partial.iter().map(|p| p.buf.capacity()).sum::<usize>()
            + self.scratch.capacity()
            + self.time.capacity()
    }

    /// The format in force (`auto` until the first line decides).
    pub fn format(&self) -> Format {
        self.format
    }

    /// The start of the oldest partial line still waiting for its end.
    pub fn floor(&self) -> Option<u64> {
        self.partial.iter().filter_map(|p| p.start).min()
    }

    /// Partial lines still waiting for their final chunk.
    pub fn pending(&self) -> u64 {
        self.partial.iter().filter(|p| p.start.is_some()).count() as u64
    }

    /// Frames one physical line (without its `\n`) that starts at `offset`. A `\r` before the
    /// `\n` is part of the line (prefix + record + suffix is the line, byte for byte).
    pub fn frame<'a>(&'a mut self, physical: &'a [u8], offset: u64) -> Framed<'a> {
        if self.format == Format::Auto {
            self.format = detect(physical);
        }
        match self.format {
            Format::Cri => self.cri(physical, offset),
            Format::Docker => self.docker(physical, offset),
            Format::Timestamped => self.timestamped(physical, offset),
            Format::Raw | Format::Auto => self.raw(physical, offset),
        }
    }

    fn raw<'a>(&self, text: &'a [u8], offset: u64) -> Framed<'a> {
        if text.len() > self.max_line_bytes {
            return Framed::Oversize {
                offset,
                unterminated: false,
            };
        }
        Framed::Line(Line {
            text,
            stream: None,
            time: None,
            offset,
            unterminated: false,
            id_position: None,
        })
    }

    fn timestamped<'a>(&mut self, physical: &'a [u8], offset: u64) -> Framed<'a> {
        let Some((time, text)) = split_timestamp(physical) else {
            self.malformed += 1;
            return self.raw(physical, offset);
        };
        if text.len() > self.max_line_bytes {
            return Framed::Oversize {
                offset,
                unterminated: false,
            };
        }
        Framed::Line(Line {
            text,
            stream: None,
            time: Some(time),
            offset,
            unterminated: false,
            id_position: None,
        })
    }

    fn cri<'a>(&'a mut self, physical: &'a [u8], offset: u64) -> Framed<'a> {
        let Some((time, stream, full, text)) = split_cri(physical) else {
            self.malformed += 1;
            return self.raw(physical, offset);
        };
        self.join(stream, full, text, time, offset)
    }

    fn docker<'a>(&'a mut self, physical: &'a [u8], offset: u64) -> Framed<'a> {
        let parsed: DockerLine<'_> = match serde_json::from_slice(physical) {
            Ok(d) => d,
            Err(_) => {
                self.malformed += 1;
                return self.raw(physical, offset);
            }
        };
        let stream = parsed.stream();
        let (text, full) = parsed.text();
        self.time.clear();
        self.time.push_str(parsed.time.as_deref().unwrap_or(""));
        let p = &mut self.partial[stream.index()];
        if !full || p.start.is_some() {
            append(p, text.as_bytes(), &self.time, offset, self.max_line_bytes);
            if !full {
                return Framed::Pending;
            }
            return self.finish(stream);
        }
        if text.len() > self.max_line_bytes {
            return Framed::Oversize {
                offset,
                unterminated: false,
            };
        }
        // The unescaped text lives in the framer's scratch buffer until the next line.
        self.scratch.clear();
        self.scratch.extend_from_slice(text.as_bytes());
        Framed::Line(Line {
            text: &self.scratch,
            stream: Some(stream),
            time: (!self.time.is_empty()).then_some(self.time.as_str()),
            offset,
            unterminated: false,
            id_position: None,
        })
    }

    fn join<'a>(
        &'a mut self,
        stream: Stream,
        full: bool,
        text: &'a [u8],
        time: &'a str,
        offset: u64,
    ) -> Framed<'a> {
        let p = &mut self.partial[stream.index()];
        if !full {
            append(p, text, time, offset, self.max_line_bytes);
            return Framed::Pending;
        }
        if p.start.is_none() {
            // The common case: a whole line in one chunk, no copy.
            if text.len() > self.max_line_bytes {
                return Framed::Oversize {
                    offset,
                    unterminated: false,
                };
            }
            return Framed::Line(Line {
                text,
                stream: Some(stream),
                time: Some(time),
                offset,
                unterminated: false,
                id_position: None,
            });
        }
        append(p, text, time, offset, self.max_line_bytes);
        self.finish(stream)
    }

    /// Hands out the joined line of `stream` (its `F` chunk has been appended).
    fn finish(&mut self, stream: Stream) -> Framed<'_> {
        self.hand_out(stream, false)
    }

    /// Hands out a partial line whose end never came, as it stands, one stream at a time:
    /// `None` when no partial line waits.
    pub fn take_unterminated(&mut self) -> Option<Framed<'_>> {
        let stream = [Stream::Stdout, Stream::Stderr]
            .into_iter()
            .find(|s| self.partial[s.index()].start.is_some())?;
        Some(self.hand_out(stream, true))
    }

    /// Hands each partial line that waits for its end to `f` as it stands, without ending it:
    /// should its final chunk come after all, it still joins it. Each partial line once.
    pub fn snapshot_unterminated(&mut self, mut f: impl FnMut(Framed<'_>)) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let p = &mut self.partial[stream.index()];
            let Some(start) = p.start else {
                continue;
            };
            if std::mem::replace(&mut p.shipped, true) {
                continue;
            }
            let p = &self.partial[stream.index()];
            f(if p.oversize {
                Framed::Oversize {
                    offset: start,
                    unterminated: true,
                }
            } else {
                Framed::Line(Line {
                    text: &p.buf,
                    stream: Some(stream),
                    time: (!p.time.is_empty()).then_some(p.time.as_str()),
                    offset: start,
                    unterminated: true,
                    id_position: None,
                })
            });
        }
    }

    /// Whether a partial line of `stream` waits for its end.
    pub fn waits_on(&self, stream: Stream) -> bool {
        self.partial[stream.index()].start.is_some()
    }

    fn hand_out(&mut self, stream: Stream, unterminated: bool) -> Framed<'_> {
        let p = &mut self.partial[stream.index()];
        let start = p.start.take().unwrap_or_default();
        if std::mem::take(&mut p.oversize) {
            p.buf.clear();
            return Framed::Oversize {
                offset: start,
                unterminated,
            };
        }
        // The buffer is cleared on the next use; hand out a view of it now.
        let p = &self.partial[stream.index()];
        Framed::Line(Line {
            text: &p.buf,
            stream: Some(stream),
            time: (!p.time.is_empty()).then_some(p.time.as_str()),
            offset: start,
            unterminated,
            id_position: None,
        })
    }
}

/// A docker json-file line.
#[derive(Deserialize)]
struct DockerLine<'b> {
    #[serde(borrow)]
    log: Cow<'b, str>,
    #[serde(borrow, default)]
    stream: Option<Cow<'b, str>>,
    #[serde(borrow, default)]
    time: Option<Cow<'b, str>>,
}

impl DockerLine<'_> {
    /// Its stream; `stdout` when it names none it knows.
    fn stream(&self) -> Stream {
        self.stream
            .as_deref()
            .and_then(|s| Stream::parse(s.as_bytes()))
            .unwrap_or(Stream::Stdout)
    }

    /// Its text without the final `\n`, and whether it had one (a whole line, or the last
    /// chunk of one).
    fn text(&self) -> (&str, bool) {
        match self.log.strip_suffix('\n') {
            Some(t) => (t, true),
            None => (&self.log, false),
        }
    }
}

/// What the framing makes of one physical line, told by the same splitting the framer does:
/// for `check --explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk {
    /// The framing in force (`auto` decided by the stream's first line).
    pub(crate) format: Format,
    /// The line does not fit that framing: it is processed as raw text.
    pub(crate) malformed: bool,
    pub(crate) stream: Option<Stream>,
    /// `Some(false)` for a partial chunk (CRI `P`, docker `log` without `\n`), `Some(true)`
    /// for a final or whole one; `None` without such framing.
    pub(crate) full: Option<bool>,
    /// The runtime's timestamp of the line.
    pub(crate) time: Option<String>,
}

/// The framing a stream of `format` uses, once its first physical line is `first`.
pub(crate) fn decide(format: Format, first: &[u8]) -> Format {
    match format {
        Format::Auto => detect(first),
        other => other,
    }
}

/// What a stream framed as `format` (decided: see [`decide`]) makes of `physical`.
pub(crate) fn describe(format: Format, physical: &[u8]) -> Chunk {
    let mut chunk = Chunk {
        format,
        malformed: false,
        stream: None,
        full: None,
        time: None,
    };
    match format {
        Format::Cri => match split_cri(physical) {
            Some((time, stream, full, _)) => {
                chunk.stream = Some(stream);
                chunk.full = Some(full);
                chunk.time = Some(time.to_owned());
            }
            None => chunk.malformed = true,
        },
        Format::Docker => match serde_json::from_slice::<DockerLine<'_>>(physical) {
            Ok(d) => {
                chunk.stream = Some(d.stream());
                chunk.full = Some(d.text().1);
                chunk.time = d.time.as_deref().map(str::to_owned);
            }
            Err(_) => chunk.malformed = true,
        },
        Format::Timestamped => match split_timestamp(physical) {
            Some((time, _)) => chunk.time = Some(time.to_owned()),
            None => chunk.malformed = true,
        },
        Format::Raw | Format::Auto => {}
    }
    chunk
}

/// Appends a chunk to a partial line, keeping at most `max` bytes.
fn append(p: &mut Partial, text: &[u8], time: &str, offset: u64, max: usize) {
    if p.start.is_none() {
        p.start = Some(offset);
        p.buf.clear();
        p.oversize = false;
        p.shipped = false;
        p.time.clear();
        p.time.push_str(time);
    }
    if p.oversize {
        return;
    }
    if p.buf.len() + text.len() > max {
        p.oversize = true;
        p.buf = Vec::new();
        return;
    }
    p.buf.extend_from_slice(text);
}

/// Splits `<timestamp> <rest>`, when the first word has the shape of an RFC 3339 timestamp
/// (`2021-08-09T16:02:45.387977000Z`, or with an offset): a cheap check, not a parse.
fn split_timestamp(line: &[u8]) -> Option<(&str, &[u8])> {
    let sp = memchr::memchr(b' ', line)?;
    let time = &line[..sp];
    if time.len() < 20 || time.get(4) != Some(&b'-') || time.get(10) != Some(&b'T') {
        return None;
    }
    let time = std::str::from_utf8(time).ok().filter(|t| t.is_ascii())?;
    Some((time, &line[sp + 1..]))
}

/// Splits a CRI line into (timestamp, stream, is-full, text).
fn split_cri(line: &[u8]) -> Option<(&str, Stream, bool, &[u8])> {
    let (time, rest) = split_timestamp(line)?;
    // The kubelet's own shape, `stdout F <text>`, read in place: what the search below finds
    // for it, without three searches for a space a few bytes away.
    if let (Some(stream), Some(&tag @ (b'F' | b'P')), Some(b' ')) = (
        rest.get(..6).and_then(Stream::parse),
        rest.get(7),
        rest.get(8),
    ) {
        if rest[6] == b' ' {
            return Some((time, stream, tag == b'F', &rest[9..]));
        }
    }
    split_cri_searched(time, rest)
}

/// [`split_cri`] of any shape: the stream and the tag found by searching for their spaces.
fn split_cri_searched<'a>(
    time: &'a str,
    rest: &'a [u8],
) -> Option<(&'a str, Stream, bool, &'a [u8])> {
    let sp2 = memchr::memchr(b' ', rest)?;
    let stream = Stream::parse(&rest[..sp2])?;
    let rest = &rest[sp2 + 1..];
    let (tag, text) = match memchr::memchr(b' ', rest) {
        Some(sp3) => (&rest[..sp3], &rest[sp3 + 1..]),
        // An empty line: `<ts> stdout F` with nothing after the tag.
        None => (rest, &rest[rest.len()..]),
    };
    let full = match tag.split(|b| *b == b':').next()? {
        b"F" => true,
        b"P" => false,
        _ => return None,
    };
    Some((time, stream, full, text))
}

/// The stream of a CRI physical line and whether it is a final (`F`) chunk; `None` when the
/// line is not CRI.
pub(crate) fn cri_chunk(line: &[u8]) -> Option<(Stream, bool)> {
    split_cri(line).map(|(_, stream, full, _)| (stream, full))
}

/// Decides a file's framing from its first line.
fn detect(first: &[u8]) -> Format {
    if split_cri(first).is_some() {
        Format::Cri
    } else if first.starts_with(b"{\"log\":") || first.starts_with(b"{\"log\" :") {
        Format::Docker
    } else {
        Format::Raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubelets_shape_read_in_place_is_what_the_search_finds() {
        let t = "2026-01-01T00:00:00.000272000Z";
        for rest in [
            "stdout F {\"a\":1}",
            "stderr P x",
            "stdout F ",
            "stdout F",
            "stdout F:x y",
            "stdout FF y",
            "stdout  F y",
            "stdoutx F y",
            "stdin F y",
            "stdout X y",
            "stdout P",
            "stdout",
            "",
        ] {
            let line = format!("{t} {rest}");
            let searched = split_timestamp(line.as_bytes())
                .and_then(|(time, rest)| split_cri_searched(time, rest));
            assert_eq!(split_cri(line.as_bytes()), searched, "{line:?}");
        }
    }

    /// Frames `lines` (offsets = line index * 1000) and returns what came out.
    fn run(format: Format, max: usize, lines: &[&str]) -> Vec<String> {
        let mut f = Framer::new(format, max);
        let mut out = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            match f.frame(l.as_bytes(), i as u64 * 1000) {
                Framed::Line(line) => out.push(format!(
                    "{}@{}:{}",
                    line.stream.map_or("-", |s| s.as_str()),
                    line.offset,
                    String::from_utf8_lossy(line.text)
                )),
                Framed::Oversize { offset, .. } => out.push(format!("oversize@{offset}")),
                Framed::Pending => {}
            }
        }
        out
    }

    const TS: &str = "2021-08-09T16:02:45.387977000Z";

    #[test]
    fn cri_table() {
        let cases: &[(&[&str], &[&str])] = &[
            (
                &["2021-08-09T16:02:45.387977000Z stdout F hello world"],
                &["stdout@0:hello world"],
            ),
            (
                &["2021-08-09T16:02:45.387977000Z stderr F "],
                &["stderr@0:"],
            ),
            (&["2021-08-09T16:02:45.387977000Z stdout F"], &["stdout@0:"]),
            // A `\r` before the `\n` is part of the line.
            (
                &["2021-08-09T16:02:45.387977000+02:00 stdout F x\r"],
                &["stdout@0:x\r"],
            ),
            // P chunks joined, other stream interleaved.
            (
                &[
                    "2021-08-09T16:02:45.387977000Z stdout P {\"a\":",
                    "2021-08-09T16:02:45.387977000Z stderr F boom",
                    "2021-08-09T16:02:45.387977000Z stdout P 1,",
                    "2021-08-09T16:02:45.387977000Z stdout F \"b\":2}",
                ],
                &["stderr@1000:boom", "stdout@0:{\"a\":1,\"b\":2}"],
            ),
            // Malformed physical lines pass through as raw text.
            (&["not a cri line"], &["-@0:not a cri line"]),
            (
                &["2021-08-09T16:02:45.387977000Z stdin F x"],
                &["-@0:2021-08-09T16:02:45.387977000Z stdin F x"],
            ),
            (
                &["2021-08-09T16:02:45.387977000Z stdout X x"],
                &["-@0:2021-08-09T16:02:45.387977000Z stdout X x"],
            ),
        ];
        for (input, want) in cases {
            assert_eq!(run(Format::Cri, 100, input), *want, "{input:?}");
        }
    }

    #[test]
    fn cri_oversize_after_join_never_holds_more_than_the_limit() {
        let p = format!("{TS} stdout P {}", "x".repeat(8));
        let f = format!("{TS} stdout F {}", "y".repeat(8));
        let ok = format!("{TS} stdout F small");
        assert_eq!(
            run(Format::Cri, 10, &[&p, &p, &f, &ok]),
            vec!["oversize@0", "stdout@3000:small"]
        );
        let mut framer = Framer::new(Format::Cri, 10);
        framer.frame(p.as_bytes(), 0);
        framer.frame(p.as_bytes(), 1);
        assert!(framer.partial[0].buf.capacity() <= 10);
        assert_eq!(framer.floor(), Some(0));
    }

    #[test]
    fn docker_table() {
        let lines = [
            r#"{"log":"{\"level\":\"audit\"}\n","stream":"stdout","time":"2021-08-09T16:02:45.577Z"}"#,
            r#"{"log":"part one ","stream":"stderr","time":"t"}"#,
            r#"{"log":"other\n","stream":"stdout","time":"t"}"#,
            r#"{"log":"part two\n","stream":"stderr","time":"t"}"#,
            r#"{"log": broken"#,
        ];
        assert_eq!(
            run(Format::Docker, 100, &lines),
            vec![
                "stdout@0:{\"level\":\"audit\"}",
                "stdout@2000:other",
                "stderr@1000:part one part two",
                "-@4000:{\"log\": broken",
            ]
        );
    }

    #[test]
    fn kubernetes_api_lines_carry_their_timestamp() {
        assert_eq!(
            run(
                Format::Timestamped,
                100,
                &[
                    "2026-11-23T12:00:00.123456789Z {\"a\": 1}",
                    "2026-11-23T12:00:00.123456789Z ",
                    "no timestamp here",
                ]
            ),
            vec!["-@0:{\"a\": 1}", "-@1000:", "-@2000:no timestamp here"]
        );
        let mut f = Framer::new(Format::Timestamped, 100);
        let Framed::Line(line) = f.frame(b"2026-11-23T12:00:00.5Z x", 0) else {
            panic!("not a line")
        };
        assert_eq!(line.time, Some("2026-11-23T12:00:00.5Z"));
        f.frame(b"garbage", 1);
        assert_eq!(f.malformed, 1);
    }

    #[test]
    fn auto_detects_per_file() {
        assert_eq!(detect(format!("{TS} stdout F x").as_bytes()), Format::Cri);
        assert_eq!(
            detect(br#"{"log":"x\n","stream":"stdout"}"#),
            Format::Docker
        );
        assert_eq!(detect(br#"{"level":"audit"}"#), Format::Raw);
        assert_eq!(
            run(Format::Raw, 5, &["12345", "123456"]),
            vec!["-@0:12345", "oversize@1000"]
        );
    }
}
