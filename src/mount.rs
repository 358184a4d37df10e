//! Mounting and unmounting: pre-flight checks with one-line errors, the overlay
//! (O_PATH fd opened before the mount), daemonizing with a readiness pipe, the pid
//! file, clean shutdown on SIGTERM/SIGINT/SIGHUP, and `sessionfs umount`.
//!
//! Every error this module returns is one line meant for the user; `main` prints it
//! after `sessionfs: error: ` and exits 1. Whatever fails, nothing is left mounted:
//! every check and every file we need (state dir, log, pid dir) is done or opened
//! before the mount, and a failure after it drops the session, which unmounts.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuser::{Config, MountOption, SessionACL};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::MntFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::stat::Mode;

use crate::fs::{FsConfig, SessionFs};
use crate::journal::{Journal, JournalOptions};
use crate::lanes::LaneRules;

/// How long `sessionfs umount` waits for the daemon to flush its journal and exit.
pub const UMOUNT_WAIT: Duration = Duration::from_secs(30);

/// How long a `statfs` on an existing FUSE mount may take before its daemon is
/// considered not responding.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The daemon's own files (journal segments, salvage files, log) are private: the
/// process umask while serving. Files created *through* the mount do not see it:
/// each FUSE worker thread applies the caller's umask itself (`sys::as_caller`, after
/// `unshare(CLONE_FS)` gave the thread its own umask).
const DAEMON_UMASK: u32 = 0o077;

/// Longest mount id that still gets a pid file (`<id>.pid` plus the temporary name
/// used to write it atomically must fit in NAME_MAX = 255 bytes).
const MAX_PID_ID_LEN: usize = 200;

/// Everything `sessionfs mount` needs, parsed and validated by the CLI.
///
/// Paths may be relative to the caller's cwd: [`mount`] resolves them before the
/// daemon changes its cwd to `/`.
#[derive(Debug, Clone)]
pub struct MountSpec {
    /// Where to mount (an existing directory).
    pub mountpoint: PathBuf,
    /// Directory to serve; `None` = the mountpoint's own contents (overlay).
    pub source: Option<PathBuf>,
    /// Stay in the foreground, log to stderr.
    pub foreground: bool,
    /// `-o allow_other`.
    pub allow_other: bool,
    /// `-o ro`.
    pub read_only: bool,
    /// `-o debug`: log every request at debug level.
    pub debug: bool,
    /// FUSE worker threads (≥ 1; 0 is treated as 1).
    pub threads: usize,
    /// Journal state dir; `None` = [`default_state_dir`] for the mount id.
    pub state_dir: Option<PathBuf>,
    /// `--lanes` rules file (JSON).
    pub lanes: Option<PathBuf>,
    /// Journal off (`--no-journal`).
    pub no_journal: bool,
    /// Journal size bound, bytes.
    pub journal_max_bytes: u64,
    /// Journal age bound (records older than this are dropped with their segment).
    pub journal_max_age: Duration,
    /// Salvage store bounds, bytes: all files, and one file's share (`None`: an
    /// eighth of the total).
    pub salvage_max_bytes: u64,
    /// See `salvage_max_bytes`.
    pub salvage_file_max_bytes: Option<u64>,
    /// Most bytes of unwritten journal records kept in memory
    /// ([`JournalOptions::max_pending`]).
    pub journal_max_pending: u64,
    /// Attribute and entry TTL handed to the kernel.
    pub ttl: Duration,
    /// Negotiate READDIRPLUS.
    pub readdirplus: bool,
    /// Inode table bound (`--max-inodes`); `None`: only inodes holding their own fd
    /// are bounded, from RLIMIT_NOFILE.
    pub max_inodes: Option<usize>,
    /// Reach inodes by file handles where possible (off with `--no-file-handles`).
    pub file_handles: bool,
    /// `--strict-stat`: forward no-op metadata changes too (see the README, "Stat").
    pub strict_stat: bool,
    /// Reap locks whose holder died (off with `--no-reap`).
    pub reap: bool,
    /// Group that may read `.journal` and `.locks` (`--journal-group`).
    pub journal_group: Option<u32>,
    /// Keep a dead daemon's mount (ENOTCONN) instead of detaching it (`--fail-closed`).
    pub fail_closed: bool,
    /// Restart a crashed daemon on the live connection (`--supervise`).
    pub supervise: bool,
}

/// The mount id: a canonical mountpoint escaped exactly like `systemd-escape --path`
/// (`/root/.openclaw/agents/main/sessions` → `root-.openclaw-agents-main-sessions`).
///
/// Shape: leading/trailing and repeated `/` and `.` components dropped, `/` → `-`;
/// bytes other than ASCII alphanumerics, `:`, `_` and `.` → `\xNN` (lowercase hex,
/// per byte, so non-UTF-8 names work); a leading `.` → `\x2e`; `/` → `-`. Used for the
/// pid file name (`<id>.pid`, which the systemd unit's `PIDFile=/run/sessionfs/%i.pid`
/// relies on) and the default state dir. Pass a canonical path: `..` is not resolved.
pub fn mount_id(mountpoint: &Path) -> String {
    let comps: Vec<&[u8]> = mountpoint
        .as_os_str()
        .as_bytes()
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    if comps.is_empty() {
        return "-".into();
    }
    let joined = comps.join(&b'/');
    let mut out = String::with_capacity(joined.len());
    for (i, &b) in joined.iter().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.') => {
                out.push(b as char)
            }
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// Default journal state dir of mount `id`: `/var/lib/sessionfs/<id>` as root, else
/// `$XDG_STATE_HOME/sessionfs/<id>`, or `$HOME/.local/state/sessionfs/<id>` when
/// XDG_STATE_HOME is unset or relative. Always absolute.
///
/// # Errors
/// A one-line message when not root and neither XDG_STATE_HOME nor HOME is an
/// absolute path (the fix is `--state-dir DIR`).
pub fn default_state_dir(id: &str) -> Result<PathBuf, String> {
    if nix::unistd::geteuid().is_root() {
        return Ok(PathBuf::from("/var/lib/sessionfs").join(id));
    }
    let abs = |v: Option<std::ffi::OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    let base = abs(std::env::var_os("XDG_STATE_HOME"))
        .or_else(|| abs(std::env::var_os("HOME")).map(|h| h.join(".local/state")))
        .ok_or_else(|| {
            "no default state dir: neither XDG_STATE_HOME nor HOME is an absolute path; pass --state-dir DIR".to_string()
        })?;
    Ok(base.join("sessionfs").join(id))
}

/// Directory holding the pid files: `/run/sessionfs` as root, else
/// `$XDG_RUNTIME_DIR/sessionfs`, or `$TMPDIR/sessionfs-<uid>` (`/tmp` when TMPDIR is
/// unset or relative). Always absolute. `sessionfs mount` creates it mode 0755 and
/// refuses it when it is a symlink or not owned by the caller; a group- or
/// world-writable one is repaired to 0755.
pub fn pid_dir() -> PathBuf {
    let euid = nix::unistd::geteuid();
    if euid.is_root() {
        return PathBuf::from("/run/sessionfs");
    }
    let abs = |k: &str| {
        std::env::var_os(k)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    abs("XDG_RUNTIME_DIR")
        .map(|d| d.join("sessionfs"))
        .unwrap_or_else(|| {
            abs("TMPDIR")
                .unwrap_or_else(|| PathBuf::from("/tmp"))
                .join(format!("sessionfs-{euid}"))
        })
}

/// Pid file of the daemon serving mount `id`: `<pid_dir>/<id>.pid`, one line with the
/// decimal pid and `\n`. Written atomically (temporary file + rename) once the mount is
/// live, removed when the daemon exits. Read by `sessionfs umount` and by systemd
/// (`PIDFile=`).
pub fn pid_file(id: &str) -> PathBuf {
    pid_dir().join(format!("{id}.pid"))
}

/// One line of `/proc/self/mountinfo`, the fields sessionfs needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Mount point, unescaped (absolute, as the kernel shows it to this process).
    pub mount_point: PathBuf,
    /// Filesystem type (`fuse`, `fuse.sessionfs`, `ext4`, …).
    pub fstype: String,
    /// The source column (`sessionfs:<dir>` for our mounts).
    pub source: String,
    /// Device major number (0 for FUSE).
    pub major: u32,
    /// Device minor number (for FUSE: the connection number).
    pub minor: u32,
}

impl MountEntry {
    /// The device number in the kernel's internal encoding (`major << 20 | minor`), the
    /// number `/sys/fs/fuse/connections/<n>` and `fuse_connection:` in the fdinfo of a
    /// `/dev/fuse` fd print. For FUSE (major 0) it equals the minor.
    pub fn kernel_dev(&self) -> u64 {
        (u64::from(self.major) << 20) | u64::from(self.minor)
    }

    /// Is this a sessionfs mount? See [`is_sessionfs_mount`].
    pub fn is_sessionfs(&self) -> bool {
        is_sessionfs_mount(&self.fstype, &self.source)
    }
}

/// The topmost mount at exactly `path` (compared byte for byte, so pass a canonical
/// path), from `/proc/self/mountinfo`; `None` when nothing is mounted there or
/// mountinfo cannot be read.
pub fn mount_entry_at(path: &Path) -> Option<MountEntry> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.as_os_str().as_bytes();
    let mut found = None;
    for line in info.lines() {
        let Some((a, b)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = a.split(' ').collect();
        let (Some(devno), Some(mp)) = (fields.get(2), fields.get(4)) else {
            continue;
        };
        if unescape(mp) != want {
            continue;
        }
        let (major, minor) = devno
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .unwrap_or((u32::MAX, u32::MAX));
        let mut bs = b.split(' ');
        found = Some(MountEntry {
            mount_point: path.to_path_buf(),
            fstype: bs.next().unwrap_or("").to_string(),
            source: String::from_utf8_lossy(&unescape(bs.next().unwrap_or(""))).into_owned(),
            major,
            minor,
        }); // the last one is the top of the stack
    }
    found
}

