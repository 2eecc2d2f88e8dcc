//! Everything that can stop a volume pass. Each message names the device, volume
//! or file at fault and says what the admin can do about it.

use std::path::PathBuf;

/// Why a volume pass did not complete.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error(
        "{what} did not appear at {path} within {waited}{detail}; check that it is attached to \
         this instance (developer data is never put on the root disk)"
    )]
    NotFound {
        /// "volume vol-0abc…" or "device /dev/sdf".
        what: String,
        path: PathBuf,
        waited: String,
        /// Extra context such as " (it exists but is 0 bytes)".
        detail: String,
    },

    #[error(
        "{path} ({what}) is a {kind}, not a block device; point volume.device at the data volume"
    )]
    NotBlockDevice {
        what: String,
        path: PathBuf,
        kind: String,
    },

    #[error(
        "refusing {device}: it holds the root filesystem ({detail}); point volume.volume_id or \
         volume.device at the data volume"
    )]
    RootDevice { device: PathBuf, detail: String },

    #[error(
        "refusing {device}: it is mounted at {targets}, not at {mount_point}; unmount it, or set \
         volume.mount_point to where it is mounted"
    )]
    MountedElsewhere {
        device: PathBuf,
        targets: String,
        mount_point: PathBuf,
    },

    #[error(
        "refusing {device}: it has partitions or holders ({children}); csagent uses a whole, \
         unpartitioned device and never formats one that is in use"
    )]
    InUse { device: PathBuf, children: String },

    #[error(
        "refusing to mount {device} at {mount_point}: {occupant} ({fstype}) is already mounted \
         there; unmount it, or set volume.mount_point to a free directory"
    )]
    MountPointBusy {
        device: PathBuf,
        mount_point: PathBuf,
        occupant: String,
        fstype: String,
    },

    #[error(
        "refusing to format {device}: it holds {found}; csagent formats only a blank device. Point \
         the config at the right volume, or wipe the device yourself (wipefs -a {device}) if its \
         contents are not needed"
    )]
    NotBlank { device: PathBuf, found: String },

    #[error(
        "refusing to format {device}: it holds an {found} filesystem (UUID {uuid}) but \
         volume.filesystem is {configured}; change volume.filesystem to {found}, or wipe the \
         device yourself if its contents are not needed"
    )]
    WrongFilesystem {
        device: PathBuf,
        found: String,
        uuid: String,
        configured: String,
    },

    #[error(
        "refusing to format {device}: no signature is recognised, yet its first MiB is not zero \
         (first non-zero byte at offset {offset:#x}), so it may hold a damaged filesystem. Check \
         it (fsck, testdisk) or, if its contents are not needed, zero it yourself: \
         dd if=/dev/zero of={device} bs=1M count=1"
    )]
    UnrecognisedData { device: PathBuf, offset: u64 },

    #[error(
        "{device} holds an {fstype} filesystem without a UUID; it cannot be kept in fstab by UUID"
    )]
    NoUuid { device: PathBuf, fstype: String },

    #[error("cannot run {program} for {about}: {source} (is {package} installed?)")]
    Spawn {
        program: String,
        about: String,
        package: &'static str,
        source: std::io::Error,
    },

    #[error("`{command}` failed for {about} ({status}): {stderr}")]
    Command {
        command: String,
        about: String,
        status: String,
        stderr: String,
    },

    #[error("unexpected output from `{command}` for {about}: {message}")]
    ToolOutput {
        command: String,
        about: String,
        message: String,
    },

    #[error(
        "mounting {device} ({fstype}) at {mount_point} failed: {source}; `dmesg` shows the \
         kernel's reason"
    )]
    Mount {
        device: PathBuf,
        fstype: String,
        mount_point: PathBuf,
        source: nix::Error,
    },

    #[error(
        "{mount_point} is not a mount of {device} after the pass; refusing to create developer \
         directories on the disk underneath"
    )]
    NotMounted {
        device: PathBuf,
        mount_point: PathBuf,
    },

    #[error(
        "{device} is mounted read-only at {mount_point}, so the filesystem may have errors: check \
         `dmesg`, then unmount it and run fsck"
    )]
    ReadOnly {
        device: PathBuf,
        mount_point: PathBuf,
    },

    #[error("{path}: {message}")]
    FstabConflict { path: PathBuf, message: String },

    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("cannot grow the filesystem on {device} online from {from} to {to} bytes: {reason}")]
    Grow {
        device: PathBuf,
        from: u64,
        to: u64,
        reason: String,
    },

    #[error(
        "{device} stayed locked by another process (another csagent pass or a disk tool) for \
         {waited}; try again when it is done"
    )]
    Locked { device: PathBuf, waited: String },

    #[error("developer directories under {mount_point}: failed {failed} of {total}: {details}")]
    Directories {
        mount_point: PathBuf,
        failed: usize,
        total: usize,
        details: String,
    },
}

impl VolumeError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        VolumeError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
