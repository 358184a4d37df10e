//! `sessionfs explain` and `sessionfs changes`: the release windows of an OpenClaw
//! session file, the gateway's own fence verdict for each, and the change
//! classification a runner asks for with a journal cursor.
//!
//! Everything here reads journal records (`serde_json::Value`s, see the README's
//! "Journal records") that the mount already wrote: the analysis is a set of pure
//! functions ([`holds`], [`markers`], [`attempts`], [`windows`], [`judge`],
//! [`changes_verdict`], [`parse_gateway_log`]) and two CLI entry points
//! ([`run_explain`], [`run_changes`]) that read the virtual journal files.
//!
//! # The fence, as the gateway has it
//!
//! Read from OpenClaw 2026.5.22, `dist/selection-*.js`
//! (`createEmbeddedAttemptSessionLockController`), and checked with the real gateway
//! on a mount (2026-12-06, one turn, a tool-use turn, a foreign append 1 s into the
//! model call):
//!
//! - **Armed at the release.** `releaseForPrompt`: `fenceFingerprint = fingerprint;
//!   fenceSnapshot = await readSessionFileFenceSnapshot(...); ... fenceActive = true;
//!   await lock.release();`. The controller takes the lock when it is created
//!   (`let heldLock = await acquireLock();`) with `fenceActive = false`: the first
//!   acquisition of an attempt is never checked, and its first release arms the fence.
//! - **Checked at every acquisition.** `reacquireAfterPrompt`: `const lock = await
//!   acquireLock(); ... await assertSessionFileFence();`; `withSessionWriteLock`:
//!   `const { lock, owned } = await acquireWriteLock(); try { await
//!   assertSessionFileFence(); const beforeWrite = ...`; `acquireForCleanup` likewise.
//!   `assertSessionFileFence`: `if (sameSessionFileFingerprint(fenceFingerprint,
//!   current)) return;` (dev, ino, size, mtimeNs, ctimeNs) … `if (await
//!   sessionFenceAdvanceIsBenign(...) || await sessionFenceRewriteIsBenign(...)) {
//!   ... return; } takeoverDetected = true; throw new
//!   EmbeddedAttemptSessionTakeoverError(...)`.
//! - **Absorbed inside a hold.** `refreshSessionFileFence(beforeWrite)`: `if
//!   (!sameSessionFileFingerprint(beforeWrite, snapshot.fingerprint) && fenceActive) {
//!   fenceFingerprint = snapshot.fingerprint; ...}` at the end of every locked write;
//!   messages are persisted with `onMessagePersisted: () => {
//!   sessionLockController.refreshAfterOwnedSessionWrite(); }` (`fenceFingerprint =
//!   readSessionFileFingerprintSync(...)`, no check: the pi `AgentSession` of 5.22 has
//!   no `_processAgentEvent`, so `installSessionEventWriteLock` installs nothing), and
//!   the next `releaseForPrompt` takes a new fingerprint without checking. So what
//!   changed while the runner held the lock is folded into the fence; measured: an
//!   entry appended by another process 1 s into the model call did not trip. But only
//!   what changed between two of the holder's stats of the file: the check stats it
//!   only after the lock file is created (a change between the `O_EXCL` create and
//!   that stat is seen by the check), and `releaseForPrompt` stats it (the fence:
//!   `fenceFingerprint = fingerprint`), stats it again and reads the snapshot
//!   (`readSessionFileFenceSnapshot`), then unlinks the lock (a change between the
//!   first of those stats and the unlink is not in the fence: the next check sees it). Measured with the real gateway
//!   (tests/gateway_e2e.rs): chmods within ~2 ms of a hold's edge tripped.
//! - **What is accepted in a gap** (`sessionFenceAdvanceIsBenign`): same dev and ino,
//!   the file grew by at most `MAX_BENIGN_SESSION_FENCE_ADVANCE_BYTES = 1024 * 1024`,
//!   the appended text ends with `\n`, and `lines.every(isTranscriptOnlyOpenClawAssistantLine)`:
//!   `message.role === "assistant" && message.provider === "openclaw" && ...
//!   TRANSCRIPT_ONLY_OPENCLAW_ASSISTANT_MODELS.has(message.model)` with the models
//!   `delivery-mirror` and `gateway-injected`. Only the appended bytes are looked at:
//!   a chmod in the same gap as such an append is accepted with it; a chmod alone
//!   (same size) is not. Registered own writes (`ownedWrite.generation >
//!   fenceGeneration && sameSessionFileFingerprint(ownedWrite.fingerprint, current)`)
//!   are made under the runner's holds; `sessionFenceRewriteIsBenign` (a linear to
//!   parent-linked migration plus injected lines) is not modelled: such a rewrite in
//!   a gap counts as a trip.
//! - **A trip at cleanup is swallowed.** `acquireForCleanup`: `catch (err) { await
//!   cleanupLock.release(); if (err instanceof EmbeddedAttemptSessionTakeoverError)
//!   return noopLock; ...}`: no error, the reply goes out, the session flush is skipped.
//!   Such windows have `outcome: "swallowed"`, the others that trip `"takeover"`.
//!
//! Other releases (`--rules`): 2026.5.20 (`changeLooksLikeOwnedPromptOutput`: same dev
//! and ino, size not smaller, and every appended line parses with role `assistant`,
//! any assistant; it has no `reacquireAfterPrompt`, so the model call is in a gap);
//! 2026.6.11 (`sessionFenceCtimeDriftIsBenign`: dev, ino, size and mtime equal and the
//! text or SHA-256 digest equal, so a metadata-only gap is forgiven unless mtime moved;
//! and appended `custom` (with `customType`), `label` and `session_info` entries are
//! merged like injected assistant lines). Only the acceptance rule changes with
//! `--rules`; the holds are read from the journal whatever the release.
//!
//! # Holds, attempts, windows
//!
//! - A **hold** of `F` by process P: from the `O_EXCL` create of `F.lock` (then
//!   `lock-acquire`) to its unlink (then `lock-release`, `lock-steal`, or `lock-reap`).
//!   Holds of one lock file never overlap.
//! - An **attempt** is one controller's life: its first hold (not checked), then holds
//!   whose acquisitions are checked, the last being the cleanup hold. Boundaries come
//!   from the runner's trajectory file `<id>.trajectory.jsonl` when the journal has it
//!   (basis `trajectory`): the attempt's first hold is P's last hold acquired before
//!   its `session.started` line was written, and its cleanup hold the first hold
//!   acquired after its `session.ended` line (written and flushed before
//!   `acquireForCleanup`). Without a trajectory (basis `user-message`), a hold in
//!   which P appended a `user` message starts an attempt (the hold before it, when that
//!   hold also wrote the `session` header: pi writes a new file only at its first
//!   assistant message), and the attempt runs to the next start.
//! - The **absorbed stretch** of a hold: from the holder's first `stat` of the file
//!   after the acquisition (the check) to its fence read before the release: the
//!   first of its last two stats when they come one after the other after a write of
//!   the holder's (`releaseForPrompt`'s fingerprint and snapshot stats), else its last
//!   stat (a locked write's refresh). Not stats: the kernel's permission check before
//!   each OPEN (a GETATTR on the opening thread: attr TTL 0 while locked), fstats under
//!   an open read handle, and sync stats on the main thread (tid == pid) other than the
//!   first after a write (the session manager reading). A **check inside the hold**: a
//!   worker-thread stat that starts a run with no write of the holder's since its last
//!   worker-thread stat (a `withSessionWriteLock` while the model-call hold is held, as
//!   a tool result is persisted); others' changes between the fence read before it and
//!   it are judged with the gap (`mid_checks`). While a session file's lock is held the mount journals the
//!   holder's stats of it (`op` `stat`, class `read`; other processes' stats are not
//!   journaled). A hold without such records (a journal from before them, or a mount
//!   that does not write them) is absorbed whole, and its windows say so in a note:
//!   a change within a few ms of its acquisition or release may then be counted as
//!   absorbed when the gateway in fact tripped on it.
//! - A **release window** is the gap from a release by P to P's next acquisition in
//!   the same attempt, plus that next hold. The gap runs from the end of the released
//!   hold's absorbed stretch to the start of the next hold's, so a change after P's
//!   fence read and before the unlink (`in_hold: "after_fence_read"`), or after the
//!   `O_EXCL` create and before P's first stat (`in_hold: "before_check"`), is judged
//!   with the gap. Changes in the gap are judged; changes in the next hold's absorbed
//!   stretch are listed with `absorbed: true`. A tripped window ends the attempt (the
//!   gateway takes the lock no more). Changes in an attempt's first hold before its
//!   first stat, in its cleanup hold after the check, and outside attempts are in no
//!   window: no fence looks at them.
//!
//! Limits: the holder's stats are the kernel's GETATTRs; a stat the runner makes after
//! its fingerprint stat and before the unlink (reading the snapshot, say) moves the
//! end of the stretch a little later than the fingerprint. Two lanes of one process on
//! one file share a pid: their holds are merged (flagged when their trajectory attempts
//! overlap), and a change by the runner's own process in a gap is marked
//! `same_process`.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::journal::cli::seek_since;

// ---------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------

/// The fence rules of an OpenClaw release (`--rules`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Rules {
    /// Only OpenClaw-injected assistant lines (`delivery-mirror`, `gateway-injected`)
    /// appended in a gap, ≤ 1 MiB, are accepted.
    #[value(name = "2026.5.22")]
    V2026_5_22,
    /// Any appended lines with role `assistant` are accepted.
    #[value(name = "2026.5.20")]
    V2026_5_20,
    /// As 2026.5.22, plus ctime-only drift with unchanged content, and appended
    /// `custom`, `label` and `session_info` entries.
    #[value(name = "2026.6.11")]
    V2026_6_11,
}

impl Rules {
    /// The release name (`"2026.5.22"`).
    pub fn name(self) -> &'static str {
        match self {
            Rules::V2026_5_22 => "2026.5.22",
            Rules::V2026_5_20 => "2026.5.20",
            Rules::V2026_6_11 => "2026.6.11",
        }
    }
}

/// A `--since` cursor of `explain`: a journal `seq`, or a time (ns since the epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    /// Windows released after this seq.
    Seq(u64),
    /// Windows released at or after this time, ns since the epoch (UTC).
    TimeNs(i128),
}

/// Parse `--since`: digits are a `seq`; an RFC 3339 time (`2026-12-06T04:28:40Z`,
/// fraction and offset optional, no offset = UTC) or an age (`90s`, `10m`, `2h`, `1d`:
/// that long ago) is a time.
///
/// # Errors
/// One line saying what is accepted.
pub fn parse_since(s: &str) -> Result<Since, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(Since::Seq)
            .map_err(|_| format!("'{s}': seq too large"));
    }
    if let Some(ns) = parse_time_ns(s) {
        return Ok(Since::TimeNs(ns));
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let mul: i128 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => 0,
    };
    match n.parse::<i128>() {
        Ok(n) if mul > 0 => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as i128;
            Ok(Since::TimeNs(now - n * mul * 1_000_000_000))
        }
        _ => Err(format!(
            "bad --since '{s}': give a journal seq (1200), an RFC 3339 time (2026-12-06T04:28:40Z) or an age (10m, 2h)"
        )),
    }
}

/// Arguments of `sessionfs explain`.
#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    /// A session file (`<id>.jsonl`) on a sessionfs mount. With --gateway-log: the
    /// session file, or a directory on the mount where the log's session files are
    /// (default: the paths the log names).
    #[arg(required_unless_present = "gateway_log")]
    pub target: Option<PathBuf>,
    /// Only windows released after SEQ, or at or after TIME (RFC 3339, or an age such
    /// as 10m, 2h).
    #[arg(long, value_name = "TIME|SEQ", value_parser = parse_since)]
    pub since: Option<Since>,
    /// One JSON object per window (per takeover with --gateway-log) and line.
    #[arg(long)]
    pub json: bool,
    /// Fence rules of this OpenClaw release.
    #[arg(long, value_enum, default_value = "2026.5.22")]
    pub rules: Rules,
    /// The gateway's log (console or JSON file log): explain every
    /// `EmbeddedAttemptSessionTakeoverError` in it.
    #[arg(long, value_name = "LOG")]
    pub gateway_log: Option<PathBuf>,
}

/// Arguments of `sessionfs changes`.
#[derive(clap::Args, Debug)]
pub struct ChangesArgs {
    /// A session file on a sessionfs mount.
    pub file: PathBuf,
    /// Changes with seq > SEQ (the cursor a runner saved when it released the lock).
    #[arg(
        long,
        value_name = "SEQ",
        required_unless_present = "since_offset",
        conflicts_with = "since_offset"
    )]
    pub since: Option<u64>,
    /// Changes after this byte offset of `<FILE>.journal`: the size of that file when
    /// the runner released the lock (`fs.statSync(file + ".journal").size`).
    #[arg(long, value_name = "BYTES")]
    pub since_offset: Option<u64>,
    /// The runner's pid: its appends are `own` [default: the parent of this process].
    #[arg(long)]
    pub pid: Option<u32>,
    /// With --pid: only appends of this lane are own.
    #[arg(long)]
    pub lane: Option<String>,
    /// One JSON object: verdict, cursors, changes.
    #[arg(long)]
    pub json: bool,
}

// ---------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------

/// One parsed journal record; `v` is the record as read.
#[derive(Clone, Debug)]
pub(crate) struct Rec {
    pub v: Value,
    pub seq: u64,
}

impl Rec {
    /// A record from its JSON; None without a `seq`.
    pub fn new(v: Value) -> Option<Rec> {
        let seq = v["seq"].as_u64()?;
        Some(Rec { v, seq })
    }
    fn str(&self, k: &str) -> Option<&str> {
        self.v[k].as_str()
    }
    fn op(&self) -> &str {
        self.str("op").unwrap_or("")
    }
    fn path(&self) -> &str {
        self.str("path").unwrap_or("")
    }
    fn ok(&self) -> bool {
        self.str("result") == Some("ok")
    }
    fn pid(&self) -> Option<u32> {
        self.v["pid"].as_u64().map(|p| p as u32)
    }
    fn ts(&self) -> &str {
        self.str("ts").unwrap_or("")
    }
    fn class(&self) -> Option<&str> {
        self.str("class")
    }
    fn mark(&self) -> Mark {
        Mark {
            seq: self.seq,
            ts: self.ts().to_string(),
        }
    }
    fn list(&self, k: &str) -> &[Value] {
        self.v[k].as_array().map(Vec::as_slice).unwrap_or(&[])
    }
    fn entries(&self) -> &[Value] {
        self.list("entries")
    }
    fn removed(&self) -> &[Value] {
        self.list("removed")
    }
    /// Did the change move the fence fingerprint? `fence_moved` when present, else
    /// (older journals, `external`) by class.
    fn moved(&self) -> bool {
        match self.v["fence_moved"].as_bool() {
            Some(m) => m,
            None => matches!(
                self.class(),
                Some("metadata" | "append" | "rewrite" | "external")
            ),
        }
    }
    fn ident(&self) -> Ident {
        Ident::of(&self.v)
    }
}

/// A process as a record or a lock holder names it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Ident {
    pub pid: u32,
    pub tid: Option<u32>,
    pub comm: Option<String>,
    pub starttime: Option<u64>,
}

impl Ident {
    fn of(v: &Value) -> Ident {
        Ident {
            pid: v["pid"].as_u64().unwrap_or(0) as u32,
            tid: v["tid"].as_u64().map(|t| t as u32),
            comm: v["comm"].as_str().map(str::to_string),
            starttime: v["starttime"].as_u64(),
        }
    }
    fn json(&self) -> Value {
        json!({"pid": self.pid, "tid": self.tid, "comm": self.comm, "starttime": self.starttime})
    }
    fn label(&self) -> String {
        format!("{}[{}]", self.comm.as_deref().unwrap_or("?"), self.pid)
    }
    /// (pid, starttime): a process without ambiguity after pid reuse.
    fn key(&self) -> (u32, Option<u64>) {
        (self.pid, self.starttime)
    }
}

/// A point of the journal: a record's seq and ts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Mark {
    pub seq: u64,
    pub ts: String,
}

impl Mark {
    fn json(&self) -> Value {
        json!({"seq": self.seq, "ts": self.ts})
    }
}

// ---------------------------------------------------------------------------
// Holds
// ---------------------------------------------------------------------------

/// One hold of a session lock: created with `O_EXCL` by `holder`, ended by an unlink
/// (or a `lock-reap`).
#[derive(Clone, Debug)]
pub(crate) struct Hold {
    pub holder: Ident,
    /// The `O_EXCL` create (or the `lock-acquire` when the create is not in view).
    pub acquired: Mark,
    /// The unlink that ended it (or the `lock-*` record); None while held.
    pub released: Option<Mark>,
    /// `release`, `steal`, `reap`, `unlink` (no lock record seen), `lost` (a new hold
    /// began without an end in view).
    pub end: &'static str,
    pub created_seq: Option<u64>,
}

