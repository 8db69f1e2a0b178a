//! Source: read the application container's stdout, from the kubelet's log files, a shared
//! file, or (`source.kind: kubernetes`) the Kubernetes API, and pass its logical lines through
//! the [`Processor`] to the outputs.
//!
//! Guarantees:
//! - a line is handed on only once its `\n` is read; a longer line than `max_line_bytes` is
//!   skipped and counted, never held whole in memory;
//! - a file renamed away by rotation is read to its end before it is let go; a file that
//!   shrinks (copy-truncate) is read again from offset 0, and counted;
//! - files are known by a fingerprint of their first line, not by path or inode alone;
//! - the checkpoint of a stream only moves past a line once its record has been confirmed by
//!   every output that took it ([`crate::ack`]), so a restart neither loses nor skips.
//!
//! Both sources read through the one read loop in [`stream`] and save their checkpoints
//! through the one store in [`store`].

mod chain;
mod checkpoint;
pub(crate) mod config;
pub(crate) mod digests;
mod file;
pub mod framing;
mod identity;
mod kubernetes;
mod reader;
mod rotation;
mod store;
mod stream;
mod telemetry;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::budget::{self, Budget};
use crate::enrich::Enrichment;
use crate::envelope::Record;
use crate::line::Stats;
use crate::pipeline::{Processor, SharedProcessor};
pub(crate) use checkpoint::Checkpoints;
pub(crate) use config::{ReadFrom, SourceConfig, SourceKind};
pub(crate) use identity::{fingerprint, fingerprint_head, read_head};
pub(crate) use reader::Physical;
pub(crate) use store::CheckpointError;
pub(crate) use stream::StreamReader;
pub(crate) use telemetry::Telemetry;

/// Why a source could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SourceError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("cannot start the file tailer thread")]
    Thread(#[source] std::io::Error),
    #[error("source.kind: kubernetes needs the Kubernetes API (in-cluster config or a kubeconfig) and the pod's name (POD_NAME, or source.pod)")]
    NoKubernetes,
}

/// The checkpoints of a running source, saved every `checkpoint_interval` and at shutdown.
pub(crate) trait Checkpoint: Send + Sync {
    /// Writes what every output confirmed, atomically.
    fn save(&self) -> Result<(), CheckpointError>;
    /// Whether a save would write anything new: the periodic saver skips it otherwise.
    fn changed(&self) -> bool {
        true
    }
    /// Records handed to the outputs and not yet confirmed.
    fn in_flight(&self) -> usize;
}

/// What a source is given: the stages it drives, where records go, what it reports to.
pub(crate) struct Context {
    /// The per-line stages in force; a reload swaps them between two read turns.
    pub processor: SharedProcessor,
    /// The outputs' channel.
    pub out: mpsc::Sender<Vec<Record>>,
    pub telemetry: Telemetry,
    pub enrichment: Arc<Enrichment>,
    /// When the service stops: the drain's start and deadline.
    pub stop: Arc<Stop>,
    /// The counts so far, published for the final summary.
    pub stats: Arc<Mutex<Stats>>,
    /// The memory budget: a batch is sent only when there is room, and its records are
    /// charged to it until every output is done with them.
    pub budget: Arc<Budget>,
    /// How segments' digests are signed and shipped (`integrity.digests`).
    pub digests: Option<Arc<digests::DigestSettings>>,
}

