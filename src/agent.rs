//! `csagent run`: wires the capabilities in order — config → volume ready →
//! secrets fetched → containers converged → logs (and metrics) running — then
//! keeps them converged: rotation polls, Docker events, periodic resync,
//! SIGHUP/`csagent reload`, SIGTERM shutdown.
//!
//! systemd hears READY=1 once the first convergence pass finished, STATUS= text
//! along the way, and WATCHDOG=1 only while the main loop or the reconciler makes
//! progress (a wedged loop stops the pings and systemd restarts us). Background
//! tasks that panic are logged and started again in-process.
//! Containers keep running when the agent stops: stopping or upgrading it never
//! interrupts a developer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::aws::Identity;
use crate::config::Config;
use crate::containers::{
    Action, ContainerCredentials, DesiredDeveloper, Reconciler, StatusHandle, unix_now,
};
use crate::control::{self, Command, Response};
use crate::exit;
use crate::secrets::{
    ApplyDecision, CredentialFiles, DeveloperSecrets, SecretsManager, SecretsStatus, is_idle,
};
use crate::status::{self, DeveloperRow, StatusReport};
use crate::supervise::spawn_supervised;
use crate::volume::VolumeStatus;

/// How long SIGTERM waits for the log shipper to flush and checkpoint.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(15);
/// Full resync even without events (events can be missed across reconnects).
const RESYNC_EVERY: Duration = Duration::from_secs(60);

/// Runs the agent; returns the process exit code.
pub async fn run(config_path: &Path, once: bool) -> i32 {
    pin_mmap_threshold();
    let config = match Config::load(config_path) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("error: {e}");
            notify(&[NotifyState::Status(&format!("bad config: {e}"))]);
            return exit::CONFIG;
        }
    };
    crate::logging::init(config.agent.log_format, &config.agent.log_level);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config_path.display(),
        developers = config.developers.len(),
        "csagent starting"
    );
    let mut agent = match Agent::start(config.clone(), config_path.to_path_buf(), once).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            notify(&[NotifyState::Status(&format!("failed: {e}"))]);
            return exit::FAILED;
        }
    };
    let converged = agent.converge_all().await;
    if once {
        return if converged { exit::OK } else { exit::FAILED };
    }
    agent.start_background();
    agent.run_loop().await
}

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

fn progress(text: &str) {
    tracing::info!("{text}");
    notify(&[NotifyState::Status(text)]);
}

/// What status reads; the main loop and the tasks update it.
pub struct Shared {
    pub config: Mutex<Arc<Config>>,
    pub identity: Identity,
    pub started: Instant,
    pub phase: Mutex<String>,
    pub volume: Mutex<VolumeStatus>,
    pub secrets: Mutex<Option<SecretsStatus>>,
    pub containers: StatusHandle,
    pub firewall: Arc<Mutex<Option<String>>>,
    pub logs: Mutex<Option<crate::logs::LogsStatusHandle>>,
    pub metrics: Mutex<Option<crate::metrics::MetricsStatusHandle>>,
}

impl Shared {
    /// What the metrics loop needs from the other capabilities each interval.
    fn metrics_extra(&self) -> crate::metrics::Extra {
        let staleness = self
            .secrets
            .lock()
            .ok()
            .and_then(|s| s.as_ref().and_then(|s| s.staleness_seconds))
            .unwrap_or(0);
        let logs = self.logs.lock().ok().and_then(|l| l.clone());
        let lag = logs.map(|l| {
            l.snapshot()
                .developers
                .values()
                .map(|d| d.lag_seconds)
                .fold(0.0, f64::max)
        });
        crate::metrics::Extra {
            secrets_staleness_seconds: staleness as f64,
            log_lag_seconds: lag,
        }
    }
}

