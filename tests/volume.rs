//! The data volume on real loop devices, as root: formatting only a blank device,
//! refusing everything else without writing a byte, mounting, fstab, growing,
//! waiting for the device, and developer directories.

mod common;

use std::cell::RefCell;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use csagent::config::Config;
use csagent::volume::{self, VolumeError, VolumeStatus};

const UID: u32 = 1234;
const GID: u32 = 2345;
const OPTIONS: &str = "defaults,noatime,nosuid,nodev,nofail,x-systemd.device-timeout=30s";

/// A loop device plus a private directory holding the mount point, the fstab and
/// a by-id directory. Drop unmounts whatever is on the mount point, then the loop
/// device detaches itself (unmounting anything else of it) and the directory goes.
struct Fixture {
    disk: Option<LoopDevice>,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(size: &str) -> Fixture {
        Fixture {
            disk: Some(LoopDevice::new(size)),
            dir: tempdir(),
        }
    }

    /// No device at all (for the waiting tests).
    fn without_disk() -> Fixture {
        require_root();
        Fixture {
            disk: None,
            dir: tempdir(),
        }
    }

    fn disk(&self) -> &LoopDevice {
        self.disk.as_ref().expect("fixture has a loop device")
    }

    fn dev(&self) -> &str {
        self.disk().path()
    }

    fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    fn fstab(&self) -> PathBuf {
        self.dir.path().join("fstab")
    }

    fn by_id(&self) -> PathBuf {
        self.dir.path().join("by-id")
    }

    /// A config for this fixture; `volume` replaces the device line when given.
    fn config_with(&self, volume: &str, filesystem: &str, wait: &str) -> Config {
        let text = format!(
            "[volume]\n{volume}\nmount_point = \"{mnt}\"\nfstab = \"{fstab}\"\nby_id_dir = \"{by_id}\"\n\
             filesystem = \"{filesystem}\"\nlabel = \"csdata\"\nwait_timeout = \"{wait}\"\n\
             [containers]\nuid = {UID}\ngid = {GID}\n\
             [[developer]]\nname = \"alice\"\n[[developer]]\nname = \"bob\"\n",
            mnt = self.mnt().display(),
            fstab = self.fstab().display(),
            by_id = self.by_id().display(),
        );
        Config::from_toml(&text, Path::new("test.toml")).expect("test config is valid")
    }

    fn config(&self, filesystem: &str) -> Config {
        self.config_with(&format!("device = \"{}\"", self.dev()), filesystem, "10s")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let mnt = self.mnt();
        for _ in 0..8 {
            if mount_source(&mnt).is_none() {
                break;
            }
            let _ = Command::new("umount").arg(&mnt).status();
        }
        // then `disk` (detach) and `dir` (remove) drop, in that order.
        self.disk.take();
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("csagent-volume-")
        .tempdir()
        .expect("tempdir")
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("csagent=debug")
        .with_test_writer()
        .try_init();
}

fn prepare(config: &Config) -> (Result<VolumeStatus, VolumeError>, Vec<String>) {
    init_logs();
    let messages = RefCell::new(Vec::new());
    let result = volume::prepare(config, &|m: &str| messages.borrow_mut().push(m.to_string()));
    (result, messages.into_inner())
}

fn prepare_ok(config: &Config) -> VolumeStatus {
    let (result, _) = prepare(config);
    result.unwrap_or_else(|e| panic!("prepare failed: {e}"))
}

/// One blkid tag of the device (low-level probe), if present.
fn blkid(dev: &str, tag: &str) -> Option<String> {
    let out = Command::new("blkid")
        .args(["-p", "-o", "value", "-s", tag, dev])
        .output()
        .expect("run blkid");
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !v.is_empty()).then_some(v)
}

/// Every mount at exactly `mnt`, as "SOURCE OPTIONS" lines.
fn mounts_at(mnt: &Path) -> Vec<String> {
    let out = Command::new("findmnt")
        .args(["-n", "-l", "-o", "SOURCE,OPTIONS", "--mountpoint"])
        .arg(mnt)
        .output()
        .expect("run findmnt");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn mount_source(mnt: &Path) -> Option<String> {
    mounts_at(mnt)
        .last()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
}

fn fstab_line(uuid: &str, mnt: &Path, fs: &str) -> String {
    format!("UUID={uuid} {} {fs} {OPTIONS} 0 2", mnt.display())
}

/// Online ext4 resizing needs CAP_SYS_RESOURCE, which some containers drop.
fn has_cap_sys_resource() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        })
        .is_some_and(|bits| bits >> 24 & 1 == 1)
}

