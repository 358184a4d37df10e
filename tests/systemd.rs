//! systemd: the notify protocol against a test socket (`$NOTIFY_SOCKET`), as a
//! `Type=notify` unit sees it, and the unit files through `systemd-analyze verify`.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Mount;

/// The messages received on `sock` until `done` holds or `secs` pass.
fn collect(sock: &UnixDatagram, secs: u64, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let t = Instant::now();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    while t.elapsed() < Duration::from_secs(secs) && !done(&got) {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

/// READY=1 once the mount is live (not before: the mountpoint answers as a sessionfs
/// mount when it arrives), STATUS= lines, WATCHDOG=1 at half of `WATCHDOG_USEC`, and
/// STOPPING=1 when it unmounts; the foreground daemon then exits 0.
#[test]
fn notify_protocol_ready_status_watchdog_stopping() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, mnt, state) = (
        tmp.path().join("src"),
        tmp.path().join("mnt"),
        tmp.path().join("st"),
    );
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    let sock_path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let _g = Mount::adopt(&mnt, &src, &state);
    let mut child = Command::new(common::bin())
        .arg("mount")
        .arg("-f")
        .arg("--source")
        .arg(&src)
        .arg("--state-dir")
        .arg(&state)
        .arg(&mnt)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = collect(&sock, 15, |g| !g.is_empty());
    assert!(
        first.first().is_some_and(|m| m.starts_with("READY=1\n")),
        "{first:?}"
    );
    assert!(
        common::is_mounted(&mnt),
        "READY=1 before the mount was live"
    );
    assert!(first[0].contains("STATUS=serving "), "{first:?}");
    std::fs::write(
        mnt.join("t.jsonl"),
        b"{\"type\":\"session\",\"id\":\"s\"}\n",
    )
    .unwrap();
    // Pings every 200 ms, each with a status line that counts the records.
    let pings = collect(&sock, 5, |g| {
        g.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3
    });
    let n = pings.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!(n >= 3, "{pings:?}");
    assert!(
        pings
            .iter()
            .any(|m| m.contains("STATUS=serving ") && m.contains("records/s")),
        "{pings:?}"
    );
    common::run_ok(Command::new(common::bin()).arg("umount").arg(&mnt));
    let end = collect(&sock, 10, |g| g.iter().any(|m| m.contains("STOPPING=1")));
    assert!(end.iter().any(|m| m.starts_with("STOPPING=1")), "{end:?}");
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "daemon did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

/// Without `$NOTIFY_SOCKET` nothing changes (the other tests); with one that names
/// nothing, the mount still works.
#[test]
fn a_dead_notify_socket_does_not_stop_the_mount() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, mnt, state) = (
        tmp.path().join("src"),
        tmp.path().join("mnt"),
        tmp.path().join("st"),
    );
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    let _g = Mount::adopt(&mnt, &src, &state);
    common::run_ok(
        Command::new(common::bin())
            .arg("mount")
            .arg("--source")
            .arg(&src)
            .arg("--state-dir")
            .arg(&state)
            .arg(&mnt)
            .env("NOTIFY_SOCKET", tmp.path().join("nobody-listens")),
    );
    std::fs::write(mnt.join("a"), b"x").unwrap();
    assert_eq!(std::fs::read(src.join("a")).unwrap(), b"x");
}

