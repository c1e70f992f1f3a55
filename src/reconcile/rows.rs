//! The read side of the domain: desired and observed records joined by id, and the one
//! projection of a process's lifecycle into the words clients see (PatternLauncher's state,
//! prism-admin's heartbeat status, the metrics `state` label, `status`).

use std::collections::BTreeMap;

use super::model::{
    DesiredRecord, ObservedRecord, Phase, ProcessId, ProcessSpec, SourcesRead, UnixMillis,
};
use super::plan::{diff, diff_under, Diff};

/// The desired and observed records of one id; at least one is present (the fields are private
/// so that only `new` and `join`, which check it, build a row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRow {
    id: ProcessId,
    desired: Option<DesiredRecord>,
    observed: Option<ObservedRecord>,
}

impl ProcessRow {
    pub fn id(&self) -> &ProcessId {
        &self.id
    }

    /// Neither desired nor running any more: what is left is a record the loop forgets at its
    /// next flush, which answers to no one as a process.
    pub fn is_gone(&self) -> bool {
        self.desired.is_none()
            && self
                .observed
                .as_ref()
                .is_none_or(|observed| !observed.phase.has_live_process())
    }

    pub fn desired(&self) -> Option<&DesiredRecord> {
        self.desired.as_ref()
    }

    pub fn observed(&self) -> Option<&ObservedRecord> {
        self.observed.as_ref()
    }

    /// The desired spec, else the one that runs (or ran).
    pub fn spec(&self) -> &ProcessSpec {
        match (&self.desired, &self.observed) {
            (Some(desired), _) => &desired.spec,
            (None, Some(observed)) => &observed.spec,
            // The constructors refuse a row without a record, and the fields are private.
            (None, None) => unreachable!("a process row holds at least one record"),
        }
    }

    /// A row from the records of one id; `None` when both are missing.
    pub fn new(
        id: ProcessId,
        desired: Option<DesiredRecord>,
        observed: Option<ObservedRecord>,
    ) -> Option<ProcessRow> {
        (desired.is_some() || observed.is_some()).then_some(ProcessRow {
            id,
            desired,
            observed,
        })
    }

    /// Where the process is, in the words clients see.
    pub fn state(&self) -> ClientState {
        client_state(self.desired.as_ref(), self.observed.as_ref())
    }

    /// Whether an operator holds the process stopped (`prism-launcher stop`).
    pub fn is_held(&self) -> bool {
        self.desired.as_ref().is_some_and(|desired| desired.held)
    }

    /// How desired and actual differ at `now`, for `status`.
    pub fn diff(&self, now: UnixMillis) -> Diff {
        diff(self.desired.as_ref(), self.observed.as_ref(), now)
    }

    /// `diff`, with what the loop knows of the sources (a suspended prism-admin's processes
    /// are kept down on purpose).
    pub fn diff_under(&self, now: UnixMillis, read: SourcesRead) -> Diff {
        diff_under(self.desired.as_ref(), self.observed.as_ref(), now, read)
    }

    /// The phase word `status` shows as the actual state: the observed phase, or `pending`
    /// before anything was observed.
    pub fn actual(&self) -> &'static str {
        self.observed
            .as_ref()
            .map_or(Phase::Pending, |observed| observed.phase)
            .as_str()
    }

    /// Whether a live process is ready: running and healthy (or without a health check).
    pub fn is_healthy(&self) -> bool {
        self.observed.as_ref().is_some_and(ObservedRecord::is_ready)
    }
}

/// Joins desired and observed records by id, in id order.
pub fn join(desired: Vec<DesiredRecord>, observed: Vec<ObservedRecord>) -> Vec<ProcessRow> {
    type Pair = (Option<DesiredRecord>, Option<ObservedRecord>);
    let mut pairs: BTreeMap<ProcessId, Pair> = BTreeMap::new();
    for record in desired {
        let id = record.id.clone();
        pairs.entry(id).or_default().0 = Some(record);
    }
    for record in observed {
        let id = record.id.clone();
        pairs.entry(id).or_default().1 = Some(record);
    }
    pairs
        .into_iter()
        .filter_map(|(id, (desired, observed))| ProcessRow::new(id, desired, observed))
        .collect()
}

/// Where a process is in its life, as every client is told: the one projection of `Phase`
/// (and of whether the process is still desired).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientState {
    /// Desired and about to start (not started yet, waiting for a slot, or stopped to be
    /// replaced).
    Pending,
    /// Started, not ready yet.
    Starting,
    Running,
    Stopping,
    /// Crashed and backing off, tripped, or exited with a failure and kept down.
    Failed,
    /// Exited successfully and kept down by its restart policy.
    Exited,
    /// Stopped and no longer desired.
    Stopped,
}

/// The projection itself; see `ClientState`. A process an operator holds is `Stopped` once
/// nothing of it runs, whatever its last phase: it is down because someone asked, not
/// failing and not about to start.
pub fn client_state(
    desired: Option<&DesiredRecord>,
    observed: Option<&ObservedRecord>,
) -> ClientState {
    let held = desired.is_some_and(|desired| desired.held);
    let desired = desired.is_some();
    let Some(observed) = observed else {
        return if desired && !held {
            ClientState::Pending
        } else {
            ClientState::Stopped
        };
    };
    if held && !observed.phase.has_live_process() {
        return ClientState::Stopped;
    }
    match observed.phase {
        Phase::Pending => ClientState::Pending,
        Phase::Starting => ClientState::Starting,
        Phase::Running => ClientState::Running,
        Phase::Stopping => ClientState::Stopping,
        Phase::BackingOff | Phase::Tripped => ClientState::Failed,
        Phase::Exited => match observed.last_exit {
            Some(status) if observed.spec.is_success(status) => ClientState::Exited,
            _ => ClientState::Failed,
        },
        Phase::Stopped if desired => ClientState::Pending,
        Phase::Stopped => ClientState::Stopped,
    }
}

impl ClientState {
    /// The `state` label of `pattern_launcher_processes_total`.
    pub fn metric_label(self) -> &'static str {
        self.as_str()
    }

    /// prism-admin's heartbeat status words: running, starting, stopping, failed, stopped.
    pub fn heartbeat_status(self) -> &'static str {
        match self {
            ClientState::Pending | ClientState::Starting => "starting",
            ClientState::Running => "running",
            ClientState::Stopping => "stopping",
            ClientState::Failed => "failed",
            ClientState::Exited | ClientState::Stopped => "stopped",
        }
    }
}
