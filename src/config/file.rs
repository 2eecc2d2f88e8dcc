//! The file layer: what the admin writes in `config.toml`, key for key.
//!
//! Every field is optional: the validator (`validate/`) applies the defaults from
//! [`defaults`](super::defaults), because several checks depend on whether a key was
//! written at all (`developers.count` next to `[[developer]]` entries, a developer's
//! `memory_reservation` following its `memory`). Durations and sizes stay strings here
//! so a bad one is reported with its key. Unknown keys are rejected.
//!
//! [`parse_file`] turns TOML text into these structs; its errors name the key (or the
//! line, for a syntax error) on one line.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{
    ApplyPolicy, ConfigError, Filesystem, LogFormat, PullPolicy, RegistryAuth, RolloutStrategy,
};

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    /// `project`: names secrets, log groups and tags. Default `DEFAULT_PROJECT`.
    pub project: Option<String>,
    /// `region`: the AWS region. Default: read from IMDSv2.
    pub region: Option<String>,
    /// `instance_id`: this EC2 instance. Default: read from IMDSv2.
    pub instance_id: Option<String>,
    /// `[aws]`.
    #[serde(default)]
    pub aws: FileAws,
    /// `[volume]` (required: it names the data volume).
    #[serde(default)]
    pub volume: FileVolume,
    /// `[containers]`: image, limits and network shared by every developer.
    #[serde(default)]
    pub containers: FileContainers,
    /// `[developers]`: dev1..devN, when no `[[developer]]` is listed.
    #[serde(default)]
    pub developers: FileDevelopers,
    /// `[[developer]]` entries, in order; empty: use `developers.count`.
    #[serde(default)]
    pub developer: Vec<FileDeveloper>,
    /// `[secrets]`.
    #[serde(default)]
    pub secrets: FileSecrets,
    /// `[rollout]`.
    #[serde(default)]
    pub rollout: FileRollout,
    /// `[metrics]`.
    #[serde(default)]
    pub metrics: FileMetrics,
    /// `[logs]`.
    #[serde(default)]
    pub logs: FileLogs,
    /// `[agent]`.
    #[serde(default)]
    pub agent: FileAgent,
}

/// `[aws]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAws {
    /// `aws.endpoint_url`: send every AWS call here (http:// or https://). Default:
    /// none (the public endpoints, or `AWS_ENDPOINT_URL`).
    pub endpoint_url: Option<String>,
}

/// `[volume]`: exactly one of `volume_id` and `device` is required.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileVolume {
    /// `volume.volume_id`: the EBS volume id (`vol-` and hex). No default.
    pub volume_id: Option<String>,
    /// `volume.device`: an absolute device path, instead of `volume_id`. No default.
    pub device: Option<PathBuf>,
    /// `volume.mount_point`: absolute path, not `/`. Default `DEFAULT_MOUNT_POINT`.
    pub mount_point: Option<PathBuf>,
    /// `volume.filesystem`: `ext4` or `xfs`, used on a blank device only. Default
    /// `DEFAULT_FILESYSTEM`.
    pub filesystem: Option<Filesystem>,
    /// `volume.label`: 1-12 ASCII characters, no spaces. Default `DEFAULT_VOLUME_LABEL`.
    pub label: Option<String>,
    /// `volume.wait_timeout`: a duration ("5m"). Default `DEFAULT_WAIT_TIMEOUT`.
    pub wait_timeout: Option<String>,
    /// `volume.fstab`: absolute path. Default `DEFAULT_FSTAB`.
    pub fstab: Option<PathBuf>,
    /// `volume.by_id_dir`: absolute path (tests change it). Default `DEFAULT_BY_ID_DIR`.
    pub by_id_dir: Option<PathBuf>,
}

