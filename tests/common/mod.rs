//! Shared support for the integration tests: the real Docker engine, moto, and
//! loop devices. `.ci/run` starts dockerd and moto and exports `AWS_ENDPOINT_URL`.
//! Every test makes its own uniquely named resources so tests run in parallel.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod cwlogs;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The image `scripts/build-test-image.sh` builds.
pub const TEST_IMAGE: &str = "csagent-test/code-server:latest";

/// A name no other test (or earlier run) uses: `<prefix>-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (loop devices, mount); run it through .ci/run"
    );
}

/// The Docker engine, with the API version negotiated (Debian's engine is 1.41).
pub async fn docker() -> bollard::Docker {
    let d = bollard::Docker::connect_with_local_defaults()
        .expect("connect to the Docker socket (is dockerd running? .ci/run starts it)");
    d.negotiate_version()
        .await
        .expect("negotiate the Docker API version")
}

/// moto's URL, from `AWS_ENDPOINT_URL`.
pub fn moto_url() -> String {
    std::env::var("AWS_ENDPOINT_URL")
        .expect("AWS_ENDPOINT_URL must point at moto_server (.ci/run starts one)")
}

pub const REGION: &str = "ap-southeast-7";

/// SDK config pointing at moto with dummy credentials.
pub async fn aws() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(moto_url())
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "csagent-tests",
        ))
        .load()
        .await
}

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loop device over a sparse file; detached (and unmounted) on drop.
pub struct LoopDevice {
    pub dir: tempfile::TempDir,
    pub file: PathBuf,
    pub device: PathBuf,
}

impl LoopDevice {
    pub fn new(size: &str) -> LoopDevice {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("csagent-loop-")
            .tempdir()
            .expect("tempdir");
        let file = dir.path().join("disk.img");
        run("truncate", &["-s", size, path_str(&file)]);
        let device = PathBuf::from(
            run("losetup", &["-f", "--show", path_str(&file)])
                .trim()
                .to_string(),
        );
        LoopDevice { dir, file, device }
    }

    pub fn path(&self) -> &str {
        path_str(&self.device)
    }

    /// Grows the backing file and tells the kernel (`losetup -c`).
    pub fn grow(&self, size: &str) {
        run("truncate", &["-s", size, path_str(&self.file)]);
        run("losetup", &["-c", self.path()]);
    }

    /// SHA-256 of the whole device, to prove nothing was written.
    pub fn checksum(&self) -> String {
        run("sha256sum", &[self.path()])
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        // Unmount anything still mounted from it, then detach.
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            for line in mounts.lines() {
                let mut f = line.split_whitespace();
                if f.next() == Some(self.path())
                    && let Some(target) = f.next()
                {
                    let _ = Command::new("umount").arg(target).status();
                }
            }
        }
        let _ = Command::new("losetup").args(["-d", self.path()]).status();
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// The csagent binary built for these tests.
pub fn csagent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_csagent"))
}

/// A block of `n` consecutive host ports nothing listens on right now, distinct from
/// every other block or [`free_port`] handed out in this process.
///
/// Taken below the kernel's ephemeral range (32768–60999): the source port of any
/// outgoing connection (to moto, dockerd) may take a port in it before Docker binds it
/// for a container, which once failed a start with "address already in use". Each port
/// is checked on 0.0.0.0 (what Docker's proxy binds), and the pid spreads test binaries
/// of one run over the range.
pub fn port_block(n: u16) -> u16 {
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_700;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = u32::from(n.max(1));
    let start = std::process::id().wrapping_mul(397) % COUNT;
    loop {
        let i = NEXT.fetch_add(n, Ordering::Relaxed);
        assert!(
            i < COUNT,
            "no free block of {n} ports in {FIRST}..{}",
            FIRST + COUNT
        );
        let offset = (start + i) % COUNT;
        if offset + n > COUNT {
            continue; // a block never wraps around the end of the range
        }
        let first = FIRST + offset;
        let free =
            (first..first + n).all(|p| std::net::TcpListener::bind(("0.0.0.0", p as u16)).is_ok());
        if free {
            return first as u16;
        }
    }
}

/// A /24 for a test's container network, distinct per test and per process.
pub fn test_subnet() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Skip what Docker already has: a network left by a killed test binary whose
    // pid was the same modulo 50 fails the create with "Pool overlaps".
    let taken = docker_subnets();
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let candidate = format!("10.{}.{}.0/24", 200 + (std::process::id() % 50), n % 250);
        if n >= 250 || !taken.iter().any(|t| subnets_overlap(t, &candidate)) {
            return candidate;
        }
    }
}

