//! Claude Code in the team image gets each developer's own key, and a rotated key
//! reaches the running container without a restart: `csagent run` as a child process
//! with two developers on the real team image (`images/Dockerfile`), their secrets in
//! a moto of the test's own, and a loop-device volume.
//!
//! The key's way in: the agent writes `<runtime_dir>/<dev>/claude-api-key` (tmpfs),
//! the container has that directory read-only at /run/csagent, and the image's managed
//! settings make `/usr/local/bin/csagent-claude-key` Claude Code's apiKeyHelper.
//!
//! Which key a container sends is recorded by a fake Anthropic API
//! (`tests/fake-anthropic/server.py`, python3 from the team image) that runs inside
//! each developer's container on 127.0.0.1, with `ANTHROPIC_BASE_URL` pointing at it.
//! Inside, because csagent's network lets a container reach neither another container
//! (inter-container traffic is off) nor the host (INPUT rule): a fake elsewhere would
//! need a hole in exactly the isolation csagent provides. A fake per container records
//! what that container sent, which is what "never another developer's key" is about.
//!
//! - `claude -p hello` in each container sends that developer's key (as `x-api-key` and
//!   `Authorization: Bearer`), never the other's; no environment carries a key;
//! - dev A's key is rotated in moto: within one poll the key file holds the new key
//!   (status shows its version), a new `claude -p` sends it, and a `claude` session
//!   that was already running switches to it within the helper's TTL; A's container
//!   keeps its id and `State.StartedAt`; B is untouched and still sends its own key;
//! - a password rotation still recreates A's container (policy `immediate`), and the
//!   new container's Claude Code has the current key;
//! - no key in the agent's log, in `docker inspect`, or anywhere under /home/coder.
//!
//! Gated on the image like `e2e_real_code_server` (`CSAGENT_SKIP_REAL_CODE_SERVER=1`
//! skips it locally; `CSAGENT_TEAM_IMAGE` names another build of images/Dockerfile).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const INSTANCE_ID: &str = "i-0c1a0de0000000001";
const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// How long two real code-servers may take to become healthy on a 2-core machine.
const HEALTHY_WITHIN: Duration = Duration::from_secs(180);
/// The fake Anthropic API's port inside each container.
const FAKE_PORT: u16 = 18080;
const FAKE_SCRIPT: &str = "/tmp/fake-anthropic.py";
const FAKE_RECORD: &str = "/tmp/fake-anthropic-requests.jsonl";
/// The apiKeyHelper TTL for the long-running session (the image's default is a
/// minute; a test need not wait that long to see the same mechanism).
const SESSION_TTL: Duration = Duration::from_secs(3);
/// What the team image sets (images/Dockerfile).
const IMAGE_TTL_MS: &str = "60000";

/// One request the fake recorded.
#[derive(Debug, Clone, PartialEq)]
struct Recorded {
    x_api_key: Option<String>,
    authorization: Option<String>,
    status: u64,
}

/// The environment `claude` runs with in these checks: the fake endpoint, and no
/// traffic anywhere else.
const CLAUDE_ENV: [(&str, &str); 3] = [
    ("ANTHROPIC_BASE_URL", "http://127.0.0.1:18080"),
    ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
    ("DISABLE_TELEMETRY", "1"),
];

fn docker_exec(container: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new("docker");
    cmd.arg("exec");
    for (k, v) in env {
        cmd.args(["-e", &format!("{k}={v}")]);
    }
    cmd.arg(container)
        .args(args)
        .output()
        .expect("spawn docker exec")
}

