//! The Kafka output's error: why it could not start or stopped.

use rdkafka::error::KafkaError as RdKafkaError;

/// Why the Kafka output could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KafkaError {
    #[error("kafka secret file for {property} ({path})")]
    SecretFile {
        property: String,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kafka client")]
    Client(#[from] RdKafkaError),
    #[error("cannot start the thread that polls the kafka producer")]
    PollThread(#[source] std::io::Error),
}
