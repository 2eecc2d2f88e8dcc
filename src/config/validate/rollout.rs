//! `[rollout]`: how an image or spec change reaches the developers' containers.

use super::Validator;
use crate::config::defaults::{
    DEFAULT_ROLLOUT_APPLY, DEFAULT_ROLLOUT_HEALTH_TIMEOUT, DEFAULT_ROLLOUT_MAX_DELAY,
    DEFAULT_ROLLOUT_STRATEGY,
};
use crate::config::file::FileRollout;
use crate::config::{ConfigError, RolloutConfig};

impl Validator<'_> {
    pub(super) fn rollout(&self, r: FileRollout) -> Result<RolloutConfig, ConfigError> {
        let max_delay = self.duration_or(
            "rollout.max_delay",
            r.max_delay.as_deref(),
            DEFAULT_ROLLOUT_MAX_DELAY,
        )?;
        let health_timeout = self.duration_or(
            "rollout.health_timeout",
            r.health_timeout.as_deref(),
            DEFAULT_ROLLOUT_HEALTH_TIMEOUT,
        )?;
        // Docker's first health check comes one interval after start: less than
        // this would halt every rollout.
        self.at_least("rollout.health_timeout", health_timeout, 10)?;
        Ok(RolloutConfig {
            strategy: r.strategy.unwrap_or(DEFAULT_ROLLOUT_STRATEGY),
            apply: r.apply.unwrap_or(DEFAULT_ROLLOUT_APPLY),
            max_delay,
            health_timeout,
        })
    }
}
