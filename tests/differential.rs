//! Differential tests: the same operation sequence, error cases included, on a plain
//! directory and on a sessionfs mount of another directory. Results, errno, contents
//! and stat fields (all but dev; ino only as equalities) must be identical.
//!
//! Timestamps: after every step the log records, for the step's target path(s) and
//! their parent directories, whether mtime moved and whether ctime moved (`m+`/`m=`,
//! `c+`/`c=`), so "mtime/ctime change when, and only when, the plain directory's do" is
//! part of the comparison. On the mount run the same flags are also taken on the
//! backing directory and must agree with what the mount shows. Read-only steps must
//! leave the backing file's mtime_ns and ctime_ns exactly as they were.

mod common;

use std::ffi::CString;
use std::fmt::Write as _;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{AT_FDCWD, FallocateFlags, OFlag, RenameFlags};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{AccessFlags, Gid, Uid, UnlinkatFlags, Whence};

use common::Mount;

/// A 4 KiB buffer aligned for O_DIRECT.
#[repr(C, align(4096))]
struct AlignedBlock([u8; 4096]);

/// One step's outcome as text: `ok <detail>` or the errno name.
type Out = String;

/// Wait until the kernel's coarse clock (which file timestamps come from) has moved
/// past its value now, so that a change made next lands on a timestamp different from
/// every earlier one. Polled rather than slept: a tick may stall for several jiffies on
/// a VM whose timekeeping vCPU is preempted.
fn next_tick() {
    use nix::time::{ClockId, clock_gettime};
    let now = || clock_gettime(ClockId::CLOCK_REALTIME_COARSE).unwrap();
    let t0 = now();
    while now() <= t0 {
        std::thread::sleep(Duration::from_millis(1));
    }
}

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
    nix::fcntl::open(
        p,
        OFlag::from_bits_retain(flags) | OFlag::O_CLOEXEC,
        Mode::from_bits_retain(mode),
    )
    .map_err(|e| format!("{e:?}"))
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

fn ino(p: &Path) -> u64 {
    nix::sys::stat::lstat(p).map(|s| s.st_ino).unwrap_or(0)
}

/// [`res`] of an open, keeping the fd (if any) in `slot` for later steps.
fn keep(o: Result<OwnedFd, String>, slot: &mut Option<OwnedFd>) -> Out {
    let out = res(o.as_ref().map(|_| ()).map_err(Clone::clone));
    *slot = o.ok();
    out
}

fn res<T>(r: Result<T, String>) -> Out {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => e,
    }
}

fn nres<T>(r: nix::Result<T>) -> Out {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("{e:?}"),
    }
}

