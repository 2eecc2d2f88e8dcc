//! `/etc/csagent/config.toml`: what the admin writes, and the validated form the
//! rest of the agent reads.
//!
//! Two layers, as in the Secrets Manager agent: a private `File*` layer that mirrors
//! the TOML (every field optional or defaulted, unknown keys rejected), and a typed
//! [`Config`] produced by [`Config::from_toml`] that has passed every range and
//! cross-field check. Every error names the key at fault, so `check-config` can print
//! one line an admin can act on.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

/// Where the agent looks for its config when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/csagent/config.toml";

/// Most developers one host serves; t3.2xlarge has 8 vCPUs and 32 GiB.
pub const MAX_DEVELOPERS: usize = csagent_contract::MAX_DEVELOPERS as usize;

/// Log-group retention values CloudWatch Logs accepts (PutRetentionPolicy).
const RETENTION_DAYS: &[u32] = &csagent_contract::LOG_RETENTION_DAYS;

/// A config problem, always tied to the key that caused it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// The key the error is about, if any (used by tests and `check-config --json`).
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Invalid { key, .. } => Some(key),
        }
    }
}

// ---------------------------------------------------------------------------
// File layer: mirrors the TOML exactly.
// ---------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    project: Option<String>,
    region: Option<String>,
    instance_id: Option<String>,
    #[serde(default)]
    aws: FileAws,
    #[serde(default)]
    volume: FileVolume,
    #[serde(default)]
    containers: FileContainers,
    #[serde(default)]
    developers: FileDevelopers,
    #[serde(default)]
    developer: Vec<FileDeveloper>,
    #[serde(default)]
    secrets: FileSecrets,
    #[serde(default)]
    metrics: FileMetrics,
    #[serde(default)]
    logs: FileLogs,
    #[serde(default)]
    agent: FileAgent,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAws {
    endpoint_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileVolume {
    volume_id: Option<String>,
    device: Option<PathBuf>,
    mount_point: Option<PathBuf>,
    filesystem: Option<Filesystem>,
    label: Option<String>,
    wait_timeout: Option<String>,
    fstab: Option<PathBuf>,
    by_id_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileContainers {
    image: Option<String>,
    pull: Option<PullPolicy>,
    base_port: Option<u32>,
    cpus: Option<f64>,
    memory: Option<String>,
    memory_reservation: Option<String>,
    pids_limit: Option<i64>,
    uid: Option<u32>,
    gid: Option<u32>,
    network: Option<String>,
    subnet: Option<String>,
    log_max_size: Option<String>,
    log_max_files: Option<u32>,
    block_metadata: Option<bool>,
    isolate_host: Option<bool>,
    health_interval: Option<String>,
    health_start_period: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDevelopers {
    count: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDeveloper {
    name: String,
    port: Option<u32>,
    cpus: Option<f64>,
    memory: Option<String>,
    memory_reservation: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSecrets {
    password_name: Option<String>,
    claude_api_key_name: Option<String>,
    poll_interval: Option<String>,
    apply: Option<ApplyPolicy>,
    max_delay: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMetrics {
    enabled: Option<bool>,
    namespace: Option<String>,
    interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLogs {
    enabled: Option<bool>,
    group: Option<String>,
    agent_group: Option<String>,
    retention_days: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAgent {
    state_dir: Option<PathBuf>,
    runtime_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    socket_group: Option<String>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
}

// ---------------------------------------------------------------------------
// Typed layer: what the agent uses.
// ---------------------------------------------------------------------------

/// Filesystem the agent creates on a blank data volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    Ext4,
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
    IfNotPresent,
    Always,
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

/// When a rotated credential is applied to a running container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApplyPolicy {
    /// Recreate the developer's container as soon as the rotation is seen.
    Immediate,
    /// Wait until code-server reports the developer idle, or `max_delay` passed.
    WhenIdle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
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

#[derive(Debug, Clone, Serialize)]
pub struct VolumeConfig {
    pub source: VolumeSource,
    pub mount_point: PathBuf,
    pub filesystem: Filesystem,
    pub label: String,
    #[serde(with = "humantime_serde_compat")]
    pub wait_timeout: Duration,
    /// The fstab the agent keeps its line in (only tests change it).
    pub fstab: PathBuf,
    /// Where stable NVMe names live (only tests change it).
    pub by_id_dir: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContainersConfig {
    pub image: String,
    pub pull: PullPolicy,
    pub base_port: u16,
    pub pids_limit: i64,
    pub uid: u32,
    pub gid: u32,
    /// Name of the dedicated bridge network.
    pub network: String,
    /// Its subnet, so the metadata-blocking firewall rule can match it.
    pub subnet: String,
    pub log_max_size: u64,
    pub log_max_files: u32,
    /// Add the DOCKER-USER rule that drops traffic to 169.254.169.254.
    pub block_metadata: bool,
    /// Add the INPUT rule that stops containers opening connections to the host
    /// (and so to other developers' published ports).
    pub isolate_host: bool,
    /// Docker health check interval (timeout 10s, 3 retries).
    #[serde(with = "humantime_serde_compat")]
    pub health_interval: Duration,
    /// Grace period before failed checks count (code-server's first start is slow).
    #[serde(with = "humantime_serde_compat")]
    pub health_start_period: Duration,
}

/// One developer, with every default resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Developer {
    pub name: String,
    pub port: u16,
    pub cpus: f64,
    pub memory: u64,
    pub memory_reservation: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SecretsConfig {
    pub password_name: String,
    pub claude_api_key_name: String,
    #[serde(with = "humantime_serde_compat")]
    pub poll_interval: Duration,
    pub apply: ApplyPolicy,
    #[serde(with = "humantime_serde_compat")]
    pub max_delay: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetricsConfig {
    pub enabled: bool,
    pub namespace: String,
    #[serde(with = "humantime_serde_compat")]
    pub interval: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogsConfig {
    pub enabled: bool,
    pub group: String,
    /// The agent's own log lines (rendered, `{project}` filled in); None: not shipped.
    pub agent_group: Option<String>,
    pub retention_days: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentConfig {
    pub state_dir: PathBuf,
    /// tmpfs directory for credential files handed to containers.
    pub runtime_dir: PathBuf,
    pub socket: PathBuf,
    /// Group that may use the control socket besides root.
    pub socket_group: String,
    pub log_format: LogFormat,
    pub log_level: String,
}

/// The validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// File it was read from (for messages).
    pub path: PathBuf,
    pub project: String,
    pub region: Option<String>,
    pub instance_id: Option<String>,
    pub endpoint_url: Option<String>,
    pub volume: VolumeConfig,
    pub containers: ContainersConfig,
    pub developers: Vec<Developer>,
    pub secrets: SecretsConfig,
    pub metrics: MetricsConfig,
    pub logs: LogsConfig,
    pub agent: AgentConfig,
}

/// Durations are printed the way they are written ("60s").
mod humantime_serde_compat {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Parses and validates TOML text; `path` is only used in messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file = parse_file(text, path)?;
        Validator { path }.validate(file)
    }

    /// Fills a name template (`{project}/{developer}/password`).
    pub fn render(&self, template: &str, developer: &str) -> String {
        render_template(template, &self.project, developer)
    }

    pub fn developer(&self, name: &str) -> Option<&Developer> {
        self.developers.iter().find(|d| d.name == name)
    }
}

fn render_template(template: &str, project: &str, developer: &str) -> String {
    template
        .replace("{project}", project)
        .replace("{developer}", developer)
}

fn parse_file(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
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

struct Validator<'a> {
    path: &'a Path,
}

impl Validator<'_> {
    fn err(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key: key.into(),
            message: message.into(),
        }
    }

    fn validate(&self, f: FileConfig) -> Result<Config, ConfigError> {
        let project = f
            .project
            .unwrap_or_else(|| "code-server-multi-dev".to_string());
        if !is_name(&project, 1, 64) {
            return Err(self.err(
                "project",
                format!(
                    "{project:?} must be 1-64 characters of a-z, A-Z, 0-9 and '-', starting with a letter"
                ),
            ));
        }
        if let Some(r) = &f.region
            && !(r.len() >= 5
                && r.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
        {
            return Err(self.err(
                "region",
                format!("{r:?} is not an AWS region name (like ap-southeast-7)"),
            ));
        }
        if let Some(i) = &f.instance_id
            && !(i.starts_with("i-") && i.len() > 2 && is_hex(&i[2..]))
        {
            return Err(self.err(
                "instance_id",
                format!("{i:?} is not an EC2 instance id (like i-0123456789abcdef0)"),
            ));
        }
        if let Some(u) = &f.aws.endpoint_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(self.err(
                "aws.endpoint_url",
                format!("{u:?} must start with http:// or https://"),
            ));
        }

        let volume = self.volume(f.volume)?;
        let containers = self.containers(&f.containers)?;
        let developers = self.developers(&f.developers, f.developer, &f.containers, &containers)?;
        let secrets = self.secrets(f.secrets)?;
        let metrics = self.metrics(f.metrics)?;
        let logs = self.logs(f.logs, &project)?;
        let agent = self.agent(f.agent)?;

        Ok(Config {
            path: self.path.to_path_buf(),
            project,
            region: f.region,
            instance_id: f.instance_id,
            endpoint_url: f.aws.endpoint_url,
            volume,
            containers,
            developers,
            secrets,
            metrics,
            logs,
            agent,
        })
    }

    fn volume(&self, v: FileVolume) -> Result<VolumeConfig, ConfigError> {
        let source = match (v.volume_id, v.device) {
            (Some(_), Some(_)) => {
                return Err(self.err("volume", "set volume_id or device, not both"));
            }
            (None, None) => {
                return Err(self.err(
                    "volume",
                    "set volume_id (the EBS volume, e.g. vol-0123456789abcdef0) or device",
                ));
            }
            (Some(id), None) => {
                if !(id.starts_with("vol-") && id.len() >= 12 && is_hex(&id[4..])) {
                    return Err(self.err(
                        "volume.volume_id",
                        format!("{id:?} is not an EBS volume id (like vol-0123456789abcdef0)"),
                    ));
                }
                VolumeSource::VolumeId(id)
            }
            (None, Some(dev)) => {
                self.absolute("volume.device", &dev)?;
                VolumeSource::Device(dev)
            }
        };
        let mount_point = v
            .mount_point
            .unwrap_or_else(|| PathBuf::from("/mnt/ebs-data"));
        self.absolute("volume.mount_point", &mount_point)?;
        if mount_point == Path::new("/") {
            return Err(self.err("volume.mount_point", "must not be / (the root filesystem)"));
        }
        let label = v.label.unwrap_or_else(|| "csagent-data".to_string());
        // ext4 labels hold 16 bytes, xfs labels 12: keep to what both accept.
        if label.is_empty() || label.len() > 12 || !label.is_ascii() || label.contains(' ') {
            return Err(self.err(
                "volume.label",
                format!("{label:?} must be 1-12 ASCII characters without spaces"),
            ));
        }
        let wait_timeout = self.duration(
            "volume.wait_timeout",
            v.wait_timeout.as_deref().unwrap_or("5m"),
        )?;
        let fstab = v.fstab.unwrap_or_else(|| PathBuf::from("/etc/fstab"));
        self.absolute("volume.fstab", &fstab)?;
        let by_id_dir = v
            .by_id_dir
            .unwrap_or_else(|| PathBuf::from("/dev/disk/by-id"));
        self.absolute("volume.by_id_dir", &by_id_dir)?;
        Ok(VolumeConfig {
            source,
            mount_point,
            filesystem: v.filesystem.unwrap_or(Filesystem::Ext4),
            label,
            wait_timeout,
            fstab,
            by_id_dir,
        })
    }

    fn containers(&self, c: &FileContainers) -> Result<ContainersConfig, ConfigError> {
        let image = c
            .image
            .clone()
            .unwrap_or_else(|| "codercom/code-server:4.96.4".to_string());
        if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
            return Err(self.err(
                "containers.image",
                format!("{image:?} is not an image reference"),
            ));
        }
        let base_port = self.port("containers.base_port", c.base_port.unwrap_or(8443))?;
        let pids_limit = c.pids_limit.unwrap_or(2048);
        if !(64..=1_000_000).contains(&pids_limit) {
            return Err(self.err(
                "containers.pids_limit",
                format!("must be 64..=1000000 (got {pids_limit})"),
            ));
        }
        let network = c.network.clone().unwrap_or_else(|| "csagent".to_string());
        if !is_name(&network, 1, 64) {
            return Err(self.err(
                "containers.network",
                format!("{network:?} must be 1-64 characters of a-z, A-Z, 0-9 and '-'"),
            ));
        }
        let subnet = c
            .subnet
            .clone()
            .unwrap_or_else(|| "172.30.0.0/24".to_string());
        parse_cidr(&subnet).ok_or_else(|| {
            self.err(
                "containers.subnet",
                format!("{subnet:?} is not an IPv4 CIDR (like 172.30.0.0/24)"),
            )
        })?;
        let log_max_size = self.size(
            "containers.log_max_size",
            c.log_max_size.as_deref().unwrap_or("20MiB"),
        )?;
        if log_max_size < 1024 * 1024 {
            return Err(self.err("containers.log_max_size", "must be at least 1MiB"));
        }
        let log_max_files = c.log_max_files.unwrap_or(5);
        if !(1..=100).contains(&log_max_files) {
            return Err(self.err(
                "containers.log_max_files",
                format!("must be 1..=100 (got {log_max_files})"),
            ));
        }
        let health_interval = self.duration(
            "containers.health_interval",
            c.health_interval.as_deref().unwrap_or("30s"),
        )?;
        self.at_least("containers.health_interval", health_interval, 1)?;
        let health_start_period = self.duration(
            "containers.health_start_period",
            c.health_start_period.as_deref().unwrap_or("60s"),
        )?;
        Ok(ContainersConfig {
            image,
            pull: c.pull.unwrap_or(PullPolicy::IfNotPresent),
            base_port,
            pids_limit,
            uid: c.uid.unwrap_or(1000),
            gid: c.gid.unwrap_or(1000),
            network,
            subnet,
            log_max_size,
            log_max_files,
            block_metadata: c.block_metadata.unwrap_or(true),
            isolate_host: c.isolate_host.unwrap_or(true),
            health_interval,
            health_start_period,
        })
    }

    fn developers(
        &self,
        d: &FileDevelopers,
        list: Vec<FileDeveloper>,
        c: &FileContainers,
        containers: &ContainersConfig,
    ) -> Result<Vec<Developer>, ConfigError> {
        let cpus = self.cpus("containers.cpus", c.cpus.unwrap_or(1.5))?;
        let memory = self.size("containers.memory", c.memory.as_deref().unwrap_or("4GiB"))?;
        let reservation = self.size(
            "containers.memory_reservation",
            c.memory_reservation.as_deref().unwrap_or("3GiB"),
        )?;
        self.memory_pair("containers", memory, reservation)?;

        let mut out: Vec<Developer> = Vec::new();
        if list.is_empty() {
            let count = d.count.unwrap_or(8);
            if !(1..=MAX_DEVELOPERS as i64).contains(&count) {
                return Err(self.err(
                    "developers.count",
                    format!("must be 1..={MAX_DEVELOPERS} (got {count})"),
                ));
            }
            let last = u32::from(containers.base_port) + count as u32 - 1;
            if last > 65535 {
                return Err(self.err(
                    "developers.count",
                    format!(
                        "{count} developers from containers.base_port {} would need port {last}, past 65535",
                        containers.base_port
                    ),
                ));
            }
            for i in 1..=count as u32 {
                out.push(Developer {
                    name: format!("dev{i}"),
                    port: (u32::from(containers.base_port) + i - 1) as u16,
                    cpus,
                    memory,
                    memory_reservation: reservation,
                });
            }
            return Ok(out);
        }

        if d.count.is_some() {
            return Err(self.err(
                "developers.count",
                "set developers.count or list [[developer]] entries, not both",
            ));
        }
        if list.len() > MAX_DEVELOPERS {
            return Err(self.err(
                "developer",
                format!(
                    "at most {MAX_DEVELOPERS} [[developer]] entries (got {})",
                    list.len()
                ),
            ));
        }
        let mut ports: BTreeMap<u16, String> = BTreeMap::new();
        for (i, entry) in list.into_iter().enumerate() {
            let key = format!("developer[{}]", i + 1);
            if !is_developer_name(&entry.name) {
                return Err(self.err(
                    format!("{key}.name"),
                    format!(
                        "{:?} must be 1-32 characters of a-z, 0-9 and '-', starting with a letter (it names the container, directories and secrets)",
                        entry.name
                    ),
                ));
            }
            if let Some(prev) = out.iter().find(|o| o.name == entry.name) {
                return Err(self.err(
                    format!("{key}.name"),
                    format!("{:?} is listed twice (port {})", prev.name, prev.port),
                ));
            }
            let port = match entry.port {
                Some(p) => self.port(&format!("{key}.port"), p)?,
                None => {
                    let p = u32::from(containers.base_port) + i as u32;
                    self.port(&format!("{key}.port"), p)?
                }
            };
            if let Some(owner) = ports.get(&port) {
                return Err(self.err(
                    format!("{key}.port"),
                    format!("{port} is already used by {owner}"),
                ));
            }
            ports.insert(port, entry.name.clone());
            let dev_cpus = match entry.cpus {
                Some(v) => self.cpus(&format!("{key}.cpus"), v)?,
                None => cpus,
            };
            let dev_memory = match &entry.memory {
                Some(v) => self.size(&format!("{key}.memory"), v)?,
                None => memory,
            };
            let dev_reservation = match &entry.memory_reservation {
                Some(v) => self.size(&format!("{key}.memory_reservation"), v)?,
                // A raised limit keeps the default reservation unless it would exceed it.
                None => reservation.min(dev_memory),
            };
            self.memory_pair(&key, dev_memory, dev_reservation)?;
            out.push(Developer {
                name: entry.name,
                port,
                cpus: dev_cpus,
                memory: dev_memory,
                memory_reservation: dev_reservation,
            });
        }
        Ok(out)
    }

    fn secrets(&self, s: FileSecrets) -> Result<SecretsConfig, ConfigError> {
        let password_name = s
            .password_name
            .unwrap_or_else(|| "{project}/{developer}/password".to_string());
        let claude_api_key_name = s
            .claude_api_key_name
            .unwrap_or_else(|| "{project}/{developer}/claude-api-key".to_string());
        for (key, t) in [
            ("secrets.password_name", &password_name),
            ("secrets.claude_api_key_name", &claude_api_key_name),
        ] {
            self.template(key, t)?;
        }
        if password_name == claude_api_key_name {
            return Err(self.err(
                "secrets.claude_api_key_name",
                "must differ from secrets.password_name",
            ));
        }
        let poll_interval = self.duration(
            "secrets.poll_interval",
            s.poll_interval.as_deref().unwrap_or("60s"),
        )?;
        self.at_least("secrets.poll_interval", poll_interval, 1)?;
        let max_delay =
            self.duration("secrets.max_delay", s.max_delay.as_deref().unwrap_or("8h"))?;
        Ok(SecretsConfig {
            password_name,
            claude_api_key_name,
            poll_interval,
            apply: s.apply.unwrap_or(ApplyPolicy::Immediate),
            max_delay,
        })
    }

    fn metrics(&self, m: FileMetrics) -> Result<MetricsConfig, ConfigError> {
        let namespace = m.namespace.unwrap_or_else(|| "CodeServer".to_string());
        if namespace.is_empty() || namespace.len() > 255 || namespace.starts_with("AWS/") {
            return Err(self.err(
                "metrics.namespace",
                format!("{namespace:?} must be 1-255 characters and not start with AWS/"),
            ));
        }
        let interval = self.duration("metrics.interval", m.interval.as_deref().unwrap_or("60s"))?;
        self.at_least("metrics.interval", interval, 1)?;
        Ok(MetricsConfig {
            enabled: m.enabled.unwrap_or(true),
            namespace,
            interval,
        })
    }

    fn logs(&self, l: FileLogs, project: &str) -> Result<LogsConfig, ConfigError> {
        let group = l
            .group
            .unwrap_or_else(|| "/aws/ec2/{project}/containers/{developer}".to_string());
        self.template("logs.group", &group)?;
        if let Some(days) = l.retention_days
            && !RETENTION_DAYS.contains(&days)
        {
            return Err(self.err(
                "logs.retention_days",
                format!("{days} is not a value CloudWatch Logs accepts ({RETENTION_DAYS:?})"),
            ));
        }
        let agent_group = l
            .agent_group
            .unwrap_or_else(|| "/aws/ec2/{project}/agent".to_string());
        let agent_group = match agent_group.as_str() {
            "" => None,
            t => {
                let name = t.replace("{project}", project);
                let ok_chars = name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-/#".contains(c));
                if !(1..=512).contains(&name.len()) || !ok_chars {
                    return Err(self.err(
                        "logs.agent_group",
                        format!(
                            "{t:?} is not a CloudWatch Logs group name (1-512 of A-Z a-z 0-9 . _ - / #; \
                             the only placeholder is {{project}}; \"\" turns agent log shipping off)"
                        ),
                    ));
                }
                Some(name)
            }
        };
        Ok(LogsConfig {
            enabled: l.enabled.unwrap_or(true),
            group,
            agent_group,
            retention_days: Some(l.retention_days.unwrap_or(30)),
        })
    }

    fn agent(&self, a: FileAgent) -> Result<AgentConfig, ConfigError> {
        let state_dir = a
            .state_dir
            .unwrap_or_else(|| PathBuf::from("/var/lib/csagent"));
        self.absolute("agent.state_dir", &state_dir)?;
        let runtime_dir = a
            .runtime_dir
            .unwrap_or_else(|| PathBuf::from("/run/csagent"));
        self.absolute("agent.runtime_dir", &runtime_dir)?;
        let socket = a
            .socket
            .unwrap_or_else(|| PathBuf::from("/run/csagent/csagent.sock"));
        self.absolute("agent.socket", &socket)?;
        let log_level = a.log_level.unwrap_or_else(|| "info".to_string());
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            return Err(self.err(
                "agent.log_level",
                format!("{log_level:?} is not a level or filter (error, warn, info, debug, trace, or like info,csagent=debug)"),
            ));
        }
        Ok(AgentConfig {
            state_dir,
            runtime_dir,
            socket,
            socket_group: a.socket_group.unwrap_or_else(|| "csagent".to_string()),
            log_format: a.log_format.unwrap_or(LogFormat::Text),
            log_level,
        })
    }

    // --- small checks, each naming its key ---

    fn absolute(&self, key: &str, p: &Path) -> Result<(), ConfigError> {
        if p.is_absolute() {
            Ok(())
        } else {
            Err(self.err(key, format!("{} must be an absolute path", p.display())))
        }
    }

    fn duration(&self, key: &str, s: &str) -> Result<Duration, ConfigError> {
        humantime::parse_duration(s).map_err(|e| {
            self.err(
                key,
                format!("{s:?} is not a duration like \"60s\" or \"5m\": {e}"),
            )
        })
    }

    fn at_least(&self, key: &str, d: Duration, secs: u64) -> Result<(), ConfigError> {
        if d < Duration::from_secs(secs) {
            Err(self.err(key, format!("must be at least {secs}s")))
        } else {
            Ok(())
        }
    }

    fn size(&self, key: &str, s: &str) -> Result<u64, ConfigError> {
        // Require a unit: a bare "4" is almost certainly a mistake for 4GiB.
        let has_unit = s
            .trim()
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphabetic());
        let parsed = if has_unit {
            s.trim().parse::<ByteSize>().ok()
        } else {
            None
        };
        match parsed {
            Some(b) if b.as_u64() > 0 => Ok(b.as_u64()),
            _ => Err(self.err(
                key,
                format!("{s:?} is not a size like \"4GiB\" or \"512MiB\""),
            )),
        }
    }

    fn cpus(&self, key: &str, v: f64) -> Result<f64, ConfigError> {
        if v.is_finite() && (0.01..=64.0).contains(&v) {
            Ok(v)
        } else {
            Err(self.err(key, format!("must be 0.01..=64 CPUs (got {v})")))
        }
    }

    fn port(&self, key: &str, p: u32) -> Result<u16, ConfigError> {
        if (1024..=65535).contains(&p) {
            Ok(p as u16)
        } else {
            Err(self.err(key, format!("must be 1024..=65535 (got {p})")))
        }
    }

    fn memory_pair(&self, table: &str, memory: u64, reservation: u64) -> Result<(), ConfigError> {
        // Docker refuses limits under 6 MiB; code-server needs far more to start at all.
        if memory < 256 * 1024 * 1024 {
            return Err(self.err(
                format!("{table}.memory"),
                format!("{} is below the 256MiB code-server needs", ByteSize(memory)),
            ));
        }
        if reservation > memory {
            return Err(self.err(
                format!("{table}.memory_reservation"),
                format!(
                    "{} is above {table}.memory {}",
                    ByteSize(reservation),
                    ByteSize(memory)
                ),
            ));
        }
        Ok(())
    }

    fn template(&self, key: &str, t: &str) -> Result<(), ConfigError> {
        if !t.contains("{developer}") {
            return Err(self.err(
                key,
                format!("{t:?} must contain {{developer}} so each developer gets their own"),
            ));
        }
        let rest = t.replace("{project}", "").replace("{developer}", "");
        if rest.contains('{') || rest.contains('}') {
            return Err(self.err(
                key,
                format!("{t:?} may use only the placeholders {{project}} and {{developer}}"),
            ));
        }
        Ok(())
    }
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit())
}

fn is_name(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Developer names become container names, directory names, secret names and log
/// group names, so they are kept to what all of those accept.
pub fn is_developer_name(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Parses "a.b.c.d/n".
pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    (len <= 32).then_some((ip, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "[volume]\ndevice = \"/dev/loop7\"\n";

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::from_toml(&format!("{extra}\n{MIN}"), Path::new("test.toml"))
    }

    fn key_of(extra: &str) -> String {
        match parse(extra) {
            Ok(_) => panic!("expected an error for {extra:?}"),
            Err(e) => e.key().unwrap_or("").to_string(),
        }
    }

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
        assert_eq!(c.agent.socket, Path::new("/run/csagent/csagent.sock"));
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(key_of("[developers]\ncount = 0\n"), "developers.count");
        assert_eq!(key_of("[developers]\ncount = 65\n"), "developers.count");
        assert_eq!(key_of("bogus = 1\n"), "bogus");
        assert_eq!(key_of("[containers]\nbogus = 1\n"), "containers.bogus");
        assert_eq!(
            key_of("[containers]\nmemory = \"4 lots\"\n"),
            "containers.memory"
        );
        assert_eq!(
            key_of("[containers]\nmemory = \"4\"\n"),
            "containers.memory"
        );
        assert_eq!(key_of("[containers]\ncpus = 0.0\n"), "containers.cpus");
        assert_eq!(
            key_of("[containers]\npull = \"sometimes\"\n"),
            "containers.pull"
        );
        assert_eq!(
            key_of("[containers]\nmemory_reservation = \"8GiB\"\n"),
            "containers.memory_reservation"
        );
        assert_eq!(
            key_of("[secrets]\npoll_interval = \"soon\"\n"),
            "secrets.poll_interval"
        );
        assert_eq!(
            key_of("[secrets]\npassword_name = \"shared\"\n"),
            "secrets.password_name"
        );
        assert_eq!(
            key_of("[logs]\nretention_days = 31\n"),
            "logs.retention_days"
        );
        assert_eq!(
            key_of("[logs]\nagent_group = \"/x/{developer}\"\n"),
            "logs.agent_group"
        );
        assert_eq!(key_of("[agent]\nsocket = \"rel.sock\"\n"), "agent.socket");
        assert_eq!(key_of("[volume]\nfilesystem = \"xfs\"\n"), "line 4");
    }

    #[test]
    fn volume_id_and_device_are_exclusive() {
        let e = Config::from_toml(
            "[volume]\nvolume_id = \"vol-0123456789abcdef0\"\ndevice = \"/dev/xvdf\"\n",
            Path::new("t.toml"),
        )
        .expect_err("both set");
        assert_eq!(
            e.to_string(),
            "t.toml: volume: set volume_id or device, not both"
        );
        let e = Config::from_toml("", Path::new("t.toml")).expect_err("neither set");
        assert_eq!(e.key(), Some("volume"));
        let e = Config::from_toml("[volume]\nvolume_id = \"vol-xyz\"\n", Path::new("t.toml"))
            .expect_err("bad id");
        assert_eq!(e.key(), Some("volume.volume_id"));
    }

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

    #[test]
    fn explicit_developers_with_port_clash() {
        let e = parse(
            "[[developer]]\nname = \"dev1\"\nport = 8443\n[[developer]]\nname = \"dev2\"\nport = 8443\n",
        )
        .expect_err("clash");
        assert_eq!(
            e.to_string(),
            "test.toml: developer[2].port: 8443 is already used by dev1"
        );
    }

    #[test]
    fn explicit_developers_with_overrides() {
        let c = parse(
            "[[developer]]\nname = \"alice\"\nport = 9000\ncpus = 2.0\nmemory = \"6GiB\"\n[[developer]]\nname = \"bob\"\n",
        )
        .expect("valid");
        assert_eq!(c.developers.len(), 2);
        assert_eq!(c.developers[0].port, 9000);
        assert_eq!(c.developers[0].cpus, 2.0);
        assert_eq!(c.developers[0].memory, 6 * 1024 * 1024 * 1024);
        assert_eq!(c.developers[1].port, 8444, "defaults to base_port + index");
        assert_eq!(c.developers[1].cpus, 1.5);
        assert_eq!(
            key_of("[[developer]]\nname = \"Bad Name\"\n"),
            "developer[1].name"
        );
        assert_eq!(
            key_of("[developers]\ncount = 2\n[[developer]]\nname = \"a\"\n"),
            "developers.count"
        );
        assert_eq!(
            key_of(
                "[[developer]]\nname = \"a\"\nmemory = \"1GiB\"\nmemory_reservation = \"2GiB\"\n"
            ),
            "developer[1].memory_reservation"
        );
    }

    #[test]
    fn count_near_top_of_port_range() {
        assert_eq!(
            key_of("[containers]\nbase_port = 65530\n[developers]\ncount = 8\n"),
            "developers.count"
        );
    }
}
