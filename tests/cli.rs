//! The `sessionfs` command line, run as a user would: one-line errors that say what to
//! do and leave nothing mounted, `umount` that waits for the daemon, `-o ro`,
//! `--threads 1` and `-f`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Mount, bin, is_mounted, mount_lines};

/// A scratch tree: `<tmp>/{src,mnt,state}`; `src` and `mnt` exist.
struct Scratch {
    tmp: tempfile::TempDir,
    src: PathBuf,
    mnt: PathBuf,
    state: PathBuf,
}

fn scratch() -> Scratch {
    let tmp = tempfile::tempdir().unwrap();
    let (src, mnt, state) = (
        tmp.path().join("src"),
        tmp.path().join("mnt"),
        tmp.path().join("state"),
    );
    std::fs::create_dir(&src).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    Scratch {
        tmp,
        src,
        mnt,
        state,
    }
}

impl Scratch {
    /// `sessionfs mount --source src --state-dir state [extra] <mountpoint>`.
    fn mount_cmd(&self, extra: &[&str], mountpoint: &Path) -> Command {
        let mut c = Command::new(bin());
        c.arg("mount")
            .arg("--source")
            .arg(&self.src)
            .arg("--state-dir")
            .arg(&self.state)
            .args(extra)
            .arg(mountpoint)
            .stdin(Stdio::null());
        c
    }

    /// Unmounts whatever ends up on `mnt` (nothing, if the CLI behaves) on drop.
    fn guard(&self) -> Mount {
        Mount::adopt(&self.mnt, &self.src, &self.state)
    }
}

/// Run a command that must fail: non-zero exit, stderr exactly one line
/// `sessionfs: error: …` containing `keyword` (case-insensitive), and no new
/// /proc/mounts line mentioning `watch`. Returns the error line.
fn must_fail(c: &mut Command, watch: &Path, keyword: &str) -> String {
    let before = mount_lines(watch);
    let out = c.output().expect("spawn");
    let after = mount_lines(watch);
    check_failure(c, &out, keyword);
    assert_eq!(before, after, "{c:?} left something mounted");
    String::from_utf8_lossy(&out.stderr).trim_end().to_string()
}

fn check_failure(c: &Command, out: &Output, keyword: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{c:?} succeeded; stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{c:?}: stderr must be exactly one line, got {}:\n{err}",
        lines.len()
    );
    assert!(
        err.ends_with('\n'),
        "{c:?}: the error line is not terminated: {err:?}"
    );
    let line = lines[0];
    assert!(
        line.starts_with("sessionfs: error: "),
        "{c:?}: not a `sessionfs: error:` line: {line}"
    );
    assert!(
        line.to_lowercase().contains(&keyword.to_lowercase()),
        "{c:?}: error does not say `{keyword}`: {line}"
    );
}

#[test]
fn missing_mountpoint() {
    let s = scratch();
    let nope = s.tmp.path().join("nope");
    let line = must_fail(&mut s.mount_cmd(&[], &nope), s.tmp.path(), "does not exist");
    assert!(
        line.contains(&*nope.to_string_lossy()),
        "names the path: {line}"
    );
    assert!(!nope.exists(), "the mountpoint was created");
}

#[test]
fn mountpoint_is_a_regular_file() {
    let s = scratch();
    let f = s.tmp.path().join("file");
    std::fs::write(&f, b"x").unwrap();
    let line = must_fail(&mut s.mount_cmd(&[], &f), s.tmp.path(), "not a directory");
    assert!(
        line.contains(&*f.to_string_lossy()),
        "names the path: {line}"
    );
    assert_eq!(std::fs::read(&f).unwrap(), b"x");
}

