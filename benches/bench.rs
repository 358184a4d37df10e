//! sessionfs benchmark: the same workloads on a plain directory and on a sessionfs
//! mount of another directory, interleaved in one run (native, mount, native, ...),
//! `--rounds` rounds (default 3), medians and mount/native ratios.
//!
//! Run: `cargo bench --bench bench` (needs root and /dev/fuse).
//! Options: `--rounds N`, `--quick` (smaller counts), `--only NAME`,
//! `--mount-args "..."` (extra `sessionfs mount` args, e.g. `--no-journal`),
//! `--journal-scale` (adds the 1,000,000-record rows: `journal --since` latency and
//! daemon RSS with 10,000 files).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sessionfs");

struct Opts {
    rounds: usize,
    quick: bool,
    only: Option<String>,
    mount_args: Vec<String>,
    journal_scale: bool,
}

fn parse() -> Opts {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let val = |k: &str| {
        a.iter()
            .position(|x| x == k)
            .and_then(|i| a.get(i + 1))
            .cloned()
    };
    Opts {
        rounds: val("--rounds").and_then(|v| v.parse().ok()).unwrap_or(3),
        quick: a.iter().any(|x| x == "--quick"),
        only: val("--only"),
        mount_args: val("--mount-args")
            .map(|s| s.split_whitespace().map(String::from).collect())
            .unwrap_or_default(),
        journal_scale: a.iter().any(|x| x == "--journal-scale"),
    }
}

