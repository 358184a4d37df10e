//! The inode table: one entry per backing (dev, ino), each with the exact kernel
//! lookup count and a file handle of its backing object, opened to an O_PATH fd when a
//! request needs one (see [`super::fdcache`]; where handles do not work, each inode
//! holds its O_PATH fd instead, the model of libfuse `passthrough_hp.cc`).
//!
//! Node ids: FUSE ties the node id to `st_ino` (fuser sends `attr.ino` as nodeid), so
//! a backing inode on the root's device whose number is in `[2, 2^62)` is served under
//! its own `st_ino`, and the root under 1. Every other inode (another device, or a
//! number outside that range: 0, 1, or ≥ 2^62 as overlayfs with `xino` makes them)
//! gets a synthetic id in `[2^62, 2^63)`. Ids at and above 2^63 are virtual files. So
//! no backing number can reach a reserved range. An inode reached by a file handle
//! holds nothing open, so its backing number may be reused by a new file while the
//! kernel still holds the id (the old file removed around the mount, or its FORGET
//! still in flight): a lookup that meets a known (dev, ino) with no fd open compares
//! file handles, and a different one replaces the stale entry under the same id (the
//! kernel gets the new file's attributes under it, as after an inode number reuse on
//! any filesystem). A pinned fd (the fallback) keeps the number from being reused.
//!
//! Changes go through [`Inode::mutate`]: the journal-order lock and the busy mark are
//! taken together and released together, so no handler can take one and forget the
//! other.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::fdcache::{FdCache, PathFd};
use crate::sys::FsHandle;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, MutexGuard, RwLock};

use crate::sys::FileKey;

/// Most names remembered per inode (hard links reached through the mount).
const MAX_NAMES: usize = 8;

/// FUSE node id of the mount root.
pub const ROOT_ID: u64 = 1;
/// First synthetic node id (foreign devices, out-of-range inode numbers).
pub const SYNTHETIC_BASE: u64 = 1 << 62;
/// Node ids at and above this are virtual files (journals), never backing inodes.
pub const VIRTUAL_BASE: u64 = 1 << 63;
/// Lookup count mark of an adopted inode ([`InodeTable::adopt`]): far above any real
/// count, so that one FORGET drops it.
pub const ADOPTED: u64 = 1 << 48;

/// One backing inode known to the kernel.
#[derive(Debug)]
pub struct Inode {
    /// FUSE node id.
    pub id: u64,
    /// Backing device.
    pub dev: u64,
    /// Backing inode number.
    pub ino: u64,
    /// `S_IFMT` bits of the backing mode.
    pub kind: u32,
    /// File handle of the backing object; `None`: reached only by the pinned fd in
    /// `pinned` (the fallback, see [`super::fdcache`]).
    handle: Option<FsHandle>,
    /// The pinned O_PATH|O_NOFOLLOW fd on the backing object (fallback, root, or
    /// removed through us; else its fd is opened from `handle` and cached, see
    /// [`Self::fd`]).
    pinned: std::sync::OnceLock<OwnedFd>,
    /// The mount's fd cache (and the mount fd handles open on).
    fds: Arc<FdCache>,
    /// Kernel lookup count; the entry is dropped when it reaches 0.
    lookups: AtomicU64,
    /// Names (parent id, name) the inode is known by, the one it was last reached by
    /// first; for journal paths only, never used to resolve. Several when hard links
    /// were reached through the mount.
    names: Mutex<Vec<(u64, Arc<OsStr>)>>,
    /// What we know of the backing file: see [`Known`].
    pub known: Mutex<Known>,
    /// Read-only fd for transcript decoding, opened on first use and kept while a
    /// writable handle is open (so idle inodes cost one fd, not two).
    read_fd: Mutex<Option<Arc<OwnedFd>>>,
    /// Writable handles open on this inode.
    writers: std::sync::atomic::AtomicU32,
    /// Mutations of this inode in flight through us; while non-zero, a changed backing
    /// stat is ours, not `external`.
    busy: std::sync::atomic::AtomicU32,
    /// Journal order: an operation that records something about this inode holds it
    /// from before the change until its record is appended. A WRITE replies to the
    /// kernel while holding it, so the inode's next operation is recorded after it.
    order: Mutex<()>,
    /// See [`Inode::changes`].
    changes: AtomicU64,
    /// Table tick of the last lookup, getattr or open (LRU order for inode pressure).
    used: AtomicU64,
    /// Birth time of the backing inode, ns (statx btime; 0 where none), read once: the
    /// journal's per-file key ([`crate::journal::record::FileRef`]) without a statx
    /// per record.
    pub birth: std::sync::OnceLock<i64>,
    /// READs of this inode served by us: see [`ReadCount`].
    pub reads: ReadCount,
    /// Open handles by kernel I/O mode: see [`IoModes`].
    io_modes: Mutex<IoModes>,
}

