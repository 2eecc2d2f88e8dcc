//! Per-developer disk quotas (`containers.disk_quota`) on real filesystems: a
//! developer writing until "Disk quota exceeded" leaves the others writing and
//! the volume with room, and status and the metric show the use.
//!
//! Two ways in, because a build machine's kernel may lack project quotas (ours
//! has neither `CONFIG_QFMT_V2` nor `CONFIG_XFS_QUOTA`):
//! - `on_this_kernel_{ext4,xfs}`: loop devices on the running kernel. Where it
//!   has project quotas, the whole scenario; where it lacks them (the test says
//!   which), what must hold then: the volume is mounted and works, an ext4
//!   filesystem is left without the features this kernel could not mount, xfs is
//!   mounted without `prjquota` after the kernel refused it, status says why, and
//!   (xfs) the homes still get their project ids.
//! - `in_a_vm_with_quota_support`: boots Debian's stock kernel, which has them,
//!   in qemu (`scripts/quota-vm-kit.sh` builds the kit), with this machine's root
//!   read-only over 9p, and runs `vm_scenarios` (this test binary, ignored
//!   elsewhere) there on four virtio disks: new and existing volumes, ext4 and
//!   xfs, an existing one first while mounted (applies at the next mount), then
//!   after an unmount.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use csagent::config::Config;
use csagent::metrics::collect::HostSample;
use csagent::metrics::datums::{self, AgentSample, Sample};
use csagent::volume::{self, QuotaMode, QuotaStatus, VolumeStatus};

const QUOTA_MIB: u64 = 64;
const QUOTA: u64 = QUOTA_MIB << 20;
const MIB: u64 = 1 << 20;
const UID: u32 = 1000;
/// Marks the kernel command line of the VM `vm_scenarios` runs in.
const VM_FLAG: &str = "csagent_quota_vm=1";

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("csagent=info")
        .with_ansi(false)
        .with_test_writer()
        .try_init();
}

/// A device and a private directory for the mount point and the fstab.
struct Volume {
    dev: String,
    dir: tempfile::TempDir,
}

impl Volume {
    fn new(dev: &str) -> Volume {
        Volume {
            dev: dev.to_string(),
            dir: tempfile::Builder::new()
                .prefix("csagent-quota-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    fn fstab(&self) -> PathBuf {
        self.dir.path().join("fstab")
    }

    fn home(&self, dev: &str) -> PathBuf {
        volume::home_dir(&self.mnt(), dev)
    }

    fn config(&self, fs: &str, quota: bool) -> Config {
        let quota = if quota {
            format!("disk_quota = \"{QUOTA_MIB}MiB\"\n")
        } else {
            String::new()
        };
        let text = format!(
            "[volume]\ndevice = \"{dev}\"\nmount_point = \"{mnt}\"\nfstab = \"{fstab}\"\n\
             by_id_dir = \"{by_id}\"\nfilesystem = \"{fs}\"\nlabel = \"csdata\"\nwait_timeout = \"5s\"\n\
             [containers]\nuid = {UID}\ngid = {UID}\n{quota}\
             [[developer]]\nname = \"dev1\"\n[[developer]]\nname = \"dev2\"\n",
            dev = self.dev,
            mnt = self.mnt().display(),
            fstab = self.fstab().display(),
            by_id = self.dir.path().join("by-id").display(),
        );
        Config::from_toml(&text, Path::new("test.toml")).expect("test config is valid")
    }

    fn prepare(&self, fs: &str, quota: bool) -> VolumeStatus {
        init_logs();
        volume::prepare(&self.config(fs, quota), &|_| {})
            .unwrap_or_else(|e| panic!("prepare {} ({fs}) failed: {e}", self.dev))
    }

    fn fstab_text(&self) -> String {
        std::fs::read_to_string(self.fstab()).unwrap_or_default()
    }

    fn umount(&self) {
        run("umount", &[path_str(&self.mnt())]);
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.mnt()).status();
    }
}

fn quota(status: &VolumeStatus) -> &QuotaStatus {
    status
        .quota
        .as_ref()
        .unwrap_or_else(|| panic!("no quota in the volume status: {status:?}"))
}

/// Writes `mib` MiB of zeros into `path` as the developers' uid, the way a
/// process in their container would. Err carries dd's error output.
fn write_as_developer(path: &Path, mib: u64) -> Result<(), String> {
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={UID}"),
            &format!("--regid={UID}"),
            "--clear-groups",
            "dd",
            "if=/dev/zero",
        ])
        .arg(format!("of={}", path.display()))
        .args(["bs=1M", &format!("count={mib}"), "conv=fsync"])
        .output()
        .expect("run setpriv dd");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn free_bytes(path: &Path) -> u64 {
    let s = nix::sys::statvfs::statvfs(path).expect("statvfs");
    #[allow(clippy::useless_conversion)]
    let free = u64::from(s.blocks_available()) * u64::from(s.fragment_size());
    free
}

