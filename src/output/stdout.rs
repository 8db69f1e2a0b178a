//! `outputs.stdout`: each record as one JSON line `{"topic","key","headers","value"}`, the
//! same lines `auditrail check` prints. A record is confirmed once its batch is written and
//! flushed.

use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::envelope::Record;
use crate::filter::TypesConfig;
use crate::metrics::OutputHandles;

/// `outputs.stdout`; the empty map `{}` enables it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StdoutConfig {
    /// This output's own type filter; without one it takes the global `types`.
    pub types: Option<TypesConfig>,
}

/// Writes batches until the channel closes. A write error stops the output; the records of
/// the failed batch stay unconfirmed, so their checkpoints do not move.
pub async fn run(
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
