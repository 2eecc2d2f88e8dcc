//! What the host is told at boot: the agent's `/etc/csagent/config.toml` and the user-data
//! script that installs the .deb and writes it. Both are plain functions so tests elsewhere can
//! feed the config to `csagent check-config` and run the script against a local package.

use crate::capacity::{DeveloperSize, cpus_text};
use crate::settings::{Developer, Host, Settings};
use csagent_contract::names::developers_parameter;

/// Sample values that stand in for the CloudFormation placeholders in `--print-*` output.
pub const SAMPLE_REGION: &str = "ap-southeast-7";
/// Sample data volume id (the real one is `Ref DataVolume`).
pub const SAMPLE_VOLUME_ID: &str = "vol-0123456789abcdef0";
/// Sample package URL when `--deb-url` is not given.
pub const SAMPLE_DEB_URL: &str = "https://example.invalid/csagent_0.1.0-1_amd64.deb";
/// Sample account id in the sample team image URI.
pub const SAMPLE_ACCOUNT_ID: &str = "123456789012";

/// The `containers.image` line for the team image `<repository_uri>:<tag>`. The agent config
/// ends with its `[containers]` table, so the line can follow it (the user data appends it
/// only when the TeamImageTag Parameter is set).
pub fn team_image_line(repository_uri: &str, tag: &str) -> String {
    format!(
        "image = {}\n",
        toml_string(&format!("{repository_uri}:{tag}"))
    )
}

/// Sample stack suffix in the sample repository name (the real one comes from the stack id).
pub const SAMPLE_STACK_SUFFIX: &str = "0a1b2c3d";

/// The sample ECR repository URI of the team image: `--existing-team-image-repository`, or
/// the repository the stack would create, `<project>/code-server-<stack suffix>`.
pub fn sample_repository_uri(s: &Settings) -> String {
    let repository = if s.existing_team_image_repository.is_empty() {
        format!(
            "{}/{}-{SAMPLE_STACK_SUFFIX}",
            s.project,
            crate::registry::REPOSITORY_SUFFIX
        )
    } else {
        s.existing_team_image_repository.clone()
    };
    format!("{SAMPLE_ACCOUNT_ID}.dkr.ecr.{SAMPLE_REGION}.amazonaws.com/{repository}")
}

