//! Teardown and re-create (issue 19.6), on the template: every DeletionPolicy and
//! UpdateReplacePolicy is one of the deliberate ones listed here; what a deleted stack keeps has
//! a name a re-created stack cannot collide with (a stack-id suffix) and can be adopted
//! instead (an Existing* parameter); the log groups are deleted only after the host, so a
//! still-running agent cannot create them again outside the stack; the data volume can start
//! from a snapshot. tests/infra_deploy.rs creates, deletes and creates again in moto.

mod common;

use common::resolve;
use infra::{Settings, build_template};
use serde_json::{Value, json};
use std::collections::BTreeSet;

fn template() -> Value {
    let s = Settings {
        developers: 3,
        ..Settings::default()
    };
    build_template(&s)
}

/// The deliberate policies, by resource type: (DeletionPolicy, UpdateReplacePolicy).
fn deliberate(kind: &str) -> Option<(&'static str, &'static str)> {
    Some(match kind {
        // A final snapshot of the developers' homes, on delete and on replacement.
        "AWS::EC2::Volume" => ("Snapshot", "Snapshot"),
        // Holds the recovery points (AWS refuses to delete a vault that is not empty).
        "AWS::Backup::BackupVault" => ("Retain", "Retain"),
        // The team's images.
        "AWS::ECR::Repository" => ("Retain", "Retain"),
        // Generated passwords and the Claude key (CloudFormation deletes them without a
        // recovery window, so the names are free at once); logs have LogRetentionDays; sign-in
        // identities are invited again.
        "AWS::SecretsManager::Secret"
        | "AWS::Logs::LogGroup"
        | "AWS::Cognito::UserPool"
        | "AWS::Cognito::UserPoolClient"
        | "AWS::Cognito::UserPoolDomain" => ("Delete", "Delete"),
        _ => return None,
    })
}

#[test]
fn every_deletion_policy_is_deliberate() {
    let t = template();
    for (id, r) in t["Resources"].as_object().unwrap() {
        let kind = r["Type"].as_str().unwrap();
        let policies = (
            r.get("DeletionPolicy").and_then(Value::as_str),
            r.get("UpdateReplacePolicy").and_then(Value::as_str),
        );
        match deliberate(kind) {
            Some((delete, replace)) => assert_eq!(
                policies,
                (Some(delete), Some(replace)),
                "{id} ({kind}): explicit and as listed"
            ),
            // Everything else holds nothing worth keeping: the default (Delete).
            None => assert_eq!(
                policies,
                (None, None),
                "{id} ({kind}) has a policy not listed here"
            ),
        }
    }
}

/// The `Fn::Sub` form `[text, {StackSuffix: <first group of the stack id's UUID>}]`.
fn stack_suffixed(v: &Value) -> &str {
    let sub = v["Fn::Sub"]
        .as_array()
        .unwrap_or_else(|| panic!("not a Fn::Sub list: {v}"));
    assert_eq!(
        sub[1]["StackSuffix"],
        json!({ "Fn::Select": [0, { "Fn::Split": ["-",
            { "Fn::Select": [2, { "Fn::Split": ["/", { "Ref": "AWS::StackId" }] }] }] }] }),
    );
    let text = sub[0].as_str().unwrap();
    assert!(text.contains("${StackSuffix}"), "{text}");
    text
}

