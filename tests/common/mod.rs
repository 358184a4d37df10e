//! Shared test support: real sessionfs mounts in temporary directories, unmounted by a
//! guard even when the test panics.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Path of the sessionfs binary Cargo built for this test run.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sessionfs")
}

/// A live mount; unmounts (and waits for the daemon) on drop.
pub struct Mount {
    /// Where it is mounted.
    pub mnt: PathBuf,
    /// The backing directory (== mnt for an overlay mount).
    pub src: PathBuf,
    /// The journal state dir.
    pub state: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Mount {
    /// Mount a fresh temp `src` at a fresh temp `mnt` with extra args.
    pub fn new(extra: &[&str]) -> Mount {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        let mnt = tmp.path().join("mnt");
        let state = tmp.path().join("state");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&mnt).unwrap();
        mount_at(&src, &mnt, &state, extra);
        Mount {
            mnt,
            src,
            state,
            _tmp: Some(tmp),
        }
    }

    /// Mount `dir` over itself (overlay), journal in `state`.
    pub fn overlay(dir: &Path, state: &Path, extra: &[&str]) -> Mount {
        let mut args = vec!["mount", "--state-dir"];
        let st = state.to_str().unwrap();
        args.push(st);
        args.extend_from_slice(extra);
        let d = dir.to_str().unwrap();
        args.push(d);
        run_ok(Command::new(bin()).args(&args));
        Mount {
            mnt: dir.to_path_buf(),
            src: dir.to_path_buf(),
            state: state.to_path_buf(),
            _tmp: None,
        }
    }

    /// A guard for a mount made some other way (or that must not happen): whatever is
    /// mounted at `mnt` when it drops is unmounted.
    pub fn adopt(mnt: &Path, src: &Path, state: &Path) -> Mount {
        Mount {
            mnt: mnt.to_path_buf(),
            src: src.to_path_buf(),
            state: state.to_path_buf(),
            _tmp: None,
        }
    }

    /// Unmount now (also done on drop).
    pub fn unmount(&mut self) {
        unmount(&self.mnt);
    }
}

/// `sessionfs mount --source src --state-dir state [extra] mnt`.
pub fn mount_at(src: &Path, mnt: &Path, state: &Path, extra: &[&str]) {
    let mut c = Command::new(bin());
    c.arg("mount")
        .arg("--source")
        .arg(src)
        .arg("--state-dir")
        .arg(state);
    c.args(extra).arg(mnt);
    run_ok(&mut c);
}

/// Run `c` to its end; panics (with its output) unless it exits 0. Its stdout.
pub fn run_ok(c: &mut Command) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("spawn {c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Is `p` a mountpoint right now?
pub fn is_mounted(p: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = p.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(&*want))
}

/// Lines of /proc/mounts that mention `p` (as mountpoint or as source).
pub fn mount_lines(p: &Path) -> Vec<String> {
    let want = p.to_string_lossy().replace(' ', "\\040");
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&*want))
        .map(str::to_string)
        .collect()
}

/// Pid of the daemon serving the mount at `mnt`, from its pid file.
pub fn daemon_pid(mnt: &Path) -> Option<i32> {
    let canon = std::fs::canonicalize(mnt).ok()?;
    let pf = sessionfs::pid_file(&sessionfs::mount_id(&canon));
    std::fs::read_to_string(pf).ok()?.trim().parse().ok()
}

/// Whether `pid` is running (a zombie counts as exited).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().to_string()))
        .is_some_and(|r| !r.starts_with('Z') && !r.starts_with('X'))
}

/// Poll `ready` every 20 ms for up to `secs` seconds; its last answer.
pub fn wait_for(secs: u64, mut ready: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    loop {
        if ready() {
            return true;
        }
        if t.elapsed() > Duration::from_secs(secs) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Unmount `mnt` with `sessionfs umount` (which waits for the daemon to exit),
/// falling back to a lazy umount and then waiting for the daemon ourselves, so a
/// remount on the same state dir never meets the old daemon's lock.
pub fn unmount(mnt: &Path) {
    if !is_mounted(mnt) {
        return;
    }
    let pid = daemon_pid(mnt);
    let ok = Command::new(bin())
        .arg("umount")
        .arg(mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok || is_mounted(mnt) {
        let _ = Command::new("umount").arg("-l").arg(mnt).status();
    }
    wait_for(5, || !is_mounted(mnt));
    if let Some(pid) = pid {
        wait_for(30, || !running(pid));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        unmount(&self.mnt);
    }
}

/// Read a whole journal-style JSONL file into values.
pub fn read_jsonl(p: &Path) -> Vec<serde_json::Value> {
    let data = std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    data.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice(l)
                .unwrap_or_else(|e| panic!("bad JSON line in {}: {e}", p.display()))
        })
        .collect()
}

/// A tool installed by `tests/install-crate.sh` into the test cache: `$<env>` if set,
/// else `${SESSIONFS_CACHE:-$HOME/.cache/sessionfs-tests}/cargo/bin/<name>`.
pub fn cached_tool(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("SESSIONFS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is not set");
            Path::new(&home).join(".cache/sessionfs-tests")
        });
    cache.join("cargo/bin").join(name)
}

/// Panics with the lines of the daemon log in `state` that show a panic or an error.
pub fn assert_daemon_log_clean(state: &Path) {
    let log = std::fs::read_to_string(state.join("sessionfs.log")).unwrap_or_default();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("panicked") || l.contains(" ERROR "))
        .collect();
    assert!(bad.is_empty(), "daemon log: {bad:#?}");
}
