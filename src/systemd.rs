//! systemd's service notifications (the `sd_notify` protocol), sent only when systemd asks for
//! them (`NOTIFY_SOCKET`): `READY=1` once the launcher is ready (its `/readyz` conditions),
//! `WATCHDOG=1` from the reconcile loop itself (so a stuck loop stops it) when `WATCHDOG_USEC`
//! asks for a watchdog, and `STOPPING=1` when the shutdown begins. Best effort: a notification
//! that cannot be sent is logged and never stops the launcher.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::time::Duration;

/// A datagram socket to systemd's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    address: SocketAddr,
}

impl Notifier {
    /// The notifier systemd asked for in `NOTIFY_SOCKET` (a path, or `@name` for an abstract
    /// socket), if any.
    pub fn from_env() -> Option<Notifier> {
        let target = std::env::var_os("NOTIFY_SOCKET")?;
        match Notifier::to(&target) {
            Ok(notifier) => Some(notifier),
            Err(error) => {
                tracing::warn!(notify_socket = ?target, %error, "NOTIFY_SOCKET is set but cannot be used; systemd will not hear of readiness");
                None
            }
        }
    }

    fn to(target: &OsStr) -> std::io::Result<Notifier> {
        let address = match target.as_bytes().strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name)?
            }
            None => SocketAddr::from_pathname(Path::new(target))?,
        };
        let socket = UnixDatagram::unbound()?;
        // A full socket buffer must not block the loop: the notification is dropped instead.
        socket.set_nonblocking(true)?;
        Ok(Notifier { socket, address })
    }

    /// Sends `state` (newline-separated `KEY=value` assignments).
    pub fn notify(&self, state: &str) {
        if let Err(error) = self.socket.send_to_addr(state.as_bytes(), &self.address) {
            tracing::warn!(%error, state, "cannot notify systemd");
        }
    }
}

/// How often the loop tells systemd it is alive: half of `WATCHDOG_USEC`, as systemd advises,
/// when a watchdog is asked for and meant for this process (`WATCHDOG_PID`, when set).
pub fn watchdog_interval() -> Option<Duration> {
    interval_for(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// `watchdog_interval` for the values of `WATCHDOG_USEC` and `WATCHDOG_PID` and this process's
/// pid `own`.
fn interval_for(usec: Option<&str>, pid: Option<&str>, own: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != own {
            return None;
        }
    }
    // At least a millisecond: a zero period would be no interval at all (tokio refuses it).
    (usec > 0).then(|| Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_interval_is_half_of_what_systemd_asks_and_never_zero() {
        let thirty_seconds = Some("30000000");
        assert_eq!(
            interval_for(thirty_seconds, None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            interval_for(thirty_seconds, Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            interval_for(thirty_seconds, Some("8"), 7),
            None,
            "another's"
        );
        assert_eq!(
            interval_for(Some("1"), None, 7),
            Some(Duration::from_millis(1))
        );
        assert_eq!(interval_for(Some("0"), None, 7), None);
        assert_eq!(interval_for(Some("soon"), None, 7), None);
        assert_eq!(interval_for(None, None, 7), None);
    }

    #[test]
    fn a_notification_reaches_a_path_and_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        Notifier::to(path.as_os_str()).unwrap().notify("READY=1");
        let mut buffer = [0u8; 64];
        let read = listener.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..read], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("prism-launcher-test-{}", std::process::id());
        let abstract_listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        Notifier::to(OsStr::new(&format!("@{name}")))
            .unwrap()
            .notify("STOPPING=1");
        let read = abstract_listener.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..read], b"STOPPING=1");
    }
}
