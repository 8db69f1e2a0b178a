//! One record as one syslog message: the RFC 5424 or RFC 3164 header (priority, the time
//! auditrail read the line, host name, app name, process id, and for RFC 5424 the record type
//! as MSGID), then the rendered template. Transport framing is added by the transport.

use super::config::{Protocol, SyslogConfig};
use super::template::Template;
use super::SyslogError;
use crate::envelope::{format_time, Record};

/// Builds each record's message (without transport framing).
#[derive(Debug, Clone)]
pub(super) struct Formatter {
    protocol: Protocol,
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
    pub(super) fn message(&self, record: &Record) -> Vec<u8> {
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
    fn header_fields_are_sanitised() {
        assert_eq!(header_field("my host\tname", 255), "my_host_name");
        assert_eq!(header_field("", 255), "-");
        assert_eq!(header_field("abcdef", 3), "abc");
    }
}
