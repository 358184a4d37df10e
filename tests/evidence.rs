//! The journal is evidence, and every view of it is an access decision: per-file
//! journals and salvage stores follow the file, not its name, so an unprivileged user
//! (`nobody`, through `-o allow_other`) who takes over a name gets none of the records
//! or removed lines of the file that had it; names and process names that are not
//! UTF-8 are kept byte-exact; a name too long for `<name>.journal` still has a journal.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::Mount;
use serde_json::Value;

/// Python prologue: become `nobody` (no groups).
const NOBODY: &str = "import os, sys\nos.setgroups([]); os.setgid(65534); os.setuid(65534)\n";

/// Run `code` as `nobody` with `args`; its stdout.
fn as_nobody(code: &str, args: &[&OsStr]) -> String {
    common::run_ok(
        Command::new("python3")
            .arg("-c")
            .arg(format!("{NOBODY}{code}"))
            .args(args),
    )
}

/// What `nobody` reads from each path: the bytes (as a Python repr), or "denied" /
/// "missing".
const READ_ALL: &str = r#"
for p in sys.argv[1:]:
    try:
        print(repr(open(p, "rb").read()))
    except PermissionError:
        print("denied")
    except FileNotFoundError:
        print("missing")
"#;

/// A sticky, world-writable directory on the mount (like `/tmp`).
fn public_dir(m: &Mount) -> PathBuf {
    let d = m.mnt.join("pub");
    std::fs::create_dir(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
    d
}

/// Root writes a 0600 transcript with one secret line at `p`.
fn root_secret(p: &Path, secret: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(p)
        .unwrap();
    std::io::Write::write_all(
        &mut f,
        format!("{{\"type\":\"message\",\"id\":\"{secret}\"}}\n").as_bytes(),
    )
    .unwrap();
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// nobody creates its own file at `p` (one line), then prints what it reads of
/// `<p>.salvage` and `<p>.journal`.
fn nobody_takes_name(p: &Path) -> String {
    let code = format!(
        "open(sys.argv[1], 'x').write('{{\"type\":\"message\",\"id\":\"mine\"}}\\n')\n{READ_ALL}"
    );
    let sal = with_suffix(p, ".salvage");
    let jou = with_suffix(p, ".journal");
    as_nobody(
        &code.replace("sys.argv[1:]", "sys.argv[2:]"),
        &[p.as_os_str(), sal.as_os_str(), jou.as_os_str()],
    )
}

/// The issue's reproduction: root writes a line to `pub/r.jsonl` (0600), truncates it
/// and removes it; `nobody` creates `pub/r.jsonl` and reads `r.jsonl.salvage` and
/// `r.jsonl.journal`. Before, it got root's deleted line byte for byte and root's
/// create, write, truncate and unlink records.
#[test]
fn a_reused_name_shows_nothing_of_the_old_file() {
    let m = Mount::new(&["-o", "allow_other"]);
    let d = public_dir(&m);
    let r = d.join("r.jsonl");
    root_secret(&r, "root-secret-1");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&r)
        .unwrap()
        .set_len(0)
        .unwrap();
    std::fs::remove_file(&r).unwrap();
    let out = nobody_takes_name(&r);
    assert!(!out.contains("root-secret-1"), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "b''", "salvage of nobody's own file: {out}");
    // The journal: only nobody's own file's records.
    assert!(lines[1].starts_with("b'"), "{out}");
    assert!(!lines[1].contains("\"uid\":0,"), "{out}");
    for op in ["truncate", "unlink"] {
        assert!(!lines[1].contains(&format!("\"op\":\"{op}\"")), "{out}");
    }
    // Root still has every record in the whole-mount journal.
    let all = common::read_jsonl(&m.mnt.join(".journal"));
    assert!(
        all.iter()
            .any(|x| x["op"] == "unlink" && x["path"] == "pub/r.jsonl")
    );
}

/// The same after a rename away: root's `s.jsonl` renamed to `moved.jsonl`, nobody's
/// new `s.jsonl` shows nothing of it, and the moved file keeps its history (its create
/// under the old name) in `moved.jsonl.journal`.
#[test]
fn a_renamed_file_takes_its_journal_along() {
    let m = Mount::new(&["-o", "allow_other"]);
    let d = public_dir(&m);
    let s = d.join("s.jsonl");
    root_secret(&s, "root-secret-2");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&s)
        .unwrap()
        .set_len(0)
        .unwrap();
    std::fs::rename(&s, d.join("moved.jsonl")).unwrap();
    let out = nobody_takes_name(&s);
    assert!(!out.contains("root-secret-2"), "{out}");
    assert!(!out.contains("\"op\":\"rename\""), "{out}");
    let moved = common::read_jsonl(&d.join("moved.jsonl.journal"));
    let ops: Vec<&str> = moved.iter().filter_map(|r| r["op"].as_str()).collect();
    assert!(
        moved
            .iter()
            .any(|r| r["op"] == "create" && r["path"] == "pub/s.jsonl"),
        "{ops:?}"
    );
    assert!(
        ops.contains(&"rename") && ops.contains(&"truncate"),
        "{ops:?}"
    );
    assert_eq!(
        std::fs::read(d.join("moved.jsonl.salvage")).unwrap(),
        b"{\"type\":\"message\",\"id\":\"root-secret-2\"}\n"
    );
}