fn ext4_features(dev: &str) -> String {
    run("dumpe2fs", &["-h", dev])
        .lines()
        .find(|l| l.starts_with("Filesystem features:"))
        .unwrap_or_default()
        .to_string()
}

/// The project id of `path` (xfs_io works on ext4 too).
fn project_of(path: &Path) -> u32 {
    let out = run("xfs_io", &["-r", "-c", "lsproj", path_str(path)]);
    out.trim()
        .strip_prefix("projid = ")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("lsproj {}: {out:?}", path.display()))
}

/// The whole promise, on a volume whose quota is enforced: dev1 fills theirs
/// and gets EDQUOT, dev2 still writes, the volume has room, and status and the
/// metric show both developers' use.
fn assert_enforced(v: &Volume, fs: &str, status: &VolumeStatus, dev1_before: u64) {
    let q = quota(status);
    assert_eq!(q.mode, QuotaMode::Enforced, "{fs}: {q:?}");
    assert_eq!(q.configured_bytes, Some(QUOTA));
    let p1 = q.developers["dev1"].project.expect("dev1 has a project");
    let p2 = q.developers["dev2"].project.expect("dev2 has a project");
    assert!(p1 >= 1000 && p2 >= 1000 && p1 != p2, "{q:?}");
    assert!(
        v.fstab_text().contains(",prjquota 0 2"),
        "{fs}: fstab line keeps prjquota: {}",
        v.fstab_text()
    );

    // dev1 writes far more than their quota.
    let t = Instant::now();
    let fill = v.home("dev1").join("workspace/fill");
    let err = write_as_developer(&fill, QUOTA_MIB * 2).expect_err("dev1's write must fail");
    // xfs reports a full project quota as ENOSPC (as if the directory tree were
    // a disk of its own); ext4 as EDQUOT.
    let expected = if fs == "xfs" {
        "No space left on device"
    } else {
        "Disk quota exceeded"
    };
    assert!(err.contains(expected), "{fs}: dd said: {err}");
    let written = std::fs::metadata(&fill).map(|m| m.len()).unwrap_or(0);
    assert!(
        written + dev1_before <= QUOTA && written + dev1_before >= QUOTA - 4 * MIB,
        "{fs}: dev1 wrote {written} bytes besides {dev1_before} under a {QUOTA}-byte quota"
    );
    println!(
        "quota: {fs}: dev1 stopped at its quota after {} MiB ({:?}): {}",
        written / MIB,
        t.elapsed(),
        err.lines()
            .find(|l| l.contains(expected))
            .unwrap_or("")
            .trim()
    );
    assert_eq!(
        project_of(&fill),
        p1,
        "{fs}: a new file inherits dev1's project"
    );

    // dev2, and the volume, are unaffected.
    write_as_developer(&v.home("dev2").join("workspace/work"), 8)
        .unwrap_or_else(|e| panic!("{fs}: dev2 must still write: {e}"));
    let free = free_bytes(&v.mnt());
    assert!(free > 100 * MIB, "{fs}: the volume keeps room: {free}");

    // Status (what the agent refreshes every minute) and the metric.
    let observed = volume::observe(&v.config(fs, true));
    let oq = quota(&observed);
    let d1 = &oq.developers["dev1"];
    let d2 = &oq.developers["dev2"];
    assert_eq!(d1.limit_bytes, Some(QUOTA), "{fs}: {oq:?}");
    assert!(
        d1.used_bytes
            .is_some_and(|u| (QUOTA - 4 * MIB..=QUOTA).contains(&u)),
        "{fs}: {d1:?}"
    );
    assert!(
        d2.used_bytes
            .is_some_and(|u| (8 * MIB..16 * MIB).contains(&u)),
        "{fs}: {d2:?}"
    );
    let readings = csagent::observe::quota_readings(&observed);
    let sample = Sample {
        timestamp: SystemTime::now(),
        host: HostSample {
            mem_used_percent: None,
            disks: vec![],
        },
        developers: vec![],
        agent: AgentSample {
            disk_quota: readings,
            ..AgentSample::default()
        },
    };
    let metric = |dev: &str| {
        datums::build("i-0test", &sample)
            .into_iter()
            .find(|d| {
                d.name == datums::DISK_QUOTA_USED_PERCENT
                    && d.dimension(datums::DIM_DEVELOPER) == Some(dev)
            })
            .map(|d| d.value)
    };
    let (m1, m2) = (metric("dev1").unwrap_or(0.0), metric("dev2").unwrap_or(0.0));
    assert!((94.0..=100.0).contains(&m1), "{fs}: dev1's metric {m1}");
    assert!(m2 > 10.0 && m2 < 25.0, "{fs}: dev2's metric {m2}");
    println!(
        "quota: {fs}: status dev1 {} / {} bytes, dev2 {} bytes; metric {} dev1 {m1:.1}%, dev2 {m2:.1}%; volume free {} MiB",
        d1.used_bytes.unwrap_or(0),
        QUOTA,
        d2.used_bytes.unwrap_or(0),
        datums::DISK_QUOTA_USED_PERCENT,
        free / MIB
    );
}

