//! Validated settings: what the command line asks for, checked once, so every template module
//! can trust its input. Errors name the option at fault (`--developers: must be 1..=100`).

use csagent_contract::LOG_RETENTION_DAYS;
use csagent_contract::validate::{self, CidrError};
use std::fmt;

/// Most developers one host's agent serves (see the contract).
pub use csagent_contract::MAX_DEVELOPERS;

/// Most developers one environment (one ALB) serves (see the contract for why).
pub use csagent_contract::MAX_ENVIRONMENT_DEVELOPERS;

use crate::capacity::{self, DeveloperSize};

/// A bad command-line value: which option, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionError {
    /// The option as typed, e.g. `--developers`.
    pub option: &'static str,
    /// What is wrong, e.g. `must be 1..=100 (got 0)`.
    pub message: String,
}

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.option, self.message)
    }
}

impl std::error::Error for OptionError {}

fn bad(option: &'static str, message: impl Into<String>) -> OptionError {
    OptionError {
        option,
        message: message.into(),
    }
}

/// `Ok` when `ok`, else "`option`: `rule` (got `value`)".
pub(crate) fn check(
    ok: bool,
    option: &'static str,
    rule: &str,
    value: &str,
) -> Result<(), OptionError> {
    if ok {
        Ok(())
    } else {
        Err(bad(option, format!("{rule} (got {value:?})")))
    }
}

/// Everything that shapes the template. Fields that become template Parameters set those
/// Parameters' defaults; `developers` and `base_port` shape the resources themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Number of developers, `dev1..devN`.
    pub developers: u32,
    /// Developers per host; 0: as many as the capacity model lets `instance_type` hold.
    /// Developer k runs on host ceil(k / per host).
    pub developers_per_host: u32,
    /// Memory limit of each developer's container, GiB.
    pub developer_memory_gib: u32,
    /// Soft memory reservation of each developer's container, GiB.
    pub developer_memory_reservation_gib: u32,
    /// CPU limit of each developer's container, thousandths of a CPU.
    pub developer_cpu_millis: u32,
    /// URL prefix (ending in '/') the child templates of hosts 2.. are uploaded under;
    /// empty: a single host only.
    pub template_url_prefix: String,
    /// Port of `dev1`; developer N listens on `base_port + N - 1`.
    pub base_port: u16,
    /// Parent domain; developer N is served at `dev<N>.<domain>`.
    pub domain: String,
    /// Route 53 hosted zone of `domain` (certificate validation and the alias records).
    pub hosted_zone_id: String,
    /// Project name: prefix of secret names, log groups and resource names.
    pub project: String,
    /// `Environment` tag.
    pub environment: String,
    /// `CostCenter` tag.
    pub cost_center: String,
    /// EC2 instance type (x86_64: the AMI is Ubuntu 22.04 amd64).
    pub instance_type: String,
    /// EC2 key pair name; empty: none (use SSM Session Manager).
    pub key_pair: String,
    /// CIDR allowed to SSH to the host; empty: no SSH rule.
    pub admin_cidr: String,
    /// Root volume size in GiB.
    pub root_volume_gb: u32,
    /// Data volume size in GiB.
    pub data_volume_gb: u32,
    /// Alarm e-mail address; empty: no subscription.
    pub alarm_email: String,
    /// Days AWS Backup keeps each daily recovery point.
    pub backup_retention_days: u32,
    /// Rotation Lambda for the passwords; empty: no rotation schedule.
    pub password_rotation_lambda_arn: String,
    /// Days between automatic password rotations.
    pub password_rotation_days: u32,
    /// Days CloudWatch Logs keeps container and agent logs.
    pub log_retention_days: u32,
    /// Where user data fetches the csagent .deb (https://, s3:// or file://); empty: the
    /// Parameter has no default and must be given at deploy time.
    pub deb_url: String,
    /// Bucket for ALB access logs; empty: access logs off.
    pub access_log_bucket: String,
    /// SSM parameter holding the AMI id (default: Canonical's Ubuntu 22.04 amd64 gp2 image).
    pub ami_ssm_parameter: String,
    /// ARN of an existing ACM certificate covering `*.<domain>`; empty: the template requests
    /// and DNS-validates a wildcard certificate itself.
    pub certificate_arn: String,
    /// Tag of the team image in the stack's ECR repository the agent runs; empty: the agent's
    /// default image.
    pub team_image_tag: String,
    /// When the schedule starts the host(s), a Scheduler `cron(...)`; empty: never.
    pub schedule_start: String,
    /// When the schedule stops the host(s), a Scheduler `cron(...)`; empty: never.
    pub schedule_stop: String,
    /// IANA time zone of both schedule expressions.
    pub schedule_timezone: String,
    /// Stop a host after this many hours with no developer active; 0: never.
    pub idle_stop_hours: u32,
    /// Single sign-on at the ALB (off by default).
    pub sso: crate::sso::SsoSettings,
    /// An AWS Backup vault to use instead of creating one (e.g. the vault a deleted stack of the
    /// same project kept); empty: the stack creates `<project>-vault-<stack id>`.
    pub existing_backup_vault: String,
    /// An ECR repository to use for the team image instead of creating one (e.g. the
    /// repository a deleted stack kept); empty: the stack creates
    /// `<project>/code-server-<stack id>`.
    pub existing_team_image_repository: String,
    /// EBS snapshots to create the data volumes from (e.g. the final snapshots of a deleted
    /// stack), one per host in host order, comma-separated; an empty entry, or none: a blank
    /// volume. Each host's is its own Parameter's default.
    pub data_volume_snapshot_id: String,
}

