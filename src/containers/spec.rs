//! The desired container for one developer, its Docker create body, and the hash
//! that tells the reconciler whether a running container still matches.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, HealthConfig, HostConfig, HostConfigLogConfig, Mount, MountType,
    PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{Config, Developer};
use crate::secrets::CONTAINER_KEY_DIR;

// The label keys are the contract's (`csagent status` and the log shipper filter on them too).
/// Scopes ownership: an agent only removes managed containers of its own project.
pub use csagent_contract::labels::PROJECT as LABEL_PROJECT;
pub use csagent_contract::labels::{
    DEVELOPER as LABEL_DEVELOPER, MANAGED as LABEL_MANAGED,
    PASSWORD_VERSION as LABEL_PASSWORD_VERSION, SPEC_HASH as LABEL_SPEC_HASH,
};

/// code-server's port inside the container.
pub const CONTAINER_PORT: &str = "8080/tcp";
/// The image user's home: the developer's `home` directory on the volume is
/// mounted over it whole.
pub const CONTAINER_HOME: &str = "/home/coder";

pub fn container_name(developer: &str) -> String {
    format!("code-server-{developer}")
}

/// Credentials as the container receives them: a hash, never the plaintext.
#[derive(Debug, Clone)]
pub struct ContainerCredentials {
    /// argon2id PHC string for `HASHED_PASSWORD`.
    pub hashed_password: String,
    /// Secrets Manager version of the password it was made from.
    pub password_version: String,
    /// Host directory holding the Claude key file (tmpfs), bind-mounted read-only.
    /// The key itself is not part of the container: a new key is a new file in
    /// this directory, read by the running container (see `secrets::credentials`).
    pub key_dir: PathBuf,
}

/// One bind mount: a host directory at a path in the container. Sent as a
/// HostConfig `Mounts` entry, not `Binds`: for a missing source Docker refuses to
/// start the container instead of creating an empty root-owned directory there
/// (on the root disk, when the data volume is not mounted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BindMount {
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

impl BindMount {
    fn to_docker(&self) -> Mount {
        Mount {
            target: Some(self.target.clone()),
            source: Some(self.source.clone()),
            typ: Some(MountType::BIND),
            read_only: Some(self.read_only),
            ..Default::default()
        }
    }
}

/// What the image itself would run, read from its config.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ImageInfo {
    pub id: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

/// Everything that decides what a developer's container looks like. Its hash is
/// stored as a label; a difference means "recreate". The password *hash* is not
/// part of it (its salt changes each time); the password *version* is. The Claude
/// key version is not: a rotated key reaches the running container by its file.
#[derive(Debug, Clone, Serialize)]
pub struct DesiredSpec {
    pub project: String,
    pub developer: String,
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub port: u16,
    pub nano_cpus: i64,
    pub memory: i64,
    pub memory_reservation: i64,
    pub pids_limit: i64,
    pub network: String,
    pub mounts: Vec<BindMount>,
    /// Docker's `no-new-privileges` (off only with `containers.sudo`).
    pub no_new_privileges: bool,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub health_interval_ns: i64,
    pub health_start_period_ns: i64,
    pub log_max_size: u64,
    pub log_max_files: u32,
    pub password_version: String,
}

impl DesiredSpec {
    pub fn new(
        config: &Config,
        dev: &Developer,
        image: &ImageInfo,
        creds: &ContainerCredentials,
    ) -> DesiredSpec {
        let home = crate::volume::home_dir(&config.volume.mount_point, &dev.name);
        let mounts = vec![
            BindMount {
                source: home.display().to_string(),
                target: CONTAINER_HOME.to_string(),
                read_only: false,
            },
            BindMount {
                source: creds.key_dir.display().to_string(),
                target: CONTAINER_KEY_DIR.to_string(),
                read_only: true,
            },
        ];
        // The image's own entrypoint and cmd (the Claude key is read from its file
        // by Claude Code's apiKeyHelper); with a disk quota, run through
        // `container-init`, which keeps files in their quota.
        let mut mounts = mounts;
        let entrypoint = if super::init::wraps(config) {
            mounts.push(BindMount {
                source: config.containers.init_binary.display().to_string(),
                target: super::init::CONTAINER_INIT.to_string(),
                read_only: true,
            });
            super::init::wrap(&image.entrypoint)
        } else {
            image.entrypoint.clone()
        };
        DesiredSpec {
            project: config.project.clone(),
            developer: dev.name.clone(),
            name: container_name(&dev.name),
            image: config.containers.image.clone(),
            image_id: image.id.clone(),
            port: dev.port,
            nano_cpus: (dev.cpus * 1e9).round() as i64,
            memory: dev.memory as i64,
            memory_reservation: dev.memory_reservation as i64,
            pids_limit: config.containers.pids_limit,
            network: config.containers.network.clone(),
            mounts,
            no_new_privileges: !config.containers.sudo,
            entrypoint,
            cmd: image.cmd.clone(),
            health_interval_ns: nanos(config.containers.health_interval),
            health_start_period_ns: nanos(config.containers.health_start_period),
            log_max_size: config.containers.log_max_size,
            log_max_files: config.containers.log_max_files,
            password_version: creds.password_version.clone(),
        }
    }