/// The holds of the lock file `lock_path` (mount-relative) in `recs` (seq order).
pub(crate) fn holds(lock_path: &str, recs: &[Rec]) -> Vec<Hold> {
    let mut out: Vec<Hold> = Vec::new();
    let mut open: Option<Hold> = None;
    for r in recs {
        let on_lock = r.path() == lock_path;
        let onto_lock = r.str("to") == Some(lock_path);
        if !(on_lock || onto_lock) || !r.ok() {
            continue;
        }
        let close = |open: &mut Option<Hold>, out: &mut Vec<Hold>, at: Mark, end| {
            if let Some(mut h) = open.take() {
                h.released = Some(at);
                h.end = end;
                out.push(h);
            }
        };
        match r.op() {
            "create" if on_lock => {
                let excl = r.list("flags").iter().any(|f| f == "O_EXCL");
                if excl {
                    close(&mut open, &mut out, r.mark(), "lost");
                    open = Some(Hold {
                        holder: r.ident(),
                        acquired: r.mark(),
                        released: None,
                        end: "held",
                        created_seq: Some(r.seq),
                    });
                }
            }
            "lock-acquire" => {
                let holder = Ident::of(&r.v["lock"]["holder"]);
                let created = r.v["lock"]["created_seq"].as_u64();
                match open.as_mut() {
                    Some(h) if h.created_seq.is_some() && h.created_seq == created => {
                        h.holder = holder;
                    }
                    _ => {
                        close(&mut open, &mut out, r.mark(), "lost");
                        open = Some(Hold {
                            holder,
                            acquired: r.mark(),
                            released: None,
                            end: "held",
                            created_seq: created,
                        });
                    }
                }
            }
            "unlink" if on_lock => close(&mut open, &mut out, r.mark(), "unlink"),
            "rename" => close(&mut open, &mut out, r.mark(), "unlink"),
            op @ ("lock-release" | "lock-steal" | "lock-reap") => {
                let kind = &op[5..];
                let kind: &'static str = match kind {
                    "release" => "release",
                    "steal" => "steal",
                    _ => "reap",
                };
                let created = r.v["lock"]["created_seq"].as_u64();
                let matches = |h: &Hold| created.is_none() || h.created_seq == created;
                if let Some(last) = out.last_mut().filter(|h| h.end == "unlink" && matches(h)) {
                    last.end = kind;
                } else if open.as_ref().is_some_and(matches) {
                    close(&mut open, &mut out, r.mark(), kind);
                }
            }
            _ => {}
        }
    }
    if let Some(h) = open {
        out.push(h);
    }
    out
}

// ---------------------------------------------------------------------------
// Attempts
// ---------------------------------------------------------------------------

/// A `session.started` / `session.ended` line of the runner's trajectory file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Marker {
    pub seq: u64,
    pub pid: u32,
    pub started: bool,
}

/// The trajectory markers in `recs`: writes to `traj_path` that complete a
/// `session.started` or `session.ended` line.
pub(crate) fn markers(traj_path: &str, recs: &[Rec]) -> Vec<Marker> {
    let mut out = Vec::new();
    for r in recs {
        if r.path() != traj_path || r.op() != "write" || !r.ok() {
            continue;
        }
        for e in r.entries() {
            let started = match e["type"].as_str() {
                Some("session.started") => true,
                Some("session.ended") => false,
                _ => continue,
            };
            out.push(Marker {
                seq: r.seq,
                pid: r.pid().unwrap_or(0),
                started,
            });
        }
    }
    out
}

/// One attempt of a runner: indices into the holds, in order.
#[derive(Clone, Debug)]
pub(crate) struct Attempt {
    pub holder: Ident,
    pub holds: Vec<usize>,
    /// `trajectory` or `user-message` (see the module doc).
    pub basis: &'static str,
    /// The attempt is known to be over (its `session.ended`, or a later attempt).
    pub ended: bool,
    /// Index (into the holds) of the cleanup hold, when known.
    pub cleanup: Option<usize>,
    /// Another attempt of the same process overlapped this one (two lanes).
    pub overlapping: bool,
}

/// Split each holder's holds into attempts (module doc: "Holds, attempts, windows").
/// `frecs` are the records of the session file itself, in seq order.
pub(crate) fn attempts(holds: &[Hold], markers: &[Marker], frecs: &[&Rec]) -> Vec<Attempt> {
    // (pid, starttime) → that holder's holds, in order of first hold.
    type Group = ((u32, Option<u64>), Vec<usize>);
    let mut groups: Vec<Group> = Vec::new();
    for (i, h) in holds.iter().enumerate() {
        match groups.iter_mut().find(|(k, _)| *k == h.holder.key()) {
            Some((_, v)) => v.push(i),
            None => groups.push((h.holder.key(), vec![i])),
        }
    }
    let mut out = Vec::new();
    for ((pid, _), group) in groups {
        let ms: Vec<&Marker> = markers.iter().filter(|m| m.pid == pid).collect();
        // Only markers after this process's first hold can be its own (pid reuse).
        let first_acq = holds[group[0]].acquired.seq;
        let ms: Vec<&Marker> = ms.into_iter().filter(|m| m.seq > first_acq).collect();
        if ms.iter().any(|m| m.started) {
            out.extend(by_trajectory(holds, &group, &ms, frecs));
        } else {
            out.extend(by_user_message(holds, &group, frecs));
        }
    }
    out.sort_by_key(|a| holds[a.holds[0]].acquired.seq);
    out
}

fn by_trajectory(holds: &[Hold], group: &[usize], ms: &[&Marker], frecs: &[&Rec]) -> Vec<Attempt> {
    // Pair started/ended markers first in, first out.
    struct Span {
        first: usize,
        ended: Option<u64>,
        overlapping: bool,
    }
    let mut spans: Vec<Span> = Vec::new();
    let mut open: Vec<usize> = Vec::new();
    for m in ms {
        if m.started {
            let Some(mut pos) = group.iter().rposition(|&h| holds[h].acquired.seq < m.seq) else {
                continue;
            };
            // The gateway queues its trajectory writes: under load `session.started`
            // lands after the first hold's release, even after the next hold's create.
            // The first hold is the one where the runner appended the user message.
            let prev_first = spans.last().map(|s: &Span| s.first);
            if pos > 0
                && prev_first.is_none_or(|f| f < pos - 1)
                && !appends_user(&holds[group[pos]], frecs).0
                && appends_user(&holds[group[pos - 1]], frecs).0
            {
                pos -= 1;
            }
            if !open.is_empty() {
                for &o in &open {
                    spans[o].overlapping = true;
                }
            }
            let overlapping = !open.is_empty();
            open.push(spans.len());
            spans.push(Span {
                first: pos,
                ended: None,
                overlapping,
            });
        } else if !open.is_empty() {
            let o = open.remove(0);
            spans[o].ended = Some(m.seq);
        }
    }
    let mut out = Vec::new();
    for (k, s) in spans.iter().enumerate() {
        let next_first = spans
            .iter()
            .skip(k + 1)
            .map(|n| n.first)
            .find(|&f| f > s.first)
            .unwrap_or(group.len());
        let mut last = next_first; // exclusive
        let mut cleanup = None;
        if let Some(e) = s.ended {
            // The cleanup hold: the first one acquired after session.ended.
            match (s.first..next_first).find(|&p| holds[group[p]].acquired.seq > e) {
                Some(p) => {
                    cleanup = Some(group[p]);
                    last = p + 1;
                }
                None => last = next_first,
            }
        }
        out.push(Attempt {
            holder: holds[group[s.first]].holder.clone(),
            holds: group[s.first..last].to_vec(),
            basis: "trajectory",
            ended: s.ended.is_some() || k + 1 < spans.len(),
            cleanup,
            overlapping: s.overlapping,
        });
    }
    out
}

/// Did the holder of `hold` append (or rewrite in) a user message to the session
/// file during it, and a session header? `frecs` are the file's records in seq order.
fn appends_user(hold: &Hold, frecs: &[&Rec]) -> (bool, bool) {
    let pid = hold.holder.pid;
    let end = hold.released.as_ref().map_or(u64::MAX, |m| m.seq);
    let (mut user, mut header) = (false, false);
    let lo = frecs.partition_point(|r| r.seq <= hold.acquired.seq);
    for r in frecs[lo..].iter().take_while(|r| r.seq < end) {
        if r.pid() != Some(pid) || !r.ok() || !matches!(r.op(), "write" | "release" | "rename") {
            continue;
        }
        for e in r.entries() {
            user |= e["type"] == "message" && e["role"] == "user";
            header |= e["type"] == "session";
        }
    }
    (user, header)
}

fn by_user_message(holds: &[Hold], group: &[usize], frecs: &[&Rec]) -> Vec<Attempt> {
    let mut starts: Vec<usize> = Vec::new(); // positions in group
    for (p, &h) in group.iter().enumerate() {
        let (user, header) = appends_user(&holds[h], frecs);
        if !user {
            continue;
        }
        let start = if header && p > 0 && starts.last() != Some(&(p - 1)) {
            p - 1
        } else {
            p
        };
        if starts.last() != Some(&start) {
            starts.push(start);
        }
    }
    let mut out = Vec::new();
    for (k, &s) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(group.len());
        out.push(Attempt {
            holder: holds[group[s]].holder.clone(),
            holds: group[s..end].to_vec(),
            basis: "user-message",
            ended: k + 1 < starts.len(),
            cleanup: None,
            overlapping: false,
        });
    }
    out
}

// ---------------------------------------------------------------------------
// The verdict on a gap
// ---------------------------------------------------------------------------

/// What the fence makes of one record of a gap.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// Does not move the fence (read, noop, lock, failed, fence_moved false).
    Harmless,
    /// Lines added at the end: whether every completed line is accepted by the rules,
    /// the bytes added, and whether a partial line is left at the end.
    Append {
        accepted: bool,
        bytes: u64,
        partial: bool,
    },
    /// chmod, chown, utimens, xattr, link: `mtime` when the change moved mtime.
    Meta { mtime: bool },
    /// Anything that changes identity or existing bytes (truncate, rewrite, rename,
    /// unlink, create, an external change other than a pure append).
    Rewrite,
}

/// Whether the rules accept an appended entry; `injected` tells whether the line of
/// an assistant entry is an OpenClaw transcript-only one (`provider` `openclaw`,
/// `model` `delivery-mirror` or `gateway-injected`), None when unknown.
fn entry_accepted(rules: Rules, e: &Value, injected: &dyn Fn(&Value) -> Option<bool>) -> bool {
    let ty = e["type"].as_str().unwrap_or("");
    let role = e["role"].as_str();
    let openclaw_assistant =
        || ty == "message" && role == Some("assistant") && injected(e) == Some(true);
    match rules {
        Rules::V2026_5_20 => role == Some("assistant"),
        Rules::V2026_5_22 => openclaw_assistant(),
        Rules::V2026_6_11 => {
            openclaw_assistant()
                || (ty == "custom" && e["customType"].as_str().is_some_and(|c| !c.is_empty()))
                || ty == "label"
                || ty == "session_info"
        }
    }
}

fn kind(rules: Rules, r: &Rec, injected: &dyn Fn(&Value) -> Option<bool>) -> Kind {
    if !r.ok() || !r.moved() || matches!(r.class(), Some("read" | "noop" | "lock")) {
        return Kind::Harmless;
    }
    if r.op().starts_with("lock-") {
        return Kind::Harmless;
    }
    let all_accepted = |es: &[Value]| es.iter().all(|e| entry_accepted(rules, e, injected));
    match (r.class(), r.op()) {
        (Some("metadata"), op) => {
            let before = r.v["before"]["mtime_ns"].as_i64();
            let after = r.v["after"]["mtime_ns"].as_i64();
            let mtime = match (before, after) {
                (Some(b), Some(a)) => a != b,
                _ => op == "utimens",
            };
            Kind::Meta { mtime }
        }
        (Some("append"), "write") => Kind::Append {
            accepted: all_accepted(r.entries()),
            bytes: r.v["len"].as_u64().unwrap_or(0),
            partial: r.v["partial"].as_u64().unwrap_or(0) > 0,
        },
        (Some("external"), _) => {
            let b = &r.v["before"];
            let a = &r.v["after"];
            let grew = a["size"].as_u64() > b["size"].as_u64();
            let same_ino = a["ino"].is_u64() && a["ino"] == b["ino"];
            if !r.entries().is_empty() && r.removed().is_empty() && grew && same_ino {
                Kind::Append {
                    accepted: all_accepted(r.entries()),
                    bytes: a["size"].as_u64().unwrap_or(0) - b["size"].as_u64().unwrap_or(0),
                    partial: false,
                }
            } else {
                Kind::Rewrite
            }
        }
        _ => Kind::Rewrite,
    }
}

/// The gateway's verdict on one gap.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Verdict {
    pub tripped: bool,
    /// seq of the first change the fence trips on.
    pub first_trip: Option<u64>,
    /// Why, in a few words.
    pub reason: String,
    /// Per seq of a gap record: `harmless`, `accepted`, `trips` or `moved` (moved the
    /// fence in a tripped gap, but is not why it tripped).
    pub labels: HashMap<u64, &'static str>,
}

/// Largest append `sessionFenceAdvanceIsBenign` reads
/// (`MAX_BENIGN_SESSION_FENCE_ADVANCE_BYTES`, 5.22 and 6.11).
const MAX_BENIGN_ADVANCE: u64 = 1024 * 1024;

/// Judge the records of one gap (seq order) by `rules`, as `assertSessionFileFence`
/// would at the runner's next acquisition (module doc). The fence compares the state
/// at the start of the gap with the state at its end, so the gap is judged as a
/// whole: metadata changes pass with an accepted append (only the appended bytes are
/// read), never alone (except ctime-only drift under 2026.6.11).
pub(crate) fn judge(
    rules: Rules,
    gap: &[&Rec],
    injected: &dyn Fn(&Value) -> Option<bool>,
) -> Verdict {
    let mut v = Verdict::default();
    let kinds: Vec<(u64, Kind)> = gap
        .iter()
        .map(|r| (r.seq, kind(rules, r, injected)))
        .collect();
    let moved: Vec<(u64, Kind)> = kinds
        .iter()
        .copied()
        .filter(|(_, k)| *k != Kind::Harmless)
        .collect();
    for (s, _) in &kinds {
        v.labels.insert(*s, "harmless");
    }
    if moved.is_empty() {
        v.reason = "nothing in the gap moved the fence".into();
        return v;
    }
    let disqualifies = |k: &Kind| {
        matches!(
            k,
            Kind::Rewrite
                | Kind::Append {
                    accepted: false,
                    ..
                }
        )
    };
    let first_bad = moved.iter().find(|(_, k)| disqualifies(k));
    let appends: Vec<&(u64, Kind)> = moved
        .iter()
        .filter(|(_, k)| matches!(k, Kind::Append { .. }))
        .collect();
    let total: u64 = appends
        .iter()
        .map(|(_, k)| match k {
            Kind::Append { bytes, .. } => *bytes,
            _ => 0,
        })
        .sum();
    let last_partial = matches!(
        appends.last(),
        Some((_, Kind::Append { partial: true, .. }))
    );
    let (tripped, reason) = if let Some((_, k)) = first_bad {
        let why = match (k, rules) {
            (Kind::Rewrite, _) => "a rewrite, truncate, rename, unlink or outside change",
            (_, Rules::V2026_5_20) => "appended lines that are not all assistant messages",
            (_, Rules::V2026_6_11) => {
                "appended lines other than OpenClaw-injected assistant, custom, label or session_info entries"
            }
            _ => "appended lines other than OpenClaw-injected assistant messages",
        };
        (true, why.to_string())
    } else if appends.is_empty() {
        let mtime = moved
            .iter()
            .any(|(_, k)| matches!(k, Kind::Meta { mtime: true }));
        if rules == Rules::V2026_6_11 && !mtime {
            (
                false,
                "ctime-only drift with unchanged content: forgiven".into(),
            )
        } else {
            (
                true,
                "a metadata change and no appended line to explain it".into(),
            )
        }
    } else if last_partial {
        (true, "the appended text does not end with a newline".into())
    } else if rules != Rules::V2026_5_20 && total > MAX_BENIGN_ADVANCE {
        (
            true,
            format!("{total} bytes appended, over the 1 MiB the fence reads"),
        )
    } else {
        let what = match rules {
            Rules::V2026_5_20 => "assistant lines appended",
            Rules::V2026_5_22 => "OpenClaw-injected assistant lines appended",
            Rules::V2026_6_11 => "mergeable lines appended",
        };
        (false, format!("accepted: {what}"))
    };
    v.tripped = tripped;
    v.reason = reason;
    if tripped {
        let first = first_bad.map_or(moved[0].0, |(s, _)| *s);
        v.first_trip = Some(first);
        for (s, k) in &moved {
            let l = if *s == first || disqualifies(k) {
                "trips"
            } else {
                "moved"
            };
            v.labels.insert(*s, l);
        }
    } else {
        for (s, _) in &moved {
            v.labels.insert(*s, "accepted");
        }
    }
    v
}

// ---------------------------------------------------------------------------
// Windows
// ---------------------------------------------------------------------------

/// One release window: the gap after a release by the runner and the hold that
/// ends it.
#[derive(Clone, Debug)]
pub(crate) struct Window {
    /// Index into the attempts.
    pub attempt: usize,
    /// 1-based within the attempt.
    pub index: usize,
    pub holder: Ident,
    pub released: Mark,
    /// The runner's next acquisition; None while the window is open.
    pub reacquired: Option<Mark>,
    /// The end of the hold that ended the gap; None while held or open.
    pub hold_end: Option<Mark>,
    /// The holder's last `stat` before the release (the fingerprint the fence keeps):
    /// the gap starts there. None without `stat` records (the gap starts at the release).
    pub fence_taken: Option<Mark>,
    /// The holder's first `stat` after the next acquisition (the check): the gap ends
    /// there. None without `stat` records (the gap ends at the acquisition).
    pub checked: Option<Mark>,
    /// The holder's last `stat` in the next hold: the absorbed stretch ends there (what
    /// follows is in the next window's gap). None without `stat` records (the whole
    /// hold is absorbed).
    pub absorbed_until: Option<Mark>,
    /// Checks inside the next hold (a `withSessionWriteLock` while the model-call hold
    /// is held, as a tool result is persisted), each with the fence read it compares
    /// with: others' changes between the two are judged with the gap.
    pub mid_checks: Vec<(Mark, Mark)>,
    /// The acquisition that ends the gap is the attempt's cleanup.
    pub cleanup: bool,
    /// Indices into the file records: in the gap (which may begin in the released hold
    /// and end in the next one, see `fence_taken` and `checked`), and in the absorbed
    /// stretch of the next hold.
    pub gap: Vec<usize>,
    pub held: Vec<usize>,
    pub verdict: Verdict,
    /// `takeover` (the gateway throws), `swallowed` (tripped at cleanup), None.
    pub outcome: Option<&'static str>,
    pub notes: Vec<String>,
}

