//! Who made a change: the caller's identity read from `/proc`, cached per thread id
//! and per (pid, starttime).
//!
//! FUSE reports the caller's **thread** id. `/proc/<tid>/status` answers for a tid even
//! though tids are not listed in `/proc`; its `Tgid:` is the process.
//!
//! Cache design (a cold /proc pass costs 20–200 µs; a hit must stay under 5 µs, measured
//! by the "identity, cached" row of `cargo bench --bench journal`):
//! - `tid → TidEntry { process, thread_start, image, checked }`: a hit is one read-locked
//!   hash lookup, an `Arc` clone and a monotonic clock read; no /proc access. While an
//!   exec mark is pending anywhere, a hit also does one locked lookup in the mark set.
//! - An entry older than the revalidation interval ([`REVALIDATE`] by default), or
//!   whose thread made no request for [`IDLE_RECHECK`] (1 ms; an exec off the mount
//!   always leaves such a gap), is re-checked once: `/proc/<tid>/stat` (if the thread's own start time changed, the tid
//!   was reused and the entry is rebuilt) and the `/proc/<tid>/exe` link. If the exe
//!   target changed, or the address-space fingerprint in the stat line (`startcode`,
//!   `endcode`, `startstack`, which every execve replaces, even of the same binary)
//!   changed, the process ran an exec the mount did not see (a binary off the mount)
//!   and comm/exe/cmdline are re-read. The error window: a tid reused within the
//!   interval is attributed to the previous owner (Linux hands out pids cyclically up to
//!   pid_max, 4,194,304 here, so that needs ~4 M process creations within 2 s), and an
//!   unseen exec shows the old image for at most one interval.
//! - `(pid, starttime) → Arc<ProcessInfo>` shares one identity between the threads of
//!   a process, and starttime guards against pid reuse.
//! - [`IdentityCache::note_exec`] (called for an OPEN with `__FMODE_EXEC`, after that
//!   open's own identity lookups) marks the process: comm/exe/cmdline read during an
//!   execve show the old image, so the process's first request after the mark, which
//!   arrives once the exec completed, re-reads them and clears the mark. A refresh
//!   replaces the identity in every cached thread of the process.
//! - All three maps are bounded ([`MAX_ENTRIES`]). When one is full at an insertion,
//!   stale entries go first (tids not checked within the interval, processes no thread
//!   entry refers to, expired marks), then the oldest until it is back to 3/4 of the
//!   bound; this costs O(n) once per n/4 insertions and never runs on a hit.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::journal::record::{Ancestor, Record};

/// Default revalidation interval (a [`Duration`], 2 s): how long a cached tid entry is
/// trusted before its thread start time and exe link are re-checked in `/proc`.
/// [`IdentityCache::with_revalidate`] sets another.
pub const REVALIDATE: Duration = Duration::from_secs(2);
/// Idle gap (a [`Duration`], 1 ms) after which a thread's next request re-checks its
/// cached identity, whatever the revalidation interval: an exec stops the thread's
/// requests for longer than this (execve plus the new image's start-up), so the first
/// request of a new image off the mount (`sh -c 'exec python3 … >> file'` opens as
/// `sh` and writes as `python3`) is attributed to the new image. Requests in a burst
/// (appends 40 µs apart) stay cache hits.
pub const IDLE_RECHECK: Duration = Duration::from_millis(1);
/// Bound on the number of entries of each cache map (cached tids, cached processes,
/// pending exec marks): 16,384 entries each.
pub const MAX_ENTRIES: usize = 16_384;
/// An eviction sweep brings a full map down to this many entries (3/4 of
/// [`MAX_ENTRIES`]), so that sweeps are rare.
const LOW_WATER: usize = MAX_ENTRIES - MAX_ENTRIES / 4;
/// How long (a [`Duration`], 10 s, or the revalidation interval if longer) an exec mark
/// of [`IdentityCache::note_exec`] waits for the process's next request before it is
/// dropped. Past that, the periodic revalidation still notices the exec (exe link or
/// address-space fingerprint changed).
pub const EXEC_MARK_TTL: Duration = Duration::from_secs(10);
/// Number of ancestors recorded, nearest (the parent) first: 3.
pub const ANCESTRY_DEPTH: usize = 3;
/// Replacement text for redacted command-line values: `<redacted>`.
pub const REDACTED: &str = "<redacted>";

/// Process-level identity, shared by all threads of a process (one `Arc` per
/// (pid, starttime)). Read from `/proc/<pid>/…` (the exe link and cmdline from
/// `/proc/<tid>/…` first, which share the process's address space); a file that cannot
/// be read leaves its field `None`/empty rather than failing the request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Thread group id (`Tgid:` of `/proc/<tid>/status`), in the daemon's pid namespace.
    pub pid: u32,
    /// Parent pid (field 4 of `/proc/<pid>/stat`), in the daemon's pid namespace.
    pub ppid: u32,
    /// `/proc/<pid>/comm` (at most 15 bytes); the stat line's comm if unreadable.
    pub comm: String,
    /// `/proc/<tid>/exe` (else `/proc/<pid>/exe`) link target; `None` if unreadable
    /// (EACCES without ptrace access, ENOENT for kernel threads and exited leaders).
    pub exe: Option<String>,
    /// `argv[0]` + at most 2 further args from `/proc/<pid>/cmdline`, secrets redacted
    /// (see [`parse_cmdline`]); empty if unreadable.
    pub cmdline: Vec<String>,
    /// Field 22 of `/proc/<pid>/stat`: start time in clock ticks (USER_HZ) after boot.
    pub starttime: u64,
    /// Inode number of the `/proc/<pid>/ns/pid` link (`pid:[N]`); `None` if unreadable.
    pub pidns: Option<u64>,
    /// cgroup v2 path (the `0::<path>` line of `/proc/<pid>/cgroup`); `None` if
    /// unreadable or on a cgroup v1 host.
    pub cgroup: Option<String>,
    /// Up to [`ANCESTRY_DEPTH`] nearest ancestors (pid and comm from their
    /// `/proc/<pid>/stat`), parent first; shorter where the chain ends or is unreadable.
    pub ancestry: Vec<Ancestor>,
}

/// The caller of one FUSE request, as returned by [`IdentityCache::caller`].
#[derive(Clone, Debug)]
pub struct Caller {
    /// Thread id from the FUSE request header (the kernel's tid, in the daemon's pid
    /// namespace).
    pub tid: u32,
    /// fs uid from the FUSE request header.
    pub uid: u32,
    /// fs gid from the FUSE request header.
    pub gid: u32,
    /// The process identity; `None` when the thread's `/proc` entry could not be read
    /// on a cache miss (the process is already gone, or /proc denied access).
    pub process: Option<Arc<ProcessInfo>>,
}

/// Credentials of a thread that the FUSE request header does not carry, from
/// `/proc/<tid>/status`: its supplementary groups (`Groups:`) and effective
/// capabilities (`CapEff:`). Cached per thread by [`IdentityCache::creds`] together
/// with the fs uid/gid they were read under.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Creds {
    /// Supplementary group ids; empty when unreadable.
    pub groups: Vec<u32>,
    /// Effective capability bits; `None` when unreadable.
    pub cap_eff: Option<u64>,
    /// fs uid/gid of the request they were read for: a change (setuid/setgid) means
    /// the groups and capabilities may have changed too.
    fsids: (u32, u32),
}

impl Creds {
    /// Whether the thread has capability number `cap` (linux/capability.h);
    /// `None` when its capabilities could not be read.
    pub fn has_cap(&self, cap: u32) -> Option<bool> {
        self.cap_eff.map(|c| c & (1 << cap) != 0)
    }
}

/// Address-space fingerprint from a stat line: (startcode, endcode, startstack).
/// Every execve builds a new address space, and with ASLR a new stack address.
type Image = [u64; 3];

