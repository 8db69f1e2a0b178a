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
//!
//! Fields: when the text between the tag and the record has exactly the shape Pryv's default
//! template writes, `: {userid} {type} createdBy:{createdBy} {streamIds} ` (single spaces,
//! the three words non-empty and without whitespace, `streamIds` a JSON array), the record
//! carries them as [`Field`]s: `userid`, `type` (Pryv's type, `audit-log/pryv-api`, not the
//! record type), `createdBy` as JSON strings and `streamIds` as the array's exact text. A line
//! of another shape is still a record, without fields: its text stays in the envelope's
//! `prefix` either way.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::format::{Detected, Format, Signature, Tail};
use super::json::{as_str, Located};
use super::Field;

pub(crate) struct Pryv;

/// The fields of Pryv's syslog line, in the order Pryv writes them.
const FIELDS: &[&str] = &["userid", "type", "createdBy", "streamIds"];

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
        let colon = tag + prefix[tag..].find("]:")?;
        let action = as_str(located.object.get("action")?)?;
        let mut found = Detected::new(action, None);
        found.fields = fields(&prefix[colon + 2..]).unwrap_or_default();
        Some(found)
    }

    fn fields(&self) -> &'static [&'static str] {
        FIELDS
    }
}

/// The fields in `between` (the text after `]:` up to the record), when it is
/// ` userid type createdBy:X [streamIds] `.
fn fields(between: &str) -> Option<Vec<Field<'_>>> {
    let rest = between.strip_prefix(' ')?.strip_suffix(' ')?;
    let (userid, rest) = rest.split_once(' ')?;
    let (pryv_type, rest) = rest.split_once(' ')?;
    let (created_by, stream_ids) = rest.strip_prefix("createdBy:")?.split_once(' ')?;
    let word = |w: &str| !w.is_empty() && !w.contains(char::is_whitespace);
    if !(word(userid) && word(pryv_type) && word(created_by)) {
        return None;
    }
    // The array exactly as written: no whitespace around it, and valid JSON.
    if !(stream_ids.starts_with('[') && stream_ids.ends_with(']')) {
        return None;
    }
    let array: &RawValue = serde_json::from_str(stream_ids).ok()?;
    let quoted = |s: &str| Cow::Owned(serde_json::Value::from(s).to_string());
    Some(vec![
        Field {
            name: Cow::Borrowed(FIELDS[0]),
            json: quoted(userid),
        },
        Field {
            name: Cow::Borrowed(FIELDS[1]),
            json: quoted(pryv_type),
        },
        Field {
            name: Cow::Borrowed(FIELDS[2]),
            json: quoted(created_by),
        },
        Field {
            name: Cow::Borrowed(FIELDS[3]),
            json: Cow::Borrowed(array.get()),
        },
    ])
}

#[cfg(test)]
mod tests {
    use crate::extract::{AuditConfig, Extraction, Extractor};

    /// The fields found in `line`, as `name=json`.
    fn found(line: &str) -> Vec<String> {
        let x = Extractor::new(&AuditConfig::default()).unwrap();
        let Extraction::Audit(a) = x.extract(line.as_bytes()) else {
            panic!("not a record: {line}")
        };
        assert_eq!(a.format.as_ref(), "pryv");
        a.fields
            .iter()
            .map(|f| format!("{}={}", f.name, f.json))
            .collect()
    }

    #[test]
    fn finding_3_the_fields_before_the_record_are_read() {
        let line = r#"Oct 26 14:58:46 co1-pryv-li pryv-audit[57]: ck6j759f000011ps2octzo1ds audit-log/pryv-api createdBy:system ["access-ck6j78uj600011ss2neygkpub","action-events.get"] {"source":{"name":"http"},"action":"events.get"}"#;
        assert_eq!(
            found(line),
            [
                r#"userid="ck6j759f000011ps2octzo1ds""#,
                r#"type="audit-log/pryv-api""#,
                r#"createdBy="system""#,
                r#"streamIds=["access-ck6j78uj600011ss2neygkpub","action-events.get"]"#,
            ]
        );
    }

    #[test]
    fn the_stream_ids_are_the_arrays_exact_text_and_may_hold_braces() {
        let line = r#"x pryv-audit[1]: u t createdBy: ["a{b", "c\"d"] {"action":"events.get"}"#;
        assert!(found(line).is_empty(), "createdBy must not be empty");
        let line = r#"x pryv-audit[1]: u t createdBy:c ["a{b", "c\"d"] {"action":"events.get"}"#;
        assert_eq!(found(line)[3], r#"streamIds=["a{b", "c\"d"]"#);
        let line = r#"x pryv-audit[1]: u\ t createdBy:c [] {"action":"events.get"}"#;
        assert_eq!(found(line)[0], r#"userid="u\\""#);
    }

    #[test]
    fn a_line_of_another_shape_is_a_record_without_fields() {
        for line in [
            r#"x pryv-audit[1]: {"action":"events.get"}"#,
            r#"x pryv-audit[1]: u t createdBy:c {"action":"events.get"}"#,
            r#"x pryv-audit[1]: u t creator:c [] {"action":"events.get"}"#,
            r#"x pryv-audit[1]: u  t createdBy:c [] {"action":"events.get"}"#,
            r#"x pryv-audit[1]: u t createdBy:c []  {"action":"events.get"}"#,
            r#"x pryv-audit[1]: u t createdBy:c [1,] {"action":"events.get"}"#,
            r#"x pryv-audit[1]:u t createdBy:c [] {"action":"events.get"}"#,
            r#"x pryv-audit[1]: u t createdBy:c [] x {"action":"events.get"}"#,
        ] {
            assert!(found(line).is_empty(), "{line}");
        }
    }
}
