//! What a source reports while it reads: its counts as metrics (published as deltas at most
//! once a second, so the hot path only counts in a local struct), the liveness heartbeat, and
//! readiness.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::line::Stats;
use crate::metrics::{Health, Metrics};

/// How often metrics and readiness are brought up to date.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// What the tailer reports: metrics (as deltas of its counts), liveness and readiness.
pub(crate) struct Telemetry {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// Readiness fails above this many bytes not yet read and acknowledged.
    pub max_backlog_bytes: u64,
    published: Stats,
    last_publish: Option<Instant>,
}

impl Telemetry {
    pub(crate) fn new(
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        max_backlog_bytes: u64,
    ) -> Telemetry {
        Telemetry {
            metrics,
            health,
            max_backlog_bytes,
            published: Stats::default(),
            last_publish: None,
        }
    }
}

impl Telemetry {
    /// When counts not yet published are due (a quiet loop must still wake for them), if
    /// there are any.
    pub(crate) fn publish_due(&self, local: &Stats) -> Option<Instant> {
        if *local == self.published {
            return None;
        }
        Some(
            self.last_publish
                .map_or_else(Instant::now, |at| at + PUBLISH_EVERY),
        )
    }

    /// Beats the liveness heartbeat and, at most once a second unless `now`, copies `local`
    /// into `shared` and adds what it counted since the last time to the metrics. Returns
    /// whether it published (the caller then updates its own gauges).
    pub(crate) fn publish_counts(
        &mut self,
        local: &Stats,
        shared: &Mutex<Stats>,
        now: bool,
    ) -> bool {
        self.health.beat();
        if !now
            && self
                .last_publish
                .is_some_and(|at| at.elapsed() < PUBLISH_EVERY)
        {
            return false;
        }
        self.last_publish = Some(Instant::now());
        *shared.lock().unwrap_or_else(|e| e.into_inner()) = *local;
        let (s, p) = (local, &self.published);
        let src = &self.metrics.source;
        src.lines
            .with_label_values(&["stdout"])
            .inc_by(s.stdout - p.stdout);
        src.lines
            .with_label_values(&["stderr"])
            .inc_by(s.stderr - p.stderr);
        let other = |x: &Stats| x.lines - x.stdout - x.stderr;
        src.lines
            .with_label_values(&["none"])
            .inc_by(other(s) - other(p));
        src.bytes.inc_by(s.bytes - p.bytes);
        src.rotations.inc_by(s.rotations - p.rotations);
        src.truncations.inc_by(s.truncations - p.truncations);
        src.partial_chunks.inc_by(s.partials - p.partials);
        src.malformed.inc_by(s.malformed - p.malformed);
        src.incomplete.inc_by(s.incomplete - p.incomplete);
        let rec = &self.metrics.records;
        rec.ordinary.inc_by(s.ordinary - p.ordinary);
        rec.oversize.inc_by(s.oversize - p.oversize);
        rec.invalid
            .with_label_values(&["invalid_utf8"])
            .inc_by(s.invalid_utf8 - p.invalid_utf8);
        let json = |x: &Stats| x.invalid - x.invalid_utf8;
        rec.invalid
            .with_label_values(&["invalid_json"])
            .inc_by(json(s) - json(p));
        self.published = *local;
        true
    }
}
