//! One memory budget, in bytes, for everything auditrail holds on the way: the readers'
//! buffers, records in batches and channels, records in outputs and in flight (with the copy
//! librdkafka keeps of each).
//!
//! What holds memory holds a [`Charge`] of the budget, released when it is dropped. Charges are
//! never refused (a record that exists is already in memory); instead a source waits for room
//! ([`Budget::room`]) before it sends a batch, so reading stops when the budget is spent and
//! the log file is the buffer. What is held therefore stays under the budget plus one batch per
//! source (a batch is cut at [`BATCH_BYTES`]).
//!
//! The default budget is half the container's memory limit (`memory.budget_bytes`).

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use serde::Deserialize;
use tokio::sync::Notify;

use crate::problem::Problem;

/// A batch is sent once it holds this many bytes of records (or a count of records).
pub const BATCH_BYTES: usize = 1024 * 1024;

/// Bytes a record costs besides its value: its id, type, key, topic and bookkeeping.
pub const RECORD_OVERHEAD: usize = 256;

/// The budget without a memory limit to derive it from.
const DEFAULT_BUDGET: u64 = 64 * 1024 * 1024;
const MIN_BUDGET: u64 = 4 * 1024 * 1024;

/// The `memory` section.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// Bytes auditrail may hold on the way. Default: half the container's memory limit
    /// (`AUDITRAIL_MEMORY_LIMIT`, which the chart sets from `resources.limits.memory` with the
    /// Downward API, or the cgroup's `memory.max`), between 4 MiB and 1 GiB; 64 MiB when there
    /// is no limit.
    pub budget_bytes: Option<u64>,
}

impl MemoryConfig {
    pub fn validate(&self, path: &str, problems: &mut Vec<Problem>) {
        if self.budget_bytes.is_some_and(|b| b < MIN_BUDGET) {
            problems.push(Problem::new(
                format!("{path}.budget_bytes"),
                format!("must be at least {MIN_BUDGET} (4 MiB)"),
            ));
        }
    }

    /// The budget in force, and where it came from (for the start-up log).
    pub fn budget(&self) -> (u64, String) {
        if let Some(b) = self.budget_bytes {
            return (b, "memory.budget_bytes".into());
        }
        let limit = std::env::var("AUDITRAIL_MEMORY_LIMIT")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|l| (l, "AUDITRAIL_MEMORY_LIMIT"))
            .or_else(|| cgroup_limit().map(|l| (l, "the cgroup's memory limit")));
        match limit {
            Some((limit, from)) => (
                (limit / 2).clamp(MIN_BUDGET, 1024 * 1024 * 1024),
                format!("half of {from} ({limit} bytes)"),
            ),
            None => (DEFAULT_BUDGET, "the default (no memory limit found)".into()),
        }
    }
}

/// The memory limit of this container's cgroup (v2 `memory.max`, else v1), if it has one.
fn cgroup_limit() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(Path::new(p)).ok();
    let v2 = read("/sys/fs/cgroup/memory.max").and_then(|s| s.trim().parse::<u64>().ok());
    let v1 = || {
        read("/sys/fs/cgroup/memory/memory.limit_in_bytes")
            .and_then(|s| s.trim().parse::<u64>().ok())
            // v1 says "no limit" with a number near i64::MAX.
            .filter(|&l| l < 1 << 60)
    };
    v2.or_else(v1)
}

/// The budget and what is charged against it.
#[derive(Debug)]
pub struct Budget {
    total: i64,
    used: AtomicI64,
    freed: Notify,
    /// `auditrail_memory_used_bytes`, kept equal to `used`.
    gauge: Option<prometheus::IntGauge>,
}

impl Budget {
    pub fn new(total: u64, gauge: Option<prometheus::IntGauge>) -> Arc<Budget> {
        Arc::new(Budget {
            total: i64::try_from(total).unwrap_or(i64::MAX),
            used: AtomicI64::new(0),
            freed: Notify::new(),
            gauge,
        })
    }

    /// A budget nothing waits on (tests, `check`).
    pub fn unlimited() -> Arc<Budget> {
        Budget::new(u64::MAX >> 1, None)
    }

    /// Charges `bytes`, held until the charge is dropped. Never refused: see [`Budget::room`].
    pub fn charge(self: &Arc<Self>, bytes: usize) -> Charge {
        let mut charge = Charge {
            budget: Some(Arc::clone(self)),
            bytes: 0,
        };
        charge.resize(bytes);
        charge
    }

    /// Bytes charged now.
    pub fn used(&self) -> u64 {
        u64::try_from(self.used.load(Ordering::Relaxed)).unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        u64::try_from(self.total).unwrap_or(0)
    }

    /// Whether a source may send another batch.
    pub fn has_room(&self) -> bool {
        self.used.load(Ordering::Acquire) < self.total
    }

    /// Waits until a source may send another batch.
    pub async fn room(&self) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.has_room() {
                return;
            }
            freed.await;
        }
    }

    fn add(&self, delta: i64) {
        let before = self.used.fetch_add(delta, Ordering::AcqRel);
        if let Some(g) = &self.gauge {
            g.add(delta);
        }
        if delta < 0 && before >= self.total && before + delta < self.total {
            self.freed.notify_waiters();
        }
    }
}

/// Bytes held against a [`Budget`] until dropped.
#[derive(Debug, Default)]
pub struct Charge {
    budget: Option<Arc<Budget>>,
    bytes: usize,
}

impl Charge {
    /// A charge of nothing against no budget.
    pub fn none() -> Charge {
        Charge::default()
    }

    /// Another charge against the same budget (a copy of what this one pays for).
    pub fn another(&self, bytes: usize) -> Charge {
        match &self.budget {
            Some(b) => b.charge(bytes),
            None => Charge::none(),
        }
    }

    /// Holds `bytes` now instead (a buffer that grew or shrank).
    pub fn resize(&mut self, bytes: usize) {
        if let Some(b) = &self.budget {
            let delta = bytes as i64 - self.bytes as i64;
            if delta != 0 {
                b.add(delta);
            }
        }
        self.bytes = bytes;
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.resize(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_released_when_dropped_and_copies_count() {
        let budget = Budget::new(1000, None);
        let a = budget.charge(600);
        let b = a.another(300);
        assert_eq!(budget.used(), 900);
        assert!(budget.has_room());
        let mut c = budget.charge(200);
        assert!(!budget.has_room(), "over the budget: sources wait");
        c.resize(50);
        assert_eq!(budget.used(), 950);
        drop((a, b, c));
        assert_eq!(budget.used(), 0);
        assert_eq!(Charge::none().another(10).bytes(), 0);
    }

    #[tokio::test]
    async fn a_source_waits_for_room_until_a_charge_is_released() {
        let budget = Budget::new(100, None);
        let held = budget.charge(150);
        let waiter = tokio::spawn({
            let budget = Arc::clone(&budget);
            async move { budget.room().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "no room yet");
        drop(held);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken when room was made")
            .expect("the waiter ran");
    }

    #[test]
    fn an_explicit_budget_wins_and_a_tiny_one_is_refused() {
        let c = MemoryConfig {
            budget_bytes: Some(32 << 20),
        };
        assert_eq!(c.budget().0, 32 << 20);
        let mut p = Vec::new();
        MemoryConfig {
            budget_bytes: Some(1024),
        }
        .validate("memory", &mut p);
        assert_eq!(p.len(), 1);
    }
}
