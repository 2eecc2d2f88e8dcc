//! AWS Backup of the data volume: a vault, a daily plan whose retention is the
//! BackupRetentionDays parameter, and a selection of the data volume by ARN using the backup
//! service role (see `iam`).
//!
//! The vault is kept when the stack is deleted: it holds the recovery points (AWS refuses to
//! delete a vault that is not empty anyway), which still expire on their own lifecycle. So its
//! name carries the stack id, `<project>-vault-<stack id>`, and a stack re-created under the
//! same project creates a new vault instead of colliding with the kept one; or it keeps using
//! the old one through the ExistingBackupVaultName Parameter.

use crate::cfn::{
    Resources, get_att, if_, r#ref, resource, skip_checkov, sub, sub_with_stack_suffix, tag_map,
    with,
};
use crate::settings::Host;
use serde_json::{Value, json};

/// Daily at 02:00 UTC.
pub const SCHEDULE: &str = "cron(0 2 * * ? *)";

/// Adds the vault and the plan (each host adds its selection: [`add_selection`]).
pub fn add(res: &mut Resources) {
    let vault = resource(
        "AWS::Backup::BackupVault",
        json!({
            // At most 32 + 7 + 8 = 47 of the 50 characters a vault name may have.
            "BackupVaultName": sub_with_stack_suffix("${ProjectName}-vault-${StackSuffix}"),
            "BackupVaultTags": tag_map(&[("Name", sub("${ProjectName}-vault"))]),
        }),
    );
    let vault = with(vault, "Condition", json!("CreateBackupVault"));
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
                        "TargetBackupVault": vault_name(),
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
}

/// Adds host `host`'s selection of its data volume (`BackupSelection` named `DataVolume` for
/// host 1; `Host2BackupSelection` named `Host2DataVolume`, …).
pub fn add_selection(res: &mut Resources, host: &Host) {
    let volume = host.id("DataVolume");
    res.add(
        host.id("BackupSelection"),
        resource(
            "AWS::Backup::BackupSelection",
            json!({
                "BackupPlanId": r#ref("BackupPlan"),
                "BackupSelection": {
                    "SelectionName": volume,
                    "IamRoleArn": get_att("BackupRole", "Arn"),
                    "Resources": [data_volume_arn(&volume)],
                },
            }),
        ),
    );
}

/// Name of the vault the plan writes to: the stack's, or ExistingBackupVaultName.
pub fn vault_name() -> Value {
    if_(
        "CreateBackupVault",
        r#ref("BackupVault"),
        r#ref("ExistingBackupVaultName"),
    )
}

/// ARN of the data volume with logical id `volume`.
pub fn data_volume_arn(volume: &str) -> Value {
    sub(format!(
        "arn:${{AWS::Partition}}:ec2:${{AWS::Region}}:${{AWS::AccountId}}:volume/${{{volume}}}"
    ))
}
