//! The change journal through a real mount: identity of threads and child processes,
//! declared lanes, transcript decoding (split, non-JSON, non-UTF-8 and 10 MiB lines),
//! removed entries with salvage, external changes, persistence across restarts.

mod common;

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::Command;

use common::{Mount, read_jsonl};
use serde_json::Value;

fn records_of(m: &Mount, name: &str) -> Vec<Value> {
    read_jsonl(&m.mnt.join(format!("{name}.journal")))
}

/// [`records_of`] once `ready` holds (up to 10 s): RELEASE reaches the daemon
/// asynchronously after the last close, so a test that checks release records waits
/// for them.
fn records_when(m: &Mount, name: &str, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    journal_when(&m.mnt.join(format!("{name}.journal")), ready)
}

/// The records of the journal file `journal` once `ready` holds (up to 10 s).
fn journal_when(journal: &Path, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let t = std::time::Instant::now();
    loop {
        let recs = read_jsonl(journal);
        if ready(&recs) || t.elapsed() > std::time::Duration::from_secs(10) {
            return recs;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether `recs` hold the release of `path`.
fn released(recs: &[Value], path: &str) -> bool {
    recs.iter()
        .any(|r| r["path"] == path && r["op"] == "release")
}

/// `sessionfs salvage <t>`: the salvaged lines of `t`, as printed (must succeed).
fn salvage_of(t: &Path) -> String {
    common::run_ok(Command::new(common::bin()).arg("salvage").arg(t))
}

/// The ids of the entries in `list` (a record's `entries` or `removed`).
fn ids_in(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect()
}

fn ops(recs: &[Value]) -> Vec<&str> {
    recs.iter().map(|r| r["op"].as_str().unwrap()).collect()
}

/// `entries` of every record, flattened.
fn entries(recs: &[Value]) -> Vec<Value> {
    recs.iter()
        .filter_map(|r| r["entries"].as_array())
        .flatten()
        .cloned()
        .collect()
}

fn removed(recs: &[Value]) -> Vec<Value> {
    recs.iter()
        .filter_map(|r| r["removed"].as_array())
        .flatten()
        .cloned()
        .collect()
}

fn python(code: &str, args: &[&str]) -> String {
    common::run_ok(Command::new("python3").arg("-c").arg(code).args(args))
}

#[test]
fn threaded_writers_carry_pid_tid_comm_and_declared_lane() {
    let m = Mount::new(&[]);
    let f = m.mnt.join("t.jsonl");
    let code = r#"
import json, os, sys, threading
path = sys.argv[1]
open("/proc/self/comm", "w").write("writer-proc")
fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
os.setxattr(path, "user.sessionfs.lane", b"cron")
assert os.getxattr(path, "user.sessionfs.lane") == b"cron"
def work():
    tid = threading.get_native_id()
    for n in range(20):
        os.write(fd, (json.dumps({"type": "message", "id": f"{tid}-{n}", "parentId": None,
                                   "message": {"role": "user"}}) + "\n").encode())
ts = [threading.Thread(target=work) for _ in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
print(os.getpid())
"#;
    let pid: u64 = python(code, &[f.to_str().unwrap()]).trim().parse().unwrap();
    // The declaration is virtual: nothing stored on the backing file.
    assert!(
        xattr_names(&m.src.join("t.jsonl")).is_empty(),
        "lane xattr leaked to the backing file"
    );
    // With the release in, the file's journal is complete (user.sessionfs.seq below).
    let recs = records_when(&m, "t.jsonl", |r| released(r, "t.jsonl"));
    let writes: Vec<&Value> = recs.iter().filter(|r| r["op"] == "write").collect();
    // One record per WRITE request; the kernel may split a write() that crosses a
    // page boundary into two requests, so count entries and bytes, not records.
    assert!(writes.len() >= 80, "{} write records", writes.len());
    let total: u64 = writes.iter().map(|w| w["len"].as_u64().unwrap()).sum();
    assert_eq!(total, std::fs::metadata(&f).unwrap().len());
    let mut tids = std::collections::HashSet::new();
    let mut n_entries = 0;
    for w in &writes {
        assert_eq!(w["pid"].as_u64(), Some(pid), "{w}");
        assert_eq!(w["comm"], "writer-proc", "{w}");
        assert_eq!(w["lane"], "cron", "{w}");
        assert_eq!(w["lane_source"], "declared", "{w}");
        assert_eq!(w["append"], true);
        for e in w["entries"].as_array().into_iter().flatten() {
            let id = e["id"].as_str().unwrap();
            let tid: u64 = id.split('-').next().unwrap().parse().unwrap();
            assert_eq!(
                w["tid"].as_u64(),
                Some(tid),
                "tid of the writing thread: {w}"
            );
            assert_eq!(e["type"], "message");
            assert_eq!(e["role"], "user");
            tids.insert(tid);
            n_entries += 1;
        }
    }
    assert_eq!(n_entries, 80, "every line decoded once");
    assert_eq!(tids.len(), 4, "four threads seen");
    // seq is global and increasing; fseq per file counts from 1.
    let seqs: Vec<u64> = recs.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    let fseqs: Vec<u64> = recs.iter().map(|r| r["fseq"].as_u64().unwrap()).collect();
    assert_eq!(fseqs, (1..=recs.len() as u64).collect::<Vec<_>>());
    // getxattr user.sessionfs.seq = the latest seq of the file.
    let latest = getxattr(&f, "user.sessionfs.seq");
    assert_eq!(latest.parse::<u64>().unwrap(), *seqs.last().unwrap());
}

fn xattr_names(p: &Path) -> Vec<String> {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid path and buffer.
    let n = unsafe { libc::listxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0);
    buf[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn getxattr(p: &Path, name: &str) -> String {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid strings and buffer.
    let r = unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(
        r >= 0,
        "getxattr {name}: {}",
        std::io::Error::last_os_error()
    );
    String::from_utf8_lossy(&buf[..r as usize]).into_owned()
}

#[test]
fn python_child_replace_is_attributed_to_its_parent() {
    let m = Mount::new(&[]);
    std::fs::write(
        m.mnt.join("s.jsonl"),
        b"{\"type\":\"session\",\"id\":\"s1\"}\n",
    )
    .unwrap();
    let code = r#"
import os, subprocess, sys
d = sys.argv[1]
child = "import os,sys; d=sys.argv[1]; t=os.path.join(d,'.s.jsonl.ab12.tmp'); fd=os.open(t,os.O_CREAT|os.O_EXCL|os.O_WRONLY,0o600); os.write(fd,b'{\"type\":\"session\",\"id\":\"s2\"}\\n'); os.fsync(fd); os.close(fd); os.replace(t, os.path.join(d,'s.jsonl')); print(os.getpid())"
out = subprocess.run([sys.executable, "-c", child, d], check=True, capture_output=True, text=True).stdout
print(os.getpid(), out.strip())
"#;
    let out = python(code, &[m.mnt.to_str().unwrap()]);
    let mut it = out.split_whitespace().map(|s| s.parse::<u64>().unwrap());
    let (parent, child) = (it.next().unwrap(), it.next().unwrap());
    let recs = records_of(&m, "s.jsonl");
    let rename = recs
        .iter()
        .find(|r| r["op"] == "rename")
        .expect("rename record in the target's journal");
    assert_eq!(rename["pid"].as_u64(), Some(child));
    assert_eq!(rename["to"], "s.jsonl");
    assert_eq!(
        rename["ancestry"][0]["pid"].as_u64(),
        Some(parent),
        "{rename}"
    );
    assert!(rename["replaced_ino"].as_u64().is_some());
    // The replaced transcript's only line is gone: removed and salvaged.
    let rem = rename["removed"].as_array().expect("removed");
    assert_eq!(rem.len(), 1);
    assert_eq!(rem[0]["id"], "s1");
}

#[test]
fn decoding_split_unparsed_and_huge_lines() {
    let plain = tempfile::tempdir().unwrap();
    let m = Mount::new(&[]);
    let run = |dir: &Path| {
        let code = r#"
import os, sys
p = os.path.join(sys.argv[1], "d.jsonl")
fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
line = b'{"type":"message","id":"split001","parentId":"p0","message":{"role":"assistant"}}\n'
os.write(fd, line[:20]); os.write(fd, line[20:])
os.write(fd, b'this is not json\n')
os.write(fd, b'{"type":"message","id":"\xff\xfe bad utf8"}\n')
big = b'{"type":"custom","customType":"blob","id":"big00001","data":"' + b'x' * (10 * 1024 * 1024) + b'"}\n'
os.write(fd, big)
os.write(fd, b'{"type":"leaf","id":"tail0001"}')  # partial, never completed
os.close(fd)
"#;
        python(code, &[dir.to_str().unwrap()]);
    };
    run(plain.path());
    run(&m.mnt);
    assert!(
        std::fs::read(plain.path().join("d.jsonl")).unwrap()
            == std::fs::read(m.mnt.join("d.jsonl")).unwrap(),
        "file differs from the plain-directory run"
    );
    let recs = records_of(&m, "d.jsonl");
    let writes: Vec<&Value> = recs.iter().filter(|r| r["op"] == "write").collect();
    // first half: no entry yet, a partial line pending
    assert!(writes[0]["entries"].is_null(), "{}", writes[0]);
    assert_eq!(writes[0]["partial"].as_u64(), Some(20));
    let e = entries(&recs);
    assert_eq!(e[0]["id"], "split001");
    assert_eq!(e[0]["line"], 1);
    assert_eq!(e[0]["role"], "assistant");
    assert_eq!(e[0]["parentId"], "p0");
    assert_eq!(
        (e[1]["type"].as_str(), e[1]["unparsed"].as_str()),
        (Some("unparsed"), Some("not_json"))
    );
    assert_eq!(e[1]["line"], 2);
    assert_eq!(
        (e[2]["type"].as_str(), e[2]["unparsed"].as_str()),
        (Some("unparsed"), Some("not_utf8"))
    );
    assert_eq!(e[3]["id"], "big00001");
    assert_eq!(e[3]["customType"], "blob");
    assert_eq!(e[3]["bytes"].as_u64(), Some(10 * 1024 * 1024 + 64));
    assert_eq!(
        e.len(),
        4,
        "the trailing partial line is not an entry: {e:?}"
    );
    let last = writes.last().unwrap();
    assert!(last["partial"].as_u64().unwrap() > 0);
}

#[test]
fn truncate_and_rename_over_record_exact_removed_entries_and_salvage() {
    let m = Mount::new(&[]);
    let t = m.mnt.join("r.jsonl");
    let lines: Vec<String> = (1..=10)
        .map(|i| format!("{{\"type\":\"message\",\"id\":\"id{i:06}\",\"parentId\":null,\"message\":{{\"role\":\"user\"}}}}\n"))
        .collect();
    std::fs::write(&t, lines.concat()).unwrap();
    // Compaction-style truncate-and-rewrite: cut the last 3 entries, append a compaction.
    let keep: usize = lines[..7].iter().map(|l| l.len()).sum();
    let code = r#"
import os, sys
p, keep = sys.argv[1], int(sys.argv[2])
fd = os.open(p, os.O_RDWR)
os.ftruncate(fd, keep)
os.close(fd)
fd = os.open(p, os.O_WRONLY | os.O_APPEND)
os.write(fd, b'{"type":"compaction","id":"comp0001","parentId":"id000007"}\n')
os.close(fd)
"#;
    python(code, &[t.to_str().unwrap(), &keep.to_string()]);
    let recs = records_when(&m, "r.jsonl", |r| {
        r.iter()
            .any(|x| x["op"] == "release" && x["removed"].is_array())
    });
    let trunc = recs
        .iter()
        .find(|r| r["op"] == "truncate")
        .expect("truncate record");
    assert_eq!(trunc["size_after"].as_u64(), Some(keep as u64));
    // The fd that truncated was still open: the 3 cut lines are held until its release.
    assert_eq!(trunc["cut"].as_u64(), Some(3), "{trunc}");
    let rel = recs
        .iter()
        .find(|r| r["op"] == "release" && r["removed"].is_array())
        .expect("release ending the rewrite");
    assert!(rel["seq"].as_u64() > trunc["seq"].as_u64());
    let ids: Vec<&str> = rel["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["id000008", "id000009", "id000010"]);
    assert!(
        rel["removed"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["type"] == "message")
    );
    assert!(entries(&recs).iter().any(|e| e["id"] == "comp0001"));

    // Rename over the transcript with a version missing 3 other entries.
    let tmp = m.mnt.join(".r.jsonl.tmp");
    let current = std::fs::read_to_string(&t).unwrap();
    let kept: String = current
        .lines()
        .filter(|l| !l.contains("id000002") && !l.contains("id000004") && !l.contains("id000006"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&tmp, &kept).unwrap();
    std::fs::rename(&tmp, &t).unwrap();
    let recs = records_of(&m, "r.jsonl");
    let ren = recs
        .iter()
        .rfind(|r| r["op"] == "rename")
        .expect("rename record");
    let ids: Vec<&str> = ren["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["id000002", "id000004", "id000006"]);
    assert_eq!(
        ren["after"]["size"].as_u64(),
        Some(kept.len() as u64),
        "rename records the fingerprint of the file now at `to`"
    );
    assert_eq!(removed(&recs).len(), 6);

    // `sessionfs salvage` prints them byte for byte, in removal order.
    let salvaged = salvage_of(&t);
    let expected = [
        &lines[7], &lines[8], &lines[9], &lines[1], &lines[3], &lines[5],
    ]
    .map(|s| s.as_str())
    .concat();
    assert_eq!(salvaged, expected);
}

#[test]
fn external_changes_are_recorded() {
    let m = Mount::new(&["--ttl-ms", "0"]);
    let f = m.mnt.join("e.jsonl");
    std::fs::write(&f, b"{\"type\":\"session\",\"id\":\"e\"}\n").unwrap();
    let _ = std::fs::metadata(&f).unwrap();
    // Change the backing file behind the mount's back (as a pre-mount fd would).
    std::fs::OpenOptions::new()
        .append(true)
        .open(m.src.join("e.jsonl"))
        .unwrap()
        .write_all_ok(b"{\"x\":1}\n");
    let _ = std::fs::metadata(&f).unwrap();
    let recs = records_when(&m, "e.jsonl", |r| r.iter().any(|x| x["op"] == "release"));
    let ext = recs
        .iter()
        .find(|r| r["op"] == "external")
        .unwrap_or_else(|| panic!("no external record: {:?}", ops(&recs)));
    assert_eq!(
        ext["size_after"].as_u64(),
        Some(std::fs::metadata(m.src.join("e.jsonl")).unwrap().len())
    );
    assert!(ext["pid"].is_null(), "nobody known made it");
    // Our own writes never show as external.
    assert_eq!(
        recs.iter().filter(|r| r["op"] == "external").count(),
        1,
        "{:?}",
        ops(&recs)
    );
}

#[test]
fn external_change_is_caught_at_the_next_open_and_write_with_cached_attrs() {
    // Default TTL: the kernel does not ask for attributes again, so only the daemon's
    // own open/write path can notice the change.
    let m = Mount::new(&[]);
    let f = m.mnt.join("c.jsonl");
    std::fs::write(&f, b"{\"type\":\"session\",\"id\":\"c\"}\n").unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(m.src.join("c.jsonl"))
        .unwrap()
        .write_all_ok(b"{\"x\":1}\n");
    // Open without a stat first; the read must see the backing bytes.
    let seen = std::fs::read(&f).unwrap();
    assert_eq!(seen, std::fs::read(m.src.join("c.jsonl")).unwrap());
    std::fs::OpenOptions::new()
        .append(true)
        .open(m.src.join("c.jsonl"))
        .unwrap()
        .write_all_ok(b"{\"x\":2}\n");
    // A second change, noticed by the write through a handle opened before it.
    let mut h = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(m.src.join("c.jsonl"))
        .unwrap()
        .write_all_ok(b"{\"x\":3}\n");
    use std::io::Write;
    h.write_all(b"{\"y\":1}\n").unwrap();
    drop(h);
    let recs = records_of(&m, "c.jsonl");
    let ext: Vec<&Value> = recs.iter().filter(|r| r["op"] == "external").collect();
    assert_eq!(
        ext.len(),
        3,
        "read open, append open, append write: {:?}",
        ops(&recs)
    );
    assert!(ext.iter().all(|r| r["pid"].is_null()));
    // Each external record comes before the mount's own op that noticed it.
    let first_ext = recs.iter().position(|r| r["op"] == "external").unwrap();
    let first_open = recs
        .iter()
        .position(|r| r["op"] == "open" && r["access"] == "read")
        .unwrap();
    assert!(first_ext < first_open, "{:?}", ops(&recs));
    assert_eq!(
        std::fs::read(m.src.join("c.jsonl")).unwrap(),
        b"{\"type\":\"session\",\"id\":\"c\"}\n{\"x\":1}\n{\"x\":2}\n{\"x\":3}\n{\"y\":1}\n"
    );
    // Our own O_TRUNC rewrite (as OpenClaw rewrites trajectory-path.json), then a stat,
    // an append and a read through the mount: none of it is external.
    std::fs::write(&f, b"{\"z\":0}\n").unwrap();
    let _ = std::fs::metadata(&f).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&f)
        .unwrap()
        .write_all_ok(b"{\"z\":1}\n");
    let _ = std::fs::read(&f).unwrap();
    let recs_after = records_of(&m, "c.jsonl");
    assert_eq!(
        recs_after.iter().filter(|r| r["op"] == "external").count(),
        3,
        "{:?}",
        ops(&recs_after)
    );
}

trait WriteAllOk {
    fn write_all_ok(self, b: &[u8]);
}
impl WriteAllOk for std::fs::File {
    fn write_all_ok(mut self, b: &[u8]) {
        use std::io::Write;
        self.write_all(b).unwrap();
    }
}

#[test]
fn journal_files_are_virtual_listed_and_private() {
    let m = Mount::new(&[]);
    std::fs::write(
        m.mnt.join("a.jsonl"),
        b"{\"type\":\"session\",\"id\":\"a\"}\n",
    )
    .unwrap();
    let names: Vec<String> = std::fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&".journal".to_string()), "{names:?}");
    assert!(
        !names.iter().any(|n| n.ends_with(".jsonl.journal")),
        "per-file journals are not listed: {names:?}"
    );
    assert!(
        !m.src.join(".journal").exists(),
        "nothing written into the backing tree"
    );
    let md = std::fs::metadata(m.mnt.join("a.jsonl.journal")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(md.permissions().mode() & 0o777, 0o400);
    // Wait for a.jsonl's asynchronous release, so the cursor below is past all of a's records.
    let all = journal_when(&m.mnt.join(".journal"), |r| released(r, "a.jsonl"));
    assert!(
        all.iter()
            .any(|r| r["path"] == "a.jsonl" && r["op"] == "create")
    );
    // A byte offset is a cursor: reading from the old size gives exactly the new records.
    let before = std::fs::metadata(m.mnt.join(".journal")).unwrap().len();
    std::fs::write(m.mnt.join("b.jsonl"), b"{}\n").unwrap();
    let data = std::fs::read(m.mnt.join(".journal")).unwrap();
    let tail: Vec<Value> = data[before as usize..]
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert!(
        !tail.is_empty() && tail.iter().all(|r| r["path"] == "b.jsonl"),
        "{tail:?}"
    );
    // Only the watched file's owner (and root) may read its journal.
    let code = "import os,sys\nos.setgid(65534); os.setuid(65534)\ntry:\n    open(sys.argv[1]).read(); print('read')\nexcept PermissionError: print('denied')";
    let out = python(code, &[m.mnt.join("a.jsonl.journal").to_str().unwrap()]);
    assert_eq!(out.trim(), "denied");
    // A real backing file of the same name wins, with a warning in the daemon log.
    std::fs::write(m.src.join("a.jsonl.journal"), b"real\n").unwrap();
    assert_eq!(
        std::fs::read(m.mnt.join("a.jsonl.journal")).unwrap(),
        b"real\n"
    );
    let log = std::fs::read_to_string(m.state.join("sessionfs.log")).unwrap_or_default();
    assert!(
        log.contains("shadows a sessionfs virtual file") && log.contains("a.jsonl.journal"),
        "{log}"
    );
}

#[test]
fn seq_continues_after_restart_and_cli_reads_since() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, mnt, state) = (
        tmp.path().join("src"),
        tmp.path().join("mnt"),
        tmp.path().join("state"),
    );
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    let last_seq = |mnt: &Path| {
        let all = read_jsonl(&mnt.join(".journal"));
        all.last().map(|r| r["seq"].as_u64().unwrap()).unwrap()
    };
    common::mount_at(&src, &mnt, &state, &[]);
    let guard = Remount(mnt.clone());
    for i in 0..50 {
        std::fs::write(mnt.join(format!("f{i}.jsonl")), b"{}\n").unwrap();
    }
    let first = last_seq(&mnt);
    common::unmount(&mnt);
    common::mount_at(&src, &mnt, &state, &[]);
    std::fs::write(
        mnt.join("after.jsonl"),
        b"{\"type\":\"session\",\"id\":\"z\"}\n",
    )
    .unwrap();
    // RELEASE arrives after close returns: wait for it, so that this snapshot and the
    // CLI's read below see the same records.
    let all = journal_when(&mnt.join(".journal"), |r| released(r, "after.jsonl"));
    let after: Vec<&Value> = all.iter().filter(|r| r["path"] == "after.jsonl").collect();
    assert!(
        after[0]["seq"].as_u64().unwrap() > first,
        "seq restarted: {} <= {first}",
        after[0]["seq"]
    );
    assert!(
        all.iter().any(|r| r["path"] == "f0.jsonl"),
        "records from before the restart are kept"
    );
    // CLI: --since gives exactly the records after the cursor.
    let out = Command::new(common::bin())
        .args(["journal", "--json", "--since"])
        .arg(first.to_string())
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!recs.is_empty());
    assert!(recs.iter().all(|r| r["seq"].as_u64().unwrap() > first));
    assert_eq!(
        recs.len(),
        all.iter()
            .filter(|r| r["seq"].as_u64().unwrap() > first)
            .count()
    );
    drop(guard);
}

struct Remount(std::path::PathBuf);
impl Drop for Remount {
    fn drop(&mut self) {
        common::unmount(&self.0);
    }
}

#[test]
fn in_place_rewrite_reports_only_the_lines_not_written_back() {
    let m = Mount::new(&[]);
    let t = m.mnt.join("w.jsonl");
    let lines: Vec<String> = (1..=10)
        .map(|i| format!("{{\"type\":\"message\",\"id\":\"w{i:07}\",\"parentId\":null,\"message\":{{\"role\":\"assistant\"}}}}\n"))
        .collect();
    std::fs::write(&t, lines.concat()).unwrap();
    // writeFileSync-style migration: O_TRUNC, then the new text in 3 writes, with
    // lines 2, 5 and 9 dropped, one line rewritten (a new field), and a new header.
    let mut kept: Vec<String> =
        vec!["{\"type\":\"session\",\"version\":3,\"id\":\"hdr00001\"}\n".into()];
    for (i, l) in lines.iter().enumerate() {
        match i + 1 {
            2 | 5 | 9 => {}
            7 => kept.push(l.replace("\"parentId\":null", "\"parentId\":\"w0000006\"")),
            _ => kept.push(l.clone()),
        }
    }
    let text = kept.concat();
    let code = r#"
import os, sys
p, text = sys.argv[1], sys.argv[2].encode()
fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
third = len(text) // 3
for chunk in (text[:third], text[third:2 * third], text[2 * third:]):
    os.write(fd, chunk)
os.close(fd)
"#;
    python(code, &[t.to_str().unwrap(), &text]);
    assert_eq!(std::fs::read_to_string(&t).unwrap(), text);
    // The rewriting handle's release (the one reporting `removed`); the first write's
    // release also has access "write", so wait for this one specifically.
    let recs = records_when(&m, "w.jsonl", |r| {
        r.iter()
            .any(|x| x["op"] == "release" && x["removed"].is_array())
    });
    // The O_TRUNC reaches the daemon as the open's truncate (a SETATTR on the new
    // handle, after the kernel's own checks): all 10 lines cut, held for the rewrite.
    let open = recs
        .iter()
        .rfind(|r| r["op"] == "open" && r["access"] == "write")
        .expect("the rewriting open");
    let trunc = recs
        .iter()
        .find(|r| r["op"] == "truncate" && r["seq"].as_u64() > open["seq"].as_u64())
        .expect("the open's truncate");
    assert_eq!(trunc["size_after"].as_u64(), Some(0), "{trunc}");
    assert_eq!(trunc["cut"].as_u64(), Some(10), "{trunc}");
    assert!(
        recs.iter()
            .filter(|r| r["op"] == "write")
            .all(|r| r["removed"].is_null()),
        "writes of a rewrite remove nothing by themselves"
    );
    let rel = recs
        .iter()
        .rfind(|r| r["op"] == "release" && r["access"] == "write")
        .expect("release of the rewriting handle");
    let ids: Vec<&str> = rel["removed"]
        .as_array()
        .expect("removed on the release ending the rewrite")
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    // Line 7 was rewritten with other bytes: its old version is removed too.
    assert_eq!(ids, ["w0000002", "w0000005", "w0000007", "w0000009"]);
    assert_eq!(rel["restored"].as_u64(), Some(6));
    assert_eq!(removed(&recs).len(), 4, "reported once");
    // Every new line is an entry of some write, split lines included.
    let after_open: Vec<Value> = recs
        .iter()
        .filter(|r| r["seq"].as_u64() > open["seq"].as_u64())
        .cloned()
        .collect();
    assert_eq!(entries(&after_open).len(), kept.len());
    let expected = [&lines[1], &lines[4], &lines[6], &lines[8]]
        .map(|s| s.as_str())
        .concat();
    assert_eq!(salvage_of(&t), expected);
}

/// A lane declared on `sessions.json` covers its replacement through a temp file and
/// a rename (OpenClaw's pattern): the rename and the later changes of the new file
/// carry it; another process's changes do not.
#[test]
fn declared_lane_follows_a_rename_over() {
    let m = Mount::new(&[]);
    let f = m.mnt.join("sessions.json");
    std::fs::write(&f, b"{}\n").unwrap();
    let code = r#"
import os, sys
path = sys.argv[1]; tmp = path + ".tmp"
os.setxattr(path, "user.sessionfs.lane", b"cron")
with open(tmp, "w") as t: t.write('{"a":1}\n')
os.replace(tmp, path)
assert os.getxattr(path, "user.sessionfs.lane") == b"cron"
os.chmod(path, 0o600)
with open(path, "a") as t: t.write('{"b":2}\n')
"#;
    python(code, &[f.to_str().unwrap()]);
    // Another process: no declaration of its own.
    std::fs::OpenOptions::new().append(true).open(&f).unwrap();
    let recs = records_of(&m, "sessions.json");
    let lane_of = |op: &str| -> Vec<String> {
        recs.iter()
            .filter(|r| r["op"] == op && r["comm"] == "python3")
            .map(|r| r["lane"].as_str().unwrap_or("-").to_string())
            .collect()
    };
    assert_eq!(lane_of("rename"), ["cron"], "{recs:?}");
    assert_eq!(lane_of("chmod"), ["cron"], "{recs:?}");
    assert_eq!(lane_of("write"), ["cron"], "{recs:?}");
    let others: Vec<&Value> = recs
        .iter()
        .filter(|r| r["comm"] != "python3" && r["op"] == "open")
        .collect();
    assert!(!others.is_empty(), "the second opener's record: {recs:?}");
    assert!(others.iter().all(|r| r.get("lane").is_none()), "{others:?}");
}

/// `sh -c 'exec python3 … >> file'`: the shell opens (creates) the file, then execs a
/// binary that is not on the mount, which writes and closes. The write and the
/// release name the new image; the create names the shell and only the flags it
/// passed.
#[test]
fn exec_off_the_mount_after_a_redirect_names_the_new_image() {
    let m = Mount::new(&[]);
    let f = m.mnt.join("e.jsonl");
    let script = r#"exec python3 -c 'import os; os.write(1, b"{\"type\":\"x\"}\n")' >> "$1""#;
    let st = Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(&f)
        .status()
        .unwrap();
    assert!(st.success());
    let recs = records_when(&m, "e.jsonl", |r| released(r, "e.jsonl"));
    let one = |op: &str| -> &Value {
        let v: Vec<&Value> = recs.iter().filter(|r| r["op"] == op).collect();
        assert_eq!(v.len(), 1, "{op}: {recs:?}");
        v[0]
    };
    let create = one("create");
    assert_eq!(create["comm"], "sh", "{create}");
    let flags: Vec<&str> = create["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(flags.contains(&"O_APPEND"), "{create}");
    assert!(
        !flags.contains(&"O_NOFOLLOW"),
        "flags the caller never passed: {create}"
    );
    let write = one("write");
    assert_eq!(write["comm"], "python3", "{write}");
    assert_eq!(write["pid"], create["pid"], "same process, new image");
    assert_eq!(one("release")["comm"], "python3", "{recs:?}");
}

/// `sessionfs journal` on a file: `--pid`, `--lane` and `--op` select exactly the
/// matching records (compared with the virtual file), and the default table shows one
/// row per record with its op, process, lane and entries.
#[test]
fn journal_cli_filters_and_table() {
    let m = Mount::new(&[]);
    let f = m.mnt.join("t.jsonl");
    // A declared-lane writer, then a second process without a lane.
    let code = r#"
import os, sys
path = sys.argv[1]
fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
os.setxattr(path, "user.sessionfs.lane", b"cron")
os.write(fd, b'{"type":"message","id":"aaaa1111","message":{"role":"user"}}\n')
os.close(fd)
print(os.getpid())
"#;
    let pid: u64 = python(code, &[f.to_str().unwrap()]).trim().parse().unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&f)
        .unwrap()
        .write_all(
            b"{\"type\":\"message\",\"id\":\"bbbb2222\",\"message\":{\"role\":\"assistant\"}}\n",
        )
        .unwrap();
    // Both releases in, so that this snapshot and the CLI's reads see the same records.
    let all = records_when(&m, "t.jsonl", |r| {
        r.iter().filter(|x| x["op"] == "release").count() >= 2
    });
    let cli = |args: &[&str]| -> String {
        let out = Command::new(common::bin())
            .arg("journal")
            .args(args)
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let seqs = |text: &str| -> Vec<u64> {
        text.lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    let want = |pred: &dyn Fn(&Value) -> bool| -> Vec<u64> {
        all.iter()
            .filter(|r| pred(r))
            .map(|r| r["seq"].as_u64().unwrap())
            .collect()
    };
    let by_pid = seqs(&cli(&["--json", "--pid", &pid.to_string()]));
    assert!(!by_pid.is_empty());
    assert_eq!(by_pid, want(&|r| r["pid"].as_u64() == Some(pid)));
    let by_lane = seqs(&cli(&["--json", "--lane", "cron"]));
    assert!(!by_lane.is_empty());
    assert_eq!(by_lane, want(&|r| r["lane"] == "cron"));
    let writes = seqs(&cli(&["--json", "--op", "write", "--op", "release"]));
    assert_eq!(
        writes,
        want(&|r| r["op"] == "write" || r["op"] == "release")
    );
    let table = cli(&["--op", "write"]);
    let rows: Vec<&str> = table.lines().filter(|l| l.contains(" write ")).collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(
        rows[0].contains("cron") && rows[0].contains("+user:aaaa1111"),
        "{table}"
    );
    assert!(rows[1].contains("+assistant:bbbb2222"), "{table}");
}

/// `open(O_RDONLY|O_TRUNC)` of a transcript (Linux truncates): the truncate arrives
/// with a read-only handle, which never ends a rewrite, so its removed entries are on
/// the truncate record itself, and salvaged.
#[test]
fn rdonly_trunc_open_reports_removed_entries_at_once() {
    let m = Mount::new(&[]);
    let t = m.mnt.join("o.jsonl");
    let lines: Vec<String> = (1..=3)
        .map(|i| format!("{{\"type\":\"message\",\"id\":\"o{i:07}\",\"parentId\":null}}\n"))
        .collect();
    std::fs::write(&t, lines.concat()).unwrap();
    // The writer's release first: while a writable handle is open, the cut is held.
    journal_when(&m.mnt.join("o.jsonl.journal"), |r| released(r, "o.jsonl"));
    let fd = nix::fcntl::open(
        &t,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_TRUNC,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();
    assert_eq!(std::fs::metadata(&t).unwrap().len(), 0);
    // Checked while the read-only handle is still open: nothing waits for its release.
    let recs = records_of(&m, "o.jsonl");
    drop(fd);
    let trunc = recs
        .iter()
        .find(|r| r["op"] == "truncate")
        .unwrap_or_else(|| panic!("truncate record: {recs:?}"));
    assert!(trunc["cut"].is_null(), "{trunc}");
    assert_eq!(
        ids_in(&trunc["removed"]),
        ["o0000001", "o0000002", "o0000003"]
    );
    assert_eq!(salvage_of(&t), lines.concat());
}

/// An outside rewrite of a transcript written through the mount (a writer on the bare
/// backing directory): the `external` record names the entries it removed, from the
/// line index, and decodes the ones it added.
#[test]
fn external_rewrite_of_an_indexed_transcript_names_its_entries() {
    let m = Mount::new(&[]);
    let t = m.mnt.join("x.jsonl");
    let line = |id: &str| format!("{{\"type\":\"message\",\"id\":\"{id}\",\"parentId\":null}}\n");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&t)
        .unwrap();
    for id in ["x0000001", "x0000002", "x0000003"] {
        f.write_all(line(id).as_bytes()).unwrap();
    }
    drop(f);
    // Outside the mount: drop the middle entry and append a new one.
    std::fs::write(
        m.src.join("x.jsonl"),
        [line("x0000001"), line("x0000003"), line("x0000004")].concat(),
    )
    .unwrap();
    let _ = std::fs::metadata(&t); // a getattr past the cached attrs notices it
    let _ = std::fs::read(&t).unwrap(); // and so does an open
    let recs = records_of(&m, "x.jsonl");
    let ext: Vec<&Value> = recs.iter().filter(|r| r["op"] == "external").collect();
    assert_eq!(ext.len(), 1, "{:?}", ops(&recs));
    assert_eq!(ids_in(&ext[0]["removed"]), ["x0000002"]);
    assert_eq!(ids_in(&ext[0]["entries"]), ["x0000004"]);
    assert_eq!(ext[0]["removed"][0]["line"], 2);
    assert_eq!(ext[0]["removed"][0]["type"], "message");
    assert!(ext[0]["pid"].is_null());
}

/// Punching a hole into a transcript destroys the lines it touches: they are salvaged
/// first and reported removed on the `fallocate` record.
#[test]
fn punch_hole_in_a_transcript_salvages_the_lines_it_touches() {
    let m = Mount::new(&[]);
    let t = m.mnt.join("p.jsonl");
    let lines: Vec<String> = (1..=3)
        .map(|i| format!("{{\"type\":\"message\",\"id\":\"p{i:07}\",\"parentId\":null}}\n"))
        .collect();
    std::fs::write(&t, lines.concat()).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&t).unwrap();
    // Inside line 2 only.
    let at = lines[0].len() as i64 + 5;
    nix::fcntl::fallocate(
        &f,
        nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
            | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
        at,
        10,
    )
    .unwrap();
    drop(f);
    let recs = records_of(&m, "p.jsonl");
    let fa = recs
        .iter()
        .find(|r| r["op"] == "fallocate")
        .unwrap_or_else(|| panic!("{recs:?}"));
    assert_eq!(ids_in(&fa["removed"]), ["p0000002"]);
    assert_eq!(salvage_of(&t), lines[1]);
}

/// The whole-mount `.journal` (and `.locks`) belong to the daemon's user, not to the
/// mount root's owner: after `chown nobody` of the mount root, `nobody` read the
/// records (entry ids included) of root's 0600 files.
#[test]
fn whole_mount_views_are_not_the_mount_roots_owners() {
    let m = Mount::new(&["-o", "allow_other"]);
    std::fs::write(
        m.mnt.join("secret.jsonl"),
        b"{\"type\":\"message\",\"id\":\"s3cr3t01\"}\n",
    )
    .unwrap();
    std::fs::set_permissions(
        m.mnt.join("secret.jsonl"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::set_permissions(
        m.mnt.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::chown(&m.mnt, Some(65534), Some(65534)).unwrap();
    let code = "import os,sys\nos.setgid(65534); os.setuid(65534)\nfor p in sys.argv[1:]:\n    try:\n        open(p).read(); print('read')\n    except PermissionError: print('denied')";
    let out = python(
        code,
        &[
            m.mnt.join(".journal").to_str().unwrap(),
            m.mnt.join(".locks").to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["denied", "denied"]
    );
    let md = std::fs::metadata(m.mnt.join(".journal")).unwrap();
    assert_eq!((md.uid(), md.permissions().mode() & 0o777), (0, 0o400));
}

/// `--journal-group` (here as `-o journal_group=users`) lets that group read the
/// whole-mount views, and nobody else.
#[test]
fn journal_group_may_read_the_whole_mount_views() {
    let gid = nix::unistd::Group::from_name("users")
        .unwrap()
        .expect("group users")
        .gid
        .as_raw();
    let m = Mount::new(&["-o", "allow_other,journal_group=users"]);
    std::fs::write(m.mnt.join("a.jsonl"), b"{}\n").unwrap();
    std::fs::set_permissions(
        m.mnt.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(&m.mnt, std::fs::Permissions::from_mode(0o755)).unwrap();
    let md = std::fs::metadata(m.mnt.join(".journal")).unwrap();
    assert_eq!((md.gid(), md.permissions().mode() & 0o777), (gid, 0o440));
    let code = format!(
        "import os,sys\nos.setgroups([{gid}] if sys.argv[1] == 'in' else []); os.setgid(65534); os.setuid(65534)\ntry:\n    open(sys.argv[2]).read(); print('read')\nexcept PermissionError: print('denied')"
    );
    let j = m.mnt.join(".journal");
    assert_eq!(python(&code, &["in", j.to_str().unwrap()]).trim(), "read");
    assert_eq!(
        python(&code, &["out", j.to_str().unwrap()]).trim(),
        "denied"
    );
}
