//! The change journal: records stored in segment files outside the mounted tree,
//! served as `.journal` virtual files.
//!
//! OWNED BY: journal helper. Contract below is fixed; internals are free.

pub mod cli;
pub mod record;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use record::Record;

/// Journal configuration.
#[derive(Clone, Debug)]
pub struct JournalOptions {
    /// State directory (outside the mount).
    pub state_dir: PathBuf,
    /// Total segment bytes kept; oldest segments are dropped whole. Default 256 MiB.
    pub max_bytes: u64,
    /// Segments older than this are dropped whole. Default 30 days.
    pub max_age: Duration,
}

impl JournalOptions {
    /// Defaults: 256 MiB, 30 days.
    pub fn new(state_dir: PathBuf) -> Self {
        Self {
            state_dir,
            max_bytes: 256 << 20,
            max_age: Duration::from_secs(30 * 86_400),
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

/// The journal of one mount.
#[derive(Debug)]
pub struct Journal {}

impl Journal {
    /// Open (or create) the state dir, recover `seq`/`fseq`, start the writer thread.
    pub fn open(_opts: JournalOptions) -> io::Result<Journal> {
        Ok(Journal {})
    }
    /// Assign `seq`/`fseq`, make the record visible to readers, queue it for disk.
    /// Never waits on disk I/O. Returns the seq.
    pub fn append(&self, _rec: Record) -> u64 {
        0
    }
    /// Store removed transcript bytes for `path`.
    pub fn salvage(&self, _path: &str, _bytes: &[u8]) {}
    /// Current byte length of a view.
    pub fn view_len(&self, _view: View<'_>) -> u64 {
        0
    }
    /// Bytes `[offset, offset+size)` of a view (shorter at the end).
    pub fn read(&self, _view: View<'_>, _offset: u64, _size: usize) -> Vec<u8> {
        Vec::new()
    }
    /// Latest seq of a path.
    pub fn latest_seq(&self, _path: &str) -> Option<u64> {
        None
    }
    /// Byte length of the salvage store of `path`.
    pub fn salvage_len(&self, _path: &str) -> u64 {
        0
    }
    /// Bytes of the salvage store of `path`.
    pub fn read_salvage(&self, _path: &str, _offset: u64, _size: usize) -> Vec<u8> {
        Vec::new()
    }
    /// Flush everything accepted so far to disk and stop the writer thread.
    pub fn shutdown(&self) {}
}
