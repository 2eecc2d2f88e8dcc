//! Per-developer disk quotas (`containers.disk_quota`): project quotas on the
//! data volume, one project per developer's home.
//!
//! Where it fits in a volume pass ([`super::prepare`]):
//!
//! 1. before mounting, [`before_mount`] decides the mount option (`prjquota`)
//!    and, for an ext4 volume that is mounted nowhere, adds the `project` and
//!    `quota` features with tune2fs — only when the kernel can mount the result
//!    ([`support`]), only on the device the pass has already identified as the
//!    data volume and locked; never mkfs, never on a mounted filesystem;
//! 2. the mount uses the option; if the kernel refuses it, the volume is mounted
//!    without it (and the ext4 features just added are taken off again), and
//!    status says why: a quota never costs the developers their volume;
//! 3. an ext4 volume already mounted without the option (but with the
//!    features) gets enforcement turned on with quotactl `Q_XQUOTAON` (a
//!    remount would not: ext4 turns quotas on at a remount only from read-only
//!    to read-write); xfs cannot, so there it applies at the next mount, which
//!    the fstab line (with `prjquota`) makes the next boot;
//! 4. after the developer directories, [`apply`] gives each home its project id
//!    ([`project`]) and sets the block hard limit (quotactl, [`sys`]).
//!
//! A developer who fills their quota gets "Disk quota exceeded" (EDQUOT) in
//! their home; the others, and the volume, keep working. [`observe`] reads each
//! developer's use for status and the `disk_quota_used_*` metrics.

mod project;
mod support;
mod sys;

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};

use super::discover::Device;
use super::{HOME_DIR, VolumeError};
use crate::config::{Config, Filesystem};
pub(crate) use support::Kernel;
pub(crate) use sys::FS_IOC_FSSETXATTR;

/// The mount option that turns project quota accounting and enforcement on
/// (ext4 and xfs alike).
pub(crate) const MOUNT_OPTION: &str = "prjquota";

/// Where the quota stands on the volume, for status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QuotaMode {
    /// `containers.disk_quota` is not set (use may still be reported).
    #[default]
    Off,
    /// Limits are enforced.
    Enforced,
    /// Applies at the next mount of the volume (see `reason`).
    NextMount,
    /// Cannot be enforced here (see `reason`); the volume works without it.
    Unavailable,
}

/// One developer's project and use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeveloperQuota {
    /// Their home's project id.
    pub project: Option<u32>,
    /// Bytes their home holds, as the quota counts it (None: not accounted).
    pub used_bytes: Option<u64>,
    /// Their hard limit in force (None: none).
    pub limit_bytes: Option<u64>,
    /// What went wrong for this developer, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What status shows about disk quotas.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaStatus {
    pub mode: QuotaMode,
    /// `containers.disk_quota`, bytes.
    pub configured_bytes: Option<u64>,
    /// Why the quota is not (yet) enforced, and what to do.
    pub reason: Option<String>,
    #[serde(default)]
    pub developers: BTreeMap<String, DeveloperQuota>,
}

impl QuotaStatus {
    /// Keeps what only a full pass knows (whether and why the quota is
    /// enforced, per-developer errors) in a refresh of use and limits.
    pub fn keep_verdict(&mut self, last: &QuotaStatus) {
        self.mode = last.mode;
        self.reason.clone_from(&last.reason);
        for (name, q) in &mut self.developers {
            if let Some(l) = last.developers.get(name) {
                q.error = q.error.take().or_else(|| l.error.clone());
            }
        }
    }
}

/// The decision made before mounting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MountPlan {
    /// Mount with [`MOUNT_OPTION`] (and keep it in the fstab line).
    pub option: bool,
    /// This pass added the ext4 features: take them off again if the kernel
    /// then refuses the mount.
    pub added_features: bool,
    /// Why the quota cannot be enforced (yet).
    pub reason: Option<(QuotaMode, String)>,
}

