//! The FUSE filesystem: every operation is resolve (inode/handle table) → do on the
//! backing fd → record (journal). Nothing here re-resolves a path string: all backing
//! calls are relative to held O_PATH fds, one name component at a time, and never
//! follow a symlink.
//!
//! Where things live:
//! - [`ops`]: the `fuser::Filesystem` handlers, and nothing else: each turns the
//!   request into a [`Ctx`], resolves, calls a core function, replies.
//! - [`change`]: the one recorded-change step every mutation goes through, and the
//!   mutations of an existing inode (setattr's four parts, xattrs, link, fallocate);
//!   [`write`]: the WRITE path; [`dirops`]: create, mknod, mkdir, symlink, unlink,
//!   rename; [`files`]: open, release, fsync and the handles of virtual files.
//! - [`fence`]: what the backing looked like after our last change (keep-cache, known
//!   fingerprints) and `external` detection.
//! - [`cut`]: the transcript cut/salvage protocol (lines a truncate, overwrite,
//!   unlink or fallocate removes).
//! - [`record`]: building journal records; [`inode`], [`handle`]: the tables;
//!   [`attr`]: stat → FUSE attributes; [`virt`]: `.journal`/`.salvage` files;
//!   [`fdcache`]: file handles and the O_PATH fd cache; [`pressure`]: fd budget;
//!   [`replied`]: early replies vs journal readers.

mod adopt;
pub(crate) mod attr;
mod change;
mod cut;
mod dirops;
mod fdcache;
mod fence;
mod files;
mod handle;
mod inode;
mod ops;
mod pressure;
mod record;
mod replied;
mod shown;
pub(crate) mod stats;
mod virt;
mod write;

#[cfg(test)]
mod tests;

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{Request, TimeOrNow};
use nix::errno::Errno;

use crate::identity::IdentityCache;
use crate::journal::Journal;
use crate::lanes::{LaneDeclarations, LaneRules};
use crate::sys::{self, SysResult};
use crate::transcript::{self, TranscriptTracker};

pub use stats::ErrorLayer;
pub(crate) use virt::{LOCKS_FILE, STATUS_FILE};

use handle::{DirHandle, FileHandle, Handles};
use inode::{Inode, InodeTable, ROOT_ID};
use virt::VirtualFiles;

/// Extended attribute that returns a file's latest journal `seq` (decimal ASCII).
pub const SEQ_XATTR: &str = "user.sessionfs.seq";

/// `__FMODE_EXEC`: set in OPEN flags when the kernel opens a binary for execve.
const FMODE_EXEC: i32 = 0x20;

/// Filesystem settings fixed at mount time.
#[derive(Debug)]
pub struct FsConfig {
    /// Attribute TTL handed to the kernel for backing inodes.
    pub attr_ttl: Duration,
    /// Entry (name → inode) TTL, positive and negative.
    pub entry_ttl: Duration,
    /// Refuse every modification with EROFS (`-o ro`; the kernel enforces it too).
    pub read_only: bool,
    /// Lane rules from `--lanes`.
    pub lane_rules: LaneRules,
    /// Files whose transcript line index is kept (LRU bound).
    pub tracked_files: usize,
    /// Negotiate READDIRPLUS. Off by default: it makes a cold listing cheaper, but the
    /// kernel drops every listed inode's cached ACL on each READDIRPLUS, so every
    /// `ls -l` then costs one GETXATTR round trip per file (measured: 6× native for
    /// 10k files, against 0.8× with plain READDIR and cached entries).
    pub readdirplus: bool,
    /// Most inodes the daemon holds before it asks the kernel to drop idle ones;
    /// `None`: only inodes holding a pinned fd are bounded, by `RLIMIT_NOFILE` (all but
    /// max(1,024, 10%) of the fds). See [`pressure`].
    pub max_inodes: Option<usize>,
    /// Reach inodes by file handles where the backing supports them, with at most
    /// [`fdcache::FD_CACHE_CAP`] O_PATH fds open; `false` (`--no-file-handles`): one
    /// fd per inode. See [`fdcache`].
    pub file_handles: bool,
    /// Group allowed to read the whole-mount views (`.journal`, `.locks`), besides the
    /// daemon's user (`--journal-group`); `None`: the daemon's user only.
    pub journal_group: Option<u32>,
    /// State dir: where remembered stat times persist (`None`: in memory only).
    pub state_dir: Option<std::path::PathBuf>,
    /// Reap locks whose holder died (`--no-reap` turns it off; see [`crate::locks`]).
    pub reap: bool,
    /// `--strict-stat`: forward every change to the backing file even when it would
    /// change nothing (a chmod to the current mode, a chown to the current owner, a
    /// setxattr of the stored value), as ext4 does (its ctime then moves).
    pub strict_stat: bool,
    /// This daemon serves a live connection an earlier daemon served (`--supervise`
    /// restart): node ids and file handles it never handed out are found again in the
    /// backing tree ([`adopt`]).
    pub resumed: bool,
    /// When the earlier daemon died (ns since the epoch; its supervisor's or, under
    /// the fd store, our own start): an inode born later is never adopted.
    pub resumed_since_ns: Option<i64>,
    /// Held for reading by every request while it runs; an upgrade takes it for
    /// writing (see `crate::supervisor`), so the daemon exits between requests: what
    /// it has read and not begun, the kernel re-sends to the next daemon. None when
    /// no supervisor can restart the daemon.
    pub gate: Option<Arc<parking_lot::RwLock<()>>>,
    /// What restarts the daemon on the live mount after a crash or for an upgrade:
    /// `"supervisor"`, `"fd-store"`, or None (`.status` `restart`).
    pub restart: Option<&'static str>,
    /// Filled in by the mount once the FUSE session exists (inode pressure sends its
    /// notifications through it).
    pub notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
}

