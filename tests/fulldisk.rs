//! A full state disk: the journal's state dir on a 2 MiB tmpfs, a write storm through
//! the mount. Daemon memory stays bounded, `seq` never repeats across a `kill -9` and a
//! restart, the journal resumes by itself with a `gap` record once space returns, and
//! `sessionfs umount` exits non-zero saying how many records were lost.

mod common;

use std::collections::HashSet;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Mount, wait_for};
use serde_json::Value;

/// A tmpfs mounted at a directory (mode 0700, as a state dir must be), unmounted
/// (lazily) on drop, even on panic.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn new(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0700"))
            .arg("tmpfs")
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs at {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }

    /// Give the tmpfs `size` (space returns).
    fn resize(&self, size: &str) {
        let st = Command::new("mount")
            .arg("-o")
            .arg(format!("remount,size={size}"))
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success(), "remount tmpfs");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `sessionfs mount --source src --state-dir state [extra] mnt`, with a guard.
fn mount(tmp: &Path, state: &Path, extra: &[&str]) -> Mount {
    let (src, mnt) = (tmp.join("src"), tmp.join("mnt"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    common::mount_at(&src, &mnt, state, extra);
    Mount::adopt(&mnt, &src, state)
}

/// Every whole record in the segment files on disk, in file order.
fn on_disk(state: &Path) -> Vec<Value> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(state.join("segments"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    segs.sort();
    let mut out = Vec::new();
    for s in segs {
        let data = std::fs::read(&s).unwrap_or_default();
        // A write cut short by ENOSPC leaves part of a record: the writer continues
        // it from there once space returns.
        for l in data.split_inclusive(|b| *b == b'\n') {
            if l.ends_with(b"\n") {
                out.push(serde_json::from_slice(l).unwrap());
            }
        }
    }
    out
}

/// `VmHWM` (peak resident set) of `pid`, bytes.
fn vm_hwm(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let l = s.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Seqs of `recs`; panics on a repeated seq or one that goes backwards.
fn strictly_increasing(recs: &[Value]) -> Vec<u64> {
    let seqs: Vec<u64> = recs.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    for w in seqs.windows(2) {
        assert!(w[0] < w[1], "seq {} then {}", w[0], w[1]);
    }
    seqs
}

/// What a storm did: lines written, the slowest `write(2)`.
struct Storm {
    lines: u64,
    slowest: Duration,
}

/// `threads` writers append 150-byte transcript lines (`O_APPEND`, one `write` each)
/// to their own `*.jsonl` on the mount until `lines` are written in all. Every write
/// must succeed: the transcripts never wait on the journal's disk.
fn storm(mnt: &Path, tag: &str, threads: usize, lines: u64) -> Storm {
    let done = Arc::new(AtomicU64::new(0));
    let slowest = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let p = mnt.join(format!("{tag}-{t}.jsonl"));
            let (done, slowest, stop) = (done.clone(), slowest.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(&p)
                    .unwrap();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let line = format!(
                        "{{\"type\":\"message\",\"id\":\"{t:02}{i:014}\",\"parentId\":null,\"message\":{{\"role\":\"user\",\"content\":\"{:060}\"}}}}\n",
                        i
                    );
                    let t0 = Instant::now();
                    f.write_all(line.as_bytes()).unwrap();
                    slowest.fetch_max(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
                    i += 1;
                    if done.fetch_add(1, Ordering::Relaxed) + 1 >= lines {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
                i
            })
        })
        .collect();
    let written: u64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
    Storm {
        lines: written,
        slowest: Duration::from_micros(slowest.load(Ordering::Relaxed)),
    }
}

/// Lines in the backing files of `tag`'s storm (all must be whole).
fn backing_lines(src: &Path, tag: &str) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(src).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{tag}-")) {
            let data = std::fs::read(e.path()).unwrap();
            assert!(data.is_empty() || data.ends_with(b"\n"), "{name} torn");
            n += data.iter().filter(|b| **b == b'\n').count() as u64;
        }
    }
    n
}

/// Kill the daemon of `m` with SIGKILL and detach its dead mount.
fn kill_9(m: &Mount) {
    let pid = common::daemon_pid(&m.mnt).expect("daemon pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(wait_for(10, || !Path::new(&format!("/proc/{pid}"))
        .exists()
        || std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.contains(") Z"))));
    // The stale mount: detached lazily.
    common::run_ok(Command::new(common::bin()).arg("umount").arg(&m.mnt));
    assert!(!common::is_mounted(&m.mnt));
}

