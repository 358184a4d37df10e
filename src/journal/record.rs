//! The journal record: one JSON object per change, the on-disk and on-wire format.
//!
//! Key names are a public contract (scripts and runners read them with `jq`); every
//! key is documented in the README's "Journal records" table.

use serde::{Deserialize, Serialize};

/// Backing stat fingerprint of a file, as OpenClaw's fence compares it
/// (source: OpenClaw 2026.5.22 `fs.stat(file, {bigint: true})` fence; `dev` is constant
/// under one mount and therefore left out).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Backing inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Status change time, ns since the epoch.
    pub ctime_ns: i64,
}

/// The file a record is about: the key of the per-file views (`<file>.journal`,
/// `<file>.salvage`), which follow a file, not a name. A new file under an old name
/// (after an unlink or a rename away) is another file, with another view, even if its
/// inode number was reused; a file renamed keeps its view.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileRef {
    /// Backing inode number.
    pub ino: u64,
    /// Birth time of the backing inode (statx `btime`), ns since the epoch: tells a
    /// reused inode number apart. 0 where the backing filesystem keeps none.
    pub birth_ns: i64,
    /// Owner uid of the file when the record was made. Part of the key: after a chown
    /// to another user, that user's view starts at the chown, so nobody reads records
    /// made while the file was someone else's.
    pub uid: u32,
}

/// What a journal record is about; serialized as the `op` key's string (the name in
/// parentheses). The README's "Journal records" table documents each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    /// (`open`) A file opened through the mount.
    Open,
    /// (`create`) A file created (and opened) through the mount.
    Create,
    /// (`write`) Bytes written through an open handle.
    Write,
    /// (`truncate`) Size set (truncate, ftruncate, or an `O_TRUNC` open).
    Truncate,
    /// (`fallocate`) Space allocated, punched, zeroed or collapsed.
    Fallocate,
    /// (`chmod`) Permission bits set.
    Chmod,
    /// (`chown`) Owner and/or group set.
    Chown,
    /// (`utimens`) Access and/or modification time set.
    Utimens,
    /// (`setxattr`) Extended attribute set.
    Setxattr,
    /// (`removexattr`) Extended attribute removed.
    Removexattr,
    /// (`rename`) Entry renamed (the record's `path` is the old name, `to` the new).
    Rename,
    /// (`link`) Hard link made (`to` is the new name).
    Link,
    /// (`unlink`) File removed.
    Unlink,
    /// (`mkdir`) Directory made.
    Mkdir,
    /// (`rmdir`) Directory removed.
    Rmdir,
    /// (`symlink`) Symbolic link made (`to` is its target).
    Symlink,
    /// (`mknod`) Special file made.
    Mknod,
    /// (`fsync`) File or directory synced.
    Fsync,
    /// (`release`) Last close of an open handle.
    Release,
    /// (`external`) A change made around the mount, seen at the next lookup,
    /// getattr, open or change.
    External,
    /// (`unjournaled`) A change a crashed daemon made through the mount and did not
    /// journal (its last unwritten batch), found by the daemon its supervisor started
    /// on the same connection (`--supervise`): the writer is unknown, and it is no
    /// outside change.
    Unjournaled,
    /// (`stat`) A stat of a session file by the process holding its lock, while it
    /// holds it (the gateway's fence reads and checks): the boundaries of what a hold
    /// folds into the fence.
    Stat,
    /// (`ctime-drift`) The backing ctime moved while nothing else did and nothing came
    /// through the mount (Btrfs maintenance): the mount keeps reporting the last ctime.
    CtimeDrift,
    /// (`lock-acquire`) A `*.lock` file created with `O_EXCL` through the mount.
    LockAcquire,
    /// (`lock-release`) A lock unlinked by its holder process (or, with
    /// `lock.holder_alive` false, by another process after its holder died).
    LockRelease,
    /// (`lock-steal`) A lock unlinked or replaced by another process while its holder
    /// lives.
    LockSteal,
    /// (`lock-reap`) A lock whose holder died, unlinked by sessionfs.
    LockReap,
    /// (`gap`) Records the journal dropped while it could not write its state dir
    /// (disk full or failing): written once writes succeed again, in place of the lost
    /// records, which had no `seq`. See [`GapInfo`].
    Gap,
    /// (`salvage-evict`) The salvage store's bounds dropped removed lines of a file
    /// (see `salvage_evicted`).
    SalvageEvict,
    /// (`unknown`) Never written by sessionfs: the op of an unfilled
    /// [`Record::default`].
    #[default]
    Unknown,
}

