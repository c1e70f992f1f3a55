//! What the host's control groups let the launcher enforce limits with: cgroup v2 as the host's
//! one hierarchy (`/sys/fs/cgroup` is a cgroup2 file system), the launcher's own cgroup in it
//! (`/proc/self/cgroup`'s `0::` line), the controllers available there and whether the launcher
//! may write to it (a delegated subtree). Read once at start; the answer is logged and decides
//! the limit mode (`reconcile::LimitMode`).
//!
//! The launcher does not manage cgroups yet: even on a delegated v2 host, limits are enforced
//! with rlimits, and the start-up log says so. The detection is kept honest and tested (against
//! a fake tree) so that cgroup mode can build on it.

use std::path::{Path, PathBuf};

use crate::reconcile::LimitMode;

/// The controllers the launcher would need for memory and CPU limits.
const NEEDED_CONTROLLERS: [&str; 2] = ["memory", "cpu"];

/// What the host's control groups are, for the launcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupHost {
    /// `/sys/fs/cgroup` is not a cgroup2 file system: cgroup v1 (with v2 beside it, unused by
    /// controllers, on a hybrid host).
    V1 { hybrid: bool },
    /// cgroup v2 is the host's hierarchy.
    V2 {
        /// The launcher's own cgroup.
        dir: PathBuf,
        /// Controllers available in it.
        controllers: Vec<String>,
        /// Whether the launcher may create cgroups below it (a delegated subtree).
        writable: bool,
    },
}

/// The host's cgroups, and the limit mode they give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLimits {
    pub host: CgroupHost,
    pub mode: LimitMode,
    /// Why this mode, in a sentence for the start-up log.
    pub reason: String,
}

/// Reads the host's cgroups (blocking: a few small files).
pub fn detect_host_limits() -> HostLimits {
    let root = Path::new("/sys/fs/cgroup");
    let unified = nix::sys::statfs::statfs(root)
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    host_limits(detect_in(root, &own, unified))
}

/// What `root` (the cgroup mount point, a cgroup2 file system when `unified`) and the
/// launcher's `/proc/self/cgroup` text say.
pub fn detect_in(root: &Path, own_cgroups: &str, unified: bool) -> CgroupHost {
    let v2_path = own_cgroups
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::trim);
    if !unified {
        return CgroupHost::V1 {
            hybrid: v2_path.is_some(),
        };
    }
    let dir = root.join(v2_path.unwrap_or("/").trim_start_matches('/'));
    let controllers = std::fs::read_to_string(dir.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let writable = is_delegated(&dir);
    CgroupHost::V2 {
        dir,
        controllers,
        writable,
    }
}

