//! Log groups with retention, one SNS topic (plus an optional e-mail subscription) that every
//! paging alarm notifies, the alarms, and a dashboard of the agent's metrics.
//!
//! Alarms: EC2 CPU; data-disk `disk_used_percent` > 85; `mem_used_percent` > 90; each
//! developer's `container_healthy` < 1; any developer's `disk_quota_used_percent` ≥ 90
//! (one Metrics Insights alarm over all developers, not one per developer: the stack's
//! 500-resource limit); `log_files_lost` ≥ 1 in 5 minutes (container log lines that will
//! never reach CloudWatch Logs); and a dead agent on a running host.
//!
//! A dead agent is three alarms per host, so that a stopped host (the schedule, the idle stop,
//! an admin) does not page: an alarm that cries wolf every night gets ignored.
//! 1. `AgentHeartbeatAlarm`: `agent_heartbeat` missing for 5 minutes (missing data is
//!    breaching). No actions: it is also in ALARM whenever the host is stopped.
//! 2. `HostStoppedAlarm`: `AWS/EC2` `StatusCheckFailed` missing for 3 minutes. EC2 publishes
//!    it (0 or 1, free, every minute) only while the instance runs, and the threshold `< 0`
//!    never breaches on a real value, so it is in ALARM exactly when the host is not running.
//!    No actions.
//! 3. `AgentDownAlarm` (composite): heartbeat in ALARM and host-stopped not, i.e. the agent
//!    is dead, the host hung (its status check fails, which is still data) or CloudWatch
//!    unreachable, on a running host. It notifies the topic; host-stopped is also its actions
//!    suppressor, which covers the minutes around a stop and a start when the two disagree
//!    ([`SUPPRESSOR_WAIT_SECONDS`], [`SUPPRESSOR_EXTENSION_SECONDS`]).

