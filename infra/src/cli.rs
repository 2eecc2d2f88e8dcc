//! The command line. Parsed by clap, then turned into [`Settings`] and validated; a bad value
//! is reported naming its option.

use crate::Format;
use crate::settings::{OptionError, Settings, UBUNTU_2204_AMI_PARAMETER};
use crate::sso::{DEFAULT_SESSION_SECONDS, SsoProvider, SsoSettings};
use clap::Parser;

/// Prints the CloudFormation template of the csagent environment to stdout.
///
/// One stack: VPC with two public subnets, ALB with a wildcard certificate and one host rule,
/// target group and DNS record per developer, EC2 hosts running csagent (IMDSv2 only, hop
/// limit one) each with an encrypted gp3 data volume, generated per-developer passwords in
/// Secrets Manager, log groups, alarms, a dashboard and a daily backup.
///
/// Hosts: a host holds as many developers as its instance type's memory and vCPUs allow
/// (capacity model, infra/README.md) or --developers-per-host; developer k runs on host
/// ceil(k / per host). Hosts 2.. are nested stacks: give --out-dir and --template-url-prefix,
/// upload the child templates there, then deploy the parent.
///
/// Deploy with `aws cloudformation deploy --template-file env.json --stack-name NAME
/// --capabilities CAPABILITY_IAM --s3-bucket BUCKET` (a template above 51,200 bytes has to go
/// through an S3 bucket).
#[derive(Debug, Parser)]
#[command(name = "infra", version, about, long_about, max_term_width = 100)]
pub struct Cli {
    /// Number of developers dev1..devN (1..=100: one ALB's rules). Shapes the template: one
    /// target group, listener rule, DNS record, log group, alarm and two secrets each.
    #[arg(long, value_name = "N", required_unless_present_any = ["print_agent_config"])]
    pub developers: Option<u32>,

    /// Developers per host (1..=64); default: as many as --instance-type holds by the
    /// capacity model (10 on a t3.2xlarge with the default sizes). A count that does not fit
    /// is refused with the numbers.
    #[arg(long, value_name = "N")]
    pub developers_per_host: Option<u32>,

    /// Memory limit of each developer's container, GiB (the agent's containers.memory).
    #[arg(long, value_name = "GIB", default_value_t = csagent_contract::DEFAULT_DEVELOPER_MEMORY_GIB)]
    pub developer_memory_gib: u32,

    /// Soft memory reservation of each developer's container, GiB (the agent's
    /// containers.memory_reservation); what the capacity model counts per developer.
    #[arg(long, value_name = "GIB", default_value_t = csagent_contract::DEFAULT_DEVELOPER_MEMORY_RESERVATION_GIB)]
    pub developer_memory_reservation_gib: u32,

    /// CPU limit of each developer's container (the agent's containers.cpus), e.g. 1.5.
    #[arg(long, value_name = "CPUS", default_value_t = f64::from(csagent_contract::DEFAULT_DEVELOPER_CPU_MILLIS) / 1000.0)]
    pub developer_cpus: f64,

    /// Write the parent template (template.json or template.yaml) and the child templates
    /// (host-N-HASH.json) into DIR instead of printing the template; required for more than
    /// one host.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<std::path::PathBuf>,

    /// https:// URL of the S3 folder the child templates are uploaded to, ending in '/'
    /// (e.g. https://my-bucket.s3.ap-southeast-7.amazonaws.com/csagent/); the parent's
    /// nested stacks read TEMPLATE_URL_PREFIX/host-N-HASH.json. Required for more than one
    /// host.
    #[arg(long, value_name = "URL")]
    pub template_url_prefix: Option<String>,

    /// Parent domain: developer N is served at https://devN.<DOMAIN> [Parameter DomainName].
    #[arg(long, value_name = "DOMAIN", required_unless_present_any = ["print_agent_config", "print_user_data"])]
    pub domain: Option<String>,

    /// Route 53 hosted zone id of DOMAIN, e.g. Z0123456789ABCDEFGHIJ [Parameter HostedZoneId].
    #[arg(long, value_name = "ZONE_ID", required_unless_present_any = ["print_agent_config", "print_user_data"])]
    pub hosted_zone_id: Option<String>,

    /// Output format of the template.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,

    /// JSON without indentation (smaller; CloudFormation takes at most 51,200 bytes inline).
    #[arg(long)]
    pub compact: bool,

    /// Project name: prefix of secrets, log groups and resource names [Parameter ProjectName].
    #[arg(long, value_name = "NAME", default_value = "code-server-multi-dev")]
    pub project: String,