/// The open handles of one inode by the kernel's I/O mode for them, which decides the
/// mode of the next open (see [`Inode::open_direct`]).
#[derive(Debug, Default)]
struct IoModes {
    /// Open through the page cache and readable: READs through them fill it.
    cached_readers: u32,
    /// Open with `FOPEN_DIRECT_IO`.
    direct: u32,
}

/// The READs of one inode, counted so that a direct-I/O WRITE can tell whether the
/// kernel may have cached a page of the range it writes from before the write reached
/// the backing file (see [`super::SessionFs::do_write`]). Every page the kernel caches
/// comes from a READ (read, readahead, mmap fault).
#[derive(Debug, Default)]
pub struct ReadCount {
    /// READs begun (counted before their backing read).
    started: AtomicU64,
    /// READs done (counted after their backing read).
    done: AtomicU64,
    /// `done` as read by the last direct WRITE, right after its backing write.
    done_at_write: AtomicU64,
}

/// One READ in progress: counted begun now and done when dropped.
#[derive(Debug)]
#[must_use = "the READ counts as in progress only while this lives"]
pub struct ReadGuard<'a>(&'a ReadCount);

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        self.0.done.fetch_add(1, Ordering::SeqCst);
    }
}

impl ReadCount {
    /// A READ begins (before its backing read): done when the guard drops.
    pub fn begin(&self) -> ReadGuard<'_> {
        self.started.fetch_add(1, Ordering::SeqCst);
        ReadGuard(self)
    }

    /// Called by a direct WRITE right after its backing write (writes of one inode
    /// come one at a time: the kernel holds the inode lock across each). Whether a
    /// READ may have read the backing file between the previous such call and this
    /// write, i.e. whether the kernel may now hold a page of the written range filled
    /// before the write (stale, or zeros past the old end of file). False only if
    /// every READ begun by now was done by the previous call: a READ that read before
    /// this write began before now, and one that read after the kernel dropped the
    /// range (which it does before sending the WRITE, after the previous WRITE's
    /// reply) was done after the previous call.
    pub fn read_since_last_write(&self) -> bool {
        let started = self.started.load(Ordering::SeqCst);
        let done = self.done.load(Ordering::SeqCst);
        let before = self.done_at_write.swap(done, Ordering::SeqCst);
        started != before
    }
}

impl Drop for Inode {
    fn drop(&mut self) {
        self.fds.release(self.id, &self.pinned);
    }
}

impl Inode {
    /// A new entry with `lookups` lookups, reached by `handle`, else by `pin` (kept for its life).
    #[allow(clippy::too_many_arguments)]
    fn new(
        id: u64,
        st: &libc::stat,
        handle: Option<FsHandle>,
        pin: Option<OwnedFd>,
        fds: Arc<FdCache>,
        lookups: u64,
        name: (u64, Arc<OsStr>),
    ) -> Self {
        let pinned = std::sync::OnceLock::new();
        if let Some(fd) = pin {
            fds.pin(id, &pinned, fd);
        }
        Inode {
            id,
            dev: st.st_dev,
            ino: st.st_ino,
            kind: st.st_mode & libc::S_IFMT,
            handle,
            pinned,
            fds,
            lookups: AtomicU64::new(lookups),
            names: Mutex::new(vec![name]),
            known: Mutex::new(Known::default()),
            read_fd: Mutex::new(None),
            writers: Default::default(),
            busy: Default::default(),
            order: Mutex::new(()),
            changes: AtomicU64::new(0),
            used: AtomicU64::new(0),
            birth: std::sync::OnceLock::new(),
            reads: ReadCount::default(),
            io_modes: Default::default(),
        }
    }
}

