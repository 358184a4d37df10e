//! How an inode reaches its backing object without holding an fd: a file handle
//! (`name_to_handle_at`) per inode, opened with `open_by_handle_at` when a request
//! needs it, and a bounded cache of the O_PATH fds so opened (model: virtiofsd's and
//! fuse-backend-rs's passthrough with file handles).
//!
//! An inode's fd is either
//! - *cached*: opened on demand from the handle and closed again by the cache's CLOCK
//!   (second-chance) sweep when more than [`FD_CACHE_CAP`] fds are cached, or
//! - *pinned*: held by the inode for its life. That is the fallback, one fd per
//!   inode as before, where handles do not work: the backing filesystem has no export
//!   operations (EOPNOTSUPP), the daemon lacks `CAP_DAC_READ_SEARCH` (EPERM), the
//!   inode lies on another mount than the source root (`--source` with a mount inside),
//!   or `--no-file-handles`. The root is always pinned. An inode whose last name was
//!   removed through the mount (unlink, rmdir, a rename over it) is pinned too, with
//!   the fd taken just before: a file handle of an unlinked inode no longer opens once
//!   nothing else holds the inode (a removed directory never does: ESTALE), but the
//!   kernel may still send requests for it (fstat of an open file, a process whose
//!   cwd it is), which an fd serves as on the backing filesystem. The kernel forgets
//!   such an inode soon, and its fd goes with it.
//!
//! Handles never alias: the kernel refuses (ESTALE) a handle whose inode is gone, even
//! when a new file got the same inode number (the generation differs), so a cached
//! handle cannot open the wrong file. The inode table compares handles when a lookup
//! meets a known (dev, ino) with no fd open (see `InodeTable::lookup`).

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use nix::errno::Errno;
use parking_lot::Mutex;

use crate::sys::{self, FsHandle, SysResult};

/// Most O_PATH fds the cache keeps open at once (pinned fds not counted). A few
/// hundred: enough for the inodes a session directory's writers keep hot (a request
/// on a cached inode costs no open), small against any fd limit.
pub const FD_CACHE_CAP: usize = 256;

/// An O_PATH fd on an inode's backing object, held for one request: a pinned fd
/// borrowed from its inode, or a cached one shared with the cache (which may drop its
/// own reference meanwhile; the fd stays open until this is dropped). Keep it alive
/// for as long as its number is used (a `/proc/self/fd/N` path built from it).
#[derive(Debug, Clone)]
pub enum PathFd<'a> {
    /// The inode's pinned fd.
    Pinned(BorrowedFd<'a>),
    /// A cached fd.
    Cached(Arc<OwnedFd>),
}

impl AsFd for PathFd<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            PathFd::Pinned(fd) => fd.as_fd(),
            PathFd::Cached(fd) => fd.as_fd(),
        }
    }
}

impl AsRawFd for PathFd<'_> {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// A cached fd and its CLOCK bit (used since the sweep last passed).
#[derive(Debug)]
struct Entry {
    fd: Arc<OwnedFd>,
    referenced: bool,
}

/// The cached fds by node id, and their CLOCK order.
#[derive(Debug, Default)]
struct Clock {
    map: HashMap<u64, Entry>,
    ring: VecDeque<u64>,
}

/// The O_PATH fd cache and the mount fd handles are opened on; one per mount.
///
/// Cached fds are keyed by node id. An entry always names the live object with that
/// id's (dev, ino): the open fd keeps the object alive, so no other file can have
/// its number meanwhile.
#[derive(Debug)]
pub struct FdCache {
    /// O_RDONLY|O_DIRECTORY fd on the source root (`open_by_handle_at` refuses an
    /// O_PATH one) and the id of its mount; `None`: handles are off for this mount.
    mount: Option<(OwnedFd, i32)>,
    /// Why handles are off, for the log (empty when on).
    off_reason: String,
    cap: usize,
    clock: Mutex<Clock>,
    /// Inodes with a pinned fd (what inode pressure bounds by default).
    pinned: AtomicUsize,
    /// `open_by_handle_at` calls made to fill the cache (a miss each).
    misses: AtomicU64,
}