impl control::StatusSource for Shared {
    fn report(&self) -> StatusReport {
        let config = self.config.lock().map(|c| c.clone()).ok();
        let Some(config) = config else {
            return StatusReport::default();
        };
        let volume = crate::volume::observe(&config);
        if let Ok(mut v) = self.volume.lock() {
            *v = volume.clone();
        }
        let secrets = self.secrets.lock().ok().and_then(|s| s.clone());
        let containers = self.containers.snapshot();
        let logs = self
            .logs
            .lock()
            .ok()
            .and_then(|l| l.clone())
            .map(|l| l.snapshot());
        let metrics = self
            .metrics
            .lock()
            .ok()
            .and_then(|m| m.clone())
            .map(|m| m.snapshot());

        let mut sys = sysinfo::System::new();
        sys.refresh_memory();
        let total = sys.total_memory();
        let used = total.saturating_sub(sys.available_memory());

        let now = SystemTime::now();
        let developers = config
            .developers
            .iter()
            .map(|d| {
                let c = containers.get(&d.name);
                let m = metrics.as_ref().and_then(|m| m.developers.get(&d.name));
                let s = secrets.as_ref().and_then(|s| s.developers.get(&d.name));
                let uptime = c
                    .and_then(|c| c.started_at.as_deref())
                    .filter(|_| c.is_some_and(|c| c.state == "running"))
                    .and_then(|t| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok())
                    .and_then(|t| now.duration_since(t).ok())
                    .map(|d| d.as_secs());
                let problem = c
                    .and_then(|c| c.problem.clone())
                    .or_else(|| s.and_then(|s| if s.ready { None } else { s.error.clone() }));
                DeveloperRow {
                    name: d.name.clone(),
                    port: d.port,
                    url: format!("http://{}:{}/", "localhost", d.port),
                    container_id: c
                        .and_then(|c| c.id.clone())
                        .map(|id| id.chars().take(12).collect()),
                    state: c
                        .map(|c| c.state.clone())
                        .unwrap_or_else(|| "unknown".into()),
                    health: c.map(|c| c.health.clone()).unwrap_or_else(|| "none".into()),
                    uptime_secs: uptime,
                    cpu_percent: m.and_then(|m| m.cpu_percent),
                    mem_used_bytes: m.and_then(|m| m.mem_used_bytes),
                    mem_limit_bytes: d.memory,
                    restarts: c.map(|c| c.restarts).unwrap_or(0),
                    crash_looping: c.is_some_and(|c| c.crash_looping),
                    password_version: s.and_then(|s| s.password_version.clone()),
                    password_age_secs: s.and_then(|s| s.password_age_secs),
                    pending_rotation: s.is_some_and(|s| s.pending_rotation.is_some()),
                    claude_key: s
                        .map(|s| s.claude_key.to_string())
                        .unwrap_or_else(|| "missing".into()),
                    log_lag_secs: logs
                        .as_ref()
                        .and_then(|l| l.developers.get(&d.name))
                        .map(|l| l.lag_seconds),
                    problem,
                    last_log_lines: c.map(|c| c.last_log_lines.clone()).unwrap_or_default(),
                }
            })
            .collect();

        let used_percent = match (volume.used_bytes, volume.size_bytes) {
            (Some(u), Some(s)) if s > 0 => Some(u as f64 * 100.0 / s as f64),
            _ => None,
        };
        let mut aws_last_success = BTreeMap::new();
        aws_last_success.insert(
            "secretsmanager".to_string(),
            secrets.as_ref().and_then(|s| s.last_success.clone()),
        );
        if let Some(m) = metrics.as_ref() {
            let publish = m.last_publish.map(status::rfc3339);
            aws_last_success.insert("cloudwatch".to_string(), publish);
        }
        if let Some(l) = logs.as_ref().filter(|l| l.enabled) {
            let put = l
                .last_put_ms
                .and_then(|ms| u64::try_from(ms).ok())
                .map(|ms| status::rfc3339(std::time::UNIX_EPOCH + Duration::from_millis(ms)));
            aws_last_success.insert("logs".to_string(), put);
        }
        let mut report = StatusReport {
            schema: status::SCHEMA_VERSION,
            agent: status::AgentInfo {
                version: env!("CARGO_PKG_VERSION").to_string(),
                pid: std::process::id(),
                uptime_secs: self.started.elapsed().as_secs(),
                phase: self.phase.lock().map(|p| p.clone()).unwrap_or_default(),
            },
            instance: status::InstanceInfo {
                project: config.project.clone(),
                instance_id: self.identity.instance_id.clone(),
                region: self.identity.region.clone(),
            },
            volume: status::VolumeInfo {
                device: volume.device.clone(),
                volume_id: volume.volume_id.clone(),
                filesystem: volume.filesystem.clone(),
                uuid: volume.uuid.clone(),
                mount_point: volume.mount_point.clone(),
                mounted: volume.mounted,
                size_bytes: volume.size_bytes,
                used_bytes: volume.used_bytes,
                used_percent,
                error: volume.error.clone(),
            },
            host: status::HostInfo {
                mem_total_bytes: total,
                mem_used_bytes: used,
                mem_used_percent: if total > 0 {
                    used as f64 * 100.0 / total as f64
                } else {
                    0.0
                },
            },
            aws_last_success,
            developers,
            metrics: metrics.as_ref().map(|m| status::MetricsInfo {
                last_publish: m.last_publish.map(status::rfc3339),
                put_calls: m.put_calls,
                published_datums: m.published_datums,
                buffered_datums: m.buffered_datums,
                dropped_datums: m.dropped_datums,
                last_error: m.last_error.clone(),
            }),
            warnings: Vec::new(),
            healthy: false,
        };
        let stale_after = config.secrets.poll_interval * 5;
        let firewall = self.firewall.lock().ok().and_then(|f| f.clone());
        report.finish(
            secrets.as_ref().and_then(|s| s.staleness_seconds),
            stale_after,
        );
        if let Some(f) = firewall {
            report.warnings.push(format!("container firewall: {f}"));
            report.healthy = false;
        }
        report
    }
}

