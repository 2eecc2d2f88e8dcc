//! Values infra's command line checks and the template's Parameters constrain again at deploy
//! time (`AllowedPattern`, `MaxLength`): each predicate sits next to its pattern, and
//! `infra/tests/contract.rs` runs the same sample values through both. The patterns are
//! CloudFormation's (Java regex, matched against the whole value), written in the subset that
//! Java, Python (cfn-lint) and Rust's `regex` read alike: no look-around, no back-references.
//!
//! "Whitespace" is Rust's [`char::is_whitespace`] (Unicode); Java's `\s` is only ASCII, so the
//! patterns that refuse whitespace also list the other Unicode spaces.

use std::net::Ipv4Addr;
use std::sync::LazyLock;

// The Unicode whitespace that Java's `\s` does not cover, for use inside a character class.
macro_rules! unicode_space {
    () => {
        "\\u0085\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000"
    };
}

/// A developer's name (`dev3`): it becomes a container, directory, secret and log group name
/// and a DNS label, so it is kept to what all of those accept.
pub fn is_developer_name(value: &str) -> bool {
    (1..=32).contains(&value.len())
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// `ProjectName`: 2-32 of a-z, 0-9 and '-', starting with a letter, not ending with '-'.
pub const PROJECT_PATTERN: &str = "^[a-z][a-z0-9-]{0,30}[a-z0-9]$";

/// See [`PROJECT_PATTERN`].
pub fn is_project(value: &str) -> bool {
    (2..=32).contains(&value.len())
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && !value.ends_with('-')
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A tag value (`Environment`, `CostCenter`): 1-128 tag-safe ASCII characters.
pub const TAG_VALUE_PATTERN: &str = "^[A-Za-z0-9 _.:/=+@-]{1,128}$";

/// See [`TAG_VALUE_PATTERN`].
pub fn is_tag_value(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " _.:/=+@-".contains(c))
}

/// `InstanceType`: family '.' size, such as `t3.2xlarge`.
pub const INSTANCE_TYPE_PATTERN: &str = "^[a-z][a-z0-9-]*\\.[a-z0-9]+$";

/// See [`INSTANCE_TYPE_PATTERN`].
pub fn is_instance_type(value: &str) -> bool {
    match value.split_once('.') {
        Some((family, size)) => {
            family.starts_with(|c: char| c.is_ascii_lowercase())
                && family
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !size.is_empty()
                && size
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        }
        None => false,
    }
}

/// `KeyPairName`: empty or at most 255 printable ASCII characters.
pub const KEY_PAIR_PATTERN: &str = "^[ -~]{0,255}$";

/// See [`KEY_PAIR_PATTERN`].
pub fn is_key_pair(value: &str) -> bool {
    value.len() <= 255 && value.chars().all(|c| (' '..='~').contains(&c))
}

/// One IPv4 address octet, 0-255, without leading zeros (which [`Ipv4Addr`] refuses).
const OCTET: &str = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";

/// `AdminSshCidr`: empty or what [`cidr`] accepts, an IPv4 network address with a prefix of
/// 1-32 (not the whole internet). One alternative per prefix length, so the octet the prefix
/// splits is limited to the values with no host bits set (e.g. `/25`: 0 or 128). The prefix
/// may have leading zeros because the command line reads it as a number.
pub static CIDR_PATTERN: LazyLock<String> = LazyLock::new(|| {
    let alternatives: Vec<String> = (1..=32u32)
        .map(|prefix| {
            let full = (prefix / 8) as usize;
            let mut octets = vec![OCTET.to_string(); full];
            if full < 4 {
                octets.push(multiples(1 << (8 - prefix % 8)));
                octets.extend(std::iter::repeat_n("0".to_string(), 3 - full));
            }
            format!("{}/0*{prefix}", octets.join("\\."))
        })
        .collect();
    format!("^$|^({})$", alternatives.join("|"))
});

/// A regex for the multiples of `step` in 0..=255, written compactly: numbers with the same
/// leading digits share one branch (`1[26]`), and so do such branches that differ only in
/// their last leading digit (`[1-9][02468]`).
fn multiples(step: u32) -> String {
    // (leading digits, last digits) in ascending order.
    let mut tails: Vec<(String, String)> = Vec::new();
    for n in (0..=255).step_by(step as usize) {
        let text = n.to_string();
        let (head, last) = text.split_at(text.len() - 1);
        match tails.last_mut() {
            Some((h, digits)) if h == head => digits.push_str(last),
            _ => tails.push((head.to_string(), last.to_string())),
        }
    }
    // (leading digits but the last, last leading digits, last digits).
    let mut groups: Vec<(String, String, String)> = Vec::new();
    for (head, digits) in tails {
        let (stem, last_head) = head.split_at(head.len().saturating_sub(1));
        match groups
            .iter_mut()
            .find(|(s, h, d)| s == stem && *d == digits && !h.is_empty() && !last_head.is_empty())
        {
            Some((_, heads, _)) => heads.push_str(last_head),
            None => groups.push((stem.to_string(), last_head.to_string(), digits)),
        }
    }
    let branches: Vec<String> = groups
        .iter()
        .map(|(stem, heads, digits)| format!("{stem}{}{}", class(heads), class(digits)))
        .collect();
    match branches.as_slice() {
        [one] => one.clone(),
        _ => format!("({})", branches.join("|")),
    }
}

/// Digits as a regex: `5`, `[2-7]` for a run, `[048]` otherwise; "" for none.
fn class(digits: &str) -> String {
    let bytes = digits.as_bytes();
    match bytes {
        [] => String::new(),
        [one] => char::from(*one).to_string(),
        _ if bytes.windows(2).all(|w| w[1] == w[0] + 1) => {
            format!(
                "[{}-{}]",
                char::from(bytes[0]),
                char::from(bytes[bytes.len() - 1])
            )
        }
        _ => format!("[{digits}]"),
    }
}

/// Why [`cidr`] refused a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CidrError {
    /// Not `a.b.c.d/n`.
    NotCidr,
    /// The prefix length is not 0..=32.
    Prefix,
    /// `/0`: SSH open to the whole internet.
    WholeInternet,
    /// Bits after the prefix are set (`10.0.0.1/24`).
    HostBits,
}

