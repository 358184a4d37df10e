//! A non-root caller, differentially: the same script run as `nobody` (uid/gid 65534)
//! with the supplementary group `users` (100) on a plain directory and through a
//! sessionfs mount (`-o allow_other`) must give the same results and stat fields.
//!
//! It covers what the root daemon must do on the caller's behalf: create, mkdir,
//! symlink and mknod in a directory writable only through a supplementary group
//! (the backing kernel checks the caller's groups, not the daemon's), and an
//! unprivileged `O_TRUNC` open and `truncate` clearing suid/sgid as ext4 does.

mod common;

use std::os::unix::fs::{PermissionsExt, chown};
use std::path::Path;
use std::process::Command;

use common::Mount;

const NOBODY: u32 = 65534;
const USERS: u32 = 100;

/// Runs as `nobody` with groups [users]; prints one line per step.
const SCRIPT: &str = r#"
import os, stat, sys
os.chdir(sys.argv[1])
os.umask(0o002)
os.setgroups([100]); os.setgid(65534); os.setuid(65534)
def step(name, f):
    try:
        r = f()
        print(name, "ok", "" if r is None else r)
    except OSError as e:
        print(name, "err", os.strerror(e.errno))
def st(p):
    s = os.lstat(p)
    return "mode=%o uid=%d gid=%d size=%d" % (s.st_mode, s.st_uid, s.st_gid, s.st_size)
def create(p):
    os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o664)); return st(p)
step("create-in-group-dir", lambda: create("shared/f"))
step("mkdir-in-group-dir", lambda: (os.mkdir("shared/d", 0o775), st("shared/d"))[1])
step("symlink-in-group-dir", lambda: (os.symlink("f", "shared/l"), st("shared/l"))[1])
step("mkfifo-in-group-dir", lambda: (os.mkfifo("shared/p", 0o644), st("shared/p"))[1])
step("rename-in-group-dir", lambda: (os.rename("shared/f", "shared/g"), st("shared/g"))[1])
step("create-in-other-dir", lambda: create("closed/f"))
step("suid-before", lambda: st("suid"))
step("o-trunc", lambda: os.close(os.open("suid", os.O_WRONLY | os.O_TRUNC)))
step("suid-after-o-trunc", lambda: st("suid"))
step("sgid-before", lambda: st("sgid"))
step("truncate", lambda: os.truncate("sgid", 1))
step("sgid-after-truncate", lambda: st("sgid"))
step("unlink-in-group-dir", lambda: os.unlink("shared/g"))
"#;

/// Lay out the tree (as root) in `dir`, then run the script there as nobody.
fn run(dir: &Path) -> String {
    let shared = dir.join("shared");
    std::fs::create_dir(&shared).unwrap();
    chown(&shared, Some(0), Some(USERS)).unwrap();
    std::fs::set_permissions(&shared, PermissionsExt::from_mode(0o770)).unwrap();
    let closed = dir.join("closed");
    std::fs::create_dir(&closed).unwrap();
    chown(&closed, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&closed, PermissionsExt::from_mode(0o770)).unwrap();
    for (name, mode) in [("suid", 0o4755), ("sgid", 0o2775)] {
        let p = dir.join(name);
        std::fs::write(&p, b"data\n").unwrap();
        chown(&p, Some(NOBODY), Some(NOBODY)).unwrap();
        std::fs::set_permissions(&p, PermissionsExt::from_mode(mode)).unwrap();
    }
    common::run_ok(Command::new("python3").arg("-c").arg(SCRIPT).arg(dir))
}

/// A temp dir `nobody` can traverse.
fn open_tempdir() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), PermissionsExt::from_mode(0o755)).unwrap();
    t
}

#[test]
fn nobody_with_a_supplementary_group() {
    let plain = open_tempdir();
    let native = run(plain.path());

    let m = Mount::new(&["-o", "allow_other"]);
    for p in [m.mnt.parent().unwrap(), &m.src, &m.mnt] {
        std::fs::set_permissions(p, PermissionsExt::from_mode(0o755)).unwrap();
    }
    let mounted = run(&m.mnt);
    println!("plain:\n{native}\nmount:\n{mounted}");

    // The script must exercise what it claims, on the plain directory first.
    for want in [
        "create-in-group-dir ok mode=100664 uid=65534 gid=65534",
        "create-in-other-dir err Permission denied",
        "suid-before ok mode=104755",
        "suid-after-o-trunc ok mode=100755",
        "sgid-after-truncate ok mode=100775",
    ] {
        assert!(native.contains(want), "plain run lacks {want:?}:\n{native}");
    }
    assert_eq!(native, mounted, "plain directory and mount differ");
}

/// uid 0 without CAP_FSETID (dropped from the bounding set, as `docker run
/// --cap-drop FSETID` does): an `O_TRUNC` open and a `truncate` clear suid/sgid, as
/// on ext4, although the caller is root.
#[test]
fn root_without_cap_fsetid_loses_suid_on_truncate() {
    let prepare = |dir: &Path| {
        for (name, mode) in [("suid", 0o4755), ("sgid", 0o2775)] {
            let p = dir.join(name);
            std::fs::write(&p, b"data\n").unwrap();
            std::fs::set_permissions(&p, PermissionsExt::from_mode(mode)).unwrap();
        }
    };
    let act = r#"
import os, sys
os.chdir(sys.argv[1])
caps = int([l for l in open("/proc/self/status") if l.startswith("CapEff:")][0].split()[1], 16)
print("uid", os.getuid(), "fsetid", bool(caps & (1 << 4)))
os.close(os.open("suid", os.O_WRONLY | os.O_TRUNC))
os.truncate("sgid", 1)
for n in ("suid", "sgid"):
    print(n, "%o" % os.stat(n).st_mode)
"#;
    let run = |dir: &Path| -> String {
        prepare(dir);
        common::run_ok(
            Command::new("setpriv")
                .args(["--bounding-set", "-fsetid", "python3", "-c", act])
                .arg(dir),
        )
    };
    let plain = tempfile::tempdir().unwrap();
    let native = run(plain.path());
    let m = Mount::new(&[]);
    let mounted = run(&m.mnt);
    println!("plain:\n{native}\nmount:\n{mounted}");
    assert!(native.contains("uid 0 fsetid False"), "{native}");
    assert!(
        native.contains("suid 100755") && native.contains("sgid 100775"),
        "{native}"
    );
    assert_eq!(native, mounted, "plain directory and mount differ");
}
