//! AWS Backup of the data volume: a vault (kept when the stack is deleted, with its recovery
//! points), a daily plan whose retention is the BackupRetentionDays parameter, and a selection of
//! the data volume by ARN using the backup service role (see `iam`).

use crate::cfn::{Resources, get_att, r#ref, resource, skip_checkov, sub, tag_map, with};
use serde_json::{Value, json};

/// Daily at 02:00 UTC.
pub const SCHEDULE: &str = "cron(0 2 * * ? *)";

/// Adds the vault, the plan and the selection.
pub fn add(res: &mut Resources) {
    let vault = resource(
        "AWS::Backup::BackupVault",
        json!({
            "BackupVaultName": sub("${ProjectName}-vault"),
            "BackupVaultTags": tag_map(&[("Name", sub("${ProjectName}-vault"))]),
        }),
    );
    let vault = with(vault, "DeletionPolicy", json!("Retain"));
    let vault = with(vault, "UpdateReplacePolicy", json!("Retain"));
    res.add(
        "BackupVault",
        skip_checkov(
            vault,
            &[(
                "CKV_AWS_166",
                "The vault uses AWS Backup's default key; the EBS snapshots it holds are already encrypted with the volume's key. A customer managed key adds cost without narrowing access.",
            )],
        ),
    );
    res.add(
        "BackupPlan",
        resource(
            "AWS::Backup::BackupPlan",
            json!({
                "BackupPlan": {
                    "BackupPlanName": sub("${ProjectName}-daily"),
                    "BackupPlanRule": [{
                        "RuleName": "DailyDataVolume",
                        "TargetBackupVault": r#ref("BackupVault"),
                        "ScheduleExpression": SCHEDULE,
                        "StartWindowMinutes": 60,
                        "CompletionWindowMinutes": 480,
                        "Lifecycle": { "DeleteAfterDays": r#ref("BackupRetentionDays") },
                        "RecoveryPointTags": tag_map(&[]),
                    }],
                },
                "BackupPlanTags": tag_map(&[("Name", sub("${ProjectName}-daily"))]),
            }),
        ),
    );
    res.add(
        "BackupSelection",
        resource(
            "AWS::Backup::BackupSelection",
            json!({
                "BackupPlanId": r#ref("BackupPlan"),
                "BackupSelection": {
                    "SelectionName": "DataVolume",
                    "IamRoleArn": get_att("BackupRole", "Arn"),
                    "Resources": [data_volume_arn()],
                },
            }),
        ),
    );
}

/// ARN of the data volume.
pub fn data_volume_arn() -> Value {
    sub("arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:volume/${DataVolume}")
}
