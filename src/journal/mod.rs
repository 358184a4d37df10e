//! The change journal: records stored in segment files outside the mounted tree,
//! served as `.journal` virtual files.
//!
//! On disk (`<state-dir>/`; directories are created mode 0700, every file the journal
//! creates is mode 0600 whatever the umask):
//! - `segments/<n>.jsonl`: one [`record::Record`] per line, `n` a 20-digit segment
//!   number. Segments roll over at [`JournalOptions::segment_bytes`]; the oldest are
//!   dropped whole when the total passes `max_bytes` or a segment's last write is older
//!   than `max_age` (checked at every rollover, at open, and by the writer thread every
//!   [`JournalOptions::retain_every`]).
//! - `salvage/<escaped path>`: the bytes of removed transcript lines, appended exactly
//!   and synchronously by [`Journal::salvage`].
//! - `next_seq`: a durable seq reservation (replaced atomically: temp file, fsync,
//!   rename). While running it holds a high-water mark above every seq handed out; the
//!   writer thread moves it a block ([`RESERVE_BLOCK`] seqs) ahead whenever fewer than
//!   half a block remain. A clean shutdown writes the exact next seq. On open, seq
//!   continues at the larger of that value and the largest seq in the segments + 1. So
//!   after a clean restart seq continues without a gap, and after a crash (`kill -9`)
//!   it may jump forward but never repeats a seq that readers may have seen.
//!
//! Write path: [`Journal::append`] assigns seq/fseq and serialises the record on the
//! caller's thread (a few µs), appends the bytes to the in-memory tail of the current
//! segment, where readers see them at once, and wakes the writer thread over a
//! crossbeam channel. The writer writes the tails in batches, at most 50 ms after the
//! first pending record; it also creates segment files, unlinks the segments that
//! retention dropped and writes `next_seq`, so no FUSE request waits on journal disk
//! I/O. After `kill -9` at most the last batch (≤ 100 ms of records) is missing;
//! records accepted before a clean unmount ([`Journal::shutdown`]) are all on disk.
//!
//! Full or failing state dir: unwritten records stay in memory (still served) up to
//! [`JournalOptions::max_pending`] bytes, and the writer retries every
//! [`JournalOptions::retry_every`]. Past the bound, or with no reserved seq left,
//! records are dropped without a seq until everything pending is written and seqs are
//! reserved again; then one `gap` record ([`record::GapInfo`]) counts them. What a
//! clean shutdown still cannot write is reported by [`Journal::loss`].
//! Salvage is the exception by design: it is written before the destructive operation
//! goes on (see [`Journal::salvage`]).
//!
//! Views: [`View::All`] is the concatenation of the retained segments; a
//! [`View::File`] is the concatenation of the records of one file ([`FileRef`]: inode,
//! birth time, owner), followed across renames, never across names: a new file under
//! an old name has an empty view. A file renamed over another file of the same owner
//! (a repair's temp file over the transcript) continues the replaced file's view, its
//! *lineage*; the alias is replayed from the rename records at open. Per record the
//! index keeps 16 bytes (segment, offset, view end). A byte offset into a view is a
//! cursor; when retention drops a segment, offsets of that view shift down by the
//! dropped bytes. `seq` (`--since`) is the durable cursor. When retention has dropped
//! every record of a file, its index is dropped too: its `fseq` then starts again at
//! 1, as it would after a restart.

pub mod cli;
pub mod record;
pub mod salvage;

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, BufRead, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;
use serde::Deserialize;

use record::{FileRef, Record};

/// Seqs reserved in `next_seq` at a time. The writer thread extends the reservation
/// when fewer than half of this remain.
pub const RESERVE_BLOCK: u64 = 65_536;

/// Permission bits of every file the journal creates.
const FILE_MODE: u32 = 0o600;
/// Permission bits of the directories the journal creates.
const DIR_MODE: u32 = 0o700;

/// Journal configuration.
#[derive(Clone, Debug)]
pub struct JournalOptions {
    /// State directory (outside the mount).
    pub state_dir: PathBuf,
    /// Total segment bytes kept; oldest segments are dropped whole. Default 256 MiB.
    pub max_bytes: u64,
    /// Segments whose last write is older than this are dropped whole. Default 30 days.
    pub max_age: Duration,
    /// Size at which a segment is closed and a new one started. Default 16 MiB;
    /// [`Journal::open`] lowers it to `max_bytes / 8` (at least
    /// [`MIN_SEGMENT_BYTES`]), so that a small bound is kept within 1/8.
    pub segment_bytes: u64,
    /// Longest a record waits in memory before the writer writes it. Default 50 ms.
    pub batch_window: Duration,
    /// How often the writer thread re-applies the size and age bounds, busy or idle
    /// (they are also applied at every segment rollover). Default 60 s; at least 10 ms.
    pub retain_every: Duration,
    /// Most bytes of unwritten records kept in memory while writes to the state dir
    /// fail or lag (plus at most one record). Past it the journal drops records into a
    /// gap (see [`record::GapInfo`]) instead of growing without bound. Default 64 MiB.
    pub max_pending: u64,
    /// How often the writer thread retries while something is unwritten, a gap is
    /// open or the seq reservation is short, with or without new records. Default 1 s;
    /// at least 10 ms.
    pub retry_every: Duration,
    /// Bounds of the salvage store (see [`salvage`]).
    pub salvage: salvage::SalvageBounds,
}

/// Smallest segment size, bytes (64 KiB), whatever `max_bytes` says.
pub const MIN_SEGMENT_BYTES: u64 = 64 << 10;

/// Default [`JournalOptions::max_pending`], bytes (64 MiB).
pub const DEFAULT_MAX_PENDING: u64 = 64 << 20;

/// Most bytes the writer copies out of a segment's unwritten tail per `write(2)`
/// (4 MiB): a backlog is written in pieces, so writing it costs at most this much
/// memory on top of the backlog itself.
const WRITE_CHUNK: usize = 4 << 20;

/// How long a clean shutdown keeps retrying (every 100 ms) to write what is pending
/// before it counts it as lost.
const SHUTDOWN_RETRY: Duration = Duration::from_secs(1);

impl JournalOptions {
    /// Defaults: 256 MiB, 30 days, 16 MiB segments, 50 ms batches, retention every 60 s,
    /// 64 MiB of pending records, retries every 1 s.
    pub fn new(state_dir: PathBuf) -> Self {
        Self {
            state_dir,
            max_bytes: 256 << 20,
            max_age: Duration::from_secs(30 * 86_400),
            segment_bytes: 16 << 20,
            batch_window: Duration::from_millis(50),
            retain_every: Duration::from_secs(60),
            max_pending: DEFAULT_MAX_PENDING,
            retry_every: Duration::from_secs(1),
            salvage: salvage::SalvageBounds::default(),
        }
    }
}

/// Which journal a virtual file shows.
#[derive(Clone, Copy, Debug)]
pub enum View<'a> {
    /// `<mount>/.journal`: every record.
    All,
    /// `<mount>/<file>.journal`: the records of this file's lineage (see the module
    /// doc).
    File(FileRef),
    /// Never constructed: keeps the lifetime parameter for callers.
    #[doc(hidden)]
    _Never(std::marker::PhantomData<&'a ()>),
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
struct FileIndex {
    fseq: u64,
    latest_seq: u64,
    /// Where the file was and its backing fingerprint after its last successful
    /// change through the mount (`None` once unlinked): what [`Journal::last_known`]
    /// gives the reconciliation at start.
    last: Option<(String, record::Fingerprint)>,
    locs: VecDeque<Loc>,
    /// Bytes of this view dropped by retention (subtracted from `Loc::end`).
    base: u64,
}

impl FileIndex {
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
    /// Bytes already written to the file. 0 until the writer thread has created the
    /// file: until then every byte is served from `tail`.
    flushed: u64,
    /// Unwritten bytes `[flushed, len)`.
    tail: Vec<u8>,
    /// Offset of this segment in the All view.
    view_start: u64,
    /// Read handle on the file, set once the file exists (at open for segments found
    /// on disk, by the writer thread when it first writes a new one). Readers `pread`
    /// it outside the state lock.
    reader: Option<Arc<File>>,
    modified: SystemTime,
}

#[derive(Debug)]
struct State {
    next_seq: u64,
    /// Seqs below this are covered by the `next_seq` file (a restart continues at or
    /// above it). `append` hands out only seqs below it.
    reserved: u64,
    /// Seqs per reservation extension ([`RESERVE_BLOCK`]; smaller in tests).
    block: u64,
    /// An appender asked the writer thread to extend the reservation (it is below half
    /// a block); cleared when the writer has.
    reserve_asked: bool,
    /// Records are being dropped (see [`record::GapInfo`]); `None` while they are kept.
    gap: Option<Gap>,
    /// errno of the last failed write to the state dir (segment or `next_seq`).
    last_errno: Option<i32>,
    /// Per-file views, by lineage key.
    files: HashMap<FileRef, FileIndex>,
    /// A file renamed over a file of the same owner → the lineage it continues.
    alias: HashMap<FileRef, FileRef>,
    /// The lineage of the last record naming each path: the view of a name whose file
    /// is gone (unlinked, renamed away).
    last_at: HashMap<String, FileRef>,
    segments: VecDeque<Segment>,
    /// Bytes of the All view dropped by retention.
    all_base: u64,
    /// Files of segments dropped by retention, unlinked by the writer thread.
    unlink: Vec<PathBuf>,
    dirty: bool,
    /// The highest seq found on disk at open.
    disk_last: u64,
    /// A lock record waits in a tail: the writer was asked to write within
    /// [`URGENT_WINDOW`].
    urgent: bool,
}

impl State {
    fn all_len(&self) -> u64 {
        self.segments.back().map_or(0, |s| s.view_start + s.len) - self.all_base
    }

    /// The lineage key of file `f` (itself unless renamed over a file of its owner).
    fn lineage(&self, f: FileRef) -> FileRef {
        let mut k = f;
        // Chains are short (one per rename over); the bound only guards a cycle.
        for _ in 0..64 {
            match self.alias.get(&k) {
                Some(n) if *n != k => k = *n,
                _ => break,
            }
        }
        k
    }

    /// The views a record goes to: its file's lineage and, for a rename over a file
    /// of the same owner, the replaced file's lineage, which the moved file continues
    /// (the record shows in both; its `fseq` counts in the continued one, the last).
    fn view_keys(&self, ix: &Indexed<'_>) -> Vec<FileRef> {
        let Some(file) = ix.file else {
            return Vec::new();
        };
        let own = self.lineage(file);
        let mut keys = vec![own];
        if ix.renamed_over
            && let Some(rep) = ix.replaced.filter(|r| r.uid == file.uid && *r != file)
        {
            let target = self.lineage(rep);
            if target != own {
                keys.push(target);
            }
        }
        keys
    }

    /// The `fseq` the record `ix` will get (0 without a file).
    fn next_fseq(&self, ix: &Indexed<'_>) -> u64 {
        self.view_keys(ix)
            .last()
            .map_or(0, |k| self.files.get(k).map_or(0, |fi| fi.fseq) + 1)
    }

    /// Index one record of `len` bytes at `off` of segment `seg` into its views (see
    /// [`Self::view_keys`]) and remember the alias of a rename over; `ix.disk_fseq`
    /// (scan at open) only raises the counter.
    fn index(&mut self, ix: Indexed<'_>, path: &str, seg: u32, off: u64, len: u64) {
        let keys = self.view_keys(&ix);
        let (Some(&last), Some(file)) = (keys.last(), ix.file) else {
            return;
        };
        if keys.len() > 1 {
            self.alias.insert(file, last);
            // The file goes on as that lineage: its own entry no longer names a path
            // (else reconcile at start would find that old path gone).
            if file != last
                && let Some(fi) = self.files.get_mut(&file)
            {
                fi.last = None;
            }
        }
        if ix.unlinked {
            if let Some(fi) = self.files.get_mut(&last) {
                fi.last = None;
            }
        } else if let Some(fp) = ix.after {
            let at = ix.to.unwrap_or(path);
            self.files.entry(last).or_default().last = Some((at.to_string(), fp));
        }
        self.last_at.insert(path.to_string(), last);
        if let Some(to) = ix.to {
            self.last_at.insert(to.to_string(), last);
        }
        for k in keys {
            let fi = self.files.entry(k).or_default();
            if k == last {
                fi.fseq = match ix.disk_fseq {
                    Some(f) => fi.fseq.max(f),
                    None => fi.fseq + 1,
                };
            }
            let end = fi.locs.back().map_or(fi.base, |l| l.end) + len;
            fi.locs.push_back(Loc {
                seg,
                off: off as u32,
                end,
            });
            fi.latest_seq = ix.seq;
        }
    }

    /// Bytes of records not written yet (kept in memory).
    fn pending(&self) -> u64 {
        self.segments.iter().map(|s| s.tail.len() as u64).sum()
    }
}

/// What [`State::index`] needs of a record.
struct Indexed<'a> {
    seq: u64,
    /// The backing fingerprint after a successful change, and whether the change was
    /// an unlink (the file's name gone; also a reconcile record with flag `gone`).
    after: Option<record::Fingerprint>,
    unlinked: bool,
    to: Option<&'a str>,
    file: Option<FileRef>,
    replaced: Option<FileRef>,
    /// A successful rename (its `replaced` is continued by the moved file).
    renamed_over: bool,
    /// `fseq` read back from disk (scan at open); `None` when appending.
    disk_fseq: Option<u64>,
}

