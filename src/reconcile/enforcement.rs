//! How a process's declared resource limits are enforced on this host, decided once here for
//! spawn, status, metrics and the start-up log: the host gives a limit mode (cgroup v2 when a
//! subtree is delegated to the launcher, else rlimits), and each limit of a spec is enforced by
//! it or not at all.

use super::model::Resources;

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

#[cfg(test)]
mod tests {
    use super::*;

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
