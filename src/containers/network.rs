//! The dedicated bridge network (no inter-container traffic) and the DOCKER-USER
//! rule that keeps containers away from the instance metadata service.
//!
//! The infra sets the IMDS hop limit to 1, which already stops bridged containers
//! from getting a token; the firewall rule is defence in depth. dockerd keeps
//! DOCKER-USER rules across its restarts, and every convergence pass re-checks the
//! rule (`iptables -C`, cheap), so a flushed table is repaired within one pass.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};

use super::ContainersError;
use super::spec::LABEL_MANAGED;
use crate::config::{Config, ContainersConfig};

pub const METADATA_ADDR: &str = "169.254.169.254/32";

/// How long iptables may wait for the xtables lock (`-w`): another tool holding
/// it (dockerd, a firewall manager) must not stall a convergence pass for ever.
const XTABLES_WAIT_SECS: &str = "5";
/// How long one iptables call may take in all before it is killed.
const IPTABLES_TIMEOUT: Duration = Duration::from_secs(15);

/// Installs the firewall rules the config asks for; returns what could not be
/// installed (status warns; containers still run, the IMDS hop limit still
/// protects).
pub async fn ensure_firewall(containers: &ContainersConfig) -> Vec<String> {
    let subnet = &containers.subnet;
    let mut problems = Vec::new();
    if containers.block_metadata
        && let Err(e) = ensure_metadata_block(subnet).await
    {
        tracing::error!(error = %e, "cannot install the metadata firewall rule");
        problems.push(e.to_string());
    }
    if containers.isolate_host
        && let Err(e) = ensure_host_block(subnet).await
    {
        tracing::error!(error = %e, "cannot install the host isolation rule");
        problems.push(e.to_string());
    }
    problems
}

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
pub async fn ensure_metadata_block(subnet: &str) -> Result<bool, ContainersError> {
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
    .await
}

/// Makes sure containers cannot open connections to the host itself (INPUT):
/// otherwise a developer reaches another developer's code-server through its
/// published port on the bridge gateway, around the disabled inter-container
/// traffic. Replies to connections the host opened (health checks, the ALB
/// through the published port) are ESTABLISHED and still pass; traffic to the
/// internet is forwarded, not INPUT, and is not affected.
pub async fn ensure_host_block(subnet: &str) -> Result<bool, ContainersError> {
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
    .await
}

/// Inserts `rule` (chain first) at the top of its chain unless present.
async fn ensure_rule(rule: &[&str], added: &str) -> Result<bool, ContainersError> {
    let check = iptables(&[&["-w", XTABLES_WAIT_SECS, "-C"][..], rule].concat()).await?;
    if check.status.success() {
        return Ok(false);
    }
    let insert = iptables(
        &[
            &["-w", XTABLES_WAIT_SECS, "-I"][..],
            &rule[..1],
            &["1"][..],
            &rule[1..],
        ]
        .concat(),
    )
    .await?;
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

/// Runs iptables as a child process the runtime waits on (never a blocking
/// call on an async worker), killed if it outlives [`IPTABLES_TIMEOUT`].
async fn iptables(args: &[&str]) -> Result<std::process::Output, ContainersError> {
    let child = tokio::process::Command::new("iptables")
        .args(args)
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(IPTABLES_TIMEOUT, child).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(ContainersError::Firewall(format!(
            "cannot run iptables: {e} (install iptables)"
        ))),
        Err(_) => Err(ContainersError::Firewall(format!(
            "iptables {} did not finish in {IPTABLES_TIMEOUT:?}; retrying next pass",
            args.join(" ")
        ))),
    }
}
