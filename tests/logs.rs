//! Container logs to CloudWatch Logs against the real Docker engine and moto:
//! nothing lost, nothing twice — through restarts, SIGKILLs, an outage, long and
//! invalid lines and a burst — and every PutLogEvents call within the limits.
//!
//! Each test has its own project (so its own log groups), its own developers and
//! containers, and a config that lists only those developers, so tests running
//! side by side never ship each other's containers.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_cloudwatchlogs::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_cloudwatchlogs::config::{ConfigBag, Intercept};
use aws_sdk_cloudwatchlogs::operation::put_log_events::PutLogEventsInput;
use bollard::Docker;
use common::cwlogs::*;
use common::*;
use csagent::aws::Identity;
use csagent::config::Config;
use csagent::logs::{Shipper, ShipperOptions};
use tokio::sync::watch;

const INSTANCE: &str = "i-0123456789abcdef0";
/// The child-process mode of this test binary (see `ship_logs_child`).
const CHILD_ENV: &str = "CSAGENT_LOGS_TEST_CHILD_CONFIG";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A config shipping only `developers`, with state under `state_dir`.
fn config(project: &str, developers: &[&str], state_dir: &Path, endpoint: &str) -> Config {
    let devs: String = developers
        .iter()
        .map(|d| format!("[[developer]]\nname = \"{d}\"\n"))
        .collect();
    let text = format!(
        r#"project = "{project}"
region = "{REGION}"
instance_id = "{INSTANCE}"
[aws]
endpoint_url = "{endpoint}"
[volume]
device = "/dev/null"
[logs]
retention_days = 7
[agent]
state_dir = "{}"
{devs}"#,
        state_dir.display()
    );
    Config::from_toml(&text, Path::new("logs-test.toml")).expect("test config is valid")
}

fn identity() -> Identity {
    Identity {
        region: REGION.to_string(),
        instance_id: INSTANCE.to_string(),
    }
}

/// What one PutLogEvents call carried.
#[derive(Debug, Clone)]
struct PutCall {
    events: usize,
    /// As CloudWatch counts it: message bytes + 26 per event.
    bytes: usize,
    chronological: bool,
    span_ms: i64,
    longest_message: usize,
}

/// Records every PutLogEvents the shipper sends.
#[derive(Debug, Clone, Default)]
struct Recorder {
    calls: Arc<Mutex<Vec<PutCall>>>,
}

impl Recorder {
    fn calls(&self) -> Vec<PutCall> {
        self.calls.lock().expect("recorder lock").clone()
    }
}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "PutLogEventsRecorder"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if let Some(input) = context.input().downcast_ref::<PutLogEventsInput>() {
            let events = input.log_events();
            let ts: Vec<i64> = events.iter().map(|e| e.timestamp()).collect();
            let call = PutCall {
                events: events.len(),
                bytes: events.iter().map(|e| e.message().len() + 26).sum(),
                chronological: ts.windows(2).all(|w| w[0] <= w[1]),
                span_ms: ts.last().unwrap_or(&0) - ts.first().unwrap_or(&0),
                longest_message: events.iter().map(|e| e.message().len()).max().unwrap_or(0),
            };
            self.calls.lock().expect("recorder lock").push(call);
        }
        Ok(())
    }
}

/// A CloudWatch Logs client for `endpoint` with test credentials and bounded
/// timeouts (like the agent's), optionally recording puts.
async fn logs_client(endpoint: &str, recorder: Option<Recorder>) -> aws_sdk_cloudwatchlogs::Client {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_cloudwatchlogs::config::Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "csagent-tests",
        ))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(20))
                .operation_timeout(Duration::from_secs(60))
                .build(),
        )
        .load()
        .await;
    let mut builder = aws_sdk_cloudwatchlogs::config::Builder::from(&sdk);
    if let Some(r) = recorder {
        builder = builder.interceptor(r);
    }
    aws_sdk_cloudwatchlogs::Client::from_conf(builder.build())
}

/// Short delays so tests are quick; the logic is the agent's.
fn test_options() -> ShipperOptions {
    ShipperOptions {
        flush_interval: Duration::from_millis(300),
        quiet_flush: Duration::from_millis(100),
        flush_timeout: Duration::from_secs(5),
        buffer_bytes: 4 * 1024 * 1024,
        backoff: csagent::retry::Backoff::new(Duration::from_millis(100), Duration::from_secs(3)),
        readback_settle: Duration::from_millis(200),
    }
}

