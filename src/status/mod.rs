//! The status report: one JSON schema (versioned, documented in
//! docs/operations.md) that the daemon builds from what the reconcilers
//! observed ([`report`], a pure function of one observations snapshot), and the
//! table `csagent status` prints from it ([`StatusReport::render`]).

mod render;
mod report;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

pub use render::{human_secs, printable, short_id};
pub use report::{HostMemory, report};

/// Bumped only on incompatible changes; fields are only ever added.
pub const SCHEMA_VERSION: u32 = 1;

/// Disk use above which status warns.
pub const DISK_WARN_PERCENT: f64 = 85.0;
/// Container logs this far behind CloudWatch Logs are worth a warning (a short
/// outage or a burst catches up well within it).
pub const LOG_LAG_WARN_SECS: f64 = 300.0;

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct StatusReport {
    pub schema: u32,
    pub agent: AgentInfo,
    pub instance: InstanceInfo,
    pub volume: VolumeInfo,
    pub host: HostInfo,
    /// Last successful call per AWS service (RFC 3339), keyed by service name.
    pub aws_last_success: BTreeMap<String, Option<String>>,
    pub developers: Vec<DeveloperRow>,
    /// The metrics publisher, when metrics are enabled.
    pub metrics: Option<MetricsInfo>,
    pub warnings: Vec<String>,
    /// True when every developer is running and healthy and nothing warns.
    pub healthy: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct AgentInfo {
    pub version: String,
    pub pid: u32,
    pub uptime_secs: u64,
    /// "starting", "running", "degraded".
    pub phase: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct InstanceInfo {
    pub project: String,
    pub instance_id: String,
    pub region: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct VolumeInfo {
    pub device: Option<String>,
    pub volume_id: Option<String>,
    pub filesystem: Option<String>,
    pub uuid: Option<String>,
    pub mount_point: String,
    pub mounted: bool,
    pub size_bytes: Option<u64>,
    pub used_bytes: Option<u64>,
    pub used_percent: Option<f64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct HostInfo {
    pub mem_total_bytes: u64,
    pub mem_used_bytes: u64,
    pub mem_used_percent: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct MetricsInfo {
    /// RFC 3339 time of the last successful PutMetricData.
    pub last_publish: Option<String>,
    pub put_calls: u64,
    pub published_datums: u64,
    /// Waiting to be sent (CloudWatch unreachable).
    pub buffered_datums: usize,
    /// Given up on: the one-hour buffer overflowed, or CloudWatch rejected them.
    pub dropped_datums: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct DeveloperRow {
    pub name: String,
    pub port: u16,
    pub url: String,
    pub container_id: Option<String>,
    /// running | restarting | exited | created | missing | unmanaged (...)
    pub state: String,
    /// healthy | unhealthy | starting | none
    pub health: String,
    pub uptime_secs: Option<u64>,
    pub cpu_percent: Option<f64>,
    pub mem_used_bytes: Option<u64>,
    pub mem_limit_bytes: u64,
    pub restarts: i64,
    pub crash_looping: bool,
    pub password_version: Option<String>,
    pub password_age_secs: Option<u64>,
    pub pending_rotation: bool,
    /// set | placeholder | missing
    pub claude_key: String,
    /// Secrets Manager version of the Claude key in the developer's key file: the
    /// one Claude Code in the container uses (a rotation changes it in place).
    pub claude_key_version: Option<String>,
    pub log_lag_secs: Option<f64>,
    /// Why this developer is not as desired.
    pub problem: Option<String>,
    pub last_log_lines: Vec<String>,
}

impl StatusReport {
    /// Fills `warnings` and `healthy` from the rest.
    pub fn finish(&mut self, secrets_staleness: Option<u64>, stale_after: Duration) {
        let mut w = Vec::new();
        for d in &self.developers {
            if d.crash_looping {
                let last = d.last_log_lines.last().map(String::as_str).unwrap_or("");
                w.push(format!(
                    "{}: crash-looping ({} restarts); last log line: {last}",
                    d.name, d.restarts
                ));
            }
            if d.claude_key != "set" {
                w.push(format!(
                    "{}: Claude API key is {} (the container runs without it)",
                    d.name, d.claude_key
                ));
            }
            if let Some(p) = &d.problem {
                w.push(format!("{}: {p}", d.name));
            }
            if let Some(lag) = d.log_lag_secs
                && lag > LOG_LAG_WARN_SECS
            {
                w.push(format!(
                    "{}: container logs are {lag:.0}s behind in CloudWatch Logs (Docker keeps the lines meanwhile)",
                    d.name
                ));
            }
        }
        if let Some(m) = &self.metrics
            && m.buffered_datums > 0
            && let Some(e) = &m.last_error
        {
            w.push(format!(
                "metrics: {} datums waiting for CloudWatch (kept up to an hour); last error: {e}",
                m.buffered_datums
            ));
        }
        if let Some(s) = secrets_staleness
            && Duration::from_secs(s) > stale_after
        {
            w.push(format!("secrets are stale: last successful check {s}s ago"));
        }
        if let Some(p) = self.volume.used_percent
            && p > DISK_WARN_PERCENT
        {
            w.push(format!(
                "data volume {:.0}% full (warning above {DISK_WARN_PERCENT:.0}%)",
                p
            ));
        }
        if let Some(e) = &self.volume.error {
            w.push(format!("volume: {e}"));
        }
        let all_up = self
            .developers
            .iter()
            .all(|d| d.state == "running" && (d.health == "healthy" || d.health == "none"));
        self.healthy = all_up && w.iter().all(|x| x.contains("Claude API key"));
        self.warnings = w;
    }
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A developer row with a real key and a 4 GiB limit.
    pub(super) fn row(name: &str, state: &str, health: &str) -> DeveloperRow {
        DeveloperRow {
            name: name.into(),
            state: state.into(),
            health: health.into(),
            claude_key: "set".into(),
            mem_limit_bytes: 4 << 30,
            ..Default::default()
        }
    }

    #[test]
    fn healthy_only_when_all_run_and_nothing_warns() {
        let mut r = StatusReport {
            developers: vec![row("dev1", "running", "healthy")],
            ..Default::default()
        };
        r.volume.mounted = true;
        r.volume.used_percent = Some(10.0);
        r.finish(Some(5), Duration::from_secs(300));
        assert!(r.healthy, "{:?}", r.warnings);

        r.developers.push(row("dev2", "exited", "unhealthy"));
        r.finish(Some(5), Duration::from_secs(300));
        assert!(!r.healthy);

        let mut r = StatusReport {
            developers: vec![row("dev1", "running", "healthy")],
            ..Default::default()
        };
        r.volume.used_percent = Some(90.0);
        r.finish(Some(900), Duration::from_secs(300));
        assert!(!r.healthy);
        assert!(r.warnings.iter().any(|w| w.contains("90% full")));
        assert!(r.warnings.iter().any(|w| w.contains("stale")));
    }

    #[test]
    fn cloudwatch_trouble_warns() {
        let mut d = row("dev1", "running", "healthy");
        d.log_lag_secs = Some(30.0);
        let mut r = StatusReport {
            developers: vec![d],
            metrics: Some(MetricsInfo {
                buffered_datums: 67,
                ..Default::default()
            }),
            ..Default::default()
        };
        r.finish(None, Duration::from_secs(300));
        assert!(
            r.healthy,
            "a backlog without an error is the normal send: {:?}",
            r.warnings
        );

        r.developers[0].log_lag_secs = Some(900.0);
        if let Some(m) = r.metrics.as_mut() {
            m.last_error = Some("PutMetricData: dispatch failure".into());
        }
        r.finish(None, Duration::from_secs(300));
        assert!(!r.healthy);
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("dev1: container logs are 900s behind"))
        );
        assert!(
            r.warnings
                .iter()
                .any(|w| w.starts_with("metrics: 67 datums waiting")
                    && w.contains("dispatch failure"))
        );
    }

    #[test]
    fn placeholder_key_warns_but_stays_healthy() {
        let mut d = row("dev1", "running", "healthy");
        d.claude_key = "placeholder".into();
        let mut r = StatusReport {
            developers: vec![d],
            ..Default::default()
        };
        r.finish(None, Duration::from_secs(300));
        assert!(r.healthy);
        assert_eq!(r.warnings.len(), 1);
    }
}
