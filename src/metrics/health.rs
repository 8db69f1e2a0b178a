//! What `/healthz` and `/readyz` report: the reading loop's heartbeat (liveness) and every
//! part's reasons not to be ready (readiness). The source and the checkpoint saver set their
//! reasons as they change; the outputs are asked for theirs ([`Health::ask`]) each time
//! readiness is asked for, so that no timer has to keep them up to date while nobody asks
//! (issue 16).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What `/healthz` and `/readyz` report; updated by the parts of the service.
#[derive(Default)]
pub(crate) struct Health {
    /// Unix seconds of the reading loop's last turn.
    pub heartbeat: AtomicI64,
    state: Mutex<HealthState>,
}

/// Asked for a part's reasons not to be ready; empty when it is.
type Probe = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

#[derive(Default, Clone)]
struct HealthState {
    /// Reasons, keyed by the part that reports them; empty when that part is ready.
    reasons: HashMap<&'static str, Vec<String>>,
    /// The parts asked for their reasons when readiness is asked for, by part.
    probes: HashMap<&'static str, Probe>,
}

impl Health {
    pub(crate) fn new() -> Arc<Health> {
        let h = Health::default();
        h.beat();
        Arc::new(h)
    }

    /// The reading loop is alive.
    pub(crate) fn beat(&self) {
        self.beat_until(Duration::ZERO);
    }

    /// The reading loop is alive and waits for at most `wait` before it turns again (for a
    /// filesystem event, or its fallback timer): it is not stalled before that.
    pub(crate) fn beat_until(&self, wait: Duration) {
        let ahead = i64::try_from(wait.as_secs()).unwrap_or(i64::MAX / 2)
            + i64::from(wait.subsec_nanos() > 0);
        self.heartbeat.store(
            chrono::Utc::now().timestamp().saturating_add(ahead),
            Ordering::Relaxed,
        );
    }

    /// Sets the readiness problems of one part (`source`, `kafka`, `backlog`); empty = ready.
    pub(crate) fn set(&self, part: &'static str, reasons: Vec<String>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.reasons.insert(part, reasons);
    }

    /// From now on, `probe` is asked for the reasons of `part` (an output) whenever readiness
    /// is asked for. It must not ask `Health` itself.
    pub(crate) fn ask(
        &self,
        part: &'static str,
        probe: impl Fn() -> Vec<String> + Send + Sync + 'static,
    ) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.probes.insert(part, Arc::new(probe));
    }

    /// `Ok` when ready, else every reason: those set, and those the probes give now.
    pub(crate) fn readiness(&self) -> Result<(), Vec<String>> {
        let (mut reasons, probes) = {
            let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let reasons: Vec<String> = s.reasons.values().flatten().cloned().collect();
            let probes: Vec<Probe> = s.probes.values().cloned().collect();
            (reasons, probes)
        };
        // Asked outside the lock: a probe takes its part's own locks.
        reasons.extend(probes.iter().flat_map(|probe| probe()));
        reasons.sort();
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }

    /// `Ok` while the reading loop turned within `stall` (counted from the end of the wait it
    /// announced, see [`Health::beat_until`]).
    pub(crate) fn liveness(&self, stall: Duration) -> Result<(), String> {
        let age = chrono::Utc::now().timestamp() - self.heartbeat.load(Ordering::Relaxed);
        if age > stall.as_secs() as i64 {
            Err(format!("the reading loop has not turned for {age} s"))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reading loop that sleeps until its files change (issue 16) announces how long: it is
    /// not stalled before that, however short `stall` is; after it, it is.
    #[test]
    fn a_loop_asleep_for_as_long_as_it_announced_is_alive() {
        let h = Health::new();
        h.beat_until(Duration::from_secs(30));
        assert!(h.liveness(Duration::from_secs(1)).is_ok());
        h.heartbeat
            .store(chrono::Utc::now().timestamp() - 5, Ordering::Relaxed);
        assert!(h.liveness(Duration::from_secs(1)).is_err());
    }

    #[test]
    fn readiness_lists_every_reason() {
        let h = Health::new();
        assert!(h.readiness().is_ok());
        h.set("kafka", vec!["broker unreachable".into()]);
        h.set("backlog", vec!["backlog too large".into()]);
        assert_eq!(h.readiness().unwrap_err().len(), 2);
        h.set("kafka", vec![]);
        assert_eq!(
            h.readiness().unwrap_err(),
            vec!["backlog too large".to_string()]
        );
        assert!(h.liveness(Duration::from_secs(60)).is_ok());
    }

    /// Issue 16: an output's readiness is what its probe says when readiness is asked for,
    /// with no tick in between to bring it up to date.
    #[test]
    fn readiness_asks_the_probes_each_time() {
        use std::sync::atomic::AtomicBool;
        let h = Health::new();
        let down = Arc::new(AtomicBool::new(false));
        let probe = Arc::clone(&down);
        h.ask("kafka", move || {
            if probe.load(Ordering::Relaxed) {
                vec!["kafka: no broker reachable".into()]
            } else {
                Vec::new()
            }
        });
        h.set("backlog", Vec::new());
        assert!(h.readiness().is_ok());
        down.store(true, Ordering::Relaxed);
        assert_eq!(
            h.readiness().unwrap_err(),
            vec!["kafka: no broker reachable".to_string()]
        );
        h.set("backlog", vec!["backlog too large".into()]);
        assert_eq!(h.readiness().unwrap_err().len(), 2);
        down.store(false, Ordering::Relaxed);
        assert_eq!(
            h.readiness().unwrap_err(),
            vec!["backlog too large".to_string()]
        );
    }
}
