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

pub mod template;

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket, UnixDatagram, UnixStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::config::Problem;
use crate::envelope::{format_time, Record};
use crate::filter::TypesConfig;
use crate::metrics::OutputHandles;
pub use template::{Template, TemplateError};

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
/// The smallest message every RFC 5424 receiver must accept.
const MIN_MESSAGE_BYTES: usize = 480;

/// `outputs.syslog.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG`
    #[default]
    Rfc5424,
    /// `<PRI>Mmm dd hh:mm:ss HOSTNAME APP-NAME[PROCID]: MSG`
    Rfc3164,
}

/// `outputs.syslog.socket`: the kind of a Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SocketKind {
    Datagram,
    Stream,
}

/// `outputs.syslog.facility` (RFC 5424 numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Facility {
    Kern,
    User,
    Mail,
    Daemon,
    Auth,
    Syslog,
    Lpr,
    News,
    Uucp,
    Cron,
    #[default]
    Authpriv,
    Ftp,
    Ntp,
    Local0,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

impl Facility {
    pub fn code(self) -> u8 {
        match self {
            Facility::Kern => 0,
            Facility::User => 1,
            Facility::Mail => 2,
            Facility::Daemon => 3,
            Facility::Auth => 4,
            Facility::Syslog => 5,
            Facility::Lpr => 6,
            Facility::News => 7,
            Facility::Uucp => 8,
            Facility::Cron => 9,
            Facility::Authpriv => 10,
            Facility::Ftp => 11,
            Facility::Ntp => 12,
            Facility::Local0 => 16,
            Facility::Local1 => 17,
            Facility::Local2 => 18,
            Facility::Local3 => 19,
            Facility::Local4 => 20,
            Facility::Local5 => 21,
            Facility::Local6 => 22,
            Facility::Local7 => 23,
        }
    }
}

/// `outputs.syslog.level`: the severity of every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[serde(alias = "emergency", alias = "panic")]
    Emerg,
    Alert,
    #[serde(alias = "critical")]
    Crit,
    #[serde(alias = "error")]
    Err,
    #[serde(alias = "warn")]
    Warning,
    #[default]
    Notice,
    #[serde(alias = "informational")]
    Info,
    Debug,
}

impl Severity {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// The `outputs.syslog` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyslogConfig {
    /// `unix:///path`, `udp://host:port` or `tcp://host:port`.
    pub address: String,
    /// For `unix://`: `datagram` (default, like `/dev/log` under rsyslog and journald) or
    /// `stream`.
    pub socket: Option<SocketKind>,
    pub protocol: Protocol,
    /// RFC 5424 APP-NAME, RFC 3164 TAG.
    pub app_name: String,
    pub facility: Facility,
    pub level: Severity,
    /// The HOSTNAME field; by default `$HOSTNAME` (the pod name in Kubernetes), else the
    /// kernel's host name, else `-`.
    pub hostname: Option<String>,
    /// The message text; see [`template`].
    pub template: String,
    /// Messages longer than this are sent whole but logged and counted (the receiver may
    /// truncate them).
    pub max_message_bytes: usize,
    /// How long shutdown waits for records still to be written.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// This output's own type filter; without one it takes the global `types`.
    pub types: Option<TypesConfig>,
}

impl Default for SyslogConfig {
    fn default() -> Self {
        SyslogConfig {
            address: "unix:///dev/log".into(),
            socket: None,
            protocol: Protocol::Rfc5424,
            app_name: "auditrail".into(),
            facility: Facility::Authpriv,
            level: Severity::Notice,
            hostname: None,
            template: "{content}".into(),
            max_message_bytes: 8192,
            drain_timeout: Duration::from_secs(10),
            types: None,
        }
    }
}

/// Where messages go, and how they are framed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// One message per datagram.
    UnixDatagram(PathBuf),
    /// Messages terminated by `\n` (RFC 6587 non-transparent framing).
    UnixStream(PathBuf),
    /// One message per datagram.
    Udp(String),
    /// RFC 6587 octet counting: `LEN SP MSG`.
    Tcp(String),
}

