//! The salvage store: the bytes of removed transcript lines, one append-only file per
//! file lineage (`<state-dir>/salvage/<ino>-<birth_ns>-<uid>`, see [`super::View`]),
//! written synchronously before the change that removes them.
//!
//! Bounded: the store keeps at most [`SalvageBounds::max_bytes`] in all and
//! [`SalvageBounds::file_max_bytes`] per file (its share, so one rewrite-heavy file
//! cannot evict every other). Past its share, a file loses its oldest lines (the front
//! of its salvage file is cut at a line boundary); past the total, whole files are
//! evicted, least recently written first. Each eviction is reported to the caller,
//! which journals it. A line whose bytes a file's salvage already holds is not stored
//! again (a rewrite loop cuts and restores the same lines over and over).
//!
//! Offsets into a salvage file shift down when its front is cut, like a journal view's
//! when retention drops a segment.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions, Permissions};
use std::hash::{BuildHasher, RandomState};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::time::SystemTime;

use parking_lot::Mutex;

use super::FILE_MODE;

/// Bounds of the salvage store, bytes.
#[derive(Clone, Copy, Debug)]
pub struct SalvageBounds {
    /// All salvage files together. Default 1 GiB.
    pub max_bytes: u64,
    /// One file's salvage. Default an eighth of `max_bytes`.
    pub file_max_bytes: u64,
}

impl Default for SalvageBounds {
    fn default() -> Self {
        Self {
            max_bytes: 1 << 30,
            file_max_bytes: 1 << 27,
        }
    }
}

/// Bytes dropped from the salvage store by its bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Eviction {
    /// Salvage file name (`<ino>-<birth_ns>-<uid>`).
    pub name: String,
    /// Bytes dropped.
    pub bytes: u64,
    /// Lines dropped (a trailing partial line counts as one).
    pub lines: u64,
    /// `"file share"` (the file passed its share) or `"total"` (the store passed its
    /// bound; the whole file went).
    pub reason: &'static str,
}

/// What the store knows of one salvage file.
#[derive(Debug)]
struct Known {
    len: u64,
    modified: SystemTime,
    /// 128-bit keyed hashes of the lines stored (loaded on first append).
    lines: Option<HashSet<u128>>,
}

/// The salvage store of one journal (see the module doc). Every call is serialised by
/// one lock; appends of journal records never take it.
#[derive(Debug)]
pub struct SalvageStore {
    dir: PathBuf,
    bounds: SalvageBounds,
    hashers: (RandomState, RandomState),
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    files: HashMap<String, Known>,
    total: u64,
}

/// `bytes` split after each newline (a trailing piece without one is the last line).
fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes.split_inclusive(|b| *b == b'\n')
}

