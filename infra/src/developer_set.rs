//! The developer set the agent polls: one `AWS::SSM::Parameter` (Type String) per host,
//! named by the contract (`/<project>/csagent/host-<N>/developers`), whose value is the
//! `[[developer]]` tables of the developers that host runs. The user data only names the
//! parameter (`developers.parameter`), so changing `--developers` changes this value and the
//! per-developer resources, never the instance: CloudFormation updates the parameter in place,
//! and the agent applies the new set within `developers.poll_interval`.
//!
//! Host N's parameter has logical id `HostNDevelopers` and lists the developers host N runs
//! (`Settings::host_list`). A standard-tier value holds at most 4 KB; 64 developers take
//! about 2.4 KB, or 4.7 KB with other sizes than the agent's defaults, which then use the
//! advanced tier (`tests` below holds that).

#[cfg(test)]
use crate::agent_config::developer_set_toml;
use crate::agent_config::developer_set_value;
use crate::cfn::{Resources, resource, sub};
use crate::settings::{Host, Settings};
use csagent_contract::names::developers_parameter;
use serde_json::{Value, json};

/// Logical id of host 1's developer-set parameter.
pub const HOST1_DEVELOPERS: &str = "Host1Developers";

/// Logical id of host `n`'s developer-set parameter.
pub fn parameter_id(n: u32) -> String {
    format!("Host{n}Developers")
}

/// The most a standard-tier parameter value may hold (bytes).
pub const STANDARD_VALUE_LIMIT: usize = 4096;

/// Host `host`'s parameter name, as a `Fn::Sub`.
pub fn parameter_name(host: u32) -> Value {
    sub(developers_parameter("${ProjectName}", host))
}

/// Host `host`'s parameter ARN, as a `Fn::Sub` (the name starts with '/', so it follows
/// `parameter` directly).
pub fn parameter_arn(host: u32) -> Value {
    sub(format!(
        "arn:${{AWS::Partition}}:ssm:${{AWS::Region}}:${{AWS::AccountId}}:parameter{}",
        developers_parameter("${ProjectName}", host)
    ))
}

/// Adds host `host`'s developer-set parameter with its developers.
pub fn add(res: &mut Resources, s: &Settings, host: &Host) {
    let value = developer_set_value(s, &host.developers);
    // Advanced (4 KB..8 KB, charged) only when the value needs it.
    let tier = if value.len() <= STANDARD_VALUE_LIMIT {
        "Standard"
    } else {
        "Advanced"
    };
    res.add(
        parameter_id(host.number),
        resource(
            "AWS::SSM::Parameter",
            json!({
                "Name": parameter_name(host.number),
                "Type": "String",
                "Tier": tier,
                "Description": sub(format!("csagent: the developers host {} of ${{ProjectName}} runs ([[developer]] tables; the agent polls it)", host.number)),
                "Value": value,
                // No Tags: CloudFormation takes them as a map here, and moto (which the
                // deployment tests run against) fails on a map; the parameter costs
                // nothing to attribute.
            }),
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_set_fits_a_standard_parameter() {
        let s = Settings {
            developers: crate::MAX_DEVELOPERS,
            base_port: 60000,
            ..Settings::default()
        };
        let value = developer_set_toml(&s.developer_list());
        assert!(
            value.len() <= STANDARD_VALUE_LIMIT,
            "{} bytes for {} developers",
            value.len(),
            s.developers
        );
    }

    #[test]
    fn the_arn_is_the_parameter_name_after_parameter() {
        assert_eq!(
            parameter_arn(1),
            sub(
                "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/${ProjectName}/csagent/host-1/developers"
            )
        );
    }
}
