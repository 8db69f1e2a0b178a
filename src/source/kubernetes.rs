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
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::AsyncReadExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{LineReader, ReadFrom, SourceConfig, SourceError, Telemetry};
use crate::ack::Progress;
use crate::enrich::Enrichment;
use crate::envelope::Record;
use crate::line::{Framed, Line, Stats, StreamInfo};
use crate::pipeline::SharedProcessor;

/// A line's place in the container's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    pub time: DateTime<Utc>,
    /// How many earlier lines carried the same timestamp.
    pub nth: u32,
}

impl Position {
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
pub struct LogCheckpoint {
    path: PathBuf,
    key: (String, String, String),
    progress: Arc<Progress>,
    state: Mutex<CheckpointState>,
}

#[derive(Debug, Default)]
struct CheckpointState {
    /// Lines read, in order: (sequence number, position).
    read: VecDeque<(u64, Position)>,
    /// The last saved position.
    saved: Option<Position>,
}

impl LogCheckpoint {
    /// Loads the checkpoint of this container's log, if any.
    pub fn load(
        dir: &Path,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<Arc<LogCheckpoint>, SourceError> {
        std::fs::create_dir_all(dir).map_err(|source| SourceError::Checkpoint {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(format!("kubernetes-{namespace}_{pod}_{container}.json"));
        let saved = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<CheckpointFile>(&bytes) {
                Ok(f) if f.version == 1 => f.position,
                _ => {
                    tracing::warn!(path = %path.display(), "unreadable checkpoint; following the log from its start");
                    None
                }
            },
            Err(_) => None,
        };
        Ok(Arc::new(LogCheckpoint {
            path,
            key: (namespace.into(), pod.into(), container.into()),
            progress: Progress::new(0),
            state: Mutex::new(CheckpointState {
                read: VecDeque::new(),
                saved,
            }),
        }))
    }

    pub fn saved(&self) -> Option<Position> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).saved
    }

    /// Writes the acknowledged position (temporary file, fsync, rename).
    pub fn save(&self) -> Result<(), SourceError> {
        let committed = self.progress.committed();
        let position = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            while s.read.front().is_some_and(|(seq, _)| *seq < committed) {
                let (_, position) = s.read.pop_front().unwrap_or((
                    0,
                    Position {
                        time: DateTime::UNIX_EPOCH,
                        nth: 0,
                    },
                ));
                s.saved = Some(position);
            }
            s.saved
        };
        let (namespace, pod, container) = self.key.clone();
        let body = serde_json::to_vec_pretty(&CheckpointFile {
            version: 1,
            namespace,
            pod,
            container,
            position,
        })
        .map_err(|e| self.error(std::io::Error::other(e)))?;
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| self.error(e))
    }

    fn error(&self, source: std::io::Error) -> SourceError {
        SourceError::Checkpoint {
            path: self.path.clone(),
            source,
        }
    }

    fn read(&self, seq: u64, position: Position) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .read
            .push_back((seq, position));
    }
}

/// Follows one container's log; see the module documentation.
pub struct KubernetesLogSource {
    pub config: SourceConfig,
    pub client: kube::Client,
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub processor: SharedProcessor,
    pub checkpoint: Arc<LogCheckpoint>,
    pub out: mpsc::Sender<Vec<Record>>,
    pub stop: Arc<AtomicBool>,
    pub stats: Arc<Mutex<Stats>>,
    pub telemetry: Telemetry,
    pub enrichment: Arc<Enrichment>,
}

/// Records per batch sent to the outputs.
const BATCH_RECORDS: usize = 256;

impl KubernetesLogSource {
    /// Follows the log until `stop` is set.
    pub async fn run(mut self) -> Result<(), SourceError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut local = Stats::default();
        let mut seq: u64 = 0;
        // Where to resume: the checkpoint at first, then the last line read.
        let mut resume = self.checkpoint.saved();
        let mut first_connect = true;
        let mut backoff = Duration::from_millis(500);
        let file = format!("k8s://{}/{}/{}", self.namespace, self.pod, self.container);
        let progress = Arc::clone(&self.checkpoint.progress);
        let mut meta_version = None;
        let mut stream_info =
            StreamInfo::new(file.clone(), xxhash_rust::xxh3::xxh3_64(file.as_bytes()));

