//! Moves a developer's data from the layout before the whole home persisted
//! into `<developer>/home`, so it keeps appearing at the same paths inside the
//! container:
//!
//! | old (bound at)                                     | new, inside `home` (bound at /home/coder) |
//! |----------------------------------------------------|-------------------------------------------|
//! | `workspace` (~/workspace)                           | `home/workspace`                          |
//! | `config` (~/.local/share/code-server)               | `home/.local/share/code-server`           |
//!
//! The steps, for each developer, after `dirs.rs` made `home` (temporary name,
//! owner, mode, dotfiles, then renamed into place):
//!
//! 1. `home/.local/share` is made (owner uid:gid, 0750) where missing;
//! 2. `workspace` is renamed to `home/workspace`;
//! 3. `config` is renamed to `home/.local/share/code-server`.
//!
//! A move is `renameat2(RENAME_NOREPLACE)` within the volume: no byte is copied
//! or duplicated, inodes (and owners, modes, times) stay, and a running
//! container keeps its bind mounts (they follow the inode) until the new spec
//! recreates it. Every step checks before it acts, so a pass killed anywhere is
//! completed by the next one, and a finished one changes nothing.
//!
//! Nothing is ever overwritten: when the target exists too, both are left as
//! they are and the developer is reported, and not started or recreated, until
//! an admin merges them (a container still running on the old layout keeps
//! running). Binding what is safe was the alternative, but the developer would
//! then work in a ~/workspace that is not the one holding their files. The same
//! goes for an old directory that is not a plain directory on the volume (a
//! symlink, a file, a mount): reported, left alone.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{RenameFlags, renameat2};
use nix::unistd::fsync;

use super::dirs::{DirMaker, Seed, exists, open_dir, refusal};

/// The old workspace directory, beside `home`.
pub(super) const OLD_WORKSPACE: &str = "workspace";

/// One move: `<developer>/<from>` to `home/<parents…>/<to>`.
struct Move {
    from: &'static str,
    parents: &'static [&'static str],
    to: &'static str,
}

const MOVES: [Move; 2] = [
    Move {
        from: OLD_WORKSPACE,
        parents: &[],
        to: "workspace",
    },
    Move {
        from: "config",
        parents: &[".local", "share"],
        to: "code-server",
    },
];

/// Moves whatever of the old layout is left into `home`. Returns what blocks
/// the migration, one message per item (empty: nothing left to move).
pub(super) fn run(maker: &DirMaker<'_>, dir: &OwnedFd, home: &OwnedFd, base: &Path) -> Vec<String> {
    MOVES
        .iter()
        .filter_map(|m| move_one(maker, dir, home, base, m).err())
        .collect()
}

fn move_one(
    maker: &DirMaker<'_>,
    dir: &OwnedFd,
    home: &OwnedFd,
    base: &Path,
    m: &Move,
) -> Result<(), String> {
    let from_path = base.join(m.from);
    let source = match open_dir(dir, m.from) {
        Ok(fd) => fd,
        // Nothing there: moved already, or never on the old layout.
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(refusal(dir, m.from, &from_path, e)),
    };
    maker.on_volume(&source, &from_path)?;

    let mut to_path: PathBuf = base.join(super::HOME_DIR);
    let mut parent: Option<OwnedFd> = None;
    for name in m.parents {
        to_path.push(name);
        let at = parent.as_ref().unwrap_or(home);
        let (fd, _) = maker.ensure_dir(at, &to_path, name, Seed::No)?;
        parent = Some(fd);
    }
    let parent = parent.as_ref().unwrap_or(home);
    to_path.push(m.to);

    let conflict = || {
        let empty = is_empty(&source).then_some(" (the old one is empty: rmdir it)");
        format!(
            "both {} and {} exist; csagent moves nothing over existing data: merge them or move one away, then run `csagent reload`{}",
            from_path.display(),
            to_path.display(),
            empty.unwrap_or("")
        )
    };
    if exists(parent, m.to) {
        return Err(conflict());
    }
    match renameat2(
        dir.as_fd(),
        m.from,
        parent.as_fd(),
        m.to,
        RenameFlags::RENAME_NOREPLACE,
    ) {
        Ok(()) => {}
        Err(Errno::EEXIST) => return Err(conflict()),
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => {
            return Err(format!(
                "cannot move {} to {}: {e}",
                from_path.display(),
                to_path.display()
            ));
        }
    }
    for fd in [parent, dir] {
        fsync(fd).map_err(|e| {
            format!(
                "moved {} to {}, but fsync failed: {e}",
                from_path.display(),
                to_path.display()
            )
        })?;
    }
    tracing::info!(
        developer = %maker.developer,
        from = %from_path.display(),
        to = %to_path.display(),
        "moved into the developer's home (same inode, nothing copied)"
    );
    Ok(())
}

/// Whether the directory has no entries (an unreadable one counts as not
/// empty). Only for the conflict message.
fn is_empty(fd: &OwnedFd) -> bool {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_none())
}
