//! One code-server container per developer, converged through the Docker API.
//!
//! Labels are the source of truth for what csagent owns: only containers labelled
//! `csagent.managed=true` are ever changed or removed. A container named like ours
//! without the label is reported and left alone. The spec hash label decides
//! whether a container still matches what the config and credentials ask for.

pub mod crashloop;
mod events;
pub mod network;
pub mod spec;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bollard::Docker;
use bollard::models::{ContainerStateStatusEnum, HealthStatusEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;
use serde::Serialize;

use crate::config::{Config, Developer, PullPolicy};
use crate::observe::Published;
use crate::retry::{Backoff, Class, classify_docker};
pub use events::{connect, spawn_event_follower};
pub use spec::{ContainerCredentials, DesiredSpec, ImageInfo, container_name};
use spec::{
    LABEL_DEVELOPER, LABEL_MANAGED, LABEL_PASSWORD_VERSION, LABEL_PROJECT, LABEL_SPEC_HASH,
};

#[derive(Debug, thiserror::Error)]
pub enum ContainersError {
    #[error("docker: {what}: {source}")]
    Docker {
        what: String,
        source: bollard::errors::Error,
    },
    #[error("network {network}: {message}")]
    Network { network: String, message: String },
    #[error("firewall: {0}")]
    Firewall(String),
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ContainersError {
    pub fn class(&self) -> Class {
        match self {
            ContainersError::Docker { source, .. } => classify_docker(source),
            _ => Class::Permanent,
        }
    }
}

/// What the agent wants for one developer this pass.
#[derive(Debug, Clone)]
pub struct DesiredDeveloper {
    pub developer: Developer,
    /// Credentials to run with, or why the developer cannot be started.
    pub credentials: Result<ContainerCredentials, String>,
}

/// What the reconciler did for one developer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action", content = "detail")]
pub enum Action {
    Unchanged,
    Created,
    Started,
    Recreated(String),
    Removed,
    /// Left alone on purpose (not ours, crash-looping, no credentials).
    Skipped(String),
    Failed(String),
}

/// Observed state of one developer's container, for status and metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ContainerStatus {
    pub developer: String,
    pub name: String,
    pub port: u16,
    pub id: Option<String>,
    /// created | running | restarting | exited | missing | ...
    pub state: String,
    /// healthy | unhealthy | starting | none
    pub health: String,
    pub started_at: Option<String>,
    pub restarts: i64,
    pub password_version: Option<String>,
    pub crash_looping: bool,
    pub last_log_lines: Vec<String>,
    /// Why the container is not as desired (no credentials, image missing, ...).
    pub problem: Option<String>,
    pub last_action: Option<Action>,
    pub recreated_at: Option<SystemTime>,
}

/// Shared, cheaply cloned view the status command and metrics read.
#[derive(Debug, Clone, Default)]
pub struct StatusHandle(Arc<Mutex<BTreeMap<String, ContainerStatus>>>);

impl StatusHandle {
    pub fn snapshot(&self) -> BTreeMap<String, ContainerStatus> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }

    fn update(&self, developer: &str, f: impl FnOnce(&mut ContainerStatus)) {
        if let Ok(mut m) = self.0.lock() {
            let entry = m
                .entry(developer.to_string())
                .or_insert_with(|| ContainerStatus {
                    developer: developer.to_string(),
                    name: container_name(developer),
                    ..Default::default()
                });
            f(entry);
        }
    }

    fn retain(&self, keep: &BTreeSet<String>) {
        if let Ok(mut m) = self.0.lock() {
            m.retain(|k, _| keep.contains(k));
        }
    }
}

/// Cheap to clone: clones share the observed state and the crash-loop guard, so
/// the event follower (a clone in its own task) updates what status reads.
#[derive(Clone)]
pub struct Reconciler {
    docker: Docker,
    config: Arc<Config>,
    status: StatusHandle,
    crash: Arc<Mutex<crashloop::CrashTracker>>,
    progress: Arc<AtomicU64>,
    /// Why a firewall rule could not be installed, if one could not.
    firewall: Published<Option<String>>,
}

