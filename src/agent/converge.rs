//! One convergence pass: desired state from the current secrets (keeping the
//! applied credentials while a when-idle rotation waits), the container
//! reconciler, then the bookkeeping of what was applied. Also the rotation poll
//! that decides whether a pass is needed now, and the volume refresh status reads.
//!
//! Claude keys are not part of that: every poll and every pass rewrites each
//! ready developer's key file from the current secrets ([`Agent::deliver_key`]),
//! whatever the apply policy, and the running container reads it again (Claude
//! Code's apiKeyHelper). Only a password rotation recreates a container.
//!
//! The decisions are pure functions ([`choose_credentials`], [`pass_outcome`],
//! [`first_credentials_waiting`]) tested below; `Agent`'s methods do the I/O.

use std::collections::BTreeMap;
use std::time::SystemTime;

use sd_notify::NotifyState;

use super::{Agent, notify, progress};
use crate::config::{ApplyPolicy, Developer};
use crate::containers::{Action, ContainerCredentials, DesiredDeveloper};
use crate::observe::Phase;
use crate::secrets::{ApplyDecision, Credentials, DeveloperSecrets, is_idle};
use crate::status;

/// Which credentials a developer's container gets this pass.
#[derive(Debug)]
enum CredentialsChoice<'a> {
    /// A rotation waits (when idle): keep what the container runs with.
    KeepApplied(&'a ContainerCredentials),
    /// The current secrets: hash the password.
    Current(&'a Credentials),
    /// The developer cannot be started, and why.
    NotReady(String),
}

/// `waiting`: a rotation is pending and the policy does not say to apply it now.
fn choose_credentials<'a>(
    secrets: Option<&'a DeveloperSecrets>,
    applied: Option<&'a ContainerCredentials>,
    waiting: bool,
) -> CredentialsChoice<'a> {
    match (secrets, applied) {
        (Some(DeveloperSecrets::Ready(_)), Some(applied)) if waiting => {
            CredentialsChoice::KeepApplied(applied)
        }
        (Some(DeveloperSecrets::Ready(c)), _) => CredentialsChoice::Current(c),
        (Some(DeveloperSecrets::Failed { reason }), _) => {
            CredentialsChoice::NotReady(reason.clone())
        }
        (None, _) => CredentialsChoice::NotReady("credentials not read yet".to_string()),
    }
}

/// What a finished pass means for the bookkeeping.
#[derive(Debug, Default)]
struct PassOutcome {
    /// Developers failed or skipped.
    bad: usize,
    /// Developers now running with these credentials, in result order.
    applied: Vec<(String, ContainerCredentials)>,
}

fn pass_outcome(desired: &[DesiredDeveloper], results: &[(String, Action)]) -> PassOutcome {
    let mut out = PassOutcome::default();
    for (dev, action) in results {
        // A removed developer is no longer desired: nothing to record.
        let Some(d) = desired.iter().find(|d| &d.developer.name == dev) else {
            continue;
        };
        match (action, &d.credentials) {
            (Action::Failed(_) | Action::Skipped(_), _) => out.bad += 1,
            (_, Ok(c)) => out.applied.push((dev.clone(), c.clone())),
            _ => {}
        }
    }
    out
}

/// A developer whose secrets became ready but whose container was never
/// converged with them needs a pass now, rotation or not.
fn first_credentials_waiting<'a>(
    developers: &[Developer],
    secrets: impl Fn(&str) -> Option<&'a DeveloperSecrets>,
    applied: &BTreeMap<String, ContainerCredentials>,
) -> bool {
    developers.iter().any(|d| {
        matches!(secrets(&d.name), Some(DeveloperSecrets::Ready(_)))
            && !applied.contains_key(&d.name)
    })
}

impl Agent {
    /// Every developer's desired state from the current secrets. Writes every
    /// ready developer's key file first (the container binds its directory).
    fn desired(&mut self) -> Vec<DesiredDeveloper> {
        let mut out = Vec::new();
        // A home the volume pass could not migrate: not started (what runs keeps running).
        let blocked = self.observations.volume.get().blocked;
        for dev in self.config.developers.clone() {
            if let Some(why) = blocked.get(&dev.name) {
                out.push(DesiredDeveloper {
                    developer: dev,
                    credentials: Err(format!("home not migrated: {why}")),
                });
                continue;
            }
            let key_dir = self.deliver_key(&dev.name);
            let waiting = self.secrets.pending_since(&dev.name).is_some()
                && !self.apply_now.contains(&dev.name);
            let choice = choose_credentials(
                self.secrets.get(&dev.name),
                self.applied.get(&dev.name),
                waiting,
            );
            let credentials = match choice {
                CredentialsChoice::KeepApplied(applied) => Ok(applied.clone()),
                CredentialsChoice::NotReady(reason) => Err(reason),
                CredentialsChoice::Current(c) => {
                    let c = c.clone();
                    key_dir.and_then(|dir| self.container_credentials(&dev.name, &c, dir))
                }
            };
            out.push(DesiredDeveloper {
                developer: dev,
                credentials,
            });
        }
        out
    }

