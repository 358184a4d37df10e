//! The transcript cut/salvage protocol: no line is ever lost.
//!
//! Before a change removes lines of a transcript (truncate, overwrite, unlink of the
//! last link, rename over it, fallocate punch/zero/collapse), their bytes go to the
//! salvage store ([`SessionFs::stage_cut`]). After it ([`SessionFs::finish_cut`]):
//! on failure the salvage is taken back; on success the lines are either reported
//! `removed` at once, or held while a writable handle stays open (an in-place
//! rewrite), where complete lines written back byte for byte restore them
//! ([`SessionFs::put_back`]) until the last writable handle's release ends the
//! rewrite ([`SessionFs::end_rewrite`]).

use std::os::fd::AsFd;

use super::SessionFs;
use super::inode::Inode;
use crate::journal::Journal;
use crate::journal::record::{Entry, FileRef, Record};
use crate::sys::{self, FileKey};
use crate::transcript;

/// A transcript as it was before the in-place rewrite in progress: if the rewrite
/// ends with the same bytes, the mount keeps reporting these times.
#[derive(Debug, Clone, Copy)]
pub(super) struct Origin {
    /// Size in bytes.
    size: u64,
    /// [`super::shown::content_hash`] of the content.
    hash: u64,
    /// The mtime and ctime the mount reported, ns.
    shown: (i64, i64),
}

/// Lines a truncate or an overwrite is about to cut, their bytes already salvaged.
#[derive(Debug)]
pub(super) struct PendingCut {
    /// The file whose salvage store holds the cut bytes.
    file: FileRef,
    change: transcript::Change,
    /// Salvage store span `[start, end)` of the cut bytes.
    span: (u64, u64),
}

/// What a record says about cut lines: `removed` now, or `cut` (held for the rewrite).
#[derive(Debug, Default)]
pub(super) struct CutOutcome {
    removed: Option<Vec<Entry>>,
    held: Option<u64>,
}

impl CutOutcome {
    /// Fill `removed`/`cut` of a record.
    pub(super) fn apply(self, r: &mut Record) {
        r.removed = self.removed.filter(|v| !v.is_empty());
        r.cut = self.held.filter(|n| *n > 0);
    }
}

impl SessionFs {
    /// Before a truncate of `inode` (journal path `path`) from `old_size` to `new_size`
    /// (a transcript): the
    /// lines it will cut, their bytes already in the salvage store, so that no line is
    /// lost even if the daemon dies right after the truncate. `None` without a journal
    /// or when nothing is cut.
    pub(super) fn prepare_cut(
        &self,
        inode: &Inode,
        old_size: u64,
        new_size: u64,
    ) -> Option<PendingCut> {
        let j = self.journal.as_ref()?;
        // Not the cached fd: a truncate by path may have no writable handle to end it.
        let rfd = inode
            .open(libc::O_RDONLY | libc::O_NOATIME)
            .or_else(|_| inode.open(libc::O_RDONLY))
            .ok()?;
        let change = self
            .tracker
            .before_truncate(inode.key(), rfd.as_fd(), old_size, new_size);
        self.stage_cut(j, self.file_ref_or_root(inode), change)
    }

    /// Put the bytes of the lines `change` cuts into the salvage store of `file`.
    pub(super) fn stage_cut(
        &self,
        j: &Journal,
        file: FileRef,
        change: transcript::Change,
    ) -> Option<PendingCut> {
        if change.removed.is_empty() {
            return None;
        }
        let span = j.salvage(file, &change.salvage);
        Some(PendingCut { file, change, span })
    }

    /// After the change that cut the lines ran: on failure take their salvage back; on
    /// success either hold them for the rewrite in progress of file `hold` (a writable
    /// handle of the file stays open) or, with `None`, report them removed.
    pub(super) fn finish_cut(
        &self,
        cut: PendingCut,
        ok: bool,
        hold: Option<FileKey>,
    ) -> CutOutcome {
        let Some(j) = &self.journal else {
            return CutOutcome::default();
        };
        let PendingCut { file, change, span } = cut;
        if !ok {
            j.salvage_rewind(file, span.0, span.1, &[]);
            return CutOutcome::default();
        }
        if let Some(key) = hold {
            let n = self.rewrites.cut(key, file, change, Some(span));
            CutOutcome {
                held: Some(n),
                ..Default::default()
            }
        } else {
            CutOutcome {
                removed: Some(change.removed),
                ..Default::default()
            }
        }
    }

