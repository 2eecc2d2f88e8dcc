//! Builds the [`StatusReport`] from one [`Snapshot`] of what the reconcilers
//! observed. Pure: no probe, no clock read, no write; the caller passes the host
//! memory and the time.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{
    AgentInfo, DeveloperRow, DeveloperSetInfo, HostInfo, HostLogsInfo, ImageReport, InstanceInfo,
    MetricsInfo, PullingInfo, RolloutReport, SCHEMA_VERSION, StatusReport, VolumeInfo, rfc3339,
};
use crate::config::Developer;
use crate::containers::PullProgress;
use crate::observe::Snapshot;

/// Host memory as the kernel counts it (bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostMemory {
    pub total: u64,
    pub available: u64,
}

impl HostMemory {
    /// Reads /proc/meminfo (through sysinfo).
    pub fn read() -> HostMemory {
        let mut sys = sysinfo::System::new();
        sys.refresh_memory();
        HostMemory {
            total: sys.total_memory(),
            available: sys.available_memory(),
        }
    }
}

/// The report for `csagent status`, warnings and `healthy` included.
pub fn report(s: &Snapshot, memory: HostMemory, now: SystemTime) -> StatusReport {
    let config = &s.config;
    let developers = config
        .developers
        .iter()
        .map(|d| developer_row(s, d, now))
        .collect();
    let used = memory.total.saturating_sub(memory.available);
    let mut report = StatusReport {
        schema: SCHEMA_VERSION,
        agent: AgentInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            uptime_secs: s.uptime.as_secs(),
            phase: s.phase.as_str().to_string(),
        },
        instance: InstanceInfo {
            project: config.project.clone(),
            instance_id: s.identity.instance_id.clone(),
            region: s.identity.region.clone(),
        },
        volume: volume_info(s),
        host: HostInfo {
            mem_total_bytes: memory.total,
            mem_used_bytes: used,
            mem_used_percent: if memory.total > 0 {
                used as f64 * 100.0 / memory.total as f64
            } else {
                0.0
            },
        },
        aws_last_success: aws_last_success(s),
        developers,
        developer_set: developer_set_info(s),
        image: image_report(s),
        rollout: rollout_report(s, now),
        metrics: s.metrics.as_ref().map(|m| MetricsInfo {
            last_publish: m.last_publish.map(rfc3339),
            put_calls: m.put_calls,
            published_datums: m.published_datums,
            buffered_datums: m.buffered_datums,
            dropped_datums: m.dropped_datums,
            last_error: m.last_error.clone(),
        }),
        host_logs: host_logs(s),
        warnings: Vec::new(),
        healthy: false,
    };
    let stale_after = config.secrets.poll_interval * 5;
    report.finish(
        s.secrets.as_ref().and_then(|s| s.staleness_seconds),
        stale_after,
    );
    if let Some(why) = report.rollout.as_ref().and_then(|r| r.halted.as_ref()) {
        report.warnings.push(format!("rollout halted: {why}"));
        report.healthy = false;
    }
    if let Some(f) = &s.firewall {
        report.warnings.push(format!("container firewall: {f}"));
        report.healthy = false;
    }
    report
}

/// The rollout section: shown while a rollout runs or halted, and once done
/// (until the next one), never when nothing was rolled out.
fn rollout_report(s: &Snapshot, now: SystemTime) -> Option<RolloutReport> {
    let r = &s.rollout;
    if r.state.is_empty() || (r.state == "idle" && r.done.is_empty()) {
        return None;
    }
    Some(RolloutReport {
        strategy: match s.config.rollout.strategy {
            crate::config::RolloutStrategy::OneAtATime => "one-at-a-time",
            crate::config::RolloutStrategy::AllAtOnce => "all-at-once",
        }
        .to_string(),
        state: if r.state == "idle" {
            "done".into()
        } else {
            r.state.clone()
        },
        in_flight: r.in_flight.clone(),
        in_flight_secs: r
            .in_flight_since
            .and_then(|t| now.duration_since(t).ok())
            .map(|d| d.as_secs()),
        done: r.done.clone(),
        pending: r.pending.clone(),
        halted: r.halted.clone(),
    })
}