/// Canonical's public SSM parameter for the current Ubuntu 22.04 amd64 AMI.
pub const UBUNTU_2204_AMI_PARAMETER: &str =
    "/aws/service/canonical/ubuntu/server/22.04/stable/current/amd64/hvm/ebs-gp2/ami-id";

impl Default for Settings {
    /// The seed plan's values for 8 developers on `dev.example.com` (a sample zone id).
    fn default() -> Self {
        Settings {
            developers: 8,
            developers_per_host: 0,
            developer_memory_gib: csagent_contract::DEFAULT_DEVELOPER_MEMORY_GIB,
            developer_memory_reservation_gib:
                csagent_contract::DEFAULT_DEVELOPER_MEMORY_RESERVATION_GIB,
            developer_cpu_millis: csagent_contract::DEFAULT_DEVELOPER_CPU_MILLIS,
            template_url_prefix: String::new(),
            base_port: 8443,
            domain: "dev.example.com".into(),
            hosted_zone_id: "Z1234567890ABC".into(),
            project: "code-server-multi-dev".into(),
            environment: "production".into(),
            cost_center: "Engineering".into(),
            instance_type: "t3.2xlarge".into(),
            key_pair: String::new(),
            admin_cidr: String::new(),
            root_volume_gb: 50,
            data_volume_gb: 500,
            alarm_email: String::new(),
            backup_retention_days: 30,
            password_rotation_lambda_arn: String::new(),
            password_rotation_days: 90,
            log_retention_days: csagent_contract::DEFAULT_LOG_RETENTION_DAYS,
            deb_url: String::new(),
            access_log_bucket: String::new(),
            ami_ssm_parameter: UBUNTU_2204_AMI_PARAMETER.into(),
            certificate_arn: String::new(),
            team_image_tag: String::new(),
            schedule_start: String::new(),
            schedule_stop: String::new(),
            schedule_timezone: "UTC".into(),
            idle_stop_hours: 0,
            sso: crate::sso::SsoSettings::default(),
            existing_backup_vault: String::new(),
            existing_team_image_repository: String::new(),
            data_volume_snapshot_id: String::new(),
        }
    }
}

