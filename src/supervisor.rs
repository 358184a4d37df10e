//! The process that outlives a crashed daemon: `sessionfs sentinel` (hidden), started
//! by the daemon once its mount is live.
//!
//! - **Fail open** (overlay mounts, the default): when the daemon dies without
//!   unmounting (`kill -9`, OOM), detach its mount (`MNT_DETACH`) so the path serves the
//!   backing directory again within milliseconds instead of answering ENOTCONN.
//! - **Supervise** (`--supervise`): hold a duplicate of the daemon's `/dev/fuse`
//!   descriptor and of its backing root, so the kernel keeps the connection (and the
//!   requests in flight) across the crash; start a new daemon on them (see
//!   [`crate::resume`]) with the dead one's command line. Callers wait for the
//!   restart instead of failing. After [`MAX_RESTARTS`] crashes within
//!   [`RESTART_WINDOW`], or a restart that is not serving within [`READY_TIMEOUT`], it
//!   falls back to failing open (or closed with `--fail-closed`).
//!
//! It never touches the mountpoint by path while a daemon may be dead (the path would
//! hang): the mount is found in `/proc/self/mountinfo` by its device.

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use nix::errno::Errno;
use nix::mount::MntFlags;
use nix::sys::signal::Signal;

use crate::mount::mount_entry_at;

/// Most restarts within [`RESTART_WINDOW`] before the supervisor gives up.
pub const MAX_RESTARTS: usize = 5;
/// See [`MAX_RESTARTS`].
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// Longest wait for a restarted daemon to report that it serves.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Environment of a daemon started on a live connection (read by
/// [`crate::mount::mount`]): descriptor numbers and canonical paths, because the
/// mountpoint cannot be looked at while no daemon serves it.
pub const ENV_FUSE_FD: &str = "SESSIONFS_RESUME_FUSE_FD";
/// The backing root directory (O_PATH), as the first daemon opened it.
pub const ENV_ROOT_FD: &str = "SESSIONFS_RESUME_ROOT_FD";
/// Write end of a pipe: the daemon writes `ok` once it serves, or one error line.
pub const ENV_READY_FD: &str = "SESSIONFS_RESUME_READY_FD";
/// Canonical mountpoint.
pub const ENV_MOUNTPOINT: &str = "SESSIONFS_RESUME_MOUNTPOINT";
/// Canonical source directory.
pub const ENV_SOURCE: &str = "SESSIONFS_RESUME_SOURCE";
/// Absolute state dir.
pub const ENV_STATE_DIR: &str = "SESSIONFS_RESUME_STATE_DIR";
/// When the supervisor saw the daemon die (ns since the epoch): files born later are
/// not the ones the kernel's node ids name.
pub const ENV_DIED_AT_NS: &str = "SESSIONFS_RESUME_DIED_AT_NS";

/// `sessionfs sentinel` arguments (hidden; the daemon passes them).
#[derive(Args, Debug)]
pub struct SentinelArgs {
    /// The daemon's pid.
    #[arg(long)]
    pub pid: i32,
    /// The mount's kernel device number.
    #[arg(long)]
    pub dev: u64,
    /// Detach the mount when no daemon serves it any more (fail open).
    #[arg(long)]
    pub fail_open: bool,
    /// Inherited `/dev/fuse` descriptor: restart the daemon on it (`--supervise`).
    #[arg(long, requires = "root_fd")]
    pub fuse_fd: Option<RawFd>,
    /// Inherited backing root descriptor.
    #[arg(long)]
    pub root_fd: Option<RawFd>,
    /// Canonical source directory.
    #[arg(long)]
    pub source: Option<PathBuf>,
    /// Absolute state dir.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// The sessionfs binary to restart, by path.
    #[arg(long)]
    pub exe: Option<PathBuf>,
    /// The mountpoint.
    pub mountpoint: PathBuf,
    /// The daemon's command line (after `--`), run again for a restart.
    #[arg(last = true)]
    pub argv: Vec<OsString>,
}

/// What the daemon hands its sentinel.
pub struct Spawn<'a> {
    /// Canonical mountpoint.
    pub mountpoint: &'a Path,
    /// The mount's kernel device.
    pub dev: u64,
    /// Detach the mount when no daemon serves it.
    pub fail_open: bool,
    /// `--supervise`: the live connection, the backing root, and the paths a restart
    /// needs.
    pub supervise: Option<Supervised<'a>>,
}

/// See [`Spawn::supervise`].
pub struct Supervised<'a> {
    /// The daemon's `/dev/fuse` descriptor.
    pub fuse: std::os::fd::BorrowedFd<'a>,
    /// The backing root directory.
    pub root: std::os::fd::BorrowedFd<'a>,
    /// Canonical source.
    pub source: &'a Path,
    /// Absolute state dir.
    pub state_dir: &'a Path,
}

