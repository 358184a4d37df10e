//! Session locks on a real mount: the true holder, dead holders reaped at once, live
//! holders never reaped (a steal is journaled instead), holders in another pid
//! namespace, and reaping racing a new holder's re-creation of the same name.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Mount, read_jsonl};
use serde_json::Value;

/// A holder the way OpenClaw takes `<file>.lock`: O_CREAT|O_EXCL|O_WRONLY, the JSON
/// payload (`pid` as the process sees its own pid), the fd kept open. Prints `ready`
/// once the payload is written. argv: lock path, maxHoldMs, mode (`hold`, or `retry`:
/// retry the create on EEXIST, then check for 300 ms that the name still leads to its
/// own file and print `kept` or `lost`, then release: unlink and exit).
const HOLDER: &str = r#"
import json, os, sys, time
path, max_hold, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
while True:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        break
    except FileExistsError:
        if mode != "retry":
            raise
        time.sleep(0.001)
start = int(open(f"/proc/{os.getpid()}/stat").read().rsplit(")", 1)[1].split()[19])
body = json.dumps({"pid": os.getpid(), "createdAt": "2026-12-06T00:00:00.000Z",
                   "maxHoldMs": max_hold, "starttime": start}, indent=2) + "\n"
os.write(fd, body.encode())
print("ready", flush=True)
if mode == "retry":
    mine = os.fstat(fd).st_ino
    t = time.time()
    ok = True
    while time.time() - t < 0.3:
        try:
            ok = ok and os.stat(path).st_ino == mine
        except FileNotFoundError:
            ok = False
        time.sleep(0.005)
    print("kept" if ok else "lost", flush=True)
    os.unlink(path)
    sys.exit(0)
time.sleep(3600)
"#;

/// Start a holder (optionally through `prefix`, e.g. `unshare …`); returns once it
/// printed `ready`, with its stdout for further lines.
fn holder(
    prefix: &[&str],
    lock: &Path,
    max_hold: u64,
    mode: &str,
) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut argv: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
    argv.extend(["python3", "-c", HOLDER].map(String::from));
    argv.push(lock.to_str().unwrap().into());
    argv.push(max_hold.to_string());
    argv.push(mode.into());
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    if mode == "hold" {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "holder did not start");
    }
    (child, out)
}

fn kill9(pid: u32) {
    // SAFETY: plain kill(2) on a pid we started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

fn records(m: &Mount) -> Vec<Value> {
    read_jsonl(&m.mnt.join(".journal"))
}

fn lock_records<'a>(recs: &'a [Value], op: &str) -> Vec<&'a Value> {
    recs.iter().filter(|r| r["op"] == op).collect()
}

/// `sessionfs locks --json MOUNTPOINT`, parsed.
fn locks_json(m: &Mount) -> Vec<Value> {
    let out = common::run_ok(
        Command::new(common::bin())
            .arg("locks")
            .arg("--json")
            .arg(&m.mnt),
    );
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn dead_holder_is_reaped_within_two_seconds() {
    let m = Mount::new(&[]);
    std::fs::write(m.mnt.join("s.jsonl"), b"{\"type\":\"session\"}\n").unwrap();
    let lock = m.mnt.join("s.jsonl.lock");
    let (mut child, _out) = holder(&[], &lock, 300_000, "hold");
    let pid = child.id();
    let listed = locks_json(&m);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["holder"]["pid"], pid);
    assert_eq!(listed[0]["guards"], "s.jsonl");
    assert_eq!(listed[0]["holder_alive"], true);
    assert_eq!(listed[0]["payload"]["pid"], pid, "payload parsed");
    kill9(pid);
    let t = Instant::now();
    let gone = common::wait_for(2, || !lock.exists());
    let took = t.elapsed();
    child.wait().unwrap();
    assert!(gone, "the dead holder's lock is still there after 2 s");
    eprintln!("reaped {took:?} after SIGKILL");
    let recs = records(&m);
    let acq = lock_records(&recs, "lock-acquire");
    assert_eq!(acq.len(), 1);
    assert_eq!(acq[0]["pid"], pid, "lock-acquire names the creator");
    assert_eq!(acq[0]["lock"]["holder"]["pid"], pid);
    let reap = lock_records(&recs, "lock-reap");
    assert_eq!(reap.len(), 1, "{recs:#?}");
    assert_eq!(reap[0]["lock"]["holder"]["pid"], pid);
    assert_eq!(reap[0]["lock"]["holder_alive"], false);
    assert_eq!(reap[0]["lock"]["guards"], "s.jsonl");
    assert_eq!(reap[0]["lock"]["max_hold_ms"], 300_000);
    assert!(
        reap[0]["lock"]["reason"]
            .as_str()
            .unwrap()
            .contains(&pid.to_string())
    );
    assert_eq!(reap[0]["comm"], "sessionfs");
    // The name is free again for the next holder, through the kernel's cache too.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&lock)
        .expect("O_EXCL create after the reap");
    std::fs::remove_file(&lock).unwrap();
}