#[derive(Debug)]
struct TidEntry {
    process: Arc<ProcessInfo>,
    /// The thread's own start time (field 22 of `/proc/<tid>/stat`).
    thread_start: u64,
    /// Fingerprint of the address space the identity was read from.
    image: Option<Image>,
    /// Groups and capabilities, read on first need ([`IdentityCache::creds`]).
    creds: Option<Arc<Creds>>,
    /// Last resolve (a re-read from /proc).
    checked: Instant,
    /// Last revalidation that found nothing changed, as a stamp (see `used`); kept
    /// apart so that it is set under the map's read lock.
    rechecked: AtomicU64,
    /// Last request of the thread, ns after the cache's `epoch` (see [`IDLE_RECHECK`]).
    used: AtomicU64,
}

impl Clone for TidEntry {
    fn clone(&self) -> Self {
        Self {
            process: self.process.clone(),
            thread_start: self.thread_start,
            image: self.image,
            creds: self.creds.clone(),
            checked: self.checked,
            rechecked: AtomicU64::new(self.rechecked.load(Ordering::Relaxed)),
            used: AtomicU64::new(self.used.load(Ordering::Relaxed)),
        }
    }
}

#[derive(Debug)]
struct ProcEntry {
    info: Arc<ProcessInfo>,
    image: Option<Image>,
    /// When it was read from /proc.
    at: Instant,
}

/// Cache of caller identities, read from `/proc` (see the module documentation).
/// Holds at most [`MAX_ENTRIES`] tids, [`MAX_ENTRIES`] processes and [`MAX_ENTRIES`]
/// exec marks. All methods take `&self` and are internally synchronised (parking_lot
/// locks; no lock is held across another); none returns an error.
#[derive(Debug)]
pub struct IdentityCache {
    tids: RwLock<HashMap<u32, TidEntry>>,
    procs: RwLock<HashMap<(u32, u64), ProcEntry>>,
    /// pid → when marked: comm/exe/cmdline are re-read at the process's next request.
    marks: Mutex<HashMap<u32, Instant>>,
    /// `marks.len()`, so that a hit checks the (usually empty) mark set without a lock.
    marks_len: AtomicUsize,
    revalidate: Duration,
    /// Origin of the `used` stamps of tid entries.
    epoch: Instant,
    /// [`IDLE_RECHECK`] in ns (tests lengthen it).
    idle_ns: u64,
}

impl Default for IdentityCache {
    /// Same as [`IdentityCache::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl IdentityCache {
    /// Empty cache with the default revalidation interval [`REVALIDATE`] (2 s).
    /// Allocates nothing until the first request; cannot fail.
    pub fn new() -> Self {
        Self::with_revalidate(REVALIDATE)
    }

    /// Empty cache whose entries are re-checked in `/proc` after `interval` (a
    /// [`Duration`]; `Duration::ZERO` re-checks on every request, which the benchmark
    /// uses to measure a revalidation). Tests use a short interval to exercise the
    /// exec detection. Cannot fail.
    pub fn with_revalidate(interval: Duration) -> Self {
        Self {
            tids: RwLock::default(),
            procs: RwLock::default(),
            marks: Mutex::default(),
            marks_len: AtomicUsize::new(0),
            revalidate: interval,
            epoch: Instant::now(),
            idle_ns: IDLE_RECHECK.as_nanos() as u64,
        }
    }