impl Settings {
    /// Checks every field; the first problem found is returned, naming its option.
    pub fn validate(&self) -> Result<(), OptionError> {
        if !(1..=MAX_ENVIRONMENT_DEVELOPERS).contains(&self.developers) {
            return Err(bad(
                "--developers",
                format!(
                    "must be 1..={MAX_ENVIRONMENT_DEVELOPERS} (got {}); one ALB takes at most 100 listener rules and target groups",
                    self.developers
                ),
            ));
        }
        let last_port = u32::from(self.base_port) + self.developers - 1;
        if self.base_port < 1024 || last_port > 65535 {
            return Err(bad(
                "--base-port",
                format!(
                    "must be 1024 or more and leave room for {} developer ports up to 65535 (got {})",
                    self.developers, self.base_port
                ),
            ));
        }
        check(
            validate::is_domain(&self.domain),
            "--domain",
            "must be a lower-case DNS name with at least two labels, e.g. dev.example.com",
            &self.domain,
        )?;
        check(
            is_hosted_zone_id(&self.hosted_zone_id),
            "--hosted-zone-id",
            "must look like a Route 53 zone id, 'Z' then capital letters and digits",
            &self.hosted_zone_id,
        )?;
        check(
            validate::is_project(&self.project),
            "--project",
            "must be 2..=32 characters of a-z, 0-9 and '-', starting with a letter and not ending with '-'",
            &self.project,
        )?;
        for (option, value) in [
            ("--environment", &self.environment),
            ("--cost-center", &self.cost_center),
        ] {
            check(
                validate::is_tag_value(value),
                option,
                "must be 1..=128 characters of A-Z a-z 0-9 space _ . : / = + @ -",
                value,
            )?;
        }
        check(
            validate::is_instance_type(&self.instance_type),
            "--instance-type",
            "must look like t3.2xlarge",
            &self.instance_type,
        )?;
        if !validate::is_key_pair(&self.key_pair) {
            return Err(bad(
                "--key-pair",
                "must be at most 255 printable ASCII characters",
            ));
        }
        validate_cidr(&self.admin_cidr)?;
        if !(20..=16384).contains(&self.root_volume_gb) {
            return Err(bad(
                "--root-volume-gb",
                format!("must be 20..=16384 (got {})", self.root_volume_gb),
            ));
        }
        if !(1..=16384).contains(&self.data_volume_gb) {
            return Err(bad(
                "--data-volume-gb",
                format!("must be 1..=16384 (got {})", self.data_volume_gb),
            ));
        }
        check(
            validate::is_image_tag(&self.team_image_tag),
            "--team-image-tag",
            "must be an image tag: up to 128 of A-Z a-z 0-9 _ . -, not starting with . or -",
            &self.team_image_tag,
        )?;
        check(
            validate::is_email(&self.alarm_email),
            "--alarm-email",
            "must be an e-mail address",
            &self.alarm_email,
        )?;
        if !(1..=36500).contains(&self.backup_retention_days) {
            return Err(bad(
                "--backup-retention-days",
                format!("must be 1..=36500 (got {})", self.backup_retention_days),
            ));
        }
        if !LOG_RETENTION_DAYS.contains(&self.log_retention_days) {
            return Err(bad(
                "--log-retention-days",
                format!(
                    "must be one of the values CloudWatch Logs accepts: {:?} (got {})",
                    LOG_RETENTION_DAYS, self.log_retention_days
                ),
            ));
        }
        // Empty: the Parameter has no default.
        check(
            self.deb_url.is_empty() || validate::is_deb_url(&self.deb_url),
            "--deb-url",
            "must start with https://, s3:// or file:// and contain no quote or space",
            &self.deb_url,
        )?;
        check(
            validate::is_bucket(&self.access_log_bucket),
            "--access-log-bucket",
            "must be an S3 bucket name",
            &self.access_log_bucket,
        )?;
        check(
            validate::is_certificate_arn(&self.certificate_arn),
            "--certificate-arn",
            "must be an ACM certificate ARN, arn:aws:acm:REGION:ACCOUNT:certificate/ID",
            &self.certificate_arn,
        )?;
        check(
            validate::is_lambda_arn(&self.password_rotation_lambda_arn),
            "--password-rotation-lambda-arn",
            "must be a Lambda function ARN, arn:aws:lambda:REGION:ACCOUNT:function:NAME",
            &self.password_rotation_lambda_arn,
        )?;
        if !(1..=1000).contains(&self.password_rotation_days) {
            return Err(bad(
                "--password-rotation-days",
                format!("must be 1..=1000 (got {})", self.password_rotation_days),
            ));
        }
        for (option, value) in [
            ("--schedule-start", &self.schedule_start),
            ("--schedule-stop", &self.schedule_stop),
        ] {
            check(
                validate::is_schedule_cron(value),
                option,
                "must be an EventBridge Scheduler cron expression such as \"cron(0 8 ? * MON-FRI *)\" (six fields; exactly one of day-of-month and day-of-week is ?)",
                value,
            )?;
        }
        check(
            validate::is_timezone(&self.schedule_timezone),
            "--schedule-timezone",
            "must be an IANA time zone name such as Europe/Berlin or UTC",
            &self.schedule_timezone,
        )?;
        if self.idle_stop_hours > validate::MAX_IDLE_STOP_HOURS {
            return Err(bad(
                "--idle-stop-hours",
                format!(
                    "must be 0 (off) ..= {} (got {})",
                    validate::MAX_IDLE_STOP_HOURS,
                    self.idle_stop_hours
                ),
            ));
        }
        check(
            validate::is_backup_vault(&self.existing_backup_vault),
            "--existing-backup-vault",
            "must be an AWS Backup vault name: 2..=50 of A-Z a-z 0-9 _ -",
            &self.existing_backup_vault,
        )?;
        check(
            validate::is_ecr_repository(&self.existing_team_image_repository),
            "--existing-team-image-repository",
            "must be an ECR repository name such as my-project/code-server (lower case, up to 256)",
            &self.existing_team_image_repository,
        )?;
        for id in self.data_volume_snapshot_ids() {
            check(
                validate::is_snapshot_id(id),
                "--data-volume-snapshot-id",
                "must be EBS snapshot ids, snap- and 8 or 17 hex digits, one per host in host order, comma-separated (an empty entry: that host starts blank)",
                id,
            )?;
        }
        self.sso.validate()?;
        self.validate_capacity()?;
        let named = self.data_volume_snapshot_ids().len();
        check(
            named <= self.hosts() as usize,
            "--data-volume-snapshot-id",
            &format!(
                "names {named} snapshots but the template has {} host(s): one per host at most",
                self.hosts()
            ),
            &self.data_volume_snapshot_id,
        )?;
        if self.hosts() > 1 {
            check(
                !self.template_url_prefix.is_empty(),
                "--template-url-prefix",
                &format!(
                    "is required for {} hosts: hosts 2.. are nested stacks whose templates CloudFormation reads from S3 (e.g. https://my-bucket.s3.ap-southeast-7.amazonaws.com/csagent/)",
                    self.hosts()
                ),
                &self.template_url_prefix,
            )?;
        }
        check(
            self.template_url_prefix.is_empty()
                || (self.template_url_prefix.starts_with("https://")
                    && self.template_url_prefix.ends_with('/')
                    && self.template_url_prefix.len() <= 900
                    && !self
                        .template_url_prefix
                        .chars()
                        .any(|c| c.is_whitespace() || c == '"' || c == '\\')),
            "--template-url-prefix",
            "must be an https:// URL ending in '/' (the S3 folder the child templates are uploaded to)",
            &self.template_url_prefix,
        )?;
        if !self.ami_ssm_parameter.starts_with('/')
            || self.ami_ssm_parameter.len() > 2048
            || !self
                .ami_ssm_parameter
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_./-".contains(c))
        {
            return Err(bad(
                "--ami-ssm-parameter",
                "must be an SSM parameter path such as /aws/service/...",
            ));
        }
        Ok(())
    }

