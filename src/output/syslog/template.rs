//! `outputs.syslog.template`: the text of each syslog message, from the record's envelope.
//!
//! A template is literal text with placeholders in braces, parsed once when the config is
//! loaded:
//! - `{content}`: the record's JSON text exactly as in the envelope (as the application wrote
//!   it);
//! - `{id}`, `{type}`, `{format}`, `{time}`, `{observed_time}`, `{prefix}`, `{suffix}`,
//!   `{retention.class}`, `{retention.days}`, `{retention.expires_at}`, `{source.file}`,
//!   `{source.stream}`, `{source.offset}`, `{source.time}`, `{kubernetes.pod}` (any path under
//!   `kubernetes.` or `record.`), `{retention}`, …: envelope fields by dotted path;
//! - `{userid}`, `{type}`, `{createdBy}`, `{streamIds}`: the fields a format read outside the
//!   record (the envelope's `fields`; Pryv's syslog line has these four), so Pryv's own
//!   `AUDIT_SYSLOG_FORMAT` template `{userid} {type} createdBy:{createdBy} {streamIds} {content}`
//!   works as written;
//! - `{/json/pointer}`: a member of the record object (RFC 6901: `~1` is `/`, `~0` is `~`);
//! - `{{` and `}}`: literal braces.
//!
//! A bare name (no dot) that a format may read as a field is looked up in the record's
//! `fields` first, then in the envelope: for a Pryv line `{type}` is Pryv's type
//! (`audit-log/pryv-api`), as in Pryv's template, and for a record without that field (any
//! other format, or a Pryv line of another shape) the envelope's record type (`events.get`).
//! Either is named explicitly: `{fields.type}` is only the format's field (a custom rule's
//! fields, which the config names, are always written this way: `{fields.amount}`), `{envelope.type}`
//! (any envelope path after `envelope.`) only the envelope's. The bare names accepted are the
//! envelope's and those the extract module lists ([`crate::extract::field_names`]); any other
//! name is refused with its column (a typo such as `{userId}` is caught at config load): a
//! member of the record is named by a pointer (`{/userId}`).
//!
//! Rendering: strings without quotes, other JSON values as compact JSON (number text kept as
//! written); a missing member, `null` or an empty string renders `-`; `\n` and `\r` in
//! anything rendered (values and literal text) are written as the two characters `\n` / `\r`,
//! so one record is always one line.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::value::RawValue;

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Literal text, newlines already escaped.
    Literal(String),
    /// The record's JSON text.
    Content,
    /// An envelope field by its dotted path.
    Field(Vec<String>),
    /// A bare name a format may read: the record's field of that name, else the envelope's.
    Named(String),
    /// A JSON pointer into the record, as reference tokens (unescaped).
    Pointer(Vec<String>),
}

/// Why a template was refused; `column` counts characters from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {problem}")]
pub(crate) struct TemplateError {
    pub column: usize,
    pub problem: TemplateProblem,
}

/// What is wrong at that column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TemplateProblem {
    #[error("a lone `}}` (write `}}}}` for a literal brace)")]
    LoneBrace,
    #[error("`{{` inside the placeholder opened at column {opened}")]
    NestedBrace { opened: usize },
    #[error("the placeholder is not closed by `}}` (write `{{{{` for a literal brace)")]
    Unclosed,
    #[error("an empty placeholder `{{}}` (write `{{{{}}}}` for literal braces)")]
    Empty,
    #[error("{{{name}}} is not a placeholder: name an envelope field by its dotted path ({FIELD_LIST}) or a member of the record by a JSON pointer ({{/userId}})")]
    Malformed { name: String },
    #[error("{{{name}}} is not an envelope field ({FIELD_LIST}) nor a format's field ({fields}){}", pointer_hint(.name))]
    UnknownField { name: String, fields: String },
    #[error("{{{text}}} is not a JSON pointer: `~` must be followed by 0 or 1")]
    BadPointer { text: String },
}

/// For a single word that is not a field: how to name a member of the record instead.
fn pointer_hint(name: &str) -> String {
    if name.contains('.') {
        String::new()
    } else {
        format!("; a member of the record is named by a JSON pointer: {{/{name}}}")
    }
}

