//! `outputs.syslog` against a real `rsyslogd` (issue 15, finding 2): each transport (Unix
//! datagram socket, Unix stream socket, UDP, TCP) with each `protocol`, and what rsyslog
//! parsed out of every message a real `auditrail run` sent: tag, program name, APP-NAME,
//! PROCID, MSGID, facility, severity, host name and message text.
//!
//! The daemon runs as this user with its own config in a temporary directory (no /dev/log, no
//! system config): `imuxsock` on a Unix datagram socket (the input behind /dev/log, with its
//! default "special parser"), `imptcp` on a Unix stream socket (`path=`), `imudp` and `imtcp`
//! on free ports. It writes each parsed message as one JSON line (`option.jsonf`); the test
//! reads that file. A missing rsyslogd fails the tests with a message saying so
//! (scripts/test.sh installs the Debian package `rsyslog`).
//!
//! Also here: what auditrail writes on a Unix socket has the shape `logger(1)` (util-linux)
//! writes there, byte for byte apart from the time stamp and the process id.
// Test code: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod support;

use std::io::Read;
use std::net::{TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::syslog::{config, envelopes, pryv_log, run_until_confirmed, s};
use support::{tempdir, DEADLINE};

// === the daemon ===

/// Where rsyslogd is installed by the Debian package.
const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

/// A running rsyslogd with one input of each kind, killed when dropped.
struct Rsyslogd {
    child: Child,
    dir: tempfile::TempDir,
    udp_port: u16,
    tcp_port: u16,
}

/// One message as rsyslog parsed it (the properties its template writes).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parsed {
    input: String,
    tag: String,
    programname: String,
    app_name: String,
    procid: String,
    msgid: String,
    facility: String,
    severity: String,
    hostname: String,
    /// rsyslog's own host name (`$myhostname`): what it records for a message without one.
    myhostname: String,
    msg: String,
}

impl Rsyslogd {
    fn start() -> Rsyslogd {
        assert!(
            Path::new(RSYSLOGD).exists(),
            "{RSYSLOGD} is missing: tests/rsyslog.rs runs against a real rsyslogd \
             (Debian package `rsyslog`; scripts/test.sh installs it)"
        );
        let dir = tempdir();
        let (udp_port, tcp_port) = (support::broker::free_port(), support::broker::free_port());
        let d = dir.path().display();
        let conf = format!(
            r#"global(workDirectory="{d}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{d}/dgram.sock")
module(load="imptcp")
input(type="imptcp" path="{d}/stream.sock")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{udp_port}")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{tcp_port}")
template(name="parsed" type="list" option.jsonf="on") {{
  property(outname="input" name="inputname" format="jsonf")
  property(outname="tag" name="syslogtag" format="jsonf")
  property(outname="programname" name="programname" format="jsonf")
  property(outname="app_name" name="app-name" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="facility" name="syslogfacility-text" format="jsonf")
  property(outname="severity" name="syslogseverity-text" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="myhostname" name="$myhostname" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
}}
action(type="omfile" file="{d}/parsed.jsonl" template="parsed")
"#
        );
        let conf_path = dir.path().join("rsyslog.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let log = std::fs::File::create(dir.path().join("rsyslogd.log")).unwrap();
        let child = Command::new(RSYSLOGD)
            .arg("-n")
            .arg("-f")
            .arg(&conf_path)
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {RSYSLOGD}: {e}"));
        let mut daemon = Rsyslogd {
            child,
            dir,
            udp_port,
            tcp_port,
        };
        daemon.wait_until_every_input_listens();
        daemon
    }

    fn dgram_path(&self) -> PathBuf {
        self.dir.path().join("dgram.sock")
    }

    fn stream_path(&self) -> PathBuf {
        self.dir.path().join("stream.sock")
    }

    /// Sends a probe to each input until rsyslog wrote all four: then every input listens.
    fn wait_until_every_input_listens(&mut self) {
        let start = Instant::now();
        let probe = |input: &str| format!("<14>Jan  1 00:00:00 probe[1]: {input}\n");
        loop {
            let seen: Vec<String> = self
                .parsed()
                .into_iter()
                .filter(|p| p.programname == "probe")
                .map(|p| p.input)
                .collect();
            if ["imuxsock", "imptcp", "imudp", "imtcp"]
                .iter()
                .all(|i| seen.iter().any(|s| s == i))
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("rsyslogd exited ({status}): {}", self.log());
            }
            assert!(
                start.elapsed() < DEADLINE,
                "rsyslogd's inputs did not all answer (seen {seen:?}): {}",
                self.log()
            );
            if let Ok(s) = UnixDatagram::unbound() {
                let _ = s.send_to(probe("imuxsock").as_bytes(), self.dgram_path());
            }
            if let Ok(mut s) = UnixStream::connect(self.stream_path()) {
                let _ = std::io::Write::write_all(&mut s, probe("imptcp").as_bytes());
            }
            if let Ok(s) = UdpSocket::bind("127.0.0.1:0") {
                let _ = s.send_to(probe("imudp").as_bytes(), ("127.0.0.1", self.udp_port));
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.tcp_port)) {
                let _ = std::io::Write::write_all(&mut s, probe("imtcp").as_bytes());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rsyslogd.log")).unwrap_or_default()
    }

    /// Every message rsyslog wrote so far, in order.
    fn parsed(&self) -> Vec<Parsed> {
        let text =
            std::fs::read_to_string(self.dir.path().join("parsed.jsonl")).unwrap_or_default();
        text.lines()
            .filter(|l| l.ends_with('}'))
            .map(|l| {
                let v: Value = serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("rsyslog wrote a line that is not JSON ({e}): {l}"));
                let f = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
                Parsed {
                    input: f("input"),
                    tag: f("tag"),
                    programname: f("programname"),
                    app_name: f("app_name"),
                    procid: f("procid"),
                    msgid: f("msgid"),
                    facility: f("facility"),
                    severity: f("severity"),
                    hostname: f("hostname"),
                    myhostname: f("myhostname"),
                    msg: f("msg"),
                }
            })
            .collect()
    }