/// An SSH source CIDR: empty, or an IPv4 network address with a prefix of 1-32.
pub fn cidr(value: &str) -> Result<(), CidrError> {
    if value.is_empty() {
        return Ok(());
    }
    let (addr, prefix) = value.split_once('/').ok_or(CidrError::NotCidr)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| CidrError::NotCidr)?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= 32 && !prefix.starts_with('+'))
        .ok_or(CidrError::Prefix)?;
    if prefix == 0 {
        return Err(CidrError::WholeInternet);
    }
    let mask = u32::MAX << (32 - u32::from(prefix));
    if u32::from(addr) & !mask != 0 {
        return Err(CidrError::HostBits);
    }
    Ok(())
}

/// `AlarmEmail`: empty or local@domain.tld, without whitespace.
pub const EMAIL_PATTERN: &str = concat!(
    "^$|^[^@\\s",
    unicode_space!(),
    "]+@[^@\\s",
    unicode_space!(),
    "]+\\.[^@\\s",
    unicode_space!(),
    "]+$"
);

/// See [`EMAIL_PATTERN`].
pub fn is_email(value: &str) -> bool {
    if value.is_empty() {
        return true;
    }
    match value.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !value.chars().any(|c| c.is_whitespace())
                && !domain.contains('@')
        }
        None => false,
    }
}

/// `DebUrl`: an https://, s3:// or file:// URL without quotes or whitespace (the user-data
/// script puts it between single quotes).
pub const DEB_URL_PATTERN: &str = concat!("^(https|s3|file)://[^'\\s", unicode_space!(), "]+$");

/// See [`DEB_URL_PATTERN`]; unlike the other predicates, empty is not a URL.
pub fn is_deb_url(value: &str) -> bool {
    let scheme_ok = ["https://", "s3://", "file://"]
        .iter()
        .any(|s| value.starts_with(s) && value.len() > s.len());
    scheme_ok && !value.chars().any(|c| c == '\'' || c.is_whitespace())
}