    /// The developer sizes and the per-host count against the capacity model.
    fn validate_capacity(&self) -> Result<(), OptionError> {
        if !(1..=1024).contains(&self.developer_memory_gib) {
            return Err(bad(
                "--developer-memory-gib",
                format!("must be 1..=1024 (got {})", self.developer_memory_gib),
            ));
        }
        if !(1..=self.developer_memory_gib).contains(&self.developer_memory_reservation_gib) {
            return Err(bad(
                "--developer-memory-reservation-gib",
                format!(
                    "must be 1..=--developer-memory-gib ({}) (got {})",
                    self.developer_memory_gib, self.developer_memory_reservation_gib
                ),
            ));
        }
        if !(10..=64_000).contains(&self.developer_cpu_millis) {
            return Err(bad(
                "--developer-cpus",
                format!(
                    "must be 0.01..=64 (got {})",
                    capacity::cpus_text(self.developer_cpu_millis)
                ),
            ));
        }
        let Some(host) = capacity::instance_type(&self.instance_type) else {
            let known: Vec<&str> = capacity::INSTANCE_TYPES.iter().map(|t| t.name).collect();
            return Err(bad(
                "--instance-type",
                format!(
                    "{:?} is not in the capacity table (infra/src/capacity.rs); one of: {}",
                    self.instance_type,
                    known.join(", ")
                ),
            ));
        };
        let size = DeveloperSize::of(self);
        if self.developers_per_host == 0 {
            // Automatic: as many as fit, so at least one must.
            if let Err(why) = capacity::check(host, size, 1) {
                return Err(bad(
                    "--instance-type",
                    format!("cannot hold one developer: {why}; use a larger --instance-type"),
                ));
            }
            return Ok(());
        }
        if self.developers_per_host > MAX_DEVELOPERS {
            return Err(bad(
                "--developers-per-host",
                format!(
                    "must be 1..={MAX_DEVELOPERS} (the agent's bound; got {})",
                    self.developers_per_host
                ),
            ));
        }
        // Only the developers a host really runs count (8 developers with a per-host
        // bound of 10 put 8 on the host).
        let on_one = self.developers_per_host.min(self.developers);
        if let Err(why) = capacity::check(host, size, on_one) {
            let most = capacity::most(host, size, MAX_DEVELOPERS);
            let hint = if most == 0 {
                "use a larger --instance-type or smaller developers".to_string()
            } else {
                format!("use --developers-per-host {most} or a larger --instance-type")
            };
            return Err(bad("--developers-per-host", format!("{why}; {hint}")));
        }
        Ok(())
    }