/// Envelope fields a placeholder may name, with the members of the fixed objects.
const TOP_FIELDS: &[&str] = &[
    "id",
    "record_id",
    "type",
    "format",
    "time",
    "observed_time",
    "retention",
    "source",
    "kubernetes",
    "prefix",
    "suffix",
    "record",
    "fields",
];
const RETENTION_FIELDS: &[&str] = &["class", "days", "expires_at"];
const SOURCE_FIELDS: &[&str] = &["file", "stream", "offset", "time"];

pub(crate) const FIELD_LIST: &str =
    "id, record_id, type, format, time, observed_time, prefix, suffix, content, \
     retention.class, retention.days, retention.expires_at, source.file, source.stream, \
     source.offset, source.time, kubernetes.*, fields.*, envelope.*";

impl Template {
    /// Parses `text`, accepting the field names of the built-in formats; the first problem is
    /// reported with its column.
    pub(crate) fn parse(text: &str) -> Result<Template, TemplateError> {
        Template::parse_with_fields(text, &crate::extract::field_names())
    }

    /// Parses `text`, accepting `fields` as the names of format fields.
    pub(crate) fn parse_with_fields(
        text: &str,
        fields: &[&str],
    ) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().enumerate().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().is_some_and(|&(_, n)| n == '{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().is_some_and(|&(_, n)| n == '}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => {
                    return Err(TemplateError {
                        column: i + 1,
                        problem: TemplateProblem::LoneBrace,
                    })
                }
                '{' => {
                    let column = i + 1;
                    let mut name = String::new();
                    let mut closed = false;
                    for (j, c) in chars.by_ref() {
                        match c {
                            '}' => {
                                closed = true;
                                break;
                            }
                            '{' => {
                                return Err(TemplateError {
                                    column: j + 1,
                                    problem: TemplateProblem::NestedBrace { opened: column },
                                })
                            }
                            c => name.push(c),
                        }
                    }
                    if !closed {
                        return Err(TemplateError {
                            column,
                            problem: TemplateProblem::Unclosed,
                        });
                    }
                    let part = placeholder(&name, fields)
                        .map_err(|problem| TemplateError { column, problem })?;
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(part);
                }
                '\n' => literal.push_str("\\n"),
                '\r' => literal.push_str("\\r"),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template { parts })
    }

    /// Appends the text of the record whose envelope is `envelope` to `out`. An envelope that
    /// is not a JSON object (which auditrail never builds) renders every placeholder `-`.
    pub(crate) fn render(&self, envelope: &[u8], out: &mut Vec<u8>) {
        let top: BTreeMap<String, &RawValue> =
            if self.parts.iter().all(|p| matches!(p, Part::Literal(_))) {
                BTreeMap::new()
            } else {
                serde_json::from_slice(envelope).unwrap_or_default()
            };
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.extend_from_slice(text.as_bytes()),
                Part::Content => match top.get("record") {
                    Some(raw) => push_escaped(out, raw.get()),
                    None => out.push(b'-'),
                },
                Part::Field(path) => {
                    let value = path.split_first().and_then(|(first, rest)| {
                        lookup(top.get(first.as_str()).copied()?, rest.iter())
                    });
                    push_value(out, value);
                }
                Part::Named(name) => {
                    let field = top
                        .get("fields")
                        .and_then(|fields| lookup(fields, std::iter::once(name)));
                    push_value(out, field.or_else(|| top.get(name.as_str()).copied()));
                }
                Part::Pointer(tokens) => {
                    let value = top
                        .get("record")
                        .copied()
                        .and_then(|record| lookup(record, tokens.iter()));
                    push_value(out, value);
                }
            }
        }
    }
}

