//! Lookup counts are exact: after the kernel forgets what it looked up, the inode
//! table is back to (nearly) just the root.

mod common;

use common::Mount;

#[test]
fn forget_releases_inodes() {
    let mut m = Mount::new(&[]);
    for i in 0..2000 {
        std::fs::write(m.mnt.join(format!("f{i}")), b"x").unwrap();
        let _ = std::fs::metadata(m.mnt.join(format!("f{i}"))).unwrap();
    }
    // Evict dentries and inodes: the kernel sends FORGET for each.
    std::fs::write("/proc/sys/vm/drop_caches", b"2").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
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
