//! SIGHUP / `csagent reload`: a new config without a restart. An invalid file
//! changes nothing; a valid one is handed to every capability, the volume pass
//! makes new developers' directories, and a convergence pass follows.

use std::sync::Arc;

use sd_notify::NotifyState;

use super::{Agent, notify, progress, watchdog};
use crate::config::Config;

/// Beyond waiting for the device and its lock: mkfs, mount, grow, directories.
const VOLUME_PASS_SLACK: std::time::Duration = std::time::Duration::from_secs(300);

/// Developers in `old` that `new` no longer lists.
fn removed_developers<'a>(old: &'a Config, new: &Config) -> Vec<&'a str> {
    old.developers
        .iter()
        .filter(|d| new.developer(&d.name).is_none())
        .map(|d| d.name.as_str())
        .collect()
}

impl Agent {
    pub(super) async fn reload(&mut self) -> Result<String, String> {
        notify(&[NotifyState::Reloading]);
        let loaded = match Config::load_with_text(&self.config_path) {
            Ok((c, text)) => self.devset.for_reload(c, text).await,
            Err(e) => Err(e.to_string()),
        };
        let result = match loaded {
            Ok(c) => {
                let done = self.apply_config(Arc::new(c)).await;
                self.observations
                    .developer_set
                    .set(self.devset.status.clone());
                Ok(done)
            }
            Err(e) => {
                tracing::error!(error = %e, "reload refused: the config is invalid; keeping the running one");
                Err(format!("config invalid, nothing changed: {e}"))
            }
        };
        notify(&[NotifyState::Ready]);
        result
    }

    pub(super) async fn apply_config(&mut self, c: Arc<Config>) -> String {
        tracing::info!(developers = c.developers.len(), "reloading config");
        // A developer no longer configured loses its key file (its data
        // directories stay on the volume).
        for gone in removed_developers(&self.config, &c) {
            if let Err(e) = self.files.remove(gone) {
                tracing::warn!(developer = %gone, error = %e, "cannot remove the credential file");
            }
            self.applied.remove(gone);
        }
        self.secrets.set_config(&c);
        self.reconciler.set_config(c.clone());
        self.observations.config.set(c.clone());
        self.config = c.clone();
        let cfg = c.clone();
        // New developers need their directories before their containers. The
        // pass can take minutes (waiting for the device, the device lock, a
        // grow): keep the watchdog fed for as long as it may legitimately take.
        let bound = c.volume.wait_timeout + crate::volume::LOCK_TIMEOUT + VOLUME_PASS_SLACK;
        let pass = tokio::task::spawn_blocking(move || {
            crate::volume::prepare(&cfg, &|t: &str| progress(t))
        });
        match watchdog::keep_alive_while(&self.reconciler.progress(), bound, pass).await {
            Ok(Ok(v)) => self.observations.volume.set(v),
            Ok(Err(e)) => tracing::error!(error = %e, "volume pass after reload failed"),
            Err(e) => tracing::error!(error = %e, "volume task failed"),
        }
        if let Err(e) = self.secrets.fetch_all().await {
            tracing::warn!(error = %e, "secrets read after reload failed");
        }
        let ok = self.converge_all().await;
        // Containers this pass replaced or removed were drained by the shipper
        // running until now; it restarts only if its own settings changed.
        self.restart_background_for(&c).await;
        format!(
            "reloaded {}: {} developers, {}",
            self.config_path.display(),
            c.developers.len(),
            if ok {
                "converged"
            } else {
                "degraded (see csagent status)"
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(developers: &[&str]) -> Config {
        let mut text = String::from("[volume]\ndevice = \"/dev/loop7\"\n");
        for d in developers {
            text.push_str(&format!("[[developer]]\nname = \"{d}\"\n"));
        }
        Config::from_toml(&text, Path::new("test.toml")).expect("config")
    }

    #[test]
    fn removed_are_the_old_ones_no_longer_listed() {
        let old = config(&["alice", "bob", "carol"]);
        let new = config(&["carol", "alice", "dave"]);
        assert_eq!(removed_developers(&old, &new), ["bob"]);
        assert!(removed_developers(&new, &new).is_empty());
    }
}
