//! Peer suite: fsx (the Rust File System eXerciser, crates.io 0.2.0) on a sessionfs
//! mount with the journal on.
//!
//! fsx applies a seeded random sequence of pread/pwrite, mmap reads and writes,
//! msync(MS_INVALIDATE), ftruncate, fsync/fdatasync, posix_fallocate, hole punching,
//! sendfile, posix_fadvise, copy_file_range and close/reopen to one file, and checks
//! every byte it reads and the size after each operation against its own model.
//! Three fsx processes run at once on the mount: one on a plain file and two on
//! `*.jsonl` files, whose every write, truncate and overwrite also goes through
//! transcript decoding, line cuts and salvage.
//!
//! What it asserts: every fsx run ends "All operations completed A-OK!" with exit 0,
//! and the daemon neither panics nor logs an error.
//!
//! Needs root, `/dev/fuse`, and the fsx binary that `tests/install-crate.sh fsx 0.2.0` installs under
//! `${SESSIONFS_CACHE:-$HOME/.cache/sessionfs-tests}/cargo/bin` (or the path in `$FSX`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Operations per fsx run.
const OPS: &str = "20000";

/// Longest a run may take (~30–60 s here) before it is killed and the test fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

#[test]
fn fsx_all_operations_on_the_mount() {
    let bin = common::cached_tool("fsx", "FSX");
    assert!(
        bin.exists(),
        "{} is missing: run `bash tests/install-crate.sh fsx 0.2.0` (tests/run.sh does)",
        bin.display()
    );
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fsx/fsx.toml");
    let m = common::Mount::new(&[]);
    let artifacts = tempfile::tempdir().unwrap();
    let start = Instant::now();
    // Fixed seeds: a failure is reproducible with the same command line.
    // Output to files, not pipes: nothing can block on a full pipe.
    let mut runs: Vec<(String, PathBuf, std::process::Child)> =
        [("data.bin", 1), ("a.jsonl", 2), ("b.jsonl", 3)]
            .into_iter()
            .map(|(name, seed)| {
                let out = artifacts.path().join(format!("{name}.out"));
                let f = std::fs::File::create(&out).unwrap();
                let child = Command::new(&bin)
                    .arg("-f")
                    .arg(&config)
                    .args(["-N", OPS, "-S", &seed.to_string(), "-P"])
                    .arg(artifacts.path())
                    .arg(m.mnt.join(name))
                    .stdin(Stdio::null())
                    .stdout(f.try_clone().unwrap())
                    .stderr(f)
                    .spawn()
                    .expect("spawn fsx");
                (format!("{name} (seed {seed})"), out, child)
            })
            .collect();
    let mut failures = Vec::new();
    for (what, out, child) in runs.iter_mut() {
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > RUN_TIMEOUT {
                let _ = child.kill();
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let log = std::fs::read_to_string(out).unwrap_or_default();
        println!("fsx {what}: {status} after {:.0?}", start.elapsed());
        if !status.success() || !log.contains("All operations completed A-OK!") {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            failures.push(format!(
                "fsx {what} exited {status}:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
    }
    let salvage = std::fs::read_dir(m.state.join("salvage"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .map(|md| md.len())
                .sum::<u64>()
        })
        .unwrap_or(0);
    println!("salvage store after the runs: {} KiB", salvage / 1024);
    let state = m.state.clone();
    drop(m);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    common::assert_daemon_log_clean(&state);
}
