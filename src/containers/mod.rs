//! One code-server container per developer, converged through the Docker API.
//!
//! Labels are the source of truth for what csagent owns: only containers labelled
//! `csagent.managed=true` are ever changed or removed. A container named like ours
//! without the label is reported and left alone. The spec hash label decides
//! whether a container still matches what the config and credentials ask for.

pub mod crashloop;
mod disks;
mod ecr;
mod events;
mod execute;
mod image;
pub mod init;
pub mod network;
pub mod plan;
pub mod pull;
pub mod registry;
mod retire;
pub mod rollout;
pub mod spec;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bollard::Docker;
use bollard::models::HealthStatusEnum;
use bollard::query_parameters::LogsOptionsBuilder;
use futures_util::StreamExt;
use serde::Serialize;

use crate::config::{Config, Developer};
use crate::logs::LogsStatusHandle;
use crate::observe::Published;
use crate::retry::{Backoff, Class, classify_docker};
pub use ecr::{EcrError, EcrTokens};
pub use events::{connect, spawn_event_follower};
pub use pull::{PullProgress, PullStatus};
pub use retire::DRAIN_TIMEOUT;
pub use rollout::RolloutStatus;
pub use spec::{ContainerCredentials, DesiredSpec, ImageInfo, container_name};

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
    /// Its spec changed, but the staged rollout holds it on its current
    /// container for now (why).
    Waiting(String),
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
    /// A spec change the staged rollout holds back for now, and why.
    pub pending_update: Option<String>,
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
    /// The log shipper's section: a container is removed only once its log
    /// was shipped to the end ([`retire`]).
    logs: LogsStatusHandle,
    /// The image and its pulls, for status.
    pulls: Published<PullStatus>,
    /// ECR pull credentials; None: an image that needs them cannot be pulled.
    ecr: Option<Arc<EcrTokens>>,
    /// The staged rollout of image and spec changes, across passes.
    rollout: Arc<Mutex<rollout::Rollout>>,
    /// Where the rollout stands, for status.
    rollout_status: Published<RolloutStatus>,
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
            logs: LogsStatusHandle::default(),
            pulls: Published::default(),
            ecr: None,
            rollout: Arc::default(),
            rollout_status: Published::default(),
        }
    }

    /// Publishes where the staged rollout stands into the agent's long-lived section.
    pub fn reporting_rollout_to(mut self, rollout: Published<RolloutStatus>) -> Reconciler {
        self.rollout_status = rollout;
        self
    }

    /// Pulls from ECR with tokens from `tokens` (one cache for every pull).
    pub fn with_ecr(mut self, tokens: EcrTokens) -> Reconciler {
        self.ecr = Some(Arc::new(tokens));
        self
    }

    /// Publishes the image and its pulls into the agent's long-lived section.
    pub fn reporting_pulls_to(mut self, pulls: Published<PullStatus>) -> Reconciler {
        self.pulls = pulls;
        self
    }

    /// Where the staged rollout stands, as last published.
    pub fn rollout_status(&self) -> RolloutStatus {
        self.rollout_status.get()
    }

    /// The image and its pulls as last published.
    pub fn pull_status(&self) -> PullStatus {
        self.pulls.get()
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

    /// Waits for the log shipper reporting into `logs` to drain a container's
    /// log before removing the container. Without it (or while no shipper
    /// runs) containers are removed as soon as they stopped.
    pub fn draining_logs_of(mut self, logs: LogsStatusHandle) -> Reconciler {
        self.logs = logs;
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

        // Decide for every developer first, so the rollout sees them all, then act.
        let observed = futures_util::future::join_all(
            desired
                .iter()
                .map(|d| self.observe_for_plan(&d.developer.name, &image)),
        )
        .await;
        let mut steps: Vec<plan::Step<'_>> = desired
            .iter()
            .zip(&observed)
            .map(|(d, o)| {
                plan::plan(
                    o,
                    &plan::Desired {
                        config: &self.config,
                        developer: d,
                    },
                )
            })
            .collect();
        self.gate_rollout(desired, &observed, &mut steps).await;
        let work = desired
            .iter()
            .zip(steps)
            .map(|(d, step)| self.converge_one(d, step));
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
                Action::Unchanged | Action::Waiting(_) => {}
                a => tracing::info!(developer = %dev, action = ?a, "converged"),
            }
        }
        Ok(results)
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
        let project = self.config.project.clone();
        self.status.update(developer, |s| {
            s.crash_looping = looping;
            s.last_log_lines = last_lines;
            match inspect {
                Ok(c) => {
                    let seen = plan::Existing::from_inspect(&c);
                    let state = c.state.unwrap_or_default();
                    s.id = c.id;
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
                    s.password_version = seen.password_version;
                    // Another project's container under our name is not ours either.
                    if !seen.managed || seen.project.as_deref() != Some(project.as_str()) {
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