/// A shipper running in this process; stopped (and awaited) by `stop`.
struct Running {
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), csagent::logs::LogsError>>,
    status: csagent::logs::LogsStatusHandle,
}

impl Running {
    async fn start(
        docker: Docker,
        client: aws_sdk_cloudwatchlogs::Client,
        config: &Config,
        options: ShipperOptions,
    ) -> Running {
        let shipper = Shipper::new(docker, client, config, &identity()).with_options(options);
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
            .expect("shipper task")
            .expect("shipper run");
    }
}

fn group_of(config: &Config, developer: &str) -> String {
    config.render(&config.logs.group, developer)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// Numbered lines arrive exactly once, in order; lines printed later follow; a
/// recreated container (new id, same developer) continues in the same stream;
/// the group gets its retention; status reports what was shipped; a restarted
/// shipper resumes from its checkpoint; a restarted container is followed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbered_lines_in_order_and_recreated_container_continues() {
    let docker = docker().await;
    let dev = unique("lg");
    let state = tempfile::tempdir().expect("tempdir");
    let config = config(&unique("logs-order"), &[&dev], state.path(), &moto_url());
    let group = group_of(&config, &dev);
    let client = logs_client(&moto_url(), None).await;

    // Started before the container: discovery sees it through the event stream.
    let shipper = Running::start(docker.clone(), client.clone(), &config, test_options()).await;
    let c = TestContainer::start(
        &docker,
        &config.project,
        &dev,
        &[
            ("FAKE_PRINT_LINES", "1000".into()),
            ("FAKE_PRINT_PREFIX", "n ".into()),
        ],
    )
    .await;
    c.print(500, "n x").await; // "n x1".."n x500"
    let got = wait_for_lines(
        &client,
        &group,
        INSTANCE,
        "n ",
        1500,
        Duration::from_secs(60),
    )
    .await;
    let mut want = numbered("n ", 1..=1000);
    want.extend(numbered("n x", 1..=500));
    assert_exactly_once(&got, &want);

    // Recreated: the old container goes, a new one for the same developer comes.
    c.remove().await;
    let c2 = TestContainer::start(
        &docker,
        &config.project,
        &dev,
        &[
            ("FAKE_PRINT_LINES", "300".into()),
            ("FAKE_PRINT_PREFIX", "n y".into()),
        ],
    )
    .await;
    let got = wait_for_lines(
        &client,
        &group,
        INSTANCE,
        "n ",
        1800,
        Duration::from_secs(60),
    )
    .await;
    want.extend(numbered("n y", 1..=300));
    assert_exactly_once(&got, &want);
    let all = read_stream(&client, &group, INSTANCE).await;
    assert_eq!(
        all.iter()
            .filter(|m| m.contains("HTTP server listening"))
            .count(),
        2,
        "both containers' first lines are in the one stream"
    );

    let groups = client
        .describe_log_groups()
        .log_group_name_prefix(&group)
        .send()
        .await
        .expect("describe log groups");
    assert_eq!(groups.log_groups()[0].retention_in_days(), Some(7));

    let status = shipper.status.snapshot();
    let d = &status.developers[&dev];
    assert_eq!(d.shipped_events, 1802, "{d:?}");
    assert_eq!(d.stream, INSTANCE);
    assert_eq!(d.group, group);
    assert_eq!(d.buffered_events, 0);
    assert_eq!(d.lag_seconds, 0.0);
    assert_eq!(d.rejected_too_old + d.rejected_too_new, 0);

    shipper.stop().await;
    let checkpoint = state.path().join("logs").join(format!("{}.json", c2.id));
    let cp: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&checkpoint).expect("checkpoint written"))
            .expect("checkpoint is JSON");
    assert!(cp["inflight"].is_null(), "{cp}");
    assert!(cp["position"]["ts_ns"].as_i64().unwrap_or(0) > 0, "{cp}");

    // A restarted shipper resumes from the checkpoint: nothing shipped twice,
    // and lines written while it was down arrive.
    c2.print(200, "n z").await;
    let shipper = Running::start(docker.clone(), client.clone(), &config, test_options()).await;
    let got = wait_for_lines(
        &client,
        &group,
        INSTANCE,
        "n ",
        2000,
        Duration::from_secs(60),
    )
    .await;
    want.extend(numbered("n z", 1..=200));
    tokio::time::sleep(Duration::from_secs(1)).await; // would any repeat show up?
    assert_exactly_once(&lines_with(&client, &group, INSTANCE, "n ").await, &want);
    assert_eq!(got.len(), 2000);

    // The same container stopped and started again (same id): followed again.
    docker
        .restart_container(&c2.id, None)
        .await
        .expect("restart the container");
    c2.wait_http().await;
    c2.print(100, "n r").await;
    // It prints its FAKE_PRINT_LINES again at start, then the new lines.
    want.extend(numbered("n y", 1..=300));
    want.extend(numbered("n r", 1..=100));
    let got = wait_for_lines(
        &client,
        &group,
        INSTANCE,
        "n ",
        2400,
        Duration::from_secs(60),
    )
    .await;
    assert_exactly_once(&got, &want);
    shipper.stop().await;
    c2.remove().await;
}

