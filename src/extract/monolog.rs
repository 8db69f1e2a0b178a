//! Laravel/monolog, in either of monolog's two shapes:
//!
//! ```text
//! {"channel":"auth","message_slug":"auth-login-success","timestamp":"2021-08-09 16:02:45",…}
//! [2021-08-09 16:02:45] access-manager-auth.INFO: User 7 logged in. {"log_event_type":"auth-login-success",…} []
//! ```
//!
//! - JsonFormatter: an object with a string `/channel` and a string `/message_slug` (the
//!   type); time `/timestamp`.
//! - LineFormatter: `[ts] channel.LEVEL: message {context} [extra]`; the record is the context
//!   object, which must have `log_event_type` (the type); time is the bracketed `ts`, read as
//!   UTC when it has no zone. The trailing `[extra]` is not part of the record.

use super::format::{string_or_unknown, Detected, Format, Signature, Tail};
use super::json::{as_str, Located};
use super::time::{parse_time_text, parse_time_value};

pub(crate) struct Monolog;

impl Format for Monolog {
    fn name(&self) -> &str {
        "monolog"
    }

    fn signatures(&self) -> Vec<Signature> {
        vec![
            Signature::new(r#""message_slug""#, Tail::Colon),
            Signature::new(r#""log_event_type""#, Tail::Colon),
        ]
    }

    fn detect<'a>(&self, text: &'a str, located: &Located<'a>) -> Option<Detected<'a>> {
        let o = &located.object;
        if let (Some(_), Some(slug)) = (o.get_str("channel"), o.get("message_slug")) {
            as_str(slug)?;
            let time = o.get("timestamp").and_then(parse_time_value);
            return Some(Detected::new(string_or_unknown(Some(slug)), time));
        }
        // LineFormatter: `[ts] channel.LEVEL: message {context} [extra]`.
        let event_type = o.get("log_event_type")?;
        let prefix = &text[..located.start];
        let rest = prefix.strip_prefix('[')?;
        let close = rest.find(']')?;
        let header = rest[close + 1..].trim_start();
        // `channel.LEVEL:` must follow the timestamp.
        let colon = header.find(": ")?;
        if !header[..colon].contains('.') {
            return None;
        }
        Some(Detected::new(
            string_or_unknown(Some(event_type)),
            parse_time_text(&rest[..close]),
        ))
    }
}
