//! Copying a developer's files from the read-only snapshot mount into a new
//! directory in their live home.
//!
//! | in the snapshot            | in `<home>/<name>/`                                   |
//! |----------------------------|-------------------------------------------------------|
//! | `<dev>/home/…`             | `…` (the home's content, at the same paths as in `~`) |
//! | `<dev>/workspace` (old)    | `workspace`, or `old-layout/workspace` beside a home  |
//! | `<dev>/config` (old)       | `.local/share/code-server`, or `old-layout/config`    |
//!
//! Never over live files: the target directory is made with `mkdirat`, which
//! fails when anything (even a dangling symlink) has the name. It stays root's,
//! mode 0700, while the copy runs, so nothing the developer runs can swap a
//! directory for a symlink under it; every create is relative to an open
//! directory with `O_NOFOLLOW`/`O_EXCL` all the same. It is handed to the
//! developer (uid:gid) at the end, also after a failure, so they can see or
//! remove what was copied.
//!
//! Never out of the snapshot: symlinks are recreated as symlinks with the same
//! text, never followed, and every source file is opened with `O_NOFOLLOW`.
//! Files keep their mode (without set-uid/set-gid: they now belong to the
//! developer) and their access and modification times; everything is owned by
//! the developer. Sockets, FIFOs and device nodes are skipped and reported;
//! hard links become separate files; extended attributes and ACLs are not copied.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, UtimensatFlags, fchmod, fstat, futimens, mkdirat, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchown, fchownat, symlinkat};

use super::Cancel;

/// The developer's files, copied (default `containers.uid:gid`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// One tree of the snapshot and the directory (under the target) it becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Item {
    pub from: PathBuf,
    /// Components under the target; empty: the target itself.
    pub to: Vec<&'static str>,
}

/// What was (or is to be) copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    /// Sockets, FIFOs, device nodes: not copied.
    pub skipped: u64,
}

/// Why the copy stopped, naming the source path it was at.
#[derive(Debug)]
pub(super) struct Failure {
    pub path: PathBuf,
    pub message: String,
    pub interrupted: bool,
    /// The target directory was made (and may hold part of the copy).
    pub target_made: bool,
}

/// How often progress is reported while copying.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What of the developer's directory in the snapshot to copy, and where to. Err:
/// nothing there (with what the snapshot's top level holds, for the message).
pub(super) fn plan(mount: &Path, developer: &str) -> Result<Vec<Item>, String> {
    let dev = mount.join(developer);
    let is_dir = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    let found = || {
        let mut names: Vec<String> = std::fs::read_dir(mount)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        if names.is_empty() {
            "nothing".to_string()
        } else {
            names.join(", ")
        }
    };
    if !is_dir(&dev) {
        return Err(found());
    }
    let home = is_dir(&dev.join(crate::volume::HOME_DIR));
    let mut items = Vec::new();
    if home {
        items.push(Item {
            from: dev.join(crate::volume::HOME_DIR),
            to: vec![],
        });
    }
    if is_dir(&dev.join("workspace")) {
        items.push(Item {
            from: dev.join("workspace"),
            to: if home {
                vec!["old-layout", "workspace"]
            } else {
                vec!["workspace"]
            },
        });
    }
    if is_dir(&dev.join("config")) {
        items.push(Item {
            from: dev.join("config"),
            to: if home {
                vec!["old-layout", "config"]
            } else {
                vec![".local", "share", "code-server"]
            },
        });
    }
    if items.is_empty() {
        return Err(found());
    }
    Ok(items)
}

