//! Open files: OPEN, RELEASE, FSYNC, LSEEK on backing handles, and the same calls on
//! the handles of virtual files (`.journal`, `<file>.journal`, `<file>.salvage`),
//! which behave as read-only regular files: their fh is their node id (≥ 2^63, never
//! a backing handle number).

use std::os::fd::AsFd;

use fuser::FopenFlags;
use nix::errno::Errno;

use super::inode::{Inode, VIRTUAL_BASE};
use super::{Ctx, FMODE_EXEC, SessionFs, backing_flags, record};
use crate::journal::record::Op;
use crate::sys::{self, SysResult};

/// Is `fh` the handle of a virtual file?
pub(super) fn is_virtual(fh: u64) -> bool {
    fh >= VIRTUAL_BASE
}

/// The open flags for the reply to an OPEN or CREATE: `FOPEN_DIRECT_IO` if `direct`
/// (see [`super::inode::Inode::open_direct`]), `FOPEN_KEEP_CACHE` if `keep` (see
/// [`SessionFs::keep_cache`]).
///
/// Why direct I/O for write-only handles: through the page cache the kernel ends a
/// WRITE at a partly written page that is not uptodate (`fuse_fill_write_pages`), so
/// an append crossing a page boundary came as two WRITEs, and a daemon killed between
/// them left half a line in the backing file. A direct write is one WRITE up to the
/// request limit (1 MiB here: see the README, "One write(2), one WRITE"). A
/// write-only descriptor cannot read or mmap, so it loses no caching of its own; the
/// kernel drops the written range from the page cache before the WRITE.
pub(super) fn reply_flags(direct: bool, keep: bool) -> FopenFlags {
    let mut of = FopenFlags::empty();
    if keep {
        of |= FopenFlags::FOPEN_KEEP_CACHE;
    }
    if direct {
        of |= FopenFlags::FOPEN_DIRECT_IO;
    }
    of
}

impl SessionFs {
    /// OPEN `inode` with the caller's `flags`: a backing fd in the handle table, an
    /// `open` record, and whether the kernel may keep its page cache. Returns (fh,
    /// open flags for the reply). Errors: EROFS for a write open on a read-only
    /// mount, else the backing errno.
    pub(super) fn do_open(
        &self,
        ctx: &Ctx,
        inode: std::sync::Arc<Inode>,
        flags: i32,
    ) -> SysResult<(u64, FopenFlags)> {
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            self.ro()?;
        }
        self.inodes.touch(&inode);
        let _order = inode.ordered();
        // No FUSE_ATOMIC_O_TRUNC: the kernel strips O_TRUNC from OPEN and truncates
        // with a SETATTR once its own checks (ETXTBSY) have passed. Stripped here too,
        // so that no OPEN can ever truncate the backing file.
        let seen = inode.changes();
        let fd = match inode.open(backing_flags(flags) & !libc::O_TRUNC) {
            Ok(fd) => fd,
            Err(e) => {
                self.record_open(ctx, &inode, flags, None, &Err(e));
                return Err(e);
            }
        };
        let st = sys::fstat(fd.as_fd()).ok();
        if let Some(st) = &st {
            self.check_external(&inode, st, 0, seen);
        }
        let keep = self.keep_cache(&inode, st.as_ref());
        self.record_open(ctx, &inode, flags, st.as_ref(), &Ok(()));
        let (fh, direct) = self.insert_handle(ctx, fd, inode.clone(), flags);
        self.locks.handle_opened(inode.key());
        // After this open's own records: the next request of the process comes from
        // the new image, and refreshes comm/exe.
        if flags & FMODE_EXEC != 0 {
            self.ids.note_exec(ctx.pid);
        }
        Ok((fh, reply_flags(direct, keep)))
    }

    /// RELEASE of file handle `fh`: the last writable handle ends a rewrite in
    /// progress; a `release` record sums the handle up. Virtual and unknown handles
    /// release nothing.
    pub(super) fn do_release(&self, ctx: &Ctx, fh: u64) {
        if is_virtual(fh) {
            return;
        }
        if let Some(h) = self.files.remove(fh) {
            let _order = h.inode.ordered();
            if h.inode.is_file() {
                h.inode.close_mode(h.flags, h.direct);
            }
            let mut ended = None;
            let mut identical = false;
            if h.writable && h.inode.writer_released() {
                ended = self.end_rewrite(&h.inode);
                identical = ended
                    .as_ref()
                    .is_some_and(|(removed, _)| removed.is_empty())
                    && self.rewrite_identical(&h.inode);
                if ended.is_none() {
                    self.origins.lock().remove(&h.inode.key());
                }
            }
            self.record_release(ctx, &h, ended, identical);
            // The holder of a lock may have died (its fds close as it exits).
            self.locks.handle_released(h.inode.key());
        }
    }

    /// FSYNC (or fdatasync) of file handle `fh`; journaled for writable handles. A
    /// virtual file has nothing to sync: success, as for a read-only file. Errors:
    /// EBADF for an unknown handle, else the backing errno.
    pub(super) fn do_fsync(&self, ctx: &Ctx, ino: u64, fh: u64, datasync: bool) -> SysResult<()> {
        if is_virtual(fh) {
            return Ok(());
        }
        let h = self.file(fh, ino, None).ok_or(Errno::EBADF)?;
        let _order = h.inode.ordered();
        let res = if datasync {
            nix::unistd::fdatasync(h.fd())
        } else {
            nix::unistd::fsync(h.fd())
        };
        if h.writable {
            let path = self.handle_path(&h);
            self.record(ctx, Op::Fsync, path, Some(h.inode.key()), |r| {
                r.result = record::result(&res);
                if datasync {
                    r.flags = Some(vec!["datasync".into()]);
                }
            });
        }
        res
    }

    /// LSEEK on file handle `fh` (the kernel sends SEEK_DATA and SEEK_HOLE). A virtual
    /// file is one data extent: SEEK_DATA returns `offset` and SEEK_HOLE its size,
    /// ENXIO at or past the end. Errors: EBADF for an unknown handle, EINVAL for a
    /// negative offset or unknown whence, else the backing errno.
    pub(super) fn do_lseek(&self, ino: u64, fh: u64, offset: i64, whence: i32) -> SysResult<i64> {
        if !is_virtual(fh) {
            let h = self
                .file(fh, ino, Some(libc::O_RDONLY))
                .ok_or(Errno::EBADF)?;
            return sys::lseek(h.fd(), offset, whence);
        }
        let size = self.virtual_attr(ino).ok_or(Errno::EBADF)?.size as i64;
        match whence {
            _ if offset < 0 => Err(Errno::EINVAL),
            libc::SEEK_SET => Ok(offset),
            libc::SEEK_END => Ok(size.saturating_add(offset)),
            libc::SEEK_DATA if offset < size => Ok(offset),
            libc::SEEK_HOLE if offset < size => Ok(size),
            libc::SEEK_DATA | libc::SEEK_HOLE => Err(Errno::ENXIO),
            _ => Err(Errno::EINVAL),
        }
    }
}
