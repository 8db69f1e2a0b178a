//! Laravel/monolog: what monolog 1–3 writes with its JsonFormatter or its LineFormatter, and
//! the flattened JSON shape of the seed.
//!
//! ```text
//! {"message":"User 7 logged in","context":{"message_slug":"auth-login-success",…},"level":200,"level_name":"INFO","channel":"auth","datetime":"2021-08-09T16:02:45.123456+00:00","extra":{}}
//! {"channel":"auth","message_slug":"auth-login-success","timestamp":"2021-08-09 16:02:45",…}
//! [2021-08-09 16:02:45] auth.INFO: User 7 logged in. {"log_event_type":"auth-login-success",…}
//! [2021-08-09T16:02:45.123456+00:00] auth.INFO: User 7 logged in. {"log_event_type":"auth-login-success",…} []
//! ```
//!
//! An audit event is a log call whose context holds `log_event_type` or `message_slug` (the
//! record type; when both are there, `log_event_type`), or whose `extra` holds one (a processor
//! put it there). A type that is not a non-empty string is `unknown`. Tried in this order on
//! each object of a candidate line:
//!
//! 1. **Flattened JSON** (the seed's shape): an object with a string `/channel` and a string
//!    `/message_slug` (the type); time `/timestamp`.
//! 2. **JsonFormatter**: an object with a string `/channel` whose `/context` or, failing that,
//!    `/extra` object holds a type key; time `/datetime` (monolog 2–3 write
//!    `Y-m-d\TH:i:s.uP`). The record is the whole object. One record per line, which is also
//!    what `BATCH_MODE_NEWLINES` writes; a `BATCH_MODE_JSON` batch is one JSON array, and a
//!    line that is a JSON array is never an audit record (`extractor.rs`).
//! 3. **LineFormatter** with monolog's default format,
//!    `[%datetime%] %channel%.%level_name%: %message% %context% %extra%`: the record is the
//!    context object, or the extra object when the context has no type key. Both of monolog's
//!    setups are read: its default (`[]` for an empty context or extra, line breaks in the
//!    message replaced by spaces) and Laravel's (`LogManager` builds
//!    `new LineFormatter(null, 'Y-m-d H:i:s', true, true, true)`: an empty context or extra is
//!    left out, so no trailing `[]`, and line breaks are kept). Time: the bracketed
//!    `%datetime%` of a line that starts with the `[ts] channel.LEVEL: ` header, read as UTC
//!    when it has no zone (Laravel's default `Y-m-d H:i:s`, in Laravel's default UTC).
//!
//! The object's place on the line, not the header, makes it the context or the extra, because
//! the message comes before them and can hold anything (JSON objects too):
//! - the context is the object after the message's space and before the end of the line, where
//!   only ` ` (empty extra, left out), ` []` (empty extra) or ` {extra}` may follow;
//! - the extra is the object that ends the line, after `} ` (a context), `[] ` (an empty
//!   context) or two spaces (an empty context, left out).
//!
//! monolog always writes `%context% %extra%` after the message, so a message can never end a
//! physical line that way on the line where the record ends: `msg {"log_event_type":"x"}`
//! with an empty context ends `…}  ` or `…} [] []`, not `…} `. A `\r` before the line's end
//! (a raw file written with `\r\n`) is not part of the layout.
//!
//! **Multi-line messages** (Laravel's setup): a message with line breaks spans several physical
//! lines, and the context and extra are on the last one, which has no `[ts] channel.LEVEL:`
//! header. That continuation line is read like any other: its context (or extra) in its place
//! is the record, shipped once, with its type; its time is not on the line, so the record has
//! none (`time: null`; the container runtime's time of the line is still in `source.time`).
//! The other lines of the message carry no record unless a line of the message itself is laid
//! out exactly like the end of a record (an object holding a type key, then one space and the
//! end of the line): no reader of single lines can tell that text from a record, and it is
//! taken as one. Known losses, each counted, never silent:
//! - a context value with a line break: Laravel's formatter turns its `\n` into a real line
//!   break, so no line holds the context as JSON; the line with the type key is counted
//!   invalid (`invalid_json`);
//! - a message that holds `"log_event_type":` or `"message_slug":` outside any valid JSON
//!   object (pretty-printed JSON cut over lines, say) is counted invalid too, though it is an
//!   ordinary log.
//!
//! Other LineFormatter formats (a custom `format`) are read only when they end with
//! `%context% %extra%` as the default does; without the header their records have no time.

use serde_json::value::RawValue;

use super::format::{string_or_unknown, Detected, Format, Signature, Tail};
use super::json::{as_str, Located, Object};
use super::time::{parse_time_text, parse_time_value};

/// The context (or extra) keys that make a log call an audit event and give its type, in the
/// order they are looked for.
const TYPE_KEYS: [&str; 2] = ["log_event_type", "message_slug"];

/// monolog's level names, as `%level_name%` writes them.
const LEVELS: [&str; 8] = [
    "DEBUG",
    "INFO",
    "NOTICE",
    "WARNING",
    "ERROR",
    "CRITICAL",
    "ALERT",
    "EMERGENCY",
];