impl Op {
    /// Every op, in the order of the README's table.
    pub const ALL: [Op; 30] = [
        Op::Open,
        Op::Create,
        Op::Write,
        Op::Truncate,
        Op::Fallocate,
        Op::Chmod,
        Op::Chown,
        Op::Utimens,
        Op::Setxattr,
        Op::Removexattr,
        Op::Rename,
        Op::Link,
        Op::Unlink,
        Op::Mkdir,
        Op::Rmdir,
        Op::Symlink,
        Op::Mknod,
        Op::Fsync,
        Op::Release,
        Op::External,
        Op::Unjournaled,
        Op::Stat,
        Op::CtimeDrift,
        Op::LockAcquire,
        Op::LockRelease,
        Op::LockSteal,
        Op::LockReap,
        Op::Gap,
        Op::SalvageEvict,
        Op::Unknown,
    ];

    /// The `op` string (`"write"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Open => "open",
            Op::Create => "create",
            Op::Write => "write",
            Op::Truncate => "truncate",
            Op::Fallocate => "fallocate",
            Op::Chmod => "chmod",
            Op::Chown => "chown",
            Op::Utimens => "utimens",
            Op::Setxattr => "setxattr",
            Op::Removexattr => "removexattr",
            Op::Rename => "rename",
            Op::Link => "link",
            Op::Unlink => "unlink",
            Op::Mkdir => "mkdir",
            Op::Rmdir => "rmdir",
            Op::Symlink => "symlink",
            Op::Mknod => "mknod",
            Op::Fsync => "fsync",
            Op::Release => "release",
            Op::External => "external",
            Op::Unjournaled => "unjournaled",
            Op::Stat => "stat",
            Op::CtimeDrift => "ctime-drift",
            Op::LockAcquire => "lock-acquire",
            Op::LockRelease => "lock-release",
            Op::LockSteal => "lock-steal",
            Op::LockReap => "lock-reap",
            Op::Gap => "gap",
            Op::SalvageEvict => "salvage-evict",
            Op::Unknown => "unknown",
        }
    }
}

/// How a change bears on an OpenClaw session file's fence (the record's `class`):
/// the classes `sessionfs changes` and `explain` report, set when the change is
/// journaled. A `read` or `noop` never moves the fence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// An open or close (and fsync) that changed nothing: always harmless.
    Read,
    /// A change that would have changed nothing (chmod to the current mode, chown to
    /// the current owner, setxattr of the stored value): answered by sessionfs
    /// without touching the backing file, so no ctime moved.
    Noop,
    /// A chmod, chown, utimens, xattr or link change that did change something.
    Metadata,
    /// Bytes added at the end of the file (and a create).
    Append,
    /// Truncate, a write inside the file, fallocate, rename over, unlink.
    Rewrite,
    /// A lock file's records.
    Lock,
    /// A change made around the mount.
    External,
}

impl Class {
    /// The class of a successful `op` before the change's own facts refine it (a write
    /// at the end of the file is an append; a release ending a rewrite is a rewrite).
    pub fn of(op: Op) -> Option<Class> {
        Some(match op {
            Op::Open | Op::Release | Op::Fsync | Op::Stat => Class::Read,
            Op::Chmod
            | Op::Chown
            | Op::Utimens
            | Op::Setxattr
            | Op::Removexattr
            | Op::Link
            | Op::Mkdir
            | Op::Symlink
            | Op::Mknod => Class::Metadata,
            Op::Create => Class::Append,
            Op::Write | Op::Truncate | Op::Fallocate | Op::Rename | Op::Unlink | Op::Rmdir => {
                Class::Rewrite
            }
            Op::External => Class::External,
            Op::Unjournaled => Class::Rewrite,
            Op::CtimeDrift => Class::Noop,
            Op::LockAcquire | Op::LockRelease | Op::LockSteal | Op::LockReap => Class::Lock,
            Op::SalvageEvict => return None,
            Op::Gap | Op::Unknown => return None,
        })
    }
}