impl Default for FsConfig {
    fn default() -> Self {
        Self {
            attr_ttl: Duration::from_secs(10),
            entry_ttl: Duration::from_secs(10),
            read_only: false,
            lane_rules: LaneRules::empty(),
            tracked_files: 1024,
            readdirplus: false,
            max_inodes: None,
            file_handles: true,
            strict_stat: false,
            state_dir: None,
            journal_group: None,
            reap: true,
            resumed: false,
            resumed_since_ns: None,
            gate: None,
            restart: None,
            notifier: Default::default(),
        }
    }
}

/// Who asked: the FUSE request header's caller. Everything below [`ops`] takes this
/// instead of fuser's `Request`, so the core runs without a mount (unit tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ctx {
    /// Caller's thread id (FUSE reports the tid; 0 for the kernel's own requests).
    pub pid: u32,
    /// Caller's fs uid.
    pub uid: u32,
    /// Caller's fs gid.
    pub gid: u32,
}

impl From<&Request> for Ctx {
    fn from(req: &Request) -> Self {
        Self {
            pid: req.pid(),
            uid: req.uid(),
            gid: req.gid(),
        }
    }
}

/// The sessionfs filesystem over one backing directory.
#[derive(Debug)]
pub struct SessionFs {
    inodes: Arc<InodeTable>,
    files: Handles<FileHandle>,
    dirs: Handles<DirHandle>,
    ids: IdentityCache,
    lanes: LaneDeclarations,
    tracker: TranscriptTracker,
    rewrites: transcript::Rewrites,
    replied: replied::Replied,
    journal: Option<Arc<Journal>>,
    locks: Arc<crate::locks::Locks>,
    /// Remembered stat times (see [`shown`]).
    shown: shown::Overrides,
    /// Content of transcripts before the in-place rewrite in progress (see
    /// [`SessionFs::note_rewrite_origin`]).
    origins: parking_lot::Mutex<std::collections::HashMap<sys::FileKey, cut::Origin>>,
    /// Keys of [`shown::content_hash`], random per daemon run.
    hash_keys: std::collections::hash_map::RandomState,
    /// To the invalidation thread (see [`Inval`]).
    inval: crossbeam_channel::Sender<Inval>,
    /// To the thread that replies to direct WRITEs once the kernel has dropped the
    /// pages they wrote (see [`write::HeldReply`]).
    held_replies: crossbeam_channel::Sender<write::HeldReply>,
    virt: VirtualFiles,
    cfg: FsConfig,
    /// SELinux is active on this host (`/sys/fs/selinux` exists).
    selinux: bool,
    /// Request counters and the last error (`.status`).
    stats: Arc<stats::Stats>,
    /// Where the backing tree's inode numbers are, for ids adopted after a restart
    /// (see [`adopt`]); built on first need.
    adopted: parking_lot::Mutex<Option<adopt::Index>>,
}

/// fuser's errno from ours.
fn err(e: Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e as i32)
}

