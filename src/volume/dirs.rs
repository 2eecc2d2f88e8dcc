//! Creates `<mount_point>/<developer>/{workspace,config}` for every developer,
//! owned by `containers.uid:gid`, mode 0750.
//!
//! Rules, because these directories hold developers' work:
//! - Everything is done relative to an open handle on the mount point, checked
//!   to be on the data volume (`st_dev`), with `O_NOFOLLOW`: a symlink planted at
//!   `<mount>/dev1` is never followed (to the root disk or anywhere else).
//! - A missing directory is made under a temporary name, given its owner and mode,
//!   then renamed into place (`RENAME_NOREPLACE`), so no crash leaves a
//!   half-initialised (root-owned) directory behind; a leftover temporary is reused.
//! - An existing directory is never changed: no chown (recursive or not), no
//!   chmod, nothing deleted. When its owner or mode differs from what the agent
//!   would create, a warning is logged and it is left as it is; an admin may
//!   have done that on purpose, and changing it could break the data inside.
//! - A developer removed from the config keeps their directory.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::{OFlag, RenameFlags, openat, renameat2};
use nix::sys::stat::{Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{Gid, Uid, fchown, fsync};

use super::VolumeError;
use super::discover::Device;
use crate::config::Developer;

/// Mode of every directory the agent creates.
pub(crate) const DIR_MODE: u32 = 0o750;

/// Who should own the directories.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Makes every developer's directories; keeps going past a failing developer and
/// reports "failed N of M". Returns how many directories were created.
pub(crate) fn ensure(
    device: &Device,
    mount_point: &Path,
    developers: &[Developer],
    owner: Owner,
) -> Result<usize, VolumeError> {
    let root = nix::fcntl::open(
        mount_point,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| VolumeError::io("cannot open", mount_point, e.into()))?;
    // The final guard: never create developer directories on another disk.
    let on_volume = fstat(&root).is_ok_and(|st| st.st_dev == device.rdev);
    if !on_volume {
        return Err(VolumeError::NotMounted {
            device: device.path.clone(),
            mount_point: mount_point.to_path_buf(),
        });
    }

    let mut created = 0;
    let mut failures = Vec::new();
    for developer in developers {
        match ensure_developer(&root, device, mount_point, &developer.name, owner) {
            Ok(n) => created += n,
            Err(message) => {
                tracing::error!(developer = %developer.name, error = %message, "cannot prepare developer directories");
                failures.push(format!("{}: {message}", developer.name));
            }
        }
    }
    if failures.is_empty() {
        Ok(created)
    } else {
        Err(VolumeError::Directories {
            mount_point: mount_point.to_path_buf(),
            failed: failures.len(),
            total: developers.len(),
            details: failures.join("; "),
        })
    }
}

fn ensure_developer(
    root: &OwnedFd,
    device: &Device,
    mount_point: &Path,
    name: &str,
    owner: Owner,
) -> Result<usize, String> {
    // The config allows only [a-z0-9-] names; never let one walk out of the mount.
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(format!("{name:?} is not a usable directory name"));
    }
    let base = mount_point.join(name);
    let ctx = DirMaker {
        device,
        owner,
        developer: name,
    };
    let (dir, mut created) = ctx.ensure_dir(root, &base, name)?;
    for sub in ["workspace", "config"] {
        created += ctx.ensure_dir(&dir, &base.join(sub), sub)?.1;
    }
    Ok(created)
}

struct DirMaker<'a> {
    device: &'a Device,
    owner: Owner,
    developer: &'a str,
}

impl DirMaker<'_> {
    /// Opens `parent/name`, creating it if missing. `path` is for messages.
    fn ensure_dir(
        &self,
        parent: &OwnedFd,
        path: &Path,
        name: &str,
    ) -> Result<(OwnedFd, usize), String> {
        match open_dir(parent, name) {
            Ok(fd) => {
                self.check_existing(&fd, path)?;
                Ok((fd, 0))
            }
            Err(Errno::ENOENT) => Ok((self.create(parent, path, name)?, 1)),
            Err(e) => Err(refusal(parent, name, path, e)),
        }
    }

    fn check_existing(&self, fd: &OwnedFd, path: &Path) -> Result<(), String> {
        let st = fstat(fd).map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
        if st.st_dev != self.device.rdev {
            return Err(format!(
                "{} is on another filesystem (something is mounted there); not using it",
                path.display()
            ));
        }
        let mode = st.st_mode & 0o7777;
        if st.st_uid != self.owner.uid || st.st_gid != self.owner.gid || mode != DIR_MODE {
            tracing::warn!(
                developer = %self.developer,
                path = %path.display(),
                uid = st.st_uid,
                gid = st.st_gid,
                mode = %format!("{mode:o}"),
                expected_uid = self.owner.uid,
                expected_gid = self.owner.gid,
                expected_mode = %format!("{DIR_MODE:o}"),
                "existing directory has another owner or mode; leaving it as it is (csagent never changes existing data); chown/chmod it yourself if the container cannot use it"
            );
        }
        Ok(())
    }

    fn create(&self, parent: &OwnedFd, path: &Path, name: &str) -> Result<OwnedFd, String> {
        let tmp = format!(".{name}.csagent-new");
        let fail = |what: &str, e: Errno| format!("cannot {what} {}: {e}", path.display());
        match mkdirat(parent, tmp.as_str(), Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(fail("create", e)),
        }
        let fd = open_dir(parent, &tmp)
            .map_err(|e| refusal(parent, &tmp, &path.with_file_name(&tmp), e))?;
        fchown(
            &fd,
            Some(Uid::from_raw(self.owner.uid)),
            Some(Gid::from_raw(self.owner.gid)),
        )
        .map_err(|e| fail("chown", e))?;
        fchmod(&fd, Mode::from_bits_truncate(DIR_MODE)).map_err(|e| fail("chmod", e))?;
        renameat2(
            parent.as_fd(),
            tmp.as_str(),
            parent.as_fd(),
            name,
            RenameFlags::RENAME_NOREPLACE,
        )
        .map_err(|e| fail("rename into place", e))?;
        fsync(parent).map_err(|e| fail("fsync the parent of", e))?;
        tracing::info!(
            developer = %self.developer,
            path = %path.display(),
            uid = self.owner.uid,
            gid = self.owner.gid,
            "created developer directory"
        );
        Ok(fd)
    }
}

/// Opens a directory below `parent` without following a symlink.
fn open_dir(parent: &OwnedFd, name: &str) -> Result<OwnedFd, Errno> {
    openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Why `parent/name` could not be opened as a directory. With `O_NOFOLLOW |
/// O_DIRECTORY` Linux reports a symlink as ENOTDIR (or ELOOP), so look again.
fn refusal(parent: &OwnedFd, name: &str, path: &Path, e: Errno) -> String {
    let is_link = matches!(e, Errno::ELOOP | Errno::ENOTDIR)
        && fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .is_ok_and(|st| st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFLNK.bits());
    match e {
        _ if is_link => format!(
            "{} is a symbolic link; csagent does not follow it (remove or replace it with a directory)",
            path.display()
        ),
        Errno::ENOTDIR => format!(
            "{} exists but is not a directory; move it away so csagent can create the directory",
            path.display()
        ),
        e => format!("cannot open {}: {e}", path.display()),
    }
}