/// Starts the fake Anthropic API in `container` (as its user, on 127.0.0.1) and
/// waits until it answers.
fn start_fake(container: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake-anthropic/server.py");
    let copy = Command::new("docker")
        .args([
            "exec",
            "-i",
            container,
            "sh",
            "-c",
            &format!("cat > {FAKE_SCRIPT}"),
        ])
        .stdin(std::fs::File::open(&script).expect("fake-anthropic/server.py"))
        .output()
        .expect("docker exec cat");
    assert!(
        copy.status.success(),
        "copy the fake into {container}: {copy:?}"
    );
    run(
        "docker",
        &[
            "exec",
            "-d",
            container,
            "python3",
            FAKE_SCRIPT,
            &FAKE_PORT.to_string(),
            FAKE_RECORD,
        ],
    );
    let start = Instant::now();
    loop {
        let out = docker_exec(
            container,
            &[],
            &[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("http://127.0.0.1:{FAKE_PORT}/"),
            ],
        );
        if String::from_utf8_lossy(&out.stdout) == "404" {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the fake Anthropic API in {container} never answered: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Everything the fake in `container` recorded so far.
fn recorded(container: &str) -> Vec<Recorded> {
    let out = docker_exec(container, &[], &["cat", FAKE_RECORD]);
    if !out.status.success() {
        return Vec::new(); // nothing recorded yet
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("record line is JSON");
            Recorded {
                x_api_key: v["x_api_key"].as_str().map(str::to_string),
                authorization: v["authorization"].as_str().map(str::to_string),
                status: v["status"].as_u64().unwrap_or(0),
            }
        })
        .collect()
}

/// `claude -p hello` in `container`; returns what the fake recorded for it.
fn claude_p(container: &str) -> Vec<Recorded> {
    let before = recorded(container).len();
    let out = docker_exec(
        container,
        &CLAUDE_ENV,
        &["timeout", "120", "claude", "-p", "hello"],
    );
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("fake reply"),
        "claude -p in {container}: {} stdout {:?} stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let all = recorded(container);
    assert!(all.len() > before, "claude -p in {container} sent nothing");
    all[before..].to_vec()
}

/// Every request carried exactly `key`, as x-api-key and as a bearer token.
fn assert_sent(what: &str, requests: &[Recorded], key: &str) {
    assert!(!requests.is_empty(), "{what}: no request");
    for r in requests {
        assert!(
            r.x_api_key.as_deref() == Some(key)
                && r.authorization.as_deref() == Some(&format!("Bearer {key}")),
            "{what}: a request did not carry the expected key (status {})",
            r.status
        );
    }
}

fn assert_never_sent(what: &str, requests: &[Recorded], key: &str) {
    assert!(
        !requests.iter().any(|r| r.x_api_key.as_deref() == Some(key)
            || r.authorization.as_deref().is_some_and(|a| a.contains(key))),
        "{what}: another developer's key was sent"
    );
}

/// `Id StartedAt` of a container; None while there is no such container.
fn try_identity(container: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.Id}} {{.State.StartedAt}}", container])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn identity(container: &str) -> String {
    try_identity(container).unwrap_or_else(|| panic!("no container {container}"))
}

