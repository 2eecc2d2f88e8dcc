//! More than one host: for 40 and 100 developers (and the 9-developer single host), each
//! developer is on exactly one host, whose developer-set parameter lists it and whose instance
//! its target group targets on its port; each host has its own instance, volume, backup
//! selection, role (its own parameter and its own developers' secrets only), alarms and idle
//! stop; the dashboard and the schedules cover every host; the child templates refer only to
//! what they declare or the parent passes; every template is within CloudFormation's limits.

use infra::{Settings, Templates, build};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};

const PREFIX: &str = "https://csagent-templates.s3.amazonaws.com/env/";

fn settings(developers: u32, per_host: u32) -> Settings {
    let s = Settings {
        developers,
        developers_per_host: per_host,
        template_url_prefix: PREFIX.into(),
        ..Settings::default()
    };
    s.validate().unwrap();
    s
}

fn resources(t: &Value) -> &Map<String, Value> {
    t["Resources"].as_object().unwrap()
}

fn sub_text(v: &Value) -> &str {
    v["Fn::Sub"]
        .as_str()
        .or_else(|| v["Fn::Sub"][0].as_str())
        .unwrap()
}

/// Host n's logical id of a per-host resource.
fn host_id(n: u32, base: &str) -> String {
    if n == 1 {
        base.to_string()
    } else {
        format!("Host{n}{base}")
    }
}

/// Where each developer's target group is, and the instance it targets (a logical id of
/// the parent), resolved through the child's parameters.
fn target_groups(t: &Templates) -> BTreeMap<u32, (u32, String, u64)> {
    let mut found = BTreeMap::new();
    let mut scan = |host: u32, res: &Map<String, Value>, passed: Option<&Map<String, Value>>| {
        for (id, r) in res {
            let Some(n) = id
                .strip_prefix("Dev")
                .and_then(|x| x.strip_suffix("TargetGroup"))
            else {
                continue;
            };
            let n: u32 = n.parse().unwrap();
            let target = &r["Properties"]["Targets"][0];
            let mut instance = target["Id"]["Ref"].as_str().unwrap().to_string();
            if let Some(passed) = passed {
                // The child's parameter, and what the parent passes for it.
                instance = passed[&instance]["Ref"].as_str().unwrap().to_string();
            }
            assert_eq!(target["Port"], r["Properties"]["Port"]);
            let port = target["Port"].as_u64().unwrap();
            assert!(
                found.insert(n, (host, instance, port)).is_none(),
                "dev{n} has two target groups"
            );
        }
    };
    scan(1, resources(&t.parent), None);
    for c in &t.children {
        let stack = &resources(&t.parent)[&format!("Host{}Stack", c.host)];
        assert_eq!(stack["Type"], "AWS::CloudFormation::Stack");
        assert_eq!(
            stack["Properties"]["TemplateURL"],
            format!("{PREFIX}{}", c.file_name)
        );
        let passed = stack["Properties"]["Parameters"].as_object().unwrap();
        scan(c.host, resources(&c.template), Some(passed));
    }
    found
}

/// The developers host n's parameter lists.
fn published(t: &Value, n: u32) -> Vec<(String, i64)> {
    let p = &resources(t)[&format!("Host{n}Developers")]["Properties"];
    assert_eq!(
        sub_text(&p["Name"]),
        format!("/${{ProjectName}}/csagent/host-{n}/developers")
    );
    let value: toml::Table = toml::from_str(p["Value"].as_str().unwrap()).unwrap();
    value["developer"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_string(),
                d["port"].as_integer().unwrap(),
            )
        })
        .collect()
}

#[test]
fn every_developer_is_on_exactly_one_host_whose_instance_its_target_group_targets() {
    for (developers, per_host, hosts) in [(9, 0, 1), (40, 0, 4), (40, 8, 5), (100, 0, 10)] {
        let s = settings(developers, per_host);
        assert_eq!(
            s.hosts(),
            hosts,
            "{developers} developers, per host {per_host}"
        );
        let t = build(&s);
        assert_eq!(t.children.len() as u32, hosts - 1);
        let tgs = target_groups(&t);
        assert_eq!(
            tgs.len() as u32,
            developers,
            "one target group per developer"
        );
        let mut on_hosts = BTreeMap::new();
        for n in 1..=hosts {
            for (name, port) in published(&t.parent, n) {
                assert!(
                    on_hosts.insert(name.clone(), (n, port)).is_none(),
                    "{name} on two hosts"
                );
            }
        }
        assert_eq!(on_hosts.len() as u32, developers);
        for (k, (host, instance, port)) in &tgs {
            let per = s.per_host();
            assert_eq!(*host, k.div_ceil(per), "dev{k} on host ceil(k / {per})");
            assert_eq!(on_hosts[&format!("dev{k}")], (*host, *port as i64));
            assert_eq!(instance, &host_id(*host, "Instance"));
            assert_eq!(*port, 8443 + u64::from(*k) - 1);
            assert_eq!(resources(&t.parent)[instance]["Type"], "AWS::EC2::Instance");
        }
    }
}

