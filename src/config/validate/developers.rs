//! `[developers]` and `[[developer]]`: who gets a container, on which port, with
//! which limits. Either `developers.count` names dev1..devN on consecutive ports, or
//! each `[[developer]]` entry names one, overriding the `containers.*` limits.

use std::collections::BTreeMap;

use super::Validator;
use super::checks::is_developer_name;
use crate::config::defaults::{
    DEFAULT_CPUS, DEFAULT_DEVELOPER_COUNT, DEFAULT_MEMORY, DEFAULT_MEMORY_RESERVATION,
    MAX_DEVELOPERS,
};
use crate::config::file::{FileContainers, FileDeveloper, FileDevelopers};
use crate::config::{ConfigError, ContainersConfig, Developer};

impl Validator<'_> {
    pub(super) fn developers(
        &self,
        d: &FileDevelopers,
        list: Vec<FileDeveloper>,
        c: &FileContainers,
        containers: &ContainersConfig,
    ) -> Result<Vec<Developer>, ConfigError> {
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
            return Ok(out);
        }

        if d.count.is_some() {
            return Err(self.err(
                "developers.count",
                "set developers.count or list [[developer]] entries, not both",
            ));
        }
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

    #[test]
    fn count_near_top_of_port_range() {
        assert_eq!(
            key_of("[containers]\nbase_port = 65530\n[developers]\ncount = 8\n"),
            "developers.count"
        );
    }
}