fn nval<T: std::fmt::Display>(r: nix::Result<T>) -> Out {
    match r {
        Ok(v) => v.to_string(),
        Err(e) => format!("{e:?}"),
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

/// (mtime_ns, ctime_ns) of `p` itself (lstat), `None` when it does not exist.
type Stamp = Option<(i64, i64)>;

fn stamp(p: &Path) -> Stamp {
    nix::sys::stat::lstat(p).ok().map(|s| {
        (
            s.st_mtime * 1_000_000_000 + s.st_mtime_nsec,
            s.st_ctime * 1_000_000_000 + s.st_ctime_nsec,
        )
    })
}

/// `m+c=`-style flags: did mtime / ctime move between the two stamps.
fn moved(before: Stamp, after: Stamp) -> String {
    let mark = |b: bool| if b { '+' } else { '=' };
    match (before, after) {
        (Some(a), Some(b)) => format!("m{}c{}", mark(a.0 != b.0), mark(a.1 != b.1)),
        (None, Some(_)) => "new".into(),
        (Some(_), None) => "gone".into(),
        (None, None) => "none".into(),
    }
}

/// One run of the script: where it operates, what backs it, and what it saw.
struct Run {
    /// Where the operations go (the plain dir, or the mountpoint).
    root: PathBuf,
    /// The directory behind `root` (`root` itself for the plain dir).
    backing: PathBuf,
    /// One line per step; compared between the runs.
    log: Vec<String>,
    /// Read-only steps that moved a backing timestamp, and mount views whose
    /// moved flags disagree with the backing's.
    problems: Vec<String>,
}

impl Run {
    fn new(root: &Path, backing: &Path) -> Run {
        Run {
            root: root.to_path_buf(),
            backing: backing.to_path_buf(),
            log: Vec::new(),
            problems: Vec::new(),
        }
    }

    fn rel(&self, p: &Path) -> String {
        let r = p.strip_prefix(&self.root).unwrap().to_string_lossy();
        if r.is_empty() { ".".into() } else { r.into() }
    }

    fn backing_of(&self, p: &Path) -> PathBuf {
        self.backing.join(p.strip_prefix(&self.root).unwrap())
    }

    /// The targets and their parents, each once.
    fn watched(&self, targets: &[&Path]) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = Vec::new();
        for t in targets {
            for q in [Some(*t), t.parent()].into_iter().flatten() {
                if q.starts_with(&self.root) && !v.iter().any(|x| x == q) {
                    v.push(q.to_path_buf());
                }
            }
        }
        v
    }

    /// A step that may change things: its outcome and the moved flags of its targets
    /// and their parents go to the log.
    fn step(&mut self, name: &str, targets: &[&Path], f: impl FnOnce() -> Out) {
        self.run(name, targets, false, f);
    }

    /// A step that must not change anything: as `step`, and the backing's stamps of
    /// the targets and their parents must be exactly what they were.
    fn ro(&mut self, name: &str, targets: &[&Path], f: impl FnOnce() -> Out) {
        self.run(name, targets, true, f);
    }

    fn run(&mut self, name: &str, targets: &[&Path], read_only: bool, f: impl FnOnce() -> Out) {
        let watch = self.watched(targets);
        let back: Vec<PathBuf> = watch.iter().map(|p| self.backing_of(p)).collect();
        next_tick();
        let v0: Vec<Stamp> = watch.iter().map(|p| stamp(p)).collect();
        let b0: Vec<Stamp> = back.iter().map(|p| stamp(p)).collect();
        let out = f();
        let v1: Vec<Stamp> = watch.iter().map(|p| stamp(p)).collect();
        let b1: Vec<Stamp> = back.iter().map(|p| stamp(p)).collect();
        let mut flags = Vec::new();
        for (i, p) in watch.iter().enumerate() {
            let rel = self.rel(p);
            let view = moved(v0[i], v1[i]);
            let backing = moved(b0[i], b1[i]);
            if view != backing {
                self.problems.push(format!(
                    "{name}: {rel} moved {view} as seen, {backing} on the backing"
                ));
            }
            if read_only && b0[i] != b1[i] {
                self.problems.push(format!(
                    "read-only step {name}: backing {rel} (mtime_ns, ctime_ns) {:?} -> {:?}",
                    b0[i], b1[i]
                ));
            }
            flags.push(format!("{rel}:{view}"));
        }
        self.log
            .push(format!("{name}: {out} [{}]", flags.join(" ")));
    }

    /// Mount only: read a virtual journal file; nothing in `watch` (nor their parents)
    /// may move, on the mount or on the backing, and the read must succeed.
    fn read_virtual(&mut self, name: &str, file: &Path, watch: &[&Path]) -> Vec<u8> {
        let watch = self.watched(watch);
        let back: Vec<PathBuf> = watch.iter().map(|p| self.backing_of(p)).collect();
        next_tick();
        let v0: Vec<Stamp> = watch.iter().map(|p| stamp(p)).collect();
        let b0: Vec<Stamp> = back.iter().map(|p| stamp(p)).collect();
        let data = std::fs::read(file);
        let v1: Vec<Stamp> = watch.iter().map(|p| stamp(p)).collect();
        let b1: Vec<Stamp> = back.iter().map(|p| stamp(p)).collect();
        for (i, p) in watch.iter().enumerate() {
            if v0[i] != v1[i] || b0[i] != b1[i] {
                self.problems.push(format!(
                    "{name} moved {}: seen {:?} -> {:?}, backing {:?} -> {:?}",
                    self.rel(p),
                    v0[i],
                    v1[i],
                    b0[i],
                    b1[i]
                ));
            }
        }
        match data {
            Ok(d) => d,
            Err(e) => {
                self.problems.push(format!("{name}: {e}"));
                Vec::new()
            }
        }
    }
}

/// The script. Every line of the log is compared between the two runs.
fn script(r: &mut Run) {
    let root = r.root.clone();
    let w = root.join("w");
    std::fs::create_dir(&w).unwrap();
    let p = |n: &str| w.join(n);
    let a = p("a");
    let sl = p("sl");
    let d = p("d");
    let b = p("b");

    // --- create / open flags ---
    let mut f = None;
    r.step("create excl", &[&a], || {
        keep(
            open(&a, libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, 0o640),
            &mut f,
        )
    });
    r.step("create excl again", &[&a], || {
        res(open(
            &a,
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
            0o640,
        ))
    });
    r.ro("stat a", &[&a], || st(&a));
    let fd = f.unwrap();
    r.step("write", &[&a], || {
        nres(nix::unistd::write(&fd, b"hello world\n"))
    });
    r.step("write zero bytes", &[&a], || {
        nres(nix::unistd::write(&fd, b""))
    });
    r.step("pwrite hole", &[&a], || {
        nres(nix::sys::uio::pwrite(&fd, b"tail", 100_000))
    });
    r.step("pwrite same bytes", &[&a], || {
        nres(nix::sys::uio::pwrite(&fd, b"tail", 100_000))
    });
    r.ro("stat after hole", &[&a], || st(&a));
    let mut rfd = None;
    r.ro("open rdonly", &[&a], || {
        keep(open(&a, libc::O_RDONLY, 0), &mut rfd)
    });
    let rfd = rfd.unwrap();
    // lseek SEEK_DATA / SEEK_HOLE; past EOF must give ENXIO.
    r.ro("seek data/hole", &[&a], || {
        format!(
            "{} {}",
            nval(nix::unistd::lseek(&rfd, 0, Whence::SeekData)),
            nval(nix::unistd::lseek(&rfd, 0, Whence::SeekHole))
        )
    });
    r.ro("seek data past eof", &[&a], || {
        nval(nix::unistd::lseek(&rfd, 1 << 30, Whence::SeekData))
    });
    r.ro("pread", &[&a], || {
        let mut buf = vec![0u8; 16];
        format!(
            "{:?}",
            nix::sys::uio::pread(&rfd, &mut buf, 0).map(|n| buf[..n].to_vec())
        )
    });
    r.ro("read whole", &[&a], || {
        format!(
            "{:?}",
            std::fs::read(&a).map(|v| (v.len(), v[..12].to_vec(), v[v.len() - 4..].to_vec()))
        )
    });
    r.ro("fsync read handle", &[&a], || {
        nres(nix::unistd::fsync(&rfd))
    });
    r.ro("close read handle", &[&a], || {
        drop(rfd);
        "ok".into()
    });
    r.step("close write handle", &[&a], || {
        drop(fd);
        "ok".into()
    });

    // O_APPEND writes go to EOF whatever the offset
    let mut afd = None;
    r.step("open append", &[&a], || {
        keep(open(&a, libc::O_WRONLY | libc::O_APPEND, 0), &mut afd)
    });
    let afd = afd.unwrap();
    r.step("append", &[&a], || {
        nres(nix::sys::uio::pwrite(&afd, b"APP", 0))
    });
    // fcntl(F_SETFL) clears O_APPEND: the next pwrite lands at its offset; setting it
    // again appends, on this fd and on one opened without O_APPEND.
    r.step("setfl clear append", &[&a], || {
        let fl = nix::fcntl::fcntl(&afd, nix::fcntl::F_GETFL).unwrap();
        nres(nix::fcntl::fcntl(
            &afd,
            nix::fcntl::F_SETFL(OFlag::from_bits_retain(fl & !libc::O_APPEND)),
        ))
    });
    r.step("pwrite after clearing append", &[&a], || {
        nval(nix::sys::uio::pwrite(&afd, b"XY", 1))
    });
    r.ro("read after clearing append", &[&a], || {
        format!(
            "{:?}",
            std::fs::read(&a).map(|v| (v.len(), v[..4].to_vec()))
        )
    });
    r.step("close append", &[&a], || {
        drop(afd);
        "ok".into()
    });
    let mut pfd = None;
    r.step("open rdwr", &[&a], || {
        keep(open(&a, libc::O_RDWR, 0), &mut pfd)
    });
    let pfd = pfd.unwrap();
    r.step("setfl set append", &[&a], || {
        nres(nix::fcntl::fcntl(
            &pfd,
            nix::fcntl::F_SETFL(OFlag::O_APPEND),
        ))
    });
    r.step("pwrite after setting append", &[&a], || {
        nval(nix::sys::uio::pwrite(&pfd, b"END", 0))
    });
    r.ro("read after setting append", &[&a], || {
        format!(
            "{:?}",
            std::fs::read(&a).map(|v| (v.len(), v[v.len() - 3..].to_vec()))
        )
    });
    r.step("close rdwr", &[&a], || {
        drop(pfd);
        "ok".into()
    });
    r.ro("size after append", &[&a], || st(&a));
    // O_DIRECT: block-aligned reads and writes behave as on the plain directory.
    let dpath = p("direct");
    r.step("o_direct write", &[&dpath], || {
        let o = open(&dpath, libc::O_CREAT | libc::O_RDWR | libc::O_DIRECT, 0o644);
        match o {
            Err(e) => e,
            Ok(fd) => {
                let mut buf = AlignedBlock([0u8; 4096]);
                buf.0[..5].copy_from_slice(b"dio!\n");
                let w = nval(nix::sys::uio::pwrite(&fd, &buf.0, 0));
                let mut back = AlignedBlock([0u8; 4096]);
                let rd = nval(nix::sys::uio::pread(&fd, &mut back.0, 0));
                format!("{w} {rd} {:?}", &back.0[..5])
            }
        }
    });
    r.ro("o_direct stat", &[&dpath], || st(&dpath));
    r.step("open creat existing", &[&a], || {
        res(open(&a, libc::O_CREAT | libc::O_WRONLY, 0o600))
    });
    // O_TRUNC marks mtime and ctime for update, also on an already-empty file.
    r.step("open trunc", &[&a], || {
        res(open(&a, libc::O_WRONLY | libc::O_TRUNC, 0))
    });
    r.ro("stat after trunc", &[&a], || st(&a));
    r.step("open trunc empty", &[&a], || {
        res(open(&a, libc::O_WRONLY | libc::O_TRUNC, 0))
    });
    // O_NOFOLLOW on a symlink
    r.step("symlink", &[&sl], || {
        res(std::os::unix::fs::symlink("a", &sl).map_err(|e| e.to_string()))
    });
    r.ro("readlink", &[&sl], || {
        format!("{:?}", std::fs::read_link(&sl))
    });
    r.ro("readlink regular", &[&a], || {
        format!("{:?}", std::fs::read_link(&a).map_err(|e| e.raw_os_error()))
    });
    r.ro("open nofollow symlink", &[&sl], || {
        res(open(&sl, libc::O_RDONLY | libc::O_NOFOLLOW, 0))
    });
    r.ro("open through symlink", &[&sl, &a], || {
        res(open(&sl, libc::O_RDONLY, 0))
    });
    r.ro("stat symlink", &[&sl], || st(&sl));
    let nf = p("nf");
    r.step("create nofollow new", &[&nf], || {
        res(open(
            &nf,
            libc::O_CREAT | libc::O_WRONLY | libc::O_NOFOLLOW,
            0o600,
        ))
    });
    let missing = p("missing");
    r.ro("open missing", &[&missing], || {
        res(open(&missing, libc::O_RDONLY, 0))
    });
    r.ro("open dir as file wr", &[&w], || {
        res(open(&w, libc::O_WRONLY, 0))
    });
    r.ro("open file O_DIRECTORY", &[&a], || {
        res(open(&a, libc::O_RDONLY | libc::O_DIRECTORY, 0))
    });

    // --- setattr ---
    r.step("chmod", &[&a], || {
        nres(nix::sys::stat::fchmodat(
            AT_FDCWD,
            &a,
            Mode::from_bits_retain(0o4755),
            FchmodatFlags::FollowSymlink,
        ))
    });
    r.ro("stat chmod", &[&a], || st(&a));
    r.step("chown", &[&a], || {
        nres(nix::unistd::chown(
            &a,
            Some(Uid::from_raw(1)),
            Some(Gid::from_raw(2)),
        ))
    });
    r.ro("stat chown (suid cleared)", &[&a], || st(&a));
    r.step("lchown symlink", &[&sl], || {
        nres(nix::unistd::fchownat(
            AT_FDCWD,
            &sl,
            Some(Uid::from_raw(3)),
            Some(Gid::from_raw(4)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ))
    });
    r.ro("stat lchown", &[&sl], || st(&sl));
    r.step("truncate grow", &[&a], || {
        nres(nix::unistd::truncate(&a, 5000))
    });
    r.step("truncate same size", &[&a], || {
        nres(nix::unistd::truncate(&a, 5000))
    });
    r.ro("stat truncate", &[&a], || st(&a));
    let mut tfd = None;
    r.step("open rdwr", &[&a], || {
        keep(open(&a, libc::O_RDWR, 0), &mut tfd)
    });
    let tfd = tfd.unwrap();
    r.step("ftruncate", &[&a], || nres(nix::unistd::ftruncate(&tfd, 7)));
    r.step("ftruncate same size", &[&a], || {
        nres(nix::unistd::ftruncate(&tfd, 7))
    });
    r.ro("stat ftruncate", &[&a], || st(&a));
    r.step("fallocate", &[&a], || {
        nres(nix::fcntl::fallocate(
            &tfd,
            FallocateFlags::empty(),
            0,
            65536,
        ))
    });
    r.ro("stat fallocate", &[&a], || st(&a));
    r.step("punch hole", &[&a], || {
        nres(nix::fcntl::fallocate(
            &tfd,
            FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
            4096,
            8192,
        ))
    });
    r.ro("stat punch", &[&a], || st(&a));
    r.ro("fsync", &[&a], || nres(nix::unistd::fsync(&tfd)));
    r.ro("fdatasync", &[&a], || nres(nix::unistd::fdatasync(&tfd)));
    r.step("close rdwr", &[&a], || {
        drop(tfd);
        "ok".into()
    });
    r.ro("truncate dir", &[&w], || nres(nix::unistd::truncate(&w, 0)));
    // utimens: explicit, OMIT, NOW
    let times = |q: &Path| {
        let s = nix::sys::stat::lstat(q).unwrap();
        format!(
            "{} {} {} {}",
            s.st_atime, s.st_atime_nsec, s.st_mtime, s.st_mtime_nsec
        )
    };
    let ts_a = TimeSpec::new(1_000_000_000, 123_456_789);
    let ts_m = TimeSpec::new(1_100_000_000, 987_654_321);
    r.step("utimens explicit", &[&a], || {
        nres(nix::sys::stat::utimensat(
            AT_FDCWD,
            &a,
            &ts_a,
            &ts_m,
            UtimensatFlags::FollowSymlink,
        ))
    });
    r.ro("times explicit", &[&a], || times(&a));
    r.step("utimens omit atime", &[&a], || {
        nres(nix::sys::stat::utimensat(
            AT_FDCWD,
            &a,
            &TimeSpec::UTIME_OMIT,
            &TimeSpec::new(1_200_000_000, 1),
            UtimensatFlags::FollowSymlink,
        ))
    });
    r.ro("times omit", &[&a], || times(&a));
    r.step("utimens now", &[&a], || {
        nres(nix::sys::stat::utimensat(
            AT_FDCWD,
            &a,
            &TimeSpec::UTIME_NOW,
            &TimeSpec::UTIME_OMIT,
            UtimensatFlags::FollowSymlink,
        ))
    });
    r.ro("atime is now", &[&a], || {
        let s = nix::sys::stat::stat(&a).unwrap();
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        ((s.st_atime - wall).abs() < 5).to_string()
    });
    r.ro("mtime kept", &[&a], || {
        let s = nix::sys::stat::stat(&a).unwrap();
        format!("{} {}", s.st_mtime, s.st_mtime_nsec)
    });
    r.step("utimens symlink nofollow", &[&sl], || {
        nres(nix::sys::stat::utimensat(
            AT_FDCWD,
            &sl,
            &ts_a,
            &ts_m,
            UtimensatFlags::NoFollowSymlink,
        ))
    });
    r.ro("symlink times", &[&sl], || {
        let s = nix::sys::stat::lstat(&sl).unwrap();
        format!("{} {}", s.st_mtime, s.st_mtime_nsec)
    });

    // --- directories ---
    let d2 = p("d2");
    let mkdir = |q: &Path, mode: u32| nres(nix::unistd::mkdir(q, Mode::from_bits_retain(mode)));
    let rmdir = |q: &Path| nres(nix::unistd::unlinkat(AT_FDCWD, q, UnlinkatFlags::RemoveDir));
    let unlink = |q: &Path| nres(nix::unistd::unlink(q));
    r.step("mkdir", &[&d], || {
        res(std::fs::create_dir(&d).map_err(|e| e.to_string()))
    });
    r.step("mkdir again", &[&d], || mkdir(&d, 0o755));
    r.step("mkdir mode", &[&d2], || mkdir(&d2, 0o2710));
    r.ro("stat d2", &[&d2], || st(&d2));
    r.step("rmdir", &[&d2], || rmdir(&d2));
    std::fs::write(d.join("inner"), b"x").unwrap();
    r.step("rmdir nonempty", &[&d], || rmdir(&d));
    r.step("rmdir file", &[&a], || rmdir(&a));
    r.step("unlink dir", &[&d], || unlink(&d));
    let nope = p("nope");
    r.step("unlink missing", &[&nope], || unlink(&nope));
    r.ro("stat d nlink", &[&d], || st(&d));
    r.ro("dotdot of w is root", &[&w], || {
        (ino(&w.join("..")) == ino(&root)).to_string()
    });
    let dfd = open(&d, libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
    r.ro("fsyncdir", &[&d], || nres(nix::unistd::fsync(&dfd)));
    drop(dfd);

    // --- links and renames ---
    let a2 = p("a2");
    let link = |x: &Path, y: &Path| {
        nres(nix::unistd::linkat(
            AT_FDCWD,
            x,
            AT_FDCWD,
            y,
            nix::fcntl::AtFlags::empty(),
        ))
    };
    r.step("link", &[&a, &a2], || link(&a, &a2));
    r.ro("link same ino", &[&a, &a2], || {
        (ino(&a) == ino(&a2)).to_string()
    });
    r.ro("stat link nlink", &[&a], || st(&a));
    r.step("link exists", &[&a, &a2], || link(&a, &a2));
    let d3 = p("d3");
    r.step("link dir", &[&d, &d3], || link(&d, &d3));
    r.step("unlink link", &[&a2, &a], || unlink(&a2));
    r.ro("stat after unlink link", &[&a], || st(&a));
    std::fs::write(&b, b"bbbb").unwrap();
    let ia = ino(&a);
    // The step compares `b`'s times across two inodes (the one replaced, the one
    // moved in): a rename within the same clock tick as that write can give the moved
    // inode the very ctime the replaced one had (coarse timestamps, whether a backing
    // inode's ctime was queried since its last change decides its grain), on either
    // side. A tick apart, both move.
    std::thread::sleep(Duration::from_millis(20));
    r.step("rename over", &[&a, &b], || {
        res(std::fs::rename(&a, &b).map_err(|e| e.to_string()))
    });
    r.ro("rename kept ino", &[&b], || (ino(&b) == ia).to_string());
    r.ro("renamed gone", &[&a], || st(&a));
    std::fs::write(p("c"), b"cc").unwrap();
    let rn = |x: &Path, y: &Path, fl: RenameFlags| {
        nres(nix::fcntl::renameat2(AT_FDCWD, x, AT_FDCWD, y, fl))
    };
    let (cc, c2, zz, yy, e) = (p("c"), p("c2"), p("zz"), p("yy"), p("e"));
    let dc2 = d.join("c2");
    r.step("rename noreplace existing", &[&b, &cc], || {
        rn(&b, &cc, RenameFlags::RENAME_NOREPLACE)
    });
    r.step("rename noreplace new", &[&cc, &c2], || {
        rn(&cc, &c2, RenameFlags::RENAME_NOREPLACE)
    });
    r.step("rename exchange", &[&b, &c2], || {
        rn(&b, &c2, RenameFlags::RENAME_EXCHANGE)
    });
    r.ro("exchanged contents", &[&b, &c2], || {
        format!(
            "{:?} {:?}",
            std::fs::read(&b).map(|v| v.len()),
            std::fs::read(&c2).map(|v| v.len())
        )
    });
    r.step("rename exchange missing", &[&b, &zz], || {
        rn(&b, &zz, RenameFlags::RENAME_EXCHANGE)
    });
    r.step("rename into dir", &[&c2, &dc2], || {
        rn(&c2, &dc2, RenameFlags::empty())
    });
    std::fs::create_dir(&e).unwrap();
    r.step("rename dir over nonempty dir", &[&e, &d], || {
        rn(&e, &d, RenameFlags::empty())
    });
    r.step("rename file over dir", &[&b, &e], || {
        rn(&b, &e, RenameFlags::empty())
    });
    r.step("rename missing", &[&zz, &yy], || {
        rn(&zz, &yy, RenameFlags::empty())
    });
    r.ro("listing", &[&w], || listing(&w));
    r.ro("listing d", &[&d], || listing(&d));

    // --- special files ---
    let (fifo, sock, null) = (p("fifo"), p("sock"), p("null"));
    r.step("mkfifo", &[&fifo], || {
        nres(nix::unistd::mkfifo(&fifo, Mode::from_bits_retain(0o640)))
    });
    r.ro("stat fifo", &[&fifo], || st(&fifo));
    r.step("mknod sock", &[&sock], || {
        nres(nix::sys::stat::mknod(
            &sock,
            SFlag::S_IFSOCK,
            Mode::from_bits_retain(0o600),
            0,
        ))
    });
    r.ro("stat sock", &[&sock], || st(&sock));
    r.step("mknod chr", &[&null], || {
        nres(nix::sys::stat::mknod(
            &null,
            SFlag::S_IFCHR,
            Mode::from_bits_retain(0o600),
            nix::sys::stat::makedev(1, 3),
        ))
    });
    r.ro("stat chr", &[&null], || st(&null));

    // --- xattrs (nix has no xattr wrappers: raw libc calls) ---
    let fp = c(&b);
    let name = CString::new("user.test").unwrap();
    r.step("setxattr", &[&b], || {
        // SAFETY: `fp` and `name` are live NUL-terminated strings; the value pointer
        // and its length (2) describe a static byte string.
        res(chk(unsafe {
            libc::setxattr(fp.as_ptr(), name.as_ptr(), b"v1".as_ptr().cast(), 2, 0)
        }))
    });
    r.step("setxattr create existing", &[&b], || {
        // SAFETY: as for setxattr above.
        res(chk(unsafe {
            libc::setxattr(
                fp.as_ptr(),
                name.as_ptr(),
                b"v2".as_ptr().cast(),
                2,
                libc::XATTR_CREATE,
            )
        }))
    });
    let getx = |n: &CString, size: usize| -> Out {
        let mut vb = [0u8; 64];
        let size = size.min(vb.len());
        // SAFETY: `fp` and `n` are live NUL-terminated strings; `vb` is a writable
        // buffer of at least `size` bytes, or `size` is 0 and the pointer is unused.
        let got = unsafe {
            libc::getxattr(
                fp.as_ptr(),
                n.as_ptr(),
                if size == 0 {
                    std::ptr::null_mut()
                } else {
                    vb.as_mut_ptr().cast()
                },
                size,
            )
        };
        match got {
            n if n < 0 => errno_name(),
            n if size == 0 => n.to_string(),
            n => String::from_utf8_lossy(&vb[..n as usize]).into_owned(),
        }
    };
    r.ro("getxattr", &[&b], || getx(&name, 64));
    r.ro("getxattr size", &[&b], || getx(&name, 0));
    r.ro("getxattr small buf", &[&b], || getx(&name, 1));
    let missing_x = CString::new("user.missing").unwrap();
    r.ro("getxattr missing", &[&b], || getx(&missing_x, 64));
    r.ro("listxattr", &[&b], || {
        let mut vb = [0u8; 64];
        // SAFETY: `fp` is a live NUL-terminated string; `vb` is writable for its length.
        let n = unsafe { libc::listxattr(fp.as_ptr(), vb.as_mut_ptr().cast(), vb.len()) };
        if n < 0 {
            errno_name()
        } else {
            format!("{:?}", &vb[..n as usize])
        }
    });
    r.step("removexattr", &[&b], || {
        // SAFETY: `fp` and `name` are live NUL-terminated strings.
        res(chk(unsafe {
            libc::removexattr(fp.as_ptr(), name.as_ptr())
        }))
    });
    r.step("removexattr again", &[&b], || {
        // SAFETY: as above.
        res(chk(unsafe {
            libc::removexattr(fp.as_ptr(), name.as_ptr())
        }))
    });

    // --- access / statfs ---
    r.ro("access rw", &[&b], || {
        nres(nix::unistd::access(
            &b,
            AccessFlags::R_OK | AccessFlags::W_OK,
        ))
    });
    r.ro("access missing", &[&zz], || {
        nres(nix::unistd::access(&zz, AccessFlags::F_OK))
    });
    r.ro("statfs", &[&w], || {
        let sv = nix::sys::statvfs::statvfs(&w).unwrap();
        format!("bsize={} namemax={}", sv.block_size(), sv.name_max())
    });

    // --- copy_file_range ---
    let (src, dst) = (p("src"), p("dst"));
    std::fs::write(&src, vec![7u8; 10_000]).unwrap();
    let s_fd = open(&src, libc::O_RDONLY, 0).unwrap();
    let mut d_fd = None;
    r.step("create dst", &[&dst], || {
        keep(open(&dst, libc::O_CREAT | libc::O_WRONLY, 0o644), &mut d_fd)
    });
    let d_fd = d_fd.unwrap();
    r.step("copy_file_range", &[&dst, &src], || {
        let mut off_in: i64 = 100;
        let mut off_out: i64 = 0;
        // (nix's copy_file_range needs its "zerocopy" feature, which is not enabled.)
        // SAFETY: both fds are open for the whole call; the offset pointers are to
        // live, exclusively borrowed locals.
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
        let n = if n < 0 { errno_name() } else { n.to_string() };
        format!("{n} {off_in} {off_out}")
    });
    drop((s_fd, d_fd));
    r.ro("dst content", &[&dst], || {
        format!(
            "{:?}",
            std::fs::read(&dst).map(|v| (v.len(), v.iter().all(|b| *b == 7)))
        )
    });

    // --- readdir with many entries (offsets across several READDIR calls) ---
    let many = p("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..500 {
        std::fs::write(many.join(format!("file-with-a-longish-name-{i:04}")), b"").unwrap();
    }
    r.ro("many listing", &[&many], || {
        let l = listing(&many);
        format!(
            "count={} hash={:x}",
            l.split(',').count(),
            l.bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64))
        )
    });
    r.ro("dirent types", &[&w], || {
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
        parts.join(";")
    });

    // --- mount only: reading the virtual journals moves nothing ---
    if r.root != r.backing {
        let all = r.read_virtual("read <mount>/.journal", &root.join(".journal"), &[&w, &b]);
        if all.is_empty() {
            r.problems.push("<mount>/.journal is empty".into());
        }
        let one = r.read_virtual("read w/b.journal", &w.join("b.journal"), &[&b]);
        if !one.windows(5).any(|x| x == b"\"w/b\"") {
            r.problems.push(format!(
                "w/b.journal has no record for w/b: {}",
                String::from_utf8_lossy(&one)
            ));
        }
        r.ro("stat b after journal reads", &[&b], || st(&b));
    } else {
        // The same log line on both sides.
        r.ro("stat b after journal reads", &[&b], || st(&b));
    }
}

/// The log line of step `name` (panics if there is none).
fn line<'a>(log: &'a [String], name: &str) -> &'a str {
    let pre = format!("{name}: ");
    log.iter()
        .find(|l| l.starts_with(&pre))
        .unwrap_or_else(|| panic!("no step {name}"))
}