/// `DomainName`: a lower-case DNS name of two or more labels whose last starts with a letter.
pub const DOMAIN_PATTERN: &str =
    "^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$";

/// Longest `DomainName` (the Parameter's `MaxLength`): room for `dev64.` in front of it.
pub const DOMAIN_MAX_LENGTH: usize = 240;

/// See [`DOMAIN_PATTERN`] and [`DOMAIN_MAX_LENGTH`].
pub fn is_domain(value: &str) -> bool {
    if value.len() > DOMAIN_MAX_LENGTH {
        return false;
    }
    let labels: Vec<&str> = value.split('.').collect();
    if labels.len() < 2 {
        return false;
    }
    let labels_ok = labels.iter().all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    labels_ok
        && labels
            .last()
            .and_then(|l| l.chars().next())
            .is_some_and(|c| c.is_ascii_lowercase())
}

/// `ExistingCertificateArn`: empty or an ACM certificate ARN.
pub const CERTIFICATE_ARN_PATTERN: &str =
    "^$|^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/[A-Za-z0-9-]+$";

/// See [`CERTIFICATE_ARN_PATTERN`].
pub fn is_certificate_arn(value: &str) -> bool {
    value.is_empty()
        || arn_resource(value, "acm")
            .and_then(|r| r.strip_prefix("certificate/"))
            .is_some_and(|id| {
                !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
}

/// `PasswordRotationLambdaArn`: empty or a Lambda function ARN, optionally with a version or
/// alias.
pub const LAMBDA_ARN_PATTERN: &str = "^$|^arn:aws[a-z-]*:lambda:[a-z0-9-]+:[0-9]{12}:function:[A-Za-z0-9_-]{1,64}(:[A-Za-z0-9_$-]{1,128})?$";

/// See [`LAMBDA_ARN_PATTERN`].
pub fn is_lambda_arn(value: &str) -> bool {
    if value.is_empty() {
        return true;
    }
    let name_ok = |s: &str, max: usize, extra: &str| {
        (1..=max).contains(&s.len())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || extra.contains(c))
    };
    // function:NAME or function:NAME:QUALIFIER (a version or an alias).
    arn_resource(value, "lambda")
        .and_then(|r| r.strip_prefix("function:"))
        .is_some_and(|rest| match rest.split_once(':') {
            Some((name, qualifier)) => name_ok(name, 64, "") && name_ok(qualifier, 128, "$"),
            None => name_ok(rest, 64, ""),
        })
}

/// The part after `arn:PARTITION:SERVICE:REGION:ACCOUNT:` of an ARN for `service`
/// in a region and account, or None when the prefix is not that.
fn arn_resource<'a>(value: &'a str, service: &str) -> Option<&'a str> {
    let parts: Vec<&str> = value.splitn(6, ':').collect();
    let ok = parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[1].chars().all(|c| c.is_ascii_lowercase() || c == '-')
        && parts[2] == service
        && !parts[3].is_empty()
        && parts[3]
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && parts[4].len() == 12
        && parts[4].chars().all(|c| c.is_ascii_digit());
    // Lazily: parts[5] does not exist when the value has fewer than six fields.
    ok.then(|| parts[5])
}

/// `AccessLogBucket`: empty or an S3 bucket name.
pub const BUCKET_PATTERN: &str = "^$|^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$";

