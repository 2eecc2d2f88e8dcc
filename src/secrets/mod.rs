//! Developer credentials from AWS Secrets Manager, with rotation pickup.
//!
//! Each developer has two secrets, named by `secrets.password_name` and
//! `secrets.claude_api_key_name`. [`SecretsManager::fetch_all`] reads them all at
//! start; [`SecretsManager::poll`] (every `secrets.poll_interval`) reads them again
//! and reports a [`RotationEvent`] for each secret whose AWSCURRENT version moved —
//! for exactly that developer. [`policy::decide`] says when the containers
//! reconciler applies it; [`credentials`] hands the values to a container without
//! putting them in `docker inspect`.
//!
//! # API calls per poll
//!
//! A poll has to learn the AWSCURRENT version id of 2N secrets (N developers).
//!
//! | way | calls per poll | 8 developers | 40 developers |
//! |---|---|---|---|
//! | **BatchGetSecretValue**, ≤ 20 ids per call (what we do) | ⌈2N/20⌉ | **1** | **4** |
//! | DescribeSecret per secret (+ GetSecretValue on change) | 2N | 16 | 80 |
//! | GetSecretValue per secret (fallback without batch permission) | 2N | 16 | 80 |
//! | ListSecrets, name-prefix filter, ≤ 100 per page | ⌈2N/100⌉ | 1 | 1 |
//!
//! BatchGetSecretValue returns the version id *and* the value in the same answer,
//! so a rotation costs no extra call and is seen within one poll. DescribeSecret is
//! current but costs one call per secret. ListSecrets is cheapest but its
//! `SecretVersionsToStages` can lag by minutes, so it cannot be the only signal,
//! and pairing it with a current read every poll costs more than the batch read
//! alone. At the default 60 s interval that is 1,440 requests a day for 8
//! developers and 5,760 for 40 (≈ $0.22 and $0.86 a month at $0.05 per 10,000
//! calls, if a batch request is billed as one call). Either way CloudTrail records
//! one GetSecretValue entry per secret read (2N per poll). The role needs
//! `secretsmanager:BatchGetSecretValue` plus `secretsmanager:GetSecretValue` on
//! each secret. If the role may not call BatchGetSecretValue (AccessDenied) we say so once and
//! use GetSecretValue per secret (2N calls). Retries are ours (the SDK's own are
//! turned off), at most 3 attempts per call with jittered backoff, so every
//! request is counted in [`SecretsStatus::api_calls`].
//!
//! # What never happens
//!
//! Values stay in [`Secret`] from the SDK answer on; logs carry developer names,
//! secret names and the first 8 characters of version ids; status, errors and
//! `Debug` output carry no value. The hash cache is in memory only.

pub mod credentials;
mod fetch;
mod hashing;
pub mod policy;
mod types;
pub mod value;
mod watch;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::{Duration, SystemTime};

use aws_sdk_secretsmanager::config::retry::RetryConfig;

pub use credentials::{
    CONTAINER_KEY_DIR, CredentialError, CredentialFiles, ImageCommand, KEY_FILE_NAME, StorageCheck,
    hash_password, image_command,
};
pub use fetch::{ApiCalls, BATCH_LIMIT};
pub use hashing::{release_freed_memory, tune_allocator};
pub use policy::{ApplyDecision, decide, is_idle};
pub use types::{
    Credentials, DeveloperSecrets, DeveloperSecretsStatus, PendingRotation, SecretsError,
    SecretsStatus,
};
pub use watch::{ClaudeKeyState, PLACEHOLDER_KEY, RotationEvent, SecretKind, is_placeholder};

use crate::config::Config;
use crate::retry::{Backoff, Class};
use fetch::{FetchOutcome, Fetcher};
pub use value::Secret;
use watch::{DevRecord, Observed, log_changes, short};

/// Reads and watches every developer's secrets. Values are in memory only.
pub struct SecretsManager {
    config: Config,
    fetcher: Fetcher,
    records: BTreeMap<String, DevRecord>,
    /// developer → (password version, argon2id hash of it).
    hashes: HashMap<String, (String, String)>,
    polls: u64,
    last_success: Option<SystemTime>,
    last_error: Option<String>,
    consecutive_failures: u32,
    backoff: Backoff,
    /// developer → the Claude key version its key file holds (None: no file), or
    /// why the file could not be written. Recorded by whoever writes the files.
    key_files: BTreeMap<String, Result<Option<String>, String>>,
}