/// Bytes of the filesystem as the filesystem itself counts them (not df).
fn ext4_size(dev: &str) -> u64 {
    let text = run("dumpe2fs", &["-h", dev]);
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("dumpe2fs has no {name}"))
    };
    field("Block count:") * field("Block size:")
}

fn assert_developer_dirs(mnt: &Path, names: &[&str]) {
    let volume_dev = std::fs::metadata(mnt).expect("stat mount point").dev();
    for name in names {
        for dir in [
            mnt.join(name),
            mnt.join(name).join("home"),
            mnt.join(name).join("home/workspace"),
        ] {
            let m = std::fs::symlink_metadata(&dir)
                .unwrap_or_else(|e| panic!("{} missing: {e}", dir.display()));
            assert!(m.is_dir(), "{} is a directory", dir.display());
            assert_eq!((m.uid(), m.gid()), (UID, GID), "{} owner", dir.display());
            assert_eq!(
                m.permissions().mode() & 0o7777,
                0o750,
                "{} mode",
                dir.display()
            );
            assert_eq!(
                m.dev(),
                volume_dev,
                "{} is on the data volume",
                dir.display()
            );
        }
    }
    let leftovers: Vec<String> = std::iter::once(mnt.to_path_buf())
        .chain(names.iter().map(|n| mnt.join(n)))
        .flat_map(|d| std::fs::read_dir(d).expect("read directory"))
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("csagent-new"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary directories left: {leftovers:?}"
    );
}

/// The pass must fail, and leave the device, the mount point and the fstab as
/// they were. Returns the error text.
fn assert_refused(fx: &Fixture, config: &Config, expect: &[&str]) -> String {
    let before = fx.disk().checksum();
    let fstab_before = std::fs::read(fx.fstab()).ok();
    let (result, _) = prepare(config);
    let err = match result {
        Ok(s) => panic!("expected a refusal, got {s:?}"),
        Err(e) => e.to_string(),
    };
    for part in expect {
        assert!(err.contains(part), "error {err:?} should mention {part:?}");
    }
    assert_eq!(fx.disk().checksum(), before, "device bytes changed: {err}");
    assert!(
        mount_source(&fx.mnt()).is_none_or(|s| s != fx.dev()),
        "device was mounted"
    );
    assert_eq!(
        std::fs::read(fx.fstab()).ok(),
        fstab_before,
        "fstab changed"
    );
    assert!(
        !fx.mnt().join("alice").exists(),
        "developer directories were created"
    );
    err
}

// ---------------------------------------------------------------------------
// Formatting only a blank device
// ---------------------------------------------------------------------------

#[test]
fn blank_device_is_formatted_mounted_persisted_and_gets_directories() {
    let fx = Fixture::new("128M");
    let config = fx.config("ext4");
    let (result, progress) = prepare(&config);
    let status = result.expect("prepare");

    let uuid = blkid(fx.dev(), "UUID").expect("a filesystem UUID");
    assert_eq!(blkid(fx.dev(), "TYPE").as_deref(), Some("ext4"));
    assert_eq!(blkid(fx.dev(), "LABEL").as_deref(), Some("csdata"));
    assert!(status.formatted_now);
    assert!(status.mounted);
    assert_eq!(status.device.as_deref(), Some(fx.dev()));
    assert_eq!(status.uuid.as_deref(), Some(uuid.as_str()));
    assert_eq!(status.filesystem.as_deref(), Some("ext4"));
    assert_eq!(status.grown_from, None);
    assert!(
        status.size_bytes.is_some_and(|s| s > 100 << 20),
        "{status:?}"
    );
    assert!(status.used_bytes.is_some(), "{status:?}");
    assert!(
        progress.iter().any(|m| m.contains("formatting")),
        "{progress:?}"
    );

    let mounts = mounts_at(&fx.mnt());
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert!(mounts[0].starts_with(fx.dev()), "{mounts:?}");
    for flag in ["noatime", "nosuid", "nodev"] {
        assert!(mounts[0].contains(flag), "{flag}: {mounts:?}");
    }

    let fstab = std::fs::read_to_string(fx.fstab()).expect("fstab was created");
    assert_eq!(fstab, format!("{}\n", fstab_line(&uuid, &fx.mnt(), "ext4")));

    assert_developer_dirs(&fx.mnt(), &["alice", "bob"]);

    let seen = volume::observe(&config);
    assert!(seen.mounted, "{seen:?}");
    assert_eq!(seen.uuid.as_deref(), Some(uuid.as_str()));
    assert_eq!(seen.filesystem.as_deref(), Some("ext4"));
    assert_eq!(seen.size_bytes, status.size_bytes);
    assert_eq!(seen.error, None);
}