        while !self.stop.load(Ordering::Relaxed) {
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
            let reader = match pods.log_stream(&self.pod, &params).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, pod = %self.pod, container = %self.container, "cannot open the log stream; retrying");
                    self.telemetry.metrics.source.reconnects.inc();
                    self.telemetry.health.set(
                        "source",
                        vec![format!(
                            "source: cannot open the log of {}/{}: {e}",
                            self.pod, self.container
                        )],
                    );
                    self.telemetry.publish_counts(&local, &self.stats, false);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            self.telemetry.health.set("source", Vec::new());
            if !first_connect {
                self.telemetry.metrics.source.reconnects.inc();
            }
            first_connect = false;
            let mut reader = std::pin::pin!(reader);
            let mut lines = LineReader::new(super::Format::Raw, self.config.max_line_bytes, 0);
            let mut chunk = vec![0u8; 64 * 1024];
            let mut checked_gap = resume.is_none();
            let mut last: Option<Position> = None;
            let mut batch: Vec<Record> = Vec::with_capacity(BATCH_RECORDS);
            loop {
                let n = tokio::select! {
                    n = reader.read(&mut chunk) => n,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {
                        self.telemetry.publish_counts(&local, &self.stats, false);
                        if self.stop.load(Ordering::Relaxed) { break; }
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
                local.bytes += n as u64;
                let version = self.enrichment.version();
                if meta_version != Some(version) {
                    let meta = self.enrichment.for_stream(None, Some(&self.container));
                    stream_info.kubernetes = meta.json;
                    stream_info.pod_uid = meta.pod_uid;
                    meta_version = Some(meta.version);
                }
                let processor =
                    Arc::clone(&self.processor.read().unwrap_or_else(|e| e.into_inner()));
                let mut slice = &chunk[..n];
                while !slice.is_empty() {
                    if lines.fill(&mut slice).is_err() {
                        break;
                    }
                    lines.drain(|framed, _| {
                        let Framed::Line(line) = framed else {
                            // Oversize: counted, and its position is unknown (no timestamp read).
                            processor.process(framed, &stream_info, &mut local, |_, _| crate::ack::Ack::none());
                            return;
                        };
                        let Some((time_text, text)) = split_timestamp(line.text) else {
                            local.malformed += 1;
                            let raw = Framed::Line(line);
                            if let Some(r) = processor.process(raw, &stream_info, &mut local, |_, _| crate::ack::Ack::none()) {
                                // No position to checkpoint: ship it, but it cannot hold the checkpoint.
                                batch.push(r);
                            }
                            return;
                        };
                        let Some(time) = parse_time(time_text) else {
                            local.malformed += 1;
                            return;
                        };
                        let position = Position::next(last, time);
                        last = Some(position);
                        if let Some(r) = resume {
                            if !checked_gap {
                                checked_gap = true;
                                if time.timestamp() > r.time.timestamp() {
                                    self.telemetry.metrics.source.gaps.inc();
                                    tracing::warn!(
                                        checkpoint = %r.time.to_rfc3339_opts(SecondsFormat::Nanos, true),
                                        resumed_at = %time.to_rfc3339_opts(SecondsFormat::Nanos, true),
                                        "lines between the checkpoint and the first line the API still serves cannot be read again (rotated away or the container restarted)"
                                    );
                                }
                            }
                            if position <= r {
                                return; // already handled before
                            }
                        }
                        let this = seq;
                        seq += 1;
                        self.checkpoint.read(this, position);
                        let line = Line {
                            text,
                            stream: None,
                            time: std::str::from_utf8(time_text).ok(),
                            offset: this,
                        };
                        if let Some(record) = processor.process(Framed::Line(line), &stream_info, &mut local, |_, outputs| {
                            progress.register(this, outputs)
                        }) {
                            batch.push(record);
                        }
                        progress.set_read(seq, None);
                    });
                }
                // Replayed lines (up to the old resume position) must not move it back.
                resume = resume.max(last);
                if !batch.is_empty() {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH_RECORDS));
                    if !self.send(full).await {
                        return Ok(());
                    }
                }
                self.telemetry.publish_counts(&local, &self.stats, false);
                if self.stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            if !self.stop.load(Ordering::Relaxed) {
                tracing::info!(pod = %self.pod, container = %self.container, resume = ?resume, "log stream ended; reconnecting");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        self.telemetry.publish_counts(&local, &self.stats, true);
        Ok(())
    }

    /// Sends a batch, waiting while the outputs are busy (backpressure); false when stopping.
    async fn send(&self, batch: Vec<Record>) -> bool {
        loop {
            self.telemetry.health.beat();
            match tokio::time::timeout(Duration::from_millis(200), self.out.reserve()).await {
                Ok(Ok(permit)) => {
                    permit.send(batch);
                    return true;
                }
                Ok(Err(_)) => return false,
                Err(_) if self.stop.load(Ordering::Relaxed) => return false,
                Err(_) => {}
            }
        }
    }
}

fn to_jiff(seconds: i64) -> Option<k8s_openapi::jiff::Timestamp> {
    k8s_openapi::jiff::Timestamp::from_second(seconds).ok()
}

/// Splits `<timestamp> <text>`.
fn split_timestamp(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = memchr::memchr(b' ', line)?;
    Some((&line[..space], &line[space + 1..]))
}

fn parse_time(text: &[u8]) -> Option<DateTime<Utc>> {
    let text = std::str::from_utf8(text).ok()?;
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
    fn lines_split_into_timestamp_and_text() {
        let (ts, text) = split_timestamp(b"2026-11-23T12:00:00.123456789Z {\"a\": 1}").unwrap();
        assert_eq!(parse_time(ts).unwrap().timestamp_subsec_nanos(), 123456789);
        assert_eq!(text, b"{\"a\": 1}");
    }
}