struct Agent {
    config: Arc<Config>,
    config_path: PathBuf,
    shared: Arc<Shared>,
    secrets: SecretsManager,
    files: CredentialFiles,
    reconciler: Reconciler,
    /// Credentials each developer's container was last converged with; kept while
    /// a when-idle rotation waits, so waiting does not recreate the container.
    applied: BTreeMap<String, ContainerCredentials>,
    /// Developers whose pending rotation the policy says to apply now.
    apply_now: BTreeSet<String>,
    commands: mpsc::Receiver<(Command, oneshot::Sender<Response>)>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    /// Log shipper and metrics loop, with the switch that stops them.
    background: Option<(watch::Sender<bool>, Vec<JoinHandle<()>>)>,
    docker: bollard::Docker,
    sdk: aws_config::SdkConfig,
    once: bool,
}

impl Agent {
    async fn start(config: Arc<Config>, config_path: PathBuf, once: bool) -> Result<Agent, String> {
        let identity = crate::aws::identity(&config)
            .await
            .map_err(|e| e.to_string())?;

        let cfg = config.clone();
        let volume = tokio::task::spawn_blocking(move || {
            crate::volume::prepare(&cfg, &|t: &str| progress(t))
        })
        .await
        .map_err(|e| format!("volume task: {e}"))?
        .map_err(|e| format!("volume: {e}"))?;
        progress(&format!(
            "volume ready: {} mounted at {}",
            volume.device.as_deref().unwrap_or("?"),
            config.volume.mount_point.display()
        ));

        let sdk = crate::aws::sdk_config(&config, &identity.region).await;
        let mut secrets = SecretsManager::new(aws_sdk_secretsmanager::Client::new(&sdk), &config);
        progress("reading developer credentials from Secrets Manager");
        if let Err(e) = secrets.fetch_all().await {
            // Keep going: developers without credentials are reported, not started.
            tracing::error!(error = %e, "initial secrets read failed; retrying on the next poll");
        }
        let files =
            CredentialFiles::from_config(&config).map_err(|e| format!("credential files: {e}"))?;

        progress("connecting to the Docker engine");
        let docker = connect_docker().await?;
        let reconciler = Reconciler::new(docker.clone(), config.clone());

        let shared = Arc::new(Shared {
            config: Mutex::new(config.clone()),
            identity,
            started: Instant::now(),
            phase: Mutex::new("starting".into()),
            volume: Mutex::new(volume),
            secrets: Mutex::new(Some(secrets.status())),
            containers: reconciler.status_handle(),
            firewall: reconciler.firewall_handle(),
            logs: Mutex::new(None),
            metrics: Mutex::new(None),
        });

        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let mut tasks = Vec::new();
        if !once {
            // Bound here so a bad socket path or a second agent stops the start;
            // a restarted run (after a panic) binds afresh.
            let mut first = Some(
                control::bind(&config.agent.socket, &config.agent.socket_group)
                    .map_err(|e| e.to_string())?,
            );
            let source: Arc<dyn control::StatusSource> = shared.clone();
            let (path, group) = (
                config.agent.socket.clone(),
                config.agent.socket_group.clone(),
            );
            let serve = move || {
                let listener = first
                    .take()
                    .map(Ok)
                    .unwrap_or_else(|| control::bind(&path, &group));
                let (group, source, cmd_tx) = (group.clone(), source.clone(), cmd_tx.clone());
                async move {
                    match listener {
                        Ok(l) => control::serve(l, group, source, cmd_tx).await,
                        Err(e) => tracing::error!(error = %e, "control socket unavailable"),
                    }
                }
            };
            tasks.push(("control socket", spawn_supervised("control socket", serve)));
        }
        Ok(Agent {
            config,
            config_path,
            shared,
            secrets,
            files,
            reconciler,
            applied: BTreeMap::new(),
            apply_now: BTreeSet::new(),
            commands: cmd_rx,
            tasks,
            background: None,
            docker,
            sdk,
            once,
        })
    }

