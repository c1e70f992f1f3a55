//! The latest memory and CPU use of every live process: written by the runtime, read by the
//! admin heartbeat. Plain shared data, so that neither needs the other.

use std::collections::BTreeMap;

use crate::reconcile::ProcessId;

/// What a process uses, as last sampled by the runtime.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ResourceUsage {
    pub memory_bytes: u64,
    /// Of one CPU, over the last sampling interval.
    pub cpu_percent: f32,
}

/// The latest usage of every live process: written by the runtime, read by the admin
/// heartbeat. Plain shared data, so that neither needs the other.
#[derive(Debug, Clone, Default)]
pub struct UsageBoard {
    usage: std::sync::Arc<std::sync::Mutex<BTreeMap<ProcessId, ResourceUsage>>>,
}

impl UsageBoard {
    /// Replaces the whole board with a new sample.
    pub fn publish(&self, sample: BTreeMap<ProcessId, ResourceUsage>) {
        *self.lock() = sample;
    }

    pub fn get(&self, id: &ProcessId) -> Option<ResourceUsage> {
        self.lock().get(id).copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ProcessId, ResourceUsage>> {
        // Replaced whole under the lock, so a poisoned board is still a consistent sample.
        self.usage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
