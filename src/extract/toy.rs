//! A toy format that exists only in tests. It is here to prove the shape of this module: a new
//! built-in format is one file like this one plus one entry in `BUILTIN`; everything else (the
//! config, the default, the pre-check, the reserved names) follows from the list.
//!
//! ```text
//! {"toy": "audit", "kind": "login", "at": 1628524947}
//! ```
//!
//! Type `/kind`; time `/at`. The object may follow a text prefix.

use super::format::{string_or_unknown, Detected, Format, Signature, Tail};
use super::json::Located;
use super::time::parse_time_value;

pub(crate) struct Toy;

impl Format for Toy {
    fn name(&self) -> &str {
        "toy"
    }

    fn signatures(&self) -> Vec<Signature> {
        vec![Signature::new(
            r#""toy""#,
            Tail::ColonThen(r#""audit""#.into()),
        )]
    }

    fn detect<'a>(&self, _text: &'a str, located: &Located<'a>) -> Option<Detected<'a>> {
        let o = &located.object;
        if o.get_str("toy")? != "audit" {
            return None;
        }
        let time = o.get("at").and_then(parse_time_value);
        Some(Detected::new(string_or_unknown(o.get("kind")), time))
    }
}
