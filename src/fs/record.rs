//! Building journal records from a request: identity (who), lane, path, fingerprints.

use std::ffi::OsStr;
use std::sync::atomic::Ordering;

use fuser::Request;

use super::handle::FileHandle;
use super::inode::Inode;
use super::{SessionFs, access_name, attr, flag_names};
use crate::journal::record::{Entry, Record};
use crate::sys::SysResult;

/// `"ok"` or the errno name (`"ENOENT"`).
pub fn result<T>(r: &SysResult<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("{e:?}"),
    }
}

/// Fill `before`/`after` fingerprints and sizes from backing stats.
pub fn fingerprints(r: &mut Record, before: Option<&libc::stat>, after: Option<&libc::stat>) {
    r.before = before.map(attr::fingerprint);
    r.after = after.map(attr::fingerprint);
    if r.size_before.is_none() {
        r.size_before = before.map(|s| s.st_size as u64);
    }
    if r.size_after.is_none() {
        r.size_after = after.map(|s| s.st_size as u64);
    }
}

impl SessionFs {
    /// Build a record for `op` on `path` by the caller of `req`, let `f` fill the
    /// op-specific fields, and hand it to the journal. `ino` (backing inode) selects the
    /// caller's declared lane. No-op without a journal.
    pub(super) fn record(
        &self,
        req: &Request,
        op: &str,
        path: String,
        ino: Option<u64>,
        f: impl FnOnce(&mut Record),
    ) {
        if self.journal.is_none() {
            return;
        }
        let caller = self.ids.caller(req.pid(), req.uid(), req.gid());
        self.record_as(&caller, op, path, ino, f)
    }

    /// [`Self::record`] with an identity already resolved.
    pub(super) fn record_as(
        &self,
        caller: &crate::identity::Caller,
        op: &str,
        path: String,
        ino: Option<u64>,
        f: impl FnOnce(&mut Record),
    ) {
        let Some(j) = &self.journal else { return };
        let mut r = Record {
            ts: String::new(), // stamped by the journal, in seq order
            op: op.to_string(),
            path,
            result: "ok".into(),
            ..Default::default()
        };
        caller.fill(&mut r);
        let declared = ino.and_then(|i| self.lanes.get(caller, i));
        if let Some(l) = declared {
            r.lane = Some(l.to_string());
            r.lane_source = Some("declared".into());
        } else if let Some(l) = self.cfg.lane_rules.lane_for(caller) {
            r.lane = Some(l.to_string());
            r.lane_source = Some("rule".into());
        }
        f(&mut r);
        j.append(r);
    }

    /// Record a directory operation creating `name` in `parent` (mkdir, mknod, symlink).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_dirop(
        &self,
        req: &Request,
        op: &str,
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
        self.record(req, op, path, None, |r| {
            r.to = to;
            r.mode = mode.map(|m| m & 0o7777);
            r.result = result(res);
        });
    }

    /// Record an `open` with its access mode, its flags (as the kernel sent them: an
    /// `O_TRUNC` reaches us as the `truncate` that follows, see `init`) and the size.
    pub(super) fn record_open(
        &self,
        req: &Request,
        inode: &Inode,
        flags: i32,
        after: Option<&libc::stat>,
        res: &SysResult<()>,
    ) {
        if self.journal.is_none() {
            return;
        }
        let path = self.inodes.path_of(inode);
        self.record(req, "open", path, Some(inode.ino), |r| {
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
        req: &Request,
        h: &FileHandle,
        ended: Option<(Vec<Entry>, u64)>,
    ) {
        if self.journal.is_none() {
            return;
        }
        let path = self.inodes.path_of(&h.inode);
        // RELEASE comes from the kernel (pid 0) after the last close: name the process
        // that last wrote through the handle, else the opener.
        let last = h.last_writer.lock().clone();
        let caller = match (last.or_else(|| h.opener.clone()), req.pid()) {
            (Some(o), 0) => o,
            _ => self.ids.caller(req.pid(), req.uid(), req.gid()),
        };
        self.record_as(&caller, "release", path, Some(h.inode.ino), |r| {
            r.access = Some(access_name(h.flags).into());
            r.reads = Some(h.reads.load(Ordering::Relaxed));
            r.read_bytes = Some(h.read_bytes.load(Ordering::Relaxed));
            if h.writable {
                r.writes = Some(h.writes.load(Ordering::Relaxed));
                r.write_bytes = Some(h.write_bytes.load(Ordering::Relaxed));
            }
            if let Some((removed, restored)) = ended {
                r.removed = Some(removed).filter(|v| !v.is_empty());
                r.restored = Some(restored).filter(|n| *n > 0);
            }
        });
    }
}
