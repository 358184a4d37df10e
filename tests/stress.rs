//! Peer suite: stress-ng's filesystem stressors (Debian `stress-ng`, installed by
//! `tests/run.sh`) with `--verify` on a sessionfs mount, journal on.
//!
//! What it asserts: stress-ng exits 0 (no stressor failed or found bad data) and
//! reports no failure, the daemon neither panics nor logs an error, and the journal's
//! last records are whole JSON lines. (stress-ng signals its workers a lot, which is how
//! fuser's benign late-INTERRUPT reply error was found; `main.rs` now drops it.)
//!
//! Needs root, `/dev/fuse` and `stress-ng` on the PATH.

mod common;

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Seconds per stressor; 44 stressors run one after another.
const PER_STRESSOR: &str = "2";

/// Longest the whole run may take before it is killed and the test fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// Stressors left out, each because the kernel or FUSE lacks what it tests (they would
/// only skip themselves): binderfs (no binder module here), verity (fs-verity is not
/// implemented by FUSE), fiemap (FUSE has no FS_IOC_FIEMAP).
const EXCLUDED: &str = "binderfs,verity,fiemap";

#[test]
fn stress_ng_filesystem_class_verifies_on_the_mount() {
    assert!(
        Command::new("stress-ng")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "stress-ng is not installed: `apt-get install stress-ng`, or run tests/run.sh"
    );
    let m = common::Mount::new(&[]);
    let work = m.mnt.join("stress");
    std::fs::create_dir(&work).unwrap();
    let start = Instant::now();
    // Output to a file, not a pipe: nothing can block on a full pipe. Its own process
    // group, so a timeout kills the workers too (they run inside the mount).
    let log_path = m.state.join("stress-ng.out");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new("stress-ng")
        .args(["--class", "filesystem", "--sequential", "1", "--timeout"])
        .arg(PER_STRESSOR)
        .args(["--verify", "--exclude", EXCLUDED, "--temp-path"])
        .arg(&work)
        .current_dir(&work)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .expect("spawn stress-ng");
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > RUN_TIMEOUT {
            // SAFETY: kill(2) of the child's own process group.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            panic!("stress-ng ran longer than {RUN_TIMEOUT:?} on the mount");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = std::fs::read_to_string(&log_path).unwrap_or_default();
    let summary: Vec<&str> = out
        .lines()
        .filter(|l| !l.contains("metrc:") && !l.contains("dispatching hogs"))
        .collect();
    println!(
        "stress-ng on the mount ({:.0?}):\n{}",
        start.elapsed(),
        summary.join("\n")
    );
    assert!(status.success(), "stress-ng exited {status}");
    let failed: Vec<&&str> = summary
        .iter()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("fail") || l.contains("error") || l.contains("aborted")
        })
        .collect();
    assert!(failed.is_empty(), "stress-ng reported: {failed:#?}");

    // The journal ends in whole records (the last MiB of it, parsed line by line).
    let mut j = std::fs::File::open(m.mnt.join(".journal")).unwrap();
    let len = j.metadata().unwrap().len();
    j.seek(SeekFrom::Start(len.saturating_sub(1 << 20)))
        .unwrap();
    let mut tail = Vec::new();
    j.read_to_end(&mut tail).unwrap();
    let mut lines = tail.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    if len > 1 << 20 {
        lines.next(); // the first one may start mid-record
    }
    let mut n = 0;
    for l in lines {
        serde_json::from_slice::<serde_json::Value>(l).unwrap_or_else(|e| {
            panic!(
                "journal line is not JSON ({e}): {}",
                String::from_utf8_lossy(l)
            )
        });
        n += 1;
    }
    assert!(n > 100, "only {n} journal records at the end of the run");
    drop(j);

    let state = m.state.clone();
    drop(m);
    common::assert_daemon_log_clean(&state);
}
