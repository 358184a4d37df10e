//! systemd's notify protocol (`sd_notify(3)`), for `Type=notify` units: `READY=1` once
//! the mount is live, a one-line `STATUS=` every few seconds, `WATCHDOG=1` pings when
//! the unit sets `WatchdogSec=`, and `STOPPING=1` when the daemon begins to shut down.
//!
//! The protocol is one datagram per message, `KEY=value` lines, sent to the `AF_UNIX`
//! socket named by `$NOTIFY_SOCKET` (a path, or an abstract name written `@name`).
//! Without `$NOTIFY_SOCKET` (not under systemd) nothing is sent.
//!
//! With `FileDescriptorStoreMax=` in the unit (systemd 254+ then sets `$FDSTORE`),
//! the daemon also stores its `/dev/fuse` descriptor and backing root there
//! (`FDSTORE=1`, names [`FD_FUSE`] and [`FD_ROOT`]): a crash then leaves the mount
//! live, and the restarted unit gets them back as `$LISTEN_FDS` ([`listen_fds`]) and
//! resumes serving (see [`crate::resume`]).

/// The fd store name of the `/dev/fuse` descriptor.
pub const FD_FUSE: &str = "sessionfs-fuse";
/// The fd store name of the backing root directory descriptor.
pub const FD_ROOT: &str = "sessionfs-root";

/// Whether the unit keeps an fd store for us (`$FDSTORE` > 0, systemd 254+).
pub fn fd_store_enabled() -> bool {
    std::env::var("FDSTORE")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .is_some_and(|n| n >= 2)
}

/// The descriptors the service manager passed to this process (`$LISTEN_PID` is our
/// pid), by their `$LISTEN_FDNAMES` name: fd 3 and up, in order. Empty otherwise.
pub fn listen_fds() -> Vec<(String, std::os::fd::RawFd)> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        == Some(std::process::id());
    let n = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.trim().parse::<i32>().ok())
        .unwrap_or(0);
    if !ours || n <= 0 {
        return Vec::new();
    }
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    let mut names = names.split(':');
    (0..n)
        .map(|i| (names.next().unwrap_or("unknown").to_string(), 3 + i))
        .collect()
}

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// A connection to the service manager's notify socket.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
    /// Ping interval: half of `$WATCHDOG_USEC`, when the watchdog is meant for us.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` names, or `None` when it is unset, empty or
    /// unusable (logged). `$WATCHDOG_USEC` (µs) enables pings at half that interval
    /// when `$WATCHDOG_PID` is unset or names this process.
    pub fn from_env() -> Option<Notifier> {
        let name = std::env::var_os("NOTIFY_SOCKET").filter(|n| !n.is_empty())?;
        let addr = match parse_addr(name.as_encoded_bytes()) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(socket = ?name, error = %e, "NOTIFY_SOCKET unusable; no systemd notifications");
                return None;
            }
        };
        let sock = match UnixDatagram::unbound() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "notify socket: no systemd notifications");
                return None;
            }
        };
        let mine = std::env::var("WATCHDOG_PID")
            .ok()
            .is_none_or(|p| p.trim().parse::<u32>().ok() == Some(std::process::id()));
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|u| *u > 0 && mine)
            .map(|u| Duration::from_micros(u / 2));
        Some(Notifier {
            sock,
            addr,
            watchdog,
        })
    }

    /// Send one message (`"READY=1\nSTATUS=…"`). Errors: the errno of `sendto`.
    pub fn send(&self, msg: &str) -> io::Result<()> {
        self.sock
            .send_to_addr(msg.as_bytes(), &self.addr)
            .map(|_| ())
    }

    /// Send one message with descriptors attached (`SCM_RIGHTS`): `FDSTORE=1` keeps
    /// them in the service manager's fd store (`FileDescriptorStoreMax=`), to be
    /// handed to the next start of the unit as `$LISTEN_FDS`. Errors: the errno of
    /// `sendmsg`.
    pub fn send_with_fds(&self, msg: &str, fds: &[std::os::fd::RawFd]) -> io::Result<()> {
        use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};
        use std::os::fd::AsRawFd;
        let addr = match self.addr.as_pathname() {
            Some(p) => UnixAddr::new(p),
            None => {
                use std::os::linux::net::SocketAddrExt;
                UnixAddr::new_abstract(self.addr.as_abstract_name().unwrap_or_default())
            }
        }
        .map_err(io::Error::from)?;
        let iov = [io::IoSlice::new(msg.as_bytes())];
        let cmsg = [ControlMessage::ScmRights(fds)];
        sendmsg(
            self.sock.as_raw_fd(),
            &iov,
            &cmsg,
            MsgFlags::empty(),
            Some(&addr),
        )
        .map(|_| ())
        .map_err(io::Error::from)
    }

    /// The watchdog ping interval (half of `WatchdogSec=`), if the watchdog is on.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }
}

/// `$NOTIFY_SOCKET` as a socket address: `@name` is an abstract name, anything else a
/// path. Errors: EINVAL for a name the kernel would not take (too long).
fn parse_addr(name: &[u8]) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    match name.strip_prefix(b"@") {
        Some(abs) => SocketAddr::from_abstract_name(abs),
        None => SocketAddr::from_pathname(std::path::Path::new(std::ffi::OsStr::from_bytes(name))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("notify");
        let server = UnixDatagram::bind(&p).unwrap();
        let n = Notifier {
            sock: UnixDatagram::unbound().unwrap(),
            addr: parse_addr(p.as_os_str().as_encoded_bytes()).unwrap(),
            watchdog: None,
        };
        n.send("READY=1\nSTATUS=ok").unwrap();
        let mut buf = [0u8; 64];
        let k = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..k], b"READY=1\nSTATUS=ok");
    }

    #[test]
    fn abstract_names_start_with_an_at() {
        let name = format!("sessionfs-test-{}", std::process::id());
        let server =
            UnixDatagram::bind_addr(&parse_addr(format!("@{name}").as_bytes()).unwrap()).unwrap();
        let n = Notifier {
            sock: UnixDatagram::unbound().unwrap(),
            addr: parse_addr(format!("@{name}").as_bytes()).unwrap(),
            watchdog: None,
        };
        n.send("WATCHDOG=1").unwrap();
        let mut buf = [0u8; 16];
        let k = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..k], b"WATCHDOG=1");
    }
}
