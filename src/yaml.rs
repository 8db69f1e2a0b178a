//! YAML into typed values: the one place that knows which YAML library parses the config.
//!
//! Errors name where they are: the YAML path of the value at fault, and its line and column.

use serde::de::DeserializeOwned;

/// A YAML document that does not fit the type it is read into.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    message: String,
}

/// Reads `text` (one YAML document) into a `T`.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    serde_yaml::from_str(text).map_err(|e| YamlError {
        message: e.to_string(),
    })
}