fn developer_row(s: &Snapshot, d: &Developer, now: SystemTime) -> DeveloperRow {
    let c = s.containers.get(&d.name);
    let m = s.metrics.as_ref().and_then(|m| m.developers.get(&d.name));
    let secrets = s.secrets.as_ref().and_then(|s| s.developers.get(&d.name));
    let quota = s
        .volume
        .quota
        .as_ref()
        .and_then(|q| q.developers.get(&d.name));
    let logs = s.logs.developers.get(&d.name);
    let uptime = c
        .filter(|c| c.state == "running")
        .and_then(|c| c.started_at.as_deref())
        .and_then(|t| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok())
        .and_then(|t| now.duration_since(t).ok())
        .map(|d| d.as_secs());
    let problem = c
        .and_then(|c| c.problem.clone())
        .or_else(|| {
            let s = secrets?;
            let e = s.error.as_ref()?;
            // Still running on the last values read: say so, the admin must fix it
            // before the next recreation needs them.
            Some(if s.ready {
                format!("running on the last credentials read; {e}")
            } else {
                e.clone()
            })
        })
        .or_else(|| {
            secrets
                .and_then(|s| s.claude_key_file_error.as_ref())
                .map(|e| {
                    format!("Claude key file not updated (the container keeps the key it had): {e}")
                })
        });
    DeveloperRow {
        name: d.name.clone(),
        port: d.port,
        url: format!("http://{}:{}/", "localhost", d.port),
        container_id: c
            .and_then(|c| c.id.as_deref())
            .map(|id| id.chars().take(12).collect()),
        state: c
            .map(|c| c.state.clone())
            .unwrap_or_else(|| "unknown".into()),
        health: c.map(|c| c.health.clone()).unwrap_or_else(|| "none".into()),
        uptime_secs: uptime,
        cpu_percent: m.and_then(|m| m.cpu_percent),
        mem_used_bytes: m.and_then(|m| m.mem_used_bytes),
        mem_limit_bytes: d.memory,
        restarts: c.map(|c| c.restarts).unwrap_or(0),
        crash_looping: c.is_some_and(|c| c.crash_looping),
        password_version: secrets.and_then(|s| s.password_version.clone()),
        password_age_secs: secrets.and_then(|s| s.password_age_secs),
        pending_rotation: secrets.is_some_and(|s| s.pending_rotation.is_some()),
        claude_key: secrets
            .map(|s| s.claude_key.to_string())
            .unwrap_or_else(|| "missing".into()),
        claude_key_version: secrets.and_then(|s| s.claude_key_file_version.clone()),
        log_lag_secs: s.logs.developers.get(&d.name).map(|l| l.lag_seconds),
        log_checkpoint_error: s
            .logs
            .developers
            .get(&d.name)
            .and_then(|l| l.checkpoint_error.clone()),
        log_files_lost: logs.map_or(0, |l| l.lost_log_files),
        log_files_held: logs.map_or(0, |l| l.held_log_files),
        log_bytes_lost: logs.map_or(0, |l| l.lost_log_bytes),
        log_gaps: logs.map_or(0, |l| l.log_gaps),
        problem,
        pull_error: s
            .image
            .last_error()
            .map(|e| format!("pull of {} failed: {e}", s.image.image)),
        pending_update: c.and_then(|c| c.pending_update.clone()),
        disk_used_bytes: quota.and_then(|q| q.used_bytes),
        disk_limit_bytes: quota.and_then(|q| q.limit_bytes),
        last_log_lines: c.map(|c| c.last_log_lines.clone()).unwrap_or_default(),
    }
}

fn host_logs(s: &Snapshot) -> BTreeMap<String, HostLogsInfo> {
    let at = |ms: Option<i64>| {
        ms.and_then(|ms| u64::try_from(ms).ok())
            .map(|ms| rfc3339(UNIX_EPOCH + Duration::from_millis(ms)))
    };
    s.logs
        .host
        .iter()
        .map(|(name, h)| {
            let info = HostLogsInfo {
                group: h.group.clone(),
                reading: h.reading,
                cursor_at: at(h.cursor_ms),
                lag_secs: h.lag_seconds,
                shipped_events: h.shipped_events,
                skipped_entries: h.skipped_entries,
                retries: h.retries,
                last_error: h.last_error.clone(),
            };
            (name.clone(), info)
        })
        .collect()
}