    /// Environment tag [Parameter Environment].
    #[arg(long, value_name = "VALUE", default_value = "production")]
    pub environment: String,

    /// CostCenter tag [Parameter CostCenter].
    #[arg(long, value_name = "VALUE", default_value = "Engineering")]
    pub cost_center: String,

    /// EC2 instance type of the host, x86_64 [Parameter InstanceType].
    #[arg(long, value_name = "TYPE", default_value = "t3.2xlarge")]
    pub instance_type: String,

    /// EC2 key pair for SSH; default none (use SSM Session Manager) [Parameter KeyPairName].
    #[arg(long, value_name = "NAME")]
    pub key_pair: Option<String>,

    /// IPv4 CIDR allowed to SSH to the host; default none [Parameter AdminSshCidr].
    #[arg(long, value_name = "CIDR")]
    pub admin_cidr: Option<String>,

    /// Root volume size in GiB [Parameter RootVolumeSize].
    #[arg(long, value_name = "GIB", default_value_t = 50)]
    pub root_volume_gb: u32,

    /// Data volume size in GiB [Parameter DataVolumeSize].
    #[arg(long, value_name = "GIB", default_value_t = 500)]
    pub data_volume_gb: u32,

    /// E-mail address subscribed to the alarm topic; default none [Parameter AlarmEmail].
    #[arg(long, value_name = "ADDRESS")]
    pub alarm_email: Option<String>,

    /// Days each daily backup of the data volume is kept [Parameter BackupRetentionDays].
    #[arg(long, value_name = "DAYS", default_value_t = 30)]
    pub backup_retention_days: u32,

    /// ARN of a Secrets Manager rotation Lambda for the developers' passwords (e.g. AWS's
    /// generic rotation template; it must allow secretsmanager.amazonaws.com to invoke it);
    /// one more resource per developer. Default none: a password changes only when an admin
    /// runs put-secret-value. The agent picks a change up by itself either way
    /// [Parameter PasswordRotationLambdaArn].
    #[arg(long, value_name = "ARN")]
    pub password_rotation_lambda_arn: Option<String>,

    /// Days between automatic password rotations, with --password-rotation-lambda-arn
    /// [Parameter PasswordRotationDays].
    #[arg(long, value_name = "DAYS", default_value_t = 90)]
    pub password_rotation_days: u32,

    /// Days CloudWatch Logs keeps container and agent logs [Parameter LogRetentionDays].
    #[arg(long, value_name = "DAYS", default_value_t = 30)]
    pub log_retention_days: u32,

    /// URL of the csagent .deb: https:// (e.g. a presigned S3 URL), s3://bucket/key (read with
    /// the instance role) or file://; without it the Parameter has no default and must be
    /// given at deploy time [Parameter DebUrl].
    #[arg(long, value_name = "URL")]
    pub deb_url: Option<String>,

    /// Port of dev1; developer N listens on BASE_PORT + N - 1.
    #[arg(long, value_name = "PORT", default_value_t = 8443)]
    pub base_port: u16,

    /// ARN of an existing ACM certificate for *.DOMAIN; default none: the stack requests one and
    /// validates it by DNS in the hosted zone [Parameter ExistingCertificateArn].
    #[arg(long, value_name = "ARN")]
    pub certificate_arn: Option<String>,

    /// S3 bucket for ALB access logs; default none [Parameter AccessLogBucket].
    #[arg(long, value_name = "BUCKET")]
    pub access_log_bucket: Option<String>,

    /// Tag of the team image in the stack's ECR repository (`<project>/code-server`) that the
    /// agent runs, pulled with the instance role; default none: the agent's default image
    /// [Parameter TeamImageTag].
    #[arg(long, value_name = "TAG")]
    pub team_image_tag: Option<String>,

    /// When to start the host(s), an EventBridge Scheduler cron expression in
    /// --schedule-timezone, e.g. "cron(0 8 ? * MON-FRI *)"; default none [Parameter
    /// ScheduleStart].
    #[arg(long, value_name = "CRON")]
    pub schedule_start: Option<String>,

    /// When to stop the host(s), e.g. "cron(0 20 ? * MON-FRI *)"; default none. EBS volumes and
    /// the ALB keep costing while stopped [Parameter ScheduleStop].
    #[arg(long, value_name = "CRON")]
    pub schedule_stop: Option<String>,

