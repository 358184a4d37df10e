//! `sessionfs journal` and `sessionfs salvage`: read a mount's journal through its
//! virtual files.
//!
//! OWNED BY: journal helper. Contract below is fixed; internals are free.

use std::path::PathBuf;

/// Arguments of `sessionfs journal`.
#[derive(clap::Args, Debug)]
pub struct JournalArgs {
    /// A file on a sessionfs mount, or the mountpoint itself (whole-mount journal).
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

/// Run `sessionfs journal`. Err is one line for the user.
pub fn run_journal(_args: &JournalArgs) -> Result<(), String> {
    Err("not implemented".into())
}

/// Run `sessionfs salvage`. Err is one line for the user.
pub fn run_salvage(_args: &SalvageArgs) -> Result<(), String> {
    Err("not implemented".into())
}
