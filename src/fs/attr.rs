//! Backing `stat` → FUSE attributes, and the fence fingerprint.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};

use crate::journal::record::Fingerprint;

/// `S_IFMT` bits → FUSE file type.
pub fn kind(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

/// A time in ns since the epoch.
pub fn time_ns(ns: i64) -> SystemTime {
    time(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000))
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs((-sec) as u64) + Duration::from_nanos(nsec as u64)
    }
}

/// FUSE attributes served under node id `id`: every field from the backing stat,
/// nanosecond times included. `st_ino` seen by callers is `id`, which equals the
/// backing inode number except for the root (see `inode.rs`).
pub fn to_attr(id: u64, st: &libc::stat) -> FileAttr {
    FileAttr {
        ino: INodeNo(id),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind: kind(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

/// Root attributes report the backing root's inode number, not node id 1.
pub fn root_attr(st: &libc::stat) -> FileAttr {
    to_attr(st.st_ino, st)
}

/// The OpenClaw fence fingerprint of a backing stat
/// (source: OpenClaw 2026.5.22 `{exists, dev, ino, size, mtimeNs, ctimeNs}`).
pub fn fingerprint(st: &libc::stat) -> Fingerprint {
    Fingerprint {
        ino: st.st_ino,
        size: st.st_size as u64,
        mtime_ns: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec,
        ctime_ns: st.st_ctime * 1_000_000_000 + st.st_ctime_nsec,
    }
}
