//! Host logs (journal entries) to CloudWatch Logs against moto: a journal file
//! written for the test with systemd-journal-remote and read by journalctl, as
//! the agent reads the host's journal. The right entries reach the right group,
//! exactly once, through a restart and SIGKILLs; entries appended later follow.
//!
//! Each test has its own project (so its own groups), journal file and state.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use common::cwlogs::*;
use common::*;
use csagent::aws::Identity;
use csagent::config::Config;
use csagent::logs::{HostShipper, LogsStatusHandle, ShipperOptions};
use tokio::sync::watch;

const INSTANCE: &str = "i-0fedcba9876543210";
/// The child-process mode of this test binary (see `host_shipper_child`).
const CHILD_ENV: &str = "CSAGENT_HOST_LOGS_TEST_CHILD_CONFIG";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn identity() -> Identity {
    Identity {
        region: REGION.to_string(),
        instance_id: INSTANCE.to_string(),
    }
}

/// A config reading `journal`, with state under `dir/state`, written to
/// `dir/config.toml`.
fn write_config(dir: &Path, project: &str, journal: &Path) -> (PathBuf, Config) {
    let path = dir.join("config.toml");
    let text = format!(
        r#"project = "{project}"
region = "{REGION}"
instance_id = "{INSTANCE}"
[aws]
endpoint_url = "{}"
[volume]
device = "/dev/null"
[logs]
retention_days = 7
journal = "{}"
[agent]
state_dir = "{}"
"#,
        moto_url(),
        journal.display(),
        dir.join("state").display()
    );
    std::fs::write(&path, text).expect("write config");
    let config = Config::load(&path).expect("test config is valid");
    (path, config)
}

fn journal_remote() -> &'static str {
    ["/lib/systemd/systemd-journal-remote", "/usr/lib/systemd/systemd-journal-remote"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("systemd-journal-remote (Debian package systemd-journal-remote; scripts/lib/services.sh installs it)")
}

/// A journal entry in export format: fields, one per line.
struct Rec(Vec<(String, String)>);

impl Rec {
    fn new(fields: &[(&str, &str)], message: &str) -> Rec {
        let mut f: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        f.push(("MESSAGE".into(), message.into()));
        Rec(f)
    }
}

const DOCKERD: &[(&str, &str)] = &[
    ("_SYSTEMD_UNIT", "docker.service"),
    ("SYSLOG_IDENTIFIER", "dockerd"),
    ("_PID", "812"),
    ("_TRANSPORT", "stdout"),
];
const CONTAINERD: &[(&str, &str)] = &[
    ("_SYSTEMD_UNIT", "containerd.service"),
    ("SYSLOG_IDENTIFIER", "containerd"),
    ("_PID", "640"),
    ("_TRANSPORT", "stdout"),
];
const KERNEL: &[(&str, &str)] = &[("_TRANSPORT", "kernel"), ("SYSLOG_IDENTIFIER", "kernel")];
const AGENT_PROCESS: &[(&str, &str)] = &[
    ("_SYSTEMD_UNIT", "csagent.service"),
    ("SYSLOG_IDENTIFIER", "csagent"),
    ("_PID", "900"),
    ("_TRANSPORT", "stdout"),
];
const SSHD: &[(&str, &str)] = &[
    ("_SYSTEMD_UNIT", "ssh.service"),
    ("SYSLOG_IDENTIFIER", "sshd"),
    ("_PID", "77"),
    ("_TRANSPORT", "syslog"),
];

/// systemd (PID 1) about `unit`.
fn systemd_about(unit: &str, message: &str) -> Rec {
    Rec::new(
        &[
            ("UNIT", unit),
            ("SYSLOG_IDENTIFIER", "systemd"),
            ("_PID", "1"),
            ("_TRANSPORT", "journal"),
        ],
        message,
    )
}