/// None until the reconciler first looked at the image.
fn developer_set_info(s: &Snapshot) -> DeveloperSetInfo {
    let d = &s.developer_set;
    let ms = |ms: i64| rfc3339(UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
    DeveloperSetInfo {
        source: if d.parameter.is_some() {
            "parameter"
        } else {
            "file"
        }
        .to_string(),
        parameter: d.parameter.clone(),
        version: d.version,
        modified_at: d.modified_ms.map(ms),
        applied_at: d.applied_at.map(rfc3339),
        from_saved: d.from_saved,
        last_read: d.last_read.map(rfc3339),
        read_error: d.read_error.clone(),
        refused_version: d.refused.as_ref().map(|r| r.version),
        refused: d.refused.as_ref().map(|r| r.reason.clone()),
    }
}

fn image_report(s: &Snapshot) -> Option<ImageReport> {
    let i = &s.image;
    if i.image.is_empty() {
        return None;
    }
    Some(ImageReport {
        reference: i.image.clone(),
        registry: i.registry.clone(),
        auth: i.auth.clone(),
        pulling: i.running.as_ref().map(pulling_info),
        last_pull_at: i.last_pull.as_ref().map(|(t, _)| rfc3339(*t)),
        last_pull_error: i.last_error().map(str::to_string),
        last_pull_progress: i.last_progress.as_ref().map(pulling_info),
    })
}

fn pulling_info(p: &PullProgress) -> PullingInfo {
    PullingInfo {
        started_at: p.started.map(rfc3339),
        layers_done: p.layers_done,
        layers_total: p.layers_total,
        bytes_done: p.bytes_done,
        bytes_total: p.bytes_total,
    }
}

fn volume_info(s: &Snapshot) -> VolumeInfo {
    let v = &s.volume;
    let used_percent = match (v.used_bytes, v.size_bytes) {
        (Some(u), Some(size)) if size > 0 => Some(u as f64 * 100.0 / size as f64),
        _ => None,
    };
    VolumeInfo {
        device: v.device.clone(),
        volume_id: v.volume_id.clone(),
        filesystem: v.filesystem.clone(),
        uuid: v.uuid.clone(),
        mount_point: v.mount_point.clone(),
        mounted: v.mounted,
        size_bytes: v.size_bytes,
        used_bytes: v.used_bytes,
        used_percent,
        error: v.error.clone(),
        quarantine: v.quarantine.clone(),
        quota: v.quota.clone(),
    }
}

/// Last successful call per AWS service; a service the agent does not call
/// (metrics or logs off) has no entry.
fn aws_last_success(s: &Snapshot) -> BTreeMap<String, Option<String>> {
    let mut out = BTreeMap::new();
    out.insert(
        "secretsmanager".to_string(),
        s.secrets.as_ref().and_then(|s| s.last_success.clone()),
    );
    if let Some(m) = &s.metrics {
        out.insert("cloudwatch".to_string(), m.last_publish.map(rfc3339));
    }
    if s.logs.enabled {
        let put = s
            .logs
            .last_put_ms
            .and_then(|ms| u64::try_from(ms).ok())
            .map(|ms| rfc3339(UNIX_EPOCH + Duration::from_millis(ms)));
        out.insert("logs".to_string(), put);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::aws::Identity;
    use crate::config::Config;
    use crate::containers::{ContainerStatus, PullStatus};
    use crate::logs::{DeveloperLogs, HostLogs, LogsStatus};
    use crate::metrics::MetricsStatus;
    use crate::metrics::collect::DeveloperSample;
    use crate::observe::Phase;
    use crate::secrets::{ClaudeKeyState, DeveloperSecretsStatus, SecretsStatus};
    use crate::volume::VolumeStatus;

    const GIB: u64 = 1 << 30;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn config(developers: u32) -> Arc<Config> {
        let text = format!(
            "project = \"team\"\n[developers]\ncount = {developers}\n[volume]\ndevice = \"/dev/loop7\"\n"
        );
        Arc::new(Config::from_toml(&text, Path::new("test.toml")).expect("config"))
    }

    fn creds(version: &str) -> DeveloperSecretsStatus {
        DeveloperSecretsStatus {
            ready: true,
            password_version: Some(version.into()),
            password_age_secs: Some(3600),
            claude_key: ClaudeKeyState::Set,
            claude_key_version: Some("k1".into()),
            claude_key_file_version: Some("k1".into()),
            claude_key_file_error: None,
            error: None,
            stale_secs: Some(10),
            pending_rotation: None,
        }
    }

    fn running(dev: &str) -> ContainerStatus {
        ContainerStatus {
            developer: dev.into(),
            id: Some("0123456789abcdef0123".into()),
            state: "running".into(),
            health: "healthy".into(),
            // 90 s before `now()`.
            started_at: Some("2027-01-15T07:58:30Z".into()),
            ..Default::default()
        }
    }

    /// Two developers, both running with credentials, the volume 40% full.
    fn healthy() -> Snapshot {
        let config = config(2);
        let names: Vec<String> = config.developers.iter().map(|d| d.name.clone()).collect();
        Snapshot {
            developer_set: Default::default(),
            identity: Identity {
                region: "eu-west-1".into(),
                instance_id: "i-0abc".into(),
            },
            uptime: Duration::from_secs(600),
            phase: Phase::Running,
            volume: VolumeStatus {
                device: Some("/dev/nvme1n1".into()),
                filesystem: Some("ext4".into()),
                mount_point: "/mnt/ebs-data".into(),
                mounted: true,
                size_bytes: Some(100 * GIB),
                used_bytes: Some(40 * GIB),
                ..Default::default()
            },
            secrets: Some(SecretsStatus {
                developers: names.iter().map(|n| (n.clone(), creds("v1"))).collect(),
                staleness_seconds: Some(20),
                last_success: Some("2027-01-15T08:39:40Z".into()),
                last_error: None,
                consecutive_failures: 0,
                polls: 10,
                poll_interval_secs: 60,
                api_calls: Default::default(),
                batch_supported: Some(true),
            }),
            containers: names.iter().map(|n| (n.clone(), running(n))).collect(),
            firewall: None,
            image: Default::default(),
            rollout: Default::default(),
            logs: LogsStatus::default(),
            metrics: None,
            config,
        }
    }

    fn memory() -> HostMemory {
        HostMemory {
            total: 16 * GIB,
            available: 12 * GIB,
        }
    }

    fn row<'a>(r: &'a StatusReport, name: &str) -> &'a DeveloperRow {
        r.developers
            .iter()
            .find(|d| d.name == name)
            .expect("a row per developer")
    }

    #[test]
    fn a_healthy_host() {
        let r = report(&healthy(), memory(), now());
        assert!(r.healthy, "{:?}", r.warnings);
        assert!(r.warnings.is_empty());
        assert_eq!(r.agent.phase, "running");
        assert_eq!(r.agent.uptime_secs, 600);
        assert_eq!(r.instance.instance_id, "i-0abc");
        assert_eq!(r.instance.project, "team");
        assert_eq!(r.host.mem_used_bytes, 4 * GIB);
        assert_eq!(r.host.mem_used_percent, 25.0);
        assert_eq!(r.volume.used_percent, Some(40.0));
        let d = row(&r, "dev1");
        assert_eq!(d.url, "http://localhost:8443/");
        assert_eq!(d.container_id.as_deref(), Some("0123456789ab"));
        assert_eq!(d.uptime_secs, Some(90));
        assert_eq!(d.password_version.as_deref(), Some("v1"));
        assert_eq!(d.claude_key, "set");
        assert_eq!(d.claude_key_version.as_deref(), Some("k1"));
        assert_eq!(d.log_lag_secs, None);
        let services: Vec<&str> = r.aws_last_success.keys().map(String::as_str).collect();
        assert_eq!(services, ["secretsmanager"], "logs and metrics are off");
    }

    #[test]
    fn a_developer_missing_credentials() {
        let mut s = healthy();
        let secrets = s.secrets.as_mut().expect("secrets");
        secrets.developers.insert(
            "dev2".into(),
            DeveloperSecretsStatus {
                ready: false,
                password_version: None,
                password_age_secs: None,
                claude_key: ClaudeKeyState::Missing,
                claude_key_version: None,
                claude_key_file_version: None,
                claude_key_file_error: None,
                error: Some("secret team/dev2/password not found".into()),
                stale_secs: None,
                pending_rotation: None,
            },
        );
        s.containers.insert(
            "dev2".into(),
            ContainerStatus {
                state: "missing".into(),
                health: "none".into(),
                ..Default::default()
            },
        );
        let r = report(&s, memory(), now());
        assert!(!r.healthy);
        let d = row(&r, "dev2");
        assert_eq!(
            d.problem.as_deref(),
            Some("secret team/dev2/password not found")
        );
        assert_eq!(d.claude_key, "missing");
        assert_eq!(d.uptime_secs, None);
        assert!(
            r.warnings
                .contains(&"dev2: secret team/dev2/password not found".to_string()),
            "{:?}",
            r.warnings
        );
    }

    #[test]
    fn a_key_file_that_cannot_be_written_is_a_problem() {
        let mut s = healthy();
        let secrets = s.secrets.as_mut().expect("secrets");
        let dev1 = secrets.developers.get_mut("dev1").expect("dev1");
        dev1.claude_key_version = Some("k2".into());
        dev1.claude_key_file_error = Some("write /run/csagent/dev1/claude-api-key: ENOSPC".into());
        let r = report(&s, memory(), now());
        let d = row(&r, "dev1");
        assert_eq!(
            d.claude_key_version.as_deref(),
            Some("k1"),
            "the version the container still has"
        );
        assert!(
            d.problem.as_deref().is_some_and(|p| p.starts_with(
                "Claude key file not updated (the container keeps the key it had): write"
            )),
            "{:?}",
            d.problem
        );
        assert!(!r.healthy);
    }

    #[test]
    fn a_crash_looping_container() {
        let mut s = healthy();
        let c = s.containers.get_mut("dev1").expect("dev1");
        c.state = "restarting".into();
        c.restarts = 7;
        c.crash_looping = true;
        c.last_log_lines = vec!["starting".into(), "panic: no config".into()];
        c.problem = Some("crash-looping; not restarting it".into());
        let r = report(&s, memory(), now());
        assert!(!r.healthy);
        assert!(row(&r, "dev1").crash_looping);
        assert_eq!(
            row(&r, "dev1").uptime_secs,
            None,
            "only a running one has uptime"
        );
        assert!(
            r.warnings
                .iter()
                .any(|w| w == "dev1: crash-looping (7 restarts); last log line: panic: no config"),
            "{:?}",
            r.warnings
        );
    }

    #[test]
    fn stale_secrets_warn() {
        let mut s = healthy();
        if let Some(secrets) = s.secrets.as_mut() {
            secrets.staleness_seconds = Some(301);
        }
        let r = report(&s, memory(), now());
        assert!(!r.healthy);
        assert_eq!(
            r.warnings,
            ["secrets are stale: last successful check 301s ago"]
        );
    }

    #[test]
    fn a_firewall_warning_makes_it_unhealthy() {
        let mut s = healthy();
        s.firewall = Some("iptables: not found".into());
        let r = report(&s, memory(), now());
        assert!(!r.healthy);
        assert_eq!(r.warnings, ["container firewall: iptables: not found"]);
    }

    #[test]
    fn logs_lagging_and_metrics_shown_when_running() {
        let mut s = healthy();
        s.logs.enabled = true;
        s.logs.last_put_ms = Some(1_800_000_000_000);
        s.logs.developers.insert(
            "dev1".into(),
            DeveloperLogs {
                lag_seconds: 900.0,
                ..Default::default()
            },
        );
        let mut metrics = MetricsStatus {
            enabled: true,
            put_calls: 3,
            ..Default::default()
        };
        metrics.developers.insert(
            "dev2".into(),
            DeveloperSample {
                developer: "dev2".into(),
                running: true,
                healthy: true,
                cpu_percent: Some(12.5),
                mem_used_bytes: Some(GIB),
                mem_used_percent: Some(25.0),
                restarts: 0,
                active: true,
            },
        );
        s.metrics = Some(metrics);
        let r = report(&s, memory(), now());
        assert!(!r.healthy);
        assert_eq!(row(&r, "dev1").log_lag_secs, Some(900.0));
        assert!(r.warnings[0].starts_with("dev1: container logs are 900s behind"));
        assert_eq!(row(&r, "dev2").cpu_percent, Some(12.5));
        assert_eq!(row(&r, "dev2").mem_used_bytes, Some(GIB));
        assert_eq!(r.metrics.as_ref().map(|m| m.put_calls), Some(3));
        assert_eq!(
            r.aws_last_success.get("logs"),
            Some(&Some("2027-01-15T08:00:00Z".to_string()))
        );
        assert_eq!(r.aws_last_success.get("cloudwatch"), Some(&None));
    }

    #[test]
    fn host_logs_are_shown_and_their_warnings_do_not_make_the_host_unhealthy() {
        let mut s = healthy();
        s.logs.enabled = true;
        s.logs.host.insert(
            "docker".into(),
            HostLogs {
                group: "/aws/ec2/p/docker".into(),
                reading: true,
                cursor_ms: Some(1_800_000_000_000),
                shipped_events: 61,
                ..Default::default()
            },
        );
        let r = report(&s, memory(), now());
        assert!(r.healthy, "{:?}", r.warnings);
        let d = &r.host_logs["docker"];
        assert_eq!(d.cursor_at.as_deref(), Some("2027-01-15T08:00:00Z"));
        assert_eq!((d.shipped_events, d.reading), (61, true));
        let mut text = Vec::new();
        r.render(&mut text, false).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains("hostlog docker → /aws/ec2/p/docker — up to 2027-01-15T08:00:00Z, lag 0s, 61 shipped"),
            "{text}"
        );

        s.logs.host.insert(
            "system".into(),
            HostLogs {
                reading: false,
                last_error: Some("cannot start journalctl: No such file or directory".into()),
                ..Default::default()
            },
        );
        s.logs.host.get_mut("docker").unwrap().lag_seconds = 900.0;
        let r = report(&s, memory(), now());
        assert!(r.healthy, "the developers work on: {:?}", r.warnings);
        assert_eq!(
            r.warnings,
            [
                "host logs (docker): 900s behind in CloudWatch Logs (the journal keeps the entries)",
                "host logs (system): not reading the journal, retrying: cannot start journalctl: No such file or directory"
            ]
        );
    }

    #[test]
    fn a_checkpoint_that_cannot_be_written_warns() {
        let mut s = healthy();
        s.logs.enabled = true;
        s.logs.developers.insert(
            "dev1".into(),
            DeveloperLogs {
                checkpoint_error: Some("No space left on device (os error 28)".into()),
                ..Default::default()
            },
        );
        let r = report(&s, memory(), now());
        assert!(!r.healthy);
        assert_eq!(
            row(&r, "dev1").log_checkpoint_error.as_deref(),
            Some("No space left on device (os error 28)")
        );
        assert!(
            r.warnings[0].starts_with("dev1: container log shipping paused"),
            "{:?}",
            r.warnings
        );
    }

    #[test]
    fn log_files_rotated_away_unread_warn_with_their_size() {
        let mut s = healthy();
        s.logs.enabled = true;
        s.logs.developers.insert(
            "dev1".into(),
            DeveloperLogs {
                held_log_files: 2,
                lost_log_files: 3,
                lost_log_bytes: 3 << 20,
                ..Default::default()
            },
        );
        let r = report(&s, memory(), now());
        let d = row(&r, "dev1");
        assert_eq!(
            (d.log_files_held, d.log_files_lost, d.log_bytes_lost),
            (2, 3, 3 << 20)
        );
        assert!(!r.healthy);
        assert!(
            r.warnings[0].starts_with(
                "dev1: 3 container log file(s) (3.0 MiB) rotated away before they were shipped"
            ),
            "{:?}",
            r.warnings
        );
        // Files gone before the shipper saw them: how many is unknown, and said so.
        for (lost, gaps, says) in [
            (
                296,
                102,
                "dev1: 296 container log file(s) (3.0 MiB) and an unknown number more (102 gap(s)) rotated away",
            ),
            (
                0,
                1,
                "dev1: container log files (how many is unknown: 1 gap(s)) rotated away",
            ),
        ] {
            let mut s = healthy();
            s.logs.enabled = true;
            s.logs.developers.insert(
                "dev1".into(),
                DeveloperLogs {
                    lost_log_files: lost,
                    lost_log_bytes: 3 << 20,
                    log_gaps: gaps,
                    ..Default::default()
                },
            );
            let r = report(&s, memory(), now());
            assert!(r.warnings[0].starts_with(says), "{:?}", r.warnings);
        }
        // Files only held (the shipper is behind, nothing lost) are no problem.
        let mut s = healthy();
        s.logs.enabled = true;
        s.logs.developers.insert(
            "dev1".into(),
            DeveloperLogs {
                held_log_files: 2,
                ..Default::default()
            },
        );
        assert!(report(&s, memory(), now()).healthy);
    }

    #[test]
    fn pull_progress_and_a_failed_pull_per_developer() {
        let mut s = healthy();
        s.image = PullStatus {
            image: "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team:2".into(),
            registry: "123456789012.dkr.ecr.eu-west-1.amazonaws.com".into(),
            auth: "ecr".into(),
            running: Some(PullProgress {
                started: Some(now()),
                layers_done: 2,
                layers_total: 5,
                bytes_done: 10 << 20,
                bytes_total: 80 << 20,
            }),
            last_pull: None,
            last_progress: None,
        };
        let r = report(&s, memory(), now());
        assert!(r.healthy, "a pull running is no problem: {:?}", r.warnings);
        let i = r.image.as_ref().expect("image section");
        let p = i.pulling.as_ref().expect("pulling");
        assert_eq!((p.layers_done, p.layers_total), (2, 5));
        assert_eq!((p.bytes_done, p.bytes_total), (10 << 20, 80 << 20));
        assert_eq!(i.auth, "ecr");

        s.image.running = None;
        s.image.last_pull = Some((now(), Some("registry R refused the ECR token".into())));
        let r = report(&s, memory(), now());
        assert!(!r.healthy);
        for d in &r.developers {
            assert_eq!(
                d.pull_error.as_deref(),
                Some(
                    format!(
                        "pull of {} failed: registry R refused the ECR token",
                        s.image.image
                    )
                    .as_str()
                ),
                "{}",
                d.name
            );
        }
        assert_eq!(
            r.warnings,
            [format!(
                "image {}: last pull failed: registry R refused the ECR token",
                s.image.image
            )]
        );
        let mut out = Vec::new();
        r.render(&mut out, false).expect("render");
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.contains("last pull FAILED"), "{text}");
    }

    #[test]
    fn an_unmounted_volume() {
        let mut s = healthy();
        s.volume.mounted = false;
        s.volume.used_bytes = None;
        s.volume.error = Some("/dev/nvme1n1 is not mounted at /mnt/ebs-data".into());
        let r = report(&s, memory(), now());
        assert!(!r.healthy);
        assert_eq!(r.volume.used_percent, None);
        assert_eq!(
            r.warnings,
            ["volume: /dev/nvme1n1 is not mounted at /mnt/ebs-data"]
        );
    }

    #[test]
    fn a_halted_rollout_warns_and_a_running_one_shows_progress() {
        let mut s = healthy();
        assert!(
            report(&s, memory(), now()).rollout.is_none(),
            "nothing to roll out"
        );
        s.rollout = crate::containers::RolloutStatus {
            state: "rolling".into(),
            in_flight: Some("dev2".into()),
            in_flight_since: Some(now() - Duration::from_secs(12)),
            done: vec!["dev1".into()],
            pending: vec!["dev2".into()],
            halted: None,
        };
        let r = report(&s, memory(), now());
        assert!(
            r.healthy,
            "a rollout in progress is no problem: {:?}",
            r.warnings
        );
        let ro = r.rollout.as_ref().expect("rollout section");
        assert_eq!(
            (ro.state.as_str(), ro.in_flight_secs),
            ("rolling", Some(12))
        );
        let mut out = Vec::new();
        r.render(&mut out, false).expect("render");
        let text = String::from_utf8(out).expect("utf8");
        assert!(
            text.contains("rollout one-at-a-time — rolling: 1 of 2 done; waiting for dev2 to become healthy (12s)"),
            "{text}"
        );

        s.rollout.state = "halted".into();
        s.rollout.in_flight = None;
        s.rollout.halted = Some("dev2's new container is unhealthy; …".into());
        let r = report(&s, memory(), now());
        assert!(!r.healthy);
        assert_eq!(
            r.warnings,
            ["rollout halted: dev2's new container is unhealthy; …"]
        );
    }
}
