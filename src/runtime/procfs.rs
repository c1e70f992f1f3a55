//! What /proc says about a process: its start time (to tell it from a reused pid), its
//! environment (to prove it is ours), its children (to find descendants without a host scan)
//! and what it uses.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The process's start time in clock ticks after boot (field 22 of /proc/<pid>/stat), or `None`
/// if the process does not exist or its line cannot be read.
///
/// Read once per spawn, so it costs one `open`, one `read` into a buffer on the stack and one
/// `close`: no allocation, and no `statx` to size a buffer (which `fs::read_to_string` makes).
pub fn start_ticks(pid: u32) -> Option<u64> {
    use std::io::{Read, Write};
    // The longest is "/proc/4294967295/stat", 21 bytes.
    let mut path = [0u8; 32];
    let mut cursor = std::io::Cursor::new(&mut path[..]);
    write!(cursor, "/proc/{pid}/stat").ok()?;
    let path_length = usize::try_from(cursor.position()).ok()?;
    let mut file = std::fs::File::open(std::ffi::OsStr::from_bytes(&path[..path_length])).ok()?;
    let mut buffer = [0u8; STAT_LINE_MAX];
    let mut length = 0;
    // procfs hands the whole line, newline included, to the first read that has room for it;
    // the loop is for a kernel that does not.
    while length < buffer.len() && !buffer[..length].ends_with(b"\n") {
        match file.read(&mut buffer[length..]) {
            Ok(0) => break,
            Ok(read) => length += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    stat_field(&buffer[..length], 22)?.parse().ok()
}

/// Room for a whole /proc/<pid>/stat line: 52 numeric fields of at most 20 digits each and a
/// command name (16 bytes, 64 for some kernel threads) take less than 1200 bytes.
const STAT_LINE_MAX: usize = 2048;

/// The /proc/<pid>/stat line of `pid`, as bytes: its command name is the program's file name
/// cut to 15 bytes, which may cut a UTF-8 character in two (or was never UTF-8).
fn stat_line(pid: u32) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/stat")).ok()
}

/// Field `number` (1-based, as in proc(5)) of a /proc/<pid>/stat line. The command name (field 2)
/// may hold spaces and parentheses, and any bytes, so fields after it are counted from its
/// closing parenthesis, and only what follows it is read as text.
fn stat_field(stat: &[u8], number: usize) -> Option<&str> {
    let name_end = stat.iter().rposition(|byte| *byte == b')')?;
    let after_name = std::str::from_utf8(&stat[name_end + 1..]).ok()?;
    after_name.split_whitespace().nth(number.checked_sub(3)?)
}

/// The whole initial environment of the process, if readable.
pub fn environment(pid: u32) -> Option<Vec<(String, String)>> {
    let environ = std::fs::read(PathBuf::from(format!("/proc/{pid}/environ"))).ok()?;
    Some(
        environ
            .split(|byte| *byte == 0)
            .filter_map(|entry| {
                let entry = std::str::from_utf8(entry).ok()?;
                let (key, value) = entry.split_once('=')?;
                Some((key.to_string(), value.to_string()))
            })
            .collect(),
    )
}

/// The children of `pid`: every thread's list (`/proc/<pid>/task/<tid>/children`), since a
/// child belongs to the thread that forked it (or that it was reparented to).
pub fn children(pid: u32) -> Vec<u32> {
    children_under(&PathBuf::from(format!("/proc/{pid}/task")))
}

/// The launcher's own children (started by it, or reparented to it as a subreaper).
pub fn own_children() -> Vec<u32> {
    children_under(Path::new("/proc/self/task"))
}

fn children_under(tasks: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(tasks) else {
        return Vec::new();
    };
    let mut children = Vec::new();
    for task in entries.filter_map(Result::ok) {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            children.extend(
                list.split_whitespace()
                    .filter_map(|pid| pid.parse::<u32>().ok()),
            );
        }
    }
    children
}

