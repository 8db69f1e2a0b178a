//! The cheap pre-check: one pass over a line finds the signatures of every enabled format, so
//! that an ordinary line is dismissed without UTF-8 validation, parsing or allocation.
//!
//! A [`Signature`] is a needle (`"audit"`) plus a [`Tail`], a rule checked around each place the
//! needle occurs (`"level"` and `:` before it, whitespace allowed). All needles go into one
//! multi-needle searcher, so the cost is one pass whatever the number of formats.
//!
//! Guarantees: a line is a candidate for a detector if and only if one of its signatures is
//! present, wherever other needles occur; the search does no allocation and calls no detector
//! code while it scans.

use aho_corasick::AhoCorasick;

/// At most this many detectors are candidates at once (a bit set).
pub(crate) const MAX_DETECTORS: usize = 64;

/// At most this many signature positions are kept per line by the scan, without allocating;
/// a line with more, when no record is found in it, is searched again for all of them
/// ([`Prefilter::all_hits`]), as each one inside no valid JSON makes the line invalid.
pub(crate) const MAX_HITS: usize = 4;

/// A byte pattern whose presence makes a line a candidate for one detector: the needle found
/// by the searcher, then what must surround it.
#[derive(Debug, Clone)]
pub(crate) struct Signature {
    pub(crate) needle: Vec<u8>,
    pub(crate) tail: Tail,
}

