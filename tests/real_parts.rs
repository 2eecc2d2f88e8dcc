//! Proves each real part answers from Rust: the Docker engine, Secrets Manager in
//! moto, and a loop device with a real filesystem.

mod common;

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use common::*;

#[tokio::test]
async fn docker_ping_and_container_round_trip() {
    let docker = docker().await;
    docker.ping().await.expect("docker ping");
    let version = docker.version().await.expect("docker version");
    assert!(version.api_version.is_some());

    let name = unique("csagent-t-roundtrip");
    let body = ContainerCreateBody {
        image: Some(TEST_IMAGE.to_string()),
        labels: Some([("csagent.test".to_string(), "true".to_string())].into()),
        ..Default::default()
    };
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(&name).build()),
            body,
        )
        .await
        .expect("create container from the local test image");
    let inspect = docker
        .inspect_container(&name, None)
        .await
        .expect("inspect");
    assert_eq!(inspect.id.as_deref(), Some(created.id.as_str()));
    docker
        .remove_container(
            &name,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await
        .expect("remove");
    assert!(docker.inspect_container(&name, None).await.is_err());
}

#[tokio::test]
async fn secrets_manager_round_trip_in_moto() {
    let sm = aws_sdk_secretsmanager::Client::new(&aws().await);
    let name = format!("{}/dev1/password", unique("csagent-t"));
    sm.create_secret()
        .name(&name)
        .secret_string("first-value")
        .send()
        .await
        .expect("create secret in moto");
    let got = sm
        .get_secret_value()
        .secret_id(&name)
        .send()
        .await
        .expect("get secret");
    assert_eq!(got.secret_string(), Some("first-value"));
    sm.delete_secret()
        .secret_id(&name)
        .force_delete_without_recovery(true)
        .send()
        .await
        .expect("delete");
}

#[test]
fn loop_device_formatted_and_mounted() {
    let disk = LoopDevice::new("64M");
    run("mkfs.ext4", &["-q", "-L", "t", disk.path()]);
    let blkid = run("blkid", &["-p", "-o", "value", "-s", "TYPE", disk.path()]);
    assert_eq!(blkid.trim(), "ext4");
    let mnt = tempfile::tempdir().expect("tempdir");
    run("mount", &[disk.path(), path_str(mnt.path())]);
    std::fs::write(mnt.path().join("hello"), "world").expect("write on the mount");
    run("umount", &[path_str(mnt.path())]);
    run("mount", &[disk.path(), path_str(mnt.path())]);
    assert_eq!(
        std::fs::read_to_string(mnt.path().join("hello")).expect("read back"),
        "world"
    );
    run("umount", &[path_str(mnt.path())]);
}
