//! A crash the writers never notice (`--supervise`): the supervisor holds the FUSE
//! connection across `kill -9` of the daemon and starts a new daemon on it, which
//! resumes the requests in flight. Measured under 8 OpenClaw-style writers (open
//! O_APPEND, one JSONL line, close, every 2 ms): writer errors, the longest stall,
//! and the journal's continuity (every line in a record, none twice, no `external`).

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::Mount;

const WRITERS: usize = 8;

struct Outcome {
    acked: Vec<String>,
    errors: Vec<String>,
    longest: Duration,
}

/// Append a line with a fresh id to `f` every 2 ms (open, write, close) until `stop`.
fn writer(f: PathBuf, tag: usize, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Outcome> {
    std::thread::spawn(move || {
        let mut o = Outcome {
            acked: Vec::new(),
            errors: Vec::new(),
            longest: Duration::ZERO,
        };
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let id = format!("w{tag}-{i:06}");
            let line = format!(
                "{{\"type\":\"message\",\"id\":\"{id}\",\"message\":{{\"role\":\"user\",\"content\":\"x\"}}}}\n"
            );
            let t = Instant::now();
            let r = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&f)
                .and_then(|mut h| h.write_all(line.as_bytes()));
            o.longest = o.longest.max(t.elapsed());
            match r {
                Ok(()) => o.acked.push(id),
                Err(e) => o.errors.push(format!("{id}: {e}")),
            }
            i += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        o
    })
}

fn kill9(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

fn ids_in(f: &Path) -> Vec<String> {
    common::read_jsonl(f)
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect()
}

/// Every record of the journal in `state`.
fn journal(state: &Path) -> Vec<serde_json::Value> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(state.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    segs.sort();
    segs.iter().flat_map(|p| common::read_jsonl(p)).collect()
}

#[test]
fn a_supervised_daemon_killed_three_times_costs_the_writers_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sessions");
    std::fs::create_dir_all(&dir).unwrap();
    let state = tmp.path().join("state");
    let mut m = Mount::overlay(&dir, &state, &["--supervise"]);
    let stop = Arc::new(AtomicBool::new(false));
    let files: Vec<PathBuf> = (0..WRITERS)
        .map(|k| dir.join(format!("s{k}.jsonl")))
        .collect();
    let ws: Vec<_> = files
        .iter()
        .enumerate()
        .map(|(k, f)| writer(f.clone(), k, stop.clone()))
        .collect();
    let mut pids = vec![common::daemon_pid(&dir).expect("daemon pid")];
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(700));
        let old = *pids.last().unwrap();
        kill9(old);
        assert!(
            common::wait_for(10, || common::daemon_pid(&dir).is_some_and(|p| p != old)),
            "no new daemon after kill -9 of {old}"
        );
        pids.push(common::daemon_pid(&dir).unwrap());
        assert!(common::is_mounted(&dir), "the mount went away");
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let outs: Vec<Outcome> = ws.into_iter().map(|w| w.join().unwrap()).collect();
    let errors: Vec<&String> = outs.iter().flat_map(|o| &o.errors).collect();
    let longest = outs.iter().map(|o| o.longest).max().unwrap();
    let acked: usize = outs.iter().map(|o| o.acked.len()).sum();

    // Every acknowledged line is in its file once, whole, in order.
    for (k, o) in outs.iter().enumerate() {
        assert_eq!(
            ids_in(&files[k]),
            o.acked,
            "file {k}: lines vs acknowledged appends"
        );
    }
    // The journal: every line in a record of its file (a `write`, or `unjournaled`
    // for the crashed daemon's unwritten batch), none twice, and nothing `external`.
    let recs = journal(&state);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut unjournaled = 0;
    for r in &recs {
        assert_ne!(r["op"], "external", "a false external record: {r}");
        if r["op"] == "unjournaled" {
            unjournaled += r["entries"].as_array().map_or(0, Vec::len);
        }
        if let Some(es) = r["entries"].as_array() {
            for e in es {
                if let Some(id) = e["id"].as_str() {
                    *seen.entry(id.to_string()).or_default() += 1;
                }
            }
        }
    }
    let missing = outs
        .iter()
        .flat_map(|o| &o.acked)
        .filter(|id| !seen.contains_key(*id))
        .count();
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    let mut seqs: Vec<u64> = recs.iter().filter_map(|r| r["seq"].as_u64()).collect();
    seqs.sort_unstable();
    let seq_dups = seqs.windows(2).filter(|w| w[0] == w[1]).count();
    eprintln!(
        "supervise: {} kill -9 (daemons {pids:?}), {WRITERS} writers: {acked} appends, {} errors, longest append {longest:.0?}; journal: {} records, {unjournaled} lines as `unjournaled`, {missing} lines in no record, {} twice",
        pids.len() - 1,
        errors.len(),
        recs.len(),
        twice.len()
    );
    assert!(errors.is_empty(), "writer errors: {errors:?}");
    assert!(longest < Duration::from_secs(5), "a stall of {longest:?}");
    assert_eq!(missing, 0, "lines the journal never recorded");
    assert!(twice.is_empty(), "lines recorded twice: {twice:?}");
    assert_eq!(seq_dups, 0, "a seq handed out twice");
    // A clean unmount ends the last daemon and the supervisor.
    m.unmount();
    assert!(!common::is_mounted(&dir));
    let sup_gone = common::wait_for(5, || {
        !std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                c.windows(9).any(|w| w == b"sentinel\0")
                    && c.windows(dir.as_os_str().len())
                        .any(|w| w == dir.as_os_str().as_encoded_bytes())
            })
        })
    });
    assert!(sup_gone, "the supervisor outlived the unmount");
}

