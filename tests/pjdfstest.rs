//! Peer suite: the Rust pjdfstest (crates.io 0.2.2), run on a plain directory and on a
//! sessionfs mount of another directory of the same file system, in one test.
//!
//! What it asserts:
//! - every pjdfstest case that passes on the plain directory passes on the mount
//!   (the only exception: [`MOUNT_SKIPS_ALLOWED`], skips that pjdfstest's own guards
//!   decide for any FUSE file system, with the exact reason they must give);
//! - the cases that fail on the plain directory are all listed, with a reason, in
//!   `tests/pjdfstest/native-failures.txt`.
//!
//! Needs root, `/dev/fuse`, and the pjdfstest binary that `tests/install-crate.sh`
//! installs under `${SESSIONFS_CACHE:-$HOME/.cache/sessionfs-tests}/cargo/bin` (or the
//! path in `$PJDFSTEST`). The configuration is `tests/pjdfstest/pjdfstest.toml`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest one pjdfstest run may take (a whole run takes 1–5 s here); past it the
/// run is killed and the test fails rather than hang on a stuck mount.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// Cases a natively passing test may be *skipped* with on the mount, and the exact
/// skip reason pjdfstest must print for it. Anything else not passing is a failure.
const MOUNT_SKIPS_ALLOWED: &[(&str, &str, &str)] = &[(
    "link::link_count_max",
    "Cannot get value for LINK_MAX: filesystem limit is unknown",
    // Why: the guard calls pathconf(_PC_LINK_MAX); glibc answers it from statfs's
    // f_type and returns 127 ("unknown") for types it has no table entry for, which
    // includes FUSE_SUPER_MAGIC. No FUSE file system can change that answer.
    "glibc's pathconf(_PC_LINK_MAX) has no value for FUSE's f_type",
)];

/// One case's result as pjdfstest printed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Status {
    Pass,
    Fail,
    Skip,
}

/// One case: its status and the indented lines pjdfstest printed under it.
#[derive(Clone, Debug)]
struct Outcome {
    status: Status,
    detail: String,
}

/// A whole pjdfstest run.
struct Run {
    what: &'static str,
    cases: BTreeMap<String, Outcome>,
    summary: String,
    elapsed: Duration,
}

impl Run {
    fn count(&self, s: Status) -> usize {
        self.cases.values().filter(|o| o.status == s).count()
    }

    fn counts(&self) -> String {
        format!(
            "{:>3} passed, {:>3} failed, {:>3} skipped ({} cases, {:.1} s)",
            self.count(Status::Pass),
            self.count(Status::Fail),
            self.count(Status::Skip),
            self.cases.len(),
            self.elapsed.as_secs_f64()
        )
    }

    fn status(&self, name: &str) -> Option<Status> {
        self.cases.get(name).map(|o| o.status)
    }
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The pjdfstest binary: `$PJDFSTEST`, else where `tests/install-crate.sh` puts it.
fn pjdfstest_bin() -> PathBuf {
    common::cached_tool("pjdfstest", "PJDFSTEST")
}

/// Strip ANSI colour sequences (ESC '[' ... letter), in case colours are forced on.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parse pjdfstest's report: one `<name> <padding> <status>` line per case, the
/// case's messages on the following tab-indented lines, then a `Summary:` line.
fn parse(out: &str) -> (BTreeMap<String, Outcome>, String) {
    let mut cases: BTreeMap<String, Outcome> = BTreeMap::new();
    let mut last: Option<String> = None;
    let mut summary = String::new();
    for line in strip_ansi(out).lines() {
        if line.starts_with("Summary:") {
            summary = line.to_string();
            last = None;
            continue;
        }
        let parsed = line.split_once(' ').and_then(|(name, rest)| {
            let status = match rest.trim() {
                "ok" | "PASSED UNEXPECTEDLY" => Status::Pass,
                "FAILED" | "failed as expected" => Status::Fail,
                "skipped" => Status::Skip,
                _ => return None,
            };
            let is_name = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
            is_name.then(|| (name.to_string(), status))
        });
        match parsed {
            Some((name, status)) => {
                let dup = cases.insert(
                    name.clone(),
                    Outcome {
                        status,
                        detail: String::new(),
                    },
                );
                assert!(dup.is_none(), "pjdfstest reported {name} twice");
                last = Some(name);
            }
            None => {
                if let Some(o) = last.as_ref().and_then(|n| cases.get_mut(n))
                    && !line.trim().is_empty()
                {
                    o.detail.push_str(line.trim());
                    o.detail.push('\n');
                }
            }
        }
    }
    (cases, summary)
}

/// The `N failed, N skipped, N passed` numbers of pjdfstest's own summary line.
fn summary_numbers(summary: &str) -> (usize, usize, usize) {
    let num = |word: &str| -> usize {
        let before = summary
            .split(',')
            .find(|part| part.trim_end().ends_with(word))
            .unwrap_or_else(|| panic!("no '{word}' in pjdfstest summary: {summary:?}"));
        before
            .split_whitespace()
            .rev()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("bad pjdfstest summary: {summary:?}"))
    };
    (num("failed"), num("skipped"), num("passed"))
}