    /// The messages from auditrail (not the probes), once there are `n` of them.
    fn wait_for_messages(&self, n: usize) -> Vec<Parsed> {
        let start = Instant::now();
        loop {
            let got: Vec<Parsed> = self
                .parsed()
                .into_iter()
                .filter(|p| p.programname != "probe")
                .collect();
            if got.len() >= n {
                return got;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "rsyslog parsed {} of {n} messages: {got:#?}\n{}",
                got.len(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Rsyslogd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// === one run per transport and protocol ===

/// The four transports, as `outputs.syslog` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    UnixDatagram,
    UnixStream,
    Udp,
    Tcp,
}

impl Transport {
    /// The `address` (and `socket`) keys for `rsyslogd`'s input of this kind.
    fn keys(self, r: &Rsyslogd) -> String {
        match self {
            Transport::UnixDatagram => {
                format!(
                    "address: {}",
                    support::yaml_str(format!("unix://{}", r.dgram_path().display()))
                )
            }
            Transport::UnixStream => format!(
                "address: {}, socket: stream",
                support::yaml_str(format!("unix://{}", r.stream_path().display()))
            ),
            Transport::Udp => format!("address: udp://127.0.0.1:{}", r.udp_port),
            Transport::Tcp => format!("address: tcp://127.0.0.1:{}", r.tcp_port),
        }
    }

    fn input(self) -> &'static str {
        match self {
            Transport::UnixDatagram => "imuxsock",
            Transport::UnixStream => "imptcp",
            Transport::Udp => "imudp",
            Transport::Tcp => "imtcp",
        }
    }

    fn is_unix(self) -> bool {
        matches!(self, Transport::UnixDatagram | Transport::UnixStream)
    }
}

/// What a fail2ban rule would match: the type and the client address, then the record.
/// `{envelope.type}`, the record type: for a Pryv record a bare `{type}` is Pryv's own type
/// field (`audit-log/pryv-api`), as Pryv's templates mean it.
const TEMPLATE: &str = "{envelope.type} from {/source/ip} {content}";

/// For each protocol, with a facility and level of its own: runs auditrail over `transport`
/// to a fresh rsyslogd and checks every field rsyslog parsed out of every message.
fn rsyslog_parses_every_message(transport: Transport) {
    let rsyslog = Rsyslogd::start();
    let mut before = 0;
    for (protocol, facility, level) in [
        ("rfc5424", "authpriv", "notice"),
        ("rfc3164", "local0", "warning"),
    ] {
        let dir = tempdir();
        let (log, size) = pryv_log(dir.path(), "");
        let cfg = config(
            dir.path(),
            &format!(
                "  stdout: {{}}\n  syslog: {{{keys}, protocol: {protocol}, facility: {facility}, level: {level}, hostname: node-1, app_name: pryv-audit, template: {template}}}",
                keys = transport.keys(&rsyslog),
                template = support::yaml_str(TEMPLATE),
            ),
        );
        let (stdout, pid) = run_until_confirmed(dir.path(), &cfg, &log, size, 10);
        let all = rsyslog.wait_for_messages(before + 10);
        let got = &all[before..];
        before = all.len();

        assert_eq!(got.len(), 10, "{got:#?}");
        let pid = pid.to_string();
        for ((v, record), p) in envelopes(&stdout).iter().zip(got) {
            let ty = s(v, "/type");
            let text = format!("{ty} from {} {record}", s(v, "/record/source/ip"));
            let case = format!("{transport:?} {protocol}: {p:#?}");
            assert_eq!(p.input, transport.input(), "{case}");
            assert_eq!(
                (p.facility.as_str(), p.severity.as_str()),
                (facility, level),
                "{case}"
            );
            assert_eq!(p.programname, "pryv-audit", "{case}");
            assert_eq!(p.app_name, "pryv-audit", "{case}");
            assert_eq!(p.procid, pid, "{case}");
            if transport.is_unix() {
                // The local format whatever `protocol` says: no host name in the message,
                // so rsyslog records its own, and the tag is `TAG[PID]:`.
                assert_eq!(p.tag, format!("pryv-audit[{pid}]:"), "{case}");
                assert_eq!(p.hostname, p.myhostname, "{case}");
                assert_eq!(p.msgid, "-", "{case}");
            } else {
                assert_eq!(p.hostname, "node-1", "{case}");
                if protocol == "rfc5424" {
                    // rsyslog builds the tag of an RFC 5424 message from APP-NAME[PROCID].
                    assert_eq!(p.tag, format!("pryv-audit[{pid}]"), "{case}");
                    assert_eq!(p.msgid, ty, "{case}");
                } else {
                    assert_eq!(p.tag, format!("pryv-audit[{pid}]:"), "{case}");
                    assert_eq!(p.msgid, "-", "{case}");
                }
            }
            // rsyslog keeps the space after an RFC 3164 tag (the local format is RFC 3164
            // without a host name) as the first character of MSG; RFC 5424 has none.
            let msg = if transport.is_unix() || protocol == "rfc3164" {
                p.msg
                    .strip_prefix(' ')
                    .unwrap_or_else(|| panic!("no space before the message: {case}"))
            } else {
                p.msg.as_str()
            };
            assert_eq!(msg, text, "{case}");
        }
    }
}

// === tests ===

/// Finding 2: on the default transport (a Unix datagram socket, like /dev/log) the message
/// carried a HOSTNAME, so rsyslog's local socket input took the host name as the tag with
/// `rfc3164` and the `1` of `<PRI>1` as the tag with `rfc5424`: a fail2ban rule on
/// `pryv-audit` never matched.
#[test]
fn finding_2_rsyslog_finds_the_tag_on_a_unix_datagram_socket() {
    rsyslog_parses_every_message(Transport::UnixDatagram);
}

/// A Unix stream socket (rsyslog's imptcp with `path=`) gets the local format too, framed by
/// `\n` (imptcp never splits on the NUL glibc's syslog(3) ends a stream message with).
#[test]
fn rsyslog_parses_the_local_format_on_a_unix_stream_socket() {
    rsyslog_parses_every_message(Transport::UnixStream);
}

#[test]
fn rsyslog_parses_both_protocols_over_udp() {
    rsyslog_parses_every_message(Transport::Udp);
}

#[test]
fn rsyslog_parses_both_protocols_over_tcp() {
    rsyslog_parses_every_message(Transport::Tcp);
}

// === the shape logger(1) writes ===

/// util-linux `logger`, whose local-socket header (misc-utils/logger.c,
/// `syslog_local_header`) is glibc's `syslog(3)` header.
const LOGGER: &str = "/usr/bin/logger";

/// `message` with its time stamp and process id replaced by placeholders, once their shape
/// is checked: `<PRI>Mmm dd hh:mm:ss TAG[PID]: MSG` (and the terminator, if any).
fn shape(message: &[u8]) -> String {
    let text = String::from_utf8(message.to_vec()).expect("UTF-8 message");
    let after_pri = text.find('>').map_or(0, |i| i + 1);
    let (pri, rest) = text.split_at(after_pri);
    assert!(
        pri.starts_with('<') && pri.len() > 2,
        "no <PRI> in {text:?}"
    );
    let (stamp, rest) = rest.split_at(rest.len().min(16));
    let ok = stamp.char_indices().all(|(i, c)| match i {
        0 => c.is_ascii_uppercase(),
        1 | 2 => c.is_ascii_lowercase(),
        3 | 6 | 15 => c == ' ',
        4 => c == ' ' || c.is_ascii_digit(),
        9 | 12 => c == ':',
        _ => c.is_ascii_digit(),
    });
    assert!(ok && stamp.len() == 16, "no `Mmm dd hh:mm:ss ` in {text:?}");
    let open = rest
        .find('[')
        .unwrap_or_else(|| panic!("no [PID] in {text:?}"));
    let close = rest
        .find("]: ")
        .unwrap_or_else(|| panic!("no [PID]: in {text:?}"));
    assert!(
        close > open + 1 && rest[open + 1..close].bytes().all(|b| b.is_ascii_digit()),
        "no [PID] in {text:?}"
    );
    format!(
        "{pri}Mmm dd hh:mm:ss {}[PID]{}",
        &rest[..open],
        &rest[close + 1..]
    )
}

/// Every connection's bytes, read to its end, from a listener on `path`.
fn stream_receiver(path: &Path) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let listener = UnixListener::bind(path).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = conn.read_to_end(&mut bytes);
                let _ = tx.send(bytes);
            });
        }
    });
    rx
}

