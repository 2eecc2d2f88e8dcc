//! Metrics against moto (CloudWatch), the real Docker engine and a loop-device
//! mount: every metric with its dimensions and plausible values, numbers that match
//! `df` and `docker stats`, one PutMetricData call per interval, a stopped
//! container, and a CloudWatch outage whose backlog arrives with its original
//! timestamps.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatch::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_cloudwatch::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_cloudwatch::error::BoxError;
use aws_sdk_cloudwatch::operation::put_metric_data::PutMetricDataInput;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
use common::*;
use csagent::aws::Identity;
use csagent::config::Config;
use csagent::metrics::{AgentReadings, Metrics};

/// Records the number of datums of every PutMetricData call the client makes.
#[derive(Debug, Clone, Default)]
struct PutCounter(Arc<Mutex<Vec<usize>>>);

impl PutCounter {
    fn calls(&self) -> Vec<usize> {
        self.0.lock().expect("counter lock").clone()
    }
}

impl Intercept for PutCounter {
    fn name(&self) -> &'static str {
        "PutCounter"
    }

    fn read_before_serialization(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(input) = context.input().downcast_ref::<PutMetricDataInput>() {
            self.0
                .lock()
                .expect("counter lock")
                .push(input.metric_data().len());
        }
        Ok(())
    }
}

/// A CloudWatch client for `url` that counts PutMetricData calls.
async fn counting_client(moto: &MotoServer, url: &str) -> (aws_sdk_cloudwatch::Client, PutCounter) {
    let counter = PutCounter::default();
    let conf = aws_sdk_cloudwatch::config::Builder::from(&moto.sdk_config().await)
        .endpoint_url(url)
        .interceptor(counter.clone())
        .build();
    (aws_sdk_cloudwatch::Client::from_conf(conf), counter)
}

fn config(
    prefix: &str,
    namespace: &str,
    mount_point: &Path,
    developers: &[(String, u16)],
) -> Config {
    config_with_interval(prefix, namespace, mount_point, developers, "1s")
}

fn config_with_interval(
    prefix: &str,
    namespace: &str,
    mount_point: &Path,
    developers: &[(String, u16)],
    interval: &str,
) -> Config {
    let mut toml = format!(
        "project = \"{prefix}\"\nregion = \"{REGION}\"\ninstance_id = \"{instance}\"\n\
         [volume]\ndevice = \"/dev/null\"\nmount_point = \"{}\"\n\
         [metrics]\nnamespace = \"{namespace}\"\ninterval = \"{interval}\"\n",
        mount_point.display(),
        instance = instance_id(),
    );
    for (name, port) in developers {
        toml.push_str(&format!(
            "[[developer]]\nname = \"{name}\"\nport = {port}\n"
        ));
    }
    Config::from_toml(&toml, Path::new("metrics-test.toml")).expect("test config is valid")
}

/// An instance id no other test in this run (or a parallel run) uses.
fn instance_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("i-{:017x}", (u64::from(std::process::id()) << 16) | n)
}

fn identity(config: &Config) -> Identity {
    Identity {
        region: REGION.to_string(),
        instance_id: config.instance_id.clone().expect("instance id in config"),
    }
}

/// Reads back what moto stored.
struct Reader {
    cw: aws_sdk_cloudwatch::Client,
    namespace: String,
    instance: String,
    since: SystemTime,
}

impl Reader {
    /// InstanceId first, then `extra`, in the order the agent sends them (moto's
    /// GetMetricData compares dimension lists with a broken sort, so order matters).
    fn dims_in_order(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut d = vec![("InstanceId".to_string(), self.instance.clone())];
        d.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        d
    }

    fn dims(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut d = self.dims_in_order(extra);
        d.sort();
        d
    }

    /// Every metric in the namespace as (name, sorted dimensions).
    async fn list(&self) -> BTreeSet<(String, Vec<(String, String)>)> {
        let mut out = BTreeSet::new();
        let mut token = None;
        loop {
            let page = self
                .cw
                .list_metrics()
                .namespace(&self.namespace)
                .set_next_token(token)
                .send()
                .await
                .expect("ListMetrics");
            for m in page.metrics() {
                let mut dims: Vec<(String, String)> = m
                    .dimensions()
                    .iter()
                    .map(|d| {
                        (
                            d.name().unwrap_or_default().to_string(),
                            d.value().unwrap_or_default().to_string(),
                        )
                    })
                    .collect();
                dims.sort();
                out.insert((m.metric_name().unwrap_or_default().to_string(), dims));
            }
            token = page.next_token().map(String::from);
            if token.is_none() {
                return out;
            }
        }
    }