    /// `now` as ns after the cache's epoch.
    fn stamp(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Stamp of `e`'s last resolve or revalidation.
    fn checked_at(&self, e: &TidEntry) -> u64 {
        self.stamp(e.checked)
            .max(e.rechecked.load(Ordering::Relaxed))
    }

    /// Identity of the thread `tid` (from the FUSE request header), with the request's
    /// fs `uid`/`gid` copied through.
    ///
    /// Cost: a cache hit reads no /proc file, about 0.1 µs (the "identity, cached" rows
    /// of `cargo bench --bench journal`; budget 5 µs). A miss reads
    /// `/proc/<tid>/status`, `/proc/<tid>/stat` and, for a process not cached yet, its
    /// comm, exe, cmdline, ns/pid, cgroup and ancestors' stat (20–200 µs cold). Once per
    /// revalidation interval per tid, and at the first request after
    /// [`Self::note_exec`], a hit costs a revalidation instead (a stat read and an exe
    /// readlink, about 10 µs: the "identity, revalidation" row; a full re-read of the
    /// process when it exec'd).
    ///
    /// Errors: none are returned. `process` is `None` when the tid's /proc entry cannot
    /// be read on a miss (the thread is gone); a thread found gone at revalidation keeps
    /// its last known process identity.
    pub fn caller(&self, tid: u32, uid: u32, gid: u32) -> Caller {
        let now = Instant::now();
        let stamp = self.stamp(now);
        // Fresh: the process identity; stale: the entry, for a revalidation.
        let hit = self.tids.read().get(&tid).map(|e| {
            let idle = stamp.saturating_sub(e.used.swap(stamp, Ordering::Relaxed));
            let age = stamp.saturating_sub(self.checked_at(e));
            if age < self.revalidate.as_nanos() as u64 && idle < self.idle_ns {
                Ok(e.process.clone())
            } else {
                Err(e.clone())
            }
        });
        let process = match hit {
            Some(Ok(p)) if !self.exec_marked(p.pid) => Some(p),
            // Fresh, but an exec mark is pending: the revalidation takes the mark. (The
            // read guard must be gone before it: `revalidate` may take the write lock.)
            Some(Ok(_)) => {
                let e = self.tids.read().get(&tid).cloned();
                match e {
                    Some(e) => self.revalidate(tid, e),
                    None => self.resolve(tid),
                }
            }
            Some(Err(e)) => self.revalidate(tid, e),
            None => self.resolve(tid),
        };
        Caller {
            tid,
            uid,
            gid,
            process,
        }
    }

    /// Supplementary groups and capabilities of thread `tid`, whose request carries fs
    /// `uid`/`gid`. Cached in the thread's entry (set up by [`Self::caller`]) until its
    /// fs ids change or the thread is re-resolved (an exec); without an entry (no
    /// journal), read each time. One `/proc/<tid>/status` read on a miss; `None` when
    /// the thread is gone.
    pub fn creds(&self, tid: u32, uid: u32, gid: u32) -> Option<Arc<Creds>> {
        let cached = self.tids.read().get(&tid).map(|e| e.creds.clone());
        if let Some(Some(c)) = &cached
            && c.fsids == (uid, gid)
        {
            return Some(c.clone());
        }
        let st = read_status(tid)?;
        let c = Arc::new(Creds {
            groups: st.groups,
            cap_eff: st.cap_eff,
            fsids: (uid, gid),
        });
        if cached.is_some()
            && let Some(e) = self.tids.write().get_mut(&tid)
        {
            e.creds = Some(c.clone());
        }
        Some(c)
    }

    /// Mark the process of thread `tid` as "exec in progress": `tid` opened a file with
    /// `__FMODE_EXEC`. Call it after that open's own identity lookups: the first
    /// [`Self::caller`] for the process (any of its threads) after the mark re-reads
    /// comm/exe/cmdline and clears the mark.
    ///
    /// Source of the pid: the cached tid entry, else `Tgid:` of `/proc/<tid>/status`
    /// (one /proc read, 5–20 µs). Errors: none; if the tid cannot be resolved the mark is
    /// skipped (the periodic revalidation still notices the exec). A mark not consumed
    /// within [`EXEC_MARK_TTL`] is dropped; at most [`MAX_ENTRIES`] marks are kept.
    pub fn note_exec(&self, tid: u32) {
        let pid = self
            .tids
            .read()
            .get(&tid)
            .map(|e| e.process.pid)
            .or_else(|| read_status(tid).map(|s| s.tgid));
        let Some(pid) = pid else { return };
        let now = Instant::now();
        let mut marks = self.marks.lock();
        if marks.len() >= MAX_ENTRIES && !marks.contains_key(&pid) {
            let ttl = self.mark_ttl();
            marks.retain(|_, at| now.duration_since(*at) < ttl);
            evict_oldest(&mut marks, LOW_WATER, |at| *at);
        }
        marks.insert(pid, now);
        self.marks_len.store(marks.len(), Ordering::Release);
    }

    fn mark_ttl(&self) -> Duration {
        EXEC_MARK_TTL.max(self.revalidate)
    }

    /// Is an exec mark pending for `pid`? Lock-free when no mark is pending at all.
    #[inline]
    fn exec_marked(&self, pid: u32) -> bool {
        self.marks_len.load(Ordering::Acquire) != 0 && self.marks.lock().contains_key(&pid)
    }

    /// Remove `pid`'s exec mark; true if there was one.
    fn take_exec(&self, pid: u32) -> bool {
        if self.marks_len.load(Ordering::Acquire) == 0 {
            return false;
        }
        let mut marks = self.marks.lock();
        let hit = marks.remove(&pid).is_some();
        self.marks_len.store(marks.len(), Ordering::Release);
        hit
    }

    /// Drop marks older than the mark TTL (their process never came back, or came back
    /// through a path that did not consume them).
    fn expire_marks(&self) {
        if self.marks_len.load(Ordering::Acquire) == 0 {
            return;
        }
        let ttl = self.mark_ttl();
        let now = Instant::now();
        let mut marks = self.marks.lock();
        marks.retain(|_, at| now.duration_since(*at) < ttl);
        self.marks_len.store(marks.len(), Ordering::Release);
    }

    fn revalidate(&self, tid: u32, e: TidEntry) -> Option<Arc<ProcessInfo>> {
        self.expire_marks();
        let Some(st) = read_stat(tid) else {
            self.tids.write().remove(&tid);
            // The thread is gone; the process identity we had is still the best answer.
            return Some(e.process);
        };
        if st.starttime != e.thread_start {
            // The tid was reused by another thread.
            return self.resolve(tid);
        }
        let pid = e.process.pid;
        let exec = self.take_exec(pid);
        if exec || image_changed(tid, st.image(), e.image, &e.process.exe) {
            let pstat = if pid == tid {
                Some(st.clone())
            } else {
                read_stat(pid)
            };
            return match pstat {
                Some(pstat) if pstat.starttime == e.process.starttime => {
                    let p = self.store_process(pid, tid, &pstat, st.image(), true);
                    self.insert_tid(tid, p.clone(), st.starttime, st.image());
                    Some(p)
                }
                _ => self.resolve(tid).or(Some(e.process)),
            };
        }
        if let Some(t) = self.tids.read().get(&tid) {
            t.rechecked
                .store(self.stamp(Instant::now()), Ordering::Relaxed);
        }
        Some(e.process)
    }

    fn resolve(&self, tid: u32) -> Option<Arc<ProcessInfo>> {
        let status = read_status(tid)?;
        let thread = read_stat(tid)?;
        let pid = status.tgid;
        let pstat = if pid == tid {
            thread.clone()
        } else {
            read_stat(pid)?
        };
        let key = (pid, pstat.starttime);
        let exec = self.take_exec(pid);
        let cached = if exec {
            None
        } else {
            self.procs
                .read()
                .get(&key)
                .map(|p| (p.info.clone(), p.image))
        };
        let process = match cached {
            Some((info, image)) if !image_changed(tid, thread.image(), image, &info.exe) => info,
            // Cached, but the process exec'd since: re-read and update its threads.
            Some(_) => self.store_process(pid, tid, &pstat, thread.image(), true),
            None => self.store_process(pid, tid, &pstat, thread.image(), exec),
        };
        self.insert_tid(tid, process.clone(), thread.starttime, thread.image());
        Some(process)
    }

    /// Read the process from /proc and cache it under (pid, starttime). With `replace`
    /// (an exec), the new identity replaces a cached one and every cached thread entry of
    /// the process (an O(n) pass, once per exec); otherwise a concurrent resolver's entry
    /// wins, so that threads share one `Arc`.
    fn store_process(
        &self,
        pid: u32,
        tid: u32,
        pstat: &Stat,
        image: Option<Image>,
        replace: bool,
    ) -> Arc<ProcessInfo> {
        let key = (pid, pstat.starttime);
        let info = Arc::new(read_process(pid, tid, pstat));
        let stored = {
            let mut procs = self.procs.write();
            if procs.len() >= MAX_ENTRIES && !procs.contains_key(&key) {
                // Entries no thread entry (nor handle) refers to first, then the oldest.
                procs.retain(|_, p| Arc::strong_count(&p.info) > 1);
                evict_oldest(&mut procs, LOW_WATER, |p| p.at);
            }
            let entry = ProcEntry {
                info: info.clone(),
                image,
                at: Instant::now(),
            };
            if replace {
                procs.insert(key, entry);
                info
            } else {
                procs.entry(key).or_insert(entry).info.clone()
            }
        };
        if replace {
            for e in self.tids.write().values_mut() {
                if e.process.pid == pid && e.process.starttime == pstat.starttime {
                    e.process = stored.clone();
                    e.image = image;
                }
            }
        }
        stored
    }

    fn insert_tid(
        &self,
        tid: u32,
        process: Arc<ProcessInfo>,
        thread_start: u64,
        image: Option<Image>,
    ) {
        let now = Instant::now();
        let mut tids = self.tids.write();
        if tids.len() >= MAX_ENTRIES && !tids.contains_key(&tid) {
            // Entries past their interval would need a /proc read anyway; then the
            // least recently checked (an active tid is re-checked every interval).
            let interval = self.revalidate.as_nanos() as u64;
            let now_stamp = self.stamp(now);
            tids.retain(|_, e| now_stamp.saturating_sub(self.checked_at(e)) < interval);
            evict_oldest(&mut tids, LOW_WATER, |e| self.checked_at(e));
        }
        tids.insert(
            tid,
            TidEntry {
                process,
                thread_start,
                image,
                creds: None,
                checked: now,
                rechecked: AtomicU64::new(0),
                used: AtomicU64::new(self.stamp(now)),
            },
        );
    }
}

/// Did the process exec since the identity was read? True if both address-space
/// fingerprints are known and differ, or the current exe link is readable and differs
/// from the cached one. One readlink of `/proc/<tid>/exe` (2–4 µs).
fn image_changed(
    tid: u32,
    now: Option<Image>,
    cached: Option<Image>,
    cached_exe: &Option<String>,
) -> bool {
    if let (Some(a), Some(b)) = (now, cached)
        && a != b
    {
        return true;
    }
    matches!(read_exe(tid), Some(x) if cached_exe.as_deref() != Some(x.as_str()))
}

/// Shrink `map` to at most `keep` entries by dropping the oldest (by `at`). Ties with
/// the cut-off are dropped too, so the result is always within the bound. O(n).
fn evict_oldest<K: Eq + Hash, V, T: Ord + Copy>(
    map: &mut HashMap<K, V>,
    keep: usize,
    at: impl Fn(&V) -> T,
) {
    if map.len() <= keep {
        return;
    }
    let drop = map.len() - keep;
    let mut ages: Vec<T> = map.values().map(&at).collect();
    let (_, cutoff, _) = ages.select_nth_unstable(drop - 1);
    let cutoff = *cutoff;
    map.retain(|_, v| at(v) > cutoff);
}

impl Caller {
    /// Copy the identity fields (pid, tid, ppid, uid, gid, comm, exe, cmdline,
    /// starttime, pidns, cgroup, ancestry) into the journal record `rec`; the process
    /// fields stay unset when [`Caller::process`] is `None`. No /proc access; cannot
    /// fail.
    pub fn fill(&self, rec: &mut Record) {
        rec.tid = Some(self.tid);
        rec.uid = Some(self.uid);
        rec.gid = Some(self.gid);
        if let Some(p) = &self.process {
            rec.pid = Some(p.pid);
            rec.ppid = Some(p.ppid);
            rec.comm = Some(p.comm.clone());
            rec.exe = p.exe.clone();
            rec.cmdline = Some(p.cmdline.clone());
            rec.starttime = Some(p.starttime);
            rec.pidns = p.pidns;
            rec.cgroup = p.cgroup.clone();
            if !p.ancestry.is_empty() {
                rec.ancestry = Some(p.ancestry.clone());
            }
        }
    }
}

/// The fields we use from a `/proc/<id>/stat` line (see proc(5)), as parsed by
/// [`parse_stat`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Field 2 (comm) without the parentheses.
    pub comm: String,
    /// Field 3: state (`R`, `S`, `D`, `Z` zombie, `X` dead, …).
    pub state: char,
    /// Field 4: parent pid.
    pub ppid: u32,
    /// Field 22: start time in clock ticks (USER_HZ) after boot.
    pub starttime: u64,
    /// Field 26: address above which program text can run (startcode); 0 if absent
    /// (an older or truncated line), 1 without ptrace access, 0 for kernel threads.
    pub startcode: u64,
    /// Field 27: address below which program text can run (endcode); same caveats.
    pub endcode: u64,
    /// Field 28: address of the start (bottom) of the stack (startstack); 0 if absent,
    /// without ptrace access, or without an address space.
    pub startstack: u64,
}

