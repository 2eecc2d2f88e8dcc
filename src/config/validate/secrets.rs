//! `[secrets]`: which Secrets Manager names hold each developer's credentials, and
//! how rotations are followed.

use super::Validator;
use crate::config::defaults::{
    DEFAULT_APPLY, DEFAULT_CLAUDE_API_KEY_NAME, DEFAULT_MAX_DELAY, DEFAULT_PASSWORD_NAME,
    DEFAULT_POLL_INTERVAL,
};
use crate::config::file::FileSecrets;
use crate::config::{ConfigError, SecretsConfig};

impl Validator<'_> {
    pub(super) fn secrets(&self, s: FileSecrets) -> Result<SecretsConfig, ConfigError> {
        let password_name = s
            .password_name
            .unwrap_or_else(|| DEFAULT_PASSWORD_NAME.to_string());
        let claude_api_key_name = s
            .claude_api_key_name
            .unwrap_or_else(|| DEFAULT_CLAUDE_API_KEY_NAME.to_string());
        for (key, t) in [
            ("secrets.password_name", &password_name),
            ("secrets.claude_api_key_name", &claude_api_key_name),
        ] {
            self.template(key, t)?;
        }
        if password_name == claude_api_key_name {
            return Err(self.err(
                "secrets.claude_api_key_name",
                "must differ from secrets.password_name",
            ));
        }
        let poll_interval = self.duration_or(
            "secrets.poll_interval",
            s.poll_interval.as_deref(),
            DEFAULT_POLL_INTERVAL,
        )?;
        self.at_least("secrets.poll_interval", poll_interval, 1)?;
        let max_delay = self.duration_or(
            "secrets.max_delay",
            s.max_delay.as_deref(),
            DEFAULT_MAX_DELAY,
        )?;
        Ok(SecretsConfig {
            password_name,
            claude_api_key_name,
            poll_interval,
            apply: s.apply.unwrap_or(DEFAULT_APPLY),
            max_delay,
        })
    }
}
