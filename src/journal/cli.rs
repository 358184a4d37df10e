//! `sessionfs journal` and `sessionfs salvage`: read a mount's journal through its
//! virtual files (`<file>.journal`, `<mountpoint>/.journal`, `<file>.salvage`).
//!
//! `--since SEQ` seeks by binary search on byte offsets of the virtual file (records
//! in a view are in seq order): about 20 reads of 4 KiB, whatever the journal's size.
//!
//! A directory below the mount root has no journal file of its own: its records are
//! those of `<mount>/.journal` whose `path` or `to` lies under it. The mount root is
//! found by walking up while the parent is on the same filesystem (`st_dev`).

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// Arguments of `sessionfs journal`.
#[derive(clap::Args, Debug)]
pub struct JournalArgs {
    /// A file on a sessionfs mount (its journal), the mountpoint (the whole mount's
    /// journal), or a directory below the mountpoint (the records of the whole mount's
    /// journal whose path, or rename/link target, is in that directory or below; the
    /// mount root is found by walking up to the filesystem's top directory).
    pub target: PathBuf,
    /// Only records with seq > SEQ.
    #[arg(long, value_name = "SEQ")]
    pub since: Option<u64>,
    /// Keep printing new records as they arrive.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Print raw JSON records (one per line) instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Only records of this pid.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Only records of this lane.
    #[arg(long)]
    pub lane: Option<String>,
    /// Only records of this op (repeatable).
    #[arg(long)]
    pub op: Vec<String>,
}

/// Arguments of `sessionfs salvage`.
#[derive(clap::Args, Debug)]
pub struct SalvageArgs {
    /// A transcript file on a sessionfs mount.
    pub file: PathBuf,
}

/// The virtual journal file for `target`: `<dir>/.journal` for a directory (which has
/// one only if it is a mount root; see [`resolve`]), `<file>.journal` otherwise.
pub fn journal_file(target: &Path) -> PathBuf {
    if target.is_dir() {
        target.join(".journal")
    } else {
        let mut s = target.as_os_str().to_os_string();
        s.push(".journal");
        PathBuf::from(s)
    }
}

/// Which records of the journal file read to print.
#[derive(Debug, Clone, PartialEq)]
pub enum Only {
    /// Every record of the file (a per-file view, or the whole mount).
    All,
    /// Records whose `path` or `to` is this mount-relative directory or below it.
    Dir(String),
    /// Records of this file (`file.ino`, `file.birth_ns`): a file whose name is too
    /// long for `<name>.journal`, read from the whole mount's `.journal`.
    File(u64, i64),
}

/// Longest file name (bytes) that still has a `<name>.journal` (NAME_MAX 255).
const MAX_VIEW_NAME: usize = 255 - ".journal".len();

/// The journal file to read for `target` and which of its records to keep. Err is one
/// line for the user (a directory on no sessionfs mount).
///
/// A file whose name is longer than 247 bytes has no `<name>.journal` (ENAMETOOLONG):
/// its records are read from the mount root's `.journal` (root or `--journal-group`
/// only), matched by the file's inode and birth time.
pub fn resolve(target: &Path) -> Result<(PathBuf, Only), String> {
    let io_err = |p: &Path, e: io::Error| format!("{}: {e}", p.display());
    if !target.is_dir() {
        let long = target
            .file_name()
            .is_some_and(|n| n.as_encoded_bytes().len() > MAX_VIEW_NAME);
        if !long {
            return Ok((journal_file(target), Only::All));
        }
        let parent = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let (root, _) = mount_root(parent)?;
        let c = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
            .map_err(|_| format!("{}: a NUL byte in the name", target.display()))?;
        let cwd = std::fs::File::open(".").map_err(|e| io_err(Path::new("."), e))?;
        let (ino, birth, _) = crate::sys::identity_at(std::os::fd::AsFd::as_fd(&cwd), &c)
            .map_err(|e| io_err(target, e.into()))?;
        return Ok((root.join(".journal"), Only::File(ino, birth)));
    }
    let (root, dir) = mount_root(target)?;
    let vf = root.join(".journal");
    if root == dir {
        return Ok((vf, Only::All));
    }
    let rel = dir
        .strip_prefix(&root)
        .map_err(|_| format!("{}: outside {}", dir.display(), root.display()))?;
    Ok((vf, Only::Dir(crate::names::encode_os(rel.as_os_str()))))
}

