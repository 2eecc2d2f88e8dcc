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
        Command::Run { once } => {
            crate::secrets::tune_allocator();
            runtime()
                .map(|rt| rt.block_on(crate::agent::run(&cli.global.config, once)))
                .unwrap_or(exit::FAILED)
        }
        Command::Status { json } => runtime()
            .map(|rt| rt.block_on(status(&cli.global.config, json)))
            .unwrap_or(exit::FAILED),
        Command::Reload => runtime()
            .map(|rt| rt.block_on(simple_request(&cli.global.config, "reload")))
            .unwrap_or(exit::FAILED),
        Command::Restore(args) => crate::restore::command(
            &cli.global.config,
            crate::restore::Request {
                developer: args.developer,
                snapshot: args.snapshot,
                recovery_point: args.recovery_point,
                name: args.name,
                device_timeout: args.device_timeout,
                aws_timeout: args.aws_timeout,
            },
        ),
        Command::ContainerInit { command } => crate::containers::init::exec(&command),
        Command::RefreshSecrets => runtime()
            .map(|rt| rt.block_on(simple_request(&cli.global.config, "refresh-secrets")))
            .unwrap_or(exit::FAILED),
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
    if let Some(p) = &c.developer_set.parameter {
        // The file is checked alone; the agent checks each value it reads
        // against it (csagent status shows the set in force).
        writeln!(
            out,
            "developers from the SSM parameter {p}, read by the agent every {}",
            humantime::format_duration(c.developer_set.poll_interval)
        )?;
        return Ok(());
    }
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

/// Two workers whatever the host's size: the agent is idle nearly all the time,
/// and each worker is a thread (stack, glibc arena) kept for the process's life.
/// Two still let the log shipper use a second core under a burst while another
/// task runs (docs/benchmarks.md, "issue 20: footprint").
fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}

/// The socket path from the config. When the config does not validate (an admin
/// mid-edit), the `agent.socket` key is still read from the raw TOML so `status`
/// and `reload` reach the running agent; else the default.
fn socket_path(config: &std::path::Path) -> std::path::PathBuf {
    if let Ok(c) = Config::load(config) {
        return c.agent.socket;
    }
    std::fs::read_to_string(config)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .and_then(|t| {
            t.get("agent")?
                .get("socket")?
                .as_str()
                .map(std::path::PathBuf::from)
        })
        .unwrap_or_else(|| std::path::PathBuf::from("/run/csagent/csagent.sock"))
}

async fn status(config: &std::path::Path, json: bool) -> i32 {
    use std::io::IsTerminal;
    let socket = socket_path(config);
    match crate::control::request(&socket, "status").await {
        Ok(resp) if resp.ok => {
            let Some(report) = resp.status else {
                eprintln!("error: the agent answered without a status");
                return exit::CONFIG;
            };
            let mut out = std::io::stdout().lock();
            let written = if json {
                serde_json::to_string_pretty(&report)
                    .map_err(std::io::Error::other)
                    .and_then(|s| writeln!(out, "{s}"))
            } else {
                report.render(&mut out, std::io::stdout().is_terminal())
            };
            if let Err(e) = written {
                eprintln!("error: writing output: {e}");
            }
            if report.healthy {
                exit::OK
            } else {
                exit::FAILED
            }
        }
        Ok(resp) => {
            eprintln!(
                "error: the agent refused: {}",
                resp.error.unwrap_or_default()
            );
            exit::CONFIG
        }
        Err(e) => {
            eprintln!("error: the agent is not reachable: {e}");
            eprintln!("is it running? try: systemctl status csagent; journalctl -u csagent");
            docker_view(json).await;
            exit::CONFIG
        }
    }
}

/// What Docker says about the managed containers, when the agent cannot answer.
async fn docker_view(json: bool) {
    let docker = match bollard::Docker::connect_with_local_defaults() {
        Ok(d) => match d.negotiate_version().await {
            Ok(d) => d,
            Err(e) => {
                eprintln!("docker is not reachable either: {e}");
                return;
            }
        },
        Err(e) => {
            eprintln!("docker is not reachable either: {e}");
            return;
        }
    };
    let filters = std::collections::HashMap::from([(
        "label".to_string(),
        vec![csagent_contract::labels::MANAGED_FILTER.to_string()],
    )]);
    let opts = bollard::query_parameters::ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    match docker.list_containers(Some(opts)).await {
        Ok(list) => {
            if json {
                let rows: Vec<serde_json::Value> = list
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "name": c.names.as_ref().and_then(|n| n.first()).map(|n| n.trim_start_matches('/')),
                            "developer": c.labels.as_ref().and_then(|l| l.get(csagent_contract::labels::DEVELOPER)),
                            "state": c.state.as_ref().map(|s| s.to_string()),
                            "status": c.status,
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({ "agent_reachable": false, "containers": rows })
                );
            } else {
                println!("Docker's view of the managed containers:");
                for c in list {
                    println!(
                        "  {:<28} {:<10} {}",
                        c.names
                            .as_ref()
                            .and_then(|n| n.first())
                            .map(|n| n.trim_start_matches('/'))
                            .unwrap_or("?"),
                        c.state.map(|s| s.to_string()).unwrap_or_default(),
                        c.status.unwrap_or_default()
                    );
                }
            }
        }
        Err(e) => eprintln!("cannot list containers: {e}"),
    }
}

async fn simple_request(config: &std::path::Path, cmd: &str) -> i32 {
    let socket = socket_path(config);
    match crate::control::request(&socket, cmd).await {
        Ok(resp) if resp.ok => {
            println!("{}", resp.message.unwrap_or_else(|| "ok".into()));
            exit::OK
        }
        Ok(resp) => {
            eprintln!("error: {}", resp.error.unwrap_or_default());
            exit::FAILED
        }
        Err(e) => {
            eprintln!("error: the agent is not reachable: {e}");
            exit::CONFIG
        }
    }
}
