//! `/etc/csagent/config.toml`: what the admin writes, and the validated form the
//! rest of the agent reads.
//!
//! Two layers, as in the Secrets Manager agent: a private file layer that mirrors
//! the TOML (every field optional, unknown keys rejected), and a typed [`Config`]
//! produced by [`Config::from_toml`] that has passed every range and cross-field
//! check. Every error names the key at fault, so `check-config` can print one line an
//! admin can act on.
//!
//! - `file.rs`: the file layer and the TOML parse;
//! - `validate/`: file layer to [`Config`], one file per part of the config;
//! - [`defaults`]: every default, one named constant per key;
//! - `types.rs`: the typed [`Config`] and its parts;
//! - `docs_agree.rs` (tests): README.md and `packaging/config.toml` state those defaults.

pub mod defaults;
#[cfg(test)]
mod docs_agree;
mod file;
mod types;
mod validate;

use std::path::{Path, PathBuf};

pub use defaults::{DEFAULT_CONFIG_PATH, MAX_DEVELOPERS};
pub use types::{
    AgentConfig, ApplyPolicy, Config, ContainersConfig, Developer, DeveloperSetConfig, Filesystem,
    LogFormat, LogsConfig, MetricsConfig, PullPolicy, RegistryAuth, RolloutConfig, RolloutStrategy,
    SecretsConfig, VolumeConfig, VolumeSource,
};
pub use validate::{is_developer_name, parse_cidr, parse_cidr_v6};

/// A config problem, always tied to the key that caused it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// The key the error is about, if any (used by tests and `check-config --json`).
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Invalid { key, .. } => Some(key),
        }
    }
}

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Like [`Config::load`], with the file's text (to resolve a published
    /// developer set against later).
    pub fn load_with_text(path: &Path) -> Result<(Config, String), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok((Config::from_toml(&text, path)?, text))
    }

    /// Parses and validates TOML text; `path` is only used in messages. With
    /// `developers.parameter` set, the developer list is empty: see
    /// [`Config::from_toml_with_developers`].
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file = file::parse_file(text, path)?;
        validate::Validator { path }.validate(file, None)
    }

    /// Like [`Config::from_toml`], with the developers from `developers` (the
    /// value of the file's `developers.parameter`: `[[developer]]` tables only,
    /// checked exactly as the file's own entries). Errors in that value name
    /// `origin` (the parameter) and the key (`developer[2].port`).
    pub fn from_toml_with_developers(
        text: &str,
        path: &Path,
        developers: &str,
        origin: &str,
    ) -> Result<Config, ConfigError> {
        let file = file::parse_file(text, path)?;
        let origin = Path::new(origin);
        let set: file::FileDeveloperSet = file::parse_file(developers, origin)?;
        let published = validate::Published {
            entries: set.developer,
            origin,
        };
        validate::Validator { path }.validate(file, Some(published))
    }

    /// Fills a name template (`{project}/{developer}/password`).
    pub fn render(&self, template: &str, developer: &str) -> String {
        render_template(template, &self.project, developer)
    }

    /// The configured developer called `name`, if any.
    pub fn developer(&self, name: &str) -> Option<&Developer> {
        self.developers.iter().find(|d| d.name == name)
    }
}

pub(super) fn render_template(template: &str, project: &str, developer: &str) -> String {
    template
        .replace("{project}", project)
        .replace("{developer}", developer)
}

#[cfg(test)]
mod test_support {
    use std::path::Path;

    use super::{Config, ConfigError};

    const MIN: &str = "[volume]\ndevice = \"/dev/loop7\"\n";

    /// `extra` plus the one required key; errors say `test.toml`.
    pub fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::from_toml(&format!("{extra}\n{MIN}"), Path::new("test.toml"))
    }

    /// The key of the error `extra` causes; panics when it is valid.
    pub fn key_of(extra: &str) -> String {
        match parse(extra) {
            Ok(_) => panic!("expected an error for {extra:?}"),
            Err(e) => e.key().unwrap_or("").to_string(),
        }
    }
}