/// The part a placeholder's text names, or why it names none; `fields` are the names of
/// the format fields.
fn placeholder(name: &str, fields: &[&str]) -> Result<Part, TemplateProblem> {
    if name.is_empty() {
        return Err(TemplateProblem::Empty);
    }
    if name.starts_with('/') {
        return pointer(name).map(Part::Pointer);
    }
    if name == "content" {
        return Ok(Part::Content);
    }
    let segments: Vec<&str> = name.split('.').collect();
    let well_formed = segments.iter().all(|s| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    });
    if !well_formed {
        return Err(TemplateProblem::Malformed {
            name: name.to_owned(),
        });
    }
    let envelope_path = |path: &[&str]| match path {
        [top] => TOP_FIELDS.contains(top),
        ["retention", field] => RETENTION_FIELDS.contains(field),
        ["source", field] => SOURCE_FIELDS.contains(field),
        // The pod metadata, the record itself and the fields (a custom rule names its own in
        // the config) are open-ended.
        ["fields", _] | ["kubernetes" | "record", ..] => true,
        _ => false,
    };
    let part = match segments[..] {
        [bare] if fields.contains(&bare) => Some(Part::Named(bare.to_owned())),
        ["envelope", ref path @ ..] if envelope_path(path) => {
            Some(Part::Field(path.iter().map(|s| (*s).to_owned()).collect()))
        }
        ["envelope", ..] => None,
        ref path if envelope_path(path) => {
            Some(Part::Field(path.iter().map(|s| (*s).to_owned()).collect()))
        }
        _ => None,
    };
    part.ok_or_else(|| TemplateProblem::UnknownField {
        name: name.to_owned(),
        fields: fields.join(", "),
    })
}

/// The reference tokens of an RFC 6901 pointer (which starts with `/`).
fn pointer(text: &str) -> Result<Vec<String>, TemplateProblem> {
    let mut tokens = Vec::new();
    for raw in text[1..].split('/') {
        let mut token = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '~' {
                match chars.next() {
                    Some('0') => token.push('~'),
                    Some('1') => token.push('/'),
                    _ => {
                        return Err(TemplateProblem::BadPointer {
                            text: text.to_owned(),
                        })
                    }
                }
            } else {
                token.push(c);
            }
        }
        tokens.push(token);
    }
    Ok(tokens)
}

/// Follows `path` from `root`: object members by name, array elements by index.
fn lookup<'a, S: AsRef<str> + 'a>(
    root: &'a RawValue,
    path: impl Iterator<Item = &'a S>,
) -> Option<&'a RawValue> {
    let mut at = root;
    for step in path {
        let step = step.as_ref();
        at = match at.get().trim_start().as_bytes().first() {
            Some(b'{') => {
                let members: BTreeMap<String, &'a RawValue> =
                    serde_json::from_str(at.get()).ok()?;
                members.get(step).copied()?
            }
            Some(b'[') => {
                // RFC 6901: an index is `0` or digits without a leading zero.
                if step.is_empty()
                    || !step.bytes().all(|b| b.is_ascii_digit())
                    || (step.len() > 1 && step.starts_with('0'))
                {
                    return None;
                }
                let index: usize = step.parse().ok()?;
                let items: Vec<&'a RawValue> = serde_json::from_str(at.get()).ok()?;
                items.get(index).copied()?
            }
            _ => return None,
        };
    }
    Some(at)
}

/// Writes one value: a string's text, `-` for nothing, other JSON compactly.
fn push_value(out: &mut Vec<u8>, value: Option<&RawValue>) {
    let Some(raw) = value else {
        out.push(b'-');
        return;
    };
    let text = raw.get().trim();
    if text.starts_with('"') {
        match serde_json::from_str::<Cow<'_, str>>(text) {
            Ok(s) if !s.is_empty() => push_escaped(out, &s),
            _ => out.push(b'-'),
        }
    } else if text == "null" || text.is_empty() {
        out.push(b'-');
    } else {
        push_escaped(out, &compact(text));
    }
}

