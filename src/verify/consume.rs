//! The Kafka side of `verify`: every partition of every topic, assigned by hand from its
//! first offset to its high watermark as read at start, fed to the checker in the order each
//! partition holds. No consumer group is joined and nothing is committed. Messages written
//! after the start are not read, so a run ends.
//!
//! A broker may report a partition's end short: tansu's ListOffsets answers the last
//! *batch's* base offset + 1. So when a partition is read to the end read at start, the high
//! watermark its fetch responses carried (in librdkafka's statistics, taken after that moment)
//! is looked at once, and reading goes on to it when it is further. With a broker that reports
//! right, that adds at most what was written between the start and that fetch.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Headers, Message as _};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};

use super::check::Checker;
use super::{Message, Options, VerifyError};

/// How long one metadata or watermark request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often partitions' ends are looked at: their positions (a partition whose last offsets
/// are not messages, such as transaction markers, ends by its position) and the statistics.
const SWEEP_EVERY: Duration = Duration::from_millis(100);
/// librdkafka's statistics interval (they carry each partition's fetched high watermark).
const STATISTICS_MS: &str = "100";

/// What the reader should know besides the checks' findings.
#[derive(Debug, Default)]
pub(super) struct Read {
    pub(super) notes: Vec<String>,
}

/// The high watermark of each (topic, partition) in the latest fetch responses.
type HighWatermarks = HashMap<(String, i32), i64>;

/// The high watermarks of the latest fetch responses, from librdkafka's statistics, and how
/// many statistics were taken.
#[derive(Default)]
struct Highs {
    inner: Mutex<(u64, HighWatermarks)>,
}

impl Highs {
    /// How many statistics were taken so far.
    fn taken(&self) -> u64 {
        self.inner.lock().map(|i| i.0).unwrap_or_default()
    }

    fn high(&self, topic: &str, partition: i32) -> Option<i64> {
        let inner = self.inner.lock().ok()?;
        inner.1.get(&(topic.to_owned(), partition)).copied()
    }
}

impl ClientContext for Highs {
    fn stats(&self, statistics: Statistics) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.0 += 1;
        for (name, topic) in statistics.topics {
            for (partition, p) in topic.partitions {
                if p.hi_offset >= 0 {
                    inner.1.insert((name.clone(), partition), p.hi_offset);
                }
            }
        }
    }
}

impl ConsumerContext for Highs {}

/// Where a partition ends, and how far it was read.
#[derive(Debug, Clone, Copy)]
struct End {
    at: i64,
    /// The next offset to read.
    next: i64,
    /// Once `at` was reached: the statistics count after which the fetched high watermark is
    /// looked at (see the module doc).
    recheck_after: Option<u64>,
    rechecked: bool,
}

/// Where each partition of a topic ends (`None`: read to its end already, or empty).
type Ends = HashMap<String, Vec<Option<End>>>;

