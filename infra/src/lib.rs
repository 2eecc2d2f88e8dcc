//! `infra`: emits the CloudFormation template for the whole csagent environment — network,
//! IAM, secrets, the host and its data volume, the ALB, TLS and DNS, monitoring and backup —
//! as one stack. It replaces the seed plan's six CDK stacks (and fixes their flaws: no
//! plaintext passwords, no certificate/listener/record cycle, IMDSv2 with hop limit 1, least
//! privilege, alarms on the agent's own metrics).
//!
//! The developer count and base port shape the resources (one target group, listener rule, DNS
//! record, log group, alarm and two secrets per developer), so they are command-line options;
//! everything else is a template Parameter whose default the command line may set.
//!
//! Hosts: the capacity model (`capacity`) decides how many developers one host holds; developer
//! k runs on host ceil(k / per host). The parent template holds everything shared (network,
//! ALB, topic, dashboard, backup plan, schedules), every host's instance, volume, role,
//! developer-set parameter, backup selection, alarms and its developers' log groups, and host
//! 1's developers (secrets, target groups, rules, records, alarms) with the logical ids a
//! single-host stack always had. Host N ≥ 2's developers are a nested stack `HostNStack`
//! (`nested`), so adding developers never moves a resource from one stack to another.

pub mod agent_config;
pub mod backup;
pub mod capacity;
pub mod cfn;
pub mod cli;
pub mod compute;
pub mod developer_set;
pub mod dns;
pub mod iam;
pub mod limits;
pub mod load_balancer;
pub mod monitoring;
pub mod naming;
pub mod nested;
pub mod network;
pub mod outputs;
pub mod parameters;
pub mod registry;
pub mod schedule;
pub mod secrets;
pub mod settings;
pub mod sso;

pub use agent_config::{
    agent_config_toml, developer_set_toml, sample_agent_config, sample_user_data,
};
pub use settings::{Host, MAX_DEVELOPERS, MAX_ENVIRONMENT_DEVELOPERS, OptionError, Settings};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::fmt;

/// Output format of the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// JSON (pretty-printed unless `--compact`).
    Json,
    /// YAML (long-form intrinsic functions, e.g. `Fn::Sub:`).
    Yaml,
}

/// A child template: host N's developers (N ≥ 2), nested in the parent as `HostNStack`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildTemplate {
    /// The host it belongs to.
    pub host: u32,
    /// File name under `--out-dir` and after `--template-url-prefix`:
    /// `host-<N>-<first 12 hex digits of the SHA-256 of its compact JSON>.json`, so a changed
    /// child is a new URL and CloudFormation updates the nested stack.
    pub file_name: String,
    /// The template.
    pub template: Value,
}

/// The parent template and its children (none for a single host).
#[derive(Debug, Clone, PartialEq)]
pub struct Templates {
    /// The template to deploy.
    pub parent: Value,
    /// One per host after the first, in host order.
    pub children: Vec<ChildTemplate>,
}

/// Host `host`'s developer resources: two secrets (and a rotation schedule), a target group
/// on the host's instance, a listener rule, a DNS record and a health alarm each.
fn add_developer_resources(res: &mut cfn::Resources, s: &Settings, host: &Host) {
    let instance = host.id(compute::INSTANCE);
    secrets::add(res, s, host);
    load_balancer::add_developers(res, &host.developers, &instance);
    dns::add_records(res, &host.developers);
    monitoring::add_developer_alarms(res, &host.developers, &instance);
}

