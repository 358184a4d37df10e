//! Reconcile at start: before the mount serves, every file the journal knew is
//! compared with its last recorded backing fingerprint, and each difference is
//! journaled as one `external` record (flag `reconcile`): what changed while sessionfs
//! was away (a crash that failed open, an unmounted stretch, the last ≤ 100 ms batch a
//! `kill -9` lost). When a transcript only grew, the record lists the entries appended
//! meanwhile, decoded from the bytes past the last known size.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd};

use crate::journal::Journal;
use crate::journal::record::{Class, Entry, FileRef, Op, Record};
use crate::sys;

/// Compare and journal (see the module doc); returns how many records were written. A
/// file whose last path is gone gets one record with flag `gone` (see [`gone`]).
/// Reads only: no backing file is changed.
///
/// `restart`: this daemon resumes the live mount of a crashed one (`--supervise`).
/// The mount stayed in place, so a difference is the crashed daemon's own last
/// unwritten batch: op `unjournaled` (flag `restart`, class `append` when the file only
/// grew, else `rewrite`), never `external`.
pub fn reconcile(j: &Journal, root: BorrowedFd<'_>, restart: bool) -> usize {
    let mut n = 0;
    for (key, path, fp) in j.last_known() {
        // The mount's root (path "") is never gone, and not a file to compare.
        if path.is_empty() {
            continue;
        }
        let Ok(c) = CString::new(crate::names::decode(&path)) else {
            continue;
        };
        let st = match sys::fstatat(root, &c) {
            Ok(st) => st,
            Err(nix::errno::Errno::ENOENT) => {
                j.append(gone(key, &path, fp, restart));
                n += 1;
                continue;
            }
            Err(_) => continue,
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            continue;
        }
        let now = crate::fs::attr::fingerprint(&st);
        if now == fp {
            continue;
        }
        let file = sys::identity_at(root, &c)
            .ok()
            .map(|(ino, birth_ns, uid)| FileRef { ino, birth_ns, uid });
        let mut rec = Record {
            op: Op::External,
            path: path.clone(),
            file,
            result: "ok".into(),
            size_before: Some(fp.size),
            size_after: Some(now.size),
            before: Some(fp),
            after: Some(now),
            class: Some(Class::External),
            fence_moved: Some(true),
            flags: Some(vec!["reconcile".into()]),
            ..Default::default()
        };
        if restart {
            rec.op = Op::Unjournaled;
            rec.flags = Some(vec!["restart".into()]);
            rec.class = Some(if now.ino == fp.ino && now.size > fp.size {
                Class::Append
            } else {
                Class::Rewrite
            });
        }
        if now.ino == fp.ino
            && now.size > fp.size
            && crate::transcript::is_transcript(path.as_bytes())
            && let Some((entries, partial)) = appended(root, &c, fp.size)
        {
            rec.entries = Some(entries).filter(|v| !v.is_empty());
            rec.partial = Some(partial).filter(|p| *p > 0);
        }
        if restart {
            tracing::warn!(path = %path, size_before = fp.size, size_after = now.size, "changed through the mount by the crashed daemon without a record: journaled as unjournaled");
        } else {
            tracing::warn!(path = %path, size_before = fp.size, size_after = now.size, "changed while sessionfs was away: journaled as external");
        }
        j.append(rec);
        n += 1;
    }
    n
}

/// The record of a file whose last known path is gone (unlinked or renamed away while
/// sessionfs was away): flag `gone`, no `after`; the journal then forgets the path, so
/// the next start does not report it again. Its entries are not known (the file
/// cannot be read, and nothing was salvaged).
fn gone(
    key: FileRef,
    path: &str,
    fp: crate::journal::record::Fingerprint,
    restart: bool,
) -> Record {
    tracing::warn!(path = %path, size_before = fp.size, restart, "gone while sessionfs was away (unlinked or renamed)");
    Record {
        op: if restart {
            Op::Unjournaled
        } else {
            Op::External
        },
        path: path.to_string(),
        file: Some(key),
        result: "ok".into(),
        size_before: Some(fp.size),
        before: Some(fp),
        class: Some(if restart {
            Class::Rewrite
        } else {
            Class::External
        }),
        fence_moved: Some(true),
        flags: Some(vec![
            if restart { "restart" } else { "reconcile" }.into(),
            "gone".into(),
        ]),
        ..Default::default()
    }
}

/// The complete lines of `name` past byte `from`, decoded (line numbers counted from
/// the start), and the bytes of a trailing partial line. `None` when unreadable.
fn appended(root: BorrowedFd<'_>, name: &CString, from: u64) -> Option<(Vec<Entry>, u64)> {
    let fd = sys::openat(root, name, libc::O_RDONLY | libc::O_NOFOLLOW, 0).ok()?;
    let bytes = crate::transcript::TranscriptTracker::read_all(fd.as_fd());
    let from = (from as usize).min(bytes.len());
    let mut line_no = bytes[..from].iter().filter(|b| **b == b'\n').count() as u64;
    let mut out = Vec::new();
    let mut at = from;
    while let Some(i) = bytes[at..].iter().position(|b| *b == b'\n') {
        line_no += 1;
        let line = &bytes[at..at + i];
        out.push(crate::transcript::decode(
            line,
            line_no,
            at as u64,
            (i + 1) as u64,
        ));
        at += i + 1;
    }
    Some((out, (bytes.len() - at) as u64))
}
