//! The developer set from an SSM parameter (`developers.parameter`), against
//! moto, dockerd and a loop device: `csagent run` reads the set at start, a
//! PutParameter 2 -> 3 brings the new developer up without restarting the
//! others, removing one retires its container and keeps its home, an invalid
//! value is refused (the last good set stays, status says why, the log says it
//! once), a fixed value applies, and a restart without the parameter starts
//! from the saved copy.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// `docker inspect` of a container: (id, State.StartedAt), None when it is gone.
fn started(name: &str) -> Option<(String, String)> {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.Id}} {{.State.StartedAt}}", name])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (id, at) = text.split_once(' ')?;
    Some((id.to_string(), at.to_string()))
}

fn names(status: &serde_json::Value) -> Vec<String> {
    status["developers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Running and healthy developers named exactly `want`, in that order.
fn exactly_healthy(code: i32, s: &serde_json::Value, want: &[String]) -> bool {
    code == 0 && names(s) == want && all_developers_healthy(code, s, want.len())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_developer_set_follows_the_parameter() {
    require_root();
    let t0 = Instant::now();
    let disk = LoopDevice::new("128M");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let runtime = tempfile::Builder::new()
        .prefix("csagent-devset-")
        .tempdir_in("/dev/shm")
        .expect("tmpfs dir");
    let project = unique("dset").replace('-', "");
    let base = port_block(4);
    let subnet = test_subnet();
    let _cleanup = Leftovers {
        project: project.clone(),
        network: format!("csagent-{project}"),
        subnet: subnet.clone(),
        mount: Some(dir.path().join("data")),
    };
    let sdk = aws().await;
    let sm = aws_sdk_secretsmanager::Client::new(&sdk);
    for i in 1..=3 {
        for (kind, value) in [
            ("password", format!("pw-{project}-{i}")),
            ("claude-api-key", "REPLACE_WITH_ACTUAL_KEY".to_string()),
        ] {
            sm.create_secret()
                .name(format!("{project}/{project}-d{i}/{kind}"))
                .secret_string(value)
                .send()
                .await
                .expect("create secret");
        }
    }
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let parameter = csagent_contract::names::developers_parameter(&project, 1);
    let dev = |i: u16| format!("{project}-d{i}");
    let table =
        |i: u16, port: u16| format!("[[developer]]\nname = \"{}\"\nport = {port}\n", dev(i));
    let publish = |value: String| {
        let (ssm, parameter) = (ssm.clone(), parameter.clone());
        async move {
            ssm.put_parameter()
                .name(&parameter)
                .value(value)
                .r#type(aws_sdk_ssm::types::ParameterType::String)
                .overwrite(true)
                .send()
                .await
                .expect("moto ssm PutParameter")
                .version()
        }
    };
    publish(format!("{}{}", table(1, base + 1), table(2, base + 2))).await;

    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "project = \"{project}\"\nregion = \"{REGION}\"\ninstance_id = \"i-0123456789abcdef0\"\n\
             [aws]\nendpoint_url = \"{moto}\"\n\
             [volume]\ndevice = \"{disk}\"\nmount_point = \"{root}/data\"\nfstab = \"{root}/fstab\"\nwait_timeout = \"10s\"\n\
             [containers]\nimage = \"{TEST_IMAGE}\"\npull = \"never\"\ncpus = 0.25\nmemory = \"256MiB\"\nmemory_reservation = \"128MiB\"\n\
             network = \"csagent-{project}\"\nsubnet = \"{subnet}\"\nhealth_interval = \"1s\"\nhealth_start_period = \"0s\"\nstop_grace = \"2s\"\n\
             [developers]\nparameter = \"{parameter}\"\npoll_interval = \"1s\"\n\
             [secrets]\npoll_interval = \"30s\"\n\
             [metrics]\nenabled = false\n\
             [logs]\nenabled = true\n\
             [agent]\nstate_dir = \"{root}/state\"\nruntime_dir = \"{run}\"\nsocket = \"{root}/ctl/csagent.sock\"\nsocket_group = \"adm\"\n",
            moto = moto_url(),
            disk = disk.path(),
            root = dir.path().display(),
            run = runtime.path().display(),
        ),
    )
    .expect("write config");
    std::fs::create_dir_all(dir.path().join("ctl")).expect("ctl dir");
    std::fs::set_permissions(
        dir.path().join("ctl"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");

    // 1. The set at start: two developers from the parameter.
    let mut daemon = AgentDaemon::start(&config);
    daemon.wait_notify("READY=1", Duration::from_secs(90));
    let s = daemon.wait_status("d1, d2 healthy", Duration::from_secs(60), |c, s| {
        exactly_healthy(c, s, &[dev(1), dev(2)])
    });
    let set = &s["developer_set"];
    assert_eq!(set["source"], "parameter", "{s}");
    assert_eq!(set["parameter"], parameter.as_str(), "{s}");
    assert_eq!(set["version"], 1, "{s}");
    assert!(
        set["applied_at"].is_string() && set["modified_at"].is_string(),
        "{s}"
    );
    assert!(set["refused"].is_null(), "{s}");
    let before = [
        started(&format!("code-server-{}", dev(1))).expect("d1 container"),
        started(&format!("code-server-{}", dev(2))).expect("d2 container"),
    ];
    println!("two developers up from the parameter in {:?}", t0.elapsed());

    // 2. A third developer is published: it comes up; d1 and d2 are not touched.
    let t = Instant::now();
    let v2 = publish(format!(
        "{}{}{}",
        table(1, base + 1),
        table(2, base + 2),
        table(3, base + 3)
    ))
    .await;
    let s = daemon.wait_status("d3 added", Duration::from_secs(60), |c, s| {
        exactly_healthy(c, s, &[dev(1), dev(2), dev(3)])
    });
    println!(
        "d3 running and healthy {:?} after PutParameter",
        t.elapsed()
    );
    assert_eq!(s["developer_set"]["version"], v2, "{s}");
    assert_eq!(status_developer(&s, &dev(3))["port"], base + 3);
    for (i, b) in before.iter().enumerate() {
        let name = format!("code-server-{}", dev(i as u16 + 1));
        assert_eq!(
            started(&name).as_ref(),
            Some(b),
            "{name} must not be recreated or restarted by an added developer"
        );
    }
    // The new developer's secrets were read (password version shown) and its
    // log group exists (log shipping started for it).
    assert!(
        status_developer(&s, &dev(3))["password_version"].is_string(),
        "{s}"
    );
    let cwl = aws_sdk_cloudwatchlogs::Client::new(&sdk);
    let group = format!("/aws/ec2/{project}/containers/{}", dev(3));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = cwl
            .describe_log_groups()
            .log_group_name_prefix(&group)
            .send()
            .await
            .map(|o| {
                o.log_groups()
                    .iter()
                    .any(|g| g.log_group_name() == Some(group.as_str()))
            })
            .unwrap_or(false);
        if found {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "log group {group} within 30 s\nagent log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // 3. d2 is removed: its container is retired, its home stays; d1 untouched.
    let home2 = dir.path().join("data").join(dev(2)).join("home");
    assert!(home2.is_dir(), "d2 has a home on the volume");
    std::fs::write(home2.join("work.txt"), "keep me").expect("write into d2's home");
    publish(format!("{}{}", table(1, base + 1), table(3, base + 3))).await;
    daemon.wait_status("d2 removed", Duration::from_secs(60), |c, s| {
        exactly_healthy(c, s, &[dev(1), dev(3)])
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while started(&format!("code-server-{}", dev(2))).is_some() {
        assert!(Instant::now() < deadline, "d2's container removed");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        std::fs::read_to_string(home2.join("work.txt"))
            .ok()
            .as_deref(),
        Some("keep me"),
        "a removed developer's data is kept"
    );
    assert_eq!(
        started(&format!("code-server-{}", dev(1))).as_ref(),
        Some(&before[0])
    );

    // 4. An invalid value (a port clash) is refused: d1 and d3 keep running,
    // status names the parameter and the key, the log says it once.
    let good = daemon.status().1["developer_set"]["version"].clone();
    let d3 = started(&format!("code-server-{}", dev(3))).expect("d3 container");
    let bad = publish(format!("{}{}", table(1, base + 1), table(3, base + 1))).await;
    let s = daemon.wait_status("the clash refused", Duration::from_secs(30), |_, s| {
        s["developer_set"]["refused"].is_string()
    });
    let reason = s["developer_set"]["refused"].as_str().unwrap_or("");
    assert_eq!(
        reason,
        format!(
            "{parameter}: developer[2].port: {} is already used by {}",
            base + 1,
            dev(1)
        ),
        "{s}"
    );
    assert_eq!(s["developer_set"]["refused_version"], bad, "{s}");
    assert_eq!(
        s["developer_set"]["version"], good,
        "the last good set stays: {s}"
    );
    assert!(
        s["warnings"].as_array().is_some_and(|w| w.iter().any(|w| w
            .as_str()
            .is_some_and(|w| w.contains("refused") && w.contains(&parameter)))),
        "{s}"
    );
    assert_eq!(names(&s), [dev(1), dev(3)]);
    // Several more polls of the same bad value.
    std::thread::sleep(Duration::from_secs(4));
    let refusals = daemon.log().matches("developer set refused").count();
    assert_eq!(refusals, 1, "logged once:\n{}", daemon.log());
    assert_eq!(
        started(&format!("code-server-{}", dev(1))).as_ref(),
        Some(&before[0])
    );
    assert_eq!(
        started(&format!("code-server-{}", dev(3))),
        Some(d3.clone())
    );

    // 5. Fixed (d2 back, on its port): applied, the refusal clears, d2 gets its
    // old home back.
    let fixed = publish(format!(
        "{}{}{}",
        table(1, base + 1),
        table(2, base + 2),
        table(3, base + 3)
    ))
    .await;
    let s = daemon.wait_status("the fixed set applied", Duration::from_secs(60), |c, s| {
        exactly_healthy(c, s, &[dev(1), dev(2), dev(3)]) && s["developer_set"]["refused"].is_null()
    });
    assert_eq!(s["developer_set"]["version"], fixed, "{s}");
    assert!(
        home2.join("work.txt").is_file(),
        "d2's home is the one it had"
    );
    assert_eq!(
        started(&format!("code-server-{}", dev(1))).as_ref(),
        Some(&before[0])
    );
    assert_eq!(started(&format!("code-server-{}", dev(3))), Some(d3));
    assert!(dir.path().join("state/developer-set.json").is_file());

    // 6. A restart that cannot read the parameter starts from the saved copy:
    // the same three developers, nobody restarted.
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.exited().is_none() {
        assert!(Instant::now() < deadline, "agent stops on SIGTERM");
        std::thread::sleep(Duration::from_millis(200));
    }
    let running: Vec<_> = (1..=3)
        .map(|i| started(&format!("code-server-{}", dev(i))).expect("still running"))
        .collect();
    ssm.delete_parameter()
        .name(&parameter)
        .send()
        .await
        .expect("moto ssm DeleteParameter");
    let daemon = AgentDaemon::start(&config);
    daemon.wait_notify("READY=1", Duration::from_secs(90));
    let s = daemon.wait_status("the saved set", Duration::from_secs(60), |_, s| {
        names(s) == [dev(1), dev(2), dev(3)] && s["developer_set"]["read_error"].is_string()
    });
    assert_eq!(s["developer_set"]["from_saved"], true, "{s}");
    assert_eq!(s["developer_set"]["version"], fixed, "{s}");
    assert!(
        s["developer_set"]["read_error"]
            .as_str()
            .is_some_and(|e| e.contains(&parameter)),
        "{s}"
    );
    // Unhealthy overall (the parameter cannot be read), every developer fine.
    daemon.wait_status("all three running", Duration::from_secs(60), |_, s| {
        all_developers_healthy(0, s, 3)
    });
    for (i, r) in running.iter().enumerate() {
        let name = format!("code-server-{}", dev(i as u16 + 1));
        assert_eq!(
            started(&name).as_ref(),
            Some(r),
            "{name} kept across the restart"
        );
    }

    // 7. Nothing saved and nothing to read (a wiped state dir): the set is
    // unknown, not empty — nothing is started or removed, status says why.
    drop(daemon);
    std::fs::remove_file(dir.path().join("state/developer-set.json")).expect("remove saved set");
    let daemon = AgentDaemon::start(&config);
    let s = daemon.wait_status("no set known", Duration::from_secs(60), |_, s| {
        s["developer_set"]["read_error"].is_string()
    });
    assert!(names(&s).is_empty(), "{s}");
    assert!(
        s["warnings"].as_array().is_some_and(|w| w.iter().any(|w| w
            .as_str()
            .is_some_and(|w| w.contains("no developer is started")))),
        "{s}"
    );
    std::thread::sleep(Duration::from_secs(3));
    for (i, r) in running.iter().enumerate() {
        let name = format!("code-server-{}", dev(i as u16 + 1));
        assert_eq!(
            started(&name).as_ref(),
            Some(r),
            "{name} left running while the set is unknown\n{}",
            daemon.log()
        );
    }
    // The parameter is back: the same three, adopted as they run.
    publish(format!(
        "{}{}{}",
        table(1, base + 1),
        table(2, base + 2),
        table(3, base + 3)
    ))
    .await;
    daemon.wait_status("the set read again", Duration::from_secs(60), |c, s| {
        exactly_healthy(c, s, &[dev(1), dev(2), dev(3)])
    });
    for (i, r) in running.iter().enumerate() {
        let name = format!("code-server-{}", dev(i as u16 + 1));
        assert_eq!(
            started(&name).as_ref(),
            Some(r),
            "{name} adopted, not recreated"
        );
    }
    println!("whole scenario in {:?}", t0.elapsed());
}
