//! Rotation watch: what one fetch means for one developer, compared with what we
//! had — new credentials, kept ones (with the error that stopped a refresh), and
//! the rotation events for exactly the secrets whose AWSCURRENT version moved.

use std::collections::BTreeSet;
use std::fmt;
use std::time::SystemTime;

use serde::Serialize;

use super::fetch::FetchOutcome;
use super::{Credentials, DeveloperSecrets};
use crate::Secret;
use crate::retry::Class;

/// The value a Claude API key secret holds until someone puts a real key in it
/// (what the infra template creates).
pub const PLACEHOLDER_KEY: &str = csagent_contract::CLAUDE_KEY_PLACEHOLDER;

/// Which of a developer's two secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretKind {
    Password,
    ClaudeKey,
}

impl SecretKind {
    /// Whether a rotation of this secret takes a new container: the password is in
    /// code-server's environment (`HASHED_PASSWORD`); the Claude key is a file the
    /// running container reads again.
    pub fn needs_recreate(self) -> bool {
        match self {
            SecretKind::Password => true,
            SecretKind::ClaudeKey => false,
        }
    }
}

impl fmt::Display for SecretKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SecretKind::Password => "password",
            SecretKind::ClaudeKey => "claude_key",
        })
    }
}

/// AWSCURRENT of one developer's secret moved to a new version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationEvent {
    pub developer: String,
    pub which: SecretKind,
    /// None when there was no usable value before (e.g. the password secret was
    /// missing and now exists).
    pub old_version: Option<String>,
    pub new_version: String,
    pub seen_at: SystemTime,
}

/// What the developer's Claude API key secret holds, as status shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClaudeKeyState {
    /// A real key: the container gets it.
    Set,
    /// `REPLACE_WITH_ACTUAL_KEY` or empty: the container starts without a key.
    Placeholder,
    /// No such secret (or it cannot be read): the container starts without a key.
    Missing,
}

impl fmt::Display for ClaudeKeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClaudeKeyState::Set => "set",
            ClaudeKeyState::Placeholder => "placeholder",
            ClaudeKeyState::Missing => "missing",
        })
    }
}

/// Whether a Claude key value means "no key".
pub fn is_placeholder(value: &str) -> bool {
    let v = value.trim();
    v.is_empty() || v == PLACEHOLDER_KEY
}

/// Rotations seen but not yet applied to the developer's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    pub kinds: BTreeSet<SecretKind>,
    /// The first unapplied rotation: `max_delay` counts from here.
    pub since: SystemTime,
}

/// Everything known about one developer's secrets.
#[derive(Debug, Clone)]
pub(crate) struct DevRecord {
    pub outcome: DeveloperSecrets,
    /// When the current password version was created in Secrets Manager.
    pub password_created: Option<SystemTime>,
    pub claude_key_state: ClaudeKeyState,
    /// Problems in the last fetch (names and error codes, never values).
    pub errors: Vec<String>,
    pub pending: Option<Pending>,
}

impl DevRecord {
    pub fn credentials(&self) -> Option<&Credentials> {
        match &self.outcome {
            DeveloperSecrets::Ready(c) => Some(c),
            DeveloperSecrets::Failed { .. } => None,
        }
    }
}

/// One developer's part of one fetch.
pub(crate) struct Observed<'a> {
    pub developer: &'a str,
    pub password_name: &'a str,
    pub key_name: &'a str,
    pub password: FetchOutcome,
    pub key: FetchOutcome,
    pub now: SystemTime,
}

