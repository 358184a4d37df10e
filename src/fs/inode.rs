//! The inode table: one entry per backing (dev, ino), each holding an O_PATH fd and the
//! exact kernel lookup count (model: libfuse `passthrough_hp.cc`).
//!
//! Node ids: FUSE ties the node id to `st_ino` (fuser sends `attr.ino` as nodeid), so
//! a backing inode on the root's device is served under its own `st_ino`, the root
//! under 1, and an inode of any other device under a synthetic id with bit 62 set.
//! Holding the O_PATH fd pins the backing inode, so its number cannot be reused while
//! the kernel still knows the node id.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

/// FUSE node id of the mount root.
pub const ROOT_ID: u64 = 1;
/// Synthetic node ids for inodes of foreign devices.
const FOREIGN_BIT: u64 = 1 << 62;
/// Node ids at and above this are virtual files (journals), never backing inodes.
pub const VIRTUAL_BASE: u64 = 1 << 63;

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
    /// O_PATH|O_NOFOLLOW fd on the backing object.
    pub fd: OwnedFd,
    /// Kernel lookup count; the entry is dropped when it reaches 0.
    lookups: AtomicU64,
    /// Last known (parent id, name), for journal paths only; never used to resolve.
    name: Mutex<(u64, Arc<OsStr>)>,
    /// Backing fingerprint (size, mtime_ns, ctime_ns) the kernel's page cache is known
    /// to match; `FOPEN_KEEP_CACHE` is given only while the backing still matches it.
    pub cache_fp: Mutex<Option<(u64, i64, i64)>>,
    /// Read-only fd for transcript decoding, opened on first use and kept while a
    /// writable handle is open (so idle inodes cost one fd, not two).
    read_fd: Mutex<Option<Arc<OwnedFd>>>,
    /// Writable handles open on this inode.
    writers: std::sync::atomic::AtomicU32,
    /// Mutations of this inode in flight through us; while non-zero, a changed backing
    /// stat is ours, not `external`.
    busy: std::sync::atomic::AtomicU32,
    /// Journal order: an operation that records a change of this inode holds it from
    /// before the change until its record is appended. A WRITE replies to the kernel
    /// while holding it, so the inode's next operation is recorded after the write.
    pub order: Mutex<()>,
    /// See [`Inode::changes`].
    changes: AtomicU64,
    /// Table tick of the last lookup, getattr or open (LRU order for inode pressure).
    used: AtomicU64,
}

/// Droppable by inode pressure: not the root, not a directory, and referenced only
/// `refs` times (the table's entry, plus the caller's own clone if any): no open file
/// or directory handle, no request in flight holds it.
fn is_idle(i: &Arc<Inode>, refs: usize) -> bool {
    i.id != ROOT_ID && i.kind != libc::S_IFDIR && Arc::strong_count(i) == refs
}

/// Marks an inode as being changed by us for the guard's lifetime.
#[derive(Debug)]
pub struct Busy<'a>(&'a Inode);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.changes.fetch_add(1, Ordering::AcqRel);
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Inode {
    /// Mark a mutation in flight until the guard drops.
    pub fn busy(&self) -> Busy<'_> {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.changes.fetch_add(1, Ordering::AcqRel);
        Busy(self)
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
        let fd = crate::sys::reopen(self.fd(), libc::O_RDONLY | libc::O_NOATIME)
            .or_else(|_| crate::sys::reopen(self.fd(), libc::O_RDONLY))?;
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

    /// Borrow the O_PATH fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
    /// Is this a regular file?
    pub fn is_file(&self) -> bool {
        self.kind == libc::S_IFREG
    }
    /// Last known (parent, name).
    pub fn name(&self) -> (u64, Arc<OsStr>) {
        self.name.lock().clone()
    }
    /// Remember a new (parent, name) after lookup/create/rename.
    pub fn set_name(&self, parent: u64, name: &OsStr) {
        let mut n = self.name.lock();
        if n.0 != parent || &*n.1 != name {
            *n = (parent, Arc::from(name));
        }
    }
}

/// All inodes the kernel currently holds a lookup count on (plus the root).
#[derive(Debug)]
pub struct InodeTable {
    by_id: RwLock<HashMap<u64, Arc<Inode>>>,
    /// Synthetic id allocator for foreign-device inodes.
    next_foreign: AtomicU64,
    foreign: Mutex<HashMap<(u64, u64), u64>>,
    root_dev: u64,
    root_ino: u64,
    /// Use clock for [`Inode`]'s LRU stamp.
    tick: AtomicU64,
    /// Set by [`super::SessionFs::new`]: wakes eviction when the table grows too big.
    pub pressure: std::sync::OnceLock<super::pressure::Pressure>,
}

