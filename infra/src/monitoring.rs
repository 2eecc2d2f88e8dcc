//! Log groups with retention, one SNS topic (plus an optional e-mail subscription) that every
//! alarm notifies, the alarms, and a dashboard of the agent's metrics.
//!
//! Alarms: EC2 CPU; data-disk `disk_used_percent` > 85; `mem_used_percent` > 90; each
//! developer's `container_healthy` < 1; any developer's `disk_quota_used_percent` ≥ 90
//! (one Metrics Insights alarm over all developers, not one per developer: the stack's
//! 500-resource limit); and `agent_heartbeat` missing (missing data is breaching, so a
//! dead agent or a stopped host alarms).

use crate::cfn::{Resources, name_tag, r#ref, resource, skip_checkov, sub, tags, with};
use crate::naming::{agent_log_group, container_log_group, docker_log_group, system_log_group};
use crate::settings::{Developer, Settings};
use csagent_contract::DATA_MOUNT;
use csagent_contract::metrics::{
    ACTIVE, AGENT_HEARTBEAT, CONTAINER_HEALTHY, CONTAINER_RUNNING, DEVELOPER_METRICS,
    DEVELOPERS_ACTIVE, DEVELOPERS_HEALTHY, DIM_DEVELOPER, DIM_INSTANCE, DIM_PATH, DISK_FREE,
    DISK_QUOTA_ALARM_PERCENT, DISK_QUOTA_USED_PERCENT, DISK_USED_PERCENT, LOG_LAG_SECONDS,
    MEM_USED_PERCENT, NAMESPACE, RESTARTS, SECRETS_STALENESS_SECONDS,
};
use serde_json::{Value, json};

const LOG_KMS_REASON: &str = "Log groups use CloudWatch Logs' default encryption at rest; a customer managed KMS key would add cost and a key policy for the logs service without narrowing who can read them.";

fn instance_dimension() -> Value {
    json!({ "Name": DIM_INSTANCE, "Value": r#ref("Instance") })
}

struct AlarmSpec<'a> {
    description: Value,
    namespace: &'a str,
    metric: &'a str,
    dimensions: Value,
    statistic: &'a str,
    period: u32,
    evaluation_periods: u32,
    comparison: &'a str,
    threshold: f64,
    treat_missing: &'a str,
    extra_tags: Vec<(&'a str, Value)>,
}

fn alarm(spec: AlarmSpec<'_>) -> Value {
    resource(
        "AWS::CloudWatch::Alarm",
        json!({
            "AlarmDescription": spec.description,
            "Namespace": spec.namespace,
            "MetricName": spec.metric,
            "Dimensions": spec.dimensions,
            "Statistic": spec.statistic,
            "Period": spec.period,
            "EvaluationPeriods": spec.evaluation_periods,
            "DatapointsToAlarm": spec.evaluation_periods,
            "ComparisonOperator": spec.comparison,
            "Threshold": spec.threshold,
            "TreatMissingData": spec.treat_missing,
            "AlarmActions": [r#ref("AlarmTopic")],
            "OKActions": [r#ref("AlarmTopic")],
            "Tags": tags(&spec.extra_tags),
        }),
    )
}

/// Logical id of the agent's log group.
pub const AGENT_LOG_GROUP_ID: &str = "AgentLogGroup";
/// Logical ids of the host log groups (journal entries the agent ships).
pub const SYSTEM_LOG_GROUP_ID: &str = "SystemLogGroup";
pub const DOCKER_LOG_GROUP_ID: &str = "DockerLogGroup";

/// Logical id of a developer's container log group.
pub fn developer_log_group_id(dev: &Developer) -> String {
    format!("{}LogGroup", dev.id())
}

/// Logical ids of every log group the stack creates.
pub fn log_group_ids(s: &Settings) -> Vec<String> {
    [AGENT_LOG_GROUP_ID, SYSTEM_LOG_GROUP_ID, DOCKER_LOG_GROUP_ID]
        .into_iter()
        .map(str::to_string)
        .chain(s.developer_list().iter().map(developer_log_group_id))
        .collect()
}

/// Adds log groups, the alarm topic, alarms and the dashboard.
pub fn add(res: &mut Resources, s: &Settings) {
    // Log groups are deleted with the stack, explicitly (a kept group would block re-creating
    // the stack; logs worth keeping longer get a longer LogRetentionDays, not a Retain).
    let log_group = |name: Value, extra: &[(&str, Value)]| {
        let group = resource(
            "AWS::Logs::LogGroup",
            json!({
                "LogGroupName": name,
                "RetentionInDays": r#ref("LogRetentionDays"),
                "Tags": tags(extra),
            }),
        );
        let group = with(group, "DeletionPolicy", json!("Delete"));
        let group = with(group, "UpdateReplacePolicy", json!("Delete"));
        skip_checkov(group, &[("CKV_AWS_158", LOG_KMS_REASON)])
    };
    res.add(AGENT_LOG_GROUP_ID, log_group(agent_log_group(), &[]));
    // The agent's host-log shipper writes these (the role's logs statement covers them).
    res.add(SYSTEM_LOG_GROUP_ID, log_group(system_log_group(), &[]));
    res.add(DOCKER_LOG_GROUP_ID, log_group(docker_log_group(), &[]));
    for dev in s.developer_list() {
        res.add(
            developer_log_group_id(&dev),
            log_group(
                container_log_group(&dev),
                &[("Developer", Value::from(dev.name.clone()))],
            ),
        );
    }

    res.add(
        "AlarmTopic",
        skip_checkov(
            resource(
                "AWS::SNS::Topic",
                json!({
                    "DisplayName": sub("${ProjectName} alarms"),
                    "Tags": tags(&[name_tag("alarms")]),
                }),
            ),
            &[(
                "CKV_AWS_26",
                "Alarm notifications carry no secrets. CloudWatch alarms cannot publish to a topic encrypted with the AWS managed key alias/aws/sns, and a customer managed key only for this topic is not worth its cost here.",
            )],
        ),
    );
    res.add(
        "AlarmEmailSubscription",
        with(
            resource(
                "AWS::SNS::Subscription",
                json!({
                    "TopicArn": r#ref("AlarmTopic"),
                    "Protocol": "email",
                    "Endpoint": r#ref("AlarmEmail"),
                }),
            ),
            "Condition",
            json!("HasAlarmEmail"),
        ),
    );

    res.add(
        "HighCpuAlarm",
        alarm(AlarmSpec {
            description: sub("${ProjectName}: host CPU above 80% for 10 minutes"),
            namespace: "AWS/EC2",
            metric: "CPUUtilization",
            dimensions: json!([instance_dimension()]),
            statistic: "Average",
            period: 300,
            evaluation_periods: 2,
            comparison: "GreaterThanThreshold",
            threshold: 80.0,
            treat_missing: "missing",
            extra_tags: vec![],
        }),
    );
    res.add(
        "DataDiskAlarm",
        alarm(AlarmSpec {
            description: sub(format!(
                "${{ProjectName}}: data volume {DATA_MOUNT} more than 85% used"
            )),
            namespace: NAMESPACE,
            metric: DISK_USED_PERCENT,
            dimensions: json!([instance_dimension(), { "Name": DIM_PATH, "Value": DATA_MOUNT }]),
            statistic: "Maximum",
            period: 300,
            evaluation_periods: 1,
            comparison: "GreaterThanThreshold",
            threshold: 85.0,
            treat_missing: "missing",
            extra_tags: vec![],
        }),
    );
    res.add("DiskQuotaAlarm", disk_quota_alarm());
    res.add(
        "MemoryAlarm",
        alarm(AlarmSpec {
            description: sub("${ProjectName}: host memory more than 90% used for 10 minutes"),
            namespace: NAMESPACE,
            metric: MEM_USED_PERCENT,
            dimensions: json!([instance_dimension()]),
            statistic: "Average",
            period: 300,
            evaluation_periods: 2,
            comparison: "GreaterThanThreshold",
            threshold: 90.0,
            treat_missing: "missing",
            extra_tags: vec![],
        }),
    );
    res.add(
        "AgentHeartbeatAlarm",
        alarm(AlarmSpec {
            description: sub(
                "${ProjectName}: no agent_heartbeat for 5 minutes (agent dead, host stopped or CloudWatch unreachable)",
            ),
            namespace: NAMESPACE,
            metric: AGENT_HEARTBEAT,
            dimensions: json!([instance_dimension()]),
            statistic: "Sum",
            period: 60,
            evaluation_periods: 5,
            comparison: "LessThanThreshold",
            threshold: 1.0,
            treat_missing: "breaching",
            extra_tags: vec![],
        }),
    );
    for dev in s.developer_list() {
        res.add(
            format!("{}ContainerHealthAlarm", dev.id()),
            alarm(AlarmSpec {
                description: sub(format!(
                    "${{ProjectName}}: {}'s code-server container unhealthy for 5 minutes",
                    dev.name
                )),
                namespace: NAMESPACE,
                metric: CONTAINER_HEALTHY,
                dimensions: json!([
                    instance_dimension(),
                    { "Name": DIM_DEVELOPER, "Value": dev.name },
                ]),
                statistic: "Maximum",
                period: 60,
                evaluation_periods: 5,
                comparison: "LessThanThreshold",
                threshold: 1.0,
                // A silent agent is the heartbeat alarm's job; do not fire N more alarms.
                treat_missing: "missing",
                extra_tags: vec![("Developer", Value::from(dev.name.clone()))],
            }),
        );
    }

    res.add(
        "Dashboard",
        resource(
            "AWS::CloudWatch::Dashboard",
            json!({
                "DashboardName": sub("${ProjectName}-${AWS::Region}"),
                "DashboardBody": sub(dashboard_body()),
            }),
        ),
    );
}

/// The fullest developer home, as a share of its disk quota, on this stack's
/// instance. The agent sends `disk_quota_used_percent` only while a quota is in
/// force (`containers.disk_quota`), so without one the alarm has no data and
/// stays OK.
fn disk_quota_alarm() -> Value {
    let query = format!(
        "SELECT MAX({DISK_QUOTA_USED_PERCENT}) FROM SCHEMA(\"{NAMESPACE}\", {DIM_DEVELOPER}, {DIM_INSTANCE}) WHERE {DIM_INSTANCE} = '${{Instance}}'"
    );
    resource(
        "AWS::CloudWatch::Alarm",
        json!({
            "AlarmDescription": sub(format!(
                "${{ProjectName}}: a developer's home holds {DISK_QUOTA_ALARM_PERCENT:.0}% or more of its disk quota (csagent status shows whose)"
            )),
            "Metrics": [{
                "Id": "fullest",
                "Expression": sub(query),
                "Period": 300,
                "ReturnData": true,
            }],
            "EvaluationPeriods": 1,
            "DatapointsToAlarm": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "Threshold": DISK_QUOTA_ALARM_PERCENT,
            "TreatMissingData": "notBreaching",
            "AlarmActions": [r#ref("AlarmTopic")],
            "OKActions": [r#ref("AlarmTopic")],
            "Tags": tags(&[]),
        }),
    )
}

/// A metric line `[namespace, name, dim, value, ...]` for the dashboard.
fn host_metric(metric: &str, extra: &[&str]) -> Value {
    let mut line = vec![
        Value::from(NAMESPACE),
        Value::from(metric),
        Value::from(DIM_INSTANCE),
        Value::from("${Instance}"),
    ];
    line.extend(extra.iter().map(|v| Value::from(*v)));
    Value::Array(line)
}

fn widget(x: u32, y: u32, title: &str, metrics: Value, extra: Value) -> Value {
    let mut properties = json!({
        "title": title,
        "region": "${AWS::Region}",
        "view": "timeSeries",
        "stacked": false,
        "period": 60,
        "metrics": metrics,
    });
    if let (Some(p), Some(e)) = (properties.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            p.insert(k.clone(), v.clone());
        }
    }
    json!({ "type": "metric", "x": x, "y": y, "width": 12, "height": 6, "properties": properties })
}

/// A per-developer graph: one line per developer through a SEARCH expression, so the graph
/// follows the developer count without listing every developer.
fn developer_widget(x: u32, y: u32, metric: &str, stat: &str) -> Value {
    let expression = format!(
        "SEARCH('{{{NAMESPACE},{DIM_INSTANCE},{DIM_DEVELOPER}}} MetricName=\"{metric}\" {DIM_INSTANCE}=\"${{Instance}}\"', '{stat}', 60)"
    );
    widget(
        x,
        y,
        &format!("{metric} per developer"),
        json!([[{ "expression": expression, "id": "e1", "label": "" }]]),
        json!({}),
    )
}

/// The dashboard body as a `Fn::Sub` template (`${Instance}`, `${AWS::Region}`).
pub fn dashboard_body() -> String {
    let mut widgets = vec![
        widget(
            0,
            0,
            "Host CPU (AWS/EC2)",
            json!([["AWS/EC2", "CPUUtilization", "InstanceId", "${Instance}"]]),
            json!({ "yAxis": { "left": { "min": 0, "max": 100 } } }),
        ),
        widget(
            12,
            0,
            "Host memory and disk used %",
            json!([
                host_metric(MEM_USED_PERCENT, &[]),
                host_metric(DISK_USED_PERCENT, &[DIM_PATH, DATA_MOUNT]),
                host_metric(DISK_USED_PERCENT, &[DIM_PATH, "/"]),
            ]),
            json!({ "yAxis": { "left": { "min": 0, "max": 100 } } }),
        ),
        widget(
            0,
            6,
            "Disk free (bytes)",
            json!([
                host_metric(DISK_FREE, &[DIM_PATH, DATA_MOUNT]),
                host_metric(DISK_FREE, &[DIM_PATH, "/"]),
            ]),
            json!({}),
        ),
        widget(
            12,
            6,
            "Developers healthy / active",
            json!([
                host_metric(DEVELOPERS_HEALTHY, &[]),
                host_metric(DEVELOPERS_ACTIVE, &[]),
            ]),
            json!({}),
        ),
        widget(
            0,
            12,
            "Agent heartbeat",
            json!([host_metric(AGENT_HEARTBEAT, &[])]),
            json!({ "stat": "Sum" }),
        ),
        widget(
            12,
            12,
            "Agent lag (seconds)",
            json!([
                host_metric(SECRETS_STALENESS_SECONDS, &[]),
                host_metric(LOG_LAG_SECONDS, &[]),
            ]),
            json!({ "stat": "Maximum" }),
        ),
    ];
    let mut y = 18;
    for (i, metric) in DEVELOPER_METRICS.iter().enumerate() {
        let stat = match *metric {
            CONTAINER_HEALTHY | CONTAINER_RUNNING | ACTIVE => "Minimum",
            RESTARTS => "Maximum",
            _ => "Average",
        };
        let x = if i % 2 == 0 { 0 } else { 12 };
        widgets.push(developer_widget(x, y, metric, stat));
        if i % 2 == 1 {
            y += 6;
        }
    }
    json!({ "widgets": widgets }).to_string()
}
