//! Changes of directory entries: create, mknod, mkdir, symlink (a new entry, made as
//! the caller), unlink, rmdir and rename (through [`SessionFs::change_entries`], under
//! the guards of every inode they touch).

use std::cell::Cell;
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use super::cut::CutOutcome;
use super::handle::FileHandle;
use super::inode::{Inode, Mutation};
use super::record::{access_name, flag_names};
use super::{Ctx, FMODE_EXEC, SessionFs, attr, backing_flags, record};
use crate::journal::record::Op;
use crate::locks::is_lock_name;
use crate::sys::{self, FileKey, SysResult};
use crate::transcript::{self, TranscriptTracker};

/// A new directory entry to make as the caller (MKNOD, MKDIR, SYMLINK).
#[derive(Debug, Clone, Copy)]
pub(super) enum NewEntry<'a> {
    /// Special or regular file: mode (type bits included) and device number.
    Node { mode: u32, rdev: u64 },
    /// Directory with permission bits `mode`.
    Dir { mode: u32 },
    /// Symbolic link to `target`.
    Symlink { target: &'a Path },
}

/// A read-only fd on the object behind O_PATH `fd`, without touching its atime when
/// allowed.
fn read_only(fd: std::os::fd::BorrowedFd<'_>) -> SysResult<std::os::fd::OwnedFd> {
    sys::reopen(fd, libc::O_RDONLY | libc::O_NOATIME).or_else(|_| sys::reopen(fd, libc::O_RDONLY))
}

impl SessionFs {
    /// MKNOD, MKDIR or SYMLINK `name` in `p`, as the caller (fsuid/fsgid, groups,
    /// `umask`), journaled; then looked up (one lookup count). Errors: EROFS on a
    /// read-only mount, else the backing errno.
    pub(super) fn do_make(
        &self,
        ctx: &Ctx,
        p: &Inode,
        name: &OsStr,
        what: NewEntry<'_>,
        umask: u32,
    ) -> SysResult<fuser::FileAttr> {
        self.ro()?;
        let c = sys::cname(name)?;
        let groups = self.groups(ctx);
        // The parent's fd is taken before the switch: opening it from its handle needs
        // the daemon's own credentials.
        let res = p.fd().and_then(|pfd| {
            sys::as_caller(&groups, ctx.uid, ctx.gid, umask, || match what {
                NewEntry::Node { mode, rdev } => sys::mknodat(&pfd, &c, mode, rdev),
                NewEntry::Dir { mode } => nix::sys::stat::mkdirat(
                    &pfd,
                    c.as_c_str(),
                    nix::sys::stat::Mode::from_bits_truncate(mode),
                ),
                NewEntry::Symlink { target } => nix::unistd::symlinkat(target, &pfd, c.as_c_str()),
            })
        });
        let (op, to, mode) = match what {
            NewEntry::Node { mode, .. } => (Op::Mknod, None, Some(mode)),
            NewEntry::Dir { mode } => (Op::Mkdir, None, Some(mode)),
            NewEntry::Symlink { target } => (
                Op::Symlink,
                Some(crate::names::encode_os(target.as_os_str())),
                None,
            ),
        };
        self.record_dirop(ctx, op, p, name, to, mode, &res);
        res?;
        Ok(self.do_lookup(p, name)?.1)
    }

