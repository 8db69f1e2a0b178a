//! Config problems: the vocabulary every stage's `validate` reports in.
//!
//! Each stage owns its config section and checks it; what it finds is a [`Problem`] at a
//! YAML path (`retention.classes.forever.topic`), so `auditrail validate` can explain every
//! problem of a config at once. This module sits at the ground floor: every stage imports it,
//! it imports nothing of theirs.

use std::fmt;

/// One thing wrong with a config, at a YAML path such as `retention.classes.forever.topic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// What a caller intends to do with a config; `check` may leave `source.paths` empty because
/// `--input` takes their place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Run,
    Check,
}
