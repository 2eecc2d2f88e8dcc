//! What is published: metric names, units and dimensions, and the mapping from one
//! interval's samples to CloudWatch datums. Every datum of an interval carries the
//! interval's own timestamp, so a backlog sent later lands where it belongs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};

use super::collect::{DeveloperSample, HostSample};

/// Standard resolution: one datapoint per minute is all the alarms need, and
/// high resolution (1) costs more per alarm.
pub const STORAGE_RESOLUTION: i32 = 60;

// The names the template's alarms and dashboard use come from the contract.
use crate::metrics::QuotaReading;
pub use csagent_contract::metrics::{
    ACTIVE, AGENT_HEARTBEAT, CONTAINER_HEALTHY, CONTAINER_RUNNING, CPU_PERCENT, DEVELOPERS_ACTIVE,
    DEVELOPERS_HEALTHY, DIM_DEVELOPER, DIM_INSTANCE, DIM_PATH, DISK_FREE, DISK_QUOTA_USED_BYTES,
    DISK_QUOTA_USED_PERCENT, DISK_USED_PERCENT, LOG_FILES_LOST, LOG_LAG_SECONDS, MEM_USED_BYTES,
    MEM_USED_PERCENT, RESTARTS, SECRETS_STALENESS_SECONDS,
};
/// The agent's own count of datums it gave up on (not on the dashboard).
pub const METRICS_DROPPED: &str = "metrics_dropped";

/// Host metrics per disk path.
pub const PER_DISK: &[&str] = &[DISK_USED_PERCENT, DISK_FREE];
/// The metrics every developer has.
pub const PER_DEVELOPER: &[&str] = &csagent_contract::metrics::DEVELOPER_METRICS;
/// Per-developer metrics sent only with disk quota accounting on the volume.
pub const PER_DEVELOPER_QUOTA: &[&str] = &[DISK_QUOTA_USED_BYTES, DISK_QUOTA_USED_PERCENT];
/// Host-level metrics with only the InstanceId dimension.
pub const PER_HOST: &[&str] = &[
    MEM_USED_PERCENT,
    DEVELOPERS_HEALTHY,
    DEVELOPERS_ACTIVE,
    AGENT_HEARTBEAT,
    SECRETS_STALENESS_SECONDS,
    LOG_LAG_SECONDS,
    LOG_FILES_LOST,
    METRICS_DROPPED,
];

/// How many datums (= distinct custom metrics) one interval produces at most for
/// `developers` developers and `disks` disk paths (without disk quotas; each
/// developer adds [`PER_DEVELOPER_QUOTA`] with them).
pub fn datums_per_interval(developers: usize, disks: usize) -> usize {
    PER_HOST.len() + PER_DISK.len() * disks + PER_DEVELOPER.len() * developers
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Percent,
    Bytes,
    Count,
    Seconds,
}

impl Unit {
    fn sdk(self) -> StandardUnit {
        match self {
            Unit::Percent => StandardUnit::Percent,
            Unit::Bytes => StandardUnit::Bytes,
            Unit::Count => StandardUnit::Count,
            Unit::Seconds => StandardUnit::Seconds,
        }
    }
}

/// One value of one metric at one time, before it becomes an SDK `MetricDatum`.
#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    pub name: &'static str,
    pub dimensions: Vec<(&'static str, String)>,
    pub value: f64,
    pub unit: Unit,
    pub timestamp: SystemTime,
}

impl Datum {
    pub fn dimension(&self, name: &str) -> Option<&str> {
        self.dimensions
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn to_sdk(&self) -> MetricDatum {
        let mut b = MetricDatum::builder()
            .metric_name(self.name)
            .value(self.value)
            .unit(self.unit.sdk())
            .storage_resolution(STORAGE_RESOLUTION)
            .timestamp(DateTime::from(self.timestamp));
        for (k, v) in &self.dimensions {
            b = b.dimensions(Dimension::builder().name(*k).value(v).build());
        }
        b.build()
    }
}

/// What the agent reports about itself for one interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentSample {
    pub secrets_staleness_seconds: f64,
    pub log_lag_seconds: Option<f64>,
    /// Container log files lost since the previous interval's report; None
    /// without a log shipper (the metric is then left out).
    pub log_files_lost_since_last: Option<u64>,
    /// Datums dropped from the full buffer since the previous interval's report.
    pub dropped_since_last: u64,
    /// Each developer's disk quota use (empty without quota accounting).
    pub disk_quota: Vec<QuotaReading>,
}

/// Everything collected in one interval.
#[derive(Debug, Clone)]
pub struct Sample {
    pub timestamp: SystemTime,
    pub host: HostSample,
    /// Developers whose container state could be read (a Docker error leaves a
    /// developer out rather than reporting made-up zeros).
    pub developers: Vec<DeveloperSample>,
    pub agent: AgentSample,
}

