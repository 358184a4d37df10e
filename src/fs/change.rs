//! The recorded-change step, and the changes of an existing inode that go through it.
//!
//! Every change of ours to the backing runs under a [`Mutation`] guard (journal-order
//! lock and busy mark together) and through [`SessionFs::change`] (one inode) or
//! [`SessionFs::change_entries`] (directory entries: unlink, rename). The step does,
//! in this order and always all of it: the before-stat (a difference from what we
//! last caused is journaled `external` first), the backing call, the after-stat,
//! `mark_known` (the new state is ours), the fingerprints and result, the record. A
//! handler supplies only its call and its op-specific record keys, so it cannot forget
//! a step and have its own change logged as somebody else's.

use std::cell::Cell;
use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;

use fuser::TimeOrNow;
use nix::errno::Errno;

use super::cut::CutOutcome;
use super::handle::FileHandle;
use super::inode::{Inode, Mutation};
use super::{Ctx, SEQ_XATTR, SessionFs, record, to_timespec};
use crate::identity::Caller;
use crate::journal::record::{Class, Op, Record};
use crate::lanes::LANE_XATTR;
use crate::sys::{self, FileKey, SysResult};

/// What the recorded-change step saw around one backing call; handed to the
/// handler's record filler.
#[derive(Debug)]
pub(super) struct Changed<'a, T> {
    /// Backing stat before the call (`None` if it failed).
    pub before: Option<libc::stat>,
    /// Backing stat after the call.
    pub after: Option<libc::stat>,
    /// The call's result.
    pub res: &'a SysResult<T>,
    /// Who made the change (resolved while the caller is certainly alive).
    pub caller: &'a Caller,
}

/// The attributes one SETATTR changes; each part is applied and journaled on its own,
/// in this order (mode, owner, size, times), stopping at the first error.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct SetAttr {
    /// New permission bits (`chmod`).
    pub mode: Option<u32>,
    /// New owner (`chown`); `None` leaves it.
    pub uid: Option<u32>,
    /// New group (`chown`); `None` leaves it.
    pub gid: Option<u32>,
    /// New size in bytes (`truncate`).
    pub size: Option<u64>,
    /// New access time (`utimens`).
    pub atime: Option<TimeOrNow>,
    /// New modification time (`utimens`).
    pub mtime: Option<TimeOrNow>,
}

impl SessionFs {
    /// The recorded-change step for one inode, under its guard `m` (see the module
    /// doc). `h`: the handle the change came through, whose name the record uses.
    /// `noop` is asked with the before-stat whether the change would change nothing;
    /// if so (and `--strict-stat` is off) the backing is not touched, no ctime moves,
    /// the result is success (`T::default()`) and the record's class is `noop`.
    /// Otherwise `call` gets the before-stat and does the change on the backing.
    /// `fill` adds the op's own keys to the record (fingerprints, result, class and
    /// `fence_moved` are already set) and runs only with a journal. Returns `call`'s
    /// result.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn change<T: Default>(
        &self,
        ctx: &Ctx,
        m: &Mutation<'_>,
        h: Option<&FileHandle>,
        op: Op,
        noop: impl FnOnce(&libc::stat) -> bool,
        call: impl FnOnce(Option<&libc::stat>) -> SysResult<T>,
        fill: impl FnOnce(&mut Record, &Changed<'_, T>),
    ) -> SysResult<T> {
        let inode = m.inode();
        let seen = inode.changes();
        // Held for the whole change: `call`'s own uses of the inode's fd find it open.
        let fd = inode.fd();
        let before = fd.as_ref().ok().and_then(|fd| sys::fstat(fd).ok());
        if let Some(st) = &before {
            // Only our own guard is in flight: a difference now was made around us.
            self.check_external(inode, st, 1, seen);
        }
        let skip = !self.cfg.strict_stat && before.as_ref().is_some_and(noop);
        if !skip && !matches!(op, Op::Write | Op::Truncate) {
            // Any other change during an in-place rewrite: the rewrite no longer ends
            // "as it began", whatever the bytes.
            self.origins.lock().remove(&inode.key());
        }
        // The fence as the mount reported it before the change.
        let shown_before = before.as_ref().map(|st| self.reported_fp(st));
        let (res, after) = if skip {
            (Ok(T::default()), before)
        } else {
            let res = call(before.as_ref());
            let after = fd.as_ref().ok().and_then(|fd| sys::fstat(fd).ok());
            if let Some(st) = &after {
                self.mark_known(inode, st);
            }
            // A real change: the mount reports the backing times again.
            self.shown.forget(inode.key());
            (res, after)
        };
        let shown_after = after.as_ref().map(|st| self.reported_fp(st));
        if self.journal.is_some() {
            let caller = self.ids.caller(ctx.pid, ctx.uid, ctx.gid);
            let path = match h {
                Some(h) => self.handle_path(h),
                None => self.inodes.path_of(inode),
            };
            let changed = Changed {
                before,
                after,
                res: &res,
                caller: &caller,
            };
            self.record_as(&caller, op, path, Some(inode.key()), |r| {
                record::fingerprints(r, changed.before.as_ref(), changed.after.as_ref());
                r.result = record::result(changed.res);
                r.fence_moved = Some(shown_before != shown_after);
                if skip {
                    r.class = Some(Class::Noop);
                }
                fill(r, &changed);
            });
        }
        res
    }

