//! The end of an output's life, the same for every output.
//!
//! An output stops taking records when the service shuts down or its channel closes. From
//! then on it may still deliver what it holds, for at most its drain timeout; whatever is not
//! confirmed by then stays behind the checkpoint and is read again at the next start.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// An output's shutdown: whether it began, and when it must end.
#[derive(Debug)]
pub(crate) struct Drain {
    shutdown: watch::Receiver<bool>,
    timeout: Duration,
    since: Option<Instant>,
}

impl Drain {
    /// A drain that begins when `shutdown` turns true (or its sender goes away).
    pub(crate) fn new(shutdown: watch::Receiver<bool>) -> Drain {
        let since = (*shutdown.borrow()).then(Instant::now);
        Drain {
            shutdown,
            timeout: Duration::from_secs(30),
            since,
        }
    }

    /// How long the output may deliver what it holds once the drain began.
    pub(crate) fn with_timeout(mut self, timeout: Duration) -> Drain {
        self.timeout = timeout;
        self
    }

    /// Begins the drain now (the channel closed), unless it already began.
    pub(crate) fn begin(&mut self) {
        self.since.get_or_insert_with(Instant::now);
    }

    /// Whether the drain began.
    pub(crate) fn draining(&self) -> bool {
        self.since.is_some()
    }

    /// Whether the drain's time is up.
    pub(crate) fn expired(&self) -> bool {
        self.deadline().is_some_and(|d| Instant::now() >= d)
    }

    fn deadline(&self) -> Option<Instant> {
        self.since.map(|s| s + self.timeout)
    }

    /// Completes when something changes: the shutdown begins the drain, or the drain's
    /// deadline passes. Pending forever once both happened; for `tokio::select!` loops, which
    /// then look at [`Drain::draining`] and [`Drain::expired`].
    pub(crate) async fn changed(&mut self) {
        if self.since.is_none() {
            let begun = match self.shutdown.changed().await {
                Ok(()) => *self.shutdown.borrow(),
                // The service is gone: nothing will ever tell us to stop more clearly.
                Err(_) => true,
            };
            if begun {
                self.begin();
            }
            return;
        }
        match self.deadline() {
            Some(deadline) if Instant::now() < deadline => tokio::time::sleep_until(deadline).await,
            _ => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_drain_begins_on_shutdown_and_expires_after_its_timeout() {
        let (tx, rx) = watch::channel(false);
        let mut drain = Drain::new(rx).with_timeout(Duration::from_secs(5));
        assert!(!drain.draining());
        tx.send(true).unwrap();
        drain.changed().await;
        assert!(drain.draining() && !drain.expired());
        drain.changed().await;
        assert!(drain.expired());
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_channel_begins_the_drain_once() {
        let (_tx, rx) = watch::channel(false);
        let mut drain = Drain::new(rx).with_timeout(Duration::from_secs(1));
        drain.begin();
        let first = drain.since;
        tokio::time::advance(Duration::from_millis(500)).await;
        drain.begin();
        assert_eq!(drain.since, first, "the drain's clock starts once");
    }
}