/// A chown to another user starts that user's view at the chown: nobody reads none
/// of the records made while the file was root's.
#[test]
fn a_chown_starts_the_new_owners_view() {
    let m = Mount::new(&["-o", "allow_other"]);
    let d = public_dir(&m);
    let f = d.join("given.jsonl");
    root_secret(&f, "root-secret-3");
    std::os::unix::fs::chown(&f, Some(65534), Some(65534)).unwrap();
    let jou = with_suffix(&f, ".journal");
    let out = as_nobody(READ_ALL, &[jou.as_os_str()]);
    assert!(!out.contains("\"op\":\"write\""), "{out}");
    assert!(!out.contains("\"op\":\"create\""), "{out}");
    assert!(out.contains("\"op\":\"chown\""), "{out}");
}

/// Root creates 0600 `pub/r\xff.jsonl` and truncates its line away; `nobody` creates
/// `pub/r\u{FFFD}.jsonl`. Before, its `.salvage` returned root's line and both shared
/// one journal view. Paths are now byte-exact: `\xff` is spelled `\\xff`.
#[test]
fn non_utf8_names_do_not_collide_with_their_lossy_spelling() {
    let m = Mount::new(&["-o", "allow_other"]);
    let d = public_dir(&m);
    let raw = d.join(OsStr::from_bytes(b"r\xff.jsonl"));
    root_secret(&raw, "root-secret-4");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&raw)
        .unwrap()
        .set_len(0)
        .unwrap();
    let lossy = d.join("r\u{FFFD}.jsonl");
    let out = nobody_takes_name(&lossy);
    assert!(!out.contains("root-secret-4"), "{out}");
    assert_eq!(out.lines().next(), Some("b''"), "{out}");
    // Root's own views of the raw name are whole.
    assert_eq!(
        std::fs::read(with_suffix(&raw, ".salvage")).unwrap(),
        b"{\"type\":\"message\",\"id\":\"root-secret-4\"}\n"
    );
    let all = common::read_jsonl(&m.mnt.join(".journal"));
    let paths: std::collections::HashSet<&str> =
        all.iter().filter_map(|r| r["path"].as_str()).collect();
    assert!(paths.contains("pub/r\\xff.jsonl"), "{paths:?}");
    assert!(paths.contains("pub/r\u{FFFD}.jsonl"), "{paths:?}");
}

/// A process named with bytes that are not UTF-8 (`PR_SET_NAME`): before, its records
/// had no `pid`, `ppid`, `comm`, `exe`, `cmdline`, `starttime` or `cgroup`.
#[test]
fn a_non_utf8_process_name_keeps_the_identity() {
    let m = Mount::new(&[]);
    let f = m.mnt.join("w.jsonl");
    let code = r#"
import ctypes, sys
libc = ctypes.CDLL(None)
assert libc.prctl(15, b"w\xff\xfeer", 0, 0, 0) == 0
open(sys.argv[1], "w").write('{"type":"session","id":"s"}\n')
"#;
    common::run_ok(
        Command::new("python3")
            .arg("-c")
            .arg(code)
            .arg(&f)
            .arg("arg\u{7f}\u{fffd}"),
    );
    let recs = common::read_jsonl(&with_suffix(&f, ".journal"));
    let create = recs
        .iter()
        .find(|r| r["op"] == "create")
        .unwrap_or_else(|| panic!("{recs:?}"));
    assert_eq!(create["comm"], "w\\xff\\xfeer", "{create}");
    for k in ["pid", "ppid", "exe", "cmdline", "starttime", "cgroup"] {
        assert!(!create[k].is_null(), "{k} missing: {create}");
    }
}