    /// Developers per host: `developers_per_host`, or the most `instance_type` holds (at most
    /// the agent's bound). 1 when the settings are invalid (call [`Settings::validate`]).
    pub fn per_host(&self) -> u32 {
        if self.developers_per_host > 0 {
            return self.developers_per_host;
        }
        capacity::instance_type(&self.instance_type)
            .map(|t| capacity::most(t, DeveloperSize::of(self), MAX_DEVELOPERS))
            .unwrap_or(1)
            .max(1)
    }

    /// Number of hosts: ceil(developers / per host).
    pub fn hosts(&self) -> u32 {
        self.developers.div_ceil(self.per_host())
    }

    /// The host developer `n` runs on: ceil(n / per host). Adding developers never changes
    /// it for an existing one.
    pub fn host_of(&self, n: u32) -> u32 {
        n.div_ceil(self.per_host())
    }

    /// The hosts, each with its developers.
    /// `data_volume_snapshot_id` split per host (host 1 first); empty when none is named.
    pub fn data_volume_snapshot_ids(&self) -> Vec<&str> {
        if self.data_volume_snapshot_id.is_empty() {
            Vec::new()
        } else {
            self.data_volume_snapshot_id.split(',').collect()
        }
    }

    pub fn host_list(&self) -> Vec<Host> {
        let all = self.developer_list();
        (1..=self.hosts())
            .map(|number| Host {
                number,
                developers: all
                    .iter()
                    .filter(|d| self.host_of(d.number) == number)
                    .cloned()
                    .collect(),
            })
            .collect()
    }

    /// Port of developer `n` (1-based).
    pub fn port(&self, n: u32) -> u16 {
        // validate() guarantees base_port + developers - 1 <= 65535.
        let port = u32::from(self.base_port) + n - 1;
        u16::try_from(port).unwrap_or(u16::MAX)
    }

    /// Developers as (number, name, port): `(1, "dev1", 8443)`, …
    pub fn developer_list(&self) -> Vec<Developer> {
        (1..=self.developers)
            .map(|n| Developer {
                number: n,
                name: format!("dev{n}"),
                port: self.port(n),
            })
            .collect()
    }