/// The process holding a session lock: the one that created the lock file through
/// the mount (host pids, as the daemon sees them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// Thread group id.
    pub pid: u32,
    /// Thread that made the O_EXCL create.
    pub tid: u32,
    /// Field 22 of `/proc/<pid>/stat`: with `pid`, names the process across pid reuse.
    pub starttime: u64,
    /// `/proc/<pid>/comm`.
    pub comm: String,
    /// `/proc/<pid>/exe` target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// Inode of `/proc/<pid>/ns/pid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pidns: Option<u64>,
    /// cgroup v2 path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// The `NSpid:` line of `/proc/<pid>/status`: its pid in each pid namespace from
    /// the daemon's down to its own (one entry outside containers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nspid: Vec<u32>,
}

/// Whether a session file's lock (`<file>.lock`) existed when a change was made, and
/// who held it (the record's `lock_context`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockContext {
    /// The lock existed and the process making the change held it.
    HeldByWriter,
    /// The lock existed and another process held it (see `lock_holder`).
    HeldByOther,
    /// No lock existed: nobody held the session.
    None,
}

/// What a `lock-*` record says about the lock (source: OpenClaw 2026.5.22 session
/// write lock, `<file>.jsonl.lock` with `{pid, createdAt, maxHoldMs, starttime}`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LockInfo {
    /// The file the lock guards: the lock's path without `.lock`.
    pub guards: String,
    /// The true holder (creator) of the lock.
    pub holder: LockHolder,
    /// `seq` of the lock's `create` record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_seq: Option<u64>,
    /// Age of the lock when the record was made, ms.
    pub age_ms: u64,
    /// The payload the holder wrote, if it is a JSON object (else `null`).
    #[serde(default)]
    pub payload: Option<serde_json::Value>,
    /// The payload's bytes (lossy UTF-8, at most 4 KiB) when they are not a JSON
    /// object: partial, malformed or empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_raw: Option<String>,
    /// `maxHoldMs` from the payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_hold_ms: Option<u64>,
    /// The payload's `pid` names no pid of the holder in any of its pid namespaces
    /// (a container writing a pid the host reads as someone else's).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub payload_pid_mismatch: bool,
    /// Was the holder alive when the record was made?
    pub holder_alive: bool,
    /// Why the holder counts as dead (`lock-reap`, and a release by another process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What a `gap` record says about the records the journal lost (the record's `gap`).
///
/// While writes to the state dir fail, unwritten records wait in memory up to a bound
/// (`--journal-max-pending`); past it, and whenever no `seq` is reserved on disk, the
/// journal drops records instead, from then on until everything pending has been
/// written and a `seq` reservation is on disk again. A dropped record gets no `seq`:
/// the lost records came between seq `after_seq` and the `gap` record's own `seq`
/// (`after_seq + 1`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapInfo {
    /// Records dropped (never written, never shown); 0 with `lost_unknown`.
    pub lost: u64,
    /// How many were lost is not known: reason `"unclean_shutdown"` (the daemon before
    /// this one died with records accepted and not yet written, at most its last
    /// 50 ms batch).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lost_unknown: bool,
    /// The `gap` record's own `seq` minus 1: the lost records came after every record
    /// with a seq up to this one (after a restart `seq` may have jumped ahead, so no
    /// record need have this seq).
    pub after_seq: u64,
    /// RFC 3339 time of the first lost record.
    pub first_ts: String,
    /// RFC 3339 time of the last lost record.
    pub last_ts: String,
    /// Why the journal dropped records instead of keeping them in memory:
    /// `"pending_bound"` (the unwritten records filled `--journal-max-pending`),
    /// `"no_reserved_seq"` (no `seq` was reserved on disk, so none could be handed out
    /// without risking a repeat after a crash) or `"unclean_shutdown"` (written at the
    /// next start: the daemon died without a clean shutdown; `first_ts` is when it last
    /// wrote its journal, `last_ts` the start).
    pub reason: String,
    /// The last error writing the state dir before or during the gap (`ENOSPC`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Paths of the lost records (the first [`GAP_PATHS`] distinct ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// More distinct paths lost records than `paths` lists.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paths_truncated: bool,
}