#[test]
fn same_results_on_plain_dir_and_mount() {
    let plain = tempfile::tempdir().unwrap();
    let mut expected = Run::new(plain.path(), plain.path());
    script(&mut expected);
    let m = Mount::new(&[]);
    let mut got = Run::new(&m.mnt, &m.src);
    script(&mut got);
    let (expected, got) = (expected, got);
    if std::env::var_os("DIFF_DUMP").is_some() {
        for (a, b) in expected.log.iter().zip(got.log.iter()) {
            eprintln!("{a}\n   {b}");
        }
    }
    // The moved flags mean something: the plain directory shows the kernel's rules.
    for (name, want) in [
        ("stat a", "[w/a:m=c= w:m=c=]"),
        ("write", "[w/a:m+c+ w:m=c=]"),
        ("write zero bytes", "[w/a:m=c= w:m=c=]"),
        ("chmod", "[w/a:m=c+ w:m=c=]"),
        ("create nofollow new", "[w/nf:new w:m+c+]"),
        ("open trunc", "[w/a:m+c+ w:m=c=]"),
    ] {
        let l = line(&expected.log, name);
        assert!(l.ends_with(want), "plain dir: `{l}`, expected {want}");
    }
    assert!(
        expected.problems.is_empty(),
        "plain dir:\n{}",
        expected.problems.join("\n")
    );
    let mut diffs = Vec::new();
    for (i, (a, b)) in expected.log.iter().zip(got.log.iter()).enumerate() {
        if a != b {
            diffs.push(format!("step {i}: plain `{a}`\n       vs mount `{b}`"));
        }
    }
    assert_eq!(expected.log.len(), got.log.len());
    assert!(
        diffs.is_empty() && got.problems.is_empty(),
        "{} differences:\n{}\n{} problems on the mount:\n{}",
        diffs.len(),
        diffs.join("\n"),
        got.problems.len(),
        got.problems.join("\n")
    );
    // The backing tree holds exactly what the mount showed.
    assert_eq!(listing(&m.src.join("w")), listing(&plain.path().join("w")));
}