/// Every sessionfs mount, from mountinfo.
pub(crate) fn sessionfs_mounts() -> Vec<PathBuf> {
    let mut v = sessionfs_mounts_below(Path::new("/"));
    if mount_entry_at(Path::new("/")).is_some_and(|e| e.is_sessionfs()) {
        v.insert(0, PathBuf::from("/"));
    }
    v
}

/// Every sessionfs mount strictly below `dir` (canonical), from mountinfo.
fn sessionfs_mounts_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in info.lines() {
        let Some((a, b)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mp) = a.split(' ').nth(4) else {
            continue;
        };
        let mp = PathBuf::from(OsStr::from_bytes(&unescape(mp)));
        let mut bs = b.split(' ');
        let fstype = bs.next().unwrap_or("");
        let source = String::from_utf8_lossy(&unescape(bs.next().unwrap_or(""))).into_owned();
        if mp != dir && mp.starts_with(dir) && is_sessionfs_mount(fstype, &source) {
            out.push(mp);
        }
    }
    out
}

/// `sessionfs mount-all`: one mount over `<root>/agents` (`spec.mountpoint`), so that
/// every agent's sessions directory, present or created later, is on the mount before
/// its first write (a watcher that mounts new agents as they appear races the
/// gateway's `mkdir` + first append). Idempotent: an existing sessionfs mount there is
/// success. Errors (one line): the directory is missing; a sessionfs mount below it
/// (an older per-agent mount) would be hidden, so it must be unmounted first; else as
/// [`mount`].
pub fn mount_all(spec: MountSpec) -> Result<(), String> {
    if std::env::var_os(crate::supervisor::ENV_FUSE_FD).is_some() || stored_fds().is_some() {
        return mount(spec); // a restart: the mount exists (see `resume`)
    }
    let dir = fs::canonicalize(&spec.mountpoint).map_err(|e| {
        format!(
            "{}: {e} (is OpenClaw's state root right? pass --root)",
            spec.mountpoint.display()
        )
    })?;
    if mount_entry_at(&dir).is_some_and(|e| e.is_sessionfs()) {
        println!("{}: already a sessionfs mount", dir.display());
        return Ok(());
    }
    if let Some(inner) = sessionfs_mounts_below(&dir).first() {
        return Err(format!(
            "{} is a sessionfs mount below {}: unmount it first (sessionfs umount {}), mount-all covers it",
            inner.display(),
            dir.display(),
            inner.display()
        ));
    }
    mount(spec)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Does a mountinfo (fstype, source) pair describe a sessionfs mount? True for an
/// fstype starting with `fuse` whose source starts with `sessionfs:` or whose fstype is
/// `fuse.sessionfs`.
pub fn is_sessionfs_mount(fstype: &str, source: &str) -> bool {
    fstype.starts_with("fuse") && (source.starts_with("sessionfs:") || fstype == "fuse.sessionfs")
}

/// The absolute, canonical form of `p` without touching a mount sitting at `p` itself
/// when possible: the parent is canonicalized and the last component joined, so that
/// a dead (ENOTCONN) or hung FUSE mount at `p` can still be named. Falls back to full
/// canonicalization when `p` is not a mountpoint (it may be a symlink).
fn resolve(p: &Path) -> io::Result<PathBuf> {
    let abs = std::path::absolute(p)?;
    if let (Some(parent), Some(name)) = (abs.parent(), abs.file_name())
        && let Ok(cp) = fs::canonicalize(parent)
    {
        let cand = cp.join(name);
        if mount_entry_at(&cand).is_some() {
            return Ok(cand);
        }
        return match fs::canonicalize(&cand) {
            Ok(c) => Ok(c),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(e),
            Err(_) => Ok(cand),
        };
    }
    fs::canonicalize(&abs)
}

/// `p` made absolute, with its longest existing prefix canonicalized (the rest is
/// appended as given); for paths that may not exist yet, such as a state dir.
fn absolute_path(p: &Path) -> io::Result<PathBuf> {
    let abs = std::path::absolute(p)?;
    let mut existing = abs.clone();
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    loop {
        if let Ok(c) = fs::canonicalize(&existing) {
            let mut out = c;
            for comp in rest.iter().rev() {
                out.push(comp);
            }
            return Ok(out);
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent.to_path_buf();
            }
            _ => return Ok(abs),
        }
    }
}

/// What a `statfs` of an existing FUSE mount says about its daemon.
enum Probe {
    /// It answered.
    Live,
    /// ENOTCONN: the daemon is gone (killed), the mount is dead.
    Stale,
    /// No answer within [`PROBE_TIMEOUT`] (stopped or stuck daemon).
    Hung,
    /// Another error.
    Other,
}

/// `statfs(path)` (always a round trip to the daemon, never answered from a cache) in
/// a helper thread, with a timeout so that a stuck daemon cannot hang us.
fn probe(path: &Path) -> Probe {
    probe_within(path, PROBE_TIMEOUT)
}

/// [`probe`] with a timeout of `wait`.
fn probe_within(path: &Path, wait: Duration) -> Probe {
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.to_path_buf();
    let Ok(handle) = std::thread::Builder::new()
        .name("probe".into())
        .spawn(move || {
            let _ = tx.send(nix::sys::statfs::statfs(&p).map(drop));
        })
    else {
        return Probe::Other;
    };
    let r = rx.recv_timeout(wait);
    if r.is_ok() {
        // The thread has sent its only message: joining is immediate, and the process
        // is single-threaded again before `mount` forks.
        let _ = handle.join();
    }
    match r {
        Ok(Ok(())) => Probe::Live,
        Ok(Err(Errno::ENOTCONN)) => Probe::Stale,
        Ok(Err(_)) => Probe::Other,
        Err(_) => Probe::Hung,
    }
}

fn stale_error(mp: &Path, sessionfs: bool) -> String {
    let d = mp.display();
    if sessionfs {
        format!(
            "stale sessionfs mount at {d}: run `sessionfs umount {d}` (or `fusermount3 -uz {d}`)"
        )
    } else {
        format!("stale FUSE mount at {d} (its daemon is gone): run `fusermount3 -uz {d}`")
    }
}

/// Everything resolved and opened before anything is mounted. All paths are absolute.
struct Plan {
    /// Canonical mountpoint.
    mountpoint: PathBuf,
    /// Canonical served directory (== `mountpoint` for the overlay).
    source: PathBuf,
    /// Mount id ([`mount_id`] of `mountpoint`).
    id: String,
    /// Absolute journal state dir.
    state_dir: PathBuf,
    /// This mount attempt created it: a failed attempt removes it again.
    created_state_dir: bool,
    /// The pid dir, checked and held open; `None` when the id is too long for a name.
    pid_dir: Option<PidDir>,
    /// Background mode: `<state_dir>/sessionfs.log`, opened for appending.
    log: Option<fs::File>,
}

/// The checked pid dir.
struct PidDir {
    path: PathBuf,
    fd: OwnedFd,
    /// The unsafe mode it had before we repaired it to 0755.
    repaired_from: Option<u32>,
}

/// Checks that must pass before anything is mounted, and the files the daemon needs;
/// the error is one line.
fn prepare(spec: &MountSpec) -> Result<Plan, String> {
    let given = &spec.mountpoint;
    let mp = resolve(given).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => format!(
            "mountpoint {} does not exist: create it first (mkdir -p {})",
            given.display(),
            given.display()
        ),
        io::ErrorKind::PermissionDenied => {
            format!("mountpoint {}: permission denied", given.display())
        }
        _ => format!("mountpoint {}: {e}", given.display()),
    })?;
    if let Some(m) = mount_entry_at(&mp)
        && m.fstype.starts_with("fuse")
    {
        match probe(&mp) {
            Probe::Stale => return Err(stale_error(&mp, m.is_sessionfs())),
            Probe::Hung => {
                return Err(format!(
                    "{} is already a {} mount, and its daemon is not responding",
                    mp.display(),
                    if m.is_sessionfs() {
                        "sessionfs"
                    } else {
                        "FUSE"
                    }
                ));
            }
            _ if m.is_sessionfs() => {
                return Err(format!(
                    "{} is already a sessionfs mount: unmount it first (sessionfs umount {})",
                    mp.display(),
                    mp.display()
                ));
            }
            _ => {}
        }
    }
    let meta = fs::metadata(&mp).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTCONN) => stale_error(&mp, false),
        Some(libc::EACCES) => format!("mountpoint {}: permission denied", mp.display()),
        _ => format!("mountpoint {}: {e}", mp.display()),
    })?;
    if !meta.is_dir() {
        return Err(format!("mountpoint {} is not a directory", mp.display()));
    }

    let source = match &spec.source {
        None => mp.clone(),
        Some(s) => {
            let c = fs::canonicalize(s).map_err(|e| format!("source {}: {e}", s.display()))?;
            let m = fs::metadata(&c).map_err(|e| format!("source {}: {e}", s.display()))?;
            if !m.is_dir() {
                return Err(format!("source {} is not a directory", s.display()));
            }
            if c != mp && mp.starts_with(&c) {
                return Err(format!(
                    "source {} contains the mountpoint {}: the daemon would recurse into its own mount; serve a directory that is not an ancestor of the mountpoint",
                    c.display(),
                    mp.display()
                ));
            }
            c
        }
    };

    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse is missing: load the fuse module (modprobe fuse) or install fuse3 (apt-get install fuse3)".into());
    }
    if !nix::unistd::geteuid().is_root() && which("fusermount3").is_none() {
        return Err("not permitted: run as root, or install fuse3 so that the setuid fusermount3 helper can mount for you".into());
    }

    let id = mount_id(&mp);
    let state_dir = match &spec.state_dir {
        Some(d) => absolute_path(d).map_err(|e| format!("state dir {}: {e}", d.display()))?,
        None => default_state_dir(&id)?,
    };
    let uses_state_dir = !spec.no_journal || !spec.foreground;
    if uses_state_dir {
        if state_dir.starts_with(&mp) {
            return Err(format!(
                "state dir {} is inside the mountpoint {}: the journal would be written through its own mount; pass a --state-dir outside it",
                state_dir.display(),
                mp.display()
            ));
        }
        if state_dir.starts_with(&source) {
            return Err(format!(
                "state dir {} is inside the source tree {}: the journal's writes would show up in the served directory; pass a --state-dir outside it",
                state_dir.display(),
                source.display()
            ));
        }
    }

    let pid_dir = if id.len() <= MAX_PID_ID_LEN {
        Some(open_pid_dir()?)
    } else {
        None
    };

    let mut created_state_dir = false;
    if uses_state_dir {
        created_state_dir = fs::symlink_metadata(&state_dir).is_err();
        // Private: journal records and salvaged transcript lines are session content.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&state_dir)
            .map_err(|e| format!("state dir {}: {e}", state_dir.display()))?;
        check_state_dir(&state_dir)?;
    }
    let log = if spec.foreground {
        None
    } else {
        let p = state_dir.join("sessionfs.log");
        let f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&p)
            .map_err(|e| format!("log file {}: {e}", p.display()))?;
        Some(f)
    };

    Ok(Plan {
        mountpoint: mp,
        source,
        id,
        state_dir,
        created_state_dir,
        pid_dir,
        log,
    })
}

