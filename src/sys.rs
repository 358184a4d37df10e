//! Thin, safe wrappers over the syscalls the passthrough core needs that `nix` does not
//! cover (or covers awkwardly): `/proc/self/fd` re-opens, xattrs on O_PATH fds, fsuid guards,
//! file handles (`name_to_handle_at`/`open_by_handle_at`).
//!
//! Every function returns `Err(Errno)` with the syscall's errno unchanged, so FUSE
//! replies carry exactly what ext4 would have said.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;

/// `Result` with the raw errno.
pub type SysResult<T> = Result<T, Errno>;

/// `/proc/self/fd/<fd>` as a C string: the way to reach the object an O_PATH fd
/// refers to without re-resolving any name (the magic link never follows further).
pub fn proc_fd_path(fd: RawFd) -> CString {
    CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL in a formatted path")
}

/// Name argument as a C string; EINVAL for names with NUL (the kernel never sends them).
pub fn cname(name: &OsStr) -> SysResult<CString> {
    CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)
}

fn check(ret: libc::c_int) -> SysResult<libc::c_int> {
    if ret < 0 { Err(Errno::last()) } else { Ok(ret) }
}

fn check_size(ret: libc::ssize_t) -> SysResult<usize> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret as usize)
    }
}

/// `openat(dirfd, name, flags, mode)` returning an owned fd. `O_CLOEXEC` is always added.
pub fn openat(dirfd: impl AsFd, name: &CStr, flags: i32, mode: u32) -> SysResult<OwnedFd> {
    // SAFETY: `name` is a valid NUL-terminated string and `dirfd` a live descriptor for
    // the duration of the call; the kernel does not retain either pointer.
    let fd = check(unsafe {
        libc::openat(
            dirfd.as_fd().as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode,
        )
    })?;
    // SAFETY: `fd` was just returned by openat, is valid and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Re-open the object behind an O_PATH fd with new `flags` (through `/proc/self/fd`).
/// O_CREAT/O_EXCL/O_NOFOLLOW are stripped: the object exists and the magic link must
/// be followed to reach it.
pub fn reopen(fd: impl AsFd, flags: i32) -> SysResult<OwnedFd> {
    let path = proc_fd_path(fd.as_fd().as_raw_fd());
    let flags = flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW);
    // SAFETY: `path` is a valid C string for the duration of the call.
    let fd = check(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) })?;
    // SAFETY: fresh descriptor from open, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fstatat(fd, "", AT_EMPTY_PATH)`: stat of the object an (O_PATH) fd refers to.
pub fn fstat(fd: impl AsFd) -> SysResult<libc::stat> {
    nix::sys::stat::fstatat(
        fd,
        "",
        nix::fcntl::AtFlags::AT_EMPTY_PATH | nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
}

/// `fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW)`.
pub fn fstatat(dirfd: impl AsFd, name: &CStr) -> SysResult<libc::stat> {
    nix::sys::stat::fstatat(dirfd, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
}

/// Identity of a backing object for the journal's per-file views: (inode number,
/// birth time in ns since the epoch or 0 where the filesystem keeps none, owner uid),
/// by `statx(dirfd, name, AT_SYMLINK_NOFOLLOW)`; an empty `name` means `dirfd` itself
/// (`AT_EMPTY_PATH`, works on O_PATH fds). Errors: the errno of `statx`.
pub fn identity_at(dirfd: BorrowedFd<'_>, name: &CStr) -> SysResult<(u64, i64, u32)> {
    let mut flags = libc::AT_SYMLINK_NOFOLLOW | libc::AT_STATX_SYNC_AS_STAT;
    if name.is_empty() {
        flags |= libc::AT_EMPTY_PATH;
    }
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `name` is NUL-terminated, `dirfd` is a live fd for the call, and `stx`
    // points to writable memory the size of `struct statx` (zeroed, so every field is
    // initialised whatever the kernel fills).
    let r = unsafe {
        libc::statx(
            dirfd.as_raw_fd(),
            name.as_ptr(),
            flags,
            libc::STATX_INO | libc::STATX_UID | libc::STATX_BTIME,
            stx.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(Errno::last());
    }
    // SAFETY: zero-initialised above and filled by a successful statx.
    let stx = unsafe { stx.assume_init() };
    let birth = if stx.stx_mask & libc::STATX_BTIME != 0 {
        stx.stx_btime.tv_sec * 1_000_000_000 + i64::from(stx.stx_btime.tv_nsec)
    } else {
        0
    };
    Ok((stx.stx_ino, birth, stx.stx_uid))
}

/// `renameat2(olddir, old, newdir, new, flags)` (RENAME_NOREPLACE / RENAME_EXCHANGE pass through).
pub fn renameat2(
    olddir: impl AsFd,
    old: &CStr,
    newdir: impl AsFd,
    new: &CStr,
    flags: u32,
) -> SysResult<()> {
    // SAFETY: both names are valid C strings and both fds are live for the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            olddir.as_fd().as_raw_fd(),
            old.as_ptr(),
            newdir.as_fd().as_raw_fd(),
            new.as_ptr(),
            flags,
        ) as libc::c_int
    })
    .map(drop)
}

