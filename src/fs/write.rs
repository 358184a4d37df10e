//! The WRITE path: a change through the recorded-change step that replies to the
//! kernel before its journal work, so the writer goes on at once (one round trip costs
//! the writer a sleep and a wake-up, so latency here is throughput).

use std::cell::Cell;
use std::os::fd::AsFd;

use fuser::WriteFlags;

use super::change::kill_suid;
use super::cut::CutOutcome;
use super::handle::FileHandle;
use super::{Ctx, SessionFs};
use crate::journal::record::{Class, Op};
use crate::sys::{self, SysResult};

impl SessionFs {
    /// One WRITE of `data` at `offset` through handle `h`; `append`: this write
    /// appends (the caller's current O_APPEND, not page-cache writeback). `respond` is
    /// called exactly once with the result (bytes written, or EROFS on a read-only
    /// mount, or the backing errno), before the transcript decoding and the record:
    /// the guard is held until the record is appended, so the inode's next operation
    /// (which may arrive as soon as we reply) is recorded after this one, and journal
    /// readers wait for it through the [`super::replied`] ticket.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn do_write(
        &self,
        ctx: &Ctx,
        h: &FileHandle,
        offset: u64,
        data: &[u8],
        wflags: WriteFlags,
        append: bool,
        respond: impl FnOnce(&SysResult<usize>),
    ) {
        if let Err(e) = self.ro() {
            return respond(&Err(e));
        }
        let inode = &*h.inode;
        let transcript = self.journal.is_some() && self.handle_is_transcript(h);
        let respond = Cell::new(Some(respond));
        let outcome: Cell<Option<CutOutcome>> = Cell::new(None);
        let size_before = Cell::new(0u64);
        let m = inode.mutate();
        let ticket = self.journal.as_ref().map(|_| self.replied.begin());
        let res = self.change(
            ctx,
            &m,
            Some(h),
            Op::Write,
            |_| false,
            |before| {
                let size = before.map_or(0, |s| s.st_size as u64);
                size_before.set(size);
                // An overwrite of existing lines cuts them: salvage first, then hold
                // them for this handle's rewrite (lines written back are not removed).
                let mut over = None;
                if transcript
                    && !append
                    && offset < size
                    && let Ok(rfd) = inode.read_fd()
                    && let Some(j) = &self.journal
                {
                    let ch = self.tracker.before_write(
                        inode.key(),
                        rfd.as_fd(),
                        offset,
                        data.len() as u64,
                        size,
                    );
                    // Lines will be cut: a rewrite begins (if none is open yet).
                    if let Some(st) = before.filter(|_| !ch.removed.is_empty()) {
                        self.note_rewrite_origin(inode, st);
                    }
                    over = self.stage_cut(j, self.file_ref_or_root(inode), ch);
                }
                let res = sys::pwrite_mode(h.fd(), data, offset, append, h.append());
                outcome.set(over.map(|c| self.finish_cut(c, res.is_ok(), Some(inode.key()))));
                if res.is_ok() && wflags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
                    kill_suid(inode);
                }
                if let Ok(n) = res {
                    h.count_write(n);
                }
                res
            },
            |r, c| {
                h.note_writer(c.caller);
                if let Some(f) = respond.take() {
                    f(c.res);
                }
                // O_APPEND: the backing kernel wrote at its EOF, whatever offset said.
                let real_off = match (c.res, &c.after) {
                    (Ok(n), Some(st)) if append => (st.st_size as u64).saturating_sub(*n as u64),
                    _ => offset,
                };
                let mut change = None;
                if transcript
                    && let Ok(n) = c.res
                    && let Ok(rfd) = inode.read_fd()
                {
                    change = Some(self.tracker.after_write(
                        inode.key(),
                        rfd.as_fd(),
                        real_off,
                        &data[..*n],
                    ));
                }
                // Complete lines equal to lines cut by this rewrite put them back.
                if let (Some(ch), Ok(n)) = (change.as_ref(), c.res)
                    && self.rewrites.is_open(inode.key())
                {
                    self.put_back(inode, &ch.entries, real_off, &data[..*n]);
                }
                r.offset = Some(real_off);
                r.len = Some(*c.res.as_ref().unwrap_or(&data.len()) as u64);
                if append {
                    r.append = Some(true);
                }
                r.size_before = Some(size_before.get());
                // Bytes added at the end (nothing cut): an append; anything else rewrites.
                if real_off == size_before.get() {
                    r.class = Some(Class::Append);
                }
                if let Some(ch) = change {
                    r.entries = Some(ch.entries).filter(|v| !v.is_empty());
                    r.partial = Some(ch.partial).filter(|n| *n > 0);
                }
                if let Some(o) = outcome.take() {
                    o.apply(r);
                }
            },
        );
        // A lock's payload, for `sessionfs locks` and the lock records.
        if let Ok(n) = &res
            && crate::locks::is_lock_name(inode.name().1.as_encoded_bytes())
        {
            let at = if append { size_before.get() } else { offset };
            self.locks.wrote(inode.key(), at, &data[..*n]);
        }
        // Without a journal the filler did not run: reply now.
        if let Some(f) = respond.take() {
            f(&res);
        }
        drop(ticket);
    }
}
