//! dockerd restarted under a running agent: the agent stays up, reconnects, and
//! the host converges again (both developers running and healthy, the metadata
//! rule in place).
//!
//! Disruptive: restarting dockerd stops every container on the host for a while
//! (those without a restart policy stay stopped). cargo runs test binaries one
//! after another, so only tests in this binary could be disturbed; keep this the
//! only test in this file. A guard restarts dockerd when the test fails with it
//! down.
//!
//! dockerd is found the way CI (`.ci/run`) starts it: a plain background `dockerd`
//! whose pid is in /var/run/docker.pid, restarted with the same command line and
//! its output appended to the file it wrote to (in CI
//! `${CSAGENT_CI_CACHE:-/var/cache/csagent-ci}/dockerd.log`, also the fallback);
//! under systemd (`docker.service` active) through `systemctl restart docker`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const PIDFILE: &str = "/var/run/docker.pid";
/// How long dockerd may take to stop (it stops every container, 10 s grace each,
/// in parallel) and to answer again after it starts.
const DOCKERD_STOP: Duration = Duration::from_secs(90);
const DOCKERD_START: Duration = Duration::from_secs(60);
/// How long the agent may take to show both developers healthy once dockerd answers.
const CONVERGE_AFTER_RESTART: Duration = Duration::from_secs(60);

fn docker_info_ok() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn wait_docker_info(timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if docker_info_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    docker_info_ok()
}

/// Whether `pid` is a live process (a zombie, e.g. a dockerd this test started
/// that died, is not).
fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S ...": the state follows the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// How dockerd runs here and how to restart it. Drop makes sure it runs again
/// (when `docker info` fails) whatever happened in between.
enum Dockerd {
    Systemd,
    Process {
        pid: i32,
        /// Its command line, argv[0] resolved to the binary that runs.
        argv: Vec<String>,
        log: PathBuf,
    },
}

impl Dockerd {
    fn find() -> Dockerd {
        let systemd = Path::new("/run/systemd/system").exists()
            && Command::new("systemctl")
                .args(["is-active", "--quiet", "docker"])
                .status()
                .is_ok_and(|s| s.success());
        if systemd {
            return Dockerd::Systemd;
        }
        let pid = dockerd_pid().unwrap_or_else(|| {
            panic!(
                "{PIDFILE} names no running dockerd and docker.service is not active under systemd: cannot restart dockerd"
            )
        });
        let mut argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
            .expect("read dockerd's command line")
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) {
            argv[0] = exe.to_string_lossy().into_owned();
        }
        // Keep appending to the file its output goes to now (in CI that is the
        // cache's dockerd.log); else to where CI would put it.
        let log = std::fs::read_link(format!("/proc/{pid}/fd/2"))
            .ok()
            .filter(|p| p.is_file())
            .unwrap_or_else(|| {
                let cache = std::env::var("CSAGENT_CI_CACHE")
                    .unwrap_or_else(|_| "/var/cache/csagent-ci".to_string());
                PathBuf::from(cache).join("dockerd.log")
            });
        Dockerd::Process { pid, argv, log }
    }

    /// Stops dockerd (SIGTERM), waits until it is gone, runs `while_down`, starts
    /// it again and waits for `docker info`. Returns how long that took. (Under
    /// systemd `while_down` runs just before `systemctl restart`.)
    fn restart(&mut self, while_down: impl FnOnce()) -> Duration {
        let start = Instant::now();
        match self {
            Dockerd::Systemd => {
                while_down();
                run("systemctl", &["restart", "docker"])
            }
            Dockerd::Process { pid, argv, log } => {
                kill(Pid::from_raw(*pid), Signal::SIGTERM).expect("SIGTERM dockerd");
                while alive(*pid) {
                    assert!(
                        start.elapsed() < DOCKERD_STOP,
                        "dockerd (pid {pid}) still running {DOCKERD_STOP:?} after SIGTERM"
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                eprintln!("dockerd stopped after {:?}", start.elapsed());
                while_down();
                start_dockerd(argv, log);
                String::new()
            }
        };
        assert!(
            wait_docker_info(DOCKERD_START),
            "dockerd does not answer `docker info` {DOCKERD_START:?} after starting it again"
        );
        if let (Dockerd::Process { pid, .. }, Some(new)) = (&mut *self, dockerd_pid()) {
            *pid = new;
        }
        start.elapsed()
    }
}

/// Starts dockerd detached: `setsid --fork` makes it a child of init in a session
/// of its own (nothing of this test's holds it), cwd /, output appended to `log`.
fn start_dockerd(argv: &[String], log: &Path) {
    if let Some(dir) = log.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
    let status = Command::new("setsid")
        .arg("--fork")
        .args(argv)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log fd"))
        .stderr(out)
        .status()
        .unwrap_or_else(|e| panic!("start {argv:?}: {e}"));
    assert!(status.success(), "setsid --fork {argv:?}: {status}");
    eprintln!("started {argv:?}, log {}", log.display());
}

/// The pid dockerd wrote to its pid file, when it is a live dockerd.
fn dockerd_pid() -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(PIDFILE).ok()?.trim().parse().ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "dockerd" && alive(pid)).then_some(pid)
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if docker_info_ok() {
            return;
        }
        eprintln!("dockerd is not answering: starting it again");
        match self {
            Dockerd::Systemd => {
                let _ = Command::new("systemctl")
                    .args(["restart", "docker"])
                    .status();
            }
            Dockerd::Process { pid, argv, log } => {
                // A dockerd still stopping holds the pid file and the socket.
                let start = Instant::now();
                while alive(*pid) && start.elapsed() < DOCKERD_STOP {
                    std::thread::sleep(Duration::from_millis(200));
                }
                if alive(*pid) {
                    let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
                    std::thread::sleep(Duration::from_secs(1));
                }
                // One already started (slow to answer) is waited for, not doubled.
                match dockerd_pid() {
                    Some(p) => eprintln!("dockerd pid {p} is running; waiting for it to answer"),
                    None => start_dockerd(argv, log),
                }
            }
        }
        if !wait_docker_info(DOCKERD_START) {
            eprintln!("dockerd still does not answer; start it by hand (see its log)");
        }
    }
}