/// Unix seconds now (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Reconciler {
    pub fn new(docker: Docker, config: Arc<Config>) -> Reconciler {
        Reconciler {
            docker,
            config,
            status: StatusHandle::default(),
            crash: Arc::new(Mutex::new(crashloop::CrashTracker::new(
                5,
                Duration::from_secs(600),
            ))),
            progress: Arc::new(AtomicU64::new(unix_now())),
            firewall: Published::default(),
        }
    }

    pub fn status_handle(&self) -> StatusHandle {
        self.status.clone()
    }

    /// Publishes what it observes into the agent's long-lived sections.
    pub fn reporting_to(
        mut self,
        containers: StatusHandle,
        firewall: Published<Option<String>>,
    ) -> Reconciler {
        self.status = containers;
        self.firewall = firewall;
        self
    }

    /// When the reconciler last made progress (unix seconds): each developer
    /// handled and each image pull update stamps it, so the daemon's watchdog
    /// can tell a long pull from a wedged call.
    pub fn progress(&self) -> Arc<AtomicU64> {
        self.progress.clone()
    }

    pub fn set_config(&mut self, config: Arc<Config>) {
        self.config = config;
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// One full pass: network, firewall, image, every developer, and removal of
    /// managed containers no longer configured. Per-developer failures are
    /// recorded and do not stop the others.
    pub async fn converge(
        &self,
        desired: &[DesiredDeveloper],
    ) -> Result<Vec<(String, Action)>, ContainersError> {
        network::ensure_network(&self.docker, &self.config).await?;
        let problems = network::ensure_firewall(&self.config.containers).await;
        self.firewall
            .set((!problems.is_empty()).then(|| problems.join("; ")));
        let image = self.ensure_image().await;

        let work = desired.iter().map(|d| self.converge_one(d, &image));
        let mut results: Vec<(String, Action)> = futures_util::future::join_all(work)
            .await
            .into_iter()
            .collect();

        let configured: BTreeSet<String> =
            desired.iter().map(|d| d.developer.name.clone()).collect();
        results.extend(self.remove_unconfigured(&configured).await?);
        self.status.retain(&configured);
        for (dev, action) in &results {
            match action {
                Action::Failed(e) => {
                    tracing::warn!(developer = %dev, error = %e, "developer not converged")
                }
                Action::Unchanged => {}
                a => tracing::info!(developer = %dev, action = ?a, "converged"),
            }
        }
        Ok(results)
    }

    /// Makes sure the image is present per `containers.pull`, with pull progress
    /// in the log. An error here is reported per developer; nothing else stops.
    pub async fn ensure_image(&self) -> Result<ImageInfo, String> {
        let image = &self.config.containers.image;
        let present = self.docker.inspect_image(image).await.ok();
        let pull = match self.config.containers.pull {
            PullPolicy::Always => true,
            PullPolicy::IfNotPresent => present.is_none(),
            PullPolicy::Never => false,
        };
        if pull && let Err(e) = self.pull(image).await {
            if present.is_none() {
                return Err(format!(
                    "image {image} is not present and cannot be pulled: {e}"
                ));
            }
            tracing::warn!(image = %image, error = %e, "pull failed; using the image already present");
        }
        let inspect = match self.docker.inspect_image(image).await {
            Ok(i) => i,
            Err(_) if self.config.containers.pull == PullPolicy::Never => {
                return Err(format!(
                    "image {image} is not present and containers.pull is \"never\""
                ));
            }
            Err(e) => return Err(format!("image {image}: {e}")),
        };
        let cfg = inspect.config.unwrap_or_default();
        Ok(ImageInfo {
            id: inspect.id.unwrap_or_default(),
            entrypoint: cfg.entrypoint.unwrap_or_default(),
            cmd: cfg.cmd.unwrap_or_default(),
        })
    }

    async fn pull(&self, image: &str) -> Result<(), String> {
        let (from_image, tag) = match image.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, t),
            _ => (image, "latest"),
        };
        let opts = CreateImageOptionsBuilder::new()
            .from_image(from_image)
            .tag(tag)
            .build();
        let mut stream = self.docker.create_image(Some(opts), None, None);
        let mut last_status = String::new();
        while let Some(item) = stream.next().await {
            self.progress.store(unix_now(), Ordering::Relaxed);
            let info = item.map_err(|e| e.to_string())?;
            if let Some(status) = info.status
                && status != last_status
            {
                tracing::info!(image, progress = %status, "pulling");
                last_status = status;
            }
        }
        Ok(())
    }

    async fn converge_one(
        &self,
        d: &DesiredDeveloper,
        image: &Result<ImageInfo, String>,
    ) -> (String, Action) {
        let dev = &d.developer;
        self.progress.store(unix_now(), Ordering::Relaxed);
        let action = self.converge_inner(d, image).await;
        self.status.update(&dev.name, |s| {
            s.port = dev.port;
            s.problem = match &action {
                Action::Failed(e) | Action::Skipped(e) => Some(e.clone()),
                _ => None,
            };
            if matches!(action, Action::Recreated(_) | Action::Created) {
                s.recreated_at = Some(SystemTime::now());
            }
            s.last_action = Some(action.clone());
        });
        self.observe_one(&dev.name).await;
        (dev.name.clone(), action)
    }

    async fn converge_inner(
        &self,
        d: &DesiredDeveloper,
        image: &Result<ImageInfo, String>,
    ) -> Action {
        let dev = &d.developer;
        let name = container_name(&dev.name);
        let existing = match self.docker.inspect_container(&name, None).await {
            Ok(c) => Some(c),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => None,
            Err(e) => return Action::Failed(format!("inspect {name}: {e}")),
        };
        if let Some(c) = &existing {
            let labels = c
                .config
                .as_ref()
                .and_then(|c| c.labels.clone())
                .unwrap_or_default();
            if labels.get(LABEL_MANAGED).map(String::as_str) != Some("true") {
                return Action::Skipped(format!(
                    "a container named {name} exists without the {LABEL_MANAGED} label; csagent leaves it alone: remove or rename it"
                ));
            }
        }
        let creds = match &d.credentials {
            Ok(c) => c,
            // Without a password the developer is not started; an existing
            // container keeps running with the credentials it had.
            Err(reason) => return Action::Skipped(format!("not started: {reason}")),
        };
        let image = match image {
            Ok(i) => i,
            Err(e) => return Action::Failed(e.clone()),
        };
        let spec = DesiredSpec::new(&self.config, dev, image, creds);
        let want_hash = spec.hash();

        let Some(c) = existing else {
            return match self.create_and_start(&spec, &creds.hashed_password).await {
                Ok(()) => Action::Created,
                Err(e) => Action::Failed(e),
            };
        };
        let labels = c
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        if labels.get(LABEL_SPEC_HASH) != Some(&want_hash) {
            let reason = if labels.get(LABEL_PASSWORD_VERSION) != Some(&creds.password_version) {
                "credentials rotated".to_string()
            } else {
                "spec changed".to_string()
            };
            if let Err(e) = self.remove(&name).await {
                return Action::Failed(e);
            }
            return match self.create_and_start(&spec, &creds.hashed_password).await {
                Ok(()) => Action::Recreated(reason),
                Err(e) => Action::Failed(e),
            };
        }
        let state = c.state.as_ref().and_then(|s| s.status);
        match state {
            Some(ContainerStateStatusEnum::RUNNING)
            | Some(ContainerStateStatusEnum::RESTARTING) => Action::Unchanged,
            _ => {
                // Docker's restart policy already restarts crashes; a crash loop is
                // reported, not fought.
                let looping = self
                    .crash
                    .lock()
                    .map(|c| c.is_looping(&dev.name))
                    .unwrap_or(false);
                if looping {
                    return Action::Skipped(
                        "crash-looping; not restarting it (see its last log lines)".into(),
                    );
                }
                match self.docker.start_container(&name, None).await {
                    Ok(()) => Action::Started,
                    Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 304,
                        ..
                    }) => Action::Unchanged,
                    Err(e) => Action::Failed(format!("start {name}: {e}")),
                }
            }
        }
    }

    async fn create_and_start(
        &self,
        spec: &DesiredSpec,
        hashed_password: &str,
    ) -> Result<(), String> {
        let opts = CreateContainerOptionsBuilder::new()
            .name(&spec.name)
            .build();
        self.docker
            .create_container(Some(opts), spec.create_body(hashed_password))
            .await
            .map_err(|e| format!("create {}: {e}", spec.name))?;
        self.docker
            .start_container(&spec.name, None)
            .await
            .map_err(|e| format!("start {}: {e}", spec.name))
    }

    async fn remove(&self, name: &str) -> Result<(), String> {
        let opts = RemoveContainerOptionsBuilder::new().force(true).build();
        match self.docker.remove_container(name, Some(opts)).await {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(format!("remove {name}: {e}")),
        }
    }

    /// Removes managed containers whose developer is no longer configured. Their
    /// data directories are never touched.
    async fn remove_unconfigured(
        &self,
        configured: &BTreeSet<String>,
    ) -> Result<Vec<(String, Action)>, ContainersError> {
        let mut out = Vec::new();
        for c in self.list_managed().await? {
            let dev = c
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_DEVELOPER))
                .cloned()
                .unwrap_or_default();
            if configured.contains(&dev) {
                continue;
            }
            let name = c
                .names
                .unwrap_or_default()
                .first()
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default();
            match self.remove(&name).await {
                Ok(()) => {
                    tracing::info!(developer = %dev, container = %name, "removed container of a developer no longer configured (data kept)");
                    out.push((dev, Action::Removed));
                }
                Err(e) => out.push((dev, Action::Failed(e))),
            }
        }
        Ok(out)
    }

    async fn list_managed(
        &self,
    ) -> Result<Vec<bollard::models::ContainerSummary>, ContainersError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{LABEL_MANAGED}=true"),
                format!("{LABEL_PROJECT}={}", self.config.project),
            ],
        )]);
        let opts = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        self.docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| ContainersError::Docker {
                what: "list managed containers".into(),
                source: e,
            })
    }

    /// Refreshes the observed state of one developer's container.
    pub async fn observe_one(&self, developer: &str) {
        let name = container_name(developer);
        let looping = self
            .crash
            .lock()
            .map(|c| c.is_looping(developer))
            .unwrap_or(false);
        let inspect = self.docker.inspect_container(&name, None).await;
        let last_lines = if looping {
            self.last_log_lines(&name, 20).await
        } else {
            Vec::new()
        };
        self.status.update(developer, |s| {
            s.crash_looping = looping;
            s.last_log_lines = last_lines;
            match inspect {
                Ok(c) => {
                    let managed = c
                        .config
                        .as_ref()
                        .and_then(|c| c.labels.as_ref())
                        .and_then(|l| l.get(LABEL_MANAGED))
                        .is_some_and(|v| v == "true");
                    let state = c.state.clone().unwrap_or_default();
                    s.id = c.id.clone();
                    s.state = state
                        .status
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "unknown".into());
                    s.health = state
                        .health
                        .and_then(|h| h.status)
                        .map(|h| match h {
                            HealthStatusEnum::EMPTY => "none".to_string(),
                            other => other.to_string(),
                        })
                        .unwrap_or_else(|| "none".into());
                    s.started_at = state.started_at;
                    s.restarts = c.restart_count.unwrap_or(0);
                    s.password_version = c
                        .config
                        .and_then(|c| c.labels)
                        .and_then(|l| l.get(LABEL_PASSWORD_VERSION).cloned());
                    if !managed {
                        s.state = format!("unmanaged ({})", s.state);
                    }
                }
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {
                    s.id = None;
                    s.state = "missing".into();
                    s.health = "none".into();
                    s.started_at = None;
                }
                // dockerd unreachable: the container may well be fine; say we
                // do not know rather than "missing".
                Err(e) => {
                    s.state = "unknown".into();
                    s.problem = Some(format!("docker unreachable: {e}"));
                }
            }
        });
    }

    async fn last_log_lines(&self, name: &str, n: usize) -> Vec<String> {
        let opts = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&n.to_string())
            .build();
        let mut stream = self.docker.logs(name, Some(opts));
        let mut lines = Vec::new();
        while let Some(Ok(chunk)) = stream.next().await {
            lines.extend(
                String::from_utf8_lossy(&chunk.into_bytes())
                    .lines()
                    .map(str::to_owned),
            );
        }
        lines.truncate(n);
        lines
    }
}

/// Backoff used between reconnect attempts to dockerd.
pub fn reconnect_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(500), Duration::from_secs(30))
}
