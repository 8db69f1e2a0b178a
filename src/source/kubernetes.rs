//! `source.kind: kubernetes`: the application container's log through the Kubernetes API
//! (`pods/log` with `follow=true&timestamps=true`), for clusters that forbid hostPath volumes.
//!
//! Each line arrives as `<RFC3339Nano timestamp> <text>`. A line's position is its timestamp
//! and how many lines before it carried that same timestamp. The checkpoint is the position of
//! the last line before which everything is acknowledged; a restart asks for `sinceTime` (the
//! API takes whole seconds) and skips what the checkpoint covers, so nothing is lost or
//! repeated. The stream ends now and then (API server restart, kubelet rotation): it is opened
//! again with backoff from the last line read, and counted.
//!
//! Limits, compared with the file source (prefer the file source wherever hostPath is
//! allowed): the API serves only the container's current log file, so lines the kubelet
//! rotated away while the stream was down, or lines of a previous container instance, cannot
//! be read again. That is detected (the first line after resuming is in a later second than
//! the checkpoint, so the checkpoint's own line is gone) and counted in
//! `auditrail_source_gaps_total` with a warning, never hidden.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::AsyncReadExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use serde::{Deserialize, Serialize};

use super::framing::Format;
use super::store::{CheckpointError, StateFile};
use super::stream::StreamReader;
use super::{Checkpoint, Context, Quiet, ReadFrom, SourceConfig, SourceError};
use crate::ack::Progress;
use crate::envelope::Record;
use crate::line::{Line, Stats, StreamInfo};

/// A line's place in the container's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Position {
    pub time: DateTime<Utc>,
    /// How many earlier lines carried the same timestamp.
    pub nth: u32,
}

impl Position {
    /// A number that stands for the position in a record id.
    fn id(self) -> u64 {
        let mut bytes = [0u8; 20];
        let nanos = self.time.timestamp_subsec_nanos();
        bytes[..8].copy_from_slice(&self.time.timestamp().to_le_bytes());
        bytes[8..12].copy_from_slice(&nanos.to_le_bytes());
        bytes[12..16].copy_from_slice(&self.nth.to_le_bytes());
        xxhash_rust::xxh3::xxh3_64(&bytes)
    }

    /// The position of the line at `time` that follows `previous`.
    fn next(previous: Option<Position>, time: DateTime<Utc>) -> Position {
        match previous {
            Some(p) if p.time == time => Position {
                time,
                nth: p.nth + 1,
            },
            _ => Position { time, nth: 0 },
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckpointFile {
    version: u32,
    namespace: String,
    pod: String,
    container: String,
    /// The last line before which everything is acknowledged.
    position: Option<Position>,
}

/// The acknowledged position of the log, saved to `kubernetes-<ns>_<pod>_<container>.json`.
#[derive(Debug)]
pub(crate) struct LogCheckpoint {
    file: StateFile,
    key: (String, String, String),
    progress: Arc<Progress>,
    state: Mutex<CheckpointState>,
}

#[derive(Debug, Default)]
struct CheckpointState {
    /// Lines read, in order: (offset in the stream of every connection's bytes, position).
    read: VecDeque<(u64, Position)>,
    /// The last saved position.
    saved: Option<Position>,
}

/// The version of the checkpoint format this build writes and reads.
const VERSION: u32 = 1;

impl LogCheckpoint {
    /// Loads the checkpoint of this container's log, if any.
    pub(crate) fn load(
        dir: &Path,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<Arc<LogCheckpoint>, CheckpointError> {
        let file = StateFile::open(
            dir,
            &format!("kubernetes-{namespace}_{pod}_{container}.json"),
        )?;
        let saved = file
            .load::<CheckpointFile>(VERSION..=VERSION)?
            .and_then(|f| f.position);
        Ok(Arc::new(LogCheckpoint {
            file,
            key: (namespace.into(), pod.into(), container.into()),
            progress: Progress::new(0),
            state: Mutex::new(CheckpointState {
                read: VecDeque::new(),
                saved,
            }),
        }))
    }

    pub(crate) fn saved(&self) -> Option<Position> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).saved
    }

    /// The line at `offset` is at `position`.
    fn read(&self, offset: u64, position: Position) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .read
            .push_back((offset, position));
    }
}

impl Checkpoint for LogCheckpoint {
    /// Writes the acknowledged position.
    fn save(&self) -> Result<(), CheckpointError> {
        let committed = self.progress.committed();
        let position = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            // A line that starts before the committed offset ends at or before it.
            while let Some(&(offset, position)) = s.read.front() {
                if offset >= committed {
                    break;
                }
                s.read.pop_front();
                s.saved = Some(position);
            }
            s.saved
        };
        let (namespace, pod, container) = self.key.clone();
        self.file.save(&CheckpointFile {
            version: VERSION,
            namespace,
            pod,
            container,
            position,
        })
    }

