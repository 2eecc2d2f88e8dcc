//! The typed layer: the validated [`Config`] the rest of the agent reads.
//!
//! Every default is resolved, every range and cross-field check has passed, sizes
//! are bytes and durations are [`Duration`]s. The `DEFAULT_*` names in the field docs
//! are the constants in [`defaults`](super::defaults). `Serialize` is for
//! `check-config --json`: durations print the way they are written ("60s").

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Filesystem the agent creates on a blank data volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    /// `ext4`.
    Ext4,
    /// `xfs`.
    Xfs,
}

impl Filesystem {
    /// The name blkid reports for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Filesystem::Ext4 => "ext4",
            Filesystem::Xfs => "xfs",
        }
    }
}

impl fmt::Display for Filesystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When the image is pulled from its registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    /// `if-not-present`: pull only when the image is not on the host.
    IfNotPresent,
    /// `always`: pull whenever the image is checked; a failed pull keeps the local one.
    Always,
    /// `never`: use the local image; a missing one is an error.
    Never,
}

impl fmt::Display for PullPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PullPolicy::IfNotPresent => "if-not-present",
            PullPolicy::Always => "always",
            PullPolicy::Never => "never",
        })
    }
}

/// How image pulls authenticate to the image's registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryAuth {
    /// `auto`: ECR credentials (GetAuthorizationToken with the instance role) when the
    /// registry is `<account>.dkr.ecr.<region>.amazonaws.com`, else none.
    Auto,
    /// `ecr`: ECR credentials whatever the registry host (a VPC endpoint alias, a test).
    Ecr,
    /// `none`: anonymous pulls.
    None,
}

impl fmt::Display for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RegistryAuth::Auto => "auto",
            RegistryAuth::Ecr => "ecr",
            RegistryAuth::None => "none",
        })
    }
}

/// When a rotated credential is applied to a running container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApplyPolicy {
    /// Recreate the developer's container as soon as the rotation is seen.
    Immediate,
    /// Wait until code-server reports the developer idle, or `max_delay` passed.
    WhenIdle,
}

/// How the agent writes its own log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `text`: human-readable lines.
    Text,
    /// `json`: one JSON object per line.
    Json,
}

/// Where the data volume comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeSource {
    /// An EBS volume id; the device is found under /dev/disk/by-id.
    VolumeId(String),
    /// A device path given directly (tests, non-Nitro hosts).
    Device(PathBuf),
}

/// `[volume]`: the data volume that holds every developer's files.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeConfig {
    /// `volume_id` or `device` (exactly one is written).
    pub source: VolumeSource,
    /// Absolute path it is mounted at, never `/` (default `DEFAULT_MOUNT_POINT`).
    pub mount_point: PathBuf,
    /// Created on a blank device only (default `DEFAULT_FILESYSTEM`).
    pub filesystem: Filesystem,
    /// Filesystem label mkfs writes, 1-12 ASCII characters (default `DEFAULT_VOLUME_LABEL`).
    pub label: String,
    /// How long to wait for the device to appear (default `DEFAULT_WAIT_TIMEOUT`).
    #[serde(with = "humantime_serde_compat")]
    pub wait_timeout: Duration,
    /// The fstab the agent keeps its line in (default `DEFAULT_FSTAB`; only tests change it).
    pub fstab: PathBuf,
    /// Where stable NVMe names live (default `DEFAULT_BY_ID_DIR`; only tests change it).
    pub by_id_dir: PathBuf,
}

