//! The ALB: one target group per developer (health `/healthz`, 200), an HTTPS listener with the
//! certificate and a fixed 404 default, one host-header rule per developer (priority N), and an
//! HTTP listener that only redirects to HTTPS. Idle timeout 3600 s so code-server's websockets
//! stay open; invalid header fields are dropped.

use crate::cfn::{Resources, if_, name_tag, no_value, r#ref, resource, skip_checkov, tags, with};
use crate::naming::developer_host;
use crate::settings::{Developer, Settings};
use serde_json::{Value, json};

/// ALB idle timeout in seconds (code-server keeps a websocket open per window).
pub const IDLE_TIMEOUT_SECONDS: u32 = 3600;

/// TLS policy of the HTTPS listener (TLS 1.3 and 1.2 only).
pub const SSL_POLICY: &str = "ELBSecurityPolicy-TLS13-1-2-2021-06";

/// Health check path of every target group (code-server answers it without auth).
pub const HEALTH_CHECK_PATH: &str = "/healthz";

fn attribute(key: &str, value: impl Into<Value>) -> Value {
    json!({ "Key": key, "Value": value.into() })
}

/// Adds the ALB and its listeners.
pub fn add(res: &mut Resources, _s: &Settings) {
    let alb = resource(
        "AWS::ElasticLoadBalancingV2::LoadBalancer",
        json!({
            "Type": "application",
            "Scheme": "internet-facing",
            "IpAddressType": "ipv4",
            "Subnets": [r#ref("PublicSubnetA"), r#ref("PublicSubnetB")],
            "SecurityGroups": [r#ref("AlbSecurityGroup")],
            "LoadBalancerAttributes": [
                attribute("idle_timeout.timeout_seconds", IDLE_TIMEOUT_SECONDS.to_string()),
                attribute("routing.http.drop_invalid_header_fields.enabled", "true"),
                attribute("routing.http.desync_mitigation_mode", "defensive"),
                attribute("deletion_protection.enabled", "false"),
                if_("HasAccessLogBucket", attribute("access_logs.s3.enabled", "true"), no_value()),
                if_("HasAccessLogBucket", json!({ "Key": "access_logs.s3.bucket", "Value": r#ref("AccessLogBucket") }), no_value()),
                if_("HasAccessLogBucket", json!({ "Key": "access_logs.s3.prefix", "Value": r#ref("ProjectName") }), no_value()),
            ],
            "Tags": tags(&[name_tag("alb")]),
        }),
    );
    // An internet-facing ALB needs the gateway attached.
    let alb = with(alb, "DependsOn", json!("VpcGatewayAttachment"));
    res.add(
        "LoadBalancer",
        skip_checkov(
            alb,
            &[(
                "CKV_AWS_91",
                "Access logs are optional: set the AccessLogBucket parameter to a bucket whose policy allows ELB log delivery (the template cannot know or own that bucket).",
            )],
        ),
    );

    res.add(
        "HttpListener",
        resource(
            "AWS::ElasticLoadBalancingV2::Listener",
            json!({
                "LoadBalancerArn": r#ref("LoadBalancer"),
                "Port": 80,
                "Protocol": "HTTP",
                "DefaultActions": [{
                    "Type": "redirect",
                    "RedirectConfig": {
                        "Protocol": "HTTPS",
                        "Port": "443",
                        "Host": "#{host}",
                        "Path": "/#{path}",
                        "Query": "#{query}",
                        "StatusCode": "HTTP_301",
                    },
                }],
                "Tags": tags(&[name_tag("http")]),
            }),
        ),
    );
    res.add(
        "HttpsListener",
        resource(
            "AWS::ElasticLoadBalancingV2::Listener",
            json!({
                "LoadBalancerArn": r#ref("LoadBalancer"),
                "Port": 443,
                "Protocol": "HTTPS",
                "SslPolicy": SSL_POLICY,
                "Certificates": [{ "CertificateArn": crate::dns::listener_certificate_arn() }],
                "DefaultActions": [{
                    "Type": "fixed-response",
                    "FixedResponseConfig": {
                        "StatusCode": "404",
                        "ContentType": "text/plain",
                        "MessageBody": "Not Found",
                    },
                }],
                "Tags": tags(&[name_tag("https")]),
            }),
        ),
    );
}

/// Adds per developer a target group (the host `instance` on the developer's port) and a
/// listener rule (priority N, `devN.<domain>`).
pub fn add_developers(res: &mut Resources, developers: &[Developer], instance: &str) {
    for dev in developers {
        let tg = format!("{}TargetGroup", dev.id());
        res.add(
            tg.clone(),
            resource(
                "AWS::ElasticLoadBalancingV2::TargetGroup",
                json!({
                    "VpcId": r#ref("Vpc"),
                    "TargetType": "instance",
                    "Protocol": "HTTP",
                    "ProtocolVersion": "HTTP1",
                    "Port": dev.port,
                    "Targets": [{ "Id": r#ref(instance), "Port": dev.port }],
                    "HealthCheckEnabled": true,
                    "HealthCheckProtocol": "HTTP",
                    "HealthCheckPath": HEALTH_CHECK_PATH,
                    "HealthCheckPort": "traffic-port",
                    "Matcher": { "HttpCode": "200" },
                    "HealthCheckIntervalSeconds": 30,
                    "HealthCheckTimeoutSeconds": 5,
                    "HealthyThresholdCount": 2,
                    "UnhealthyThresholdCount": 3,
                    "TargetGroupAttributes": [
                        attribute("deregistration_delay.timeout_seconds", "30"),
                    ],
                    "Tags": tags(&[
                        name_tag(&dev.name),
                        ("Developer", Value::from(dev.name.clone())),
                    ]),
                }),
            ),
        );
        res.add(
            format!("{}ListenerRule", dev.id()),
            resource(
                "AWS::ElasticLoadBalancingV2::ListenerRule",
                json!({
                    "ListenerArn": r#ref("HttpsListener"),
                    "Priority": dev.number,
                    "Conditions": [{
                        "Field": "host-header",
                        "HostHeaderConfig": { "Values": [developer_host(dev)] },
                    }],
                    // With SSO: authenticate (Order 1), then forward (Order 2).
                    "Actions": crate::sso::rule_actions(
                        json!({ "Type": "forward", "TargetGroupArn": r#ref(&tg) }),
                    ),
                }),
            ),
        );
    }
}