/// A daemon that keeps crashing is given up on after 5 restarts in 60 s: the
/// supervisor fails open (the overlay path serves the backing files again).
#[test]
fn a_crash_loop_ends_in_fail_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sessions");
    std::fs::create_dir_all(&dir).unwrap();
    let state = tmp.path().join("state");
    let _m = Mount::overlay(&dir, &state, &["--supervise"]);
    std::fs::write(dir.join("a.jsonl"), b"{}\n").unwrap();
    for round in 0..6 {
        let Some(old) = common::daemon_pid(&dir) else {
            panic!("no daemon in round {round}");
        };
        kill9(old);
        if round < 5 {
            assert!(
                common::wait_for(10, || common::daemon_pid(&dir).is_some_and(|p| p != old)),
                "round {round}: no restart"
            );
        }
    }
    assert!(
        common::wait_for(3, || !common::is_mounted(&dir)),
        "still mounted after the 6th crash"
    );
    assert_eq!(std::fs::read(dir.join("a.jsonl")).unwrap(), b"{}\n");
    let log = std::fs::read_to_string(state.join("sessionfs.log")).unwrap();
    assert!(log.contains("giving up"), "{log}");
}

/// `sessionfs upgrade`: the supervised daemon drains, writes its journal and exits;
/// the supervisor starts the binary now at its path (replaced here by a new copy, as
/// a package upgrade does) on the same connection. Under 8 writers, twice: no writer
/// error, the same st_dev and inode numbers, and a journal without a seq gap, an
/// `unjournaled` or an `external` record.
#[test]
fn an_upgrade_under_eight_writers_loses_nothing_and_keeps_the_journal_continuous() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sessions");
    std::fs::create_dir_all(&dir).unwrap();
    let state = tmp.path().join("state");
    let bin_dir = tmp.path().join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let exe = bin_dir.join("sessionfs");
    std::fs::copy(common::bin(), &exe).unwrap();
    common::run_ok(
        std::process::Command::new(&exe)
            .args(["mount", "--supervise", "--state-dir"])
            .arg(&state)
            .arg(&dir),
    );
    let mut m = Mount::adopt(&dir, &dir, &state);
    let stop = Arc::new(AtomicBool::new(false));
    let files: Vec<PathBuf> = (0..WRITERS)
        .map(|k| dir.join(format!("s{k}.jsonl")))
        .collect();
    let ws: Vec<_> = files
        .iter()
        .enumerate()
        .map(|(k, f)| writer(f.clone(), k, stop.clone()))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    use std::os::unix::fs::MetadataExt;
    let before = std::fs::metadata(&files[0]).unwrap();
    let mut pids = vec![common::daemon_pid(&dir).unwrap()];
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(500));
        // A new binary at the same path (a new inode, as `install` or a package does).
        let next = bin_dir.join(".sessionfs.new");
        std::fs::copy(common::bin(), &next).unwrap();
        std::fs::rename(&next, &exe).unwrap();
        let out = common::run_ok(std::process::Command::new(&exe).arg("upgrade").arg(&dir));
        eprintln!("{}", out.trim());
        let new = common::daemon_pid(&dir).unwrap();
        assert_ne!(new, *pids.last().unwrap());
        let link = std::fs::read_link(format!("/proc/{new}/exe")).unwrap();
        assert_eq!(link, exe, "the new daemon runs the new binary");
        pids.push(new);
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = std::fs::metadata(&files[0]).unwrap();
    assert_eq!((before.dev(), before.ino()), (after.dev(), after.ino()));
    stop.store(true, Ordering::Relaxed);
    let outs: Vec<Outcome> = ws.into_iter().map(|w| w.join().unwrap()).collect();
    let errors: Vec<&String> = outs.iter().flat_map(|o| &o.errors).collect();
    let longest = outs.iter().map(|o| o.longest).max().unwrap();
    for (k, o) in outs.iter().enumerate() {
        assert_eq!(ids_in(&files[k]), o.acked, "file {k}");
    }
    m.unmount();
    let recs = journal(&state);
    let mut seqs: Vec<u64> = recs.iter().filter_map(|r| r["seq"].as_u64()).collect();
    seqs.sort_unstable();
    let gaps = seqs.windows(2).filter(|w| w[1] != w[0] + 1).count();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in &recs {
        assert_ne!(r["op"], "external", "{r}");
        assert_ne!(r["op"], "unjournaled", "{r}");
        for e in r["entries"].as_array().into_iter().flatten() {
            if let Some(id) = e["id"].as_str() {
                *seen.entry(id.to_string()).or_default() += 1;
            }
        }
    }
    let acked: Vec<&String> = outs.iter().flat_map(|o| &o.acked).collect();
    let missing = acked.iter().filter(|id| !seen.contains_key(**id)).count();
    let twice = seen.values().filter(|n| **n > 1).count();
    eprintln!(
        "upgrade: 2 upgrades (daemons {pids:?}), {WRITERS} writers: {} appends, {} errors, longest append {longest:.0?}; journal: {} records, {gaps} seq gaps, {missing} lines in no record, {twice} twice",
        acked.len(),
        errors.len(),
        recs.len()
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(gaps, 0, "seq gaps across an upgrade");
    assert_eq!(missing, 0);
    assert_eq!(twice, 0);
}

