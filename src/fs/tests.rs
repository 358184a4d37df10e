//! Unit tests of the filesystem core without a mount (as fuse-backend-rs tests its
//! passthrough): a [`SessionFs`] over a temp directory, called through its core
//! functions with a [`Ctx`] of this thread, its journal read back from memory.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::change::SetAttr;
use super::handle::DirHandle;
use super::inode::{Inode, InodeTable, Mutation, ROOT_ID, VIRTUAL_BASE};
use super::*;
use crate::journal::{JournalOptions, View};

/// A filesystem over a temp dir, with a journal in a second temp dir.
struct Fixture {
    fs: SessionFs,
    journal: Arc<Journal>,
    dir: tempfile::TempDir,
    _state: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let journal = Arc::new(Journal::open(JournalOptions::new(state.path().into())).unwrap());
    let root = nix::fcntl::open(
        dir.path(),
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    let fs = SessionFs::new(root, Some(journal.clone()), FsConfig::default()).unwrap();
    Fixture {
        fs,
        journal,
        dir,
        _state: state,
    }
}

/// The calling thread as a FUSE caller.
fn me() -> Ctx {
    Ctx {
        pid: nix::unistd::gettid().as_raw() as u32,
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
    }
}

impl Fixture {
    /// Write `data` to `name` in the backing directory (around the filesystem).
    fn backing_write(&self, name: &str, data: &[u8]) {
        std::fs::write(self.dir.path().join(name), data).unwrap();
    }
    /// LOOKUP `name` in the root.
    fn lookup(&self, name: &str) -> Arc<Inode> {
        self.fs
            .do_lookup(&self.fs.inodes.root(), OsStr::new(name))
            .unwrap()
            .0
    }
    /// Every journal record so far.
    fn records(&self) -> Vec<serde_json::Value> {
        self.journal
            .read(View::All, 0, 64 << 20)
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }
    /// The ops of the records, in order.
    fn ops(&self) -> Vec<String> {
        self.records()
            .iter()
            .map(|r| r["op"].as_str().unwrap().to_string())
            .collect()
    }
}

#[test]
fn mutation_guard_holds_order_and_busy_together() {
    let f = fixture();
    f.backing_write("a", b"x");
    let a = f.lookup("a");
    let g0 = a.changes();
    let m = a.mutate();
    assert_eq!(a.busy_count(), 1);
    assert_ne!(a.changes(), g0, "a change in flight moves the counter");
    // Another change of the same inode waits for this one to end.
    let (tx, rx) = std::sync::mpsc::channel();
    let a2 = a.clone();
    let t = std::thread::spawn(move || {
        let _m = a2.mutate();
        tx.send(a2.busy_count()).unwrap();
    });
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    drop(m);
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
    t.join().unwrap();
    assert_eq!(a.busy_count(), 0);
    assert_eq!(
        a.changes(),
        g0 + 4,
        "each change bumps the counter at start and end"
    );
}

#[test]
fn mutation_many_locks_each_inode_once_in_id_order() {
    let f = fixture();
    f.backing_write("a", b"");
    f.backing_write("b", b"");
    let (a, b) = (f.lookup("a"), f.lookup("b"));
    let ms = Mutation::many(&[&b, &a, &b]);
    assert_eq!(ms.len(), 2);
    assert!(ms[0].inode().id < ms[1].inode().id);
    assert_eq!((a.busy_count(), b.busy_count()), (1, 1));
    drop(ms);
    assert_eq!((a.busy_count(), b.busy_count()), (0, 0));
}

#[test]
fn recorded_change_journals_an_outside_change_first_and_its_own_as_known() {
    let f = fixture();
    f.backing_write("a", b"1");
    let a = f.lookup("a");
    f.fs.do_getattr(&me(), &a).unwrap(); // nothing known yet: nothing to compare
    f.fs.do_setattr(
        &me(),
        &a,
        None,
        SetAttr {
            mode: Some(0o600),
            ..Default::default()
        },
    )
    .unwrap();
    // Our own change is known: a getattr now records nothing.
    f.fs.do_getattr(&me(), &a).unwrap();
    assert_eq!(f.ops(), ["chmod"]);
    let rec = &f.records()[0];
    assert_eq!(rec["path"], "a");
    assert_eq!(rec["mode"], 0o600);
    assert_eq!(rec["result"], "ok");
    assert!(rec["before"].is_object() && rec["after"].is_object());
    // A change around us, then one of ours: the step journals the outside one first.
    std::thread::sleep(Duration::from_millis(5));
    f.backing_write("a", b"22");
    f.fs.do_setxattr(&me(), &a, OsStr::new("user.k"), b"v", 0)
        .unwrap();
    assert_eq!(f.ops(), ["chmod", "external", "setxattr"]);
    f.fs.do_getattr(&me(), &a).unwrap();
    assert_eq!(f.ops().len(), 3, "the setxattr's result is known");
}

/// A stat older than what we know (ctime behind the known one) is a stale view of our
/// own change, never an outside change: no `external` (it once logged one in the
/// mutation storm, with `after.ctime_ns` before `before.ctime_ns`).
#[test]
fn a_stat_older_than_the_known_state_is_no_external_change() {
    let f = fixture();
    f.backing_write("t", b"x\n");
    let inode = f.lookup("t");
    let st = sys::fstat(inode.fd().unwrap().as_fd()).unwrap();
    let mut old = st;
    old.st_ctime -= 1;
    f.fs.mark_known(&inode, &st);
    let before = f.journal.view_len(View::All);
    f.fs.check_external(&inode, &old, 0, inode.changes());
    assert_eq!(
        f.journal.view_len(View::All),
        before,
        "a stale stat was journaled"
    );
    // A newer one still is.
    let mut newer = st;
    newer.st_ctime += 1;
    newer.st_size += 1;
    f.fs.check_external(&inode, &newer, 0, inode.changes());
    let all = f.journal.read(View::All, before, 1 << 20);
    assert!(String::from_utf8_lossy(&all).contains("\"op\":\"external\""));
}

#[test]
fn setxattr_racing_getattr_logs_no_external() {
    let f = Arc::new(fixture());
    f.backing_write("a", b"x");
    let a = f.lookup("a");
    f.fs.do_getattr(&me(), &a).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (f, a, stop) = (f.clone(), a.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    f.fs.do_getattr(&me(), &a).unwrap();
                }
            })
        })
        .collect();
    let t = Instant::now();
    let mut n = 0u32;
    while t.elapsed() < Duration::from_millis(700) {
        let v = n.to_string();
        f.fs.do_setxattr(&me(), &a, OsStr::new("user.k"), v.as_bytes(), 0)
            .unwrap();
        if n % 2 == 1 {
            f.fs.do_removexattr(&me(), &a, OsStr::new("user.k"))
                .unwrap();
        }
        n += 1;
    }
    stop.store(true, Ordering::Relaxed);
    readers.into_iter().for_each(|r| r.join().unwrap());
    let ops = f.ops();
    assert!(n > 100, "only {n} setxattr rounds");
    assert_eq!(ops.iter().filter(|o| *o == "external").count(), 0);
    assert_eq!(ops.iter().filter(|o| *o == "setxattr").count(), n as usize);
}

