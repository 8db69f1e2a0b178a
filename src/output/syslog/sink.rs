//! The delivery loop: take batches, write each record's message, confirm it once written;
//! on failure keep it first in line and try again after a reconnect, with backoff.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::config::{Address, SyslogConfig};
use super::message::Formatter;
use super::transport::{frame, is_too_large, Conn};
use super::SyslogError;
use crate::envelope::Record;
use crate::metrics::OutputHandles;
use crate::output::{Drain, OutputError, OutputHealth, STALL};

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

/// What `/readyz` needs to know about the syslog output.
#[derive(Debug, Default)]
pub struct SyslogHealth {
    state: std::sync::Mutex<HealthState>,
}

#[derive(Debug, Default)]
struct HealthState {
    /// Since when deliveries have been failing, if they are.
    failing_since: Option<std::time::Instant>,
    /// A record the transport refuses as too large holds progress.
    blocked: bool,
}

impl SyslogHealth {
    fn update(&self, f: impl FnOnce(&mut HealthState)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Why the syslog output is not ready (failing for longer than `stall`, or blocked).
    pub fn reasons(&self, stall: Duration) -> Vec<String> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut reasons = Vec::new();
        if let Some(since) = s.failing_since {
            if since.elapsed() > stall {
                reasons.push(format!(
                    "syslog: deliveries failing for {} s (receiver unreachable?)",
                    since.elapsed().as_secs()
                ));
            }
        }
        if s.blocked {
            reasons.push(
                "syslog: a record too large for the transport holds progress (see the logs)"
                    .to_owned(),
            );
        }
        reasons
    }
}

impl OutputHealth for SyslogHealth {
    fn not_ready(&self) -> Vec<String> {
        self.reasons(STALL)
    }
}

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

#[cfg(test)]
mod tests {
    use tokio::sync::watch;

    use super::*;
    use crate::ack::Progress;
    use crate::envelope::testing::record;
    use crate::metrics::Metrics;
    use crate::output::syslog::config::from_yaml as config;

    // === delivery, against real sockets ===

    /// A running output: where batches go, the shutdown switch, the task.
    type Running = (
        mpsc::Sender<Vec<Record>>,
        watch::Sender<bool>,
        tokio::task::JoinHandle<Result<(), OutputError>>,
    );

    fn output(yaml: &str) -> Running {
        let metrics = Metrics::new().outputs.for_output("syslog");
        let output = Box::new(SyslogOutput::new(&config(yaml), metrics).unwrap());
        let (tx, rx) = mpsc::channel(1);
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(output.deliver(rx, Drain::new(stop_rx)));
        (tx, stop_tx, task)
    }