#[test]
fn live_holder_past_max_hold_is_never_reaped_and_an_unlink_is_a_steal() {
    let m = Mount::new(&[]);
    let lock = m.mnt.join("t.jsonl.lock");
    let (mut child, _out) = holder(&[], &lock, 100, "hold");
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(2500)); // 25× maxHoldMs, 2 sweeps
    assert!(lock.exists(), "a live holder's lock was reaped");
    let listed = locks_json(&m);
    assert_eq!(listed[0]["holder_alive"], true);
    assert_eq!(
        listed[0]["stale_now"], true,
        "the gateway would call it stale"
    );
    assert_eq!(listed[0]["max_hold_ms"], 100);
    // Someone else takes it away while the holder lives.
    std::fs::remove_file(&lock).unwrap();
    kill9(pid);
    child.wait().unwrap();
    let recs = records(&m);
    let steal = lock_records(&recs, "lock-steal");
    assert_eq!(steal.len(), 1, "{recs:#?}");
    assert_eq!(steal[0]["pid"], std::process::id(), "the stealer");
    assert_eq!(steal[0]["lock"]["holder"]["pid"], pid, "the holder");
    assert_eq!(steal[0]["lock"]["holder_alive"], true);
    assert!(steal[0]["lock"]["age_ms"].as_u64().unwrap() >= 2000);
    assert_eq!(steal[0]["lock"]["max_hold_ms"], 100);
    assert!(lock_records(&recs, "lock-reap").is_empty());
    // A holder that releases its own lock: lock-release.
    let lock2 = m.mnt.join("u.jsonl.lock");
    let (mut c2, mut out2) = holder(&[], &lock2, 1000, "retry");
    let mut l = String::new();
    out2.read_line(&mut l).unwrap(); // ready
    l.clear();
    out2.read_line(&mut l).unwrap();
    assert_eq!(l.trim(), "kept");
    c2.wait().unwrap();
    let recs = records(&m);
    let rel = lock_records(&recs, "lock-release");
    assert_eq!(rel.len(), 1, "{recs:#?}");
    assert_eq!(rel[0]["pid"], c2.id());
    assert_eq!(rel[0]["lock"]["holder_alive"], true);
}