/// The holder's `stat` records of the session file in hold `h` (the mount journals a
/// stat of a locked transcript by its holder's process only): the first (the check)
/// and the fence read, None when the hold has none (a journal from before `stat`
/// records, or a mount that does not write them).
///
/// The fence read is the first of the last two path stats of the hold when they
/// follow each other with nothing of the holder's in between but handle releases,
/// else the last one. `releaseForPrompt` (2026.5.22) stats the path twice: `const
/// fingerprint = await readSessionFileFingerprint(...)` (the fence, A), then
/// `readSessionFileFenceSnapshot` (B, with its readFile); `fenceFingerprint =
/// fingerprint` keeps A, so a change between A and B trips the next check. A
/// `withSessionWriteLock` run ends with one stat (`refreshSessionFileFence`) after
/// its write, which breaks the pair. A hold in which the holder wrote nothing is a
/// `withSessionWriteLock` run without a write: the check K, the before-write stat W0
/// and the refresh's snapshot stat S, which becomes the fence when it differs from
/// W0 (`if (!sameSessionFileFingerprint(beforeWrite, snapshot.fingerprint))`): its
/// fence read is the last stat (agreement test, seed 1796543173242158595, turn 3: a
/// chmod between W0 and S was absorbed by the gateway).
///
/// A read handle's `fstat` is no fence read (the kernel sends a GETATTR without a
/// file handle for `fstat` too): a stat with a read handle of the holder's open,
/// right after a read open or with no write of the holder's since the last one. The
/// gateway takes its fingerprint with a stat of the path, then reads the snapshot
/// (measured on the real gateway: a change between the fingerprint stat and the
/// snapshot read's `fstat` trips the next check). A read handle of another reader
/// in the gateway, open across the holder's write and its fence reads, hides none of
/// them.
///
/// Node's threads (only for a holder that stats from other threads than its main
/// one): a sync stat on the main thread (tid == pid) is a fence read only as the
/// first stat after the holder's write (`refreshAfterOwnedSessionWrite`'s
/// `statSync`); others are the session manager reading the transcript. The async
/// stat right after such sync stats is a reader too (`chat.history`: two
/// `statSync`s, a `stat`, a `readFile`). Checks inside the hold: see the loop.
///
/// A stat whose thread's next record is an `open` is that open's permission check,
/// not a stat the gateway made: with `default_permissions` and the attr TTL of 0 a
/// locked transcript gets, the kernel sends a GETATTR before every OPEN, on the
/// opening thread, which is blocked in open(2) until it is answered. So the
/// snapshot's readFile adds a third stat (C) after A and B, and taking the last two
/// would make B the fence (agreement test, seed 1796569708900737669, turn 4: a chmod
/// between A and B called absorbed while the gateway tripped on it).
fn hold_stats(h: &Hold, frecs: &[&Rec]) -> Option<HoldStats> {
    let end = h.released.as_ref().map_or(u64::MAX, |m| m.seq);
    let lo = frecs.partition_point(|r| r.seq <= h.acquired.seq);
    let pid = h.holder.pid;
    // The holder's records of the hold: every rule below looks at these only.
    let recs: Vec<&Rec> = frecs[lo..]
        .iter()
        .take_while(|r| r.seq < end)
        .filter(|r| r.ok() && r.pid() == Some(pid))
        .copied()
        .collect();
    let perm_checks: HashSet<u64> = permission_checks(recs.iter()).into_iter().collect();
    // The main-thread rules below are Node's (sync calls on the main thread, async
    // ones on the libuv pool); a holder that stats only from its main thread (a
    // single-threaded runner) has none of them.
    let threaded = recs
        .iter()
        .any(|r| r.op() == "stat" && r.v["tid"].as_u64().is_some_and(|t| t != u64::from(pid)));
    let is_change = |r: &Rec| {
        matches!(r.class(), Some("append" | "rewrite" | "metadata")) && !r.path().ends_with(".lock")
    };
    // For each record, whether the holder's next open or change of the file after it
    // is a write (a write open or a change) rather than a read open.
    let mut write_next = vec![false; recs.len()];
    let mut next = false;
    for (k, r) in recs.iter().enumerate().rev() {
        write_next[k] = next;
        if is_change(r) || r.op() == "create" {
            next = true;
        } else if r.op() == "open" {
            next = r.str("access").is_some_and(|a| a != "read");
        }
    }
    let mut open = 0i64;
    let mut first: Option<Mark> = None;
    // The last path stat, the one before it when nothing of the holder's but handle
    // releases came between them, and whether the run of such stats goes on.
    let mut last: Option<Mark> = None;
    let mut pair: Option<Mark> = None;
    let mut run = false;
    // Whether the holder changed the file in this stretch (its message or entry
    // append), and since its last stat on a worker thread.
    let mut wrote = false;
    let mut wrote_since_worker_stat = false;
    let mut seen_worker_stat = false;
    let mut wrote_since_stat = false;
    let mut prev_reader_stat = false;
    let mut prev_read_open = false;
    let mut wrote_since_read_open = false;
    // The check of the stretch (the hold's first stat, then each check inside it).
    let mut check: Option<Mark> = None;
    let mut mid = Vec::new();
    // The fence read of a stretch: never its check (a stretch whose only stats are
    // the check and one more); in a stretch without a write of the holder's, the last
    // stat (see the doc above); else the first of the last two in a row.
    let fence_of = |check: &Mark, last: &Mark, pair: &Option<Mark>, wrote: bool| match pair {
        Some(p) if p.seq != check.seq && wrote => p.clone(),
        _ => last.clone(),
    };
    for (k, r) in recs.iter().enumerate() {
        let main_thread = threaded && r.v["tid"].as_u64() == Some(u64::from(pid));
        // Only read handles count: a handle opened to write (an append) is no read
        // that stats, and its RELEASE comes when the kernel sends it, maybe after the
        // holder's next path stats, which must not be taken for fstats. (Journals
        // without `access`: every handle counts.)
        let counts = r.str("access").is_none_or(|a| a == "read");
        let after_reader_stat = std::mem::replace(&mut prev_reader_stat, false);
        let after_read_open = std::mem::replace(&mut prev_read_open, r.op() == "open" && counts);
        if is_change(r) {
            wrote = true;
            wrote_since_worker_stat = true;
            wrote_since_stat = true;
            wrote_since_read_open = true;
        }
        match r.op() {
            "release" => {
                if counts {
                    open = (open - 1).max(0);
                }
            }
            "stat" if perm_checks.contains(&r.seq) => {}
            // A sync stat (main thread, tid == pid) is a fence read only right after
            // the holder's write (refreshAfterOwnedSessionWrite's statSync); else it
            // is the session manager reading the transcript.
            "stat" if main_thread && !wrote_since_stat => prev_reader_stat = true,
            // The async stat a reader in the gateway makes right after its sync stats
            // (chat.history: two statSyncs, an async stat, a readFile).
            "stat" if after_reader_stat => {}
            // An fstat of a read handle (a readFile's): with a read handle open, a
            // stat right after a read open, or with no write of the holder's since
            // the last one. A read handle of another reader in the gateway can be
            // open across the holder's write and its fence reads: those still count.
            "stat" if open > 0 && (after_read_open || !wrote_since_read_open) => {}
            "stat" => {
                wrote_since_stat = false;
                // A stat on a worker thread (an async fs.stat: the gateway's fence
                // reads and checks; sync stats run on the main thread, tid == pid)
                // that starts a run with no write of the holder's since its last
                // worker-thread stat is a check inside the hold: a
                // `withSessionWriteLock` while the model-call hold is held (a tool
                // result's persist), whose assertSessionFileFence compares with the
                // fence read after the last write.
                let worker = r.v["tid"].as_u64().is_some_and(|t| t != u64::from(pid));
                // So is the first worker-thread stat after a write of the holder's
                // when its next open or change is a write, not a readFile: the check
                // of the next write's `withSessionWriteLock` (a tool result's, right
                // after the assistant's tool call), not the fence reads after the
                // write (A and B, then the snapshot's readFile).
                let checks_next_write = wrote_since_worker_stat && write_next[k];
                if worker {
                    if let (Some(c), Some(l)) = (&check, &last)
                        && ((!run && seen_worker_stat && !wrote_since_worker_stat)
                            || checks_next_write)
                    {
                        let fence = fence_of(c, l, &pair, wrote);
                        mid.push((fence, r.mark()));
                        check = Some(r.mark());
                        wrote = false;
                        last = None;
                    }
                    seen_worker_stat = true;
                    wrote_since_worker_stat = false;
                }
                first.get_or_insert_with(|| r.mark());
                check.get_or_insert_with(|| r.mark());
                let prev = last.replace(r.mark());
                pair = if run { prev } else { None };
                run = true;
            }
            op => {
                if matches!(op, "open" | "create") && counts {
                    open += 1;
                    wrote_since_read_open = false;
                }
                run = false;
            }
        }
    }
    let (first, check, last) = (first?, check?, last?);
    let fence = fence_of(&check, &last, &pair, wrote);
    Some(HoldStats { first, fence, mid })
}

/// The holder's stats of one hold that bound what the fence saw (see [`hold_stats`]).
struct HoldStats {
    /// The first (the check at the acquisition).
    first: Mark,
    /// The fence read before the release.
    fence: Mark,
    /// The checks inside the hold, each with the fence read it compares with: a
    /// change between the two trips at the check.
    mid: Vec<(Mark, Mark)>,
}

/// The seqs of the `stat` records in `recs` (one process's, in seq order) that are
/// the kernel's permission check of an `open`: the next record of the same thread is
/// that `open` (or `create`). Records without a `tid` are never checks.
fn permission_checks<'a, 'b: 'a>(recs: impl Iterator<Item = &'a &'b Rec>) -> Vec<u64> {
    let mut last_of_tid: HashMap<u64, (u64, bool)> = HashMap::new();
    let mut out = Vec::new();
    for r in recs {
        let Some(tid) = r.v["tid"].as_u64() else {
            continue;
        };
        if let Some((seq, true)) = last_of_tid.get(&tid)
            && matches!(r.op(), "open" | "create")
        {
            out.push(*seq);
        }
        last_of_tid.insert(tid, (r.seq, r.op() == "stat"));
    }
    out
}

/// The windows of every attempt, in order of release. `frecs` are the records of the
/// session file and the other processes' lock records of its lock, in seq order.
///
/// With the holder's `stat` records, a window's gap runs from the holder's last stat
/// before the release to its first stat after the next acquisition (the check), and
/// the absorbed stretch of the next hold from that check to its last stat before its
/// own release; without them, from the release to the acquisition and over the whole
/// next hold (module doc, "Holds, attempts, windows").
pub(crate) fn windows(
    rules: Rules,
    holds: &[Hold],
    attempts: &[Attempt],
    frecs: &[&Rec],
    injected: &dyn Fn(&Value) -> Option<bool>,
) -> Vec<Window> {
    let mut out = Vec::new();
    for (ai, a) in attempts.iter().enumerate() {
        let pid = a.holder.pid;
        // Each hold is the released one of a window and the next one of the window
        // before: its stats are read once.
        let stats: Vec<Option<HoldStats>> = a
            .holds
            .iter()
            .map(|&x| hold_stats(&holds[x], frecs))
            .collect();
        for i in 0..a.holds.len() {
            let h = &holds[a.holds[i]];
            let Some(rel) = h.released.clone() else {
                break;
            };
            let next = a.holds.get(i + 1).map(|&n| &holds[n]);
            if next.is_none() && a.ended {
                break;
            }
            let h_stats = stats[i].as_ref();
            let n_stats = stats.get(i + 1).and_then(Option::as_ref);
            let acquired = next.map_or(u64::MAX, |n| n.acquired.seq);
            let hold_end = next.and_then(|n| n.released.clone());
            // The gap: after the holder's last stat (else the release) to its first
            // stat in the next hold (else the acquisition); the absorbed stretch: to
            // its last stat in the next hold (else that hold's end).
            let gap_start = h_stats.map_or(rel.seq, |s| s.fence.seq);
            let gap_end = n_stats.map_or(acquired, |s| s.first.seq);
            let held_end = match n_stats {
                Some(s) => s.fence.seq,
                None => hold_end.as_ref().map_or(u64::MAX, |m| m.seq),
            };
            let mids: &[(Mark, Mark)] = n_stats.map_or(&[], |s| &s.mid);
            // frecs are in seq order: find the ranges by binary search.
            let range = |after: u64, before: u64| {
                let lo = frecs.partition_point(|r| r.seq <= after);
                let hi = frecs.partition_point(|r| r.seq < before).max(lo);
                (lo..hi).filter(|&k| frecs[k].ok()).collect::<Vec<usize>>()
            };
            // The runner's own changes while it holds the lock are its registered
            // writes, folded into the fence whatever the moment (a transcript created
            // in a hold before the holder's first stat): absorbed, never in the gap.
            let in_lock = |r: &Rec| r.seq <= rel.seq || r.seq >= acquired;
            let (mut gap, own_edge): (Vec<usize>, Vec<usize>) = range(gap_start, gap_end)
                .into_iter()
                .partition(|&k| !(in_lock(frecs[k]) && frecs[k].pid() == Some(pid)));
            // A check inside the next hold sees what others changed since the fence
            // read before it: that is judged with the gap.
            let held = if next.is_some() {
                let mut v = own_edge;
                for k in range(gap_end, held_end) {
                    let r = frecs[k];
                    let before_mid = mids
                        .iter()
                        .any(|(f, c)| r.seq > f.seq && r.seq < c.seq && r.pid() != Some(pid));
                    if before_mid {
                        gap.push(k);
                    } else {
                        v.push(k);
                    }
                }
                v
            } else {
                Vec::new()
            };
            let gap_recs: Vec<&Rec> = gap.iter().map(|&k| frecs[k]).collect();
            let verdict = judge(rules, &gap_recs, injected);
            let cleanup = next.is_some() && a.cleanup == a.holds.get(i + 1).copied();
            let outcome = match (verdict.tripped, next.is_some(), cleanup) {
                (true, true, true) => Some("swallowed"),
                (true, true, false) => Some("takeover"),
                _ => None,
            };
            let mut notes = Vec::new();
            let own_change =
                |r: &Rec| r.pid() == Some(pid) && r.moved() && r.class() != Some("read");
            let unlocked = |r: &Rec| r.seq > rel.seq && r.seq < acquired;
            if gap_recs.iter().any(|r| unlocked(r) && own_change(r)) {
                notes.push(format!(
                    "the runner's own process ({}) changed the file while it did not hold the lock: another lane of the same gateway?",
                    a.holder.label()
                ));
            }
            if h_stats.is_none() || (next.is_some() && n_stats.is_none()) {
                notes.push(
                    "no stat records of the runner in its holds (an older journal, or a mount that does not write them): the whole hold is taken as absorbed, so a change within a few ms of its acquisition or release may in fact have tripped the fence"
                        .into(),
                );
            }
            if a.overlapping {
                notes.push(
                    "another attempt of the same process ran on this file at the same time (two lanes): window boundaries mix their holds"
                        .into(),
                );
            }
            let tripped = verdict.tripped;
            if tripped && i + 2 < a.holds.len() {
                notes.push(
                    "the runner took the lock again afterwards in this attempt: the gateway did not trip here (other rules?)"
                        .into(),
                );
            }
            if tripped && next.is_none() {
                notes.push("open: the fence trips at the runner's next acquisition".into());
            }
            if cleanup && tripped {
                notes.push(
                    "tripped at the attempt's cleanup: the gateway swallows it (no error, the reply goes out, the session flush is skipped)"
                        .into(),
                );
            }
            out.push(Window {
                attempt: ai,
                index: i + 1,
                holder: h.holder.clone(),
                released: rel,
                reacquired: next.map(|n| n.acquired.clone()),
                hold_end,
                fence_taken: h_stats.map(|s| s.fence.clone()),
                checked: n_stats.map(|s| s.first.clone()),
                mid_checks: n_stats.map_or(Vec::new(), |s| s.mid.clone()),
                absorbed_until: n_stats.map(|s| s.fence.clone()),
                cleanup,
                gap,
                held,
                verdict,
                outcome,
                notes,
            });
            if tripped {
                break;
            }
        }
    }
    out.sort_by_key(|w| w.released.seq);
    out
}

/// Everything `explain` knows about one session file.
pub(crate) struct Analysis {
    pub recs: Vec<Rec>,
    pub holds: Vec<Hold>,
    pub attempts: Vec<Attempt>,
    pub windows: Vec<Window>,
}

/// Analyse the session file `file` (mount-relative) from the records of the whole
/// mount's journal (any order; those of other files are ignored).
pub(crate) fn analyze(
    rules: Rules,
    file: &str,
    mut recs: Vec<Rec>,
    injected: &dyn Fn(&Value) -> Option<bool>,
) -> Analysis {
    recs.sort_by_key(|r| r.seq);
    let lock = format!("{file}.lock");
    let traj = trajectory_of(file);
    recs.retain(|r| {
        let p = r.path();
        p == file
            || p == lock
            || p == traj
            || r.str("to") == Some(file)
            || r.str("to") == Some(&lock)
    });
    let hs = holds(&lock, &recs);
    let ms = markers(&traj, &recs);
    let file_only: Vec<&Rec> = recs
        .iter()
        .filter(|r| r.path() == file || r.str("to") == Some(file))
        .collect();
    let att = attempts(&hs, &ms, &file_only);
    // The file's records, plus lock records of the lock that concern another
    // process than the attempt's runner (a foreign hold in a gap, a steal).
    let frecs: Vec<usize> = recs
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            r.path() == file
                || r.str("to") == Some(file)
                || (r.path() == lock && r.op().starts_with("lock-"))
        })
        .map(|(i, _)| i)
        .collect();
    let fr: Vec<&Rec> = frecs.iter().map(|&i| &recs[i]).collect();
    let mut ws = windows(rules, &hs, &att, &fr, injected);
    // A runner's own lock records and stats are the window's boundaries, not changes
    // in it.
    for w in &mut ws {
        let pid = att[w.attempt].holder.pid;
        let own_lock = |k: &usize| {
            let r = fr[*k];
            (r.path() == lock
                && r.pid() == Some(pid)
                && r.v["lock"]["holder"]["pid"].as_u64() == Some(pid as u64))
                || (r.op() == "stat" && r.pid() == Some(pid))
        };
        w.gap.retain(|k| !own_lock(k));
        w.held.retain(|k| !own_lock(k));
        // Map indices into `fr` to indices into `recs`.
        w.gap = w.gap.iter().map(|&k| frecs[k]).collect();
        w.held = w.held.iter().map(|&k| frecs[k]).collect();
    }
    Analysis {
        recs,
        holds: hs,
        attempts: att,
        windows: ws,
    }
}

