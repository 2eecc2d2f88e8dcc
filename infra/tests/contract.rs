//! The template's Parameter constraints accept exactly what infra's command line accepts:
//! the same sample values, good and bad, go through `Settings::validate` and through the
//! emitted Parameter's `AllowedPattern` (whole-value match, as CloudFormation does),
//! `MaxLength`, `MinValue`/`MaxValue` and `AllowedValues`. Otherwise a value given at deploy
//! time would get a weaker (or a stricter) check than the same value on the command line.

use infra::{Settings, build_template};
use regex::Regex;
use serde_json::Value;

/// The template's Parameters, with the optional ones (rotation) present.
fn parameters() -> Value {
    let s = Settings {
        password_rotation_lambda_arn: "arn:aws:lambda:ap-southeast-7:123456789012:function:rotate"
            .into(),
        ..Settings::default()
    };
    build_template(&s)["Parameters"].clone()
}

/// The String parameter `p`'s `AllowedPattern` as a whole-value match. Java's `\s` is ASCII
/// only, which is POSIX `[:space:]` (our patterns use `\s` only inside a class).
fn allowed_pattern(p: &Value) -> Regex {
    let pattern = p["AllowedPattern"].as_str().expect("AllowedPattern");
    let pattern = pattern.replace("\\s", "[:space:]");
    Regex::new(&format!("^(?:{pattern})$")).expect("pattern compiles")
}

/// Whether CloudFormation would accept `value` for the String parameter `p`.
fn template_accepts(p: &Value, re: &Regex, value: &str) -> bool {
    let chars = value.chars().count() as u64;
    re.is_match(value)
        && p["MaxLength"].as_u64().is_none_or(|max| chars <= max)
        && p["MinLength"].as_u64().is_none_or(|min| chars >= min)
}

/// Whether `--option value` passes `Settings::validate`.
fn cli_accepts(option: &str, set: &dyn Fn(&mut Settings, String), value: &str) -> bool {
    let mut s = Settings::default();
    set(&mut s, value.to_string());
    match s.validate() {
        Ok(()) => true,
        Err(e) if e.option == option => false,
        Err(e) => panic!("{option} {value:?}: another option failed: {e}"),
    }
}

type Setter = fn(&mut Settings, String);