/// `open(O_RDONLY|O_TRUNC)` of a binary that is running: ETXTBSY, and the file stays
/// whole, on both sides. (With FUSE_ATOMIC_O_TRUNC the daemon emptied the file at
/// OPEN, before the kernel's ETXTBSY check, so the caller got the error and the running
/// program lost its text; it then often crashed, which made pjdfstest's open::etxtbsy
/// flaky.) An `O_RDONLY|O_TRUNC` open of a file nobody runs truncates it, as on ext4.
#[test]
fn rdonly_trunc_of_a_running_binary_gives_etxtbsy_and_keeps_it() {
    let sleep = std::fs::read("/bin/sleep").expect("/bin/sleep");
    let run = |dir: &Path| -> Vec<String> {
        let mut out = Vec::new();
        for i in 0..3 {
            let p = dir.join(format!("sleep{i}"));
            std::fs::write(&p, &sleep).unwrap();
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            let mut child = Killed(spawn_fresh(&p));
            out.push(res(open(&p, libc::O_RDONLY | libc::O_TRUNC, 0)));
            let alive = child.0.try_wait().unwrap().is_none();
            let whole = std::fs::read(&p).unwrap() == sleep;
            out.push(format!("alive={alive} whole={whole}"));
            drop(child);
            // Nobody runs it now: the same open truncates.
            out.push(res(open(&p, libc::O_RDONLY | libc::O_TRUNC, 0)));
            out.push(format!("len={}", std::fs::metadata(&p).unwrap().len()));
        }
        out
    };
    let plain = tempfile::tempdir().unwrap();
    let m = Mount::new(&[]);
    let want = run(plain.path());
    assert_eq!(want[0], "ETXTBSY", "plain directory: {want:?}");
    assert_eq!(
        want[1], "alive=true whole=true",
        "plain directory: {want:?}"
    );
    assert_eq!(run(&m.mnt), want);
    // Backing file of the last copy: emptied by the second open only.
    assert_eq!(std::fs::metadata(m.src.join("sleep2")).unwrap().len(), 0);
}

/// A child killed and reaped on drop, so that a failing test leaves no process
/// running from the mount.
struct Killed(std::process::Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `p 10`, run right after `p` was written: retried on ETXTBSY, which a fork by
/// another test thread (inheriting the write fd until its exec) can cause.
fn spawn_fresh(p: &Path) -> std::process::Child {
    for _ in 0..50 {
        match std::process::Command::new(p).arg("10").spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            r => return r.unwrap(),
        }
    }
    panic!("{} stayed ETXTBSY", p.display());
}
