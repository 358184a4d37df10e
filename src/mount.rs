//! Mounting and unmounting: pre-flight checks with one-line errors, the overlay
//! (O_PATH fd opened before the mount), daemonizing with a readiness pipe, clean
//! shutdown on SIGTERM/SIGINT, and `sessionfs umount`.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuser::{Config, MountOption, SessionACL};
use nix::sys::signal::{SigSet, Signal};

use crate::fs::{FsConfig, SessionFs};
use crate::journal::{Journal, JournalOptions};
use crate::lanes::LaneRules;

/// Everything `sessionfs mount` needs, parsed and validated by the CLI.
#[derive(Debug, Clone)]
pub struct MountSpec {
    /// Where to mount.
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
    /// FUSE worker threads.
    pub threads: usize,
    /// Journal state dir; `None` = default for the mount id.
    pub state_dir: Option<PathBuf>,
    /// `--lanes` rules file.
    pub lanes: Option<PathBuf>,
    /// Journal off (`--no-journal`).
    pub no_journal: bool,
    /// Journal size bound, bytes.
    pub journal_max_bytes: u64,
    /// Journal age bound.
    pub journal_max_age: Duration,
    /// Attribute and entry TTL.
    pub ttl: Duration,
    /// Negotiate READDIRPLUS.
    pub readdirplus: bool,
}

/// The mount id: the canonical mountpoint escaped like systemd unit names
/// (`/root/.openclaw/agents/main/sessions` → `root-.openclaw-agents-main-sessions`).
pub fn mount_id(mountpoint: &Path) -> String {
    let s = mountpoint.to_string_lossy();
    let t = s.trim_matches('/');
    if t.is_empty() {
        return "-".into();
    }
    let mut out = String::new();
    for c in t.chars() {
        match c {
            '/' => out.push('-'),
            c if c.is_ascii_alphanumeric() || c == '.' || c == '_' => out.push(c),
            c => out.push_str(&format!("\\x{:02x}", c as u32)),
        }
    }
    out
}

/// Default state dir: `$XDG_STATE_HOME/sessionfs/<id>`, or `/var/lib/sessionfs/<id>`
/// as root (`$HOME/.local/state` when XDG_STATE_HOME is unset).
pub fn default_state_dir(id: &str) -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/sessionfs").join(id);
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".local/state")
        });
    base.join("sessionfs").join(id)
}

/// Pid file of the daemon serving `id` (read by `sessionfs umount`).
pub fn pid_file(id: &str) -> PathBuf {
    let dir = if nix::unistd::geteuid().is_root() {
        PathBuf::from("/run/sessionfs")
    } else {
        std::env::var_os("XDG_RUNTIME_DIR")
            .map(|d| PathBuf::from(d).join("sessionfs"))
            .unwrap_or_else(|| {
                std::env::temp_dir().join(format!("sessionfs-{}", nix::unistd::geteuid()))
            })
    };
    dir.join(format!("{id}.pid"))
}

/// fstype and source of the mount at exactly `path`, from `/proc/self/mountinfo`.
pub fn mount_at(path: &Path) -> Option<(String, String)> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.as_os_str().as_bytes();
    let mut found = None;
    for line in info.lines() {
        let mut parts = line.split(" - ");
        let (Some(a), Some(b)) = (parts.next(), parts.next()) else {
            continue;
        };
        let mp = a.split(' ').nth(4).unwrap_or("");
        if unescape(mp).as_bytes() == want {
            let mut bs = b.split(' ');
            let fstype = bs.next().unwrap_or("").to_string();
            let source = bs.next().unwrap_or("").to_string();
            found = Some((fstype, source)); // the last one is the top of the stack
        }
    }
    found
}