fn check_strings(parameter: &str, option: &str, set: Setter, samples: &[String]) {
    let params = parameters();
    let p = &params[parameter];
    let re = allowed_pattern(p);
    for value in samples {
        let cli = cli_accepts(option, &set, value);
        let cfn = template_accepts(p, &re, value);
        assert_eq!(
            cli,
            cfn,
            "{value:?}: {option} {} it but Parameter {parameter} {} it",
            if cli { "accepts" } else { "refuses" },
            if cfn { "accepts" } else { "refuses" },
        );
    }
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn project_name() {
    let mut samples = strings(&[
        "code-server-multi-dev",
        "ab",
        "a1",
        "a-1",
        "x",
        "Bad_Name",
        "ends-",
        "1abc",
        "-ab",
        "",
        "a b",
        "é1",
        "ab\n",
        "a.b",
    ]);
    samples.push("a".repeat(32));
    samples.push("a".repeat(33));
    check_strings("ProjectName", "--project", |s, v| s.project = v, &samples);
}

#[test]
fn tag_values() {
    let mut samples = strings(&[
        "production",
        "a b/c=d+e@f-g_h.i:j",
        "",
        "a\"b",
        "é",
        "a\tb",
        "a\nb",
        "x,y",
        "a\u{a0}b",
    ]);
    samples.push("a".repeat(128));
    samples.push("a".repeat(129));
    check_strings(
        "Environment",
        "--environment",
        |s, v| s.environment = v,
        &samples,
    );
    check_strings(
        "CostCenter",
        "--cost-center",
        |s, v| s.cost_center = v,
        &samples,
    );
}

#[test]
fn instance_type() {
    let samples = strings(&[
        "t3.2xlarge",
        "m5d.large",
        "u-6tb1.metal",
        "t3",
        "T3.large",
        "t3.",
        ".large",
        "t3.large.x",
        "3t.large",
        "t3.Large",
        "t3.lar-ge",
        "",
    ]);
    // The Parameter takes AllowedValues: the capacity table's types that hold the developers
    // per host; the command line takes the same (the table, then the capacity check).
    let params = parameters();
    let allowed: Vec<&str> = params["InstanceType"]["AllowedValues"]
        .as_array()
        .expect("AllowedValues")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut samples = samples;
    samples.extend(
        infra::capacity::INSTANCE_TYPES
            .iter()
            .map(|t| t.name.to_string()),
    );
    for value in &samples {
        // The same layout on both sides: the default 8 developers on one host. (Without
        // --developers-per-host a smaller type spreads them over more hosts instead.)
        let set = |s: &mut Settings, v: String| {
            s.instance_type = v;
            s.developers_per_host = 8;
        };
        let mut s = Settings::default();
        set(&mut s, value.clone());
        let cli = match s.validate() {
            Ok(()) => true,
            Err(e) if e.option == "--instance-type" || e.option == "--developers-per-host" => false,
            Err(e) => panic!("{value:?}: another option failed: {e}"),
        };
        let cfn = allowed.contains(&value.as_str());
        assert_eq!(
            cli, cfn,
            "{value:?}: --instance-type {cli}, Parameter {cfn}"
        );
    }
    assert!(allowed.contains(&"t3.2xlarge") && !allowed.contains(&"t3.large"));
}

#[test]
fn key_pair() {
    let mut samples = strings(&["", "my key", "~", "é", "a\tb", "a\u{7f}"]);
    samples.push("k".repeat(255));
    samples.push("k".repeat(256));
    check_strings("KeyPairName", "--key-pair", |s, v| s.key_pair = v, &samples);
}

#[test]
fn admin_cidr() {
    let mut samples = strings(&[
        "",
        "203.0.113.0/24",
        "203.0.113.10/32",
        "10.0.0.0/8",
        "10.0.0.0/08",
        "128.0.0.0/1",
        "0.0.0.0/1",
        "255.255.255.255/32",
        "10.128.0.0/9",
        "172.16.0.0/12",
        "1.1.1.0/31",
        "0.0.0.0/0",
        "0.0.0.0/00",
        "1.2.3.4",
        "1.2.3.4/33",
        "10.0.0.1/24",
        "1.1.1.1/31",
        "010.0.0.0/8",
        "10.0.0.00/24",
        "256.0.0.0/8",
        "1.2.3/24",
        "1.2.3.4/+8",
        "1.2.3.4/-1",
        "1.2.3.4/",
        " 10.0.0.0/8",
        "10.0.0.0/8\n",
        "10.0.0.0/8 ",
        "10.0.0.0/8/8",
        "::/0",
        "10.0.0.0/١",
    ]);
    // Every prefix length on a few addresses, then addresses from a fixed pseudo-random
    // sequence with prefixes around their lowest set bit (where the host-bit check bites).
    for addr in [
        "0.0.0.0",
        "10.0.0.0",
        "128.0.0.0",
        "192.168.1.0",
        "255.255.255.255",
        "1.2.3.4",
    ] {
        for prefix in 0..=33 {
            samples.push(format!("{addr}/{prefix}"));
        }
    }
    let mut x: u32 = 0x2545_f491;
    for _ in 0..500 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let addr = std::net::Ipv4Addr::from(x & (u32::MAX << (x % 24)));
        let lowest = 32 - (u32::from(addr).trailing_zeros()).min(32);
        for prefix in [lowest.saturating_sub(1), lowest, lowest + 1] {
            samples.push(format!("{addr}/{prefix}"));
        }
    }
    check_strings(
        "AdminSshCidr",
        "--admin-cidr",
        |s, v| s.admin_cidr = v,
        &samples,
    );
}

#[test]
fn team_image_tag() {
    let mut samples = strings(&[
        "",
        "4.96.4",
        "4.96.4-team.1",
        "_x",
        "latest",
        ".hidden",
        "-dash",
        "a:b",
        "a/b",
        "a b",
        "é",
        "x\n",
    ]);
    samples.push("a".repeat(128));
    samples.push("a".repeat(129));
    check_strings(
        "TeamImageTag",
        "--team-image-tag",
        |s, v| s.team_image_tag = v,
        &samples,
    );
}

