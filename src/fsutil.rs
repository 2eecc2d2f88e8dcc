//! Writing files so that a crash leaves the old content or the new, never a torn
//! file: temp file in the same directory, fsync, rename, fsync the directory.
//! Every state file, checkpoint, credential file and fstab goes through here.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode and owner for the new file.
#[derive(Debug, Clone, Copy, Default)]
pub struct Perms {
    /// Mode bits; None keeps the existing file's (0644 for a new file).
    pub mode: Option<u32>,
    /// Owner; None keeps the existing file's (the caller's for a new file).
    pub owner: Option<(u32, u32)>,
}

/// Atomically replaces `path` with `content`. On error the temp file is removed
/// and `path` is untouched. Symlinks are never followed: a symlink at `path` is
/// replaced by the file, not written through (in a directory someone else can
/// write to, following one would let them aim a root write anywhere), and the
/// temp file is created with O_EXCL, which does not follow one either.
pub fn write_atomic(path: &Path, content: &[u8], perms: Perms) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let target = path.to_path_buf();
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("/"))
        .to_path_buf();
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_string());
    let tmp: PathBuf = dir.join(format!(".{name}.csagent-{}.tmp", std::process::id()));
    // The mode/owner to keep are the file's own, never a symlink target's.
    let existing = std::fs::symlink_metadata(&target)
        .ok()
        .filter(|m| m.file_type().is_file());
    let mode = perms
        .mode
        .or_else(|| existing.as_ref().map(|m| m.permissions().mode() & 0o7777))
        .unwrap_or(0o644);
    let owner = perms
        .owner
        .or_else(|| existing.as_ref().map(|m| (m.uid(), m.gid())));

    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            // Start private; the final mode is set below, after the owner.
            .mode(0o600)
            .open(&tmp)
    };
    let result = (|| {
        let mut file = match create() {
            // Left by an earlier run that crashed with the same pid: ours to replace.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                std::fs::remove_file(&tmp).and_then(|()| create())?
            }
            other => other?,
        };
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
        }
        file.write_all(content)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, &target)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn replaces_keeping_mode_or_setting_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        std::fs::write(&p, "old").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        write_atomic(&p, b"new", Perms::default()).expect("write_atomic");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "new");
        assert_eq!(std::fs::metadata(&p).expect("stat").mode() & 0o7777, 0o640);
        write_atomic(
            &p,
            b"newer",
            Perms {
                mode: Some(0o400),
                owner: None,
            },
        )
        .expect("write_atomic");
        assert_eq!(std::fs::metadata(&p).expect("stat").mode() & 0o7777, 0o400);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn a_symlink_at_the_path_is_replaced_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").expect("write");
        let p = dir.path().join("f");
        std::os::unix::fs::symlink(&victim, &p).expect("symlink");
        write_atomic(&p, b"new", Perms::default()).expect("write_atomic");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "precious");
        let meta = std::fs::symlink_metadata(&p).expect("lstat");
        assert!(meta.file_type().is_file(), "the link became a file");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "new");
        assert_eq!(
            meta.mode() & 0o7777,
            0o644,
            "the target's mode is not borrowed"
        );
    }

    #[test]
    fn failure_leaves_the_original() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("missing-dir").join("f");
        assert!(write_atomic(&p, b"x", Perms::default()).is_err());
        assert!(!p.exists());
    }
}