pub(crate) struct Monolog;

impl Format for Monolog {
    fn name(&self) -> &str {
        "monolog"
    }

    fn signatures(&self) -> Vec<Signature> {
        // Every shape holds one of the type keys as a member name, nested or not.
        vec![
            Signature::new(r#""message_slug""#, Tail::Colon),
            Signature::new(r#""log_event_type""#, Tail::Colon),
        ]
    }

    fn detect<'a>(&self, text: &'a str, located: &Located<'a>) -> Option<Detected<'a>> {
        let o = &located.object;
        if let (Some(_), Some(slug)) = (o.get_str("channel"), o.get("message_slug")) {
            // The flattened shape, exactly as the seed has it.
            as_str(slug)?;
            let time = o.get("timestamp").and_then(parse_time_value);
            return Some(Detected::new(string_or_unknown(Some(slug)), time));
        }
        json_formatter(o).or_else(|| line_formatter(text, located))
    }
}

/// JsonFormatter: a string `channel`, the type in `context`, else in `extra`.
fn json_formatter<'a>(o: &Object<'a>) -> Option<Detected<'a>> {
    o.get_str("channel")?;
    let record_type = ["context", "extra"]
        .into_iter()
        .filter_map(|member| o.get(member))
        .find_map(type_in)?;
    let time = o.get("datetime").and_then(parse_time_value);
    Some(Detected::new(string_or_unknown(Some(record_type)), time))
}

/// The type key's value in `raw`, when `raw` is an object that has one.
fn type_in(raw: &RawValue) -> Option<&RawValue> {
    let text = raw.get();
    if !text.starts_with('{') {
        return None;
    }
    let object = Object::parse(text)?;
    type_of(&object)
}

fn type_of<'a>(object: &Object<'a>) -> Option<&'a RawValue> {
    TYPE_KEYS.into_iter().find_map(|key| object.get(key))
}

/// LineFormatter: the object is the context or the extra by its place on the line.
fn line_formatter<'a>(text: &'a str, located: &Located<'a>) -> Option<Detected<'a>> {
    let record_type = type_of(&located.object)?;
    let before = &text[..located.start];
    let after = &text[located.end..];
    let after = after.strip_suffix('\r').unwrap_or(after);
    if !(in_context_place(before, after) || in_extra_place(before, after)) {
        return None;
    }
    Some(Detected::new(
        string_or_unknown(Some(record_type)),
        header_time(before),
    ))
}

/// `… {context}` then ` ` (extra left out), ` []` or ` {extra}`, then the end of the line.
fn in_context_place(before: &str, after: &str) -> bool {
    if !before.ends_with(' ') {
        return false;
    }
    match after {
        " " | " []" => true,
        _ => after.strip_prefix(' ').is_some_and(|extra| {
            // The extra runs to the end of the line: `{…} ` after it would be a message's
            // object followed by the context.
            extra.starts_with('{') && extra.ends_with('}') && Object::parse(extra).is_some()
        }),
    }
}

/// `… {context} {extra}`, `… [] {extra}` or `…  {extra}` (context left out), the extra ending
/// the line.
fn in_extra_place(before: &str, after: &str) -> bool {
    after.is_empty()
        && (before.ends_with("} ") || before.ends_with("[] ") || before.ends_with("  "))
}