impl fmt::Debug for SecretsManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretsManager")
            .field("project", &self.config.project)
            .field("developers", &self.records.keys().collect::<Vec<_>>())
            .field("polls", &self.polls)
            .field("consecutive_failures", &self.consecutive_failures)
            .finish_non_exhaustive()
    }
}

/// Summary of one round of reads.
struct Refresh {
    events: Vec<RotationEvent>,
    total: usize,
    found: usize,
    first_error: Option<String>,
}

impl SecretsManager {
    /// `client` is used with the SDK's own retries turned off (ours apply).
    pub fn new(client: aws_sdk_secretsmanager::Client, config: &Config) -> SecretsManager {
        let conf = client
            .config()
            .to_builder()
            .retry_config(RetryConfig::disabled())
            .build();
        let client = aws_sdk_secretsmanager::Client::from_conf(conf);
        SecretsManager {
            config: config.clone(),
            fetcher: Fetcher::new(client, &config.project),
            records: BTreeMap::new(),
            hashes: HashMap::new(),
            polls: 0,
            last_success: None,
            last_error: None,
            consecutive_failures: 0,
            backoff: Backoff::standard(),
            key_files: BTreeMap::new(),
        }
    }

    /// The initial read of every developer's secrets. Each developer's outcome is
    /// stored (see [`get`](Self::get)); the error means not a single secret value
    /// could be read (endpoint down, no permission at all) — try again later.
    pub async fn fetch_all(&mut self) -> Result<(), SecretsError> {
        let r = self.refresh(true).await;
        let ready = self
            .records
            .values()
            .filter(|r| r.credentials().is_some())
            .count();
        tracing::info!(
            project = %self.config.project,
            developers = self.records.len(),
            ready,
            api_calls = self.fetcher.calls.total(),
            "developer secrets read"
        );
        if r.total > 0 && r.found == 0 {
            return Err(SecretsError::NothingFetched {
                total: r.total,
                reason: r
                    .first_error
                    .unwrap_or_else(|| "no secret exists".to_string()),
            });
        }
        Ok(())
    }

    /// One rotation check. Transient errors keep the last good values (see
    /// [`status`](Self::status) for how stale they are); the next poll retries.
    pub async fn poll(&mut self) -> Vec<RotationEvent> {
        self.refresh(false).await.events
    }

