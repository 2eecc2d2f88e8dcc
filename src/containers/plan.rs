//! What the reconciler should do about one developer's container, decided from
//! what Docker showed and what the config and credentials ask for. Pure: the
//! executor (`execute.rs`) gathers an [`Observed`], calls [`plan`] and performs
//! the [`Step`]; the same split serves the removal of unconfigured developers
//! ([`to_remove`]).
//!
//! The rules, in order: a container we cannot inspect fails the pass for that
//! developer; one named like ours without the managed label, or with another
//! project's label, is left alone; no
//! credentials or no image means nothing is created; a missing container is
//! created; a running one with a developer-data bind (host source under the
//! mount point) on another device than the data volume is relocated: removed,
//! the stray root-disk content quarantined, and created again on the volume
//! (only removed when it cannot be created now: it must not keep running on
//! the wrong disk); a spec-hash label that differs from the desired spec
//! recreates it (credentials rotated when the password version differs, else
//! spec changed); a running or restarting one is left as is; a stopped one is
//! started unless the crash-loop guard says it is looping.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use bollard::models::{
    ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary, HealthStatusEnum,
};

use super::DesiredDeveloper;
use super::spec::{
    ContainerCredentials, DesiredSpec, ImageInfo, LABEL_DEVELOPER, LABEL_MANAGED,
    LABEL_PASSWORD_VERSION, LABEL_PROJECT, LABEL_SPEC_HASH, container_name,
};
use crate::config::Config;

/// Why a container is recreated: a rotation (`[secrets]` decides when) ...
pub const CREDENTIALS_ROTATED: &str = "credentials rotated";
/// ... or an image or spec change (the staged rollout decides when).
pub const SPEC_CHANGED: &str = "spec changed";

/// What Docker showed for one developer this pass.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// What exists under the developer's container name.
    pub container: Found,
    /// The image per `containers.pull` (one answer per pass), or why it is unusable.
    pub image: &'a Result<ImageInfo, String>,
    /// The crash-loop guard's verdict for this developer.
    pub crash_looping: bool,
    /// Which disk the running container's binds are on.
    pub disks: Disks,
}

/// Device numbers (`st_dev`) that say whether a container's data is on the volume.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disks {
    /// The data volume's, when it is mounted at the mount point; without it
    /// nothing is checked.
    pub volume: Option<u64>,
    /// Per bind destination, as the running container's own mount table shows
    /// it; empty when the container is not running.
    pub binds: BTreeMap<String, u64>,
}

/// The answer to inspecting the developer's container name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Missing,
    Present(Existing),
    /// The inspect failed for another reason than "no such container".
    Unreadable(String),
}

/// A container under the developer's name, as one inspect shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Existing {
    /// `csagent.managed=true`: csagent created it and may change it.
    pub managed: bool,
    pub project: Option<String>,
    pub developer: Option<String>,
    pub spec_hash: Option<String>,
    pub password_version: Option<String>,
    pub state: Option<ContainerStateStatusEnum>,
    /// Not acted on today: Docker runs the health check, status reports it.
    pub health: Option<HealthStatusEnum>,
    /// Host path of each bind mount, by its path in the container.
    pub bind_sources: BTreeMap<String, String>,
    /// The container's init process on the host, while it runs.
    pub pid: Option<i64>,
}

impl Existing {
    pub fn from_inspect(c: &ContainerInspectResponse) -> Existing {
        let labels = c.config.as_ref().and_then(|c| c.labels.as_ref());
        let label = |key: &str| labels.and_then(|l| l.get(key)).cloned();
        let state = c.state.as_ref();
        Existing {
            managed: label(LABEL_MANAGED).as_deref() == Some("true"),
            project: label(LABEL_PROJECT),
            developer: label(LABEL_DEVELOPER),
            spec_hash: label(LABEL_SPEC_HASH),
            password_version: label(LABEL_PASSWORD_VERSION),
            state: state.and_then(|s| s.status),
            health: state.and_then(|s| s.health.as_ref()).and_then(|h| h.status),
            pid: state.and_then(|s| s.pid).filter(|p| *p > 0),
            bind_sources: c
                .mounts
                .iter()
                .flatten()
                .filter(|m| m.typ.as_deref() == Some("bind"))
                .filter_map(|m| Some((m.destination.clone()?, m.source.clone()?)))
                .collect(),
        }
    }
}

/// What the config and the credentials ask for one developer.
#[derive(Debug, Clone, Copy)]
pub struct Desired<'a> {
    pub config: &'a Config,
    pub developer: &'a DesiredDeveloper,
}

/// What to do about one developer's container.
#[derive(Debug)]
pub enum Step<'a> {
    /// Running (or being restarted by Docker) as desired.
    Nothing,
    /// No container: create and start one.
    Create(Launch<'a>),
    /// As desired but stopped: start it.
    Start,
    /// No longer as desired: remove it, then create and start.
    Recreate { launch: Launch<'a>, why: String },
    /// Its data is not on the data volume: remove it, move the stray root-disk
    /// content into quarantine, then create and start it when `launch` says how
    /// (no credentials or no image: it stays removed).
    Relocate {
        launch: Option<Launch<'a>>,
        why: String,
    },
    /// Left alone on purpose (not ours, crash-looping, no credentials).
    Skip { why: String },
    /// A recreate the staged rollout holds back this pass (set by the
    /// reconciler after [`plan`], never by it).
    Wait { why: String },
    /// Cannot be converged this pass.
    Fail { why: String },
}

/// What a new container is made from.
#[derive(Debug)]
pub struct Launch<'a> {
    pub spec: Box<DesiredSpec>,
    pub credentials: &'a ContainerCredentials,
}

