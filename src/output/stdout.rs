//! `outputs.stdout`: each record as one JSON line `{"topic","key","headers","value"}`, the
//! same lines `auditrail check` prints. A record is confirmed once its batch is written and
//! flushed.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::{Context, Drain, Output, OutputConfig, OutputError, OutputHealth};
use crate::envelope::Record;
use crate::filter::TypesConfig;
use crate::metrics::OutputHandles;
use crate::problem::Problem;

/// `outputs.stdout`; the empty map `{}` enables it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StdoutConfig {
    /// This output's own type filter; without one it takes the global `types`.
    pub types: Option<TypesConfig>,
    /// Whether the checkpoint waits for this output (see `OutputConfig::required`).
    pub required: bool,
    /// How long shutdown waits for a reader that stopped reading.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for StdoutConfig {
    fn default() -> Self {
        StdoutConfig {
            types: None,
            required: true,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

impl OutputConfig for StdoutConfig {
    fn types(&self) -> Option<&TypesConfig> {
        self.types.as_ref()
    }

    fn types_mut(&mut self) -> &mut Option<TypesConfig> {
        &mut self.types
    }

    fn required(&self) -> bool {
        self.required
    }

    fn validate(&self, path: &str, problems: &mut Vec<Problem>) {
        if let Some(types) = &self.types {
            types.validate(&format!("{path}.types"), problems);
        }
    }

    fn build(&self, context: Context) -> Result<Box<dyn Output>, OutputError> {
        Ok(Box::new(StdoutOutput {
            metrics: context.metrics,
            drain_timeout: self.drain_timeout,
        }))
    }
}

/// The stdout output: always ready while the process can write.
struct StdoutOutput {
    metrics: OutputHandles,
    drain_timeout: Duration,
}

struct AlwaysReady;

impl OutputHealth for AlwaysReady {
    fn not_ready(&self) -> Vec<String> {
        Vec::new()
    }
}

impl Output for StdoutOutput {
    fn health(&self) -> Arc<dyn OutputHealth> {
        Arc::new(AlwaysReady)
    }

    fn run(
        self: Box<Self>,
        batches: mpsc::Receiver<Vec<Record>>,
        drain: Drain,
    ) -> BoxFuture<'static, Result<(), OutputError>> {
        let drain = drain.with_timeout(self.drain_timeout);
        Box::pin(async move {
            write(batches, self.metrics, drain)
                .await
                .map_err(|e| OutputError::Failed {
                    output: "stdout",
                    source: Box::new(e),
                })
        })
    }
}

/// Writes batches until the channel closes, or the drain's time is up (a reader that stopped
/// reading): the records not written stay unconfirmed and are read again. A write error
/// (the reader went away) ends the output, and with it the process.
async fn write(
    mut batches: mpsc::Receiver<Vec<Record>>,
    mut metrics: OutputHandles,
    mut drain: Drain,
) -> std::io::Result<()> {
    let mut out = tokio::io::stdout();
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        let batch = tokio::select! {
            batch = batches.recv() => match batch {
                Some(batch) => batch,
                None => return Ok(()),
            },
            () = drain.changed() => {
                if drain.expired() {
                    return Ok(());
                }
                continue;
            }
        };
        buf.clear();
        for record in &batch {
            record.write_json_line(&mut buf);
        }
        let written = async {
            out.write_all(&buf).await?;
            out.flush().await
        };
        tokio::select! {
            result = written => result?,
            () = expired(&mut drain) => {
                tracing::warn!(records = batch.len(), "drain timeout: records not written to stdout will be read again at the next start");
                return Ok(());
            }
        }
        for record in batch {
            metrics.sent(&record.retention.topic, record.value.len());
            metrics.acked(&record.retention.topic, record.read_time);
            record.ack.confirm();
        }
    }
}

/// Completes when the drain's time is up.
async fn expired(drain: &mut Drain) {
    while !drain.expired() {
        drain.changed().await;
    }
}
