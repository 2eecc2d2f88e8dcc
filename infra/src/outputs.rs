//! Outputs: each developer's URL, the ALB's DNS name, the instance and data volume ids, the
//! team image's ECR repository, and the alarm topic.

use crate::cfn::{get_att, r#ref, sub};
use crate::registry;
use crate::settings::Settings;
use serde_json::{Map, Value, json};

/// The Outputs section.
pub fn outputs(s: &Settings) -> Value {
    let mut o = Map::new();
    for dev in s.developer_list() {
        o.insert(
            format!("{}Url", dev.id()),
            json!({
                "Description": format!("code-server URL of {} (port {})", dev.name, dev.port),
                "Value": sub(format!("https://{}.${{DomainName}}", dev.name)),
            }),
        );
    }
    o.insert(
        "LoadBalancerDnsName".into(),
        json!({ "Description": "DNS name of the ALB", "Value": get_att("LoadBalancer", "DNSName") }),
    );
    o.insert(
        "InstanceId".into(),
        json!({ "Description": "Id of the code-server host (SSM Session Manager target)", "Value": r#ref("Instance") }),
    );
    o.insert(
        "DataVolumeId".into(),
        json!({ "Description": "Id of the data volume (the agent's volume_id)", "Value": r#ref("DataVolume") }),
    );
    for host in s.host_list().iter().skip(1) {
        let (first, last) = match (host.developers.first(), host.developers.last()) {
            (Some(f), Some(l)) => (f.name.clone(), l.name.clone()),
            _ => continue,
        };
        o.insert(
            host.id("InstanceId"),
            json!({
                "Description": format!("Id of code-server host {} ({first}..{last})", host.number),
                "Value": r#ref(&host.id("Instance")),
            }),
        );
        o.insert(
            host.id("DataVolumeId"),
            json!({
                "Description": format!("Id of host {}'s data volume", host.number),
                "Value": r#ref(&host.id("DataVolume")),
            }),
        );
    }
    o.insert(
        "TeamImageRepositoryUri".into(),
        json!({
            "Description": "ECR repository of the team image: push <uri>:<tag> there (images/README.md)",
            "Value": registry::repository_uri(),
        }),
    );
    o.insert(
        "BackupVaultName".into(),
        json!({
            "Description": "AWS Backup vault of the daily recovery points (kept when the stack is deleted)",
            "Value": crate::backup::vault_name(),
        }),
    );
    crate::sso::outputs(s, &mut o);
    o.insert(
        "AlarmTopicArn".into(),
        json!({ "Description": "SNS topic the paging alarms notify", "Value": r#ref(crate::monitoring::ALARM_TOPIC) }),
    );
    Value::Object(o)
}
