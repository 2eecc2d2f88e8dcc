//! `csagent restore DEVELOPER --snapshot snap-…`: one developer's files from a
//! snapshot of the data volume, copied into `restored-<date>/` in their live
//! home, through a temporary volume. In order, stopping at the first failure:
//!
//! 1. preflight, before any AWS call: root; a configured developer; the data
//!    volume mounted and their home on it; the target name free;
//! 2. [`source`]: the snapshot id (or the recovery point's snapshot ARN);
//! 3. [`ec2`]: the snapshot is completed; this instance's availability zone and
//!    a free device name (DescribeInstances);
//! 4. create the volume from the snapshot in that zone, tagged
//!    `csagent-restore=<project>` (the instance role may only create, attach,
//!    detach and delete volumes with that tag), and wait until it is available;
//! 5. attach it to this instance, wait until attached;
//! 6. wait for its device at its stable NVMe name under `volume.by_id_dir`
//!    ([`crate::volume::attached_device`]); refuse it if it is mounted or is
//!    the data volume;
//! 7. [`mount`]: read-only, no journal replay, in a root-only directory;
//! 8. [`copy`]: into a new directory in the home, never over anything, never
//!    following a symlink, owned by the developer, with progress.
//!
//! Then, and after a failure or an interrupt (Ctrl-C, SIGTERM) at any step,
//! [`cleanup`] undoes what was done: unmount, detach, wait, delete the volume.
//! What it cannot undo is reported with the commands to finish by hand.

mod command;
mod copy;
mod ec2;
mod error;
mod mount;
mod source;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytesize::ByteSize;

pub use command::command;
pub use copy::Counts;
pub use error::RestoreError;

use crate::config::Config;

/// What the admin asked for (see `csagent restore --help`).
#[derive(Debug, Clone)]
pub struct Request {
    pub developer: String,
    pub snapshot: Option<String>,
    pub recovery_point: Option<String>,
    /// Directory in the home; default `restored-<YYYY-MM-DD>` (UTC).
    pub name: Option<String>,
    /// How long to wait for the attached volume's device.
    pub device_timeout: Duration,
    /// How long to wait for EC2 to create, attach or detach the volume.
    pub aws_timeout: Duration,
}

/// Set on Ctrl-C or SIGTERM: the steps stop at the next check, then clean up.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    fn check(&self, during: impl FnOnce() -> String) -> Result<(), RestoreError> {
        if self.is_set() {
            Err(RestoreError::Interrupted { during: during() })
        } else {
            Ok(())
        }
    }
}

/// A restore that finished copying.
#[derive(Debug)]
pub struct Outcome {
    /// The new directory in the live home.
    pub target: PathBuf,
    pub counts: Counts,
    /// Sockets, FIFOs and device nodes that were not copied.
    pub skipped: Vec<PathBuf>,
}

/// The result, and what cleanup could not undo (empty when all is gone).
#[derive(Debug)]
pub struct Report {
    pub result: Result<Outcome, RestoreError>,
    pub leftovers: Vec<String>,
}

/// What exists now and must be undone.
#[derive(Default)]
struct Held {
    client: Option<aws_sdk_ec2::Client>,
    instance: Option<String>,
    volume: Option<String>,
    mount: Option<PathBuf>,
}

/// Runs a restore and always cleans up. `say` gets one line per step and the
/// copy's progress.
pub async fn run(config: &Config, req: &Request, cancel: &Cancel, say: &dyn Fn(&str)) -> Report {
    let mut held = Held::default();
    let result = steps(config, req, cancel, say, &mut held).await;
    let leftovers = cleanup(&mut held, req.aws_timeout, say).await;
    Report { result, leftovers }
}

/// Checked before any AWS call, so a refusal leaves nothing behind.
struct Preflight {
    home: PathBuf,
    name: String,
    source: source::Source,
    data_device: u64,
}

