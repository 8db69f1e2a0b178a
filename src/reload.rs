//! Hot reload: a new config, read when the ConfigMap changes or on SIGHUP.
//!
//! Kubernetes updates a ConfigMap volume by writing a new timestamped directory and swapping the
//! `..data` symlink, so the file's own inode never changes: the directory holding the config is
//! watched, and any event there (or SIGHUP) re-reads the file. The new config is validated
//! first; an invalid one is refused with its problems logged and counted, and the running
//! config stays. Of a valid one, the per-record stages (audit detectors, type filter,
//! retention) are swapped in between two lines, so no record is lost, repeated or reordered;
//! the selection of pod metadata (labels, annotations, cluster) changes for the next records;
//! changes to sections that need a restart (source, outputs, metrics, the enrichment mode,
//! integrity) are reported, not applied. The key files `integrity` names are read at startup
//! only: a rotated key takes effect at the next restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher;
use tokio::sync::{mpsc, watch};

use crate::config::{Config, ConfigError, Purpose};
use crate::enrich::Enrichment;
use crate::metrics::Metrics;
use crate::output::Classes;
use crate::pipeline::{Processor, SharedProcessor};

/// What a reload changes in the running service.
pub(crate) struct Targets {
    /// The per-line stages the sources use.
    pub processor: SharedProcessor,
    /// The retention classes the outputs check topics for.
    pub classes: watch::Sender<Classes>,
    pub metrics: Arc<Metrics>,
    pub enrichment: Arc<Enrichment>,
}

/// Starts following `path` for changes to `current`; stops when the task is aborted.
pub(crate) fn start(
    current: Config,
    path: PathBuf,
    targets: Targets,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(apply_changes(current, path, targets))
}

/// The (topic, days) of every retention class of `config`, for the outputs, and the digest
/// topic (`integrity.digests.topic`) with the longest of them (forever when a class is): a
/// digest must outlive the records it signs, or `verify` cannot show they are whole.
pub(crate) fn classes_of(config: &Config) -> Classes {
    let mut classes: Classes = config
        .retention
        .classes
        .values()
        .map(|c| (c.topic.clone(), c.days))
        .collect();
    if let Some(d) = &config.integrity.digests {
        let longest = if classes.iter().any(|(_, days)| days.is_none()) {
            None
        } else {
            classes.iter().filter_map(|(_, days)| *days).max()
        };
        classes.push((d.topic.clone(), longest));
    }
    classes
}

/// The sections of `new` that differ from `old` and only take effect after a restart.
pub(crate) fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut sections = Vec::new();
    if old.source != new.source {
        sections.push("source");
    }
    if old.outputs.without_filters() != new.outputs.without_filters() {
        sections.push("outputs");
    }
    if old.metrics != new.metrics {
        sections.push("metrics");
    }
    // The chain's hasher and keys are read once at startup; a running chain cannot change
    // its key or algorithm in the middle of a segment.
    if old.integrity != new.integrity {
        sections.push("integrity");
    }
    if (
        old.enrich.kubernetes,
        &old.enrich.podinfo_dir,
        old.enrich.refresh_interval,
    ) != (
        new.enrich.kubernetes,
        &new.enrich.podinfo_dir,
        new.enrich.refresh_interval,
    ) {
        sections.push("enrich (kubernetes, podinfo_dir, refresh_interval)");
    }
    sections
}

/// Whether the per-record stages differ (what a reload applies): detectors, the global and
/// per-output type filters, retention.
pub(crate) fn stages_changed(old: &Config, new: &Config) -> bool {
    old.audit != new.audit
        || old.types != new.types
        || old.retention != new.retention
        || old.outputs != new.outputs
            && old.outputs.without_filters() == new.outputs.without_filters()
        || filters_changed(old, new)
        || (
            &old.enrich.cluster,
            &old.enrich.labels,
            &old.enrich.annotations,
        ) != (
            &new.enrich.cluster,
            &new.enrich.labels,
            &new.enrich.annotations,
        )
}

fn filters_changed(old: &Config, new: &Config) -> bool {
    let mut merged = old.outputs.clone();
    merged.set_filters_from(&new.outputs);
    merged != old.outputs
}

