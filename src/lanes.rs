//! Which lane of a process made a change: declared through the virtual xattr
//! `user.sessionfs.lane`, or matched by `--lanes` rules.
//!
//! OWNED BY: identity helper. Contract below is fixed; internals are free.

use std::path::Path;
use std::sync::Arc;

use crate::identity::Caller;

/// Name of the virtual extended attribute a process sets to declare its lane.
pub const LANE_XATTR: &str = "user.sessionfs.lane";

/// Rules from a `--lanes <FILE>` JSON file.
#[derive(Debug, Default)]
pub struct LaneRules {}

impl LaneRules {
    /// No rules.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Load rules; the error is one line naming the file and the problem.
    pub fn load(_path: &Path) -> Result<Self, String> {
        Ok(Self::default())
    }

    /// First matching rule's lane.
    pub fn lane_for(&self, _caller: &Caller) -> Option<Arc<str>> {
        None
    }
}

/// Declared lanes, keyed by (pid, starttime, backing ino).
#[derive(Debug, Default)]
pub struct LaneDeclarations {}

impl LaneDeclarations {
    /// Empty table.
    pub fn new() -> Self {
        Self::default()
    }
    /// Declare (Some) or clear (None) the lane of `caller`'s process for file `ino`.
    pub fn declare(&self, _caller: &Caller, _ino: u64, _lane: Option<&str>) {}
    /// The caller process's current declaration for `ino`.
    pub fn get(&self, _caller: &Caller, _ino: u64) -> Option<Arc<str>> {
        None
    }
}
