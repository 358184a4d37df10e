//! `mount -t fuse.sessionfs` and an `/etc/fstab` line, for real, through the mount(8)
//! helper `mount/mount.fuse.sessionfs`: every mount option can be said there as
//! `key=value` (or a bare word), generic fstab options are left to mount(8), and an
//! unknown option is refused with one line.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::Mount;

const HELPER: &str = "/sbin/mount.fuse.sessionfs";

/// Installs a mount(8) helper that runs this checkout's script with this build's
/// binary, and puts back what was there on drop.
struct Helper {
    saved: Option<Vec<u8>>,
}

impl Helper {
    fn install() -> Helper {
        let saved = std::fs::read(HELPER).ok();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("mount/mount.fuse.sessionfs");
        std::fs::write(
            HELPER,
            format!(
                "#!/bin/sh\nSESSIONFS_BIN='{}' exec sh '{}' \"$@\"\n",
                common::bin(),
                script.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(HELPER, std::fs::Permissions::from_mode(0o755)).unwrap();
        Helper { saved }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        match &self.saved {
            Some(b) => {
                let _ = std::fs::write(HELPER, b);
            }
            None => {
                let _ = std::fs::remove_file(HELPER);
            }
        }
    }
}

fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let (src, mnt, state) = (
        t.path().join("src"),
        t.path().join("mnt"),
        t.path().join("st"),
    );
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    (t, src, mnt, state)
}

/// The number of threads of the daemon serving `mnt`.
fn daemon_threads(mnt: &Path) -> usize {
    let pid = common::daemon_pid(mnt).expect("daemon pid");
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

#[test]
fn mount_t_and_fstab_take_every_option() {
    let _h = Helper::install();
    // mount -t fuse.sessionfs with key=value options and generic ones mixed in.
    let (_t, src, mnt, state) = dirs();
    let _g = Mount::adopt(&mnt, &src, &state);
    let opts = format!(
        "state_dir={},journal_max_size=2MiB,journal_max_age=2d,threads=5,ttl_ms=0,salvage_max_size=4MiB,no_reap,nofail,noatime",
        state.display()
    );
    common::run_ok(
        Command::new("mount")
            .args(["-t", "fuse.sessionfs", "-o", &opts])
            .arg(&src)
            .arg(&mnt),
    );
    assert!(common::is_mounted(&mnt));
    std::fs::write(
        mnt.join("t.jsonl"),
        b"{\"type\":\"session\",\"id\":\"s\"}\n",
    )
    .unwrap();
    common::wait_for(5, || {
        std::fs::read_dir(state.join("segments")).is_ok_and(|mut d| d.next().is_some())
    });
    assert!(
        std::fs::read_dir(state.join("segments")).unwrap().count() > 0,
        "state_dir= not used"
    );
    // threads=5: five FUSE workers (plus the daemon's own threads) instead of two.
    let five = daemon_threads(&mnt);
    common::unmount(&mnt);

    // The same through an fstab line, `mount -T <fstab> <mountpoint>`: no journal.
    let (_t2, src2, mnt2, state2) = dirs();
    let _g2 = Mount::adopt(&mnt2, &src2, &state2);
    let fstab = _t2.path().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "# test\n{} {} fuse.sessionfs state_dir={},no_journal,threads=2,nofail,x-systemd.after=network.target 0 0\n",
            src2.display(),
            mnt2.display(),
            state2.display()
        ),
    )
    .unwrap();
    common::run_ok(Command::new("mount").arg("-T").arg(&fstab).arg(&mnt2));
    assert!(common::is_mounted(&mnt2));
    std::fs::write(mnt2.join("u.jsonl"), b"{}\n").unwrap();
    assert_eq!(std::fs::read(src2.join("u.jsonl")).unwrap(), b"{}\n");
    assert!(
        std::fs::metadata(mnt2.join(".journal")).is_err(),
        "no_journal: no .journal"
    );
    let two = daemon_threads(&mnt2);
    assert!(
        five >= two + 3,
        "threads=5 gave {five} threads, threads=2 {two}"
    );
    common::unmount(&mnt2);

    // An unknown option: one line, nothing mounted.
    let (_t3, src3, mnt3, state3) = dirs();
    let _g3 = Mount::adopt(&mnt3, &src3, &state3);
    let out = Command::new("mount")
        .args(["-t", "fuse.sessionfs", "-o"])
        .arg(format!("state_dir={},bogus=1", state3.display()))
        .arg(&src3)
        .arg(&mnt3)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown mount option 'bogus=1'"), "{err}");
    assert!(!common::is_mounted(&mnt3));
}

/// `sessionfs mount-all --root R`: one mount over `R/agents`, so an agent created
/// after the mount has its first transcript write journaled (no window in which its
/// sessions directory is bare); a second run is a no-op; a per-agent mount below is
/// refused with one line.
#[test]
fn mount_all_covers_agents_created_later() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("openclaw");
    let agents = root.join("agents");
    std::fs::create_dir_all(agents.join("main/sessions")).unwrap();
    let state = tmp.path().join("st");
    let mut g = Mount::adopt(&agents, &agents, &state);
    let run = |extra: &[&str]| {
        Command::new(common::bin())
            .arg("mount-all")
            .arg("--root")
            .arg(&root)
            .arg("--")
            .arg("--state-dir")
            .arg(&state)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(common::is_mounted(&agents));
    // A new agent: mkdir and the first transcript write at once.
    let s = agents.join("helper/sessions");
    std::fs::create_dir_all(&s).unwrap();
    std::fs::write(
        s.join("t.jsonl"),
        b"{\"type\":\"session\",\"id\":\"new\"}\n",
    )
    .unwrap();
    let recs = common::read_jsonl(&s.join("t.jsonl.journal"));
    assert!(
        recs.iter()
            .any(|r| r["op"] == "write" && r["path"] == "helper/sessions/t.jsonl"),
        "{recs:?}"
    );
    // Idempotent.
    let again = run(&[]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("already a sessionfs mount"));
    g.unmount();
    // A per-agent mount below is in the way.
    let inner = agents.join("main/sessions");
    let _gi = Mount::adopt(&inner, &inner, &tmp.path().join("st2"));
    common::run_ok(
        Command::new(common::bin())
            .arg("mount")
            .arg("--state-dir")
            .arg(tmp.path().join("st2"))
            .arg(&inner),
    );
    let out = run(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unmount it first") && err.lines().count() == 1,
        "{err}"
    );
    assert!(!common::is_mounted(&agents));
}
