//! Paying for used hours only: an optional schedule that stops and starts the host(s), and an
//! optional idle stop. Both are off by default and switched on by Parameters, so turning them
//! on or off later is a stack update that touches nothing else.
//!
//! 1. **Schedule** (`ScheduleStart` / `ScheduleStop`, in `ScheduleTimezone`): two EventBridge
//!    Scheduler schedules whose universal targets call EC2 `StartInstances` / `StopInstances`
//!    with every host's instance id. Scheduler assumes `ScheduleRole`, which trusts only
//!    `scheduler.amazonaws.com` acting for this account's default schedule group and may only
//!    start (when a start schedule exists) and stop (when a stop schedule exists) these
//!    instances.
//! 2. **Idle stop** (`IdleStopHours`, 0 = off): per host, an alarm on the agent's
//!    `developers_active` (dimension `InstanceId`) that is 0 in every 5-minute period for that
//!    many hours; its action is EC2's built-in stop (`arn:aws:automate:<region>:ec2:stop`, run by
//!    CloudWatch's service-linked role on the instance of the metric's `InstanceId`). A
//!    stopped host publishes nothing: missing data counts as *not* idle, so the alarm goes back
//!    to OK while the host is off and a host that was just started gets a full `IdleStopHours`
//!    before the alarm can stop it again.
//!
//! A stop by either (or by an admin) pages no one: the agent's heartbeat stops with the host,
//! but `crate::monitoring`'s agent-down alarm fires only while EC2 still reports the instance
//! (its host-stopped alarm, on `StatusCheckFailed`, suppresses it). The idle-stop alarm itself
//! tells the topic once per stop it makes, so whoever finds the host stopped learns why.
//!
//! Everything takes a list of instance logical ids, so more than one host is covered by the
//! same two schedules, one role, and one idle alarm per host.