/// `dir/<id>.trajectory.jsonl` for `dir/<id>.jsonl`.
fn trajectory_of(file: &str) -> String {
    match file.strip_suffix(".jsonl") {
        Some(stem) => format!("{stem}.trajectory.jsonl"),
        None => format!("{file}.trajectory.jsonl"),
    }
}

// ---------------------------------------------------------------------------
// `changes`: the runner protocol's verdict
// ---------------------------------------------------------------------------

/// The summary of `sessionfs changes`, worst last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ChangesVerdict {
    /// Only reads and no-ops (and lock records): nothing happened.
    Nothing,
    /// Only appends by the asking runner (its pid, and lane when given).
    OwnAppends,
    /// Metadata changed (chmod, chown, utimens, xattr), content did not: take a new
    /// fingerprint, nothing to merge.
    Metadata,
    /// Entries appended by others: mergeable by entry id.
    ForeignAppends,
    /// Truncate, rewrite, rename over, unlink, re-create, or an outside change that is
    /// not a pure append: reload the file.
    Rewrite,
}

impl ChangesVerdict {
    /// `nothing`, `own-appends`, `metadata`, `foreign-appends`, `rewrite`.
    pub fn name(self) -> &'static str {
        match self {
            ChangesVerdict::Nothing => "nothing",
            ChangesVerdict::OwnAppends => "own-appends",
            ChangesVerdict::Metadata => "metadata",
            ChangesVerdict::ForeignAppends => "foreign-appends",
            ChangesVerdict::Rewrite => "rewrite",
        }
    }
}

/// Is `r` a change by the asking runner: its `pid`, and its `lane` when one is given?
fn is_own(r: &Rec, pid: Option<u32>, lane: Option<&str>) -> bool {
    pid.is_some() && r.pid() == pid && lane.is_none_or(|l| r.str("lane") == Some(l))
}

/// What one record means to a runner.
pub(crate) fn change_class(r: &Rec, pid: Option<u32>, lane: Option<&str>) -> ChangesVerdict {
    if !r.ok() {
        return ChangesVerdict::Nothing;
    }
    match (r.class(), r.op()) {
        (Some("read" | "noop" | "lock") | None, _) => ChangesVerdict::Nothing,
        (_, op) if op.starts_with("lock-") => ChangesVerdict::Nothing,
        (Some("metadata"), _) => ChangesVerdict::Metadata,
        (Some("append"), "create") => ChangesVerdict::Rewrite,
        (Some("append"), _) if is_own(r, pid, lane) => ChangesVerdict::OwnAppends,
        (Some("append"), _) => ChangesVerdict::ForeignAppends,
        (Some("external"), _) if !r.entries().is_empty() && r.removed().is_empty() => {
            ChangesVerdict::ForeignAppends
        }
        _ => ChangesVerdict::Rewrite,
    }
}

/// The verdict over a cursor's records: the worst of [`change_class`].
pub(crate) fn changes_verdict(
    recs: &[Rec],
    pid: Option<u32>,
    lane: Option<&str>,
) -> ChangesVerdict {
    recs.iter()
        .map(|r| change_class(r, pid, lane))
        .max()
        .unwrap_or(ChangesVerdict::Nothing)
}

// ---------------------------------------------------------------------------
// The gateway's log
// ---------------------------------------------------------------------------

/// One `EmbeddedAttemptSessionTakeoverError` of the gateway's log (the `lane task
/// error` lines of one takeover, one per lane).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Takeover {
    /// 1-based line number of the first line.
    pub line: usize,
    /// The line's time as written, and in ns since the epoch when it has a date.
    pub time: String,
    pub time_ns: Option<i128>,
    /// `lane=` of each line, in order (`main`, `session:agent:main:main`).
    pub lanes: Vec<String>,
    pub duration_ms: Option<u64>,
    /// The session file the error names (possibly shortened by the reporter).
    pub path: String,
}

/// The takeovers in a gateway log: console lines (`<RFC 3339> [diagnostic] lane task
/// error: lane=main durationMs=… error="EmbeddedAttemptSessionTakeoverError: session
/// file changed while embedded prompt lock was released: <file>"`), JSON file-log lines
/// (`{"1": "lane task error: …", "time": "…"}`) and pasted variants. Lines of one
/// takeover (same file, within 1 s) are merged, their lanes kept in order.
pub(crate) fn parse_gateway_log(text: &str) -> Vec<Takeover> {
    const MARK: &str = "was released: ";
    let mut out: Vec<Takeover> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if !line.contains("EmbeddedAttemptSessionTakeoverError")
            || !line.contains("lane task error")
        {
            continue;
        }
        let mut msg = line.to_string();
        let mut time = String::new();
        if line.trim_start().starts_with('{')
            && let Ok(v) = serde_json::from_str::<Value>(line.trim())
        {
            if let Some(m) = v["1"].as_str().or(v["message"].as_str()) {
                msg = m.to_string();
            }
            time = v["time"]
                .as_str()
                .or(v["_meta"]["date"].as_str())
                .unwrap_or("")
                .to_string();
        }
        if time.is_empty() {
            let first = line.split_whitespace().next().unwrap_or("");
            if parse_time_ns(first).is_some() || looks_like_clock(first) {
                time = first.to_string();
            }
        }
        let Some(at) = msg.find(MARK) else { continue };
        let rest = &msg[at + MARK.len()..];
        let path = match rest.rfind(".jsonl") {
            Some(e) => rest[..e + ".jsonl".len()].to_string(),
            None => rest
                .trim_end_matches(|c: char| c == '"' || c == '\\' || c == '}' || c.is_whitespace())
                .to_string(),
        };
        let lane = msg
            .split_whitespace()
            .find_map(|w| w.strip_prefix("lane="))
            .unwrap_or("?")
            .to_string();
        let duration_ms = msg
            .split_whitespace()
            .find_map(|w| w.strip_prefix("durationMs="))
            .and_then(|d| d.parse().ok());
        let time_ns = parse_time_ns(&time);
        if let Some(prev) = out.last_mut() {
            let same_file = base_name(&prev.path) == base_name(&path);
            let close = match (prev.time_ns, time_ns) {
                (Some(a), Some(b)) => (a - b).abs() <= 1_000_000_000,
                _ => prev.time == time,
            };
            if same_file && close && !prev.lanes.contains(&lane) {
                prev.lanes.push(lane);
                continue;
            }
        }
        out.push(Takeover {
            line: n + 1,
            time,
            time_ns,
            lanes: vec![lane],
            duration_ms,
            path,
        });
    }
    out
}

fn looks_like_clock(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 8 && b[2] == b':' && b[5] == b':' && b[..2].iter().all(u8::is_ascii_digit)
}

/// The file name of a logged path, without the `...`/`…` a reporter put in front.
fn base_name(p: &str) -> &str {
    p.rsplit(['/', '\\', '…'])
        .next()
        .unwrap_or(p)
        .trim_start_matches('.')
}

/// The window of `ws` (tripped, `takeover`, not yet used) that caused the takeover
/// `t`: the latest reacquired at most 2 s after the log line and at least
/// `durationMs` + 2 s before it; without a time in the log, the first unused one.
pub(crate) fn match_takeover(t: &Takeover, ws: &[Window], used: &HashSet<usize>) -> Option<usize> {
    let candidates = ws
        .iter()
        .enumerate()
        .filter(|(i, w)| w.verdict.tripped && w.outcome == Some("takeover") && !used.contains(i));
    match t.time_ns {
        Some(at) => {
            let slack = 2_000_000_000i128;
            let lo = at - t.duration_ms.unwrap_or(600_000) as i128 * 1_000_000 - slack;
            candidates
                .filter_map(|(i, w)| {
                    let r = parse_time_ns(&w.reacquired.as_ref()?.ts)?;
                    (r <= at + slack && r >= lo).then_some((i, r))
                })
                .max_by_key(|(_, r)| *r)
                .map(|(i, _)| i)
        }
        None => candidates.map(|(i, _)| i).next(),
    }
}

// ---------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------

/// Parse an RFC 3339 date-time (`2026-12-06T04:28:40.123456789Z`, `T` or a space,
/// fraction optional, `Z`, `±HH:MM`, `±HHMM` or no offset = UTC) to ns since the epoch.
pub(crate) fn parse_time_ns(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac_ns: i128 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i];
        if digits.is_empty() {
            return None;
        }
        let mut padded: String = digits.chars().take(9).collect();
        while padded.len() < 9 {
            padded.push('0');
        }
        frac_ns = padded.parse().ok()?;
    }
    let offset_s: i64 = match &s[i..] {
        "" | "Z" | "z" => 0,
        tz => {
            let sign = match tz.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let digits: String = tz[1..].chars().filter(|c| *c != ':').collect();
            if digits.len() != 4 || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let oh: i64 = digits[..2].parse().ok()?;
            let om: i64 = digits[2..].parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset_s;
    Some(secs as i128 * 1_000_000_000 + frac_ns)
}

/// (year, month, day) → days since 1970-01-01; H. Hinnant's `days_from_civil`.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn ms_between(a: &str, b: &str) -> Option<f64> {
    Some((parse_time_ns(b)? - parse_time_ns(a)?) as f64 / 1e6)
}

// ---------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------

/// A change as `explain --json` and `changes --json` print it: the record with
/// `class`, `lock` (its `lock_context`, or null), and the given extra keys.
fn change_json(r: &Rec, extra: &[(&str, Value)]) -> Value {
    let mut m: Map<String, Value> = r.v.as_object().cloned().unwrap_or_default();
    let class = r.class().map_or(Value::Null, Value::from);
    m.insert("class".into(), class);
    m.insert("lock".into(), r.v["lock_context"].clone());
    for (k, v) in extra {
        m.insert((*k).into(), v.clone());
    }
    Value::Object(m)
}

/// For a gap record made while a lock was held: `after_fence_read` (in the released
/// hold, after the holder's fence read: the fence never saw it) or `before_check` (in
/// the next hold, before the holder's first stat: the check sees it).
fn hold_edge(w: &Window, r: &Rec) -> Option<&'static str> {
    if r.seq < w.released.seq {
        Some("after_fence_read")
    } else if w.reacquired.as_ref().is_some_and(|m| r.seq > m.seq) {
        Some("before_check")
    } else {
        None
    }
}

/// One window as `explain --json` prints it.
fn window_json(a: &Analysis, w: &Window, file: &str, rules: Rules) -> Value {
    let att = &a.attempts[w.attempt];
    let mut changes = Vec::new();
    for &k in &w.gap {
        let r = &a.recs[k];
        let label = w.verdict.labels.get(&r.seq).copied().unwrap_or("harmless");
        let mut extra = vec![("absorbed", Value::Bool(false)), ("fence", label.into())];
        if r.pid() == Some(att.holder.pid) && !r.path().ends_with(".lock") {
            extra.push(("same_process", Value::Bool(true)));
        }
        if let Some(edge) = hold_edge(w, r) {
            extra.push(("in_hold", edge.into()));
        }
        changes.push(change_json(r, &extra));
    }
    for &k in &w.held {
        let r = &a.recs[k];
        changes.push(change_json(
            r,
            &[
                ("absorbed", Value::Bool(true)),
                ("fence", "absorbed".into()),
            ],
        ));
    }
    let gap_ms = w
        .reacquired
        .as_ref()
        .and_then(|m| ms_between(&w.released.ts, &m.ts));
    json!({
        "file": file,
        "rules": rules.name(),
        "attempt": w.attempt + 1,
        "attempt_start": a.holds[att.holds[0]].acquired.json(),
        "attempt_basis": att.basis,
        "window": w.index,
        "holder": w.holder.json(),
        "released": w.released.json(),
        "reacquired": w.reacquired.as_ref().map(Mark::json),
        "hold_end": w.hold_end.as_ref().map(Mark::json),
        "fence_taken": w.fence_taken.as_ref().map(Mark::json),
        "checked": w.checked.as_ref().map(Mark::json),
        "absorbed_until": w.absorbed_until.as_ref().map(Mark::json),
        "mid_checks": w.mid_checks.iter().map(|(f, c)| json!({"fence_read": f.json(), "check": c.json()})).collect::<Vec<_>>(),
        "gap_ms": gap_ms,
        "cleanup": w.cleanup,
        "tripped": w.verdict.tripped,
        "first_trip": w.verdict.first_trip,
        "reason": w.verdict.reason,
        "outcome": w.outcome,
        "notes": w.notes,
        "changes": changes,
    })
}

fn entries_text(r: &Rec) -> String {
    crate::journal::cli::summarize_entries(r.entries(), r.removed())
}

/// A table row for a change: time, seq, op, process (tid), lane, class, lock, entries.
fn change_row(r: &Rec, mark: &str) -> String {
    let ts = r.ts();
    let time = ts.get(11..23).unwrap_or(ts);
    let who = match (r.str("comm"), r.pid()) {
        (Some(c), Some(p)) => format!("{c}[{p}]"),
        _ => "-".into(),
    };
    let lock = match r.str("lock_context") {
        Some("held_by_other") => format!(
            "held_by_other:{}[{}]",
            r.v["lock_holder"]["comm"].as_str().unwrap_or("?"),
            r.v["lock_holder"]["pid"]
        ),
        Some(c) => c.to_string(),
        None => "-".into(),
    };
    let mut what = entries_text(r);
    if r.op() == "chmod"
        && let Some(m) = r.v["mode"].as_u64()
    {
        what = format!("mode {m:04o} {what}");
    }
    if let Some(to) = r.str("to") {
        what = format!("{} -> {to} {what}", r.path());
    }
    format!(
        "    {time:<12} {:>7} {:<12} {who:<22} {:<8} {:<9} {lock:<24} {mark:<8} {what}",
        r.seq,
        r.op(),
        r.str("lane").unwrap_or("-"),
        r.class().unwrap_or("-"),
    )
}

fn window_text(a: &Analysis, w: &Window, out: &mut String) {
    let att = &a.attempts[w.attempt];
    let t = |m: &Mark| format!("#{} {}", m.seq, m.ts.get(11..23).unwrap_or(&m.ts));
    let end = match &w.reacquired {
        Some(m) => {
            let ms = ms_between(&w.released.ts, &m.ts)
                .map_or(String::new(), |x| format!(" ({x:.0} ms)"));
            format!(
                "reacquired {}{ms}{}",
                t(m),
                if w.cleanup { " [cleanup]" } else { "" }
            )
        }
        None => "open (not reacquired)".into(),
    };
    let verdict = if w.verdict.tripped {
        format!(
            "TRIPPED at #{} ({}): {}",
            w.verdict.first_trip.unwrap_or(0),
            w.outcome.unwrap_or("pending"),
            w.verdict.reason
        )
    } else {
        format!("ok: {}", w.verdict.reason)
    };
    out.push_str(&format!(
        "  window {}.{}  {} tid {}  released {}  {end}\n    {verdict}\n",
        w.attempt + 1,
        w.index,
        att.holder.label(),
        w.holder.tid.map_or("-".into(), |x| x.to_string()),
        t(&w.released),
    ));
    if w.fence_taken.is_some() || w.checked.is_some() {
        let at = |m: &Option<Mark>| m.as_ref().map_or("-".into(), t);
        out.push_str(&format!(
            "    holder's stats: fence taken {}  checked {}  absorbed until {}\n",
            at(&w.fence_taken),
            at(&w.checked),
            at(&w.absorbed_until),
        ));
        for (f, c) in &w.mid_checks {
            out.push_str(&format!(
                "    checked again inside the hold at {} against the fence read at {}\n",
                t(c),
                t(f)
            ));
        }
    }
    for n in &w.notes {
        out.push_str(&format!("    note: {n}\n"));
    }
    let mut reads = 0;
    // In journal order (a check inside the hold puts gap changes among absorbed ones).
    let mut rows: Vec<(usize, bool)> = w
        .gap
        .iter()
        .map(|&k| (k, false))
        .chain(w.held.iter().map(|&k| (k, true)))
        .collect();
    rows.sort_by_key(|&(k, _)| k);
    for (k, absorbed) in rows {
        let r = &a.recs[k];
        if r.class() == Some("read") {
            reads += 1;
            continue;
        }
        let mark = if absorbed {
            "absorbed"
        } else {
            w.verdict.labels.get(&r.seq).copied().unwrap_or("harmless")
        };
        let mark = match hold_edge(w, r) {
            Some(edge) if !absorbed => format!("{mark} ({edge})"),
            _ => mark.to_string(),
        };
        out.push_str(&change_row(r, &mark));
        out.push('\n');
    }
    if reads > 0 {
        out.push_str(&format!(
            "    (+{reads} opens, closes and stats for reading: harmless)\n"
        ));
    }
}

// ---------------------------------------------------------------------------
// Files on the mount
// ---------------------------------------------------------------------------

/// A session file on a mount: its absolute path, the mount root and the path relative
/// to it (as records name it).
struct OnMount {
    abs: PathBuf,
    root: PathBuf,
    rel: String,
}

