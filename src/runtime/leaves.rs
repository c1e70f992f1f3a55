//! The loop's cgroup leaves in cgroup mode: one per process id, created at its first spawn and
//! reused by its restarts (its limits rewritten when they changed or the leaf is new), the pid
//! that joined it and the OOM count before it did, `cgroup.kill` for a kill and for what a
//! process left behind when it exited, and the leaf's removal when its id is forgotten or the
//! launcher shuts down (retried while its last processes die). The file I/O is
//! `cgroup::CgroupTree`'s; this runs on the loop's own thread, except the spawns'
//! `prepare_leaf`, which runs in their threads.
//!
//! Only this launcher's leaves are ever touched: their names carry its id
//! (`reconcile::LeafNames`), and the subtree is locked to one launcher at a time. What lives in
//! one of them was started by this launcher's children, which write themselves into it before
//! their exec: their descendants stay there unless they move themselves out (they run as the
//! launcher's user, who may write to the leaf's files; see ARCHITECTURE.md). So `cgroup.kill`
//! of a leaf signals the process tree the launcher started there, and never another
//! launcher's.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use super::cgroup::{CgroupTree, LeafRemoval};
use crate::error_chain::Chain;
use crate::reconcile::{CgroupLimits, ProcessId, Resources};

/// How long the shutdown waits for the processes killed in a leaf to be gone before it leaves
/// the leaf for the next run to remove.
const SHUTDOWN_REMOVAL_WAIT: Duration = Duration::from_secs(2);

/// The limits a spawn of an id gets for its leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafLimits {
    pub limits: CgroupLimits,
    /// The leaf has them already (written by the last spawn of the id): they are written again
    /// only if the leaf has to be created (`CgroupTree::prepare_leaf`).
    pub unchanged: bool,
}

/// What a spawn did to its leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedLeaf {
    /// The leaf's OOM kill count before the child ran.
    pub oom_kills: u64,
    /// The limits the spawn wrote, if it wrote any.
    pub written: Option<CgroupLimits>,
}

/// What the exit of a process in its leaf found there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafExit {
    /// The leaf's OOM kill count rose while the process ran.
    pub oom_killed: bool,
    /// What the process left in its leaf was killed (`cgroup.kill`).
    pub rest_killed: bool,
}

/// The leaves of the launcher's subtree, as the loop knows them.
#[derive(Debug)]
pub struct Leaves {
    tree: CgroupTree,
    by_id: HashMap<ProcessId, Leaf>,
    /// Leaves of forgotten ids that still held processes (killed, dying): removed later.
    to_remove: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct Leaf {
    /// The limits last written, so that a restart with the same spec writes none.
    written: Option<CgroupLimits>,
    /// The process that joined the leaf and the leaf's OOM kill count before it ran.
    member: Option<(u32, u64)>,
}

impl Leaves {
    pub fn new(tree: CgroupTree) -> Leaves {
        Leaves {
            tree,
            by_id: HashMap::new(),
            to_remove: BTreeSet::new(),
        }
    }

    #[cfg(test)]
    pub fn tree(&self) -> &CgroupTree {
        &self.tree
    }

    /// The limits a spawn of `id` gets for its leaf, and whether the leaf has them already.
    pub fn leaf_limits(&self, id: &ProcessId, resources: Option<&Resources>) -> LeafLimits {
        let limits = CgroupLimits::of(resources);
        let written = self.by_id.get(id).and_then(|leaf| leaf.written.as_ref());
        LeafLimits {
            unchanged: written == Some(&limits),
            limits,
        }
    }

    /// `pid` joined the leaf of `id`.
    pub fn joined(&mut self, id: &ProcessId, pid: u32, joined: JoinedLeaf) {
        // A leaf about to be removed is in use again.
        self.to_remove.remove(&self.tree.names().name(id));
        let leaf = self.by_id.entry(id.clone()).or_default();
        if joined.written.is_some() {
            leaf.written = joined.written;
        }
        leaf.member = Some((pid, joined.oom_kills));
    }

    /// A spawn of `id` failed after it may have written some of its limits: the next writes
    /// them all.
    pub fn spawn_failed(&mut self, id: &ProcessId) {
        if let Some(leaf) = self.by_id.get_mut(id) {
            leaf.written = None;
        }
    }