impl SyslogConfig {
    /// The transport `address` and `socket` name, or why they name none (keyed by the field
    /// at fault).
    pub fn address(&self) -> Result<Address, (&'static str, String)> {
        let a = &self.address;
        if let Some(path) = a.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err((
                    "address",
                    format!("{a:?}: a Unix socket needs an absolute path (unix:///dev/log)"),
                ));
            }
            return Ok(match self.socket.unwrap_or(SocketKind::Datagram) {
                SocketKind::Datagram => Address::UnixDatagram(PathBuf::from(path)),
                SocketKind::Stream => Address::UnixStream(PathBuf::from(path)),
            });
        }
        let (scheme, rest, kind, kind_name) = if let Some(rest) = a.strip_prefix("udp://") {
            ("udp", rest, SocketKind::Datagram, "datagram")
        } else if let Some(rest) = a.strip_prefix("tcp://") {
            ("tcp", rest, SocketKind::Stream, "stream")
        } else {
            return Err((
                "address",
                format!("{a:?} is not unix:///path, udp://host:port or tcp://host:port"),
            ));
        };
        let port_ok = rest.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !port_ok {
            return Err(("address", format!("{a:?}: {scheme}:// needs host:port")));
        }
        if self.socket.is_some_and(|s| s != kind) {
            return Err((
                "socket",
                format!(
                    "{scheme}:// is always {kind_name}; `socket` chooses the kind of a unix:// socket"
                ),
            ));
        }
        Ok(match kind {
            SocketKind::Datagram => Address::Udp(rest.to_owned()),
            SocketKind::Stream => Address::Tcp(rest.to_owned()),
        })
    }

    pub fn validate(&self, path: &str, problems: &mut Vec<Problem>) {
        if let Err((field, message)) = self.address() {
            problems.push(Problem::new(format!("{path}.{field}"), message));
        }
        if let Some(p) = header_field_problem(&self.app_name, 48) {
            problems.push(Problem::new(format!("{path}.app_name"), p));
        } else if self.protocol == Protocol::Rfc3164 && self.app_name.contains(['[', ']', ':']) {
            problems.push(Problem::new(
                format!("{path}.app_name"),
                "an RFC 3164 tag cannot hold `[`, `]` or `:`",
            ));
        }
        if let Some(p) = self
            .hostname
            .as_deref()
            .and_then(|h| header_field_problem(h, 255))
        {
            problems.push(Problem::new(format!("{path}.hostname"), p));
        }
        if let Err(e) = Template::parse(&self.template) {
            problems.push(Problem::new(format!("{path}.template"), e.to_string()));
        }
        if self.max_message_bytes < MIN_MESSAGE_BYTES {
            problems.push(Problem::new(
                format!("{path}.max_message_bytes"),
                format!(
                    "must be at least {MIN_MESSAGE_BYTES} (what every RFC 5424 receiver accepts)"
                ),
            ));
        }
        if let Some(types) = &self.types {
            types.validate(&format!("{path}.types"), problems);
        }
    }
}

/// Why `value` cannot be a syslog header field: 1 to `max` printable US-ASCII characters,
/// no space.
fn header_field_problem(value: &str, max: usize) -> Option<String> {
    if value.is_empty() || value.len() > max {
        return Some(format!("must have 1 to {max} characters"));
    }
    if !value.bytes().all(|b| (33..=126).contains(&b)) {
        return Some(format!(
            "{value:?}: only printable ASCII characters without spaces"
        ));
    }
    None
}

/// Printable US-ASCII without spaces (others become `_`), at most `max` characters; `-` when
/// empty.
fn header_field(value: &str, max: usize) -> String {
    let field: String = value
        .chars()
        .take(max)
        .map(|c| if ('!'..='~').contains(&c) { c } else { '_' })
        .collect();
    if field.is_empty() {
        "-".to_owned()
    } else {
        field
    }
}