fn unescape(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push(u8::from_str_radix(&s[i + 1..i + 4], 8).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A mountinfo (fstype, source) pair of a sessionfs mount.
pub fn is_sessionfs_mount(fstype: &str, source: &str) -> bool {
    fstype.starts_with("fuse") && (source.starts_with("sessionfs:") || fstype == "fuse.sessionfs")
}

/// Checks that must pass before anything is mounted; the error is one line.
fn preflight(spec: &MountSpec) -> Result<PathBuf, String> {
    let mp = &spec.mountpoint;
    let meta = fs::metadata(mp).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!(
            "mountpoint {} does not exist: create it first (mkdir -p)",
            mp.display()
        ),
        std::io::ErrorKind::PermissionDenied => {
            format!("mountpoint {}: permission denied", mp.display())
        }
        _ => format!("mountpoint {}: {e}", mp.display()),
    })?;
    if !meta.is_dir() {
        return Err(format!("mountpoint {} is not a directory", mp.display()));
    }
    let canon = fs::canonicalize(mp).map_err(|e| format!("mountpoint {}: {e}", mp.display()))?;
    if let Some((fstype, source)) = mount_at(&canon)
        && is_sessionfs_mount(&fstype, &source)
    {
        return Err(format!(
            "{} is already a sessionfs mount: unmount it first (sessionfs umount {})",
            canon.display(),
            canon.display()
        ));
    }
    if let Some(src) = &spec.source {
        let m = fs::metadata(src).map_err(|e| format!("source {}: {e}", src.display()))?;
        if !m.is_dir() {
            return Err(format!("source {} is not a directory", src.display()));
        }
    }
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse is missing: load the fuse module (modprobe fuse) or install fuse3 (apt-get install fuse3)".into());
    }
    if !nix::unistd::geteuid().is_root() && which("fusermount3").is_none() {
        return Err("not permitted: run as root, or install fuse3 so that the setuid fusermount3 helper can mount for you".into());
    }
    Ok(canon)
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.exists())
}

/// `sessionfs mount`. Returns once the mount is live (background) or once it has been
/// unmounted (foreground). Nothing is left mounted when it returns an error.
pub fn mount(spec: MountSpec) -> Result<(), String> {
    let canon = preflight(&spec)?;
    let lane_rules = match &spec.lanes {
        Some(p) => LaneRules::load(p)?,
        None => LaneRules::empty(),
    };
    let id = mount_id(&canon);
    let state_dir = spec
        .state_dir
        .clone()
        .unwrap_or_else(|| default_state_dir(&id));
    // The overlay: hold the directory before the mount hides it.
    let src = spec.source.clone().unwrap_or_else(|| canon.clone());
    let root = open_dir(&src)?;

    if spec.foreground {
        return serve(&spec, &canon, &id, state_dir, root, lane_rules, None);
    }
    let (rd, wr) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: single-threaded at this point (no FUSE or journal threads started yet);
    // the child only continues with ordinary Rust code.
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
            let _ = nix::unistd::setsid();
            let r = serve(&spec, &canon, &id, state_dir, root, lane_rules, Some(wr));
            std::process::exit(if r.is_ok() { 0 } else { 1 });
        }
    }
}