/// Counts what [`copy`] will copy, for progress and the space check.
pub(super) fn scan(items: &[Item]) -> std::io::Result<Counts> {
    fn walk(dir: &Path, c: &mut Counts) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let meta = std::fs::symlink_metadata(entry.path())?;
            let ft = meta.file_type();
            if ft.is_dir() {
                c.dirs += 1;
                walk(&entry.path(), c)?;
            } else if ft.is_file() {
                c.files += 1;
                c.bytes += meta.len();
            } else if ft.is_symlink() {
                c.symlinks += 1;
            } else {
                c.skipped += 1;
            }
        }
        Ok(())
    }
    let mut c = Counts::default();
    for item in items {
        walk(&item.from, &mut c)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", item.from.display())))?;
    }
    Ok(c)
}

/// Copies `items` into a new directory `name` in `home`. `progress` gets the
/// running counts about once a second and once at the end.
pub(super) fn copy(
    items: &[Item],
    home: &Path,
    name: &str,
    owner: Owner,
    cancel: &Cancel,
    progress: &mut dyn FnMut(&Counts),
) -> Result<(Counts, Vec<PathBuf>), Failure> {
    let fail = |path: &Path, what: &str, e: &dyn std::fmt::Display| Failure {
        path: path.to_path_buf(),
        message: format!("{what}: {e}"),
        interrupted: false,
        target_made: false,
    };
    let target = home.join(name);
    let home_fd = nix::fcntl::open(
        home,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail(home, "cannot open the live home", &e))?;
    mkdirat(&home_fd, name, Mode::from_bits_truncate(0o700))
        .map_err(|e| fail(&target, "cannot create the target directory", &e))?;
    let top = open_dir(&home_fd, OsStr::new(name)).map_err(|e| Failure {
        target_made: true,
        ..fail(&target, "cannot open the target directory", &e)
    })?;
    let mut c = Copier {
        owner,
        done: Counts::default(),
        skipped: Vec::new(),
        cancel,
        progress,
        last: Instant::now(),
        buf: vec![0; 1 << 20],
    };
    let copied = match fstat(&top) {
        // Someone swapped our new directory for theirs between mkdir and open.
        Ok(st) if st.st_uid != 0 || st.st_mode & 0o7777 != 0o700 => Err(fail(
            &target,
            "refusing to copy",
            &"the new directory changed owner or mode under us",
        )),
        Err(e) => Err(fail(&target, "cannot stat the target directory", &e)),
        Ok(_) => items.iter().try_for_each(|item| c.item(&top, item)),
    };
    // Hand the directory over whatever happened; the home's mode when the home
    // was copied, else a home's usual 0750.
    let mode = items
        .iter()
        .find(|i| i.to.is_empty())
        .and_then(|i| std::fs::symlink_metadata(&i.from).ok())
        .map_or(0o750, |m| m.mode() & 0o1777);
    let handed = fchown(
        &top,
        Some(Uid::from_raw(owner.uid)),
        Some(Gid::from_raw(owner.gid)),
    )
    .and_then(|()| fchmod(&top, Mode::from_bits_truncate(mode)))
    .map_err(|e| {
        fail(
            &target,
            "cannot give the target directory to the developer",
            &e,
        )
    });
    (c.progress)(&c.done);
    let mark = |mut f: Failure| {
        f.target_made = true;
        f
    };
    copied.map_err(mark)?;
    handed.map_err(mark)?;
    Ok((c.done, c.skipped))
}

struct Copier<'a> {
    owner: Owner,
    done: Counts,
    skipped: Vec<PathBuf>,
    cancel: &'a Cancel,
    progress: &'a mut dyn FnMut(&Counts),
    last: Instant,
    buf: Vec<u8>,
}

