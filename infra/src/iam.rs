//! The host's instance role, least privilege:
//! - Secrets Manager: GetSecretValue and DescribeSecret on `<project>/*` only.
//!   BatchGetSecretValue has no resource-level permissions (AWS requires `"*"`), but it returns
//!   only the secrets that GetSecretValue allows. No ListSecrets: the agent asks for its secrets
//!   by id (`SecretIdList`), which needs no listing.
//! - CloudWatch Logs on `/aws/ec2/<project>/*` only (create group and stream, retention, put,
//!   describe streams).
//! - PutMetricData only into the `CodeServer` namespace (condition `cloudwatch:namespace`).
//! - ECR: pull (BatchGetImage, GetDownloadUrlForLayer, BatchCheckLayerAvailability) from the
//!   team image repository only; GetAuthorizationToken has no resource-level permissions
//!   (AWS requires `"*"`), and the token it returns reaches only what the pull actions allow.
//! - ssm:GetParameter on the host's developer-set parameter only (`developer_set`).
//!   AmazonSSMManagedInstanceCore allows GetParameter on `*` as well (Session Manager needs
//!   it); the statement here says what the agent itself needs.
//! - s3:GetObject on the .deb only when DebUrl is an s3:// URL.
//! - AmazonSSMManagedInstanceCore for Session Manager (instead of SSH).

use crate::cfn::{Resources, get_att, if_, name_tag, no_value, r#ref, resource, sub, tags};
use crate::{developer_set, registry};
use csagent_contract::metrics;
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

/// The agent's permissions as one policy document.
pub fn agent_policy_document() -> Value {
    let project_secrets = sub(
        "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${ProjectName}/*",
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
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadProjectSecrets",
                "Effect": "Allow",
                "Action": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                "Resource": project_secrets,
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
                "Resource": developer_set::parameter_arn(1),
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
                "Resource": get_att(registry::REPOSITORY, "Arn"),
            },
            {
                "Sid": "PutMetricsInOurNamespace",
                "Effect": "Allow",
                "Action": "cloudwatch:PutMetricData",
                "Resource": "*",
                "Condition": { "StringEquals": { "cloudwatch:namespace": metrics::NAMESPACE } },
            },
            if_("DebUrlIsS3", json!({
                "Sid": "ReadAgentPackage",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": deb_object,
            }), no_value()),
        ]
    })
}

/// Adds the instance role and profile, and the AWS Backup service role.
pub fn add(res: &mut Resources) {
    res.add(
        "InstanceRole",
        resource(
            "AWS::IAM::Role",
            json!({
                "Description": sub("csagent host of ${ProjectName}: project secrets, logs, metrics and team image pulls"),
                "AssumeRolePolicyDocument": assume_role("ec2.amazonaws.com"),
                "ManagedPolicyArns": [
                    sub("arn:${AWS::Partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"),
                ],
                "Policies": [{
                    "PolicyName": "csagent",
                    "PolicyDocument": agent_policy_document(),
                }],
                "Tags": tags(&[name_tag("host")]),
            }),
        ),
    );
    res.add(
        "InstanceProfile",
        resource(
            "AWS::IAM::InstanceProfile",
            json!({ "Roles": [r#ref("InstanceRole")] }),
        ),
    );
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