    /// Starts the log shipper and the metrics loop for the current config. They
    /// read the developer list at start, so a reload restarts them (after they
    /// flushed and checkpointed).
    fn start_background(&mut self) {
        if self.once {
            return;
        }
        let (shutdown, rx) = watch::channel(false);
        let mut handles = Vec::new();
        let identity = self.shared.identity.clone();
        if self.config.logs.enabled {
            let shipper = crate::logs::Shipper::new(
                self.docker.clone(),
                aws_sdk_cloudwatchlogs::Client::new(&self.sdk),
                &self.config,
                &identity,
            );
            if let Ok(mut l) = self.shared.logs.lock() {
                *l = Some(shipper.status_handle());
            }
            let rx = rx.clone();
            handles.push(tokio::spawn(async move {
                if let Err(e) = shipper.run(rx).await {
                    tracing::error!(error = %e, "log shipper stopped");
                }
            }));
        }
        if self.config.metrics.enabled {
            let metrics = crate::metrics::Metrics::new(
                aws_sdk_cloudwatch::Client::new(&self.sdk),
                self.docker.clone(),
                &self.config,
                &identity,
            );
            if let Ok(mut m) = self.shared.metrics.lock() {
                *m = Some(metrics.status_handle());
            }
            let source = self.shared.clone();
            handles.push(tokio::spawn(
                metrics.run(move || source.metrics_extra(), rx),
            ));
        }
        self.background = Some((shutdown, handles));
    }

    /// Tells the shipper and metrics loop to stop, and waits (bounded) for their
    /// final flush and checkpoints.
    async fn stop_background(&mut self) -> Vec<tokio::task::JoinError> {
        let Some((shutdown, handles)) = self.background.take() else {
            return Vec::new();
        };
        let _ = shutdown.send(true);
        let aborts: Vec<_> = handles.iter().map(|h| h.abort_handle()).collect();
        match tokio::time::timeout(SHUTDOWN_FLUSH, futures_util::future::join_all(handles)).await {
            Ok(results) => results.into_iter().filter_map(Result::err).collect(),
            Err(_) => {
                tracing::warn!(
                    "logs/metrics did not finish flushing in {SHUTDOWN_FLUSH:?}; checkpoints hold what was shipped"
                );
                // Never leave a second shipper running beside a new one.
                for a in aborts {
                    a.abort();
                }
                Vec::new()
            }
        }
    }

