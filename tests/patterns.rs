//! Concurrency and OpenClaw write patterns through a real mount, driven by processes
//! other than the test: an O_APPEND storm, the gateway's write patterns (compared
//! with the same run on a plain directory), and lock exclusivity.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::Mount;

fn script(name: &str) -> String {
    format!("{}/tests/scripts/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn append_storm_16_writers_no_torn_lines() {
    let m = Mount::new(&[]);
    let file = m.mnt.join("storm.jsonl");
    let (writers, lines) = (16, 2000);
    let children: Vec<_> = (0..writers)
        .map(|w| {
            Command::new("python3")
                .arg(script("append_storm.py"))
                .arg(&file)
                .arg(w.to_string())
                .arg(lines.to_string())
                .spawn()
                .expect("python3")
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success(), "a writer failed");
    }
    let data = std::fs::read(&file).unwrap();
    let backing = std::fs::read(m.src.join("storm.jsonl")).unwrap();
    assert_eq!(
        data.len(),
        backing.len(),
        "mount and backing disagree on size"
    );
    assert!(data == backing, "mount and backing disagree on content");
    let mut next = vec![0u64; writers];
    let mut total = 0;
    for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let text = std::str::from_utf8(line).expect("utf8");
        let mut it = text.splitn(4, ' ');
        let w: usize = it.next().unwrap().parse().expect("torn line: writer");
        let seq: u64 = it.next().unwrap().parse().expect("torn line: seq");
        let size: usize = it.next().unwrap().parse().expect("torn line: size");
        let payload = it.next().expect("torn line: payload").as_bytes();
        // append_storm.py writes `head + letter * max(1, size - len(head) - 1) + "\n"`,
        // i.e. exactly `size` bytes for every size it draws (100 B .. 300 KB).
        let head = line.len() - payload.len();
        let want = head + size.saturating_sub(head + 1).max(1) + 1;
        assert_eq!(want, size, "writer {w} line {seq}: generator/test mismatch");
        assert_eq!(
            line.len() + 1,
            want,
            "torn line {w}/{seq}: length {} vs declared {size}",
            line.len() + 1
        );
        let letter = b'a' + (w % 26) as u8;
        assert!(
            payload.iter().all(|b| *b == letter),
            "interleaved bytes in line {w}/{seq}"
        );
        assert_eq!(seq, next[w], "writer {w}: lost or reordered line");
        next[w] += 1;
        total += 1;
    }
    assert_eq!(total, writers * lines as usize, "lost lines");
    assert!(
        next.iter().all(|n| *n == lines),
        "per-writer counts {next:?}"
    );
}

/// Name → (mode, content) of every entry under `dir`, recursively.
fn tree(dir: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    fn walk(base: &Path, d: &Path, out: &mut BTreeMap<String, (u32, Vec<u8>)>) {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if d == base && name == ".journal" {
                continue; // the mount's virtual journal
            }
            let p = e.path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            if md.is_dir() {
                out.insert(rel.clone(), (md.permissions().mode(), Vec::new()));
                walk(base, &p, out);
            } else {
                out.insert(rel, (md.permissions().mode(), std::fs::read(&p).unwrap()));
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

#[test]
fn openclaw_write_patterns_match_plain_dir() {
    let sid = "345c3d87-d783-4ad6-829e-3331739a026b";
    let plain = tempfile::tempdir().unwrap();
    let run = |d: &Path| {
        common::run_ok(
            Command::new("python3")
                .arg(script("openclaw_turn.py"))
                .arg(d)
                .arg(sid),
        );
    };
    run(plain.path());
    let m = Mount::new(&[]);
    run(&m.mnt);
    let a = tree(plain.path());
    let b = tree(&m.mnt);
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert_eq!(v, &b[k], "entry {k} differs");
    }
    assert_eq!(b, tree(&m.src), "the backing tree is what the mount showed");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(plain.path()), mode(&m.mnt), "directory chmod");
    assert!(
        !m.mnt.join(format!("{sid}.jsonl.lock")).exists(),
        "lock file released"
    );
}

#[test]
fn locks_stay_exclusive_between_processes() {
    let m = Mount::new(&[]);
    let f = m.mnt.join("lockme");
    std::fs::write(&f, b"x").unwrap();
    // Holder takes the lock and waits for stdin; the prober tries non-blocking.
    let holder = r#"
import fcntl, os, sys
kind, path = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDWR)
if kind == "flock": fcntl.flock(fd, fcntl.LOCK_EX)
elif kind == "posix": fcntl.lockf(fd, fcntl.LOCK_EX)
else:
    import struct
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0))
print("held", flush=True)
sys.stdin.readline()
"#;
    let prober = r#"
import fcntl, os, sys, struct
kind, path = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDWR)
try:
    if kind == "flock": fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    elif kind == "posix": fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    else: fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0))
    print("acquired")
except OSError as e:
    print("busy", e.errno)
"#;
    for kind in ["flock", "posix", "ofd"] {
        use std::io::{BufRead, Write};
        let mut h = Command::new("python3")
            .args(["-c", holder, kind])
            .arg(&f)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(h.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "held");
        let probe = |kind: &str| {
            let o = Command::new("python3")
                .args(["-c", prober, kind])
                .arg(&f)
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        };
        let out = probe(kind);
        assert!(
            out.starts_with("busy"),
            "{kind}: second process got the lock: {out}"
        );
        h.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
        h.wait().unwrap();
        assert_eq!(
            probe(kind),
            "acquired",
            "{kind}: lock not released with its holder"
        );
    }
}