    /// The last developer's port.
    pub fn last_port(&self) -> u16 {
        self.port(self.developers)
    }
}

/// One host and the developers it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// 1-based: names the developer-set parameter `host-<N>`.
    pub number: u32,
    /// Its developers, in order.
    pub developers: Vec<Developer>,
}

impl Host {
    /// Logical id of this host's copy of a per-host resource: host 1 keeps the ids a
    /// single-host stack always had (`Instance`), host N gets `HostN<id>` (`Host2Instance`).
    pub fn id(&self, base: &str) -> String {
        if self.number == 1 {
            base.to_string()
        } else {
            format!("Host{}{base}", self.number)
        }
    }

    /// `Name` tag suffix: `host` for host 1 (as before), `host-2`, …
    pub fn name(&self, base: &str) -> String {
        if self.number == 1 {
            base.to_string()
        } else {
            format!("{base}-{}", self.number)
        }
    }
}

/// One developer's identity in the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Developer {
    /// 1-based number: listener rule priority.
    pub number: u32,
    /// `dev<N>`: DNS label, `Developer` metric dimension, secret and log group path segment.
    pub name: String,
    /// Container port on the host.
    pub port: u16,
}

impl Developer {
    /// Logical-id prefix, e.g. `Dev3`.
    pub fn id(&self) -> String {
        format!("Dev{}", self.number)
    }
}

