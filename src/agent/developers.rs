//! The agent's side of the published developer set (`developers.parameter`):
//! the set in force at start (saved copy, then a fresh read), each poll, and
//! what a reload does with it. The decisions are in [`crate::developer_set`];
//! applying a new set is the reload path (`reload.rs`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::Agent;
use crate::config::Config;
use crate::developer_set::{
    Decision, DeveloperSetStatus, ParameterReader, Published, ReadError, Refusal, decide,
    load_saved, save,
};
use crate::retry::Backoff;

/// Read attempts at start: more when nothing was saved (nobody could start).
const START_ATTEMPTS: u32 = 6;
const START_ATTEMPTS_WITH_SAVED: u32 = 3;
/// Read attempts per poll and per reload.
const POLL_ATTEMPTS: u32 = 3;

/// The file the set belongs to, the set in force and what status shows.
pub(super) struct DeveloperSet {
    /// The config file's text in force (a new set is validated against it).
    file_text: String,
    reader: ParameterReader,
    /// The parameter value whose developers run now.
    in_force: Option<Published>,
    /// The last value refused (so the log says it once).
    refused: Option<String>,
    /// Shortens the next poll while reads fail.
    backoff: Backoff,
    failing: bool,
    pub(super) status: DeveloperSetStatus,
}

fn names(c: &Config) -> Vec<&str> {
    c.developers.iter().map(|d| d.name.as_str()).collect()
}

impl DeveloperSet {
    /// The developer set to start with. Never fails: without a saved copy and
    /// with SSM unreachable the agent starts with no developer and keeps polling.
    pub(super) async fn start(
        config: Arc<Config>,
        file_text: String,
        sdk: &aws_config::SdkConfig,
    ) -> (Arc<Config>, DeveloperSet) {
        let mut set = DeveloperSet {
            file_text,
            reader: ParameterReader::new(sdk),
            in_force: None,
            refused: None,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
            failing: false,
            status: DeveloperSetStatus {
                applied_at: Some(SystemTime::now()),
                ..Default::default()
            },
        };
        let Some(name) = config.developer_set.parameter.clone() else {
            return (config, set);
        };
        set.status.parameter = Some(name.clone());
        let mut config = config;
        if let Some(saved) = load_saved(&config.agent.state_dir, &name) {
            match crate::developer_set::decide::resolve(&set.file_text, &config.path, &saved) {
                Ok(c) => {
                    tracing::info!(parameter = %name, version = saved.version, developers = c.developers.len(), "developer set: starting from the saved copy");
                    config = Arc::new(c);
                    set.status.from_saved = true;
                    set.mark_in_force(saved);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the saved developer set no longer fits the config; not used")
                }
            }
        }
        let attempts = if set.in_force.is_some() {
            START_ATTEMPTS_WITH_SAVED
        } else {
            START_ATTEMPTS
        };
        match set.reader.read(&name, attempts).await {
            Ok(fresh) => {
                if let Some(c) = set.consider(fresh, &config) {
                    config = Arc::new(c);
                }
            }
            Err(e) => set.read_failed(&e),
        }
        if set.in_force.is_none() {
            tracing::error!(parameter = %name, "no developer set: none saved and the parameter could not be used; no developer is started until it can");
        }
        (config, set)
    }

    /// Whether the developers are known: from the file, or a set read (or saved)
    /// from the parameter. Until then an empty list means "unknown", not "nobody".
    pub(super) fn known(&self, config: &Config) -> bool {
        config.developer_set.parameter.is_none() || self.in_force.is_some()
    }

    /// Whether a parameter is polled.
    pub(super) fn watching(&self, config: &Config) -> bool {
        config.developer_set.parameter.is_some()
    }

    /// The next poll: the interval, sooner while reads fail.
    pub(super) fn next_poll_in(&mut self, config: &Config) -> Duration {
        let every = config.developer_set.poll_interval;
        if self.failing {
            self.backoff.next_delay().min(every)
        } else {
            self.backoff.reset();
            every
        }
    }

    fn mark_in_force(&mut self, p: Published) {
        self.status.version = Some(p.version);
        self.status.modified_ms = p.modified_ms;
        self.status.applied_at = Some(SystemTime::now());
        self.in_force = Some(p);
    }

    fn save(&self, state_dir: &Path) {
        if let Some(p) = &self.in_force
            && let Err(e) = save(state_dir, p)
        {
            tracing::warn!(error = %e, dir = %state_dir.display(), "cannot save the developer set; a restart without SSM would use an older one");
        }
    }

