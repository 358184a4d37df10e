//! Adoption: node ids and file handles the kernel holds from an earlier daemon of the
//! same connection (a `--supervise` restart after a crash, see [`crate::resume`]).
//!
//! A node id on the root's device is the backing inode number ([`InodeTable::id_for`]),
//! so the inode is found again by a walk of the backing tree that notes each entry's
//! inode number and the directory it is in. The walk runs once and is reused while
//! it answers; an id it does not know rebuilds it (at most every 100 ms). Not found
//! again: an id of another device or a synthetic one (counted per daemon), and a file
//! unlinked while the kernel still holds it; the request gets ENOENT, or EBADF for a
//! handle, as for a file gone.
//!
//! A file handle is reopened on its inode with the open flags READ and WRITE carry
//! (the kernel's `file->f_flags`); handle calls without flags (FSYNC, FLUSH, LSEEK,
//! FALLOCATE) reopen it read-write.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::handle::{DirHandle, FileHandle};
use super::inode::{Inode, ROOT_ID, SYNTHETIC_BASE};
use super::{Ctx, SessionFs, backing_flags};
use crate::sys;

/// Deepest directory level the walk enters.
const MAX_DEPTH: usize = 32;
/// Most entries the walk notes (a bound on its memory, ~100 B each).
const MAX_ENTRIES: usize = 4_000_000;
/// Youngest index that is rebuilt for an id it does not know.
const REBUILD_AFTER: Duration = Duration::from_millis(100);

/// Where each backing inode number was seen: (directory's inode number, name).
#[derive(Debug, Default)]
pub(super) struct Index {
    built: Option<Instant>,
    root_ino: u64,
    at: HashMap<u64, (u64, OsString)>,
}

impl Index {
    /// Walk the tree under `root` (an fd of the backing root directory).
    fn build(root: std::os::fd::BorrowedFd<'_>) -> Option<Index> {
        let st = sys::fstat(root).ok()?;
        let mut ix = Index {
            built: Some(Instant::now()),
            root_ino: st.st_ino,
            at: HashMap::new(),
        };
        let dir = sys::openat(
            root,
            c".",
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            0,
        )
        .ok()?;
        ix.walk(dir, st.st_ino, st.st_dev, 0);
        Some(ix)
    }

    fn walk(&mut self, dir: std::os::fd::OwnedFd, dir_ino: u64, dev: u64, depth: usize) {
        let Ok(mut d) = nix::dir::Dir::from_fd(dir) else {
            return;
        };
        let mut subdirs = Vec::new();
        for e in d.iter().flatten() {
            let name = e.file_name().to_bytes();
            if name == b"." || name == b".." || self.at.len() >= MAX_ENTRIES {
                continue;
            }
            let os = std::ffi::OsStr::from_bytes(name).to_os_string();
            self.at.insert(e.ino(), (dir_ino, os));
            if matches!(e.file_type(), Some(nix::dir::Type::Directory) | None) {
                subdirs.push(e.file_name().to_owned());
            }
        }
        if depth >= MAX_DEPTH {
            return;
        }
        use std::os::fd::AsFd;
        let parent = d.as_fd();
        for name in subdirs {
            let Ok(fd) = sys::openat(
                parent,
                &name,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0,
            ) else {
                continue;
            };
            // Not into another file system (its numbers are not node ids).
            match sys::fstat(&fd) {
                Ok(st) if st.st_dev == dev => self.walk(fd, st.st_ino, dev, depth + 1),
                _ => {}
            }
        }
    }

    /// The chain of (inode number, name) from the root down to `ino`, or None.
    fn chain(&self, ino: u64) -> Option<Vec<(u64, OsString)>> {
        let mut out = Vec::new();
        let mut cur = ino;
        while cur != self.root_ino {
            let (parent, name) = self.at.get(&cur)?;
            out.push((cur, name.clone()));
            cur = *parent;
            if out.len() > MAX_DEPTH + 1 {
                return None;
            }
        }
        out.reverse();
        Some(out)
    }
}