#[test]
fn already_a_sessionfs_mount() {
    let m = Mount::new(&[]);
    std::fs::write(m.mnt.join("f"), b"live").unwrap();
    let other = tempfile::tempdir().unwrap();
    let mut c = Command::new(bin());
    c.arg("mount")
        .arg("--source")
        .arg(other.path())
        .arg("--state-dir")
        .arg(other.path().join("state"))
        .arg(&m.mnt);
    // The existing mount is the one line that must stay.
    assert_eq!(mount_lines(&m.mnt).len(), 1, "{:?}", mount_lines(&m.mnt));
    must_fail(&mut c, &m.mnt, "already");
    assert!(mount_lines(other.path()).is_empty(), "second mount made");
    // The first mount is untouched and still serves its source.
    assert_eq!(std::fs::read(m.mnt.join("f")).unwrap(), b"live");
    // The overlay form (no --source) is refused the same way.
    let mut c = Command::new(bin());
    c.arg("mount")
        .arg("--state-dir")
        .arg(other.path().join("state"))
        .arg(&m.mnt);
    must_fail(&mut c, &m.mnt, "already");
    assert_eq!(std::fs::read(m.mnt.join("f")).unwrap(), b"live");
}

#[test]
fn unknown_mount_option() {
    let s = scratch();
    let _g = s.guard();
    let line = must_fail(
        &mut s.mount_cmd(&["-o", "ro,bogus_opt"], &s.mnt),
        s.tmp.path(),
        "option",
    );
    assert!(line.contains("bogus_opt"), "names the option: {line}");
    assert!(!is_mounted(&s.mnt));
}

/// Bad `--threads` values are refused and mount nothing (the message format is
/// checked by `bad_threads_one_line_error`).
#[test]
fn bad_threads_mount_nothing() {
    let s = scratch();
    let _g = s.guard();
    for v in ["0", "junk", "-1", "65"] {
        let arg = format!("--threads={v}");
        let mut c = s.mount_cmd(&[&arg], &s.mnt);
        let before = mount_lines(s.tmp.path());
        let out = c.output().unwrap();
        assert!(!out.status.success(), "--threads {v} accepted");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("threads"),
            "--threads {v}: error does not name the option: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(before, mount_lines(s.tmp.path()), "--threads {v} mounted");
        assert!(!is_mounted(&s.mnt));
    }
}

#[test]
fn bad_threads_one_line_error() {
    let s = scratch();
    let _g = s.guard();
    for v in ["0", "junk"] {
        must_fail(
            &mut s.mount_cmd(&["--threads", v], &s.mnt),
            s.tmp.path(),
            "threads",
        );
    }
}

#[test]
fn missing_dev_fuse() {
    // A private mount namespace with an empty tmpfs over /dev: no /dev/fuse there.
    let s = scratch();
    let _g = s.guard();
    let mounts = s.tmp.path().join("mounts-inside");
    let script = r#"mount -t tmpfs sessionfs-test-nodev /dev || exit 97
[ -e /dev/fuse ] && exit 98
"$0" mount --source "$1" --state-dir "$2" "$3"
rc=$?
cat /proc/self/mounts > "$4"
exit $rc"#;
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "sh", "-c", script])
        .arg(bin())
        .arg(&s.src)
        .arg(&s.state)
        .arg(&s.mnt)
        .arg(&mounts)
        .stdin(Stdio::null());
    let before = mount_lines(s.tmp.path());
    let out = c.output().expect("unshare");
    let code = out.status.code();
    assert!(
        code != Some(97) && code != Some(98),
        "could not hide /dev/fuse ({code:?}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_failure(&c, &out, "fuse");
    let inside = std::fs::read_to_string(&mounts).expect("mounts inside the namespace");
    let tmp = s.tmp.path().to_string_lossy().to_string();
    assert!(
        !inside.lines().any(|l| l.contains(&tmp)),
        "mounted inside the namespace:\n{inside}"
    );
    assert_eq!(before, mount_lines(s.tmp.path()));
}

