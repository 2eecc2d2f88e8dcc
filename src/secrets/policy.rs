//! When a seen rotation is applied to a developer's running container.
//!
//! `secrets.apply = "immediate"` applies at once. `"when-idle"` waits until the
//! developer's code-server says it is idle (`GET /healthz` → `"status":"expired"`,
//! i.e. no recent activity) so nobody is logged out mid-work, but never longer than
//! `secrets.max_delay` after the rotation was first seen. An unanswered `/healthz`
//! counts as busy: a container that is down gets the current credentials anyway
//! when the reconciler recreates it, so waiting only affects running ones.

use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::config::ApplyPolicy;

/// How long the idle probe waits for code-server.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// `/healthz` answers are tiny; a container is not trusted to send more than this.
const MAX_HEALTHZ_BYTES: usize = 16 * 1024;

/// What to do with a pending rotation now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyDecision {
    /// Recreate the container with the new credentials.
    ApplyNow,
    /// Ask again later; `until` is the deadline after which it is applied anyway.
    Wait { until: SystemTime },
}

/// The decision for a rotation first seen at `rotation_seen`. `idle` is what
/// [`is_idle`] said (None: no answer).
pub fn decide(
    policy: ApplyPolicy,
    max_delay: Duration,
    rotation_seen: SystemTime,
    now: SystemTime,
    idle: Option<bool>,
) -> ApplyDecision {
    match policy {
        ApplyPolicy::Immediate => ApplyDecision::ApplyNow,
        ApplyPolicy::WhenIdle => {
            // A max_delay too large for SystemTime means "no deadline": a century does.
            let deadline = rotation_seen
                .checked_add(max_delay)
                .or_else(|| rotation_seen.checked_add(Duration::from_secs(100 * 365 * 86_400)))
                .unwrap_or(rotation_seen);
            if now >= deadline || idle == Some(true) {
                ApplyDecision::ApplyNow
            } else {
                ApplyDecision::Wait { until: deadline }
            }
        }
    }
}

#[derive(Deserialize)]
struct Health {
    status: String,
}

/// Asks the code-server published on `127.0.0.1:<port>` whether it is idle:
/// `Some(true)` for `"expired"`, `Some(false)` for any other status, None when it
/// does not answer within a few seconds or answers with something else.
pub async fn is_idle(port: u16) -> Option<bool> {
    let client = Client::builder(TokioExecutor::new()).build_http::<String>();
    let uri = format!("http://127.0.0.1:{port}/healthz").parse().ok()?;
    let probe = async {
        let response = client.get(uri).await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body = Limited::new(response.into_body(), MAX_HEALTHZ_BYTES)
            .collect()
            .await
            .ok()?
            .to_bytes();
        let health: Health = serde_json::from_slice(&body).ok()?;
        Some(health.status == "expired")
    };
    tokio::time::timeout(PROBE_TIMEOUT, probe)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn immediate_applies_at_once() {
        for idle in [None, Some(false), Some(true)] {
            assert_eq!(
                decide(ApplyPolicy::Immediate, HOUR, t(100), t(100), idle),
                ApplyDecision::ApplyNow
            );
        }
    }

    #[test]
    fn when_idle_waits_for_idle_or_deadline() {
        let p = ApplyPolicy::WhenIdle;
        let until = t(100 + 3600);
        assert_eq!(
            decide(p, HOUR, t(100), t(200), Some(false)),
            ApplyDecision::Wait { until }
        );
        assert_eq!(
            decide(p, HOUR, t(100), t(200), None),
            ApplyDecision::Wait { until },
            "no answer counts as busy"
        );
        assert_eq!(
            decide(p, HOUR, t(100), t(200), Some(true)),
            ApplyDecision::ApplyNow
        );
        assert_eq!(
            decide(p, HOUR, t(100), until, Some(false)),
            ApplyDecision::ApplyNow,
            "deadline reached"
        );
        assert_eq!(
            decide(p, HOUR, t(100), t(99_999), None),
            ApplyDecision::ApplyNow
        );
        assert_eq!(
            decide(p, Duration::ZERO, t(100), t(100), Some(false)),
            ApplyDecision::ApplyNow
        );
        assert!(matches!(
            decide(p, Duration::MAX, t(100), t(200), Some(false)),
            ApplyDecision::Wait { .. }
        ));
    }

    #[tokio::test]
    async fn closed_port_is_none() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        assert_eq!(is_idle(port).await, None);
    }
}
