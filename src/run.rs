//! `auditrail run`: the long-running service.
//!
//! Starts the metrics server, pod-metadata enrichment, the outputs, the source (the file
//! tailer on its own thread, or the Kubernetes log stream as a task), the checkpoint saver and
//! the config reloader. On SIGTERM or SIGINT it stops reading, lets the outputs drain and
//! confirm what they hold, saves checkpoints a last time and returns.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use crate::config::Config;
use crate::enrich::{self, Enrichment};
use crate::line::Stats;
use crate::metrics::{self, Health, Metrics};
use crate::output;
use crate::pipeline::{BuildError, Processor, SharedProcessor};
use crate::reload;
use crate::source::checkpoint::{CheckpointError, Checkpoints};
use crate::source::file::FileTailer;
use crate::source::kubernetes::{KubernetesLogSource, LogCheckpoint};
use crate::source::SourceError;
use crate::source::{SourceKind, Telemetry};

/// Why `run` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("output failed: {0}")]
    Output(String),
    #[error(transparent)]
    OutputStart(#[from] output::OutputError),
    #[error("cannot listen for signals: {0}")]
    Signal(#[source] std::io::Error),
    #[error("cannot start the file tailer thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("source.kind: kubernetes needs the Kubernetes API (in-cluster config or a kubeconfig) and the pod's name (POD_NAME, or source.pod)")]
    NoKubernetes,
    #[error("cannot serve metrics on {0}: {1}")]
    Listen(String, #[source] std::io::Error),
}

impl RunError {
    /// Errors caused by the config or the environment it names (exit code 2).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            RunError::Build(_)
                | RunError::Checkpoint(_)
                | RunError::Listen(..)
                | RunError::NoKubernetes
                | RunError::OutputStart(output::OutputError::Config { .. })
        )
    }
}