/// `t` rounded down to a whole second: one interval's datums share it exactly.
pub fn whole_seconds(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// The datums for one interval. Values that are not finite are left out
/// (CloudWatch rejects the whole request for one NaN).
pub fn build(instance_id: &str, sample: &Sample) -> Vec<Datum> {
    let ts = sample.timestamp;
    let host = || vec![(DIM_INSTANCE, instance_id.to_string())];
    let mut out = Vec::with_capacity(datums_per_interval(
        sample.developers.len(),
        sample.host.disks.len(),
    ));
    let mut push = |name: &'static str, dimensions, value: f64, unit| {
        if value.is_finite() {
            out.push(Datum {
                name,
                dimensions,
                value,
                unit,
                timestamp: ts,
            });
        }
    };

    if let Some(p) = sample.host.mem_used_percent {
        push(MEM_USED_PERCENT, host(), p, Unit::Percent);
    }
    for d in &sample.host.disks {
        let dims = || {
            vec![
                (DIM_INSTANCE, instance_id.to_string()),
                (DIM_PATH, d.path.clone()),
            ]
        };
        push(DISK_USED_PERCENT, dims(), d.used_percent, Unit::Percent);
        push(DISK_FREE, dims(), d.free_bytes as f64, Unit::Bytes);
    }

    let mut healthy = 0u32;
    let mut active = 0u32;
    for dev in &sample.developers {
        let dims = || {
            vec![
                (DIM_INSTANCE, instance_id.to_string()),
                (DIM_DEVELOPER, dev.developer.clone()),
            ]
        };
        healthy += u32::from(dev.healthy);
        active += u32::from(dev.active);
        push(CONTAINER_HEALTHY, dims(), flag(dev.healthy), Unit::Count);
        push(CONTAINER_RUNNING, dims(), flag(dev.running), Unit::Count);
        if let Some(c) = dev.cpu_percent {
            push(CPU_PERCENT, dims(), c, Unit::Percent);
        }
        if let Some(m) = dev.mem_used_bytes {
            push(MEM_USED_BYTES, dims(), m as f64, Unit::Bytes);
        }
        if let Some(p) = dev.mem_used_percent {
            push(MEM_USED_PERCENT, dims(), p, Unit::Percent);
        }
        push(RESTARTS, dims(), dev.restarts as f64, Unit::Count);
        push(ACTIVE, dims(), flag(dev.active), Unit::Count);
    }
    for q in &sample.agent.disk_quota {
        let dims = || {
            vec![
                (DIM_INSTANCE, instance_id.to_string()),
                (DIM_DEVELOPER, q.developer.clone()),
            ]
        };
        push(
            DISK_QUOTA_USED_BYTES,
            dims(),
            q.used_bytes as f64,
            Unit::Bytes,
        );
        if let Some(limit) = q.limit_bytes.filter(|l| *l > 0) {
            let percent = q.used_bytes as f64 * 100.0 / limit as f64;
            push(DISK_QUOTA_USED_PERCENT, dims(), percent, Unit::Percent);
        }
    }
    push(DEVELOPERS_HEALTHY, host(), f64::from(healthy), Unit::Count);
    push(DEVELOPERS_ACTIVE, host(), f64::from(active), Unit::Count);

    push(AGENT_HEARTBEAT, host(), 1.0, Unit::Count);
    push(
        SECRETS_STALENESS_SECONDS,
        host(),
        sample.agent.secrets_staleness_seconds,
        Unit::Seconds,
    );
    if let Some(lag) = sample.agent.log_lag_seconds {
        push(LOG_LAG_SECONDS, host(), lag, Unit::Seconds);
    }
    if let Some(lost) = sample.agent.log_files_lost_since_last {
        push(LOG_FILES_LOST, host(), lost as f64, Unit::Count);
    }
    push(
        METRICS_DROPPED,
        host(),
        sample.agent.dropped_since_last as f64,
        Unit::Count,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::collect::DiskSample;

    fn dev(name: &str, running: bool, healthy: bool, active: bool) -> DeveloperSample {
        DeveloperSample {
            developer: name.into(),
            running,
            healthy,
            cpu_percent: Some(12.5),
            mem_used_bytes: Some(100 << 20),
            mem_used_percent: Some(2.5),
            restarts: 3,
            active,
        }
    }

    fn sample(devs: usize, log_lag: Option<f64>) -> Sample {
        Sample {
            timestamp: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            host: HostSample {
                mem_used_percent: Some(40.0),
                disks: vec![
                    DiskSample {
                        path: "/mnt/ebs-data".into(),
                        used_percent: 10.0,
                        free_bytes: 1 << 30,
                    },
                    DiskSample {
                        path: "/".into(),
                        used_percent: 50.0,
                        free_bytes: 2 << 30,
                    },
                ],
            },
            developers: (1..=devs)
                .map(|i| dev(&format!("dev{i}"), true, i % 2 == 0, i % 3 == 0))
                .collect(),
            agent: AgentSample {
                secrets_staleness_seconds: 30.0,
                log_lag_seconds: log_lag,
                // The shipper runs exactly when its lag is known.
                log_files_lost_since_last: log_lag.map(|_| 0),
                dropped_since_last: 0,
                disk_quota: Vec::new(),
            },
        }
    }

    #[test]
    fn disk_quota_use_is_sent_per_developer_with_a_percent_only_under_a_limit() {
        let mut s = sample(2, None);
        s.agent.disk_quota = vec![
            QuotaReading {
                developer: "dev1".into(),
                used_bytes: 45 << 20,
                limit_bytes: Some(50 << 20),
            },
            QuotaReading {
                developer: "dev2".into(),
                used_bytes: 1 << 20,
                limit_bytes: None,
            },
        ];
        let d = build("i-0abc", &s);
        let find = |n: &str, dev: &str| {
            d.iter()
                .find(|x| x.name == n && x.dimension(DIM_DEVELOPER) == Some(dev))
                .map(|x| (x.value, x.unit))
        };
        assert_eq!(
            find(DISK_QUOTA_USED_BYTES, "dev1"),
            Some(((45u64 << 20) as f64, Unit::Bytes))
        );
        assert_eq!(
            find(DISK_QUOTA_USED_PERCENT, "dev1"),
            Some((90.0, Unit::Percent))
        );
        assert_eq!(
            find(DISK_QUOTA_USED_BYTES, "dev2"),
            Some(((1u64 << 20) as f64, Unit::Bytes))
        );
        assert_eq!(find(DISK_QUOTA_USED_PERCENT, "dev2"), None);
        let plain = build("i-0abc", &sample(2, None)).len();
        assert_eq!(d.len(), plain + 3);
    }

    #[test]
    fn eight_developers_make_68_datums_with_the_right_dimensions() {
        let d = build("i-0abc", &sample(8, Some(1.5)));
        assert_eq!(d.len(), 68);
        assert_eq!(d.len(), datums_per_interval(8, 2));
        assert!(
            d.iter()
                .all(|x| x.dimension(DIM_INSTANCE) == Some("i-0abc"))
        );
        for x in &d {
            let expected = match x.name {
                DISK_USED_PERCENT | DISK_FREE => 2,
                n if PER_DEVELOPER.contains(&n) && x.dimension(DIM_DEVELOPER).is_some() => 2,
                _ => 1,
            };
            assert_eq!(x.dimensions.len(), expected, "{x:?}");
        }
        let by_name = |n: &str| d.iter().filter(|x| x.name == n).count();
        assert_eq!(by_name(CPU_PERCENT), 8);
        assert_eq!(by_name(MEM_USED_PERCENT), 9, "8 developers + the host");
        assert_eq!(by_name(DISK_FREE), 2);
        let value = |n: &str| d.iter().find(|x| x.name == n).map(|x| x.value);
        assert_eq!(value(DEVELOPERS_HEALTHY), Some(4.0));
        assert_eq!(value(DEVELOPERS_ACTIVE), Some(2.0));
        assert_eq!(value(AGENT_HEARTBEAT), Some(1.0));
        assert_eq!(value(LOG_LAG_SECONDS), Some(1.5));
        assert_eq!(value(LOG_FILES_LOST), Some(0.0));
        let ts = d[0].timestamp;
        assert!(d.iter().all(|x| x.timestamp == ts));
    }

    #[test]
    fn log_lag_is_left_out_when_unknown_and_nan_is_never_sent() {
        let mut s = sample(1, None);
        s.agent.secrets_staleness_seconds = f64::NAN;
        let d = build("i-1", &s);
        assert!(d.iter().all(|x| x.name != LOG_LAG_SECONDS));
        assert!(d.iter().all(|x| x.name != LOG_FILES_LOST));
        assert!(d.iter().all(|x| x.name != SECRETS_STALENESS_SECONDS));
        assert!(d.iter().all(|x| x.value.is_finite()));
    }

    #[test]
    fn sdk_datum_has_unit_resolution_timestamp_and_dimensions() {
        let d = build("i-1", &sample(1, None));
        let cpu = d
            .iter()
            .find(|x| x.name == CPU_PERCENT)
            .expect("cpu datum")
            .to_sdk();
        assert_eq!(cpu.unit(), Some(&StandardUnit::Percent));
        assert_eq!(cpu.storage_resolution(), Some(60));
        assert_eq!(cpu.timestamp().map(|t| t.secs()), Some(1_700_000_000));
        let dims: Vec<(&str, &str)> = cpu
            .dimensions()
            .iter()
            .map(|x| (x.name().unwrap_or(""), x.value().unwrap_or("")))
            .collect();
        assert_eq!(dims, vec![("InstanceId", "i-1"), ("Developer", "dev1")]);
    }

    #[test]
    fn whole_seconds_truncates() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_999);
        assert_eq!(
            whole_seconds(t),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
    }
}