/// Find the mount root of `path` (the topmost ancestor on the same filesystem, as
/// `sessionfs journal` does) and check it has a `.journal`.
fn on_mount(path: &Path) -> Result<OnMount, String> {
    let io_err = |p: &Path, e: io::Error| format!("{}: {e}", p.display());
    let abs = match path.canonicalize() {
        Ok(p) => p,
        Err(_) => {
            let parent = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let name = path
                .file_name()
                .ok_or_else(|| format!("{}: not a file name", path.display()))?;
            parent
                .canonicalize()
                .map_err(|e| io_err(parent, e))?
                .join(name)
        }
    };
    let dir = if abs.is_dir() {
        abs.clone()
    } else {
        abs.parent().unwrap_or(Path::new("/")).to_path_buf()
    };
    let dev = std::fs::metadata(&dir).map_err(|e| io_err(&dir, e))?.dev();
    let mut root = dir.clone();
    while let Some(parent) = root.parent() {
        match std::fs::metadata(parent) {
            Ok(m) if m.dev() == dev => root = parent.to_path_buf(),
            _ => break,
        }
    }
    if !root.join(".journal").is_file() {
        return Err(format!(
            "{} is not on a sessionfs mount ({} has no .journal): pass a session file on a mounted sessions directory",
            path.display(),
            root.display()
        ));
    }
    let rel = abs
        .strip_prefix(&root)
        .map_err(|_| format!("{}: outside {}", abs.display(), root.display()))
        .map(|r| crate::names::encode_os(r.as_os_str()))?;
    Ok(OnMount { abs, root, rel })
}

/// The records of the mount's journal (`<root>/.journal`) whose line mentions
/// `needle` (a cheap filter before parsing).
fn read_mount_records(root: &Path, needle: &str) -> Result<Vec<Rec>, String> {
    let vf = root.join(".journal");
    let f = File::open(&vf).map_err(|e| format!("{}: {e}", vf.display()))?;
    let mut out = Vec::new();
    read_lines(&f, 0, |line| {
        if let Ok(s) = std::str::from_utf8(line)
            && s.contains(needle)
            && let Ok(v) = serde_json::from_str::<Value>(s)
            && let Some(r) = Rec::new(v)
        {
            out.push(r);
        }
    })
    .map_err(|e| format!("{}: {e}", vf.display()))?;
    Ok(out)
}

/// Call `each` for every complete line of `f` from byte `from`; returns the offset
/// after the last complete line.
fn read_lines(f: &File, from: u64, mut each: impl FnMut(&[u8])) -> io::Result<u64> {
    let mut pos = from;
    let mut done = from;
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read_at(&mut buf, pos)?;
        if n == 0 {
            break;
        }
        pos += n as u64;
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(i) = pending[start..].iter().position(|b| *b == b'\n') {
            each(&pending[start..start + i]);
            start += i + 1;
        }
        done += start as u64;
        pending.drain(..start);
    }
    Ok(done)
}

/// Reads an assistant entry's line from the session file and tells whether it is an
/// OpenClaw transcript-only assistant line (`provider` `openclaw`, `model`
/// `delivery-mirror` or `gateway-injected`). None when the line is no longer there
/// (the file was rewritten since) or cannot be read.
fn injected_from_file(path: &Path) -> impl Fn(&Value) -> Option<bool> + '_ {
    move |e: &Value| {
        let off = e["offset"].as_u64()?;
        let len = e["bytes"].as_u64()?;
        if len > 16 << 20 {
            return None;
        }
        let f = File::open(path).ok()?;
        let mut buf = vec![0u8; len as usize];
        f.read_exact_at(&mut buf, off).ok()?;
        let v: Value = serde_json::from_slice(&buf).ok()?;
        if v["id"] != e["id"] {
            return None;
        }
        let m = &v["message"];
        Some(
            m["role"] == "assistant"
                && m["provider"] == "openclaw"
                && matches!(
                    m["model"].as_str(),
                    Some("delivery-mirror" | "gateway-injected")
                ),
        )
    }
}

fn write_out(text: &str) -> Result<(), String> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e.to_string()),
        _ => Ok(()),
    }
}

fn since_keeps(since: Option<Since>, m: &Mark) -> bool {
    match since {
        None => true,
        Some(Since::Seq(s)) => m.seq > s,
        Some(Since::TimeNs(t)) => parse_time_ns(&m.ts).is_some_and(|x| x >= t),
    }
}

// ---------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------

/// Analyse the session file at `path` on its mount.
fn analyze_file(path: &Path, rules: Rules) -> Result<(OnMount, Analysis), String> {
    let m = on_mount(path)?;
    let name = m
        .abs
        .file_name()
        .map(crate::names::encode_os)
        .unwrap_or_default();
    let stem = name.strip_suffix(".jsonl").unwrap_or(&name).to_string();
    let recs = read_mount_records(&m.root, &stem)?;
    let a = {
        let injected = injected_from_file(&m.abs);
        analyze(rules, &m.rel, recs, &injected)
    };
    if a.recs
        .iter()
        .all(|r| r.path() != m.rel && r.str("to") != Some(&m.rel))
    {
        return Err(format!(
            "{} has no journal records on this mount (never changed through it, or retention dropped them): nothing to explain",
            path.display()
        ));
    }
    Ok((m, a))
}

/// Run `sessionfs explain`. Err is one line for the user.
pub fn run_explain(args: &ExplainArgs) -> Result<(), String> {
    if let Some(log) = &args.gateway_log {
        return explain_log(args, log);
    }
    let target = args
        .target
        .as_deref()
        .ok_or("give a session file on a sessionfs mount")?;
    if target.is_dir() {
        return Err(format!(
            "{} is a directory: give a session file (<id>.jsonl) on the mount",
            target.display()
        ));
    }
    let (m, a) = analyze_file(target, args.rules)?;
    let file = m.abs.to_string_lossy().into_owned();
    let shown: Vec<&Window> = a
        .windows
        .iter()
        .filter(|w| since_keeps(args.since, &w.released))
        .collect();
    let mut text = String::new();
    if args.json {
        for w in &shown {
            text.push_str(&window_json(&a, w, &file, args.rules).to_string());
            text.push('\n');
        }
        return write_out(&text);
    }
    let tripped = shown.iter().filter(|w| w.verdict.tripped).count();
    text.push_str(&format!(
        "{file}\nrules {}: {} attempts, {} release windows shown, {tripped} tripped\n",
        args.rules.name(),
        a.attempts.len(),
        shown.len()
    ));
    if a.holds.is_empty() {
        text.push_str(
            "no process took the session lock (<file>.lock) in the journal: no release windows\n",
        );
    }
    text.push_str(&format!(
        "    {:<12} {:>7} {:<12} {:<22} {:<8} {:<9} {:<24} {:<8} ENTRIES\n",
        "TIME", "SEQ", "OP", "PROCESS", "LANE", "CLASS", "LOCK", "FENCE"
    ));
    let mut last_attempt = usize::MAX;
    for w in &shown {
        if w.attempt != last_attempt {
            last_attempt = w.attempt;
            let at = &a.attempts[w.attempt];
            let h0 = &a.holds[at.holds[0]];
            text.push_str(&format!(
                "attempt {}  {} (starttime {})  first hold #{} {}  holds {}  basis {}{}\n",
                w.attempt + 1,
                at.holder.label(),
                at.holder.starttime.map_or("-".into(), |s| s.to_string()),
                h0.acquired.seq,
                h0.acquired.ts.get(11..23).unwrap_or(&h0.acquired.ts),
                at.holds.len(),
                at.basis,
                if at.overlapping {
                    "  (overlaps another attempt)"
                } else {
                    ""
                },
            ));
        }
        window_text(&a, w, &mut text);
    }
    write_out(&text)
}

