//! Immuta: a JSON object with a top-level `"level": "audit"`.
//!
//! ```text
//! {"level":"audit","recordType":"sqlQuery","dateTime":1628524947022,"userId":"…",…}
//! ```
//!
//! Type `/recordType` (`unknown` when missing); time `/dateTime`, else `/timestamp` (epoch
//! milliseconds, as a number or a string, or ISO-8601 text). The object may follow a text
//! prefix. A nested `{"level": "audit"}` (Immuta logs failed queries that way) is not a record.

use super::format::{string_or_unknown, Detected, Format, Signature, Tail};
use super::json::Located;
use super::time::parse_time_value;

pub(crate) struct Immuta;

impl Format for Immuta {
    fn name(&self) -> &str {
        "immuta"
    }

    fn signatures(&self) -> Vec<Signature> {
        // Anchored on the value, which ordinary lines rarely contain, not on the key every
        // JSON log line has.
        vec![Signature::new(
            r#""audit""#,
            Tail::KeyBefore(r#""level""#.into()),
        )]
    }

    fn detect<'a>(&self, _text: &'a str, located: &Located<'a>) -> Option<Detected<'a>> {
        let o = &located.object;
        if o.get_str("level")? != "audit" {
            return None;
        }
        let time = o
            .get("dateTime")
            .and_then(parse_time_value)
            .or_else(|| o.get("timestamp").and_then(parse_time_value));
        Some(Detected::new(string_or_unknown(o.get("recordType")), time))
    }
}