/// The developer's new record and the rotations it reveals. `prev` is None the
/// first time a developer is seen: that is not a rotation.
///
/// Rules: a value read now wins. When the password cannot be read (transient or
/// not), a developer who had one keeps it — an outage or a mistaken deletion must
/// not lock anyone out — and the error is reported; one who never had one is
/// `Failed`. A Claude key that does not exist is `Missing` (deleting the secret
/// takes the key away); one that cannot be read keeps the last good key.
pub(crate) fn update(prev: Option<&DevRecord>, o: Observed<'_>) -> (DevRecord, Vec<RotationEvent>) {
    let prev_creds = prev.and_then(DevRecord::credentials);
    let mut errors: Vec<String> = Vec::new();
    let mut transient = false;

    let password = match o.password {
        FetchOutcome::Found(v) if v.value.is_empty() => Err((
            Class::Permanent,
            format!("password secret {} is empty", o.password_name),
        )),
        FetchOutcome::Found(v) => Ok(v),
        FetchOutcome::NotFound(message) => Err((
            Class::Permanent,
            with_detail(
                format!("password secret {} does not exist", o.password_name),
                &message,
            ),
        )),
        FetchOutcome::Failed { class, reason } => Err((
            class,
            format!(
                "password secret {} cannot be read: {reason}",
                o.password_name
            ),
        )),
    };
    let password: Option<(Secret, String, Option<SystemTime>)> = match password {
        Ok(v) => Some((v.value, v.version, v.created)),
        Err((class, reason)) => {
            transient |= class == Class::Transient;
            errors.push(reason);
            prev_creds.map(|c| {
                (
                    c.password.clone(),
                    c.password_version.clone(),
                    prev.and_then(|p| p.password_created),
                )
            })
        }
    };

    let (claude_key, claude_key_version, claude_key_state) = match o.key {
        FetchOutcome::Found(v) if is_placeholder(v.value.expose()) => {
            (None, Some(v.version), ClaudeKeyState::Placeholder)
        }
        FetchOutcome::Found(v) => (
            Some(Secret::new(v.value.expose().trim())),
            Some(v.version),
            ClaudeKeyState::Set,
        ),
        FetchOutcome::NotFound(_) => (None, None, ClaudeKeyState::Missing),
        FetchOutcome::Failed { class, reason } => {
            transient |= class == Class::Transient;
            errors.push(format!(
                "Claude API key secret {} cannot be read: {reason}",
                o.key_name
            ));
            match (prev_creds, prev) {
                (Some(c), Some(p)) => (
                    c.claude_key.clone(),
                    c.claude_key_version.clone(),
                    p.claude_key_state,
                ),
                _ => (None, None, ClaudeKeyState::Missing),
            }
        }
    };

    let Some((password, password_version, password_created)) = password else {
        let reason = errors
            .first()
            .cloned()
            .unwrap_or_else(|| "password secret cannot be read".to_string());
        let record = DevRecord {
            outcome: DeveloperSecrets::Failed { reason },
            password_created: None,
            claude_key_state,
            errors,
            pending: None,
        };
        return (record, Vec::new());
    };

    let mut events = Vec::new();
    if prev.is_some() {
        let old = prev_creds.map(|c| c.password_version.clone());
        if old.as_deref() != Some(password_version.as_str()) {
            events.push(RotationEvent {
                developer: o.developer.to_string(),
                which: SecretKind::Password,
                old_version: old,
                new_version: password_version.clone(),
                seen_at: o.now,
            });
        }
        // Key changes matter only to a developer who already had credentials; one
        // who just became ready gets everything through the password event.
        if let (Some(c), Some(new)) = (prev_creds, &claude_key_version)
            && c.claude_key_version.as_ref() != Some(new)
        {
            events.push(RotationEvent {
                developer: o.developer.to_string(),
                which: SecretKind::ClaudeKey,
                old_version: c.claude_key_version.clone(),
                new_version: new.clone(),
                seen_at: o.now,
            });
        }
    }

    // Only a password rotation waits for the container to be recreated (policy
    // `immediate` or `when-idle`). A new Claude key reaches the running container
    // through its key file at once: Claude Code reads it through its apiKeyHelper.
    let mut pending = prev.and_then(|p| p.pending.clone());
    let recreating: Vec<SecretKind> = events
        .iter()
        .map(|e| e.which)
        .filter(|k| k.needs_recreate())
        .collect();
    if !recreating.is_empty() {
        let p = pending.get_or_insert_with(|| Pending {
            kinds: BTreeSet::new(),
            since: o.now,
        });
        p.kinds.extend(recreating);
    }

    let fetched_at = if transient {
        prev_creds.map(|c| c.fetched_at).unwrap_or(o.now)
    } else {
        o.now
    };
    let record = DevRecord {
        outcome: DeveloperSecrets::Ready(Credentials {
            password,
            password_version,
            claude_key,
            claude_key_version,
            fetched_at,
        }),
        password_created,
        claude_key_state,
        errors,
        pending,
    };
    (record, events)
}

fn with_detail(reason: String, detail: &str) -> String {
    if detail.is_empty() {
        reason
    } else {
        format!("{reason} ({detail})")
    }
}

/// The first 8 characters of a version id: enough to tell versions apart in logs.
pub fn short(version: &str) -> &str {
    version.get(..8).unwrap_or(version)
}