#[test]
fn not_permitted_as_nobody() {
    let s = scratch();
    let _g = s.guard();
    // nobody can reach and read everything, owns the state dir, but may not mount on
    // root's mountpoint (and cannot open /dev/fuse itself).
    for d in [s.tmp.path(), &s.src, &s.mnt] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::create_dir(&s.state).unwrap();
    nix::unistd::chown(&s.state, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let as_nobody = |args: &[&Path]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin())
            .arg("mount")
            .arg("--source")
            .arg(&s.src)
            .arg("--state-dir")
            .arg(&s.state)
            .args(args)
            .env("XDG_RUNTIME_DIR", &s.state)
            .stdin(Stdio::null());
        c
    };
    must_fail(&mut as_nobody(&[&s.mnt]), s.tmp.path(), "permi");
    assert!(!is_mounted(&s.mnt));

    // A mountpoint nobody cannot even look at.
    let hidden = s.tmp.path().join("hidden");
    std::fs::create_dir(&hidden).unwrap();
    std::fs::set_permissions(&hidden, std::fs::Permissions::from_mode(0o700)).unwrap();
    let inner = hidden.join("mnt");
    std::fs::create_dir(&inner).unwrap();
    let _g2 = Mount::adopt(&inner, &s.src, &s.state);
    must_fail(&mut as_nobody(&[&inner]), s.tmp.path(), "permi");
    assert!(!is_mounted(&inner));
}

#[test]
fn umount_not_a_mount() {
    let s = scratch();
    let mut c = Command::new(bin());
    c.arg("umount").arg(&s.mnt);
    must_fail(&mut c, s.tmp.path(), "not a sessionfs mount");
}

/// Is `pid` gone (or a zombie, which has exited)?
fn exited(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => true,
    }
}

fn daemon_pid(mnt: &Path) -> (PathBuf, i32) {
    let canon = std::fs::canonicalize(mnt).unwrap();
    let pf = sessionfs::pid_file(&sessionfs::mount_id(&canon));
    let pid: i32 = std::fs::read_to_string(&pf)
        .unwrap_or_else(|e| panic!("pid file {}: {e}", pf.display()))
        .trim()
        .parse()
        .unwrap();
    (pf, pid)
}

/// Sends SIGCONT to a stopped daemon on drop (also when the test panics).
struct Cont(i32);

impl Drop for Cont {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGCONT,
        );
    }
}

#[test]
fn umount_returns_after_the_daemon_exited() {
    let mut m = Mount::new(&[]);
    let (pf, pid) = daemon_pid(&m.mnt);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        cmdline.contains("sessionfs") && cmdline.contains(&*m.mnt.to_string_lossy()),
        "pid file {} names pid {pid}, which is `{cmdline}`",
        pf.display()
    );
    assert!(!exited(pid));
    // Give the daemon something to flush on the way out.
    for i in 0..200 {
        std::fs::write(m.mnt.join(format!("f{i}")), vec![b'x'; 4096]).unwrap();
    }
    // Hold the daemon stopped and let it go 1 s later: `sessionfs umount` must not
    // return in between. (A non-lazy umount2 itself blocks until the daemon answers
    // the kernel's DESTROY, so this pins down the user-visible guarantee; sessionfs's
    // own wait for the pid covers the short tail from that reply to the exit.)
    let _cont = Cont(pid);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let release = Duration::from_millis(1000);
    // `t` before the waker starts: SIGCONT then comes at least `release` after `t`.
    let t = Instant::now();
    let waker = std::thread::spawn(move || {
        std::thread::sleep(release);
        drop(Cont(pid));
    });
    let out = Command::new(bin())
        .arg("umount")
        .arg(&m.mnt)
        .output()
        .unwrap();
    // Checked before anything else can give the daemon more time.
    let gone = exited(pid);
    let took = t.elapsed();
    waker.join().unwrap();
    assert!(
        out.status.success(),
        "umount failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        gone,
        "sessionfs umount returned while daemon {pid} was still running"
    );
    assert!(
        took >= release,
        "sessionfs umount returned after {took:?}, before the daemon was let go at {release:?}"
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(&m.mnt));
    assert!(!pf.exists(), "pid file {} left behind", pf.display());
    // What went through the mount is in the backing directory, and the journal was
    // flushed to the state dir before umount returned.
    assert_eq!(std::fs::read(m.src.join("f199")).unwrap().len(), 4096);
    let mut journal = Vec::new();
    for e in std::fs::read_dir(m.state.join("segments")).unwrap() {
        journal.extend(common::read_jsonl(&e.unwrap().path()));
    }
    assert!(
        journal
            .iter()
            .any(|r| r["path"] == "f199" && r["op"] == "write"),
        "the last write is not in the flushed journal ({} records)",
        journal.len()
    );
    m.unmount();
}