#[test]
fn holder_in_another_pid_namespace() {
    if Command::new("unshare").arg("--version").output().is_err() {
        panic!("unshare (util-linux) is required");
    }
    let m = Mount::new(&[]);
    let lock = m.mnt.join("c.jsonl.lock");
    let (mut child, _out) = holder(
        &["unshare", "--pid", "--fork", "--mount-proc"],
        &lock,
        300_000,
        "hold",
    );
    let listed = locks_json(&m);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let host_pid = listed[0]["holder"]["pid"].as_u64().unwrap();
    assert_eq!(listed[0]["payload_pid"], 1, "pid 1 in its own namespace");
    assert_ne!(host_pid, 1);
    assert_eq!(
        listed[0]["holder"]["nspid"],
        serde_json::json!([host_pid, 1])
    );
    assert!(
        listed[0]
            .get("payload_pid_mismatch")
            .is_none_or(|v| v == false)
    );
    // The table shows both pids.
    let table = common::run_ok(Command::new(common::bin()).arg("locks").arg(&m.mnt));
    assert!(
        table.contains(&host_pid.to_string()) && table.contains("c.jsonl.lock"),
        "{table}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(lock.exists(), "reaped while the holder lives");
    kill9(host_pid as u32);
    assert!(
        common::wait_for(2, || !lock.exists()),
        "not reaped after the kill"
    );
    let _ = child.kill();
    child.wait().unwrap();
    let recs = records(&m);
    assert_eq!(lock_records(&recs, "lock-reap").len(), 1);
}

#[test]
fn reaping_never_unlinks_a_new_holders_lock() {
    let m = Mount::new(&[]);
    let lock = m.mnt.join("r.jsonl.lock");
    let rounds = 25;
    for round in 0..rounds {
        let (mut a, _ao) = holder(&[], &lock, 300_000, "hold");
        // B waits on EEXIST and takes the name as soon as it is free.
        let (mut b, mut bo) = holder(&[], &lock, 300_000, "retry");
        std::thread::sleep(Duration::from_millis(round % 5 * 3));
        kill9(a.id());
        a.wait().unwrap();
        let mut line = String::new();
        bo.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "round {round}: B never got the lock");
        line.clear();
        bo.read_line(&mut line).unwrap();
        assert_eq!(
            line.trim(),
            "kept",
            "round {round}: B's lock was unlinked under it"
        );
        assert!(b.wait().unwrap().success());
    }
    let recs = records(&m);
    assert_eq!(lock_records(&recs, "lock-reap").len(), rounds as usize);
    assert_eq!(lock_records(&recs, "lock-release").len(), rounds as usize);
    assert!(lock_records(&recs, "lock-steal").is_empty());
}

#[test]
fn no_reap_leaves_a_dead_holders_lock() {
    let m = Mount::new(&["--no-reap"]);
    let lock = m.mnt.join("n.jsonl.lock");
    let (mut child, _out) = holder(&[], &lock, 300_000, "hold");
    kill9(child.id());
    child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(lock.exists(), "--no-reap reaped");
    let listed = locks_json(&m);
    assert_eq!(listed[0]["holder_alive"], false);
    assert_eq!(listed[0]["stale_now"], true);
    assert!(lock_records(&records(&m), "lock-reap").is_empty());
}

/// The FUSE connection number of the mount at `mnt` (the minor of its st_dev), and a
/// way to abort it if the test finds the mount hung (so a regression fails the test
/// instead of hanging CI).
fn abort_handle(mnt: &Path) -> impl Fn() {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(mnt).unwrap().dev();
    let minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
    move || {
        let dir = Path::new("/sys/fs/fuse/connections");
        if !dir.join(minor.to_string()).exists() {
            let _ = Command::new("mount")
                .args(["-t", "fusectl", "none"])
                .arg(dir)
                .status();
        }
        let _ = std::fs::write(dir.join(minor.to_string()).join("abort"), b"1");
    }
}