/// Refuse a state dir another user could tamper with: the journal in it is evidence.
///
/// # Errors
/// One line when `dir` is not a directory, is not owned by the daemon's user, or is
/// writable by its group or by others.
fn check_state_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(dir).map_err(|e| format!("state dir {}: {e}", dir.display()))?;
    if !m.is_dir() {
        return Err(format!("state dir {} is not a directory", dir.display()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if m.uid() != me {
        return Err(format!(
            "state dir {} belongs to uid {}, not to the daemon's user (uid {me}): another user could alter the journal; chown it or pass another --state-dir",
            dir.display(),
            m.uid()
        ));
    }
    if m.mode() & 0o022 != 0 {
        return Err(format!(
            "state dir {} is writable by group or others (mode {:04o}): anyone could alter the journal; run `chmod 700 {}` or pass another --state-dir",
            dir.display(),
            m.mode() & 0o7777,
            dir.display()
        ));
    }
    Ok(())
}

/// Create (0755) or check the pid dir and hold it open: it must not be a symlink and
/// must belong to us; group/world write access is removed.
fn open_pid_dir() -> Result<PidDir, String> {
    let path = pid_dir();
    let d = path.display();
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&path)
    {
        Ok(()) => {}
        Err(e) => return Err(format!("pid dir {d}: {e}")),
    }
    let fd = nix::fcntl::open(
        &path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::ELOOP | Errno::ENOTDIR => {
            format!("pid dir {d} is a symlink or not a directory: refusing to use it; remove it")
        }
        e => format!("pid dir {d}: {}", e.desc()),
    })?;
    let st = nix::sys::stat::fstat(&fd).map_err(|e| format!("pid dir {d}: {}", e.desc()))?;
    let euid = nix::unistd::geteuid();
    if st.st_uid != euid.as_raw() {
        return Err(format!(
            "pid dir {d} belongs to uid {}, not to us (uid {euid}): refusing to use it; remove it{}",
            st.st_uid,
            if euid.is_root() {
                ""
            } else {
                " or set XDG_RUNTIME_DIR"
            }
        ));
    }
    let mode = st.st_mode & 0o7777;
    let mut repaired_from = None;
    if mode != 0o755 {
        nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(0o755))
            .map_err(|e| format!("pid dir {d}: chmod 0755: {}", e.desc()))?;
        if mode & 0o022 != 0 {
            repaired_from = Some(mode);
        }
    }
    Ok(PidDir {
        path,
        fd,
        repaired_from,
    })
}

/// Write `<id>.pid` in the held pid dir: our pid and a newline (see
/// [`replace_in_pid_dir`]).
fn write_pid_file(dir: &PidDir, id: &str) -> io::Result<()> {
    let pid = std::process::id();
    replace_in_pid_dir(dir, &format!("{id}.pid"), format!("{pid}\n").as_bytes())
}

/// Write `<id>.lost` in the held pid dir: `<pid>\n<msg>\n`, where `msg` is the
/// journal's one-line [`crate::journal::Loss`] (see [`replace_in_pid_dir`]). Read and
/// removed by [`umount`] once the daemon has exited; removed by the next mount of the
/// id.
fn write_loss_file(dir: &PidDir, id: &str, msg: &str) -> io::Result<()> {
    let pid = std::process::id();
    replace_in_pid_dir(
        dir,
        &loss_file_name(id),
        format!("{pid}\n{msg}\n").as_bytes(),
    )
}

/// Put `bytes` at `name` in the held pid dir: a fresh temporary file
/// (O_CREAT|O_EXCL|O_NOFOLLOW, mode 0644 whatever the umask) renamed over the name, so
/// that a planted symlink is replaced, never followed, and readers never see a partial
/// file. The temporary file is removed on failure.
fn replace_in_pid_dir(dir: &PidDir, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = format!(".{name}.{}.tmp", std::process::id());
    let unlink_tmp = || {
        let _ = nix::unistd::unlinkat(
            &dir.fd,
            tmp.as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    };
    unlink_tmp();
    let fd = nix::fcntl::openat(
        &dir.fd,
        tmp.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )?;
    let r = (|| {
        nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(0o644))?;
        let mut f = fs::File::from(fd);
        f.write_all(bytes)?;
        drop(f);
        nix::fcntl::renameat(&dir.fd, tmp.as_str(), &dir.fd, name)?;
        Ok(())
    })();
    if r.is_err() {
        unlink_tmp();
    }
    r
}

/// Name of the loss file of mount `id` in the pid dir (see [`write_loss_file`]).
fn loss_file_name(id: &str) -> String {
    format!("{id}.lost")
}

/// [`umount`]: take (read and remove) the loss file of mount `id` if one of `daemons`
/// wrote it, or, when no daemon was known, if it was written after `since`. Returns
/// its message.
fn take_loss_file(id: &str, daemons: &[i32], since: std::time::SystemTime) -> Option<String> {
    let path = pid_dir().join(loss_file_name(id));
    let meta = fs::symlink_metadata(&path).ok()?;
    if !meta.is_file() || meta.len() > 64 << 10 {
        return None;
    }
    let text = fs::read_to_string(&path).ok()?;
    let (pid, msg) = text.split_once('\n')?;
    let pid: i32 = pid.trim().parse().ok()?;
    let ours = if daemons.is_empty() {
        meta.modified().is_ok_and(|m| m >= since)
    } else {
        daemons.contains(&pid)
    };
    if !ours {
        return None;
    }
    let _ = fs::remove_file(&path);
    Some(msg.trim().to_string())
}

/// Read a pid file without following a symlink or blocking on a FIFO; `None` unless it
/// is a regular file holding a positive decimal pid.
fn read_pid_at(dir: impl AsFd, name: &OsStr) -> Option<i32> {
    let fd = nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let st = nix::sys::stat::fstat(&fd).ok()?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return None;
    }
    let mut s = String::new();
    fs::File::from(fd).take(32).read_to_string(&mut s).ok()?;
    s.trim().parse::<i32>().ok().filter(|p| *p > 0)
}