    /// The password hash (cached per version) for `c`; `key_dir` holds the key file.
    fn container_credentials(
        &mut self,
        developer: &str,
        c: &Credentials,
        key_dir: std::path::PathBuf,
    ) -> Result<ContainerCredentials, String> {
        let hash = self
            .secrets
            .password_hash(developer)
            .map_err(|e| e.to_string())?;
        Ok(ContainerCredentials {
            hashed_password: hash,
            password_version: c.password_version.clone(),
            key_dir,
        })
    }

    /// Makes the developer's key file hold its current Claude key (removed when
    /// there is none), whether or not a password rotation waits, and records what
    /// it holds for status. Returns the directory the container binds; an error
    /// when the developer has no credentials or the file cannot be written.
    pub(super) fn deliver_key(&mut self, developer: &str) -> Result<std::path::PathBuf, String> {
        let c = match self.secrets.get(developer) {
            Some(DeveloperSecrets::Ready(c)) => c.clone(),
            Some(DeveloperSecrets::Failed { reason }) => return Err(reason.clone()),
            None => return Err("credentials not read yet".to_string()),
        };
        let written = self.files.write(developer, c.claude_key.as_ref());
        let version = c.claude_key_version.filter(|_| c.claude_key.is_some());
        self.secrets.record_key_file(
            developer,
            written.as_ref().map(|_| version).map_err(|e| e.to_string()),
        );
        written.map_err(|e| format!("credential file: {e}"))
    }

    /// One convergence pass; true when every developer runs as desired.
    pub(super) async fn converge_all(&mut self) -> bool {
        if !self.devset.known(&self.config) {
            // An unknown set is not an empty one: converging now would retire
            // every running container. Touch nothing until the set is read.
            notify(&[NotifyState::Status(
                "waiting for the developer set (developers.parameter); nothing started or removed",
            )]);
            self.publish_state(false);
            return false;
        }
        self.secrets.prehash().await;
        let desired = self.desired();
        let ok = match self.reconciler.converge(&desired).await {
            Ok(results) => {
                let outcome = pass_outcome(&desired, &results);
                for (dev, c) in outcome.applied {
                    self.record_applied(&dev, c);
                }
                progress(&format!(
                    "converged: {} of {} developers running as desired",
                    desired.len().saturating_sub(outcome.bad),
                    desired.len()
                ));
                outcome.bad == 0
            }
            Err(e) => {
                tracing::error!(error = %e, "convergence failed");
                notify(&[NotifyState::Status(&format!("degraded: {e}"))]);
                false
            }
        };
        self.publish_state(ok);
        ok
    }

    /// The developer's container runs with `c`: remember it, and clear the
    /// pending rotation it applied.
    fn record_applied(&mut self, dev: &str, c: ContainerCredentials) {
        if self.applied.get(dev).map(|a| &a.password_version) != Some(&c.password_version) {
            tracing::info!(developer = %dev, version = %crate::status::short_id(&c.password_version), "credentials applied");
        }
        self.apply_now.remove(dev);
        if let Some(DeveloperSecrets::Ready(current)) = self.secrets.get(dev).cloned()
            && current.password_version == c.password_version
        {
            self.secrets.mark_applied(dev, &current);
        }
        self.applied.insert(dev.to_string(), c);
    }

    fn publish_state(&self, ok: bool) {
        self.observations.secrets.set(Some(self.secrets.status()));
        self.observations
            .phase
            .set(if ok { Phase::Running } else { Phase::Degraded });
    }

    /// One rotation poll; true when a convergence pass is needed now. Rewrites
    /// the key files first: a rotated Claude key needs no pass.
    pub(super) async fn poll_secrets(&mut self) -> bool {
        for ev in self.secrets.poll().await {
            tracing::info!(developer = %ev.developer, kind = ?ev.which, "rotation seen");
        }
        let mut needed = false;
        for dev in self.config.developers.clone() {
            // A developer without credentials has no container to read a key.
            let _ = self.deliver_key(&dev.name);
            if self.secrets.pending_since(&dev.name).is_none() {
                continue;
            }
            let idle = match self.config.secrets.apply {
                ApplyPolicy::WhenIdle => is_idle(dev.port).await,
                ApplyPolicy::Immediate => None,
            };
            match self.secrets.decide_for(&dev.name, SystemTime::now(), idle) {
                Some(ApplyDecision::ApplyNow) => {
                    self.apply_now.insert(dev.name.clone());
                    needed = true;
                }
                Some(ApplyDecision::Wait { until }) => {
                    tracing::debug!(developer = %dev.name, until = %status::rfc3339(until), "rotation waits until idle");
                }
                None => {}
            }
        }
        // A developer whose secrets appeared (or failed) changes desired state too.
        let newly_ready = first_credentials_waiting(
            &self.config.developers,
            |d| self.secrets.get(d),
            &self.applied,
        );
        self.publish_state(true);
        needed || newly_ready
    }