/// What the daemon knows of a backing file's state.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    /// Fingerprint (size, mtime ns, ctime ns) after our last change or open, or after
    /// the last `external` change we recorded; a different one is somebody else's.
    pub fp: Option<(u64, i64, i64)>,
    /// (mode, uid, gid, nlink) with `fp`: a ctime that moved alone is drift.
    pub meta: Option<(u32, u32, u32, u64)>,
    /// An outside change was seen since the kernel last filled its page cache: the
    /// next open must not keep it (`FOPEN_KEEP_CACHE`), even if a change of ours has
    /// moved `fp` since.
    pub stale: bool,
}

/// Droppable by inode pressure: not the root, not a directory, and referenced only
/// `refs` times (the table's entry, plus the caller's own clone if any): no open file
/// or directory handle, no request in flight holds it.
fn is_idle(i: &Arc<Inode>, refs: usize) -> bool {
    i.id != ROOT_ID && i.kind != libc::S_IFDIR && Arc::strong_count(i) == refs
}

/// Marks an inode as being changed by us for the guard's lifetime.
#[derive(Debug)]
struct Busy<'a>(&'a Inode);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.changes.fetch_add(1, Ordering::AcqRel);
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One change of ours to an inode, from before the backing call until its journal
/// record is appended: the inode's journal-order lock (its records keep the order of
/// its changes) and its busy mark (a stat taken meanwhile by a GETATTR may show our
/// change half done, so it is not taken for an `external` one). Both are released
/// together when the guard drops (model: fuse-backend-rs's RAII credential guards).
#[derive(Debug)]
#[must_use = "the change is guarded only while the Mutation lives"]
pub struct Mutation<'a> {
    inode: &'a Inode,
    // Field order is drop order: the busy mark ends before the order lock is released.
    _busy: Busy<'a>,
    _order: MutexGuard<'a, ()>,
}

