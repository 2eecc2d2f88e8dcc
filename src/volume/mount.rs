//! Where the device and the mount point stand, the safety checks made before
//! anything is written, and the mount itself.
//!
//! Mounting uses the mount(2) system call (`nix::mount::mount`) rather than
//! mount(8): the source, type and flags are exactly what we pass, with no fstab
//! lookup or helper in between, and a failure comes back as an errno we can name.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use serde::Deserialize;

use super::discover::Device;
use super::{VolumeError, cmd};
use crate::config::Filesystem;

#[derive(Debug, Deserialize)]
struct Findmnt {
    #[serde(default)]
    filesystems: Vec<MountEntry>,
}

/// One line of the mount table, as findmnt reports it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct MountEntry {
    pub source: Option<String>,
    pub target: String,
    pub fstype: Option<String>,
    #[serde(rename = "maj:min")]
    pub maj_min: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Lsblk {
    #[serde(default)]
    blockdevices: Vec<BlockDev>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct BlockDev {
    pub name: String,
    #[serde(default)]
    pub mountpoints: Vec<Option<String>>,
    #[serde(default)]
    pub children: Vec<BlockDev>,
}

/// What the checks found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountState {
    /// The device is already mounted at the mount point.
    pub mounted_here: bool,
}

/// The whole mount table (`findmnt -J -l`), in mount order.
pub(crate) fn table(about: &str) -> Result<Vec<MountEntry>, VolumeError> {
    let out = cmd::checked(
        "findmnt",
        &["-J", "-l", "-o", "SOURCE,TARGET,FSTYPE,MAJ:MIN"],
        about,
    )?;
    parse_findmnt(&out.stdout).map_err(|m| out.unexpected(about, m))
}

pub(crate) fn parse_findmnt(stdout: &str) -> Result<Vec<MountEntry>, String> {
    let parsed: Findmnt = serde_json::from_str(stdout).map_err(|e| e.to_string())?;
    Ok(parsed.filesystems)
}

/// The device with its partitions and holders (`lsblk -J`).
fn tree(device: &Device) -> Result<BlockDev, VolumeError> {
    let about = device.path.display().to_string();
    let out = cmd::checked(
        "lsblk",
        &[
            "-J".as_ref(),
            "-o".as_ref(),
            "NAME,MOUNTPOINTS".as_ref(),
            device.path.as_os_str(),
        ],
        &about,
    )?;
    let parsed: Lsblk =
        serde_json::from_str(&out.stdout).map_err(|e| out.unexpected(&about, e.to_string()))?;
    parsed
        .blockdevices
        .into_iter()
        .next()
        .ok_or_else(|| out.unexpected(&about, "no block device listed"))
}

/// The mount point as the kernel shows it (symlinks resolved) when it exists.
pub(crate) fn resolved(mount_point: &Path) -> PathBuf {
    std::fs::canonicalize(mount_point).unwrap_or_else(|_| mount_point.to_path_buf())
}

/// Refuses a device that holds the root filesystem, has partitions or holders, or
/// is mounted somewhere other than the mount point, and a mount point where
/// another filesystem is mounted. Read-only.
pub(crate) fn inspect(device: &Device, mount_point: &Path) -> Result<MountState, VolumeError> {
    let about = device.path.display().to_string();
    let mounts = table(&about)?;
    let tree = tree(device)?;
    check(device, mount_point, &mounts, &tree)
}