    async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let start = std::time::Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_unix_datagram_receiver_that_appears_late_gets_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sock");
        let (tx, stop, task) = output(&format!(
            "{{address: 'unix://{}', hostname: h, template: '{{/action}} {{source.offset}}'}}",
            path.display()
        ));
        let progress = Progress::new(0);
        let batch = (0..3)
            .map(|i| record("events.get", i, progress.register(i, 1)))
            .collect();
        progress.set_read(3, None);
        tx.send(batch).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            progress.committed(),
            0,
            "nothing confirmed while nobody listens"
        );

        let receiver = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        for _ in 0..3 {
            let n = tokio::task::block_in_place(|| receiver.recv(&mut buf)).unwrap();
            got.push(String::from_utf8(buf[..n].to_vec()).unwrap());
        }
        let pid = std::process::id();
        assert_eq!(
            got,
            (0..3)
                .map(|i| format!(
                    "<85>1 2021-08-09T16:02:45.123Z h auditrail {pid} events.get - events.get {i}"
                ))
                .collect::<Vec<_>>()
        );
        wait_until("the records to be confirmed", || progress.committed() == 3).await;
        drop(tx);
        let _ = stop.send(true);
        task.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tcp_receiver_that_closed_is_noticed_before_the_next_write() {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let accept = || {
            let start = std::time::Instant::now();
            loop {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        stream
                            .set_read_timeout(Some(Duration::from_secs(10)))
                            .unwrap();
                        return stream;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        assert!(start.elapsed() < Duration::from_secs(10), "no connection");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
        };
        let (tx, stop, task) = output(&format!(
            "{{address: 'tcp://127.0.0.1:{port}', hostname: h, template: '{{source.offset}}'}}"
        ));
        let progress = Progress::new(0);
        let read_frames = |stream: &mut std::net::TcpStream, n: usize| -> Vec<String> {
            let pid = std::process::id();
            let mut frames = Vec::new();
            let mut buf = Vec::new();
            while frames.len() < n {
                let mut chunk = [0u8; 4096];
                let got = stream.read(&mut chunk).unwrap();
                assert!(got > 0, "connection closed");
                buf.extend_from_slice(&chunk[..got]);
                while let Some(sp) = buf.iter().position(|&b| b == b' ') {
                    let len: usize = std::str::from_utf8(&buf[..sp]).unwrap().parse().unwrap();
                    if buf.len() < sp + 1 + len {
                        break;
                    }
                    let msg = String::from_utf8(buf[sp + 1..sp + 1 + len].to_vec()).unwrap();
                    let prefix =
                        format!("<85>1 2021-08-09T16:02:45.123Z h auditrail {pid} events.get - ");
                    frames.push(msg.strip_prefix(&prefix).unwrap().to_owned());
                    buf.drain(..sp + 1 + len);
                }
            }
            frames
        };

        tx.send(vec![record("events.get", 0, progress.register(0, 1))])
            .await
            .unwrap();
        let mut first = tokio::task::block_in_place(accept);
        assert_eq!(
            tokio::task::block_in_place(|| read_frames(&mut first, 1)),
            ["0"]
        );
        // The receiver goes away; the next record must not be written into the dead connection.
        drop(first);
        tokio::time::sleep(Duration::from_millis(200)).await;
        tx.send(vec![record("events.get", 1, progress.register(1, 1))])
            .await
            .unwrap();
        let mut second = tokio::task::block_in_place(accept);
        assert_eq!(
            tokio::task::block_in_place(|| read_frames(&mut second, 1)),
            ["1"]
        );
        progress.set_read(2, None);
        wait_until("the records to be confirmed", || progress.committed() == 2).await;
        drop(tx);
        let _ = stop.send(true);
        task.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn udp_sends_one_datagram_per_record() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let port = receiver.local_addr().unwrap().port();
        let (tx, stop, task) = output(&format!(
            "{{address: 'udp://127.0.0.1:{port}', hostname: h, facility: local7, level: debug, template: '{{type}}'}}"
        ));
        let progress = Progress::new(0);
        let batch = (0..2)
            .map(|i| record("auth.login", i, progress.register(i, 1)))
            .collect();
        progress.set_read(2, None);
        tx.send(batch).await.unwrap();
        let pid = std::process::id();
        let mut buf = [0u8; 2048];
        for _ in 0..2 {
            let n = tokio::task::block_in_place(|| receiver.recv(&mut buf)).unwrap();
            assert_eq!(
                std::str::from_utf8(&buf[..n]).unwrap(),
                format!(
                    "<191>1 2021-08-09T16:02:45.123Z h auditrail {pid} auth.login - auth.login"
                )
            );
        }
        wait_until("the records to be confirmed", || progress.committed() == 2).await;
        drop(tx);
        let _ = stop.send(true);
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_datagram_too_large_for_the_transport_holds_progress() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = receiver.local_addr().unwrap().port();
        let (tx, stop, task) = output(&format!(
            "{{address: 'udp://127.0.0.1:{port}', template: '{}'}}",
            "x".repeat(70_000)
        ));
        let progress = Progress::new(0);
        tx.send(vec![record("x", 0, progress.register(0, 1))])
            .await
            .unwrap();
        progress.set_read(1, None);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(progress.committed(), 0, "never confirmed, never dropped");
        let _ = stop.send(true);
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "shutdown does not wait for a record only an operator can unblock"
        );
        assert_eq!(progress.committed(), 0);
        drop(tx);
    }

    #[tokio::test]
    async fn shutdown_gives_up_after_the_drain_timeout_without_confirming() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, stop, task) = output(&format!(
            "{{address: 'unix://{}/absent.sock', drain_timeout: 300ms}}",
            dir.path().display()
        ));
        let progress = Progress::new(0);
        tx.send(vec![record("x", 0, progress.register(0, 1))])
            .await
            .unwrap();
        progress.set_read(1, None);
        let _ = stop.send(true);
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(250));
        assert_eq!(progress.committed(), 0, "the record will be read again");
        drop(tx);
    }
}

#[cfg(test)]
mod health_tests {
    use super::*;

    #[test]
    fn readiness_fails_only_after_failing_for_longer_than_the_stall() {
        let h = SyslogHealth::default();
        assert!(h.reasons(Duration::from_secs(10)).is_empty());
        h.update(|s| {
            s.failing_since = std::time::Instant::now().checked_sub(Duration::from_secs(20))
        });
        assert!(h.reasons(Duration::from_secs(10))[0].contains("failing for"));
        assert!(h.reasons(Duration::from_secs(60)).is_empty());
        h.update(|s| {
            s.failing_since = None;
            s.blocked = true;
        });
        assert!(h.reasons(Duration::from_secs(10))[0].contains("too large"));
    }
}