impl Stat {
    /// Address-space fingerprint, `None` when unknown (startstack hidden or absent).
    fn image(&self) -> Option<Image> {
        (self.startstack != 0).then_some([self.startcode, self.endcode, self.startstack])
    }
}

/// Parse the text of `/proc/<id>/stat`. comm (field 2) may contain spaces and
/// parentheses, so the remaining fields are split after the **last** `)`.
/// Errors: `None` if there is no `(`…`)`, or fields 4 or 22 are missing or not
/// numbers. Fields 26–28 are optional (0 when missing).
pub fn parse_stat(s: &str) -> Option<Stat> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = s.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state): field N is rest[N - 3].
    let opt = |n: usize| rest.get(n - 3).and_then(|v| v.parse().ok()).unwrap_or(0);
    Some(Stat {
        comm,
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        starttime: rest.get(19)?.parse().ok()?,
        startcode: opt(26),
        endcode: opt(27),
        startstack: opt(28),
    })
}

/// `/proc/<id>/stat`, parsed; `None` when the process is gone or the line is bad.
pub fn read_stat(id: u32) -> Option<Stat> {
    // Bytes, not a string: `comm` (inside the line) may be any bytes (PR_SET_NAME).
    parse_stat(&crate::names::encode(
        &fs::read(format!("/proc/{id}/stat")).ok()?,
    ))
}

fn read_exe(id: u32) -> Option<String> {
    fs::read_link(format!("/proc/{id}/exe"))
        .ok()
        .map(|p| crate::names::encode_os(p.as_os_str()))
}

/// The fields of `/proc/<tid>/status` sessionfs uses.
struct Status {
    tgid: u32,
    /// `Groups:`, empty if absent.
    groups: Vec<u32>,
    /// `CapEff:` (hex), if present and well formed.
    cap_eff: Option<u64>,
}

