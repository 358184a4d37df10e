//! `sessionfs explain` and `sessionfs changes` on a real mount: a python3 "runner"
//! takes and releases the session lock the way OpenClaw 2026.5.22 does (O_EXCL lock
//! file with its JSON payload, a user message and `session.started` in the first hold,
//! the model call under a second hold, two more locked writes, `session.ended`, the
//! cleanup hold), stopping in each gap and during the model call until the test (another
//! process) has made its changes. Like the gateway it stats the transcript right after
//! taking the lock and right before releasing it: the holder's `stat` records bound
//! what a hold absorbs (when the mount journals them; without them a hold is absorbed
//! whole, and the tests pass either way).

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Mount, read_jsonl};
use serde_json::{Value, json};

/// The runner. argv: session file, control dir, `1` to write a trajectory file.
/// At each step it creates `<ctl>/<step>.at` and waits for `<ctl>/<step>.go`.
/// Steps: `gap1` (after the first release), `model` (holding the lock during the model
/// call), `gap2` (after the model call's release), `gap3` (before the cleanup hold).
const RUNNER: &str = r#"
import json, os, sys, time
f, ctl, traj = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
lock = f + ".lock"
tfile = f[:-len(".jsonl")] + ".trajectory.jsonl"
n = [0]
def eid():
    n[0] += 1
    return "%04x%04x" % (os.getpid() % 65536, n[0])
def step(name):
    open(os.path.join(ctl, name + ".at"), "w").close()
    t = time.time()
    while not os.path.exists(os.path.join(ctl, name + ".go")):
        if time.time() - t > 30:
            sys.exit("no go for " + name)
        time.sleep(0.005)
def acquire():
    fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.write(fd, (json.dumps({"pid": os.getpid(), "createdAt": "2026-12-06T00:00:00.000Z",
                              "maxHoldMs": 300000}, indent=2) + "\n").encode())
    os.stat(f)  # the fence check (assertSessionFileFence), after the lock's create
    return fd
def release(fd):
    os.stat(f)  # the fence fingerprint (releaseForPrompt), before the unlink
    os.close(fd)
    open(lock).read()
    os.unlink(lock)
def read():
    open(f).read()
def append(entry):
    entry.update({"id": eid(), "parentId": None, "timestamp": "2026-12-06T00:00:00.000Z"})
    with open(f, "a") as h:
        h.write(json.dumps(entry) + "\n")
def trajectory(kind):
    if traj:
        with open(tfile, "a") as h:
            h.write(json.dumps({"type": kind, "ts": "2026-12-06T00:00:00.000Z"}) + "\n")
fd = acquire()
read()
append({"type": "message", "message": {"role": "user", "content": "hi"}})
trajectory("session.started")
read()
release(fd)
step("gap1")
fd = acquire()
step("model")
append({"type": "message", "message": {"role": "assistant", "content": "hello", "provider": "mock", "model": "m"}})
read()
release(fd)
step("gap2")
fd = acquire()
append({"type": "custom", "customType": "openclaw:bootstrap-context:full", "data": {}})
read()
release(fd)
trajectory("session.ended")
step("gap3")
fd = acquire()
read()
release(fd)
print("done", flush=True)
"#;

const HEADER: &str = "{\"type\":\"session\",\"version\":3,\"id\":\"sess\",\"timestamp\":\"2026-12-06T00:00:00.000Z\",\"cwd\":\"/\"}\n";