    /// Every developer's desired state from the current secrets.
    fn desired(&mut self) -> Vec<DesiredDeveloper> {
        let mut out = Vec::new();
        for dev in self.config.developers.clone() {
            let waiting = self.secrets.pending_since(&dev.name).is_some()
                && !self.apply_now.contains(&dev.name);
            let credentials = match (
                self.secrets.get(&dev.name).cloned(),
                self.applied.get(&dev.name),
            ) {
                (Some(DeveloperSecrets::Ready(_)), Some(applied)) if waiting => Ok(applied.clone()),
                (Some(DeveloperSecrets::Ready(c)), _) => self
                    .secrets
                    .password_hash(&dev.name)
                    .map_err(|e| e.to_string())
                    .and_then(|hash| {
                        let key_dir = self
                            .files
                            .write(&dev.name, c.claude_key.as_ref())
                            .map_err(|e| format!("credential file: {e}"))?;
                        Ok(ContainerCredentials {
                            hashed_password: hash,
                            password_version: c.password_version.clone(),
                            claude_key_version: c
                                .claude_key_version
                                .clone()
                                .filter(|_| c.claude_key.is_some()),
                            key_dir,
                        })
                    }),
                (Some(DeveloperSecrets::Failed { reason }), _) => Err(reason),
                (None, _) => Err("credentials not read yet".to_string()),
            };
            out.push(DesiredDeveloper {
                developer: dev,
                credentials,
            });
        }
        out
    }

    /// Hashes new password versions on blocking threads, so the async loop
    /// (watchdog, events, status) never waits on argon2. At most one hash per
    /// core at a time: argon2 is CPU-bound, so more would not finish sooner but
    /// would hold 19 MiB each (64 developers at once: 1.2 GiB).
    async fn prehash(&mut self) {
        use futures_util::StreamExt;
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        let started = Instant::now();
        let results: Vec<_> = futures_util::stream::iter(self.secrets.hashes_needed())
            .map(|(dev, version, password)| {
                tokio::task::spawn_blocking(move || {
                    let hash = crate::secrets::hash_password(&password);
                    (dev, version, hash)
                })
            })
            .buffer_unordered(parallel)
            .collect()
            .await;
        let mut hashed = 0;
        for joined in results {
            match joined {
                Ok((dev, version, Ok(hash))) => {
                    self.secrets.insert_hash(&dev, &version, hash);
                    hashed += 1;
                }
                Ok((dev, _, Err(e))) => {
                    tracing::error!(developer = %dev, error = %e, "hashing the password failed")
                }
                Err(e) => tracing::error!(error = %e, "hashing task failed"),
            }
        }
        if hashed > 0 {
            tracing::debug!(
                hashed,
                parallel,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "passwords hashed"
            );
            release_freed_memory();
        }
    }

    /// One convergence pass; true when every developer runs as desired.
    async fn converge_all(&mut self) -> bool {
        self.prehash().await;
        let desired = self.desired();
        let ok = match self.reconciler.converge(&desired).await {
            Ok(results) => {
                let mut bad = 0;
                for (dev, action) in &results {
                    let Some(d) = desired.iter().find(|d| &d.developer.name == dev) else {
                        continue;
                    };
                    match (action, &d.credentials) {
                        (Action::Failed(_) | Action::Skipped(_), _) => bad += 1,
                        (_, Ok(c)) => {
                            if self.applied.get(dev).map(|a| &a.password_version)
                                != Some(&c.password_version)
                            {
                                tracing::info!(developer = %dev, version = %&c.password_version[..c.password_version.len().min(8)], "credentials applied");
                            }
                            self.applied.insert(dev.clone(), c.clone());
                            self.apply_now.remove(dev);
                            if let Some(DeveloperSecrets::Ready(current)) =
                                self.secrets.get(dev).cloned()
                                && current.password_version == c.password_version
                            {
                                self.secrets.mark_applied(dev, &current);
                            }
                        }
                        _ => {}
                    }
                }
                progress(&format!(
                    "converged: {} of {} developers running as desired",
                    desired.len().saturating_sub(bad),
                    desired.len()
                ));
                bad == 0
            }
            Err(e) => {
                tracing::error!(error = %e, "convergence failed");
                notify(&[NotifyState::Status(&format!("degraded: {e}"))]);
                false
            }
        };
        self.publish_state(ok);
        ok
    }