impl<'a> Mutation<'a> {
    /// The inode being changed.
    pub fn inode(&self) -> &'a Inode {
        self.inode
    }

    /// Guards for a change of several inodes at once (rename, unlink): taken in node
    /// id order, so two crossed renames cannot deadlock; each inode once.
    pub fn many(inodes: &[&'a Inode]) -> Vec<Mutation<'a>> {
        let mut v: Vec<&Inode> = inodes.to_vec();
        v.sort_by_key(|i| i.id);
        v.dedup_by_key(|i| i.id);
        v.into_iter().map(Inode::mutate).collect()
    }
}

impl Inode {
    /// A handle with the caller's open `flags` opens on this regular file: whether the
    /// kernel is to bypass its page cache for it (`FOPEN_DIRECT_IO`), counted until
    /// [`Self::close_mode`]. A write-only handle does, so that each `write(2)` comes as
    /// one WRITE (see [`super::files::reply_flags`]), unless a handle that reads
    /// through the page cache is open: its reads could fill a page with the file as it
    /// was just before a direct write and show zeros where that write appends. A
    /// readable handle does while a direct handle is open, for the same reason (its
    /// reads then come to us); else it uses the page cache. So the two modes never mix
    /// on one inode; the first open decides, until its handles are released.
    pub fn open_direct(&self, flags: i32) -> bool {
        let mut m = self.io_modes.lock();
        let direct = if flags & libc::O_ACCMODE == libc::O_WRONLY {
            m.cached_readers == 0
        } else {
            m.direct > 0
        };
        if direct {
            m.direct += 1;
        } else if flags & libc::O_ACCMODE != libc::O_WRONLY {
            m.cached_readers += 1;
        }
        direct
    }

    /// A handle opened with `flags` and mode `direct` (from [`Self::open_direct`]) is
    /// released.
    pub fn close_mode(&self, flags: i32, direct: bool) {
        let mut m = self.io_modes.lock();
        if direct {
            m.direct = m.direct.saturating_sub(1);
        } else if flags & libc::O_ACCMODE != libc::O_WRONLY {
            m.cached_readers = m.cached_readers.saturating_sub(1);
        }
    }

    /// Begin a change of ours to this inode: see [`Mutation`]. Blocks while another
    /// change (or an ordered record) of this inode is in flight.
    pub fn mutate(&self) -> Mutation<'_> {
        let order = self.order.lock();
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.changes.fetch_add(1, Ordering::AcqRel);
        Mutation {
            inode: self,
            _busy: Busy(self),
            _order: order,
        }
    }

    /// The journal-order lock alone, for records that change nothing on the backing
    /// (open, release, fsync): they keep their place among the inode's changes.
    pub fn ordered(&self) -> MutexGuard<'_, ()> {
        self.order.lock()
    }

    /// The backing file's (dev, ino).
    pub fn key(&self) -> FileKey {
        FileKey {
            dev: self.dev,
            ino: self.ino,
        }
    }

    /// Counter bumped when a mutation of ours starts and ends. A stat taken when it
    /// read `g` is current only if it still reads `g` (and nothing is busy): else
    /// one of our own changes may have landed in between.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// A read-only fd on the backing object (opened once, shared until the last
    /// writable handle is released).
    pub fn read_fd(&self) -> crate::sys::SysResult<Arc<OwnedFd>> {
        let mut slot = self.read_fd.lock();
        if let Some(fd) = &*slot {
            return Ok(fd.clone());
        }
        let fd = self
            .open(libc::O_RDONLY | libc::O_NOATIME)
            .or_else(|_| self.open(libc::O_RDONLY))?;
        let fd = Arc::new(fd);
        *slot = Some(fd.clone());
        Ok(fd)
    }

    /// A writable handle was opened on this inode.
    pub fn writer_opened(&self) {
        self.writers.fetch_add(1, Ordering::AcqRel);
    }

    /// A writable handle was released; the last one closes the cached read fd.
    /// Returns true when it was the last one.
    pub fn writer_released(&self) -> bool {
        let last = self.writers.fetch_sub(1, Ordering::AcqRel) == 1;
        if last {
            self.read_fd.lock().take();
        }
        last
    }

    /// Writable handles open on this inode.
    pub fn writers(&self) -> u32 {
        self.writers.load(Ordering::Acquire)
    }

    /// Mutations of this inode in flight through us.
    pub fn busy_count(&self) -> u32 {
        self.busy.load(Ordering::Acquire)
    }

    /// The O_PATH|O_NOFOLLOW fd on the backing object: the inode's cached or pinned
    /// one, else opened from its file handle (and cached). Hold the result for as long
    /// as its number is used.
    ///
    /// # Errors
    /// ENOENT when the backing file is gone (its handle is stale); else the errno of
    /// `open_by_handle_at` (EMFILE, EPERM if called with a caller's fsuid: take the fd
    /// before [`crate::sys::as_caller`]).
    pub fn fd(&self) -> crate::sys::SysResult<PathFd<'_>> {
        self.fds.get(self.id, &self.pinned, self.handle.as_ref())
    }

    /// A new fd on the backing object opened with `flags` (as [`crate::sys::reopen`]
    /// of [`Self::fd`], in one open when the fd is not cached).
    ///
    /// # Errors
    /// As [`Self::fd`], and the open's errno.
    pub fn open(&self, flags: i32) -> crate::sys::SysResult<OwnedFd> {
        self.fds
            .open(self.id, &self.pinned, self.handle.as_ref(), flags)
    }

    /// The backing object's file handle (`None` in the fd-per-inode fallback): names
    /// the same file across renames and daemon restarts; see [`FsHandle`] for its
    /// serialised form. (For the restart work to come; unit-tested, not yet used.)
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn handle(&self) -> Option<&FsHandle> {
        self.handle.as_ref()
    }

    /// The backing object lost its last name through us (unlink, rmdir, replaced by
    /// a rename): keep `fd` (an O_PATH fd on it, taken before the removal) for the
    /// inode's life, so the kernel's remaining requests for it (fstat of an open file,
    /// a cwd) are served as before; its handle would no longer open.
    pub fn pin(&self, fd: OwnedFd) {
        self.fds.pin(self.id, &self.pinned, fd);
    }

    /// Is this inode's fd held for its life (fallback, root, or removed through us)?
    pub fn is_pinned(&self) -> bool {
        self.pinned.get().is_some()
    }

    /// Is an fd on the backing object open in the inode right now (cached or pinned)?
    #[cfg(test)]
    pub fn fd_is_open(&self) -> bool {
        self.is_pinned() || self.fds.is_cached(self.id)
    }

    /// Is `fd` (an fd just opened on an object with this inode's (dev, ino)) on this
    /// inode's backing object, not on a later file that reused the inode number? Yes
    /// while the inode's fd is open (the object is alive, so the number is taken), and
    /// when the handles agree. `new_handle`: `fd`'s handle, computed here if `None`
    /// and needed.
    fn same_object(&self, fd: BorrowedFd<'_>, new_handle: Option<&FsHandle>) -> bool {
        let Some(mine) = &self.handle else {
            return true; // pinned: the number cannot have been reused
        };
        if self.is_pinned() || self.fds.is_cached(self.id) {
            return true;
        }
        match new_handle {
            Some(h) => h == mine,
            None => self.fds.handle_of(fd).is_none_or(|h| &h == mine),
        }
    }
    /// Is this a regular file?
    pub fn is_file(&self) -> bool {
        self.kind == libc::S_IFREG
    }
    /// The (parent, name) the inode was last reached by.
    pub fn name(&self) -> (u64, Arc<OsStr>) {
        self.names.lock()[0].clone()
    }
    /// Is (parent, name) one of the names the inode is known by?
    pub fn has_name(&self, parent: u64, name: &OsStr) -> bool {
        self.names
            .lock()
            .iter()
            .any(|(p, n)| *p == parent && &**n == name)
    }
    /// The inode was reached as (parent, name) (lookup, create): that name first.
    /// Returns whether the name was new to it.
    pub fn set_name(&self, parent: u64, name: &OsStr) -> bool {
        let mut names = self.names.lock();
        if names[0].0 == parent && &*names[0].1 == name {
            return false;
        }
        match names.iter().position(|(p, n)| *p == parent && &**n == name) {
            Some(i) => {
                names[..=i].rotate_right(1);
                false
            }
            None => {
                names.insert(0, (parent, Arc::from(name)));
                names.truncate(MAX_NAMES);
                true
            }
        }
    }
    /// Every name the inode is known by except (parent, name).
    pub fn other_names(&self, parent: u64, name: &OsStr) -> Vec<(u64, Arc<OsStr>)> {
        self.names
            .lock()
            .iter()
            .filter(|(p, n)| !(*p == parent && &**n == name))
            .cloned()
            .collect()
    }
    /// A new hard link (parent, name) was made: known by it too, but the name the
    /// inode was reached by stays first until a lookup reaches it by the new one.
    pub fn add_name(&self, parent: u64, name: &OsStr) {
        let mut names = self.names.lock();
        if !names.iter().any(|(p, n)| *p == parent && &**n == name) && names.len() < MAX_NAMES {
            names.push((parent, Arc::from(name)));
        }
    }
    /// The name (parent, name) no longer leads to this inode (unlinked, or replaced by
    /// a rename). The last name is kept: a file still open is journaled under it.
    pub fn drop_name(&self, parent: u64, name: &OsStr) {
        let mut names = self.names.lock();
        if names.len() > 1 {
            names.retain(|(p, n)| !(*p == parent && &**n == name));
        }
    }
    /// Renamed from (from_parent, from) to (parent, name): the old name goes, the new
    /// one is first.
    pub fn rename_name(&self, from_parent: u64, from: &OsStr, parent: u64, name: &OsStr) {
        let _ = self.set_name(parent, name);
        let mut names = self.names.lock();
        if names.len() > 1 && !(from_parent == parent && from == name) {
            names.retain(|(p, n)| !(*p == from_parent && &**n == from));
        }
    }
}