#[test]
fn alarm_email() {
    let samples = strings(&[
        "",
        "ops@example.com",
        "a.b+c@x.y",
        "nope",
        "a@b",
        "@x.com",
        "a@.com",
        "a@x.",
        "a b@x.com",
        "a@b@c.com",
        "a\u{a0}b@x.com",
        "a@x.com\n",
        "a\u{2003}@x.com",
        "a@x\u{3000}.com",
        "a\u{85}@x.com",
        "a@x.c\u{b}",
        "é@x.com",
    ]);
    check_strings(
        "AlarmEmail",
        "--alarm-email",
        |s, v| s.alarm_email = v,
        &samples,
    );
}

#[test]
fn deb_url() {
    // Empty is not a URL: without --deb-url the Parameter has no default and must be given.
    let samples = strings(&[
        "s3://b/c.deb",
        "https://x/a.deb",
        "file:///opt/c.deb",
        "http://x/a.deb",
        "https://",
        "https://x/a'b.deb",
        "https://x/a b.deb",
        "https://x/a\u{a0}b",
        "ftp://x",
        "s3://b/c\u{3000}",
        "S3://b/c",
        "s3:/b/c",
        "https://x/a\"b",
    ]);
    check_strings("DebUrl", "--deb-url", |s, v| s.deb_url = v, &samples);
}

#[test]
fn domain_name() {
    let label = "a".repeat(63);
    let mut samples = strings(&[
        "dev.example.com",
        "a.b",
        "x1.co",
        "1.b",
        "localhost",
        "Dev.Example.com",
        "a..b",
        "-a.com",
        "a-.com",
        "a.1com",
        "a.com.",
        ".a.com",
        "a_b.com",
        "",
        "a.b-",
    ]);
    samples.push(format!("{label}.com"));
    samples.push(format!("{label}a.com"));
    // 240 characters is the limit: room for "dev64." in front of it.
    let long = format!("{label}.{label}.{label}.{}", "b".repeat(240 - 3 * 64));
    assert_eq!(long.len(), 240);
    samples.push(long.clone());
    samples.push(format!("a{long}"));
    check_strings("DomainName", "--domain", |s, v| s.domain = v, &samples);
}

#[test]
fn certificate_arn() {
    let samples = strings(&[
        "",
        "arn:aws:acm:ap-southeast-7:123456789012:certificate/0a1b2c3d-aaaa-bbbb-cccc-0123456789ab",
        "arn:aws-us-gov:acm:us-gov-west-1:123456789012:certificate/abc",
        "arn:aws:iam::123456789012:role/x",
        "arn:aws:acm:us-east-1:12345678901:certificate/x",
        "arn:aws:acm::123456789012:certificate/x",
        "arn:aws:acm:us-east-1:123456789012:certificate/",
        "arn:aws:acm:us-east-1:123456789012:certificate/a_b",
        "arn:aws:acm:us-east-1:123456789012:certificate/a:b",
        "arn:AWS:acm:us-east-1:123456789012:certificate/x",
        "arn:aws:acm:US-east-1:123456789012:certificate/x",
    ]);
    check_strings(
        "ExistingCertificateArn",
        "--certificate-arn",
        |s, v| s.certificate_arn = v,
        &samples,
    );
}

#[test]
fn rotation_lambda_arn() {
    let arn = "arn:aws:lambda:ap-southeast-7:123456789012:function:rotate-passwords";
    let mut samples = strings(&[
        "",
        arn,
        "arn:aws:iam::123456789012:role/x",
        "arn:aws:lambda:ap-southeast-7:123456789012:function:",
        "arn:aws:lambda:ap-southeast-7:123456789012:function:a:b:c",
        "arn:aws:lambda:ap-southeast-7:123456789012:function:a:",
        "arn:aws:lambda:ap-southeast-7:123456789012:function:a.b",
    ]);
    for tail in [":live", ":$LATEST", ":7", ":a$b"] {
        samples.push(format!("{arn}{tail}"));
    }
    samples.push(format!("{arn}:{}", "q".repeat(128)));
    samples.push(format!("{arn}:{}", "q".repeat(129)));
    let base = "arn:aws:lambda:ap-southeast-7:123456789012:function:";
    samples.push(format!("{base}{}", "f".repeat(64)));
    samples.push(format!("{base}{}", "f".repeat(65)));
    check_strings(
        "PasswordRotationLambdaArn",
        "--password-rotation-lambda-arn",
        |s, v| s.password_rotation_lambda_arn = v,
        &samples,
    );
}