#[test]
fn blank_device_with_xfs_configured_gets_xfs() {
    let fx = Fixture::new("512M");
    let status = prepare_ok(&fx.config("xfs"));
    assert!(status.formatted_now);
    assert_eq!(blkid(fx.dev(), "TYPE").as_deref(), Some("xfs"));
    assert_eq!(blkid(fx.dev(), "LABEL").as_deref(), Some("csdata"));
    let uuid = blkid(fx.dev(), "UUID").expect("uuid");
    assert_eq!(mount_source(&fx.mnt()).as_deref(), Some(fx.dev()));
    assert_eq!(
        std::fs::read_to_string(fx.fstab()).expect("fstab"),
        format!("{}\n", fstab_line(&uuid, &fx.mnt(), "xfs"))
    );
    assert_developer_dirs(&fx.mnt(), &["alice", "bob"]);
}

#[test]
fn existing_ext4_is_mounted_with_its_data_and_never_formatted() {
    let fx = Fixture::new("128M");
    // Also what a crash between mkfs and mount leaves behind.
    run("mkfs.ext4", &["-q", "-L", "mine", fx.dev()]);
    let uuid = blkid(fx.dev(), "UUID").expect("uuid");
    let elsewhere = tempdir();
    let at = elsewhere.path();
    run("mount", &[fx.dev(), path_str(at)]);
    std::fs::write(at.join("notes.txt"), "precious work").expect("write");
    // alice's directory exists already, with another owner and mode.
    std::fs::create_dir_all(at.join("alice/workspace")).expect("mkdir");
    std::fs::write(at.join("alice/workspace/main.rs"), "fn main() {}").expect("write");
    std::fs::set_permissions(at.join("alice"), std::fs::Permissions::from_mode(0o700))
        .expect("chmod");
    run("umount", &[path_str(at)]);

    let status = prepare_ok(&fx.config("ext4"));
    assert!(!status.formatted_now, "{status:?}");
    assert_eq!(
        blkid(fx.dev(), "UUID").as_deref(),
        Some(uuid.as_str()),
        "no mkfs ran"
    );
    assert_eq!(
        blkid(fx.dev(), "LABEL").as_deref(),
        Some("mine"),
        "label untouched"
    );
    assert_eq!(status.uuid.as_deref(), Some(uuid.as_str()));
    let mnt = fx.mnt();
    assert_eq!(
        std::fs::read_to_string(mnt.join("notes.txt")).expect("file survived"),
        "precious work"
    );
    // The old layout's workspace moved into the home, where the container sees it.
    assert_eq!(
        std::fs::read_to_string(mnt.join("alice/home/workspace/main.rs")).expect("file survived"),
        "fn main() {}"
    );
    assert!(!mnt.join("alice/workspace").exists());
    // Existing directories keep their owner and mode (a warning is logged) ...
    let alice = std::fs::metadata(mnt.join("alice")).expect("stat");
    assert_eq!((alice.uid(), alice.gid()), (0, 0));
    assert_eq!(alice.permissions().mode() & 0o7777, 0o700);
    let ws = std::fs::metadata(mnt.join("alice/home/workspace")).expect("stat");
    assert_eq!(ws.uid(), 0, "existing workspace not chowned");
    // ... while missing ones are created as usual.
    let home = std::fs::metadata(mnt.join("alice/home")).expect("created");
    assert_eq!((home.uid(), home.gid()), (UID, GID));
    assert!(!mnt.join("alice/config").exists(), "no old layout created");
    assert_developer_dirs(&mnt, &["bob"]);
}