/// All inodes the kernel currently holds a lookup count on (plus the root).
#[derive(Debug)]
pub struct InodeTable {
    by_id: RwLock<HashMap<u64, Arc<Inode>>>,
    /// Synthetic id allocator (see the module doc).
    next_synthetic: AtomicU64,
    synthetic: Mutex<HashMap<FileKey, u64>>,
    root_dev: u64,
    root_ino: u64,
    /// Use clock for [`Inode`]'s LRU stamp.
    tick: AtomicU64,
    /// File handles, the fd cache and the pinned-fd count (see [`super::fdcache`]).
    fds: Arc<FdCache>,
    /// Set by [`super::SessionFs::new`]: wakes eviction when the table grows too big.
    pub pressure: std::sync::OnceLock<super::pressure::Pressure>,
}

impl InodeTable {
    /// Table holding only the root, whose O_PATH fd is `root_fd` (pinned: the root is
    /// never forgotten). `handles`: reach the other inodes by file handles where the
    /// backing supports them (see [`super::fdcache`]), keeping at most `fd_cache` O_PATH
    /// fds open for them; else one pinned fd per inode.
    pub fn new(root_fd: OwnedFd, st: &libc::stat, handles: bool, fd_cache: usize) -> Self {
        let fds = Arc::new(FdCache::new(root_fd.as_fd(), handles, fd_cache));
        let handle = fds.handle_of(root_fd.as_fd());
        let root = Arc::new(Inode::new(
            ROOT_ID,
            st,
            handle,
            Some(root_fd),
            fds.clone(),
            1 << 40, // never forgotten
            (ROOT_ID, Arc::from(OsStr::from_bytes(b""))),
        ));
        let mut by_id = HashMap::new();
        by_id.insert(ROOT_ID, root);
        Self {
            by_id: RwLock::new(by_id),
            next_synthetic: AtomicU64::new(SYNTHETIC_BASE),
            synthetic: Mutex::new(HashMap::new()),
            root_dev: st.st_dev,
            root_ino: st.st_ino,
            tick: AtomicU64::new(0),
            fds,
            pressure: std::sync::OnceLock::new(),
        }
    }

