//! Everything that can stop a restore. Each message names the developer,
//! snapshot, volume or device at fault and, where there is one, what to do.

use std::path::PathBuf;

/// Why a restore did not complete.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(
        "csagent restore must run as root: it mounts a volume and writes into a developer's home"
    )]
    NotRoot,

    #[error("{0}")]
    Usage(String),

    #[error("{0}")]
    Identity(Box<crate::aws::IdentityError>),

    #[error("{developer}'s home {path} cannot be restored into: {reason}")]
    LiveHome {
        developer: String,
        path: PathBuf,
        reason: String,
    },

    #[error(
        "{path} already exists; a restore never writes over live files: move it away, or pass \
         --name to restore into another directory"
    )]
    TargetExists { path: PathBuf },

    #[error("{action} {what} failed: {message}")]
    Aws {
        action: &'static str,
        what: String,
        message: String,
    },

    #[error("snapshot {snapshot} is {state}{progress}; restore from a completed snapshot")]
    SnapshotNotReady {
        snapshot: String,
        state: String,
        progress: String,
    },

    #[error(
        "no free device name on {instance} for the temporary volume (all of /dev/sdf../dev/sdp are \
         in use)"
    )]
    NoFreeDevice { instance: String },

    #[error("{what} did not {happen} within {waited}{detail}")]
    Timeout {
        what: String,
        happen: &'static str,
        waited: String,
        detail: String,
    },

    #[error("volume {volume} went to state {state} while {doing}")]
    VolumeState {
        volume: String,
        state: String,
        doing: &'static str,
    },

    #[error("{0}")]
    Volume(Box<crate::volume::VolumeError>),

    #[error("refusing {device} (volume {volume}): {reason}")]
    WrongDevice {
        device: PathBuf,
        volume: String,
        reason: String,
    },

    #[error(
        "cannot mount {device} (volume {volume}, {fstype}) read-only at {mount_point}: {reason}"
    )]
    Mount {
        device: PathBuf,
        volume: String,
        fstype: String,
        mount_point: PathBuf,
        reason: String,
    },

    #[error(
        "snapshot {snapshot} holds nothing for {developer}: no {developer}/home, {developer}/workspace \
         or {developer}/config (its top level holds: {found})"
    )]
    NothingToRestore {
        snapshot: String,
        developer: String,
        found: String,
    },

    #[error(
        "copying {developer}'s files failed at {path} (in the snapshot): {message}; the incomplete copy is left in \
         {target} (owned by the developer; remove it or keep what is there)"
    )]
    Copy {
        developer: String,
        path: PathBuf,
        message: String,
        target: PathBuf,
    },

    #[error(
        "not enough space for {developer}'s files: the copy needs {needed}, the data volume has \
         {free} free"
    )]
    NoSpace {
        developer: String,
        needed: String,
        free: String,
    },

    #[error("interrupted {during}")]
    Interrupted { during: String },
}

impl From<crate::aws::IdentityError> for RestoreError {
    fn from(e: crate::aws::IdentityError) -> Self {
        RestoreError::Identity(Box::new(e))
    }
}

impl From<crate::volume::VolumeError> for RestoreError {
    fn from(e: crate::volume::VolumeError) -> Self {
        RestoreError::Volume(Box::new(e))
    }
}
