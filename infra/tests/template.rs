//! Structure of the generated template for 1, 8, 40 (and 64) developers: every developer has its
//! target group, listener rule, record, secrets, log group and alarm; ports and priorities are
//! unique; no plaintext secret; IMDS options; least-privilege policy; no dependency cycle; every
//! reference resolves; tags everywhere.

mod common;

use common::resolve;
use infra::{Format, Settings, build_template, render};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashSet};

const COUNTS: [u32; 3] = [1, 8, 40];

/// The SSO conditions with SsoProvider `none` (the default).
const SSO_OFF: &[(&str, bool)] = &[("SsoOidc", false), ("SsoCognito", false), ("UseSso", false)];

/// The template of `developers` on one host: the default t3.2xlarge up to the 10 it holds,
/// beyond that an r6i.8xlarge (42 with the default sizes, 64 with 1 CPU each). More than one
/// host: infra/tests/hosts.rs.
fn template(developers: u32) -> Value {
    let mut s = Settings {
        developers,
        ..Settings::default()
    };
    if developers > 10 {
        s.instance_type = "r6i.8xlarge".into();
        s.developers_per_host = developers;
    }
    if developers > 42 {
        s.developer_cpu_millis = 1000;
    }
    s.validate().unwrap();
    assert_eq!(s.hosts(), 1);
    build_template(&s)
}

fn resources(t: &Value) -> &serde_json::Map<String, Value> {
    t["Resources"].as_object().unwrap()
}

fn of_type<'a>(t: &'a Value, kind: &str) -> Vec<(&'a String, &'a Value)> {
    resources(t)
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .collect()
}

/// The text of a `Fn::Sub`, in its short form or the `[text, variables]` form.
fn sub_text(v: &Value) -> &str {
    let sub = &v["Fn::Sub"];
    sub.as_str()
        .or_else(|| sub[0].as_str())
        .unwrap_or_else(|| panic!("not a Fn::Sub: {v}"))
}

#[test]
fn every_developer_has_target_group_rule_record_secrets_logs_alarm_and_url() {
    for n in COUNTS {
        let t = template(n);
        let res = resources(&t);
        for d in 1..=n {
            let port = 8443 + d - 1;
            let tg = &res[&format!("Dev{d}TargetGroup")];
            assert_eq!(tg["Type"], "AWS::ElasticLoadBalancingV2::TargetGroup");
            let p = &tg["Properties"];
            assert_eq!(p["Port"], port);
            assert_eq!(p["Targets"][0]["Port"], port);
            assert_eq!(p["Targets"][0]["Id"]["Ref"], "Instance");
            assert_eq!(p["HealthCheckPath"], "/healthz");
            assert_eq!(p["Matcher"]["HttpCode"], "200");

            let rule = &res[&format!("Dev{d}ListenerRule")]["Properties"];
            assert_eq!(rule["Priority"], d);
            assert_eq!(rule["ListenerArn"]["Ref"], "HttpsListener");
            assert_eq!(
                sub_text(&rule["Conditions"][0]["HostHeaderConfig"]["Values"][0]),
                format!("dev{d}.${{DomainName}}")
            );
            let actions = resolve(&rule["Actions"], SSO_OFF).unwrap();
            assert_eq!(actions[0]["Type"], "forward");
            assert_eq!(
                actions[0]["TargetGroupArn"]["Ref"],
                format!("Dev{d}TargetGroup")
            );

            let record = &res[&format!("Dev{d}DnsRecord")];
            assert_eq!(record["Type"], "AWS::Route53::RecordSet");
            let rp = &record["Properties"];
            assert_eq!(sub_text(&rp["Name"]), format!("dev{d}.${{DomainName}}"));
            assert_eq!(rp["Type"], "A");
            assert_eq!(rp["HostedZoneId"]["Ref"], "HostedZoneId");
            assert_eq!(
                rp["AliasTarget"]["DNSName"]["Fn::GetAtt"],
                serde_json::json!(["LoadBalancer", "DNSName"])
            );

            let pw = &res[&format!("Dev{d}PasswordSecret")]["Properties"];
            assert_eq!(
                sub_text(&pw["Name"]),
                format!("${{ProjectName}}/dev{d}/password")
            );
            let key = &res[&format!("Dev{d}ClaudeApiKeySecret")]["Properties"];
            assert_eq!(
                sub_text(&key["Name"]),
                format!("${{ProjectName}}/dev{d}/claude-api-key")
            );
            assert_eq!(key["SecretString"], "REPLACE_WITH_ACTUAL_KEY");

            let lg = &res[&format!("Dev{d}LogGroup")]["Properties"];
            assert_eq!(
                sub_text(&lg["LogGroupName"]),
                format!("/aws/ec2/${{ProjectName}}/containers/dev{d}")
            );
            assert_eq!(lg["RetentionInDays"]["Ref"], "LogRetentionDays");

            let alarm = &res[&format!("Dev{d}ContainerHealthAlarm")]["Properties"];
            assert_eq!(alarm["MetricName"], "container_healthy");
            assert_eq!(alarm["Namespace"], "CodeServer");
            assert_eq!(alarm["Dimensions"][1]["Name"], "Developer");
            assert_eq!(alarm["Dimensions"][1]["Value"], format!("dev{d}"));

            assert_eq!(
                sub_text(&t["Outputs"][format!("Dev{d}Url")]["Value"]),
                format!("https://dev{d}.${{DomainName}}")
            );
        }
        // Nothing for a developer that does not exist.
        assert!(!res.contains_key(&format!("Dev{}TargetGroup", n + 1)));
        assert_eq!(
            of_type(&t, "AWS::ElasticLoadBalancingV2::TargetGroup").len(),
            n as usize
        );
        assert_eq!(
            of_type(&t, "AWS::ElasticLoadBalancingV2::ListenerRule").len(),
            n as usize
        );
        assert_eq!(of_type(&t, "AWS::Route53::RecordSet").len(), n as usize);
        assert_eq!(
            of_type(&t, "AWS::SecretsManager::Secret").len(),
            2 * n as usize
        );
        // One per developer, the agent's, and the host logs' system and docker.
        assert_eq!(of_type(&t, "AWS::Logs::LogGroup").len(), n as usize + 3);
        for (id, name) in [
            ("SystemLogGroup", "/aws/ec2/${ProjectName}/system"),
            ("DockerLogGroup", "/aws/ec2/${ProjectName}/docker"),
        ] {
            let lg = &res[id]["Properties"];
            assert_eq!(sub_text(&lg["LogGroupName"]), name);
            assert_eq!(lg["RetentionInDays"]["Ref"], "LogRetentionDays");
        }
    }
}

