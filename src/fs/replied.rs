//! Requests that replied to the kernel before their journal record was appended.
//!
//! A WRITE replies as soon as the backing write is done and journals afterwards, so the
//! writer is not kept waiting (see `SessionFs::do_write`). Journal readers must still
//! see every record whose request has returned: a reader first waits here for every
//! request that replied before it started. Each in-flight request holds one slot with
//! its ticket number; a reader takes the current ticket number and waits until no slot
//! holds a smaller (older) one. No lock on either side.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Slots: at most this many early replies in flight at once (one per FUSE worker
/// thread is the most there can be); a further one waits for a free slot.
const SLOTS: usize = 64;

/// Longest a reader waits for in-flight records (a stuck writer must not hang `cat`).
const MAX_WAIT: Duration = Duration::from_millis(200);

/// The table of in-flight early replies.
#[derive(Debug)]
pub struct Replied {
    next: AtomicU64,
    slots: Box<[AtomicU64]>,
}

/// One in-flight early reply; dropping it (after the record is appended) frees the slot.
#[derive(Debug)]
pub struct Ticket<'a> {
    slot: &'a AtomicU64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.slot.store(0, Ordering::Release);
    }
}

impl Default for Replied {
    fn default() -> Self {
        Self {
            next: AtomicU64::new(0),
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Replied {
    /// Take a ticket before replying early. Never fails: with every slot taken it
    /// yields until one frees.
    pub fn begin(&self) -> Ticket<'_> {
        let t = self.next.fetch_add(1, Ordering::AcqRel) + 1;
        loop {
            for slot in self.slots.iter() {
                if slot
                    .compare_exchange(0, t, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ticket { slot };
                }
            }
            std::thread::yield_now();
        }
    }

    /// Wait until every request that took its ticket before this call has appended its
    /// record (at most [`MAX_WAIT`]). Costs one pass over the slots when none is busy.
    pub fn wait(&self) {
        let now = self.next.load(Ordering::Acquire);
        let start = Instant::now();
        for slot in self.slots.iter() {
            loop {
                let v = slot.load(Ordering::Acquire);
                if v == 0 || v > now || start.elapsed() > MAX_WAIT {
                    break;
                }
                std::thread::yield_now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn reader_waits_for_older_tickets_only() {
        let r = Arc::new(Replied::default());
        let t1 = r.begin();
        let done = Arc::new(AtomicBool::new(false));
        let (r2, d2) = (r.clone(), done.clone());
        let reader = std::thread::spawn(move || {
            r2.wait();
            d2.load(Ordering::Acquire)
        });
        std::thread::sleep(Duration::from_millis(20));
        // A ticket taken after the reader started does not hold it up.
        let _t2 = r.begin();
        done.store(true, Ordering::Release);
        drop(t1);
        assert!(
            reader.join().unwrap(),
            "the reader returned before t1 ended"
        );
        // With no older ticket in flight, wait returns at once.
        let t = Instant::now();
        drop(_t2);
        r.wait();
        assert!(t.elapsed() < Duration::from_millis(50));
    }
}
