//! The syslog output's delivery loop against real sockets: receivers that appear late, close
//! the connection, or refuse a datagram; shutdown with records that cannot be written.

use std::io;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::sink::SyslogOutput;
use crate::ack::Progress;
use crate::envelope::testing::record;
use crate::envelope::Record;
use crate::metrics::Metrics;
use crate::output::syslog::config::from_yaml as config;
use crate::output::{Drain, OutputError};

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
            .map(|i| format!("<85>Aug  9 16:02:45 auditrail[{pid}]: events.get {i}"))
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
            format!("<191>1 2021-08-09T16:02:45.123Z h auditrail {pid} auth.login - auth.login")
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
