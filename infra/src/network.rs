//! VPC 10.0.0.0/16 with two public subnets in two AZs, an internet gateway and its route; no
//! NAT. Security groups: the ALB takes 80/443 from anywhere and may only reach the developer
//! ports inside the VPC; the host takes exactly the developer ports from the ALB group, and SSH
//! only from the admin CIDR when one is given.

use crate::cfn::{Resources, get_att, name_tag, r#ref, resource, skip_checkov, sub, tags, with};
use crate::settings::Settings;
use serde_json::{Value, json};

/// VPC CIDR.
pub const VPC_CIDR: &str = "10.0.0.0/16";
/// Public subnet CIDRs, one per AZ.
pub const SUBNET_CIDRS: [&str; 2] = ["10.0.1.0/24", "10.0.2.0/24"];

/// The n-th (0-based) AZ of the region, the same expression everywhere it is needed (the data
/// volume must sit in the instance's AZ, and moto does not model `GetAtt Subnet.AvailabilityZone`).
pub fn availability_zone(index: u32) -> Value {
    json!({ "Fn::Select": [index, { "Fn::GetAZs": "" }] })
}

/// Adds the network resources.
pub fn add(res: &mut Resources, s: &Settings) {
    res.add(
        "Vpc",
        resource(
            "AWS::EC2::VPC",
            json!({
                "CidrBlock": VPC_CIDR,
                "EnableDnsHostnames": true,
                "EnableDnsSupport": true,
                "Tags": tags(&[name_tag("vpc")]),
            }),
        ),
    );
    res.add(
        "InternetGateway",
        resource(
            "AWS::EC2::InternetGateway",
            json!({ "Tags": tags(&[name_tag("igw")]) }),
        ),
    );
    res.add(
        "VpcGatewayAttachment",
        resource(
            "AWS::EC2::VPCGatewayAttachment",
            json!({ "VpcId": r#ref("Vpc"), "InternetGatewayId": r#ref("InternetGateway") }),
        ),
    );
    res.add(
        "PublicRouteTable",
        resource(
            "AWS::EC2::RouteTable",
            json!({ "VpcId": r#ref("Vpc"), "Tags": tags(&[name_tag("public")]) }),
        ),
    );
    res.add(
        "PublicDefaultRoute",
        with(
            resource(
                "AWS::EC2::Route",
                json!({
                    "RouteTableId": r#ref("PublicRouteTable"),
                    "DestinationCidrBlock": "0.0.0.0/0",
                    "GatewayId": r#ref("InternetGateway"),
                }),
            ),
            "DependsOn",
            json!("VpcGatewayAttachment"),
        ),
    );
    for (i, (letter, cidr)) in ["A", "B"].iter().zip(SUBNET_CIDRS).enumerate() {
        let id = format!("PublicSubnet{letter}");
        // Subnets do not hand out public IPs; the host asks for one on its own interface.
        res.add(
            id.clone(),
            resource(
                "AWS::EC2::Subnet",
                json!({
                    "VpcId": r#ref("Vpc"),
                    "CidrBlock": cidr,
                    "AvailabilityZone": availability_zone(i as u32),
                    "MapPublicIpOnLaunch": false,
                    "Tags": tags(&[name_tag(&format!("public-{}", letter.to_lowercase()))]),
                }),
            ),
        );
        res.add(
            format!("{id}RouteTableAssociation"),
            resource(
                "AWS::EC2::SubnetRouteTableAssociation",
                json!({ "SubnetId": r#ref(&id), "RouteTableId": r#ref("PublicRouteTable") }),
            ),
        );
    }

    let first = s.base_port;
    let last = s.last_port();
    let ports = if first == last {
        format!("port {first}")
    } else {
        format!("ports {first}-{last}")
    };

    // The ALB's egress is limited to the developer ports inside the VPC (no reference to the
    // host group, which references this one: that would be a cycle).
    let alb_sg = resource(
        "AWS::EC2::SecurityGroup",
        json!({
            "GroupDescription": "ALB: HTTPS and HTTP (redirect) from anywhere",
            "VpcId": r#ref("Vpc"),
            "SecurityGroupIngress": [
                { "IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIp": "0.0.0.0/0",
                  "Description": "HTTPS from anywhere" },
                { "IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "CidrIp": "0.0.0.0/0",
                  "Description": "HTTP from anywhere, only redirected to HTTPS" },
            ],
            "SecurityGroupEgress": crate::sso::alb_egress(json!(
                { "IpProtocol": "tcp", "FromPort": first, "ToPort": last, "CidrIp": VPC_CIDR,
                  "Description": format!("To the developer containers ({ports}) inside the VPC") }
            )),
            "Tags": tags(&[name_tag("alb")]),
        }),
    );
    res.add(
        "AlbSecurityGroup",
        skip_checkov(
            alb_sg,
            &[(
                "CKV_AWS_260",
                "Port 80 is open only for the HTTP listener, whose single action is a 301 redirect to HTTPS; no content is served over HTTP.",
            )],
        ),
    );
    res.add(
        "HostSecurityGroup",
        resource(
            "AWS::EC2::SecurityGroup",
            json!({
                "GroupDescription": format!("code-server host: developer {ports} from the ALB only"),
                "VpcId": r#ref("Vpc"),
                "SecurityGroupIngress": [
                    { "IpProtocol": "tcp", "FromPort": first, "ToPort": last,
                      "SourceSecurityGroupId": get_att("AlbSecurityGroup", "GroupId"),
                      "Description": format!("Developer {ports} from the ALB") },
                ],
                "SecurityGroupEgress": [
                    { "IpProtocol": "-1", "CidrIp": "0.0.0.0/0",
                      "Description": "Outbound: package mirrors, container images and AWS APIs (no NAT, no VPC endpoints)" },
                ],
                "Tags": tags(&[name_tag("host")]),
            }),
        ),
    );
    res.add(
        "HostSshIngress",
        with(
            resource(
                "AWS::EC2::SecurityGroupIngress",
                json!({
                    "GroupId": get_att("HostSecurityGroup", "GroupId"),
                    "IpProtocol": "tcp",
                    "FromPort": 22,
                    "ToPort": 22,
                    "CidrIp": r#ref("AdminSshCidr"),
                    "Description": sub("SSH from the admin CIDR ${AdminSshCidr}"),
                }),
            ),
            "Condition",
            json!("HasAdminSshCidr"),
        ),
    );
}