/// The time of a line that starts with the `[ts] channel.LEVEL: ` header.
fn header_time(before: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let rest = before.strip_prefix('[')?;
    let (ts, header) = rest.split_once("] ")?;
    let (channel_level, _message) = header.split_once(": ")?;
    let (_channel, level) = channel_level.rsplit_once('.')?;
    if !LEVELS.contains(&level) {
        return None;
    }
    parse_time_text(ts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::json::Objects;

    /// (type, time as seconds) of the first record monolog finds in `line`, if any.
    fn found(line: &str) -> Option<(String, Option<i64>, &str)> {
        Objects::new(line).find_map(|located| {
            Monolog.detect(line, &located).map(|d| {
                (
                    d.record_type.into_owned(),
                    d.time.map(|t| t.timestamp()),
                    &line[located.start..located.end],
                )
            })
        })
    }

    #[test]
    fn json_formatter_type_from_context_or_extra_and_time_from_datetime() {
        let line = r#"{"message":"m","context":{"message_slug":"a","x":1},"level":200,"level_name":"INFO","channel":"auth","datetime":"2021-08-09T18:02:45.123456+02:00","extra":{}}"#;
        assert_eq!(found(line), Some(("a".into(), Some(1628524965), line)));
        let line = r#"{"message":"m","context":{"log_event_type":"b"},"channel":"auth","datetime":"2021-08-09T16:02:45+00:00","extra":{"uid":"1"}}"#;
        assert_eq!(found(line).map(|f| f.0), Some("b".into()));
        // Put into extra by a processor; an empty context left out.
        let line = r#"{"message":"m","level":200,"channel":"auth","datetime":"x","extra":{"uid":"1","message_slug":"c"}}"#;
        assert_eq!(found(line), Some(("c".into(), None, line)));
        // Both keys: log_event_type; a type that is not a string: unknown.
        let line = r#"{"context":{"message_slug":"s","log_event_type":"t"},"channel":"a"}"#;
        assert_eq!(found(line).map(|f| f.0), Some("t".into()));
        let line = r#"{"context":{"log_event_type":7},"channel":"a"}"#;
        assert_eq!(found(line).map(|f| f.0), Some("unknown".into()));
        // Not a record: no channel, the key nested deeper, context not an object.
        for line in [
            r#"{"message":"m","context":{"message_slug":"a"},"datetime":"x"}"#,
            r#"{"context":{"data":{"message_slug":"a"}},"channel":"a","extra":{}}"#,
            r#"{"context":"{\"message_slug\":\"a\"}","channel":"a"}"#,
            r#"{"context":[{"message_slug":"a"}],"channel":"a"}"#,
        ] {
            assert_eq!(found(line), None, "{line}");
        }
    }

    #[test]
    fn the_seeds_flattened_shape_is_read_as_before() {
        let line = r#"{"channel": "auth", "message_slug": "auth-login-success", "timestamp": "2021-08-09 16:02:45"}"#;
        assert_eq!(
            found(line),
            Some(("auth-login-success".into(), Some(1628524965), line))
        );
        // A slug that is not a string is not a record, in either JSON shape.
        let line = r#"{"channel": "auth", "message_slug": 1, "context": {"message_slug": "x"}}"#;
        assert_eq!(found(line), None);
    }

    /// (type, time as seconds, record) expected of a line.
    type Found = (&'static str, Option<i64>, &'static str);

    #[test]
    fn line_formatter_context_and_extra_in_their_places() {
        let ctx = r#"{"log_event_type":"a"}"#;
        let cases: &[(String, Option<Found>)] = &[
            // Laravel: no trailing `[]`; with an extra.
            (
                format!("[2021-08-09 16:02:45] auth.INFO: ok {ctx} "),
                Some(("a", Some(1628524965), ctx)),
            ),
            (
                format!("[2021-08-09 16:02:45] auth.INFO: ok {ctx} {{\"uid\":\"1\"}}"),
                Some(("a", Some(1628524965), ctx)),
            ),
            // monolog's default: microseconds and zone, `[]`.
            (
                format!("[2021-08-09T18:02:45.123456+02:00] my.app.NOTICE: ok {ctx} []"),
                Some(("a", Some(1628524965), ctx)),
            ),
            (
                format!("[2021-08-09 16:02:45] auth.INFO: ok {ctx} []\r"),
                Some(("a", Some(1628524965), ctx)),
            ),
            // The slug in extra.
            (
                r#"[2021-08-09 16:02:45] a.INFO: ok [] {"message_slug":"e","uid":"1"}"#.into(),
                Some(("e", Some(1628524965), r#"{"message_slug":"e","uid":"1"}"#)),
            ),
            (
                r#"[2021-08-09 16:02:45] a.INFO: ok  {"message_slug":"e"}"#.into(),
                Some(("e", Some(1628524965), r#"{"message_slug":"e"}"#)),
            ),
            (
                r#"[2021-08-09 16:02:45] a.INFO: ok {"a":1} {"message_slug":"e"}"#.into(),
                Some(("e", Some(1628524965), r#"{"message_slug":"e"}"#)),
            ),
            // A continuation line (multi-line message): no time.
            (format!("to admin {ctx} "), Some(("a", None, ctx))),
            (format!(" {ctx} "), Some(("a", None, ctx))),
            // A header that is not monolog's: the record, without a time.
            (
                format!("[2021-08-09 16:02:45] something else: {ctx} []"),
                Some(("a", None, ctx)),
            ),
            // The message's own objects: never in the context's place.
            (format!("[2021-08-09 16:02:45] a.INFO: see {ctx}  "), None),
            (
                format!("[2021-08-09 16:02:45] a.INFO: see {ctx} [] []"),
                None,
            ),
            (
                format!("[2021-08-09 16:02:45] a.INFO: see {ctx} {{\"b\":1}} "),
                None,
            ),
            (
                format!("[2021-08-09 16:02:45] a.INFO: see {ctx} {{\"b\":1}} []"),
                None,
            ),
            (
                format!("[2021-08-09 16:02:45] a.INFO: see {ctx}  {{\"uid\":\"1\"}}"),
                None,
            ),
            (
                format!("[2021-08-09 16:02:45] a.INFO: see {ctx} upstream {{\"b\":1}} "),
                None,
            ),
            (
                format!("[2021-08-09 16:02:45] a.INFO: see {ctx} []  "),
                None,
            ),
            (format!("{ctx}  "), None),
            (ctx.to_owned(), None),
            (format!("payload: {ctx}"), None),
            (format!("{ctx} "), None),
        ];
        for (line, want) in cases {
            let got = found(line);
            let want = want.map(|(t, s, r)| (t.to_owned(), s, r));
            assert_eq!(got, want, "{line:?}");
        }
    }
}
