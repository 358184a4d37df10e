//! Who made a change: caller identity from `/proc`, cached per (pid, starttime) and per tid.
//!
//! OWNED BY: identity helper. Contract below is fixed; internals are free.

use std::sync::Arc;

use crate::journal::record::{Ancestor, Record};

/// Process-level identity, shared by all threads of a process (one `Arc` per (pid, starttime)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Thread group id (`Tgid:` of `/proc/<tid>/status`).
    pub pid: u32,
    /// Parent pid.
    pub ppid: u32,
    /// `/proc/<pid>/comm`.
    pub comm: String,
    /// `/proc/<pid>/exe` target, `None` if unreadable.
    pub exe: Option<String>,
    /// argv[0] + at most 2 further args, secrets redacted.
    pub cmdline: Vec<String>,
    /// Field 22 of `/proc/<pid>/stat`.
    pub starttime: u64,
    /// Inode of `/proc/<pid>/ns/pid`.
    pub pidns: Option<u64>,
    /// cgroup v2 path.
    pub cgroup: Option<String>,
    /// Up to 3 nearest ancestors, parent first.
    pub ancestry: Vec<Ancestor>,
}

/// The caller of one FUSE request.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Thread id from the FUSE request header.
    pub tid: u32,
    /// fs uid from the request header.
    pub uid: u32,
    /// fs gid from the request header.
    pub gid: u32,
    /// `None` when the process is already gone (its /proc entry vanished).
    pub process: Option<Arc<ProcessInfo>>,
}

/// Cache of caller identities. Cheap to share (`&self` methods, internally synchronised).
#[derive(Debug, Default)]
pub struct IdentityCache {}

impl IdentityCache {
    /// Empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Identity of the thread `tid`; a cache hit must cost < 5 µs and read no /proc file.
    pub fn caller(&self, tid: u32, uid: u32, gid: u32) -> Caller {
        Caller {
            tid,
            uid,
            gid,
            process: None,
        }
    }

    /// Called when `tid` opened a file for execve (open flag `__FMODE_EXEC`, 0x20):
    /// the cached comm/exe must be re-read on that process's next request.
    pub fn note_exec(&self, _tid: u32) {}
}

impl Caller {
    /// Copy identity fields (pid, tid, ppid, uid, gid, comm, exe, cmdline, starttime,
    /// pidns, cgroup, ancestry) into `rec`.
    pub fn fill(&self, rec: &mut Record) {
        rec.tid = Some(self.tid);
        rec.uid = Some(self.uid);
        rec.gid = Some(self.gid);
    }
}