/// What auditrail writes on a Unix socket (datagram, then stream) is what logger(1) writes
/// there with the same tag, priority and text: byte for byte, terminator included, apart
/// from the time stamp and the process id.
#[test]
fn a_unix_socket_message_has_the_shape_logger_writes() {
    assert!(
        Path::new(LOGGER).exists(),
        "{LOGGER} is missing: this test compares with util-linux logger (Debian package bsdutils)"
    );
    for stream in [false, true] {
        let dir = tempdir();
        let path = dir.path().join("log.sock");
        let datagrams = (!stream).then(|| {
            let socket = UnixDatagram::bind(&path).unwrap();
            socket.set_read_timeout(Some(DEADLINE)).unwrap();
            socket
        });
        let connections = stream.then(|| stream_receiver(&path));
        let recv = || -> Vec<u8> {
            match (&datagrams, &connections) {
                (Some(socket), _) => {
                    let mut buf = vec![0u8; 64 * 1024];
                    let n = socket.recv(&mut buf).expect("a datagram");
                    buf.truncate(n);
                    buf
                }
                (_, Some(rx)) => rx.recv_timeout(DEADLINE).expect("a connection's bytes"),
                _ => unreachable!(),
            }
        };

        let (log, size) = pryv_log(dir.path(), "");
        let address = support::yaml_str(format!("unix://{}", path.display()));
        let socket = if stream { "stream" } else { "datagram" };
        let cfg = config(
            dir.path(),
            &format!(
                "  syslog: {{address: {address}, socket: {socket}, protocol: rfc3164, hostname: node-1, app_name: pryv-audit, template: {}}}",
                support::yaml_str(TEMPLATE)
            ),
        );
        let run = support::Daemon::start(&cfg);
        support::wait_for_checkpoint(dir.path(), &log, size);
        let stopped = run.stop_cleanly();
        // `protocol: rfc3164` is set: the log says why the socket gets another format.
        assert!(
            stopped
                .stderr
                .iter()
                .any(|l| l.contains("gets the local syslog format") && l.contains("Rfc3164")),
            "{:#?}",
            stopped.stderr
        );
        // The first of the ten records: one connection carries them all, with their
        // terminators; or the first of ten datagrams.
        let ours = if stream {
            let all = recv();
            let end = all
                .iter()
                .position(|&b| b == b'\n')
                .unwrap_or(all.len() - 1);
            all[..=end].to_vec()
        } else {
            let all: Vec<Vec<u8>> = (0..10).map(|_| recv()).collect();
            all[0].clone()
        };
        let text = String::from_utf8_lossy(&ours);
        let msg = text
            .split_once("]: ")
            .map(|(_, m)| m.trim_end_matches('\n').to_owned())
            .unwrap_or_else(|| panic!("no `]: ` in {text:?}"));

        let out = Command::new(LOGGER)
            .arg("-u")
            .arg(&path)
            .arg(if stream { "-T" } else { "-d" })
            .args([
                "-t",
                "pryv-audit",
                "-i",
                "-p",
                "authpriv.notice",
                "--size",
                "65536",
                "--",
            ])
            .arg(&msg)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "logger: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let theirs = recv();

        assert_eq!(shape(&ours), shape(&theirs), "stream: {stream}");
        assert_eq!(ours.ends_with(b"\n"), stream, "{text:?}");
    }
}