#[test]
fn rename_over_a_hard_link_keeps_the_other_name_and_marks_it_known() {
    let f = fixture();
    f.backing_write("a", b"old\n");
    f.backing_write("c", b"new\n");
    let root = f.fs.inodes.root();
    let a = f.lookup("a");
    f.fs.do_link(&me(), &a, &root, OsStr::new("b")).unwrap();
    f.fs.do_getattr(&me(), &a).unwrap();
    f.lookup("a"); // reached as `a` again: first name
    f.lookup("c");
    f.fs.do_rename(&me(), &root, OsStr::new("c"), &root, OsStr::new("a"), 0)
        .unwrap();
    assert_eq!(f.fs.inodes.path_of(&a), "b", "`a` is now another file");
    f.fs.do_getattr(&me(), &a).unwrap(); // nlink and ctime moved: by us
    assert_eq!(f.ops(), ["link", "rename"]);
}

#[test]
fn names_follow_links_renames_and_unlinks() {
    let f = fixture();
    f.backing_write("a", b"");
    let root = f.fs.inodes.root();
    let a = f.lookup("a");
    let (r, n) = (ROOT_ID, |s: &str| OsStr::new(s).to_os_string());
    a.add_name(r, &n("b"));
    assert_eq!(
        &*a.name().1,
        "a",
        "a new link is not the name it was reached by"
    );
    a.set_name(r, &n("b"));
    assert_eq!(&*a.name().1, "b");
    assert!(a.has_name(r, &n("a")));
    a.rename_name(r, &n("b"), r, &n("c"));
    assert!(!a.has_name(r, &n("b")) && a.has_name(r, &n("a")));
    assert_eq!(&*a.name().1, "c");
    a.drop_name(r, &n("c"));
    assert_eq!(&*a.name().1, "a");
    a.drop_name(r, &n("a"));
    assert_eq!(&*a.name().1, "a", "the last name stays");
    drop(root);
}