/// A moto_server of the test's own on a free port (state private to the test),
/// killed on drop. `env` goes to the server, e.g. `MOTO_ENABLE_RECORDING`. The
/// binary is `$MOTO_SERVER`, else `moto_server` on PATH, else the CI venv's.
pub struct MotoServer {
    child: std::process::Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl MotoServer {
    pub fn start(env: &[(&str, &str)]) -> MotoServer {
        let bin = std::env::var("MOTO_SERVER").unwrap_or_else(|_| {
            let on_path = Command::new("sh")
                .args(["-c", "command -v moto_server"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
            on_path.unwrap_or_else(|| "/var/cache/csagent-ci/venv/bin/moto_server".to_string())
        });
        let dir = tempfile::Builder::new()
            .prefix("csagent-moto-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("moto.log")).expect("moto log");
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(dir.path())
            .envs(env.iter().copied())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {bin}: {e}"));
        let server = MotoServer { child, port, dir };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while http_get_status(port, "/moto-api/") != Some(200) {
            assert!(
                std::time::Instant::now() < deadline,
                "moto_server did not answer on {port}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SDK config like [`aws`], pointing at this server.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .endpoint_url(self.url())
            .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
                "testing",
                "testing",
                None,
                None,
                "csagent-tests",
            ))
            .load()
            .await
    }

    /// moto's own request log (needs `MOTO_ENABLE_RECORDING=true`): one JSON object
    /// per request, with its headers.
    pub fn recording(&self) -> Vec<serde_json::Value> {
        let text = run(
            "curl",
            &[
                "-sf",
                &format!("{}/moto-api/recorder/download-recording", self.url()),
            ],
        );
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("recording line is JSON"))
            .collect()
    }

    pub fn reset_recording(&self) {
        run(
            "curl",
            &[
                "-sf",
                "-X",
                "POST",
                &format!("{}/moto-api/recorder/reset-recording", self.url()),
            ],
        );
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on right now (see [`port_block`]).
pub fn free_port() -> u16 {
    port_block(1)
}

/// Status of a plain HTTP GET to 127.0.0.1:`port`, None when nothing answers.
pub fn http_get_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// The address moto listens on (from [`moto_url`]), for a proxy in front of it.
pub fn moto_addr() -> std::net::SocketAddr {
    let url = moto_url();
    let hostport = url.trim_start_matches("http://").trim_end_matches('/');
    use std::net::ToSocketAddrs;
    hostport
        .to_socket_addrs()
        .expect("moto address")
        .next()
        .expect("moto resolves")
}

/// A TCP proxy on 127.0.0.1 in front of `target`, to cut a service off and bring
/// it back on the same port: [`stop`](TcpProxy::stop) closes the listener and every
/// open connection, [`resume`](TcpProxy::resume) listens again.
pub struct TcpProxy {
    pub port: u16,
    target: std::net::SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TcpProxy {
    pub async fn start(target: std::net::SocketAddr) -> TcpProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        TcpProxy {
            port,
            target,
            task: Some(tokio::spawn(Self::serve(listener, target))),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    pub async fn resume(&mut self) {
        self.stop().await;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("re-bind proxy port");
        self.task = Some(tokio::spawn(Self::serve(listener, self.target)));
    }

    async fn serve(listener: tokio::net::TcpListener, target: std::net::SocketAddr) {
        // Dropping the set (when this task is aborted) aborts every connection.
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                continue;
            };
            conns.spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
            while conns.try_join_next().is_some() {}
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The team image (`images/Dockerfile`) that `scripts/build-code-server-image.sh` builds
/// from Debian and npm packages on a local stand-in for `codercom/code-server:4.96.4`:
/// what developers get.
pub const REAL_CODE_SERVER_IMAGE: &str = "csagent/code-server-team:4.96.4";

/// The team image the real code-server tests run: [`REAL_CODE_SERVER_IMAGE`], or
/// `$CSAGENT_TEAM_IMAGE` for another build of images/Dockerfile (e.g. a branch's, built
/// with `TEAM_IMAGE=<tag> scripts/build-code-server-image.sh`) without retagging the
/// shared one. CI leaves it unset.
pub fn real_code_server_image() -> String {
    std::env::var("CSAGENT_TEAM_IMAGE").unwrap_or_else(|_| REAL_CODE_SERVER_IMAGE.to_string())
}

/// Set to 1 to skip the real code-server tests locally (never set in CI).
pub const SKIP_REAL_CODE_SERVER_ENV: &str = "CSAGENT_SKIP_REAL_CODE_SERVER";

/// Whether a test with the real code-server image should run: true when the image
/// built by `scripts/build-code-server-image.sh` is present (label
/// `csagent.built-locally=true`); false, with a note, when it is absent and
/// `CSAGENT_SKIP_REAL_CODE_SERVER=1`; otherwise it panics saying how to build it.
pub fn real_code_server_image_or_skip(test: &str) -> bool {
    let image = real_code_server_image();
    let label = Command::new("docker")
        .args([
            "image",
            "inspect",
            "-f",
            "{{ index .Config.Labels \"csagent.built-locally\" }}",
            &image,
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if label.as_deref() == Some("true") {
        return true;
    }
    let why = match label {
        Some(_) => format!(
            "{image} exists but was not built by scripts/build-code-server-image.sh (no label csagent.built-locally=true)"
        ),
        None => format!("image {image} is not present"),
    };
    if std::env::var(SKIP_REAL_CODE_SERVER_ENV).as_deref() == Ok("1") {
        eprintln!("{test}: SKIPPED ({SKIP_REAL_CODE_SERVER_ENV}=1): {why}");
        return false;
    }
    panic!(
        "{test}: {why}. Build it with `bash scripts/build-code-server-image.sh` \
         (CI builds it; cached under $CSAGENT_CI_CACHE), or set \
         {SKIP_REAL_CODE_SERVER_ENV}=1 to skip this test locally"
    );
}

/// An HTTP response read whole (HTTP/1.0, the server closes the connection).
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header lines as sent, e.g. `Set-Cookie: a=b; Path=/`.
    pub headers: Vec<String>,
    pub body: String,
}

impl HttpResponse {
    /// Values of the headers named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter_map(|h| h.split_once(':'))
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .collect()
    }
}

/// `application/x-www-form-urlencoded` encoding of one value.
pub fn form_encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A plain HTTP/1.0 request to 127.0.0.1:`port`; None when nothing answers or the
/// response cannot be read within `timeout`.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    timeout: std::time::Duration,
) -> Option<HttpResponse> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    Some(HttpResponse {
        status,
        headers: lines.map(str::to_string).collect(),
        body: body.to_string(),
    })
}

/// `POST /login` with `password=...` as code-server's login form sends it.
pub fn code_server_login(port: u16, password: &str) -> Option<HttpResponse> {
    http_request(
        port,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &format!("password={}", form_encode(password)),
        std::time::Duration::from_secs(20),
    )
}

/// Whether a code-server login response means "logged in": a redirect that sets
/// the session cookie (a refused password renders the login page again with 200).
pub fn login_accepted(r: &HttpResponse) -> bool {
    r.status == 302
        && r.header("set-cookie")
            .iter()
            .any(|c| c.starts_with("code-server-session="))
}

/// The IPv4 subnets of every Docker network right now (`a.b.c.d/n`).
pub fn docker_subnets() -> Vec<String> {
    let ids = run("docker", &["network", "ls", "-q"]);
    let mut out = Vec::new();
    for id in ids.split_whitespace() {
        let Ok(o) = Command::new("docker")
            .args([
                "network",
                "inspect",
                "-f",
                "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
                id,
            ])
            .output()
        else {
            continue;
        };
        out.extend(
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter(|s| s.contains('.'))
                .map(str::to_string),
        );
    }
    out
}

/// `a.b.c.d/n` as (network address, prefix length); None for anything else.
fn parse_v4_cidr(cidr: &str) -> Option<(u32, u32)> {
    let (addr, len) = cidr.split_once('/')?;
    let addr: std::net::Ipv4Addr = addr.parse().ok()?;
    let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((u32::from(addr) & mask, len))
}

/// Whether two IPv4 CIDRs share an address.
pub fn subnets_overlap(a: &str, b: &str) -> bool {
    match (parse_v4_cidr(a), parse_v4_cidr(b)) {
        (Some((na, la)), Some((nb, lb))) => {
            let len = la.min(lb);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            na & mask == nb & mask
        }
        _ => false,
    }
}

/// A /24 (in 10.150.0.0–10.199.255.0, apart from [`test_subnet`]'s range) that no
/// Docker network uses now: networks leaked by an interrupted run cannot make this
/// test's network creation fail with "Pool overlaps".
pub fn unused_test_subnet() -> String {
    // Tests in one binary run in parallel: each call starts from its own slot so
    // two callers do not pick the same free /24 before either creates it.
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let taken = docker_subnets();
    let start = std::process::id() % 50;
    let offset = CALLS.fetch_add(1, Ordering::Relaxed) * 7;
    for i in offset..(50 * 256 + offset) {
        let n = (start * 256 + i) % (50 * 256);
        let candidate = format!("10.{}.{}.0/24", 150 + n / 256, n % 256);
        if !taken.iter().any(|t| subnets_overlap(t, &candidate)) {
            return candidate;
        }
    }
    panic!(
        "no free /24 in 10.150.0.0/16–10.199.0.0/16 for a test network; docker networks: {taken:?}"
    );
}

/// The DOCKER-USER rule the agent installs for `subnet` (`network::ensure_metadata_block`),
/// as iptables arguments after the operation (`-C`, `-D`, ...).
pub fn metadata_rule_spec(subnet: &str) -> Vec<String> {
    [
        "DOCKER-USER",
        "-s",
        subnet,
        "-d",
        "169.254.169.254/32",
        "-m",
        "comment",
        "--comment",
        "csagent: containers must not reach IMDS",
        "-j",
        "DROP",
    ]
    .map(str::to_string)
    .to_vec()
}

/// Whether the agent's metadata rule for `subnet` is in DOCKER-USER (`iptables -C`).
pub fn metadata_rule_present(subnet: &str) -> bool {
    Command::new("iptables")
        .args(["-w", "-C"])
        .args(metadata_rule_spec(subnet))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Deletes the agent's metadata rule for `subnet`; true when one was deleted.
pub fn delete_metadata_rule(subnet: &str) -> bool {
    Command::new("iptables")
        .args(["-w", "-D"])
        .args(metadata_rule_spec(subnet))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Exit code and JSON (Null when none) of `csagent status --json --config <config>`.
pub fn csagent_status(config: &Path) -> (i32, serde_json::Value) {
    let out = Command::new(csagent_bin())
        .args(["status", "--json", "--config", path_str(config)])
        .output()
        .expect("csagent status");
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), json)
}

/// `csagent run --config <config>` as a child process, as systemd runs it: a
/// NOTIFY_SOCKET drained by a thread the whole time (what the agent sent is in
/// `notified`), WATCHDOG_USEC set, stderr in `<config>.log`. Killed on drop.
pub struct AgentDaemon {
    pub child: std::process::Child,
    pub config: PathBuf,
    pub notified: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _notify_dir: tempfile::TempDir,
}

impl AgentDaemon {
    pub fn start(config: &Path) -> AgentDaemon {
        let notify_dir = tempfile::tempdir().expect("tempdir");
        let notify_path = notify_dir.path().join("notify.sock");
        let notify =
            std::os::unix::net::UnixDatagram::bind(&notify_path).expect("bind notify socket");
        let notified = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = notified.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = notify.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                if let Ok(mut v) = sink.lock() {
                    v.push(msg);
                }
            }
        });
        let log = std::fs::File::create(config.with_extension("log")).expect("log file");
        let child = Command::new(csagent_bin())
            .args(["run", "--config", path_str(config)])
            .env("NOTIFY_SOCKET", &notify_path)
            .env("WATCHDOG_USEC", "2000000")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("RUST_LOG", "info,csagent=debug")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn csagent run");
        AgentDaemon {
            child,
            config: config.to_path_buf(),
            notified,
            _notify_dir: notify_dir,
        }
    }

    /// Waits for a notify message with the line `needle`; returns everything seen.
    pub fn wait_notify(&self, needle: &str, timeout: std::time::Duration) -> Vec<String> {
        let start = std::time::Instant::now();
        loop {
            let seen = self.notified.lock().map(|v| v.clone()).unwrap_or_default();
            if seen.iter().any(|m| m.lines().any(|l| l == needle)) {
                return seen;
            }
            if start.elapsed() > timeout {
                panic!(
                    "no {needle} within {timeout:?}; saw {seen:?}\nagent log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Forgets what was notified so far (to wait for a fresh message).
    pub fn clear_notified(&self) {
        if let Ok(mut v) = self.notified.lock() {
            v.clear();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.config.with_extension("log")).unwrap_or_default()
    }

    /// Exit code and JSON of `csagent status --json`.
    pub fn status(&self) -> (i32, serde_json::Value) {
        csagent_status(&self.config)
    }

    /// Polls `status` until `ok`; panics with the last status and the agent log.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: std::time::Duration,
        ok: impl Fn(i32, &serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = std::time::Instant::now();
        loop {
            let (code, json) = self.status();
            if ok(code, &json) {
                return json;
            }
            if start.elapsed() > timeout {
                panic!(
                    "status never showed {what} within {timeout:?} (last exit {code}): {json:#}\nagent log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig)
            .expect("signal");
    }

    /// The process's exit status if it has exited, None while it runs.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("wait for csagent")
    }
}

impl Drop for AgentDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One developer's row in a `status --json` report (Null when absent).
pub fn status_developer<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["developers"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["name"] == name))
        .unwrap_or(&serde_json::Value::Null)
}

/// `status` exited 0 and lists exactly `n` developers, all running and healthy.
pub fn all_developers_healthy(code: i32, status: &serde_json::Value, n: usize) -> bool {
    code == 0
        && status["developers"].as_array().is_some_and(|a| {
            a.len() == n
                && a.iter()
                    .all(|d| d["state"] == "running" && d["health"] == "healthy")
        })
}

/// Removes what an agent made for a test project — containers labelled with the
/// project, its network, its DOCKER-USER rule, and a mount — when dropped, so a
/// failing test does not leak them (a running container pins a loop device's mount).
pub struct Leftovers {
    pub project: String,
    pub network: String,
    pub subnet: String,
    pub mount: Option<PathBuf>,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        let ids = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=csagent.project={}", self.project),
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        for id in ids.split_whitespace() {
            let _ = Command::new("docker").args(["rm", "-f", id]).output();
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &self.network])
            .output();
        let _ = Command::new("iptables")
            .args([
                "-w",
                "-D",
                "DOCKER-USER",
                "-s",
                &self.subnet,
                "-d",
                "169.254.169.254/32",
                "-m",
                "comment",
                "--comment",
                "csagent: containers must not reach IMDS",
                "-j",
                "DROP",
            ])
            .output();
        delete_host_rule(&self.subnet);
        if let Some(m) = &self.mount {
            let _ = Command::new("umount").arg(m).output();
        }
    }
}

/// `docker rm -f` of one container when dropped, for a container a test creates
/// without csagent's labels (so [`Leftovers`] would not find it).
pub struct RemoveContainerOnDrop(pub String);

impl Drop for RemoveContainerOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

/// The INPUT rule the agent installs for `subnet` (`network::ensure_host_block`).
pub fn host_rule_spec(subnet: &str) -> Vec<String> {
    [
        "INPUT",
        "-s",
        subnet,
        "-m",
        "conntrack",
        "--ctstate",
        "NEW",
        "-m",
        "comment",
        "--comment",
        "csagent: containers must not reach the host",
        "-j",
        "DROP",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Deletes that rule; true if it was there.
pub fn delete_host_rule(subnet: &str) -> bool {
    let spec = host_rule_spec(subnet);
    Command::new("iptables")
        .args(["-w", "-D"])
        .args(&spec)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Records one row of the fault-injection table (docs/reliability.md): appended to
/// the file `$CSAGENT_FAULT_REPORT` names (scripts/test.sh prints it at the end),
/// and printed to stderr. `lines` is how many log lines the containers printed.
pub fn report_fault(
    fault: &str,
    lines: usize,
    lost: usize,
    duplicated: usize,
    files_lost: usize,
    needless_restarts: usize,
    converged: std::time::Duration,
) {
    // A fault run without a log flood has no line figures.
    let (lines, lost, duplicated) = if lines == 0 {
        ("—".to_string(), "—".to_string(), "—".to_string())
    } else {
        (lines.to_string(), lost.to_string(), duplicated.to_string())
    };
    let row = format!(
        "| {fault} | {lines} | {lost} | {duplicated} | {files_lost} | {needless_restarts} | {:.1} s |\n",
        converged.as_secs_f64()
    );
    eprint!("FAULT-ROW {row}");
    if let Ok(path) = std::env::var("CSAGENT_FAULT_REPORT") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = f.write_all(row.as_bytes());
        }
    }
}