/// Whether the cgroup `dir` is delegated to the launcher: marked so by systemd (the
/// `trusted.delegate` extended attribute, systemd 251 and later), or, for a launcher that is not
/// root, owned by it. Root can write to any cgroup, so write access proves nothing for it.
fn is_delegated(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let marked = std::ffi::CString::new(dir.as_os_str().as_bytes()).is_ok_and(|path| {
        let mut value = [0u8; 8];
        // SAFETY: both strings are NUL-terminated and `value` is a writable buffer of the
        // length given; getxattr writes at most that many bytes.
        let read = unsafe {
            libc::getxattr(
                path.as_ptr(),
                c"trusted.delegate".as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        read > 0 && value.first() == Some(&b'1')
    });
    let own = nix::unistd::geteuid().as_raw();
    let owned = own != 0
        && std::fs::metadata(dir.join("cgroup.procs")).is_ok_and(|meta| meta.uid() == own)
        && nix::unistd::access(
            &dir.join("cgroup.subtree_control"),
            nix::unistd::AccessFlags::W_OK,
        )
        .is_ok();
    marked || owned
}

/// The limit mode `host` gives, and why.
pub fn host_limits(host: CgroupHost) -> HostLimits {
    let reason = match &host {
        CgroupHost::V1 { hybrid: true } => "a hybrid cgroup v1/v2 host: the controllers are on \
            cgroup v1, which the launcher does not use; memory limits are enforced with \
            RLIMIT_DATA, CPU limits are not enforced"
            .to_string(),
        CgroupHost::V1 { hybrid: false } => "a cgroup v1 host, which the launcher does not use; \
            memory limits are enforced with RLIMIT_DATA, CPU limits are not enforced"
            .to_string(),
        CgroupHost::V2 {
            dir,
            controllers,
            writable,
        } => {
            let missing: Vec<&str> = NEEDED_CONTROLLERS
                .into_iter()
                .filter(|needed| !controllers.iter().any(|have| have == needed))
                .collect();
            let what = if !writable {
                format!(
                    "cgroup v2, but {} is not delegated to the launcher (not writable)",
                    dir.display()
                )
            } else if !missing.is_empty() {
                format!(
                    "cgroup v2 delegated at {}, without the {} controller(s)",
                    dir.display(),
                    missing.join(", ")
                )
            } else {
                format!(
                    "cgroup v2 delegated at {}, but the launcher does not manage cgroups yet",
                    dir.display()
                )
            };
            format!(
                "{what}; memory limits are enforced with RLIMIT_DATA, CPU limits are not enforced"
            )
        }
    };
    HostLimits {
        host,
        mode: LimitMode::Rlimit,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "9:name=systemd:/\n4:memory:/process_api/x\n1:cpu:/\n0::/\n";

    #[test]
    fn a_hybrid_or_v1_host_gives_rlimits() {
        let temp = tempfile::tempdir().unwrap();
        let hybrid = detect_in(temp.path(), HYBRID, false);
        assert_eq!(hybrid, CgroupHost::V1 { hybrid: true });
        let limits = host_limits(hybrid);
        assert_eq!(limits.mode, LimitMode::Rlimit);
        assert!(limits.reason.contains("hybrid"), "{}", limits.reason);
        let v1 = detect_in(temp.path(), "4:memory:/\n1:cpu:/\n", false);
        assert_eq!(v1, CgroupHost::V1 { hybrid: false });
    }

    #[test]
    fn a_v2_host_is_read_from_the_launchers_own_cgroup() {
        let root = tempfile::tempdir().unwrap();
        let own = root.path().join("system.slice/launcher.service");
        std::fs::create_dir_all(&own).unwrap();
        std::fs::write(
            own.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        std::fs::write(own.join("cgroup.subtree_control"), "").unwrap();
        std::fs::write(own.join("cgroup.procs"), "").unwrap();
        // Unmarked, it is not delegated, even to root (who may write anywhere).
        let unmarked = detect_in(root.path(), "0::/system.slice/launcher.service\n", true);
        assert!(
            matches!(
                unmarked,
                CgroupHost::V2 {
                    writable: false,
                    ..
                }
            ) || !nix::unistd::geteuid().is_root(),
            "{unmarked:?}"
        );
        // Marked as systemd marks a delegated cgroup.
        let path = std::ffi::CString::new(own.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: NUL-terminated strings and a one-byte value, as setxattr expects.
        let set = unsafe {
            libc::setxattr(
                path.as_ptr(),
                c"trusted.delegate".as_ptr(),
                b"1".as_ptr().cast(),
                1,
                0,
            )
        };
        if set != 0 {
            eprintln!(
                "skipped: this file system or user cannot set trusted.delegate ({})",
                std::io::Error::last_os_error()
            );
            return;
        }
        let host = detect_in(root.path(), "0::/system.slice/launcher.service\n", true);
        assert_eq!(
            host,
            CgroupHost::V2 {
                dir: own.clone(),
                controllers: ["cpuset", "cpu", "io", "memory", "pids"]
                    .map(String::from)
                    .to_vec(),
                writable: true,
            }
        );
        let limits = host_limits(host);
        // Not managed yet: the mode stays rlimit, and the log says why.
        assert_eq!(limits.mode, LimitMode::Rlimit);
        assert!(
            limits.reason.contains("does not manage cgroups yet"),
            "{}",
            limits.reason
        );

        std::fs::write(own.join("cgroup.controllers"), "pids\n").unwrap();
        let without = host_limits(detect_in(
            root.path(),
            "0::/system.slice/launcher.service\n",
            true,
        ));
        assert!(
            without
                .reason
                .contains("without the memory, cpu controller(s)"),
            "{}",
            without.reason
        );
    }

    #[test]
    fn this_host_is_detected_as_its_mount_table_says() {
        // Read another way: the file system types in the mount table.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let fs_at = |point: &str| {
            mounts.lines().rev().find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                (fields.get(1) == Some(&point)).then(|| fields[2].to_string())
            })
        };
        let any_cgroup2 = mounts
            .lines()
            .any(|line| line.split_whitespace().nth(2) == Some("cgroup2"));
        let expected = if fs_at("/sys/fs/cgroup").as_deref() == Some("cgroup2") {
            None
        } else {
            Some(CgroupHost::V1 {
                hybrid: any_cgroup2,
            })
        };
        let limits = detect_host_limits();
        match expected {
            Some(v1) => assert_eq!(limits.host, v1, "{limits:?}"),
            None => assert!(matches!(limits.host, CgroupHost::V2 { .. }), "{limits:?}"),
        }
        eprintln!("this host: {}", limits.reason);
        assert_eq!(limits.mode, LimitMode::Rlimit);
    }
}
