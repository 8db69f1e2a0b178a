//! The `outputs.syslog` section: where messages go (Unix socket, UDP, TCP), in which
//! protocol, with which header fields and template.
//!
//! The header follows the transport first: on a Unix socket every message has the local
//! format (see [`Header::Local`]), because that is the only one the local receivers parse;
//! `protocol` chooses between RFC 5424 and RFC 3164 for UDP and TCP.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::template::Template;
use crate::filter::TypesConfig;
use crate::problem::Problem;

/// The smallest message every RFC 5424 receiver must accept.
const MIN_MESSAGE_BYTES: usize = 480;

/// `outputs.syslog.protocol`: the header over UDP and TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG`
    #[default]
    Rfc5424,
    /// `<PRI>Mmm dd hh:mm:ss HOSTNAME APP-NAME[PROCID]: MSG`
    Rfc3164,
}

/// What each message's header looks like: [`SyslogConfig::header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// `<PRI>Mmm dd hh:mm:ss TAG[PID]: MSG`, no HOSTNAME: what glibc's `syslog(3)` and
    /// util-linux `logger(1)` write on a local socket, and all that rsyslog's imuxsock and
    /// journald parse there (the module documentation says where each is written).
    Local,
    Rfc5424,
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
    /// The header over `udp://` and `tcp://` (default RFC 5424). A `unix://` socket always
    /// gets the local format: see [`SyslogConfig::header`].
    pub protocol: Option<Protocol>,
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
    /// Whether the checkpoint waits for this output (see `OutputConfig::required`).
    pub required: bool,
}

impl Default for SyslogConfig {
    fn default() -> Self {
        SyslogConfig {
            address: "unix:///dev/log".into(),
            socket: None,
            protocol: None,
            app_name: "auditrail".into(),
            facility: Facility::Authpriv,
            level: Severity::Notice,
            hostname: None,
            template: "{content}".into(),
            max_message_bytes: 8192,
            drain_timeout: Duration::from_secs(10),
            types: None,
            required: true,
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
    /// The header of every message: the local format on a Unix socket whatever `protocol`
    /// says (a HOSTNAME there is read as the tag by rsyslog and journald), else `protocol`.
    pub fn header(&self) -> Header {
        if self.address.starts_with("unix://") {
            return Header::Local;
        }
        match self.protocol.unwrap_or_default() {
            Protocol::Rfc5424 => Header::Rfc5424,
            Protocol::Rfc3164 => Header::Rfc3164,
        }
    }

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
        } else if self.header() != Header::Rfc5424 && self.app_name.contains(['[', ']', ':']) {
            // Receivers find the end of the tag at `[` or `:`.
            problems.push(Problem::new(
                format!("{path}.app_name"),
                "a tag (RFC 3164, and every message on a unix:// socket) cannot hold `[`, `]` or `:`",
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

/// A syslog section from YAML, for tests.
#[cfg(test)]
pub(super) fn from_yaml(yaml: &str) -> SyslogConfig {
    crate::yaml::from_str(yaml).unwrap()
}

#[cfg(test)]
mod tests {
    use super::from_yaml as config;
    use super::*;

    fn problems(yaml: &str) -> Vec<String> {
        let mut p = Vec::new();
        config(yaml).validate("outputs.syslog", &mut p);
        p.into_iter().map(|p| p.to_string()).collect()
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
        assert_eq!(c.protocol, None);
        assert_eq!(c.header(), Header::Local);
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
    fn a_unix_socket_gets_the_local_header_whatever_the_protocol() {
        let header = |yaml: &str| config(yaml).header();
        for protocol in ["", ", protocol: rfc5424", ", protocol: rfc3164"] {
            assert_eq!(
                header(&format!("{{address: 'unix:///dev/log'{protocol}}}")),
                Header::Local
            );
            assert_eq!(
                header(&format!(
                    "{{address: 'unix:///s', socket: stream{protocol}}}"
                )),
                Header::Local
            );
        }
        assert_eq!(header("address: udp://h:514"), Header::Rfc5424);
        assert_eq!(
            header("{address: 'tcp://h:514', protocol: rfc3164}"),
            Header::Rfc3164
        );
        assert_eq!(
            header("{address: 'udp://h:514', protocol: rfc5424}"),
            Header::Rfc5424
        );
    }

    #[test]
    fn problems_name_their_path() {
        assert_eq!(
            problems("template: '{userId} {type}'"),
            vec![format!(
                "outputs.syslog.template: column 1: {{userId}} is not an envelope field ({}) nor a format's field (userid, type, createdBy, streamIds); a member of the record is named by a JSON pointer: {{/userId}}",
                super::super::template::FIELD_LIST
            )]
        );
        assert_eq!(
            problems("template: '{userid} {type} createdBy:{createdBy} {streamIds} {content}'"),
            Vec::<String>::new(),
            "Pryv's own template is accepted"
        );
        assert_eq!(
            problems("template: '{fields.amount} {fields.userid} {content}'"),
            Vec::<String>::new(),
            "a custom rule's fields (named by the config, not known here) are named under `fields.`"
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
        let tag = "outputs.syslog.app_name: a tag (RFC 3164, and every message on a unix:// socket) cannot hold `[`, `]` or `:`";
        assert_eq!(
            problems("{address: 'udp://h:514', protocol: rfc3164, app_name: 'a:b'}"),
            vec![tag]
        );
        assert_eq!(problems("{app_name: 'a[b'}"), vec![tag]);
        assert!(problems("{address: 'udp://h:514', app_name: 'a:b'}").is_empty());
        assert!(crate::yaml::from_str::<SyslogConfig>("level: loud").is_err());
        assert!(crate::yaml::from_str::<SyslogConfig>("facility: local9").is_err());
        assert!(crate::yaml::from_str::<SyslogConfig>("adress: x").is_err());
        assert_eq!(config("level: error").level, Severity::Err);
        assert_eq!(config("level: warn").level, Severity::Warning);
    }
}
