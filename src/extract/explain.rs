//! What the extractor decided about one line, and why: the trace `check --explain` prints.
//!
//! There is one walk over a line ([`Extractor::walk`](super::extractor)): the pre-check, then
//! the candidate's top-level JSON objects from left to right and, for each, every candidate
//! detector in configured order. It tells an [`Observer`] each decision as it makes it.
//! [`Extractor::extract`] walks with [`Quiet`], whose methods are empty and compile away, so the
//! ordinary-line fast path costs what it did (no allocation, nothing after the pre-check);
//! [`Extractor::explain`] walks with a [`Trace`], which writes the decisions down. The trace is
//! therefore what `extract` did, never a second implementation of it.

use std::sync::Arc;

use super::json::{Located, Rejected};
use super::prefilter::Candidates;
use super::{Extraction, Extractor};

/// Told every decision of the walk over one line, in order. Every method does nothing unless
/// implemented.
pub(super) trait Observer {
    /// The pre-check's result (an empty one ends the walk: the line is ordinary).
    #[inline(always)]
    fn scanned(&mut self, _candidates: &Candidates) {}
    /// A `{` that starts no valid JSON object.
    #[inline(always)]
    fn rejected(&mut self, _rejected: &Rejected) {}
    /// A top-level JSON object, before any detector looks at it.
    #[inline(always)]
    fn object(&mut self, _located: &Located<'_>) {}
    /// A candidate detector looked at the last object: whether it claimed it as its record.
    #[inline(always)]
    fn tried(&mut self, _detector: &Arc<str>, _claimed: bool) {}
    /// No detector claimed any object: which signature positions lie inside a valid object.
    #[inline(always)]
    fn coverage(&mut self, _hits: &[usize], _covered: &[bool]) {}
    /// The whole line is valid JSON but not an object (an array, say): ordinary, not searched.
    #[inline(always)]
    fn not_an_object(&mut self) {}
}

/// The observer of [`Extractor::extract`]: nothing is recorded.
pub(super) struct Quiet;

impl Observer for Quiet {}

/// What the walk over one line decided, for `check --explain`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Trace {
    /// The detectors whose signature the pre-check found, in configured order; empty for an
    /// ordinary line, which is not parsed.
    pub candidates: Vec<Arc<str>>,
    /// Where the first signatures start (at most four are kept).
    pub hits: Vec<usize>,
    /// The top-level JSON objects found, left to right, until one was claimed.
    pub objects: Vec<ObjectTrace>,
    /// The `{` positions that start no valid object, with the parser's error.
    pub rejected: Vec<RejectedTrace>,
    /// Signature positions that lie in no valid object (a reason to call a line invalid);
    /// `None` when the walk did not get that far (ordinary, invalid UTF-8, or claimed).
    pub outside: Option<Vec<usize>>,
    /// The whole line is valid JSON that is not an object, so nothing in it is searched.
    pub not_an_object: bool,
    /// The detectors in configured order, to name them from the pre-check's bit set.
    names: Vec<Arc<str>>,
}

/// One top-level object and what each candidate detector said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectTrace {
    pub start: usize,
    pub end: usize,
    /// `(detector, claimed)`, in the order they were asked.
    pub tried: Vec<(Arc<str>, bool)>,
}

/// A `{` that starts no valid JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedTrace {
    pub start: usize,
    /// The byte of the line where the parser gave up.
    pub at: usize,
    /// The parser's message, without its position.
    pub error: String,
}

impl Observer for Trace {
    fn scanned(&mut self, candidates: &Candidates) {
        self.candidates = self
            .names
            .iter()
            .enumerate()
            .filter(|(d, _)| candidates.includes(*d))
            .map(|(_, n)| n.clone())
            .collect();
        self.hits = candidates.hits().to_vec();
    }

    fn rejected(&mut self, rejected: &Rejected) {
        // The message ends with serde_json's position, relative to the `{`: said as `at`.
        let message = rejected.error.to_string();
        let error = match message.rfind(" at line ") {
            Some(i) => message[..i].to_owned(),
            None => message,
        };
        // serde_json's column is 1 + the byte index (from the `{`) where it gave up.
        let at = rejected.start + rejected.error.column().saturating_sub(1);
        self.rejected.push(RejectedTrace {
            start: rejected.start,
            at,
            error,
        });
    }

    fn object(&mut self, located: &Located<'_>) {
        self.objects.push(ObjectTrace {
            start: located.start,
            end: located.end,
            tried: Vec::new(),
        });
    }

    fn tried(&mut self, detector: &Arc<str>, claimed: bool) {
        if let Some(o) = self.objects.last_mut() {
            o.tried.push((detector.clone(), claimed));
        }
    }

    fn not_an_object(&mut self) {
        self.not_an_object = true;
    }

    fn coverage(&mut self, hits: &[usize], covered: &[bool]) {
        self.outside = Some(
            hits.iter()
                .zip(covered)
                .filter(|(_, c)| !**c)
                .map(|(h, _)| *h)
                .collect(),
        );
    }
}

impl Extractor {
    /// Decides what `line` is, as [`Extractor::extract`] does, and says why.
    pub fn explain<'a>(&'a self, line: &'a [u8]) -> (Extraction<'a>, Trace) {
        let mut trace = Trace {
            names: self.names().cloned().collect(),
            ..Trace::default()
        };
        let extraction = self.walk(line, &mut trace);
        (extraction, trace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::{AuditConfig, InvalidReason};

    fn explain(line: &str) -> (String, Trace) {
        let x = Extractor::new(&AuditConfig::default()).unwrap();
        let (extraction, trace) = x.explain(line.as_bytes());
        let what = match extraction {
            Extraction::Ordinary => "ordinary".to_owned(),
            Extraction::Invalid(r) => r.as_str().to_owned(),
            Extraction::Audit(a) => format!("{} {}", a.format, a.record_type),
        };
        (what, trace)
    }

    #[test]
    fn the_trace_follows_the_walk() {
        let (what, t) = explain("just a line");
        assert_eq!(
            (what.as_str(), t.candidates.len(), t.objects.len()),
            ("ordinary", 0, 0)
        );

        let line = r#"x {"a": 1 {"level": "audit", "recordType": "r"} tail"#;
        let (what, t) = explain(line);
        assert_eq!(what, "immuta r");
        assert_eq!(t.candidates, [Arc::from("immuta")]);
        assert_eq!(t.rejected.len(), 1);
        assert_eq!((t.rejected[0].start, t.rejected[0].at), (2, 10));
        assert_eq!(t.rejected[0].error, "expected `,` or `}`");
        assert_eq!(t.objects.len(), 1);
        assert_eq!(t.objects[0].tried, [(Arc::from("immuta"), true)]);
        assert_eq!(t.outside, None, "claimed: no coverage needed");

        let (what, t) = explain(r#"{"level":"audit""#);
        assert_eq!(what, InvalidReason::Json.as_str());
        assert_eq!(t.outside, Some(vec![9]));
    }
}
