//! The `fuser::Filesystem` handlers, and nothing else (as fuse-backend-rs keeps its
//! ops in `sync_io.rs`). Each one is thin: request → [`Ctx`], resolve the node or
//! handle, call the core function of its module, reply. Node ids at and above
//! [`VIRTUAL_BASE`] are virtual files; their handles are their node ids.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno as FErrno, FileHandle as Fh, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use nix::errno::Errno;

use super::change::SetAttr;
use super::dirops::NewEntry;
use super::files::{is_virtual, reply_flags};
use super::handle::DirHandle;
use super::inode::{ROOT_ID, VIRTUAL_BASE};
use super::stats::Req;
use super::{Ctx, SEQ_XATTR, SessionFs, attr, err};
use crate::lanes::LANE_XATTR;
use crate::sys::{self, SysResult};

/// Reply to an empty-result request.
fn empty(reply: ReplyEmpty, res: SysResult<()>) {
    match res {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(err(e)),
    }
}

/// A directory listing of at least this many entries gives its memory back to the
/// system when its handle is released (see `releasedir`).
const TRIM_AFTER_ENTRIES: usize = 10_000;

impl SessionFs {
    fn entry_reply(&self, reply: ReplyEntry, a: &fuser::FileAttr) {
        reply.entry_with_ttls(&self.cfg.attr_ttl, &self.entry_ttl(a), a, Generation(0));
    }

