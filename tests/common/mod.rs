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
