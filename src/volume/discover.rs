//! Finds the data volume's block device: through the stable NVMe name of an EBS
//! volume id (Nitro device numbers change between boots), or a configured path.
//! The attachment may complete after boot, so [`wait`] polls until the device
//! shows up with a non-zero size or `volume.wait_timeout` passes.

use std::fmt;
use std::fs::File;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use super::VolumeError;
use crate::config::{VolumeConfig, VolumeSource};

/// How often the device path is checked while waiting.
const POLL: Duration = Duration::from_millis(250);

/// The data volume's block device, resolved.
#[derive(Debug, Clone)]
pub(crate) struct Device {
    /// Canonical path, like /dev/nvme1n1 or /dev/loop3.
    pub path: PathBuf,
    /// The device number (`st_rdev`): what mounts and `st_dev` are compared with.
    pub rdev: u64,
}

impl Device {
    pub fn major(&self) -> u64 {
        nix::sys::stat::major(self.rdev)
    }

    pub fn minor(&self) -> u64 {
        nix::sys::stat::minor(self.rdev)
    }

    /// "7:3", as findmnt and lsblk print it.
    pub fn maj_min(&self) -> String {
        format!("{}:{}", self.major(), self.minor())
    }

    /// Size of the block device in bytes, from sysfs (512-byte sectors).
    pub fn size_bytes(&self) -> Result<u64, VolumeError> {
        size_of(self.major(), self.minor())
    }

    /// Takes the whole-disk BSD lock that systemd documents for tools that write
    /// to a block device ("Locking Block Device Access"): udev does not probe the
    /// device while it is held, and two csagent passes (the daemon and a manual
    /// `run --once`) cannot probe, format or mount it at the same time.
    pub fn lock(&self, timeout: Duration) -> Result<Flock<File>, VolumeError> {
        let start = Instant::now();
        let mut file =
            File::open(&self.path).map_err(|e| VolumeError::io("cannot open", &self.path, e))?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(lock),
                Err((f, nix::Error::EWOULDBLOCK)) if start.elapsed() < timeout => {
                    file = f;
                    std::thread::sleep(POLL);
                }
                Err((_, nix::Error::EWOULDBLOCK)) => {
                    return Err(VolumeError::Locked {
                        device: self.path.clone(),
                        waited: human(timeout),
                    });
                }
                Err((_, e)) => {
                    return Err(VolumeError::io(
                        "cannot lock",
                        &self.path,
                        std::io::Error::from(e),
                    ));
                }
            }
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.path.display().fmt(f)
    }
}

fn size_of(major: u64, minor: u64) -> Result<u64, VolumeError> {
    let path = PathBuf::from(format!("/sys/dev/block/{major}:{minor}/size"));
    let text =
        std::fs::read_to_string(&path).map_err(|e| VolumeError::io("cannot read", &path, e))?;
    let sectors: u64 = text.trim().parse().map_err(|_| {
        VolumeError::io(
            "unexpected content in",
            &path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, text.trim().to_string()),
        )
    })?;
    Ok(sectors.saturating_mul(512))
}

/// The path the device is expected at.
pub(crate) fn wanted_path(v: &VolumeConfig) -> PathBuf {
    match &v.source {
        VolumeSource::VolumeId(id) => v.by_id_dir.join(format!(
            "nvme-Amazon_Elastic_Block_Store_{}",
            id.replace('-', "")
        )),
        VolumeSource::Device(path) => path.clone(),
    }
}

/// "volume vol-0abc" or "device /dev/sdf", for messages.
pub(crate) fn describe(v: &VolumeConfig) -> String {
    match &v.source {
        VolumeSource::VolumeId(id) => format!("volume {id}"),
        VolumeSource::Device(path) => format!("device {}", path.display()),
    }
}

/// The configured volume id, if the volume is given by id.
pub(crate) fn volume_id(v: &VolumeConfig) -> Option<String> {
    match &v.source {
        VolumeSource::VolumeId(id) => Some(id.clone()),
        VolumeSource::Device(_) => None,
    }
}

/// Why the device is not usable yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Absent {
    /// Nothing at the path (or a link to nothing).
    Missing,
    /// The node exists but has no size yet (attachment in progress, detached loop).
    Empty,
}

