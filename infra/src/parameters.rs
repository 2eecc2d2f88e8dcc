//! Template Parameters (defaults from the command line), Conditions, and the console's
//! parameter grouping.

use crate::cfn::r#ref;
use crate::settings::{Host, Settings};
use csagent_contract::LOG_RETENTION_DAYS;
use csagent_contract::validate;
use serde_json::{Map, Value, json};

fn string_param(description: &str, default: &str, pattern: &str, constraint: &str) -> Value {
    json!({
        "Type": "String",
        "Description": description,
        "Default": default,
        "AllowedPattern": pattern,
        "ConstraintDescription": constraint,
    })
}

fn number_param(description: &str, default: u32, min: u32, max: u32) -> Value {
    json!({
        "Type": "Number",
        "Description": description,
        "Default": default,
        "MinValue": min,
        "MaxValue": max,
    })
}

/// The Parameters section.
pub fn parameters(s: &Settings) -> Value {
    let mut p = Map::new();
    p.insert(
        "ProjectName".into(),
        string_param(
            "Project name: prefix of secret names (<project>/devN/...), log groups (/aws/ec2/<project>/...) and resource names. Must match the agent's `project`.",
            &s.project,
            validate::PROJECT_PATTERN,
            "2-32 characters of a-z, 0-9 and '-', starting with a letter",
        ),
    );
    p.insert(
        "Environment".into(),
        string_param(
            "Value of the Environment tag.",
            &s.environment,
            validate::TAG_VALUE_PATTERN,
            "1-128 tag-safe characters",
        ),
    );
    p.insert(
        "CostCenter".into(),
        string_param(
            "Value of the CostCenter tag.",
            &s.cost_center,
            validate::TAG_VALUE_PATTERN,
            "1-128 tag-safe characters",
        ),
    );
    // Only types that hold the developers per host (capacity model): a deploy-time override
    // cannot put more on a host than it holds.
    let size = crate::capacity::DeveloperSize::of(s);
    let on_one = s.per_host().min(s.developers);
    let fitting: Vec<&str> = crate::capacity::INSTANCE_TYPES
        .iter()
        .filter(|t| crate::capacity::check(**t, size, on_one).is_ok())
        .map(|t| t.name)
        .collect();
    p.insert(
        "InstanceType".into(),
        json!({
            "Type": "String",
            "Description": format!("EC2 instance type of the host(s) (x86_64: the AMI is amd64); the types that hold {on_one} developer(s) by infra's capacity model."),
            "Default": s.instance_type,
            "AllowedValues": fitting,
            "ConstraintDescription": "an instance type from infra's capacity table that holds the developers per host",
        }),
    );
    p.insert(
        "LatestAmiId".into(),
        json!({
            "Type": "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>",
            "Description": "SSM parameter holding the AMI id; the default is Canonical's current Ubuntu 22.04 amd64 image.",
            "Default": s.ami_ssm_parameter,
        }),
    );
    p.insert(
        "KeyPairName".into(),
        string_param(
            "Optional EC2 key pair for SSH. Leave empty and use SSM Session Manager instead.",
            &s.key_pair,
            validate::KEY_PAIR_PATTERN,
            "empty or an EC2 key pair name",
        ),
    );
    p.insert(
        "AdminSshCidr".into(),
        string_param(
            "Optional IPv4 CIDR allowed to SSH to the host (port 22). Empty: no SSH rule.",
            &s.admin_cidr,
            &validate::CIDR_PATTERN,
            "empty or an IPv4 CIDR such as 203.0.113.10/32",
        ),
    );
    p.insert(
        "RootVolumeSize".into(),
        number_param(
            "Root volume size in GiB (gp3, encrypted).",
            s.root_volume_gb,
            20,
            16384,
        ),
    );
    p.insert(
        "DataVolumeSize".into(),
        number_param(
            "Data volume size in GiB (gp3, encrypted, snapshot on delete), mounted by the agent at /mnt/ebs-data.",
            s.data_volume_gb,
            1,
            16384,
        ),
    );
    let mut domain = string_param(
        "Parent domain; developer N is served at https://devN.<domain>.",
        &s.domain,
        validate::DOMAIN_PATTERN,
        "a lower-case DNS name such as dev.example.com",
    );
    domain["MaxLength"] = json!(validate::DOMAIN_MAX_LENGTH);
    p.insert("DomainName".into(), domain);
    p.insert(
        "HostedZoneId".into(),
        json!({
            "Type": "AWS::Route53::HostedZone::Id",
            "Description": "Route 53 hosted zone of DomainName: certificate validation records and one alias record per developer.",
            "Default": s.hosted_zone_id,
        }),
    );
    p.insert(
        "AlarmEmail".into(),
        string_param(
            "Optional e-mail address subscribed to the alarm topic (confirm the subscription e-mail). Empty: no subscription.",
            &s.alarm_email,
            validate::EMAIL_PATTERN,
            "empty or an e-mail address",
        ),
    );
    p.insert(
        "BackupRetentionDays".into(),
        number_param(
            "Days AWS Backup keeps each daily recovery point of the data volume.",
            s.backup_retention_days,
            1,
            36500,
        ),
    );
    // Emitted only with --password-rotation-lambda-arn: a RotationSchedule per
    // developer does not fit 64 developers into one stack's 500 resources.
    if !s.password_rotation_lambda_arn.is_empty() {
        p.insert(
            "PasswordRotationLambdaArn".into(),
            string_param(
                "ARN of the Secrets Manager rotation Lambda for the developers' passwords (it must allow secretsmanager.amazonaws.com to invoke it). Empty: no rotation; the agent still picks up a rotation an admin makes.",
                &s.password_rotation_lambda_arn,
                validate::LAMBDA_ARN_PATTERN,
                "empty or a Lambda function ARN",
            ),
        );
        p.insert(
            "PasswordRotationDays".into(),
            number_param(
                "Days between automatic password rotations.",
                s.password_rotation_days,
                1,
                1000,
            ),
        );
    }
    p.insert(
        "LogRetentionDays".into(),
        json!({
            "Type": "Number",
            "Description": "Days CloudWatch Logs keeps the container and agent logs.",
            "Default": s.log_retention_days,
            "AllowedValues": LOG_RETENTION_DAYS,
        }),
    );
    p.insert(
        "TeamImageTag".into(),
        string_param(
            "Optional tag of the team image in this stack's ECR repository (output TeamImageRepositoryUri) for the agent to run, pulled with the instance role. Empty: the agent's default image. Push the tag before the host boots (or run `csagent reload` after setting it in the agent's config).",
            &s.team_image_tag,
            validate::IMAGE_TAG_PATTERN,
            "empty or an image tag: up to 128 of A-Z a-z 0-9 _ . -, not starting with . or -",
        ),
    );
    for (name, value, what) in [
        ("ScheduleStart", &s.schedule_start, "start"),
        ("ScheduleStop", &s.schedule_stop, "stop"),
    ] {
        let mut param = string_param(
            &format!(
                "Optional EventBridge Scheduler cron expression, in ScheduleTimezone, at which to {what} the host(s), e.g. cron(0 {} ? * MON-FRI *). Empty: no scheduled {what}.",
                if what == "start" { 8 } else { 20 }
            ),
            value,
            validate::SCHEDULE_CRON_PATTERN,
            "empty or cron(minutes hours day-of-month month day-of-week year) with exactly one of day-of-month and day-of-week set to ?",
        );
        param["MaxLength"] = json!(validate::SCHEDULE_EXPRESSION_MAX_LENGTH);
        p.insert(name.into(), param);
    }
    let mut timezone = string_param(
        "IANA time zone of ScheduleStart and ScheduleStop, e.g. Europe/Berlin (daylight saving time is followed).",
        &s.schedule_timezone,
        validate::TIMEZONE_PATTERN,
        "an IANA time zone name such as Europe/Berlin or UTC",
    );
    timezone["MaxLength"] = json!(validate::TIMEZONE_MAX_LENGTH);
    p.insert("ScheduleTimezone".into(), timezone);
    p.insert(
        "IdleStopHours".into(),
        number_param(
            "Stop a host when no developer has been active on it (agent metric developers_active = 0) for this many hours. 0: never.",
            s.idle_stop_hours,
            0,
            validate::MAX_IDLE_STOP_HOURS,
        ),
    );
    let mut deb = json!({
        "Type": "String",
        "Description": "Where the host fetches the csagent .deb: https:// (a presigned S3 URL works), s3://bucket/key (read with the instance role via the AWS CLI), or file:// (a baked image).",
        "AllowedPattern": validate::DEB_URL_PATTERN,
        "ConstraintDescription": "https://, s3:// or file:// URL without quotes or spaces",
    });
    if !s.deb_url.is_empty()
        && let Some(obj) = deb.as_object_mut()
    {
        obj.insert("Default".into(), Value::from(s.deb_url.clone()));
    }
    p.insert("DebUrl".into(), deb);
    p.insert(
        "ExistingCertificateArn".into(),
        string_param(
            "Optional ARN of an existing ACM certificate (in this region) covering *.<DomainName>. Empty: the stack requests a wildcard certificate and validates it by DNS in HostedZoneId.",
            &s.certificate_arn,
            validate::CERTIFICATE_ARN_PATTERN,
            "empty or an ACM certificate ARN",
        ),
    );
    p.insert(
        "ExistingBackupVaultName".into(),
        string_param(
            "Optional AWS Backup vault to keep using, e.g. the one a deleted stack of this project kept with its recovery points. Empty: the stack creates <ProjectName>-vault-<stack id> (kept when the stack is deleted).",
            &s.existing_backup_vault,
            validate::BACKUP_VAULT_PATTERN,
            "empty or a backup vault name: 2-50 of A-Z a-z 0-9 _ -",
        ),
    );
    let mut repository = string_param(
        "Optional ECR repository to keep using for the team image, e.g. the one a deleted stack kept, or <ProjectName>/code-server of a stack made before names had a stack suffix. Empty: the stack creates <ProjectName>/code-server-<stack id> (kept when the stack is deleted).",
        &s.existing_team_image_repository,
        validate::ECR_REPOSITORY_PATTERN,
        "empty or an ECR repository name (lower case)",
    );
    repository["MaxLength"] = json!(validate::ECR_REPOSITORY_MAX_LENGTH);
    p.insert("ExistingTeamImageRepository".into(), repository);
    let snapshots = s.data_volume_snapshot_ids();
    for host in s.host_list() {
        let whose = if s.hosts() == 1 {
            "the data volume".to_string()
        } else {
            format!("host {}'s data volume", host.number)
        };
        p.insert(
            snapshot_parameter(&host),
            string_param(
                &format!("Optional EBS snapshot to create {whose} from, e.g. the final snapshot a deleted stack left of it (DataVolumeSize must be at least its size). Empty: a blank volume, which the agent formats. Keep it once set: a change replaces the volume."),
                snapshots.get(host.number as usize - 1).copied().unwrap_or_default(),
                validate::SNAPSHOT_ID_PATTERN,
                "empty or an EBS snapshot id (snap-...)",
            ),
        );
    }
    crate::sso::parameters(&s.sso, &mut p);
    p.insert(
        "AccessLogBucket".into(),
        string_param(
            "Optional S3 bucket for ALB access logs (its policy must allow ELB log delivery). Empty: access logs off.",
            &s.access_log_bucket,
            validate::BUCKET_PATTERN,
            "empty or an S3 bucket name",
        ),
    );
    Value::Object(p)
}