    /// IANA time zone of --schedule-start and --schedule-stop, e.g. Europe/Berlin (daylight
    /// saving time is followed) [Parameter ScheduleTimezone].
    #[arg(long, value_name = "ZONE", default_value = "UTC")]
    pub schedule_timezone: String,

    /// Stop a host when no developer has been active on it for this many hours (0..=24;
    /// 0 = never) [Parameter IdleStopHours].
    #[arg(long, value_name = "HOURS", default_value_t = 0)]
    pub idle_stop_hours: u32,
    /// An AWS Backup vault to keep using instead of creating one, e.g. the vault a deleted stack
    /// of this project kept (with its recovery points); default none: the stack creates
    /// `<project>-vault-<stack id>` [Parameter ExistingBackupVaultName].
    #[arg(long, value_name = "NAME")]
    pub existing_backup_vault: Option<String>,

    /// An ECR repository to keep using for the team image instead of creating one, e.g. the
    /// one a deleted stack kept, or `<project>/code-server` of a stack made before repositories
    /// had a stack suffix; default none: the stack creates `<project>/code-server-<stack id>`
    /// [Parameter ExistingTeamImageRepository].
    #[arg(long, value_name = "NAME")]
    pub existing_team_image_repository: Option<String>,

    /// EBS snapshot to create the data volume from, e.g. the final snapshot a deleted stack
    /// left; with more hosts one per host in host order, comma-separated (an empty entry: that
    /// host starts blank); default none: blank volumes [Parameters DataVolumeSnapshotId,
    /// Host2DataVolumeSnapshotId, …].
    #[arg(long, value_name = "SNAPSHOT_ID[,SNAPSHOT_ID…]")]
    pub data_volume_snapshot_id: Option<String>,

    /// Single sign-on at the ALB before code-server's password page: none, oidc (needs the
    /// --oidc-* options) or cognito (a user pool the stack creates, or --cognito-user-pool-*)
    /// [Parameter SsoProvider].
    #[arg(long, value_enum, default_value_t = SsoProvider::None)]
    pub sso: SsoProvider,

    /// OIDC issuer URL (https://) [Parameter OidcIssuer].
    #[arg(long, value_name = "URL")]
    pub oidc_issuer: Option<String>,

    /// OIDC authorization endpoint URL [Parameter OidcAuthorizationEndpoint].
    #[arg(long, value_name = "URL")]
    pub oidc_authorization_endpoint: Option<String>,

    /// OIDC token endpoint URL [Parameter OidcTokenEndpoint].
    #[arg(long, value_name = "URL")]
    pub oidc_token_endpoint: Option<String>,

    /// OIDC user info endpoint URL [Parameter OidcUserInfoEndpoint].
    #[arg(long, value_name = "URL")]
    pub oidc_user_info_endpoint: Option<String>,

    /// OIDC client id of the ALB [Parameter OidcClientId].
    #[arg(long, value_name = "ID")]
    pub oidc_client_id: Option<String>,

    /// Name or ARN of the Secrets Manager secret holding the OIDC client secret (the value is
    /// never in the template) [Parameter OidcClientSecretId].
    #[arg(long, value_name = "SECRET")]
    pub oidc_client_secret_id: Option<String>,

    /// ARN of an existing Cognito user pool; default none: the stack creates one
    /// [Parameter CognitoUserPoolArn].
    #[arg(long, value_name = "ARN")]
    pub cognito_user_pool_arn: Option<String>,

    /// App client id in the existing Cognito pool [Parameter CognitoUserPoolClientId].
    #[arg(long, value_name = "ID")]
    pub cognito_user_pool_client_id: Option<String>,

    /// Domain of the existing Cognito pool, or the prefix of the domain the stack creates
    /// (default `<project>-<account id>`) [Parameter CognitoUserPoolDomain].
    #[arg(long, value_name = "DOMAIN")]
    pub cognito_user_pool_domain: Option<String>,

    /// Lifetime of the ALB's SSO session in seconds [Parameter SsoSessionSeconds].
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_SESSION_SECONDS)]
    pub sso_session_seconds: u32,

    /// SSM parameter that holds the AMI id [Parameter LatestAmiId].
    #[arg(long, value_name = "PATH", default_value = UBUNTU_2204_AMI_PARAMETER)]
    pub ami_ssm_parameter: String,

    /// Print only the agent's /etc/csagent/config.toml (sample region and volume id).
    #[arg(long, conflicts_with_all = ["print_user_data", "format", "compact"])]
    pub print_agent_config: bool,

    /// Print only the user-data script, placeholders filled with sample values.
    #[arg(long, conflicts_with_all = ["format", "compact"])]
    pub print_user_data: bool,
}