/// The default HOSTNAME: `$HOSTNAME`, else the kernel's host name, else `-`.
fn default_hostname() -> String {
    let name = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    header_field(&name, 255)
}

/// Why the syslog output could not start.
#[derive(Debug, thiserror::Error)]
pub enum SyslogError {
    #[error("syslog config: {0}")]
    Config(String),
}

/// Builds each record's message (without transport framing).
#[derive(Debug, Clone)]
pub struct Formatter {
    protocol: Protocol,
    pri: u8,
    hostname: String,
    app_name: String,
    procid: u32,
    template: Template,
}

impl Formatter {
    pub fn new(config: &SyslogConfig) -> Result<Formatter, SyslogError> {
        let template = Template::parse(&config.template)
            .map_err(|e| SyslogError::Config(format!("template: {e}")))?;
        Ok(Formatter {
            protocol: config.protocol,
            pri: config.facility.code() * 8 + config.level.code(),
            hostname: config
                .hostname
                .as_deref()
                .map(|h| header_field(h, 255))
                .unwrap_or_else(default_hostname),
            app_name: header_field(&config.app_name, 48),
            procid: std::process::id(),
            template,
        })
    }

    /// The syslog message of `record`: header, then the rendered template.
    pub fn message(&self, record: &Record) -> Vec<u8> {
        use std::io::Write;
        let mut out = Vec::with_capacity(record.value.len() + 128);
        // Writing into a Vec cannot fail.
        let _ = match self.protocol {
            Protocol::Rfc5424 => write!(
                out,
                "<{}>1 {} {} {} {} {} - ",
                self.pri,
                format_time(&record.read_time),
                self.hostname,
                self.app_name,
                self.procid,
                header_field(&record.record_type, 32),
            ),
            Protocol::Rfc3164 => write!(
                out,
                "<{}>{} {} {}[{}]: ",
                self.pri,
                record.read_time.format("%b %e %H:%M:%S"),
                self.hostname,
                self.app_name,
                self.procid,
            ),
        };
        self.template.render(&record.value, &mut out);
        out
    }
}

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

/// A started syslog output, not yet consuming records.
pub struct SyslogOutput {
    /// Shared with the health check.
    pub health: std::sync::Arc<SyslogHealth>,
    formatter: Formatter,
    address: Address,
    /// As configured, for logs.
    address_text: String,
    max_message_bytes: usize,
    drain_timeout: Duration,
}

/// An open connection to the receiver.
enum Conn {
    Datagram(Datagram),
    Stream(Stream),
}

/// A connected datagram socket: one message per datagram.
enum Datagram {
    Unix(UnixDatagram),
    Udp(UdpSocket),
}

/// A connected stream socket.
enum Stream {
    /// Messages terminated by `\n`.
    Unix(UnixStream),
    /// Octet counting.
    Tcp(TcpStream),
}

impl Conn {
    async fn open(address: &Address) -> io::Result<Conn> {
        Ok(match address {
            Address::UnixDatagram(path) => {
                let socket = UnixDatagram::unbound()?;
                socket.connect(path)?;
                Conn::Datagram(Datagram::Unix(socket))
            }
            Address::UnixStream(path) => {
                Conn::Stream(Stream::Unix(UnixStream::connect(path).await?))
            }
            Address::Udp(addr) => {
                let target = tokio::net::lookup_host(addr.as_str())
                    .await?
                    .next()
                    .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
                let local = if target.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                };
                let socket = UdpSocket::bind(local).await?;
                socket.connect(target).await?;
                Conn::Datagram(Datagram::Udp(socket))
            }
            Address::Tcp(addr) => {
                let stream = TcpStream::connect(addr.as_str()).await?;
                let _ = stream.set_nodelay(true);
                Conn::Stream(Stream::Tcp(stream))
            }
        })
    }

    /// Whether the receiver has closed this connection (streams only). A syslog receiver
    /// never sends anything, so a readable end of stream (or an error) means it is gone;
    /// whatever it might send is discarded.
    fn peer_closed(&self) -> bool {
        let mut buf = [0u8; 1024];
        let read = match self {
            Conn::Stream(Stream::Tcp(s)) => s.try_read(&mut buf),
            Conn::Stream(Stream::Unix(s)) => s.try_read(&mut buf),
            Conn::Datagram(_) => return false,
        };
        match read {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        }
    }
}