    /// The mount's fd cache (handle mode, counts).
    pub fn fds(&self) -> &FdCache {
        &self.fds
    }

    /// Inodes holding a pinned fd (root, fallback, removed through us).
    pub fn pinned(&self) -> usize {
        self.fds.pinned()
    }

    /// Stamp `inode` as used now (LRU order for inode pressure).
    pub fn touch(&self, inode: &Inode) {
        let t = self.tick.fetch_add(1, Ordering::Relaxed);
        inode.used.store(t, Ordering::Relaxed);
    }

    /// Up to `n` node ids of the least recently used inodes that the kernel may drop:
    /// not the root, not directories, no open handle (the table holds the only
    /// reference); with `pinned_only`, only inodes that hold a pinned fd.
    pub fn idle_lru(&self, n: usize, pinned_only: bool) -> Vec<u64> {
        let mut idle: Vec<(u64, u64)> = self
            .by_id
            .read()
            .values()
            .filter(|i| is_idle(i, 1) && (!pinned_only || i.is_pinned()))
            .map(|i| (i.used.load(Ordering::Relaxed), i.id))
            .collect();
        idle.sort_unstable_by_key(|(used, _)| *used);
        idle.into_iter().take(n).map(|(_, id)| id).collect()
    }

    /// (parent id, name) of inode `id` if it is still idle right now (see
    /// [`Self::idle_lru`]): re-checked just before its dentry is dropped, so that a
    /// file opened meanwhile keeps its name.
    pub fn still_idle(&self, id: u64) -> Option<(u64, Arc<OsStr>)> {
        let inode = self.get(id)?;
        // The map's reference and ours.
        is_idle(&inode, 2).then(|| inode.name())
    }

    /// Node id under which a backing (dev, ino) is served: its own number when
    /// [`Self::direct_id`] allows, else a synthetic id (allocated on first use, kept
    /// for the life of the mount).
    pub fn id_for(&self, dev: u64, ino: u64) -> u64 {
        if dev == self.root_dev && ino == self.root_ino {
            return ROOT_ID;
        }
        if let Some(id) = self.direct_id(dev, ino) {
            return id;
        }
        let mut map = self.synthetic.lock();
        *map.entry(FileKey { dev, ino }).or_insert_with(|| {
            let id = self.next_synthetic.fetch_add(1, Ordering::Relaxed);
            assert!(id < VIRTUAL_BASE, "synthetic node ids exhausted");
            id
        })
    }