/// `[containers]`: what every developer's container shares.
#[derive(Debug, Clone, Serialize)]
pub struct ContainersConfig {
    /// code-server image reference (default `DEFAULT_IMAGE`).
    pub image: String,
    /// When the image is pulled (default `DEFAULT_PULL`).
    pub pull: PullPolicy,
    /// How pulls authenticate to the registry (default `DEFAULT_REGISTRY_AUTH`).
    pub registry_auth: RegistryAuth,
    /// dev1's host port; listed developers default to base_port + position (default `DEFAULT_BASE_PORT`).
    pub base_port: u16,
    /// Most processes one container may run (default `DEFAULT_PIDS_LIMIT`).
    pub pids_limit: i64,
    /// uid that owns the developer directories, the image's `coder` user (default `DEFAULT_UID`).
    pub uid: u32,
    /// gid that owns the developer directories (default `DEFAULT_GID`).
    pub gid: u32,
    /// Name of the dedicated bridge network (default `DEFAULT_NETWORK`).
    pub network: String,
    /// Its subnet, so the metadata-blocking firewall rule can match it
    /// (default `DEFAULT_SUBNET`).
    pub subnet: String,
    /// Its IPv6 subnet, when the network has IPv6 (`containers.subnet_v6`, default
    /// none). The same firewall rules then go into ip6tables as well.
    pub subnet_v6: Option<String>,
    /// json-file log size before rotation, in bytes (default `DEFAULT_LOG_MAX_SIZE`).
    pub log_max_size: u64,
    /// Rotated json-file logs kept per container (default `DEFAULT_LOG_MAX_FILES`).
    pub log_max_files: u32,
    /// Most bytes each developer's home may hold, enforced with a project quota on
    /// the data volume (`containers.disk_quota`, default none: no quota).
    pub disk_quota: Option<u64>,
    /// Add the DOCKER-USER rule that drops traffic to 169.254.169.254 (default `DEFAULT_BLOCK_METADATA`).
    pub block_metadata: bool,
    /// Add the INPUT rule that stops containers opening connections to the host
    /// (and so to other developers' published ports; default `DEFAULT_ISOLATE_HOST`).
    pub isolate_host: bool,
    /// The agent's binary on the host, mounted into containers to run
    /// `container-init` (not from the file: the running program's own path).
    #[serde(skip)]
    pub init_binary: PathBuf,
    /// Drop `no-new-privileges`, so the image's `sudo` works inside (default
    /// `DEFAULT_SUDO`: off; see docs/security.md for the trade-off).
    pub sudo: bool,
    /// Docker health check interval (timeout 10s, 3 retries; default `DEFAULT_HEALTH_INTERVAL`).
    #[serde(with = "humantime_serde_compat")]
    pub health_interval: Duration,
    /// Grace period before failed checks count (code-server's first start is slow;
    /// default `DEFAULT_HEALTH_START_PERIOD`).
    #[serde(with = "humantime_serde_compat")]
    pub health_start_period: Duration,
    /// How long a container being replaced or removed gets after SIGTERM before
    /// Docker kills it (default `DEFAULT_STOP_GRACE`).
    #[serde(with = "humantime_serde_compat")]
    pub stop_grace: Duration,
}

/// One developer, with every default resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Developer {
    /// Names the container, directories, secrets and log group (`dev1`.. by default).
    pub name: String,
    /// Host port code-server is published on (default base_port + position).
    pub port: u16,
    /// CPU limit, in CPUs (default `containers.cpus`).
    pub cpus: f64,
    /// Memory limit, in bytes (default `containers.memory`).
    pub memory: u64,
    /// Soft memory reservation, in bytes, at most `memory`
    /// (default `containers.memory_reservation`, capped at `memory`).
    pub memory_reservation: u64,
}

/// `developers.parameter` and `developers.poll_interval`: where the developer set
/// comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeveloperSetConfig {
    /// The SSM parameter holding the `[[developer]]` tables; None: the developers
    /// come from the config file (`developers.count` or `[[developer]]`).
    pub parameter: Option<String>,
    /// How often the parameter is read (default `DEFAULT_DEVELOPERS_POLL_INTERVAL`).
    #[serde(with = "humantime_serde_compat")]
    pub poll_interval: Duration,
}

/// `[secrets]`: the per-developer credentials in Secrets Manager.
#[derive(Debug, Clone, Serialize)]
pub struct SecretsConfig {
    /// Name template of the code-server password secret
    /// (default `DEFAULT_PASSWORD_NAME`).
    pub password_name: String,
    /// Name template of the Claude API key secret
    /// (default `DEFAULT_CLAUDE_API_KEY_NAME`).
    pub claude_api_key_name: String,
    /// How often rotation is checked (default `DEFAULT_POLL_INTERVAL`).
    #[serde(with = "humantime_serde_compat")]
    pub poll_interval: Duration,
    /// When a rotated credential reaches the container (default `DEFAULT_APPLY`).
    pub apply: ApplyPolicy,
    /// Longest a `when-idle` rotation waits for the developer to go idle (default `DEFAULT_MAX_DELAY`).
    #[serde(with = "humantime_serde_compat")]
    pub max_delay: Duration,
}

/// How a change of image or spec reaches the developers' containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutStrategy {
    /// `one-at-a-time`: recreate one developer, and the next only once that one
    /// is healthy on the new spec; an unhealthy one halts the rollout.
    OneAtATime,
    /// `all-at-once`: recreate every developer in the same pass.
    AllAtOnce,
}

/// `[rollout]`: image and spec changes (not credential rotations: `[secrets]`).
#[derive(Debug, Clone, Serialize)]
pub struct RolloutConfig {
    /// Default `DEFAULT_ROLLOUT_STRATEGY`.
    pub strategy: RolloutStrategy,
    /// When a developer's turn is taken: at once, or once they are idle
    /// (default `DEFAULT_ROLLOUT_APPLY`).
    pub apply: ApplyPolicy,
    /// Longest a `when-idle` developer is waited for (default `DEFAULT_ROLLOUT_MAX_DELAY`).
    #[serde(with = "humantime_serde_compat")]
    pub max_delay: Duration,
    /// Longest a recreated container may take to become healthy before the
    /// rollout halts (default `DEFAULT_ROLLOUT_HEALTH_TIMEOUT`).
    #[serde(with = "humantime_serde_compat")]
    pub health_timeout: Duration,
}