fn open_dir(p: &Path) -> Result<OwnedFd, String> {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| format!("{}: bad path", p.display()))?;
    // SAFETY: valid C string; the fd returned is owned by us.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(format!(
            "{}: {}",
            p.display(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fresh fd from open.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[allow(clippy::too_many_arguments)]
fn serve(
    spec: &MountSpec,
    canon: &Path,
    id: &str,
    state_dir: PathBuf,
    root: OwnedFd,
    lane_rules: LaneRules,
    ready: Option<OwnedFd>,
) -> Result<(), String> {
    let fail = |msg: String, ready: &Option<OwnedFd>| {
        if let Some(w) = ready {
            let _ = nix::unistd::write(w, msg.as_bytes());
        }
        msg
    };
    if ready.is_some() {
        // Detach from the terminal; logs go to the state dir.
        let _ = fs::create_dir_all(&state_dir);
        if let Ok(devnull) = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        {
            let _ = nix::unistd::dup2_stdin(&devnull);
            let _ = nix::unistd::dup2_stdout(&devnull);
        }
        if let Ok(log) = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(state_dir.join("sessionfs.log"))
        {
            let _ = nix::unistd::dup2_stderr(&log);
        }
    }
    // One O_PATH fd per inode the kernel holds: lift the soft fd limit to the hard one.
    raise_nofile();
    // Files we create get exactly the mode the caller asked for (the kernel already
    // applied the caller's umask).
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());

    let journal = if spec.no_journal {
        None
    } else {
        let mut o = JournalOptions::new(state_dir.clone());
        o.max_bytes = spec.journal_max_bytes;
        o.max_age = spec.journal_max_age;
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
    let cfg = FsConfig {
        attr_ttl: spec.ttl,
        entry_ttl: spec.ttl,
        read_only: spec.read_only,
        readdirplus: spec.readdirplus,
        lane_rules,
        ..FsConfig::default()
    };
    let fs = SessionFs::new(root, journal.clone(), cfg)
        .map_err(|e| fail(format!("source directory: {e}"), &ready))?;

    let mut opts = vec![
        // fuser's direct mount(2) path ignores subtype, so the source column
        // ("sessionfs:<dir>") is what marks a sessionfs mount in /proc/mounts and df.
        MountOption::FSName(format!(
            "sessionfs:{}",
            spec.source
                .as_ref()
                .and_then(|s| fs::canonicalize(s).ok())
                .unwrap_or_else(|| canon.to_path_buf())
                .display()
        )),
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
    config.clone_fd = true;

    // Block the shutdown signals before any thread starts, so that only our
    // signal thread receives them.
    let mut sigs = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        sigs.add(s);
    }
    let _ = sigs.thread_block();

    let mut session = fuser::Session::new(fs, canon, &config)
        .map_err(|e| fail(mount_error(canon, &e), &ready))?;
    let mut unmounter = session.unmount_callable();
    let pidf = pid_file(id);
    if let Some(d) = pidf.parent() {
        let _ = fs::create_dir_all(d);
    }
    let _ = fs::write(&pidf, format!("{}\n", std::process::id()));
    tracing::info!(mountpoint = %canon.display(), state_dir = %state_dir.display(), "mounted");
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(sig) = sigs.wait() {
                tracing::info!(?sig, "unmounting on signal");
                let _ = unmounter.unmount();
            }
        })
        .map_err(|e| e.to_string())?;
    if let Some(w) = ready {
        let mut f = fs::File::from(w);
        let _ = f.write_all(b"ok");
    }
    let r = session.run();
    // `destroy` flushed the journal when the kernel sent DESTROY; make sure anyway.
    if let Some(j) = &journal {
        j.shutdown();
    }
    let _ = fs::remove_file(&pidf);
    tracing::info!("unmounted");
    r.map_err(|e| format!("fuse session: {e}"))
}

/// Raise RLIMIT_NOFILE's soft limit to its hard limit (each inode the kernel holds
/// costs the daemon one O_PATH fd).
fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
        if hard < 65_536 {
            tracing::warn!(
                hard,
                "RLIMIT_NOFILE is low: each file the kernel holds costs one fd; raise LimitNOFILE"
            );
        }
    }
}

fn mount_error(mp: &Path, e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            format!(
                "mounting on {} is not permitted: run as root or install fuse3 (fusermount3)",
                mp.display()
            )
        }
        Some(libc::ENODEV) => {
            "the kernel has no FUSE support: load the fuse module (modprobe fuse)".into()
        }
        _ => format!("mounting on {} failed: {e}", mp.display()),
    }
}

/// `sessionfs umount`: unmount and wait (up to 30 s) for the daemon to flush its
/// journal and exit.
pub fn umount(mountpoint: &Path) -> Result<(), String> {
    let canon = fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    match mount_at(&canon) {
        Some((fstype, source)) if is_sessionfs_mount(&fstype, &source) => {}
        _ => return Err(format!("{} is not a sessionfs mount", canon.display())),
    }
    let id = mount_id(&canon);
    let pid = fs::read_to_string(pid_file(&id))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    let c =
        std::ffi::CString::new(canon.as_os_str().as_bytes()).map_err(|_| "bad path".to_string())?;
    // SAFETY: valid C string.
    let r = unsafe { libc::umount2(c.as_ptr(), 0) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        let st = std::process::Command::new("fusermount3")
            .arg("-u")
            .arg(&canon)
            .status();
        if !matches!(st, Ok(s) if s.success()) {
            return Err(format!("unmounting {} failed: {e}", canon.display()));
        }
    }
    if let Some(pid) = pid {
        let deadline = Instant::now() + Duration::from_secs(30);
        while nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
            && is_sessionfs(pid)
        {
            if Instant::now() > deadline {
                return Err(format!(
                    "unmounted, but daemon {pid} has not exited after 30 s"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(())
}

fn is_sessionfs(pid: i32) -> bool {
    // A zombie (our own child in tests) counts as exited.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}