#[test]
fn ports_and_priorities_are_unique_and_inside_the_security_group_range() {
    for n in COUNTS {
        let t = template(n);
        let ports: Vec<u64> = of_type(&t, "AWS::ElasticLoadBalancingV2::TargetGroup")
            .iter()
            .map(|(_, r)| r["Properties"]["Port"].as_u64().unwrap())
            .collect();
        let unique: HashSet<_> = ports.iter().collect();
        assert_eq!(unique.len(), ports.len(), "duplicate port for {n}");
        let priorities: Vec<u64> = of_type(&t, "AWS::ElasticLoadBalancingV2::ListenerRule")
            .iter()
            .map(|(_, r)| r["Properties"]["Priority"].as_u64().unwrap())
            .collect();
        let unique: HashSet<_> = priorities.iter().collect();
        assert_eq!(unique.len(), priorities.len(), "duplicate priority for {n}");
        assert!(priorities.iter().all(|p| (1..=50000).contains(p)));

        let ingress = &resources(&t)["HostSecurityGroup"]["Properties"]["SecurityGroupIngress"];
        let rules = ingress.as_array().unwrap();
        assert_eq!(rules.len(), 1, "exactly the developer ports");
        assert_eq!(rules[0]["FromPort"], 8443);
        assert_eq!(rules[0]["ToPort"], 8443 + n - 1);
        assert_eq!(
            rules[0]["SourceSecurityGroupId"]["Fn::GetAtt"][0],
            "AlbSecurityGroup"
        );
        for p in &ports {
            assert!((8443..=u64::from(8443 + n - 1)).contains(p));
        }
    }
}

#[test]
fn no_plaintext_password_anywhere() {
    for n in COUNTS {
        let t = template(n);
        for (id, r) in of_type(&t, "AWS::SecretsManager::Secret") {
            let p = &r["Properties"];
            let name = sub_text(&p["Name"]);
            if name.ends_with("/password") {
                assert!(p.get("SecretString").is_none(), "{id} has a SecretString");
                let g = &p["GenerateSecretString"];
                assert!(g["PasswordLength"].as_u64().unwrap() >= 24, "{id}");
                assert_eq!(g["ExcludePunctuation"], true, "{id}");
            } else {
                assert!(name.ends_with("/claude-api-key"), "{id}: {name}");
                assert_eq!(p["SecretString"], "REPLACE_WITH_ACTUAL_KEY");
            }
        }
        // No parameter carries a secret either.
        for (name, p) in t["Parameters"].as_object().unwrap() {
            assert!(!name.to_lowercase().contains("password"), "{name}");
            assert!(p.get("NoEcho").is_none(), "{name}");
        }
        // And the rendered text holds no SecretString but the placeholder.
        let text = render(&t, Format::Json, true).unwrap();
        assert_eq!(
            text.matches("\"SecretString\"").count(),
            n as usize,
            "only the Claude key placeholders"
        );
    }
}

#[test]
fn instance_has_imdsv2_hop_limit_1_and_encrypted_volumes() {
    let t = template(8);
    let res = resources(&t);
    let p = &res["Instance"]["Properties"];
    let m = &p["MetadataOptions"];
    assert_eq!(m["HttpTokens"], "required");
    assert_eq!(m["HttpPutResponseHopLimit"], 1);
    assert_eq!(m["HttpEndpoint"], "enabled");
    assert_eq!(p["ImageId"]["Ref"], "LatestAmiId");
    assert_eq!(
        t["Parameters"]["LatestAmiId"]["Type"],
        "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
    );
    assert_eq!(
        t["Parameters"]["LatestAmiId"]["Default"],
        "/aws/service/canonical/ubuntu/server/22.04/stable/current/amd64/hvm/ebs-gp2/ami-id"
    );
    let root = &p["BlockDeviceMappings"][0]["Ebs"];
    assert_eq!(root["Encrypted"], true);
    assert_eq!(root["VolumeType"], "gp3");
    assert_eq!(root["VolumeSize"]["Ref"], "RootVolumeSize");
    assert_eq!(t["Parameters"]["RootVolumeSize"]["Default"], 50);

    let v = &res["DataVolume"];
    assert_eq!(v["DeletionPolicy"], "Snapshot");
    assert_eq!(v["UpdateReplacePolicy"], "Snapshot");
    assert_eq!(v["Properties"]["Encrypted"], true);
    assert_eq!(v["Properties"]["VolumeType"], "gp3");
    assert_eq!(t["Parameters"]["DataVolumeSize"]["Default"], 500);
    // Same AZ as the instance's subnet, without depending on the instance.
    assert_eq!(
        v["Properties"]["AvailabilityZone"],
        res["PublicSubnetA"]["Properties"]["AvailabilityZone"]
    );
    let a = &res["DataVolumeAttachment"]["Properties"];
    assert_eq!(a["Device"], "/dev/sdf");
    assert_eq!(a["InstanceId"]["Ref"], "Instance");
    assert_eq!(a["VolumeId"]["Ref"], "DataVolume");
}

#[test]
fn user_data_installs_the_deb_and_writes_the_agent_config() {
    let s = Settings::default();
    let t = build_template(&s);
    let script = sub_text(&resources(&t)["Instance"]["Properties"]["UserData"]["Fn::Base64"]);
    assert!(script.starts_with("#!/bin/bash\n"));
    let config = infra::agent_config_toml(
        "${ProjectName}",
        "${AWS::Region}",
        "${DataVolume}",
        "/${ProjectName}/csagent/host-1/developers",
        s.base_port,
    );
    assert!(script.contains(&config));
    assert!(script.contains("DEB_URL='${DebUrl}'"));
    assert!(script.contains("./csagent_*.deb"));
    assert!(script.contains("chmod 0640 /etc/csagent/config.toml.new"));
    assert!(script.contains("systemctl restart csagent"));
}

#[test]
fn adding_a_developer_changes_the_developer_set_not_the_instance() {
    let (eight, nine) = (template(8), template(9));
    for id in [
        "Instance",
        "DataVolume",
        "DataVolumeAttachment",
        "InstanceRole",
    ] {
        // DependsOn is not a property (the role waits for every log group so that a
        // deletion removes them last): changing it updates nothing on the resource.
        let props = |t: &Value| {
            let mut r = resources(t)[id].clone();
            if let Some(o) = r.as_object_mut() {
                o.remove("DependsOn");
            }
            r
        };
        assert_eq!(
            props(&eight),
            props(&nine),
            "{id} must not change with the developers (an update would stop the host)"
        );
    }
    let p = &resources(&nine)["Host1Developers"]["Properties"];
    assert_eq!(p["Type"], "String");
    assert_eq!(
        sub_text(&p["Name"]),
        "/${ProjectName}/csagent/host-1/developers"
    );
    let value: toml::Table = toml::from_str(p["Value"].as_str().unwrap()).unwrap();
    let devs = value["developer"].as_array().unwrap();
    assert_eq!(devs.len(), 9);
    assert_eq!(devs[8]["name"].as_str(), Some("dev9"));
    assert_eq!(devs[8]["port"].as_integer(), Some(8451));
    assert_ne!(
        resources(&eight)["Host1Developers"],
        resources(&nine)["Host1Developers"]
    );
}