/// Mount `dir` with `--supervise` and the fault injection `fault` (see
/// `sessionfs::resume::fault`): the daemon kills itself once, at that point.
fn mount_with_fault(dir: &Path, state: &Path, fault: &str) -> Mount {
    common::run_ok(
        std::process::Command::new(common::bin())
            .env("SESSIONFS_FAULT", fault)
            .args(["mount", "--supervise", "--state-dir"])
            .arg(state)
            .arg(dir),
    );
    Mount::adopt(dir, dir, state)
}

/// The daemon dies after it appended a line and before it answered: the kernel
/// re-sends the WRITE to the next daemon, which finds the bytes in place and answers
/// without writing them again. The writer sees one successful write, the file has
/// the line once.
#[test]
fn a_resent_append_the_dead_daemon_had_written_is_not_written_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sessions");
    std::fs::create_dir_all(&dir).unwrap();
    let state = tmp.path().join("state");
    let marker = tmp.path().join("fault.done");
    let _m = mount_with_fault(
        &dir,
        &state,
        &format!("after-write:t.jsonl:{}", marker.display()),
    );
    let f = dir.join("t.jsonl");
    std::fs::write(&f, b"").unwrap();
    let line = "{\"type\":\"message\",\"id\":\"once\"}\n";
    let t = Instant::now();
    let mut h = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
    h.write_all(line.as_bytes()).unwrap();
    drop(h);
    eprintln!("append across the crash: {:.0?}", t.elapsed());
    assert!(marker.exists(), "the fault did not fire");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), line);
    let log = std::fs::read_to_string(state.join("sessionfs.log")).unwrap();
    assert!(log.contains("not written twice"), "{log}");
}

