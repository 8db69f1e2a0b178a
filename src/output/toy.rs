//! A toy output, for tests only: what adding an output takes is this file, its `mod` line
//! and one registry line in `output/mod.rs` (see `crate::extending`).
//!
//! It keeps the ids of the records it is given (by its configured `name`, so tests running at
//! the same time do not share), confirms each at once, reports not ready when `unready` is
//! set, and notes `drained` when it ends in a drain.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{Context, Drain, Output, OutputConfig, OutputError, OutputHealth};
use crate::envelope::Record;
use crate::filter::TypesConfig;
use crate::metrics::OutputHandles;
use crate::problem::Problem;

/// `outputs.toy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToyConfig {
    pub types: Option<TypesConfig>,
    /// Where what it delivers is kept: see [`delivered`].
    pub name: String,
    /// Report not ready.
    pub unready: bool,
}

/// What each toy output delivered, by name: record ids, then `drained` once its drain began.
static DELIVERED: Mutex<BTreeMap<String, Vec<String>>> = Mutex::new(BTreeMap::new());

pub(crate) fn delivered(name: &str) -> Vec<String> {
    let all = DELIVERED.lock().unwrap_or_else(|e| e.into_inner());
    all.get(name).cloned().unwrap_or_default()
}

fn deliver(name: &str, what: String) {
    let mut all = DELIVERED.lock().unwrap_or_else(|e| e.into_inner());
    all.entry(name.to_owned()).or_default().push(what);
}

impl OutputConfig for ToyConfig {
    fn types(&self) -> Option<&TypesConfig> {
        self.types.as_ref()
    }

    fn types_mut(&mut self) -> &mut Option<TypesConfig> {
        &mut self.types
    }

    fn required(&self) -> bool {
        true
    }

    fn validate(&self, path: &str, problems: &mut Vec<Problem>) {
        if self.name.is_empty() {
            problems.push(Problem::new(format!("{path}.name"), "must not be empty"));
        }
        if let Some(types) = &self.types {
            types.validate(&format!("{path}.types"), problems);
        }
    }

    fn build(&self, context: Context) -> Result<Box<dyn Output>, OutputError> {
        Ok(Box::new(Toy {
            name: self.name.clone(),
            health: Arc::new(ToyHealth(self.unready)),
            metrics: context.metrics,
        }))
    }
}

struct Toy {
    name: String,
    health: Arc<ToyHealth>,
    metrics: OutputHandles,
}

struct ToyHealth(bool);

impl OutputHealth for ToyHealth {
    fn not_ready(&self) -> Vec<String> {
        if self.0 {
            vec!["toy: unready as configured".into()]
        } else {
            Vec::new()
        }
    }
}

impl Output for Toy {
    fn health(&self) -> Arc<dyn OutputHealth> {
        Arc::clone(&self.health) as Arc<dyn OutputHealth>
    }

    fn run(
        self: Box<Self>,
        mut batches: mpsc::Receiver<Vec<Record>>,
        mut drain: Drain,
    ) -> BoxFuture<'static, Result<(), OutputError>> {
        let Toy {
            name, mut metrics, ..
        } = *self;
        Box::pin(async move {
            loop {
                tokio::select! {
                    batch = batches.recv() => match batch {
                        Some(batch) => for record in batch {
                            metrics.sent(&record.retention.topic, record.value.len());
                            metrics.acked(&record.retention.topic, record.read_time);
                            deliver(&name, record.id.clone());
                            record.ack.confirm();
                        },
                        None => {
                            drain.begin();
                            break;
                        }
                    },
                    () = drain.changed() => {}
                }
            }
            if drain.draining() {
                deliver(&name, "drained".into());
            }
            Ok(())
        })
    }
}
