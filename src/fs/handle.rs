//! Open file and directory handles: each wraps a backing fd opened with the caller's
//! flags, plus the counters the `release` journal record sums up.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use super::inode::Inode;

/// An open regular file (or other non-directory).
#[derive(Debug)]
pub struct FileHandle {
    /// Backing fd, opened with the caller's access mode and O_APPEND.
    pub fd: OwnedFd,
    /// The inode it was opened on.
    pub inode: Arc<Inode>,
    /// The (parent id, name) the inode was reached by when it was opened: records of
    /// this handle name the file by it while it still leads there (hard links).
    pub via: (u64, Arc<std::ffi::OsStr>),
    /// Open flags as the kernel sent them.
    pub flags: i32,
    /// Whether writes are journaled (write access).
    pub writable: bool,
    /// Opened with `FOPEN_DIRECT_IO` (see [`super::inode::Inode::open_direct`]): the
    /// kernel's page cache is bypassed for its reads and writes.
    pub direct: bool,
    /// READ requests served.
    pub reads: AtomicU64,
    /// Bytes read.
    pub read_bytes: AtomicU64,
    /// WRITE requests served.
    pub writes: AtomicU64,
    /// Bytes written.
    pub write_bytes: AtomicU64,
    /// Who opened it: RELEASE comes from the kernel (pid 0) after the last close, so
    /// its record carries the opener's identity.
    pub opener: Option<crate::identity::Caller>,
    /// The process that last wrote through it, when not the opener (`sh -c 'exec
    /// python3 … >> f'`: `sh` opens, `python3` writes and closes); the `release`
    /// record names it.
    pub last_writer: Mutex<Option<crate::identity::Caller>>,
}

impl FileHandle {
    /// Borrow the backing fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
    /// Opened with O_APPEND?
    pub fn append(&self) -> bool {
        self.flags & libc::O_APPEND != 0
    }
    /// Count one read of `n` bytes.
    pub fn count_read(&self, n: usize) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.read_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
    /// Remember `caller` as the last writer if it is another process than the one
    /// remembered (or the opener).
    pub fn note_writer(&self, caller: &crate::identity::Caller) {
        // Page-cache writeback (mmap) comes from the kernel, with no process.
        if caller.process.is_none() {
            return;
        }
        let same = |c: &crate::identity::Caller| match (&c.process, &caller.process) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        let mut last = self.last_writer.lock();
        let known = last.as_ref().or(self.opener.as_ref());
        if !known.is_some_and(same) {
            *last = Some(caller.clone());
        }
    }
    /// Count one write of `n` bytes.
    pub fn count_write(&self, n: usize) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.write_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// An open directory stream. `DIR*` is not thread-safe, hence the mutex.
#[derive(Debug)]
pub struct DirHandle {
    /// The directory inode.
    pub inode: Arc<Inode>,
    /// Backing directory stream.
    pub stream: Mutex<DirStream>,
    /// Entries read at offset 0, served by index.
    snapshot: Mutex<Option<Arc<Vec<DirEntry>>>>,
}

/// A `DIR*` owned by us.
#[derive(Debug)]
pub struct DirStream(pub *mut libc::DIR);

// SAFETY: the DIR* is only used under the DirHandle mutex, one thread at a time.
unsafe impl Send for DirStream {}

impl Drop for DirStream {
    fn drop(&mut self) {
        // SAFETY: the pointer came from fdopendir and is closed exactly once here.
        unsafe { libc::closedir(self.0) };
    }
}

/// Handle table: the u64 fh the kernel echoes back → handle.
#[derive(Debug, Default)]
pub struct Handles<T> {
    map: RwLock<HashMap<u64, Arc<T>>>,
    next: AtomicU64,
}

impl<T> Handles<T> {
    /// Empty table; handle numbers start at [`crate::resume::handle_base`], so a
    /// daemon resuming a live connection never hands out a number the kernel still
    /// holds from the daemon before it.
    pub fn new() -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
            next: AtomicU64::new(crate::resume::handle_base()),
        }
    }
    /// Insert, returning the fh.
    pub fn insert(&self, h: T) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        self.map.write().insert(fh, Arc::new(h));
        fh
    }
    /// Insert under the number `fh` an earlier daemon gave the kernel (resuming a live
    /// connection), unless a racing request inserted it first; returns the handle now
    /// under `fh`.
    pub fn insert_at(&self, fh: u64, h: T) -> Arc<T> {
        self.map
            .write()
            .entry(fh)
            .or_insert_with(|| Arc::new(h))
            .clone()
    }
    /// Look up by fh.
    pub fn get(&self, fh: u64) -> Option<Arc<T>> {
        self.map.read().get(&fh).cloned()
    }
    /// Remove by fh (release).
    pub fn remove(&self, fh: u64) -> Option<Arc<T>> {
        self.map.write().remove(&fh)
    }
    /// Number of open handles.
    pub fn len(&self) -> usize {
        self.map.read().len()
    }
}