#[test]
fn access_log_bucket() {
    let mut samples = strings(&[
        "",
        "my-logs",
        "a.b.c",
        "abc",
        "Bad Bucket",
        "ab",
        "-ab",
        "ab-",
        "UPPER",
        "a_b",
    ]);
    samples.push("b".repeat(63));
    samples.push("b".repeat(64));
    check_strings(
        "AccessLogBucket",
        "--access-log-bucket",
        |s, v| s.access_log_bucket = v,
        &samples,
    );
}

#[test]
fn schedule_expressions() {
    let mut samples = strings(&[
        "",
        "cron(0 8 ? * MON-FRI *)",
        "cron(0 20 ? * MON-FRI *)",
        "cron(30 7 ? * 2-6 *)",
        "cron(0 8 1,15 * ? *)",
        "cron(0 18 L * ? *)",
        "cron(0 18 15W * ? *)",
        "cron(0 9 ? * 6#3 *)",
        "cron(*/30 8-20 ? JAN-NOV MON-FRI 2025-2030)",
        "cron(0 8 ? * mon-fri *)",
        "0 8 * * 1-5",
        "cron(0 8 * * MON-FRI *)",
        "cron(0 8 ? * ? *)",
        "cron(0 8 ? * MON-FRI)",
        "cron(0 8 ? * MON-FRI * *)",
        "cron(0  8 ? * MON-FRI *)",
        "cron( 0 8 ? * MON-FRI *)",
        "cron(0 8 ? * MON-FRI *) ",
        " cron(0 8 ? * MON-FRI *)",
        "cron(0 8 ? * MON;FRI *)",
        "cron(0 8 ? * MON-FRI *)\n",
        "cron(0\t8 ? * MON-FRI *)",
        "cron(0 8 L? * ? *)",
        "cron(0 8 ? * L#W *)",
        "CRON(0 8 ? * MON-FRI *)",
        "rate(12 hours)",
        "at(2030-01-01T08:00:00)",
        "cron()",
    ]);
    samples.push(format!("cron(0 8 ? * {} *)", "MON,".repeat(60) + "FRI"));
    samples.push(format!("cron(0 8 ? * {} *)", "MON,".repeat(70) + "FRI"));
    check_strings(
        "ScheduleStart",
        "--schedule-start",
        |s, v| s.schedule_start = v,
        &samples,
    );
    check_strings(
        "ScheduleStop",
        "--schedule-stop",
        |s, v| s.schedule_stop = v,
        &samples,
    );
}

#[test]
fn oidc_urls() {
    let mut samples = strings(&[
        "",
        "https://idp.example.com",
        "https://login.microsoftonline.com/0000-1111/v2.0",
        "https://idp.example.com/oauth2/v1/authorize?x=1",
        "https://",
        "http://idp.example.com",
        "HTTPS://idp.example.com",
        "https://idp.example.com/a b",
        "https://idp.example.com/a\tb",
        "https://idp.example.com/'",
        "https://idp.example.com/\"",
        "https://idp.example.com/}}",
        "https://idp.example.com/{",
        "https://idp.example.com/\u{a0}",
        "https://idp.example.com/\u{3000}",
        " https://idp.example.com",
        "https://idp.example.com\n",
    ]);
    samples.push(format!("https://{}", "a".repeat(2000)));
    let setters: [(&str, &str, Setter); 4] = [
        ("OidcIssuer", "--oidc-issuer", |s, v| s.sso.oidc_issuer = v),
        (
            "OidcAuthorizationEndpoint",
            "--oidc-authorization-endpoint",
            |s, v| s.sso.oidc_authorization_endpoint = v,
        ),
        ("OidcTokenEndpoint", "--oidc-token-endpoint", |s, v| {
            s.sso.oidc_token_endpoint = v
        }),
        (
            "OidcUserInfoEndpoint",
            "--oidc-user-info-endpoint",
            |s, v| s.sso.oidc_user_info_endpoint = v,
        ),
    ];
    for (parameter, option, set) in setters {
        check_strings(parameter, option, set, &samples);
    }
}