/// Start the sentinel for this daemon; its pid. Logged, not fatal, when it cannot
/// start.
pub fn spawn(s: Spawn<'_>) -> Option<u32> {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "no sentinel: cannot find our binary");
            return None;
        }
    };
    let mut cmd = Command::new(&exe);
    cmd.arg("sentinel")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg("--dev")
        .arg(s.dev.to_string());
    if s.fail_open {
        cmd.arg("--fail-open");
    }
    // Inheritable duplicates (dup sets no FD_CLOEXEC), closed here after the spawn.
    let mut inherited = Vec::new();
    if let Some(sv) = &s.supervise {
        let (Ok(f), Ok(r)) = (nix::unistd::dup(sv.fuse), nix::unistd::dup(sv.root)) else {
            tracing::warn!("no supervisor: cannot duplicate the FUSE descriptor");
            return None;
        };
        // The binary by its path: after a package upgrade the path holds the new one.
        cmd.arg("--exe").arg(&exe);
        cmd.arg("--fuse-fd")
            .arg(f.as_raw_fd().to_string())
            .arg("--root-fd")
            .arg(r.as_raw_fd().to_string())
            .arg("--source")
            .arg(sv.source)
            .arg("--state-dir")
            .arg(sv.state_dir);
        inherited.push(f);
        inherited.push(r);
    }
    cmd.arg(s.mountpoint);
    if s.supervise.is_some() {
        cmd.arg("--").args(std::env::args_os().skip(1));
    }
    let r = cmd
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn();
    drop(inherited);
    match r {
        // Not waited for: it outlives us by design, and init reaps it.
        Ok(c) => {
            tracing::info!(
                pid = c.id(),
                supervise = s.supervise.is_some(),
                fail_open = s.fail_open,
                "sentinel started"
            );
            Some(c.id())
        }
        Err(e) => {
            tracing::warn!(error = %e, "no sentinel");
            None
        }
    }
}

/// Close every descriptor from 3 up except `keep`.
fn close_others(keep: &[RawFd]) {
    let mut from = 3u32;
    let mut keep: Vec<u32> = keep.iter().map(|&k| k as u32).filter(|&k| k >= 3).collect();
    keep.sort_unstable();
    for k in keep {
        if k > from {
            // SAFETY: close_range on descriptors we do not use.
            unsafe { libc::syscall(libc::SYS_close_range, from, k - 1, 0u32) };
        }
        from = k + 1;
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, from, u32::MAX, 0u32) };
}

/// Whether SIGUSR2 (blocked) is pending.
fn usr2_pending() -> bool {
    // SAFETY: sigemptyset/sigpending/sigismember only write the local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigpending(&mut set) == 0 && libc::sigismember(&set, libc::SIGUSR2) == 1
    }
}

/// Wait until process `pid` ends (a pidfd; a child of ours is reaped too).
pub(crate) fn wait_exit(pid: i32) -> Result<(), String> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(format!("sentinel: cannot watch pid {pid}: {e}"));
    }
    // SAFETY: a fresh fd returned by pidfd_open, owned from here on.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    loop {
        let mut fds = [nix::poll::PollFd::new(
            pidfd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(format!("sentinel: poll: {e}")),
        }
    }
    let _ = nix::sys::wait::waitpid(
        nix::unistd::Pid::from_raw(pid),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    );
    Ok(())
}

