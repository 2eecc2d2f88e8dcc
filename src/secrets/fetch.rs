//! Reading secret values and their AWSCURRENT version ids from Secrets Manager:
//! BatchGetSecretValue in chunks of [`BATCH_LIMIT`] names, and per-secret
//! GetSecretValue when the caller may not use the batch call.
//!
//! Every request is one HTTP attempt: [`super::SecretsManager::new`] turns the SDK's
//! own retries off, so retries and backoff are ours ([`crate::retry`]) and the
//! counters in [`ApiCalls`] are the requests that really went out.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::primitives::DateTime;
use serde::Serialize;

use crate::Secret;
use crate::retry::{Backoff, Class, classify_aws, retry};

/// Most secrets one BatchGetSecretValue call takes in `SecretIdList`.
pub const BATCH_LIMIT: usize = 20;

/// Attempts per request (the first try included) before a poll gives up on it.
const ATTEMPTS: u32 = 3;

/// Pages of one batch call followed at most (with `SecretIdList` AWS answers in
/// one page; this only guards against a service that keeps sending a token).
const MAX_PAGES: usize = 10;

/// Requests made, by operation. Each is one HTTP attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ApiCalls {
    pub batch_get_secret_value: u64,
    pub get_secret_value: u64,
    /// Requests of either kind that failed as a whole.
    pub failed: u64,
}

impl ApiCalls {
    pub fn total(&self) -> u64 {
        self.batch_get_secret_value + self.get_secret_value
    }
}

/// The AWSCURRENT value of one secret.
#[derive(Debug)]
pub(crate) struct SecretValue {
    pub value: Secret,
    pub version: String,
    /// When this version was created in Secrets Manager.
    pub created: Option<SystemTime>,
}

