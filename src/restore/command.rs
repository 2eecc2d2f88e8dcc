//! The `csagent restore` command: the config, a runtime, Ctrl-C and SIGTERM
//! wired to [`Cancel`], the steps printed on stdout and the outcome (or what
//! cleanup left) on stderr, and the exit code.

use std::path::Path;

use super::{Cancel, Report, Request, run, size};
use crate::config::Config;

/// `csagent restore`: runs [`run`] with Ctrl-C/SIGTERM wired to [`Cancel`],
/// prints the steps on stdout and the outcome; returns the exit code.
pub fn command(config_path: &Path, req: Request) -> i32 {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return crate::exit::CONFIG;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return crate::exit::FAILED;
        }
    };
    rt.block_on(async {
        let cancel = Cancel::default();
        let watcher = tokio::spawn(watch_signals(cancel.clone()));
        let say = |line: &str| {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        };
        let report = run(&config, &req, &cancel, &say).await;
        watcher.abort();
        print_report(&report)
    })
}

fn print_report(report: &Report) -> i32 {
    for l in &report.leftovers {
        eprintln!("error: cleanup left: {l}");
    }
    match &report.result {
        Ok(o) => {
            println!(
                "restored {} files, {} directories, {} symlinks ({}) into {}",
                o.counts.files,
                o.counts.dirs,
                o.counts.symlinks,
                size(o.counts.bytes),
                o.target.display()
            );
            if !o.skipped.is_empty() {
                println!(
                    "skipped {} special files (sockets, FIFOs, devices): {}",
                    o.skipped.len(),
                    o.skipped
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            if report.leftovers.is_empty() {
                println!("the temporary volume is deleted");
                crate::exit::OK
            } else {
                crate::exit::FAILED
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            if report.leftovers.is_empty() {
                eprintln!(
                    "cleaned up: nothing of this restore is left mounted, attached or created"
                );
            }
            crate::exit::FAILED
        }
    }
}

/// The first Ctrl-C or SIGTERM asks the restore to stop and clean up; later
/// ones are answered with a note (cleanup must finish, or a volume is left).
async fn watch_signals(cancel: Cancel) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    loop {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        if cancel.is_set() {
            eprintln!("still cleaning up; wait, or a temporary volume may be left behind");
        } else {
            eprintln!("interrupted: stopping, then cleaning up");
            cancel.set();
        }
    }
}
