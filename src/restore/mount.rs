//! Mounting the temporary volume: check the device is not in use, find its
//! filesystem, and mount it read-only in a private directory so that nothing on
//! the snapshot's copy is ever written — not even a journal replay: ext4 gets
//! `noload`, xfs `norecovery` (and `nouuid`: the copy has the same UUID as the
//! live data volume, which xfs otherwise refuses to mount twice).

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::mount::{MntFlags, MsFlags};

use super::RestoreError;

/// Where temporary volumes are mounted, one directory per volume id. On /run (a
/// tmpfs), so a reboot in the middle leaves no stale directory on disk.
pub(super) const MOUNT_BASE: &str = "/run/csagent-restore";

/// Refuses a device that is mounted anywhere or is the data volume itself (a
/// wrong by-id link must not get the live volume mounted a second time).
pub(super) fn check_free(
    device: &Path,
    rdev: u64,
    volume: &str,
    data_volume: Option<u64>,
) -> Result<(), RestoreError> {
    let wrong = |reason: String| RestoreError::WrongDevice {
        device: device.to_path_buf(),
        volume: volume.to_string(),
        reason,
    };
    if data_volume == Some(rdev) {
        return Err(wrong("it is the live data volume".to_string()));
    }
    let wanted = format!(
        "{}:{}",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    );
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| wrong(format!("cannot read /proc/self/mountinfo: {e}")))?;
    // Fields: id parent major:minor root mount-point ...
    let targets: Vec<&str> = mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&wanted.as_str())).then(|| f.get(4).copied().unwrap_or("?"))
        })
        .collect();
    if !targets.is_empty() {
        return Err(wrong(format!(
            "it is already mounted at {}",
            targets.join(", ")
        )));
    }
    Ok(())
}

/// The filesystem type blkid finds on `device`: only ext4 and xfs are read.
pub(super) fn filesystem(device: &Path, volume: &str) -> Result<&'static str, RestoreError> {
    let out = Command::new("blkid")
        .args(["-p", "-s", "TYPE", "-o", "value"])
        .arg(device)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| RestoreError::WrongDevice {
            device: device.to_path_buf(),
            volume: volume.to_string(),
            reason: format!("cannot run blkid: {e} (is util-linux installed?)"),
        })?;
    let found = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match found.as_str() {
        "ext4" => Ok("ext4"),
        "xfs" => Ok("xfs"),
        _ => Err(RestoreError::Mount {
            device: device.to_path_buf(),
            volume: volume.to_string(),
            fstype: if found.is_empty() {
                "no filesystem".to_string()
            } else {
                found.clone()
            },
            mount_point: PathBuf::from(MOUNT_BASE).join(volume),
            reason: if found.is_empty() {
                "blkid finds no filesystem on it (is it the data volume's snapshot?)".to_string()
            } else {
                format!("csagent reads only ext4 and xfs, not {found}")
            },
        }),
    }
}

/// The mount options that keep a dirty journal from being replayed.
pub(super) fn options(fstype: &str) -> &'static str {
    match fstype {
        "xfs" => "norecovery,nouuid",
        _ => "noload",
    }
}

/// Makes the private directory and mounts `device` read-only on it. Returns the
/// directory; on error nothing is mounted and the directory is gone.
pub(super) fn mount(device: &Path, fstype: &str, volume: &str) -> Result<PathBuf, RestoreError> {
    let base = Path::new(MOUNT_BASE);
    let dir = base.join(volume);
    let fail = |reason: String| RestoreError::Mount {
        device: device.to_path_buf(),
        volume: volume.to_string(),
        fstype: fstype.to_string(),
        mount_point: dir.clone(),
        reason,
    };
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(base)
        .map_err(|e| fail(format!("cannot create {}: {e}", base.display())))?;
    // Root-only: the snapshot holds every developer's files.
    let meta = std::fs::symlink_metadata(base)
        .map_err(|e| fail(format!("cannot stat {}: {e}", base.display())))?;
    if !meta.is_dir() || meta.uid() != 0 || meta.mode() & 0o077 != 0 {
        return Err(fail(format!(
            "{} is not a directory only root can enter",
            base.display()
        )));
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if let Err(e) = nix::mount::mount(
        Some(device),
        &dir,
        Some(fstype),
        flags,
        Some(options(fstype)),
    ) {
        let _ = std::fs::remove_dir(&dir);
        return Err(fail(format!("{e}; `dmesg` shows the kernel's reason")));
    }
    Ok(dir)
}

/// Unmounts `dir` (a few tries while it is busy) and removes it.
pub(super) fn unmount(dir: &Path) -> Result<(), String> {
    let mut tries = 0;
    loop {
        match nix::mount::umount2(dir, MntFlags::empty()) {
            Ok(()) | Err(nix::Error::EINVAL) => break,
            Err(nix::Error::EBUSY) if tries < 10 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => {
                return Err(format!(
                    "cannot unmount {}: {e} (`fuser -vm {}` shows who uses it)",
                    dir.display(),
                    dir.display()
                ));
            }
        }
    }
    std::fs::remove_dir(dir).map_err(|e| format!("cannot remove {}: {e}", dir.display()))
}
