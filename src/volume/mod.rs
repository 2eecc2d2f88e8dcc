//! The data volume: find the EBS device, format it only when blank, mount it,
//! keep it in fstab, grow it, and make each developer's directories.
//!
//! Data safety is the point of this module: a developer's workspace must never
//! be formatted away, and developers' data must never land on the root disk.
//! One pass ([`prepare`]) goes, in order, and stops at the first refusal:
//!
//! 1. [`discover`]: wait up to `volume.wait_timeout` for the device;
//! 2. take the device's whole-disk lock (no concurrent pass, no udev probing);
//! 3. [`mount`]: refuse a device holding `/`, with partitions/holders, or mounted
//!    elsewhere, and a mount point where something else is mounted;
//! 4. [`probe`]: blank (three checks agree), a filesystem, or something else;
//!    anything but blank or the configured filesystem type is refused;
//! 5. [`fstab`]: refuse a foreign line for the mount point — before any write;
//! 6. [`format`]: mkfs a blank device only, then probe again;
//! 7. mount (noatime, nosuid, nodev) unless already mounted there, where a
//!    mount without nosuid/nodev is remounted with them; verify it is;
//! 8. write the fstab line (if not already right);
//! 9. [`grow`] online if the device is larger than the filesystem;
//! 10. [`stray`]: anything in the mount point directory on the disk underneath
//!     (hidden by the volume) is moved into quarantine, never deleted;
//! 11. [`dirs`]: each developer's `home` (seeded from /etc/skel by [`skel`]) and
//!     `home/workspace`, only on the mounted volume; a developer still on the old
//!     layout (`workspace`, `config`) is moved into `home` by [`migrate`] first;
//! 12. [`quota`] (`containers.disk_quota`): each home in its own project with a
//!     hard limit. Its filesystem part runs around step 7: the ext4 features are
//!     added before the mount (only while mounted nowhere) and the mount carries
//!     `prjquota`; a quota that cannot be had never stops the pass.
//!
//! Every step checks before it acts, so a second pass changes nothing, and a
//! crash anywhere recovers on the next pass: after mkfs the probe sees the new
//! filesystem, so it is mounted, never formatted again.

mod cmd;
mod dirs;
mod discover;
mod error;
mod format;
mod fstab;
mod grow;
mod migrate;
mod mount;
mod probe;
mod quota;
mod skel;
mod stray;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use error::VolumeError;
/// Sets a file's fsxattr (its project id): what `container-init` refuses.
pub(crate) use quota::FS_IOC_FSSETXATTR;
pub use quota::{DeveloperQuota, QuotaMode, QuotaStatus};
pub use stray::{QuarantineItem, Sweep, quarantine_dir};

use crate::config::{Config, Filesystem};
use discover::Device;
use probe::Contents;

/// Each developer's home on the volume: `<mount_point>/<developer>/home`.
pub const HOME_DIR: &str = "home";

/// The directory mounted over the developer's /home/coder.
pub fn home_dir(mount_point: &Path, developer: &str) -> PathBuf {
    mount_point.join(developer).join(HOME_DIR)
}

/// How long a pass waits for another holder of the device lock.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// What status shows; serializable, no secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeStatus {
    /// The block device, like /dev/nvme1n1 (resolved from the by-id link).
    pub device: Option<String>,
    /// The configured EBS volume id, when the volume is given by id.
    pub volume_id: Option<String>,
    /// Filesystem type on the device ("ext4", "xfs").
    pub filesystem: Option<String>,
    /// Filesystem UUID (what the fstab line names).
    pub uuid: Option<String>,
    /// Mounted: the filesystem's size as `df` counts it; otherwise the device's size.
    pub size_bytes: Option<u64>,
    /// Bytes in use (`df`'s Used), when mounted.
    pub used_bytes: Option<u64>,
    pub mount_point: String,
    /// The device is mounted at `mount_point`.
    pub mounted: bool,
    /// Why the volume is not ready; or, after a successful [`prepare`], a problem
    /// that left it usable (a grow that failed).
    pub error: Option<String>,
    /// This pass created the filesystem.
    pub formatted_now: bool,
    /// This pass grew the filesystem from this many bytes.
    pub grown_from: Option<u64>,
    /// Stray root-disk content from under the mount point: what is in
    /// quarantine, and what could not be moved there (`left_in_place`).
    #[serde(default)]
    pub quarantine: Vec<QuarantineItem>,
    /// Developers the last full pass could not move into their home (a
    /// migration conflict), and why: their containers are not started or
    /// recreated until an admin resolves it. Kept by [`observe`]'s refreshes.
    #[serde(default)]
    pub blocked: BTreeMap<String, String>,
    /// Per-developer disk quotas (`containers.disk_quota`): whether they are
    /// enforced, and each developer's use and limit. None: no quota configured
    /// and no developer has a project.
    #[serde(default)]
    pub quota: Option<QuotaStatus>,
}

