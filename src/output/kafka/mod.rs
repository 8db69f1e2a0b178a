//! `outputs.kafka`: at-least-once delivery to Kafka.
//!
//! Guarantees:
//! - a record is confirmed to its source (so the checkpoint may pass it) only once the broker
//!   acknowledged it with `acks=all` through an idempotent producer;
//! - nothing is dropped because Kafka is slow or down: in-flight records and bytes are
//!   bounded, and when the bound is reached the output stops taking batches, which stops the
//!   source from reading (the file is the buffer). Retriable failures are retried forever,
//!   with backoff;
//! - a record larger than its topic (or the producer) takes is sent in chunks a consumer
//!   reassembles (see `chunk`), never dropped or dead-lettered for its size;
//! - a record the broker rejects for good (not authorised, invalid) goes to the dead-letter
//!   topic with the reason when one is configured, in chunks if the dead-letter topic needs
//!   them; otherwise progress stops and the reason is logged on every retry, because a
//!   compliance trail with a hole in it is worse than one that is late;
//! - each retention class's topic is checked on the broker (`retention.ms`, `retention.bytes`,
//!   `cleanup.policy`); records of a class whose topic would delete them too early are held,
//!   not shipped, and the topic is named in the logs.
//!
//! The Kafka record's timestamp is the time auditrail read the line; the key is chosen by
//! `key` (the pod uid by default); the headers carry the id, type, format, retention class and
//! expiry so consumers can route and deduplicate without parsing the value.

mod chunk;
mod config;
mod credentials;
mod delivery;
mod error;
mod health;
mod reports;
mod sink;
mod tls;
mod topics;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use rdkafka::config::ClientConfig;
use tokio::sync::mpsc;

use super::{Context, Drain, Output, OutputConfig, OutputError, OutputHealth};
use crate::envelope::Record;
use crate::filter::TypesConfig;
use crate::problem::Problem;
pub(crate) use config::{CreateTopics, KafkaConfig};
use credentials::Secrets;
pub(crate) use error::KafkaError;
pub(crate) use topics::Classes;

const NAME: &str = "kafka";

/// Sets what every client of `config` connects with: the brokers, `properties` (TLS, SASL,
/// any librdkafka setting) and the `secret_files` values held in `secrets`. Set after a
/// client's own defaults, so that `properties` win over them.
fn apply_connection(client: &mut ClientConfig, config: &KafkaConfig, secrets: &Secrets) {
    client.set("bootstrap.servers", config.brokers.list().join(","));
    for (name, value) in &config.properties {
        client.set(name, value);
    }
    secrets.apply(client);
}

/// A client config that connects to `config`'s brokers as the output does (its secret files
/// read now), for the commands that read what the output wrote (`auditrail verify`).
pub(crate) fn client_config(config: &KafkaConfig) -> Result<ClientConfig, KafkaError> {
    let secrets = Secrets::read(config)?;
    let mut client = ClientConfig::new();
    apply_connection(&mut client, config, &secrets);
    Ok(client)
}

impl OutputConfig for KafkaConfig {
    fn types(&self) -> Option<&TypesConfig> {
        self.types.as_ref()
    }

    fn types_mut(&mut self) -> &mut Option<TypesConfig> {
        &mut self.types
    }

    fn required(&self) -> bool {
        self.required
    }

    fn validate(&self, path: &str, problems: &mut Vec<Problem>) {
        KafkaConfig::validate(self, path, problems);
    }

    fn build(&self, context: Context) -> Result<Box<dyn Output>, OutputError> {
        let output = sink::build(self, context.metrics, context.classes).map_err(|e| {
            OutputError::Config {
                output: NAME,
                source: Box::new(e),
            }
        })?;
        Ok(Box::new(output))
    }
}

impl Output for sink::KafkaOutput {
    fn health(&self) -> Arc<dyn OutputHealth> {
        Arc::clone(&self.health) as Arc<dyn OutputHealth>
    }

    fn run(
        self: Box<Self>,
        batches: mpsc::Receiver<Vec<Record>>,
        drain: Drain,
    ) -> BoxFuture<'static, Result<(), OutputError>> {
        let drain = drain.with_timeout(self.drain_timeout());
        Box::pin(async move {
            sink::run(*self, batches, drain)
                .await
                .map_err(|e| OutputError::Failed {
                    output: NAME,
                    source: Box::new(e),
                })
        })
    }
}
