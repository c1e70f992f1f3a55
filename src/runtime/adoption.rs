//! What a previous run of the launcher left, and what nobody tracks: recorded processes that
//! still run are adopted (proven ours through a pidfd first), spawns recorded as about to
//! happen are looked for by their instance id and adopted if they happened (the processes of
//! spawns that another of their id supersedes stopped at once), and orphans (our
//! launcher id, no tracked instance) are terminated. Nothing that cannot be proven ours is ever
//! signalled.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::event_loop::Event;
use super::pidfd::Pidfd;
use super::procfs;
use super::signals::{identity_of, Identity};
use super::supervisor::Supervisor;
use crate::error_chain::Chain;
use crate::reconcile::{
    self, ExitStatus, Happened, ObservedRecord, Phase, ProcessId, Settled, Spawned, UnixMillis,
};
use crate::store::StoreError;

/// How long an orphan gets between SIGTERM and SIGKILL.
const ORPHAN_GRACE: Duration = Duration::from_secs(5);

impl Supervisor {
    /// Takes over what a previous run of the launcher left: a recorded process that still runs
    /// and is provably the one recorded (same pid start time, and our launcher id, its process
    /// id and its instance id in its environment, checked through a pidfd so that pid reuse
    /// cannot fool it) is adopted with its ports and counters; `plan` then keeps it, replaces it
    /// or stops it like any other. A recorded process that is gone counts as an exit with an
    /// unknown status. Then the spawns the previous run recorded as about to happen are looked
    /// for (see `adopt_intents`).
    pub fn recover_previous_run(&mut self, now: UnixMillis) -> Result<(), StoreError> {
        let (records, corrupt) = self.store.all_observed()?;
        for error in corrupt {
            tracing::error!(error = %Chain(&error), "skipping a corrupt observed record");
        }
        for record in records {
            self.ports.claim(&record.id, record.ports);
            let id = record.id.clone();
            let live = record.phase.has_live_process();
            let adopted = match record.pid {
                Some(pid) if live => self.open_if_ours(&record, pid).map(|pidfd| (pid, pidfd)),
                _ => None,
            };
            let record = match adopted {
                Some((pid, pidfd)) => {
                    tracing::info!(%id, pid, phase = %record.phase, "adopted a process of a previous launcher run");
                    let record = reconcile::record_adopted(&record, now);
                    self.adopt(&record, pid, pidfd);
                    self.add_events(&id, vec![Happened::Adopted { pid }], now);
                    record
                }
                None if live => {
                    tracing::warn!(%id, pid = ?record.pid, "a process of a previous launcher run is gone");
                    let exited = reconcile::record_exit(
                        &record,
                        ExitStatus::Unknown,
                        &self.config.backoff,
                        self.jitter.sample(),
                        now,
                    );
                    let events = reconcile::observed_events(Some(&record), &exited, now);
                    self.add_events(&id, events, now);
                    exited
                }
                None => record,
            };
            self.unsaved.insert(id.clone());
            self.observed.insert(id, record);
        }
        self.adopt_intents(now)?;
        self.find_leaves();
        self.capacity.recount(self.observed.values());
        self.persist();
        Ok(())
    }