    async fn refresh(&mut self, initial: bool) -> Refresh {
        let wanted: Vec<(String, String, String)> = self
            .config
            .developers
            .iter()
            .map(|d| {
                (
                    d.name.clone(),
                    self.config
                        .render(&self.config.secrets.password_name, &d.name),
                    self.config
                        .render(&self.config.secrets.claude_api_key_name, &d.name),
                )
            })
            .collect();
        let names: Vec<String> = wanted
            .iter()
            .flat_map(|(_, p, k)| [p.clone(), k.clone()])
            .collect();
        let mut outcomes = self.fetcher.fetch(&names).await;
        let now = SystemTime::now();
        self.polls += 1;

        let found = outcomes
            .values()
            .filter(|o| matches!(o, FetchOutcome::Found(_)))
            .count();
        let transient = outcomes.values().find_map(|o| match o {
            FetchOutcome::Failed {
                class: Class::Transient,
                reason,
            } => Some(reason.clone()),
            _ => None,
        });
        let first_error = transient.clone().or_else(|| {
            outcomes.values().find_map(|o| match o {
                FetchOutcome::Failed { reason, .. } => Some(reason.clone()),
                _ => None,
            })
        });

        let mut events = Vec::new();
        for (developer, password_name, key_name) in &wanted {
            let mut take = |name: &str| {
                outcomes
                    .remove(name)
                    .unwrap_or_else(|| FetchOutcome::Failed {
                        class: Class::Transient,
                        reason: "not fetched".to_string(),
                    })
            };
            let observed = Observed {
                developer,
                password_name,
                key_name,
                password: take(password_name),
                key: take(key_name),
                now,
            };
            let prev = self.records.get(developer);
            let (mut record, mut dev_events) = watch::update(prev, observed);
            log_changes(developer, prev, &record, initial);
            if initial {
                // The first read is the baseline, not a rotation.
                dev_events.clear();
                record.pending = prev.and_then(|p| p.pending.clone());
            }
            for e in &dev_events {
                tracing::info!(
                    developer = %e.developer,
                    secret = %e.which,
                    old_version = e.old_version.as_deref().map(short).unwrap_or("none"),
                    new_version = short(&e.new_version),
                    "rotation detected"
                );
            }
            events.extend(dev_events);
            self.records.insert(developer.clone(), record);
        }

        match &transient {
            None => {
                self.last_success = Some(now);
                self.last_error = None;
                self.consecutive_failures = 0;
                self.backoff.reset();
            }
            Some(reason) => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.last_error = Some(reason.clone());
                tracing::warn!(
                    project = %self.config.project,
                    consecutive_failures = self.consecutive_failures,
                    staleness_seconds = self.staleness(now),
                    error = %reason,
                    "Secrets Manager did not answer every read; keeping the last good values"
                );
            }
        }
        Refresh {
            events,
            total: names.len(),
            found,
            first_error,
        }
    }

    /// The developer's credentials or why there are none; None for a developer
    /// not in the config or not read yet.
    pub fn get(&self, developer: &str) -> Option<&DeveloperSecrets> {
        self.records.get(developer).map(|r| &r.outcome)
    }

    /// The argon2id hash for `HASHED_PASSWORD`. Hashed once per password version;
    /// later calls return the cached string (memory only).
    pub fn password_hash(&mut self, developer: &str) -> Result<String, SecretsError> {
        let creds = match self.records.get(developer).map(|r| &r.outcome) {
            Some(DeveloperSecrets::Ready(c)) => c,
            Some(DeveloperSecrets::Failed { reason }) => {
                return Err(SecretsError::NotReady {
                    developer: developer.to_string(),
                    reason: reason.clone(),
                });
            }
            None => {
                return Err(SecretsError::NotReady {
                    developer: developer.to_string(),
                    reason: "its secrets have not been read (not in the config, or no poll yet)"
                        .to_string(),
                });
            }
        };
        if let Some((version, hash)) = self.hashes.get(developer)
            && *version == creds.password_version
        {
            return Ok(hash.clone());
        }
        let hash = hash_password(&creds.password).map_err(|source| SecretsError::Credential {
            developer: developer.to_string(),
            source,
        })?;
        tracing::debug!(
            developer,
            password_version = short(&creds.password_version),
            "password hashed (argon2id)"
        );
        self.hashes.insert(
            developer.to_string(),
            (creds.password_version.clone(), hash.clone()),
        );
        Ok(hash)
    }

    /// Developers whose current password has no cached hash yet, with what to
    /// hash. Hashing is slow by design: the daemon runs these on a blocking thread,
    /// one at a time, and hands the results back with [`insert_hash`](Self::insert_hash).
    pub fn hashes_needed(&self) -> Vec<(String, String, Secret)> {
        self.records
            .iter()
            .filter_map(|(dev, r)| match &r.outcome {
                DeveloperSecrets::Ready(c)
                    if self.hashes.get(dev).map(|(v, _)| v) != Some(&c.password_version) =>
                {
                    Some((dev.clone(), c.password_version.clone(), c.password.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// Caches a hash made elsewhere for `version` of the developer's password.
    pub fn insert_hash(&mut self, developer: &str, version: &str, hash: String) {
        self.hashes
            .insert(developer.to_string(), (version.to_string(), hash));
    }

    /// When the oldest unapplied rotation of this developer was seen.
    pub fn pending_since(&self, developer: &str) -> Option<SystemTime> {
        self.records
            .get(developer)
            .and_then(|r| r.pending.as_ref())
            .map(|p| p.since)
    }

    /// The apply decision for the developer's pending rotation under the
    /// configured policy; None when nothing is pending.
    pub fn decide_for(
        &self,
        developer: &str,
        now: SystemTime,
        idle: Option<bool>,
    ) -> Option<ApplyDecision> {
        let since = self.pending_since(developer)?;
        Some(decide(
            self.config.secrets.apply,
            self.config.secrets.max_delay,
            since,
            now,
            idle,
        ))
    }

    /// The reconciler (re)created the developer's container with `applied`. Clears
    /// the pending rotation unless the credentials moved on again meanwhile.
    pub fn mark_applied(&mut self, developer: &str, applied: &Credentials) {
        let Some(record) = self.records.get_mut(developer) else {
            return;
        };
        let current = match &record.outcome {
            DeveloperSecrets::Ready(c) => c,
            DeveloperSecrets::Failed { .. } => return,
        };
        // Only password rotations are pending (a key reaches the container by file).
        if current.password_version == applied.password_version {
            record.pending = None;
        }
    }

    /// What the developer's Claude key file now holds: the key version written
    /// (None: no key, the file is absent), or why it could not be written. Status
    /// shows it; a new or cleared failure is logged once.
    pub fn record_key_file(&mut self, developer: &str, outcome: Result<Option<String>, String>) {
        let before = self.key_files.get(developer);
        match (&outcome, before) {
            (Err(e), Some(Err(b))) if e == b => {}
            (Err(e), _) => {
                tracing::error!(developer, error = %e, "cannot write the Claude API key file");
            }
            (Ok(_), Some(Err(_))) => tracing::info!(developer, "Claude API key file written again"),
            (Ok(_), _) => {}
        }
        self.key_files.insert(developer.to_string(), outcome);
    }

    /// How long to wait before the next poll: the poll interval, or a jittered,
    /// growing delay (capped by the interval) while polls keep failing.
    pub fn next_poll_in(&mut self) -> Duration {
        let interval = self.config.secrets.poll_interval;
        if self.consecutive_failures == 0 {
            interval
        } else {
            self.backoff.next_delay().min(interval)
        }
    }

    /// The agent's view, for `csagent status`.
    pub fn status(&self) -> SecretsStatus {
        let now = SystemTime::now();
        let developers = self
            .records
            .iter()
            .map(|(name, r)| {
                let creds = r.credentials();
                let key_file = self.key_files.get(name);
                let error = match &r.outcome {
                    DeveloperSecrets::Failed { reason } => Some(reason.clone()),
                    DeveloperSecrets::Ready(_) if r.errors.is_empty() => None,
                    DeveloperSecrets::Ready(_) => Some(r.errors.join("; ")),
                };
                let status = DeveloperSecretsStatus {
                    ready: creds.is_some(),
                    password_version: creds.map(|c| c.password_version.clone()),
                    password_age_secs: r.password_created.map(|t| secs_between(t, now)),
                    claude_key: r.claude_key_state,
                    claude_key_version: creds.and_then(|c| c.claude_key_version.clone()),
                    claude_key_file_version: key_file
                        .and_then(|k| k.as_ref().ok().cloned())
                        .flatten(),
                    claude_key_file_error: key_file.and_then(|k| k.as_ref().err().cloned()),
                    error,
                    stale_secs: creds.map(|c| secs_between(c.fetched_at, now)),
                    pending_rotation: r.pending.as_ref().map(|p| PendingRotation {
                        which: p.kinds.iter().copied().collect(),
                        seen_at: humantime::format_rfc3339_seconds(p.since).to_string(),
                        waiting_secs: secs_between(p.since, now),
                    }),
                };
                (name.clone(), status)
            })
            .collect();
        SecretsStatus {
            developers,
            staleness_seconds: self.staleness(now),
            last_success: self
                .last_success
                .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            last_error: self.last_error.clone(),
            consecutive_failures: self.consecutive_failures,
            polls: self.polls,
            poll_interval_secs: self.config.secrets.poll_interval.as_secs(),
            api_calls: self.fetcher.calls,
            batch_supported: self.fetcher.batch_supported(),
        }
    }

    /// A reloaded config: developers no longer listed are forgotten (values and
    /// hashes dropped); new ones are read by the next poll, without an event.
    pub fn set_config(&mut self, config: &Config) {
        let keep: BTreeSet<&str> = config.developers.iter().map(|d| d.name.as_str()).collect();
        let removed: Vec<String> = self
            .records
            .keys()
            .filter(|d| !keep.contains(d.as_str()))
            .cloned()
            .collect();
        for developer in &removed {
            tracing::info!(developer = %developer, "developer left the config; forgetting its credentials");
            self.records.remove(developer);
        }
        self.hashes.retain(|d, _| keep.contains(d.as_str()));
        self.key_files.retain(|d, _| keep.contains(d.as_str()));
        self.fetcher.set_project(&config.project);
        self.config = config.clone();
    }

    fn staleness(&self, now: SystemTime) -> Option<u64> {
        self.last_success.map(|t| secs_between(t, now))
    }
}

fn secs_between(earlier: SystemTime, later: SystemTime) -> u64 {
    later
        .duration_since(earlier)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