/// One directory entry of a snapshot.
#[derive(Debug, Clone)]
pub struct DirEntry {
    /// Backing `d_ino`; for a virtual entry, its node id (as `virtual_id`).
    pub ino: u64,
    /// `S_IFMT` bits, from `d_type`, or from a stat of the entry when the backing
    /// filesystem reports `DT_UNKNOWN` (as `ls` does); 0 if that stat fails (the
    /// entry vanished meanwhile).
    pub kind: u32,
    /// Entry name.
    pub name: std::ffi::OsString,
    /// Node id of a virtual entry (`.journal`), 0 for backing entries.
    pub virtual_id: u64,
}

/// `S_IFMT` bits of entry `name` in directory `dir`, by `fstatat` (no follow); 0 when
/// it cannot be stated.
pub(super) fn kind_by_stat(dir: impl std::os::fd::AsFd, name: &std::ffi::OsStr) -> u32 {
    crate::sys::cname(name)
        .and_then(|c| crate::sys::fstatat(dir, &c))
        .map_or(0, |st| st.st_mode & libc::S_IFMT)
}

impl DirHandle {
    /// Open the backing directory for reading.
    pub fn open(inode: Arc<Inode>) -> crate::sys::SysResult<Self> {
        let fd = inode.open(libc::O_RDONLY | libc::O_DIRECTORY)?;
        let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
        // SAFETY: `raw` is an open directory fd we own; fdopendir takes ownership of it.
        let dir = unsafe { libc::fdopendir(raw) };
        if dir.is_null() {
            let e = nix::errno::Errno::last();
            // SAFETY: fdopendir failed, so we still own `raw`.
            unsafe { libc::close(raw) };
            return Err(e);
        }
        Ok(Self {
            inode,
            stream: Mutex::new(DirStream(dir)),
            snapshot: Mutex::new(None),
        })
    }

    /// The directory's entries, read once per stream (at offset 0) so that offsets
    /// (index + 1) stay stable across READDIR calls; `extra` (virtual entries) follow.
    pub fn entries(
        &self,
        offset: u64,
        extra: Vec<DirEntry>,
    ) -> crate::sys::SysResult<Arc<Vec<DirEntry>>> {
        let mut snap = self.snapshot.lock();
        if offset == 0 || snap.is_none() {
            let stream = self.stream.lock();
            // SAFETY: the DIR* is valid and used under its mutex.
            unsafe { libc::rewinddir(stream.0) };
            let mut out = Vec::new();
            loop {
                nix::errno::Errno::clear();
                // SAFETY: as above; the returned pointer is valid until the next readdir.
                let ent = unsafe { libc::readdir64(stream.0) };
                if ent.is_null() {
                    let e = nix::errno::Errno::last_raw();
                    if e != 0 {
                        return Err(nix::errno::Errno::from_raw(e));
                    }
                    break;
                }
                // SAFETY: non-null dirent from readdir64; d_name is NUL-terminated.
                let (ino, dtype, name) = unsafe {
                    let e = &*ent;
                    let name = std::ffi::CStr::from_ptr(e.d_name.as_ptr());
                    (
                        e.d_ino,
                        e.d_type,
                        std::ffi::OsStr::from_bytes(name.to_bytes()).to_os_string(),
                    )
                };
                let kind = match dtype {
                    libc::DT_DIR => libc::S_IFDIR,
                    libc::DT_LNK => libc::S_IFLNK,
                    libc::DT_FIFO => libc::S_IFIFO,
                    libc::DT_SOCK => libc::S_IFSOCK,
                    libc::DT_CHR => libc::S_IFCHR,
                    libc::DT_BLK => libc::S_IFBLK,
                    libc::DT_REG => libc::S_IFREG,
                    // DT_UNKNOWN (xfs without ftype, isofs, some network filesystems).
                    _ => {
                        // The stream's own fd: a directory fd serves `fstatat` as well.
                        // SAFETY: valid DIR* under its mutex (held: `stream`).
                        let fd = unsafe { libc::dirfd(stream.0) };
                        // SAFETY: `fd` stays open while the stream lock is held.
                        kind_by_stat(unsafe { BorrowedFd::borrow_raw(fd) }, &name)
                    }
                };
                out.push(DirEntry {
                    ino,
                    kind,
                    name,
                    virtual_id: 0,
                });
            }
            out.extend(extra);
            *snap = Some(Arc::new(out));
        }
        Ok(snap.as_ref().expect("filled above").clone())
    }

    /// Entries in the stream's snapshot (0 before the first READDIR).
    pub fn snapshot_len(&self) -> usize {
        self.snapshot.lock().as_ref().map_or(0, |s| s.len())
    }

    /// fsync/fdatasync of the directory.
    pub fn fsync(&self, datasync: bool) -> crate::sys::SysResult<()> {
        let stream = self.stream.lock();
        // SAFETY: valid DIR* under its mutex.
        let fd = unsafe { libc::dirfd(stream.0) };
        // SAFETY: fd stays open while we hold the stream lock.
        let r = unsafe {
            if datasync {
                libc::fdatasync(fd)
            } else {
                libc::fsync(fd)
            }
        };
        if r == 0 {
            Ok(())
        } else {
            Err(nix::errno::Errno::last())
        }
    }
}
