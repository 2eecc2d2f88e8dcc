//! Seeds a new home with the host's /etc/skel dotfiles (`.bashrc`, `.profile`,
//! `.bash_logout`), so a terminal's bash has the usual prompt and settings: the
//! home mounted over /home/coder hides whatever the image kept there.
//!
//! Only into a home being created, while it still has its temporary name (no
//! container sees it yet), and never over anything: a name that exists is
//! skipped. Top-level regular files only; links, directories and large files are
//! skipped. Each file is written under a temporary name, given the developer's
//! owner, then renamed into place without replacing, so a kill leaves either no
//! file or a whole one (a leftover temporary is rewritten on the next pass).

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, RenameFlags, openat, renameat2};
use nix::sys::stat::{Mode, fchmod};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, unlinkat};

use super::dirs::{Owner, exists};

/// Where the dotfiles come from.
pub(crate) const SKEL_DIR: &str = "/etc/skel";
/// Dotfiles are small; anything bigger is not one.
const MAX_BYTES: u64 = 256 * 1024;

/// Copies `skel`'s top-level regular files into `dir`; returns how many.
/// A missing `skel` seeds nothing.
pub(super) fn seed(dir: &OwnedFd, skel: &Path, owner: Owner) -> Result<usize, String> {
    let entries = match std::fs::read_dir(skel) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("cannot read {}: {e}", skel.display())),
    };
    let mut seeded = 0;
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read {}: {e}", skel.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // DirEntry::metadata does not follow a symlink.
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.file_type().is_file() || meta.len() > MAX_BYTES || exists(dir, name) {
            continue;
        }
        let contents = std::fs::read(entry.path())
            .map_err(|e| format!("cannot read {}: {e}", entry.path().display()))?;
        let mode = meta.permissions().mode() & 0o755;
        if write_new(dir, name, &contents, mode, owner)? {
            seeded += 1;
        }
    }
    Ok(seeded)
}

/// Writes `dir/name` unless it exists; true when written.
fn write_new(
    dir: &OwnedFd,
    name: &str,
    contents: &[u8],
    mode: u32,
    owner: Owner,
) -> Result<bool, String> {
    let tmp = format!(".csagent-skel{name}");
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("cannot {what} {name}: {e}");
    let fd = openat(
        dir,
        tmp.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| fail("create", &e))?;
    fchown(
        &fd,
        Some(Uid::from_raw(owner.uid)),
        Some(Gid::from_raw(owner.gid)),
    )
    .map_err(|e| fail("chown", &e))?;
    fchmod(&fd, Mode::from_bits_truncate(mode)).map_err(|e| fail("chmod", &e))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(contents).map_err(|e| fail("write", &e))?;
    file.sync_all().map_err(|e| fail("fsync", &e))?;
    drop(file);
    match renameat2(
        dir.as_fd(),
        tmp.as_str(),
        dir.as_fd(),
        name,
        RenameFlags::RENAME_NOREPLACE,
    ) {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST) => {
            // Someone else's file won: keep it, drop our temporary.
            let _ = unlinkat(dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
            Ok(false)
        }
        Err(e) => Err(fail("rename into place", &e)),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn open(path: &Path) -> OwnedFd {
        nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .expect("open dir")
    }

    fn me() -> Owner {
        Owner {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        }
    }

    #[test]
    fn copies_files_only_and_never_over_anything() {
        let skel = tempfile::tempdir().expect("tempdir");
        let home = tempfile::tempdir().expect("tempdir");
        std::fs::write(skel.path().join(".bashrc"), "PS1='$ '\n").expect("write");
        std::fs::write(skel.path().join(".profile"), "# profile\n").expect("write");
        std::fs::create_dir(skel.path().join(".config")).expect("mkdir");
        std::os::unix::fs::symlink("/etc/shadow", skel.path().join(".link")).expect("symlink");
        // The developer's own .profile (or a leftover of a killed pass) stays.
        std::fs::write(home.path().join(".profile"), "mine\n").expect("write");

        let n = seed(&open(home.path()), skel.path(), me()).expect("seed");
        assert_eq!(n, 1);
        assert_eq!(
            std::fs::read_to_string(home.path().join(".bashrc")).expect("read"),
            "PS1='$ '\n"
        );
        assert_eq!(
            std::fs::read_to_string(home.path().join(".profile")).expect("read"),
            "mine\n"
        );
        assert!(!home.path().join(".config").exists());
        assert!(std::fs::symlink_metadata(home.path().join(".link")).is_err());
        let names: Vec<_> = std::fs::read_dir(home.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporary left: {names:?}");
        assert_eq!(
            std::fs::metadata(home.path().join(".bashrc"))
                .expect("stat")
                .uid(),
            me().uid
        );

        // Again: nothing to do.
        assert_eq!(
            seed(&open(home.path()), skel.path(), me()).expect("seed"),
            0
        );
        // No skeleton directory: nothing to seed, no error.
        let none = home.path().join("no-such-skel");
        assert_eq!(seed(&open(home.path()), &none, me()).expect("seed"), 0);
    }
}