fn kernel_support(fs: Filesystem) -> Kernel {
    let modules = support::modules_dir();
    support::kernel(fs, &support::host_sources(&modules))
}

/// Step 1: decide the mount option; add ext4's features to a volume that is
/// mounted nowhere when the quota is wanted and the kernel can use them. A
/// failure here is reported, never fatal: the volume is mounted without quota.
pub(crate) fn before_mount(config: &Config, device: &Device, mounted_here: bool) -> MountPlan {
    let fs = config.volume.filesystem;
    let wanted = config.containers.disk_quota.is_some();
    let mut plan = MountPlan::default();
    match fs {
        Filesystem::Ext4 => {
            let features = match support::ext4_features(device) {
                Ok(f) => f,
                Err(e) => {
                    plan.reason = wanted.then(|| (QuotaMode::Unavailable, e.to_string()));
                    return plan;
                }
            };
            if features.ready() {
                // Accounting comes with the features; the option adds enforcement.
                plan.option = wanted;
                return plan;
            }
            if !wanted {
                return plan;
            }
            if let Some(why) = support::ext4_blocker(&features) {
                plan.reason = Some((QuotaMode::Unavailable, why));
                return plan;
            }
            match kernel_support(fs) {
                Kernel::Yes => {}
                Kernel::No(why) => {
                    plan.reason = Some((
                        QuotaMode::Unavailable,
                        format!(
                            "{why}; the ext4 features are not added (this kernel could not mount the volume with them)"
                        ),
                    ));
                    return plan;
                }
                Kernel::Unknown => {
                    plan.reason = Some((
                        QuotaMode::Unavailable,
                        "cannot tell whether this kernel supports ext4 quotas (no quota_v2 \
                         module, no kernel config to read); the ext4 features are not added"
                            .into(),
                    ));
                    return plan;
                }
            }
            if mounted_here {
                plan.reason = Some((
                    QuotaMode::NextMount,
                    "the ext4 filesystem lacks the project and quota features, which can only be \
                     added while it is unmounted: stop csagent and the containers, unmount the \
                     volume and start csagent (docs/operations.md, \"Disk quotas\")"
                        .into(),
                ));
                return plan;
            }
            tracing::info!(device = %device, "adding the ext4 project and quota features (tune2fs -O project -Q prjquota) for containers.disk_quota");
            match support::ext4_enable(device) {
                Ok(()) => {
                    plan.option = true;
                    plan.added_features = true;
                }
                Err(e) => {
                    tracing::error!(device = %device, error = %e, "cannot add the ext4 quota features; mounting without quota");
                    plan.reason = Some((QuotaMode::Unavailable, e.to_string()));
                }
            }
        }
        Filesystem::Xfs => {
            if !wanted {
                return plan;
            }
            match kernel_support(fs) {
                Kernel::No(why) => {
                    plan.reason = Some((QuotaMode::Unavailable, why));
                }
                // Unknown: try; a refused mount is retried without it.
                Kernel::Yes | Kernel::Unknown => plan.option = true,
            }
        }
    }
    plan
}

/// Step 2, after a mount with the option failed: take back what this pass
/// did to the filesystem and say why; the caller mounts without the option.
pub(crate) fn mount_refused(
    plan: &mut MountPlan,
    device: &Device,
    fs: Filesystem,
    e: &VolumeError,
) {
    let mut why = format!("the kernel refused to mount with {MOUNT_OPTION} ({e})");
    if plan.added_features {
        match support::ext4_disable(device) {
            Ok(()) => why.push_str("; the ext4 quota features just added were taken off again"),
            Err(e2) => why.push_str(&format!(
                "; taking the ext4 quota features off failed: {e2}"
            )),
        }
    }
    if fs == Filesystem::Xfs {
        why.push_str(" (dmesg: \"quota support not available\" means CONFIG_XFS_QUOTA is off)");
    }
    plan.option = false;
    plan.added_features = false;
    plan.reason = Some((QuotaMode::Unavailable, why));
}

