//! Who made a change: the caller's identity read from `/proc`, cached per thread id
//! and per (pid, starttime).
//!
//! FUSE reports the caller's **thread** id. `/proc/<tid>/status` answers for a tid even
//! though tids are not listed in `/proc`; its `Tgid:` is the process.
//!
//! Cache design (cold /proc reads cost 20–60 µs; a hit must stay under 5 µs):
//! - `tid → TidEntry { process, thread_start, checked }`: a hit is one read-locked hash
//!   lookup plus an `Arc` clone; no /proc access.
//! - An entry older than [`REVALIDATE`] is re-checked by reading `/proc/<tid>/stat`
//!   once: if the thread's own start time changed, the tid was reused and the entry is
//!   rebuilt. The error window: a tid reused within [`REVALIDATE`] of its last check is
//!   attributed to the previous owner. Linux hands out pids cyclically (pid_max,
//!   4,194,304 here), so that needs ~4 M process creations within 2 s.
//! - `(pid, starttime) → Arc<ProcessInfo>` shares one identity between the threads of
//!   a process, and starttime guards against pid reuse.
//! - `note_exec(tid)` (an OPEN with `__FMODE_EXEC`) marks the process for a refresh:
//!   comm/exe/cmdline read during an execve show the old image, so the process's next
//!   request (which runs in the new image) re-reads them once.
//! - Both maps are bounded ([`MAX_ENTRIES`]); when full, entries of dead threads are
//!   dropped, then the oldest half.

use std::collections::HashMap;
use std::fs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use crate::journal::record::{Ancestor, Record};

/// How long a tid entry is trusted before its thread start time is re-checked.
pub const REVALIDATE: Duration = Duration::from_secs(2);
/// Bound on cached tids and processes each.
pub const MAX_ENTRIES: usize = 16_384;
/// Ancestors recorded (nearest first).
pub const ANCESTRY_DEPTH: usize = 3;
/// Replacement for redacted command-line values.
pub const REDACTED: &str = "<redacted>";

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
    /// Field 22 of `/proc/<pid>/stat` (clock ticks after boot).
    pub starttime: u64,
    /// Inode of `/proc/<pid>/ns/pid`.
    pub pidns: Option<u64>,
    /// cgroup v2 path (`0::<path>` line of `/proc/<pid>/cgroup`).
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

#[derive(Debug, Clone)]
struct TidEntry {
    process: Arc<ProcessInfo>,
    /// The thread's own start time (field 22 of `/proc/<tid>/stat`).
    thread_start: u64,
    checked: Instant,
}

/// Cache of caller identities. `&self` methods, internally synchronised.
#[derive(Debug, Default)]
pub struct IdentityCache {
    tids: RwLock<HashMap<u32, TidEntry>>,
    procs: RwLock<HashMap<(u32, u64), Arc<ProcessInfo>>>,
    /// pids whose comm/exe/cmdline must be re-read at their next request.
    exec_pending: RwLock<Vec<u32>>,
}

impl IdentityCache {
    /// Empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Identity of the thread `tid`. A cache hit reads no /proc file (< 1 µs measured,
    /// see `benches/identity.rs`); a miss costs one pass over a few /proc files.
    pub fn caller(&self, tid: u32, uid: u32, gid: u32) -> Caller {
        let hit = self.tids.read().get(&tid).cloned();
        let pending = !self.exec_pending.read().is_empty();
        let process = match hit {
            Some(e)
                if e.checked.elapsed() < REVALIDATE
                    && !(pending && self.exec_pending.read().contains(&e.process.pid)) =>
            {
                Some(e.process)
            }
            Some(e) => self.revalidate(tid, e),
            None => self.resolve(tid),
        };
        Caller {
            tid,
            uid,
            gid,
            process,
        }
    }

    /// `tid` opened a file for execve (`__FMODE_EXEC`): its process's comm/exe/cmdline
    /// are re-read at its next request.
    pub fn note_exec(&self, tid: u32) {
        let pid = self
            .tids
            .read()
            .get(&tid)
            .map(|e| e.process.pid)
            .or_else(|| read_status(tid).map(|s| s.tgid));
        if let Some(pid) = pid {
            let mut p = self.exec_pending.write();
            if !p.contains(&pid) {
                p.push(pid);
            }
        }
    }

    /// Remove `pid` from the exec-pending list; true if it was there.
    fn take_exec(&self, pid: u32) -> bool {
        let mut p = self.exec_pending.write();
        match p.iter().position(|x| *x == pid) {
            Some(i) => {
                p.swap_remove(i);
                true
            }
            None => false,
        }
    }

    fn revalidate(&self, tid: u32, e: TidEntry) -> Option<Arc<ProcessInfo>> {
        let exec = self.take_exec(e.process.pid);
        match read_stat(tid) {
            Some(st) if st.starttime == e.thread_start && !exec => {
                if let Some(t) = self.tids.write().get_mut(&tid) {
                    t.checked = Instant::now();
                }
                Some(e.process)
            }
            Some(_) => {
                if exec {
                    self.procs
                        .write()
                        .remove(&(e.process.pid, e.process.starttime));
                }
                self.resolve(tid)
            }
            None => {
                self.tids.write().remove(&tid);
                // The thread is gone; the process identity we had is still the best answer.
                Some(e.process)
            }
        }
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
        let cached = self.procs.read().get(&key).cloned();
        let process = match cached {
            Some(p) => p,
            None => {
                let info = Arc::new(read_process(pid, &pstat));
                let mut procs = self.procs.write();
                if procs.len() >= MAX_ENTRIES {
                    procs.retain(|(p, _), _| std::path::Path::new(&format!("/proc/{p}")).exists());
                    if procs.len() >= MAX_ENTRIES {
                        procs.clear();
                    }
                }
                procs.entry(key).or_insert(info).clone()
            }
        };
        let mut tids = self.tids.write();
        if tids.len() >= MAX_ENTRIES {
            let cutoff = Instant::now() - REVALIDATE;
            tids.retain(|_, e| e.checked > cutoff);
        }
        tids.insert(
            tid,
            TidEntry {
                process: process.clone(),
                thread_start: thread.starttime,
                checked: Instant::now(),
            },
        );
        Some(process)
    }
}

