//! A crashed daemon fails open: its sentinel detaches the mount, so an overlay mount's
//! path serves the very same backing files again within a second and an OpenClaw-style
//! writer (open, append, close) goes on; `--fail-closed` keeps the dead mount
//! (ENOTCONN) until `sessionfs umount`.

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::Mount;

/// Append lines to `f` every 2 ms (open with O_APPEND, write, close) until `stop`;
/// returns (instant, ok) of each attempt.
fn writer(
    f: std::path::PathBuf,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(Instant, bool)>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let line = format!("{{\"type\":\"message\",\"id\":\"w{i:06}\"}}\n");
            let ok = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&f)
                .and_then(|mut h| h.write_all(line.as_bytes()))
                .is_ok();
            out.push((Instant::now(), ok));
            i += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        out
    })
}

fn kill9(mnt: &Path) -> Instant {
    let pid = common::daemon_pid(mnt).expect("daemon pid");
    let t = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    t
}

#[test]
fn a_killed_daemon_fails_open_within_a_second() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sessions");
    std::fs::create_dir_all(&dir).unwrap();
    let state = tmp.path().join("state");
    let _m = Mount::overlay(&dir, &state, &[]);
    let f = dir.join("t.jsonl");
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(f.clone(), stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    let killed = kill9(&dir);
    // The mount goes away by itself.
    assert!(
        common::wait_for(2, || !common::is_mounted(&dir)),
        "the dead mount is still there"
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let attempts = w.join().unwrap();
    let after: Vec<&(Instant, bool)> = attempts.iter().filter(|(t, _)| *t >= killed).collect();
    let first_ok = after
        .iter()
        .find(|(t, ok)| *ok && t.duration_since(killed) > Duration::ZERO)
        .map(|(t, _)| t.duration_since(killed))
        .expect("no append succeeded after the kill");
    let failed = after.iter().filter(|(_, ok)| !ok).count();
    eprintln!(
        "fail open: first append {:.0?} after kill -9, {failed} failed appends in between",
        first_ok
    );
    assert!(
        first_ok < Duration::from_secs(1),
        "first append after {first_ok:?}"
    );
    // Every acknowledged line is in the file, whole.
    let data = std::fs::read_to_string(&f).unwrap();
    let acked = attempts.iter().filter(|(_, ok)| *ok).count();
    assert_eq!(
        data.lines().count(),
        acked,
        "lines in the file vs acknowledged appends"
    );
    assert!(data.lines().all(|l| l.ends_with("\"}")), "a torn line");
}

#[test]
fn fail_closed_keeps_the_dead_mount() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sessions");
    std::fs::create_dir_all(&dir).unwrap();
    let state = tmp.path().join("state");
    let _m = Mount::overlay(&dir, &state, &["--fail-closed"]);
    std::fs::write(dir.join("a"), b"x").unwrap();
    kill9(&dir);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        common::is_mounted(&dir),
        "--fail-closed: the dead mount stays"
    );
    let e = std::fs::read(dir.join("a")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN), "{e}");
    // A unit's ExecStartPre (`umount --stale-only`) detaches it; then nothing to do.
    for _ in 0..2 {
        common::run_ok(
            std::process::Command::new(common::bin())
                .args(["umount", "--stale-only"])
                .arg(&dir),
        );
    }
    assert!(!common::is_mounted(&dir));
    assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"x");
}

