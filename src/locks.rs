//! Session locks: who holds each `*.lock` file, whether that holder lives, and
//! healing locks whose holder died.
//!
//! A lock is any file named `*.lock` created with `O_EXCL` through the mount; OpenClaw
//! creates `<session>.jsonl.lock` with `open(O_CREAT|O_EXCL|O_WRONLY)`, writes
//! `JSON.stringify({pid, createdAt, maxHoldMs, starttime}, null, 2) + "\n"` and keeps
//! the descriptor for the whole hold; release is close + unlink (source: OpenClaw
//! 2026.5.22 session write lock, BRIEF "Session write lock"). The *true holder* is the
//! process that made the create, as the mount saw it (host pid and starttime), not the
//! pid in the payload, which is the holder's own pid namespace's and means nothing on
//! the host when the holder runs in a container.
//!
//! A holder is dead when its pid is gone, names another process (starttime differs) or
//! is a zombie: stale by every rule the gateway uses. Unless `--no-reap`, the reaper
//! thread unlinks such a lock at once and journals `lock-reap`: woken when a handle of
//! a lock is released (a crash closes the holder's fds, so the kernel sends RELEASE;
//! re-checked for a moment, since the process is still exiting then) and in a sweep
//! every [`SWEEP`]. It never unlinks a lock whose holder lives, whatever its age (age
//! is the gateway's policy, reported by `sessionfs locks`), and never a lock created
//! after its check: creates of `*.lock` names through the mount and the reaper's
//! check-and-unlink are serialized by one gate, and the unlink happens only while the
//! name still leads to the dead holder's inode.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::{Mutex, MutexGuard};
use serde::Serialize;

use crate::identity::{self, Caller};
use crate::journal::Journal;
use crate::journal::record::{Class, LockContext, LockHolder, LockInfo, Op, Record};
use crate::sys::{self, FileKey};

/// Interval of the reaper's sweep over every lock.
pub const SWEEP: Duration = Duration::from_secs(1);
/// Age after which OpenClaw 2026.5.22 calls any lock stale (`staleMs`, 30 min).
pub const STALE_MS: u64 = 30 * 60 * 1000;
/// `maxHoldMs` OpenClaw assumes when the payload has none (5 min).
pub const DEFAULT_MAX_HOLD_MS: u64 = 5 * 60 * 1000;
/// Payload bytes kept per lock (OpenClaw's are ~100 B).
const MAX_PAYLOAD: usize = 4096;
/// After a lock's handle is released, the reaper re-checks its holder at these delays
/// (ms): the kernel sends RELEASE while a killed holder is still exiting.
const RECHECK_MS: [u64; 5] = [0, 10, 50, 200, 500];

/// Is `name` a lock file's name (`*.lock`, with something before the suffix)?
pub fn is_lock_name(name: &[u8]) -> bool {
    name.len() > 5 && name.ends_with(b".lock")
}

/// Is the holder (`pid`, `starttime`) alive? `Err(reason)` when it is dead: pid gone,
/// reused by another process, or a zombie.
pub fn holder_alive(pid: u32, starttime: u64) -> Result<(), String> {
    match identity::read_stat(pid) {
        None => Err(format!("pid {pid} is gone")),
        Some(st) if st.starttime != starttime => Err(format!(
            "pid {pid} is another process now (starttime {}, the holder's was {starttime})",
            st.starttime
        )),
        Some(st) if matches!(st.state, 'Z' | 'X') && !live_threads(pid) => {
            Err(format!("pid {pid} has exited"))
        }
        Some(_) => Ok(()),
    }
}

/// Does process `pid` still have a thread that has not exited (a leader that called
/// `pthread_exit` shows as a zombie while its other threads run)?
fn live_threads(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| t.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|tid| crate::names::read_proc(format!("/proc/{pid}/task/{tid}/stat")))
        .filter_map(|s| identity::parse_stat(&s))
        .any(|st| !matches!(st.state, 'Z' | 'X'))
}

/// The `NSpid:` line of `/proc/<pid>/status`: the pid in each pid namespace, the
/// daemon's first. Empty when unreadable.
fn nspid(pid: u32) -> Vec<u32> {
    crate::names::read_proc(format!("/proc/{pid}/status"))
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("NSpid:").map(|v| {
                    v.split_whitespace()
                        .filter_map(|n| n.parse().ok())
                        .collect()
                })
            })
        })
        .unwrap_or_default()
}

