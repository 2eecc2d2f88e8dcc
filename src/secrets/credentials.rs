//! Handing credentials to a container without putting them in `docker inspect`.
//!
//! - The password goes in as an argon2id PHC string (`HASHED_PASSWORD`), which
//!   code-server verifies at `/login`; the plaintext never leaves the agent.
//! - The Claude API key goes in as a file: `<runtime_dir>/<developer>/claude-api-key`
//!   on a tmpfs, mode 0400 owned by the container user, in a directory owned by
//!   root with the container's group (mode 0750), bind-mounted read-only at
//!   [`CONTAINER_KEY_DIR`]. Root owns every directory the agent writes in, so
//!   the container user (uid 1000 is also the first login user on the host)
//!   cannot plant a symlink where root writes; writes never follow one anyway. Mount the directory,
//!   not the file: the file is replaced by rename, and a file bind mount would keep
//!   showing the old inode.
//! - Nothing puts the key in an environment. The team image (`images/claude/`) sets
//!   Claude Code's `apiKeyHelper` (managed settings) to a script that prints the
//!   file, and Claude Code runs it again after `CLAUDE_CODE_API_KEY_HELPER_TTL_MS` or
//!   on a 401: a rotated key reaches a running container, and a running `claude`
//!   session, without a restart. (An `ANTHROPIC_API_KEY` in the environment would
//!   win over the helper and pin the old key until the container is recreated.)

use std::fs::{self, DirBuilder};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use argon2::password_hash::PasswordHasher;
use argon2::{Algorithm, Argon2, Params, Version};
use nix::sys::statfs::{TMPFS_MAGIC, statfs};
use zeroize::Zeroizing;

use crate::Secret;
use crate::config::{Config, is_developer_name};

/// Where the developer's key directory is mounted inside the container.
pub const CONTAINER_KEY_DIR: &str = "/run/csagent";

/// The key file's name, on the host and in the container.
pub const KEY_FILE_NAME: &str = "claude-api-key";

/// argon2id parameters: OWASP's first recommendation (19 MiB, 2 passes, 1 lane).
/// Verification reads them back from the PHC string, so changing them later only
/// affects new hashes.
const ARGON2_M_KIB: u32 = 19_456;
const ARGON2_T: u32 = 2;
const ARGON2_P: u32 = 1;

/// The per-developer key directory: root's, the container's group may enter and read.
const KEY_DIR_MODE: u32 = 0o750;

/// ramfs has no constant in nix.
const RAMFS_MAGIC: u32 = 0x8584_58f6;

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("hashing a password with argon2id failed: {0}")]
    Hash(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is on {fs}, not tmpfs or ramfs: credential files must never reach a disk (point agent.runtime_dir at a tmpfs such as /run/csagent)"
    )]
    NotTmpfs { path: PathBuf, fs: String },
    #[error(
        "{path} is owned by uid {owner}, not by the agent (uid {agent}): key files are written only in a directory no one else can change (chown it to root or point agent.runtime_dir elsewhere)"
    )]
    ForeignRuntimeDir {
        path: PathBuf,
        owner: u32,
        agent: u32,
    },
    #[error("{0:?} is not a developer name that can name a directory")]
    BadDeveloper(String),
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CredentialError {
    let path = path.to_path_buf();
    move |source| CredentialError::Io { op, path, source }
}

/// The argon2id PHC string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`) of
/// `password`, with a fresh random salt.
pub fn hash_password(password: &Secret) -> Result<String, CredentialError> {
    let params = Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None)
        .map_err(|e| CredentialError::Hash(e.to_string()))?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.expose().as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| CredentialError::Hash(e.to_string()))
}

/// Whether [`CredentialFiles::open`] insists on a memory filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageCheck {
    /// The agent's setting: refuse anything but tmpfs/ramfs.
    RequireTmpfs,
    /// Tests only: allow any filesystem.
    AllowAnyFilesystemForTests,
}

/// The per-developer Claude key files under the runtime directory.
#[derive(Debug, Clone)]
pub struct CredentialFiles {
    runtime_dir: PathBuf,
    uid: u32,
    gid: u32,
}

impl CredentialFiles {
    /// Key files under `runtime_dir` (created if missing), owned by `uid`:`gid`;
    /// `runtime_dir` must be on tmpfs or ramfs.
    pub fn new(runtime_dir: &Path, uid: u32, gid: u32) -> Result<CredentialFiles, CredentialError> {
        CredentialFiles::open(runtime_dir, uid, gid, StorageCheck::RequireTmpfs)
    }

    /// `agent.runtime_dir`, owned by `containers.uid`/`gid`; it must be a tmpfs.
    pub fn from_config(config: &Config) -> Result<CredentialFiles, CredentialError> {
        CredentialFiles::new(
            &config.agent.runtime_dir,
            config.containers.uid,
            config.containers.gid,
        )
    }