/// The path xattr calls take to the object behind an O_PATH fd: its `/proc/self/fd`
/// magic link, which resolves to the object itself (a symlink included) without
/// opening it, so special files need no open and nothing further is followed.
fn xattr_path(fd: BorrowedFd<'_>) -> CString {
    proc_fd_path(fd.as_raw_fd())
}

/// `getxattr` on the object behind an O_PATH fd. `size == 0` asks for the length.
pub fn getxattr(fd: impl AsFd, name: &CStr, buf: &mut [u8]) -> SysResult<usize> {
    let path = xattr_path(fd.as_fd());
    // SAFETY: valid C strings; `buf` is a valid writable region of `buf.len()` bytes.
    check_size(unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })
}

/// `listxattr` on the object behind an O_PATH fd.
pub fn listxattr(fd: impl AsFd, buf: &mut [u8]) -> SysResult<usize> {
    let path = xattr_path(fd.as_fd());
    // SAFETY: valid C string; `buf` is writable for `buf.len()` bytes.
    check_size(unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })
}

/// `setxattr` on the object behind an O_PATH fd.
pub fn setxattr(fd: impl AsFd, name: &CStr, value: &[u8], flags: i32) -> SysResult<()> {
    let path = xattr_path(fd.as_fd());
    // SAFETY: valid C strings; `value` readable for its length.
    check(unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

/// `removexattr` on the object behind an O_PATH fd.
pub fn removexattr(fd: impl AsFd, name: &CStr) -> SysResult<()> {
    let path = xattr_path(fd.as_fd());
    // SAFETY: valid C strings.
    check(unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) }).map(drop)
}

/// `pread` into `buf`; returns bytes read (short at EOF).
pub fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> SysResult<usize> {
    nix::sys::uio::pread(fd, buf, offset as libc::off_t)
}

/// `pwrite` of `buf`; on an O_APPEND fd Linux appends at EOF whatever `offset` says.
pub fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], offset: u64) -> SysResult<usize> {
    nix::sys::uio::pwrite(fd, buf, offset as libc::off_t)
}

