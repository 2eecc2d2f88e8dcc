//! The EC2 calls of a restore: check the snapshot, find this instance's
//! availability zone and a free device name, create the tagged temporary volume,
//! attach, detach and delete it, and wait for each state change.
//!
//! Every wait polls DescribeVolumes (EC2 has no push for these) until the state
//! is reached, the volume goes to `error`, the deadline passes, or — outside
//! cleanup — the admin interrupts.

use std::time::{Duration, Instant};

use aws_sdk_ec2::Client;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification, Volume, VolumeType};

use super::{Cancel, RestoreError};
use crate::retry::error_chain;

/// How often a wait asks EC2 again.
const POLL: Duration = Duration::from_secs(2);

/// Device names EC2 recommends for EBS data volumes on Linux.
const DEVICE_LETTERS: std::ops::RangeInclusive<char> = 'f'..='p';

/// The snapshot, as DescribeSnapshots sees it.
#[derive(Debug, Clone)]
pub(super) struct Snapshot {
    pub id: String,
    pub size_gib: Option<i32>,
    pub start_time: Option<String>,
}

/// This instance: where the volume must be created, and the names in use.
#[derive(Debug, Clone)]
pub(super) struct Instance {
    pub id: String,
    pub availability_zone: String,
    pub device_names: Vec<String>,
}

/// "CreateVolume … failed: <code>: <message>".
fn aws_error<E, R>(action: &'static str, what: impl Into<String>, e: SdkError<E, R>) -> RestoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let message = match e.as_service_error() {
        Some(se) => format!(
            "{}: {}",
            se.code().unwrap_or("error"),
            se.message().unwrap_or("(no message)")
        ),
        None => error_chain(&e),
    };
    RestoreError::Aws {
        action,
        what: what.into(),
        message,
    }
}

/// The snapshot must exist and be complete.
pub(super) async fn snapshot(client: &Client, id: &str) -> Result<Snapshot, RestoreError> {
    let out = client
        .describe_snapshots()
        .snapshot_ids(id)
        .send()
        .await
        .map_err(|e| aws_error("DescribeSnapshots", format!("of {id}"), e))?;
    let Some(s) = out.snapshots().first() else {
        return Err(RestoreError::Aws {
            action: "DescribeSnapshots",
            what: format!("of {id}"),
            message: "no such snapshot in this region".to_string(),
        });
    };
    let state = s.state().map(|s| s.as_str()).unwrap_or("unknown");
    if state != "completed" {
        return Err(RestoreError::SnapshotNotReady {
            snapshot: id.to_string(),
            state: state.to_string(),
            progress: s
                .progress()
                .map(|p| format!(" ({p} done)"))
                .unwrap_or_default(),
        });
    }
    Ok(Snapshot {
        id: id.to_string(),
        size_gib: s.volume_size(),
        start_time: s.start_time().map(|t| t.to_string()),
    })
}

/// This instance's availability zone and the device names its block device
/// mappings use.
pub(super) async fn instance(client: &Client, id: &str) -> Result<Instance, RestoreError> {
    let out = client
        .describe_instances()
        .instance_ids(id)
        .send()
        .await
        .map_err(|e| aws_error("DescribeInstances", format!("of this instance {id}"), e))?;
    let Some(i) = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .find(|i| i.instance_id() == Some(id))
    else {
        return Err(RestoreError::Aws {
            action: "DescribeInstances",
            what: format!("of this instance {id}"),
            message: "no such instance (check instance_id in the config)".to_string(),
        });
    };
    let availability_zone = i
        .placement()
        .and_then(|p| p.availability_zone())
        .ok_or_else(|| RestoreError::Aws {
            action: "DescribeInstances",
            what: format!("of this instance {id}"),
            message: "the answer has no availability zone".to_string(),
        })?
        .to_string();
    let device_names = i
        .block_device_mappings()
        .iter()
        .filter_map(|m| m.device_name().map(str::to_string))
        .collect();
    Ok(Instance {
        id: id.to_string(),
        availability_zone,
        device_names,
    })
}

/// The first of /dev/sdf../dev/sdp that no mapping uses. `/dev/xvdg` and
/// `/dev/sdg` are the same slot to EC2, so both spellings count as used.
pub(super) fn free_device(used: &[String]) -> Option<String> {
    let taken = |letter: char| {
        used.iter().any(|u| {
            let tail = u
                .strip_prefix("/dev/sd")
                .or_else(|| u.strip_prefix("/dev/xvd"))
                .or_else(|| u.strip_prefix("sd"))
                .or_else(|| u.strip_prefix("xvd"));
            tail.is_some_and(|t| t.starts_with(letter))
        })
    };
    DEVICE_LETTERS
        .into_iter()
        .find(|l| !taken(*l))
        .map(|l| format!("/dev/sd{l}"))
}

