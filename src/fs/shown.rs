//! Stat that moves only when something changed: remembered times the mount reports
//! instead of the backing file's, while the backing file is exactly as it was when
//! they were remembered.
//!
//! OpenClaw's fence compares `{dev, ino, size, mtimeNs, ctimeNs}` (source: OpenClaw
//! 2026.5.22 session file fence). Two things move them without changing anything:
//! - an in-place rewrite that puts back the very same bytes (a header migration that
//!   migrates nothing): when the rewrite ends with the file byte for byte what it was
//!   (same size, same keyed hash of the content), the mount keeps reporting the
//!   mtime and ctime it reported before the rewrite;
//! - backing ctime drift: the backing ctime moved while ino, size, mtime, mode, uid,
//!   gid and nlink did not and nothing came through the mount (Btrfs maintenance,
//!   OpenClaw issue #92109): the mount keeps reporting the last ctime, and journals one
//!   `ctime-drift` record.
//!
//! The backing file is never touched: the mount reports a remembered time. A
//! remembered time applies only while the backing stat is exactly the one it was
//! remembered for; any real change (through the mount, or around it) drops it. It is
//! kept in `<state dir>/stat-overrides.json`, so it survives a daemon restart.
//! `--strict-stat` turns all of this off.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::sys::FileKey;

/// File name of the persisted overrides in the state dir.
pub const FILE: &str = "stat-overrides.json";

/// The backing stat an override was made for: every field the fence or a caller could
/// see move, except the times it replaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backing {
    /// `st_size`, bytes.
    pub size: u64,
    /// Backing mtime, ns since the epoch.
    pub mtime_ns: i64,
    /// Backing ctime, ns since the epoch.
    pub ctime_ns: i64,
    /// `st_mode` (type and permission bits).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count.
    pub nlink: u64,
}

impl Backing {
    /// The fields of a backing stat.
    pub fn of(st: &libc::stat) -> Self {
        Self {
            size: st.st_size as u64,
            mtime_ns: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec,
            ctime_ns: st.st_ctime * 1_000_000_000 + st.st_ctime_nsec,
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            nlink: st.st_nlink,
        }
    }
}

/// Times the mount reports for a file while its backing stat is `backing`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shown {
    /// The backing stat this applies to.
    pub backing: Backing,
    /// mtime to report, ns since the epoch.
    pub mtime_ns: i64,
    /// ctime to report, ns since the epoch.
    pub ctime_ns: i64,
}

/// One persisted entry (JSON: `{"dev":…,"ino":…,"backing":{…},"mtime_ns":…,"ctime_ns":…}`).
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    dev: u64,
    ino: u64,
    #[serde(flatten)]
    shown: Shown,
}

/// The remembered times of one mount.
#[derive(Debug)]
pub struct Overrides {
    map: Mutex<HashMap<FileKey, Shown>>,
    /// Fast path: nothing remembered (the common case).
    empty: AtomicBool,
    /// Where they persist; `None`: in memory only (no state dir).
    file: Option<PathBuf>,
}

