//! The fault-injection suite: `csagent run` as a child process against dockerd, moto
//! (behind a TCP proxy the test can cut) and a loop-device volume, with two
//! developers whose containers flood numbered log lines while a fault is injected.
//!
//! Each test measures what docs/reliability.md tabulates and asserts it:
//! - log lines lost and duplicated (CloudWatch Logs read back against what the
//!   containers printed);
//! - developer files lost (files written in each home before the fault, read back
//!   through the container after it);
//! - containers restarted needlessly (container id and `StartedAt` before and after,
//!   for faults that give no reason to restart any);
//! - the time from the end of the fault to converged (every developer running and
//!   healthy, every line shipped).
//!
//! Each row is appended to `$CSAGENT_FAULT_REPORT` (scripts/test.sh prints the table).

mod common;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
use common::*;
use nix::sys::signal::Signal;

const INSTANCE: &str = "i-0123456789abcdef0";
const VOLUME_ID: &str = "vol-0fa17c0ffee000001";
const NVME_NAME: &str = "nvme-Amazon_Elastic_Block_Store_vol0fa17c0ffee000001";
/// Lines per `/print` request and the pause between requests: a steady flood of
/// ~2,500 lines/s per developer while a fault happens.
const CHUNK: u64 = 250;
const PAUSE: Duration = Duration::from_millis(100);
/// How long a fault may take to heal before the test fails.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(180);

/// One developer's container as Docker reports it, to tell a restart.
#[derive(Debug, Clone, PartialEq)]
struct Incarnation {
    id: String,
    started_at: String,
}

struct Rig {
    project: String,
    devs: Vec<String>,
    base_port: u16,
    dir: tempfile::TempDir,
    _runtime: tempfile::TempDir,
    disk: LoopDevice,
    proxy: TcpProxy,
    config: PathBuf,
    daemon: Option<AgentDaemon>,
    logs: aws_sdk_cloudwatchlogs::Client,
    sm: aws_sdk_secretsmanager::Client,
    _cleanup: Leftovers,
}

