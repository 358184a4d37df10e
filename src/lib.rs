//! sessionfs: a FUSE passthrough filesystem for OpenClaw session directories that
//! journals every change with the process (and lane) that made it.
//!
//! Data flow of one request: `fs` resolves the inode → does the operation on the
//! backing fd (`sys`) → hands a [`Record`] built with `identity` and `lanes` (and, for
//! `*.jsonl`, `transcript`) to the [`Journal`]. `mount` and `cli` are the command
//! line around it; `demo` shows it working.
//!
//! Every module is internal; the crate exports only what the binary, the tests and
//! the benches use, below.

pub(crate) mod cli;
pub(crate) mod clock;
pub(crate) mod demo;
pub(crate) mod explain;
pub(crate) mod fs;
pub(crate) mod identity;
pub(crate) mod journal;
pub(crate) mod lanes;
pub(crate) mod locks;
pub(crate) mod mount;
pub(crate) mod names;
pub(crate) mod notify;
pub(crate) mod reconcile;
pub(crate) mod resume;
pub(crate) mod status;
pub(crate) mod supervisor;
pub(crate) mod sys;
pub(crate) mod transcript;

pub use cli::{Cli, Command};
pub use clock::now_rfc3339;
pub use demo::run as run_demo;
pub use explain::{run_changes, run_explain};
pub use fs::ErrorLayer;
pub use identity::IdentityCache;
pub use journal::cli::{run_journal, run_salvage};
pub use journal::record::{FileRef, Op, Record};
pub use journal::{Journal, JournalOptions, View};
pub use locks::run_locks;
pub use mount::{mount, mount_all, mount_id, pid_file, umount, umount_stale};
pub use status::run_status;
pub use supervisor::{run as run_sentinel, upgrade};
