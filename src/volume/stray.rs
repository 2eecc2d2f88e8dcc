//! Stray content on the root disk under the mount point, moved into quarantine.
//!
//! The mount point directory on the root disk should be empty. When it is not,
//! what it holds was written while the volume was not mounted: most often by a
//! container that dockerd started before the volume was mounted (dockerd creates a
//! missing bind source as an empty directory, and the developer then works in it).
//! Once the volume is mounted on top, that content is hidden. It is never deleted:
//! each entry is moved into `<agent.state_dir>/quarantine/<UTC time>/<name>`,
//! which `csagent status` lists ([`scan`]) until the admin deals with it.
//!
//! How, in [`sweep`]:
//! 1. a private, non-recursive bind mount of the filesystem that holds the mount
//!    point directory, at `<agent.runtime_dir>/.volume-underneath`: a
//!    non-recursive bind does not carry the volume's mount, so the directory's
//!    own (hidden) contents show through it;
//! 2. refuse when what shows there is the data volume itself;
//! 3. the quarantine directory, seen through the same bind, must be the real one
//!    (same device and inode): rename(2) moves without copying, but only within
//!    one mount. When it is not (the state directory is on another filesystem),
//!    entries stay where they are and are reported, never copied: a copy that
//!    fails halfway is worse than a file left hidden;
//! 4. rename each entry (`RENAME_NOREPLACE`), then unmount the bind.
//!
//! A container still running with a bind into a moved directory keeps writing
//! into it (a rename keeps the inode), so those writes land in quarantine too.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
use nix::mount::{MntFlags, MsFlags};
use serde::{Deserialize, Serialize};

use super::{VolumeError, mount};
use crate::config::Config;

/// One entry in quarantine (or one that could not be moved there), for status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineItem {
    /// Where it is now.
    pub path: String,
    /// Where it was: under the mount point, on the root disk.
    pub from: String,
    /// The developer whose directory it was, when its name is a configured developer.
    pub developer: Option<String>,
    /// Bytes in its regular files.
    pub bytes: u64,
    pub files: u64,
    /// Counting stopped at [`MAX_COUNTED`] entries: bytes and files are a lower bound.
    pub partial: bool,
    /// It could not be moved (not on the state directory's filesystem): it is
    /// still under the mount point on the root disk, hidden by the volume.
    pub left_in_place: bool,
}

/// What one sweep did.
#[derive(Debug, Default)]
pub struct Sweep {
    /// (from, to) of every entry moved.
    pub moved: Vec<(PathBuf, PathBuf)>,
    /// Entries that stay under the mount point, and why.
    pub left: Vec<(QuarantineItem, String)>,
}

/// Entries counted per quarantined item before the count stops (status stays cheap).
pub const MAX_COUNTED: u64 = 200_000;

/// One sweep at a time: they share the bind mount's directory.
static SWEEP: Mutex<()> = Mutex::new(());

/// `<agent.state_dir>/quarantine`.
pub fn quarantine_dir(config: &Config) -> PathBuf {
    config.agent.state_dir.join("quarantine")
}