#[test]
fn each_host_has_its_own_volume_backup_role_parameter_and_alarms() {
    let s = settings(40, 0);
    let t = build(&s);
    let res = resources(&t.parent);
    let mut volumes = BTreeSet::new();
    for host in s.host_list() {
        let n = host.number;
        let id = |base: &str| host_id(n, base);
        assert_eq!(res[&id("Instance")]["Type"], "AWS::EC2::Instance");
        let script = sub_text(&res[&id("Instance")]["Properties"]["UserData"]["Fn::Base64"]);
        assert!(script.contains(&format!("volume_id = \"${{{}}}\"", id("DataVolume"))));
        assert!(script.contains(&format!("csagent/host-{n}/developers")));
        assert_eq!(
            res[&id("Instance")]["Properties"]["IamInstanceProfile"]["Ref"],
            id("InstanceProfile")
        );
        assert_eq!(
            res[&id("DataVolumeAttachment")]["Properties"]["VolumeId"]["Ref"],
            id("DataVolume")
        );
        volumes.insert(id("DataVolume"));
        // A snapshot is one host's homes: each volume starts from its own parameter only.
        let snapshot = &res[&id("DataVolume")]["Properties"]["SnapshotId"];
        assert_eq!(
            snapshot,
            &json!({ "Fn::If": [
                id("HasDataVolumeSnapshot"),
                { "Ref": id("DataVolumeSnapshotId") },
                { "Ref": "AWS::NoValue" },
            ] }),
            "host {n}"
        );
        let selection = &res[&id("BackupSelection")]["Properties"]["BackupSelection"];
        assert!(
            sub_text(&selection["Resources"][0]).ends_with(&format!("${{{}}}", id("DataVolume")))
        );
        // The role: its own parameter, its own developers' secrets.
        let statements =
            res[&id("InstanceRole")]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
                .as_array()
                .unwrap();
        let by_sid = |sid: &str| {
            statements
                .iter()
                .find(|st| st["Sid"] == sid)
                .unwrap_or_else(|| panic!("{sid}"))
        };
        assert!(
            sub_text(&by_sid("ReadDeveloperSet")["Resource"]).ends_with(&format!(
                ":parameter/${{ProjectName}}/csagent/host-{n}/developers"
            ))
        );
        let own = by_sid("ReadOwnDevelopersSecrets");
        assert!(sub_text(&own["Resource"]).ends_with(":secret:${ProjectName}/*"));
        assert_eq!(
            own["Condition"]["StringEquals"]["secretsmanager:ResourceTag/csagent-host"],
            n.to_string(),
            "host {n} reads only the secrets tagged with its number"
        );
        // ... which are exactly its developers' secrets, wherever they are.
        let stacks: Vec<&Map<String, Value>> = std::iter::once(res)
            .chain(t.children.iter().map(|c| resources(&c.template)))
            .collect();
        for r in stacks.iter().flat_map(|m| m.values()) {
            if r["Type"] != "AWS::SecretsManager::Secret" {
                continue;
            }
            let tags = r["Properties"]["Tags"].as_array().unwrap();
            let tag = |k: &str| {
                tags.iter()
                    .find(|t| t["Key"] == k)
                    .map(|t| t["Value"].clone())
            };
            let dev = tag("Developer").unwrap();
            let on_this = host.developers.iter().any(|d| dev == d.name.as_str());
            assert_eq!(
                tag("csagent-host") == Some(Value::from(n.to_string())),
                on_this,
                "{dev}"
            );
        }
        for alarm in [
            "HighCpuAlarm",
            "DataDiskAlarm",
            "MemoryAlarm",
            "LogsLostAlarm",
            "AgentHeartbeatAlarm",
            "HostStoppedAlarm",
        ] {
            assert_eq!(
                res[&id(alarm)]["Properties"]["Dimensions"][0]["Value"]["Ref"],
                id("Instance"),
                "{alarm} of host {n}"
            );
        }
        // Its agent-down page reads its own heartbeat and host-stopped alarms, never another
        // host's: host 2 stopped must not hide host 1's dead agent.
        let down = &res[&id("AgentDownAlarm")];
        assert_eq!(down["Type"], "AWS::CloudWatch::CompositeAlarm");
        assert_eq!(
            sub_text(&down["Properties"]["AlarmRule"]),
            format!(
                "ALARM(\"${{{}}}\") AND NOT ALARM(\"${{{}}}\")",
                id("AgentHeartbeatAlarm"),
                id("HostStoppedAlarm")
            ),
            "host {n}"
        );
        assert_eq!(
            down["Properties"]["ActionsSuppressor"]["Ref"],
            id("HostStoppedAlarm")
        );
        for signal in ["AgentHeartbeatAlarm", "HostStoppedAlarm"] {
            assert!(
                res[&id(signal)]["Properties"].get("AlarmActions").is_none(),
                "{signal} of host {n} pages"
            );
        }
        assert!(
            sub_text(&res[&id("DiskQuotaAlarm")]["Properties"]["Metrics"][0]["Expression"])
                .contains(&format!("'${{{}}}'", id("Instance")))
        );
        let idle = &res[&format!("{}IdleStopAlarm", id("Instance"))];
        assert_eq!(idle["Condition"], "IdleStop");
        assert_eq!(
            idle["Properties"]["Dimensions"][0]["Value"]["Ref"],
            id("Instance")
        );
        // Its developers' log groups are in the parent, and its role waits for them.
        let depends: Vec<&str> = res[&id("InstanceRole")]["DependsOn"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap())
            .collect();
        for d in &host.developers {
            let group = format!("{}LogGroup", d.id());
            assert!(res.contains_key(&group));
            assert!(depends.contains(&group.as_str()));
        }
    }
    assert_eq!(volumes.len(), 4);
    // The dashboard and both schedules cover every host.
    let dashboard = sub_text(&res["Dashboard"]["Properties"]["DashboardBody"]);
    let input = sub_text(&res["StartSchedule"]["Properties"]["Target"]["Input"]);
    for n in 1..=4 {
        let instance = format!("${{{}}}", host_id(n, "Instance"));
        assert!(dashboard.contains(&instance), "dashboard lacks host {n}");
        assert!(input.contains(&instance), "schedule lacks host {n}");
    }
    assert!(
        dashboard.contains(" OR "),
        "the per-developer searches take every host"
    );
    // Outputs name every host.
    for n in 2..=4 {
        assert_eq!(
            t.parent["Outputs"][format!("Host{n}InstanceId")]["Value"]["Ref"],
            format!("Host{n}Instance")
        );
    }
}