/// `current` with the per-record stages of `new`: what runs after a reload (sections that need
/// a restart keep their running values).
pub(crate) fn apply(current: &Config, new: &Config) -> Config {
    let mut next = current.clone();
    next.audit = new.audit.clone();
    next.types = new.types.clone();
    next.retention = new.retention.clone();
    next.outputs.set_filters_from(&new.outputs);
    next.enrich.cluster.clone_from(&new.enrich.cluster);
    next.enrich.labels = new.enrich.labels.clone();
    next.enrich.annotations = new.enrich.annotations.clone();
    next
}

/// Reads and validates the config at `path` for a reload.
pub(crate) fn load(path: &Path) -> Result<Config, ConfigError> {
    Config::load(path, Purpose::Run)
}

/// Sends a message on `tx` whenever the config may have changed: a filesystem event in the
/// config's directory (debounced) or SIGHUP. Runs until `tx` closes.
pub(crate) async fn watch(path: PathBuf, tx: mpsc::Sender<()>) {
    let (event_tx, mut event_rx) = mpsc::channel::<()>(1);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Something opening a file or directory there changes nothing (the checkpoint saver
        // opens its directory to sync it, and that may be a sibling of the config's): no
        // reload for it.
        if !event.as_ref().is_ok_and(crate::source::only_opened) {
            let _ = event_tx.try_send(());
        }
    })
    .and_then(|mut w| {
        w.watch(&dir, notify::RecursiveMode::NonRecursive)
            .map(|()| w)
    });
    let _watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the config directory; reload with SIGHUP");
            None
        }
    };
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP");
            None
        }
    };
    loop {
        tokio::select! {
            Some(()) = event_rx.recv() => {
                // A ConfigMap update is several events (new dir, symlink swap, old dir removed).
                tokio::time::sleep(Duration::from_millis(200)).await;
                while event_rx.try_recv().is_ok() {}
            }
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                tracing::info!("SIGHUP received: reloading the config");
            }
        }
        if tx.send(()).await.is_err() {
            return;
        }
    }
}

/// Applies config changes as they come: validated first, the per-record stages swapped in
/// between two read turns, restart-only changes reported.
async fn apply_changes(mut current: Config, path: PathBuf, targets: Targets) {
    let Targets {
        processor,
        classes,
        metrics,
        enrichment,
    } = targets;
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(watch(path.clone(), tx));
    let reloads = &metrics.process.reloads;
    while rx.recv().await.is_some() {
        let new = match load(&path) {
            Ok(new) => new,
            Err(e) => {
                reloads.with_label_values(&["failure"]).inc();
                tracing::error!(problems = ?e.problems(), "new config refused; the running config stays");
                continue;
            }
        };
        let restart = needs_restart(&current, &new);
        if !stages_changed(&current, &new) && restart.is_empty() {
            continue;
        }
        if !restart.is_empty() {
            tracing::warn!(sections = ?restart, "config changes that need a restart were not applied");
        }
        if stages_changed(&current, &new) {
            let next = apply(&current, &new);
            match Processor::new(next.stages()) {
                Ok(p) => {
                    // The chain goes on with the hasher read at startup (`integrity` needs a
                    // restart).
                    let chain = processor
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .chain()
                        .cloned();
                    let p = Arc::new(p.with_metrics(Arc::clone(&metrics)).with_chain(chain));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        Config::from_yaml(yaml, Purpose::Check).unwrap()
    }

    #[test]
    fn per_output_filters_reload_too() {
        let old = config("outputs: {stdout: {}}");
        let new = config("outputs: {stdout: {types: {exclude: [events.get]}}}");
        assert!(needs_restart(&old, &new).is_empty());
        assert!(stages_changed(&old, &new));
        let applied = apply(&old, &new);
        assert_eq!(applied.outputs, new.outputs);
    }

    #[test]
    fn filters_reload_sources_need_a_restart() {
        let old = config("types: {include: [all]}");
        let filter = config("types: {exclude: [events.get]}");
        assert!(needs_restart(&old, &filter).is_empty());
        assert!(stages_changed(&old, &filter));
        let integrity = config("integrity: {chain: true}");
        assert_eq!(needs_restart(&old, &integrity), vec!["integrity"]);
        assert!(!stages_changed(&old, &integrity));
        let source = config("source: {format: cri}");
        assert_eq!(needs_restart(&old, &source), vec!["source"]);
        assert!(!stages_changed(&old, &source));
    }
}