    /// A process adopted from a previous run: in `id`'s leaf when its `cgroup.procs` lists it
    /// (a process the previous run started in rlimit mode is not, and is then stopped with
    /// signals alone). Its OOM count is taken from now, the start of what this run watches.
    pub fn adopted(&mut self, id: &ProcessId, pid: u32) {
        match self.tree.holds(id, pid) {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(%id, pid, "an adopted process is not in its cgroup; it is stopped with signals alone");
                return;
            }
            Err(error) => {
                tracing::warn!(%id, pid, error = %Chain(&error), "cannot tell whether an adopted process is in its cgroup; it is stopped with signals alone");
                return;
            }
        }
        let oom_kills = self.tree.oom_kills(id).unwrap_or_else(|error| {
            tracing::warn!(%id, error = %Chain(&error), "cannot read the OOM count of an adopted process's cgroup");
            u64::MAX
        });
        tracing::info!(%id, pid, leaf = %self.tree.leaf(id).display(), "found the cgroup of an adopted process");
        self.by_id.entry(id.clone()).or_default().member = Some((pid, oom_kills));
    }

    /// The process `pid` of `id` exited: whether the OOM killer took part (its leaf's count
    /// rose), and `cgroup.kill` for whatever it left in the leaf (descendants that left its
    /// process group), before anything else of `id` can join. `None` when `pid` never joined
    /// the leaf.
    pub fn exited(&mut self, id: &ProcessId, pid: u32) -> Option<LeafExit> {
        let leaf = self.by_id.get_mut(id)?;
        let (member, before) = leaf.member?;
        if member != pid {
            return None;
        }
        leaf.member = None;
        let oom_killed = match self.tree.oom_kills(id) {
            Ok(now) => now > before,
            Err(error) => {
                tracing::warn!(%id, pid, error = %Chain(&error), "cannot read the OOM count of the process's cgroup");
                false
            }
        };
        let rest_killed = match self.tree.kill(id) {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%id, pid, error = %Chain(&error), "cannot kill what the process left in its cgroup; its descendants are looked for instead");
                false
            }
        };
        Some(LeafExit {
            oom_killed,
            rest_killed,
        })
    }

    /// SIGKILLs the whole tree of `id`'s live process `pid` through its leaf. False when `pid`
    /// is not in the leaf or the kill failed: the caller signals instead.
    pub fn kill(&self, id: &ProcessId, pid: u32) -> bool {
        let in_leaf = self
            .by_id
            .get(id)
            .and_then(|leaf| leaf.member)
            .is_some_and(|(member, _)| member == pid);
        if !in_leaf {
            return false;
        }
        match self.tree.kill(id) {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%id, pid, error = %Chain(&error), "cannot kill through the cgroup; signalling instead");
                false
            }
        }
    }

    /// `id` is forgotten: its leaf is removed, or, while processes still live in it, killed
    /// and removed later (`retry_removals`).
    pub fn forget(&mut self, id: &ProcessId) {
        self.by_id.remove(id);
        let name = self.tree.names().name(id);
        self.remove_or_kill(name);
    }

    /// Removes the leaves that still held processes when they were to be removed (killing what
    /// is still in them again), unless the id they belong to is in use again (`in_use`).
    pub fn retry_removals(&mut self, in_use: impl Fn(&ProcessId) -> bool) {
        for name in std::mem::take(&mut self.to_remove) {
            let id = self.tree.names().id_of(&name);
            if !id.is_some_and(|id| in_use(&id)) {
                self.remove_or_kill(name);
            }
        }
    }

    /// At start, after adoption: this launcher's leaves that a previous run left for ids that
    /// have no observed record (`known`) are removed like forgotten ones; and a known id's leaf
    /// whose process was not adopted in it but that still holds processes (descendants that
    /// outlived the process, say while the launcher was down) has them killed, before the id
    /// starts again, so that its new process does not share its memory limit and OOM count
    /// with them.
    pub fn clean_up_at_start<'a>(&mut self, known: impl IntoIterator<Item = &'a ProcessId>) {
        let found = match self.tree.leaf_names() {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(error = %Chain(&error), "cannot list the cgroups of the launcher's subtree");
                return;
            }
        };
        let known: HashSet<&ProcessId> = known.into_iter().collect();
        let strays = self
            .tree
            .names()
            .strays(found.iter().cloned(), known.iter().copied());
        for name in found {
            let Some(id) = self.tree.names().id_of(&name) else {
                continue;
            };
            let adopted = self
                .by_id
                .get(&id)
                .is_some_and(|leaf| leaf.member.is_some());
            if !known.contains(&id) || adopted {
                continue;
            }
            match self.tree.populated(&name) {
                Ok(false) => {}
                Ok(true) => match self.tree.kill_leaf(&name) {
                    Ok(()) => {
                        tracing::info!(%id, leaf = %name, "killed what a previous run's process left in its cgroup")
                    }
                    Err(error) => {
                        tracing::warn!(%id, error = %Chain(&error), "cannot kill what a previous run's process left in its cgroup")
                    }
                },
                Err(error) => {
                    tracing::warn!(%id, error = %Chain(&error), "cannot tell whether a previous run's process left anything in its cgroup")
                }
            }
        }
        for name in strays {
            tracing::info!(leaf = %name, "removing a cgroup a previous launcher run left");
            self.remove_or_kill(name);
        }
    }

    /// At shutdown (processes not kept): every one of this launcher's leaves is removed,
    /// waiting a little for the processes killed in them (once) to be gone. What is still busy
    /// after that is left, said so, for the next run (`clean_up_at_start`).
    pub fn remove_all(&mut self) {
        self.by_id.clear();
        let names: BTreeSet<String> = match self.tree.leaf_names() {
            Ok(found) => found.into_iter().collect(),
            Err(error) => {
                tracing::warn!(error = %Chain(&error), "cannot list the cgroups of the launcher's subtree");
                return;
            }
        };
        for name in names {
            self.remove_or_kill(name);
        }
        let deadline = Instant::now() + SHUTDOWN_REMOVAL_WAIT;
        while !self.to_remove.is_empty() && Instant::now() < deadline {
            // Killed processes take a moment to exit and leave their cgroup; this runs once,
            // at shutdown, for at most `SHUTDOWN_REMOVAL_WAIT`. They were killed once: only
            // the removal is tried again.
            std::thread::sleep(Duration::from_millis(5));
            let tree = &self.tree;
            self.to_remove.retain(|name| match tree.remove_leaf(name) {
                Ok(LeafRemoval::Removed | LeafRemoval::Absent) => false,
                Ok(LeafRemoval::Busy) | Err(_) => true,
            });
        }
        for name in &self.to_remove {
            tracing::warn!(leaf = %self.tree.root().join(name).display(), "a cgroup still holds processes (or cannot be removed) at shutdown; the next launcher run removes it");
        }
    }

    /// Whether leaves wait to be removed.
    pub fn removals_pending(&self) -> bool {
        !self.to_remove.is_empty()
    }

    fn remove_or_kill(&mut self, name: String) {
        match self.tree.remove_leaf(&name) {
            Ok(LeafRemoval::Removed | LeafRemoval::Absent) => {}
            Ok(LeafRemoval::Busy) => {
                // What is left is what the id's processes started and left behind.
                if let Err(error) = self.tree.kill_leaf(&name) {
                    tracing::warn!(error = %Chain(&error), "cannot kill what is left in a cgroup to remove");
                }
                self.to_remove.insert(name);
            }
            Err(error) => {
                tracing::warn!(error = %Chain(&error), "cannot remove a cgroup; retried later");
                self.to_remove.insert(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::runtime::cgroup::fake;

    fn id(text: &str) -> ProcessId {
        ProcessId::new(text).unwrap()
    }

    fn limited(millis: u32) -> Resources {
        Resources {
            cpu_millis: Some(millis),
            memory_bytes: Some(64 << 20),
        }
    }

    fn leaves_in(root: &Path) -> Leaves {
        Leaves::new(fake::delegated_tree(root, "cpu memory pids").unwrap())
    }

    /// What the executor does for a spawn of `id` as `pid`.
    fn spawn_into(leaves: &mut Leaves, id: &ProcessId, pid: u32, resources: &Resources) {
        let leaf = leaves.leaf_limits(id, Some(resources));
        let joining = leaves
            .tree()
            .prepare_leaf(id, &leaf.limits, leaf.unchanged)
            .unwrap();
        leaves.joined(
            id,
            pid,
            JoinedLeaf {
                oom_kills: joining.oom_kills,
                written: joining.wrote_limits.then_some(leaf.limits),
            },
        );
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn limits_are_written_at_the_first_spawn_and_again_when_they_change_or_the_leaf_is_new() {
        let root = tempfile::tempdir().unwrap();
        let mut leaves = leaves_in(root.path());
        let orders = id("orders");
        assert!(!leaves.leaf_limits(&orders, Some(&limited(500))).unchanged);
        spawn_into(&mut leaves, &orders, 100, &limited(500));
        assert!(leaves.leaf_limits(&orders, Some(&limited(500))).unchanged);
        assert_eq!(
            leaves.leaf_limits(&orders, Some(&limited(750))),
            LeafLimits {
                limits: CgroupLimits::of(Some(&limited(750))),
                unchanged: false
            }
        );
        leaves.spawn_failed(&orders);
        assert!(!leaves.leaf_limits(&orders, Some(&limited(500))).unchanged);
        spawn_into(&mut leaves, &orders, 101, &limited(500));

        // The leaf removed behind the launcher's back (by hand, by another tool): the next
        // spawn creates it again with every limit, though the launcher wrote them before.
        let leaf = leaves.tree().leaf(&orders);
        std::fs::remove_dir_all(&leaf).unwrap();
        assert!(leaves.leaf_limits(&orders, Some(&limited(500))).unchanged);
        spawn_into(&mut leaves, &orders, 102, &limited(500));
        assert_eq!(read(&leaf.join("memory.max")), (64u64 << 20).to_string());
        assert_eq!(read(&leaf.join("cpu.max")), "50000 100000");
        assert!(leaves.leaf_limits(&orders, Some(&limited(500))).unchanged);
    }

    #[test]
    fn an_exit_reads_the_oom_count_and_kills_what_is_left_in_the_leaf() {
        let root = tempfile::tempdir().unwrap();
        let mut leaves = leaves_in(root.path());
        let hog = id("hog");
        spawn_into(&mut leaves, &hog, 100, &limited(500));
        let leaf = leaves.tree().leaf(&hog);
        assert_eq!(leaves.exited(&hog, 99), None, "another pid");
        std::fs::write(leaf.join("memory.events"), "oom 1\noom_kill 1\n").unwrap();
        assert_eq!(
            leaves.exited(&hog, 100),
            Some(LeafExit {
                oom_killed: true,
                rest_killed: true
            })
        );
        assert_eq!(read(&leaf.join("cgroup.kill")), "1");
        assert_eq!(leaves.exited(&hog, 100), None, "counted once");
        // The next process starts from the count it found.
        std::fs::write(leaf.join("cgroup.kill"), "").unwrap();
        spawn_into(&mut leaves, &hog, 101, &limited(500));
        assert_eq!(
            leaves.exited(&hog, 101),
            Some(LeafExit {
                oom_killed: false,
                rest_killed: true
            })
        );
    }

    #[test]
    fn a_kill_goes_through_the_leaf_only_for_the_pid_in_it() {
        let root = tempfile::tempdir().unwrap();
        let mut leaves = leaves_in(root.path());
        let doomed = id("doomed");
        assert!(!leaves.kill(&doomed, 100), "no leaf");
        spawn_into(&mut leaves, &doomed, 100, &limited(500));
        let kill_file = leaves.tree().leaf(&doomed).join("cgroup.kill");
        assert!(!leaves.kill(&doomed, 101), "another pid");
        assert_eq!(read(&kill_file), "");
        assert!(leaves.kill(&doomed, 100));
        assert_eq!(read(&kill_file), "1");
    }

    #[test]
    fn an_adopted_process_is_in_its_leaf_only_when_its_cgroup_procs_lists_it() {
        let root = tempfile::tempdir().unwrap();
        let mut leaves = leaves_in(root.path());
        let (kept, legacy) = (id("kept"), id("legacy"));
        let leaf = leaves
            .tree()
            .prepare_leaf(&kept, &CgroupLimits::of(None), false)
            .unwrap();
        std::fs::write(leaf.path.join("cgroup.procs"), "4242\n").unwrap();
        std::fs::write(leaf.path.join("memory.events"), "oom_kill 3\n").unwrap();
        leaves.adopted(&kept, 4242);
        leaves.adopted(&legacy, 4343);
        assert!(leaves.kill(&kept, 4242));
        assert!(
            !leaves.kill(&legacy, 4343),
            "started in rlimit mode: signals"
        );
        // Counted from the adoption: the kills before it were another process's.
        std::fs::write(leaf.path.join("memory.events"), "oom_kill 4\n").unwrap();
        assert_eq!(
            leaves.exited(&kept, 4242).map(|exit| exit.oom_killed),
            Some(true)
        );
    }

    #[test]
    fn no_leaf_outlives_its_id_or_the_launcher() {
        let root = tempfile::tempdir().unwrap();
        let mut leaves = leaves_in(root.path());
        for (name, pid) in [("a", 100), ("b", 101), ("c", 102)] {
            spawn_into(&mut leaves, &id(name), pid, &limited(500));
        }
        let names = || leaves_in_tree(root.path());
        assert_eq!(
            names(),
            [
                "proc-launcher-unit_a",
                "proc-launcher-unit_b",
                "proc-launcher-unit_c"
            ]
        );
        // Forgotten with nothing left in it: removed at once.
        leaves.forget(&id("a"));
        assert_eq!(names(), ["proc-launcher-unit_b", "proc-launcher-unit_c"]);

        // Forgotten while a process still lives in it: killed, and removed once it is gone.
        let mut straggler = fake::Sleeper::start();
        let b = leaves.tree().leaf(&id("b"));
        std::fs::write(b.join("cgroup.procs"), format!("{}\n", straggler.pid())).unwrap();
        leaves.forget(&id("b"));
        let killed = read(&b.join("cgroup.kill"));
        // The fake does not kill (the kernel would): the test plays its part.
        straggler.stop();
        assert_eq!(killed, "1");
        assert!(leaves.removals_pending());
        assert_eq!(names(), ["proc-launcher-unit_b", "proc-launcher-unit_c"]);
        // An id desired again before the retry keeps its leaf.
        leaves.retry_removals(|id| id.as_str() == "b");
        assert_eq!(names(), ["proc-launcher-unit_b", "proc-launcher-unit_c"]);
        assert!(!leaves.removals_pending(), "in use: no longer to remove");
        // Forgotten again, it goes.
        leaves.to_remove.insert("proc-launcher-unit_b".to_string());
        leaves.retry_removals(|_| false);
        assert!(!leaves.removals_pending());
        assert_eq!(names(), ["proc-launcher-unit_c"]);

        // A restarted launcher removes what a crashed run left for ids it no longer knows.
        drop(leaves);
        let mut restarted = leaves_in(root.path());
        restarted
            .tree()
            .prepare_leaf(&id("left"), &CgroupLimits::of(None), false)
            .unwrap();
        restarted.clean_up_at_start([&id("c")]);
        assert_eq!(names(), ["proc-launcher-unit_c"]);

        // Shutdown removes every leaf, and the launcher's own leaf stays (it lives there).
        restarted.remove_all();
        assert!(names().is_empty());
        assert!(root.path().join("supervisor").is_dir());
    }

    #[test]
    fn another_launchers_leaves_are_never_touched() {
        // A launcher with another data directory (another id) ran in the same subtree and kept
        // its processes; this one starts there after it (the lock keeps two from running there
        // at once), knows none of its ids, and shuts down.
        let root = tempfile::tempdir().unwrap();
        let mut theirs = fake::Sleeper::start();
        {
            let other =
                fake::delegated_tree_of(root.path(), "cpu memory", "launcher-other").unwrap();
            let leaf = other
                .prepare_leaf(&id("shared"), &CgroupLimits::of(None), false)
                .unwrap();
            std::fs::write(
                leaf.path.join("cgroup.procs"),
                format!("{}\n", theirs.pid()),
            )
            .unwrap();
        }
        let mut leaves = leaves_in(root.path());
        // The same id in this launcher: its own leaf.
        spawn_into(&mut leaves, &id("shared"), 100, &limited(500));
        leaves.clean_up_at_start([&id("shared")]);
        assert_eq!(
            leaves
                .exited(&id("shared"), 100)
                .map(|exit| exit.rest_killed),
            Some(true)
        );
        leaves.forget(&id("shared"));
        leaves.remove_all();
        let theirs_leaf = root.path().join("proc-launcher-other_shared");
        assert_eq!(leaves_in_tree(root.path()), ["proc-launcher-other_shared"]);
        assert_eq!(read(&theirs_leaf.join("cgroup.kill")), "", "never killed");
        assert_eq!(
            read(&theirs_leaf.join("cgroup.procs")),
            format!("{}\n", theirs.pid())
        );
        theirs.stop();
    }

    #[test]
    fn what_a_known_ids_unadopted_process_left_in_its_leaf_is_killed_at_start() {
        let root = tempfile::tempdir().unwrap();
        let mut escaped = fake::Sleeper::start();
        {
            let mut first = leaves_in(root.path());
            for (name, pid) in [("kept", 100), ("crashed", 101), ("empty", 102)] {
                spawn_into(&mut first, &id(name), pid, &limited(500));
            }
        }
        let leaf = |name: &str| root.path().join(format!("proc-launcher-unit_{name}"));
        // `kept` is adopted (its process is in its leaf); `crashed`'s process died while the
        // launcher was down, but a descendant of it still lives in its leaf; `empty`'s leaf
        // holds nothing.
        std::fs::write(leaf("kept").join("cgroup.procs"), "4242\n").unwrap();
        std::fs::write(
            leaf("crashed").join("cgroup.procs"),
            format!("{}\n", escaped.pid()),
        )
        .unwrap();
        let mut restarted = leaves_in(root.path());
        restarted.adopted(&id("kept"), 4242);
        restarted.clean_up_at_start([&id("kept"), &id("crashed"), &id("empty")]);
        assert_eq!(read(&leaf("crashed").join("cgroup.kill")), "1");
        assert_eq!(
            read(&leaf("kept").join("cgroup.kill")),
            "",
            "adopted: left alone"
        );
        assert_eq!(
            read(&leaf("empty").join("cgroup.kill")),
            "",
            "nothing to kill"
        );
        // Known ids keep their leaves for their next spawn.
        assert_eq!(leaves_in_tree(root.path()).len(), 3);
        escaped.stop();
    }

    #[test]
    fn the_shutdown_kills_a_busy_leaf_once_and_then_only_retries_its_removal() {
        let root = tempfile::tempdir().unwrap();
        let mut leaves = leaves_in(root.path());
        spawn_into(&mut leaves, &id("busy"), 100, &limited(500));
        let leaf = leaves.tree().leaf(&id("busy"));
        let mut child = fake::Sleeper::start();
        std::fs::write(leaf.join("cgroup.procs"), format!("{}\n", child.pid())).unwrap();
        // The fake does not kill: the leaf stays busy through the whole wait, and a rewrite of
        // cgroup.kill after the first would show in the file (the test empties it after the
        // first write from another thread: none may follow).
        let kill_file = leaf.join("cgroup.kill");
        let watcher = {
            let kill_file = kill_file.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(1);
                while Instant::now() < deadline {
                    if read(&kill_file) == "1" {
                        std::fs::write(&kill_file, "").unwrap();
                        return true;
                    }
                    std::thread::yield_now();
                }
                false
            })
        };
        leaves.remove_all();
        assert!(watcher.join().unwrap(), "killed once");
        assert_eq!(read(&kill_file), "", "and not again");
        assert!(leaf.is_dir(), "left for the next run");
        child.stop();
    }

    /// The leaves in the tree at `root` (every cgroup but the launcher's own), sorted.
    fn leaves_in_tree(root: &Path) -> Vec<String> {
        let mut names = super::super::cgroup::fake::directories(root);
        names.retain(|name| name != "supervisor");
        names
    }
}
