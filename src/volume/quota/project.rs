//! Each developer's project id, and putting their whole home in it.
//!
//! The id is kept on the volume itself, in `<mount>/<developer>/.csagent-project`
//! (beside `home`, so not visible in the container), written only once the whole
//! home has been put in the project. A new developer gets one more than the
//! highest id any directory on the volume has (markers, and homes' own ids), from
//! [`FIRST_ID`]; so ids are stable across restarts, reorderings of the developer
//! list and removed developers (who keep theirs).
//!
//! The walk: directories get the id and `FS_XFLAG_PROJINHERIT` (so what is
//! created in them later is in the project), regular files the id. It never
//! follows a symlink (`O_NOFOLLOW`, relative to open directory handles), never
//! leaves the volume (`st_dev`), and skips what cannot be opened without side
//! effects (symlinks, fifos, sockets, device nodes: they hold no data blocks).
//! The home itself is set first, so files created during the walk inherit.

use std::collections::BTreeSet;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fstat, fstatat};

use super::sys;
use crate::fsutil;

/// The first project id handed out (0 is "no project"; ids below are left to
/// whatever an admin set up by hand).
pub(crate) const FIRST_ID: u32 = 1000;

/// The marker's file name, in `<mount>/<developer>/`.
pub(crate) const MARKER: &str = ".csagent-project";

/// The id in a developer's marker, if it has a valid one.
pub(crate) fn read_marker(mount_point: &Path, developer: &str) -> Option<u32> {
    let text = std::fs::read_to_string(mount_point.join(developer).join(MARKER)).ok()?;
    text.trim().parse().ok().filter(|id| *id != 0)
}

pub(crate) fn write_marker(mount_point: &Path, developer: &str, id: u32) -> std::io::Result<()> {
    fsutil::write_atomic(
        &mount_point.join(developer).join(MARKER),
        format!("{id}\n").as_bytes(),
        fsutil::Perms {
            mode: Some(0o644),
            owner: Some((0, 0)),
        },
    )
}

fn open_dir_at(parent: &impl AsFd, name: &str) -> Result<OwnedFd, Errno> {
    openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// The project id of `<mount>/<name>/home`, when it has one.
fn home_project(root: &OwnedFd, name: &str) -> Option<u32> {
    let dev = open_dir_at(root, name).ok()?;
    let home = open_dir_at(&dev, super::super::HOME_DIR).ok()?;
    sys::project_of(home.as_fd())
        .ok()
        .map(|p| p.id)
        .filter(|id| *id != 0)
}

/// Every project id in use on the volume: markers and homes of every
/// directory under the mount point, configured developers or not.
pub(crate) fn ids_in_use(root: &OwnedFd, mount_point: &Path) -> BTreeSet<u32> {
    let mut used = BTreeSet::new();
    let Ok(dir) = Dir::openat(
        root,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        Mode::empty(),
    ) else {
        return used;
    };
    for entry in dir.into_iter().flatten() {
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        used.extend(read_marker(mount_point, name));
        used.extend(home_project(root, name));
    }
    used
}

/// The id for `developer`: its marker's; else its home's own (a walk that was
/// cut short) unless another directory has it too; else a new one.
pub(crate) fn choose(marker: Option<u32>, home: Option<u32>, others: &BTreeSet<u32>) -> u32 {
    if let Some(id) = marker {
        return id;
    }
    if let Some(id) = home.filter(|id| !others.contains(id)) {
        return id;
    }
    others
        .iter()
        .next_back()
        .map_or(FIRST_ID, |max| (max + 1).max(FIRST_ID))
}

/// What a walk did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Walked {
    /// Files and directories whose project changed.
    pub changed: u64,
    /// Those that could not be changed (first few errors kept for the message).
    pub failed: u64,
    pub errors: Vec<String>,
}

impl Walked {
    fn fail(&mut self, path: &Path, e: Errno) {
        self.failed += 1;
        if self.errors.len() < 3 {
            self.errors.push(format!("{}: {e}", path.display()));
        }
    }
}

/// Puts `home` (an open directory on the volume, `path` for messages) and
/// everything in it into project `id`.
pub(crate) fn walk(home: &OwnedFd, path: &Path, id: u32) -> Result<Walked, Errno> {
    let dev = fstat(home)?.st_dev;
    let mut walked = Walked::default();
    if sys::set_project(home.as_fd(), id, true)? {
        walked.changed += 1;
    }
    walk_dir(home, path, id, dev, &mut walked);
    Ok(walked)
}

fn walk_dir(dir_fd: &OwnedFd, path: &Path, id: u32, dev: u64, walked: &mut Walked) {
    let dir = match Dir::openat(
        dir_fd,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(d) => d,
        Err(e) => return walked.fail(path, e),
    };
    let names: Vec<String> = dir
        .into_iter()
        .flatten()
        .filter_map(|e| e.file_name().to_str().ok().map(str::to_string))
        .filter(|n| n != "." && n != "..")
        .collect();
    for name in names {
        let child = path.join(&name);
        let st = match fstatat(dir_fd, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => continue,
            Err(e) => {
                walked.fail(&child, e);
                continue;
            }
        };
        let kind = st.st_mode & SFlag::S_IFMT.bits();
        let is_dir = kind == SFlag::S_IFDIR.bits();
        if st.st_dev != dev || !(is_dir || kind == SFlag::S_IFREG.bits()) {
            continue;
        }
        let flags = if is_dir {
            OFlag::O_RDONLY | OFlag::O_DIRECTORY
        } else {
            // O_NONBLOCK: never wait on a file someone swapped in (a lease, a fifo).
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOATIME
        };
        let fd = match openat(
            dir_fd,
            name.as_str(),
            flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => continue,
            Err(e) => {
                walked.fail(&child, e);
                continue;
            }
        };
        // Swapped for something else between the stat and the open: next pass.
        if fstat(&fd)
            .map(|s| s.st_ino != st.st_ino || s.st_dev != dev)
            .unwrap_or(true)
        {
            continue;
        }
        match sys::set_project(fd.as_fd(), id, is_dir) {
            Ok(true) => walked.changed += 1,
            Ok(false) => {}
            Err(e) => walked.fail(&child, e),
        }
        if is_dir {
            walk_dir(&fd, &child, id, dev, walked);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_kept_and_new_ones_do_not_collide() {
        let none = BTreeSet::new();
        assert_eq!(choose(None, None, &none), FIRST_ID);
        assert_eq!(choose(Some(7), Some(9), &none), 7);
        let used: BTreeSet<u32> = [1000, 1001, 1005].into();
        assert_eq!(choose(None, None, &used), 1006);
        // A walk cut short left the home's id: reuse it unless taken.
        assert_eq!(choose(None, Some(1003), &used), 1003);
        assert_eq!(choose(None, Some(1001), &used), 1006);
        let low: BTreeSet<u32> = [3].into();
        assert_eq!(choose(None, None, &low), FIRST_ID);
    }
}
