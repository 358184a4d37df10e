//! The command line: `sessionfs mount|umount|demo|journal|salvage|locks|explain|changes`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::explain::{ChangesArgs, ExplainArgs};
use crate::journal::cli::{JournalArgs, SalvageArgs};
use crate::mount::MountSpec;

/// sessionfs: a FUSE passthrough over OpenClaw session directories that journals
/// every change with the process (and lane) that made it.
#[derive(Parser, Debug)]
#[command(name = "sessionfs", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Mount sessionfs over MOUNTPOINT (over its own contents unless --source is given).
    Mount(MountArgs),
    /// Watch a daemon; if it dies without unmounting, start a new one on the live
    /// connection (`--supervise`) or detach the mount (fail open). Started by the
    /// daemon; see --supervise and --fail-closed.
    #[command(hide = true)]
    Sentinel(crate::supervisor::SentinelArgs),
    /// Hand a mount to the sessionfs binary now installed, without unmounting: the
    /// mount must have a supervisor (--supervise). The mount, its device and inode
    /// numbers stay; requests in flight go to the new daemon.
    Upgrade {
        /// The mountpoint.
        mountpoint: PathBuf,
    },
    /// Mount sessionfs over `<root>/agents`, so every agent's sessions directory, now
    /// and created later, is on the mount before its first write. Idempotent.
    MountAll(MountAllArgs),
    /// Unmount and wait (up to 30 s) for the daemon to flush its journal and exit; a
    /// stale mount left by a killed daemon is detached lazily.
    Umount {
        /// The mountpoint (may be relative, or a dead ENOTCONN mount).
        mountpoint: PathBuf,
        /// Detach only a stale mount (its connection gone: ENOTCONN), and leave alone
        /// a live one, or one no daemon answers within 0.2 s (systemd's fd store
        /// holding it for the restarted daemon); succeeds when nothing is mounted.
        /// For `ExecStartPre=`.
        #[arg(long)]
        stale_only: bool,
    },
    /// Unpack a real OpenClaw sessions directory, mount it, run one turn's write
    /// pattern through the mount and show what happened.
    Demo,
    /// Print the journal of a file on a mount (or of the whole mount).
    Journal(JournalArgs),
    /// Print the transcript lines a file lost to truncation, rewrite or rename, byte
    /// for byte.
    Salvage(SalvageArgs),
    /// List the session locks on a mount: file, true holder (host pid, comm,
    /// container), alive or dead, age, maxHoldMs, whether the gateway calls it stale.
    Locks {
        /// The mountpoint.
        mountpoint: PathBuf,
        /// One JSON object per lock and line (the mount's `.locks` file), not a table.
        #[arg(long)]
        json: bool,
    },
    /// How each live sessionfs mount (or MOUNTPOINT's) is doing: daemon pid, uptime,
    /// source, FUSE requests by op and per s, journal and salvage size, inode table,
    /// locks held, reaped and stolen, errors and the last one (root or
    /// --journal-group: it reads each mount's `.status`).
    Status {
        /// One mountpoint [default: every sessionfs mount].
        mountpoint: Option<PathBuf>,
        /// One JSON object per mount and line (its `.status`, with `mountpoint`).
        #[arg(long)]
        json: bool,
    },
    /// Explain a session file's release windows: who changed it while its runner had
    /// released the lock, and whether the gateway's fence tripped on it (or explain
    /// every takeover in a gateway log with --gateway-log).
    Explain(ExplainArgs),
    /// What changed in a session file since a cursor (a journal seq, or a byte offset
    /// of `<file>.journal`): each change classified, and a verdict for the runner.
    Changes(ChangesArgs),
}

