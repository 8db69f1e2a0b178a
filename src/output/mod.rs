//! Outputs: where records go, side by side under `outputs`, one key per kind.
//!
//! Every output receives batches of records over its own bounded channel and confirms each
//! record's [`crate::ack::Ack`] only once the record is durable by that output's standard
//! (written and flushed for `stdout`). A record taken by several outputs is confirmed to its
//! source only when all of them confirmed it. Without any output configured, `stdout` is used.

pub mod kafka;
pub mod stdout;

use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::Problem;
use crate::envelope::Record;
pub use stdout::StdoutConfig;

/// The `outputs` section.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutputsConfig {
    /// Print each record as a JSON line (the same lines as `auditrail check`).
    pub stdout: Option<StdoutConfig>,
    /// Ship records to Kafka.
    pub kafka: Option<kafka::KafkaConfig>,
}

impl OutputsConfig {
    pub fn validate(&self, path: &str, problems: &mut Vec<Problem>) {
        if let Some(kafka) = &self.kafka {
            kafka.validate(&format!("{path}.kafka"), problems);
        }
    }

    /// The outputs in force: those configured, or `stdout` when none is.
    pub fn effective(&self) -> OutputsConfig {
        let mut outputs = self.clone();
        if outputs.stdout.is_none() && outputs.kafka.is_none() {
            outputs.stdout = Some(StdoutConfig::default());
        }
        outputs
    }

    /// The names of the outputs in force, for logs.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.stdout.is_some() {
            names.push("stdout");
        }
        if self.kafka.is_some() {
            names.push("kafka");
        }
        names
    }
}

/// Why an output failed.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("stdout: {0}")]
    Stdout(#[from] std::io::Error),
    #[error(transparent)]
    Kafka(#[from] kafka::KafkaError),
    #[error("output task failed: {0}")]
    Task(String),
}

/// Batches queued in front of each output.
const QUEUED_BATCHES: usize = 8;

/// The running outputs.
pub struct Outputs {
    /// Where the source sends its batches.
    pub sender: mpsc::Sender<Vec<Record>>,
    /// How many outputs confirm each record.
    pub count: u32,
    /// Ends when every output has drained (after `sender` and its clones are dropped).
    pub done: JoinHandle<Result<(), OutputError>>,
    /// The Kafka output's health, when it runs.
    pub kafka_health: Option<std::sync::Arc<kafka::KafkaHealth>>,
}

/// Starts the outputs in force. `classes` are the (topic, days) of every retention class, for
/// the Kafka output's topic checks; a config reload sends new ones.
/// `shutdown` turns true when the service is stopping (outputs then drain what they hold).
pub async fn start(
    config: &OutputsConfig,
    classes: watch::Receiver<kafka::Classes>,
    shutdown: watch::Receiver<bool>,
    metrics: &crate::metrics::Metrics,
) -> Result<Outputs, OutputError> {
    let config = config.effective();
    let mut senders = Vec::new();
    let mut tasks: Vec<JoinHandle<Result<(), OutputError>>> = Vec::new();
    let mut kafka_health = None;
    if let Some(kafka_config) = &config.kafka {
        let output = kafka::start(kafka_config, metrics.outputs.for_output("kafka"))?;
        kafka_health = Some(std::sync::Arc::clone(&output.health));
        let (tx, rx) = mpsc::channel(QUEUED_BATCHES);
        senders.push(tx);
        tasks.push(tokio::spawn(async move {
            Ok(kafka::run(output, rx, shutdown, classes).await?)
        }));
    }
    if config.stdout.is_some() {
        let (tx, rx) = mpsc::channel(QUEUED_BATCHES);
        senders.push(tx);
        let handles = metrics.outputs.for_output("stdout");
        tasks.push(tokio::spawn(
            async move { Ok(stdout::run(rx, handles).await?) },
        ));
    }
    let count = senders.len() as u32;
    let (sender, done) = if senders.len() == 1 {
        let sender = senders.remove(0);
        let done = tokio::spawn(join_all(tasks));
        (sender, done)
    } else {
        let (tx, rx) = mpsc::channel(QUEUED_BATCHES);
        let fanout = tokio::spawn(fan_out(rx, senders));
        let done = tokio::spawn(async move {
            let _ = fanout.await;
            join_all(tasks).await
        });
        (tx, done)
    };
    Ok(Outputs {
        sender,
        count,
        done,
        kafka_health,
    })
}

async fn join_all(tasks: Vec<JoinHandle<Result<(), OutputError>>>) -> Result<(), OutputError> {
    let mut result = Ok(());
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(e) => result = Err(OutputError::Task(e.to_string())),
        }
    }
    result
}

/// Copies each batch to every output; each copy carries its own share of the record's ack.
async fn fan_out(mut rx: mpsc::Receiver<Vec<Record>>, outputs: Vec<mpsc::Sender<Vec<Record>>>) {
    while let Some(batch) = rx.recv().await {
        let Some((last, rest)) = outputs.split_last() else {
            return;
        };
        for out in rest {
            let copy: Vec<Record> = batch.iter().map(Record::duplicate).collect();
            if out.send(copy).await.is_err() {
                return;
            }
        }
        if last.send(batch).await.is_err() {
            return;
        }
    }
}
