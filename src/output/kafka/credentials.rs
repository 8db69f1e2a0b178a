//! Credentials in mounted files, picked up without a restart.
//!
//! What the Kafka clients are built from that lives in files: each `secret_files` value (a
//! librdkafka property whose value is the file's content: `sasl.password`, `ssl.key.pem`),
//! and each file an `ssl.*.location` property names (librdkafka reads those itself when a
//! client is built). Kubernetes updates a Secret volume by writing a new timestamped directory
//! and swapping the `..data` symlink, so a file's own inode never changes: the directory
//! holding each file is watched (as for the config, see `crate::reload`), and re-read a
//! little after any event there, and every [`RECHECK`] in case an event was missed.
//!
//! When what the files hold changed, the delivery loop builds new clients from it and switches
//! to them; the producer they replace is [`retire`]d, and every record it still held is either
//! acknowledged by it or re-sent on the new one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::Watcher;
use rdkafka::config::ClientConfig;
use std::sync::Arc;

use rdkafka::producer::{Producer, PurgeConfig};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::delivery::Polled;
use super::error::KafkaError;
use super::reports::Reports;
use super::KafkaConfig;

/// How often the files are read again without an event (a missed or unsupported one).
const RECHECK: Duration = Duration::from_secs(30);
/// How long after an event the files are read: a Secret update is several events (new
/// directory, symlink swap, old directory removed).
const SETTLE: Duration = Duration::from_millis(200);
/// How long a replaced producer may take to get acknowledgements for what it had sent.
const RETIRE_GRACE: Duration = Duration::from_secs(10);

/// What the files held when last read.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Secrets {
    /// `secret_files`: property -> the file's content, without a trailing newline.
    values: BTreeMap<String, String>,
    /// Files named by `ssl.*.location` properties -> their content (a directory's: its
    /// files', by name), so that a new certificate there counts as a change.
    located: BTreeMap<PathBuf, Vec<u8>>,
}

// Secrets are never printed.
impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("properties", &self.values.keys().collect::<Vec<_>>())
            .field("located", &self.located.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Secrets {
    /// Reads every file the clients are built from.
    pub(super) fn read(config: &KafkaConfig) -> Result<Secrets, KafkaError> {
        let mut values = BTreeMap::new();
        for (property, path) in &config.secret_files {
            let value = std::fs::read_to_string(path).map_err(|source| KafkaError::SecretFile {
                property: property.clone(),
                path: path.clone(),
                source,
            })?;
            values.insert(
                property.clone(),
                value.trim_end_matches(['\n', '\r']).to_owned(),
            );
        }
        let located = located_files(config)
            .into_iter()
            .map(|path| {
                let content = content(&path);
                (path, content)
            })
            .collect();
        Ok(Secrets { values, located })
    }

    /// `properties` with the `secret_files` ones set too.
    pub(super) fn with_properties(
        &self,
        properties: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        let mut all = properties.clone();
        all.extend(self.values.clone());
        all
    }

    /// Sets the `secret_files` properties on `client`.
    pub(super) fn apply(&self, client: &mut ClientConfig) {
        for (property, value) in &self.values {
            client.set(property, value);
        }
    }
}

/// The files named by `ssl.*.location` properties (not librdkafka's `probe`).
fn located_files(config: &KafkaConfig) -> Vec<PathBuf> {
    config
        .properties
        .iter()
        .filter(|(name, value)| {
            name.starts_with("ssl.") && name.ends_with(".location") && value.as_str() != "probe"
        })
        .flat_map(|(_, value)| value.split(',').map(|p| PathBuf::from(p.trim())))
        .collect()
}

/// A file's content, or a directory's files' names and contents; empty when unreadable.
fn content(path: &Path) -> Vec<u8> {
    if let Ok(bytes) = std::fs::read(path) {
        return bytes;
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    let mut all = Vec::new();
    for file in files {
        if let Ok(bytes) = std::fs::read(&file) {
            all.extend_from_slice(file.as_os_str().as_encoded_bytes());
            all.push(0);
            all.extend_from_slice(&bytes);
        }
    }
    all
}

/// The directories to watch: each file's own.
fn directories(config: &KafkaConfig) -> BTreeSet<PathBuf> {
    config
        .secret_files
        .values()
        .cloned()
        .chain(located_files(config))
        .filter_map(|p| {
            p.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map(Path::to_path_buf)
        })
        .collect()
}

/// Watches the files the clients are built from; yields their new content when it changes.
/// Stops watching when dropped.
pub(super) struct CredentialsWatch {
    changes: mpsc::Receiver<Secrets>,
    task: Option<JoinHandle<()>>,
}

impl CredentialsWatch {
    /// Starts watching the files of `config`, which held `current` when the clients were
    /// built. Without any such file there is nothing to watch.
    pub(super) fn start(config: &KafkaConfig, current: Secrets) -> CredentialsWatch {
        let (tx, changes) = mpsc::channel(1);
        let dirs = directories(config);
        let task = (!dirs.is_empty()).then(|| {
            // Watching before the task runs, so that no change in between goes unseen.
            let (watcher, events) = watch_dirs(&dirs);
            tokio::spawn(follow(config.clone(), watcher, events, current, tx))
        });
        CredentialsWatch { changes, task }
    }

    /// The files' new content, once it differs from what the clients in use were built from.
    /// Cancel-safe (for `select!`); never returns when nothing is watched.
    pub(super) async fn changed(&mut self) -> Secrets {
        match self.changes.recv().await {
            Some(secrets) => secrets,
            None => std::future::pending().await,
        }
    }
}

impl Drop for CredentialsWatch {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Watches `dirs`; a message on the receiver for each event there.
fn watch_dirs(
    dirs: &BTreeSet<PathBuf>,
) -> (Option<notify::RecommendedWatcher>, mpsc::Receiver<()>) {
    let (event_tx, events) = mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Opening or reading a file there changes nothing, and `follow`'s own reads are such
        // events: counted, each read would cause the next (five a second, for ever).
        if !event.as_ref().is_ok_and(only_read) {
            let _ = event_tx.try_send(());
        }
    });
    let watcher = match watcher {
        Ok(mut watcher) => {
            for dir in dirs {
                if let Err(e) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
                    tracing::warn!(error = %e, dir = %dir.display(), "cannot watch a Kafka credentials directory; it is read again every 30 s");
                }
            }
            Some(watcher)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the Kafka credentials files; they are read again every 30 s");
            None
        }
    };
    (watcher, events)
}

