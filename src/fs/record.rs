//! Building journal records from a request: identity (who), lane, path, fingerprints.

use std::ffi::OsStr;
use std::sync::atomic::Ordering;

use super::handle::FileHandle;
use super::inode::Inode;
use super::{Ctx, FMODE_EXEC, SessionFs, attr};
use crate::journal::record::{Class, Entry, FileRef, Op, Record};
use crate::sys::{self, FileKey, SysResult};

/// A [`FileRef`] from [`sys::identity_at`]'s (ino, birth ns, uid).
pub(super) fn file_ref((ino, birth_ns, uid): (u64, i64, u32)) -> FileRef {
    FileRef { ino, birth_ns, uid }
}

/// `"ok"` or the errno name (`"ENOENT"`).
pub(super) fn result<T>(r: &SysResult<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("{e:?}"),
    }
}

/// Fill `before`/`after` fingerprints and sizes from backing stats.
pub(super) fn fingerprints(
    r: &mut Record,
    before: Option<&libc::stat>,
    after: Option<&libc::stat>,
) {
    r.before = before.map(attr::fingerprint);
    r.after = after.map(attr::fingerprint);
    if r.size_before.is_none() {
        r.size_before = before.map(|s| s.st_size as u64);
    }
    if r.size_after.is_none() {
        r.size_after = after.map(|s| s.st_size as u64);
    }
}

/// Open flag names for the journal (`["O_WRONLY","O_APPEND"]`).
pub(super) fn flag_names(flags: i32) -> Vec<String> {
    let mut v = vec![
        match flags & libc::O_ACCMODE {
            libc::O_RDONLY => "O_RDONLY",
            libc::O_WRONLY => "O_WRONLY",
            _ => "O_RDWR",
        }
        .to_string(),
    ];
    for (bit, name) in [
        (libc::O_CREAT, "O_CREAT"),
        (libc::O_EXCL, "O_EXCL"),
        (libc::O_TRUNC, "O_TRUNC"),
        (libc::O_APPEND, "O_APPEND"),
        (libc::O_NOFOLLOW, "O_NOFOLLOW"),
        (libc::O_DIRECT, "O_DIRECT"),
        (libc::O_SYNC, "O_SYNC"),
        (libc::O_DSYNC, "O_DSYNC"),
        (libc::O_NONBLOCK, "O_NONBLOCK"),
        (libc::O_NOATIME, "O_NOATIME"),
        (FMODE_EXEC, "FMODE_EXEC"),
    ] {
        // O_SYNC includes the O_DSYNC bit: name O_DSYNC only when it is alone.
        if flags & bit == bit && bit != libc::O_DSYNC
            || (bit == libc::O_DSYNC && flags & libc::O_SYNC == libc::O_DSYNC)
        {
            v.push(name.to_string());
        }
    }
    v
}

/// `"read"`, `"write"` or `"readwrite"` for open flags.
pub(super) fn access_name(flags: i32) -> &'static str {
    match flags & libc::O_ACCMODE {
        libc::O_RDONLY => "read",
        libc::O_WRONLY => "write",
        _ => "readwrite",
    }
}

impl SessionFs {
    /// Build a record for `op` on `path` by the caller `ctx`, let `f` fill the
    /// op-specific fields, and hand it to the journal. `file` (backing (dev, ino))
    /// selects the caller's declared lane. Returns its `seq`; `None` without a journal
    /// or when the journal dropped the record (see `journal::record::GapInfo`).
    pub(super) fn record(
        &self,
        ctx: &Ctx,
        op: Op,
        path: String,
        file: Option<FileKey>,
        f: impl FnOnce(&mut Record),
    ) -> Option<u64> {
        self.journal.as_ref()?;
        let caller = self.ids.caller(ctx.pid, ctx.uid, ctx.gid);
        self.record_as(&caller, op, path, file, f)
    }

    /// [`Self::record`] with an identity already resolved.
    pub(super) fn record_as(
        &self,
        caller: &crate::identity::Caller,
        op: Op,
        path: String,
        file: Option<FileKey>,
        f: impl FnOnce(&mut Record),
    ) -> Option<u64> {
        let j = self.journal.as_ref()?;
        let mut r = Record {
            ts: String::new(), // stamped by the journal, in seq order
            op,
            path,
            result: "ok".into(),
            ..Default::default()
        };
        caller.fill(&mut r);
        let declared = file.and_then(|k| self.lanes.get(caller, k));
        if let Some(l) = declared {
            r.lane = Some(l.to_string());
            r.lane_source = Some("declared".into());
        } else if let Some(l) = self.cfg.lane_rules.lane_for(caller) {
            r.lane = Some(l.to_string());
            r.lane_source = Some("rule".into());
        }
        f(&mut r);
        if r.file.is_none() {
            r.file = file
                .and_then(|k| self.inodes.find(k))
                .and_then(|i| self.file_ref(&i));
        }
        // The session file the record changes: its path, or a rename's target (a
        // repair's temp file renamed over the transcript).
        let session = match r.to.as_deref() {
            Some(to) if op == Op::Rename && to.ends_with(".jsonl") => Some(to.to_string()),
            _ => r.path.ends_with(".jsonl").then(|| r.path.clone()),
        };
        if let Some(p) = session.filter(|_| r.lock.is_none()) {
            let (cx, holder) = self.locks.context(&p, caller);
            r.lock_context = Some(cx);
            r.lock_holder = holder;
        }
        if r.result != "ok" {
            r.class = None;
            r.fence_moved = None;
        } else if r.class.is_none() {
            r.class = Class::of(op);
        }
        // 0: dropped into a gap (the state dir is failing), no seq.
        Some(j.append(r)).filter(|seq| *seq != 0)
    }

