//! Runs only the container-log shipper (`csagent::logs::Shipper`) from a csagent
//! config until SIGINT or SIGTERM, then prints its status as JSON on stdout.
//! `scripts/bench-logs.sh` uses it; it is also handy to watch shipping alone:
//!
//! ```sh
//! cargo run --release --example ship_logs -- --config examples/local.toml
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use csagent::config::Config;
use csagent::logs::Shipper;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut path = PathBuf::from(csagent::config::DEFAULT_CONFIG_PATH);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--config", Some(p)) => path = PathBuf::from(p),
            _ => {
                eprintln!("usage: ship_logs [--config PATH]");
                return ExitCode::from(2);
            }
        }
    }
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    csagent::tracing_setup::init(config.agent.log_format, &config.agent.log_level);
    let identity = match csagent::aws::identity(&config).await {
        Ok(i) => i,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let sdk = csagent::aws::sdk_config(&config, &identity.region).await;
    let client = aws_sdk_cloudwatchlogs::Client::new(&sdk);
    let docker = match bollard::Docker::connect_with_local_defaults() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cannot connect to Docker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let docker = match docker.negotiate_version().await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cannot reach Docker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shipper = Shipper::new(docker, client, &config, &identity);
    let status = shipper.status_handle();
    let (tx, rx) = watch::channel(false);
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            eprintln!("cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tx.send_replace(true);
    });
    let result = shipper.run(rx).await;
    match serde_json::to_string_pretty(&status.snapshot()) {
        Ok(json) => println!("{json}"),
        Err(e) => eprintln!("cannot print status: {e}"),
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