/// See [`BUCKET_PATTERN`].
pub fn is_bucket(value: &str) -> bool {
    value.is_empty()
        || ((3..=63).contains(&value.len())
            && value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// An image tag as Docker accepts it, or empty (the template's `TeamImageTag`).
pub const IMAGE_TAG_PATTERN: &str = "^$|^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$";

/// See [`IMAGE_TAG_PATTERN`].
pub fn is_image_tag(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 128
            && !value.starts_with(['.', '-'])
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')))
}

/// One field of an EventBridge Scheduler cron expression: digits, names (`MON`, `JAN`) and
/// the wildcards `, - * / L W #`, as a regex class body.
macro_rules! cron_field {
    (minute) => {
        "[0-9*,/-]+"
    };
    (day_of_month) => {
        "[0-9*,/LW-]+"
    };
    (month) => {
        "[0-9A-Za-z*,/-]+"
    };
    (day_of_week) => {
        "[0-9A-Za-z*,/#-]+"
    };
}

/// `ScheduleStart`, `ScheduleStop`: empty (no schedule) or an EventBridge Scheduler cron
/// expression, `cron(minutes hours day-of-month month day-of-week year)`, in which exactly one
/// of day-of-month and day-of-week is `?` (Scheduler's rule). Only the shape is checked here;
/// Scheduler checks the values (e.g. hour 0-23) when the stack creates the schedule.
pub const SCHEDULE_CRON_PATTERN: &str = concat!(
    "^$|^cron\\(",
    cron_field!(minute),
    " ",
    cron_field!(minute),
    " (\\? ",
    cron_field!(month),
    " ",
    cron_field!(day_of_week),
    "|",
    cron_field!(day_of_month),
    " ",
    cron_field!(month),
    " \\?) ",
    cron_field!(minute),
    "\\)$"
);

/// Longest schedule expression Scheduler accepts (the Parameter's `MaxLength`).
pub const SCHEDULE_EXPRESSION_MAX_LENGTH: usize = 256;

/// See [`SCHEDULE_CRON_PATTERN`] and [`SCHEDULE_EXPRESSION_MAX_LENGTH`].
pub fn is_schedule_cron(value: &str) -> bool {
    if value.is_empty() {
        return true;
    }
    if value.len() > SCHEDULE_EXPRESSION_MAX_LENGTH {
        return false;
    }
    let Some(body) = value
        .strip_prefix("cron(")
        .and_then(|v| v.strip_suffix(')'))
    else {
        return false;
    };
    let fields: Vec<&str> = body.split(' ').collect();
    let [minute, hour, day_of_month, month, day_of_week, year] = fields[..] else {
        return false;
    };
    let field = |f: &str, extra: &str, letters: bool| {
        !f.is_empty()
            && f.chars().all(|c| {
                c.is_ascii_digit()
                    || "*,/-".contains(c)
                    || extra.contains(c)
                    || (letters && c.is_ascii_alphabetic())
            })
    };
    let days = match (day_of_month, day_of_week) {
        ("?", dow) => field(dow, "#", true),
        (dom, "?") => field(dom, "LW", false),
        _ => false,
    };
    field(minute, "", false)
        && field(hour, "", false)
        && days
        && field(month, "", true)
        && field(year, "", false)
}

/// `ScheduleTimezone`: an IANA time zone name such as `Europe/Berlin`, `UTC` or
/// `America/Argentina/Buenos_Aires` (shape only: Scheduler checks the name at deploy).
pub const TIMEZONE_PATTERN: &str = "^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$";

/// Longest time zone name Scheduler accepts (the Parameter's `MaxLength`).
pub const TIMEZONE_MAX_LENGTH: usize = 50;

/// See [`TIMEZONE_PATTERN`] and [`TIMEZONE_MAX_LENGTH`].
pub fn is_timezone(value: &str) -> bool {
    let segment = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+-".contains(c))
    };
    let parts: Vec<&str> = value.split('/').collect();
    value.len() <= TIMEZONE_MAX_LENGTH
        && parts.len() <= 3
        && parts.iter().all(|p| segment(p))
        && value.starts_with(|c: char| c.is_ascii_alphabetic())
}

/// Longest idle stop, in hours: an alarm's evaluation window of 5-minute periods may span at
/// most one day (PutMetricAlarm).
pub const MAX_IDLE_STOP_HOURS: u32 = 24;

/// `OidcIssuer` and the OIDC endpoints: empty or an `https://` URL without whitespace, quotes
/// or braces (the ALB wants the full URL of each; nothing here is put in a script, but a
/// brace would end the `{{resolve:...}}` text next to it in the template).
pub const HTTPS_URL_PATTERN: &str = concat!("^$|^https://[^'\"{}\\s", unicode_space!(), "]+$");

/// See [`HTTPS_URL_PATTERN`].
pub fn is_https_url(value: &str) -> bool {
    value.is_empty()
        || (value.len() > "https://".len()
            && value.starts_with("https://")
            && !value
                .chars()
                .any(|c| matches!(c, '\'' | '"' | '{' | '}') || c.is_whitespace()))
}

/// `OidcClientId`: empty or 1-255 printable ASCII characters without spaces (IdPs issue
/// opaque ids; the ALB takes any string).
pub const OIDC_CLIENT_ID_PATTERN: &str = "^[!-~]{0,255}$";

/// See [`OIDC_CLIENT_ID_PATTERN`].
pub fn is_oidc_client_id(value: &str) -> bool {
    value.len() <= 255 && value.chars().all(|c| ('!'..='~').contains(&c))
}

/// `OidcClientSecretId`: empty, a Secrets Manager secret name (1-512 of `A-Za-z0-9/_+=.@-`),
/// or a secret's full ARN. It goes into a `{{resolve:secretsmanager:ID:SecretString}}` dynamic
/// reference, so a name must not hold the `:` that separates the reference's fields.
pub const SECRET_ID_PATTERN: &str =
    "^$|^(arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:)?[A-Za-z0-9/_+=.@-]{1,512}$";

/// See [`SECRET_ID_PATTERN`].
pub fn is_secret_id(value: &str) -> bool {
    let name_ok = |n: &str| {
        (1..=512).contains(&n.len())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c))
    };
    value.is_empty()
        || name_ok(value)
        || arn_resource(value, "secretsmanager")
            .and_then(|r| r.strip_prefix("secret:"))
            .is_some_and(name_ok)
}

