//! The change journal: records stored in segment files outside the mounted tree,
//! served as `.journal` virtual files.
//!
//! On disk (`<state-dir>/`):
//! - `segments/<n>.jsonl`: one [`record::Record`] per line, `n` a 20-digit segment
//!   number. Segments roll over at [`JournalOptions::segment_bytes`]; the oldest are
//!   dropped whole when the total passes `max_bytes` or a segment's last write is older
//!   than `max_age`.
//! - `salvage/<escaped path>`: the bytes of removed transcript lines, appended exactly.
//! - `next_seq`: the next seq, written at every segment switch and at shutdown, so that
//!   seq continues even when retention has dropped every segment.
//!
//! Write path: [`Journal::append`] assigns seq/fseq and serialises the record on the
//! caller's thread (a few µs), appends the bytes to the in-memory tail of the current
//! segment, where readers see them at once, and wakes the writer thread over a
//! crossbeam channel. The writer writes the tails in batches, at most 50 ms after the
//! first pending record, so no FUSE request waits on disk I/O. After `kill -9` at most
//! the last batch (≤ 100 ms of records) is missing; records accepted before a clean
//! unmount ([`Journal::shutdown`]) are all on disk.
//!
//! Views: [`View::All`] is the concatenation of the retained segments; a
//! [`View::Path`] is the concatenation of the records whose `path` or `to` is that
//! path. Per record the index keeps 16 bytes (segment, offset, view end). A byte
//! offset into a view is a cursor; when retention drops a segment, offsets of that
//! view shift down by the dropped bytes. `seq` (`--since`) is the durable cursor.

pub mod cli;
pub mod record;

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;
use serde::Deserialize;

use record::Record;

/// Journal configuration.
#[derive(Clone, Debug)]
pub struct JournalOptions {
    /// State directory (outside the mount).
    pub state_dir: PathBuf,
    /// Total segment bytes kept; oldest segments are dropped whole. Default 256 MiB.
    pub max_bytes: u64,
    /// Segments whose last write is older than this are dropped whole. Default 30 days.
    pub max_age: Duration,
    /// Size at which a segment is closed and a new one started. Default 16 MiB.
    pub segment_bytes: u64,
    /// Longest a record waits in memory before the writer writes it. Default 50 ms.
    pub batch_window: Duration,
}

impl JournalOptions {
    /// Defaults: 256 MiB, 30 days, 16 MiB segments, 50 ms batches.
    pub fn new(state_dir: PathBuf) -> Self {
        Self {
            state_dir,
            max_bytes: 256 << 20,
            max_age: Duration::from_secs(30 * 86_400),
            segment_bytes: 16 << 20,
            batch_window: Duration::from_millis(50),
        }
    }
}

/// Which journal a virtual file shows.
#[derive(Clone, Copy, Debug)]
pub enum View<'a> {
    /// `<mount>/.journal`: every record.
    All,
    /// `<mount>/<path>.journal`: records whose `path` or `to` equals this path.
    Path(&'a str),
}

/// Where one record's bytes are.
#[derive(Clone, Copy, Debug)]
struct Loc {
    /// Segment number.
    seg: u32,
    /// Byte offset in the segment.
    off: u32,
    /// View offset just past this record (before subtracting the path's `base`).
    end: u64,
}

#[derive(Debug, Default)]
struct PathIndex {
    fseq: u64,
    latest_seq: u64,
    locs: VecDeque<Loc>,
    /// Bytes of this view dropped by retention (subtracted from `Loc::end`).
    base: u64,
}

impl PathIndex {
    fn len(&self) -> u64 {
        self.locs.back().map_or(0, |l| l.end) - self.base
    }
}

#[derive(Debug)]
struct Segment {
    n: u32,
    path: PathBuf,
    /// Bytes in the segment, written or not.
    len: u64,
    /// Bytes already written to the file.
    flushed: u64,
    /// Unwritten bytes `[flushed, len)`.
    tail: Vec<u8>,
    /// Offset of this segment in the All view.
    view_start: u64,
    reader: Option<Arc<File>>,
    modified: SystemTime,
}

