//! Names the template gives the resources the agent uses, as `Fn::Sub` values built from the
//! contract's templates: the agent reads these secrets, writes these log groups and is served
//! at these host names. The metric names are the contract's ([`csagent_contract::metrics`]).

use crate::cfn::sub;
use crate::settings::Developer;
use csagent_contract::names::{
    AGENT_LOG_GROUP, CLAUDE_KEY_SECRET, CONTAINER_LOG_GROUP, DOCKER_LOG_GROUP, PASSWORD_SECRET,
    SYSTEM_LOG_GROUP, render,
};
use serde_json::Value;

pub use csagent_contract::metrics::{DEVELOPER_METRICS, HOST_METRICS, ROLLUP_METRICS};

/// Device name of the data volume attachment (it appears as /dev/nvmeXn1 on Nitro).
pub const DATA_DEVICE: &str = "/dev/sdf";

/// What stands for `{project}` in the names: the ProjectName Parameter.
const PROJECT: &str = "${ProjectName}";

/// `<project>/dev<N>/password`, as a `Fn::Sub`.
pub fn password_secret_name(dev: &Developer) -> Value {
    sub(render(PASSWORD_SECRET, PROJECT, &dev.name))
}

/// `<project>/dev<N>/claude-api-key`, as a `Fn::Sub`.
pub fn claude_key_secret_name(dev: &Developer) -> Value {
    sub(render(CLAUDE_KEY_SECRET, PROJECT, &dev.name))
}

/// `/aws/ec2/<project>/containers/dev<N>`, as a `Fn::Sub`.
pub fn container_log_group(dev: &Developer) -> Value {
    sub(render(CONTAINER_LOG_GROUP, PROJECT, &dev.name))
}

/// `/aws/ec2/<project>/agent`, as a `Fn::Sub`.
pub fn agent_log_group() -> Value {
    sub(render(AGENT_LOG_GROUP, PROJECT, ""))
}

/// `/aws/ec2/<project>/system` (host logs: OOM kills, systemd about the agent), as a `Fn::Sub`.
pub fn system_log_group() -> Value {
    sub(render(SYSTEM_LOG_GROUP, PROJECT, ""))
}

/// `/aws/ec2/<project>/docker` (host logs: docker and containerd), as a `Fn::Sub`.
pub fn docker_log_group() -> Value {
    sub(render(DOCKER_LOG_GROUP, PROJECT, ""))
}

/// `dev<N>.<domain>`, as a `Fn::Sub`.
pub fn developer_host(dev: &Developer) -> Value {
    sub(format!("{}.${{DomainName}}", dev.name))
}
