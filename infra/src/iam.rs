//! Each host's instance role, least privilege:
//! - Secrets Manager: GetSecretValue and DescribeSecret on its own developers' secrets only:
//!   under `<project>/*` and tagged `csagent-host` = its host number (`secrets::HOST_TAG`).
//!   BatchGetSecretValue has no resource-level permissions (AWS requires `"*"`), but it returns
//!   only the secrets that GetSecretValue allows. No ListSecrets: the agent asks for its secrets
//!   by id (`SecretIdList`), which needs no listing.
//! - CloudWatch Logs on `/aws/ec2/<project>/*` only (create group and stream, retention, put,
//!   describe streams).
//! - PutMetricData only into the `CodeServer` namespace (condition `cloudwatch:namespace`).
//! - ECR: pull (BatchGetImage, GetDownloadUrlForLayer, BatchCheckLayerAvailability) from the
//!   team image repository only; GetAuthorizationToken has no resource-level permissions
//!   (AWS requires `"*"`), and the token it returns reaches only what the pull actions allow.
//! - `csagent restore` (see [`restore_statements`]): EC2 volumes from snapshots, scoped by the
//!   `csagent-restore` tag; the Describe calls it needs have no resource-level permissions.
//! - ssm:GetParameter on the host's own developer-set parameter only (`developer_set`).
//!   AmazonSSMManagedInstanceCore allows GetParameter on `*` as well (Session Manager needs
//!   it); the statement here says what the agent itself needs.
//! - s3:GetObject on the .deb only when DebUrl is an s3:// URL.
//! - AmazonSSMManagedInstanceCore for Session Manager (instead of SSH).

use crate::cfn::{Resources, if_, name_tag, no_value, r#ref, resource, sub, tags, with};
use crate::settings::{Host, Settings};
use crate::{developer_set, registry};
use csagent_contract::{RESTORE_TAG, metrics};
use serde_json::{Value, json};

fn assume_role(service: &str) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": { "Service": service },
            "Action": "sts:AssumeRole",
        }]
    })
}