/// Reaping while other processes create other lock names in the same directory: the
/// reaper once held its gate while the kernel notification waited for the directory
/// lock that such a CREATE held while it waited for the gate (a permanent deadlock,
/// found in review at round 0).
#[test]
fn reaping_while_other_locks_are_created_in_the_directory() {
    let m = Mount::new(&[]);
    let abort = abort_handle(&m.mnt);
    let lock = m.mnt.join("a.jsonl.lock");
    let churn = r#"
import os, sys, time
d, end = sys.argv[1], time.time() + float(sys.argv[2])
i = 0
while time.time() < end:
    p = os.path.join(d, f"b{i % 4}.jsonl.lock")
    try:
        fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.close(fd)
        os.unlink(p)
    except (FileExistsError, FileNotFoundError):
        pass
    i += 1
"#;
    let churners: Vec<Child> = (0..2)
        .map(|_| {
            Command::new("python3")
                .args(["-c", churn])
                .arg(&m.mnt)
                .arg("8")
                .spawn()
                .unwrap()
        })
        .collect();
    let (tx, rx) = std::sync::mpsc::channel();
    let lock2 = lock.clone();
    let rounds = std::thread::spawn(move || {
        let mut n = 0;
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(6) {
            let (mut h, _o) = holder(&[], &lock2, 300_000, "hold");
            kill9(h.id());
            h.wait().unwrap();
            if !common::wait_for(3, || !lock2.exists()) {
                break;
            }
            n += 1;
        }
        let _ = tx.send(n);
    });
    let n = match rx.recv_timeout(Duration::from_secs(40)) {
        Ok(n) => n,
        Err(_) => {
            abort();
            panic!("the mount hung: reaping deadlocked with lock creates");
        }
    };
    rounds.join().unwrap();
    for mut c in churners {
        c.wait().unwrap();
    }
    assert!(n >= 5, "only {n} reap rounds in 6 s");
    assert_eq!(lock_records(&records(&m), "lock-reap").len(), n);
}

/// A holder that forks and exits while its child keeps the lock's fd: the lock is
/// held through that fd, so it is not reaped until the child closes it.
#[test]
fn no_reap_while_an_inherited_fd_is_open() {
    let m = Mount::new(&[]);
    let lock = m.mnt.join("f.jsonl.lock");
    let code = r#"
import os, sys, time
fd = os.open(sys.argv[1], os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
os.write(fd, b'{"pid": %d}\n' % os.getpid())
if os.fork() == 0:
    time.sleep(2.5)   # the child keeps the fd, then exits
    os._exit(0)
os._exit(0)
"#;
    // status(), not output(): the child keeps the pipes, the parent has exited.
    let st = Command::new("python3")
        .args(["-c", code])
        .arg(&lock)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    std::thread::sleep(Duration::from_millis(1500));
    assert!(lock.exists(), "reaped while a child held the fd");
    assert!(
        common::wait_for(4, || !lock.exists()),
        "not reaped after the child exited"
    );
}

/// A lock removed around the mount is forgotten (no phantom holder), and a rename
/// over the transcript by the holder carries its lock context.
#[test]
fn vanished_locks_are_forgotten_and_renames_carry_lock_context() {
    let m = Mount::new(&[]);
    let lock = m.mnt.join("v.jsonl.lock");
    let (mut child, _out) = holder(&[], &lock, 300_000, "hold");
    std::fs::remove_file(m.src.join("v.jsonl.lock")).unwrap();
    assert!(
        common::wait_for(3, || locks_json(&m).is_empty()),
        "a lock removed around the mount is still listed"
    );
    kill9(child.id());
    child.wait().unwrap();
    let recs = records(&m);
    let rel = lock_records(&recs, "lock-release");
    assert_eq!(rel.len(), 1, "{recs:#?}");
    assert!(
        rel[0]["lock"]["reason"]
            .as_str()
            .unwrap()
            .contains("around the mount")
    );
    assert!(lock_records(&recs, "lock-reap").is_empty());

    // The holder replaces the transcript through a temp file: held_by_writer.
    let code = r#"
import os, sys
d = sys.argv[1]
fd = os.open(os.path.join(d, "s.jsonl.lock"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
open(os.path.join(d, ".s.jsonl.tmp"), "w").write('{"type":"session"}\n')
os.replace(os.path.join(d, ".s.jsonl.tmp"), os.path.join(d, "s.jsonl"))
os.close(fd)
os.unlink(os.path.join(d, "s.jsonl.lock"))
"#;
    common::run_ok(Command::new("python3").args(["-c", code]).arg(&m.mnt));
    let recs = records(&m);
    let rename = recs
        .iter()
        .find(|r| r["op"] == "rename" && r["to"] == "s.jsonl")
        .unwrap();
    assert_eq!(rename["lock_context"], "held_by_writer", "{rename}");
}