#[test]
fn volume_mounted_without_nosuid_nodev_is_remounted_with_them_keeping_its_data() {
    let fx = Fixture::new("128M");
    let config = fx.config("ext4");
    prepare_ok(&config);
    let mnt = fx.mnt();
    std::fs::write(mnt.join("open-file.txt"), "still here").expect("write");
    // As an older csagent (or an admin) left it: mounted with suid and dev allowed.
    run("mount", &["-o", "remount,suid,dev", path_str(&mnt)]);
    let before = mounts_at(&mnt);
    assert!(!before[0].contains("nosuid"), "{before:?}");

    let status = prepare_ok(&config);
    assert!(!status.formatted_now);
    let after = mounts_at(&mnt);
    assert_eq!(
        after.len(),
        1,
        "remounted in place, not mounted twice: {after:?}"
    );
    for flag in ["nosuid", "nodev", "noatime"] {
        assert!(after[0].contains(flag), "{flag}: {after:?}");
    }
    assert_eq!(
        std::fs::read_to_string(mnt.join("open-file.txt")).expect("data kept"),
        "still here"
    );
}

// ---------------------------------------------------------------------------
// Refusals: nothing written
// ---------------------------------------------------------------------------

#[test]
fn xfs_when_ext4_is_configured_is_refused() {
    let fx = Fixture::new("512M");
    run("mkfs.xfs", &["-q", fx.dev()]);
    let uuid = blkid(fx.dev(), "UUID").expect("uuid");
    let err = assert_refused(
        &fx,
        &fx.config("ext4"),
        &[
            fx.dev(),
            "xfs filesystem",
            &uuid,
            "volume.filesystem is ext4",
        ],
    );
    assert!(err.contains("refusing to format"), "{err}");
}

#[test]
fn partition_table_is_refused() {
    let fx = Fixture::new("64M");
    let out = Command::new("sfdisk")
        .args(["-q", fx.dev()])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(b"label: gpt\nstart=2048, size=8192, type=L\n")?;
            child.wait()
        })
        .expect("run sfdisk");
    assert!(out.success(), "sfdisk failed");
    assert_refused(&fx, &fx.config("ext4"), &[fx.dev(), "gpt partition table"]);
}

#[test]
fn luks_header_is_refused() {
    let fx = Fixture::new("64M");
    let key = fx.dir.path().join("key");
    std::fs::write(&key, "not a real secret, only a test key").expect("key file");
    run(
        "cryptsetup",
        &[
            "luksFormat",
            "--batch-mode",
            "--type",
            "luks2",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--key-file",
            path_str(&key),
            fx.dev(),
        ],
    );
    assert_refused(&fx, &fx.config("ext4"), &[fx.dev(), "crypto_LUKS"]);
}

#[test]
fn swap_signature_is_refused() {
    let fx = Fixture::new("64M");
    run("mkswap", &[fx.dev()]);
    assert_refused(&fx, &fx.config("ext4"), &[fx.dev(), "swap"]);
}

#[test]
fn damaged_filesystem_without_a_signature_is_refused() {
    // wipefs -a erases only the magic bytes: blkid sees nothing, but the rest of
    // the filesystem is there and fsck could bring it back. Never format it.
    let fx = Fixture::new("64M");
    run("mkfs.ext4", &["-q", fx.dev()]);
    run("wipefs", &["-q", "-a", fx.dev()]);
    assert_eq!(blkid(fx.dev(), "TYPE"), None, "blkid no longer sees it");
    assert_refused(
        &fx,
        &fx.config("ext4"),
        &[fx.dev(), "first MiB is not zero"],
    );
}

#[test]
fn device_mounted_elsewhere_is_refused() {
    let fx = Fixture::new("64M");
    run("mkfs.ext4", &["-q", fx.dev()]);
    let other = tempdir();
    run("mount", &[fx.dev(), path_str(other.path())]);
    let (result, _) = prepare(&fx.config("ext4"));
    let err = result.expect_err("mounted elsewhere").to_string();
    assert!(
        err.contains(fx.dev()) && err.contains(path_str(other.path())),
        "{err}"
    );
    assert!(err.contains("not at"), "{err}");
    assert!(
        mount_source(&fx.mnt()).is_none(),
        "not mounted at the mount point"
    );
    assert!(!fx.fstab().exists(), "no fstab written");
    run("umount", &[path_str(other.path())]);
}

#[test]
fn mount_point_holding_another_filesystem_is_refused() {
    let fx = Fixture::new("64M");
    std::fs::create_dir_all(fx.mnt()).expect("mkdir");
    run(
        "mount",
        &["-t", "tmpfs", "csagent-test-tmpfs", path_str(&fx.mnt())],
    );
    // The device is blank: it must not be formatted either.
    let err = assert_refused(
        &fx,
        &fx.config("ext4"),
        &[fx.dev(), "csagent-test-tmpfs", "already mounted"],
    );
    assert!(err.contains(path_str(&fx.mnt())), "{err}");
    assert_eq!(blkid(fx.dev(), "TYPE"), None, "still blank");
}