#[test]
fn node_ids_never_reach_reserved_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let root = nix::fcntl::open(
        dir.path(),
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    let st = sys::fstat(root.as_fd()).unwrap();
    let t = InodeTable::new(root, &st, true, 16);
    let dev = st.st_dev;
    assert_eq!(t.id_for(dev, st.st_ino), ROOT_ID);
    assert_eq!(t.id_for(dev, 12345), 12345, "in range: its own number");
    // Numbers that would collide with the root, 0, synthetic or virtual ids.
    let odd = [
        0,
        1,
        1 << 62,
        (1 << 62) + 7,
        VIRTUAL_BASE,
        VIRTUAL_BASE + 1,
        u64::MAX,
    ];
    let mut ids: Vec<u64> = odd.iter().map(|&ino| t.id_for(dev, ino)).collect();
    for (&ino, &id) in odd.iter().zip(&ids) {
        assert!(
            ((1 << 62)..VIRTUAL_BASE).contains(&id),
            "ino {ino:#x} served as {id:#x}"
        );
        assert_eq!(t.id_for(dev, ino), id, "stable");
    }
    // The same number on another device is another node.
    ids.push(t.id_for(dev + 1, 12345));
    ids.push(t.id_for(dev + 1, 1 << 62));
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "ids collide: {ids:?}");
    assert_ne!(t.id_for(dev + 1, 12345), 12345);
}

#[test]
fn per_file_state_is_keyed_by_device_and_inode() {
    use crate::sys::FileKey;
    let f = fixture();
    let caller = f.fs.ids.caller(me().pid, me().uid, me().gid);
    let (x, y) = (FileKey { dev: 1, ino: 7 }, FileKey { dev: 2, ino: 7 });
    f.fs.lanes.declare(&caller, x, Some("cron"));
    assert_eq!(f.fs.lanes.get(&caller, x).as_deref(), Some("cron"));
    assert_eq!(f.fs.lanes.get(&caller, y), None);
}

#[test]
fn unknown_dirent_types_are_resolved_by_stat() {
    let f = fixture();
    std::fs::create_dir(f.dir.path().join("d")).unwrap();
    std::os::unix::fs::symlink("d", f.dir.path().join("l")).unwrap();
    f.backing_write("r", b"");
    let dh = DirHandle::open(f.fs.inodes.root()).unwrap();
    let kinds: std::collections::HashMap<String, u32> = dh
        .entries(0, Vec::new())
        .unwrap()
        .iter()
        .map(|e| (e.name.to_string_lossy().into_owned(), e.kind))
        .collect();
    assert_eq!(kinds["d"], libc::S_IFDIR);
    assert_eq!(kinds["l"], libc::S_IFLNK);
    assert_eq!(kinds["r"], libc::S_IFREG);
    // The DT_UNKNOWN branch itself.
    let root = f.fs.inodes.root();
    assert_eq!(
        super::handle::kind_by_stat(root.fd().unwrap(), OsStr::new("l")),
        libc::S_IFLNK
    );
    assert_eq!(
        super::handle::kind_by_stat(root.fd().unwrap(), OsStr::new("gone")),
        0
    );
}

