//! SSO at the ALB (issue 19.5), on the template: off by default and then every rule and the
//! ALB's egress are exactly what they were without SSO; `oidc` puts authenticate-oidc (Order 1)
//! before the forward (Order 2) with the client secret only as a Secrets Manager dynamic
//! reference; `cognito` does the same with the pool the stack creates (admin-created users
//! only, a callback URL per developer) or a given one; the ALB may then reach the IdP over
//! HTTPS; the Rules refuse a provider without its settings. moto cannot check the created pool
//! (no `AWS::Cognito::*`) nor the egress (it ignores SecurityGroupEgress): this file does.

mod common;

use common::resolve;
use infra::sso::{SsoProvider, SsoSettings};
use infra::{Settings, build_template};
use serde_json::{Value, json};

fn template(sso: SsoSettings) -> Value {
    let s = Settings {
        developers: 3,
        sso,
        ..Settings::default()
    };
    s.validate().unwrap();
    build_template(&s)
}

fn oidc() -> SsoSettings {
    SsoSettings {
        provider: SsoProvider::Oidc,
        oidc_issuer: "https://idp.example.com".into(),
        oidc_authorization_endpoint: "https://idp.example.com/authorize".into(),
        oidc_token_endpoint: "https://idp.example.com/token".into(),
        oidc_user_info_endpoint: "https://idp.example.com/userinfo".into(),
        oidc_client_id: "0oa1client".into(),
        oidc_client_secret_id: "code-server-multi-dev-sso/oidc-client-secret".into(),
        ..SsoSettings::default()
    }
}

/// The SSO conditions for a provider (and whether the stack creates the Cognito pool).
fn conditions(provider: &str, create_pool: bool) -> Vec<(&'static str, bool)> {
    vec![
        ("SsoOidc", provider == "oidc"),
        ("SsoCognito", provider == "cognito"),
        ("UseSso", provider != "none"),
        ("CreateCognitoPool", provider == "cognito" && create_pool),
    ]
}

fn rule_actions(t: &Value, d: u32, conds: &[(&str, bool)]) -> Value {
    resolve(
        &t["Resources"][format!("Dev{d}ListenerRule")]["Properties"]["Actions"],
        conds,
    )
    .unwrap()
}

fn forward(d: u32) -> Value {
    json!({ "Type": "forward", "TargetGroupArn": { "Ref": format!("Dev{d}TargetGroup") } })
}

#[test]
fn off_by_default_leaves_every_rule_and_the_alb_egress_as_without_sso() {
    let t = template(SsoSettings::default());
    assert_eq!(t["Parameters"]["SsoProvider"]["Default"], "none");
    let off = conditions("none", false);
    for d in 1..=3 {
        // Exactly the one forward action, without an Order, as before SSO existed.
        assert_eq!(rule_actions(&t, d, &off), json!([forward(d)]));
    }
    let egress = resolve(
        &t["Resources"]["AlbSecurityGroup"]["Properties"]["SecurityGroupEgress"],
        &off,
    )
    .unwrap();
    let egress = egress.as_array().unwrap();
    assert_eq!(egress.len(), 1);
    assert_eq!(egress[0]["CidrIp"], "10.0.0.0/16");
    for r in ["SsoUserPool", "SsoUserPoolClient", "SsoUserPoolDomain"] {
        assert_eq!(t["Resources"][r]["Condition"], "CreateCognitoPool");
    }
    assert_eq!(t["Outputs"]["SsoCallbackUrls"]["Condition"], "UseSso");
}

#[test]
fn oidc_authenticates_then_forwards_with_the_secret_only_referenced() {
    let t = template(oidc());
    assert_eq!(t["Parameters"]["SsoProvider"]["Default"], "oidc");
    let on = conditions("oidc", false);
    for d in 1..=3 {
        let actions = rule_actions(&t, d, &on);
        assert_eq!(actions.as_array().unwrap().len(), 2);
        let auth = &actions[0];
        assert_eq!(auth["Type"], "authenticate-oidc");
        assert_eq!(auth["Order"], 1);
        let c = &auth["AuthenticateOidcConfig"];
        for (key, param) in [
            ("Issuer", "OidcIssuer"),
            ("AuthorizationEndpoint", "OidcAuthorizationEndpoint"),
            ("TokenEndpoint", "OidcTokenEndpoint"),
            ("UserInfoEndpoint", "OidcUserInfoEndpoint"),
            ("ClientId", "OidcClientId"),
            ("SessionTimeout", "SsoSessionSeconds"),
        ] {
            assert_eq!(c[key]["Ref"], param, "{key}");
        }
        assert_eq!(
            c["ClientSecret"]["Fn::Sub"],
            "{{resolve:secretsmanager:${OidcClientSecretId}:SecretString}}"
        );
        assert_eq!(c["OnUnauthenticatedRequest"], "authenticate");
        assert_eq!(c["SessionCookieName"], "AWSELBAuthSessionCookie");
        let mut second = forward(d);
        second["Order"] = json!(2);
        assert_eq!(actions[1], second);
    }
    // The template holds the secret's name, never a value.
    assert_eq!(
        t["Parameters"]["OidcClientSecretId"]["Default"],
        "code-server-multi-dev-sso/oidc-client-secret"
    );
    // The ALB may reach the IdP's token and user info endpoints.
    let egress = resolve(
        &t["Resources"]["AlbSecurityGroup"]["Properties"]["SecurityGroupEgress"],
        &on,
    )
    .unwrap();
    assert!(
        egress
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["FromPort"] == 443
                && r["ToPort"] == 443
                && r["CidrIp"] == "0.0.0.0/0"
                && r["Description"].as_str().is_some_and(|d| !d.is_empty())),
        "{egress}"
    );
}