/// `[containers]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileContainers {
    /// `containers.image`: an image reference, no whitespace. Default `DEFAULT_IMAGE`.
    pub image: Option<String>,
    /// `containers.pull`: `if-not-present`, `always` or `never`. Default `DEFAULT_PULL`.
    pub pull: Option<PullPolicy>,
    /// `containers.registry_auth`: `auto`, `ecr` or `none`. Default
    /// `DEFAULT_REGISTRY_AUTH`.
    pub registry_auth: Option<RegistryAuth>,
    /// `containers.base_port`: dev1's host port, 1024..=65535. Default
    /// `DEFAULT_BASE_PORT`.
    pub base_port: Option<u32>,
    /// `containers.cpus`: CPU limit per developer, 0.01..=64. Default `DEFAULT_CPUS`.
    pub cpus: Option<f64>,
    /// `containers.memory`: a size ("4GiB"), at least 256MiB. Default `DEFAULT_MEMORY`.
    pub memory: Option<String>,
    /// `containers.memory_reservation`: a size, at most `memory`. Default
    /// `DEFAULT_MEMORY_RESERVATION`.
    pub memory_reservation: Option<String>,
    /// `containers.pids_limit`: 64..=1000000 processes. Default `DEFAULT_PIDS_LIMIT`.
    pub pids_limit: Option<i64>,
    /// `containers.uid`: owner of the developer directories. Default `DEFAULT_UID`.
    pub uid: Option<u32>,
    /// `containers.gid`: group of the developer directories. Default `DEFAULT_GID`.
    pub gid: Option<u32>,
    /// `containers.network`: bridge network name, 1-64 of a-z A-Z 0-9 '-'. Default
    /// `DEFAULT_NETWORK`.
    pub network: Option<String>,
    /// `containers.subnet`: its IPv4 CIDR. Default `DEFAULT_SUBNET`.
    pub subnet: Option<String>,
    /// `containers.subnet_v6`: an IPv6 CIDR (/48../124, host bits zero) to give the
    /// network IPv6 too. No default: the network is IPv4 only.
    pub subnet_v6: Option<String>,
    /// `containers.log_max_size`: a size, at least 1MiB. Default `DEFAULT_LOG_MAX_SIZE`.
    pub log_max_size: Option<String>,
    /// `containers.disk_quota`: a size, at least `MIN_DISK_QUOTA`: each developer's
    /// home may hold at most this much (project quotas). No default: no quota.
    pub disk_quota: Option<String>,
    /// `containers.log_max_files`: 1..=100. Default `DEFAULT_LOG_MAX_FILES`.
    pub log_max_files: Option<u32>,
    /// `containers.block_metadata`. Default `DEFAULT_BLOCK_METADATA`.
    pub block_metadata: Option<bool>,
    /// `containers.isolate_host`. Default `DEFAULT_ISOLATE_HOST`.
    pub isolate_host: Option<bool>,
    /// `containers.sudo`. Default `DEFAULT_SUDO`.
    pub sudo: Option<bool>,
    /// `containers.health_interval`: a duration, at least 1s. Default
    /// `DEFAULT_HEALTH_INTERVAL`.
    pub health_interval: Option<String>,
    /// `containers.health_start_period`: a duration. Default
    /// `DEFAULT_HEALTH_START_PERIOD`.
    pub health_start_period: Option<String>,
    /// `containers.stop_grace`: a duration, at most `MAX_STOP_GRACE`. Default
    /// `DEFAULT_STOP_GRACE`.
    pub stop_grace: Option<String>,
}

/// `[developers]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileDevelopers {
    /// `developers.count`: 1..=`MAX_DEVELOPERS`; not with `[[developer]]`. Signed so a
    /// negative count gets the range message. Default `DEFAULT_DEVELOPER_COUNT`.
    pub count: Option<i64>,
    /// `developers.parameter`: an SSM parameter name whose value holds the
    /// `[[developer]]` tables; not with `count` or `[[developer]]`. No default: the
    /// developers come from this file.
    pub parameter: Option<String>,
    /// `developers.poll_interval`: a duration, at least 1s. Default
    /// `DEFAULT_DEVELOPERS_POLL_INTERVAL`.
    pub poll_interval: Option<String>,
}

/// A published developer set (the value of `developers.parameter`): only
/// `[[developer]]` tables.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileDeveloperSet {
    /// `[[developer]]` entries, in order.
    #[serde(default)]
    pub developer: Vec<FileDeveloper>,
}

/// One `[[developer]]` entry; unset limits fall back to `[containers]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileDeveloper {
    /// `name`: 1-32 of a-z 0-9 '-', starting with a letter. Required.
    pub name: String,
    /// `port`: host port, 1024..=65535. Default: `containers.base_port` + position.
    pub port: Option<u32>,
    /// `cpus`: CPU limit. Default: `containers.cpus`.
    pub cpus: Option<f64>,
    /// `memory`: a size. Default: `containers.memory`.
    pub memory: Option<String>,
    /// `memory_reservation`: a size. Default: `containers.memory_reservation`, capped
    /// at this entry's `memory`.
    pub memory_reservation: Option<String>,
}

/// `[secrets]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileSecrets {
    /// `secrets.password_name`: template with `{developer}` (and optionally
    /// `{project}`). Default `DEFAULT_PASSWORD_NAME`.
    pub password_name: Option<String>,
    /// `secrets.claude_api_key_name`: template like `password_name`, and different
    /// from it. Default `DEFAULT_CLAUDE_API_KEY_NAME`.
    pub claude_api_key_name: Option<String>,
    /// `secrets.poll_interval`: a duration, at least 1s. Default
    /// `DEFAULT_POLL_INTERVAL`.
    pub poll_interval: Option<String>,
    /// `secrets.apply`: `immediate` or `when-idle`. Default `DEFAULT_APPLY`.
    pub apply: Option<ApplyPolicy>,
    /// `secrets.max_delay`: a duration. Default `DEFAULT_MAX_DELAY`.
    pub max_delay: Option<String>,
}

