//! What to restore from: a snapshot id, or an AWS Backup recovery point ARN,
//! which for an EBS volume is the ARN of the snapshot AWS Backup made
//! (`arn:aws:ec2:REGION::snapshot/snap-…`). Pure parsing, so it is unit-tested.

use super::RestoreError;

/// The snapshot a restore reads, and the region its ARN names (if given as one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Source {
    pub snapshot: String,
    pub region: Option<String>,
}

/// `snap-` and 8 or 17 hex digits.
fn is_snapshot_id(s: &str) -> bool {
    s.strip_prefix("snap-").is_some_and(|hex| {
        matches!(hex.len(), 8 | 17) && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// `--snapshot snap-…`.
pub(super) fn from_snapshot(id: &str) -> Result<Source, RestoreError> {
    if !is_snapshot_id(id) {
        return Err(RestoreError::Usage(format!(
            "--snapshot {id:?} is not a snapshot id (snap- and 17 hex digits); list them with \
             `aws ec2 describe-snapshots --owner-ids self` or `aws backup \
             list-recovery-points-by-backup-vault`"
        )));
    }
    Ok(Source {
        snapshot: id.to_string(),
        region: None,
    })
}

/// `--recovery-point arn:PARTITION:ec2:REGION::snapshot/snap-…`.
pub(super) fn from_recovery_point(arn: &str) -> Result<Source, RestoreError> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let refuse = |why: &str| {
        RestoreError::Usage(format!(
            "--recovery-point {arn:?}: {why}. An AWS Backup recovery point of an EBS volume is \
             the ARN of its snapshot, arn:aws:ec2:REGION::snapshot/snap-… (the RecoveryPointArn \
             that `aws backup list-recovery-points-by-backup-vault` prints)"
        ))
    };
    if parts.len() != 6 || parts[0] != "arn" {
        return Err(refuse("not an ARN"));
    }
    if parts[2] == "backup" {
        return Err(refuse(
            "this is a recovery point that AWS Backup keeps itself (a logically air-gapped \
             vault, or not an EBS volume); restore it to a snapshot or volume with AWS Backup \
             first, then pass that snapshot",
        ));
    }
    let snapshot = match (parts[2], parts[5].strip_prefix("snapshot/")) {
        ("ec2", Some(id)) if is_snapshot_id(id) => id,
        _ => return Err(refuse("not an EC2 snapshot ARN")),
    };
    Ok(Source {
        snapshot: snapshot.to_string(),
        region: Some(parts[3].to_string()).filter(|r| !r.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_ids() {
        assert_eq!(
            from_snapshot("snap-0123456789abcdef0").unwrap().snapshot,
            "snap-0123456789abcdef0"
        );
        assert!(from_snapshot("snap-12345678").is_ok());
        for bad in [
            "vol-0123456789abcdef0",
            "snap-xyz",
            "snap-0123",
            "",
            "snap-0123456789abcdef0/..",
        ] {
            assert!(from_snapshot(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn recovery_points_of_ebs_are_snapshot_arns() {
        let s = from_recovery_point("arn:aws:ec2:ap-southeast-7::snapshot/snap-0123456789abcdef0")
            .unwrap();
        assert_eq!(s.snapshot, "snap-0123456789abcdef0");
        assert_eq!(s.region.as_deref(), Some("ap-southeast-7"));
        let e = from_recovery_point(
            "arn:aws:backup:ap-southeast-7:123456789012:recovery-point:1EB3B5E7-9EB0-435A-A80B-108B488B0D45",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("AWS Backup keeps itself"), "{e}");
        for bad in [
            "snap-0123456789abcdef0",
            "arn:aws:ec2:ap-southeast-7:123456789012:volume/vol-0123456789abcdef0",
            "arn:aws:ec2:ap-southeast-7::snapshot/nope",
        ] {
            assert!(from_recovery_point(bad).is_err(), "{bad}");
        }
    }
}