impl Signature {
    pub(crate) fn new(needle: impl Into<Vec<u8>>, tail: Tail) -> Signature {
        Signature {
            needle: needle.into(),
            tail,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Tail {
    /// Nothing more.
    Nothing,
    /// Optional whitespace, `:`.
    Colon,
    /// Optional whitespace, `:`, optional whitespace, then these exact bytes.
    ColonThen(Vec<u8>),
    /// The needle is a value: before it come these exact bytes (a key), optional whitespace,
    /// `:`, optional whitespace.
    KeyBefore(Vec<u8>),
}

/// The signatures of every enabled detector and the searcher built from their needles.
#[derive(Debug)]
pub(crate) struct Prefilter {
    /// Per distinct needle, in the searcher's pattern order: each detector that has it, with
    /// its tail. The searcher reports one pattern per place, so detectors that share a needle
    /// (two rules keyed on `"kind"`) share its pattern; each still gets its bit.
    patterns: Vec<Sharers>,
    finder: Finder,
}

/// What the pre-check found in a line.
#[derive(Debug)]
pub(crate) struct Candidates {
    /// Bit `d` is set when a signature of detector `d` is present.
    detectors: u64,
    /// Where the first signatures start.
    hits: [usize; MAX_HITS],
    nhits: usize,
    /// More signatures were found than `hits` holds ([`Prefilter::all_hits`] has them all).
    more: bool,
}

impl Candidates {
    /// No signature at all: the line is ordinary.
    pub(crate) fn is_empty(&self) -> bool {
        self.detectors == 0
    }

    /// Whether detector `d` may claim the line.
    pub(crate) fn includes(&self, d: usize) -> bool {
        self.detectors & (1 << d) != 0
    }

    /// The start of the first (at most [`MAX_HITS`]) signatures found.
    pub(crate) fn hits(&self) -> &[usize] {
        &self.hits[..self.nhits]
    }

    /// Whether more signatures were found than [`Candidates::hits`] holds.
    pub(crate) fn more(&self) -> bool {
        self.more
    }
}

impl Prefilter {
    /// Builds the searcher from `(detector, signature)` pairs; detectors are numbered from 0
    /// and below [`MAX_DETECTORS`].
    pub(crate) fn new(
        signatures: Vec<(usize, Signature)>,
    ) -> Result<Prefilter, aho_corasick::BuildError> {
        let (needles, patterns) = distinct(signatures);
        let needles: Vec<&[u8]> = needles.iter().map(Vec::as_slice).collect();
        let finder = if any_overlap(&needles) {
            Finder::Overlapping(AhoCorasick::new(&needles)?)
        } else {
            Finder::new(&needles)?
        };
        Ok(Prefilter { patterns, finder })
    }

    /// Which detectors' signatures are present in `line`, and where.
    pub(crate) fn scan(&self, line: &[u8]) -> Candidates {
        let mut found = Candidates {
            detectors: 0,
            hits: [0; MAX_HITS],
            nhits: 0,
            more: false,
        };
        self.finder.for_each_match(line, |m| {
            let mut hit = false;
            for (detector, tail) in &self.patterns[m.pattern().as_usize()] {
                if tail.matches(&line[..m.start()], &line[m.end()..]) {
                    found.detectors |= 1 << detector;
                    hit = true;
                }
            }
            if hit && found.nhits < MAX_HITS {
                found.hits[found.nhits] = m.start();
                found.nhits += 1;
            } else if hit {
                found.more = true;
            }
        });
        found
    }

    /// Where every signature in `line` starts: for the rare line with more than
    /// [`MAX_HITS`], whose every place must be checked before it is called ordinary.
    pub(crate) fn all_hits(&self, line: &[u8]) -> Vec<usize> {
        let mut hits = Vec::new();
        self.finder.for_each_match(line, |m| {
            let patterns = &self.patterns[m.pattern().as_usize()];
            if patterns
                .iter()
                .any(|(_, tail)| tail.matches(&line[..m.start()], &line[m.end()..]))
            {
                hits.push(m.start());
            }
        });
        hits
    }
}

/// The detectors that have one needle, each with its tail.
type Sharers = Vec<(usize, Tail)>;

/// The distinct needles, in the order first given, and per needle its detectors and tails.
fn distinct(signatures: Vec<(usize, Signature)>) -> (Vec<Vec<u8>>, Vec<Sharers>) {
    let mut needles: Vec<Vec<u8>> = Vec::new();
    let mut patterns: Vec<Sharers> = Vec::new();
    for (detector, s) in signatures {
        match needles.iter().position(|n| *n == s.needle) {
            Some(i) => patterns[i].push((detector, s.tail)),
            None => {
                needles.push(s.needle);
                patterns.push(vec![(detector, s.tail)]);
            }
        }
    }
    (needles, patterns)
}

// === impl Finder ===

/// The multi-needle search of the pre-check: the SIMD "packed" (Teddy) searcher where the CPU
/// has it, a plain Aho-Corasick automaton otherwise. (Aho-Corasick's own prefilter keys on the
/// rarest byte of the needles, here `"`, which JSON lines are full of: the packed searcher is
/// about ten times faster on them.)
///
/// Both report non-overlapping matches, leftmost first: a needle whose place in the line
/// overlaps another needle's match is not reported there. When two needles can overlap (a
/// rule's `signature: 'slug":"auth'` and monolog's `"message_slug"`, `-audit[` inside
/// `pryv-audit[`), every match is reported instead, overlapping or not ([`any_overlap`]).
#[derive(Debug)]
enum Finder {
    Packed(aho_corasick::packed::Searcher),
    Automaton(AhoCorasick),
    /// A standard automaton searched for overlapping matches.
    Overlapping(AhoCorasick),
}

impl Finder {
    fn new(needles: &[&[u8]]) -> Result<Finder, aho_corasick::BuildError> {
        let mut builder = aho_corasick::packed::Config::new().builder();
        builder.extend(needles);
        if let Some(searcher) = builder.build() {
            return Ok(Finder::Packed(searcher));
        }
        AhoCorasick::new(needles).map(Finder::Automaton)
    }

    /// Calls `each` for every needle found, left to right. The searcher is chosen once per
    /// line and the loop under it is generic over `each`: no boxed iterator to allocate and
    /// no virtual call per match.
    fn for_each_match(&self, haystack: &[u8], each: impl FnMut(aho_corasick::Match)) {
        match self {
            Finder::Packed(s) => s.find_iter(haystack).for_each(each),
            Finder::Automaton(a) => a.find_iter(haystack).for_each(each),
            Finder::Overlapping(a) => a.find_overlapping_iter(haystack).for_each(each),
        }
    }
}

/// Whether two of the needles can share bytes where they occur in a line: one inside the
/// other, or an end of one that is a start of the other. Two quoted member names (`"kind"`,
/// `"level"`: a `"`, no other `"`, a `"`) sharing only a quote are not counted: in JSON a
/// closing quote is never also an opening one, so that overlap is never a member name.
fn any_overlap(needles: &[&[u8]]) -> bool {
    let quoted = |n: &[u8]| {
        n.len() >= 2 && n[0] == b'"' && n[n.len() - 1] == b'"' && !n[1..n.len() - 1].contains(&b'"')
    };
    let contains =
        |hay: &[u8], n: &[u8]| n.len() <= hay.len() && hay.windows(n.len()).any(|w| w == n);
    let pair = |a: &[u8], b: &[u8]| {
        let tokens = quoted(a) && quoted(b);
        let joins = |x: &[u8], y: &[u8]| {
            (1..x.len().min(y.len())).any(|k| x[x.len() - k..] == y[..k] && !(tokens && k == 1))
        };
        contains(a, b) || contains(b, a) || joins(a, b) || joins(b, a)
    };
    needles
        .iter()
        .enumerate()
        .any(|(i, a)| needles[i + 1..].iter().any(|b| pair(a, b)))
}

// === impl Tail ===

fn skip_ws(b: &[u8]) -> &[u8] {
    let n = b
        .iter()
        .position(|c| !matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(b.len());
    &b[n..]
}

fn skip_ws_back(b: &[u8]) -> &[u8] {
    let n = b
        .iter()
        .rposition(|c| !matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
        .map_or(0, |i| i + 1);
    &b[..n]
}

impl Tail {
    fn matches(&self, before: &[u8], after: &[u8]) -> bool {
        match self {
            Tail::KeyBefore(key) => match skip_ws_back(before).split_last() {
                Some((b':', rest)) => skip_ws_back(rest).ends_with(key),
                _ => false,
            },
            Tail::Nothing => true,
            Tail::Colon => skip_ws(after).first() == Some(&b':'),
            Tail::ColonThen(value) => match skip_ws(after).split_first() {
                Some((b':', rest)) => skip_ws(rest).starts_with(value),
                _ => false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signatures() -> Vec<(usize, Signature)> {
        vec![
            (
                0,
                Signature::new(r#""audit""#, Tail::KeyBefore(r#""level""#.into())),
            ),
            (1, Signature::new(r#""message_slug""#, Tail::Colon)),
            (
                1,
                Signature::new(r#""kind""#, Tail::ColonThen(r#""audit""#.into())),
            ),
            (2, Signature::new("pryv-audit[", Tail::Nothing)),
        ]
    }

    #[test]
    fn the_fallback_automaton_finds_what_the_packed_searcher_finds() {
        let packed = Prefilter::new(signatures()).unwrap();
        let mut automaton = Prefilter::new(signatures()).unwrap();
        let (needles, _) = distinct(signatures());
        automaton.finder = Finder::Automaton(AhoCorasick::new(needles).unwrap());
        for (line, detectors, hits) in [
            ("just a log line", 0, vec![]),
            (r#"{"level" : "audit"}"#, 0b001, vec![11]),
            (r#"{"note": "audit"}"#, 0, vec![]),
            (r#"{"message_slug": 1, "kind":"audit"}"#, 0b010, vec![1, 20]),
            (r#"{"kind": "other"}"#, 0, vec![]),
            (r#"x pryv-audit[1]: {"level":"audit"}"#, 0b101, vec![2, 26]),
        ] {
            for (name, prefilter) in [("packed", &packed), ("automaton", &automaton)] {
                let found = prefilter.scan(line.as_bytes());
                assert_eq!(found.detectors, detectors, "{name}: {line}");
                assert_eq!(found.hits(), hits, "{name}: {line}");
            }
        }
    }

    #[test]
    fn detectors_that_share_a_needle_are_each_candidates() {
        // Two rules keyed on the same member (`"kind"`), and a rule that shares a built-in's
        // needle: the searcher reports one pattern per place, so each detector must still
        // get its bit from it.
        let signatures = || {
            vec![
                (
                    0,
                    Signature::new(r#""kind""#, Tail::ColonThen(r#""a""#.into())),
                ),
                (
                    1,
                    Signature::new(r#""kind""#, Tail::ColonThen(r#""b""#.into())),
                ),
                (2, Signature::new(r#""message_slug""#, Tail::Colon)),
                (3, Signature::new(r#""message_slug""#, Tail::Colon)),
            ]
        };
        let packed = Prefilter::new(signatures()).unwrap();
        let mut automaton = Prefilter::new(signatures()).unwrap();
        let (needles, _) = distinct(signatures());
        automaton.finder = Finder::Automaton(AhoCorasick::new(needles).unwrap());
        for (line, detectors, hits) in [
            (r#"{"kind": "a"}"#, 0b0001, vec![1]),
            (r#"{"kind": "b"}"#, 0b0010, vec![1]),
            (r#"{"message_slug": "x"}"#, 0b1100, vec![1]),
        ] {
            for (name, prefilter) in [("packed", &packed), ("automaton", &automaton)] {
                let found = prefilter.scan(line.as_bytes());
                assert_eq!(found.detectors, detectors, "{name}: {line}");
                assert_eq!(found.hits(), hits, "{name}: {line}");
            }
        }
    }

    /// Finding (adv15) 2: the searcher reports non-overlapping matches, leftmost first, so a
    /// needle that overlaps another's match in the line (a rule's `signature: 'slug":"auth'`
    /// inside monolog's `"message_slug"`, or two needles starting at one place) was never
    /// reported: its detector was never a candidate, and as the winning needle sat inside a
    /// valid object the line was `ordinary`, the record silently lost.
    #[test]
    fn finding_2_needles_that_overlap_in_the_line_each_get_their_detector() {
        let signatures = || {
            vec![
                (0, Signature::new(r#""message_slug""#, Tail::Colon)),
                (1, Signature::new(r#"slug":"auth"#, Tail::Nothing)),
                (2, Signature::new(r#""kind""#, Tail::Colon)),
                (3, Signature::new(r#""kind":"audit"#, Tail::Nothing)),
                (4, Signature::new("pryv-audit[", Tail::Nothing)),
                (5, Signature::new("-audit[", Tail::Nothing)),
            ]
        };
        let prefilter = Prefilter::new(signatures()).unwrap();
        for (line, detectors) in [
            (r#"{"message_slug":"auth-x"}"#, 0b000011),
            (r#"{"kind":"audit"}"#, 0b001100),
            (r#"x pryv-audit[1]: {"a":1}"#, 0b110000),
            (r#"x my-audit[1]: {"a":1}"#, 0b100000),
        ] {
            let found = prefilter.scan(line.as_bytes());
            assert_eq!(found.detectors, detectors, "{line}");
        }
        // Quoted member names sharing no more than a quote keep the packed searcher.
        let names: [&[u8]; 5] = [
            br#""audit""#,
            br#""event""#,
            br#""message_slug""#,
            br#""log_event_type""#,
            b"pryv-audit[",
        ];
        assert!(!any_overlap(&names));
        assert!(any_overlap(&[br#""kind""#, br#""kind":"a"#]));
    }
}