/// Whether the running kernel has project quotas for `fs`, from its config
/// (independent of what the agent decided).
fn kernel_has(fs: &str) -> Option<bool> {
    let release = run("uname", &["-r"]).trim().to_string();
    let config = std::fs::read_to_string(format!("/boot/config-{release}"))
        .ok()
        .or_else(|| {
            let out = Command::new("zcat").arg("/proc/config.gz").output().ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        })?;
    let key = if fs == "ext4" {
        "CONFIG_QFMT_V2="
    } else {
        "CONFIG_XFS_QUOTA=y"
    };
    Some(config.lines().any(|l| l.starts_with(key)))
}

fn on_this_kernel(fs: &str) {
    require_root();
    let disk = LoopDevice::new("512M");
    let v = Volume::new(disk.path());
    let status = v.prepare(fs, true);
    assert!(status.mounted, "{status:?}");
    let q = quota(&status).clone();
    if q.mode == QuotaMode::Enforced {
        println!("quota: this kernel has {fs} project quotas: the whole scenario runs here");
        assert_enforced(&v, fs, &status, 0);
        return;
    }
    let reason = q.reason.clone().unwrap_or_default();
    println!(
        "SANDBOX: this kernel ({}) cannot enforce {fs} project quotas: {reason}. Testing what must hold \
         then; in_a_vm_with_quota_support tests the enforcement.",
        run("uname", &["-r"]).trim()
    );
    assert_eq!(
        kernel_has(fs),
        Some(false),
        "the agent found no {fs} quota support ({reason}) but the kernel config says there is"
    );
    assert_eq!(q.mode, QuotaMode::Unavailable, "{q:?}");
    assert_eq!(q.configured_bytes, Some(QUOTA));
    assert!(
        !v.fstab_text().contains("prjquota"),
        "no prjquota in fstab for a kernel that refuses it: {}",
        v.fstab_text()
    );
    // The volume works for everyone; quota or not.
    write_as_developer(&v.home("dev1").join("workspace/a"), 4).expect("dev1 writes");
    write_as_developer(&v.home("dev2").join("workspace/b"), 4).expect("dev2 writes");
    match fs {
        "ext4" => {
            assert!(reason.contains("CONFIG_QFMT_V2"), "{reason}");
            let features = ext4_features(&v.dev);
            assert!(
                !features.contains(" quota") && !features.contains("project"),
                "features this kernel cannot mount must not be added: {features}"
            );
        }
        _ => {
            // Known from the kernel config, or learnt from a refused mount.
            assert!(
                reason.contains("CONFIG_XFS_QUOTA") || reason.contains("refused"),
                "{reason}"
            );
            // Project ids need no kernel quota support on xfs: they are set, so
            // the first mount with quotas counts the right files.
            let p1 = q.developers["dev1"].project.expect("dev1 has a project");
            let p2 = q.developers["dev2"].project.expect("dev2 has a project");
            assert!(p1 >= 1000 && p2 >= 1000 && p1 != p2, "{q:?}");
            assert_eq!(project_of(&v.home("dev1").join("workspace/a")), p1);
            assert_eq!(project_of(&v.home("dev2").join("workspace/b")), p2);
            println!("quota: xfs: homes in projects {p1} and {p2}; new files inherit them");
        }
    }
    // A second pass changes nothing and says the same.
    let again = v.prepare(fs, true);
    assert_eq!(quota(&again).mode, QuotaMode::Unavailable);
}