/// The container id in a cgroup v2 path (`…/docker-<id>.scope`, `…/docker/<id>`,
/// `…/libpod-<id>.scope`, `…/cri-containerd-<id>.scope`), first 12 hex digits.
pub fn container_of(cgroup: &str) -> Option<String> {
    cgroup.split('/').rev().find_map(|part| {
        let id = part
            .strip_suffix(".scope")
            .and_then(|p| p.rsplit_once('-').map(|(_, id)| id))
            .unwrap_or(part);
        (id.len() >= 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id[..12].to_string())
    })
}

/// One lock the mount saw created.
#[derive(Debug)]
struct Lock {
    /// O_PATH fd of the directory holding it (a dup: the reaper unlinks through it).
    dir: OwnedFd,
    /// FUSE node id of that directory (for the kernel's dentry invalidation).
    parent: u64,
    name: OsString,
    /// Journal path of the lock file.
    path: String,
    holder: LockHolder,
    created: Instant,
    created_at: SystemTime,
    created_seq: Option<u64>,
    /// The bytes written at offset 0.. of the lock file (at most [`MAX_PAYLOAD`]).
    payload: Vec<u8>,
    /// Open file handles on the lock file through the mount (the creator's included).
    handles: u32,
}

impl Lock {
    /// The lock's facts for a record, the holder's liveness given.
    fn info(&self, alive: &Result<(), String>) -> LockInfo {
        let text = &self.payload;
        let parsed = serde_json::from_slice::<serde_json::Value>(text)
            .ok()
            .filter(serde_json::Value::is_object);
        let max_hold_ms = parsed
            .as_ref()
            .and_then(|v| v.get("maxHoldMs"))
            .and_then(serde_json::Value::as_u64);
        let payload_pid = parsed
            .as_ref()
            .and_then(|v| v.get("pid"))
            .and_then(serde_json::Value::as_u64);
        let own = |p: u64| {
            p == u64::from(self.holder.pid) || self.holder.nspid.iter().any(|n| u64::from(*n) == p)
        };
        LockInfo {
            guards: self
                .path
                .strip_suffix(".lock")
                .unwrap_or(&self.path)
                .to_string(),
            holder: self.holder.clone(),
            created_seq: self.created_seq,
            age_ms: self.created.elapsed().as_millis() as u64,
            payload_raw: parsed
                .is_none()
                .then(|| String::from_utf8_lossy(text).into_owned()),
            payload: parsed,
            max_hold_ms,
            payload_pid_mismatch: payload_pid.is_some_and(|p| !own(p)),
            holder_alive: alive.is_ok(),
            reason: alive.clone().err(),
        }
    }
}

/// A lock as `sessionfs locks` and the `.locks` virtual file show it (one JSON object
/// per line).
#[derive(Debug, Serialize)]
pub struct LockView {
    /// Journal path of the lock file.
    pub lock: String,
    /// The lock's facts (holder, payload, age, liveness).
    #[serde(flatten)]
    pub info: LockInfo,
    /// Container id from the holder's cgroup, if it runs in one.
    pub container: Option<String>,
    /// The payload's `pid` (in the holder's own pid namespace).
    pub payload_pid: Option<u64>,
    /// When the lock was created (RFC 3339).
    pub created_at: String,
    /// Whether OpenClaw 2026.5.22 would call it stale now: holder dead, or age over
    /// `maxHoldMs` (5 min when absent) or 30 min.
    pub stale_now: bool,
    /// When OpenClaw will call it stale by age (RFC 3339).
    pub stale_at: String,
}

/// The locks of one mount, and the reaper that heals dead holders' locks.
#[derive(Debug)]
pub struct Locks {
    locks: Mutex<HashMap<FileKey, Lock>>,
    /// Serializes creates of `*.lock` names with the reaper's check-and-unlink.
    gate: Mutex<()>,
    journal: Option<Arc<Journal>>,
    notifier: Arc<OnceLock<fuser::Notifier>>,
    wake: Sender<()>,
    /// `NSpid:` chains of holders, by (pid, starttime).
    nspids: Mutex<HashMap<(u32, u64), Vec<u32>>>,
    /// Locks reaped and stolen since the mount started (`.status`).
    reaped: std::sync::atomic::AtomicU64,
    stolen: std::sync::atomic::AtomicU64,
}