pub(super) fn read(
    mut client: ClientConfig,
    topics: &[String],
    checker: &mut Checker,
    options: &Options,
) -> Result<Read, VerifyError> {
    // librdkafka refuses a manual assignment without a group id; with offsets given and
    // nothing committed, the group is never joined nor written to.
    client
        .set("group.id", "auditrail-verify")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", STATISTICS_MS);
    let consumer: BaseConsumer<Highs> = client
        .create_with_context(Highs::default())
        .map_err(|e| VerifyError::Client(Box::new(e)))?;
    let mut read = Read::default();
    let mut ends: Ends = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    let mut total: i64 = 0;
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .map_err(|source| VerifyError::Metadata {
                topic: topic.clone(),
                source,
            })?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(VerifyError::NoSuchTopic {
                topic: topic.clone(),
            });
        }
        let slots = ends.entry(topic.clone()).or_default();
        for partition in partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
                .map_err(|source| VerifyError::Watermarks {
                    topic: topic.clone(),
                    partition,
                    source,
                })?;
            if low > 0 {
                read.notes.push(format!(
                    "{topic} partition {partition} starts at offset {low}: its earlier messages were deleted (retention), so the first seqs of its segments may show as missing"
                ));
            }
            let Ok(index) = usize::try_from(partition) else {
                continue;
            };
            if slots.len() <= index {
                slots.resize(index + 1, None);
            }
            if high > low {
                slots[index] = Some(End {
                    at: high,
                    next: low,
                    recheck_after: None,
                    rechecked: false,
                });
                total += high - low;
                // The partition's first offset, not `Beginning`: the same, without a lookup.
                assignment
                    .add_partition_offset(topic, partition, Offset::Offset(low))
                    .map_err(|e| VerifyError::Client(Box::new(e)))?;
            }
        }
    }
    consumer
        .assign(&assignment)
        .map_err(|e| VerifyError::Client(Box::new(e)))?;

    let mut left = ends.values().flatten().filter(|e| e.is_some()).count();
    let mut last_message = Instant::now();
    let mut last_sweep = Instant::now();
    let mut last_progress = Instant::now();
    let mut last_error = None;
    while left > 0 {
        match consumer.poll(SWEEP_EVERY) {
            Some(Ok(m)) => {
                last_message = Instant::now();
                let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
                if let Some(Some(end)) = end_of(&mut ends, topic, partition) {
                    // Past the end once it was rechecked: written after the start.
                    if offset < end.at || !end.rechecked {
                        checker.message(message(&m));
                    }
                    end.next = end.next.max(offset + 1);
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "reading the topics");
                last_error = Some(e.to_string());
            }
            None => {}
        }
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = Instant::now();
            left -= sweep(&consumer, &mut ends);
        }
        if !options.progress_every.is_zero() && last_progress.elapsed() >= options.progress_every {
            last_progress = Instant::now();
            let done = checker.messages();
            eprintln!(
                "auditrail verify: {done} of {total} messages read ({}%), {} finding(s) so far",
                (done as i64 * 100)
                    .checked_div(total)
                    .unwrap_or(100)
                    .min(100),
                checker.findings()
            );
        }
        if last_message.elapsed() > options.stall_timeout {
            return Err(VerifyError::Stalled {
                seconds: options.stall_timeout.as_secs(),
                partitions: left,
                last_error,
            });
        }
    }
    Ok(read)
}

/// Moves each partition's `next` to its position, rechecks the end of those that reached it,
/// and pauses those read to their end; returns how many ended.
fn sweep(consumer: &BaseConsumer<Highs>, ends: &mut Ends) -> usize {
    if let Ok(positions) = consumer.position() {
        for p in positions.elements() {
            if let (Offset::Offset(at), Some(Some(end))) =
                (p.offset(), end_of(ends, p.topic(), p.partition()))
            {
                end.next = end.next.max(at);
            }
        }
    }
    let taken = consumer.context().taken();
    let mut ended = 0;
    for (topic, slots) in ends.iter_mut() {
        for (partition, slot) in slots.iter_mut().enumerate() {
            let Some(end) = slot.as_mut() else {
                continue;
            };
            let partition = i32::try_from(partition).unwrap_or(i32::MAX);
            if end.next < end.at {
                continue;
            }
            if !end.rechecked {
                match end.recheck_after {
                    // Two statistics on, one was surely taken after this moment.
                    None => {
                        end.recheck_after = Some(taken + 2);
                        continue;
                    }
                    Some(after) if taken < after => continue,
                    Some(_) => {
                        end.rechecked = true;
                        if let Some(high) = consumer.context().high(topic, partition) {
                            end.at = end.at.max(high);
                        }
                        if end.next < end.at {
                            continue;
                        }
                    }
                }
            }
            *slot = None;
            ended += 1;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(topic, partition);
            if let Err(e) = consumer.pause(&tpl) {
                tracing::debug!(error = %e, topic, partition, "cannot pause a partition read to its end");
            }
        }
    }
    ended
}

/// The end slot of a partition; `None` for one not assigned.
fn end_of<'a>(ends: &'a mut Ends, topic: &str, partition: i32) -> Option<&'a mut Option<End>> {
    let index = usize::try_from(partition).ok()?;
    ends.get_mut(topic)?.get_mut(index)
}

fn message(m: &BorrowedMessage<'_>) -> Message {
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Message {
        topic: m.topic().to_owned(),
        partition: m.partition(),
        offset: m.offset(),
        headers,
        value: m.payload().unwrap_or_default().to_vec(),
    }
}
