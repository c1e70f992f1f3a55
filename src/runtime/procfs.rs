//! What /proc says about a process: its start time (to tell it from a reused pid) and its
//! environment (to prove it is ours).

use std::path::PathBuf;

/// The process's start time in clock ticks after boot (field 22 of /proc/<pid>/stat), or `None`
/// if the process does not exist.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_field(&stat, 22)?.parse().ok()
}

/// Whether the process exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat_field(&stat, 3).map(|state| state != "Z" && state != "X"))
        .unwrap_or(false)
}

/// Field `number` (1-based, as in proc(5)) of a /proc/<pid>/stat line. The command name (field 2)
/// may hold spaces and parentheses, so fields after it are counted from its closing parenthesis.
fn stat_field(stat: &str, number: usize) -> Option<&str> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(number.checked_sub(3)?)
}

/// The value of `name` in the process's initial environment, if readable and present.
pub fn environment_value(pid: u32, name: &str) -> Option<String> {
    let environ = std::fs::read(PathBuf::from(format!("/proc/{pid}/environ"))).ok()?;
    environ.split(|byte| *byte == 0).find_map(|entry| {
        let entry = std::str::from_utf8(entry).ok()?;
        let (key, value) = entry.split_once('=')?;
        (key == name).then(|| value.to_string())
    })
}

/// Resident memory (bytes) and CPU time used so far (clock ticks, user + system) of `pid`.
pub fn usage(pid: u32) -> Option<(u64, u64)> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let user: u64 = stat_field(&stat, 14)?.parse().ok()?;
    let system: u64 = stat_field(&stat, 15)?.parse().ok()?;
    Some((
        resident_pages.saturating_mul(page_size()),
        user.saturating_add(system),
    ))
}

/// Clock ticks per second, the unit of CPU times in /proc.
pub fn ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|ticks| u64::try_from(ticks).ok())
        .unwrap_or(100)
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|size| u64::try_from(size).ok())
        .unwrap_or(4096)
}

/// The process group of `pid` (field 5 of /proc/<pid>/stat), if it exists.
pub fn process_group(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_field(&stat, 5)?.parse().ok()
}

/// Live processes whose initial environment holds every `name=value` of `wanted`. Costs one
/// pass over /proc; used when a process stops, never per event of the loop.
pub fn processes_with_environment(wanted: &[(&str, &str)]) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            wanted
                .iter()
                .all(|(name, value)| environment_value(*pid, name).as_deref() == Some(*value))
        })
        .filter(|pid| is_alive(*pid))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_a_command_name_with_spaces_and_parentheses() {
        let stat =
            "42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(stat_field(stat, 3), Some("S"));
        assert_eq!(stat_field(stat, 22), Some("98765"));
    }

    #[test]
    fn our_own_process_is_alive_with_a_start_time_and_an_environment() {
        let pid = std::process::id();
        assert!(is_alive(pid));
        assert!(start_ticks(pid).is_some());
        assert!(environment_value(pid, "PATH").is_some() || std::env::var("PATH").is_err());
        assert_eq!(start_ticks(u32::MAX), None);
        let (memory, _cpu) = usage(pid).expect("our own usage");
        assert!(memory > 0);
        assert!(ticks_per_second() > 0);
    }
}
