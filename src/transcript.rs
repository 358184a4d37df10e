//! Transcript decoding: which entries (lines of a `*.jsonl` session file) a change
//! appended, rewrote or removed.
//!
//! Format (source: OpenClaw 2026.5.22 transcripts): one JSON object per line, with
//! `type`, `id`, `parentId`, `message.role` and `customType` as the fields we read.
//! Decoding uses a borrowed serde struct that reads only those fields; everything else
//! is skipped. Lines that are not UTF-8 or not a JSON object are kept byte for byte in
//! the file and reported as `unparsed`.
//!
//! Per file (key = backing (dev, ino)) the tracker keeps the state at EOF: bytes known,
//! the line index (each complete line's start offset, entry id and type), and the
//! pending partial line. The state is bounded by an LRU over files and a cap on
//! indexed lines; a file that fell out is rebuilt from its bytes on its next write (one
//! sequential read). Lines a change through the mount removes are named from their
//! bytes, read (and salvaged) before the change; the index's ids name what an outside
//! change removed, whose bytes are gone ([`TranscriptTracker::external_change`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::os::fd::BorrowedFd;

use parking_lot::Mutex;
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::journal::record::Entry;
use crate::sys::FileKey;

/// True for names the decoder applies to (`*.jsonl`).
pub fn is_transcript(name: &[u8]) -> bool {
    name.ends_with(b".jsonl")
}

/// Result of one change to a transcript.
#[derive(Debug, Default)]
pub struct Change {
    /// Complete lines the change produced.
    pub entries: Vec<Entry>,
    /// Lines the change removed or overwrote.
    pub removed: Vec<Entry>,
    /// The removed lines' bytes, exactly as they were, concatenated in `removed` order.
    pub salvage: Vec<u8>,
    /// Bytes of a trailing partial line now pending.
    pub partial: u64,
}

/// A string field that may also hold another JSON type (then it is not reported).
/// Deserialized by hand rather than as an untagged enum, which would first buffer the
/// whole value (serde's `Content`): other values are skipped without allocating.
enum MaybeStr<'a> {
    Str(Cow<'a, str>),
    Other,
}

impl MaybeStr<'_> {
    fn into_string(self) -> Option<String> {
        match self {
            MaybeStr::Str(s) => Some(s.into_owned()),
            MaybeStr::Other => None,
        }
    }
}

/// Visits any JSON value: strings are kept (borrowed when unescaped), anything else is
/// skipped, and a map's `role` key is reported as well when `want_role` (for
/// `message`).
struct Skim {
    want_role: bool,
}

/// What [`Skim`] saw: the string, or for a map with `want_role`, its `role` string.
enum Skimmed<'a> {
    Str(Cow<'a, str>),
    Role(Option<Cow<'a, str>>),
    Other,
}

impl<'de> serde::de::Visitor<'de> for Skim {
    type Value = Skimmed<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Skimmed::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Skimmed::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Skimmed::Str(Cow::Owned(v)))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Skimmed::Other)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Skimmed::Other)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Skimmed::Other)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Skimmed::Other)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Skimmed::Other)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        while a.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Skimmed::Other)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let mut role = None;
        while let Some(k) = a.next_key::<MaybeStr<'de>>()? {
            match k {
                MaybeStr::Str(k) if self.want_role && k == "role" && role.is_none() => {
                    role = match a.next_value::<MaybeStr<'de>>()? {
                        MaybeStr::Str(r) => Some(r),
                        MaybeStr::Other => None,
                    };
                }
                _ => {
                    a.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(if self.want_role {
            Skimmed::Role(role)
        } else {
            Skimmed::Other
        })
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for MaybeStr<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match d.deserialize_any(Skim { want_role: false })? {
            Skimmed::Str(s) => MaybeStr::Str(s),
            _ => MaybeStr::Other,
        })
    }
}

/// `message.role` when `message` is an object with a string `role`.
struct MessageRole<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for MessageRole<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match d.deserialize_any(Skim { want_role: true })? {
            Skimmed::Role(r) => MessageRole(r),
            _ => MessageRole(None),
        })
    }
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<MaybeStr<'a>>,
    #[serde(borrow)]
    id: Option<MaybeStr<'a>>,
    #[serde(rename = "parentId", borrow)]
    parent_id: Option<MaybeStr<'a>>,
    #[serde(rename = "customType", borrow)]
    custom_type: Option<MaybeStr<'a>>,
    #[serde(borrow)]
    message: Option<MessageRole<'a>>,
}

/// Whether `text` starts (after JSON whitespace) like an object.
fn is_object(text: &str) -> bool {
    text.trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
}

/// `type` of an entry whose line is not UTF-8 or not a JSON object (the reason is in
/// [`Entry::unparsed`]).
pub const UNPARSED: &str = "unparsed";

/// Decode one line (without its newline). `line_no` is 1-based; `bytes` counts the
/// newline when the line has one.
pub fn decode(line: &[u8], line_no: u64, offset: u64, bytes: u64) -> Entry {
    let mut e = Entry {
        line: line_no,
        offset,
        bytes,
        ..Default::default()
    };
    let Ok(text) = std::str::from_utf8(line) else {
        e.kind = Some(UNPARSED.into());
        e.unparsed = Some("not_utf8".into());
        return e;
    };
    let trimmed = text.trim_end_matches('\r');
    // Only an object is an entry: serde would also fill a struct from an array.
    let parsed = if is_object(trimmed) {
        serde_json::from_str::<Line<'_>>(trimmed).ok()
    } else {
        None
    };
    match parsed {
        Some(l) => {
            e.kind = l.kind.and_then(MaybeStr::into_string);
            e.id = l.id.and_then(MaybeStr::into_string);
            e.parent_id = l.parent_id.and_then(MaybeStr::into_string);
            e.custom_type = l.custom_type.and_then(MaybeStr::into_string);
            e.role = l.message.and_then(|m| m.0).map(Cow::into_owned);
        }
        None => {
            e.kind = Some(UNPARSED.into());
            e.unparsed = Some("not_json".into());
        }
    }
    e
}