/// Read the pid file at `path` (see [`read_pid_at`]).
fn read_pid_file(path: &Path) -> Option<i32> {
    let dir = nix::fcntl::open(
        path.parent()?,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    read_pid_at(&dir, path.file_name()?)
}

/// Remove our pid file, unless it already names another process.
fn remove_pid_file(dir: &PidDir, id: &str) {
    let name = format!("{id}.pid");
    if read_pid_at(&dir.fd, OsStr::new(&name)) == Some(std::process::id() as i32) {
        let _ = nix::unistd::unlinkat(
            &dir.fd,
            name.as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.exists())
}

/// `sessionfs mount`: check everything, open the served directory (O_PATH, before the
/// mount hides it in the overlay case), mount, and serve.
///
/// Background (`spec.foreground == false`): forks a daemon (new session, cwd `/`,
/// stdin/stdout on /dev/null, stderr appended to `<state-dir>/sessionfs.log`) and
/// returns `Ok(())` only once the mount is live and the pid file ([`pid_file`]) is
/// written; the daemon runs until the mount is unmounted. Foreground: serves in this
/// process, logging to stderr, and returns once the mount has been unmounted
/// (`sessionfs umount`, `umount`, `fusermount3 -u`, or SIGTERM/SIGINT/SIGHUP).
///
/// # Errors
/// One line each; nothing is mounted when any is returned:
/// - the mountpoint is missing, not a directory, unreadable, already a sessionfs mount,
///   or a stale (ENOTCONN) FUSE mount;
/// - `--source` is missing, not a directory, or an ancestor of the mountpoint;
/// - the state dir is inside the mountpoint or the source tree, or cannot be created,
///   or (non-root) no default can be derived (`HOME` unset);
/// - `/dev/fuse` is missing; the caller may not mount (`not permitted: …`, including
///   the first line of fusermount3's complaint);
/// - the pid dir is a symlink or belongs to someone else;
/// - the lanes file is invalid, the journal cannot be opened, or the daemon died before
///   the mount was live.
///
/// In foreground mode a failure of the FUSE session after the mount was live is
/// returned as `fuse session: …` (the mount is gone by then).
pub fn mount(mut spec: MountSpec) -> Result<(), String> {
    if std::env::var_os(crate::supervisor::ENV_FUSE_FD).is_some() {
        return resume(&spec);
    }
    if let Some(fds) = stored_fds() {
        return resume_from_fd_store(&spec, fds);
    }
    // A daemon restarted by its supervisor runs with `/` for its cwd.
    if let Some(l) = &spec.lanes {
        spec.lanes = Some(absolute_path(l).map_err(|e| format!("lanes {}: {e}", l.display()))?);
    }
    let plan = prepare(&spec)?;
    let (created, state_dir) = (plan.created_state_dir, plan.state_dir.clone());
    let res = mount_planned(&spec, plan);
    // A mount that never went live leaves no state dir it made (the daemon, if it
    // got that far, has exited: its error came through the pipe as it ended).
    if res.is_err() && created && !spec.foreground {
        let _ = fs::remove_dir_all(&state_dir);
    }
    res
}

/// A descriptor number from the environment a supervisor started us with, owned from
/// here on (close-on-exec).
fn inherited_fd(var: &str) -> Result<OwnedFd, String> {
    let n: i32 = std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 2)
        .ok_or_else(|| format!("{var}: not a descriptor number"))?;
    // SAFETY: the supervisor passed this descriptor to us for our use alone; nothing
    // else in this process refers to it.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(n) };
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| format!("{var}: descriptor {n}: {e}"))?;
    Ok(fd)
}

/// Serve the live connection of a crashed daemon (started by its supervisor, see
/// [`crate::supervisor`]): the mount, the backing root and the paths come from the
/// supervisor, because the mountpoint must not be looked at while no daemon serves it.
fn resume(spec: &MountSpec) -> Result<(), String> {
    use crate::supervisor::*;
    let ready = inherited_fd(ENV_READY_FD)?;
    let fail = |msg: String| {
        let _ = nix::unistd::write(&ready, msg.as_bytes());
        msg
    };
    let live = inherited_fd(ENV_FUSE_FD).map_err(fail)?;
    let root = inherited_fd(ENV_ROOT_FD).map_err(fail)?;
    let mountpoint = std::env::var_os(ENV_MOUNTPOINT)
        .map(PathBuf::from)
        .ok_or_else(|| fail(format!("{ENV_MOUNTPOINT} is not set")))?;
    let source = std::env::var_os(ENV_SOURCE).map_or_else(|| mountpoint.clone(), PathBuf::from);
    let state_dir = std::env::var_os(ENV_STATE_DIR).map(PathBuf::from);
    serve_resumed(
        spec,
        Resumed {
            live,
            root,
            ready: Some(ready),
            mountpoint,
            source,
            state_dir,
            restart: Restart::Supervisor,
        },
    )
}

/// A live connection to serve again, and where.
struct Resumed {
    live: OwnedFd,
    root: OwnedFd,
    /// Where to say `ok` once serving (the supervisor's pipe), or an error line.
    ready: Option<OwnedFd>,
    mountpoint: PathBuf,
    source: PathBuf,
    /// `None`: the default for the mount id.
    state_dir: Option<PathBuf>,
    restart: Restart,
}

/// Serve a resumed connection: the plan from the given paths, without looking at the
/// mountpoint (no daemon serves it yet: a look would hang).
fn serve_resumed(spec: &MountSpec, r: Resumed) -> Result<(), String> {
    let fail = |msg: String| {
        if let Some(w) = &r.ready {
            let _ = nix::unistd::write(w, msg.as_bytes());
        }
        msg
    };
    let id = mount_id(&r.mountpoint);
    let state_dir = match r.state_dir {
        Some(d) => d,
        None => default_state_dir(&id).map_err(fail)?,
    };
    let lane_rules = match &spec.lanes {
        Some(p) => LaneRules::load(p).map_err(fail)?,
        None => LaneRules::empty(),
    };
    let pid_dir = if id.len() <= MAX_PID_ID_LEN {
        Some(open_pid_dir().map_err(fail)?)
    } else {
        None
    };
    let plan = Plan {
        mountpoint: r.mountpoint,
        source: r.source,
        id,
        state_dir,
        created_state_dir: false,
        pid_dir,
        log: None,
    };
    serve(
        spec,
        plan,
        r.root,
        lane_rules,
        r.ready,
        Some((r.live, r.restart)),
    )
}

/// The `/dev/fuse` and backing root descriptors systemd handed back from the fd store
/// (names [`crate::notify::FD_FUSE`], [`crate::notify::FD_ROOT`]), if it did.
fn stored_fds() -> Option<(std::os::fd::RawFd, std::os::fd::RawFd)> {
    let fds = crate::notify::listen_fds();
    let find = |n: &str| fds.iter().find(|(name, _)| name == n).map(|(_, fd)| *fd);
    Some((find(crate::notify::FD_FUSE)?, find(crate::notify::FD_ROOT)?))
}

/// Serve the live connection systemd kept in its fd store across a crash (or a
/// `sessionfs upgrade`) of the unit's daemon. The paths are the command line's, made
/// absolute without looking at them (the unit names the canonical mountpoint).
fn resume_from_fd_store(
    spec: &MountSpec,
    (fuse, root): (std::os::fd::RawFd, std::os::fd::RawFd),
) -> Result<(), String> {
    let own = |n: std::os::fd::RawFd| {
        // SAFETY: systemd passed these descriptors to this process ($LISTEN_PID is
        // ours) for its use alone; nothing else here refers to them.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(n) };
        let _ = nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        fd
    };
    let abs = |p: &Path| std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()));
    let mountpoint = abs(&spec.mountpoint)?;
    let source = match &spec.source {
        Some(s) => abs(s)?,
        None => mountpoint.clone(),
    };
    let state_dir = spec.state_dir.as_deref().map(abs).transpose()?;
    serve_resumed(
        spec,
        Resumed {
            live: own(fuse),
            root: own(root),
            ready: None,
            mountpoint,
            source,
            state_dir,
            restart: Restart::FdStore,
        },
    )
}

/// What keeps the FUSE connection across a daemon crash, and restarts the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Restart {
    /// `sessionfs sentinel --supervise` (see [`crate::supervisor`]).
    Supervisor,
    /// systemd's fd store (`FileDescriptorStoreMax=`, see [`crate::notify`]).
    FdStore,
}

/// [`mount`] once the plan is made.
fn mount_planned(spec: &MountSpec, plan: Plan) -> Result<(), String> {
    let lane_rules = match &spec.lanes {
        Some(p) => LaneRules::load(p)?,
        None => LaneRules::empty(),
    };
    // The overlay: hold the directory before the mount hides it.
    let root = open_dir(&plan.source)?;

    if spec.foreground {
        return serve(spec, plan, root, lane_rules, None, None);
    }
    // O_CLOEXEC: nothing the daemon spawns (fusermount3 for a non-root mount) may
    // inherit the write end, or our read below would wait for that helper as well.
    let (rd, wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: this process is single-threaded here (the pre-flight probe thread, if
    // any, has been joined; no FUSE or journal thread exists yet), so the child may
    // run arbitrary code; it continues with ordinary Rust code only.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Parent { .. } => {
            drop(wr);
            let mut msg = String::new();
            let _ = fs::File::from(rd).read_to_string(&mut msg);
            match msg.strip_prefix("ok") {
                Some(_) => Ok(()),
                None if msg.is_empty() => {
                    Err("the sessionfs daemon exited before the mount was live".into())
                }
                None => Err(msg.trim().to_string()),
            }
        }
        nix::unistd::ForkResult::Child => {
            drop(rd);
            let r = match daemonize(&plan) {
                Ok(()) => serve(spec, plan, root, lane_rules, Some(wr), None),
                Err(e) => {
                    let _ = nix::unistd::write(&wr, e.as_bytes());
                    Err(e)
                }
            };
            std::process::exit(if r.is_ok() { 0 } else { 1 });
        }
    }
}

/// The background child: own session, cwd `/` (so we pin no directory of the caller's,
/// and every path we use is absolute anyway), stdio away from the terminal.
fn daemonize(plan: &Plan) -> Result<(), String> {
    let _ = nix::unistd::setsid();
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    let devnull = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("/dev/null: {e}"))?;
    nix::unistd::dup2_stdin(&devnull).map_err(|e| format!("dup2: {e}"))?;
    nix::unistd::dup2_stdout(&devnull).map_err(|e| format!("dup2: {e}"))?;
    match &plan.log {
        Some(log) => nix::unistd::dup2_stderr(log),
        None => nix::unistd::dup2_stderr(&devnull),
    }
    .map_err(|e| format!("dup2: {e}"))?;
    Ok(())
}

fn open_dir(p: &Path) -> Result<OwnedFd, String> {
    nix::fcntl::open(
        p,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("{}: {}", p.display(), e.desc()))
}