/// The mount root above directory `target` (the topmost ancestor on the same
/// filesystem, which must have a `.journal`), and `target` canonicalized.
fn mount_root(target: &Path) -> Result<(PathBuf, PathBuf), String> {
    let io_err = |p: &Path, e: io::Error| format!("{}: {e}", p.display());
    let dir = target.canonicalize().map_err(|e| io_err(target, e))?;
    let dev = std::fs::metadata(&dir).map_err(|e| io_err(&dir, e))?.dev();
    // The mount root: the topmost ancestor on the same filesystem.
    let mut root = dir.clone();
    while let Some(parent) = root.parent() {
        match std::fs::metadata(parent) {
            Ok(m) if m.dev() == dev => root = parent.to_path_buf(),
            _ => break,
        }
    }
    let vf = root.join(".journal");
    if root != dir && !vf.is_file() {
        return Err(format!(
            "{} is not on a sessionfs mount ({} has no .journal): pass the mountpoint or a file on the mount",
            target.display(),
            root.display()
        ));
    }
    Ok((root, dir))
}

/// Is the record's `path` or `to` the mount-relative directory `dir` or below it?
fn under(rec: &Value, dir: &str) -> bool {
    let inside = |p: &str| {
        p.strip_prefix(dir)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    rec["path"].as_str().is_some_and(inside) || rec["to"].as_str().is_some_and(inside)
}

fn not_on_mount(target: &Path, vf: &Path, e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::NotFound {
        format!(
            "{} has no journal ({} missing): is it on a sessionfs mount?",
            target.display(),
            vf.display()
        )
    } else {
        format!("{}: {e}", vf.display())
    }
}

/// Bytes read per probe: enough for the byte before `off`, the rest of a typical
/// record (a few hundred bytes, a few KiB with transcript entries) and the next head.
const PROBE: usize = 16 << 10;

/// `seq` of the first complete record starting at or after `off`, and its offset.
/// Usually one read (one FUSE round trip); records longer than [`PROBE`] take more.
fn record_at(f: &File, off: u64, len: u64) -> io::Result<Option<(u64, u64)>> {
    let mut buf = vec![0u8; PROBE];
    // Read from the byte before `off`, so one read shows whether `off` starts a record.
    let mut base = off.saturating_sub(1);
    let mut n = f.read_at(&mut buf, base)?;
    let mut start = if off == 0 {
        Some(0)
    } else {
        buf[..n].iter().position(|b| *b == b'\n').map(|i| i + 1)
    };
    // A long record: keep scanning for its end.
    while start.is_none() {
        base += n as u64;
        if base >= len || n == 0 {
            return Ok(None);
        }
        n = f.read_at(&mut buf, base)?;
        start = buf[..n].iter().position(|b| *b == b'\n').map(|i| i + 1);
    }
    let s = start.expect("found");
    let pos = base + s as u64;
    if pos >= len {
        return Ok(None);
    }
    if n - s < 32 {
        n = f.read_at(&mut buf, pos)?;
        return Ok(head_seq(&buf[..n]).map(|q| (q, pos)));
    }
    Ok(head_seq(&buf[s..n]).map(|q| (q, pos)))
}

/// `seq` from the head of a record: `"seq":` is the first key of every record.
fn head_seq(b: &[u8]) -> Option<u64> {
    let head = std::str::from_utf8(&b[..b.len().min(64)]).ok()?;
    head.strip_prefix("{\"seq\":")
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|d| d.parse().ok())
}