/// An open, a read or a close without writing: nothing changed.
fn only_read(event: &notify::Event) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    matches!(event.kind, EventKind::Access(kind) if kind != AccessKind::Close(AccessMode::Write))
}

/// Reads the files at once (they may have changed since `current` was read), then again
/// after each event in their directories and every [`RECHECK`]; sends what they hold when it
/// changed. A file that cannot be read (a Secret half updated, a key removed) keeps the
/// running credentials, and says so.
async fn follow(
    config: KafkaConfig,
    _watcher: Option<notify::RecommendedWatcher>,
    mut events: mpsc::Receiver<()>,
    mut current: Secrets,
    tx: mpsc::Sender<Secrets>,
) {
    let mut unreadable = false;
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                Some(()) = events.recv() => {
                    tokio::time::sleep(SETTLE).await;
                    while events.try_recv().is_ok() {}
                }
                () = tokio::time::sleep(RECHECK) => {}
            }
        }
        first = false;
        let secrets = match Secrets::read(&config) {
            Ok(secrets) => secrets,
            Err(e) => {
                if !unreadable {
                    tracing::error!(error = %e, cause = %std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default(), "a Kafka credentials file cannot be read; the running credentials stay");
                }
                unreadable = true;
                continue;
            }
        };
        unreadable = false;
        if secrets == current {
            continue;
        }
        current = secrets.clone();
        if tx.send(secrets).await.is_err() {
            return;
        }
    }
}

