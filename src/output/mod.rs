//! Outputs: where records go, side by side under `outputs`, one key per kind.
//!
//! Every output receives batches of records over its own bounded channel and confirms each
//! record's [`crate::ack::Ack`] only once the record is durable by that output's standard
//! (written and flushed for `stdout`, acknowledged with `acks=all` for Kafka). A record taken
//! by several outputs is confirmed to its source only when all of them confirmed it. Without
//! any output configured, `stdout` is used.
//!
//! Each output may have its own `types` filter (Pryv's `AUDIT_STORAGE_FILTER` and
//! `AUDIT_SYSLOG_FILTER`); without one it takes the global `types`. A record goes to every
//! output whose filter accepts it: its `outputs` mask has bit `i` set for the `i`-th of
//! [`OutputsConfig::enabled`].
//!
//! One shape for every output: its config section implements [`OutputConfig`] (filter,
//! validation, building) and what it builds implements [`Output`] (health, the delivery loop).
//! This module iterates over them for filters, reload, health, drain and metrics, so adding an
//! output is its own file or folder plus one line in the [`registry!`] below.

mod drain;
mod fanout;
pub(crate) mod kafka;
pub(crate) mod stdout;
pub(crate) mod syslog;
#[cfg(test)]
pub(crate) mod toy;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::envelope::{KeyStrategy, Record};
use crate::filter::TypesConfig;
use crate::metrics::{Metrics, OutputHandles};
use crate::problem::Problem;
pub(crate) use drain::Drain;
pub(crate) use kafka::Classes;