impl SessionFs {
    /// The inode of node id `id`, held by the kernel from the daemon before us: found
    /// in the backing tree and inserted with its directories (module doc). None when
    /// it is not found (ENOENT for the caller).
    pub(super) fn adopt_inode(&self, id: u64) -> Option<Arc<Inode>> {
        if !(ROOT_ID + 1..SYNTHETIC_BASE).contains(&id) {
            return None;
        }
        let chain = {
            let mut ix = self.adopted.lock();
            let mut chain = ix.as_ref().and_then(|i| i.chain(id));
            let stale = ix
                .as_ref()
                .and_then(|i| i.built)
                .is_none_or(|t| t.elapsed() >= REBUILD_AFTER);
            if chain.is_none() && stale {
                let root = self.inodes.root();
                let fd = root.fd().ok()?;
                *ix = Index::build(std::os::fd::AsFd::as_fd(&fd));
                chain = ix.as_ref().and_then(|i| i.chain(id));
            }
            chain?
        };
        let mut parent = ROOT_ID;
        for (ino, name) in chain {
            if let Some(known) = self.inodes.get(ino) {
                parent = known.id;
                continue;
            }
            let dir = self.inodes.get(parent)?;
            let dfd = dir.fd().ok()?;
            let cname = sys::cname(&name).ok()?;
            let fd = sys::openat(
                &dfd,
                &cname,
                libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0,
            )
            .ok()?;
            let st = sys::fstat(&fd).ok()?;
            if st.st_ino != ino || self.inodes.id_for(st.st_dev, st.st_ino) != ino {
                return None; // renamed or replaced since the walk
            }
            let inode = self.inodes.adopt(fd, &st, parent, &name);
            tracing::debug!(id = ino, path = %self.inodes.path_of(&inode), "adopted a node id of the earlier daemon");
            parent = ino;
        }
        self.inodes.get(id)
    }

    /// The file handle `fh` of node `ino`: ours, or (after a restart) one the kernel
    /// holds from the daemon before us, reopened with `flags` (None: read-write).
    pub(super) fn file(&self, fh: u64, ino: u64, flags: Option<i32>) -> Option<Arc<FileHandle>> {
        if let Some(h) = self.files.get(fh) {
            return Some(h);
        }
        if !self.cfg.resumed {
            return None;
        }
        let inode = self.inode(ino).ok()?;
        let flags = flags.unwrap_or(libc::O_RDWR) & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC);
        let fd = inode
            .open(backing_flags(flags))
            .or_else(|_| inode.open(libc::O_RDONLY))
            .ok()?;
        // The opener is unknown (the kernel's requests after the restart carry the
        // caller of each READ/WRITE; records of the handle name the writer).
        let ctx = Ctx {
            pid: 0,
            uid: 0,
            gid: 0,
        };
        let h = self.new_handle(&ctx, fd, inode, flags);
        tracing::debug!(fh, ino, "adopted a file handle of the earlier daemon");
        Some(self.files.insert_at(fh, h))
    }

    /// The directory handle `fh` of node `ino`, ours or reopened (see [`Self::file`]).
    pub(super) fn dir(&self, fh: u64, ino: u64) -> Option<Arc<DirHandle>> {
        if let Some(h) = self.dirs.get(fh) {
            return Some(h);
        }
        if !self.cfg.resumed {
            return None;
        }
        let inode = self.inode(ino).ok()?;
        let h = DirHandle::open(inode).ok()?;
        Some(self.dirs.insert_at(fh, h))
    }

    /// Whether the bytes of a re-sent append are already in the file: at `offset`
    /// (the kernel's end of file when it sent the WRITE) or at the end (the backing
    /// O_APPEND put them there). A line of the transcript repeated byte for byte at
    /// exactly that place is the same write.
    pub(super) fn write_landed(&self, h: &FileHandle, offset: u64, data: &[u8]) -> bool {
        if data.is_empty() {
            return false;
        }
        let Ok(fd) = h.inode.open(libc::O_RDONLY) else {
            return false;
        };
        let Ok(st) = sys::fstat(&fd) else {
            return false;
        };
        let (size, len) = (st.st_size as u64, data.len() as u64);
        let at = |off: u64| {
            let mut buf = vec![0u8; data.len()];
            matches!(sys::pread(std::os::fd::AsFd::as_fd(&fd), &mut buf, off), Ok(n) if n == data.len())
                && buf == data
        };
        (offset + len <= size && at(offset)) || (size >= len && at(size - len))
    }
}