#[test]
fn foreign_fstab_line_for_the_mount_point_is_refused_before_formatting() {
    let fx = Fixture::new("64M");
    let text = format!(
        "# admin's line\nUUID=11111111-2222-3333-4444-555555555555 {} ext4 defaults 0 2\n",
        fx.mnt().display()
    );
    std::fs::write(fx.fstab(), &text).expect("write fstab");
    assert_refused(&fx, &fx.config("ext4"), &["line 2", "not this volume"]);
    assert_eq!(blkid(fx.dev(), "TYPE"), None, "still blank");
}

// ---------------------------------------------------------------------------
// Idempotence, fstab, growing
// ---------------------------------------------------------------------------

#[test]
fn second_pass_changes_nothing() {
    let fx = Fixture::new("128M");
    let config = fx.config("ext4");
    let first = prepare_ok(&config);
    assert!(first.formatted_now);
    let fstab_meta = std::fs::metadata(fx.fstab()).expect("fstab");
    let fstab_bytes = std::fs::read(fx.fstab()).expect("fstab");
    let dir_meta = std::fs::metadata(fx.mnt().join("alice/home/workspace")).expect("dir");
    let mnt_meta = std::fs::metadata(fx.mnt()).expect("mount point");
    std::thread::sleep(Duration::from_millis(20));

    let second = prepare_ok(&config);
    assert!(!second.formatted_now, "no second mkfs");
    assert_eq!(second.uuid, first.uuid, "same filesystem");
    assert_eq!(second.grown_from, None);
    assert_eq!(std::fs::read(fx.fstab()).expect("fstab"), fstab_bytes);
    let after = std::fs::metadata(fx.fstab()).expect("fstab");
    assert_eq!(after.ino(), fstab_meta.ino(), "fstab not replaced");
    assert_eq!(
        after.mtime_nsec(),
        fstab_meta.mtime_nsec(),
        "fstab not rewritten"
    );
    assert_eq!(after.mtime(), fstab_meta.mtime());
    let dir_after = std::fs::metadata(fx.mnt().join("alice/home/workspace")).expect("dir");
    assert_eq!(
        dir_after.ctime_nsec(),
        dir_meta.ctime_nsec(),
        "directory untouched"
    );
    let mnt_after = std::fs::metadata(fx.mnt()).expect("mount point");
    assert_eq!(
        mnt_after.mtime_nsec(),
        mnt_meta.mtime_nsec(),
        "nothing created at the root"
    );
    assert_eq!(mounts_at(&fx.mnt()).len(), 1, "not mounted twice");
}