/// The Conditions section.
pub fn conditions(s: &Settings) -> Value {
    let not_empty = |param: &str| json!({ "Fn::Not": [ { "Fn::Equals": [r#ref(param), ""] } ] });
    let mut conditions = json!({
        "HasKeyPair": not_empty("KeyPairName"),
        "HasAdminSshCidr": not_empty("AdminSshCidr"),
        "HasAlarmEmail": not_empty("AlarmEmail"),
        "HasAccessLogBucket": not_empty("AccessLogBucket"),
        "CreateCertificate": { "Fn::Equals": [r#ref("ExistingCertificateArn"), ""] },
        "DebUrlIsS3": {
            "Fn::Equals": [
                { "Fn::Select": [0, { "Fn::Split": ["://", r#ref("DebUrl")] }] },
                "s3"
            ]
        },
    });
    if !s.password_rotation_lambda_arn.is_empty() {
        conditions["RotatePasswords"] = not_empty("PasswordRotationLambdaArn");
    }
    conditions["CreateBackupVault"] =
        json!({ "Fn::Equals": [r#ref("ExistingBackupVaultName"), ""] });
    conditions["CreateTeamImageRepository"] =
        json!({ "Fn::Equals": [r#ref("ExistingTeamImageRepository"), ""] });
    for host in s.host_list() {
        conditions[snapshot_condition(&host)] = not_empty(&snapshot_parameter(&host));
    }
    if let Some(map) = conditions.as_object_mut() {
        map.extend(crate::schedule::conditions());
        crate::sso::conditions(map);
    }
    conditions
}

/// The Parameter with the snapshot `host`'s data volume starts from (`DataVolumeSnapshotId`,
/// `Host2DataVolumeSnapshotId`, …): each volume has its own, as a snapshot is one host's
/// developers' homes.
pub fn snapshot_parameter(host: &Host) -> String {
    host.id("DataVolumeSnapshotId")
}

/// The Condition that `host`'s [`snapshot_parameter`] is set.
pub fn snapshot_condition(host: &Host) -> String {
    host.id("HasDataVolumeSnapshot")
}

/// `AWS::CloudFormation::Interface`: how the console groups the Parameters.
pub fn interface(s: &Settings) -> Value {
    let mut operations = vec![
        "AlarmEmail",
        "LogRetentionDays",
        "BackupRetentionDays",
        "ExistingBackupVaultName",
    ];
    if !s.password_rotation_lambda_arn.is_empty() {
        operations.extend(["PasswordRotationLambdaArn", "PasswordRotationDays"]);
    }
    // The host's settings, each host's snapshot parameter in host order among them.
    let host: Vec<String> = [
        "InstanceType",
        "LatestAmiId",
        "RootVolumeSize",
        "DataVolumeSize",
    ]
    .map(String::from)
    .into_iter()
    .chain(s.host_list().iter().map(snapshot_parameter))
    .chain(
        [
            "DebUrl",
            "TeamImageTag",
            "ExistingTeamImageRepository",
            "KeyPairName",
            "AdminSshCidr",
        ]
        .map(String::from),
    )
    .collect();
    json!({
        "ParameterGroups": [
            { "Label": { "default": "Project and tags" },
              "Parameters": ["ProjectName", "Environment", "CostCenter"] },
            { "Label": { "default": "Host" },
              "Parameters": host },
            { "Label": { "default": "DNS and TLS" },
              "Parameters": ["DomainName", "HostedZoneId", "ExistingCertificateArn", "AccessLogBucket"] },
            { "Label": { "default": "Operations" },
              "Parameters": operations },
            { "Label": { "default": "Pay for used hours only" },
              "Parameters": ["ScheduleStart", "ScheduleStop", "ScheduleTimezone", "IdleStopHours"] },
            { "Label": { "default": "Single sign-on at the ALB" },
              "Parameters": crate::sso::PARAMETER_NAMES },
        ]
    })
}
