//! Lookup counts are exact: after the kernel forgets what it looked up, the inode
//! table is back to (nearly) just the root.

mod common;

use common::Mount;

/// A counter of the open fds of the daemon serving `m`.
fn daemon_fds(m: &Mount) -> impl Fn() -> usize + use<> {
    let pid = common::daemon_pid(&m.mnt).expect("daemon pid");
    move || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    }
}

#[test]
fn forget_releases_inodes() {
    let mut m = Mount::new(&[]);
    let fds = daemon_fds(&m);
    let base = fds();
    for i in 0..2000 {
        std::fs::write(m.mnt.join(format!("f{i}")), b"x").unwrap();
        let _ = std::fs::metadata(m.mnt.join(format!("f{i}"))).unwrap();
    }
    // Evict dentries and inodes: the kernel sends FORGET for each.
    std::fs::write("/proc/sys/vm/drop_caches", b"2").unwrap();
    // FORGETs (and the RELEASEs that pin inodes) arrive asynchronously: wait until the
    // daemon's fds (one per inode) are back near the start, then end the session.
    common::wait_for(10, || fds() < base + 50);
    m.unmount();
    let log = std::fs::read_to_string(m.state.join("sessionfs.log")).unwrap();
    let line = log
        .lines()
        .rfind(|l| l.contains("session ending"))
        .expect("session ending line in daemon log");
    let inodes: usize = line
        .split("inodes=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no inodes=N in: {line}"));
    assert!(
        inodes < 50,
        "inode table kept {inodes} entries after FORGET: {line}"
    );
    assert!(line.contains("open_files=0"), "{line}");
}

/// The daemon holds one fd per inode the kernel knows. With `--max-inodes 300`,
/// touching 3,000 files must neither fail (EMFILE) nor let the daemon's fds grow past
/// the bound: above it, the daemon asks the kernel to drop idle dentries, and the
/// kernel's FORGETs bring the table back down.
#[test]
fn inode_pressure_keeps_fds_bounded() {
    let m = Mount::new(&["--max-inodes", "300"]);
    let fds = daemon_fds(&m);
    let base = fds();
    let mut peak = 0;
    for i in 0..3000 {
        let p = m.mnt.join(format!("f{i}"));
        std::fs::write(&p, format!("{i}\n")).unwrap();
        std::fs::metadata(&p).unwrap();
        if i % 100 == 0 {
            peak = peak.max(fds());
        }
    }
    // Every file is still there and readable through the mount (re-looked-up).
    for i in (0..3000).step_by(7) {
        let s = std::fs::read_to_string(m.mnt.join(format!("f{i}"))).unwrap();
        assert_eq!(s, format!("{i}\n"));
    }
    // The last eviction round's FORGETs arrive asynchronously.
    common::wait_for(10, || fds() < base + 300 + 50);
    let end = fds();
    println!("daemon fds: {base} at start, peak {peak}, {end} at the end");
    // 300 inodes + the daemon's own fds, with slack for the insertions made while a
    // round's FORGETs are in flight (tens of ms); unbounded it would be 3,000+.
    assert!(peak < base + 1000, "peak {peak} fds (base {base})");
    assert!(end < base + 300 + 50, "{end} fds at the end (base {base})");
    let log = std::fs::read_to_string(m.state.join("sessionfs.log")).unwrap();
    assert!(
        log.contains("high-water mark"),
        "no eviction logged:\n{log}"
    );
}
