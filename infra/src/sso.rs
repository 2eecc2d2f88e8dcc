//! Optional single sign-on in front of the code-server passwords: the ALB authenticates every
//! request to a developer's host name before it forwards it (listener rule action Order 1
//! authenticate, Order 2 forward). Off by default: `SsoProvider` is `none` and every rule keeps
//! its single forward action, exactly as without this module.
//!
//! - `oidc`: `authenticate-oidc` against the team's IdP (issuer, authorization, token and user
//!   info endpoints, client id). The client secret stays in Secrets Manager: the rule holds a
//!   `{{resolve:secretsmanager:...}}` dynamic reference, resolved by CloudFormation, so the
//!   value is never in the template, a Parameter or the stack's description.
//! - `cognito`: `authenticate-cognito` with a user pool, app client and domain this stack
//!   creates (admin-created users only, no self sign-up), or with an existing pool's.
//!
//! SSO decides who may reach the ALB at all, not which developer's host: any user the IdP
//! signs in reaches every `devN.<domain>`, so code-server's own password stays on and keeps
//! each workspace to its developer (docs/security.md).

use crate::cfn::{Resources, get_att, if_, r#ref, resource, sub, tag_map, with};
use crate::settings::{OptionError, Settings, check};
use csagent_contract::validate;
use serde_json::{Map, Value, json};

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
fn oidc_urls(s: &SsoSettings) -> [(&'static str, &'static str, &str, &String); 4] {
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

fn string_param(description: &str, default: &str, pattern: &str, constraint: &str) -> Value {
    json!({
        "Type": "String",
        "Description": description,
        "Default": default,
        "AllowedPattern": pattern,
        "ConstraintDescription": constraint,
    })
}

/// The SSO Parameters, added to `p`.
pub fn parameters(s: &SsoSettings, p: &mut Map<String, Value>) {
    p.insert(
        "SsoProvider".into(),
        json!({
            "Type": "String",
            "Description": "Single sign-on at the ALB before code-server's password page: none, oidc (the Oidc* parameters) or cognito (a user pool this stack creates, or the Cognito* parameters). Any signed-in user reaches every developer host; code-server's password still keeps each workspace to its developer.",
            "Default": s.provider.as_str(),
            "AllowedValues": ["none", "oidc", "cognito"],
        }),
    );
    for (_, name, what, value) in oidc_urls(s) {
        p.insert(
            name.into(),
            string_param(
                &format!("With SsoProvider oidc: the {what}, a full https:// URL."),
                value,
                validate::HTTPS_URL_PATTERN,
                "empty or an https:// URL without spaces, quotes or braces",
            ),
        );
    }
    p.insert(
        "OidcClientId".into(),
        string_param(
            "With SsoProvider oidc: the client id the IdP issued for this ALB.",
            &s.oidc_client_id,
            validate::OIDC_CLIENT_ID_PATTERN,
            "empty or up to 255 printable ASCII characters without spaces",
        ),
    );
    p.insert(
        "OidcClientSecretId".into(),
        string_param(
            "With SsoProvider oidc: name or ARN of the Secrets Manager secret whose SecretString is the client secret. CloudFormation resolves it when it creates or updates the listener rules; the value never appears in the template or the parameters. Keep it outside <project>/ so the host's role cannot read it.",
            &s.oidc_client_secret_id,
            validate::SECRET_ID_PATTERN,
            "empty, a secret name (A-Z a-z 0-9 / _ + = . @ -) or a secret ARN",
        ),
    );
    p.insert(
        "CognitoUserPoolArn".into(),
        string_param(
            "With SsoProvider cognito: ARN of an existing user pool. Empty: the stack creates a pool (users created by an admin only), its app client and its domain.",
            &s.cognito_user_pool_arn,
            validate::USER_POOL_ARN_PATTERN,
            "empty or a Cognito user pool ARN",
        ),
    );
    p.insert(
        "CognitoUserPoolClientId".into(),
        string_param(
            "With CognitoUserPoolArn: the pool's app client for the ALB (with a client secret, the code grant, scope openid, callback URLs https://devN.<DomainName>/oauth2/idpresponse).",
            &s.cognito_user_pool_client_id,
            validate::USER_POOL_CLIENT_ID_PATTERN,
            "empty or a Cognito app client id",
        ),
    );
    let mut domain = string_param(
        "With CognitoUserPoolArn: that pool's domain (prefix or custom domain). Without it: the prefix of the domain the stack creates, <prefix>.auth.<region>.amazoncognito.com (unique in the region; empty: <ProjectName>-<account id>).",
        &s.cognito_user_pool_domain,
        validate::USER_POOL_DOMAIN_PATTERN,
        "empty, a domain prefix or a lower-case DNS name",
    );
    domain["MaxLength"] = json!(validate::USER_POOL_DOMAIN_MAX_LENGTH);
    p.insert("CognitoUserPoolDomain".into(), domain);
    p.insert(
        "SsoSessionSeconds".into(),
        json!({
            "Type": "Number",
            "Description": "Lifetime of the ALB's SSO session cookie in seconds; after it the next page load signs in again at the IdP.",
            "Default": s.session_seconds,
            "MinValue": 60,
            "MaxValue": MAX_SESSION_SECONDS,
        }),
    );
}

/// Parameter names, for the console's grouping.
pub const PARAMETER_NAMES: [&str; 11] = [
    "SsoProvider",
    "SsoSessionSeconds",
    "OidcIssuer",
    "OidcAuthorizationEndpoint",
    "OidcTokenEndpoint",
    "OidcUserInfoEndpoint",
    "OidcClientId",
    "OidcClientSecretId",
    "CognitoUserPoolArn",
    "CognitoUserPoolClientId",
    "CognitoUserPoolDomain",
];

/// The SSO Conditions, added to `c`.
pub fn conditions(c: &mut Map<String, Value>) {
    let is = |v: &str| json!({ "Fn::Equals": [r#ref("SsoProvider"), v] });
    c.insert("SsoOidc".into(), is("oidc"));
    c.insert("SsoCognito".into(), is("cognito"));
    c.insert(
        "UseSso".into(),
        json!({ "Fn::Not": [{ "Fn::Equals": [r#ref("SsoProvider"), "none"] }] }),
    );
    c.insert(
        "CreateCognitoPool".into(),
        json!({ "Fn::And": [
            { "Condition": "SsoCognito" },
            { "Fn::Equals": [r#ref("CognitoUserPoolArn"), ""] },
        ] }),
    );
    c.insert(
        "HasCognitoUserPoolDomain".into(),
        json!({ "Fn::Not": [{ "Fn::Equals": [r#ref("CognitoUserPoolDomain"), ""] }] }),
    );
}

/// The template's Rules: the chosen provider has its values at deploy time, so a missing one
/// fails before any resource is touched (the command line checks the same).
pub fn rules() -> Value {
    let set = |param: &str, what: &str| {
        json!({
            "Assert": { "Fn::Not": [{ "Fn::Equals": [r#ref(param), ""] }] },
            "AssertDescription": format!("{param} is required: {what}"),
        })
    };
    let mut oidc: Vec<Value> = oidc_urls(&SsoSettings::default())
        .iter()
        .map(|(_, name, what, _)| set(name, &format!("the {what} (SsoProvider oidc)")))
        .collect();
    oidc.push(set("OidcClientId", "the client id (SsoProvider oidc)"));
    oidc.push(set(
        "OidcClientSecretId",
        "the secret holding the client secret (SsoProvider oidc)",
    ));
    json!({
        "SsoOidcSettings": {
            "RuleCondition": { "Fn::Equals": [r#ref("SsoProvider"), "oidc"] },
            "Assertions": oidc,
        },
        "SsoExistingCognitoPoolSettings": {
            "RuleCondition": { "Fn::And": [
                { "Fn::Equals": [r#ref("SsoProvider"), "cognito"] },
                { "Fn::Not": [{ "Fn::Equals": [r#ref("CognitoUserPoolArn"), ""] }] },
            ] },
            "Assertions": [
                set("CognitoUserPoolClientId", "the app client of CognitoUserPoolArn"),
                set("CognitoUserPoolDomain", "the domain of CognitoUserPoolArn"),
            ],
        },
    })
}

/// `https://devN.<domain>/oauth2/idpresponse` for every developer, as `Fn::Sub` values (the
/// host is `naming::developer_host`'s).
pub fn callback_urls(s: &Settings) -> Vec<Value> {
    s.developer_list()
        .iter()
        .map(|dev| sub(format!("https://{}.${{DomainName}}{CALLBACK_PATH}", dev.name)))
        .collect()
}

/// Adds the Cognito user pool, app client and domain (condition `CreateCognitoPool`).
pub fn add(res: &mut Resources, s: &Settings) {
    let cond = |r: Value| {
        let r = with(r, "Condition", json!("CreateCognitoPool"));
        // The pool holds sign-in identities only (no data): deleted with the stack, like
        // anything else re-created by deploying again. Its users are invited again then.
        let r = with(r, "DeletionPolicy", json!("Delete"));
        with(r, "UpdateReplacePolicy", json!("Delete"))
    };
    res.add(
        "SsoUserPool",
        cond(resource(
            "AWS::Cognito::UserPool",
            json!({
                "UserPoolName": sub("${ProjectName}-developers"),
                // Only an admin adds users: with self sign-up anyone could get past the ALB.
                "AdminCreateUserConfig": { "AllowAdminCreateUserOnly": true },
                "UsernameAttributes": ["email"],
                "AutoVerifiedAttributes": ["email"],
                "MfaConfiguration": "OPTIONAL",
                "EnabledMfas": ["SOFTWARE_TOKEN_MFA"],
                "Policies": { "PasswordPolicy": {
                    "MinimumLength": 14,
                    "RequireLowercase": true,
                    "RequireUppercase": true,
                    "RequireNumbers": true,
                    "RequireSymbols": false,
                    "TemporaryPasswordValidityDays": 7,
                } },
                "AccountRecoverySetting": { "RecoveryMechanisms": [
                    { "Name": "verified_email", "Priority": 1 },
                ] },
                "UserPoolTags": tag_map(&[("Name", sub("${ProjectName}-developers"))]),
            }),
        )),
    );
    res.add(
        "SsoUserPoolClient",
        cond(resource(
            "AWS::Cognito::UserPoolClient",
            json!({
                "UserPoolId": r#ref("SsoUserPool"),
                "ClientName": sub("${ProjectName}-alb"),
                // The ALB is a confidential client: code grant with a client secret.
                "GenerateSecret": true,
                "AllowedOAuthFlowsUserPoolClient": true,
                "AllowedOAuthFlows": ["code"],
                "AllowedOAuthScopes": ["openid", "email"],
                "SupportedIdentityProviders": ["COGNITO"],
                "CallbackURLs": callback_urls(s),
                "PreventUserExistenceErrors": "ENABLED",
                "ExplicitAuthFlows": ["ALLOW_REFRESH_TOKEN_AUTH"],
            }),
        )),
    );
    res.add(
        "SsoUserPoolDomain",
        cond(resource(
            "AWS::Cognito::UserPoolDomain",
            json!({
                "UserPoolId": r#ref("SsoUserPool"),
                "Domain": if_(
                    "HasCognitoUserPoolDomain",
                    r#ref("CognitoUserPoolDomain"),
                    sub("${ProjectName}-${AWS::AccountId}"),
                ),
            }),
        )),
    );
}

/// The ALB's authenticate-oidc action (Order 1).
fn oidc_action() -> Value {
    json!({
        "Type": "authenticate-oidc",
        "Order": 1,
        "AuthenticateOidcConfig": {
            "Issuer": r#ref("OidcIssuer"),
            "AuthorizationEndpoint": r#ref("OidcAuthorizationEndpoint"),
            "TokenEndpoint": r#ref("OidcTokenEndpoint"),
            "UserInfoEndpoint": r#ref("OidcUserInfoEndpoint"),
            "ClientId": r#ref("OidcClientId"),
            // A dynamic reference: CloudFormation reads the secret when it creates or updates
            // the rule; the template and the stack only ever hold the secret's name.
            "ClientSecret": sub("{{resolve:secretsmanager:${OidcClientSecretId}:SecretString}}"),
            "Scope": "openid",
            "SessionCookieName": SESSION_COOKIE,
            "SessionTimeout": r#ref("SsoSessionSeconds"),
            // A browser without a session is redirected to the IdP. A websocket or fetch
            // without one cannot follow that redirect; code-server then shows "reconnecting"
            // until the page is reloaded (docs/operations.md).
            "OnUnauthenticatedRequest": "authenticate",
        },
    })
}

/// The ALB's authenticate-cognito action (Order 1): the stack's pool or the given one.
fn cognito_action() -> Value {
    json!({
        "Type": "authenticate-cognito",
        "Order": 1,
        "AuthenticateCognitoConfig": {
            "UserPoolArn": if_("CreateCognitoPool", get_att("SsoUserPool", "Arn"), r#ref("CognitoUserPoolArn")),
            "UserPoolClientId": if_("CreateCognitoPool", r#ref("SsoUserPoolClient"), r#ref("CognitoUserPoolClientId")),
            "UserPoolDomain": if_("CreateCognitoPool", r#ref("SsoUserPoolDomain"), r#ref("CognitoUserPoolDomain")),
            "Scope": "openid",
            "SessionCookieName": SESSION_COOKIE,
            "SessionTimeout": r#ref("SsoSessionSeconds"),
            "OnUnauthenticatedRequest": "authenticate",
        },
    })
}

/// A listener rule's `Actions` for `forward`: `[forward]` without SSO (as before SSO
/// existed), `[authenticate (Order 1), forward (Order 2)]` with it.
pub fn rule_actions(forward: Value) -> Value {
    let mut second = forward.clone();
    if let Some(obj) = second.as_object_mut() {
        obj.insert("Order".into(), json!(2));
    }
    if_(
        "SsoOidc",
        json!([oidc_action(), second.clone()]),
        if_(
            "SsoCognito",
            json!([cognito_action(), second]),
            json!([forward]),
        ),
    )
}

/// The ALB security group's egress: `to_targets` alone without SSO; with SSO also HTTPS to
/// any address, for the IdP's token and user info endpoints (IdPs have no fixed ranges). The
/// whole list is under the `Fn::If` (not one item in it) so scanners see each rule's
/// description.
pub fn alb_egress(to_targets: Value) -> Value {
    let to_idp = json!({
        "IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIp": "0.0.0.0/0",
        "Description": "SSO: to the identity provider's token and user info endpoints",
    });
    if_(
        "UseSso",
        json!([to_targets.clone(), to_idp]),
        json!([to_targets]),
    )
}

/// Output naming the redirect URLs to register at the IdP (condition `UseSso`): one pattern,
/// not the list, so its length does not grow with the developers.
pub fn outputs(s: &Settings, o: &mut Map<String, Value>) {
    o.insert(
        "SsoCallbackUrls".into(),
        json!({
            "Condition": "UseSso",
            "Description": "Redirect (callback) URLs to register with the IdP's client for this ALB, one per developer",
            "Value": sub(format!(
                "https://dev<N>.${{DomainName}}{CALLBACK_PATH} for N = 1..{}",
                s.developers
            )),
        }),
    );
}
