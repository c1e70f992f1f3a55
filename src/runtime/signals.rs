//! The signalling rules: nothing is signalled that is not provably ours at the moment of the
//! signal, and nothing on the way costs a scan of the host.
//!
//! - A process group is signalled while its leader is one of our unreaped children, checked
//!   under the child table's lock (the reaper takes the same lock before it reaps), so the group
//!   id cannot have been reused; an adopted leader (not our child) is signalled through its
//!   pidfd, and its group only while it lives.
//! - Descendants that left the group (setsid daemons, double forks) are found without a host
//!   scan: while the leader lives, by walking its subtree (`/proc/<pid>/task/*/children`); once
//!   it died, among the launcher's own children, since the launcher is a child subreaper and
//!   they were reparented to it. Each is signalled through a pidfd opened first and proven ours
//!   after (this launcher's id, the process id and the instance in its environment, still
//!   alive), so a pid reused in between can never receive the signal.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::pidfd::Pidfd;
use super::procfs;
use super::reaper::ChildTable;
use crate::reconcile::{ProcessId, INSTANCE_ID_ENV, LAUNCHER_ID_ENV, PROBE_OF_ENV, PROCESS_ID_ENV};

/// Most processes looked at in one subtree walk, so that a fork bomb cannot stall the loop.
const MAX_SUBTREE: usize = 4096;

/// One process of ours as its environment names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub process_id: String,
    pub instance: String,
}

impl Identity {
    /// What the process `id` started as `instance` (and its descendants) carries.
    pub fn of(id: &ProcessId, instance: &str) -> Identity {
        Identity {
            process_id: id.to_string(),
            instance: instance.to_string(),
        }
    }
}

/// Signals the process group led by `leader`: our unreaped child (checked under the table's
/// lock), or an adopted process (through its pidfd, and its group while it lives).
pub fn signal_group(
    children: &ChildTable,
    adopted: &HashMap<u32, Arc<Pidfd>>,
    leader: u32,
    signal: Signal,
) {
    let Ok(raw) = i32::try_from(leader) else {
        return;
    };
    if let Some(pidfd) = adopted.get(&leader) {
        if let Err(error) = pidfd.send_signal(signal) {
            tracing::debug!(pid = leader, %error, "cannot signal an adopted process");
        }
        if !pidfd.has_exited() {
            // Alive, so its pid (and so its group id) cannot have been reused.
            let _ = killpg(Pid::from_raw(raw), signal);
        }
        return;
    }
    let tracked = children.lock();
    if !tracked.contains_key(&leader) {
        return;
    }
    match killpg(Pid::from_raw(raw), signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(error) => {
            tracing::warn!(pid = leader, %signal, %error, "cannot signal the process group")
        }
    }
}

/// The live descendants of the group leader `leader` that left its process group, found by
/// walking its subtree (O(its size), bounded by `MAX_SUBTREE`).
pub fn escaped_descendants(leader: u32) -> Vec<u32> {
    subtree(leader)
        .into_iter()
        .filter(|pid| procfs::process_group(*pid) != Some(leader))
        .collect()
}

/// Every live descendant of `root` (not `root` itself), breadth first.
pub fn subtree(root: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut seen = HashSet::from([root]);
    let mut next = vec![root];
    while let Some(parent) = next.pop() {
        for child in procfs::children(parent) {
            if found.len() >= MAX_SUBTREE {
                tracing::warn!(
                    root,
                    "more than {MAX_SUBTREE} descendants; the rest are left to the orphan scan"
                );
                return found;
            }
            if seen.insert(child) {
                found.push(child);
                next.push(child);
            }
        }
    }
    found
}

/// Signals `pid` through a pidfd if it is provably a process of `launcher_id` that carries
/// `identity` (opened first, checked after, and still alive). Returns whether it was signalled.
pub fn signal_if_ours(pid: u32, launcher_id: &str, identity: &Identity, signal: Signal) -> bool {
    let Ok(pidfd) = Pidfd::open(pid) else {
        return false;
    };
    if identity_of(pid, launcher_id).as_ref() != Some(identity) || pidfd.has_exited() {
        return false;
    }
    match pidfd.send_signal(signal) {
        Ok(()) => true,
        Err(error) => {
            tracing::debug!(pid, %error, "cannot signal a descendant");
            false
        }
    }
}

/// The identity a process of `launcher_id` carries in its environment; `None` for anything
/// else (another launcher's, a stranger, a process that is gone).
pub fn identity_of(pid: u32, launcher_id: &str) -> Option<Identity> {
    let environment = procfs::environment(pid)?;
    let value = |name: &str| {
        environment
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let launchers = value(LAUNCHER_ID_ENV);
    let probe_of = value(PROBE_OF_ENV);
    if launchers.as_deref() != Some(launcher_id) {
        // An exec probe of ours (left by a crashed launcher, or running now: the caller tells
        // them apart by the child table): an identity no process instance ever has.
        return (probe_of.as_deref() == Some(launcher_id)).then(|| Identity {
            process_id: value(PROCESS_ID_ENV).unwrap_or_default(),
            instance: String::new(),
        });
    }
    // A process with this launcher's id is ours even without the other two (it is then an
    // orphan by definition: no tracked instance matches an empty one).
    Some(Identity {
        process_id: value(PROCESS_ID_ENV).unwrap_or_default(),
        instance: value(INSTANCE_ID_ENV).unwrap_or_default(),
    })
}

/// Signals the descendants of the live leader `leader` that left its group and carry
/// `identity` (a stop's SIGTERM, a kill's SIGKILL). O(the leader's subtree).
pub fn signal_escaped(leader: u32, launcher_id: &str, identity: &Identity, signal: Signal) {
    for pid in escaped_descendants(leader) {
        if signal_if_ours(pid, launcher_id, identity, signal) {
            tracing::warn!(id = %identity.process_id, pid, %signal, "signalled a descendant that left the process group");
        }
    }
}

/// The launcher's own children that it did not start (descendants reparented to it when their
/// parent died), with the identity they carry. O(the launcher's children), never the host.
pub fn reparented_children(children: &ChildTable, launcher_id: &str) -> Vec<(u32, Identity)> {
    let own = procfs::own_children();
    let untracked: Vec<u32> = {
        let tracked = children.lock();
        own.into_iter()
            .filter(|pid| !tracked.contains_key(pid))
            .collect()
    };
    untracked
        .into_iter()
        .filter_map(|pid| Some((pid, identity_of(pid, launcher_id)?)))
        .collect()
}

/// SIGKILLs the descendants of instances that ended (`ended`), which the launcher inherited as
/// children when their leader died, together with whatever they started. Returns the pids
/// killed.
pub fn kill_inherited(
    children: &ChildTable,
    launcher_id: &str,
    ended: &HashSet<Identity>,
) -> Vec<u32> {
    let mut killed = Vec::new();
    if ended.is_empty() {
        return killed;
    }
    for (pid, identity) in reparented_children(children, launcher_id) {
        if !ended.contains(&identity) {
            continue;
        }
        // Its own descendants first: once it dies they would be reparented and go unseen
        // until the next sweep.
        for descendant in subtree(pid) {
            if signal_if_ours(descendant, launcher_id, &identity, Signal::SIGKILL) {
                killed.push(descendant);
            }
        }
        if signal_if_ours(pid, launcher_id, &identity, Signal::SIGKILL) {
            tracing::warn!(id = %identity.process_id, pid, "killed a descendant that outlived its process");
            killed.push(pid);
        }
    }
    killed
}