/// Moves everything in the mount point directory on the disk underneath the
/// mounted volume (device number `volume_dev`) into quarantine; see the module doc.
pub fn sweep(config: &Config, volume_dev: u64) -> Result<Sweep, VolumeError> {
    let _one = SWEEP.lock().unwrap_or_else(|p| p.into_inner());
    let mount_point = mount::resolved(&config.volume.mount_point);
    let Some(parent) = mount_point.parent() else {
        return Ok(Sweep::default());
    };
    let about = mount_point.display().to_string();
    let holder = holding_mount(&mount::table(&about)?, parent).ok_or_else(|| {
        VolumeError::io(
            "cannot find the filesystem holding",
            parent,
            std::io::Error::other("no mount in the mount table contains it"),
        )
    })?;
    let bind = Bind::new(
        &config.agent.runtime_dir.join(".volume-underneath"),
        &holder,
    )?;
    let under = bind.path.join(relative(&mount_point, &holder));
    let seen =
        std::fs::symlink_metadata(&under).map_err(|e| VolumeError::io("cannot stat", &under, e))?;
    if seen.dev() == volume_dev {
        // The bind shows the volume (the mount table changed under us): moving
        // anything now would move developer data. Do nothing.
        return Err(VolumeError::io(
            "refusing to sweep",
            &under,
            std::io::Error::other("it shows the data volume, not the disk underneath"),
        ));
    }
    let names = entries(&under)?;
    if names.is_empty() {
        return Ok(Sweep::default());
    }

    let quarantine = quarantine_dir(config);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&quarantine)
        .map_err(|e| VolumeError::io("cannot create", &quarantine, e))?;
    let real = mount::resolved(&quarantine);
    let through_bind = real
        .strip_prefix(&holder)
        .ok()
        .map(|rel| bind.path.join(rel))
        .filter(|p| same_file(p, &real));

    let mut out = Sweep::default();
    let Some(through_bind) = through_bind else {
        let why = format!(
            "{} is not on the filesystem that holds {}; moving would mean copying",
            quarantine.display(),
            mount_point.display()
        );
        for name in names {
            let from = mount_point.join(&name);
            let mut item = measure(&under.join(&name), &from, &name, config);
            item.path = from.display().to_string();
            item.left_in_place = true;
            out.left.push((item, why.clone()));
        }
        return Ok(out);
    };

    let batch = batch_name(SystemTime::now());
    let (batch_real, batch_bind) = fresh_batch(&real, &through_bind, &batch)?;
    for name in names {
        let from = mount_point.join(&name);
        let to = batch_real.join(&name);
        match renameat2(
            AT_FDCWD,
            &under.join(&name),
            AT_FDCWD,
            &batch_bind.join(&name),
            RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => {
                tracing::warn!(from = %from.display(), to = %to.display(), "moved stray content from the root disk under the mount point into quarantine");
                out.moved.push((from, to));
            }
            Err(e) => {
                let mut item = measure(&under.join(&name), &from, &name, config);
                item.path = from.display().to_string();
                item.left_in_place = true;
                out.left.push((item, format!("cannot move it: {e}")));
            }
        }
    }
    Ok(out)
}

/// What is in quarantine now: `<quarantine>/<batch>/<name>`, counted. Read-only.
pub fn scan(config: &Config) -> Vec<QuarantineItem> {
    let quarantine = quarantine_dir(config);
    let Ok(batches) = std::fs::read_dir(&quarantine) else {
        return Vec::new();
    };
    let mut batches: Vec<PathBuf> = batches.flatten().map(|e| e.path()).collect();
    batches.sort();
    let mut out = Vec::new();
    for batch in batches.iter().filter(|b| b.is_dir()) {
        let Ok(names) = entries(batch) else { continue };
        for name in names {
            let from = config.volume.mount_point.join(&name);
            out.push(measure(&batch.join(&name), &from, &name, config));
        }
    }
    out
}

/// Counts one entry (a developer's directory, or a stray file).
fn measure(path: &Path, from: &Path, name: &str, config: &Config) -> QuarantineItem {
    let (bytes, files, partial) = count(path);
    QuarantineItem {
        path: path.display().to_string(),
        from: from.display().to_string(),
        developer: config
            .developers
            .iter()
            .any(|d| d.name == name)
            .then(|| name.to_string()),
        bytes,
        files,
        partial,
        left_in_place: false,
    }
}

/// Bytes and number of regular files below `path`, never following a symlink;
/// stops after [`MAX_COUNTED`] entries.
fn count(path: &Path) -> (u64, u64, bool) {
    let (mut bytes, mut files, mut seen) = (0u64, 0u64, 0u64);
    let mut todo = vec![path.to_path_buf()];
    while let Some(p) = todo.pop() {
        seen += 1;
        if seen > MAX_COUNTED {
            return (bytes, files, true);
        }
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(dir) = std::fs::read_dir(&p) {
                todo.extend(dir.flatten().map(|e| e.path()));
            }
        } else if meta.is_file() {
            bytes = bytes.saturating_add(meta.len());
            files += 1;
        }
    }
    (bytes, files, false)
}