fn preflight(config: &Config, req: &Request) -> Result<Preflight, RestoreError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(RestoreError::NotRoot);
    }
    let source = match (&req.snapshot, &req.recovery_point) {
        (Some(s), None) => source::from_snapshot(s)?,
        (None, Some(arn)) => source::from_recovery_point(arn)?,
        _ => {
            return Err(RestoreError::Usage(
                "give exactly one of --snapshot and --recovery-point".to_string(),
            ));
        }
    };
    let developer = &req.developer;
    if !config.developers.iter().any(|d| &d.name == developer) {
        let names: Vec<&str> = config.developers.iter().map(|d| d.name.as_str()).collect();
        return Err(RestoreError::Usage(format!(
            "{developer:?} is not a developer in {} (developers: {})",
            config.path.display(),
            names.join(", ")
        )));
    }
    let mount_point = &config.volume.mount_point;
    let home = crate::volume::home_dir(mount_point, developer);
    let live = |reason: String| RestoreError::LiveHome {
        developer: developer.clone(),
        path: home.clone(),
        reason,
    };
    let Some(data_device) = crate::volume::mounted_device(config) else {
        return Err(live(format!(
            "the data volume is not mounted at {}; start csagent (or `csagent run --once`) first",
            mount_point.display()
        )));
    };
    match std::fs::symlink_metadata(&home) {
        Ok(m) if m.is_dir() && std::os::unix::fs::MetadataExt::dev(&m) == data_device => {}
        Ok(m) if m.is_dir() => return Err(live("it is not on the data volume".to_string())),
        Ok(_) => return Err(live("it is not a directory".to_string())),
        Err(e) => return Err(live(format!("{e}"))),
    }
    let name = match &req.name {
        Some(n) => n.clone(),
        None => format!("restored-{}", today()),
    };
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(RestoreError::Usage(format!(
            "--name {name:?} must be one directory name"
        )));
    }
    let target = home.join(&name);
    if std::fs::symlink_metadata(&target).is_ok() {
        return Err(RestoreError::TargetExists { path: target });
    }
    Ok(Preflight {
        home,
        name,
        source,
        data_device,
    })
}

/// Today in UTC, YYYY-MM-DD.
fn today() -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    now.get(..10).unwrap_or(&now).to_string()
}

fn size(bytes: u64) -> String {
    ByteSize(bytes).display().iec().to_string()
}