    fn entry(&self, reply: ReplyEntry, res: SysResult<fuser::FileAttr>) {
        match res {
            Ok(a) => self.entry_reply(reply, &a),
            Err(e) => reply.error(err(e)),
        }
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
        // DIRECT_IO_ALLOW_MMAP: a readable handle opened while a write-only one is open
        // is a direct-I/O handle too (see `Inode::open_direct`); with this flag a
        // MAP_SHARED mmap of it works (through the page cache, written back before
        // each direct write of the range) instead of failing with ENODEV.
        let mut wanted = InitFlags::FUSE_HANDLE_KILLPRIV_V2
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_DONT_MASK
            | InitFlags::FUSE_POSIX_ACL
            | InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP;
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
        let fds = self.inodes.fds();
        tracing::info!(
            inodes,
            open_files = files,
            open_dirs = dirs,
            pinned = fds.pinned(),
            cached_fds = fds.cached(),
            handle_opens = fds.misses(),
            "session ending"
        );
        if let Some(j) = &self.journal {
            j.shutdown();
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _gate = self.enter(Req::Lookup);
        let Ok(p) = self.inode(parent.0) else {
            return reply.error(FErrno::ENOENT);
        };
        match self.do_lookup(&p, name) {
            Ok((inode, a)) => {
                self.warn_if_shadowing(&p, name);
                let ttl = self.attr_ttl_of(&inode);
                reply.entry_with_ttls(&ttl, &self.entry_ttl(&a), &a, Generation(0))
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
        let _gate = self.enter(Req::Forget);
        if ino.0 < VIRTUAL_BASE {
            self.inodes.forget(ino.0, nlookup);
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<Fh>, reply: ReplyAttr) {
        let _gate = self.enter(Req::Getattr);
        if ino.0 >= VIRTUAL_BASE {
            return match self.virtual_attr(ino.0) {
                Some(a) => reply.attr(&Duration::ZERO, &a),
                None => reply.error(FErrno::ENOENT),
            };
        }
        let Ok(inode) = self.inode(ino.0) else {
            return reply.error(FErrno::ENOENT);
        };
        match self.do_getattr(&Ctx::from(req), &inode) {
            Ok((a, ttl)) => reply.attr(&ttl, &a),
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
        let _gate = self.enter(Req::Setattr);
        if ino.0 >= VIRTUAL_BASE {
            // `fs.writeFileSync` opens a lane file with O_TRUNC: a size change of it
            // is accepted (there is nothing to truncate).
            if self.is_lane_file(ino.0) && mode.is_none() && uid.is_none() && gid.is_none() {
                return match self.virtual_attr(ino.0) {
                    Some(a) => reply.attr(&Duration::ZERO, &a),
                    None => reply.error(FErrno::ENOENT),
                };
            }
            return reply.error(FErrno::EACCES);
        }
        let Ok(inode) = self.inode(ino.0) else {
            return reply.error(FErrno::ENOENT);
        };
        let handle = fh.and_then(|f| self.files.get(f.0));
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
        };
        match self.do_setattr(&Ctx::from(req), &inode, handle.as_deref(), set) {
            Ok(a) => reply.attr(&self.attr_ttl_of(&inode), &a),
            Err(e) => reply.error(err(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let _gate = self.enter(Req::Readlink);
        let Ok(inode) = self.inode(ino.0) else {
            return reply.error(FErrno::ENOENT);
        };
        match inode.fd().and_then(|fd| nix::fcntl::readlinkat(fd, "")) {
            Ok(target) => reply.data(target.as_encoded_bytes()),
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
        let _gate = self.enter(Req::Mknod);
        let what = NewEntry::Node {
            mode,
            rdev: rdev.into(),
        };
        let res = self
            .inode(parent.0)
            .and_then(|p| self.do_make(&Ctx::from(req), &p, name, what, umask));
        self.entry(reply, res)
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
        let _gate = self.enter(Req::Mkdir);
        let what = NewEntry::Dir { mode };
        let ctx = Ctx::from(req);
        let res = self.inode(parent.0).and_then(|p| {
            let r = self.do_make(&ctx, &p, name, what, umask);
            if r.is_ok() {
                crate::resume::fault("after-mkdir", name.as_bytes());
            }
            match r {
                Err(Errno::EEXIST) => self.resent_made(req, &ctx, &p, name, true).unwrap_or(r),
                r => r,
            }
        });
        self.entry(reply, res)
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _gate = self.enter(Req::Unlink);
        let ctx = Ctx::from(req);
        let res = self.inode(parent.0).and_then(|p| {
            if self.resent_done(req, &ctx, &p, name, false) {
                return Ok(());
            }
            self.do_unlink(&ctx, &p, name, false)
        });
        if res.is_ok() {
            crate::resume::fault("after-unlink", name.as_bytes());
        }
        empty(reply, res)
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _gate = self.enter(Req::Rmdir);
        let ctx = Ctx::from(req);
        let res = self.inode(parent.0).and_then(|p| {
            if self.resent_done(req, &ctx, &p, name, true) {
                return Ok(());
            }
            self.do_unlink(&ctx, &p, name, true)
        });
        empty(reply, res)
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let _gate = self.enter(Req::Symlink);
        let what = NewEntry::Symlink { target };
        let ctx = Ctx::from(req);
        let res = self.inode(parent.0).and_then(|p| {
            let r = self.do_make(&ctx, &p, link_name, what, 0);
            match r {
                Err(Errno::EEXIST) => self
                    .resent_made(req, &ctx, &p, link_name, false)
                    .unwrap_or(r),
                r => r,
            }
        });
        self.entry(reply, res)
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
        let _gate = self.enter(Req::Rename);
        let res = self
            .inode(parent.0)
            .and_then(|p| Ok((p, self.inode(newparent.0)?)))
            .and_then(|(p, np)| {
                self.do_rename(&Ctx::from(req), &p, name, &np, newname, flags.bits())
            });
        let res = match res {
            // Re-sent after a crash: the source gone and the target there is the
            // rename the dead daemon did (its record may be lost with its last batch).
            Err(Errno::ENOENT)
                if crate::resume::is_resend(req.unique().0)
                    && self.entry_exists(newparent.0, newname) =>
            {
                tracing::warn!(name = ?name, "a re-sent rename had been done before the crash: answered as done");
                Ok(())
            }
            r => r,
        };
        empty(reply, res)
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _gate = self.enter(Req::Link);
        let res = self
            .inode(ino.0)
            .and_then(|i| Ok((i, self.inode(newparent.0)?)))
            .and_then(|(i, np)| self.do_link(&Ctx::from(req), &i, &np, newname));
        self.entry(reply, res)
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _gate = self.enter(Req::Open);
        let flags = flags.0;
        if ino.0 >= VIRTUAL_BASE {
            if flags & libc::O_ACCMODE != libc::O_RDONLY && !self.is_lane_file(ino.0) {
                return reply.error(FErrno::EACCES);
            }
            return reply.opened(Fh(ino.0), FopenFlags::FOPEN_DIRECT_IO);
        }
        match self
            .inode(ino.0)
            .and_then(|inode| self.do_open(&Ctx::from(req), inode, flags))
        {
            Ok((fh, of)) => reply.opened(Fh(fh), of),
            Err(e) => reply.error(err(e)),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: Fh,
        offset: u64,
        size: u32,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _gate = self.enter(Req::Read);
        if ino.0 >= VIRTUAL_BASE && self.is_lane_file(ino.0) {
            return reply.data(&self.read_lane(&Ctx::from(req), ino.0, offset, size as usize));
        }
        if ino.0 >= VIRTUAL_BASE {
            return match self.virtual_read(ino.0, offset, size as usize) {
                Some(d) => reply.data(&d),
                None => reply.error(FErrno::ENOENT),
            };
        }
        let Some(h) = self.file(fh.0, ino.0, Some(flags.0)) else {
            return reply.error(FErrno::EBADF);
        };
        let mut buf = vec![0u8; size as usize];
        // Counted for the direct WRITEs of this inode (see `ReadCount`).
        let counted = h.inode.reads.begin();
        let res = sys::pread(h.fd(), &mut buf, offset);
        drop(counted);
        match res {
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
        ino: INodeNo,
        fh: Fh,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _gate = self.enter(Req::Write);
        if is_virtual(fh.0) {
            return match self.write_lane(&Ctx::from(req), fh.0, offset, data) {
                Ok(n) => reply.written(n as u32),
                Err(e) => reply.error(err(e)),
            };
        }
        let Some(h) = self.file(fh.0, ino.0, Some(flags.0)) else {
            return reply.error(FErrno::EBADF);
        };
        // The caller's file flags now (F_SETFL may have set or cleared O_APPEND since
        // the open); page-cache writeback (FUSE_WRITE_CACHE) is always positional.
        let append =
            flags.0 & libc::O_APPEND != 0 && !write_flags.contains(WriteFlags::FUSE_WRITE_CACHE);
        // Re-sent after a crash (`--supervise`): the dead daemon may have appended it
        // already. A positional write is idempotent; an append is not.
        if append && crate::resume::is_resend(req.unique().0) && self.write_landed(&h, offset, data)
        {
            tracing::warn!(
                path = %self.handle_path(&h),
                bytes = data.len(),
                "a re-sent append had landed before the crash: not written twice"
            );
            return reply.written(data.len() as u32);
        }
        // The file's name for the fault hook of the restart tests, only when armed.
        let name = crate::resume::fault_armed().then(|| h.via.1.clone());
        if let Some(n) = &name {
            crate::resume::fault("before-write", n.as_bytes());
        }
        self.do_write(
            &Ctx::from(req),
            &h,
            offset,
            data,
            write_flags,
            append,
            move |res| match res {
                Ok(n) => {
                    if let Some(name) = &name {
                        crate::resume::fault("after-write", name.as_bytes());
                    }
                    reply.written(*n as u32)
                }
                Err(e) => reply.error(err(*e)),
            },
        )
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: Fh,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let _gate = self.enter(Req::Flush);
        // Locks stay kernel-local and the backing fd is closed at release, so there is
        // nothing to do; ENOSYS makes the kernel stop sending FLUSH (one round trip
        // less per close).
        reply.error(FErrno::ENOSYS)
    }

    fn release(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: Fh,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _gate = self.enter(Req::Release);
        self.do_release(&Ctx::from(req), fh.0);
        reply.ok()
    }

    fn fsync(&self, req: &Request, ino: INodeNo, fh: Fh, datasync: bool, reply: ReplyEmpty) {
        let _gate = self.enter(Req::Fsync);
        empty(reply, self.do_fsync(&Ctx::from(req), ino.0, fh.0, datasync))
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _gate = self.enter(Req::Opendir);
        match self.inode(ino.0).and_then(DirHandle::open) {
            Ok(dh) => reply.opened(Fh(self.dirs.insert(dh)), FopenFlags::empty()),
            Err(e) => reply.error(err(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: Fh,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let _gate = self.enter(Req::Readdir);
        let Some(dh) = self.dir(fh.0, ino.0) else {
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
        ino: INodeNo,
        fh: Fh,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let _gate = self.enter(Req::Readdirplus);
        let Some(dh) = self.dir(fh.0, ino.0) else {
            return reply.error(FErrno::EBADF);
        };
        let entries = match dh.entries(offset, self.virt_dir_extra(&dh.inode)) {
            Ok(e) => e,
            Err(e) => return reply.error(err(e)),
        };
        // One fd of the directory for the whole reply.
        let dir_fd = dh.inode.fd();
        for (i, ent) in entries.iter().enumerate().skip(offset as usize) {
            let name = ent.name.as_os_str();
            let next = i as u64 + 1;
            if ent.virtual_id != 0 {
                // Virtual nodes live as long as the mount, so the lookup count the
                // kernel takes here needs no bookkeeping (their FORGET is ignored).
                let Some(a) = self.virtual_attr(ent.virtual_id) else {
                    continue;
                };
                if reply.add(a.ino, next, name, &Duration::ZERO, &a, Generation(0)) {
                    break;
                }
                continue;
            }
            if name == "." || name == ".." {
                // The kernel ignores attributes of `.`/`..` in READDIRPLUS and takes no
                // lookup count on them.
                let Ok(st) = dir_fd.as_ref().map_err(|e| *e).and_then(sys::fstat) else {
                    continue;
                };
                let id = if dh.inode.id == ROOT_ID {
                    st.st_ino
                } else {
                    dh.inode.id
                };
                let a = attr::to_attr(id, &st);
                if reply.add(a.ino, next, name, &Duration::ZERO, &a, Generation(0)) {
                    break;
                }
                continue;
            }
            let Ok(c) = sys::cname(name) else { continue };
            let Ok(fd) = dir_fd
                .as_ref()
                .map_err(|e| *e)
                .and_then(|d| sys::openat(d, &c, libc::O_PATH | libc::O_NOFOLLOW, 0))
            else {
                continue;
            };
            let Ok(st) = sys::fstat(fd.as_fd()) else {
                continue;
            };
            let id = self.inodes.id_for(st.st_dev, st.st_ino);
            let a = self.attr_of(id, &st);
            // Take the lookup count only once the entry is in the reply buffer.
            if reply.add(
                INodeNo(id),
                next,
                name,
                &self.entry_ttl(&a),
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
        let _gate = self.enter(Req::Releasedir);
        let big = self
            .dirs
            .remove(fh.0)
            .is_some_and(|dh| dh.snapshot_len() >= TRIM_AFTER_ENTRIES);
        reply.ok();
        if big {
            // The listing's snapshot (~100 B an entry) was freed amid the inode table's
            // allocations, where malloc keeps it resident: give the pages back.
            #[cfg(target_env = "gnu")]
            // SAFETY: malloc_trim only releases free heap pages; no pointer is involved.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }

    fn fsyncdir(&self, req: &Request, ino: INodeNo, fh: Fh, datasync: bool, reply: ReplyEmpty) {
        let _gate = self.enter(Req::Fsyncdir);
        let Some(dh) = self.dir(fh.0, ino.0) else {
            return reply.error(FErrno::EBADF);
        };
        let res = dh.fsync(datasync);
        let path = self.inodes.path_of(&dh.inode);
        self.record(
            &Ctx::from(req),
            crate::journal::record::Op::Fsync,
            path,
            Some(dh.inode.key()),
            |r| {
                r.result = super::record::result(&res);
                r.flags = Some(vec!["directory".into()]);
            },
        );
        empty(reply, res)
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let _gate = self.enter(Req::Statfs);
        let root = self.inodes.root();
        match root.fd().and_then(nix::sys::statvfs::fstatvfs) {
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
        let _gate = self.enter(Req::Setxattr);
        if ino.0 >= VIRTUAL_BASE {
            return reply.error(FErrno::EACCES);
        }
        let res = self
            .inode(ino.0)
            .and_then(|i| self.do_setxattr(&Ctx::from(req), &i, name, value, flags));
        empty(reply, res)
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _gate = self.enter(Req::Getxattr);
        let value: Result<Vec<u8>, FErrno> = if ino.0 >= VIRTUAL_BASE {
            Err(FErrno::NO_XATTR)
        } else {
            let Ok(inode) = self.inode(ino.0) else {
                return reply.error(FErrno::ENOENT);
            };
            let n = name.as_encoded_bytes();
            if n == LANE_XATTR.as_bytes() {
                let caller = self.ids.caller(req.pid(), req.uid(), req.gid());
                self.lanes
                    .get(&caller, inode.key())
                    .map(|l| l.as_bytes().to_vec())
                    .ok_or(FErrno::NO_XATTR)
            } else if n == SEQ_XATTR.as_bytes() {
                self.replied.wait();
                self.journal
                    .as_ref()
                    .zip(self.file_ref(&inode))
                    .and_then(|(j, f)| j.latest_seq(f))
                    .map(|s| s.to_string().into_bytes())
                    .ok_or(FErrno::NO_XATTR)
            } else {
                let c = match sys::cname(name) {
                    Ok(c) => c,
                    Err(e) => return reply.error(err(e)),
                };
                let mut buf = vec![0u8; size as usize];
                match inode.fd().and_then(|fd| sys::getxattr(fd, &c, &mut buf)) {
                    Ok(n) if size == 0 => return reply.size(n as u32),
                    Ok(n) => {
                        buf.truncate(n);
                        Ok(buf)
                    }
                    // Without SELinux on the host no label means "unsupported":
                    // `ls -l` then stops asking for the rest of this device instead
                    // of paying a round trip per file.
                    Err(Errno::ENODATA) if !self.selinux && n == b"security.selinux" => {
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
        let _gate = self.enter(Req::Listxattr);
        if ino.0 >= VIRTUAL_BASE {
            return if size == 0 {
                reply.size(0)
            } else {
                reply.data(&[])
            };
        }
        let Ok(inode) = self.inode(ino.0) else {
            return reply.error(FErrno::ENOENT);
        };
        let mut buf = vec![0u8; size as usize];
        match inode.fd().and_then(|fd| sys::listxattr(fd, &mut buf)) {
            Ok(n) if size == 0 => reply.size(n as u32),
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(err(e)),
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _gate = self.enter(Req::Removexattr);
        if ino.0 >= VIRTUAL_BASE {
            return reply.error(FErrno::EACCES);
        }
        let res = self
            .inode(ino.0)
            .and_then(|i| self.do_removexattr(&Ctx::from(req), &i, name));
        empty(reply, res)
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let _gate = self.enter(Req::Access);
        // Only reached without default_permissions (we always set it); kept exact anyway.
        if ino.0 >= VIRTUAL_BASE {
            return reply.ok();
        }
        let Ok(inode) = self.inode(ino.0) else {
            return reply.error(FErrno::ENOENT);
        };
        let fd = match inode.fd() {
            Ok(fd) => fd,
            Err(e) => return reply.error(err(e)),
        };
        // `fd` is held while its number is in the path.
        let path = sys::proc_fd_path(fd.as_raw_fd());
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
        let _gate = self.enter(Req::Create);
        let ctx = Ctx::from(req);
        let mut res = self
            .inode(parent.0)
            .and_then(|p| self.do_create(&ctx, &p, name, mode, umask, flags));
        // Re-sent after a crash: an O_EXCL create the dead daemon carried out but did
        // not answer finds its own file (an OpenClaw lock) and would fail EEXIST.
        if matches!(res, Err(Errno::EEXIST))
            && flags & libc::O_EXCL != 0
            && crate::resume::is_resend(req.unique().0)
            && self.undo_resent_create(&ctx, parent.0, name)
        {
            res = self
                .inode(parent.0)
                .and_then(|p| self.do_create(&ctx, &p, name, mode, umask, flags));
        }
        if res.is_ok() {
            crate::resume::fault("after-create", name.as_bytes());
        }
        match res {
            Ok((fh, a, direct)) => reply.created(
                &self.cfg.attr_ttl,
                &a,
                Generation(0),
                Fh(fh),
                reply_flags(direct, false),
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
        let _gate = self.enter(Req::Other);
        // Python's open() probes TCGETS on every file; regular files answer ENOTTY.
        reply.error(FErrno::ENOTTY)
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: Fh,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let _gate = self.enter(Req::Fallocate);
        // A virtual file's handle is read-only: EBADF, as fallocate on an O_RDONLY fd.
        let Some(h) = self.file(fh.0, ino.0, None) else {
            return reply.error(FErrno::EBADF);
        };
        empty(
            reply,
            self.do_fallocate(&Ctx::from(req), &h, offset, length, mode),
        )
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: Fh,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let _gate = self.enter(Req::Lseek);
        match self.do_lseek(ino.0, fh.0, offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(err(e)),
        }
    }

    fn copy_file_range(
        &self,
        req: &Request,
        ino_in: INodeNo,
        fh_in: Fh,
        offset_in: u64,
        ino_out: INodeNo,
        fh_out: Fh,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let _gate = self.enter(Req::CopyFileRange);
        let Some(ho) = self.file(fh_out.0, ino_out.0, None) else {
            return reply.error(FErrno::EBADF);
        };
        // Read then write through our own write path, so the journal and transcript
        // decoder see the bytes exactly as for a WRITE. A virtual source reads as one.
        let want = len.min(16 << 20) as usize;
        let data = if is_virtual(fh_in.0) {
            self.virtual_read(ino_in.0, offset_in, want)
                .ok_or(Errno::EBADF)
        } else if let Some(hi) = self.file(fh_in.0, ino_in.0, Some(libc::O_RDONLY)) {
            let mut buf = vec![0u8; want];
            sys::pread(hi.fd(), &mut buf, offset_in).map(|n| {
                hi.count_read(n);
                buf.truncate(n);
                buf
            })
        } else {
            Err(Errno::EBADF)
        };
        match data {
            Ok(buf) => self.do_write(
                &Ctx::from(req),
                &ho,
                offset_out,
                &buf,
                WriteFlags::empty(),
                false,
                |res| match res {
                    Ok(n) => reply.written(*n as u32),
                    Err(e) => reply.error(err(*e)),
                },
            ),
            Err(e) => reply.error(err(e)),
        }
    }
}