    /// Creates `runtime_dir` (0755) if needed and checks what it lives on.
    pub fn open(
        runtime_dir: &Path,
        uid: u32,
        gid: u32,
        check: StorageCheck,
    ) -> Result<CredentialFiles, CredentialError> {
        if !runtime_dir.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(runtime_dir)
                .map_err(io("create directory", runtime_dir))?;
        }
        secure_runtime_dir(runtime_dir)?;
        if check == StorageCheck::RequireTmpfs {
            let st = statfs(runtime_dir).map_err(|e| CredentialError::Io {
                op: "statfs",
                path: runtime_dir.to_path_buf(),
                source: e.into(),
            })?;
            let kind = st.filesystem_type();
            // The magic's integer type differs between targets; compare as u32.
            #[allow(clippy::unnecessary_cast)]
            let is_ramfs = kind.0 as u32 == RAMFS_MAGIC;
            if kind != TMPFS_MAGIC && !is_ramfs {
                return Err(CredentialError::NotTmpfs {
                    path: runtime_dir.to_path_buf(),
                    fs: format!("a filesystem of type {:#x}", kind.0),
                });
            }
        }
        Ok(CredentialFiles {
            runtime_dir: runtime_dir.to_path_buf(),
            uid,
            gid,
        })
    }

    /// The host directory to bind-mount read-only at [`CONTAINER_KEY_DIR`].
    pub fn dir(&self, developer: &str) -> PathBuf {
        self.runtime_dir.join(developer)
    }

    /// The key file on the host.
    pub fn key_path(&self, developer: &str) -> PathBuf {
        self.dir(developer).join(KEY_FILE_NAME)
    }

    /// Makes the developer's directory hold exactly `key`: written atomically
    /// (temp file, fchown, fsync, rename) when it differs, removed when None
    /// (placeholder or missing key). Returns the directory to bind-mount read-only
    /// at [`CONTAINER_KEY_DIR`].
    pub fn write(&self, developer: &str, key: Option<&Secret>) -> Result<PathBuf, CredentialError> {
        if !is_developer_name(developer) {
            return Err(CredentialError::BadDeveloper(developer.to_string()));
        }
        let dir = self.dir(developer);
        self.ensure_dir(&dir)?;
        let path = dir.join(KEY_FILE_NAME);
        let Some(key) = key.filter(|k| !k.is_empty()) else {
            match fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(developer, "Claude API key file removed");
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io("remove", &path)(e)),
            }
            return Ok(dir);
        };
        if self.is_current(&path, key)? {
            return Ok(dir);
        }
        crate::fsutil::write_atomic(
            &path,
            key.expose().as_bytes(),
            crate::fsutil::Perms {
                mode: Some(0o400),
                owner: Some((self.uid, self.gid)),
            },
        )
        .map_err(io("write", &path))?;
        tracing::info!(developer, "Claude API key file written");
        Ok(dir)
    }

    /// Removes the developer's directory (the developer left the config).
    pub fn remove(&self, developer: &str) -> Result<(), CredentialError> {
        if !is_developer_name(developer) {
            return Err(CredentialError::BadDeveloper(developer.to_string()));
        }
        let dir = self.dir(developer);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", &dir)(e)),
        }
    }

    /// The directory exists, is a real directory (not a symlink), owned by root
    /// with the container's group, mode 0750: the container user reads the key
    /// through the group and cannot add, rename or replace entries in it.
    fn ensure_dir(&self, dir: &Path) -> Result<(), CredentialError> {
        use std::os::unix::fs::MetadataExt;
        match fs::symlink_metadata(dir) {
            Ok(m) if m.file_type().is_dir() => {}
            // Only root can create entries in the runtime directory (checked at
            // open), so anything else here is stale: replace it.
            Ok(_) => fs::remove_file(dir).map_err(io("remove", dir))?,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io("stat", dir)(e)),
        }
        match DirBuilder::new().mode(KEY_DIR_MODE).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("create directory", dir)(e)),
        }
        let meta = fs::symlink_metadata(dir).map_err(io("stat", dir))?;
        let root = nix::unistd::geteuid().as_raw();
        if (meta.uid(), meta.gid()) != (root, self.gid) {
            // lchown: never through a link (the check above made it a directory).
            std::os::unix::fs::lchown(dir, Some(root), Some(self.gid)).map_err(io("chown", dir))?;
        }
        if meta.mode() & 0o7777 != KEY_DIR_MODE {
            fs::set_permissions(dir, fs::Permissions::from_mode(KEY_DIR_MODE))
                .map_err(io("chmod", dir))?;
        }
        Ok(())
    }

    /// Whether the file already holds `key` with the right owner and mode.
    fn is_current(&self, path: &Path, key: &Secret) -> Result<bool, CredentialError> {
        use std::os::unix::fs::MetadataExt;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = match fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            // A symlink (ELOOP with O_NOFOLLOW) is not our file: rewrite it.
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(false),
            Err(e) => return Err(io("open", path)(e)),
        };
        let meta = file.metadata().map_err(io("stat", path))?;
        if meta.uid() != self.uid || meta.gid() != self.gid || meta.mode() & 0o777 != 0o400 {
            return Ok(false);
        }
        let mut content = Zeroizing::new(Vec::new());
        file.read_to_end(&mut content).map_err(io("read", path))?;
        Ok(content.as_slice() == key.expose().as_bytes())
    }
}

