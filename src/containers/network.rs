//! The dedicated bridge network (no inter-container traffic) and the DOCKER-USER
//! rule that keeps containers away from the instance metadata service.
//!
//! The infra sets the IMDS hop limit to 1, which already stops bridged containers
//! from getting a token; the firewall rule is defence in depth. dockerd keeps
//! DOCKER-USER rules across its restarts, and every convergence pass re-checks the
//! rule (`iptables -C`, cheap), so a flushed table is repaired within one pass.

use std::collections::HashMap;
use std::process::Command;

use bollard::Docker;
use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};

use super::ContainersError;
use super::spec::LABEL_MANAGED;
use crate::config::Config;

pub const METADATA_ADDR: &str = "169.254.169.254/32";

/// Creates the network when missing; refuses one with our name that we did not make.
pub async fn ensure_network(docker: &Docker, config: &Config) -> Result<(), ContainersError> {
    let name = &config.containers.network;
    match docker.inspect_network(name, None).await {
        Ok(net) => {
            let ours = net
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_MANAGED))
                .is_some_and(|v| v == "true");
            if !ours {
                return Err(ContainersError::Network {
                    network: name.clone(),
                    message: "a network with this name exists but was not created by csagent; \
                              remove it or set containers.network to another name"
                        .into(),
                });
            }
            let subnet = net
                .ipam
                .and_then(|i| i.config)
                .and_then(|c| c.into_iter().find_map(|c| c.subnet));
            if subnet.as_deref() != Some(config.containers.subnet.as_str()) {
                return Err(ContainersError::Network {
                    network: name.clone(),
                    message: format!(
                        "has subnet {} but containers.subnet is {}; remove the network (its containers are recreated) or restore the setting",
                        subnet.unwrap_or_default(),
                        config.containers.subnet
                    ),
                });
            }
            Ok(())
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {
            let request = NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".into()),
                ipam: Some(Ipam {
                    config: Some(vec![IpamConfig {
                        subnet: Some(config.containers.subnet.clone()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                options: Some(HashMap::from([(
                    "com.docker.network.bridge.enable_icc".to_string(),
                    "false".to_string(),
                )])),
                labels: Some(HashMap::from([(
                    LABEL_MANAGED.to_string(),
                    "true".to_string(),
                )])),
                ..Default::default()
            };
            docker
                .create_network(request)
                .await
                .map_err(|e| ContainersError::Docker {
                    what: format!("create network {name}"),
                    source: e,
                })?;
            tracing::info!(network = %name, subnet = %config.containers.subnet, "created container network");
            Ok(())
        }
        Err(e) => Err(ContainersError::Docker {
            what: format!("inspect network {name}"),
            source: e,
        }),
    }
}

/// Makes sure DOCKER-USER drops traffic from our subnet to the metadata service.
pub fn ensure_metadata_block(subnet: &str) -> Result<bool, ContainersError> {
    ensure_rule(
        &[
            "DOCKER-USER",
            "-s",
            subnet,
            "-d",
            METADATA_ADDR,
            "-m",
            "comment",
            "--comment",
            "csagent: containers must not reach IMDS",
            "-j",
            "DROP",
        ],
        "added DOCKER-USER rule dropping container traffic to 169.254.169.254",
    )
}

/// Makes sure containers cannot open connections to the host itself (INPUT):
/// otherwise a developer reaches another developer's code-server through its
/// published port on the bridge gateway, around the disabled inter-container
/// traffic. Replies to connections the host opened (health checks, the ALB
/// through the published port) are ESTABLISHED and still pass; traffic to the
/// internet is forwarded, not INPUT, and is not affected.
pub fn ensure_host_block(subnet: &str) -> Result<bool, ContainersError> {
    ensure_rule(
        &[
            "INPUT",
            "-s",
            subnet,
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-m",
            "comment",
            "--comment",
            "csagent: containers must not reach the host",
            "-j",
            "DROP",
        ],
        "added INPUT rule dropping new connections from containers to the host",
    )
}

/// Inserts `rule` (chain first) at the top of its chain unless present.
fn ensure_rule(rule: &[&str], added: &str) -> Result<bool, ContainersError> {
    let check = iptables(&[&["-w", "-C"][..], rule].concat())?;
    if check.status.success() {
        return Ok(false);
    }
    let insert = iptables(&[&["-w", "-I"][..], &rule[..1], &["1"][..], &rule[1..]].concat())?;
    if !insert.status.success() {
        return Err(ContainersError::Firewall(format!(
            "iptables -I {} failed: {}",
            rule[0],
            String::from_utf8_lossy(&insert.stderr).trim()
        )));
    }
    tracing::info!(subnet = rule[2], "{added}");
    Ok(true)
}

fn iptables(args: &[&str]) -> Result<std::process::Output, ContainersError> {
    Command::new("iptables").args(args).output().map_err(|e| {
        ContainersError::Firewall(format!("cannot run iptables: {e} (install iptables)"))
    })
}