/// Most paths a [`GapInfo`] lists.
pub const GAP_PATHS: usize = 64;

/// What a `salvage-evict` record says: the removed lines the salvage store's bounds
/// dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalvageEvicted {
    /// Bytes dropped.
    pub bytes: u64,
    /// Lines dropped.
    pub lines: u64,
    /// `"file share"` (the file's oldest lines, past its share) or `"total"` (the whole
    /// file's salvage, least recently written, past the store's bound).
    pub reason: String,
}

/// One ancestor of the acting process (nearest first).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ancestor {
    /// Process id (in the daemon's pid namespace).
    pub pid: u32,
    /// `/proc/<pid>/comm`.
    pub comm: String,
}

/// A decoded transcript entry (one complete line of a `*.jsonl` file).
///
/// Only these fields are read from the line (borrowed serde struct, unknown fields
/// skipped). A line that is not UTF-8 or not a JSON object has `type` `"unparsed"`,
/// the reason in `unparsed`, and no other decoded field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// 1-based line number in the file at the time of the change.
    pub line: u64,
    /// Byte offset of the line's first byte in the file.
    pub offset: u64,
    /// Length of the line in bytes, newline included.
    pub bytes: u64,
    /// `type` field (`session`, `message`, `custom`, ...); `"unparsed"` for a line that
    /// is not UTF-8 or not a JSON object.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `id` field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `parentId` field (`null` in the line is recorded as absent).
    #[serde(rename = "parentId", default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// `message.role` field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// `customType` field.
    #[serde(
        rename = "customType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub custom_type: Option<String>,
    /// Why the line is `"unparsed"`: `"not_utf8"` or `"not_json"`; absent for decoded
    /// lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unparsed: Option<String>,
}