/// Byte offset of the first record with seq > `since`: interpolation steps first
/// (records are of similar size, so a handful of probes lands close), then binary
/// search. Each probe is about one read of the virtual file.
pub fn seek_since(f: &File, len: u64, since: u64) -> io::Result<u64> {
    let (mut lo, mut hi) = (0u64, len);
    // Invariant: the answer is in [lo, hi]; records starting before lo have seq <= since.
    let (mut lo_seq, mut hi_seq) = match (
        record_at(f, 0, len)?,
        record_at(f, len.saturating_sub(PROBE as u64 / 2), len)?,
    ) {
        (Some((a, _)), Some((b, _))) => (a, b),
        _ => (0, 0),
    };
    if lo_seq > since {
        return Ok(0);
    }
    for _ in 0..4 {
        if hi - lo < 4 * PROBE as u64 || hi_seq <= lo_seq || since >= hi_seq {
            break;
        }
        let frac = (since - lo_seq) as f64 / (hi_seq - lo_seq) as f64;
        let mid = lo + ((hi - lo) as f64 * frac) as u64;
        match record_at(f, mid, len)? {
            Some((seq, pos)) if seq <= since && pos < hi => {
                lo = pos + 1;
                lo_seq = seq;
            }
            Some((seq, pos)) if pos < hi && pos > lo => {
                hi = pos;
                hi_seq = seq;
            }
            _ => break,
        }
    }
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match record_at(f, mid, len)? {
            Some((seq, pos)) if seq <= since => lo = pos + 1,
            Some((_, pos)) => {
                if pos >= hi {
                    // The record found lies past hi: the answer is the record at or after lo.
                    break;
                }
                hi = pos;
            }
            None => hi = mid,
        }
    }
    // Settle on a record start at or after lo.
    let mut pos = lo;
    while let Some((seq, p)) = record_at(f, pos, len)? {
        if seq > since {
            return Ok(p);
        }
        pos = p + 1;
    }
    Ok(len)
}

fn keep(rec: &Value, args: &JournalArgs) -> bool {
    args.since
        .is_none_or(|s| rec["seq"].as_u64().is_some_and(|q| q > s))
        && args
            .pid
            .is_none_or(|p| rec["pid"].as_u64() == Some(p as u64))
        && args
            .lane
            .as_ref()
            .is_none_or(|l| rec["lane"].as_str() == Some(l))
        && (args.op.is_empty() || args.op.iter().any(|o| rec["op"].as_str() == Some(o)))
}

fn entries_summary(rec: &Value) -> String {
    let list = |k: &str| rec[k].as_array().map_or(&[][..], Vec::as_slice);
    summarize_entries(list("entries"), list("removed"))
}

/// The table form of a change's transcript entries: `+role:id` for each one added,
/// `-role:id` for each one removed (`customType` or `type` when there is no role,
/// `lineN:<reason>` for an unparsed line), at most 6, then `(+N more)`. Shared by the
/// `journal` and `explain` tables.
pub(crate) fn summarize_entries(added: &[Value], removed: &[Value]) -> String {
    let describe = |e: &Value| -> String {
        if let Some(u) = e["unparsed"].as_str() {
            return format!("line{}:{u}", e["line"]);
        }
        let kind = e["role"]
            .as_str()
            .or(e["customType"].as_str())
            .or(e["type"].as_str())
            .unwrap_or("?");
        match e["id"].as_str() {
            Some(id) => format!("{kind}:{id}"),
            None => kind.to_string(),
        }
    };
    let mut parts: Vec<String> = added.iter().map(|e| format!("+{}", describe(e))).collect();
    parts.extend(removed.iter().map(|e| format!("-{}", describe(e))));
    if parts.len() > 6 {
        let n = parts.len();
        parts.truncate(5);
        parts.push(format!("(+{} more)", n - 5));
    }
    parts.join(" ")
}

