//! `[developers]` and `[[developer]]`: who gets a container, on which port, with
//! which limits. Either `developers.count` names dev1..devN on consecutive ports, or
//! each `[[developer]]` entry names one, overriding the `containers.*` limits, or
//! `developers.parameter` names an SSM parameter whose value holds those entries
//! (checked here the same way, once the agent has read it; errors then name the
//! parameter instead of the file).

use std::collections::BTreeMap;
use std::path::Path;

use super::Validator;
use super::checks::is_developer_name;
use crate::config::defaults::{
    DEFAULT_CPUS, DEFAULT_DEVELOPER_COUNT, DEFAULT_DEVELOPERS_POLL_INTERVAL, DEFAULT_MEMORY,
    DEFAULT_MEMORY_RESERVATION, MAX_DEVELOPERS,
};
use crate::config::file::{FileContainers, FileDeveloper, FileDevelopers};
use crate::config::{ConfigError, ContainersConfig, Developer, DeveloperSetConfig};

/// The longest SSM parameter name (API reference, PutParameter `Name`).
const MAX_PARAMETER_NAME: usize = 1011;

/// A published developer set and where it came from (the parameter's name).
pub(in crate::config) struct Published<'a> {
    pub entries: Vec<FileDeveloper>,
    pub origin: &'a Path,
}

/// What `developers.*` and the developer list resolve to.
pub(super) struct Resolved {
    pub developers: Vec<Developer>,
    pub set: DeveloperSetConfig,
}

/// Limits a listed developer inherits from `[containers]`.
#[derive(Clone, Copy)]
struct Inherited {
    cpus: f64,
    memory: u64,
    reservation: u64,
}

