//! What each subcommand does; `main` only parses and exits with the code.

use std::io::Write;

use bytesize::ByteSize;

use crate::cli::{Cli, Command};
use crate::config::{Config, VolumeSource};
use crate::exit;

pub fn dispatch(cli: Cli) -> i32 {
    match cli.command {
        Command::Version => {
            println!("csagent {}", env!("CARGO_PKG_VERSION"));
            exit::OK
        }
        Command::CheckConfig { json } => check_config(&cli.global.config, json),
        Command::Run { .. } | Command::Status { .. } | Command::Reload => {
            eprintln!("csagent: this subcommand is not yet available in this build");
            exit::FAILED
        }
    }
}

fn check_config(path: &std::path::Path, json: bool) -> i32 {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::CONFIG;
        }
    };
    let mut out = std::io::stdout().lock();
    let written = if json {
        serde_json::to_string_pretty(&config)
            .map_err(std::io::Error::other)
            .and_then(|s| writeln!(out, "{s}"))
    } else {
        print_summary(&mut out, &config)
    };
    match written {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("error: writing output: {e}");
            exit::FAILED
        }
    }
}

fn print_summary(out: &mut impl Write, c: &Config) -> std::io::Result<()> {
    writeln!(out, "{}: ok", c.path.display())?;
    writeln!(out, "project   {}", c.project)?;
    let volume = match &c.volume.source {
        VolumeSource::VolumeId(id) => format!("EBS volume {id}"),
        VolumeSource::Device(d) => format!("device {}", d.display()),
    };
    writeln!(
        out,
        "volume    {volume} -> {} ({})",
        c.volume.mount_point.display(),
        c.volume.filesystem
    )?;
    writeln!(
        out,
        "image     {} (pull {})",
        c.containers.image, c.containers.pull
    )?;
    writeln!(out, "developers ({}):", c.developers.len())?;
    writeln!(
        out,
        "  {:<12} {:>5}  {:>5}  {:>10}  {:>10}",
        "NAME", "PORT", "CPUS", "MEMORY", "RESERVED"
    )?;
    for d in &c.developers {
        writeln!(
            out,
            "  {:<12} {:>5}  {:>5}  {:>10}  {:>10}",
            d.name,
            d.port,
            d.cpus,
            ByteSize(d.memory).display().iec().to_string(),
            ByteSize(d.memory_reservation).display().iec().to_string()
        )?;
    }
    Ok(())
}