    /// CREATE `name` in `p` and open it with `flags`, as the caller. Returns the file
    /// handle number and the new file's attributes. Errors: EROFS on a read-only
    /// mount, else the backing errno (EEXIST with O_EXCL).
    pub(super) fn do_create(
        &self,
        ctx: &Ctx,
        p: &Inode,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> SysResult<(u64, fuser::FileAttr, bool)> {
        self.ro()?;
        let c = sys::cname(name)?;
        // `<x>.jsonl.lane` is the lane file of a transcript: without the transcript
        // there is nothing to declare for, and a real file of that name would shadow
        // the lane file of the transcript once it exists.
        if let Some(base) = name
            .as_bytes()
            .strip_suffix(super::virt::LANE_SUFFIX.as_bytes())
            && base.ends_with(b".jsonl")
        {
            return Err(nix::errno::Errno::ENOENT);
        }
        // O_NOFOLLOW: the kernel sends CREATE only after a negative lookup, so a symlink
        // here appeared behind our back (a `--source` writer); never follow it.
        let oflags = backing_flags(flags | libc::O_CREAT | libc::O_NOFOLLOW);
        // A lock name: no reap of the name may interleave with its creation.
        let lock_name = is_lock_name(name.as_bytes());
        let gate = lock_name.then(|| self.locks.gate());
        // The parent's fd is taken before the switch (see `do_make`), and held.
        let pfd = p.fd();
        let res = pfd.clone().and_then(|pfd| {
            sys::as_caller(&self.groups(ctx), ctx.uid, ctx.gid, umask, || {
                sys::openat(&pfd, &c, oflags, mode & 0o7777)
            })
        });
        let path = self.child_path(p, name);
        let fill = |r: &mut crate::journal::record::Record| {
            r.access = Some(access_name(flags).into());
            r.flags = Some(flag_names((flags | libc::O_CREAT) & !FMODE_EXEC));
            r.mode = Some(mode & 0o7777);
        };
        let fd = match res {
            Ok(fd) => fd,
            Err(e) => {
                self.record(ctx, Op::Create, path, None, |r| {
                    fill(r);
                    r.result = record::result::<()>(&Err(e));
                });
                return Err(e);
            }
        };
        let st = sys::fstat(fd.as_fd())?;
        let opath = sys::reopen(fd.as_fd(), libc::O_PATH)?;
        let (inode, _) = self.inodes.lookup(opath, &st, p.id, name);
        {
            // The new file's first record: ordered before anything done through it.
            let _order = inode.ordered();
            self.mark_known(&inode, &st);
            let seq = self.record(ctx, Op::Create, path.clone(), Some(inode.key()), |r| {
                fill(r);
                r.size_after = Some(st.st_size as u64);
                r.after = Some(attr::fingerprint(&st));
            });
            if lock_name
                && flags & libc::O_EXCL != 0
                && let Ok(pfd) = &pfd
            {
                let caller = self.ids.caller(ctx.pid, ctx.uid, ctx.gid);
                let info = self.locks.acquired(
                    inode.key(),
                    pfd.as_fd(),
                    p.id,
                    name,
                    path.clone(),
                    &caller,
                    seq,
                );
                if let Some(info) = info {
                    self.record_as(&caller, Op::LockAcquire, path, Some(inode.key()), |r| {
                        r.lock = Some(info);
                    });
                }
                // The guarded file's attributes the kernel cached before the lock: gone,
                // so that the holder's stats reach us (attr TTL 0 while locked).
                let guarded = &name.as_bytes()[..name.len() - ".lock".len()];
                if let Some(g) = sys::cname(OsStr::from_bytes(guarded))
                    .ok()
                    .and_then(|c| sys::fstatat(pfd, &c).ok())
                    .and_then(|st| self.inodes.find(FileKey::of(&st)))
                {
                    // Before the CREATE is answered: the holder stats right after
                    // it, and an attribute cached in the gap (a chmod's reply, 10 s)
                    // would answer that stat without us: no `stat` record.
                    self.inval_attrs_now(g.id);
                }
            }
        }
        drop(gate);
        let a = attr::to_attr(inode.id, &st);
        let (fh, direct) = self.insert_handle(ctx, fd, inode, flags);
        Ok((fh, a, direct))
    }

    /// UNLINK (`dir` false) or RMDIR `name` in `p`. Unlinking the last link of a
    /// transcript removes every line: they are salvaged first and reported `removed`.
    /// Errors: EROFS on a read-only mount, else the backing errno.
    pub(super) fn do_unlink(&self, ctx: &Ctx, p: &Inode, name: &OsStr, dir: bool) -> SysResult<()> {
        self.ro()?;
        let c = sys::cname(name)?;
        let pfd = p.fd();
        let mut victim = pfd
            .as_ref()
            .ok()
            .and_then(|pfd| sys::openat(pfd, &c, libc::O_PATH | libc::O_NOFOLLOW, 0).ok());
        let vst = victim.as_ref().and_then(|fd| sys::fstat(fd.as_fd()).ok());
        let vkey = vst.as_ref().map(FileKey::of);
        let vref = victim
            .as_ref()
            .and_then(|fd| sys::identity_at(fd.as_fd(), c"").ok())
            .map(record::file_ref);
        let vinode = victim
            .as_ref()
            .zip(vst.as_ref())
            .and_then(|(fd, st)| self.inodes.find_fd(fd.as_fd(), st));
        let path = self.child_path(p, name);
        let ms = Mutation::many(&vinode.iter().map(Arc::as_ref).collect::<Vec<_>>());
        let mut cut = None;
        if !dir
            && transcript::is_transcript(name.as_bytes())
            && let Some(j) = &self.journal
            && let (Some(fd), Some(st), Some(file)) = (&victim, &vst, vref)
            && st.st_mode & libc::S_IFMT == libc::S_IFREG
            && st.st_nlink == 1
            && st.st_size > 0
            && let Ok(rfd) = read_only(fd.as_fd())
        {
            let ch =
                self.tracker
                    .before_truncate(FileKey::of(st), rfd.as_fd(), st.st_size as u64, 0);
            cut = self.stage_cut(j, file, ch);
        }
        let outcome: Cell<Option<CutOutcome>> = Cell::new(None);
        let op = if dir { Op::Rmdir } else { Op::Unlink };
        self.change_entries(
            ctx,
            &ms,
            op,
            path,
            |_| vkey,
            || {
                let flags = if dir {
                    nix::unistd::UnlinkatFlags::RemoveDir
                } else {
                    nix::unistd::UnlinkatFlags::NoRemoveDir
                };
                let res = pfd.and_then(|pfd| nix::unistd::unlinkat(&pfd, c.as_c_str(), flags));
                // The file is gone with every line: nothing can write them back.
                outcome.set(cut.map(|c| self.finish_cut(c, res.is_ok(), None)));
                if res.is_ok() {
                    if let Some(k) = vkey {
                        self.tracker.forget(k);
                    }
                    if let Some(i) = &vinode {
                        i.drop_name(p.id, name);
                        // Its last name: the kernel may still ask about it (an open
                        // file's fstat, a cwd), and its handle will not open.
                        if (dir || vst.is_some_and(|st| st.st_nlink <= 1))
                            && let Some(fd) = victim.take()
                        {
                            i.pin(fd);
                        }
                    }
                }
                res
            },
            |r, _| {
                r.replaced_ino = vst.as_ref().map(|s| s.st_ino);
                r.file = vref;
                r.before = vst.as_ref().map(attr::fingerprint);
                r.size_before = vst.as_ref().map(|s| s.st_size as u64);
                if let Some(o) = outcome.take() {
                    o.apply(r);
                }
            },
        )?;
        if let Some(k) = vkey.filter(|_| is_lock_name(name.as_bytes())) {
            self.lock_gone(ctx, k, self.child_path(p, name));
        }
        Ok(())
    }

    /// Lock file `key` (journal path `path`) left its name through the caller `ctx`
    /// (unlink, or replaced or moved by a rename): journal `lock-release` or
    /// `lock-steal` if it was a lock.
    pub(super) fn lock_gone(&self, ctx: &Ctx, key: FileKey, path: String) {
        let caller = self.ids.caller(ctx.pid, ctx.uid, ctx.gid);
        if let Some((op, info)) = self.locks.removed(key, &caller) {
            self.record_as(&caller, op, path, Some(key), |r| r.lock = Some(info));
        }
    }

    /// RENAME `name` in `p` to `newname` in `np` with renameat2 `flags`. The moved
    /// inode's name follows it; a replaced inode loses the name (it may live on under
    /// another link); replacing the last link of a transcript salvages it whole first
    /// and keeps only the lines the new file lacks (reported `removed`). Errors: EROFS
    /// on a read-only mount, else the backing errno.
    pub(super) fn do_rename(
        &self,
        ctx: &Ctx,
        p: &Inode,
        name: &OsStr,
        np: &Inode,
        newname: &OsStr,
        flags: u32,
    ) -> SysResult<()> {
        self.ro()?;
        let c = sys::cname(name)?;
        let nc = sys::cname(newname)?;
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        // A lock name on either side: no reap may interleave. The gate comes before
        // the inode guards (the order do_create takes them in).
        let gate = (is_lock_name(newname.as_bytes()) || is_lock_name(name.as_bytes()))
            .then(|| self.locks.gate());
        let stat_at = |dir: &Inode, n: &std::ffi::CStr| {
            dir.fd()
                .and_then(|d| sys::openat(d, n, libc::O_PATH | libc::O_NOFOLLOW, 0))
                .ok()
                .and_then(|fd| sys::fstat(fd.as_fd()).ok().map(|st| (fd, st)))
        };
        // What is at the destination: replaced (kept open until diffed, and pinned to
        // its inode if this removes its last name), or exchanged.
        let mut target = stat_at(np, &nc);
        let rst = target.as_ref().filter(|_| !exchange).map(|(_, st)| *st);
        // The replaced file's journal identity: its salvage, and the view the moved
        // file continues when both have one owner.
        let rref = target
            .as_ref()
            .filter(|_| !exchange)
            .and_then(|(fd, _)| sys::identity_at(fd.as_fd(), c"").ok())
            .map(record::file_ref);
        let moved = stat_at(p, &c).and_then(|(fd, st)| self.inodes.find_fd(fd.as_fd(), &st));
        let other = target
            .as_ref()
            .and_then(|(fd, st)| self.inodes.find_fd(fd.as_fd(), st));
        let to = self.child_path(np, newname);
        let path = self.child_path(p, name);
        let ms = Mutation::many(
            &moved
                .iter()
                .chain(other.iter())
                .map(Arc::as_ref)
                .collect::<Vec<_>>(),
        );
        // Replacing the last link of a transcript: read it and salvage it whole before
        // the rename; after it, keep only the lines the new file lacks.
        let old_lines = match (&target, &self.journal, rref) {
            (Some((fd, st)), Some(j), Some(rref))
                if !exchange
                    && st.st_mode & libc::S_IFMT == libc::S_IFREG
                    && st.st_nlink == 1
                    && transcript::is_transcript(newname.as_bytes()) =>
            {
                read_only(fd.as_fd()).ok().map(|rfd| {
                    let bytes = TranscriptTracker::read_all(rfd.as_fd());
                    let (start, end) = j.salvage(rref, &bytes);
                    (start, end, bytes)
                })
            }
            _ => None,
        };
        let moved_st: Cell<Option<libc::stat>> = Cell::new(None);
        let change: Cell<Option<transcript::Change>> = Cell::new(None);
        let res = self.change_entries(
            ctx,
            &ms,
            Op::Rename,
            path,
            // The lane: the renamer's declaration on the moved file (or, just
            // inherited, on the file it replaced).
            |_| moved_st.get().as_ref().map(FileKey::of),
            || {
                sys::renameat2(p.fd()?, &c, np.fd()?, &nc, flags)?;
                // Two links of one file: POSIX rename does nothing.
                let same = matches!((&moved, &other), (Some(m), Some(o)) if m.id == o.id);
                if same {
                    return Ok(());
                }
                if let Some(m) = &moved {
                    m.rename_name(p.id, name, np.id, newname);
                }
                if let Some(o) = &other {
                    if exchange {
                        o.rename_name(np.id, newname, p.id, name);
                    } else {
                        o.drop_name(np.id, newname);
                        // Its last name: pinned, as an unlinked inode (see do_unlink).
                        if let Some((fd, st)) = target.take()
                            && (sys::is_dir(&st) || st.st_nlink <= 1)
                        {
                            o.pin(fd);
                        }
                    }
                }
                if let Some((fd, st)) = stat_at(np, &nc) {
                    moved_st.set(Some(st));
                    if let Some((_, _, old)) = &old_lines
                        && let Ok(newfd) = read_only(fd.as_fd())
                    {
                        change.set(Some(self.tracker.diff_replaced(old, newfd.as_fd())));
                    }
                }
                if let Some(st) = &rst {
                    self.tracker.forget(FileKey::of(st));
                    // Only when the replaced file is gone (its last link): a file still
                    // reachable through another link keeps its declarations.
                    if st.st_nlink == 1
                        && let Some(m) = moved_st.get()
                    {
                        self.lanes.inherit(FileKey::of(st), FileKey::of(&m));
                    }
                }
                Ok(())
            },
            |r, res| {
                r.to = Some(to.clone());
                let fl: Vec<String> = [
                    (libc::RENAME_NOREPLACE, "RENAME_NOREPLACE"),
                    (libc::RENAME_EXCHANGE, "RENAME_EXCHANGE"),
                    (libc::RENAME_WHITEOUT, "RENAME_WHITEOUT"),
                ]
                .iter()
                .filter(|(bit, _)| flags & bit != 0)
                .map(|(_, n)| n.to_string())
                .collect();
                r.flags = Some(fl).filter(|v| !v.is_empty());
                if res.is_ok() {
                    r.replaced_ino = rst.as_ref().map(|s| s.st_ino);
                    // Only a file whose last link went: one still linked elsewhere
                    // lives on under its other name, with its own view.
                    r.replaced = rref.filter(|_| rst.as_ref().is_some_and(|s| s.st_nlink == 1));
                    // `before`: what was at `to` (the replaced file); `after`: what is
                    // there now.
                    r.before = rst.as_ref().map(attr::fingerprint);
                    r.after = moved_st.get().as_ref().map(attr::fingerprint);
                }
                // Read, not taken: the salvage rewind below needs it too.
                let ch = change.take();
                if let Some(ch) = &ch {
                    r.removed = Some(ch.removed.clone()).filter(|v| !v.is_empty());
                    r.entries = Some(ch.entries.clone()).filter(|v| !v.is_empty());
                }
                change.set(ch);
            },
        );
        drop(gate);
        if res.is_ok() && !exchange {
            if let Some(st) = &rst
                && is_lock_name(newname.as_bytes())
            {
                self.lock_gone(ctx, FileKey::of(st), to.clone());
            }
            if let Some(m) = &moved
                && is_lock_name(name.as_bytes())
            {
                self.lock_gone(ctx, m.key(), self.child_path(p, name));
            }
        }
        // Salvage keeps only what the rename removed (all of it if the diff failed).
        if let (Some((start, end, _)), Some(j), Some(rref)) = (&old_lines, &self.journal, rref) {
            match (&res, change.take()) {
                (Err(_), _) => {
                    j.salvage_rewind(rref, *start, *end, &[]);
                }
                (Ok(()), Some(ch)) => {
                    j.salvage_rewind(rref, *start, *end, &ch.salvage);
                }
                (Ok(()), None) => {}
            }
        }
        res
    }

    /// Put an open backing fd in the handle table; returns the fh.
    pub(super) fn insert_handle(
        &self,
        ctx: &Ctx,
        fd: std::os::fd::OwnedFd,
        inode: Arc<Inode>,
        flags: i32,
    ) -> (u64, bool) {
        let h = self.new_handle(ctx, fd, inode, flags);
        let direct = h.direct;
        (self.files.insert(h), direct)
    }

    /// A file handle for backing fd `fd` of `inode`, opened by `ctx` with `flags`
    /// (counts the inode's writers).
    pub(super) fn new_handle(
        &self,
        ctx: &Ctx,
        fd: std::os::fd::OwnedFd,
        inode: Arc<Inode>,
        flags: i32,
    ) -> FileHandle {
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        if writable {
            inode.writer_opened();
        }
        let direct = inode.is_file() && inode.open_direct(flags);
        let via = inode.name();
        FileHandle {
            fd,
            inode,
            via,
            flags,
            writable,
            direct,
            reads: Default::default(),
            read_bytes: Default::default(),
            writes: Default::default(),
            write_bytes: Default::default(),
            opener: self
                .journal
                .as_ref()
                .map(|_| self.ids.caller(ctx.pid, ctx.uid, ctx.gid)),
            last_writer: Default::default(),
        }
    }
}