/// One pass at a time in this process (the device lock covers other processes).
static PASS: Mutex<()> = Mutex::new(());

/// Runs one full idempotent pass. `progress` receives human text like
/// "waiting for volume vol-0abc (12s of 5m)" (for systemd STATUS=). Blocking: the
/// daemon calls it in spawn_blocking.
pub fn prepare(config: &Config, progress: &dyn Fn(&str)) -> Result<VolumeStatus, VolumeError> {
    let _pass = PASS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let v = &config.volume;
    let mount_point = v.mount_point.as_path();
    let fs = v.filesystem;

    let device = discover::wait(v, progress)?;
    let span =
        tracing::info_span!("volume", device = %device, mount_point = %mount_point.display());
    let _span = span.enter();
    let lock = device.lock(LOCK_TIMEOUT)?;

    progress(&format!("checking {device}"));
    let state = mount::inspect(&device, mount_point)?;

    let is_ours = |uuid: Option<&str>| {
        let rdev = device.rdev;
        let uuid = uuid.map(str::to_string);
        move |source: &str| fstab::source_is(source, uuid.as_deref(), rdev)
    };

    let mut formatted_now = false;
    let (fstype, uuid) = match probe::probe(&device)? {
        Contents::Filesystem { fstype, uuid, .. } if fstype == fs.as_str() => {
            tracing::info!(fstype = %fstype, uuid = ?uuid, "device holds the configured filesystem; not formatting");
            (fstype, uuid)
        }
        Contents::Filesystem { fstype, uuid, .. } => {
            return Err(VolumeError::WrongFilesystem {
                device: device.path.clone(),
                found: fstype,
                uuid: uuid.unwrap_or_else(|| "none".to_string()),
                configured: fs.to_string(),
            });
        }
        Contents::Other { description } => {
            return Err(VolumeError::NotBlank {
                device: device.path.clone(),
                found: description,
            });
        }
        Contents::Blank if state.mounted_here => {
            // Cannot happen (a mounted filesystem has a signature); never mkfs it.
            return Err(VolumeError::NotBlank {
                device: device.path.clone(),
                found: "a mounted filesystem that blkid does not recognise".to_string(),
            });
        }
        Contents::Blank => {
            // Refuse a foreign fstab line before writing anything to the device.
            fstab::plan(
                &fstab::read(&v.fstab)?,
                &v.fstab,
                mount_point,
                None,
                &is_ours(None),
            )?;
            progress(&format!("formatting {device} as {fs}"));
            tracing::info!(fstype = %fs, label = %v.label, "device is blank; creating the filesystem");
            format::mkfs(&device, fs, &v.label)?;
            formatted_now = true;
            match probe::probe(&device)? {
                Contents::Filesystem { fstype, uuid, .. } if fstype == fs.as_str() => {
                    tracing::info!(fstype = %fstype, uuid = ?uuid, "filesystem created");
                    (fstype, uuid)
                }
                other => {
                    return Err(VolumeError::ToolOutput {
                        command: format!("blkid -p {}", device.path.display()),
                        about: device.path.display().to_string(),
                        message: format!("after mkfs.{fs} the device holds {other:?}"),
                    });
                }
            }
        }
    };
    let uuid = uuid.ok_or_else(|| VolumeError::NoUuid {
        device: device.path.clone(),
        fstype: fstype.clone(),
    })?;
    // Again read-only, now that the UUID is known: refuse before mounting (or
    // changing the filesystem's features for a quota).
    fstab::plan(
        &fstab::read(&v.fstab)?,
        &v.fstab,
        mount_point,
        Some(&fstab::line_for(&uuid, mount_point, fs, None)),
        &is_ours(Some(&uuid)),
    )?;

    let mut quota_plan = quota::before_mount(config, &device, state.mounted_here);
    if state.mounted_here {
        tracing::debug!("already mounted");
        mount::harden(&device, fs, mount_point)?;
        quota::already_mounted(&mut quota_plan, &device, fs, mount_point);
    } else {
        progress(&format!("mounting {device} at {}", mount_point.display()));
        let data = quota_plan.option.then_some(quota::MOUNT_OPTION);
        match mount::mount(&device, fs, mount_point, data) {
            Err(e @ VolumeError::Mount { .. }) if data.is_some() => {
                tracing::error!(error = %e, "the kernel refused the quota mount option; mounting without it (no disk quota)");
                quota::mount_refused(&mut quota_plan, &device, fs, &e);
                mount::mount(&device, fs, mount_point, None)?;
            }
            other => other?,
        }
    }
    mount::verify(&device, mount_point)?;
    let line = fstab::line_for(
        &uuid,
        mount_point,
        fs,
        quota_plan.option.then_some(quota::MOUNT_OPTION),
    );

    fstab::ensure(&v.fstab, mount_point, &line, &is_ours(Some(&uuid)))?;

    // A failed grow leaves a working volume: report it, but do not hold back the
    // developers' directories (and containers) for it.
    let (grown, grow_error) = match grow::grow_if_needed(&device, fs, mount_point) {
        Ok(g) => (g, None),
        Err(e) => {
            tracing::error!(error = %e, "cannot grow the filesystem; the volume stays usable at its old size");
            (None, Some(e.to_string()))
        }
    };

    // Before the developers' directories (and containers) use the volume, so
    // that nothing started on the root disk goes unnoticed. A failed sweep
    // leaves the content where it is (hidden, not lost): report, go on.
    let (left, sweep_error) = match stray::sweep(config, device.rdev) {
        Ok(s) => (s.left, None),
        Err(e) => {
            tracing::error!(error = %e, "cannot check the mount point on the disk underneath for stray content");
            (Vec::new(), Some(e.to_string()))
        }
    };
    for (item, why) in &left {
        tracing::error!(path = %item.from, bytes = item.bytes, reason = %why, "stray content under the mount point on the root disk left in place (hidden by the volume); see docs/operations.md");
    }

    progress("creating developer directories");
    let owner = dirs::Owner {
        uid: config.containers.uid,
        gid: config.containers.gid,
    };
    let prepared = dirs::ensure(&device, mount_point, &config.developers, owner)?;
    let quota = quota::apply(config, &device, &quota_plan, &prepared.blocked);

    let mut status = snapshot(config, Some(&device));
    status.filesystem = Some(fstype);
    status.uuid = Some(uuid);
    status.formatted_now = formatted_now;
    status.grown_from = grown.map(|g| g.from);
    status.error = status.error.or(grow_error).or(sweep_error);
    status
        .quarantine
        .extend(left.into_iter().map(|(item, _)| item));
    status.blocked = prepared.blocked;
    status.quota =
        (quota.configured_bytes.is_some() || !quota.developers.is_empty()).then_some(quota);
    tracing::info!(
        formatted_now,
        grown_from = ?status.grown_from,
        size_bytes = ?status.size_bytes,
        used_bytes = ?status.used_bytes,
        directories_created = prepared.created,
        developers_blocked = status.blocked.len(),
        "data volume ready"
    );
    drop(lock);
    if formatted_now {
        // udev skips a device while its lock is held; have it see the new
        // filesystem now so /dev/disk/by-uuid is right without a reboot.
        retrigger_udev(&device);
    }
    Ok(status)
}