    /// Stable hash of the whole spec (first 16 bytes of SHA-256, hex).
    pub fn hash(&self) -> String {
        // serde_json of a struct is deterministic: fields in declaration order.
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(&Sha256::digest(&json)[..16])
    }

    pub fn labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_DEVELOPER.to_string(), self.developer.clone()),
            (LABEL_PROJECT.to_string(), self.project.clone()),
            (LABEL_SPEC_HASH.to_string(), self.hash()),
            (
                LABEL_PASSWORD_VERSION.to_string(),
                self.password_version.clone(),
            ),
        ])
    }

    /// The create body. `hashed_password` goes in the environment: code-server
    /// reads it there, and it is a salted argon2id hash, not the password.
    pub fn create_body(&self, hashed_password: &str) -> ContainerCreateBody {
        let port_bindings = HashMap::from([(
            CONTAINER_PORT.to_string(),
            Some(vec![PortBinding {
                host_ip: Some("0.0.0.0".to_string()),
                host_port: Some(self.port.to_string()),
            }]),
        )]);
        let host_config = HostConfig {
            mounts: Some(self.mounts.iter().map(BindMount::to_docker).collect()),
            port_bindings: Some(port_bindings),
            nano_cpus: Some(self.nano_cpus),
            memory: Some(self.memory),
            memory_reservation: Some(self.memory_reservation),
            pids_limit: Some(self.pids_limit),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            security_opt: Some(if self.no_new_privileges {
                vec!["no-new-privileges:true".to_string()]
            } else {
                Vec::new()
            }),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".to_string()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), self.log_max_size.to_string()),
                    ("max-file".to_string(), self.log_max_files.to_string()),
                ])),
            }),
            network_mode: Some(self.network.clone()),
            init: Some(false),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(self.image.clone()),
            entrypoint: Some(self.entrypoint.clone()),
            cmd: Some(self.cmd.clone()),
            env: Some(vec![format!("HASHED_PASSWORD={hashed_password}")]),
            exposed_ports: Some(vec![CONTAINER_PORT.to_string()]),
            labels: Some(self.labels()),
            healthcheck: Some(HealthConfig {
                test: Some(vec![
                    "CMD".to_string(),
                    "curl".to_string(),
                    "-fsS".to_string(),
                    "-o".to_string(),
                    "/dev/null".to_string(),
                    "http://localhost:8080/healthz".to_string(),
                ]),
                interval: Some(self.health_interval_ns),
                timeout: Some(nanos(Duration::from_secs(10))),
                retries: Some(3),
                start_period: Some(self.health_start_period_ns),
                start_interval: None,
            }),
            host_config: Some(host_config),
            ..Default::default()
        }
    }
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Fixtures the reconciler's plan tests share.
#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::path::Path;

    pub(crate) fn config(extra: &str) -> Config {
        Config::from_toml(
            &format!("[volume]\ndevice = \"/dev/x\"\nmount_point = \"/data\"\n{extra}"),
            Path::new("t.toml"),
        )
        .expect("valid")
    }

    pub(crate) fn creds(version: &str) -> ContainerCredentials {
        ContainerCredentials {
            hashed_password: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            password_version: version.into(),
            key_dir: PathBuf::from("/run/csagent/dev1"),
        }
    }

    pub(crate) fn image() -> ImageInfo {
        ImageInfo {
            id: "sha256:abc".into(),
            entrypoint: vec![
                "/usr/bin/entrypoint.sh".into(),
                "--bind-addr".into(),
                "0.0.0.0:8080".into(),
                ".".into(),
            ],
            cmd: vec![],
        }
    }

    #[test]
    fn spec_carries_limits_binds_and_labels() {
        let c = config("");
        let spec = DesiredSpec::new(&c, &c.developers[0], &image(), &creds("v1"));
        assert_eq!(spec.name, "code-server-dev1");
        assert_eq!(spec.nano_cpus, 1_500_000_000);
        assert_eq!(spec.memory, 4 << 30);
        assert_eq!(spec.memory_reservation, 3 << 30);
        let home = BindMount {
            source: "/data/dev1/home".into(),
            target: "/home/coder".into(),
            read_only: false,
        };
        let keys = BindMount {
            source: "/run/csagent/dev1".into(),
            target: "/run/csagent".into(),
            read_only: true,
        };
        assert_eq!(spec.mounts, [home, keys]);
        assert!(spec.no_new_privileges);
        assert_eq!(
            spec.entrypoint,
            image().entrypoint,
            "the image's own entrypoint"
        );
        let body = spec.create_body("$argon2id$hash");
        let labels = body.labels.clone().unwrap_or_default();
        assert_eq!(labels.get(LABEL_MANAGED).map(String::as_str), Some("true"));
        assert_eq!(
            labels.get(LABEL_DEVELOPER).map(String::as_str),
            Some("dev1")
        );
        assert_eq!(labels.get(LABEL_SPEC_HASH), Some(&spec.hash()));
        let hc = body.host_config.unwrap_or_default();
        assert_eq!(hc.binds, None, "bind mounts go in Mounts, never Binds");
        let mounts = hc.mounts.clone().unwrap_or_default();
        assert_eq!(mounts.len(), 2);
        assert!(mounts.iter().all(|m| m.typ == Some(MountType::BIND)));
        assert_eq!(mounts[0].source.as_deref(), Some("/data/dev1/home"));
        assert_eq!(mounts[0].target.as_deref(), Some("/home/coder"));
        assert_eq!(mounts[1].read_only, Some(true));
        assert_eq!(
            hc.security_opt.clone().unwrap_or_default(),
            ["no-new-privileges:true"]
        );
        assert_eq!(
            hc.restart_policy.and_then(|r| r.name),
            Some(RestartPolicyNameEnum::UNLESS_STOPPED)
        );
        assert_eq!(body.healthcheck.and_then(|h| h.retries), Some(3));
    }

    #[test]
    fn hash_changes_with_what_matters_only() {
        let c = config("");
        let a = DesiredSpec::new(&c, &c.developers[0], &image(), &creds("v1"));
        let same = DesiredSpec::new(&c, &c.developers[0], &image(), &creds("v1"));
        assert_eq!(a.hash(), same.hash(), "deterministic");
        let rotated = DesiredSpec::new(&c, &c.developers[0], &image(), &creds("v2"));
        assert_ne!(a.hash(), rotated.hash(), "a new password version recreates");
        let mut dev = c.developers[0].clone();
        dev.memory = 6 << 30;
        let bigger = DesiredSpec::new(&c, &dev, &image(), &creds("v1"));
        assert_ne!(a.hash(), bigger.hash(), "a limit change recreates");
        let other = DesiredSpec::new(&c, &c.developers[1], &image(), &creds("v1"));
        assert_ne!(a.hash(), other.hash());
    }

    #[test]
    fn a_disk_quota_runs_the_image_entrypoint_through_container_init() {
        let mut c = config("[containers]\ndisk_quota = \"50GiB\"\n");
        c.containers.init_binary = PathBuf::from("/usr/bin/csagent");
        let spec = DesiredSpec::new(&c, &c.developers[0], &image(), &creds("v1"));
        assert_eq!(
            spec.entrypoint,
            super::super::init::wrap(&image().entrypoint),
            "the image's entrypoint, after container-init"
        );
        assert_eq!(
            spec.entrypoint[..3],
            ["/run/csagent-init", "container-init", "--"]
        );
        let init = BindMount {
            source: "/usr/bin/csagent".into(),
            target: "/run/csagent-init".into(),
            read_only: true,
        };
        assert_eq!(spec.mounts.last(), Some(&init));
        let body = spec.create_body("h");
        assert_eq!(body.entrypoint, Some(spec.entrypoint.clone()));
        let plain = config("");
        let without = DesiredSpec::new(&plain, &plain.developers[0], &image(), &creds("v1"));
        assert_eq!(without.entrypoint, image().entrypoint);
        assert_eq!(without.mounts.len(), 2);
        assert_ne!(
            spec.hash(),
            without.hash(),
            "turning the quota on recreates"
        );

        // With sudo the filter cannot be installed without breaking sudo, and a
        // developer who can be root could change project ids anyway.
        let sudo = config("[containers]\ndisk_quota = \"50GiB\"\nsudo = true\n");
        let spec = DesiredSpec::new(&sudo, &sudo.developers[0], &image(), &creds("v1"));
        assert_eq!(spec.entrypoint, image().entrypoint);
    }

    #[test]
    fn sudo_drops_no_new_privileges_and_recreates() {
        let c = config("[containers]\nsudo = true\n");
        let spec = DesiredSpec::new(&c, &c.developers[0], &image(), &creds("v1"));
        assert!(!spec.no_new_privileges);
        let hc = spec.create_body("h").host_config.unwrap_or_default();
        assert_eq!(hc.security_opt, Some(Vec::new()));
        let default = config("");
        let kept = DesiredSpec::new(&default, &default.developers[0], &image(), &creds("v1"));
        assert_ne!(
            spec.hash(),
            kept.hash(),
            "toggling sudo recreates the container"
        );
    }
}
