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

/// What every process's cgroup is named after: `proc-<id>`. Ids are letters, digits and
/// `. _ - : @`, at most 200 bytes and never starting with `.`, so the name is one path component
/// of at most 205 bytes (under `NAME_MAX`), never `.` or `..`, and the prefix keeps it apart from
/// the kernel's interface files (`cgroup.*`, `memory.*`, `cpu.*`...: a controller name and a
/// dot) and from the launcher's own leaf (`LAUNCHER_LEAF`).
pub const LEAF_PREFIX: &str = "proc-";

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

/// The name of the cgroup of `id` (see `LEAF_PREFIX`), the same for every process of the id, so
/// that its restarts reuse it and a restarted launcher finds it again.
pub fn leaf_name(id: &ProcessId) -> String {
    format!("{LEAF_PREFIX}{id}")
}

/// Whether an exit may be the OOM killer's, so that the runtime looks for the evidence (the
/// process's cgroup's `oom_kill` count, else the kernel's log): a SIGKILL the launcher did not
/// send, or the unknown end of an adopted process (not a child, so its status is not ours to
/// read) that the launcher did not kill.
pub fn may_be_oom_kill(status: ExitStatus, killed_by_launcher: bool) -> bool {
    !killed_by_launcher && matches!(status, ExitStatus::Signal(9) | ExitStatus::Unknown)
}

/// The leaves found in the launcher's subtree (`found`, directory names) that belong to no id in
/// `known` (the ids with an observed record): left by a run that forgot the id without
/// removing them (a crash in between), they are removed. The launcher's own leaf and anything
/// not named like a process's leaf are not the launcher's to remove.
pub fn stray_leaves<'a>(
    found: impl IntoIterator<Item = String>,
    known: impl IntoIterator<Item = &'a ProcessId>,
) -> Vec<String> {
    let known: std::collections::HashSet<String> = known.into_iter().map(leaf_name).collect();
    let mut stray: Vec<String> = found
        .into_iter()
        .filter(|name| name.starts_with(LEAF_PREFIX) && !known.contains(name))
        .collect();
    stray.sort();
    stray
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
    fn leaves_are_named_apart_from_interface_files_and_the_launchers_leaf() {
        let id = |text: &str| ProcessId::new(text).unwrap();
        for (text, leaf) in [
            ("orders-cache", "proc-orders-cache"),
            ("ns:my-app:hello-pattern", "proc-ns:my-app:hello-pattern"),
            // Ids that are interface files' or the launcher's leaf's names get the prefix too.
            ("cgroup.procs", "proc-cgroup.procs"),
            ("memory.max", "proc-memory.max"),
            ("supervisor", "proc-supervisor"),
        ] {
            assert_eq!(leaf_name(&id(text)), leaf);
        }
        // The longest id still makes one path component the kernel accepts.
        let longest = id(&"a".repeat(crate::reconcile::MAX_PROCESS_ID_LEN));
        assert!(leaf_name(&longest).len() <= 255);
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
    fn stray_leaves_are_the_process_leaves_of_unknown_ids() {
        let id = |text: &str| ProcessId::new(text).unwrap();
        let known = [id("kept"), id("also-kept")];
        let found = [
            "proc-kept",
            "proc-gone",
            "supervisor",
            "proc-also-kept",
            "someone-elses",
            "proc-another-gone",
        ]
        .map(String::from);
        assert_eq!(
            stray_leaves(found, &known),
            ["proc-another-gone", "proc-gone"].map(String::from)
        );
        assert!(stray_leaves(Vec::new(), &known).is_empty());
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
