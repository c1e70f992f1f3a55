//! How a process's declared resource limits are enforced on this host, decided once here for
//! spawn, status, metrics and the start-up log: the host gives a limit mode (cgroup v2 when a
//! subtree is delegated to the launcher, else rlimits), and each limit of a spec is enforced by
//! it or not at all. In cgroup mode, the values written to each process's cgroup and the name
//! of that cgroup are decided here too.

use super::model::{ExitStatus, ProcessId, Resources};

/// The period of `cpu.max`, in microseconds: the kernel's default (100 ms).
pub const CPU_MAX_PERIOD_MICROS: u64 = 100_000;

/// The smallest quota the kernel accepts in `cpu.max` (1 ms); a smaller one is refused with
/// `EINVAL`, so a tiny limit is raised to it rather than make every spawn fail.
pub const CPU_MAX_MIN_QUOTA_MICROS: u64 = 1_000;

/// What every process's cgroup is named after: `proc-<launcher tag>_<id>` (see `LeafNames`).
/// The prefix keeps the name apart from the kernel's interface files (`cgroup.*`, `memory.*`,
/// `cpu.*`...: a controller name and a dot) and from the launcher's own leaf (`LAUNCHER_LEAF`).
pub const LEAF_PREFIX: &str = "proc-";

/// Ends the launcher's tag in a leaf's name. A tag never contains it (see `LeafNames`), so a
/// launcher whose tag is a prefix of another's (`launcher-a`, `launcher-a-b`) never takes the
/// other's leaves for its own.
pub const LEAF_TAG_END: char = '_';

/// The longest launcher id used as it is in leaf names; a longer one (or one with other
/// characters than ASCII letters, digits and `-`) is hashed. With the prefix, the separator and
/// the longest process id (`MAX_PROCESS_ID_LEN`), a leaf's name stays under `NAME_MAX` (255).
pub const MAX_LAUNCHER_TAG_LEN: usize = 40;

/// The leaf of the launcher's subtree that the launcher itself lives in, so that the subtree's
/// root holds no process and may give its children controllers (cgroup v2's "no internal
/// processes" rule); systemd's `DelegateSubgroup=supervisor` puts it there already.
pub const LAUNCHER_LEAF: &str = "supervisor";

/// What the host lets the launcher enforce limits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitMode {
    /// A cgroup v2 subtree delegated to the launcher, with the memory and cpu controllers.
    CgroupV2,
    /// No usable cgroup v2 delegation: memory through `RLIMIT_DATA` set in the child before its
    /// program starts; CPU cannot be limited by an rlimit.
    Rlimit,
}

/// How one limit is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Enforcement {
    /// By the process's own cgroup (`memory.max`, `cpu.max`).
    Cgroup,
    /// By a resource limit of the process (`RLIMIT_DATA` for memory).
    Rlimit,
    /// Not enforced: no limit declared, or none the host can enforce (CPU without cgroups).
    None,
}

/// How the limits of one process are enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitEnforcement {
    pub memory: Enforcement,
    pub cpu: Enforcement,
}

impl LimitEnforcement {
    /// How `resources` are enforced under `mode`.
    ///
    /// Memory falls back to `RLIMIT_DATA` rather than `RLIMIT_AS`: `RLIMIT_DATA` counts the
    /// private writable memory a process uses (heap and anonymous mappings, since Linux 4.7),
    /// while `RLIMIT_AS` counts address space, which runtimes reserve far beyond what they use
    /// (Go's arenas, the JVM's heap reservation, thread stacks) and would fail under a tight
    /// limit they never come near in memory.
    pub fn of(resources: Option<&Resources>, mode: LimitMode) -> LimitEnforcement {
        let memory = resources.and_then(|resources| resources.memory_bytes);
        let cpu = resources.and_then(|resources| resources.cpu_millis);
        LimitEnforcement {
            memory: match (memory, mode) {
                (None, _) => Enforcement::None,
                (Some(_), LimitMode::CgroupV2) => Enforcement::Cgroup,
                (Some(_), LimitMode::Rlimit) => Enforcement::Rlimit,
            },
            cpu: match (cpu, mode) {
                (None, _) | (Some(_), LimitMode::Rlimit) => Enforcement::None,
                (Some(_), LimitMode::CgroupV2) => Enforcement::Cgroup,
            },
        }
    }

    /// The memory limit to set as `RLIMIT_DATA` in the child, if that is how it is enforced.
    pub fn data_rlimit(resources: Option<&Resources>, mode: LimitMode) -> Option<u64> {
        match LimitEnforcement::of(resources, mode).memory {
            Enforcement::Rlimit => resources.and_then(|resources| resources.memory_bytes),
            Enforcement::Cgroup | Enforcement::None => None,
        }
    }
}

