//! Why the broker's TLS certificate was refused.
//!
//! librdkafka reports "certificate verify failed" and suggests `ssl.ca.location` whatever the
//! cause. A handshake of auditrail's own, with the same CA, tells the two usual causes apart:
//! a certificate signed by another CA, and one that does not name the host connected to.

use std::collections::BTreeMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use openssl::ssl::{HandshakeError, SslConnector, SslMethod, SslStream, SslVerifyMode};
use openssl::x509::{X509NameRef, X509Ref, X509VerifyResult, X509};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Where the CA certificates come from, as librdkafka would take them.
#[derive(Debug, Clone)]
enum Trust {
    /// The system's certificates (no `ssl.ca.*`, or `ssl.ca.location: probe`).
    System,
    File(PathBuf),
    Dir(PathBuf),
    Pem(String),
}

/// Explains refused broker certificates of one set of clients.
#[derive(Debug)]
pub(super) struct TlsDiagnosis {
    trust: Trust,
    verify_host: bool,
    /// Addresses probed or being probed (once each: a refused broker is retried every few
    /// seconds), with what was found.
    found: Mutex<BTreeMap<String, Option<String>>>,
}

impl TlsDiagnosis {
    /// For clients built from `properties` (with the secret ones); `None` unless they verify
    /// the broker's certificate over TLS.
    pub(super) fn new(properties: &BTreeMap<String, String>) -> Option<TlsDiagnosis> {
        let get = |name: &str| properties.get(name).map(|v| v.trim().to_ascii_lowercase());
        let protocol = get("security.protocol").unwrap_or_default();
        if !matches!(protocol.as_str(), "ssl" | "sasl_ssl")
            || get("enable.ssl.certificate.verification").as_deref() == Some("false")
        {
            return None;
        }
        let trust = if let Some(pem) = properties.get("ssl.ca.pem") {
            Trust::Pem(pem.clone())
        } else {
            match properties.get("ssl.ca.location").map(|l| l.trim()) {
                None | Some("probe") => Trust::System,
                Some(location) if Path::new(location).is_dir() => Trust::Dir(location.into()),
                Some(location) => Trust::File(location.into()),
            }
        };
        Some(TlsDiagnosis {
            trust,
            verify_host: get("ssl.endpoint.identification.algorithm").as_deref() != Some("none"),
            found: Mutex::default(),
        })
    }

    /// What was found for the broker librdkafka's `reason` names (`ssl://host:port/...`), if
    /// it was probed already.
    pub(super) fn found(&self, reason: &str) -> Option<String> {
        let address = address(reason)?;
        let found = self.found.lock().unwrap_or_else(|e| e.into_inner());
        found.get(address).cloned().flatten()
    }

    /// The broker `reason` names when it was not probed yet; it counts as probed from now.
    pub(super) fn start_probe(&self, reason: &str) -> Option<String> {
        let address = address(reason)?.to_owned();
        let mut found = self.found.lock().unwrap_or_else(|e| e.into_inner());
        if found.contains_key(&address) {
            return None;
        }
        found.insert(address.clone(), None);
        Some(address)
    }

    /// Handshakes with `address` (blocking, a few seconds at most) and keeps what was found.
    pub(super) fn probe(&self, address: &str) -> Option<String> {
        let found = self.explain(address);
        self.found
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(address.to_owned(), found.clone());
        found
    }

    fn explain(&self, address: &str) -> Option<String> {
        let (host, _) = address.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let connector = self.connector()?;
        // The chain alone first, then the name.
        let mut chain_only = connector.configure().ok()?;
        chain_only.set_verify_hostname(false);
        if let Some(result) = refused(chain_only.connect(host, connect(address)?)) {
            let issuer = peek(host, address)
                .map(|c| name(c.issuer_name()))
                .unwrap_or_default();
            return Some(format!(
                "the broker's certificate is not signed by a CA auditrail trusts ({}; it was issued by {issuer:?}): check ssl.ca.location or ssl.ca.pem",
                result.error_string()
            ));
        }
        if !self.verify_host {
            return None;
        }
        let result = refused(connector.connect(host, connect(address)?))?;
        let names = peek(host, address).map(names).unwrap_or_default();
        Some(format!(
            "the broker's certificate does not name {host:?} ({}; it names {names}): connect by a name it carries (brokers, and the broker's advertised listeners), or have it reissued",
            result.error_string()
        ))
    }

