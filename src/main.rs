//! `sessionfs` binary: parse, run, print one-line errors.

use std::io::IsTerminal;

use clap::Parser;
use sessionfs::{Cli, Command};

fn init_logging(debug: bool, ansi: bool) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{EnvFilter, Layer as _};
    // fuser's own info lines ("Mounting …") would precede a one-line error in the
    // foreground; its warnings and errors still show.
    let default = if debug { "debug" } else { "info,fuser=warn" };
    let filter =
        EnvFilter::try_from_env("SESSIONFS_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_filter(LateInterruptReplies)
        .with_filter(filter);
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(sessionfs::ErrorLayer)
        .try_init();
}

/// Drops fuser's `Failed to send FUSE reply: No such file or directory` error. fuser
/// answers every FUSE_INTERRUPT with ENOSYS (it does not implement interrupts); when
/// the interrupted request has already been answered, the kernel has no request left
/// to match that answer and returns ENOENT. Nothing is lost (the request was served
/// and journaled), but fuser logs it as an error, once per signal that races a reply
/// (stress-ng: ~20 in 2 minutes). Every other reply failure still shows.
struct LateInterruptReplies;

impl<S> tracing_subscriber::layer::Filter<S> for LateInterruptReplies {
    fn enabled(
        &self,
        _: &tracing::Metadata<'_>,
        _: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        true
    }

    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        struct IsLate(bool);
        impl tracing::field::Visit for IsLate {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    let m = format!("{v:?}");
                    self.0 =
                        m.starts_with("Failed to send FUSE reply") && m.ends_with("(os error 2)");
                }
            }
        }
        // fuser logs through the `log` crate: its events come over tracing-log's
        // bridge with target "log" and the real target in a field.
        use tracing_log::NormalizeEvent as _;
        let from_fuser = match event.normalized_metadata() {
            Some(m) => m.target().starts_with("fuser"),
            None => event.metadata().target().starts_with("fuser"),
        };
        if !from_fuser {
            return true;
        }
        let mut late = IsLate(false);
        event.record(&mut late);
        !late.0
    }
}

fn main() {
    // One malloc arena: the daemon's threads (FUSE workers, journal writer) each
    // fragmented an arena of their own; measured daemon RSS after 1,000,000 journal
    // records over 10,000 files: 70 MiB with the default arenas, 32 MiB with one.
    // SAFETY: mallopt only tunes glibc's allocator; called before any thread starts.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            // Usage errors are one line too (clap adds a usage block and a hint).
            // The first paragraph, e.g. "error: the following required arguments were
            // not provided:\n  <MOUNTPOINT>", joined into one line.
            let text = e.to_string();
            let line = text
                .trim_start()
                .split("\n\n")
                .next()
                .unwrap_or("")
                .lines()
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ");
            let line = line.strip_prefix("error: ").unwrap_or(&line);
            eprintln!("sessionfs: error: {line} (see --help)");
            std::process::exit(2);
        }
    };
    let result = match &cli.command {
        Command::Mount(args) => args.spec().and_then(|spec| {
            // The background daemon logs to a file: no colour codes there.
            init_logging(
                spec.debug,
                spec.foreground && std::io::stderr().is_terminal(),
            );
            sessionfs::mount(spec)
        }),
        Command::MountAll(args) => {
            let target = args.target();
            args.mount_args(&target)
                .and_then(|a| a.spec())
                .and_then(|spec| {
                    init_logging(
                        spec.debug,
                        spec.foreground && std::io::stderr().is_terminal(),
                    );
                    sessionfs::mount_all(spec)
                })
        }
        Command::Umount {
            mountpoint,
            stale_only: false,
        } => sessionfs::umount(mountpoint),
        Command::Umount {
            mountpoint,
            stale_only: true,
        } => sessionfs::umount_stale(mountpoint),
        Command::Sentinel(args) => sessionfs::run_sentinel(args),
        Command::Upgrade { mountpoint } => sessionfs::upgrade(mountpoint),
        Command::Status { mountpoint, json } => sessionfs::run_status(mountpoint.as_deref(), *json),
        Command::Demo => {
            init_logging(false, std::io::stderr().is_terminal());
            sessionfs::run_demo()
        }
        Command::Journal(args) => sessionfs::run_journal(args),
        Command::Salvage(args) => sessionfs::run_salvage(args),
        Command::Locks { mountpoint, json } => sessionfs::run_locks(mountpoint, *json),
        Command::Explain(args) => sessionfs::run_explain(args),
        Command::Changes(args) => sessionfs::run_changes(args),
    };
    if let Err(msg) = result {
        // Errors are one line: fold anything multi-line a lower layer let through.
        let msg = msg
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        eprintln!("sessionfs: error: {msg}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn late_interrupt_replies_are_dropped_other_reply_errors_kept() {
        let buf = Buf::default();
        let w = buf.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .with_filter(super::LateInterruptReplies);
        let sub = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(sub, || {
            let enoent = io::Error::from_raw_os_error(libc::ENOENT);
            let einval = io::Error::from_raw_os_error(libc::EINVAL);
            // As fuser logs: `log::error!` in fuser::reply, through tracing-log.
            let via_log = |e: &io::Error| {
                tracing_log::format_trace(
                    &log::Record::builder()
                        .level(log::Level::Error)
                        .target("fuser::reply")
                        .args(format_args!("Failed to send FUSE reply: {e}"))
                        .build(),
                )
                .unwrap();
            };
            via_log(&enoent);
            via_log(&einval);
            tracing::error!(target: "fuser::reply", "Failed to send FUSE reply: {}", enoent);
            tracing::error!(target: "sessionfs", "salvage write failed: {}", enoent);
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.matches("Failed to send FUSE reply").count(), 1, "{out}");
        assert!(out.contains("Invalid argument (os error 22)"), "{out}");
        assert!(out.contains("salvage write failed"), "{out}");
    }
}
