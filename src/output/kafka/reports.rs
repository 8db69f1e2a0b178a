//! The queue of delivery reports the Kafka producers' callbacks fill and the delivery loop
//! empties (see `delivery` for who writes what, and when). Its own file so that the clients'
//! context (`health`), which holds it, and `delivery`, which uses that context, do not import
//! each other.

use std::sync::Mutex;

use rdkafka::error::KafkaError as RdKafkaError;
use tokio::sync::Notify;

/// What the producers tell the delivery loop.
#[derive(Debug)]
pub(super) enum Report {
    /// A message of attempt `attempt` was acknowledged (`Ok`) or failed for good.
    Delivered {
        attempt: usize,
        result: Result<(), RdKafkaError>,
    },
    /// The producer of generation `generation` is destroyed: no report of it will come any
    /// more.
    Retired { generation: u64 },
}

/// The queue of reports shared by the delivery loop and its producers' callbacks.
#[derive(Debug, Default)]
pub(super) struct Reports {
    queue: Mutex<Vec<Report>>,
    wake: Notify,
}

impl Reports {
    pub(super) fn push(&self, report: Report) {
        let was_empty = {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.push(report);
            queue.len() == 1
        };
        // The loop takes the whole queue when woken: a report added to a non-empty queue is
        // taken with the one that woke it. (Notify keeps the wake when the loop is busy.)
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// Wakes the loop with no report: a producer's polling thread ended while it was in use
    /// (see [`Polled::polling`]).
    pub(super) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Says that a replaced producer is gone, after every report it made.
    pub(super) fn retired(&self, generation: u64) {
        self.push(Report::Retired { generation });
    }

    /// Waits until there are reports (at once when some came since the last [`Self::take`]).
    /// Cancel-safe.
    pub(super) async fn ready(&self) {
        self.wake.notified().await;
    }

    /// Every report so far, in the order they came.
    pub(super) fn take(&self) -> Vec<Report> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
