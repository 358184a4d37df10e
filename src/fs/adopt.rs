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

/// How [`SessionFs::adopt_chain`] ended.
enum Walked {
    Done,
    /// The tree changed since the walk.
    Stale,
    /// The object at that number is not the one the kernel means.
    Refused,
}

/// Visit every entry of the tree under the directory `root`, depth first, at most
/// [`MAX_DEPTH`] levels down, never into another file system (its inode numbers are not
/// node ids): `visit(directory fd, directory's inode number, directory's path from the
/// root (escaped names joined by `/`, empty for the root), entry)`.
fn walk_tree(
    root: std::os::fd::BorrowedFd<'_>,
    visit: &mut dyn FnMut(std::os::fd::BorrowedFd<'_>, u64, &str, &nix::dir::Entry),
) {
    let Ok(st) = sys::fstat(root) else {
        return;
    };
    let Ok(dir) = sys::openat(
        root,
        c".",
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        0,
    ) else {
        return;
    };
    walk_dir(dir, st.st_ino, st.st_dev, "", 0, visit);
}

fn walk_dir(
    dir: std::os::fd::OwnedFd,
    ino: u64,
    dev: u64,
    path: &str,
    depth: usize,
    visit: &mut dyn FnMut(std::os::fd::BorrowedFd<'_>, u64, &str, &nix::dir::Entry),
) {
    use std::os::fd::AsFd;
    let Ok(mut d) = nix::dir::Dir::from_fd(dir) else {
        return;
    };
    let entries: Vec<nix::dir::Entry> = d
        .iter()
        .flatten()
        .filter(|e| !matches!(e.file_name().to_bytes(), b"." | b".."))
        .collect();
    let fd = d.as_fd();
    let mut subdirs = Vec::new();
    for e in &entries {
        visit(fd, ino, path, e);
        if matches!(e.file_type(), Some(nix::dir::Type::Directory) | None) {
            subdirs.push(e.file_name());
        }
    }
    if depth >= MAX_DEPTH {
        return;
    }
    for name in subdirs {
        let Ok(sub) = sys::openat(
            fd,
            name,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0,
        ) else {
            continue;
        };
        if let Ok(st) = sys::fstat(&sub)
            && st.st_dev == dev
        {
            let e = crate::names::encode(name.to_bytes());
            let sub_path = if path.is_empty() {
                e
            } else {
                format!("{path}/{e}")
            };
            walk_dir(sub, st.st_ino, dev, &sub_path, depth + 1, visit);
        }
    }
}

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
        walk_tree(root, &mut |_, dir_ino, _, e| {
            if ix.at.len() < MAX_ENTRIES {
                let name = std::ffi::OsStr::from_bytes(e.file_name().to_bytes());
                ix.at.insert(e.ino(), (dir_ino, name.to_os_string()));
            }
        });
        Some(ix)
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
        // A chain from an older walk may be stale (a rename since): walk again once.
        for fresh in [false, true] {
            let Some(chain) = self.chain_of(id, fresh) else {
                continue;
            };
            match self.adopt_chain(chain) {
                Walked::Done => return self.inodes.get(id),
                Walked::Refused => return None,
                Walked::Stale => {}
            }
        }
        None
    }

    /// The chain to `id` from the walk index: the one there is unless `fresh` (walk
    /// again) or it does not know `id` (walk again if the index is 100 ms old).
    fn chain_of(&self, id: u64, fresh: bool) -> Option<Vec<(u64, OsString)>> {
        let mut ix = self.adopted.lock();
        let mut chain = if fresh {
            None
        } else {
            ix.as_ref().and_then(|i| i.chain(id))
        };
        let old = ix
            .as_ref()
            .and_then(|i| i.built)
            .is_none_or(|t| t.elapsed() >= REBUILD_AFTER);
        if chain.is_none() && (fresh || old) {
            let root = self.inodes.root();
            let fd = root.fd().ok()?;
            *ix = Index::build(std::os::fd::AsFd::as_fd(&fd));
            chain = ix.as_ref().and_then(|i| i.chain(id));
        }
        chain
    }

    /// Insert the inodes of `chain` the table lacks, top down.
    fn adopt_chain(&self, chain: Vec<(u64, OsString)>) -> Walked {
        let mut parent = ROOT_ID;
        for (ino, name) in chain {
            if let Some(known) = self.inodes.get(ino) {
                parent = known.id;
                continue;
            }
            let Some(dir) = self.inodes.get(parent) else {
                return Walked::Stale;
            };
            let (Ok(dfd), Ok(cname)) = (dir.fd(), sys::cname(&name)) else {
                return Walked::Stale;
            };
            let Ok(fd) = sys::openat(
                &dfd,
                &cname,
                libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0,
            ) else {
                return Walked::Stale;
            };
            let Ok(st) = sys::fstat(&fd) else {
                return Walked::Stale;
            };
            if st.st_ino != ino || self.inodes.id_for(st.st_dev, st.st_ino) != ino {
                return Walked::Stale; // renamed or replaced since the walk
            }
            // Born after the crash: a new file that got a freed inode number (the
            // old one was unlinked while open, and its last link went with the dead
            // daemon's fds). The kernel's node id names the old one: not this.
            if let Some(since) = self.cfg.resumed_since_ns
                && let Ok((_, birth, _)) = sys::identity_at(std::os::fd::AsFd::as_fd(&fd), c"")
                && birth > since
            {
                tracing::warn!(
                    id = ino,
                    "node id of a file gone in the crash: its inode number now belongs to a newer file; not adopted"
                );
                return Walked::Refused;
            }
            let inode = self.inodes.adopt(fd, &st, parent, &name);
            tracing::debug!(id = ino, path = %self.inodes.path_of(&inode), "adopted a node id of the earlier daemon");
            parent = ino;
        }
        Walked::Done
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

    /// Whether the bytes of a re-sent append are already in the file at `offset`, the
    /// kernel's end of file when it sent the WRITE: the file then reaches past it, and
    /// nothing but this write can have put bytes there (with no writer around the
    /// mount, the backing O_APPEND put them exactly there). The end of the file is not
    /// looked at: a transcript may end with the same line legitimately (a heartbeat),
    /// and answering such a write unwritten would lose it.
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
        if (st.st_size as u64) < offset + data.len() as u64 {
            return false;
        }
        let mut buf = vec![0u8; data.len()];
        matches!(sys::pread(std::os::fd::AsFd::as_fd(&fd), &mut buf, offset), Ok(n) if n == data.len())
            && buf == data
    }

    /// Whether `st` is what the dead daemon made for a request of `ctx` it did not
    /// answer: of type `kind` (`S_IFREG`, `S_IFDIR`, `S_IFLNK`), owned by the caller,
    /// changed within the last 10 s.
    fn made_for(ctx: &Ctx, st: &libc::stat, kind: u32) -> bool {
        let now = crate::clock::now_ns() / 1_000_000_000;
        st.st_mode & libc::S_IFMT == kind && st.st_uid == ctx.uid && now - st.st_ctime <= 10
    }

    /// Journal `op` on `path` as done by the dead daemon for `ctx` (flag `resent`).
    fn record_resent(
        &self,
        ctx: &Ctx,
        op: crate::journal::record::Op,
        path: String,
        key: Option<sys::FileKey>,
    ) {
        tracing::warn!(path = %path, op = op.as_str(), "a re-sent request had been carried out before the crash: answered as done");
        self.record(ctx, op, path, key, |r| {
            r.result = "ok".into();
            r.flags = Some(vec!["resent".into()]);
        });
    }

    /// A re-sent UNLINK or RMDIR (after a crash) whose name is already gone: the dead
    /// daemon removed it and died before answering (and maybe before journaling it).
    /// Journaled as done, with flag `resent` (and the lock's `lock-release` when the
    /// name was a lock this daemon tracks); the caller is answered success. Returns
    /// false for any other request.
    pub(super) fn resent_done(
        &self,
        req: &fuser::Request,
        ctx: &Ctx,
        p: &Inode,
        name: &std::ffi::OsStr,
        dir: bool,
    ) -> bool {
        if !crate::resume::is_resend(req.unique().0) || self.entry_exists(p.id, name) {
            return false;
        }
        let path = self.child_path(p, name);
        let op = if dir {
            crate::journal::record::Op::Rmdir
        } else {
            crate::journal::record::Op::Unlink
        };
        self.record_resent(ctx, op, path.clone(), None);
        if crate::locks::is_lock_name(name.as_bytes())
            && let Some(k) = self.locks.key_of_path(&path)
        {
            self.lock_gone(ctx, k, path);
        }
        true
    }

    /// A re-sent MKDIR or SYMLINK (after a crash) that finds `name` existing: when it
    /// is what the dead daemon made for this request (a directory, or a symlink, owned
    /// by the caller, changed within the last 10 s), the request succeeded: its entry
    /// (a lookup), journaled with flag `resent`. None for any other request.
    pub(super) fn resent_made(
        &self,
        req: &fuser::Request,
        ctx: &Ctx,
        p: &Inode,
        name: &std::ffi::OsStr,
        dir: bool,
    ) -> Option<crate::sys::SysResult<fuser::FileAttr>> {
        if !crate::resume::is_resend(req.unique().0) {
            return None;
        }
        let c = sys::cname(name).ok()?;
        let st = sys::fstatat(&p.fd().ok()?, &c).ok()?;
        if !Self::made_for(ctx, &st, if dir { libc::S_IFDIR } else { libc::S_IFLNK }) {
            return None;
        }
        let op = if dir {
            crate::journal::record::Op::Mkdir
        } else {
            crate::journal::record::Op::Symlink
        };
        self.record_resent(
            ctx,
            op,
            self.child_path(p, name),
            Some(sys::FileKey::of(&st)),
        );
        Some(self.do_lookup(p, name).map(|(_, a)| a))
    }

    /// Whether `name` exists in directory `parent` (no lookup count taken).
    pub(super) fn entry_exists(&self, parent: u64, name: &std::ffi::OsStr) -> bool {
        let (Ok(dir), Ok(c)) = (self.inode(parent), sys::cname(name)) else {
            return false;
        };
        dir.fd().is_ok_and(|fd| sys::fstatat(&fd, &c).is_ok())
    }

    /// A re-sent O_EXCL CREATE found `name` existing: when it is the file the dead
    /// daemon created for this very request (a regular file, empty, owned by the
    /// caller, changed within the last 10 s), remove it, unjournaled, so the create
    /// runs again and is journaled as the caller's (an OpenClaw lock's
    /// `lock-acquire` included). Returns whether it was removed.
    pub(super) fn undo_resent_create(
        &self,
        ctx: &Ctx,
        parent: u64,
        name: &std::ffi::OsStr,
    ) -> bool {
        let (Ok(dir), Ok(c)) = (self.inode(parent), sys::cname(name)) else {
            return false;
        };
        let Ok(fd) = dir.fd() else {
            return false;
        };
        let Ok(st) = sys::fstatat(&fd, &c) else {
            return false;
        };
        if st.st_size != 0 || !Self::made_for(ctx, &st, libc::S_IFREG) {
            return false;
        }
        let gone =
            nix::unistd::unlinkat(&fd, c.as_c_str(), nix::unistd::UnlinkatFlags::NoRemoveDir)
                .is_ok();
        tracing::warn!(name = ?name, removed = gone, "a re-sent O_EXCL create found the empty file the crashed daemon made for it: created again");
        gone
    }

    /// After a restart on a live connection: the `*.lock` files in the backing tree
    /// whose holder (the payload's `pid`) is alive and started before the lock was
    /// made (or has the payload's `starttime`) are tracked again, as if their
    /// O_EXCL create had come through this daemon, so `sessionfs locks`, the reaper,
    /// the lock context of changes and the holder's `stat` records go on. Nothing is
    /// journaled for them (the create was journaled by the daemon before). Returns
    /// the node ids of the files they guard, whose cached attributes the kernel must
    /// drop (so the holder's stats reach us, as after a create of the lock).
    pub(crate) fn recover_locks(&self) -> Vec<u64> {
        let root = self.inodes.root();
        let Ok(rfd) = root.fd() else {
            return Vec::new();
        };
        let root_ino = root.ino;
        let mut guarded = Vec::new();
        walk_tree(
            std::os::fd::AsFd::as_fd(&rfd),
            &mut |dir, dir_ino, path, e| {
                let name = e.file_name();
                let b = name.to_bytes();
                if !crate::locks::is_lock_name(b)
                    || !matches!(e.file_type(), Some(nix::dir::Type::File) | None)
                {
                    return;
                }
                let parent = if dir_ino == root_ino {
                    ROOT_ID
                } else {
                    self.inodes.id_for(root.dev, dir_ino)
                };
                let e = crate::names::encode(b);
                let rel = if path.is_empty() {
                    e
                } else {
                    format!("{path}/{e}")
                };
                if self.recover_lock(dir, parent, name, rel) {
                    let g = &b[..b.len() - ".lock".len()];
                    if let Ok(g) = sys::cname(std::ffi::OsStr::from_bytes(g))
                        && let Ok(st) = sys::fstatat(dir, &g)
                    {
                        guarded.push(self.inodes.id_for(st.st_dev, st.st_ino));
                    }
                }
            },
        );
        guarded
    }

    /// See [`Self::recover_locks`].
    fn recover_lock(
        &self,
        dir: std::os::fd::BorrowedFd<'_>,
        parent: u64,
        name: &std::ffi::CStr,
        path: String,
    ) -> bool {
        let Ok(fd) = sys::openat(
            dir,
            name,
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0,
        ) else {
            return false;
        };
        let Ok(st) = sys::fstat(&fd) else {
            return false;
        };
        let mut payload = vec![0u8; 4096];
        let Ok(len) = sys::pread(std::os::fd::AsFd::as_fd(&fd), &mut payload, 0) else {
            return false;
        };
        payload.truncate(len);
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&payload) else {
            return false;
        };
        let Some(pid) = v["pid"].as_u64().and_then(|p| u32::try_from(p).ok()) else {
            return false;
        };
        let Some(ps) = crate::identity::read_stat(pid) else {
            return false;
        };
        let same = match v["starttime"].as_u64() {
            Some(t) => t == ps.starttime,
            None => started_by(ps.starttime, st.st_ctime),
        };
        if !same {
            return false;
        }
        let caller = self.ids.caller(pid, st.st_uid, st.st_gid);
        let os = std::ffi::OsStr::from_bytes(name.to_bytes());
        let key = sys::FileKey::of(&st);
        if self
            .locks
            .acquired(key, dir, parent, os, path.clone(), &caller, None)
            .is_none()
        {
            return false;
        }
        self.locks.wrote(key, 0, &payload);
        tracing::info!(path = %path, pid, "lock held across the restart: tracked again");
        true
    }
}

/// Whether a process with `/proc` start time `starttime` (clock ticks after boot) had
/// started by the Unix time `at` (s), with 1 s of slack.
fn started_by(starttime: u64, at: i64) -> bool {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let Some(up) = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
    else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let started = now - up + starttime as f64 / hz;
    started <= at as f64 + 1.0
}
