//! Fan-out: with several outputs, each record goes to every output its mask names.
//!
//! A required output gets its copy with a share of the record's ack, so the source's
//! checkpoint waits for it; when it is slow, the fan-out waits (backpressure). An optional
//! output gets a copy that acknowledges nothing, and never holds the others back: a batch it
//! has no room for is dropped for it, and counted.

use prometheus::IntCounter;
use tokio::sync::mpsc;

use crate::ack::Ack;
use crate::envelope::Record;

/// One output behind the fan-out.
pub(super) struct Target {
    pub(super) sender: mpsc::Sender<Vec<Record>>,
    pub(super) required: bool,
    /// Records dropped for an optional output that had no room.
    pub(super) dropped: IntCounter,
}

/// Sends each record to every output its mask names.
pub(super) async fn fan_out(mut rx: mpsc::Receiver<Vec<Record>>, outputs: Vec<Target>) {
    while let Some(batch) = rx.recv().await {
        let mut per_output: Vec<Vec<Record>> = outputs.iter().map(|_| Vec::new()).collect();
        for record in batch {
            let mask = record.outputs;
            // The last required output that takes the record gets the record itself; the
            // others get copies (an optional one's acknowledges nothing).
            let last_required = (0..outputs.len())
                .rev()
                .find(|&i| mask & (1 << i) != 0 && outputs[i].required);
            for (i, target) in outputs.iter().enumerate() {
                if mask & (1 << i) == 0 || Some(i) == last_required {
                    continue;
                }
                let mut copy = record.duplicate();
                if !target.required {
                    copy.ack = Ack::none();
                }
                per_output[i].push(copy);
            }
            if let Some(i) = last_required {
                per_output[i].push(record);
            }
        }
        for (target, records) in outputs.iter().zip(per_output) {
            if records.is_empty() {
                continue;
            }
            if target.required {
                if target.sender.send(records).await.is_err() {
                    return;
                }
                continue;
            }
            match target.sender.try_send(records) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(records)) => {
                    target.dropped.inc_by(records.len() as u64);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    }
}
