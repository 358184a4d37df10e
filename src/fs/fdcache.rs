//! How an inode reaches its backing object without holding an fd: a file handle
//! (`name_to_handle_at`) per inode, opened with `open_by_handle_at` when a request
//! needs it, and a bounded cache of the O_PATH fds so opened (model: virtiofsd's and
//! fuse-backend-rs's passthrough with file handles).
//!
//! An inode's fd lives in its [`FdSlot`]. A slot is either
//! - *cached*: filled on demand from the handle and closed again by the cache's CLOCK
//!   (second-chance) sweep when more than [`FD_CACHE_CAP`] slots hold fds, or
//! - *pinned*: the fd stays as long as the inode. That is the fallback, one fd per
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

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use nix::errno::Errno;
use parking_lot::Mutex;

use crate::sys::{self, FsHandle, SysResult};

/// Most O_PATH fds the cache keeps open at once (pinned slots not counted). A few
/// hundred: enough for the inodes a session directory's writers keep hot (a request
/// on a cached inode costs no open), small against any fd limit.
pub const FD_CACHE_CAP: usize = 256;

/// An O_PATH fd on an inode's backing object, held for one request: the cache may
/// drop its own reference meanwhile, the fd stays open until this is dropped. Keep it
/// alive for as long as its number is used (a `/proc/self/fd/N` path built from it).
#[derive(Debug, Clone)]
pub struct PathFd(Arc<OwnedFd>);

impl AsFd for PathFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for PathFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Where one inode's fd lives (see the module doc).
#[derive(Debug, Default)]
pub struct FdSlot {
    fd: Mutex<Option<Arc<OwnedFd>>>,
    /// Used since the sweep last passed: spared once (CLOCK).
    referenced: AtomicBool,
    /// The fd stays for the inode's life; never swept.
    pinned: AtomicBool,
    /// In the cache's ring.
    queued: AtomicBool,
}

impl FdSlot {
    /// Is the fd held for the inode's life (fallback, root, or removed through us)?
    pub fn is_pinned(&self) -> bool {
        self.pinned.load(Ordering::Acquire)
    }

    /// Is an fd open in the slot right now? While one is, the backing inode is alive,
    /// so its (dev, ino) names no other file.
    pub fn is_open(&self) -> bool {
        self.fd.lock().is_some()
    }
}

/// The O_PATH fd cache and the mount fd handles are opened on; one per mount.
#[derive(Debug)]
pub struct FdCache {
    /// O_RDONLY|O_DIRECTORY fd on the source root (`open_by_handle_at` refuses an
    /// O_PATH one) and the id of its mount; `None`: handles are off for this mount.
    mount: Option<(OwnedFd, i32)>,
    /// Why handles are off, for the log (empty when on).
    off_reason: String,
    cap: usize,
    /// Slots holding cached fds, in CLOCK order.
    ring: Mutex<VecDeque<Weak<FdSlot>>>,
    /// Inodes whose slot is pinned (what inode pressure bounds by default).
    pinned: AtomicUsize,
    /// `open_by_handle_at` calls made for cached slots (a miss each).
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
            ring: Mutex::new(VecDeque::new()),
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

    /// Most fds the cache keeps open (pinned slots not counted).
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Inodes whose fd is pinned right now.
    pub fn pinned(&self) -> usize {
        self.pinned.load(Ordering::Acquire)
    }

