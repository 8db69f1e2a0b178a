//! A real Kafka-protocol broker for the tests: `tansu`, started per test on a free loopback
//! port with in-memory storage, and a consumer that reads topics back from their beginning
//! (counting by consuming: tansu's end offsets can fall short).
//!
//! `tansu` must be on PATH (`scripts/test.sh` installs it with
//! `cargo install tansu --features dynostore,libsql --locked`); without it the tests that need
//! it fail with a message saying so, they do not pass silently.
//!
//! For the fault tests a broker can also keep its topics in a SQLite file
//! ([`Broker::start_persistent`], tansu's `libsql` feature), so that it can be killed and
//! started again on the same port with its topics intact ([`Broker::kill`],
//! [`Broker::restart`]), and it can validate records against JSON schemas
//! ([`Broker::start_with_schemas`]): a record that fails its topic's schema is rejected with
//! `INVALID_RECORD`, the one permanent rejection tansu produces.

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
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
    /// How it was started, to start it again the same way on the same port.
    launch: Launch,
}

/// tansu's storage, schema registry and working directory.
#[derive(Debug, Clone)]
struct Launch {
    storage: String,
    schema_registry: Option<String>,
    /// Its working directory (relative storage URLs are resolved there) and where its log
    /// goes (`tansu.log`); `None`: no log, the test's directory.
    dir: Option<PathBuf>,
}

impl Launch {
    fn memory() -> Launch {
        Launch {
            storage: "memory://tansu/".into(),
            schema_registry: None,
            dir: None,
        }
    }
}

impl Broker {
    pub fn start() -> Broker {
        Broker::launch(free_port(), Launch::memory())
    }

    /// A broker that keeps its topics in a SQLite file in `dir` (tansu's `libsql` feature):
    /// they survive [`Broker::kill`] and [`Broker::restart`]. Its log is `dir/tansu.log`.
    pub fn start_persistent(dir: &Path) -> Broker {
        Broker::launch(
            free_port(),
            Launch {
                storage: "sqlite://tansu.db".into(),
                schema_registry: None,
                dir: Some(dir.to_owned()),
            },
        )
    }

    /// An in-memory broker that validates each topic's records against the JSON schema
    /// `dir/schemas/<topic>.json`, if there is one (`{"properties": {"value": <schema>}}`),
    /// and rejects a batch with a record that fails it (`INVALID_RECORD`).
    pub fn start_with_schemas(dir: &Path) -> Broker {
        std::fs::create_dir_all(dir.join("schemas")).expect("create the schema directory");
        Broker::launch(
            free_port(),
            Launch {
                storage: "memory://tansu/".into(),
                schema_registry: Some("file://schemas".into()),
                dir: Some(dir.to_owned()),
            },
        )
    }

    fn launch(port: u16, launch: Launch) -> Broker {
        let child = spawn_tansu(port, &launch);
        let mut broker = Broker {
            child,
            port,
            launch,
        };
        broker.wait_until_listening();
        broker
    }

    /// SIGKILL: the broker dies at once, its connections are reset, and only what its storage
    /// had written survives.
    pub fn kill(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the broker again, on the same port, with the same storage (after
    /// [`Broker::kill`]; a broker still running is killed first).
    pub fn restart(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill();
        }
        self.child = spawn_tansu(self.port, &self.launch);
        self.wait_until_listening();
    }

    /// tansu's log, when it has one ([`Broker::start_persistent`],
    /// [`Broker::start_with_schemas`]).
    pub fn log(&self) -> String {
        self.launch
            .dir
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.join("tansu.log")).ok())
            .unwrap_or_default()
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = self.log();
                let hint = if log.contains("FeatureNotEnabled") {
                    "\nthis tansu lacks a feature the test needs; install it with `cargo install tansu --features dynostore,libsql --locked`"
                } else {
                    ""
                };
                panic!("tansu exited before listening: {status}{hint}\n{log}");
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