/// First 12 hex digits of the SHA-256 of `text`.
fn short_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The parent template and the child templates for `settings` (which must have passed
/// [`Settings::validate`]). CloudFormation's limits are checked by [`limits::check`].
pub fn build(s: &Settings) -> Templates {
    let hosts = s.host_list();
    let instances: Vec<String> = hosts.iter().map(|h| h.id(compute::INSTANCE)).collect();
    let mut res = cfn::Resources::default();
    network::add(&mut res, s);
    iam::add(&mut res, s);
    registry::add(&mut res);
    load_balancer::add(&mut res, s);
    dns::add(&mut res);
    monitoring::add(&mut res, &instances);
    backup::add(&mut res);
    let instance_refs: Vec<&str> = instances.iter().map(String::as_str).collect();
    schedule::add(&mut res, &instance_refs);
    sso::add(&mut res, s);
    for host in &hosts {
        iam::add_host(&mut res, host);
        developer_set::add(&mut res, s, host);
        compute::add(&mut res, s, host);
        backup::add_selection(&mut res, host);
        monitoring::add_host(&mut res, host);
        schedule::add_idle_stop(&mut res, &host.id(compute::INSTANCE));
        monitoring::add_developer_log_groups(&mut res, &host.developers);
        if host.number == 1 {
            add_developer_resources(&mut res, s, host);
        }
    }

    let parameters = parameters::parameters(s);
    let conditions = parameters::conditions(s);
    let mappings = schedule::mappings();
    let empty = serde_json::Map::new();
    let mut children = Vec::new();
    let mut stacks = Vec::new();
    for host in hosts.iter().skip(1) {
        let mut developers = cfn::Resources::default();
        add_developer_resources(&mut developers, s, host);
        let parent = nested::Parent {
            parameters: parameters.as_object().unwrap_or(&empty),
            conditions: conditions.as_object().unwrap_or(&empty),
            mappings: mappings.as_object().unwrap_or(&empty),
            resources: res.map(),
        };
        let (first, last) = match (host.developers.first(), host.developers.last()) {
            (Some(f), Some(l)) => (f.name.clone(), l.name.clone()),
            _ => continue,
        };
        let child = nested::child(
            &format!(
                "csagent environment: developers {first}..{last} of host {} (secrets, target groups, listener rules, DNS records, health alarms); a nested stack of the csagent-infra {} template",
                host.number,
                env!("CARGO_PKG_VERSION")
            ),
            developers.into_map(),
            &parent,
        );
        let file_name = format!(
            "host-{}-{}.json",
            host.number,
            short_hash(&child.template.to_string())
        );
        let stack = cfn::resource(
            "AWS::CloudFormation::Stack",
            json!({
                "TemplateURL": format!("{}{file_name}", s.template_url_prefix),
                "Parameters": child.parameters,
            }),
        );
        let stack = if child.depends_on.is_empty() {
            stack
        } else {
            cfn::with(stack, "DependsOn", json!(child.depends_on))
        };
        stacks.push((host.id("Stack"), stack));
        children.push(ChildTemplate {
            host: host.number,
            file_name,
            template: child.template,
        });
    }
    for (id, stack) in stacks {
        res.add(id, stack);
    }

    let on = if hosts.len() == 1 {
        "one EC2 host".to_string()
    } else {
        format!("{} EC2 hosts ({} per host)", hosts.len(), s.per_host())
    };
    let parent = json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": format!(
            "csagent environment: {} code-server developer(s) on {on} behind an ALB (ports {}-{}), generated by csagent-infra {}",
            s.developers, s.base_port, s.last_port(), env!("CARGO_PKG_VERSION")
        ),
        "Metadata": {
            "AWS::CloudFormation::Interface": parameters::interface(s),
            "csagent-infra": {
                "version": env!("CARGO_PKG_VERSION"),
                "developers": s.developers,
                "basePort": s.base_port,
                "hosts": hosts.len(),
                "developersPerHost": s.per_host(),
            },
        },
        "Parameters": parameters,
        "Mappings": mappings,
        "Conditions": conditions,
        "Rules": sso::rules(),
        "Resources": res.into_value(),
        "Outputs": outputs::outputs(s),
    });
    Templates { parent, children }
}

/// The parent template for `settings` (which must have passed [`Settings::validate`]); the
/// whole environment when it has one host.
pub fn build_template(s: &Settings) -> Value {
    build(s).parent
}