/// An open gap: records dropped since it opened, to be reported by one `gap` record.
#[derive(Debug)]
struct Gap {
    lost: u64,
    after_seq: u64,
    first: SystemTime,
    last: SystemTime,
    reason: &'static str,
    paths: Vec<String>,
    paths_truncated: bool,
}

/// Records a clean shutdown could not put on disk, reported by [`Journal::loss`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loss {
    /// Accepted records (shown to readers, with a `seq`) that were never written.
    pub unwritten: u64,
    /// Their seqs, first and last (they are the last seqs handed out).
    pub unwritten_seqs: Option<(u64, u64)>,
    /// Records dropped into a gap whose `gap` record never reached the disk (these
    /// had no seq).
    pub dropped: u64,
    /// The last error writing the state dir (`ENOSPC: No space left on device`).
    pub error: Option<String>,
    /// The state dir.
    pub state_dir: PathBuf,
}

impl Loss {
    /// All records lost: `unwritten + dropped`.
    pub fn total(&self) -> u64 {
        self.unwritten + self.dropped
    }
}

impl std::fmt::Display for Loss {
    /// One line: `the journal lost 50513 records at shutdown, never written to <dir>
    /// (ENOSPC: No space left on device): 12000 accepted records (seq 65537-77536) and
    /// 38513 dropped records (no seq; no gap record written)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the journal lost {} records at shutdown, never written to {}",
            self.total(),
            self.state_dir.display()
        )?;
        if let Some(e) = &self.error {
            write!(f, " ({e})")?;
        }
        let mut parts = Vec::new();
        if self.unwritten > 0 {
            let seqs = match self.unwritten_seqs {
                Some((a, b)) if a == b => format!(" (seq {a})"),
                Some((a, b)) => format!(" (seq {a}-{b})"),
                None => String::new(),
            };
            parts.push(format!("{} accepted records{seqs}", self.unwritten));
        }
        if self.dropped > 0 {
            parts.push(format!(
                "{} dropped records (no seq; no gap record written)",
                self.dropped
            ));
        }
        write!(f, ": {}", parts.join(" and "))
    }
}

/// `ENOSPC` and the like: the name of errno `n` and its description.
fn errno_text(n: i32) -> String {
    let e = nix::errno::Errno::from_raw(n);
    format!("{e:?}: {}", e.desc())
}

/// The errno name (`ENOSPC`) of errno `n`.
fn errno_name(n: i32) -> String {
    format!("{:?}", nix::errno::Errno::from_raw(n))
}

/// A state dir out of space (or quota): the journal keeps going without writing.
fn is_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// Decide whether an appended record is kept, with the state lock held: records are
/// dropped into the open gap, or into a new one when the pending bytes reached
/// `max_pending` or no reserved seq is left. Asks the writer thread to extend the
/// reservation when less than half a block remains. A `gap` record (from the writer
/// thread) closes the open gap and carries its facts. Returns false to drop `rec`.
fn admit(
    st: &mut State,
    opts: &JournalOptions,
    rec: &mut Record,
    tx: Option<&Sender<Msg>>,
) -> bool {
    if rec.op == record::Op::Gap {
        if st.next_seq >= st.reserved {
            return false;
        }
        if let Some(g) = st.gap.take() {
            let error = st.last_errno.take().map(errno_name);
            rec.result = error.clone().unwrap_or_else(|| "ok".into());
            rec.gap = Some(record::GapInfo {
                lost: g.lost,
                after_seq: g.after_seq,
                first_ts: crate::clock::rfc3339(g.first),
                last_ts: crate::clock::rfc3339(g.last),
                reason: g.reason.into(),
                error,
                paths: g.paths,
                paths_truncated: g.paths_truncated,
                lost_unknown: false,
            });
        }
        return true;
    }
    if st.gap.is_none() {
        let reason = if st.pending() >= opts.max_pending {
            "pending_bound"
        } else if st.next_seq >= st.reserved {
            "no_reserved_seq"
        } else {
            if !st.reserve_asked && st.reserved - st.next_seq <= st.block / 2 {
                st.reserve_asked = true;
                if let Some(tx) = tx {
                    let _ = tx.send(Msg::Reserve);
                }
            }
            return true;
        };
        // Logged by the writer thread: a log write (the log may be on the failing
        // disk) must not hold up a FUSE request.
        let now = SystemTime::now();
        st.gap = Some(Gap {
            lost: 0,
            after_seq: st.next_seq - 1,
            first: now,
            last: now,
            reason,
            paths: Vec::new(),
            paths_truncated: false,
        });
    }
    let g = st.gap.as_mut().expect("opened above");
    g.lost += 1;
    g.last = SystemTime::now();
    if !g.paths_truncated && !g.paths.contains(&rec.path) {
        if g.paths.len() < record::GAP_PATHS {
            g.paths.push(rec.path.clone());
        } else {
            g.paths_truncated = true;
        }
    }
    false
}

/// What the journal and its writer thread share.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    opts: JournalOptions,
    /// What the clean shutdown could not write, if anything (set by
    /// [`Journal::shutdown`]).
    loss: Mutex<Option<Loss>>,
}

/// How soon the writer writes after a lock record (see `Msg::Urgent`): 2 ms, against
/// the 50 ms batch window of other records.
const URGENT_WINDOW: Duration = Duration::from_millis(2);

enum Msg {
    Dirty,
    /// A lock record was appended: write within [`URGENT_WINDOW`], not the batch window.
    Urgent,
    /// Extend the seq reservation now (less than half a block left).
    Reserve,
    Sync(Sender<()>),
    Shutdown,
    /// Tests: stop the writer at once, without writing anything (a simulated kill -9).
    #[cfg(test)]
    Crash,
}

/// The journal of one mount.
#[derive(Debug)]
pub struct Journal {
    shared: Arc<Shared>,
    /// The salvage store; its own lock serialises every access to it. Never taken
    /// with the state lock held, so appends of records never wait on salvage I/O.
    salvage: salvage::SalvageStore,
    tx: Sender<Msg>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Exclusive `flock` on `<state-dir>/lock`, held until [`Journal::shutdown`].
    lock: Mutex<Option<nix::fcntl::Flock<fs::File>>>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Msg::Dirty => "Dirty",
            Msg::Urgent => "Urgent",
            Msg::Reserve => "Reserve",
            Msg::Sync(_) => "Sync",
            Msg::Shutdown => "Shutdown",
            #[cfg(test)]
            Msg::Crash => "Crash",
        })
    }
}

/// Take the state dir's exclusive lock: `flock(LOCK_EX|LOCK_NB)` on `<dir>/lock`
/// (mode 0600, holding the owner's pid in decimal). Two daemons on one state dir
/// would hand out the same `seq`s and write the same segments; the second one is
/// refused. The lock goes with the process (a `kill -9` frees it).
///
/// # Errors
/// `WouldBlock` ("in use by another sessionfs daemon (pid N)") when another process
/// holds it; the error of creating or locking the file otherwise.
fn lock_state_dir(dir: &Path) -> io::Result<nix::fcntl::Flock<fs::File>> {
    use std::io::{Read, Seek, Write};
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir.join("lock"))?;
    let mut lock = match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((mut f, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            let pid = pid.trim();
            let who = if pid.is_empty() { "?" } else { pid };
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("in use by another sessionfs daemon (pid {who})"),
            ));
        }
        Err((_, e)) => return Err(e.into()),
    };
    lock.set_len(0)?;
    lock.seek(io::SeekFrom::Start(0))?;
    match write!(lock, "{}", std::process::id()) {
        // The pid is for the message above only: a full state dir must not stop the
        // journal from starting (it drops records into a gap until space returns).
        Err(e) if !is_full(&e) => return Err(e),
        _ => {}
    }
    Ok(lock)
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
    #[serde(default, borrow)]
    op: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    result: std::borrow::Cow<'a, str>,
    #[serde(default)]
    file: Option<FileRef>,
    #[serde(default)]
    replaced: Option<FileRef>,
    #[serde(default)]
    after: Option<record::Fingerprint>,
    #[serde(default)]
    flags: Option<Vec<String>>,
}

