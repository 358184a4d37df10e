//! Differential tests: the same operation sequence, error cases included, on a plain
//! directory and on a sessionfs mount of another directory. Results, errno, contents
//! and stat fields (all but dev; ino only as equalities) must be identical.

mod common;

use std::ffi::CString;
use std::fmt::Write as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use common::Mount;

/// One step's outcome as text: `ok <detail>` or the errno name.
type Out = String;

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn errno_name() -> String {
    format!("{:?}", nix::errno::Errno::last())
}

fn chk(r: libc::c_int) -> Result<libc::c_int, String> {
    if r < 0 { Err(errno_name()) } else { Ok(r) }
}

fn open(p: &Path, flags: i32, mode: u32) -> Result<OwnedFd, String> {
    // SAFETY: valid C string; the returned fd is owned by the OwnedFd.
    let fd = chk(unsafe { libc::open(c(p).as_ptr(), flags | libc::O_CLOEXEC, mode) })?;
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Stat fields compared between runs: type/mode, nlink, uid, gid, size, blocks, rdev.
/// Times are compared by the steps that set them explicitly, and as "moved" flags.
fn st(p: &Path) -> Out {
    match nix::sys::stat::lstat(p) {
        Ok(s) => format!(
            "mode={:o} nlink={} uid={} gid={} size={} blocks={} rdev={}",
            s.st_mode, s.st_nlink, s.st_uid, s.st_gid, s.st_size, s.st_blocks, s.st_rdev
        ),
        Err(e) => format!("{e:?}"),
    }
}

fn times(p: &Path) -> (i64, i64, i64, i64) {
    let s = nix::sys::stat::lstat(p).unwrap();
    (s.st_mtime, s.st_mtime_nsec, s.st_ctime, s.st_ctime_nsec)
}

fn ino(p: &Path) -> u64 {
    nix::sys::stat::lstat(p).map(|s| s.st_ino).unwrap_or(0)
}

fn res<T>(r: Result<T, String>) -> Out {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => e,
    }
}

fn listing(p: &Path) -> Out {
    match std::fs::read_dir(p) {
        Ok(rd) => {
            let mut v: Vec<String> = rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v.join(",")
        }
        Err(e) => format!("err {}", e.raw_os_error().unwrap_or(0)),
    }
}

