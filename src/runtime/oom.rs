//! Telling an out-of-memory kill from any other SIGKILL, where the kernel tells: its log
//! (`/dev/kmsg`) names the pid the OOM killer took. Where the log cannot be read (no permission,
//! a container without it), OOM kills show as plain SIGKILLs.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;

/// How many OOM-killed pids are remembered between two exits.
const REMEMBERED: usize = 256;

/// The kernel log, read from where it was when the launcher started.
pub struct KernelLog {
    file: Option<File>,
    oom_killed: VecDeque<u32>,
}

impl KernelLog {
    /// Opens /dev/kmsg at its end; `None` inside when it cannot be read.
    pub fn open() -> KernelLog {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .and_then(|mut file| file.seek(SeekFrom::End(0)).map(|_| file));
        if let Err(error) = &file {
            tracing::debug!(%error, "cannot read the kernel log; OOM kills will show as SIGKILL");
        }
        KernelLog {
            file: file.ok(),
            oom_killed: VecDeque::new(),
        }
    }

    /// Whether the kernel logged an OOM kill of `pid` (reading what it logged since last asked).
    pub fn oom_killed(&mut self, pid: u32) -> bool {
        self.read_new_records();
        self.oom_killed.contains(&pid)
    }

    fn read_new_records(&mut self) {
        let Some(file) = &mut self.file else {
            return;
        };
        // /dev/kmsg returns one record per read; records longer than the buffer are truncated,
        // which keeps their start, where the pid is.
        let mut buffer = [0u8; 8192];
        loop {
            match file.read(&mut buffer) {
                Ok(0) => return,
                Ok(read) => {
                    if let Some(pid) = oom_killed_pid(&String::from_utf8_lossy(&buffer[..read])) {
                        if self.oom_killed.len() == REMEMBERED {
                            self.oom_killed.pop_front();
                        }
                        self.oom_killed.push_back(pid);
                    }
                }
                // EPIPE: records were overwritten before we read them; go on with the next.
                Err(error) if error.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(error) if error.kind() == ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) => {
                    tracing::debug!(%error, "stopped reading the kernel log");
                    self.file = None;
                    return;
                }
            }
        }
    }
}

/// The pid a kernel log record says the OOM killer killed, if it says so. Recognises
/// "Out of memory: Killed process 1234 (name) ..." and "Memory cgroup out of memory: Killed
/// process 1234 ..." and "oom-kill:...,pid=1234,...".
pub fn oom_killed_pid(record: &str) -> Option<u32> {
    let message = record
        .split_once(';')
        .map_or(record, |(_, message)| message);
    if let Some(rest) = message
        .split_once("out of memory: Killed process ")
        .or_else(|| message.split_once("Out of memory: Killed process "))
        .map(|(_, rest)| rest)
    {
        return rest.split_whitespace().next()?.parse().ok();
    }
    if message.starts_with("oom-kill:") {
        return message
            .split(',')
            .find_map(|field| field.strip_prefix("pid="))
            .and_then(|pid| pid.trim().parse().ok());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_records_name_the_killed_pid_and_others_do_not() {
        let cases = [
            ("3,1204,5803119,-;Out of memory: Killed process 4242 (hog) total-vm:2099200kB", Some(4242)),
            ("3,1205,5803120,-;Memory cgroup out of memory: Killed process 77 (hog) total-vm:1kB", Some(77)),
            ("6,1206,5803121,-;oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),task=hog,pid=4243,uid=0", Some(4243)),
            ("6,1207,5803122,-;eth0: link up", None),
            ("6,1208,5803123,-;hog invoked oom-killer: gfp_mask=0x140cca", None),
            ("garbage", None),
        ];
        for (record, expected) in cases {
            assert_eq!(oom_killed_pid(record), expected, "{record}");
        }
    }
}
