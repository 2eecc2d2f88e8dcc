//! Creates `<mount_point>/<developer>/home` for every developer (mounted whole
//! over the container's /home/coder) and `home/workspace` in it, owned by
//! `containers.uid:gid`, mode 0750. A new home is seeded with /etc/skel's
//! dotfiles ([`skel`](super::skel)); a developer still on the old layout
//! (`workspace`, `config` beside `home`) is moved into it first ([`migrate`](super::migrate)).
//!
//! Rules, because these directories hold developers' work:
//! - Everything is done relative to an open handle on the mount point, checked
//!   to be on the data volume (`st_dev`), with `O_NOFOLLOW`: a symlink planted at
//!   `<mount>/dev1` is never followed (to the root disk or anywhere else).
//! - A missing directory is made under a temporary name, given its owner and mode
//!   (and, for a home, its dotfiles), then renamed into place (`RENAME_NOREPLACE`),
//!   so no crash leaves a half-initialised (root-owned) directory behind; a
//!   leftover temporary is reused.
//! - An existing directory is never changed: no chown (recursive or not), no
//!   chmod, nothing deleted. When its owner or mode differs from what the agent
//!   would create, a warning is logged and it is left as it is; an admin may
//!   have done that on purpose, and changing it could break the data inside.
//! - A developer removed from the config keeps their directory.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::{OFlag, RenameFlags, openat, renameat2};
use nix::sys::stat::{Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{Gid, Uid, fchown, fsync};

use super::discover::Device;
use super::{HOME_DIR, VolumeError, migrate, skel};
use crate::config::Developer;

/// Mode of every directory the agent creates.
pub(crate) const DIR_MODE: u32 = 0o750;

/// Who should own the directories.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// What a directory pass did.
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    /// Directories created.
    pub created: usize,
    /// Developers whose old-layout data could not be moved into their home, and
    /// why: they are not started until an admin resolves it.
    pub blocked: BTreeMap<String, String>,
}

/// Makes every developer's directories; keeps going past a failing developer and
/// reports "failed N of M".
pub(crate) fn ensure(
    device: &Device,
    mount_point: &Path,
    developers: &[Developer],
    owner: Owner,
) -> Result<Prepared, VolumeError> {
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

    let mut prepared = Prepared::default();
    let mut failures = Vec::new();
    for developer in developers {
        match ensure_developer(&root, device, mount_point, &developer.name, owner) {
            Ok((n, problems)) => {
                prepared.created += n;
                if !problems.is_empty() {
                    let why = problems.join("; ");
                    tracing::error!(developer = %developer.name, problem = %why, "home not migrated; the developer's container is not started or recreated until this is resolved");
                    prepared.blocked.insert(developer.name.clone(), why);
                }
            }
            Err(message) => {
                tracing::error!(developer = %developer.name, error = %message, "cannot prepare developer directories");
                failures.push(format!("{}: {message}", developer.name));
            }
        }
    }
    if failures.is_empty() {
        Ok(prepared)
    } else {
        Err(VolumeError::Directories {
            mount_point: mount_point.to_path_buf(),
            failed: failures.len(),
            total: developers.len(),
            details: failures.join("; "),
        })
    }
}

/// The developer's directories: how many were created, and what blocks the
/// migration of an old layout (empty when nothing does).
fn ensure_developer(
    root: &OwnedFd,
    device: &Device,
    mount_point: &Path,
    name: &str,
    owner: Owner,
) -> Result<(usize, Vec<String>), String> {
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
    let (dir, mut created) = ctx.ensure_dir(root, &base, name, Seed::No)?;
    let home_path = base.join(HOME_DIR);
    let (home, n) = ctx.ensure_dir(&dir, &home_path, HOME_DIR, Seed::Skel)?;
    created += n;
    let problems = migrate::run(&ctx, &dir, &home, &base);
    // Only once the old workspace is gone: an empty new one beside it would
    // turn a move still to do into a conflict.
    if !exists(&dir, migrate::OLD_WORKSPACE) {
        created += ctx.ensure_workspace(&home, &home_path.join("workspace"));
    }
    Ok((created, problems))
}

/// Whether a new directory gets /etc/skel's dotfiles before it appears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seed {
    No,
    Skel,
}

pub(super) struct DirMaker<'a> {
    pub device: &'a Device,
    pub owner: Owner,
    pub developer: &'a str,
}

impl DirMaker<'_> {
    /// Opens `parent/name`, creating it if missing. `path` is for messages.
    pub(super) fn ensure_dir(
        &self,
        parent: &OwnedFd,
        path: &Path,
        name: &str,
        seed: Seed,
    ) -> Result<(OwnedFd, usize), String> {
        match open_dir(parent, name) {
            Ok(fd) => {
                self.check_existing(&fd, path)?;
                Ok((fd, 0))
            }
            Err(Errno::ENOENT) => Ok((self.create(parent, path, name, seed)?, 1)),
            Err(e) => Err(refusal(parent, name, path, e)),
        }
    }

    /// `home/workspace`, the folder code-server opens, made when missing. Inside
    /// the home the developer decides: whatever they put there (a symlink, a
    /// file, a directory with other modes, even at our temporary name) is left
    /// alone with a warning, never followed, and never fails the pass.
    fn ensure_workspace(&self, home: &OwnedFd, path: &Path) -> usize {
        let result = match open_dir(home, "workspace") {
            Ok(_) => Ok(0),
            Err(Errno::ENOENT) => self.create(home, path, "workspace", Seed::No).map(|_| 1),
            Err(e) => Err(refusal(home, "workspace", path, e)),
        };
        result.unwrap_or_else(|why| {
            tracing::warn!(developer = %self.developer, problem = %why, "no ~/workspace; code-server opens the folder only once it is there");
            0
        })
    }

    /// Refuses a directory on another filesystem (something mounted there).
    pub(super) fn on_volume(&self, fd: &OwnedFd, path: &Path) -> Result<(), String> {
        let st = fstat(fd).map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
        if st.st_dev != self.device.rdev {
            return Err(format!(
                "{} is on another filesystem (something is mounted there); not using it",
                path.display()
            ));
        }
        Ok(())
    }

    fn check_existing(&self, fd: &OwnedFd, path: &Path) -> Result<(), String> {
        self.on_volume(fd, path)?;
        let st = fstat(fd).map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
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

    pub(super) fn create(
        &self,
        parent: &OwnedFd,
        path: &Path,
        name: &str,
        seed: Seed,
    ) -> Result<OwnedFd, String> {
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
        if seed == Seed::Skel {
            // Still under its temporary name: nothing else can see it yet.
            let seeded = skel::seed(&fd, Path::new(skel::SKEL_DIR), self.owner)
                .map_err(|e| format!("cannot seed {}: {e}", path.display()))?;
            tracing::debug!(developer = %self.developer, files = seeded, "home seeded from /etc/skel");
        }
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

/// Whether `parent/name` exists (as anything; a symlink is not followed).
pub(super) fn exists(parent: &OwnedFd, name: &str) -> bool {
    !matches!(
        fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW),
        Err(Errno::ENOENT)
    )
}

/// Opens a directory below `parent` without following a symlink.
pub(super) fn open_dir(parent: &OwnedFd, name: &str) -> Result<OwnedFd, Errno> {
    openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Why `parent/name` could not be opened as a directory. With `O_NOFOLLOW |
/// O_DIRECTORY` Linux reports a symlink as ENOTDIR (or ELOOP), so look again.
pub(super) fn refusal(parent: &OwnedFd, name: &str, path: &Path, e: Errno) -> String {
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