/// A 600 KiB line arrives as three events that join back to it; invalid UTF-8
/// is replaced, not dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_line_is_split_and_invalid_utf8_replaced() {
    let docker = docker().await;
    let dev = unique("lg");
    let state = tempfile::tempdir().expect("tempdir");
    let config = config(&unique("logs-long"), &[&dev], state.path(), &moto_url());
    let group = group_of(&config, &dev);
    let recorder = Recorder::default();
    let client = logs_client(&moto_url(), Some(recorder.clone())).await;
    let c = TestContainer::start(&docker, &config.project, &dev, &[]).await;
    let shipper = Running::start(docker.clone(), client.clone(), &config, test_options()).await;

    let long: String = (0..600 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let mut body = Vec::new();
    body.extend_from_slice(b"before\n");
    body.extend_from_slice(long.as_bytes());
    body.extend_from_slice(b"\nabc\xff\xfedef\n\xe2\x82\nafter\n");
    c.print_raw(&body).await;

    let start = Instant::now();
    let all = loop {
        let all = read_stream(&client, &group, INSTANCE).await;
        if all.iter().any(|m| m == "after") || start.elapsed() > Duration::from_secs(60) {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let from = all
        .iter()
        .position(|m| m == "before")
        .expect("the line before arrived");
    let got = &all[from..];
    assert_eq!(
        got.len(),
        1 + 3 + 3,
        "{:?}",
        got.iter().map(|m| m.len()).collect::<Vec<_>>()
    );
    let lens: Vec<usize> = got[1..4].iter().map(|m| m.len()).collect();
    assert_eq!(
        lens,
        vec![262_118, 262_118, 90_164],
        "split at 256 KiB - 26 bytes"
    );
    assert!(
        got[1..4].concat() == long,
        "the pieces join back to the line"
    );
    assert_eq!(got[4], "abc\u{FFFD}\u{FFFD}def");
    assert!(
        !got[5].is_empty() && got[5].chars().all(|c| c == '\u{FFFD}'),
        "a truncated character is replaced, the line kept: {:?}",
        got[5]
    );
    assert_eq!(got[6], "after");
    for call in recorder.calls() {
        assert!(call.longest_message <= 262_118, "{call:?}");
        assert!(call.bytes <= 1_048_576, "{call:?}");
    }
    shipper.stop().await;
    c.remove().await;
}

/// 50,000 lines at once, then 20,000 long ones: every PutLogEvents call stays
/// within the limits (count, bytes + 26 each, order, span), both the count and
/// the byte limit are reached, and every line arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_50000_lines_obeys_the_limits() {
    let docker = docker().await;
    let dev = unique("lg");
    let state = tempfile::tempdir().expect("tempdir");
    let config = config(&unique("logs-burst"), &[&dev], state.path(), &moto_url());
    let group = group_of(&config, &dev);
    let recorder = Recorder::default();
    let client = logs_client(&moto_url(), Some(recorder.clone())).await;
    // Longer flush times, so batches close on the limits, not on time.
    let options = ShipperOptions {
        flush_interval: Duration::from_secs(3),
        quiet_flush: Duration::from_secs(3),
        ..test_options()
    };
    let shipper = Running::start(docker.clone(), client.clone(), &config, options).await;
    // Printed as fast as the process can, at start.
    let c = TestContainer::start(
        &docker,
        &config.project,
        &dev,
        &[
            ("FAKE_PRINT_LINES", "50000".into()),
            ("FAKE_PRINT_PREFIX", "b ".into()),
        ],
    )
    .await;
    let long_prefix = format!("L{} ", "x".repeat(98)); // ~105 bytes a line: bytes bind first
    c.print(20_000, &long_prefix).await;

    let got = wait_for_lines(
        &client,
        &group,
        INSTANCE,
        "b ",
        50_000,
        Duration::from_secs(90),
    )
    .await;
    assert_exactly_once(&got, &numbered("b ", 1..=50_000));
    let got = wait_for_lines(
        &client,
        &group,
        INSTANCE,
        "L",
        20_000,
        Duration::from_secs(60),
    )
    .await;
    assert_exactly_once(&got, &numbered(&long_prefix, 1..=20_000));

    let calls = recorder.calls();
    for call in &calls {
        assert!(call.events >= 1 && call.events <= 10_000, "{call:?}");
        assert!(call.bytes <= 1_048_576, "{call:?}");
        assert!(call.chronological, "{call:?}");
        assert!(call.span_ms < 24 * 3600 * 1000, "{call:?}");
    }
    assert!(
        calls.iter().any(|c| c.events == 10_000),
        "the 10,000-event limit was reached: {calls:?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.bytes > 1_048_576 - 200 && c.events < 10_000),
        "the byte limit was reached: {calls:?}"
    );
    assert!(
        calls.iter().map(|c| c.events).sum::<usize>() >= 70_001,
        "every line was sent"
    );
    shipper.stop().await;
    c.remove().await;
}

// ---------------------------------------------------------------------------
// SIGKILL: a child process runs the shipper
// ---------------------------------------------------------------------------

/// Not a test on its own: the SIGKILL test runs this test binary again with
/// `CSAGENT_LOGS_TEST_CHILD_CONFIG` set, and this runs the shipper until killed.
#[test]
fn ship_logs_child() {
    run_child_shipper(
        CHILD_ENV,
        identity(),
        test_options(),
        |endpoint| async move { logs_client(&endpoint, None).await },
    );
}

fn write_config_file(dir: &Path, project: &str, dev: &str, endpoint: &str) -> PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        "project = \"{project}\"\nregion = \"{REGION}\"\ninstance_id = \"{INSTANCE}\"\n[aws]\nendpoint_url = \"{endpoint}\"\n[volume]\ndevice = \"/dev/null\"\n[agent]\nstate_dir = \"{}\"\n[[developer]]\nname = \"{dev}\"\n",
        dir.join("state").display()
    );
    std::fs::write(&path, text).expect("write child config");
    path
}