impl Locks {
    /// The lock table; with `reap`, also the reaper thread (it ends when the table is
    /// dropped). Errors: the thread could not be spawned.
    pub fn start(
        journal: Option<Arc<Journal>>,
        notifier: Arc<OnceLock<fuser::Notifier>>,
        reap: bool,
    ) -> std::io::Result<Arc<Locks>> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let locks = Arc::new(Locks {
            locks: Mutex::new(HashMap::new()),
            gate: Mutex::new(()),
            journal,
            notifier,
            wake: tx,
            reaped: Default::default(),
            stolen: Default::default(),
            nspids: Mutex::new(HashMap::new()),
        });
        if reap {
            let weak = Arc::downgrade(&locks);
            std::thread::Builder::new()
                .name("sessionfs-reaper".into())
                .spawn(move || reaper(&weak, &rx))?;
        }
        Ok(locks)
    }

    /// Held around a create of a `*.lock` name (and a rename onto one): the reaper
    /// cannot unlink that name meanwhile.
    pub fn gate(&self) -> MutexGuard<'_, ()> {
        self.gate.lock()
    }

    /// A lock file `name` in directory `dir` (node id `parent`) was created with
    /// O_EXCL by `caller`; its create record has `created_seq`. Returns the facts for
    /// the `lock-acquire` record.
    #[allow(clippy::too_many_arguments)]
    pub fn acquired(
        &self,
        key: FileKey,
        dir: BorrowedFd<'_>,
        parent: u64,
        name: &OsStr,
        path: String,
        caller: &Caller,
        created_seq: Option<u64>,
    ) -> Option<LockInfo> {
        let p = caller.process.as_ref()?;
        let dir = dir.try_clone_to_owned().ok()?;
        // NSpid of a process does not change: cached per (pid, starttime).
        let nspid = {
            let mut cache = self.nspids.lock();
            if cache.len() > 1024 {
                cache.clear();
            }
            cache
                .entry((p.pid, p.starttime))
                .or_insert_with(|| nspid(p.pid))
                .clone()
        };
        let lock = Lock {
            dir,
            parent,
            name: name.to_os_string(),
            path,
            holder: LockHolder {
                pid: p.pid,
                tid: caller.tid,
                starttime: p.starttime,
                comm: p.comm.clone(),
                exe: p.exe.clone(),
                pidns: p.pidns,
                cgroup: p.cgroup.clone(),
                nspid,
            },
            created: Instant::now(),
            created_at: SystemTime::now(),
            created_seq,
            payload: Vec::new(),
            handles: 1,
        };
        let info = lock.info(&Ok(()));
        self.locks.lock().insert(key, lock);
        Some(info)
    }

    /// `data` was written at `offset` to file `key`: if it is a lock, keep the bytes
    /// as its payload (at most [`MAX_PAYLOAD`]).
    pub fn wrote(&self, key: FileKey, offset: u64, data: &[u8]) {
        let mut locks = self.locks.lock();
        let Some(l) = locks.get_mut(&key) else { return };
        let Ok(at) = usize::try_from(offset) else {
            return;
        };
        if at >= MAX_PAYLOAD {
            return;
        }
        let end = (at + data.len()).min(MAX_PAYLOAD);
        if l.payload.len() < end {
            l.payload.resize(end, 0);
        }
        l.payload[at..end].copy_from_slice(&data[..end - at]);
    }

    /// Lock file `key` was unlinked or replaced by `actor`: forget it. Returns the
    /// record to journal: `lock-release` when the holder did it (or the holder is
    /// dead: then `holder_alive` is false), `lock-steal` when another process did
    /// while the holder lives. `None` if `key` is no lock.
    pub fn removed(&self, key: FileKey, actor: &Caller) -> Option<(Op, LockInfo)> {
        let lock = self.locks.lock().remove(&key)?;
        let by_holder = actor
            .process
            .as_ref()
            .is_some_and(|p| p.pid == lock.holder.pid && p.starttime == lock.holder.starttime);
        // The holder acting is alive: no /proc read on the common path.
        let alive = if by_holder {
            Ok(())
        } else {
            holder_alive(lock.holder.pid, lock.holder.starttime)
        };
        let op = if by_holder || alive.is_err() {
            Op::LockRelease
        } else {
            self.stolen
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Op::LockSteal
        };
        Some((op, lock.info(&alive)))
    }

    /// The file key of the lock file at journal path `path`, if it is a lock.
    pub fn key_of_path(&self, path: &str) -> Option<FileKey> {
        self.locks
            .lock()
            .iter()
            .find(|(_, l)| l.path == path)
            .map(|(k, _)| *k)
    }

    /// The holder (pid, starttime) of `<path>.lock`, if that lock is held.
    pub fn holder_of(&self, path: &str) -> Option<(u32, u64)> {
        self.locks
            .lock()
            .values()
            .find(|l| l.path.strip_suffix(".lock") == Some(path))
            .map(|l| (l.holder.pid, l.holder.starttime))
    }

    /// The lock context of a change to the session file `path` by `actor`: is
    /// `<path>.lock` held, by `actor`'s process or by another (returned)?
    pub fn context(&self, path: &str, actor: &Caller) -> (LockContext, Option<LockHolder>) {
        let locks = self.locks.lock();
        let Some(l) = locks
            .values()
            .find(|l| l.path.strip_suffix(".lock") == Some(path))
        else {
            return (LockContext::None, None);
        };
        let mine = actor
            .process
            .as_ref()
            .is_some_and(|p| p.pid == l.holder.pid && p.starttime == l.holder.starttime);
        if mine {
            (LockContext::HeldByWriter, None)
        } else {
            (LockContext::HeldByOther, Some(l.holder.clone()))
        }
    }

    /// A handle of file `key` was opened (the create's own handle is counted by
    /// [`Self::acquired`]).
    pub fn handle_opened(&self, key: FileKey) {
        if let Some(l) = self.locks.lock().get_mut(&key) {
            l.handles += 1;
        }
    }

    /// A handle of file `key` was released: if it is a lock, the reaper checks its
    /// holder now (a dying holder's fds are closed as it exits).
    pub fn handle_released(&self, key: FileKey) {
        if let Some(l) = self.locks.lock().get_mut(&key) {
            l.handles = l.handles.saturating_sub(1);
            let _ = self.wake.try_send(());
        }
    }

    /// (locks held now, reaped, stolen since the mount started).
    pub fn counts(&self) -> (usize, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.locks.lock().len(),
            self.reaped.load(Relaxed),
            self.stolen.load(Relaxed),
        )
    }

    /// The `.locks` file: [`Self::list`] as JSON lines.
    pub fn list_jsonl(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for v in self.list() {
            if serde_json::to_writer(&mut out, &v).is_ok() {
                out.push(b'\n');
            }
        }
        out
    }

    /// Every current lock, by lock path.
    pub fn list(&self) -> Vec<LockView> {
        let locks = self.locks.lock();
        let mut out: Vec<LockView> = locks
            .values()
            .map(|l| {
                let alive = holder_alive(l.holder.pid, l.holder.starttime);
                let info = l.info(&alive);
                let limit = info
                    .max_hold_ms
                    .unwrap_or(DEFAULT_MAX_HOLD_MS)
                    .min(STALE_MS);
                let stale_at = l.created_at + Duration::from_millis(limit);
                LockView {
                    lock: l.path.clone(),
                    container: l.holder.cgroup.as_deref().and_then(container_of),
                    payload_pid: info
                        .payload
                        .as_ref()
                        .and_then(|v| v.get("pid"))
                        .and_then(serde_json::Value::as_u64),
                    created_at: crate::clock::rfc3339(l.created_at),
                    stale_now: alive.is_err() || info.age_ms > limit,
                    stale_at: crate::clock::rfc3339(stale_at),
                    info,
                }
            })
            .collect();
        out.sort_by(|a, b| a.lock.cmp(&b.lock));
        out
    }

    /// One pass: forget locks removed around the mount, then reap every lock whose
    /// holder is dead. Returns how many were reaped.
    fn sweep(&self) -> usize {
        self.forget_vanished();
        let dead: Vec<(FileKey, String)> = self
            .locks
            .lock()
            .iter()
            .filter_map(|(k, l)| {
                holder_alive(l.holder.pid, l.holder.starttime)
                    .err()
                    .map(|why| (*k, why))
            })
            .collect();
        dead.into_iter()
            .filter(|(k, why)| self.reap(*k, why))
            .count()
    }

    /// Drop locks whose name no longer leads to them (removed around the mount, where
    /// no unlink came through): journaled as `lock-release` with the reason.
    fn forget_vanished(&self) {
        let gone: Vec<Lock> = {
            let mut locks = self.locks.lock();
            let keys: Vec<FileKey> = locks
                .iter()
                .filter(|(k, l)| {
                    !sys::cname(&l.name)
                        .and_then(|c| sys::fstatat(l.dir.as_fd(), &c))
                        .is_ok_and(|st| FileKey::of(&st) == **k)
                })
                .map(|(k, _)| *k)
                .collect();
            keys.iter().filter_map(|k| locks.remove(k)).collect()
        };
        for l in gone {
            let mut info = l.info(&holder_alive(l.holder.pid, l.holder.starttime));
            info.reason = Some("the lock file was removed around the mount".into());
            if let Some(j) = &self.journal {
                j.append(Record {
                    op: Op::LockRelease,
                    path: l.path.clone(),
                    result: "ok".into(),
                    class: Some(Class::Lock),
                    fence_moved: Some(false),
                    lock: Some(info),
                    ..Default::default()
                });
            }
        }
    }

    /// Unlink lock `key` if the name still leads to it and its holder is still dead,
    /// under the gate; journal `lock-reap`. Returns whether it was unlinked.
    fn reap(&self, key: FileKey, why: &str) -> bool {
        let gate = self.gate.lock();
        let mut locks = self.locks.lock();
        let Some(l) = locks.get(&key) else {
            return false;
        };
        // Re-checked under the gate: a holder that lives keeps its lock, and so does
        // one whose lock file some process still has open (a child that inherited
        // the fd): its RELEASE wakes the reaper again.
        if l.handles > 0 || holder_alive(l.holder.pid, l.holder.starttime).is_ok() {
            return false;
        }
        let Ok(c) = sys::cname(&l.name) else {
            return false;
        };
        let same = sys::fstatat(l.dir.as_fd(), &c).is_ok_and(|st| FileKey::of(&st) == key);
        // The lock file's journal identity, while it is there to be stat-ed.
        let file = sys::identity_at(l.dir.as_fd(), &c)
            .ok()
            .map(|(ino, birth_ns, uid)| crate::journal::record::FileRef { ino, birth_ns, uid });
        if !same {
            // Gone or replaced behind our back: not ours to unlink.
            locks.remove(&key);
            return false;
        }
        if nix::unistd::unlinkat(
            l.dir.as_fd(),
            c.as_c_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        )
        .is_err()
        {
            return false;
        }
        let l = locks.remove(&key).expect("checked above");
        drop(locks);
        // The gate goes before the notification: the kernel takes the directory's
        // lock for it, which a CREATE of another lock name in that directory holds
        // while it waits for the gate.
        drop(gate);
        if let Some(n) = self.notifier.get() {
            // The kernel still has the name cached: drop it, or the holder's
            // successor's O_EXCL create would fail EEXIST without asking us.
            let _ = n.inval_entry(fuser::INodeNo(l.parent), &l.name);
        }
        self.reaped
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let info = l.info(&Err(why.to_string()));
        tracing::info!(lock = %l.path, holder = l.holder.pid, reason = why, "reaped a dead holder's lock");
        if let Some(j) = &self.journal {
            j.append(Record {
                op: Op::LockReap,
                path: l.path.clone(),
                file,
                result: "ok".into(),
                class: Some(Class::Lock),
                fence_moved: Some(false),
                pid: Some(std::process::id()),
                comm: Some("sessionfs".into()),
                lock: Some(info),
                ..Default::default()
            });
        }
        true
    }
}

