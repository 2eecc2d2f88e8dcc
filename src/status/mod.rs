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

use crate::volume::{QuarantineItem, QuotaMode, QuotaStatus};

/// A developer whose home holds this share of their quota gets a warning (the
/// template's alarm uses the same threshold).
pub const QUOTA_WARN_PERCENT: f64 = csagent_contract::metrics::DISK_QUOTA_ALARM_PERCENT;

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
    /// Where the developer list comes from and when it last changed.
    #[serde(default)]
    pub developer_set: DeveloperSetInfo,
    /// The image: where it is pulled from, the pull running now, the last pull.
    pub image: Option<ImageReport>,
    /// The staged rollout of an image or spec change, while one runs, halted or
    /// just done; None when there is nothing to roll out.
    #[serde(default)]
    pub rollout: Option<RolloutReport>,
    /// The metrics publisher, when metrics are enabled.
    pub metrics: Option<MetricsInfo>,
    /// Host-log sources (`system`, `docker`) by name; empty when host logs
    /// are off.
    #[serde(default)]
    pub host_logs: BTreeMap<String, HostLogsInfo>,
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
    /// Stray root-disk content from under the mount point: in quarantine, or
    /// left in place when it could not be moved (docs/operations.md says what to do).
    #[serde(default)]
    pub quarantine: Vec<QuarantineItem>,
    /// Per-developer disk quotas: enforced or why not, use and limits.
    #[serde(default)]
    pub quota: Option<QuotaStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct HostInfo {
    pub mem_total_bytes: u64,
    pub mem_used_bytes: u64,
    pub mem_used_percent: f64,
}

/// Where the developers come from: the config file, or the SSM parameter
/// `developers.parameter` names (polled).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct DeveloperSetInfo {
    /// "file" or "parameter".
    pub source: String,
    /// The SSM parameter, when the source is one.
    pub parameter: Option<String>,
    /// SSM version of the set in force.
    pub version: Option<i64>,
    /// RFC 3339 time that version was written to SSM.
    pub modified_at: Option<String>,
    /// RFC 3339 time this agent put the set in force (start, reload or a change).
    pub applied_at: Option<String>,
    /// The set in force is the copy saved in the state dir (SSM not read since start).
    pub from_saved: bool,
    /// RFC 3339 time of the last successful read of the parameter.
    pub last_read: Option<String>,
    /// Why the last read failed.
    pub read_error: Option<String>,
    /// The SSM version refused, and why (which parameter, which key).
    pub refused_version: Option<i64>,
    pub refused: Option<String>,
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

