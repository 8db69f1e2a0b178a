//! One record as one syslog message: a header, then the rendered template. Transport framing
//! is added by the transport.
//!
//! The header ([`Header`], chosen by the transport, then `protocol`) carries the priority
//! (facility and level), the time auditrail read the line (UTC; `Mmm dd hh:mm:ss` except in
//! RFC 5424), the app name as tag or APP-NAME and auditrail's process id, and over the network
//! the host name and (RFC 5424) the record type as MSGID:
//! - local (every Unix socket): `<PRI>Mmm dd hh:mm:ss APP[PID]: MSG`;
//! - RFC 5424: `<PRI>1 TIMESTAMP HOSTNAME APP PID TYPE - MSG`;
//! - RFC 3164: `<PRI>Mmm dd hh:mm:ss HOSTNAME APP[PID]: MSG`.
//!
//! The local format has no MSGID: the record type is not added to MSG behind the operator's
//! back, so MSG is exactly the template on every transport and a rule written against one
//! matches on all; `{type}` in the template puts it there.

use super::config::{Header, SyslogConfig};
use super::template::Template;
use super::SyslogError;
use crate::envelope::{format_time, Record};

/// Builds each record's message (without transport framing).
#[derive(Debug, Clone)]
pub(super) struct Formatter {
    header: Header,
    pri: u8,
    hostname: String,
    app_name: String,
    procid: u32,
    template: Template,
}

impl Formatter {
    pub(super) fn new(config: &SyslogConfig) -> Result<Formatter, SyslogError> {
        let template = Template::parse(&config.template).map_err(SyslogError::Template)?;
        Ok(Formatter {
            header: config.header(),
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
    pub(super) fn message(&self, record: &Record) -> Vec<u8> {
        use std::io::Write;
        let mut out = Vec::with_capacity(record.value.len() + 128);
        // Writing into a Vec cannot fail.
        let _ = match self.header {
            // glibc formats its time with `%h %e %T` (misc/syslog.c), logger(1) with
            // `%s %2d %2.2d:%2.2d:%2.2d`: the same text.
            Header::Local => write!(
                out,
                "<{}>{} {}[{}]: ",
                self.pri,
                record.read_time.format("%b %e %H:%M:%S"),
                self.app_name,
                self.procid,
            ),
            Header::Rfc5424 => write!(
                out,
                "<{}>1 {} {} {} {} {} - ",
                self.pri,
                format_time(&record.read_time),
                self.hostname,
                self.app_name,
                self.procid,
                header_field(&record.record_type, 32),
            ),
            Header::Rfc3164 => write!(
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

#[cfg(test)]
mod tests {

    use super::*;
    use crate::ack::Ack;
    use crate::envelope::testing::{record, RECORD};
    use crate::output::syslog::config::from_yaml as config;

    fn message(yaml: &str, record_type: &str) -> String {
        let f = Formatter::new(&config(yaml)).unwrap();
        String::from_utf8(f.message(&record(record_type, 0, Ack::none()))).unwrap()
    }

    /// Over the network, where RFC 5424 and RFC 3164 apply.
    const NET: &str = "address: udp://logs:514, ";

    #[test]
    fn local_header_then_the_template_on_every_unix_socket() {
        let pid = std::process::id();
        for yaml in [
            "{}",
            "{hostname: node-1, protocol: rfc5424}",
            "{hostname: node-1, protocol: rfc3164, address: 'unix:///run/log', socket: stream}",
        ] {
            assert_eq!(
                message(yaml, "events.get"),
                format!("<85>Aug  9 16:02:45 auditrail[{pid}]: {RECORD}"),
                "{yaml}"
            );
        }
        assert_eq!(
            message(
                "{app_name: pryv-audit, facility: local0, level: warning, template: '{type} {/source/ip}'}",
                "events.get"
            ),
            format!("<132>Aug  9 16:02:45 pryv-audit[{pid}]: events.get 85.5.192.175")
        );
    }

    #[test]
    fn rfc5424_header_then_the_template() {
        let pid = std::process::id();
        assert_eq!(
            message(&format!("{{{NET}hostname: node-1}}"), "events.get"),
            format!("<85>1 2021-08-09T16:02:45.123Z node-1 auditrail {pid} events.get - {RECORD}")
        );
        assert_eq!(
            message(
                &format!("{{{NET}hostname: h, app_name: pryv-audit, facility: local0, level: warning, template: '{{/source/ip}} {{type}}'}}"),
                "events.get"
            ),
            format!("<132>1 2021-08-09T16:02:45.123Z h pryv-audit {pid} events.get - 85.5.192.175 events.get")
        );
    }

    #[test]
    fn rfc5424_msgid_is_the_type_in_printable_ascii_up_to_32_characters() {
        let yaml = format!("{{{NET}hostname: h, template: x}}");
        let line = message(&yaml, "a b\u{e9}c");
        assert!(line.ends_with(" a_b_c - x"), "{line}");
        let line = message(&yaml, &"t".repeat(40));
        assert!(
            line.ends_with(&format!(" {} - x", "t".repeat(32))),
            "{line}"
        );
        let line = message(&yaml, "");
        assert!(line.ends_with(" - - x"), "{line}");
    }

    #[test]
    fn rfc3164_header_then_the_template() {
        let pid = std::process::id();
        assert_eq!(
            message(
                "{address: 'tcp://logs:514', protocol: rfc3164, hostname: co1-pryv-li, app_name: pryv-audit, level: info, facility: user}",
                "events.get"
            ),
            format!("<14>Aug  9 16:02:45 co1-pryv-li pryv-audit[{pid}]: {RECORD}")
        );
    }

    #[test]
    fn header_fields_are_sanitised() {
        assert_eq!(header_field("my host\tname", 255), "my_host_name");
        assert_eq!(header_field("", 255), "-");
        assert_eq!(header_field("abcdef", 3), "abc");
    }
}
