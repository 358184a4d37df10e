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
    // Read in 16-byte pieces while the counters move: the pieces are one rendering.
    for _ in 0..50 {
        use std::io::Read;
        let mut h = std::fs::File::open(m.mnt.join(".status")).unwrap();
        let (mut all, mut buf) = (Vec::new(), [0u8; 16]);
        loop {
            let n = h.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            let _ = std::fs::metadata(m.mnt.join("f1.jsonl"));
        }
        serde_json::from_slice::<serde_json::Value>(&all)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&all)));
    }
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

/// Messages with the descriptors attached to them (`SCM_RIGHTS`), as systemd's notify
/// socket receives `FDSTORE=1`, until `done` holds or `secs` pass.
fn collect_fds(
    sock: &UnixDatagram,
    secs: u64,
    done: impl Fn(&[(String, Vec<std::os::fd::OwnedFd>)]) -> bool,
) -> Vec<(String, Vec<std::os::fd::OwnedFd>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::{AsRawFd, FromRawFd};
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let t = Instant::now();
    let mut got = Vec::new();
    while t.elapsed() < Duration::from_secs(secs) && !done(&got) {
        let mut buf = vec![0u8; 4096];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let Ok(m) = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) else {
            continue;
        };
        let mut fds = Vec::new();
        for c in m.cmsgs().into_iter().flatten() {
            if let ControlMessageOwned::ScmRights(v) = c {
                // SAFETY: descriptors just received, owned by nothing else.
                fds.extend(
                    v.into_iter()
                        .map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        let n = m.bytes;
        got.push((String::from_utf8_lossy(&buf[..n]).into_owned(), fds));
    }
    got
}

/// Start `sessionfs mount -f` as systemd starts a unit with an fd store: `$FDSTORE`,
/// and, after a crash or an upgrade, the stored descriptors as fds 3 and 4 with
/// `$LISTEN_FDS`, `$LISTEN_FDNAMES` and `$LISTEN_PID` (the shell's `$$`, which `exec`
/// keeps).
fn start_unit(
    src: &Path,
    mnt: &Path,
    state: &Path,
    sock: &Path,
    stored: Option<(&std::os::fd::OwnedFd, &std::os::fd::OwnedFd)>,
) -> std::process::Child {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(r#"[ -n "$SD_PASS" ] && export LISTEN_PID=$$ LISTEN_FDS=2 LISTEN_FDNAMES=sessionfs-fuse:sessionfs-root; exec "$0" "$@""#)
        .arg(common::bin())
        .args(["mount", "-f", "--source"])
        .arg(src)
        .arg("--state-dir")
        .arg(state)
        .arg(mnt)
        .env("NOTIFY_SOCKET", sock)
        .env("FDSTORE", "4")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some((f, r)) = stored {
        c.env("SD_PASS", "1");
        let (f, r) = (f.as_raw_fd(), r.as_raw_fd());
        // SAFETY: dup2 is async-signal-safe; the child gets the stored descriptors as
        // 3 and 4 (dup2 clears close-on-exec), as systemd passes them.
        unsafe {
            c.pre_exec(move || {
                let (f2, r2) = (libc::dup(f), libc::dup(r));
                if f2 < 0 || r2 < 0 || libc::dup2(f2, 3) < 0 || libc::dup2(r2, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    c.spawn().unwrap()
}

/// systemd's fd store (`FileDescriptorStoreMax=`): the daemon stores its FUSE
/// connection and backing root (`FDSTORE=1`); after `kill -9` the unit is started
/// again with them and resumes on the live mount, and `sessionfs upgrade` makes the
/// daemon exit 75 for the same restart. A writer appending every 2 ms through both
/// sees no error; every line is in the file once; nothing is journaled `external`.
#[test]
fn the_fd_store_keeps_the_mount_across_a_crash_and_an_upgrade() {
    use std::io::Write;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
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
    let mut child = start_unit(&src, &mnt, &state, &sock_path, None);
    let msgs = collect_fds(&sock, 15, |g| {
        g.iter().filter(|(m, _)| m.starts_with("FDSTORE=1")).count() == 2
            && g.iter().any(|(m, _)| m.starts_with("READY=1"))
    });
    let mut store = std::collections::HashMap::new();
    for (m, mut fds) in msgs {
        if let Some(name) = m.strip_prefix("FDSTORE=1\nFDNAME=") {
            assert_eq!(fds.len(), 1, "{m}");
            store.insert(name.to_string(), fds.pop().unwrap());
        }
    }
    let (fuse, root) = (
        store.get("sessionfs-fuse").expect("the FUSE fd stored"),
        store.get("sessionfs-root").expect("the root fd stored"),
    );
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(mnt.join(".status")).unwrap()).unwrap();
    assert_eq!(status["restart"], "fd-store", "{status}");
    let f = mnt.join("t.jsonl");
    let stop = Arc::new(AtomicBool::new(false));
    let w = {
        let (f, stop) = (f.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut acked, mut errors, mut longest) = (0usize, Vec::new(), Duration::ZERO);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(&f)
                    .and_then(|mut h| writeln!(h, "{{\"type\":\"message\",\"id\":\"m{acked}\"}}"));
                longest = longest.max(t.elapsed());
                match r {
                    Ok(()) => acked += 1,
                    Err(e) => errors.push(e.to_string()),
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            (acked, errors, longest)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    // A crash: systemd would restart the unit (RestartSec=100ms) with the stored fds.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait();
    assert!(common::is_mounted(&mnt), "the mount went with the daemon");
    // The unit's ExecStartPre leaves a mount the fd store keeps alone.
    let pre = Command::new(common::bin())
        .args(["umount", "--stale-only"])
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(
        pre.status.success(),
        "{}",
        String::from_utf8_lossy(&pre.stderr)
    );
    assert!(
        common::is_mounted(&mnt),
        "ExecStartPre unmounted the kept mount"
    );
    let t = Instant::now();
    let mut child = start_unit(&src, &mnt, &state, &sock_path, Some((fuse, root)));
    let ready = collect(&sock, 15, |g| g.iter().any(|m| m.starts_with("READY=1")));
    assert!(ready.iter().any(|m| m.starts_with("READY=1")), "{ready:?}");
    let restart_ms = t.elapsed().as_millis();
    std::thread::sleep(Duration::from_millis(300));
    // An upgrade: the daemon drains and exits 75 (RestartForceExitStatus=75), and
    // systemd starts the unit again with the stored fds.
    let up = {
        let mnt = mnt.clone();
        std::thread::spawn(move || {
            Command::new(common::bin())
                .arg("upgrade")
                .arg(&mnt)
                .output()
                .unwrap()
        })
    };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(75), "the upgrade exit status");
    let mut child = start_unit(&src, &mnt, &state, &sock_path, Some((fuse, root)));
    let up = up.join().unwrap();
    assert!(
        up.status.success(),
        "upgrade: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (acked, errors, longest) = w.join().unwrap();
    let data = std::fs::read_to_string(&f).unwrap();
    let recs = common::read_jsonl(&mnt.join(".journal"));
    eprintln!(
        "fd store: restart after kill -9 in {restart_ms} ms, {}; {acked} appends, {} errors, longest {longest:.0?}",
        String::from_utf8_lossy(&up.stdout).trim(),
        errors.len()
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(data.lines().count(), acked, "lines vs acknowledged appends");
    assert!(
        recs.iter().all(|r| r["op"] != "external"),
        "an external record"
    );
    common::run_ok(Command::new(common::bin()).arg("umount").arg(&mnt));
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
