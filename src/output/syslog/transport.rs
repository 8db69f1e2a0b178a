//! The connection to the syslog receiver: a Unix datagram or stream socket, UDP, or TCP,
//! and how messages are framed on each.

use std::io;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket, UnixDatagram, UnixStream};

use super::config::Address;

/// An open connection to the receiver.
pub(super) enum Conn {
    Datagram(Datagram),
    Stream(Stream),
}

/// A connected datagram socket: one message per datagram.
pub(super) enum Datagram {
    Unix(UnixDatagram),
    Udp(UdpSocket),
}

/// A connected stream socket.
pub(super) enum Stream {
    /// Messages terminated by `\n` (see [`frame`]).
    Unix(UnixStream),
    /// Octet counting.
    Tcp(TcpStream),
}

impl Conn {
    pub(super) async fn open(address: &Address) -> io::Result<Conn> {
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
    pub(super) fn peer_closed(&self) -> bool {
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
    pub(super) async fn send(&self, message: &[u8]) -> io::Result<usize> {
        match self {
            Datagram::Unix(s) => s.send(message).await,
            Datagram::Udp(s) => s.send(message).await,
        }
    }
}

impl Stream {
    pub(super) fn is_tcp(&self) -> bool {
        matches!(self, Stream::Tcp(_))
    }

    pub(super) async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.write_all(buf).await,
            Stream::Tcp(s) => s.write_all(buf).await,
        }
    }
}

/// Appends `message` framed for a stream: octet counting over TCP, `\n`-terminated over a
/// Unix stream socket.
///
/// On a Unix stream socket glibc's `syslog(3)` ends each message with a NUL byte
/// (misc/syslog.c, `__vsyslog_internal`: "also send ASCII NUL as a record terminator"), but
/// util-linux `logger(1)` ends it with `\n` (misc-utils/logger.c, `write_output`), and `\n`
/// is the only terminator rsyslog's `imptcp` splits a stream on unless `AddtlFrameDelimiter`
/// is set (plugins/imptcp/imptcp.c, `processDataRcvd`): NUL-terminated messages never leave
/// its buffer. So `\n`, as logger(1) does.
pub(super) fn frame(tcp: bool, message: &[u8], out: &mut Vec<u8>) {
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
pub(super) fn is_too_large(e: &io::Error) -> bool {
    #[cfg(target_os = "linux")]
    const EMSGSIZE: i32 = 90;
    #[cfg(not(target_os = "linux"))]
    const EMSGSIZE: i32 = 40;
    e.raw_os_error() == Some(EMSGSIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
