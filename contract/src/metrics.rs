//! The agent's CloudWatch metrics: namespace, dimension and metric names. The template's IAM
//! policy, alarms and dashboard refer to these; the agent publishes them.

/// Namespace of the agent's metrics (also the IAM condition on PutMetricData).
pub const NAMESPACE: &str = "CodeServer";

/// Dimension every metric has: the EC2 instance id.
pub const DIM_INSTANCE: &str = "InstanceId";
/// Dimension of the per-developer metrics: the developer's name.
pub const DIM_DEVELOPER: &str = "Developer";
/// Dimension of the disk metrics: the mount path.
pub const DIM_PATH: &str = "path";

// Host (InstanceId); the disk ones also have `path`. The CloudWatch agent's names.
pub const MEM_USED_PERCENT: &str = "mem_used_percent";
pub const DISK_USED_PERCENT: &str = "disk_used_percent";
pub const DISK_FREE: &str = "disk_free";
// Per developer (InstanceId, Developer).
pub const CONTAINER_HEALTHY: &str = "container_healthy";
pub const CONTAINER_RUNNING: &str = "container_running";
pub const CPU_PERCENT: &str = "cpu_percent";
pub const MEM_USED_BYTES: &str = "mem_used_bytes";
// (`mem_used_percent` again, with the Developer dimension: of the container's limit.)
pub const RESTARTS: &str = "restarts";
pub const ACTIVE: &str = "active";
/// Bytes the developer's home holds, as its disk quota counts them (only with
/// quota accounting on the data volume).
pub const DISK_QUOTA_USED_BYTES: &str = "disk_quota_used_bytes";
/// Of the developer's disk quota (only while a limit is in force).
pub const DISK_QUOTA_USED_PERCENT: &str = "disk_quota_used_percent";
/// The template alarms, and status warns, when a developer's home holds this
/// share of their disk quota.
pub const DISK_QUOTA_ALARM_PERCENT: f64 = 90.0;
// Roll-ups (InstanceId).
pub const DEVELOPERS_HEALTHY: &str = "developers_healthy";
pub const DEVELOPERS_ACTIVE: &str = "developers_active";
// The agent itself (InstanceId).
pub const AGENT_HEARTBEAT: &str = "agent_heartbeat";
pub const SECRETS_STALENESS_SECONDS: &str = "secrets_staleness_seconds";
pub const LOG_LAG_SECONDS: &str = "log_lag_seconds";
/// Container log files Docker rotated away before the shipper read them, per
/// interval (a gap, files gone unseen, counts 1): their lines never reach
/// CloudWatch Logs. Sent while the log shipper runs, 0 when nothing was lost.
pub const LOG_FILES_LOST: &str = "log_files_lost";

/// Host metrics, dimension `InstanceId` (disk metrics add `path`).
pub const HOST_METRICS: [&str; 3] = [MEM_USED_PERCENT, DISK_USED_PERCENT, DISK_FREE];

/// Per-developer metrics, dimensions `InstanceId` and `Developer`.
pub const DEVELOPER_METRICS: [&str; 7] = [
    CONTAINER_HEALTHY,
    CONTAINER_RUNNING,
    CPU_PERCENT,
    MEM_USED_BYTES,
    MEM_USED_PERCENT,
    RESTARTS,
    ACTIVE,
];

/// Host roll-ups and the agent's own metrics that the dashboard shows, dimension `InstanceId`.
pub const ROLLUP_METRICS: [&str; 6] = [
    DEVELOPERS_HEALTHY,
    DEVELOPERS_ACTIVE,
    AGENT_HEARTBEAT,
    SECRETS_STALENESS_SECONDS,
    LOG_LAG_SECONDS,
    LOG_FILES_LOST,
];