/// Appends entries to the journal file (creating it), stamped with the
/// current time and strictly increasing.
fn append(journal: &Path, recs: &[Rec]) {
    static LAST_US: AtomicI64 = AtomicI64::new(0);
    let mut text = String::new();
    for r in recs {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_micros() as i64;
        let us = now.max(LAST_US.load(Ordering::SeqCst) + 1);
        LAST_US.store(us, Ordering::SeqCst);
        text.push_str(&format!(
            "__REALTIME_TIMESTAMP={us}\n__MONOTONIC_TIMESTAMP={us}\n_BOOT_ID=0123456789abcdef0123456789abcdef\n_MACHINE_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME=test-host\n"
        ));
        for (k, v) in &r.0 {
            text.push_str(&format!("{k}={v}\n"));
        }
        text.push('\n');
    }
    let mut child = Command::new(journal_remote())
        .arg(format!("--output={}", journal.display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start systemd-journal-remote");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write export format");
    let out = child.wait_with_output().expect("systemd-journal-remote");
    assert!(
        out.status.success(),
        "systemd-journal-remote: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn logs_client() -> aws_sdk_cloudwatchlogs::Client {
    aws_sdk_cloudwatchlogs::Client::new(&aws().await)
}

/// Waits until the stream holds at least `n` messages.
async fn wait_for(
    client: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    n: usize,
    timeout: Duration,
) -> Vec<String> {
    let start = Instant::now();
    loop {
        let got = read_stream(client, group, INSTANCE).await;
        if got.len() >= n || start.elapsed() > timeout {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Short delays so tests are quick; the logic is the agent's.
fn test_options() -> ShipperOptions {
    ShipperOptions {
        flush_interval: Duration::from_millis(300),
        quiet_flush: Duration::from_millis(100),
        flush_timeout: Duration::from_secs(5),
        buffer_bytes: 4 * 1024 * 1024,
        backoff: csagent::retry::Backoff::new(Duration::from_millis(100), Duration::from_secs(2)),
        readback_settle: Duration::from_millis(200),
    }
}

/// A host shipper running in this process.
struct Running {
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    status: LogsStatusHandle,
}

impl Running {
    async fn start(config: &Config) -> Running {
        let shipper =
            HostShipper::new(logs_client().await, config, &identity()).with_options(test_options());
        let status = shipper.status_handle();
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(shipper.run(rx));
        Running {
            shutdown,
            task,
            status,
        }
    }

    async fn stop(self) {
        self.shutdown.send_replace(true);
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("the shipper stops within its flush timeout")
            .expect("shipper task");
    }
}

/// journalctl processes reading `journal` (none may outlive the shipper).
fn journalctl_readers(journal: &Path) -> Vec<u32> {
    let needle = format!("--file={}", journal.display());
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("journalctl")) && args.contains(&needle) {
            out.push(pid);
        }
    }
    out
}

async fn wait_no_readers(journal: &Path) -> Vec<u32> {
    let start = Instant::now();
    loop {
        let left = journalctl_readers(journal);
        if left.is_empty() || start.elapsed() > Duration::from_secs(5) {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// docker and containerd (and systemd about them) go to the docker group;
/// kernel OOM kills and systemd about csagent.service to the system group;
/// the agent's own process lines (shipped by the agent itself), other units
/// and other kernel messages nowhere. Entries appended later follow; a
/// restarted shipper resumes from its cursor; status shows each source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_reach_their_groups_exactly_once_and_later_ones_follow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = dir.path().join("host.journal");
    let project = unique("hostlogs");
    let (_, config) = write_config(dir.path(), &project, &journal);
    let system = config.logs.system_group.clone().expect("system group");
    let docker = config.logs.docker_group.clone().expect("docker group");
    let client = logs_client().await;

    let mut recs = Vec::new();
    recs.push(systemd_about(
        "csagent.service",
        "csagent.service: Main process exited, code=killed, status=9/KILL",
    ));
    recs.push(systemd_about(
        "docker.service",
        "Started docker.service - Docker Application Container Engine.",
    ));
    recs.push(systemd_about(
        "ssh.service",
        "Started ssh.service - OpenBSD Secure Shell server.",
    ));
    for i in 1..=40u64 {
        recs.push(Rec::new(DOCKERD, &format!("d-{i}")));
        if i % 2 == 0 {
            recs.push(Rec::new(CONTAINERD, &format!("c-{}", i / 2)));
        }
        if i % 10 == 0 {
            recs.push(Rec::new(AGENT_PROCESS, &format!("agent line {i}")));
            recs.push(Rec::new(SSHD, &format!("Accepted publickey {i}")));
            recs.push(Rec::new(KERNEL, "EXT4-fs (nvme1n1): mounted filesystem"));
        }
    }
    recs.push(Rec::new(
        KERNEL,
        "node invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
    ));
    recs.push(Rec::new(KERNEL, "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=docker-1.scope,task=node,pid=4343,uid=1000"));
    recs.push(Rec::new(
        KERNEL,
        "Memory cgroup out of memory: Killed process 4343 (node) total-vm:4096kB, anon-rss:2048kB",
    ));
    recs.push(Rec::new(
        KERNEL,
        "Out of memory: Killed process 4242 (node) total-vm:8192kB, anon-rss:4096kB",
    ));
    append(&journal, &recs);

    let started = Instant::now();
    let running = Running::start(&config).await;
    let mut want_docker = vec![
        "systemd[1]: Started docker.service - Docker Application Container Engine.".to_string(),
    ];
    for i in 1..=40u64 {
        want_docker.push(format!("dockerd[812]: d-{i}"));
        if i % 2 == 0 {
            want_docker.push(format!("containerd[640]: c-{}", i / 2));
        }
    }
    let mut want_system = vec![
        "systemd[1]: csagent.service: Main process exited, code=killed, status=9/KILL".to_string(),
        "kernel: oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=docker-1.scope,task=node,pid=4343,uid=1000".to_string(),
        "kernel: Memory cgroup out of memory: Killed process 4343 (node) total-vm:4096kB, anon-rss:2048kB".to_string(),
        "kernel: Out of memory: Killed process 4242 (node) total-vm:8192kB, anon-rss:4096kB".to_string(),
    ];
    let got = wait_for(&client, &docker, want_docker.len(), Duration::from_secs(30)).await;
    eprintln!(
        "{} docker entries shipped in {:?}",
        got.len(),
        started.elapsed()
    );
    let got_system = wait_for(&client, &system, want_system.len(), Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_exactly_once(&read_stream(&client, &docker, INSTANCE).await, &want_docker);
    assert_exactly_once(&read_stream(&client, &system, INSTANCE).await, &want_system);
    assert_eq!(got_system.len(), 4);

    // Status: both sources read, shipped, caught up, no error.
    let s = running.status.snapshot();
    let d = &s.host["docker"];
    assert!(d.reading, "{d:?}");
    assert_eq!(
        (d.group.as_str(), d.stream.as_str()),
        (docker.as_str(), INSTANCE)
    );
    assert_eq!(d.shipped_events, want_docker.len() as u64);
    assert_eq!((d.buffered_events, d.lag_seconds), (0, 0.0));
    assert!(d.cursor_ms.is_some() && d.last_error.is_none(), "{d:?}");
    let sy = &s.host["system"];
    assert_eq!(sy.shipped_events, 4);
    assert!(
        sy.skipped_entries >= 5,
        "non-OOM kernel messages read and skipped: {sy:?}"
    );

    // The groups this agent created got the configured retention.
    let groups = client
        .describe_log_groups()
        .log_group_name_prefix(format!("/aws/ec2/{project}/"))
        .send()
        .await
        .expect("describe groups");
    for g in groups.log_groups() {
        assert_eq!(g.retention_in_days(), Some(7), "{:?}", g.log_group_name());
    }
    assert_eq!(groups.log_groups().len(), 2);

    // Appended later: followed.
    let mut more: Vec<Rec> = (41..=60u64)
        .map(|i| Rec::new(DOCKERD, &format!("d-{i}")))
        .collect();
    more.push(Rec::new(
        KERNEL,
        "Out of memory: Killed process 5000 (cc1plus)",
    ));
    append(&journal, &more);
    want_docker.extend(numbered("dockerd[812]: d-", 41..=60));
    want_system.push("kernel: Out of memory: Killed process 5000 (cc1plus)".to_string());
    wait_for(&client, &docker, want_docker.len(), Duration::from_secs(30)).await;
    wait_for(&client, &system, want_system.len(), Duration::from_secs(30)).await;
    running.stop().await;
    assert!(
        wait_no_readers(&journal).await.is_empty(),
        "journalctl stopped with the shipper"
    );
    assert_exactly_once(&read_stream(&client, &docker, INSTANCE).await, &want_docker);
    assert_exactly_once(&read_stream(&client, &system, INSTANCE).await, &want_system);
    assert!(dir.path().join("state/host-logs/docker.json").exists());

    // Written while no shipper runs, then a new shipper: resumes after its
    // cursor, nothing repeated.
    append(
        &journal,
        &(61..=70u64)
            .map(|i| Rec::new(CONTAINERD, &format!("late-{i}")))
            .collect::<Vec<_>>(),
    );
    let running = Running::start(&config).await;
    want_docker.extend(numbered("containerd[640]: late-", 61..=70));
    wait_for(&client, &docker, want_docker.len(), Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    running.stop().await;
    assert_exactly_once(&read_stream(&client, &docker, INSTANCE).await, &want_docker);
    assert_exactly_once(&read_stream(&client, &system, INSTANCE).await, &want_system);
}

/// With `logs.agent_group = ""` the agent's own lines come from the journal
/// into the system group (otherwise the agent ships them itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_lines_go_to_the_system_group_when_the_agent_group_is_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = dir.path().join("host.journal");
    let project = unique("hostlogs-agent");
    let (path, _) = write_config(dir.path(), &project, &journal);
    let mut text = std::fs::read_to_string(&path).expect("config");
    text = text.replace("[logs]\n", "[logs]\nagent_group = \"\"\n");
    std::fs::write(&path, text).expect("config");
    let config = Config::load(&path).expect("config");
    let system = config.logs.system_group.clone().expect("system group");
    let client = logs_client().await;
    append(
        &journal,
        &[
            Rec::new(AGENT_PROCESS, "INFO csagent: converged"),
            systemd_about(
                "csagent.service",
                "csagent.service: Watchdog timeout (limit 2min)!",
            ),
            Rec::new(SSHD, "not this"),
        ],
    );
    let running = Running::start(&config).await;
    let want = [
        "csagent[900]: INFO csagent: converged".to_string(),
        "systemd[1]: csagent.service: Watchdog timeout (limit 2min)!".to_string(),
    ];
    wait_for(&client, &system, 2, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    running.stop().await;
    assert_exactly_once(&read_stream(&client, &system, INSTANCE).await, &want);
}

/// The docker entries in the journal file: (cursor, timestamp ms), oldest first.
fn docker_cursors(journal: &Path) -> Vec<(String, i64)> {
    let out = Command::new("journalctl")
        .arg(format!("--file={}", journal.display()))
        .args([
            "--output=json",
            "--no-pager",
            "_SYSTEMD_UNIT=docker.service",
        ])
        .output()
        .expect("journalctl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("journalctl json");
            let us: i64 = v["__REALTIME_TIMESTAMP"]
                .as_str()
                .expect("ts")
                .parse()
                .expect("ts");
            (
                v["__CURSOR"].as_str().expect("cursor").to_string(),
                us / 1000,
            )
        })
        .collect()
}

/// A kill between the in-flight record and the cursor update, both ways: a
/// batch that landed is not sent again (read back), one that did not is sent.
/// The checkpoint such a kill leaves is written here, the shipper restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_in_flight_at_a_kill_is_settled_by_reading_back() {
    use csagent::logs::Tail;
    use csagent::logs::host::{HostInflight, HostStore};

    let dir = tempfile::tempdir().expect("tempdir");
    let journal = dir.path().join("host.journal");
    let project = unique("hostlogs-inflight");
    let (_, config) = write_config(dir.path(), &project, &journal);
    let docker = config.logs.docker_group.clone().expect("docker group");
    let client = logs_client().await;
    let store = HostStore::new(&config.agent.state_dir);
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64
    };

    append(
        &journal,
        &(1..=10u64)
            .map(|i| Rec::new(DOCKERD, &format!("d-{i}")))
            .collect::<Vec<_>>(),
    );
    let running = Running::start(&config).await;
    wait_for(&client, &docker, 10, Duration::from_secs(30)).await;
    running.stop().await;
    let c = docker_cursors(&journal);

    // Landed: d-6..d-10 were put, the kill came before the cursor moved past d-5.
    let mut cp = store.load("docker").expect("load").expect("checkpoint");
    assert_eq!(cp.cursor.as_deref(), Some(c[9].0.as_str()));
    cp.cursor = Some(c[4].0.clone());
    cp.tail = Tail {
        ts_ms: c[4].1,
        count: 1,
    };
    cp.inflight = Some(HostInflight {
        end: Some(c[9].0.clone()),
        end_ms: Some(c[9].1),
        first_ms: c[5].1,
        last_ms: c[9].1,
        events: 5,
        tail_after: Tail {
            ts_ms: c[9].1,
            count: 1,
        },
        started_ms: now_ms() - 10_000,
    });
    store.save("docker", &cp).expect("save");
    append(&journal, &[Rec::new(DOCKERD, "d-11")]);
    let running = Running::start(&config).await;
    wait_for(&client, &docker, 11, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let landed = running.status.snapshot().host["docker"].readback_landed;
    running.stop().await;
    assert_exactly_once(
        &read_stream(&client, &docker, INSTANCE).await,
        &numbered("dockerd[812]: d-", 1..=11),
    );
    assert_eq!(landed, 1, "settled by reading the stream back");

    // Not landed: d-12..d-13 were in flight but never stored.
    append(
        &journal,
        &(12..=13u64)
            .map(|i| Rec::new(DOCKERD, &format!("d-{i}")))
            .collect::<Vec<_>>(),
    );
    let c = docker_cursors(&journal);
    let mut cp = store.load("docker").expect("load").expect("checkpoint");
    assert_eq!(cp.cursor.as_deref(), Some(c[10].0.as_str()));
    cp.inflight = Some(HostInflight {
        end: Some(c[12].0.clone()),
        end_ms: Some(c[12].1),
        first_ms: c[11].1,
        last_ms: c[12].1,
        events: 2,
        tail_after: Tail {
            ts_ms: c[12].1,
            count: 1,
        },
        started_ms: now_ms() - 10_000,
    });
    store.save("docker", &cp).expect("save");
    let running = Running::start(&config).await;
    wait_for(&client, &docker, 13, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let s = running.status.snapshot();
    running.stop().await;
    assert_exactly_once(
        &read_stream(&client, &docker, INSTANCE).await,
        &numbered("dockerd[812]: d-", 1..=13),
    );
    assert_eq!(s.host["docker"].readback_landed, 0, "not landed: sent");
}

// ---------------------------------------------------------------------------
// SIGKILL: a child process runs the shipper
// ---------------------------------------------------------------------------

/// Not a test on its own: the SIGKILL test runs this test binary again with
/// `CSAGENT_HOST_LOGS_TEST_CHILD_CONFIG` set, and this runs the shipper until
/// killed.
#[test]
fn host_shipper_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter("info")
        .with_ansi(false)
        .try_init();
    let config = Config::load(Path::new(&path)).expect("child config");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut options = test_options();
        // Many small batches, so kills land in every phase of a put.
        options.flush_interval = Duration::from_millis(50);
        let shipper =
            HostShipper::new(logs_client().await, &config, &identity()).with_options(options);
        let (_tx, rx) = watch::channel(false);
        shipper.run(rx).await;
    });
}

/// The child shipper; killed (SIGKILL) when dropped.
struct Child(std::process::Child);

impl Child {
    fn kill(&mut self) {
        let _ = self.0.kill(); // std's kill is SIGKILL
        let _ = self.0.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_child(config_path: &Path, log: &Path) -> Child {
    let exe = std::env::current_exe().expect("test binary path");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("child log");
    Command::new(exe)
        .args([
            "host_shipper_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, config_path)
        .stdout(log.try_clone().expect("log fd"))
        .stderr(log)
        .spawn()
        .map(Child)
        .expect("start the child shipper")
}

/// The shipper is killed with SIGKILL at random moments while 3,000 entries
/// are appended to the journal, and restarted each time: every entry arrives
/// exactly once, and no journalctl outlives a killed shipper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = dir.path().join("host.journal");
    let project = unique("hostlogs-kill");
    let (config_path, config) = write_config(dir.path(), &project, &journal);
    let docker = config.logs.docker_group.clone().expect("docker group");
    let client = logs_client().await;
    let child_log = dir.path().join("child.log");
    append(&journal, &[Rec::new(DOCKERD, "k0-0")]);

    let mut child = spawn_child(&config_path, &child_log);
    // 30 appends of 100 entries over ~6 s.
    let writer = {
        let journal = journal.clone();
        tokio::task::spawn_blocking(move || {
            for chunk in 1..=30u64 {
                let recs: Vec<Rec> = (1..=100u64)
                    .map(|i| Rec::new(DOCKERD, &format!("k{chunk}-{i}")))
                    .collect();
                append(&journal, &recs);
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let mut kills = 0;
    while kills < 4 {
        let wait = rand::random_range(300..2000u64);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        child.kill();
        kills += 1;
        let left = wait_no_readers(&journal).await;
        assert!(
            left.is_empty(),
            "journalctl outlived the killed shipper: {left:?}"
        );
        child = spawn_child(&config_path, &child_log);
    }
    writer.await.expect("writer");
    let mut want = vec!["dockerd[812]: k0-0".to_string()];
    for chunk in 1..=30u64 {
        want.extend(numbered(&format!("dockerd[812]: k{chunk}-"), 1..=100));
    }
    let got = wait_for(&client, &docker, want.len(), Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got_again = read_stream(&client, &docker, INSTANCE).await;
    child.kill();
    let log = std::fs::read_to_string(&child_log).unwrap_or_default();
    if got_again != want {
        eprintln!("child log:\n{log}");
    }
    for line in log.lines().filter(|l| l.contains("in flight")) {
        eprintln!("{line}");
    }
    assert!(
        got.len() >= want.len(),
        "all entries arrived in time: {}",
        got.len()
    );
    assert_exactly_once(&got_again, &want);
}