#[test]
fn on_this_kernel_ext4() {
    on_this_kernel("ext4");
}

#[test]
fn on_this_kernel_xfs() {
    on_this_kernel("xfs");
}

/// A new (blank) volume: created and mounted with quotas.
fn new_volume(dev: &str, fs: &str) {
    let v = Volume::new(dev);
    let status = v.prepare(fs, true);
    if fs == "ext4" {
        let f = ext4_features(dev);
        assert!(f.contains(" quota") && f.contains("project"), "{f}");
    }
    assert_enforced(&v, fs, &status, 0);

    // The key removed: the limits are lifted (the projects and their use stay).
    let off = v.prepare(fs, false);
    let q = quota(&off);
    assert_eq!(q.mode, QuotaMode::Off, "{fs}: {q:?}");
    assert_eq!(q.developers["dev1"].limit_bytes, None, "{fs}: {q:?}");
    write_as_developer(&v.home("dev1").join("workspace/more"), 8)
        .unwrap_or_else(|e| panic!("{fs}: without a quota dev1 writes again: {e}"));
    println!("quota: {fs}: containers.disk_quota removed: limits lifted, dev1 writes again");
}

/// An existing volume with data, mounted without quotas: the quota applies at
/// the next mount; after an unmount the next pass enforces it and counts what
/// was already there.
fn existing_volume(dev: &str, fs: &str) {
    let v = Volume::new(dev);
    let plain = v.prepare(fs, false);
    assert!(plain.quota.is_none(), "{plain:?}");
    let old = v.home("dev1").join("workspace/old");
    write_as_developer(&old, 20).expect("dev1 writes before the quota");
    let sum_before = run("sha256sum", &[path_str(&old)]);

    // Turned on while mounted.
    let pending = v.prepare(fs, true);
    let q = quota(&pending);
    assert_eq!(q.mode, QuotaMode::NextMount, "{fs}: {q:?}");
    println!(
        "quota: {fs}: existing volume, mounted: {}",
        q.reason.as_deref().unwrap_or("")
    );
    match fs {
        "ext4" => {
            let f = ext4_features(dev);
            assert!(
                !f.contains("project"),
                "never tune2fs a mounted filesystem: {f}"
            );
            assert!(!v.fstab_text().contains("prjquota"), "{}", v.fstab_text());
        }
        _ => {
            assert!(
                v.fstab_text().contains(",prjquota 0 2"),
                "{}",
                v.fstab_text()
            );
            let p1 = q.developers["dev1"].project.expect("dev1 has a project");
            assert_eq!(
                project_of(&old),
                p1,
                "the existing file is in dev1's project"
            );
        }
    }
    write_as_developer(&v.home("dev2").join("workspace/still"), 1).expect("dev2 writes");

    // The admin unmounts (docs/operations.md); the next pass applies it.
    v.umount();
    let status = v.prepare(fs, true);
    assert_eq!(
        run("sha256sum", &[path_str(&old)]),
        sum_before,
        "{fs}: the existing file is intact"
    );
    let used = quota(&status).developers["dev1"].used_bytes.unwrap_or(0);
    assert!(
        used >= 20 * MIB,
        "{fs}: the existing 20 MiB count against dev1's quota: {used}"
    );
    std::fs::remove_file(v.home("dev2").join("workspace/still")).expect("rm");
    if fs == "ext4" {
        // Mounted (by hand, or an old fstab line) without the option: ext4
        // enforces once told to (Q_XQUOTAON), no unmount needed.
        v.umount();
        run(
            "mount",
            &["-o", "noatime,nosuid,nodev", dev, path_str(&v.mnt())],
        );
        let status = v.prepare(fs, true);
        assert_eq!(quota(&status).mode, QuotaMode::Enforced, "{status:?}");
        assert!(
            v.fstab_text().contains(",prjquota 0 2"),
            "{}",
            v.fstab_text()
        );
        println!("quota: ext4: mounted without prjquota: enforcement turned on in place");
    }
    assert_enforced(&v, fs, &status, 20 * MIB);
}