/// Declares the outputs auditrail knows: the `outputs` section (one optional key per output)
/// and the list this module iterates. The order is the order of the records' `outputs` mask.
macro_rules! registry {
    ($( $(#[doc = $doc:literal])* $(#[cfg($cfg:meta)])? $name:ident : $config:ty, )+) => {
        /// The `outputs` section.
        #[derive(Debug, Clone, Default, Deserialize, PartialEq)]
        #[serde(deny_unknown_fields, default)]
        pub struct OutputsConfig {
            $( $(#[doc = $doc])* $(#[cfg($cfg)])? pub $name: Option<$config>, )+
        }

        impl OutputsConfig {
            /// Every output kind, configured or not, in registry order.
            // Pushed one by one: an entry may be compiled out (`cfg`).
            #[allow(clippy::vec_init_then_push)]
            fn slots(&self) -> Vec<(&'static str, Option<&dyn OutputConfig>)> {
                let mut slots: Vec<(&'static str, Option<&dyn OutputConfig>)> = Vec::new();
                $(
                    $(#[cfg($cfg)])?
                    slots.push((stringify!($name), self.$name.as_ref().map(|c| c as &dyn OutputConfig)));
                )+
                slots
            }

            #[allow(clippy::vec_init_then_push)]
            fn slots_mut(&mut self) -> Vec<(&'static str, Option<&mut dyn OutputConfig>)> {
                let mut slots: Vec<(&'static str, Option<&mut dyn OutputConfig>)> = Vec::new();
                $(
                    $(#[cfg($cfg)])?
                    slots.push((stringify!($name), self.$name.as_mut().map(|c| c as &mut dyn OutputConfig)));
                )+
                slots
            }
        }
    };
}

registry! {
    /// Ship records to Kafka.
    kafka: kafka::KafkaConfig,
    /// Send records to syslog.
    syslog: syslog::SyslogConfig,
    /// Print each record as a JSON line (the same lines as `auditrail check`).
    stdout: stdout::StdoutConfig,
    /// A toy output for the test that shows what adding an output takes.
    #[cfg(test)]
    toy: toy::ToyConfig,
}

/// One kind of output, seen from its config section: everything the rest of auditrail does
/// with an output goes through here.
pub(crate) trait OutputConfig: std::fmt::Debug + Send + Sync {
    /// This output's own type filter; without one it takes the global `types`.
    fn types(&self) -> Option<&TypesConfig>;
    /// The same, to replace on a reload.
    fn types_mut(&mut self) -> &mut Option<TypesConfig>;
    /// Whether the checkpoint waits for this output (`required: true`, the default): an
    /// optional output gets its copy of each record without holding anything back, and
    /// when it falls behind, batches it cannot take are dropped for it and counted.
    fn required(&self) -> bool;
    /// Adds what is wrong with this section to `problems`, at `path` (`outputs.kafka`).
    fn validate(&self, path: &str, problems: &mut Vec<Problem>);
    /// Builds the output; nothing is connected yet. An error here is a config error.
    fn build(&self, context: Context) -> Result<Box<dyn Output>, OutputError>;
}

/// What an output is given when it is built.
pub(crate) struct Context {
    /// Its metric handles (labelled with its name).
    pub metrics: OutputHandles,
    /// The (topic, days) of every retention class; a config reload sends new ones.
    pub classes: watch::Receiver<Classes>,
}

/// A built output: it delivers the batches it is given and confirms each record once durable.
pub(crate) trait Output: Send {
    /// What `/readyz` says about this output.
    fn health(&self) -> Arc<dyn OutputHealth>;
    /// Delivers batches until the channel closes or `drain` ends it: then it delivers what it
    /// holds until the drain's deadline and returns. Records not confirmed by then are read
    /// again at the next start.
    fn run(
        self: Box<Self>,
        batches: mpsc::Receiver<Vec<Record>>,
        drain: Drain,
    ) -> BoxFuture<'static, Result<(), OutputError>>;
}

/// The readiness of one output.
pub(crate) trait OutputHealth: Send + Sync {
    /// Why the output is not ready; empty when it is.
    fn not_ready(&self) -> Vec<String>;
}

/// How long records may wait for an output's acknowledgement, or deliveries keep failing,
/// before readiness fails.
pub(crate) const STALL: Duration = Duration::from_secs(10);

impl OutputsConfig {
    pub fn validate(&self, path: &str, problems: &mut Vec<Problem>) {
        for (name, output) in self.slots() {
            if let Some(output) = output {
                output.validate(&format!("{path}.{name}"), problems);
            }
        }
        if self.enabled().iter().all(|o| !o.required) {
            problems.push(Problem::new(
                path,
                "at least one output must be required: the checkpoint waits for required outputs only",
            ));
        }
    }

    /// The outputs in force, in registry order, with each one's own type filter if it has
    /// one. Bit `i` of a record's `outputs` mask is the `i`-th.
    pub(crate) fn enabled(&self) -> Vec<Enabled<'_>> {
        self.effective_slots()
            .map(|(name, output)| Enabled {
                name,
                types: output.and_then(|o| o.types()),
                required: output.is_none_or(|o| o.required()),
            })
            .collect()
    }

    /// The configured outputs, or `stdout` (with no filter of its own) when none is.
    fn effective_slots(&self) -> impl Iterator<Item = (&'static str, Option<&dyn OutputConfig>)> {
        let configured: Vec<_> = self
            .slots()
            .into_iter()
            .filter_map(|(name, o)| o.map(|o| (name, Some(o))))
            .collect();
        let fallback = configured.is_empty().then_some(("stdout", None));
        configured.into_iter().chain(fallback)
    }

    /// This config with every output's own type filter removed: what a reload cannot change
    /// without a restart.
    pub fn without_filters(&self) -> OutputsConfig {
        let mut c = self.clone();
        for (_, output) in c.slots_mut() {
            if let Some(output) = output {
                *output.types_mut() = None;
            }
        }
        c
    }

    /// Takes every output's own type filter from `other` (a reload).
    pub fn set_filters_from(&mut self, other: &OutputsConfig) {
        for ((_, mine), (_, theirs)) in self.slots_mut().into_iter().zip(other.slots()) {
            if let (Some(mine), Some(theirs)) = (mine, theirs) {
                *mine.types_mut() = theirs.types().cloned();
            }
        }
    }

    /// The outputs in force: those configured, or `stdout` when none is.
    pub fn effective(&self) -> OutputsConfig {
        let mut outputs = self.clone();
        if self.slots().iter().all(|(_, o)| o.is_none()) {
            outputs.stdout = Some(stdout::StdoutConfig::default());
        }
        outputs
    }

    /// The names of the outputs in force, for logs.
    pub fn names(&self) -> Vec<&'static str> {
        self.enabled().into_iter().map(|o| o.name).collect()
    }

    /// What the Kafka record key is (every output shows the key Kafka would get).
    pub fn key(&self) -> KeyStrategy {
        self.kafka.as_ref().map(|k| k.key).unwrap_or_default()
    }
}

/// An output in force, as the per-line stages see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Enabled<'a> {
    pub name: &'static str,
    /// Its own type filter, if it has one.
    pub types: Option<&'a TypesConfig>,
    pub required: bool,
}

/// Why an output could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OutputError {
    /// The output's config cannot be used (exit code 2).
    #[error("outputs.{output}")]
    Config {
        output: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The output failed while running.
    #[error("output {output} failed")]
    Failed {
        output: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The output's task panicked or was cancelled.
    #[error("output task failed")]
    Task(#[source] tokio::task::JoinError),
    /// The outputs ended before the service stopped.
    #[error("the outputs ended before shutdown")]
    Ended,
}

/// Batches queued in front of each output.
const QUEUED_BATCHES: usize = 8;

/// The running outputs.
pub(crate) struct Outputs {
    /// Where the source sends its batches.
    pub sender: mpsc::Sender<Vec<Record>>,
    /// Ends when every output has drained (after `sender` and its clones are dropped), or at
    /// once when one of them fails: an output that cannot deliver ends the process.
    pub done: JoinHandle<Result<(), OutputError>>,
    /// Each output's readiness, by name.
    pub health: Vec<(&'static str, Arc<dyn OutputHealth>)>,
}

/// Builds and starts the outputs in force. `classes` are the (topic, days) of every retention
/// class; `shutdown` turning true starts every output's drain.
pub(crate) fn start(
    config: &OutputsConfig,
    classes: watch::Receiver<Classes>,
    shutdown: watch::Receiver<bool>,
    metrics: &Metrics,
) -> Result<Outputs, OutputError> {
    let config = config.effective();
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    let mut health = Vec::new();
    for (name, output) in config.slots() {
        let Some(output) = output else { continue };
        let required = output.required();
        let handles = metrics.outputs.for_output(name);
        let dropped = handles.dropped.clone();
        let output = output.build(Context {
            metrics: handles,
            classes: classes.clone(),
        })?;
        health.push((name, output.health()));
        let (tx, rx) = mpsc::channel(QUEUED_BATCHES);
        senders.push(fanout::Target {
            sender: tx,
            required,
            dropped,
        });
        tasks.push(tokio::spawn(output.run(rx, Drain::new(shutdown.clone()))));
    }
    let (sender, done) = if senders.len() == 1 {
        (senders.remove(0).sender, tokio::spawn(first_failure(tasks)))
    } else {
        let (tx, rx) = mpsc::channel(QUEUED_BATCHES);
        tasks.push(tokio::spawn(async move {
            fanout::fan_out(rx, senders).await;
            Ok(())
        }));
        (tx, tokio::spawn(first_failure(tasks)))
    };
    Ok(Outputs {
        sender,
        done,
        health,
    })
}

/// Waits for every task; the first failure ends the wait at once.
async fn first_failure(tasks: Vec<JoinHandle<Result<(), OutputError>>>) -> Result<(), OutputError> {
    let mut tasks: futures_util::stream::FuturesUnordered<_> = tasks.into_iter().collect();
    while let Some(result) = futures_util::StreamExt::next(&mut tasks).await {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(OutputError::Task(e)),
        }
    }
    Ok(())
}