impl FdCache {
    /// The cache for a mount of the directory `root` (its O_PATH fd), keeping at most
    /// `cap` fds. With `handles` false, or when the probe fails (a handle of the root
    /// cannot be made, or made and opened again to the same directory: EOPNOTSUPP,
    /// EPERM without `CAP_DAC_READ_SEARCH`, …), every inode is pinned instead.
    pub fn new(root: BorrowedFd<'_>, handles: bool, cap: usize) -> Self {
        let probe = || -> Result<(OwnedFd, i32), String> {
            let st = sys::fstat(root).map_err(|e| format!("stat of the root: {e}"))?;
            let mfd = sys::reopen(root, libc::O_RDONLY | libc::O_DIRECTORY)
                .map_err(|e| format!("open of the root: {e}"))?;
            let (h, mount_id) =
                sys::name_to_handle(root).map_err(|e| format!("name_to_handle_at: {e}"))?;
            let fd = sys::open_by_handle(&mfd, &h, libc::O_PATH)
                .map_err(|e| format!("open_by_handle_at: {e}"))?;
            let again = sys::fstat(&fd).map_err(|e| format!("stat: {e}"))?;
            if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino) {
                return Err("the root's handle opened another object".into());
            }
            Ok((mfd, mount_id))
        };
        let (mount, off_reason) = if !handles {
            (None, "--no-file-handles".to_string())
        } else {
            match probe() {
                Ok(m) => (Some(m), String::new()),
                Err(e) => (None, e),
            }
        };
        Self {
            mount,
            off_reason,
            cap: cap.max(1),
            clock: Mutex::new(Clock::default()),
            pinned: AtomicUsize::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Are inodes reached by file handles on this mount? `Err` says why not.
    pub fn handles_on(&self) -> Result<(), &str> {
        if self.mount.is_some() {
            Ok(())
        } else {
            Err(&self.off_reason)
        }
    }

    /// Most fds the cache keeps open (pinned fds not counted).
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Inodes whose fd is pinned right now.
    pub fn pinned(&self) -> usize {
        self.pinned.load(Ordering::Acquire)
    }

    /// Cached fds open right now (at most [`Self::capacity`]).
    pub fn cached(&self) -> usize {
        self.clock.lock().map.len()
    }

    /// Is an fd of node `id` cached right now?
    pub fn is_cached(&self, id: u64) -> bool {
        self.clock.lock().map.contains_key(&id)
    }

    /// `open_by_handle_at` calls made to fill the cache so far.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// The file handle by which an inode whose O_PATH fd is `fd` will be reached:
    /// `None` when handles are off, when one cannot be made, or when the object is on
    /// another mount than the root (its handle would need that mount's fd).
    pub fn handle_of(&self, fd: BorrowedFd<'_>) -> Option<FsHandle> {
        let (_, root_mount) = self.mount.as_ref()?;
        match sys::name_to_handle(fd) {
            Ok((h, m)) if m == *root_mount => Some(h),
            _ => None,
        }
    }

    /// Pin `fd` in `slot` (an inode's) for the inode's life; false if it already
    /// held one (then `fd` is closed).
    pub fn pin(&self, id: u64, slot: &OnceLock<OwnedFd>, fd: OwnedFd) -> bool {
        if slot.set(fd).is_err() {
            return false;
        }
        self.pinned.fetch_add(1, Ordering::AcqRel);
        // The pinned fd serves from now on.
        self.forget(id);
        true
    }

    /// The inode with node id `id` and pinned-fd slot `slot` is dropped: a pinned fd
    /// leaves the count, a cached one closes.
    pub fn release(&self, id: u64, slot: &OnceLock<OwnedFd>) {
        if slot.get().is_some() {
            self.pinned.fetch_sub(1, Ordering::AcqRel);
        }
        self.forget(id);
    }

    /// Close the cached fd of node `id`, if any (its inode is gone or replaced).
    pub fn forget(&self, id: u64) {
        let gone = {
            let mut c = self.clock.lock();
            let e = c.map.remove(&id);
            if e.is_some() {
                c.ring.retain(|x| *x != id);
            }
            e
        };
        drop(gone);
    }

    /// The O_PATH fd of node `id` (pinned fd `slot`, file handle `handle`): the pinned
    /// one, else the cached one, else opened from the handle (and cached).
    ///
    /// # Errors
    /// ENOENT when the handle no longer opens (ESTALE: the file is gone); EBADF for an
    /// inode with neither pinned fd nor handle (never made so); else the errno of
    /// `open_by_handle_at` (EPERM, EMFILE, …).
    pub fn get<'a>(
        &self,
        id: u64,
        slot: &'a OnceLock<OwnedFd>,
        handle: Option<&FsHandle>,
    ) -> SysResult<PathFd<'a>> {
        if let Some(fd) = slot.get() {
            return Ok(PathFd::Pinned(fd.as_fd()));
        }
        if let Some(e) = self.clock.lock().map.get_mut(&id) {
            e.referenced = true;
            return Ok(PathFd::Cached(e.fd.clone()));
        }
        let (mfd, _) = self.mount.as_ref().ok_or(Errno::EBADF)?;
        let h = handle.ok_or(Errno::EBADF)?;
        self.misses.fetch_add(1, Ordering::Relaxed);
        let fd = sys::open_by_handle(mfd, h, libc::O_PATH | libc::O_NOFOLLOW).map_err(gone)?;
        Ok(PathFd::Cached(self.insert(id, fd)))
    }

    /// A new fd on node `id`'s object opened with `flags` (O_CREAT, O_EXCL and
    /// O_NOFOLLOW stripped, as [`sys::reopen`] does): a reopen of its pinned or cached
    /// fd, else straight from the handle (one open, and no cache churn).
    ///
    /// # Errors
    /// As [`Self::get`], and the errno of the open (EACCES, ETXTBSY, EISDIR, …).
    pub fn open(
        &self,
        id: u64,
        slot: &OnceLock<OwnedFd>,
        handle: Option<&FsHandle>,
        flags: i32,
    ) -> SysResult<OwnedFd> {
        if let Some(fd) = slot.get() {
            return sys::reopen(fd, flags);
        }
        let cached = self.clock.lock().map.get_mut(&id).map(|e| {
            e.referenced = true;
            e.fd.clone()
        });
        if let Some(fd) = cached {
            return sys::reopen(&*fd, flags);
        }
        let (mfd, _) = self.mount.as_ref().ok_or(Errno::EBADF)?;
        let h = handle.ok_or(Errno::EBADF)?;
        let flags = flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW);
        sys::open_by_handle(mfd, h, flags).map_err(gone)
    }

    /// `fd`, just opened on node `id`'s object by a lookup, is cached unless one is
    /// already (a request on the inode likely follows).
    pub fn offer(&self, id: u64, fd: OwnedFd) {
        drop(self.insert(id, fd));
    }

    /// Cache `fd` for node `id` (keeping an fd already cached: same object) and
    /// return the cached one; above the capacity, close the fds not used since the
    /// sweep last passed them (CLOCK).
    fn insert(&self, id: u64, fd: OwnedFd) -> Arc<OwnedFd> {
        let mut closed = Vec::new();
        let mut c = self.clock.lock();
        if let Some(e) = c.map.get_mut(&id) {
            e.referenced = true;
            closed.push(Arc::new(fd));
            return e.fd.clone();
        }
        let fd = Arc::new(fd);
        c.map.insert(
            id,
            Entry {
                fd: fd.clone(),
                referenced: false,
            },
        );
        c.ring.push_back(id);
        // Each entry is passed at most twice (once to clear its bit, once to close).
        let mut budget = 2 * c.ring.len();
        while c.map.len() > self.cap && budget > 0 {
            budget -= 1;
            let Some(victim) = c.ring.pop_front() else {
                break;
            };
            let Some(e) = c.map.get_mut(&victim) else {
                continue;
            };
            if std::mem::take(&mut e.referenced) {
                c.ring.push_back(victim);
                continue;
            }
            if let Some(e) = c.map.remove(&victim) {
                // Requests still holding a PathFd keep it open until they are done.
                closed.push(e.fd);
            }
        }
        drop(c);
        drop(closed); // closed outside the lock
        fd
    }
}

