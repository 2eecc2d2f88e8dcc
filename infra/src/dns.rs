//! TLS and DNS: a wildcard ACM certificate for `*.<domain>` validated by DNS in the hosted zone
//! (CloudFormation writes the validation record itself through `DomainValidationOptions`) —
//! unless `ExistingCertificateArn` names one already issued — and one alias A record per
//! developer pointing at the ALB.
//!
//! No cycle (the seed's separate DNS and load-balancer stacks had one): certificate → HTTPS
//! listener → listener rules; the records depend on the ALB only; nothing depends on a record.

use crate::cfn::{
    Resources, get_att, if_, name_tag, r#ref, resource, skip_checkov, sub, tags, with,
};
use crate::naming::developer_host;
use crate::settings::Developer;
use serde_json::{Value, json};

/// The certificate the HTTPS listener uses: ours, or the existing one.
pub fn listener_certificate_arn() -> Value {
    if_(
        "CreateCertificate",
        r#ref("Certificate"),
        r#ref("ExistingCertificateArn"),
    )
}

/// Adds the certificate and the developers' records.
pub fn add(res: &mut Resources) {
    let certificate = resource(
        "AWS::CertificateManager::Certificate",
        json!({
            "DomainName": sub("*.${DomainName}"),
            "ValidationMethod": "DNS",
            "DomainValidationOptions": [{
                "DomainName": sub("*.${DomainName}"),
                "HostedZoneId": r#ref("HostedZoneId"),
            }],
            "Tags": tags(&[name_tag("wildcard")]),
        }),
    );
    let certificate = with(certificate, "Condition", json!("CreateCertificate"));
    res.add(
        "Certificate",
        skip_checkov(
            certificate,
            &[(
                "CKV2_AWS_71",
                "A wildcard is the design: developers are added without a new certificate, and ACM's default quota of 10 names per certificate would not cover 64 developers. The key never leaves ACM and the ALB; the listener only routes the dev<N> hosts and answers 404 to any other name.",
            )],
        ),
    );
}

/// Adds each developer's alias record `devN.<domain>` → the ALB.
pub fn add_records(res: &mut Resources, developers: &[Developer]) {
    for dev in developers {
        res.add(
            format!("{}DnsRecord", dev.id()),
            resource(
                "AWS::Route53::RecordSet",
                json!({
                    "HostedZoneId": r#ref("HostedZoneId"),
                    "Name": developer_host(dev),
                    "Type": "A",
                    "AliasTarget": {
                        "DNSName": get_att("LoadBalancer", "DNSName"),
                        "HostedZoneId": get_att("LoadBalancer", "CanonicalHostedZoneID"),
                        "EvaluateTargetHealth": false,
                    },
                }),
            ),
        );
    }
}
