//! `[volume]`: which device holds the data and where it is mounted.

use std::path::{Path, PathBuf};

use super::Validator;
use super::checks::is_hex;
use crate::config::defaults::{
    DEFAULT_BY_ID_DIR, DEFAULT_FILESYSTEM, DEFAULT_FSTAB, DEFAULT_MOUNT_POINT,
    DEFAULT_VOLUME_LABEL, DEFAULT_WAIT_TIMEOUT,
};
use crate::config::file::FileVolume;
use crate::config::{ConfigError, VolumeConfig, VolumeSource};

impl Validator<'_> {
    pub(super) fn volume(&self, v: FileVolume) -> Result<VolumeConfig, ConfigError> {
        let source = match (v.volume_id, v.device) {
            (Some(_), Some(_)) => {
                return Err(self.err("volume", "set volume_id or device, not both"));
            }
            (None, None) => {
                return Err(self.err(
                    "volume",
                    "set volume_id (the EBS volume, e.g. vol-0123456789abcdef0) or device",
                ));
            }
            (Some(id), None) => {
                if !(id.starts_with("vol-") && id.len() >= 12 && is_hex(&id[4..])) {
                    return Err(self.err(
                        "volume.volume_id",
                        format!("{id:?} is not an EBS volume id (like vol-0123456789abcdef0)"),
                    ));
                }
                VolumeSource::VolumeId(id)
            }
            (None, Some(dev)) => {
                self.absolute("volume.device", &dev)?;
                VolumeSource::Device(dev)
            }
        };
        let mount_point = v
            .mount_point
            .unwrap_or_else(|| PathBuf::from(DEFAULT_MOUNT_POINT));
        self.absolute("volume.mount_point", &mount_point)?;
        if mount_point == Path::new("/") {
            return Err(self.err("volume.mount_point", "must not be / (the root filesystem)"));
        }
        let label = v.label.unwrap_or_else(|| DEFAULT_VOLUME_LABEL.to_string());
        // ext4 labels hold 16 bytes, xfs labels 12: keep to what both accept.
        if label.is_empty() || label.len() > 12 || !label.is_ascii() || label.contains(' ') {
            return Err(self.err(
                "volume.label",
                format!("{label:?} must be 1-12 ASCII characters without spaces"),
            ));
        }
        let wait_timeout = self.duration_or(
            "volume.wait_timeout",
            v.wait_timeout.as_deref(),
            DEFAULT_WAIT_TIMEOUT,
        )?;
        let fstab = v.fstab.unwrap_or_else(|| PathBuf::from(DEFAULT_FSTAB));
        self.absolute("volume.fstab", &fstab)?;
        let by_id_dir = v
            .by_id_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BY_ID_DIR));
        self.absolute("volume.by_id_dir", &by_id_dir)?;
        Ok(VolumeConfig {
            source,
            mount_point,
            filesystem: v.filesystem.unwrap_or(DEFAULT_FILESYSTEM),
            label,
            wait_timeout,
            fstab,
            by_id_dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    #[test]
    fn volume_id_and_device_are_exclusive() {
        let e = Config::from_toml(
            "[volume]\nvolume_id = \"vol-0123456789abcdef0\"\ndevice = \"/dev/xvdf\"\n",
            Path::new("t.toml"),
        )
        .expect_err("both set");
        assert_eq!(
            e.to_string(),
            "t.toml: volume: set volume_id or device, not both"
        );
        let e = Config::from_toml("", Path::new("t.toml")).expect_err("neither set");
        assert_eq!(e.key(), Some("volume"));
        let e = Config::from_toml("[volume]\nvolume_id = \"vol-xyz\"\n", Path::new("t.toml"))
            .expect_err("bad id");
        assert_eq!(e.key(), Some("volume.volume_id"));
    }
}
