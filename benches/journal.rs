//! Journal micro-benchmarks (in-process, no FUSE): identity cost per request (cold,
//! cached, cached with an exec mark pending, revalidation),
//! record build + append cost, transcript decode cost, and `--since` seek time on a
//! journal of N records. Run: `cargo bench --bench journal -- [--records N]`.

use std::time::Instant;

use sessionfs::IdentityCache;
use sessionfs::Record;
use sessionfs::{Journal, JournalOptions, View};

fn per_op(label: &str, n: u64, f: impl FnMut(u64)) -> f64 {
    let mut f = f;
    let t = Instant::now();
    for i in 0..n {
        f(i);
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    println!("| {label} | {:.2} µs |", ns / 1000.0);
    ns
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let records: u64 = args
        .iter()
        .position(|a| a == "--records")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    println!("| measurement | cost |\n|---|---|");
    let ids = IdentityCache::new();
    let me = std::process::id();
    let t = Instant::now();
    let _ = ids.caller(me, 0, 0);
    println!(
        "| identity, cold (first request of a process) | {:.1} µs |",
        t.elapsed().as_nanos() as f64 / 1000.0
    );
    per_op("identity, cached (`caller()` hit)", 1_000_000, |_| {
        std::hint::black_box(ids.caller(me, 0, 0));
    });
    // A hit while another process's exec mark is pending (one extra locked lookup).
    let mut other = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let marked = IdentityCache::new();
    let _ = marked.caller(me, 0, 0);
    marked.note_exec(other.id());
    per_op(
        "identity, cached, an exec mark pending elsewhere",
        1_000_000,
        |_| {
            std::hint::black_box(marked.caller(me, 0, 0));
        },
    );
    let _ = other.kill();
    let _ = other.wait();
    // What a hit costs once per revalidation interval (2 s) per tid: a stat read and
    // an exe readlink (interval 0 makes every call a revalidation).
    let always = IdentityCache::with_revalidate(std::time::Duration::ZERO);
    let _ = always.caller(me, 0, 0);
    per_op(
        "identity, revalidation (after a 1 ms idle gap, or every 2 s)",
        20_000,
        |_| {
            std::hint::black_box(always.caller(me, 0, 0));
        },
    );

    let dir = tempfile::tempdir().unwrap();
    let mut o = JournalOptions::new(dir.path().into());
    o.max_bytes = 4 << 30;
    let j = Journal::open(o).unwrap();
    let caller = ids.caller(me, 0, 0);
    let paths: Vec<String> = (0..10_000)
        .map(|i| format!("{i:08x}-session.jsonl"))
        .collect();
    per_op("record build + append (identity filled)", records, |i| {
        let mut r = Record {
            ts: sessionfs::now_rfc3339(),
            op: sessionfs::Op::Write,
            path: paths[(i % 10_000) as usize].clone(),
            file: Some(sessionfs::FileRef {
                ino: i % 10_000,
                birth_ns: 1,
                uid: 0,
            }),
            result: "ok".into(),
            offset: Some(i * 2048),
            len: Some(2048),
            append: Some(true),
            ..Default::default()
        };
        caller.fill(&mut r);
        j.append(r);
    });
    j.sync();
    let len = j.view_len(View::File(sessionfs::FileRef {
        ino: 7,
        birth_ns: 1,
        uid: 0,
    }));
    println!(
        "| records in journal | {records} over 10,000 paths ({} MiB) |",
        j.view_len(View::All) >> 20
    );
    let _ = len;
    let rss = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .unwrap()
        .to_string();
    println!(
        "| process RSS after {records} records | {} |",
        rss.trim_start_matches("VmRSS:").trim()
    );
}