/// The values a process's cgroup gets before the process joins it, one per interface file.
/// Every file is written whether the spec limits it or not (`max` when it does not), because a
/// leaf outlives a process: the next spec of the id may have dropped a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLimits {
    /// `memory.max`: the limit in bytes, or `max`.
    pub memory_max: String,
    /// `memory.swap.max`: `0` with a memory limit, so that the limit is on memory and not on
    /// what fits in memory and swap together; `max` without one.
    pub memory_swap_max: String,
    /// `memory.oom.group`: `1` with a memory limit, so that an OOM kill takes the whole process
    /// tree (as Kubernetes does on cgroup v2) rather than one member, which would leave a
    /// process running with a part of it missing; `0` without one.
    pub memory_oom_group: String,
    /// `cpu.max`: `<quota> <period>` in microseconds, or `max <period>`.
    pub cpu_max: String,
}

impl CgroupLimits {
    /// The cgroup values of `resources`.
    pub fn of(resources: Option<&Resources>) -> CgroupLimits {
        let memory = resources.and_then(|resources| resources.memory_bytes);
        let cpu = resources.and_then(|resources| resources.cpu_millis);
        CgroupLimits {
            memory_max: memory.map_or_else(|| "max".to_string(), |bytes| bytes.to_string()),
            memory_swap_max: if memory.is_some() { "0" } else { "max" }.to_string(),
            memory_oom_group: if memory.is_some() { "1" } else { "0" }.to_string(),
            cpu_max: cpu_max(cpu),
        }
    }

    /// Each interface file with its value, in the order they are written.
    pub fn files(&self) -> [(&'static str, &str); 4] {
        [
            ("memory.max", &self.memory_max),
            ("memory.swap.max", &self.memory_swap_max),
            ("memory.oom.group", &self.memory_oom_group),
            ("cpu.max", &self.cpu_max),
        ]
    }
}

/// `cpu.max` for a limit of `millis` millicores: a quota of `millis` thousandths of the period
/// in each period, so 500m is half a core (`50000 100000`) and 2000m two cores (`200000
/// 100000`); no limit is `max 100000`.
pub fn cpu_max(millis: Option<u32>) -> String {
    match millis {
        None => format!("max {CPU_MAX_PERIOD_MICROS}"),
        Some(millis) => {
            let quota =
                (u64::from(millis) * CPU_MAX_PERIOD_MICROS / 1000).max(CPU_MAX_MIN_QUOTA_MICROS);
            format!("{quota} {CPU_MAX_PERIOD_MICROS}")
        }
    }
}

/// The names of one launcher's process cgroups: `proc-<tag>_<id>`, the same for every process
/// of the id, so that its restarts reuse it and a restarted launcher finds it again; and scoped
/// by the launcher's tag, so that a launcher only ever lists, kills or removes its own leaves,
/// never those of another launcher (another data directory) that shares the delegated subtree
/// or ran in it before.
///
/// The tag is the launcher id when it is at most `MAX_LAUNCHER_TAG_LEN` ASCII letters, digits
/// and `-` (the default ids, `launcher-<12 hex digits>`, are), else `x.` and 16 hex digits of a
/// hash of it (a `.` that no literal tag has, so the two forms never meet). Process ids are
/// letters, digits and `. _ - : @`, at most 200 bytes and never starting with `.`, so a leaf's
/// name is one path component of at most 246 bytes, never `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafNames {
    /// `proc-<tag>_`.
    prefix: String,
}

impl LeafNames {
    /// The leaf names of the launcher `launcher_id`.
    pub fn of_launcher(launcher_id: &str) -> LeafNames {
        let literal = !launcher_id.is_empty()
            && launcher_id.len() <= MAX_LAUNCHER_TAG_LEN
            && launcher_id
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-');
        let tag = if literal {
            launcher_id.to_string()
        } else {
            format!("x.{:016x}", fnv1a_64(launcher_id.as_bytes()))
        };
        LeafNames {
            prefix: format!("{LEAF_PREFIX}{tag}{LEAF_TAG_END}"),
        }
    }

    /// The name of the cgroup of `id`.
    pub fn name(&self, id: &ProcessId) -> String {
        format!("{}{id}", self.prefix)
    }

    /// The id whose leaf `name` is, when it is one of this launcher's leaves.
    pub fn id_of(&self, name: &str) -> Option<ProcessId> {
        ProcessId::new(name.strip_prefix(&self.prefix)?).ok()
    }

