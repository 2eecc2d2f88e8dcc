//! `[metrics]` and `[logs]`: what is shipped to CloudWatch, and where.

use super::Validator;
use crate::config::defaults::{
    DEFAULT_AGENT_LOG_GROUP, DEFAULT_DOCKER_LOG_GROUP, DEFAULT_HOLD_ROTATED_FILES,
    DEFAULT_HOST_LOGS, DEFAULT_LOG_GROUP, DEFAULT_LOGS_ENABLED, DEFAULT_METRICS_ENABLED,
    DEFAULT_METRICS_INTERVAL, DEFAULT_METRICS_NAMESPACE, DEFAULT_RETENTION_DAYS,
    DEFAULT_SYSTEM_LOG_GROUP,
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
        let agent_group = self.project_group(
            "logs.agent_group",
            l.agent_group.as_deref().unwrap_or(DEFAULT_AGENT_LOG_GROUP),
            project,
        )?;
        let system_group = self.project_group(
            "logs.system_group",
            l.system_group
                .as_deref()
                .unwrap_or(DEFAULT_SYSTEM_LOG_GROUP),
            project,
        )?;
        let docker_group = self.project_group(
            "logs.docker_group",
            l.docker_group
                .as_deref()
                .unwrap_or(DEFAULT_DOCKER_LOG_GROUP),
            project,
        )?;
        // Each of these writes the stream named for the instance, and a batch of
        // unknown fate is settled by counting that stream's events: one writer each.
        let named = [
            ("logs.agent_group", &agent_group),
            ("logs.system_group", &system_group),
            ("logs.docker_group", &docker_group),
        ];
        for (i, (key, group)) in named.iter().enumerate() {
            if let Some(g) = group
                && let Some((other, _)) = named[..i].iter().find(|(_, o)| o.as_ref() == Some(g))
            {
                return Err(self.err(
                    *key,
                    format!("{g:?} is also {other}: each needs a group of its own"),
                ));
            }
        }
        if let Some(p) = &l.journal
            && !p.is_absolute()
        {
            return Err(self.err(
                "logs.journal",
                format!("{} must be an absolute path", p.display()),
            ));
        }
        let hold_rotated_files = l.hold_rotated_files.unwrap_or(DEFAULT_HOLD_ROTATED_FILES);
        if hold_rotated_files > 100 {
            return Err(self.err(
                "logs.hold_rotated_files",
                format!("must be 0..=100 (got {hold_rotated_files})"),
            ));
        }
        Ok(LogsConfig {
            enabled: l.enabled.unwrap_or(DEFAULT_LOGS_ENABLED),
            group,
            agent_group,
            retention_days: Some(l.retention_days.unwrap_or(DEFAULT_RETENTION_DAYS)),
            host: l.host.unwrap_or(DEFAULT_HOST_LOGS),
            system_group,
            docker_group,
            hold_rotated_files,
            journal: l.journal,
        })
    }

    /// A group name template whose only placeholder is `{project}`, rendered;
    /// "" means None (not shipped).
    fn project_group(
        &self,
        key: &str,
        template: &str,
        project: &str,
    ) -> Result<Option<String>, ConfigError> {
        if template.is_empty() {
            return Ok(None);
        }
        let name = template.replace("{project}", project);
        let ok_chars = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/#".contains(c));
        if !(1..=512).contains(&name.len()) || !ok_chars {
            return Err(self.err(
                key,
                format!(
                    "{template:?} is not a CloudWatch Logs group name (1-512 of A-Z a-z 0-9 . _ - / #; \
                     the only placeholder is {{project}}; \"\" turns it off)"
                ),
            ));
        }
        Ok(Some(name))
    }
}