/// `s` with every control character (newline, carriage return, escape, …) shown as
/// `\xNN`: a file named with a newline cannot forge a table row, and an escape
/// sequence in a process name cannot reach the terminal.
pub fn escape_controls(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                format!("\\x{:02x}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// One table row: time, seq, op, process, lane, path/entries, result; control
/// characters escaped (see [`escape_controls`]).
pub fn table_row(rec: &Value) -> String {
    escape_controls(&raw_row(rec))
}

fn raw_row(rec: &Value) -> String {
    let ts = rec["ts"].as_str().unwrap_or("");
    let time = ts.get(11..23).unwrap_or(ts);
    let who = match (rec["comm"].as_str(), rec["pid"].as_u64()) {
        (Some(c), Some(p)) => format!("{c}[{p}]"),
        _ => "-".into(),
    };
    let lane = rec["lane"].as_str().unwrap_or("-");
    let mut what = rec["path"].as_str().unwrap_or("").to_string();
    if let Some(to) = rec["to"].as_str() {
        what = format!("{what} -> {to}");
    }
    if let Some(lost) = rec["gap"]["lost"].as_u64() {
        // A `gap` record (path ""): what the journal lost while its disk was failing.
        what = format!(
            "{lost} records lost after seq {}",
            rec["gap"]["after_seq"].as_u64().unwrap_or(0)
        );
    }
    if let (Some(len), Some(true)) = (rec["len"].as_u64(), rec["append"].as_bool()) {
        what = format!("{what} +{len}B");
    } else if let Some(a) = rec["access"].as_str() {
        what = format!("{what} ({a})");
    }
    let entries = entries_summary(rec);
    let result = rec["result"].as_str().unwrap_or("?");
    let result = if result == "ok" {
        String::new()
    } else {
        format!(" => {result}")
    };
    format!(
        "{time:<12} {:>7} {:<9} {who:<24} {lane:<10} {what}{}{entries}{result}",
        rec["seq"].as_u64().unwrap_or(0),
        rec["op"].as_str().unwrap_or("?"),
        if entries.is_empty() { "" } else { "  " },
    )
}

fn emit(out: &mut impl Write, line: &[u8], args: &JournalArgs, only: &Only) -> io::Result<()> {
    let Ok(rec) = serde_json::from_slice::<Value>(line) else {
        return Ok(());
    };
    let wanted = match only {
        Only::All => true,
        Only::Dir(d) => under(&rec, d),
        Only::File(ino, birth) => {
            rec["file"]["ino"].as_u64() == Some(*ino)
                && rec["file"]["birth_ns"].as_i64() == Some(*birth)
        }
    };
    if !keep(&rec, args) || !wanted {
        return Ok(());
    }
    if args.json {
        out.write_all(line)?;
        out.write_all(b"\n")
    } else {
        writeln!(out, "{}", table_row(&rec))
    }
}

/// `file.birth_ns` of the last record of inode `ino` in the journal `f` (0 if none).
fn last_birth(f: &File, ino: u64) -> io::Result<i64> {
    let needle = format!("\"file\":{{\"ino\":{ino},");
    let mut birth = 0;
    let (mut pos, mut pending, mut buf) = (0u64, Vec::new(), vec![0u8; 1 << 20]);
    loop {
        let n = f.read_at(&mut buf, pos)?;
        if n == 0 {
            return Ok(birth);
        }
        pos += n as u64;
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(i) = pending[start..].iter().position(|b| *b == b'\n') {
            let line = &pending[start..start + i];
            if line.windows(needle.len()).any(|w| w == needle.as_bytes())
                && let Ok(rec) = serde_json::from_slice::<Value>(line)
                && rec["file"]["ino"].as_u64() == Some(ino)
            {
                birth = rec["file"]["birth_ns"].as_i64().unwrap_or(0);
            }
            start += i + 1;
        }
        pending.drain(..start);
    }
}

/// Run `sessionfs journal`. Err is one line for the user.
pub fn run_journal(args: &JournalArgs) -> Result<(), String> {
    let (vf, mut only) = resolve(&args.target)?;
    let f = File::open(&vf).map_err(|e| not_on_mount(&args.target, &vf, &e))?;
    if let Only::File(ino, 0) = only {
        // The mount reports no birth time (no FUSE_STATX): the file is the one that
        // last had this inode number in the journal.
        only = Only::File(ino, last_birth(&f, ino).map_err(|e| e.to_string())?);
    }
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let mut pos = match args.since {
        Some(s) => seek_since(&f, len, s).map_err(|e| e.to_string())?,
        None => 0,
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    if !args.json {
        let _ = writeln!(
            out,
            "{:<12} {:>7} {:<9} {:<24} {:<10} PATH / ENTRIES",
            "TIME", "SEQ", "OP", "PROCESS", "LANE"
        );
    }
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read_at(&mut buf, pos).map_err(|e| e.to_string())?;
        if n == 0 {
            if !args.follow {
                break;
            }
            let _ = out.flush();
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        pos += n as u64;
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(i) = pending[start..].iter().position(|b| *b == b'\n') {
            if let Err(e) = emit(&mut out, &pending[start..start + i], args, &only) {
                if e.kind() == io::ErrorKind::BrokenPipe {
                    return Ok(());
                }
                return Err(e.to_string());
            }
            start += i + 1;
        }
        pending.drain(..start);
    }
    out.flush().or_else(|e| {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Ok(())
        } else {
            Err(e.to_string())
        }
    })
}

/// Run `sessionfs salvage`: the removed lines of FILE, byte for byte. Err is one line.
pub fn run_salvage(args: &SalvageArgs) -> Result<(), String> {
    let mut s = args.file.as_os_str().to_os_string();
    s.push(".salvage");
    let vf = PathBuf::from(s);
    let data = std::fs::read(&vf).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            format!(
                "{}: nothing salvaged (or not on a sessionfs mount)",
                args.file.display()
            )
        } else {
            format!("{}: {e}", vf.display())
        }
    })?;
    let mut out = io::stdout().lock();
    out.write_all(&data).and_then(|_| out.flush()).or_else(|e| {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Ok(())
        } else {
            Err(e.to_string())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_row_of_a_gap_says_what_was_lost() {
        let rec = serde_json::json!({
            "ts": "2026-12-06T04:00:00.000000000Z", "seq": 8, "op": "gap", "path": "",
            "result": "ENOSPC", "gap": {"lost": 5, "after_seq": 7, "reason": "pending_bound"},
        });
        let row = table_row(&rec);
        assert!(row.contains("gap"), "{row}");
        assert!(
            row.contains("5 records lost after seq 7 => ENOSPC"),
            "{row}"
        );
    }

    #[test]
    fn table_rows_escape_control_characters() {
        let rec = serde_json::json!({
            "ts": "2026-12-06T04:00:00.000000000Z", "seq": 7, "op": "write",
            "path": "x.jsonl\n04:00:00.000       8 unlink    sh[1]      -          s.jsonl",
            "comm": "evil\u{1b}[2J", "pid": 42, "result": "ok",
        });
        let row = table_row(&rec);
        assert!(!row.chars().any(char::is_control), "{row:?}");
        assert!(
            row.contains("x.jsonl\\x0a04:00") && row.contains("evil\\x1b[2J"),
            "{row}"
        );
    }

    #[test]
    fn since_finds_the_first_later_record() {
        let mut f = tempfile::tempfile().unwrap();
        let mut starts = Vec::new();
        let mut off = 0u64;
        for seq in 1..=2000u64 {
            let pad = "x".repeat((seq * 37 % 300) as usize);
            let line = format!("{{\"seq\":{seq},\"fseq\":1,\"pad\":\"{pad}\"}}\n");
            starts.push(off);
            off += line.len() as u64;
            f.write_all(line.as_bytes()).unwrap();
        }
        for since in [0u64, 1, 2, 999, 1500, 1999, 2000, 5000] {
            let got = seek_since(&f, off, since).unwrap();
            let want = if since >= 2000 {
                off
            } else {
                starts[since as usize]
            };
            assert_eq!(got, want, "since {since}");
        }
    }

    #[test]
    fn table_row_summarises_entries() {
        let r: Value = serde_json::from_str(
            r#"{"seq":7,"ts":"2026-11-22T14:40:30.123456789Z","op":"write","path":"a.jsonl","pid":5,"comm":"node",
                "lane":"main","len":10,"append":true,"result":"ok",
                "entries":[{"line":3,"type":"message","role":"user","id":"ab12cd34"},{"line":4,"unparsed":"not_json"}]}"#,
        )
        .unwrap();
        let row = table_row(&r);
        assert!(row.starts_with("14:40:30.123"), "{row}");
        assert!(
            row.contains("node[5]")
                && row.contains("main")
                && row.contains("+user:ab12cd34")
                && row.contains("+line4:not_json"),
            "{row}"
        );
    }

    #[test]
    fn directory_filter_matches_path_or_target_below_it() {
        let r = |p: &str, to: Option<&str>| {
            let mut v = serde_json::json!({"seq": 1, "path": p});
            if let Some(t) = to {
                v["to"] = t.into();
            }
            v
        };
        assert!(under(&r("a/b/c.jsonl", None), "a/b"));
        assert!(under(&r("a/b", None), "a/b"));
        assert!(!under(&r("a/bc/d", None), "a/b"));
        assert!(!under(&r("x.jsonl", None), "a/b"));
        assert!(under(&r("x.tmp", Some("a/b/x.jsonl")), "a/b"));
    }

    #[test]
    fn a_directory_off_any_mount_gets_a_one_line_error() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let e = resolve(&sub).unwrap_err();
        assert!(
            e.contains("pass the mountpoint or a file") && !e.contains('\n'),
            "{e}"
        );
        // A file is not resolved further: its `.journal` is opened as is.
        let f = sub.join("t.jsonl");
        assert_eq!(
            resolve(&f).unwrap(),
            (sub.join("t.jsonl.journal"), Only::All)
        );
    }
}