#[test]
fn oidc_client() {
    let mut ids = strings(&["", "0oa1client", "a:b/c@d", "a b", "é", "a\u{7f}", "\t"]);
    ids.push("c".repeat(255));
    ids.push("c".repeat(256));
    check_strings(
        "OidcClientId",
        "--oidc-client-id",
        |s, v| s.sso.oidc_client_id = v,
        &ids,
    );
    let mut secrets = strings(&[
        "",
        "code-server-multi-dev-sso/oidc-client-secret",
        "a+b=c.d@e_f-g/h",
        "arn:aws:secretsmanager:ap-southeast-7:123456789012:secret:sso/oidc-AbCdEf",
        "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:x",
        "arn:aws:secretsmanager:ap-southeast-7:12345678901:secret:x",
        "arn:aws:ssm:ap-southeast-7:123456789012:secret:x",
        "arn:aws:secretsmanager:ap-southeast-7:123456789012:secret:",
        "name:with:colons",
        "a b",
        "a}}",
        "é",
    ]);
    secrets.push("s".repeat(512));
    secrets.push("s".repeat(513));
    check_strings(
        "OidcClientSecretId",
        "--oidc-client-secret-id",
        |s, v| s.sso.oidc_client_secret_id = v,
        &secrets,
    );
}

#[test]
fn schedule_timezone() {
    let mut samples = strings(&[
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "America/Argentina/Buenos_Aires",
        "America/Port-au-Prince",
        "Etc/GMT+5",
        "Etc/GMT-14",
        "EST5EDT",
        "",
        "/Berlin",
        "Europe/",
        "Europe//Berlin",
        "Europe Berlin",
        "Europe/Berlin ",
        "a/b/c/d",
        "1UTC",
        "Europe/Zürich",
        "Europe/Berlin\n",
    ]);
    samples.push(format!("Europe/{}", "A".repeat(43)));
    samples.push(format!("Europe/{}", "A".repeat(44)));
    check_strings(
        "ScheduleTimezone",
        "--schedule-timezone",
        |s, v| s.schedule_timezone = v,
        &samples,
    );
}

#[test]
fn cognito_pool() {
    let arns = strings(&[
        "",
        "arn:aws:cognito-idp:ap-southeast-7:123456789012:userpool/ap-southeast-7_AbC123",
        "arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_x",
        "arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1",
        "arn:aws:cognito-idp:us-east-1:123456789012:userpool/_abc",
        "arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_a-b",
        "arn:aws:cognito-idp:us-east-1:123456789012:pool/us-east-1_ab",
        "arn:aws:cognito-identity:us-east-1:123456789012:userpool/us-east-1_ab",
        "us-east-1_AbC123",
    ]);
    check_strings(
        "CognitoUserPoolArn",
        "--cognito-user-pool-arn",
        |s, v| s.sso.cognito_user_pool_arn = v,
        &arns,
    );
    let mut clients = strings(&["", "1example23456789", "a+b", "a-b", "a b", "a_b"]);
    clients.push("c".repeat(128));
    clients.push("c".repeat(129));
    check_strings(
        "CognitoUserPoolClientId",
        "--cognito-user-pool-client-id",
        |s, v| s.sso.cognito_user_pool_client_id = v,
        &clients,
    );
    let mut domains = strings(&[
        "",
        "my-team",
        "auth.example.com",
        "a",
        "-team",
        "team-",
        "Team",
        "a..b",
        "a.",
        ".a",
        "a_b",
    ]);
    domains.push("d".repeat(63));
    domains.push("d".repeat(64));
    domains.push(vec!["d".repeat(63); 4].join("."));
    domains.push(format!("{}.dd", vec!["d".repeat(62); 4].join(".")));
    check_strings(
        "CognitoUserPoolDomain",
        "--cognito-user-pool-domain",
        |s, v| s.sso.cognito_user_pool_domain = v,
        &domains,
    );
}

