//! Counts what is really in Kafka topics by consuming them (tansu's end offsets can
//! undercount), for `scripts/bench.sh`; optionally measures latency while consuming
//! concurrently with a running auditrail.
//!
//! ```sh
//! cargo run --release --example count_topic -- --brokers 127.0.0.1:9092 \
//!     --topics audit-60d,audit-forever --expect 100000
//! ```
//!
//! Reads every partition of every topic from the beginning and prints one JSON object:
//! `{"messages","distinct","duplicates","per_topic":{..},"timestamp_type", "latency_ms":{..},
//! "read_latency_ms":{..}}`. Records are told apart by their `id` header (the envelope's id).
//!
//! It stops once `distinct >= expect` and nothing more arrived for `--settle-ms` (so
//! duplicates that follow are counted too), or after `--idle-ms` without a message, or at
//! `--timeout-s`. With `--expect-file` the expected count is read from that file once it
//! exists (the benchmark writes it when its writer is done), so the consumer can start before
//! the count is known.
//!
//! With `--latency`, for each record's first arrival: `latency_ms` = the time this consumer
//! received it − the line's CRI timestamp (the envelope's `source.time`), an upper bound of the
//! time from the line being written to its acknowledgement (the broker only serves acknowledged
//! data, and this consumer polls continuously with `fetch.wait.max.ms=5`); `read_latency_ms` =
//! the Kafka record timestamp − the CRI timestamp (with CreateTime, which auditrail sets to the
//! moment it read the line, this is the time to read; with LogAppendTime it would be the time
//! to reach the broker's log).
// A benchmark tool: any failure ends the measurement, with the reason.
#![allow(clippy::expect_used, clippy::unwrap_used, unreachable_pub)]

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Parser;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, Timestamp};
use rdkafka::{Offset, TopicPartitionList};

#[derive(Parser)]
struct Cli {
    /// `host:port` of the broker.
    #[arg(long)]
    brokers: String,
    /// Comma-separated topics.
    #[arg(long, value_delimiter = ',')]
    topics: Vec<String>,
    /// Distinct records expected.
    #[arg(long)]
    expect: Option<u64>,
    /// A file that will hold the expected count (read once it exists and parses).
    #[arg(long)]
    expect_file: Option<PathBuf>,
    /// Quiet time after reaching the expected count before stopping.
    #[arg(long, default_value_t = 1000)]
    settle_ms: u64,
    /// Stop after this long without a message (only once the expected count is known, or
    /// when none is given).
    #[arg(long, default_value_t = 10_000)]
    idle_ms: u64,
    /// Give up after this long in all.
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
    /// Measure latencies from the envelope's `source.time`.
    #[arg(long)]
    latency: bool,
}

fn percentiles(mut v: Vec<f64>) -> serde_json::Value {
    if v.is_empty() {
        return serde_json::json!({"count": 0});
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[(((v.len() - 1) as f64) * q).round() as usize];
    serde_json::json!({
        "count": v.len(),
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "max": v[v.len() - 1],
    })
}

fn main() {
    let cli = Cli::parse();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(cli.timeout_s);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cli.brokers)
        .set("group.id", format!("count-topic-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .set("log_level", "3")
        .create()
        .expect("consumer");

    // Wait until every topic exists (auditrail creates its class topics at startup).
    let mut tpl = TopicPartitionList::new();
    for topic in &cli.topics {
        loop {
            let n = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(5))
                .ok()
                .and_then(|m| m.topics().first().map(|t| t.partitions().len()))
                .unwrap_or(0);
            if n > 0 {
                for p in 0..n as i32 {
                    tpl.add_partition_offset(topic, p, Offset::Beginning)
                        .expect("partition");
                }
                break;
            }
            if Instant::now() > deadline {
                eprintln!("count_topic: topic {topic} never appeared");
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    consumer.assign(&tpl).expect("assign");

    let mut expect = cli.expect;
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let mut per_topic: BTreeMap<String, u64> = BTreeMap::new();
    let mut messages = 0u64;
    let mut latency = Vec::new();
    let mut read_latency = Vec::new();
    let mut timestamp_type = "none";
    let mut last_message = Instant::now();
    let mut known_at = last_message;
    let mut errors = 0u64;
    loop {
        let now = Instant::now();
        if expect.is_none() {
            if let Some(path) = &cli.expect_file {
                expect = std::fs::read_to_string(path)
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                if expect.is_some() {
                    // Idle time counts from when the target is known.
                    known_at = now;
                }
            }
        }
        let known = expect.is_some() || cli.expect_file.is_none();
        if now > deadline {
            eprintln!("count_topic: timed out");
            break;
        }
        if let Some(e) = expect {
            if seen.len() as u64 >= e
                && now.duration_since(last_message).as_millis() as u64 >= cli.settle_ms
            {
                break;
            }
        }
        let quiet = now.duration_since(last_message.max(known_at));
        if known && quiet.as_millis() as u64 >= cli.idle_ms {
            break;
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let received = Utc::now();
                last_message = Instant::now();
                messages += 1;
                *per_topic.entry(m.topic().to_owned()).or_default() += 1;
                let id = m
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == "id").and_then(|h| h.value))
                    .map(<[u8]>::to_vec)
                    .unwrap_or_else(|| m.payload().unwrap_or_default().to_vec());
                let first = seen.insert(id);
                if cli.latency && first {
                    let value: serde_json::Value =
                        serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or_default();
                    let cri = value["source"]["time"]
                        .as_str()
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.with_timezone(&Utc));
                    if let Some(cri) = cri {
                        latency
                            .push((received - cri).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                        let ts = match m.timestamp() {
                            Timestamp::CreateTime(ms) => {
                                timestamp_type = "create_time";
                                Some(ms)
                            }
                            Timestamp::LogAppendTime(ms) => {
                                timestamp_type = "log_append_time";
                                Some(ms)
                            }
                            Timestamp::NotAvailable => None,
                        };
                        if let Some(ms) = ts {
                            read_latency.push(ms as f64 - cri.timestamp_micros() as f64 / 1000.0);
                        }
                    }
                }
            }
            Some(Err(e)) => {
                errors += 1;
                if errors <= 5 {
                    eprintln!("count_topic: {e}");
                }
            }
            None => {}
        }
    }
    let distinct = seen.len() as u64;
    let mut out = serde_json::json!({
        "messages": messages,
        "distinct": distinct,
        "duplicates": messages - distinct,
        "per_topic": per_topic,
        "expected": expect,
        "errors": errors,
        "seconds": started.elapsed().as_secs_f64(),
    });
    if cli.latency {
        out["timestamp_type"] = timestamp_type.into();
        out["latency_ms"] = percentiles(latency);
        out["read_latency_ms"] = percentiles(read_latency);
    }
    println!("{out}");
}