/// The reaper thread: a sweep every [`SWEEP`], and a burst of re-checks at
/// [`RECHECK_MS`] after each wake-up (a released lock handle).
fn reaper(locks: &Weak<Locks>, wake: &Receiver<()>) {
    loop {
        match wake.recv_timeout(SWEEP) {
            Err(RecvTimeoutError::Disconnected) => return,
            Ok(()) => {
                let mut last = 0;
                for ms in RECHECK_MS {
                    std::thread::sleep(Duration::from_millis(ms - last));
                    last = ms;
                    let Some(l) = locks.upgrade() else { return };
                    l.sweep();
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                let Some(l) = locks.upgrade() else { return };
                l.sweep();
            }
        }
    }
}

/// `sessionfs locks MOUNTPOINT [--json]`: the mount's `.locks` file, as it is
/// (`--json`) or as a table.
///
/// # Errors
/// One line when MOUNTPOINT has no `.locks` (not a sessionfs mount) or it cannot be
/// read (not root or the mount root's owner: EACCES).
pub fn run_locks(mountpoint: &std::path::Path, json: bool) -> Result<(), String> {
    let p = mountpoint.join(crate::fs::LOCKS_FILE);
    let data = std::fs::read(&p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!(
            "{} is not a sessionfs mount (no {})",
            mountpoint.display(),
            crate::fs::LOCKS_FILE
        ),
        _ => format!("{}: {e}", p.display()),
    })?;
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    if json {
        return out.write_all(&data).map_err(|e| e.to_string());
    }
    let rows: Vec<serde_json::Value> = data
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect();
    let mut text = format!(
        "{:<40} {:>8} {:<16} {:<12} {:<5} {:>9} {:>9} {:<5} {:>8}\n",
        "LOCK", "PID", "COMM", "CONTAINER", "ALIVE", "AGE", "MAXHOLD", "STALE", "PAYLOAD"
    );
    for r in &rows {
        let secs = |v: &serde_json::Value| {
            v.as_u64()
                .map_or("-".to_string(), |ms| format!("{:.1}s", ms as f64 / 1000.0))
        };
        let payload_pid = match (&r["payload_pid"], r["payload_pid_mismatch"].as_bool()) {
            (serde_json::Value::Null, _) => "-".to_string(),
            (p, Some(true)) => format!("{p}!"),
            (p, _) => p.to_string(),
        };
        text.push_str(&format!(
            "{:<40} {:>8} {:<16} {:<12} {:<5} {:>9} {:>9} {:<5} {:>8}\n",
            crate::journal::cli::escape_controls(r["lock"].as_str().unwrap_or("?")),
            r["holder"]["pid"],
            crate::journal::cli::escape_controls(r["holder"]["comm"].as_str().unwrap_or("?")),
            r["container"].as_str().unwrap_or("-"),
            if r["holder_alive"] == true {
                "yes"
            } else {
                "no"
            },
            secs(&r["age_ms"]),
            secs(&r["max_hold_ms"]),
            if r["stale_now"] == true { "yes" } else { "no" },
            payload_pid,
        ));
    }
    if rows.is_empty() {
        text.push_str("(no locks)\n");
    }
    out.write_all(text.as_bytes()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_names() {
        assert!(is_lock_name(b"s.jsonl.lock"));
        assert!(is_lock_name(b"x.lock"));
        assert!(!is_lock_name(b".lock"));
        assert!(!is_lock_name(b"s.jsonl"));
        assert!(!is_lock_name(b"lock"));
    }

    #[test]
    fn liveness_of_this_process_and_a_dead_one() {
        let me = identity::read_stat(std::process::id()).unwrap();
        assert_eq!(holder_alive(std::process::id(), me.starttime), Ok(()));
        assert!(holder_alive(std::process::id(), me.starttime + 1).is_err());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let st = identity::read_stat(pid).map(|s| s.starttime);
        child.wait().unwrap();
        if let Some(st) = st {
            assert!(holder_alive(pid, st).is_err(), "a reaped child is dead");
        }
    }

    #[test]
    fn container_ids_from_cgroups() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            container_of(&format!("/system.slice/docker-{id}.scope")).as_deref(),
            Some("0123456789ab")
        );
        assert_eq!(
            container_of(&format!("/docker/{id}")).as_deref(),
            Some("0123456789ab")
        );
        assert_eq!(
            container_of("/user.slice/user-0.slice/session-1.scope"),
            None
        );
    }

    fn lock_with(payload: &[u8], pid: u32, nspid: Vec<u32>) -> Lock {
        Lock {
            dir: std::fs::File::open("/").unwrap().into(),
            parent: 1,
            name: "s.jsonl.lock".into(),
            path: "s.jsonl.lock".into(),
            holder: LockHolder {
                pid,
                nspid,
                ..Default::default()
            },
            created: Instant::now(),
            created_at: SystemTime::now(),
            created_seq: None,
            payload: payload.to_vec(),
            handles: 0,
        }
    }

    #[test]
    fn payload_parsed_partial_and_pid_checked() {
        let full = br#"{"pid": 1, "createdAt": "2026-12-06T00:00:00Z", "maxHoldMs": 300000, "starttime": 5}"#;
        let i = lock_with(full, 4242, vec![4242, 1]).info(&Ok(()));
        assert_eq!(i.guards, "s.jsonl");
        assert_eq!(i.max_hold_ms, Some(300_000));
        assert!(
            !i.payload_pid_mismatch,
            "1 is the holder's pid in its namespace"
        );
        assert!(i.payload_raw.is_none());
        let i = lock_with(full, 4242, vec![4242]).info(&Ok(()));
        assert!(
            i.payload_pid_mismatch,
            "pid 1 names another process on the host"
        );
        let i = lock_with(b"{\"pid\": 42", 42, vec![42]).info(&Err("gone".into()));
        assert_eq!(i.payload, None);
        assert_eq!(i.payload_raw.as_deref(), Some("{\"pid\": 42"));
        assert!(!i.holder_alive);
        assert_eq!(i.reason.as_deref(), Some("gone"));
    }
}