/// The step for one developer; see the module doc for the rules.
pub fn plan<'a>(observed: &Observed<'_>, desired: &Desired<'a>) -> Step<'a> {
    let dev = &desired.developer.developer;
    let name = container_name(&dev.name);
    let existing = match &observed.container {
        Found::Unreadable(e) => {
            return Step::Fail {
                why: format!("inspect {name}: {e}"),
            };
        }
        Found::Missing => None,
        Found::Present(c) => Some(c),
    };
    if existing.is_some_and(|c| !c.managed) {
        return Step::Skip {
            why: format!(
                "a container named {name} exists without the {LABEL_MANAGED} label; csagent leaves it alone: remove or rename it"
            ),
        };
    }
    // Ours means this project's too: two projects on one host (or a copied
    // config) must never replace each other's developers.
    if let Some(other) = existing.filter(|c| c.project.as_deref() != Some(&desired.config.project))
    {
        return Step::Skip {
            why: format!(
                "a container named {name} belongs to project {:?}, not {:?}; csagent leaves it alone: remove it or give this project its own containers.network and names",
                other.project.as_deref().unwrap_or(""),
                desired.config.project
            ),
        };
    }
    let off_volume =
        existing.and_then(|c| off_volume(c, &observed.disks, &desired.config.volume.mount_point));
    let credentials = match (&desired.developer.credentials, &off_volume) {
        (Ok(c), _) => c,
        // On the wrong disk, it goes even though no new one can be started.
        (Err(reason), Some(why)) => {
            return Step::Relocate {
                launch: None,
                why: format!("{why}; not started again: {reason}"),
            };
        }
        // Without a password the developer is not started; an existing
        // container keeps running with the credentials it had.
        (Err(reason), None) => {
            let what = if existing.is_some() {
                "left as it is (not updated)"
            } else {
                "not started"
            };
            return Step::Skip {
                why: format!("{what}: {reason}"),
            };
        }
    };
    let image = match (observed.image, &off_volume) {
        (Ok(i), _) => i,
        (Err(e), Some(why)) => {
            return Step::Relocate {
                launch: None,
                why: format!("{why}; not started again: {e}"),
            };
        }
        (Err(e), None) => return Step::Fail { why: e.clone() },
    };
    let spec = DesiredSpec::new(desired.config, dev, image, credentials);
    let want_hash = spec.hash();
    let launch = Launch {
        spec: Box::new(spec),
        credentials,
    };
    let Some(c) = existing else {
        return Step::Create(launch);
    };
    // The hash covers the desired binds, not the disk they landed on: that is
    // checked against the container's own mount table.
    if let Some(why) = off_volume {
        return Step::Relocate {
            launch: Some(launch),
            why,
        };
    }
    if c.spec_hash.as_ref() != Some(&want_hash) {
        let why = if c.password_version.as_ref() != Some(&credentials.password_version) {
            CREDENTIALS_ROTATED
        } else {
            SPEC_CHANGED
        };
        return Step::Recreate {
            launch,
            why: why.to_string(),
        };
    }
    match c.state {
        Some(ContainerStateStatusEnum::RUNNING) | Some(ContainerStateStatusEnum::RESTARTING) => {
            Step::Nothing
        }
        // Docker's restart policy already restarts crashes; a crash loop is
        // reported, not fought.
        _ if observed.crash_looping => Step::Skip {
            why: "crash-looping; not restarting it (see its last log lines)".into(),
        },
        _ => Step::Start,
    }
}

/// Why the container's developer data is not on the data volume, if it is not:
/// the first bind whose host source is under the mount point (the key file's
/// tmpfs bind is not) and which the container has on another device. Nothing is
/// decided without the volume's device or the container's mount table.
pub fn off_volume(c: &Existing, disks: &Disks, mount_point: &Path) -> Option<String> {
    let volume = disks.volume?;
    c.bind_sources
        .iter()
        .filter(|(_, source)| Path::new(source).starts_with(mount_point))
        .find_map(|(dest, source)| {
            let dev = *disks.binds.get(dest)?;
            (dev != volume).then(|| {
                format!(
                    "bind {dest} ({source}) is on device {}, not on the data volume ({}): the container started before the volume was mounted",
                    maj_min(dev),
                    maj_min(volume)
                )
            })
        })
}

fn maj_min(dev: u64) -> String {
    format!(
        "{}:{}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    )
}

/// A managed container of this project, as the list call shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its developer label ("" when it has none).
    pub developer: String,
    /// Its name without Docker's leading slash ("" when it has none).
    pub name: String,
}

impl Listed {
    pub fn from_summary(c: &ContainerSummary) -> Listed {
        Listed {
            developer: c
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_DEVELOPER))
                .cloned()
                .unwrap_or_default(),
            name: c
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default(),
        }
    }
}

/// The managed containers whose developer is no longer configured: these are
/// removed (their data directories are never touched).
pub fn to_remove(listed: Vec<Listed>, configured: &BTreeSet<String>) -> Vec<Listed> {
    listed
        .into_iter()
        .filter(|c| !configured.contains(&c.developer))
        .collect()
}

#[cfg(test)]
mod tests;