/// Run the runner on `file`; at each step call `at(step)` (in this process), then let
/// it go on. Returns the runner's pid.
fn run_runner(file: &Path, traj: bool, mut at: impl FnMut(&str)) -> u32 {
    let ctl = tempfile::tempdir().unwrap();
    let script = ctl.path().join("runner.py");
    fs::write(&script, RUNNER).unwrap();
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(file)
        .arg(ctl.path())
        .arg(if traj { "1" } else { "0" })
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    for step in ["gap1", "model", "gap2", "gap3"] {
        let t = Instant::now();
        while !ctl.path().join(format!("{step}.at")).exists() {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "runner never reached {step}"
            );
            if let Ok(Some(st)) = child.try_wait() {
                panic!("runner exited ({st}) before {step}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        at(step);
        fs::write(ctl.path().join(format!("{step}.go")), b"").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "runner failed");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "done");
    pid
}

fn sessionfs(args: &[&str]) -> Output {
    Command::new(common::bin()).args(args).output().unwrap()
}

fn stdout_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `sessionfs explain --json FILE [extra]`: one object per window.
fn explain(file: &Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["explain", "--json"];
    args.extend_from_slice(extra);
    args.push(file.to_str().unwrap());
    stdout_ok(&sessionfs(&args))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `sessionfs changes --json FILE args`.
fn changes(file: &Path, args: &[&str]) -> Value {
    let mut a = vec!["changes", "--json"];
    a.extend_from_slice(args);
    a.push(file.to_str().unwrap());
    serde_json::from_str(stdout_ok(&sessionfs(&a)).trim()).unwrap()
}

/// A one-line error (exit 1) containing `want`.
fn fails_with(out: &Output, want: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout {:?} stderr {err}",
        out.stdout
    );
    assert!(err.contains(want), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

fn append_line(file: &Path, line: &Value) {
    let mut f = fs::OpenOptions::new().append(true).open(file).unwrap();
    f.write_all(format!("{line}\n").as_bytes()).unwrap();
}

fn chmod(file: &Path, mode: u32) {
    fs::set_permissions(file, fs::Permissions::from_mode(mode)).unwrap();
}

/// The mount's records of `file` (relative path `rel`) with `op`, by this process.
fn mine<'a>(recs: &'a [Value], rel: &str, op: &str) -> Vec<&'a Value> {
    let me = std::process::id();
    recs.iter()
        .filter(|r| r["path"] == rel && r["op"] == op && r["pid"] == me)
        .collect()
}

fn change<'a>(w: &'a Value, seq: &Value) -> &'a Value {
    w["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["seq"] == *seq)
        .unwrap_or_else(|| {
            let seqs: Vec<&Value> = w["changes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| &c["seq"])
                .collect();
            panic!("seq {seq} not in window {} (changes {seqs:?})", w["window"])
        })
}

fn session(m: &Mount, name: &str) -> PathBuf {
    let f = m.mnt.join(name);
    fs::write(&f, HEADER).unwrap();
    chmod(&f, 0o644);
    f
}

#[test]
fn a_foreign_append_in_the_model_call_is_absorbed_and_a_chmod_in_a_gap_trips() {
    let m = Mount::new(&[]);
    let f = session(&m, "s1.jsonl");
    let me = std::process::id();
    let runner = run_runner(&f, true, |step| match step {
        // Another process appends without the lock while the runner holds it.
        "model" => append_line(
            &f,
            &json!({"type": "custom", "customType": "foreign", "id": "f00dcafe", "parentId": null,
                    "timestamp": "2026-12-06T00:00:00.000Z"}),
        ),
        // ... and chmods the transcript to another mode between two holds.
        "gap2" => chmod(&f, 0o640),
        _ => {}
    });
    let recs = read_jsonl(&m.mnt.join(".journal"));
    let append = mine(&recs, "s1.jsonl", "write")
        .into_iter()
        .find(|r| r["entries"][0]["id"] == "f00dcafe")
        .unwrap();
    let chmod_rec = mine(&recs, "s1.jsonl", "chmod")[1];
    assert_eq!(chmod_rec["class"], "metadata");

    let ws = explain(&f, &[]);
    assert_eq!(ws.len(), 2, "the attempt ends at the trip: {ws:?}");
    let canon = f.canonicalize().unwrap();
    for (i, w) in ws.iter().enumerate() {
        assert_eq!(w["file"], canon.to_str().unwrap());
        assert_eq!(w["rules"], "2026.5.22");
        assert_eq!(w["attempt"], 1);
        assert_eq!(w["attempt_basis"], "trajectory");
        assert_eq!(w["window"], i + 1);
        assert_eq!(w["holder"]["pid"], runner);
        assert_eq!(w["holder"]["comm"], "python3");
        assert!(w["holder"]["tid"].is_u64() && w["holder"]["starttime"].is_u64());
        assert!(w["released"]["seq"].is_u64() && w["released"]["ts"].is_string());
        assert!(w["reacquired"]["seq"].as_u64() > w["released"]["seq"].as_u64());
    }
    // Window 1: the gap after the first release and the model call's hold.
    let w1 = &ws[0];
    assert_eq!(w1["tripped"], false);
    assert_eq!(w1["first_trip"], Value::Null);
    let c = change(w1, &append["seq"]);
    assert_eq!(c["absorbed"], true);
    assert_eq!(c["class"], "append");
    assert_eq!(c["lock"], "held_by_other");
    assert_eq!(c["lock_holder"]["pid"], runner);
    assert_eq!(c["pid"], me);
    assert_eq!(c["entries"][0]["id"], "f00dcafe");
    // With the runner's stat records, the absorbed stretch is bounded by them.
    let stats = recs
        .iter()
        .filter(|r| r["path"] == "s1.jsonl" && r["op"] == "stat" && r["pid"] == runner)
        .count();
    if stats > 0 {
        assert!(
            w1["checked"]["seq"].as_u64() < append["seq"].as_u64(),
            "{w1}"
        );
        assert!(
            w1["absorbed_until"]["seq"].as_u64() > append["seq"].as_u64(),
            "{w1}"
        );
        assert!(w1["fence_taken"]["seq"].as_u64() < w1["released"]["seq"].as_u64());
    } else {
        assert_eq!(w1["checked"], Value::Null);
    }
    // Window 2: the chmod in the gap trips the fence.
    let w2 = &ws[1];
    assert_eq!(w2["tripped"], true);
    assert_eq!(w2["first_trip"], chmod_rec["seq"]);
    assert_eq!(w2["outcome"], "takeover");
    let c = change(w2, &chmod_rec["seq"]);
    assert_eq!(c["absorbed"], false);
    assert_eq!(c["fence"], "trips");
    assert_eq!(c["lock"], "none");
    assert_eq!(c["class"], "metadata");

    // Under 2026.6.11 a ctime-only change with the same content is forgiven.
    let ws = explain(&f, &["--rules", "2026.6.11"]);
    assert_eq!(ws.len(), 3);
    assert!(
        ws.iter()
            .all(|w| w["tripped"] == false && w["rules"] == "2026.6.11")
    );

    // --since: only windows released after the seq.
    let since = ws[0]["released"]["seq"].to_string();
    let later = explain(&f, &["--rules", "2026.6.11", "--since", &since]);
    let released: Vec<&Value> = later.iter().map(|w| &w["released"]["seq"]).collect();
    assert_eq!(later.len(), ws.len() - 1, "{released:?}");

    // The table names the rule set, the trip and the change.
    let text = stdout_ok(&sessionfs(&["explain", f.to_str().unwrap()]));
    assert!(text.contains("rules 2026.5.22"), "{text}");
    assert!(text.contains("TRIPPED at #"), "{text}");
    assert!(text.contains("+foreign:f00dcafe"), "{text}");
}

#[test]
fn a_same_mode_chmod_in_a_gap_is_a_noop_and_trips_nothing() {
    let m = Mount::new(&[]);
    for traj in [true, false] {
        let name = if traj { "t.jsonl" } else { "u.jsonl" };
        let f = session(&m, name);
        run_runner(&f, traj, |step| {
            if step == "gap1" || step == "gap3" {
                chmod(&f, 0o644);
            }
        });
        let recs = read_jsonl(&m.mnt.join(".journal"));
        let same = mine(&recs, name, "chmod");
        assert!(same.len() >= 3);
        assert!(
            same[1..]
                .iter()
                .all(|r| r["class"] == "noop" && r["fence_moved"] == false)
        );
        let ws = explain(&f, &[]);
        assert!(ws.iter().all(|w| w["tripped"] == false));
        let c = change(&ws[0], &same[1]["seq"]);
        assert_eq!(c["fence"], "harmless");
        assert_eq!(c["class"], "noop");
        if traj {
            // The attempt ended (session.ended, cleanup): no open window.
            assert_eq!(ws.len(), 3);
            assert_eq!(ws[2]["cleanup"], true);
        } else {
            // Without a trajectory the attempt's end is unknown: the last window is
            // open (`reacquired` null).
            assert_eq!(ws.len(), 4);
            assert_eq!(ws[0]["attempt_basis"], "user-message");
            assert_eq!(ws[3]["reacquired"], Value::Null);
        }
    }
}

#[test]
fn explain_gateway_log_finds_the_change_behind_a_takeover() {
    let m = Mount::new(&[]);
    let f = session(&m, "g.jsonl");
    run_runner(&f, true, |step| {
        if step == "gap1" {
            append_line(
                &f,
                &json!({"type": "message", "id": "0bad0bad", "parentId": null, "timestamp": "t",
                        "message": {"role": "user", "content": "from another client"}}),
            );
        }
    });
    let ws = explain(&f, &[]);
    let w = ws.iter().find(|w| w["tripped"] == true).unwrap();
    let trip = w["first_trip"].clone();
    // The gateway logs the error a few ms after the acquisition that found it.
    let at = w["reacquired"]["ts"]
        .as_str()
        .unwrap()
        .replace('Z', "+00:00");
    let canon = f.canonicalize().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("gateway.log");
    let mut text = String::from("2026-12-06T04:00:00.000+00:00 [gateway] ready\n");
    for lane in ["main", "session:agent:main:main"] {
        text.push_str(&format!(
            "{at} [diagnostic] lane task error: lane={lane} durationMs=1500 error=\"EmbeddedAttemptSessionTakeoverError: session file changed while embedded prompt lock was released: {}\"\n",
            canon.display()
        ));
    }
    fs::write(&log, text).unwrap();
    let out = stdout_ok(&sessionfs(&[
        "explain",
        "--json",
        "--gateway-log",
        log.to_str().unwrap(),
    ]));
    let t: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(t.len(), 1, "{out}");
    assert_eq!(t[0]["matched"], true, "{out}");
    assert_eq!(t[0]["lanes"], json!(["main", "session:agent:main:main"]));
    assert_eq!(t[0]["cause"]["seq"], trip);
    assert_eq!(t[0]["cause"]["entries"][0]["id"], "0bad0bad");
    assert_eq!(t[0]["window"]["first_trip"], trip);
    // The table, with the mount directory given.
    let text = stdout_ok(&sessionfs(&[
        "explain",
        "--gateway-log",
        log.to_str().unwrap(),
        m.mnt.to_str().unwrap(),
    ]));
    assert!(
        text.contains("lane=main (also lane=session:agent:main:main)"),
        "{text}"
    );
    assert!(text.contains("+user:0bad0bad"), "{text}");
    assert!(text.contains("1 takeovers in"), "{text}");
    assert!(text.contains("1 matched"), "{text}");
}

#[test]
fn changes_classifies_everything_after_a_cursor() {
    let m = Mount::new(&[]);
    let f = session(&m, "c.jsonl");
    let jf = m.mnt.join("c.jsonl.journal");
    let cursor = || {
        let recs = read_jsonl(&jf);
        let seq = recs.last().unwrap()["seq"].as_u64().unwrap();
        (
            seq.to_string(),
            fs::metadata(&jf).unwrap().len().to_string(),
        )
    };
    let me = std::process::id().to_string();

    // Reads only: nothing happened (by seq and by offset).
    let (seq, off) = cursor();
    fs::read(&f).unwrap();
    chmod(&f, 0o644);
    for by in [["--since", seq.as_str()], ["--since-offset", off.as_str()]] {
        let v = changes(&f, &by);
        assert_eq!(v["verdict"], "nothing", "{v}");
        assert!(
            v["changes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["class"] == "read")
        );
        assert!(
            v["changes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["class"] == "noop")
        );
        assert_eq!(v["next_offset"], fs::metadata(&jf).unwrap().len());
    }

    // The asking runner's own append (its pid: by default the parent of `sessionfs`).
    let (seq, off) = cursor();
    append_line(
        &f,
        &json!({"type": "message", "id": "0000aaaa", "parentId": null, "timestamp": "t",
                            "message": {"role": "assistant"}}),
    );
    assert_eq!(changes(&f, &["--since", &seq])["verdict"], "own-appends");
    assert_eq!(
        changes(&f, &["--since", &seq, "--pid", &me])["verdict"],
        "own-appends"
    );
    assert_eq!(
        changes(&f, &["--since", &seq, "--pid", "1"])["verdict"],
        "foreign-appends"
    );

    // Another process appends: mergeable by entry id.
    let (seq2, off2) = cursor();
    let st = Command::new("python3")
        .arg("-c")
        .arg("import sys; open(sys.argv[1], 'a').write('{\"type\":\"custom\",\"customType\":\"x\",\"id\":\"0000bbbb\",\"parentId\":null,\"timestamp\":\"t\"}\\n')")
        .arg(&f)
        .status()
        .unwrap();
    assert!(st.success());
    let v = changes(&f, &["--since-offset", &off2]);
    assert_eq!(v["verdict"], "foreign-appends", "{v}");
    assert_eq!(v["foreign_entries"][0]["id"], "0000bbbb");
    let w = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["op"] == "write")
        .unwrap();
    assert_eq!(w["own"], false);
    assert_eq!(w["lock"], "none");
    assert_eq!(w["class"], "append");
    // From the earlier cursor: own and foreign appends: foreign wins.
    assert_eq!(
        changes(&f, &["--since-offset", &off])["verdict"],
        "foreign-appends"
    );

    // A real chmod: metadata.
    let (seq3, _) = cursor();
    chmod(&f, 0o600);
    assert_eq!(changes(&f, &["--since", &seq3])["verdict"], "metadata");

    // A truncate: reload.
    let (seq4, _) = cursor();
    fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(10)
        .unwrap();
    let v = changes(&f, &["--since", &seq4]);
    assert_eq!(v["verdict"], "rewrite", "{v}");
    assert!(!v["removed"].as_array().unwrap().is_empty());
    assert_eq!(changes(&f, &["--since", &seq2])["verdict"], "rewrite");

    // The table ends with the verdict and the next cursors.
    let text = stdout_ok(&sessionfs(&[
        "changes",
        "--since",
        &seq4,
        f.to_str().unwrap(),
    ]));
    let last = text.lines().last().unwrap();
    assert!(last.starts_with("verdict: rewrite"), "{text}");
    assert!(last.contains("--since-offset"), "{text}");

    // Bad cursors: one line saying what to do.
    fails_with(
        &sessionfs(&["changes", "--since-offset", "3", f.to_str().unwrap()]),
        "not a record boundary",
    );
    fails_with(
        &sessionfs(&[
            "changes",
            "--since-offset",
            "999999999",
            f.to_str().unwrap(),
        ]),
        "past the end",
    );
    let out = sessionfs(&["changes", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "a cursor is required");
}

#[test]
fn one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("x.jsonl");
    fs::write(&plain, HEADER).unwrap();
    let p = plain.to_str().unwrap();
    fails_with(&sessionfs(&["explain", p]), "not on a sessionfs mount");
    fails_with(
        &sessionfs(&["changes", "--since", "0", p]),
        "not on a sessionfs mount",
    );
    let m = Mount::new(&[]);
    // Made in the backing directory: the mount never journaled it.
    fs::write(m.src.join("quiet.jsonl"), HEADER).unwrap();
    let q = m.mnt.join("quiet.jsonl");
    fails_with(
        &sessionfs(&["explain", q.to_str().unwrap()]),
        "no journal records",
    );
    let out = sessionfs(&["explain", "--since", "yesterday", q.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad --since") && err.trim_end().lines().count() == 1,
        "{err}"
    );
    fails_with(
        &sessionfs(&["explain", m.mnt.to_str().unwrap()]),
        "is a directory",
    );
}

/// The holder's stats and other processes' changes are journaled in the order they
/// happened: a stat journaled after a chmod saw it, one journaled before did not.
/// (Before the fix the stat was taken, then journaled after a racing chmod that it
/// had not seen: explain called the chmod absorbed by that fence read, while the
/// gateway's fence, which held the older ctime, tripped on it.)
#[test]
fn holder_stats_and_racing_chmods_are_journaled_in_the_order_they_happened() {
    let m = Mount::new(&[]);
    let f = session(&m, "race.jsonl");
    append_line(&f, &json!({"type": "message", "id": "r1"}));
    const HOLDER: &str = r#"
import json, os, sys
f = sys.argv[1]
fd = os.open(f + ".lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
os.write(fd, (json.dumps({"pid": os.getpid(), "createdAt": "2026-12-06T00:00:00.000Z"}) + "\n").encode())
open(sys.argv[2], "w").close()
for _ in range(4000):
    os.stat(f)
os.close(fd)
os.unlink(f + ".lock")
"#;
    let ready = m.src.parent().unwrap().join("holder.ready");
    let mut holder = Command::new("python3")
        .args(["-c", HOLDER])
        .arg(&f)
        .arg(&ready)
        .spawn()
        .unwrap();
    assert!(common::wait_for(10, || ready.exists()));
    let mut i = 0u32;
    while holder.try_wait().unwrap().is_none() && i < 20_000 {
        chmod(&f, if i.is_multiple_of(2) { 0o604 } else { 0o644 });
        i += 1;
    }
    assert!(holder.wait().unwrap().success());
    let recs = read_jsonl(&m.mnt.join(".journal"));
    let mut ctime: Option<u64> = None;
    let (mut stats, mut bad) = (0, Vec::new());
    for r in recs.iter().filter(|r| r["path"] == "race.jsonl") {
        let c = r["after"]["ctime_ns"].as_u64();
        match r["op"].as_str() {
            Some("stat") => {}
            // Every change that says its state after: the ctime a later stat must see.
            Some(_) if r["result"] == "ok" && c.is_some() => ctime = c,
            _ => {}
        }
        if r["op"] == "stat" {
            stats += 1;
            if let (Some(want), Some(got)) = (ctime, c)
                && got != want
            {
                bad.push((r["seq"].clone(), got, want));
            }
        }
    }
    eprintln!(
        "{stats} holder stats, {i} chmods, {} out of order",
        bad.len()
    );
    assert!(stats > 100, "too few holder stats journaled: {stats}");
    assert!(
        bad.is_empty(),
        "stats that did not see the chmod journaled before them: {:?}",
        &bad[..bad.len().min(5)]
    );
}

/// The holder's stat right after its lock create reaches the daemon (and is journaled)
/// even when the file's attributes were cached while no lock was held: the create's
/// reply waits for the kernel to drop them. (Before, a thread dropped them a moment
/// later, and a stat in that moment was answered from the cache: no `stat` record,
/// the hold's check unknown to `explain`.)
#[test]
fn the_holders_first_stat_after_the_lock_create_is_journaled() {
    let m = Mount::new(&[]);
    let f = session(&m, "c.jsonl");
    append_line(&f, &json!({"type": "message", "id": "c1"}));
    const HOLDER: &str = r#"
import json, os, sys
f = sys.argv[1]
for _ in range(300):
    os.stat(f)
    os.stat(f)
    fd = os.open(f + ".lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.write(fd, (json.dumps({"pid": os.getpid()}) + "\n").encode())
    os.stat(f)
    os.close(fd)
    os.unlink(f + ".lock")
"#;
    let out = Command::new("python3")
        .args(["-c", HOLDER])
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs = read_jsonl(&m.mnt.join(".journal"));
    let stats = recs
        .iter()
        .filter(|r| r["path"] == "c.jsonl" && r["op"] == "stat")
        .count();
    let holds = recs
        .iter()
        .filter(|r| r["path"] == "c.jsonl.lock" && r["op"] == "lock-acquire")
        .count();
    eprintln!("{holds} holds, {stats} holder stats journaled");
    assert_eq!(holds, 300);
    assert_eq!(
        stats, 300,
        "a holder stat was answered from the kernel's cache"
    );
}
