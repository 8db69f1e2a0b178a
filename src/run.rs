//! `auditrail run`: the long-running service, wired in one place.
//!
//! It starts, in order: the metrics server, pod-metadata enrichment, the per-line stages, the
//! outputs (their readiness is asked for by `/readyz` and `/metrics`, nothing ticks for it),
//! the source, the checkpoint saver and the config reloader. On SIGTERM or SIGINT the source drains (reads on until its files have been quiet for
//! `source.drain_quiet`, at most `source.drain_timeout`), then the outputs drain and confirm
//! what they hold (each within its own `drain_timeout`), checkpoints are saved a last time and
//! it returns.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::budget::Budget;
use crate::config::Config;
use crate::enrich;
use crate::line::Stats;
use crate::metrics::{self, Health, ListenError, Metrics};
use crate::output::{self, OutputError};
use crate::pipeline::{BuildError, Processor, SharedProcessor};
use crate::reload;
use crate::source::digests::DigestSettings;
use crate::source::{self, Checkpoint, CheckpointError, SourceError, SourceKind, Telemetry};

/// Why `run` stopped with an error; [`RunError::is_usage`] tells a config problem (exit code
/// 2) from a failure while running (exit code 1).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct RunError(Fail);

impl RunError {
    /// Caused by the config or the environment it names (exit code 2).
    pub fn is_usage(&self) -> bool {
        self.0.is_usage()
    }
}

#[derive(Debug, thiserror::Error)]
enum Fail {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("cannot save checkpoints at shutdown")]
    Checkpoint(#[source] CheckpointError),
    #[error(transparent)]
    Stopped(#[from] source::SourceStopped),
    #[error("cannot listen for signals")]
    Signal(#[source] std::io::Error),
    #[error("integrity: cannot use the chain key or the signing key")]
    Integrity(#[source] crate::integrity::KeyError),
}

impl Fail {
    fn is_usage(&self) -> bool {
        matches!(
            self,
            Fail::Build(_)
                | Fail::Integrity(_)
                | Fail::Listen(_)
                | Fail::Output(OutputError::Config { .. })
                | Fail::Source(SourceError::Checkpoint(_) | SourceError::NoKubernetes)
        )
    }
}

/// The digests' settings (`integrity.digests`), the signing key read now.
fn digest_settings(config: &Config) -> Result<Option<Arc<DigestSettings>>, Fail> {
    let Some(d) = &config.integrity.digests else {
        return Ok(None);
    };
    // Validation makes sure there is a Kafka output: the digests go to a topic.
    let kafka = config
        .outputs
        .enabled()
        .iter()
        .enumerate()
        .find(|(_, o)| o.name == "kafka")
        .map_or((0, true), |(i, o)| (i, o.required));
    let settings = DigestSettings::load(d, kafka).map_err(Fail::Integrity)?;
    tracing::info!(
        topic = d.topic,
        key_id = settings.key_id(),
        every_records = d.every_records,
        every = ?d.every,
        "signed digests on"
    );
    Ok(Some(Arc::new(settings)))
}

/// Runs until SIGTERM/SIGINT. `config_path` is watched for hot reloads.
pub async fn run(config: Config, config_path: PathBuf) -> Result<(), RunError> {
    serve(config, config_path).await.map_err(RunError)
}

async fn serve(config: Config, config_path: PathBuf) -> Result<(), Fail> {
    // First: a SIGTERM during startup (a pod stopped as it starts) is kept for the drain
    // below, not the default action that ends the process undrained.
    let mut signals = Signals::install().map_err(Fail::Signal)?;
    log_start(&config);
    // Keys first: a Secret that is not mounted stops the start before anything is read.
    let chain = config
        .integrity
        .hasher()
        .map_err(Fail::Integrity)?
        .map(Arc::new);
    if let Some(h) = &chain {
        tracing::info!(algorithm = h.algorithm(), "integrity chain on");
    }
    let digests = digest_settings(&config)?;
    let metrics = Metrics::new();
    let health = Health::new();
    let server = metrics::start(&config.metrics, Arc::clone(&metrics), Arc::clone(&health)).await?;
    let needs_client = config.source.kind == SourceKind::Kubernetes;
    let enricher = enrich::start(&config.enrich, needs_client).await;
    let processor: SharedProcessor = Arc::new(RwLock::new(Arc::new(
        Processor::new(config.stages())?
            .with_metrics(Arc::clone(&metrics))
            .with_chain(chain),
    )));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (classes_tx, classes_rx) = watch::channel(reload::classes_of(&config));
    let outputs = output::start(&config.outputs, classes_rx, shutdown_rx, &metrics)?;
    // Readiness is computed when `/readyz` or `/metrics` asks for it: no tick while idle.
    for (name, output) in &outputs.health {
        let output = Arc::clone(output);
        health.ask(name, move || output.not_ready());
    }

    let (budget, budget_from) = config.memory.budget();
    tracing::info!(bytes = budget, from = %budget_from, "memory budget");
    metrics
        .process
        .memory_budget
        .set(i64::try_from(budget).unwrap_or(i64::MAX));
    let budget = Budget::new(budget, Some(metrics.process.memory_used.clone()));
    let context = source::Context {
        processor: Arc::clone(&processor),
        out: outputs.sender,
        telemetry: Telemetry::new(
            Arc::clone(&metrics),
            Arc::clone(&health),
            config.metrics.max_backlog_bytes,
        ),
        enrichment: Arc::clone(&enricher.enrichment),
        stop: Arc::default(),
        stats: Arc::new(Mutex::new(Stats::default())),
        budget,
        digests,
    };
    let source = source::start(&config.source, context, enricher.client.clone())?;
    let checkpoint = source.checkpoint();
    let saver = save_checkpoints(
        Arc::clone(&checkpoint),
        config.source.checkpoint_interval,
        Arc::clone(&health),
        Arc::clone(&metrics),
    );
    let reloader = reload::start(
        config,
        config_path,
        reload::Targets {
            processor,
            classes: classes_tx,
            metrics: Arc::clone(&metrics),
            enrichment: Arc::clone(&enricher.enrichment),
        },
    );

    let mut done = outputs.done;
    let ended_early = tokio::select! {
        () = signals.recv() => None,
        ended = &mut done => Some(ended),
    };
    reloader.abort();
    let (stopped, drained) = match ended_early {
        None => {
            tracing::info!("shutting down: draining the source, then the outputs");
            // The source drains first (reads on until its files are quiet), then the outputs
            // drain what it sent them: in this order nothing read is left behind unsent.
            let stopped = source.stop().await;
            let _ = shutdown_tx.send(true);
            (stopped, done.await)
        }
        // An output that cannot deliver ends the process: reading on would only pile up
        // records nothing confirms. The checkpoint keeps what was confirmed; the kubelet
        // restarts the container and the rest is read again.
        Some(ended) => {
            tracing::error!("an output stopped; stopping without reading further");
            let stopped = source.abort().await;
            let _ = shutdown_tx.send(true);
            let ended = match ended {
                Ok(Ok(())) => Ok(Err(OutputError::Ended)),
                other => other,
            };
            (stopped, ended)
        }
    };
    saver.abort();
    let saved = checkpoint.save();
    enricher.stop();
    if let Some(server) = server {
        server.abort();
    }
    let stats = stopped?;
    log_stop(&stats, checkpoint.in_flight());
    saved.map_err(Fail::Checkpoint)?;
    match drained {
        Ok(result) => Ok(result?),
        Err(e) => Err(OutputError::Task(e).into()),
    }
}

/// Saves the source's checkpoints every `interval`, when they changed. A failure (a read-only or full volume) is
/// counted, makes the pod not ready and is tried again; readiness returns with the next save
/// that works. What is saved never claims more than the outputs confirmed.
///
/// It ticks even when nothing changes (issue 16 left it so): [`Checkpoint::changed`] also
/// notices what no event announces (the checkpoint file deleted or replaced, its directory
/// gone, the 5-minute rewrite due), and the outputs' confirmations move the offsets
/// without telling the checkpoints; sleeping until a change would need every one of them to
/// signal.
fn save_checkpoints(
    checkpoint: Arc<dyn Checkpoint>,
    interval: Duration,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            // Nothing new: no write, and no blocking thread kept awake for it.
            if !checkpoint.changed() {
                continue;
            }
            let cp = Arc::clone(&checkpoint);
            let failure = match tokio::task::spawn_blocking(move || cp.save()).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(crate::report(&e)),
                Err(e) => Some(e.to_string()),
            };
            match failure {
                None => health.set("checkpoint", Vec::new()),
                Some(error) => {
                    tracing::warn!(error, "cannot save checkpoints");
                    metrics.source.checkpoint_errors.inc();
                    health.set(
                        "checkpoint",
                        vec![format!("checkpoint: cannot save ({error})")],
                    );
                }
            }
        }
    })
}

