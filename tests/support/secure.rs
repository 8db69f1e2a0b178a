//! TLS and SASL for the Kafka tests: a throwaway CA and server certificates made with
//! `openssl`, Debian's `stunnel` terminating TLS in front of `tansu` (tansu 0.6 cannot: its
//! `--cert` and `--key` options exclude each other and its listener never uses them), a tansu
//! that enforces SASL/SCRAM (`--authentication`, with users kept in a SQLite file: its
//! in-memory storage keeps no SCRAM credentials), and a Secret volume laid out as the kubelet
//! does, updated by a `..data` symlink swap.
//!
//! `scripts/test.sh` installs `openssl`, `stunnel4` and tansu with its `libsql` feature.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;

use super::broker::free_port;

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A certificate authority made for one test.
pub struct Ca {
    dir: PathBuf,
    name: String,
    pub cert: PathBuf,
    key: PathBuf,
}

impl Ca {
    /// A new CA, its files in `dir` named after `name`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let cert = dir.join(format!("{name}-ca.pem"));
        let key = dir.join(format!("{name}-ca.key"));
        run(Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .arg("-subj")
            .arg(format!("/CN=auditrail test CA {name}"))
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert));
        Ca {
            dir: dir.to_owned(),
            name: name.to_owned(),
            cert,
            key,
        }
    }

    /// A server certificate signed by this CA for the DNS name `host`: (certificate, key).
    pub fn server_cert(&self, host: &str) -> (PathBuf, PathBuf) {
        let base = self.dir.join(format!("{}-{host}", self.name));
        let (cert, key, csr, ext) = (
            base.with_extension("pem"),
            base.with_extension("key"),
            base.with_extension("csr"),
            base.with_extension("ext"),
        );
        std::fs::write(
            &ext,
            format!(
                "subjectAltName=DNS:{host}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
            ),
        )
        .unwrap();
        run(Command::new("openssl")
            .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes"])
            .arg("-subj")
            .arg(format!("/CN={host}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr));
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(&self.cert)
            .arg("-CAkey")
            .arg(&self.key)
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&cert));
        (cert, key)
    }

    /// The CA certificate's PEM text.
    pub fn pem(&self) -> String {
        std::fs::read_to_string(&self.cert).unwrap()
    }
}

/// A `tansu` broker with the options these tests need, its log in `dir/tansu.log`.
struct Tansu {
    child: Option<Child>,
    port: u16,
    advertised: String,
    storage: String,
    dir: PathBuf,
}

impl Tansu {
    /// Not started yet: see [`Tansu::spawn`].
    fn new(dir: &Path, port: u16, advertised: String, storage: &str) -> Tansu {
        std::fs::create_dir_all(dir).unwrap();
        Tansu {
            child: None,
            port,
            advertised,
            storage: storage.to_owned(),
            dir: dir.to_owned(),
        }
    }

    fn spawn(&mut self, authentication: bool) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("tansu.log"))
            .unwrap();
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let mut command = Command::new("tansu");
        command
            .current_dir(&self.dir)
            .args(["broker", "--listener-url", &listener])
            .args(["--advertised-listener-url", &self.advertised])
            .args(["--storage-engine", &self.storage])
            .stdout(Stdio::null())
            .stderr(log);
        if authentication {
            command.arg("--authentication");
        }
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot start the tansu broker ({e}); install it with `cargo install tansu --features dynostore,libsql --locked`")
        });
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "tansu exited before listening ({status}); needs the libsql feature: `cargo install tansu --features dynostore,libsql --locked`\n{}",
                    std::fs::read_to_string(self.dir.join("tansu.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "tansu did not listen within 15 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
    }
}

/// tansu behind `stunnel`: clients speak TLS to `localhost:<tls_port>`, which tansu advertises
/// in its metadata, and stunnel forwards the plain bytes to tansu.
pub struct TlsBroker {
    _tansu: Tansu,
    stunnel: Child,
    tls_port: u16,
}

