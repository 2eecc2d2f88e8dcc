//! The template `infra` emits deploys: moto creates the stack (CREATE_COMPLETE) for 1, 8 and 40
//! developers, as JSON and as YAML, with every optional parameter off and on, and the stack
//! has what the agent relies on: one URL output per developer, the load balancer, instance
//! and data volume outputs, the agent's and every developer's log group, the data volume
//! attached to the instance as /dev/sdf, and the team image's ECR repository (immutable tags)
//! with its URI as an output. With every option on, the scheduled start/stop and the idle stop
//! are on too: moto creates their IAM role (and only with them); it does not model
//! `AWS::Scheduler::Schedule`, `AWS::CloudWatch::Alarm` or `AWS::CloudWatch::CompositeAlarm`
//! and accepts them as placeholders, so no alarm is evaluated here (infra/tests/template.rs
//! and infra/tests/hosts.rs check their properties).
//!
//! SSO (issue 19.5): the same template with SsoProvider `oidc`, and `cognito` with a given
//! pool, deploys, and each developer's listener rule then authenticates (Order 1) before it
//! forwards (Order 2); without SSO each rule has its single forward action. moto does not
//! model `AWS::Cognito::*` in CloudFormation (a GetAtt on the pool fails), does not resolve
//! the `{{resolve:secretsmanager:...}}` reference (it keeps the text), and ignores a
//! template's SecurityGroupEgress: the pool the stack creates and the ALB's egress to the IdP
//! are checked in infra/tests/sso.rs only.
//!
//! Teardown (issue 19.6): create, delete and create again under the same project and stack
//! name reaches CREATE_COMPLETE; the kept repository survives the deletion, and a third stack
//! adopts it (and the kept vault) through the Existing* parameters.
//!
//! More than one host (issue 18.3): 40 developers (the capacity model's 10 per t3.2xlarge: 4
//! hosts) and 100 (10 hosts) deploy as a parent with nested stacks, whose child templates the
//! test uploads to moto's S3 first (the parent's TemplateURLs point there). For every
//! deployment, each host's developer-set parameter lists its developers, each developer is on
//! exactly one host, and its target group targets that host's instance on its port (moto
//! ignores a target group's `Targets`: the template's target is resolved through the deployed
//! stacks to a physical instance id, see `check_hosts`).
//!
//! Each test deploys into the shared moto (`AWS_ENDPOINT_URL`) under its own project name, so
//! stacks, secrets and log groups never collide. moto does not enforce the 51,200-byte limit
//! on `TemplateBody`, so even the 40-developer template goes in the request itself (real AWS
//! would need `TemplateURL`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use aws_sdk_cloudformation::types::{Capability, Parameter, StackStatus};
use clap::Parser;
use common::{aws, moto_url, unique};
use infra::cli::Cli;
use infra::{ChildTemplate, Format};
use serde_json::Value;

const DOMAIN: &str = "dev.example.com";
/// The hosted zone id baked in as the parameter's default; the stack gets moto's zone instead.
const ZONE_PLACEHOLDER: &str = "Z0123456789ABCDEFGHIJ";
/// moto refuses parameter names under /aws, so LatestAmiId points at one of ours holding an
/// AMI moto knows.
const MOTO_AMI_PARAMETER: &str = "/csagent-ci/ubuntu-2204-ami";
/// Optional resources that exist only when asked for at generation time, not by a Parameter.
const ROTATION_LAMBDA_ARN: &str =
    "arn:aws:lambda:ap-southeast-7:123456789012:function:csagent-ci-rotate";
const STACK_TIMEOUT: Duration = Duration::from_secs(300);

/// Which optional template branches a deployment turns on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Optional {
    /// Only the required parameters, an https:// package.
    None,
    /// Every optional branch: password rotation (generation time), key pair, SSH CIDR,
    /// alarm e-mail, an s3:// package, ALB access logs, the start/stop schedule and the idle
    /// stop (parameters).
    All,
    /// As `None`, with SsoProvider `oidc` and its parameters (deploy time).
    Oidc,
    /// As `None`, with SsoProvider `cognito` and an existing pool's parameters (deploy time).
    Cognito,
}

/// The existing Cognito pool the `Cognito` deployment names (moto checks no ARN).
const COGNITO_POOL_ARN: &str =
    "arn:aws:cognito-idp:ap-southeast-7:123456789012:userpool/ap-southeast-7_AbCdEf123";
const COGNITO_CLIENT_ID: &str = "1example23456789abcdefghij";
const COGNITO_DOMAIN: &str = "csagent-ci-team";
const OIDC_ISSUER: &str = "https://idp.example.com/oauth2/default";