    /// Record a directory operation creating `name` in `parent` (mkdir, mknod, symlink).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_dirop(
        &self,
        ctx: &Ctx,
        op: Op,
        parent: &Inode,
        name: &OsStr,
        to: Option<String>,
        mode: Option<u32>,
        res: &SysResult<()>,
    ) {
        if self.journal.is_none() {
            return;
        }
        let path = self.child_path(parent, name);
        self.record(ctx, op, path, None, |r| {
            r.to = to;
            r.mode = mode.map(|m| m & 0o7777);
            r.result = result(res);
        });
    }

    /// Record an `open` with its access mode, its flags (as the kernel sent them: an
    /// `O_TRUNC` reaches us as the `truncate` that follows, see `init`) and the size.
    pub(super) fn record_open(
        &self,
        ctx: &Ctx,
        inode: &Inode,
        flags: i32,
        after: Option<&libc::stat>,
        res: &SysResult<()>,
    ) {
        if self.journal.is_none() {
            return;
        }
        let path = self.inodes.path_of(inode);
        self.record(ctx, Op::Open, path, Some(inode.key()), |r| {
            r.access = Some(access_name(flags).into());
            r.flags = Some(flag_names(flags));
            r.size_after = after.map(|s| s.st_size as u64);
            r.result = result(res);
        });
    }

    /// Record a `release` with the handle's read/write totals, and, when it ends a
    /// rewrite, the entries the rewrite removed and how many cut lines it restored.
    pub(super) fn record_release(
        &self,
        ctx: &Ctx,
        h: &FileHandle,
        ended: Option<(Vec<Entry>, u64)>,
        identical: bool,
    ) {
        if self.journal.is_none() {
            return;
        }
        let path = self.handle_path(h);
        // RELEASE comes from the kernel (pid 0) after the last close: name the process
        // that last wrote through the handle, else the opener.
        let last = h.last_writer.lock().clone();
        let caller = match (last.or_else(|| h.opener.clone()), ctx.pid) {
            (Some(o), 0) => o,
            _ => self.ids.caller(ctx.pid, ctx.uid, ctx.gid),
        };
        self.record_as(&caller, Op::Release, path, Some(h.inode.key()), |r| {
            r.access = Some(access_name(h.flags).into());
            r.reads = Some(h.reads.load(Ordering::Relaxed));
            r.read_bytes = Some(h.read_bytes.load(Ordering::Relaxed));
            if h.writable {
                r.writes = Some(h.writes.load(Ordering::Relaxed));
                r.write_bytes = Some(h.write_bytes.load(Ordering::Relaxed));
            }
            if identical {
                // The rewrite put back the same bytes: the mount reports the times of
                // before it, so the fence sees nothing.
                r.class = Some(Class::Noop);
                r.fence_moved = Some(false);
            }
            if let Some((removed, restored)) = ended {
                if !removed.is_empty() {
                    r.class = Some(Class::Rewrite);
                }
                r.removed = Some(removed).filter(|v| !v.is_empty());
                r.restored = Some(restored).filter(|n| *n > 0);
            }
        });
    }

    /// The journal identity of `inode` (one `statx`): the key of its per-file views.
    /// `None` when the backing object cannot be stat-ed.
    pub(super) fn file_ref(&self, inode: &Inode) -> Option<FileRef> {
        // The owner as of our last stat of the file (every change of ours and every
        // outside change seen refresh it), and the birth time read once: no statx on
        // the WRITE path.
        let uid = inode.known.lock().meta.map(|m| m.1);
        if let (Some(uid), Some(birth_ns)) = (uid, inode.birth.get().copied()) {
            return Some(FileRef {
                ino: inode.ino,
                birth_ns,
                uid,
            });
        }
        let fd = inode.fd().ok()?;
        let r = sys::identity_at(std::os::fd::AsFd::as_fd(&fd), c"")
            .ok()
            .map(file_ref)?;
        let _ = inode.birth.set(r.birth_ns);
        Some(r)
    }

    /// [`Self::file_ref`], or, when it cannot be stat-ed, a key only root reads (owner
    /// uid 0, no birth time): salvage must be stored somewhere, and never in a view
    /// another user could own.
    pub(super) fn file_ref_or_root(&self, inode: &Inode) -> FileRef {
        self.file_ref(inode).unwrap_or(FileRef {
            ino: inode.ino,
            birth_ns: 0,
            uid: 0,
        })
    }

    /// Journal path of an open file: the name it was opened by while that name still
    /// leads to it (a file with several links), else its current name.
    pub(super) fn handle_path(&self, h: &FileHandle) -> String {
        self.inodes.path_via(&h.inode, &h.via)
    }
}
