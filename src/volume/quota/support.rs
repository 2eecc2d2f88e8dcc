//! Can this kernel and this filesystem do project quotas, and the one change
//! to a filesystem this module makes: ext4's `project` and `quota` features.
//!
//! Why the kernel is asked first: an ext4 filesystem with the `quota` feature
//! cannot be mounted at all by a kernel built without `CONFIG_QFMT_V2` ("The
//! kernel was not built with CONFIG_QUOTA and CONFIG_QFMT_V2"), so enabling the
//! features on such a host would lock the developers out of their data. xfs
//! refuses `prjquota` without `CONFIG_XFS_QUOTA`, which costs only a retry.

use std::path::Path;

use super::super::discover::Device;
use super::super::{VolumeError, cmd};
use crate::config::Filesystem;

/// What is known about the kernel's quota support for one filesystem type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kernel {
    Yes,
    /// Why not (a config line or a missing module), for status.
    No(String),
    /// Nothing to read it from.
    Unknown,
}

/// Where the answer comes from, so tests can point elsewhere.
pub(crate) struct Sources<'a> {
    /// `/proc/sys/fs/quota`: present when the kernel has `CONFIG_QUOTA`.
    pub proc_quota: &'a Path,
    /// `/sys/module`: a loaded (or built-in, with parameters) module.
    pub sys_module: &'a Path,
    /// `/lib/modules/<release>`.
    pub modules: &'a Path,
    /// `/boot/config-<release>` (or the text of `/proc/config.gz`).
    pub config_text: Option<String>,
}

fn release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// This machine's sources.
pub(crate) fn host_sources<'a>(modules: &'a Path) -> Sources<'a> {
    let r = release();
    let config_text = std::fs::read_to_string(format!("/boot/config-{r}"))
        .ok()
        .or_else(|| {
            // Only where the kernel exposes its config; gzip is on every Debian/Ubuntu.
            let out = std::process::Command::new("zcat")
                .arg("/proc/config.gz")
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        });
    Sources {
        proc_quota: Path::new("/proc/sys/fs/quota"),
        sys_module: Path::new("/sys/module"),
        modules,
        config_text,
    }
}

/// `/lib/modules/<running release>`.
pub(crate) fn modules_dir() -> std::path::PathBuf {
    Path::new("/lib/modules").join(release())
}

fn config_value<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    text.lines().find_map(|l| {
        if let Some(v) = l.strip_prefix(key).and_then(|r| r.strip_prefix('=')) {
            Some(v.trim())
        } else if l.trim() == format!("# {key} is not set") {
            Some("n")
        } else {
            None
        }
    })
}

fn module_present(s: &Sources<'_>, name: &str, rel: &str) -> bool {
    if s.sys_module.join(name).exists() {
        return true;
    }
    let builtin = std::fs::read_to_string(s.modules.join("modules.builtin")).unwrap_or_default();
    if builtin.lines().any(|l| l.ends_with(&format!("/{name}.ko"))) {
        return true;
    }
    ["", ".xz", ".zst", ".gz"]
        .iter()
        .any(|ext| s.modules.join(format!("{rel}{ext}")).exists())
}

/// Whether the kernel can do project quotas on `fs`.
pub(crate) fn kernel(fs: Filesystem, s: &Sources<'_>) -> Kernel {
    let config = s.config_text.as_deref();
    if !s.proc_quota.exists() {
        return Kernel::No("the kernel has no quota support (CONFIG_QUOTA is off)".into());
    }
    match fs {
        Filesystem::Ext4 => {
            if module_present(s, "quota_v2", "kernel/fs/quota/quota_v2.ko") {
                return Kernel::Yes;
            }
            match config.and_then(|c| config_value(c, "CONFIG_QFMT_V2")) {
                Some("y" | "m") => Kernel::Yes,
                Some(_) => Kernel::No(
                    "the kernel was built without CONFIG_QFMT_V2, which ext4 quotas need".into(),
                ),
                None => Kernel::Unknown,
            }
        }
        Filesystem::Xfs => match config.and_then(|c| config_value(c, "CONFIG_XFS_QUOTA")) {
            Some("y") => Kernel::Yes,
            Some(_) => Kernel::No("the kernel was built without CONFIG_XFS_QUOTA".into()),
            None => Kernel::Unknown,
        },
    }
}

/// The parts of an ext4 superblock that matter here (`dumpe2fs -h`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Ext4Features {
    pub project: bool,
    pub quota: bool,
    /// A project quota inode exists (`Project quota inode:`).
    pub project_quota: bool,
    pub inode_size: Option<u32>,
}

impl Ext4Features {
    /// Project ids can be set (and, with the quota inode, are accounted).
    pub fn ready(&self) -> bool {
        self.project && self.quota && self.project_quota
    }
}