#[test]
fn read_only_mount() {
    let m = Mount::new(&["-o", "ro"]);
    std::fs::write(m.src.join("f"), b"hello").unwrap();
    std::fs::create_dir(m.src.join("d")).unwrap();
    let line = mount_lines(&m.mnt).join("\n");
    assert!(
        line.split(' ')
            .nth(3)
            .is_some_and(|o| o.split(',').any(|x| x == "ro")),
        "not mounted ro: {line}"
    );
    // Reads work.
    assert_eq!(std::fs::read(m.mnt.join("f")).unwrap(), b"hello");
    let mut names: Vec<String> = std::fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(
        names.contains(&"f".into()) && names.contains(&"d".into()),
        "{names:?}"
    );
    // Every kind of write fails with EROFS.
    let erofs = |what: &str, r: std::io::Result<()>| {
        let e = r.expect_err(&format!("{what} succeeded on a ro mount"));
        assert_eq!(
            e.raw_os_error(),
            Some(libc::EROFS),
            "{what}: {e} (want EROFS)"
        );
    };
    let f = m.mnt.join("f");
    erofs(
        "open for write",
        std::fs::OpenOptions::new().write(true).open(&f).map(drop),
    );
    erofs(
        "open O_TRUNC",
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&f)
            .map(drop),
    );
    erofs("create", std::fs::write(m.mnt.join("new"), b"x"));
    erofs("mkdir", std::fs::create_dir(m.mnt.join("nd")));
    erofs("unlink", std::fs::remove_file(&f));
    erofs("rmdir", std::fs::remove_dir(m.mnt.join("d")));
    erofs("rename", std::fs::rename(&f, m.mnt.join("g")));
    erofs(
        "chmod",
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)),
    );
    erofs("symlink", std::os::unix::fs::symlink("f", m.mnt.join("sl")));
    erofs(
        "truncate",
        nix::unistd::truncate(&f, 0).map_err(std::io::Error::from),
    );
    // Nothing changed underneath.
    assert_eq!(std::fs::read(m.src.join("f")).unwrap(), b"hello");
    assert!(!m.src.join("new").exists() && !m.src.join("nd").exists());
    // Still readable after the refusals.
    assert_eq!(std::fs::read(&f).unwrap(), b"hello");
}

#[test]
fn one_thread_mounts_and_works() {
    let m = Mount::new(&["--threads", "1"]);
    // Concurrent clients against a single FUSE worker: all must complete.
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let dir = m.mnt.clone();
            std::thread::spawn(move || {
                let d = dir.join(format!("t{t}"));
                std::fs::create_dir(&d).unwrap();
                for i in 0..50 {
                    let p = d.join(format!("f{i}"));
                    std::fs::write(&p, format!("{t}:{i}")).unwrap();
                    assert_eq!(std::fs::read_to_string(&p).unwrap(), format!("{t}:{i}"));
                }
                std::fs::read_dir(&d).unwrap().count()
            })
        })
        .collect();
    for w in workers {
        assert_eq!(w.join().unwrap(), 50);
    }
    for t in 0..4 {
        assert_eq!(
            std::fs::read_to_string(m.src.join(format!("t{t}/f49"))).unwrap(),
            format!("{t}:49")
        );
    }
}