fn log_start(config: &Config) {
    tracing::info!(
        kind = ?config.source.kind,
        paths = ?config.source.paths,
        format = ?config.source.format,
        checkpoint_dir = %config.source.checkpoint_dir.display(),
        detectors = ?config.audit.formats,
        rules = config.audit.rules.len(),
        types_include = ?config.types.include,
        types_exclude = ?config.types.exclude,
        retention_classes = ?config.retention.classes.keys().collect::<Vec<_>>(),
        outputs = ?config.outputs.effective().names(),
        metrics = ?config.metrics.listen,
        enrich = ?config.enrich.kubernetes,
        "auditrail starting"
    );
}

fn log_stop(s: &Stats, in_flight: usize) {
    tracing::info!(
        lines = s.lines,
        bytes = s.bytes,
        ordinary = s.ordinary,
        audit = s.audit,
        shipped = s.shipped,
        filtered_out = s.filtered_out,
        invalid = s.invalid,
        oversize = s.oversize,
        partials = s.partials,
        malformed = s.malformed,
        truncations = s.truncations,
        rotations = s.rotations,
        incomplete = s.incomplete,
        gaps = s.gaps,
        gap_bytes = s.gap_bytes,
        in_flight,
        "auditrail stopped"
    );
}

/// SIGTERM and SIGINT, caught from the moment they are installed.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for either.
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM received"),
            _ = self.int.recv() => tracing::info!("SIGINT received"),
        }
    }
}
