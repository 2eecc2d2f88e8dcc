//! `csagent run` as a child process against dockerd, moto and a loop device:
//! readiness and watchdog on a notify socket, the control socket and `status`,
//! SIGHUP reload, SIGTERM shutdown with containers left running.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn container_id(name: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.Id}}", name])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn developer<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["developers"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["name"] == name))
        .unwrap_or(&serde_json::Value::Null)
}

fn all_healthy(code: i32, s: &serde_json::Value, n: usize) -> bool {
    code == 0
        && s["developers"].as_array().is_some_and(|a| {
            a.len() == n
                && a.iter()
                    .all(|d| d["state"] == "running" && d["health"] == "healthy")
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn daemon_lifecycle_against_real_parts() {
    require_root();
    let disk = LoopDevice::new("128M");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let runtime = tempfile::Builder::new()
        .prefix("csagent-daemon-")
        .tempdir_in("/dev/shm")
        .expect("tmpfs dir");
    let project = unique("dmn").replace('-', "");
    let base = port_block(4);
    let subnet = test_subnet();
    let cleanup = Leftovers {
        project: project.clone(),
        network: format!("csagent-{project}"),
        subnet: subnet.clone(),
        mount: Some(dir.path().join("data")),
    };

    // Secrets for three developers (the third is only configured after SIGHUP).
    let sm = aws_sdk_secretsmanager::Client::new(&aws().await);
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

    let write_config = |devs: usize| {
        let mut text = format!(
            "project = \"{project}\"\nregion = \"{REGION}\"\ninstance_id = \"i-0123456789abcdef0\"\n\
             [aws]\nendpoint_url = \"{moto}\"\n\
             [volume]\ndevice = \"{dev}\"\nmount_point = \"{root}/data\"\nfstab = \"{root}/fstab\"\nwait_timeout = \"10s\"\n\
             [containers]\nimage = \"{TEST_IMAGE}\"\npull = \"never\"\ncpus = 0.25\nmemory = \"256MiB\"\nmemory_reservation = \"128MiB\"\n\
             network = \"csagent-{project}\"\nsubnet = \"{subnet}\"\nhealth_interval = \"1s\"\nhealth_start_period = \"0s\"\n\
             [secrets]\npoll_interval = \"2s\"\n\
             [metrics]\nenabled = false\n\
             [logs]\nenabled = true\n\
             [agent]\nstate_dir = \"{root}/state\"\nruntime_dir = \"{run}\"\nsocket = \"{root}/ctl/csagent.sock\"\nsocket_group = \"adm\"\n",
            moto = moto_url(),
            dev = disk.path(),
            root = dir.path().display(),
            run = runtime.path().display(),
        );
        for i in 1..=devs {
            text.push_str(&format!(
                "[[developer]]\nname = \"{project}-d{i}\"\nport = {}\n",
                base + i as u16
            ));
        }
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).expect("write config");
        path
    };
    let config = write_config(2);
    std::fs::create_dir_all(dir.path().join("ctl")).expect("ctl dir");
    std::fs::set_permissions(
        dir.path().join("ctl"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");

    let daemon = AgentDaemon::start(&config);
    let seen = daemon.wait_notify("READY=1", Duration::from_secs(90));
    assert!(
        seen.iter().any(|m| m.contains("STATUS=")),
        "STATUS= text along the way: {seen:?}"
    );
    daemon.wait_notify("WATCHDOG=1", Duration::from_secs(5));

    // Status over the socket matches Docker.
    let s = daemon.wait_status("2 healthy developers", Duration::from_secs(60), |c, s| {
        all_healthy(c, s, 2)
    });
    assert_eq!(s["schema"], 1);
    assert_eq!(s["instance"]["project"], project.as_str());
    assert_eq!(s["volume"]["mounted"], true);
    // The image section: the local test image, no registry auth, no pull error.
    assert_eq!(s["image"]["reference"], TEST_IMAGE, "{s}");
    assert_eq!(s["image"]["auth"], "none", "{s}");
    assert!(s["image"]["last_pull_error"].is_null(), "{s}");
    let d1 = developer(&s, &format!("{project}-d1"));
    assert_eq!(d1["port"], base + 1);
    assert_eq!(d1["claude_key"], "placeholder");
    let id1 = container_id(&format!("code-server-{project}-d1")).expect("dev1 container");
    assert!(
        id1.starts_with(d1["container_id"].as_str().unwrap_or("x")),
        "status shows docker's container id"
    );
    assert!(s["warnings"].as_array().is_some_and(|w| {
        w.iter()
            .any(|w| w.as_str().unwrap_or("").contains("Claude API key"))
    }));
    // Last successful AWS call per service: metrics are off here, so no
    // `cloudwatch` entry; logs appear once the first lines were accepted.
    let s = daemon.wait_status("logs shipped", Duration::from_secs(30), |_, s| {
        s["aws_last_success"]["logs"].is_string()
    });
    assert!(s["aws_last_success"]["secretsmanager"].is_string(), "{s}");
    assert!(s["aws_last_success"].get("cloudwatch").is_none(), "{s}");

    // The agent's own lines reach its log group, start-up lines included, and
    // no secret value is among them.
    let cwl = aws_sdk_cloudwatchlogs::Client::new(&aws().await);
    let group = format!("/aws/ec2/{project}/agent");
    let deadline = Instant::now() + Duration::from_secs(30);
    let agent_lines = loop {
        let lines: Vec<String> = match cwl
            .get_log_events()
            .log_group_name(&group)
            .log_stream_name("i-0123456789abcdef0")
            .start_from_head(true)
            .send()
            .await
        {
            Ok(out) => out
                .events()
                .iter()
                .filter_map(|e| e.message().map(str::to_string))
                .collect(),
            Err(_) => Vec::new(),
        };
        let joined = lines.join("\n");
        if joined.contains("csagent starting") && joined.contains("volume ready") {
            break joined;
        }
        assert!(
            Instant::now() < deadline,
            "agent log group {group} within 30 s; have:\n{joined}\nagent log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert!(
        !agent_lines.contains(&format!("pw-{project}-")),
        "no password in the agent's log group"
    );
    assert!(
        !agent_lines.contains("aws_smithy") && !agent_lines.contains("hyper"),
        "only the agent's own lines: {agent_lines}"
    );

    // A paused container: status says so and exits 1; unpaused: back to 0.
    let name2 = format!("code-server-{project}-d2");
    run("docker", &["pause", &name2]);
    let s = daemon.wait_status("d2 paused", Duration::from_secs(30), |c, s| {
        c == 1 && developer(s, &format!("{project}-d2"))["state"] == "paused"
    });
    assert_eq!(developer(&s, &format!("{project}-d1"))["state"], "running");
    run("docker", &["unpause", &name2]);
    daemon.wait_status("healthy again", Duration::from_secs(30), |c, s| {
        all_healthy(c, s, 2)
    });

    // docker kill: it comes back (restart policy or the agent), same container.
    run("docker", &["kill", &name2]);
    let id2 = container_id(&name2);
    daemon.wait_status("d2 restarted", Duration::from_secs(30), |c, s| {
        let d = developer(s, &format!("{project}-d2"));
        c == 0
            && d["state"] == "running"
            && d["restarts"].as_i64().unwrap_or(0) + 1 > 0
            && container_id(&name2) == id2
    });

    // A request line past the limit is refused before it is buffered, and the
    // agent keeps answering.
    {
        use std::io::{Read, Write};
        let mut sock = std::os::unix::net::UnixStream::connect(dir.path().join("ctl/csagent.sock"))
            .expect("connect to the control socket");
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut writer = sock.try_clone().expect("clone");
        // The agent hangs up after 4 KiB: the rest of the write fails, as it should.
        let flood = std::thread::spawn(move || writer.write_all(&vec![b'x'; 8 << 20]).is_err());
        let mut answer = String::new();
        let _ = sock.read_to_string(&mut answer);
        assert!(answer.contains("longer than 4096 bytes"), "{answer:?}");
        assert!(flood.join().expect("writer"), "the agent stopped reading");
    }
    daemon.wait_status("still answering", Duration::from_secs(10), |c, _| c == 0);

    // A user outside the socket group is refused.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            path_str(&csagent_bin()),
            "status",
            "--json",
            "--config",
            path_str(&config),
        ])
        .output()
        .expect("setpriv");
    assert_eq!(
        out.status.code(),
        Some(2),
        "nobody cannot use the socket: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ermission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // SIGHUP with a third developer: only that container is created.
    write_config(3);
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    daemon.wait_status("3 healthy developers", Duration::from_secs(60), |c, s| {
        all_healthy(c, s, 3)
    });
    assert_eq!(
        container_id(&format!("code-server-{project}-d1")),
        Some(id1.clone()),
        "dev1 untouched by reload"
    );
    assert_eq!(container_id(&name2), id2, "dev2 untouched by reload");

    // `csagent reload` over the socket works too, and a bad config is refused
    // without changing anything.
    let good = std::fs::read_to_string(&config).expect("read");
    std::fs::write(&config, format!("{good}\nbogus = 1\n")).expect("write");
    let out = Command::new(csagent_bin())
        .args(["reload", "--config", path_str(&config)])
        .output()
        .expect("reload");
    let tail: String = daemon
        .log()
        .lines()
        .filter(|l| !l.contains("running command"))
        .rev()
        .take(60)
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout {} stderr {}\nlog (newest first):\n{tail}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bogus"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&config, good).expect("restore");

    // SIGTERM: exit 0 promptly, containers still running, log checkpoints written.
    let mut daemon = daemon;
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let start = Instant::now();
    let code = loop {
        if let Some(st) = daemon.exited() {
            break st.code();
        }
        assert!(
            start.elapsed() < Duration::from_secs(25),
            "no exit within 25s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(code, Some(0), "log:\n{}", daemon.log());
    for i in 1..=3 {
        let state = run(
            "docker",
            &[
                "inspect",
                "-f",
                "{{.State.Status}}",
                &format!("code-server-{project}-d{i}"),
            ],
        );
        assert_eq!(
            state.trim(),
            "running",
            "containers keep running when the agent stops"
        );
    }
    let checkpoints = std::fs::read_dir(dir.path().join("state/logs"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(checkpoints >= 1, "log checkpoints under state_dir/logs");
    assert!(
        !daemon.log().contains(&format!("pw-{project}")),
        "no secret value in the agent's log"
    );

    // With the agent gone, status exits 2 and still shows Docker's view.
    let out = Command::new(csagent_bin())
        .args(["status", "--config", path_str(&config)])
        .output()
        .expect("status");
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("code-server-{project}-d1")) && stdout.contains("running"),
        "Docker's view of the managed containers: {stdout}"
    );

    drop(daemon);
    drop(cleanup);
}