    /// The recorded-change step for a change of directory entries (unlink, rename):
    /// under the guards `ms` of every inode of the table the change touches (the
    /// victim; the moved and the replaced or exchanged file), `call` runs, then each
    /// guarded inode's new stat is remembered as ours (its nlink and ctime moved: not
    /// `external`, even when it lives on through another link), and `op` is journaled
    /// on `path`, its lane from `file`. `fill` adds the op's keys (result is set).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn change_entries<T>(
        &self,
        ctx: &Ctx,
        ms: &[Mutation<'_>],
        op: Op,
        path: String,
        file: impl FnOnce(&SysResult<T>) -> Option<FileKey>,
        call: impl FnOnce() -> SysResult<T>,
        fill: impl FnOnce(&mut Record, &SysResult<T>),
    ) -> SysResult<T> {
        for m in ms {
            let inode = m.inode();
            let seen = inode.changes();
            if let Ok(st) = inode.fd().and_then(sys::fstat) {
                // Only our own guard is in flight: a difference now was made around us.
                self.check_external(inode, &st, 1, seen);
            }
        }
        let res = call();
        for m in ms {
            // A victim removed through us was pinned by `call`: its fd still answers.
            if let Ok(st) = m.inode().fd().and_then(sys::fstat) {
                self.mark_known(m.inode(), &st);
            }
            self.shown.forget(m.inode().key());
            self.origins.lock().remove(&m.inode().key());
        }
        let file = file(&res);
        self.record(ctx, op, path, file, |r| {
            r.result = record::result(&res);
            r.fence_moved = Some(true);
            fill(r, &res);
        });
        res
    }

    /// SETATTR: each requested part through the recorded-change step, under one
    /// guard. Returns the attributes after the change. Errors: the first failing
    /// part's errno (the parts before it stay applied, as with separate calls).
    pub(super) fn do_setattr(
        &self,
        ctx: &Ctx,
        inode: &Inode,
        h: Option<&FileHandle>,
        set: SetAttr,
    ) -> SysResult<fuser::FileAttr> {
        self.ro()?;
        let m = inode.mutate();
        if let Some(mode) = set.mode {
            self.set_mode(ctx, &m, h, mode)?;
        }
        if set.uid.is_some() || set.gid.is_some() {
            self.set_owner(ctx, &m, h, set.uid, set.gid)?;
        }
        if let Some(size) = set.size {
            self.set_size(ctx, &m, h, size)?;
        }
        if set.atime.is_some() || set.mtime.is_some() {
            self.set_times(ctx, &m, h, set.atime, set.mtime)?;
        }
        Ok(self.stat_attr(inode)?.1)
    }