    /// Datapoints of one metric (exact dimensions), one per second, oldest first:
    /// (unix seconds, value).
    async fn series(&self, name: &str, extra: &[(&str, &str)]) -> Vec<(i64, f64)> {
        let mut metric = Metric::builder()
            .namespace(&self.namespace)
            .metric_name(name);
        for (k, v) in self.dims_in_order(extra) {
            metric = metric.dimensions(Dimension::builder().name(k).value(v).build());
        }
        let query = MetricDataQuery::builder()
            .id("q")
            .metric_stat(
                MetricStat::builder()
                    .metric(metric.build())
                    .period(1)
                    .stat("Maximum")
                    .build(),
            )
            .build();
        let start = self.since - Duration::from_secs(2);
        let end = SystemTime::now() + Duration::from_secs(3);
        let out = self
            .cw
            .get_metric_data()
            .start_time(DateTime::from(start))
            .end_time(DateTime::from(end))
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

    async fn latest(&self, name: &str, extra: &[(&str, &str)]) -> f64 {
        let s = self.series(name, extra).await;
        s.last()
            .unwrap_or_else(|| panic!("no datapoint for {name} {extra:?}"))
            .1
    }
}

/// Containers made for a test; removed on drop, even when the test fails.
struct Containers(Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", name])
                .output();
        }
    }
}