/// Run pjdfstest with our config in `dir` (as root, the way its user-switching
/// cases need), optionally with a second file system for the EXDEV cases.
fn run_pjdfstest(what: &'static str, dir: &Path, secondary: Option<&Path>) -> Run {
    run_pjdfstest_cases(what, dir, secondary, &[])
}

/// [`run_pjdfstest`] restricted to the cases matching `cases` (all when empty).
fn run_pjdfstest_cases(
    what: &'static str,
    dir: &Path,
    secondary: Option<&Path>,
    cases: &[&str],
) -> Run {
    let config = manifest_dir().join("tests/pjdfstest/pjdfstest.toml");
    let mut cmd = Command::new(pjdfstest_bin());
    cmd.arg("-c").arg(&config).arg("-p").arg(dir);
    if !cases.is_empty() {
        // Name patterns (substring match; `-e` wants a form pjdfstest does not print).
        cmd.args(cases);
    }
    if let Some(s) = secondary {
        cmd.arg("-s").arg(s);
    }
    cmd.current_dir(dir)
        .env("NO_COLOR", "1")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait pjdfstest") {
            break st;
        }
        if start.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "pjdfstest on the {what} ({}) did not finish in {} s: killed",
                dir.display(),
                RUN_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = start.elapsed();
    let out = out_t.join().unwrap();
    let err = err_t.join().unwrap();
    let (cases, summary) = parse(&out);
    assert!(
        !summary.is_empty(),
        "pjdfstest on the {what} printed no summary (exit {status}).\nstdout:\n{out}\nstderr:\n{err}"
    );
    let run = Run {
        what,
        cases,
        summary,
        elapsed,
    };
    // Our parse must agree with pjdfstest's own count, or the comparison means nothing.
    let (fail, skip, pass) = summary_numbers(&run.summary);
    assert_eq!(
        (
            run.count(Status::Fail),
            run.count(Status::Skip),
            run.count(Status::Pass)
        ),
        (fail, skip, pass),
        "parsed results disagree with pjdfstest's summary {:?}",
        run.summary
    );
    // pjdfstest exits non-zero exactly when something failed.
    assert_eq!(
        status.success(),
        fail == 0,
        "pjdfstest on the {what} exited {status} with summary {:?}\nstderr:\n{err}",
        run.summary
    );
    run
}

/// `tests/pjdfstest/native-failures.txt`: name → reason.
fn native_failure_list() -> BTreeMap<String, String> {
    let path = manifest_dir().join("tests/pjdfstest/native-failures.txt");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut list = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, reason) = line
            .split_once('#')
            .unwrap_or_else(|| panic!("{}:{}: '{line}' has no '# reason'", path.display(), n + 1));
        let (name, reason) = (name.trim(), reason.trim());
        assert!(
            !name.is_empty() && !reason.is_empty(),
            "{}:{}: need '<test name>  # <reason>'",
            path.display(),
            n + 1
        );
        list.insert(name.to_string(), reason.to_string());
    }
    list
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

/// A directory on another file system than `dir` for the EXDEV cases, if one is at
/// hand (`/dev/shm` on this machine kind).
fn secondary_fs(dir: &Path) -> Option<tempfile::TempDir> {
    let dev = std::fs::metadata(dir).ok()?.dev();
    let shm = Path::new("/dev/shm");
    if std::fs::metadata(shm).ok()?.dev() == dev {
        return None;
    }
    let t = tempfile::Builder::new()
        .prefix("sessionfs-pjdfstest.")
        .tempdir_in(shm)
        .ok()?;
    chmod(t.path(), 0o755);
    Some(t)
}

fn print_run(run: &Run) {
    println!("pjdfstest on the {:<10} {}", run.what, run.counts());
    for (name, o) in &run.cases {
        if o.status == Status::Fail {
            println!("  FAILED {name}: {}", o.detail.trim().replace('\n', " | "));
        }
    }
}