    fn in_flight(&self) -> usize {
        self.progress.in_flight()
    }
}

/// Finds the pod and container to follow, loads the checkpoint and starts following the log
/// as a task.
pub(super) fn start(
    config: &SourceConfig,
    context: Context,
    client: Option<kube::Client>,
) -> Result<(tokio::task::JoinHandle<()>, Arc<LogCheckpoint>), SourceError> {
    let client = client.ok_or(SourceError::NoKubernetes)?;
    let env = |name: &str| std::env::var(name).ok();
    let (namespace, pod) = match (&config.namespace, &config.pod) {
        (Some(ns), Some(pod)) => (ns.clone(), pod.clone()),
        (ns, pod) => {
            let (own_ns, own_pod) =
                crate::enrich::api::own_pod(&client, &env).ok_or(SourceError::NoKubernetes)?;
            (ns.clone().unwrap_or(own_ns), pod.clone().unwrap_or(own_pod))
        }
    };
    let container = config.container.clone().unwrap_or_default();
    let checkpoint = LogCheckpoint::load(&config.checkpoint_dir, &namespace, &pod, &container)?;
    tracing::info!(
        namespace,
        pod,
        container,
        "following the container log through the Kubernetes API"
    );
    let source = KubernetesLogSource {
        config: config.clone(),
        client,
        namespace,
        pod,
        container,
        checkpoint: Arc::clone(&checkpoint),
        context,
    };
    Ok((tokio::spawn(source.run()), checkpoint))
}

/// Follows one container's log; see the module documentation.
struct KubernetesLogSource {
    config: SourceConfig,
    client: kube::Client,
    namespace: String,
    pod: String,
    container: String,
    checkpoint: Arc<LogCheckpoint>,
    context: Context,
}

/// Records per batch sent to the outputs.
const BATCH_RECORDS: usize = 256;

impl KubernetesLogSource {
    /// Follows the log until the service stops and the stream has been quiet for
    /// `drain_quiet` (or the drain's time is up).
    async fn run(mut self) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut local = Stats::default();
        // Where to resume: the checkpoint at first, then the last line read.
        let mut resume = self.checkpoint.saved();
        let mut first_connect = true;
        let mut backoff = Duration::from_millis(500);
        let file = format!("k8s://{}/{}/{}", self.namespace, self.pod, self.container);
        let progress = Arc::clone(&self.checkpoint.progress);
        let info = StreamInfo::new(file.clone(), xxhash_rust::xxh3::xxh3_64(file.as_bytes()));
        // Offsets count every connection's bytes, one after the other, so they only grow.
        let mut base: u64 = 0;
        let mut quiet = Quiet::new(self.config.drain_quiet);