/// Step 3, for a volume that was already mounted: whether quotas are
/// enforced; ext4 is told to enforce them (with the features it accounts them
/// already), xfs waits for the next mount.
pub(crate) fn already_mounted(
    plan: &mut MountPlan,
    device: &Device,
    fs: Filesystem,
    mount_point: &Path,
) {
    if !plan.option {
        return;
    }
    if sys::quota_state(&device.path).is_ok_and(|s| s.enforcing) {
        return;
    }
    match fs {
        Filesystem::Ext4 => match sys::enforce(&device.path) {
            Ok(()) => {
                tracing::info!(device = %device, mount_point = %mount_point.display(), "project quota enforcement turned on (the volume was mounted without prjquota)")
            }
            Err(e) => {
                plan.reason = Some((
                    QuotaMode::NextMount,
                    format!(
                        "turning enforcement on for the mounted volume failed ({e}); it applies at the next mount (the fstab line has {MOUNT_OPTION})"
                    ),
                ));
            }
        },
        Filesystem::Xfs => {
            plan.reason = Some((
                QuotaMode::NextMount,
                "xfs turns quotas on only when it is mounted, and the volume was mounted without \
                 prjquota: it applies at the next mount (the fstab line has it now), e.g. the \
                 next reboot"
                    .into(),
            ));
        }
    }
}

/// Step 4: every developer's project id, and their limit. Developers whose
/// migration is blocked are left alone (a project on `home` would make the
/// pending move into it fail with EXDEV).
pub(crate) fn apply(
    config: &Config,
    device: &Device,
    plan: &MountPlan,
    blocked: &BTreeMap<String, String>,
) -> QuotaStatus {
    let mount_point = config.volume.mount_point.as_path();
    let limit = config.containers.disk_quota;
    let mut status = QuotaStatus {
        mode: QuotaMode::Off,
        configured_bytes: limit,
        reason: None,
        developers: BTreeMap::new(),
    };
    let state = sys::quota_state(&device.path).ok();
    let can_set_ids = match config.volume.filesystem {
        Filesystem::Xfs => true,
        Filesystem::Ext4 => support::ext4_features(device).is_ok_and(|f| f.project),
    };
    if limit.is_some() {
        match (&plan.reason, state) {
            (Some((mode, why)), _) => {
                status.mode = *mode;
                status.reason = Some(why.clone());
            }
            (None, Some(s)) if s.enforcing => status.mode = QuotaMode::Enforced,
            (None, _) => {
                status.mode = QuotaMode::Unavailable;
                status.reason = Some("the filesystem does not enforce project quotas although it was mounted with prjquota".into());
            }
        }
    }
    // Ids go on whenever the filesystem has them, so that usage is known and an
    // xfs volume waiting for its next mount counts the right files then.
    if !can_set_ids || (limit.is_none() && !state.is_some_and(|s| s.accounting)) {
        return status;
    }
    let root = match nix::fcntl::open(
        mount_point,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => {
            status.reason = Some(format!("cannot open {}: {e}", mount_point.display()));
            return status;
        }
    };
    let mut used = project::ids_in_use(&root, mount_point);
    for dev in &config.developers {
        if blocked.contains_key(&dev.name) {
            continue;
        }
        let mut q = DeveloperQuota::default();
        match assign(&root, mount_point, &dev.name, &mut used) {
            Ok(id) => q.project = Some(id),
            Err(e) => {
                tracing::error!(developer = %dev.name, error = %e, "cannot put the home in its quota project");
                q.error = Some(e);
            }
        }
        if let (Some(id), Some(s)) = (q.project, state) {
            if s.accounting {
                if let Err(e) = sys::set_limit(&device.path, id, limit.unwrap_or(0)) {
                    let e = format!("cannot set the limit of project {id} on {device}: {e}");
                    tracing::error!(developer = %dev.name, error = %e, "disk quota not set");
                    q.error.get_or_insert(e);
                }
            }
        }
        read_usage(device, &mut q);
        status.developers.insert(dev.name.clone(), q);
    }
    status
}