pub(crate) fn check(
    device: &Device,
    mount_point: &Path,
    mounts: &[MountEntry],
    tree: &BlockDev,
) -> Result<MountState, VolumeError> {
    let here = resolved(mount_point);
    let ours = device.maj_min();

    if mounts
        .iter()
        .any(|m| m.target == "/" && m.maj_min.as_deref() == Some(ours.as_str()))
    {
        return Err(VolumeError::RootDevice {
            device: device.path.clone(),
            detail: "it is mounted at /".to_string(),
        });
    }

    let mut children = Vec::new();
    collect_children(tree, &mut children);
    if let Some((name, _)) = children
        .iter()
        .find(|(_, points)| points.iter().any(|p| p == "/"))
    {
        return Err(VolumeError::RootDevice {
            device: device.path.clone(),
            detail: format!("{name}, on it, is mounted at /"),
        });
    }
    if !children.is_empty() {
        let list = children
            .iter()
            .map(|(name, points)| {
                if points.is_empty() {
                    name.clone()
                } else {
                    format!("{name} mounted at {}", points.join(", "))
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        return Err(VolumeError::InUse {
            device: device.path.clone(),
            children: list,
        });
    }

    let device_targets: Vec<&MountEntry> = mounts
        .iter()
        .filter(|m| m.maj_min.as_deref() == Some(ours.as_str()))
        .collect();
    let mounted_here = device_targets.iter().any(|m| Path::new(&m.target) == here);
    let elsewhere: Vec<&str> = device_targets
        .iter()
        .filter(|m| Path::new(&m.target) != here)
        .map(|m| m.target.as_str())
        .collect();
    if !elsewhere.is_empty() {
        if mounted_here {
            // Already ours at the mount point; an extra mount (say, an admin's bind
            // mount) changes nothing we do: nothing is formatted or remounted.
            tracing::warn!(device = %device, mount_point = %here.display(), also_at = %elsewhere.join(", "), "data volume is also mounted elsewhere");
        } else {
            return Err(VolumeError::MountedElsewhere {
                device: device.path.clone(),
                targets: elsewhere.join(", "),
                mount_point: mount_point.to_path_buf(),
            });
        }
    }

    if let Some(other) = mounts
        .iter()
        .find(|m| Path::new(&m.target) == here && m.maj_min.as_deref() != Some(ours.as_str()))
    {
        return Err(VolumeError::MountPointBusy {
            device: device.path.clone(),
            mount_point: mount_point.to_path_buf(),
            occupant: other.source.clone().unwrap_or_else(|| "?".to_string()),
            fstype: other.fstype.clone().unwrap_or_else(|| "?".to_string()),
        });
    }

    Ok(MountState { mounted_here })
}

/// (name, mount points) of every partition and holder below `dev`, recursively.
fn collect_children(dev: &BlockDev, out: &mut Vec<(String, Vec<String>)>) {
    for child in &dev.children {
        out.push((
            child.name.clone(),
            child.mountpoints.iter().flatten().cloned().collect(),
        ));
        collect_children(child, out);
    }
}

/// Per-mount flags of the data volume: set-uid programs and device nodes that
/// a developer creates in their home never take effect on the host.
const FLAGS: MsFlags = MsFlags::MS_NOATIME
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV);

/// Mounts `device` at `mount_point` (noatime, nosuid, nodev, and `data`, the
/// filesystem's own options such as `prjquota`), creating the directory.
pub(crate) fn mount(
    device: &Device,
    fs: Filesystem,
    mount_point: &Path,
    data: Option<&str>,
) -> Result<(), VolumeError> {
    std::fs::create_dir_all(mount_point)
        .map_err(|e| VolumeError::io("cannot create mount point", mount_point, e))?;
    if std::fs::read_dir(mount_point).is_ok_and(|mut d| d.next().is_some()) {
        tracing::warn!(mount_point = %mount_point.display(), "mount point is not empty: mounting over it, then moving what it holds (on the disk underneath) into quarantine");
    }
    nix::mount::mount(
        Some(&device.path),
        mount_point,
        Some(fs.as_str()),
        FLAGS,
        data,
    )
    .map_err(mount_error(device, fs, mount_point))?;
    tracing::info!(device = %device, mount_point = %mount_point.display(), fstype = %fs, options = data.unwrap_or(""), "mounted");
    Ok(())
}

/// A failed mount(2) or remount, naming the device, type and mount point.
fn mount_error(
    device: &Device,
    fs: Filesystem,
    mount_point: &Path,
) -> impl FnOnce(nix::Error) -> VolumeError {
    move |source| VolumeError::Mount {
        device: device.path.clone(),
        fstype: fs.as_str().to_string(),
        mount_point: mount_point.to_path_buf(),
        source,
    }
}

/// Adds nosuid and nodev to a mount made without them (by an older csagent, or
/// by hand): a remount changes only the flags, nothing on the filesystem, and
/// leaves the containers' bind mounts of it as they are.
pub(crate) fn harden(
    device: &Device,
    fs: Filesystem,
    mount_point: &Path,
) -> Result<(), VolumeError> {
    use nix::sys::statvfs::FsFlags;
    let vfs = nix::sys::statvfs::statvfs(mount_point)
        .map_err(|e| VolumeError::io("cannot statvfs", mount_point, std::io::Error::from(e)))?;
    if vfs.flags().contains(FsFlags::ST_NOSUID | FsFlags::ST_NODEV) {
        return Ok(());
    }
    nix::mount::mount(
        None::<&str>,
        mount_point,
        None::<&str>,
        MsFlags::MS_REMOUNT | FLAGS,
        None::<&str>,
    )
    .map_err(mount_error(device, fs, mount_point))?;
    tracing::info!(device = %device, mount_point = %mount_point.display(), "remounted with nosuid,nodev");
    Ok(())
}

/// Whether `mount_point` is the root of a mount of `device` that nothing covers:
/// its `st_dev` is the device and its parent's is not.
pub(crate) fn is_mount_of(device: &Device, mount_point: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(mount_point) else {
        return false;
    };
    if meta.dev() != device.rdev {
        return false;
    }
    match std::fs::metadata(mount_point.join("..")) {
        Ok(parent) => parent.dev() != device.rdev || parent.ino() == meta.ino(),
        Err(_) => false,
    }
}

/// Fails unless the device is mounted at the mount point, writable.
pub(crate) fn verify(device: &Device, mount_point: &Path) -> Result<(), VolumeError> {
    if !is_mount_of(device, mount_point) {
        return Err(VolumeError::NotMounted {
            device: device.path.clone(),
            mount_point: mount_point.to_path_buf(),
        });
    }
    let vfs = nix::sys::statvfs::statvfs(mount_point)
        .map_err(|e| VolumeError::io("cannot statvfs", mount_point, std::io::Error::from(e)))?;
    if vfs.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY) {
        return Err(VolumeError::ReadOnly {
            device: device.path.clone(),
            mount_point: mount_point.to_path_buf(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> Device {
        Device {
            path: PathBuf::from("/dev/loop9"),
            rdev: nix::sys::stat::makedev(7, 9),
        }
    }

    fn entry(source: &str, target: &str, maj_min: &str) -> MountEntry {
        MountEntry {
            source: Some(source.into()),
            target: target.into(),
            fstype: Some("ext4".into()),
            maj_min: Some(maj_min.into()),
        }
    }

    fn bare() -> BlockDev {
        BlockDev {
            name: "loop9".into(),
            mountpoints: vec![None],
            children: vec![],
        }
    }

    const MP: &str = "/nonexistent-csagent-test/mnt";

    #[test]
    fn free_device_and_mount_point() {
        let mounts = vec![entry("/dev/nvme0n1p1", "/", "259:1")];
        let s = check(&dev(), Path::new(MP), &mounts, &bare()).expect("ok");
        assert!(!s.mounted_here);
        let mounts = vec![
            entry("/dev/nvme0n1p1", "/", "259:1"),
            entry("/dev/loop9", MP, "7:9"),
        ];
        let s = check(&dev(), Path::new(MP), &mounts, &bare()).expect("ok");
        assert!(s.mounted_here);
    }

    #[test]
    fn refusals() {
        let root = vec![entry("/dev/loop9", "/", "7:9")];
        assert!(matches!(
            check(&dev(), Path::new(MP), &root, &bare()),
            Err(VolumeError::RootDevice { .. })
        ));

        let with_root_partition = BlockDev {
            children: vec![BlockDev {
                name: "loop9p1".into(),
                mountpoints: vec![Some("/".into())],
                children: vec![],
            }],
            ..bare()
        };
        let e = check(&dev(), Path::new(MP), &[], &with_root_partition).expect_err("root");
        assert!(e.to_string().contains("loop9p1"), "{e}");

        let with_partition = BlockDev {
            children: vec![BlockDev {
                name: "loop9p1".into(),
                mountpoints: vec![None],
                children: vec![],
            }],
            ..bare()
        };
        assert!(matches!(
            check(&dev(), Path::new(MP), &[], &with_partition),
            Err(VolumeError::InUse { .. })
        ));

        let elsewhere = vec![entry("/dev/loop9", "/srv/other", "7:9")];
        let e = check(&dev(), Path::new(MP), &elsewhere, &bare()).expect_err("elsewhere");
        assert!(e.to_string().contains("/srv/other"), "{e}");

        let busy = vec![entry("/dev/loop4", MP, "7:4")];
        let e = check(&dev(), Path::new(MP), &busy, &bare()).expect_err("busy");
        assert!(
            matches!(e, VolumeError::MountPointBusy { ref occupant, .. } if occupant == "/dev/loop4")
        );
    }

    #[test]
    fn findmnt_json() {
        let m = parse_findmnt(
            r#"{"filesystems": [{"source":"/dev/loop0","target":"/tmp/a b","fstype":"ext4","maj:min":"7:0"},
               {"source":null,"target":"/x","fstype":"tmpfs","maj:min":"0:50"}]}"#,
        )
        .expect("valid");
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].target, "/tmp/a b");
        assert_eq!(m[1].source, None);
    }
}