fn serve(
    spec: &MountSpec,
    plan: Plan,
    root: OwnedFd,
    lane_rules: LaneRules,
    ready: Option<OwnedFd>,
    live: Option<(OwnedFd, Restart)>,
) -> Result<(), String> {
    // `live`: the `/dev/fuse` descriptor of a mount an earlier daemon served (a
    // `--supervise` restart, see `crate::resume`): no mount(2), no handshake with the
    // kernel; reconcile journals the crashed daemon's unwritten changes as
    // `unjournaled`, not `external` (the mount stayed in place).
    let resumed = live.is_some();
    let sd = crate::notify::Notifier::from_env().map(Arc::new);
    // Who keeps the connection if we crash: as before a restart; else systemd's fd
    // store when the unit has one, else a supervisor when asked for (--supervise).
    let restart = match &live {
        Some((_, r)) => Some(*r),
        None if sd.is_some() && crate::notify::fd_store_enabled() => Some(Restart::FdStore),
        None if spec.supervise => Some(Restart::Supervisor),
        None => None,
    };
    let sd_for_store = sd;
    let fail = |msg: String, ready: &Option<OwnedFd>| {
        if let Some(w) = ready {
            let _ = nix::unistd::write(w, msg.as_bytes());
        }
        msg
    };
    let Plan {
        mountpoint: canon,
        source,
        id,
        state_dir,
        pid_dir,
        log,
        ..
    } = plan;
    drop(log); // already on fd 2 in the background
    // Block the shutdown signals before any thread starts (the journal's writer, the
    // FUSE workers), so that only our signal thread receives them: a signal delivered
    // to another thread would kill the process with its default action and leave a
    // dead mount behind.
    let mut sigs = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR2,
    ] {
        sigs.add(s);
    }
    let _ = sigs.thread_block();
    // One O_PATH fd per inode the kernel holds: lift the soft fd limit to the hard one.
    let low_nofile = raise_nofile();
    // Our own files are private. Files created through the mount get the caller's
    // umask, applied per request on the worker thread (`sys::as_caller`).
    nix::sys::stat::umask(Mode::from_bits_truncate(DAEMON_UMASK));
    let journal = if spec.no_journal {
        None
    } else {
        let mut o = JournalOptions::new(state_dir.clone());
        o.max_bytes = spec.journal_max_bytes;
        o.max_age = spec.journal_max_age;
        o.salvage = crate::journal::salvage::SalvageBounds {
            max_bytes: spec.salvage_max_bytes,
            file_max_bytes: spec
                .salvage_file_max_bytes
                .unwrap_or(spec.salvage_max_bytes / 8)
                .min(spec.salvage_max_bytes),
        };
        o.max_pending = spec.journal_max_pending;
        match Journal::open(o) {
            Ok(j) => Some(Arc::new(j)),
            Err(e) => {
                return Err(fail(
                    format!("journal state dir {}: {e}", state_dir.display()),
                    &ready,
                ));
            }
        }
    };
    // Before serving (the backing directory is not mounted over yet): what changed
    // while we were away is journaled first, as `external`.
    // A clean hand-over (`sessionfs upgrade`) left a mark: the journal is complete.
    let handed_over = fs::remove_file(state_dir.join(HANDOVER_MARK)).is_ok() && resumed;
    if let Some(j) = journal.as_ref().filter(|_| !handed_over) {
        let n = crate::reconcile::reconcile(j, root.as_fd(), resumed);
        if n > 0 {
            if resumed {
                tracing::warn!(
                    files = n,
                    "reconciled at restart: the crashed daemon's changes it had not journaled are journaled as unjournaled"
                );
            } else {
                tracing::warn!(
                    files = n,
                    "reconciled at start: changes made while sessionfs was away are journaled as external"
                );
            }
        }
    }
    let notifier = Arc::new(std::sync::OnceLock::new());
    // Under a supervisor or an fd store, `sessionfs upgrade` hands the mount to a new
    // daemon.
    let gate = restart.map(|_| Arc::new(parking_lot::RwLock::new(())));
    let cfg = FsConfig {
        notifier: notifier.clone(),
        attr_ttl: spec.ttl,
        entry_ttl: spec.ttl,
        read_only: spec.read_only,
        readdirplus: spec.readdirplus,
        max_inodes: spec.max_inodes,
        file_handles: spec.file_handles,
        strict_stat: spec.strict_stat,
        reap: spec.reap,
        state_dir: journal.as_ref().map(|_| state_dir.clone()),
        journal_group: spec.journal_group,
        lane_rules,
        resumed,
        resumed_since_ns: resumed.then(|| {
            std::env::var(crate::supervisor::ENV_DIED_AT_NS)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(crate::clock::now_ns)
        }),
        gate: gate.clone(),
        restart: restart.map(|r| match r {
            Restart::Supervisor => "supervisor",
            Restart::FdStore => "fd-store",
        }),
        ..FsConfig::default()
    };
    // The supervisor's (or the fd store's) copy of the backing root, for the daemons
    // it restarts.
    let mut root_dup = if restart.is_some() {
        nix::unistd::dup(&root).ok()
    } else {
        None
    };
    let fs = SessionFs::new(root, journal.clone(), cfg)
        .map_err(|e| fail(format!("source directory: {e}"), &ready))?;

    let mut opts = vec![
        // fuser's direct mount(2) path ignores subtype, so the source column
        // ("sessionfs:<dir>") is what marks a sessionfs mount in /proc/mounts and df.
        MountOption::FSName(format!("sessionfs:{}", source.display())),
        MountOption::Subtype("sessionfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
    ];
    if spec.read_only {
        opts.push(MountOption::RO);
    }
    let mut config = Config::default();
    config.mount_options = opts;
    config.acl = if spec.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(spec.threads.max(1));
    // A descriptor per worker is faster, but each one closes with a crashed daemon
    // and the kernel then fails the requests read through it (ECONNABORTED). Under a
    // supervisor every worker reads the one descriptor the supervisor also holds, so
    // those requests survive for the next daemon.
    config.clone_fd = restart.is_none();

    // As root we mount(2) ourselves and give fuser only the /dev/fuse fd, so fuser
    // owns no mount and never unmounts by path (see `mount_direct`); otherwise fuser
    // goes through fusermount3.
    // A direct mount is ours to undo: fuser will not unmount it when the session
    // drops, so every exit path below detaches it (`undo`), and only if the mount at
    // the path is still ours (its device), never a newer one.
    let (session, direct) = match live {
        // Not ours to undo: the supervisor decides what happens to the mount.
        Some((fd, _)) => (
            crate::resume::session_on_live_fd(fs, fd, config.acl, config),
            false,
        ),
        None => {
            let mounted = mount_direct(&canon, &source, spec.read_only, spec.allow_other);
            let direct = matches!(mounted, Ok(Some(_)));
            let session = match mounted {
                Ok(Some(fd)) => fuser::Session::from_fd(fs, fd, config.acl, config),
                Ok(None) => fuser::Session::new(fs, &canon, &config),
                Err(e) => Err(e),
            };
            (session, direct)
        }
    };
    // Our mount's device, to never unmount somebody else's mount stacked on top later.
    let dev = mount_entry_at(&canon)
        .filter(MountEntry::is_sessionfs)
        .map(|e| e.kernel_dev());
    let undo = |why: &str| {
        if direct
            && dev.is_some()
            && let Err(e) = unmount_ours(&canon, dev, true)
        {
            tracing::error!(error = %e, "could not detach the mount after: {why}");
        }
    };
    let session = match session {
        Ok(s) => s,
        Err(e) => {
            undo("the FUSE handshake failed");
            return Err(fail(mount_error(&canon, &e), &ready));
        }
    };
    let _ = notifier.set(session.notifier());
    if resumed {
        // What the dead daemon read and never answered, the kernel sends again.
        match crate::resume::notify_resend(session.as_fd()) {
            Ok(()) => tracing::warn!(
                mountpoint = %canon.display(),
                "resumed the live FUSE connection of a crashed daemon; requests in flight re-sent"
            ),
            Err(e) => tracing::error!(
                error = %e,
                "resumed the live FUSE connection, but the kernel cannot re-send requests in flight (Linux 6.9+ needed): those callers wait until unmount"
            ),
        }
    }
    if let Some(d) = &pid_dir
        && let Err(e) = write_pid_file(d, &id)
    {
        undo("the pid file failed");
        drop(session); // fusermount3 mounts: fuser unmounts
        return Err(fail(
            format!(
                "pid file {}: {e}",
                d.path.join(format!("{id}.pid")).display()
            ),
            &ready,
        ));
    }
    if let Some(d) = &pid_dir {
        // A loss report of an earlier daemon of this id that no umount collected.
        let _ = nix::unistd::unlinkat(
            &d.fd,
            loss_file_name(&id).as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
    tracing::info!(mountpoint = %canon.display(), state_dir = %state_dir.display(), "mounted");
    if let Some(d) = &pid_dir
        && let Some(old) = d.repaired_from
    {
        tracing::warn!(
            dir = %d.path.display(),
            old_mode = format!("{old:04o}"),
            "pid dir was group/world-writable; repaired to 0755"
        );
    }
    if pid_dir.is_none() {
        tracing::warn!(id = %id, "mount id too long for a pid file name; no pid file");
    }

    if let Some(hard) = low_nofile {
        tracing::warn!(
            hard,
            "RLIMIT_NOFILE is low: each file the kernel holds costs one fd; raise LimitNOFILE"
        );
    }
    // The supervisor: our parent when we were restarted on a live connection, else
    // started below (before the signal thread can ask for it).
    let supervisor = Arc::new(std::sync::atomic::AtomicI32::new(0));
    if restart == Some(Restart::Supervisor) && resumed {
        supervisor.store(
            nix::unistd::getppid().as_raw(),
            std::sync::atomic::Ordering::Relaxed,
        );
    }
    let handover = gate.clone().map(|gate| Handover {
        gate,
        journal: journal.clone(),
        supervisor: supervisor.clone(),
        fd_store: restart == Some(Restart::FdStore),
        handover_mark: journal.as_ref().map(|_| state_dir.join(HANDOVER_MARK)),
    });
    let mp = canon.clone();
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || signal_loop(sigs, &mp, dev, handover));
    if let Err(e) = spawned {
        undo("the signal thread failed");
        drop(session);
        if let Some(d) = &pid_dir {
            remove_pid_file(d, &id);
        }
        return Err(fail(format!("signal thread: {e}"), &ready));
    }
    if let Some(w) = ready {
        let mut f = fs::File::from(w);
        let _ = f.write_all(b"ok");
    }
    // Only an overlay fails open: the path then serves the very files the daemon
    // served. A mount with another --source would leave writers in the mountpoint's
    // own (hidden) directory, apart from the files they were writing.
    let overlay = source == canon; // both canonical (the plan); no stat through our own mount
    let fail_open = !spec.fail_closed && overlay;
    // systemd's fd store keeps the connection and the backing root across a crash
    // (then no sentinel: systemd stops the unit's other processes when its main
    // process dies, and a sentinel detaching the mount would race the restart).
    let mut stored = false;
    if restart == Some(Restart::FdStore)
        && !resumed
        && let (Some(n), Some(r)) = (&sd_for_store, &root_dup)
    {
        use std::os::fd::AsRawFd;
        let fuse = session.as_fd().as_raw_fd();
        stored = n
            .send_with_fds(
                &format!("FDSTORE=1\nFDNAME={}", crate::notify::FD_FUSE),
                &[fuse],
            )
            .and_then(|()| {
                n.send_with_fds(
                    &format!("FDSTORE=1\nFDNAME={}", crate::notify::FD_ROOT),
                    &[r.as_raw_fd()],
                )
            })
            .inspect_err(|e| tracing::error!(error = %e, "cannot store the FUSE connection in systemd's fd store: a crash will not be transparent"))
            .is_ok();
        if stored {
            tracing::info!(
                "FUSE connection stored in systemd's fd store: a crash restarts the unit on the live mount"
            );
        }
    }
    if !resumed
        && !stored
        && (fail_open || spec.supervise)
        && let Some(d) = dev
    {
        let pid = crate::supervisor::spawn(crate::supervisor::Spawn {
            mountpoint: &canon,
            dev: d,
            fail_open,
            supervise: root_dup.as_ref().filter(|_| spec.supervise).map(|r| {
                crate::supervisor::Supervised {
                    fuse: session.as_fd(),
                    root: r.as_fd(),
                    source: &source,
                    state_dir: &state_dir,
                }
            }),
        });
        if let Some(pid) = pid.filter(|_| spec.supervise) {
            supervisor.store(pid as i32, std::sync::atomic::Ordering::Relaxed);
        }
    }
    // A supervisor that dies (killed by hand, OOM) would leave the next crash to
    // fail: watch it, and start another one.
    if restart == Some(Restart::Supervisor)
        && let (Some(d), Some(root), Ok(fuse)) =
            (dev, root_dup.take(), nix::unistd::dup(session.as_fd()))
    {
        let w = SupervisorWatch {
            pid: supervisor.clone(),
            fuse,
            root,
            mountpoint: canon.clone(),
            source: source.clone(),
            state_dir: state_dir.clone(),
            dev: d,
            fail_open,
        };
        let _ = std::thread::Builder::new()
            .name("supervisor-watch".into())
            .spawn(move || w.run());
    }
    drop(root_dup);
    let notifier = sd_for_store;
    if let Some(n) = &notifier {
        let _ = n.send(&format!(
            "READY=1\nSTATUS={}",
            status_line(&canon, journal.as_deref(), None)
        ));
        let (n, mp, j) = (n.clone(), canon.clone(), journal.clone());
        let every = n
            .watchdog()
            .unwrap_or(STATUS_EVERY)
            .min(STATUS_EVERY)
            .max(Duration::from_millis(100));
        let _ = std::thread::Builder::new()
            .name("notify".into())
            .spawn(move || {
                let mut last = (
                    std::time::Instant::now(),
                    j.as_ref().map_or(0, |j| j.next_seq()),
                );
                loop {
                    std::thread::sleep(every);
                    let rate = j.as_ref().map(|j| {
                        let (t, s) = last;
                        let now = (std::time::Instant::now(), j.next_seq());
                        last = now;
                        (now.1 - s) as f64 / now.0.duration_since(t).as_secs_f64().max(1e-3)
                    });
                    let mut msg = format!("STATUS={}", status_line(&mp, j.as_deref(), rate));
                    if n.watchdog().is_some() {
                        msg.push_str("\nWATCHDOG=1");
                    }
                    let _ = n.send(&msg);
                }
            });
    }
    let r = session.run();
    if let Some(n) = &notifier {
        let _ = n.send("STOPPING=1\nSTATUS=unmounted; flushing the journal");
    }
    // Normally the loop ends because the mount is gone; after an error it may not be.
    undo("the FUSE session ended");
    // `destroy` flushed the journal when the kernel sent DESTROY; make sure anyway.
    if let Some(j) = &journal {
        j.shutdown();
    }
    // Records the journal could not write: the daemon exits 1 and says so, in its log
    // (which may be on the full disk: not to be relied on), and in a loss file in
    // the pid dir for `sessionfs umount` to report. In the foreground `main` prints it.
    let loss = journal
        .as_ref()
        .and_then(|j| j.loss())
        .map(|l| l.to_string());
    if let Some(msg) = &loss {
        if !spec.foreground {
            tracing::error!("{msg}");
        }
        if let Some(d) = &pid_dir
            && let Err(e) = write_loss_file(d, &id, msg)
        {
            tracing::error!(error = %e, "cannot write the loss file for `sessionfs umount`");
        }
    }
    if let Some(d) = &pid_dir {
        remove_pid_file(d, &id);
    }
    tracing::info!("unmounted");
    r.map_err(|e| format!("fuse session: {e}"))?;
    match loss {
        Some(msg) => Err(msg),
        None => Ok(()),
    }
}

/// How often the `STATUS=` line is refreshed under systemd (more often when
/// `WatchdogSec=` asks for pings).
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// The one-line `STATUS=` of a `Type=notify` unit: mountpoint, journal records and
/// their rate (per s, since the last line), journal and salvage bytes.
fn status_line(mp: &Path, j: Option<&Journal>, rate: Option<f64>) -> String {
    let Some(j) = j else {
        return format!("serving {} (no journal)", mp.display());
    };
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    format!(
        "serving {}: seq {}{}, journal {:.1} MiB, salvage {:.1} MiB",
        mp.display(),
        j.next_seq().saturating_sub(1),
        rate.map_or(String::new(), |r| format!(" ({r:.0} records/s)")),
        mib(j.view_len(crate::journal::View::All)),
        mib(j.salvage_total()),
    )
}

/// Mount the FUSE connection at `mp` with mount(2) and return its `/dev/fuse` fd, for
/// [`fuser::Session::from_fd`]. Why: a session fuser mounted itself ends by unmounting
/// its mountpoint *by path*, and fuser 0.18's "still mounted?" check (a poll of the
/// device) reads a connection the kernel already ended as mounted, so a daemon shutting
/// down after `umount` could unmount a new mount made at the same path meanwhile.
/// Our own unmounts check the mount's device first (`unmount_ours`).
///
/// Options as fuser's own mount(2) path sets them: `nosuid,nodev` (+`ro`), type
/// `fuse.sessionfs`, source `sessionfs:<source>`, data
/// `fd=N,rootmode=…,user_id=…,group_id=…,default_permissions[,allow_other]`.
///
/// # Errors
/// `Ok(None)` on EPERM (not root: use fusermount3); the error of opening `/dev/fuse`
/// (ENOENT when the module is missing) or of mount(2) otherwise.
fn mount_direct(
    mp: &Path,
    source: &Path,
    read_only: bool,
    allow_other: bool,
) -> io::Result<Option<std::os::fd::OwnedFd>> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let rootmode = fs::metadata(mp)?.permissions().mode();
    let dev = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")?;
    let mut data = format!(
        "fd={},rootmode={rootmode:o},user_id={},group_id={},default_permissions",
        dev.as_raw_fd(),
        nix::unistd::getuid(),
        nix::unistd::getgid()
    );
    if allow_other {
        data.push_str(",allow_other");
    }
    let mut flags = nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV;
    if read_only {
        flags |= nix::mount::MsFlags::MS_RDONLY;
    }
    let fsname = format!("sessionfs:{}", source.display());
    match nix::mount::mount(
        Some(fsname.as_str()),
        mp,
        Some("fuse.sessionfs"),
        flags,
        Some(data.as_str()),
    ) {
        Ok(()) => Ok(Some(dev.into())),
        Err(nix::errno::Errno::EPERM) => Ok(None),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Waits for SIGTERM/SIGINT/SIGHUP and unmounts. When the unmount fails (EBUSY: a
/// process has a file or its cwd on the mount) we log it and keep serving; the next
/// signal detaches the mount lazily (MNT_DETACH / `fusermount3 -uz`): it disappears
/// from the namespace at once, and the daemon keeps serving the files still open on it
/// and exits when the last one is closed.
fn signal_loop(sigs: SigSet, mp: &Path, dev: Option<u64>, handover: Option<Handover>) {
    let mut failed_once = false;
    while let Ok(sig) = sigs.wait() {
        if sig == Signal::SIGUSR2 {
            match &handover {
                Some(h) => h.exit_for_upgrade(),
                None => tracing::warn!(
                    "SIGUSR2 (sessionfs upgrade) ignored: no supervisor would start the new daemon (mount with --supervise)"
                ),
            }
            continue;
        }
        let lazy = failed_once;
        if lazy {
            tracing::warn!(
                ?sig,
                "signal after a failed unmount: detaching lazily; exiting once the last open file on the mount is closed"
            );
        } else {
            tracing::info!(?sig, "unmounting on signal");
        }
        match unmount_ours(mp, dev, lazy) {
            Ok(()) => return,
            Err(e) => {
                failed_once = true;
                tracing::error!(
                    error = %e,
                    "unmount failed; still serving (send the signal again to detach lazily)"
                );
            }
        }
    }
}

/// Watches a daemon's supervisor and starts a new one if it dies (see
/// [`crate::supervisor`]): what a supervisor needs, duplicated.
struct SupervisorWatch {
    pid: Arc<std::sync::atomic::AtomicI32>,
    fuse: OwnedFd,
    root: OwnedFd,
    mountpoint: PathBuf,
    source: PathBuf,
    state_dir: PathBuf,
    dev: u64,
    fail_open: bool,
}

impl SupervisorWatch {
    fn run(self) {
        loop {
            let pid = self.pid.load(std::sync::atomic::Ordering::Relaxed);
            if pid <= 0 || crate::supervisor::wait_exit(pid).is_err() {
                return;
            }
            if !mount_entry_at(&self.mountpoint)
                .is_some_and(|e| e.is_sessionfs() && e.kernel_dev() == self.dev)
            {
                return; // unmounted: it ended with the mount
            }
            tracing::error!(supervisor = pid, "the supervisor died: starting a new one");
            let new = crate::supervisor::spawn(crate::supervisor::Spawn {
                mountpoint: &self.mountpoint,
                dev: self.dev,
                fail_open: self.fail_open,
                supervise: Some(crate::supervisor::Supervised {
                    fuse: self.fuse.as_fd(),
                    root: self.root.as_fd(),
                    source: &self.source,
                    state_dir: &self.state_dir,
                }),
            });
            self.pid.store(
                new.map_or(0, |p| p as i32),
                std::sync::atomic::Ordering::Relaxed,
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// What a supervised daemon needs to hand its mount over (`sessionfs upgrade`).
struct Handover {
    gate: Arc<parking_lot::RwLock<()>>,
    journal: Option<Arc<Journal>>,
    /// The supervisor's pid, once known.
    supervisor: Arc<std::sync::atomic::AtomicI32>,
    /// systemd keeps the connection in its fd store: exit with [`UPGRADE_EXIT`], the
    /// unit's `RestartForceExitStatus=` starts the new binary.
    fd_store: bool,
    /// `<state dir>/handover`: written at a clean hand-over, so the next daemon skips
    /// the reconcile of a crash.
    handover_mark: Option<PathBuf>,
}

/// The file a daemon leaves in its state dir when it hands the mount over cleanly.
const HANDOVER_MARK: &str = "handover";

/// Longest wait for the requests in progress when an upgrade begins.
const UPGRADE_DRAIN: Duration = Duration::from_secs(5);

/// The daemon's exit status when it hands its mount over to the next start of its
/// unit (`sessionfs upgrade` under systemd's fd store): `RestartForceExitStatus=75`.
const UPGRADE_EXIT: i32 = 75;

impl Handover {
    /// Exit between requests, the journal written, for the supervisor to start the
    /// new binary on the live connection: the requests already read and not begun
    /// wait at the gate and go to the new daemon (FUSE_NOTIFY_RESEND), so none runs
    /// twice and none fails.
    fn exit_for_upgrade(&self) {
        let sup = if self.fd_store {
            None
        } else {
            let sup = self.supervisor.load(std::sync::atomic::Ordering::Relaxed);
            if sup <= 0 {
                tracing::warn!("SIGUSR2 (sessionfs upgrade) ignored: no supervisor");
                return;
            }
            Some(sup)
        };
        // Requests in progress finish; new ones wait, unstarted. One stuck in the
        // backing file system must not freeze the mount: give up after UPGRADE_DRAIN.
        let t = Instant::now();
        let Some(_closed) = self.gate.try_write_for(UPGRADE_DRAIN) else {
            tracing::error!(
                waited_ms = UPGRADE_DRAIN.as_millis() as u64,
                "upgrade aborted: a request did not finish; still serving"
            );
            return;
        };
        // Then tell the supervisor: the exit that follows is an upgrade, not a crash.
        if let Some(sup) = sup
            && let Err(e) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(sup), Signal::SIGUSR2)
        {
            tracing::error!(error = %e, supervisor = sup, "upgrade aborted: cannot reach the supervisor; still serving");
            return;
        }
        if let Some(j) = &self.journal {
            j.shutdown();
        }
        // The next daemon finds the journal complete: nothing to reconcile.
        if let Some(m) = &self.handover_mark {
            let _ = fs::write(m, b"upgrade\n");
        }
        tracing::warn!(
            waited_us = t.elapsed().as_micros() as u64,
            "upgrade: requests drained and journal written; exiting for the new daemon"
        );
        // SAFETY: _exit ends the process at once; the gate stays closed so no
        // request starts, and nothing of ours needs a destructor (the journal is
        // written, the mount stays with the supervisor's descriptor).
        unsafe { libc::_exit(if self.fd_store { UPGRADE_EXIT } else { 0 }) };
    }
}

/// Unmount `mp` if the topmost mount there is still ours (device `dev`).
fn unmount_ours(mp: &Path, dev: Option<u64>, lazy: bool) -> Result<(), String> {
    if let Some(d) = dev {
        match mount_entry_at(mp) {
            Some(e) if e.kernel_dev() == d => {}
            _ => return Ok(()), // already gone (or covered by another mount)
        }
    }
    unmount_path(mp, lazy)
}

/// `umount2(mp, 0 or MNT_DETACH)`; without the privilege, `fusermount3 -u [-z]`.
fn unmount_path(mp: &Path, lazy: bool) -> Result<(), String> {
    let flags = if lazy {
        MntFlags::MNT_DETACH
    } else {
        MntFlags::empty()
    };
    match nix::mount::umount2(mp, flags) {
        Ok(()) => Ok(()),
        Err(Errno::EPERM) => fusermount_unmount(mp, lazy),
        Err(Errno::EBUSY) => Err(busy_error(mp)),
        Err(Errno::EINVAL) => Err(format!("{} is not a mountpoint", mp.display())),
        Err(e) => Err(format!("unmounting {} failed: {}", mp.display(), e.desc())),
    }
}

fn busy_error(mp: &Path) -> String {
    let d = mp.display();
    let lazy = if nix::unistd::geteuid().is_root() {
        "umount -l"
    } else {
        "fusermount3 -uz"
    };
    format!(
        "{d} is busy: a process has a file open or its cwd on it; close them and retry, or detach lazily ({lazy} {d})"
    )
}

/// The setuid helper's unmount; its complaint, if any, becomes one line.
fn fusermount_unmount(mp: &Path, lazy: bool) -> Result<(), String> {
    let mut c = Command::new("fusermount3");
    c.arg("-u");
    if lazy {
        c.arg("-z");
    }
    c.arg("--")
        .arg(mp)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let out = c.output().map_err(|e| {
        format!(
            "not permitted: unmounting {} needs root or the fusermount3 helper ({e})",
            mp.display()
        )
    })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = first_line(&stderr).unwrap_or("fusermount3 failed");
    if first.contains("busy") {
        Err(busy_error(mp))
    } else {
        Err(format!("not permitted: {first}"))
    }
}

fn first_line(s: &str) -> Option<&str> {
    s.lines().map(str::trim).find(|l| !l.is_empty())
}

/// Raise RLIMIT_NOFILE's soft limit to its hard limit (each inode the kernel holds
/// costs the daemon one O_PATH fd); returns the hard limit when it is low (< 65536),
/// for a warning once the mount is live (before that, stderr is for the error line).
fn raise_nofile() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, mut hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    // Each inode the kernel holds costs the daemon one O_PATH fd (plus one per open
    // file handle), so a low hard limit caps the files a gateway may touch: as root,
    // raise it to the kernel's `fs.nr_open` (measured: a 20,000 hard limit gave EMFILE
    // after `ls -l` of 10,000 files plus writes to 10,000 others).
    if nix::unistd::geteuid().is_root() {
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(1 << 20);
        if nr_open > hard && setrlimit(Resource::RLIMIT_NOFILE, nr_open, nr_open).is_ok() {
            hard = nr_open;
        }
    }
    if soft < hard {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    (hard < 65_536).then_some(hard)
}

fn mount_error(mp: &Path, e: &io::Error) -> String {
    let not_root = !nix::unistd::geteuid().is_root();
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => format!(
            "not permitted: mounting on {}: run as root or install fuse3 (fusermount3)",
            mp.display()
        ),
        Some(libc::ENODEV) => {
            "the kernel has no FUSE support: load the fuse module (modprobe fuse)".into()
        }
        Some(_) => format!("mounting on {} failed: {e}", mp.display()),
        // No errno: fusermount3's stderr, possibly several lines.
        None if not_root => format!(
            "not permitted: {}",
            first_line(&e.to_string()).unwrap_or("fusermount3 failed")
        ),
        None => format!(
            "mounting on {} failed: {}",
            mp.display(),
            first_line(&e.to_string()).unwrap_or("unknown error")
        ),
    }
}

/// `sessionfs umount --stale-only` (a unit's `ExecStartPre=`): detach the mount at
/// `mountpoint` only when it is stale (its connection is gone: ENOTCONN); leave a
/// live one, and one that does not answer within 0.2 s (systemd's fd store holds its
/// connection for the daemon being started: it will serve it). Ok when nothing is
/// mounted there.
///
/// # Errors
/// As [`umount`] for a stale mount.
pub fn umount_stale(mountpoint: &Path) -> Result<(), String> {
    let Ok(mp) = resolve(mountpoint) else {
        return Ok(());
    };
    if !mount_entry_at(&mp).is_some_and(|e| e.is_sessionfs()) {
        return Ok(());
    }
    match probe_within(&mp, Duration::from_millis(200)) {
        Probe::Stale => umount(&mp),
        Probe::Hung => {
            eprintln!(
                "sessionfs: {} is waiting for its daemon (a live connection kept across a restart): left mounted",
                mp.display()
            );
            Ok(())
        }
        Probe::Live | Probe::Other => Ok(()),
    }
}

/// `sessionfs umount`: unmount the sessionfs mount at `mountpoint` and wait (up to
/// [`UMOUNT_WAIT`], 30 s) for its daemon to flush the journal and exit.
///
/// The daemon is found before unmounting, independently of the pid file: the processes
/// holding a `/dev/fuse` fd whose fdinfo names the mount's FUSE connection (the device
/// minor from `/proc/self/mountinfo`), plus the pid from [`pid_file`] when it names a
/// live `sessionfs` process not known to hold another connection. After unmounting, it
/// waits until those processes have exited (a zombie counts as exited) and
/// `/sys/fs/fuse/connections/<dev>` is gone (when fusectl is mounted there).
///
/// A stale mount (the daemon was killed, the path answers ENOTCONN) is detached lazily
/// (MNT_DETACH, or `fusermount3 -uz` without root), a note saying so goes to stderr,
/// and its leftover pid file is removed. The path may be relative or name a dead mount:
/// the parent is canonicalized and the last component joined.
///
/// # Errors
/// One line each: the path does not exist or is not a sessionfs mount; the daemon is
/// not responding (a stuck or stopped daemon: kill it, then retry); the mount is busy
/// (EBUSY: open files or a cwd on it); `not permitted: …` (the first line of
/// fusermount3's complaint, without root); the mount is gone but the daemon has not
/// exited within 30 s; the mount is gone but its journal lost records at shutdown
/// (`unmounted <dir>, but the journal lost N records at shutdown, …`: the state dir
/// was full or failing; the daemon's loss file in the pid dir says so).
pub fn umount(mountpoint: &Path) -> Result<(), String> {
    let mp = resolve(mountpoint).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => format!("{} does not exist", mountpoint.display()),
        _ => format!("{}: {e}", mountpoint.display()),
    })?;
    let entry = match mount_entry_at(&mp) {
        Some(e) if e.is_sessionfs() => e,
        _ => return Err(format!("{} is not a sessionfs mount", mp.display())),
    };
    let dev = entry.kernel_dev();
    let id = mount_id(&mp);
    let pidf = pid_file(&id);
    let stale = match probe(&mp) {
        Probe::Stale => true,
        Probe::Hung => {
            let pids = daemon_pids(dev, &pidf);
            let who = match pids.first() {
                Some((p, _)) => format!(" (pid {p})"),
                None => String::new(),
            };
            return Err(format!(
                "the sessionfs daemon of {}{who} is not responding: kill it, then run `sessionfs umount {}`",
                mp.display(),
                mp.display()
            ));
        }
        Probe::Live | Probe::Other => false,
    };
    let mut waiting = daemon_pids(dev, &pidf);
    let daemons: Vec<i32> = waiting.iter().map(|(p, _)| *p).collect();
    let started = std::time::SystemTime::now();
    unmount_path(&mp, stale)?;
    if stale {
        if let Some(p) = read_pid_file(&pidf)
            && !alive(p, None)
        {
            let _ = fs::remove_file(&pidf);
        }
        eprintln!(
            "sessionfs: {} was a stale mount (its daemon had died): detached it lazily",
            mp.display()
        );
    }
    let ctl = PathBuf::from(format!("/sys/fs/fuse/connections/{dev}"));
    let deadline = Instant::now() + UMOUNT_WAIT;
    loop {
        waiting.retain(|(p, start)| alive(*p, Some(*start)));
        // The connection's control dir goes when its superblock is destroyed. Should
        // the number already belong to a new mount, ours is gone.
        // Unless a process other than ours holds it (systemd's fd store, until the
        // unit stops).
        let conn_open = ctl.exists()
            && !dev_mounted(dev)
            && !fuse_conn_holders(dev)
                .iter()
                .any(|p| !is_sessionfs_process(*p));
        if waiting.is_empty() && !conn_open {
            // The daemon flushed what it could: did its journal lose records?
            return match take_loss_file(&id, &daemons, started) {
                Some(msg) => Err(format!("unmounted {}, but {msg}", mp.display())),
                None => Ok(()),
            };
        }
        if Instant::now() > deadline {
            return Err(match waiting.first() {
                Some((p, _)) => format!(
                    "unmounted {}, but its daemon (pid {p}) has not exited after {} s",
                    mp.display(),
                    UMOUNT_WAIT.as_secs()
                ),
                None => format!(
                    "unmounted {}, but its FUSE connection {dev} is still open after {} s",
                    mp.display(),
                    UMOUNT_WAIT.as_secs()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Is any mount of device `dev` (kernel encoding) in our mountinfo?
fn dev_mounted(dev: u64) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines().any(|l| {
        l.split(' ')
            .nth(2)
            .and_then(|d| d.split_once(':'))
            .and_then(|(a, b)| Some((a.parse::<u64>().ok()? << 20) | b.parse::<u64>().ok()?))
            == Some(dev)
    })
}

/// The daemon(s) of FUSE connection `dev`, each with its start time (to notice pid
/// reuse): holders of a `/dev/fuse` fd on that connection, plus the pid file's process
/// when it is a live `sessionfs` whose fdinfo does not rule it out.
fn daemon_pids(dev: u64, pidf: &Path) -> Vec<(i32, u64)> {
    // sessionfs processes only (the daemon, its sentinel): systemd holds the
    // connection in its fd store until the unit stops, after `sessionfs umount`.
    let mut pids: Vec<i32> = fuse_conn_holders(dev)
        .into_iter()
        .filter(|p| is_sessionfs_process(*p))
        .collect();
    if let Some(p) = read_pid_file(pidf)
        && !pids.contains(&p)
        && alive(p, None)
        && fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "sessionfs")
        && holds_conn(p, dev) != Some(false)
    {
        pids.push(p);
    }
    pids.into_iter()
        .filter_map(|p| starttime(p).map(|t| (p, t)))
        .collect()
}

/// Processes holding a `/dev/fuse` fd on connection `dev` (Linux ≥ 6.16 prints
/// `fuse_connection:` in such an fd's fdinfo; older kernels yield none).
/// Whether `pid` runs the sessionfs binary (comm `sessionfs`) and is not this process.
fn is_sessionfs_process(pid: i32) -> bool {
    pid != std::process::id() as i32
        && fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sessionfs")
}

fn fuse_conn_holders(dev: u64) -> Vec<i32> {
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| holds_conn(*p, dev) == Some(true))
        .collect()
}

/// Does process `pid` hold a `/dev/fuse` fd on connection `dev`? `None` when none of
/// its `/dev/fuse` fds says which connection it serves (or we may not look).
fn holds_conn(pid: i32, dev: u64) -> Option<bool> {
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let mut known = None;
    for fd in fds.flatten() {
        if fs::read_link(fd.path()).ok().as_deref() != Some(Path::new("/dev/fuse")) {
            continue;
        }
        let Ok(info) = fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        )) else {
            continue;
        };
        for l in info.lines() {
            if let Some(v) = l.strip_prefix("fuse_connection:") {
                if v.trim().parse::<u64>().ok() == Some(dev) {
                    return Some(true);
                }
                known = Some(false);
            }
        }
    }
    known
}

/// Field 22 of `/proc/<pid>/stat` (start time, clock ticks after boot).
fn starttime(pid: i32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Is `pid` running (not a zombie), and still the process that started at `start`?
fn alive(pid: i32, start: Option<u64>) -> bool {
    let Ok(s) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some((_, rest)) = s.rsplit_once(')') else {
        return false;
    };
    let mut f = rest.split_whitespace();
    // A zombie (our own child in tests, the demo) counts as exited.
    if matches!(f.next(), Some("Z") | Some("X") | None) {
        return false;
    }
    match start {
        Some(t) => f.nth(18).and_then(|v| v.parse::<u64>().ok()) == Some(t),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_id_matches_systemd_escape() {
        let cases = [
            ("/", "-"),
            (
                "/root/.openclaw/agents/main/sessions",
                "root-.openclaw-agents-main-sessions",
            ),
            ("/.hidden/x", "\\x2ehidden-x"),
            ("/a-b/c d", "a\\x2db-c\\x20d"),
            ("/x:y/_z/", "x:y-_z"),
            ("//a//b/./c", "a-b-c"),
            ("/tmp/é", "tmp-\\xc3\\xa9"),
            ("/a\\b", "a\\x5cb"),
        ];
        for (p, want) in cases {
            assert_eq!(mount_id(Path::new(p)), want, "{p}");
        }
    }

    #[test]
    fn unescape_octal() {
        assert_eq!(unescape("/a\\040b\\134c"), b"/a b\\c");
        assert_eq!(unescape("/a\\04"), b"/a\\04");
    }
}