/// The script. Every line of the returned log is compared between the two runs.
fn script(root: &Path) -> Vec<String> {
    let w = root.join("w");
    std::fs::create_dir(&w).unwrap();
    let mut log = Vec::new();
    let mut step = |name: &str, out: Out| log.push(format!("{name}: {out}"));
    let p = |n: &str| w.join(n);

    // --- create / open flags ---
    let f = open(
        &p("a"),
        libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
        0o640,
    );
    step(
        "create excl",
        res(f.as_ref().map(|_| ()).map_err(|e| e.clone())),
    );
    step(
        "create excl again",
        res(open(
            &p("a"),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
            0o640,
        )),
    );
    step("stat a", st(&p("a")));
    let fd = f.unwrap();
    step(
        "write",
        res(nix::unistd::write(&fd, b"hello world\n").map_err(|e| format!("{e:?}"))),
    );
    step(
        "pwrite hole",
        res(nix::sys::uio::pwrite(&fd, b"tail", 100_000).map_err(|e| format!("{e:?}"))),
    );
    step("stat after hole", st(&p("a")));
    // lseek SEEK_DATA / SEEK_HOLE
    let rfd = open(&p("a"), libc::O_RDONLY, 0).unwrap();
    // SAFETY: plain lseek on a live fd.
    let data = unsafe { libc::lseek(rfd.as_raw_fd(), 0, libc::SEEK_DATA) };
    // SAFETY: as above.
    let hole = unsafe { libc::lseek(rfd.as_raw_fd(), 0, libc::SEEK_HOLE) };
    step("seek data/hole", format!("{data} {hole}"));
    // SAFETY: as above; past EOF must give ENXIO.
    let past = unsafe { libc::lseek(rfd.as_raw_fd(), 1 << 30, libc::SEEK_DATA) };
    step(
        "seek data past eof",
        if past < 0 {
            errno_name()
        } else {
            past.to_string()
        },
    );
    let mut buf = vec![0u8; 16];
    step(
        "pread",
        format!(
            "{:?}",
            nix::sys::uio::pread(&rfd, &mut buf, 0).map(|n| buf[..n].to_vec())
        ),
    );
    step(
        "read whole",
        format!(
            "{:?}",
            std::fs::read(p("a")).map(|v| (v.len(), v[..12].to_vec(), v[v.len() - 4..].to_vec()))
        ),
    );
    drop(rfd);
    drop(fd);

    // O_APPEND writes go to EOF whatever the offset
    let afd = open(&p("a"), libc::O_WRONLY | libc::O_APPEND, 0).unwrap();
    step(
        "append",
        res(nix::sys::uio::pwrite(&afd, b"APP", 0).map_err(|e| format!("{e:?}"))),
    );
    drop(afd);
    step("size after append", st(&p("a")));
    // O_TRUNC
    let before = times(&p("a"));
    std::thread::sleep(std::time::Duration::from_millis(20));
    let t = open(&p("a"), libc::O_WRONLY | libc::O_TRUNC, 0);
    step("open trunc", res(t.map(|_| ())));
    step("stat after trunc", st(&p("a")));
    step("trunc moved mtime", (times(&p("a")) != before).to_string());
    // O_NOFOLLOW on a symlink
    step(
        "symlink",
        res(std::os::unix::fs::symlink("a", p("sl")).map_err(|e| e.to_string())),
    );
    step("readlink", format!("{:?}", std::fs::read_link(p("sl"))));
    step(
        "readlink regular",
        format!(
            "{:?}",
            std::fs::read_link(p("a")).map_err(|e| e.raw_os_error())
        ),
    );
    step(
        "open nofollow symlink",
        res(open(&p("sl"), libc::O_RDONLY | libc::O_NOFOLLOW, 0)),
    );
    step(
        "open through symlink",
        res(open(&p("sl"), libc::O_RDONLY, 0)),
    );
    step("stat symlink", st(&p("sl")));
    step(
        "create nofollow new",
        res(open(
            &p("nf"),
            libc::O_CREAT | libc::O_WRONLY | libc::O_NOFOLLOW,
            0o600,
        )),
    );
    step("open missing", res(open(&p("missing"), libc::O_RDONLY, 0)));
    step("open dir as file wr", res(open(&w, libc::O_WRONLY, 0)));
    step(
        "open file O_DIRECTORY",
        res(open(&p("a"), libc::O_RDONLY | libc::O_DIRECTORY, 0)),
    );

    // --- setattr ---
    step(
        "chmod",
        res(chk(unsafe { libc::chmod(c(&p("a")).as_ptr(), 0o4755) })),
    );
    step("stat chmod", st(&p("a")));
    step(
        "chown",
        res(chk(unsafe { libc::chown(c(&p("a")).as_ptr(), 1, 2) })),
    );
    step("stat chown (suid cleared)", st(&p("a")));
    step(
        "lchown symlink",
        res(chk(unsafe { libc::lchown(c(&p("sl")).as_ptr(), 3, 4) })),
    );
    step("stat lchown", st(&p("sl")));
    step(
        "truncate grow",
        res(chk(unsafe { libc::truncate(c(&p("a")).as_ptr(), 5000) })),
    );
    step("stat truncate", st(&p("a")));
    let tfd = open(&p("a"), libc::O_RDWR, 0).unwrap();
    step(
        "ftruncate",
        res(chk(unsafe { libc::ftruncate(tfd.as_raw_fd(), 7) })),
    );
    step("stat ftruncate", st(&p("a")));
    step(
        "fallocate",
        res(chk(unsafe {
            libc::fallocate(tfd.as_raw_fd(), 0, 0, 65536)
        })),
    );
    step("stat fallocate", st(&p("a")));
    step(
        "punch hole",
        res(chk(unsafe {
            libc::fallocate(
                tfd.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                4096,
                8192,
            )
        })),
    );
    step("stat punch", st(&p("a")));
    step("fsync", res(chk(unsafe { libc::fsync(tfd.as_raw_fd()) })));
    step(
        "fdatasync",
        res(chk(unsafe { libc::fdatasync(tfd.as_raw_fd()) })),
    );
    drop(tfd);
    step(
        "truncate dir",
        res(chk(unsafe { libc::truncate(c(&w).as_ptr(), 0) })),
    );
    // utimens: explicit, OMIT, NOW
    let ts = [
        libc::timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 123_456_789,
        },
        libc::timespec {
            tv_sec: 1_100_000_000,
            tv_nsec: 987_654_321,
        },
    ];
    step(
        "utimens explicit",
        res(chk(unsafe {
            libc::utimensat(libc::AT_FDCWD, c(&p("a")).as_ptr(), ts.as_ptr(), 0)
        })),
    );
    let s = nix::sys::stat::stat(&p("a")).unwrap();
    step(
        "times explicit",
        format!(
            "{} {} {} {}",
            s.st_atime, s.st_atime_nsec, s.st_mtime, s.st_mtime_nsec
        ),
    );
    let omit = [
        libc::timespec {
            tv_sec: 5,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: 1_200_000_000,
            tv_nsec: 1,
        },
    ];
    step(
        "utimens omit atime",
        res(chk(unsafe {
            libc::utimensat(libc::AT_FDCWD, c(&p("a")).as_ptr(), omit.as_ptr(), 0)
        })),
    );
    let s = nix::sys::stat::stat(&p("a")).unwrap();
    step(
        "times omit",
        format!(
            "{} {} {} {}",
            s.st_atime, s.st_atime_nsec, s.st_mtime, s.st_mtime_nsec
        ),
    );
    let now = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
    ];
    step(
        "utimens now",
        res(chk(unsafe {
            libc::utimensat(libc::AT_FDCWD, c(&p("a")).as_ptr(), now.as_ptr(), 0)
        })),
    );
    let s = nix::sys::stat::stat(&p("a")).unwrap();
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    step("atime is now", ((s.st_atime - wall).abs() < 5).to_string());
    step("mtime kept", format!("{} {}", s.st_mtime, s.st_mtime_nsec));
    step(
        "utimens symlink nofollow",
        res(chk(unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c(&p("sl")).as_ptr(),
                ts.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })),
    );
    let s = nix::sys::stat::lstat(&p("sl")).unwrap();
    step(
        "symlink times",
        format!("{} {}", s.st_mtime, s.st_mtime_nsec),
    );

    // --- directories ---
    step(
        "mkdir",
        res(std::fs::create_dir(p("d")).map_err(|e| e.to_string())),
    );
    step(
        "mkdir again",
        res(chk(unsafe { libc::mkdir(c(&p("d")).as_ptr(), 0o755) })),
    );
    step(
        "mkdir mode",
        res(chk(unsafe { libc::mkdir(c(&p("d2")).as_ptr(), 0o2710) })),
    );
    step("stat d2", st(&p("d2")));
    step(
        "rmdir",
        res(chk(unsafe { libc::rmdir(c(&p("d2")).as_ptr()) })),
    );
    std::fs::write(p("d/inner"), b"x").unwrap();
    step(
        "rmdir nonempty",
        res(chk(unsafe { libc::rmdir(c(&p("d")).as_ptr()) })),
    );
    step(
        "rmdir file",
        res(chk(unsafe { libc::rmdir(c(&p("a")).as_ptr()) })),
    );
    step(
        "unlink dir",
        res(chk(unsafe { libc::unlink(c(&p("d")).as_ptr()) })),
    );
    step(
        "unlink missing",
        res(chk(unsafe { libc::unlink(c(&p("nope")).as_ptr()) })),
    );
    step("stat d nlink", st(&p("d")));
    step(
        "dotdot of w is root",
        (ino(&w.join("..")) == ino(root)).to_string(),
    );
    let dfd = open(&p("d"), libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
    step(
        "fsyncdir",
        res(chk(unsafe { libc::fsync(dfd.as_raw_fd()) })),
    );
    drop(dfd);

    // --- links and renames ---
    step(
        "link",
        res(chk(unsafe {
            libc::link(c(&p("a")).as_ptr(), c(&p("a2")).as_ptr())
        })),
    );
    step("link same ino", (ino(&p("a")) == ino(&p("a2"))).to_string());
    step("stat link nlink", st(&p("a")));
    step(
        "link exists",
        res(chk(unsafe {
            libc::link(c(&p("a")).as_ptr(), c(&p("a2")).as_ptr())
        })),
    );
    step(
        "link dir",
        res(chk(unsafe {
            libc::link(c(&p("d")).as_ptr(), c(&p("d3")).as_ptr())
        })),
    );
    step(
        "unlink link",
        res(chk(unsafe { libc::unlink(c(&p("a2")).as_ptr()) })),
    );
    step("stat after unlink link", st(&p("a")));
    std::fs::write(p("b"), b"bbbb").unwrap();
    let ia = ino(&p("a"));
    step(
        "rename over",
        res(std::fs::rename(p("a"), p("b")).map_err(|e| e.to_string())),
    );
    step("rename kept ino", (ino(&p("b")) == ia).to_string());
    step("renamed gone", st(&p("a")));
    std::fs::write(p("c"), b"cc").unwrap();
    let rn = |a: &str, b: &str, fl: u32| {
        res(chk(unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                libc::AT_FDCWD,
                c(&p(a)).as_ptr(),
                libc::AT_FDCWD,
                c(&p(b)).as_ptr(),
                fl,
            ) as libc::c_int
        }))
    };
    step(
        "rename noreplace existing",
        rn("b", "c", libc::RENAME_NOREPLACE),
    );
    step(
        "rename noreplace new",
        rn("c", "c2", libc::RENAME_NOREPLACE),
    );
    step("rename exchange", rn("b", "c2", libc::RENAME_EXCHANGE));
    step(
        "exchanged contents",
        format!(
            "{:?} {:?}",
            std::fs::read(p("b")).map(|v| v.len()),
            std::fs::read(p("c2")).map(|v| v.len())
        ),
    );
    step(
        "rename exchange missing",
        rn("b", "zz", libc::RENAME_EXCHANGE),
    );
    step("rename into dir", rn("c2", "d/c2", 0));
    step("rename dir over nonempty dir", {
        std::fs::create_dir(p("e")).unwrap();
        rn("e", "d", 0)
    });
    step("rename file over dir", rn("b", "e", 0));
    step("rename missing", rn("zz", "yy", 0));
    step("listing", listing(&w));
    step("listing d", listing(&p("d")));

    // --- special files ---
    step(
        "mkfifo",
        res(chk(unsafe { libc::mkfifo(c(&p("fifo")).as_ptr(), 0o640) })),
    );
    step("stat fifo", st(&p("fifo")));
    step(
        "mknod sock",
        res(chk(unsafe {
            libc::mknod(c(&p("sock")).as_ptr(), libc::S_IFSOCK | 0o600, 0)
        })),
    );
    step("stat sock", st(&p("sock")));
    step(
        "mknod chr",
        res(chk(unsafe {
            libc::mknod(
                c(&p("null")).as_ptr(),
                libc::S_IFCHR | 0o600,
                libc::makedev(1, 3),
            )
        })),
    );
    step("stat chr", st(&p("null")));

    // --- xattrs ---
    let xa = |f: &str, n: &str| {
        CString::new(n.to_string())
            .map(|nn| (c(&p(f)), nn))
            .unwrap()
    };
    let (fp, name) = xa("b", "user.test");
    step(
        "setxattr",
        res(chk(unsafe {
            libc::setxattr(fp.as_ptr(), name.as_ptr(), b"v1".as_ptr().cast(), 2, 0)
        })),
    );
    step(
        "setxattr create existing",
        res(chk(unsafe {
            libc::setxattr(
                fp.as_ptr(),
                name.as_ptr(),
                b"v2".as_ptr().cast(),
                2,
                libc::XATTR_CREATE,
            )
        })),
    );
    let mut vb = [0u8; 64];
    let n = unsafe { libc::getxattr(fp.as_ptr(), name.as_ptr(), vb.as_mut_ptr().cast(), vb.len()) };
    step(
        "getxattr",
        if n < 0 {
            errno_name()
        } else {
            String::from_utf8_lossy(&vb[..n as usize]).into_owned()
        },
    );
    let n = unsafe { libc::getxattr(fp.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
    step("getxattr size", n.to_string());
    let n = unsafe { libc::getxattr(fp.as_ptr(), name.as_ptr(), vb.as_mut_ptr().cast(), 1) };
    step(
        "getxattr small buf",
        if n < 0 { errno_name() } else { n.to_string() },
    );
    let (_, missing) = xa("b", "user.missing");
    let n = unsafe {
        libc::getxattr(
            fp.as_ptr(),
            missing.as_ptr(),
            vb.as_mut_ptr().cast(),
            vb.len(),
        )
    };
    step(
        "getxattr missing",
        if n < 0 { errno_name() } else { n.to_string() },
    );
    let n = unsafe { libc::listxattr(fp.as_ptr(), vb.as_mut_ptr().cast(), vb.len()) };
    step(
        "listxattr",
        if n < 0 {
            errno_name()
        } else {
            format!("{:?}", &vb[..n as usize])
        },
    );
    step(
        "removexattr",
        res(chk(unsafe {
            libc::removexattr(fp.as_ptr(), name.as_ptr())
        })),
    );
    step(
        "removexattr again",
        res(chk(unsafe {
            libc::removexattr(fp.as_ptr(), name.as_ptr())
        })),
    );

    // --- access / statfs ---
    step(
        "access rw",
        res(chk(unsafe {
            libc::access(c(&p("b")).as_ptr(), libc::R_OK | libc::W_OK)
        })),
    );
    step(
        "access missing",
        res(chk(unsafe {
            libc::access(c(&p("zz")).as_ptr(), libc::F_OK)
        })),
    );
    let sv = nix::sys::statvfs::statvfs(&w).unwrap();
    step(
        "statfs",
        format!("bsize={} namemax={}", sv.block_size(), sv.name_max()),
    );

    // --- copy_file_range ---
    std::fs::write(p("src"), vec![7u8; 10_000]).unwrap();
    let s_fd = open(&p("src"), libc::O_RDONLY, 0).unwrap();
    let d_fd = open(&p("dst"), libc::O_CREAT | libc::O_WRONLY, 0o644).unwrap();
    let mut off_in: i64 = 100;
    let mut off_out: i64 = 0;
    let n = unsafe {
        libc::copy_file_range(
            s_fd.as_raw_fd(),
            &mut off_in,
            d_fd.as_raw_fd(),
            &mut off_out,
            5000,
            0,
        )
    };
    step("copy_file_range", format!("{n} {off_in} {off_out}"));
    drop((s_fd, d_fd));
    step(
        "dst content",
        format!(
            "{:?}",
            std::fs::read(p("dst")).map(|v| (v.len(), v.iter().all(|b| *b == 7)))
        ),
    );

    // --- readdir with many entries (offsets across several READDIR calls) ---
    std::fs::create_dir(p("many")).unwrap();
    for i in 0..500 {
        std::fs::write(p(&format!("many/file-with-a-longish-name-{i:04}")), b"").unwrap();
    }
    let l = listing(&p("many"));
    step("many count", l.split(',').count().to_string());
    step(
        "many hash",
        format!(
            "{:x}",
            l.bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64))
        ),
    );
    let mut out = String::new();
    for e in std::fs::read_dir(&w).unwrap() {
        let e = e.unwrap();
        let _ = write!(
            out,
            "{}={:?};",
            e.file_name().to_string_lossy(),
            e.file_type().unwrap()
        );
    }
    let mut parts: Vec<&str> = out.split(';').collect();
    parts.sort();
    step("dirent types", parts.join(";"));
    log
}

#[test]
fn same_results_on_plain_dir_and_mount() {
    let plain = tempfile::tempdir().unwrap();
    let expected = script(plain.path());
    let m = Mount::new(&[]);
    let got = script(&m.mnt);
    let mut diffs = Vec::new();
    for (i, (a, b)) in expected.iter().zip(got.iter()).enumerate() {
        if a != b {
            diffs.push(format!("step {i}: plain `{a}` vs mount `{b}`"));
        }
    }
    if std::env::var_os("DIFF_DUMP").is_some() {
        for (a, b) in expected.iter().zip(got.iter()) {
            eprintln!("{a}\n   {b}");
        }
    }
    assert_eq!(expected.len(), got.len());
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
    // The backing tree holds exactly what the mount showed.
    assert_eq!(listing(&m.src.join("w")), listing(&plain.path().join("w")));
}
