//! Sym: a LogEntry, a JSON object with a top-level `"type": "event"` and an `event` object.
//!
//! ```text
//! {"id":"…","meta":{…},"event":{"type":"approve","timestamp":"2021-08-09T16:02:45.377+00:00",…},"type":"event"}
//! ```
//!
//! Type `/event/type`, which must be a string: a `"type": "event"` object without one is not a
//! record. Time `/event/timestamp`.

use super::format::{Detected, Format, Signature, Tail};
use super::json::{Located, Object};
use super::time::parse_time_value;

pub(crate) struct Sym;

impl Format for Sym {
    fn name(&self) -> &str {
        "sym"
    }

    fn signatures(&self) -> Vec<Signature> {
        vec![Signature::new(
            r#""event""#,
            Tail::KeyBefore(r#""type""#.into()),
        )]
    }

    fn detect<'a>(&self, _text: &'a str, located: &Located<'a>) -> Option<Detected<'a>> {
        let o = &located.object;
        if o.get_str("type")? != "event" {
            return None;
        }
        let event = Object::parse(o.get("event")?.get())?;
        let record_type = event.get_str("type")?;
        let time = event.get("timestamp").and_then(parse_time_value);
        Some(Detected::new(record_type, time))
    }
}
