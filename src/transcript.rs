//! Transcript decoding: which entries (lines of a `*.jsonl` session file) a change
//! appended, rewrote or removed.
//!
//! OWNED BY: journal helper. Contract below is fixed; internals are free.

use std::os::fd::BorrowedFd;

use crate::journal::record::Entry;

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
    /// The removed lines' bytes, exactly as they were (for the salvage store).
    pub salvage: Vec<u8>,
    /// Bytes of a trailing partial line now pending.
    pub partial: u64,
}

/// Per-file line state (line index, pending partial line), bounded by an LRU.
#[derive(Debug, Default)]
pub struct TranscriptTracker {}

impl TranscriptTracker {
    /// Tracker keeping at most `max_files` files' line indexes.
    pub fn new(_max_files: usize) -> Self {
        Self::default()
    }

    /// Before a write of `len` bytes at `offset` to the file `key` whose size is
    /// `size_before`: reads (pread on `fd`) what the write will overwrite.
    pub fn before_write(
        &self,
        _key: u64,
        _fd: BorrowedFd<'_>,
        _offset: u64,
        _len: u64,
        _size_before: u64,
    ) -> Change {
        Change::default()
    }

    /// After `data` landed at `offset` (the real offset, O_APPEND resolved).
    pub fn after_write(
        &self,
        _key: u64,
        _fd: BorrowedFd<'_>,
        _offset: u64,
        _data: &[u8],
    ) -> Change {
        Change::default()
    }

    /// Before a truncate from `old_size` to `new_size`.
    pub fn before_truncate(
        &self,
        _key: u64,
        _fd: BorrowedFd<'_>,
        _old_size: u64,
        _new_size: u64,
    ) -> Change {
        Change::default()
    }

    /// A rename replaced transcript `old` (still open) with `new`: lines of `old` that
    /// are not in `new` are removed.
    pub fn diff_replaced(&self, _old: BorrowedFd<'_>, _new: BorrowedFd<'_>) -> Change {
        Change::default()
    }

    /// Drop state for `key` (file unlinked or inode forgotten).
    pub fn forget(&self, _key: u64) {}
}