/// Quotes `value` as a TOML basic string.
fn toml_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\u{:04X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The agent's config file, in the exact layout the agent accepts (it rejects unknown keys).
/// The developers are not in it: `developers.parameter` names the SSM parameter that holds
/// them ([`developer_set_toml`]), so adding one never changes the user data. Everything else
/// takes the agent's defaults, which match this template (secret names, log groups, metric
/// namespace, mount point).
pub fn agent_config_toml(
    project: &str,
    region: &str,
    volume_id: &str,
    developers_parameter: &str,
    base_port: u16,
) -> String {
    format!(
        "project = {}\nregion = {}\n\n[volume]\nvolume_id = {}\n\n[developers]\nparameter = {}\n\n[containers]\nbase_port = {base_port}\n",
        toml_string(project),
        toml_string(region),
        toml_string(volume_id),
        toml_string(developers_parameter),
    )
}

/// A developer-set parameter's value: one `[[developer]]` table (name, port) per developer,
/// the layout the agent's config accepts.
pub fn developer_set_toml(developers: &[Developer]) -> String {
    let mut out = String::new();
    for d in developers {
        out.push_str(&format!(
            "[[developer]]\nname = {}\nport = {}\n",
            toml_string(&d.name),
            d.port
        ));
    }
    out
}

/// A host's developer-set value for `settings`: [`developer_set_toml`], plus each developer's
/// `memory`, `memory_reservation` and `cpus` when the settings ask for other sizes than the
/// agent's defaults (so the agent runs what the capacity model counted with; with the
/// defaults the value stays as short as before).
pub fn developer_set_value(s: &Settings, developers: &[Developer]) -> String {
    let size = DeveloperSize::of(s);
    let default = DeveloperSize::of(&Settings::default());
    if size == default {
        return developer_set_toml(developers);
    }
    let mut out = String::new();
    for d in developers {
        out.push_str(&format!(
            "[[developer]]\nname = {}\nport = {}\nmemory = \"{}GiB\"\nmemory_reservation = \"{}GiB\"\ncpus = {}\n",
            toml_string(&d.name),
            d.port,
            size.memory_gib,
            size.reservation_gib,
            cpus_text(size.cpu_millis),
        ));
    }
    out
}

/// The agent config with sample region, volume id and account (`--print-agent-config`),
/// the team image line included when `--team-image-tag` is given.
pub fn sample_agent_config(s: &Settings) -> String {
    let mut config = agent_config_toml(
        &s.project,
        SAMPLE_REGION,
        SAMPLE_VOLUME_ID,
        &developers_parameter(&s.project, 1),
        s.base_port,
    );
    if !s.team_image_tag.is_empty() {
        config.push_str(&team_image_line(
            &sample_repository_uri(s),
            &s.team_image_tag,
        ));
    }
    config
}

/// Host `host`'s user-data script as a `Fn::Sub` template: `${DebUrl}`, `${ProjectName}`,
/// `${AWS::Region}`, the host's data volume (`${DataVolume}` for host 1, `${Host2DataVolume}`
/// …), `${TeamImageTag}` and `${TeamImageRepositoryUri}` are filled in by CloudFormation. The
/// script itself uses no `${...}` so nothing else is taken for a placeholder.
pub fn user_data_template(s: &Settings, host: &Host) -> String {
    let config = agent_config_toml(
        "${ProjectName}",
        "${AWS::Region}",
        &format!("${{{}}}", host.id("DataVolume")),
        &developers_parameter("${ProjectName}", host.number),
        s.base_port,
    );
    format!(
        r#"#!/bin/bash
# csagent host bootstrap, generated by csagent-infra.
# Installs the csagent .deb (which pulls in docker.io), writes /etc/csagent/config.toml and
# (re)starts the agent. The agent does everything else: it reads the developer set from its
# SSM parameter (and follows it), waits for and mounts the data volume, reads the developers'
# secrets, runs the containers, ships logs and metrics.
# Output goes to /var/log/cloud-init-output.log.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

DEB_URL='${{DebUrl}}'
REGION='${{AWS::Region}}'
WORKDIR=$(mktemp -d /tmp/csagent-bootstrap.XXXXXX)
DEB="$WORKDIR/csagent_bootstrap.deb"
echo "csagent bootstrap: fetching $DEB_URL"

# 1. Fetch the package.
#    https:// and file:// go through curl (a presigned S3 URL is an https:// URL).
#    s3:// uses the AWS CLI with the instance role (the role may read exactly that object);
#    Ubuntu's AMI has no AWS CLI, so it comes from the snap store first.
case "$DEB_URL" in
  s3://*)
    if ! command -v aws >/dev/null 2>&1; then
      snap install aws-cli --classic
      PATH="$PATH:/snap/bin"
    fi
    aws s3 cp --only-show-errors --region "$REGION" "$DEB_URL" "$DEB"
    ;;
  https://*|file://*)
    curl -fsSL --retry 5 --retry-delay 5 --retry-connrefused -o "$DEB" "$DEB_URL"
    ;;
  *)
    echo "csagent bootstrap: unsupported package URL: $DEB_URL" >&2
    exit 1
    ;;
esac

# 2. Write the agent's config before installing, so the agent's first start already uses it.
#    The package ships a default at the same path as a conffile; --force-confold keeps ours.
install -d -m 0755 /etc/csagent
umask 0027
cat > /etc/csagent/config.toml.new <<'CSAGENT_CONFIG'
{config}CSAGENT_CONFIG
#    The team image in this stack's ECR repository when TeamImageTag is set (else the agent's
#    default image); the agent pulls it with the instance role's ECR token.
TEAM_IMAGE_TAG='${{TeamImageTag}}'
if [ -n "$TEAM_IMAGE_TAG" ]; then
  printf 'image = "%s:%s"\n' '${{TeamImageRepositoryUri}}' "$TEAM_IMAGE_TAG" >> /etc/csagent/config.toml.new
fi
chmod 0640 /etc/csagent/config.toml.new
mv -f /etc/csagent/config.toml.new /etc/csagent/config.toml
umask 0022

# 3. Install the package and its dependencies (docker.io, e2fsprogs, ...).
apt-get update -q
cd "$WORKDIR"
apt-get install -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold ./csagent_*.deb
if getent group csagent >/dev/null; then
  chgrp csagent /etc/csagent/config.toml
fi
cd /
rm -rf "$WORKDIR"

# 4. (Re)start the agent with this config.
if [ -d /run/systemd/system ]; then
  systemctl enable csagent
  systemctl restart csagent
  echo "csagent bootstrap: csagent restarted"
else
  echo "csagent bootstrap: systemd is not running here; csagent not started"
fi
"#
    )
}