/// `sessionfs mount` arguments.
#[derive(Args, Debug)]
pub struct MountArgs {
    /// Directory to mount on (must exist).
    pub mountpoint: PathBuf,
    /// Serve this directory at MOUNTPOINT instead of MOUNTPOINT's own contents.
    #[arg(long, value_name = "DIR")]
    pub source: Option<PathBuf>,
    /// Stay in the foreground and log to stderr.
    #[arg(short = 'f', long)]
    pub foreground: bool,
    /// Mount options, comma-separated: allow_other, ro, rw, debug, and every long flag
    /// as key=value or a bare word (state_dir=DIR, journal_max_size=256MiB, threads=4,
    /// no_journal, ...), so an fstab line can say everything (default_permissions is
    /// always on and the mount is always nodev).
    #[arg(short = 'o', value_name = "OPTS", value_delimiter = ',')]
    pub options: Vec<String>,
    /// FUSE worker threads (1-64).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,
    /// Journal state directory, outside the mountpoint and the source (default:
    /// `$XDG_STATE_HOME/sessionfs/<mount-id>`, or `/var/lib/sessionfs/<mount-id>` as root).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// JSON file of lane rules (see README, "Lanes").
    #[arg(long, value_name = "FILE")]
    pub lanes: Option<PathBuf>,
    /// Do not keep a journal (pure passthrough).
    #[arg(long)]
    pub no_journal: bool,
    /// Journal size bound in bytes, with an optional unit: 256MiB, 1GiB.
    #[arg(long, default_value = "256MiB", value_parser = parse_journal_size)]
    pub journal_max_size: u64,
    /// Journal age bound: a count with s, m, h or d, e.g. 30d, 12h.
    #[arg(long, default_value = "30d", value_parser = parse_journal_age)]
    pub journal_max_age: Duration,
    /// Salvage store bound (removed transcript lines), all files together; past it the
    /// least recently written file's salvage is evicted (journaled `salvage-evict`).
    #[arg(long, default_value = "1GiB", value_parser = parse_journal_size)]
    pub salvage_max_size: u64,
    /// One file's share of the salvage store; past it the file's oldest removed lines
    /// are evicted [default: an eighth of --salvage-max-size].
    #[arg(long, value_name = "SIZE", value_parser = parse_salvage_file_size)]
    pub salvage_max_file_size: Option<u64>,
    /// Most memory for journal records not written yet (state dir full or failing),
    /// a size like 64MiB (at least 1MiB); past it records are dropped and counted in a
    /// `gap` record.
    #[arg(long, default_value = "64MiB", value_parser = parse_journal_pending)]
    pub journal_max_pending: u64,
    /// Negotiate READDIRPLUS (cheaper cold listings, slower repeated `ls -l`).
    #[arg(long)]
    pub readdirplus: bool,
    /// Most inodes the daemon holds before it asks the kernel to drop idle ones
    /// [default: no bound on inodes reached by file handles; inodes holding their own
    /// fd are bounded by RLIMIT_NOFILE minus a reserve of max(1024, 10%)].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(16..))]
    pub max_inodes: Option<u64>,
    /// Hold one O_PATH fd per inode instead of a file handle (what the daemon does by
    /// itself where handles do not work: a backing filesystem without export
    /// operations, or no CAP_DAC_READ_SEARCH).
    #[arg(long)]
    pub no_file_handles: bool,
    /// Group (name or number) that may read the whole-mount views `.journal` and
    /// `.locks` besides the daemon's user (they become mode 0440).
    #[arg(long, value_name = "GROUP")]
    pub journal_group: Option<String>,
    /// Never unlink a lock file whose holder died (by default sessionfs does, at once,
    /// and journals `lock-reap`).
    #[arg(long)]
    pub no_reap: bool,
    /// Forward every metadata change to the backing file, even one that changes
    /// nothing (a chmod to the current mode, a chown to the current owner, a setxattr
    /// of the stored value), so ctime moves as on ext4. Default: answered by sessionfs
    /// and journaled with class `noop`, so no OpenClaw fence trips on them.
    #[arg(long)]
    pub strict_stat: bool,
    /// Keep a crashed daemon's mount, answering ENOTCONN, until `sessionfs umount`.
    /// Default for an overlay mount (no --source; fail open): a sentinel process
    /// detaches it within a second, and the path serves the same files again,
    /// unjournaled, until sessionfs is mounted again. A --source mount always fails
    /// closed.
    #[arg(long)]
    pub fail_closed: bool,
    /// Keep the mount across a daemon crash: a supervisor process holds the FUSE
    /// connection and starts a new daemon on it, which resumes the requests in flight
    /// (Linux 6.9+), so callers wait a moment instead of failing. After 5 crashes in
    /// 60 s it gives up (fail open, or closed with --fail-closed).
    #[arg(long)]
    pub supervise: bool,
    /// Attribute/entry cache TTL in milliseconds. Every change through the mount keeps
    /// the kernel cache coherent whatever the TTL; it bounds how long a change made
    /// around the mount (a pre-mount fd, the --source directory) stays unseen.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pub ttl_ms: u64,
}

/// Arguments of `sessionfs mount-all`.
#[derive(Args, Debug)]
pub struct MountAllArgs {
    /// OpenClaw's state root [default: $OPENCLAW_STATE_DIR, else ~/.openclaw].
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Options for the mount, as `sessionfs mount` takes them (`-o allow_other`,
    /// `--state-dir DIR`, `-f`, ...), after `--`.
    #[arg(last = true, value_name = "MOUNT OPTIONS")]
    pub mount_args: Vec<String>,
}

impl MountAllArgs {
    /// The directory to mount: `<root>/agents`.
    pub fn target(&self) -> PathBuf {
        let root = self.root.clone().unwrap_or_else(|| {
            std::env::var_os("OPENCLAW_STATE_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                        .join(".openclaw")
                })
        });
        root.join("agents")
    }