impl SalvageStore {
    /// The store in `dir` (created 0700 by the journal): sizes of the files there now.
    pub fn open(dir: PathBuf, bounds: SalvageBounds) -> io::Result<Self> {
        let mut files = HashMap::new();
        let mut total = 0;
        for e in fs::read_dir(&dir)?.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if !m.is_file() {
                continue;
            }
            if m.permissions().mode() & 0o7777 != FILE_MODE {
                // Made before the mode rule, or under a umask.
                let _ = fs::set_permissions(e.path(), Permissions::from_mode(FILE_MODE));
            }
            total += m.len();
            files.insert(
                e.file_name().to_string_lossy().into_owned(),
                Known {
                    len: m.len(),
                    modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    lines: None,
                },
            );
        }
        Ok(Self {
            dir,
            bounds,
            hashers: (RandomState::new(), RandomState::new()),
            inner: Mutex::new(Inner { files, total }),
        })
    }

    fn hash(&self, line: &[u8]) -> u128 {
        let a = self.hashers.0.hash_one(line) as u128;
        let b = self.hashers.1.hash_one(line) as u128;
        (a << 64) | b
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The line hashes of `name` (read from its file the first time).
    fn loaded<'a>(&self, inner: &'a mut Inner, name: &str) -> &'a mut Known {
        let k = inner.files.entry(name.to_string()).or_insert(Known {
            len: 0,
            modified: SystemTime::now(),
            lines: None,
        });
        if k.lines.is_none() {
            let bytes = fs::read(self.dir.join(name)).unwrap_or_default();
            k.lines = Some(lines(&bytes).map(|l| self.hash(l)).collect());
        }
        k
    }

    /// Append the lines of `bytes` that `name`'s salvage does not hold yet, durably
    /// before returning (page cache: they survive a `kill -9` of the daemon). Returns
    /// the span `[start, end)` the new bytes took (empty when every line was held) and
    /// the evictions the bounds made. On an I/O error (logged) nothing is stored.
    pub fn append(&self, name: &str, bytes: &[u8]) -> ((u64, u64), Vec<Eviction>) {
        let mut inner = self.inner.lock();
        let k = self.loaded(&mut inner, name);
        let start = k.len;
        let set = k.lines.as_mut().expect("loaded");
        let mut new = Vec::with_capacity(bytes.len());
        let mut added = Vec::new();
        for l in lines(bytes) {
            let h = self.hash(l);
            if set.insert(h) {
                new.extend_from_slice(l);
                added.push(h);
            }
        }
        if new.is_empty() {
            return ((start, start), Vec::new());
        }
        if let Err(e) = self.write_at_end(name, start, &new) {
            tracing::error!(file = name, error = %e, "salvage write failed");
            let set = k.lines.as_mut().expect("loaded");
            for h in added {
                set.remove(&h);
            }
            return ((start, start), Vec::new());
        }
        k.len += new.len() as u64;
        k.modified = SystemTime::now();
        inner.total += new.len() as u64;
        let end = start + new.len() as u64;
        let ev = self.enforce(&mut inner, name);
        ((start, end), ev)
    }

    /// Append `bytes` at `at` (the file's known end) of `name`, creating it 0600; a
    /// partial write is cut back.
    fn write_at_end(&self, name: &str, at: u64, bytes: &[u8]) -> io::Result<()> {
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.path(name))?;
        if f.metadata()?.permissions().mode() & 0o7777 != FILE_MODE {
            f.set_permissions(Permissions::from_mode(FILE_MODE))?;
        }
        if let Err(e) = f.write_all(bytes) {
            let _ = f.set_len(at);
            return Err(e);
        }
        Ok(())
    }

    /// Apply the bounds after `name` grew: its share first, then the total (evicting
    /// other files, least recently written first, and `name` itself last).
    fn enforce(&self, inner: &mut Inner, name: &str) -> Vec<Eviction> {
        let mut out = Vec::new();
        let share = self.bounds.file_max_bytes.max(1);
        if inner.files.get(name).is_some_and(|k| k.len > share) {
            // Cut to 3/4 of the share, so the copy is paid once per quarter share.
            if let Some(e) = self.cut_front(inner, name, share - share / 4) {
                out.push(e);
            }
        }
        while inner.total > self.bounds.max_bytes {
            let victim = inner
                .files
                .iter()
                .filter(|(n, k)| n.as_str() != name && k.len > 0)
                .min_by_key(|(_, k)| k.modified)
                .map(|(n, _)| n.clone());
            let Some(v) = victim else {
                // Only `name` is left: cut it to the bound.
                if let Some(e) = self.cut_front(inner, name, self.bounds.max_bytes) {
                    out.push(e);
                }
                break;
            };
            let k = inner.files.remove(&v).expect("found");
            let bytes = fs::read(self.path(&v)).unwrap_or_default();
            if let Err(e) = fs::remove_file(self.path(&v))
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::error!(file = %v, error = %e, "salvage eviction failed");
                inner.files.insert(v, k);
                break;
            }
            inner.total = inner.total.saturating_sub(k.len);
            out.push(Eviction {
                name: v,
                bytes: k.len,
                lines: lines(&bytes).count() as u64,
                reason: "total",
            });
        }
        out
    }

    /// Drop the oldest lines of `name` until at most `keep` bytes remain (whole lines:
    /// the cut is at a line start). Rewrites the file (temp file, rename).
    fn cut_front(&self, inner: &mut Inner, name: &str, keep: u64) -> Option<Eviction> {
        let bytes = fs::read(self.path(name)).ok()?;
        let over = (bytes.len() as u64).saturating_sub(keep) as usize;
        if over == 0 {
            return None;
        }
        // The first line start at or after `over`.
        let at = bytes[over - 1..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |i| over + i);
        let (gone, kept) = bytes.split_at(at);
        let tmp = self.path(&format!(".{name}.tmp"));
        let r = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(FILE_MODE)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            f.write_all(kept)?;
            fs::rename(&tmp, self.path(name))
        })();
        if let Err(e) = r {
            tracing::error!(file = name, error = %e, "salvage share cut failed");
            let _ = fs::remove_file(&tmp);
            return None;
        }
        let k = inner.files.get_mut(name)?;
        k.len = kept.len() as u64;
        if let Some(set) = k.lines.as_mut() {
            for l in lines(gone) {
                set.remove(&self.hash(l));
            }
        }
        inner.total = inner.total.saturating_sub(gone.len() as u64);
        Some(Eviction {
            name: name.to_string(),
            bytes: gone.len() as u64,
            lines: lines(gone).count() as u64,
            reason: "file share",
        })
    }

    /// Replace the bytes of `name` from `start` on by the lines of `keep` it does not
    /// hold before `start`, if the file is exactly `expect_len` bytes long (nothing
    /// else was salvaged for it since) and `start <= expect_len`: returns true. Else
    /// the file is left as it is and this returns false. `keep` is written over the old
    /// bytes before the file is cut, so a lost rewind (crash) leaves at worst extra
    /// salvage, never too little.
    pub fn rewind(&self, name: &str, start: u64, expect_len: u64, keep: &[u8]) -> bool {
        let mut inner = self.inner.lock();
        let len = inner.files.get(name).map_or(0, |k| k.len);
        if len != expect_len || start > expect_len {
            return false;
        }
        if keep.is_empty() && start == expect_len {
            return true;
        }
        let k = self.loaded(&mut inner, name);
        let p = self.dir.join(name);
        let old = File::open(&p)
            .and_then(|f| {
                let mut b = vec![0u8; (expect_len - start) as usize];
                f.read_exact_at(&mut b, start)?;
                Ok(b)
            })
            .unwrap_or_default();
        let set = k.lines.as_mut().expect("loaded");
        for l in lines(&old) {
            set.remove(&self.hash(l));
        }
        let mut new = Vec::with_capacity(keep.len());
        for l in lines(keep) {
            if set.insert(self.hash(l)) {
                new.extend_from_slice(l);
            }
        }
        let r = OpenOptions::new()
            .write(true)
            .create(true)
            .mode(FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&p)
            .and_then(|f| {
                f.write_all_at(&new, start)?;
                f.set_len(start + new.len() as u64)
            });
        match r {
            Ok(()) => {
                k.len = start + new.len() as u64;
                k.modified = SystemTime::now();
                inner.total = inner.total + (start + new.len() as u64) - expect_len;
                true
            }
            Err(e) => {
                tracing::error!(file = name, error = %e, "salvage rewind failed");
                // What the file holds now is unknown: re-read it on next use.
                k.lines = None;
                if let Ok(m) = fs::metadata(&p) {
                    inner.total = inner.total + m.len() - len;
                    if let Some(k) = inner.files.get_mut(name) {
                        k.len = m.len();
                    }
                }
                false
            }
        }
    }

    /// Byte length of `name`'s salvage (0 when there is none).
    pub fn len(&self, name: &str) -> u64 {
        self.inner.lock().files.get(name).map_or(0, |k| k.len)
    }

    /// Total bytes of the store.
    pub fn total(&self) -> u64 {
        self.inner.lock().total
    }

    /// Bytes `[offset, offset+size)` of `name`'s salvage (shorter at the end).
    pub fn read(&self, name: &str, offset: u64, size: usize) -> Vec<u8> {
        let inner = self.inner.lock();
        let len = inner.files.get(name).map_or(0, |k| k.len);
        if offset >= len {
            return Vec::new();
        }
        let Ok(f) = File::open(self.path(name)) else {
            return Vec::new();
        };
        let n = ((len - offset) as usize).min(size);
        let mut out = vec![0u8; n];
        let mut got = 0;
        while got < n {
            match f.read_at(&mut out[got..], offset + got as u64) {
                Ok(0) | Err(_) => break,
                Ok(k) => got += k,
            }
        }
        out.truncate(got);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(max: u64, share: u64) -> (tempfile::TempDir, SalvageStore) {
        let d = tempfile::tempdir().unwrap();
        let s = SalvageStore::open(
            d.path().into(),
            SalvageBounds {
                max_bytes: max,
                file_max_bytes: share,
            },
        )
        .unwrap();
        (d, s)
    }

    #[test]
    fn identical_lines_are_stored_once() {
        let (_d, s) = store(1 << 20, 1 << 20);
        assert_eq!(s.append("a", b"x\ny\n").0, (0, 4));
        assert_eq!(s.append("a", b"y\nx\nz\n").0, (4, 6));
        assert_eq!(s.read("a", 0, 100), b"x\ny\nz\n");
        // Another file stores its own copy.
        assert_eq!(s.append("b", b"x\n").0, (0, 2));
        // A rewind that keeps a line held before `start` does not store it twice.
        assert!(s.rewind("a", 4, 6, b"x\nw\n"));
        assert_eq!(s.read("a", 0, 100), b"x\ny\nw\n");
        // z is no longer held: it is stored again when salvaged again.
        assert_eq!(s.append("a", b"z\n").0, (6, 8));
        assert_eq!(s.total(), 8 + 2);
    }

    #[test]
    fn a_file_past_its_share_loses_its_oldest_lines() {
        let (_d, s) = store(1 << 20, 40);
        let mut ev = Vec::new();
        for i in 0..10 {
            ev.extend(s.append("a", format!("line {i:03}\n").as_bytes()).1);
        }
        // 9 bytes a line, share 40: cut to 30 when it passes 40.
        let got = String::from_utf8(s.read("a", 0, 1000)).unwrap();
        assert!(got.ends_with("line 009\n"), "{got}");
        assert!(s.len("a") <= 40 && got.lines().all(|l| l.starts_with("line ")));
        assert!(!ev.is_empty() && ev.iter().all(|e| e.reason == "file share"));
        let dropped: u64 = ev.iter().map(|e| e.lines).sum();
        assert_eq!(dropped + got.lines().count() as u64, 10);
        // A dropped line is no longer held: salvaged again, it is stored again.
        let (start, end) = s.append("a", b"line 000\n").0;
        assert_eq!(end - start, 9);
    }

    #[test]
    fn past_the_total_the_least_recently_written_file_goes() {
        let (_d, s) = store(30, 30);
        s.append("old", b"0123456789\n");
        std::thread::sleep(std::time::Duration::from_millis(20));
        s.append("mid", b"abcdefghij\n");
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (_, ev) = s.append("new", b"ABCDEFGHIJ\n");
        assert_eq!(
            ev,
            vec![Eviction {
                name: "old".into(),
                bytes: 11,
                lines: 1,
                reason: "total"
            }]
        );
        assert_eq!(s.len("old"), 0);
        assert_eq!(s.read("mid", 0, 100), b"abcdefghij\n");
        assert_eq!(s.total(), 22);
        // Reopened: the sizes are read back.
        let s2 = SalvageStore::open(s.dir.clone(), s.bounds).unwrap();
        assert_eq!(s2.total(), 22);
        assert_eq!(s2.read("new", 0, 100), b"ABCDEFGHIJ\n");
    }
}