/// A handle that no longer opens names a file that is gone: ENOENT, as a path to it
/// would say (ESTALE would reach the caller as an NFS error).
fn gone(e: Errno) -> Errno {
    if e == Errno::ESTALE { Errno::ENOENT } else { e }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(dir: &std::path::Path) -> OwnedFd {
        nix::fcntl::open(
            dir,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap()
    }

    fn opath(dir: &OwnedFd, name: &str) -> OwnedFd {
        let c = std::ffi::CString::new(name).unwrap();
        sys::openat(dir, &c, libc::O_PATH | libc::O_NOFOLLOW, 0).unwrap()
    }

    #[test]
    fn handle_round_trips_through_its_parts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        let r = root(dir.path());
        let cache = FdCache::new(r.as_fd(), true, 4);
        if cache.handles_on().is_err() {
            eprintln!("file handles unsupported here: {:?}", cache.handles_on());
            return;
        }
        let h = cache.handle_of(opath(&r, "f").as_fd()).unwrap();
        let again = FsHandle::from_parts(h.handle_type(), h.bytes()).unwrap();
        assert_eq!(again, h);
        let slot = OnceLock::new();
        let fd = cache.get(7, &slot, Some(&again)).unwrap();
        let (a, b) = (
            sys::fstat(&fd).unwrap(),
            sys::fstat(opath(&r, "f")).unwrap(),
        );
        assert_eq!((a.st_dev, a.st_ino), (b.st_dev, b.st_ino));
        assert!(FsHandle::from_parts(1, &[]).is_none());
        assert!(FsHandle::from_parts(1, &[0; sys::MAX_HANDLE_SZ + 1]).is_none());
    }

    #[test]
    fn cache_keeps_at_most_its_capacity_and_pins_stay() {
        let dir = tempfile::tempdir().unwrap();
        let r = root(dir.path());
        let cache = FdCache::new(r.as_fd(), true, 4);
        if cache.handles_on().is_err() {
            return;
        }
        let mut inodes = Vec::new();
        for i in 0..20u64 {
            std::fs::write(dir.path().join(format!("f{i}")), b"x").unwrap();
            let fd = opath(&r, &format!("f{i}"));
            let h = cache.handle_of(fd.as_fd()).unwrap();
            cache.offer(i, fd);
            inodes.push((i, OnceLock::new(), h));
        }
        assert_eq!(cache.cached(), 4);
        // A swept fd reopens from its handle.
        let (id0, s0, h0) = &inodes[0];
        assert!(!cache.is_cached(*id0));
        let fd = cache.get(*id0, s0, Some(h0)).unwrap();
        let st = sys::fstat(&fd).unwrap();
        assert_eq!(st.st_ino, sys::fstat(opath(&r, "f0")).unwrap().st_ino);
        drop(fd);
        // A pinned fd stays through any number of sweeps, outside the cache.
        assert!(cache.pin(*id0, s0, opath(&r, "f0")));
        assert!(!cache.pin(*id0, s0, opath(&r, "f0")), "pinned once");
        assert_eq!(cache.pinned(), 1);
        for (id, s, h) in &inodes[1..] {
            cache.get(*id, s, Some(h)).unwrap();
        }
        assert!(matches!(
            cache.get(*id0, s0, Some(h0)),
            Ok(PathFd::Pinned(_))
        ));
        assert!(cache.cached() <= 4);
        cache.release(*id0, s0);
        assert_eq!(cache.pinned(), 0);
        // A removed file's handle no longer opens once nothing holds it: ENOENT.
        let (id5, s5, h5) = &inodes[5];
        cache.forget(*id5);
        std::fs::remove_file(dir.path().join("f5")).unwrap();
        // The kernel may keep the unlinked inode cached a while; drop it first.
        let _ = std::fs::write("/proc/sys/vm/drop_caches", b"2");
        if let Err(e) = cache.get(*id5, s5, Some(h5)) {
            assert_eq!(e, Errno::ENOENT);
        }
    }

    #[test]
    fn without_handles_nothing_is_made() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        let r = root(dir.path());
        let cache = FdCache::new(r.as_fd(), false, 4);
        assert_eq!(cache.handles_on(), Err("--no-file-handles"));
        assert!(cache.handle_of(opath(&r, "f").as_fd()).is_none());
    }
}
