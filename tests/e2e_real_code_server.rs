//! End to end with the REAL code-server in the team image (`images/Dockerfile` on
//! `codercom/code-server:4.96.4`, both built from Debian and npm packages by
//! `scripts/build-code-server-image.sh`): `csagent run` as a child process against
//! dockerd, a moto of its own and a loop-device "EBS volume", with 8 developers.
//!
//! - all 8 come up healthy, and `csagent status --json` agrees with `docker inspect`
//!   (state, health, container id) for each of them;
//! - dev5 logs in over HTTP with the password read from Secrets Manager; a wrong one is
//!   refused; the container holds only the argon2id hash, never the password or the key;
//! - dev5 in a real browser (`tests/browser/workbench.mjs`: Debian's chromium driven by
//!   playwright-core): a wrong password stays on the login page; the right one opens the
//!   workbench on ~/workspace with no trust prompt, and a terminal runs bash, `git
//!   --version` and `claude --version`, and Claude Code's key helper finds the key, and
//!   writes `~/.gitconfig` and `~/workspace/notes.txt` (screenshots in
//!   `$CARGO_TARGET_TMPDIR/browser-*`, and on failure of any step);
//! - dev5's password is rotated in moto: within one poll interval plus code-server's start
//!   time the old password is refused and the new one accepted, and the 7 others keep
//!   their container ids; in the browser the old password stays on the login page, the
//!   new one logs in, and both files are still there;
//! - dev5's container log reaches its CloudWatch Logs group: code-server's startup line
//!   and its "Failed login attempt" line (code-server logs failed logins only; a
//!   successful login prints nothing at the default log level);
//! - CloudWatch metrics: `container_healthy` for every developer and the
//!   `developers_healthy` roll-up reaching 8;
//! - SIGTERM: the agent exits 0 and the containers keep running.
//!
//! Gated on the image: without it the test fails and says how to build it, unless
//! `CSAGENT_SKIP_REAL_CODE_SERVER=1` (local runs only; CI builds the image). Likewise the
//! browser part needs chromium and playwright-core (`ensure_browser` in
//! scripts/lib/services.sh; CI runs it) unless `CSAGENT_SKIP_BROWSER=1`.
//! `CSAGENT_E2E_KEEP_LOG=FILE` keeps the agent's log for a look afterwards.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const DEVELOPERS: usize = 8;
/// The developer whose password is rotated.
const ROTATED: usize = 5;
const INSTANCE_ID: &str = "i-0e2e0000000000001";
const POLL_INTERVAL: Duration = Duration::from_secs(3);
/// How long 8 real code-servers may take to become healthy on a 2-core machine.
const ALL_HEALTHY_WITHIN: Duration = Duration::from_secs(240);
/// How long one real code-server may take to start (rotation = recreate).
const START_WITHIN: Duration = Duration::from_secs(120);

/// `csagent run` and everything the test made; torn down in order on drop (also when
/// an assertion fails): the agent, then the containers, the network, the IMDS rule
/// and the mount.
struct Setup {
    agent: Option<Child>,
    config: PathBuf,
    log: PathBuf,
    project: String,
    subnet: String,
    mount: PathBuf,
}

impl Setup {
    fn developer(&self, i: usize) -> String {
        format!("{}-d{i}", self.project)
    }

    fn container(&self, i: usize) -> String {
        format!("code-server-{}", self.developer(i))
    }

    fn start_agent(&mut self) {
        let log = std::fs::File::create(&self.log).expect("agent log file");
        let child = Command::new(csagent_bin())
            .args(["run", "--config", path_str(&self.config)])
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("RUST_LOG", "info,csagent=debug")
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn csagent run");
        self.agent = Some(child);
    }

