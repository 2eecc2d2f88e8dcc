//! Creates the filesystem — only ever called for a device [`super::probe`] found
//! blank, with the device lock held. Note that `mkfs.ext4` run without a terminal
//! overwrites an existing filesystem without asking, so the probe is the guard, not
//! mkfs. Neither `-F` (ext4) nor `-f` (xfs) is passed, so `mkfs.xfs` at least
//! refuses a device that gained a signature in between.

use super::discover::Device;
use super::{VolumeError, cmd};
use crate::config::Filesystem;

/// Runs mkfs with the label.
pub(crate) fn mkfs(device: &Device, fs: Filesystem, label: &str) -> Result<(), VolumeError> {
    let program = match fs {
        Filesystem::Ext4 => "mkfs.ext4",
        Filesystem::Xfs => "mkfs.xfs",
    };
    cmd::checked(
        program,
        &[
            "-q".as_ref(),
            "-L".as_ref(),
            label.as_ref(),
            device.path.as_os_str(),
        ],
        &device.path.display().to_string(),
    )?;
    Ok(())
}