    /// The `sessionfs mount` arguments for `target`. Errors: one line, as for `mount`.
    pub fn mount_args(&self, target: &std::path::Path) -> Result<MountArgs, String> {
        let mut argv: Vec<std::ffi::OsString> = vec!["sessionfs".into(), "mount".into()];
        argv.extend(self.mount_args.iter().map(Into::into));
        argv.push(target.as_os_str().to_os_string());
        match Cli::try_parse_from(argv) {
            Ok(Cli {
                command: Command::Mount(a),
            }) => Ok(a),
            Ok(_) => Err("mount-all: bad mount options".into()),
            Err(e) => Err(format!(
                "mount-all: {}",
                e.to_string().lines().next().unwrap_or("bad mount options")
            )),
        }
    }
}

/// Parse a byte size: a decimal count with an optional binary unit, case-insensitive:
/// none or `B` (bytes), `K`/`KB`/`KiB` (×1024), `M`/`MB`/`MiB` (×1024²), `G`/`GB`/`GiB`
/// (×1024³), `T`/`TB`/`TiB` (×1024⁴). `256MiB` → 268435456, `4096` → 4096.
///
/// # Errors
/// A one-line message when the count is missing or not a whole number (`1.5G`), the
/// unit is unknown, or the result does not fit in a u64.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("'{s}' is not a size like 256MiB"))?;
    let mul: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "'{s}': unknown unit '{unit}' (use KiB, MiB, GiB or TiB)"
            ));
        }
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// Parse an age: a decimal count with an optional unit, `s` (seconds, the default),
/// `m` (minutes), `h` (hours) or `d` (days). `30d` → 30 × 86400 s, `90m` → 5400 s.
///
/// # Errors
/// A one-line message when the count is missing or not a whole number, the unit is
/// unknown, or the number of seconds does not fit in a u64.
pub fn parse_age(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("'{s}' is not an age like 30d"))?;
    let secs: u64 = match unit.trim() {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("'{s}': unknown unit '{unit}' (use s, m, h or d)")),
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// `--journal-max-size`: a [`parse_size`] of at least 1 MiB (a smaller bound would
/// drop records as soon as they are written).
fn parse_journal_size(s: &str) -> Result<u64, String> {
    let n = parse_size(s)?;
    if n < 1 << 20 {
        return Err(format!(
            "'{s}' is below the 1MiB the journal needs to keep anything"
        ));
    }
    Ok(n)
}

/// `--journal-max-pending` and `-o journal_max_pending=`: a [`parse_size`] of at least
/// 1 MiB (a smaller bound drops records at the first slow write).
fn parse_journal_pending(s: &str) -> Result<u64, String> {
    let n = parse_size(s)?;
    if n < 1 << 20 {
        return Err(format!("'{s}' is below the 1MiB a burst of records needs"));
    }
    Ok(n)
}

/// `--salvage-max-file-size`: a [`parse_size`] of at least 64 KiB (a few transcript
/// lines).
fn parse_salvage_file_size(s: &str) -> Result<u64, String> {
    let n = parse_size(s)?;
    if n < 64 << 10 {
        return Err(format!(
            "'{s}' is below the 64KiB a file's salvage needs to keep a few lines"
        ));
    }
    Ok(n)
}

/// `--journal-max-age`: a [`parse_age`] of at least one minute.
fn parse_journal_age(s: &str) -> Result<Duration, String> {
    let d = parse_age(s)?;
    if d < Duration::from_secs(60) {
        return Err(format!(
            "'{s}' is below the 1m the journal needs to keep anything"
        ));
    }
    Ok(d)
}

/// A group name or number → gid.
///
/// # Errors
/// One line when no such group exists.
fn group_id(g: &str) -> Result<u32, String> {
    if let Ok(n) = g.parse::<u32>() {
        return Ok(n);
    }
    match nix::unistd::Group::from_name(g) {
        Ok(Some(gr)) => Ok(gr.gid.as_raw()),
        _ => Err(format!(
            "journal group '{g}': no such group (give a group name or a number)"
        )),
    }
}

/// Every `-o` option, as the error for an unknown one lists them.
pub const MOUNT_OPTIONS: &str = "allow_other, ro, rw, debug, strict_stat, no_reap, no_journal, readdirplus, fail_closed, supervise, no_file_handles, \
state_dir=DIR, lanes=FILE, journal_max_size=SIZE, journal_max_age=AGE, threads=N, max_inodes=N, \
ttl_ms=MS, journal_group=GROUP, salvage_max_size=SIZE, salvage_max_file_size=SIZE, \
journal_max_pending=SIZE";