#[derive(Debug)]
struct State {
    next_seq: u64,
    paths: HashMap<String, PathIndex>,
    segments: VecDeque<Segment>,
    /// Bytes of the All view dropped by retention.
    all_base: u64,
    salvage_pending: HashMap<String, Vec<u8>>,
    dirty: bool,
}

impl State {
    fn all_len(&self) -> u64 {
        self.segments.back().map_or(0, |s| s.view_start + s.len) - self.all_base
    }
}

enum Msg {
    Dirty,
    Sync(Sender<()>),
    Shutdown,
}

/// The journal of one mount.
#[derive(Debug)]
pub struct Journal {
    state: Arc<Mutex<State>>,
    opts: JournalOptions,
    tx: Sender<Msg>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Msg::Dirty => "Dirty",
            Msg::Sync(_) => "Sync",
            Msg::Shutdown => "Shutdown",
        })
    }
}

/// The fields read back from a segment when rebuilding the index.
#[derive(Deserialize)]
struct Scan<'a> {
    seq: u64,
    fseq: u64,
    #[serde(borrow)]
    path: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    to: Option<std::borrow::Cow<'a, str>>,
}

fn seg_name(n: u32) -> String {
    format!("{n:020}.jsonl")
}

/// Escape a mount-relative path into one file name (`/` → `%2F`, `%` → `%25`).
pub fn escape_path(p: &str) -> String {
    p.replace('%', "%25").replace('/', "%2F")
}