impl Context {
    /// The processor in force for this read turn.
    fn processor(&self) -> Arc<Processor> {
        Arc::clone(&self.processor.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Sends a batch if the outputs take it within `wait`: `Err(Some(batch))` gives it back
    /// when they are busy, `Err(None)` when they are gone.
    async fn send_within(
        &self,
        mut batch: Vec<Record>,
        wait: Duration,
    ) -> Result<(), Option<Vec<Record>>> {
        // Waiting for the outputs is not a stall: the loop is alive.
        self.telemetry.health.beat();
        let ready = async {
            self.budget.room().await;
            self.out.reserve().await
        };
        match tokio::time::timeout(wait, ready).await {
            Ok(Ok(permit)) => {
                self.charge(&mut batch);
                permit.send(batch);
                Ok(())
            }
            Ok(Err(_)) => Err(None),
            Err(_) => Err(Some(batch)),
        }
    }

    /// Charges each record of a batch to the memory budget.
    fn charge(&self, batch: &mut [Record]) {
        for record in batch {
            if record.charge.bytes() == 0 {
                record.charge = self
                    .budget
                    .charge(record.value.len() + budget::RECORD_OVERHEAD);
            }
        }
    }

    /// Sends a batch, waiting while the outputs are busy (backpressure) but giving up when
    /// the drain's time is up: unsent records are unconfirmed and will be read again. Returns
    /// false when the batch was not sent.
    async fn send(&self, mut batch: Vec<Record>) -> bool {
        loop {
            match self.send_within(batch, Duration::from_millis(200)).await {
                Ok(()) => return true,
                Err(None) => return false,
                Err(Some(_)) if self.stop.expired() => return false,
                Err(Some(unsent)) => batch = unsent,
            }
        }
    }
}

/// Whether a filesystem event only says that something was opened (inotify's `IN_OPEN`):
/// nothing changed. A write closed (`IN_CLOSE_WRITE`) is a change and is not this.
pub(crate) fn only_opened(event: &notify::Event) -> bool {
    matches!(
        event.kind,
        notify::EventKind::Access(notify::event::AccessKind::Open(_))
    )
}

/// The end of a source's life: on SIGTERM it drains (reads on until its input is quiet), for
/// at most the drain timeout.
#[derive(Debug, Default)]
pub(crate) struct Stop {
    deadline: Mutex<Option<Instant>>,
    /// Wakes a source that sleeps until its input changes, so that the drain starts at once.
    wake: Mutex<Option<std::sync::mpsc::SyncSender<()>>>,
}

impl Stop {
    /// The service stops: drain for at most `timeout`.
    pub(crate) fn request(&self, timeout: Duration) {
        let mut deadline = self.deadline.lock().unwrap_or_else(|e| e.into_inner());
        deadline.get_or_insert_with(|| Instant::now() + timeout);
        drop(deadline);
        if let Some(wake) = &*self.wake.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = wake.try_send(());
        }
    }

    /// `wake` is sent to (without waiting) when the stop is requested.
    pub(crate) fn wake_with(&self, wake: std::sync::mpsc::SyncSender<()>) {
        *self.wake.lock().unwrap_or_else(|e| e.into_inner()) = Some(wake);
    }

    /// Whether the service is stopping (the source drains).
    pub(crate) fn requested(&self) -> bool {
        self.deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Whether the drain's time is up.
    pub(crate) fn expired(&self) -> bool {
        self.deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|d| Instant::now() >= d)
    }
}

/// When a draining source is done: its input has been quiet for `drain_quiet` since the drain
/// began, or the drain's time is up.
#[derive(Debug)]
pub(crate) struct Quiet {
    quiet: Duration,
    began: Option<Instant>,
    last_data: Instant,
}

impl Quiet {
    pub(crate) fn new(quiet: Duration) -> Quiet {
        Quiet {
            quiet,
            began: None,
            last_data: Instant::now(),
        }
    }

    /// Bytes were read.
    pub(crate) fn data(&mut self) {
        self.last_data = Instant::now();
    }