    /// Before the first cut of an in-place rewrite of `inode` (backing stat `st`):
    /// remember its content's hash and the times the mount reports, unless a rewrite
    /// is already in progress. Skipped with `--strict-stat`.
    pub(super) fn note_rewrite_origin(&self, inode: &Inode, st: &libc::stat) {
        if self.cfg.strict_stat || self.rewrites.is_open(inode.key()) {
            return;
        }
        let Ok(rfd) = inode.read_fd() else { return };
        let bytes = transcript::TranscriptTracker::read_all(rfd.as_fd());
        if bytes.len() as u64 != st.st_size as u64 {
            return; // changing under us: no claim about it
        }
        let (_, _, m, c) = self.reported_fp(st);
        let origin = Origin {
            size: bytes.len() as u64,
            hash: super::shown::content_hash(&self.hash_keys, &bytes),
            shown: (m, c),
        };
        self.origins.lock().insert(inode.key(), origin);
    }

    /// The rewrite of `inode` ended: if the file is byte for byte what it was before
    /// it, keep reporting the times of then (and make the kernel forget the times it
    /// cached meanwhile). Returns whether it was identical.
    pub(super) fn rewrite_identical(&self, inode: &Inode) -> bool {
        let Some(o) = self.origins.lock().remove(&inode.key()) else {
            return false;
        };
        let Ok(st) = inode.fd().and_then(sys::fstat) else {
            return false;
        };
        let Ok(rfd) = inode
            .open(libc::O_RDONLY | libc::O_NOATIME)
            .or_else(|_| inode.open(libc::O_RDONLY))
        else {
            return false;
        };
        let bytes = transcript::TranscriptTracker::read_all(rfd.as_fd());
        let same = bytes.len() as u64 == o.size
            && st.st_size as u64 == o.size
            && super::shown::content_hash(&self.hash_keys, &bytes) == o.hash;
        if same {
            self.shown.remember(&st, o.shown.0, o.shown.1);
            self.inval_attrs_later(inode.id);
        }
        same
    }

    /// Put back the cut lines that the complete lines `entries` (produced by `data`
    /// written at `at`) equal; a line begun by an earlier write is read back whole.
    pub(super) fn put_back(&self, inode: &Inode, entries: &[Entry], at: u64, data: &[u8]) {
        let rfd = inode.read_fd().ok();
        let mut owned: Vec<Vec<u8>> = Vec::new();
        let mut lines: Vec<&[u8]> = Vec::with_capacity(entries.len());
        let mut from_file = Vec::new();
        for e in entries {
            match e
                .offset
                .checked_sub(at)
                .and_then(|s| data.get(s as usize..s as usize + e.bytes as usize))
            {
                Some(l) => lines.push(l),
                None => from_file.push(e),
            }
        }
        if let Some(fd) = &rfd {
            for e in from_file {
                let mut b = vec![0u8; e.bytes as usize];
                if let Ok(n) = sys::pread(fd.as_fd(), &mut b, e.offset) {
                    b.truncate(n);
                    owned.push(b);
                }
            }
        }
        lines.extend(owned.iter().map(Vec::as_slice));
        self.rewrites.put_back(inode.key(), lines);
    }

    /// The last writable handle of `inode` was released: the rewrite in progress (if
    /// any) ends, and the cut lines it did not write back are removed for good. The
    /// salvage store keeps only their bytes (when it can be rewound exactly). Returns
    /// (entries removed, lines restored), `None` when no rewrite was open.
    pub(super) fn end_rewrite(&self, inode: &Inode) -> Option<(Vec<Entry>, u64)> {
        let rw = self.rewrites.close(inode.key())?;
        let (file, span, restored) = (rw.file, rw.salvage, rw.restored);
        let (removed, bytes) = rw.net();
        if let (Some(j), Some((start, end))) = (&self.journal, span) {
            // Fails (and keeps every cut line) if other salvage landed in between.
            j.salvage_rewind(file, start, end, &bytes);
        }
        Some((removed, restored))
    }
}