/// One WRITE on a backing fd that may have been opened `O_APPEND`, with the append
/// mode of *this* write (the caller's current file flags, which `fcntl(F_SETFL)` may
/// have changed since the open): `append` writes at the real end of file whatever
/// `offset` says (`RWF_APPEND`); otherwise the write lands at `offset` even on an
/// `O_APPEND` fd (`RWF_NOAPPEND`, Linux ≥ 6.9). Returns the bytes written.
///
/// # Errors
/// The errno of `pwritev2`. On a kernel without `RWF_NOAPPEND` (EINVAL/EOPNOTSUPP) a
/// non-append write to an `O_APPEND` fd falls back to plain `pwrite`, which appends.
pub fn pwrite_mode(
    fd: BorrowedFd<'_>,
    buf: &[u8],
    offset: u64,
    append: bool,
    fd_append: bool,
) -> SysResult<usize> {
    let flags = if append {
        libc::RWF_APPEND
    } else if fd_append {
        libc::RWF_NOAPPEND
    } else {
        return pwrite(fd, buf, offset);
    };
    let iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: one iovec describing `buf`, valid for the call; the kernel only reads it.
    let r = unsafe { libc::pwritev2(fd.as_raw_fd(), &iov, 1, offset as libc::off_t, flags) };
    match check_size(r) {
        Err(Errno::EINVAL | Errno::EOPNOTSUPP) if !append => pwrite(fd, buf, offset),
        r => r,
    }
}

/// `lseek(fd, offset, whence)` with any whence (SEEK_DATA/SEEK_HOLE included).
pub fn lseek(fd: BorrowedFd<'_>, offset: i64, whence: i32) -> SysResult<i64> {
    // SAFETY: plain syscall on a live fd.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), offset, whence) };
    if r < 0 { Err(Errno::last()) } else { Ok(r) }
}

/// `fallocate(fd, mode, offset, len)` with any mode bits.
pub fn fallocate(fd: BorrowedFd<'_>, mode: i32, offset: u64, len: u64) -> SysResult<()> {
    // SAFETY: plain syscall on a live fd.
    check(unsafe { libc::fallocate(fd.as_raw_fd(), mode, offset as i64, len as i64) }).map(drop)
}

/// `mknodat(dirfd, name, mode, rdev)`.
pub fn mknodat(dirfd: impl AsFd, name: &CStr, mode: u32, rdev: u64) -> SysResult<()> {
    // SAFETY: valid C string and live fd.
    check(unsafe { libc::mknodat(dirfd.as_fd().as_raw_fd(), name.as_ptr(), mode, rdev) }).map(drop)
}

/// `utimensat` on the object behind an O_PATH fd (works for symlinks too: the magic
/// link names the object itself).
pub fn utimens(fd: impl AsFd, times: &[libc::timespec; 2]) -> SysResult<()> {
    let path = proc_fd_path(fd.as_fd().as_raw_fd());
    // SAFETY: valid C string and a pointer to two timespecs as utimensat requires.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), times.as_ptr(), 0) }).map(drop)
}

/// Longest file handle the kernel hands out, bytes (`MAX_HANDLE_SZ` in
/// `include/linux/exportfs.h`).
pub const MAX_HANDLE_SZ: usize = 128;

/// A file handle (`name_to_handle_at(2)`): names one backing inode on its filesystem
/// by what the filesystem's export operations put in it (ext4: inode number and
/// generation, 8 bytes). Unlike an fd it holds nothing open, and unlike `(dev, ino)`
/// it never names a later file that reused the inode number (the generation differs),
/// and it names the same file across renames, across a daemon restart and across a
/// remount of the filesystem. Reopened with [`open_by_handle`].
///
/// Serialise it as [`Self::handle_type`] plus [`Self::bytes`]; [`Self::from_parts`]
/// rebuilds it.
#[derive(Clone, PartialEq, Eq, Hash)]
#[cfg_attr(not(test), allow(dead_code))] // accessors: for the restart work to come
pub struct FsHandle {
    handle_type: i32,
    bytes: Box<[u8]>,
}