impl Journal {
    /// Open (or create, mode 0700) the state dir, rebuild the index from the retained
    /// segments (a torn last line from a crash is cut off), continue `seq`/`fseq`, and
    /// start the writer thread.
    ///
    /// Errors: I/O errors creating or reading the state dir.
    pub fn open(opts: JournalOptions) -> io::Result<Journal> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&opts.state_dir)?;
        let segdir = opts.state_dir.join("segments");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&segdir)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(opts.state_dir.join("salvage"))?;
        let mut nums: Vec<u32> = fs::read_dir(&segdir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".jsonl")?.parse().ok())
            .collect();
        nums.sort_unstable();
        let mut st = State {
            next_seq: 1,
            paths: HashMap::new(),
            segments: VecDeque::new(),
            all_base: 0,
            salvage_pending: HashMap::new(),
            dirty: false,
        };
        if let Ok(s) = fs::read_to_string(opts.state_dir.join("next_seq")) {
            st.next_seq = s.trim().parse().unwrap_or(1).max(1);
        }
        let mut view = 0u64;
        for n in nums {
            let path = segdir.join(seg_name(n));
            let len = scan_segment(&path, n, view, &mut st)?;
            let modified = fs::metadata(&path)
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::now());
            st.segments.push_back(Segment {
                n,
                path,
                len,
                flushed: len,
                tail: Vec::new(),
                view_start: view,
                reader: None,
                modified,
            });
            view += len;
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let state = Arc::new(Mutex::new(st));
        let j = Journal {
            state: state.clone(),
            opts: opts.clone(),
            tx,
            writer: Mutex::new(None),
        };
        j.retain(&mut j.state.lock());
        let writer = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer_loop(state, opts, rx))?;
        *j.writer.lock() = Some(writer);
        Ok(j)
    }

    /// Assign `seq`/`fseq`, make the record visible to readers, queue it for disk.
    /// Never waits on disk I/O. Returns the seq.
    pub fn append(&self, mut rec: Record) -> u64 {
        let mut st = self.state.lock();
        let seq = st.next_seq;
        st.next_seq += 1;
        rec.seq = seq;
        let pi = st.paths.entry(rec.path.clone()).or_default();
        pi.fseq += 1;
        rec.fseq = pi.fseq;
        let mut bytes = serde_json::to_vec(&rec).unwrap_or_else(|e| {
            format!("{{\"seq\":{seq},\"op\":\"error\",\"result\":\"serialize: {e}\"}}").into_bytes()
        });
        bytes.push(b'\n');
        // Current segment, rolling over when full.
        let need_new = st
            .segments
            .back()
            .is_none_or(|s| s.len > 0 && s.len + bytes.len() as u64 > self.opts.segment_bytes);
        if need_new {
            self.new_segment(&mut st);
        }
        let seg = st.segments.back_mut().expect("a current segment");
        let off = seg.len;
        seg.tail.extend_from_slice(&bytes);
        seg.len += bytes.len() as u64;
        let n = seg.n;
        let len = bytes.len() as u64;
        let touch = |st: &mut State, p: &str| {
            let pi = st.paths.entry(p.to_string()).or_default();
            let end = pi.locs.back().map_or(pi.base, |l| l.end) + len;
            pi.locs.push_back(Loc {
                seg: n,
                off: off as u32,
                end,
            });
            pi.latest_seq = seq;
        };
        touch(&mut st, &rec.path);
        if let Some(to) = rec
            .to
            .as_deref()
            .filter(|t| *t != rec.path && rec.op != "symlink")
        {
            touch(&mut st, to);
        }
        if !st.dirty {
            st.dirty = true;
            let _ = self.tx.send(Msg::Dirty);
        }
        seq
    }

    fn new_segment(&self, st: &mut State) {
        let n = st.segments.back().map_or(0, |s| s.n + 1);
        let view_start = st
            .segments
            .back()
            .map_or(st.all_base, |s| s.view_start + s.len);
        st.segments.push_back(Segment {
            n,
            path: self.opts.state_dir.join("segments").join(seg_name(n)),
            len: 0,
            flushed: 0,
            tail: Vec::new(),
            view_start,
            reader: None,
            modified: SystemTime::now(),
        });
        let _ = fs::write(
            self.opts.state_dir.join("next_seq"),
            format!("{}\n", st.next_seq),
        );
        self.retain(st);
    }

    /// Drop whole old segments past the size or age bound (never the current one).
    fn retain(&self, st: &mut State) {
        let now = SystemTime::now();
        loop {
            let total: u64 = st.segments.iter().map(|s| s.len).sum();
            let Some(first) = st.segments.front() else {
                break;
            };
            if st.segments.len() <= 1 {
                break;
            }
            let old = now.duration_since(first.modified).unwrap_or_default() > self.opts.max_age;
            if total <= self.opts.max_bytes && !old {
                break;
            }
            let seg = st.segments.pop_front().expect("checked");
            let _ = fs::remove_file(&seg.path);
            st.all_base = st.segments.front().map_or(st.all_base, |s| s.view_start);
            for pi in st.paths.values_mut() {
                while let Some(l) = pi.locs.front() {
                    if l.seg != seg.n {
                        break;
                    }
                    pi.base = l.end;
                    pi.locs.pop_front();
                }
            }
            tracing::info!(
                segment = seg.n,
                bytes = seg.len,
                "journal retention dropped a segment"
            );
        }
    }

    /// Store removed transcript bytes for `path` (written by the writer thread).
    pub fn salvage(&self, path: &str, bytes: &[u8]) -> u64 {
        {
            let mut st = self.state.lock();
            st.salvage_pending
                .entry(path.to_string())
                .or_default()
                .extend_from_slice(bytes);
            if !st.dirty {
                st.dirty = true;
                let _ = self.tx.send(Msg::Dirty);
            }
        }
        self.salvage_len(path)
    }

    /// TEMPORARY shim until the salvage store rewrite lands.
    pub fn salvage_rewind(&self, _path: &str, _start: u64, _expect_len: u64, _keep: &[u8]) -> bool {
        false
    }

    fn salvage_file(&self, path: &str) -> PathBuf {
        self.opts.state_dir.join("salvage").join(escape_path(path))
    }

    /// Current byte length of a view.
    pub fn view_len(&self, view: View<'_>) -> u64 {
        let st = self.state.lock();
        match view {
            View::All => st.all_len(),
            View::Path(p) => st.paths.get(p).map_or(0, PathIndex::len),
        }
    }

    /// Bytes `[offset, offset+size)` of a view (shorter at the end).
    pub fn read(&self, view: View<'_>, offset: u64, size: usize) -> Vec<u8> {
        // Plan the pieces under the lock; copy file bytes outside it.
        let mut pieces: Vec<Piece> = Vec::new();
        {
            let mut st = self.state.lock();
            let mut want = size;
            match view {
                View::All => {
                    let mut pos = offset + st.all_base;
                    let idx = st.segments.partition_point(|s| s.view_start + s.len <= pos);
                    for i in idx..st.segments.len() {
                        if want == 0 {
                            break;
                        }
                        let s = &st.segments[i];
                        let in_seg = pos - s.view_start;
                        let n = ((s.len - in_seg) as usize).min(want);
                        if n == 0 {
                            continue;
                        }
                        pieces.push(plan(&mut st.segments[i], in_seg, n));
                        want -= n;
                        pos += n as u64;
                    }
                }
                View::Path(p) => {
                    let Some(pi) = st.paths.get(p) else {
                        return Vec::new();
                    };
                    let abs = offset + pi.base;
                    let first = pi.locs.partition_point(|l| l.end <= abs);
                    let mut plan_locs = Vec::new();
                    let mut pos = abs;
                    for k in first..pi.locs.len() {
                        if want == 0 {
                            break;
                        }
                        let l = pi.locs[k];
                        let start = if k == 0 { pi.base } else { pi.locs[k - 1].end };
                        let skip = pos - start;
                        let n = ((l.end - pos) as usize).min(want);
                        plan_locs.push((l.seg, l.off as u64 + skip, n));
                        want -= n;
                        pos += n as u64;
                    }
                    for (seg, off, n) in plan_locs {
                        let i = st.segments.partition_point(|s| s.n < seg);
                        if let Some(s) = st.segments.get_mut(i).filter(|s| s.n == seg) {
                            pieces.push(plan(s, off, n));
                        }
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(size.min(1 << 20));
        for (file, mem, off, n) in pieces {
            match file {
                Some(f) => {
                    let start = out.len();
                    out.resize(start + n, 0);
                    let mut got = 0;
                    while got < n {
                        match f.read_at(&mut out[start + got..start + n], off + got as u64) {
                            Ok(0) | Err(_) => break,
                            Ok(k) => got += k,
                        }
                    }
                    out.truncate(start + got);
                    if got < n {
                        break;
                    }
                }
                None => out.extend_from_slice(&mem),
            }
        }
        out
    }

    /// Latest seq of a path.
    pub fn latest_seq(&self, path: &str) -> Option<u64> {
        self.state
            .lock()
            .paths
            .get(path)
            .map(|p| p.latest_seq)
            .filter(|s| *s > 0)
    }

    /// Byte length of the salvage store of `path`.
    pub fn salvage_len(&self, path: &str) -> u64 {
        let st = self.state.lock();
        let pending = st.salvage_pending.get(path).map_or(0, |v| v.len() as u64);
        fs::metadata(self.salvage_file(path)).map_or(0, |m| m.len()) + pending
    }

    /// Bytes of the salvage store of `path`.
    pub fn read_salvage(&self, path: &str, offset: u64, size: usize) -> Vec<u8> {
        let (pending, on_disk) = {
            let st = self.state.lock();
            let on_disk = fs::metadata(self.salvage_file(path)).map_or(0, |m| m.len());
            (
                st.salvage_pending.get(path).cloned().unwrap_or_default(),
                on_disk,
            )
        };
        let mut out = Vec::new();
        if offset < on_disk
            && let Ok(f) = File::open(self.salvage_file(path))
        {
            let n = ((on_disk - offset) as usize).min(size);
            out.resize(n, 0);
            let got = f.read_at(&mut out, offset).unwrap_or(0);
            out.truncate(got);
        }
        if out.len() < size {
            let from = offset.saturating_sub(on_disk) as usize;
            if from < pending.len() {
                let n = (pending.len() - from).min(size - out.len());
                out.extend_from_slice(&pending[from..from + n]);
            }
        }
        out
    }

    /// Wait until everything accepted so far is on disk (page cache).
    pub fn sync(&self) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.tx.send(Msg::Sync(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(30));
        }
    }

    /// Flush everything accepted so far to disk and stop the writer thread. Idempotent.
    pub fn shutdown(&self) {
        let handle = self.writer.lock().take();
        if let Some(h) = handle {
            let _ = self.tx.send(Msg::Shutdown);
            let _ = h.join();
            let st = self.state.lock();
            let _ = fs::write(
                self.opts.state_dir.join("next_seq"),
                format!("{}\n", st.next_seq),
            );
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A planned read: (file to pread, or None with the bytes already copied; offset; length).
type Piece = (Option<Arc<File>>, Vec<u8>, u64, usize);

/// Plan reading `n` bytes at `off` of segment `s`: from its file (flushed part) or
/// from its in-memory tail.
fn plan(s: &mut Segment, off: u64, n: usize) -> Piece {
    if off + n as u64 <= s.flushed {
        if s.reader.is_none() {
            s.reader = File::open(&s.path).ok().map(Arc::new);
        }
        return (s.reader.clone(), Vec::new(), off, n);
    }
    if off >= s.flushed {
        let a = (off - s.flushed) as usize;
        let b = (a + n).min(s.tail.len());
        return (None, s.tail[a.min(b)..b].to_vec(), off, n);
    }
    // Straddles the flushed boundary: copy both parts now (rare, small).
    if s.reader.is_none() {
        s.reader = File::open(&s.path).ok().map(Arc::new);
    }
    let head = (s.flushed - off) as usize;
    let mut buf = vec![0u8; head];
    if let Some(f) = &s.reader {
        let _ = f.read_at(&mut buf, off);
    }
    let rest = (n - head).min(s.tail.len());
    buf.extend_from_slice(&s.tail[..rest]);
    (None, buf, off, n)
}

/// Index one segment file into `st`; cut a torn last line. Returns its length.
fn scan_segment(path: &Path, n: u32, view_start: u64, st: &mut State) -> io::Result<u64> {
    let f = File::open(path)?;
    let mut r = io::BufReader::with_capacity(1 << 20, f);
    let mut off = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let k = r.read_until(b'\n', &mut line)?;
        if k == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            // Torn write from a crash: drop the partial record.
            OpenOptions::new().write(true).open(path)?.set_len(off)?;
            tracing::warn!(
                segment = n,
                offset = off,
                "cut a torn journal record left by a crash"
            );
            break;
        }
        if let Ok(s) = serde_json::from_slice::<Scan<'_>>(&line) {
            st.next_seq = st.next_seq.max(s.seq + 1);
            let mut touch = |p: &str, fseq: Option<u64>| {
                let pi = st.paths.entry(p.to_string()).or_default();
                if let Some(f) = fseq {
                    pi.fseq = pi.fseq.max(f);
                }
                let end = pi.locs.back().map_or(pi.base, |l| l.end) + k as u64;
                pi.locs.push_back(Loc {
                    seg: n,
                    off: off as u32,
                    end,
                });
                pi.latest_seq = s.seq;
            };
            touch(&s.path, Some(s.fseq));
            if let Some(to) = s.to.as_deref().filter(|t| *t != s.path) {
                touch(to, None);
            }
        }
        off += k as u64;
    }
    let _ = view_start;
    Ok(off)
}

fn writer_loop(state: Arc<Mutex<State>>, opts: JournalOptions, rx: Receiver<Msg>) {
    let mut files: HashMap<u32, File> = HashMap::new();
    loop {
        let first = match rx.recv() {
            Ok(m) => m,
            Err(_) => return,
        };
        let mut syncs = Vec::new();
        let mut stop = false;
        match first {
            Msg::Shutdown => stop = true,
            Msg::Sync(s) => syncs.push(s),
            Msg::Dirty => {
                // Batch: give concurrent appends up to `batch_window` to join.
                let deadline = std::time::Instant::now() + opts.batch_window;
                loop {
                    match rx.recv_deadline(deadline) {
                        Ok(Msg::Shutdown) => {
                            stop = true;
                            break;
                        }
                        Ok(Msg::Sync(s)) => {
                            syncs.push(s);
                            break;
                        }
                        Ok(Msg::Dirty) => {}
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => {
                            stop = true;
                            break;
                        }
                    }
                }
            }
        }
        flush(&state, &opts, &mut files);
        for s in syncs {
            let _ = s.send(());
        }
        if stop {
            return;
        }
    }
}

/// Write every segment tail and pending salvage; readers keep seeing the bytes
/// throughout (the tail is trimmed only after the write).
fn flush(state: &Mutex<State>, opts: &JournalOptions, files: &mut HashMap<u32, File>) {
    let (work, salvage) = {
        let mut st = state.lock();
        st.dirty = false;
        let work: Vec<(u32, PathBuf, u64, Vec<u8>)> = st
            .segments
            .iter()
            .filter(|s| !s.tail.is_empty())
            .map(|s| (s.n, s.path.clone(), s.flushed, s.tail.clone()))
            .collect();
        let salvage: Vec<(String, Vec<u8>)> = st
            .salvage_pending
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (work, salvage)
    };
    for (n, path, at, bytes) in work {
        let f = match files.entry(n) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                match OpenOptions::new().create(true).append(true).open(&path) {
                    Ok(f) => v.insert(f),
                    Err(e) => {
                        tracing::error!(path = %path.display(), error = %e, "journal segment open failed");
                        continue;
                    }
                }
            }
        };
        if let Err(e) = f.write_all(&bytes) {
            tracing::error!(path = %path.display(), error = %e, "journal write failed");
            continue;
        }
        let mut st = state.lock();
        if let Some(s) = st.segments.iter_mut().find(|s| s.n == n) {
            debug_assert_eq!(s.flushed, at);
            s.tail.drain(..bytes.len());
            // A burst can grow the tail; give the memory back once written.
            if s.tail.capacity() > 4 << 20 && s.tail.len() < 1 << 20 {
                s.tail.shrink_to(1 << 20);
            }
            s.flushed += bytes.len() as u64;
            s.modified = SystemTime::now();
        }
    }
    // Close files of segments that are no longer current.
    let current = state.lock().segments.back().map(|s| s.n);
    files.retain(|n, _| Some(*n) == current);
    for (path, bytes) in salvage {
        let p = opts.state_dir.join("salvage").join(escape_path(&path));
        // Written under the lock so that readers never see the bytes twice (pending and
        // on disk) or not at all. Salvage is rare and goes to the page cache.
        let mut st = state.lock();
        let r = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .and_then(|mut f| f.write_all(&bytes));
        if let Err(e) = r {
            tracing::error!(path = %p.display(), error = %e, "salvage write failed");
            continue;
        }
        if let Some(v) = st.salvage_pending.get_mut(&path) {
            v.drain(..bytes.len().min(v.len()));
            if v.is_empty() {
                st.salvage_pending.remove(&path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(path: &str) -> Record {
        Record {
            op: "write".into(),
            path: path.into(),
            ts: "t".into(),
            result: "ok".into(),
            ..Default::default()
        }
    }

    fn lines(b: &[u8]) -> Vec<serde_json::Value> {
        b.split(|c| *c == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    #[test]
    fn views_seq_fseq_and_offsets() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(JournalOptions::new(d.path().into())).unwrap();
        for i in 0..10 {
            j.append(rec(if i % 2 == 0 { "a" } else { "b" }));
        }
        let mut r = rec("a");
        r.op = "rename".into();
        r.to = Some("c".into());
        j.append(r);
        let all = j.read(View::All, 0, 1 << 20);
        assert_eq!(all.len() as u64, j.view_len(View::All));
        let v = lines(&all);
        assert_eq!(v.len(), 11);
        assert_eq!(
            v.iter()
                .map(|r| r["seq"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            (1..=11).collect::<Vec<_>>()
        );
        let a = lines(&j.read(View::Path("a"), 0, 1 << 20));
        assert_eq!(
            a.iter()
                .map(|r| r["fseq"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            (1..=6).collect::<Vec<_>>()
        );
        assert_eq!(
            lines(&j.read(View::Path("c"), 0, 1 << 20)).len(),
            1,
            "rename shows in the target's view"
        );
        // Arbitrary offsets and sizes reassemble the same bytes.
        let pa = j.read(View::Path("a"), 0, 1 << 20);
        let mut pieced = Vec::new();
        let mut off = 0;
        while off < pa.len() {
            let chunk = j.read(View::Path("a"), off as u64, 7);
            assert!(!chunk.is_empty());
            off += chunk.len();
            pieced.extend(chunk);
        }
        assert_eq!(pieced, pa);
        assert_eq!(j.latest_seq("a"), Some(11));
        // After the writer flushed, the same bytes come from disk.
        j.sync();
        assert_eq!(j.read(View::All, 0, 1 << 20), all);
    }

    #[test]
    fn seq_and_fseq_continue_after_reopen() {
        let d = tempfile::tempdir().unwrap();
        {
            let j = Journal::open(JournalOptions::new(d.path().into())).unwrap();
            for _ in 0..5 {
                j.append(rec("x"));
            }
            j.shutdown();
        }
        let j = Journal::open(JournalOptions::new(d.path().into())).unwrap();
        assert_eq!(j.append(rec("x")), 6);
        let v = lines(&j.read(View::Path("x"), 0, 1 << 20));
        assert_eq!(v.len(), 6);
        assert_eq!(v[5]["fseq"], 6);
    }

    #[test]
    fn torn_record_from_a_crash_is_cut() {
        let d = tempfile::tempdir().unwrap();
        {
            let j = Journal::open(JournalOptions::new(d.path().into())).unwrap();
            j.append(rec("x"));
            j.shutdown();
        }
        let seg = d.path().join("segments").join(seg_name(0));
        OpenOptions::new()
            .append(true)
            .open(&seg)
            .unwrap()
            .write_all(b"{\"seq\":2,\"fs")
            .unwrap();
        let j = Journal::open(JournalOptions::new(d.path().into())).unwrap();
        assert_eq!(lines(&j.read(View::All, 0, 1 << 20)).len(), 1);
        assert_eq!(j.append(rec("x")), 2);
    }

    #[test]
    fn retention_drops_whole_old_segments() {
        let d = tempfile::tempdir().unwrap();
        let mut o = JournalOptions::new(d.path().into());
        o.segment_bytes = 4096;
        o.max_bytes = 16384;
        let j = Journal::open(o).unwrap();
        for _ in 0..500 {
            j.append(rec("p"));
        }
        j.sync();
        let segs = fs::read_dir(d.path().join("segments")).unwrap().count();
        let total: u64 = fs::read_dir(d.path().join("segments"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(
            total <= 16384 + 4096,
            "kept {total} bytes in {segs} segments"
        );
        let v = lines(&j.read(View::All, 0, 1 << 20));
        assert!(v[0]["seq"].as_u64().unwrap() > 1, "oldest records dropped");
        assert_eq!(v.last().unwrap()["seq"], 500);
        // Every retained record starts a line: whole segments were dropped.
        let pv = lines(&j.read(View::Path("p"), 0, 1 << 20));
        assert_eq!(pv.len(), v.len());
        assert_eq!(pv[0]["seq"], v[0]["seq"]);
        j.shutdown();
        // seq continues even past dropped segments.
        let j = Journal::open(JournalOptions::new(d.path().into())).unwrap();
        assert_eq!(j.append(rec("p")), 501);
    }

    #[test]
    fn salvage_is_stored_exactly() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(JournalOptions::new(d.path().into())).unwrap();
        j.salvage("dir/t.jsonl", b"line one\n");
        assert_eq!(j.read_salvage("dir/t.jsonl", 0, 100), b"line one\n");
        j.sync();
        j.salvage("dir/t.jsonl", b"\xff two\n");
        assert_eq!(j.salvage_len("dir/t.jsonl"), 15);
        assert_eq!(
            j.read_salvage("dir/t.jsonl", 0, 100),
            b"line one\n\xff two\n"
        );
        assert_eq!(j.read_salvage("dir/t.jsonl", 5, 6), b"one\n\xff ");
    }
}