impl Absent {
    fn detail(&self) -> &'static str {
        match self {
            Absent::Missing => "",
            Absent::Empty => " (the device node exists but is 0 bytes)",
        }
    }
}

/// Looks once. `Err` only for a path that exists but is not a block device.
pub(crate) fn find_now(v: &VolumeConfig) -> Result<Result<Device, Absent>, VolumeError> {
    let wanted = wanted_path(v);
    let path = match std::fs::canonicalize(&wanted) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Err(Absent::Missing)),
        Err(e) => return Err(VolumeError::io("cannot resolve", wanted, e)),
    };
    let meta = std::fs::metadata(&path).map_err(|e| VolumeError::io("cannot stat", &path, e))?;
    if !meta.file_type().is_block_device() {
        let kind = if meta.is_dir() {
            "directory"
        } else if meta.is_file() {
            "regular file"
        } else {
            "special file"
        };
        return Err(VolumeError::NotBlockDevice {
            what: describe(v),
            path,
            kind: kind.to_string(),
        });
    }
    let device = Device {
        path,
        rdev: meta.rdev(),
    };
    if device.size_bytes()? == 0 {
        return Ok(Err(Absent::Empty));
    }
    Ok(Ok(device))
}

/// Waits up to `volume.wait_timeout` for the device, telling `progress` what it
/// waits for about once a second.
pub(crate) fn wait(v: &VolumeConfig, progress: &dyn Fn(&str)) -> Result<Device, VolumeError> {
    let start = Instant::now();
    let wanted = wanted_path(v);
    let what = describe(v);
    let mut last_report: Option<u64> = None;
    loop {
        let absent = match find_now(v)? {
            Ok(device) => {
                if last_report.is_some() {
                    tracing::info!(device = %device, waited = %human(start.elapsed()), "{what} appeared");
                }
                return Ok(device);
            }
            Err(absent) => absent,
        };
        let elapsed = start.elapsed();
        if elapsed >= v.wait_timeout {
            return Err(VolumeError::NotFound {
                what,
                path: wanted,
                waited: human(v.wait_timeout),
                detail: absent.detail().to_string(),
            });
        }
        let secs = elapsed.as_secs();
        if last_report != Some(secs) {
            if last_report.is_none() {
                tracing::info!(path = %wanted.display(), timeout = %human(v.wait_timeout), "waiting for {what} to be attached");
            }
            last_report = Some(secs);
            progress(&waiting_message(&what, elapsed, v.wait_timeout));
        }
        std::thread::sleep(POLL.min(v.wait_timeout.saturating_sub(elapsed)));
    }
}

/// "waiting for volume vol-0abc (12s of 5m)".
pub(crate) fn waiting_message(what: &str, elapsed: Duration, timeout: Duration) -> String {
    format!(
        "waiting for {what} ({} of {})",
        human(Duration::from_secs(elapsed.as_secs())),
        human(timeout)
    )
}

/// Whole-second durations written like the config ("12s", "5m").
pub(crate) fn human(d: Duration) -> String {
    if d.as_secs() == 0 {
        return "0s".to_string();
    }
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn progress_text_matches_systemd_status_style() {
        assert_eq!(
            waiting_message(
                "volume vol-0abc",
                Duration::from_millis(12_400),
                Duration::from_secs(300)
            ),
            "waiting for volume vol-0abc (12s of 5m)"
        );
        assert_eq!(human(Duration::from_millis(300)), "0s");
        assert_eq!(human(Duration::from_secs(90)), "1m 30s");
    }

    #[test]
    fn stable_nvme_name_drops_the_hyphen() {
        let c = crate::config::Config::from_toml(
            "[volume]\nvolume_id = \"vol-0123456789abcdef0\"\nby_id_dir = \"/x/by-id\"\n",
            Path::new("t.toml"),
        )
        .expect("valid config");
        assert_eq!(
            wanted_path(&c.volume),
            Path::new("/x/by-id/nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0")
        );
        assert_eq!(describe(&c.volume), "volume vol-0123456789abcdef0");
    }
}