/// `CognitoUserPoolArn`: empty (the stack creates the pool) or a user pool's ARN.
pub const USER_POOL_ARN_PATTERN: &str =
    "^$|^arn:aws[a-z-]*:cognito-idp:[a-z0-9-]+:[0-9]{12}:userpool/[a-z0-9-]+_[0-9A-Za-z]+$";

/// See [`USER_POOL_ARN_PATTERN`].
pub fn is_user_pool_arn(value: &str) -> bool {
    value.is_empty()
        || arn_resource(value, "cognito-idp")
            .and_then(|r| r.strip_prefix("userpool/"))
            .and_then(|id| id.split_once('_'))
            .is_some_and(|(region, suffix)| {
                !region.is_empty()
                    && region
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !suffix.is_empty()
                    && suffix.chars().all(|c| c.is_ascii_alphanumeric())
            })
}

/// `CognitoUserPoolClientId`: empty or an app client id (1-128 of `A-Za-z0-9+]`).
pub const USER_POOL_CLIENT_ID_PATTERN: &str = "^[A-Za-z0-9+]{0,128}$";

/// See [`USER_POOL_CLIENT_ID_PATTERN`].
pub fn is_user_pool_client_id(value: &str) -> bool {
    value.len() <= 128 && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '+')
}

/// `CognitoUserPoolDomain`: empty, a prefix domain (`my-team`, the part before
/// `.auth.<region>.amazoncognito.com`), or a custom domain of an existing pool
/// (`auth.example.com`): lower-case DNS labels.
pub const USER_POOL_DOMAIN_PATTERN: &str =
    "^$|^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$";

/// Longest `CognitoUserPoolDomain` (a DNS name).
pub const USER_POOL_DOMAIN_MAX_LENGTH: usize = 253;

/// See [`USER_POOL_DOMAIN_PATTERN`] and [`USER_POOL_DOMAIN_MAX_LENGTH`].
pub fn is_user_pool_domain(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= USER_POOL_DOMAIN_MAX_LENGTH
            && value.split('.').all(|label| {
                (1..=63).contains(&label.len())
                    && label
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            }))
}

/// `ExistingBackupVaultName`: empty (the stack creates its vault) or an AWS Backup vault name,
/// 2-50 of `A-Za-z0-9_-`.
pub const BACKUP_VAULT_PATTERN: &str = "^$|^[A-Za-z0-9_-]{2,50}$";