/// Resident memory (bytes) and CPU time used so far (clock ticks, user + system) of `pid`.
pub fn usage(pid: u32) -> Option<(u64, u64)> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let stat = stat_line(pid)?;
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
    let stat = stat_line(pid)?;
    stat_field(&stat, 5)?.parse().ok()
}

/// The parent of `pid` (field 4 of /proc/<pid>/stat), if it exists.
pub fn parent(pid: u32) -> Option<u32> {
    let stat = stat_line(pid)?;
    stat_field(&stat, 4)?.parse().ok()
}

/// Every pid on the host. A scan of the host: only for the periodic orphan scan and the
/// adoption at start, never per event.
pub fn all_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_a_command_name_with_spaces_and_parentheses() {
        let stat =
            b"42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(stat_field(stat, 3), Some("S"));
        assert_eq!(stat_field(stat, 22), Some("98765"));
    }

    #[test]
    fn the_start_time_is_read_whatever_bytes_the_command_name_holds() {
        let tail = b" S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10\n";
        for name in [
            &b"sleep"[..],
            b"a (weird) name",
            b") (",
            // "\u{436}\u{436}\u{436}\u{436}\u{436}\u{436}\u{436}\u{436}" cut to 15 bytes.
            &"\u{436}\u{436}\u{436}\u{436}\u{436}\u{436}\u{436}\u{436}".as_bytes()[..15],
            b"\xff\xfe",
        ] {
            let mut stat = b"42 (".to_vec();
            stat.extend_from_slice(name);
            stat.push(b')');
            stat.extend_from_slice(tail);
            assert_eq!(stat_field(&stat, 22), Some("98765"), "{name:?}");
        }
        assert_eq!(stat_field(b"42 (x) S 1 2", 22), None, "a line cut short");
        assert_eq!(stat_field(b"no name at all", 22), None);
    }

    /// A program whose file name is not UTF-8 (its command name, in the stat line, is not): its
    /// start time, group and parent are read all the same.
    #[test]
    fn a_process_whose_name_is_not_utf8_is_read() {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let program = dir
            .path()
            .join(std::ffi::OsStr::from_bytes(b"\xff\xfe-sleep"));
        std::fs::copy("/bin/sleep", &program).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // Another test's fork may hold the copy open for writing for a moment (ETXTBSY).
        let mut child = loop {
            match std::process::Command::new(&program)
                .arg("30")
                .process_group(0)
                .spawn()
            {
                Ok(child) => break child,
                Err(error) if error.raw_os_error() == Some(libc::ETXTBSY) => {
                    assert!(std::time::Instant::now() < deadline, "{error}");
                    std::thread::yield_now();
                }
                Err(error) => panic!("{error}"),
            }
        };
        let pid = child.id();
        // Until the exec, the stat line names the test's own thread.
        let mut execed = false;
        while std::time::Instant::now() < deadline {
            if std::fs::read(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.starts_with(b"\xff"))
            {
                execed = true;
                break;
            }
            std::thread::yield_now();
        }
        let found = (start_ticks(pid), process_group(pid), parent(pid));
        // Another test's sweep of the test process's children may have reaped it already.
        let _ = child.kill();
        let _ = child.wait();
        assert!(execed, "the exec never showed");
        assert!(found.0.is_some());
        assert_eq!(found.1, Some(pid));
        assert_eq!(found.2, Some(std::process::id()));
    }

    #[test]
    fn our_own_process_has_a_start_time_and_an_environment() {
        let pid = std::process::id();
        assert!(start_ticks(pid).is_some());
        let has_path = environment(pid)
            .unwrap()
            .iter()
            .any(|(name, _)| name == "PATH");
        assert!(has_path || std::env::var("PATH").is_err());
        assert_eq!(start_ticks(u32::MAX), None);
        let by_std = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        assert_eq!(
            start_ticks(pid),
            stat_field(by_std.as_bytes(), 22).and_then(|ticks| ticks.parse().ok())
        );
        assert!(all_pids().contains(&pid));
        assert!(environment(pid).is_some());
        let (memory, _cpu) = usage(pid).expect("our own usage");
        assert!(memory > 0);
        assert!(ticks_per_second() > 0);
    }
}
