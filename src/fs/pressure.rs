//! Inode pressure: keep the daemon's fds (or, with `--max-inodes`, its inodes) under a
//! bound.
//!
//! An inode reached by a file handle costs no fd (see [`super::fdcache`]), but one
//! in the fallback holds a pinned O_PATH fd (the model of libfuse `passthrough_hp.cc`).
//! The kernel forgets an inode only when its dentries go, which without memory
//! pressure may be never, so a tree with more fallback inodes than `RLIMIT_NOFILE`
//! allows would end in EMFILE on lookups. By default the bound counts the inodes
//! holding pinned fds; `--max-inodes` bounds every inode (the daemon's memory, ~0.4 KiB
//! each). When the count passes its high-water mark, a background thread asks the
//! kernel to drop the dentries of the least recently used idle inodes (of those
//! counted) (`FUSE_NOTIFY_INVAL_ENTRY`); the kernel then sends FORGET for them, and
//! the count shrinks to the low-water mark. A dropped dentry costs one LOOKUP when the
//! name is used again, nothing else.
//!
//! Only regular files, symlinks and special files with no open handle are dropped:
//! a directory's dentry pins its subtree, and dropping it would unhash children in
//! use. The notification is sent from this thread, never from a request handler: the
//! kernel takes the parent directory's lock for it, which a request in that directory
//! may hold while it waits for our reply.

use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use fuser::{INodeNo, Notifier};

use super::inode::InodeTable;

/// fds kept free for everything else the daemon opens (file handles, directory
/// streams, journal files, /proc reads): 1,024, or a tenth of the limit if more.
pub const FD_RESERVE_MIN: u64 = 1024;

/// Rounds in a row without the table shrinking after which eviction waits for the
/// next insertion (5 rounds, ~250 ms).
const MAX_STALLS: u32 = 5;

/// Bounds of the inode table: `high` triggers eviction down to `low` (3/4 of `high`).
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Inodes (root included) above which idle ones are dropped.
    pub high: usize,
    /// Inodes left after a round of eviction.
    pub low: usize,
    /// Count (and drop) only the inodes that hold a pinned fd; else every inode.
    pub pinned_only: bool,
}

impl Bounds {
    /// Bounds for at most `max_inodes` inodes, all counted.
    pub fn new(max_inodes: usize) -> Self {
        let high = max_inodes.max(16);
        Self {
            high,
            low: high - high / 4,
            pinned_only: false,
        }
    }

    /// Bounds from the fd limit `nofile`: all but a reserve of
    /// max([`FD_RESERVE_MIN`], nofile / 10) fds may be pinned by inodes (only those
    /// are counted).
    pub fn from_nofile(nofile: u64) -> Self {
        let reserve = FD_RESERVE_MIN.max(nofile / 10);
        Self {
            pinned_only: true,
            ..Self::new(nofile.saturating_sub(reserve).min(usize::MAX as u64) as usize)
        }
    }

    /// The count these bounds apply to, of a table of `len` inodes of which `pinned`
    /// hold pinned fds.
    fn count(&self, len: usize, pinned: usize) -> usize {
        if self.pinned_only { pinned } else { len }
    }
}

/// The pressure valve: [`Pressure::check`] after an insertion, a thread that evicts.
#[derive(Debug)]
pub struct Pressure {
    bounds: Bounds,
    wake: Sender<()>,
}

impl Pressure {
    /// Start the eviction thread for `table` (weak: the thread ends with the table,
    /// whose drop drops this valve and its sender). `notifier` is filled in by the
    /// mount once the session exists; until then eviction waits.
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn start(
        table: Weak<InodeTable>,
        bounds: Bounds,
        notifier: Arc<OnceLock<Notifier>>,
    ) -> std::io::Result<Self> {
        let (wake, rx) = crossbeam_channel::bounded(1);
        std::thread::Builder::new()
            .name("inode-pressure".into())
            .spawn(move || evict_loop(&table, bounds, &notifier, &rx))?;
        Ok(Self { bounds, wake })
    }

    /// The table now holds `len` inodes, `pinned` of them with pinned fds: wake the
    /// thread if the bounded count is above the high-water mark. Never blocks.
    pub fn check(&self, len: usize, pinned: usize) {
        if self.bounds.count(len, pinned) > self.bounds.high {
            // Full: a wake-up is already pending. Disconnected: the thread is gone.
            let _ = self.wake.try_send(());
        }
    }
}

fn evict_loop(
    table: &Weak<InodeTable>,
    b: Bounds,
    notifier: &OnceLock<Notifier>,
    rx: &Receiver<()>,
) {
    let mut last_log: Option<Instant> = None;
    while rx.recv().is_ok() {
        // Rounds until the table is back under the high-water mark (insertions go on
        // while the kernel's FORGETs arrive), or until it has not shrunk for
        // `MAX_STALLS` rounds in a row: then the rest is held (open, directories,
        // dentries in use) and we wait for the next insertion instead of spinning.
        let mut before = usize::MAX;
        let mut stalls = 0;
        while let Some(n) = notifier.get() {
            let Some(table) = table.upgrade() else { return };
            let len = b.count(table.len(), table.pinned());
            if len <= b.high {
                break;
            }
            if len >= before {
                stalls += 1;
                if stalls >= MAX_STALLS {
                    break;
                }
            } else {
                stalls = 0;
            }
            before = len;
            let mut sent = 0usize;
            for id in table.idle_lru(len - b.low, b.pinned_only) {
                if let Some((parent, name)) = table.still_idle(id)
                    && n.inval_entry(INodeNo(parent), &name).is_ok()
                {
                    sent += 1;
                }
            }
            drop(table);
            // One line per 10 s at most: a table that stays full would log every round.
            if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                last_log = Some(Instant::now());
                tracing::info!(
                    inodes = len,
                    pinned_only = b.pinned_only,
                    high = b.high,
                    low = b.low,
                    dropped = sent,
                    "inode table above its high-water mark: asked the kernel to drop idle dentries"
                );
            }
            if sent == 0 {
                break;
            }
            // The kernel sends FORGETs asynchronously: let them land before the next
            // round looks at the table again.
            std::thread::sleep(Duration::from_millis(50));
            while rx.try_recv().is_ok() {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_keep_a_reserve() {
        let b = Bounds::from_nofile(20_000);
        assert!(b.pinned_only);
        assert!(!Bounds::new(300).pinned_only);
        assert_eq!(b.high, 18_000);
        assert_eq!(b.low, 13_500);
        let small = Bounds::from_nofile(1024);
        assert_eq!(small.high, 16, "never below 16");
        let big = Bounds::from_nofile(1 << 20);
        assert_eq!(big.high, (1 << 20) - (1 << 20) / 10);
    }
}
