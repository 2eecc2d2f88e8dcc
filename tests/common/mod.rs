//! Shared support for the integration tests: the real Docker engine, moto, and
//! loop devices. `.ci/run` starts dockerd and moto and exports `AWS_ENDPOINT_URL`.
//! Every test makes its own uniquely named resources so tests run in parallel.

#![allow(dead_code)] // each test binary uses a different part of this module

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

/// A block of `n` host ports no other test in this run uses.
pub fn port_block(n: u16) -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = NEXT.fetch_add(u32::from(n.max(1)), Ordering::Relaxed) as u16;
    20000 + ((std::process::id() % 97) as u16) * 400 + offset
}

/// A /24 for a test's container network, distinct per test and per process.
pub fn test_subnet() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("10.{}.{}.0/24", 200 + (std::process::id() % 50), n % 250)
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

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
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