/// The flags of our backing open for a caller's open `flags`. Without `__FMODE_EXEC`
/// (the kernel's, not an open flag) and `O_DIRECT`: the kernel already bypasses its
/// page cache for an `O_DIRECT` caller and sends us READ/WRITE requests, whose buffers
/// (ours, fuser's) are not block-aligned, so an `O_DIRECT` backing fd would fail them
/// with EINVAL.
fn backing_flags(flags: i32) -> i32 {
    flags & !(FMODE_EXEC | libc::O_DIRECT)
}

/// A SETATTR time as `utimensat` takes it (`UTIME_OMIT` when absent).
fn to_timespec(t: Option<TimeOrNow>) -> libc::timespec {
    let (tv_sec, tv_nsec) = match t {
        None => (0, libc::UTIME_OMIT),
        Some(TimeOrNow::Now) => (0, libc::UTIME_NOW),
        Some(TimeOrNow::SpecificTime(st)) => match st.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
            Err(e) => {
                let d = e.duration();
                let (mut s, mut ns) = (-(d.as_secs() as i64), -(d.subsec_nanos() as i64));
                if ns < 0 {
                    s -= 1;
                    ns += 1_000_000_000;
                }
                (s, ns)
            }
        },
    };
    libc::timespec { tv_sec, tv_nsec }
}

