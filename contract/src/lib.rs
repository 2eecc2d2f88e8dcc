//! `csagent-contract`: the names and limits the agent (`csagent`) and the CloudFormation it
//! runs under (`infra`) must agree on. The template creates the secrets the agent reads, the
//! log groups it writes, alarms and a dashboard on the metrics it publishes, and parameters
//! whose `AllowedPattern` must accept exactly what infra's command line accepts. Each of
//! those is defined here once and used by both crates, so they cannot drift apart.
//!
//! No dependencies: both crates build it, and it holds only constants and pure functions.

pub mod labels;
pub mod metrics;
pub mod names;
pub mod validate;

/// Most developers one host (one agent) serves. How many fit a given instance type is
/// infra's capacity model (`infra/src/capacity.rs`); this is the agent's own bound.
pub const MAX_DEVELOPERS: u32 = 64;

/// Most developers one environment (one template, one ALB) serves: an ALB takes at most 100
/// listener rules and 100 target groups (default quotas), one each per developer.
pub const MAX_ENVIRONMENT_DEVELOPERS: u32 = 100;

/// A developer container's memory limit when nothing else is asked for, GiB (the agent's
/// `containers.memory`; infra's capacity model counts with it).
pub const DEFAULT_DEVELOPER_MEMORY_GIB: u32 = 4;

/// A developer container's soft memory reservation when nothing else is asked for, GiB (the
/// agent's `containers.memory_reservation`).
pub const DEFAULT_DEVELOPER_MEMORY_RESERVATION_GIB: u32 = 3;

/// A developer container's CPU limit when nothing else is asked for, in thousandths of a CPU
/// (the agent's `containers.cpus`, 1.5).
pub const DEFAULT_DEVELOPER_CPU_MILLIS: u32 = 1500;

/// Log-group retention values CloudWatch Logs accepts (PutRetentionPolicy), in days.
pub const LOG_RETENTION_DAYS: [u32; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// Retention of the container and agent log groups when nothing else is asked for.
pub const DEFAULT_LOG_RETENTION_DAYS: u32 = 30;

/// Value the template stores in a developer's Claude key secret until an admin puts the real
/// key in; the agent treats it as "no key". Not a credential.
pub const CLAUDE_KEY_PLACEHOLDER: &str = "REPLACE_WITH_ACTUAL_KEY";

/// Tag key on the temporary volumes `csagent restore` creates, with the project name as its
/// value: the instance role may create a volume only with this tag, and attach, detach and
/// delete only volumes that carry it.
pub const RESTORE_TAG: &str = "csagent-restore";

/// Where the agent mounts the data volume: the `path` dimension of the data disk metrics.
pub const DATA_MOUNT: &str = "/mnt/ebs-data";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_retention_is_an_accepted_value() {
        assert!(LOG_RETENTION_DAYS.contains(&DEFAULT_LOG_RETENTION_DAYS));
    }
}