    /// The node id of a backing inode served under its own number: on the root's
    /// device and in `[2, 2^62)`, so it can be neither the root's id (1), nor 0, nor
    /// in the synthetic or virtual ranges.
    fn direct_id(&self, dev: u64, ino: u64) -> Option<u64> {
        (dev == self.root_dev && (ROOT_ID + 1..SYNTHETIC_BASE).contains(&ino)).then_some(ino)
    }

    /// The inode of backing file `key`, if the kernel holds it (allocates no id).
    pub fn find(&self, key: FileKey) -> Option<Arc<Inode>> {
        let id = if key.dev == self.root_dev && key.ino == self.root_ino {
            ROOT_ID
        } else if let Some(id) = self.direct_id(key.dev, key.ino) {
            id
        } else {
            *self.synthetic.lock().get(&key)?
        };
        self.get(id).filter(|i| i.key() == key)
    }

    /// The inode with node id `id`, if the kernel holds it. ENOENT-worthy when `None`.
    pub fn get(&self, id: u64) -> Option<Arc<Inode>> {
        self.by_id.read().get(&id).cloned()
    }

    /// Root inode.
    pub fn root(&self) -> Arc<Inode> {
        self.get(ROOT_ID).expect("root is never forgotten")
    }

    /// Record one kernel lookup of the backing object `fd`/`st` reached as
    /// (`parent`, `name`): returns the existing inode (count + 1) or inserts a new one
    /// (count 1), and whether `name` was new to an inode already known by other names.
    /// `fd` becomes the new inode's fd (pinned in the fallback, else cached), or fills
    /// the cache for a known inode without one. A known (dev, ino) whose file handle differs
    /// from `fd`'s is a stale entry (its file is gone and a new one got its number):
    /// it is replaced under the same id, keeping the kernel's lookup count.
    pub fn lookup(
        &self,
        fd: OwnedFd,
        st: &libc::stat,
        parent: u64,
        name: &OsStr,
    ) -> (Arc<Inode>, bool) {
        let id = self.id_for(st.st_dev, st.st_ino);
        let known = self.by_id.read().get(&id).cloned();
        // Checked outside the table lock (it may cost a name_to_handle_at).
        if let Some(inode) = known.filter(|i| i.same_object(fd.as_fd(), None)) {
            inode.lookups.fetch_add(1, Ordering::AcqRel);
            let new_name = inode.set_name(parent, name);
            self.touch(&inode);
            if inode.handle.is_some() && !inode.is_pinned() {
                self.fds.offer(inode.id, fd);
            }
            return (inode, new_name);
        }
        let handle = self.fds.handle_of(fd.as_fd());
        let mut map = self.by_id.write();
        let (inode, new_name) = match map.get(&id) {
            // Inserted or refilled by a racing lookup meanwhile: the name may be new.
            Some(i) if i.same_object(fd.as_fd(), handle.as_ref()) => {
                i.lookups.fetch_add(1, Ordering::AcqRel);
                let new_name = i.set_name(parent, name);
                (i.clone(), new_name)
            }
            stale => {
                // Replacing a stale entry: the kernel's lookups of the id go on, and
                // the old file's names are gone with it.
                let lookups = stale.map_or(0, |i| i.lookups.load(Ordering::Acquire));
                if let Some(old) = stale {
                    tracing::debug!(
                        id,
                        old = ?old.handle,
                        new = ?handle,
                        "inode number reused: stale entry replaced"
                    );
                }
                // Without a handle the inode keeps `fd` for its life; else it is cached.
                let (pin, cache) = if handle.is_some() {
                    (None, Some(fd))
                } else {
                    (Some(fd), None)
                };
                let inode = Arc::new(Inode::new(
                    id,
                    st,
                    handle,
                    pin,
                    self.fds.clone(),
                    lookups + 1,
                    (parent, Arc::from(name)),
                ));
                // A replaced entry drops here (and its cached fd with it).
                map.insert(id, inode.clone());
                if let Some(fd) = cache {
                    self.fds.offer(id, fd);
                }
                (inode, false)
            }
        };
        let len = map.len();
        drop(map);
        self.touch(&inode);
        if let Some(p) = self.pressure.get() {
            p.check(len, self.fds.pinned());
        }
        (inode, new_name)
    }