    fn publish_state(&self, ok: bool) {
        if let Ok(mut s) = self.shared.secrets.lock() {
            *s = Some(self.secrets.status());
        }
        if let Ok(mut p) = self.shared.phase.lock() {
            *p = if ok {
                "running".into()
            } else {
                "degraded".into()
            };
        }
    }

    /// One rotation poll; true when a convergence pass is needed now.
    async fn poll_secrets(&mut self) -> bool {
        for ev in self.secrets.poll().await {
            tracing::info!(developer = %ev.developer, kind = ?ev.which, "rotation seen");
        }
        let mut needed = false;
        for dev in self.config.developers.clone() {
            if self.secrets.pending_since(&dev.name).is_none() {
                continue;
            }
            let idle = match self.config.secrets.apply {
                crate::config::ApplyPolicy::WhenIdle => is_idle(dev.port).await,
                crate::config::ApplyPolicy::Immediate => None,
            };
            match self.secrets.decide_for(&dev.name, SystemTime::now(), idle) {
                Some(ApplyDecision::ApplyNow) => {
                    self.apply_now.insert(dev.name.clone());
                    needed = true;
                }
                Some(ApplyDecision::Wait { until }) => {
                    tracing::debug!(developer = %dev.name, until = %status::rfc3339(until), "rotation waits until idle");
                }
                None => {}
            }
        }
        // A developer whose secrets appeared (or failed) changes desired state too.
        let newly_ready = self.config.developers.iter().any(|d| {
            matches!(self.secrets.get(&d.name), Some(DeveloperSecrets::Ready(_)))
                && !self.applied.contains_key(&d.name)
        });
        self.publish_state(true);
        needed || newly_ready
    }

