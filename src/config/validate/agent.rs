//! `[agent]`: the agent's own directories, control socket and logging.

use std::path::PathBuf;

use super::Validator;
use crate::config::defaults::{
    DEFAULT_LOG_FORMAT, DEFAULT_LOG_LEVEL, DEFAULT_RUNTIME_DIR, DEFAULT_SOCKET,
    DEFAULT_SOCKET_GROUP, DEFAULT_STATE_DIR,
};
use crate::config::file::FileAgent;
use crate::config::{AgentConfig, ConfigError};

impl Validator<'_> {
    pub(super) fn agent(&self, a: FileAgent) -> Result<AgentConfig, ConfigError> {
        let state_dir = a
            .state_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        self.absolute("agent.state_dir", &state_dir)?;
        let runtime_dir = a
            .runtime_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_RUNTIME_DIR));
        self.absolute("agent.runtime_dir", &runtime_dir)?;
        let socket = a.socket.unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
        self.absolute("agent.socket", &socket)?;
        let log_level = a.log_level.unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_string());
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            return Err(self.err(
                "agent.log_level",
                format!("{log_level:?} is not a level or filter (error, warn, info, debug, trace, or like info,csagent=debug)"),
            ));
        }
        Ok(AgentConfig {
            state_dir,
            runtime_dir,
            socket,
            socket_group: a
                .socket_group
                .unwrap_or_else(|| DEFAULT_SOCKET_GROUP.to_string()),
            log_format: a.log_format.unwrap_or(DEFAULT_LOG_FORMAT),
            log_level,
        })
    }
}