    /// The inode of backing object `fd` (stat `st`), if the kernel holds it: as
    /// [`Self::find`], and not a stale entry whose inode number `fd`'s file reused.
    pub fn find_fd(&self, fd: BorrowedFd<'_>, st: &libc::stat) -> Option<Arc<Inode>> {
        self.find(FileKey::of(st))
            .filter(|i| i.same_object(fd, None))
    }

    /// Insert the backing object `fd`/`st`, reached as (`parent`, `name`), under a
    /// node id the kernel holds from an earlier daemon of the connection: its lookup
    /// count is unknown, so it is marked [`ADOPTED`] and its next FORGET (the kernel
    /// sends its whole count when it evicts the inode) drops it.
    pub fn adopt(&self, fd: OwnedFd, st: &libc::stat, parent: u64, name: &OsStr) -> Arc<Inode> {
        let (inode, _) = self.lookup(fd, st, parent, name);
        if inode.lookups.load(Ordering::Acquire) < ADOPTED {
            inode.lookups.fetch_add(ADOPTED, Ordering::AcqRel);
        }
        inode
    }

    /// Add one lookup to an inode already in the table (link, readdirplus of a known entry).
    pub fn add_lookup(&self, inode: &Inode) {
        inode.lookups.fetch_add(1, Ordering::AcqRel);
    }

    /// Kernel FORGET: drop `n` lookups; the entry (and its O_PATH fd) goes at 0.
    pub fn forget(&self, id: u64, n: u64) {
        if id == ROOT_ID {
            return;
        }
        let mut map = self.by_id.write();
        let gone = match map.get(&id) {
            Some(inode) => {
                let prev = inode.lookups.fetch_sub(
                    n.min(inode.lookups.load(Ordering::Acquire)),
                    Ordering::AcqRel,
                );
                prev <= n || prev >= ADOPTED
            }
            None => false,
        };
        if gone {
            // A synthetic id stays allocated to its file (~40 B): a readdirplus reply
            // may carry it to the kernel while this FORGET runs, and the file keeps
            // one st_ino for the life of the mount (OpenClaw's fence compares it).
            map.remove(&id);
        }
    }

    /// Number of inodes in the table (root included).
    pub fn len(&self) -> usize {
        self.by_id.read().len()
    }

    /// Path of an inode relative to the root, from remembered names (journal use only;
    /// may be stale after a rename outside our sight). Empty for the root.
    pub fn path_of(&self, inode: &Inode) -> String {
        if inode.id == ROOT_ID {
            return String::new();
        }
        self.path_from(inode.name())
    }

    /// [`Self::path_of`], through the name `via` (parent, name) while it still leads
    /// to `inode` (the name a handle was opened by), else through its current name.
    pub fn path_via(&self, inode: &Inode, via: &(u64, Arc<OsStr>)) -> String {
        if inode.id == ROOT_ID {
            return String::new();
        }
        if inode.has_name(via.0, &via.1) {
            self.path_from(via.clone())
        } else {
            self.path_from(inode.name())
        }
    }

    /// Path of the entry `name` in directory `parent`, up the remembered names.
    fn path_from(&self, (mut parent, name): (u64, Arc<OsStr>)) -> String {
        let mut parts: Vec<Arc<OsStr>> = vec![name];
        let mut guard = 0;
        while parent != ROOT_ID && guard < 64 {
            match self.get(parent) {
                Some(p) => {
                    let (pp, n) = p.name();
                    parts.push(n);
                    parent = pp;
                }
                None => break,
            }
            guard += 1;
        }
        let mut out = String::new();
        for (i, p) in parts.iter().rev().enumerate() {
            if i > 0 {
                out.push('/');
            }
            out.push_str(&crate::names::encode(p.as_bytes()));
        }
        out
    }
}
