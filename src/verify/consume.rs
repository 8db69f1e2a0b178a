//! The Kafka side of `verify`: every partition of every topic, assigned by hand from its
//! first offset to its high watermark as read at start, fed to the checker in the order each
//! partition holds. No consumer group: nothing is committed, nothing else is disturbed.
//! Messages written after the start are not read, so a run ends.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message as _};
use rdkafka::{Offset, TopicPartitionList};

use super::check::Checker;
use super::{Message, Options, VerifyError};

/// How long one metadata or watermark request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the consumer's positions are looked at (a partition whose last offsets are not
/// messages, such as transaction markers, ends by its position).
const POSITION_EVERY: Duration = Duration::from_secs(1);

/// What the reader should know besides the checks' findings.
#[derive(Debug, Default)]
pub(super) struct Read {
    pub(super) notes: Vec<String>,
}

/// Where each partition of a topic ends (`None`: read to its end already, or empty).
type Ends = HashMap<String, Vec<Option<i64>>>;

pub(super) fn read(
    mut client: ClientConfig,
    topics: &[String],
    checker: &mut Checker,
    options: &Options,
) -> Result<Read, VerifyError> {
    client
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = client
        .create()
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
            let index = usize::try_from(partition).unwrap_or(0);
            if slots.len() <= index {
                slots.resize(index + 1, None);
            }
            if high > low {
                slots[index] = Some(high);
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
    let mut last_position = Instant::now();
    let mut last_progress = Instant::now();
    let mut last_error = None;
    while left > 0 {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last_message = Instant::now();
                let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
                if let Some(end) = end_of(&mut ends, topic, partition) {
                    let Some(at) = *end else { continue };
                    if offset < at {
                        checker.message(message(&m));
                    }
                    if offset + 1 >= at {
                        *end = None;
                        left -= 1;
                        pause(&consumer, topic, partition);
                    }
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "reading the topics");
                last_error = Some(e.to_string());
            }
            None => {}
        }
        if last_position.elapsed() >= POSITION_EVERY {
            last_position = Instant::now();
            if let Ok(positions) = consumer.position() {
                for p in positions.elements() {
                    let Offset::Offset(at) = p.offset() else {
                        continue;
                    };
                    let Some(end) = end_of(&mut ends, p.topic(), p.partition()) else {
                        continue;
                    };
                    if end.is_some_and(|e| at >= e) {
                        *end = None;
                        left -= 1;
                        pause(&consumer, p.topic(), p.partition());
                    }
                }
            }
        }
        if last_progress.elapsed() >= options.progress_every && !options.progress_every.is_zero() {
            last_progress = Instant::now();
            let done = checker.messages();
            eprintln!(
                "auditrail verify: {done} of {total} messages read ({}%), {} finding(s) so far",
                (done as i64 * 100).checked_div(total).unwrap_or(100),
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

/// The end slot of a partition; `None` for one not assigned.
fn end_of<'a>(ends: &'a mut Ends, topic: &str, partition: i32) -> Option<&'a mut Option<i64>> {
    let index = usize::try_from(partition).ok()?;
    ends.get_mut(topic)?.get_mut(index)
}

/// Stops fetching a partition read to its end.
fn pause(consumer: &BaseConsumer, topic: &str, partition: i32) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    if let Err(e) = consumer.pause(&tpl) {
        tracing::debug!(error = %e, topic, partition, "cannot pause a partition read to its end");
    }
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
