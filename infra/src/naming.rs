//! Names shared by the template and the agent. They are part of the interface: the agent reads
//! these secrets, writes these log groups and publishes these metrics.

use crate::cfn::sub;
use crate::settings::Developer;
use serde_json::Value;

/// Value of the `ManagedBy` tag.
pub const MANAGED_BY: &str = "csagent-infra";

/// CloudWatch namespace of the agent's metrics (also the IAM condition on PutMetricData).
pub const METRICS_NAMESPACE: &str = "CodeServer";

/// Where the agent mounts the data volume: the `path` dimension of the data disk metrics.
pub const DATA_MOUNT: &str = "/mnt/ebs-data";

/// Device name of the data volume attachment (it appears as /dev/nvmeXn1 on Nitro).
pub const DATA_DEVICE: &str = "/dev/sdf";

/// Host metrics, dimension `InstanceId` (disk metrics add `path`).
pub const HOST_METRICS: [&str; 3] = ["mem_used_percent", "disk_used_percent", "disk_free"];

/// Per-developer metrics, dimensions `InstanceId` and `Developer`.
pub const DEVELOPER_METRICS: [&str; 7] = [
    "container_healthy",
    "container_running",
    "cpu_percent",
    "mem_used_bytes",
    "mem_used_percent",
    "restarts",
    "active",
];

/// Host roll-ups and the agent's own metrics, dimension `InstanceId`.
pub const ROLLUP_METRICS: [&str; 5] = [
    "developers_healthy",
    "developers_active",
    "agent_heartbeat",
    "secrets_staleness_seconds",
    "log_lag_seconds",
];

/// `<project>/dev<N>/password`, as a `Fn::Sub`.
pub fn password_secret_name(dev: &Developer) -> Value {
    sub(format!("${{ProjectName}}/{}/password", dev.name))
}

/// `<project>/dev<N>/claude-api-key`, as a `Fn::Sub`.
pub fn claude_key_secret_name(dev: &Developer) -> Value {
    sub(format!("${{ProjectName}}/{}/claude-api-key", dev.name))
}

/// `/aws/ec2/<project>/containers/dev<N>`, as a `Fn::Sub`.
pub fn container_log_group(dev: &Developer) -> Value {
    sub(format!("/aws/ec2/${{ProjectName}}/containers/{}", dev.name))
}

/// `/aws/ec2/<project>/agent`, as a `Fn::Sub`.
pub fn agent_log_group() -> Value {
    sub("/aws/ec2/${ProjectName}/agent")
}

/// `dev<N>.<domain>`, as a `Fn::Sub`.
pub fn developer_host(dev: &Developer) -> Value {
    sub(format!("{}.${{DomainName}}", dev.name))
}
