//! The delivery loop: take batches, write each record's message, confirm it once written;
//! on failure keep it first in line and try again after a reconnect, with backoff.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::config::{Address, Header, SyslogConfig};
use super::health::SyslogHealth;
use super::message::Formatter;
use super::transport::{frame, is_too_large, Conn};
use super::SyslogError;
use crate::envelope::Record;
use crate::metrics::OutputHandles;
use crate::output::{Drain, OutputError};

/// The `topic` label of this output's metrics.
const TOPIC: &str = "syslog";
/// How long a connection (name lookup included) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a record the transport refuses as too large waits before it is tried again.
const TOO_LARGE_RETRY: Duration = Duration::from_secs(30);
/// Bytes written to a stream in one write, at most (a single longer message is written whole).
const STREAM_CHUNK: usize = 256 * 1024;

/// A built syslog output, not yet consuming records.
pub(super) struct SyslogOutput {
    /// Shared with the health check.
    pub(super) health: std::sync::Arc<SyslogHealth>,
    formatter: Formatter,
    address: Address,
    /// As configured, for logs.
    address_text: String,
    max_message_bytes: usize,
    drain_timeout: Duration,
    metrics: OutputHandles,
}

/// A record taken from the channel, with its message.
struct Item {
    record: Record,
    message: Vec<u8>,
    /// The transport refused it as too large: progress holds here.
    stuck: bool,
}

/// What one delivery attempt achieved.
enum Outcome {
    /// Every pending record (or a chunk of them) was written.
    Delivered,
    /// Connecting or writing failed; the records not written stay pending.
    Failed {
        reason: &'static str,
        error: io::Error,
        records: usize,
    },
    /// The first pending record is too large for the transport.
    TooLarge(io::Error),
}

/// The connection and its history.
struct Link {
    address: Address,
    address_text: String,
    conn: Option<Conn>,
    /// Failed attempts since the last success.
    failures: u32,
    connected_once: bool,
}

impl Link {
    /// Writes pending records, front first; each one written is confirmed and removed. The
    /// connection is taken out while in use, so an attempt cancelled midway (shutdown) leaves
    /// no half-written connection behind.
    async fn attempt(
        &mut self,
        pending: &mut VecDeque<Item>,
        metrics: &mut OutputHandles,
        buf: &mut Vec<u8>,
    ) -> Outcome {
        let mut conn = match self.conn.take() {
            Some(conn) if !conn.peer_closed() => conn,
            old => {
                if old.is_some() {
                    tracing::info!(address = %self.address_text, "the syslog receiver closed the connection; reconnecting");
                }
                match tokio::time::timeout(CONNECT_TIMEOUT, Conn::open(&self.address)).await {
                    Ok(Ok(conn)) => {
                        if self.failures > 0 || !self.connected_once {
                            tracing::info!(address = %self.address_text, "connected to the syslog receiver");
                        }
                        self.connected_once = true;
                        conn
                    }
                    Ok(Err(error)) => {
                        return Outcome::Failed {
                            reason: "connect",
                            error,
                            records: 1,
                        }
                    }
                    Err(_) => {
                        return Outcome::Failed {
                            reason: "connect",
                            error: io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
                            records: 1,
                        }
                    }
                }
            }
        };
        match &mut conn {
            Conn::Stream(stream) => {
                buf.clear();
                let mut n = 0;
                for item in pending.iter() {
                    if n > 0 && buf.len() + item.message.len() > STREAM_CHUNK {
                        break;
                    }
                    frame(stream.is_tcp(), &item.message, buf);
                    metrics.sent(TOPIC, item.message.len());
                    n += 1;
                }
                if let Err(error) = stream.write_all(buf).await {
                    return Outcome::Failed {
                        reason: "write",
                        error,
                        records: n,
                    };
                }
                for _ in 0..n {
                    if let Some(item) = pending.pop_front() {
                        confirm(item, metrics);
                    }
                }
            }
            Conn::Datagram(socket) => {
                while let Some(item) = pending.front() {
                    metrics.sent(TOPIC, item.message.len());
                    match socket.send(&item.message).await {
                        Ok(_) => {
                            if let Some(item) = pending.pop_front() {
                                confirm(item, metrics);
                            }
                        }
                        Err(error) if is_too_large(&error) => {
                            self.conn = Some(conn);
                            return Outcome::TooLarge(error);
                        }
                        Err(error) => {
                            return Outcome::Failed {
                                reason: "write",
                                error,
                                records: 1,
                            }
                        }
                    }
                }
            }
        }
        self.conn = Some(conn);
        Outcome::Delivered
    }
}

