//! The `berth` command line: parses arguments and hands over to [`cli::run`];
//! exit codes are decided in one place, here.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    install_panic_hook();
    let args = cli::Args::parse();
    cli::init_logging(&args);
    match cli::run(args) {
        Ok(code) => code,
        // A reader that stops early (`berth state --json | head`) is not an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            // Messages are redacted where they are made; this is the net
            // for any that were not.
            let text = format!("{e:#}");
            eprintln!("berth: {}", berth::redact::default_rule().text(&text));
            ExitCode::FAILURE
        }
    }
}

/// A panic message is whatever the panicking code formatted: an `expect`
/// on an error that quotes an engine body, an assertion printing a spec
/// with its env. The default hook would print it as is; this one prints it
/// redacted (URL passwords, `NAME=value` with a secret NAME), with the
/// location and, when `RUST_BACKTRACE` asks, the backtrace (which holds no
/// values).
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "Box<dyn Any>".to_string());
        let message = berth::redact::default_rule().text(&message);
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("<unnamed>");
        let location = info
            .location()
            .map(|l| format!(" at {}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        eprintln!("berth: thread '{thread}' panicked{location}:\n{message}");
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            eprintln!("{backtrace}");
        } else {
            eprintln!("note: run with `RUST_BACKTRACE=1` to display a backtrace");
        }
    }));
}
