//! A real Kafka-protocol broker for the tests: `tansu`, started per test on a free loopback
//! port with in-memory storage, and a consumer that reads topics back from their beginning
//! (counting by consuming: tansu's end offsets can fall short).
//!
//! `tansu` must be on PATH (`scripts/test.sh` installs it with
//! `cargo install tansu --features dynostore --locked`); without it the tests that need it
//! fail with a message saying so, they do not pass silently.

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

pub struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    pub fn start() -> Broker {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new("tansu")
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start the tansu broker ({e}); install it with `cargo install tansu --features dynostore --locked`")
            });
        let mut broker = Broker { child, port };
        broker.wait_until_listening();
        broker
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("tansu exited before listening: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on port {} within 15 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {signal} failed");
    }

    pub fn create_topic(&self, name: &str, partitions: i32, retention_ms: &str) {
        self.create_topic_with(name, partitions, retention_ms, &[]);
    }

    /// [`Broker::create_topic`] with more topic settings (`max.message.bytes`).
    pub fn create_topic_with(
        &self,
        name: &str,
        partitions: i32,
        retention_ms: &str,
        settings: &[(&str, &str)],
    ) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.address())
            .create()
            .unwrap();
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1))
            .set("retention.ms", retention_ms)
            .set("retention.bytes", "-1")
            .set("cleanup.policy", "delete");
        for (key, value) in settings {
            topic = topic.set(key, value);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let results = rt
            .block_on(admin.create_topics([&topic], &AdminOptions::new()))
            .unwrap();
        for r in results {
            r.unwrap();
        }
    }

    /// Everything in `topic` so far, read from the beginning of every partition, polling until
    /// `want` messages arrived or `wait` passed.
    pub fn consume(&self, topic: &str, want: usize, wait: Duration) -> Vec<Consumed> {
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", self.address());
        consume_with(client, topic, want, wait)
    }
}

/// [`Broker::consume`] with a consumer built from `client` (its brokers, TLS and SASL
/// settings): everything in `topic` so far, polling until `want` messages arrived or `wait`
/// passed.
pub fn consume_with(
    mut client: ClientConfig,
    topic: &str,
    want: usize,
    wait: Duration,
) -> Vec<Consumed> {
    let consumer: BaseConsumer = client
        .set("group.id", format!("test-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let deadline = Instant::now() + wait;
    let partitions = loop {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .unwrap();
        let n = metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len());
        if n > 0 || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    while out.len() < want && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let mut headers = BTreeMap::new();
                if let Some(h) = m.headers() {
                    for header in h.iter() {
                        headers.insert(
                            header.key.to_string(),
                            String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                        );
                    }
                }
                out.push(Consumed {
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    headers,
                    value: serde_json::from_slice(m.payload().unwrap_or_default()).unwrap(),
                });
            }
            Some(Err(e)) => eprintln!("consumer: {e}"),
            None => {}
        }
    }
    out
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Consumed {
    pub key: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub value: serde_json::Value,
}

impl Consumed {
    pub fn id(&self) -> String {
        self.value["id"].as_str().unwrap().to_owned()
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
