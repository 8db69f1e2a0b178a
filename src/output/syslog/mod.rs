//! `outputs.syslog`: each record as one syslog message (RFC 5424 or RFC 3164), over a Unix
//! socket (datagram or stream), UDP, or TCP with RFC 6587 octet-counting framing.
//!
//! Guarantees:
//! - a record is confirmed to its source only once its message was written to the socket
//!   (stream: the write returned; datagram: the send returned). Syslog has no
//!   application-level acknowledgement, so that is the best this output can know;
//! - nothing is dropped: a record whose delivery failed stays first in line and is sent again
//!   after a reconnect, with backoff (100 ms doubling to 5 s), forever. While it waits, the
//!   output takes no new batch, which stops the source from reading (the file is the buffer);
//! - a stream connection the receiver has closed is noticed before the next write (the
//!   receiver never sends anything, so a readable end-of-stream means it is gone) and opened
//!   again, so records are not written into a dead connection. What remains is syslog's own
//!   limit: records written just before a receiver dies (in the kernel's buffers, not yet
//!   read by it) are confirmed and lost; only an acknowledging protocol (RELP, Kafka) closes
//!   that window;
//! - a message longer than `max_message_bytes` is never truncated by auditrail: it is sent
//!   whole, logged (with its id, then every 1000th) and counted (`failed` with reason
//!   `oversize`), because the receiver may truncate it (rsyslog's default `$MaxMessageSize`
//!   is 8k). A datagram the kernel refuses as too large (UDP over 64k, a Unix datagram over
//!   the socket buffer) can never be sent on that transport: progress stops there, the
//!   reason is logged on every retry (every 30 s) and `blocked` is 1, until an operator
//!   switches to a stream transport or raises the limit. A hole in an audit trail is worse
//!   than a late one.
//!
//! The message text comes from `template` (see [`template`]); the header carries the
//! facility and severity (`<PRI>`), the time auditrail read the line, the host name, the
//! app name, the process id and (RFC 5424) the record type as MSGID.

mod config;
mod health;
mod message;
mod sink;
pub(crate) mod template;
#[cfg(test)]
mod tests;
mod transport;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use super::{Context, Drain, Output, OutputConfig, OutputError, OutputHealth};
use crate::envelope::Record;
use crate::filter::TypesConfig;
use crate::problem::Problem;
pub(crate) use config::SyslogConfig;
pub(crate) use template::TemplateError;

const NAME: &str = "syslog";

/// Why the syslog output could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SyslogError {
    #[error("{field}: {message}")]
    Address {
        field: &'static str,
        message: String,
    },
    #[error("template")]
    Template(#[source] TemplateError),
}

impl OutputConfig for SyslogConfig {
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
        SyslogConfig::validate(self, path, problems);
    }

    fn build(&self, context: Context) -> Result<Box<dyn Output>, OutputError> {
        let output =
            sink::SyslogOutput::new(self, context.metrics).map_err(|e| OutputError::Config {
                output: NAME,
                source: Box::new(e),
            })?;
        Ok(Box::new(output))
    }
}

impl Output for sink::SyslogOutput {
    fn health(&self) -> Arc<dyn OutputHealth> {
        Arc::clone(&self.health) as Arc<dyn OutputHealth>
    }

    fn run(
        self: Box<Self>,
        batches: mpsc::Receiver<Vec<Record>>,
        drain: Drain,
    ) -> BoxFuture<'static, Result<(), OutputError>> {
        Box::pin(self.deliver(batches, drain))
    }
}