impl Caller {
    /// Copy identity fields (pid, tid, ppid, uid, gid, comm, exe, cmdline, starttime,
    /// pidns, cgroup, ancestry) into `rec`.
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

/// The fields we use from `/proc/<id>/stat`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Field 2 without the parentheses.
    pub comm: String,
    /// Field 4.
    pub ppid: u32,
    /// Field 22, clock ticks after boot.
    pub starttime: u64,
}

/// Parse `/proc/<id>/stat`. comm (field 2) may contain spaces and parentheses, so the
/// remaining fields are split after the **last** `)`.
pub fn parse_stat(s: &str) -> Option<Stat> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = s.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state): field N is rest[N - 3].
    Some(Stat {
        comm,
        ppid: rest.get(1)?.parse().ok()?,
        starttime: rest.get(19)?.parse().ok()?,
    })
}

fn read_stat(id: u32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{id}/stat")).ok()?)
}

struct Status {
    tgid: u32,
}

fn read_status(tid: u32) -> Option<Status> {
    let s = fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    let tgid = s
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))?
        .trim()
        .parse()
        .ok()?;
    Some(Status { tgid })
}

fn read_process(pid: u32, st: &Stat) -> ProcessInfo {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim_end_matches('\n').to_string())
        .unwrap_or_else(|_| st.comm.clone());
    let exe = fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            let args: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            redact(&args)
        })
        .unwrap_or_default();
    let pidns = fs::read_link(format!("/proc/{pid}/ns/pid"))
        .ok()
        .and_then(|l| {
            l.to_str()?
                .strip_prefix("pid:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        });
    let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
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

/// Flags whose next argument (or `=value`) is a secret.
const SECRET_FLAGS: &[&str] = &[
    "--token",
    "--api-key",
    "--apikey",
    "--password",
    "--secret",
    "--key",
    "--auth",
];
/// Words that make a `name=value` argument a secret when `name` contains them.
const SECRET_WORDS: &[&str] = &["key", "token", "secret", "password", "passwd", "auth"];

fn is_secret_flag(flag: &str) -> bool {
    let f = flag.to_ascii_lowercase();
    SECRET_FLAGS.contains(&f.as_str())
        || (f.starts_with("--") && SECRET_WORDS.iter().any(|w| f.ends_with(w)))
}

/// argv[0] plus at most two more arguments, with secrets replaced by `<redacted>`:
/// the value after `--token`, `--api-key`, `--password`, `--secret` (and any `--*key`,
/// `--*token`...), `--flag=value` forms of those, `sk-…` values, and `name=value`
/// where `name` contains key/token/secret/password.
pub fn redact(args: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(3);
    let mut secret_next = false;
    for a in args {
        if out.len() == 3 {
            break;
        }
        if secret_next {
            out.push(REDACTED.into());
            secret_next = false;
            continue;
        }
        if a.starts_with("sk-") {
            out.push(REDACTED.into());
            continue;
        }
        if let Some((name, _)) = a.split_once('=') {
            let lower = name.to_ascii_lowercase();
            if is_secret_flag(name)
                || SECRET_WORDS
                    .iter()
                    .any(|w| lower.trim_start_matches('-').contains(w))
            {
                out.push(format!("{name}={REDACTED}"));
                continue;
            }
        }
        if is_secret_flag(a) {
            secret_next = true;
        }
        out.push(a.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_stat_with_hostile_comm() {
        let line = "1234 (a) b (c)) S 77 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200";
        let st = parse_stat(line).unwrap();
        assert_eq!(st.comm, "a) b (c)");
        assert_eq!(st.ppid, 77);
        assert_eq!(st.starttime, 987654);
        assert!(parse_stat("garbage").is_none());
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
        let tid = std::thread::spawn(|| nix::unistd::gettid().as_raw() as u32)
            .join()
            .unwrap();
        let _ = tid; // exited: resolve a live one instead
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
        for _ in 0..200 {
            let c = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let args = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if c.trim() == comm && !args.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("{pid} never became {comm}");
    }

    #[test]
    fn refreshes_comm_after_exec() {
        use std::io::Write;
        let cache = IdentityCache::new();
        let mut child = std::process::Command::new("sh")
            .args(["-c", "read x; exec sleep 5"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        wait_exec(pid, "sh");
        assert_eq!(cache.caller(pid, 0, 0).process.unwrap().comm, "sh");
        cache.note_exec(pid);
        child.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let p = cache.caller(pid, 0, 0).process.unwrap();
        assert_eq!(p.comm, "sleep", "comm refreshed after the exec");
        assert_eq!(p.cmdline, vec!["sleep".to_string(), "5".to_string()]);
        // Without note_exec the cached identity is kept (no /proc read on a hit).
        child.kill().unwrap();
        child.wait().unwrap();
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