    /// Cached slots holding an fd right now (at most [`Self::capacity`] once a sweep
    /// has run).
    pub fn cached(&self) -> usize {
        self.ring.lock().len()
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

    /// A slot whose fd stays for its inode's life.
    pub fn pinned_slot(&self, fd: OwnedFd) -> Arc<FdSlot> {
        self.pinned.fetch_add(1, Ordering::AcqRel);
        Arc::new(FdSlot {
            fd: Mutex::new(Some(Arc::new(fd))),
            pinned: AtomicBool::new(true),
            ..FdSlot::default()
        })
    }

    /// A cached slot, holding `fd` (just opened by a lookup, so likely used next).
    pub fn cached_slot(&self, fd: OwnedFd) -> Arc<FdSlot> {
        let slot = Arc::new(FdSlot {
            fd: Mutex::new(Some(Arc::new(fd))),
            ..FdSlot::default()
        });
        self.admit(&slot);
        slot
    }

    /// Called when the inode owning `slot` is dropped: a pinned slot leaves the count.
    pub fn release(&self, slot: &FdSlot) {
        if slot.is_pinned() {
            self.pinned.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// The O_PATH fd of the inode with `slot` and `handle`: the slot's, else opened
    /// from the handle (and cached).
    ///
    /// # Errors
    /// ENOENT when the handle no longer opens (ESTALE: the file is gone); EBADF for a
    /// slot with neither fd nor handle (never made so); else the errno of
    /// `open_by_handle_at` (EPERM, EMFILE, …).
    pub fn get(&self, slot: &Arc<FdSlot>, handle: Option<&FsHandle>) -> SysResult<PathFd> {
        {
            let mut g = slot.fd.lock();
            if let Some(fd) = &*g {
                slot.referenced.store(true, Ordering::Relaxed);
                return Ok(PathFd(fd.clone()));
            }
            let (mfd, _) = self.mount.as_ref().ok_or(Errno::EBADF)?;
            let h = handle.ok_or(Errno::EBADF)?;
            self.misses.fetch_add(1, Ordering::Relaxed);
            let fd = Arc::new(
                sys::open_by_handle(mfd, h, libc::O_PATH | libc::O_NOFOLLOW).map_err(gone)?,
            );
            *g = Some(fd.clone());
            drop(g);
            self.admit(slot);
            Ok(PathFd(fd))
        }
    }

    /// A new fd on the inode of `slot`/`handle`, opened with `flags` (O_CREAT, O_EXCL
    /// and O_NOFOLLOW stripped, as [`sys::reopen`] does): a reopen of the slot's fd
    /// when it has one, else straight from the handle (one open, and no cache churn).
    ///
    /// # Errors
    /// As [`Self::get`], and the errno of the open (EACCES, ETXTBSY, EISDIR, …).
    pub fn open(&self, slot: &FdSlot, handle: Option<&FsHandle>, flags: i32) -> SysResult<OwnedFd> {
        let held = slot.fd.lock().clone();
        if let Some(fd) = held {
            slot.referenced.store(true, Ordering::Relaxed);
            return sys::reopen(&*fd, flags);
        }
        let (mfd, _) = self.mount.as_ref().ok_or(Errno::EBADF)?;
        let h = handle.ok_or(Errno::EBADF)?;
        let flags = flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW);
        sys::open_by_handle(mfd, h, flags).map_err(gone)
    }

    /// `fd`, just opened on the same object by a lookup, fills `slot` if it is empty
    /// (a request on the inode likely follows).
    pub fn offer(&self, slot: &Arc<FdSlot>, fd: OwnedFd) {
        {
            let mut g = slot.fd.lock();
            if g.is_some() {
                return;
            }
            *g = Some(Arc::new(fd));
        }
        self.admit(slot);
    }

    /// Keep `fd` (on the slot's object) for the inode's life: see the module doc.
    pub fn pin(&self, slot: &FdSlot, fd: OwnedFd) {
        let mut g = slot.fd.lock();
        if slot.pinned.swap(true, Ordering::AcqRel) {
            return;
        }
        self.pinned.fetch_add(1, Ordering::AcqRel);
        if g.is_none() {
            *g = Some(Arc::new(fd));
        }
        // Still in the ring: the sweep drops it from there without closing it.
    }

    /// Put a slot that just got a cached fd in the ring; above the capacity, close
    /// the fds of slots not used since the sweep last passed them.
    fn admit(&self, slot: &Arc<FdSlot>) {
        if slot.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut ring = self.ring.lock();
        ring.push_back(Arc::downgrade(slot));
        // Each slot is passed at most twice (once to clear its bit, once to close).
        let mut budget = 2 * ring.len();
        while ring.len() > self.cap && budget > 0 {
            budget -= 1;
            let Some(w) = ring.pop_front() else { break };
            // Its inode was forgotten: the fd closed with it.
            let Some(s) = w.upgrade() else { continue };
            if s.is_pinned() {
                s.queued.store(false, Ordering::Release);
                continue;
            }
            if s.referenced.swap(false, Ordering::AcqRel) {
                ring.push_back(w);
                continue;
            }
            // A request is filling or reading it right now: spare it this time.
            let Some(mut g) = s.fd.try_lock() else {
                ring.push_back(w);
                continue;
            };
            let old = g.take();
            s.queued.store(false, Ordering::Release);
            drop(g);
            // Requests still holding a PathFd keep it open until they are done.
            drop(old);
        }
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
        let slot = Arc::new(FdSlot::default());
        let fd = cache.get(&slot, Some(&again)).unwrap();
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
        let mut slots = Vec::new();
        for i in 0..20 {
            std::fs::write(dir.path().join(format!("f{i}")), b"x").unwrap();
            let fd = opath(&r, &format!("f{i}"));
            let h = cache.handle_of(fd.as_fd()).unwrap();
            slots.push((cache.cached_slot(fd), h));
        }
        assert!(cache.cached() <= 4, "{} cached", cache.cached());
        let open = slots.iter().filter(|(s, _)| s.is_open()).count();
        assert!(open <= 4, "{open} slots hold fds");
        // A swept slot reopens from its handle.
        let (s0, h0) = &slots[0];
        assert!(!s0.is_open());
        let fd = cache.get(s0, Some(h0)).unwrap();
        let st = sys::fstat(&fd).unwrap();
        assert_eq!(st.st_ino, sys::fstat(opath(&r, "f0")).unwrap().st_ino);
        // A pinned slot keeps its fd through any number of sweeps.
        cache.pin(s0, opath(&r, "f0"));
        assert_eq!(cache.pinned(), 1);
        for (s, h) in &slots[1..] {
            cache.get(s, Some(h)).unwrap();
        }
        assert!(s0.is_open());
        assert!(cache.cached() <= 4);
        // A removed file's handle no longer opens once nothing holds it: ENOENT.
        let (s5, h5) = &slots[5];
        drop(cache.get(s5, Some(h5)).unwrap());
        for (s, h) in &slots[6..] {
            cache.get(s, Some(h)).unwrap();
        }
        assert!(!s5.is_open());
        std::fs::remove_file(dir.path().join("f5")).unwrap();
        // The kernel may keep the unlinked inode cached a while; drop it first.
        let _ = std::fs::write("/proc/sys/vm/drop_caches", b"2");
        if let Err(e) = cache.get(s5, Some(h5)) {
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