pub(crate) fn parse_dumpe2fs(text: &str) -> Ext4Features {
    let mut f = Ext4Features::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "Filesystem features" => {
                let words: Vec<&str> = value.split_whitespace().collect();
                f.project = words.contains(&"project");
                f.quota = words.contains(&"quota");
            }
            "Project quota inode" => f.project_quota = true,
            "Inode size" => f.inode_size = value.trim().parse().ok(),
            _ => {}
        }
    }
    f
}

/// Reads the superblock. Read-only.
pub(crate) fn ext4_features(device: &Device) -> Result<Ext4Features, VolumeError> {
    let about = device.path.display().to_string();
    let out = cmd::checked(
        "dumpe2fs",
        &["-h".as_ref(), device.path.as_os_str()],
        &about,
    )?;
    Ok(parse_dumpe2fs(&out.stdout))
}

/// Why the features cannot be added to this filesystem, if they cannot.
pub(crate) fn ext4_blocker(f: &Ext4Features) -> Option<String> {
    match f.inode_size {
        Some(n) if n < 256 => Some(format!(
            "its inodes are {n} bytes; project ids need 256 (recreate the filesystem with \
             mkfs.ext4 -I 256 to use disk quotas)"
        )),
        _ => None,
    }
}

/// `tune2fs -O project -Q prjquota`: the caller holds the device lock and has
/// checked that the device is the data volume, holds the configured ext4
/// filesystem and is mounted nowhere; tune2fs itself refuses a mounted one.
pub(crate) fn ext4_enable(device: &Device) -> Result<(), VolumeError> {
    let about = device.path.display().to_string();
    cmd::checked(
        "tune2fs",
        &[
            "-O".as_ref(),
            "project".as_ref(),
            "-Q".as_ref(),
            "prjquota".as_ref(),
            device.path.as_os_str(),
        ],
        &about,
    )?;
    Ok(())
}

/// Undoes [`ext4_enable`] when the kernel then refuses to mount the result:
/// the volume must stay usable.
pub(crate) fn ext4_disable(device: &Device) -> Result<(), VolumeError> {
    let about = device.path.display().to_string();
    cmd::checked(
        "tune2fs",
        &[
            "-O".as_ref(),
            "^project".as_ref(),
            "-Q".as_ref(),
            "^prjquota".as_ref(),
            device.path.as_os_str(),
        ],
        &about,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dumpe2fs_header() {
        let text = "Filesystem volume name:   csdata\nFilesystem features:      has_journal ext_attr resize_inode dir_index filetype extent 64bit flex_bg sparse_super large_file huge_file dir_nlink extra_isize quota metadata_csum project\nInode size:\t          256\nProject quota inode:      12\n";
        let f = parse_dumpe2fs(text);
        assert!(f.ready(), "{f:?}");
        assert_eq!(f.inode_size, Some(256));
        assert_eq!(ext4_blocker(&f), None);
        let plain = parse_dumpe2fs(
            "Filesystem features:      has_journal ext_attr extent\nInode size:\t          128\n",
        );
        assert!(!plain.ready() && !plain.project);
        assert!(ext4_blocker(&plain).is_some_and(|m| m.contains("128")));
    }

    fn sources(dir: &Path, config: Option<&str>) -> Sources<'static> {
        let leak = |p: std::path::PathBuf| -> &'static Path { Box::leak(p.into_boxed_path()) };
        Sources {
            proc_quota: leak(dir.join("proc-quota")),
            sys_module: leak(dir.join("sys-module")),
            modules: leak(dir.join("modules")),
            config_text: config.map(str::to_string),
        }
    }

    #[test]
    fn kernel_support_from_config_and_modules() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = sources(dir.path(), Some("CONFIG_QFMT_V2=m\nCONFIG_XFS_QUOTA=y\n"));
        // No /proc/sys/fs/quota: no quota at all, whatever the config says.
        assert!(matches!(kernel(Filesystem::Ext4, &s), Kernel::No(_)));
        std::fs::create_dir_all(s.proc_quota).expect("mkdir");
        assert_eq!(kernel(Filesystem::Ext4, &s), Kernel::Yes);
        assert_eq!(kernel(Filesystem::Xfs, &s), Kernel::Yes);

        let s = sources(
            dir.path(),
            Some("CONFIG_QUOTA=y\n# CONFIG_QFMT_V2 is not set\n# CONFIG_XFS_QUOTA is not set\n"),
        );
        assert!(matches!(kernel(Filesystem::Ext4, &s), Kernel::No(m) if m.contains("QFMT_V2")));
        assert!(matches!(kernel(Filesystem::Xfs, &s), Kernel::No(m) if m.contains("XFS_QUOTA")));

        let s = sources(dir.path(), None);
        assert_eq!(kernel(Filesystem::Ext4, &s), Kernel::Unknown);
        // A loaded quota_v2 module settles it for ext4.
        std::fs::create_dir_all(s.sys_module.join("quota_v2")).expect("mkdir");
        assert_eq!(kernel(Filesystem::Ext4, &s), Kernel::Yes);
        assert_eq!(kernel(Filesystem::Xfs, &s), Kernel::Unknown);
    }
}