/// `sessionfs sentinel`: see the module doc.
///
/// # Errors
/// One line when the daemon cannot be watched (`pidfd_open`).
pub fn run(a: &SentinelArgs) -> Result<(), String> {
    // A service manager stopping the unit after the daemon died signals us too: we
    // end by ourselves, after the restart or detach that matters.
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: installing SIG_IGN runs no handler code.
        let _ = unsafe { nix::sys::signal::signal(s, nix::sys::signal::SigHandler::SigIgn) };
    }
    // The daemon's "my next exit is an upgrade" (see `sessionfs upgrade`): blocked,
    // and read from the pending set when the daemon has gone.
    let mut usr2 = nix::sys::signal::SigSet::empty();
    usr2.add(Signal::SIGUSR2);
    let _ = usr2.thread_block();
    // Holding anything else of the daemon's would keep it alive; holding the FUSE
    // descriptor without --supervise would keep a dead connection (ENOTCONN) alive.
    let held: Vec<RawFd> = [a.fuse_fd, a.root_fd].into_iter().flatten().collect();
    close_others(&held);
    let mp = a.mountpoint.as_path();
    let ours =
        |dev: u64| mount_entry_at(mp).is_some_and(|e| e.is_sessionfs() && e.kernel_dev() == dev);
    let mut pid = a.pid;
    let mut restarts: Vec<Instant> = Vec::new();
    loop {
        wait_exit(pid)?;
        let died_at = crate::clock::now_ns();
        if !ours(a.dev) {
            return Ok(()); // unmounted cleanly, or replaced by another mount
        }
        let when = crate::clock::now_rfc3339();
        restarts.retain(|t| t.elapsed() < RESTART_WINDOW);
        let upgrade = usr2_pending();
        if upgrade {
            let _ = usr2.wait(); // consume it
        }
        if let (Some(fuse), Some(root)) = (a.fuse_fd, a.root_fd) {
            // A new daemon that dies before it serves is one more crash: try again
            // until the restart budget is spent.
            let mut upgrade = upgrade;
            let mut served = None;
            // After a failed start, the binary this supervisor runs: a broken package
            // must not take the mount down (the upgrade then reports the old binary).
            let mut own_exe = false;
            loop {
                restarts.retain(|t| t.elapsed() < RESTART_WINDOW);
                if !upgrade && restarts.len() >= MAX_RESTARTS {
                    eprintln!(
                        "{when} ERROR sessionfs supervisor: {} crashes in {} s: giving up",
                        restarts.len(),
                        RESTART_WINDOW.as_secs()
                    );
                    break;
                }
                if !upgrade {
                    restarts.push(Instant::now());
                }
                let t = Instant::now();
                match restart(a, fuse, root, died_at, own_exe) {
                    Ok(new) => {
                        served = Some((new, t.elapsed()));
                        break;
                    }
                    Err(e) => eprintln!(
                        "{when} ERROR sessionfs supervisor: the daemon started after {pid} failed: {e}{}",
                        if own_exe {
                            ""
                        } else {
                            "; trying the binary this supervisor runs"
                        }
                    ),
                }
                upgrade = false;
                own_exe = true;
            }
            if let Some((new, took)) = served {
                if upgrade {
                    eprintln!(
                        "{when} INFO sessionfs supervisor: upgrade: daemon {pid} handed over; daemon {new} serves {} after {} ms",
                        mp.display(),
                        took.as_millis()
                    );
                } else {
                    eprintln!(
                        "{when} WARN sessionfs supervisor: daemon {pid} died without unmounting; daemon {new} serves {} again after {} ms (restart {} in {} s)",
                        mp.display(),
                        took.as_millis(),
                        restarts.len(),
                        RESTART_WINDOW.as_secs()
                    );
                }
                pid = new;
                continue;
            }
        }
        give_up(a, pid, mp);
        return Ok(());
    }
}

/// No daemon will serve the mount again: detach it (fail open), or leave it to
/// answer ENOTCONN once our descriptors close (fail closed).
fn give_up(a: &SentinelArgs, pid: i32, mp: &Path) {
    // The dead daemon's pid file names no daemon any more.
    let pf = crate::mount::pid_file(&crate::mount::mount_id(mp));
    if std::fs::read_to_string(&pf).is_ok_and(|s| s.trim() == pid.to_string()) {
        let _ = std::fs::remove_file(&pf);
    }
    if !a.fail_open {
        return;
    }
    let when = crate::clock::now_rfc3339();
    match nix::mount::umount2(mp, MntFlags::MNT_DETACH) {
        Ok(()) => eprintln!(
            "{when} WARN sessionfs sentinel: daemon {pid} died without unmounting; detached {} (fail open: writes now reach the backing directory unjournaled until sessionfs is mounted again)",
            mp.display()
        ),
        Err(e) => eprintln!(
            "{when} ERROR sessionfs sentinel: daemon {pid} died; could not detach {}: {e}",
            mp.display()
        ),
    }
}

