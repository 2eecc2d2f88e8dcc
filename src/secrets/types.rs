//! The values the secrets module hands out: a developer's credentials, why a
//! developer cannot start, and what `csagent status` shows (never a value).

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;

use super::{ApiCalls, ClaudeKeyState, CredentialError, Secret, SecretKind};

/// A developer's current credentials. `Debug` shows `***` for the values.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub password: Secret,
    pub password_version: String,
    /// None when the key is a placeholder, empty, or its secret is missing.
    pub claude_key: Option<Secret>,
    /// The key secret's AWSCURRENT version (also for a placeholder).
    pub claude_key_version: Option<String>,
    /// When these values were last confirmed current by Secrets Manager.
    pub fetched_at: SystemTime,
}

/// Whether a developer can be started.
#[derive(Debug, Clone)]
pub enum DeveloperSecrets {
    Ready(Credentials),
    /// The password secret is missing or unreadable and there is no earlier value.
    /// `reason` names the secret and the error, never a value.
    Failed {
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error(
        "no developer secret could be read from Secrets Manager ({total} secrets tried): {reason}"
    )]
    NothingFetched { total: usize, reason: String },
    #[error("developer {developer} has no credentials: {reason}")]
    NotReady { developer: String, reason: String },
    #[error("developer {developer}: {source}")]
    Credential {
        developer: String,
        source: CredentialError,
    },
}

/// What `csagent status` shows about secrets. Holds no value.
#[derive(Debug, Clone, Serialize)]
pub struct SecretsStatus {
    pub developers: BTreeMap<String, DeveloperSecretsStatus>,
    /// Seconds since the last poll in which every call succeeded (None: never).
    pub staleness_seconds: Option<u64>,
    /// RFC 3339 time of that poll.
    pub last_success: Option<String>,
    /// The error that made the last poll incomplete, if it was.
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    pub polls: u64,
    pub poll_interval_secs: u64,
    pub api_calls: ApiCalls,
    /// None until the first call; false after AccessDenied (GetSecretValue fallback).
    pub batch_supported: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeveloperSecretsStatus {
    /// Credentials are available: the container can run.
    pub ready: bool,
    pub password_version: Option<String>,
    /// Age of the current password version (since Secrets Manager created it).
    pub password_age_secs: Option<u64>,
    pub claude_key: ClaudeKeyState,
    /// The key secret's AWSCURRENT version, as last read.
    pub claude_key_version: Option<String>,
    /// The key version in the developer's key file: what Claude Code in the running
    /// container gets from its apiKeyHelper (None: no key, or not written yet).
    pub claude_key_file_version: Option<String>,
    /// Why the key file could not be written (the container keeps the file it had).
    pub claude_key_file_error: Option<String>,
    /// Why the developer is not ready, or what went wrong in the last poll.
    pub error: Option<String>,
    /// Seconds since the values were last confirmed current.
    pub stale_secs: Option<u64>,
    pub pending_rotation: Option<PendingRotation>,
}

/// A password rotation seen but not yet applied to the container (a Claude key
/// rotation never waits: its key file is rewritten on the poll that sees it).
#[derive(Debug, Clone, Serialize)]
pub struct PendingRotation {
    pub which: Vec<SecretKind>,
    pub seen_at: String,
    pub waiting_secs: u64,
}