/// A managed-looking container for `dev`, as the reconciler labels it.
fn start_container(project: &str, dev: &str, port: u16, memory: &str, env: &[&str]) -> String {
    let name = format!("code-server-{dev}");
    let mut args = vec![
        "run".to_string(),
        "-d".into(),
        "--name".into(),
        name.clone(),
        "--label".into(),
        "csagent.managed=true".into(),
        "--label".into(),
        format!("csagent.developer={dev}"),
        "--label".into(),
        format!("csagent.project={project}"),
        "--memory".into(),
        memory.into(),
        "--cpus".into(),
        "0.25".into(),
        "--health-cmd".into(),
        "curl -fsS -o /dev/null http://localhost:8080/healthz".into(),
        "--health-interval".into(),
        "1s".into(),
        "--health-retries".into(),
        "3".into(),
        "-p".into(),
        format!("127.0.0.1:{port}:8080"),
        "-e".into(),
        "PASSWORD=metrics-test".into(),
    ];
    for e in env {
        args.push("-e".into());
        args.push((*e).to_string());
    }
    args.push(TEST_IMAGE.into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run("docker", &refs);
    name
}

fn wait_healthy(names: &[String], timeout: Duration) {
    let start = Instant::now();
    loop {
        let states: Vec<String> = names
            .iter()
            .map(|n| {
                run(
                    "docker",
                    &["inspect", "-f", "{{.State.Health.Status}}", n.as_str()],
                )
                .trim()
                .to_string()
            })
            .collect();
        if states.iter().all(|s| s == "healthy") {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "containers not healthy within {timeout:?}: {states:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `docker stats --no-stream` MEM USAGE of `name`, in bytes.
fn docker_stats_mem(name: &str) -> f64 {
    let out = run(
        "docker",
        &["stats", "--no-stream", "--format", "{{.MemUsage}}", name],
    );
    let used = out.split('/').next().expect("MemUsage").trim();
    let split = used
        .find(|c: char| c.is_ascii_alphabetic())
        .expect("unit in MemUsage");
    let (num, unit) = used.split_at(split);
    let mult = match unit {
        "B" => 1.0,
        "KiB" | "kB" => 1024.0,
        "MiB" | "MB" => 1024.0 * 1024.0,
        "GiB" | "GB" => 1024.0 * 1024.0 * 1024.0,
        other => panic!("unexpected unit {other} in {out}"),
    };
    num.parse::<f64>().expect("MemUsage number") * mult
}

/// `df` for `path`: (used bytes, available bytes, Use% as printed).
fn df(path: &Path) -> (f64, f64, f64) {
    let out = run("df", &["-B1", "--output=used,avail,pcent", path_str(path)]);
    let line = out.lines().nth(1).expect("df data line");
    let f: Vec<&str> = line.split_whitespace().collect();
    (
        f[0].parse().expect("used"),
        f[1].parse().expect("avail"),
        f[2].trim_end_matches('%').parse().expect("pcent"),
    )
}

fn secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).expect("after epoch").as_secs() as i64
}

/// Waits until the wall clock is in a new second, so consecutive intervals get
/// distinct (whole-second) timestamps.
async fn next_second() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("epoch");
    let to_next = Duration::from_millis(1000 - u64::from(now.subsec_millis()) + 20);
    tokio::time::sleep(to_next).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_developers_one_call_every_metric_matching_df_and_docker_stats() {
    let prefix = unique("m").replace('-', "");
    let moto = MotoServer::start(&[]);
    let (cw, counter) = counting_client(&moto, &moto.url()).await;

    // The data mount: a real ext4 on a loop device with 20 MiB written.
    let disk = LoopDevice::new("64M");
    run("mkfs.ext4", &["-q", "-F", disk.path()]);
    let mount = disk.dir.path().join("mnt");
    std::fs::create_dir_all(&mount).expect("mount dir");
    run("mount", &[disk.path(), path_str(&mount)]);
    run(
        "dd",
        &[
            "if=/dev/urandom",
            &format!("of={}", mount.join("data.bin").display()),
            "bs=1M",
            "count=20",
            "status=none",
        ],
    );
    run("sync", &[]);

    // Eight developers; dev8 reports idle after 1 s, dev1 holds 40 MiB of shm,
    // dev2 burns CPU up to its limit.
    let base = port_block(8);
    let devs: Vec<(String, u16)> = (1..=8)
        .map(|i| (format!("{prefix}-d{i}"), base + i as u16 - 1))
        .collect();
    let mut containers = Containers(Vec::new());
    for (i, (dev, port)) in devs.iter().enumerate() {
        let memory = if i == 0 { "128m" } else { "48m" };
        let env: &[&str] = if i == 7 { &["FAKE_IDLE_AFTER=1"] } else { &[] };
        containers
            .0
            .push(start_container(&prefix, dev, *port, memory, env));
    }
    wait_healthy(&containers.0, Duration::from_secs(60));
    let c1 = containers.0[0].clone();
    run(
        "docker",
        &[
            "exec",
            &c1,
            "busybox",
            "dd",
            "if=/dev/zero",
            "of=/dev/shm/fill",
            "bs=1M",
            "count=40",
        ],
    );
    // ... and 20 MiB of file cache, which `docker stats` does not count.
    run(
        "docker",
        &[
            "exec",
            &c1,
            "busybox",
            "dd",
            "if=/dev/zero",
            "of=/tmp/cache",
            "bs=1M",
            "count=20",
        ],
    );
    run(
        "docker",
        &[
            "exec",
            "-d",
            &containers.0[1],
            "sh",
            "-c",
            "while :; do :; done",
        ],
    );
    tokio::time::sleep(Duration::from_millis(1500)).await; // dev8 goes idle

    let namespace = format!("csagent-test/{prefix}");
    let config = config(&prefix, &namespace, &mount, &devs);
    let ident = identity(&config);
    let mut metrics = Metrics::new(cw, docker().await, &config, &ident);
    let status = metrics.status_handle();
    let started = SystemTime::now();
    let extra = AgentReadings {
        secrets_staleness_seconds: 12.0,
        log_lag_seconds: Some(3.5),
        log_files_lost: Some(4),
        ..Default::default()
    };

    // --- One interval.
    let t = Instant::now();
    let n = metrics
        .collect_and_publish(&extra)
        .await
        .expect("first interval");
    eprintln!("first interval took {:?}", t.elapsed());
    assert_eq!(n, 68, "5 host + 8×7 developer + 2 rollups + 5 agent");
    assert_eq!(
        counter.calls(),
        vec![68],
        "one PutMetricData call, ≤ 1000 datums"
    );
    let s = status.snapshot();
    assert_eq!((s.put_calls, s.published_datums), (1, 68));
    assert_eq!((s.buffered_datums, s.dropped_datums), (0, 0));
    assert!(s.last_publish.is_some() && s.last_error.is_none(), "{s:?}");

    let reader = Reader {
        cw: aws_sdk_cloudwatch::Client::new(&moto.sdk_config().await),
        namespace: namespace.clone(),
        instance: ident.instance_id.clone(),
        since: started,
    };

    // Every metric, with exactly the right dimensions.
    let mount_s = mount.display().to_string();
    let mut expected = BTreeSet::new();
    for name in [
        "mem_used_percent",
        "developers_healthy",
        "developers_active",
        "agent_heartbeat",
        "secrets_staleness_seconds",
        "log_lag_seconds",
        "log_files_lost",
        "metrics_dropped",
    ] {
        expected.insert((name.to_string(), reader.dims(&[])));
    }
    for path in [mount_s.as_str(), "/"] {
        for name in ["disk_used_percent", "disk_free"] {
            expected.insert((name.to_string(), reader.dims(&[("path", path)])));
        }
    }
    for (dev, _) in &devs {
        for name in [
            "container_healthy",
            "container_running",
            "cpu_percent",
            "mem_used_bytes",
            "mem_used_percent",
            "restarts",
            "active",
        ] {
            expected.insert((name.to_string(), reader.dims(&[("Developer", dev)])));
        }
    }
    assert_eq!(reader.list().await, expected);

    // Host values.
    let host_mem = reader.latest("mem_used_percent", &[]).await;
    assert!(host_mem > 0.0 && host_mem < 100.0, "{host_mem}");
    let (used, avail, pcent) = df(&mount);
    let ours = reader
        .latest("disk_used_percent", &[("path", &mount_s)])
        .await;
    let exact = used / (used + avail) * 100.0;
    eprintln!("disk_used_percent {ours} vs df {pcent}% (exact {exact})");
    assert!(
        (ours - pcent).abs() <= 1.0 && (ours - exact).abs() < 0.5,
        "disk_used_percent {ours} vs df {pcent}% ({exact})"
    );
    assert!(ours > 25.0, "20 MiB on a 64 MiB filesystem: {ours}");
    let free = reader.latest("disk_free", &[("path", &mount_s)]).await;
    assert!(
        (free - avail).abs() <= avail * 0.01,
        "disk_free {free} vs df {avail}"
    );
    let root = reader.latest("disk_used_percent", &[("path", "/")]).await;
    let (_, _, root_pcent) = df(Path::new("/"));
    // df rounds Use% up; `/` is shared with concurrent builds, so allow a little more.
    assert!(
        (root - root_pcent).abs() <= 1.5,
        "/: {root} vs df {root_pcent}%"
    );

    // Per developer.
    for (i, (dev, _)) in devs.iter().enumerate() {
        let d = [("Developer", dev.as_str())];
        assert_eq!(reader.latest("container_running", &d).await, 1.0, "{dev}");
        assert_eq!(reader.latest("container_healthy", &d).await, 1.0, "{dev}");
        assert_eq!(reader.latest("restarts", &d).await, 0.0, "{dev}");
        let active = if i == 7 { 0.0 } else { 1.0 };
        assert_eq!(reader.latest("active", &d).await, active, "{dev}");
        let cpu = reader.latest("cpu_percent", &d).await;
        eprintln!("{dev} cpu_percent {cpu}");
        if i == 1 {
            assert!(
                cpu > 30.0 && cpu < 130.0,
                "busy {dev} at its 0.25 limit: {cpu}"
            );
        } else {
            assert!((0.0..30.0).contains(&cpu), "idle {dev}: {cpu}");
        }
        let bytes = reader.latest("mem_used_bytes", &d).await;
        let pct = reader.latest("mem_used_percent", &d).await;
        let limit = if i == 0 { 128.0 } else { 48.0 } * 1024.0 * 1024.0;
        assert!(bytes > 0.0 && bytes < limit, "{dev}: {bytes}");
        assert!(
            (pct - bytes / limit * 100.0).abs() < 0.01,
            "{dev}: {pct}% of {limit} vs {bytes}"
        );
    }
    // Memory matches `docker stats` (dev1 holds 40 MiB).
    let ours = reader
        .latest("mem_used_bytes", &[("Developer", &devs[0].0)])
        .await;
    let theirs = docker_stats_mem(&c1);
    eprintln!("dev1 mem_used_bytes {ours} vs docker stats {theirs}");
    assert!(ours > 40.0 * 1024.0 * 1024.0, "{ours}");
    assert!(
        (ours - theirs).abs() <= (theirs * 0.03).max(512.0 * 1024.0),
        "mem_used_bytes {ours} vs docker stats {theirs}"
    );
    // Tiny idle ones: the health check's curl (a few MiB, once a second) comes and
    // goes between our sample and docker's, hence the absolute slack.
    for (i, (dev, _)) in devs.iter().enumerate().skip(2).take(2) {
        let ours = reader.latest("mem_used_bytes", &[("Developer", dev)]).await;
        let theirs = docker_stats_mem(&containers.0[i]);
        assert!(
            (ours - theirs).abs() <= (theirs * 0.05).max(4.0 * 1024.0 * 1024.0),
            "{dev}: mem_used_bytes {ours} vs docker stats {theirs}"
        );
    }

    // Rollups and the agent's own.
    assert_eq!(reader.latest("developers_healthy", &[]).await, 8.0);
    assert_eq!(reader.latest("developers_active", &[]).await, 7.0);
    assert_eq!(reader.latest("agent_heartbeat", &[]).await, 1.0);
    assert_eq!(reader.latest("secrets_staleness_seconds", &[]).await, 12.0);
    assert_eq!(reader.latest("log_lag_seconds", &[]).await, 3.5);
    assert_eq!(reader.latest("log_files_lost", &[]).await, 4.0);
    assert_eq!(reader.latest("metrics_dropped", &[]).await, 0.0);

    // --- `docker stop` one: the next interval says running 0, healthy 0.
    let (dev3, _) = &devs[2];
    run("docker", &["stop", "-t", "2", &containers.0[2]]);
    next_second().await;
    let extra = AgentReadings {
        secrets_staleness_seconds: 13.0,
        log_lag_seconds: None,
        // Two more files lost since the first interval.
        log_files_lost: Some(6),
        ..Default::default()
    };
    let t = Instant::now();
    let n = metrics
        .collect_and_publish(&extra)
        .await
        .expect("second interval");
    eprintln!("second interval took {:?}", t.elapsed());
    assert_eq!(n, 67, "log_lag_seconds left out while unknown");
    assert_eq!(counter.calls(), vec![68, 67], "one call per interval");
    let lost = reader.series("log_files_lost", &[]).await;
    assert_eq!(
        lost.iter().map(|p| p.1).collect::<Vec<_>>(),
        vec![4.0, 2.0],
        "each interval sends the growth of the total"
    );
    let d3 = [("Developer", dev3.as_str())];
    let running = reader.series("container_running", &d3).await;
    assert_eq!(running.len(), 2, "{running:?}");
    assert_eq!(running[1].1, 0.0);
    assert_eq!(reader.latest("container_healthy", &d3).await, 0.0);
    assert_eq!(reader.latest("active", &d3).await, 0.0);
    assert_eq!(reader.latest("cpu_percent", &d3).await, 0.0);
    assert_eq!(reader.latest("developers_healthy", &[]).await, 7.0);
    // The busy one, now averaged over the interval from our own previous sample.
    let cpu = reader
        .latest("cpu_percent", &[("Developer", &devs[1].0)])
        .await;
    eprintln!("busy dev2 cpu_percent over the interval {cpu}");
    assert!(
        cpu > 30.0 && cpu < 130.0,
        "busy dev2 over the interval: {cpu}"
    );
    assert_eq!(reader.series("log_lag_seconds", &[]).await.len(), 1);
    drop(containers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_backlog_arrives_with_original_timestamps() {
    let prefix = unique("m").replace('-', "");
    let moto = MotoServer::start(&[]);
    let mut proxy = TcpProxy::start(([127, 0, 0, 1], moto.port).into()).await;
    let (cw, counter) = counting_client(&moto, &proxy.url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // One developer without a container: reported as not running.
    let namespace = format!("csagent-test/{prefix}");
    let config = config(
        &prefix,
        &namespace,
        dir.path(),
        &[(format!("{prefix}-d1"), free_port())],
    );
    let ident = identity(&config);
    let mut metrics = Metrics::new(cw, docker().await, &config, &ident);
    let status = metrics.status_handle();
    let started = SystemTime::now();
    let per_interval = 17; // 6 host/agent (no log lag) + 4 disk + 7 developer
    let extra = |i: u32| AgentReadings {
        secrets_staleness_seconds: f64::from(i),
        log_lag_seconds: None,
        ..Default::default()
    };

    // Interval 1: CloudWatch up.
    let mut windows = Vec::new();
    let before = secs(SystemTime::now());
    assert_eq!(
        metrics.collect_and_publish(&extra(1)).await.expect("up"),
        per_interval
    );
    windows.push((before, secs(SystemTime::now())));

    // Intervals 2 and 3: CloudWatch unreachable; datums wait.
    proxy.stop().await;
    for i in 2..=3 {
        next_second().await;
        let before = secs(SystemTime::now());
        let err = metrics
            .collect_and_publish(&extra(i))
            .await
            .expect_err("CloudWatch is down");
        windows.push((before, secs(SystemTime::now())));
        let s = status.snapshot();
        assert_eq!(s.buffered_datums, per_interval * (i as usize - 1), "{err}");
        assert!(s.last_error.is_some(), "{s:?}");
        assert_eq!(s.put_calls, 1);
    }

    // Interval 4: back; the backlog and this interval go in one call.
    proxy.resume().await;
    next_second().await;
    let before = secs(SystemTime::now());
    let sent = metrics
        .collect_and_publish(&extra(4))
        .await
        .expect("back up");
    windows.push((before, secs(SystemTime::now())));
    assert_eq!(sent, per_interval * 3);
    let s = status.snapshot();
    assert_eq!(
        (s.put_calls, s.buffered_datums, s.dropped_datums),
        (2, 0, 0)
    );
    assert!(s.last_error.is_none(), "{s:?}");
    assert_eq!(
        counter.calls().last().copied(),
        Some(per_interval * 3),
        "the backlog is one request"
    );

    // Every interval's datapoint is there, at the time it was collected, with the
    // value of that interval.
    let reader = Reader {
        cw: aws_sdk_cloudwatch::Client::new(&moto.sdk_config().await),
        namespace,
        instance: ident.instance_id.clone(),
        since: started,
    };
    let points = reader.series("secrets_staleness_seconds", &[]).await;
    assert_eq!(points.len(), 4, "{points:?}");
    for (k, ((t, v), (lo, hi))) in points.iter().zip(&windows).enumerate() {
        assert_eq!(*v, (k + 1) as f64, "{points:?}");
        assert!(
            lo <= t && t <= hi,
            "interval {} at {t}, collected in {lo}..={hi}",
            k + 1
        );
    }
    let beats = reader.series("agent_heartbeat", &[]).await;
    assert_eq!(
        beats.iter().map(|p| p.0).collect::<Vec<_>>(),
        points.iter().map(|p| p.0).collect::<Vec<_>>()
    );
    let d1 = format!("{prefix}-d1");
    let running = reader
        .series("container_running", &[("Developer", &d1)])
        .await;
    assert_eq!(
        running.iter().map(|p| p.1).collect::<Vec<_>>(),
        vec![0.0; 4]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_publishes_every_interval_and_stops_on_shutdown() {
    let prefix = unique("m").replace('-', "");
    let moto = MotoServer::start(&[]);
    let (cw, counter) = counting_client(&moto, &moto.url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let namespace = format!("csagent-test/{prefix}");
    let config = config(
        &prefix,
        &namespace,
        dir.path(),
        &[(format!("{prefix}-d1"), free_port())],
    );
    let ident = identity(&config);
    let metrics = Metrics::new(cw, docker().await, &config, &ident);
    let status = metrics.status_handle();
    let started = SystemTime::now();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let calls = Arc::new(Mutex::new(0u32));
    let seen = calls.clone();
    let task = tokio::spawn(metrics.run(
        move || {
            *seen.lock().expect("lock") += 1;
            AgentReadings {
                secrets_staleness_seconds: 1.0,
                log_lag_seconds: Some(0.0),
                ..Default::default()
            }
        },
        rx,
    ));
    tokio::time::sleep(Duration::from_millis(3500)).await;
    tx.send_replace(true);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("run stops on shutdown")
        .expect("run task");

    let s = status.snapshot();
    let intervals = *calls.lock().expect("lock");
    assert!(
        (3..=5).contains(&intervals),
        "{intervals} intervals in 3.5 s"
    );
    // The interval cut short by the shutdown may not have been collected yet.
    assert!(
        s.put_calls >= 3 && s.put_calls <= u64::from(intervals),
        "{intervals} intervals: {s:?}"
    );
    assert_eq!(counter.calls().len() as u64, s.put_calls, "no failed calls");
    assert_eq!(s.buffered_datums, 0);
    let reader = Reader {
        cw: aws_sdk_cloudwatch::Client::new(&moto.sdk_config().await),
        namespace,
        instance: ident.instance_id.clone(),
        since: started,
    };
    let beats = reader.series("agent_heartbeat", &[]).await;
    let by_second: BTreeMap<i64, f64> = beats.into_iter().collect();
    assert!(
        by_second.len() as u32 >= intervals - 1 && by_second.values().all(|v| *v == 1.0),
        "{by_second:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_buffer_drops_oldest_first_and_reports_it() {
    let prefix = unique("m").replace('-', "");
    let moto = MotoServer::start(&[]);
    let mut proxy = TcpProxy::start(([127, 0, 0, 1], moto.port).into()).await;
    let (cw, _) = counting_client(&moto, &proxy.url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let namespace = format!("csagent-test/{prefix}");
    // A 30-minute interval: the one-hour buffer holds two intervals.
    let config = config_with_interval(
        &prefix,
        &namespace,
        dir.path(),
        &[(format!("{prefix}-d1"), free_port())],
        "30m",
    );
    let ident = identity(&config);
    let mut metrics = Metrics::new(cw, docker().await, &config, &ident);
    let per_interval = 19; // with log_lag_seconds and log_files_lost
    assert_eq!(metrics.buffer_capacity(), 2 * per_interval);
    let status = metrics.status_handle();
    let started = SystemTime::now();
    let extra = |i: u32| AgentReadings {
        secrets_staleness_seconds: f64::from(i),
        log_lag_seconds: Some(0.5),
        log_files_lost: Some(0),
        ..Default::default()
    };

    // Two intervals while CloudWatch is unreachable fill the buffer.
    proxy.stop().await;
    for i in 1..=2 {
        if i > 1 {
            next_second().await;
        }
        metrics
            .collect_and_publish(&extra(i))
            .await
            .expect_err("CloudWatch is down");
    }
    let s = status.snapshot();
    assert_eq!((s.buffered_datums, s.dropped_datums), (2 * per_interval, 0));

    // The third interval's datums push out the oldest (interval 1) before the
    // flush, which now gets through; the fourth interval reports the drop.
    proxy.resume().await;
    next_second().await;
    assert_eq!(
        metrics.collect_and_publish(&extra(3)).await.expect("up"),
        2 * per_interval
    );
    let s = status.snapshot();
    assert_eq!(
        (s.buffered_datums, s.dropped_datums),
        (0, per_interval as u64)
    );
    next_second().await;
    assert_eq!(
        metrics.collect_and_publish(&extra(4)).await.expect("up"),
        per_interval
    );
    let reader = Reader {
        cw: aws_sdk_cloudwatch::Client::new(&moto.sdk_config().await),
        namespace,
        instance: ident.instance_id.clone(),
        since: started,
    };
    let values: Vec<f64> = reader
        .series("secrets_staleness_seconds", &[])
        .await
        .into_iter()
        .map(|p| p.1)
        .collect();
    assert_eq!(values, vec![2.0, 3.0, 4.0], "interval 1 was dropped");
    let dropped: Vec<f64> = reader
        .series("metrics_dropped", &[])
        .await
        .into_iter()
        .map(|p| p.1)
        .collect();
    assert_eq!(dropped, vec![0.0, 0.0, per_interval as f64]);
    assert_eq!(status.snapshot().dropped_datums, per_interval as u64);
}
