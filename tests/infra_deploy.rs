//! The template `infra` emits deploys: moto creates the stack (CREATE_COMPLETE) for 1, 8 and 40
//! developers, as JSON and as YAML, with every optional parameter off and on, and the stack
//! has what the agent relies on: one URL output per developer, the load balancer, instance
//! and data volume outputs, the agent's and every developer's log group, the data volume
//! attached to the instance as /dev/sdf, and the team image's ECR repository (immutable tags)
//! with its URI as an output.
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
use common::{aws, unique};
use infra::Format;
use infra::cli::Cli;
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
    /// alarm e-mail, an s3:// package and ALB access logs (parameters).
    All,
}

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
async fn forty_developers_json_deploy() {
    deploy(40, Format::Json, Optional::None).await;
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
    let params: Vec<Parameter> = stack_parameters(&config, &project, Optional::None)
        .await
        .iter()
        .map(|(k, v)| {
            Parameter::builder()
                .parameter_key(*k)
                .parameter_value(v)
                .build()
        })
        .collect();
    let (eight, body8) = generate(8, Format::Json, Optional::None);
    let (nine, body9) = generate(9, Format::Json, Optional::None);
    assert_eq!(
        eight["Resources"]["Instance"], nine["Resources"]["Instance"],
        "the instance's properties do not depend on the developers"
    );

    cfn.create_stack()
        .stack_name(&stack_name)
        .template_body(&body8)
        .set_parameters(Some(params.clone()))
        .capabilities(Capability::CapabilityIam)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateStack: {}", error_text(&e)));
    let stack = wait_for_stack(&cfn, &stack_name).await;
    assert_eq!(
        stack.stack_status(),
        Some(&StackStatus::CreateComplete),
        "{:?}",
        stack.stack_status_reason()
    );
    let parameter = csagent_contract::names::developers_parameter(&project, 1);
    let instance_before = physical_id(&cfn, &stack_name, "Instance").await;
    let user_data_before = user_data(&ec2, &instance_before).await;
    let set_before = developer_set(&ssm, &parameter).await;
    assert_eq!(set_before.len(), 8, "{set_before:?}");

    let t = Instant::now();
    cfn.update_stack()
        .stack_name(&stack_name)
        .template_body(&body9)
        .set_parameters(Some(params))
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

    let instance_after = physical_id(&cfn, &stack_name, "Instance").await;
    assert_eq!(
        instance_after, instance_before,
        "the instance is not replaced"
    );
    assert_eq!(
        user_data(&ec2, &instance_after).await,
        user_data_before,
        "the user data is unchanged"
    );
    let state = ec2
        .describe_instances()
        .instance_ids(&instance_after)
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
        let physical = physical_id(&cfn, &stack_name, id).await;
        assert!(!physical.is_empty(), "{id} has a physical id");
    }
    for id in ["Dev9PasswordSecret", "Dev9ClaudeApiKeySecret"] {
        assert_eq!(
            nine["Resources"][id]["Type"], "AWS::SecretsManager::Secret",
            "{id} in the updated template"
        );
    }
    let group = format!("/aws/ec2/{project}/containers/dev9");
    let groups = aws_sdk_cloudwatchlogs::Client::new(&config)
        .describe_log_groups()
        .log_group_name_prefix(&group)
        .send()
        .await
        .expect("moto logs DescribeLogGroups");
    assert!(
        groups
            .log_groups()
            .iter()
            .any(|g| g.log_group_name() == Some(group.as_str())),
        "log group {group}"
    );
}

/// The physical id of the stack's resource `logical` (ListStackResources: moto answers
/// DescribeStackResource with a body the SDK cannot parse).
async fn physical_id(cfn: &aws_sdk_cloudformation::Client, stack: &str, logical: &str) -> String {
    let resources: Vec<_> = cfn
        .list_stack_resources()
        .stack_name(stack)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("ListStackResources {stack}: {}", error_text(&e)));
    resources
        .iter()
        .find(|r| r.logical_resource_id() == Some(logical))
        .and_then(|r| r.physical_resource_id())
        .unwrap_or_else(|| panic!("{logical} is not listed with a physical id"))
        .to_string()
}

/// The instance's user data (base64, as EC2 returns it).
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

/// The developer-set parameter's (name, port) pairs, in order.
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