/// See [`BACKUP_VAULT_PATTERN`].
pub fn is_backup_vault(value: &str) -> bool {
    value.is_empty()
        || ((2..=50).contains(&value.len())
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
}

/// `ExistingTeamImageRepository`: empty (the stack creates its repository) or an ECR
/// repository name: `/`-separated components of `a-z0-9` runs joined by one of `._-`, at most
/// 256 characters.
pub const ECR_REPOSITORY_PATTERN: &str =
    "^$|^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$";

/// Longest `ExistingTeamImageRepository`.
pub const ECR_REPOSITORY_MAX_LENGTH: usize = 256;

/// See [`ECR_REPOSITORY_PATTERN`] and [`ECR_REPOSITORY_MAX_LENGTH`].
pub fn is_ecr_repository(value: &str) -> bool {
    let component_ok = |c: &str| {
        // a-z0-9 runs joined by single separators, no separator at either end.
        !c.is_empty()
            && c.split(['.', '_', '-']).all(|run| {
                !run.is_empty()
                    && run
                        .chars()
                        .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            })
    };
    value.is_empty()
        || (value.len() <= ECR_REPOSITORY_MAX_LENGTH && value.split('/').all(component_ok))
}

/// `DataVolumeSnapshotId`: empty (a blank volume) or an EBS snapshot id.
pub const SNAPSHOT_ID_PATTERN: &str = "^$|^snap-([0-9a-f]{8}|[0-9a-f]{17})$";

/// See [`SNAPSHOT_ID_PATTERN`].
pub fn is_snapshot_id(value: &str) -> bool {
    value.is_empty()
        || value.strip_prefix("snap-").is_some_and(|hex| {
            (hex.len() == 8 || hex.len() == 17)
                && hex
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiples_are_compact_and_exact() {
        assert_eq!(multiples(256), "0");
        assert_eq!(multiples(128), "(0|128)");
        assert_eq!(
            multiples(2),
            "([02468]|[1-9][02468]|1[0-9][02468]|2[0-4][02468]|25[024])"
        );
    }

    #[test]
    fn cidr_reasons() {
        assert_eq!(cidr(""), Ok(()));
        assert_eq!(cidr("203.0.113.0/24"), Ok(()));
        assert_eq!(cidr("1.2.3.4"), Err(CidrError::NotCidr));
        assert_eq!(cidr("1.2.3.4/33"), Err(CidrError::Prefix));
        assert_eq!(cidr("0.0.0.0/0"), Err(CidrError::WholeInternet));
        assert_eq!(cidr("10.0.0.1/24"), Err(CidrError::HostBits));
    }

    #[test]
    fn schedule_cron_shapes() {
        for good in [
            "",
            "cron(0 8 ? * MON-FRI *)",
            "cron(0 20 ? * MON-FRI *)",
            "cron(30 7 ? * 2-6 *)",
            "cron(0 8 1,15 * ? *)",
            "cron(0 18 L * ? *)",
            "cron(0 9 ? * 6#3 *)",
            "cron(*/30 8-20 ? * MON-FRI 2025-2030)",
        ] {
            assert!(is_schedule_cron(good), "{good}");
        }
        for bad in [
            "0 8 ? * MON-FRI *",
            "cron(0 8 * * MON-FRI *)",
            "cron(0 8 ? * ? *)",
            "cron(0 8 ? * MON-FRI)",
            "cron(0  8 ? * MON-FRI *)",
            "rate(1 hour)",
            "cron(0 8 ? * MON-FRI *) ",
            "cron(0 8 ? * MON;FRI *)",
        ] {
            assert!(!is_schedule_cron(bad), "{bad}");
        }
    }

    #[test]
    fn timezone_shapes() {
        for good in [
            "UTC",
            "Europe/Berlin",
            "America/Argentina/Buenos_Aires",
            "Etc/GMT+5",
            "America/Port-au-Prince",
        ] {
            assert!(is_timezone(good), "{good}");
        }
        for bad in ["", "/Berlin", "Europe/", "Europe Berlin", "a/b/c/d", "1UTC"] {
            assert!(!is_timezone(bad), "{bad}");
        }
    }
}
