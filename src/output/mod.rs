//! Outputs: where records go, side by side under `outputs`, one key per kind.
//!
//! Every output receives batches of records over its own bounded channel and confirms each
//! record's [`crate::ack::Ack`] only once the record is durable by that output's standard
//! (written and flushed for `stdout`). A record taken by several outputs is confirmed to its
//! source only when all of them confirmed it. Without any output configured, `stdout` is used.
//!
//! Each output may have its own `types` filter (Pryv's `AUDIT_STORAGE_FILTER` and
//! `AUDIT_SYSLOG_FILTER`); without one it takes the global `types`. A record goes to every
//! output whose filter accepts it: its `outputs` mask has bit `i` set for the `i`-th of
//! [`OutputsConfig::enabled`].

pub mod kafka;
pub mod stdout;
pub mod syslog;

use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::Problem;
use crate::envelope::Record;
use crate::filter::TypesConfig;
pub use stdout::StdoutConfig;

/// The `outputs` section.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutputsConfig {
    /// Print each record as a JSON line (the same lines as `auditrail check`).
    pub stdout: Option<StdoutConfig>,
    /// Ship records to Kafka.
    pub kafka: Option<kafka::KafkaConfig>,
    /// Send records to syslog.
    pub syslog: Option<syslog::SyslogConfig>,
}

impl OutputsConfig {
    pub fn validate(&self, path: &str, problems: &mut Vec<Problem>) {
        if let Some(kafka) = &self.kafka {
            kafka.validate(&format!("{path}.kafka"), problems);
        }
        if let Some(syslog) = &self.syslog {
            syslog.validate(&format!("{path}.syslog"), problems);
        }
        if let Some(types) = self.stdout.as_ref().and_then(|s| s.types.as_ref()) {
            types.validate(&format!("{path}.stdout.types"), problems);
        }
    }

    /// The outputs in force, in a fixed order (kafka, syslog, stdout), with each one's own type
    /// filter if it has one. Bit `i` of a record's `outputs` mask is the `i`-th.
    pub fn enabled(&self) -> Vec<(&'static str, Option<&TypesConfig>)> {
        let mut enabled = Vec::new();
        if let Some(k) = &self.kafka {
            enabled.push(("kafka", k.types.as_ref()));
        }
        if let Some(s) = &self.syslog {
            enabled.push(("syslog", s.types.as_ref()));
        }
        if let Some(s) = &self.stdout {
            enabled.push(("stdout", s.types.as_ref()));
        }
        if enabled.is_empty() {
            enabled.push(("stdout", None));
        }
        enabled
    }

    /// This config with every output's own type filter removed: what a reload cannot change
    /// without a restart.
    pub fn without_filters(&self) -> OutputsConfig {
        let mut c = self.clone();
        if let Some(k) = &mut c.kafka {
            k.types = None;
        }
        if let Some(s) = &mut c.syslog {
            s.types = None;
        }
        if let Some(s) = &mut c.stdout {
            s.types = None;
        }
        c
    }

    /// Takes every output's own type filter from `other` (a reload).
    pub fn set_filters_from(&mut self, other: &OutputsConfig) {
        if let (Some(k), Some(o)) = (&mut self.kafka, &other.kafka) {
            k.types = o.types.clone();
        }
        if let (Some(s), Some(o)) = (&mut self.syslog, &other.syslog) {
            s.types = o.types.clone();
        }
        if let (Some(s), Some(o)) = (&mut self.stdout, &other.stdout) {
            s.types = o.types.clone();
        }
    }

    /// The outputs in force: those configured, or `stdout` when none is.
    pub fn effective(&self) -> OutputsConfig {
        let mut outputs = self.clone();
        if outputs.stdout.is_none() && outputs.kafka.is_none() && outputs.syslog.is_none() {
            outputs.stdout = Some(StdoutConfig::default());
        }
        outputs
    }

    /// The names of the outputs in force, for logs.
    pub fn names(&self) -> Vec<&'static str> {
        self.enabled().into_iter().map(|(name, _)| name).collect()
    }
}

/// Why an output failed.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("stdout: {0}")]
    Stdout(#[from] std::io::Error),
    #[error(transparent)]
    Kafka(#[from] kafka::KafkaError),
    #[error(transparent)]
    Syslog(#[from] syslog::SyslogError),
    #[error("output task failed: {0}")]
    Task(String),
}

/// Batches queued in front of each output.
const QUEUED_BATCHES: usize = 8;

/// The running outputs.
pub struct Outputs {
    /// Where the source sends its batches.
    pub sender: mpsc::Sender<Vec<Record>>,
    /// Ends when every output has drained (after `sender` and its clones are dropped).
    pub done: JoinHandle<Result<(), OutputError>>,
    /// The Kafka output's health, when it runs.
    pub kafka_health: Option<std::sync::Arc<kafka::KafkaHealth>>,
    /// The syslog output's health, when it runs.
    pub syslog_health: Option<std::sync::Arc<syslog::SyslogHealth>>,
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
    let mut syslog_health = None;
    let syslog_shutdown = shutdown.clone();
    if let Some(kafka_config) = &config.kafka {
        let output = kafka::start(kafka_config, metrics.outputs.for_output("kafka"))?;
        kafka_health = Some(std::sync::Arc::clone(&output.health));
        let (tx, rx) = mpsc::channel(QUEUED_BATCHES);
        senders.push(tx);
        tasks.push(tokio::spawn(async move {
            Ok(kafka::run(output, rx, shutdown, classes).await?)
        }));
    }
    if let Some(syslog_config) = &config.syslog {
        let output = syslog::SyslogOutput::new(syslog_config)?;
        syslog_health = Some(std::sync::Arc::clone(&output.health));
        let (tx, rx) = mpsc::channel(QUEUED_BATCHES);
        senders.push(tx);
        let handles = metrics.outputs.for_output("syslog");
        tasks.push(tokio::spawn(async move {
            Ok(output.run(rx, handles, syslog_shutdown).await?)
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
        done,
        kafka_health,
        syslog_health,
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

/// Sends each record to every output its mask names; each copy carries its own share of the
/// record's ack.
async fn fan_out(mut rx: mpsc::Receiver<Vec<Record>>, outputs: Vec<mpsc::Sender<Vec<Record>>>) {
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