impl Overrides {
    /// The overrides persisted in `state_dir` (none if the file is missing or bad:
    /// then the mount reports backing times, which is always safe).
    pub fn load(state_dir: Option<PathBuf>) -> Self {
        let file = state_dir.map(|d| d.join(FILE));
        let map: HashMap<FileKey, Shown> = file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|b| serde_json::from_slice::<Vec<Entry>>(&b).ok())
            .unwrap_or_default()
            .into_iter()
            .map(|e| {
                (
                    FileKey {
                        dev: e.dev,
                        ino: e.ino,
                    },
                    e.shown,
                )
            })
            .collect();
        Self {
            empty: AtomicBool::new(map.is_empty()),
            map: Mutex::new(map),
            file,
        }
    }

    /// The times to report for backing stat `st`: the remembered ones if they were
    /// remembered for exactly this backing state, else the backing ones (a stale
    /// override is dropped). Returns (mtime ns, ctime ns).
    pub fn times(&self, st: &libc::stat) -> (i64, i64) {
        let b = Backing::of(st);
        if self.empty.load(Ordering::Acquire) {
            return (b.mtime_ns, b.ctime_ns);
        }
        let key = FileKey::of(st);
        let mut map = self.map.lock();
        match map.get(&key) {
            Some(s) if s.backing == b => (s.mtime_ns, s.ctime_ns),
            Some(_) => {
                map.remove(&key);
                self.saved(&map);
                (b.mtime_ns, b.ctime_ns)
            }
            None => (b.mtime_ns, b.ctime_ns),
        }
    }

    /// Report `mtime_ns`/`ctime_ns` for file `st` while its backing stat stays `st`.
    pub fn remember(&self, st: &libc::stat, mtime_ns: i64, ctime_ns: i64) {
        let b = Backing::of(st);
        let mut map = self.map.lock();
        if b.mtime_ns == mtime_ns && b.ctime_ns == ctime_ns {
            map.remove(&FileKey::of(st));
        } else {
            map.insert(
                FileKey::of(st),
                Shown {
                    backing: b,
                    mtime_ns,
                    ctime_ns,
                },
            );
        }
        self.saved(&map);
    }

    /// A real change of `key` came through the mount: report backing times again.
    pub fn forget(&self, key: FileKey) {
        if self.empty.load(Ordering::Acquire) {
            return;
        }
        let mut map = self.map.lock();
        if map.remove(&key).is_some() {
            self.saved(&map);
        }
    }

    /// Persist `map` (write to a temp file, then rename: never a torn file) and update
    /// the fast path. A failure is logged; the overrides stay in memory.
    fn saved(&self, map: &HashMap<FileKey, Shown>) {
        self.empty.store(map.is_empty(), Ordering::Release);
        let Some(f) = &self.file else { return };
        let entries: Vec<Entry> = map
            .iter()
            .map(|(k, s)| Entry {
                dev: k.dev,
                ino: k.ino,
                shown: *s,
            })
            .collect();
        let tmp = f.with_extension("json.tmp");
        let res = serde_json::to_vec(&entries)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, f));
        if let Err(e) = res {
            tracing::warn!(file = %f.display(), error = %e, "cannot save remembered stat times");
        }
    }
}

/// A keyed 64-bit hash of `bytes` (SipHash with this daemon's random key): compares a
/// file's content before and after a rewrite without keeping a copy.
pub fn content_hash(keys: &std::collections::hash_map::RandomState, bytes: &[u8]) -> u64 {
    keys.hash_one(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(size: i64, mtime: i64, ctime: i64) -> libc::stat {
        // SAFETY: libc::stat is plain data; all-zero is a valid value.
        let mut s: libc::stat = unsafe { std::mem::zeroed() };
        s.st_dev = 1;
        s.st_ino = 7;
        s.st_size = size;
        s.st_mtime = mtime;
        s.st_ctime = ctime;
        s.st_mode = libc::S_IFREG | 0o600;
        s.st_nlink = 1;
        s
    }

    #[test]
    fn remembered_times_apply_to_exactly_their_backing_state_and_persist() {
        let d = tempfile::tempdir().unwrap();
        let o = Overrides::load(Some(d.path().into()));
        let now = st(10, 5, 6);
        assert_eq!(o.times(&now), (5_000_000_000, 6_000_000_000));
        o.remember(&now, 5_000_000_000, 4_000_000_000);
        assert_eq!(o.times(&now), (5_000_000_000, 4_000_000_000));
        // Survives a restart.
        let o2 = Overrides::load(Some(d.path().into()));
        assert_eq!(o2.times(&now), (5_000_000_000, 4_000_000_000));
        // Any other backing state drops it, for good.
        let grown = st(11, 7, 7);
        assert_eq!(o2.times(&grown), (7_000_000_000, 7_000_000_000));
        assert_eq!(o2.times(&now), (5_000_000_000, 6_000_000_000));
        let o3 = Overrides::load(Some(d.path().into()));
        assert_eq!(o3.times(&now), (5_000_000_000, 6_000_000_000));
        // A change through the mount drops it too.
        o3.remember(&now, 1, 2);
        o3.forget(FileKey::of(&now));
        assert_eq!(o3.times(&now), (5_000_000_000, 6_000_000_000));
    }
}