/// Run only inside the VM `in_a_vm_with_quota_support` boots.
#[test]
#[ignore = "runs inside the VM that in_a_vm_with_quota_support boots"]
fn vm_scenarios() {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    assert!(
        cmdline.contains(VM_FLAG),
        "vm_scenarios runs only in the VM in_a_vm_with_quota_support boots"
    );
    println!("quota: VM kernel {}", run("uname", &["-r"]).trim());
    new_volume("/dev/vda", "ext4");
    new_volume("/dev/vdb", "xfs");
    existing_volume("/dev/vdc", "ext4");
    existing_volume("/dev/vdd", "xfs");
}

/// The kit: `$CSAGENT_QUOTA_VM_KIT`, else the CI cache; built when missing.
fn vm_kit() -> PathBuf {
    let dir = std::env::var_os("CSAGENT_QUOTA_VM_KIT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var("CSAGENT_CI_CACHE")
                .unwrap_or_else(|_| "/var/cache/csagent-ci".into());
            Path::new(&cache).join("quota-vm")
        });
    if !dir.join("vmlinuz").exists() || !dir.join("initrd.gz").exists() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/quota-vm-kit.sh");
        run("bash", &[path_str(&script), path_str(&dir)]);
    }
    dir
}

#[test]
fn in_a_vm_with_quota_support() {
    require_root();
    assert!(
        Command::new("qemu-system-x86_64")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "qemu-system-x86_64 is missing: apt-get install qemu-system-x86 (scripts/lib/services.sh \
         ensure_packages installs it)"
    );
    let kit = vm_kit();
    let disks = tempfile::Builder::new()
        .prefix("csagent-quota-vm-")
        .tempdir()
        .expect("tempdir");
    let exe = std::env::current_exe().expect("test binary path");
    let append = format!(
        "console=ttyS0 quiet panic=-1 {VM_FLAG} -- {} --exact vm_scenarios --include-ignored \
         --nocapture --test-threads=1",
        exe.display()
    );
    let mut cmd = Command::new("qemu-system-x86_64");
    // TCG: nested KVM is not everywhere (and hangs on some hosts); boot takes seconds.
    cmd.args(["-accel", "tcg", "-m", "1024", "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(kit.join("vmlinuz"))
        .arg("-initrd")
        .arg(kit.join("initrd.gz"))
        .args(["-append", &append])
        .args([
            "-virtfs",
            "local,path=/,mount_tag=host,security_model=passthrough,readonly=on,multidevs=remap",
        ]);
    for name in ["a", "b", "c", "d"] {
        let img = disks.path().join(format!("{name}.img"));
        run("truncate", &["-s", "512M", path_str(&img)]);
        cmd.args([
            "-drive",
            &format!("file={},if=virtio,format=raw", img.display()),
        ]);
    }
    let log = disks.path().join("console.log");
    let t = Instant::now();
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&log).expect("console log"))
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start qemu");
    let deadline = Duration::from_secs(900);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for qemu") {
            break Some(s);
        }
        if t.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let console = std::fs::read_to_string(&log).unwrap_or_default();
    let console = console.replace('\r', "");
    for line in console.lines().filter(|l| l.starts_with("quota: ")) {
        println!("{line}");
    }
    println!("quota: VM run took {:?}", t.elapsed());
    let tail: String = {
        let lines: Vec<&str> = console.lines().collect();
        lines[lines.len().saturating_sub(80)..].join("\n")
    };
    assert!(status.is_some(), "the VM ran over {deadline:?}:\n{tail}");
    assert!(
        console.contains("test result: ok. 1 passed") && console.contains("QUOTA-VM-EXIT: 0"),
        "vm_scenarios failed in the VM:\n{tail}"
    );
}
