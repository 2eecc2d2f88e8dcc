//! `[metrics]` and `[logs]`: what is shipped to CloudWatch, and where.

use super::Validator;
use crate::config::defaults::{
    DEFAULT_AGENT_LOG_GROUP, DEFAULT_LOG_GROUP, DEFAULT_LOGS_ENABLED, DEFAULT_METRICS_ENABLED,
    DEFAULT_METRICS_INTERVAL, DEFAULT_METRICS_NAMESPACE, DEFAULT_RETENTION_DAYS,
};
use crate::config::file::{FileLogs, FileMetrics};
use crate::config::{ConfigError, LogsConfig, MetricsConfig};

/// Log-group retention values CloudWatch Logs accepts (PutRetentionPolicy).
pub(in crate::config) const RETENTION_DAYS: &[u32] = &csagent_contract::LOG_RETENTION_DAYS;

impl Validator<'_> {
    pub(super) fn metrics(&self, m: FileMetrics) -> Result<MetricsConfig, ConfigError> {
        let namespace = m
            .namespace
            .unwrap_or_else(|| DEFAULT_METRICS_NAMESPACE.to_string());
        if namespace.is_empty() || namespace.len() > 255 || namespace.starts_with("AWS/") {
            return Err(self.err(
                "metrics.namespace",
                format!("{namespace:?} must be 1-255 characters and not start with AWS/"),
            ));
        }
        let interval = self.duration_or(
            "metrics.interval",
            m.interval.as_deref(),
            DEFAULT_METRICS_INTERVAL,
        )?;
        self.at_least("metrics.interval", interval, 1)?;
        Ok(MetricsConfig {
            enabled: m.enabled.unwrap_or(DEFAULT_METRICS_ENABLED),
            namespace,
            interval,
        })
    }

    pub(super) fn logs(&self, l: FileLogs, project: &str) -> Result<LogsConfig, ConfigError> {
        let group = l.group.unwrap_or_else(|| DEFAULT_LOG_GROUP.to_string());
        self.template("logs.group", &group)?;
        if let Some(days) = l.retention_days
            && !RETENTION_DAYS.contains(&days)
        {
            return Err(self.err(
                "logs.retention_days",
                format!("{days} is not a value CloudWatch Logs accepts ({RETENTION_DAYS:?})"),
            ));
        }
        let agent_group = l
            .agent_group
            .unwrap_or_else(|| DEFAULT_AGENT_LOG_GROUP.to_string());
        let agent_group = match agent_group.as_str() {
            "" => None,
            t => {
                let name = t.replace("{project}", project);
                let ok_chars = name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-/#".contains(c));
                if !(1..=512).contains(&name.len()) || !ok_chars {
                    return Err(self.err(
                        "logs.agent_group",
                        format!(
                            "{t:?} is not a CloudWatch Logs group name (1-512 of A-Z a-z 0-9 . _ - / #; \
                             the only placeholder is {{project}}; \"\" turns agent log shipping off)"
                        ),
                    ));
                }
                Some(name)
            }
        };
        Ok(LogsConfig {
            enabled: l.enabled.unwrap_or(DEFAULT_LOGS_ENABLED),
            group,
            agent_group,
            retention_days: Some(l.retention_days.unwrap_or(DEFAULT_RETENTION_DAYS)),
        })
    }
}
