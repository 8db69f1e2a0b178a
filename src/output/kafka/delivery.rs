//! Delivery reports from librdkafka to the delivery loop, in batches, and the one thread that
//! polls each producer.
//!
//! Each message is produced with a number (its attempt's, see `sink`) as librdkafka's
//! delivery opaque; the producer's `delivery` callback puts the number and the outcome in a
//! queue the delivery loop shares with every producer it has had ([`Reports`](super::reports::Reports)), and wakes the
//! loop only when the queue was empty: one wake per batch of reports, not one future and one
//! wake per message. When a replaced producer is gone (its polling thread joined, the client
//! destroyed), [`Reports::retired`](super::reports::Reports::retired) says so in the same queue, after its last report: what it
//! had not reported by then never will be, and the loop sends it again.
//!
//! Polling: rdkafka's `BaseProducer::poll(timeout)` goes on serving events until its whole
//! timeout has passed, and hands librdkafka the rest in whole milliseconds, rounded down: the
//! last sub-millisecond of every call is a busy loop of zero-timeout polls and
//! `clock_gettime` (the `FutureProducer`'s thread polled every 100 ms, so it spun about 0.5%
//! of every second). [`Polled`] polls with a long timeout ([`POLL`]) instead, whose
//! fraction of a millisecond is smaller than the wait's own lateness, so the rounding leaves
//! nothing to spin on: idle, the thread sleeps in librdkafka until an event comes or the
//! timeout ends. Reports are served as they come, whatever the timeout; the timeout is only
//! how long a stopped producer's thread takes to notice.
//!
//! The thread is the only one serving its producer's reports: should a callback panic on it
//! (the process goes on after a panic), it ends, says so ([`Polled::polling`]) and wakes the
//! loop, which has a new producer take over; the old one's records are sent again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{BaseProducer, DeliveryResult, Producer as _, ProducerContext};

use super::health::KafkaContext;
use super::reports::Report;

/// How long each poll of a producer lasts when no event comes: whole seconds, plus less than
/// a timed wait in librdkafka overshoots (tens of microseconds), so that rdkafka's rounding
/// down to whole milliseconds leaves no remainder to spin on.
const POLL: Duration = Duration::from_micros(10_000_000 + 20);

impl ProducerContext for KafkaContext {
    /// The attempt the message belongs to.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, attempt: usize) {
        let result = match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.clone()),
        };
        self.reports.push(Report::Delivered { attempt, result });
    }
}

pub(super) type Producer = BaseProducer<KafkaContext>;

/// A producer and the thread that polls it. Dropped, the thread stops at the end of its
/// current poll (at most [`POLL`]) and the producer with it; [`Polled::stop`] waits for that.
pub(super) struct Polled {
    producer: Arc<Producer>,
    stop: Arc<AtomicBool>,
    /// The thread ended while the producer was still in use (a callback panicked on it).
    ended: Arc<AtomicBool>,
    /// Makes the thread panic at the end of its current poll (tests).
    #[cfg(test)]
    panic: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Polled {
    /// Starts polling `producer` on a thread of its own.
    pub(super) fn start(producer: Producer) -> std::io::Result<Polled> {
        let producer = Arc::new(producer);
        let stop = Arc::new(AtomicBool::new(false));
        let ended = Arc::new(AtomicBool::new(false));
        #[cfg(test)]
        let panic = Arc::new(AtomicBool::new(false));
        let thread = {
            let (producer, stop, ended) =
                (Arc::clone(&producer), Arc::clone(&stop), Arc::clone(&ended));
            #[cfg(test)]
            let panic = Arc::clone(&panic);
            std::thread::Builder::new()
                .name("kafka-poll".into())
                .spawn(move || {
                    let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        while !stop.load(Ordering::Relaxed) {
                            producer.poll(POLL);
                            #[cfg(test)]
                            if panic.load(Ordering::Relaxed) {
                                panic!("a callback panicked (test)");
                            }
                        }
                    }));
                    // A callback panicked (the process goes on): nothing serves this
                    // producer's reports any more, its records in flight would wait for
                    // ever. The delivery loop is told, and replaces it (its records are then
                    // sent again, `Reports::retired`).
                    if polled.is_err() {
                        tracing::error!("the kafka producer's polling thread ended while the producer is in use");
                        ended.store(true, Ordering::Release);
                        producer.context().reports.wake();
                    }
                    // Dropping the last handle here: rdkafka purges what is left and serves
                    // the reports of that before librdkafka is destroyed.
                })?
        };
        Ok(Polled {
            producer,
            stop,
            ended,
            #[cfg(test)]
            panic,
            thread: Some(thread),
        })
    }

    /// Whether the producer's reports are still served.
    pub(super) fn polling(&self) -> bool {
        !self.ended.load(Ordering::Acquire)
    }

    /// Stops polling and waits (blocking, up to [`POLL`]) until the thread has served its
    /// last report and the producer is destroyed.
    pub(super) fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take();
        // The thread's handle is the last one once this one is gone.
        drop(self);
        if let Some(thread) = thread {
            if thread.join().is_err() {
                tracing::error!("the kafka polling thread panicked");
            }
        }
    }
}

#[cfg(test)]
impl Polled {
    /// Makes the polling thread panic at the end of its current poll, as a panicking
    /// callback would (which a test cannot cause from outside).
    pub(super) fn end_polling_for_test(&self) {
        self.panic.store(true, Ordering::Relaxed);
    }
}

impl std::ops::Deref for Polled {
    type Target = Producer;

    fn deref(&self) -> &Producer {
        &self.producer
    }
}

impl Drop for Polled {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