/// Cheap refresh of size/used for status and metrics (statvfs). Never waits,
/// never writes; runs `blkid` once for the UUID when the device is present.
pub fn observe(config: &Config) -> VolumeStatus {
    let v = &config.volume;
    let device = match discover::find_now(v) {
        Ok(Ok(device)) => device,
        Ok(Err(absent)) => {
            let mut status = snapshot(config, None);
            status.error = Some(format!(
                "{} is not attached ({} at {})",
                discover::describe(v),
                match absent {
                    discover::Absent::Missing => "nothing",
                    discover::Absent::Empty => "a 0-byte device",
                },
                discover::wanted_path(v).display()
            ));
            return status;
        }
        Err(e) => {
            let mut status = snapshot(config, None);
            status.error = Some(e.to_string());
            return status;
        }
    };
    let mut status = snapshot(config, Some(&device));
    if let Ok(Contents::Filesystem { fstype, uuid, .. }) = identify(&device) {
        status.filesystem = status.filesystem.or(Some(fstype));
        status.uuid = uuid;
    }
    if status.mounted {
        status.quota = quota::observe(config, &device, None);
    }
    if !status.mounted && status.error.is_none() {
        status.error = Some(format!(
            "{device} is not mounted at {}",
            v.mount_point.display()
        ));
    }
    status
}

