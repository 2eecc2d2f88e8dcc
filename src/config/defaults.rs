//! Every default the config applies, one named constant per key, in the order of
//! `packaging/config.toml`.
//!
//! The validator uses these when a key is absent; nothing else in `src/config/`
//! writes a default. README.md's configuration table and `packaging/config.toml` state
//! the same values, and `docs_agree` fails when either drifts from these constants.
//!
//! Durations and sizes are stored parsed (a [`Duration`], a byte count), as the
//! typed [`Config`](super::Config) holds them.

use std::time::Duration;

use super::{ApplyPolicy, Filesystem, LogFormat, PullPolicy, RegistryAuth, RolloutStrategy};

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

/// Where the agent looks for its config when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/csagent/config.toml";

/// Most developers one host serves; t3.2xlarge has 8 vCPUs and 32 GiB.
pub const MAX_DEVELOPERS: usize = csagent_contract::MAX_DEVELOPERS as usize;

/// `project`: names secrets, log groups and tags; must match the infra template.
pub const DEFAULT_PROJECT: &str = "code-server-multi-dev";

// --- [volume] ---

/// `volume.mount_point`.
pub const DEFAULT_MOUNT_POINT: &str = csagent_contract::DATA_MOUNT;
/// `volume.filesystem`: what a blank device is formatted with.
pub const DEFAULT_FILESYSTEM: Filesystem = Filesystem::Ext4;
/// `volume.label`: the filesystem label mkfs writes.
pub const DEFAULT_VOLUME_LABEL: &str = "csagent-data";
/// `volume.wait_timeout` ("5m"): EBS attachment can finish after boot.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// `volume.fstab`.
pub const DEFAULT_FSTAB: &str = "/etc/fstab";
/// `volume.by_id_dir`: where udev puts the stable NVMe names.
pub const DEFAULT_BY_ID_DIR: &str = "/dev/disk/by-id";

// --- [containers] ---

/// `containers.image`.
pub const DEFAULT_IMAGE: &str = "codercom/code-server:4.96.4";
/// `containers.pull`.
pub const DEFAULT_PULL: PullPolicy = PullPolicy::IfNotPresent;
/// `containers.registry_auth`: ECR credentials for an ECR registry host, none elsewhere.
pub const DEFAULT_REGISTRY_AUTH: RegistryAuth = RegistryAuth::Auto;
/// `containers.base_port`: dev1's host port.
pub const DEFAULT_BASE_PORT: u16 = 8443;
/// `containers.cpus`: CPU limit per developer, in CPUs.
pub const DEFAULT_CPUS: f64 = csagent_contract::DEFAULT_DEVELOPER_CPU_MILLIS as f64 / 1000.0;
/// `containers.memory` ("4GiB"): memory limit per developer, in bytes.
pub const DEFAULT_MEMORY: u64 = csagent_contract::DEFAULT_DEVELOPER_MEMORY_GIB as u64 * GIB;
/// `containers.memory_reservation` ("3GiB"): soft reservation per developer, in bytes.
pub const DEFAULT_MEMORY_RESERVATION: u64 =
    csagent_contract::DEFAULT_DEVELOPER_MEMORY_RESERVATION_GIB as u64 * GIB;