fn explain_log(args: &ExplainArgs, log: &Path) -> Result<(), String> {
    let data = std::fs::read(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let text = String::from_utf8_lossy(&data);
    let takeovers = parse_gateway_log(&text);
    let mut cache: HashMap<PathBuf, Result<(OnMount, Analysis), String>> = HashMap::new();
    let mut used: HashMap<PathBuf, HashSet<usize>> = HashMap::new();
    let mut out = String::new();
    let mut matched = 0;
    for (n, t) in takeovers.iter().enumerate() {
        let file = resolve_log_path(&t.path, args.target.as_deref());
        if let Some(target) = args.target.as_deref().filter(|p| !p.is_dir())
            && base_name(&t.path) != target.file_name().unwrap_or_default().to_string_lossy()
        {
            continue;
        }
        let entry = cache
            .entry(file.clone())
            .or_insert_with(|| analyze_file(&file, args.rules));
        let shown = match entry {
            Ok((m, _)) => m.abs.clone(),
            Err(_) => file.clone(),
        };
        let found = match entry {
            Ok((m, a)) => {
                let u = used.entry(file.clone()).or_default();
                let w = match_takeover(t, &a.windows, u);
                if let Some(i) = w {
                    u.insert(i);
                    matched += 1;
                }
                Ok((m, a, w))
            }
            Err(e) => Err(e.clone()),
        };
        if args.json {
            let mut o = json!({
                "log_line": t.line,
                "time": t.time,
                "lanes": t.lanes,
                "duration_ms": t.duration_ms,
                "log_path": t.path,
                "file": shown.to_string_lossy(),
                "rules": args.rules.name(),
                "matched": false,
            });
            match &found {
                Ok((m, a, Some(i))) => {
                    let w = &a.windows[*i];
                    let cause = w
                        .verdict
                        .first_trip
                        .and_then(|s| a.recs.iter().find(|r| r.seq == s));
                    o["matched"] = true.into();
                    o["attempt"] = (w.attempt + 1).into();
                    o["window"] = window_json(a, w, &m.abs.to_string_lossy(), args.rules);
                    o["cause"] = cause.map_or(Value::Null, |r| change_json(r, &[]));
                }
                Ok(_) => {
                    o["reason"] =
                        "no tripped window of this file in the journal matches its time".into()
                }
                Err(e) => o["reason"] = e.clone().into(),
            }
            out.push_str(&o.to_string());
            out.push('\n');
            continue;
        }
        let lanes = match t.lanes.split_first() {
            Some((first, rest)) if !rest.is_empty() => format!(
                "lane={first} (also {})",
                rest.iter()
                    .map(|l| format!("lane={l}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some((first, _)) => format!("lane={first}"),
            None => String::new(),
        };
        out.push_str(&format!(
            "takeover {}: {} {lanes} durationMs={} (log line {})\n  file     {}\n",
            n + 1,
            if t.time.is_empty() { "-" } else { &t.time },
            t.duration_ms.map_or("-".into(), |d| d.to_string()),
            t.line,
            shown.display()
        ));
        match found {
            Ok((_, a, Some(i))) => {
                let w = &a.windows[i];
                let at = &a.attempts[w.attempt];
                let h0 = &a.holds[at.holds[0]];
                out.push_str(&format!(
                    "  attempt  {}: {} from #{} {} ({} holds, basis {})\n",
                    w.attempt + 1,
                    at.holder.label(),
                    h0.acquired.seq,
                    h0.acquired.ts,
                    at.holds.len(),
                    at.basis
                ));
                let re = w.reacquired.as_ref().expect("a takeover window is closed");
                out.push_str(&format!(
                    "  window   {}.{}: released #{} {} -> reacquired #{} {} ({:.0} ms)\n  why      {}\n",
                    w.attempt + 1,
                    w.index,
                    w.released.seq,
                    w.released.ts,
                    re.seq,
                    re.ts,
                    ms_between(&w.released.ts, &re.ts).unwrap_or(0.0),
                    w.verdict.reason
                ));
                if let Some(r) = w.verdict.first_trip.and_then(|s| a.recs.iter().find(|r| r.seq == s)) {
                    out.push_str("  cause\n");
                    out.push_str(&change_row(r, "trips"));
                    out.push('\n');
                }
            }
            Ok(_) => out.push_str(
                "  no tripped window of this file in the journal matches its time (retention dropped it, or other --rules?)\n",
            ),
            Err(e) => out.push_str(&format!("  cannot explain: {e}\n")),
        }
    }
    if !args.json {
        out.push_str(&format!(
            "{} takeovers in {}, {matched} matched to the change that tripped them\n",
            takeovers.len(),
            log.display()
        ));
    }
    write_out(&out)
}

/// Where the session file a log line names is: `target` when it is that file; in the
/// directory `target` when one is given; else the path as logged.
fn resolve_log_path(logged: &str, target: Option<&Path>) -> PathBuf {
    let name = base_name(logged);
    match target {
        Some(t) if t.is_dir() => t.join(name),
        Some(t) => t.to_path_buf(),
        None => PathBuf::from(logged),
    }
}

/// Run `sessionfs changes`. Err is one line for the user.
pub fn run_changes(args: &ChangesArgs) -> Result<(), String> {
    let m = on_mount(&args.file)?;
    let mut s = m.abs.as_os_str().to_os_string();
    s.push(".journal");
    let vf = PathBuf::from(s);
    let f = File::open(&vf).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            format!(
                "{} has no journal on this mount ({} missing): does the file exist?",
                args.file.display(),
                vf.display()
            )
        } else {
            format!("{}: {e}", vf.display())
        }
    })?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let start = match (args.since, args.since_offset) {
        (Some(seq), _) => seek_since(&f, len, seq).map_err(|e| e.to_string())?,
        (None, Some(off)) => {
            if off > len {
                return Err(format!(
                    "--since-offset {off} is past the end of {} ({len} bytes): retention dropped records; ask again with --since <SEQ>",
                    vf.display()
                ));
            }
            if off > 0 {
                let mut b = [0u8; 1];
                f.read_exact_at(&mut b, off - 1)
                    .map_err(|e| e.to_string())?;
                if b[0] != b'\n' {
                    return Err(format!(
                        "--since-offset {off} is not a record boundary of {} (retention moved the offsets?): ask again with --since <SEQ>",
                        vf.display()
                    ));
                }
            }
            off
        }
        (None, None) => return Err("give --since <SEQ> or --since-offset <BYTES>".into()),
    };
    let mut recs = Vec::new();
    let next_offset = read_lines(&f, start, |line| {
        if let Ok(v) = serde_json::from_slice::<Value>(line)
            && let Some(r) = Rec::new(v)
        {
            recs.push(r);
        }
    })
    .map_err(|e| format!("{}: {e}", vf.display()))?;
    let pid = args
        .pid
        .or_else(|| Some(std::os::unix::process::parent_id()));
    let lane = args.lane.as_deref();
    let verdict = changes_verdict(&recs, pid, lane);
    let last_seq = recs.last().map(|r| r.seq).or(args.since);
    let foreign: Vec<Value> = recs
        .iter()
        .filter(|r| change_class(r, pid, lane) == ChangesVerdict::ForeignAppends)
        .flat_map(|r| r.entries().iter().cloned())
        .collect();
    let removed: Vec<Value> = recs
        .iter()
        .flat_map(|r| r.removed().iter().cloned())
        .collect();
    if args.json {
        let changes: Vec<Value> = recs
            .iter()
            .filter(|r| r.ok())
            .map(|r| {
                change_json(
                    r,
                    &[
                        ("own", Value::Bool(is_own(r, pid, lane))),
                        ("verdict", change_class(r, pid, lane).name().into()),
                    ],
                )
            })
            .collect();
        let o = json!({
            "file": m.abs.to_string_lossy(),
            "since": args.since,
            "since_offset": args.since_offset,
            "own": {"pid": pid, "lane": lane},
            "verdict": verdict.name(),
            "last_seq": last_seq,
            "next_offset": next_offset,
            "foreign_entries": foreign,
            "removed": removed,
            "changes": changes,
        });
        return write_out(&format!("{o}\n"));
    }
    let mut text = format!(
        "    {:<12} {:>7} {:<12} {:<22} {:<8} {:<9} {:<24} {:<8} ENTRIES\n",
        "TIME", "SEQ", "OP", "PROCESS", "LANE", "CLASS", "LOCK", "VERDICT"
    );
    for r in recs.iter().filter(|r| r.ok()) {
        text.push_str(&change_row(r, change_class(r, pid, lane).name()));
        text.push('\n');
    }
    let detail = match verdict {
        ChangesVerdict::Nothing => "only reads and no-ops: nothing happened".to_string(),
        ChangesVerdict::OwnAppends => "only your own appends".to_string(),
        ChangesVerdict::Metadata => {
            "metadata changed, content did not: take a new fingerprint".to_string()
        }
        ChangesVerdict::ForeignAppends => {
            let ids: Vec<String> = foreign
                .iter()
                .map(|e| {
                    let kind = e["role"]
                        .as_str()
                        .or(e["customType"].as_str())
                        .or(e["type"].as_str())
                        .unwrap_or("?");
                    format!("{kind}:{}", e["id"].as_str().unwrap_or("?"))
                })
                .collect();
            let more = if ids.len() > 10 {
                format!(" (+{} more: --json lists them)", ids.len() - 10)
            } else {
                String::new()
            };
            format!(
                "{} entries appended by others, mergeable by id: {}{more}",
                foreign.len(),
                ids[..ids.len().min(10)].join(" ")
            )
        }
        ChangesVerdict::Rewrite => format!(
            "rewritten ({} entries removed): reload the file",
            removed.len()
        ),
    };
    let next = match last_seq {
        Some(seq) => format!("--since {seq} or --since-offset {next_offset}"),
        None => format!("--since-offset {next_offset}"),
    };
    text.push_str(&format!(
        "verdict: {} ({detail}); next cursor: {next}\n",
        verdict.name()
    ));
    write_out(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: &str = "s.jsonl";
    const L: &str = "s.jsonl.lock";
    const T: &str = "s.trajectory.jsonl";
    const GW: u32 = 100;
    const OTHER: u32 = 200;

    /// A synthetic journal of one session file: seq n is at 04:00:00 + n ms.
    #[derive(Default)]
    struct J {
        seq: u64,
        recs: Vec<Rec>,
    }

    fn who(pid: u32) -> Value {
        json!({"pid": pid, "tid": pid + 1, "starttime": pid as u64 * 10, "comm": if pid == GW { "openclaw" } else { "python3" }})
    }

    impl J {
        fn push(&mut self, pid: u32, mut v: Value) -> u64 {
            self.seq += 1;
            let s = self.seq;
            let base = v.as_object_mut().unwrap();
            base.insert("seq".into(), s.into());
            base.insert(
                "ts".into(),
                format!(
                    "2026-12-06T04:{:02}:{:02}.{:03}000000Z",
                    s / 60_000,
                    (s / 1000) % 60,
                    s % 1000
                )
                .into(),
            );
            base.entry("result").or_insert("ok".into());
            for (k, x) in who(pid).as_object().unwrap() {
                base.entry(k.clone()).or_insert(x.clone());
            }
            self.recs.push(Rec::new(v).unwrap());
            s
        }
        fn ctx(&self, pid: u32) -> Value {
            // lock_context as the mount would set it: who holds the lock now?
            let hs = holds(L, &self.recs);
            match hs.last() {
                Some(h) if h.released.is_none() && h.holder.pid == pid => "held_by_writer".into(),
                Some(h) if h.released.is_none() => "held_by_other".into(),
                _ => "none".into(),
            }
        }
        fn acquire(&mut self, pid: u32) -> u64 {
            let c = self.push(pid, json!({"op": "create", "path": L, "class": "append", "flags": ["O_WRONLY", "O_CREAT", "O_EXCL"]}));
            self.push(pid, json!({"op": "lock-acquire", "path": L, "class": "lock",
                "lock": {"guards": F, "holder": who(pid), "created_seq": c, "age_ms": 0, "holder_alive": true}}));
            c
        }
        fn release(&mut self, pid: u32) -> u64 {
            let created = holds(L, &self.recs).last().and_then(|h| h.created_seq);
            let u = self.push(
                pid,
                json!({"op": "unlink", "path": L, "class": "rewrite", "fence_moved": true}),
            );
            self.push(pid, json!({"op": "lock-release", "path": L, "class": "lock",
                "lock": {"guards": F, "holder": who(pid), "created_seq": created, "age_ms": 5, "holder_alive": true}}));
            u
        }
        fn append(&mut self, pid: u32, ty: &str, role: Option<&str>, id: &str) -> u64 {
            let ctx = self.ctx(pid);
            let mut e = json!({"line": 1, "offset": 0, "bytes": 100, "type": ty, "id": id});
            if let Some(r) = role {
                e["role"] = r.into();
            }
            if ty == "custom" {
                e["customType"] = "x".into();
            }
            self.push(
                pid,
                json!({"op": "write", "path": F, "class": "append", "fence_moved": true,
                "len": 100, "append": true, "entries": [e], "lock_context": ctx}),
            )
        }
        fn user(&mut self, pid: u32, id: &str) -> u64 {
            self.append(pid, "message", Some("user"), id)
        }
        fn assistant(&mut self, pid: u32, id: &str) -> u64 {
            self.append(pid, "message", Some("assistant"), id)
        }
        fn chmod(&mut self, pid: u32, same_mode: bool) -> u64 {
            let ctx = self.ctx(pid);
            let (class, moved) = if same_mode {
                ("noop", false)
            } else {
                ("metadata", true)
            };
            self.push(pid, json!({"op": "chmod", "path": F, "class": class, "fence_moved": moved, "mode": 0o644,
                "before": {"ino": 1, "size": 10, "mtime_ns": 1, "ctime_ns": 1},
                "after": {"ino": 1, "size": 10, "mtime_ns": 1, "ctime_ns": if same_mode { 1 } else { 2 }},
                "lock_context": ctx}))
        }
        fn utimens(&mut self, pid: u32) -> u64 {
            let ctx = self.ctx(pid);
            self.push(pid, json!({"op": "utimens", "path": F, "class": "metadata", "fence_moved": true,
                "before": {"ino": 1, "size": 10, "mtime_ns": 1, "ctime_ns": 1},
                "after": {"ino": 1, "size": 10, "mtime_ns": 5, "ctime_ns": 2}, "lock_context": ctx}))
        }
        fn read(&mut self, pid: u32) -> u64 {
            let ctx = self.ctx(pid);
            self.push(pid, json!({"op": "open", "path": F, "class": "read", "access": "read", "lock_context": ctx}));
            self.push(pid, json!({"op": "release", "path": F, "class": "read", "access": "read", "lock_context": ctx}))
        }
        fn external(&mut self) -> u64 {
            self.push(
                0,
                json!({"op": "external", "path": F, "class": "external",
                "before": {"ino": 1, "size": 10, "mtime_ns": 1, "ctime_ns": 1},
                "after": {"ino": 1, "size": 10, "mtime_ns": 1, "ctime_ns": 3}}),
            )
        }
        fn traj(&mut self, pid: u32, started: bool) -> u64 {
            let ty = if started {
                "session.started"
            } else {
                "session.ended"
            };
            self.push(
                pid,
                json!({"op": "write", "path": T, "class": "append", "fence_moved": true,
                "entries": [{"line": 1, "offset": 0, "bytes": 700, "type": ty}]}),
            )
        }
        /// One 5.22 turn of `pid` as the real gateway makes it (module doc), with
        /// `during(j, k)` called after hold k's acquisition (k = 2: the model call) and
        /// `gap(j, k)` in the gap before hold k. Returns the seqs of the acquisitions.
        fn turn(
            &mut self,
            pid: u32,
            traj: bool,
            model_calls: usize,
            mut gap: impl FnMut(&mut J, usize),
            mut during: impl FnMut(&mut J, usize),
        ) -> Vec<u64> {
            let mut acq = Vec::new();
            let mut k = 1;
            // The controller's hold: repair reads, the user message, the fence read.
            acq.push(self.acquire(pid));
            self.read(pid);
            self.user(pid, &format!("u{}", self.seq));
            if traj {
                self.traj(pid, true);
            }
            during(self, k);
            self.read(pid);
            self.release(pid);
            for call in 0..model_calls {
                // The model call's hold (reacquireAfterPrompt): assistant, maybe tools.
                k += 1;
                gap(self, k);
                acq.push(self.acquire(pid));
                during(self, k);
                self.assistant(pid, &format!("a{}", self.seq));
                if call + 1 < model_calls {
                    self.read(pid);
                    self.append(
                        pid,
                        "message",
                        Some("toolResult"),
                        &format!("t{}", self.seq),
                    );
                }
                self.read(pid);
                self.release(pid);
            }
            // After the prompt: two locked writes.
            for _ in 0..2 {
                k += 1;
                gap(self, k);
                acq.push(self.acquire(pid));
                during(self, k);
                self.append(pid, "custom", None, &format!("c{}", self.seq));
                self.read(pid);
                self.release(pid);
            }
            if traj {
                self.traj(pid, false);
            }
            // Cleanup.
            k += 1;
            gap(self, k);
            acq.push(self.acquire(pid));
            during(self, k);
            self.read(pid);
            self.release(pid);
            acq
        }
        /// A stat of the transcript as the mount journals it: only by the holder of
        /// its lock, while held.
        fn stat(&mut self, pid: u32) -> u64 {
            let ctx = self.ctx(pid);
            self.push(pid, json!({"op": "stat", "path": F, "class": "read", "fence_moved": false,
                "lock_context": ctx, "after": {"ino": 1, "size": 10, "mtime_ns": 1, "ctime_ns": 1}}))
        }
        /// A stat of F by thread `tid` of GW (GW itself: the main thread).
        fn stat_on(&mut self, tid: u32) -> u64 {
            let ctx = self.ctx(GW);
            self.push(GW, json!({"op": "stat", "path": F, "class": "read", "fence_moved": false, "tid": tid,
                "lock_context": ctx, "after": {"ino": 1, "size": 10, "mtime_ns": 1, "ctime_ns": 1}}))
        }
        /// A read of F by thread `tid` of GW, with the kernel's permission check.
        fn read_on(&mut self, tid: u32) -> u64 {
            let ctx = self.ctx(GW);
            self.stat_on(tid);
            self.push(GW, json!({"op": "open", "path": F, "class": "read", "access": "read", "tid": tid, "lock_context": ctx}));
            self.push(GW, json!({"op": "release", "path": F, "class": "read", "access": "read", "tid": tid, "lock_context": ctx}))
        }
        /// A 5.22 turn of GW in four holds (1 the controller's, 2 the model call, 3 a
        /// locked write, 4 the cleanup), with the gateway's stats when `stats`, in the
        /// order the real gateway makes them: the check K right after the create;
        /// holds 1 and 2 end in `releaseForPrompt` (the message persist's stat P after
        /// the append, then the fence stat A and the snapshot stat B), hold 3 is a
        /// `withSessionWriteLock` run (K, W0, the write, S). `edge(j, k, p)` runs in
        /// hold k after the create (p = 0), after the check (p = 1), after the last
        /// stat (p = 2) and, in holds 1 and 2, between A and B (p = 3). Each hold
        /// ends with a read (the lock payload's, on the real gateway) that the kernel
        /// precedes with a permission-check stat C on the same thread. Returns the
        /// acquisitions' seqs.
        fn stat_turn(
            &mut self,
            stats: bool,
            mut edge: impl FnMut(&mut J, usize, usize),
        ) -> Vec<u64> {
            let mut acq = Vec::new();
            for k in 1..=4 {
                if k == 4 {
                    self.traj(GW, false);
                }
                acq.push(self.acquire(GW));
                edge(self, k, 0);
                if stats {
                    self.stat(GW);
                    if k == 3 {
                        self.stat(GW);
                    }
                }
                edge(self, k, 1);
                match k {
                    1 => {
                        self.user(GW, "u");
                        self.traj(GW, true);
                    }
                    2 => {
                        self.assistant(GW, "a");
                    }
                    3 => {
                        self.append(GW, "custom", None, "c");
                    }
                    _ => {}
                }
                if stats && k != 4 {
                    self.stat(GW);
                    if k != 3 {
                        self.stat(GW);
                        edge(self, k, 3);
                        self.stat(GW);
                    }
                }
                edge(self, k, 2);
                if stats {
                    // The kernel's permission check before the read's OPEN, on the
                    // reading thread (attr TTL 0 while locked).
                    self.stat(GW);
                }
                self.read(GW);
                self.release(GW);
            }
            acq
        }
        fn analyze(&self, rules: Rules) -> Analysis {
            analyze(rules, F, self.recs.clone(), &|_| None)
        }
    }

    fn nothing(_: &mut J, _: usize) {}

    fn rec(a: &Analysis, seq: u64) -> &Rec {
        a.recs.iter().find(|r| r.seq == seq).unwrap()
    }

    #[test]
    fn a_clean_attempt_has_a_window_per_reacquisition_and_none_trips() {
        for traj in [true, false] {
            let mut j = J::default();
            let acq = j.turn(GW, traj, 1, nothing, nothing);
            let a = j.analyze(Rules::V2026_5_22);
            assert_eq!(a.attempts.len(), 1);
            assert_eq!(a.attempts[0].holds.len(), 5);
            let closed: Vec<&Window> = a
                .windows
                .iter()
                .filter(|w| w.reacquired.is_some())
                .collect();
            assert_eq!(closed.len(), 4, "traj {traj}");
            for (w, want) in closed.iter().zip(&acq[1..]) {
                assert_eq!(w.reacquired.as_ref().unwrap().seq, *want);
                assert!(!w.verdict.tripped);
                assert_eq!(w.holder.pid, GW);
            }
            if traj {
                assert_eq!(a.attempts[0].basis, "trajectory");
                assert_eq!(a.windows.len(), 4, "no open window after the cleanup");
                assert!(a.windows[3].cleanup);
            } else {
                assert_eq!(a.attempts[0].basis, "user-message");
                // The attempt's end is unknown without a trajectory: one open window.
                assert_eq!(a.windows.len(), 5);
                assert!(a.windows[4].reacquired.is_none());
            }
            // The runner's own appends under its holds are absorbed, never in a gap.
            for w in &a.windows {
                assert!(
                    w.gap
                        .iter()
                        .all(|&k| a.recs[k].class() == Some("read") || a.recs[k].path() == L)
                );
            }
        }
    }

    /// Under load the gateway's queued `session.started` write landed after the model
    /// call's create: the model-call hold was taken for the attempt's first hold, the
    /// window before it vanished, and a chmod in it (which tripped the real gateway)
    /// was never judged. The first hold is the one with the runner's user message.
    #[test]
    fn a_late_session_started_line_keeps_the_first_window() {
        let mut j = J::default();
        j.acquire(GW);
        j.read(GW);
        j.user(GW, "u1");
        j.read(GW);
        j.release(GW);
        let chmod = j.chmod(OTHER, false);
        j.acquire(GW);
        j.traj(GW, true);
        j.assistant(GW, "a1");
        j.read(GW);
        j.release(GW);
        j.traj(GW, false);
        j.acquire(GW);
        j.read(GW);
        j.release(GW);
        let a = j.analyze(Rules::V2026_5_22);
        assert_eq!(a.attempts.len(), 1);
        assert_eq!(a.attempts[0].holds.len(), 3, "{:?}", a.attempts);
        let w = &a.windows[0];
        assert!(w.verdict.tripped, "{:?}", a.windows);
        assert_eq!(w.verdict.first_trip, Some(chmod));
    }

    #[test]
    fn a_foreign_append_inside_the_model_call_hold_is_absorbed() {
        let mut j = J::default();
        let mut foreign = 0;
        j.turn(GW, true, 1, nothing, |j, k| {
            if k == 2 {
                foreign = j.append(OTHER, "message", Some("user"), "f00d");
            }
        });
        let a = j.analyze(Rules::V2026_5_22);
        assert!(a.windows.iter().all(|w| !w.verdict.tripped));
        let w = a
            .windows
            .iter()
            .find(|w| w.held.iter().any(|&k| a.recs[k].seq == foreign))
            .unwrap();
        assert_eq!(w.index, 1, "listed in the window its hold ends");
        assert_eq!(rec(&a, foreign).v["lock_context"], "held_by_other");
        let v = window_json(&a, w, "/m/s.jsonl", Rules::V2026_5_22);
        let c = v["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["seq"] == foreign)
            .unwrap();
        assert_eq!(c["absorbed"], true);
        assert_eq!(c["lock"], "held_by_other");
        assert_eq!(c["class"], "append");
        assert_eq!(c["pid"], OTHER);
        assert_eq!(v["tripped"], false);
        assert_eq!(v["first_trip"], Value::Null);
    }

    #[test]
    fn a_same_mode_chmod_in_a_gap_does_not_trip() {
        let mut j = J::default();
        j.turn(
            GW,
            true,
            1,
            |j, k| {
                if k == 2 {
                    j.chmod(OTHER, true);
                }
            },
            nothing,
        );
        let a = j.analyze(Rules::V2026_5_22);
        assert_eq!(a.windows.len(), 4);
        assert!(a.windows.iter().all(|w| !w.verdict.tripped));
        assert_eq!(
            a.windows[0].verdict.reason,
            "nothing in the gap moved the fence"
        );
    }

    #[test]
    fn a_chmod_to_another_mode_in_a_gap_trips_and_ends_the_attempt() {
        let mut j = J::default();
        let mut chmod = 0;
        j.turn(
            GW,
            true,
            1,
            |j, k| {
                if k == 3 {
                    chmod = j.chmod(OTHER, false);
                }
            },
            nothing,
        );
        let a = j.analyze(Rules::V2026_5_22);
        let w = a.windows.iter().find(|w| w.verdict.tripped).unwrap();
        assert_eq!(w.index, 2);
        assert_eq!(w.verdict.first_trip, Some(chmod));
        assert_eq!(w.outcome, Some("takeover"));
        assert_eq!(a.windows.len(), 2, "no window after the trip");
        let v = window_json(&a, w, "/m/s.jsonl", Rules::V2026_5_22);
        assert_eq!(v["tripped"], true);
        assert_eq!(v["first_trip"], chmod);
        assert_eq!(v["rules"], "2026.5.22");
        let c = v["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["seq"] == chmod)
            .unwrap();
        assert_eq!(c["fence"], "trips");
        assert_eq!(c["absorbed"], false);
        assert_eq!(c["lock"], "none");
        // The real gateway stopped there; had it gone on, explain would say so.
        assert!(w.notes.iter().any(|n| n.contains("took the lock again")));
    }

    #[test]
    fn an_external_change_in_a_gap_trips() {
        let mut j = J::default();
        let mut ext = 0;
        j.turn(
            GW,
            true,
            1,
            |j, k| {
                if k == 2 {
                    ext = j.external();
                }
            },
            nothing,
        );
        let a = j.analyze(Rules::V2026_5_22);
        assert_eq!(a.windows[0].verdict.first_trip, Some(ext));
        assert!(a.windows[0].verdict.tripped);
    }

    /// The window JSON's change with `seq`.
    fn change_of(a: &Analysis, w: &Window, seq: u64) -> Value {
        let v = window_json(a, w, F, Rules::V2026_5_22);
        v["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["seq"] == seq)
            .cloned()
            .unwrap_or_else(|| panic!("{seq} not in {v}"))
    }

    #[test]
    fn the_runners_own_change_at_a_holds_edge_is_absorbed() {
        // Measured on the real gateway: the transcript's create, by the holder, in a
        // hold before its first stat. Its own writes are folded into the fence.
        let mut j = J::default();
        j.stat_turn(true, |j, k, p| {
            if k == 2 && p != 1 {
                j.append(GW, "custom", None, "own");
            }
        });
        let a = j.analyze(Rules::V2026_5_22);
        assert!(
            a.windows.iter().all(|w| !w.verdict.tripped),
            "the runner's own change tripped a window"
        );
    }

    #[test]
    fn a_chmod_before_the_snapshot_reads_fstat_still_trips() {
        // Measured on the real gateway: fingerprint stat, snapshot open, (a foreign
        // chmod), the read's fstat, release, unlink. The fstat inside the read is no
        // fence read: the chmod trips the next check.
        let mut j = J::default();
        let mut chmod = 0;
        j.stat_turn(true, |j, k, p| {
            if (k, p) == (2, 2) {
                let ctx = j.ctx(GW);
                j.push(GW, json!({"op": "open", "path": F, "class": "read", "access": "read", "lock_context": ctx}));
                chmod = j.chmod(OTHER, false);
                j.stat(GW);
                j.push(GW, json!({"op": "release", "path": F, "class": "read", "access": "read", "lock_context": ctx}));
            }
        });
        let a = j.analyze(Rules::V2026_5_22);
        let w2 = &a.windows[1];
        assert!(
            w2.verdict.tripped,
            "the chmod inside the snapshot read was absorbed"
        );
        assert_eq!(w2.verdict.first_trip, Some(chmod));
    }

    #[test]
    fn a_chmod_after_the_holders_last_stat_and_before_the_release_trips_at_the_next_acquisition() {
        let mut j = J::default();
        let mut chmod = 0;
        let acq = j.stat_turn(true, |j, k, p| {
            if (k, p) == (2, 2) {
                chmod = j.chmod(OTHER, false);
            }
        });
        let a = j.analyze(Rules::V2026_5_22);
        assert_eq!(a.attempts[0].holds.len(), 4);
        let (w1, w2) = (&a.windows[0], &a.windows[1]);
        assert!(!w1.verdict.tripped);
        assert!(!w1.held.iter().any(|&k| a.recs[k].seq == chmod));
        assert!(w1.notes.iter().all(|n| !n.contains("no stat records")));
        assert!(w2.verdict.tripped);
        assert_eq!(w2.verdict.first_trip, Some(chmod));
        assert_eq!(w2.reacquired.as_ref().unwrap().seq, acq[2]);
        assert_eq!(w2.outcome, Some("takeover"));
        assert!(w2.fence_taken.as_ref().unwrap().seq < chmod);
        assert!(chmod < w2.released.seq);
        let c = change_of(&a, w2, chmod);
        assert_eq!(c["absorbed"], false);
        assert_eq!(c["fence"], "trips");
        assert_eq!(c["in_hold"], "after_fence_read");
        assert_eq!(c["lock"], "held_by_other");
        // The same after the first hold's last stat: window 1 trips.
        let mut j = J::default();
        j.stat_turn(true, |j, k, p| {
            if (k, p) == (1, 2) {
                chmod = j.chmod(OTHER, false);
            }
        });
        let a = j.analyze(Rules::V2026_5_22);
        assert_eq!(a.windows[0].verdict.first_trip, Some(chmod));
        // After the cleanup hold's last stat: no fence looks at it.
        let mut j = J::default();
        j.stat_turn(true, |j, k, p| {
            if (k, p) == (4, 2) {
                j.chmod(OTHER, false);
            }
        });
        let a = j.analyze(Rules::V2026_5_22);
        assert_eq!(a.windows.len(), 3);
        assert!(a.windows.iter().all(|w| !w.verdict.tripped));
    }

    #[test]
    fn a_chmod_after_the_lock_create_and_before_the_holders_first_stat_trips_at_that_acquisition() {
        let mut j = J::default();
        let mut chmod = 0;
        let acq = j.stat_turn(true, |j, k, p| {
            if (k, p) == (2, 0) {
                chmod = j.chmod(OTHER, false);
            }
        });
        let a = j.analyze(Rules::V2026_5_22);
        let w = &a.windows[0];
        assert!(w.verdict.tripped);
        assert_eq!(w.verdict.first_trip, Some(chmod));
        assert_eq!(w.reacquired.as_ref().unwrap().seq, acq[1]);
        assert!(w.checked.as_ref().unwrap().seq > chmod);
        assert_eq!(a.windows.len(), 1, "the trip ends the attempt");
        let c = change_of(&a, w, chmod);
        assert_eq!(c["absorbed"], false);
        assert_eq!(c["in_hold"], "before_check");
        assert_eq!(c["lock"], "held_by_other");
        // At the cleanup acquisition: swallowed.
        let mut j = J::default();
        j.stat_turn(true, |j, k, p| {
            if (k, p) == (4, 0) {
                chmod = j.chmod(OTHER, false);
            }
        });
        let a = j.analyze(Rules::V2026_5_22);
        let w = a.windows.last().unwrap();
        assert_eq!(w.verdict.first_trip, Some(chmod));
        assert_eq!(w.outcome, Some("swallowed"));
        // Before the first hold's first stat: the fence is not armed yet.
        let mut j = J::default();
        j.stat_turn(true, |j, k, p| {
            if (k, p) == (1, 0) {
                j.chmod(OTHER, false);
            }
        });
        let a = j.analyze(Rules::V2026_5_22);
        assert!(a.windows.iter().all(|w| !w.verdict.tripped));
    }

    /// `releaseForPrompt` keeps its first stat (A) as the fence and stats again (B)
    /// for the snapshot: a chmod between them trips the next check. Seen on the real
    /// gateway (agreement test, seed 1796603129046194417, turn 11) while explain took
    /// B for the fence and called the chmod absorbed.
    #[test]
    fn a_chmod_between_the_fence_stat_and_the_snapshot_stat_trips() {
        for k in 1..=2 {
            let mut j = J::default();
            let mut chmod = 0;
            let acq = j.stat_turn(true, |j, kk, p| {
                if (kk, p) == (k, 3) {
                    chmod = j.chmod(OTHER, false);
                }
            });
            let a = j.analyze(Rules::V2026_5_22);
            let w = &a.windows[k - 1];
            assert!(w.verdict.tripped, "hold {k}: {:?}", a.windows);
            assert_eq!(w.verdict.first_trip, Some(chmod));
            assert_eq!(w.reacquired.as_ref().unwrap().seq, acq[k]);
            assert!(w.fence_taken.as_ref().unwrap().seq < chmod);
            assert_eq!(change_of(&a, w, chmod)["in_hold"], "after_fence_read");
            assert_eq!(a.windows.len(), k, "the trip ends the attempt");
        }
        // In a withSessionWriteLock run the stat after its write is the fence: a chmod
        // before it is absorbed.
        let mut j = J::default();
        j.stat_turn(true, |j, k, p| {
            if (k, p) == (3, 1) {
                j.chmod(OTHER, false);
            }
        });
        let a = j.analyze(Rules::V2026_5_22);
        assert!(a.windows.iter().all(|w| !w.verdict.tripped));
    }

    /// The kernel's permission check is the stat whose thread opens next, whatever
    /// other threads do in between; a stat followed by another record of its own
    /// thread is the gateway's. The records of the model-call hold's end in the
    /// agreement test's seed 1796569708900737669, turn 4 (tids as journaled).
    #[test]
    fn the_permission_check_is_the_stat_its_thread_opens_after() {
        let recs: Vec<Rec> = [
            (937, "stat", 7232), // P: refreshAfterOwnedSessionWrite's statSync
            (939, "stat", 7241), // A: releaseForPrompt's fingerprint (the fence)
            (941, "stat", 7244), // B: the snapshot's fingerprint
            (942, "stat", 7241), // C: the readFile's permission check...
            (943, "open", 7241), // ...and its open
            (944, "stat", 7243), // the readFile's fstat
            (946, "release", 7241),
            (960, "stat", 7244), // a stat whose thread stats again before it opens
            (961, "stat", 7244),
            (962, "open", 7244),
        ]
        .into_iter()
        .map(|(seq, op, tid)| Rec::new(json!({"seq": seq, "op": op, "tid": tid})).unwrap())
        .collect();
        let refs: Vec<&Rec> = recs.iter().collect();
        assert_eq!(permission_checks(refs.iter()), vec![942, 961]);
    }

    /// A hold without a write of the holder's (`withSessionWriteLock` whose run wrote
    /// nothing: the check K, the before-write stat W0, the refresh's snapshot stat S
    /// and its readFile): S is the fence, so a chmod between W0 and S is absorbed.
    /// Seen on the real gateway (agreement test, seed 1796543173242158595, turn 3)
    /// once the permission-check stat C stopped making S look like the pair's first.
    #[test]
    fn a_chmod_before_the_snapshot_stat_of_a_hold_without_a_write_is_absorbed() {
        let mut j = J::default();
        let mut chmod = 0;
        j.stat_turn(true, |j, k, p| {
            if (k, p) == (2, 2) {
                // Between holds 2 and 3: a hold of the runner that writes nothing.
                j.release(GW);
                j.acquire(GW);
                j.stat(GW); // K
                j.stat(GW); // W0
                chmod = j.chmod(OTHER, false);
                j.stat(GW); // S
            }
        });
        let a = j.analyze(Rules::V2026_5_22);
        assert!(
            a.windows.iter().all(|w| !w.verdict.tripped),
            "{:?}",
            a.windows
        );
        let w = a
            .windows
            .iter()
            .find(|w| {
                window_json(&a, w, F, Rules::V2026_5_22)["changes"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["seq"] == chmod))
            })
            .expect("the chmod is in a window");
        assert_eq!(change_of(&a, w, chmod)["absorbed"], true);
    }

    /// A tool call inside the model-call hold: the tool result is persisted by a
    /// `withSessionWriteLock` while the hold is held, whose check compares with the
    /// fence read after the assistant write. A change between the two trips there,
    /// with no release and no create around it; one before the assistant write is
    /// folded into that fence read. The records of the real gateway's tool turn
    /// (2026.5.22, `session_status` called once): the session manager's sync stats and
    /// read on the main thread, then the check K on a worker thread, then the append.
    #[test]
    fn a_chmod_during_a_tool_call_trips_at_the_check_inside_the_hold() {
        // (where the chmod goes: 0 none, 1 during the tool call, 2 before the
        // assistant write)
        for at in 0..3 {
            let mut j = J::default();
            let mut chmod = 0;
            j.stat_turn(true, |j, k, p| {
                if k != 2 {
                    return;
                }
                if p == 1 && at == 2 {
                    chmod = j.chmod(OTHER, false);
                }
                if p == 2 {
                    if at == 1 {
                        chmod = j.chmod(OTHER, false);
                    }
                    // The session manager on the main thread, then the tool result's
                    // withSessionWriteLock: K, its before-write stat, the append.
                    j.stat_on(GW);
                    j.stat_on(GW);
                    j.read_on(GW);
                    j.stat_on(GW + 3);
                    j.stat_on(GW + 4);
                    j.stat_on(GW);
                    j.append(GW, "message", Some("toolResult"), "t");
                    j.stat_on(GW);
                    j.stat_on(GW + 2);
                    j.stat_on(GW + 3);
                }
            });
            let a = j.analyze(Rules::V2026_5_22);
            let w = &a.windows[0];
            assert_eq!(w.mid_checks.len(), 1, "at {at}: {:?}", w);
            let tripped: Vec<u64> = a
                .windows
                .iter()
                .filter_map(|w| w.verdict.first_trip)
                .collect();
            match at {
                1 => {
                    assert_eq!(tripped, vec![chmod], "at {at}: {:?}", a.windows);
                    assert_eq!(w.outcome, Some("takeover"));
                    assert_eq!(change_of(&a, w, chmod)["absorbed"], false);
                }
                _ => {
                    assert!(tripped.is_empty(), "at {at}: {:?}", a.windows);
                    if at == 2 {
                        assert_eq!(change_of(&a, w, chmod)["absorbed"], true);
                    }
                }
            }
        }
    }

    /// A reader of the transcript in the gateway (chat.history, polled by a Control
    /// UI every 50 ms: two statSyncs on the main thread, an async stat, a readFile)
    /// during the model call is no check inside the hold, and its read handle, open
    /// across the assistant write and the fence reads, does not make them fstats: a
    /// chmod between two polls is absorbed, one between the fence read A and the
    /// snapshot stat B trips. (Measured on the real gateway under the e2e test's
    /// WebSocket poller: every poll looked like a check, and a poll handle open
    /// across A and B put the fence read back at the hold's check.)
    #[test]
    fn a_transcript_reader_in_the_gateway_is_no_check_and_hides_no_fence_read() {
        fn poll_start(j: &mut J) {
            j.stat_on(GW);
            j.stat_on(GW);
            j.stat_on(GW + 5);
            j.stat_on(GW + 6);
            let ctx = j.ctx(GW);
            j.push(GW, json!({"op": "open", "path": F, "class": "read", "access": "read", "tid": GW + 6, "lock_context": ctx}));
        }
        fn poll_end(j: &mut J) {
            let ctx = j.ctx(GW);
            j.push(GW, json!({"op": "release", "path": F, "class": "read", "access": "read", "tid": GW + 6, "lock_context": ctx}));
        }
        for trip in [false, true] {
            let mut j = J::default();
            let mut chmod = 0;
            j.stat_turn(true, |j, k, p| {
                if k != 2 {
                    return;
                }
                match p {
                    1 => {
                        poll_start(j);
                        poll_end(j);
                        if !trip {
                            chmod = j.chmod(OTHER, false);
                        }
                        poll_start(j);
                        poll_end(j);
                        // A poll whose handle stays open across the write and A.
                        poll_start(j);
                    }
                    3 => {
                        poll_end(j);
                        if trip {
                            chmod = j.chmod(OTHER, false);
                        }
                    }
                    _ => {}
                }
            });
            let a = j.analyze(Rules::V2026_5_22);
            let w = &a.windows[0];
            assert!(w.mid_checks.is_empty(), "trip {trip}: {:?}", w.mid_checks);
            let tripped: Vec<u64> = a
                .windows
                .iter()
                .filter_map(|w| w.verdict.first_trip)
                .collect();
            if trip {
                assert_eq!(tripped, vec![chmod], "{:?}", a.windows);
            } else {
                assert!(tripped.is_empty(), "{:?}", a.windows);
                assert_eq!(change_of(&a, w, chmod)["absorbed"], true);
            }
        }
    }

    /// A fast tool: its result's `withSessionWriteLock` checks the fence right after
    /// the assistant's tool call is written, before any fence read but the main
    /// thread's statSync P. That check K is the first worker-thread stat after the
    /// write and is followed by a write, not by a readFile: a chmod between P and K
    /// trips; one before the assistant write is absorbed. The records of the real
    /// gateway (agreement test, seed 1796642610244942113, turn 3: a burst of chmods
    /// over the tool call, a takeover explain had missed).
    #[test]
    fn a_chmod_before_a_fast_tool_results_check_trips() {
        for trip in [false, true] {
            let mut j = J::default();
            let ctx = |j: &J| j.ctx(GW);
            // Hold 1: the user message, then releaseForPrompt.
            j.acquire(GW);
            j.stat_on(GW + 1);
            j.user(GW, "u");
            j.traj(GW, true);
            j.stat_on(GW);
            j.stat_on(GW + 1);
            j.stat_on(GW + 2);
            j.read_on(GW + 3);
            j.release(GW);
            // Hold 2: the model call with the tool call and its result.
            j.acquire(GW);
            j.stat_on(GW + 2);
            let early = (!trip).then(|| j.chmod(OTHER, false));
            j.stat_on(GW); // the append's permission check
            let c = ctx(&j);
            j.push(GW, json!({"op": "open", "path": F, "class": "read", "access": "write", "tid": GW, "lock_context": c}));
            j.assistant(GW, "a");
            j.push(GW, json!({"op": "release", "path": F, "class": "read", "access": "write", "tid": GW, "lock_context": c}));
            let p = j.stat_on(GW);
            let late = trip.then(|| j.chmod(OTHER, false));
            let k = j.stat_on(GW + 4);
            j.stat_on(GW);
            let c = ctx(&j);
            j.push(GW, json!({"op": "open", "path": F, "class": "read", "access": "write", "tid": GW, "lock_context": c}));
            j.append(GW, "message", Some("toolResult"), "t");
            j.push(GW, json!({"op": "release", "path": F, "class": "read", "access": "write", "tid": GW, "lock_context": c}));
            j.stat_on(GW + 1);
            j.stat_on(GW + 2);
            j.read_on(GW + 3);
            j.release(GW);
            if !trip {
                j.acquire(GW);
                j.stat_on(GW + 1);
                j.release(GW);
                j.traj(GW, false);
                j.acquire(GW);
                j.stat_on(GW + 1);
                j.release(GW);
            }
            let a = j.analyze(Rules::V2026_5_22);
            let w = &a.windows[0];
            let mids: Vec<(u64, u64)> = w.mid_checks.iter().map(|(f, c)| (f.seq, c.seq)).collect();
            assert_eq!(mids, vec![(p, k)], "trip {trip}");
            let tripped: Vec<u64> = a
                .windows
                .iter()
                .filter_map(|w| w.verdict.first_trip)
                .collect();
            if let Some(chmod) = late {
                assert_eq!(tripped, vec![chmod], "{:?}", a.windows);
                assert_eq!(w.outcome, Some("takeover"));
            } else {
                assert!(tripped.is_empty(), "{:?}", a.windows);
                assert_eq!(change_of(&a, w, early.unwrap())["absorbed"], true);
            }
        }
    }

    /// The message append's write handle is released when the kernel sends RELEASE,
    /// which under load comes after the holder's next path stats. Its open must not
    /// make the fence stat (A) look like an fstat: a chmod between A and the snapshot
    /// stat B still trips. (Seen in the agreement test: explain took B as the fence.)
    #[test]
    fn a_late_release_of_the_append_handle_does_not_hide_the_fence_stat() {
        let mut j = J::default();
        let mut chmod = 0;
        j.stat_turn(true, |j, k, p| {
            if k != 2 {
                return;
            }
            let ctx = j.ctx(GW);
            match p {
                // The append's handle, opened before the stats...
                1 => {
                    j.push(GW, json!({"op": "open", "path": F, "class": "read", "access": "write", "lock_context": ctx}));
                }
                // ...released after the fence stat A.
                3 => {
                    j.push(GW, json!({"op": "release", "path": F, "class": "read", "access": "write", "lock_context": ctx}));
                    chmod = j.chmod(OTHER, false);
                }
                _ => {}
            }
        });
        let a = j.analyze(Rules::V2026_5_22);
        let w = &a.windows[1];
        assert!(w.verdict.tripped, "{:?}", a.windows);
        assert_eq!(w.verdict.first_trip, Some(chmod));
    }

    #[test]
    fn a_chmod_between_two_holder_stats_is_absorbed() {
        for k in 2..=3 {
            let mut j = J::default();
            let mut chmod = 0;
            j.stat_turn(true, |j, kk, p| {
                if (kk, p) == (k, 1) {
                    chmod = j.chmod(OTHER, false);
                }
            });
            let a = j.analyze(Rules::V2026_5_22);
            assert_eq!(a.windows.len(), 3);
            assert!(a.windows.iter().all(|w| !w.verdict.tripped));
            let w = &a.windows[k - 2];
            assert!(w.held.iter().any(|&x| a.recs[x].seq == chmod));
            let c = change_of(&a, w, chmod);
            assert_eq!(c["absorbed"], true);
            assert_eq!(c["fence"], "absorbed");
            assert!(c.get("in_hold").is_none());
            // The holder's stats are the boundaries, not changes.
            assert!(
                a.windows
                    .iter()
                    .flat_map(|w| w.gap.iter().chain(&w.held))
                    .all(|&x| a.recs[x].op() != "stat")
            );
            assert!(w.checked.as_ref().unwrap().seq < chmod);
            assert!(w.absorbed_until.as_ref().unwrap().seq > chmod);
        }
    }

    #[test]
    fn a_hold_without_stat_records_is_absorbed_whole() {
        for p in 0..=2 {
            let mut j = J::default();
            let mut chmod = 0;
            j.stat_turn(false, |j, k, pp| {
                if (k, pp) == (2, p) {
                    chmod = j.chmod(OTHER, false);
                }
            });
            let a = j.analyze(Rules::V2026_5_22);
            assert_eq!(a.windows.len(), 3, "p {p}");
            assert!(a.windows.iter().all(|w| !w.verdict.tripped), "p {p}");
            let w = &a.windows[0];
            assert!(w.held.iter().any(|&x| a.recs[x].seq == chmod));
            assert!(w.fence_taken.is_none() && w.checked.is_none());
            assert!(w.notes.iter().any(|n| n.contains("no stat records")));
            assert_eq!(change_of(&a, w, chmod)["absorbed"], true);
        }
    }

    #[test]
    fn two_attempts_are_separate_and_the_time_between_them_is_no_window() {
        for traj in [true, false] {
            let mut j = J::default();
            j.turn(GW, traj, 1, nothing, nothing);
            // Between turns: a chmod nobody's fence sees (the next controller takes a
            // fresh fingerprint at its first release).
            let between = j.chmod(OTHER, false);
            j.turn(GW, traj, 1, nothing, nothing);
            let a = j.analyze(Rules::V2026_5_22);
            assert_eq!(a.attempts.len(), 2, "traj {traj}");
            assert!(a.windows.iter().all(|w| !w.verdict.tripped), "traj {traj}");
            assert!(
                a.windows
                    .iter()
                    .all(|w| !w.gap.iter().any(|&k| a.recs[k].seq == between))
            );
            assert_eq!(a.windows.iter().filter(|w| w.attempt == 0).count(), 4);
        }
    }

    #[test]
    fn a_tool_use_attempt_has_a_window_per_model_call_and_trips_in_the_second_gap() {
        let mut j = J::default();
        let mut chmod = 0;
        let acq = j.turn(
            GW,
            true,
            3,
            |j, k| {
                if k == 3 {
                    chmod = j.chmod(OTHER, false);
                }
            },
            nothing,
        );
        let a = j.analyze(Rules::V2026_5_22);
        assert_eq!(a.attempts[0].holds.len(), acq.len());
        let w = &a.windows[1];
        assert_eq!(w.reacquired.as_ref().unwrap().seq, acq[2]);
        assert_eq!(w.verdict.first_trip, Some(chmod));
        // The same attempt without the chmod: a window per acquisition after the first.
        let mut j = J::default();
        let acq = j.turn(GW, true, 3, nothing, nothing);
        let a = j.analyze(Rules::V2026_5_22);
        assert_eq!(a.windows.len(), acq.len() - 1);
        assert!(a.windows.iter().all(|w| !w.verdict.tripped));
    }

    #[test]
    fn rules_5_20_accept_an_assistant_append_in_a_gap_5_22_only_an_injected_one() {
        let mut j = J::default();
        let mut app = 0;
        j.turn(
            GW,
            true,
            1,
            |j, k| {
                if k == 3 {
                    app = j.assistant(OTHER, "beef");
                }
            },
            nothing,
        );
        let a = j.analyze(Rules::V2026_5_20);
        assert!(a.windows.iter().all(|w| !w.verdict.tripped));
        assert_eq!(a.windows[1].verdict.labels[&app], "accepted");
        let a = j.analyze(Rules::V2026_5_22);
        assert_eq!(a.windows[1].verdict.first_trip, Some(app));
        // An OpenClaw-injected line (gateway-injected) is accepted by 5.22.
        let a = analyze(Rules::V2026_5_22, F, j.recs.clone(), &|e| {
            Some(e["id"] == "beef")
        });
        assert!(a.windows.iter().all(|w| !w.verdict.tripped));
        // ... and a chmod in the same gap passes with it (only appended bytes are read),
        // while a user append does not.
        let mut j = J::default();
        j.turn(
            GW,
            true,
            1,
            |j, k| {
                if k == 3 {
                    j.chmod(OTHER, false);
                    j.assistant(OTHER, "beef");
                }
            },
            nothing,
        );
        let a = analyze(Rules::V2026_5_22, F, j.recs.clone(), &|e| {
            Some(e["id"] == "beef")
        });
        assert!(a.windows.iter().all(|w| !w.verdict.tripped));
        let a = j.analyze(Rules::V2026_5_20);
        assert!(a.windows.iter().all(|w| !w.verdict.tripped));
    }

    #[test]
    fn rules_6_11_forgive_ctime_only_drift_but_not_a_new_mtime() {
        let mut j = J::default();
        j.turn(
            GW,
            true,
            1,
            |j, k| {
                if k == 2 {
                    j.chmod(OTHER, false);
                }
            },
            nothing,
        );
        assert!(
            j.analyze(Rules::V2026_6_11)
                .windows
                .iter()
                .all(|w| !w.verdict.tripped)
        );
        assert!(j.analyze(Rules::V2026_5_22).windows[0].verdict.tripped);
        let mut j = J::default();
        let mut ut = 0;
        j.turn(
            GW,
            true,
            1,
            |j, k| {
                if k == 2 {
                    ut = j.utimens(OTHER);
                }
            },
            nothing,
        );
        assert_eq!(
            j.analyze(Rules::V2026_6_11).windows[0].verdict.first_trip,
            Some(ut)
        );
        // 6.11 merges an appended custom entry; 5.22 does not.
        let mut j = J::default();
        j.turn(
            GW,
            true,
            1,
            |j, k| {
                if k == 2 {
                    j.append(OTHER, "custom", None, "cafe");
                }
            },
            nothing,
        );
        assert!(
            j.analyze(Rules::V2026_6_11)
                .windows
                .iter()
                .all(|w| !w.verdict.tripped)
        );
        assert!(j.analyze(Rules::V2026_5_22).windows[0].verdict.tripped);
    }

    #[test]
    fn a_trip_at_the_cleanup_acquisition_is_swallowed() {
        let mut j = J::default();
        let n_calls = 1;
        // Holds: 1 controller, 2 model call, 3 and 4 after the prompt, 5 cleanup.
        j.turn(
            GW,
            true,
            n_calls,
            |j, k| {
                if k == 5 {
                    j.chmod(OTHER, false);
                }
            },
            nothing,
        );
        let a = j.analyze(Rules::V2026_5_22);
        let w = a.windows.last().unwrap();
        assert!(w.cleanup && w.verdict.tripped);
        assert_eq!(w.outcome, Some("swallowed"));
    }

    #[test]
    fn a_partial_line_or_a_rewrite_in_a_gap_trips() {
        let mut j = J::default();
        j.turn(GW, true, 1, |j, k| {
            if k == 2 {
                let ctx = j.ctx(OTHER);
                j.push(OTHER, json!({"op": "truncate", "path": F, "class": "rewrite", "fence_moved": true,
                    "removed": [{"line": 2, "type": "message", "role": "user", "id": "u1"}], "lock_context": ctx}));
            }
        }, nothing);
        let a = j.analyze(Rules::V2026_5_20);
        assert!(a.windows[0].verdict.tripped);
        let mut j = J::default();
        j.turn(
            GW,
            true,
            1,
            |j, k| {
                if k == 2 {
                    j.push(
                        OTHER,
                        json!({"op": "write", "path": F, "class": "append", "fence_moved": true,
                    "len": 10, "partial": 10, "lock_context": "none"}),
                    );
                }
            },
            nothing,
        );
        let a = j.analyze(Rules::V2026_5_20);
        assert!(a.windows[0].verdict.tripped);
        assert!(a.windows[0].verdict.reason.contains("newline"));
    }

    #[test]
    fn a_new_session_file_starts_its_attempt_at_the_hold_before_the_header() {
        // pi writes a new transcript (header, user, assistant) only at the first
        // assistant message, in the model call's hold.
        let mut j = J::default();
        j.acquire(GW);
        j.release(GW);
        j.acquire(GW);
        let ctx = j.ctx(GW);
        j.push(GW, json!({"op": "write", "path": F, "class": "append", "fence_moved": true, "len": 300,
            "entries": [{"type": "session", "id": "sess"}, {"type": "message", "role": "user", "id": "u"},
                        {"type": "message", "role": "assistant", "id": "a"}], "lock_context": ctx}));
        j.release(GW);
        let a = j.analyze(Rules::V2026_5_22);
        assert_eq!(a.attempts.len(), 1);
        assert_eq!(a.attempts[0].holds.len(), 2);
        assert_eq!(a.windows[0].index, 1);
    }

    #[test]
    fn holds_end_by_release_steal_or_reap() {
        let mut j = J::default();
        j.acquire(GW);
        j.release(GW);
        let c = j.acquire(GW);
        j.push(
            OTHER,
            json!({"op": "unlink", "path": L, "class": "rewrite"}),
        );
        j.push(OTHER, json!({"op": "lock-steal", "path": L, "class": "lock",
            "lock": {"guards": F, "holder": who(GW), "created_seq": c, "age_ms": 9, "holder_alive": true}}));
        let c = j.acquire(OTHER);
        j.push(0, json!({"op": "lock-reap", "path": L, "class": "lock",
            "lock": {"guards": F, "holder": who(OTHER), "created_seq": c, "age_ms": 9, "holder_alive": false}}));
        j.acquire(GW);
        let hs = holds(L, &j.recs);
        let ends: Vec<&str> = hs.iter().map(|h| h.end).collect();
        assert_eq!(ends, ["release", "steal", "reap", "held"]);
        assert_eq!(hs[2].holder.pid, OTHER);
        assert!(hs[3].released.is_none());
    }

    #[test]
    fn changes_verdicts() {
        let mut j = J::default();
        j.read(OTHER);
        j.chmod(OTHER, true);
        let v = |j: &J| changes_verdict(&j.recs, Some(GW), None);
        assert_eq!(v(&j), ChangesVerdict::Nothing);
        j.assistant(GW, "a1");
        assert_eq!(v(&j), ChangesVerdict::OwnAppends);
        j.chmod(OTHER, false);
        assert_eq!(v(&j), ChangesVerdict::Metadata);
        j.user(OTHER, "u2");
        assert_eq!(v(&j), ChangesVerdict::ForeignAppends);
        j.push(
            OTHER,
            json!({"op": "truncate", "path": F, "class": "rewrite", "fence_moved": true}),
        );
        assert_eq!(v(&j), ChangesVerdict::Rewrite);
        // A lane makes only that lane's appends own.
        let mut j = J::default();
        j.push(
            GW,
            json!({"op": "write", "path": F, "class": "append", "fence_moved": true, "lane": "cron",
            "entries": [{"type": "message", "role": "user", "id": "x"}]}),
        );
        assert_eq!(
            changes_verdict(&j.recs, Some(GW), Some("cron")),
            ChangesVerdict::OwnAppends
        );
        assert_eq!(
            changes_verdict(&j.recs, Some(GW), Some("main")),
            ChangesVerdict::ForeignAppends
        );
        // A failed change is nothing.
        let mut j = J::default();
        j.push(
            OTHER,
            json!({"op": "truncate", "path": F, "result": "EACCES"}),
        );
        assert_eq!(
            changes_verdict(&j.recs, Some(GW), None),
            ChangesVerdict::Nothing
        );
    }

    #[test]
    fn gateway_log_lines_console_json_and_pasted() {
        let log = r#"2026-12-06T04:27:01.878+00:00 [diagnostic] lane task error: lane=main durationMs=1766 error="EmbeddedAttemptSessionTakeoverError: session file changed while embedded prompt lock was released: /home/u/.openclaw/agents/main/sessions/ec22.jsonl"
2026-12-06T04:27:01.880+00:00 [diagnostic] lane task error: lane=session:agent:main:main durationMs=1770 error="EmbeddedAttemptSessionTakeoverError: session file changed while embedded prompt lock was released: /home/u/.openclaw/agents/main/sessions/ec22.jsonl"
2026-12-06T04:28:19.662+00:00 [diagnostic] lane task error: lane=main durationMs=9088 error="FailoverError: LLM request failed: network connection error."
{"0":"{\"subsystem\":\"diagnostic\"}","1":"lane task error: lane=main durationMs=36956 error=\"EmbeddedAttemptSessionTakeoverError: session file changed while embedded prompt lock was released: /s/67eb.jsonl\"","time":"2026-12-06T05:00:00.000+01:00"}
{"diagnostic","1":"lane task error: lane=main durationMs=456451 error=\"EmbeddedAttemptSessionTakeoverError: session file changed while embedded prompt lock was released: .../534e.jsonl\""}
11:37:47 lane task error: lane=main durationMs=14386 error="EmbeddedAttemptSessionTakeoverError: session file changed while embedded prompt lock was released: ...fb87.jsonl"
"#;
        let t = parse_gateway_log(log);
        assert_eq!(t.len(), 4, "{t:?}");
        assert_eq!(t[0].lanes, ["main", "session:agent:main:main"]);
        assert_eq!(t[0].duration_ms, Some(1766));
        assert_eq!(
            t[0].path,
            "/home/u/.openclaw/agents/main/sessions/ec22.jsonl"
        );
        assert_eq!(t[0].time_ns, parse_time_ns("2026-12-06T04:27:01.878Z"));
        assert_eq!(t[1].path, "/s/67eb.jsonl");
        assert_eq!(t[1].time_ns, parse_time_ns("2026-12-06T04:00:00Z"));
        assert_eq!(t[1].line, 4);
        assert_eq!(base_name(&t[2].path), "534e.jsonl");
        assert_eq!(t[2].time_ns, None);
        assert_eq!(t[3].time, "11:37:47");
        assert_eq!(base_name(&t[3].path), "fb87.jsonl");
    }

    #[test]
    fn a_takeover_is_matched_to_the_window_that_tripped_before_it() {
        let mut j = J::default();
        let mut chmod = 0;
        j.turn(
            GW,
            true,
            1,
            |j, k| {
                if k == 2 {
                    chmod = j.chmod(OTHER, false);
                }
            },
            nothing,
        );
        let a = j.analyze(Rules::V2026_5_22);
        let w = &a.windows[0];
        let re = parse_time_ns(&w.reacquired.as_ref().unwrap().ts).unwrap();
        let t = Takeover {
            line: 1,
            time: String::new(),
            time_ns: Some(re + 30_000_000),
            lanes: vec!["main".into()],
            duration_ms: Some(5000),
            path: "/x/s.jsonl".into(),
        };
        let used = HashSet::new();
        assert_eq!(match_takeover(&t, &a.windows, &used), Some(0));
        assert_eq!(a.windows[0].verdict.first_trip, Some(chmod));
        let late = Takeover {
            time_ns: Some(re + 60_000_000_000),
            ..t.clone()
        };
        assert_eq!(match_takeover(&late, &a.windows, &used), None);
        let used: HashSet<usize> = [0].into();
        assert_eq!(match_takeover(&t, &a.windows, &used), None);
        let untimed = Takeover { time_ns: None, ..t };
        assert_eq!(
            match_takeover(&untimed, &a.windows, &HashSet::new()),
            Some(0)
        );
    }

    #[test]
    fn times_and_since() {
        assert_eq!(parse_time_ns("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_time_ns("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_time_ns("1970-01-01 00:00:01.5"), Some(1_500_000_000));
        assert_eq!(
            parse_time_ns("2026-11-22T14:40:30.123456789Z"),
            Some(1_795_358_430_123_456_789)
        );
        assert_eq!(
            parse_time_ns("2026-12-06T04:28:19.662+00:00"),
            parse_time_ns("2026-12-06T04:28:19.662Z")
        );
        assert_eq!(parse_time_ns("11:37:47"), None);
        assert_eq!(parse_time_ns("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_since("1200"), Ok(Since::Seq(1200)));
        assert!(matches!(
            parse_since("2026-12-06T04:28:40Z"),
            Ok(Since::TimeNs(_))
        ));
        assert!(matches!(parse_since("10m"), Ok(Since::TimeNs(_))));
        let e = parse_since("yesterday").unwrap_err();
        assert!(e.contains("bad --since") && !e.contains('\n'), "{e}");
    }
}