fn is_hosted_zone_id(id: &str) -> bool {
    id.len() >= 2
        && id.len() <= 32
        && id.starts_with('Z')
        && id
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

fn validate_cidr(value: &str) -> Result<(), OptionError> {
    let why = match validate::cidr(value) {
        Ok(()) => return Ok(()),
        Err(CidrError::NotCidr) => "must be an IPv4 CIDR such as 203.0.113.10/32",
        Err(CidrError::Prefix) => "prefix length must be 0..=32",
        Err(CidrError::WholeInternet) => {
            "must not open SSH to the whole internet; use SSM Session Manager or a narrower CIDR"
        }
        Err(CidrError::HostBits) => "host bits are set; use the network address",
    };
    Err(bad("--admin-cidr", format!("{why} (got {value:?})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut Settings)) -> Result<(), OptionError> {
        let mut s = Settings::default();
        f(&mut s);
        s.validate()
    }

    fn option_of(r: Result<(), OptionError>) -> &'static str {
        match r {
            Ok(()) => "ok",
            Err(e) => e.option,
        }
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Settings::default().validate(), Ok(()));
    }

    #[test]
    fn developers_range() {
        assert_eq!(option_of(with(|s| s.developers = 0)), "--developers");
        assert_eq!(option_of(with(|s| s.developers = 101)), "--developers");
        assert_eq!(option_of(with(|s| s.developers = 1)), "ok");
        let many = |s: &mut Settings| {
            s.developers = 100;
            s.template_url_prefix = "https://b.s3.amazonaws.com/t/".into();
        };
        assert_eq!(option_of(with(many)), "ok");
        let e = with(|s| s.developers = 0).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--developers: must be 1..=100 (got 0)"),
            "{e}"
        );
        // More than one host needs the URL the child templates are read from.
        assert_eq!(
            option_of(with(|s| s.developers = 11)),
            "--template-url-prefix"
        );
    }

    #[test]
    fn ports() {
        assert_eq!(option_of(with(|s| s.base_port = 80)), "--base-port");
        assert_eq!(option_of(with(|s| s.base_port = 65530)), "--base-port");
        assert_eq!(
            option_of(with(|s| {
                s.base_port = 65528;
                s.developers = 8
            })),
            "ok"
        );
        let s = Settings::default();
        let ports: Vec<u16> = s.developer_list().iter().map(|d| d.port).collect();
        assert_eq!(ports, (8443..=8450).collect::<Vec<_>>());
    }

    #[test]
    fn names_and_addresses() {
        assert_eq!(
            option_of(with(|s| s.domain = "localhost".into())),
            "--domain"
        );
        assert_eq!(
            option_of(with(|s| s.domain = "Dev.Example.com".into())),
            "--domain"
        );
        assert_eq!(option_of(with(|s| s.domain = "a..b".into())), "--domain");
        assert_eq!(
            option_of(with(|s| s.domain = "dev.example.com".into())),
            "ok"
        );
        assert_eq!(
            option_of(with(|s| s.hosted_zone_id = "abc".into())),
            "--hosted-zone-id"
        );
        assert_eq!(option_of(with(|s| s.hosted_zone_id = "Z123".into())), "ok");
        assert_eq!(
            option_of(with(|s| s.project = "Bad_Name".into())),
            "--project"
        );
        assert_eq!(option_of(with(|s| s.project = "x".into())), "--project");
        assert_eq!(option_of(with(|s| s.project = "ends-".into())), "--project");
        assert_eq!(
            option_of(with(|s| s.environment = String::new())),
            "--environment"
        );
        assert_eq!(
            option_of(with(|s| s.cost_center = "a\"b".into())),
            "--cost-center"
        );
        assert_eq!(
            option_of(with(|s| s.instance_type = "t3".into())),
            "--instance-type"
        );
        assert_eq!(option_of(with(|s| s.key_pair = "é".into())), "--key-pair");
        assert_eq!(
            option_of(with(|s| s.admin_cidr = "1.2.3.4".into())),
            "--admin-cidr"
        );
        assert_eq!(
            option_of(with(|s| s.admin_cidr = "0.0.0.0/0".into())),
            "--admin-cidr"
        );
        assert_eq!(
            option_of(with(|s| s.admin_cidr = "10.0.0.1/24".into())),
            "--admin-cidr"
        );
        assert_eq!(
            option_of(with(|s| s.admin_cidr = "203.0.113.0/24".into())),
            "ok"
        );
        assert_eq!(
            option_of(with(|s| s.alarm_email = "nope".into())),
            "--alarm-email"
        );
        assert_eq!(
            option_of(with(|s| s.alarm_email = "ops@example.com".into())),
            "ok"
        );
        assert_eq!(
            option_of(with(|s| s.deb_url = "http://x/a.deb".into())),
            "--deb-url"
        );
        assert_eq!(
            option_of(with(|s| s.deb_url = "https://x/a'b.deb".into())),
            "--deb-url"
        );
        assert_eq!(
            option_of(with(|s| s.deb_url = "s3://bucket/csagent.deb".into())),
            "ok"
        );
        assert_eq!(
            option_of(with(|s| s.access_log_bucket = "Bad Bucket".into())),
            "--access-log-bucket"
        );
        assert_eq!(
            option_of(with(|s| s.ami_ssm_parameter = "no-slash".into())),
            "--ami-ssm-parameter"
        );
        assert_eq!(
            option_of(with(
                |s| s.certificate_arn = "arn:aws:iam::123456789012:role/x".into()
            )),
            "--certificate-arn"
        );
        assert_eq!(
            option_of(with(|s| {
                s.certificate_arn =
                "arn:aws:acm:ap-southeast-7:123456789012:certificate/0a1b2c3d-aaaa-bbbb-cccc-0123456789ab".into()
            })),
            "ok"
        );
    }

    #[test]
    fn password_rotation_options() {
        let arn = "arn:aws:lambda:ap-southeast-7:123456789012:function:rotate-passwords";
        assert_eq!(
            option_of(with(|s| s.password_rotation_lambda_arn = arn.into())),
            "ok"
        );
        assert_eq!(
            option_of(with(
                |s| s.password_rotation_lambda_arn = format!("{arn}:live")
            )),
            "ok"
        );
        assert_eq!(
            option_of(with(
                |s| s.password_rotation_lambda_arn = "arn:aws:iam::123456789012:role/x".into()
            )),
            "--password-rotation-lambda-arn"
        );
        assert_eq!(
            option_of(with(|s| s.password_rotation_days = 0)),
            "--password-rotation-days"
        );
    }

    #[test]
    fn schedule_options() {
        assert_eq!(
            option_of(with(|s| {
                s.schedule_start = "cron(0 8 ? * MON-FRI *)".into();
                s.schedule_stop = "cron(0 20 ? * MON-FRI *)".into();
                s.schedule_timezone = "Europe/Berlin".into();
                s.idle_stop_hours = 2;
            })),
            "ok"
        );
        assert_eq!(
            option_of(with(|s| s.schedule_start = "0 8 * * 1-5".into())),
            "--schedule-start"
        );
        assert_eq!(
            option_of(with(|s| s.schedule_stop = "cron(0 20 * * MON-FRI *)".into())),
            "--schedule-stop"
        );
        assert_eq!(
            option_of(with(|s| s.schedule_timezone = "Berlin time".into())),
            "--schedule-timezone"
        );
        assert_eq!(
            option_of(with(|s| s.idle_stop_hours = 25)),
            "--idle-stop-hours"
        );
        assert_eq!(option_of(with(|s| s.idle_stop_hours = 24)), "ok");
    }

    #[test]
    fn sizes_and_retention() {
        assert_eq!(
            option_of(with(|s| s.root_volume_gb = 8)),
            "--root-volume-gb"
        );
        assert_eq!(
            option_of(with(|s| s.data_volume_gb = 0)),
            "--data-volume-gb"
        );
        assert_eq!(
            option_of(with(|s| s.backup_retention_days = 0)),
            "--backup-retention-days"
        );
        assert_eq!(
            option_of(with(|s| s.log_retention_days = 31)),
            "--log-retention-days"
        );
        assert_eq!(option_of(with(|s| s.log_retention_days = 365)), "ok");
    }
}

