//! sessionfs benchmark: the same workloads on a plain directory and on a sessionfs
//! mount, in one run, in interleaved rounds; medians in a markdown table.
//!
//! ```text
//! cargo bench --bench bench                       # 3 rounds, all workloads
//! cargo bench --bench bench -- --rounds 5 --json bench.json
//! cargo bench --bench bench -- --quick --only append-reopen,lock-churn
//! cargo bench --bench bench -- --mount-args "--threads 4 --no-journal"
//! cargo bench --bench bench -- --only stat --journal-scale
//! cargo bench --bench bench -- --quick --count-requests   # + FUSE requests per op
//! ```
//!
//! The mount is `sessionfs mount --source <tmp>/backing --state-dir <tmp>/state
//! [--mount-args] <tmp>/mnt`, made with the binary Cargo builds for this bench in the
//! bench (= release) profile, i.e. `target/release/sessionfs`: `cargo bench` builds it
//! first, nothing to do by hand. The plain directory `<tmp>/native` and the backing
//! directory are on the same file system (`$TMPDIR`, or `--dir`). A guard unmounts
//! on panic and on Ctrl-C (checked between measurements). Needs root for the mount and
//! for the cold-read workload (`/proc/sys/vm/drop_caches`).
//!
//! Workloads (rates are operations per second unless a unit says otherwise):
//! - `append-reopen`: open(O_WRONLY|O_APPEND) + write one 2,048-byte JSONL line + close;
//! - `append-keep`: the same writes on one descriptor held open;
//! - `read-warm`: read an 8 MiB transcript whole, page cache warm, MB/s (10^6 B/s);
//! - `read-cold`: the same right after `sync; echo 3 > /proc/sys/vm/drop_caches`
//!   (which drops FUSE's page cache, dentries and inodes too), MB/s;
//! - `ls-l`: run `ls -l` on a directory of 10,000 files, warm, milliseconds per run;
//! - `stat`: stat(2) one file 100,000 times;
//! - `lock-churn`: open(O_CREAT|O_EXCL|O_WRONLY) + write 100 B + close + unlink, the
//!   way OpenClaw takes and drops `<session>.jsonl.lock`.
//!
//! The table also gives the daemon's CPU time per op (from `/proc/<pid>/stat`, the pid
//! from the pid file `sessionfs mount` writes). `--journal-scale` adds the journal
//! rows: 1,000,000 appends to 10,000 files, `journal --since` latency, daemon RSS.
//! `--count-requests` adds a table of FUSE requests per op by opcode, counted on a
//! second mount made with `-o debug` (from fuser's request log lines; untimed).
//! `--scale` adds the scale rows (see [`scale_rows`]): per file count (`--scale-files`,
//! default 1,000, 10,000, 100,000), creates and warm `ls -l` on a plain directory and
//! on a fresh mount, and the daemon's RSS and fds; `--scale-only` (or
//! `SESSIONFS_BENCH_SCALE=only`) runs just those:
//! `cargo bench --bench bench -- --scale-only --rounds 3`.
//!
//! Op counts are sized from a probe on the mount so that one measurement takes about
//! 1 s there (0.15 s with `--quick`); both sides run the same count.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};

/// Command-line options (after `cargo bench --bench bench --`).
#[derive(Parser, Debug)]
#[command(name = "bench", about = "sessionfs vs plain directory benchmark")]
struct Opts {
    /// Interleaved rounds; each workload's figure is the median over rounds.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Short measurements (~0.15 s each on the mount) for a smoke run; figures are noisier.
    #[arg(long)]
    quick: bool,
    /// Run only these workloads (comma-separated): append-reopen, append-keep,
    /// read-warm, read-cold, ls-l, stat, lock-churn.
    #[arg(long, value_delimiter = ',', value_name = "WORKLOAD")]
    only: Vec<String>,
    /// Extra `sessionfs mount` arguments, whitespace-separated, e.g. "--threads 4".
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    mount_args: String,
    /// Also write the results as JSON: to FILE, or to stdout after the table.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-")]
    json: Option<String>,
    /// Parent of the temporary directories [default: $TMPDIR or /tmp].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// After the table, add the journal-at-scale rows: 1,000,000 appends to 10,000
    /// files through the mount, `sessionfs journal --since` latency, daemon RSS
    /// (mounts with `--journal-max-size 2GiB`).
    #[arg(long)]
    journal_scale: bool,
    /// After the table, count the FUSE requests each workload's operation costs, on a
    /// second mount made with `-o debug` (requests read back from its log; untimed).
    #[arg(long)]
    count_requests: bool,
    /// After the table, add the scale rows: creates, warm `ls -l`, daemon RSS and fds
    /// at each of `--scale-files` files in one directory, plain directory vs a fresh
    /// mount per count.
    #[arg(long)]
    scale: bool,
    /// Run only the scale rows (no workload table); also `SESSIONFS_BENCH_SCALE=only`.
    #[arg(long)]
    scale_only: bool,
    /// File counts of the scale rows.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    scale_files: Vec<usize>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Size of one appended JSONL line, bytes (newline included).
const LINE_BYTES: usize = 2048;
/// Size of the whole-read transcript, bytes.
const TRANSCRIPT_BYTES: usize = 8 << 20;
/// Files in the `ls -l` directory.
const LS_FILES: usize = 10_000;
/// Bytes written into each lock file.
const LOCK_BYTES: usize = 100;

/// Set by SIGINT/SIGTERM; checked between measurements so the guard can unmount.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn check_interrupt() {
    if INTERRUPTED.load(Ordering::SeqCst) {
        panic!("interrupted");
    }
}

/// The workloads, in table order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    AppendReopen,
    AppendKeep,
    ReadWarm,
    ReadCold,
    LsL,
    Stat,
    LockChurn,
}

impl Workload {
    const ALL: [Workload; 7] = [
        Workload::AppendReopen,
        Workload::AppendKeep,
        Workload::ReadWarm,
        Workload::ReadCold,
        Workload::LsL,
        Workload::Stat,
        Workload::LockChurn,
    ];