#[test]
fn virtual_handles_sync_and_seek_like_a_read_only_file() {
    let f = fixture();
    f.backing_write("a", b"x");
    let a = f.lookup("a");
    f.fs.do_setattr(
        &me(),
        &a,
        None,
        SetAttr {
            mode: Some(0o644),
            ..Default::default()
        },
    )
    .unwrap();
    let root = f.fs.inodes.root();
    let va = f.fs.virtual_lookup(&root, OsStr::new(".journal")).unwrap();
    let (id, size) = (va.ino.0, va.size as i64);
    assert!(size > 0);
    assert_eq!(f.fs.do_fsync(&me(), id, id, false), Ok(()));
    assert_eq!(f.fs.do_fsync(&me(), id, id, true), Ok(()));
    assert_eq!(f.fs.do_lseek(id, id, 0, libc::SEEK_DATA), Ok(0));
    assert_eq!(f.fs.do_lseek(id, id, 0, libc::SEEK_HOLE), Ok(size));
    assert_eq!(
        f.fs.do_lseek(id, id, size, libc::SEEK_DATA),
        Err(Errno::ENXIO)
    );
    assert_eq!(f.fs.do_fsync(&me(), 2, 12345, false), Err(Errno::EBADF));
}

/// ctime of the backing file `name`, in ns.
fn backing_ctime(f: &Fixture, name: &str) -> i64 {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(f.dir.path().join(name)).unwrap();
    m.ctime() * 1_000_000_000 + m.ctime_nsec()
}