/// A `claude` session that stays up between prompts (stream-json in and out), as
/// a developer's open `claude` in the terminal does.
struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Session {
    fn start(container: &str) -> Session {
        let ttl = SESSION_TTL.as_millis().to_string();
        let mut cmd = Command::new("docker");
        cmd.args(["exec", "-i"]);
        for (k, v) in CLAUDE_ENV
            .iter()
            .chain(&[("CLAUDE_CODE_API_KEY_HELPER_TTL_MS", ttl.as_str())])
        {
            cmd.args(["-e", &format!("{k}={v}")]);
        }
        let mut child = cmd
            .args([
                container,
                "claude",
                "-p",
                "--input-format",
                "stream-json",
                "--output-format",
                "stream-json",
                "--verbose",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn docker exec claude");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Session {
            child,
            stdin,
            stdout,
        }
    }

    /// Sends one prompt and waits for its result.
    fn prompt(&mut self) {
        writeln!(
            self.stdin,
            r#"{{"type":"user","message":{{"role":"user","content":"hello"}}}}"#
        )
        .expect("write prompt");
        self.stdin.flush().expect("flush prompt");
        let mut line = String::new();
        loop {
            line.clear();
            let n = self
                .stdout
                .read_line(&mut line)
                .expect("read session output");
            assert!(n > 0, "the claude session ended");
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["type"] == "result" {
                assert_eq!(v["is_error"], false, "session result: {v}");
                assert_eq!(v["result"], "fake reply");
                return;
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn put_secret(sm: &aws_sdk_secretsmanager::Client, name: &str, value: &str) -> String {
    sm.put_secret_value()
        .secret_id(name)
        .secret_string(value)
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutSecretValue {name}: {e:?}"))
        .version_id()
        .expect("a version id")
        .to_string()
}

fn random_hex() -> String {
    format!(
        "{:016x}{:08x}",
        rand::random::<u64>(),
        rand::random::<u32>()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_code_sends_each_developers_key_and_a_rotation_needs_no_restart() {
    if !real_code_server_image_or_skip("claude_key") {
        return;
    }
    let image = real_code_server_image();
    require_root();

    let moto = MotoServer::start(&[]);
    let sm = aws_sdk_secretsmanager::Client::new(&moto.sdk_config().await);
    let disk = LoopDevice::new("1G");
    let dir = tempfile::Builder::new()
        .prefix("csagent-ck-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let runtime = tempfile::Builder::new()
        .prefix("csagent-ck-")
        .tempdir_in("/dev/shm")
        .expect("tmpfs dir");
    std::fs::create_dir_all(dir.path().join("ctl")).expect("ctl dir");
    let project = unique("ck").replace('-', "");
    let mount: PathBuf = dir.path().join("data");
    let _leftovers = Leftovers {
        project: project.clone(),
        network: format!("csagent-{project}"),
        subnet: unused_test_subnet(),
        mount: Some(mount.clone()),
    };
    let subnet = _leftovers.subnet.clone();
    let (dev_a, dev_b) = (format!("{project}-a"), format!("{project}-b"));
    let (ca, cb) = (
        format!("code-server-{dev_a}"),
        format!("code-server-{dev_b}"),
    );
    let base = port_block(2);

    let key_a1 = format!("sk-ant-a1-{}", random_hex());
    let key_a2 = format!("sk-ant-a2-{}", random_hex());
    let key_b = format!("sk-ant-b-{}", random_hex());
    for (dev, key) in [(&dev_a, &key_a1), (&dev_b, &key_b)] {
        for (kind, value) in [
            ("password", format!("Pw{}", random_hex())),
            ("claude-api-key", key.clone()),
        ] {
            sm.create_secret()
                .name(format!("{project}/{dev}/{kind}"))
                .secret_string(value)
                .send()
                .await
                .unwrap_or_else(|e| panic!("CreateSecret {project}/{dev}/{kind}: {e:?}"));
        }
    }
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "project = \"{project}\"\nregion = \"{REGION}\"\ninstance_id = \"{INSTANCE_ID}\"\n\
             [aws]\nendpoint_url = \"{moto}\"\n\
             [volume]\ndevice = \"{dev}\"\nmount_point = \"{mount}\"\nfstab = \"{root}/fstab\"\nwait_timeout = \"10s\"\n\
             [containers]\nimage = \"{image}\"\npull = \"never\"\n\
             cpus = 0.5\nmemory = \"1GiB\"\nmemory_reservation = \"512MiB\"\n\
             network = \"csagent-{project}\"\nsubnet = \"{subnet}\"\n\
             health_interval = \"2s\"\nhealth_start_period = \"{start}s\"\n\
             [secrets]\npoll_interval = \"{poll}s\"\napply = \"immediate\"\n\
             [agent]\nstate_dir = \"{root}/state\"\nruntime_dir = \"{run}\"\nsocket = \"{root}/ctl/csagent.sock\"\nsocket_group = \"adm\"\n\
             [[developer]]\nname = \"{dev_a}\"\nport = {pa}\n\
             [[developer]]\nname = \"{dev_b}\"\nport = {pb}\n",
            moto = moto.url(),
            dev = disk.path(),
            mount = mount.display(),
            root = dir.path().display(),
            run = runtime.path().display(),
            start = HEALTHY_WITHIN.as_secs(),
            poll = POLL_INTERVAL.as_secs(),
            pa = base,
            pb = base + 1,
        ),
    )
    .expect("write config");

    let agent = AgentDaemon::start(&config);
    let started = Instant::now();
    let status = agent.wait_status("both developers healthy", HEALTHY_WITHIN, |c, s| {
        all_developers_healthy(c, s, 2)
    });
    eprintln!(
        "claude_key: 2 team-image code-servers healthy in {:.1?}",
        started.elapsed()
    );
    let key_version = |s: &serde_json::Value, dev: &str| {
        status_developer(s, dev)["claude_key_version"]
            .as_str()
            .map(str::to_string)
    };
    let (version_a1, version_b) = (
        key_version(&status, &dev_a).expect("A's key version in status"),
        key_version(&status, &dev_b).expect("B's key version in status"),
    );

    // --- the image's wiring, and no key in any environment -------------------------
    for c in [&ca, &cb] {
        let settings = run(
            "docker",
            &["exec", c, "cat", "/etc/claude-code/managed-settings.json"],
        );
        let settings: serde_json::Value = serde_json::from_str(&settings).expect("JSON");
        assert_eq!(
            settings["apiKeyHelper"], "/usr/local/bin/csagent-claude-key",
            "{c}: managed settings"
        );
        assert_eq!(
            run(
                "docker",
                &["exec", c, "printenv", "CLAUDE_CODE_API_KEY_HELPER_TTL_MS"]
            )
            .trim(),
            IMAGE_TTL_MS
        );
        let environ = run(
            "docker",
            &["exec", c, "sh", "-c", "tr '\\0' '\\n' < /proc/1/environ"],
        );
        assert!(
            !environ.contains("ANTHROPIC_API_KEY") && !environ.contains("CLAUDE_API_KEY"),
            "{c}: code-server's environment carries no key"
        );
        let inspect = run("docker", &["inspect", c]);
        for key in [&key_a1, &key_a2, &key_b] {
            assert!(
                !inspect.contains(key.as_str()),
                "{c}: docker inspect holds no key"
            );
        }
        start_fake(c);
    }

    // --- each developer's Claude Code sends its own key ----------------------------
    let a = claude_p(&ca);
    assert_sent("A's claude -p", &a, &key_a1);
    let b = claude_p(&cb);
    assert_sent("B's claude -p", &b, &key_b);

    // A session that stays open across the rotation.
    let mut session = Session::start(&ca);
    let before = recorded(&ca).len();
    session.prompt();
    assert_sent(
        "A's session before the rotation",
        &recorded(&ca)[before..],
        &key_a1,
    );

    let (id_a, id_b) = (identity(&ca), identity(&cb));

    // --- rotate A's key --------------------------------------------------------------
    let rotated_at = Instant::now();
    let version_a2 = put_secret(&sm, &format!("{project}/{dev_a}/claude-api-key"), &key_a2).await;
    let (dev_a2, v2) = (dev_a.clone(), version_a2.clone());
    let status = agent.wait_status(
        "A's key file holding the new version",
        POLL_INTERVAL * 3 + Duration::from_secs(10),
        move |_, s| key_version(s, &dev_a2).as_deref() == Some(v2.as_str()),
    );
    let in_file_after = rotated_at.elapsed();
    eprintln!("claude_key: rotation -> new key in A's key file in {in_file_after:.1?}");
    let row_a = status_developer(&status, &dev_a);
    assert_eq!(
        row_a["pending_rotation"], false,
        "a key rotation waits for nothing"
    );
    assert_eq!(
        key_version(&status, &dev_b).as_deref(),
        Some(version_b.as_str())
    );
    assert_ne!(version_a1, version_a2);

    // A new claude process sends the new key at once.
    let a = claude_p(&ca);
    assert_sent("A's claude -p after the rotation", &a, &key_a2);
    let new_key_sent_after = rotated_at.elapsed();

    // The open session: after the helper's TTL Claude Code runs the helper again
    // (it may answer one more prompt with the key it holds while it does).
    let session_deadline = Instant::now() + SESSION_TTL + Duration::from_secs(10);
    let switched_after = loop {
        let before = recorded(&ca).len();
        session.prompt();
        let sent = recorded(&ca)[before..].to_vec();
        assert!(!sent.is_empty(), "the session's prompt reached the fake");
        if sent
            .iter()
            .all(|r| r.x_api_key.as_deref() == Some(key_a2.as_str()))
        {
            assert_sent("A's session after the rotation", &sent, &key_a2);
            break rotated_at.elapsed();
        }
        assert_sent("A's session while the helper's TTL runs", &sent, &key_a1);
        assert!(
            Instant::now() < session_deadline,
            "the running session never switched to the rotated key"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    drop(session);
    eprintln!(
        "claude_key: rotation -> new claude -p sends the new key {new_key_sent_after:.1?}, \
         the open session (TTL {SESSION_TTL:?}) {switched_after:.1?}"
    );

    assert_eq!(identity(&ca), id_a, "A was neither recreated nor restarted");
    assert_eq!(identity(&cb), id_b, "B was neither recreated nor restarted");
    let b = claude_p(&cb);
    assert_sent("B's claude -p after A's rotation", &b, &key_b);

    // Across everything so far: no container ever sent the other's key.
    let (all_a, all_b) = (recorded(&ca), recorded(&cb));
    assert_never_sent("A", &all_a, &key_b);
    assert_never_sent("B", &all_b, &key_a1);
    assert_never_sent("B", &all_b, &key_a2);

    // --- a password rotation still recreates A's container --------------------------
    put_secret(
        &sm,
        &format!("{project}/{dev_a}/password"),
        &format!("Rotated{}", random_hex()),
    )
    .await;
    let (ca2, old_id) = (ca.clone(), id_a.clone());
    let dev_a3 = dev_a.clone();
    agent.wait_status(
        "A recreated and healthy after a password rotation",
        POLL_INTERVAL * 3 + HEALTHY_WITHIN,
        move |_, s| {
            let row = status_developer(s, &dev_a3);
            row["health"] == "healthy" && try_identity(&ca2).is_some_and(|id| id != old_id)
        },
    );
    assert_eq!(identity(&cb), id_b, "B untouched by A's password rotation");
    start_fake(&ca);
    assert_sent("A's new container", &claude_p(&ca), &key_a2);

    let log = agent.log();
    for key in [&key_a1, &key_a2, &key_b] {
        assert!(
            !log.contains(key.as_str()),
            "a Claude key in the agent's log"
        );
        // Claude Code keeps no copy in the home (which persists on the volume).
        for c in [&ca, &cb] {
            let found = docker_exec(c, &[], &["grep", "-rlF", key.as_str(), "/home/coder"]);
            assert_eq!(
                found.status.code(),
                Some(1),
                "{c}: a Claude key stored under /home/coder: {}",
                String::from_utf8_lossy(&found.stdout)
            );
        }
    }
    drop(agent);
}
