//! The SSO options (each sets its Parameter's default) and their checks: each value's form,
//! then that the chosen provider has what it needs.

use crate::settings::{OptionError, check};
use csagent_contract::validate;

/// Who authenticates users before the ALB forwards to code-server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SsoProvider {
    /// No SSO: the ALB forwards straight to code-server's password page.
    #[default]
    None,
    /// An OpenID Connect IdP (Okta, Entra ID, Google, Keycloak, ...).
    Oidc,
    /// An Amazon Cognito user pool (created by the stack unless one is given).
    Cognito,
}

impl SsoProvider {
    /// The `SsoProvider` Parameter's value.
    pub fn as_str(self) -> &'static str {
        match self {
            SsoProvider::None => "none",
            SsoProvider::Oidc => "oidc",
            SsoProvider::Cognito => "cognito",
        }
    }
}

/// Default ALB session lifetime in seconds: a long working day, so the session does not run
/// out (and break code-server's reconnects, see docs/operations.md) during the day.
pub const DEFAULT_SESSION_SECONDS: u32 = 43_200;
/// Longest session the ALB allows (7 days).
pub const MAX_SESSION_SECONDS: u32 = 604_800;
/// Path on every developer host where the IdP sends users back to the ALB.
pub const CALLBACK_PATH: &str = "/oauth2/idpresponse";
/// Name of the ALB's session cookie (its default; it does not clash with code-server's
/// `code-server-session`).
pub const SESSION_COOKIE: &str = "AWSELBAuthSessionCookie";

/// The SSO options; each sets its Parameter's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoSettings {
    /// Which provider, if any.
    pub provider: SsoProvider,
    /// OIDC issuer URL.
    pub oidc_issuer: String,
    /// OIDC authorization endpoint URL.
    pub oidc_authorization_endpoint: String,
    /// OIDC token endpoint URL.
    pub oidc_token_endpoint: String,
    /// OIDC user info endpoint URL.
    pub oidc_user_info_endpoint: String,
    /// OIDC client id.
    pub oidc_client_id: String,
    /// Name or ARN of the Secrets Manager secret whose SecretString is the OIDC client secret.
    pub oidc_client_secret_id: String,
    /// ARN of an existing Cognito user pool; empty: the stack creates one.
    pub cognito_user_pool_arn: String,
    /// App client id in the existing pool (with `cognito_user_pool_arn`).
    pub cognito_user_pool_client_id: String,
    /// The existing pool's domain (prefix or custom domain), or the prefix of the domain the
    /// stack creates (empty: `<project>-<account id>`).
    pub cognito_user_pool_domain: String,
    /// ALB session lifetime in seconds.
    pub session_seconds: u32,
}

impl Default for SsoSettings {
    fn default() -> Self {
        SsoSettings {
            provider: SsoProvider::None,
            oidc_issuer: String::new(),
            oidc_authorization_endpoint: String::new(),
            oidc_token_endpoint: String::new(),
            oidc_user_info_endpoint: String::new(),
            oidc_client_id: String::new(),
            oidc_client_secret_id: String::new(),
            cognito_user_pool_arn: String::new(),
            cognito_user_pool_client_id: String::new(),
            cognito_user_pool_domain: String::new(),
            session_seconds: DEFAULT_SESSION_SECONDS,
        }
    }
}

/// The OIDC URL options, their Parameters and their settings, in one place for validation,
/// Parameters and Rules.
pub(super) fn oidc_urls(s: &SsoSettings) -> [(&'static str, &'static str, &str, &String); 4] {
    [
        (
            "--oidc-issuer",
            "OidcIssuer",
            "issuer identifier of the IdP",
            &s.oidc_issuer,
        ),
        (
            "--oidc-authorization-endpoint",
            "OidcAuthorizationEndpoint",
            "authorization endpoint of the IdP",
            &s.oidc_authorization_endpoint,
        ),
        (
            "--oidc-token-endpoint",
            "OidcTokenEndpoint",
            "token endpoint of the IdP",
            &s.oidc_token_endpoint,
        ),
        (
            "--oidc-user-info-endpoint",
            "OidcUserInfoEndpoint",
            "user info endpoint of the IdP",
            &s.oidc_user_info_endpoint,
        ),
    ]
}

impl SsoSettings {
    /// Checks each value's form, then that the chosen provider has what it needs.
    pub fn validate(&self) -> Result<(), OptionError> {
        for (option, _, _, value) in oidc_urls(self) {
            check(
                validate::is_https_url(value),
                option,
                "must be an https:// URL without spaces, quotes or braces",
                value,
            )?;
        }
        check(
            validate::is_oidc_client_id(&self.oidc_client_id),
            "--oidc-client-id",
            "must be at most 255 printable ASCII characters without spaces",
            &self.oidc_client_id,
        )?;
        check(
            validate::is_secret_id(&self.oidc_client_secret_id),
            "--oidc-client-secret-id",
            "must be a Secrets Manager secret name (A-Z a-z 0-9 / _ + = . @ -) or a secret ARN",
            &self.oidc_client_secret_id,
        )?;
        check(
            validate::is_user_pool_arn(&self.cognito_user_pool_arn),
            "--cognito-user-pool-arn",
            "must be a Cognito user pool ARN, arn:aws:cognito-idp:REGION:ACCOUNT:userpool/REGION_ID",
            &self.cognito_user_pool_arn,
        )?;
        check(
            validate::is_user_pool_client_id(&self.cognito_user_pool_client_id),
            "--cognito-user-pool-client-id",
            "must be a Cognito app client id (up to 128 of A-Z a-z 0-9 +)",
            &self.cognito_user_pool_client_id,
        )?;
        check(
            validate::is_user_pool_domain(&self.cognito_user_pool_domain),
            "--cognito-user-pool-domain",
            "must be a domain prefix such as my-team, or a lower-case DNS name",
            &self.cognito_user_pool_domain,
        )?;
        if !(60..=MAX_SESSION_SECONDS).contains(&self.session_seconds) {
            return Err(OptionError {
                option: "--sso-session-seconds",
                message: format!(
                    "must be 60..={MAX_SESSION_SECONDS} (got {})",
                    self.session_seconds
                ),
            });
        }
        let required = |option: &'static str, value: &str, why: &str| {
            check(!value.is_empty(), option, why, value)
        };
        match self.provider {
            SsoProvider::None => {}
            SsoProvider::Oidc => {
                for (option, _, _, value) in oidc_urls(self) {
                    required(option, value, "is required with --sso oidc")?;
                }
                required(
                    "--oidc-client-id",
                    &self.oidc_client_id,
                    "is required with --sso oidc",
                )?;
                required(
                    "--oidc-client-secret-id",
                    &self.oidc_client_secret_id,
                    "is required with --sso oidc (the secret holding the client secret)",
                )?;
            }
            SsoProvider::Cognito if !self.cognito_user_pool_arn.is_empty() => {
                let why = "is required with --cognito-user-pool-arn";
                required(
                    "--cognito-user-pool-client-id",
                    &self.cognito_user_pool_client_id,
                    why,
                )?;
                required(
                    "--cognito-user-pool-domain",
                    &self.cognito_user_pool_domain,
                    why,
                )?;
            }
            SsoProvider::Cognito => {
                // The stack creates the pool and its client; a client id would be ignored.
                check(
                    self.cognito_user_pool_client_id.is_empty(),
                    "--cognito-user-pool-client-id",
                    "needs --cognito-user-pool-arn (without it the stack creates the pool and its client)",
                    &self.cognito_user_pool_client_id,
                )?;
            }
        }
        Ok(())
    }
}
