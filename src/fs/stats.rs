//! How the daemon is doing, for `sessionfs status` and the `.status` virtual file:
//! FUSE requests by op, and the daemon's errors (ERROR-level log events, counted and
//! the last one kept by [`ErrorLayer`], whatever module logged them).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

macro_rules! reqs {
    ($($v:ident => $s:literal),* $(,)?) => {
        /// A FUSE request kind (the handler's name).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Req { $($v),* }
        impl Req {
            /// Every kind, in counter order.
            pub const ALL: &[Req] = &[$(Req::$v),*];
            /// The name in `status` (`"getattr"`).
            pub fn name(self) -> &'static str {
                match self { $(Req::$v => $s),* }
            }
        }
    };
}

reqs! {
    Lookup => "lookup", Forget => "forget", Getattr => "getattr", Setattr => "setattr",
    Readlink => "readlink", Mknod => "mknod", Mkdir => "mkdir", Unlink => "unlink",
    Rmdir => "rmdir", Symlink => "symlink", Rename => "rename", Link => "link",
    Open => "open", Read => "read", Write => "write", Flush => "flush",
    Release => "release", Fsync => "fsync", Opendir => "opendir", Readdir => "readdir", Readdirplus => "readdirplus",
    Releasedir => "releasedir", Fsyncdir => "fsyncdir", Statfs => "statfs",
    Setxattr => "setxattr", Getxattr => "getxattr", Listxattr => "listxattr",
    Removexattr => "removexattr", Access => "access", Create => "create",
    Fallocate => "fallocate", Lseek => "lseek", CopyFileRange => "copy_file_range",
    Other => "other",
}

/// ERROR-level events logged by the daemon.
static ERRORS: AtomicU64 = AtomicU64::new(0);
/// The last one: (RFC 3339 time, target, message).
static LAST_ERROR: Mutex<Option<(String, String, String)>> = Mutex::new(None);

/// A `tracing` layer that counts ERROR events and keeps the last one for `.status`.
#[derive(Debug, Default)]
pub struct ErrorLayer;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ErrorLayer {
    fn on_event(&self, ev: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *ev.metadata().level() != tracing::Level::ERROR {
            return;
        }
        /// The event's fields as `message key=value ...`.
        struct Text(String);
        impl tracing::field::Visit for Text {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if !self.0.is_empty() {
                    self.0.push(' ');
                }
                if f.name() == "message" {
                    self.0.push_str(&format!("{v:?}"));
                } else {
                    self.0.push_str(&format!("{}={v:?}", f.name()));
                }
            }
        }
        let mut t = Text(String::new());
        ev.record(&mut t);
        ERRORS.fetch_add(1, Ordering::Relaxed);
        *LAST_ERROR.lock() = Some((
            crate::clock::now_rfc3339(),
            ev.metadata().target().to_string(),
            t.0,
        ));
    }
}

/// Request counters (see the module doc). Lock-free on the request path: one relaxed
/// increment per request.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    counts: Vec<AtomicU64>,
    /// (when, requests, round trips) once a second, the last [`WINDOW_S`] + 1
    /// samples ([`Stats::sample`]): the recent rates.
    samples: Mutex<std::collections::VecDeque<(Instant, u64, u64)>>,
}

/// Seconds the recent rates of `.status` span.
pub const WINDOW_S: usize = 10;

impl Default for Stats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            counts: Req::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            samples: Mutex::new(std::collections::VecDeque::new()),
        }
    }
}

impl Stats {
    /// (requests, FUSE round trips): every request is one round trip but FORGET,
    /// which the kernel sends without waiting for a reply.
    fn totals(&self) -> (u64, u64) {
        let total: u64 = self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        let forgets = self.counts[Req::Forget as usize].load(Ordering::Relaxed);
        (total, total - forgets)
    }

    /// Take a sample for the recent rates (the daemon's sampler thread, once a
    /// second).
    pub fn sample(&self) {
        let (t, rt) = self.totals();
        let mut s = self.samples.lock();
        s.push_back((Instant::now(), t, rt));
        while s.len() > WINDOW_S + 1 {
            s.pop_front();
        }
    }

    /// (requests/s, round trips/s) over the last [`WINDOW_S`] s of samples (None
    /// before the second sample).
    fn recent(&self) -> Option<(f64, f64)> {
        let s = self.samples.lock();
        let (a, b) = (s.front()?, s.back()?);
        let dt = b.0.duration_since(a.0).as_secs_f64();
        (dt > 0.0).then(|| ((b.1 - a.1) as f64 / dt, (b.2 - a.2) as f64 / dt))
    }

    /// Count one request of kind `r`.
    pub fn hit(&self, r: Req) {
        self.counts[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Seconds since the mount started.
    pub fn uptime_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// `{"requests": {op: n, ...}, "requests_total": n, "requests_per_s": avg since
    /// start, "requests_per_s_recent": over the last 10 s (null in the first
    /// second), "round_trips_per_s_recent": the same for FUSE round trips (requests
    /// but FORGET), "errors": n, "last_error": {"ts", "target", "what"} | null}`.
    pub fn json(&self) -> serde_json::Value {
        let mut by = serde_json::Map::new();
        let mut total = 0;
        for r in Req::ALL {
            let n = self.counts[*r as usize].load(Ordering::Relaxed);
            total += n;
            if n > 0 {
                by.insert(r.name().into(), n.into());
            }
        }
        let last = LAST_ERROR.lock().as_ref().map(
            |(ts, target, what)| serde_json::json!({"ts": ts, "target": target, "what": what}),
        );
        let round1 = |x: f64| (x * 10.0).round() / 10.0;
        let recent = self.recent();
        serde_json::json!({
            "requests": by,
            "requests_total": total,
            "requests_per_s": round1(total as f64 / self.uptime_s().max(1e-3)),
            "requests_per_s_recent": recent.map(|r| round1(r.0)),
            "round_trips_per_s_recent": recent.map(|r| round1(r.1)),
            "errors": ERRORS.load(Ordering::Relaxed),
            "last_error": last,
        })
    }
}