use crate::cfn::{Resources, name_tag, r#ref, resource, skip_checkov, sub, tags, with};
use crate::naming::{agent_log_group, container_log_group, docker_log_group, system_log_group};
use crate::settings::{Developer, Host, Settings};
use csagent_contract::DATA_MOUNT;
use csagent_contract::metrics::{
    ACTIVE, AGENT_HEARTBEAT, CONTAINER_HEALTHY, CONTAINER_RUNNING, DEVELOPER_METRICS,
    DEVELOPERS_ACTIVE, DEVELOPERS_HEALTHY, DIM_DEVELOPER, DIM_INSTANCE, DIM_PATH, DISK_FREE,
    DISK_QUOTA_ALARM_PERCENT, DISK_QUOTA_USED_PERCENT, DISK_USED_PERCENT, LOG_FILES_LOST,
    LOG_LAG_SECONDS, MEM_USED_PERCENT, NAMESPACE, RESTARTS, SECRETS_STALENESS_SECONDS,
};
use serde_json::{Value, json};

const LOG_KMS_REASON: &str = "Log groups use CloudWatch Logs' default encryption at rest; a customer managed KMS key would add cost and a key policy for the logs service without narrowing who can read them.";

fn instance_dimension(instance: &str) -> Value {
    json!({ "Name": DIM_INSTANCE, "Value": r#ref(instance) })
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

/// A metric alarm that notifies the topic on ALARM and on OK.
fn alarm(spec: AlarmSpec<'_>) -> Value {
    notify(signal(spec))
}

/// A metric alarm without actions: an input of a composite alarm, not a page.
fn signal(spec: AlarmSpec<'_>) -> Value {
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
            "Tags": tags(&spec.extra_tags),
        }),
    )
}

/// `alarm` (metric or composite) with the topic as its ALARM and OK action.
fn notify(mut alarm: Value) -> Value {
    if let Some(p) = alarm["Properties"].as_object_mut() {
        p.insert("AlarmActions".into(), json!([r#ref(ALARM_TOPIC)]));
        p.insert("OKActions".into(), json!([r#ref(ALARM_TOPIC)]));
    }
    alarm
}

/// Logical id of the SNS topic the paging alarms notify.
pub const ALARM_TOPIC: &str = "AlarmTopic";
/// Logical ids (host 1; `HostN…` for host N) of a host's agent alarms (module doc).
pub const HEARTBEAT_ALARM: &str = "AgentHeartbeatAlarm";
pub const HOST_STOPPED_ALARM: &str = "HostStoppedAlarm";
pub const AGENT_DOWN_ALARM: &str = "AgentDownAlarm";

/// How long `AgentDownAlarm` holds its actions, once in ALARM, for host-stopped to follow. At
/// a stop the heartbeats end at the agent's SIGTERM, when shutdown begins, and the status
/// metric only when the instance has stopped: with 5 vs 3 periods host-stopped leads unless
/// the shutdown takes over 2 minutes, and 300 s covers a shutdown of up to 7. A dead agent on
/// a running host pages this much later: about 10 minutes after its last heartbeat.
pub const SUPPRESSOR_WAIT_SECONDS: u32 = 300;
/// How long `AgentDownAlarm` keeps holding its actions after host-stopped leaves ALARM. At a
/// start the status metric comes back within a minute or two of running; the heartbeat alarm
/// goes OK only after boot, the agent's start, its first put and an evaluation (about 2-4
/// minutes). 600 s leaves room for a slow boot; an agent that never comes up pages 10
/// minutes after the host does.
pub const SUPPRESSOR_EXTENSION_SECONDS: u32 = 600;

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

/// Logical ids of the log groups host `host` writes: the shared agent and host-log groups
/// and its developers' container groups.
pub fn host_log_group_ids(host: &Host) -> Vec<String> {
    [AGENT_LOG_GROUP_ID, SYSTEM_LOG_GROUP_ID, DOCKER_LOG_GROUP_ID]
        .into_iter()
        .map(str::to_string)
        .chain(host.developers.iter().map(developer_log_group_id))
        .collect()
}

/// A log group, deleted with the stack, explicitly (a kept group would block re-creating the
/// stack; logs worth keeping longer get a longer LogRetentionDays, not a Retain).
fn log_group(name: Value, extra: &[(&str, Value)]) -> Value {
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
}

/// Adds the developers' container log groups. They stay in the parent stack for every host:
/// the host's role depends on them, so a deletion removes them after the instance.
pub fn add_developer_log_groups(res: &mut Resources, developers: &[Developer]) {
    for dev in developers {
        res.add(
            developer_log_group_id(dev),
            log_group(
                container_log_group(dev),
                &[("Developer", Value::from(dev.name.clone()))],
            ),
        );
    }
}

/// Adds the shared log groups, the alarm topic and the dashboard of every host (`instances`:
/// the hosts' instance logical ids).
pub fn add(res: &mut Resources, instances: &[String]) {
    res.add(AGENT_LOG_GROUP_ID, log_group(agent_log_group(), &[]));
    // The agent's host-log shipper writes these (the role's logs statement covers them).
    res.add(SYSTEM_LOG_GROUP_ID, log_group(system_log_group(), &[]));
    res.add(DOCKER_LOG_GROUP_ID, log_group(docker_log_group(), &[]));

    res.add(
        ALARM_TOPIC,
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
                    "TopicArn": r#ref(ALARM_TOPIC),
                    "Protocol": "email",
                    "Endpoint": r#ref("AlarmEmail"),
                }),
            ),
            "Condition",
            json!("HasAlarmEmail"),
        ),
    );
    res.add(
        "Dashboard",
        resource(
            "AWS::CloudWatch::Dashboard",
            json!({
                "DashboardName": sub("${ProjectName}-${AWS::Region}"),
                "DashboardBody": sub(dashboard_body(instances)),
            }),
        ),
    );
}

/// Adds host `host`'s alarms (CPU, data disk, disk quota, memory, agent down; ids as before
/// for host 1, `Host2HighCpuAlarm`, … for host 2).
pub fn add_host(res: &mut Resources, host: &Host) {
    let instance = host.id("Instance");
    let instance = instance.as_str();
    // "${ProjectName}" for host 1 (as before), "${ProjectName} host 2" for the others.
    let who = if host.number == 1 {
        "${ProjectName}".to_string()
    } else {
        format!("${{ProjectName}} host {}", host.number)
    };
    res.add(
        host.id("HighCpuAlarm"),
        alarm(AlarmSpec {
            description: sub(format!("{who}: host CPU above 80% for 10 minutes")),
            namespace: "AWS/EC2",
            metric: "CPUUtilization",
            dimensions: json!([instance_dimension(instance)]),
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
        host.id("DataDiskAlarm"),
        alarm(AlarmSpec {
            description: sub(format!(
                "{who}: data volume {DATA_MOUNT} more than 85% used"
            )),
            namespace: NAMESPACE,
            metric: DISK_USED_PERCENT,
            dimensions: json!([instance_dimension(instance), { "Name": DIM_PATH, "Value": DATA_MOUNT }]),
            statistic: "Maximum",
            period: 300,
            evaluation_periods: 1,
            comparison: "GreaterThanThreshold",
            threshold: 85.0,
            treat_missing: "missing",
            extra_tags: vec![],
        }),
    );
    res.add(host.id("DiskQuotaAlarm"), disk_quota_alarm(instance, &who));
    res.add(
        host.id("MemoryAlarm"),
        alarm(AlarmSpec {
            description: sub(format!(
                "{who}: host memory more than 90% used for 10 minutes"
            )),
            namespace: NAMESPACE,
            metric: MEM_USED_PERCENT,
            dimensions: json!([instance_dimension(instance)]),
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
        host.id("LogsLostAlarm"),
        alarm(AlarmSpec {
            description: sub(format!(
                "{who}: container log files rotated away before the agent shipped them (their lines are not in CloudWatch Logs; `csagent status` names the developer and the bytes)"
            )),
            namespace: NAMESPACE,
            metric: LOG_FILES_LOST,
            dimensions: json!([instance_dimension(instance)]),
            statistic: "Sum",
            period: 300,
            evaluation_periods: 1,
            comparison: "GreaterThanOrEqualToThreshold",
            threshold: 1.0,
            // The agent sends 0 while nothing is lost: OK again 5 minutes after a loss.
            treat_missing: "missing",
            extra_tags: vec![],
        }),
    );
    add_agent_down(res, host, instance, &who);
}

/// Adds host `host`'s heartbeat, host-stopped and agent-down alarms (module doc).
fn add_agent_down(res: &mut Resources, host: &Host, instance: &str, who: &str) {
    let heartbeat = host.id(HEARTBEAT_ALARM);
    let stopped = host.id(HOST_STOPPED_ALARM);
    res.add(
        &heartbeat,
        signal(AlarmSpec {
            description: sub(format!(
                "{who}: no agent_heartbeat for 5 minutes (agent dead, host stopped or CloudWatch unreachable). No actions: the agent-down composite alarm pages, only while the host runs",
            )),
            namespace: NAMESPACE,
            metric: AGENT_HEARTBEAT,
            dimensions: json!([instance_dimension(instance)]),
            statistic: "Sum",
            period: 60,
            evaluation_periods: 5,
            comparison: "LessThanThreshold",
            threshold: 1.0,
            treat_missing: "breaching",
            extra_tags: vec![],
        }),
    );
    res.add(
        &stopped,
        signal(AlarmSpec {
            description: sub(format!(
                "{who}: the host is not running (EC2 reported no status check for 3 minutes: a scheduled, idle or manual stop). A signal, not a page: it keeps the agent-down composite alarm quiet",
            )),
            namespace: "AWS/EC2",
            metric: "StatusCheckFailed",
            dimensions: json!([instance_dimension(instance)]),
            statistic: "Maximum",
            period: 60,
            // 3 minutes: shorter than the heartbeat's 5, so at an ordinary stop this alarm is
            // usually in ALARM before the heartbeat alarm and the composite never fires.
            evaluation_periods: 3,
            // Real values are 0 or 1, never < 0: only missing data (breaching) alarms.
            comparison: "LessThanThreshold",
            threshold: 0.0,
            treat_missing: "breaching",
            extra_tags: vec![],
        }),
    );
    res.add(
        host.id(AGENT_DOWN_ALARM),
        notify(resource(
            "AWS::CloudWatch::CompositeAlarm",
            json!({
                "AlarmDescription": sub(format!(
                    "{who}: agent dead, host hung or CloudWatch unreachable on a running host; a stopped host (schedule, idle stop, admin) does not alarm",
                )),
                // Ref of a metric alarm is its name; the rule takes names in quotes.
                "AlarmRule": sub(format!(
                    "ALARM(\"${{{heartbeat}}}\") AND NOT ALARM(\"${{{stopped}}}\")"
                )),
                "ActionsSuppressor": r#ref(&stopped),
                "ActionsSuppressorWaitPeriod": SUPPRESSOR_WAIT_SECONDS,
                "ActionsSuppressorExtensionPeriod": SUPPRESSOR_EXTENSION_SECONDS,
                "Tags": tags(&[]),
            }),
        )),
    );
}

/// Adds each developer's container health alarm (on the metrics of `instance`, the logical
/// id of the host that runs them).
pub fn add_developer_alarms(res: &mut Resources, developers: &[Developer], instance: &str) {
    for dev in developers {
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
                    instance_dimension(instance),
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
}

/// The fullest developer home, as a share of its disk quota, on this stack's
/// instance. The agent sends `disk_quota_used_percent` only while a quota is in
/// force (`containers.disk_quota`), so without one the alarm has no data and
/// stays OK.
fn disk_quota_alarm(instance: &str, who: &str) -> Value {
    let query = format!(
        "SELECT MAX({DISK_QUOTA_USED_PERCENT}) FROM SCHEMA(\"{NAMESPACE}\", {DIM_DEVELOPER}, {DIM_INSTANCE}) WHERE {DIM_INSTANCE} = '${{{instance}}}'"
    );
    notify(resource(
        "AWS::CloudWatch::Alarm",
        json!({
            "AlarmDescription": sub(format!(
                "{who}: a developer's home holds {DISK_QUOTA_ALARM_PERCENT:.0}% or more of its disk quota (csagent status shows whose)"
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
            "Tags": tags(&[]),
        }),
    ))
}

/// One metric line `[namespace, name, dim, value, ...]` per host for the dashboard.
fn host_metric(instances: &[String], metric: &str, extra: &[&str]) -> Vec<Value> {
    instances
        .iter()
        .map(|instance| {
            let mut line = vec![
                Value::from(NAMESPACE),
                Value::from(metric),
                Value::from(DIM_INSTANCE),
                Value::from(format!("${{{instance}}}")),
            ];
            line.extend(extra.iter().map(|v| Value::from(*v)));
            Value::Array(line)
        })
        .collect()
}

/// The lines of several [`host_metric`] calls, in order.
fn lines(groups: &[Vec<Value>]) -> Value {
    Value::Array(groups.concat())
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
/// follows the developer count without listing every developer; with more than one host the
/// search takes any of their instance ids.
fn developer_widget(x: u32, y: u32, metric: &str, stat: &str, instances: &[String]) -> Value {
    let hosts: Vec<String> = instances
        .iter()
        .map(|i| format!("{DIM_INSTANCE}=\"${{{i}}}\""))
        .collect();
    let hosts = if hosts.len() == 1 {
        hosts.concat()
    } else {
        format!("({})", hosts.join(" OR "))
    };
    let expression = format!(
        "SEARCH('{{{NAMESPACE},{DIM_INSTANCE},{DIM_DEVELOPER}}} MetricName=\"{metric}\" {hosts}', '{stat}', 60)"
    );
    widget(
        x,
        y,
        &format!("{metric} per developer"),
        json!([[{ "expression": expression, "id": "e1", "label": "" }]]),
        json!({}),
    )
}

/// The dashboard body as a `Fn::Sub` template (`${Instance}`, `${Host2Instance}`, …,
/// `${AWS::Region}`): every graph has a line per host (`instances`: their logical ids).
pub fn dashboard_body(instances: &[String]) -> String {
    let h = |metric: &str, extra: &[&str]| host_metric(instances, metric, extra);
    let cpu: Vec<Value> = instances
        .iter()
        .map(|i| {
            json!([
                "AWS/EC2",
                "CPUUtilization",
                "InstanceId",
                format!("${{{i}}}")
            ])
        })
        .collect();
    let mut widgets = vec![
        widget(
            0,
            0,
            "Host CPU (AWS/EC2)",
            Value::Array(cpu),
            json!({ "yAxis": { "left": { "min": 0, "max": 100 } } }),
        ),
        widget(
            12,
            0,
            "Host memory and disk used %",
            lines(&[
                h(MEM_USED_PERCENT, &[]),
                h(DISK_USED_PERCENT, &[DIM_PATH, DATA_MOUNT]),
                h(DISK_USED_PERCENT, &[DIM_PATH, "/"]),
            ]),
            json!({ "yAxis": { "left": { "min": 0, "max": 100 } } }),
        ),
        widget(
            0,
            6,
            "Disk free (bytes)",
            lines(&[
                h(DISK_FREE, &[DIM_PATH, DATA_MOUNT]),
                h(DISK_FREE, &[DIM_PATH, "/"]),
            ]),
            json!({}),
        ),
        widget(
            12,
            6,
            "Developers healthy / active",
            lines(&[h(DEVELOPERS_HEALTHY, &[]), h(DEVELOPERS_ACTIVE, &[])]),
            json!({}),
        ),
        widget(
            0,
            12,
            "Agent heartbeat, log files lost",
            lines(&[h(AGENT_HEARTBEAT, &[]), h(LOG_FILES_LOST, &[])]),
            json!({ "stat": "Sum" }),
        ),
        widget(
            12,
            12,
            "Agent lag (seconds)",
            lines(&[h(SECRETS_STALENESS_SECONDS, &[]), h(LOG_LAG_SECONDS, &[])]),
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
        widgets.push(developer_widget(x, y, metric, stat, instances));
        if i % 2 == 1 {
            y += 6;
        }
    }
    json!({ "widgets": widgets }).to_string()
}