    fn agent_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The tail of the agent's log, for failure messages.
    fn agent_log_tail(&self) -> String {
        let log = self.agent_log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    fn status(&self) -> (i32, serde_json::Value) {
        csagent_status(&self.config)
    }

    fn wait_status(
        &mut self,
        what: &str,
        timeout: Duration,
        ok: impl Fn(i32, &serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let (code, json) = self.status();
            if ok(code, &json) {
                return json;
            }
            if let Some(st) = self
                .agent
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "csagent run exited ({st}) while waiting for {what}\nagent log:\n{}",
                    self.agent_log_tail()
                );
            }
            if start.elapsed() > timeout {
                panic!(
                    "status never showed {what} within {timeout:?} (last exit {code}): {json:#}\nagent log:\n{}",
                    self.agent_log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(1000));
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // `CSAGENT_E2E_KEEP_LOG=FILE` keeps the agent's log (the temp dir goes away).
        if let Ok(keep) = std::env::var("CSAGENT_E2E_KEEP_LOG") {
            let _ = std::fs::copy(&self.log, keep);
        }
        // One call for all of them (dockerd removes them concurrently).
        let names: Vec<String> = (1..=DEVELOPERS).map(|i| self.container(i)).collect();
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&names)
            .output();
        let _ = Command::new("docker")
            .args(["network", "rm", &format!("csagent-{}", self.project)])
            .output();
        delete_metadata_rule(&self.subnet);
        delete_host_rule(&self.subnet);
        let _ = Command::new("umount").arg(&self.mount).output();
    }
}

/// What `docker inspect` says about a container.
#[derive(Debug, Clone, PartialEq)]
struct Inspected {
    id: String,
    state: String,
    health: String,
}

fn inspect(name: &str) -> Option<Inspected> {
    let out = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.Id}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}",
            name,
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut f = text.split_whitespace();
    Some(Inspected {
        id: f.next()?.to_string(),
        state: f.next()?.to_string(),
        health: f.next()?.to_string(),
    })
}

fn developer<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["developers"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["name"] == name))
        .unwrap_or(&serde_json::Value::Null)
}

fn all_healthy(code: i32, s: &serde_json::Value) -> bool {
    code == 0
        && s["developers"].as_array().is_some_and(|a| {
            a.len() == DEVELOPERS
                && a.iter()
                    .all(|d| d["state"] == "running" && d["health"] == "healthy")
        })
}

/// `csagent status --json` and `docker inspect` agree on every developer.
fn assert_status_matches_docker(setup: &Setup, status: &serde_json::Value) {
    for i in 1..=DEVELOPERS {
        let row = developer(status, &setup.developer(i));
        let docker = inspect(&setup.container(i))
            .unwrap_or_else(|| panic!("docker inspect {}: no such container", setup.container(i)));
        let short = row["container_id"].as_str().unwrap_or("");
        assert!(
            short.len() >= 12 && docker.id.starts_with(short),
            "{}: status container_id {short:?} vs docker {}",
            setup.developer(i),
            docker.id
        );
        assert_eq!(
            row["state"],
            docker.state.as_str(),
            "{}: state",
            setup.developer(i)
        );
        assert_eq!(
            row["health"],
            docker.health.as_str(),
            "{}: health",
            setup.developer(i)
        );
    }
}