#[cfg(test)]
mod host_tests {
    use super::*;

    fn hosts_of(developers: u32, per_host: u32) -> Vec<Vec<u32>> {
        let s = Settings {
            developers,
            developers_per_host: per_host,
            ..Settings::default()
        };
        s.host_list()
            .iter()
            .map(|h| h.developers.iter().map(|d| d.number).collect())
            .collect()
    }

    #[test]
    fn developer_k_runs_on_host_ceil_k_over_per_host() {
        assert_eq!(hosts_of(8, 0), vec![(1..=8).collect::<Vec<_>>()]);
        // The default t3.2xlarge holds 10 (capacity model): 9 still fit one host.
        assert_eq!(hosts_of(9, 0).len(), 1);
        assert_eq!(hosts_of(40, 0).len(), 4);
        assert_eq!(hosts_of(100, 0).len(), 10);
        assert_eq!(hosts_of(40, 8).len(), 5);
        assert_eq!(
            hosts_of(17, 8),
            vec![(1..=8).collect::<Vec<_>>(), (9..=16).collect(), vec![17]]
        );
    }

    #[test]
    fn adding_developers_never_moves_one() {
        for per_host in [0, 3, 7, 10] {
            for n in 1..100 {
                let before = hosts_of(n, per_host);
                let after = hosts_of(n + 1, per_host);
                for (host, devs) in before.iter().enumerate() {
                    assert!(
                        after[host].starts_with(devs),
                        "{n}→{}: host {} had {devs:?}, now {:?}",
                        n + 1,
                        host + 1,
                        after[host]
                    );
                }
            }
        }
    }

    #[test]
    fn a_per_host_count_that_does_not_fit_is_refused_with_the_numbers() {
        let s = Settings {
            developers: 40,
            developers_per_host: 12,
            template_url_prefix: "https://b.s3.amazonaws.com/t/".into(),
            ..Settings::default()
        };
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "--developers-per-host: 12 developers × 3 GiB reserved + 2 GiB headroom = 38 GiB > t3.2xlarge's 32 GiB; use --developers-per-host 10 or a larger --instance-type"
        );
        let s = Settings {
            instance_type: "t3.xlarge".into(),
            developer_memory_gib: 16,
            developer_memory_reservation_gib: 3,
            ..Settings::default()
        };
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "--instance-type: cannot hold one developer: one developer's 16 GiB limit + 2 GiB headroom = 18 GiB > t3.xlarge's 16 GiB; use a larger --instance-type"
        );
        let s = Settings {
            instance_type: "t9.huge".into(),
            ..Settings::default()
        };
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .starts_with("--instance-type: \"t9.huge\" is not in the capacity table"),
        );
    }
}