impl Datagram {
    async fn send(&self, message: &[u8]) -> io::Result<usize> {
        match self {
            Datagram::Unix(s) => s.send(message).await,
            Datagram::Udp(s) => s.send(message).await,
        }
    }
}

impl Stream {
    fn is_tcp(&self) -> bool {
        matches!(self, Stream::Tcp(_))
    }

    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.write_all(buf).await,
            Stream::Tcp(s) => s.write_all(buf).await,
        }
    }
}

/// Appends `message` framed for a stream: octet counting over TCP, `\n`-terminated over a
/// Unix stream socket.
fn frame(tcp: bool, message: &[u8], out: &mut Vec<u8>) {
    if tcp {
        out.extend_from_slice(message.len().to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(message);
    } else {
        out.extend_from_slice(message);
        out.push(b'\n');
    }
}

/// Whether the transport refused a datagram because of its size (it never will take it).
fn is_too_large(e: &io::Error) -> bool {
    #[cfg(target_os = "linux")]
    const EMSGSIZE: i32 = 90;
    #[cfg(not(target_os = "linux"))]
    const EMSGSIZE: i32 = 40;
    e.raw_os_error() == Some(EMSGSIZE)
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
    pub fn new(config: &SyslogConfig) -> Result<SyslogOutput, SyslogError> {
        let address = config
            .address()
            .map_err(|(field, message)| SyslogError::Config(format!("{field}: {message}")))?;
        Ok(SyslogOutput {
            health: std::sync::Arc::default(),
            formatter: Formatter::new(config)?,
            address,
            address_text: config.address.clone(),
            max_message_bytes: config.max_message_bytes,
            drain_timeout: config.drain_timeout,
        })
    }

    /// Delivers batches until the channel closes and every record taken is written (or
    /// `drain_timeout` passes after shutdown began: the unconfirmed rest is read again at the
    /// next start).
    ///
    /// `shutdown` turning true starts the drain before the channel closes; batches still
    /// arriving are taken until then.
    pub async fn run(
        self,
        mut batches: mpsc::Receiver<Vec<Record>>,
        mut metrics: OutputHandles,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), SyslogError> {
        let SyslogOutput {
            health,
            formatter,
            address,
            address_text,
            max_message_bytes,
            drain_timeout,
        } = self;
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
        let mut closing: Option<Instant> = (*shutdown.borrow()).then(Instant::now);
        let mut retry_at: Option<Instant> = None;
        let mut backoff = MIN_BACKOFF;
        let mut oversize: u64 = 0;

        loop {
            let deadline = closing.map(|c| c + drain_timeout);
            if let Some(deadline) = deadline {
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
                if Instant::now() >= deadline {
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
                        let deadline = closing.map(|c| c + drain_timeout);
                        tokio::select! {
                            outcome = &mut attempt => break Some(outcome),
                            changed = shutdown.changed(), if closing.is_none() => {
                                if changed.is_err() || *shutdown.borrow() {
                                    closing = Some(Instant::now());
                                }
                            }
                            _ = sleep_until(deadline), if deadline.is_some() => break None,
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
                        closing.get_or_insert_with(Instant::now);
                    }
                },
                changed = shutdown.changed(), if closing.is_none() => {
                    if changed.is_err() || *shutdown.borrow() {
                        closing = Some(Instant::now());
                    }
                }
                _ = sleep_until(retry_at), if retry_at.is_some() => {}
                _ = sleep_until(deadline), if deadline.is_some() => {}
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
    use std::sync::Arc;

    use super::*;
    use crate::ack::{Ack, Progress};
    use crate::envelope::{EnvelopeParts, KeyStrategy, LineOrigin, RetentionTag};
    use crate::metrics::Metrics;

    const RECORD: &str = r#"{"action": "events.get", "source": {"ip": "85.5.192.175"}}"#;

    fn record(record_type: &str, offset: u64, ack: Ack) -> Record {
        let origin = LineOrigin {
            file: "/logs/0.log",
            identity: 1,
            stream: Some("stdout"),
            offset,
            time: None,
        };
        let format: Arc<str> = Arc::from("pryv");
        Record::build(
            EnvelopeParts {
                origin: &origin,
                line: RECORD.as_bytes(),
                format: &format,
                record_type,
                time: None,
                retention: RetentionTag {
                    class: Arc::from("standard"),
                    days: Some(60),
                    topic: Arc::from("audit"),
                    expires_at: None,
                },
                kubernetes: None,
                pod_uid: None,
                prefix: "",
                record: RECORD,
                suffix: "",
                read_time: chrono::DateTime::parse_from_rfc3339("2021-08-09T16:02:45.123Z")
                    .unwrap()
                    .into(),
            },
            KeyStrategy::Id,
            ack,
        )
    }

    fn config(yaml: &str) -> SyslogConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn problems(yaml: &str) -> Vec<String> {
        let mut p = Vec::new();
        config(yaml).validate("outputs.syslog", &mut p);
        p.into_iter().map(|p| p.to_string()).collect()
    }

    fn message(yaml: &str, record_type: &str) -> String {
        let f = Formatter::new(&config(yaml)).unwrap();
        String::from_utf8(f.message(&record(record_type, 0, Ack::none()))).unwrap()
    }

    #[test]
    fn rfc5424_header_then_the_template() {
        let pid = std::process::id();
        assert_eq!(
            message("hostname: node-1", "events.get"),
            format!("<85>1 2021-08-09T16:02:45.123Z node-1 auditrail {pid} events.get - {RECORD}")
        );
        assert_eq!(
            message(
                "{hostname: h, app_name: pryv-audit, facility: local0, level: warning, template: '{/source/ip} {type}'}",
                "events.get"
            ),
            format!("<132>1 2021-08-09T16:02:45.123Z h pryv-audit {pid} events.get - 85.5.192.175 events.get")
        );
    }

    #[test]
    fn rfc5424_msgid_is_the_type_in_printable_ascii_up_to_32_characters() {
        let line = message("{hostname: h, template: x}", "a b\u{e9}c");
        assert!(line.ends_with(" a_b_c - x"), "{line}");
        let line = message("{hostname: h, template: x}", &"t".repeat(40));
        assert!(
            line.ends_with(&format!(" {} - x", "t".repeat(32))),
            "{line}"
        );
        let line = message("{hostname: h, template: x}", "");
        assert!(line.ends_with(" - - x"), "{line}");
    }

    #[test]
    fn rfc3164_header_then_the_template() {
        let pid = std::process::id();
        assert_eq!(
            message(
                "{protocol: rfc3164, hostname: co1-pryv-li, app_name: pryv-audit, level: info, facility: user}",
                "events.get"
            ),
            format!("<14>Aug  9 16:02:45 co1-pryv-li pryv-audit[{pid}]: {RECORD}")
        );
    }

    #[test]
    fn framing_for_streams() {
        let mut out = Vec::new();
        frame(true, b"<85>1 - - - - - - hello", &mut out);
        frame(false, b"hi", &mut out);
        assert_eq!(
            out,
            b"23 <85>1 - - - - - - hello"
                .iter()
                .chain(b"hi\n")
                .copied()
                .collect::<Vec<u8>>()
        );
    }

    #[test]
    fn header_fields_are_sanitised() {
        assert_eq!(header_field("my host\tname", 255), "my_host_name");
        assert_eq!(header_field("", 255), "-");
        assert_eq!(header_field("abcdef", 3), "abc");
    }

    #[test]
    fn the_defaults_are_valid_and_documented() {
        let c = SyslogConfig::default();
        assert_eq!(config("{}"), c);
        assert!(problems("{}").is_empty());
        assert_eq!(
            c.address().unwrap(),
            Address::UnixDatagram("/dev/log".into())
        );
        assert_eq!((c.facility.code(), c.level.code()), (10, 5));
        assert_eq!(c.protocol, Protocol::Rfc5424);
        assert_eq!(c.template, "{content}");
    }

    #[test]
    fn addresses() {
        let a = |yaml: &str| config(yaml).address();
        assert_eq!(
            a("{address: 'unix:///run/syslog.sock', socket: stream}").unwrap(),
            Address::UnixStream("/run/syslog.sock".into())
        );
        assert_eq!(
            a("address: udp://10.0.0.1:514").unwrap(),
            Address::Udp("10.0.0.1:514".into())
        );
        assert_eq!(
            a("address: 'tcp://[::1]:6514'").unwrap(),
            Address::Tcp("[::1]:6514".into())
        );
        assert_eq!(
            a("{address: 'tcp://logs:514', socket: stream}").unwrap(),
            Address::Tcp("logs:514".into())
        );
        for bad in [
            "address: unix://dev/log",
            "address: /dev/log",
            "address: tcp://logs",
            "address: 'udp://:514'",
            "address: tcp://logs:0",
            "address: http://logs:80",
        ] {
            assert_eq!(a(bad).unwrap_err().0, "address", "{bad}");
        }
        assert_eq!(
            a("{address: 'tcp://logs:514', socket: datagram}")
                .unwrap_err()
                .0,
            "socket"
        );
    }

    #[test]
    fn problems_name_their_path() {
        assert_eq!(
            problems("template: '{userid} {type}'"),
            vec![format!(
                "outputs.syslog.template: column 1: {{userid}} is not an envelope field ({}); a member of the record is named by a JSON pointer: {{/userid}}",
                template::FIELD_LIST
            )]
        );
        assert_eq!(
            problems("{address: 'tcp://x:1', socket: datagram, app_name: 'a b', hostname: '', max_message_bytes: 100, types: {include: [], exclude: []}}"),
            vec![
                "outputs.syslog.socket: tcp:// is always stream; `socket` chooses the kind of a unix:// socket",
                "outputs.syslog.app_name: \"a b\": only printable ASCII characters without spaces",
                "outputs.syslog.hostname: must have 1 to 255 characters",
                "outputs.syslog.max_message_bytes: must be at least 480 (what every RFC 5424 receiver accepts)",
                "outputs.syslog.types: at least one of `include` and `exclude` must be non-empty (use include: [all] to ship everything)",
            ]
        );
        assert_eq!(
            problems("{protocol: rfc3164, app_name: 'a:b'}"),
            vec!["outputs.syslog.app_name: an RFC 3164 tag cannot hold `[`, `]` or `:`"]
        );
        assert!(serde_yaml::from_str::<SyslogConfig>("level: loud").is_err());
        assert!(serde_yaml::from_str::<SyslogConfig>("facility: local9").is_err());
        assert!(serde_yaml::from_str::<SyslogConfig>("adress: x").is_err());
        assert_eq!(config("level: error").level, Severity::Err);
        assert_eq!(config("level: warn").level, Severity::Warning);
    }

    // === delivery, against real sockets ===

    /// A running output: where batches go, the shutdown switch, the task.
    type Running = (
        mpsc::Sender<Vec<Record>>,
        watch::Sender<bool>,
        tokio::task::JoinHandle<Result<(), SyslogError>>,
    );

    fn output(yaml: &str) -> Running {
        let output = SyslogOutput::new(&config(yaml)).unwrap();
        let (tx, rx) = mpsc::channel(1);
        let (stop_tx, stop_rx) = watch::channel(false);
        let metrics = Metrics::new().outputs.for_output("syslog");
        let task = tokio::spawn(output.run(rx, metrics, stop_rx));
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