impl Cli {
    /// The validated settings; an error names the option at fault.
    pub fn settings(&self) -> Result<Settings, OptionError> {
        let defaults = Settings::default();
        let settings = Settings {
            // Only --print-agent-config may omit it; it then describes the default 8.
            developers: self.developers.unwrap_or(defaults.developers),
            developers_per_host: self.developers_per_host.unwrap_or(0),
            developer_memory_gib: self.developer_memory_gib,
            developer_memory_reservation_gib: self.developer_memory_reservation_gib,
            developer_cpu_millis: cpu_millis(self.developer_cpus),
            template_url_prefix: self.template_url_prefix.clone().unwrap_or_default(),
            base_port: self.base_port,
            domain: self.domain.clone().unwrap_or(defaults.domain),
            hosted_zone_id: self
                .hosted_zone_id
                .clone()
                .unwrap_or(defaults.hosted_zone_id),
            project: self.project.clone(),
            environment: self.environment.clone(),
            cost_center: self.cost_center.clone(),
            instance_type: self.instance_type.clone(),
            key_pair: self.key_pair.clone().unwrap_or_default(),
            admin_cidr: self.admin_cidr.clone().unwrap_or_default(),
            root_volume_gb: self.root_volume_gb,
            data_volume_gb: self.data_volume_gb,
            alarm_email: self.alarm_email.clone().unwrap_or_default(),
            backup_retention_days: self.backup_retention_days,
            password_rotation_lambda_arn: self
                .password_rotation_lambda_arn
                .clone()
                .unwrap_or_default(),
            password_rotation_days: self.password_rotation_days,
            log_retention_days: self.log_retention_days,
            deb_url: self.deb_url.clone().unwrap_or_default(),
            access_log_bucket: self.access_log_bucket.clone().unwrap_or_default(),
            ami_ssm_parameter: self.ami_ssm_parameter.clone(),
            certificate_arn: self.certificate_arn.clone().unwrap_or_default(),
            team_image_tag: self.team_image_tag.clone().unwrap_or_default(),
            schedule_start: self.schedule_start.clone().unwrap_or_default(),
            schedule_stop: self.schedule_stop.clone().unwrap_or_default(),
            schedule_timezone: self.schedule_timezone.clone(),
            idle_stop_hours: self.idle_stop_hours,
            existing_backup_vault: self.existing_backup_vault.clone().unwrap_or_default(),
            existing_team_image_repository: self
                .existing_team_image_repository
                .clone()
                .unwrap_or_default(),
            data_volume_snapshot_id: self.data_volume_snapshot_id.clone().unwrap_or_default(),
            sso: SsoSettings {
                provider: self.sso,
                oidc_issuer: self.oidc_issuer.clone().unwrap_or_default(),
                oidc_authorization_endpoint: self
                    .oidc_authorization_endpoint
                    .clone()
                    .unwrap_or_default(),
                oidc_token_endpoint: self.oidc_token_endpoint.clone().unwrap_or_default(),
                oidc_user_info_endpoint: self.oidc_user_info_endpoint.clone().unwrap_or_default(),
                oidc_client_id: self.oidc_client_id.clone().unwrap_or_default(),
                oidc_client_secret_id: self.oidc_client_secret_id.clone().unwrap_or_default(),
                cognito_user_pool_arn: self.cognito_user_pool_arn.clone().unwrap_or_default(),
                cognito_user_pool_client_id: self
                    .cognito_user_pool_client_id
                    .clone()
                    .unwrap_or_default(),
                cognito_user_pool_domain: self.cognito_user_pool_domain.clone().unwrap_or_default(),
                session_seconds: self.sso_session_seconds,
            },
        };
        if self.developers_per_host == Some(0) {
            return Err(OptionError {
                option: "--developers-per-host",
                message: "must be 1..=64 (got 0); leave it out for the capacity model's count"
                    .into(),
            });
        }
        settings.validate()?;
        Ok(settings)
    }
}

/// CPUs as thousandths; out of range (negative, NaN, huge) becomes 0, which validation
/// refuses naming --developer-cpus.
fn cpu_millis(cpus: f64) -> u32 {
    let millis = (cpus * 1000.0).round();
    if millis.is_finite() && (0.0..=f64::from(u32::MAX)).contains(&millis) {
        millis as u32
    } else {
        0
    }
}