    /// The spawns a previous run recorded as about to happen and never recorded the outcome of
    /// (it crashed in between): a process that carries the intent's instance id, leads its
    /// group and is provably ours is adopted as the spawn's process; an intent whose process
    /// never started (or is gone) is forgotten, and `plan` starts the id as usual. An id's
    /// intents are looked at newest first, and at most one process is adopted for it: none when
    /// its recovered record names a live process or the spawn it records; else the process of its
    /// newest intent that has one. The processes of any other (a spawn that another of its id
    /// supersedes) are terminated at once as orphans (`terminate_orphans`, which checks their
    /// identity again through a pidfd), never a second process for the id. One scan of the
    /// host, at start, and only when there are intents.
    fn adopt_intents(&mut self, now: UnixMillis) -> Result<(), StoreError> {
        let (intents, corrupt) = self.store.spawn_intents()?;
        for error in corrupt {
            tracing::error!(error = %Chain(&error), "skipping a corrupt spawn intent");
        }
        if intents.is_empty() {
            return Ok(());
        }
        let launcher_id = self.config.launcher_id.clone();
        let mut by_instance: HashMap<String, Vec<(u32, Identity)>> = HashMap::new();
        for pid in procfs::all_pids() {
            if let Some(identity) = identity_of(pid, &launcher_id) {
                by_instance
                    .entry(identity.instance.clone())
                    .or_default()
                    .push((pid, identity));
            }
        }
        // The processes a spawn of `id` as `instance` made (it and what it started), found by
        // their environment.
        let processes_of = |instance: &str, id: &ProcessId| -> Vec<(u32, Identity)> {
            by_instance.get(instance).map_or_else(Vec::new, |found| {
                found
                    .iter()
                    .filter(|(_, identity)| identity.process_id == id.as_str())
                    .cloned()
                    .collect()
            })
        };
        // Processes of spawns that another of their id supersedes: stopped now, as orphans
        // (their identity checked again through a pidfd), rather than left beside the id's
        // process until the first orphan scan and its grace.
        let mut superseded: Vec<(u32, Identity)> = Vec::new();
        // The store gives them oldest first: reversed, each id's newest comes first.
        let mut decided: HashSet<ProcessId> = HashSet::new();
        for intent in intents.into_iter().rev() {
            let id = intent.desired.id.clone();
            // Forgotten with the next flush, after the record of whatever is decided here.
            self.settled_intents.push(Settled::Alone(intent.key()));
            let recorded = self
                .observed
                .get(&id)
                .is_some_and(|record| record.instance.as_deref() == Some(intent.instance.as_str()));
            if decided.contains(&id) {
                // The record's own spawn is never superseded, whatever came after it.
                if !recorded {
                    tracing::info!(%id, instance = %intent.instance, "a spawn the previous launcher run began was followed by a later one of the same process, recorded or adopted; its processes, if any, are stopped");
                    superseded.extend(processes_of(&intent.instance, &id));
                }
                continue;
            }
            if recorded {
                // Its outcome was written before the launcher stopped; the record was recovered.
                decided.insert(id);
                continue;
            }
            // The record's own process, of another instance, is alive and adopted.
            let tracked = self
                .observed
                .get(&id)
                .and_then(|record| record.pid)
                .is_some_and(|pid| self.pids.get(&pid) == Some(&id));
            if tracked {
                tracing::info!(%id, instance = %intent.instance, "a spawn the previous launcher run began is not adopted: the process's record names a live process; its processes, if any, are stopped");
                superseded.extend(processes_of(&intent.instance, &id));
                decided.insert(id);
                continue;
            }
            let leader = processes_of(&intent.instance, &id)
                .into_iter()
                .find(|(pid, _)| procfs::process_group(*pid) == Some(*pid));
            let Some((pid, identity)) = leader else {
                tracing::info!(%id, instance = %intent.instance, "a spawn the previous launcher run began did not happen (or its process is gone)");
                continue;
            };
            let Ok(pidfd) = Pidfd::open(pid) else {
                continue;
            };
            if identity_of(pid, &launcher_id).as_ref() != Some(&identity) || pidfd.has_exited() {
                continue;
            }
            let spawned = Spawned {
                pid,
                start_ticks: procfs::start_ticks(pid),
                ports: intent.ports,
                instance: intent.instance.clone(),
            };
            let previous = self.observed.get(&id);
            let record = reconcile::record_adopted(
                &reconcile::record_spawned(&intent.desired, previous, spawned, intent.at),
                now,
            );
            tracing::info!(%id, pid, "adopted a process the previous launcher run started and did not record");
            self.add_events(&id, vec![Happened::Adopted { pid }], now);
            self.ports.claim(&id, intent.ports);
            self.adopt(&record, pid, Arc::new(pidfd));
            self.unsaved.insert(id.clone());
            self.observed.insert(id.clone(), record);
            decided.insert(id);
        }
        self.terminate_orphans(superseded);
        Ok(())
    }

    /// In cgroup mode, the leaves of the adopted processes (each in its id's leaf, when its
    /// `cgroup.procs` lists it), the removal of the leaves a previous run left for ids that
    /// have no record any more, and a kill of what is left in the leaves of known ids whose
    /// process was not adopted in them. Only this launcher's leaves (`reconcile::LeafNames`).
    fn find_leaves(&mut self) {
        let Some(leaves) = &mut self.leaves else {
            return;
        };
        for (pid, id) in &self.pids {
            leaves.adopted(id, *pid);
        }
        leaves.clean_up_at_start(self.observed.keys());
    }

    /// Tracks an adopted process: its exit, its probes, its usage.
    fn adopt(&mut self, record: &ObservedRecord, pid: u32, pidfd: Arc<Pidfd>) {
        self.watch_adopted(pid, pidfd);
        self.pids.insert(pid, record.id.clone());
        self.config.usage.track(&record.id, pid);
        if matches!(record.phase, Phase::Starting | Phase::Running) {
            self.start_probing(&record.id, pid, &record.spec.clone(), record.ports);
        }
    }

    /// A pidfd on `pid` if it is provably the process `record` describes. The pidfd is opened
    /// first and the identity checked after, so that the checks and every later signal concern
    /// one and the same process.
    fn open_if_ours(&self, record: &ObservedRecord, pid: u32) -> Option<Arc<Pidfd>> {
        let pidfd = Pidfd::open(pid).ok()?;
        let expected = Identity::of(&record.id, record.instance.as_deref()?);
        let proven = record.pid_start_ticks.is_some()
            && procfs::start_ticks(pid) == record.pid_start_ticks
            && identity_of(pid, &self.config.launcher_id) == Some(expected)
            && !pidfd.has_exited();
        proven.then(|| Arc::new(pidfd))
    }