/// `[rollout]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRollout {
    /// `rollout.strategy`: `one-at-a-time` or `all-at-once`. Default `DEFAULT_ROLLOUT_STRATEGY`.
    pub strategy: Option<RolloutStrategy>,
    /// `rollout.apply`: `immediate` or `when-idle`. Default `DEFAULT_ROLLOUT_APPLY`.
    pub apply: Option<ApplyPolicy>,
    /// `rollout.max_delay`: a duration. Default `DEFAULT_ROLLOUT_MAX_DELAY`.
    pub max_delay: Option<String>,
    /// `rollout.health_timeout`: a duration, at least 10s. Default
    /// `DEFAULT_ROLLOUT_HEALTH_TIMEOUT`.
    pub health_timeout: Option<String>,
}

/// `[metrics]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileMetrics {
    /// `metrics.enabled`. Default `DEFAULT_METRICS_ENABLED`.
    pub enabled: Option<bool>,
    /// `metrics.namespace`: 1-255 characters, not `AWS/...`. Default
    /// `DEFAULT_METRICS_NAMESPACE`.
    pub namespace: Option<String>,
    /// `metrics.interval`: a duration, at least 1s. Default `DEFAULT_METRICS_INTERVAL`.
    pub interval: Option<String>,
}

/// `[logs]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLogs {
    /// `logs.enabled`. Default `DEFAULT_LOGS_ENABLED`.
    pub enabled: Option<bool>,
    /// `logs.group`: template with `{developer}`. Default `DEFAULT_LOG_GROUP`.
    pub group: Option<String>,
    /// `logs.agent_group`: template with at most `{project}`; "" turns agent log
    /// shipping off. Default `DEFAULT_AGENT_LOG_GROUP`.
    pub agent_group: Option<String>,
    /// `logs.retention_days`: a value CloudWatch Logs accepts. Default
    /// `DEFAULT_RETENTION_DAYS`.
    pub retention_days: Option<u32>,
    /// `logs.host`: ship the host's journal entries. Default `DEFAULT_HOST_LOGS`.
    pub host: Option<bool>,
    /// `logs.system_group`: template with at most `{project}`; "" turns it off.
    /// Default `DEFAULT_SYSTEM_LOG_GROUP`.
    pub system_group: Option<String>,
    /// `logs.docker_group`: template with at most `{project}`; "" turns it off.
    /// Default `DEFAULT_DOCKER_LOG_GROUP`.
    pub docker_group: Option<String>,
    /// `logs.hold_rotated_files`: 0..=100. Default `DEFAULT_HOLD_ROTATED_FILES`.
    pub hold_rotated_files: Option<u32>,
    /// `logs.journal`: absolute path of a journal file or directory to read
    /// instead of the host's journal. Default: the host's journal.
    pub journal: Option<PathBuf>,
}

/// `[agent]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAgent {
    /// `agent.state_dir`: absolute path. Default `DEFAULT_STATE_DIR`.
    pub state_dir: Option<PathBuf>,
    /// `agent.runtime_dir`: absolute path. Default `DEFAULT_RUNTIME_DIR`.
    pub runtime_dir: Option<PathBuf>,
    /// `agent.socket`: absolute path. Default `DEFAULT_SOCKET`.
    pub socket: Option<PathBuf>,
    /// `agent.socket_group`: group name. Default `DEFAULT_SOCKET_GROUP`.
    pub socket_group: Option<String>,
    /// `agent.log_format`: `text` or `json`. Default `DEFAULT_LOG_FORMAT`.
    pub log_format: Option<LogFormat>,
    /// `agent.log_level`: a tracing filter ("info", "info,csagent=debug"). Default
    /// `DEFAULT_LOG_LEVEL`.
    pub log_level: Option<String>,
}

/// Parses TOML text into the file layer (or a developer set); errors name the key
/// or the line.
pub(super) fn parse_file<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &Path,
) -> Result<T, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| syntax_error(path, text, &e))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = match e.path().to_string() {
            // serde_path_to_error says "." for the root table.
            p if p == "." => "(top level)".to_string(),
            p => p,
        };
        let inner = e.into_inner();
        let line = inner
            .span()
            .map(|s| format!(" (line {})", line_of(text, s.start)))
            .unwrap_or_default();
        ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            message: format!("{}{line}", one_line(inner.message())),
        }
    })
}

fn syntax_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
    ConfigError::Invalid {
        path: path.to_path_buf(),
        key: format!("line {line}"),
        message: format!("invalid TOML: {}", one_line(e.message())),
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map(|t| t.bytes().filter(|b| *b == b'\n').count() + 1)
        .unwrap_or(0)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    #[test]
    fn filesystem_enum_error_names_the_key() {
        let e = Config::from_toml(
            "[volume]\ndevice = \"/dev/x\"\nfilesystem = \"btrfs\"\n",
            Path::new("t.toml"),
        )
        .expect_err("btrfs");
        assert_eq!(e.key(), Some("volume.filesystem"));
        assert!(e.to_string().contains("btrfs"), "{e}");
        assert!(!e.to_string().contains('\n'), "one line: {e}");
    }
}
