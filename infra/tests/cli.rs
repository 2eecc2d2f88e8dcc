//! The command line as a user meets it: the binary's output, exit codes and error messages.

use std::process::{Command, Output};

fn infra(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_infra"))
        .args(args)
        .output()
        .expect("run the infra binary")
}

const BASE: [&str; 6] = [
    "--developers",
    "8",
    "--domain",
    "dev.example.com",
    "--hosted-zone-id",
    "Z123",
];

fn with_base<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = BASE.to_vec();
    v.extend_from_slice(extra);
    v
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn prints_a_json_template() {
    let o = infra(&BASE);
    assert!(o.status.success(), "{}", stderr(&o));
    let t: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(t["AWSTemplateFormatVersion"], "2010-09-09");
    assert!(t["Resources"]["Dev8TargetGroup"].is_object());
    assert!(t["Resources"]["Dev9TargetGroup"].is_null());
}

#[test]
fn prints_yaml_on_request() {
    let o = infra(&with_base(&["--format", "yaml"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let t: serde_json::Value = serde_yaml_ng::from_slice(&o.stdout).unwrap();
    assert_eq!(t["AWSTemplateFormatVersion"], "2010-09-09");
    assert_eq!(t["Parameters"]["DomainName"]["Default"], "dev.example.com");
}

#[test]
fn bad_options_are_named() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "--developers",
                "0",
                "--domain",
                "dev.example.com",
                "--hosted-zone-id",
                "Z1",
            ],
            "--developers: must be 1..=100",
        ),
        (
            &[
                "--developers",
                "101",
                "--domain",
                "dev.example.com",
                "--hosted-zone-id",
                "Z1",
            ],
            "--developers: must be 1..=100",
        ),
        (
            &[
                "--developers",
                "many",
                "--domain",
                "dev.example.com",
                "--hosted-zone-id",
                "Z1",
            ],
            "--developers",
        ),
        (
            &[
                "--developers",
                "8",
                "--domain",
                "localhost",
                "--hosted-zone-id",
                "Z1",
            ],
            "--domain:",
        ),
        (
            &[
                "--developers",
                "8",
                "--domain",
                "dev.example.com",
                "--hosted-zone-id",
                "z-bad",
            ],
            "--hosted-zone-id:",
        ),
        (&["--developers", "8", "--hosted-zone-id", "Z1"], "--domain"),
        (
            &["--developers", "8", "--domain", "dev.example.com"],
            "--hosted-zone-id",
        ),
        (
            &["--domain", "dev.example.com", "--hosted-zone-id", "Z1"],
            "--developers",
        ),
    ];
    for (args, want) in cases {
        let o = infra(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty(), "{args:?} printed a template");
    }
    let more: &[(&str, &str)] = &[
        ("--base-port=80", "--base-port:"),
        ("--base-port=65530", "--base-port:"),
        ("--project=Bad_Name", "--project:"),
        ("--admin-cidr=0.0.0.0/0", "--admin-cidr:"),
        ("--admin-cidr=1.2.3.4", "--admin-cidr:"),
        ("--alarm-email=nobody", "--alarm-email:"),
        ("--backup-retention-days=0", "--backup-retention-days:"),
        ("--log-retention-days=31", "--log-retention-days:"),
        ("--deb-url=http://insecure/csagent.deb", "--deb-url:"),
        ("--root-volume-gb=8", "--root-volume-gb:"),
        ("--data-volume-gb=0", "--data-volume-gb:"),
        ("--instance-type=huge", "--instance-type:"),
        (
            "--certificate-arn=arn:aws:iam::1:role/x",
            "--certificate-arn:",
        ),
        ("--format=xml", "--format"),
        // Fewer than six ARN fields once panicked instead of being refused.
        ("--certificate-arn=foo", "--certificate-arn:"),
        (
            "--password-rotation-lambda-arn=x",
            "--password-rotation-lambda-arn:",
        ),
        ("--sso=oidc", "--oidc-issuer: is required with --sso oidc"),
        ("--sso=saml", "--sso"),
        ("--oidc-issuer=http://idp.example.com", "--oidc-issuer:"),
        ("--cognito-user-pool-arn=x", "--cognito-user-pool-arn:"),
        (
            "--cognito-user-pool-client-id=a_b",
            "--cognito-user-pool-client-id:",
        ),
        ("--sso-session-seconds=0", "--sso-session-seconds:"),
        ("--existing-backup-vault=a b", "--existing-backup-vault:"),
        (
            "--existing-team-image-repository=Upper/x",
            "--existing-team-image-repository:",
        ),
        (
            "--data-volume-snapshot-id=vol-1",
            "--data-volume-snapshot-id:",
        ),
    ];
    for (arg, want) in more {
        let o = infra(&with_base(&[arg]));
        assert_eq!(o.status.code(), Some(2), "{arg}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{arg}: {}", stderr(&o));
    }
}

#[test]
fn print_agent_config_is_the_agent_toml() {
    let o = infra(&[
        "--print-agent-config",
        "--developers",
        "3",
        "--base-port",
        "9000",
        "--project",
        "acme",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert_eq!(
        text,
        infra::agent_config_toml(
            "acme",
            "ap-southeast-7",
            "vol-0123456789abcdef0",
            "/acme/csagent/host-1/developers",
            9000
        )
    );
    let t: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(
        t["volume"]["volume_id"].as_str(),
        Some("vol-0123456789abcdef0")
    );
    // Still validated.
    let o = infra(&["--print-agent-config", "--developers", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--developers: must be 1..=100"));
}

#[test]
fn print_user_data_is_a_script_with_sample_values() {
    let o = infra(&[
        "--print-user-data",
        "--developers",
        "2",
        "--deb-url",
        "file:///tmp/csagent_0.1.0_amd64.deb",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.starts_with("#!/bin/bash\n"));
    assert!(!text.contains("${"), "placeholders left: {text}");
    assert!(text.contains("DEB_URL='file:///tmp/csagent_0.1.0_amd64.deb'"));
    assert!(text.contains(&infra::agent_config_toml(
        "code-server-multi-dev",
        "ap-southeast-7",
        "vol-0123456789abcdef0",
        "/code-server-multi-dev/csagent/host-1/developers",
        8443
    )));
}

#[test]
fn help_lists_the_options() {
    let o = infra(&["--help"]);
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    for opt in [
        "--developers",
        "--domain",
        "--hosted-zone-id",
        "--format",
        "--project",
        "--alarm-email",
        "--admin-cidr",
        "--key-pair",
        "--deb-url",
        "--backup-retention-days",
        "--base-port",
        "--print-agent-config",
        "--print-user-data",
    ] {
        assert!(text.contains(opt), "--help lacks {opt}");
    }
}