    async fn run_loop(&mut self) -> i32 {
        let (mut term, mut int, mut hup) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(t), Ok(i), Ok(h)) => (t, i, h),
            _ => {
                tracing::error!("cannot install signal handlers");
                return exit::FAILED;
            }
        };
        notify(&[
            NotifyState::Ready,
            NotifyState::Status("running: converged, watching"),
        ]);
        // The main loop stamps `alive` every tick and the reconciler stamps its
        // progress; the watchdog task pings systemd only while one of them is
        // recent and every background task lives. A long image pull keeps
        // stamping; a wedged call does not, and systemd restarts us.
        let alive = Arc::new(AtomicU64::new(unix_now()));
        let tasks_ok = Arc::new(AtomicBool::new(true));
        let limit = sd_notify::watchdog_enabled();
        if let Some(limit) = limit {
            self.tasks.push((
                "watchdog",
                spawn_watchdog(
                    limit,
                    alive.clone(),
                    self.reconciler.progress(),
                    tasks_ok.clone(),
                ),
            ));
        }
        let tick = limit
            .map(|l| l / 4)
            .unwrap_or(Duration::from_secs(10))
            .max(Duration::from_millis(200));
        let mut watchdog_tick = tokio::time::interval(tick);
        let mut resync = tokio::time::interval(RESYNC_EVERY);
        resync.tick().await;
        let poll_sleep = tokio::time::sleep(self.secrets.next_poll_in());
        tokio::pin!(poll_sleep);

        let (event_tx, mut event_rx) = mpsc::unbounded_channel::<String>();
        self.tasks.push((
            "docker events",
            spawn_event_follower(self.reconciler.clone(), event_tx),
        ));

        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: stopping; containers keep running"); break; }
                _ = int.recv() => { tracing::info!("SIGINT: stopping; containers keep running"); break; }
                _ = hup.recv() => { let _ = self.reload().await; }
                _ = watchdog_tick.tick() => {
                    alive.store(unix_now(), Ordering::Relaxed);
                    // A dead background task means something is wrong that a
                    // restart fixes: stop feeding the watchdog.
                    let dead: Vec<&str> = self.tasks.iter().filter(|(_, t)| t.is_finished()).map(|(n, _)| *n).collect();
                    // The log shipper or metrics loop ended (a panic, or an error
                    // it cannot retry): stop the other one too, say why, start both again.
                    if self.background.as_ref().is_some_and(|(_, h)| h.iter().any(|t| t.is_finished())) {
                        for panic in self.stop_background().await {
                            tracing::error!(error = %panic, "logs/metrics task panicked");
                        }
                        tracing::warn!("restarting the log shipper and metrics loop");
                        self.start_background();
                    }
                    if !dead.is_empty() && tasks_ok.swap(false, Ordering::Relaxed) {
                        tracing::error!(tasks = ?dead, "background task ended; withholding the watchdog ping");
                    }
                }
                _ = &mut poll_sleep => {
                    if self.poll_secrets().await { self.converge_all().await; }
                    poll_sleep.as_mut().reset(tokio::time::Instant::now() + self.secrets.next_poll_in());
                }
                _ = resync.tick() => { self.converge_all().await; }
                Some(dev) = event_rx.recv() => {
                    // Coalesce bursts (one restart emits several events).
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    while event_rx.try_recv().is_ok() {}
                    tracing::debug!(developer = %dev, "docker event: converging");
                    self.converge_all().await;
                }
                Some((cmd, reply)) = self.commands.recv() => {
                    let result = match cmd {
                        Command::Reload => self.reload().await,
                        Command::RefreshSecrets => {
                            let needed = self.poll_secrets().await;
                            if needed { self.converge_all().await; }
                            Ok(format!("secrets refreshed{}", if needed { "; containers converged" } else { "; no change" }))
                        }
                    };
                    control::reply(reply, result);
                }
            }
        }
        self.stop().await;
        exit::OK
    }

    async fn stop(&mut self) {
        notify(&[
            NotifyState::Stopping,
            NotifyState::Status("stopping: flushing logs and metrics"),
        ]);
        self.stop_background().await;
        for (_, t) in &self.tasks {
            t.abort();
        }
        let _ = std::fs::remove_file(&self.config.agent.socket);
        tracing::info!("stopped");
    }

    async fn reload(&mut self) -> Result<String, String> {
        notify(&[NotifyState::Reloading]);
        let result = match Config::load(&self.config_path) {
            Ok(c) => {
                let c = Arc::new(c);
                tracing::info!(developers = c.developers.len(), "reloading config");
                // A developer no longer configured loses its key file (its data
                // directories stay on the volume).
                for gone in self
                    .config
                    .developers
                    .iter()
                    .filter(|d| c.developer(&d.name).is_none())
                {
                    if let Err(e) = self.files.remove(&gone.name) {
                        tracing::warn!(developer = %gone.name, error = %e, "cannot remove the credential file");
                    }
                    self.applied.remove(&gone.name);
                }
                self.secrets.set_config(&c);
                self.reconciler.set_config(c.clone());
                if let Ok(mut s) = self.shared.config.lock() {
                    *s = c.clone();
                }
                self.config = c.clone();
                let cfg = c.clone();
                // New developers need their directories before their containers.
                match tokio::task::spawn_blocking(move || {
                    crate::volume::prepare(&cfg, &|t: &str| progress(t))
                })
                .await
                {
                    Ok(Ok(v)) => {
                        if let Ok(mut s) = self.shared.volume.lock() {
                            *s = v;
                        }
                    }
                    Ok(Err(e)) => tracing::error!(error = %e, "volume pass after reload failed"),
                    Err(e) => tracing::error!(error = %e, "volume task failed"),
                }
                if let Err(e) = self.secrets.fetch_all().await {
                    tracing::warn!(error = %e, "secrets read after reload failed");
                }
                let ok = self.converge_all().await;
                self.stop_background().await;
                self.start_background();
                Ok(format!(
                    "reloaded {}: {} developers, {}",
                    self.config_path.display(),
                    c.developers.len(),
                    if ok {
                        "converged"
                    } else {
                        "degraded (see csagent status)"
                    }
                ))
            }
            Err(e) => {
                tracing::error!(error = %e, "reload refused: the config is invalid; keeping the running one");
                Err(format!("config invalid, nothing changed: {e}"))
            }
        };
        notify(&[NotifyState::Ready]);
        result
    }
}