    /// This launcher's leaves among `found` (directory names) that belong to no id in `known`
    /// (the ids with an observed record): left by a run that forgot the id without removing
    /// them (a crash in between), they are removed. The launcher's own leaf, other launchers'
    /// leaves and anything not named like a process's leaf are not the launcher's to remove.
    pub fn strays<'a>(
        &self,
        found: impl IntoIterator<Item = String>,
        known: impl IntoIterator<Item = &'a ProcessId>,
    ) -> Vec<String> {
        let known: std::collections::HashSet<&ProcessId> = known.into_iter().collect();
        let mut stray: Vec<String> = found
            .into_iter()
            .filter(|name| self.id_of(name).is_some_and(|id| !known.contains(&id)))
            .collect();
        stray.sort();
        stray
    }
}

/// FNV-1a, 64 bits: a hash that is the same in every build and every run (std's is not
/// promised to be), since a leaf's name must be found again by the next launcher run.
fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whether an exit may be the OOM killer's, so that the runtime looks for the evidence (the
/// process's cgroup's `oom_kill` count, else the kernel's log): a SIGKILL the launcher did not
/// send, or the unknown end of an adopted process (not a child, so its status is not ours to
/// read) that the launcher did not kill.
pub fn may_be_oom_kill(status: ExitStatus, killed_by_launcher: bool) -> bool {
    !killed_by_launcher && matches!(status, ExitStatus::Signal(9) | ExitStatus::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_limits_become_a_quota_of_the_period() {
        for (millis, expected) in [
            (None, "max 100000"),
            (Some(1000), "100000 100000"),
            (Some(500), "50000 100000"),
            (Some(250), "25000 100000"),
            (Some(2500), "250000 100000"),
            (Some(64_000), "6400000 100000"),
            // Below the kernel's smallest quota (1 ms of each 100 ms): raised to it.
            (Some(1), "1000 100000"),
            (Some(10), "1000 100000"),
            (Some(11), "1100 100000"),
            (Some(u32::MAX), "429496729500 100000"),
        ] {
            assert_eq!(cpu_max(millis), expected, "{millis:?}");
        }
    }

    #[test]
    fn a_leaf_gets_every_value_limited_or_not() {
        let both = Resources {
            cpu_millis: Some(500),
            memory_bytes: Some(64 << 20),
        };
        let cpu_only = Resources {
            cpu_millis: Some(1500),
            memory_bytes: None,
        };
        for (resources, expected) in [
            (
                None,
                [
                    ("memory.max", "max"),
                    ("memory.swap.max", "max"),
                    ("memory.oom.group", "0"),
                    ("cpu.max", "max 100000"),
                ],
            ),
            (
                Some(&both),
                [
                    ("memory.max", "67108864"),
                    ("memory.swap.max", "0"),
                    ("memory.oom.group", "1"),
                    ("cpu.max", "50000 100000"),
                ],
            ),
            (
                Some(&cpu_only),
                [
                    ("memory.max", "max"),
                    ("memory.swap.max", "max"),
                    ("memory.oom.group", "0"),
                    ("cpu.max", "150000 100000"),
                ],
            ),
        ] {
            assert_eq!(
                CgroupLimits::of(resources).files(),
                expected,
                "{resources:?}"
            );
        }
    }

    #[test]
    fn leaves_are_named_apart_from_interface_files_the_launchers_leaf_and_other_launchers() {
        let id = |text: &str| ProcessId::new(text).unwrap();
        let names = LeafNames::of_launcher("launcher-0a1b2c3d4e5f");
        for (text, leaf) in [
            ("orders-cache", "proc-launcher-0a1b2c3d4e5f_orders-cache"),
            (
                "ns:my-app:hello-pattern",
                "proc-launcher-0a1b2c3d4e5f_ns:my-app:hello-pattern",
            ),
            // Ids that are interface files' or the launcher's leaf's names get the prefix too.
            ("cgroup.procs", "proc-launcher-0a1b2c3d4e5f_cgroup.procs"),
            ("supervisor", "proc-launcher-0a1b2c3d4e5f_supervisor"),
            // The separator may be in the id: the first one ends the tag.
            ("a_b", "proc-launcher-0a1b2c3d4e5f_a_b"),
        ] {
            assert_eq!(names.name(&id(text)), leaf);
            assert_eq!(names.id_of(leaf), Some(id(text)));
        }
        // A launcher whose id is a prefix of another's never reads the other's leaves as its own.
        let short = LeafNames::of_launcher("launcher-a");
        let long = LeafNames::of_launcher("launcher-a-b");
        assert_eq!(short.id_of(&long.name(&id("orders"))), None);
        assert_eq!(long.id_of(&short.name(&id("b-orders"))), None);
        assert_eq!(names.id_of("supervisor"), None);
        assert_eq!(names.id_of("proc-launcher-0a1b2c3d4e5f_"), None);
        assert_eq!(names.id_of("proc-launcher-0a1b2c3d4e5f_../x"), None);

        // Ids that are too long or have other characters are hashed, the same way every time,
        // and never as a literal tag is.
        for odd in [
            "launcher with spaces",
            "launcher_underscored",
            "launcher/slash",
            "..",
            "",
            &"a".repeat(MAX_LAUNCHER_TAG_LEN + 1),
        ] {
            let hashed = LeafNames::of_launcher(odd).name(&id("x"));
            assert!(hashed.starts_with("proc-x."), "{odd:?}: {hashed}");
            assert_eq!(hashed.matches('/').count(), 0);
            assert_eq!(hashed, LeafNames::of_launcher(odd).name(&id("x")));
        }
        assert_ne!(
            LeafNames::of_launcher("launcher a").name(&id("x")),
            LeafNames::of_launcher("launcher b").name(&id("x"))
        );
        // The longest tag and the longest id still make one path component the kernel accepts.
        let longest = id(&"a".repeat(crate::reconcile::MAX_PROCESS_ID_LEN));
        let widest = LeafNames::of_launcher(&"b".repeat(MAX_LAUNCHER_TAG_LEN));
        assert!(widest.name(&longest).len() <= 255);
        assert!(LeafNames::of_launcher("a b").name(&longest).len() <= 255);
        assert!(ProcessId::new("a/b").is_err() && ProcessId::new("..").is_err());
    }

    #[test]
    fn only_a_kill_the_launcher_did_not_send_may_be_the_oom_killers() {
        for (status, killed, expected) in [
            (ExitStatus::Signal(9), false, true),
            (ExitStatus::Unknown, false, true),
            (ExitStatus::Signal(9), true, false),
            (ExitStatus::Unknown, true, false),
            (ExitStatus::Signal(15), false, false),
            (ExitStatus::Code(137), false, false),
            (ExitStatus::Code(0), false, false),
            (ExitStatus::OomKilled, false, false),
        ] {
            assert_eq!(
                may_be_oom_kill(status, killed),
                expected,
                "{status:?} {killed}"
            );
        }
    }

    #[test]
    fn stray_leaves_are_this_launchers_leaves_of_unknown_ids() {
        let id = |text: &str| ProcessId::new(text).unwrap();
        let names = LeafNames::of_launcher("launcher-1");
        let known = [id("kept"), id("also-kept")];
        let found = [
            "proc-launcher-1_kept",
            "proc-launcher-1_gone",
            "supervisor",
            "proc-launcher-1_also-kept",
            "someone-elses",
            "proc-launcher-1_another-gone",
            // Another launcher's leaves, kept or gone, are never ours.
            "proc-launcher-2_gone",
            "proc-launcher-1-2_gone",
            "proc-gone",
        ]
        .map(String::from);
        assert_eq!(
            names.strays(found, &known),
            ["proc-launcher-1_another-gone", "proc-launcher-1_gone"].map(String::from)
        );
        assert!(names.strays(Vec::new(), &known).is_empty());
    }

    #[test]
    fn each_limit_is_enforced_by_what_the_host_gives_or_not_at_all() {
        let both = Resources {
            cpu_millis: Some(500),
            memory_bytes: Some(64 << 20),
        };
        let memory_only = Resources {
            cpu_millis: None,
            memory_bytes: Some(64 << 20),
        };
        for (resources, mode, memory, cpu) in [
            (
                None,
                LimitMode::Rlimit,
                Enforcement::None,
                Enforcement::None,
            ),
            (
                None,
                LimitMode::CgroupV2,
                Enforcement::None,
                Enforcement::None,
            ),
            (
                Some(&both),
                LimitMode::Rlimit,
                Enforcement::Rlimit,
                Enforcement::None,
            ),
            (
                Some(&both),
                LimitMode::CgroupV2,
                Enforcement::Cgroup,
                Enforcement::Cgroup,
            ),
            (
                Some(&memory_only),
                LimitMode::CgroupV2,
                Enforcement::Cgroup,
                Enforcement::None,
            ),
        ] {
            assert_eq!(
                LimitEnforcement::of(resources, mode),
                LimitEnforcement { memory, cpu },
                "{resources:?} under {mode:?}"
            );
        }
        assert_eq!(
            LimitEnforcement::data_rlimit(Some(&both), LimitMode::Rlimit),
            Some(64 << 20)
        );
        assert_eq!(
            LimitEnforcement::data_rlimit(Some(&both), LimitMode::CgroupV2),
            None
        );
    }
}