/// The template as `infra --developers N --domain .. --hosted-zone-id .. --format F
/// --ami-ssm-parameter ..` prints it, parsed back, and its text.
fn generate(developers: u32, format: Format, optional: Optional) -> (Value, String) {
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
    ];
    if optional == Optional::All {
        args.extend(["--password-rotation-lambda-arn", ROTATION_LAMBDA_ARN]);
    }
    let cli =
        Cli::try_parse_from(args.iter().copied()).unwrap_or_else(|e| panic!("infra {args:?}: {e}"));
    let settings = cli
        .settings()
        .unwrap_or_else(|e| panic!("infra {args:?}: {e}"));
    let template = infra::build_template(&settings);
    let text = infra::render(&template, cli.format, cli.compact).expect("render the template");
    (template, text)
}

/// Creates the stack in moto, waits for it, and checks what the agent relies on. Prints one
/// line per finding; panics with every problem at once.
async fn deploy(developers: u32, format: Format, optional: Optional) {
    let label = format!("dev={developers} {format:?} (optional: {optional:?})");
    let (template, body) = generate(developers, format, optional);
    let config = aws().await;
    let cfn = aws_sdk_cloudformation::Client::new(&config);
    let ec2 = aws_sdk_ec2::Client::new(&config);
    // A project per stack, so stacks in the same moto share no secret or log group name.
    let project = unique(&format!("ci{developers}"));
    let stack_name = format!("csagent-{project}");
    let params = stack_parameters(&config, &project, optional).await;

    cfn.create_stack()
        .stack_name(&stack_name)
        .template_body(&body)
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
    let stack = wait_for_stack(&cfn, &stack_name).await;
    let status = stack.stack_status().map(StackStatus::as_str).unwrap_or("?");
    println!("{label}: moto stack {stack_name}: {status}");
    if stack.stack_status() != Some(&StackStatus::CreateComplete) {
        let events = cfn
            .describe_stack_events()
            .stack_name(&stack_name)
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

    // The stack has what the agent relies on.
    let mut problems = Vec::new();
    let outputs: BTreeMap<&str, &str> = stack
        .outputs()
        .iter()
        .filter_map(|o| Some((o.output_key()?, o.output_value()?)))
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

    // The team image repository: where the agent's image is pushed, as the output says.
    let repository = format!("{project}/code-server");
    match outputs.get("TeamImageRepositoryUri") {
        Some(uri) if uri.ends_with(&format!("/{repository}")) => {}
        other => problems.push(format!(
            "output TeamImageRepositoryUri is {other:?}, want .../{repository}"
        )),
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

    println!(
        "{label}: moto: {} resources, {} outputs, {} log groups",
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

/// The stack's Parameters, with what the real account would already have created in moto.
async fn stack_parameters(
    config: &aws_config::SdkConfig,
    project: &str,
    optional: Optional,
) -> BTreeMap<&'static str, String> {
    let ec2 = aws_sdk_ec2::Client::new(config);

    // What the real account would already have: the hosted zone, the AMI parameter and, when
    // used, the key pair. moto does not model AWS::CertificateManager::Certificate (its
    // placeholder has no ARN for the listener), so the stack uses a certificate moto issued,
    // through the ExistingCertificateArn parameter.
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

    let mut params = BTreeMap::from([
        ("ProjectName", project.to_string()),
        ("HostedZoneId", zone_id),
        ("DomainName", DOMAIN.to_string()),
        ("ExistingCertificateArn", certificate),
    ]);
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
            ]);
        }
        Optional::None => {
            params.insert(
                "DebUrl",
                "https://example.invalid/csagent_0.1.0_amd64.deb".into(),
            );
        }
    }

    params
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
/// unconditional resource and, with every option on, every conditional one except the
/// certificate (each deployment here brings its own through ExistingCertificateArn).
fn report_placeholders(label: &str, template: &Value, optional: Optional, listed: &[String]) {
    let listed: BTreeSet<&str> = listed.iter().map(String::as_str).collect();
    let resources = template["Resources"]
        .as_object()
        .expect("the template has Resources");
    let mut by_type: BTreeMap<&str, usize> = BTreeMap::new();
    for (id, r) in resources {
        let expected = match r.get("Condition") {
            None => true,
            Some(c) => optional == Optional::All && c != "CreateCertificate",
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