/// Entry names of a directory, sorted.
fn entries(dir: &Path) -> Result<Vec<String>, VolumeError> {
    let read = std::fs::read_dir(dir).map_err(|e| VolumeError::io("cannot read", dir, e))?;
    let mut names: Vec<String> = read
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// The target of the mount that holds `path`: the longest mount-table target
/// that contains it (the last one mounted wins, as it covers the others).
pub(crate) fn holding_mount(table: &[mount::MountEntry], path: &Path) -> Option<PathBuf> {
    let path = mount::resolved(path);
    let mut best: Option<&Path> = None;
    for m in table {
        let target = Path::new(&m.target);
        if path.starts_with(target)
            && best.is_none_or(|b| target.components().count() >= b.components().count())
        {
            best = Some(target);
        }
    }
    best.map(Path::to_path_buf)
}

fn relative(path: &Path, base: &Path) -> PathBuf {
    path.strip_prefix(base)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// "20261130T065153Z": the UTC time of the sweep, sortable, no colons.
pub(crate) fn batch_name(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace(['-', ':'], "")
}

/// Creates `<quarantine>/<batch>` (or `<batch>-2`, … when a sweep in the same
/// second made one), through the bind; returns its real and bind paths.
fn fresh_batch(
    real: &Path,
    through_bind: &Path,
    batch: &str,
) -> Result<(PathBuf, PathBuf), VolumeError> {
    for n in 1..100 {
        let name = if n == 1 {
            batch.to_string()
        } else {
            format!("{batch}-{n}")
        };
        let at = through_bind.join(&name);
        match std::fs::DirBuilder::new().mode(0o700).create(&at) {
            Ok(()) => return Ok((real.join(&name), at)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(VolumeError::io("cannot create", real.join(&name), e)),
        }
    }
    Err(VolumeError::io(
        "cannot create",
        real.join(batch),
        std::io::Error::other("too many quarantine batches in one second"),
    ))
}

/// A private, non-recursive bind mount, unmounted on drop.
struct Bind {
    path: PathBuf,
}

impl Bind {
    fn new(at: &Path, source: &Path) -> Result<Bind, VolumeError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(at)
            .map_err(|e| VolumeError::io("cannot create", at, e))?;
        // A bind left by a crashed sweep: drop it first (EINVAL when there is none).
        let _ = nix::mount::umount2(at, MntFlags::MNT_DETACH);
        let fail = |what: &'static str| {
            move |e: nix::Error| VolumeError::io(what, at, std::io::Error::from(e))
        };
        nix::mount::mount(
            Some(source),
            at,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(fail("cannot bind-mount the disk underneath at"))?;
        let bind = Bind {
            path: at.to_path_buf(),
        };
        // No propagation: nothing else on the host sees it.
        nix::mount::mount(
            None::<&str>,
            at,
            None::<&str>,
            MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(fail("cannot make private"))?;
        Ok(bind)
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        if let Err(e) = nix::mount::umount2(&self.path, MntFlags::MNT_DETACH) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot unmount the bind of the disk underneath the volume");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn entry(target: &str) -> mount::MountEntry {
        mount::MountEntry {
            source: Some("/dev/x".into()),
            target: target.into(),
            fstype: Some("ext4".into()),
            maj_min: Some("1:1".into()),
        }
    }

    #[test]
    fn the_holding_mount_is_the_longest_containing_target() {
        let table = [entry("/"), entry("/srv"), entry("/srv/data"), entry("/sr")];
        let at = |p: &str| holding_mount(&table, Path::new(p));
        assert_eq!(at("/nonexistent-x/y"), Some(PathBuf::from("/")));
        assert_eq!(at("/srv/nonexistent-x"), Some(PathBuf::from("/srv")));
        assert_eq!(at("/srvx/nonexistent"), Some(PathBuf::from("/")));
        assert_eq!(
            holding_mount(&[entry("/srv")], Path::new("/nonexistent-x")),
            None
        );
    }

    #[test]
    fn batch_names_sort_by_time_and_have_no_colons() {
        let t = UNIX_EPOCH + Duration::from_secs(1_796_021_513);
        let a = batch_name(t);
        assert_eq!(a, "20261130T065153Z");
        assert!(batch_name(t + Duration::from_secs(1)) > a);
    }

    #[test]
    fn count_sums_files_and_never_follows_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("a/b")).expect("mkdir");
        std::fs::write(dir.path().join("a/b/f"), b"12345").expect("write");
        std::fs::write(dir.path().join("g"), b"xy").expect("write");
        std::os::unix::fs::symlink("/usr", dir.path().join("link")).expect("symlink");
        assert_eq!(count(dir.path()), (7, 2, false));
        assert_eq!(count(&dir.path().join("g")), (2, 1, false));
    }
}
