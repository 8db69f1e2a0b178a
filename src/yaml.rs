//! YAML into typed values: the one place that knows which YAML library parses the config.
//!
//! Errors name where they are: the YAML path of the value at fault (`source.paths[0]`), and
//! its line and column. Booleans are strict (`true`/`false` only): in a ConfigMap, `yes` or
//! `on` are strings, as YAML 1.2 has them, not a silent switch.

use serde::de::DeserializeOwned;

/// A YAML document that does not fit the type it is read into.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    message: String,
}

/// Reads `text` (one YAML document) into a `T`.
pub(crate) fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    let mut path = None;
    let options = serde_saphyr::options! { strict_booleans: true };
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize::<_, T>(de).map_err(|e| {
            path = Some(e.path().to_string());
            e.into_inner()
        })
    });
    result.map_err(|e| {
        let message = e.without_snippet().to_string();
        YamlError {
            message: match path.filter(|p| p != ".") {
                Some(path) => format!("{path}: {message}"),
                None => message,
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        inner: Inner,
        #[serde(default)]
        list: Vec<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        port: u16,
    }

    #[test]
    fn errors_name_the_path_line_and_column() {
        for (yaml, want) in [
            ("inner: {port: 1}\nlist: [{port: x}]\n", "list[0].port"),
            ("inner:\n  port: 1\n  prot: 2\n", "inner"),
            ("inner: {port: 70000}\n", "inner.port"),
            ("inner: {port: yes}\n", "inner.port"),
        ] {
            let err = from_str::<Outer>(yaml).unwrap_err().to_string();
            eprintln!("{err}");
            assert!(err.starts_with(want), "{err}");
        }
    }
}