/// Runs until SIGTERM/SIGINT. `config_path` is watched for hot reloads.
pub async fn run(config: Config, config_path: PathBuf) -> Result<(), RunError> {
    let metrics = Metrics::new();
    let health = Health::new();
    let processor: SharedProcessor = Arc::new(RwLock::new(Arc::new(
        Processor::new(&config)?.with_metrics(Arc::clone(&metrics)),
    )));
    let checkpoints = Checkpoints::load(&config.source.checkpoint_dir)?;
    tracing::info!(
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
    let (enrichment, kube_client, enrich_tasks) = start_enrichment(&config).await;

    let server = match &config.metrics.listen {
        Some(listen) => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| RunError::Listen(listen.clone(), e))?;
            let bound = listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| listen.clone());
            tracing::info!(listen = %bound, "serving /metrics, /healthz and /readyz");
            let serve = metrics::serve(
                listener,
                Arc::clone(&metrics),
                Arc::clone(&health),
                config.metrics.stall_timeout,
            );
            Some(tokio::spawn(serve))
        }
        None => None,
    };

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (classes_tx, classes_rx) = watch::channel(classes_of(&config));
    let outputs = output::start(&config.outputs, classes_rx, shutdown_rx, &metrics)?;
    let health_task = {
        let (health, metrics) = (Arc::clone(&health), Arc::clone(&metrics));
        let outputs_health = outputs.health.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                for (name, output) in &outputs_health {
                    health.set(name, output.not_ready());
                }
                metrics
                    .process
                    .ready
                    .set(i64::from(health.readiness().is_ok()));
            }
        })
    };

    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Mutex::new(Stats::default()));
    let telemetry = Telemetry::new(
        Arc::clone(&metrics),
        Arc::clone(&health),
        config.metrics.max_backlog_bytes,
    );
    let mut log_checkpoint = None;
    let source_task: SourceTask = match config.source.kind {
        SourceKind::File => {
            let tailer = FileTailer::new(
                config.source.clone(),
                Arc::clone(&processor),
                Arc::clone(&checkpoints),
                outputs.sender,
                Arc::clone(&stop),
                Arc::clone(&stats),
                tokio::runtime::Handle::current(),
                telemetry,
                Arc::clone(&enrichment),
            );
            let thread = std::thread::Builder::new()
                .name("file-tailer".into())
                .spawn(move || tailer.run())
                .map_err(RunError::Thread)?;
            SourceTask::File(thread)
        }
        SourceKind::Kubernetes => {
            let client = kube_client.clone().ok_or(RunError::NoKubernetes)?;
            let env = |name: &str| std::env::var(name).ok();
            let (namespace, pod) = match (&config.source.namespace, &config.source.pod) {
                (Some(ns), Some(pod)) => (ns.clone(), pod.clone()),
                (ns, pod) => {
                    let (own_ns, own_pod) =
                        enrich::api::own_pod(&client, &env).ok_or(RunError::NoKubernetes)?;
                    (ns.clone().unwrap_or(own_ns), pod.clone().unwrap_or(own_pod))
                }
            };
            let container = config.source.container.clone().unwrap_or_default();
            let checkpoint =
                LogCheckpoint::load(&config.source.checkpoint_dir, &namespace, &pod, &container)?;
            log_checkpoint = Some(Arc::clone(&checkpoint));
            tracing::info!(
                namespace,
                pod,
                container,
                "following the container log through the Kubernetes API"
            );
            let source = KubernetesLogSource {
                config: config.source.clone(),
                client,
                namespace,
                pod,
                container,
                processor: Arc::clone(&processor),
                checkpoint,
                out: outputs.sender,
                stop: Arc::clone(&stop),
                stats: Arc::clone(&stats),
                telemetry,
                enrichment: Arc::clone(&enrichment),
            };
            SourceTask::Kubernetes(tokio::spawn(source.run()))
        }
    };

    let saver = {
        let checkpoints = Arc::clone(&checkpoints);
        let log_checkpoint = log_checkpoint.clone();
        let interval = config.source.checkpoint_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                let cps = Arc::clone(&checkpoints);
                let log = log_checkpoint.clone();
                let save = move || -> Result<(), String> {
                    cps.save().map_err(|e| e.to_string())?;
                    if let Some(log) = log {
                        log.save().map_err(|e| e.to_string())?;
                    }
                    Ok(())
                };
                match tokio::task::spawn_blocking(save).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot save checkpoints"),
                    Err(e) => tracing::warn!(error = %e, "checkpoint task failed"),
                }
            }
        })
    };

    let reloader = tokio::spawn(reload_loop(
        config,
        config_path,
        Arc::clone(&processor),
        classes_tx,
        Arc::clone(&metrics),
        Arc::clone(&enrichment),
    ));

    wait_for_shutdown().await.map_err(RunError::Signal)?;
    tracing::info!("shutting down: draining outputs");
    stop.store(true, Ordering::Relaxed);
    let _ = shutdown_tx.send(true);
    reloader.abort();
    let source_result: Result<Result<(), SourceError>, ()> = match source_task {
        SourceTask::File(thread) => tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|e| RunError::Output(e.to_string()))?
            .map_err(|_| ()),
        SourceTask::Kubernetes(task) => task.await.map_err(|_| ()),
    };
    let output_result = outputs.done.await;
    saver.abort();
    checkpoints.save()?;
    if let Some(log) = &log_checkpoint {
        log.save()?;
    }
    health_task.abort();
    for task in enrich_tasks {
        task.abort();
    }
    drop(kube_client);
    if let Some(task) = server {
        task.abort();
    }
    let final_stats = *stats.lock().unwrap_or_else(|e| e.into_inner());
    let s = final_stats;
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
        in_flight = checkpoints.in_flight(),
        "auditrail stopped"
    );
    match source_result {
        Ok(r) => r?,
        Err(()) => return Err(RunError::Output("the source panicked".into())),
    }
    match output_result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(RunError::Output(e.to_string())),
        Err(e) => Err(RunError::Output(e.to_string())),
    }
}