/// The developer's project id, after putting their home in it if that is not
/// done yet. `used` holds every id on the volume; a new one is added to it.
fn assign(
    root: &std::os::fd::OwnedFd,
    mount_point: &Path,
    name: &str,
    used: &mut std::collections::BTreeSet<u32>,
) -> Result<u32, String> {
    let dev_dir = super::dirs::open_dir(root, name)
        .map_err(|e| format!("cannot open {}: {e}", mount_point.join(name).display()))?;
    let home_path = mount_point.join(name).join(HOME_DIR);
    let home = super::dirs::open_dir(&dev_dir, HOME_DIR)
        .map_err(|e| format!("cannot open {}: {e}", home_path.display()))?;
    let current = sys::project_of(home.as_fd())
        .map_err(|e| format!("cannot read the project of {}: {e}", home_path.display()))?;
    let marker = project::read_marker(mount_point, name);
    let own = [marker, Some(current.id)];
    let others: std::collections::BTreeSet<u32> = used
        .iter()
        .copied()
        .filter(|id| !own.contains(&Some(*id)))
        .collect();
    let id = project::choose(marker, Some(current.id).filter(|i| *i != 0), &others);
    if marker == Some(id) && current.id == id && current.inherit {
        return Ok(id);
    }
    tracing::info!(developer = %name, project = id, path = %home_path.display(), "putting the home in its quota project");
    let walked = project::walk(&home, &home_path, id)
        .map_err(|e| format!("cannot set project {id} on {}: {e}", home_path.display()))?;
    tracing::info!(developer = %name, project = id, changed = walked.changed, failed = walked.failed, "home in its quota project");
    used.insert(id);
    if walked.failed > 0 {
        // No marker: the next pass walks again.
        return Err(format!(
            "{} of the files in {} could not be put in project {id} (e.g. {})",
            walked.failed,
            home_path.display(),
            walked.errors.join("; ")
        ));
    }
    project::write_marker(mount_point, name, id).map_err(|e| {
        format!(
            "cannot write {}: {e}",
            mount_point.join(name).join(project::MARKER).display()
        )
    })?;
    Ok(id)
}

fn read_usage(device: &Device, q: &mut DeveloperQuota) {
    let Some(id) = q.project else { return };
    match sys::usage(&device.path, id) {
        Ok(u) => {
            q.used_bytes = Some(u.used_bytes);
            q.limit_bytes = (u.limit_bytes > 0).then_some(u.limit_bytes);
        }
        // ESRCH: not accounted (mounted without quota): nothing to show.
        Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => {
            q.error.get_or_insert(format!(
                "cannot read the use of project {id} on {device}: {e}"
            ));
        }
    }
}

/// Refreshes use and limits for status and metrics from the markers; never
/// writes. `last` is the last full pass's verdict (mode and reason).
pub(crate) fn observe(
    config: &Config,
    device: &Device,
    last: Option<&QuotaStatus>,
) -> Option<QuotaStatus> {
    let mount_point = config.volume.mount_point.as_path();
    let mut status = last.cloned().unwrap_or_else(|| QuotaStatus {
        configured_bytes: config.containers.disk_quota,
        ..QuotaStatus::default()
    });
    let mut any = false;
    for dev in &config.developers {
        let q = status.developers.entry(dev.name.clone()).or_default();
        q.project = project::read_marker(mount_point, &dev.name).or(q.project);
        q.used_bytes = None;
        q.limit_bytes = None;
        read_usage(device, q);
        any |= q.project.is_some();
    }
    status
        .developers
        .retain(|name, _| config.developers.iter().any(|d| &d.name == name));
    (any || config.containers.disk_quota.is_some()).then_some(status)
}
