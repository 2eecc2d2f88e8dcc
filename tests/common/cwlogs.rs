//! CloudWatch Logs read back from moto, and the checks the log tests share.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Every message in `group`/`stream`, oldest first (empty while the group or
/// stream is not there yet).
pub async fn read_stream(
    client: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    stream: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let Ok(resp) = client
            .get_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
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
            .map(|e| e.message().unwrap_or_default().to_string())
            .collect();
        let next = resp.next_forward_token().map(str::to_string);
        let done = page.is_empty() || next.is_none() || next == token;
        out.extend(page);
        if done {
            return out;
        }
        token = next;
    }
}

/// Messages in the stream that start with `prefix`.
pub async fn lines_with(
    client: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    stream: &str,
    prefix: &str,
) -> Vec<String> {
    read_stream(client, group, stream)
        .await
        .into_iter()
        .filter(|m| m.starts_with(prefix))
        .collect()
}

/// Waits until the stream holds at least `n` messages starting with `prefix`
/// (or `timeout` passed); returns them.
pub async fn wait_for_lines(
    client: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    stream: &str,
    prefix: &str,
    n: usize,
    timeout: Duration,
) -> Vec<String> {
    let start = Instant::now();
    loop {
        let lines = lines_with(client, group, stream, prefix).await;
        if lines.len() >= n || start.elapsed() > timeout {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `prefix1` … `prefixN` for the range.
pub fn numbered(prefix: &str, range: std::ops::RangeInclusive<u64>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

/// `got == want`, or a failure that says which lines are missing, repeated or
/// unexpected.
pub fn assert_exactly_once(got: &[String], want: &[String]) {
    if got == want {
        return;
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for g in got {
        *counts.entry(g.as_str()).or_default() += 1;
    }
    let missing: Vec<&String> = want
        .iter()
        .filter(|w| !counts.contains_key(w.as_str()))
        .collect();
    let repeated: Vec<(&&str, &usize)> = counts.iter().filter(|(_, c)| **c > 1).collect();
    let wanted: std::collections::HashSet<&str> = want.iter().map(String::as_str).collect();
    let unexpected: Vec<&String> = got
        .iter()
        .filter(|g| !wanted.contains(g.as_str()))
        .collect();
    panic!(
        "got {} lines, want {}; {} missing (first: {:?}), {} repeated (some: {:?}), unexpected: {:?}, first difference at {:?}",
        got.len(),
        want.len(),
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        repeated.len(),
        repeated.iter().take(5).collect::<Vec<_>>(),
        unexpected.iter().take(5).collect::<Vec<_>>(),
        got.iter().zip(want).position(|(g, w)| g != w)
    );
}

/// One HTTP/1.1 request to the fake code-server (port 8080) at `ip`; the
/// response head and body as text.
pub async fn fake_code_server(
    ip: std::net::Ipv4Addr,
    method: &str,
    path: &str,
    body: &[u8],
) -> String {
    use std::io::{Read, Write};
    let (method, path, body) = (method.to_string(), path.to_string(), body.to_vec());
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect((ip, 8080))
            .expect("connect to the fake code-server");
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).expect("send request");
        s.write_all(&body).expect("send body");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .expect("http task")
}

/// `s` percent-encoded for a query string (the fake code-server's `prefix=`).
pub fn query_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A managed container for a developer running the fake code-server
/// ([`super::TEST_IMAGE`]); removed when dropped, if the test did not.
pub struct TestContainer {
    pub docker: bollard::Docker,
    pub id: String,
    pub ip: std::net::Ipv4Addr,
}

impl TestContainer {
    /// With Docker's default log driver (json-file, no rotation options).
    pub async fn start(
        docker: &bollard::Docker,
        project: &str,
        developer: &str,
        env: &[(&str, String)],
    ) -> TestContainer {
        Self::start_logging(docker, project, developer, env, None, &[]).await
    }

    /// Logging with `driver` (None: the default) and its `opts`.
    pub async fn start_logging(
        docker: &bollard::Docker,
        project: &str,
        developer: &str,
        env: &[(&str, String)],
        driver: Option<&str>,
        opts: &[(&str, &str)],
    ) -> TestContainer {
        let id = Self::create_logging(docker, project, developer, env, driver, opts).await;
        Self::start_created(docker, id).await
    }

    /// As [`start_logging`](Self::start_logging), created but not started: its id.
    pub async fn create_logging(
        docker: &bollard::Docker,
        project: &str,
        developer: &str,
        env: &[(&str, String)],
        driver: Option<&str>,
        opts: &[(&str, &str)],
    ) -> String {
        use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig};
        use bollard::query_parameters::CreateContainerOptionsBuilder;
        let labels = HashMap::from([
            ("csagent.managed".to_string(), "true".to_string()),
            ("csagent.project".to_string(), project.to_string()),
            ("csagent.developer".to_string(), developer.to_string()),
        ]);
        let log_config = driver.map(|driver| HostConfigLogConfig {
            typ: Some(driver.to_string()),
            config: Some(
                opts.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
        });
        let body = ContainerCreateBody {
            image: Some(super::TEST_IMAGE.to_string()),
            labels: Some(labels),
            env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            host_config: Some(HostConfig {
                log_config,
                ..Default::default()
            }),
            ..Default::default()
        };
        let name = format!("code-server-{developer}");
        let created = docker
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                body,
            )
            .await
            .expect(
                "create the test container (is the test image built? scripts/build-test-image.sh)",
            );
        created.id
    }

    /// Starts a container [`create_logging`](Self::create_logging) made.
    pub async fn start_created(docker: &bollard::Docker, id: String) -> TestContainer {
        docker
            .start_container(&id, None)
            .await
            .expect("start the test container");
        let inspect = docker
            .inspect_container(&id, None)
            .await
            .expect("inspect the test container");
        let ip = inspect
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|n| n.into_values().find_map(|e| e.ip_address))
            .and_then(|ip| ip.parse().ok())
            .expect("the test container has a bridge IP address");
        let c = TestContainer {
            docker: docker.clone(),
            id,
            ip,
        };
        c.wait_http().await;
        c
    }

    pub async fn wait_http(&self) {
        let addr = std::net::SocketAddr::from((self.ip, 8080));
        for _ in 0..100 {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("fake code-server in {} did not listen", self.id);
    }

    /// Its json-file log (`LogPath`).
    pub async fn log_path(&self) -> std::path::PathBuf {
        let c = self
            .docker
            .inspect_container(&self.id, None)
            .await
            .expect("inspect");
        std::path::PathBuf::from(c.log_path.expect("LogPath"))
    }

    /// The fake code-server prints `count` lines `<prefix><i>`.
    pub async fn print(&self, count: u64, prefix: &str) {
        let path = format!("/print?count={count}&prefix={}", query_encode(prefix));
        let resp = fake_code_server(self.ip, "GET", &path, b"").await;
        assert!(resp.contains(" 200 "), "{resp}");
    }

    /// The fake code-server writes `body` to stdout byte for byte.
    pub async fn print_raw(&self, body: &[u8]) {
        let resp = fake_code_server(self.ip, "POST", "/print", body).await;
        assert!(resp.contains(" 200 "), "{resp}");
    }

    pub async fn remove(mut self) {
        use bollard::query_parameters::RemoveContainerOptionsBuilder;
        let id = std::mem::take(&mut self.id);
        self.docker
            .remove_container(
                &id,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await
            .expect("remove the test container");
    }
}

impl Drop for TestContainer {
    /// A failed test still removes its container.
    fn drop(&mut self) {
        if !self.id.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", &self.id])
                .output();
        }
    }
}

/// A shipper in a child process: this test binary run again for its one
/// test `child_test`, with `env` set to the config's path (that test runs the
/// shipper until killed). SIGKILLed when dropped, so a failing test leaves no
/// process behind.
pub struct ShipperChild(std::process::Child);

impl ShipperChild {
    pub fn spawn(
        child_test: &str,
        env: &str,
        config_path: &std::path::Path,
        log: &std::path::Path,
    ) -> ShipperChild {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("child log");
        std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([child_test, "--exact", "--nocapture", "--test-threads=1"])
            .env(env, config_path)
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .map(ShipperChild)
            .expect("start the child shipper")
    }

    pub fn kill(&mut self) {
        let _ = self.0.kill(); // std's kill is SIGKILL
        let _ = self.0.wait();
    }
}

impl Drop for ShipperChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The child side of [`ShipperChild`]: when `env` names a config, runs a
/// shipper for it until the process is killed, with `options` made for many
/// small batches (so kills land in every phase of a put) and a client from
/// `client` for the config's endpoint; without `env`, returns at once.
pub fn run_child_shipper<F, Fut>(
    env: &str,
    identity: csagent::aws::Identity,
    mut options: csagent::logs::ShipperOptions,
    client: F,
) where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = aws_sdk_cloudwatchlogs::Client>,
{
    let Ok(path) = std::env::var(env) else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter("info")
        .with_ansi(false)
        .try_init();
    let config = csagent::config::Config::load(std::path::Path::new(&path)).expect("child config");
    let endpoint = config
        .endpoint_url
        .clone()
        .expect("endpoint in the child config");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        options.flush_interval = Duration::from_millis(50);
        options.buffer_bytes = 256 * 1024;
        let shipper = csagent::logs::Shipper::new(
            super::docker().await,
            client(endpoint).await,
            &config,
            &identity,
        )
        .with_options(options);
        let (_tx, rx) = tokio::sync::watch::channel(false);
        shipper.run(rx).await.expect("shipper run");
    });
}