    /// chmod (EOPNOTSUPP on a symlink, as Linux answers `fchmodat` on one).
    fn set_mode(
        &self,
        ctx: &Ctx,
        m: &Mutation<'_>,
        h: Option<&FileHandle>,
        mode: u32,
    ) -> SysResult<()> {
        let inode = m.inode();
        self.change(
            ctx,
            m,
            h,
            Op::Chmod,
            |st| st.st_mode & 0o7777 == mode & 0o7777 && inode.kind != libc::S_IFLNK,
            |_| {
                if inode.kind == libc::S_IFLNK {
                    return Err(Errno::EOPNOTSUPP);
                }
                chmod(inode, mode)
            },
            |r, _| r.mode = Some(mode & 0o7777),
        )
    }

    /// chown; `None` leaves the owner or group as it is.
    fn set_owner(
        &self,
        ctx: &Ctx,
        m: &Mutation<'_>,
        h: Option<&FileHandle>,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> SysResult<()> {
        let inode = m.inode();
        self.change(
            ctx,
            m,
            h,
            Op::Chown,
            |st| same_owner(inode, st, uid, gid),
            |_| {
                nix::unistd::fchownat(
                    inode.fd()?,
                    "",
                    uid.map(nix::unistd::Uid::from_raw),
                    gid.map(nix::unistd::Gid::from_raw),
                    nix::fcntl::AtFlags::AT_EMPTY_PATH | nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                )
            },
            |r, _| {
                let id = |v: Option<u32>| v.map_or(-1, i64::from);
                r.to = Some(format!("{}:{}", id(uid), id(gid)));
            },
        )
    }

    /// truncate (through the handle when the kernel names one). Lines of a transcript
    /// it cuts are salvaged first; while a writable handle is open they are held for
    /// the rewrite it may be (an `O_RDONLY|O_TRUNC` open's truncate comes with a
    /// read-only handle, which never ends a rewrite).
    fn set_size(
        &self,
        ctx: &Ctx,
        m: &Mutation<'_>,
        h: Option<&FileHandle>,
        size: u64,
    ) -> SysResult<()> {
        let inode = m.inode();
        let outcome: Cell<Option<CutOutcome>> = Cell::new(None);
        self.change(
            ctx,
            m,
            h,
            Op::Truncate,
            |_| false,
            |before| {
                let transcript = match h {
                    Some(h) => self.handle_is_transcript(h),
                    None => self.is_transcript(inode),
                };
                let hold = h.is_some_and(|h| h.writable) || inode.writers() > 0;
                let cuts = before.filter(|st| transcript && (size as i64) < st.st_size);
                if let Some(st) = cuts.filter(|_| hold) {
                    self.note_rewrite_origin(inode, st);
                }
                let cut = cuts.and_then(|st| self.prepare_cut(inode, st.st_size as u64, size));
                let res = match h {
                    Some(h) => nix::unistd::ftruncate(h.fd(), size as i64),
                    None => inode.fd().and_then(|fd| {
                        let p = sys::proc_fd_path(fd.as_raw_fd());
                        nix::unistd::truncate(p.as_c_str(), size as i64)
                    }),
                };
                // HANDLE_KILLPRIV_V2: an unprivileged truncate clears suid/sgid, as the
                // kernel would have (our root daemon has CAP_FSETID, the caller may not).
                if res.is_ok() && self.lacks_fsetid(ctx) {
                    kill_suid(inode);
                }
                outcome
                    .set(cut.map(|c| self.finish_cut(c, res.is_ok(), hold.then(|| inode.key()))));
                res
            },
            |r, _| {
                r.len = Some(size);
                if let Some(o) = outcome.take() {
                    o.apply(r);
                }
            },
        )
    }

    /// utimens (through the handle when the kernel names one).
    fn set_times(
        &self,
        ctx: &Ctx,
        m: &Mutation<'_>,
        h: Option<&FileHandle>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
    ) -> SysResult<()> {
        let inode = m.inode();
        let times = [to_timespec(atime), to_timespec(mtime)];
        self.change(
            ctx,
            m,
            h,
            Op::Utimens,
            |_| false,
            |_| match h {
                Some(h) => nix::sys::stat::futimens(
                    h.fd(),
                    &nix::sys::time::TimeSpec::from(times[0]),
                    &nix::sys::time::TimeSpec::from(times[1]),
                ),
                None => sys::utimens(inode.fd()?, &times),
            },
            |_, _| {},
        )
    }

    /// SETXATTR. `user.sessionfs.lane` is virtual (a lane declaration, never stored:
    /// no ctime change; EINVAL if not UTF-8, empty clears it); `user.sessionfs.seq` is
    /// read-only (EACCES). Others pass through: EROFS on a read-only mount, else the
    /// backing errno.
    pub(super) fn do_setxattr(
        &self,
        ctx: &Ctx,
        inode: &Inode,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> SysResult<()> {
        if name.as_bytes() == LANE_XATTR.as_bytes() {
            let lane = std::str::from_utf8(value).map_err(|_| Errno::EINVAL)?;
            let _order = inode.ordered();
            let caller = self.ids.caller(ctx.pid, ctx.uid, ctx.gid);
            self.lanes
                .declare(&caller, inode.key(), Some(lane).filter(|l| !l.is_empty()));
            return Ok(());
        }
        if name.as_bytes() == SEQ_XATTR.as_bytes() {
            return Err(Errno::EACCES);
        }
        self.ro()?;
        let c = sys::cname(name)?;
        let m = inode.mutate();
        self.change(
            ctx,
            &m,
            None,
            Op::Setxattr,
            |_| flags & libc::XATTR_CREATE == 0 && xattr_is(inode, &c, value),
            |_| sys::setxattr(inode.fd()?, &c, value, flags),
            |r, _| {
                r.name = Some(crate::names::encode_os(name));
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
            },
        )
    }

    /// REMOVEXATTR. `user.sessionfs.lane` clears the caller's lane declaration; the
    /// rest passes through (EROFS on a read-only mount, else the backing errno).
    pub(super) fn do_removexattr(&self, ctx: &Ctx, inode: &Inode, name: &OsStr) -> SysResult<()> {
        if name.as_bytes() == LANE_XATTR.as_bytes() {
            let _order = inode.ordered();
            let caller = self.ids.caller(ctx.pid, ctx.uid, ctx.gid);
            self.lanes.declare(&caller, inode.key(), None);
            return Ok(());
        }
        self.ro()?;
        let c = sys::cname(name)?;
        let m = inode.mutate();
        self.change(
            ctx,
            &m,
            None,
            Op::Removexattr,
            |_| false,
            |_| sys::removexattr(inode.fd()?, &c),
            |r, _| r.name = Some(crate::names::encode_os(name)),
        )
    }

    /// LINK `inode` as `newname` in `np`. The inode is known by the new name too (its
    /// records keep the name it was reached by until a lookup reaches it by the new
    /// one) and gets one more lookup. Returns its attributes.
    pub(super) fn do_link(
        &self,
        ctx: &Ctx,
        inode: &Inode,
        np: &Inode,
        newname: &OsStr,
    ) -> SysResult<fuser::FileAttr> {
        self.ro()?;
        let c = sys::cname(newname)?;
        let to = self.child_path(np, newname);
        let m = inode.mutate();
        self.change(
            ctx,
            &m,
            None,
            Op::Link,
            |_| false,
            |_| {
                let fd = inode.fd()?;
                let src = sys::proc_fd_path(fd.as_raw_fd());
                nix::unistd::linkat(
                    nix::fcntl::AT_FDCWD,
                    src.as_c_str(),
                    np.fd()?,
                    c.as_c_str(),
                    nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
                )
            },
            |r, _| r.to = Some(to),
        )?;
        inode.add_name(np.id, newname);
        self.reach_names_again(inode.other_names(np.id, newname));
        let (_, a) = self.stat_attr(inode)?;
        self.inodes.add_lookup(inode);
        Ok(a)
    }

    /// FALLOCATE through handle `h`. Punching, zeroing or collapsing a range of a
    /// transcript destroys the lines it touches: they are salvaged first and reported
    /// removed; any fallocate drops the line index (lines may have moved).
    pub(super) fn do_fallocate(
        &self,
        ctx: &Ctx,
        h: &FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> SysResult<()> {
        self.ro()?;
        let inode = &*h.inode;
        let transcript = self.handle_is_transcript(h);
        let destroys = mode
            & (libc::FALLOC_FL_PUNCH_HOLE
                | libc::FALLOC_FL_ZERO_RANGE
                | libc::FALLOC_FL_COLLAPSE_RANGE)
            != 0;
        let outcome: Cell<Option<CutOutcome>> = Cell::new(None);
        let m = inode.mutate();
        self.change(
            ctx,
            &m,
            Some(h),
            Op::Fallocate,
            |_| false,
            |before| {
                let mut cut = None;
                if transcript
                    && destroys
                    && let Some(st) = before
                    && let Ok(rfd) = inode.read_fd()
                    && let Some(j) = &self.journal
                {
                    let size = st.st_size as u64;
                    let end = offset.saturating_add(length).min(size);
                    if offset < end {
                        let ch = self.tracker.before_write(
                            inode.key(),
                            std::os::fd::AsFd::as_fd(&*rfd),
                            offset,
                            end - offset,
                            size,
                        );
                        cut = self.stage_cut(j, self.file_ref_or_root(&h.inode), ch);
                    }
                }
                let res = sys::fallocate(h.fd(), mode, offset, length);
                outcome.set(cut.map(|c| self.finish_cut(c, res.is_ok(), None)));
                if transcript {
                    self.tracker.forget(inode.key());
                }
                res
            },
            |r, _| {
                r.offset = Some(offset);
                r.len = Some(length);
                r.mode = Some(mode as u32);
                if let Some(o) = outcome.take() {
                    o.apply(r);
                }
            },
        )
    }
}

/// Would chown to (`uid`, `gid`) (`None`: unchanged) change nothing? Only when both
/// are the current ones and the chown would not clear anything: the kernel clears
/// suid, group-executable sgid and file capabilities on every chown of a
/// non-directory, even to the same owner.
fn same_owner(inode: &Inode, st: &libc::stat, uid: Option<u32>, gid: Option<u32>) -> bool {
    let mode = st.st_mode;
    let kills = mode & libc::S_IFMT != libc::S_IFDIR
        && (mode & libc::S_ISUID != 0
            || mode & (libc::S_ISGID | libc::S_IXGRP) == libc::S_ISGID | libc::S_IXGRP
            || inode
                .fd()
                .and_then(|fd| sys::getxattr(fd, c"security.capability", &mut []))
                .is_ok());
    uid.is_none_or(|u| u == st.st_uid) && gid.is_none_or(|g| g == st.st_gid) && !kills
}

/// Does the inode's extended attribute `name` hold exactly `value`?
fn xattr_is(inode: &Inode, name: &std::ffi::CStr, value: &[u8]) -> bool {
    // One byte more than `value`: a longer stored value does not fit and fails ERANGE.
    let mut buf = vec![0u8; value.len() + 1];
    matches!(inode.fd().and_then(|fd| sys::getxattr(fd, name, &mut buf)), Ok(n) if buf[..n] == *value)
}

/// `chmod` of the object behind the inode's O_PATH fd (through its magic link).
fn chmod(inode: &Inode, mode: u32) -> SysResult<()> {
    let fd = inode.fd()?;
    let p = sys::proc_fd_path(fd.as_raw_fd());
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        p.as_c_str(),
        nix::sys::stat::Mode::from_bits_truncate(mode),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
}

/// Clear S_ISUID (and S_ISGID when group-executable), as the VFS does on write or
/// truncate by a caller without CAP_FSETID. Only called inside a change the kernel
/// asked for it on; part of that change (same guard, same record).
pub(super) fn kill_suid(inode: &Inode) {
    if let Ok(st) = inode.fd().and_then(sys::fstat) {
        let old = st.st_mode & 0o7777;
        let mut mode = old & !libc::S_ISUID;
        if mode & libc::S_IXGRP != 0 {
            mode &= !libc::S_ISGID;
        }
        if mode != old {
            let _ = chmod(inode, mode);
        }
    }
}
