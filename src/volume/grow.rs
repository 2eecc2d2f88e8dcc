//! Grows the filesystem online when the volume was enlarged (EBS Elastic Volumes):
//! compares the block device's size with the filesystem's own size and runs
//! `resize2fs <device>` (ext4) or `xfs_growfs <mount point>` (xfs).

use std::path::Path;

use super::discover::Device;
use super::{VolumeError, cmd};
use crate::config::Filesystem;

/// Grow only when the device is at least this much larger than the filesystem.
/// mkfs may leave a small tail unused (ext4 drops a last block group too small
/// to be useful, about 1 MiB was seen); growing cannot use it either, so without
/// a threshold every pass would run the tool for nothing. EBS volumes grow in
/// whole GiB, far above it.
pub(crate) const GROW_THRESHOLD: u64 = 64 * 1024 * 1024;

/// A completed grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grown {
    pub from: u64,
    pub to: u64,
}

/// Grows the mounted filesystem if the device has room for it.
pub(crate) fn grow_if_needed(
    device: &Device,
    fs: Filesystem,
    mount_point: &Path,
) -> Result<Option<Grown>, VolumeError> {
    let device_size = device.size_bytes()?;
    let before = fs_size(device, fs, mount_point)?;
    if device_size < before.saturating_add(GROW_THRESHOLD) {
        tracing::debug!(device = %device, device_size, fs_size = before, "filesystem fills the device");
        return Ok(None);
    }
    tracing::info!(device = %device, device_size, fs_size = before, "device is larger than its filesystem; growing it online");
    let about = device.path.display().to_string();
    let failed = |reason: String| VolumeError::Grow {
        device: device.path.clone(),
        from: before,
        to: device_size,
        reason,
    };
    let out = match fs {
        Filesystem::Ext4 => {
            // The kernel allows an online ext4 resize only with CAP_SYS_RESOURCE.
            if !has_capability(CAP_SYS_RESOURCE) {
                return Err(failed(
                    "online ext4 resizing needs the CAP_SYS_RESOURCE capability, which this \
                     process lacks; keep it in the service's CapabilityBoundingSet"
                        .to_string(),
                ));
            }
            cmd::output("resize2fs", &[device.path.as_os_str()], &about)?
        }
        Filesystem::Xfs => cmd::output("xfs_growfs", &[mount_point.as_os_str()], &about)?,
    };
    if !out.success() {
        return Err(failed(out.failed(&about).to_string()));
    }
    let after = fs_size(device, fs, mount_point)?;
    if after > before {
        tracing::info!(device = %device, old_size = before, new_size = after, "filesystem grown");
        Ok(Some(Grown {
            from: before,
            to: after,
        }))
    } else {
        tracing::warn!(device = %device, device_size, fs_size = after, "grow tool ran but the filesystem did not grow");
        Ok(None)
    }
}

const CAP_SYS_RESOURCE: u32 = 24;

/// Whether this process has the capability in its effective set.
fn has_capability(cap: u32) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        // Cannot tell: let the tool try and report.
        return true;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_none_or(|bits| bits >> cap & 1 == 1)
}

/// The filesystem's own size in bytes (blocks × block size), which unlike
/// statvfs does not leave out metadata.
pub(crate) fn fs_size(
    device: &Device,
    fs: Filesystem,
    mount_point: &Path,
) -> Result<u64, VolumeError> {
    let about = device.path.display().to_string();
    match fs {
        Filesystem::Ext4 => {
            let out = cmd::checked(
                "dumpe2fs",
                &["-h".as_ref(), device.path.as_os_str()],
                &about,
            )?;
            parse_dumpe2fs(&out.stdout).ok_or_else(|| {
                out.unexpected(&about, "no \"Block count:\" and \"Block size:\" lines")
            })
        }
        Filesystem::Xfs => {
            // -n: print the geometry only, change nothing.
            let out = cmd::checked(
                "xfs_growfs",
                &["-n".as_ref(), mount_point.as_os_str()],
                &about,
            )?;
            parse_xfs_geometry(&out.stdout)
                .ok_or_else(|| out.unexpected(&about, "no \"data = bsize=… blocks=…\" line"))
        }
    }
}

/// `Block count:` × `Block size:` from `dumpe2fs -h`.
pub(crate) fn parse_dumpe2fs(text: &str) -> Option<u64> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().parse::<u64>().ok())
    };
    field("Block count:")?.checked_mul(field("Block size:")?)
}

/// `bsize=` × `blocks=` on the `data` line of xfs_growfs/xfs_info output.
pub(crate) fn parse_xfs_geometry(text: &str) -> Option<u64> {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("data") && l.contains('='))?;
    let value = |key: &str| {
        line.split(|c: char| c.is_whitespace() || c == ',')
            .find_map(|tok| tok.strip_prefix(key))
            .and_then(|v| v.parse::<u64>().ok())
    };
    value("bsize=")?.checked_mul(value("blocks=")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dumpe2fs_header() {
        let text = "dumpe2fs 1.47.0 (5-Feb-2023)\nFilesystem volume name:   t\nBlock count:              65536\nReserved block count:     3276\nBlock size:               1024\n";
        assert_eq!(parse_dumpe2fs(text), Some(65536 * 1024));
        assert_eq!(parse_dumpe2fs("Block count: 5\n"), None);
    }

    #[test]
    fn xfs_geometry() {
        let text = "meta-data=/dev/loop0             isize=512    agcount=4, agsize=32768 blks\n         =                       sectsz=512   attr=2, projid32bit=1\ndata     =                       bsize=4096   blocks=131072, imaxpct=25\n         =                       sunit=0      swidth=0 blks\nnaming   =version 2              bsize=4096   ascii-ci=0, ftype=1\nlog      =internal log           bsize=4096   blocks=16384, version=2\n";
        assert_eq!(parse_xfs_geometry(text), Some(131072 * 4096));
        assert_eq!(parse_xfs_geometry("naming =version 2 bsize=4096\n"), None);
    }
}