use crate::cfn::{Resources, get_att, if_, name_tag, no_value, r#ref, resource, sub, tags, with};
use csagent_contract::metrics::{DEVELOPERS_ACTIVE, DIM_INSTANCE, NAMESPACE};
use csagent_contract::validate::MAX_IDLE_STOP_HOURS;
use serde_json::{Map, Value, json};

/// Logical id of the role Scheduler assumes.
pub const ROLE: &str = "ScheduleRole";
/// Logical ids of the two schedules.
pub const START_SCHEDULE: &str = "StartSchedule";
pub const STOP_SCHEDULE: &str = "StopSchedule";
/// Name of the mapping from `IdleStopHours` to the alarm's number of 5-minute periods.
pub const IDLE_STOP_MAPPING: &str = "IdleStopPeriods";
/// Period of the idle-stop alarm: 5 minutes, so the stop comes at most 5 minutes late.
pub const IDLE_STOP_PERIOD_SECONDS: u32 = 300;

/// Scheduler's universal targets: the EC2 API calls, made with the role's credentials.
const START_TARGET: &str = "arn:aws:scheduler:::aws-sdk:ec2:startInstances";
const STOP_TARGET: &str = "arn:aws:scheduler:::aws-sdk:ec2:stopInstances";

/// Logical id of the idle-stop alarm of the host `instance`, e.g. `InstanceIdleStopAlarm`.
pub fn idle_stop_alarm_id(instance: &str) -> String {
    format!("{instance}IdleStopAlarm")
}

/// The Conditions this module's resources use (merged into the template's Conditions).
pub fn conditions() -> Map<String, Value> {
    let not_empty = |param: &str| json!({ "Fn::Not": [ { "Fn::Equals": [r#ref(param), ""] } ] });
    let mut c = Map::new();
    c.insert("HasScheduleStart".into(), not_empty("ScheduleStart"));
    c.insert("HasScheduleStop".into(), not_empty("ScheduleStop"));
    c.insert(
        "HasSchedule".into(),
        json!({ "Fn::Or": [ { "Condition": "HasScheduleStart" }, { "Condition": "HasScheduleStop" } ] }),
    );
    c.insert(
        "IdleStop".into(),
        json!({ "Fn::Not": [ { "Fn::Equals": [r#ref("IdleStopHours"), "0"] } ] }),
    );
    c
}

/// `IdleStopHours` → `{"Periods": hours × 12}`: CloudFormation cannot multiply, and a 5-minute
/// period keeps the stop close to the hour asked for (1-hour periods could be up to an hour
/// late). 24 hours × 12 = 288 periods of 300 s: PutMetricAlarm's one-day limit.
pub fn mappings() -> Value {
    let per_hour = 3600 / IDLE_STOP_PERIOD_SECONDS;
    let rows: Map<String, Value> = (1..=MAX_IDLE_STOP_HOURS)
        .map(|h| (h.to_string(), json!({ "Periods": h * per_hour })))
        .collect();
    json!({ IDLE_STOP_MAPPING: rows })
}

/// `arn:<partition>:ec2:<region>:<account>:instance/<id>` of each instance.
fn instance_arns(instances: &[&str]) -> Value {
    Value::Array(
        instances
            .iter()
            .map(|id| {
                sub(format!(
                    "arn:${{AWS::Partition}}:ec2:${{AWS::Region}}:${{AWS::AccountId}}:instance/${{{id}}}"
                ))
            })
            .collect(),
    )
}

/// The target's input, `{"InstanceIds": ["i-…", …]}`, as a `Fn::Sub` of the instance ids.
fn instance_ids_input(instances: &[&str]) -> Value {
    let ids: Vec<String> = instances
        .iter()
        .map(|id| format!("\"${{{id}}}\""))
        .collect();
    sub(format!("{{\"InstanceIds\":[{}]}}", ids.join(",")))
}

/// The role Scheduler assumes: trusted by scheduler.amazonaws.com for this account's default
/// schedule group only (the confused-deputy conditions), allowed only StartInstances /
/// StopInstances on these instances, each only when that schedule exists.
pub fn role(instances: &[&str]) -> Value {
    let statement = |sid: &str, action: &str, condition: &str| {
        if_(
            condition,
            json!({
                "Sid": sid,
                "Effect": "Allow",
                "Action": action,
                "Resource": instance_arns(instances),
            }),
            no_value(),
        )
    };
    let role = resource(
        "AWS::IAM::Role",
        json!({
            "Description": sub("EventBridge Scheduler: start and stop the ${ProjectName} host(s) on the schedule"),
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allow",
                    "Principal": { "Service": "scheduler.amazonaws.com" },
                    "Action": "sts:AssumeRole",
                    "Condition": {
                        "StringEquals": { "aws:SourceAccount": r#ref("AWS::AccountId") },
                        "ArnEquals": {
                            "aws:SourceArn": sub("arn:${AWS::Partition}:scheduler:${AWS::Region}:${AWS::AccountId}:schedule-group/default"),
                        },
                    },
                }],
            },
            "Policies": [{
                "PolicyName": "start-stop-hosts",
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        statement("StartHosts", "ec2:StartInstances", "HasScheduleStart"),
                        statement("StopHosts", "ec2:StopInstances", "HasScheduleStop"),
                    ],
                },
            }],
            "Tags": tags(&[name_tag("schedule")]),
        }),
    );
    with(role, "Condition", json!("HasSchedule"))
}

fn schedule(
    what: &str,
    expression_param: &str,
    condition: &str,
    target: &str,
    instances: &[&str],
) -> Value {
    let schedule = resource(
        "AWS::Scheduler::Schedule",
        json!({
            "Description": sub(format!("${{ProjectName}}: {what} the host(s)")),
            "ScheduleExpression": r#ref(expression_param),
            "ScheduleExpressionTimezone": r#ref("ScheduleTimezone"),
            // Exactly on time: a late start is a developer waiting.
            "FlexibleTimeWindow": { "Mode": "OFF" },
            "State": "ENABLED",
            "Target": {
                "Arn": target,
                "RoleArn": get_att(ROLE, "Arn"),
                "Input": instance_ids_input(instances),
                // A throttled or failed call is retried for up to an hour, then dropped: a
                // start or stop more than an hour late is worse than none.
                "RetryPolicy": { "MaximumRetryAttempts": 10, "MaximumEventAgeInSeconds": 3600 },
            },
        }),
    );
    with(schedule, "Condition", json!(condition))
}

/// The idle-stop alarm of one host.
pub fn idle_stop_alarm(instance: &str) -> Value {
    let alarm = resource(
        "AWS::CloudWatch::Alarm",
        json!({
            "AlarmDescription": sub(format!(
                "${{ProjectName}}: no developer active on host ${{{instance}}} for ${{IdleStopHours}} hour(s): EC2 stops it (start it again from the console, the CLI or the schedule)"
            )),
            "Namespace": NAMESPACE,
            "MetricName": DEVELOPERS_ACTIVE,
            // The InstanceId dimension is what the EC2 action acts on.
            "Dimensions": [{ "Name": DIM_INSTANCE, "Value": r#ref(instance) }],
            "Statistic": "Maximum",
            "Period": IDLE_STOP_PERIOD_SECONDS,
            "EvaluationPeriods": { "Fn::FindInMap": [IDLE_STOP_MAPPING, r#ref("IdleStopHours"), "Periods"] },
            "DatapointsToAlarm": { "Fn::FindInMap": [IDLE_STOP_MAPPING, r#ref("IdleStopHours"), "Periods"] },
            "ComparisonOperator": "LessThanThreshold",
            "Threshold": 1,
            // A stopped host (or a dead agent) publishes nothing: that is not idleness. The
            // alarm returns to OK while the host is off, and after a start it needs
            // IdleStopHours of real zeros again: no re-stop on start, no flapping.
            "TreatMissingData": "notBreaching",
            // The topic too: whoever finds the host stopped learns why.
            "AlarmActions": [
                r#ref(crate::monitoring::ALARM_TOPIC),
                sub("arn:${AWS::Partition}:automate:${AWS::Region}:ec2:stop"),
            ],
            "Tags": tags(&[name_tag("idle-stop")]),
        }),
    );
    with(alarm, "Condition", json!("IdleStop"))
}

/// Adds the schedules and their role for every host in `instances` (logical ids of
/// `AWS::EC2::Instance` resources). Each host adds its idle-stop alarm: [`add_idle_stop`].
pub fn add(res: &mut Resources, instances: &[&str]) {
    res.add(ROLE, role(instances));
    res.add(
        START_SCHEDULE,
        schedule(
            "start",
            "ScheduleStart",
            "HasScheduleStart",
            START_TARGET,
            instances,
        ),
    );
    res.add(
        STOP_SCHEDULE,
        schedule(
            "stop",
            "ScheduleStop",
            "HasScheduleStop",
            STOP_TARGET,
            instances,
        ),
    );
}

/// Adds the idle-stop alarm of the host `instance`.
pub fn add_idle_stop(res: &mut Resources, instance: &str) {
    res.add(idle_stop_alarm_id(instance), idle_stop_alarm(instance));
}