/// Kills (and reaps) the child on drop, if it is still there.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

#[test]
fn foreground_stays_in_the_foreground() {
    let s = scratch();
    let log = s.tmp.path().join("fg.log");
    let mut c = s.mount_cmd(&["-f"], &s.mnt);
    c.stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    // Declared before the mount guard, so dropped after it: unmount, then reap.
    let mut child = Reap(c.spawn().unwrap());
    let mut g = s.guard();
    let t = Instant::now();
    while !is_mounted(&s.mnt) {
        if let Some(st) = child.0.try_wait().unwrap() {
            panic!(
                "foreground sessionfs exited ({st}) before mounting:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "not mounted after 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The process we started is the daemon: it did not fork away.
    let (_, pid) = daemon_pid(&s.mnt);
    assert_eq!(pid as u32, child.0.id(), "-f forked a daemon");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "-f returned while mounted"
    );
    std::fs::write(s.mnt.join("f"), b"fg").unwrap();
    assert_eq!(std::fs::read(s.src.join("f")).unwrap(), b"fg");

    let out = Command::new(bin())
        .arg("umount")
        .arg(&s.mnt)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "umount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = Instant::now();
    let st = loop {
        if let Some(st) = child.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "-f still running 10 s after umount"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        st.success(),
        "-f exited with {st}:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(!is_mounted(&s.mnt));
    g.unmount();
}

/// `sessionfs demo | head -2`: the reader goes away while the demo is mounted. The
/// demo must neither panic on EPIPE nor leave its mount or temporary tree behind.
#[test]
fn demo_survives_a_closed_stdout() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(bin())
        .arg("demo")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn demo");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let mut second = String::new();
    out.read_line(&mut second).unwrap();
    // "   /tmp/sessionfs-demo-<pid>/agents/main/sessions"
    let sessions = PathBuf::from(second.trim());
    assert!(
        first.starts_with("1.") && sessions.ends_with("agents/main/sessions"),
        "unexpected demo output: {first:?} {second:?}"
    );
    drop(out); // like `head` exiting: every later write gets EPIPE
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {:?} {err}", out.status);
    assert!(!err.contains("panicked"), "demo panicked: {err}");
    assert!(
        mount_lines(&sessions).is_empty(),
        "demo left a mount at {}",
        sessions.display()
    );
    let tree = sessions.ancestors().nth(3).unwrap();
    assert!(!tree.exists(), "demo left {} behind", tree.display());
}

/// A daemon whose mount was detached lazily (`umount -l`) keeps serving the files still
/// open on it; a new mount may meanwhile be made at the same path. When the old
/// daemon finally ends, it must not unmount the new mount (fuser, left to itself,
/// unmounts its mountpoint by path). And two daemons never share one state dir.
#[test]
fn old_daemon_leaves_a_new_mount_at_its_path_alone() {
    let s = scratch();
    let _guard = s.guard();
    let out = s.mount_cmd(&[], &s.mnt).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let (_, old_pid) = daemon_pid(&s.mnt);
    let held = std::fs::File::create(s.mnt.join("held")).unwrap();
    nix::mount::umount2(&s.mnt, nix::mount::MntFlags::MNT_DETACH).unwrap();
    assert!(!is_mounted(&s.mnt));
    assert!(!exited(old_pid), "the detached daemon serves the open file");

    // A second daemon on the same state dir is refused with one line.
    let other = s.tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let err = must_fail(&mut s.mount_cmd(&[], &other), &other, "in use");
    assert!(err.contains(&format!("pid {old_pid}")), "{err}");

    // The new mount: its own source and state dir.
    let src2 = s.tmp.path().join("src2");
    std::fs::create_dir(&src2).unwrap();
    let out = Command::new(bin())
        .arg("mount")
        .arg("--source")
        .arg(&src2)
        .arg("--state-dir")
        .arg(s.tmp.path().join("state2"))
        .arg(&s.mnt)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    drop(held); // the old connection's last file: the old daemon ends now
    let t = Instant::now();
    while !exited(old_pid) && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(exited(old_pid), "old daemon {old_pid} still running");
    std::thread::sleep(Duration::from_millis(200));
    let lines = mount_lines(&s.mnt);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("sessionfs:{} ", src2.display()))),
        "the new mount is gone: {lines:?}"
    );
}