impl TlsBroker {
    /// Presents a certificate for `host` signed by `ca`.
    pub fn start(dir: &Path, ca: &Ca, host: &str) -> TlsBroker {
        let tls_port = free_port();
        let mut tansu = Tansu::new(
            dir,
            free_port(),
            format!("tcp://localhost:{tls_port}"),
            "memory://tansu/",
        );
        tansu.spawn(false);
        let (cert, key) = ca.server_cert(host);
        let conf = dir.join("stunnel.conf");
        std::fs::write(
            &conf,
            format!(
                "foreground = yes\npid =\ndebug = warning\n[kafka]\naccept = 127.0.0.1:{tls_port}\nconnect = 127.0.0.1:{}\ncert = {}\nkey = {}\n",
                tansu.port,
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("stunnel.log")).unwrap();
        let mut stunnel = Command::new("stunnel")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start stunnel ({e}); install Debian's stunnel4"));
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
            if let Ok(Some(status)) = stunnel.try_wait() {
                panic!(
                    "stunnel exited ({status}):\n{}",
                    std::fs::read_to_string(dir.join("stunnel.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "stunnel did not listen within 15 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        TlsBroker {
            _tansu: tansu,
            stunnel,
            tls_port,
        }
    }

    /// The address clients bootstrap from (the name the certificate must carry).
    pub fn address(&self) -> String {
        format!("localhost:{}", self.tls_port)
    }

    /// A consumer's settings: TLS, verified with `ca`.
    pub fn client(&self, ca: &Ca) -> ClientConfig {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", self.address())
            .set("broker.address.family", "v4")
            .set("security.protocol", "ssl")
            .set("ssl.ca.location", ca.cert.display().to_string());
        client
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = self.stunnel.kill();
        let _ = self.stunnel.wait();
    }
}

/// tansu enforcing SASL (`--authentication`): a client must authenticate before any request
/// but the handshake. Its users are SCRAM-SHA-512 credentials in its SQLite storage.
pub struct SaslBroker {
    tansu: Tansu,
}

impl SaslBroker {
    /// A broker in `dir` knowing `users` (name, password).
    pub fn start(dir: &Path, users: &[(&str, &str)]) -> SaslBroker {
        let port = free_port();
        let tansu = Tansu::new(
            dir,
            port,
            format!("tcp://127.0.0.1:{port}"),
            "sqlite://tansu.db",
        );
        let mut broker = SaslBroker { tansu };
        broker.set_users(users);
        broker
    }

    /// Sets the passwords of `users` on the broker (a new user, or a password rotated).
    /// tansu creates users only for a client that needs no authentication, and keeps them in
    /// its storage: it is restarted without `--authentication` for that, then with it again.
    /// Connections open before are closed.
    pub fn set_users(&mut self, users: &[(&str, &str)]) {
        self.tansu.stop();
        self.tansu.spawn(false);
        for (user, password) in users {
            run(Command::new("tansu")
                .args(["user", "create", "--mechanism", "scram512", "--broker"])
                .arg(format!("tcp://127.0.0.1:{}", self.tansu.port))
                .args([user, password]));
        }
        self.tansu.stop();
        self.tansu.spawn(true);
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.tansu.port)
    }

    /// A consumer's settings: SASL/SCRAM-SHA-512 as `user`.
    pub fn client(&self, user: &str, password: &str) -> ClientConfig {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", self.address())
            .set("security.protocol", "sasl_plaintext")
            .set("sasl.mechanism", "SCRAM-SHA-512")
            .set("sasl.username", user)
            .set("sasl.password", password);
        client
    }
}

/// A Secret volume as the kubelet lays it out: `dir/<key>` -> `..data/<key>`, `..data` -> a
/// timestamped directory, replaced whole on each update by an atomic rename of the symlink.
pub struct SecretVolume {
    pub dir: PathBuf,
    version: u32,
}

impl SecretVolume {
    pub fn new(dir: &Path, files: &[(&str, &str)]) -> SecretVolume {
        std::fs::create_dir_all(dir).unwrap();
        let mut volume = SecretVolume {
            dir: dir.to_owned(),
            version: 0,
        };
        volume.update(files);
        for (key, _) in files {
            std::os::unix::fs::symlink(Path::new("..data").join(key), dir.join(key)).unwrap();
        }
        volume
    }

    /// Writes a new timestamped directory and swaps `..data` to it; the old one is removed.
    pub fn update(&mut self, files: &[(&str, &str)]) {
        self.version += 1;
        let name = format!("..2024_01_01_00_00_{:02}.{}", self.version, self.version);
        let version = self.dir.join(&name);
        std::fs::create_dir(&version).unwrap();
        for (key, value) in files {
            std::fs::write(version.join(key), value).unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        if self.version > 1 {
            let old = format!(
                "..2024_01_01_00_00_{:02}.{}",
                self.version - 1,
                self.version - 1
            );
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }

    pub fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }
}