#[test]
fn other_fstab_entries_are_preserved_byte_for_byte() {
    let fx = Fixture::new("64M");
    let original = "# /etc/fstab: static file system information.\n\
                    #\n\
                    \n\
                    LABEL=cloudimg-rootfs\t/\t ext4\tdiscard,errors=remount-ro\t0 1\n   \
                    # an indented comment with trailing spaces   \n\
                    \n\
                    LABEL=UEFI      /boot/efi       vfat    umask=0077      0 1\n\
                    /swap.img none swap sw 0 0";
    std::fs::write(fx.fstab(), original).expect("write fstab");
    std::fs::set_permissions(fx.fstab(), std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let config = fx.config("ext4");
    let status = prepare_ok(&config);
    let uuid = status.uuid.expect("uuid");
    let after = std::fs::read_to_string(fx.fstab()).expect("fstab");
    assert_eq!(
        after,
        format!("{original}\n{}\n", fstab_line(&uuid, &fx.mnt(), "ext4")),
        "other lines kept byte for byte, ours appended"
    );
    assert_eq!(
        std::fs::metadata(fx.fstab())
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777,
        0o644
    );

    // Our line replaced in place when its options differ; the rest untouched.
    let edited = after.replace(OPTIONS, "defaults");
    std::fs::write(fx.fstab(), &edited).expect("write");
    prepare_ok(&config);
    assert_eq!(std::fs::read_to_string(fx.fstab()).expect("fstab"), after);
    let names: Vec<String> = std::fs::read_dir(fx.dir.path())
        .expect("readdir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(names.is_empty(), "temp files left: {names:?}");
}

#[test]
fn enlarged_ext4_volume_grows_online() {
    let fx = Fixture::new("256M");
    let config = fx.config("ext4");
    let first = prepare_ok(&config);
    let old_fs = ext4_size(fx.dev());
    assert_eq!(old_fs, 256 << 20);

    fx.disk().grow("512M");
    let second = prepare_ok(&config);
    if !has_cap_sys_resource() {
        // The kernel refuses an online ext4 resize without CAP_SYS_RESOURCE (some
        // containers drop it). The pass must say so and leave a working volume.
        let err = second.error.clone().unwrap_or_default();
        assert!(
            err.contains("CAP_SYS_RESOURCE") && err.contains(fx.dev()),
            "{second:?}"
        );
        assert_eq!(second.grown_from, None);
        assert_eq!(ext4_size(fx.dev()), old_fs, "untouched");
        assert!(second.mounted && !second.formatted_now);
        assert_eq!(second.uuid, first.uuid);
        assert_developer_dirs(&fx.mnt(), &["alice", "bob"]);
        eprintln!("NOTE: no CAP_SYS_RESOURCE here, so ext4 online growth itself is not exercised");
        return;
    }
    assert_eq!(second.error, None);
    assert_eq!(second.grown_from, Some(old_fs));
    assert_eq!(ext4_size(fx.dev()), 512 << 20);
    assert!(
        second.size_bytes > first.size_bytes,
        "{first:?} -> {second:?}"
    );
    assert!(!second.formatted_now);
    assert_eq!(second.uuid, first.uuid);
    assert_eq!(
        mount_source(&fx.mnt()).as_deref(),
        Some(fx.dev()),
        "grown while mounted"
    );

    assert_eq!(prepare_ok(&config).grown_from, None, "nothing left to grow");
}

#[test]
fn enlarged_xfs_volume_grows_online() {
    let fx = Fixture::new("512M");
    let config = fx.config("xfs");
    let first = prepare_ok(&config);
    fx.disk().grow("1G");
    let second = prepare_ok(&config);
    assert_eq!(second.grown_from, Some(512 << 20));
    assert!(
        second.size_bytes.unwrap_or(0) > first.size_bytes.unwrap_or(0) + (400 << 20),
        "{first:?} -> {second:?}"
    );
    assert_eq!(prepare_ok(&config).grown_from, None);
}

// ---------------------------------------------------------------------------
// Finding the device
// ---------------------------------------------------------------------------

const VOLUME_ID: &str = "vol-0123456789abcdef0";
const NVME_NAME: &str = "nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0";

#[test]
fn volume_id_is_found_through_its_stable_nvme_name() {
    let fx = Fixture::new("64M");
    std::fs::create_dir_all(fx.by_id()).expect("mkdir");
    // udev's links are relative ("../../nvme1n1"); make one that resolves the same way.
    let depth = fx.by_id().components().count() - 1;
    let rel = PathBuf::from("../".repeat(depth)).join(fx.dev().trim_start_matches('/'));
    let link = fx.by_id().join(NVME_NAME);
    std::os::unix::fs::symlink(&rel, &link).expect("symlink");
    let config = fx.config_with(&format!("volume_id = \"{VOLUME_ID}\""), "ext4", "5s");
    let status = prepare_ok(&config);
    assert_eq!(status.volume_id.as_deref(), Some(VOLUME_ID));
    assert_eq!(status.device.as_deref(), Some(fx.dev()));
    assert_eq!(mount_source(&fx.mnt()).as_deref(), Some(fx.dev()));
    let seen = volume::observe(&config);
    assert_eq!(seen.volume_id.as_deref(), Some(VOLUME_ID));
    assert_eq!(seen.device.as_deref(), Some(fx.dev()));
}

#[test]
fn device_attached_two_seconds_late_is_waited_for() {
    let fx = Fixture::new("64M");
    std::fs::create_dir_all(fx.by_id()).expect("mkdir");
    let link = fx.by_id().join(NVME_NAME);
    let target = PathBuf::from(fx.dev());
    let attach = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        std::os::unix::fs::symlink(target, link).expect("symlink");
    });
    let config = fx.config_with(&format!("volume_id = \"{VOLUME_ID}\""), "ext4", "30s");
    let start = Instant::now();
    let (result, progress) = prepare(&config);
    let waited = start.elapsed();
    attach.join().expect("attach thread");
    let status = result.expect("prepare after waiting");
    assert!(
        waited >= Duration::from_secs(2),
        "returned after {waited:?}"
    );
    assert!(status.formatted_now && status.mounted, "{status:?}");
    assert_eq!(
        progress.first().map(String::as_str),
        Some("waiting for volume vol-0123456789abcdef0 (0s of 30s)"),
        "{progress:?}"
    );
    assert!(
        progress
            .iter()
            .any(|m| m.starts_with("waiting for volume vol-0123456789abcdef0 (1s of 30s)")),
        "{progress:?}"
    );
}