async fn steps(
    config: &Config,
    req: &Request,
    cancel: &Cancel,
    say: &dyn Fn(&str),
    held: &mut Held,
) -> Result<Outcome, RestoreError> {
    let pre = preflight(config, req)?;
    let developer = req.developer.as_str();
    let snap = pre.source.snapshot.as_str();
    let target = pre.home.join(&pre.name);

    let identity = crate::aws::identity(config).await?;
    if let Some(r) = pre
        .source
        .region
        .as_deref()
        .filter(|r| *r != identity.region)
    {
        return Err(RestoreError::Usage(format!(
            "{snap} is in {r}, this host in {}; copy it here first: aws ec2 copy-snapshot \
             --source-region {r} --source-snapshot-id {snap} --region {}",
            identity.region, identity.region
        )));
    }
    let sdk = crate::aws::sdk_config(config, &identity.region).await;
    let client = aws_sdk_ec2::Client::new(&sdk);
    held.client = Some(client.clone());
    held.instance = Some(identity.instance_id.clone());

    say(&format!(
        "restoring {developer}'s files from {snap} into {}",
        target.display()
    ));
    let snapshot = ec2::snapshot(&client, snap).await?;
    let instance = ec2::instance(&client, &identity.instance_id).await?;
    let device_name =
        ec2::free_device(&instance.device_names).ok_or_else(|| RestoreError::NoFreeDevice {
            instance: instance.id.clone(),
        })?;
    cancel.check(|| "before creating the volume".to_string())?;

    say(&format!(
        "creating a volume from {snap} ({}, taken {}) in {}",
        snapshot
            .size_gib
            .map_or("size unknown".to_string(), |g| format!("{g} GiB")),
        snapshot
            .start_time
            .as_deref()
            .unwrap_or("at an unknown time"),
        instance.availability_zone
    ));
    let volume = ec2::create_volume(
        &client,
        &snapshot.id,
        &instance.availability_zone,
        &config.project,
        developer,
    )
    .await?;
    held.volume = Some(volume.clone());
    say(&format!("created {volume}; waiting until it is available"));
    ec2::wait_for(
        &client,
        &volume,
        "being created",
        "become available",
        req.aws_timeout,
        Some(cancel),
        |v| ec2::state(v) == "available",
    )
    .await?;

    say(&format!(
        "attaching {volume} to {} as {device_name}",
        instance.id
    ));
    ec2::attach(&client, &volume, &instance.id, &device_name).await?;
    ec2::wait_for(
        &client,
        &volume,
        "being attached",
        "attach",
        req.aws_timeout,
        Some(cancel),
        |v| {
            v.attachments().iter().any(|a| {
                a.instance_id() == Some(instance.id.as_str())
                    && a.state().is_some_and(|s| s.as_str() == "attached")
            })
        },
    )
    .await?;

    let by_id = crate::volume::attached_device_path(config, &volume);
    say(&format!(
        "waiting for {volume}'s device at {}",
        by_id.display()
    ));
    let (device, rdev) =
        wait_device(config, &volume, &device_name, req.device_timeout, cancel).await?;
    mount::check_free(&device, rdev, &volume, Some(pre.data_device))?;
    let fstype = mount::filesystem(&device, &volume)?;
    say(&format!(
        "mounting {} ({fstype}) read-only ({})",
        device.display(),
        mount::options(fstype)
    ));
    let dir = tokio::task::block_in_place(|| mount::mount(&device, fstype, &volume))?;
    held.mount = Some(dir.clone());
    cancel.check(|| "after mounting".to_string())?;

    let items = copy::plan(&dir, developer).map_err(|found| RestoreError::NothingToRestore {
        snapshot: snap.to_string(),
        developer: developer.to_string(),
        found,
    })?;
    let total =
        tokio::task::block_in_place(|| copy::scan(&items)).map_err(|e| RestoreError::Copy {
            developer: developer.to_string(),
            path: dir.clone(),
            message: format!("cannot read the snapshot: {e}"),
            target: target.clone(),
        })?;
    check_space(&pre.home, developer, total.bytes)?;
    say(&format!(
        "copying {} files, {} directories, {} symlinks ({}) from {} into {}",
        total.files,
        total.dirs,
        total.symlinks,
        size(total.bytes),
        items
            .iter()
            .map(|i| i
                .from
                .strip_prefix(&dir)
                .unwrap_or(&i.from)
                .display()
                .to_string())
            .collect::<Vec<_>>()
            .join(" and "),
        target.display()
    ));
    let owner = copy::Owner {
        uid: config.containers.uid,
        gid: config.containers.gid,
    };
    let mut progress = |done: &Counts| {
        say(&format!(
            "copied {}/{} files, {} of {}",
            done.files,
            total.files,
            size(done.bytes),
            size(total.bytes)
        ));
    };
    let copied = tokio::task::block_in_place(|| {
        copy::copy(&items, &pre.home, &pre.name, owner, cancel, &mut progress)
    });
    let (counts, skipped) = copied.map_err(|f| {
        if f.interrupted {
            RestoreError::Interrupted {
                during: format!(
                    "while copying (the incomplete copy is left in {})",
                    target.display()
                ),
            }
        } else if !f.target_made {
            RestoreError::LiveHome {
                developer: developer.to_string(),
                path: pre.home.clone(),
                reason: format!("{}: {}", f.path.display(), f.message),
            }
        } else {
            RestoreError::Copy {
                developer: developer.to_string(),
                path: in_snapshot(&dir, &f.path),
                message: f.message,
                target: target.clone(),
            }
        }
    })?;
    Ok(Outcome {
        target,
        counts,
        skipped: skipped.iter().map(|p| in_snapshot(&dir, p)).collect(),
    })
}

/// A path under the temporary mount as the snapshot names it (`dev3/home/x`):
/// the mount is gone by the time the admin reads the message.
fn in_snapshot(mount: &Path, path: &Path) -> PathBuf {
    path.strip_prefix(mount)
        .map_or_else(|_| path.to_path_buf(), Path::to_path_buf)
}