impl Rig {
    /// Secrets for `n` developers in moto and a config that reaches AWS through a
    /// proxy; `by_id` finds the volume by its id in `<dir>/by-id` instead of by path.
    async fn new(tag: &str, n: usize, by_id: bool) -> Rig {
        require_root();
        let disk = LoopDevice::new("256M");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let runtime = tempfile::Builder::new()
            .prefix("csagent-faults-")
            .tempdir_in("/dev/shm")
            .expect("tmpfs dir");
        let project = unique(tag).replace('-', "");
        let base_port = port_block(n as u16 + 1);
        let subnet = test_subnet();
        let moto: std::net::SocketAddr = moto_url()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("moto address");
        let proxy = TcpProxy::start(moto).await;
        let sdk = aws().await;
        let sm = aws_sdk_secretsmanager::Client::new(&sdk);
        let logs = aws_sdk_cloudwatchlogs::Client::new(&sdk);
        let devs: Vec<String> = (1..=n).map(|i| format!("{project}-d{i}")).collect();
        for dev in &devs {
            for (kind, value) in [
                ("password", format!("pw-{dev}")),
                ("claude-api-key", "REPLACE_WITH_ACTUAL_KEY".to_string()),
            ] {
                sm.create_secret()
                    .name(format!("{project}/{dev}/{kind}"))
                    .secret_string(value)
                    .send()
                    .await
                    .expect("create secret");
            }
        }
        let volume = if by_id {
            std::fs::create_dir_all(dir.path().join("by-id")).expect("by-id dir");
            format!(
                "volume_id = \"{VOLUME_ID}\"\nby_id_dir = \"{}/by-id\"\n",
                dir.path().display()
            )
        } else {
            format!("device = \"{}\"\n", disk.path())
        };
        let mut text = format!(
            "project = \"{project}\"\nregion = \"{REGION}\"\ninstance_id = \"{INSTANCE}\"\n\
             [aws]\nendpoint_url = \"{aws}\"\n\
             [volume]\n{volume}mount_point = \"{root}/data\"\nfstab = \"{root}/fstab\"\nwait_timeout = \"2m\"\n\
             [containers]\nimage = \"{TEST_IMAGE}\"\npull = \"never\"\ncpus = 0.25\nmemory = \"256MiB\"\nmemory_reservation = \"128MiB\"\n\
             network = \"csagent-{project}\"\nsubnet = \"{subnet}\"\nhealth_interval = \"1s\"\nhealth_start_period = \"0s\"\n\
             [secrets]\npoll_interval = \"2s\"\n\
             [metrics]\nenabled = false\n\
             [logs]\nenabled = true\n\
             [agent]\nstate_dir = \"{root}/state\"\nruntime_dir = \"{run}\"\nsocket = \"{root}/ctl/csagent.sock\"\nsocket_group = \"adm\"\n",
            aws = proxy.url(),
            root = dir.path().display(),
            run = runtime.path().display(),
        );
        for (i, dev) in devs.iter().enumerate() {
            text.push_str(&format!(
                "[[developer]]\nname = \"{dev}\"\nport = {}\n",
                base_port + i as u16
            ));
        }
        let config = dir.path().join("config.toml");
        std::fs::write(&config, text).expect("write config");
        std::fs::create_dir_all(dir.path().join("ctl")).expect("ctl dir");
        std::fs::set_permissions(
            dir.path().join("ctl"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        let cleanup = Leftovers {
            project: project.clone(),
            network: format!("csagent-{project}"),
            subnet,
            mount: Some(dir.path().join("data")),
        };
        Rig {
            project,
            devs,
            base_port,
            dir,
            _runtime: runtime,
            disk,
            proxy,
            config,
            daemon: None,
            logs,
            sm,
            _cleanup: cleanup,
        }
    }

    fn start(&mut self) {
        self.daemon = Some(AgentDaemon::start(&self.config));
    }

    /// Turns metrics on (every 2 s, in a namespace of this rig's own) before the agent
    /// starts; returns the namespace.
    fn enable_metrics(&self) -> String {
        let namespace = format!("CsagentFaults{}", self.project);
        let text = std::fs::read_to_string(&self.config).expect("read config");
        let text = text.replace(
            "[metrics]\nenabled = false\n",
            &format!("[metrics]\nenabled = true\nnamespace = \"{namespace}\"\ninterval = \"2s\"\n"),
        );
        std::fs::write(&self.config, text).expect("write config");
        namespace
    }

    /// What `systemctl stop csagent` does: SIGTERM, then wait for the agent to exit.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut d = self.daemon.take().expect("the agent runs");
        d.signal(Signal::SIGTERM);
        d.child.wait().expect("wait for the agent")
    }

    fn daemon(&self) -> &AgentDaemon {
        self.daemon.as_ref().expect("the agent runs")
    }

    /// SIGKILL, as the OOM killer or a power cut would; nothing runs on the way out.
    fn kill(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.signal(Signal::SIGKILL);
            let _ = d.child.wait();
        }
    }

    fn container(&self, dev: &str) -> String {
        format!("code-server-{dev}")
    }

    fn incarnations(&self) -> Vec<Option<Incarnation>> {
        self.devs
            .iter()
            .map(|d| {
                let out = Command::new("docker")
                    .args([
                        "inspect",
                        "-f",
                        "{{.Id}} {{.State.StartedAt}}",
                        &self.container(d),
                    ])
                    .output()
                    .ok()?;
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                let (id, started_at) = text.trim().split_once(' ')?;
                out.status.success().then(|| Incarnation {
                    id: id.to_string(),
                    started_at: started_at.to_string(),
                })
            })
            .collect()
    }