/// Split `buf` (file bytes starting at `base`, the first line being line `first_line`)
/// into entries for every complete line; returns them and the offset just past the
/// last newline.
fn decode_lines(buf: &[u8], base: u64, first_line: u64) -> (Vec<Entry>, u64) {
    let mut out = Vec::new();
    let mut start = 0usize;
    for (line, nl) in (first_line..).zip(memchr_iter(buf)) {
        let l = &buf[start..nl];
        out.push(decode(
            l,
            line,
            base + start as u64,
            (nl + 1 - start) as u64,
        ));
        start = nl + 1;
    }
    (out, base + start as u64)
}

fn memchr_iter(buf: &[u8]) -> impl Iterator<Item = usize> + '_ {
    buf.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i)
}

fn read_range(fd: BorrowedFd<'_>, start: u64, end: u64) -> Vec<u8> {
    let mut buf = vec![0u8; end.saturating_sub(start) as usize];
    let mut got = 0usize;
    while got < buf.len() {
        match crate::sys::pread(fd, &mut buf[got..], start + got as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    buf.truncate(got);
    buf
}

fn file_size(fd: BorrowedFd<'_>) -> u64 {
    crate::sys::fstat(fd).map(|s| s.st_size as u64).unwrap_or(0)
}

/// Largest pending partial line kept in memory; longer ones are re-read at completion.
const MAX_PARTIAL_IN_MEMORY: usize = 64 << 20;
/// Total line starts indexed across files before the least recently used file goes.
const MAX_INDEXED_LINES: usize = 1 << 20;

/// Entry types of OpenClaw 2026.5.22 transcripts (BRIEF "Transcript lines"), stored
/// in the line index as 1-based codes; any other type is kept by line in
/// [`LineIds::other`].
const KINDS: &[&str] = &[
    "session",
    "message",
    "thinking_level_change",
    "model_change",
    "compaction",
    "branch_summary",
    "custom",
    "custom_message",
    "label",
    "session_info",
    "leaf",
    UNPARSED,
];
/// Code of a line without a `type`.
const KIND_NONE: u8 = 0;
/// Code of a line whose `type` is not in [`KINDS`].
const KIND_OTHER: u8 = u8::MAX;

/// The entry id and type of every complete line of one file (index = line − 1), the
/// line index's "offset → entry id" half: what an outside change removed can be
/// named from it after the bytes are gone. Compact, since it is kept per line of every
/// recently written transcript: ids concatenated in one buffer (an OpenClaw id is 8
/// bytes), types as one-byte codes. ~13 bytes per line besides its start offset.
#[derive(Debug, Default)]
struct LineIds {
    /// Id bytes of every line, concatenated (a line without an id adds none).
    ids: Vec<u8>,
    /// End of line i's id in `ids`.
    ends: Vec<u32>,
    /// Type code of line i ([`KINDS`], [`KIND_NONE`], [`KIND_OTHER`]).
    kinds: Vec<u8>,
    /// Types outside [`KINDS`], by line index.
    other: HashMap<u32, Box<str>>,
}

/// Longest entry id the line index stores (bytes); a longer one is indexed as no id.
const MAX_INDEXED_ID: usize = 255;
/// Longest entry type the line index stores (bytes); a longer one is indexed as none.
const MAX_INDEXED_KIND: usize = 64;

/// The (type, id) by which the line index knows an entry: empty and over-long values
/// count as absent, on both sides of a comparison.
fn index_key<'a>(kind: Option<&'a str>, id: Option<&'a str>) -> (Option<&'a str>, Option<&'a str>) {
    (
        kind.filter(|k| k.len() <= MAX_INDEXED_KIND),
        id.filter(|i| !i.is_empty() && i.len() <= MAX_INDEXED_ID),
    )
}

impl LineIds {
    fn push(&mut self, e: &Entry) {
        let i = self.kinds.len() as u32;
        let (kind, id) = index_key(e.kind.as_deref(), e.id.as_deref());
        let code = match kind {
            None => KIND_NONE,
            Some(k) => match KINDS.iter().position(|x| *x == k) {
                Some(p) => p as u8 + 1,
                None => {
                    self.other.insert(i, k.into());
                    KIND_OTHER
                }
            },
        };
        self.kinds.push(code);
        // `ends` are u32: past 4 GiB of ids in one file, further lines get none.
        if let Some(id) = id
            && self.ids.len() + id.len() <= u32::MAX as usize
        {
            self.ids.extend_from_slice(id.as_bytes());
        }
        self.ends.push(self.ids.len() as u32);
    }

    /// Id and type of line index `i`.
    fn get(&self, i: usize) -> (Option<&str>, Option<&str>) {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        let id = &self.ids[start..self.ends[i] as usize];
        // Ids come from `String`s, and each is stored whole.
        let id = std::str::from_utf8(id).ok().filter(|s| !s.is_empty());
        let kind = match self.kinds[i] {
            KIND_NONE => None,
            KIND_OTHER => self.other.get(&(i as u32)).map(|b| &**b),
            c => Some(KINDS[c as usize - 1]),
        };
        (kind, id)
    }
}

/// EOF state of one transcript.
#[derive(Debug)]
struct FileState {
    /// Bytes of the file this state describes.
    size: u64,
    /// Offset of the first byte after the last newline (start of the partial line).
    partial_start: u64,
    /// The partial line's bytes, when small enough to keep.
    partial: Option<Vec<u8>>,
    /// Start offset of every complete line (index = line number - 1).
    starts: Vec<u64>,
    /// Entry id and type of every complete line.
    ids: LineIds,
    /// LRU clock.
    used: u64,
}

impl FileState {
    /// The state of a file whose bytes are `buf` and whose complete lines, decoded, are
    /// `lines` (ending at `tail`).
    fn from_decoded(buf: &[u8], lines: &[Entry], tail: u64) -> FileState {
        let mut ids = LineIds::default();
        lines.iter().for_each(|e| ids.push(e));
        let partial = &buf[tail as usize..];
        FileState {
            size: buf.len() as u64,
            partial_start: tail,
            partial: (partial.len() <= MAX_PARTIAL_IN_MEMORY).then(|| partial.to_vec()),
            starts: lines.iter().map(|e| e.offset).collect(),
            ids,
            used: 0,
        }
    }

    /// Line index `i` as a removed entry known only from the index (its bytes are gone).
    fn indexed_entry(&self, i: usize) -> Entry {
        let (kind, id) = self.ids.get(i);
        let end = self
            .starts
            .get(i + 1)
            .copied()
            .unwrap_or(self.partial_start);
        Entry {
            line: i as u64 + 1,
            offset: self.starts[i],
            bytes: end - self.starts[i],
            kind: kind.map(str::to_string),
            id: id.map(str::to_string),
            ..Default::default()
        }
    }

    /// See [`span`].
    fn span(&self, from: u64, to: u64) -> (u64, u64, u64) {
        span(&self.starts, self.partial_start, self.size, from, to)
    }
}

/// Start offsets of the complete lines of `buf`, and the offset just past its last
/// newline.
fn line_starts(buf: &[u8]) -> (Vec<u64>, u64) {
    let mut starts = Vec::new();
    let mut s = 0u64;
    for nl in memchr_iter(buf) {
        starts.push(s);
        s = nl as u64 + 1;
    }
    (starts, s)
}

/// 1-based line number of the line containing `offset` (or starting there), for lines
/// starting at `starts` and a pending partial line at `partial_start` (which counts as
/// line `starts.len() + 1`).
fn line_at(starts: &[u64], partial_start: u64, offset: u64) -> u64 {
    match starts.binary_search(&offset) {
        Ok(i) => i as u64 + 1,
        Err(i) if i == starts.len() && offset >= partial_start => i as u64 + 1,
        Err(i) => (i as u64).max(1), // inside line i (1-based)
    }
}

/// The whole lines overlapping `[from, to)` of a file of `size` bytes (lines as for
/// [`line_at`]): (first line number, start offset, end offset); a trailing partial line
/// counts, up to `size`.
fn span(starts: &[u64], partial_start: u64, size: u64, from: u64, to: u64) -> (u64, u64, u64) {
    let first = line_at(starts, partial_start, from);
    let n = starts.len();
    let start = if (first as usize) <= n && starts[first as usize - 1] <= from {
        starts[first as usize - 1]
    } else {
        partial_start
    };
    // End: the end of the line holding byte `to - 1`.
    let last = line_at(starts, partial_start, to.saturating_sub(1).max(from));
    let stop = match last as usize {
        l if l < n => starts[l],
        l if l == n => partial_start,
        _ => size,
    };
    (first, start, stop)
}

/// Per-file line state (line index, pending partial line), bounded by an LRU.
#[derive(Debug, Default)]
pub struct TranscriptTracker {
    files: Mutex<Tracked>,
    max_files: usize,
}

#[derive(Debug, Default)]
struct Tracked {
    map: HashMap<FileKey, FileState>,
    clock: u64,
    lines: usize,
}

impl Tracked {
    fn touch(&mut self, key: FileKey) {
        self.clock += 1;
        let c = self.clock;
        if let Some(s) = self.map.get_mut(&key) {
            s.used = c;
        }
    }

    fn evict(&mut self, max_files: usize) {
        while self.map.len() > max_files || (self.lines > MAX_INDEXED_LINES && self.map.len() > 1) {
            let Some((&k, _)) = self.map.iter().min_by_key(|(_, s)| s.used) else {
                break;
            };
            if let Some(s) = self.map.remove(&k) {
                self.lines -= s.starts.len();
            }
        }
    }

    fn remove(&mut self, key: FileKey) {
        if let Some(s) = self.map.remove(&key) {
            self.lines -= s.starts.len();
        }
    }

    /// Make `st` the state of `key` (the most recently used), within the bounds.
    fn put(&mut self, key: FileKey, st: FileState, max_files: usize) {
        self.remove(key);
        self.lines += st.starts.len();
        self.map.insert(key, st);
        self.touch(key);
        self.evict(max_files);
    }
}

impl TranscriptTracker {
    /// Tracker keeping at most `max_files` files' line indexes.
    pub fn new(max_files: usize) -> Self {
        Self {
            files: Mutex::new(Tracked::default()),
            max_files: max_files.max(1),
        }
    }

    /// Before a write of `len` bytes at `offset` to the file `key` whose size is
    /// `size_before`: the lines it will overwrite (whole lines touched), with their
    /// bytes. `fd` must be readable.
    pub fn before_write(
        &self,
        key: FileKey,
        fd: BorrowedFd<'_>,
        offset: u64,
        len: u64,
        size_before: u64,
    ) -> Change {
        if offset >= size_before || len == 0 {
            return Change::default();
        }
        let end = (offset + len).min(size_before);
        self.removed_region(key, fd, offset, end, size_before)
    }

    /// After `data` landed at `offset` (the real offset, O_APPEND resolved): the
    /// complete lines it produced. `fd` must be readable.
    pub fn after_write(
        &self,
        key: FileKey,
        fd: BorrowedFd<'_>,
        offset: u64,
        data: &[u8],
    ) -> Change {
        let end = offset + data.len() as u64;
        let mut t = self.files.lock();
        let Some(st) = t.map.get_mut(&key).filter(|s| s.size == offset) else {
            // Not a plain append to the EOF we know: rebuild, without the lock.
            t.remove(key);
            drop(t);
            return self.rebuild_after_write(key, fd, offset, end);
        };
        let mut entries = Vec::new();
        let mut seg_start = 0usize; // start in `data` of the line being completed
        let mut added = 0usize;
        for nl in memchr_iter(data) {
            let line_start = if seg_start == 0 {
                st.partial_start
            } else {
                offset + seg_start as u64
            };
            let line_no = st.starts.len() as u64 + 1;
            let e = if seg_start == 0 && st.partial_start < offset {
                // Completes a pending partial line: partial bytes + this data.
                let mut full = match st.partial.take() {
                    Some(p) => p,
                    None => read_range(fd, st.partial_start, offset),
                };
                full.extend_from_slice(&data[..nl]);
                decode(&full, line_no, line_start, full.len() as u64 + 1)
            } else {
                decode(
                    &data[seg_start..nl],
                    line_no,
                    line_start,
                    (nl + 1 - seg_start) as u64,
                )
            };
            st.ids.push(&e);
            entries.push(e);
            st.starts.push(line_start);
            added += 1;
            seg_start = nl + 1;
            st.partial_start = offset + seg_start as u64;
            st.partial = Some(Vec::new());
        }
        let rest = &data[seg_start..];
        if !rest.is_empty() {
            match &mut st.partial {
                Some(p) if p.len() + rest.len() <= MAX_PARTIAL_IN_MEMORY => {
                    p.extend_from_slice(rest)
                }
                _ => st.partial = None,
            }
        }
        st.size = end;
        let partial = st.size - st.partial_start;
        t.lines += added;
        t.touch(key);
        t.evict(self.max_files);
        Change {
            entries,
            partial,
            ..Default::default()
        }
    }

    /// [`Self::after_write`] for a write that was not a plain append to the EOF we
    /// know: rebuild the index from the file as it is now and report the complete
    /// lines the written range `[offset, end)` touches. The file is read without the
    /// tracker's lock (a large transcript takes milliseconds), so writes to other
    /// transcripts go on; the caller holds this inode's journal-order lock, so nothing
    /// else changes this key meanwhile.
    fn rebuild_after_write(
        &self,
        key: FileKey,
        fd: BorrowedFd<'_>,
        offset: u64,
        end: u64,
    ) -> Change {
        let buf = read_range(fd, 0, file_size(fd));
        let (lines, tail) = decode_lines(&buf, 0, 1);
        let st = FileState::from_decoded(&buf, &lines, tail);
        let partial = st.size - st.partial_start;
        // The complete lines that the written range touches.
        let entries = lines
            .into_iter()
            .filter(|e| e.offset < end && e.offset + e.bytes > offset)
            .collect();
        self.files.lock().put(key, st, self.max_files);
        Change {
            entries,
            partial,
            ..Default::default()
        }
    }

    /// Before a truncate from `old_size` to `new_size`: every line with a byte at or
    /// past `new_size` (a line the truncate cuts counts as removed), with its bytes.
    pub fn before_truncate(
        &self,
        key: FileKey,
        fd: BorrowedFd<'_>,
        old_size: u64,
        new_size: u64,
    ) -> Change {
        if new_size >= old_size {
            return Change::default();
        }
        let ch = self.removed_region(key, fd, new_size, old_size, old_size);
        self.forget(key);
        ch
    }

    /// Lines overlapping `[from, to)` of the file as it is now (size `size`).
    fn removed_region(
        &self,
        key: FileKey,
        fd: BorrowedFd<'_>,
        from: u64,
        to: u64,
        size: u64,
    ) -> Change {
        // The cached line starts when they describe this size, else the file's own
        // (read without the tracker's lock, and not kept: the change drops the state).
        let cached = {
            let t = self.files.lock();
            t.map
                .get(&key)
                .filter(|st| st.size == size)
                .map(|st| st.span(from, to))
        };
        let (first, start, stop) = cached.unwrap_or_else(|| {
            let buf = read_range(fd, 0, size);
            let (starts, tail) = line_starts(&buf);
            span(&starts, tail, buf.len() as u64, from, to)
        });
        let bytes = read_range(fd, start, stop);
        let (mut removed, tail) = decode_lines(&bytes, start, first);
        if tail < start + bytes.len() as u64 {
            // A trailing partial line (no newline) is removed too.
            let p = &bytes[(tail - start) as usize..];
            removed.push(decode(
                p,
                first + removed.len() as u64,
                tail,
                p.len() as u64,
            ));
        }
        self.forget(key);
        Change {
            entries: Vec::new(),
            removed,
            salvage: bytes,
            partial: 0,
        }
    }

    /// Every byte of the file `fd` (read before a rename replaces it).
    pub fn read_all(fd: BorrowedFd<'_>) -> Vec<u8> {
        read_range(fd, 0, file_size(fd))
    }

    /// A rename replaced transcript `a` (its bytes, read before) with `new`: lines of `a` that
    /// are not in `new` (multiset of exact line bytes) are removed; lines of `new` that
    /// were not in `old` are its entries.
    pub fn diff_replaced(&self, a: &[u8], new: BorrowedFd<'_>) -> Change {
        let b = read_range(new, 0, file_size(new));
        let split = |buf: &[u8]| -> Vec<(u64, usize, usize)> {
            // (line_no, start, end incl. newline)
            let mut v = Vec::new();
            let mut s = 0usize;
            for nl in memchr_iter(buf) {
                v.push((v.len() as u64 + 1, s, nl + 1));
                s = nl + 1;
            }
            if s < buf.len() {
                v.push((v.len() as u64 + 1, s, buf.len()));
            }
            v
        };
        let (la, lb) = (split(a), split(&b));
        let mut count: HashMap<&[u8], i64> = HashMap::new();
        for &(_, s, e) in &lb {
            *count.entry(&b[s..e]).or_default() += 1;
        }
        let mut ch = Change::default();
        for &(n, s, e) in &la {
            let c = count.entry(&a[s..e]).or_default();
            if *c > 0 {
                *c -= 1;
            } else {
                let body = a[s..e].strip_suffix(b"\n").unwrap_or(&a[s..e]);
                ch.removed.push(decode(body, n, s as u64, (e - s) as u64));
                ch.salvage.extend_from_slice(&a[s..e]);
            }
        }
        let mut count_a: HashMap<&[u8], i64> = HashMap::new();
        for &(_, s, e) in &la {
            *count_a.entry(&a[s..e]).or_default() += 1;
        }
        for &(n, s, e) in &lb {
            let c = count_a.entry(&b[s..e]).or_default();
            if *c > 0 {
                *c -= 1;
            } else if b[s..e].ends_with(b"\n") {
                ch.entries
                    .push(decode(&b[s..e - 1], n, s as u64, (e - s) as u64));
            }
        }
        ch
    }

    /// Drop state for `key` (file unlinked, truncated or inode forgotten).
    pub fn forget(&self, key: FileKey) {
        self.files.lock().remove(key);
    }

    /// A change to the transcript `key` that did not come through the mount (a backing
    /// stat we did not cause): compare the line index with the file as it is now
    /// (`fd`, read whole) as multisets of (type, id). `removed`: indexed lines no
    /// longer there, named from the index (their bytes were never seen, so they are
    /// not in salvage); `entries`: lines that were not there before, decoded. `None`
    /// when the file is not indexed (not written through the mount recently), as then
    /// there is nothing to compare with. The index is rebuilt from the new bytes.
    pub fn external_change(&self, key: FileKey, fd: BorrowedFd<'_>) -> Option<Change> {
        let old = {
            let mut t = self.files.lock();
            let old = t.map.remove(&key)?;
            t.lines -= old.starts.len();
            old
        };
        let ids = &old.ids;
        let buf = read_range(fd, 0, file_size(fd));
        let (now, tail) = decode_lines(&buf, 0, 1);
        let mut count: HashMap<(Option<&str>, Option<&str>), i64> = HashMap::new();
        for i in 0..old.starts.len() {
            *count.entry(ids.get(i)).or_default() += 1;
        }
        let mut entries = Vec::new();
        for e in &now {
            match count.get_mut(&index_key(e.kind.as_deref(), e.id.as_deref())) {
                Some(n) if *n > 0 => *n -= 1,
                _ => entries.push(e.clone()),
            }
        }
        let mut removed = Vec::new();
        for i in 0..old.starts.len() {
            if let Some(n) = count.get_mut(&ids.get(i))
                && *n > 0
            {
                *n -= 1;
                removed.push(old.indexed_entry(i));
            }
        }
        // The new state from the lines just decoded (no second parse).
        let st = FileState::from_decoded(&buf, &now, tail);
        let partial = st.size - st.partial_start;
        let mut t = self.files.lock();
        // A write through the mount may have indexed the file meanwhile: keep its state.
        if !t.map.contains_key(&key) {
            t.put(key, st, self.max_files);
        }
        Some(Change {
            entries,
            removed,
            salvage: Vec::new(),
            partial,
        })
    }
}

/// Lines cut from transcripts whose rewrite is still in progress, keyed by backing
/// inode.
///
/// OpenClaw rewrites a transcript in place (header and parent-link migrations: open
/// with O_TRUNC, or ftruncate, then write the new text), so a truncate alone says
/// nothing about which entries are gone. The lines a truncate or an overwrite cuts are
/// held here while a writable handle of the file stays open; every complete line
/// written meanwhile that equals a cut line (exact bytes, multiset) puts it back. When
/// the last writable handle is released, what is left is what the rewrite removed.
#[derive(Debug, Default)]
pub struct Rewrites {
    map: Mutex<HashMap<FileKey, Rewrite>>,
    /// Number of open rewrites: lets writes skip the lock when there are none.
    open: std::sync::atomic::AtomicUsize,
}

/// One rewrite in progress (see [`Rewrites`]).
#[derive(Debug, Default)]
pub struct Rewrite {
    /// The file's journal identity when the rewrite began (its salvage store).
    pub file: crate::journal::record::FileRef,
    /// Cut lines not written back (yet), in cut order; `None` once put back.
    lines: Vec<Option<(Entry, Vec<u8>)>>,
    /// Index of `lines` by exact line bytes.
    by_bytes: HashMap<Vec<u8>, Vec<usize>>,
    /// Cut lines written back so far.
    pub restored: u64,
    /// Salvage store span `[start, end)` (bytes) holding every cut line, when the cuts
    /// were appended back to back; `None` when they were not (then nothing is
    /// rewound).
    pub salvage: Option<(u64, u64)>,
}

impl Rewrite {
    /// The cut lines never written back, and their bytes concatenated in that order.
    pub fn net(self) -> (Vec<Entry>, Vec<u8>) {
        let mut removed = Vec::new();
        let mut bytes = Vec::new();
        for (e, b) in self.lines.into_iter().flatten() {
            removed.push(e);
            bytes.extend_from_slice(&b);
        }
        (removed, bytes)
    }
}

impl Rewrites {
    /// True when no rewrite is in progress (one atomic load).
    pub fn is_idle(&self) -> bool {
        self.open.load(std::sync::atomic::Ordering::Acquire) == 0
    }

    /// Hold the lines `cut` removed from file `key` (at journal path `path`) until the
    /// rewrite ends. `salvage` is the span of the salvage store their bytes were just
    /// appended to, if they were. Returns the number of lines held by this call.
    pub fn cut(
        &self,
        key: FileKey,
        file: crate::journal::record::FileRef,
        cut: Change,
        salvage: Option<(u64, u64)>,
    ) -> u64 {
        let mut map = self.map.lock();
        let rw = map.entry(key).or_insert_with(|| {
            self.open.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            Rewrite {
                file,
                ..Default::default()
            }
        });
        // The first cut sets the span; a later one extends it only if its bytes were
        // appended right after (cuts always hold at least one line).
        rw.salvage = match (rw.lines.is_empty(), rw.salvage, salvage) {
            (true, _, s) => s,
            (false, Some((a, b)), Some((c, d))) if b == c => Some((a, d)),
            _ => None,
        };
        let mut at = 0usize;
        let n = cut.removed.len() as u64;
        for e in cut.removed {
            let end = (at + e.bytes as usize).min(cut.salvage.len());
            let bytes = cut.salvage[at..end].to_vec();
            at = end;
            rw.by_bytes
                .entry(bytes.clone())
                .or_default()
                .push(rw.lines.len());
            rw.lines.push(Some((e, bytes)));
        }
        n
    }

    /// Complete lines `lines` (exact bytes, newline included) were written to file
    /// `key`: each one equal to a held cut line puts it back. Returns how many did.
    pub fn put_back<'a>(&self, key: FileKey, lines: impl IntoIterator<Item = &'a [u8]>) -> u64 {
        if self.is_idle() {
            return 0;
        }
        let mut map = self.map.lock();
        let Some(rw) = map.get_mut(&key) else {
            return 0;
        };
        let mut n = 0;
        for l in lines {
            if let Some(slots) = rw.by_bytes.get_mut(l)
                && let Some(i) = slots.pop()
            {
                rw.lines[i] = None;
                n += 1;
            }
        }
        rw.restored += n;
        n
    }

    /// Is a rewrite of file `key` in progress?
    pub fn is_open(&self, key: FileKey) -> bool {
        !self.is_idle() && self.map.lock().contains_key(&key)
    }

    /// End the rewrite of file `key` (its last writable handle was released).
    pub fn close(&self, key: FileKey) -> Option<Rewrite> {
        if self.is_idle() {
            return None;
        }
        let rw = self.map.lock().remove(&key)?;
        self.open.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        Some(rw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file key on device 0.
    fn k(ino: u64) -> FileKey {
        FileKey { dev: 0, ino }
    }
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::os::unix::fs::FileExt;

    fn line(id: &str) -> String {
        format!(
            "{{\"type\":\"message\",\"id\":\"{id}\",\"parentId\":null,\"message\":{{\"role\":\"user\",\"content\":\"x\"}}}}\n"
        )
    }

    #[test]
    fn decodes_fields_and_marks_unparsed() {
        let e = decode(br#"{"type":"custom","customType":"model-snapshot","id":"ab12cd34","parentId":"p","extra":[1,{"a":2}]}"#, 3, 10, 99);
        assert_eq!(
            (e.kind.as_deref(), e.id.as_deref(), e.parent_id.as_deref()),
            (Some("custom"), Some("ab12cd34"), Some("p"))
        );
        assert_eq!(e.custom_type.as_deref(), Some("model-snapshot"));
        assert_eq!((e.line, e.offset, e.bytes), (3, 10, 99));
        let m = decode(
            br#"{"type":"message","id":"i\u0041","message":{"role":"assistant","usage":{}}}"#,
            1,
            0,
            1,
        );
        assert_eq!(m.role.as_deref(), Some("assistant"));
        assert_eq!(m.id.as_deref(), Some("iA"), "escapes are decoded");
        let bad = decode(b"not json", 1, 0, 9);
        assert_eq!(
            (bad.kind.as_deref(), bad.unparsed.as_deref()),
            (Some("unparsed"), Some("not_json"))
        );
        let raw = decode(b"{\"id\":\"\xff\"}", 1, 0, 9);
        assert_eq!(
            (raw.kind.as_deref(), raw.unparsed.as_deref()),
            (Some("unparsed"), Some("not_utf8"))
        );
        assert_eq!(
            decode(b"[1,2]", 1, 0, 6).unparsed.as_deref(),
            Some("not_json")
        );
        let odd = decode(br#"{"id":5,"parentId":null,"message":"text"}"#, 1, 0, 1);
        assert_eq!(
            (odd.id, odd.parent_id, odd.role, odd.unparsed),
            (None, None, None, None)
        );
    }

    fn tmpfile(content: &[u8]) -> std::fs::File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(content).unwrap();
        f
    }

    #[test]
    fn split_line_is_decoded_once_complete() {
        let t = TranscriptTracker::new(8);
        let mut f = tmpfile(b"");
        let l = line("aaaa0001");
        let (a, b) = l.as_bytes().split_at(10);
        f.write_all(a).unwrap();
        let c1 = t.after_write(k(1), f.as_fd(), 0, a);
        assert!(c1.entries.is_empty());
        assert_eq!(c1.partial, 10);
        f.write_all(b).unwrap();
        let c2 = t.after_write(k(1), f.as_fd(), 10, b);
        assert_eq!(c2.entries.len(), 1);
        assert_eq!(c2.entries[0].id.as_deref(), Some("aaaa0001"));
        assert_eq!(
            (
                c2.entries[0].line,
                c2.entries[0].offset,
                c2.entries[0].bytes
            ),
            (1, 0, l.len() as u64)
        );
        assert_eq!(c2.partial, 0);
        // A tracker that never saw the file rebuilds its state from the bytes.
        let l2 = line("aaaa0002");
        f.write_all(l2.as_bytes()).unwrap();
        let fresh = TranscriptTracker::new(8);
        let c3 = fresh.after_write(k(1), f.as_fd(), l.len() as u64, l2.as_bytes());
        assert_eq!(c3.entries[0].line, 2);
    }

    #[test]
    fn ten_mib_line_in_one_mib_writes() {
        let t = TranscriptTracker::new(8);
        let mut f = tmpfile(b"");
        let mut big = b"{\"type\":\"custom\",\"id\":\"big\",\"data\":\"".to_vec();
        big.extend(std::iter::repeat_n(b'x', 10 << 20));
        big.extend_from_slice(b"\"}\n");
        let mut off = 0u64;
        let mut got = Vec::new();
        for chunk in big.chunks(1 << 20) {
            f.write_all(chunk).unwrap();
            got.extend(t.after_write(k(7), f.as_fd(), off, chunk).entries);
            off += chunk.len() as u64;
        }
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id.as_deref(), Some("big"));
        assert_eq!(got[0].bytes, big.len() as u64);
    }

    #[test]
    fn truncate_reports_exactly_the_cut_lines() {
        let t = TranscriptTracker::new(8);
        let lines: Vec<String> = (1..=10).map(|i| line(&format!("id{i:06}"))).collect();
        let all = lines.concat();
        let f = tmpfile(all.as_bytes());
        let keep: u64 = lines[..7].iter().map(|l| l.len() as u64).sum();
        let ch = t.before_truncate(k(3), f.as_fd(), all.len() as u64, keep);
        let ids: Vec<_> = ch.removed.iter().map(|e| e.id.clone().unwrap()).collect();
        assert_eq!(ids, ["id000008", "id000009", "id000010"]);
        assert_eq!(ch.removed[0].line, 8);
        assert_eq!(ch.salvage, lines[7..].concat().as_bytes());
        // Cutting mid-line removes that line too.
        let ch = t.before_truncate(k(3), f.as_fd(), all.len() as u64, keep - 5);
        assert_eq!(ch.removed.len(), 4);
        assert_eq!(ch.removed[0].id.as_deref(), Some("id000007"));
    }

    #[test]
    fn overwrite_reports_touched_lines() {
        let t = TranscriptTracker::new(8);
        let lines: Vec<String> = (1..=5).map(|i| line(&format!("id{i:06}"))).collect();
        let all = lines.concat();
        let f = tmpfile(all.as_bytes());
        let at = lines[0].len() as u64 + 3; // inside line 2
        let ch = t.before_write(k(9), f.as_fd(), at, lines[1].len() as u64, all.len() as u64);
        let ids: Vec<_> = ch.removed.iter().map(|e| e.id.clone().unwrap()).collect();
        assert_eq!(ids, ["id000002", "id000003"]);
        assert_eq!(
            ch.salvage,
            [lines[1].as_str(), lines[2].as_str()].concat().as_bytes()
        );
    }

    #[test]
    fn rename_over_diffs_as_multiset() {
        let t = TranscriptTracker::new(8);
        let lines: Vec<String> = (1..=6).map(|i| line(&format!("id{i:06}"))).collect();
        let old = tmpfile(lines.concat().as_bytes());
        let new_content = [
            lines[0].as_str(),
            lines[2].as_str(),
            lines[4].as_str(),
            lines[5].as_str(),
            &line("new00001"),
        ]
        .concat();
        let new = tmpfile(new_content.as_bytes());
        let ch = t.diff_replaced(&TranscriptTracker::read_all(old.as_fd()), new.as_fd());
        let ids: Vec<_> = ch.removed.iter().map(|e| e.id.clone().unwrap()).collect();
        assert_eq!(ids, ["id000002", "id000004"]);
        assert_eq!(
            ch.salvage,
            [lines[1].as_str(), lines[3].as_str()].concat().as_bytes()
        );
        assert_eq!(ch.entries.len(), 1);
        assert_eq!(ch.entries[0].id.as_deref(), Some("new00001"));
        assert_eq!(ch.entries[0].line, 5);
    }

    /// The decoder on odd lines: non-string fields, values skipped without being
    /// buffered (nested `id`/`type` ignored), escapes, arrays, whitespace, CR.
    #[test]
    fn decoder_reads_only_top_level_strings_of_objects() {
        type Want = (
            Option<&'static str>,
            Option<&'static str>,
            Option<&'static str>,
        );
        let cases: &[(&[u8], Want)] = &[
            (
                br#"{"type":"message","id":"a1b2c3d4","parentId":"x","message":{"content":[{"type":"text","id":"inner"}],"role":"user"}}"#,
                (Some("message"), Some("a1b2c3d4"), Some("user")),
            ),
            (
                br#"{"message":{"id":"inner","type":"t"},"id":"late0001","type":"custom"}"#,
                (Some("custom"), Some("late0001"), None),
            ),
            (br#"{"type":7,"id":["not","a","string"]}"#, (None, None, None)),
            (br#"{"other":1}"#, (None, None, None)),
            (
                br#"{"type":"session","id":"u","message":"not an object"}"#,
                (Some("session"), Some("u"), None),
            ),
            (
                br#"{"type":"mess\u0061ge","id":"e\"1","message":{"role":"assist\u0061nt"}}"#,
                (Some("message"), Some("e\"1"), Some("assistant")),
            ),
            (b"not json", (Some(UNPARSED), None, None)),
            (b"[1,2]", (Some(UNPARSED), None, None)),
            // An array is no entry, even one as long as the decoder's struct.
            (b"[1,2,3,4,5]", (Some(UNPARSED), None, None)),
            (
                b"  {\"type\":\"leaf\",\"id\":\"sp000001\"}",
                (Some("leaf"), Some("sp000001"), None),
            ),
            (
                b"{\"type\":\"message\",\"id\":\"\xff\xfe\"}",
                (Some(UNPARSED), None, None),
            ),
            (
                br#"{"type":"message","id":"x1"}  "#,
                (Some("message"), Some("x1"), None),
            ),
            (
                b"{\"type\":\"message\",\"id\":\"cr000001\"}\r",
                (Some("message"), Some("cr000001"), None),
            ),
        ];
        for (l, want) in cases {
            let e = decode(l, 1, 0, l.len() as u64 + 1);
            assert_eq!(
                (e.kind.as_deref(), e.id.as_deref(), e.role.as_deref()),
                *want,
                "{}",
                String::from_utf8_lossy(l)
            );
        }
    }

    /// An outside rewrite of an indexed transcript: removed entries named from the
    /// index, new ones decoded; a type outside the known list and an unparsed line
    /// keep their types; a file never indexed gives `None`.
    #[test]
    fn external_change_diffs_the_index_with_the_file() {
        let t = TranscriptTracker::new(8);
        let mut lines: Vec<String> = (1..=4).map(|i| line(&format!("ext0000{i}"))).collect();
        lines.push("{\"type\":\"odd_type\",\"id\":\"odd00001\"}\n".into());
        lines.push("not json\n".into());
        let mut f = tmpfile(b"");
        let mut at = 0u64;
        for l in &lines {
            f.write_all(l.as_bytes()).unwrap();
            t.after_write(k(7), f.as_fd(), at, l.as_bytes());
            at += l.len() as u64;
        }
        // Outside: lines 2, 5 and 6 dropped, line 3 kept, a new line appended.
        let now = [&lines[0], &lines[2], &lines[3], &line("ext00009")]
            .map(|s| s.as_str())
            .concat();
        f.set_len(0).unwrap();
        f.write_all_at(now.as_bytes(), 0).unwrap();
        let ch = t.external_change(k(7), f.as_fd()).expect("indexed");
        let removed: Vec<(u64, Option<&str>, Option<&str>)> = ch
            .removed
            .iter()
            .map(|e| (e.line, e.kind.as_deref(), e.id.as_deref()))
            .collect();
        assert_eq!(
            removed,
            [
                (2, Some("message"), Some("ext00002")),
                (5, Some("odd_type"), Some("odd00001")),
                (6, Some(UNPARSED), None),
            ]
        );
        assert_eq!(ch.removed[0].offset, lines[0].len() as u64);
        assert_eq!(ch.removed[0].bytes, lines[1].len() as u64);
        assert!(ch.salvage.is_empty());
        assert_eq!(ch.entries.len(), 1);
        assert_eq!(ch.entries[0].id.as_deref(), Some("ext00009"));
        assert_eq!(ch.entries[0].line, 4);
        // Re-indexed from the new bytes: an append goes on from there.
        let next = line("ext00010");
        f.write_all_at(next.as_bytes(), now.len() as u64).unwrap();
        let c = t.after_write(k(7), f.as_fd(), now.len() as u64, next.as_bytes());
        assert_eq!(c.entries[0].line, 5);
        assert!(t.external_change(k(99), f.as_fd()).is_none());
    }

    #[test]
    fn lru_bounds_tracked_files() {
        let t = TranscriptTracker::new(2);
        let f = tmpfile(b"");
        for k in 0..5 {
            t.after_write(self::k(k), f.as_fd(), 0, b"");
        }
        assert!(t.files.lock().map.len() <= 2);
    }

    #[test]
    fn rewrite_nets_lines_written_back() {
        let rw = Rewrites::default();
        assert!(rw.is_idle());
        let (a, b, c) = (line("a0000001"), line("b0000002"), line("c0000003"));
        let cut = Change {
            removed: vec![
                decode(a.trim_end().as_bytes(), 1, 0, a.len() as u64),
                decode(b.trim_end().as_bytes(), 2, a.len() as u64, b.len() as u64),
                decode(c.trim_end().as_bytes(), 3, 0, c.len() as u64),
            ],
            salvage: [a.as_bytes(), b.as_bytes(), c.as_bytes()].concat(),
            ..Default::default()
        };
        let total = (a.len() + b.len() + c.len()) as u64;
        assert_eq!(
            rw.cut(k(7), Default::default(), cut, Some((100, 100 + total))),
            3
        );
        assert!(rw.is_open(k(7)) && !rw.is_open(k(8)));
        // Written back: c and a (in another order), plus a new line and a second `a`.
        assert_eq!(
            rw.put_back(
                k(7),
                [
                    c.as_bytes(),
                    b"new\n".as_slice(),
                    a.as_bytes(),
                    a.as_bytes()
                ]
            ),
            2
        );
        let done = rw.close(k(7)).expect("open rewrite");
        assert!(rw.is_idle());
        assert_eq!((done.restored, done.salvage), (2, Some((100, 100 + total))));
        let (removed, bytes) = done.net();
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].id.as_deref(), Some("b0000002"));
        assert_eq!(bytes, b.as_bytes());
    }

    #[test]
    fn rewrite_salvage_span_only_when_contiguous() {
        let rw = Rewrites::default();
        let one = |id: &str| {
            let l = line(id);
            Change {
                removed: vec![decode(l.trim_end().as_bytes(), 1, 0, l.len() as u64)],
                salvage: l.into_bytes(),
                ..Default::default()
            }
        };
        rw.cut(k(1), Default::default(), one("a"), Some((0, 10)));
        rw.cut(k(1), Default::default(), one("b"), Some((10, 20)));
        assert_eq!(rw.close(k(1)).unwrap().salvage, Some((0, 20)));
        rw.cut(k(1), Default::default(), one("a"), Some((0, 10)));
        rw.cut(k(1), Default::default(), one("b"), Some((15, 25)));
        assert_eq!(rw.close(k(1)).unwrap().salvage, None);
    }
}
