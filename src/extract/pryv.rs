//! Pryv.io: an audit syslog line, a `pryv-audit[pid]:` tag and then a JSON object with an
//! `action`.
//!
//! ```text
//! Aug 09 16:02:45 host pryv-audit[57]: ck6 audit-log/pryv-api createdBy:system ["a{b","action-events.get"] {"source":{"name":"http"},"action":"events.get"}
//! ```
//!
//! Type `/action`, which must be a string; the record is the first object after the tag that
//! has one (the text and arrays between them are skipped). No record time: the syslog
//! timestamp is not read.

use super::format::{Detected, Format, Signature, Tail};
use super::json::{as_str, Located};

pub(crate) struct Pryv;

impl Format for Pryv {
    fn name(&self) -> &str {
        "pryv"
    }

    fn signatures(&self) -> Vec<Signature> {
        vec![Signature::new("pryv-audit[", Tail::Nothing)]
    }

    fn detect<'a>(&self, text: &'a str, located: &Located<'a>) -> Option<Detected<'a>> {
        let prefix = &text[..located.start];
        let tag = prefix.find("pryv-audit[")?;
        prefix[tag..].find("]:")?;
        let action = as_str(located.object.get("action")?)?;
        Some(Detected::new(action, None))
    }
}