        while !quiet.over(&self.context.stop) {
            let mut params = LogParams {
                container: Some(self.container.clone()),
                follow: true,
                timestamps: true,
                ..LogParams::default()
            };
            match resume {
                // The API takes whole seconds: ask from the second of the resume position and
                // skip what it covers.
                Some(p) => params.since_time = to_jiff(p.time.timestamp()),
                None if first_connect && self.config.read_from == ReadFrom::End => {
                    params.tail_lines = Some(0)
                }
                None => {}
            }
            let stream = match pods.log_stream(&self.pod, &params).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, pod = %self.pod, container = %self.container, "cannot open the log stream; retrying");
                    let telemetry = &mut self.context.telemetry;
                    telemetry.metrics.source.reconnects.inc();
                    telemetry.health.set(
                        "source",
                        vec![format!(
                            "source: cannot open the log of {}/{}: {e}",
                            self.pod, self.container
                        )],
                    );
                    telemetry.publish_counts(&local, &self.context.stats, false);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            self.context.telemetry.health.set("source", Vec::new());
            if !first_connect {
                self.context.telemetry.metrics.source.reconnects.inc();
            }
            first_connect = false;
            let mut stream = std::pin::pin!(stream);
            let mut reader = StreamReader::new(
                Format::Timestamped,
                self.config.max_line_bytes,
                base,
                info.clone(),
                Some(Arc::clone(&progress)),
                self.context.budget.charge(0),
            );
            let mut meta_version = None;
            let mut chunk = vec![0u8; 64 * 1024];
            let mut gate = Gate {
                resume,
                checked_gap: resume.is_none(),
                last: None,
            };
            let mut batch: Vec<Record> = Vec::with_capacity(BATCH_RECORDS);
            loop {
                let n = tokio::select! {
                    n = stream.read(&mut chunk) => n,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {
                        self.context.telemetry.publish_counts(&local, &self.context.stats, false);
                        if quiet.over(&self.context.stop) { break; }
                        continue;
                    }
                };
                let n = match n {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(error = %e, "log stream failed; reconnecting");
                        break;
                    }
                };
                backoff = Duration::from_millis(500);
                quiet.data();
                local.bytes += n as u64;
                let version = self.context.enrichment.version();
                if meta_version != Some(version) {
                    let meta = self
                        .context
                        .enrichment
                        .for_stream(None, Some(&self.container));
                    reader.info.kubernetes = meta.json;
                    reader.info.pod_uid = meta.pod_uid;
                    meta_version = Some(meta.version);
                }
                let processor = self.context.processor();
                let mut slice = &chunk[..n];
                while !slice.is_empty() {
                    if reader.fill(&mut slice).is_err() {
                        break;
                    }
                    reader.process_admitted(&processor, &mut local, &mut batch, |line| {
                        gate.admit(line, &self.checkpoint, &self.context)
                    });
                }
                // Replayed lines (up to the old resume position) must not move it back.
                resume = resume.max(gate.last);
                if !batch.is_empty() {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_RECORDS));
                    if !self.context.send(full).await {
                        return;
                    }
                }
                self.context
                    .telemetry
                    .publish_counts(&local, &self.context.stats, false);
                if quiet.over(&self.context.stop) {
                    break;
                }
            }
            base = reader.position();
            if !quiet.over(&self.context.stop) {
                tracing::info!(pod = %self.pod, container = %self.container, resume = ?resume, "log stream ended; reconnecting");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        self.context
            .telemetry
            .publish_counts(&local, &self.context.stats, true);
    }
}

/// Which lines of a connection are new: those after the resume position. It also gives each
/// line its position and notices a gap after a resume.
struct Gate {
    resume: Option<Position>,
    checked_gap: bool,
    last: Option<Position>,
}

impl Gate {
    fn admit(
        &mut self,
        line: &mut Line<'_>,
        checkpoint: &LogCheckpoint,
        context: &Context,
    ) -> bool {
        // Without a timestamp the line has no position: it is shipped, and its offset still
        // holds the checkpoint until it is confirmed.
        let Some(time) = line.time.and_then(parse_time) else {
            return true;
        };
        let position = Position::next(self.last, time);
        self.last = Some(position);
        // The byte offset of a line depends on where the connection started; its timestamp
        // and rank do not, so a line served again gets the same record id.
        line.id_position = Some(position.id());
        if let Some(r) = self.resume {
            if !self.checked_gap {
                self.checked_gap = true;
                if time.timestamp() > r.time.timestamp() {
                    context.telemetry.metrics.source.gaps.inc();
                    tracing::warn!(
                        checkpoint = %r.time.to_rfc3339_opts(SecondsFormat::Nanos, true),
                        resumed_at = %time.to_rfc3339_opts(SecondsFormat::Nanos, true),
                        "lines between the checkpoint and the first line the API still serves cannot be read again (rotated away or the container restarted)"
                    );
                }
            }
            if position <= r {
                return false; // already handled before
            }
        }
        checkpoint.read(line.offset, position);
        true
    }
}

fn to_jiff(seconds: i64) -> Option<k8s_openapi::jiff::Timestamp> {
    k8s_openapi::jiff::Timestamp::from_second(seconds).ok()
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_by_time_then_by_count() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let a = Position::next(None, t("2026-11-23T12:00:00.5Z"));
        let b = Position::next(Some(a), t("2026-11-23T12:00:00.5Z"));
        let c = Position::next(Some(b), t("2026-11-23T12:00:00.6Z"));
        assert_eq!((a.nth, b.nth, c.nth), (0, 1, 0));
        assert!(a < b && b < c);
    }

    #[test]
    fn timestamps_parse_to_the_nanosecond() {
        let t = parse_time("2026-11-23T12:00:00.123456789Z").unwrap();
        assert_eq!(t.timestamp_subsec_nanos(), 123456789);
        assert_eq!(parse_time("yesterday"), None);
    }
}