struct MountGuard(PathBuf);
impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = Command::new(BIN).arg("umount").arg(&self.0).status();
    }
}

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn open(p: &Path, flags: i32) -> i32 {
    // SAFETY: valid C string; the fd is closed by the caller.
    let fd = unsafe { libc::open(c(p).as_ptr(), flags | libc::O_CLOEXEC, 0o600) };
    assert!(
        fd >= 0,
        "open {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
    fd
}

fn write_all(fd: i32, b: &[u8]) {
    // SAFETY: valid buffer; fd open.
    let n = unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
    assert_eq!(
        n,
        b.len() as isize,
        "write: {}",
        std::io::Error::last_os_error()
    );
}

fn close(fd: i32) {
    // SAFETY: fd owned by the caller.
    unsafe { libc::close(fd) };
}

fn json_line(len: usize) -> Vec<u8> {
    let head = br#"{"type":"message","id":"a1b2c3d4","parentId":"00ff00ff","message":{"role":"assistant","content":""#;
    let mut v = head.to_vec();
    v.resize(len - 4, b'x');
    v.extend_from_slice(b"\"}}\n");
    v
}

/// A workload: setup once per directory, then a timed run returning (ops, unit).
struct Work {
    name: &'static str,
    unit: &'static str,
    run: fn(&Path, bool) -> f64,
}

fn append_reopen(d: &Path, quick: bool) -> f64 {
    let n = if quick { 2_000 } else { 10_000 };
    let line = json_line(2048);
    let p = d.join("ar.jsonl");
    let t = Instant::now();
    for _ in 0..n {
        let fd = open(&p, libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT);
        write_all(fd, &line);
        close(fd);
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn append_keep(d: &Path, quick: bool) -> f64 {
    let n = if quick { 10_000 } else { 40_000 };
    let line = json_line(2048);
    let fd = open(
        &d.join("ak.jsonl"),
        libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT,
    );
    let t = Instant::now();
    for _ in 0..n {
        write_all(fd, &line);
    }
    let r = n as f64 / t.elapsed().as_secs_f64();
    close(fd);
    r
}

fn make_transcript(d: &Path) -> PathBuf {
    let p = d.join("big.jsonl");
    if !p.exists() {
        let line = json_line(1500);
        let mut v = Vec::with_capacity(8 << 20);
        while v.len() + line.len() <= 8 << 20 {
            v.extend_from_slice(&line);
        }
        std::fs::write(&p, v).unwrap();
    }
    p
}

fn read_whole(p: &Path) -> usize {
    let fd = open(p, libc::O_RDONLY);
    let mut buf = vec![0u8; 8 << 20];
    let mut total = 0;
    loop {
        // SAFETY: valid buffer.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        total += n as usize;
    }
    close(fd);
    total
}

fn whole_read_warm(d: &Path, quick: bool) -> f64 {
    let p = make_transcript(d);
    read_whole(&p);
    let n = if quick { 20 } else { 100 };
    let t = Instant::now();
    let mut bytes = 0;
    for _ in 0..n {
        bytes += read_whole(&p);
    }
    bytes as f64 / (1 << 20) as f64 / t.elapsed().as_secs_f64()
}

fn drop_caches() {
    // SAFETY: sync(2) has no arguments.
    unsafe { libc::sync() };
    let _ = std::fs::write("/proc/sys/vm/drop_caches", b"3");
}

fn whole_read_cold(d: &Path, quick: bool) -> f64 {
    let p = make_transcript(d);
    let n = if quick { 3 } else { 10 };
    let mut secs = 0.0;
    let mut bytes = 0;
    for _ in 0..n {
        drop_caches();
        let t = Instant::now();
        bytes += read_whole(&p);
        secs += t.elapsed().as_secs_f64();
    }
    bytes as f64 / (1 << 20) as f64 / secs
}

fn ls_l(d: &Path, _quick: bool) -> f64 {
    let dir = d.join("many");
    if !dir.exists() {
        std::fs::create_dir(&dir).unwrap();
        for i in 0..10_000 {
            std::fs::write(
                dir.join(format!("{i:08x}-0000-4000-8000-000000000000.jsonl")),
                b"{}\n",
            )
            .unwrap();
        }
    }
    let run = || {
        let t = Instant::now();
        let out = Command::new("ls").arg("-l").arg(&dir).output().unwrap();
        assert!(out.status.success());
        t.elapsed().as_secs_f64() * 1000.0
    };
    run(); // warm
    let mut v: Vec<f64> = (0..3).map(|_| run()).collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[1]
}

fn stat_one(d: &Path, quick: bool) -> f64 {
    let p = d.join("st.jsonl");
    std::fs::write(&p, b"{}\n").unwrap();
    let cp = c(&p);
    let n = if quick { 50_000 } else { 200_000 };
    // SAFETY: zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let t = Instant::now();
    for _ in 0..n {
        // SAFETY: valid path and out-parameter.
        unsafe { libc::stat(cp.as_ptr(), &mut st) };
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn lock_churn(d: &Path, quick: bool) -> f64 {
    let n = if quick { 1_000 } else { 5_000 };
    let p = d.join("345c3d87.jsonl.lock");
    let payload = [b'x'; 100];
    let cp = c(&p);
    let t = Instant::now();
    for _ in 0..n {
        let fd = open(&p, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL);
        write_all(fd, &payload);
        close(fd);
        // SAFETY: valid path.
        unsafe { libc::unlink(cp.as_ptr()) };
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn daemon_pid(mnt: &Path) -> Option<u32> {
    let id = sessionfs::mount::mount_id(&std::fs::canonicalize(mnt).ok()?);
    std::fs::read_to_string(sessionfs::mount::pid_file(&id))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.to_string())
        })
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn journal_scale(mnt: &Path) {
    // 10,000 files x 100 appends = 1,000,000 write records (+ opens/releases).
    let dir = mnt.join("scale");
    std::fs::create_dir_all(&dir).unwrap();
    let line = json_line(200);
    let t = Instant::now();
    for f in 0..10_000 {
        let fd = open(
            &dir.join(format!("{f:05}.jsonl")),
            libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT,
        );
        for _ in 0..100 {
            write_all(fd, &line);
        }
        close(fd);
    }
    let secs = t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    let pid = daemon_pid(mnt).expect("daemon pid");
    let rss = rss_kib(pid);
    let jlen = std::fs::metadata(mnt.join(".journal"))
        .map(|m| m.len())
        .unwrap_or(0);
    // Latest seq via the virtual xattr of the last file written.
    let last = dir.join("09999.jsonl");
    let seq: u64 = {
        let mut buf = [0u8; 32];
        let n = unsafe {
            libc::getxattr(
                c(&last).as_ptr(),
                c(Path::new("user.sessionfs.seq")).as_ptr(),
                buf.as_mut_ptr().cast(),
                32,
            )
        };
        String::from_utf8_lossy(&buf[..n.max(0) as usize])
            .parse()
            .unwrap_or(0)
    };
    let mut times = Vec::new();
    for back in [10u64, 500_000, 900_000] {
        let since = seq.saturating_sub(back);
        let t = Instant::now();
        let mut child = Command::new(BIN)
            .args(["journal", "--json", "--since", &since.to_string()])
            .arg(mnt)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Read;
        let mut first = [0u8; 1];
        child
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut first)
            .unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        let _ = child.kill();
        let _ = child.wait();
    }
    println!();
    println!("| journal at scale | value |");
    println!("|---|---|");
    println!(
        "| 1,000,000 appends to 10,000 files through the mount | {:.1} s ({:.0}/s) |",
        secs,
        1e6 / secs
    );
    println!(
        "| whole-mount journal size | {} MiB, latest seq {seq} |",
        jlen >> 20
    );
    println!(
        "| `sessionfs journal --since` to first record (seq-10 / seq-500k / seq-900k; process start included) | {:.2} / {:.2} / {:.2} ms |",
        times[0], times[1], times[2]
    );
    println!(
        "| daemon RSS with 10,000 files and ~1,020,000 records | {:.1} MiB |",
        rss as f64 / 1024.0
    );
}

fn main() {
    let o = parse();
    assert!(
        nix::unistd::geteuid().is_root(),
        "the benchmark mounts: run as root"
    );
    let tmp = tempfile::tempdir().unwrap();
    let native = tmp.path().join("native");
    let src = tmp.path().join("src");
    let mnt = tmp.path().join("mnt");
    for d in [&native, &src, &mnt] {
        std::fs::create_dir_all(d).unwrap();
    }
    let mut cmd = Command::new(BIN);
    cmd.arg("mount")
        .arg("--source")
        .arg(&src)
        .arg("--state-dir")
        .arg(tmp.path().join("state"));
    if o.journal_scale {
        cmd.args(["--journal-max-size", "2GiB"]);
    }
    cmd.args(&o.mount_args).arg(&mnt);
    let st = cmd.status().unwrap();
    assert!(st.success(), "mount failed");
    let _g = MountGuard(mnt.clone());

    println!(
        "sessionfs benchmark — {} — kernel {} — {} CPUs — mount args: {:?}",
        sh("date -u +%Y-%m-%dT%H:%MZ"),
        sh("uname -r"),
        sh("nproc"),
        o.mount_args
    );
    let works = [
        Work {
            name: "append-reopen (open O_APPEND + 2 KB write + close)",
            unit: "/s",
            run: append_reopen,
        },
        Work {
            name: "append-keep (2 KB writes, fd held)",
            unit: "/s",
            run: append_keep,
        },
        Work {
            name: "whole-read warm (8 MiB transcript)",
            unit: "MiB/s",
            run: whole_read_warm,
        },
        Work {
            name: "whole-read cold (page cache dropped)",
            unit: "MiB/s",
            run: whole_read_cold,
        },
        Work {
            name: "`ls -l` of 10,000 files, warm",
            unit: "ms",
            run: ls_l,
        },
        Work {
            name: "stat of one file",
            unit: "/s",
            run: stat_one,
        },
        Work {
            name: "lock churn (O_EXCL create + 100 B + close + unlink)",
            unit: "/s",
            run: lock_churn,
        },
    ];
    let targets: [(f64, &str); 7] = [
        (5_400.0, "≥ 5,400/s"),
        (24_000.0, "≥ 24,000/s"),
        (0.9, "≥ 0.9× native"),
        (0.0, "—"),
        (1.2, "≤ 1.2× native"),
        (0.9, "≥ 0.9× native"),
        (3_000.0, "≥ 3,000/s"),
    ];
    println!();
    println!("| workload | native | sessionfs | sessionfs/native | target | |");
    println!("|---|---|---|---|---|---|");
    for (i, w) in works.iter().enumerate() {
        if o.only
            .as_ref()
            .is_some_and(|x| !w.name.contains(x.as_str()))
        {
            continue;
        }
        let (mut nv, mut mv) = (Vec::new(), Vec::new());
        for _ in 0..o.rounds {
            nv.push((w.run)(&native, o.quick));
            mv.push((w.run)(&mnt, o.quick));
        }
        let (n, m) = (median(nv), median(mv));
        let ratio = m / n;
        let (t, tlabel) = targets[i];
        let pass = match i {
            0 | 1 | 6 => m >= t,
            2 | 5 => ratio >= t,
            4 => ratio <= t,
            _ => true,
        };
        let fmt = |v: f64| {
            if v >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        };
        println!(
            "| {} | {} {} | {} {} | {:.2}× | {} | {} |",
            w.name,
            fmt(n),
            w.unit,
            fmt(m),
            w.unit,
            ratio,
            tlabel,
            if tlabel == "—" {
                ""
            } else if pass {
                "PASS"
            } else {
                "MISS"
            }
        );
    }
    if o.journal_scale {
        journal_scale(&mnt);
    }
}
