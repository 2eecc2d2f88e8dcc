//! `csagent restore` end to end, as root: the real binary against moto (the EC2
//! calls) with loop devices standing in for the volumes. A loop device holding an
//! ext4 "snapshot" (with `<dev>/home/...`) plays the temporary volume: when moto
//! reports the volume csagent created, the test makes its stable NVMe link in the
//! by-id directory of the config, pointing at that loop device, as udev would on
//! a Nitro instance. Another loop device is the mounted live data volume.
//!
//! Every test checks the cleanup: the temporary volume is detached and deleted in
//! moto, nothing is left mounted, and the live files are untouched.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::Filter;
use common::*;

const UID: u32 = 1234;
const GID: u32 = 2345;
const MOUNT_BASE: &str = "/run/csagent-restore";

/// A host: the live data volume mounted, alice's and bob's homes with live files,
/// an instance in moto, and a config pointing at all of it.
struct Host {
    dir: tempfile::TempDir,
    live: Option<LoopDevice>,
    config: PathBuf,
    ec2: aws_sdk_ec2::Client,
    instance: String,
    zone: String,
}

impl Host {
    /// `mkfs_args`: extra mkfs.ext4 options for the live volume (e.g. few inodes).
    async fn new(live_size: &str, mkfs_args: &[&str]) -> Host {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("csagent-restore-")
            .tempdir()
            .expect("tempdir");
        let live = LoopDevice::new(live_size);
        let mut args = vec!["-q", "-F"];
        args.extend_from_slice(mkfs_args);
        args.push(live.path());
        run("mkfs.ext4", &args);
        let mnt = dir.path().join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        run("mount", &[live.path(), path_str(&mnt)]);
        std::fs::create_dir_all(dir.path().join("by-id")).unwrap();
        for dev in ["alice", "bob"] {
            let home = mnt.join(dev).join("home");
            std::fs::create_dir_all(home.join("workspace")).unwrap();
            std::fs::write(home.join("notes.txt"), format!("{dev}'s live notes\n")).unwrap();
            std::fs::write(home.join("workspace/a.txt"), "live version\n").unwrap();
            run("chown", &["-R", &format!("{UID}:{GID}"), path_str(&home)]);
            std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o750)).unwrap();
        }

        let ec2 = aws_sdk_ec2::Client::new(&aws().await);
        let out = ec2
            .run_instances()
            .image_id("ami-12345678")
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
            .min_count(1)
            .max_count(1)
            .send()
            .await
            .expect("moto RunInstances");
        let i = &out.instances()[0];
        let instance = i.instance_id().unwrap().to_string();
        let zone = i
            .placement()
            .and_then(|p| p.availability_zone())
            .unwrap()
            .to_string();

        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "project = \"restoretest\"\nregion = \"{REGION}\"\ninstance_id = \"{instance}\"\n\
                 [aws]\nendpoint_url = \"{moto}\"\n\
                 [volume]\ndevice = \"{dev}\"\nmount_point = \"{mnt}\"\nfstab = \"{fstab}\"\n\
                 by_id_dir = \"{by_id}\"\n\
                 [containers]\nuid = {UID}\ngid = {GID}\n\
                 [[developer]]\nname = \"alice\"\n[[developer]]\nname = \"bob\"\n",
                moto = moto_url(),
                dev = live.path(),
                mnt = mnt.display(),
                fstab = dir.path().join("fstab").display(),
                by_id = dir.path().join("by-id").display(),
            ),
        )
        .unwrap();
        Host {
            dir,
            live: Some(live),
            config,
            ec2,
            instance,
            zone,
        }
    }

    fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    fn home(&self, dev: &str) -> PathBuf {
        self.mnt().join(dev).join("home")
    }

    /// A snapshot in moto (of a throwaway volume): its id.
    async fn snapshot(&self) -> String {
        let v = self
            .ec2
            .create_volume()
            .size(1)
            .availability_zone(&self.zone)
            .send()
            .await
            .expect("moto CreateVolume");
        let s = self
            .ec2
            .create_snapshot()
            .volume_id(v.volume_id().unwrap())
            .send()
            .await
            .expect("moto CreateSnapshot");
        s.snapshot_id().unwrap().to_string()
    }

    /// Volumes csagent created from `snapshot` that still exist.
    async fn restore_volumes(&self, snapshot: &str) -> Vec<aws_sdk_ec2::types::Volume> {
        self.ec2
            .describe_volumes()
            .filters(
                Filter::builder()
                    .name("tag:csagent-restore-snapshot")
                    .values(snapshot)
                    .build(),
            )
            .send()
            .await
            .expect("moto DescribeVolumes")
            .volumes()
            .to_vec()
    }

    /// Device names attached to the moto instance.
    async fn attached_devices(&self) -> Vec<String> {
        let out = self
            .ec2
            .describe_instances()
            .instance_ids(&self.instance)
            .send()
            .await
            .expect("moto DescribeInstances");
        out.reservations()[0].instances()[0]
            .block_device_mappings()
            .iter()
            .filter_map(|m| m.device_name().map(str::to_string))
            .collect()
    }

    /// Runs `csagent restore alice <args>`; when `device` is given, links it as
    /// the temporary volume's NVMe name as soon as moto shows the volume. With
    /// `interrupt`, sends SIGINT once the volume is attached.
    async fn restore(
        &self,
        snapshot: &str,
        args: &[&str],
        device: Option<&str>,
        interrupt: bool,
    ) -> Run {
        let out = self.dir.path().join("stdout");
        let err = self.dir.path().join("stderr");
        let mut child = Command::new(csagent_bin())
            .args(["restore", "alice", "--snapshot", snapshot, "--config"])
            .arg(&self.config)
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("start csagent restore");
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut linked = None;
        let mut interrupted = false;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "csagent restore did not finish");
            if linked.is_none() || (interrupt && !interrupted) {
                if let Some(v) = self.restore_volumes(snapshot).await.first() {
                    let id = v.volume_id().unwrap().to_string();
                    let attached = !v.attachments().is_empty();
                    if linked.is_none()
                        && let Some(dev) = device
                    {
                        let link = self.dir.path().join("by-id").join(format!(
                            "nvme-Amazon_Elastic_Block_Store_{}",
                            id.replace('-', "")
                        ));
                        std::os::unix::fs::symlink(dev, &link).unwrap();
                    }
                    if linked.is_none() {
                        linked = Some(id);
                    }
                    if interrupt && attached && !interrupted {
                        // Let it reach the device wait, then Ctrl-C.
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(child.id() as i32),
                            nix::sys::signal::Signal::SIGINT,
                        )
                        .unwrap();
                        interrupted = true;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let run = Run {
            code: status.code(),
            stdout: std::fs::read_to_string(out).unwrap(),
            stderr: std::fs::read_to_string(err).unwrap(),
            volume: linked,
        };
        eprintln!("--- csagent restore ---\n{}{}", run.stdout, run.stderr);
        run
    }

    /// The temporary volume is gone from moto and from the instance, and nothing
    /// of it is mounted.
    async fn assert_cleaned_up(&self, snapshot: &str, run: &Run) {
        assert!(
            self.restore_volumes(snapshot).await.is_empty(),
            "the temporary volume still exists in moto"
        );
        assert_eq!(
            self.attached_devices().await,
            vec!["/dev/sda1".to_string()],
            "only the root volume stays attached"
        );
        if let Some(v) = &run.volume {
            assert!(
                !Path::new(MOUNT_BASE).join(v).exists(),
                "the mount directory is left"
            );
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(MOUNT_BASE),
            "something is still mounted under {MOUNT_BASE}:\n{mounts}"
        );
    }

    /// The live files of both developers are as `Host::new` wrote them.
    fn assert_live_untouched(&self) {
        for dev in ["alice", "bob"] {
            let home = self.home(dev);
            assert_eq!(
                std::fs::read_to_string(home.join("notes.txt")).unwrap(),
                format!("{dev}'s live notes\n")
            );
            assert_eq!(
                std::fs::read_to_string(home.join("workspace/a.txt")).unwrap(),
                "live version\n"
            );
        }
        let bob: Vec<_> = std::fs::read_dir(self.home("bob"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(bob.len(), 2, "bob's home gained something: {bob:?}");
    }

    fn restored_dirs(&self) -> Vec<String> {
        std::fs::read_dir(self.home("alice"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("restored-"))
            .collect()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.mnt()).status();
        self.live.take();
    }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    /// The temporary volume csagent created, if moto showed one.
    volume: Option<String>,
}

/// An ext4 loop device (the "snapshot"), filled by `fill` while mounted.
fn snapshot_disk(size: &str, fill: impl FnOnce(&Path)) -> LoopDevice {
    let disk = LoopDevice::new(size);
    run("mkfs.ext4", &["-q", "-F", disk.path()]);
    let mnt = disk.dir.path().join("fill");
    std::fs::create_dir_all(&mnt).unwrap();
    run("mount", &[disk.path(), path_str(&mnt)]);
    fill(&mnt);
    run("umount", &[path_str(&mnt)]);
    disk
}

fn today() -> String {
    run("date", &["-u", "+%F"]).trim().to_string()
}

fn write(path: &Path, content: &[u8], mode: u32, owner: (u32, u32)) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
    // chown first: it clears set-uid, which the copy must drop itself.
    std::os::unix::fs::lchown(path, Some(owner.0), Some(owner.1)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Sets a path's mtime (and atime), not following a symlink.
fn set_mtime(path: &Path, epoch: &str) {
    run("touch", &["-h", "-d", &format!("@{epoch}"), path_str(path)]);
}

/// alice's home in the snapshot: files of several modes and owners, a big file,
/// a private directory, symlinks pointing out of the home, a FIFO; and bob's.
fn fill_snapshot(root: &Path) {
    let home = root.join("alice/home");
    write(
        &home.join("workspace/a.txt"),
        b"from the snapshot\n",
        0o640,
        (UID, GID),
    );
    let big: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i * 7 + i / 251) as u8)
        .collect();
    write(&home.join("workspace/big.bin"), &big, 0o600, (UID, GID));
    write(&home.join(".bashrc"), b"PS1='$ '\n", 0o644, (UID, GID));
    write(
        &home.join("bin/tool.sh"),
        b"#!/bin/sh\necho hi\n",
        0o4755,
        (0, 0),
    );
    write(
        &home.join("private/key"),
        b"secret-ish\n",
        0o600,
        (UID, GID),
    );
    std::fs::set_permissions(home.join("private"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", home.join("link-out")).unwrap();
    std::os::unix::fs::symlink("../../bob/home/secret.txt", home.join("link-bob")).unwrap();
    std::os::unix::fs::symlink("workspace/a.txt", home.join("link-in")).unwrap();
    run("mkfifo", &[path_str(&home.join("fifo"))]);
    write(
        &root.join("bob/home/secret.txt"),
        b"bob's secret\n",
        0o600,
        (UID, GID),
    );
    for p in [
        "workspace/a.txt",
        "workspace",
        "private",
        "bin/tool.sh",
        "link-out",
    ] {
        set_mtime(&home.join(p), "1577934245");
    }
    run("chown", &[&format!("{UID}:{GID}"), path_str(&home)]);
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o750)).unwrap();
}

/// Every path under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn restores_alice_byte_for_byte_then_deletes_the_volume() {
    let host = Host::new("64M", &[]).await;
    let snap_disk = snapshot_disk("64M", fill_snapshot);
    let snapshot = host.snapshot().await;
    let started = Instant::now();
    let run_ = host
        .restore(&snapshot, &[], Some(snap_disk.path()), false)
        .await;
    let took = started.elapsed();
    assert_eq!(run_.code, Some(0), "{}", run_.stderr);
    // What the snapshot holds, to compare with, read back from the disk itself
    // (after the restore: csagent refuses a device that is mounted anywhere).
    let reference = tempfile::tempdir().unwrap();
    run(
        "mount",
        &["-o", "ro", snap_disk.path(), path_str(reference.path())],
    );
    let src = reference.path().join("alice/home");

    let target = host.home("alice").join(format!("restored-{}", today()));
    assert_eq!(host.restored_dirs(), vec![format!("restored-{}", today())]);
    let mut expected = tree(&src);
    expected.retain(|p| p != "fifo");
    assert_eq!(tree(&target), expected, "the same tree, without the FIFO");
    for rel in &expected {
        let (a, b) = (src.join(rel), target.join(rel));
        let (ma, mb) = (
            std::fs::symlink_metadata(&a).unwrap(),
            std::fs::symlink_metadata(&b).unwrap(),
        );
        assert_eq!((mb.uid(), mb.gid()), (UID, GID), "{rel} belongs to alice");
        assert_eq!(ma.file_type(), mb.file_type(), "{rel}");
        if ma.file_type().is_symlink() {
            assert_eq!(
                std::fs::read_link(&a).unwrap(),
                std::fs::read_link(&b).unwrap()
            );
        } else {
            assert_eq!(
                mb.mode() & 0o7777,
                ma.mode() & 0o1777,
                "{rel}: mode (no set-uid)"
            );
        }
        assert_eq!(
            (mb.mtime(), mb.mtime_nsec()),
            (ma.mtime(), ma.mtime_nsec()),
            "{rel}: mtime"
        );
        if ma.is_file() {
            assert_eq!(
                std::fs::read(&a).unwrap(),
                std::fs::read(&b).unwrap(),
                "{rel}"
            );
        }
    }
    let top = std::fs::metadata(&target).unwrap();
    assert_eq!(
        (top.uid(), top.gid(), top.mode() & 0o7777),
        (UID, GID, 0o750)
    );
    assert_eq!(
        std::fs::read_link(target.join("link-out")).unwrap(),
        Path::new("/etc/shadow"),
        "a symlink out of the home is copied as a link, not followed"
    );
    assert!(
        !tree(&target).iter().any(|p| p.contains("secret.txt")),
        "nothing of bob's"
    );
    host.assert_live_untouched();
    host.assert_cleaned_up(&snapshot, &run_).await;

    // Progress: the steps and the copy's counts.
    for needle in [
        "creating a volume from",
        "attaching vol-",
        "read-only (noload)",
        "copying 5 files, 3 directories, 3 symlinks",
        "copied 5/5 files, ",
        "restored 5 files, 3 directories, 3 symlinks",
        "skipped 1 special files",
        "the temporary volume is deleted",
    ] {
        assert!(
            run_.stdout.contains(needle),
            "stdout lacks {needle:?}:\n{}",
            run_.stdout
        );
    }
    eprintln!("restore of 5 files (3 MiB) took {took:?}");
    run("umount", &[path_str(reference.path())]);
}

