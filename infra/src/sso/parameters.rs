//! The SSO Parameters; their patterns sit next to the command line's validators in
//! `csagent_contract::validate`.

use super::settings::{MAX_SESSION_SECONDS, SsoSettings, oidc_urls};
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