impl Validator<'_> {
    fn developer_set(&self, d: &FileDevelopers) -> Result<DeveloperSetConfig, ConfigError> {
        let poll_interval = self.duration_or(
            "developers.poll_interval",
            d.poll_interval.as_deref(),
            DEFAULT_DEVELOPERS_POLL_INTERVAL,
        )?;
        self.at_least("developers.poll_interval", poll_interval, 1)?;
        if let Some(p) = &d.parameter {
            let ok = p.starts_with('/')
                && p.len() > 1
                && p.len() <= MAX_PARAMETER_NAME
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c));
            if !ok {
                return Err(self.err(
                    "developers.parameter",
                    format!(
                        "{p:?} is not an SSM parameter name like \"/team/csagent/host-1/developers\" (starts with '/', at most {MAX_PARAMETER_NAME} of a-z A-Z 0-9 _ . - /)"
                    ),
                ));
            }
        }
        Ok(DeveloperSetConfig {
            parameter: d.parameter.clone(),
            poll_interval,
        })
    }

    pub(super) fn developers(
        &self,
        d: &FileDevelopers,
        list: Vec<FileDeveloper>,
        c: &FileContainers,
        containers: &ContainersConfig,
        published: Option<Published<'_>>,
    ) -> Result<Resolved, ConfigError> {
        let set = self.developer_set(d)?;
        let cpus = match c.cpus {
            Some(v) => self.cpus("containers.cpus", v)?,
            None => DEFAULT_CPUS,
        };
        let memory = self.size_or("containers.memory", c.memory.as_deref(), DEFAULT_MEMORY)?;
        let reservation = self.size_or(
            "containers.memory_reservation",
            c.memory_reservation.as_deref(),
            DEFAULT_MEMORY_RESERVATION,
        )?;
        self.memory_pair("containers", memory, reservation)?;
        let inherited = Inherited {
            cpus,
            memory,
            reservation,
        };

        if let Some(name) = &set.parameter {
            if d.count.is_some() {
                return Err(self.err(
                    "developers.count",
                    "set developers.parameter or developers.count, not both",
                ));
            }
            if !list.is_empty() {
                return Err(self.err(
                    "developer",
                    format!(
                        "the developers come from the parameter {name} (developers.parameter): remove the [[developer]] entries from this file"
                    ),
                ));
            }
            let developers = match published {
                // Not read yet: the agent reads it before starting anyone.
                None => Vec::new(),
                Some(p) => {
                    let v = Validator { path: p.origin };
                    if p.entries.is_empty() {
                        return Err(v.err(
                            "developer",
                            "lists no [[developer]] table; a published set names at least one developer (an empty one would stop every container)",
                        ));
                    }
                    v.listed(p.entries, inherited, containers)?
                }
            };
            return Ok(Resolved { developers, set });
        }

        let mut out: Vec<Developer> = Vec::new();
        if list.is_empty() {
            let count = d.count.unwrap_or(i64::from(DEFAULT_DEVELOPER_COUNT));
            if !(1..=MAX_DEVELOPERS as i64).contains(&count) {
                return Err(self.err(
                    "developers.count",
                    format!("must be 1..={MAX_DEVELOPERS} (got {count})"),
                ));
            }
            let last = u32::from(containers.base_port) + count as u32 - 1;
            if last > 65535 {
                return Err(self.err(
                    "developers.count",
                    format!(
                        "{count} developers from containers.base_port {} would need port {last}, past 65535",
                        containers.base_port
                    ),
                ));
            }
            for i in 1..=count as u32 {
                out.push(Developer {
                    name: format!("dev{i}"),
                    port: (u32::from(containers.base_port) + i - 1) as u16,
                    cpus,
                    memory,
                    memory_reservation: reservation,
                });
            }
            return Ok(Resolved {
                developers: out,
                set,
            });
        }

        if d.count.is_some() {
            return Err(self.err(
                "developers.count",
                "set developers.count or list [[developer]] entries, not both",
            ));
        }
        Ok(Resolved {
            developers: self.listed(list, inherited, containers)?,
            set,
        })
    }

    /// `[[developer]]` entries, from the file or a published set.
    fn listed(
        &self,
        list: Vec<FileDeveloper>,
        inherited: Inherited,
        containers: &ContainersConfig,
    ) -> Result<Vec<Developer>, ConfigError> {
        let Inherited {
            cpus,
            memory,
            reservation,
        } = inherited;
        let mut out: Vec<Developer> = Vec::new();
        if list.len() > MAX_DEVELOPERS {
            return Err(self.err(
                "developer",
                format!(
                    "at most {MAX_DEVELOPERS} [[developer]] entries (got {})",
                    list.len()
                ),
            ));
        }
        let mut ports: BTreeMap<u16, String> = BTreeMap::new();
        for (i, entry) in list.into_iter().enumerate() {
            let key = format!("developer[{}]", i + 1);
            if !is_developer_name(&entry.name) {
                return Err(self.err(
                    format!("{key}.name"),
                    format!(
                        "{:?} must be 1-32 characters of a-z, 0-9 and '-', starting with a letter (it names the container, directories and secrets)",
                        entry.name
                    ),
                ));
            }
            if let Some(prev) = out.iter().find(|o| o.name == entry.name) {
                return Err(self.err(
                    format!("{key}.name"),
                    format!("{:?} is listed twice (port {})", prev.name, prev.port),
                ));
            }
            let port = match entry.port {
                Some(p) => self.port(&format!("{key}.port"), p)?,
                None => {
                    let p = u32::from(containers.base_port) + i as u32;
                    self.port(&format!("{key}.port"), p)?
                }
            };
            if let Some(owner) = ports.get(&port) {
                return Err(self.err(
                    format!("{key}.port"),
                    format!("{port} is already used by {owner}"),
                ));
            }
            ports.insert(port, entry.name.clone());
            let dev_cpus = match entry.cpus {
                Some(v) => self.cpus(&format!("{key}.cpus"), v)?,
                None => cpus,
            };
            let dev_memory = match &entry.memory {
                Some(v) => self.size(&format!("{key}.memory"), v)?,
                None => memory,
            };
            let dev_reservation = match &entry.memory_reservation {
                Some(v) => self.size(&format!("{key}.memory_reservation"), v)?,
                // A raised limit keeps the default reservation unless it would exceed it.
                None => reservation.min(dev_memory),
            };
            self.memory_pair(&key, dev_memory, dev_reservation)?;
            out.push(Developer {
                name: entry.name,
                port,
                cpus: dev_cpus,
                memory: dev_memory,
                memory_reservation: dev_reservation,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{key_of, parse};

    #[test]
    fn explicit_developers_with_port_clash() {
        let e = parse(
            "[[developer]]\nname = \"dev1\"\nport = 8443\n[[developer]]\nname = \"dev2\"\nport = 8443\n",
        )
        .expect_err("clash");
        assert_eq!(
            e.to_string(),
            "test.toml: developer[2].port: 8443 is already used by dev1"
        );
    }

    #[test]
    fn explicit_developers_with_overrides() {
        let c = parse(
            "[[developer]]\nname = \"alice\"\nport = 9000\ncpus = 2.0\nmemory = \"6GiB\"\n[[developer]]\nname = \"bob\"\n",
        )
        .expect("valid");
        assert_eq!(c.developers.len(), 2);
        assert_eq!(c.developers[0].port, 9000);
        assert_eq!(c.developers[0].cpus, 2.0);
        assert_eq!(c.developers[0].memory, 6 * 1024 * 1024 * 1024);
        assert_eq!(c.developers[1].port, 8444, "defaults to base_port + index");
        assert_eq!(c.developers[1].cpus, 1.5);
        assert_eq!(
            key_of("[[developer]]\nname = \"Bad Name\"\n"),
            "developer[1].name"
        );
        assert_eq!(
            key_of("[developers]\ncount = 2\n[[developer]]\nname = \"a\"\n"),
            "developers.count"
        );
        assert_eq!(
            key_of(
                "[[developer]]\nname = \"a\"\nmemory = \"1GiB\"\nmemory_reservation = \"2GiB\"\n"
            ),
            "developer[1].memory_reservation"
        );
    }

    const PARAM: &str = "[developers]\nparameter = \"/team/csagent/host-1/developers\"\n[volume]\ndevice = \"/dev/loop7\"\n";

    fn with_set(set: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        crate::config::Config::from_toml_with_developers(
            PARAM,
            std::path::Path::new("test.toml"),
            set,
            "/team/csagent/host-1/developers",
        )
    }

    #[test]
    fn a_parameter_set_is_checked_like_the_file_and_errors_name_it() {
        let c = parse("[developers]\nparameter = \"/team/csagent/host-1/developers\"\n")
            .expect("valid without the set");
        assert!(c.developers.is_empty(), "nothing until the set is read");
        assert_eq!(
            c.developer_set.parameter.as_deref(),
            Some("/team/csagent/host-1/developers")
        );
        assert_eq!(c.developer_set.poll_interval.as_secs(), 60);

        let c = with_set(
            "[[developer]]\nname = \"dev1\"\nport = 9001\n[[developer]]\nname = \"dev2\"\n",
        )
        .expect("valid set");
        let got: Vec<(&str, u16)> = c
            .developers
            .iter()
            .map(|d| (d.name.as_str(), d.port))
            .collect();
        assert_eq!(got, [("dev1", 9001), ("dev2", 8444)]);
        assert_eq!(
            c.developers[0].cpus, 1.5,
            "limits inherited from [containers]"
        );

        let e = with_set(
            "[[developer]]\nname = \"a\"\nport = 9000\n[[developer]]\nname = \"b\"\nport = 9000\n",
        )
        .expect_err("clash");
        assert_eq!(
            e.to_string(),
            "/team/csagent/host-1/developers: developer[2].port: 9000 is already used by a"
        );
        for (bad, key) in [
            ("[[developer]]\nname = \"Bad\"\n", "developer[1].name"),
            (
                "[[developer]]\nname = \"a\"\n[[developer]]\nname = \"a\"\n",
                "developer[2].name",
            ),
            (
                "[[developer]]\nname = \"a\"\nport = 80\n",
                "developer[1].port",
            ),
            (
                "[[developer]]\nname = \"a\"\nshell = \"zsh\"\n",
                "developer[0].shell",
            ),
            ("[developers]\ncount = 3\n", "developers"),
            ("", "developer"),
            ("[[developer]\nname = 1", "line 1"),
        ] {
            let e = with_set(bad).expect_err(bad);
            assert!(
                e.to_string()
                    .starts_with("/team/csagent/host-1/developers: "),
                "{bad:?}: {e}"
            );
            assert_eq!(e.key(), Some(key), "{bad:?}: {e}");
        }
    }

    #[test]
    fn a_parameter_excludes_the_file_list() {
        assert_eq!(
            key_of("[developers]\nparameter = \"/p/x\"\ncount = 2\n"),
            "developers.count"
        );
        assert_eq!(
            key_of("[developers]\nparameter = \"/p/x\"\n[[developer]]\nname = \"a\"\n"),
            "developer"
        );
        assert_eq!(
            key_of("[developers]\nparameter = \"p/x\"\n"),
            "developers.parameter"
        );
        assert_eq!(
            key_of("[developers]\nparameter = \"/p x\"\n"),
            "developers.parameter"
        );
        assert_eq!(
            key_of("[developers]\npoll_interval = \"0s\"\n"),
            "developers.poll_interval"
        );
    }

    #[test]
    fn count_near_top_of_port_range() {
        assert_eq!(
            key_of("[containers]\nbase_port = 65530\n[developers]\ncount = 8\n"),
            "developers.count"
        );
    }
}