/// Why rendering failed (serialisation; not expected for a template this crate built).
#[derive(Debug)]
pub struct RenderError(String);

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot render the template: {}", self.0)
    }
}

impl std::error::Error for RenderError {}

/// The template as text, ending with a newline.
pub fn render(template: &Value, format: Format, compact: bool) -> Result<String, RenderError> {
    let mut text = match (format, compact) {
        (Format::Json, false) => serde_json::to_string_pretty(template),
        (Format::Json, true) => serde_json::to_string(template),
        (Format::Yaml, _) => {
            // serde_yaml_ng: the maintained fork of serde_yaml (archived upstream); it quotes
            // strings that would otherwise read as numbers, booleans or dates, so values such
            // as "2010-09-09", "true" or "0" stay strings for CloudFormation. It follows YAML
            // 1.2, though, and CloudFormation reads YAML 1.1: see quote_yaml11_booleans.
            return serde_yaml_ng::to_string(template)
                .map(|text| quote_yaml11_booleans(&text))
                .map_err(|e| RenderError(e.to_string()));
        }
    }
    .map_err(|e| RenderError(e.to_string()))?;
    text.push('\n');
    Ok(text)
}

/// Plain scalars that YAML 1.1 (CloudFormation's and cfn-lint's parsers) reads as booleans but
/// YAML 1.2 (serde_yaml_ng) writes unquoted: e.g. a Scheduler `Mode: OFF` would reach
/// CloudFormation as `false`.
const YAML11_BOOLEANS: [&str; 16] = [
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
    "OFF",
];

/// Single-quotes every plain scalar value in [`YAML11_BOOLEANS`] in serde_yaml_ng's block-style
/// output, leaving the content of block scalars (`|`, `|-`: the user-data script) alone.
fn quote_yaml11_booleans(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // Indentation of the line that opened the block scalar we are in.
    let mut block_parent: Option<usize> = None;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let indent = body.len() - body.trim_start().len();
        if let Some(parent) = block_parent {
            if body.trim().is_empty() || indent > parent {
                out.push_str(line);
                continue;
            }
            block_parent = None;
        }
        // The value: after the list markers, after the first `: ` of a mapping entry.
        let mut rest = body.trim_start();
        while let Some(r) = rest.strip_prefix("- ") {
            rest = r;
        }
        let value = match rest.split_once(": ") {
            Some((_, v)) => v,
            None if rest.len() < body.trim_start().len() => rest,
            None => "",
        };
        if value.starts_with(['|', '>']) && value.chars().all(|c| "|>+-0123456789".contains(c)) {
            block_parent = Some(indent);
            out.push_str(line);
        } else if YAML11_BOOLEANS.contains(&value) {
            out.push_str(&body[..body.len() - value.len()]);
            out.push_str(&format!("'{value}'"));
            out.push_str(&line[body.len()..]);
        } else {
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_quotes_what_yaml_1_1_reads_as_a_boolean() {
        let value = json!({
            "FlexibleTimeWindow": { "Mode": "OFF" },
            "List": ["on", "yes", "Off", "offline", "n"],
            "Nested": [{ "State": "no", "Other": "ENABLED" }],
            "Script": "#!/bin/sh\nmode: off\n- on\nyes\n",
            "After": "Y",
        });
        let text = render(&value, Format::Yaml, false).unwrap();
        for quoted in [
            "Mode: 'OFF'",
            "- 'on'",
            "- 'yes'",
            "- 'Off'",
            "- offline",
            "- 'n'",
            "State: 'no'",
            "After: 'Y'",
        ] {
            assert!(text.contains(quoted), "{quoted} in\n{text}");
        }
        // The block scalar's content is untouched.
        assert!(text.contains("  mode: off\n  - on\n  yes\n"), "{text}");
        let back: Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(back, value);
    }
}