/// One journal record. Optional keys are omitted from the JSON when absent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Mount-global sequence number, strictly increasing, continued across restarts.
    pub seq: u64,
    /// Per-file sequence number (1-based) in the record's per-file view (see
    /// [`FileRef`]), continued across restarts; 0 on records about no file.
    pub fseq: u64,
    /// RFC 3339 UTC timestamp with nanoseconds, e.g. `2026-11-22T14:40:30.123456789Z`;
    /// stamped by [`crate::journal::Journal::append`] when empty, so it follows `seq`.
    pub ts: String,
    /// Operation (see [`Op`]).
    pub op: Op,
    /// Path relative to the mount root, no leading slash (`sessions.json`), spelled
    /// losslessly (see [`crate::names`]: non-UTF-8 bytes as `\xHH`, `\` doubled).
    pub path: String,
    /// The file the record is about (absent for records about no file: a failed
    /// create, a mkdir, and records written by older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileRef>,
    /// The file a rename replaced: the target whose last link it removed (a target
    /// still linked elsewhere lives on, and is not named here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced: Option<FileRef>,

    // ---- identity (who) ----
    /// Thread group id of the caller (daemon's pid namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Thread id FUSE reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
    /// Parent pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ppid: Option<u32>,
    /// Caller's fs uid, from the FUSE request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Caller's fs gid, from the FUSE request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// `/proc/<pid>/comm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// `/proc/<pid>/exe` link target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// `argv[0]` plus at most two more arguments, secrets redacted as `<redacted>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<Vec<String>>,
    /// Field 22 of `/proc/<pid>/stat` (clock ticks after boot); guards against pid reuse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starttime: Option<u64>,
    /// Inode number of `/proc/<pid>/ns/pid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pidns: Option<u64>,
    /// cgroup v2 path from `/proc/<pid>/cgroup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// Up to 3 nearest ancestors, parent first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ancestry: Option<Vec<Ancestor>>,
    /// Lane, when declared with `user.sessionfs.lane` or matched by a `--lanes` rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane: Option<String>,
    /// Where the lane came from: `"declared"` or `"rule"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane_source: Option<String>,

    // ---- what ----
    /// Byte offset of a write, read range or fallocate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Length in bytes of a write or fallocate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub len: Option<u64>,
    /// `true` on writes through an O_APPEND file handle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append: Option<bool>,
    /// Size in bytes before the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_before: Option<u64>,
    /// Size in bytes after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_after: Option<u64>,
    /// Backing fingerprint before the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Fingerprint>,
    /// Backing fingerprint after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Fingerprint>,
    /// `"ok"` or the errno name (`"ENOENT"`).
    pub result: String,
    /// How the change bears on a fence (see [`Class`]); absent on failed changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<Class>,
    /// Whether the change moved the fence fingerprint of the file as the mount
    /// reports it (`{dev, ino, size, mtimeNs, ctimeNs}`; source: OpenClaw 2026.5.22
    /// session file fence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence_moved: Option<bool>,
    /// On `open`/`create`: `"read"`, `"write"` or `"readwrite"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
    /// Open flags by name (`["O_APPEND","O_CREAT","O_EXCL"]`), rename flags
    /// (`["RENAME_NOREPLACE"]`), xattr flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<Vec<String>>,
    /// Mode bits (`chmod`, `create`, `mkdir`, `mknod`), as a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Rename/link destination path; symlink target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Backing inode replaced by a rename or removed by unlink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_ino: Option<u64>,
    /// Extended attribute name (`setxattr`/`removexattr`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// On `release`: number of read requests served on the handle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reads: Option<u64>,
    /// On `release`: bytes read on the handle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_bytes: Option<u64>,
    /// On `release`: number of write requests on the handle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes: Option<u64>,
    /// On `release`: bytes written on the handle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_bytes: Option<u64>,
    /// Transcript entries the change completed (appended or rewrote).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<Vec<Entry>>,
    /// Transcript entries the change removed; their bytes are in the salvage store.
    /// For an in-place rewrite (truncate or overwrite while a writable handle is open)
    /// this is on the `release` of the last writable handle: the cut lines that the
    /// rewrite did not write back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<Vec<Entry>>,
    /// Lines (complete or partial) a truncate or overwrite cut while a writable handle
    /// is open; held until the rewrite ends, then reported as `removed` or `restored`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut: Option<u64>,
    /// On `release` ending a rewrite: cut lines the rewrite wrote back byte for byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored: Option<u64>,
    /// Bytes of a trailing partial line kept back until a later write completes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<u64>,
    /// On records of session files (`*.jsonl`): whether `<file>.lock` existed and who
    /// held it when the change was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_context: Option<LockContext>,
    /// With `lock_context` `held_by_other`: the holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_holder: Option<LockHolder>,
    /// On `salvage-evict`: what was dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salvage_evicted: Option<SalvageEvicted>,
    /// On `lock-*` records: the lock, its holder and payload. The record's own
    /// identity keys name who acted (the stealer, the releaser; sessionfs itself on a
    /// `lock-reap`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<LockInfo>,
    /// On `gap` records: how many records the journal lost, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<GapInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_serializes_to_its_documented_string() {
        for op in Op::ALL {
            let json = serde_json::to_string(&op).unwrap();
            assert_eq!(json, format!("\"{}\"", op.as_str()));
            assert_eq!(serde_json::from_str::<Op>(&json).unwrap(), op);
        }
        let names: std::collections::HashSet<_> = Op::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(names.len(), Op::ALL.len());
    }
}
