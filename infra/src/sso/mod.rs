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
//!
//! `settings.rs`: the options and their checks; `parameters.rs`: the template Parameters;
//! here: Conditions, Rules, the Cognito resources, the rule actions, the ALB's egress and the
//! output.

mod parameters;
mod settings;

pub use parameters::{PARAMETER_NAMES, parameters};
pub use settings::{
    CALLBACK_PATH, DEFAULT_SESSION_SECONDS, MAX_SESSION_SECONDS, SESSION_COOKIE, SsoProvider,
    SsoSettings,
};

use crate::cfn::{Resources, get_att, if_, r#ref, resource, sub, tag_map, with};
use crate::settings::Settings;
use serde_json::{Map, Value, json};
use settings::oidc_urls;

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
        .map(|dev| {
            sub(format!(
                "https://{}.${{DomainName}}{CALLBACK_PATH}",
                dev.name
            ))
        })
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