/// JSON text without whitespace outside strings; everything else (number text, escapes) as
/// written.
fn compact(json: &str) -> Cow<'_, str> {
    if !json
        .bytes()
        .any(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Appends `text` with `\n` and `\r` written as two characters each.
fn push_escaped(out: &mut Vec<u8>, text: &str) {
    for b in text.bytes() {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENVELOPE: &str = r#"{"id":"abc123","type":"events.get","format":"pryv","time":null,"observed_time":"2026-01-02T03:04:05.678Z","retention":{"class":"standard","days":60,"expires_at":"2026-03-03T03:04:05.678Z"},"source":{"file":"/var/log/pods/ns_pod_uid/app/0.log","stream":"stdout","offset":942,"time":"2026-01-02T03:04:05.000000001Z"},"kubernetes":{"namespace":"shop","pod":"api-7d9","labels":{"app":"shop"}},"prefix":"Aug 09 16:02:45 host pryv-audit[57]: ","record":{"source": {"name": "http", "ip": "85.5.192.175"}, "action": "events.get", "big": 123456789012345678901234567890, "n": 1.10, "note": "a\nb\rc", "empty": "", "nil": null, "list": [1, {"x": "y"}], "a/b": "slash", "m~n": "tilde", "nested": {"k": [true, false]}}}"#;

    fn render(template: &str) -> String {
        let t = Template::parse(template).unwrap_or_else(|e| panic!("{template}: {e}"));
        let mut out = Vec::new();
        t.render(ENVELOPE.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    fn error(template: &str) -> TemplateError {
        Template::parse(template).unwrap_err()
    }

    #[test]
    fn content_is_the_record_text_as_written() {
        let record = &ENVELOPE[ENVELOPE.find("\"record\":").unwrap() + 9..ENVELOPE.len() - 1];
        assert_eq!(render("{content}"), record.replace('\n', "\\n"));
        assert!(
            render("{content}").contains(r#""a\nb\rc""#),
            "JSON escapes stay as written"
        );
        assert!(render("{content}").contains("123456789012345678901234567890"));
    }

    #[test]
    fn envelope_fields_by_dotted_path() {
        assert_eq!(
            render("{id} {type} {format} {retention.class} {retention.days} {source.offset}"),
            "abc123 events.get pryv standard 60 942"
        );
        assert_eq!(
            render("{source.file}|{source.stream}|{kubernetes.pod}|{kubernetes.labels.app}"),
            "/var/log/pods/ns_pod_uid/app/0.log|stdout|api-7d9|shop"
        );
        assert_eq!(
            render("{retention}"),
            r#"{"class":"standard","days":60,"expires_at":"2026-03-03T03:04:05.678Z"}"#
        );
        assert_eq!(render("{record.action}"), "events.get");
    }

    #[test]
    fn json_pointers_into_the_record() {
        assert_eq!(render("{/action}"), "events.get");
        assert_eq!(render("{/source/ip}"), "85.5.192.175");
        assert_eq!(
            render("{/source}"),
            r#"{"name":"http","ip":"85.5.192.175"}"#
        );
        assert_eq!(render("{/list/1/x} {/list/0}"), "y 1");
        assert_eq!(render("{/list}"), r#"[1,{"x":"y"}]"#);
        assert_eq!(render("{/big} {/n}"), "123456789012345678901234567890 1.10");
        assert_eq!(render("{/a~1b} {/m~0n}"), "slash tilde");
        assert_eq!(render("{/nested/k/1}"), "false");
    }

    #[test]
    fn missing_null_and_empty_values_render_a_dash() {
        assert_eq!(
            render("{/nope} {/source/nope} {/list/2} {/list/01} {/action/x} {time} {/nil} {/empty} {suffix} {kubernetes.nope}"),
            "- - - - - - - - - -"
        );
    }

    #[test]
    fn newlines_are_escaped_so_a_record_stays_one_line() {
        assert_eq!(render("{/note}"), "a\\nb\\rc");
        assert_eq!(render("a\nb\r{/action}"), "a\\nb\\revents.get");
    }

    #[test]
    fn braces_are_escaped_by_doubling() {
        assert_eq!(render("{{{/action}}} {{}}"), "{events.get} {}");
        assert_eq!(render("no placeholders"), "no placeholders");
        assert_eq!(render(""), "");
    }

    #[test]
    fn pryv_template_adapted_to_placeholders() {
        assert_eq!(
            render("{/source/ip} {type} createdBy:{/createdBy} {prefix}"),
            "85.5.192.175 events.get createdBy:- Aug 09 16:02:45 host pryv-audit[57]: "
        );
    }

    #[test]
    fn bad_placeholders_are_refused_with_their_column() {
        let e = error("{userId} {type} createdBy:{createdBy}");
        assert_eq!(e.column, 1);
        assert!(
            e.problem
                .to_string()
                .contains("{userId} is not an envelope field"),
            "{e}"
        );
        assert!(e.problem.to_string().contains("{/userId}"), "{e}");
        assert_eq!(error("{type} createdBy:{createdby}").column, 18);
        // `fields.` is open-ended (a custom rule names its fields in the config): a typo there
        // renders `-`, as a missing member of the record does.
        assert!(Template::parse("{fields.userId}").is_ok());
        assert_eq!(
            error("{envelope.userid}").column,
            1,
            "userid is no envelope field"
        );
        assert_eq!(error("{envelope}").column, 1);
        assert_eq!(error("{envelope.source.nope}").column, 1);
        assert_eq!(error("ab {retention.nope}").column, 4);
        assert_eq!(error("ab {source.file.x}").column, 4);
        assert_eq!(error("{id.x}").column, 1);
        assert_eq!(error("é {}").column, 3, "columns count characters");
        assert_eq!(error("x {type").column, 3);
        assert_eq!(error("x }").column, 3);
        assert_eq!(error("x {a{b}}").column, 5);
        assert_eq!(error("{/a~2}").column, 1);
        assert_eq!(error("{type name}").column, 1);
        assert_eq!(error("{a..b}").column, 1);
        assert_eq!(
            error("{x}").to_string(),
            format!("column 1: {{x}} is not an envelope field ({FIELD_LIST}) nor a format's field (userid, type, createdBy, streamIds); a member of the record is named by a JSON pointer: {{/x}}")
        );
    }

    /// A Pryv envelope with the fields of Pryv's syslog line, as the pipeline builds it.
    const PRYV: &str = r#"{"id":"abc","record_id":"abc","type":"events.get","format":"pryv","fields":{"userid":"ck6j759f000011ps2octzo1ds","type":"audit-log/pryv-api","createdBy":"system","streamIds":["access-ck6j78uj600011ss2neygkpub","action-events.get"]},"prefix":"Oct 26 14:58:46 co1-pryv-li pryv-audit[57]: ck6j759f000011ps2octzo1ds audit-log/pryv-api createdBy:system [\"access-ck6j78uj600011ss2neygkpub\",\"action-events.get\"] ","record":{"source":{"name":"http","ip":"85.5.192.175"},"action":"events.get"}}"#;

    fn render_pryv(template: &str) -> String {
        let t = Template::parse(template).unwrap_or_else(|e| panic!("{template}: {e}"));
        let mut out = Vec::new();
        t.render(PRYV.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn finding_3_pryvs_own_template_renders_pryvs_line() {
        assert_eq!(
            render_pryv("{userid} {type} createdBy:{createdBy} {streamIds} {content}"),
            r#"ck6j759f000011ps2octzo1ds audit-log/pryv-api createdBy:system ["access-ck6j78uj600011ss2neygkpub","action-events.get"] {"source":{"name":"http","ip":"85.5.192.175"},"action":"events.get"}"#
        );
    }

    #[test]
    fn a_bare_name_is_the_records_field_first_and_each_can_be_named_explicitly() {
        assert_eq!(
            render_pryv("{type}|{fields.type}|{envelope.type}"),
            "audit-log/pryv-api|audit-log/pryv-api|events.get"
        );
        assert_eq!(
            render_pryv("{envelope.id} {envelope.source.file} {envelope.record.action}"),
            "abc - events.get"
        );
        // Without the field (another format, a Pryv line of another shape): the envelope's.
        assert_eq!(
            render("{type}|{fields.type}|{envelope.type}|{userid}"),
            "events.get|-|events.get|-"
        );
        assert_eq!(render("{id} {record_id}"), "abc123 -");
    }

    #[test]
    fn the_accepted_field_names_come_from_the_list_given() {
        let t = Template::parse_with_fields("{amount} {fields.amount}", &["amount"]).unwrap();
        let mut out = Vec::new();
        t.render(br#"{"type":"x","fields":{"amount":1.10}}"#, &mut out);
        assert_eq!(out, b"1.10 1.10");
        assert_eq!(
            Template::parse_with_fields("{userid}", &["amount"])
                .unwrap_err()
                .column,
            1
        );
    }

    #[test]
    fn compact_keeps_strings_and_number_text() {
        assert_eq!(
            compact(r#"{ "a b" : [ 1.0 , "x \" y" ] }"#),
            r#"{"a b":[1.0,"x \" y"]}"#
        );
    }
}
