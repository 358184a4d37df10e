//! Stat that moves only when something changed: OpenClaw's fence fingerprint
//! `{dev, ino, size, mtimeNs, ctimeNs}` (as `fs.stat(file, {bigint: true})` reads it)
//! through a real mount, for changes that change nothing and for real ones.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use common::{Mount, read_jsonl};

/// The fence fingerprint of `p`, nanoseconds, as the mount reports it.
fn fence(p: &Path) -> (u64, u64, u64, i64, i64) {
    let m = std::fs::metadata(p).unwrap();
    (
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        m.ctime() * 1_000_000_000 + m.ctime_nsec(),
    )
}

/// Past the mount's attr TTL (the test mounts use 50 ms), so the next stat asks the
/// daemon.
fn past_ttl() {
    std::thread::sleep(Duration::from_millis(120));
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid C strings and a readable buffer of value.len() bytes.
    let r = unsafe {
        libc::setxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr: {}", std::io::Error::last_os_error());
}

/// Rewrite `p` in place (truncate to 0, write `data`, close) as OpenClaw's header
/// migration does.
fn rewrite(p: &Path, data: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    f.set_len(0).unwrap();
    f.write_all(data).unwrap();
}

/// Wait until the journal holds `n` release records of `path` (RELEASE is
/// asynchronous: the rewrite's verdict is made there).
fn wait_releases(m: &Mount, path: &str, n: usize) {
    let ok = common::wait_for(5, || {
        read_jsonl(&m.mnt.join(".journal"))
            .iter()
            .filter(|r| r["op"] == "release" && r["path"] == path)
            .count()
            >= n
    });
    assert!(ok, "release records of {path}");
    past_ttl();
}

const LINES: &[u8] = b"{\"type\":\"session\",\"id\":\"s1\"}\n{\"type\":\"message\",\"id\":\"a1\",\"message\":{\"role\":\"user\"}}\n";

#[test]
fn changes_that_change_nothing_leave_the_fence_and_real_ones_move_it() {
    let m = Mount::new(&["--ttl-ms", "50"]);
    let t = m.mnt.join("t.jsonl");
    std::fs::write(&t, LINES).unwrap();
    set_xattr(&t, "user.k", b"v");
    past_ttl();
    let f0 = fence(&t);
    std::thread::sleep(Duration::from_millis(20));

    // Same mode, same owner, same xattr value.
    let mode = std::fs::metadata(&t).unwrap().permissions().mode() & 0o7777;
    std::fs::set_permissions(&t, std::fs::Permissions::from_mode(mode)).unwrap();
    let md = std::fs::metadata(&t).unwrap();
    std::os::unix::fs::chown(&t, Some(md.uid()), Some(md.gid())).unwrap();
    set_xattr(&t, "user.k", b"v");
    past_ttl();
    assert_eq!(fence(&t), f0, "a no-op metadata change moved the fence");

    // An in-place rewrite that puts back the same bytes.
    rewrite(&t, LINES);
    wait_releases(&m, "t.jsonl", 2);
    assert_eq!(fence(&t), f0, "an identical rewrite moved the fence");
    assert_eq!(std::fs::read(&t).unwrap(), LINES);

    // A backing ctime that moves alone (same-mode chmod underneath).
    std::fs::set_permissions(m.src.join("t.jsonl"), std::fs::Permissions::from_mode(mode)).unwrap();
    past_ttl();
    assert_eq!(fence(&t), f0, "backing ctime drift moved the fence");
    let recs = read_jsonl(&m.mnt.join(".journal"));
    let classes: Vec<(String, String)> = recs
        .iter()
        .filter(|r| r["path"] == "t.jsonl" && r["op"] != "open")
        .map(|r| {
            (
                r["op"].as_str().unwrap().to_string(),
                r["class"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    for want in [
        ("chmod", "noop"),
        ("chown", "noop"),
        ("ctime-drift", "noop"),
    ] {
        assert!(
            classes.iter().any(|(o, c)| o == want.0 && c == want.1),
            "no {want:?} in {classes:?}"
        );
    }
    assert!(
        !recs.iter().any(|r| r["op"] == "external"),
        "drift journaled as external: {classes:?}"
    );
    let rel = recs
        .iter()
        .rev()
        .find(|r| r["op"] == "release" && r["access"] == "write")
        .unwrap();
    assert_eq!(rel["class"], "noop", "the identical rewrite's release");

    // The remembered times survive a daemon restart.
    let (src, state) = (m.src.clone(), m.state.clone());
    let mnt = m.mnt.clone();
    let mut m = m;
    m.unmount();
    common::mount_at(&src, &mnt, &state, &["--ttl-ms", "50"]);
    let _again = Mount::adopt(&mnt, &src, &state);
    // (A new mount is a new FUSE device: `dev` moves with any remount.)
    let f_restart = fence(&t);
    assert_eq!(
        (f_restart.1, f_restart.2, f_restart.3, f_restart.4),
        (f0.1, f0.2, f0.3, f0.4)
    );

    // Real changes move it: a different rewrite, an append, a real chmod.
    std::thread::sleep(Duration::from_millis(20));
    rewrite(
        &t,
        &LINES[..LINES.len() - 1]
            .iter()
            .chain(b" \n")
            .copied()
            .collect::<Vec<_>>(),
    );
    past_ttl();
    let f1 = fence(&t);
    assert_ne!(
        (f1.3, f1.4),
        (f0.3, f0.4),
        "a different rewrite did not move it"
    );
    std::thread::sleep(Duration::from_millis(20));
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&t)
        .unwrap()
        .write_all(b"{\"type\":\"message\",\"id\":\"b2\"}\n")
        .unwrap();
    past_ttl();
    let f2 = fence(&t);
    assert!(f2.2 > f1.2 && f2.4 != f1.4, "an append did not move it");
    std::thread::sleep(Duration::from_millis(20));
    std::fs::set_permissions(&t, std::fs::Permissions::from_mode(mode ^ 0o040)).unwrap();
    past_ttl();
    assert_ne!(fence(&t).4, f2.4, "a real chmod did not move ctime");
}

#[test]
fn strict_stat_moves_the_fence_as_ext4_does() {
    let m = Mount::new(&["--ttl-ms", "50", "--strict-stat"]);
    let t = m.mnt.join("t.jsonl");
    std::fs::write(&t, LINES).unwrap();
    past_ttl();
    let f0 = fence(&t);
    std::thread::sleep(Duration::from_millis(20));
    let mode = std::fs::metadata(&t).unwrap().permissions().mode() & 0o7777;
    std::fs::set_permissions(&t, std::fs::Permissions::from_mode(mode)).unwrap();
    past_ttl();
    assert_ne!(
        fence(&t).4,
        f0.4,
        "--strict-stat: a same-mode chmod must move ctime"
    );
    let f1 = fence(&t);
    std::thread::sleep(Duration::from_millis(20));
    std::fs::set_permissions(m.src.join("t.jsonl"), std::fs::Permissions::from_mode(mode)).unwrap();
    past_ttl();
    assert_ne!(fence(&t).4, f1.4, "--strict-stat: backing drift must show");
}

/// Found in review: a same-size change around the mount that also puts mtime back
/// (`cp -p`, `rsync -t --inplace`) changes only ctime, like drift. The mount must not
/// serve the old bytes from its page cache, and a transcript whose lines changed is
/// `external`, not drift.
#[test]
fn drift_never_hides_changed_bytes() {
    let m = Mount::new(&["--ttl-ms", "50"]);
    for name in ["t.jsonl", "plain.txt"] {
        let p = m.mnt.join(name);
        std::fs::write(&p, b"{\"type\":\"message\",\"id\":\"pay10eur\"}\n").unwrap();
        // Index the transcript as the gateway's appends would, then read it (cache).
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"{\"type\":\"message\",\"id\":\"second01\"}\n")
            .unwrap();
        assert!(
            std::fs::read(&p)
                .unwrap()
                .starts_with(b"{\"type\":\"message\",\"id\":\"pay10")
        );
        past_ttl();
        let _ = fence(&p);
        let backing = m.src.join(name);
        let md = std::fs::metadata(&backing).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let new = b"{\"type\":\"message\",\"id\":\"pay99eur\"}\n{\"type\":\"message\",\"id\":\"second01\"}\n";
        std::fs::write(&backing, new).unwrap();
        let mtime = std::fs::FileTimes::new().set_modified(md.modified().unwrap());
        std::fs::File::options()
            .write(true)
            .open(&backing)
            .unwrap()
            .set_times(mtime)
            .unwrap();
        past_ttl();
        let _ = fence(&p);
        assert_eq!(
            std::fs::read(&p).unwrap(),
            new,
            "{name}: stale bytes served"
        );
    }
    let recs = read_jsonl(&m.mnt.join(".journal"));
    assert!(
        recs.iter()
            .any(|r| r["op"] == "external" && r["path"] == "t.jsonl"),
        "the transcript's changed lines were taken for drift"
    );
}

/// Found in review: metadata changed during an in-place rewrite that puts back the
/// same bytes must still move the fence.
#[test]
fn a_rewrite_with_a_chmod_inside_is_no_identical_rewrite() {
    let m = Mount::new(&["--ttl-ms", "50"]);
    let t = m.mnt.join("t.jsonl");
    std::fs::write(&t, LINES).unwrap();
    past_ttl();
    let f0 = fence(&t);
    std::thread::sleep(Duration::from_millis(20));
    {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&t)
            .unwrap();
        f.write_all(LINES).unwrap();
        f.set_permissions(std::fs::Permissions::from_mode(0o640))
            .unwrap();
    }
    wait_releases(&m, "t.jsonl", 2);
    assert_ne!(fence(&t).4, f0.4, "a chmod inside the rewrite was hidden");
}

/// Found in review: a chmod around the mount, seen as `external`, then undone around
/// the mount: the second change moves ctime with a mode that changed since the last
/// known one, so it is no drift.
#[test]
fn undoing_an_outside_chmod_is_no_drift() {
    let m = Mount::new(&["--ttl-ms", "50"]);
    let t = m.mnt.join("t.jsonl");
    std::fs::write(&t, LINES).unwrap();
    std::fs::set_permissions(&t, std::fs::Permissions::from_mode(0o600)).unwrap();
    past_ttl();
    let _ = fence(&t);
    let backing = m.src.join("t.jsonl");
    std::fs::set_permissions(&backing, std::fs::Permissions::from_mode(0o644)).unwrap();
    past_ttl();
    let f1 = fence(&t);
    std::thread::sleep(Duration::from_millis(20));
    std::fs::set_permissions(&backing, std::fs::Permissions::from_mode(0o600)).unwrap();
    past_ttl();
    assert_ne!(fence(&t).4, f1.4, "the undo was hidden as drift");
}