/// The data volume's device number (`st_dev` of what is on it) when it is
/// mounted at the mount point; None otherwise. Never waits, never writes.
pub fn mounted_device(config: &Config) -> Option<u64> {
    let device = discover::find_now(&config.volume).ok()?.ok()?;
    mount::is_mount_of(&device, &config.volume.mount_point).then_some(device.rdev)
}

/// The block device of another EBS volume attached to this instance, found by
/// its stable NVMe name under `volume.by_id_dir` like the data volume: `None`
/// while nothing (or a 0-byte device) is there. For `restore`'s temporary
/// volume. Returns the canonical path and the device number. Never waits.
pub fn attached_device(
    config: &Config,
    volume_id: &str,
) -> Result<Option<(PathBuf, u64)>, VolumeError> {
    let mut v = config.volume.clone();
    v.source = crate::config::VolumeSource::VolumeId(volume_id.to_string());
    Ok(discover::find_now(&v)?.ok().map(|d| (d.path, d.rdev)))
}

/// Where [`attached_device`] looks for `volume_id`.
pub fn attached_device_path(config: &Config, volume_id: &str) -> PathBuf {
    let mut v = config.volume.clone();
    v.source = crate::config::VolumeSource::VolumeId(volume_id.to_string());
    discover::wanted_path(&v)
}

/// Moves stray root-disk content hidden under the mounted volume into
/// quarantine (see [`stray`]); nothing to do when the volume is not mounted.
/// Blocking.
pub fn sweep_stray(config: &Config) -> Result<Sweep, VolumeError> {
    match mounted_device(config) {
        Some(dev) => stray::sweep(config, dev),
        None => Ok(Sweep::default()),
    }
}

/// blkid alone (no wipefs or zero check): enough to name what is there.
fn identify(device: &Device) -> Result<Contents, VolumeError> {
    let about = device.path.display().to_string();
    let out = cmd::output(
        "blkid",
        &[
            "-p".as_ref(),
            "-o".as_ref(),
            "export".as_ref(),
            device.path.as_os_str(),
        ],
        &about,
    )?;
    if out.success() {
        Ok(probe::classify(&probe::parse_export(&out.stdout)))
    } else {
        Ok(Contents::Blank)
    }
}

/// The fields that need no tool: device, mounted, sizes.
fn snapshot(config: &Config, device: Option<&Device>) -> VolumeStatus {
    let v = &config.volume;
    let mount_point = v.mount_point.as_path();
    let mut status = VolumeStatus {
        device: device.map(|d| d.path.display().to_string()),
        volume_id: discover::volume_id(v),
        mount_point: mount_point.display().to_string(),
        quarantine: stray::scan(config),
        ..VolumeStatus::default()
    };
    let Some(device) = device else {
        return status;
    };
    status.mounted = mount::is_mount_of(device, mount_point);
    if status.mounted {
        match nix::sys::statvfs::statvfs(mount_point) {
            // c_ulong and fsblkcnt_t are u64 here but not on every target.
            #[allow(clippy::useless_conversion)]
            Ok(s) => {
                let frsize = u64::from(s.fragment_size());
                let blocks = u64::from(s.blocks());
                let free = u64::from(s.blocks_free());
                status.size_bytes = Some(blocks.saturating_mul(frsize));
                status.used_bytes = Some(blocks.saturating_sub(free).saturating_mul(frsize));
            }
            Err(e) => {
                status.error = Some(format!("cannot statvfs {}: {e}", mount_point.display()));
            }
        }
        status.filesystem = fs_name(mount_point);
    } else {
        status.size_bytes = device.size_bytes().ok();
    }
    status
}

/// The mounted filesystem's type, from statfs.
fn fs_name(mount_point: &Path) -> Option<String> {
    use nix::sys::statfs::{EXT4_SUPER_MAGIC, XFS_SUPER_MAGIC, statfs};
    let t = statfs(mount_point).ok()?.filesystem_type();
    if t == EXT4_SUPER_MAGIC {
        Some(Filesystem::Ext4.to_string())
    } else if t == XFS_SUPER_MAGIC {
        Some(Filesystem::Xfs.to_string())
    } else {
        None
    }
}

/// Best effort: ask udev to re-read the device (no udev, as in containers: no-op).
fn retrigger_udev(device: &Device) {
    let Some(name) = device.path.file_name() else {
        return;
    };
    let uevent = Path::new("/sys/class/block").join(name).join("uevent");
    if let Err(e) = std::fs::write(&uevent, "change") {
        tracing::debug!(path = %uevent.display(), error = %e, "could not trigger a udev change event");
    }
}