/// The runtime directory must be the agent's and writable by it alone, so that
/// no one else can put a link where a key directory goes. A group- or
/// world-writable one of ours (a fresh tmpfs is 1777) loses those bits.
fn secure_runtime_dir(dir: &Path) -> Result<(), CredentialError> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(dir).map_err(io("stat", dir))?;
    let agent = nix::unistd::geteuid().as_raw();
    if meta.uid() != agent {
        return Err(CredentialError::ForeignRuntimeDir {
            path: dir.to_path_buf(),
            owner: meta.uid(),
            agent,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        let safe = mode & !0o7022;
        fs::set_permissions(dir, fs::Permissions::from_mode(safe)).map_err(io("chmod", dir))?;
        tracing::info!(dir = %dir.display(), from = format!("{mode:o}"), to = format!("{safe:o}"), "runtime directory made writable by the agent only");
    }
    Ok(())
}

/// An image's own entrypoint and command, from its config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageCommand {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

/// Reads `image`'s `Entrypoint` and `Cmd` (the container runs exactly these).
pub async fn image_command(
    docker: &bollard::Docker,
    image: &str,
) -> Result<ImageCommand, bollard::errors::Error> {
    let inspect = docker.inspect_image(image).await?;
    let config = inspect.config.unwrap_or_default();
    Ok(ImageCommand {
        entrypoint: config.entrypoint.unwrap_or_default(),
        cmd: config.cmd.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use argon2::PasswordVerifier;
    use argon2::password_hash::phc::PasswordHash;

    use super::*;

    #[test]
    fn hash_is_argon2id_and_verifies() {
        let pw = Secret::new("correct horse battery staple");
        let h = hash_password(&pw).expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(!h.contains(pw.expose()));
        let parsed = PasswordHash::new(&h).expect("PHC string");
        assert!(
            Argon2::default()
                .verify_password(pw.expose().as_bytes(), &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"wrong", &parsed)
                .is_err()
        );
        assert_ne!(h, hash_password(&pw).expect("hash"), "salted");
    }

    /// The team image's apiKeyHelper (`images/claude/csagent-claude-key`).
    const KEY_HELPER: &str = include_str!("../../images/claude/csagent-claude-key");

    /// Runs the helper under the host's /bin/sh against `key_file`.
    fn run_helper(key_file: &Path) -> std::process::Output {
        std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(KEY_HELPER)
            .env("CSAGENT_CLAUDE_KEY_FILE", key_file)
            .output()
            .expect("run /bin/sh")
    }

    #[test]
    fn the_key_helper_reads_the_file_the_agent_writes() {
        assert!(
            KEY_HELPER.contains(&format!("{CONTAINER_KEY_DIR}/{KEY_FILE_NAME}")),
            "the helper's default path is where the agent mounts the key"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join(KEY_FILE_NAME);
        for (content, printed) in [
            ("sk-ant-test-123", "sk-ant-test-123\n"),
            ("sk-ant-test-456\n", "sk-ant-test-456\n"),
        ] {
            fs::write(&key, content).expect("write");
            let out = run_helper(&key);
            assert!(out.status.success(), "{out:?}");
            assert_eq!(String::from_utf8_lossy(&out.stdout), printed);
        }
        for content in ["", "\n", "REPLACE_WITH_ACTUAL_KEY\n"] {
            fs::write(&key, content).expect("write");
            let out = run_helper(&key);
            assert!(!out.status.success(), "{content:?} is no key");
            assert!(out.stdout.is_empty());
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("empty or the placeholder"), "{err}");
        }
        fs::remove_file(&key).expect("rm");
        let out = run_helper(&key);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("no Claude API key for this workspace"),
            "{err}"
        );
        assert!(
            err.contains(key.to_str().expect("utf-8")),
            "names the file: {err}"
        );
    }

    #[test]
    fn refuses_a_disk_unless_told_otherwise() {
        let dir = tempfile::tempdir().expect("tempdir");
        let on_tmpfs = statfs(dir.path())
            .map(|s| s.filesystem_type() == TMPFS_MAGIC)
            .unwrap_or(false);
        let strict = CredentialFiles::open(dir.path(), 0, 0, StorageCheck::RequireTmpfs);
        if on_tmpfs {
            assert!(strict.is_ok());
        } else {
            let e = strict.expect_err("a disk directory is refused");
            assert!(matches!(e, CredentialError::NotTmpfs { .. }), "{e}");
            assert!(e.to_string().contains("agent.runtime_dir"), "{e}");
        }
        let lax = CredentialFiles::open(
            dir.path(),
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
            StorageCheck::AllowAnyFilesystemForTests,
        )
        .expect("allowed for tests");
        assert!(matches!(
            lax.write("../etc", None),
            Err(CredentialError::BadDeveloper(_))
        ));
    }
}