#[test]
fn cognito_uses_the_pool_the_stack_creates_or_the_given_one() {
    let t = template(SsoSettings {
        provider: SsoProvider::Cognito,
        ..SsoSettings::default()
    });
    let created = rule_actions(&t, 2, &conditions("cognito", true));
    let c = &created[0]["AuthenticateCognitoConfig"];
    assert_eq!(created[0]["Type"], "authenticate-cognito");
    assert_eq!(created[0]["Order"], 1);
    assert_eq!(created[1]["Order"], 2);
    assert_eq!(
        c["UserPoolArn"]["Fn::GetAtt"],
        json!(["SsoUserPool", "Arn"])
    );
    assert_eq!(c["UserPoolClientId"]["Ref"], "SsoUserPoolClient");
    assert_eq!(c["UserPoolDomain"]["Ref"], "SsoUserPoolDomain");
    assert_eq!(c["OnUnauthenticatedRequest"], "authenticate");

    let given = rule_actions(&t, 2, &conditions("cognito", false));
    let c = &given[0]["AuthenticateCognitoConfig"];
    assert_eq!(c["UserPoolArn"]["Ref"], "CognitoUserPoolArn");
    assert_eq!(c["UserPoolClientId"]["Ref"], "CognitoUserPoolClientId");
    assert_eq!(c["UserPoolDomain"]["Ref"], "CognitoUserPoolDomain");

    let res = &t["Resources"];
    let pool = &res["SsoUserPool"]["Properties"];
    // No self sign-up: anyone could otherwise get past the ALB.
    assert_eq!(
        pool["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"],
        true
    );
    let client = &res["SsoUserPoolClient"]["Properties"];
    assert_eq!(client["GenerateSecret"], true);
    assert_eq!(client["AllowedOAuthFlows"], json!(["code"]));
    let callbacks: Vec<&str> = client["CallbackURLs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["Fn::Sub"].as_str().unwrap())
        .collect();
    assert_eq!(
        callbacks,
        (1..=3)
            .map(|d| format!("https://dev{d}.${{DomainName}}/oauth2/idpresponse"))
            .collect::<Vec<_>>()
    );
    let domain = &res["SsoUserPoolDomain"]["Properties"]["Domain"]["Fn::If"];
    assert_eq!(domain[1]["Ref"], "CognitoUserPoolDomain");
    assert_eq!(domain[2]["Fn::Sub"], "${ProjectName}-${AWS::AccountId}");
    for r in ["SsoUserPool", "SsoUserPoolClient", "SsoUserPoolDomain"] {
        assert_eq!(res[r]["DeletionPolicy"], "Delete", "{r}");
    }
}

#[test]
fn rules_refuse_a_provider_without_its_settings() {
    let t = template(SsoSettings::default());
    let oidc_rule = &t["Rules"]["SsoOidcSettings"];
    assert_eq!(
        oidc_rule["RuleCondition"],
        json!({ "Fn::Equals": [{ "Ref": "SsoProvider" }, "oidc"] })
    );
    let asserted: Vec<&str> = oidc_rule["Assertions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            a["Assert"]["Fn::Not"][0]["Fn::Equals"][0]["Ref"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(
        asserted,
        [
            "OidcIssuer",
            "OidcAuthorizationEndpoint",
            "OidcTokenEndpoint",
            "OidcUserInfoEndpoint",
            "OidcClientId",
            "OidcClientSecretId"
        ]
    );
    let cognito = &t["Rules"]["SsoExistingCognitoPoolSettings"]["Assertions"];
    assert_eq!(cognito.as_array().unwrap().len(), 2);
}

#[test]
fn the_command_line_refuses_a_provider_without_its_settings() {
    let check = |sso: SsoSettings| {
        Settings {
            sso,
            ..Settings::default()
        }
        .validate()
        .map_err(|e| e.to_string())
    };
    assert_eq!(check(oidc()), Ok(()));
    let err = check(SsoSettings {
        oidc_client_secret_id: String::new(),
        ..oidc()
    })
    .unwrap_err();
    assert!(
        err.starts_with("--oidc-client-secret-id: is required with --sso oidc"),
        "{err}"
    );
    let err = check(SsoSettings {
        oidc_issuer: "http://idp.example.com".into(),
        ..oidc()
    })
    .unwrap_err();
    assert!(
        err.starts_with("--oidc-issuer: must be an https:// URL"),
        "{err}"
    );
    let given = SsoSettings {
        provider: SsoProvider::Cognito,
        cognito_user_pool_arn:
            "arn:aws:cognito-idp:ap-southeast-7:123456789012:userpool/ap-southeast-7_AbC123".into(),
        ..SsoSettings::default()
    };
    let err = check(given.clone()).unwrap_err();
    assert!(
        err.starts_with("--cognito-user-pool-client-id: is required"),
        "{err}"
    );
    assert_eq!(
        check(SsoSettings {
            cognito_user_pool_client_id: "1abc".into(),
            cognito_user_pool_domain: "my-team".into(),
            ..given
        }),
        Ok(())
    );
    assert_eq!(
        check(SsoSettings {
            provider: SsoProvider::Cognito,
            ..SsoSettings::default()
        }),
        Ok(())
    );
    let err = check(SsoSettings {
        session_seconds: 604_801,
        ..SsoSettings::default()
    })
    .unwrap_err();
    assert!(err.starts_with("--sso-session-seconds"), "{err}");
}