    /// Whether the source is done reading.
    pub(crate) fn over(&mut self, stop: &Stop) -> bool {
        if !stop.requested() {
            return false;
        }
        let began = *self.began.get_or_insert_with(Instant::now);
        stop.expired() || self.last_data.max(began).elapsed() >= self.quiet
    }
}

/// A started source.
pub(crate) struct SourceHandle {
    task: Task,
    checkpoint: Arc<dyn Checkpoint>,
    stop: Arc<Stop>,
    drain_timeout: Duration,
    stats: Arc<Mutex<Stats>>,
}

enum Task {
    /// The file tailer, on its own thread.
    File(std::thread::JoinHandle<()>),
    /// The Kubernetes log stream, as a task.
    Kubernetes(tokio::task::JoinHandle<()>),
}

/// Starts the source `config` names. `kube` is the Kubernetes API client, when there is one.
pub(crate) fn start(
    config: &SourceConfig,
    context: Context,
    kube: Option<kube::Client>,
) -> Result<SourceHandle, SourceError> {
    let (stop, stats) = (Arc::clone(&context.stop), Arc::clone(&context.stats));
    let (task, checkpoint): (Task, Arc<dyn Checkpoint>) = match config.kind {
        SourceKind::File => {
            let checkpoints = Checkpoints::load(&config.checkpoint_dir)?;
            let tailer = file::FileTailer::new(
                config.clone(),
                Arc::clone(&checkpoints),
                context,
                tokio::runtime::Handle::current(),
            );
            let thread = std::thread::Builder::new()
                .name("file-tailer".into())
                .spawn(move || tailer.run())
                .map_err(SourceError::Thread)?;
            (Task::File(thread), checkpoints)
        }
        SourceKind::Kubernetes => {
            let (task, checkpoint) = kubernetes::start(config, context, kube)?;
            (Task::Kubernetes(task), checkpoint)
        }
    };
    Ok(SourceHandle {
        task,
        checkpoint,
        stop,
        drain_timeout: config.drain_timeout,
        stats,
    })
}

impl SourceHandle {
    /// The source's checkpoints, for the saver.
    pub(crate) fn checkpoint(&self) -> Arc<dyn Checkpoint> {
        Arc::clone(&self.checkpoint)
    }

    /// Stops the source at once, without a drain (an output failed): what it has not sent
    /// stays unconfirmed and is read again at the next start.
    pub(crate) async fn abort(self) -> Result<Stats, SourceStopped> {
        self.stop.request(Duration::ZERO);
        self.join().await
    }

    /// Drains the source: it reads on until its input has been quiet for `drain_quiet` (or
    /// for at most `drain_timeout`), ships what it holds, and returns its counts. The
    /// outputs' channel closes when it is done, which lets them drain in turn.
    pub(crate) async fn stop(self) -> Result<Stats, SourceStopped> {
        self.stop.request(self.drain_timeout);
        self.join().await
    }

    async fn join(self) -> Result<Stats, SourceStopped> {
        let finished = match self.task {
            Task::File(thread) => tokio::task::spawn_blocking(move || thread.join().is_ok())
                .await
                .unwrap_or(false),
            Task::Kubernetes(task) => task.await.is_ok(),
        };
        let stats = *self.stats.lock().unwrap_or_else(|e| e.into_inner());
        if finished {
            Ok(stats)
        } else {
            Err(SourceStopped)
        }
    }
}

/// The source panicked instead of stopping.
#[derive(Debug, thiserror::Error)]
#[error("the source stopped abnormally (panicked)")]
pub(crate) struct SourceStopped;

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, ModifyKind};
    use notify::{Event, EventKind};

    /// Regression (issue 16, idle cost): every scan opened the watched directories, and the
    /// `IN_OPEN` events that followed woke the tailer (and the config reloader, for the
    /// checkpoint directory's syncs) for nothing.
    #[test]
    fn an_open_is_no_change_but_a_closed_write_is() {
        assert!(only_opened(&Event::new(EventKind::Access(
            AccessKind::Open(AccessMode::Any)
        ))));
        for kind in [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Create(CreateKind::File),
            EventKind::Any,
        ] {
            assert!(!only_opened(&Event::new(kind)), "{kind:?}");
        }
    }
}
