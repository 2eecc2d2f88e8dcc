//! The validator: file layer in, typed [`Config`] out, or the first error, naming
//! its key.
//!
//! One file per part of the config, each an `impl Validator` block that applies the
//! defaults from [`defaults`](super::defaults) and checks ranges:
//! - this file: the top-level keys (`project`, `region`, `instance_id`, `[aws]`);
//! - `volume.rs`: `[volume]`;
//! - `containers.rs`: `[containers]` (all but the per-developer limits);
//! - `developers.rs`: `[developers]`, `[[developer]]` and the `containers.*` limits
//!   they inherit;
//! - `secrets.rs`: `[secrets]`;
//! - `telemetry.rs`: `[metrics]` and `[logs]`;
//! - `agent.rs`: `[agent]`;
//! - `checks.rs`: the small checks they share (paths, durations, sizes, ports).

mod agent;
mod checks;
mod containers;
mod developers;
mod rollout;
mod secrets;
mod telemetry;
mod volume;

use std::path::Path;

use super::defaults::DEFAULT_PROJECT;
use super::file::FileConfig;
use super::{Config, ConfigError};

pub(super) use developers::Published;

pub use checks::{is_developer_name, parse_cidr, parse_cidr_v6};
#[cfg(test)]
pub(super) use telemetry::RETENTION_DAYS;

/// Validates one file; `path` is only used in messages.
pub(super) struct Validator<'a> {
    pub(super) path: &'a Path,
}

impl Validator<'_> {
    fn err(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            key: key.into(),
            message: message.into(),
        }
    }

    /// `published`: the developer set read from `developers.parameter`, if any.
    pub(super) fn validate(
        &self,
        f: FileConfig,
        published: Option<Published<'_>>,
    ) -> Result<Config, ConfigError> {
        let project = f.project.unwrap_or_else(|| DEFAULT_PROJECT.to_string());
        if !checks::is_name(&project, 1, 64) {
            return Err(self.err(
                "project",
                format!(
                    "{project:?} must be 1-64 characters of a-z, A-Z, 0-9 and '-', starting with a letter"
                ),
            ));
        }
        if let Some(r) = &f.region
            && !(r.len() >= 5
                && r.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
        {
            return Err(self.err(
                "region",
                format!("{r:?} is not an AWS region name (like ap-southeast-7)"),
            ));
        }
        if let Some(i) = &f.instance_id
            && !(i.starts_with("i-") && i.len() > 2 && checks::is_hex(&i[2..]))
        {
            return Err(self.err(
                "instance_id",
                format!("{i:?} is not an EC2 instance id (like i-0123456789abcdef0)"),
            ));
        }
        if let Some(u) = &f.aws.endpoint_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(self.err(
                "aws.endpoint_url",
                format!("{u:?} must start with http:// or https://"),
            ));
        }

        let volume = self.volume(f.volume)?;
        let containers = self.containers(&f.containers)?;
        let developers::Resolved {
            developers,
            set: developer_set,
        } = self.developers(
            &f.developers,
            f.developer,
            &f.containers,
            &containers,
            published,
        )?;
        let secrets = self.secrets(f.secrets)?;
        let rollout = self.rollout(f.rollout)?;
        let metrics = self.metrics(f.metrics)?;
        let logs = self.logs(f.logs, &project)?;
        // The agent, the host's journal and each developer write the stream named
        // for the instance: a shared group would interleave them and break the
        // read-back that keeps shipping exactly once.
        let own = [
            ("logs.agent_group", &logs.agent_group),
            ("logs.system_group", &logs.system_group),
            ("logs.docker_group", &logs.docker_group),
        ];
        for (key, group) in own {
            if let Some(group) = group
                && let Some(dev) = developers
                    .iter()
                    .find(|d| &super::render_template(&logs.group, &project, &d.name) == group)
            {
                return Err(self.err(
                    key,
                    format!(
                        "{group:?} is also {}'s container log group (logs.group); it needs a group of its own",
                        dev.name
                    ),
                ));
            }
        }
        let agent = self.agent(f.agent)?;

        Ok(Config {
            path: self.path.to_path_buf(),
            project,
            region: f.region,
            instance_id: f.instance_id,
            endpoint_url: f.aws.endpoint_url,
            volume,
            containers,
            developers,
            developer_set,
            secrets,
            rollout,
            metrics,
            logs,
            agent,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::key_of;

    #[test]
    fn errors_name_the_key() {
        assert_eq!(key_of("[developers]\ncount = 0\n"), "developers.count");
        assert_eq!(key_of("[developers]\ncount = 65\n"), "developers.count");
        assert_eq!(key_of("bogus = 1\n"), "bogus");
        assert_eq!(key_of("[containers]\nbogus = 1\n"), "containers.bogus");
        assert_eq!(
            key_of("[containers]\nmemory = \"4 lots\"\n"),
            "containers.memory"
        );
        assert_eq!(
            key_of("[containers]\nmemory = \"4\"\n"),
            "containers.memory"
        );
        assert_eq!(key_of("[containers]\ncpus = 0.0\n"), "containers.cpus");
        assert_eq!(
            key_of("[containers]\npull = \"sometimes\"\n"),
            "containers.pull"
        );
        assert_eq!(
            key_of("[containers]\nmemory_reservation = \"8GiB\"\n"),
            "containers.memory_reservation"
        );
        assert_eq!(
            key_of("[secrets]\npoll_interval = \"soon\"\n"),
            "secrets.poll_interval"
        );
        assert_eq!(
            key_of("[secrets]\npassword_name = \"shared\"\n"),
            "secrets.password_name"
        );
        assert_eq!(
            key_of("[logs]\nretention_days = 31\n"),
            "logs.retention_days"
        );
        assert_eq!(
            key_of("[logs]\nagent_group = \"/x/{developer}\"\n"),
            "logs.agent_group"
        );
        assert_eq!(
            key_of(
                "[logs]\ngroup = \"/{project}/{developer}\"\nagent_group = \"/{project}/dev2\"\n"
            ),
            "logs.agent_group"
        );
        assert_eq!(
            key_of("[logs]\nsystem_group = \"/aws/ec2/{project}/agent\"\n"),
            "logs.system_group"
        );
        assert_eq!(
            key_of("[logs]\ndocker_group = \"/aws/ec2/{project}/system\"\n"),
            "logs.docker_group"
        );
        assert_eq!(
            key_of(
                "[logs]\ngroup = \"/{project}/{developer}\"\ndocker_group = \"/{project}/dev1\"\n"
            ),
            "logs.docker_group"
        );
        assert_eq!(
            key_of("[logs]\njournal = \"rel/x.journal\"\n"),
            "logs.journal"
        );
        assert_eq!(key_of("[agent]\nsocket = \"rel.sock\"\n"), "agent.socket");
        assert_eq!(key_of("[volume]\nfilesystem = \"xfs\"\n"), "line 4");
    }
}
