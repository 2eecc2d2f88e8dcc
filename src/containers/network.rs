//! The dedicated bridge network (no inter-container traffic) and the firewall
//! rules that keep containers away from the instance metadata service and the
//! host: iptables always, ip6tables too when the network has IPv6
//! (`containers.subnet_v6`). Without it Docker disables IPv6 inside the
//! containers, so there is no IPv6 path to block.
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
use crate::config::parse_cidr_v6;
use crate::config::{Config, ContainersConfig};

pub const METADATA_ADDR: &str = "169.254.169.254/32";
/// The metadata service's IPv6 address on Nitro instances.
pub const METADATA_ADDR_V6: &str = "fd00:ec2::254/128";

/// How long iptables may wait for the xtables lock (`-w`): another tool holding
/// it (dockerd, a firewall manager) must not stall a convergence pass for ever.
const XTABLES_WAIT_SECS: &str = "5";
/// How long one iptables call may take in all before it is killed.
const IPTABLES_TIMEOUT: Duration = Duration::from_secs(15);

/// Installs the firewall rules the config asks for, in iptables and, when the
/// network has IPv6, in ip6tables too; returns what could not be installed
/// (status warns; containers still run, the IMDS hop limit still protects).
pub async fn ensure_firewall(containers: &ContainersConfig) -> Vec<String> {
    let mut families = vec![(Family::V4, containers.subnet.as_str())];
    if let Some(v6) = &containers.subnet_v6 {
        families.push((Family::V6, v6.as_str()));
    }
    let mut problems = Vec::new();
    for (family, subnet) in families {
        if containers.block_metadata
            && let Err(e) = ensure_metadata_block(family, subnet).await
        {
            tracing::error!(error = %e, "cannot install the metadata firewall rule");
            problems.push(e.to_string());
        }
        if containers.isolate_host
            && let Err(e) = ensure_host_block(family, subnet).await
        {
            tracing::error!(error = %e, "cannot install the host isolation rule");
            problems.push(e.to_string());
        }
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
            let subnets: Vec<String> = net
                .ipam
                .and_then(|i| i.config)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|c| c.subnet)
                .collect();
            let v4 = subnets.iter().find(|s| !s.contains(':'));
            let v6 = subnets.iter().find(|s| s.contains(':'));
            let c = &config.containers;
            let mismatch = |key: &str, has: Option<&String>, want: Option<&String>| {
                ContainersError::Network {
                    network: name.clone(),
                    message: format!(
                        "has {key} {} but containers.{key} is {}; remove the network (its containers are recreated) or restore the setting",
                        has.map_or("none", String::as_str),
                        want.map_or("not set", String::as_str),
                    ),
                }
            };
            if v4 != Some(&c.subnet) {
                return Err(mismatch("subnet", v4, Some(&c.subnet)));
            }
            // Compared as networks: Docker may print an address differently.
            let same_v6 = match (v6, &c.subnet_v6) {
                (None, None) => true,
                (Some(a), Some(b)) => parse_cidr_v6(a) == parse_cidr_v6(b),
                _ => false,
            };
            if !same_v6 {
                return Err(mismatch("subnet_v6", v6, c.subnet_v6.as_ref()));
            }
            Ok(())
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {
            let request = NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".into()),
                enable_ipv6: Some(config.containers.subnet_v6.is_some()),
                ipam: Some(Ipam {
                    config: Some(
                        std::iter::once(&config.containers.subnet)
                            .chain(&config.containers.subnet_v6)
                            .map(|subnet| IpamConfig {
                                subnet: Some(subnet.clone()),
                                ..Default::default()
                            })
                            .collect(),
                    ),
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

/// Which firewall a rule goes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn tool(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    /// Forwarded container traffic is filtered in DOCKER-USER, which dockerd
    /// keeps first in FORWARD. dockerd makes that chain in ip6tables only when
    /// its own ip6tables support is on, so IPv6 uses FORWARD itself (rule first).
    fn forward_chain(self) -> &'static str {
        match self {
            Family::V4 => "DOCKER-USER",
            Family::V6 => "FORWARD",
        }
    }

    fn metadata_addr(self) -> &'static str {
        match self {
            Family::V4 => METADATA_ADDR,
            Family::V6 => METADATA_ADDR_V6,
        }
    }
}

/// Makes sure forwarded traffic from our subnet to the metadata service is dropped.
pub async fn ensure_metadata_block(family: Family, subnet: &str) -> Result<bool, ContainersError> {
    ensure_rule(
        family,
        &[
            family.forward_chain(),
            "-s",
            subnet,
            "-d",
            family.metadata_addr(),
            "-m",
            "comment",
            "--comment",
            "csagent: containers must not reach IMDS",
            "-j",
            "DROP",
        ],
        &format!(
            "added {} {} rule dropping container traffic to {}",
            family.tool(),
            family.forward_chain(),
            family.metadata_addr()
        ),
    )
    .await
}

/// Makes sure containers cannot open connections to the host itself (INPUT):
/// otherwise a developer reaches another developer's code-server through its
/// published port on the bridge gateway, around the disabled inter-container
/// traffic. Replies to connections the host opened (health checks, the ALB
/// through the published port) are ESTABLISHED and still pass; traffic to the
/// internet is forwarded, not INPUT, and is not affected.
pub async fn ensure_host_block(family: Family, subnet: &str) -> Result<bool, ContainersError> {
    ensure_rule(
        family,
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
        &format!(
            "added {} INPUT rule dropping new connections from containers to the host",
            family.tool()
        ),
    )
    .await
}

/// Inserts `rule` (chain first) at the top of its chain unless present.
async fn ensure_rule(family: Family, rule: &[&str], added: &str) -> Result<bool, ContainersError> {
    let tool = family.tool();
    let check = iptables(tool, &[&["-w", XTABLES_WAIT_SECS, "-C"][..], rule].concat()).await?;
    if check.status.success() {
        return Ok(false);
    }
    let insert = iptables(
        tool,
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
            "{tool} -I {} failed: {}",
            rule[0],
            String::from_utf8_lossy(&insert.stderr).trim()
        )));
    }
    tracing::info!(subnet = rule[2], "{added}");
    Ok(true)
}

/// Runs iptables or ip6tables as a child process the runtime waits on (never a
/// blocking call on an async worker), killed if it outlives [`IPTABLES_TIMEOUT`].
async fn iptables(tool: &str, args: &[&str]) -> Result<std::process::Output, ContainersError> {
    let child = tokio::process::Command::new(tool)
        .args(args)
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(IPTABLES_TIMEOUT, child).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(ContainersError::Firewall(format!(
            "cannot run {tool}: {e} (install iptables)"
        ))),
        Err(_) => Err(ContainersError::Firewall(format!(
            "{tool} {} did not finish in {IPTABLES_TIMEOUT:?}; retrying next pass",
            args.join(" ")
        ))),
    }
}
