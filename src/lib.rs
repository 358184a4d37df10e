//! sessionfs: a FUSE passthrough filesystem for OpenClaw session directories that
//! journals every change with the process (and lane) that made it.
//!
//! Data flow of one request: [`fs`] resolves the inode → does the operation on the
//! backing fd → hands a [`journal::record::Record`] built with [`identity`] and
//! [`lanes`] (and, for `*.jsonl`, [`transcript`]) to the [`journal`].

pub mod fs;
pub mod identity;
pub mod journal;
pub mod lanes;
pub mod transcript;