/// `containers.pids_limit`: most processes in one container.
pub const DEFAULT_PIDS_LIMIT: i64 = 2048;
/// `containers.uid`: the code-server image's `coder` user.
pub const DEFAULT_UID: u32 = 1000;
/// `containers.gid`: the code-server image's `coder` group.
pub const DEFAULT_GID: u32 = 1000;
/// `containers.network`: the dedicated bridge network.
pub const DEFAULT_NETWORK: &str = "csagent";
/// `containers.subnet`: that network's subnet.
pub const DEFAULT_SUBNET: &str = "172.30.0.0/24";
/// `containers.log_max_size` ("20MiB"): json-file log rotation size, in bytes.
pub const DEFAULT_LOG_MAX_SIZE: u64 = 20 * MIB;
/// `containers.log_max_files`: rotated json-file logs kept per container.
pub const DEFAULT_LOG_MAX_FILES: u32 = 5;
/// `containers.health_interval` ("30s").
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(30);
/// `containers.health_start_period` ("60s"): code-server's first start is slow.
pub const DEFAULT_HEALTH_START_PERIOD: Duration = Duration::from_secs(60);
/// `containers.stop_grace` ("10s"): Docker's own default for `docker stop`.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);
/// The longest `containers.stop_grace`: the Docker API call that waits for it
/// times out after 120 s.
pub const MAX_STOP_GRACE: Duration = Duration::from_secs(100);
/// `containers.block_metadata`: drop container traffic to 169.254.169.254.
pub const DEFAULT_BLOCK_METADATA: bool = true;
/// `containers.isolate_host`: drop new connections from containers to the host.
pub const DEFAULT_ISOLATE_HOST: bool = true;
/// `containers.sudo`: keep `no-new-privileges`, so `sudo` inside does not work.
pub const DEFAULT_SUDO: bool = false;
/// Smallest `containers.disk_quota` (there is no default: no quota unless written).
pub const MIN_DISK_QUOTA: u64 = 64 * 1024 * 1024;

// --- [developers] ---

/// `developers.count`: dev1..dev8 when no `[[developer]]` is listed.
pub const DEFAULT_DEVELOPER_COUNT: u32 = 8;
/// `developers.poll_interval` ("60s"): how often `developers.parameter` is read.
pub const DEFAULT_DEVELOPERS_POLL_INTERVAL: Duration = Duration::from_secs(60);

// --- [secrets] ---

/// `secrets.password_name`: Secrets Manager name template.
pub const DEFAULT_PASSWORD_NAME: &str = csagent_contract::names::PASSWORD_SECRET;
/// `secrets.claude_api_key_name`: Secrets Manager name template.
pub const DEFAULT_CLAUDE_API_KEY_NAME: &str = csagent_contract::names::CLAUDE_KEY_SECRET;
/// `secrets.poll_interval` ("60s"): how often rotation is checked.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60);
/// `secrets.apply`.
pub const DEFAULT_APPLY: ApplyPolicy = ApplyPolicy::Immediate;
/// `secrets.max_delay` ("8h"): longest a `when-idle` rotation waits.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(8 * 3600);

// --- [rollout] ---

/// `rollout.strategy`.
pub const DEFAULT_ROLLOUT_STRATEGY: RolloutStrategy = RolloutStrategy::OneAtATime;
/// `rollout.apply`.
pub const DEFAULT_ROLLOUT_APPLY: ApplyPolicy = ApplyPolicy::Immediate;
/// `rollout.max_delay` ("8h"): longest a `when-idle` developer is waited for.
pub const DEFAULT_ROLLOUT_MAX_DELAY: Duration = Duration::from_secs(8 * 3600);
/// `rollout.health_timeout` ("5m"): longest a recreated container may take to
/// become healthy before the rollout halts.
pub const DEFAULT_ROLLOUT_HEALTH_TIMEOUT: Duration = Duration::from_secs(300);

// --- [metrics] ---

/// `metrics.enabled`.
pub const DEFAULT_METRICS_ENABLED: bool = true;
/// `metrics.namespace`: the CloudWatch namespace.
pub const DEFAULT_METRICS_NAMESPACE: &str = csagent_contract::metrics::NAMESPACE;
/// `metrics.interval` ("60s").
pub const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(60);

// --- [logs] ---