impl SessionFs {
    /// Filesystem serving the directory `root` (an O_PATH|O_DIRECTORY fd opened before
    /// the mount, so that mounting over the same path keeps it reachable).
    ///
    /// Errors: the errno of `fstat` on `root`; ENOTDIR if it is not a directory.
    pub fn new(root: OwnedFd, journal: Option<Arc<Journal>>, cfg: FsConfig) -> SysResult<Self> {
        let st = sys::fstat(root.as_fd())?;
        if !sys::is_dir(&st) {
            return Err(Errno::ENOTDIR);
        }
        let inodes = Arc::new(InodeTable::new(
            root,
            &st,
            cfg.file_handles,
            fdcache::FD_CACHE_CAP,
        ));
        match inodes.fds().handles_on() {
            Ok(()) => tracing::info!(
                fd_cache = inodes.fds().capacity(),
                "inodes are reached by file handles (O_PATH fds cached)"
            ),
            Err(why) => tracing::info!(reason = why, "file handles off: one O_PATH fd per inode"),
        }
        let bounds = match cfg.max_inodes {
            Some(n) => pressure::Bounds::new(n),
            None => pressure::Bounds::from_nofile(
                nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                    .map_or(1024, |(soft, _)| soft),
            ),
        };
        let valve =
            pressure::Pressure::start(Arc::downgrade(&inodes), bounds, cfg.notifier.clone())
                .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN)))?;
        let _ = inodes.pressure.set(valve);
        let locks = crate::locks::Locks::start(journal.clone(), cfg.notifier.clone(), cfg.reap)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN)))?;
        let fs = Self {
            inodes,
            files: Handles::new(),
            dirs: Handles::new(),
            ids: IdentityCache::new(),
            lanes: LaneDeclarations::new(),
            tracker: TranscriptTracker::new(cfg.tracked_files),
            rewrites: transcript::Rewrites::default(),
            replied: replied::Replied::default(),
            journal,
            locks,
            shown: shown::Overrides::load(if cfg.strict_stat {
                None
            } else {
                cfg.state_dir.clone()
            }),
            origins: Default::default(),
            hash_keys: Default::default(),
            inval: start_invalidator(cfg.notifier.clone())
                .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN)))?,
            held_replies: write::start_held_replies(cfg.notifier.clone())
                .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN)))?,
            virt: VirtualFiles::new(),
            cfg,
            selinux: Path::new("/sys/fs/selinux/enforce").exists(),
            stats: Arc::new(stats::Stats::default()),
            adopted: Default::default(),
        };
        // The recent request rates of `.status`: a sample a second, until unmount.
        let weak = Arc::downgrade(&fs.stats);
        let _ = std::thread::Builder::new()
            .name("sessionfs-stats".into())
            .spawn(move || {
                while let Some(s) = weak.upgrade() {
                    s.sample();
                    drop(s);
                    std::thread::sleep(Duration::from_secs(1));
                }
            });
        if fs.cfg.resumed {
            let guarded = fs.recover_locks();
            if !guarded.is_empty() {
                tracing::warn!(
                    locks = guarded.len(),
                    "locks held across the restart are tracked again"
                );
                // The notifier exists once the session does: wait for it (≤ 5 s).
                let notifier = fs.cfg.notifier.clone();
                let _ = std::thread::Builder::new()
                    .name("sessionfs-inval-locked".into())
                    .spawn(move || {
                        for _ in 0..500 {
                            if let Some(n) = notifier.get() {
                                for id in guarded {
                                    let _ = n.inval_inode(fuser::INodeNo(id), -1, 0);
                                }
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    });
            }
        }
        Ok(fs)
    }

    /// (inodes in the table incl. the root, open file handles, open dir handles);
    /// after unmount every lookup is forgotten, so a leak shows here.
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.inodes.len(), self.files.len(), self.dirs.len())
    }

    /// The inode of node id `ino`; ENOENT when the kernel does not hold it.
    /// Count a request of kind `r` and hold the upgrade gate while it runs (see
    /// [`FsConfig::gate`]).
    fn enter(&self, r: stats::Req) -> Option<parking_lot::RwLockReadGuard<'_, ()>> {
        self.stats.hit(r);
        self.cfg.gate.as_ref().map(|g| g.read())
    }

    fn inode(&self, ino: u64) -> SysResult<Arc<Inode>> {
        match self.inodes.get(ino) {
            Some(i) => Ok(i),
            // A node id the kernel holds from the daemon before us (`--supervise`).
            None if self.cfg.resumed => self.adopt_inode(ino).ok_or(Errno::ENOENT),
            None => Err(Errno::ENOENT),
        }
    }

    /// EROFS on a read-only mount.
    fn ro(&self) -> SysResult<()> {
        if self.cfg.read_only {
            Err(Errno::EROFS)
        } else {
            Ok(())
        }
    }

    /// Stat of an inode's backing object, with `FileAttr` served under its node id.
    fn stat_attr(&self, inode: &Inode) -> SysResult<(libc::stat, fuser::FileAttr)> {
        let st = sys::fstat(inode.fd()?)?;
        Ok((st, self.attr_of(inode.id, &st)))
    }

    /// GETATTR of a backing inode, outside any change of ours: a backing state we did
    /// not cause is journaled `external`. Returns the attributes and their TTL (one
    /// lock-table lookup serves both the `stat` record and the TTL). Errors: the errno
    /// of `fstat`.
    fn do_getattr(&self, ctx: &Ctx, inode: &Inode) -> SysResult<(fuser::FileAttr, Duration)> {
        self.inodes.touch(inode);
        let (locked, holder) = self.holder_stat(ctx, inode);
        // The holder's stat is taken and journaled under the inode's order lock, so a
        // change by another process falls wholly before it in seq order or wholly
        // after, as it does in the stat's result. Without it a chmod could be
        // journaled before the fence stat that did not see it, and explain call it
        // absorbed while the gateway's fence tripped on it.
        let _order = holder.as_ref().map(|_| inode.ordered());
        let seen = inode.changes();
        let st = sys::fstat(inode.fd()?)?;
        self.check_external(inode, &st, 0, seen);
        let a = self.attr_of(inode.id, &st);
        if let Some((caller, path)) = holder {
            self.record_holder_stat(&caller, path, inode, &st);
        }
        Ok((
            a,
            if locked {
                Duration::ZERO
            } else {
                self.cfg.attr_ttl
            },
        ))
    }

    /// A stat of a session file whose lock is held, by the holder, is journaled as
    /// `stat`, in order with the file's changes. These are the gateway's fence reads
    /// and checks; `sessionfs explain` bounds what a hold folds into the fence by
    /// them. (Attr TTL 0 while the lock is held makes every such stat reach us.)
    /// Returns whether the file's lock is held, and the caller and path when this
    /// stat is the holder's.
    fn holder_stat(
        &self,
        ctx: &Ctx,
        inode: &Inode,
    ) -> (bool, Option<(crate::identity::Caller, String)>) {
        if self.journal.is_none() || !self.is_transcript(inode) {
            return (false, None);
        }
        let path = self.inodes.path_of(inode);
        let Some((pid, start)) = self.locks.holder_of(&path) else {
            return (false, None);
        };
        let caller = self.ids.caller(ctx.pid, ctx.uid, ctx.gid);
        let is_holder = caller
            .process
            .as_ref()
            .is_some_and(|p| p.pid == pid && p.starttime == start);
        (true, is_holder.then_some((caller, path)))
    }

    /// Journal the holder's stat `st` (see [`Self::holder_stat`]); the caller holds
    /// the inode's order lock.
    fn record_holder_stat(
        &self,
        caller: &crate::identity::Caller,
        path: String,
        inode: &Inode,
        st: &libc::stat,
    ) {
        let (ino, size, m, c) = self.reported_fp(st);
        self.record_as(
            caller,
            crate::journal::record::Op::Stat,
            path,
            Some(inode.key()),
            |r| {
                r.after = Some(crate::journal::record::Fingerprint {
                    ino,
                    size,
                    mtime_ns: m,
                    ctime_ns: c,
                });
                r.fence_moved = Some(false);
            },
        );
    }

    /// Attr TTL for `inode`: 0 for a session file while its lock is held, so that
    /// each stat of it reaches the daemon (see [`Self::holder_stat`]).
    fn attr_ttl_of(&self, inode: &Inode) -> Duration {
        if self.journal.is_some()
            && self.is_transcript(inode)
            && self.locks.holder_of(&self.inodes.path_of(inode)).is_some()
        {
            Duration::ZERO
        } else {
            self.cfg.attr_ttl
        }
    }

    /// FUSE attributes of backing stat `st` served under node id `id`, with the
    /// remembered times of a file whose backing stat moved without a change (see
    /// [`shown`]).
    fn attr_of(&self, id: u64, st: &libc::stat) -> fuser::FileAttr {
        let mut a = if id == ROOT_ID {
            attr::root_attr(st)
        } else {
            attr::to_attr(id, st)
        };
        if st.st_mode & libc::S_IFMT == libc::S_IFREG && !self.cfg.strict_stat {
            let (m, c) = self.shown.times(st);
            a.mtime = attr::time_ns(m);
            a.ctime = attr::time_ns(c);
        }
        a
    }

    /// The fence fingerprint (ino, size, mtime ns, ctime ns) the mount reports for
    /// backing stat `st`.
    fn reported_fp(&self, st: &libc::stat) -> (u64, u64, i64, i64) {
        let (m, c) = if st.st_mode & libc::S_IFMT == libc::S_IFREG && !self.cfg.strict_stat {
            self.shown.times(st)
        } else {
            let f = attr::fingerprint(st);
            (f.mtime_ns, f.ctime_ns)
        };
        (st.st_ino, st.st_size as u64, m, c)
    }

    /// Look up `name` in `parent` on the backing: O_PATH|O_NOFOLLOW open + fstat, then
    /// one lookup count. `..` of the root is the root.
    fn do_lookup(&self, parent: &Inode, name: &OsStr) -> SysResult<(Arc<Inode>, fuser::FileAttr)> {
        if parent.id == ROOT_ID && name.as_bytes() == b".." {
            let root = self.inodes.root();
            self.inodes.add_lookup(&root);
            let (_, a) = self.stat_attr(&root)?;
            return Ok((root, a));
        }
        let c = sys::cname(name)?;
        let fd = sys::openat(parent.fd()?, &c, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        let st = sys::fstat(fd.as_fd())?;
        let (inode, new_name) = self.inodes.lookup(fd, &st, parent.id, name);
        if new_name && st.st_nlink > 1 {
            self.reach_names_again(inode.other_names(parent.id, name));
        }
        // A change around the mount shows here first (after the entry TTL): check it
        // before the reply, whose times may then be remembered ones.
        let mut st = st;
        if inode.is_file() {
            let seen = inode.changes();
            if let Ok(now) = inode.fd().and_then(sys::fstat) {
                self.check_external(&inode, &now, 0, seen);
                st = now;
            }
        }
        Ok((inode.clone(), self.attr_of(inode.id, &st)))
    }

    /// A file turned out to have several names (hard links): the kernel may hold
    /// entries of its other `names` from when it had one, cached for the entry TTL, so
    /// a path walk through them would not look it up and its records would carry the
    /// name last looked up. Ask the kernel to drop them, from another thread (the
    /// kernel takes the directory's lock for it, which the request in progress may
    /// hold); their next lookup gets entry TTL 0 (see [`Self::entry_ttl`]).
    fn reach_names_again(&self, names: Vec<(u64, Arc<OsStr>)>) {
        for (parent, name) in names {
            let _ = self.inval.try_send(Inval::Entry(parent, name));
        }
    }

    /// Make the kernel drop its cached attributes of node `id` before this returns: the
    /// mount now reports other times, or wants to see the next stat.
    fn inval_attrs_now(&self, id: u64) {
        match self.cfg.notifier.get() {
            // Attributes only (offset -1): the kernel takes no lock of the inode or
            // its directory for it, so a request handler may send it.
            Some(n) => {
                let _ = n.inval_inode(fuser::INodeNo(id), -1, 0);
            }
            None => self.inval_attrs_later(id),
        }
    }

    /// [`Self::inval_attrs_now`], from the invalidation thread.
    fn inval_attrs_later(&self, id: u64) {
        let _ = self.inval.try_send(Inval::Attrs(id));
    }

    /// Is the file open as handle `h` a transcript, by the name it was opened by?
    fn handle_is_transcript(&self, h: &FileHandle) -> bool {
        let name = if h.inode.has_name(h.via.0, &h.via.1) {
            h.via.1.clone()
        } else {
            h.inode.name().1
        };
        h.inode.is_file() && transcript::is_transcript(name.as_bytes())
    }

    /// Entry TTL for a reply about `a`: 0 for a file with several links, so that each
    /// path walk looks it up again and its records carry the name it was reached by.
    fn entry_ttl(&self, a: &fuser::FileAttr) -> Duration {
        if a.kind == fuser::FileType::RegularFile && a.nlink > 1 {
            Duration::ZERO
        } else {
            self.cfg.entry_ttl
        }
    }

    fn is_transcript(&self, inode: &Inode) -> bool {
        inode.is_file() && transcript::is_transcript(inode.name().1.as_bytes())
    }

    /// Journal path of `name` in `parent`.
    pub(super) fn child_path(&self, parent: &Inode, name: &OsStr) -> String {
        let base = self.inodes.path_of(parent);
        let n = crate::names::encode(name.as_bytes());
        if base.is_empty() {
            n
        } else {
            format!("{base}/{n}")
        }
    }

    /// Does the caller lack CAP_FSETID (so a truncate must clear its file's suid/sgid,
    /// as the kernel would; fuser does not pass the kernel's own KILL_SUIDGID flags for
    /// OPEN and SETATTR)? From its cached `CapEff`; if the thread is gone, "not root".
    fn lacks_fsetid(&self, ctx: &Ctx) -> bool {
        /// linux/capability.h.
        const CAP_FSETID: u32 = 4;
        self.ids
            .creds(ctx.pid, ctx.uid, ctx.gid)
            .and_then(|c| c.has_cap(CAP_FSETID))
            .map_or(ctx.uid != 0, |has| !has)
    }

    /// The caller's supplementary groups, for [`sys::as_caller`] (cached per thread;
    /// none for root, whose creates skip the switch, or when the thread is gone).
    fn groups(&self, ctx: &Ctx) -> Vec<u32> {
        if ctx.uid == 0 && ctx.gid == 0 {
            return Vec::new();
        }
        self.ids
            .creds(ctx.pid, ctx.uid, ctx.gid)
            .map(|c| c.groups.clone())
            .unwrap_or_default()
    }
}

/// A kernel cache invalidation to send from the invalidation thread: the kernel takes
/// the directory's or inode's lock for it, which the request in progress may hold.
#[derive(Debug)]
enum Inval {
    /// Drop the cached entry (parent node id, name).
    Entry(u64, Arc<OsStr>),
    /// Drop the cached attributes of a node id.
    Attrs(u64),
}

/// Start the invalidation thread (it ends when the sender is dropped). Queue bound:
/// 4,096; past it invalidations are dropped (the TTLs still bound staleness).
fn start_invalidator(
    notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
) -> std::io::Result<crossbeam_channel::Sender<Inval>> {
    let (tx, rx) = crossbeam_channel::bounded::<Inval>(4096);
    std::thread::Builder::new()
        .name("sessionfs-inval".into())
        .spawn(move || {
            for m in rx {
                let Some(n) = notifier.get() else { continue };
                let _ = match m {
                    Inval::Entry(parent, name) => n.inval_entry(fuser::INodeNo(parent), &name),
                    Inval::Attrs(id) => n.inval_inode(fuser::INodeNo(id), -1, 0),
                };
            }
        })?;
    Ok(tx)
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn f<T: Send + Sync>() {}
    f::<SessionFs>();
}