/// Logs what changed for one developer: its state on the first read, then only
/// new or cleared problems (so an outage is not repeated every poll).
pub(crate) fn log_changes(
    developer: &str,
    prev: Option<&DevRecord>,
    now: &DevRecord,
    initial: bool,
) {
    match (&now.outcome, prev.map(|p| &p.outcome)) {
        (DeveloperSecrets::Failed { reason }, prev_outcome) => {
            let same =
                matches!(prev_outcome, Some(DeveloperSecrets::Failed { reason: r }) if r == reason);
            if !same {
                tracing::warn!(developer, reason = %reason, "developer has no credentials; its container will not be started");
            }
        }
        (DeveloperSecrets::Ready(c), prev_outcome) => {
            if initial || !matches!(prev_outcome, Some(DeveloperSecrets::Ready(_))) {
                tracing::info!(
                    developer,
                    password_version = short(&c.password_version),
                    claude_key = %now.claude_key_state,
                    claude_key_version = c.claude_key_version.as_deref().map(short).unwrap_or("none"),
                    "developer credentials ready"
                );
            }
            let before: &[String] = prev.map(|p| p.errors.as_slice()).unwrap_or(&[]);
            for e in now.errors.iter().filter(|e| !before.contains(e)) {
                tracing::warn!(developer, error = %e, "keeping the last good credentials");
            }
            if now.errors.is_empty() && !before.is_empty() {
                tracing::info!(developer, "developer secrets readable again");
            }
        }
    }
    let key_before = prev.map(|p| p.claude_key_state);
    if key_before != Some(now.claude_key_state) && now.claude_key_state != ClaudeKeyState::Set {
        tracing::warn!(
            developer,
            claude_key = %now.claude_key_state,
            "no Claude API key: the container runs without one until a real key is stored"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::fetch::SecretValue;
    use super::*;

    fn found(value: &str, version: &str) -> FetchOutcome {
        FetchOutcome::Found(SecretValue {
            value: Secret::new(value),
            version: version.to_string(),
            created: None,
        })
    }

    fn transient() -> FetchOutcome {
        FetchOutcome::Failed {
            class: Class::Transient,
            reason: "dispatch failure: connection refused".to_string(),
        }
    }

    fn observe(
        prev: Option<&DevRecord>,
        password: FetchOutcome,
        key: FetchOutcome,
        at: u64,
    ) -> (DevRecord, Vec<RotationEvent>) {
        update(
            prev,
            Observed {
                developer: "dev1",
                password_name: "p/dev1/password",
                key_name: "p/dev1/claude-api-key",
                password,
                key,
                now: SystemTime::UNIX_EPOCH + Duration::from_secs(at),
            },
        )
    }

    fn creds(r: &DevRecord) -> &Credentials {
        r.credentials().expect("ready")
    }

    #[test]
    fn first_sight_is_not_a_rotation() {
        let (r, ev) = observe(None, found("pw1", "v1"), found("sk-1", "k1"), 1);
        assert!(ev.is_empty());
        assert_eq!(creds(&r).password.expose(), "pw1");
        assert_eq!(
            creds(&r).claude_key.as_ref().map(Secret::expose),
            Some("sk-1")
        );
        assert_eq!(r.claude_key_state, ClaudeKeyState::Set);
        assert!(r.pending.is_none());
    }

    #[test]
    fn version_change_is_one_event_and_pending_keeps_first_time() {
        let (r1, _) = observe(None, found("pw1", "v1"), found("sk-1", "k1"), 1);
        let (r2, ev) = observe(Some(&r1), found("pw1", "v1"), found("sk-1", "k1"), 2);
        assert!(ev.is_empty(), "same versions: nothing happened");
        let (r3, ev) = observe(Some(&r2), found("pw2", "v2"), found("sk-1", "k1"), 3);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].which, SecretKind::Password);
        assert_eq!(ev[0].old_version.as_deref(), Some("v1"));
        assert_eq!(ev[0].new_version, "v2");
        let (r4, ev) = observe(Some(&r3), found("pw2", "v2"), found("sk-2", "k2"), 4);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].which, SecretKind::ClaudeKey);
        let p = r4.pending.expect("pending");
        assert_eq!(
            p.kinds,
            BTreeSet::from([SecretKind::Password]),
            "a key rotation needs no recreation: it is not pending"
        );
        assert_eq!(p.since, SystemTime::UNIX_EPOCH + Duration::from_secs(3));
    }

    #[test]
    fn a_key_rotation_alone_is_seen_but_never_pending() {
        let (r1, _) = observe(None, found("pw1", "v1"), found("sk-1", "k1"), 1);
        let (r2, ev) = observe(Some(&r1), found("pw1", "v1"), found("sk-2", "k2"), 2);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].which, SecretKind::ClaudeKey);
        assert_eq!(ev[0].new_version, "k2");
        assert!(r2.pending.is_none(), "nothing waits for a recreation");
        let c = creds(&r2);
        assert_eq!(c.claude_key.as_ref().map(Secret::expose), Some("sk-2"));
        assert_eq!(c.claude_key_version.as_deref(), Some("k2"));
        assert_eq!(c.password_version, "v1");
    }

    #[test]
    fn transient_errors_keep_last_good_values() {
        let (r1, _) = observe(None, found("pw1", "v1"), found("sk-1", "k1"), 1);
        let (r2, ev) = observe(Some(&r1), transient(), transient(), 50);
        assert!(ev.is_empty());
        let c = creds(&r2);
        assert_eq!(c.password.expose(), "pw1");
        assert_eq!(c.claude_key.as_ref().map(Secret::expose), Some("sk-1"));
        assert_eq!(
            c.fetched_at,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1)
        );
        assert_eq!(r2.errors.len(), 2);
        assert!(r2.errors[0].contains("connection refused"));
    }

    #[test]
    fn missing_password_fails_only_without_a_previous_value() {
        let (r, ev) = observe(
            None,
            FetchOutcome::NotFound(String::new()),
            found("sk", "k1"),
            1,
        );
        assert!(ev.is_empty());
        match &r.outcome {
            DeveloperSecrets::Failed { reason } => {
                assert_eq!(reason, "password secret p/dev1/password does not exist")
            }
            other => panic!("{other:?}"),
        }
        // It appears: ready, and an event with no old version.
        let (r2, ev) = observe(Some(&r), found("pw", "v1"), found("sk", "k1"), 2);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].old_version, None);
        assert!(r2.credentials().is_some());
        // Deleted again: the developer keeps working with the last password.
        let (r3, ev) = observe(
            Some(&r2),
            FetchOutcome::NotFound(String::new()),
            found("sk", "k1"),
            3,
        );
        assert!(ev.is_empty());
        assert_eq!(creds(&r3).password.expose(), "pw");
        assert_eq!(r3.errors.len(), 1);
    }

    #[test]
    fn placeholder_empty_and_missing_keys() {
        for (value, state) in [
            (PLACEHOLDER_KEY, ClaudeKeyState::Placeholder),
            ("", ClaudeKeyState::Placeholder),
            ("  \n", ClaudeKeyState::Placeholder),
            (" sk-ant-x\n", ClaudeKeyState::Set),
        ] {
            let (r, _) = observe(None, found("pw", "v1"), found(value, "k1"), 1);
            assert_eq!(r.claude_key_state, state, "{value:?}");
            let key = creds(&r).claude_key.as_ref().map(Secret::expose);
            match state {
                ClaudeKeyState::Set => assert_eq!(key, Some("sk-ant-x")),
                _ => assert_eq!(key, None),
            }
        }
        let (r, _) = observe(
            None,
            found("pw", "v1"),
            FetchOutcome::NotFound(String::new()),
            1,
        );
        assert_eq!(r.claude_key_state, ClaudeKeyState::Missing);
        assert_eq!(creds(&r).claude_key_version, None);
        // Placeholder replaced by a real key: one ClaudeKey event.
        let (p, _) = observe(None, found("pw", "v1"), found(PLACEHOLDER_KEY, "k1"), 1);
        let (_, ev) = observe(Some(&p), found("pw", "v1"), found("sk-real", "k2"), 2);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].which, SecretKind::ClaudeKey);
        assert_eq!(ev[0].old_version.as_deref(), Some("k1"));
    }

    #[test]
    fn empty_password_is_refused() {
        let (r, _) = observe(
            None,
            found("", "v1"),
            FetchOutcome::NotFound(String::new()),
            1,
        );
        assert!(matches!(r.outcome, DeveloperSecrets::Failed { .. }));
    }

    #[test]
    fn short_versions() {
        assert_eq!(short("0123456789abcdef"), "01234567");
        assert_eq!(short("abc"), "abc");
    }
}