/// Removes what the agent made (containers, network, firewall rule, mount).
struct Cleanup {
    project: String,
    subnet: String,
    mount: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for i in 1..=2 {
            let _ = Command::new("docker")
                .args(["rm", "-f", &format!("code-server-{}-d{i}", self.project)])
                .output();
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &format!("csagent-{}", self.project)])
            .output();
        delete_metadata_rule(&self.subnet);
        delete_host_rule(&self.subnet);
        let _ = Command::new("umount").arg(&self.mount).output();
    }
}

fn container_id(name: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.Id}}", name])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_converges_after_dockerd_restarts() {
    require_root();
    let disk = LoopDevice::new("128M");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let runtime = tempfile::Builder::new()
        .prefix("csagent-dockerd-")
        .tempdir_in("/dev/shm")
        .expect("tmpfs dir");
    let moto = MotoServer::start(&[]);
    let project = unique("dkr").replace('-', "");
    let base = port_block(3);
    let subnet = unused_test_subnet();
    let devs: Vec<String> = (1..=2).map(|i| format!("{project}-d{i}")).collect();

    let sm = aws_sdk_secretsmanager::Client::new(&moto.sdk_config().await);
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

    let mut text = format!(
        "project = \"{project}\"\nregion = \"{REGION}\"\ninstance_id = \"i-0123456789abcdef0\"\n\
         [aws]\nendpoint_url = \"{moto}\"\n\
         [volume]\ndevice = \"{disk}\"\nmount_point = \"{root}/data\"\nfstab = \"{root}/fstab\"\nwait_timeout = \"10s\"\n\
         [containers]\nimage = \"{TEST_IMAGE}\"\npull = \"never\"\ncpus = 0.25\nmemory = \"256MiB\"\nmemory_reservation = \"128MiB\"\n\
         network = \"csagent-{project}\"\nsubnet = \"{subnet}\"\nhealth_interval = \"1s\"\nhealth_start_period = \"0s\"\n\
         block_metadata = true\n\
         [secrets]\npoll_interval = \"5s\"\n\
         [metrics]\nenabled = false\n\
         [logs]\nenabled = true\n\
         [agent]\nstate_dir = \"{root}/state\"\nruntime_dir = \"{run}\"\nsocket = \"{root}/ctl/csagent.sock\"\nsocket_group = \"adm\"\n",
        moto = moto.url(),
        disk = disk.path(),
        root = dir.path().display(),
        run = runtime.path().display(),
    );
    for (i, dev) in devs.iter().enumerate() {
        text.push_str(&format!(
            "[[developer]]\nname = \"{dev}\"\nport = {}\n",
            base + 1 + i as u16
        ));
    }
    let config = dir.path().join("config.toml");
    std::fs::write(&config, text).expect("write config");
    std::fs::create_dir_all(dir.path().join("ctl")).expect("ctl dir");

    // Drop order (reverse of declaration): dockerd running again, then the agent
    // stopped, then what it made removed.
    let _cleanup = Cleanup {
        project: project.clone(),
        subnet: subnet.clone(),
        mount: dir.path().join("data"),
    };
    let started = Instant::now();
    let mut agent = AgentDaemon::start(&config);
    agent.wait_notify("READY=1", Duration::from_secs(90));
    agent.wait_status("2 healthy developers", Duration::from_secs(60), |c, s| {
        all_developers_healthy(c, s, 2)
    });
    eprintln!(
        "agent up, 2 developers healthy after {:?}",
        started.elapsed()
    );
    assert!(
        metadata_rule_present(&subnet),
        "rule for {subnet} installed"
    );
    let ids_before: Vec<Option<String>> = devs
        .iter()
        .map(|d| container_id(&format!("code-server-{d}")))
        .collect();
    let log_before = agent.log().len();
    // Containers up for a few seconds: a status from before the restart shows a
    // longer uptime than the time since the restart, so it cannot pass for a
    // fresh one below.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut dockerd = Dockerd::find();
    let restart_began = Instant::now();
    // The firewall loses the rule while dockerd is down (as after a flush):
    // dockerd never adds it, so seeing it again means the agent put it back.
    let down = dockerd.restart(|| {
        assert!(
            delete_metadata_rule(&subnet),
            "delete the rule for {subnet}"
        );
    });
    eprintln!("dockerd restarted; answering again after {down:?}");
    assert!(
        agent.exited().is_none(),
        "the agent exited while dockerd restarted: {:?}\nlog:\n{}",
        agent.exited(),
        agent.log()
    );

    let back = Instant::now();
    let s = agent.wait_status(
        "both developers running and healthy, started after the dockerd restart, and the metadata rule back",
        CONVERGE_AFTER_RESTART,
        |c, s| {
            let since_restart = restart_began.elapsed().as_secs();
            all_developers_healthy(c, s, 2)
                && devs.iter().all(|d| {
                    status_developer(s, d)["uptime_secs"]
                        .as_u64()
                        .is_some_and(|u| u <= since_restart)
                })
                && metadata_rule_present(&subnet)
        },
    );
    let converged = back.elapsed();
    eprintln!("converged {converged:?} after dockerd answered again");
    // The status is Docker's, not a stale view from before the restart.
    for (dev, before) in devs.iter().zip(&ids_before) {
        let name = format!("code-server-{dev}");
        let now = container_id(&name).expect("container exists");
        let row = status_developer(&s, dev);
        assert!(
            now.starts_with(row["container_id"].as_str().unwrap_or("-")),
            "status shows the current container of {dev}: {row:#}"
        );
        let state = run("docker", &["inspect", "-f", "{{.State.Status}}", &name]);
        assert_eq!(state.trim(), "running", "{name} runs");
        eprintln!(
            "{dev}: {}",
            if before.as_deref() == Some(now.as_str()) {
                "same container, started again"
            } else {
                "recreated"
            }
        );
    }
    // dockerd stops and starts the containers itself (no live-restore): csagent
    // needs to recreate none of them.
    let recreated = devs
        .iter()
        .zip(&ids_before)
        .filter(|(d, before)| container_id(&format!("code-server-{d}")) != **before)
        .count();
    report_fault("dockerd restart", 0, 0, 0, 0, recreated, converged);
    assert_eq!(
        recreated, 0,
        "no container recreated after a dockerd restart"
    );
    // Still the same process, and its background tasks are alive: the watchdog
    // pings (sent only while every task runs) keep coming.
    assert!(
        agent.exited().is_none(),
        "the agent is still running: {:?}",
        agent.exited()
    );
    agent.clear_notified();
    agent.wait_notify("WATCHDOG=1", Duration::from_secs(5));
    let log = agent.log();
    let during = &log[log_before.min(log.len())..];
    assert!(
        during.contains("docker event stream"),
        "the agent noticed the event stream break and reconnected; log since the restart:\n{during}"
    );
    assert!(
        !during.contains("panicked"),
        "no panic in the agent; log since the restart:\n{during}"
    );
    assert!(
        during.contains("DOCKER-USER rule dropping container traffic to 169.254.169.254"),
        "the agent re-added the metadata rule; log since the restart:\n{during}"
    );
    for line in during.lines().filter(|l| {
        l.contains("docker event stream")
            || l.contains("convergence failed")
            || l.contains("DOCKER-USER")
            || l.contains("converged")
    }) {
        eprintln!("agent: {line}");
    }
}