#[tokio::test(flavor = "multi_thread")]
async fn restores_the_old_layout_at_the_same_paths_as_in_the_home() {
    let host = Host::new("64M", &[]).await;
    let snap_disk = snapshot_disk("64M", |root| {
        write(
            &root.join("alice/workspace/x.txt"),
            b"old workspace\n",
            0o644,
            (UID, GID),
        );
        write(
            &root.join("alice/config/User/settings.json"),
            b"{}\n",
            0o600,
            (UID, GID),
        );
    });
    let snapshot = host.snapshot().await;
    let run_ = host
        .restore(
            &snapshot,
            &["--name", "from-before"],
            Some(snap_disk.path()),
            false,
        )
        .await;
    assert_eq!(run_.code, Some(0), "{}", run_.stderr);
    let target = host.home("alice").join("from-before");
    assert_eq!(
        std::fs::read_to_string(target.join("workspace/x.txt")).unwrap(),
        "old workspace\n"
    );
    assert_eq!(
        std::fs::read_to_string(target.join(".local/share/code-server/User/settings.json"))
            .unwrap(),
        "{}\n"
    );
    let share = std::fs::metadata(target.join(".local/share")).unwrap();
    assert_eq!((share.uid(), share.gid()), (UID, GID));
    host.assert_live_untouched();
    host.assert_cleaned_up(&snapshot, &run_).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn device_that_never_appears_is_cleaned_up() {
    let host = Host::new("32M", &[]).await;
    let snapshot = host.snapshot().await;
    let run_ = host
        .restore(&snapshot, &["--device-timeout", "3s"], None, false)
        .await;
    assert_eq!(run_.code, Some(1));
    let vol = run_.volume.clone().expect("a volume was created");
    for needle in [
        format!("the device of volume {vol} (attached as /dev/sdf) did not appear within 3s"),
        format!("nvme-Amazon_Elastic_Block_Store_{}", vol.replace('-', "")),
        "cleaned up".to_string(),
    ] {
        assert!(run_.stderr.contains(&needle), "stderr lacks {needle:?}");
    }
    assert!(run_.stdout.contains(&format!("detaching {vol}")));
    assert!(run_.stdout.contains(&format!("deleting {vol}")));
    assert!(host.restored_dirs().is_empty());
    host.assert_live_untouched();
    host.assert_cleaned_up(&snapshot, &run_).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn existing_target_is_refused_before_any_volume_is_created() {
    let host = Host::new("32M", &[]).await;
    let existing = host.home("alice").join(format!("restored-{}", today()));
    std::fs::create_dir(&existing).unwrap();
    std::fs::write(existing.join("mine.txt"), "keep me\n").unwrap();
    let snapshot = host.snapshot().await;
    let run_ = host.restore(&snapshot, &[], None, false).await;
    assert_eq!(run_.code, Some(1));
    assert!(run_.stderr.contains("already exists"), "{}", run_.stderr);
    assert!(run_.stderr.contains(path_str(&existing)));
    assert_eq!(run_.volume, None, "no volume was created");
    assert_eq!(
        std::fs::read_to_string(existing.join("mine.txt")).unwrap(),
        "keep me\n"
    );
    assert_eq!(tree(&existing), vec!["mine.txt".to_string()]);
    host.assert_live_untouched();
    host.assert_cleaned_up(&snapshot, &run_).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mount_failure_is_cleaned_up() {
    let host = Host::new("32M", &[]).await;
    // A blank device: there is nothing to mount.
    let blank = LoopDevice::new("16M");
    let snapshot = host.snapshot().await;
    let run_ = host
        .restore(&snapshot, &[], Some(blank.path()), false)
        .await;
    assert_eq!(run_.code, Some(1));
    let vol = run_.volume.clone().unwrap();
    let needle = format!(
        "cannot mount {} (volume {vol}, no filesystem)",
        blank.path()
    );
    assert!(run_.stderr.contains(&needle), "stderr lacks {needle:?}");
    assert!(host.restored_dirs().is_empty());
    host.assert_live_untouched();
    host.assert_cleaned_up(&snapshot, &run_).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_failure_midway_is_cleaned_up_and_leaves_live_files_alone() {
    // The live volume has few inodes: the copy runs out of them part-way (the
    // byte count fits, so the space check before copying lets it start).
    let host = Host::new("32M", &["-N", "64"]).await;
    let snap_disk = snapshot_disk("64M", |root| {
        for i in 0..200 {
            write(
                &root.join(format!("alice/home/many/f{i:03}")),
                b"x\n",
                0o644,
                (UID, GID),
            );
        }
    });
    let snapshot = host.snapshot().await;
    let run_ = host
        .restore(&snapshot, &[], Some(snap_disk.path()), false)
        .await;
    assert_eq!(run_.code, Some(1));
    assert!(
        run_.stderr.contains("copying alice's files failed at")
            && run_.stderr.contains("No space left on device"),
        "{}",
        run_.stderr
    );
    assert!(run_.stdout.contains("unmounting"), "{}", run_.stdout);
    // The incomplete copy is the developer's, in its own directory.
    let partial = host.home("alice").join(format!("restored-{}", today()));
    let meta = std::fs::metadata(&partial).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (UID, GID));
    host.assert_live_untouched();
    host.assert_cleaned_up(&snapshot, &run_).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_while_waiting_for_the_device_cleans_up() {
    let host = Host::new("32M", &[]).await;
    let snapshot = host.snapshot().await;
    let run_ = host
        .restore(&snapshot, &["--device-timeout", "60s"], None, true)
        .await;
    assert_eq!(run_.code, Some(1));
    assert!(
        run_.stderr
            .contains("interrupted while waiting for the device of vol-"),
        "{}",
        run_.stderr
    );
    assert!(host.restored_dirs().is_empty());
    host.assert_live_untouched();
    host.assert_cleaned_up(&snapshot, &run_).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_snapshot_is_named_and_nothing_is_created() {
    let host = Host::new("32M", &[]).await;
    let run_ = host
        .restore("snap-0123456789abcdef0", &[], None, false)
        .await;
    assert_eq!(run_.code, Some(1));
    assert!(
        run_.stderr
            .contains("DescribeSnapshots of snap-0123456789abcdef0 failed"),
        "{}",
        run_.stderr
    );
    assert_eq!(run_.volume, None);
    host.assert_live_untouched();
}

#[tokio::test(flavor = "multi_thread")]
async fn xfs_snapshot_mounts_without_recovery_beside_its_live_twin() {
    let host = Host::new("32M", &[]).await;
    let snap_disk = LoopDevice::new("320M");
    run("mkfs.xfs", &["-q", "-f", snap_disk.path()]);
    let fill = snap_disk.dir.path().join("fill");
    std::fs::create_dir_all(&fill).unwrap();
    run("mount", &[snap_disk.path(), path_str(&fill)]);
    write(
        &fill.join("alice/home/workspace/a.txt"),
        b"from xfs\n",
        0o640,
        (UID, GID),
    );
    run("umount", &[path_str(&fill)]);
    // The live xfs data volume the snapshot was taken of has the same UUID, and
    // xfs refuses to mount a second filesystem with a UUID already mounted
    // unless told `nouuid`.
    let uuid = run(
        "blkid",
        &["-p", "-s", "UUID", "-o", "value", snap_disk.path()],
    );
    let twin = LoopDevice::new("320M");
    run(
        "mkfs.xfs",
        &[
            "-q",
            "-f",
            "-m",
            &format!("uuid={}", uuid.trim()),
            twin.path(),
        ],
    );
    let twin_mnt = twin.dir.path().join("live");
    std::fs::create_dir_all(&twin_mnt).unwrap();
    run("mount", &[twin.path(), path_str(&twin_mnt)]);

    let snapshot = host.snapshot().await;
    let run_ = host
        .restore(&snapshot, &[], Some(snap_disk.path()), false)
        .await;
    run("umount", &[path_str(&twin_mnt)]);
    assert_eq!(run_.code, Some(0), "{}", run_.stderr);
    assert!(
        run_.stdout.contains("(xfs) read-only (norecovery,nouuid)"),
        "{}",
        run_.stdout
    );
    let target = host.home("alice").join(format!("restored-{}", today()));
    assert_eq!(
        std::fs::read_to_string(target.join("workspace/a.txt")).unwrap(),
        "from xfs\n"
    );
    host.assert_live_untouched();
    host.assert_cleaned_up(&snapshot, &run_).await;
}