    /// Everything in `topic`, read from the beginning of every partition until no message
    /// came for `idle` (or `wait` passed): for topics too large to read within a fixed wait.
    pub fn consume_all(&self, topic: &str, idle: Duration, wait: Duration) -> Vec<Consumed> {
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", self.address());
        read(client, topic, usize::MAX, Some(idle), wait)
    }
}

/// [`Broker::consume`] with a consumer built from `client` (its brokers, TLS and SASL
/// settings): everything in `topic` so far, polling until `want` messages arrived or `wait`
/// passed.
pub fn consume_with(
    client: ClientConfig,
    topic: &str,
    want: usize,
    wait: Duration,
) -> Vec<Consumed> {
    read(client, topic, want, None, wait)
}

/// [`consume_with`], and with `idle`: until every partition reported its end and no message
/// came for `idle` (its end alone is not enough: tansu's end offsets can fall short).
fn read(
    mut client: ClientConfig,
    topic: &str,
    want: usize,
    idle: Option<Duration>,
    wait: Duration,
) -> Vec<Consumed> {
    let consumer: BaseConsumer = client
        .set("group.id", format!("test-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", idle.is_some().to_string())
        .create()
        .unwrap();
    let deadline = Instant::now() + wait;
    let partitions = loop {
        // A broker that was just started again may not answer at once.
        let n = match consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            Ok(metadata) => metadata
                .topics()
                .first()
                .map_or(0, |t| t.partitions().len()),
            Err(e) if Instant::now() > deadline => {
                panic!("no metadata for {topic} from the broker: {e}")
            }
            Err(_) => 0,
        };
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
    let mut at_end = vec![false; partitions];
    let mut last_message = Instant::now();
    while out.len() < want && Instant::now() < deadline {
        if idle.is_some_and(|idle| at_end.iter().all(|e| *e) && last_message.elapsed() > idle) {
            break;
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) if idle.is_some() => {
                if let Some(e) = at_end.get_mut(p as usize) {
                    *e = true;
                }
            }
            Some(Ok(m)) => {
                last_message = Instant::now();
                if let Some(e) = at_end.get_mut(m.partition() as usize) {
                    *e = false;
                }
                let mut headers = BTreeMap::new();
                if let Some(h) = m.headers() {
                    for header in h.iter() {
                        headers.insert(
                            header.key.to_string(),
                            String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                        );
                    }
                }
                let payload = m.payload().unwrap_or_default();
                // A chunk of a record (the README's chunk protocol) is a piece of its JSON:
                // kept as text, for the test to join.
                let value = if headers.contains_key("chunk_count") {
                    serde_json::Value::String(String::from_utf8_lossy(payload).into_owned())
                } else {
                    serde_json::from_slice(payload).unwrap()
                };
                out.push(Consumed {
                    topic: m.topic().to_owned(),
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    headers,
                    value,
                    raw: payload.to_vec(),
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
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub value: serde_json::Value,
    /// The message's bytes as produced (a link's hash covers them).
    pub raw: Vec<u8>,
}

impl Consumed {
    pub fn id(&self) -> String {
        self.value["id"].as_str().unwrap().to_owned()
    }
}

/// Starts `tansu broker` on `port` as `launch` says.
fn spawn_tansu(port: u16, launch: &Launch) -> Child {
    let url = format!("tcp://127.0.0.1:{port}");
    let mut command = Command::new("tansu");
    command
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", &launch.storage]);
    if let Some(registry) = &launch.schema_registry {
        command.args(["--schema-registry", registry]);
    }
    command.stdout(Stdio::null()).stderr(Stdio::null());
    if let Some(dir) = &launch.dir {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("tansu.log"))
            .expect("open tansu.log");
        command
            .current_dir(dir)
            .stderr(Stdio::from(log.try_clone().expect("clone the log handle")))
            .stdout(Stdio::from(log));
    }
    command.spawn().unwrap_or_else(|e| {
        panic!("cannot start the tansu broker ({e}); install it with `cargo install tansu --features dynostore,libsql --locked`")
    })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