/// Replaces the `Fn::Sub` placeholders of `template` from `values` (`${!X}` becomes `${X}`, as
/// CloudFormation does). Unknown placeholders are left as they are.
pub fn substitute(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                if let Some(literal) = name.strip_prefix('!') {
                    out.push_str("${");
                    out.push_str(literal);
                    out.push('}');
                } else if let Some((_, v)) = values.iter().find(|(k, _)| *k == name) {
                    out.push_str(v);
                } else {
                    out.push_str(&rest[start..start + 2 + end + 1]);
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The user-data script with sample values in place of the placeholders
/// (`--print-user-data`).
pub fn sample_user_data(s: &Settings) -> String {
    let deb = if s.deb_url.is_empty() {
        SAMPLE_DEB_URL
    } else {
        s.deb_url.as_str()
    };
    let host1 = Host {
        number: 1,
        developers: Vec::new(),
    };
    substitute(
        &user_data_template(s, &host1),
        &[
            ("DebUrl", deb),
            ("ProjectName", &s.project),
            ("AWS::Region", SAMPLE_REGION),
            ("DataVolume", SAMPLE_VOLUME_ID),
            ("TeamImageTag", &s.team_image_tag),
            ("TeamImageRepositoryUri", &sample_repository_uri(s)),
        ],
    )
}

/// The `${...}` placeholders a `Fn::Sub` template uses, in order of appearance.
pub fn placeholders(template: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                if !name.starts_with('!') {
                    found.push(name.to_string());
                }
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_the_exact_layout() {
        let text = agent_config_toml(
            "code-server-multi-dev",
            "ap-southeast-7",
            "vol-0123456789abcdef0",
            "/code-server-multi-dev/csagent/host-1/developers",
            8443,
        );
        assert_eq!(
            text,
            "project = \"code-server-multi-dev\"\nregion = \"ap-southeast-7\"\n\n[volume]\nvolume_id = \"vol-0123456789abcdef0\"\n\n[developers]\nparameter = \"/code-server-multi-dev/csagent/host-1/developers\"\n\n[containers]\nbase_port = 8443\n"
        );
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(
            parsed["developers"]["parameter"].as_str(),
            Some("/code-server-multi-dev/csagent/host-1/developers")
        );
        assert_eq!(parsed["containers"]["base_port"].as_integer(), Some(8443));
    }

    #[test]
    fn config_escapes_strings() {
        let text = agent_config_toml("a\"b\\c", "r", "v", "/p", 8443);
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(parsed["project"].as_str(), Some("a\"b\\c"));
    }

    #[test]
    fn the_developer_set_lists_every_developer_with_its_port() {
        let s = Settings {
            developers: 3,
            base_port: 9000,
            ..Settings::default()
        };
        let text = developer_set_toml(&s.developer_list());
        assert_eq!(
            text,
            "[[developer]]\nname = \"dev1\"\nport = 9000\n[[developer]]\nname = \"dev2\"\nport = 9001\n[[developer]]\nname = \"dev3\"\nport = 9002\n"
        );
    }

    #[test]
    fn the_user_data_does_not_change_with_the_developers() {
        let at = |developers| {
            user_data_template(
                &Settings {
                    developers,
                    ..Settings::default()
                },
                &host(1),
            )
        };
        assert_eq!(at(8), at(9));
        assert!(at(8).contains("parameter = \"/${ProjectName}/csagent/host-1/developers\""));
    }

    fn host(number: u32) -> Host {
        Host {
            number,
            developers: Vec::new(),
        }
    }

    #[test]
    fn host_2_reads_its_own_parameter_and_volume() {
        let text = user_data_template(&Settings::default(), &host(2));
        assert!(text.contains("parameter = \"/${ProjectName}/csagent/host-2/developers\""));
        assert!(text.contains("volume_id = \"${Host2DataVolume}\""));
    }

    #[test]
    fn other_sizes_are_published_per_developer() {
        let s = Settings {
            developers: 2,
            developer_memory_gib: 6,
            developer_memory_reservation_gib: 2,
            developer_cpu_millis: 2500,
            ..Settings::default()
        };
        let text = developer_set_value(&s, &s.developer_list());
        assert_eq!(
            text,
            "[[developer]]\nname = \"dev1\"\nport = 8443\nmemory = \"6GiB\"\nmemory_reservation = \"2GiB\"\ncpus = 2.5\n[[developer]]\nname = \"dev2\"\nport = 8444\nmemory = \"6GiB\"\nmemory_reservation = \"2GiB\"\ncpus = 2.5\n"
        );
        let d = Settings::default();
        assert_eq!(
            developer_set_value(&d, &d.developer_list()),
            developer_set_toml(&d.developer_list())
        );
    }

    #[test]
    fn user_data_uses_only_known_placeholders() {
        let s = Settings::default();
        let mut names = placeholders(&user_data_template(&s, &host(1)));
        names.sort();
        names.dedup();
        assert_eq!(
            names,
            vec![
                "AWS::Region",
                "DataVolume",
                "DebUrl",
                "ProjectName",
                "TeamImageRepositoryUri",
                "TeamImageTag"
            ]
        );
    }

    #[test]
    fn sample_user_data_embeds_the_sample_config() {
        let s = Settings {
            developers: 3,
            base_port: 9000,
            ..Settings::default()
        };
        let script = sample_user_data(&s);
        assert!(script.starts_with("#!/bin/bash\n"));
        assert!(!script.contains("${"));
        assert!(script.contains(&sample_agent_config(&s)));
        assert!(script.contains(&format!("DEB_URL='{SAMPLE_DEB_URL}'")));
        assert!(script.contains("apt-get install -y"));
        assert!(script.contains("./csagent_*.deb"));
        assert!(script.contains("systemctl restart csagent"));
    }

    #[test]
    fn the_team_image_line_lands_in_containers() {
        let s = Settings {
            team_image_tag: "4.96.4-team.1".into(),
            ..Settings::default()
        };
        let text = sample_agent_config(&s);
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(
            parsed["containers"]["image"].as_str(),
            Some(
                "123456789012.dkr.ecr.ap-southeast-7.amazonaws.com/code-server-multi-dev/code-server-0a1b2c3d:4.96.4-team.1"
            )
        );
        assert_eq!(parsed["containers"]["base_port"].as_integer(), Some(8443));
        // The script appends the same line the sample shows.
        let script = sample_user_data(&s);
        assert!(
            script.contains("TEAM_IMAGE_TAG='4.96.4-team.1'"),
            "{script}"
        );
        assert!(
            !sample_agent_config(&Settings::default()).contains("image ="),
            "no tag: the agent's default image"
        );
    }

    #[test]
    fn substitute_handles_literals_and_unknowns() {
        assert_eq!(
            substitute("a ${X} ${!Y} ${Z} $W ${", &[("X", "1")]),
            "a 1 ${Y} ${Z} $W ${"
        );
    }
}