fn unknown_option(o: &str) -> String {
    format!("unknown mount option '{o}' (supported: {MOUNT_OPTIONS})")
}

impl MountArgs {
    /// Validate `-o` and build the [`MountSpec`] (paths are passed on as given; the
    /// mount resolves them). `-o` takes every option of [`MOUNT_OPTIONS`] and
    /// `default_permissions` (always on anyway), comma-separated; a `key=value` option
    /// is its long flag (`state_dir=` is `--state-dir`), and an option given later wins
    /// over an earlier one and over the flag. `--ttl-ms` becomes `ttl` in
    /// milliseconds, `--journal-max-size` bytes.
    ///
    /// # Errors
    /// One line naming the first unknown `-o` option, or a bad value.
    pub fn spec(&self) -> Result<MountSpec, String> {
        let mut spec = MountSpec {
            mountpoint: self.mountpoint.clone(),
            source: self.source.clone(),
            foreground: self.foreground,
            allow_other: false,
            read_only: false,
            debug: false,
            threads: self.threads as usize,
            state_dir: self.state_dir.clone(),
            lanes: self.lanes.clone(),
            no_journal: self.no_journal,
            journal_max_bytes: self.journal_max_size,
            journal_max_age: self.journal_max_age,
            salvage_max_bytes: self.salvage_max_size,
            salvage_file_max_bytes: self.salvage_max_file_size,
            journal_max_pending: self.journal_max_pending,
            ttl: Duration::from_millis(self.ttl_ms),
            readdirplus: self.readdirplus,
            max_inodes: self.max_inodes.map(|n| n as usize),
            file_handles: !self.no_file_handles,
            strict_stat: self.strict_stat,
            reap: !self.no_reap,
            journal_group: self.journal_group.as_deref().map(group_id).transpose()?,
            fail_closed: self.fail_closed,
            supervise: self.supervise,
        };
        for o in self
            .options
            .iter()
            .map(|o| o.trim())
            .filter(|o| !o.is_empty())
        {
            // `key=value` options: the same as the long flag of that name (dashes
            // written as underscores), so an fstab line can say everything.
            if let Some((key, value)) = o.split_once('=') {
                let bad = |e: String| format!("mount option '{key}': {e}");
                match key {
                    "state_dir" => spec.state_dir = Some(PathBuf::from(value)),
                    "lanes" => spec.lanes = Some(PathBuf::from(value)),
                    "journal_max_size" => {
                        spec.journal_max_bytes = parse_journal_size(value).map_err(bad)?
                    }
                    "journal_max_age" => {
                        spec.journal_max_age = parse_journal_age(value).map_err(bad)?
                    }
                    "threads" => {
                        spec.threads = value
                            .parse::<usize>()
                            .ok()
                            .filter(|n| (1..=64).contains(n))
                            .ok_or_else(|| bad(format!("'{value}' is not a thread count 1-64")))?
                    }
                    "max_inodes" => {
                        spec.max_inodes = Some(
                            value
                                .parse::<usize>()
                                .ok()
                                .filter(|n| *n >= 16)
                                .ok_or_else(|| {
                                    bad(format!("'{value}' is not a count of at least 16"))
                                })?,
                        )
                    }
                    "ttl_ms" => {
                        spec.ttl = Duration::from_millis(
                            value
                                .parse()
                                .map_err(|_| bad(format!("'{value}' is not a number of ms")))?,
                        )
                    }
                    "journal_group" => spec.journal_group = Some(group_id(value)?),
                    "journal_max_pending" => {
                        spec.journal_max_pending = parse_journal_pending(value).map_err(bad)?
                    }
                    "salvage_max_size" => {
                        spec.salvage_max_bytes = parse_journal_size(value).map_err(bad)?
                    }
                    "salvage_max_file_size" => {
                        spec.salvage_file_max_bytes =
                            Some(parse_salvage_file_size(value).map_err(bad)?)
                    }
                    _ => return Err(unknown_option(o)),
                }
                continue;
            }
            match o {
                "allow_other" => spec.allow_other = true,
                "ro" => spec.read_only = true,
                "rw" => spec.read_only = false,
                "debug" => spec.debug = true,
                "strict_stat" => spec.strict_stat = true,
                "no_reap" => spec.reap = false,
                "no_journal" => spec.no_journal = true,
                "fail_closed" => spec.fail_closed = true,
                "supervise" => spec.supervise = true,
                "no_file_handles" => spec.file_handles = false,
                "readdirplus" => spec.readdirplus = true,
                "default_permissions" => {}
                other => return Err(unknown_option(other)),
            }
        }
        Ok(spec)
    }
}