#[test]
fn no_op_metadata_changes_stop_at_the_daemon() {
    let f = fixture();
    f.backing_write("a", b"x");
    let a = f.lookup("a");
    let chmod = |mode| SetAttr {
        mode: Some(mode),
        ..Default::default()
    };
    f.fs.do_setattr(&me(), &a, None, chmod(0o640)).unwrap();
    let c0 = backing_ctime(&f, "a");
    std::thread::sleep(Duration::from_millis(20));
    // Same mode, same owner, same xattr value: success, nothing forwarded.
    f.fs.do_setattr(&me(), &a, None, chmod(0o640)).unwrap();
    let st = sys::fstat(a.fd().unwrap()).unwrap();
    let owner = SetAttr {
        uid: Some(st.st_uid),
        gid: Some(st.st_gid),
        ..Default::default()
    };
    f.fs.do_setattr(&me(), &a, None, owner).unwrap();
    f.fs.do_setxattr(&me(), &a, OsStr::new("user.k"), b"v", 0)
        .unwrap();
    let c1 = backing_ctime(&f, "a");
    f.fs.do_setxattr(&me(), &a, OsStr::new("user.k"), b"v", libc::XATTR_REPLACE)
        .unwrap();
    assert_eq!(
        f.fs.do_setxattr(&me(), &a, OsStr::new("user.k"), b"v", libc::XATTR_CREATE),
        Err(Errno::EEXIST),
        "XATTR_CREATE of an existing name still fails"
    );
    assert_eq!(
        backing_ctime(&f, "a"),
        c1,
        "same-value setxattr moved ctime"
    );
    assert_ne!(c1, c0, "the first setxattr is a real change");
    let recs = f.records();
    let classes: Vec<(&str, &str, bool)> = recs
        .iter()
        .filter(|r| r["result"] == "ok")
        .map(|r| {
            (
                r["op"].as_str().unwrap(),
                r["class"].as_str().unwrap(),
                r["fence_moved"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        classes,
        [
            ("chmod", "metadata", true),
            ("chmod", "noop", false),
            ("chown", "noop", false),
            ("setxattr", "metadata", true),
            ("setxattr", "noop", false),
        ]
    );
    // A real chmod is forwarded.
    f.fs.do_setattr(&me(), &a, None, chmod(0o600)).unwrap();
    assert_ne!(backing_ctime(&f, "a"), c1);
}

#[test]
fn chown_to_the_same_owner_of_a_suid_file_is_forwarded() {
    let f = fixture();
    f.backing_write("s", b"x");
    let s = f.lookup("s");
    let set = |mode: Option<u32>, owner: Option<(u32, u32)>| SetAttr {
        mode,
        uid: owner.map(|o| o.0),
        gid: owner.map(|o| o.1),
        ..Default::default()
    };
    f.fs.do_setattr(&me(), &s, None, set(Some(0o4755), None))
        .unwrap();
    let st = sys::fstat(s.fd().unwrap()).unwrap();
    f.fs.do_setattr(&me(), &s, None, set(None, Some((st.st_uid, st.st_gid))))
        .unwrap();
    // As on ext4: the chown clears suid, so it was not a no-op.
    assert_eq!(sys::fstat(s.fd().unwrap()).unwrap().st_mode & 0o7777, 0o755);
    assert_eq!(f.records().last().unwrap()["class"], "metadata");
}

#[test]
fn strict_stat_forwards_no_op_changes() {
    let dir = tempfile::tempdir().unwrap();
    let root = nix::fcntl::open(
        dir.path(),
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    let cfg = FsConfig {
        strict_stat: true,
        ..FsConfig::default()
    };
    let fs = SessionFs::new(root, None, cfg).unwrap();
    std::fs::write(dir.path().join("a"), b"x").unwrap();
    let a = fs.do_lookup(&fs.inodes.root(), OsStr::new("a")).unwrap().0;
    let mode = sys::fstat(a.fd().unwrap()).unwrap().st_mode & 0o7777;
    let c0 = sys::fstat(a.fd().unwrap()).unwrap().st_ctime_nsec;
    std::thread::sleep(Duration::from_millis(20));
    let set = SetAttr {
        mode: Some(mode),
        ..Default::default()
    };
    fs.do_setattr(&me(), &a, None, set).unwrap();
    assert_ne!(sys::fstat(a.fd().unwrap()).unwrap().st_ctime_nsec, c0);
}

#[test]
fn synthetic_id_survives_a_forget_between_reply_and_lookup() {
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"x").unwrap();
    let root = nix::fcntl::open(
        dir.path(),
        OFlag::O_PATH | OFlag::O_DIRECTORY,
        Mode::empty(),
    )
    .unwrap();
    let mut rst = sys::fstat(root.as_fd()).unwrap();
    rst.st_dev ^= 0xdead; // every file is "foreign": served under a synthetic id
    let t = InodeTable::new(root, &rst, true, 16);
    let open_f = || {
        let fd = nix::fcntl::openat(
            t.root().fd().unwrap(),
            "f",
            OFlag::O_PATH | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .unwrap();
        let st = sys::fstat(fd.as_fd()).unwrap();
        (fd, st)
    };
    let (fd, st) = open_f();
    let first = t.lookup(fd, &st, ROOT_ID, OsStr::new("f")).0.id;
    let (fd, st) = open_f();
    let sent = t.id_for(st.st_dev, st.st_ino); // a reply carries the id …
    t.forget(first, 1); // … while the FORGET of the last lookup lands
    let filed = t.lookup(fd, &st, ROOT_ID, OsStr::new("f")).0.id;
    assert_eq!(
        filed, sent,
        "the kernel and the daemon disagree on the node id"
    );
    assert_eq!(
        filed, first,
        "one st_ino for the file for the life of the mount"
    );
}

/// A table over a fresh temp dir, its files reached by handles with `cap` cached fds.
fn handle_table(cap: usize, handles: bool) -> (tempfile::TempDir, InodeTable) {
    let dir = tempfile::tempdir().unwrap();
    let root = nix::fcntl::open(
        dir.path(),
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    let st = sys::fstat(root.as_fd()).unwrap();
    let t = InodeTable::new(root, &st, handles, cap);
    (dir, t)
}

/// O_PATH fd and stat of `name` in the table's root.
fn opath_of(t: &InodeTable, name: &str) -> (std::os::fd::OwnedFd, libc::stat) {
    let c = std::ffi::CString::new(name).unwrap();
    let fd = sys::openat(
        t.root().fd().unwrap(),
        &c,
        libc::O_PATH | libc::O_NOFOLLOW,
        0,
    )
    .unwrap();
    let st = sys::fstat(fd.as_fd()).unwrap();
    (fd, st)
}

#[test]
fn inodes_hold_no_fd_beyond_the_cache_and_reopen_from_their_handle() {
    let (dir, t) = handle_table(4, true);
    if t.fds().handles_on().is_err() {
        eprintln!("no file handles here: {:?}", t.fds().handles_on());
        return;
    }
    let mut inodes = Vec::new();
    for i in 0..50 {
        std::fs::write(dir.path().join(format!("f{i}")), format!("{i}")).unwrap();
        let (fd, st) = opath_of(&t, &format!("f{i}"));
        inodes.push(t.lookup(fd, &st, ROOT_ID, OsStr::new(&format!("f{i}"))).0);
    }
    assert_eq!(t.len(), 51);
    assert_eq!(t.pinned(), 1, "only the root holds its fd");
    let open = inodes.iter().filter(|i| i.fd_is_open()).count();
    assert!(open <= 4, "{open} inodes hold an fd, cache of 4");
    assert!(t.fds().cached() <= 4);
    // Every inode still reaches its own file, and has a handle to serialise.
    for (i, inode) in inodes.iter().enumerate() {
        let fd = inode.open(libc::O_RDONLY).unwrap();
        let mut buf = [0u8; 8];
        let n = sys::pread(fd.as_fd(), &mut buf, 0).unwrap();
        assert_eq!(&buf[..n], format!("{i}").as_bytes());
        let st = sys::fstat(inode.fd().unwrap()).unwrap();
        assert_eq!((st.st_dev, st.st_ino), (inode.dev, inode.ino));
        let h = inode.handle().expect("reached by a handle");
        assert_eq!(
            sys::FsHandle::from_parts(h.handle_type(), h.bytes()).as_ref(),
            Some(h)
        );
    }
    assert!(t.fds().cached() <= 4);
    // Exact counts: a second lookup adds one, FORGET of both drops the entry.
    let (fd, st) = opath_of(&t, "f0");
    let again = t.lookup(fd, &st, ROOT_ID, OsStr::new("f0")).0;
    assert!(Arc::ptr_eq(&again, &inodes[0]));
    let id = again.id;
    drop(again);
    inodes.clear();
    t.forget(id, 1);
    assert!(t.get(id).is_some());
    t.forget(id, 1);
    assert!(t.get(id).is_none());
}

#[test]
fn a_reused_inode_number_replaces_the_stale_entry_keeping_the_count() {
    let (dir, t) = handle_table(1, true);
    if t.fds().handles_on().is_err() {
        return;
    }
    std::fs::write(dir.path().join("old"), b"old").unwrap();
    std::fs::write(dir.path().join("new"), b"new").unwrap();
    std::fs::write(dir.path().join("other"), b"").unwrap();
    let (fd, old_st) = opath_of(&t, "old");
    let old = t.lookup(fd, &old_st, ROOT_ID, OsStr::new("old")).0;
    let (fd, st) = opath_of(&t, "old");
    t.lookup(fd, &st, ROOT_ID, OsStr::new("old")); // the kernel holds 2 lookups
    // Other inodes take the cached fds: `old` holds none, so nothing pins it.
    for _ in 0..3 {
        let (fd, st) = opath_of(&t, "other");
        t.lookup(fd, &st, ROOT_ID, OsStr::new("other"));
    }
    t.fds().forget(old.id);
    assert!(!old.fd_is_open());
    // A new file with old's (dev, ino), as after `rm old` around the mount and an
    // allocation that reuses the number (forged here: ext4 does not reuse at once).
    let (fd, mut st) = opath_of(&t, "new");
    st.st_ino = old_st.st_ino;
    let (new, _) = t.lookup(fd, &st, ROOT_ID, OsStr::new("new"));
    assert_eq!(new.id, old.id, "same node id: the kernel's inode number");
    assert!(!Arc::ptr_eq(&new, &old), "the stale entry was replaced");
    assert_ne!(new.handle(), old.handle());
    let rfd = new.open(libc::O_RDONLY).unwrap();
    let mut buf = [0u8; 8];
    let n = sys::pread(rfd.as_fd(), &mut buf, 0).unwrap();
    assert_eq!(&buf[..n], b"new", "the new entry reaches the new file");
    assert_eq!(&*new.name().1, "new");
    // The kernel's 2 earlier lookups of the id plus this one: 3 FORGETs to go.
    drop((new, old));
    t.forget(st.st_ino, 2);
    assert!(t.get(st.st_ino).is_some());
    t.forget(st.st_ino, 1);
    assert!(t.get(st.st_ino).is_none());
}

#[test]
fn a_known_inode_with_its_fd_open_is_not_taken_for_stale() {
    let (dir, t) = handle_table(16, true);
    if t.fds().handles_on().is_err() {
        return;
    }
    std::fs::write(dir.path().join("a"), b"a").unwrap();
    let (fd, st) = opath_of(&t, "a");
    let a = t.lookup(fd, &st, ROOT_ID, OsStr::new("a")).0;
    assert!(a.fd_is_open());
    let (fd, st) = opath_of(&t, "a");
    assert!(Arc::ptr_eq(
        &t.lookup(fd, &st, ROOT_ID, OsStr::new("a")).0,
        &a
    ));
}

#[test]
fn without_handles_every_inode_pins_its_fd() {
    let (dir, t) = handle_table(4, false);
    for i in 0..10 {
        std::fs::write(dir.path().join(format!("f{i}")), b"").unwrap();
        let (fd, st) = opath_of(&t, &format!("f{i}"));
        let inode = t.lookup(fd, &st, ROOT_ID, OsStr::new(&format!("f{i}"))).0;
        assert!(inode.is_pinned() && inode.handle().is_none());
    }
    assert_eq!(t.pinned(), 11);
    assert_eq!(t.fds().cached(), 0);
    assert_eq!(t.idle_lru(100, true).len(), 10);
}

#[test]
fn a_file_unlinked_through_the_mount_keeps_answering_by_its_pinned_fd() {
    let f = fixture();
    f.backing_write("a", b"abc");
    let a = f.lookup("a");
    let root = f.fs.inodes.root();
    f.fs.do_unlink(&me(), &root, OsStr::new("a"), false)
        .unwrap();
    assert!(a.is_pinned(), "its last name is gone: pinned");
    // Nothing else holds the backing inode now: drop the caches, as time would.
    let _ = std::fs::write("/proc/sys/vm/drop_caches", b"2");
    let st = sys::fstat(a.fd().unwrap()).unwrap();
    assert_eq!(st.st_nlink, 0);
    assert_eq!(st.st_size, 3);
    // A removed directory too (its handle never opens once it is removed).
    std::fs::create_dir(f.dir.path().join("d")).unwrap();
    let d = f.lookup("d");
    f.fs.do_unlink(&me(), &root, OsStr::new("d"), true).unwrap();
    assert!(d.is_pinned());
    assert!(sys::fstat(d.fd().unwrap()).is_ok());
    // A file with another link left is not pinned (its handle still opens).
    f.backing_write("b", b"");
    std::fs::hard_link(f.dir.path().join("b"), f.dir.path().join("b2")).unwrap();
    let b = f.lookup("b");
    f.fs.do_unlink(&me(), &root, OsStr::new("b"), false)
        .unwrap();
    assert_eq!(b.is_pinned(), f.fs.inodes.fds().handles_on().is_err());
}

/// After a restart on a live connection, node ids the kernel holds are found again in
/// the backing tree (a file in a subdirectory, with its directory), but an inode born
/// after the crash is not adopted: it may have got the number of a file the crash
/// took (unlinked while open), which the kernel's node id still names.
#[test]
fn a_resumed_daemon_adopts_old_node_ids_and_refuses_inodes_born_after_the_crash() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/old.jsonl"), b"{}\n").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let crashed = crate::clock::now_ns();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(dir.path().join("new.jsonl"), b"{}\n").unwrap();
    let ino = |p: &str| std::fs::metadata(dir.path().join(p)).unwrap().ino();
    let root = nix::fcntl::open(
        dir.path(),
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    let fs = SessionFs::new(
        root,
        None,
        FsConfig {
            resumed: true,
            resumed_since_ns: Some(crashed),
            ..FsConfig::default()
        },
    )
    .unwrap();
    let old = fs
        .inode(ino("sub/old.jsonl"))
        .expect("an old node id adopted");
    assert_eq!(fs.inodes.path_of(&old), "sub/old.jsonl");
    assert!(
        fs.inodes.get(ino("sub")).is_some(),
        "its directory adopted too"
    );
    let birth = crate::sys::identity_at(fs.inodes.root().fd().unwrap().as_fd(), c"new.jsonl")
        .unwrap()
        .1;
    if birth > 0 {
        assert_eq!(
            fs.inode(ino("new.jsonl")).err(),
            Some(Errno::ENOENT),
            "an inode born after the crash was adopted"
        );
    }
    // Not resumed: an unknown node id is simply unknown.
    let fresh = fixture();
    fresh.backing_write("x", b"x");
    let x = std::fs::metadata(fresh.dir.path().join("x")).unwrap().ino();
    assert_eq!(fresh.fs.inode(x).err(), Some(Errno::ENOENT));
}