#[test]
fn kept_resources_to_adopt() {
    let mut vaults = strings(&[
        "",
        "code-server-multi-dev-vault",
        "a_b",
        "ab",
        "a",
        "a b",
        "a.b",
    ]);
    vaults.push("v".repeat(50));
    vaults.push("v".repeat(51));
    check_strings(
        "ExistingBackupVaultName",
        "--existing-backup-vault",
        |s, v| s.existing_backup_vault = v,
        &vaults,
    );
    let mut repos = strings(&[
        "",
        "code-server-multi-dev/code-server",
        "code-server-multi-dev/code-server-0a1b2c3d",
        "a/b/c",
        "a.b_c-d",
        "a__b",
        "a--b",
        "A/b",
        "a//b",
        "/a",
        "a/",
        "-a",
        "a-",
        "a b",
    ]);
    repos.push("r".repeat(256));
    repos.push("r".repeat(257));
    check_strings(
        "ExistingTeamImageRepository",
        "--existing-team-image-repository",
        |s, v| s.existing_team_image_repository = v,
        &repos,
    );
    let snapshots = strings(&[
        "",
        "snap-0123456789abcdef0",
        "snap-01234567",
        "snap-0123456789ABCDEF0",
        "snap-0123456789abcdef",
        "snap-",
        "vol-0123456789abcdef0",
        "snap-0123456g",
    ]);
    check_strings(
        "DataVolumeSnapshotId",
        "--data-volume-snapshot-id",
        |s, v| s.data_volume_snapshot_id = v,
        &snapshots,
    );
}

type NumberSetter = fn(&mut Settings, u32);

#[test]
fn number_ranges() {
    let params = parameters();
    let cases: [(&str, &str, NumberSetter); 7] = [
        ("RootVolumeSize", "--root-volume-gb", |s, v| {
            s.root_volume_gb = v
        }),
        ("DataVolumeSize", "--data-volume-gb", |s, v| {
            s.data_volume_gb = v
        }),
        ("BackupRetentionDays", "--backup-retention-days", |s, v| {
            s.backup_retention_days = v
        }),
        (
            "PasswordRotationDays",
            "--password-rotation-days",
            |s, v| s.password_rotation_days = v,
        ),
        ("LogRetentionDays", "--log-retention-days", |s, v| {
            s.log_retention_days = v
        }),
        ("IdleStopHours", "--idle-stop-hours", |s, v| {
            s.idle_stop_hours = v
        }),
        ("SsoSessionSeconds", "--sso-session-seconds", |s, v| {
            s.sso.session_seconds = v
        }),
    ];
    for (parameter, option, set) in cases {
        let p = &params[parameter];
        let allowed: Option<Vec<u64>> = p["AllowedValues"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect());
        for value in (0..=40_000u32).chain([604_799, 604_800, 604_801, u32::MAX]) {
            let cfn = match &allowed {
                Some(list) => list.contains(&u64::from(value)),
                None => {
                    let min = p["MinValue"].as_u64().expect("MinValue");
                    let max = p["MaxValue"].as_u64().expect("MaxValue");
                    (min..=max).contains(&u64::from(value))
                }
            };
            let mut s = Settings::default();
            set(&mut s, value);
            let cli = match s.validate() {
                Ok(()) => true,
                Err(e) if e.option == option => false,
                Err(e) => panic!("{option} {value}: another option failed: {e}"),
            };
            assert_eq!(
                cli, cfn,
                "{option} {value}: CLI {cli}, Parameter {parameter} {cfn}"
            );
        }
    }
}

#[test]
fn developer_names_are_ones_the_agent_accepts() {
    let s = Settings {
        developers: infra::MAX_ENVIRONMENT_DEVELOPERS,
        template_url_prefix: "https://b.s3.amazonaws.com/t/".into(),
        ..Settings::default()
    };
    for dev in s.developer_list() {
        assert!(
            csagent_contract::validate::is_developer_name(&dev.name),
            "{}",
            dev.name
        );
    }
}
