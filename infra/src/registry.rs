//! The team image's ECR repository, `<project>/code-server-<stack id>`: scan on push, immutable
//! tags (a tag the agent runs never changes under it), and a lifecycle policy that expires
//! untagged images after [`UNTAGGED_DAYS`] days and keeps the newest [`KEEP_IMAGES`] images.
//! The instance role may pull from it (`iam.rs`); the agent's config names an image in it when
//! the TeamImageTag Parameter is set (`agent_config.rs`).
//!
//! Kept when the stack is deleted: the images in it are the team's. So its name carries the
//! stack id (a stack re-created under the same project creates a new repository instead of
//! colliding with the kept one), and the ExistingTeamImageRepository Parameter uses a kept (or
//! any other) repository instead of creating one.

use crate::cfn::{
    Resources, get_att, if_, name_tag, resource, skip_checkov, sub, sub_with_stack_suffix, tags,
    with,
};
use serde_json::{Value, json};

/// Logical id of the repository.
pub const REPOSITORY: &str = "TeamImageRepository";
/// Repository name under the project.
pub const REPOSITORY_SUFFIX: &str = "code-server";
/// Untagged images (left behind when a tag moves to a new build) expire after this many days.
pub const UNTAGGED_DAYS: u32 = 7;
/// Images kept in all; older ones expire (room for rolling back a few releases).
pub const KEEP_IMAGES: u32 = 30;

/// The lifecycle policy text ECR takes (a JSON document as a string).
pub fn lifecycle_policy() -> Value {
    json!({
        "rules": [
            {
                "rulePriority": 1,
                "description": format!("expire untagged images after {UNTAGGED_DAYS} days"),
                "selection": {
                    "tagStatus": "untagged",
                    "countType": "sinceImagePushed",
                    "countUnit": "days",
                    "countNumber": UNTAGGED_DAYS,
                },
                "action": { "type": "expire" },
            },
            {
                "rulePriority": 2,
                "description": format!("keep the newest {KEEP_IMAGES} images"),
                "selection": {
                    "tagStatus": "any",
                    "countType": "imageCountMoreThan",
                    "countNumber": KEEP_IMAGES,
                },
                "action": { "type": "expire" },
            },
        ]
    })
}

/// URI of the team image repository, the stack's or ExistingTeamImageRepository.
pub fn repository_uri() -> Value {
    if_(
        "CreateTeamImageRepository",
        get_att(REPOSITORY, "RepositoryUri"),
        sub(
            "${AWS::AccountId}.dkr.ecr.${AWS::Region}.${AWS::URLSuffix}/${ExistingTeamImageRepository}",
        ),
    )
}

/// ARN of the team image repository, the stack's or ExistingTeamImageRepository.
pub fn repository_arn() -> Value {
    if_(
        "CreateTeamImageRepository",
        get_att(REPOSITORY, "Arn"),
        sub(
            "arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/${ExistingTeamImageRepository}",
        ),
    )
}

/// Adds the repository (unless ExistingTeamImageRepository is set).
pub fn add(res: &mut Resources) {
    let repository = resource(
        "AWS::ECR::Repository",
        json!({
            "RepositoryName": sub_with_stack_suffix(&format!("${{ProjectName}}/{REPOSITORY_SUFFIX}-${{StackSuffix}}")),
            "ImageScanningConfiguration": { "ScanOnPush": true },
            "ImageTagMutability": "IMMUTABLE",
            "EncryptionConfiguration": { "EncryptionType": "AES256" },
            "LifecyclePolicy": { "LifecyclePolicyText": lifecycle_policy().to_string() },
            "Tags": tags(&[name_tag("team-image")]),
        }),
    );
    let repository = with(repository, "Condition", json!("CreateTeamImageRepository"));
    let repository = with(repository, "DeletionPolicy", json!("Retain"));
    let repository = with(repository, "UpdateReplacePolicy", json!("Retain"));
    res.add(
        REPOSITORY,
        skip_checkov(
            repository,
            &[(
                "CKV_AWS_136",
                "Encrypted at rest with ECR's AES-256 keys; the image holds no secrets (credentials reach containers at run time), so a customer-managed KMS key would add cost and a key policy to run without protecting anything more.",
            )],
        ),
    );
}