/// Retires a producer replaced by one built from new credentials, in the background: what it
/// has not sent yet is purged at once, what it has sent gets [`RETIRE_GRACE`] to be
/// acknowledged, then is purged too. A purged record's delivery fails with a purge error and
/// the delivery loop re-sends it, the same record with the same id, on the new producer: each
/// record is acknowledged by one of the two, none is dropped (one acknowledged by neither but
/// written all the same arrives twice, with one id).
///
/// Once its polling thread has served its last report and the producer is destroyed, the
/// delivery loop is told (`Reports::retired` for `generation`, the sink's generation of this
/// producer): a record of it that got no report by then (librdkafka destroyed with reports not
/// yet served) is sent again on the new producer, never left waiting.
pub(super) fn retire(producer: Polled, generation: u64, reports: Arc<Reports>) {
    tokio::spawn(async move {
        producer.purge(PurgeConfig::default().queue());
        let deadline = Instant::now() + RETIRE_GRACE;
        while producer.in_flight_count() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = producer.in_flight_count();
        if left > 0 {
            tracing::warn!(
                records = left,
                "the replaced Kafka producer's records still unacknowledged are re-sent on the new one"
            );
            producer.purge(PurgeConfig::default().queue().inflight());
            // Its polling thread delivers the purge errors; then nothing waits on it.
            let deadline = Instant::now() + Duration::from_secs(5);
            while producer.in_flight_count() > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // Stopping waits for the polling thread (at most one poll, 10 s) and destroys the
        // client, joining librdkafka's threads: blocking.
        if tokio::task::spawn_blocking(move || producer.stop())
            .await
            .is_err()
        {
            tracing::error!("stopping the replaced kafka producer failed");
        }
        // After the producer's last report: what it did not report is sent again. (Were it
        // still polling, a late report of it would find its record's attempt over, and be
        // ignored: a record is confirmed only by its current attempt.)
        reports.retired(generation);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Secret volume as the kubelet lays it out: `dir/<key>` -> `..data/<key>`,
    /// `..data` -> a timestamped directory.
    struct SecretVolume {
        dir: tempfile::TempDir,
        version: u32,
    }

    impl SecretVolume {
        fn new(files: &[(&str, &str)]) -> SecretVolume {
            let mut volume = SecretVolume {
                dir: tempfile::tempdir().unwrap(),
                version: 0,
            };
            volume.update(files);
            for (key, _) in files {
                std::os::unix::fs::symlink(
                    Path::new("..data").join(key),
                    volume.dir.path().join(key),
                )
                .unwrap();
            }
            volume
        }

        /// A new timestamped directory, then an atomic swap of `..data` to it.
        fn update(&mut self, files: &[(&str, &str)]) {
            self.version += 1;
            let name = format!("..2024_01_01_00_00_0{}", self.version);
            let version = self.dir.path().join(&name);
            std::fs::create_dir(&version).unwrap();
            for (key, value) in files {
                std::fs::write(version.join(key), value).unwrap();
            }
            let tmp = self.dir.path().join("..data_tmp");
            std::os::unix::fs::symlink(&name, &tmp).unwrap();
            std::fs::rename(&tmp, self.dir.path().join("..data")).unwrap();
        }

        fn path(&self, key: &str) -> PathBuf {
            self.dir.path().join(key)
        }
    }

    fn config(volume: &SecretVolume) -> KafkaConfig {
        KafkaConfig {
            secret_files: BTreeMap::from([
                ("sasl.username".to_owned(), volume.path("username")),
                ("sasl.password".to_owned(), volume.path("password")),
            ]),
            properties: BTreeMap::from([(
                "ssl.ca.location".to_owned(),
                volume.path("ca.crt").display().to_string(),
            )]),
            ..KafkaConfig::default()
        }
    }

    fn password(secrets: &Secrets) -> &str {
        &secrets.values["sasl.password"]
    }

    /// Finding 9: credentials were read once at start, so a rotated Secret was not picked up.
    #[tokio::test]
    async fn a_secret_volume_update_is_seen_with_its_new_values() {
        let mut volume = SecretVolume::new(&[
            ("username", "auditrail"),
            ("password", "one\n"),
            ("ca.crt", "CA 1"),
        ]);
        let config = config(&volume);
        let first = Secrets::read(&config).unwrap();
        assert_eq!(
            password(&first),
            "one",
            "a trailing newline is not part of it"
        );
        let mut watch = CredentialsWatch::start(&config, first.clone());

        volume.update(&[
            ("username", "auditrail"),
            ("password", "two\n"),
            ("ca.crt", "CA 1"),
        ]);
        let second = tokio::time::timeout(Duration::from_secs(10), watch.changed())
            .await
            .expect("the new password is seen");
        assert_eq!(password(&second), "two");

        // A new CA certificate behind `ssl.ca.location` is a change too.
        volume.update(&[
            ("username", "auditrail"),
            ("password", "two\n"),
            ("ca.crt", "CA 2"),
        ]);
        let third = tokio::time::timeout(Duration::from_secs(10), watch.changed())
            .await
            .expect("the new CA is seen");
        assert_eq!(password(&third), "two");
        assert_ne!(third, second);
        assert!(
            !format!("{third:?}").contains("two"),
            "secrets are never printed"
        );
    }

    #[tokio::test]
    async fn an_event_that_changes_nothing_builds_nothing() {
        let volume = SecretVolume::new(&[("username", "u"), ("password", "p"), ("ca.crt", "c")]);
        let config = config(&volume);
        let mut watch = CredentialsWatch::start(&config, Secrets::read(&config).unwrap());
        std::fs::write(volume.dir.path().join("unrelated"), "x").unwrap();
        assert!(
            tokio::time::timeout(Duration::from_secs(1), watch.changed())
                .await
                .is_err(),
            "the same values are no change"
        );
    }

    /// Issue 16 (idle wake-ups): reading the credentials files is itself an event in their
    /// directory (inotify reports the open and the close), so each read after an event
    /// caused the next: with `secret_files` set, the watch read the files five times a second
    /// for ever. Opening or reading a file there is no event for it.
    #[tokio::test]
    async fn reading_the_credentials_files_is_not_an_event() {
        // Plain files (a Secret volume's are symlinks into a subdirectory, which is not
        // watched: there the loop did not happen).
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("password"), "p").unwrap();
        let config = KafkaConfig {
            secret_files: BTreeMap::from([(
                "sasl.password".to_owned(),
                dir.path().join("password"),
            )]),
            ..KafkaConfig::default()
        };
        let (_watcher, mut events) = watch_dirs(&directories(&config));
        Secrets::read(&config).unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(500), events.recv())
                .await
                .is_err(),
            "reading the files woke the watch"
        );
        // A change still is one.
        std::fs::write(dir.path().join("password"), "q").unwrap();
        assert!(
            tokio::time::timeout(Duration::from_secs(5), events.recv())
                .await
                .is_ok(),
            "a new file is an event"
        );
    }

    #[tokio::test]
    async fn without_files_nothing_is_watched() {
        let config = KafkaConfig::default();
        let mut watch = CredentialsWatch::start(&config, Secrets::read(&config).unwrap());
        assert!(watch.task.is_none());
        assert!(
            tokio::time::timeout(Duration::from_millis(100), watch.changed())
                .await
                .is_err()
        );
    }
}
