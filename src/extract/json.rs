//! Just enough JSON for detection: locate a JSON object inside a line without re-serialising
//! it, read its top-level members as borrowed raw text, and follow JSON pointers.
//!
//! Nothing here allocates a full document tree: members are `&RawValue` slices of the line, and
//! a pointer such as `/event/type` parses only the objects on its path.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The top-level members of a JSON object, in order, values left as raw text.
#[derive(Debug)]
pub struct Object<'a> {
    members: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> Object<'a> {
    /// Parses `text`, which must hold exactly one JSON object.
    pub fn parse(text: &'a str) -> Option<Object<'a>> {
        serde_json::from_str(text).ok()
    }

    /// The raw value of a member; the last one wins when a key repeats, as in JavaScript.
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.members
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
    }

    /// Follows a JSON pointer (RFC 6901) given as unescaped segments.
    pub fn pointer(&self, segments: &[String]) -> Option<&'a RawValue> {
        let (first, rest) = segments.split_first()?;
        let mut current = self.get(first)?;
        for segment in rest {
            current = child(current, segment)?;
        }
        Some(current)
    }

    /// The member as a string, when it is one.
    pub fn get_str(&self, key: &str) -> Option<Cow<'a, str>> {
        self.get(key).and_then(as_str)
    }
}

fn child<'a>(raw: &'a RawValue, segment: &str) -> Option<&'a RawValue> {
    match raw.get().as_bytes().first()? {
        b'{' => Object::parse(raw.get())?.get(segment),
        b'[' => {
            let index: usize = segment.parse().ok()?;
            let items: Vec<&'a RawValue> = serde_json::from_str(raw.get()).ok()?;
            items.get(index).copied()
        }
        _ => None,
    }
}

/// A raw value as a string, when it is a JSON string.
pub fn as_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    if !text.starts_with('"') {
        return None;
    }
    match serde_json::from_str::<&str>(text) {
        Ok(s) => Some(Cow::Borrowed(s)),
        // Escapes in the string: it cannot be borrowed.
        Err(_) => serde_json::from_str::<String>(text).ok().map(Cow::Owned),
    }
}

/// Splits a JSON pointer into unescaped segments (`~1` is `/`, `~0` is `~`).
pub fn parse_pointer(pointer: &str) -> Result<Vec<String>, String> {
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(format!("JSON pointer {pointer:?} must start with '/'"));
    };
    Ok(rest
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect())
}

/// Whether the whole of `line` is one JSON value that is not an object (an array, a string, a
/// number, …). Such a line holds no top-level object, so nothing in it can be an audit record,
/// however audit-like the objects inside it look. Lines that start with `{` are left to
/// [`Objects`]; any other line that is not JSON fails at its first bytes that are not JSON
/// (`[2021-08-09 …`, `Aug 09 …`), so the check is cheap on the text lines it does not match.
pub fn is_non_object_json(line: &str) -> bool {
    let trimmed = line.trim_start_matches([' ', '\t', '\r', '\n']);
    !trimmed.starts_with('{') && serde_json::from_str::<de::IgnoredAny>(line).is_ok()
}

/// An object found in a line: where it is and its members.
#[derive(Debug)]
pub struct Located<'a> {
    pub start: usize,
    pub end: usize,
    pub object: Object<'a>,
}

/// The most `{` positions per line that start no valid object and are tried anyway. A valid
/// object is never searched again, so valid objects cost one pass whatever their number; a
/// `{` that starts none is tried from the next byte on, which could cost a pass each. With
/// [`REJECTED_WORK`], a pathological line (thousands of unbalanced braces) costs bounded
/// work, while a message with dozens of `{` (a Blade `{{ x }}`, a code snippet) before its
/// record costs little and still reaches it.
pub const MAX_REJECTED: usize = 256;

/// The bytes the `{` that start no valid object may cost to try, in all, per byte of the line.
pub const REJECTED_WORK: usize = 4;

/// Walks the JSON objects of a line from left to right. A `{` that does not start a valid
/// object is skipped; the inside of a valid object is never searched again, so a nested object
/// is never mistaken for a top-level one.
pub struct Objects<'a> {
    line: &'a str,
    pos: usize,
    /// The `{` that started no valid object so far, and the bytes read to tell.
    rejected: usize,
    rejected_bytes: usize,
}

impl<'a> Objects<'a> {
    pub fn new(line: &'a str) -> Self {
        Objects {
            line,
            pos: 0,
            rejected: 0,
            rejected_bytes: 0,
        }
    }
}