#[test]
fn missing_device_fails_clearly_after_the_timeout() {
    let fx = Fixture::without_disk();
    let missing = fx.dir.path().join("no-such-device");
    let config = fx.config_with(&format!("device = \"{}\"", missing.display()), "ext4", "2s");
    let start = Instant::now();
    let (result, progress) = prepare(&config);
    let elapsed = start.elapsed();
    let err = result.expect_err("no device");
    assert!(matches!(err, VolumeError::NotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&missing.display().to_string()) && msg.contains("within 2s"),
        "{msg}"
    );
    assert!(msg.contains("never put on the root disk"), "{msg}");
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(10),
        "{elapsed:?}"
    );
    assert!(
        progress.iter().any(|m| m.contains("waiting for device")),
        "{progress:?}"
    );
    assert!(!fx.mnt().exists(), "no mount point made on the root disk");
    assert!(!fx.fstab().exists(), "no fstab written");

    // The same by volume id names the volume; observe says it is not attached.
    let config = fx.config_with(&format!("volume_id = \"{VOLUME_ID}\""), "ext4", "1s");
    let (result, _) = prepare(&config);
    let msg = result.expect_err("no device").to_string();
    assert!(msg.contains(VOLUME_ID) && msg.contains(NVME_NAME), "{msg}");
    let seen = volume::observe(&config);
    assert!(!seen.mounted);
    assert!(seen.error.is_some_and(|e| e.contains("not attached")));
}

// ---------------------------------------------------------------------------
// Developer directories
// ---------------------------------------------------------------------------