impl std::fmt::Debug for FsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FsHandle({}:", self.handle_type)?;
        for b in &*self.bytes {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

#[cfg_attr(not(test), allow(dead_code))] // for the restart work to come
impl FsHandle {
    /// The filesystem's handle type (`file_handle.handle_type`: ext4's
    /// `FILEID_INO32_GEN` is 1); opaque, but part of the handle.
    pub fn handle_type(&self) -> i32 {
        self.handle_type
    }

    /// The handle's opaque bytes (`file_handle.f_handle`), at most [`MAX_HANDLE_SZ`].
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// A handle from its type and bytes (as [`Self::handle_type`] and [`Self::bytes`]
    /// gave them); `None` when `bytes` is empty or longer than [`MAX_HANDLE_SZ`]. The
    /// kernel checks the rest when it is opened (ESTALE or EINVAL for a bad one).
    pub fn from_parts(handle_type: i32, bytes: &[u8]) -> Option<Self> {
        (!bytes.is_empty() && bytes.len() <= MAX_HANDLE_SZ).then(|| Self {
            handle_type,
            bytes: bytes.into(),
        })
    }
}

/// `struct file_handle` with room for the largest handle.
#[repr(C)]
struct RawFileHandle {
    handle_bytes: libc::c_uint,
    handle_type: libc::c_int,
    f_handle: [u8; MAX_HANDLE_SZ],
}

/// `name_to_handle_at(fd, "", AT_EMPTY_PATH)`: the file handle of the object `fd`
/// refers to (an O_PATH fd will do; a symlink is not followed) and the id of the mount
/// it was reached through (`/proc/self/mountinfo`'s first field). Needs no privilege.
///
/// # Errors
/// EOPNOTSUPP when the filesystem cannot make handles (no export operations: procfs,
/// overlayfs without `nfs_export`, some FUSE filesystems); EOVERFLOW for a handle
/// longer than [`MAX_HANDLE_SZ`]; else the syscall's errno.
pub fn name_to_handle(fd: impl AsFd) -> SysResult<(FsHandle, i32)> {
    let mut raw = RawFileHandle {
        handle_bytes: MAX_HANDLE_SZ as libc::c_uint,
        handle_type: 0,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `raw` is a `struct file_handle` whose `handle_bytes` says how much room
    // follows it (MAX_HANDLE_SZ bytes, which it has); the empty name is a valid C
    // string; `mount_id` is a valid int to write. The kernel keeps no pointer.
    check(unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            fd.as_fd().as_raw_fd(),
            c"".as_ptr(),
            &mut raw as *mut RawFileHandle,
            &mut mount_id as *mut libc::c_int,
            libc::AT_EMPTY_PATH,
        ) as libc::c_int
    })?;
    let n = (raw.handle_bytes as usize).min(MAX_HANDLE_SZ);
    let h = FsHandle::from_parts(raw.handle_type, &raw.f_handle[..n]).ok_or(Errno::EOVERFLOW)?;
    Ok((h, mount_id))
}

/// `open_by_handle_at(mount_fd, handle, flags)`: open the object `handle` names, on
/// the filesystem of `mount_fd` (an fd opened without O_PATH, which the kernel
/// refuses, anywhere on that mount). `O_CLOEXEC` is always added. With `O_PATH` a
/// symlink is opened itself, not followed.
///
/// # Errors
/// EPERM without `CAP_DAC_READ_SEARCH` in the effective set (which a thread loses
/// while its fsuid is not 0: never call this inside [`as_caller`]); ESTALE when the
/// file is gone (its inode freed, or its number reused by another file); EBADF when
/// `mount_fd` is an O_PATH fd; else the syscall's errno.
pub fn open_by_handle(mount_fd: impl AsFd, handle: &FsHandle, flags: i32) -> SysResult<OwnedFd> {
    let mut raw = RawFileHandle {
        handle_bytes: handle.bytes.len() as libc::c_uint,
        handle_type: handle.handle_type,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    raw.f_handle[..handle.bytes.len()].copy_from_slice(&handle.bytes);
    // SAFETY: `raw` is a valid `struct file_handle` of `handle_bytes` bytes (at most
    // MAX_HANDLE_SZ, checked by FsHandle's constructors) that the kernel only reads;
    // `mount_fd` is live for the call.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount_fd.as_fd().as_raw_fd(),
            &raw as *const RawFileHandle,
            flags | libc::O_CLOEXEC,
        ) as libc::c_int
    })?;
    // SAFETY: fresh descriptor from open_by_handle_at, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