/// Start a daemon on the live connection with the dead one's command line; returns
/// its pid once it reports that it serves.
fn restart(
    a: &SentinelArgs,
    fuse: RawFd,
    root: RawFd,
    died_at: i64,
    own_exe: bool,
) -> Result<i32, String> {
    let exe = match &a.exe {
        // `/proc/self/exe` runs even if the file was replaced or deleted.
        _ if own_exe => PathBuf::from("/proc/self/exe"),
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(|e| format!("our binary: {e}"))?,
    };
    let (rd, wr) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    // The read end stays ours: close-on-exec so the daemon holds only the write end.
    let _ = nix::fcntl::fcntl(
        &rd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    let mut cmd = Command::new(&exe);
    cmd.args(&a.argv)
        .env(ENV_FUSE_FD, fuse.to_string())
        .env(ENV_ROOT_FD, root.to_string())
        .env(ENV_READY_FD, wr.as_raw_fd().to_string())
        .env(ENV_MOUNTPOINT, &a.mountpoint)
        .env(ENV_DIED_AT_NS, died_at.to_string())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if let Some(s) = &a.source {
        cmd.env(ENV_SOURCE, s);
    }
    if let Some(s) = &a.state_dir {
        cmd.env(ENV_STATE_DIR, s);
    }
    let mut child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
    drop(wr);
    let mut f = std::fs::File::from(rd);
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut msg = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [nix::poll::PollFd::new(
            f.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = nix::poll::PollTimeout::try_from(left.as_millis().min(60_000) as i32)
            .unwrap_or(nix::poll::PollTimeout::ZERO);
        match nix::poll::poll(&mut fds, ms) {
            Ok(0) => break,
            Ok(_) => {
                let _ = f.read_to_string(&mut msg);
                break;
            }
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    if msg.starts_with("ok") {
        return Ok(child.id() as i32);
    }
    let exited = child.try_wait().ok().flatten();
    let _ = child.kill();
    let _ = child.wait();
    Err(match (msg.trim(), exited) {
        ("", Some(st)) => format!("{} exited before serving ({st})", exe.display()),
        ("", None) => format!("not serving after {} s", READY_TIMEOUT.as_secs()),
        (m, _) => m.to_string(),
    })
}

/// Whether a supervisor (`sessionfs sentinel --fuse-fd …`) holds the connection of
/// the mount with kernel device `dev`.
fn supervised(dev: u64) -> bool {
    let want = format!("--dev\0{dev}\0");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                let has = |n: &[u8]| c.windows(n.len()).any(|w| w == n);
                has(b"sentinel\0") && has(b"--fuse-fd\0") && has(want.as_bytes())
            })
        })
}

/// `sessionfs upgrade MOUNTPOINT`: the supervised daemon drains its requests, writes
/// its journal and exits; the supervisor (or systemd, from its fd store, on exit
/// status 75) starts the sessionfs binary now at the path the daemon was started
/// from on the same connection. The mount, its `st_dev` and
/// every inode number stay; requests read and not begun are re-sent to the new
/// daemon. Prints one line with both pids and the time taken.
///
/// # Errors
/// One line: not a sessionfs mount, no supervisor (mounted without `--supervise`),
/// no pid file, the signal failed, or no new daemon within 20 s.
pub fn upgrade(mp: &Path) -> Result<(), String> {
    let canon = std::fs::canonicalize(mp).map_err(|e| format!("{}: {e}", mp.display()))?;
    let dev = mount_entry_at(&canon)
        .filter(|e| e.is_sessionfs())
        .map(|e| e.kernel_dev())
        .ok_or_else(|| format!("{} is not a sessionfs mount", canon.display()))?;
    // A supervisor process, or systemd's fd store (the daemon says so in `.status`).
    let fd_store = std::fs::read(canon.join(".status"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v["restart"] == "fd-store");
    if !fd_store && !supervised(dev) {
        return Err(format!(
            "{} has no supervisor: mount it with --supervise (-o supervise), or run it under systemd with FileDescriptorStoreMax=, to upgrade without unmounting; or unmount and mount again",
            canon.display()
        ));
    }
    let pf = crate::mount::pid_file(&crate::mount::mount_id(&canon));
    let read_pid = || -> Option<i32> { std::fs::read_to_string(&pf).ok()?.trim().parse().ok() };
    let old = read_pid().ok_or_else(|| format!("no daemon pid file {}", pf.display()))?;
    let t = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old), Signal::SIGUSR2)
        .map_err(|e| format!("signal daemon {old}: {e}"))?;
    while t.elapsed() < Duration::from_secs(20) {
        // Under systemd the restart comes after this command (`ExecReload=`) ends: it
        // reports the hand-over, not the new daemon.
        let gone =
            crate::identity::read_stat(old as u32).is_none_or(|s| matches!(s.state, 'Z' | 'X'));
        if fd_store && gone {
            println!(
                "{}: daemon {old} handed over in {} ms; systemd starts the new one on the live mount",
                canon.display(),
                t.elapsed().as_millis()
            );
            return Ok(());
        }
        if let Some(new) = read_pid().filter(|&p| p != old)
            && Path::new(&format!("/proc/{new}")).exists()
        {
            // The supervisor falls back to its own binary when the installed one
            // does not start.
            let exe = std::fs::read_link(format!("/proc/{new}/exe")).unwrap_or_default();
            if exe.to_string_lossy().ends_with(" (deleted)") {
                return Err(format!(
                    "{}: the installed sessionfs did not start; daemon {new} runs the previous binary again (see the daemon's log)",
                    canon.display()
                ));
            }
            println!(
                "{}: upgraded, daemon {old} -> {new} in {} ms",
                canon.display(),
                t.elapsed().as_millis()
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(format!(
        "{}: no new daemon 20 s after the upgrade signal: see {}",
        canon.display(),
        "the daemon's log (sessionfs.log in its state dir)"
    ))
}