    /// Waits until status shows every developer running and healthy.
    fn wait_healthy(&self, timeout: Duration) {
        let n = self.devs.len();
        self.daemon()
            .wait_status("every developer healthy", timeout, |c, s| {
                all_developers_healthy(c, s, n)
            });
    }

    /// Each developer's container prints `chunks` × CHUNK numbered lines
    /// `<prefix><dev index>-<chunk>-<i>`, paced, in a background thread; the
    /// handle returns the lines it made each container print.
    fn flood(&self, prefix: &str, chunks: u64) -> std::thread::JoinHandle<Vec<Vec<String>>> {
        let ports: Vec<u16> = (0..self.devs.len())
            .map(|i| self.base_port + i as u16)
            .collect();
        let prefix = prefix.to_string();
        std::thread::spawn(move || {
            let mut printed = vec![Vec::new(); ports.len()];
            for chunk in 0..chunks {
                for (i, port) in ports.iter().enumerate() {
                    let p = format!("{prefix}{i}-{chunk}-");
                    // Refused while the container is down: try again, so what is
                    // counted as printed was printed.
                    for _ in 0..100 {
                        let r = http_request(
                            *port,
                            "GET",
                            &format!("/print?count={CHUNK}&prefix={p}"),
                            &[],
                            "",
                            Duration::from_secs(5),
                        );
                        if r.is_some_and(|r| r.status == 200) {
                            printed[i].extend((1..=CHUNK).map(|n| format!("{p}{n}")));
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
                std::thread::sleep(PAUSE);
            }
            printed
        })
    }

    fn group(&self, dev: &str) -> String {
        let config = csagent::config::Config::load(&self.config).expect("config");
        config.render(&config.logs.group, dev)
    }

    /// Every message of a developer's stream that starts with `prefix`.
    async fn shipped(&self, dev: &str, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let Ok(resp) = self
                .logs
                .get_log_events()
                .log_group_name(self.group(dev))
                .log_stream_name(INSTANCE)
                .start_from_head(true)
                .set_next_token(token.clone())
                .send()
                .await
            else {
                return out;
            };
            let page: Vec<String> = resp
                .events()
                .iter()
                .filter_map(|e| e.message())
                .filter(|m| m.starts_with(prefix))
                .map(str::to_string)
                .collect();
            let next = resp.next_forward_token().map(str::to_string);
            let empty = resp.events().is_empty();
            out.extend(page);
            if empty || next == token {
                return out;
            }
            token = next;
        }
    }

    /// Waits until every printed line is shipped (or the timeout), then returns
    /// (lost, duplicated) over all developers.
    async fn settle(
        &self,
        prefix: &str,
        printed: &[Vec<String>],
        timeout: Duration,
    ) -> (usize, usize) {
        let start = Instant::now();
        while self.count(prefix, printed).await.0 > 0 && start.elapsed() < timeout {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // A moment more, so a late duplicate would show too.
        tokio::time::sleep(Duration::from_secs(2)).await;
        self.count(prefix, printed).await
    }

    /// (lost, duplicated) over all developers now.
    async fn count(&self, prefix: &str, printed: &[Vec<String>]) -> (usize, usize) {
        let mut total = (0, 0);
        for (dev, want) in self.devs.iter().zip(printed) {
            let (lost, dup) = compare(&self.shipped(dev, prefix).await, want);
            total = (total.0 + lost, total.1 + dup);
        }
        total
    }

    /// A file with unique content in each developer's workspace, written by the
    /// developer's own container.
    fn write_files(&self, name: &str) -> Vec<(String, String)> {
        self.devs
            .iter()
            .map(|d| {
                let content = unique("file-content");
                let out = Command::new("docker")
                    .args([
                        "exec",
                        &self.container(d),
                        "sh",
                        "-c",
                        &format!("printf %s {content} > /home/coder/workspace/{name}"),
                    ])
                    .output()
                    .expect("docker exec");
                assert!(
                    out.status.success(),
                    "write a file in {d}'s workspace: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                (d.clone(), content)
            })
            .collect()
    }

    /// How many of the files are missing or changed, read through the containers.
    fn files_lost(&self, name: &str, files: &[(String, String)]) -> usize {
        files
            .iter()
            .filter(|(dev, content)| {
                let out = Command::new("docker")
                    .args([
                        "exec",
                        &self.container(dev),
                        "cat",
                        &format!("/home/coder/workspace/{name}"),
                    ])
                    .output();
                !out.is_ok_and(|o| o.status.success() && o.stdout == content.as_bytes())
            })
            .count()
    }
}

/// (lost, duplicated) of `got` against `want`, as multisets.
fn compare(got: &[String], want: &[String]) -> (usize, usize) {
    let mut counts: HashMap<&str, i64> = HashMap::new();
    for w in want {
        *counts.entry(w).or_default() += 1;
    }
    for g in got {
        *counts.entry(g).or_default() -= 1;
    }
    let lost = counts
        .values()
        .filter(|c| **c > 0)
        .map(|c| *c as usize)
        .sum();
    let dup = counts
        .values()
        .filter(|c| **c < 0)
        .map(|c| (-*c) as usize)
        .sum();
    (lost, dup)
}

fn restarted(before: &[Option<Incarnation>], after: &[Option<Incarnation>]) -> usize {
    before.iter().zip(after).filter(|(b, a)| b != a).count()
}

/// Asserts the zeros and records the row.
#[allow(clippy::too_many_arguments)]
fn row(
    fault: &str,
    lines: usize,
    lost: usize,
    dup: usize,
    files_lost: usize,
    needless: usize,
    converged: Duration,
) {
    report_fault(fault, lines, lost, dup, files_lost, needless, converged);
    assert_eq!(
        (lost, dup, files_lost, needless),
        (0, 0, 0, 0),
        "{fault}: lines lost, lines duplicated, files lost, needless restarts"
    );
}

/// A rig converged and shipping, with files written and the containers noted.
async fn converged_rig(tag: &str) -> (Rig, Vec<(String, String)>, Vec<Option<Incarnation>>) {
    let mut rig = Rig::new(tag, 2, false).await;
    rig.start();
    rig.daemon().wait_notify("READY=1", Duration::from_secs(90));
    rig.wait_healthy(Duration::from_secs(60));
    let files = rig.write_files("before-fault");
    let before = rig.incarnations();
    assert!(before.iter().all(Option::is_some), "{before:?}");
    (rig, files, before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_sigkill_five_times_during_a_log_flood() {
    let (mut rig, files, before) = converged_rig("flt-kill").await;
    let flood = rig.flood("k", 40);
    for _ in 0..5 {
        let wait = rand::random_range(300..1500u64);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        rig.kill();
        rig.start();
    }
    let printed = flood.join().expect("flood");
    let healed = Instant::now();
    rig.wait_healthy(CONVERGE_TIMEOUT);
    let lines: usize = printed.iter().map(Vec::len).sum();
    let (lost, dup) = rig.settle("k", &printed, CONVERGE_TIMEOUT).await;
    let converged = healed.elapsed();
    let files_lost = rig.files_lost("before-fault", &files);
    let needless = restarted(&before, &rig.incarnations());
    row(
        "agent SIGKILL five times during a log flood",
        lines,
        lost,
        dup,
        files_lost,
        needless,
        converged,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_endpoint_down_for_60_seconds() {
    let (mut rig, files, before) = converged_rig("flt-aws").await;
    let flood = rig.flood("a", 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    rig.proxy.stop().await;
    let down = Instant::now();
    // While AWS is away developers keep working: status shows them all running
    // and healthy, and says since when logs have not reached CloudWatch.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (code, status) = rig.daemon().status();
    assert!(
        status["developers"]
            .as_array()
            .is_some_and(|a| a.len() == rig.devs.len()
                && a.iter()
                    .all(|d| d["state"] == "running" && d["health"] == "healthy")),
        "developers keep working during the outage (status exit {code}): {status:#}"
    );
    let last_logs = status["aws_last_success"]["logs"].clone();
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(down.elapsed())).await;
    rig.proxy.resume().await;
    let healed = Instant::now();
    let printed = flood.join().expect("flood");
    let lines: usize = printed.iter().map(Vec::len).sum();
    rig.wait_healthy(CONVERGE_TIMEOUT);
    let (lost, dup) = rig.settle("a", &printed, CONVERGE_TIMEOUT).await;
    let (_, status) = rig.daemon().status();
    assert_ne!(
        status["aws_last_success"]["logs"], last_logs,
        "logs reach CloudWatch again"
    );
    let converged = healed.elapsed();
    let files_lost = rig.files_lost("before-fault", &files);
    let needless = restarted(&before, &rig.incarnations());
    row(
        "AWS endpoint down for 60 s, then back",
        lines,
        lost,
        dup,
        files_lost,
        needless,
        converged,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_group_deleted_while_running() {
    let (rig, files, before) = converged_rig("flt-group").await;
    // Lines shipped before the deletion go with the group (the admin deleted them);
    // every line printed after it must arrive in the group the agent re-creates.
    let early = rig.flood("e", 4).join().expect("flood");
    let (lost, _) = rig.settle("e", &early, Duration::from_secs(60)).await;
    assert_eq!(lost, 0, "shipping works before the deletion");
    let victim = rig.devs[0].clone();
    rig.logs
        .delete_log_group()
        .log_group_name(rig.group(&victim))
        .send()
        .await
        .expect("delete the log group");
    let healed = Instant::now();
    let printed = rig.flood("g", 20).join().expect("flood");
    let lines: usize = printed.iter().map(Vec::len).sum();
    let (lost, dup) = rig.settle("g", &printed, CONVERGE_TIMEOUT).await;
    let converged = healed.elapsed();
    let files_lost = rig.files_lost("before-fault", &files);
    let needless = restarted(&before, &rig.incarnations());
    row(
        "log group deleted while running",
        lines,
        lost,
        dup,
        files_lost,
        needless,
        converged,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn developer_secret_deleted_then_restored() {
    let (rig, files, before) = converged_rig("flt-secret").await;
    let victim = rig.devs[0].clone();
    let name = format!("{}/{victim}/password", rig.project);
    let flood = rig.flood("s", 30);
    rig.sm
        .delete_secret()
        .secret_id(&name)
        .force_delete_without_recovery(true)
        .send()
        .await
        .expect("delete the secret");
    // The agent keeps the developer on the last password it had and says why.
    let s = rig
        .daemon()
        .wait_status("the missing secret", Duration::from_secs(30), |_, s| {
            status_developer(s, &victim)["problem"]
                .as_str()
                .is_some_and(|p| p.contains(&name))
        });
    assert_eq!(status_developer(&s, &victim)["state"], "running", "{s:#}");
    assert!(
        status_developer(&s, &rig.devs[1])["problem"].is_null(),
        "the other developer is fine: {s:#}"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    rig.sm
        .create_secret()
        .name(&name)
        .secret_string(format!("pw-{victim}"))
        .send()
        .await
        .expect("restore the secret");
    let healed = Instant::now();
    let printed = flood.join().expect("flood");
    let lines: usize = printed.iter().map(Vec::len).sum();
    rig.wait_healthy(CONVERGE_TIMEOUT);
    let (lost, dup) = rig.settle("s", &printed, CONVERGE_TIMEOUT).await;
    let converged = healed.elapsed();
    let files_lost = rig.files_lost("before-fault", &files);
    // A restored secret is a new version: csagent applies it like a rotation, which
    // is a needed restart for that developer only. The others must be untouched.
    let after = rig.incarnations();
    let needless = restarted(&before[1..], &after[1..]);
    row(
        "a developer's password secret deleted, then restored",
        lines,
        lost,
        dup,
        files_lost,
        needless,
        converged,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_device_missing_at_start_then_attached() {
    let mut rig = Rig::new("flt-dev", 2, true).await;
    let link = rig.dir.path().join("by-id").join(NVME_NAME);
    std::os::unix::fs::symlink(rig.disk.path(), &link).expect("attach");
    rig.start();
    rig.daemon().wait_notify("READY=1", Duration::from_secs(90));
    rig.wait_healthy(Duration::from_secs(60));
    let files = rig.write_files("before-fault");

    // Power off: the agent stops, the containers stop, the volume goes away.
    rig.daemon().signal(Signal::SIGTERM);
    if let Some(mut d) = rig.daemon.take() {
        let _ = d.child.wait();
    }
    for dev in &rig.devs {
        run("docker", &["stop", "-t", "5", &rig.container(dev)]);
    }
    run("umount", &[path_str(&rig.dir.path().join("data"))]);
    std::fs::remove_file(&link).expect("detach");

    // Boot: the agent starts before the volume is attached, and waits for it.
    rig.start();
    let log_has_wait = |rig: &Rig| rig.daemon().log().contains("waiting for volume");
    let start = Instant::now();
    while !log_has_wait(&rig) && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        log_has_wait(&rig),
        "the agent waits for the volume:\n{}",
        rig.daemon().log()
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    std::os::unix::fs::symlink(rig.disk.path(), &link).expect("attach");
    let healed = Instant::now();
    rig.daemon().wait_notify("READY=1", CONVERGE_TIMEOUT);
    rig.wait_healthy(CONVERGE_TIMEOUT);
    let printed = rig.flood("v", 8).join().expect("flood");
    let lines: usize = printed.iter().map(Vec::len).sum();
    let (lost, dup) = rig.settle("v", &printed, CONVERGE_TIMEOUT).await;
    let converged = healed.elapsed();
    let files_lost = rig.files_lost("before-fault", &files);
    // Every container was stopped by the power-off: starting them is needed.
    row(
        "data device missing at start, then attached",
        lines,
        lost,
        dup,
        files_lost,
        0,
        converged,
    );
}

/// (unix second, samples) of the agent's heartbeat since `since`, per second, oldest first.
async fn heartbeats(namespace: &str, since: SystemTime) -> Vec<(i64, f64)> {
    let cw = aws_sdk_cloudwatch::Client::new(&aws().await);
    let metric = Metric::builder()
        .namespace(namespace)
        .metric_name(csagent_contract::metrics::AGENT_HEARTBEAT)
        .dimensions(
            Dimension::builder()
                .name(csagent_contract::metrics::DIM_INSTANCE)
                .value(INSTANCE)
                .build(),
        )
        .build();
    let query = MetricDataQuery::builder()
        .id("h")
        .metric_stat(
            MetricStat::builder()
                .metric(metric)
                .period(1)
                .stat("SampleCount")
                .build(),
        )
        .build();
    let out = cw
        .get_metric_data()
        .start_time(DateTime::from(since))
        .end_time(DateTime::from(SystemTime::now() + Duration::from_secs(3)))
        .metric_data_queries(query)
        .send()
        .await
        .expect("GetMetricData");
    let r = out.metric_data_results().first().expect("one result");
    let mut points: Vec<(i64, f64)> = r
        .timestamps()
        .iter()
        .map(|t| t.secs())
        .zip(r.values().iter().copied())
        .collect();
    points.sort_by_key(|p| p.0);
    points
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// An EC2 stop and start (the schedule's or the idle stop's), emulated: systemd stops the
/// agent (SIGTERM) while lines printed just before are still on their way, Docker stops the
/// containers, the volume goes away (unmounted); at boot the agent starts with the volume
/// unmounted and the containers stopped (`docker stop` marks them stopped by hand, so dockerd
/// does not start them: the agent must). Every line printed before the stop and after the
/// start arrives exactly once, the same containers run again on the volume with the files,
/// and the heartbeat metric resumes (at most one datum per second: nothing sent twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_stopped_and_started_like_ec2() {
    let mut rig = Rig::new("flt-stop", 2, false).await;
    let namespace = rig.enable_metrics();
    let t0 = SystemTime::now();
    rig.start();
    rig.daemon().wait_notify("READY=1", Duration::from_secs(90));
    rig.wait_healthy(Duration::from_secs(60));
    let files = rig.write_files("before-fault");
    let before = rig.incarnations();
    assert!(before.iter().all(Option::is_some), "{before:?}");

    // Printed right before the stop: the agent gets SIGTERM with some of it unshipped.
    let early = rig.flood("b", 8).join().expect("flood");
    let exit = rig.stop();
    let stopped_at = SystemTime::now();
    assert!(exit.success(), "the agent exits 0 on SIGTERM: {exit:?}");
    // How much the agent had not shipped when it stopped (the restart must ship it).
    let (unshipped_at_stop, _) = rig.count("b", &early).await;
    for dev in &rig.devs {
        run("docker", &["stop", "-t", "5", &rig.container(dev)]);
    }
    let mount = rig.dir.path().join("data");
    run("umount", &[path_str(&mount)]);
    tokio::time::sleep(Duration::from_secs(4)).await;

    // Boot.
    let started_at = SystemTime::now();
    let started = Instant::now();
    rig.start();
    rig.daemon().wait_notify("READY=1", CONVERGE_TIMEOUT);
    rig.wait_healthy(CONVERGE_TIMEOUT);
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    assert!(
        mounts
            .lines()
            .any(|l| l.split(' ').nth(1) == Some(path_str(&mount))),
        "the agent mounted the volume again"
    );
    let late = rig.flood("a", 8).join().expect("flood");
    let (lost_b, dup_b) = rig.settle("b", &early, CONVERGE_TIMEOUT).await;
    let (lost_a, dup_a) = rig.settle("a", &late, CONVERGE_TIMEOUT).await;
    let converged = started.elapsed();
    let files_lost = rig.files_lost("before-fault", &files);
    // The stopped containers are started again, not recreated: a recreation would be needless.
    let after = rig.incarnations();
    let recreated = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b.as_ref().map(|i| &i.id) != a.as_ref().map(|i| &i.id))
        .count();

    // Metrics resume after the start; nothing is sent twice.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let points = heartbeats(&namespace, t0).await;
    let (off_from, off_to) = (unix(stopped_at), unix(started_at));
    let before_stop = points.iter().filter(|p| p.0 < off_from).count();
    let during = points
        .iter()
        .filter(|p| p.0 > off_from && p.0 < off_to)
        .count();
    let after_start = points.iter().filter(|p| p.0 >= off_to).count();
    let doubled: Vec<&(i64, f64)> = points.iter().filter(|p| p.1 > 1.0).collect();
    eprintln!("lines not yet shipped when the agent stopped: {unshipped_at_stop}");
    eprintln!(
        "heartbeats: {before_stop} before the stop, {during} while off, {after_start} after the start; stopped {:?}, converged {converged:?}",
        stopped_at.duration_since(t0).unwrap_or_default()
    );
    assert!(before_stop > 0, "heartbeats before the stop: {points:?}");
    assert_eq!(during, 0, "no heartbeat while the host is off: {points:?}");
    assert!(
        after_start > 0,
        "heartbeats resume after the start: {points:?}"
    );
    assert!(
        doubled.is_empty(),
        "a second with two heartbeats: {doubled:?}"
    );

    let lines = early.iter().chain(&late).map(Vec::len).sum();
    row(
        "host stopped and started (EC2 stop/start, scheduled or idle)",
        lines,
        lost_b + lost_a,
        dup_b + dup_a,
        files_lost,
        recreated,
        converged,
    );
}