/// Reconcile at start: `kill -9` while a writer appends (it goes on through the
/// fail-open window, unjournaled), then mount again: the `external` record (flag
/// `reconcile`) names exactly the lines no journaled write covers, which include
/// every line written while sessionfs was away.
#[test]
fn a_restart_journals_what_was_written_while_away() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sessions");
    std::fs::create_dir_all(&dir).unwrap();
    let state = tmp.path().join("state");
    let f = dir.join("t.jsonl");
    let mut m = Mount::overlay(&dir, &state, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(f.clone(), stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    kill9(&dir);
    assert!(common::wait_for(2, || !common::is_mounted(&dir)));
    // Lines written now are after the mount was gone.
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    w.join().unwrap();
    let mut away = Vec::new();
    {
        let mut h = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
        for i in 0..5 {
            let line = format!("{{\"type\":\"message\",\"id\":\"away{i}\"}}\n");
            h.write_all(line.as_bytes()).unwrap();
            away.push(format!("away{i}"));
        }
    }
    m.unmount();
    let _m2 = Mount::overlay(&dir, &state, &[]);
    let recs = common::read_jsonl(&dir.join(".journal"));
    let ext: Vec<&serde_json::Value> = recs
        .iter()
        .filter(|r| r["op"] == "external" && r["flags"][0] == "reconcile")
        .collect();
    assert_eq!(ext.len(), 1, "{ext:?}");
    let ids: Vec<&str> = ext[0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    for a in &away {
        assert!(ids.contains(&a.as_str()), "{a} missing from {ids:?}");
    }
    // No line the journal already has a write for.
    let journaled: std::collections::HashSet<&str> = recs
        .iter()
        .filter(|r| r["op"] == "write")
        .flat_map(|r| r["entries"].as_array().into_iter().flatten())
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert!(ids.iter().all(|i| !journaled.contains(i)), "{ids:?}");
    // Every line of the file is journaled one way or the other.
    let data = std::fs::read_to_string(&f).unwrap();
    assert_eq!(journaled.len() + ids.len(), data.lines().count());
    // A clean restart has nothing to reconcile.
    drop(_m2);
    let _m3 = Mount::overlay(&dir, &state, &[]);
    let again = common::read_jsonl(&dir.join(".journal"))
        .iter()
        .filter(|r| r["flags"][0] == "reconcile")
        .count();
    assert_eq!(again, 1, "a clean restart reconciled something");
}

/// A file the journal knew that is gone at start (deleted while sessionfs was away)
/// gets one `external` record with flag `gone`, once: the next start says nothing.
#[test]
fn a_file_deleted_while_away_is_journaled_once_as_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sessions");
    std::fs::create_dir_all(&dir).unwrap();
    let state = tmp.path().join("state");
    let mut m = Mount::overlay(&dir, &state, &[]);
    std::fs::write(dir.join("a.jsonl"), b"{\"id\":\"1\"}\n").unwrap();
    std::fs::write(dir.join("b.jsonl"), b"{\"id\":\"2\"}\n").unwrap();
    // A change of the mount root's own metadata: the root is never "gone".
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o750)).unwrap();
    // Atomic replaces through the mount (OpenClaw's sessions.json): their temporary
    // names are gone by rename, journaled; not "gone while away".
    for i in 0..3 {
        let tmp = dir.join(format!("sessions.json.{i}.tmp"));
        std::fs::write(&tmp, format!("{{\"n\":{i}}}")).unwrap();
        std::fs::rename(&tmp, dir.join("sessions.json")).unwrap();
    }
    m.unmount();
    std::fs::remove_file(dir.join("a.jsonl")).unwrap();
    let gone = |m: &Mount| -> Vec<serde_json::Value> {
        common::read_jsonl(&m.mnt.join(".journal"))
            .into_iter()
            .filter(|r| {
                r["flags"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|x| x == "gone"))
            })
            .collect()
    };
    let m2 = Mount::overlay(&dir, &state, &[]);
    let g = gone(&m2);
    assert_eq!(g.len(), 1, "{g:?}");
    assert_eq!(g[0]["op"], "external");
    assert_eq!(g[0]["path"], "a.jsonl");
    assert_eq!(g[0]["size_before"], 11);
    assert!(g[0].get("after").is_none_or(|a| a.is_null()), "{}", g[0]);
    drop(m2);
    let m3 = Mount::overlay(&dir, &state, &[]);
    assert_eq!(gone(&m3).len(), 1, "reported again at the next start");
}
