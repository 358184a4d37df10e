//! Fence bookkeeping: the backing fingerprint each inode had after our last change or
//! open, which decides whether the kernel may keep its page cache, and which makes a
//! change made around the mount stand out as an `external` record.
//!
//! The fingerprint is OpenClaw's fence without `dev`: (size, mtime ns, ctime ns)
//! (source: OpenClaw 2026.5.22 session file fence `{dev, ino, size, mtimeNs, ctimeNs}`).

use std::os::fd::AsFd;

use super::inode::Inode;
use super::{SessionFs, attr};
use crate::journal::record::{Class, Fingerprint, Op, Record};

impl SessionFs {
    /// Whether the kernel may keep its page cache for this open: only while the backing
    /// still matches what the cache was filled from (through us).
    pub(super) fn keep_cache(&self, inode: &Inode, st: Option<&libc::stat>) -> bool {
        let Some(st) = st else { return false };
        if !inode.is_file() {
            return false;
        }
        let f = attr::fingerprint(st);
        let now = (f.size, f.mtime_ns, f.ctime_ns);
        let mut k = inode.known.lock();
        let keep = !k.stale && k.fp == Some(now);
        k.fp = Some(now);
        k.meta = Some(meta(st));
        k.stale = false;
        keep
    }

    /// Remember the backing state we caused, so that `external` changes stand out.
    /// A cache made stale by an outside change stays stale (see [`super::inode::Known`]).
    pub(super) fn mark_known(&self, inode: &Inode, st: &libc::stat) {
        let f = attr::fingerprint(st);
        let mut k = inode.known.lock();
        k.fp = Some((f.size, f.mtime_ns, f.ctime_ns));
        k.meta = Some(meta(st));
    }

    /// A backing stat we did not cause: record an `external` change (and drop the
    /// kernel's cache for this inode at its next open). `own_busy`: mutations of ours
    /// the caller itself has in flight on `inode` (1 under a [`super::inode::Mutation`]);
    /// any more and the check is skipped, since a moved stat may then be ours. `seen`:
    /// [`Inode::changes`] read before `st` was taken; if a change of ours started or
    /// ended since, `st` may predate it (a GETATTR racing a WRITE) and proves nothing.
    pub(super) fn check_external(&self, inode: &Inode, st: &libc::stat, own_busy: u32, seen: u64) {
        if !inode.is_file()
            || self.journal.is_none()
            || inode.busy_count() > own_busy
            || inode.changes() != seen
        {
            return;
        }
        let f = attr::fingerprint(st);
        let now = (f.size, f.mtime_ns, f.ctime_ns);
        let (prev, drift) = {
            let mut k = inode.known.lock();
            let prev = k.fp;
            // ctime only moves forward (the kernel sets it to the current time on every
            // change): a stat with an older ctime than the one we know was taken before
            // it, and raced a change of ours that another path (an open's keep-cache
            // check) recorded. It proves nothing; an outside change would show a newer
            // ctime. (Seen once in 4 storms: a false `external` with ctime going back.)
            if prev.is_some_and(|p| now.2 < p.2) {
                return;
            }
            // Only the ctime moved, and none of mode, owner, links: drift, not a change.
            let drift = !self.cfg.strict_stat
                && prev.is_some_and(|p| p.0 == now.0 && p.1 == now.1 && p.2 != now.2)
                && k.meta == Some(meta(st));
            if prev.is_some() && prev != Some(now) {
                // Recorded once. The next open must not keep the cache even on a
                // drift: same size and mtime do not prove the same bytes.
                k.fp = Some(now);
                k.meta = Some(meta(st));
                k.stale = true;
            }
            (prev, drift)
        };
        let Some(p) = prev.filter(|p| *p != now) else {
            return;
        };
        // A transcript in the line index whose lines changed is no drift, whatever
        // its stat says (a same-size rewrite that put mtime back, as `cp -p` does).
        let lines_moved = drift
            && self.is_transcript(inode)
            && inode.read_fd().ok().is_some_and(|rfd| {
                self.tracker
                    .external_change(inode.key(), rfd.as_fd())
                    .is_some_and(|c| !c.entries.is_empty() || !c.removed.is_empty())
            });
        if drift && !lines_moved {
            self.ctime_drift(inode, st, p);
            return;
        }
        let path = self.inodes.path_of(inode);
        // A transcript we indexed: which entries the outside change removed and added
        // (by the line index; the removed bytes were never seen).
        let mut change = if self.is_transcript(inode)
            && let Ok(rfd) = inode.read_fd()
        {
            self.tracker.external_change(inode.key(), rfd.as_fd())
        } else {
            None
        };
        // Lookup and getattr come here without the inode's order lock: if a change of
        // ours began while the file was read, the comparison may hold its lines too.
        // Name nothing then, and let the index be rebuilt.
        if change.is_some() && (inode.busy_count() > own_busy || inode.changes() != seen) {
            change = None;
            self.tracker.forget(inode.key());
        }
        let mut rec = Record {
            op: Op::External,
            path,
            file: self.file_ref(inode),
            ts: String::new(), // stamped by the journal, in seq order
            result: "ok".into(),
            size_before: Some(p.0),
            size_after: Some(f.size),
            before: Some(Fingerprint {
                ino: inode.ino,
                size: p.0,
                mtime_ns: p.1,
                ctime_ns: p.2,
            }),
            after: Some(f),
            class: Some(Class::External),
            fence_moved: Some(true),
            ..Default::default()
        };
        if let Some(c) = change {
            rec.entries = Some(c.entries).filter(|v| !v.is_empty());
            rec.removed = Some(c.removed).filter(|v| !v.is_empty());
            rec.partial = Some(c.partial).filter(|n| *n > 0);
        }
        if let Some(j) = &self.journal {
            j.append(rec);
        }
    }

    /// The backing ctime of `inode` drifted from `prev` to `st`'s alone: keep reporting
    /// the times reported before (see [`super::shown`]) and journal one `ctime-drift`.
    fn ctime_drift(&self, inode: &Inode, st: &libc::stat, prev: (u64, i64, i64)) {
        let before = Fingerprint {
            ino: inode.ino,
            size: prev.0,
            mtime_ns: prev.1,
            ctime_ns: prev.2,
        };
        // What the mount reported for the previous state (itself perhaps remembered).
        let mut was = *st;
        was.st_ctime = prev.2.div_euclid(1_000_000_000);
        was.st_ctime_nsec = prev.2.rem_euclid(1_000_000_000);
        let (m, c) = self.shown.times(&was);
        self.shown.remember(st, m, c);
        let rec = Record {
            op: Op::CtimeDrift,
            path: self.inodes.path_of(inode),
            file: self.file_ref(inode),
            result: "ok".into(),
            size_before: Some(prev.0),
            size_after: Some(st.st_size as u64),
            before: Some(before),
            after: Some(attr::fingerprint(st)),
            class: Some(Class::Noop),
            fence_moved: Some(false),
            ..Default::default()
        };
        if let Some(j) = &self.journal {
            j.append(rec);
        }
    }
}

/// (mode, uid, gid, nlink) of a backing stat.
fn meta(st: &libc::stat) -> (u32, u32, u32, u64) {
    (st.st_mode, st.st_uid, st.st_gid, st.st_nlink)
}