fn read_status(tid: u32) -> Option<Status> {
    // `Name:` may hold any bytes: read bytes, spell them losslessly.
    let s = crate::names::encode(&fs::read(format!("/proc/{tid}/status")).ok()?);
    let field = |name: &str| s.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    Some(Status {
        tgid: field("Tgid:")?.parse().ok()?,
        groups: field("Groups:")
            .map(|g| {
                g.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
            .unwrap_or_default(),
        cap_eff: field("CapEff:").and_then(|h| u64::from_str_radix(h, 16).ok()),
    })
}

fn read_process(pid: u32, tid: u32, st: &Stat) -> ProcessInfo {
    let comm = fs::read(format!("/proc/{pid}/comm"))
        .map(|c| crate::names::encode(c.strip_suffix(b"\n").unwrap_or(&c)))
        .unwrap_or_else(|_| st.comm.clone());
    // The threads share the address space; the calling thread is alive even when the
    // leader has exited (its exe link and cmdline then read as gone).
    let exe = read_exe(tid).or_else(|| read_exe(pid));
    let raw = fs::read(format!("/proc/{tid}/cmdline"))
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| fs::read(format!("/proc/{pid}/cmdline")).ok())
        .unwrap_or_default();
    let root = format!("/proc/{pid}/root");
    let cmdline = parse_cmdline(&raw, |path| {
        std::path::Path::new(&format!("{root}{path}")).exists()
    });
    let pidns = fs::read_link(format!("/proc/{pid}/ns/pid"))
        .ok()
        .and_then(|l| {
            l.to_str()?
                .strip_prefix("pid:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        });
    let cgroup = fs::read(format!("/proc/{pid}/cgroup"))
        .ok()
        .map(|b| crate::names::encode(&b))
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        });
    let mut ancestry = Vec::new();
    let mut next = st.ppid;
    while ancestry.len() < ANCESTRY_DEPTH && next > 0 {
        let Some(a) = read_stat(next) else { break };
        ancestry.push(Ancestor {
            pid: next,
            comm: a.comm,
        });
        next = a.ppid;
    }
    ProcessInfo {
        pid,
        ppid: st.ppid,
        comm,
        exe,
        cmdline,
        starttime: st.starttime,
        pidns,
        cgroup,
        ancestry,
    }
}

/// Words that make a flag or `name=value` / `Name: value` name a secret when they are one
/// of its words (split at `-`, `_`, `.` and lower→upper case changes).
const SECRET_WORDS: &[&str] = &[
    "key",
    "apikey",
    "token",
    "secret",
    "password",
    "passwd",
    "passphrase",
    "pass",
    "auth",
    "authorization",
    "credential",
    "credentials",
    "cookie",
];
/// Name endings that make it a secret even inside one word (`PGPASSWORD`, `apikey`).
const SECRET_SUFFIXES: &[&str] = &["key", "token", "secret", "password", "passwd", "passphrase"];
/// A last word that names something about the secret, not the secret itself
/// (`--token-file`, `KEY_PATH`, `--auth-url`, `--secret-name`).
const NOT_SECRET_LAST: &[&str] = &[
    "file", "files", "path", "dir", "url", "uri", "host", "type", "mode", "method", "name", "id",
    "len", "length", "size",
];
/// Prefixes of well-known API tokens, redacted wherever they start a word.
const TOKEN_PREFIXES: &[&str] = &[
    "sk-",
    "ghp_",
    "gho_",
    "ghs_",
    "ghu_",
    "github_pat_",
    "glpat-",
    "xoxb-",
    "xoxp-",
];
/// HTTP authorization schemes whose following word is a credential.
const AUTH_SCHEMES: &[&str] = &["bearer", "basic"];

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// Is `name` (a flag without its dashes, an assignment's or a header's name) the name of
/// a secret?
fn is_secret_name(name: &str) -> bool {
    let name = name.trim_start_matches('-');
    if name.is_empty() {
        return false;
    }
    let mut words: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() {
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && prev_lower && !cur.is_empty() {
            words.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        cur.push(c.to_ascii_lowercase());
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let Some(last) = words.last() else {
        return false;
    };
    if NOT_SECRET_LAST.contains(&last.as_str()) {
        return false;
    }
    let lower = name.to_ascii_lowercase();
    words.iter().any(|w| SECRET_WORDS.contains(&w.as_str()))
        || SECRET_SUFFIXES.iter().any(|s| lower.ends_with(s))
}

/// A flag (`-x…`/`--x…`, no `=`) whose next argument is a secret: `--token`,
/// `--api-key`, `--password`, `--secret`, `-auth`, `--gateway-token`…
/// Short flags whose value is a secret (`openclaw … -t <token>`).
const SECRET_SHORT_FLAGS: &[&str] = &["-t"];

fn is_secret_flag(a: &str) -> bool {
    a.len() > 1 && a.starts_with('-') && a.bytes().all(is_name_byte) && is_secret_name(a)
}

/// A header name alone (`Authorization:`, `X-Api-Key:`) whose next argument is a secret.
fn is_secret_header(a: &str) -> bool {
    a.strip_suffix(':')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(is_name_byte) && is_secret_name(n))
}

fn is_auth_scheme(a: &str) -> bool {
    AUTH_SCHEMES.iter().any(|s| a.eq_ignore_ascii_case(s))
}

/// End of a value embedded in text: the next blank, quote, separator or closing bracket.
fn value_end(b: &[u8], from: usize) -> usize {
    b[from..]
        .iter()
        .position(|c| {
            c.is_ascii_whitespace()
                || matches!(c, b'&' | b';' | b',' | b'"' | b'\'' | b')' | b']' | b'}')
        })
        .map_or(b.len(), |p| from + p)
}

/// Offsets where `needle` occurs in `hay` at the start of a word (not right after an
/// ASCII letter or digit).
fn word_starts<'a>(hay: &'a str, needle: &'a str) -> impl Iterator<Item = usize> + 'a {
    hay.match_indices(needle)
        .map(|(i, _)| i)
        .filter(move |&i| i == 0 || !hay.as_bytes()[i - 1].is_ascii_alphanumeric())
}

/// Redact secrets inside one argument (or a whole process title), leaving the rest:
/// - `name=value` and `Name: value` where `name` is a secret name (`--api-key=…`,
///   `API_KEY=…`, `password=…`, `?token=…&`, `Authorization: …`, `"api_key": "…"`):
///   the value becomes `<redacted>`. A value runs to the end of the argument when the
///   name starts the argument or the separator is `:` (a header), else to the next
///   blank, quote, `&`, `;`, `,` or closing bracket; a quoted value to its quote.
/// - the word after `Bearer`/`Basic` (any case);
/// - tokens starting a word with a well-known prefix (`sk-…`, `ghp_…`, `xoxb-…`…).
fn redact_text(s: &str) -> Cow<'_, str> {
    let b = s.as_bytes();
    let lower = s.to_ascii_lowercase();
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    // A flag and its value in one argument (`sh -c "openclaw --token X"`, or argv
    // built as the single string "--token X"): the word after a secret flag.
    let words: Vec<(usize, &str)> = s
        .split_ascii_whitespace()
        .map(|w| (w.as_ptr() as usize - s.as_ptr() as usize, w))
        .collect();
    for pair in words.windows(2) {
        let (flag, (at, value)) = (pair[0].1, pair[1]);
        if is_secret_flag(flag) || SECRET_SHORT_FLAGS.contains(&flag) {
            ranges.push((at, at + value.len()));
        }
    }
    for (i, &c) in b.iter().enumerate() {
        if c != b'=' && c != b':' {
            continue;
        }
        let mut name_end = i;
        if name_end > 0 && matches!(b[name_end - 1], b'"' | b'\'') {
            name_end -= 1;
        }
        let mut start = name_end;
        while start > 0 && is_name_byte(b[start - 1]) {
            start -= 1;
        }
        if start == name_end || !is_secret_name(&s[start..name_end]) {
            continue;
        }
        let mut v = i + 1;
        while v < b.len() && b[v] == b' ' {
            v += 1;
        }
        let (vs, ve) = if v < b.len() && matches!(b[v], b'"' | b'\'') {
            let q = b[v];
            let end = b[v + 1..]
                .iter()
                .position(|x| *x == q)
                .map_or(b.len(), |p| v + 1 + p);
            (v + 1, end)
        } else if c == b':' || start == 0 {
            (v, b.len())
        } else {
            (v, value_end(b, v))
        };
        if ve > vs {
            ranges.push((vs, ve));
        }
    }
    for scheme in AUTH_SCHEMES {
        for i in word_starts(&lower, scheme) {
            let after = i + scheme.len();
            if !b.get(after).is_some_and(|c| c.is_ascii_whitespace()) {
                continue;
            }
            let mut v = after;
            while v < b.len() && b[v].is_ascii_whitespace() {
                v += 1;
            }
            let e = value_end(b, v);
            if e > v {
                ranges.push((v, e));
            }
        }
    }
    for prefix in TOKEN_PREFIXES {
        for i in word_starts(&lower, prefix) {
            let from = i + prefix.len();
            let tail = b[from..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-'))
                .count();
            if tail > 0 {
                ranges.push((i, from + tail));
            }
        }
    }
    if ranges.is_empty() {
        return Cow::Borrowed(s);
    }
    ranges.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(ranges.len());
    for (rs, re) in ranges {
        match merged.last_mut() {
            Some(last) if rs <= last.1 => last.1 = last.1.max(re),
            _ => merged.push((rs, re)),
        }
    }
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    for (rs, re) in merged {
        out.push_str(&s[at..rs]);
        out.push_str(REDACTED);
        at = re;
    }
    out.push_str(&s[at..]);
    Cow::Owned(out)
}

/// `argv[0]` plus at most two more arguments, with secrets replaced by `<redacted>`:
/// - the argument after `-t`, and the word after a secret flag within one argument
///   (`"--token X"`, `sh -c "openclaw --token X"`);
/// - the argument after a secret flag (`--token X`, `--api-key X`, `--password X`,
///   `--secret X`, any flag with a secret word such as `--gateway-token X`; not
///   `--token-file X`), after a header name alone (`Authorization: X`) and after
///   `Bearer`/`Basic` (which is kept: `Authorization: Bearer X` keeps `Bearer`);
/// - within each argument (and anywhere in it): `--token=X`, `NAME_KEY=X`,
///   `key=`/`token=`/`secret=`/`password=` assignments anywhere (case-insensitive
///   name words and endings, `PGPASSWORD=`), `Authorization: …` and other secret
///   headers, `Bearer X`, and `sk-…` (and `ghp_…`, `github_pat_…`, `glpat-…`,
///   `xoxb-…`, `xoxp-…`) tokens anywhere in an argument.
///
/// Pure function, no errors; the input is argv as read from `/proc/<pid>/cmdline`.
pub fn redact(args: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(3);
    let mut secret_next = false;
    for a in args {
        if out.len() == 3 {
            break;
        }
        if secret_next {
            if is_auth_scheme(a) {
                // `Authorization: Bearer X`: the scheme is no secret, the next word is.
                out.push(a.clone());
            } else {
                out.push(REDACTED.into());
                secret_next = false;
            }
            continue;
        }
        secret_next = is_secret_flag(a)
            || SECRET_SHORT_FLAGS.contains(&a.as_str())
            || is_secret_header(a)
            || is_auth_scheme(a);
        out.push(redact_text(a).into_owned());
    }
    out
}

/// Turn the raw bytes of `/proc/<pid>/cmdline` into the recorded `cmdline`: `argv[0]` plus
/// at most two more arguments, secrets redacted (see [`redact`]).
///
/// Arguments are NUL-separated. A process that rewrote its title (Node's
/// `process.title`, `setproctitle`) leaves one NUL-less string such as
/// `openclaw-gateway --token abc`: when there is exactly one non-empty piece, it contains
/// whitespace and `is_file(piece)` is false (the daemon passes a check of the path under
/// `/proc/<pid>/root`, so that an `argv[0]` with a space in it stays whole), the piece is
/// redacted as a whole and then split at whitespace. Non-UTF-8 bytes are spelled as in [`crate::names`].
/// Pure apart from `is_file`; no errors (empty input gives an empty list).
pub fn parse_cmdline(raw: &[u8], is_file: impl Fn(&str) -> bool) -> Vec<String> {
    let mut pieces = raw.split(|b| *b == 0).filter(|a| !a.is_empty());
    let args: Vec<String> = match (pieces.next(), pieces.next()) {
        (None, _) => return Vec::new(),
        (Some(one), None) => {
            let one = crate::names::encode(one);
            if one.contains(|c: char| c.is_whitespace()) && !is_file(&one) {
                redact_text(&one)
                    .split_whitespace()
                    .take(3)
                    .map(str::to_string)
                    .collect()
            } else {
                vec![one]
            }
        }
        (Some(a), Some(b)) => [a, b]
            .into_iter()
            .chain(pieces.next())
            .map(crate::names::encode)
            .collect(),
    };
    // Each argument yields exactly one output, so three inputs are all `redact` needs.
    redact(&args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn r1(a: &str) -> String {
        redact(&s(&["x", a])).pop().unwrap()
    }

    #[test]
    fn parses_stat_with_hostile_comm() {
        let line = "1234 (a) b (c)) S 77 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200";
        let st = parse_stat(line).unwrap();
        assert_eq!(st.comm, "a) b (c)");
        assert_eq!(st.ppid, 77);
        assert_eq!(st.starttime, 987654);
        assert_eq!((st.startcode, st.endcode, st.startstack), (0, 0, 0));
        assert!(st.image().is_none());
        assert!(parse_stat("garbage").is_none());
        let full = "9 (x) S 1 9 9 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55 1 2 3 4096 8192 140000";
        let st = parse_stat(full).unwrap();
        assert_eq!(
            (st.startcode, st.endcode, st.startstack),
            (4096, 8192, 140000)
        );
        assert_eq!(st.image(), Some([4096, 8192, 140000]));
    }

    #[test]
    fn redacts_secrets_and_keeps_three_args() {
        assert_eq!(
            redact(&s(&["openclaw", "gateway", "run", "--port", "1"])),
            s(&["openclaw", "gateway", "run"])
        );
        assert_eq!(
            redact(&s(&["oc", "--token", "abc"])),
            s(&["oc", "--token", REDACTED])
        );
        assert_eq!(
            redact(&s(&["oc", "--api-key=abc", "x"])),
            s(&["oc", &format!("--api-key={REDACTED}"), "x"])
        );
        assert_eq!(
            redact(&s(&["oc", "sk-live-123", "x"])),
            s(&["oc", REDACTED, "x"])
        );
        assert_eq!(
            redact(&s(&["env", "OPENAI_API_KEY=zz", "y"])),
            s(&["env", &format!("OPENAI_API_KEY={REDACTED}"), "y"])
        );
        assert_eq!(
            redact(&s(&["oc", "--gateway-token", "t"])),
            s(&["oc", "--gateway-token", REDACTED])
        );
        assert_eq!(
            redact(&s(&["python3", "-c", "print(1)"])),
            s(&["python3", "-c", "print(1)"])
        );
    }

    #[test]
    fn redacts_sk_tokens_inside_arguments() {
        assert_eq!(
            r1("--header=Authorization: Bearer sk-abc"),
            format!("--header=Authorization: {REDACTED}")
        );
        assert_eq!(
            r1("--note=use sk-abc123 here"),
            format!("--note=use {REDACTED} here")
        );
        assert_eq!(r1("(sk-ant-api03-x_Y)"), format!("({REDACTED})"));
        assert_eq!(r1("x,sk-abc,y"), format!("x,{REDACTED},y"));
        assert_eq!(r1("https://x-access-token:ghp_AbC1@github.com/o/r"), {
            format!("https://x-access-token:{REDACTED}")
        });
        assert_eq!(r1("glpat-xyz"), REDACTED);
        // Not at a word start: no token.
        assert_eq!(r1("task-runner"), "task-runner");
        assert_eq!(r1("disk-usage"), "disk-usage");
        assert_eq!(r1("sk-"), "sk-");
    }

    #[test]
    fn redacts_bearer_and_authorization() {
        assert_eq!(r1("Bearer abc.def"), format!("Bearer {REDACTED}"));
        assert_eq!(r1("bearer   abc rest"), format!("bearer   {REDACTED} rest"));
        assert_eq!(
            r1("Authorization: Basic dXNlcjpw"),
            format!("Authorization: {REDACTED}")
        );
        assert_eq!(r1("x-api-key: abc"), format!("x-api-key: {REDACTED}"));
        assert_eq!(
            r1(r#"{"api_key":"abc","n":1}"#),
            format!(r#"{{"api_key":"{REDACTED}","n":1}}"#)
        );
        // As separate arguments.
        assert_eq!(
            redact(&s(&["curl", "Bearer", "abc"])),
            s(&["curl", "Bearer", REDACTED])
        );
        assert_eq!(
            redact(&s(&["Authorization:", "Bearer", "abc"])),
            s(&["Authorization:", "Bearer", REDACTED])
        );
        // A word merely starting with a scheme name is not one.
        assert_eq!(r1("bearers all"), "bearers all");
        assert_eq!(r1("Bearer"), "Bearer");
    }

    #[test]
    fn redacts_secret_flags_both_forms() {
        for flag in [
            "--token",
            "--api-key",
            "--password",
            "--secret",
            "-token",
            "--apiKey",
        ] {
            assert_eq!(
                redact(&s(&["oc", flag, "v"])),
                s(&["oc", flag, REDACTED]),
                "{flag} X"
            );
            assert_eq!(
                redact(&s(&["oc", &format!("{flag}=v w"), "y"])),
                s(&["oc", &format!("{flag}={REDACTED}"), "y"]),
                "{flag}=X"
            );
        }
        // A value past the third argument is not recorded at all.
        assert_eq!(
            redact(&s(&["oc", "run", "--password", "v"])),
            s(&["oc", "run", "--password"])
        );
        // Flags naming a file or URL of a secret are not secret themselves.
        assert_eq!(
            redact(&s(&["oc", "--token-file", "/run/t"])),
            s(&["oc", "--token-file", "/run/t"])
        );
        assert_eq!(r1("--auth-url=https://h/"), "--auth-url=https://h/");
    }

    #[test]
    fn redacts_short_token_flag_and_flag_value_in_one_argument() {
        assert_eq!(
            redact(&s(&["openclaw", "-t", "SECRET"])),
            s(&["openclaw", "-t", REDACTED])
        );
        assert_eq!(
            redact(&s(&["openclaw", "--token SECRET"])),
            s(&["openclaw", &format!("--token {REDACTED}")])
        );
        assert_eq!(
            redact(&s(&[
                "sh",
                "-c",
                "openclaw agent --gateway-token abc -t def --to x"
            ])),
            s(&[
                "sh",
                "-c",
                &format!("openclaw agent --gateway-token {REDACTED} -t {REDACTED} --to x")
            ])
        );
        // Other short flags keep their values.
        assert_eq!(redact(&s(&["sort", "-k", "2"])), s(&["sort", "-k", "2"]));
    }

    #[test]
    fn redacts_assignments_case_insensitively() {
        for name in [
            "key",
            "token",
            "secret",
            "password",
            "API_KEY",
            "api_key",
            "Api-Key",
            "OPENAI_API_KEY",
            "GITHUB_TOKEN",
            "DB_PASSWORD",
            "PGPASSWORD",
            "apikey",
            "AWS_SECRET_ACCESS_KEY",
            "SECRET_KEY_BASE",
            "clientSecret",
        ] {
            assert_eq!(
                r1(&format!("{name}=v1")),
                format!("{name}={REDACTED}"),
                "{name}"
            );
        }
        // Embedded: only the value, up to its end.
        assert_eq!(r1("API_KEY=abc node app.js"), format!("API_KEY={REDACTED}"));
        assert_eq!(
            r1("cd /x && API_KEY=abc node app.js"),
            format!("cd /x && API_KEY={REDACTED} node app.js")
        );
        assert_eq!(
            r1("https://h/p?token=abc&page=2"),
            format!("https://h/p?token={REDACTED}&page=2")
        );
        // Not secrets.
        for keep in [
            "keyboard=us",
            "--author=me",
            "PWD=/home/u",
            "LANG=C.UTF-8",
            "KEY_FILE=/k.pem",
            "--session=abc",
            "a=b",
            "password=",
        ] {
            assert_eq!(r1(keep), keep);
        }
    }

    #[test]
    fn splits_a_rewritten_title() {
        let no_file = |_: &str| false;
        assert_eq!(
            parse_cmdline(b"openclaw-gateway --token abc\0\0\0\0", no_file),
            s(&["openclaw-gateway", "--token", REDACTED])
        );
        assert_eq!(
            parse_cmdline(b"node /app/openclaw.mjs gateway --port 18789", no_file),
            s(&["node", "/app/openclaw.mjs", "gateway"])
        );
        assert_eq!(
            parse_cmdline(b"curl -H Authorization: Bearer sk-abc\0", no_file),
            s(&["curl", "-H", "Authorization:"])
        );
        assert_eq!(
            parse_cmdline(b"x --header=Authorization: Bearer abc", no_file),
            s(&["x", "--header=Authorization:", REDACTED])
        );
        assert_eq!(
            parse_cmdline(b"worker API_KEY=abc", no_file),
            s(&["worker", &format!("API_KEY={REDACTED}")])
        );
        // NUL-separated arguments with spaces stay whole.
        assert_eq!(
            parse_cmdline(b"python3\0-c\0print(1); x = 2\0", no_file),
            s(&["python3", "-c", "print(1); x = 2"])
        );
        assert_eq!(
            parse_cmdline(b"sh\0-c\0sleep 1\0extra\0", no_file),
            s(&["sh", "-c", "sleep 1"])
        );
        // A lone argv[0] that is a path with a space stays whole.
        assert_eq!(
            parse_cmdline(b"/opt/My App/app\0", |p| p == "/opt/My App/app"),
            s(&["/opt/My App/app"])
        );
        assert_eq!(parse_cmdline(b"", no_file), Vec::<String>::new());
        assert_eq!(parse_cmdline(b"\0\0", no_file), Vec::<String>::new());
        assert_eq!(parse_cmdline(b"sleep\0", no_file), s(&["sleep"]));
    }

    #[test]
    fn resolves_self_threads_and_children() {
        let cache = IdentityCache::new();
        let me = std::process::id();
        let c = cache.caller(me, 0, 0);
        let p = c.process.clone().unwrap();
        assert_eq!(p.pid, me);
        assert_eq!(p.ppid, nix::unistd::getppid().as_raw() as u32);
        assert!(p.starttime > 0);
        assert!(p.cgroup.is_some());
        assert!(p.pidns.is_some());
        // Hit: the same Arc.
        let c2 = cache.caller(me, 0, 0);
        assert!(Arc::ptr_eq(&p, c2.process.as_ref().unwrap()));
        // Another thread of this process shares the process identity.
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let h = std::thread::spawn(move || {
            tx.send(nix::unistd::gettid().as_raw() as u32).unwrap();
            done_rx.recv().unwrap();
        });
        let tid = rx.recv().unwrap();
        let ct = cache.caller(tid, 0, 0);
        assert_eq!(ct.tid, tid);
        assert!(
            Arc::ptr_eq(&p, ct.process.as_ref().unwrap()),
            "threads share the process identity"
        );
        done_tx.send(()).unwrap();
        h.join().unwrap();
        // A child: its own pid, our pid as parent and first ancestor.
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        // spawn returns at exec_mmap, before the new image's comm/args are in place.
        wait_exec(child.id(), "sleep");
        let cc = cache.caller(child.id(), 0, 0);
        let cp = cc.process.unwrap();
        assert_eq!(cp.pid, child.id());
        assert_eq!(cp.ppid, me);
        assert_eq!(cp.comm, "sleep");
        assert_eq!(cp.cmdline, s(&["sleep", "5"]));
        assert_eq!(cp.ancestry[0].pid, me);
        assert!(cp.exe.as_deref().unwrap().ends_with("sleep"));
        child.kill().unwrap();
        child.wait().unwrap();
        // A dead tid resolves to nothing rather than to a guess.
        assert!(cache.caller(u32::MAX - 1, 0, 0).process.is_none());
    }

    fn wait_exec(pid: u32, comm: &str) {
        for _ in 0..400 {
            let c = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let args = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if c.trim() == comm && !args.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("{pid} never became {comm}");
    }

    fn marks(cache: &IdentityCache) -> usize {
        let n = cache.marks.lock().len();
        assert_eq!(n, cache.marks_len.load(Ordering::Relaxed));
        n
    }

    #[test]
    fn refreshes_comm_after_exec() {
        use std::io::Write;
        // A long interval: only the exec mark can cause the refresh.
        let cache = IdentityCache::with_revalidate(Duration::from_secs(3600));
        let mut child = std::process::Command::new("sh")
            .args(["-c", "read x; exec sleep 5"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        wait_exec(pid, "sh");
        assert_eq!(cache.caller(pid, 0, 0).process.unwrap().comm, "sh");
        // Without a mark, a hit keeps the cached identity.
        assert_eq!(cache.caller(pid, 0, 0).process.unwrap().comm, "sh");
        child.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
        wait_exec(pid, "sleep");
        // The thread was idle for longer than IDLE_RECHECK: its next request re-checks
        // and sees the new image even without a mark.
        assert_eq!(
            cache.caller(pid, 0, 0).process.unwrap().comm,
            "sleep",
            "an exec off the mount is noticed after an idle gap"
        );
        cache.note_exec(pid);
        assert_eq!(marks(&cache), 1);
        let p = cache.caller(pid, 0, 0).process.unwrap();
        assert_eq!(
            p.comm, "sleep",
            "comm refreshed at the first request after the mark"
        );
        assert_eq!(p.cmdline, s(&["sleep", "5"]));
        assert!(p.exe.as_deref().unwrap().ends_with("sleep"));
        assert_eq!(marks(&cache), 0, "the mark is consumed");
        // Then plain hits on the refreshed identity.
        let p2 = cache.caller(pid, 0, 0).process.unwrap();
        assert!(Arc::ptr_eq(&p, &p2));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn exec_mark_is_honoured_on_a_tid_miss_and_updates_sibling_threads() {
        // Our own process, with a stale identity planted in both maps (as if read
        // during an execve) for this thread and for a second live thread.
        let cache = IdentityCache::with_revalidate(Duration::from_secs(3600));
        let me = std::process::id();
        let real = cache.caller(me, 0, 0).process.unwrap();
        let stale = Arc::new(ProcessInfo {
            comm: "old-image".into(),
            ..(*real).clone()
        });
        let key = (real.pid, real.starttime);
        let image = cache.procs.read()[&key].image;
        cache.procs.write().insert(
            key,
            ProcEntry {
                info: stale.clone(),
                image,
                at: Instant::now(),
            },
        );
        cache.tids.write().get_mut(&me).unwrap().process = stale.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let h = std::thread::spawn(move || {
            tx.send(nix::unistd::gettid().as_raw() as u32).unwrap();
            done_rx.recv().unwrap();
        });
        let tid = rx.recv().unwrap();
        assert_eq!(cache.caller(me, 0, 0).process.unwrap().comm, "old-image");
        cache.note_exec(me);
        // The first request after the mark comes from a thread not cached yet.
        let p = cache.caller(tid, 0, 0).process.unwrap();
        assert_eq!(p.comm, real.comm);
        assert_eq!(marks(&cache), 0);
        // The main thread's cached entry now holds the refreshed identity too.
        let pm = cache.caller(me, 0, 0).process.unwrap();
        assert!(Arc::ptr_eq(&p, &pm), "sibling thread entries are updated");
        done_tx.send(()).unwrap();
        h.join().unwrap();
    }

    #[test]
    fn revalidation_notices_an_exec_off_the_mount() {
        // The exec'd binary is not on any mount: no note_exec, only the periodic check.
        let interval = Duration::from_millis(50);
        let cache = IdentityCache::with_revalidate(interval);
        let lazy = IdentityCache::with_revalidate(Duration::from_secs(3600));
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 0.3; exec sleep 2"])
            .spawn()
            .unwrap();
        let pid = child.id();
        wait_exec(pid, "sh");
        let before = cache.caller(pid, 0, 0).process.unwrap();
        assert_eq!(lazy.caller(pid, 0, 0).process.unwrap().comm, "sh");
        assert_eq!(before.comm, "sh");
        let sh_exe = before.exe.clone().unwrap();
        assert!(!sh_exe.ends_with("/sleep"), "{sh_exe}");
        wait_exec(pid, "sleep");
        std::thread::sleep(interval * 2);
        let after = cache.caller(pid, 0, 0).process.unwrap();
        assert_eq!(after.comm, "sleep");
        assert!(after.exe.as_deref().unwrap().ends_with("/sleep"));
        assert_eq!(after.cmdline, s(&["sleep", "2"]));
        assert_eq!(after.starttime, before.starttime, "same process");
        // A cache whose interval has not passed notices it too, after the idle gap.
        assert_eq!(lazy.caller(pid, 0, 0).process.unwrap().comm, "sleep");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn revalidation_notices_an_exec_of_the_same_binary() {
        // Same exe and comm before and after; only the address space (and cmdline) differ.
        let interval = Duration::from_millis(50);
        let cache = IdentityCache::with_revalidate(interval);
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 0.3; exec sh -c 'sleep 2; true'"])
            .spawn()
            .unwrap();
        let pid = child.id();
        wait_exec(pid, "sh");
        let before = cache.caller(pid, 0, 0).process.unwrap();
        assert_eq!(before.cmdline[1], "-c");
        assert!(before.cmdline[2].starts_with("sleep 0.3"));
        let inner = "sleep 2; true";
        for _ in 0..400 {
            let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if raw.ends_with(b"sleep 2; true\0") {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(interval * 2);
        let after = cache.caller(pid, 0, 0).process.unwrap();
        assert_eq!(after.exe, before.exe);
        assert_eq!(after.cmdline, s(&["sh", "-c", inner]));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_burst_stays_cached_and_an_idle_gap_rechecks() {
        let mut cache = IdentityCache::with_revalidate(Duration::from_secs(3600));
        // Long enough that a loaded CI machine does not make the burst look idle.
        let idle = Duration::from_millis(500);
        cache.idle_ns = idle.as_nanos() as u64;
        let me = std::process::id();
        let p = cache.caller(me, 0, 0).process.unwrap();
        // A tid that does not exist: a re-check would find it gone and drop it.
        let ghost = 4_000_000_000;
        cache.tids.write().insert(
            ghost,
            TidEntry {
                used: AtomicU64::new(cache.stamp(Instant::now())),
                ..fake_tid(&p, Duration::ZERO)
            },
        );
        for _ in 0..100 {
            assert!(Arc::ptr_eq(&cache.caller(ghost, 0, 0).process.unwrap(), &p));
        }
        assert!(cache.tids.read().contains_key(&ghost), "hits read no /proc");
        std::thread::sleep(idle + Duration::from_millis(50));
        // Re-checked: the thread is gone, its last identity still answers.
        assert!(Arc::ptr_eq(&cache.caller(ghost, 0, 0).process.unwrap(), &p));
        assert!(
            !cache.tids.read().contains_key(&ghost),
            "re-checked after the gap"
        );
    }

    fn fake_tid(process: &Arc<ProcessInfo>, age: Duration) -> TidEntry {
        TidEntry {
            process: process.clone(),
            thread_start: 1,
            image: None,
            creds: None,
            checked: Instant::now() - age,
            rechecked: AtomicU64::new(0),
            used: AtomicU64::new(0),
        }
    }

    #[test]
    fn tid_map_stays_bounded_when_all_entries_are_recent() {
        let cache = IdentityCache::new();
        let me = std::process::id();
        let p = cache.caller(me, 0, 0).process.unwrap();
        {
            let mut tids = cache.tids.write();
            tids.remove(&me);
            // All recent (well within the interval); fake tids above pid_max.
            for i in 0..MAX_ENTRIES as u32 {
                let age = Duration::from_micros(u64::from(MAX_ENTRIES as u32 - i));
                tids.insert(5_000_000 + i, fake_tid(&p, age));
            }
            assert_eq!(tids.len(), MAX_ENTRIES);
        }
        assert!(cache.caller(me, 0, 0).process.is_some());
        let tids = cache.tids.read();
        assert!(tids.len() <= MAX_ENTRIES, "{}", tids.len());
        assert!(tids.len() <= LOW_WATER + 1, "swept to the low-water mark");
        assert!(tids.contains_key(&me));
        assert!(!tids.contains_key(&5_000_000), "the oldest is evicted");
        assert!(
            tids.contains_key(&(5_000_000 + MAX_ENTRIES as u32 - 1)),
            "the newest kept"
        );
    }

    #[test]
    fn process_map_stays_bounded_and_keeps_live_entries_until_it_must() {
        let cache = IdentityCache::new();
        let me = std::process::id();
        let mine = cache.caller(me, 0, 0).process.unwrap();
        let held: Vec<Arc<ProcessInfo>>;
        {
            let mut procs = cache.procs.write();
            let key = (mine.pid, mine.starttime);
            let own = procs.remove(&key).unwrap();
            // Half unreferenced, half referenced (by `held`): all in use for the second.
            let mut h = Vec::new();
            let n = MAX_ENTRIES as u32;
            for i in 0..n {
                let info = Arc::new(ProcessInfo {
                    pid: 5_000_000 + i,
                    ..Default::default()
                });
                if i % 2 == 0 {
                    h.push(info.clone());
                }
                procs.insert(
                    (5_000_000 + i, 1),
                    ProcEntry {
                        info,
                        image: None,
                        at: Instant::now() - Duration::from_micros(u64::from(n - i)),
                    },
                );
            }
            drop(own);
            held = h;
            assert_eq!(procs.len(), MAX_ENTRIES);
        }
        cache.tids.write().remove(&me);
        assert!(cache.caller(me, 0, 0).process.is_some());
        {
            let procs = cache.procs.read();
            // The unreferenced half went first; that was enough.
            assert_eq!(procs.len(), MAX_ENTRIES / 2 + 1);
            assert!(procs.contains_key(&(5_000_000, 1)));
            assert!(!procs.contains_key(&(5_000_001, 1)));
        }
        // Now every entry is referenced: the oldest go.
        let more: Vec<Arc<ProcessInfo>> = {
            let mut procs = cache.procs.write();
            (0..MAX_ENTRIES as u32 / 2)
                .map(|i| {
                    let info = Arc::new(ProcessInfo::default());
                    procs.insert(
                        (6_000_000 + i, 1),
                        ProcEntry {
                            info: info.clone(),
                            image: None,
                            at: Instant::now(),
                        },
                    );
                    info
                })
                .collect()
        };
        let key = (mine.pid, mine.starttime);
        cache.procs.write().remove(&key);
        cache.tids.write().remove(&me);
        assert!(cache.procs.read().len() >= MAX_ENTRIES);
        assert!(cache.caller(me, 0, 0).process.is_some());
        let procs = cache.procs.read();
        assert!(procs.len() <= LOW_WATER + 1, "{}", procs.len());
        assert!(procs.contains_key(&key));
        assert!(
            !procs.contains_key(&(5_000_000, 1)),
            "the oldest is evicted"
        );
        drop((held, more));
    }

    #[test]
    fn exec_marks_expire_and_stay_bounded() {
        let cache = IdentityCache::with_revalidate(Duration::ZERO);
        let me = std::process::id();
        cache.caller(me, 0, 0);
        {
            let mut m = cache.marks.lock();
            for i in 0..MAX_ENTRIES as u32 {
                m.insert(5_000_000 + i, Instant::now());
            }
            cache.marks_len.store(m.len(), Ordering::Release);
        }
        cache.note_exec(me);
        assert!(marks(&cache) <= LOW_WATER + 1);
        assert!(cache.marks.lock().contains_key(&me));
        // Old marks expire at the next revalidation.
        {
            let mut m = cache.marks.lock();
            m.clear();
            m.insert(
                4_999_999,
                Instant::now() - EXEC_MARK_TTL - Duration::from_secs(1),
            );
            cache.marks_len.store(m.len(), Ordering::Release);
        }
        cache.caller(me, 0, 0);
        assert_eq!(marks(&cache), 0);
    }

    #[test]
    fn evict_oldest_always_bounds() {
        let now = Instant::now();
        let mut m: HashMap<u32, Instant> = (0..100).map(|i| (i, now)).collect();
        evict_oldest(&mut m, 10, |v| *v);
        assert!(m.len() <= 10, "ties are dropped too");
        let mut m: HashMap<u32, Instant> = (0..100)
            .map(|i| (i, now - Duration::from_millis(100 - u64::from(i))))
            .collect();
        evict_oldest(&mut m, 10, |v| *v);
        assert_eq!(m.len(), 10);
        assert!((90..100).all(|i| m.contains_key(&i)));
    }

    #[test]
    fn fill_copies_identity() {
        let cache = IdentityCache::new();
        let c = cache.caller(std::process::id(), 5, 6);
        let mut r = Record::default();
        c.fill(&mut r);
        assert_eq!(r.pid, Some(std::process::id()));
        assert_eq!((r.uid, r.gid), (Some(5), Some(6)));
        assert!(r.comm.is_some() && r.starttime.is_some());
    }
}
