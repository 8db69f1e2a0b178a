//! What an audit format is: the [`Format`] trait that each built-in format (one file each:
//! `immuta.rs`, `sym.rs`, …) and each custom rule (`rule.rs`) implements.
//!
//! A format answers three questions:
//! - its name, written in `audit.formats` and in every record's `format`;
//! - which byte patterns make a line a *candidate* (its [`Signature`]s, searched for by the
//!   pre-check in `prefilter.rs` before anything is parsed);
//! - whether a JSON object found in a candidate line is one of its records, and if so the
//!   record's type and time.
//!
//! Adding a built-in format: write `extract/<name>.rs` with a unit struct implementing
//! [`Format`], declare the module in `extract/mod.rs` and add one entry to its `BUILTIN` list.
//! The list is the only place that names the formats: `audit.formats`, the default, the names
//! a custom rule may not take and [`super::builtin_names`] all come from it.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

use super::json::{as_str, Located};
pub(crate) use super::prefilter::{Signature, Tail};
use super::{Field, UNKNOWN_TYPE};

/// One audit format. `Sync` because the extractor is shared by every source's thread.
pub(crate) trait Format: Sync {
    /// The name in `audit.formats` and in each record's `format`.
    fn name(&self) -> &str;

    /// The byte patterns whose presence makes a line a candidate for this format. A line
    /// without any of them never reaches [`Format::detect`], so they must hold for every record
    /// of the format; they should be rare in ordinary lines, since each hit costs a parse.
    fn signatures(&self) -> Vec<Signature>;

    /// Whether `located`, a top-level JSON object of the candidate line `text`, is one of this
    /// format's records; if it is, the record's type and time.
    ///
    /// Called only for lines that hold one of [`Format::signatures`], once per object, from
    /// left to right, until some format claims one.
    fn detect<'a>(&self, text: &'a str, located: &Located<'a>) -> Option<Detected<'a>>;

    /// The names of the [`Detected::fields`] this format may find, so that a syslog template
    /// naming one (`{userid}`) is accepted when the config is loaded. None by default.
    fn fields(&self) -> &'static [&'static str] {
        &[]
    }
}

impl std::fmt::Debug for dyn Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What [`Format::detect`] finds about one of its records.
#[derive(Debug)]
pub(crate) struct Detected<'a> {
    /// The record type; [`UNKNOWN_TYPE`] when the record has none.
    pub(crate) record_type: Cow<'a, str>,
    /// The application's own time for the record, when it has one that parses.
    pub(crate) time: Option<DateTime<Utc>>,
    /// The producer's own id for the record (Sym's `id`), when the format has one: records
    /// that share it are, by the producer's word, the same record.
    pub(crate) natural_id: Option<Cow<'a, str>>,
    /// Values the format reads outside the record object (Pryv's `userid` in the text before
    /// it), offered to templates by name.
    pub(crate) fields: Vec<Field<'a>>,
}

impl<'a> Detected<'a> {
    /// A record of `record_type`, with its time when it has one, and nothing else.
    pub(crate) fn new(record_type: Cow<'a, str>, time: Option<DateTime<Utc>>) -> Detected<'a> {
        Detected {
            record_type,
            time,
            natural_id: None,
            fields: Vec::new(),
        }
    }
}

/// A type member's text, or [`UNKNOWN_TYPE`] when it is missing, empty or not a string.
pub(crate) fn string_or_unknown(raw: Option<&RawValue>) -> Cow<'_, str> {
    raw.and_then(as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(Cow::Borrowed(UNKNOWN_TYPE))
}
