//! The FUSE filesystem: every operation is resolve (inode/handle table) → do on the
//! backing fd → record (journal). Nothing here re-resolves a path string: all backing
//! calls are relative to held O_PATH fds, one name component at a time, and never
//! follow a symlink.

mod attr;
mod clock;
mod handle;
mod inode;
mod pressure;
mod record;
mod replied;
mod virt;

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno as FErrno, FileHandle as Fh, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use nix::errno::Errno;

use crate::identity::IdentityCache;
use crate::journal::Journal;
use crate::journal::record::Entry;
use crate::lanes::{LANE_XATTR, LaneDeclarations, LaneRules};
use crate::sys::{self, SysResult};
use crate::transcript::{self, TranscriptTracker};

pub use clock::{now_rfc3339, rfc3339};
use handle::{DirHandle, FileHandle, Handles};
use inode::{Inode, InodeTable, ROOT_ID, VIRTUAL_BASE};
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
    /// Most inodes (so O_PATH fds) the daemon holds before it asks the kernel to drop
    /// idle ones; `None`: from `RLIMIT_NOFILE` (all but max(1,024, 10%) of the fds).
    pub max_inodes: Option<usize>,
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
            notifier: Default::default(),
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
    virt: VirtualFiles,
    cfg: FsConfig,
    /// SELinux is active on this host (`/sys/fs/selinux` exists).
    selinux: bool,
}

fn err(e: Errno) -> FErrno {
    FErrno::from_i32(e as i32)
}

/// The flags of our backing open for a caller's open `flags`. Without `__FMODE_EXEC`
/// (the kernel's, not an open flag) and `O_DIRECT`: the kernel already bypasses its
/// page cache for an `O_DIRECT` caller and sends us READ/WRITE requests, whose buffers
/// (ours, fuser's) are not block-aligned, so an `O_DIRECT` backing fd would fail them
/// with EINVAL.
fn backing_flags(flags: i32) -> i32 {
    flags & !(FMODE_EXEC | libc::O_DIRECT)
}

/// Open flag names for the journal (`["O_WRONLY","O_APPEND"]`).
fn flag_names(flags: i32) -> Vec<String> {
    let mut v = Vec::new();
    v.push(
        match flags & libc::O_ACCMODE {
            libc::O_RDONLY => "O_RDONLY",
            libc::O_WRONLY => "O_WRONLY",
            _ => "O_RDWR",
        }
        .to_string(),
    );
    for (bit, name) in [
        (libc::O_CREAT, "O_CREAT"),
        (libc::O_EXCL, "O_EXCL"),
        (libc::O_TRUNC, "O_TRUNC"),
        (libc::O_APPEND, "O_APPEND"),
        (libc::O_NOFOLLOW, "O_NOFOLLOW"),
        (libc::O_DIRECT, "O_DIRECT"),
        (libc::O_SYNC, "O_SYNC"),
        (libc::O_DSYNC, "O_DSYNC"),
        (libc::O_NONBLOCK, "O_NONBLOCK"),
        (libc::O_NOATIME, "O_NOATIME"),
        (FMODE_EXEC, "FMODE_EXEC"),
    ] {
        if flags & bit == bit && bit != libc::O_DSYNC
            || (bit == libc::O_DSYNC && flags & libc::O_SYNC == libc::O_DSYNC)
        {
            v.push(name.to_string());
        }
    }
    v
}

fn access_name(flags: i32) -> &'static str {
    match flags & libc::O_ACCMODE {
        libc::O_RDONLY => "read",
        libc::O_WRONLY => "write",
        _ => "readwrite",
    }
}

fn to_timespec(t: Option<TimeOrNow>) -> libc::timespec {
    match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(st)) => match st.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => libc::timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: d.subsec_nanos() as i64,
            },
            Err(e) => {
                let d = e.duration();
                let (mut s, mut ns) = (-(d.as_secs() as i64), -(d.subsec_nanos() as i64));
                if ns < 0 {
                    s -= 1;
                    ns += 1_000_000_000;
                }
                libc::timespec {
                    tv_sec: s,
                    tv_nsec: ns,
                }
            }
        },
    }
}

impl SessionFs {
    /// Filesystem serving the directory `root` (an O_PATH|O_DIRECTORY fd opened before
    /// the mount, so that mounting over the same path keeps it reachable).
    ///
    /// Errors: the errno of `fstat` on `root`.
    pub fn new(root: OwnedFd, journal: Option<Arc<Journal>>, cfg: FsConfig) -> SysResult<Self> {
        let st = sys::fstat(root.as_fd())?;
        if !sys::is_dir(&st) {
            return Err(Errno::ENOTDIR);
        }
        let inodes = Arc::new(InodeTable::new(root, &st));
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
        Ok(Self {
            inodes,
            files: Handles::new(),
            dirs: Handles::new(),
            ids: IdentityCache::new(),
            lanes: LaneDeclarations::new(),
            tracker: TranscriptTracker::new(cfg.tracked_files),
            rewrites: transcript::Rewrites::default(),
            replied: replied::Replied::default(),
            journal,
            virt: VirtualFiles::new(),
            cfg,
            selinux: Path::new("/sys/fs/selinux/enforce").exists(),
        })
    }

    /// (inodes in the table incl. the root, open file handles, open dir handles);
    /// after unmount every lookup is forgotten, so a leak shows here.
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.inodes.len(), self.files.len(), self.dirs.len())
    }

    fn inode(&self, ino: INodeNo) -> Result<Arc<Inode>, FErrno> {
        self.inodes.get(ino.0).ok_or(FErrno::ENOENT)
    }

    fn ro(&self) -> Result<(), FErrno> {
        if self.cfg.read_only {
            Err(FErrno::EROFS)
        } else {
            Ok(())
        }
    }

    /// Stat of an inode's backing object, with `FileAttr` served under its node id.
    fn stat_attr(&self, inode: &Inode) -> SysResult<(libc::stat, fuser::FileAttr)> {
        let st = sys::fstat(inode.fd())?;
        let a = if inode.id == ROOT_ID {
            attr::root_attr(&st)
        } else {
            attr::to_attr(inode.id, &st)
        };
        Ok((st, a))
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
        let fd = sys::openat(parent.fd(), &c, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        let st = sys::fstat(fd.as_fd())?;
        let inode = self.inodes.lookup(fd, &st, parent.id, name);
        let a = if inode.id == ROOT_ID {
            attr::root_attr(&st)
        } else {
            attr::to_attr(inode.id, &st)
        };
        Ok((inode, a))
    }

    fn is_transcript(&self, inode: &Inode) -> bool {
        inode.is_file() && transcript::is_transcript(inode.name().1.as_bytes())
    }

    fn entry_reply(&self, reply: ReplyEntry, a: &fuser::FileAttr) {
        reply.entry_with_ttls(&self.cfg.attr_ttl, &self.cfg.entry_ttl, a, Generation(0));
    }
}

