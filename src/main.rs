//! `sessionfs` binary: parse, run, print one-line errors.

use std::io::IsTerminal;

use clap::Parser;
use sessionfs::cli::{Cli, Command};

fn init_logging(debug: bool, ansi: bool) {
    let default = if debug { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SESSIONFS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Mount(args) => args.spec().and_then(|spec| {
            // The background daemon logs to a file: no colour codes there.
            init_logging(
                spec.debug,
                spec.foreground && std::io::stderr().is_terminal(),
            );
            sessionfs::mount::mount(spec)
        }),
        Command::Umount { mountpoint } => sessionfs::mount::umount(mountpoint),
        Command::Demo => {
            init_logging(false, std::io::stderr().is_terminal());
            sessionfs::demo::run()
        }
        Command::Journal(args) => sessionfs::journal::cli::run_journal(args),
        Command::Salvage(args) => sessionfs::journal::cli::run_salvage(args),
    };
    if let Err(msg) = result {
        eprintln!("sessionfs: error: {msg}");
        std::process::exit(1);
    }
}