fn seg_name(n: u32) -> String {
    format!("{n:020}.jsonl")
}

/// The salvage file name of a lineage: `<ino>-<birth_ns>-<uid>`.
fn salvage_name(k: FileRef) -> String {
    format!("{}-{}-{}", k.ino, k.birth_ns, k.uid)
}

/// The lineage a salvage file name stands for (`None` for other names: salvage files
/// of older versions, named by escaped path).
fn parse_salvage_name(n: &str) -> Option<FileRef> {
    let mut it = n.splitn(3, '-');
    let ino = it.next()?.parse().ok()?;
    // birth_ns may be negative (before 1970): the uid is after the last '-'.
    let rest = &n[n.find('-')? + 1..];
    let (birth, uid) = rest.rsplit_once('-')?;
    Some(FileRef {
        ino,
        birth_ns: birth.parse().ok()?,
        uid: uid.parse().ok()?,
    })
}

/// Give an open file exactly the permission bits `mode` (the umask may have taken
/// bits off at creation, or the file predates the mode rule).
fn fix_mode(f: &File, mode: u32) -> io::Result<()> {
    if f.metadata()?.permissions().mode() & 0o7777 != mode {
        f.set_permissions(Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Create a directory of the journal (mode 0700, parents too) or make an existing one
/// 0700.
fn private_dir(p: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(p)?;
    if fs::metadata(p)?.permissions().mode() & 0o7777 != DIR_MODE {
        fs::set_permissions(p, Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

/// A reconcile record of a file whose last known path was gone at start
/// (`crate::reconcile`): the path ends there, as after an unlink.
fn gone(op: &str, flags: Option<&[String]>) -> bool {
    matches!(op, "external" | "unjournaled") && flags.is_some_and(|f| f.iter().any(|x| x == "gone"))
}

/// Replace `<dir>/next_seq` by `v`: temp file (mode 0600), fsync, rename, fsync of the
/// directory. Rare: once per [`RESERVE_BLOCK`] seqs, at open and at shutdown.
fn write_next_seq(dir: &Path, v: u64) -> io::Result<()> {
    let tmp = dir.join("next_seq.tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    fix_mode(&f, FILE_MODE)?;
    f.write_all(format!("{v}\n").as_bytes())?;
    f.sync_data()?;
    fs::rename(&tmp, dir.join("next_seq"))?;
    File::open(dir)?.sync_all()
}

/// Drop whole old segments past the size or age bound (never the current one). Only
/// in-memory work: the files are queued in `st.unlink` for the writer thread. Paths
/// left without any record lose their index.
fn retain(st: &mut State, opts: &JournalOptions, now: SystemTime) {
    let mut dropped = false;
    while st.segments.len() > 1 {
        let total: u64 = st.segments.iter().map(|s| s.len).sum();
        let first = st.segments.front().expect("len > 1");
        let old = now.duration_since(first.modified).unwrap_or_default() > opts.max_age;
        if total <= opts.max_bytes && !old {
            break;
        }
        let seg = st.segments.pop_front().expect("checked");
        st.all_base = st.segments.front().map_or(st.all_base, |s| s.view_start);
        for pi in st.files.values_mut() {
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
        st.unlink.push(seg.path);
        dropped = true;
    }
    if dropped {
        // A file with no retained record starts afresh (fseq 1), as after a restart.
        st.files.retain(|_, pi| !pi.locs.is_empty());
        let State {
            files,
            last_at,
            alias,
            ..
        } = &mut *st;
        last_at.retain(|_, k| files.contains_key(k));
        alias.retain(|_, k| files.contains_key(k));
        if st.files.capacity() > 4 * st.files.len().max(1024) {
            st.files.shrink_to_fit();
        }
    }
}

impl Journal {
    /// Open (or create, mode 0700) the state dir, rebuild the index from the retained
    /// segments (a torn last line from a crash is cut off), continue `seq`/`fseq`,
    /// reserve the first block of seqs in `next_seq`, and start the writer thread.
    ///
    /// Errors: I/O errors creating or reading the state dir, or writing `next_seq`.
    pub fn open(opts: JournalOptions) -> io::Result<Journal> {
        Self::open_with_block(opts, RESERVE_BLOCK)
    }

    /// [`Journal::open`] with `block` seqs per reservation (tests use small blocks).
    fn open_with_block(mut opts: JournalOptions, block: u64) -> io::Result<Journal> {
        // Retention never drops the segment being written: with segments of at most
        // an eighth of the bound, the journal overshoots it by at most that much.
        opts.segment_bytes = opts
            .segment_bytes
            .min((opts.max_bytes / 8).max(MIN_SEGMENT_BYTES));
        // The state dir may be shared with other files (the daemon's log): only created
        // 0700 when missing, never chmod-ed. Its subdirectories are the journal's own.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&opts.state_dir)?;
        let lock = lock_state_dir(&opts.state_dir)?;
        let segdir = opts.state_dir.join("segments");
        let salvdir = opts.state_dir.join("salvage");
        private_dir(&segdir)?;
        private_dir(&salvdir)?;
        let salvage = salvage::SalvageStore::open(salvdir, opts.salvage)?;
        let mut nums: Vec<u32> = fs::read_dir(&segdir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".jsonl")?.parse().ok())
            .collect();
        nums.sort_unstable();
        let mut st = State {
            next_seq: 1,
            reserved: 1,
            block: block.max(1),
            reserve_asked: false,
            gap: None,
            last_errno: None,
            files: HashMap::new(),
            alias: HashMap::new(),
            last_at: HashMap::new(),
            segments: VecDeque::new(),
            all_base: 0,
            unlink: Vec::new(),
            dirty: false,
            disk_last: 0,
            urgent: false,
        };
        if let Ok(s) = fs::read_to_string(opts.state_dir.join("next_seq")) {
            st.next_seq = s.trim().parse().unwrap_or(1).max(1);
        }
        // A clean shutdown leaves exactly the next seq; a daemon that died leaves its
        // reservation, ahead of the last seq it wrote.
        let from_file = st.next_seq;
        let mut last_write = None;
        let mut view = 0u64;
        for n in nums {
            let path = segdir.join(seg_name(n));
            let (len, file) = scan_segment(&path, n, &mut st)?;
            let _ = fix_mode(&file, FILE_MODE);
            let modified = file
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::now());
            last_write = Some(modified);
            st.segments.push_back(Segment {
                n,
                path,
                len,
                flushed: len,
                tail: Vec::new(),
                view_start: view,
                reader: Some(Arc::new(file)),
                modified,
            });
            view += len;
        }
        retain(&mut st, &opts, SystemTime::now());
        // Not a FUSE request: unlink here.
        for p in std::mem::take(&mut st.unlink) {
            let _ = fs::remove_file(p);
        }
        let reserved = st.next_seq + st.block;
        match write_next_seq(&opts.state_dir, reserved) {
            Ok(()) => st.reserved = reserved,
            Err(e) if is_full(&e) => {
                // Nothing reserved: no seq is handed out (records go into a gap) until
                // the writer thread manages to write the reservation.
                tracing::error!(error = %e, "journal: state dir full at start; records are dropped (and counted in a gap record) until a seq reservation can be written");
                st.reserved = st.next_seq;
                st.last_errno = e.raw_os_error();
            }
            Err(e) => return Err(e),
        }
        // The seqs on disk end below the reservation the file holds.
        let unclean = last_write.filter(|_| st.disk_last + 1 < from_file);
        let (tx, rx) = crossbeam_channel::unbounded();
        let after_seq = st.disk_last;
        let shared = Arc::new(Shared {
            state: Mutex::new(st),
            opts,
            loss: Mutex::new(None),
        });
        let sh = shared.clone();
        let writer = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer_loop(sh, rx))?;
        let j = Journal {
            shared,
            salvage,
            tx,
            writer: Mutex::new(Some(writer)),
            lock: Mutex::new(Some(lock)),
        };
        if let Some(at) = unclean {
            tracing::warn!(
                after_seq,
                "journal: the daemon before this one died without a clean shutdown; records it had not written are lost (a gap record says so)"
            );
            j.append(Record {
                op: record::Op::Gap,
                result: "ok".into(),
                gap: Some(record::GapInfo {
                    lost: 0,
                    lost_unknown: true,
                    after_seq,
                    first_ts: crate::clock::rfc3339(at),
                    last_ts: crate::clock::now_rfc3339(),
                    reason: "unclean_shutdown".into(),
                    error: None,
                    paths: Vec::new(),
                    paths_truncated: false,
                }),
                ..Default::default()
            });
        }
        Ok(j)
    }

    /// Assign `seq`/`fseq`, make the record visible to readers, queue it for disk.
    /// Returns the seq, or 0 when the record was dropped.
    ///
    /// Never waits on disk I/O: segment files are created, written and unlinked, and the
    /// seq reservation in `next_seq` extended, by the writer thread. A record is dropped
    /// (counted in the next `gap` record, see [`record::GapInfo`]) when the unwritten
    /// records already hold [`JournalOptions::max_pending`] bytes, when no reserved seq
    /// is left (so that no seq is handed out that a restart after a crash could hand
    /// out again), and while such a gap is open.
    pub fn append(&self, rec: Record) -> u64 {
        Self::append_with(&self.shared, Some(&self.tx), rec)
    }

    /// [`Journal::append`] for the journal's own threads (`tx`: where to wake the
    /// writer thread; `None` on the writer thread itself).
    fn append_with(shared: &Shared, tx: Option<&Sender<Msg>>, mut rec: Record) -> u64 {
        let opts = &shared.opts;
        // Lock records are what a takeover post-mortem starts from: a `kill -9` may
        // lose only the last few ms of them, not a whole batch window.
        let urgent = matches!(
            rec.op,
            record::Op::LockAcquire
                | record::Op::LockRelease
                | record::Op::LockSteal
                | record::Op::LockReap
        );
        let mut st = shared.state.lock();
        if !admit(&mut st, opts, &mut rec, tx) {
            if !st.dirty
                && let Some(tx) = tx
            {
                st.dirty = true;
                let _ = tx.send(Msg::Dirty);
            }
            return 0;
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        rec.seq = seq;
        // Stamped under the lock, so `ts` never goes backwards as `seq` goes up
        // (unless the wall clock itself is stepped back).
        if rec.ts.is_empty() {
            rec.ts = crate::clock::now_rfc3339();
        }
        fn ix(rec: &Record, seq: u64) -> Indexed<'_> {
            Indexed {
                seq,
                to: rec
                    .to
                    .as_deref()
                    .filter(|_| matches!(rec.op, record::Op::Rename | record::Op::Link)),
                file: rec.file,
                replaced: rec.replaced,
                renamed_over: rec.op == record::Op::Rename && rec.result == "ok",
                disk_fseq: None,
                after: rec.after.filter(|_| rec.result == "ok"),
                unlinked: rec.result == "ok"
                    && (rec.op == record::Op::Unlink
                        || gone(rec.op.as_str(), rec.flags.as_deref())),
            }
        }
        rec.fseq = st.next_fseq(&ix(&rec, seq));
        let mut bytes = serde_json::to_vec(&rec).unwrap_or_else(|e| {
            format!("{{\"seq\":{seq},\"op\":\"error\",\"result\":\"serialize: {e}\"}}").into_bytes()
        });
        bytes.push(b'\n');
        // Current segment, rolling over when full.
        let need_new = st
            .segments
            .back()
            .is_none_or(|s| s.len > 0 && s.len + bytes.len() as u64 > opts.segment_bytes);
        if need_new {
            new_segment(&mut st, opts);
        }
        let seg = st.segments.back_mut().expect("a current segment");
        let off = seg.len;
        seg.tail.extend_from_slice(&bytes);
        seg.len += bytes.len() as u64;
        let n = seg.n;
        let len = bytes.len() as u64;
        st.index(ix(&rec, seq), &rec.path, n, off, len);
        if need_new {
            // After indexing this record: it lives in the current segment, which is
            // never dropped, so its path keeps its index (and fseq).
            retain(&mut st, opts, SystemTime::now());
        }
        if !st.dirty
            && let Some(tx) = tx
        {
            st.dirty = true;
            let _ = tx.send(Msg::Dirty);
        }
        if urgent
            && !st.urgent
            && let Some(tx) = tx
        {
            st.urgent = true;
            let _ = tx.send(Msg::Urgent);
        }
        seq
    }

    /// Store removed transcript bytes of file `file`, synchronously: when this returns
    /// they are in `<state-dir>/salvage/<ino>-<birth_ns>-<uid>` of the file's lineage
    /// (see the module doc; in the page cache, not fsynced: they survive a `kill -9` of
    /// the daemon, not a power loss), so the caller may go on to the destructive
    /// operation. Lines the file's salvage already holds are not stored again; bytes
    /// the store's bounds evict are journaled as `salvage-evict` records.
    ///
    /// Returns the span `[start, end)` (bytes) the new lines took in the file's salvage
    /// (empty when all were held). On an I/O error (logged) nothing is stored.
    pub fn salvage(&self, file: FileRef, bytes: &[u8]) -> (u64, u64) {
        let key = self.shared.state.lock().lineage(file);
        let (span, evicted) = self.salvage.append(&salvage_name(key), bytes);
        for e in evicted {
            self.record_eviction(e);
        }
        span
    }

    /// Journal one eviction of the salvage store.
    fn record_eviction(&self, e: salvage::Eviction) {
        let file = parse_salvage_name(&e.name);
        tracing::warn!(file = %e.name, bytes = e.bytes, lines = e.lines, reason = e.reason, "salvage bound evicted removed lines");
        let path = file
            .and_then(|f| {
                let st = self.shared.state.lock();
                st.last_at
                    .iter()
                    .find(|(_, k)| **k == f)
                    .map(|(p, _)| p.clone())
            })
            .unwrap_or_default();
        self.append(Record {
            op: record::Op::SalvageEvict,
            path,
            file,
            result: "ok".into(),
            len: Some(e.bytes),
            salvage_evicted: Some(record::SalvageEvicted {
                bytes: e.bytes,
                lines: e.lines,
                reason: e.reason.into(),
            }),
            pid: Some(std::process::id()),
            comm: Some("sessionfs".into()),
            ..Default::default()
        });
    }

    /// Rewind the salvage store of `file` after a conservative [`Journal::salvage`]: if
    /// the store is exactly `expect_len` bytes long (nothing else was salvaged for this
    /// file since) and `start <= expect_len`, its bytes from `start` on are replaced by
    /// the lines of `keep` it does not hold before `start`, and this returns true.
    /// Otherwise the store is left untouched and this returns false. `keep` is written
    /// over the old bytes before the file is cut, so a lost rewind (crash) leaves at
    /// worst extra salvage, never too little.
    pub fn salvage_rewind(&self, file: FileRef, start: u64, expect_len: u64, keep: &[u8]) -> bool {
        let key = self.shared.state.lock().lineage(file);
        self.salvage
            .rewind(&salvage_name(key), start, expect_len, keep)
    }

    /// Current byte length of a view.
    pub fn view_len(&self, view: View<'_>) -> u64 {
        let st = self.shared.state.lock();
        match view {
            View::All => st.all_len(),
            View::File(f) => st.files.get(&st.lineage(f)).map_or(0, FileIndex::len),
            View::_Never(_) => 0,
        }
    }

    /// Bytes `[offset, offset+size)` of a view (shorter at the end).
    pub fn read(&self, view: View<'_>, offset: u64, size: usize) -> Vec<u8> {
        // Plan the pieces under the lock; read file bytes outside it.
        let mut pieces: Vec<Piece> = Vec::new();
        {
            let st = self.shared.state.lock();
            let mut want = size;
            match view {
                View::All => {
                    let mut pos = offset + st.all_base;
                    let idx = st.segments.partition_point(|s| s.view_start + s.len <= pos);
                    for s in st.segments.iter().skip(idx) {
                        if want == 0 {
                            break;
                        }
                        let in_seg = pos - s.view_start;
                        let n = ((s.len - in_seg) as usize).min(want);
                        if n == 0 {
                            continue;
                        }
                        plan(s, in_seg, n, &mut pieces);
                        want -= n;
                        pos += n as u64;
                    }
                }
                View::_Never(_) => {}
                View::File(f) => {
                    let Some(pi) = st.files.get(&st.lineage(f)) else {
                        return Vec::new();
                    };
                    let abs = offset + pi.base;
                    let first = pi.locs.partition_point(|l| l.end <= abs);
                    let mut pos = abs;
                    for k in first..pi.locs.len() {
                        if want == 0 {
                            break;
                        }
                        let l = pi.locs[k];
                        let start = if k == 0 { pi.base } else { pi.locs[k - 1].end };
                        let skip = pos - start;
                        let n = ((l.end - pos) as usize).min(want);
                        let i = st.segments.partition_point(|s| s.n < l.seg);
                        if let Some(s) = st.segments.get(i).filter(|s| s.n == l.seg) {
                            plan(s, l.off as u64 + skip, n, &mut pieces);
                        }
                        want -= n;
                        pos += n as u64;
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(size.min(1 << 20));
        for (src, off, n) in pieces {
            let f = match src {
                Src::Mem(mem) => {
                    out.extend_from_slice(&mem);
                    continue;
                }
                Src::File(f) => f,
                Src::Open(p) => match File::open(&p) {
                    Ok(f) => Arc::new(f),
                    Err(_) => break,
                },
            };
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
        out
    }

    /// Latest seq of a file's view.
    pub fn latest_seq(&self, file: FileRef) -> Option<u64> {
        let st = self.shared.state.lock();
        st.files
            .get(&st.lineage(file))
            .map(|p| p.latest_seq)
            .filter(|s| *s > 0)
    }

    /// The lineage of the last record that named `path` (mount-relative, spelled as in
    /// records), while it has retained records: the view of a name whose file is gone.
    pub fn last_file_at(&self, path: &str) -> Option<FileRef> {
        self.shared.state.lock().last_at.get(path).copied()
    }

    /// Byte length of the salvage store of `file` (0 when there is none).
    pub fn salvage_len(&self, file: FileRef) -> u64 {
        let key = self.shared.state.lock().lineage(file);
        self.salvage.len(&salvage_name(key))
    }

    /// Every file whose last change through the mount left it in place (not unlinked),
    /// with its lineage, mount-relative path and backing fingerprint after that change:
    /// what the reconciliation at start compares with the files as they are.
    pub fn last_known(&self) -> Vec<(FileRef, String, record::Fingerprint)> {
        let st = self.shared.state.lock();
        st.files
            .iter()
            .filter_map(|(k, fi)| fi.last.as_ref().map(|(p, fp)| (*k, p.clone(), *fp)))
            .collect()
    }

    /// The seq the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.shared.state.lock().next_seq
    }

    /// Total bytes of the salvage store.
    pub fn salvage_total(&self) -> u64 {
        self.salvage.total()
    }

    /// Bytes `[offset, offset+size)` of the salvage store of `file` (shorter at the end).
    pub fn read_salvage(&self, file: FileRef, offset: u64, size: usize) -> Vec<u8> {
        let key = self.shared.state.lock().lineage(file);
        self.salvage.read(&salvage_name(key), offset, size)
    }

    /// Wait until everything accepted so far is on disk (page cache).
    pub fn sync(&self) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.tx.send(Msg::Sync(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(30));
        }
    }

    /// Flush everything accepted so far to disk (and the record of an open gap),
    /// retrying for up to 1 s while writes fail, stop the writer thread and write the
    /// exact next seq to `next_seq` (a clean restart continues without a gap; if that
    /// write fails, the reservation on disk stays: the next start jumps ahead, never
    /// back). What could not be written is left in [`Journal::loss`] for the caller to
    /// report. Idempotent.
    pub fn shutdown(&self) {
        let handle = self.writer.lock().take();
        if let Some(h) = handle {
            let _ = self.tx.send(Msg::Shutdown);
            let _ = h.join();
            let mut st = self.shared.state.lock();
            *self.shared.loss.lock() = loss_of(&st, &self.shared.opts);
            match write_next_seq(&self.shared.opts.state_dir, st.next_seq) {
                // Appends after this (none expected) are dropped: nothing is reserved.
                Ok(()) => st.reserved = st.next_seq,
                Err(e) => tracing::warn!(
                    error = %e,
                    reserved = st.reserved,
                    "journal: cannot write the exact next seq at shutdown; the next start continues at the reservation (seq jumps ahead, never repeats)"
                ),
            }
        }
        // Flushed and stopped: another daemon may take the state dir now.
        self.lock.lock().take();
    }

    /// After [`Journal::shutdown`]: the records it could not write, if any (`None`
    /// when everything accepted, and a record of every gap, is on disk). One line
    /// for the user with `to_string()`.
    pub fn loss(&self) -> Option<Loss> {
        self.shared.loss.lock().clone()
    }

    /// Tests: stop the writer thread without writing anything more, as a `kill -9`
    /// would; what was not written yet is lost.
    #[cfg(test)]
    fn crash(self) {
        if let Some(h) = self.writer.lock().take() {
            let _ = self.tx.send(Msg::Crash);
            let _ = h.join();
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Where a planned piece of a read comes from.
enum Src {
    /// `pread` this file (outside the state lock).
    File(Arc<File>),
    /// Open this file first (a segment without a read handle; not expected).
    Open(PathBuf),
    /// These bytes, copied from the in-memory tail.
    Mem(Vec<u8>),
}

/// A planned read: source, offset in the segment, length.
type Piece = (Src, u64, usize);

/// Plan reading `n` bytes at `off` of segment `s`: the flushed part from its file, the
/// rest from its in-memory tail. No I/O (called under the state lock).
fn plan(s: &Segment, off: u64, n: usize, pieces: &mut Vec<Piece>) {
    let file = || match &s.reader {
        Some(f) => Src::File(f.clone()),
        None => Src::Open(s.path.clone()),
    };
    let end = off + n as u64;
    if end <= s.flushed {
        pieces.push((file(), off, n));
        return;
    }
    let mut from = off;
    if off < s.flushed {
        // Straddles the flushed boundary: the head from the file, the rest from memory.
        let head = (s.flushed - off) as usize;
        pieces.push((file(), off, head));
        from = s.flushed;
    }
    let a = (from - s.flushed) as usize;
    let b = ((end - s.flushed) as usize).min(s.tail.len());
    let mem = s.tail[a.min(b)..b].to_vec();
    let len = mem.len();
    pieces.push((Src::Mem(mem), from, len));
}

/// Start a new current segment, in memory only: the writer thread creates its file.
fn new_segment(st: &mut State, opts: &JournalOptions) {
    let n = st.segments.back().map_or(0, |s| s.n + 1);
    let view_start = st
        .segments
        .back()
        .map_or(st.all_base, |s| s.view_start + s.len);
    st.segments.push_back(Segment {
        n,
        path: opts.state_dir.join("segments").join(seg_name(n)),
        len: 0,
        flushed: 0,
        tail: Vec::new(),
        view_start,
        reader: None,
        modified: SystemTime::now(),
    });
}

/// Index one segment file into `st`; cut a torn last line. Returns its length and a
/// read handle on it.
fn scan_segment(path: &Path, n: u32, st: &mut State) -> io::Result<(u64, File)> {
    let f = File::open(path)?;
    let mut r = io::BufReader::with_capacity(1 << 20, f.try_clone()?);
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
            st.disk_last = st.disk_last.max(s.seq);
            let linkish = matches!(&*s.op, "rename" | "link");
            st.index(
                Indexed {
                    seq: s.seq,
                    to: s.to.as_deref().filter(|_| linkish),
                    file: s.file,
                    replaced: s.replaced,
                    renamed_over: s.op == "rename" && s.result == "ok",
                    disk_fseq: Some(s.fseq),
                    after: s.after.filter(|_| s.result == "ok"),
                    unlinked: s.result == "ok"
                        && (s.op == "unlink" || gone(&s.op, s.flags.as_deref())),
                },
                &s.path,
                n,
                off,
                k as u64,
            );
        }
        off += k as u64;
    }
    Ok((off, f))
}

/// What a clean shutdown leaves unwritten: the records in the segments' unwritten
/// tails (the last seqs handed out; an unwritten `gap` record counts as its lost
/// records) and the records of a gap still open. `None` when nothing is.
fn loss_of(st: &State, opts: &JournalOptions) -> Option<Loss> {
    let mut unwritten = 0u64;
    let mut dropped = st.gap.as_ref().map_or(0, |g| g.lost);
    for s in &st.segments {
        // Every record ends with its own newline (JSON escapes the ones inside), and
        // a record only partly written still has its newline in the tail.
        for line in s.tail.split_inclusive(|b| *b == b'\n') {
            if line.last() != Some(&b'\n') {
                continue;
            }
            unwritten += 1;
            // `{"seq":N,"fseq":N,"ts":"…","op":"gap",…`: a path comes later.
            let head = &line[..line.len().min(128)];
            if head.windows(11).any(|w| w == br#""op":"gap","#)
                && let Ok(r) = serde_json::from_slice::<Record>(line)
            {
                dropped += r.gap.map_or(0, |g| g.lost);
            }
        }
    }
    if unwritten == 0 && dropped == 0 {
        return None;
    }
    Some(Loss {
        unwritten,
        unwritten_seqs: (unwritten > 0).then(|| (st.next_seq - unwritten, st.next_seq - 1)),
        dropped,
        error: st.last_errno.map(errno_text),
        state_dir: opts.state_dir.clone(),
    })
}

/// The writer thread's own state.
struct Writer {
    /// Write handles (O_RDWR|O_APPEND; shared with readers) of segments being written.
    files: HashMap<u32, Arc<File>>,
    /// A segment open or write is failing: logged once until writes succeed again.
    write_failing: bool,
    /// Writing `next_seq` is failing: logged once until it succeeds again.
    reserve_failing: bool,
    /// Records are unwritten, a gap is open or the reservation is short: retry every
    /// [`JournalOptions::retry_every`] even if no record comes.
    retry: bool,
    /// Records are unwritten or a gap is open (a shutdown retries a little).
    unsettled: bool,
    /// The open gap has been logged.
    gap_logged: bool,
    last_retain: Instant,
    /// Last `malloc_trim`.
    last_trim: Instant,
}

/// How often the writer gives freed heap memory back to the kernel while records flow.
/// Record serialisation on several threads fragments the heap; without a trim, the
/// daemon's RSS after 1,000,000 records stays ~10 MiB above what it uses.
const TRIM_EVERY: Duration = Duration::from_secs(2);

fn writer_loop(sh: Arc<Shared>, rx: Receiver<Msg>) {
    let every = sh.opts.retain_every.max(Duration::from_millis(10));
    let retry_every = sh.opts.retry_every.max(Duration::from_millis(10));
    let mut w = Writer {
        files: HashMap::new(),
        write_failing: false,
        reserve_failing: false,
        // Open may have found the state dir full (nothing reserved).
        retry: true,
        unsettled: false,
        gap_logged: false,
        last_retain: Instant::now(),
        last_trim: Instant::now(),
    };
    loop {
        let mut wait = every.saturating_sub(w.last_retain.elapsed());
        if w.retry {
            wait = wait.min(retry_every);
        }
        let first = match rx.recv_timeout(wait) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                flush(&sh, &mut w);
                return;
            }
        };
        let mut syncs = Vec::new();
        let mut stop = false;
        match first {
            None => {}
            Some(Msg::Shutdown) => stop = true,
            #[cfg(test)]
            Some(Msg::Crash) => return,
            Some(Msg::Sync(s)) => syncs.push(s),
            Some(Msg::Reserve) => reserve_ahead(&sh, &mut w),
            Some(m @ (Msg::Dirty | Msg::Urgent)) => {
                // Batch: give concurrent appends up to `batch_window` to join (a lock
                // record: `URGENT_WINDOW`).
                let mut deadline = Instant::now()
                    + if matches!(m, Msg::Urgent) {
                        URGENT_WINDOW.min(sh.opts.batch_window)
                    } else {
                        sh.opts.batch_window
                    };
                loop {
                    match rx.recv_deadline(deadline) {
                        Ok(Msg::Shutdown) => {
                            stop = true;
                            break;
                        }
                        #[cfg(test)]
                        Ok(Msg::Crash) => return,
                        Ok(Msg::Sync(s)) => {
                            syncs.push(s);
                            break;
                        }
                        Ok(Msg::Reserve) => reserve_ahead(&sh, &mut w),
                        Ok(Msg::Dirty) => {}
                        Ok(Msg::Urgent) => {
                            deadline = deadline.min(Instant::now() + URGENT_WINDOW);
                        }
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => {
                            stop = true;
                            break;
                        }
                    }
                }
            }
        }
        if w.last_retain.elapsed() >= every {
            // Age retention even when no segment rolls over (idle or slow mounts).
            w.last_retain = Instant::now();
            retain(&mut sh.state.lock(), &sh.opts, SystemTime::now());
        }
        flush(&sh, &mut w);
        if w.last_trim.elapsed() >= TRIM_EVERY {
            w.last_trim = Instant::now();
            // SAFETY: malloc_trim only returns free heap memory to the kernel.
            unsafe { libc::malloc_trim(0) };
        }
        for s in syncs {
            let _ = s.send(());
        }
        if stop {
            // Writes failing at a clean shutdown: give a state dir that is being
            // freed a moment before the rest counts as lost.
            let end = Instant::now() + SHUTDOWN_RETRY;
            while w.unsettled && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(100));
                flush(&sh, &mut w);
            }
            return;
        }
    }
}

/// Write `buf` to the end of `f` with as many `write(2)` calls as it takes. Returns the
/// bytes that reached the file and the error that stopped it, if any.
fn write_some(mut f: &File, buf: &[u8]) -> (usize, Option<io::Error>) {
    let mut done = 0;
    while done < buf.len() {
        match f.write(&buf[done..]) {
            Ok(0) => return (done, Some(io::ErrorKind::WriteZero.into())),
            Ok(k) => done += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (done, Some(e)),
        }
    }
    (done, None)
}

/// Keep the seq reservation ahead, write every segment tail, close an open gap with its
/// `gap` record once nothing is pending and seqs are reserved, unlink the segments
/// retention dropped, and decide whether to retry on the timer.
fn flush(sh: &Shared, w: &mut Writer) {
    // First the reservation: appends drop records when it runs out.
    reserve_ahead(sh, w);
    let mut ok = write_tails(sh, w);
    if ok {
        let close = {
            let st = sh.state.lock();
            st.gap.is_some() && st.pending() == 0 && st.next_seq < st.reserved
        };
        if close {
            let seq = Journal::append_with(
                sh,
                None,
                Record {
                    op: record::Op::Gap,
                    ..Default::default()
                },
            );
            ok = write_tails(sh, w);
            if seq > 0 {
                tracing::warn!(
                    seq,
                    written = ok,
                    "journal: state dir writable again; a gap record counts the records dropped meanwhile"
                );
            }
        }
    }
    if ok && w.write_failing {
        tracing::info!("journal writes succeed again");
        w.write_failing = false;
    }
    let unlink = {
        let mut st = sh.state.lock();
        // Close files of segments that are neither current nor still being written.
        let current = st.segments.back().map(|s| s.n);
        w.files.retain(|n, _| {
            Some(*n) == current || st.segments.iter().any(|s| s.n == *n && !s.tail.is_empty())
        });
        std::mem::take(&mut st.unlink)
    };
    // After the writes above: a dropped segment's file, even if it was (re)created by
    // this flush, is gone afterwards.
    for p in unlink {
        if let Err(e) = fs::remove_file(&p)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %p.display(), error = %e, "journal: cannot remove a dropped segment");
        }
    }
    reserve_ahead(sh, w);
    let st = sh.state.lock();
    w.unsettled = st.gap.is_some() || st.pending() > 0;
    w.retry = w.unsettled || w.reserve_failing || st.next_seq >= st.reserved;
    let opened = match &st.gap {
        Some(g) if !w.gap_logged => Some((g.reason, g.after_seq, g.lost, st.pending())),
        _ => None,
    };
    w.gap_logged = st.gap.is_some();
    drop(st);
    if let Some((reason, after_seq, lost, pending_bytes)) = opened {
        tracing::error!(
            reason,
            after_seq,
            lost,
            pending_bytes,
            "journal: dropping records until the state dir can be written again (a gap record will say how many)"
        );
    }
}

/// Write the segment tails as they are now, oldest segment first, in pieces of at most
/// [`WRITE_CHUNK`] bytes, stopping at the first failure (so what is on disk is always
/// a prefix of the journal). Readers keep seeing the bytes throughout: a tail is
/// trimmed, by exactly the bytes that reached the file, only after the write. Returns
/// false when a write or an open failed (logged once until writes succeed again).
fn write_tails(sh: &Shared, w: &mut Writer) -> bool {
    let work: Vec<(u32, PathBuf, u64)> = {
        let mut st = sh.state.lock();
        st.dirty = false;
        st.urgent = false;
        st.segments
            .iter()
            .filter(|s| !s.tail.is_empty())
            .map(|s| (s.n, s.path.clone(), s.len))
            .collect()
    };
    let fail = |w: &mut Writer, e: io::Error, what: &str, path: &Path| {
        if !w.write_failing {
            tracing::error!(path = %path.display(), error = %e, "journal segment {what} failed; records stay in memory (up to --journal-max-pending) and are retried every second");
        }
        w.write_failing = true;
        if let Some(n) = e.raw_os_error() {
            sh.state.lock().last_errno = Some(n);
        }
    };
    // While writes fail (disk full), each retry first copies a small piece: a full
    // chunk copied only to fail would cost [`WRITE_CHUNK`] bytes of memory and copying
    // at every batch.
    let mut limit = if w.write_failing {
        64 << 10
    } else {
        WRITE_CHUNK
    };
    for (n, path, end) in work {
        let f = match w.files.get(&n) {
            Some(f) => f.clone(),
            None => {
                let r = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .create(true)
                    .mode(FILE_MODE)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .and_then(|f| fix_mode(&f, FILE_MODE).map(|()| f));
                match r {
                    Ok(f) => {
                        let f = Arc::new(f);
                        w.files.insert(n, f.clone());
                        f
                    }
                    Err(e) => {
                        fail(w, e, "open", &path);
                        return false;
                    }
                }
            }
        };
        loop {
            let (at, bytes) = {
                let st = sh.state.lock();
                let Some(s) = st.segments.iter().find(|s| s.n == n) else {
                    break; // dropped by retention meanwhile
                };
                if s.flushed >= end || s.tail.is_empty() {
                    break;
                }
                let k = ((end - s.flushed) as usize).min(s.tail.len()).min(limit);
                (s.flushed, s.tail[..k].to_vec())
            };
            let (done, err) = write_some(&f, &bytes);
            drop(bytes);
            if done > 0 {
                let mut st = sh.state.lock();
                if let Some(s) = st.segments.iter_mut().find(|s| s.n == n) {
                    debug_assert_eq!(s.flushed, at);
                    s.tail.drain(..done);
                    // A burst can grow the tail; give the memory back once written (a
                    // capacity kept by each of dozens of segments adds up to ~100 MiB).
                    if s.tail.is_empty() {
                        s.tail = Vec::new();
                    } else if s.tail.capacity() > 4 * s.tail.len().max(64 << 10) {
                        s.tail.shrink_to(s.tail.len().max(64 << 10));
                    }
                    s.flushed += done as u64;
                    s.modified = SystemTime::now();
                    if s.reader.is_none() {
                        s.reader = Some(f.clone());
                    }
                }
            }
            if let Some(e) = err {
                fail(w, e, "write", &path);
                return false;
            }
            limit = WRITE_CHUNK;
        }
    }
    true
}

/// Keep the seq reservation at least half a block ahead of `next_seq` (writer thread).
/// Appends hand out only reserved seqs, so a restart after a crash, which continues at
/// the reservation, never repeats one.
fn reserve_ahead(sh: &Shared, w: &mut Writer) {
    let target = {
        let mut st = sh.state.lock();
        if st.reserved.saturating_sub(st.next_seq) > st.block / 2 {
            st.reserve_asked = false;
            return;
        }
        st.next_seq + st.block
    };
    if let Err(e) = write_next_seq(&sh.opts.state_dir, target) {
        if !w.reserve_failing {
            tracing::error!(error = %e, "journal: cannot write next_seq; records are dropped (and counted in a gap record) once the reserved seqs run out; retrying every second");
        }
        w.reserve_failing = true;
        sh.state.lock().last_errno = e.raw_os_error();
        return;
    }
    w.reserve_failing = false;
    let mut st = sh.state.lock();
    st.reserved = st.reserved.max(target);
    st.reserve_asked = false;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in file identity per path (tests name files by path).
    fn fr(path: &str) -> FileRef {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        path.hash(&mut h);
        FileRef {
            ino: h.finish(),
            birth_ns: 1,
            uid: 0,
        }
    }

    fn rec(path: &str) -> Record {
        Record {
            file: Some(fr(path)),
            op: record::Op::Write,
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
        r.op = record::Op::Rename;
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
        let a = lines(&j.read(View::File(fr("a")), 0, 1 << 20));
        assert_eq!(
            a.iter()
                .map(|r| r["fseq"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            (1..=6).collect::<Vec<_>>()
        );
        assert_eq!(
            j.last_file_at("c"),
            Some(fr("a")),
            "the renamed file's view is found under its new name"
        );
        assert_eq!(j.view_len(View::File(fr("c"))), 0, "a name is not a view");
        // Arbitrary offsets and sizes reassemble the same bytes.
        let pa = j.read(View::File(fr("a")), 0, 1 << 20);
        let mut pieced = Vec::new();
        let mut off = 0;
        while off < pa.len() {
            let chunk = j.read(View::File(fr("a")), off as u64, 7);
            assert!(!chunk.is_empty());
            off += chunk.len();
            pieced.extend(chunk);
        }
        assert_eq!(pieced, pa);
        assert_eq!(j.latest_seq(fr("a")), Some(11));
        // After the writer flushed, the same bytes come from disk.
        j.sync();
        assert_eq!(j.read(View::All, 0, 1 << 20), all);
    }

    /// Views follow files, not names: a new file under an old name starts empty; a
    /// rename over a file of the same owner continues its view (and its salvage); over
    /// another owner's file it does not; a chown starts the new owner's view. The
    /// same after a reopen (the aliases are replayed from the records).
    #[test]
    fn views_follow_files_and_owners() {
        let d = tempfile::tempdir().unwrap();
        let f = |ino, uid| FileRef {
            ino,
            birth_ns: 7,
            uid,
        };
        let at = |path: &str, file: FileRef| Record {
            file: Some(file),
            ..rec(path)
        };
        let (root_t, nobody_t) = (f(10, 0), f(10, 65534));
        let (tmp, other) = (f(11, 0), f(12, 65534));
        {
            let j = Journal::open(JournalOptions::new(d.path().into())).unwrap();
            j.append(at("pub/r.jsonl", root_t));
            j.salvage(root_t, b"secret\n");
            // Same inode number reused by another user's new file: another view.
            j.append(at("pub/r.jsonl", f(10, 65534)));
            assert_eq!(lines(&j.read(View::File(nobody_t), 0, 1 << 20)).len(), 1);
            assert_eq!(j.salvage_len(nobody_t), 0);
            assert_eq!(j.read_salvage(nobody_t, 0, 100), b"");
            // A repair: root's temp file renamed over root's transcript continues it.
            j.append(at("t.tmp", tmp));
            let mut r = at("t.tmp", tmp);
            r.op = record::Op::Rename;
            r.to = Some("pub/r.jsonl".into());
            r.replaced = Some(root_t);
            j.append(r);
            assert_eq!(j.read_salvage(tmp, 0, 100), b"secret\n");
            j.append(at("pub/r.jsonl", tmp));
            assert_eq!(lines(&j.read(View::File(tmp), 0, 1 << 20)).len(), 3);
            // Over another owner's file: nothing is inherited.
            let mut r = at("u.tmp", other);
            r.op = record::Op::Rename;
            r.to = Some("pub/r.jsonl".into());
            r.replaced = Some(tmp);
            j.append(r);
            assert_eq!(j.salvage_len(other), 0);
            assert_eq!(lines(&j.read(View::File(other), 0, 1 << 20)).len(), 1);
        }
        let j = Journal::open(JournalOptions::new(d.path().into())).unwrap();
        assert_eq!(lines(&j.read(View::File(tmp), 0, 1 << 20)).len(), 3);
        assert_eq!(j.read_salvage(tmp, 0, 100), b"secret\n");
        assert_eq!(j.salvage_len(other), 0);
        assert_eq!(lines(&j.read(View::File(nobody_t), 0, 1 << 20)).len(), 1);
        // fseq continues per view after the reopen.
        let s = j.append(at("pub/r.jsonl", tmp));
        let v = lines(&j.read(View::File(tmp), 0, 1 << 20));
        assert_eq!(v.last().unwrap()["seq"].as_u64(), Some(s));
        assert_eq!(v.last().unwrap()["fseq"].as_u64(), Some(4));
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
        let v = lines(&j.read(View::File(fr("x")), 0, 1 << 20));
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
        let pv = lines(&j.read(View::File(fr("p")), 0, 1 << 20));
        assert_eq!(pv.len(), v.len());
        assert_eq!(pv[0]["seq"], v[0]["seq"]);
        j.shutdown();
        // seq continues even past dropped segments.
        let j = Journal::open(JournalOptions::new(d.path().into())).unwrap();
        assert_eq!(j.append(rec("p")), 501);
    }

    #[test]
    fn a_small_size_bound_holds_within_an_eighth() {
        let d = tempfile::tempdir().unwrap();
        let mut o = JournalOptions::new(d.path().into());
        o.max_bytes = 1 << 20; // 1 MiB with the default 16 MiB segments
        let j = Journal::open(o).unwrap();
        for _ in 0..20_000 {
            j.append(rec("p")); // ~200 B each: ~4 MB in all
        }
        j.sync();
        let total: u64 = fs::read_dir(d.path().join("segments"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(total <= (1 << 20) + (1 << 17), "kept {total} bytes");
        assert!(total > 1 << 19, "kept only {total} bytes");
    }

    #[test]
    fn a_state_dir_serves_one_journal_at_a_time() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(JournalOptions::new(d.path().into())).unwrap();
        let e = Journal::open(JournalOptions::new(d.path().into())).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        let mode = fs::metadata(d.path().join("lock")).unwrap().permissions();
        assert_eq!(mode.mode() & 0o777, 0o600);
        j.append(rec("p"));
        j.shutdown();
        // Flushed and stopped: the next daemon takes over and continues the seqs.
        let j2 = Journal::open(JournalOptions::new(d.path().into())).unwrap();
        assert_eq!(j2.append(rec("p")), 2);
    }

    #[test]
    fn salvage_is_stored_exactly() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(JournalOptions::new(d.path().into())).unwrap();
        j.salvage(fr("dir/t.jsonl"), b"line one\n");
        assert_eq!(j.read_salvage(fr("dir/t.jsonl"), 0, 100), b"line one\n");
        j.sync();
        j.salvage(fr("dir/t.jsonl"), b"\xff two\n");
        assert_eq!(j.salvage_len(fr("dir/t.jsonl")), 15);
        assert_eq!(
            j.read_salvage(fr("dir/t.jsonl"), 0, 100),
            b"line one\n\xff two\n"
        );
        assert_eq!(j.read_salvage(fr("dir/t.jsonl"), 5, 6), b"one\n\xff ");
    }

    fn next_seq_file(d: &Path) -> u64 {
        fs::read_to_string(d.join("next_seq"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn salvage_is_on_disk_when_it_returns() {
        let d = tempfile::tempdir().unwrap();
        let mut o = JournalOptions::new(d.path().into());
        // The writer would not get to it in time anyway.
        o.batch_window = Duration::from_secs(30);
        let j = Journal::open(o).unwrap();
        let f = d.path().join("salvage").join(salvage_name(fr("a/b.jsonl")));
        assert_eq!(j.salvage(fr("a/b.jsonl"), b"one\n"), (0, 4));
        assert_eq!(
            fs::read(&f).unwrap(),
            b"one\n",
            "written before salvage returned"
        );
        assert_eq!(j.salvage(fr("a/b.jsonl"), b"two\n"), (4, 8));
        assert_eq!(fs::read(&f).unwrap(), b"one\ntwo\n");
        assert_eq!(j.salvage_len(fr("a/b.jsonl")), 8);
        assert_eq!(j.salvage_len(fr("nothing")), 0);
        assert!(j.read_salvage(fr("nothing"), 0, 10).is_empty());
        // A salvage file "crashes" with the daemon intact: nothing pending in memory.
        j.crash();
        assert_eq!(fs::read(&f).unwrap(), b"one\ntwo\n");
    }

    #[test]
    fn salvage_rewind_keeps_only_what_was_not_written_back() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(JournalOptions::new(d.path().into())).unwrap();
        let p = "t.jsonl";
        assert_eq!(j.salvage(fr(p), b"old\n"), (0, 4));
        // Conservative: every truncated line, before the rewrite.
        let (start, end) = j.salvage(fr(p), b"L1\nL2\nL3\n");
        assert_eq!((start, end), (4, 13));
        // Wrong expected length: untouched.
        assert!(!j.salvage_rewind(fr(p), start, end + 1, b"L2\n"));
        assert!(!j.salvage_rewind(fr(p), end + 1, end, b""));
        assert_eq!(j.read_salvage(fr(p), 0, 100), b"old\nL1\nL2\nL3\n");
        // L1 and L3 were written back: keep L2 only.
        assert!(j.salvage_rewind(fr(p), start, end, b"L2\n"));
        assert_eq!(j.salvage_len(fr(p)), 7);
        assert_eq!(j.read_salvage(fr(p), 0, 100), b"old\nL2\n");
        // The length moved: a second rewind with the old length is refused.
        assert!(!j.salvage_rewind(fr(p), start, end, b""));
        // Everything written back.
        let (at, end) = j.salvage(fr(p), b"L4\n");
        assert_eq!(at, 7);
        assert!(j.salvage_rewind(fr(p), 7, end, b""));
        assert_eq!(j.read_salvage(fr(p), 0, 100), b"old\nL2\n");
        // `keep` longer than the rewound bytes, and a store that does not exist yet.
        assert!(j.salvage_rewind(fr(p), 4, 7, b"L2\nL5\n"));
        assert_eq!(j.read_salvage(fr(p), 0, 100), b"old\nL2\nL5\n");
        assert!(!j.salvage_rewind(fr("new"), 0, 3, b"x"));
        assert!(
            !d.path()
                .join("salvage")
                .join(salvage_name(fr("new")))
                .exists()
        );
        assert!(j.salvage_rewind(fr("new"), 0, 0, b"x\n"));
        assert_eq!(j.read_salvage(fr("new"), 0, 100), b"x\n");
    }

    #[test]
    fn seq_never_repeats_after_a_crash() {
        let d = tempfile::tempdir().unwrap();
        let mut handed_out = 0;
        {
            let j = Journal::open(JournalOptions::new(d.path().into())).unwrap();
            for _ in 0..5 {
                handed_out = j.append(rec("x"));
            }
            j.sync();
            // Seen by readers, never written: lost in the crash.
            for _ in 0..5 {
                handed_out = j.append(rec("x"));
            }
            assert_eq!(lines(&j.read(View::All, 0, 1 << 20)).len(), 10);
            j.crash();
        }
        assert_eq!(handed_out, 10);
        let j = Journal::open(JournalOptions::new(d.path().into())).unwrap();
        let v = lines(&j.read(View::All, 0, 1 << 20));
        assert_eq!(
            v.len(),
            6,
            "the unwritten batch is lost, and a gap record says so"
        );
        let gap = &v[5];
        assert_eq!(gap["op"], "gap");
        assert_eq!(gap["seq"], 1 + RESERVE_BLOCK, "jumps to the reservation");
        assert_eq!(gap["gap"]["reason"], "unclean_shutdown");
        assert_eq!(gap["gap"]["after_seq"], 5);
        assert_eq!(gap["gap"]["lost_unknown"], true);
        let seq = j.append(rec("x"));
        assert!(seq > handed_out, "seq {seq} reused (<= {handed_out})");
        assert_eq!(seq, 2 + RESERVE_BLOCK);
        // A clean restart then continues without a gap.
        j.shutdown();
        drop(j);
        assert_eq!(next_seq_file(d.path()), seq + 1);
        let j = Journal::open(JournalOptions::new(d.path().into())).unwrap();
        assert_eq!(j.append(rec("x")), seq + 1);
    }

    #[test]
    fn reservation_is_extended_ahead_and_exhaustion_drops_into_a_gap() {
        let d = tempfile::tempdir().unwrap();
        let mut o = JournalOptions::new(d.path().into());
        o.batch_window = Duration::from_millis(5);
        o.retry_every = Duration::from_millis(20);
        let j = Journal::open_with_block(o.clone(), 8).unwrap();
        assert_eq!(next_seq_file(d.path()), 9);
        // 100 appends at once: no appender writes next_seq; only reserved seqs are
        // handed out, the rest go into a gap.
        let mut last = 0;
        let mut dropped = 0;
        for _ in 0..100 {
            match j.append(rec("x")) {
                0 => dropped += 1,
                s => {
                    assert!(s > last);
                    last = s;
                    assert!(s < next_seq_file(d.path()), "seq {s} not reserved");
                }
            }
        }
        assert!(dropped > 0, "a block of 8 cannot cover 100 appends at once");
        j.sync();
        // The writer closed the gap with a record right after the last seq kept, and
        // keeps the reservation at least half a block ahead.
        let v = lines(&j.read(View::All, 0, 1 << 20));
        let gap = v.last().unwrap();
        assert_eq!(gap["op"], "gap");
        assert_eq!(gap["seq"], last + 1);
        assert_eq!(gap["gap"]["lost"], dropped);
        assert_eq!(gap["gap"]["after_seq"], last);
        assert_eq!(gap["gap"]["reason"], "no_reserved_seq");
        assert_eq!(gap["gap"]["paths"], serde_json::json!(["x"]));
        last += 1;
        assert!(next_seq_file(d.path()) >= last + 1 + 4);
        for _ in 0..20 {
            last = j.append(rec("x"));
            j.sync();
            assert!(next_seq_file(d.path()) >= last + 1 + 4);
        }
        j.crash();
        let j = Journal::open_with_block(o, 8).unwrap();
        assert!(j.append(rec("x")) > last);
    }

    /// Make writes of segment 0 fail (`EISDIR`), as a full disk would; undone by the
    /// returned closure.
    fn break_segment0(d: &Path) -> impl Fn() {
        let seg0 = d.join("segments").join(seg_name(0));
        fs::create_dir(&seg0).unwrap();
        move || fs::remove_dir(&seg0).unwrap()
    }

    /// Make writes of `next_seq` fail (`EISDIR`); undone by the returned closure.
    fn break_next_seq(d: &Path) -> impl Fn() {
        let tmp = d.join("next_seq.tmp");
        fs::create_dir(&tmp).unwrap();
        move || fs::remove_dir(&tmp).unwrap()
    }

    #[test]
    fn pending_records_are_bounded_and_a_gap_record_follows_on_a_timer() {
        let d = tempfile::tempdir().unwrap();
        let mut o = JournalOptions::new(d.path().into());
        o.max_pending = 64 << 10;
        o.retry_every = Duration::from_millis(50);
        o.batch_window = Duration::from_millis(5);
        let j = Journal::open(o).unwrap();
        let fix = break_segment0(d.path());
        let mut kept = Vec::new();
        let mut dropped = 0u64;
        for i in 0..2_000 {
            let p = format!("p{}", i % 100);
            match j.append(rec(&p)) {
                0 => dropped += 1,
                s => kept.push(s),
            }
        }
        j.sync();
        let pending = j.shared.state.lock().pending();
        let one = lines(&j.read(View::All, 0, 1 << 20))[0].to_string().len() as u64 + 1;
        assert!(pending <= (64 << 10) + one, "pending {pending} bytes");
        assert!(dropped > 1_000, "only {dropped} dropped");
        assert_eq!(kept, (1..=kept.len() as u64).collect::<Vec<_>>());
        // Records kept are shown; nothing was written.
        assert_eq!(lines(&j.read(View::All, 0, 1 << 20)).len(), kept.len());
        assert!(
            fs::metadata(d.path().join("segments").join(seg_name(0)))
                .unwrap()
                .is_dir()
        );
        // Space returns. No append: the writer's timer writes the backlog and the gap.
        fix();
        let t = Instant::now();
        let seg0 = d.path().join("segments").join(seg_name(0));
        let on_disk = || lines(&fs::read(&seg0).unwrap_or_default());
        while on_disk().last().is_none_or(|r| r["op"] != "gap") {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "no gap record written"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let v = on_disk();
        assert_eq!(v.len(), kept.len() + 1);
        let gap = v.last().unwrap();
        assert_eq!(gap["seq"], kept.len() as u64 + 1);
        assert_eq!(gap["path"], "");
        assert_eq!(gap["result"], "EISDIR");
        let g = &gap["gap"];
        assert_eq!(g["lost"], dropped);
        assert_eq!(g["after_seq"], kept.len() as u64);
        assert_eq!(g["reason"], "pending_bound");
        assert_eq!(g["error"], "EISDIR");
        assert_eq!(g["paths"].as_array().unwrap().len(), 64);
        assert_eq!(g["paths_truncated"], true);
        assert!(g["first_ts"].as_str().unwrap() <= g["last_ts"].as_str().unwrap());
        // Records are kept again.
        assert_eq!(j.append(rec("after")), kept.len() as u64 + 2);
        j.shutdown();
        assert_eq!(j.loss(), None);
    }

    #[test]
    fn seq_never_repeats_when_next_seq_cannot_be_written() {
        let d = tempfile::tempdir().unwrap();
        let mut o = JournalOptions::new(d.path().into());
        o.batch_window = Duration::from_millis(5);
        let j = Journal::open_with_block(o.clone(), 8).unwrap();
        // Neither the records nor a new reservation reach the disk.
        let fix_seg = break_segment0(d.path());
        let fix_seq = break_next_seq(d.path());
        let mut seen = 0;
        for _ in 0..100 {
            seen = seen.max(j.append(rec("x")));
        }
        j.sync();
        // Readers saw every seq handed out (from memory).
        let v = lines(&j.read(View::All, 0, 1 << 20));
        assert_eq!(v.last().unwrap()["seq"], seen);
        j.crash();
        fix_seg();
        fix_seq();
        let j = Journal::open_with_block(o, 8).unwrap();
        let next = j.append(rec("x"));
        assert!(
            next > seen,
            "seq {next} handed out again (readers saw up to {seen})"
        );
    }

    #[test]
    fn shutdown_reports_what_it_could_not_write() {
        let d = tempfile::tempdir().unwrap();
        let mut o = JournalOptions::new(d.path().into());
        o.max_pending = 16 << 10;
        let j = Journal::open(o.clone()).unwrap();
        let _fix = break_segment0(d.path());
        let (mut kept, mut dropped) = (0u64, 0u64);
        for _ in 0..500 {
            if j.append(rec("x")) == 0 {
                dropped += 1;
            } else {
                kept += 1;
            }
        }
        assert!(dropped > 0 && kept > 0);
        let t = Instant::now();
        j.shutdown();
        assert!(t.elapsed() >= SHUTDOWN_RETRY, "no retry before giving up");
        let loss = j.loss().expect("a loss");
        assert_eq!(loss.unwritten, kept);
        assert_eq!(loss.unwritten_seqs, Some((1, kept)));
        assert_eq!(loss.dropped, dropped);
        assert_eq!(loss.total(), 500);
        let msg = loss.to_string();
        assert!(
            msg.starts_with("the journal lost 500 records at shutdown"),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("{kept} accepted records (seq 1-{kept})")),
            "{msg}"
        );
        assert!(msg.contains(&format!("{dropped} dropped records")), "{msg}");
        assert!(msg.contains("EISDIR"), "{msg}");
        assert!(!msg.contains('\n'));
        // The reservation on disk still covers every seq handed out.
        assert!(next_seq_file(d.path()) > kept);
    }

    #[test]
    fn an_unwritten_gap_record_counts_its_records_as_lost() {
        let d = tempfile::tempdir().unwrap();
        let mut o = JournalOptions::new(d.path().into());
        o.max_pending = 16 << 10;
        let j = Journal::open(o).unwrap();
        let _fix = break_segment0(d.path());
        let (mut kept, mut dropped) = (0u64, 0u64);
        for _ in 0..300 {
            if j.append(rec("x")) == 0 {
                dropped += 1;
            } else {
                kept += 1;
            }
        }
        assert!(dropped > 0);
        // The gap's record, appended but (like everything else) never written.
        let gap = Record {
            op: record::Op::Gap,
            ..Default::default()
        };
        assert_eq!(Journal::append_with(&j.shared, None, gap), kept + 1);
        j.shutdown();
        let loss = j.loss().expect("loss");
        assert_eq!(loss.unwritten, kept + 1);
        assert_eq!(loss.dropped, dropped);
        assert_eq!(loss.unwritten_seqs, Some((1, kept + 1)));
    }

    #[test]
    fn files_are_private_whatever_the_umask() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state");
        // An old, world-readable salvage file and segment from before the mode rule.
        fs::create_dir_all(state.join("salvage")).unwrap();
        fs::create_dir_all(state.join("segments")).unwrap();
        fs::write(state.join("salvage").join("old"), b"x\n").unwrap();
        let seg0 = state.join("segments").join(seg_name(0));
        fs::write(&seg0, b"{\"seq\":1,\"fseq\":1,\"path\":\"p\"}\n").unwrap();
        for p in ["salvage/old", "segments", "salvage"] {
            fs::set_permissions(state.join(p), Permissions::from_mode(0o755)).unwrap();
        }
        fs::set_permissions(&seg0, Permissions::from_mode(0o644)).unwrap();
        let fresh = d.path().join("fresh").join("state");
        // The daemon runs with umask 0. This thread gets a private umask (unshare
        // CLONE_FS), inherited by the writer thread it spawns; other tests keep theirs.
        crate::sys::as_caller(&[], 0, 0, 0, || {
            let mut o = JournalOptions::new(state.clone());
            o.segment_bytes = 64;
            let j = Journal::open(o).unwrap();
            for _ in 0..3 {
                j.append(rec("p"));
            }
            j.salvage(fr("q"), b"y\n");
            j.sync();
            j.shutdown();
            drop(Journal::open(JournalOptions::new(fresh.clone())).unwrap());
        });
        for dir in ["segments", "salvage"] {
            assert_eq!(mode(&state.join(dir)), 0o700, "{dir}");
        }
        let mut files = vec![
            state.join("next_seq"),
            state.join("salvage").join(salvage_name(fr("q"))),
        ];
        files.push(state.join("salvage").join("old"));
        for e in fs::read_dir(state.join("segments")).unwrap() {
            files.push(e.unwrap().path());
        }
        assert!(files.len() >= 6, "{files:?}");
        for f in files {
            assert_eq!(mode(&f), 0o600, "{}", f.display());
        }
        // A fresh state dir (and its parents) are created 0700.
        assert_eq!(mode(&fresh), 0o700);
        assert_eq!(mode(&fresh.join("segments")), 0o700);
        assert_eq!(mode(&fresh.join("next_seq")), 0o600);
    }

    #[test]
    fn segment_files_are_created_and_unlinked_by_the_writer() {
        let d = tempfile::tempdir().unwrap();
        let mut o = JournalOptions::new(d.path().into());
        o.segment_bytes = 4096;
        o.max_bytes = 8192;
        o.batch_window = Duration::from_secs(30);
        let j = Journal::open(o).unwrap();
        let seg0 = d.path().join("segments").join(seg_name(0));
        j.append(rec("p"));
        // Not written yet: served from memory, no file.
        assert!(!seg0.exists());
        assert_eq!(lines(&j.read(View::File(fr("p")), 0, 1 << 20)).len(), 1);
        j.sync();
        assert!(seg0.exists());
        let before = j.read(View::All, 0, 1 << 20);
        // Enough for retention to drop segment 0 (in memory, at a rollover).
        let mut n = 1;
        while j.read(View::All, 0, 100).starts_with(&before[..50]) {
            j.append(rec("p"));
            n += 1;
            assert!(n < 10_000);
        }
        assert!(seg0.exists(), "unlinked on the appender's thread");
        j.sync();
        assert!(!seg0.exists());
        let v = lines(&j.read(View::All, 0, 1 << 20));
        assert_eq!(v.last().unwrap()["seq"], n);
    }

    #[test]
    fn failed_writes_are_retried_without_duplicates() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(JournalOptions::new(d.path().into())).unwrap();
        let seg0 = d.path().join("segments").join(seg_name(0));
        // The segment cannot be opened for writing.
        fs::create_dir(&seg0).unwrap();
        for _ in 0..10 {
            j.append(rec("p"));
        }
        j.sync();
        let mem = j.read(View::All, 0, 1 << 20);
        assert_eq!(lines(&mem).len(), 10, "kept in memory");
        fs::remove_dir(&seg0).unwrap();
        j.append(rec("p"));
        j.sync();
        j.sync();
        let all = j.read(View::All, 0, 1 << 20);
        assert_eq!(lines(&all).len(), 11);
        assert_eq!(fs::read(&seg0).unwrap(), all, "written exactly once");
    }

    #[test]
    fn writer_applies_age_retention_and_forgets_emptied_paths() {
        let d = tempfile::tempdir().unwrap();
        let mut o = JournalOptions::new(d.path().into());
        o.segment_bytes = 2048;
        o.max_age = Duration::from_secs(1);
        o.retain_every = Duration::from_millis(50);
        o.batch_window = Duration::from_millis(5);
        let j = Journal::open(o).unwrap();
        for _ in 0..60 {
            j.append(rec("old"));
        }
        for _ in 0..60 {
            j.append(rec("new"));
        }
        j.sync();
        let segs = || fs::read_dir(d.path().join("segments")).unwrap().count();
        assert!(segs() >= 4);
        assert_eq!(j.latest_seq(fr("old")), Some(60));
        // No append, no rollover: the writer's periodic pass drops the old segments.
        let t = Instant::now();
        while segs() > 1 {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "age retention never ran"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(j.view_len(View::File(fr("old"))), 0);
        assert_eq!(j.latest_seq(fr("old")), None);
        assert!(!j.shared.state.lock().files.contains_key(&fr("old")));
        assert!(j.latest_seq(fr("new")).is_some());
        // A path whose records are all gone starts afresh, as after a restart.
        j.append(rec("old"));
        let v = lines(&j.read(View::File(fr("old")), 0, 1 << 20));
        assert_eq!(v.len(), 1);
        assert_eq!(v[0]["fseq"], 1);
        assert_eq!(v[0]["seq"], 121);
    }
}