/// Every `Ref` and `${…}` in `v`.
fn references(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("Ref") {
                out.insert(r.clone());
            }
            if let Some(Value::Array(a)) = m.get("Fn::GetAtt") {
                out.insert(a[0].as_str().unwrap().to_string());
            }
            if let Some(sub) = m.get("Fn::Sub") {
                let (text, own) = match sub {
                    Value::String(t) => (t.as_str(), BTreeSet::new()),
                    Value::Array(a) => (
                        a[0].as_str().unwrap(),
                        a[1].as_object().unwrap().keys().cloned().collect(),
                    ),
                    _ => unreachable!(),
                };
                for name in infra::agent_config::placeholders(text) {
                    let name = name.split('.').next().unwrap().to_string();
                    if !own.contains(&name) {
                        out.insert(name);
                    }
                }
            }
            for x in m.values() {
                references(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| references(x, out)),
        _ => {}
    }
}

#[test]
fn child_templates_refer_only_to_what_they_declare_and_the_parent_passes_it() {
    let t = build(&settings(100, 0));
    let parent_res = resources(&t.parent);
    let parent_params = t.parent["Parameters"].as_object().unwrap();
    for c in &t.children {
        let params = c.template["Parameters"].as_object().unwrap();
        let res = resources(&c.template);
        let mut refs = BTreeSet::new();
        references(&c.template["Resources"], &mut refs);
        references(&c.template["Conditions"], &mut refs);
        for r in &refs {
            assert!(
                res.contains_key(r) || params.contains_key(r) || r.starts_with("AWS::"),
                "host {}: {r} is not declared",
                c.host
            );
        }
        for p in params.keys() {
            assert!(refs.contains(p), "host {}: parameter {p} is unused", c.host);
        }
        let stack = &parent_res[&format!("Host{}Stack", c.host)]["Properties"];
        let passed = stack["Parameters"].as_object().unwrap();
        assert_eq!(
            passed.keys().collect::<BTreeSet<_>>(),
            params.keys().collect::<BTreeSet<_>>(),
            "the parent passes exactly the child's parameters"
        );
        let mut given = BTreeSet::new();
        references(&stack["Parameters"], &mut given);
        for g in &given {
            assert!(
                parent_res.contains_key(g) || parent_params.contains_key(g),
                "the parent passes {g}, which it lacks"
            );
        }
        // The child's developers only, with their own ids.
        let host = &settings(100, 0).host_list()[c.host as usize - 1];
        for d in &host.developers {
            for kind in [
                "PasswordSecret",
                "ClaudeApiKeySecret",
                "TargetGroup",
                "ListenerRule",
                "DnsRecord",
                "ContainerHealthAlarm",
            ] {
                assert!(
                    res.contains_key(&format!("{}{kind}", d.id())),
                    "{}{kind}",
                    d.id()
                );
                assert!(!parent_res.contains_key(&format!("{}{kind}", d.id())));
            }
        }
        assert_eq!(res.len(), host.developers.len() * 6);
        assert!(c.file_name.starts_with(&format!("host-{}-", c.host)));
    }
}