    /// Tracks an adopted process: its exit arrives as `Event::AdoptedExited` when its pidfd
    /// becomes readable. (The pidfd was opened on the loop's thread, so the wait runs there.)
    fn watch_adopted(&mut self, pid: u32, pidfd: Arc<Pidfd>) {
        let events = self.events.clone();
        let watched = pidfd.clone();
        tokio::spawn(async move {
            watched.exited().await;
            let _ = events.send(Event::AdoptedExited { pid });
        });
        self.adopted.insert(pid, pidfd);
    }

    /// Starts a scan of the host for processes carrying this launcher's id, on a blocking thread
    /// of the shared runtime (it reads every process's environment); what it finds comes back as
    /// `Event::OrphanScan`. At most one runs at a time.
    pub fn request_orphan_scan(&mut self) {
        if self.orphan_scan_running {
            return;
        }
        self.orphan_scan_running = true;
        let launcher_id = self.config.launcher_id.clone();
        // Our own children are known: their environments need not be read.
        let known: HashSet<u32> = self.pids.keys().copied().collect();
        let events = self.events.clone();
        self.side.spawn_blocking(move || {
            let found: Vec<(u32, Identity)> = procfs::all_pids()
                .into_iter()
                .filter(|pid| !known.contains(pid))
                .filter_map(|pid| Some((pid, identity_of(pid, &launcher_id)?)))
                .collect();
            let _ = events.send(Event::OrphanScan(found));
        });
    }

    /// Terminates what a scan found that belongs to no process the launcher tracks (left by a
    /// crash, by a previous run for ids it no longer runs, or by an adopted process that
    /// exited): SIGTERM, a grace period, SIGKILL, all through pidfds. Checked against the
    /// loop's state now, not at the time of the scan.
    pub(super) fn orphans_found(&mut self, found: Vec<(u32, Identity)>) {
        self.orphan_scan_running = false;
        self.terminate_orphans(found);
    }

    /// Terminates those of `found` that belong to no process the launcher tracks now (see
    /// `orphans_found`), each once.
    fn terminate_orphans(&mut self, found: Vec<(u32, Identity)>) {
        let live: HashSet<(&str, &str)> = self
            .observed
            .values()
            .filter(|record| record.phase.has_live_process())
            .filter_map(|record| Some((record.id.as_str(), record.instance.as_deref()?)))
            .collect();
        let mut orphans = Vec::new();
        {
            let tracked = self.children.lock();
            for (pid, identity) in found {
                let belongs =
                    live.contains(&(identity.process_id.as_str(), identity.instance.as_str()));
                if belongs
                    || tracked.contains_key(&pid)
                    || self.adopted.contains_key(&pid)
                    || self.orphans.contains(&pid)
                {
                    continue;
                }
                orphans.push((pid, identity));
            }
        }
        if orphans.is_empty() {
            return;
        }
        tracing::warn!(
            count = orphans.len(),
            "found orphaned processes of this launcher, cleaning up"
        );
        for (pid, identity) in orphans {
            self.orphans.insert(pid);
            let launcher_id = self.config.launcher_id.clone();
            let events = self.events.clone();
            self.side.spawn(async move {
                terminate_orphan(pid, &launcher_id, &identity).await;
                let _ = events.send(Event::OrphanGone { pid });
            });
        }
    }
}

/// Terminates an orphan through a pidfd, after checking (with the pidfd open, so the check and
/// the signals concern one process) that it still carries the identity it was found with.
async fn terminate_orphan(pid: u32, launcher_id: &str, identity: &Identity) {
    let (launcher_id, wanted) = (launcher_id.to_owned(), identity.clone());
    // Reading its environment is file I/O: not on the async workers.
    let opened = tokio::task::spawn_blocking(move || {
        let pidfd = Pidfd::open(pid).ok()?;
        (identity_of(pid, &launcher_id).as_ref() == Some(&wanted)).then_some(pidfd)
    })
    .await;
    let Ok(Some(pidfd)) = opened else {
        return;
    };
    if let Err(error) = pidfd.send_signal(Signal::SIGTERM) {
        tracing::debug!(pid, %error, "cannot signal an orphan");
        return;
    }
    let exited = tokio::time::timeout(ORPHAN_GRACE, pidfd.exited())
        .await
        .is_ok();
    if !exited {
        let _ = pidfd.send_signal(Signal::SIGKILL);
        pidfd.exited().await;
    }
    tracing::warn!(pid, id = %identity.process_id, killed = !exited, "terminated orphaned process");
}