/// OpenClaw's lock across a crash: the daemon dies after it created `<f>.lock` with
/// O_EXCL and before it answered. The re-sent create succeeds (not EEXIST), the lock
/// is tracked with its holder; a lock held across another crash is tracked again by
/// the next daemon; the daemon dies after it unlinked the lock, and the re-sent
/// unlink succeeds (not ENOENT).
#[test]
fn an_openclaw_lock_survives_crashes_at_its_create_and_its_unlink() {
    const HOLDER: &str = r#"
import json, os, sys, time
f, go = sys.argv[1], sys.argv[2]
fd = os.open(f + ".lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
os.write(fd, (json.dumps({"pid": os.getpid(), "createdAt": "2026-12-06T00:00:00.000Z", "maxHoldMs": 300000}) + "\n").encode())
print("locked", flush=True)
while not os.path.exists(go + "1"):
    time.sleep(0.01)
os.stat(f)
while not os.path.exists(go + "2"):
    time.sleep(0.01)
os.close(fd)
os.unlink(f + ".lock")
print("released", flush=True)
"#;
    for point in ["after-create", "after-unlink"] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sessions");
        std::fs::create_dir_all(&dir).unwrap();
        let state = tmp.path().join("state");
        let marker = tmp.path().join("fault.done");
        let _m = mount_with_fault(
            &dir,
            &state,
            &format!("{point}:s.jsonl.lock:{}", marker.display()),
        );
        let f = dir.join("s.jsonl");
        std::fs::write(&f, b"{\"type\":\"session\"}\n").unwrap();
        let go = tmp.path().join("go");
        let go = go.as_path();
        let child = std::process::Command::new("python3")
            .arg("-c")
            .arg(HOLDER)
            .arg(&f)
            .arg(go)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let holder = child.id() as i32;
        assert!(
            common::wait_for(15, || dir.join("s.jsonl.lock").exists()),
            "{point}: no lock"
        );
        // The daemon serving now knows the lock and its holder (after a crash at
        // its create: by the re-sent create; else by its own create).
        let locks = || {
            let out = common::run_ok(
                std::process::Command::new(common::bin())
                    .args(["locks", "--json"])
                    .arg(&dir),
            );
            out.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .collect::<Vec<_>>()
        };
        assert!(
            common::wait_for(10, || locks().iter().any(|l| l["holder"]["pid"] == holder)),
            "{point}: the lock is not tracked: {:?}",
            locks()
        );
        if point == "after-unlink" {
            // A crash while the lock is held (its records written: a `kill -9` loses
            // the last ≤ 50 ms batch): the next daemon tracks it again.
            assert!(common::wait_for(5, || journal(&state)
                .iter()
                .any(|r| r["op"] == "lock-acquire")));
            let old = common::daemon_pid(&dir).unwrap();
            kill9(old);
            assert!(common::wait_for(10, || common::daemon_pid(&dir).is_some_and(|p| p != old)));
            let l = locks();
            assert!(
                l.iter().any(|l| l["holder"]["pid"] == holder),
                "not tracked after the restart: {l:?}"
            );
        }
        std::fs::write(tmp.path().join("go1"), b"").unwrap();
        if point == "after-unlink" {
            // The holder's stat after the restart is journaled: its hold is known.
            assert!(
                common::wait_for(5, || journal(&state)
                    .iter()
                    .any(|r| r["op"] == "stat" && r["pid"] == holder)),
                "no holder stat after the restart"
            );
        }
        std::fs::write(tmp.path().join("go2"), b"").unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("released"),
            "{point}: holder failed: {} {}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(marker.exists(), "{point}: the fault did not fire");
        assert!(!dir.join("s.jsonl.lock").exists());
        let recs = common::read_jsonl(&dir.join(".journal"));
        let ops: Vec<&str> = recs
            .iter()
            .filter(|r| r["path"] == "s.jsonl.lock")
            .filter_map(|r| r["op"].as_str())
            .collect();
        eprintln!("{point}: lock records {ops:?}");

        assert!(ops.contains(&"lock-acquire"), "{point}: {ops:?}");
        // The hold ends in the journal: a `lock-release`, or (the crash lost the
        // dead daemon's last records) the next daemon's `unlink` of the re-sent
        // request, flag `resent`, which `explain` takes as the end of the hold.
        let resent = recs.iter().any(|r| {
            r["path"] == "s.jsonl.lock"
                && r["op"] == "unlink"
                && r["result"] == "ok"
                && r["flags"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|x| x == "resent"))
        });
        assert!(ops.contains(&"lock-release") || resent, "{point}: {ops:?}");
        assert!(
            recs.iter().all(|r| r["op"] != "external"),
            "{point}: an external record"
        );
    }
}

