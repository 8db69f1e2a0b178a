//! `outputs.stdout`: each record as one JSON line `{"topic","key","headers","value"}`, the
//! same lines `auditrail check` prints. A record is confirmed once its batch is written and
//! flushed.

use std::sync::Arc;

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
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StdoutConfig {
    /// This output's own type filter; without one it takes the global `types`.
    pub types: Option<TypesConfig>,
}

impl OutputConfig for StdoutConfig {
    fn types(&self) -> Option<&TypesConfig> {
        self.types.as_ref()
    }

    fn types_mut(&mut self) -> &mut Option<TypesConfig> {
        &mut self.types
    }

    fn validate(&self, path: &str, problems: &mut Vec<Problem>) {
        if let Some(types) = &self.types {
            types.validate(&format!("{path}.types"), problems);
        }
    }

    fn build(&self, context: Context) -> Result<Box<dyn Output>, OutputError> {
        Ok(Box::new(StdoutOutput {
            metrics: context.metrics,
        }))
    }
}

/// The stdout output: always ready while the process can write.
struct StdoutOutput {
    metrics: OutputHandles,
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
        _drain: Drain,
    ) -> BoxFuture<'static, Result<(), OutputError>> {
        Box::pin(async move {
            write(batches, self.metrics)
                .await
                .map_err(|e| OutputError::Failed {
                    output: "stdout",
                    source: Box::new(e),
                })
        })
    }
}

/// Writes batches until the channel closes. A write error stops the output; the records of
/// the failed batch stay unconfirmed, so their checkpoints do not move.
async fn write(
    mut batches: mpsc::Receiver<Vec<Record>>,
    mut metrics: OutputHandles,
) -> std::io::Result<()> {
    let mut out = tokio::io::stdout();
    let mut buf = Vec::with_capacity(64 * 1024);
    while let Some(batch) = batches.recv().await {
        buf.clear();
        for record in &batch {
            record.write_json_line(&mut buf);
        }
        out.write_all(&buf).await?;
        out.flush().await?;
        for record in batch {
            metrics.sent(&record.retention.topic, record.value.len());
            metrics.acked(&record.retention.topic, record.read_time);
            record.ack.confirm();
        }
    }
    Ok(())
}