/// Starts following the pod's metadata as `enrich.kubernetes` asks: the Downward API, the
/// Kubernetes API (when a client can be built: in a cluster, or with a kubeconfig), or both.
/// Outside Kubernetes this warns once and records carry no `kubernetes` object.
async fn start_enrichment(
    config: &Config,
) -> (
    Arc<Enrichment>,
    Option<kube::Client>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let enrichment = Enrichment::new(config.enrich.clone());
    let mode = config.enrich.kubernetes;
    let mut tasks = Vec::new();
    if mode == enrich::Mode::Off {
        return (enrichment, None, tasks);
    }
    if matches!(mode, enrich::Mode::Auto | enrich::Mode::Downward) {
        let env = |name: &str| std::env::var(name).ok();
        enrichment.set_downward(enrich::downward(&env, &config.enrich.podinfo_dir));
        tasks.push(tokio::spawn(enrich::follow_downward(Arc::clone(
            &enrichment,
        ))));
    }
    let wants_client = matches!(mode, enrich::Mode::Auto | enrich::Mode::Api)
        || config.source.kind == crate::source::SourceKind::Kubernetes;
    let client = if wants_client {
        match kube::Client::try_default().await {
            Ok(client) => Some(client),
            Err(e) => {
                if mode == enrich::Mode::Api
                    || config.source.kind == crate::source::SourceKind::Kubernetes
                {
                    tracing::warn!(error = %e, "no Kubernetes API client (not in a cluster, no kubeconfig)");
                } else {
                    tracing::debug!(error = %e, "no Kubernetes API client; using the Downward API only");
                }
                None
            }
        }
    } else {
        None
    };
    if let (Some(client), true) = (
        &client,
        matches!(mode, enrich::Mode::Auto | enrich::Mode::Api),
    ) {
        let env = |name: &str| std::env::var(name).ok();
        match enrich::api::own_pod(client, &env) {
            Some((namespace, name)) => tasks.push(tokio::spawn(enrich::api::follow_pod(
                client.clone(),
                namespace,
                name,
                Arc::clone(&enrichment),
            ))),
            None => tracing::warn!(
                "cannot tell which pod this is (set POD_NAME through the Downward API)"
            ),
        }
    }
    // Give the API a moment, then say so once if nothing at all is known.
    let e = Arc::clone(&enrichment);
    tasks.push(tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        if !e.is_known() {
            tracing::warn!("no pod metadata (Downward API variables and files absent, Kubernetes API unreachable): records carry no kubernetes object except what log paths tell");
        }
    }));
    (enrichment, client, tasks)
}

/// The running source.
enum SourceTask {
    File(std::thread::JoinHandle<Result<(), SourceError>>),
    Kubernetes(tokio::task::JoinHandle<Result<(), SourceError>>),
}

fn classes_of(config: &Config) -> output::Classes {
    config
        .retention
        .classes
        .values()
        .map(|c| (c.topic.clone(), c.days))
        .collect()
}

/// Applies config changes as they come: validated first, the per-record stages swapped in
/// between two read turns, restart-only changes reported.
async fn reload_loop(
    mut current: Config,
    path: PathBuf,
    processor: SharedProcessor,
    classes: watch::Sender<output::Classes>,
    metrics: Arc<Metrics>,
    enrichment: Arc<Enrichment>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(reload::watch(path.clone(), tx));
    let reloads = &metrics.process.reloads;
    while rx.recv().await.is_some() {
        let new = match reload::load(&path) {
            Ok(new) => new,
            Err(e) => {
                reloads.with_label_values(&["failure"]).inc();
                tracing::error!(problems = ?e.problems(), "new config refused; the running config stays");
                continue;
            }
        };
        let restart = reload::needs_restart(&current, &new);
        if !reload::stages_changed(&current, &new) && restart.is_empty() {
            continue;
        }
        if !restart.is_empty() {
            tracing::warn!(sections = ?restart, "config changes that need a restart were not applied");
        }
        if reload::stages_changed(&current, &new) {
            let next = reload::apply(&current, &new);
            match Processor::new(&next) {
                Ok(p) => {
                    let p = Arc::new(p.with_metrics(Arc::clone(&metrics)));
                    *processor.write().unwrap_or_else(|e| e.into_inner()) = p;
                }
                Err(e) => {
                    reloads.with_label_values(&["failure"]).inc();
                    tracing::error!(error = %e, "new config refused; the running config stays");
                    continue;
                }
            }
            if next.enrich != current.enrich {
                enrichment.set_config(next.enrich.clone());
            }
            current = next;
            let _ = classes.send(classes_of(&current));
            tracing::info!(
                detectors = ?current.audit.formats,
                rules = current.audit.rules.len(),
                types_include = ?current.types.include,
                types_exclude = ?current.types.exclude,
                "config reloaded"
            );
        }
        reloads.with_label_values(&["success"]).inc();
    }
}

async fn wait_for_shutdown() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}