/// The supervisor itself killed: the daemon starts a new one, so the next daemon
/// crash is still survived.
#[test]
fn a_killed_supervisor_is_replaced_by_the_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sessions");
    std::fs::create_dir_all(&dir).unwrap();
    let state = tmp.path().join("state");
    let _m = Mount::overlay(&dir, &state, &["--supervise"]);
    std::fs::write(dir.join("a.jsonl"), b"{}\n").unwrap();
    let supervisors = || -> Vec<i32> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let pid: i32 = e.file_name().to_str()?.parse().ok()?;
                let c = std::fs::read(e.path().join("cmdline")).ok()?;
                let has = |n: &[u8]| c.windows(n.len()).any(|w| w == n);
                (has(b"sentinel\0")
                    && has(b"--fuse-fd\0")
                    && has(dir.as_os_str().as_encoded_bytes()))
                .then_some(pid)
            })
            .collect()
    };
    let first = supervisors();
    assert_eq!(first.len(), 1, "{first:?}");
    kill9(first[0]);
    assert!(
        common::wait_for(5, || supervisors().iter().any(|p| *p != first[0])),
        "no new supervisor"
    );
    let old = common::daemon_pid(&dir).unwrap();
    kill9(old);
    assert!(
        common::wait_for(10, || common::daemon_pid(&dir).is_some_and(|p| p != old)),
        "no restart after the supervisor was replaced"
    );
    assert_eq!(std::fs::read(dir.join("a.jsonl")).unwrap(), b"{}\n");
    let log = std::fs::read_to_string(state.join("sessionfs.log")).unwrap();
    assert!(log.contains("the supervisor died"), "{log}");
}

/// The daemon dies after it read a WRITE and before it wrote anything: the re-sent
/// append is written, even though the file already ends with the very same line (a
/// heartbeat): a re-sent append is taken as done only by its bytes at its own offset.
#[test]
fn a_resent_append_that_never_landed_is_written_even_if_the_file_ends_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sessions");
    std::fs::create_dir_all(&dir).unwrap();
    let state = tmp.path().join("state");
    let marker = tmp.path().join("fault.done");
    let line = "{\"type\":\"heartbeat\"}\n";
    let f = dir.join("h.jsonl");
    std::fs::write(&f, line).unwrap();
    let _m = mount_with_fault(
        &dir,
        &state,
        &format!("before-write:h.jsonl:{}", marker.display()),
    );
    let mut h = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
    h.write_all(line.as_bytes()).unwrap();
    drop(h);
    assert!(marker.exists(), "the fault did not fire");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), line.repeat(2));
}

/// `sessionfs upgrade` to a binary that does not start: the supervisor starts the
/// binary it runs itself, the mount stays and serves, and the command says so.
#[test]
fn an_upgrade_to_a_broken_binary_keeps_the_mount_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sessions");
    std::fs::create_dir_all(&dir).unwrap();
    let state = tmp.path().join("state");
    let bin_dir = tmp.path().join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let exe = bin_dir.join("sessionfs");
    std::fs::copy(common::bin(), &exe).unwrap();
    common::run_ok(
        std::process::Command::new(&exe)
            .args(["mount", "--supervise", "--state-dir"])
            .arg(&state)
            .arg(&dir),
    );
    let _m = Mount::adopt(&dir, &dir, &state);
    std::fs::write(dir.join("a.jsonl"), b"{}\n").unwrap();
    // The "new package": a binary that exits at once.
    let broken = bin_dir.join(".new");
    std::fs::write(&broken, b"#!/bin/sh\nexit 2\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&broken, &exe).unwrap();
    let out = std::process::Command::new(common::bin())
        .arg("upgrade")
        .arg(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the upgrade claimed success");
    assert!(err.contains("did not start"), "{err}");
    assert!(common::is_mounted(&dir), "the mount went away");
    std::fs::write(dir.join("b.jsonl"), b"{}\n").unwrap();
    let recs = common::read_jsonl(&dir.join(".journal"));
    assert!(
        recs.iter().any(|r| r["path"] == "b.jsonl"),
        "not journaled after the failed upgrade"
    );
}

/// The daemon dies after it made a directory and before it answered: the re-sent
/// mkdir succeeds (not EEXIST), journaled with flag `resent`.
#[test]
fn a_resent_mkdir_the_dead_daemon_had_done_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sessions");
    std::fs::create_dir_all(&dir).unwrap();
    let state = tmp.path().join("state");
    let marker = tmp.path().join("fault.done");
    let _m = mount_with_fault(
        &dir,
        &state,
        &format!("after-mkdir:newagent:{}", marker.display()),
    );
    std::fs::create_dir(dir.join("newagent")).unwrap();
    assert!(marker.exists(), "the fault did not fire");
    assert!(dir.join("newagent").is_dir());
    let recs = common::read_jsonl(&dir.join(".journal"));
    assert!(
        recs.iter().any(|r| r["op"] == "mkdir"
            && r["path"] == "newagent"
            && r["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == "resent"))),
        "no resent mkdir record"
    );
}
