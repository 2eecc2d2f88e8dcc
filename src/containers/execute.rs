//! The reconciler's doing half: gather what Docker shows for a developer, ask
//! [`plan`](super::plan::plan) what to do, do it, and record the outcome in status.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use bollard::models::ContainerStateStatusEnum;
use bollard::query_parameters::{CreateContainerOptionsBuilder, ListContainersOptionsBuilder};

use super::plan::{
    Disks, Existing, Found, Launch, Listed, Observed, SPEC_CHANGED, Step, to_remove,
};
use super::rollout::{Seen, Verdict};
use super::spec::{LABEL_MANAGED, LABEL_PROJECT};
use super::{
    Action, ContainersError, DesiredDeveloper, ImageInfo, Reconciler, container_name, unix_now,
};
use crate::config::{ApplyPolicy, RolloutStrategy};

impl Reconciler {
    pub(super) async fn converge_one(
        &self,
        d: &DesiredDeveloper,
        step: Step<'_>,
    ) -> (String, Action) {
        let dev = &d.developer;
        self.progress.store(unix_now(), Ordering::Relaxed);
        let action = self.carry_out(d, step).await;
        self.status.update(&dev.name, |s| {
            s.port = dev.port;
            s.problem = match &action {
                Action::Failed(e) | Action::Skipped(e) => Some(e.clone()),
                _ => None,
            };
            s.pending_update = match &action {
                Action::Waiting(why) => Some(why.clone()),
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

    /// Carries out the step [`plan`] chose (and the rollout let through).
    async fn carry_out(&self, d: &DesiredDeveloper, step: Step<'_>) -> Action {
        let name = container_name(&d.developer.name);
        match step {
            Step::Nothing => Action::Unchanged,
            Step::Create(launch) => match self.create_and_start(&launch).await {
                Ok(()) => Action::Created,
                Err(e) => Action::Failed(e),
            },
            Step::Start => match self.docker.start_container(&name, None).await {
                Ok(()) => Action::Started,
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 304, ..
                }) => Action::Unchanged,
                Err(e) => Action::Failed(format!("start {name}: {e}")),
            },
            Step::Recreate { launch, why } => {
                if let Err(e) = self.retire(&d.developer.name, &name).await {
                    return Action::Failed(e);
                }
                match self.create_and_start(&launch).await {
                    Ok(()) => Action::Recreated(why),
                    Err(e) => Action::Failed(e),
                }
            }
            Step::Relocate { launch, why } => {
                tracing::warn!(developer = %d.developer.name, reason = %why, "container's data is not on the data volume: removing it, quarantining what it wrote on the root disk, starting it on the volume");
                if let Err(e) = self.retire(&d.developer.name, &name).await {
                    return Action::Failed(e);
                }
                self.sweep_stray(&d.developer.name).await;
                match launch {
                    Some(launch) => match self.create_and_start(&launch).await {
                        Ok(()) => Action::Recreated(why),
                        Err(e) => Action::Failed(e),
                    },
                    None => Action::Skipped(format!("removed: {why}")),
                }
            }
            Step::Skip { why } => Action::Skipped(why),
            Step::Wait { why } => Action::Waiting(why),
            Step::Fail { why } => Action::Failed(why),
        }
    }

    /// Turns the spec-changed recreates the staged rollout does not let through
    /// this pass into [`Step::Wait`], and publishes where the rollout stands.
    pub(super) async fn gate_rollout(
        &self,
        desired: &[DesiredDeveloper],
        observed: &[Observed<'_>],
        steps: &mut [Step<'_>],
    ) {
        let config = &self.config.rollout;
        let ask_idle =
            config.apply == ApplyPolicy::WhenIdle && config.strategy == RolloutStrategy::OneAtATime;
        let mut seen = Vec::with_capacity(desired.len());
        for ((d, o), step) in desired.iter().zip(observed).zip(steps.iter()) {
            let existing = match &o.container {
                Found::Present(c) => Some(c),
                _ => None,
            };
            let drifted_to = match step {
                Step::Recreate { launch, why } if why == SPEC_CHANGED => Some(launch.spec.hash()),
                _ => None,
            };
            let idle = if ask_idle && drifted_to.is_some() {
                crate::secrets::policy::is_idle(d.developer.port).await
            } else {
                None
            };
            seen.push(Seen {
                developer: d.developer.name.clone(),
                drifted_to,
                current: existing.and_then(|c| c.spec_hash.clone()),
                running: existing
                    .is_some_and(|c| c.state == Some(ContainerStateStatusEnum::RUNNING)),
                health: existing.and_then(|c| c.health),
                crash_looping: o.crash_looping,
                idle,
            });
        }
        let (verdicts, status) = {
            let Ok(mut rollout) = self.rollout.lock() else {
                return; // poisoned by a panic: let every step through
            };
            let verdicts = rollout.gate(config, &seen, SystemTime::now());
            (verdicts, rollout.status(config, &seen))
        };
        for (d, step) in desired.iter().zip(steps.iter_mut()) {
            if let Some(Verdict::Wait(why)) = verdicts.get(&d.developer.name) {
                *step = Step::Wait { why: why.clone() };
            }
        }
        let before = self.rollout_status.get();
        if status.halted.is_some() && status.halted != before.halted {
            tracing::error!(reason = status.halted.as_deref().unwrap_or(""), pending = ?status.pending, "rollout halted");
        }
        if let Some(dev) = &status.in_flight
            && status.in_flight != before.in_flight
        {
            tracing::info!(developer = %dev, done = status.done.len(), pending = status.pending.len(), "rollout: moving this developer to the new spec");
        }
        self.rollout_status.set(status);
    }

    /// After a container on the wrong disk is gone: what it wrote on the root
    /// disk, hidden under the volume, goes into quarantine (status lists it).
    async fn sweep_stray(&self, developer: &str) {
        let config = self.config.clone();
        match tokio::task::spawn_blocking(move || crate::volume::sweep_stray(&config)).await {
            Ok(Ok(sweep)) => {
                for (item, why) in sweep.left {
                    tracing::error!(developer = %developer, path = %item.from, reason = %why, "stray content left under the mount point on the root disk (hidden by the volume); see docs/operations.md");
                }
            }
            Ok(Err(e)) => {
                tracing::error!(developer = %developer, error = %e, "cannot move stray root-disk content into quarantine; it stays hidden under the mount point")
            }
            Err(e) => tracing::error!(developer = %developer, error = %e, "quarantine task failed"),
        }
    }

    /// One inspect of the developer's container name, plus the crash-loop verdict.
    pub(super) async fn observe_for_plan<'a>(
        &self,
        developer: &str,
        image: &'a Result<ImageInfo, String>,
    ) -> Observed<'a> {
        let container = match self
            .docker
            .inspect_container(&container_name(developer), None)
            .await
        {
            Ok(c) => Found::Present(Existing::from_inspect(&c)),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Found::Missing,
            Err(e) => Found::Unreadable(e.to_string()),
        };
        let crash_looping = self
            .crash
            .lock()
            .map(|c| c.is_looping(developer))
            .unwrap_or(false);
        let disks = self.disks(&container).await;
        Observed {
            container,
            image,
            crash_looping,
            disks,
        }
    }

    /// The data volume's device and, for a running container, the device of each
    /// bind in its own mount table (stat and /proc reads, off the runtime).
    async fn disks(&self, container: &Found) -> Disks {
        let config = self.config.clone();
        let (pid, dests) = match container {
            Found::Present(c) => (c.pid, c.bind_sources.keys().cloned().collect()),
            _ => (None, Vec::<String>::new()),
        };
        let gather = move || Disks {
            volume: crate::volume::mounted_device(&config),
            binds: pid
                .map(|pid| super::disks::bind_devices(pid, dests.iter().map(String::as_str)))
                .unwrap_or_default(),
        };
        tokio::task::spawn_blocking(gather)
            .await
            .unwrap_or_default()
    }

    async fn create_and_start(&self, launch: &Launch<'_>) -> Result<(), String> {
        let spec = &launch.spec;
        let opts = CreateContainerOptionsBuilder::new()
            .name(&spec.name)
            .build();
        self.docker
            .create_container(
                Some(opts),
                spec.create_body(&launch.credentials.hashed_password),
            )
            .await
            .map_err(|e| format!("create {}: {e}", spec.name))?;
        self.docker
            .start_container(&spec.name, None)
            .await
            .map_err(|e| format!("start {}: {e}", spec.name))
    }

    /// Removes managed containers whose developer is no longer configured. Their
    /// data directories are never touched.
    pub(super) async fn remove_unconfigured(
        &self,
        configured: &BTreeSet<String>,
    ) -> Result<Vec<(String, Action)>, ContainersError> {
        let listed = self.list_managed().await?;
        let mut out = Vec::new();
        for Listed { developer, name } in to_remove(listed, configured) {
            match self.retire(&developer, &name).await {
                Ok(()) => {
                    tracing::info!(developer = %developer, container = %name, "removed container of a developer no longer configured (data kept)");
                    out.push((developer, Action::Removed));
                }
                Err(e) => out.push((developer, Action::Failed(e))),
            }
        }
        Ok(out)
    }

    async fn list_managed(&self) -> Result<Vec<Listed>, ContainersError> {
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
        let listed =
            self.docker
                .list_containers(Some(opts))
                .await
                .map_err(|e| ContainersError::Docker {
                    what: "list managed containers".into(),
                    source: e,
                })?;
        Ok(listed.iter().map(Listed::from_summary).collect())
    }
}