/// A `{` that does not start a valid JSON object, and why.
#[derive(Debug)]
pub struct Rejected {
    pub start: usize,
    pub error: serde_json::Error,
}

impl<'a> Objects<'a> {
    /// The next `{` tried, as the object it starts or why it starts none; `None` when no `{`
    /// is left or the rejected ones spent their bounds ([`MAX_REJECTED`], [`REJECTED_WORK`]).
    /// The iterator skips the rejected ones.
    pub fn next_attempt(&mut self) -> Option<Result<Located<'a>, Rejected>> {
        if self.rejected >= MAX_REJECTED
            || self.rejected_bytes > REJECTED_WORK.saturating_mul(self.line.len())
        {
            return None;
        }
        let bytes = self.line.as_bytes();
        let start = self.pos + memchr::memchr(b'{', bytes.get(self.pos..)?)?;
        let rest = &self.line[start..];
        let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<Object<'a>>();
        match stream.next() {
            Some(Ok(object)) => {
                let end = start + stream.byte_offset();
                self.pos = end;
                Some(Ok(Located { start, end, object }))
            }
            other => {
                self.pos = start + 1;
                // `rest` starts with `{`, so there is always a value to fail on.
                let error = other
                    .and_then(Result::err)
                    .unwrap_or_else(|| <serde_json::Error as de::Error>::custom("no JSON value"));
                // How far the parser read before it failed (its column counts bytes on the
                // error's line; a later line means it read past this one's end).
                self.rejected += 1;
                self.rejected_bytes += match error.line() {
                    1 => error.column().max(1),
                    _ => rest.len(),
                };
                Some(Err(Rejected { start, error }))
            }
        }
    }
}

impl<'a> Iterator for Objects<'a> {
    type Item = Located<'a>;

    fn next(&mut self) -> Option<Located<'a>> {
        loop {
            if let Ok(located) = self.next_attempt()? {
                return Some(located);
            }
        }
    }
}

// === impl Deserialize for Object ===

impl<'de: 'a, 'a> Deserialize<'de> for Object<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = Object<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some((Key(k), v)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    members.push((k, v));
                }
                Ok(Object { members })
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// A member name, borrowed from the input unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_skip_text_and_never_descend_into_a_parsed_object() {
        let line = r#"x {bad} [1] {"a": {"b": 2}} tail {"c": 3} []"#;
        let found: Vec<&str> = Objects::new(line).map(|o| &line[o.start..o.end]).collect();
        assert_eq!(found, vec![r#"{"a": {"b": 2}}"#, r#"{"c": 3}"#]);
    }

    #[test]
    fn pointers_follow_objects_and_arrays() {
        let o =
            Object::parse(r#"{"event": {"type": "approve", "list": [1, {"k": "v"}]}}"#).unwrap();
        let seg = parse_pointer("/event/type").unwrap();
        assert_eq!(as_str(o.pointer(&seg).unwrap()).unwrap(), "approve");
        let seg = parse_pointer("/event/list/1/k").unwrap();
        assert_eq!(as_str(o.pointer(&seg).unwrap()).unwrap(), "v");
        assert!(o
            .pointer(&parse_pointer("/event/missing").unwrap())
            .is_none());
        assert_eq!(parse_pointer("/a~1b/c~0d").unwrap(), vec!["a/b", "c~d"]);
        assert!(parse_pointer("nope").is_err());
    }

    #[test]
    fn escaped_strings_and_keys_are_read() {
        let o = Object::parse(r#"{"le\u0076el": "au\u0064it"}"#).unwrap();
        assert_eq!(o.get_str("level").unwrap(), "audit");
    }

    #[test]
    fn pathological_braces_cost_bounded_work() {
        let line = "{".repeat(100_000);
        assert_eq!(Objects::new(&line).count(), 0);
        // Each `{` here starts an object the parser reads far into before it fails: the
        // bytes read for the rejected ones stay within REJECTED_WORK per byte of the line.
        for line in [
            r#"{"a":[0,"#.repeat(20_000),
            format!("{}x", r#"{"a":"#.repeat(20_000)),
        ] {
            let mut objects = Objects::new(&line);
            while objects.next_attempt().is_some() {}
            assert!(objects.rejected <= MAX_REJECTED);
            assert!(
                objects.rejected_bytes <= (REJECTED_WORK + 1) * line.len(),
                "{} bytes read for a line of {}",
                objects.rejected_bytes,
                line.len()
            );
        }
    }
}
