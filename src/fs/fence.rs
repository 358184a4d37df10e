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
use crate::sys;

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
        k.stale = false;
        keep
    }

    /// Remember the backing state we caused, so that `external` changes stand out.
    /// A cache made stale by an outside change stays stale (see [`super::inode::Known`]).
    pub(super) fn mark_known(&self, inode: &Inode, st: &libc::stat) {
        let f = attr::fingerprint(st);
        inode.known.lock().fp = Some((f.size, f.mtime_ns, f.ctime_ns));
    }

    /// Stat a file inode outside any change of ours (LOOKUP) and check it.
    pub(super) fn note_external(&self, inode: &Inode) {
        let g = inode.changes();
        if inode.is_file()
            && let Ok(st) = sys::fstat(inode.fd())
        {
            self.check_external(inode, &st, 0, g);
        }
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
        let prev = {
            let mut k = inode.known.lock();
            let prev = k.fp;
            if prev.is_some() && prev != Some(now) {
                // Recorded once; the next open must not keep the stale cache.
                k.fp = Some(now);
                k.stale = true;
            }
            prev
        };
        let Some(p) = prev.filter(|p| *p != now) else {
            return;
        };
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
}