/// Creates the temporary volume from `snapshot` in `zone`, with the restore tag
/// (the only tag key the instance role may create a volume with).
pub(super) async fn create_volume(
    client: &Client,
    snapshot: &str,
    zone: &str,
    project: &str,
    developer: &str,
) -> Result<String, RestoreError> {
    let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
    let tags = TagSpecification::builder()
        .resource_type(ResourceType::Volume)
        .tags(tag(csagent_contract::RESTORE_TAG, project))
        .tags(tag("Name", &format!("{project}-restore-{developer}")))
        .tags(tag("csagent-restore-developer", developer))
        .tags(tag("csagent-restore-snapshot", snapshot))
        .build();
    let out = client
        .create_volume()
        .snapshot_id(snapshot)
        .availability_zone(zone)
        .volume_type(VolumeType::Gp3)
        .tag_specifications(tags)
        .send()
        .await
        .map_err(|e| aws_error("CreateVolume", format!("from {snapshot} in {zone}"), e))?;
    out.volume_id()
        .map(str::to_string)
        .ok_or_else(|| RestoreError::Aws {
            action: "CreateVolume",
            what: format!("from {snapshot} in {zone}"),
            message: "the answer has no volume id".to_string(),
        })
}

pub(super) async fn attach(
    client: &Client,
    volume: &str,
    instance: &str,
    device: &str,
) -> Result<(), RestoreError> {
    client
        .attach_volume()
        .volume_id(volume)
        .instance_id(instance)
        .device(device)
        .send()
        .await
        .map_err(|e| {
            aws_error(
                "AttachVolume",
                format!("of {volume} to {instance} as {device}"),
                e,
            )
        })?;
    Ok(())
}

pub(super) async fn detach(
    client: &Client,
    volume: &str,
    instance: &str,
) -> Result<(), RestoreError> {
    client
        .detach_volume()
        .volume_id(volume)
        .instance_id(instance)
        .send()
        .await
        .map_err(|e| aws_error("DetachVolume", format!("of {volume} from {instance}"), e))?;
    Ok(())
}

pub(super) async fn delete(client: &Client, volume: &str) -> Result<(), RestoreError> {
    client
        .delete_volume()
        .volume_id(volume)
        .send()
        .await
        .map_err(|e| aws_error("DeleteVolume", format!("of {volume}"), e))?;
    Ok(())
}

/// The volume now; `None` once it is gone.
pub(super) async fn describe(
    client: &Client,
    volume: &str,
) -> Result<Option<Volume>, RestoreError> {
    match client.describe_volumes().volume_ids(volume).send().await {
        Ok(out) => Ok(out.volumes().first().cloned()),
        Err(e) if e.as_service_error().and_then(|s| s.code()) == Some("InvalidVolume.NotFound") => {
            Ok(None)
        }
        Err(e) => Err(aws_error("DescribeVolumes", format!("of {volume}"), e)),
    }
}

/// The volume's state ("available", "in-use", ...).
pub(super) fn state(v: &Volume) -> &str {
    v.state().map(|s| s.as_str()).unwrap_or("unknown")
}

/// True when some attachment of the volume is attaching, attached or busy.
pub(super) fn is_attached(v: &Volume) -> bool {
    v.attachments().iter().any(|a| {
        a.state()
            .is_some_and(|s| matches!(s.as_str(), "attaching" | "attached" | "busy"))
    })
}

/// Polls until `done(volume)` holds. `doing` is for messages ("being created").
/// `cancel` (None during cleanup) ends the wait early.
pub(super) async fn wait_for(
    client: &Client,
    volume: &str,
    doing: &'static str,
    happen: &'static str,
    timeout: Duration,
    cancel: Option<&Cancel>,
    done: impl Fn(&Volume) -> bool,
) -> Result<(), RestoreError> {
    let start = Instant::now();
    loop {
        let Some(v) = describe(client, volume).await? else {
            return Err(RestoreError::VolumeState {
                volume: volume.to_string(),
                state: "deleted".to_string(),
                doing,
            });
        };
        if done(&v) {
            return Ok(());
        }
        if state(&v) == "error" {
            return Err(RestoreError::VolumeState {
                volume: volume.to_string(),
                state: "error".to_string(),
                doing,
            });
        }
        if start.elapsed() >= timeout {
            return Err(RestoreError::Timeout {
                what: format!("volume {volume}"),
                happen,
                waited: humantime::format_duration(timeout).to_string(),
                detail: format!(" (it is {})", state(&v)),
            });
        }
        if let Some(c) = cancel {
            c.check(|| format!("while volume {volume} was {doing}"))?;
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_device_skips_both_spellings_of_a_used_slot() {
        let used = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(free_device(&[]).as_deref(), Some("/dev/sdf"));
        assert_eq!(
            free_device(&used(&["/dev/sda1", "/dev/sdf"])).as_deref(),
            Some("/dev/sdg")
        );
        assert_eq!(
            free_device(&used(&["/dev/xvda", "/dev/xvdf", "sdg", "/dev/sdh"])).as_deref(),
            Some("/dev/sdi")
        );
        let all: Vec<String> = ('f'..='p').map(|l| format!("/dev/sd{l}")).collect();
        assert_eq!(free_device(&all), None);
    }
}
