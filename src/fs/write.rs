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
        respond: impl FnOnce(&SysResult<usize>) + Send + 'static,
    ) {
        if let Err(e) = self.ro() {
            return respond(&Err(e));
        }
        let inode = &*h.inode;
        let transcript = self.journal.is_some() && self.handle_is_transcript(h);
        let respond = Cell::new(Some(respond));
        // A direct WRITE after which the kernel may hold a stale page of the range:
        // the reply waits for the kernel to drop it (see `HeldReply`).
        let hold = Cell::new(false);
        let direct = h.direct;
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
                // Never a page-cache writeback (a MAP_SHARED mmap of a direct handle):
                // its pages are the cache itself, and dropping them would wait for
                // this very WRITE to end.
                if direct && res.is_ok() && !wflags.contains(WriteFlags::FUSE_WRITE_CACHE) {
                    hold.set(inode.reads.read_since_last_write());
                }
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
                    self.answer(
                        f,
                        c.res,
                        hold.get().then(|| {
                            held_range(inode.id, offset, append, size_before.get(), data.len())
                        }),
                    );
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
            self.answer(
                f,
                &res,
                hold.get()
                    .then(|| held_range(inode.id, offset, append, size_before.get(), data.len())),
            );
        }
        drop(ticket);
    }

    /// Reply `res` to a WRITE through `respond`: now, or, when `held` is (node id,
    /// offset, length) of a range the kernel may hold stale pages of, from the
    /// held-reply thread once the kernel has dropped them.
    fn answer(
        &self,
        respond: impl FnOnce(&SysResult<usize>) + Send + 'static,
        res: &SysResult<usize>,
        held: Option<(u64, i64, i64)>,
    ) {
        let Some((id, offset, len)) = held.filter(|_| res.is_ok()) else {
            return respond(res);
        };
        let res = *res;
        let held = HeldReply {
            id,
            offset,
            len,
            reply: Box::new(move || respond(&res)),
        };
        // The thread is gone only while the file system is dropped: reply anyway.
        if let Err(crossbeam_channel::SendError(h)) = self.held_replies.send(held) {
            (h.reply)();
        }
    }
}

/// The range a held reply has the kernel drop, as (node id `id`, offset, length in
/// bytes, 0 = to the end of file): for an append from where the kernel thought the end
/// was (`offset`) or from where it was before the write (`size_before`), whichever is
/// first, to the end; else the `len` bytes asked to be written from `offset`.
fn held_range(id: u64, offset: u64, append: bool, size_before: u64, len: usize) -> (u64, i64, i64) {
    let at = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    if append {
        (id, at(offset.min(size_before)), 0)
    } else {
        (id, at(offset), at(len as u64).max(1))
    }
}

/// A WRITE reply held back until the kernel has dropped its cached pages of the range
/// written (`FUSE_NOTIFY_INVAL_INODE`).
///
/// Why: on a direct-I/O handle (see [`super::files::reply_flags`]) the kernel drops the
/// range from its page cache *before* it sends the WRITE, and updates the file size
/// when we reply. A READ through another descriptor in between (a reader of the whole
/// transcript) fills the page from the backing file as it was before the write, and
/// that page stays: later reads returned zeros where the appended line is (measured:
/// 2 to 6 reads in 130,000 with one writer and two readers). Dropping the range again
/// after the backing write, before the reply, leaves only pages read after the write.
/// Only when a READ of the inode may have run since the previous direct write (see
/// [`super::inode::ReadCount`]); otherwise the reply is sent at once.
///
/// From its own thread: the kernel waits for each page's lock, and a page being read
/// is locked until a worker answers its READ, so a worker must never wait for this.
pub(super) struct HeldReply {
    /// FUSE node id.
    pub id: u64,
    /// First byte of the range (the kernel drops whole pages).
    pub offset: i64,
    /// Length of the range in bytes; 0: to the end of file.
    pub len: i64,
    /// Sends the reply.
    pub reply: Box<dyn FnOnce() + Send>,
}

/// Start the held-reply thread (it ends when the sender is dropped). Unbounded: each
/// message is a WRITE the kernel is waiting for, so there are at most as many as
/// writers in flight, and none may be dropped.
pub(super) fn start_held_replies(
    notifier: std::sync::Arc<std::sync::OnceLock<fuser::Notifier>>,
) -> std::io::Result<crossbeam_channel::Sender<HeldReply>> {
    let (tx, rx) = crossbeam_channel::unbounded::<HeldReply>();
    std::thread::Builder::new()
        .name("sessionfs-held".into())
        .spawn(move || {
            for m in rx {
                if let Some(n) = notifier.get() {
                    // ENOENT: the kernel no longer knows the inode, nor its pages.
                    let _ = n.inval_inode(fuser::INodeNo(m.id), m.offset, m.len);
                }
                (m.reply)();
            }
        })?;
    Ok(tx)
}