impl InodeTable {
    /// Table holding only the root, whose O_PATH fd is `root_fd`.
    pub fn new(root_fd: OwnedFd, st: &libc::stat) -> Self {
        let root = Arc::new(Inode {
            id: ROOT_ID,
            dev: st.st_dev,
            ino: st.st_ino,
            kind: st.st_mode & libc::S_IFMT,
            fd: root_fd,
            lookups: AtomicU64::new(1 << 40), // never forgotten
            name: Mutex::new((ROOT_ID, Arc::from(OsStr::from_bytes(b"")))),
            cache_fp: Mutex::new(None),
            read_fd: Mutex::new(None),
            writers: Default::default(),
            busy: Default::default(),
            order: Mutex::new(()),
            changes: AtomicU64::new(0),
            used: AtomicU64::new(0),
        });
        let mut by_id = HashMap::new();
        by_id.insert(ROOT_ID, root);
        Self {
            by_id: RwLock::new(by_id),
            next_foreign: AtomicU64::new(FOREIGN_BIT),
            foreign: Mutex::new(HashMap::new()),
            root_dev: st.st_dev,
            root_ino: st.st_ino,
            tick: AtomicU64::new(0),
            pressure: std::sync::OnceLock::new(),
        }
    }

    /// Stamp `inode` as used now (LRU order for inode pressure).
    pub fn touch(&self, inode: &Inode) {
        let t = self.tick.fetch_add(1, Ordering::Relaxed);
        inode.used.store(t, Ordering::Relaxed);
    }

    /// Up to `n` node ids of the least recently used inodes that the kernel may drop:
    /// not the root, not directories, no open handle (the table holds the only
    /// reference).
    pub fn idle_lru(&self, n: usize) -> Vec<u64> {
        let mut idle: Vec<(u64, u64)> = self
            .by_id
            .read()
            .values()
            .filter(|i| is_idle(i, 1))
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

    /// Node id under which a backing (dev, ino) is served.
    pub fn id_for(&self, dev: u64, ino: u64) -> u64 {
        if dev == self.root_dev {
            if ino == self.root_ino { ROOT_ID } else { ino }
        } else {
            *self
                .foreign
                .lock()
                .entry((dev, ino))
                .or_insert_with(|| self.next_foreign.fetch_add(1, Ordering::Relaxed))
        }
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
    /// (count 1). `fd` is dropped if the inode was already known.
    pub fn lookup(&self, fd: OwnedFd, st: &libc::stat, parent: u64, name: &OsStr) -> Arc<Inode> {
        let id = self.id_for(st.st_dev, st.st_ino);
        if let Some(inode) = self.by_id.read().get(&id) {
            inode.lookups.fetch_add(1, Ordering::AcqRel);
            inode.set_name(parent, name);
            self.touch(inode);
            return inode.clone();
        }
        let mut map = self.by_id.write();
        let inode = map.entry(id).or_insert_with(|| {
            Arc::new(Inode {
                id,
                dev: st.st_dev,
                ino: st.st_ino,
                kind: st.st_mode & libc::S_IFMT,
                fd,
                lookups: AtomicU64::new(0),
                name: Mutex::new((parent, Arc::from(name))),
                cache_fp: Mutex::new(None),
                read_fd: Mutex::new(None),
                writers: Default::default(),
                busy: Default::default(),
                order: Mutex::new(()),
                changes: AtomicU64::new(0),
                used: AtomicU64::new(0),
            })
        });
        inode.lookups.fetch_add(1, Ordering::AcqRel);
        inode.set_name(parent, name);
        let inode = inode.clone();
        let len = map.len();
        drop(map);
        self.touch(&inode);
        if let Some(p) = self.pressure.get() {
            p.check(len);
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
                prev <= n
            }
            None => false,
        };
        if gone
            && let Some(inode) = map.remove(&id)
            && inode.dev != self.root_dev
        {
            self.foreign.lock().remove(&(inode.dev, inode.ino));
        }
    }

    /// Number of inodes in the table (root included).
    pub fn len(&self) -> usize {
        self.by_id.read().len()
    }

    /// Path of an inode relative to the root, from remembered names (journal use only;
    /// may be stale after a rename outside our sight). Empty for the root.
    pub fn path_of(&self, inode: &Inode) -> String {
        let mut parts: Vec<Arc<OsStr>> = Vec::new();
        let (mut parent, name) = inode.name();
        if inode.id == ROOT_ID {
            return String::new();
        }
        parts.push(name);
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
            out.push_str(&String::from_utf8_lossy(p.as_bytes()));
        }
        out
    }
}