    fn name(self) -> &'static str {
        match self {
            Workload::AppendReopen => "append-reopen",
            Workload::AppendKeep => "append-keep",
            Workload::ReadWarm => "read-warm",
            Workload::ReadCold => "read-cold",
            Workload::LsL => "ls-l",
            Workload::Stat => "stat",
            Workload::LockChurn => "lock-churn",
        }
    }

    /// Table label.
    fn label(self) -> &'static str {
        match self {
            Workload::AppendReopen => "append-reopen (open+write 2 KB+close)",
            Workload::AppendKeep => "append-keep (2 KB writes, fd held)",
            Workload::ReadWarm => "whole-read 8 MiB, warm",
            Workload::ReadCold => "whole-read 8 MiB, cold",
            Workload::LsL => "`ls -l` 10,000 files, warm",
            Workload::Stat => "stat one file",
            Workload::LockChurn => "lock churn (O_EXCL create+100 B+close+unlink)",
        }
    }

    /// Unit of the figure: a rate (higher is better) or a time (lower is better).
    fn unit(self) -> Unit {
        match self {
            Workload::ReadWarm | Workload::ReadCold => Unit::MBps,
            Workload::LsL => Unit::Ms,
            _ => Unit::OpsPerSec,
        }
    }

    /// The sessionfs target (FUSE-NOTES).
    fn target(self) -> Target {
        match self {
            Workload::AppendReopen => Target::Rate(5_400.0),
            Workload::AppendKeep => Target::Rate(24_000.0),
            Workload::LockChurn => Target::Rate(3_000.0),
            Workload::ReadWarm => Target::RatioAtLeast(0.9),
            Workload::LsL => Target::TimeRatioAtMost(1.2),
            Workload::Stat => Target::RatioAtLeast(0.9),
            Workload::ReadCold => Target::None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Unit {
    /// Operations per second.
    OpsPerSec,
    /// 10^6 bytes per second.
    MBps,
    /// Milliseconds per run.
    Ms,
}

#[derive(Clone, Copy, Debug)]
enum Target {
    /// Mount rate ≥ this many per second.
    Rate(f64),
    /// Mount rate / native rate ≥ this.
    RatioAtLeast(f64),
    /// Mount time / native time ≤ this.
    TimeRatioAtMost(f64),
    None,
}

impl Target {
    fn describe(self) -> String {
        match self {
            Target::Rate(r) => format!("≥ {}/s", group(r)),
            Target::RatioAtLeast(x) => format!("≥ {x:.2}× native"),
            Target::TimeRatioAtMost(x) => format!("≤ {x:.2}× native time"),
            Target::None => "—".into(),
        }
    }

    /// `mount`: the median mount figure; `ratio`: the paired mount/native ratio.
    fn met(self, mount: f64, ratio: f64) -> Option<bool> {
        match self {
            Target::Rate(r) => Some(mount >= r),
            Target::RatioAtLeast(x) => Some(ratio >= x),
            Target::TimeRatioAtMost(x) => Some(ratio <= x),
            Target::None => None,
        }
    }
}

/// `12345.6` → `12,346`.
fn group(v: f64) -> String {
    let s = format!("{:.0}", v);
    let (sign, digits) = s.split_at(if s.starts_with('-') { 1 } else { 0 });
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

fn fmt_value(unit: Unit, v: f64) -> String {
    match unit {
        Unit::OpsPerSec => format!("{}/s", group(v)),
        Unit::MBps => format!("{} MB/s", group(v)),
        Unit::Ms => format!("{v:.1} ms"),
    }
}

/// One side of the comparison: a directory with the prepared layout.
struct Side {
    name: &'static str,
    root: PathBuf,
}

impl Side {
    fn transcript(&self) -> PathBuf {
        self.root
            .join("read/345c3d87-d783-4ad6-829e-3331739a026b.jsonl")
    }
    fn ls_dir(&self) -> PathBuf {
        self.root.join("ls")
    }
    fn append_file(&self) -> PathBuf {
        self.root
            .join("append/9b1f2e0c-3d4a-4f5b-8c6d-7e8f9a0b1c2d.jsonl")
    }
    fn lock_file(&self) -> PathBuf {
        self.root
            .join("lock/9b1f2e0c-3d4a-4f5b-8c6d-7e8f9a0b1c2d.jsonl.lock")
    }
}

/// The test data, built once from the repository's fixture.
struct Data {
    /// Distinct 2,048-byte transcript lines to append, cycled.
    lines: Vec<Vec<u8>>,
    /// The 8 MiB transcript.
    transcript: Vec<u8>,
    /// A lock file's content, 100 bytes.
    lock: Vec<u8>,
}

fn fixture_transcript() -> (PathBuf, Vec<u8>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/openclaw-2026.5.22-sessions");
    let path = dir.join("345c3d87-d783-4ad6-829e-3331739a026b.jsonl");
    let bytes =
        std::fs::read(&path).unwrap_or_else(|e| panic!("read fixture {}: {e}", path.display()));
    (path, bytes)
}

impl Data {
    fn build() -> Data {
        let (path, bytes) = fixture_transcript();
        let text = String::from_utf8(bytes).expect("fixture is UTF-8");
        let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        assert!(lines.len() > 2, "{} has too few lines", path.display());

        // 8 MiB transcript: the header once, then the other lines over and over, cut at
        // the last whole line that fits.
        let mut transcript = Vec::with_capacity(TRANSCRIPT_BYTES);
        transcript.extend_from_slice(lines[0].as_bytes());
        transcript.push(b'\n');
        'fill: loop {
            for l in &lines[1..] {
                if transcript.len() + l.len() + 1 > TRANSCRIPT_BYTES {
                    break 'fill;
                }
                transcript.extend_from_slice(l.as_bytes());
                transcript.push(b'\n');
            }
        }

        // 2 KB lines: the fixture's assistant message with fresh ids and its text padded
        // so that the line is exactly LINE_BYTES long.
        let template: Value = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["type"] == "message" && v["message"]["role"] == "assistant")
            .unwrap_or_else(|| panic!("{} has no assistant message", path.display()));
        let filler = "The fence compares dev, ino, size, mtime and ctime of the transcript. ";
        let mut out = Vec::with_capacity(4096);
        let mut parent = String::from("41806add");
        for i in 0..4096u32 {
            let id = format!(
                "{:08x}",
                0x5e55_0000u32.wrapping_add(i.wrapping_mul(2_654_435_761))
            );
            let mut v = template.clone();
            v["id"] = json!(id);
            v["parentId"] = json!(parent);
            v["message"]["content"][0]["text"] = json!("");
            let base = serde_json::to_string(&v).unwrap().len() + 1;
            assert!(
                base < LINE_BYTES,
                "template line is longer than {LINE_BYTES} B"
            );
            let text: String = filler.chars().cycle().take(LINE_BYTES - base).collect();
            v["message"]["content"][0]["text"] = json!(text);
            let mut line = serde_json::to_vec(&v).unwrap();
            line.push(b'\n');
            assert_eq!(line.len(), LINE_BYTES);
            out.push(line);
            parent = id;
        }

        let mut lock = serde_json::to_vec_pretty(&json!({
            "pid": 4242, "createdAt": "2026-11-22T11:32:37.612Z", "maxHoldMs": 300000,
            "starttime": 123456
        }))
        .unwrap();
        lock.push(b'\n');
        lock.resize(LOCK_BYTES - 1, b' ');
        lock.push(b'\n');
        Data {
            lines: out,
            transcript,
            lock,
        }
    }
}

/// Create the layout every workload uses, in `root` (before the mount, as an
/// existing sessions directory would be).
fn prepare(root: &Path, data: &Data) {
    for d in ["read", "ls", "append", "lock"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let side = Side {
        name: "",
        root: root.to_path_buf(),
    };
    std::fs::write(side.transcript(), &data.transcript).unwrap();
    let ls = side.ls_dir();
    // Each listed file holds one session header line.
    let nl = data.transcript.iter().position(|&b| b == b'\n').unwrap();
    let header = &data.transcript[..=nl];
    for i in 0..LS_FILES {
        let name = format!(
            "{:08x}-{:04x}-4{:03x}-8000-{:012x}.jsonl",
            i * 7919,
            i % 65536,
            i % 4096,
            i
        );
        std::fs::write(ls.join(name), header).unwrap();
    }
}

/// A live sessionfs mount; unmounted (waiting for the daemon) on drop.
struct Mount {
    bin: PathBuf,
    mnt: PathBuf,
}

fn is_mounted(p: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = p.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(&*want))
}

impl Mount {
    fn new(bin: &Path, src: &Path, state: &Path, mnt: &Path, extra: &[String]) -> Mount {
        let out = Command::new(bin)
            .arg("mount")
            .arg("--source")
            .arg(src)
            .arg("--state-dir")
            .arg(state)
            .args(extra)
            .arg(mnt)
            .output()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        assert!(
            out.status.success(),
            "sessionfs mount failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            is_mounted(mnt),
            "sessionfs mount returned but {} is not a mountpoint",
            mnt.display()
        );
        Mount {
            bin: bin.to_path_buf(),
            mnt: mnt.to_path_buf(),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if !is_mounted(&self.mnt) {
            return;
        }
        let ok = Command::new(&self.bin)
            .arg("umount")
            .arg(&self.mnt)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok || is_mounted(&self.mnt) {
            eprintln!(
                "bench: sessionfs umount failed; lazy-unmounting {}",
                self.mnt.display()
            );
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        let t = Instant::now();
        while is_mounted(&self.mnt) && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `sync; echo 3 > /proc/sys/vm/drop_caches` (page cache, FUSE's included, dentries, inodes).
fn drop_caches() {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", b"3\n")
        .unwrap_or_else(|e| panic!("drop caches (needs root): {e}"));
}

/// Read `path` whole into `buf` (reused), the way `fs.readFileSync` does: open,
/// read until EOF. Returns the bytes read.
fn read_whole(path: &Path, buf: &mut Vec<u8>) -> usize {
    let mut f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut n = 0;
    loop {
        if n == buf.len() {
            buf.resize(buf.len() * 2 + (1 << 20), 0);
        }
        let r = f.read(&mut buf[n..]).unwrap();
        if r == 0 {
            return n;
        }
        n += r;
    }
}

/// One measurement: how many units of work in how long.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Operations (or bytes for reads, or runs for `ls -l`).
    work: f64,
    elapsed: Duration,
}

impl Sample {
    /// The figure in the workload's unit.
    fn value(self, unit: Unit) -> f64 {
        let s = self.elapsed.as_secs_f64();
        match unit {
            Unit::OpsPerSec => self.work / s,
            Unit::MBps => self.work / s / 1e6,
            Unit::Ms => s * 1e3 / self.work,
        }
    }
}

/// Run `n` repetitions of workload `w` on `side`; only the operations themselves are timed.
fn measure(w: Workload, side: &Side, data: &Data, n: u64, buf: &mut Vec<u8>) -> Sample {
    let n = n.max(1);
    match w {
        Workload::AppendReopen => {
            let p = side.append_file();
            File::create(&p).unwrap();
            let t = Instant::now();
            for i in 0..n {
                let mut f = OpenOptions::new().append(true).open(&p).unwrap();
                f.write_all(&data.lines[i as usize % data.lines.len()])
                    .unwrap();
            }
            let elapsed = t.elapsed();
            std::fs::remove_file(&p).unwrap();
            Sample {
                work: n as f64,
                elapsed,
            }
        }
        Workload::AppendKeep => {
            let p = side.append_file();
            File::create(&p).unwrap();
            let mut f = OpenOptions::new().append(true).open(&p).unwrap();
            let t = Instant::now();
            for i in 0..n {
                f.write_all(&data.lines[i as usize % data.lines.len()])
                    .unwrap();
            }
            let elapsed = t.elapsed();
            drop(f);
            std::fs::remove_file(&p).unwrap();
            Sample {
                work: n as f64,
                elapsed,
            }
        }
        Workload::ReadWarm => {
            let p = side.transcript();
            read_whole(&p, buf); // warm it
            let t = Instant::now();
            let mut bytes = 0;
            for _ in 0..n {
                bytes += read_whole(&p, buf);
            }
            Sample {
                work: bytes as f64,
                elapsed: t.elapsed(),
            }
        }
        Workload::ReadCold => {
            let p = side.transcript();
            let mut elapsed = Duration::ZERO;
            let mut bytes = 0;
            for _ in 0..n {
                drop_caches();
                let t = Instant::now();
                bytes += read_whole(&p, buf);
                elapsed += t.elapsed();
            }
            Sample {
                work: bytes as f64,
                elapsed,
            }
        }
        Workload::LsL => {
            let dir = side.ls_dir();
            let ls = || {
                let st = Command::new("ls")
                    .arg("-l")
                    .arg(&dir)
                    .env("LC_ALL", "C")
                    .stdout(Stdio::null())
                    .status()
                    .expect("run ls");
                assert!(st.success(), "ls -l {} failed: {st}", dir.display());
            };
            ls(); // warm
            let t = Instant::now();
            for _ in 0..n {
                ls();
            }
            Sample {
                work: n as f64,
                elapsed: t.elapsed(),
            }
        }
        Workload::Stat => {
            let p = side.transcript();
            std::fs::metadata(&p).unwrap();
            let t = Instant::now();
            for _ in 0..n {
                std::hint::black_box(std::fs::metadata(&p).unwrap());
            }
            Sample {
                work: n as f64,
                elapsed: t.elapsed(),
            }
        }
        Workload::LockChurn => {
            let p = side.lock_file();
            let t = Instant::now();
            for _ in 0..n {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o644)
                    .open(&p)
                    .unwrap();
                f.write_all(&data.lock).unwrap();
                drop(f);
                std::fs::remove_file(&p).unwrap();
            }
            Sample {
                work: n as f64,
                elapsed: t.elapsed(),
            }
        }
    }
}

/// Pick the repetition count: probe on the mount until a probe takes ≥ 1/10 of the
/// target, then scale to `target` seconds, within the workload's bounds.
fn size_for(w: Workload, mount: &Side, data: &Data, quick: bool, buf: &mut Vec<u8>) -> u64 {
    let target = if quick { 0.15 } else { 1.0 };
    let (start, min, max) = match w {
        // Bounded so a measurement appends at most 100 MB.
        Workload::AppendReopen | Workload::AppendKeep => (200, 500, 50_000),
        Workload::ReadWarm => (4, 10, 5_000),
        Workload::ReadCold => return if quick { 2 } else { 5 },
        Workload::LsL => (2, 3, 200),
        Workload::Stat => return if quick { 20_000 } else { 100_000 },
        Workload::LockChurn => (200, 500, 200_000),
    };
    let mut n: u64 = start;
    loop {
        let s = measure(w, mount, data, n, buf);
        let secs = s.elapsed.as_secs_f64();
        if secs >= target / 10.0 || n >= max {
            let per = secs / n as f64;
            return ((target / per) as u64).clamp(min, max);
        }
        n *= 4;
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Machine facts for the README table.
fn machine_info(base: &Path) -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|kib| kib / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let manifest = env!("CARGO_MANIFEST_DIR");
    let commit = sh("git", &["-C", manifest, "rev-parse", "--short", "HEAD"]);
    let dirty = !sh(
        "git",
        &[
            "-C",
            manifest,
            "status",
            "--porcelain",
            "--untracked-files=no",
        ],
    )
    .is_empty();
    json!({
        "date": sh("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "mem_gib": (mem_gib * 10.0).round() / 10.0,
        "fs": sh("df", &["--output=fstype", &base.to_string_lossy()]).lines().last().unwrap_or("").to_string(),
        "loadavg_at_start": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "sessionfs_commit": format!("{commit}{}", if dirty { "-dirty" } else { "" }),
    })
}

struct Row {
    w: Workload,
    n: u64,
    native: Vec<f64>,
    mount: Vec<f64>,
    /// Daemon CPU time (user + system) per unit of work on the mount, µs; one per round.
    daemon_cpu_us: Vec<f64>,
}

/// FUSE requests per unit of work (op, whole read, `ls -l` run), by opcode, counted
/// from the request lines fuser logs at debug level (`... fuser::request: FUSE(  N)
/// ino 0x... OPCODE ...`) in `<state>/sessionfs.log` of a mount made with `-o debug`.
/// The first measurement of each workload warms the caches and is not counted.
fn count_requests(
    bin: &Path,
    tmp: &Path,
    data: &Data,
    selected: &[Workload],
    extra: &[String],
) -> Vec<(Workload, BTreeMap<String, f64>)> {
    let backing = tmp.join("backing-debug");
    let mnt = tmp.join("mnt-debug");
    let state = tmp.join("state-debug");
    std::fs::create_dir_all(&backing).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    prepare(&backing, data);
    let mut args = extra.to_vec();
    args.extend(["-o".to_string(), "debug".to_string()]);
    let guard = Mount::new(bin, &backing, &state, &mnt, &args);
    let side = Side {
        name: "mount",
        root: mnt.clone(),
    };
    let log = state.join("sessionfs.log");
    let log_len = || std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let mut buf = vec![0u8; TRANSCRIPT_BYTES + (1 << 20)];
    let mut out = Vec::new();
    for &w in selected {
        check_interrupt();
        let n: u64 = match w {
            Workload::AppendReopen | Workload::AppendKeep | Workload::LockChurn => 500,
            Workload::ReadWarm | Workload::ReadCold => 3,
            Workload::LsL => 2,
            Workload::Stat => 10_000,
        };
        measure(w, &side, data, n, &mut buf);
        // Count n and 2n repetitions and take the difference: the untimed set-up of a
        // measurement (creating and removing the append file) cancels out.
        let mut count = |reps: u64| -> BTreeMap<String, f64> {
            std::thread::sleep(Duration::from_millis(200));
            let from = log_len();
            measure(w, &side, data, reps, &mut buf);
            // RELEASE and FORGET arrive after close() and unlink() return.
            std::thread::sleep(Duration::from_millis(300));
            let mut text = Vec::new();
            if let Ok(mut f) = File::open(&log) {
                f.seek(SeekFrom::Start(from)).unwrap();
                f.read_to_end(&mut text).unwrap();
            }
            let mut by_op = BTreeMap::new();
            for line in String::from_utf8_lossy(&text).lines() {
                let Some((_, rest)) = line.split_once("fuser::request: FUSE(") else {
                    continue;
                };
                // `  N) ino 0x0000000000000001 GETATTR ...`
                let mut t = rest.split_whitespace();
                if let Some(op) = t.find(|x| *x == "ino").and_then(|_| t.nth(1)) {
                    *by_op.entry(op.to_string()).or_insert(0.0) += 1.0;
                }
            }
            by_op
        };
        let once = count(n);
        let mut by_op = count(2 * n);
        for (op, c) in &once {
            *by_op.entry(op.clone()).or_insert(0.0) -= c;
        }
        by_op.retain(|_, c| *c > 0.0);
        if by_op.is_empty() {
            eprintln!(
                "bench: no FUSE request lines for {} in {}",
                w.name(),
                log.display()
            );
        }
        for c in by_op.values_mut() {
            *c /= n as f64;
        }
        out.push((w, by_op));
    }
    drop(guard);
    out
}

fn print_requests(counts: &[(Workload, BTreeMap<String, f64>)]) {
    println!();
    println!("| workload | FUSE requests per op | by opcode |");
    println!("|---|---:|---|");
    for (w, by_op) in counts {
        let total: f64 = by_op.values().fold(0.0, |a, c| a + c);
        let mut ops: Vec<_> = by_op.iter().collect();
        ops.sort_by(|a, b| b.1.partial_cmp(a.1).unwrap().then(a.0.cmp(b.0)));
        let detail: Vec<String> = ops
            .iter()
            .filter(|(_, c)| **c >= 0.005)
            .map(|(op, c)| format!("{op} {c:.2}"))
            .collect();
        let per = match w.unit() {
            Unit::MBps => " (per 8 MiB read)",
            Unit::Ms => " (per `ls -l` run)",
            Unit::OpsPerSec => "",
        };
        println!(
            "| {}{per} | {total:.2} | {} |",
            w.label(),
            if detail.is_empty() {
                "none".to_string()
            } else {
                detail.join(", ")
            }
        );
    }
}

/// Pid of the daemon serving `mnt`, from the pid file `sessionfs mount` writes.
fn daemon_pid(mnt: &Path) -> Option<u32> {
    let id = sessionfs::mount_id(&std::fs::canonicalize(mnt).ok()?);
    std::fs::read_to_string(sessionfs::pid_file(&id))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// CPU time (user + system) process `pid` has used so far, seconds.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised comm: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    Some(ticks as f64 / hz as f64)
}

/// Resident set size of process `pid`, KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The journal at scale (from the lead's first bench): 10,000 files × 100 appends of
/// 200 B through the mount = 1,000,000 write records; then the whole-mount journal
/// size, `sessionfs journal --since` time to first record (process start included)
/// for a recent, a middle and an old sequence number, and the daemon's RSS.
fn journal_scale(bin: &Path, mnt: &Path, data: &Data) -> Value {
    // The daemon holds one fd per inode the kernel knows; the `ls -l` workload left
    // 10,000 of them, and this machine caps fds at a 20,000 hard limit that even root
    // may not raise here. Let the kernel forget them first (dentries and inodes only).
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "2");
    let dir = mnt.join("scale");
    std::fs::create_dir_all(&dir).unwrap();
    let line = {
        let mut l = data.lines[0][..199].to_vec();
        l.push(b'\n');
        l
    };
    let t = Instant::now();
    for f in 0..10_000 {
        check_interrupt();
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(dir.join(format!("{f:05}.jsonl")))
            .unwrap();
        for _ in 0..100 {
            file.write_all(&line).unwrap();
        }
    }
    let secs = t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    let pid = daemon_pid(mnt).expect("daemon pid file");
    let rss = rss_kib(pid);
    let jlen = std::fs::metadata(mnt.join(".journal"))
        .map(|m| m.len())
        .unwrap_or(0);
    let seq: u64 = {
        let last = dir.join("09999.jsonl");
        let cpath = std::ffi::CString::new(last.to_string_lossy().as_bytes()).unwrap();
        let name = std::ffi::CString::new("user.sessionfs.seq").unwrap();
        let mut buf = [0u8; 32];
        // SAFETY: valid C strings and buffer of the given length.
        let n = unsafe {
            libc::getxattr(
                cpath.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        String::from_utf8_lossy(&buf[..n.max(0) as usize])
            .trim()
            .parse()
            .unwrap_or(0)
    };
    // One untimed run first: the timed ones measure the seek, not a binary that the
    // cache drop above pushed out of the page cache.
    let _ = Command::new(bin)
        .args(["journal", "--json", "--since", &seq.to_string()])
        .arg(mnt)
        .stdout(Stdio::null())
        .status();
    let mut times = Vec::new();
    for back in [10u64, 500_000, 900_000] {
        let since = seq.saturating_sub(back);
        let t = Instant::now();
        let mut child = Command::new(bin)
            .args(["journal", "--json", "--since", &since.to_string()])
            .arg(mnt)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = [0u8; 1];
        let got = child
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut first)
            .is_ok();
        times.push(if got {
            t.elapsed().as_secs_f64() * 1e3
        } else {
            f64::NAN
        });
        let _ = child.kill();
        let _ = child.wait();
    }
    println!();
    println!("| journal at scale | value |");
    println!("|---|---|");
    println!(
        "| 1,000,000 appends (200 B) to 10,000 files through the mount | {secs:.1} s ({}/s) |",
        group(1e6 / secs)
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
    json!({
        "appends_secs": secs, "journal_bytes": jlen, "latest_seq": seq,
        "since_first_record_ms": times, "daemon_rss_kib": rss,
    })
}

/// One file count of the scale rows.
struct ScaleRow {
    files: usize,
    /// µs per create while filling the directory to `files`, native and mount.
    fill: (f64, f64),
    /// Per-round µs per create of [`scale_batch`] more files, native and mount.
    create: (Vec<f64>, Vec<f64>),
    /// Per-round ms per warm `ls -l`, native and mount.
    ls: (Vec<f64>, Vec<f64>),
    /// ms of one `ls -l` through the mount once every entry is older than the TTL.
    ls_stale: f64,
    rss_kib: u64,
    fds: usize,
}

/// Files created per timed batch of the scale rows at `n` files: a tenth, 100 to
/// 1,000.
fn scale_batch(n: usize) -> usize {
    (n / 10).clamp(100, 1000)
}

/// Open fds of process `pid`.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Create `n` empty files `<prefix>000000`… in `dir` (open(O_CREAT|O_EXCL|O_WRONLY) +
/// close each); µs per create.
fn create_files(dir: &Path, prefix: &str, n: usize) -> f64 {
    let t = Instant::now();
    for i in 0..n {
        drop(
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(dir.join(format!("{prefix}{i:06}")))
                .unwrap_or_else(|e| panic!("create in {}: {e}", dir.display())),
        );
    }
    t.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// One `ls -l` of `dir` (LC_ALL=C, output discarded); ms.
fn ls_l(dir: &Path) -> f64 {
    let t = Instant::now();
    let st = Command::new("ls")
        .arg("-l")
        .arg(dir)
        .env("LC_ALL", "C")
        .stdout(Stdio::null())
        .status()
        .expect("run ls");
    assert!(st.success(), "ls -l {} failed: {st}", dir.display());
    t.elapsed().as_secs_f64() * 1e3
}

/// The scale rows. For each file count N: a plain directory and a fresh mount (one
/// mount per count, all alive together; `extra` arguments), each directory filled to
/// N − rounds × batch / 2 files (timed: `fill`). Then `rounds` rounds, each over
/// every count and side in alternating order, so the counts are compared under the
/// same machine load:
/// - creates: a [`scale_batch`] of more files in the directory (µs per create), kept
///   (so the directory holds N files on average over the rounds; removing them would
///   measure ext4, which skips inodes freed in the last ~30 s when it allocates);
/// - warm `ls -l`: an untimed `ls -l`, then a timed one right after it.
///
/// Then, after sleeping past the attr/entry TTL, one `ls -l` per mount (the kernel
/// looks every entry up again), and the daemons' RSS and open fds.
fn scale_rows(
    bin: &Path,
    base: &Path,
    extra: &[String],
    sizes: &[usize],
    rounds: u32,
) -> Vec<ScaleRow> {
    let ttl = extra
        .iter()
        .position(|a| a == "--ttl-ms")
        .and_then(|i| extra.get(i + 1)?.parse::<u64>().ok())
        .unwrap_or(10_000);
    let mut mounts = Vec::new();
    let mut rows = Vec::new();
    for &n in sizes {
        check_interrupt();
        let root = base.join(format!("scale-{n}"));
        let (native, backing, mnt, state) = (
            root.join("native"),
            root.join("backing"),
            root.join("mnt"),
            root.join("state"),
        );
        for d in [&native, &backing, &mnt] {
            std::fs::create_dir_all(d).unwrap();
        }
        let guard = Mount::new(bin, &backing, &state, &mnt, extra);
        let pid = daemon_pid(&mnt).expect("daemon pid file");
        let (nd, md) = (native.join("d"), mnt.join("d"));
        std::fs::create_dir(&nd).unwrap();
        std::fs::create_dir(&md).unwrap();
        let pre = n - (rounds as usize * scale_batch(n) / 2).min(n / 2);
        let fill = (create_files(&nd, "f", pre), create_files(&md, "f", pre));
        eprintln!(
            "bench: scale {n}: filled at {:.1} µs/create native, {:.1} mount",
            fill.0, fill.1
        );
        mounts.push((guard, pid, nd, md));
        rows.push(ScaleRow {
            files: n,
            fill,
            create: (Vec::new(), Vec::new()),
            ls: (Vec::new(), Vec::new()),
            ls_stale: f64::NAN,
            rss_kib: 0,
            fds: 0,
        });
    }
    for r in 0..rounds {
        let mut order: Vec<usize> = (0..rows.len()).collect();
        if r % 2 == 1 {
            order.reverse();
        }
        for &k in &order {
            for on_mount in if r % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            } {
                check_interrupt();
                let (_, _, nd, md) = &mounts[k];
                let d = if on_mount { md } else { nd };
                let us = create_files(d, &format!("x{r}_"), scale_batch(rows[k].files));
                ls_l(d); // untimed: the timed run is the one right after it
                let ms = ls_l(d);
                let side = if on_mount { "mount" } else { "native" };
                eprintln!(
                    "bench: scale {}: round {} {side}: {us:.1} µs/create, ls -l {ms:.1} ms",
                    rows[k].files,
                    r + 1
                );
                let row = &mut rows[k];
                if on_mount {
                    row.create.1.push(us);
                    row.ls.1.push(ms);
                } else {
                    row.create.0.push(us);
                    row.ls.0.push(ms);
                }
            }
        }
    }
    std::thread::sleep(Duration::from_millis(ttl + 500));
    for (row, (_, pid, _, md)) in rows.iter_mut().zip(&mounts) {
        row.ls_stale = ls_l(md);
        eprintln!(
            "bench: scale {}: ls -l mount past the TTL: {:.1} ms",
            row.files, row.ls_stale
        );
        row.rss_kib = rss_kib(*pid);
        row.fds = fd_count(*pid);
    }
    drop(mounts);
    rows
}

/// Print the scale rows with their ratios and targets; their JSON.
fn print_scale(rows: &[ScaleRow]) -> Value {
    let ratio = |a: &[f64], b: &[f64]| {
        let r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
        let lo = r.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        (median(&r), lo, hi)
    };
    println!();
    println!(
        "| files in one dir | fill native / mount | create native | create mount | mount − native | mount create vs {} files (range) | `ls -l` warm native | `ls -l` warm mount | mount/native (range) | `ls -l` mount past TTL | daemon RSS | daemon fds |",
        rows.first()
            .map_or(String::new(), |r| group(r.files as f64))
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut out = Vec::new();
    for r in rows {
        let (cn, cm) = (median(&r.create.0), median(&r.create.1));
        // The daemon's share of a create: per round, mount minus native.
        let diffs: Vec<f64> = r
            .create
            .1
            .iter()
            .zip(&r.create.0)
            .map(|(m, n)| m - n)
            .collect();
        let cd = median(&diffs);
        let (ln, lm) = (median(&r.ls.0), median(&r.ls.1));
        let (lr, llo, lhi) = ratio(&r.ls.1, &r.ls.0);
        let (cr, clo, chi) = ratio(&r.create.1, &rows[0].create.1);
        println!(
            "| {} | {:.0} / {:.0} µs | {cn:.1} µs | {cm:.1} µs | {cd:.1} µs | {cr:.2}× ({clo:.2}–{chi:.2}) | {ln:.1} ms | {lm:.1} ms | {lr:.2}× ({llo:.2}–{lhi:.2}) | {:.0} ms | {:.1} MiB | {} |",
            group(r.files as f64),
            r.fill.0,
            r.fill.1,
            r.ls_stale,
            r.rss_kib as f64 / 1024.0,
            r.fds
        );
        out.push(json!({
            "files": r.files,
            "fill_us_per_create": [r.fill.0, r.fill.1],
            "create_us_native": r.create.0, "create_us_mount": r.create.1,
            "create_mount_vs_first": cr, "create_mount_minus_native_us": cd,
            "ls_ms_native": r.ls.0, "ls_ms_mount": r.ls.1, "ls_ratio": lr,
            "ls_ms_mount_past_ttl": r.ls_stale,
            "daemon_rss_kib": r.rss_kib, "daemon_fds": r.fds,
        }));
    }
    println!(
        "\nFill: µs per create while filling each directory (before the rounds). \
         Creates: open(O_CREAT|O_EXCL) + close of a tenth of N (100–1,000) more files \
         per round, kept, so the directory holds N on average over the rounds; µs each; \
         \"vs\": median of the per-round ratios to the first count's mount figure \
         (rounds interleave the counts). Warm `ls -l`: right after \
         another. Past TTL: after sleeping past the attr/entry TTL (the kernel looks every \
         entry up again). RSS and fds: each count's daemon at the end, the kernel holding \
         its N inodes. Targets: create at 100,000 ≤ 1.2× of 1,000; warm `ls -l` ≤ 1.5× \
         native at 100,000, ≤ 1.2× at 10,000; RSS ≤ 64 MiB and fds ≤ 1,000 at 100,000."
    );
    Value::Array(out)
}

fn main() {
    let mut opts = Opts::parse();
    if std::env::var("SESSIONFS_BENCH_SCALE").as_deref() == Ok("only") {
        opts.scale_only = true;
    }
    let selected: Vec<Workload> = if opts.only.is_empty() {
        Workload::ALL.to_vec()
    } else {
        opts.only
            .iter()
            .map(|s| {
                Workload::ALL
                    .into_iter()
                    .find(|w| w.name() == s.trim())
                    .unwrap_or_else(|| {
                        let names: Vec<_> = Workload::ALL.iter().map(|w| w.name()).collect();
                        eprintln!("bench: unknown workload '{s}'; known: {}", names.join(", "));
                        std::process::exit(2)
                    })
            })
            .collect()
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("bench: run as root (the mount and the cold-read workload need it)");
        std::process::exit(2);
    }
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }

    let bin = PathBuf::from(env!("CARGO_BIN_EXE_sessionfs"));
    let base = opts.dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("sessionfs-bench.")
        .tempdir_in(&base)
        .expect("tempdir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let native_dir = tmp.path().join("native");
    let backing = tmp.path().join("backing");
    let mnt = tmp.path().join("mnt");
    let state = tmp.path().join("state");
    for d in [&native_dir, &backing, &mnt] {
        std::fs::create_dir_all(d).unwrap();
    }

    let machine = machine_info(tmp.path());
    let extra: Vec<String> = opts
        .mount_args
        .split_whitespace()
        .map(String::from)
        .collect();
    println!("# sessionfs benchmark\n");
    println!(
        "- machine: Linux {}, {} CPUs ({}), {} GiB RAM; temp fs: {}",
        machine["kernel"].as_str().unwrap_or(""),
        machine["nproc"],
        machine["cpu"].as_str().unwrap_or(""),
        machine["mem_gib"],
        machine["fs"].as_str().unwrap_or("")
    );
    println!(
        "- date: {}; load average at start: {}; sessionfs {} ({})",
        machine["date"].as_str().unwrap_or(""),
        machine["loadavg_at_start"].as_str().unwrap_or(""),
        machine["sessionfs_commit"].as_str().unwrap_or(""),
        bin.display()
    );
    println!(
        "- mount: sessionfs mount --source <backing> --state-dir <state>{}{} <mnt>",
        if extra.is_empty() { "" } else { " " },
        extra.join(" ")
    );
    println!(
        "- {} interleaved round(s){}; figures are medians; mount/native is the median of per-round (paired) ratios\n",
        opts.rounds,
        if opts.quick { ", --quick" } else { "" }
    );

    if opts.scale_only {
        let rows = scale_rows(&bin, tmp.path(), &extra, &opts.scale_files, opts.rounds);
        let v = print_scale(&rows);
        if let Some(dest) = &opts.json {
            let text = serde_json::to_string_pretty(
                &json!({ "machine": machine, "mount_args": extra, "rounds": opts.rounds, "scale": v }),
            )
            .unwrap();
            if dest == "-" {
                println!("\n```json\n{text}\n```");
            } else {
                std::fs::write(dest, text + "\n").unwrap_or_else(|e| panic!("write {dest}: {e}"));
            }
        }
        return;
    }
    let data = Data::build();
    prepare(&native_dir, &data);
    prepare(&backing, &data);
    let mut mount_args = extra.clone();
    if opts.journal_scale {
        mount_args.extend(["--journal-max-size".to_string(), "2GiB".to_string()]);
    }
    let mount_guard = Mount::new(&bin, &backing, &state, &mnt, &mount_args);
    let pid = daemon_pid(&mnt);
    if pid.is_none() {
        eprintln!("bench: no daemon pid file found: daemon CPU column left empty");
    }
    let fs_line = std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(&*mnt.to_string_lossy()))
        .unwrap_or("")
        .to_string();
    eprintln!("bench: mounted: {fs_line}");
    let native = Side {
        name: "native",
        root: native_dir.clone(),
    };
    let mount = Side {
        name: "mount",
        root: mnt.clone(),
    };

    let mut buf = vec![0u8; TRANSCRIPT_BYTES + (1 << 20)];
    let mut rows: Vec<Row> = Vec::new();
    for &w in &selected {
        check_interrupt();
        let n = size_for(w, &mount, &data, opts.quick, &mut buf);
        // Warm the native side with the same amount of work.
        measure(w, &native, &data, n.min(1000), &mut buf);
        eprintln!("bench: {}: {n} per measurement", w.name());
        rows.push(Row {
            w,
            n,
            native: Vec::new(),
            mount: Vec::new(),
            daemon_cpu_us: Vec::new(),
        });
    }
    for round in 0..opts.rounds {
        for row in &mut rows {
            // Alternate which side goes first so neither always runs on a hotter machine.
            let order: [&Side; 2] = if round % 2 == 0 {
                [&native, &mount]
            } else {
                [&mount, &native]
            };
            for side in order {
                check_interrupt();
                let cpu0 = pid.and_then(cpu_secs);
                let sample = measure(row.w, side, &data, row.n, &mut buf);
                let v = sample.value(row.w.unit());
                if side.name == "mount"
                    && let (Some(a), Some(b)) = (cpu0, pid.and_then(cpu_secs))
                {
                    let per = match row.w.unit() {
                        Unit::MBps => sample.work / 1e6,
                        _ => sample.work,
                    };
                    row.daemon_cpu_us.push((b - a) * 1e6 / per);
                }
                eprintln!(
                    "bench: round {} {} {}: {}",
                    round + 1,
                    row.w.name(),
                    side.name,
                    fmt_value(row.w.unit(), v)
                );
                if side.name == "native" {
                    row.native.push(v)
                } else {
                    row.mount.push(v)
                }
            }
        }
    }

    println!(
        "| workload | native | sessionfs | mount/native (range) | target | result | daemon CPU |"
    );
    println!("|---|---:|---:|---:|---|---|---:|");
    let mut results = Vec::new();
    for row in &rows {
        let (nv, mv) = (median(&row.native), median(&row.mount));
        let unit = row.w.unit();
        // Rounds are interleaved, so each round's native and mount figures are a pair
        // measured under the same machine load: the ratio is the median of the per-round
        // ratios, which cancels load drift between rounds (shown with its range).
        let ratios: Vec<f64> = row
            .mount
            .iter()
            .zip(&row.native)
            .map(|(m, n)| m / n)
            .collect();
        let ratio = median(&ratios);
        let lo = ratios.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = ratios.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let ratio_s = match unit {
            Unit::Ms => format!("{ratio:.2}× time ({lo:.2}–{hi:.2})"),
            _ => format!("{ratio:.3}× ({lo:.2}–{hi:.2})"),
        };
        let met = row.w.target().met(mv, ratio);
        let cpu = (!row.daemon_cpu_us.is_empty()).then(|| median(&row.daemon_cpu_us));
        let cpu_s = match (cpu, unit) {
            (None, _) => "—".to_string(),
            (Some(c), Unit::OpsPerSec) => format!("{c:.1} µs/op"),
            (Some(c), Unit::MBps) => format!("{c:.0} µs/MB"),
            (Some(c), Unit::Ms) => format!("{:.1} ms/run", c / 1e3),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.w.label(),
            fmt_value(unit, nv),
            fmt_value(unit, mv),
            ratio_s,
            row.w.target().describe(),
            match met {
                Some(true) => "PASS",
                Some(false) => "MISS",
                None => "—",
            },
            cpu_s
        );
        results.push(json!({
            "workload": row.w.name(),
            "unit": match unit { Unit::OpsPerSec => "ops/s", Unit::MBps => "MB/s", Unit::Ms => "ms" },
            "per_measurement": row.n,
            "native": nv, "mount": mv, "ratio": ratio, "ratio_range": [lo, hi],
            "native_rounds": row.native, "mount_rounds": row.mount,
            "target": row.w.target().describe(),
            "pass": met,
            "daemon_cpu_us_per_unit": cpu,
        }));
    }
    println!(
        "\nDaemon CPU: user+system time of the sessionfs daemon during each mount \
         measurement (its untimed set-up included, 10 ms tick resolution) per op, per MB \
         read, or per `ls -l` run.\n\
         Reference (FUSE-NOTES, same machine kind): native ~154k append-reopen/s, 359k \
         append-keep/s, 36k lock-churn/s; libfuse passthrough_hp 2.7k / 12k / 1.5k."
    );
    let scale = opts.journal_scale.then(|| journal_scale(&bin, &mnt, &data));
    let requests = opts.count_requests.then(|| {
        let c = count_requests(&bin, tmp.path(), &data, &selected, &extra);
        print_requests(&c);
        c
    });
    drop(mount_guard);
    assert!(!is_mounted(&mnt), "{} is still mounted", mnt.display());
    let scale_rows = opts.scale.then(|| {
        let rows = scale_rows(&bin, tmp.path(), &extra, &opts.scale_files, opts.rounds);
        print_scale(&rows)
    });

    if let Some(dest) = &opts.json {
        let doc = json!({
            "machine": machine,
            "mount_args": extra,
            "mount": fs_line,
            "rounds": opts.rounds,
            "quick": opts.quick,
            "results": results,
            "journal_scale": scale,
            "scale": scale_rows,
            "requests_per_op": requests.map(|c| c.into_iter()
                .map(|(w, m)| (w.name().to_string(), json!(m)))
                .collect::<serde_json::Map<String, Value>>()),
        });
        let text = serde_json::to_string_pretty(&doc).unwrap();
        if dest == "-" {
            println!("\n```json\n{text}\n```");
        } else {
            std::fs::write(dest, text + "\n").unwrap_or_else(|e| panic!("write {dest}: {e}"));
            eprintln!("bench: JSON written to {dest}");
        }
    }
}