#[test]
fn symlinked_developer_directory_is_not_followed() {
    let fx = Fixture::new("64M");
    run("mkfs.ext4", &["-q", fx.dev()]);
    let outside = tempdir();
    let staging = tempdir();
    run("mount", &[fx.dev(), path_str(staging.path())]);
    std::os::unix::fs::symlink(outside.path(), staging.path().join("alice")).expect("symlink");
    run("umount", &[path_str(staging.path())]);

    let (result, _) = prepare(&fx.config("ext4"));
    let err = result.expect_err("alice is a symlink").to_string();
    assert!(
        err.contains("failed 1 of 2") && err.contains("symbolic link"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(outside.path()).expect("readdir").count(),
        0,
        "nothing created through the link"
    );
    assert_developer_dirs(&fx.mnt(), &["bob"]);
    assert_eq!(mount_source(&fx.mnt()).as_deref(), Some(fx.dev()));
}

impl Fixture {
    /// `config("ext4")` with the agent's state directory at `state_dir` (and its
    /// runtime directory in the fixture's directory).
    fn config_with_state(&self, state_dir: &Path) -> Config {
        let text = format!(
            "[volume]\ndevice = \"{dev}\"\nmount_point = \"{mnt}\"\nfstab = \"{fstab}\"\nwait_timeout = \"10s\"\n\
             [containers]\nuid = {UID}\ngid = {GID}\n\
             [agent]\nstate_dir = \"{state}\"\nruntime_dir = \"{run}\"\n\
             [[developer]]\nname = \"alice\"\n[[developer]]\nname = \"bob\"\n",
            dev = self.dev(),
            mnt = self.mnt().display(),
            fstab = self.fstab().display(),
            state = state_dir.display(),
            run = self.dir.path().join("run").display(),
        );
        Config::from_toml(&text, Path::new("test.toml")).expect("test config is valid")
    }
}

/// Every file below `dir` with its bytes, by path relative to `dir`.
fn files_below(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let rel = p.strip_prefix(dir).expect("below").to_path_buf();
                out.push((rel, std::fs::read(&p).expect("read")));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn stray_content_in_the_mount_point_is_moved_into_quarantine_never_deleted() {
    let fx = Fixture::new("128M");
    let state = fx.dir.path().join("state");
    let config = fx.config_with_state(&state);
    let mnt = fx.mnt();
    // What a container started before the volume wrote on the root disk, plus
    // something that is no developer's.
    std::fs::create_dir_all(mnt.join("alice/workspace/src")).expect("mkdir");
    std::fs::write(mnt.join("alice/workspace/src/draft.rs"), "fn draft() {}\n").expect("write");
    std::fs::write(mnt.join("README"), b"volume not mounted\n\xff").expect("write");
    let before = files_below(&mnt);

    let status = prepare_ok(&config);
    assert!(status.mounted && status.error.is_none(), "{status:?}");
    // The mount point shows the volume; what was underneath is in quarantine,
    // byte for byte, and status lists it per developer.
    assert!(!mnt.join("README").exists());
    let batches: Vec<PathBuf> = std::fs::read_dir(state.join("quarantine"))
        .expect("quarantine dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(batches.len(), 1, "{batches:?}");
    assert_eq!(files_below(&batches[0]), before);
    let mut items = status.quarantine.clone();
    items.sort_by(|a, b| a.from.cmp(&b.from));
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0].from, mnt.join("README").display().to_string());
    assert_eq!(
        (
            items[0].developer.as_deref(),
            items[0].bytes,
            items[0].files
        ),
        (None, 20, 1)
    );
    assert_eq!(items[1].developer.as_deref(), Some("alice"));
    assert_eq!((items[1].bytes, items[1].files), (14, 1));
    assert_eq!(
        items[1].path,
        batches[0].join("alice").display().to_string()
    );
    assert!(items.iter().all(|i| !i.left_in_place));
    assert_eq!(
        volume::observe(&config).quarantine,
        status.quarantine,
        "observe lists it too"
    );

    // Content hidden under a volume someone else mounted is found as well (a
    // private bind of the disk underneath shows it).
    run("umount", &[path_str(&mnt)]);
    std::fs::create_dir_all(mnt.join("bob/workspace")).expect("mkdir");
    std::fs::write(mnt.join("bob/workspace/late.txt"), "late").expect("write");
    run("mount", &[fx.dev(), path_str(&mnt)]);
    assert!(
        !mnt.join("bob/workspace/late.txt").exists(),
        "hidden by the volume"
    );
    let status = prepare_ok(&config);
    let bob: Vec<_> = status
        .quarantine
        .iter()
        .filter(|q| q.developer.as_deref() == Some("bob"))
        .collect();
    assert_eq!(bob.len(), 1, "{:?}", status.quarantine);
    assert_eq!(
        std::fs::read_to_string(Path::new(&bob[0].path).join("workspace/late.txt")).expect("moved"),
        "late"
    );
    assert!(
        !std::fs::read_to_string("/proc/self/mountinfo")
            .expect("mountinfo")
            .contains(".volume-underneath"),
        "the bind is gone"
    );
    // A further pass finds nothing new.
    let again = prepare_ok(&config);
    assert_eq!(again.quarantine.len(), 3, "{:?}", again.quarantine);
}

#[test]
fn stray_content_that_cannot_be_moved_without_copying_stays_and_is_reported() {
    let fx = Fixture::new("128M");
    // The state directory on another filesystem (a tmpfs): a rename cannot move
    // anything there, and csagent does not copy.
    let state = tempfile::Builder::new()
        .prefix("csagent-state-")
        .tempdir_in("/dev/shm")
        .expect("tmpfs dir");
    let config = fx.config_with_state(state.path());
    let mnt = fx.mnt();
    std::fs::create_dir_all(mnt.join("alice/workspace")).expect("mkdir");
    std::fs::write(mnt.join("alice/workspace/keep.txt"), "keep me").expect("write");

    let status = prepare_ok(&config);
    assert!(status.mounted, "{status:?}");
    assert_eq!(status.quarantine.len(), 1, "{:?}", status.quarantine);
    let item = &status.quarantine[0];
    assert!(item.left_in_place, "{item:?}");
    assert_eq!(item.developer.as_deref(), Some("alice"));
    assert_eq!(item.from, mnt.join("alice").display().to_string());
    assert_eq!((item.bytes, item.files), (7, 1));
    run("umount", &[path_str(&mnt)]);
    assert_eq!(
        std::fs::read_to_string(mnt.join("alice/workspace/keep.txt")).expect("still there"),
        "keep me"
    );
}
