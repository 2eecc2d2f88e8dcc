//! Command line: `csagent run | status | reload | refresh-secrets | check-config | restore |
//! version`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand};

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
    /// Copy one developer's files from a snapshot of the data volume into their home.
    #[command(long_about = RESTORE_ABOUT, after_help = RESTORE_AFTER)]
    Restore(RestoreArgs),
    /// Print the version.
    Version,
    /// Inside a developer's container (with `containers.disk_quota`): keep files in
    /// their project quota, then run the image's entrypoint. Not for people.
    #[command(hide = true)]
    ContainerInit {
        /// The program to run and its arguments, after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
}

const RESTORE_ABOUT: &str = "Copy one developer's files from an EBS snapshot of the data volume \
(or an AWS Backup recovery point) into restored-<date>/ in their home, next to their live files.

It creates a temporary volume from the snapshot in this host's availability zone (tagged \
csagent-restore=<project>), attaches it, mounts it read-only without replaying its journal, \
copies <dev>/home (or, from before the home migration, <dev>/workspace and <dev>/config) and \
then unmounts, detaches and deletes the volume - also after a failure or Ctrl-C. Nothing is \
ever written over live files: the target directory must not exist. Symlinks are copied as \
symlinks, never followed. Everything copied belongs to the developer (containers.uid:gid).

Run it as root on the host. The developer's container keeps running; they see the files at \
~/restored-<date>/ in code-server.";

const RESTORE_AFTER: &str = "Examples:
  sudo csagent restore dev3 --snapshot snap-0123456789abcdef0
  sudo csagent restore dev3 --recovery-point arn:aws:ec2:eu-west-1::snapshot/snap-0123456789abcdef0 --name before-the-rebase
Find snapshots: aws backup list-recovery-points-by-backup-vault --backup-vault-name <the stack's BackupVault>
  (RecoveryPointArn), or aws ec2 describe-snapshots --owner-ids self --filters Name=volume-id,Values=<data volume id>.
Exit codes: 0 restored and cleaned up; 1 failed (what was left, if anything, is printed); 2 bad config.
More: docs/operations.md, \"Restore a developer's files\".";

/// `csagent restore`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("from").required(true).args(["snapshot", "recovery_point"])))]
pub struct RestoreArgs {
    /// The developer whose files to restore, as named in the config (e.g. dev3).
    pub developer: String,
    /// EBS snapshot of the data volume to restore from.
    #[arg(long, value_name = "SNAPSHOT_ID")]
    pub snapshot: Option<String>,
    /// AWS Backup recovery point to restore from: for the data volume, its snapshot's ARN
    /// (arn:aws:ec2:REGION::snapshot/snap-...).
    #[arg(long, value_name = "ARN")]
    pub recovery_point: Option<String>,
    /// Directory to create in the developer's home; it must not exist
    /// [default: restored-YYYY-MM-DD, today in UTC].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// How long to wait for the attached volume's device to appear.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = humantime::parse_duration)]
    pub device_timeout: Duration,
    /// How long to wait for EC2 to create, attach or detach the volume.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = humantime::parse_duration)]
    pub aws_timeout: Duration,
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

    #[test]
    fn restore_needs_exactly_one_source() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["csagent", "restore"], args].concat());
        assert!(parse(&["dev1"]).is_err());
        assert!(parse(&["dev1", "--snapshot", "snap-1", "--recovery-point", "arn:x"]).is_err());
        let cli = parse(&["dev1", "--snapshot", "snap-1", "--device-timeout", "5s"]).unwrap();
        let Command::Restore(a) = cli.command else {
            panic!("not restore")
        };
        assert_eq!(a.developer, "dev1");
        assert_eq!(a.device_timeout, Duration::from_secs(5));
        assert_eq!(a.aws_timeout, Duration::from_secs(600));
    }
}