/// `[metrics]`: CloudWatch metrics.
#[derive(Debug, Clone, Serialize)]
pub struct MetricsConfig {
    /// Publish metrics at all (default `DEFAULT_METRICS_ENABLED`).
    pub enabled: bool,
    /// CloudWatch namespace (default `DEFAULT_METRICS_NAMESPACE`).
    pub namespace: String,
    /// How often metrics are collected and published (default `DEFAULT_METRICS_INTERVAL`).
    #[serde(with = "humantime_serde_compat")]
    pub interval: Duration,
}

/// `[logs]`: CloudWatch Logs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogsConfig {
    /// Ship container logs at all (default `DEFAULT_LOGS_ENABLED`).
    pub enabled: bool,
    /// Group name template per developer
    /// (default `DEFAULT_LOG_GROUP`).
    pub group: String,
    /// The agent's own log lines (rendered, `{project}` filled in); None: not shipped
    /// (default `DEFAULT_AGENT_LOG_GROUP`).
    pub agent_group: Option<String>,
    /// Retention set on the groups the agent creates, in days (default `DEFAULT_RETENTION_DAYS`).
    pub retention_days: Option<u32>,
    /// Ship the host's journal entries (only with `enabled`; default `DEFAULT_HOST_LOGS`).
    pub host: bool,
    /// Kernel OOM kills and systemd's messages about csagent.service (rendered);
    /// None: not shipped (default `DEFAULT_SYSTEM_LOG_GROUP`).
    pub system_group: Option<String>,
    /// docker.service and containerd.service (rendered); None: not shipped
    /// (default `DEFAULT_DOCKER_LOG_GROUP`).
    pub docker_group: Option<String>,
    /// Rotated json-file logs per container held open while the shipper is
    /// behind: Docker's deletion of them then loses nothing; each holds up to
    /// `containers.log_max_size` of disk until read (default
    /// `DEFAULT_HOLD_ROTATED_FILES`).
    pub hold_rotated_files: u32,
    /// A journal file or directory read instead of the host's journal (tests;
    /// default: the host's journal).
    pub journal: Option<PathBuf>,
}

/// `[agent]`: the agent's own files and logging.
#[derive(Debug, Clone, Serialize)]
pub struct AgentConfig {
    /// Checkpoints and observed state, never secrets (default `DEFAULT_STATE_DIR`).
    pub state_dir: PathBuf,
    /// tmpfs directory for credential files handed to containers
    /// (default `DEFAULT_RUNTIME_DIR`).
    pub runtime_dir: PathBuf,
    /// Control socket for `status` and `reload` (default `DEFAULT_SOCKET`).
    pub socket: PathBuf,
    /// Group that may use the control socket besides root (default `DEFAULT_SOCKET_GROUP`).
    pub socket_group: String,
    /// text or json (default `DEFAULT_LOG_FORMAT`).
    pub log_format: LogFormat,
    /// tracing filter; RUST_LOG overrides it (default `DEFAULT_LOG_LEVEL`).
    pub log_level: String,
}

/// The validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// File it was read from (for messages).
    pub path: PathBuf,
    /// Names secrets, log groups and tags (default `DEFAULT_PROJECT`).
    pub project: String,
    /// AWS region; None: read from IMDSv2.
    pub region: Option<String>,
    /// This EC2 instance's id; None: read from IMDSv2.
    pub instance_id: Option<String>,
    /// `aws.endpoint_url`: every AWS call goes here; None: the public endpoints.
    pub endpoint_url: Option<String>,
    /// `[volume]`.
    pub volume: VolumeConfig,
    /// `[containers]`.
    pub containers: ContainersConfig,
    /// Every developer, from `developers.count` (default `DEFAULT_DEVELOPER_COUNT`),
    /// `[[developer]]`, or the published set `developers.parameter` names (empty
    /// until the agent has read it).
    pub developers: Vec<Developer>,
    /// Where the developers come from.
    pub developer_set: DeveloperSetConfig,
    /// `[secrets]`.
    pub secrets: SecretsConfig,
    /// `[rollout]`.
    pub rollout: RolloutConfig,
    /// `[metrics]`.
    pub metrics: MetricsConfig,
    /// `[logs]`.
    pub logs: LogsConfig,
    /// `[agent]`.
    pub agent: AgentConfig,
}

/// Durations are printed the way they are written ("60s").
mod humantime_serde_compat {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}