#[test]
fn a_hundred_developers_fit_cloudformation_s_limits_and_print_their_figures() {
    for per_host in [0, 8] {
        let s = settings(100, per_host);
        let t = build(&s);
        let parent = infra::render(&t.parent, infra::Format::Json, false).unwrap();
        infra::limits::check(&t, parent.len()).unwrap();
        println!(
            "100 developers, {} per host: parent {} resources, {} parameters, {} outputs, {} bytes",
            s.per_host(),
            resources(&t.parent).len(),
            t.parent["Parameters"].as_object().unwrap().len(),
            t.parent["Outputs"].as_object().unwrap().len(),
            parent.len()
        );
        for c in &t.children {
            let text = infra::render(&c.template, infra::Format::Json, false).unwrap();
            println!(
                "  host {}: {} resources, {} parameters, {} bytes",
                c.host,
                resources(&c.template).len(),
                c.template["Parameters"].as_object().unwrap().len(),
                text.len()
            );
        }
    }
}

#[test]
fn adding_developers_changes_no_existing_child_or_host() {
    // 40 → 41: host 5 appears; hosts 1..4's resources and children are unchanged.
    let (a, b) = (build(&settings(40, 0)), build(&settings(41, 0)));
    assert_eq!(a.children.len() + 1, b.children.len());
    for (x, y) in a.children.iter().zip(&b.children) {
        assert_eq!(x, y, "host {}'s child changed", x.host);
    }
    for (id, r) in resources(&a.parent) {
        if [
            "Dashboard",
            "StartSchedule",
            "StopSchedule",
            "ScheduleRole",
            "HostSecurityGroup",
            "AlbSecurityGroup",
            "SsoUserPoolClient",
        ]
        .contains(&id.as_str())
        {
            continue; // they list every host, port or callback URL
        }
        assert_eq!(Some(r), resources(&b.parent).get(id), "{id} changed");
    }
}

#[test]
fn the_same_settings_give_the_same_file_names() {
    let (a, b) = (build(&settings(40, 0)), build(&settings(40, 0)));
    assert_eq!(a, b);
    let names: BTreeSet<&String> = a.children.iter().map(|c| &c.file_name).collect();
    assert_eq!(names.len(), 3);
}

/// Re-creating a deleted three-host stack: each host's volume starts from the final snapshot
/// of its own volume, named in host order; an empty entry leaves that host blank.
#[test]
fn each_host_restores_its_own_snapshot() {
    let s = Settings {
        data_volume_snapshot_id: "snap-0123456789abcdef0,,snap-89abcdef".into(),
        ..settings(24, 8)
    };
    s.validate().unwrap();
    let t = build(&s);
    let params = &t.parent["Parameters"];
    let defaults: Vec<&str> = (1..=3)
        .map(|n| {
            params[host_id(n, "DataVolumeSnapshotId")]["Default"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(defaults, ["snap-0123456789abcdef0", "", "snap-89abcdef"]);
    for n in 1..=3 {
        assert_eq!(
            t.parent["Conditions"][host_id(n, "HasDataVolumeSnapshot")],
            json!({ "Fn::Not": [ { "Fn::Equals": [
                { "Ref": host_id(n, "DataVolumeSnapshotId") }, ""
            ] } ] }),
            "host {n}: a plain Ref, the only kind of value Conditions may compare"
        );
    }
    // The console shows them with the host's other settings, in host order.
    let groups = t.parent["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
        .as_array()
        .unwrap();
    let host_group = groups[1]["Parameters"].as_array().unwrap();
    let at = |p: &str| host_group.iter().position(|x| x == p).unwrap();
    assert!(at("DataVolumeSnapshotId") < at("Host2DataVolumeSnapshotId"));
    assert!(at("Host2DataVolumeSnapshotId") < at("Host3DataVolumeSnapshotId"));

    // More snapshots than hosts is refused, naming the option and the count.
    let four = Settings {
        data_volume_snapshot_id: "snap-01234567,snap-01234567,snap-01234567,snap-01234567".into(),
        ..settings(24, 8)
    };
    let err = four.validate().unwrap_err();
    assert_eq!(err.option, "--data-volume-snapshot-id");
    assert!(err.to_string().contains("names 4 snapshots"), "{err}");
    let bad = Settings {
        data_volume_snapshot_id: "snap-01234567,vol-01234567".into(),
        ..settings(24, 8)
    };
    assert!(
        bad.validate()
            .unwrap_err()
            .to_string()
            .contains("vol-01234567")
    );
}