thread_local! {
    /// Whether this thread has its own fs_struct (so its umask is its own).
    static OWN_FS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with this thread's fsuid/fsgid set to the caller's and its umask set to
/// the caller's, so that objects it creates belong to the caller with the mode a local
/// filesystem would give (sgid directories and default ACLs are then applied by the
/// backing kernel). setfsuid/setfsgid are per-thread; the umask is made per-thread
/// with `unshare(CLONE_FS)` on first use. With FUSE_DONT_MASK the kernel leaves the
/// umask to us.
/// `groups`: the caller's supplementary groups (see [`crate::identity::Creds`]).
pub fn as_caller<T>(groups: &[u32], uid: u32, gid: u32, umask: u32, f: impl FnOnce() -> T) -> T {
    OWN_FS.with(|own| {
        if !own.get() {
            // SAFETY: unshare(CLONE_FS) only detaches this thread's cwd/root/umask.
            if unsafe { libc::unshare(libc::CLONE_FS) } == 0 {
                own.set(true);
            }
        }
    });
    // SAFETY: umask only changes this thread's (now private) file creation mask.
    let old_mask = unsafe { libc::umask(umask & 0o777) };
    let out = if uid == 0 && gid == 0 {
        f()
    } else {
        // The backing kernel checks the parent directory against the fs uid/gid and
        // the thread's supplementary groups: give it the caller's, or a caller who may
        // write only through a supplementary group gets EACCES where ext4 allows it.
        let own = daemon_groups();
        let swap = groups != own.as_slice();
        if swap {
            set_thread_groups(groups);
        }
        // SAFETY: setfsgid/setfsuid only change this thread's fs credentials.
        let old_gid = unsafe { libc::syscall(libc::SYS_setfsgid, gid) } as u32;
        // SAFETY: as above.
        let old_uid = unsafe { libc::syscall(libc::SYS_setfsuid, uid) } as u32;
        let out = f();
        // SAFETY: as above; restores the previous credentials.
        unsafe {
            libc::syscall(libc::SYS_setfsuid, old_uid);
            libc::syscall(libc::SYS_setfsgid, old_gid);
        }
        if swap {
            set_thread_groups(own);
        }
        out
    };
    // SAFETY: restores this thread's mask.
    unsafe { libc::umask(old_mask) };
    out
}

/// The daemon's own supplementary groups, read once (every thread has them outside
/// [`as_caller`]).
fn daemon_groups() -> &'static Vec<libc::gid_t> {
    static GROUPS: std::sync::OnceLock<Vec<libc::gid_t>> = std::sync::OnceLock::new();
    GROUPS.get_or_init(|| {
        nix::unistd::getgroups()
            .map(|v| v.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_default()
    })
}

/// Set this thread's supplementary groups. The raw syscall is per thread (glibc's
/// `setgroups` would change every thread of the daemon). Needs CAP_SETGID; without
/// it the groups stay as they were.
fn set_thread_groups(groups: &[libc::gid_t]) {
    // SAFETY: `groups` is a valid slice of gid_t for the duration of the call; the
    // syscall only reads it and changes this thread's credentials.
    unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
}

/// Is this fd's object a directory? (for choosing open paths)
pub fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// A backing file's identity, `(st_dev, st_ino)`: the key of every per-file state
/// (transcript line index, rewrites, lane declarations). The inode number alone is
/// not unique: a bind mount or a subvolume inside the tree has its own numbering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    /// `st_dev` of the backing object.
    pub dev: u64,
    /// `st_ino` of the backing object.
    pub ino: u64,
}

impl FileKey {
    /// The key of a backing stat.
    pub fn of(st: &libc::stat) -> Self {
        Self {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
}