/// Each argon2id hash takes 19 MiB. By default glibc raises its mmap threshold
/// after the first such buffer is freed, so later ones land in per-thread arenas
/// that keep the pages: hashing 8 passwords peaked at 130 MiB. A fixed threshold
/// keeps large buffers in their own mappings, given back on free.
fn pin_mmap_threshold() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tuning; it takes no pointers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Returns what the arenas still hold after a round of hashing (belt and braces
/// with the pinned threshold: small allocations made while hashing).
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it takes
    // no pointers and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Pings the systemd watchdog every `limit / 2` while the main loop or the
/// reconciler made progress within `limit` and the background tasks live.
fn spawn_watchdog(
    limit: Duration,
    alive: Arc<AtomicU64>,
    progress: Arc<AtomicU64>,
    tasks_ok: Arc<AtomicBool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval((limit / 2).max(Duration::from_millis(100)));
        let mut warned = false;
        loop {
            tick.tick().await;
            let last = alive
                .load(Ordering::Relaxed)
                .max(progress.load(Ordering::Relaxed));
            let idle = Duration::from_secs(unix_now().saturating_sub(last));
            if tasks_ok.load(Ordering::Relaxed) && idle < limit {
                notify(&[NotifyState::Watchdog]);
                warned = false;
            } else if !warned {
                tracing::error!(stalled = ?idle, "main loop stalled or a task died; withholding the watchdog ping");
                warned = true;
            }
        }
    })
}

async fn connect_docker() -> Result<bollard::Docker, String> {
    let mut backoff = crate::containers::reconnect_backoff();
    loop {
        let attempt = match bollard::Docker::connect_with_local_defaults() {
            Ok(d) => d.negotiate_version().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match attempt {
            Ok(d) => return Ok(d),
            Err(e) if backoff.attempts() < 10 => {
                progress(&format!("waiting for the Docker engine: {e}"));
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => return Err(format!("docker: cannot reach the engine: {e}")),
        }
    }
}

/// Follows Docker events in its own task, reconnecting with backoff when dockerd
/// goes away; each relevant event (and each reconnect) asks for a convergence.
fn spawn_event_follower(follower: Reconciler, tx: mpsc::UnboundedSender<String>) -> JoinHandle<()> {
    let mut restarted = false;
    spawn_supervised("docker events", move || {
        // Events may have been missed while the follower was down: converge.
        if std::mem::replace(&mut restarted, true) {
            let _ = tx.send(String::new());
        }
        follow_events(follower.clone(), tx.clone())
    })
}

async fn follow_events(follower: Reconciler, tx: mpsc::UnboundedSender<String>) {
    let mut backoff = crate::containers::reconnect_backoff();
    loop {
        let tx2 = tx.clone();
        let followed_since = Instant::now();
        let result = follower
            .follow_events(move |dev, action| {
                if matches!(action.as_str(), "die" | "destroy" | "stop" | "kill" | "oom") {
                    let _ = tx2.send(dev);
                }
            })
            .await;
        match result {
            Ok(()) => tracing::warn!("docker event stream ended; reconnecting"),
            Err(e) => tracing::warn!(error = %e, "docker event stream failed; reconnecting"),
        }
        // Wait (with backoff) until the engine answers again, then converge:
        // events may have been missed while disconnected.
        loop {
            tokio::time::sleep(backoff.next_delay()).await;
            if follower.docker().ping().await.is_ok() {
                break;
            }
        }
        // A stream that held for a while was healthy: start the backoff over.
        // One that fails at once keeps growing it, so a broken events API
        // cannot spin this loop.
        if followed_since.elapsed() > Duration::from_secs(30) {
            backoff.reset();
        }
        tracing::info!("docker engine is back; converging");
        let _ = tx.send(String::new());
    }
}