/// With the default 64 MiB bound: a storm far past what memory may hold while the
/// state dir is full; peak daemon RSS stays bounded, and after `kill -9` and a restart
/// (space back), `seq` continues above every seq readers saw.
#[test]
fn seq_and_memory_stay_bounded_on_a_full_state_dir_across_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let disk = Tmpfs::new(&state, "2m");
    let mut m = mount(tmp.path(), &state, &[]);
    let pid = common::daemon_pid(&m.mnt).unwrap();
    let base = vm_hwm(pid);
    // ~900 B per record: 150,000 lines are ~135 MB of journal, far more than the
    // 2 MiB disk and the 64 MiB memory bound, and below the 256 MiB size bound (whose
    // retention would free disk space). The daemon hands out at most the 65,536 seqs
    // reserved on disk before the disk filled, then drops records into a gap.
    let t = Instant::now();
    let s = storm(&m.mnt, "a", 4, 150_000);
    let took = t.elapsed();
    let peak = vm_hwm(pid);
    let shown = common::read_jsonl(&m.mnt.join(".journal"));
    let seen = strictly_increasing(&shown).last().copied().unwrap();
    let disk_recs = on_disk(&state);
    eprintln!(
        "storm: {} lines in {took:?}, slowest write {:?}; daemon VmHWM {} MiB (at start {} MiB); journal shows {} records, max seq {seen}; {} on disk",
        s.lines,
        s.slowest,
        peak >> 20,
        base >> 20,
        shown.len(),
        disk_recs.len()
    );
    assert_eq!(backing_lines(&m.src, "a"), s.lines, "transcript lines lost");
    assert!(
        peak < base + (64 << 20) + (24 << 20),
        "daemon peak RSS {} MiB (start {} MiB)",
        peak >> 20,
        base >> 20
    );
    kill_9(&m);
    disk.resize("512m");
    common::mount_at(&m.src, &m.mnt, &state, &[]);
    let restarted = common::daemon_pid(&m.mnt).unwrap();
    assert_ne!(restarted, pid);
    storm(&m.mnt, "b", 1, 100);
    assert!(common::run_ok(Command::new(common::bin()).arg("umount").arg(&m.mnt)).is_empty());
    let all = on_disk(&state);
    let seqs = strictly_increasing(&all);
    let after: Vec<u64> = all
        .iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.starts_with("b-")))
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert!(!after.is_empty());
    let first_after = after[0];
    eprintln!(
        "after restart: first seq {first_after}, max seq before the kill {seen}; {} records on disk, all seqs distinct: {}",
        all.len(),
        seqs.iter().collect::<HashSet<_>>().len() == seqs.len()
    );
    assert!(
        first_after > seen,
        "seq {first_after} handed out again after the restart (readers saw up to {seen})"
    );
    m.unmount();
}