impl fuser::Filesystem for SessionFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // HANDLE_KILLPRIV_V2: the kernel stops asking for `security.capability` before
        // every write; we clear suid/sgid ourselves when a WRITE asks for it.
        // PARALLEL_DIROPS: lookups/readdirs in one directory run concurrently.
        // POSIX_ACL: the kernel checks and caches ACLs (`ls -l` asks for
        // system.posix_acl_access on every file). DONT_MASK: the kernel leaves the
        // umask to us, so the backing directory's default ACL (if any) wins over it,
        // as on ext4. No EXPORT_SUPPORT: nothing needs NFS export, and it would bring
        // LOOKUPs of "." and "..".
        // No WRITEBACK_CACHE: it would invent mtimes and hide the writer's identity.
        // No ATOMIC_O_TRUNC: with it the daemon truncates at OPEN, before the kernel
        // checks write access, so `open(O_RDONLY|O_TRUNC)` of a running binary got
        // ETXTBSY after its file was already emptied (pjdfstest open::etxtbsy). Without
        // it an O_TRUNC open costs one SETATTR more, sent only once the checks passed.
        let mut wanted = InitFlags::FUSE_HANDLE_KILLPRIV_V2
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_DONT_MASK
            | InitFlags::FUSE_POSIX_ACL;
        if self.cfg.readdirplus {
            wanted |= InitFlags::FUSE_DO_READDIRPLUS;
        }
        let supported = config.capabilities() & wanted;
        let _ = config.add_capabilities(supported);
        tracing::debug!(wanted = ?wanted, granted = ?supported, "FUSE init capabilities");
        Ok(())
    }

    fn destroy(&mut self) {
        let (inodes, files, dirs) = self.counts();
        tracing::info!(
            inodes,
            open_files = files,
            open_dirs = dirs,
            "session ending"
        );
        if let Some(j) = &self.journal {
            j.shutdown();
        }
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Ok(p) = self.inode(parent) else {
            return reply.error(FErrno::ENOENT);
        };
        match self.do_lookup(&p, name) {
            Ok((inode, a)) => {
                self.warn_if_shadowing(&p, name);
                self.note_external(req, &inode);
                self.entry_reply(reply, &a)
            }
            Err(Errno::ENOENT) => match self.virtual_lookup(&p, name) {
                Some(a) => {
                    reply.entry_with_ttls(&Duration::ZERO, &Duration::ZERO, &a, Generation(0))
                }
                None => reply.error(FErrno::ENOENT),
            },
            Err(e) => reply.error(err(e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if ino.0 < VIRTUAL_BASE {
            self.inodes.forget(ino.0, nlookup);
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<Fh>, reply: ReplyAttr) {
        if ino.0 >= VIRTUAL_BASE {
            return match self.virtual_attr(ino.0) {
                Some(a) => reply.attr(&Duration::ZERO, &a),
                None => reply.error(FErrno::ENOENT),
            };
        }
        let Ok(inode) = self.inode(ino) else {
            return reply.error(FErrno::ENOENT);
        };
        self.inodes.touch(&inode);
        let gen_before = inode.changes();
        match self.stat_attr(&inode) {
            Ok((st, a)) => {
                self.check_external(req, &inode, &st, 0, gen_before);
                reply.attr(&self.cfg.attr_ttl, &a)
            }
            Err(e) => reply.error(err(e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<Fh>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if ino.0 >= VIRTUAL_BASE {
            return reply.error(FErrno::EACCES);
        }
        if let Err(e) = self.ro() {
            return reply.error(e);
        }
        let Ok(inode) = self.inode(ino) else {
            return reply.error(FErrno::ENOENT);
        };
        let _order = inode.order.lock();
        let _busy = inode.busy();
        let handle = fh.and_then(|f| self.files.get(f.0));
        let res = self.do_setattr(
            req,
            &inode,
            handle.as_deref(),
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
        );
        match res.and_then(|_| self.stat_attr(&inode)) {
            Ok((st, a)) => {
                self.mark_known(&inode, &st);
                reply.attr(&self.cfg.attr_ttl, &a)
            }
            Err(e) => reply.error(err(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let Ok(inode) = self.inode(ino) else {
            return reply.error(FErrno::ENOENT);
        };
        match nix::fcntl::readlinkat(inode.fd(), "") {
            Ok(target) => reply.data(target.as_bytes()),
            Err(e) => reply.error(err(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        if let Err(e) = self.ro() {
            return reply.error(e);
        }
        let Ok(p) = self.inode(parent) else {
            return reply.error(FErrno::ENOENT);
        };
        let res = sys::cname(name).and_then(|c| {
            sys::as_caller(&self.groups(req), req.uid(), req.gid(), umask, || {
                sys::mknodat(p.fd(), &c, mode, rdev as u64)
            })
        });
        self.record_dirop(req, "mknod", &p, name, None, Some(mode), &res);
        match res.and_then(|_| self.do_lookup(&p, name)) {
            Ok((_, a)) => self.entry_reply(reply, &a),
            Err(e) => reply.error(err(e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        if let Err(e) = self.ro() {
            return reply.error(e);
        }
        let Ok(p) = self.inode(parent) else {
            return reply.error(FErrno::ENOENT);
        };
        let res = sys::cname(name).and_then(|c| {
            sys::as_caller(&self.groups(req), req.uid(), req.gid(), umask, || {
                nix::sys::stat::mkdirat(
                    p.fd(),
                    c.as_c_str(),
                    nix::sys::stat::Mode::from_bits_truncate(mode),
                )
            })
        });
        self.record_dirop(req, "mkdir", &p, name, None, Some(mode), &res);
        match res.and_then(|_| self.do_lookup(&p, name)) {
            Ok((_, a)) => self.entry_reply(reply, &a),
            Err(e) => reply.error(err(e)),
        }
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if let Err(e) = self.ro() {
            return reply.error(e);
        }
        let Ok(p) = self.inode(parent) else {
            return reply.error(FErrno::ENOENT);
        };
        let res = self.do_unlink(req, &p, name, false);
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if let Err(e) = self.ro() {
            return reply.error(e);
        }
        let Ok(p) = self.inode(parent) else {
            return reply.error(FErrno::ENOENT);
        };
        match self.do_unlink(req, &p, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        if let Err(e) = self.ro() {
            return reply.error(e);
        }
        let Ok(p) = self.inode(parent) else {
            return reply.error(FErrno::ENOENT);
        };
        let res = sys::cname(link_name).and_then(|c| {
            sys::as_caller(&self.groups(req), req.uid(), req.gid(), 0, || {
                nix::unistd::symlinkat(target, p.fd(), c.as_c_str())
            })
        });
        self.record_dirop(
            req,
            "symlink",
            &p,
            link_name,
            Some(target.to_string_lossy().into_owned()),
            None,
            &res,
        );
        match res.and_then(|_| self.do_lookup(&p, link_name)) {
            Ok((_, a)) => self.entry_reply(reply, &a),
            Err(e) => reply.error(err(e)),
        }
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if let Err(e) = self.ro() {
            return reply.error(e);
        }
        let (Ok(p), Ok(np)) = (self.inode(parent), self.inode(newparent)) else {
            return reply.error(FErrno::ENOENT);
        };
        match self.do_rename(req, &p, name, &np, newname, flags.bits()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        if let Err(e) = self.ro() {
            return reply.error(e);
        }
        let (Ok(inode), Ok(np)) = (self.inode(ino), self.inode(newparent)) else {
            return reply.error(FErrno::ENOENT);
        };
        let _order = inode.order.lock();
        let _busy = inode.busy();
        let res = sys::cname(newname).and_then(|c| {
            let src = sys::proc_fd_path(inode.fd().as_raw_fd());
            nix::unistd::linkat(
                nix::fcntl::AT_FDCWD,
                src.as_c_str(),
                np.fd(),
                c.as_c_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
            )
        });
        let path = self.inodes.path_of(&inode);
        let to = self.child_path(&np, newname);
        self.record(req, "link", path, Some(inode.ino), |r| {
            r.to = Some(to);
            r.result = record::result(&res);
        });
        match res.and_then(|_| self.stat_attr(&inode)) {
            Ok((st, a)) => {
                self.inodes.add_lookup(&inode);
                self.mark_known(&inode, &st);
                self.entry_reply(reply, &a)
            }
            Err(e) => reply.error(err(e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let flags = flags.0;
        if ino.0 >= VIRTUAL_BASE {
            if flags & libc::O_ACCMODE != libc::O_RDONLY {
                return reply.error(FErrno::EACCES);
            }
            return reply.opened(Fh(ino.0), FopenFlags::FOPEN_DIRECT_IO);
        }
        if flags & libc::O_ACCMODE != libc::O_RDONLY
            && let Err(e) = self.ro()
        {
            return reply.error(e);
        }
        let Ok(inode) = self.inode(ino) else {
            return reply.error(FErrno::ENOENT);
        };
        self.inodes.touch(&inode);
        let order_inode = inode.clone();
        let _order = order_inode.order.lock();
        // No FUSE_ATOMIC_O_TRUNC: the kernel strips O_TRUNC from OPEN and truncates
        // with a SETATTR once its own checks (ETXTBSY) have passed. Stripped here too,
        // so that no OPEN can ever truncate the backing file.
        let res = sys::reopen(inode.fd(), backing_flags(flags) & !libc::O_TRUNC);
        let gen_opened = inode.changes();
        match res {
            Ok(fd) => {
                let st = sys::fstat(fd.as_fd()).ok();
                if let Some(st) = &st {
                    self.check_external(req, &inode, st, 0, gen_opened);
                }
                let keep = self.keep_cache(&inode, st.as_ref());
                self.record_open(req, &inode, flags, st.as_ref(), &Ok(()));
                let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
                if writable {
                    inode.writer_opened();
                }
                let fh = self.files.insert(FileHandle {
                    fd,
                    inode,
                    flags,
                    writable,
                    reads: Default::default(),
                    read_bytes: Default::default(),
                    writes: Default::default(),
                    write_bytes: Default::default(),
                    opener: self
                        .journal
                        .as_ref()
                        .map(|_| self.ids.caller(req.pid(), req.uid(), req.gid())),
                    last_writer: Default::default(),
                });
                // After this open's own records: the next request of the process
                // comes from the new image, and refreshes comm/exe.
                if flags & FMODE_EXEC != 0 {
                    self.ids.note_exec(req.pid());
                }
                let mut of = FopenFlags::empty();
                if keep {
                    of |= FopenFlags::FOPEN_KEEP_CACHE;
                }
                reply.opened(Fh(fh), of)
            }
            Err(e) => {
                self.record_open(req, &inode, flags, None, &Err(e));
                reply.error(err(e))
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: Fh,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino.0 >= VIRTUAL_BASE {
            return match self.virtual_read(ino.0, offset, size as usize) {
                Some(d) => reply.data(&d),
                None => reply.error(FErrno::ENOENT),
            };
        }
        let Some(h) = self.files.get(fh.0) else {
            return reply.error(FErrno::EBADF);
        };
        let mut buf = vec![0u8; size as usize];
        match sys::pread(h.fd(), &mut buf, offset) {
            Ok(n) => {
                h.count_read(n);
                reply.data(&buf[..n])
            }
            Err(e) => reply.error(err(e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: Fh,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some(h) = self.files.get(fh.0) else {
            return reply.error(FErrno::EBADF);
        };
        // The caller's file flags now (F_SETFL may have set or cleared O_APPEND since
        // the open); page-cache writeback (FUSE_WRITE_CACHE) is always positional.
        let append =
            flags.0 & libc::O_APPEND != 0 && !write_flags.contains(WriteFlags::FUSE_WRITE_CACHE);
        self.do_write(req, &h, offset, data, write_flags, append, reply)
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: Fh,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Locks stay kernel-local and the backing fd is closed at release, so there is
        // nothing to do; ENOSYS makes the kernel stop sending FLUSH (one round trip
        // less per close).
        reply.error(FErrno::ENOSYS)
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: Fh,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if ino.0 >= VIRTUAL_BASE {
            return reply.ok();
        }
        if let Some(h) = self.files.remove(fh.0) {
            let _order = h.inode.order.lock();
            let mut ended = None;
            if h.writable && h.inode.writer_released() {
                ended = self.end_rewrite(&h.inode);
            }
            self.record_release(req, &h, ended);
        }
        reply.ok()
    }

    fn fsync(&self, req: &Request, _ino: INodeNo, fh: Fh, datasync: bool, reply: ReplyEmpty) {
        let Some(h) = self.files.get(fh.0) else {
            return reply.error(FErrno::EBADF);
        };
        let _order = h.inode.order.lock();
        let res = if datasync {
            nix::unistd::fdatasync(h.fd())
        } else {
            nix::unistd::fsync(h.fd())
        };
        if h.writable {
            let path = self.inodes.path_of(&h.inode);
            self.record(req, "fsync", path, Some(h.inode.ino), |r| {
                r.result = record::result(&res);
                if datasync {
                    r.flags = Some(vec!["datasync".into()]);
                }
            });
        }
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let Ok(inode) = self.inode(ino) else {
            return reply.error(FErrno::ENOENT);
        };
        match DirHandle::open(inode) {
            Ok(dh) => reply.opened(Fh(self.dirs.insert(dh)), FopenFlags::empty()),
            Err(e) => reply.error(err(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: Fh,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(dh) = self.dirs.get(fh.0) else {
            return reply.error(FErrno::EBADF);
        };
        let entries = match dh.entries(offset, self.virt_dir_extra(&dh.inode)) {
            Ok(e) => e,
            Err(e) => return reply.error(err(e)),
        };
        for (i, ent) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(
                INodeNo(ent.ino),
                i as u64 + 1,
                attr::kind(ent.kind),
                &ent.name,
            ) {
                break;
            }
        }
        reply.ok()
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: Fh,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let Some(dh) = self.dirs.get(fh.0) else {
            return reply.error(FErrno::EBADF);
        };
        let entries = match dh.entries(offset, self.virt_dir_extra(&dh.inode)) {
            Ok(e) => e,
            Err(e) => return reply.error(err(e)),
        };
        for (i, ent) in entries.iter().enumerate().skip(offset as usize) {
            let name = ent.name.as_os_str();
            let dot = name == "." || name == "..";
            if ent.virtual_id != 0 {
                // Virtual nodes live as long as the mount, so the lookup count the
                // kernel takes here needs no bookkeeping (their FORGET is ignored).
                let Some(a) = self.virtual_attr(ent.virtual_id) else {
                    continue;
                };
                if reply.add(
                    a.ino,
                    i as u64 + 1,
                    name,
                    &Duration::ZERO,
                    &a,
                    Generation(0),
                ) {
                    break;
                }
                continue;
            }
            if dot {
                // The kernel ignores attributes of `.`/`..` in READDIRPLUS and takes no
                // lookup count on them.
                let st = match sys::fstat(dh.inode.fd()) {
                    Ok(st) => st,
                    Err(_) => continue,
                };
                let a = attr::to_attr(
                    if dh.inode.id == ROOT_ID {
                        st.st_ino
                    } else {
                        dh.inode.id
                    },
                    &st,
                );
                if reply.add(
                    INodeNo(a.ino.0),
                    i as u64 + 1,
                    name,
                    &Duration::ZERO,
                    &a,
                    Generation(0),
                ) {
                    break;
                }
                continue;
            }
            let c = match sys::cname(name) {
                Ok(c) => c,
                Err(_) => continue,
            };
            let Ok(fd) = sys::openat(dh.inode.fd(), &c, libc::O_PATH | libc::O_NOFOLLOW, 0) else {
                continue;
            };
            let Ok(st) = sys::fstat(fd.as_fd()) else {
                continue;
            };
            let id = self.inodes.id_for(st.st_dev, st.st_ino);
            let a = if id == ROOT_ID {
                attr::root_attr(&st)
            } else {
                attr::to_attr(id, &st)
            };
            // Take the lookup count only once the entry is in the reply buffer.
            if reply.add(
                INodeNo(id),
                i as u64 + 1,
                name,
                &self.cfg.entry_ttl,
                &a,
                Generation(0),
            ) {
                break;
            }
            self.inodes.lookup(fd, &st, dh.inode.id, name);
        }
        reply.ok()
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: Fh,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs.remove(fh.0);
        reply.ok()
    }

    fn fsyncdir(&self, req: &Request, _ino: INodeNo, fh: Fh, datasync: bool, reply: ReplyEmpty) {
        let Some(dh) = self.dirs.get(fh.0) else {
            return reply.error(FErrno::EBADF);
        };
        let res = dh.fsync(datasync);
        let path = self.inodes.path_of(&dh.inode);
        self.record(req, "fsync", path, Some(dh.inode.ino), |r| {
            r.result = record::result(&res);
            r.flags = Some(vec!["directory".into()]);
        });
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let root = self.inodes.root();
        match nix::sys::statvfs::fstatvfs(root.fd()) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                s.name_max() as u32,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(err(e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        if ino.0 >= VIRTUAL_BASE {
            return reply.error(FErrno::EACCES);
        }
        let Ok(inode) = self.inode(ino) else {
            return reply.error(FErrno::ENOENT);
        };
        let _order = inode.order.lock();
        if name.as_bytes() == LANE_XATTR.as_bytes() {
            // Virtual: never stored on the backing file (no ctime change).
            let caller = self.ids.caller(req.pid(), req.uid(), req.gid());
            let lane = std::str::from_utf8(value).map_err(|_| FErrno::EINVAL);
            return match lane {
                Ok(l) => {
                    self.lanes.declare(
                        &caller,
                        inode.ino,
                        if l.is_empty() { None } else { Some(l) },
                    );
                    reply.ok()
                }
                Err(e) => reply.error(e),
            };
        }
        if name.as_bytes() == SEQ_XATTR.as_bytes() {
            return reply.error(FErrno::EACCES);
        }
        if let Err(e) = self.ro() {
            return reply.error(e);
        }
        let res = sys::cname(name).and_then(|c| sys::setxattr(inode.fd(), &c, value, flags));
        let path = self.inodes.path_of(&inode);
        let xname = name.to_string_lossy().into_owned();
        self.record(req, "setxattr", path, Some(inode.ino), |r| {
            r.name = Some(xname);
            r.len = Some(value.len() as u64);
            let fl: Vec<String> = [
                (libc::XATTR_CREATE, "XATTR_CREATE"),
                (libc::XATTR_REPLACE, "XATTR_REPLACE"),
            ]
            .iter()
            .filter(|(bit, _)| flags & bit != 0)
            .map(|(_, n)| n.to_string())
            .collect();
            r.flags = Some(fl).filter(|v| !v.is_empty());
            r.result = record::result(&res);
        });
        if res.is_ok()
            && let Ok(st) = sys::fstat(inode.fd())
        {
            self.mark_known(&inode, &st);
        }
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let value: Result<Vec<u8>, FErrno> = if ino.0 >= VIRTUAL_BASE {
            Err(FErrno::NO_XATTR)
        } else {
            let Ok(inode) = self.inode(ino) else {
                return reply.error(FErrno::ENOENT);
            };
            if name.as_bytes() == LANE_XATTR.as_bytes() {
                let caller = self.ids.caller(req.pid(), req.uid(), req.gid());
                self.lanes
                    .get(&caller, inode.ino)
                    .map(|l| l.as_bytes().to_vec())
                    .ok_or(FErrno::NO_XATTR)
            } else if name.as_bytes() == SEQ_XATTR.as_bytes() {
                self.replied.wait();
                let path = self.inodes.path_of(&inode);
                self.journal
                    .as_ref()
                    .and_then(|j| j.latest_seq(&path))
                    .map(|s| s.to_string().into_bytes())
                    .ok_or(FErrno::NO_XATTR)
            } else {
                let c = match sys::cname(name) {
                    Ok(c) => c,
                    Err(e) => return reply.error(err(e)),
                };
                let mut buf = vec![0u8; size as usize];
                match sys::getxattr(inode.fd(), &c, &mut buf) {
                    Ok(n) if size == 0 => return reply.size(n as u32),
                    Ok(n) => {
                        buf.truncate(n);
                        Ok(buf)
                    }
                    // Without SELinux on the host no label means "unsupported":
                    // `ls -l` then stops asking for the rest of this device instead
                    // of paying a round trip per file.
                    Err(Errno::ENODATA)
                        if !self.selinux && name.as_bytes() == b"security.selinux" =>
                    {
                        Err(FErrno::from_i32(libc::EOPNOTSUPP))
                    }
                    Err(e) => Err(err(e)),
                }
            }
        };
        match value {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(FErrno::ERANGE),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        if ino.0 >= VIRTUAL_BASE {
            return if size == 0 {
                reply.size(0)
            } else {
                reply.data(&[])
            };
        }
        let Ok(inode) = self.inode(ino) else {
            return reply.error(FErrno::ENOENT);
        };
        let mut buf = vec![0u8; size as usize];
        match sys::listxattr(inode.fd(), &mut buf) {
            Ok(n) if size == 0 => reply.size(n as u32),
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(err(e)),
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if ino.0 >= VIRTUAL_BASE {
            return reply.error(FErrno::EACCES);
        }
        let Ok(inode) = self.inode(ino) else {
            return reply.error(FErrno::ENOENT);
        };
        let _order = inode.order.lock();
        if name.as_bytes() == LANE_XATTR.as_bytes() {
            let caller = self.ids.caller(req.pid(), req.uid(), req.gid());
            self.lanes.declare(&caller, inode.ino, None);
            return reply.ok();
        }
        if let Err(e) = self.ro() {
            return reply.error(e);
        }
        let res = sys::cname(name).and_then(|c| sys::removexattr(inode.fd(), &c));
        let path = self.inodes.path_of(&inode);
        let xname = name.to_string_lossy().into_owned();
        self.record(req, "removexattr", path, Some(inode.ino), |r| {
            r.name = Some(xname);
            r.result = record::result(&res);
        });
        if res.is_ok()
            && let Ok(st) = sys::fstat(inode.fd())
        {
            self.mark_known(&inode, &st);
        }
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        // Only reached without default_permissions (we always set it); kept exact anyway.
        if ino.0 >= VIRTUAL_BASE {
            return reply.ok();
        }
        let Ok(inode) = self.inode(ino) else {
            return reply.error(FErrno::ENOENT);
        };
        let path = sys::proc_fd_path(inode.fd().as_raw_fd());
        // SAFETY: valid C string; faccessat only reads it.
        let r = unsafe { libc::faccessat(libc::AT_FDCWD, path.as_ptr(), mask.bits(), 0) };
        if r == 0 {
            reply.ok()
        } else {
            reply.error(err(Errno::last()))
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        if let Err(e) = self.ro() {
            return reply.error(e);
        }
        let Ok(p) = self.inode(parent) else {
            return reply.error(FErrno::ENOENT);
        };
        match self.do_create(req, &p, name, mode, umask, flags) {
            Ok((fh, a)) => reply.created(
                &self.cfg.attr_ttl,
                &a,
                Generation(0),
                Fh(fh),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(err(e)),
        }
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: Fh,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in: &[u8],
        _out: u32,
        reply: ReplyIoctl,
    ) {
        // Python's open() probes TCGETS on every file; regular files answer ENOTTY.
        reply.error(FErrno::ENOTTY)
    }

    fn fallocate(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: Fh,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if let Err(e) = self.ro() {
            return reply.error(e);
        }
        let Some(h) = self.files.get(fh.0) else {
            return reply.error(FErrno::EBADF);
        };
        let _order = h.inode.order.lock();
        let _busy = h.inode.busy();
        let before = sys::fstat(h.fd()).ok();
        let path = self.inodes.path_of(&h.inode);
        let transcript = self.is_transcript(&h.inode);
        // Punching, zeroing or collapsing a range of a transcript destroys the lines it
        // touches: salvage them first and report them removed, as for an overwrite.
        let destroys = mode
            & (libc::FALLOC_FL_PUNCH_HOLE
                | libc::FALLOC_FL_ZERO_RANGE
                | libc::FALLOC_FL_COLLAPSE_RANGE)
            != 0;
        let mut cut = None;
        if transcript
            && destroys
            && let Some(st) = &before
            && let Ok(rfd) = h.inode.read_fd()
            && let Some(j) = &self.journal
        {
            let size = st.st_size as u64;
            let end = offset.saturating_add(length).min(size);
            if offset < end {
                let ch =
                    self.tracker
                        .before_write(h.inode.ino, rfd.as_fd(), offset, end - offset, size);
                cut = self.stage_cut(j, path.clone(), ch);
            }
        }
        let res = sys::fallocate(h.fd(), mode, offset, length);
        let outcome = cut.map(|c| self.finish_cut(c, res.is_ok(), None));
        if transcript {
            // Lines moved or changed under the line index: rebuilt at the next write.
            self.tracker.forget(h.inode.ino);
        }
        let after = sys::fstat(h.fd()).ok();
        if let Some(st) = &after {
            self.mark_known(&h.inode, st);
        }
        self.record(req, "fallocate", path, Some(h.inode.ino), |r| {
            r.offset = Some(offset);
            r.len = Some(length);
            r.mode = Some(mode as u32);
            record::fingerprints(r, before.as_ref(), after.as_ref());
            r.result = record::result(&res);
            if let Some(o) = outcome {
                o.apply(r);
            }
        });
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: Fh,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let Some(h) = self.files.get(fh.0) else {
            return reply.error(FErrno::EBADF);
        };
        match sys::lseek(h.fd(), offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(err(e)),
        }
    }

    fn copy_file_range(
        &self,
        req: &Request,
        _ino_in: INodeNo,
        fh_in: Fh,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: Fh,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        if let Err(e) = self.ro() {
            return reply.error(e);
        }
        let (Some(hi), Some(ho)) = (self.files.get(fh_in.0), self.files.get(fh_out.0)) else {
            return reply.error(FErrno::EBADF);
        };
        // Read then write through our own write path, so the journal and transcript
        // decoder see the bytes exactly as for a WRITE.
        let mut buf = vec![0u8; len.min(16 << 20) as usize];
        match sys::pread(hi.fd(), &mut buf, offset_in) {
            Ok(n) => {
                hi.count_read(n);
                self.do_write(
                    req,
                    &ho,
                    offset_out,
                    &buf[..n],
                    WriteFlags::empty(),
                    false,
                    reply,
                )
            }
            Err(e) => reply.error(err(e)),
        }
    }
}

impl SessionFs {
    #[allow(clippy::too_many_arguments)]
    fn do_setattr(
        &self,
        req: &Request,
        inode: &Inode,
        handle: Option<&FileHandle>,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
    ) -> SysResult<()> {
        let path = self.inodes.path_of(inode);
        if let Some(mode) = mode {
            let before = sys::fstat(inode.fd()).ok();
            let p = sys::proc_fd_path(inode.fd().as_raw_fd());
            let res = if inode.kind == libc::S_IFLNK {
                Err(Errno::EOPNOTSUPP)
            } else {
                nix::sys::stat::fchmodat(
                    nix::fcntl::AT_FDCWD,
                    p.as_c_str(),
                    nix::sys::stat::Mode::from_bits_truncate(mode),
                    nix::sys::stat::FchmodatFlags::FollowSymlink,
                )
            };
            let after = sys::fstat(inode.fd()).ok();
            self.record(req, "chmod", path.clone(), Some(inode.ino), |r| {
                r.mode = Some(mode & 0o7777);
                record::fingerprints(r, before.as_ref(), after.as_ref());
                r.result = record::result(&res);
            });
            res?;
        }
        if uid.is_some() || gid.is_some() {
            let before = sys::fstat(inode.fd()).ok();
            let res = nix::unistd::fchownat(
                inode.fd(),
                "",
                uid.map(nix::unistd::Uid::from_raw),
                gid.map(nix::unistd::Gid::from_raw),
                nix::fcntl::AtFlags::AT_EMPTY_PATH | nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            );
            let after = sys::fstat(inode.fd()).ok();
            self.record(req, "chown", path.clone(), Some(inode.ino), |r| {
                r.to = Some(format!(
                    "{}:{}",
                    uid.map_or(-1, |u| u as i64),
                    gid.map_or(-1, |g| g as i64)
                ));
                record::fingerprints(r, before.as_ref(), after.as_ref());
                r.result = record::result(&res);
            });
            res?;
        }
        if let Some(size) = size {
            let before = sys::fstat(inode.fd()).ok();
            let mut cut = None;
            if let Some(st) = &before
                && self.is_transcript(inode)
                && (size as i64) < st.st_size
            {
                cut = self.prepare_cut(inode, st.st_size as u64, size);
            }
            let res = match handle {
                Some(h) => nix::unistd::ftruncate(h.fd(), size as i64),
                None => {
                    let p = sys::proc_fd_path(inode.fd().as_raw_fd());
                    nix::unistd::truncate(p.as_c_str(), size as i64)
                }
            };
            // HANDLE_KILLPRIV_V2: an unprivileged truncate clears suid/sgid, as the
            // kernel would have (our root daemon has CAP_FSETID, the caller may not).
            if res.is_ok() && self.lacks_fsetid(req) {
                self.kill_suid(inode);
            }
            let after = sys::fstat(inode.fd()).ok();
            // A writable handle still open may write the cut lines back (rewrite); an
            // `O_RDONLY|O_TRUNC` open's truncate comes with a read-only handle, which
            // never ends a rewrite.
            let hold = handle.is_some_and(|h| h.writable) || inode.writers() > 0;
            let outcome = cut.map(|c| self.finish_cut(c, res.is_ok(), hold.then_some(inode.ino)));
            self.record(req, "truncate", path.clone(), Some(inode.ino), |r| {
                r.size_before = before.as_ref().map(|s| s.st_size as u64);
                r.size_after = after.as_ref().map(|s| s.st_size as u64);
                r.len = Some(size);
                record::fingerprints(r, before.as_ref(), after.as_ref());
                r.result = record::result(&res);
                if let Some(o) = outcome {
                    o.apply(r);
                }
            });
            res?;
        }
        if atime.is_some() || mtime.is_some() {
            let before = sys::fstat(inode.fd()).ok();
            let times = [to_timespec(atime), to_timespec(mtime)];
            let res = match handle {
                Some(h) => {
                    // SAFETY: live fd and a pointer to two timespecs.
                    let r = unsafe { libc::futimens(h.fd().as_raw_fd(), times.as_ptr()) };
                    if r == 0 { Ok(()) } else { Err(Errno::last()) }
                }
                None => sys::utimens(inode.fd(), &times),
            };
            let after = sys::fstat(inode.fd()).ok();
            self.record(req, "utimens", path, Some(inode.ino), |r| {
                record::fingerprints(r, before.as_ref(), after.as_ref());
                r.result = record::result(&res);
            });
            res?;
        }
        Ok(())
    }

    /// Does the caller lack CAP_FSETID (so a truncate must clear its file's suid/sgid,
    /// as the kernel would; fuser does not pass the kernel's own KILL_SUIDGID flags for
    /// OPEN and SETATTR)? From its cached `CapEff`; if the thread is gone, "not root".
    fn lacks_fsetid(&self, req: &Request) -> bool {
        /// linux/capability.h.
        const CAP_FSETID: u32 = 4;
        self.ids
            .creds(req.pid(), req.uid(), req.gid())
            .and_then(|c| c.has_cap(CAP_FSETID))
            .map_or(req.uid() != 0, |has| !has)
    }

    /// The caller's supplementary groups, for [`sys::as_caller`] (cached per thread;
    /// none for root, whose creates skip the switch, or when the thread is gone).
    fn groups(&self, req: &Request) -> Vec<u32> {
        if req.uid() == 0 && req.gid() == 0 {
            return Vec::new();
        }
        self.ids
            .creds(req.pid(), req.uid(), req.gid())
            .map(|c| c.groups.clone())
            .unwrap_or_default()
    }

    /// Clear S_ISUID (and S_ISGID when group-executable), as the VFS does on write or
    /// truncate by a caller without CAP_FSETID. Only called where the kernel asked for it.
    fn kill_suid(&self, inode: &Inode) {
        if let Ok(st) = sys::fstat(inode.fd()) {
            let mut mode = st.st_mode & 0o7777;
            let old = mode;
            mode &= !libc::S_ISUID;
            if mode & libc::S_IXGRP != 0 {
                mode &= !libc::S_ISGID;
            }
            if mode != old {
                let p = sys::proc_fd_path(inode.fd().as_raw_fd());
                let _ = nix::sys::stat::fchmodat(
                    nix::fcntl::AT_FDCWD,
                    p.as_c_str(),
                    nix::sys::stat::Mode::from_bits_truncate(mode),
                    nix::sys::stat::FchmodatFlags::FollowSymlink,
                );
            }
        }
    }

    // The WRITE request's fields, as fuser hands them over, plus the resolved handle.
    #[allow(clippy::too_many_arguments)]
    fn do_write(
        &self,
        req: &Request,
        h: &FileHandle,
        offset: u64,
        data: &[u8],
        wflags: WriteFlags,
        append: bool,
        reply: ReplyWrite,
    ) {
        if self.cfg.read_only {
            return reply.error(FErrno::EROFS);
        }
        // Held until this write's record is in the journal, so that the inode's next
        // operation (which may arrive as soon as we reply) is recorded after it.
        let _order = h.inode.order.lock();
        let _busy = h.inode.busy();
        let journaling = self.journal.is_some();
        let transcript = journaling && self.is_transcript(&h.inode);
        let before = if journaling {
            let g = h.inode.changes();
            let st = match sys::fstat(h.fd()) {
                Ok(st) => st,
                Err(e) => return reply.error(err(e)),
            };
            // Only our own guard may be in flight: then a moved stat is not ours.
            self.check_external(req, &h.inode, &st, 1, g);
            Some(st)
        } else {
            None
        };
        let size_before = before.as_ref().map_or(0, |s| s.st_size as u64);
        // An overwrite of existing lines cuts them: salvage first, then hold them
        // for this handle's rewrite (lines written back are not removed).
        let mut over = None;
        if transcript
            && !append
            && offset < size_before
            && let Ok(rfd) = h.inode.read_fd()
            && let Some(j) = &self.journal
        {
            let ch = self.tracker.before_write(
                h.inode.ino,
                rfd.as_fd(),
                offset,
                data.len() as u64,
                size_before,
            );
            over = self.stage_cut(j, self.inodes.path_of(&h.inode), ch);
        }
        let res = sys::pwrite_mode(h.fd(), data, offset, append, h.append());
        let outcome = over.map(|c| self.finish_cut(c, res.is_ok(), Some(h.inode.ino)));
        if res.is_ok() && wflags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
            self.kill_suid(&h.inode);
        }
        let after = sys::fstat(h.fd()).ok();
        if let Some(st) = &after {
            self.mark_known(&h.inode, st);
        }
        if let Ok(n) = res {
            h.count_write(n);
        }
        if !journaling {
            return match res {
                Ok(n) => reply.written(n as u32),
                Err(e) => reply.error(err(e)),
            };
        }
        // Reply before the journal work: the writer goes on at once (one round trip
        // costs the writer a sleep and a wake-up, so latency here is throughput). The
        // identity is taken now, while the caller is certainly alive; the ticket
        // makes journal readers wait for this record (`Replied`).
        let caller = self.ids.caller(req.pid(), req.uid(), req.gid());
        h.note_writer(&caller);
        let ticket = self.replied.begin();
        match res {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(err(e)),
        }
        {
            // O_APPEND: the backing kernel wrote at its EOF, whatever offset said.
            let real_off = match (&res, &after) {
                (Ok(n), Some(st)) if append => (st.st_size as u64).saturating_sub(*n as u64),
                _ => offset,
            };
            let mut change = None;
            if transcript
                && let Ok(n) = res
                && let Ok(rfd) = h.inode.read_fd()
            {
                change =
                    Some(
                        self.tracker
                            .after_write(h.inode.ino, rfd.as_fd(), real_off, &data[..n]),
                    );
            }
            // Complete lines equal to lines cut by this rewrite put them back.
            if let (Some(c), Ok(n)) = (change.as_ref(), &res)
                && self.rewrites.is_open(h.inode.ino)
            {
                self.put_back(&h.inode, &c.entries, real_off, &data[..*n]);
            }
            let path = self.inodes.path_of(&h.inode);
            self.record_as(&caller, "write", path, Some(h.inode.ino), |r| {
                r.offset = Some(real_off);
                r.len = Some(*res.as_ref().unwrap_or(&data.len()) as u64);
                if append {
                    r.append = Some(true);
                }
                r.size_before = Some(size_before);
                r.size_after = after.as_ref().map(|s| s.st_size as u64);
                record::fingerprints(r, before.as_ref(), after.as_ref());
                r.result = record::result(&res);
                if let Some(c) = change {
                    if !c.entries.is_empty() {
                        r.entries = Some(c.entries);
                    }
                    if c.partial > 0 {
                        r.partial = Some(c.partial);
                    }
                }
                if let Some(o) = outcome {
                    o.apply(r);
                }
            });
        }
        drop(ticket);
    }

    fn do_create(
        &self,
        req: &Request,
        p: &Inode,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> SysResult<(u64, fuser::FileAttr)> {
        let c = sys::cname(name)?;
        // O_NOFOLLOW: the kernel sends CREATE only after a negative lookup, so a symlink
        // here appeared behind our back (a `--source` writer); never follow it.
        let oflags = backing_flags(flags | libc::O_CREAT | libc::O_NOFOLLOW);
        let res = sys::as_caller(&self.groups(req), req.uid(), req.gid(), umask, || {
            sys::openat(p.fd(), &c, oflags, mode & 0o7777)
        });
        let path = self.child_path(p, name);
        let fd = match res {
            Ok(fd) => fd,
            Err(e) => {
                self.record(req, "create", path, None, |r| {
                    r.access = Some(access_name(flags).into());
                    r.flags = Some(flag_names((flags | libc::O_CREAT) & !FMODE_EXEC));
                    r.mode = Some(mode & 0o7777);
                    r.result = record::result::<()>(&Err(e));
                });
                return Err(e);
            }
        };
        let st = sys::fstat(fd.as_fd())?;
        let opath = sys::reopen(fd.as_fd(), libc::O_PATH)?;
        let inode = self.inodes.lookup(opath, &st, p.id, name);
        self.mark_known(&inode, &st);
        self.record(req, "create", path, Some(inode.ino), |r| {
            r.access = Some(access_name(flags).into());
            r.flags = Some(flag_names((flags | libc::O_CREAT) & !FMODE_EXEC));
            r.mode = Some(mode & 0o7777);
            r.size_after = Some(st.st_size as u64);
            r.after = Some(attr::fingerprint(&st));
        });
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if writable {
            inode.writer_opened();
        }
        let a = attr::to_attr(inode.id, &st);
        let fh = self.files.insert(FileHandle {
            fd,
            inode,
            flags,
            writable,
            reads: Default::default(),
            read_bytes: Default::default(),
            writes: Default::default(),
            write_bytes: Default::default(),
            opener: self
                .journal
                .as_ref()
                .map(|_| self.ids.caller(req.pid(), req.uid(), req.gid())),
            last_writer: Default::default(),
        });
        Ok((fh, a))
    }

    fn do_unlink(&self, req: &Request, p: &Inode, name: &OsStr, dir: bool) -> SysResult<()> {
        let c = sys::cname(name)?;
        let victim = sys::openat(p.fd(), &c, libc::O_PATH | libc::O_NOFOLLOW, 0).ok();
        let vst = victim.as_ref().and_then(|fd| sys::fstat(fd.as_fd()).ok());
        let path = self.child_path(p, name);
        // Unlinking the last link of a transcript removes every line: salvage them first.
        let mut cut = None;
        if !dir
            && transcript::is_transcript(name.as_bytes())
            && let Some(j) = &self.journal
            && let (Some(fd), Some(st)) = (&victim, &vst)
            && st.st_mode & libc::S_IFMT == libc::S_IFREG
            && st.st_nlink == 1
            && st.st_size > 0
            && let Ok(rfd) = sys::reopen(fd.as_fd(), libc::O_RDONLY | libc::O_NOATIME)
                .or_else(|_| sys::reopen(fd.as_fd(), libc::O_RDONLY))
        {
            let ch = self
                .tracker
                .before_truncate(st.st_ino, rfd.as_fd(), st.st_size as u64, 0);
            cut = self.stage_cut(j, path.clone(), ch);
        }
        // The victim's nlink/ctime move under us: not `external`.
        let vinode = vst
            .as_ref()
            .and_then(|st| self.inodes.get(self.inodes.id_for(st.st_dev, st.st_ino)));
        let _order = vinode.as_ref().map(|i| i.order.lock());
        let _busy = vinode.as_ref().map(|i| i.busy());
        let flags = if dir {
            nix::unistd::UnlinkatFlags::RemoveDir
        } else {
            nix::unistd::UnlinkatFlags::NoRemoveDir
        };
        let res = nix::unistd::unlinkat(p.fd(), c.as_c_str(), flags);
        // The file is gone with every line: nothing can write them back.
        let outcome = cut.map(|c| self.finish_cut(c, res.is_ok(), None));
        if res.is_ok()
            && let Some(st) = &vst
        {
            self.tracker.forget(st.st_ino);
            // nlink and ctime of a still-linked inode moved: that was us.
            let id = self.inodes.id_for(st.st_dev, st.st_ino);
            if let Some(inode) = self.inodes.get(id)
                && let Ok(st2) = sys::fstat(inode.fd())
            {
                self.mark_known(&inode, &st2);
            }
        }
        self.record(
            req,
            if dir { "rmdir" } else { "unlink" },
            path,
            vst.as_ref().map(|s| s.st_ino),
            |r| {
                r.replaced_ino = vst.as_ref().map(|s| s.st_ino);
                r.before = vst.as_ref().map(attr::fingerprint);
                r.size_before = vst.as_ref().map(|s| s.st_size as u64);
                r.result = record::result(&res);
                if let Some(o) = outcome {
                    o.apply(r);
                }
            },
        );
        res
    }

    fn do_rename(
        &self,
        req: &Request,
        p: &Inode,
        name: &OsStr,
        np: &Inode,
        newname: &OsStr,
        flags: u32,
    ) -> SysResult<()> {
        let c = sys::cname(name)?;
        let nc = sys::cname(newname)?;
        // Keep the replaced inode open until it has been diffed (transcripts) and to
        // report which inode was replaced.
        let replaced = if flags & libc::RENAME_EXCHANGE == 0 {
            sys::openat(np.fd(), &nc, libc::O_PATH | libc::O_NOFOLLOW, 0).ok()
        } else {
            None
        };
        let rst = replaced.as_ref().and_then(|fd| sys::fstat(fd.as_fd()).ok());
        // Replacing the last link of a transcript: read it and salvage it whole before
        // the rename; after it, keep only the lines the new file lacks.
        let to = self.child_path(np, newname);
        let old_lines = match (&replaced, &rst, &self.journal) {
            (Some(fd), Some(st), Some(j))
                if st.st_mode & libc::S_IFMT == libc::S_IFREG
                    && st.st_nlink == 1
                    && transcript::is_transcript(newname.as_bytes()) =>
            {
                sys::reopen(fd.as_fd(), libc::O_RDONLY | libc::O_NOATIME)
                    .or_else(|_| sys::reopen(fd.as_fd(), libc::O_RDONLY))
                    .ok()
                    .map(|rfd| TranscriptTracker::read_all(rfd.as_fd()))
                    .map(|bytes| {
                        let end = j.salvage(&to, &bytes);
                        (end.saturating_sub(bytes.len() as u64), end, bytes)
                    })
            }
            _ => None,
        };
        // The moved inode's ctime changes under us: not `external`.
        let moved = sys::openat(p.fd(), &c, libc::O_PATH | libc::O_NOFOLLOW, 0)
            .ok()
            .and_then(|fd| sys::fstat(fd.as_fd()).ok())
            .and_then(|st| self.inodes.get(self.inodes.id_for(st.st_dev, st.st_ino)));
        let replaced_inode = rst
            .as_ref()
            .and_then(|st| self.inodes.get(self.inodes.id_for(st.st_dev, st.st_ino)))
            .filter(|r| moved.as_ref().is_none_or(|m| m.id != r.id));
        // Both journal-order locks, in node id order (no deadlock with a crossed rename).
        let mut locked: Vec<&Arc<Inode>> = moved.iter().chain(replaced_inode.iter()).collect();
        locked.sort_by_key(|i| i.id);
        let _order: Vec<_> = locked.iter().map(|i| i.order.lock()).collect();
        let _busy = moved.as_ref().map(|i| i.busy());
        let res = sys::renameat2(p.fd(), &c, np.fd(), &nc, flags);
        let path = self.child_path(p, name);
        let mut change = None;
        let mut moved_st = None;
        if res.is_ok() {
            // The moved inode's remembered name follows it.
            if let Ok(fd) = sys::openat(np.fd(), &nc, libc::O_PATH | libc::O_NOFOLLOW, 0)
                && let Ok(st) = sys::fstat(fd.as_fd())
            {
                moved_st = Some(st);
                if let Some(inode) = self.inodes.get(self.inodes.id_for(st.st_dev, st.st_ino)) {
                    inode.set_name(np.id, newname);
                    self.mark_known(&inode, &st);
                }
                if let Some((_, _, old)) = &old_lines
                    && let Ok(newfd) = sys::reopen(fd.as_fd(), libc::O_RDONLY | libc::O_NOATIME)
                        .or_else(|_| sys::reopen(fd.as_fd(), libc::O_RDONLY))
                {
                    change = Some(self.tracker.diff_replaced(old, newfd.as_fd()));
                }
            }
            if flags & libc::RENAME_EXCHANGE != 0
                && let Ok(fd) = sys::openat(p.fd(), &c, libc::O_PATH | libc::O_NOFOLLOW, 0)
                && let Ok(st) = sys::fstat(fd.as_fd())
                && let Some(inode) = self.inodes.get(self.inodes.id_for(st.st_dev, st.st_ino))
            {
                inode.set_name(p.id, name);
            }
            if let Some(st) = &rst {
                self.tracker.forget(st.st_ino);
                // Only when the replaced file is gone (its last link): a file still
                // reachable through another link keeps its declarations.
                if flags & libc::RENAME_EXCHANGE == 0
                    && st.st_nlink == 1
                    && let Some(m) = &moved_st
                {
                    self.lanes.inherit(st.st_ino, m.st_ino);
                }
            }
        }
        // Salvage keeps only what the rename removed (all of it if the diff failed).
        if let (Some((start, end, _)), Some(j)) = (&old_lines, &self.journal) {
            match (&res, &change) {
                (Err(_), _) => {
                    j.salvage_rewind(&to, *start, *end, &[]);
                }
                (Ok(()), Some(ch)) => {
                    j.salvage_rewind(&to, *start, *end, &ch.salvage);
                }
                (Ok(()), None) => {}
            }
        }
        let mut fl = Vec::new();
        if flags & libc::RENAME_NOREPLACE != 0 {
            fl.push("RENAME_NOREPLACE".to_string());
        }
        if flags & libc::RENAME_EXCHANGE != 0 {
            fl.push("RENAME_EXCHANGE".to_string());
        }
        if flags & libc::RENAME_WHITEOUT != 0 {
            fl.push("RENAME_WHITEOUT".to_string());
        }
        // The lane: the renamer's declaration on the moved file (or, just inherited,
        // on the file it replaced).
        let lane_ino = moved_st.as_ref().map(|m| m.st_ino);
        self.record(req, "rename", path, lane_ino, |r| {
            r.to = Some(to);
            if !fl.is_empty() {
                r.flags = Some(fl);
            }
            if res.is_ok() {
                r.replaced_ino = rst.as_ref().map(|s| s.st_ino);
                // `before`: what was at `to` (the replaced file); `after`: what is there now.
                r.before = rst.as_ref().map(attr::fingerprint);
                r.after = moved_st.as_ref().map(attr::fingerprint);
            }
            r.result = record::result(&res);
            if let Some(ch) = change {
                if !ch.removed.is_empty() {
                    r.removed = Some(ch.removed);
                }
                if !ch.entries.is_empty() {
                    r.entries = Some(ch.entries);
                }
            }
        });
        res
    }

    /// Before a truncate of `inode` from `old_size` to `new_size` (a transcript): the
    /// lines it will cut, their bytes already in the salvage store, so that no line is
    /// lost even if the daemon dies right after the truncate. `None` without a journal
    /// or when nothing is cut.
    fn prepare_cut(&self, inode: &Inode, old_size: u64, new_size: u64) -> Option<PendingCut> {
        let j = self.journal.as_ref()?;
        // Not the cached fd: a truncate by path may have no writable handle to end it.
        let rfd = sys::reopen(inode.fd(), libc::O_RDONLY | libc::O_NOATIME)
            .or_else(|_| sys::reopen(inode.fd(), libc::O_RDONLY))
            .ok()?;
        let change = self
            .tracker
            .before_truncate(inode.ino, rfd.as_fd(), old_size, new_size);
        self.stage_cut(j, self.inodes.path_of(inode), change)
    }

    /// Put the bytes of the lines `change` cuts into the salvage store.
    fn stage_cut(
        &self,
        j: &Journal,
        path: String,
        change: transcript::Change,
    ) -> Option<PendingCut> {
        if change.removed.is_empty() {
            return None;
        }
        let end = j.salvage(&path, &change.salvage);
        let span = (end.saturating_sub(change.salvage.len() as u64), end);
        Some(PendingCut { path, change, span })
    }

    /// After the change that cut the lines ran: on failure take their salvage back; on
    /// success either hold them for the rewrite in progress of backing inode `hold`
    /// (a writable handle of the file stays open) or, with `None`, report them removed.
    fn finish_cut(&self, cut: PendingCut, ok: bool, hold: Option<u64>) -> CutOutcome {
        let Some(j) = &self.journal else {
            return CutOutcome::default();
        };
        let PendingCut { path, change, span } = cut;
        if !ok {
            j.salvage_rewind(&path, span.0, span.1, &[]);
            return CutOutcome::default();
        }
        if let Some(ino) = hold {
            let n = self.rewrites.cut(ino, &path, change, Some(span));
            CutOutcome {
                held: Some(n),
                ..Default::default()
            }
        } else {
            CutOutcome {
                removed: Some(change.removed),
                ..Default::default()
            }
        }
    }

    /// The last writable handle of `inode` was released: the rewrite in progress (if
    /// any) ends, and the cut lines it did not write back are removed for good. The
    /// salvage store keeps only their bytes (when it can be rewound exactly).
    /// Put back the cut lines that the complete lines `entries` (produced by `data`
    /// written at `at`) equal; a line begun by an earlier write is read back whole.
    fn put_back(&self, inode: &Inode, entries: &[Entry], at: u64, data: &[u8]) {
        let rfd = inode.read_fd().ok();
        let mut owned: Vec<Vec<u8>> = Vec::new();
        let mut lines: Vec<&[u8]> = Vec::with_capacity(entries.len());
        let mut from_file = Vec::new();
        for e in entries {
            match e
                .offset
                .checked_sub(at)
                .and_then(|s| data.get(s as usize..s as usize + e.bytes as usize))
            {
                Some(l) => lines.push(l),
                None => from_file.push(e),
            }
        }
        if let Some(fd) = &rfd {
            for e in from_file {
                let mut b = vec![0u8; e.bytes as usize];
                if let Ok(n) = sys::pread(fd.as_fd(), &mut b, e.offset) {
                    b.truncate(n);
                    owned.push(b);
                }
            }
        }
        lines.extend(owned.iter().map(Vec::as_slice));
        self.rewrites.put_back(inode.ino, lines);
    }

    fn end_rewrite(&self, inode: &Inode) -> Option<(Vec<Entry>, u64)> {
        let rw = self.rewrites.close(inode.ino)?;
        let (path, span, restored) = (rw.path.clone(), rw.salvage, rw.restored);
        let (removed, bytes) = rw.net();
        if let (Some(j), Some((start, end))) = (&self.journal, span) {
            // Fails (and keeps every cut line) if other salvage landed in between.
            j.salvage_rewind(&path, start, end, &bytes);
        }
        Some((removed, restored))
    }

    /// Whether the kernel may keep its page cache for this open: only while the backing
    /// still matches what the cache was filled from (through us).
    fn keep_cache(&self, inode: &Inode, st: Option<&libc::stat>) -> bool {
        let Some(st) = st else { return false };
        if !inode.is_file() {
            return false;
        }
        let f = attr::fingerprint(st);
        let now = (f.size, f.mtime_ns, f.ctime_ns);
        let mut fp = inode.cache_fp.lock();
        let keep = *fp == Some(now);
        *fp = Some(now);
        keep
    }

    /// Remember the backing state we caused, so that `external` changes stand out.
    fn mark_known(&self, inode: &Inode, st: &libc::stat) {
        let f = attr::fingerprint(st);
        *inode.cache_fp.lock() = Some((f.size, f.mtime_ns, f.ctime_ns));
    }

    fn note_external(&self, req: &Request, inode: &Inode) {
        let g = inode.changes();
        if inode.is_file()
            && let Ok(st) = sys::fstat(inode.fd())
        {
            self.check_external(req, inode, &st, 0, g);
        }
    }

    /// A backing stat we did not cause: record an `external` change (and drop the
    /// kernel's cache for this inode at its next open). `own_busy`: mutations of ours
    /// the caller itself has in flight on `inode`; any more and the check is skipped,
    /// since a moved stat may then be ours. `seen`: [`Inode::changes`] read before `st`
    /// was taken; if a change of ours started or ended since, `st` may predate it (a
    /// GETATTR racing a WRITE) and proves nothing.
    fn check_external(
        &self,
        _req: &Request,
        inode: &Inode,
        st: &libc::stat,
        own_busy: u32,
        seen: u64,
    ) {
        if !inode.is_file()
            || self.journal.is_none()
            || inode.busy_count() > own_busy
            || inode.changes() != seen
        {
            return;
        }
        let f = attr::fingerprint(st);
        let now = (f.size, f.mtime_ns, f.ctime_ns);
        let prev = {
            let mut fp = inode.cache_fp.lock();
            let prev = *fp;
            if prev.is_some() && prev != Some(now) {
                *fp = None; // next open must not keep the stale cache
            }
            prev
        };
        if let Some(p) = prev
            && p != now
        {
            let path = self.inodes.path_of(inode);
            // A transcript we indexed: which entries the outside change removed and
            // added (by the line index; the removed bytes were never seen).
            let mut change = if self.is_transcript(inode)
                && let Ok(rfd) = inode.read_fd()
            {
                self.tracker.external_change(inode.ino, rfd.as_fd())
            } else {
                None
            };
            // Lookup and getattr come here without the inode's order lock: if a change
            // of ours began while the file was read, the comparison may hold its lines
            // too. Name nothing then, and let the index be rebuilt.
            if change.is_some() && (inode.busy_count() > own_busy || inode.changes() != seen) {
                change = None;
                self.tracker.forget(inode.ino);
            }
            let mut rec = crate::journal::record::Record {
                op: "external".into(),
                path,
                ts: String::new(), // stamped by the journal, in seq order
                result: "ok".into(),
                size_before: Some(p.0),
                size_after: Some(f.size),
                before: Some(crate::journal::record::Fingerprint {
                    ino: inode.ino,
                    size: p.0,
                    mtime_ns: p.1,
                    ctime_ns: p.2,
                }),
                after: Some(f),
                ..Default::default()
            };
            if let Some(c) = change {
                rec.entries = Some(c.entries).filter(|v| !v.is_empty());
                rec.removed = Some(c.removed).filter(|v| !v.is_empty());
                rec.partial = Some(c.partial).filter(|n| *n > 0);
            }
            if let Some(j) = &self.journal {
                j.append(rec);
            }
        }
    }

    fn child_path(&self, parent: &Inode, name: &OsStr) -> String {
        let base = self.inodes.path_of(parent);
        let n = String::from_utf8_lossy(name.as_bytes());
        if base.is_empty() {
            n.into_owned()
        } else {
            format!("{base}/{n}")
        }
    }
}

/// Lines a truncate or an overwrite is about to cut, their bytes already salvaged.
#[derive(Debug)]
struct PendingCut {
    /// Journal path the salvage is stored under.
    path: String,
    change: transcript::Change,
    /// Salvage store span `[start, end)` of the cut bytes.
    span: (u64, u64),
}

/// What a record says about cut lines: `removed` now, or `cut` (held for the rewrite).
#[derive(Debug, Default)]
pub(crate) struct CutOutcome {
    removed: Option<Vec<Entry>>,
    held: Option<u64>,
}

impl CutOutcome {
    /// Fill `removed`/`cut` of a record.
    fn apply(self, r: &mut crate::journal::record::Record) {
        r.removed = self.removed.filter(|v| !v.is_empty());
        r.cut = self.held.filter(|n| *n > 0);
    }
}

/// Used by the mount code to name the daemon's view of a node in logs.
pub fn describe(ino: u64) -> String {
    if ino >= VIRTUAL_BASE {
        format!("virtual:{}", ino - VIRTUAL_BASE)
    } else {
        format!("ino:{ino}")
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn f<T: Send + Sync>() {}
    f::<SessionFs>();
}
