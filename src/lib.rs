//! sessionfs: a FUSE passthrough filesystem for OpenClaw session directories that
//! journals every change with the process (and lane) that made it.
//!
//! Data flow of one request: [`fs`] resolves the inode → does the operation on the
//! backing fd ([`sys`]) → hands a [`journal::record::Record`] built with [`identity`]
//! and [`lanes`] (and, for `*.jsonl`, [`transcript`]) to the [`journal`].
//! [`mount`] and [`cli`] are the command line around it; [`demo`] shows it working.

pub mod cli;
pub mod demo;
pub mod fs;
pub mod identity;
pub mod journal;
pub mod lanes;
pub mod mount;
pub mod sys;
pub mod transcript;