/// With `-o journal_max_pending=4MiB`: the storm fills the disk and the bound, space
/// returns (the tmpfs grows) and the writer writes the backlog and a `gap` record by
/// itself (no new request); the disk fills again (a filler file) and a clean
/// `sessionfs umount` exits 1 with the count of records lost; a restart on the full
/// disk mounts, and deleting the filler brings the journal back without a repeated seq.
#[test]
fn gap_record_when_space_returns_and_umount_reports_the_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let disk = Tmpfs::new(&state, "2m");
    let mut m = mount(tmp.path(), &state, &["-o", "journal_max_pending=4MiB"]);
    let pid = common::daemon_pid(&m.mnt).unwrap();
    let base = vm_hwm(pid);
    let s = storm(&m.mnt, "a", 4, 60_000);
    let peak = vm_hwm(pid);
    let shown = common::read_jsonl(&m.mnt.join(".journal"));
    let seen = strictly_increasing(&shown).last().copied().unwrap();
    eprintln!(
        "storm: {} lines, slowest write {:?}; VmHWM {} MiB (start {} MiB); {} records shown, max seq {seen}",
        s.lines,
        s.slowest,
        peak >> 20,
        base >> 20,
        shown.len()
    );
    assert_eq!(backing_lines(&m.src, "a"), s.lines);
    assert!(
        peak < base + (4 << 20) + (16 << 20),
        "peak RSS {} MiB (start {} MiB)",
        peak >> 20,
        base >> 20
    );
    assert!(
        (shown.len() as u64) < s.lines,
        "the storm should have overrun the 4 MiB bound"
    );
    // Space returns; nothing else happens on the mount.
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    disk.resize("512m");
    let gap = loop {
        if let Some(g) = on_disk(&state).into_iter().find(|r| r["op"] == "gap") {
            break g;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no gap record");
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = t.elapsed();
    let all = on_disk(&state);
    strictly_increasing(&all);
    let lost = gap["gap"]["lost"].as_u64().unwrap();
    eprintln!(
        "space back: gap record on disk after {took:?}: {gap}; {} records on disk",
        all.len()
    );
    assert!(took < Duration::from_secs(3), "gap record after {took:?}");
    assert_eq!(gap["gap"]["reason"], "pending_bound");
    assert_eq!(gap["result"], "ENOSPC");
    assert_eq!(gap["gap"]["after_seq"], seen);
    assert_eq!(gap["seq"], seen + 1);
    // Every record is either on disk or counted in the gap.
    let writes = all
        .iter()
        .filter(|r| r["op"] == "write" && r["path"].as_str().unwrap().starts_with("a-"))
        .count() as u64;
    assert!(writes + lost >= s.lines, "{writes} + {lost} < {}", s.lines);
    assert!(lost > 0);

    // The disk fills again: a filler file takes what is left.
    let mut filler = std::fs::File::create(state.join("filler")).unwrap();
    let chunk = vec![0u8; 1 << 20];
    while filler.write_all(&chunk).is_ok() {}
    while filler.write_all(&chunk[..4096]).is_ok() {}
    drop(filler);
    let on_disk_before = on_disk(&state).len();
    let s2 = storm(&m.mnt, "c", 2, 20_000);
    std::thread::sleep(Duration::from_millis(300));
    let shown = common::read_jsonl(&m.mnt.join(".journal"));
    let last_shown = strictly_increasing(&shown).last().copied().unwrap();
    let out = Command::new(common::bin())
        .arg("umount")
        .arg(&m.mnt)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("umount: {:?} {stderr}", out.status.code());
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!common::is_mounted(&m.mnt));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let disk_now = on_disk(&state);
    let last_on_disk = disk_now.last().unwrap()["seq"].as_u64().unwrap();
    let unwritten = last_shown - last_on_disk;
    assert!(unwritten > 0, "the umount wrote everything?");
    assert!(
        stderr.contains(&format!(
            "{unwritten} accepted records (seq {}-{last_shown})",
            last_on_disk + 1
        )),
        "{stderr}"
    );
    assert!(stderr.contains("dropped records"), "{stderr}");
    assert!(stderr.contains("ENOSPC"), "{stderr}");
    let total: u64 = stderr
        .split("the journal lost ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    eprintln!(
        "second fill: {} lines; {} records on disk before, {} after; umount reports {total} lost",
        s2.lines,
        on_disk_before,
        disk_now.len()
    );
    assert!(total > unwritten);
    // No loss file is left behind for a later umount.
    let id = sessionfs::mount_id(&std::fs::canonicalize(&m.mnt).unwrap());
    assert!(
        !sessionfs::pid_file(&id)
            .with_file_name(format!("{id}.lost"))
            .exists()
    );

    // A restart on the still full disk mounts (the journal drops what it cannot
    // reserve or keep), and deleting the filler brings the journal back by itself.
    common::mount_at(&m.src, &m.mnt, &state, &["-o", "journal_max_pending=4MiB"]);
    let s3 = storm(&m.mnt, "d", 1, 200);
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    std::fs::remove_file(state.join("filler")).unwrap();
    let is_d = |r: &Value| r["path"].as_str().is_some_and(|p| p.starts_with("d-"));
    let in_gap = |r: &Value| {
        r["op"] == "gap"
            && r["gap"]["paths"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p.as_str().unwrap().starts_with("d-"))
    };
    let settled = |all: &[Value]| {
        let writes = all.iter().filter(|r| r["op"] == "write" && is_d(r)).count() as u64;
        let lost: u64 = all
            .iter()
            .filter(|r| in_gap(r))
            .map(|r| r["gap"]["lost"].as_u64().unwrap())
            .sum();
        writes + lost >= s3.lines
    };
    assert!(
        wait_for(10, || settled(&on_disk(&state))),
        "journal did not resume"
    );
    let took = t.elapsed();
    let all = on_disk(&state);
    strictly_increasing(&all);
    let first_d = all.iter().find(|r| is_d(r) || in_gap(r)).unwrap();
    eprintln!(
        "restart on the full disk: filler deleted, journal settled after {took:?}; first record after the restart: {first_d}"
    );
    assert!(
        first_d["seq"].as_u64().unwrap() > last_shown,
        "seq repeated after the lossy shutdown (shown up to {last_shown})"
    );
    assert!(common::run_ok(Command::new(common::bin()).arg("umount").arg(&m.mnt)).is_empty());
    m.unmount();
}
