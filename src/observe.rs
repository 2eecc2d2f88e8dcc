//! What the reconcilers observed, in one place.
//!
//! [`Observations`] is created once when the agent starts and cloned cheaply:
//! each capability gets its own section and is the only writer of it (the main
//! loop writes the phase, the config in force, the volume and the secrets; the
//! container reconciler its containers, firewall and image pulls; the log shipper and the
//! metrics loop theirs). Sections live as long as the process: a restarted log
//! shipper or metrics loop reports into the same section. Readers (`csagent
//! status`, the metrics loop's agent datums) take a [`Snapshot`], plain data,
//! and never probe or write anything.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::aws::Identity;
use crate::config::Config;
use crate::containers::{ContainerStatus, PullStatus, RolloutStatus, StatusHandle};
use crate::developer_set::DeveloperSetStatus;
use crate::logs::{LogsStatus, LogsStatusHandle};
use crate::metrics::{AgentReadings, MetricsStatus, MetricsStatusHandle, QuotaReading};
use crate::secrets::SecretsStatus;
use crate::volume::VolumeStatus;

/// One value its owner publishes whole and readers copy. Cheap to clone: clones
/// share the value.
#[derive(Debug, Default)]
pub struct Published<T>(Arc<Mutex<T>>);

impl<T> Clone for Published<T> {
    fn clone(&self) -> Self {
        Published(self.0.clone())
    }
}

impl<T: Clone> Published<T> {
    pub fn new(value: T) -> Published<T> {
        Published(Arc::new(Mutex::new(value)))
    }

    pub fn set(&self, value: T) {
        *self.lock() = value;
    }

    pub fn get(&self) -> T {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, T> {
        // Plain data replaced whole: a panic elsewhere cannot leave it half-written.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where the agent is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Phase {
    /// Started, first convergence not finished.
    #[default]
    Starting,
    /// The last pass converged every developer.
    Running,
    /// The last pass left a developer (or the whole pass) failed.
    Degraded,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Degraded => "degraded",
        }
    }
}

/// Every capability's section; see the module doc for who writes which.
#[derive(Clone)]
pub struct Observations {
    started: Instant,
    identity: Identity,
    /// The config the agent runs with (replaced on reload).
    pub config: Published<Arc<Config>>,
    /// Where the developers in `config` come from.
    pub developer_set: Published<DeveloperSetStatus>,
    pub phase: Published<Phase>,
    pub volume: Published<VolumeStatus>,
    /// None until the first read of the secrets.
    pub secrets: Published<Option<SecretsStatus>>,
    pub containers: StatusHandle,
    /// Why a firewall rule could not be installed, if one could not.
    pub firewall: Published<Option<String>>,
    /// The image: registry, the pull running now, the last pull's outcome.
    pub image: Published<PullStatus>,
    /// The staged rollout of an image or spec change.
    pub rollout: Published<RolloutStatus>,
    pub logs: LogsStatusHandle,
    pub metrics: MetricsStatusHandle,
}

/// A copy of every section at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub config: Arc<Config>,
    pub developer_set: DeveloperSetStatus,
    pub identity: Identity,
    /// Since the agent started.
    pub uptime: Duration,
    pub phase: Phase,
    pub volume: VolumeStatus,
    pub secrets: Option<SecretsStatus>,
    pub containers: BTreeMap<String, ContainerStatus>,
    pub firewall: Option<String>,
    pub image: PullStatus,
    pub rollout: RolloutStatus,
    /// `enabled` is false while no shipper runs.
    pub logs: LogsStatus,
    /// None while no metrics loop runs.
    pub metrics: Option<MetricsStatus>,
}

impl Observations {
    pub fn new(config: Arc<Config>, identity: Identity) -> Observations {
        Observations {
            started: Instant::now(),
            identity,
            config: Published::new(config),
            developer_set: Published::default(),
            phase: Published::default(),
            volume: Published::default(),
            secrets: Published::default(),
            containers: StatusHandle::default(),
            firewall: Published::default(),
            image: Published::default(),
            rollout: Published::default(),
            logs: LogsStatusHandle::default(),
            metrics: MetricsStatusHandle::default(),
        }
    }

    /// Where the agent runs (known before anything is observed).
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            config: self.config.get(),
            developer_set: self.developer_set.get(),
            identity: self.identity.clone(),
            uptime: self.started.elapsed(),
            phase: self.phase.get(),
            volume: self.volume.get(),
            secrets: self.secrets.get(),
            containers: self.containers.snapshot(),
            firewall: self.firewall.get(),
            image: self.image.get(),
            rollout: self.rollout.get(),
            logs: self.logs.snapshot(),
            metrics: Some(self.metrics.snapshot()).filter(|m| m.enabled),
        }
    }

    /// What the metrics loop sends about the agent itself.
    pub fn agent_readings(&self) -> AgentReadings {
        let mut r = agent_readings(self.secrets.get().as_ref(), &self.logs.snapshot());
        r.disk_quota = quota_readings(&self.volume.get());
        r
    }
}

/// Each developer's accounted home use, for the `disk_quota_used_*` metrics.
pub fn quota_readings(volume: &VolumeStatus) -> Vec<QuotaReading> {
    let Some(q) = &volume.quota else {
        return Vec::new();
    };
    q.developers
        .iter()
        .filter_map(|(name, d)| {
            Some(QuotaReading {
                developer: name.clone(),
                used_bytes: d.used_bytes?,
                limit_bytes: d.limit_bytes,
            })
        })
        .collect()
}

fn agent_readings(secrets: Option<&SecretsStatus>, logs: &LogsStatus) -> AgentReadings {
    let staleness = secrets.and_then(|s| s.staleness_seconds).unwrap_or(0);
    let lag = logs.enabled.then(|| {
        logs.developers
            .values()
            .map(|d| d.lag_seconds)
            .fold(0.0, f64::max)
    });
    let lost = logs.enabled.then(|| {
        logs.developers
            .values()
            .map(|d| d.lost_log_files + d.log_gaps)
            .sum()
    });
    AgentReadings {
        secrets_staleness_seconds: staleness as f64,
        log_lag_seconds: lag,
        log_files_lost: lost,
        disk_quota: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::DeveloperLogs;

    #[test]
    fn published_clones_share_the_value() {
        let a = Published::new(Phase::Starting);
        let b = a.clone();
        b.set(Phase::Degraded);
        assert_eq!(a.get(), Phase::Degraded);
        assert_eq!(a.get().as_str(), "degraded");
    }

    #[test]
    fn log_lag_is_the_worst_developer_losses_the_sum_and_absent_without_a_shipper() {
        let mut logs = LogsStatus::default();
        assert_eq!(agent_readings(None, &logs).log_lag_seconds, None);
        assert_eq!(agent_readings(None, &logs).log_files_lost, None);
        logs.enabled = true;
        assert_eq!(agent_readings(None, &logs).log_lag_seconds, Some(0.0));
        assert_eq!(agent_readings(None, &logs).log_files_lost, Some(0));
        for (name, lag, lost, gaps) in [("dev1", 3.0, 7, 0), ("dev2", 40.0, 2, 1)] {
            let d = DeveloperLogs {
                lag_seconds: lag,
                lost_log_files: lost,
                log_gaps: gaps,
                ..Default::default()
            };
            logs.developers.insert(name.into(), d);
        }
        let r = agent_readings(None, &logs);
        assert_eq!(r.log_lag_seconds, Some(40.0));
        assert_eq!(
            r.log_files_lost,
            Some(10),
            "files and gaps of every developer"
        );
        assert_eq!(r.secrets_staleness_seconds, 0.0);
    }
}