fn confirm(item: Item, metrics: &mut OutputHandles) {
    if item.stuck {
        metrics.blocked.set(0);
    }
    metrics.acked(TOPIC, item.record.read_time);
    item.record.ack.confirm();
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

impl SyslogOutput {
    /// Checks the config once more and prepares the formatter; nothing is connected yet.
    pub(super) fn new(
        config: &SyslogConfig,
        metrics: OutputHandles,
    ) -> Result<SyslogOutput, SyslogError> {
        let address = config
            .address()
            .map_err(|(field, message)| SyslogError::Address { field, message })?;
        if let (Some(protocol), Header::Local) = (config.protocol, config.header()) {
            // Said once per start, so an operator who set `protocol` sees why the messages
            // on the socket do not have that form.
            tracing::info!(
                address = %config.address,
                ?protocol,
                "a unix:// socket gets the local syslog format (as syslog(3) writes it, no HOSTNAME): `protocol` applies to udp:// and tcp://"
            );
        }
        Ok(SyslogOutput {
            health: std::sync::Arc::default(),
            formatter: Formatter::new(config)?,
            address,
            address_text: config.address.clone(),
            max_message_bytes: config.max_message_bytes,
            drain_timeout: config.drain_timeout,
            metrics,
        })
    }

    /// Delivers batches until the channel closes and every record taken is written (or the
    /// drain timeout passes after shutdown began: the unconfirmed rest is read again at the
    /// next start). Batches still arriving after shutdown began are taken until the channel
    /// closes.
    pub(super) async fn deliver(
        self: Box<Self>,
        mut batches: mpsc::Receiver<Vec<Record>>,
        drain: Drain,
    ) -> Result<(), OutputError> {
        let SyslogOutput {
            health,
            formatter,
            address,
            address_text,
            max_message_bytes,
            drain_timeout,
            mut metrics,
        } = *self;
        let mut drain = drain.with_timeout(drain_timeout);
        let mut link = Link {
            address,
            address_text,
            conn: None,
            failures: 0,
            connected_once: false,
        };
        let mut pending: VecDeque<Item> = VecDeque::new();
        let mut buf = Vec::new();
        let mut channel_open = true;
        let mut retry_at: Option<Instant> = None;
        let mut backoff = MIN_BACKOFF;
        let mut oversize: u64 = 0;

        loop {
            if drain.draining() {
                if pending.is_empty() && !channel_open {
                    break;
                }
                if pending.front().is_some_and(|i| i.stuck) {
                    tracing::warn!(
                        records = pending.len(),
                        "a record too large for the syslog transport holds progress; it and the records after it will be read again at the next start"
                    );
                    break;
                }
                if drain.expired() {
                    tracing::warn!(
                        records = pending.len(),
                        "drain timeout: records not written to syslog will be read again at the next start"
                    );
                    break;
                }
            }
            let ready = !pending.is_empty() && retry_at.is_none_or(|t| Instant::now() >= t);
            if ready {
                let outcome = {
                    let attempt = link.attempt(&mut pending, &mut metrics, &mut buf);
                    tokio::pin!(attempt);
                    loop {
                        tokio::select! {
                            outcome = &mut attempt => break Some(outcome),
                            () = drain.changed() => if drain.expired() { break None },
                        }
                    }
                };
                match outcome {
                    // The drain deadline passed: the top of the loop says so and stops.
                    None => {}
                    Some(Outcome::Delivered) => {
                        health.update(|h| {
                            h.failing_since = None;
                            h.blocked = false;
                        });
                        link.failures = 0;
                        backoff = MIN_BACKOFF;
                        retry_at = None;
                    }
                    Some(Outcome::Failed {
                        reason,
                        error,
                        records,
                    }) => {
                        link.failures += 1;
                        health.update(|h| {
                            h.failing_since.get_or_insert_with(std::time::Instant::now);
                        });
                        for _ in 0..records {
                            metrics.failed(TOPIC, reason);
                        }
                        if link.failures == 1 || link.failures % 50 == 0 {
                            tracing::warn!(
                                address = %link.address_text,
                                attempts = link.failures,
                                error = %error,
                                "syslog delivery failed ({reason}); retrying"
                            );
                        }
                        retry_at = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                    Some(Outcome::TooLarge(error)) => {
                        metrics.failed(TOPIC, "too_large");
                        if let Some(item) = pending.front_mut() {
                            item.stuck = true;
                            tracing::error!(
                                id = %item.record.id,
                                bytes = item.message.len(),
                                address = %link.address_text,
                                error = %error,
                                "the syslog transport refuses this record as too large; holding progress until an operator acts (use a stream transport or raise the limit)"
                            );
                        }
                        metrics.blocked.set(1);
                        health.update(|h| h.blocked = true);
                        retry_at = Some(Instant::now() + TOO_LARGE_RETRY);
                    }
                }
                set_in_flight(&metrics, &pending);
                continue;
            }
            tokio::select! {
                batch = batches.recv(), if channel_open && pending.is_empty() => match batch {
                    Some(batch) => {
                        for record in batch {
                            let message = formatter.message(&record);
                            if message.len() > max_message_bytes {
                                oversize += 1;
                                // Logged once, then every 1000th: the metric counts each one.
                                if oversize == 1 || oversize % 1000 == 0 {
                                    tracing::warn!(
                                        id = %record.id,
                                        bytes = message.len(),
                                        max_message_bytes,
                                        total = oversize,
                                        "syslog message longer than max_message_bytes: sent whole, the receiver may truncate it"
                                    );
                                }
                                metrics.failed(TOPIC, "oversize");
                            }
                            pending.push_back(Item { record, message, stuck: false });
                        }
                        set_in_flight(&metrics, &pending);
                    }
                    None => {
                        channel_open = false;
                        drain.begin();
                    }
                },
                () = drain.changed() => {}
                _ = sleep_until(retry_at), if retry_at.is_some() => {}
            }
        }
        Ok(())
    }
}

fn set_in_flight(metrics: &OutputHandles, pending: &VecDeque<Item>) {
    metrics.in_flight_records.set(pending.len() as i64);
    metrics
        .in_flight_bytes
        .set(pending.iter().map(|i| i.message.len()).sum::<usize>() as i64);
}
