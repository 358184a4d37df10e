//! Serving a live FUSE connection again after the daemon died (`--supervise`).
//!
//! The supervisor (`sessionfs sentinel --supervise`, see [`crate::run_sentinel`])
//! holds a duplicate of the daemon's `/dev/fuse` descriptor. The kernel ends a FUSE
//! connection only when its last descriptor closes, so a `kill -9` of the daemon
//! leaves the mount live: callers wait in the kernel instead of getting ENOTCONN. A
//! new daemon started on that descriptor resumes:
//!
//! - fuser 0.18 can only start a session with the FUSE_INIT handshake, which the
//!   kernel sent once, to the dead daemon. [`session_on_live_fd`] runs that handshake
//!   on a socket fed one synthetic INIT, then puts the live `/dev/fuse` file under the
//!   session's descriptor number (`dup3`), so every read and reply after it goes to
//!   the real connection.
//! - Requests the dead daemon had read and not answered are still on the kernel's
//!   processing list (the supervisor's descriptor is the same open file, so nothing
//!   released it). [`notify_resend`] sends `FUSE_NOTIFY_RESEND` (Linux 6.9+): the
//!   kernel queues them again with bit 63 set in `unique` ([`is_resend`]).
//! - Node ids are backing inode numbers (see [`crate::fs`]), so a node id the new
//!   daemon never handed out is found again in the backing tree, and a file handle
//!   it never opened is reopened with the flags READ and WRITE carry
//!   (`fuse_read_in.flags`, `fuse_write_in.flags`).
//!
//! Every daemon numbers its file handles from its start time (ms << 20), so a new
//! daemon's handles never collide with those the kernel still holds from the old one.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use fuser::{Config, Filesystem, Session, SessionACL};

/// `FUSE_NOTIFY_RESEND` (include/uapi/linux/fuse.h, 7.40, Linux 6.9).
const FUSE_NOTIFY_RESEND: i32 = 7;
/// `FUSE_INIT` opcode.
const FUSE_INIT: u32 = 26;
/// The bit the kernel sets in `unique` of a request it sends again after
/// `FUSE_NOTIFY_RESEND` (`FUSE_UNIQUE_RESEND`).
pub const UNIQUE_RESEND: u64 = 1 << 63;

/// Whether a request is one the kernel sent again after [`notify_resend`]: the dead
/// daemon may have carried it out already before it died.
pub fn is_resend(unique: u64) -> bool {
    unique & UNIQUE_RESEND != 0
}

/// The bytes of a FUSE_INIT request as the kernel sends it: `fuse_in_header` (40
/// bytes) and `fuse_init_in` (64 bytes, protocol 7.40), every capability offered.
fn synthetic_init() -> Vec<u8> {
    let mut b = Vec::with_capacity(104);
    b.extend_from_slice(&104u32.to_ne_bytes()); // len
    b.extend_from_slice(&FUSE_INIT.to_ne_bytes()); // opcode
    b.extend_from_slice(&1u64.to_ne_bytes()); // unique
    b.extend_from_slice(&0u64.to_ne_bytes()); // nodeid
    b.extend_from_slice(&0u32.to_ne_bytes()); // uid
    b.extend_from_slice(&0u32.to_ne_bytes()); // gid
    b.extend_from_slice(&0u32.to_ne_bytes()); // pid
    b.extend_from_slice(&0u16.to_ne_bytes()); // total_extlen
    b.extend_from_slice(&0u16.to_ne_bytes()); // padding
    b.extend_from_slice(&7u32.to_ne_bytes()); // major
    b.extend_from_slice(&40u32.to_ne_bytes()); // minor
    b.extend_from_slice(&(128u32 << 10).to_ne_bytes()); // max_readahead
    b.extend_from_slice(&u32::MAX.to_ne_bytes()); // flags (FUSE_INIT_EXT included)
    b.extend_from_slice(&u32::MAX.to_ne_bytes()); // flags2
    b.resize(104, 0); // unused[11]
    b
}

