//! The cheap pre-check: one pass over a line finds the signatures of every enabled format, so
//! that an ordinary line is dismissed without UTF-8 validation, parsing or allocation.
//!
//! A [`Signature`] is a needle (`"audit"`) plus a [`Tail`], a rule checked around each place the
//! needle occurs (`"level"` and `:` before it, whitespace allowed). All needles go into one
//! multi-needle searcher, so the cost is one pass whatever the number of formats.
//!
//! Guarantees: a line is a candidate for a detector only if one of its signatures is present;
//! the search does no allocation and calls no detector code while it scans.

use aho_corasick::AhoCorasick;

/// At most this many detectors are candidates at once (a bit set).
pub(crate) const MAX_DETECTORS: usize = 64;

/// At most this many signature positions are kept per line: enough to tell, when no record is
/// found, a signature inside valid JSON (ordinary) from one outside it (invalid).
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
}

impl Prefilter {
    /// Builds the searcher from `(detector, signature)` pairs; detectors are numbered from 0
    /// and below [`MAX_DETECTORS`].
    pub(crate) fn new(
        signatures: Vec<(usize, Signature)>,
    ) -> Result<Prefilter, aho_corasick::BuildError> {
        let (needles, patterns) = distinct(signatures);
        let needles: Vec<&[u8]> = needles.iter().map(Vec::as_slice).collect();
        let finder = Finder::new(&needles)?;
        Ok(Prefilter { patterns, finder })
    }

    /// Which detectors' signatures are present in `line`, and where.
    pub(crate) fn scan(&self, line: &[u8]) -> Candidates {
        let mut found = Candidates {
            detectors: 0,
            hits: [0; MAX_HITS],
            nhits: 0,
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
            }
        });
        found
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
#[derive(Debug)]
enum Finder {
    Packed(aho_corasick::packed::Searcher),
    Automaton(AhoCorasick),
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
        }
    }
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
}
