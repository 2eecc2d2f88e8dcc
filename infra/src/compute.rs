//! The host: one EC2 instance (Ubuntu 22.04 from Canonical's public SSM parameter, IMDSv2 only
//! with hop limit 1, encrypted gp3 root, detailed monitoring) and the data volume (gp3,
//! encrypted, snapshot on delete or replacement) attached as /dev/sdf.
//!
//! No cycle: the user data needs the volume id (`Ref DataVolume`), so the volume must not
//! depend on the instance; its AZ is therefore the same `Fn::Select`/`Fn::GetAZs` expression as
//! the instance's subnet, not `GetAtt Instance.AvailabilityZone`. The attachment depends on both.

use crate::agent_config::user_data_template;
use crate::cfn::{
    Resources, get_att, if_, name_tag, no_value, r#ref, resource, skip_checkov, tags, with,
};
use crate::naming::DATA_DEVICE;
use crate::network::availability_zone;
use crate::settings::{Host, Settings};
use serde_json::json;

/// Logical id of the host.
pub const INSTANCE: &str = "Instance";

/// Adds host `host`'s instance, data volume and attachment (`Instance`, `DataVolume`,
/// `DataVolumeAttachment` for host 1; `Host2Instance`, … for host 2).
pub fn add(res: &mut Resources, s: &Settings, host: &Host) {
    let volume_id = host.id("DataVolume");
    let instance = resource(
        "AWS::EC2::Instance",
        json!({
            "ImageId": r#ref("LatestAmiId"),
            "InstanceType": r#ref("InstanceType"),
            "IamInstanceProfile": r#ref(&host.id("InstanceProfile")),
            "KeyName": if_("HasKeyPair", r#ref("KeyPairName"), no_value()),
            "NetworkInterfaces": [{
                "DeviceIndex": "0",
                "SubnetId": r#ref("PublicSubnetA"),
                "GroupSet": [get_att("HostSecurityGroup", "GroupId")],
                "AssociatePublicIpAddress": true,
                "DeleteOnTermination": true,
            }],
            // IMDSv2 only, and a hop limit of 1: a process in a bridge-networked container is
            // one hop further away and cannot fetch the instance role's credentials (which
            // could read every developer's secrets).
            "MetadataOptions": {
                "HttpEndpoint": "enabled",
                "HttpTokens": "required",
                "HttpPutResponseHopLimit": 1,
                "InstanceMetadataTags": "disabled",
            },
            "BlockDeviceMappings": [{
                "DeviceName": "/dev/sda1",
                "Ebs": {
                    "VolumeSize": r#ref("RootVolumeSize"),
                    "VolumeType": "gp3",
                    "Encrypted": true,
                    "DeleteOnTermination": true,
                },
            }],
            "EbsOptimized": true,
            "Monitoring": true,
            "PropagateTagsToVolumeOnCreation": true,
            // TeamImageRepositoryUri: the stack's repository or ExistingTeamImageRepository.
            "UserData": { "Fn::Base64": { "Fn::Sub": [
                user_data_template(s, host),
                { "TeamImageRepositoryUri": crate::registry::repository_uri() },
            ] } },
            "Tags": tags(&[name_tag(&host.name("host"))]),
        }),
    );
    // The user data downloads the .deb: the default route must exist before the host boots.
    let instance = with(instance, "DependsOn", json!("PublicDefaultRoute"));
    res.add(
        host.id(INSTANCE),
        skip_checkov(
            instance,
            &[(
                "CKV_AWS_88",
                "The host needs outbound internet (packages, container images, AWS APIs) and the design has no NAT gateway to save its cost; inbound is still limited by the security group to the developer ports from the ALB (and SSH only from AdminSshCidr).",
            )],
        ),
    );

    let volume = resource(
        "AWS::EC2::Volume",
        json!({
            "AvailabilityZone": availability_zone(0),
            "Size": r#ref("DataVolumeSize"),
            // Re-creating a deleted stack: start from its final snapshot of this host's
            // volume (the agent mounts a volume that has a filesystem; it formats only a
            // blank one). Each host has its own parameter: a snapshot holds one host's homes.
            "SnapshotId": if_(
                &crate::parameters::snapshot_condition(host),
                r#ref(&crate::parameters::snapshot_parameter(host)),
                no_value(),
            ),
            "VolumeType": "gp3",
            "Encrypted": true,
            "Tags": tags(&[name_tag(&host.name("data"))]),
        }),
    );
    let volume = with(volume, "DeletionPolicy", json!("Snapshot"));
    let volume = with(volume, "UpdateReplacePolicy", json!("Snapshot"));
    res.add(volume_id.clone(), volume);

    res.add(
        host.id("DataVolumeAttachment"),
        resource(
            "AWS::EC2::VolumeAttachment",
            json!({
                "InstanceId": r#ref(&host.id(INSTANCE)),
                "VolumeId": r#ref(&volume_id),
                "Device": DATA_DEVICE,
            }),
        ),
    );
}