#[test]
fn pjdfstest_passes_on_the_mount_wherever_it_passes_natively() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "pjdfstest needs root (it switches users) and so do the mounts: run as root \
         (tests/run.sh does)"
    );
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: load the fuse module"
    );
    let bin = pjdfstest_bin();
    assert!(
        bin.is_file(),
        "pjdfstest is not installed at {}: run `bash tests/install-crate.sh pjdfstest 0.2.2` (tests/run.sh does)",
        bin.display()
    );

    // The plain run: a directory on the same file system as the mount's backing one.
    let plain = tempfile::Builder::new()
        .prefix("sessionfs-pjdfstest-plain.")
        .tempdir()
        .expect("tempdir");
    // The dummy users must be able to reach the test directories.
    chmod(plain.path(), 0o755);
    let shm = secondary_fs(plain.path());
    let native = run_pjdfstest("plain dir", plain.path(), shm.as_ref().map(|t| t.path()));

    // The mounts: `sessionfs mount --source <tmp>/src -o allow_other <tmp>/mnt`, with
    // the journal on as in production, once with the default stat rules (no-op
    // metadata changes answered by the daemon) and once with `--strict-stat`.
    // allow_other because pjdfstest switches to the dummy users; the guard unmounts
    // even when this test panics.
    let mut runs = Vec::new();
    for (what, extra) in [
        ("mount", &["-o", "allow_other"][..]),
        (
            "mount --strict-stat",
            &["-o", "allow_other", "--strict-stat"][..],
        ),
    ] {
        let mount = common::Mount::new(extra);
        chmod(mount.mnt.parent().unwrap(), 0o755);
        let mnt_path = mount.mnt.clone();
        assert!(common::is_mounted(&mnt_path), "sessionfs mount is not live");
        runs.push(run_pjdfstest(
            what,
            &mount.mnt,
            shm.as_ref().map(|t| t.path()),
        ));
        drop(mount);
        assert!(
            !common::is_mounted(&mnt_path),
            "{} is still mounted after the guard's unmount",
            mnt_path.display()
        );
    }

    println!();
    print_run(&native);
    runs.iter().for_each(print_run);
    println!("  plain dir summary: {}", native.summary);
    for r in &runs {
        println!("  {} summary: {}", r.what, r.summary);
    }

    let mut problems = Vec::new();

    // 1. Native failures must be known.
    let known = native_failure_list();
    for (name, o) in &native.cases {
        if o.status == Status::Fail && !known.contains_key(name) {
            problems.push(format!(
                "{name} fails on the plain dir and is not in tests/pjdfstest/native-failures.txt: {}",
                o.detail.trim().replace('\n', " | ")
            ));
        }
    }
    for (name, reason) in &known {
        match native.status(name) {
            Some(Status::Fail) => {}
            Some(s) => {
                println!("  note: {name} is listed as a native failure ({reason}) but was {s:?}")
            }
            None => println!(
                "  note: {name} is listed as a native failure but pjdfstest has no such case"
            ),
        }
    }

    // 2. Whatever passes natively passes on each mount.
    for mounted in &runs {
        let names: BTreeSet<&String> = native.cases.keys().chain(mounted.cases.keys()).collect();
        for name in names {
            let (n, m) = (native.status(name), mounted.status(name));
            if n != Some(Status::Pass) || m == Some(Status::Pass) {
                if n != m {
                    println!(
                        "  note: {name}: {n:?} on the plain dir, {m:?} on the {}",
                        mounted.what
                    );
                }
                continue;
            }
            let detail = mounted
                .cases
                .get(name.as_str())
                .map(|o| o.detail.trim().replace('\n', " | "))
                .unwrap_or_default();
            let allowed = MOUNT_SKIPS_ALLOWED.iter().find(|(case, reason, _)| {
                case == name && m == Some(Status::Skip) && detail == *reason
            });
            match allowed {
                Some((_, _, why)) => {
                    println!("  allowed: {name} skipped on the {}: {why}", mounted.what)
                }
                None => problems.push(format!(
                    "{name} passes on the plain dir but is {m:?} on the {}: {detail}",
                    mounted.what
                )),
            }
        }
    }

    // Sanity: the run really ran (a broken config would skip nearly everything).
    assert!(
        native.count(Status::Pass) >= 300,
        "only {} pjdfstest cases passed natively: {}",
        native.count(Status::Pass),
        native.summary
    );
    assert!(
        problems.is_empty(),
        "pjdfstest: {} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The report parser on a sample of pjdfstest 0.2.2's output (colours on).
#[test]
fn pjdfstest_report_is_parsed() {
    let sample = "\
\x1b[34mchmod::ok\x1b[0m                                                        \x1b[32mok\x1b[0m
link::link_count_max                                                     skipped
\tCannot get value for LINK_MAX: filesystem limit is unknown
open::eacces                                                             FAILED
\tassertion `left == right` failed
\t  left: Ok(())

Summary: 1 failed, 1 skipped, 1 passed, 0 expected failures, 3 total
";
    let (cases, summary) = parse(sample);
    assert_eq!(summary_numbers(&summary), (1, 1, 1));
    assert_eq!(cases.len(), 3);
    assert_eq!(cases["chmod::ok"].status, Status::Pass);
    assert_eq!(cases["link::link_count_max"].status, Status::Skip);
    assert_eq!(
        cases["link::link_count_max"].detail.trim(),
        MOUNT_SKIPS_ALLOWED[0].1
    );
    assert_eq!(cases["open::eacces"].status, Status::Fail);
    assert!(cases["open::eacces"].detail.contains("left: Ok(())"));
}
