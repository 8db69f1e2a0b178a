//! `auditrail run`: the long-running service.
//!
//! Starts the outputs, the file tailer (on its own thread) and the checkpoint saver; on
//! SIGTERM or SIGINT it stops reading, lets the outputs drain and confirm what they hold,
//! saves checkpoints a last time and returns.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::Config;
use crate::output;
use crate::pipeline::{BuildError, Processor, Stats};
use crate::source::checkpoint::{CheckpointError, Checkpoints};
use crate::source::file::FileTailer;
use crate::source::SourceError;

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
}

impl RunError {
    /// Errors caused by the config or the environment it names (exit code 2).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            RunError::Build(_)
                | RunError::Checkpoint(_)
                | RunError::OutputStart(output::OutputError::Kafka(_))
        )
    }
}

/// Runs until SIGTERM/SIGINT.
pub async fn run(config: Config) -> Result<(), RunError> {
    let processor = Arc::new(Processor::new(&config)?);
    let checkpoints = Checkpoints::load(&config.source.checkpoint_dir)?;
    tracing::info!(
        paths = ?config.source.paths,
        format = ?config.source.format,
        checkpoint_dir = %config.source.checkpoint_dir.display(),
        outputs = ?config.outputs.effective().names(),
        "auditrail starting"
    );

    let classes: output::kafka::Classes = processor
        .retention()
        .classes()
        .map(|c| (c.topic.to_string(), c.days))
        .collect();
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let metrics = crate::metrics::Metrics::new();
    let (classes_tx, classes_rx) = tokio::sync::watch::channel(classes);
    let outputs = output::start(&config.outputs, classes_rx, shutdown_rx, &metrics).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Mutex::new(Stats::default()));
    let tailer = FileTailer::new(
        config.source.clone(),
        Arc::clone(&processor),
        Arc::clone(&checkpoints),
        outputs.sender,
        outputs.count,
        Arc::clone(&stop),
        Arc::clone(&stats),
        tokio::runtime::Handle::current(),
    );
    let tailer_thread = std::thread::Builder::new()
        .name("file-tailer".into())
        .spawn(move || tailer.run())
        .map_err(RunError::Signal)?;

    let saver = {
        let checkpoints = Arc::clone(&checkpoints);
        let interval = config.source.checkpoint_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                let cps = Arc::clone(&checkpoints);
                match tokio::task::spawn_blocking(move || cps.save()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot save checkpoints"),
                    Err(e) => tracing::warn!(error = %e, "checkpoint task failed"),
                }
            }
        })
    };

    wait_for_shutdown().await.map_err(RunError::Signal)?;
    tracing::info!("shutting down: draining outputs");
    stop.store(true, Ordering::Relaxed);
    let _ = shutdown_tx.send(true);
    let tailer_result = tokio::task::spawn_blocking(move || tailer_thread.join())
        .await
        .map_err(|e| RunError::Output(e.to_string()))?;
    let output_result = outputs.done.await;
    saver.abort();
    checkpoints.save()?;
    let final_stats = *stats.lock().unwrap_or_else(|e| e.into_inner());
    tracing::info!(stats = ?final_stats, in_flight = checkpoints.in_flight(), "auditrail stopped");
    match tailer_result {
        Ok(r) => r?,
        Err(_) => return Err(RunError::Output("the file tailer panicked".into())),
    }
    match output_result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(RunError::Output(e.to_string())),
        Err(e) => Err(RunError::Output(e.to_string())),
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

/// How long `run` waits for outputs to drain after a signal (used by the Kafka output).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