/// Refuses a copy that cannot fit, before writing anything (bytes only; a
/// filesystem out of inodes still fails during the copy, and is cleaned up).
fn check_space(home: &Path, developer: &str, needed: u64) -> Result<(), RestoreError> {
    let Ok(vfs) = nix::sys::statvfs::statvfs(home) else {
        return Ok(());
    };
    // c_ulong and fsblkcnt_t are u64 here but not on every target.
    #[allow(clippy::useless_conversion)]
    let free = u64::from(vfs.blocks_available()).saturating_mul(u64::from(vfs.fragment_size()));
    if needed > free {
        return Err(RestoreError::NoSpace {
            developer: developer.to_string(),
            needed: size(needed),
            free: size(free),
        });
    }
    Ok(())
}

/// Polls for the attached volume's device until it appears or `timeout` passes.
async fn wait_device(
    config: &Config,
    volume: &str,
    device_name: &str,
    timeout: Duration,
    cancel: &Cancel,
) -> Result<(PathBuf, u64), RestoreError> {
    let start = Instant::now();
    loop {
        if let Some(found) = crate::volume::attached_device(config, volume)? {
            return Ok(found);
        }
        if start.elapsed() >= timeout {
            return Err(RestoreError::Timeout {
                what: format!("the device of volume {volume} (attached as {device_name})"),
                happen: "appear",
                waited: humantime::format_duration(timeout).to_string(),
                detail: format!(
                    " at {}; csagent finds EBS volumes by their NVMe name (Nitro instances)",
                    crate::volume::attached_device_path(config, volume).display()
                ),
            });
        }
        cancel.check(|| format!("while waiting for the device of {volume}"))?;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Unmounts, detaches and deletes whatever `held` names, ignoring interrupts.
/// Returns what is left, each with how to finish by hand.
async fn cleanup(held: &mut Held, timeout: Duration, say: &dyn Fn(&str)) -> Vec<String> {
    let mut left = Vec::new();
    if let Some(dir) = held.mount.take() {
        say(&format!("unmounting {}", dir.display()));
        if let Err(e) = tokio::task::block_in_place(|| mount::unmount(&dir)) {
            left.push(format!(
                "{e}; then: umount {} && rmdir {}",
                dir.display(),
                dir.display()
            ));
            // Never detach a volume that is still mounted.
            if let Some(v) = held.volume.take() {
                left.push(format!(
                    "volume {v} stays attached (it is still mounted); after unmounting: aws ec2 \
                     detach-volume --volume-id {v} && aws ec2 wait volume-available --volume-ids \
                     {v} && aws ec2 delete-volume --volume-id {v}"
                ));
            }
            return left;
        }
    }
    let (Some(volume), Some(client)) = (held.volume.take(), held.client.as_ref()) else {
        return left;
    };
    let instance = held.instance.clone().unwrap_or_default();
    if let Err(e) = remove_volume(client, &volume, &instance, timeout, say).await {
        left.push(format!(
            "volume {volume}: {e}; finish by hand: aws ec2 detach-volume --volume-id {volume}; \
             aws ec2 wait volume-available --volume-ids {volume}; aws ec2 delete-volume \
             --volume-id {volume}"
        ));
    }
    left
}

/// Detach (when attached), wait until available, delete.
async fn remove_volume(
    client: &aws_sdk_ec2::Client,
    volume: &str,
    instance: &str,
    timeout: Duration,
    say: &dyn Fn(&str),
) -> Result<(), RestoreError> {
    let Some(v) = ec2::describe(client, volume).await? else {
        return Ok(());
    };
    if ec2::is_attached(&v) {
        say(&format!("detaching {volume} from {instance}"));
        ec2::detach(client, volume, instance).await?;
    }
    if ec2::state(&v) != "available" {
        ec2::wait_for(
            client,
            volume,
            "being detached",
            "become available",
            timeout,
            None,
            |v| ec2::state(v) == "available" && !ec2::is_attached(v),
        )
        .await?;
    }
    say(&format!("deleting {volume}"));
    ec2::delete(client, volume).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn today_is_a_date() {
        let t = today();
        assert_eq!(t.len(), 10, "{t}");
        assert_eq!(&t[4..5], "-");
    }
}