    /// Refreshes the volume's mounted state and use (statvfs, one blkid) off the
    /// async runtime, for status to read.
    pub(super) async fn refresh_volume(&self) {
        let config = self.config.clone();
        match tokio::task::spawn_blocking(move || crate::volume::observe(&config)).await {
            Ok(mut v) => {
                // What the last sweep had to leave hidden under the mount
                // cannot be seen from here: keep reporting it.
                let left = self.observations.volume.get().quarantine;
                v.quarantine
                    .extend(left.into_iter().filter(|q| q.left_in_place));
                // Only a full pass knows; keep its verdict.
                let last = self.observations.volume.get();
                v.blocked = last.blocked;
                if let (Some(q), Some(last)) = (v.quota.as_mut(), last.quota.as_ref()) {
                    q.keep_verdict(last);
                }
                self.observations.volume.set(v)
            }
            Err(e) => tracing::warn!(error = %e, "volume observation task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::Secret;
    use crate::config::Config;

    fn ready(version: &str) -> DeveloperSecrets {
        DeveloperSecrets::Ready(Credentials {
            password: Secret::new("pw"),
            password_version: version.into(),
            claude_key: None,
            claude_key_version: None,
            fetched_at: UNIX_EPOCH,
        })
    }

    fn applied(version: &str) -> ContainerCredentials {
        ContainerCredentials {
            hashed_password: "$argon2id$...".into(),
            password_version: version.into(),
            key_dir: PathBuf::from("/run/csagent/keys/dev1"),
        }
    }

    fn developers(n: u32) -> Vec<Developer> {
        let text = format!("[developers]\ncount = {n}\n[volume]\ndevice = \"/dev/loop7\"\n");
        Config::from_toml(&text, Path::new("test.toml"))
            .expect("config")
            .developers
    }

    #[test]
    fn a_waiting_rotation_keeps_the_applied_credentials() {
        let (v2, a1) = (ready("v2"), applied("v1"));
        assert!(matches!(
            choose_credentials(Some(&v2), Some(&a1), true),
            CredentialsChoice::KeepApplied(a) if a.password_version == "v1"
        ));
        let CredentialsChoice::Current(c) = choose_credentials(Some(&v2), Some(&a1), false) else {
            panic!("not waiting: apply the current secrets");
        };
        assert_eq!(c.password_version, "v2");
        assert!(
            matches!(
                choose_credentials(Some(&v2), None, true),
                CredentialsChoice::Current(_)
            ),
            "nothing applied yet: nothing to keep"
        );
    }

    #[test]
    fn no_credentials_say_why() {
        let failed = DeveloperSecrets::Failed {
            reason: "secret team/dev1/password not found".into(),
        };
        let a1 = applied("v1");
        assert!(matches!(
            choose_credentials(Some(&failed), Some(&a1), true),
            CredentialsChoice::NotReady(r) if r == "secret team/dev1/password not found"
        ));
        assert!(matches!(
            choose_credentials(None, None, false),
            CredentialsChoice::NotReady(r) if r == "credentials not read yet"
        ));
    }

    #[test]
    fn a_pass_records_what_ran_and_counts_what_did_not() {
        let devs = developers(3);
        let desired: Vec<DesiredDeveloper> = devs
            .iter()
            .map(|d| DesiredDeveloper {
                developer: d.clone(),
                credentials: if d.name == "dev3" {
                    Err("credentials not read yet".into())
                } else {
                    Ok(applied("v1"))
                },
            })
            .collect();
        let results = vec![
            ("dev1".to_string(), Action::Unchanged),
            (
                "dev2".to_string(),
                Action::Failed("start: no such image".into()),
            ),
            ("dev3".to_string(), Action::Skipped("not started".into())),
            ("gone".to_string(), Action::Removed),
        ];
        let outcome = pass_outcome(&desired, &results);
        assert_eq!(outcome.bad, 2);
        let applied: Vec<(&str, &str)> = outcome
            .applied
            .iter()
            .map(|(d, c)| (d.as_str(), c.password_version.as_str()))
            .collect();
        assert_eq!(applied, [("dev1", "v1")]);
    }

    #[test]
    fn newly_ready_secrets_need_a_pass() {
        let devs = developers(2);
        let (r1, failed) = (
            ready("v1"),
            DeveloperSecrets::Failed {
                reason: "denied".into(),
            },
        );
        let mut done = BTreeMap::new();
        done.insert("dev1".to_string(), applied("v1"));
        let secrets = |d: &str| match d {
            "dev1" => Some(&r1),
            _ => Some(&failed),
        };
        assert!(!first_credentials_waiting(&devs, secrets, &done));
        let all_ready = |_: &str| Some(&r1);
        assert!(first_credentials_waiting(&devs, all_ready, &done));
        done.insert("dev2".to_string(), applied("v1"));
        assert!(!first_credentials_waiting(&devs, all_ready, &done));
    }
}
