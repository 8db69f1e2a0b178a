//! Outputs: where records go, side by side under `outputs`, one key per kind.
//!
//! Every output receives batches of records over a bounded channel and confirms each record's
//! [`crate::ack::Ack`] only once the record is durable by that output's standard (written and
//! flushed for `stdout`). Without any output configured, `stdout` is used.

pub mod stdout;

use serde::Deserialize;

use crate::config::Problem;
pub use stdout::StdoutConfig;

/// The `outputs` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputsConfig {
    /// Print each record as a JSON line (the same lines as `auditrail check`).
    pub stdout: Option<StdoutConfig>,
}

impl OutputsConfig {
    pub fn validate(&self, _path: &str, _problems: &mut Vec<Problem>) {}

    /// The outputs in force: those configured, or `stdout` when none is.
    pub fn effective(&self) -> OutputsConfig {
        let mut outputs = self.clone();
        if outputs.stdout.is_none() {
            outputs.stdout = Some(StdoutConfig::default());
        }
        outputs
    }
}