/// Host `host`'s agent permissions as one policy document.
pub fn agent_policy_document(host: &Host) -> Value {
    let project_secrets = sub(
        "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${ProjectName}/*",
    );
    let mut own_host = serde_json::Map::new();
    own_host.insert(
        format!("secretsmanager:ResourceTag/{}", crate::secrets::HOST_TAG),
        Value::from(host.number.to_string()),
    );
    let project_logs = sub(
        "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:/aws/ec2/${ProjectName}/*",
    );
    let deb_object = json!({
        "Fn::Sub": [
            "arn:${AWS::Partition}:s3:::${ObjectPath}",
            { "ObjectPath": { "Fn::Select": [1, { "Fn::Split": ["://", r#ref("DebUrl")] }] } }
        ]
    });
    let [r0, r1, r2, r3, r4, r5] = restore_statements();
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadOwnDevelopersSecrets",
                "Effect": "Allow",
                "Action": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                "Resource": project_secrets,
                // Its own developers' secrets only (each secret is tagged with its host).
                "Condition": { "StringEquals": own_host },
            },
            {
                "Sid": "BatchGetSecretsNoResourceLevel",
                "Effect": "Allow",
                "Action": "secretsmanager:BatchGetSecretValue",
                "Resource": "*",
            },
            {
                "Sid": "WriteProjectLogs",
                "Effect": "Allow",
                // GetLogEvents: after a crash or an ambiguous put, the shipper reads
                // its own stream back to learn whether the batch landed.
                "Action": [
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:PutLogEvents",
                    "logs:PutRetentionPolicy",
                    "logs:GetLogEvents",
                ],
                "Resource": project_logs,
            },
            {
                "Sid": "ReadDeveloperSet",
                "Effect": "Allow",
                "Action": "ssm:GetParameter",
                "Resource": developer_set::parameter_arn(host.number),
            },
            {
                "Sid": "EcrTokenNoResourceLevel",
                "Effect": "Allow",
                "Action": "ecr:GetAuthorizationToken",
                "Resource": "*",
            },
            {
                "Sid": "PullTeamImage",
                "Effect": "Allow",
                "Action": [
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchCheckLayerAvailability",
                ],
                "Resource": registry::repository_arn(),
            },
            {
                "Sid": "PutMetricsInOurNamespace",
                "Effect": "Allow",
                "Action": "cloudwatch:PutMetricData",
                "Resource": "*",
                "Condition": { "StringEquals": { "cloudwatch:namespace": metrics::NAMESPACE } },
            },
            r0,
            r1,
            r2,
            r3,
            r4,
            r5,
            if_("DebUrlIsS3", json!({
                "Sid": "ReadAgentPackage",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": deb_object,
            }), no_value()),
        ]
    })
}

/// What `csagent restore` calls: a temporary volume from a snapshot, attached to a host of
/// this project, then detached and deleted. The volume can be created only carrying the tag
/// `csagent-restore=<project>` (tags only at creation), and only volumes with that tag can be
/// attached, detached or deleted — never the data volume. Attach and detach also need the
/// instance: only instances tagged `Project=<project>`. DescribeInstances (the host's zone and
/// device names), DescribeSnapshots and DescribeVolumes have no resource-level permissions.
/// CreateVolume also authorizes the snapshot: any snapshot in the region this account can read.
pub fn restore_statements() -> [Value; 6] {
    let volumes = sub("arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:volume/*");
    let instances = sub("arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:instance/*");
    let restore_tag = |key: &str| {
        let mut cond = serde_json::Map::new();
        cond.insert(format!("{key}/{RESTORE_TAG}"), r#ref("ProjectName"));
        json!({ "StringEquals": cond })
    };
    [
        json!({
            "Sid": "RestoreDescribeNoResourceLevel",
            "Effect": "Allow",
            "Action": ["ec2:DescribeInstances", "ec2:DescribeSnapshots", "ec2:DescribeVolumes"],
            "Resource": "*",
        }),
        json!({
            "Sid": "RestoreVolumeFromSnapshot",
            "Effect": "Allow",
            "Action": "ec2:CreateVolume",
            "Resource": sub("arn:${AWS::Partition}:ec2:${AWS::Region}::snapshot/*"),
        }),
        json!({
            "Sid": "RestoreCreateTaggedVolume",
            "Effect": "Allow",
            "Action": "ec2:CreateVolume",
            "Resource": volumes.clone(),
            "Condition": restore_tag("aws:RequestTag"),
        }),
        json!({
            "Sid": "RestoreTagOnCreate",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": volumes.clone(),
            "Condition": { "StringEquals": { "ec2:CreateAction": "CreateVolume" } },
        }),
        json!({
            "Sid": "RestoreUseTaggedVolume",
            "Effect": "Allow",
            "Action": ["ec2:AttachVolume", "ec2:DetachVolume", "ec2:DeleteVolume"],
            "Resource": volumes,
            "Condition": restore_tag("aws:ResourceTag"),
        }),
        json!({
            "Sid": "RestoreOnProjectHosts",
            "Effect": "Allow",
            "Action": ["ec2:AttachVolume", "ec2:DetachVolume"],
            "Resource": instances,
            "Condition": { "StringEquals": { "aws:ResourceTag/Project": r#ref("ProjectName") } },
        }),
    ]
}

/// Adds host `host`'s instance role and profile (`InstanceRole`, `InstanceProfile` for host 1;
/// `Host2InstanceRole`, … for host 2).
pub fn add_host(res: &mut Resources, host: &Host) {
    // The role depends on the log groups, so a stack deletion removes the log groups only
    // after the instance (which depends on the role's profile) is terminated. The agent creates
    // a log group it finds missing; were the groups deleted first, a still-running agent would
    // create them again outside the stack, and re-creating the stack would then fail on
    // "already exists".
    let depends_on = crate::monitoring::host_log_group_ids(host);
    let which = if host.number == 1 {
        String::new()
    } else {
        format!(" {}", host.number)
    };
    let role = resource(
        "AWS::IAM::Role",
        json!({
            "Description": sub(format!("csagent host{which} of ${{ProjectName}}: its developers' secrets, logs, metrics and team image pulls")),
            "AssumeRolePolicyDocument": assume_role("ec2.amazonaws.com"),
            "ManagedPolicyArns": [
                sub("arn:${AWS::Partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"),
            ],
            "Policies": [{
                "PolicyName": "csagent",
                "PolicyDocument": agent_policy_document(host),
            }],
            "Tags": tags(&[name_tag(&host.name("host"))]),
        }),
    );
    let role_id = host.id("InstanceRole");
    res.add(role_id.clone(), with(role, "DependsOn", json!(depends_on)));
    res.add(
        host.id("InstanceProfile"),
        resource(
            "AWS::IAM::InstanceProfile",
            json!({ "Roles": [r#ref(&role_id)] }),
        ),
    );
}

/// Adds the AWS Backup service role (one for every host's volume).
pub fn add(res: &mut Resources, _s: &Settings) {
    res.add(
        "BackupRole",
        resource(
            "AWS::IAM::Role",
            json!({
                "Description": sub("AWS Backup of the ${ProjectName} data volume"),
                "AssumeRolePolicyDocument": assume_role("backup.amazonaws.com"),
                "ManagedPolicyArns": [
                    sub("arn:${AWS::Partition}:iam::aws:policy/service-role/AWSBackupServiceRolePolicyForBackup"),
                    sub("arn:${AWS::Partition}:iam::aws:policy/service-role/AWSBackupServiceRolePolicyForRestores"),
                ],
                "Tags": tags(&[name_tag("backup")]),
            }),
        ),
    );
}
