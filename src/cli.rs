//! Command line: `csagent run | status | reload | check-config | version`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::DEFAULT_CONFIG_PATH;

/// Runs one code-server container per developer on this host and keeps it healthy:
/// prepares the data volume, fetches credentials from Secrets Manager, converges the
/// containers through Docker, and ships metrics and logs to CloudWatch.
#[derive(Debug, Parser)]
#[command(name = "csagent", version, propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 ok, 1 failed or degraded, 2 bad config (or, for `status`, agent unreachable).\nConfig reference: /usr/share/doc/csagent/README.md or `man csagent`."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Config file to read.
    #[arg(long, short = 'c', global = true, env = "CSAGENT_CONFIG", default_value = DEFAULT_CONFIG_PATH, value_name = "PATH")]
    pub config: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent (what systemd starts).
    Run {
        /// Run one full convergence pass, then exit: 0 when converged, 1 otherwise.
        #[arg(long)]
        once: bool,
    },
    /// Show the agent's view of the host and every developer.
    Status {
        /// Print JSON (stable schema, see docs/operations.md) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Ask the running agent to re-read its config (same as SIGHUP).
    Reload,
    /// Ask the running agent to read every secret now (after a manual rotation).
    RefreshSecrets,
    /// Validate the config file and print the developers it defines; exit 2 if invalid.
    CheckConfig {
        /// Print the effective config as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the version.
    Version,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn config_flag_on_every_subcommand() {
        for sub in [
            "run",
            "status",
            "reload",
            "refresh-secrets",
            "check-config",
            "version",
        ] {
            let cli = Cli::try_parse_from(["csagent", sub, "--config", "/tmp/x.toml"])
                .unwrap_or_else(|e| panic!("{sub}: {e}"));
            assert_eq!(cli.global.config, PathBuf::from("/tmp/x.toml"));
        }
    }
}