/// Every unit file passes `systemd-analyze verify` (with the binary path pointed at
/// this build, and the gateway unit the drop-in extends stubbed).
#[test]
fn unit_files_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed: skipped");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let d = tempfile::tempdir().unwrap();
    let fix = |name: &str, dest: &str| {
        let text = std::fs::read_to_string(root.join(name))
            .unwrap()
            .replace("/usr/local/bin/sessionfs", common::bin());
        let p = d.path().join(dest);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    };
    let system = fix("sessionfs@.service", "system/sessionfs@.service");
    let user = fix("user/sessionfs@.service", "user/sessionfs@.service");
    let all = fix("sessionfs-all@.service", "system/sessionfs-all@.service");
    let user_all = fix("user/sessionfs-all.service", "user/sessionfs-all.service");
    std::os::unix::fs::symlink(&all, d.path().join("system/sessionfs-all@operator.service"))
        .unwrap();
    std::fs::write(
        d.path().join("system/openclaw-gateway.service"),
        "[Unit]\nDescription=stub\n[Service]\nExecStart=/bin/true\n",
    )
    .unwrap();
    fix(
        "openclaw-gateway.service.d/sessionfs.conf",
        "system/openclaw-gateway.service.d/sessionfs.conf",
    );
    // An instance of each template, linked to the template as systemctl would.
    for (dir, tpl) in [("system", &system), ("user", &user)] {
        let inst = d
            .path()
            .join(dir)
            .join("sessionfs@home-operator-.openclaw-agents-main-sessions.service");
        std::os::unix::fs::symlink(tpl, &inst).unwrap();
        let mut c = Command::new("systemd-analyze");
        c.arg("verify");
        if dir == "user" {
            // The user manager wants a runtime dir (no session here).
            let rt = d.path().join("runtime");
            std::fs::create_dir_all(&rt).unwrap();
            c.arg("--user").env("XDG_RUNTIME_DIR", &rt);
        }
        c.arg(&inst);
        if dir == "system" {
            c.arg(d.path().join("system/openclaw-gateway.service"));
            c.arg(d.path().join("system/sessionfs-all@operator.service"));
        } else {
            c.arg(&user_all);
        }
        let out = c
            .env(
                "SYSTEMD_UNIT_PATH",
                format!("{}:", d.path().join(dir).display()),
            )
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        // Lines about the host's own units (none here) would not be ours: only fail on
        // lines that name our files.
        let ours: Vec<&str> = err
            .lines()
            .filter(|l| l.contains("sessionfs") || l.contains("openclaw-gateway"))
            .collect();
        assert!(
            out.status.success() && ours.is_empty(),
            "{dir}: {}\n{err}",
            out.status
        );
    }
}

/// `sessionfs status`: the mount's `.status` (root only, like `.journal`) as JSON and
/// as a table: daemon pid, FUSE requests by op, journal seq, locks.
#[test]
fn status_reports_requests_journal_and_locks() {
    let m = Mount::new(&["-o", "allow_other"]);
    for i in 0..20 {
        std::fs::write(
            m.mnt.join(format!("f{i}.jsonl")),
            b"{\"type\":\"session\"}\n",
        )
        .unwrap();
    }
    let out = common::run_ok(
        Command::new(common::bin())
            .args(["status", "--json"])
            .arg(&m.mnt),
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        v["pid"].as_i64(),
        common::daemon_pid(&m.mnt).map(i64::from),
        "{v}"
    );
    assert!(v["requests"]["write"].as_u64() >= Some(20), "{v}");
    assert!(v["requests"]["create"].as_u64() >= Some(20), "{v}");
    // Recent rates: over the last 10 s of once-a-second samples. A second burst of
    // stats, then two samples later the rate over them is above zero.
    let t = std::time::Instant::now();
    for _ in 0..2000 {
        let _ = std::fs::metadata(m.mnt.join("f0.jsonl"));
        let _ = std::fs::metadata(m.mnt.join("nope"));
    }
    std::thread::sleep(std::time::Duration::from_millis(2200).saturating_sub(t.elapsed()));
    let v2: serde_json::Value = serde_json::from_str(
        common::run_ok(
            Command::new(common::bin())
                .args(["status", "--json"])
                .arg(&m.mnt),
        )
        .trim(),
    )
    .unwrap();
    let recent = v2["requests_per_s_recent"].as_f64().unwrap_or(0.0);
    let trips = v2["round_trips_per_s_recent"].as_f64().unwrap_or(0.0);
    assert!(recent > 0.0 && trips > 0.0 && trips <= recent, "{v2}");
    assert!(v["journal"]["next_seq"].as_u64() > Some(40), "{v}");
    assert_eq!(v["locks"]["held"], 0, "{v}");
    assert_eq!(v["mountpoint"].as_str(), m.mnt.to_str(), "{v}");
    assert!(
        v["source"].as_str().is_some_and(|s| s.ends_with("/src")),
        "{v}"
    );
    // Every live mount, as a table.
    let table = common::run_ok(Command::new(common::bin()).arg("status"));
    assert!(table.starts_with("MOUNTPOINT"), "{table}");
    assert!(table.contains(m.mnt.to_str().unwrap()), "{table}");
    // Process details and paths: root's, like `.journal`.
    let st = std::fs::metadata(m.mnt.join(".status")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&st.permissions()) & 0o777,
        0o400
    );
}