async fn secret_value(sm: &aws_sdk_secretsmanager::Client, name: &str) -> String {
    sm.get_secret_value()
        .secret_id(name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetSecretValue {name}: {e:?}"))
        .secret_string()
        .unwrap_or_else(|| panic!("{name} has no SecretString"))
        .to_string()
}

/// Every message in `group` (all streams).
async fn log_messages(logs: &aws_sdk_cloudwatchlogs::Client, group: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let resp = match logs
            .filter_log_events()
            .log_group_name(group)
            .set_next_token(token.clone())
            .send()
            .await
        {
            Ok(r) => r,
            Err(_) => return out, // the group may not exist yet
        };
        out.extend(
            resp.events()
                .iter()
                .filter_map(|e| e.message().map(str::to_string)),
        );
        match resp.next_token() {
            Some(t) if Some(t.to_string()) != token && !resp.events().is_empty() => {
                token = Some(t.to_string())
            }
            _ => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_real_code_servers_login_rotation_logs_status() {
    if !real_code_server_image_or_skip("e2e_real_code_server") {
        return;
    }
    require_root();
    let test_start = Instant::now();

    let moto = MotoServer::start(&[]);
    let sdk = moto.sdk_config().await;
    let sm = aws_sdk_secretsmanager::Client::new(&sdk);
    let cwlogs = aws_sdk_cloudwatchlogs::Client::new(&sdk);
    let cw = aws_sdk_cloudwatch::Client::new(&sdk);

    let disk = LoopDevice::new("2G");
    let dir = tempfile::Builder::new()
        .prefix("csagent-e2e-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let runtime = tempfile::Builder::new()
        .prefix("csagent-e2e-")
        .tempdir_in("/dev/shm")
        .expect("tmpfs dir");
    std::fs::create_dir_all(dir.path().join("ctl")).expect("ctl dir");
    let project = unique("e2e").replace('-', "");
    let base = port_block(DEVELOPERS as u16 + 1);
    let mut setup = Setup {
        agent: None,
        config: dir.path().join("config.toml"),
        log: dir.path().join("agent.log"),
        project: project.clone(),
        subnet: unused_test_subnet(),
        mount: dir.path().join("data"),
    };
    let port = |i: usize| base + i as u16;

    // Secrets in moto: a random password and a (fake) Claude key per developer.
    for i in 1..=DEVELOPERS {
        let dev = setup.developer(i);
        for (kind, value) in [
            ("password", format!("Pw{}x{i}", uuid_like())),
            ("claude-api-key", format!("sk-ant-e2e-{}", uuid_like())),
        ] {
            sm.create_secret()
                .name(format!("{project}/{dev}/{kind}"))
                .secret_string(value)
                .send()
                .await
                .unwrap_or_else(|e| panic!("CreateSecret {project}/{dev}/{kind}: {e:?}"));
        }
    }

    let mut config = format!(
        "project = \"{project}\"\nregion = \"{REGION}\"\ninstance_id = \"{INSTANCE_ID}\"\n\
         [aws]\nendpoint_url = \"{moto}\"\n\
         [volume]\ndevice = \"{dev}\"\nmount_point = \"{mount}\"\nfstab = \"{root}/fstab\"\nwait_timeout = \"10s\"\n\
         [containers]\nimage = \"{image}\"\npull = \"never\"\n\
         cpus = 0.5\nmemory = \"1GiB\"\nmemory_reservation = \"512MiB\"\n\
         network = \"csagent-{project}\"\nsubnet = \"{subnet}\"\n\
         health_interval = \"2s\"\nhealth_start_period = \"{start}s\"\n\
         [secrets]\npoll_interval = \"{poll}s\"\n\
         [metrics]\nenabled = true\ninterval = \"5s\"\n\
         [logs]\nenabled = true\n\
         [agent]\nstate_dir = \"{root}/state\"\nruntime_dir = \"{run}\"\nsocket = \"{root}/ctl/csagent.sock\"\nsocket_group = \"adm\"\n",
        moto = moto.url(),
        image = real_code_server_image(),
        dev = disk.path(),
        mount = setup.mount.display(),
        root = dir.path().display(),
        run = runtime.path().display(),
        subnet = setup.subnet,
        start = START_WITHIN.as_secs(),
        poll = POLL_INTERVAL.as_secs(),
    );
    for i in 1..=DEVELOPERS {
        config.push_str(&format!(
            "[[developer]]\nname = \"{}\"\nport = {}\n",
            setup.developer(i),
            port(i)
        ));
    }
    std::fs::write(&setup.config, config).expect("write config");

    // --- 8 developers healthy -------------------------------------------------------
    let agent_start = Instant::now();
    setup.start_agent();
    let status = setup.wait_status(
        &format!("{DEVELOPERS} healthy developers"),
        ALL_HEALTHY_WITHIN,
        all_healthy,
    );
    let healthy_after = agent_start.elapsed();
    eprintln!("e2e: agent start -> {DEVELOPERS} real code-servers healthy in {healthy_after:.1?}");
    assert_eq!(status["instance"]["project"], project.as_str());
    assert_eq!(status["volume"]["mounted"], true);
    for i in 1..=DEVELOPERS {
        let row = developer(&status, &setup.developer(i));
        assert_eq!(row["port"], port(i), "{}: port", setup.developer(i));
        assert_eq!(
            row["claude_key"],
            "set",
            "{}: Claude key",
            setup.developer(i)
        );
        // The real code-server answers /healthz on the published port.
        assert_eq!(
            http_get_status(port(i), "/healthz"),
            Some(200),
            "{}: GET /healthz on {}",
            setup.developer(i),
            port(i)
        );
    }
    assert_status_matches_docker(&setup, &status);

    // --- dev5 logs in with the password from Secrets Manager ---------------------------
    let dev5 = setup.developer(ROTATED);
    let c5 = setup.container(ROTATED);
    let password_name = format!("{project}/{dev5}/password");
    let old_password = secret_value(&sm, &password_name).await;
    let claude_key = secret_value(&sm, &format!("{project}/{dev5}/claude-api-key")).await;

    let health = http_request(
        port(ROTATED),
        "GET",
        "/healthz",
        &[],
        "",
        Duration::from_secs(10),
    )
    .expect("dev5 /healthz answers");
    let health: serde_json::Value = serde_json::from_str(&health.body).expect("/healthz is JSON");
    assert!(
        health["status"] == "alive" || health["status"] == "expired",
        "code-server's /healthz: {health}"
    );

    let ok = code_server_login(port(ROTATED), &old_password).expect("dev5 POST /login answers");
    assert!(
        login_accepted(&ok),
        "dev5 login with its password: {} {:?}",
        ok.status,
        ok.headers
    );
    let bad =
        code_server_login(port(ROTATED), "not-the-password").expect("dev5 POST /login answers");
    assert!(!login_accepted(&bad), "a wrong password is refused");
    assert_eq!(bad.status, 200, "code-server renders the login page again");
    assert!(bad.body.contains("Incorrect password"), "the page says why");

    // In the browser: log in, use a terminal, write ~/.gitconfig and ~/workspace/notes.txt.
    let mark = format!("mark-{}", uuid_like());
    browser_check(port(ROTATED), &old_password, None, &mark, &project);

    // The container has the argon2id hash, never the password or the Claude key; the
    // key is a read-only file that Claude Code's apiKeyHelper prints (tests/claude_key.rs
    // follows it to the API and through a rotation).
    let inspect_json = run("docker", &["inspect", &c5]);
    assert!(
        !inspect_json.contains(&old_password),
        "no plaintext password in docker inspect"
    );
    assert!(
        !inspect_json.contains(&claude_key),
        "no Claude key in docker inspect"
    );
    assert!(
        inspect_json.contains("HASHED_PASSWORD=$argon2id$"),
        "argon2id hash handed over"
    );
    let limits = run(
        "docker",
        &[
            "inspect",
            "-f",
            "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}} {{.HostConfig.MemoryReservation}}",
            &c5,
        ],
    );
    assert_eq!(
        limits.trim(),
        "500000000 1073741824 536870912",
        "dev5's limits"
    );
    let env1 = run(
        "docker",
        &["exec", &c5, "sh", "-c", "tr '\\0' '\\n' < /proc/1/environ"],
    );
    assert!(
        !env1.contains("ANTHROPIC_API_KEY"),
        "no key in code-server's environment (it would win over the apiKeyHelper)"
    );
    assert!(
        run("docker", &["exec", &c5, "csagent-claude-key"]).trim() == claude_key,
        "the apiKeyHelper prints dev5's key"
    );
    // The agent's own health check command works in the image.
    run(
        "docker",
        &["exec", &c5, "curl", "-fsS", "http://localhost:8080/healthz"],
    );

    // --- rotate dev5's password ------------------------------------------------------
    let version_before = developer(&setup.status().1, &dev5)["password_version"].clone();
    assert!(
        version_before.is_string(),
        "status shows dev5's password version"
    );
    let ids_before: Vec<String> = (1..=DEVELOPERS)
        .map(|i| inspect(&setup.container(i)).expect("container").id)
        .collect();
    let new_password = format!("Rotated{}", uuid_like());
    let rotated_at = Instant::now();
    sm.put_secret_value()
        .secret_id(&password_name)
        .secret_string(&new_password)
        .send()
        .await
        .expect("PutSecretValue (rotation)");
    let old_id = ids_before[ROTATED - 1].clone();
    let (c5_name, dev5_name) = (c5.clone(), dev5.clone());
    setup.wait_status(
        "dev5 recreated and healthy after rotation",
        POLL_INTERVAL + START_WITHIN,
        move |_, s| {
            let row = developer(s, &dev5_name);
            row["state"] == "running"
                && row["health"] == "healthy"
                && inspect(&c5_name).is_some_and(|c| c.id != old_id && c.health == "healthy")
        },
    );
    // Healthy means /healthz answers; login is served by the same server.
    let accepted =
        code_server_login(port(ROTATED), &new_password).expect("dev5 POST /login answers");
    let applied_after = rotated_at.elapsed();
    eprintln!("e2e: rotation -> new password accepted in {applied_after:.1?}");
    assert!(
        login_accepted(&accepted),
        "the new password is accepted: {} {:?}",
        accepted.status,
        accepted.headers
    );
    let refused =
        code_server_login(port(ROTATED), &old_password).expect("dev5 POST /login answers");
    assert!(
        !login_accepted(&refused),
        "the old password is refused after rotation"
    );
    assert!(
        refused.body.contains("Incorrect password"),
        "refused as incorrect"
    );
    assert!(
        applied_after <= POLL_INTERVAL + START_WITHIN,
        "rotation applied within one poll interval + start time ({applied_after:?})"
    );
    for i in (1..=DEVELOPERS).filter(|&i| i != ROTATED) {
        assert_eq!(
            inspect(&setup.container(i)).map(|c| c.id),
            Some(ids_before[i - 1].clone()),
            "{} keeps its container across dev5's rotation",
            setup.developer(i)
        );
    }
    let status = setup.wait_status("all healthy after rotation", START_WITHIN, all_healthy);
    assert_status_matches_docker(&setup, &status);
    let row5 = developer(&status, &dev5);
    assert!(
        row5["password_version"].is_string() && row5["password_version"] != version_before,
        "status shows dev5's new password version: {row5}"
    );
    assert_eq!(row5["pending_rotation"], false, "nothing pending: {row5}");
    // In the browser again: the old password stays on the login page, the new one logs
    // in, and the files written before the rotation are still there.
    browser_check(
        port(ROTATED),
        &new_password,
        Some(&old_password),
        &mark,
        &project,
    );

    // --- dev5's log lines in CloudWatch Logs --------------------------------------------
    let group = format!("/aws/ec2/{project}/containers/{dev5}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let messages = loop {
        let messages = log_messages(&cwlogs, &group).await;
        let listening = messages
            .iter()
            .filter(|m| m.contains("HTTP server listening on"))
            .count();
        let failed = messages.iter().any(|m| m.contains("Failed login attempt"));
        // Both containers' startup lines (before and after the rotation) and the
        // refused logins.
        if listening >= 2 && failed {
            break messages;
        }
        assert!(
            Instant::now() < deadline,
            "dev5's group {group} lacks the startup lines of both containers (2 × \"HTTP server \
             listening on\", saw {listening}) or a \"Failed login attempt\" line ({failed}); \
             {} messages:\n{}\nagent log:\n{}",
            messages.len(),
            messages.join("\n"),
            setup.agent_log_tail()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    for secret in [&old_password, &new_password, &claude_key] {
        assert!(
            !messages.iter().any(|m| m.contains(secret.as_str())),
            "no credential in dev5's shipped log lines"
        );
    }
    let groups = cwlogs
        .describe_log_groups()
        .log_group_name_prefix(format!("/aws/ec2/{project}/containers/"))
        .send()
        .await
        .expect("DescribeLogGroups");
    assert_eq!(
        groups.log_groups().len(),
        DEVELOPERS,
        "one log group per developer: {:?}",
        groups
            .log_groups()
            .iter()
            .map(|g| g.log_group_name())
            .collect::<Vec<_>>()
    );

    // --- metrics ---------------------------------------------------------------------
    // Health, per developer and rolled up, in namespace CodeServer.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = cw
            .list_metrics()
            .namespace("CodeServer")
            .metric_name("container_healthy")
            .send()
            .await
            .expect("ListMetrics");
        let developers: std::collections::BTreeSet<String> = listed
            .metrics()
            .iter()
            .flat_map(|m| m.dimensions())
            .filter(|d| d.name() == Some("Developer"))
            .filter_map(|d| d.value().map(str::to_string))
            .collect();
        if (1..=DEVELOPERS).all(|i| developers.contains(&setup.developer(i))) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "CodeServer/container_healthy for every developer within 60s; have {developers:?}\nagent log:\n{}",
            setup.agent_log_tail()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // The rotation above recreated one container: the roll-up published while it
    // was starting says 7, so wait for a datapoint of all 8 healthy again.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let now = std::time::SystemTime::now();
        let rollup = cw
            .get_metric_statistics()
            .namespace("CodeServer")
            .metric_name("developers_healthy")
            .dimensions(
                aws_sdk_cloudwatch::types::Dimension::builder()
                    .name("InstanceId")
                    .value(INSTANCE_ID)
                    .build(),
            )
            .start_time((now - Duration::from_secs(900)).into())
            .end_time((now + Duration::from_secs(60)).into())
            .period(60)
            .statistics(aws_sdk_cloudwatch::types::Statistic::Maximum)
            .send()
            .await
            .expect("GetMetricStatistics developers_healthy");
        let max = rollup
            .datapoints()
            .iter()
            .filter_map(|d| d.maximum())
            .fold(0.0, f64::max);
        if max == DEVELOPERS as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "developers_healthy reached {DEVELOPERS} within 90s: {:?}",
            rollup.datapoints()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // Status names the last successful call to each AWS service it uses.
    let status = setup.wait_status("every AWS service answered", START_WITHIN, |_, s| {
        ["secretsmanager", "cloudwatch", "logs"]
            .iter()
            .all(|k| s["aws_last_success"][*k].is_string())
    });
    assert!(
        status["metrics"]["put_calls"].as_u64().unwrap_or(0) > 0,
        "{status}"
    );

    // --- SIGTERM: the agent exits 0, the containers keep running -------------------------
    let mut child = setup.agent.take().expect("agent running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let stop_start = Instant::now();
    let code = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st.code();
        }
        assert!(
            stop_start.elapsed() < Duration::from_secs(25),
            "no exit within 25s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(code, Some(0), "agent log:\n{}", setup.agent_log_tail());
    for i in 1..=DEVELOPERS {
        assert_eq!(
            inspect(&setup.container(i)).map(|c| c.state),
            Some("running".to_string()),
            "containers keep running when the agent stops"
        );
    }
    let log = setup.agent_log();
    for secret in [&old_password, &new_password, &claude_key] {
        assert!(
            !log.contains(secret.as_str()),
            "no credential in the agent's log"
        );
    }
    eprintln!("e2e: done in {:.1?}", test_start.elapsed());
    drop(setup);
    drop(disk);
    drop(moto);
}

/// Set to 1 to skip the real-browser part locally (never set in CI).
const SKIP_BROWSER_ENV: &str = "CSAGENT_SKIP_BROWSER";

/// Where `ensure_browser` (scripts/lib/services.sh) installs playwright-core.
fn playwright_dir() -> PathBuf {
    let cache =
        std::env::var("CSAGENT_CI_CACHE").unwrap_or_else(|_| "/var/cache/csagent-ci".to_string());
    std::env::var_os("CSAGENT_PLAYWRIGHT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(cache).join("playwright"))
}

/// Logs in to code-server on `port` in chromium and uses a terminal there
/// (tests/browser/workbench.mjs); panics with its output and screenshots on failure.
fn browser_check(port: u16, password: &str, old_password: Option<&str>, mark: &str, project: &str) {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string());
    let playwright = playwright_dir();
    if !PathBuf::from(&chromium).exists()
        || !playwright.join("node_modules/playwright-core").exists()
    {
        let why = format!(
            "no {chromium} or no playwright-core in {}: run `. scripts/lib/services.sh && ensure_browser`",
            playwright.display()
        );
        if std::env::var(SKIP_BROWSER_ENV).as_deref() == Ok("1") {
            eprintln!("e2e: browser part SKIPPED ({SKIP_BROWSER_ENV}=1): {why}");
            return;
        }
        panic!("e2e: {why}, or set {SKIP_BROWSER_ENV}=1 to skip the browser part locally");
    }
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("browser-{project}"));
    let start = Instant::now();
    let mut node = Command::new("node");
    if let Some(old) = old_password {
        node.env("CS_OLD_PASSWORD", old);
    }
    let out = node
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/browser/workbench.mjs"
        ))
        .arg(format!("http://127.0.0.1:{port}/"))
        .env("CS_PASSWORD", password)
        .env("CS_MARK", mark)
        .env("CS_EXPECT_CLAUDE_KEY", "1")
        .env("CS_SCREENSHOTS", &shots)
        .env("CSAGENT_PLAYWRIGHT_DIR", &playwright)
        .env("CHROMIUM", &chromium)
        .output();
    let out = out.expect("run node tests/browser/workbench.mjs");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the real-browser check failed ({}); screenshots in {}:\n{output}",
        out.status,
        shots.display()
    );
    eprint!("{output}");
    eprintln!(
        "e2e: browser login + terminal in {:.1?} (screenshot {})",
        start.elapsed(),
        shots.join("terminal.png").display()
    );
}

/// 24 random hex characters (for passwords and keys that differ per run).
fn uuid_like() -> String {
    let mut buf = [0u8; 12];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
