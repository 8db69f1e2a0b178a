//! Fan-out: with several outputs, each record goes to every output its mask names.

use tokio::sync::mpsc;

use crate::envelope::Record;

/// Sends each record to every output its mask names; each copy carries its own share of the
/// record's ack, so the source's checkpoint waits for all of them.
pub(super) async fn fan_out(
    mut rx: mpsc::Receiver<Vec<Record>>,
    outputs: Vec<mpsc::Sender<Vec<Record>>>,
) {
    while let Some(batch) = rx.recv().await {
        let mut per_output: Vec<Vec<Record>> = outputs.iter().map(|_| Vec::new()).collect();
        for record in batch {
            let mask = record.outputs;
            let Some(last) = (0..per_output.len()).rev().find(|i| mask & (1 << i) != 0) else {
                continue;
            };
            for (i, out) in per_output.iter_mut().enumerate().take(last) {
                if mask & (1 << i) != 0 {
                    out.push(record.duplicate());
                }
            }
            per_output[last].push(record);
        }
        for (out, records) in outputs.iter().zip(per_output) {
            if !records.is_empty() && out.send(records).await.is_err() {
                return;
            }
        }
    }
}