#[tokio::test(flavor = "multi_thread")]
async fn one_developer_json_deploys() {
    deploy(1, Format::Json, Optional::None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_developers_json_with_every_option_deploy() {
    deploy(8, Format::Json, Optional::All).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_developers_yaml_with_every_option_deploy() {
    deploy(8, Format::Yaml, Optional::All).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn forty_developers_on_four_hosts_json_deploy() {
    deploy(40, Format::Json, Optional::None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_developers_on_ten_hosts_json_deploy() {
    deploy(100, Format::Json, Optional::None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_developers_behind_oidc_deploy() {
    deploy(2, Format::Json, Optional::Oidc).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_developers_behind_a_given_cognito_pool_deploy() {
    deploy(2, Format::Yaml, Optional::Cognito).await;
}

/// Create, delete, create again with the same project and stack name: CREATE_COMPLETE both
/// times. The deletion keeps the team image repository (Retain) and removes the log groups;
/// the second stack gets a repository of its own (the kept one's name is taken: moto refuses
/// it as ECR does); a third stack adopts the kept repository and a kept vault through
/// ExistingTeamImageRepository and ExistingBackupVaultName. What moto does not model
/// (secrets, the vault, the final snapshot) is reasoned about in docs/operations.md.
#[tokio::test(flavor = "multi_thread")]
async fn delete_and_create_again_under_the_same_project() {
    let (_, body, _) = generate(2, Format::Json, Optional::None);
    let config = aws().await;
    let cfn = aws_sdk_cloudformation::Client::new(&config);
    let ecr = aws_sdk_ecr::Client::new(&config);
    let project = unique("ci-again");
    let stack_name = format!("csagent-{project}");
    let params = prerequisites(&config, &project).await;

    let started = Instant::now();
    let first = create_stack(&cfn, "first", &stack_name, &body, &params).await;
    let first_repo = repository_of(&outputs_of(&first));
    delete_stack(&config, &cfn, &stack_name).await;

    // Kept: the repository. Removed: the log groups.
    let kept = ecr
        .describe_repositories()
        .repository_names(&first_repo)
        .send()
        .await;
    assert!(
        kept.is_ok(),
        "the deleted stack's repository {first_repo} is kept: {:?}",
        kept.err().map(|e| error_text(&e))
    );
    let groups = log_groups(&config, &project).await;
    assert!(groups.is_empty(), "log groups left behind: {groups:?}");
    // The name the first stack used stays taken: a fixed name would collide here.
    let again = ecr
        .create_repository()
        .repository_name(&first_repo)
        .send()
        .await;
    let code = again
        .as_ref()
        .err()
        .and_then(|e| e.as_service_error())
        .map(|e| e.is_repository_already_exists_exception());
    assert_eq!(code, Some(true), "ECR refuses a second {first_repo}");

    let second = create_stack(&cfn, "second", &stack_name, &body, &params).await;
    let second_repo = repository_of(&outputs_of(&second));
    assert_ne!(
        second_repo, first_repo,
        "the re-created stack has a repository of its own"
    );
    assert_eq!(
        log_groups(&config, &project).await.len(),
        5,
        "agent, system, docker and 2 developer log groups"
    );
    delete_stack(&config, &cfn, &stack_name).await;

    // Adopting what a deleted stack kept.
    let mut adopt = params.clone();
    adopt.insert("ExistingTeamImageRepository", first_repo.clone());
    adopt.insert("ExistingBackupVaultName", format!("{project}-vault-kept"));
    let third = create_stack(&cfn, "third (adopting)", &stack_name, &body, &adopt).await;
    let third_out = outputs_of(&third);
    assert_eq!(repository_of(&third_out), first_repo);
    let listed = stack_resources(&cfn, &stack_name).await;
    assert!(
        !listed
            .iter()
            .any(|id| id == "TeamImageRepository" || id == "BackupVault"),
        "nothing created in place of what is adopted: {listed:?}"
    );
    delete_stack(&config, &cfn, &stack_name).await;
    for repo in [&first_repo, &second_repo] {
        let _ = ecr
            .delete_repository()
            .repository_name(repo)
            .force(true)
            .send()
            .await;
    }
    println!(
        "create, delete, create, delete, create (adopting), delete under {stack_name}: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The repository name in the TeamImageRepositoryUri output.
fn repository_of(outputs: &BTreeMap<String, String>) -> String {
    let uri = outputs
        .get("TeamImageRepositoryUri")
        .expect("output TeamImageRepositoryUri");
    uri.split_once(".amazonaws.com/")
        .map(|(_, name)| name.to_string())
        .unwrap_or_else(|| panic!("not an ECR URI: {uri}"))
}

/// The log groups under `/aws/ec2/<project>/`.
async fn log_groups(config: &aws_config::SdkConfig, project: &str) -> BTreeSet<String> {
    aws_sdk_cloudwatchlogs::Client::new(config)
        .describe_log_groups()
        .log_group_name_prefix(format!("/aws/ec2/{project}/"))
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .expect("moto logs DescribeLogGroups")
        .into_iter()
        .filter_map(|g| g.log_group_name().map(str::to_string))
        .collect()
}

/// DeleteStack and wait until the stack is gone. moto deletes neither the
/// AWS::EC2::VPCGatewayAttachment nor the route table it created from the template, and its
/// DeleteStack then fails on the VPC ("has dependencies"); so first do by hand what
/// CloudFormation does in AWS: detach the gateway, drop the route table's associations and
/// the table.
async fn delete_stack(
    config: &aws_config::SdkConfig,
    cfn: &aws_sdk_cloudformation::Client,
    stack_name: &str,
) {
    let ec2 = aws_sdk_ec2::Client::new(config);
    let ids = physical_ids(cfn, stack_name).await;
    if let (Some(vpc), Some(igw)) = (ids.get("Vpc"), ids.get("InternetGateway")) {
        ec2.detach_internet_gateway()
            .internet_gateway_id(igw)
            .vpc_id(vpc)
            .send()
            .await
            .unwrap_or_else(|e| panic!("moto ec2 DetachInternetGateway: {}", error_text(&e)));
    }
    if let Some(table) = ids.get("PublicRouteTable") {
        let tables = ec2
            .describe_route_tables()
            .route_table_ids(table)
            .send()
            .await
            .expect("moto ec2 DescribeRouteTables");
        for association in tables.route_tables().iter().flat_map(|t| t.associations()) {
            if let Some(id) = association.route_table_association_id() {
                ec2.disassociate_route_table()
                    .association_id(id)
                    .send()
                    .await
                    .expect("moto ec2 DisassociateRouteTable");
            }
        }
        ec2.delete_route_table()
            .route_table_id(table)
            .send()
            .await
            .unwrap_or_else(|e| panic!("moto ec2 DeleteRouteTable: {}", error_text(&e)));
    }
    cfn.delete_stack()
        .stack_name(stack_name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("DeleteStack {stack_name}: {}", error_text(&e)));
    let start = Instant::now();
    loop {
        let status = match cfn.describe_stacks().stack_name(stack_name).send().await {
            // By name, a deleted stack no longer exists.
            Err(_) => return,
            Ok(out) => out.stacks().first().and_then(|s| s.stack_status().cloned()),
        };
        match status {
            None | Some(StackStatus::DeleteComplete) => return,
            Some(StackStatus::DeleteFailed) => panic!("stack {stack_name}: DELETE_FAILED"),
            Some(s) if start.elapsed() > STACK_TIMEOUT => {
                panic!(
                    "stack {stack_name} still {} after {STACK_TIMEOUT:?}",
                    s.as_str()
                )
            }
            Some(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// `--data-volume-snapshot-id` of deployments with three hosts or more.
const RESTORE_SNAPSHOTS: &str = "snap-0123456789abcdef0,,snap-89abcdef";

/// moto's S3 bucket the child templates go to.
const TEMPLATE_BUCKET: &str = "csagent-ci-templates";

/// The parent template as `infra --developers N --domain .. --hosted-zone-id .. --format F
/// --ami-ssm-parameter .. --template-url-prefix ..` writes it, parsed back, and its text; the
/// child templates (more than one host), already uploaded to moto's S3 under the prefix.
fn generate(
    developers: u32,
    format: Format,
    optional: Optional,
) -> (Value, String, Vec<ChildTemplate>) {
    // moto reads `https://s3.amazonaws.com/<bucket>/<key>` from its own S3.
    let prefix = format!(
        "https://s3.amazonaws.com/{TEMPLATE_BUCKET}/{}/",
        unique("env")
    );
    let hosts = developers.div_ceil(10);
    let developers = developers.to_string();
    let format_name = match format {
        Format::Json => "json",
        Format::Yaml => "yaml",
    };
    let mut args = vec![
        "infra",
        "--developers",
        &developers,
        "--domain",
        DOMAIN,
        "--hosted-zone-id",
        ZONE_PLACEHOLDER,
        "--format",
        format_name,
        "--ami-ssm-parameter",
        MOTO_AMI_PARAMETER,
        "--template-url-prefix",
        &prefix,
    ];
    if hosts >= 3 {
        // A restore of hosts 1 and 3 from their own snapshots, the others blank: each
        // host's parameter and condition are evaluated (moto ignores a volume's SnapshotId).
        args.extend(["--data-volume-snapshot-id", RESTORE_SNAPSHOTS]);
    }
    if optional == Optional::All {
        args.extend(["--password-rotation-lambda-arn", ROTATION_LAMBDA_ARN]);
        // Defaults from the command line; the deployment passes other values as Parameters.
        args.extend([
            "--schedule-start",
            "cron(0 7 ? * MON-FRI *)",
            "--schedule-timezone",
            "Europe/Lisbon",
        ]);
    }
    let cli =
        Cli::try_parse_from(args.iter().copied()).unwrap_or_else(|e| panic!("infra {args:?}: {e}"));
    let settings = cli
        .settings()
        .unwrap_or_else(|e| panic!("infra {args:?}: {e}"));
    let templates = infra::build(&settings);
    let text =
        infra::render(&templates.parent, cli.format, cli.compact).expect("render the template");
    infra::limits::check(&templates, text.len()).expect("within CloudFormation's limits");
    for child in &templates.children {
        let body = infra::render(&child.template, Format::Json, false).expect("render a child");
        upload(&format!("{prefix}{}", child.file_name), &body);
    }
    (templates.parent, text, templates.children)
}

/// Puts `body` into moto's S3 at the `https://s3.amazonaws.com/<bucket>/<key>` `url`
/// (creating the bucket), as `aws s3 cp` would: a plain PUT, which moto takes unsigned.
fn upload(url: &str, body: &str) {
    let path = url
        .strip_prefix("https://s3.amazonaws.com/")
        .expect("an s3.amazonaws.com URL");
    let endpoint = moto_url();
    let put = |target: &str, data: Option<&str>| {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-sS", "-f", "-X", "PUT", target]);
        if let Some(d) = data {
            // Not curl's default form type: moto's server would read the body as a form.
            cmd.args(["-H", "Content-Type: application/json", "--data-binary", d]);
        }
        cmd.output().expect("run curl")
    };
    // The bucket may exist already (another test made it): only the object must land.
    put(&format!("{endpoint}/{TEMPLATE_BUCKET}"), None);
    let file = tempfile::NamedTempFile::new().expect("a temporary file");
    std::fs::write(file.path(), body).expect("write the child template");
    let out = put(
        &format!("{endpoint}/{path}"),
        Some(&format!("@{}", file.path().display())),
    );
    assert!(
        out.status.success(),
        "PUT {path} into moto's S3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What a real account would already have, made in moto: the hosted zone, the AMI parameter
/// and a certificate. moto does not model AWS::CertificateManager::Certificate (its
/// placeholder has no ARN for the listener), so the stack uses a certificate moto issued,
/// through the ExistingCertificateArn parameter. The parameters every stack gets.
async fn prerequisites(
    config: &aws_config::SdkConfig,
    project: &str,
) -> BTreeMap<&'static str, String> {
    let ec2 = aws_sdk_ec2::Client::new(config);
    let zone_id = hosted_zone(config).await;
    let images = ec2
        .describe_images()
        .send()
        .await
        .expect("moto ec2 DescribeImages");
    let image_id = images
        .images()
        .first()
        .and_then(|i| i.image_id())
        .expect("moto lists an AMI");
    aws_sdk_ssm::Client::new(config)
        .put_parameter()
        .name(MOTO_AMI_PARAMETER)
        .value(image_id)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .expect("moto ssm PutParameter");
    let certificate = aws_sdk_acm::Client::new(config)
        .request_certificate()
        .domain_name(format!("*.{DOMAIN}"))
        .validation_method(aws_sdk_acm::types::ValidationMethod::Dns)
        .send()
        .await
        .expect("moto acm RequestCertificate")
        .certificate_arn()
        .expect("a certificate ARN")
        .to_string();
    BTreeMap::from([
        ("ProjectName", project.to_string()),
        ("HostedZoneId", zone_id),
        ("DomainName", DOMAIN.to_string()),
        ("ExistingCertificateArn", certificate),
        (
            "DebUrl",
            "https://example.invalid/csagent_0.1.0_amd64.deb".to_string(),
        ),
    ])
}

/// CreateStack, then waits; panics with the failed resources' reasons unless it reaches
/// CREATE_COMPLETE.
async fn create_stack(
    cfn: &aws_sdk_cloudformation::Client,
    label: &str,
    stack_name: &str,
    body: &str,
    params: &BTreeMap<&str, String>,
) -> aws_sdk_cloudformation::types::Stack {
    cfn.create_stack()
        .stack_name(stack_name)
        .template_body(body)
        .set_parameters(Some(
            params
                .iter()
                .map(|(k, v)| {
                    Parameter::builder()
                        .parameter_key(*k)
                        .parameter_value(v)
                        .build()
                })
                .collect(),
        ))
        .capabilities(Capability::CapabilityIam)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{label}: CreateStack: {}", error_text(&e)));
    let stack = wait_for_stack(cfn, stack_name).await;
    let status = stack.stack_status().map(StackStatus::as_str).unwrap_or("?");
    println!("{label}: moto stack {stack_name}: {status}");
    if stack.stack_status() != Some(&StackStatus::CreateComplete) {
        let events = cfn
            .describe_stack_events()
            .stack_name(stack_name)
            .send()
            .await
            .map(|o| o.stack_events().to_vec())
            .unwrap_or_default();
        let failed: Vec<String> = events
            .iter()
            .filter(|e| {
                e.resource_status()
                    .is_some_and(|s| s.as_str().ends_with("FAILED"))
            })
            .map(|e| {
                format!(
                    "  {} {}: {}",
                    e.logical_resource_id().unwrap_or("?"),
                    e.resource_status().map(|s| s.as_str()).unwrap_or("?"),
                    e.resource_status_reason().unwrap_or("")
                )
            })
            .collect();
        panic!(
            "{label}: stack {stack_name} is {status}, not CREATE_COMPLETE\n  reason: {}\n{}",
            stack.stack_status_reason().unwrap_or("(none)"),
            failed.join("\n")
        );
    }
    stack
}

/// The stack's outputs by key.
fn outputs_of(stack: &aws_sdk_cloudformation::types::Stack) -> BTreeMap<String, String> {
    stack
        .outputs()
        .iter()
        .filter_map(|o| Some((o.output_key()?.to_string(), o.output_value()?.to_string())))
        .collect()
}

/// Creates the stack in moto, waits for it, and checks what the agent relies on. Prints one
/// line per finding; panics with every problem at once.
async fn deploy(developers: u32, format: Format, optional: Optional) {
    let label = format!("dev={developers} {format:?} (optional: {optional:?})");
    let (template, body, children) = generate(developers, format, optional);
    let hosts = children.len() as u32 + 1;
    let config = aws().await;
    let cfn = aws_sdk_cloudformation::Client::new(&config);
    let ec2 = aws_sdk_ec2::Client::new(&config);

    // A project per stack, so stacks in the same moto share no secret or log group name.
    let project = unique(&format!("ci{developers}"));
    let stack_name = format!("csagent-{project}");
    let mut params = prerequisites(&config, &project).await;
    match optional {
        Optional::All => {
            let key = unique("csagent-ci");
            ec2.create_key_pair()
                .key_name(&key)
                .send()
                .await
                .expect("moto ec2 CreateKeyPair");
            params.extend([
                ("KeyPairName", key),
                ("AdminSshCidr", "203.0.113.0/24".into()),
                ("AlarmEmail", "ops@example.com".into()),
                (
                    "DebUrl",
                    "s3://csagent-artifacts/csagent_0.1.0_amd64.deb".into(),
                ),
                ("AccessLogBucket", "csagent-alb-logs".into()),
                ("TeamImageTag", "4.96.4-team.1".into()),
                ("ScheduleStart", "cron(0 8 ? * MON-FRI *)".into()),
                ("ScheduleStop", "cron(0 20 ? * MON-FRI *)".into()),
                ("ScheduleTimezone", "Europe/Berlin".into()),
                ("IdleStopHours", "2".into()),
            ]);
        }
        Optional::Oidc => {
            // The client secret lives in Secrets Manager, outside <project>/; the stack only
            // names it.
            let secret = format!("{}/oidc-client-secret", unique("csagent-ci-sso"));
            aws_sdk_secretsmanager::Client::new(&config)
                .create_secret()
                .name(&secret)
                .secret_string("not-a-real-client-secret")
                .send()
                .await
                .expect("moto secretsmanager CreateSecret");
            params.extend([
                ("SsoProvider", "oidc".to_string()),
                ("OidcIssuer", OIDC_ISSUER.to_string()),
                (
                    "OidcAuthorizationEndpoint",
                    format!("{OIDC_ISSUER}/v1/authorize"),
                ),
                ("OidcTokenEndpoint", format!("{OIDC_ISSUER}/v1/token")),
                ("OidcUserInfoEndpoint", format!("{OIDC_ISSUER}/v1/userinfo")),
                ("OidcClientId", "0oa1example2client3".to_string()),
                ("OidcClientSecretId", secret),
            ]);
        }
        Optional::Cognito => {
            params.extend([
                ("SsoProvider", "cognito".to_string()),
                ("CognitoUserPoolArn", COGNITO_POOL_ARN.to_string()),
                ("CognitoUserPoolClientId", COGNITO_CLIENT_ID.to_string()),
                ("CognitoUserPoolDomain", COGNITO_DOMAIN.to_string()),
            ]);
        }
        Optional::None => {}
    }

    let started = Instant::now();
    let stack = create_stack(&cfn, &label, &stack_name, &body, &params).await;
    let seconds = started.elapsed().as_secs_f64();

    // The stack has what the agent relies on.
    let mut problems = Vec::new();
    let outputs = outputs_of(&stack);
    let outputs: BTreeMap<&str, &str> = outputs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for n in 1..=developers {
        let key = format!("Dev{n}Url");
        let want = format!("https://dev{n}.{DOMAIN}");
        if outputs.get(key.as_str()) != Some(&want.as_str()) {
            problems.push(format!(
                "output {key} is {:?}, want {want:?}",
                outputs.get(key.as_str())
            ));
        }
    }
    for key in [
        "LoadBalancerDnsName",
        "InstanceId",
        "DataVolumeId",
        "TeamImageRepositoryUri",
    ] {
        if outputs.get(key).is_none_or(|v| v.is_empty()) {
            problems.push(format!("output {key} missing"));
        }
    }

    // The team image repository: where the agent's image is pushed, as the output says;
    // `<project>/code-server-<8 hex digits of the stack id>`.
    let repository = outputs
        .get("TeamImageRepositoryUri")
        .and_then(|uri| uri.split_once(".amazonaws.com/"))
        .map(|(_, name)| name.to_string())
        .unwrap_or_default();
    let suffix = repository
        .strip_prefix(&format!("{project}/code-server-"))
        .unwrap_or_default();
    if suffix.len() != 8 || !suffix.bytes().all(|b| b.is_ascii_hexdigit()) {
        problems.push(format!(
            "output TeamImageRepositoryUri names {repository:?}, want {project}/code-server-<stack suffix>"
        ));
    }
    match aws_sdk_ecr::Client::new(&config)
        .describe_repositories()
        .repository_names(&repository)
        .send()
        .await
    {
        // Not scan on push: moto keeps the CloudFormation spelling (`ScanOnPush`) and
        // answers it back where the API has `scanOnPush`, so it always reads false here;
        // infra/tests/template.rs checks the property.
        Ok(out) => {
            let immutable = out
                .repositories()
                .first()
                .and_then(|r| r.image_tag_mutability())
                .map(|m| m.as_str().to_string());
            if immutable.as_deref() != Some("IMMUTABLE") {
                problems.push(format!(
                    "repository {repository}: tag mutability {immutable:?}, want IMMUTABLE"
                ));
            }
        }
        Err(e) => problems.push(format!(
            "repository {repository}: DescribeRepositories: {}",
            error_text(&e)
        )),
    }

    let listed = stack_resources(&cfn, &stack_name).await;
    report_placeholders(&label, &template, optional, &listed);
    // The scheduler's role exists exactly when a schedule is on (moto models IAM roles).
    let has_role = listed.iter().any(|id| id == "ScheduleRole");
    if has_role != (optional == Optional::All) {
        problems.push(format!(
            "ScheduleRole {} with the schedule {}",
            if has_role { "created" } else { "not created" },
            if optional == Optional::All {
                "on"
            } else {
                "off"
            }
        ));
    }

    let prefix = format!("/aws/ec2/{project}/");
    let groups: BTreeSet<String> = aws_sdk_cloudwatchlogs::Client::new(&config)
        .describe_log_groups()
        .log_group_name_prefix(&prefix)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .expect("moto logs DescribeLogGroups")
        .into_iter()
        .filter_map(|g| g.log_group_name().map(str::to_string))
        .collect();
    let mut want_groups: BTreeSet<String> = (1..=developers)
        .map(|n| format!("{prefix}containers/dev{n}"))
        .collect();
    want_groups.insert(format!("{prefix}agent"));
    want_groups.insert(format!("{prefix}system"));
    want_groups.insert(format!("{prefix}docker"));
    let missing_groups: Vec<&String> = want_groups.difference(&groups).collect();
    if !missing_groups.is_empty() {
        problems.push(format!("log groups missing: {missing_groups:?}"));
    }

    if let (Some(instance), Some(volume)) = (outputs.get("InstanceId"), outputs.get("DataVolumeId"))
    {
        let volumes = ec2
            .describe_volumes()
            .volume_ids(*volume)
            .send()
            .await
            .expect("moto ec2 DescribeVolumes");
        let attachments = volumes
            .volumes()
            .first()
            .map(|v| v.attachments().to_vec())
            .unwrap_or_default();
        let device = attachments
            .iter()
            .find(|a| a.instance_id() == Some(*instance))
            .and_then(|a| a.device());
        if device != Some("/dev/sdf") {
            problems.push(format!(
                "data volume {volume} not attached to {instance} as /dev/sdf: {attachments:?}"
            ));
        }
    }

    problems.extend(check_sso(&config, &cfn, &stack_name, developers, optional, &outputs).await);
    problems.extend(
        check_hosts(
            &config,
            &cfn,
            &stack_name,
            &project,
            (&template, &children),
            developers,
            &outputs,
        )
        .await,
    );

    println!(
        "{label}: moto: {hosts} host(s), {} resources in the parent, {} outputs, {} log groups, CREATE_COMPLETE in {seconds:.1} s",
        listed.len(),
        outputs.len(),
        want_groups.intersection(&groups).count()
    );
    assert!(
        problems.is_empty(),
        "{label}: stack {stack_name}:\n  {}",
        problems.join("\n  ")
    );
}

/// Each developer's listener rule authenticates (Order 1) before it forwards (Order 2) with
/// SSO, and only forwards without; the SsoCallbackUrls output exists only with SSO. The
/// problems found.
async fn check_sso(
    config: &aws_config::SdkConfig,
    cfn: &aws_sdk_cloudformation::Client,
    stack_name: &str,
    developers: u32,
    optional: Optional,
    outputs: &BTreeMap<&str, &str>,
) -> Vec<String> {
    use aws_sdk_elasticloadbalancingv2::types::ActionTypeEnum;
    let mut problems = Vec::new();
    // Hosts 2..'s developers' rules are in their nested stacks.
    let mut ids = physical_ids(cfn, stack_name).await;
    let nested: Vec<String> = ids
        .iter()
        .filter(|(logical, _)| logical.starts_with("Host") && logical.ends_with("Stack"))
        .map(|(_, physical)| physical.clone())
        .collect();
    for child in nested {
        ids.extend(physical_ids(cfn, &child).await);
    }
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(config);
    let sso = matches!(optional, Optional::Oidc | Optional::Cognito);
    for n in 1..=developers {
        let Some(arn) = ids.get(&format!("Dev{n}ListenerRule")) else {
            problems.push(format!("Dev{n}ListenerRule not listed"));
            continue;
        };
        let rules = elb
            .describe_rules()
            .rule_arns(arn)
            .send()
            .await
            .unwrap_or_else(|e| panic!("DescribeRules {arn}: {}", error_text(&e)));
        let mut actions = rules
            .rules()
            .first()
            .map(|r| r.actions().to_vec())
            .unwrap_or_default();
        actions.sort_by_key(|a| a.order());
        let kinds: Vec<(Option<i32>, Option<&ActionTypeEnum>)> =
            actions.iter().map(|a| (a.order(), a.r#type())).collect();
        let want: Vec<(Option<i32>, Option<&ActionTypeEnum>)> = match optional {
            Optional::Oidc => vec![
                (Some(1), Some(&ActionTypeEnum::AuthenticateOidc)),
                (Some(2), Some(&ActionTypeEnum::Forward)),
            ],
            Optional::Cognito => vec![
                (Some(1), Some(&ActionTypeEnum::AuthenticateCognito)),
                (Some(2), Some(&ActionTypeEnum::Forward)),
            ],
            Optional::None | Optional::All => vec![(None, Some(&ActionTypeEnum::Forward))],
        };
        if kinds != want {
            problems.push(format!("dev{n}: rule actions {kinds:?}, want {want:?}"));
        }
        if let Some(oidc) = actions.first().and_then(|a| a.authenticate_oidc_config()) {
            // moto keeps the dynamic reference as text; CloudFormation resolves it in AWS.
            let secret = oidc.client_secret().unwrap_or_default();
            let ok = oidc.issuer() == Some(OIDC_ISSUER)
                && oidc.on_unauthenticated_request().map(|o| o.as_str()) == Some("authenticate")
                && oidc.session_timeout() == Some(i64::from(infra::sso::DEFAULT_SESSION_SECONDS))
                && secret.starts_with("{{resolve:secretsmanager:csagent-ci-sso-")
                && secret.ends_with("/oidc-client-secret:SecretString}}");
            if !ok {
                problems.push(format!("dev{n}: authenticate-oidc config {oidc:?}"));
            }
        }
        if let Some(cognito) = actions
            .first()
            .and_then(|a| a.authenticate_cognito_config())
        {
            let ok = cognito.user_pool_arn() == Some(COGNITO_POOL_ARN)
                && cognito.user_pool_client_id() == Some(COGNITO_CLIENT_ID)
                && cognito.user_pool_domain() == Some(COGNITO_DOMAIN)
                && cognito.on_unauthenticated_request().map(|o| o.as_str()) == Some("authenticate");
            if !ok {
                problems.push(format!("dev{n}: authenticate-cognito config {cognito:?}"));
            }
        }
    }
    // Not the ALB's egress to the IdP: moto ignores a template's SecurityGroupEgress (every
    // group keeps its default allow-all egress); infra/tests/sso.rs checks it.
    if outputs.contains_key("SsoCallbackUrls") != sso {
        problems.push(format!(
            "output SsoCallbackUrls: present {}, want {sso}",
            !sso
        ));
    }
    problems
}

/// Each host's developer-set parameter lists its developers, each developer is on exactly one
/// host, and its target group targets that host's instance on its port. moto creates the
/// target group with its port but does not register a template's `Targets` (its
/// CloudFormation model ignores them, so DescribeTargetHealth is empty): the target is the
/// template's `Targets`, resolved through the deployed stacks (the child's parameter, the
/// value the parent passed, that resource's physical id) to an instance id, which must be the
/// host's `InstanceId` output; were moto to register targets, they must be exactly that. The
/// problems found.
async fn check_hosts(
    config: &aws_config::SdkConfig,
    cfn: &aws_sdk_cloudformation::Client,
    stack_name: &str,
    project: &str,
    (parent_template, children): (&Value, &[ChildTemplate]),
    developers: u32,
    outputs: &BTreeMap<&str, &str>,
) -> Vec<String> {
    let hosts = children.len() as u32 + 1;
    let ssm = aws_sdk_ssm::Client::new(config);
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(config);
    let mut problems = Vec::new();
    // Each host's snapshot parameter, as the stack took it.
    let stack = cfn
        .describe_stacks()
        .stack_name(stack_name)
        .send()
        .await
        .expect("describe the stack");
    let taken: BTreeMap<String, String> = stack.stacks()[0]
        .parameters()
        .iter()
        .filter_map(|p| {
            Some((
                p.parameter_key()?.to_string(),
                p.parameter_value()?.to_string(),
            ))
        })
        .collect();
    let named: Vec<&str> = RESTORE_SNAPSHOTS.split(',').collect();
    for n in 1..=hosts {
        let key = if n == 1 {
            "DataVolumeSnapshotId".to_string()
        } else {
            format!("Host{n}DataVolumeSnapshotId")
        };
        let want = if hosts >= 3 {
            named.get(n as usize - 1).copied().unwrap_or_default()
        } else {
            ""
        };
        if taken.get(&key).map(String::as_str) != Some(want) {
            problems.push(format!(
                "host {n}: parameter {key} is {:?}, want {want:?}",
                taken.get(&key)
            ));
        }
    }
    let parent = physical_ids(cfn, stack_name).await;
    // dev name -> (host, port) from the parameters.
    let mut on_host: BTreeMap<String, (u32, i64)> = BTreeMap::new();
    // dev k -> (the host whose stack holds its target group, its ARN, its template resource).
    let mut target_groups: BTreeMap<u32, (u32, String, Value)> = BTreeMap::new();
    let mut collect = |host: u32,
                       template: &Value,
                       ids: &BTreeMap<String, String>,
                       problems: &mut Vec<String>| {
        for k in 1..=developers {
            let id = format!("Dev{k}TargetGroup");
            let Some(r) = template["Resources"].get(&id) else {
                continue;
            };
            match ids.get(&id) {
                Some(arn) => {
                    if target_groups
                        .insert(k, (host, arn.clone(), r.clone()))
                        .is_some()
                    {
                        problems.push(format!("dev{k} has a target group in two stacks"));
                    }
                }
                None => problems.push(format!("{id} of host {host} was not created")),
            }
        }
    };
    collect(1, parent_template, &parent, &mut problems);
    let mut instances = BTreeMap::new();
    for n in 1..=hosts {
        let key = if n == 1 {
            "InstanceId".to_string()
        } else {
            format!("Host{n}InstanceId")
        };
        match outputs.get(key.as_str()) {
            Some(id) if !id.is_empty() => {
                instances.insert(n, id.to_string());
            }
            _ => problems.push(format!("output {key} missing")),
        }
        let name = csagent_contract::names::developers_parameter(project, n);
        for (dev, port) in developer_set(&ssm, &name).await {
            if let Some((other, _)) = on_host.insert(dev.clone(), (n, port)) {
                problems.push(format!("{dev} is on host {other} and host {n}"));
            }
        }
        if n > 1 {
            match parent.get(&format!("Host{n}Stack")) {
                Some(child) => {
                    let child_ids = physical_ids(cfn, child).await;
                    collect(
                        n,
                        &children[n as usize - 2].template,
                        &child_ids,
                        &mut problems,
                    );
                }
                None => problems.push(format!("no nested stack Host{n}Stack")),
            }
        }
    }
    if on_host.len() as u32 != developers {
        problems.push(format!(
            "the hosts' parameters list {} developers, want {developers}",
            on_host.len()
        ));
    }
    for k in 1..=developers {
        let dev = format!("dev{k}");
        let Some(&(host, port)) = on_host.get(&dev) else {
            problems.push(format!("{dev} is on no host"));
            continue;
        };
        let want_port = 8443 + i64::from(k) - 1;
        if port != want_port {
            problems.push(format!(
                "{dev}: port {port} in its host's parameter, want {want_port}"
            ));
        }
        let Some((tg_host, tg, resource)) = target_groups.get(&k) else {
            problems.push(format!("{dev}: no target group in any stack"));
            continue;
        };
        if *tg_host != host {
            problems.push(format!(
                "{dev}: on host {host} by its parameter, its target group in host {tg_host}'s stack"
            ));
        }
        let Some(want_instance) = instances.get(&host) else {
            continue;
        };
        // The deployed target group's port.
        let deployed_port = elb
            .describe_target_groups()
            .target_group_arns(tg)
            .send()
            .await
            .ok()
            .and_then(|o| o.target_groups().first().and_then(|g| g.port()));
        if deployed_port != Some(want_port as i32) {
            problems.push(format!(
                "{dev}: target group port {deployed_port:?}, want {want_port}"
            ));
        }
        // Its target: the template's, resolved through the deployed stacks.
        let target = &resource["Properties"]["Targets"][0];
        let mut logical = target["Id"]["Ref"].as_str().unwrap_or_default().to_string();
        if host > 1 {
            let passed = &parent_template["Resources"][format!("Host{host}Stack")]["Properties"]["Parameters"]
                [&logical];
            logical = passed["Ref"].as_str().unwrap_or_default().to_string();
        }
        let resolved = parent.get(&logical);
        if resolved != Some(want_instance) || target["Port"] != want_port {
            problems.push(format!(
                "{dev} (host {host}): its target group targets {logical} = {resolved:?} port {}, want {want_instance} port {want_port}",
                target["Port"]
            ));
        }
        let registered: Vec<(String, i32)> = elb
            .describe_target_health()
            .target_group_arn(tg)
            .send()
            .await
            .map(|o| {
                o.target_health_descriptions()
                    .iter()
                    .filter_map(|d| d.target())
                    .map(|t| {
                        (
                            t.id().unwrap_or_default().to_string(),
                            t.port().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !registered.is_empty() && registered != vec![(want_instance.clone(), want_port as i32)] {
            problems.push(format!(
                "{dev}: registered targets {registered:?}, want {want_instance}:{want_port}"
            ));
        }
    }
    problems
}

/// Physical ids of the stack's resources by logical id.
async fn physical_ids(
    cfn: &aws_sdk_cloudformation::Client,
    name: &str,
) -> BTreeMap<String, String> {
    cfn.list_stack_resources()
        .stack_name(name)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("ListStackResources {name}: {}", error_text(&e)))
        .into_iter()
        .filter_map(|r| {
            Some((
                r.logical_resource_id()?.to_string(),
                r.physical_resource_id()?.to_string(),
            ))
        })
        .collect()
}

/// `--developers 8` then `--developers 9` as a stack update: the instance is not replaced
/// (same physical id) and its user data is the same, so CloudFormation neither stops nor
/// replaces it; the developer-set parameter holds the nine developers; dev9's target group,
/// listener rule and log group exist. (moto takes the secrets as placeholders: the template
/// holds dev9's two, which infra/tests/template.rs checks.)
#[tokio::test(flavor = "multi_thread")]
async fn adding_a_developer_updates_the_parameter_not_the_instance() {
    let config = aws().await;
    let cfn = aws_sdk_cloudformation::Client::new(&config);
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let ssm = aws_sdk_ssm::Client::new(&config);
    let project = unique("ciupd");
    let stack_name = format!("csagent-{project}");
    let params = prerequisites(&config, &project).await;
    let (eight, body8, _) = generate(8, Format::Json, Optional::None);
    let (nine, body9, no_children) = generate(9, Format::Json, Optional::None);
    assert!(
        no_children.is_empty(),
        "9 developers still fit one t3.2xlarge (the capacity model's 10)"
    );
    assert_eq!(
        eight["Resources"]["Instance"], nine["Resources"]["Instance"],
        "the instance's properties do not depend on the developers"
    );
    create_stack(&cfn, "8 developers", &stack_name, &body8, &params).await;
    let parameter = csagent_contract::names::developers_parameter(&project, 1);
    let instance_before = physical_ids(&cfn, &stack_name).await["Instance"].clone();
    let user_data_before = user_data(&ec2, &instance_before).await;
    let set_before = developer_set(&ssm, &parameter).await;
    assert_eq!(set_before.len(), 8, "{set_before:?}");

    let t = Instant::now();
    cfn.update_stack()
        .stack_name(&stack_name)
        .template_body(&body9)
        .set_parameters(Some(
            params
                .iter()
                .map(|(k, v)| {
                    Parameter::builder()
                        .parameter_key(*k)
                        .parameter_value(v)
                        .build()
                })
                .collect(),
        ))
        .capabilities(Capability::CapabilityIam)
        .send()
        .await
        .unwrap_or_else(|e| panic!("UpdateStack: {}", error_text(&e)));
    let stack = wait_for_stack(&cfn, &stack_name).await;
    assert_eq!(
        stack.stack_status(),
        Some(&StackStatus::UpdateComplete),
        "{:?}",
        stack.stack_status_reason()
    );
    println!("moto update-stack 8 -> 9 developers in {:?}", t.elapsed());

    let ids = physical_ids(&cfn, &stack_name).await;
    assert_eq!(
        ids["Instance"], instance_before,
        "the instance is not replaced"
    );
    assert_eq!(
        user_data(&ec2, &instance_before).await,
        user_data_before,
        "the user data is unchanged"
    );
    let state = ec2
        .describe_instances()
        .instance_ids(&instance_before)
        .send()
        .await
        .expect("moto ec2 DescribeInstances")
        .reservations()
        .first()
        .and_then(|r| r.instances().first())
        .and_then(|i| i.state())
        .and_then(|s| s.name())
        .map(|n| n.as_str().to_string());
    assert_eq!(state.as_deref(), Some("running"), "not stopped");

    let set_after = developer_set(&ssm, &parameter).await;
    assert_eq!(set_after.len(), 9, "{set_after:?}");
    assert_eq!(set_after[..8], set_before[..]);
    assert_eq!(set_after[8], ("dev9".to_string(), 8451));
    for id in ["Dev9TargetGroup", "Dev9ListenerRule"] {
        assert!(
            ids.get(id).is_some_and(|p| !p.is_empty()),
            "{id} has a physical id"
        );
    }
    for id in ["Dev9PasswordSecret", "Dev9ClaudeApiKeySecret"] {
        assert_eq!(
            nine["Resources"][id]["Type"], "AWS::SecretsManager::Secret",
            "{id} in the updated template"
        );
    }
    let group = format!("/aws/ec2/{project}/containers/dev9");
    assert!(
        log_groups(&config, &project).await.contains(&group),
        "log group {group}"
    );
}

async fn user_data(ec2: &aws_sdk_ec2::Client, instance: &str) -> String {
    ec2.describe_instance_attribute()
        .instance_id(instance)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .expect("moto ec2 DescribeInstanceAttribute")
        .user_data()
        .and_then(|u| u.value())
        .expect("the instance has user data")
        .to_string()
}

/// The `[[developer]]` (name, port) pairs of a developer-set parameter.
async fn developer_set(ssm: &aws_sdk_ssm::Client, name: &str) -> Vec<(String, i64)> {
    let value = ssm
        .get_parameter()
        .name(name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetParameter {name}: {}", error_text(&e)))
        .parameter()
        .and_then(|p| p.value())
        .unwrap_or_default()
        .to_string();
    let t: toml::Table = toml::from_str(&value).unwrap_or_else(|e| panic!("{value}: {e}"));
    t["developer"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    (
                        d["name"].as_str().unwrap_or("").to_string(),
                        d["port"].as_integer().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A fresh hosted zone for `DOMAIN`; its id without the `/hostedzone/` prefix.
async fn hosted_zone(config: &aws_config::SdkConfig) -> String {
    let zone = aws_sdk_route53::Client::new(config)
        .create_hosted_zone()
        .name(DOMAIN)
        .caller_reference(unique("csagent-ci"))
        .send()
        .await
        .expect("moto route53 CreateHostedZone");
    let id = zone.hosted_zone().map(|z| z.id()).expect("a hosted zone");
    id.rsplit('/').next().unwrap_or(id).to_string()
}

/// Polls the stack until it leaves *_IN_PROGRESS or `STACK_TIMEOUT` passes.
async fn wait_for_stack(
    cfn: &aws_sdk_cloudformation::Client,
    name: &str,
) -> aws_sdk_cloudformation::types::Stack {
    let start = Instant::now();
    loop {
        let out = cfn
            .describe_stacks()
            .stack_name(name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("DescribeStacks {name}: {}", error_text(&e)));
        let stack = out
            .stacks()
            .first()
            .cloned()
            .unwrap_or_else(|| panic!("moto does not list stack {name}"));
        let in_progress = stack
            .stack_status()
            .is_some_and(|s| s.as_str().ends_with("_IN_PROGRESS"));
        if !in_progress || start.elapsed() > STACK_TIMEOUT {
            return stack;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Logical ids of the resources moto lists for the stack, as listed (moto may list one twice).
async fn stack_resources(cfn: &aws_sdk_cloudformation::Client, name: &str) -> Vec<String> {
    cfn.list_stack_resources()
        .stack_name(name)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("ListStackResources {name}: {}", error_text(&e)))
        .into_iter()
        .filter_map(|r| r.logical_resource_id().map(str::to_string))
        .collect()
}

/// moto lists only the resource types it models; the others (alarms, secrets, backup, ...) it
/// accepts as placeholders. Prints them by type; they are not a failure. Expected: every
/// unconditional resource, the vault and repository (created unless adopted) and, with every
/// option on, every other conditional one except the certificate (each deployment here brings
/// its own through ExistingCertificateArn) and the Cognito pool.
fn report_placeholders(label: &str, template: &Value, optional: Optional, listed: &[String]) {
    let listed: BTreeSet<&str> = listed.iter().map(String::as_str).collect();
    let resources = template["Resources"]
        .as_object()
        .expect("the template has Resources");
    let mut by_type: BTreeMap<&str, usize> = BTreeMap::new();
    for (id, r) in resources {
        let expected = match r.get("Condition").and_then(Value::as_str) {
            None => true,
            // True unless an Existing* parameter is set (none of these deployments sets one).
            Some("CreateBackupVault" | "CreateTeamImageRepository") => true,
            // Each deployment brings its certificate; none has the stack create a pool.
            Some("CreateCertificate" | "CreateCognitoPool") => false,
            Some(_) => optional == Optional::All,
        };
        if expected && !listed.contains(id.as_str()) {
            *by_type
                .entry(r["Type"].as_str().unwrap_or("?"))
                .or_default() += 1;
        }
    }
    if !by_type.is_empty() {
        let list: Vec<String> = by_type.iter().map(|(k, v)| format!("{k} x{v}")).collect();
        println!(
            "{label}: not modelled by moto (placeholders): {}",
            list.join(", ")
        );
    }
}

/// An SDK error with the service's message (the Display of an SdkError is only its kind).
fn error_text<E: std::error::Error + 'static>(e: &E) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}
