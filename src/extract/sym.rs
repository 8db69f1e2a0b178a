//! Sym: a LogEntry, a JSON object with a top-level `"type": "event"` and an `event` object.
//!
//! ```text
//! {"id":"…","meta":{…},"event":{"type":"approve","timestamp":"2021-08-09T16:02:45.377+00:00",…},"type":"event"}
//! ```
//!
//! Type `/event/type`, which must be a string: a `"type": "event"` object without one is not a
//! record. Time `/event/timestamp`. Natural id `/id` (a non-empty string): Sym guarantees it is
//! the same across duplicates of one LogEntry, so it becomes the envelope's `record_id`.

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
        let mut found = Detected::new(record_type, time);
        found.natural_id = o.get_str("id").filter(|id| !id.is_empty());
        Some(found)
    }
}

#[cfg(test)]
mod tests {
    use crate::extract::{AuditConfig, Extraction, Extractor};

    fn natural_id(line: &str) -> Option<String> {
        let x = Extractor::new(&AuditConfig::default()).unwrap();
        let Extraction::Audit(a) = x.extract(line.as_bytes()) else {
            panic!("not a record: {line}")
        };
        a.natural_id.map(|id| id.into_owned())
    }

    #[test]
    fn finding_4_the_log_entry_id_is_the_natural_id() {
        let line = |id: &str| {
            format!(r#"{{"id": {id}, "event": {{"type": "approve"}}, "type": "event"}}"#)
        };
        assert_eq!(
            natural_id(&line(r#""8fcd-7f40""#)).as_deref(),
            Some("8fcd-7f40")
        );
        assert_eq!(natural_id(&line(r#""a\u0062""#)).as_deref(), Some("ab"));
        assert_eq!(natural_id(&line(r#""""#)), None, "an empty id is none");
        assert_eq!(natural_id(&line("7")), None, "Sym's id is a string");
        assert_eq!(
            natural_id(r#"{"event": {"type": "approve"}, "type": "event"}"#),
            None
        );
    }
}