#[test]
fn instance_policy_is_least_privilege() {
    let t = template(8);
    let role = &resources(&t)["InstanceRole"]["Properties"];
    assert_eq!(
        role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"],
        "ec2.amazonaws.com"
    );
    assert_eq!(
        sub_text(&role["ManagedPolicyArns"][0]),
        "arn:${AWS::Partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
    );
    let statements = role["Policies"][0]["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap();
    let mut star_actions = BTreeSet::new();
    for st in statements {
        let st = st.get("Fn::If").map(|f| &f[1]).unwrap_or(st);
        assert_eq!(st["Effect"], "Allow");
        let actions: Vec<&str> = match &st["Action"] {
            Value::String(a) => vec![a.as_str()],
            Value::Array(a) => a.iter().map(|x| x.as_str().unwrap()).collect(),
            other => panic!("bad Action {other}"),
        };
        for a in &actions {
            assert!(!a.contains('*'), "wildcard action {a}");
        }
        match &st["Resource"] {
            Value::String(r) if r == "*" => {
                star_actions.extend(actions.iter().map(|a| a.to_string()));
                if actions.contains(&"cloudwatch:PutMetricData") {
                    assert_eq!(
                        st["Condition"]["StringEquals"]["cloudwatch:namespace"],
                        "CodeServer"
                    );
                }
            }
            r => {
                let text = r.to_string();
                if actions.contains(&"ssm:GetParameter") {
                    assert!(
                        text.contains(":parameter/${ProjectName}/csagent/host-1/developers\""),
                        "exactly the developer-set parameter: {text}"
                    );
                }
                if actions.iter().any(|a| a.starts_with("secretsmanager:")) {
                    assert!(text.contains(":secret:${ProjectName}/*"), "{text}");
                    if actions.contains(&"secretsmanager:GetSecretValue") {
                        assert_eq!(
                            st["Condition"]["StringEquals"]["secretsmanager:ResourceTag/csagent-host"],
                            "1",
                            "host 1's developers' secrets only"
                        );
                    }
                }
                if actions.iter().any(|a| a.starts_with("ecr:")) {
                    assert_eq!(
                        r,
                        &serde_json::json!({ "Fn::If": [
                            "CreateTeamImageRepository",
                            { "Fn::GetAtt": ["TeamImageRepository", "Arn"] },
                            { "Fn::Sub": "arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/${ExistingTeamImageRepository}" },
                        ] }),
                        "pulls only from the team image repository"
                    );
                }
                if actions.iter().any(|a| a.starts_with("ec2:")) {
                    restore_statement_is_scoped(st, &actions, &text);
                }
                if actions.contains(&"logs:PutLogEvents") {
                    assert!(
                        text.contains(":log-group:/aws/ec2/${ProjectName}/*"),
                        "{text}"
                    );
                }
            }
        }
    }
    let expected: BTreeSet<String> = [
        "cloudwatch:PutMetricData",
        "ec2:DescribeInstances",
        "ec2:DescribeSnapshots",
        "ec2:DescribeVolumes",
        "ecr:GetAuthorizationToken",
        "secretsmanager:BatchGetSecretValue",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(
        star_actions, expected,
        "only actions without resource-level permissions use *"
    );
}

/// `csagent restore`'s EC2 grants: every volume action is tied to the restore tag (so the data
/// volume can never be detached or deleted), instances to the project's tag, and the only
/// unconditioned grant is CreateVolume's snapshot side.
fn restore_statement_is_scoped(st: &Value, actions: &[&str], resource: &str) {
    let cond = &st["Condition"]["StringEquals"];
    let project = serde_json::json!({ "Ref": "ProjectName" });
    if resource.contains(":volume/*") {
        let key = if actions.contains(&"ec2:CreateTags") {
            assert_eq!(
                cond["ec2:CreateAction"], "CreateVolume",
                "tags only at creation"
            );
            return;
        } else if actions == ["ec2:CreateVolume"] {
            "aws:RequestTag/csagent-restore"
        } else {
            "aws:ResourceTag/csagent-restore"
        };
        assert_eq!(cond[key], project, "{actions:?} on volumes needs {key}");
    } else if resource.contains(":instance/*") {
        assert_eq!(actions, ["ec2:AttachVolume", "ec2:DetachVolume"]);
        assert_eq!(cond["aws:ResourceTag/Project"], project);
    } else {
        assert!(resource.contains("::snapshot/*"), "{resource}");
        assert_eq!(actions, ["ec2:CreateVolume"]);
    }
}

#[test]
fn alarms_notify_the_topic_and_cover_the_agent_metrics() {
    let t = template(8);
    let res = resources(&t);
    // Every metric alarm pages but the two signals the agent-down composite reads: they are
    // in ALARM whenever the host is stopped.
    let topic = serde_json::json!({ "Ref": "AlarmTopic" });
    let mut silent = BTreeSet::new();
    for (id, a) in of_type(&t, "AWS::CloudWatch::Alarm") {
        let p = &a["Properties"];
        match p.get("AlarmActions") {
            Some(actions) => assert_eq!(actions[0], topic, "{id}"),
            None => {
                assert!(p.get("OKActions").is_none(), "{id}");
                assert!(p.get("InsufficientDataActions").is_none(), "{id}");
                silent.insert(id.as_str());
            }
        }
    }
    assert_eq!(
        silent,
        BTreeSet::from(["AgentHeartbeatAlarm", "HostStoppedAlarm"])
    );
    let heartbeat = &res["AgentHeartbeatAlarm"]["Properties"];
    assert_eq!(heartbeat["MetricName"], "agent_heartbeat");
    assert_eq!(heartbeat["TreatMissingData"], "breaching");
    assert_eq!(heartbeat["Dimensions"][0]["Value"]["Ref"], "Instance");
    // Host stopped: EC2's free per-minute status check, which only a running instance has;
    // a real value (0 or 1) never breaches `< 0`, missing data does.
    let stopped = &res["HostStoppedAlarm"]["Properties"];
    assert_eq!(stopped["Namespace"], "AWS/EC2");
    assert_eq!(stopped["MetricName"], "StatusCheckFailed");
    assert_eq!(stopped["Dimensions"].as_array().unwrap().len(), 1);
    assert_eq!(stopped["Dimensions"][0]["Name"], "InstanceId");
    assert_eq!(stopped["Dimensions"][0]["Value"]["Ref"], "Instance");
    assert_eq!(stopped["Statistic"], "Maximum");
    assert_eq!(stopped["Period"], 60);
    assert_eq!(stopped["EvaluationPeriods"], 3);
    assert_eq!(stopped["DatapointsToAlarm"], 3);
    assert_eq!(stopped["ComparisonOperator"], "LessThanThreshold");
    assert_eq!(stopped["Threshold"], 0.0);
    assert_eq!(stopped["TreatMissingData"], "breaching");
    // Shorter than the heartbeat's window, so at an ordinary stop it alarms first.
    assert!(
        stopped["EvaluationPeriods"].as_u64().unwrap() * stopped["Period"].as_u64().unwrap()
            < heartbeat["EvaluationPeriods"].as_u64().unwrap()
                * heartbeat["Period"].as_u64().unwrap()
    );
    // The page: heartbeat lost while the host runs, held while host-stopped is (or is about
    // to be, or just was) in ALARM.
    let composites = of_type(&t, "AWS::CloudWatch::CompositeAlarm");
    assert_eq!(composites.len(), 1);
    assert_eq!(composites[0].0, "AgentDownAlarm");
    let down = &composites[0].1["Properties"];
    assert_eq!(
        sub_text(&down["AlarmRule"]),
        r#"ALARM("${AgentHeartbeatAlarm}") AND NOT ALARM("${HostStoppedAlarm}")"#
    );
    assert_eq!(down["ActionsSuppressor"]["Ref"], "HostStoppedAlarm");
    assert_eq!(down["ActionsSuppressorWaitPeriod"], 300);
    assert_eq!(down["ActionsSuppressorExtensionPeriod"], 600);
    assert_eq!(down["AlarmActions"], serde_json::json!([topic]));
    assert_eq!(down["OKActions"], serde_json::json!([topic]));
    assert!(
        sub_text(&down["AlarmDescription"])
            .contains("a stopped host (schedule, idle stop, admin) does not alarm")
    );
    let disk = &res["DataDiskAlarm"]["Properties"];
    assert_eq!(disk["MetricName"], "disk_used_percent");
    assert_eq!(disk["Threshold"], 85.0);
    assert_eq!(disk["Dimensions"][1]["Name"], "path");
    assert_eq!(disk["Dimensions"][1]["Value"], "/mnt/ebs-data");
    let mem = &res["MemoryAlarm"]["Properties"];
    assert_eq!(mem["MetricName"], "mem_used_percent");
    assert_eq!(mem["Threshold"], 90.0);
    let quota = &res["DiskQuotaAlarm"]["Properties"];
    let query = sub_text(&quota["Metrics"][0]["Expression"]);
    assert!(
        query.starts_with(
            "SELECT MAX(disk_quota_used_percent) FROM SCHEMA(\"CodeServer\", Developer, InstanceId)"
        ) && query.ends_with("WHERE InstanceId = '${Instance}'"),
        "{query}"
    );
    assert_eq!(quota["Threshold"], 90.0);
    assert_eq!(quota["TreatMissingData"], "notBreaching");
    let lost = &res["LogsLostAlarm"]["Properties"];
    assert_eq!(lost["MetricName"], "log_files_lost");
    assert_eq!(lost["Dimensions"][0]["Value"]["Ref"], "Instance");
    assert_eq!(lost["Statistic"], "Sum");
    assert_eq!(lost["ComparisonOperator"], "GreaterThanOrEqualToThreshold");
    assert_eq!(lost["Threshold"], 1.0);
    assert_eq!(lost["AlarmActions"], serde_json::json!([topic]));
    let cpu = &res["HighCpuAlarm"]["Properties"];
    assert_eq!(cpu["Namespace"], "AWS/EC2");
    assert_eq!(cpu["MetricName"], "CPUUtilization");
    assert_eq!(res["AlarmEmailSubscription"]["Condition"], "HasAlarmEmail");

    let body = sub_text(&res["Dashboard"]["Properties"]["DashboardBody"]);
    let parsed: Value = serde_json::from_str(body).unwrap();
    assert!(parsed["widgets"].as_array().unwrap().len() >= 10);
    for metric in infra::naming::HOST_METRICS
        .iter()
        .chain(infra::naming::DEVELOPER_METRICS.iter())
        .chain(infra::naming::ROLLUP_METRICS.iter())
    {
        assert!(
            body.contains(&format!("\"{metric}\"")) || body.contains(&format!("\\\"{metric}\\\"")),
            "{metric} not on the dashboard"
        );
    }
}

/// Logical ids a value depends on: Ref, GetAtt and Fn::Sub placeholders (parameters and
/// pseudo parameters are filtered out by the caller).
fn references(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("Ref") {
                out.insert(r.clone());
            }
            if let Some(Value::Array(a)) = m.get("Fn::GetAtt") {
                if let Some(Value::String(r)) = a.first() {
                    out.insert(r.clone());
                }
            }
            if let Some(s) = m.get("Fn::Sub") {
                let (text, vars) = match s {
                    Value::String(t) => (t.as_str(), None),
                    Value::Array(a) => (a[0].as_str().unwrap(), a.get(1)),
                    _ => panic!("bad Fn::Sub"),
                };
                let local: BTreeSet<String> = vars
                    .and_then(|v| v.as_object())
                    .map(|o| o.keys().cloned().collect())
                    .unwrap_or_default();
                for name in infra::agent_config::placeholders(text) {
                    let base = name.split('.').next().unwrap().to_string();
                    if !local.contains(&base) {
                        out.insert(base);
                    }
                }
                if let Some(v) = vars {
                    references(v, out);
                }
            }
            for (k, child) in m {
                if k != "Fn::Sub" {
                    references(child, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|c| references(c, out)),
        _ => {}
    }
}

fn dependency_graph(t: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let res = resources(t);
    let mut graph = BTreeMap::new();
    for (id, r) in res {
        let mut refs = BTreeSet::new();
        references(&r["Properties"], &mut refs);
        match &r.get("DependsOn") {
            Some(Value::String(d)) => {
                refs.insert(d.clone());
            }
            Some(Value::Array(a)) => refs.extend(a.iter().map(|d| d.as_str().unwrap().to_string())),
            _ => {}
        }
        graph.insert(
            id.clone(),
            refs.into_iter().filter(|r| res.contains_key(r)).collect(),
        );
    }
    graph
}

#[test]
fn every_reference_resolves() {
    for n in COUNTS {
        let t = template(n);
        let params: BTreeSet<&String> = t["Parameters"].as_object().unwrap().keys().collect();
        let conditions: BTreeSet<&String> = t["Conditions"].as_object().unwrap().keys().collect();
        let res = resources(&t);
        let mut refs = BTreeSet::new();
        references(&t["Resources"], &mut refs);
        references(&t["Outputs"], &mut refs);
        references(&t["Conditions"], &mut refs);
        for r in &refs {
            assert!(
                res.contains_key(r) || params.contains(r) || r.starts_with("AWS::"),
                "unknown reference {r}"
            );
        }
        for (id, r) in res {
            if let Some(c) = r.get("Condition") {
                assert!(
                    conditions.contains(&c.as_str().unwrap().to_string()),
                    "{id}"
                );
            }
        }
        // Every parameter is used somewhere.
        for p in params {
            assert!(refs.contains(p.as_str()), "parameter {p} is unused");
        }
    }
}

#[test]
fn no_dependency_cycle() {
    // One host (1, 8, 40 developers) and the parent of 40 on 4 hosts, whose nested stacks
    // depend on the hosts' instances.
    let multi = Settings {
        developers: 40,
        template_url_prefix: "https://b.s3.amazonaws.com/t/".into(),
        ..Settings::default()
    };
    multi.validate().unwrap();
    let parents = COUNTS
        .iter()
        .map(|&n| template(n))
        .chain([infra::build(&multi).parent]);
    for t in parents {
        let graph = dependency_graph(&t);
        // Kahn's algorithm: everything must be removable.
        let mut remaining = graph.clone();
        loop {
            let ready: Vec<String> = remaining
                .iter()
                .filter(|(_, deps)| deps.iter().all(|d| !remaining.contains_key(d)))
                .map(|(id, _)| id.clone())
                .collect();
            if ready.is_empty() {
                break;
            }
            for id in ready {
                remaining.remove(&id);
            }
        }
        assert!(remaining.is_empty(), "cycle among {:?}", remaining.keys());
    }
    // The specific edges the design relies on.
    let g = dependency_graph(&template(8));
    assert!(g["HttpsListener"].contains("Certificate"));
    assert!(g["Dev1DnsRecord"].contains("LoadBalancer"));
    assert!(!g["Dev1DnsRecord"].contains("HttpsListener"));
    assert!(
        g["Instance"].contains("DataVolume"),
        "user data reads the volume id"
    );
    assert!(!g["DataVolume"].contains("Instance"));
    assert!(g["DataVolumeAttachment"].contains("Instance"));
    assert!(g["Instance"].contains("PublicDefaultRoute"));
}

#[test]
fn every_taggable_resource_has_the_four_tags() {
    // Types whose CloudFormation schema has no tags.
    let untaggable: HashSet<&str> = [
        "AWS::EC2::VPCGatewayAttachment",
        "AWS::EC2::Route",
        "AWS::EC2::SubnetRouteTableAssociation",
        "AWS::EC2::SecurityGroupIngress",
        "AWS::EC2::VolumeAttachment",
        "AWS::IAM::InstanceProfile",
        "AWS::ElasticLoadBalancingV2::ListenerRule",
        "AWS::Route53::RecordSet",
        "AWS::SNS::Subscription",
        "AWS::CloudWatch::Dashboard",
        "AWS::Backup::BackupSelection",
        "AWS::Scheduler::Schedule",
        "AWS::Cognito::UserPoolClient",
        "AWS::Cognito::UserPoolDomain",
        // Taggable, but moto fails on its map of tags (infra/src/developer_set.rs).
        "AWS::SSM::Parameter",
    ]
    .into_iter()
    .collect();
    let t = template(8);
    for (id, r) in resources(&t) {
        let kind = r["Type"].as_str().unwrap();
        if untaggable.contains(kind) {
            continue;
        }
        let p = &r["Properties"];
        let keys: BTreeSet<String> = if let Some(list) = p["Tags"].as_array() {
            list.iter()
                .map(|t| t["Key"].as_str().unwrap().to_string())
                .collect()
        } else if let Some(map) = p
            .get("BackupVaultTags")
            .or_else(|| p.get("BackupPlanTags"))
            .or_else(|| p.get("UserPoolTags"))
            .and_then(|m| m.as_object())
        {
            map.keys().cloned().collect()
        } else {
            panic!("{id} ({kind}) has no tags");
        };
        for k in ["Project", "Environment", "ManagedBy", "CostCenter"] {
            assert!(keys.contains(k), "{id} lacks tag {k}");
        }
    }
}

#[test]
fn backup_selects_the_data_volume_with_the_parameter_retention() {
    let t = template(8);
    let res = resources(&t);
    let rule = &res["BackupPlan"]["Properties"]["BackupPlan"]["BackupPlanRule"][0];
    assert_eq!(
        rule["Lifecycle"]["DeleteAfterDays"]["Ref"],
        "BackupRetentionDays"
    );
    assert_eq!(
        rule["TargetBackupVault"],
        serde_json::json!({ "Fn::If": [
            "CreateBackupVault", { "Ref": "BackupVault" }, { "Ref": "ExistingBackupVaultName" },
        ] })
    );
    let sel = &res["BackupSelection"]["Properties"]["BackupSelection"];
    assert!(sub_text(&sel["Resources"][0]).ends_with(":volume/${DataVolume}"));
    assert_eq!(sel["IamRoleArn"]["Fn::GetAtt"][0], "BackupRole");
}

#[test]
fn load_balancer_listeners() {
    let t = template(8);
    let res = resources(&t);
    let attrs: BTreeMap<String, Value> =
        res["LoadBalancer"]["Properties"]["LoadBalancerAttributes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a.get("Key").is_some())
            .map(|a| (a["Key"].as_str().unwrap().to_string(), a["Value"].clone()))
            .collect();
    assert_eq!(attrs["idle_timeout.timeout_seconds"], "3600");
    assert_eq!(
        attrs["routing.http.drop_invalid_header_fields.enabled"],
        "true"
    );
    let http = &res["HttpListener"]["Properties"];
    assert_eq!(http["Port"], 80);
    assert_eq!(http["DefaultActions"][0]["Type"], "redirect");
    assert_eq!(
        http["DefaultActions"][0]["RedirectConfig"]["Protocol"],
        "HTTPS"
    );
    let https = &res["HttpsListener"]["Properties"];
    assert_eq!(https["Port"], 443);
    assert_eq!(
        https["DefaultActions"][0]["FixedResponseConfig"]["StatusCode"],
        "404"
    );
    let cert = &res["Certificate"]["Properties"];
    assert_eq!(sub_text(&cert["DomainName"]), "*.${DomainName}");
    assert_eq!(cert["ValidationMethod"], "DNS");
    assert_eq!(
        cert["DomainValidationOptions"][0]["HostedZoneId"]["Ref"],
        "HostedZoneId"
    );
}

#[test]
fn sixty_four_developers_fit_the_cloudformation_limits() {
    let t = template(64);
    assert!(
        resources(&t).len() <= 500,
        "{} resources",
        resources(&t).len()
    );
    assert!(t["Outputs"].as_object().unwrap().len() <= 200);
    assert!(t["Parameters"].as_object().unwrap().len() <= 200);
    let compact = render(&t, Format::Json, true).unwrap();
    assert!(
        compact.len() <= 1_000_000,
        "{} bytes (S3 template limit)",
        compact.len()
    );
}

#[test]
fn yaml_and_json_carry_the_same_template() {
    for n in COUNTS {
        let t = template(n);
        let yaml = render(&t, Format::Yaml, false).unwrap();
        let back: Value = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(back, t, "YAML round trip for {n}");
        // Long-form intrinsics only (no !Ref tags), so any YAML parser reads it.
        assert!(
            !yaml.contains(": !") && !yaml.contains("- !"),
            "short-form tag in YAML"
        );
        let json = render(&t, Format::Json, false).unwrap();
        let back: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
    }
}

#[test]
fn options_become_parameter_defaults() {
    let s = Settings {
        developers: 3,
        base_port: 9000,
        project: "acme-dev".into(),
        domain: "code.acme.io".into(),
        hosted_zone_id: "Z0ACME".into(),
        alarm_email: "ops@acme.io".into(),
        admin_cidr: "198.51.100.7/32".into(),
        key_pair: "admin".into(),
        deb_url: "s3://acme-artifacts/csagent_0.1.0_amd64.deb".into(),
        backup_retention_days: 7,
        schedule_start: "cron(0 8 ? * MON-FRI *)".into(),
        schedule_stop: "cron(0 20 ? * MON-FRI *)".into(),
        schedule_timezone: "Europe/Berlin".into(),
        idle_stop_hours: 2,
        ..Settings::default()
    };
    s.validate().unwrap();
    let t = build_template(&s);
    let p = &t["Parameters"];
    assert_eq!(p["ProjectName"]["Default"], "acme-dev");
    assert_eq!(p["DomainName"]["Default"], "code.acme.io");
    assert_eq!(p["HostedZoneId"]["Default"], "Z0ACME");
    assert_eq!(p["AlarmEmail"]["Default"], "ops@acme.io");
    assert_eq!(p["AdminSshCidr"]["Default"], "198.51.100.7/32");
    assert_eq!(p["KeyPairName"]["Default"], "admin");
    assert_eq!(
        p["DebUrl"]["Default"],
        "s3://acme-artifacts/csagent_0.1.0_amd64.deb"
    );
    assert_eq!(p["BackupRetentionDays"]["Default"], 7);
    assert_eq!(p["InstanceType"]["Default"], "t3.2xlarge");
    assert_eq!(p["ScheduleStart"]["Default"], "cron(0 8 ? * MON-FRI *)");
    assert_eq!(p["ScheduleStop"]["Default"], "cron(0 20 ? * MON-FRI *)");
    assert_eq!(p["ScheduleTimezone"]["Default"], "Europe/Berlin");
    assert_eq!(p["IdleStopHours"]["Default"], 2);
    let ports: Vec<u64> = (1..=3)
        .map(|d| {
            resources(&t)[&format!("Dev{d}TargetGroup")]["Properties"]["Port"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ports, vec![9000, 9001, 9002]);
    // Without --deb-url the parameter has no default (must be given at deploy time).
    assert!(template(1)["Parameters"]["DebUrl"].get("Default").is_none());
}

/// Every AWS call the agent makes (src/secrets, src/logs, src/metrics) is granted
/// to the instance role; moto does not enforce IAM, so this is the check.
#[test]
fn role_grants_every_call_the_agent_makes() {
    let t = template(8);
    let roles = of_type(&t, "AWS::IAM::Role");
    let policies = serde_json::to_string(&roles).unwrap();
    for action in [
        "secretsmanager:GetSecretValue",
        "secretsmanager:BatchGetSecretValue",
        "logs:CreateLogGroup",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "logs:PutRetentionPolicy",
        "logs:GetLogEvents",
        "cloudwatch:PutMetricData",
        "ecr:GetAuthorizationToken",
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
        "ecr:BatchCheckLayerAvailability",
        // csagent restore (src/restore/ec2.rs)
        "ec2:DescribeSnapshots",
        "ec2:DescribeInstances",
        "ec2:DescribeVolumes",
        "ec2:CreateVolume",
        "ec2:CreateTags",
        "ec2:AttachVolume",
        "ec2:DetachVolume",
        "ec2:DeleteVolume",
        "ssm:GetParameter",
    ] {
        assert!(
            policies.contains(&format!("\"{action}\"")),
            "the instance role lacks {action}"
        );
    }
}

#[test]
fn password_rotation_only_when_asked_and_within_the_resource_limit() {
    let t = template(8);
    assert!(of_type(&t, "AWS::SecretsManager::RotationSchedule").is_empty());
    assert!(t["Parameters"].get("PasswordRotationLambdaArn").is_none());

    let arn = "arn:aws:lambda:ap-southeast-7:123456789012:function:rotate-passwords";
    for n in [8, 10] {
        let s = Settings {
            developers: n,
            password_rotation_lambda_arn: arn.into(),
            password_rotation_days: 30,
            ..Settings::default()
        };
        s.validate().unwrap();
        let t = build_template(&s);
        assert_eq!(t["Parameters"]["PasswordRotationLambdaArn"]["Default"], arn);
        assert_eq!(t["Parameters"]["PasswordRotationDays"]["Default"], 30);
        assert!(t["Conditions"].get("RotatePasswords").is_some());
        let schedules = of_type(&t, "AWS::SecretsManager::RotationSchedule");
        assert_eq!(schedules.len(), n as usize);
        for d in 1..=n {
            let r = &resources(&t)[&format!("Dev{d}PasswordRotation")];
            assert_eq!(r["Condition"], "RotatePasswords");
            let p = &r["Properties"];
            assert_eq!(p["SecretId"]["Ref"], format!("Dev{d}PasswordSecret"));
            assert_eq!(p["RotationLambdaARN"]["Ref"], "PasswordRotationLambdaArn");
            assert_eq!(
                p["RotationRules"]["AutomaticallyAfterDays"]["Ref"],
                "PasswordRotationDays"
            );
        }
        assert!(
            resources(&t).len() <= 500,
            "{n} developers with rotation: {} resources",
            resources(&t).len()
        );
    }
    // 64 developers on one host (a big host, small CPU limits): host 1's developers are in
    // the parent, 64 × 8 resources with rotation is past 500, and the limit check says so.
    let too_many = Settings {
        developers: 64,
        instance_type: "r6i.8xlarge".into(),
        developer_cpu_millis: 500,
        password_rotation_lambda_arn: arn.into(),
        ..Settings::default()
    };
    too_many.validate().unwrap();
    assert_eq!(too_many.hosts(), 1);
    let t = infra::build(&too_many);
    let err = infra::limits::check(&t, 0).unwrap_err().to_string();
    assert!(
        err.starts_with("the parent template would have ")
            && err.contains("resources, more than CloudFormation's 500 per template; lower --developers-per-host"),
        "{err}"
    );
    // Spread over hosts of 32, it fits.
    let spread = Settings {
        developers_per_host: 32,
        template_url_prefix: "https://b.s3.amazonaws.com/t/".into(),
        ..too_many
    };
    spread.validate().unwrap();
    assert_eq!(infra::limits::check(&infra::build(&spread), 0), Ok(()));
}

/// checkov honours the skips a resource's Metadata declares (`checkov: skip: [{id, comment}]`),
/// so each must say why the check does not apply: a written reason of at least 20 characters.
/// scripts/check-infra.sh runs checkov itself on these templates.
#[test]
fn every_checkov_skip_carries_a_written_reason() {
    let with_rotation = Settings {
        developers: 8,
        password_rotation_lambda_arn:
            "arn:aws:lambda:ap-southeast-7:123456789012:function:csagent-ci-rotate".into(),
        ..Settings::default()
    };
    with_rotation.validate().unwrap();
    let templates = COUNTS
        .iter()
        .map(|&n| template(n))
        .chain([build_template(&with_rotation)]);
    for t in templates {
        let mut skipped = 0;
        for (id, r) in resources(&t) {
            let Some(skips) = r.pointer("/Metadata/checkov/skip") else {
                continue;
            };
            for skip in skips.as_array().unwrap() {
                let check = skip["id"].as_str().unwrap_or("(no id)");
                let reason = skip["comment"].as_str().unwrap_or("").trim();
                assert!(
                    reason.chars().count() >= 20,
                    "skip {check} on {id} has no written reason: {reason:?}"
                );
                skipped += 1;
            }
        }
        assert!(skipped > 0, "the template declares its checkov skips");
    }
}

#[test]
fn team_image_repository_scans_keeps_tags_and_expires_old_images() {
    let t = template(8);
    let repo = &resources(&t)["TeamImageRepository"];
    assert_eq!(repo["Type"], "AWS::ECR::Repository");
    assert_eq!(repo["DeletionPolicy"], "Retain");
    let p = &repo["Properties"];
    assert_eq!(
        sub_text(&p["RepositoryName"]),
        "${ProjectName}/code-server-${StackSuffix}"
    );
    assert_eq!(repo["Condition"], "CreateTeamImageRepository");
    assert_eq!(p["ImageScanningConfiguration"]["ScanOnPush"], true);
    assert_eq!(p["ImageTagMutability"], "IMMUTABLE");
    let policy: Value = serde_json::from_str(
        p["LifecyclePolicy"]["LifecyclePolicyText"]
            .as_str()
            .expect("policy text"),
    )
    .expect("the lifecycle policy is JSON");
    let rules = policy["rules"].as_array().expect("rules");
    assert_eq!(rules[0]["selection"]["tagStatus"], "untagged");
    assert_eq!(rules[0]["selection"]["countType"], "sinceImagePushed");
    // A tagStatus "any" rule must come last (highest rulePriority), as ECR requires.
    let last = rules.last().expect("a rule");
    assert_eq!(last["selection"]["tagStatus"], "any");
    assert_eq!(last["selection"]["countType"], "imageCountMoreThan");
    let priorities: Vec<u64> = rules
        .iter()
        .map(|r| r["rulePriority"].as_u64().expect("priority"))
        .collect();
    assert!(priorities.windows(2).all(|w| w[0] < w[1]), "{priorities:?}");

    assert_eq!(
        t["Outputs"]["TeamImageRepositoryUri"]["Value"]["Fn::If"][1],
        serde_json::json!({ "Fn::GetAtt": ["TeamImageRepository", "RepositoryUri"] })
    );
    assert_eq!(t["Parameters"]["TeamImageTag"]["Default"], "");
    let script = sub_text(&resources(&t)["Instance"]["Properties"]["UserData"]["Fn::Base64"]);
    assert!(script.contains("TEAM_IMAGE_TAG='${TeamImageTag}'"));
    assert!(script.contains("'${TeamImageRepositoryUri}'"));
    let variables =
        &resources(&t)["Instance"]["Properties"]["UserData"]["Fn::Base64"]["Fn::Sub"][1];
    assert_eq!(
        variables["TeamImageRepositoryUri"],
        t["Outputs"]["TeamImageRepositoryUri"]["Value"]
    );
}

#[test]
fn schedule_and_idle_stop_are_off_by_default() {
    let t = template(8);
    let p = &t["Parameters"];
    assert_eq!(p["ScheduleStart"]["Default"], "");
    assert_eq!(p["ScheduleStop"]["Default"], "");
    assert_eq!(p["ScheduleTimezone"]["Default"], "UTC");
    assert_eq!(p["IdleStopHours"]["Default"], 0);
    let res = resources(&t);
    for (id, condition) in [
        ("ScheduleRole", "HasSchedule"),
        ("StartSchedule", "HasScheduleStart"),
        ("StopSchedule", "HasScheduleStop"),
        ("InstanceIdleStopAlarm", "IdleStop"),
    ] {
        assert_eq!(res[id]["Condition"], condition, "{id}");
    }
    let c = &t["Conditions"];
    assert_eq!(
        c["HasScheduleStart"],
        serde_json::json!({ "Fn::Not": [{ "Fn::Equals": [{ "Ref": "ScheduleStart" }, ""] }] })
    );
    assert_eq!(
        c["HasSchedule"]["Fn::Or"],
        serde_json::json!([{ "Condition": "HasScheduleStart" }, { "Condition": "HasScheduleStop" }])
    );
    assert_eq!(
        c["IdleStop"],
        serde_json::json!({ "Fn::Not": [{ "Fn::Equals": [{ "Ref": "IdleStopHours" }, "0"] }] })
    );
}

#[test]
fn schedules_start_and_stop_the_host_in_the_time_zone() {
    let t = template(8);
    let res = resources(&t);
    for (id, expression, target) in [
        (
            "StartSchedule",
            "ScheduleStart",
            "arn:aws:scheduler:::aws-sdk:ec2:startInstances",
        ),
        (
            "StopSchedule",
            "ScheduleStop",
            "arn:aws:scheduler:::aws-sdk:ec2:stopInstances",
        ),
    ] {
        let r = &res[id];
        assert_eq!(r["Type"], "AWS::Scheduler::Schedule");
        let p = &r["Properties"];
        assert_eq!(p["ScheduleExpression"]["Ref"], expression);
        assert_eq!(p["ScheduleExpressionTimezone"]["Ref"], "ScheduleTimezone");
        assert_eq!(p["FlexibleTimeWindow"]["Mode"], "OFF");
        assert_eq!(p["State"], "ENABLED");
        assert_eq!(p["Target"]["Arn"], target);
        assert_eq!(
            p["Target"]["RoleArn"],
            serde_json::json!({ "Fn::GetAtt": ["ScheduleRole", "Arn"] })
        );
        // The input is the API call's JSON once CloudFormation fills in the instance id.
        let input = sub_text(&p["Target"]["Input"]).replace("${Instance}", "i-0abc");
        let input: Value = serde_json::from_str(&input).expect("input is JSON");
        assert_eq!(input, serde_json::json!({ "InstanceIds": ["i-0abc"] }));
        let retry = &p["Target"]["RetryPolicy"];
        assert!(retry["MaximumEventAgeInSeconds"].as_u64().unwrap() <= 3600);
    }
}

#[test]
fn schedule_role_is_least_privilege() {
    let t = template(8);
    let role = &resources(&t)["ScheduleRole"]["Properties"];
    let trust = &role["AssumeRolePolicyDocument"]["Statement"];
    assert_eq!(trust.as_array().unwrap().len(), 1);
    assert_eq!(trust[0]["Principal"]["Service"], "scheduler.amazonaws.com");
    assert_eq!(trust[0]["Action"], "sts:AssumeRole");
    assert_eq!(
        trust[0]["Condition"]["StringEquals"]["aws:SourceAccount"]["Ref"],
        "AWS::AccountId"
    );
    assert!(
        sub_text(&trust[0]["Condition"]["ArnEquals"]["aws:SourceArn"])
            .ends_with(":schedule-group/default")
    );
    assert!(role.get("ManagedPolicyArns").is_none());
    let policies = role["Policies"].as_array().unwrap();
    assert_eq!(policies.len(), 1);
    let statements = policies[0]["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap();
    let mut granted = Vec::new();
    for s in statements {
        // Each action only while its schedule exists.
        let [condition, statement, otherwise] = s["Fn::If"].as_array().unwrap().as_slice() else {
            panic!("not a Fn::If: {s}");
        };
        assert_eq!(otherwise["Ref"], "AWS::NoValue");
        assert_eq!(statement["Effect"], "Allow");
        let resources = statement["Resource"].as_array().unwrap();
        assert_eq!(resources.len(), 1);
        assert_eq!(
            sub_text(&resources[0]),
            "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:instance/${Instance}"
        );
        granted.push((
            condition.as_str().unwrap().to_string(),
            statement["Action"].as_str().unwrap().to_string(),
        ));
    }
    assert_eq!(
        granted,
        vec![
            ("HasScheduleStart".into(), "ec2:StartInstances".into()),
            ("HasScheduleStop".into(), "ec2:StopInstances".into()),
        ]
    );
    assert!(!serde_json::to_string(role).unwrap().contains("\"*\""));
}

#[test]
fn idle_stop_alarm_stops_the_host_after_idle_stop_hours() {
    let t = template(8);
    let a = &resources(&t)["InstanceIdleStopAlarm"]["Properties"];
    assert_eq!(a["Namespace"], csagent_contract::metrics::NAMESPACE);
    assert_eq!(
        a["MetricName"],
        csagent_contract::metrics::DEVELOPERS_ACTIVE
    );
    assert_eq!(
        a["Dimensions"],
        serde_json::json!([{ "Name": "InstanceId", "Value": { "Ref": "Instance" } }])
    );
    assert_eq!(a["Statistic"], "Maximum");
    assert_eq!(a["ComparisonOperator"], "LessThanThreshold");
    assert_eq!(a["Threshold"], 1);
    // A stopped host publishes nothing: that must not count as idle.
    assert_eq!(a["TreatMissingData"], "notBreaching");
    let periods = serde_json::json!({ "Fn::FindInMap": ["IdleStopPeriods", { "Ref": "IdleStopHours" }, "Periods"] });
    assert_eq!(a["EvaluationPeriods"], periods);
    assert_eq!(a["DatapointsToAlarm"], periods);
    let actions: Vec<String> = a["AlarmActions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    assert!(
        actions.contains(
            &r#"{"Fn::Sub":"arn:${AWS::Partition}:automate:${AWS::Region}:ec2:stop"}"#.to_string()
        ),
        "{actions:?}"
    );
    // Every hour count the parameter allows has a row, within PutMetricAlarm's one-day limit
    // for periods under an hour.
    let period = a["Period"].as_u64().unwrap();
    let rows = t["Mappings"]["IdleStopPeriods"].as_object().unwrap();
    let hours = &t["Parameters"]["IdleStopHours"];
    let (min, max) = (
        hours["MinValue"].as_u64().unwrap(),
        hours["MaxValue"].as_u64().unwrap(),
    );
    assert_eq!((min, max), (0, 24));
    assert_eq!(rows.len() as u64, max);
    for h in 1..=max {
        let n = rows[&h.to_string()]["Periods"].as_u64().unwrap();
        assert_eq!(n * period, h * 3600, "{h} hours");
        assert!(n * period <= 86_400);
    }
}

#[test]
fn schedule_and_idle_stop_cover_every_host_given() {
    let mut res = infra::cfn::Resources::default();
    infra::schedule::add(&mut res, &["HostA", "HostB"]);
    for host in ["HostA", "HostB"] {
        infra::schedule::add_idle_stop(&mut res, host);
    }
    let v = res.into_value();
    let input = sub_text(&v["StartSchedule"]["Properties"]["Target"]["Input"]);
    assert_eq!(input, r#"{"InstanceIds":["${HostA}","${HostB}"]}"#);
    assert_eq!(
        v["StopSchedule"]["Properties"]["Target"]["Input"],
        v["StartSchedule"]["Properties"]["Target"]["Input"]
    );
    let statement = &v["ScheduleRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        [0]["Fn::If"][1];
    let arns: Vec<&str> = statement["Resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(sub_text)
        .collect();
    assert_eq!(arns.len(), 2);
    assert!(arns[0].ends_with("instance/${HostA}") && arns[1].ends_with("instance/${HostB}"));
    for host in ["HostA", "HostB"] {
        let alarm = &v[&format!("{host}IdleStopAlarm")]["Properties"];
        assert_eq!(alarm["Dimensions"][0]["Value"]["Ref"], host);
    }
}