/// What became of one secret name in one fetch.
#[derive(Debug)]
pub(crate) enum FetchOutcome {
    Found(SecretValue),
    /// The secret does not exist, or has no AWSCURRENT value
    /// (ResourceNotFoundException); the service's message.
    NotFound(String),
    /// Could not be read; `reason` names the error, never a value.
    Failed {
        class: Class,
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BatchMode {
    /// Not tried yet.
    Unknown,
    Supported,
    /// AccessDenied on BatchGetSecretValue: use GetSecretValue per secret.
    Denied,
}

pub(crate) struct Fetcher {
    client: Client,
    project: String,
    mode: BatchMode,
    pub calls: ApiCalls,
    backoff: Backoff,
}

enum BatchResult {
    Done(HashMap<String, FetchOutcome>),
    /// The caller may not call BatchGetSecretValue at all.
    Denied(String),
    /// A permanent error for the call as a whole (not AccessDenied): read this
    /// chunk secret by secret so one bad name cannot hide the others.
    Unusable(String),
    /// Transient failure after our retries.
    Failed(String),
}

impl Fetcher {
    pub fn new(client: Client, project: &str) -> Fetcher {
        Fetcher {
            client,
            project: project.to_string(),
            mode: BatchMode::Unknown,
            calls: ApiCalls::default(),
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(2)),
        }
    }

    /// The project named in log lines (it changes on reload).
    pub fn set_project(&mut self, project: &str) {
        self.project = project.to_string();
    }

    /// `Some(true)` once a batch call worked, `Some(false)` after AccessDenied.
    pub fn batch_supported(&self) -> Option<bool> {
        match self.mode {
            BatchMode::Unknown => None,
            BatchMode::Supported => Some(true),
            BatchMode::Denied => Some(false),
        }
    }

    /// Reads every name; the map has one entry per name.
    pub async fn fetch(&mut self, names: &[String]) -> HashMap<String, FetchOutcome> {
        let mut out = HashMap::with_capacity(names.len());
        for chunk in names.chunks(BATCH_LIMIT) {
            if self.mode != BatchMode::Denied {
                match self.batch(chunk).await {
                    BatchResult::Done(found) => {
                        self.mode = BatchMode::Supported;
                        out.extend(found);
                        continue;
                    }
                    BatchResult::Failed(reason) => {
                        for name in chunk {
                            out.insert(
                                name.clone(),
                                FetchOutcome::Failed {
                                    class: Class::Transient,
                                    reason: reason.clone(),
                                },
                            );
                        }
                        continue;
                    }
                    BatchResult::Denied(reason) => {
                        // Said once: from now on every poll uses GetSecretValue.
                        tracing::warn!(
                            project = %self.project,
                            error = %reason,
                            "BatchGetSecretValue is not allowed for this role; falling back to one GetSecretValue per secret (2 calls per developer per poll). Allow secretsmanager:BatchGetSecretValue to need 1 call per 10 developers."
                        );
                        self.mode = BatchMode::Denied;
                    }
                    BatchResult::Unusable(reason) => {
                        tracing::warn!(
                            project = %self.project,
                            error = %reason,
                            "BatchGetSecretValue failed; reading these secrets one by one this time"
                        );
                    }
                }
            }
            for name in chunk {
                let outcome = self.get_one(name).await;
                out.insert(name.clone(), outcome);
            }
        }
        out
    }

    async fn batch(&mut self, chunk: &[String]) -> BatchResult {
        let mut out: HashMap<String, FetchOutcome> = HashMap::with_capacity(chunk.len());
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let client = &self.client;
            let mut attempts = 0u64;
            let result = retry(self.backoff.clone(), ATTEMPTS, classify_aws, || {
                attempts += 1;
                client
                    .batch_get_secret_value()
                    .set_secret_id_list(Some(chunk.to_vec()))
                    .set_next_token(token.clone())
                    .send()
            })
            .await;
            self.calls.batch_get_secret_value += attempts;
            let page = match result {
                Ok(page) => {
                    self.calls.failed += attempts - 1;
                    page
                }
                Err(e) => {
                    self.calls.failed += attempts;
                    let reason = describe(&e);
                    return match classify_aws(&e) {
                        Class::Transient => BatchResult::Failed(reason),
                        Class::Permanent if is_access_denied(e.code()) => {
                            BatchResult::Denied(reason)
                        }
                        Class::Permanent => BatchResult::Unusable(reason),
                    };
                }
            };
            for entry in page.secret_values() {
                let Some(name) = entry.name() else { continue };
                let outcome = to_outcome(
                    name,
                    entry.version_id(),
                    entry.secret_string(),
                    entry.secret_binary().map(|b| b.as_ref()),
                    entry.created_date(),
                );
                out.insert(name.to_string(), outcome);
            }
            for err in page.errors() {
                let Some(id) = err.secret_id() else { continue };
                let code = err.error_code().unwrap_or("UnknownError");
                let message = err.message().unwrap_or("");
                out.insert(id.to_string(), outcome_for_code(code, message));
            }
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        // A name the answer did not mention at all is a service fault; try again next poll.
        for name in chunk {
            out.entry(name.clone())
                .or_insert_with(|| FetchOutcome::Failed {
                    class: Class::Transient,
                    reason: "BatchGetSecretValue did not mention this secret".to_string(),
                });
        }
        BatchResult::Done(out)
    }

    async fn get_one(&mut self, name: &str) -> FetchOutcome {
        let client = &self.client;
        let mut attempts = 0u64;
        let result = retry(self.backoff.clone(), ATTEMPTS, classify_aws, || {
            attempts += 1;
            client.get_secret_value().secret_id(name).send()
        })
        .await;
        self.calls.get_secret_value += attempts;
        match result {
            Ok(out) => {
                self.calls.failed += attempts - 1;
                to_outcome(
                    name,
                    out.version_id(),
                    out.secret_string(),
                    out.secret_binary().map(|b| b.as_ref()),
                    out.created_date(),
                )
            }
            Err(e) => {
                self.calls.failed += attempts;
                if e.code() == Some("ResourceNotFoundException") {
                    FetchOutcome::NotFound(e.message().unwrap_or_default().to_string())
                } else {
                    FetchOutcome::Failed {
                        class: classify_aws(&e),
                        reason: describe(&e),
                    }
                }
            }
        }
    }
}

fn to_outcome(
    name: &str,
    version: Option<&str>,
    string: Option<&str>,
    binary: Option<&[u8]>,
    created: Option<&DateTime>,
) -> FetchOutcome {
    let permanent = |reason: String| FetchOutcome::Failed {
        class: Class::Permanent,
        reason,
    };
    let Some(version) = version else {
        return permanent(format!("{name}: the answer carried no VersionId"));
    };
    let value = match (string, binary) {
        (Some(s), _) => Secret::new(s),
        (None, Some(b)) => match std::str::from_utf8(b) {
            Ok(s) => Secret::new(s),
            Err(_) => return permanent(format!("{name}: SecretBinary is not UTF-8 text")),
        },
        (None, None) => return permanent(format!("{name}: the secret has no value")),
    };
    FetchOutcome::Found(SecretValue {
        value,
        version: version.to_string(),
        created: created.and_then(|d| SystemTime::try_from(*d).ok()),
    })
}

/// Per-secret error codes inside a BatchGetSecretValue answer.
fn outcome_for_code(code: &str, message: &str) -> FetchOutcome {
    if code == "ResourceNotFoundException" {
        return FetchOutcome::NotFound(message.to_string());
    }
    let class = match code {
        "InternalServiceError" | "InternalServiceErrorException" | "ThrottlingException" => {
            Class::Transient
        }
        _ => Class::Permanent,
    };
    let reason = if message.is_empty() {
        code.to_string()
    } else {
        format!("{code}: {message}")
    };
    FetchOutcome::Failed { class, reason }
}

fn is_access_denied(code: Option<&str>) -> bool {
    matches!(code, Some("AccessDeniedException" | "AccessDenied"))
}

/// One line naming the error: the service's code and message, or the transport
/// failure. Requests carry only secret names, so no value can appear here.
fn describe<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => crate::retry::error_chain(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_error_codes() {
        assert!(matches!(
            outcome_for_code("ResourceNotFoundException", "gone"),
            FetchOutcome::NotFound(m) if m == "gone"
        ));
        match outcome_for_code("AccessDeniedException", "no") {
            FetchOutcome::Failed { class, reason } => {
                assert_eq!(class, Class::Permanent);
                assert_eq!(reason, "AccessDeniedException: no");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            outcome_for_code("InternalServiceError", ""),
            FetchOutcome::Failed {
                class: Class::Transient,
                ..
            }
        ));
    }

    #[test]
    fn values_and_missing_parts() {
        match to_outcome("n", Some("v1"), Some("pw"), None, None) {
            FetchOutcome::Found(v) => {
                assert_eq!(v.value.expose(), "pw");
                assert_eq!(v.version, "v1");
            }
            other => panic!("{other:?}"),
        }
        match to_outcome("n", Some("v1"), None, Some(b"bin"), None) {
            FetchOutcome::Found(v) => assert_eq!(v.value.expose(), "bin"),
            other => panic!("{other:?}"),
        }
        match to_outcome("n", None, Some("pw"), None, None) {
            FetchOutcome::Failed { class, reason } => {
                assert_eq!(class, Class::Permanent);
                assert_eq!(reason, "n: the answer carried no VersionId");
            }
            other => panic!("{other:?}"),
        }
        match to_outcome("n", Some("v"), None, Some(&[0xff, 0xfe]), None) {
            FetchOutcome::Failed { class, .. } => assert_eq!(class, Class::Permanent),
            other => panic!("{other:?}"),
        }
    }
}