/// `logs.enabled`.
pub const DEFAULT_LOGS_ENABLED: bool = true;
/// `logs.group`: CloudWatch Logs group template per developer.
pub const DEFAULT_LOG_GROUP: &str = csagent_contract::names::CONTAINER_LOG_GROUP;
/// `logs.agent_group`: the agent's own log group template.
pub const DEFAULT_AGENT_LOG_GROUP: &str = csagent_contract::names::AGENT_LOG_GROUP;
/// `logs.host`: ship the host's journal entries (with `logs.enabled`).
pub const DEFAULT_HOST_LOGS: bool = true;
/// `logs.system_group`: kernel OOM kills and systemd's messages about the agent.
pub const DEFAULT_SYSTEM_LOG_GROUP: &str = csagent_contract::names::SYSTEM_LOG_GROUP;
/// `logs.docker_group`: docker.service and containerd.service.
pub const DEFAULT_DOCKER_LOG_GROUP: &str = csagent_contract::names::DOCKER_LOG_GROUP;
/// `logs.hold_rotated_files`: rotated json-file logs per container the shipper
/// keeps open while it is behind, so Docker's deletion of them loses nothing.
pub const DEFAULT_HOLD_ROTATED_FILES: u32 = 5;
/// `logs.retention_days`: set on the groups the agent creates.
pub const DEFAULT_RETENTION_DAYS: u32 = csagent_contract::DEFAULT_LOG_RETENTION_DAYS;

// --- [agent] ---

/// `agent.state_dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/csagent";
/// `agent.runtime_dir`: a tmpfs.
pub const DEFAULT_RUNTIME_DIR: &str = "/run/csagent";
/// `agent.socket`: the control socket.
pub const DEFAULT_SOCKET: &str = "/run/csagent/csagent.sock";
/// `agent.socket_group`.
pub const DEFAULT_SOCKET_GROUP: &str = "csagent";
/// `agent.log_format`.
pub const DEFAULT_LOG_FORMAT: LogFormat = LogFormat::Text;
/// `agent.log_level`.
pub const DEFAULT_LOG_LEVEL: &str = "info";

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::config::test_support::parse;

    #[test]
    fn defaults_give_eight_developers_on_8443_up() {
        let c = parse("").expect("minimal config is valid");
        assert_eq!(c.project, "code-server-multi-dev");
        assert_eq!(c.developers.len(), 8);
        let ports: Vec<u16> = c.developers.iter().map(|d| d.port).collect();
        assert_eq!(ports, (8443..=8450).collect::<Vec<u16>>());
        assert_eq!(c.developers[4].name, "dev5");
        assert_eq!(c.developers[0].memory, 4 * 1024 * 1024 * 1024);
        assert_eq!(c.developers[0].memory_reservation, 3 * 1024 * 1024 * 1024);
        assert_eq!(c.developers[0].cpus, 1.5);
        assert_eq!(c.containers.image, "codercom/code-server:4.96.4");
        assert_eq!(c.containers.pull, PullPolicy::IfNotPresent);
        assert_eq!(c.volume.mount_point, Path::new("/mnt/ebs-data"));
        assert_eq!(c.volume.filesystem, Filesystem::Ext4);
        assert_eq!(c.secrets.poll_interval, Duration::from_secs(60));
        assert_eq!(c.secrets.max_delay, Duration::from_secs(8 * 3600));
        assert_eq!(c.metrics.namespace, "CodeServer");
        assert_eq!(
            c.render(&c.secrets.password_name, "dev3"),
            "code-server-multi-dev/dev3/password"
        );
        assert_eq!(
            c.render(&c.logs.group, "dev3"),
            "/aws/ec2/code-server-multi-dev/containers/dev3"
        );
        assert_eq!(
            c.logs.agent_group.as_deref(),
            Some("/aws/ec2/code-server-multi-dev/agent")
        );
        assert!(c.logs.host);
        assert_eq!(
            c.logs.system_group.as_deref(),
            Some("/aws/ec2/code-server-multi-dev/system")
        );
        assert_eq!(
            c.logs.docker_group.as_deref(),
            Some("/aws/ec2/code-server-multi-dev/docker")
        );
        assert_eq!(c.logs.journal, None);
        assert_eq!(c.logs.hold_rotated_files, 5);
        assert_eq!(c.agent.socket, Path::new("/run/csagent/csagent.sock"));
    }

    #[test]
    fn default_retention_is_one_cloudwatch_accepts() {
        // The default skips the check a written value gets, so hold it here.
        assert!(crate::config::validate::RETENTION_DAYS.contains(&DEFAULT_RETENTION_DAYS));
    }
}
