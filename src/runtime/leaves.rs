//! The loop's cgroup leaves in cgroup mode: one per process id, created at its first spawn and
//! reused by its restarts (its limits rewritten only when they changed), the pid that joined
//! it and the OOM count before it did, `cgroup.kill` for a kill and for what a process left
//! behind when it exited, and the leaf's removal when its id is forgotten or the launcher shuts
//! down (retried while its last processes die). The file I/O is `cgroup::CgroupTree`'s; this
//! runs on the loop's own thread, except the spawns' `prepare_leaf`, which runs in their
//! threads.
//!
//! Every process in a leaf of the launcher's subtree is the launcher's: only its children
//! write themselves into one (before their exec), and whatever they start stays there, so
//! `cgroup.kill` of a leaf signals nothing that is not provably ours.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::cgroup::{CgroupTree, LeafRemoval};
use crate::error_chain::Chain;
use crate::reconcile::{leaf_name, stray_leaves, CgroupLimits, ProcessId, Resources};

/// How long the shutdown waits for the processes killed in a leaf to be gone before it leaves
/// the leaf for the next run to remove.
const SHUTDOWN_REMOVAL_WAIT: Duration = Duration::from_secs(2);

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

    /// The limits a spawn of `id` must write to its leaf: `None` when the leaf has them already.
    pub fn limits_to_write(
        &self,
        id: &ProcessId,
        resources: Option<&Resources>,
    ) -> Option<CgroupLimits> {
        let limits = CgroupLimits::of(resources);
        let written = self.by_id.get(id).and_then(|leaf| leaf.written.as_ref());
        (written != Some(&limits)).then_some(limits)
    }

    /// `pid` joined the leaf of `id`.
    pub fn joined(&mut self, id: &ProcessId, pid: u32, joined: JoinedLeaf) {
        // A leaf about to be removed is in use again.
        self.to_remove.remove(&leaf_name(id));
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
        self.remove_or_kill(leaf_name(id));
    }

    /// Removes the leaves that still held processes when they were to be removed, unless the
    /// id they belong to is in use again (`in_use`).
    pub fn retry_removals(&mut self, in_use: impl Fn(&str) -> bool) {
        for name in std::mem::take(&mut self.to_remove) {
            if !in_use(&name) {
                self.remove_or_kill(name);
            }
        }
    }

    /// The leaves left in the subtree by a previous run for ids that have no observed record
    /// (`known`): removed like forgotten ones.
    pub fn remove_strays<'a>(&mut self, known: impl IntoIterator<Item = &'a ProcessId>) {
        let found = match self.tree.leaf_names() {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(error = %Chain(&error), "cannot list the cgroups of the launcher's subtree");
                return;
            }
        };
        for name in stray_leaves(found, known) {
            tracing::info!(leaf = %name, "removing a cgroup a previous launcher run left");
            self.remove_or_kill(name);
        }
    }

    /// At shutdown (processes not kept): every process leaf of the subtree is removed, waiting
    /// a little for the processes killed in them to be gone. What is still busy after that is
    /// left, said so, for the next run (`remove_strays`).
    pub fn remove_all(&mut self) {
        self.by_id.clear();
        let names: BTreeSet<String> = match self.tree.leaf_names() {
            Ok(found) => found.into_iter().collect(),
            Err(error) => {
                tracing::warn!(error = %Chain(&error), "cannot list the cgroups of the launcher's subtree");
                return;
            }
        };
        self.to_remove.extend(names);
        let deadline = Instant::now() + SHUTDOWN_REMOVAL_WAIT;
        loop {
            self.retry_removals(|_| false);
            if self.to_remove.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                break;
            }
            // Killed processes take a moment to exit and leave their cgroup; this runs once,
            // at shutdown, for at most `SHUTDOWN_REMOVAL_WAIT`.
            std::thread::sleep(Duration::from_millis(5));
        }
        for name in &self.to_remove {
            tracing::warn!(leaf = %self.tree.root().join(name).display(), "a cgroup still holds processes at shutdown; the next launcher run removes it");
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

    fn spawn_into(leaves: &mut Leaves, id: &ProcessId, pid: u32, resources: &Resources) {
        let written = leaves.limits_to_write(id, Some(resources));
        let joining = leaves.tree().prepare_leaf(id, written.as_ref()).unwrap();
        leaves.joined(
            id,
            pid,
            JoinedLeaf {
                oom_kills: joining.oom_kills,
                written,
            },
        );
    }

    #[test]
    fn limits_are_written_at_the_first_spawn_and_again_only_when_they_change() {
        let root = tempfile::tempdir().unwrap();
        let mut leaves = leaves_in(root.path());
        let orders = id("orders");
        assert!(leaves
            .limits_to_write(&orders, Some(&limited(500)))
            .is_some());
        spawn_into(&mut leaves, &orders, 100, &limited(500));
        assert_eq!(leaves.limits_to_write(&orders, Some(&limited(500))), None);
        assert_eq!(
            leaves.limits_to_write(&orders, Some(&limited(750))),
            Some(CgroupLimits::of(Some(&limited(750))))
        );
        leaves.spawn_failed(&orders);
        assert!(leaves
            .limits_to_write(&orders, Some(&limited(500)))
            .is_some());
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
        assert_eq!(
            std::fs::read_to_string(leaf.join("cgroup.kill")).unwrap(),
            "1"
        );
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
        assert_eq!(std::fs::read_to_string(&kill_file).unwrap(), "");
        assert!(leaves.kill(&doomed, 100));
        assert_eq!(std::fs::read_to_string(&kill_file).unwrap(), "1");
    }

    #[test]
    fn an_adopted_process_is_in_its_leaf_only_when_its_cgroup_procs_lists_it() {
        let root = tempfile::tempdir().unwrap();
        let mut leaves = leaves_in(root.path());
        let (kept, legacy) = (id("kept"), id("legacy"));
        let leaf = leaves.tree().prepare_leaf(&kept, None).unwrap();
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
        let names = || {
            let mut names = leaves_in_tree(root.path());
            names.sort();
            names
        };
        assert_eq!(names(), ["proc-a", "proc-b", "proc-c"]);
        // Forgotten with nothing left in it: removed at once.
        leaves.forget(&id("a"));
        assert_eq!(names(), ["proc-b", "proc-c"]);

        // Forgotten while a process still lives in it: killed, and removed once it is gone.
        let mut straggler = std::process::Command::new("/bin/sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let b = leaves.tree().leaf(&id("b"));
        std::fs::write(b.join("cgroup.procs"), format!("{}\n", straggler.id())).unwrap();
        leaves.forget(&id("b"));
        let killed = std::fs::read_to_string(b.join("cgroup.kill")).unwrap();
        // The fake does not kill (the kernel would): the test plays its part.
        straggler.kill().unwrap();
        straggler.wait().unwrap();
        assert_eq!(killed, "1");
        assert!(leaves.removals_pending());
        assert_eq!(names(), ["proc-b", "proc-c"]);
        // An id desired again before the retry keeps its leaf.
        leaves.retry_removals(|name| name == "proc-b");
        assert_eq!(names(), ["proc-b", "proc-c"]);
        leaves.to_remove.insert("proc-b".to_string());
        leaves.retry_removals(|_| false);
        assert!(!leaves.removals_pending());
        assert_eq!(names(), ["proc-c"]);

        // A restarted launcher removes what a crashed run left for ids it no longer knows.
        let mut restarted = leaves_in(root.path());
        restarted.tree().prepare_leaf(&id("left"), None).unwrap();
        restarted.remove_strays([&id("c")]);
        assert_eq!(names(), ["proc-c"]);

        // Shutdown removes every leaf, and the launcher's own leaf stays (it lives there).
        restarted.remove_all();
        assert!(names().is_empty());
        assert!(root.path().join("supervisor").is_dir());
    }

    fn leaves_in_tree(root: &Path) -> Vec<String> {
        std::fs::read_dir(root)
            .unwrap()
            .map(|entry| entry.unwrap())
            .filter(|entry| entry.file_type().unwrap().is_dir())
            .map(|entry| entry.file_name().into_string().unwrap())
            .filter(|name| name != "supervisor")
            .collect()
    }
}