    fn connector(&self) -> Option<SslConnector> {
        let mut builder = SslConnector::builder(SslMethod::tls_client()).ok()?;
        match &self.trust {
            Trust::System => builder.set_default_verify_paths().ok()?,
            Trust::File(path) => builder.set_ca_file(path).ok()?,
            Trust::Dir(dir) => {
                for entry in std::fs::read_dir(dir).ok()?.flatten() {
                    let Ok(pem) = std::fs::read(entry.path()) else {
                        continue;
                    };
                    for cert in X509::stack_from_pem(&pem).unwrap_or_default() {
                        let _ = builder.cert_store_mut().add_cert(cert);
                    }
                }
            }
            Trust::Pem(pem) => {
                for cert in X509::stack_from_pem(pem.as_bytes()).ok()? {
                    builder.cert_store_mut().add_cert(cert).ok()?;
                }
            }
        }
        Some(builder.build())
    }
}

/// `host:port` of librdkafka's broker name at the start of `reason` (`ssl://host:port/1: …`).
fn address(reason: &str) -> Option<&str> {
    let (_, rest) = reason.split_once("://")?;
    rest.split(['/', ' ']).next().filter(|a| a.contains(':'))
}

fn connect(address: &str) -> Option<TcpStream> {
    let addr = address.to_socket_addrs().ok()?.next()?;
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT).ok()?;
    stream.set_read_timeout(Some(TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(TIMEOUT)).ok()?;
    Some(stream)
}

/// The verification error of a refused handshake.
fn refused(
    handshake: Result<SslStream<TcpStream>, HandshakeError<TcpStream>>,
) -> Option<X509VerifyResult> {
    match handshake {
        Err(HandshakeError::Failure(mid)) => {
            let result = mid.ssl().verify_result();
            (result != X509VerifyResult::OK).then_some(result)
        }
        _ => None,
    }
}

/// The broker's certificate, read by a handshake that verifies nothing (a refused handshake
/// keeps no certificate).
fn peek(host: &str, address: &str) -> Option<X509> {
    let mut builder = SslConnector::builder(SslMethod::tls_client()).ok()?;
    builder.set_verify(SslVerifyMode::NONE);
    let stream = builder.build().connect(host, connect(address)?).ok()?;
    stream.ssl().peer_certificate()
}

fn name(name: &X509NameRef) -> String {
    name.entries()
        .filter_map(|e| e.data().to_string().ok())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The DNS names and addresses a certificate is for.
fn names(cert: X509) -> String {
    let names: Vec<String> = subject_alt_names(&cert);
    if names.is_empty() {
        format!(
            "no subject alternative name, subject {:?}",
            name(cert.subject_name())
        )
    } else {
        names.join(", ")
    }
}

fn subject_alt_names(cert: &X509Ref) -> Vec<String> {
    cert.subject_alt_names()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| {
                    n.dnsname().map(str::to_owned).or_else(|| {
                        n.ipaddress().map(|ip| match ip.len() {
                            4 => std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).to_string(),
                            _ => format!("{ip:?}"),
                        })
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_is_read_from_librdkafkas_reason() {
        assert_eq!(
            address("ssl://localhost:9093/bootstrap: SSL handshake failed: x"),
            Some("localhost:9093")
        );
        assert_eq!(
            address("sasl_ssl://kafka-0.kafka:9093/0: SSL handshake failed"),
            Some("kafka-0.kafka:9093")
        );
        assert_eq!(address("no broker here"), None);
    }

    #[test]
    fn only_verified_tls_is_diagnosed() {
        let props = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(TlsDiagnosis::new(&props(&[])).is_none());
        assert!(TlsDiagnosis::new(&props(&[("security.protocol", "SASL_PLAINTEXT")])).is_none());
        assert!(TlsDiagnosis::new(&props(&[
            ("security.protocol", "ssl"),
            ("enable.ssl.certificate.verification", "false")
        ]))
        .is_none());
        let d = TlsDiagnosis::new(&props(&[
            ("security.protocol", "SASL_SSL"),
            ("ssl.endpoint.identification.algorithm", "none"),
        ]))
        .unwrap();
        assert!(!d.verify_host);
        assert!(matches!(d.trust, Trust::System));
    }
}