/// A fuser session serving `live`, a `/dev/fuse` descriptor whose connection was
/// initialised by an earlier daemon (module doc). The capabilities that earlier daemon
/// negotiated stay in force in the kernel; this daemon's `init` answers a synthetic
/// request and its reply is dropped.
///
/// # Errors
/// The socketpair or write errors, the handshake's error, or `dup3`'s.
pub fn session_on_live_fd<FS: Filesystem>(
    fs: FS,
    live: OwnedFd,
    acl: SessionACL,
    config: Config,
) -> io::Result<Session<FS>> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    nix::unistd::write(&ours, &synthetic_init()).map_err(io::Error::from)?;
    let session = Session::from_fd(fs, theirs, acl, config)?;
    // SAFETY: dup3 atomically makes the session's descriptor number refer to the live
    // `/dev/fuse` file; the number stays owned by the session's channel (which closes
    // it on drop), only the file behind it changes. No other thread uses it yet: the
    // session has not started its workers.
    let r = unsafe {
        libc::dup3(
            live.as_raw_fd(),
            session.as_fd().as_raw_fd(),
            libc::O_CLOEXEC,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    drop(ours); // holds the discarded INIT reply
    Ok(session)
}

/// Ask the kernel to send again every request an earlier daemon of the connection
/// `fuse` read and did not answer (`FUSE_NOTIFY_RESEND`).
///
/// # Errors
/// The write's error: ENOSYS or EINVAL on a kernel before 6.9 (those requests then
/// wait until the mount is gone).
pub fn notify_resend(fuse: impl AsFd) -> io::Result<()> {
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(&16u32.to_ne_bytes()); // len
    b.extend_from_slice(&FUSE_NOTIFY_RESEND.to_ne_bytes()); // error = notify code
    b.extend_from_slice(&0u64.to_ne_bytes()); // unique 0: a notification
    nix::unistd::write(fuse, &b).map_err(io::Error::from)?;
    Ok(())
}

/// The first file handle number of this daemon: its start time in ms, shifted left
/// by 20 (≈ 2^61 in 2026, below the virtual handles at 2^63), so that handles of a
/// daemon started later never repeat those of an earlier one on the same connection.
pub fn handle_base() -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    ((ms << 20) & ((1 << 62) - 1)).max(1)
}

/// Fault injection for the restart tests: `SESSIONFS_FAULT=<point>:<name>:<marker>`
/// makes the daemon `SIGKILL` itself at `point` (`before-write`: a WRITE read and not
/// begun; `after-write`, `after-create`, `after-unlink`, `after-mkdir`: the backing change made, the
/// reply not sent) of the first request
/// on a file named `<name>`, once: the marker file is created first, and a daemon
/// that finds it does nothing. Without the variable this is one load of a cached
/// `None`.
pub fn fault(point: &str, name: &[u8]) {
    let Some((p, n, marker)) = fault_spec() else {
        return;
    };
    if p != point || !name.ends_with(n) {
        return;
    }
    let first = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(marker)
        .is_ok();
    if first {
        tracing::warn!(point, "fault injection: SIGKILL");
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Whether a fault is armed (`SESSIONFS_FAULT`): the write path takes the file's name
/// for [`fault`] only then.
pub fn fault_armed() -> bool {
    fault_spec().is_some()
}

fn fault_spec() -> Option<&'static (String, Vec<u8>, std::path::PathBuf)> {
    static SPEC: std::sync::OnceLock<Option<(String, Vec<u8>, std::path::PathBuf)>> =
        std::sync::OnceLock::new();
    SPEC.get_or_init(|| {
        let v = std::env::var("SESSIONFS_FAULT").ok()?;
        let mut it = v.splitn(3, ':');
        Some((
            it.next()?.to_string(),
            it.next()?.as_bytes().to_vec(),
            std::path::PathBuf::from(it.next()?),
        ))
    })
    .as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_synthetic_init_is_one_request_of_its_stated_length() {
        let b = synthetic_init();
        assert_eq!(b.len(), 104);
        assert_eq!(u32::from_ne_bytes(b[0..4].try_into().unwrap()), 104);
        assert_eq!(u32::from_ne_bytes(b[4..8].try_into().unwrap()), FUSE_INIT);
        assert_eq!(u32::from_ne_bytes(b[40..44].try_into().unwrap()), 7);
    }

    #[test]
    fn handle_numbers_grow_with_the_start_time_and_stay_below_virtual_ones() {
        let a = handle_base();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = handle_base();
        assert!(b > a + (1 << 20));
        assert!(b < 1 << 63);
        assert!(is_resend(5 | UNIQUE_RESEND) && !is_resend(5));
    }
}