/// A file name of 250 bytes has no `<name>.journal` (ENAMETOOLONG); `sessionfs
/// journal FILE` reads its records from the whole-mount journal.
#[test]
fn a_long_name_has_a_journal_through_the_cli() {
    let m = Mount::new(&[]);
    let name = format!("{}.jsonl", "n".repeat(244));
    assert_eq!(name.len(), 250);
    let f = m.mnt.join(&name);
    std::fs::write(&f, b"{\"type\":\"session\",\"id\":\"long\"}\n").unwrap();
    let e = std::fs::read(with_suffix(&f, ".journal")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENAMETOOLONG));
    let out = common::run_ok(
        Command::new(common::bin())
            .args(["journal", "--json"])
            .arg(&f),
    );
    let recs: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ops: Vec<&str> = recs.iter().filter_map(|r| r["op"].as_str()).collect();
    assert!(ops.contains(&"create") && ops.contains(&"write"), "{ops:?}");
    assert!(recs.iter().all(|r| r["path"] == name.as_str()), "{recs:?}");
}

/// The salvage store is bounded: 300,000 fsx operations on a transcript once left a
/// 9.9 GB salvage file. A rewrite-heavy transcript is held to its share (an eighth of
/// `--salvage-max-size`), so another file's removed lines survive; what the bound
/// drops is journaled as `salvage-evict`; lines cut and written back again and again
/// are stored once.
#[test]
fn salvage_is_bounded_per_file_and_stores_a_line_once() {
    let m = Mount::new(&["--salvage-max-size", "1MiB"]);
    let quiet = m.mnt.join("quiet.jsonl");
    std::fs::write(&quiet, b"{\"type\":\"message\",\"id\":\"keep-me\"}\n").unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&quiet)
        .unwrap()
        .set_len(0)
        .unwrap();
    let busy = m.mnt.join("busy.jsonl");
    // 300 rewrites, each removing the 50 lines (about 10 KiB) the previous one wrote,
    // then 200 rewrites that cut and restore the same 50 lines.
    let code = r#"
import os, sys
p = sys.argv[1]
def rewrite(tag):
    with open(p, "r+" if os.path.exists(p) else "w") as f:
        f.truncate(0)
        for i in range(50):
            f.write('{"type":"message","id":"%s-%03d","pad":"%s"}\n' % (tag, i, "x" * 160))
for r in range(300):
    rewrite("r%04d" % r)
for r in range(200):
    rewrite("same")
"#;
    common::run_ok(Command::new("python3").arg("-c").arg(code).arg(&busy));
    let salvage_bytes = |name: &str| std::fs::read(with_suffix(&m.mnt.join(name), ".salvage"));
    // The quiet file kept its removed line.
    assert_eq!(
        salvage_bytes("quiet.jsonl").unwrap(),
        b"{\"type\":\"message\",\"id\":\"keep-me\"}\n"
    );
    let busy_salvage = salvage_bytes("busy.jsonl").unwrap();
    assert!(
        busy_salvage.len() as u64 <= (1 << 20) / 8,
        "busy.jsonl's salvage holds {} bytes, over its 128 KiB share",
        busy_salvage.len()
    );
    // The `same` lines were removed 199 times and are stored once each.
    let text = String::from_utf8(busy_salvage).unwrap();
    assert_eq!(text.matches("\"id\":\"same-000\"").count(), 1, "{text}");
    let total: u64 = std::fs::read_dir(m.state.join("salvage"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(total <= 1 << 20, "salvage store holds {total} bytes");
    let all = common::read_jsonl(&m.mnt.join(".journal"));
    let ev: Vec<&Value> = all.iter().filter(|r| r["op"] == "salvage-evict").collect();
    assert!(!ev.is_empty(), "no salvage-evict record");
    assert!(
        ev.iter().all(|r| r["path"] == "busy.jsonl"
            && r["salvage_evicted"]["reason"] == "file share"
            && r["salvage_evicted"]["bytes"].as_u64() > Some(0)),
        "{ev:?}"
    );
}
