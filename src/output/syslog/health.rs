//! What the syslog output tells `/readyz`: deliveries failing for longer than the stall, or a
//! record the transport refuses holding progress.

use std::time::Duration;

use crate::output::{OutputHealth, STALL};

/// What `/readyz` needs to know about the syslog output.
#[derive(Debug, Default)]
pub(crate) struct SyslogHealth {
    state: std::sync::Mutex<HealthState>,
}

#[derive(Debug, Default)]
pub(super) struct HealthState {
    /// Since when deliveries have been failing, if they are.
    pub(super) failing_since: Option<std::time::Instant>,
    /// A record the transport refuses as too large holds progress.
    pub(super) blocked: bool,
}

impl SyslogHealth {
    pub(super) fn update(&self, f: impl FnOnce(&mut HealthState)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Why the syslog output is not ready (failing for longer than `stall`, or blocked).
    pub(crate) fn reasons(&self, stall: Duration) -> Vec<String> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut reasons = Vec::new();
        if let Some(since) = s.failing_since {
            if since.elapsed() > stall {
                reasons.push(format!(
                    "syslog: deliveries failing for {} s (receiver unreachable?)",
                    since.elapsed().as_secs()
                ));
            }
        }
        if s.blocked {
            reasons.push(
                "syslog: a record too large for the transport holds progress (see the logs)"
                    .to_owned(),
            );
        }
        reasons
    }
}

impl OutputHealth for SyslogHealth {
    fn not_ready(&self) -> Vec<String> {
        self.reasons(STALL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_fails_only_after_failing_for_longer_than_the_stall() {
        let h = SyslogHealth::default();
        assert!(h.reasons(Duration::from_secs(10)).is_empty());
        h.update(|s| {
            s.failing_since = std::time::Instant::now().checked_sub(Duration::from_secs(20))
        });
        assert!(h.reasons(Duration::from_secs(10))[0].contains("failing for"));
        assert!(h.reasons(Duration::from_secs(60)).is_empty());
        h.update(|s| {
            s.failing_since = None;
            s.blocked = true;
        });
        assert!(h.reasons(Duration::from_secs(10))[0].contains("too large"));
    }
}