fn open_dir(parent: &OwnedFd, name: &OsStr) -> nix::Result<OwnedFd> {
    openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

fn times(meta: &std::fs::Metadata) -> (TimeSpec, TimeSpec) {
    (
        TimeSpec::new(meta.atime(), meta.atime_nsec()),
        TimeSpec::new(meta.mtime(), meta.mtime_nsec()),
    )
}

impl Copier<'_> {
    fn fail(path: &Path, what: &str, e: &dyn std::fmt::Display) -> Failure {
        Failure {
            path: path.to_path_buf(),
            message: format!("{what}: {e}"),
            interrupted: false,
            target_made: true,
        }
    }

    fn tick(&mut self, path: &Path) -> Result<(), Failure> {
        if self.cancel.is_set() {
            return Err(Failure {
                path: path.to_path_buf(),
                message: "interrupted".to_string(),
                interrupted: true,
                target_made: true,
            });
        }
        if self.last.elapsed() >= PROGRESS_EVERY {
            self.last = Instant::now();
            (self.progress)(&self.done);
        }
        Ok(())
    }

    fn item(&mut self, top: &OwnedFd, item: &Item) -> Result<(), Failure> {
        let Some((last, parents)) = item.to.split_last() else {
            return self.dir_contents(&item.from, top);
        };
        // Directories between the target and the item's own (.local/share):
        // the developer's, 0750, like the agent makes them in a home.
        let mut dir = top
            .try_clone()
            .map_err(|e| Self::fail(&item.from, "dup", &e))?;
        for p in parents {
            match mkdirat(&dir, *p, Mode::from_bits_truncate(0o750)) {
                Ok(()) | Err(nix::Error::EEXIST) => {}
                Err(e) => return Err(Self::fail(&item.from, &format!("cannot create {p}"), &e)),
            }
            let next = open_dir(&dir, OsStr::new(p))
                .map_err(|e| Self::fail(&item.from, &format!("cannot open {p}"), &e))?;
            fchown(
                &next,
                Some(Uid::from_raw(self.owner.uid)),
                Some(Gid::from_raw(self.owner.gid)),
            )
            .map_err(|e| Self::fail(&item.from, &format!("cannot chown {p}"), &e))?;
            dir = next;
        }
        let meta = std::fs::symlink_metadata(&item.from)
            .map_err(|e| Self::fail(&item.from, "cannot stat", &e))?;
        self.dir(&item.from, &dir, OsStr::new(last), &meta)
    }

    /// `src` (a directory) becomes `parent/name`.
    fn dir(
        &mut self,
        src: &Path,
        parent: &OwnedFd,
        name: &OsStr,
        meta: &std::fs::Metadata,
    ) -> Result<(), Failure> {
        mkdirat(parent, name, Mode::from_bits_truncate(0o700))
            .map_err(|e| Self::fail(src, "cannot create the directory", &e))?;
        let fd = open_dir(parent, name)
            .map_err(|e| Self::fail(src, "cannot open the new directory", &e))?;
        self.dir_contents(src, &fd)?;
        // After the children: writing them changed the directory's times.
        self.finish(src, &fd, meta)?;
        self.done.dirs += 1;
        Ok(())
    }

    fn dir_contents(&mut self, src: &Path, dst: &OwnedFd) -> Result<(), Failure> {
        let entries = std::fs::read_dir(src).map_err(|e| Self::fail(src, "cannot list", &e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Self::fail(src, "cannot list", &e))?;
            let path = entry.path();
            let name = entry.file_name();
            self.tick(&path)?;
            let meta = std::fs::symlink_metadata(&path)
                .map_err(|e| Self::fail(&path, "cannot stat", &e))?;
            let ft = meta.file_type();
            if ft.is_dir() {
                self.dir(&path, dst, &name, &meta)?;
            } else if ft.is_file() {
                self.file(&path, dst, &name, &meta)?;
            } else if ft.is_symlink() {
                self.symlink(&path, dst, &name, &meta)?;
            } else {
                self.done.skipped += 1;
                self.skipped.push(path);
            }
        }
        Ok(())
    }

    fn file(
        &mut self,
        src: &Path,
        dst: &OwnedFd,
        name: &OsStr,
        meta: &std::fs::Metadata,
    ) -> Result<(), Failure> {
        let mut input = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(src)
            .map_err(|e| Self::fail(src, "cannot open", &e))?;
        let fd = openat(
            dst,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| Self::fail(src, "cannot create the copy", &e))?;
        let mut output = File::from(fd);
        loop {
            let n = match input.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Self::fail(src, "cannot read", &e)),
            };
            output
                .write_all(&self.buf[..n])
                .map_err(|e| Self::fail(src, "cannot write the copy", &e))?;
            self.done.bytes += n as u64;
            self.tick(src)?;
        }
        self.finish(src, &output, meta)?;
        self.done.files += 1;
        Ok(())
    }

    fn symlink(
        &mut self,
        src: &Path,
        dst: &OwnedFd,
        name: &OsStr,
        meta: &std::fs::Metadata,
    ) -> Result<(), Failure> {
        let target =
            std::fs::read_link(src).map_err(|e| Self::fail(src, "cannot read the link", &e))?;
        symlinkat(&target, dst, name).map_err(|e| Self::fail(src, "cannot create the link", &e))?;
        fchownat(
            dst,
            name,
            Some(Uid::from_raw(self.owner.uid)),
            Some(Gid::from_raw(self.owner.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| Self::fail(src, "cannot chown the link", &e))?;
        let (atime, mtime) = times(meta);
        utimensat(dst, name, &atime, &mtime, UtimensatFlags::NoFollowSymlink)
            .map_err(|e| Self::fail(src, "cannot set the link's times", &e))?;
        self.done.symlinks += 1;
        Ok(())
    }

    /// Owner, mode (without set-uid/set-gid), then times: chown would clear
    /// the mode bits, and any write would change the times.
    fn finish<F: std::os::fd::AsFd>(
        &self,
        src: &Path,
        fd: F,
        meta: &std::fs::Metadata,
    ) -> Result<(), Failure> {
        let fd = fd.as_fd();
        fchown(
            fd,
            Some(Uid::from_raw(self.owner.uid)),
            Some(Gid::from_raw(self.owner.gid)),
        )
        .map_err(|e| Self::fail(src, "cannot chown the copy", &e))?;
        fchmod(fd, Mode::from_bits_truncate(meta.mode() & 0o1777))
            .map_err(|e| Self::fail(src, "cannot set the copy's mode", &e))?;
        let (atime, mtime) = times(meta);
        futimens(fd, &atime, &mtime).map_err(|e| Self::fail(src, "cannot set the copy's times", &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(layout: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for p in layout {
            std::fs::create_dir_all(d.path().join(p)).unwrap();
        }
        d
    }

    #[test]
    fn plan_maps_both_layouts() {
        let d = tree(&[
            "alice/home/workspace",
            "bob/workspace",
            "bob/config",
            "carol/home",
            "carol/workspace",
        ]);
        let m = d.path();
        assert_eq!(
            plan(m, "alice").unwrap(),
            vec![Item {
                from: m.join("alice/home"),
                to: vec![]
            }]
        );
        assert_eq!(
            plan(m, "bob").unwrap(),
            vec![
                Item {
                    from: m.join("bob/workspace"),
                    to: vec!["workspace"]
                },
                Item {
                    from: m.join("bob/config"),
                    to: vec![".local", "share", "code-server"]
                },
            ]
        );
        assert_eq!(
            plan(m, "carol").unwrap(),
            vec![
                Item {
                    from: m.join("carol/home"),
                    to: vec![]
                },
                Item {
                    from: m.join("carol/workspace"),
                    to: vec!["old-layout", "workspace"]
                },
            ]
        );
        assert_eq!(plan(m, "dave").unwrap_err(), "alice, bob, carol");
    }

    #[test]
    fn plan_never_follows_a_symlinked_developer_directory() {
        let d = tree(&["alice/home"]);
        std::os::unix::fs::symlink(d.path().join("alice"), d.path().join("mallory")).unwrap();
        assert!(plan(d.path(), "mallory").is_err());
    }
}