/// One host-log source: journal entries to one CloudWatch Logs group.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct HostLogsInfo {
    pub group: String,
    /// journalctl runs and is being read.
    pub reading: bool,
    /// RFC 3339 time of the journal entry at the checkpoint's cursor
    /// (everything up to it is shipped or was not selected).
    pub cursor_at: Option<String>,
    /// Seconds behind while entries read wait to be shipped; 0 when caught up.
    pub lag_secs: f64,
    pub shipped_events: u64,
    /// Read but not selected (kernel messages other than OOM kills).
    pub skipped_entries: u64,
    pub retries: u64,
    /// The most recent failure (journalctl, CloudWatch, checkpoint); None
    /// after the next successful put.
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RolloutReport {
    /// one-at-a-time | all-at-once
    pub strategy: String,
    /// rolling | waiting-for-idle | halted | done
    pub state: String,
    /// The developer whose new container is awaited.
    pub in_flight: Option<String>,
    pub in_flight_secs: Option<u64>,
    /// Developers moved to the new spec, and those still on the old one.
    pub done: Vec<String>,
    pub pending: Vec<String>,
    /// Why it halted.
    pub halted: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ImageReport {
    /// The configured reference.
    pub reference: String,
    /// `host[:port]` it is pulled from (`docker.io` for Docker Hub).
    pub registry: String,
    /// `ecr` (a GetAuthorizationToken token of the instance role) or `none`.
    pub auth: String,
    /// The pull running now.
    pub pulling: Option<PullingInfo>,
    /// RFC 3339 time the last pull ended.
    pub last_pull_at: Option<String>,
    /// Why the last pull failed; None when it succeeded (or none ran).
    pub last_pull_error: Option<String>,
    /// The last pull's counts when it ended.
    pub last_pull_progress: Option<PullingInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct PullingInfo {
    pub started_at: Option<String>,
    pub layers_done: u32,
    pub layers_total: u32,
    /// Of the layers whose size dockerd has announced so far.
    pub bytes_done: u64,
    pub bytes_total: u64,
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
    /// Why the log shipper cannot write this developer's checkpoint (shipping
    /// waits and retries meanwhile; Docker keeps the lines).
    #[serde(default)]
    pub log_checkpoint_error: Option<String>,
    /// Container log files rotated away before they were shipped (lines lost),
    /// their bytes, and gaps of unknown size, since the agent started.
    #[serde(default)]
    pub log_files_lost: u64,
    /// Rotated log files held open now because the shipper is behind.
    #[serde(default)]
    pub log_files_held: u64,
    #[serde(default)]
    pub log_bytes_lost: u64,
    #[serde(default)]
    pub log_gaps: u64,
    /// Why this developer is not as desired.
    pub problem: Option<String>,
    /// Why the last pull of this developer's image failed (every developer runs
    /// the same image today); None after a successful pull.
    pub pull_error: Option<String>,
    /// An image or spec change the staged rollout holds back for now, and why.
    #[serde(default)]
    pub pending_update: Option<String>,
    /// Bytes the developer's home holds, as its disk quota counts them (None:
    /// no quota accounting on the volume).
    #[serde(default)]
    pub disk_used_bytes: Option<u64>,
    /// The hard limit in force on the home (None: none).
    #[serde(default)]
    pub disk_limit_bytes: Option<u64>,
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
            if d.log_files_lost > 0 || d.log_gaps > 0 {
                // A gap is files gone before the shipper saw them: how many is unknown.
                let what = match (d.log_files_lost, d.log_gaps) {
                    (0, g) => format!("container log files (how many is unknown: {g} gap(s))"),
                    (n, 0) => format!(
                        "{n} container log file(s) ({})",
                        bytesize::ByteSize(d.log_bytes_lost).display().iec()
                    ),
                    (n, g) => format!(
                        "{n} container log file(s) ({}) and an unknown number more ({g} gap(s))",
                        bytesize::ByteSize(d.log_bytes_lost).display().iec()
                    ),
                };
                w.push(format!(
                    "{}: {what} rotated away before they were shipped since the agent started; their lines are lost (the shipper fell behind by more than logs.hold_rotated_files; raise it or containers.log_max_size)",
                    d.name
                ));
            }
            if let Some(e) = &d.log_checkpoint_error {
                w.push(format!(
                    "{}: container log shipping paused, cannot write its checkpoint (retrying; Docker keeps the lines): {e}",
                    d.name
                ));
            }
        }
        for (name, h) in &self.host_logs {
            match (&h.last_error, h.reading) {
                (Some(e), false) => w.push(format!(
                    "{HOST_LOGS}({name}): not reading the journal, retrying: {e}"
                )),
                _ if h.lag_secs > LOG_LAG_WARN_SECS => w.push(format!(
                    "{HOST_LOGS}({name}): {:.0}s behind in CloudWatch Logs (the journal keeps the entries){}",
                    h.lag_secs,
                    h.last_error
                        .as_ref()
                        .map(|e| format!("; last error: {e}"))
                        .unwrap_or_default()
                )),
                _ => {}
            }
        }
        let set = &self.developer_set;
        if let (Some(p), Some(reason)) = (&set.parameter, &set.refused) {
            w.push(format!(
                "developer set: version {} of {p} refused, the last good set stays in force: {reason}",
                set.refused_version.map_or("?".to_string(), |v| v.to_string())
            ));
        }
        if let (Some(p), Some(e)) = (&set.parameter, &set.read_error) {
            w.push(format!(
                "developer set: cannot read {p} (last read {}); the set in force stays: {e}",
                set.last_read.as_deref().unwrap_or("never")
            ));
        }
        if let (Some(p), None) = (&set.parameter, set.version) {
            w.push(format!(
                "developer set: {p} not read yet and none saved; no developer is started"
            ));
        }
        if let Some(i) = &self.image
            && let Some(e) = &i.last_pull_error
        {
            w.push(format!("image {}: last pull failed: {e}", i.reference));
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
        // Quarantined content is safe and the developers run on the volume: the
        // admin has something to look at, the host is not unhealthy for it.
        w.extend(self.volume.quarantine.iter().map(quarantine_warning));
        // Neither is a quota not (yet) in force, nor a developer near theirs.
        if let Some(q) = &self.volume.quota {
            if matches!(q.mode, QuotaMode::NextMount | QuotaMode::Unavailable) {
                w.push(format!(
                    "{QUOTA}not enforced: {}",
                    q.reason.as_deref().unwrap_or("unknown reason")
                ));
            }
            for (name, d) in &q.developers {
                if let Some(e) = &d.error {
                    w.push(format!("{QUOTA}{name}: {e}"));
                }
            }
        }
        for d in &self.developers {
            if let (Some(used), Some(limit)) = (d.disk_used_bytes, d.disk_limit_bytes)
                && limit > 0
                && used as f64 * 100.0 / limit as f64 >= QUOTA_WARN_PERCENT
            {
                w.push(format!(
                    "{QUOTA}{}: home holds {:.0}% of its quota ({} of {}); at 100% writes fail with \"Disk quota exceeded\"",
                    d.name,
                    used as f64 * 100.0 / limit as f64,
                    bytesize::ByteSize(used).display().iec(),
                    bytesize::ByteSize(limit).display().iec()
                ));
            }
        }
        let all_up = self
            .developers
            .iter()
            .all(|d| d.state == "running" && (d.health == "healthy" || d.health == "none"));
        let blocking = w
            .iter()
            // The developers work on without host logs: an admin has something
            // to look at, the host is not unhealthy for it.
            .filter(|x| {
                !x.contains("Claude API key")
                    && !x.starts_with(QUARANTINED)
                    && !x.starts_with(HOST_LOGS)
                    && !x.starts_with(QUOTA)
            })
            .count();
        self.healthy = all_up && blocking == 0;
        self.warnings = w;
    }
}

/// How a warning about host-log shipping starts.
const HOST_LOGS: &str = "host logs ";
/// How a warning about disk quotas starts.
const QUOTA: &str = "disk quota: ";

/// How a warning about content safely in quarantine starts.
const QUARANTINED: &str = "quarantine: ";

fn quarantine_warning(q: &QuarantineItem) -> String {
    let whose = q
        .developer
        .as_deref()
        .map(|d| format!("developer {d}"))
        .unwrap_or_else(|| "no developer".to_string());
    let size = format!(
        "{}{} in {} files",
        if q.partial { "at least " } else { "" },
        bytesize::ByteSize(q.bytes).display().iec(),
        q.files
    );
    if q.left_in_place {
        format!(
            "stray content at {} on the root disk ({whose}, {size}) is hidden under the volume and could not be moved into quarantine; see docs/operations.md",
            q.from
        )
    } else {
        format!(
            "{QUARANTINED}{} ({whose}, {size}) was written on the root disk under {} before the volume was mounted; see docs/operations.md",
            q.path, q.from
        )
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
    fn disk_quota_warns_near_the_limit_and_when_not_enforced_without_making_the_host_unhealthy() {
        use crate::volume::DeveloperQuota;
        let mut dev1 = row("dev1", "running", "healthy");
        dev1.disk_used_bytes = Some(95 << 20);
        dev1.disk_limit_bytes = Some(100 << 20);
        let mut dev2 = row("dev2", "running", "healthy");
        dev2.disk_used_bytes = Some(10 << 20);
        dev2.disk_limit_bytes = Some(100 << 20);
        let mut r = StatusReport {
            developers: vec![dev1, dev2],
            ..Default::default()
        };
        r.volume.quota = Some(QuotaStatus {
            mode: QuotaMode::Enforced,
            configured_bytes: Some(100 << 20),
            reason: None,
            developers: [("dev1".to_string(), DeveloperQuota::default())].into(),
        });
        r.finish(None, Duration::from_secs(300));
        assert!(r.healthy, "{:?}", r.warnings);
        assert_eq!(
            r.warnings,
            [
                "disk quota: dev1: home holds 95% of its quota (95.0 MiB of 100.0 MiB); at 100% writes fail with \"Disk quota exceeded\""
            ]
        );
        let mut out = Vec::new();
        r.render(&mut out, false).expect("render");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.contains("quota   enforced, 100.0 MiB per developer — dev1 95.0 MiB/100.0 MiB (95%), dev2 10.0 MiB/100.0 MiB (10%)"),
            "{text}"
        );

        if let Some(q) = r.volume.quota.as_mut() {
            q.mode = QuotaMode::NextMount;
            q.reason = Some("xfs turns quotas on only when it is mounted".into());
        }
        r.finish(None, Duration::from_secs(300));
        assert!(r.healthy);
        assert!(
            r.warnings
                .iter()
                .any(|w| w
                    == "disk quota: not enforced: xfs turns quotas on only when it is mounted"),
            "{:?}",
            r.warnings
        );
    }

    #[test]
    fn quarantine_warns_and_content_left_hidden_is_unhealthy() {
        let mut r = StatusReport {
            developers: vec![row("dev1", "running", "healthy")],
            ..Default::default()
        };
        r.volume.quarantine = vec![QuarantineItem {
            path: "/var/lib/csagent/quarantine/20261130T065153Z/dev1".into(),
            from: "/data/dev1".into(),
            developer: Some("dev1".into()),
            bytes: 2048,
            files: 3,
            ..Default::default()
        }];
        r.finish(None, Duration::from_secs(300));
        assert!(r.healthy, "safe in quarantine: {:?}", r.warnings);
        assert_eq!(
            r.warnings,
            [
                "quarantine: /var/lib/csagent/quarantine/20261130T065153Z/dev1 (developer dev1, 2.0 KiB in 3 files) was written on the root disk under /data/dev1 before the volume was mounted; see docs/operations.md"
            ]
        );

        r.volume.quarantine[0].left_in_place = true;
        r.volume.quarantine[0].developer = None;
        r.finish(None, Duration::from_secs(300));
        assert!(!r.healthy);
        assert!(
            r.warnings[0].starts_with("stray content at /data/dev1 on the root disk (no developer"),
            "{:?}",
            r.warnings
        );
    }

    #[test]
    fn a_refused_or_unread_developer_set_warns() {
        let mut r = StatusReport {
            developers: vec![row("dev1", "running", "healthy")],
            ..Default::default()
        };
        r.developer_set = DeveloperSetInfo {
            source: "parameter".into(),
            parameter: Some("/t/csagent/host-1/developers".into()),
            version: Some(4),
            ..Default::default()
        };
        r.finish(None, Duration::from_secs(300));
        assert!(r.healthy, "{:?}", r.warnings);
        r.developer_set.refused_version = Some(5);
        r.developer_set.refused = Some(
            "/t/csagent/host-1/developers: developer[2].port: 8443 is already used by dev1".into(),
        );
        r.finish(None, Duration::from_secs(300));
        assert!(!r.healthy);
        assert_eq!(
            r.warnings,
            [
                "developer set: version 5 of /t/csagent/host-1/developers refused, the last good set stays in force: /t/csagent/host-1/developers: developer[2].port: 8443 is already used by dev1"
            ]
        );
        r.developer_set.refused = None;
        r.developer_set.version = None;
        r.developer_set.read_error = Some("GetParameter /t/...: dispatch failure".into());
        r.finish(None, Duration::from_secs(300));
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
        assert!(
            r.warnings[0].contains("cannot read /t/csagent/host-1/developers (last read never)")
        );
        assert!(r.warnings[1].contains("no developer is started"));
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
