//! Record times as applications write them: epoch numbers (seconds or milliseconds, as a
//! number or a string of digits) and ISO-8601 text with or without a zone (no zone means UTC,
//! as monolog's `Y-m-d H:i:s` in a container usually is).

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde_json::value::RawValue;

use super::json::as_str;

/// Epoch values below this are seconds, above it milliseconds (1e11 s is the year 5138; 1e11 ms
/// is 1973).
const SECONDS_LIMIT: f64 = 1e11;

/// The time in a raw JSON value, when it is one.
pub(super) fn parse_time_value(raw: &RawValue) -> Option<DateTime<Utc>> {
    let text = raw.get();
    if text.starts_with('"') {
        return parse_time_text(&as_str(raw)?);
    }
    let n: f64 = text.parse().ok()?;
    from_epoch(n)
}

fn from_epoch(n: f64) -> Option<DateTime<Utc>> {
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let millis = if n < SECONDS_LIMIT { n * 1000.0 } else { n };
    DateTime::from_timestamp_millis(millis as i64)
}

/// Parses a time written as text: digits (epoch), RFC 3339, or ISO-8601 without a zone.
pub fn parse_time_text(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return from_epoch(text.parse().ok()?);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    // RFC 3339 with a space instead of `T`, or a zone without a colon (`+0000`).
    for format in [
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(text, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(Utc.from_utc_datetime(&t));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn the_shapes_in_the_seeds() {
        let want = DateTime::parse_from_rfc3339("2021-08-09T16:02:27.022Z").unwrap();
        for s in [
            "1628524947022",
            "\"1628524947022\"",
            "\"2021-08-09T16:02:27.022Z\"",
            "\"2021-08-09T16:02:27.022+00:00\"",
            "\"2021-08-09T18:02:27.022+02:00\"",
        ] {
            assert_eq!(
                parse_time_value(&raw(s)),
                Some(want.with_timezone(&Utc)),
                "{s}"
            );
        }
        assert_eq!(
            parse_time_text("2020-10-27 17:48:39").map(|t| t.to_rfc3339()),
            Some("2020-10-27T17:48:39+00:00".into())
        );
        assert_eq!(
            parse_time_text("1628524947").map(|t| t.timestamp()),
            Some(1628524947)
        );
    }

    #[test]
    fn nonsense_is_no_time_not_an_error() {
        for s in ["\"yesterday\"", "true", "null", "-5", "{}", "\"\""] {
            assert_eq!(parse_time_value(&raw(s)), None, "{s}");
        }
        assert_eq!(parse_time_text("1e400"), None);
    }
}