/// A failure after the mount(2) call (here: the pid file cannot be written, because a
/// directory sits at its path) gives one error line and leaves nothing mounted, not a
/// dead (ENOTCONN) mount over the directory.
#[test]
fn failure_after_mounting_leaves_no_mount() {
    let s = scratch();
    let _guard = s.guard();
    let canon = std::fs::canonicalize(&s.mnt).unwrap();
    let pf = sessionfs::pid_file(&sessionfs::mount_id(&canon));
    std::fs::create_dir_all(&pf).unwrap();
    struct Rm(PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _rm = Rm(pf.clone());
    let err = must_fail(&mut s.mount_cmd(&[], &s.mnt), &s.mnt, "pid file");
    assert!(!is_mounted(&s.mnt), "{err}");
    // The directory itself is usable again.
    std::fs::write(s.mnt.join("after"), b"x").unwrap();
}

/// A pre-existing state dir that others can write, or that belongs to another user, is
/// refused: the journal in it is evidence (before, `nobody` could rename `segments/`
/// away unnoticed).
#[test]
fn state_dir_others_could_alter_is_refused() {
    let s = scratch();
    let _g = s.guard();
    std::fs::create_dir(&s.state).unwrap();
    std::fs::set_permissions(&s.state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let line = must_fail(&mut s.mount_cmd(&[], &s.mnt), s.tmp.path(), "writable by");
    assert!(line.contains("chmod 700"), "says what to do: {line}");
    assert!(!is_mounted(&s.mnt));
    std::fs::set_permissions(&s.state, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&s.state, Some(65534), Some(65534)).unwrap();
    let line = must_fail(
        &mut s.mount_cmd(&[], &s.mnt),
        s.tmp.path(),
        "belongs to uid 65534",
    );
    assert!(!is_mounted(&s.mnt), "{line}");
    // Both refusals left the operator's directory as it was.
    assert!(s.state.is_dir());
}

/// A mount that fails leaves no state dir it created.
#[test]
fn failed_mount_leaves_no_new_state_dir() {
    let s = scratch();
    let _g = s.guard();
    let lanes = s.tmp.path().join("lanes.json");
    std::fs::write(&lanes, b"{\"rules\": [{\"lane\": \"x\"}]}").unwrap();
    let lanes_arg = lanes.to_str().unwrap();
    must_fail(
        &mut s.mount_cmd(&["--lanes", lanes_arg], &s.mnt),
        s.tmp.path(),
        "lane",
    );
    assert!(
        !s.state.exists(),
        "the failed mount left {}",
        s.state.display()
    );
}

/// `--journal-max-size 0` and `--journal-max-age 0` were accepted silently (a journal
/// that keeps nothing); now they are one-line errors.
#[test]
fn journal_bounds_below_the_floor_are_refused() {
    let s = scratch();
    let _g = s.guard();
    for (flag, v) in [
        ("--journal-max-size", "0"),
        ("--journal-max-size", "4KiB"),
        ("--journal-max-age", "0"),
        ("--journal-max-age", "30s"),
    ] {
        let line = must_fail(&mut s.mount_cmd(&[flag, v], &s.mnt), s.tmp.path(), flag);
        assert!(line.contains("below"), "{flag} {v}: {line}");
        assert!(!is_mounted(&s.mnt));
    }
}