    fn read_failed(&mut self, e: &ReadError) {
        let message = e.to_string();
        if self.status.read_error.as_deref() != Some(message.as_str()) {
            tracing::warn!(error = %message, class = ?e.class, "cannot read the developer set; the one in force stays");
        }
        self.status.read_error = Some(message);
        self.failing = true;
    }

    /// A successful read: updates the state, and returns the config to apply
    /// when the developers changed.
    fn consider(&mut self, fresh: Published, current: &Config) -> Option<Config> {
        self.status.last_read = Some(SystemTime::now());
        self.status.read_error = None;
        self.failing = false;
        let decision = decide(
            &self.file_text,
            &current.path,
            current,
            self.in_force.as_ref(),
            self.refused.as_deref(),
            &fresh,
        );
        match decision {
            Decision::Unchanged => {
                self.status.from_saved = false;
                self.clear_refusal(&fresh);
                None
            }
            Decision::SameDevelopers => {
                tracing::info!(parameter = %fresh.parameter, version = fresh.version, "developer set rewritten with the same developers; nothing to change");
                self.clear_refusal(&fresh);
                self.status.from_saved = false;
                self.mark_in_force(fresh);
                self.save(&current.agent.state_dir);
                None
            }
            Decision::Apply(c) => {
                let (old, new) = (names(current), names(&c));
                let added: Vec<&str> = new.iter().filter(|n| !old.contains(n)).copied().collect();
                let removed: Vec<&str> = old.iter().filter(|n| !new.contains(n)).copied().collect();
                tracing::info!(parameter = %fresh.parameter, version = fresh.version, ?added, ?removed, developers = c.developers.len(), "developer set changed");
                self.clear_refusal(&fresh);
                self.status.from_saved = false;
                self.mark_in_force(fresh);
                self.save(&c.agent.state_dir);
                Some(*c)
            }
            Decision::Refuse { reason, first } => {
                if first {
                    tracing::error!(parameter = %fresh.parameter, version = fresh.version, error = %reason, "developer set refused; the last good one stays in force");
                }
                self.refused = Some(fresh.value);
                self.status.refused = Some(Refusal {
                    version: fresh.version,
                    reason,
                });
                None
            }
        }
    }

    fn clear_refusal(&mut self, fresh: &Published) {
        if self.status.refused.take().is_some() {
            tracing::info!(parameter = %fresh.parameter, version = fresh.version, "developer set valid again");
        }
        self.refused = None;
    }

    /// A reloaded config file: the developers it means, or why it is refused.
    /// The set in force stays when the parameter is the same; a new parameter
    /// is read now (an unreadable one refuses the reload rather than stop
    /// everyone).
    pub(super) async fn for_reload(
        &mut self,
        config: Config,
        file_text: String,
    ) -> Result<Config, String> {
        let Some(name) = config.developer_set.parameter.clone() else {
            self.file_text = file_text;
            self.in_force = None;
            self.refused = None;
            self.failing = false;
            self.status = DeveloperSetStatus {
                applied_at: Some(SystemTime::now()),
                ..Default::default()
            };
            return Ok(config);
        };
        let same = self.in_force.as_ref().filter(|p| p.parameter == name);
        let set = match same {
            Some(p) => p.clone(),
            None => self
                .reader
                .read(&name, POLL_ATTEMPTS)
                .await
                .map_err(|e| format!("cannot read the developer set: {e}"))?,
        };
        let resolved = crate::developer_set::decide::resolve(&file_text, &config.path, &set)
            .map_err(|e| e.to_string())?;
        if same.is_none() {
            self.status = DeveloperSetStatus {
                parameter: Some(name),
                last_read: Some(SystemTime::now()),
                ..Default::default()
            };
            self.refused = None;
            self.failing = false;
            self.mark_in_force(set);
            self.save(&resolved.agent.state_dir);
        }
        self.file_text = file_text;
        Ok(resolved)
    }
}

impl Agent {
    /// One read of the parameter; a changed, valid set is applied.
    pub(super) async fn poll_developer_set(&mut self) {
        let Some(name) = self.config.developer_set.parameter.clone() else {
            return;
        };
        match self.devset.reader.read(&name, POLL_ATTEMPTS).await {
            Ok(fresh) => {
                if let Some(c) = self.devset.consider(fresh, &self.config) {
                    let done = self.apply_config(Arc::new(c)).await;
                    tracing::info!("developer set applied: {done}");
                }
            }
            Err(e) => self.devset.read_failed(&e),
        }
        self.observations
            .developer_set
            .set(self.devset.status.clone());
    }
}
