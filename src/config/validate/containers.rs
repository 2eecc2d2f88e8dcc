//! `[containers]`: image, ports, network and limits every container shares. The
//! per-developer limits (`cpus`, `memory`, `memory_reservation`) are checked in
//! `developers.rs`, beside the entries that override them.

use super::Validator;
use super::checks::{is_name, parse_cidr, parse_cidr_v6};
use crate::config::defaults::{
    DEFAULT_BASE_PORT, DEFAULT_BLOCK_METADATA, DEFAULT_GID, DEFAULT_HEALTH_INTERVAL,
    DEFAULT_HEALTH_START_PERIOD, DEFAULT_IMAGE, DEFAULT_ISOLATE_HOST, DEFAULT_LOG_MAX_FILES,
    DEFAULT_LOG_MAX_SIZE, DEFAULT_NETWORK, DEFAULT_PIDS_LIMIT, DEFAULT_PULL, DEFAULT_REGISTRY_AUTH,
    DEFAULT_STOP_GRACE, DEFAULT_SUBNET, DEFAULT_SUDO, DEFAULT_UID, MAX_STOP_GRACE, MIN_DISK_QUOTA,
};
use crate::config::file::FileContainers;
use crate::config::{ConfigError, ContainersConfig};

impl Validator<'_> {
    pub(super) fn containers(&self, c: &FileContainers) -> Result<ContainersConfig, ConfigError> {
        let image = c.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.to_string());
        if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
            return Err(self.err(
                "containers.image",
                format!("{image:?} is not an image reference"),
            ));
        }
        let base_port = match c.base_port {
            Some(p) => self.port("containers.base_port", p)?,
            None => DEFAULT_BASE_PORT,
        };
        let pids_limit = c.pids_limit.unwrap_or(DEFAULT_PIDS_LIMIT);
        if !(64..=1_000_000).contains(&pids_limit) {
            return Err(self.err(
                "containers.pids_limit",
                format!("must be 64..=1000000 (got {pids_limit})"),
            ));
        }
        let network = c
            .network
            .clone()
            .unwrap_or_else(|| DEFAULT_NETWORK.to_string());
        if !is_name(&network, 1, 64) {
            return Err(self.err(
                "containers.network",
                format!("{network:?} must be 1-64 characters of a-z, A-Z, 0-9 and '-'"),
            ));
        }
        let subnet = c
            .subnet
            .clone()
            .unwrap_or_else(|| DEFAULT_SUBNET.to_string());
        parse_cidr(&subnet).ok_or_else(|| {
            self.err(
                "containers.subnet",
                format!("{subnet:?} is not an IPv4 CIDR (like 172.30.0.0/24)"),
            )
        })?;
        let subnet_v6 = match c.subnet_v6.clone() {
            None => None,
            Some(v6) => match parse_cidr_v6(&v6) {
                Some((_, 48..=124)) => Some(v6),
                _ => {
                    return Err(self.err(
                        "containers.subnet_v6",
                        format!(
                            "{v6:?} is not an IPv6 network /48../124 with its host bits zero (like fd00:c5a::/64)"
                        ),
                    ));
                }
            },
        };
        let log_max_size = self.size_or(
            "containers.log_max_size",
            c.log_max_size.as_deref(),
            DEFAULT_LOG_MAX_SIZE,
        )?;
        if log_max_size < 1024 * 1024 {
            return Err(self.err("containers.log_max_size", "must be at least 1MiB"));
        }
        let log_max_files = c.log_max_files.unwrap_or(DEFAULT_LOG_MAX_FILES);
        if !(1..=100).contains(&log_max_files) {
            return Err(self.err(
                "containers.log_max_files",
                format!("must be 1..=100 (got {log_max_files})"),
            ));
        }
        let health_interval = self.duration_or(
            "containers.health_interval",
            c.health_interval.as_deref(),
            DEFAULT_HEALTH_INTERVAL,
        )?;
        self.at_least("containers.health_interval", health_interval, 1)?;
        let health_start_period = self.duration_or(
            "containers.health_start_period",
            c.health_start_period.as_deref(),
            DEFAULT_HEALTH_START_PERIOD,
        )?;
        let stop_grace = self.duration_or(
            "containers.stop_grace",
            c.stop_grace.as_deref(),
            DEFAULT_STOP_GRACE,
        )?;
        if stop_grace > MAX_STOP_GRACE {
            return Err(self.err(
                "containers.stop_grace",
                format!(
                    "must be at most {} (the Docker call waiting for it times out)",
                    humantime::format_duration(MAX_STOP_GRACE)
                ),
            ));
        }
        let disk_quota = match c.disk_quota.as_deref() {
            None => None,
            Some(s) => {
                let q = self.size("containers.disk_quota", s)?;
                if q < MIN_DISK_QUOTA {
                    return Err(self.err(
                        "containers.disk_quota",
                        format!(
                            "{} is below {}: code-server and its extensions need room",
                            bytesize::ByteSize(q),
                            bytesize::ByteSize(MIN_DISK_QUOTA)
                        ),
                    ));
                }
                Some(q)
            }
        };
        Ok(ContainersConfig {
            image,
            pull: c.pull.unwrap_or(DEFAULT_PULL),
            registry_auth: c.registry_auth.unwrap_or(DEFAULT_REGISTRY_AUTH),
            base_port,
            pids_limit,
            uid: c.uid.unwrap_or(DEFAULT_UID),
            gid: c.gid.unwrap_or(DEFAULT_GID),
            network,
            subnet,
            subnet_v6,
            log_max_size,
            log_max_files,
            disk_quota,
            block_metadata: c.block_metadata.unwrap_or(DEFAULT_BLOCK_METADATA),
            isolate_host: c.isolate_host.unwrap_or(DEFAULT_ISOLATE_HOST),
            init_binary: crate::containers::init::host_binary(),
            sudo: c.sudo.unwrap_or(DEFAULT_SUDO),
            health_interval,
            health_start_period,
            stop_grace,
        })
    }
}