/// The agent is killed with SIGKILL at random moments while a container writes
/// 20,000 lines, and restarted each time: every line arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_and_repeats_nothing() {
    let docker = docker().await;
    let dev = unique("lg");
    let dir = tempfile::tempdir().expect("tempdir");
    let project = unique("logs-kill");
    let config_path = write_config_file(dir.path(), &project, &dev, &moto_url());
    let config = Config::load(&config_path).expect("config");
    let group = group_of(&config, &dev);
    let client = logs_client(&moto_url(), None).await;
    let child_log = dir.path().join("child.log");

    let c = TestContainer::start(&docker, &config.project, &dev, &[]).await;
    let mut child = ShipperChild::spawn("ship_logs_child", CHILD_ENV, &config_path, &child_log);
    // The container writes 20,000 lines over ~8 s: 80 × 250.
    let writer = {
        let ip = c.ip;
        tokio::spawn(async move {
            for chunk in 0..80u64 {
                let path = format!("/print?count=250&prefix=k{}-", chunk);
                let resp = fake_code_server(ip, "GET", &path, b"").await;
                assert!(resp.contains(" 200 "), "{resp}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut kills = 0;
    while kills < 4 {
        let wait = rand::random_range(300..2500u64);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        child.kill();
        kills += 1;
        child = ShipperChild::spawn("ship_logs_child", CHILD_ENV, &config_path, &child_log);
    }
    writer.await.expect("writer");
    let got = wait_for_lines(
        &client,
        &group,
        INSTANCE,
        "k",
        20_000,
        Duration::from_secs(60),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got_again = lines_with(&client, &group, INSTANCE, "k").await;
    child.kill();
    let want: Vec<String> = (0..80u64)
        .flat_map(|chunk| numbered(&format!("k{chunk}-"), 1..=250))
        .collect();
    let log = std::fs::read_to_string(&child_log).unwrap_or_default();
    if got_again != want {
        eprintln!("child log:\n{log}");
    }
    // Which kills fell between a put and its checkpoint (settled by read-back).
    for line in log.lines().filter(|l| l.contains("in flight")) {
        eprintln!("{line}");
    }
    assert!(
        got.len() >= 20_000,
        "all lines arrived in time: {}",
        got.len()
    );
    assert_exactly_once(&got_again, &want);
    c.remove().await;
}

// ---------------------------------------------------------------------------
// CloudWatch outage: a TCP proxy in front of moto is cut and restored
// ---------------------------------------------------------------------------

/// Forwards 127.0.0.1:<port> to moto; `cut` drops every connection and refuses
/// new ones until `restore`, so moto keeps its state.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let accept = {
            let (up, conns) = (up.clone(), conns.clone());
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        drop(inbound); // refused: closed at once
                        continue;
                    }
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    conns.lock().expect("proxy lock").push(task.abort_handle());
                }
            })
        };
        Proxy {
            port,
            up,
            conns,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().expect("proxy lock").drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// CloudWatch unreachable for 30 s while the container writes, then back: every
/// line exactly once, the container untouched, the outage visible in status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudwatch_outage_loses_and_repeats_nothing() {
    let outage = Duration::from_secs(30);
    let docker = docker().await;
    let dev = unique("lg");
    let state = tempfile::tempdir().expect("tempdir");
    let proxy = Proxy::start(moto_addr()).await;
    let config = config(&unique("logs-outage"), &[&dev], state.path(), &proxy.url());
    let group = group_of(&config, &dev);
    let client = logs_client(&proxy.url(), None).await;
    let direct = logs_client(&moto_url(), None).await;
    let c = TestContainer::start(&docker, &config.project, &dev, &[]).await;
    let shipper = Running::start(docker.clone(), client, &config, test_options()).await;

    c.print(2000, "o a").await;
    let got = wait_for_lines(
        &direct,
        &group,
        INSTANCE,
        "o a",
        2000,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(got.len(), 2000, "shipping works before the outage");

    proxy.cut();
    let start = Instant::now();
    let mut written = 0;
    while start.elapsed() < outage {
        written += 1;
        // The container keeps writing and serving while CloudWatch is gone.
        c.print(300, &format!("o b{written}-")).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let d = shipper.status.snapshot().developers[&dev].clone();
    assert!(
        d.retries > 0 && d.last_error.is_some(),
        "the outage shows in status: {d:?}"
    );
    assert!(d.buffered_events > 0 && d.lag_seconds > 1.0, "{d:?}");
    proxy.restore();
    c.print(2000, "o c").await;

    let mut want = numbered("o a", 1..=2000);
    for i in 1..=written {
        want.extend(numbered(&format!("o b{i}-"), 1..=300));
    }
    want.extend(numbered("o c", 1..=2000));
    let got = wait_for_lines(
        &direct,
        &group,
        INSTANCE,
        "o ",
        want.len(),
        Duration::from_secs(60),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_exactly_once(&lines_with(&direct, &group, INSTANCE, "o ").await, &want);
    assert_eq!(got.len(), want.len());
    let d = shipper.status.snapshot().developers[&dev].clone();
    assert!(d.last_error.is_none(), "recovered: {d:?}");
    assert_eq!(d.buffered_events, 0, "{d:?}");
    shipper.stop().await;
    c.remove().await;
}

// ---------------------------------------------------------------------------
// ENOSPC on the state directory: a small tmpfs, filled
// ---------------------------------------------------------------------------

/// A tmpfs of `size` mounted on a fresh directory; unmounted on drop.
struct SmallTmpfs {
    dir: tempfile::TempDir,
}

impl SmallTmpfs {
    fn new(size: &str) -> SmallTmpfs {
        require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
                path_str(dir.path()),
            ],
        );
        SmallTmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `filler` until the filesystem is full.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).expect("create filler");
        let chunk = vec![0u8; 4096];
        loop {
            match f.write_all(&chunk).and_then(|()| f.sync_all()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(28) => return path,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .output();
    }
}

/// The state directory fills up (ENOSPC) while a container floods its log and
/// the shipper's buffer is small: shipping pauses without losing anything, the
/// checkpoint error shows in status, and once space is freed the shipper
/// recovers by itself, every line exactly once, the container untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enospc_on_the_state_directory_pauses_and_recovers() {
    let tmpfs = SmallTmpfs::new("1m");
    let docker = docker().await;
    let dev = unique("lg");
    let config = config(&unique("logs-enospc"), &[&dev], tmpfs.path(), &moto_url());
    let group = group_of(&config, &dev);
    let client = logs_client(&moto_url(), None).await;
    let c = TestContainer::start(&docker, &config.project, &dev, &[]).await;
    let before = docker
        .inspect_container(&c.id, None)
        .await
        .expect("inspect");
    // A small buffer, so the follower is held back by it during the fault.
    let options = ShipperOptions {
        buffer_bytes: 64 * 1024,
        ..test_options()
    };
    let shipper = Running::start(docker.clone(), client.clone(), &config, options).await;

    c.print(1000, "e a").await;
    let got = wait_for_lines(
        &client,
        &group,
        INSTANCE,
        "e a",
        1000,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(got.len(), 1000, "shipping works before the disk is full");

    let filler = tmpfs.fill();
    for i in 1..=5 {
        c.print(2000, &format!("e b{i}-")).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Status shows why shipping waits.
    let start = Instant::now();
    let d = loop {
        let d = shipper.status.snapshot().developers[&dev].clone();
        if d.checkpoint_error.is_some() || start.elapsed() > Duration::from_secs(20) {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let error = d.checkpoint_error.clone().unwrap_or_default();
    assert!(
        error.contains("No space left on device"),
        "the checkpoint error shows in status: {d:?}"
    );
    assert!(d.buffered_events > 0, "lines wait in the buffer: {d:?}");
    // It stays paused (nothing is dropped to make progress) while the disk is full.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let shipped_while_full = lines_with(&client, &group, INSTANCE, "e b").await.len();
    assert!(
        shipped_while_full < 10_000,
        "not everything can be shipped without checkpoints: {shipped_while_full}"
    );
    let d = shipper.status.snapshot().developers[&dev].clone();
    assert!(d.checkpoint_error.is_some(), "{d:?}");

    // Space comes back: the shipper recovers without help.
    std::fs::remove_file(&filler).expect("free the space");
    let freed = Instant::now();
    c.print(1000, "e c").await;
    let mut want = numbered("e a", 1..=1000);
    for i in 1..=5 {
        want.extend(numbered(&format!("e b{i}-"), 1..=2000));
    }
    want.extend(numbered("e c", 1..=1000));
    let got = wait_for_lines(
        &client,
        &group,
        INSTANCE,
        "e ",
        want.len(),
        Duration::from_secs(60),
    )
    .await;
    let converged = freed.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await; // would a repeat show up?
    let got_again = lines_with(&client, &group, INSTANCE, "e ").await;
    let lost = want.iter().filter(|w| !got_again.contains(w)).count();
    let dup = got_again.len()
        - got_again
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len();
    let after = docker
        .inspect_container(&c.id, None)
        .await
        .expect("inspect");
    let restarts = usize::from(
        after.state.as_ref().and_then(|s| s.started_at.clone())
            != before.state.as_ref().and_then(|s| s.started_at.clone()),
    ) + after.restart_count.unwrap_or(0) as usize;
    // No developer files are involved in this fault: that column is 0 by construction.
    report_fault(
        "ENOSPC on the state directory",
        want.len(),
        lost,
        dup,
        0,
        restarts,
        converged,
    );
    assert_eq!(got.len(), want.len());
    assert_exactly_once(&got_again, &want);
    assert_eq!((lost, dup, restarts), (0, 0, 0));
    let d = shipper.status.snapshot().developers[&dev].clone();
    assert!(d.checkpoint_error.is_none(), "recovered: {d:?}");
    assert!(d.last_error.is_none(), "recovered: {d:?}");
    assert_eq!(d.buffered_events, 0, "{d:?}");
    shipper.stop().await;
    c.remove().await;
}
