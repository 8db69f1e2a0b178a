//! `outputs.syslog`: each record as one syslog message, over a Unix socket (datagram or
//! stream) in the local format `syslog(3)` writes, or over UDP or TCP (RFC 6587
//! octet-counting framing) as RFC 5424 or RFC 3164.
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
//! facility and severity (`<PRI>`), the time auditrail read the line, the app name and the
//! process id, and over UDP and TCP the host name and (RFC 5424) the record type as MSGID.
//!
//! What goes on each transport, and why:
//! - a Unix socket (datagram or stream) gets the local format whatever `protocol` says:
//!   `<PRI>Mmm dd hh:mm:ss TAG[PID]: MSG`, no HOSTNAME. That is what glibc's `syslog(3)`
//!   writes to /dev/log (misc/syslog.c, `__vsyslog_internal`: `SYSLOG_HEADER` is
//!   `"<%d>%s%n%s%s%.0d%s: "`, the time `%h %e %T `) and what util-linux `logger(1)` writes to
//!   a local socket unless told otherwise (misc-utils/logger.c, `syslog_local_header`). The
//!   receivers there parse nothing else: rsyslog's imuxsock with its default special parser
//!   (plugins/imuxsock/imuxsock.c, `SubmitMsg`) reads `<PRI>`, an RFC 3339 or RFC 3164 time
//!   stamp, then takes everything up to the first space as the tag — a HOSTNAME became the
//!   tag, and the `1` of an RFC 5424 message too (issue 15, finding 2); journald
//!   (src/journal/journald-syslog.c, `manager_process_syslog_message`) reads `<PRI>` into
//!   PRIORITY and SYSLOG_FACILITY, skips an RFC 3164 time stamp (`syslog_skip_timestamp`),
//!   and takes the first word if it ends with `:` as SYSLOG_IDENTIFIER and SYSLOG_PID
//!   (`syslog_parse_identifier`), the rest as MESSAGE: with a HOSTNAME first, or an RFC 5424
//!   header, there is no identifier and the whole header lands in MESSAGE;
//! - a Unix stream socket frames each message with `\n`, as `logger(1)` does, not glibc's NUL
//!   (see [`transport::frame`]: rsyslog's imptcp splits only on `\n` by default); journald's
//!   /dev/log is a datagram socket only;
//! - UDP and TCP get `protocol`: RFC 5424 (default) or RFC 3164, with the HOSTNAME, which
//!   rsyslog's imudp and imtcp parse with their standard parser chain.
//!
//! tests/rsyslog.rs checks every transport with every protocol against a real rsyslogd.

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