#[test]
fn what_a_deleted_stack_keeps_does_not_block_creating_it_again() {
    let t = template();
    let res = &t["Resources"];
    let kept: BTreeSet<&str> = res
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["DeletionPolicy"] == "Retain" || r["UpdateReplacePolicy"] == "Retain")
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(kept, BTreeSet::from(["BackupVault", "TeamImageRepository"]));

    let vault = &res["BackupVault"];
    assert_eq!(
        stack_suffixed(&vault["Properties"]["BackupVaultName"]),
        "${ProjectName}-vault-${StackSuffix}"
    );
    assert_eq!(vault["Condition"], "CreateBackupVault");
    assert_eq!(
        t["Conditions"]["CreateBackupVault"],
        json!({ "Fn::Equals": [{ "Ref": "ExistingBackupVaultName" }, ""] })
    );
    // 32 (longest project) + "-vault-" + 8 fits the 50 characters of a vault name.
    assert!(32 + "-vault-".len() + 8 <= 50);

    let repo = &res["TeamImageRepository"];
    assert_eq!(
        stack_suffixed(&repo["Properties"]["RepositoryName"]),
        "${ProjectName}/code-server-${StackSuffix}"
    );
    assert_eq!(repo["Condition"], "CreateTeamImageRepository");
    assert_eq!(
        t["Conditions"]["CreateTeamImageRepository"],
        json!({ "Fn::Equals": [{ "Ref": "ExistingTeamImageRepository" }, ""] })
    );

    // Adopted: the plan writes to the given vault; the role, the user data and the output
    // name the given repository.
    let adopt = [
        ("CreateBackupVault", false),
        ("CreateTeamImageRepository", false),
    ];
    let plan = resolve(&res["BackupPlan"], &adopt).unwrap();
    assert_eq!(
        plan["Properties"]["BackupPlan"]["BackupPlanRule"][0]["TargetBackupVault"]["Ref"],
        "ExistingBackupVaultName"
    );
    let uri = resolve(&t["Outputs"]["TeamImageRepositoryUri"]["Value"], &adopt).unwrap();
    assert_eq!(
        uri["Fn::Sub"],
        "${AWS::AccountId}.dkr.ecr.${AWS::Region}.${AWS::URLSuffix}/${ExistingTeamImageRepository}"
    );
    let user_data = &res["Instance"]["Properties"]["UserData"]["Fn::Base64"]["Fn::Sub"];
    assert_eq!(
        resolve(&user_data[1]["TeamImageRepositoryUri"], &adopt).unwrap(),
        uri
    );
    let role = resolve(
        &res["InstanceRole"],
        &[("CreateTeamImageRepository", false), ("DebUrlIsS3", false)],
    )
    .unwrap();
    let pull = role["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == "PullTeamImage")
        .unwrap()
        .clone();
    assert_eq!(
        pull["Resource"]["Fn::Sub"],
        "arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/${ExistingTeamImageRepository}"
    );
}

#[test]
fn log_groups_are_deleted_only_after_the_host() {
    let t = template();
    let res = &t["Resources"];
    let depends: BTreeSet<&str> = res["InstanceRole"]["DependsOn"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let groups: BTreeSet<&str> = res
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Logs::LogGroup")
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(depends, groups);
    // Instance -> profile -> role -> log groups: deletion runs the other way round.
    assert_eq!(
        res["Instance"]["Properties"]["IamInstanceProfile"]["Ref"],
        "InstanceProfile"
    );
    assert_eq!(
        res["InstanceProfile"]["Properties"]["Roles"][0]["Ref"],
        "InstanceRole"
    );
}

#[test]
fn the_data_volume_can_start_from_a_snapshot() {
    let s = Settings {
        data_volume_snapshot_id: "snap-0123456789abcdef0".into(),
        ..Settings::default()
    };
    s.validate().unwrap();
    let t = build_template(&s);
    assert_eq!(
        t["Parameters"]["DataVolumeSnapshotId"]["Default"],
        "snap-0123456789abcdef0"
    );
    let volume = &t["Resources"]["DataVolume"]["Properties"];
    let on = resolve(volume, &[("HasDataVolumeSnapshot", true)]).unwrap();
    assert_eq!(on["SnapshotId"]["Ref"], "DataVolumeSnapshotId");
    let off = resolve(volume, &[("HasDataVolumeSnapshot", false)]).unwrap();
    assert!(off.get("SnapshotId").is_none());
    let bad = Settings {
        data_volume_snapshot_id: "vol-0123".into(),
        ..Settings::default()
    };
    assert_eq!(
        bad.validate().unwrap_err().option,
        "--data-volume-snapshot-id"
    );
}
