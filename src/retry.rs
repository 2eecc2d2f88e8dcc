//! The one retry policy: a classifier decides what is worth retrying, and a
//! jittered exponential backoff decides when.

use std::future::Future;
use std::time::Duration;

use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};

/// Whether an error is worth another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Throttling, 5xx, timeouts, connection failures: try again later.
    Transient,
    /// Bad request, access denied, not found: retrying will not help.
    Permanent,
}

/// Error codes AWS services use for throttling or their own faults. Some (for
/// example CloudWatch Logs' ThrottlingException) are not modelled, so match codes.
const TRANSIENT_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "LimitExceededException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalFailure",
    "InternalServiceError",
    "InternalServiceErrorException",
    "InternalError",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// Classifies any AWS SDK error.
pub fn classify_aws<E, R>(err: &SdkError<E, R>) -> Class
where
    E: ProvideErrorMetadata,
    R: std::fmt::Debug,
{
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Class::Transient
        }
        SdkError::ServiceError(se) => {
            if se
                .err()
                .code()
                .is_some_and(|c| TRANSIENT_CODES.contains(&c))
            {
                return Class::Transient;
            }
            let raw = format!("{:?}", se.raw());
            // 5xx without a known code is still the service's fault.
            if raw.contains("StatusCode(5") || raw.contains("status: 5") {
                Class::Transient
            } else {
                Class::Permanent
            }
        }
        _ => Class::Permanent,
    }
}

/// Classifies a Docker Engine API error.
pub fn classify_docker(err: &bollard::errors::Error) -> Class {
    use bollard::errors::Error as E;
    match err {
        // dockerd passes a registry's refusal on as a 500: not its own fault.
        e if registry_refused(e) => Class::Permanent,
        E::DockerResponseServerError { status_code, .. } if *status_code >= 500 => Class::Transient,
        E::DockerResponseServerError { .. } => Class::Permanent,
        E::JsonDataError { .. } | E::JsonSerdeError { .. } => Class::Permanent,
        // Socket gone, timeouts, hyper errors: dockerd restarting.
        _ => Class::Transient,
    }
}

/// Classifies a local I/O error (state files, checkpoints): a full disk or
/// quota, an interrupted or timed-out call, a short lack of memory may pass;
/// anything else (permissions, a missing directory, a read-only filesystem)
/// needs a person.
pub fn classify_io(err: &std::io::Error) -> Class {
    use std::io::ErrorKind as K;
    match err.kind() {
        K::StorageFull
        | K::QuotaExceeded
        | K::Interrupted
        | K::WouldBlock
        | K::TimedOut
        | K::OutOfMemory => Class::Transient,
        _ => Class::Permanent,
    }
}

/// Whether a pull failed because the registry refused the credentials (or their
/// absence). dockerd reports this as a 500 or inside the pull stream, with the
/// registry's words in the message.
pub fn registry_refused(err: &bollard::errors::Error) -> bool {
    use bollard::errors::Error as E;
    let message = match err {
        E::DockerResponseServerError { message, .. } => message,
        E::DockerStreamError { error } => error,
        _ => return false,
    };
    let m = message.to_ascii_lowercase();
    [
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
        "denied",
    ]
    .iter()
    .any(|w| m.contains(w))
}

/// One line for an error and its causes ("dispatch failure: io error: connection
/// refused"), for status and logs. Unlike the SDK's `DisplayErrorContext` it
/// leaves out the Debug dump of the raw response, and repeats no cause.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// Jittered exponential backoff ("equal jitter": half fixed, half random, so the
/// delay grows yet many agents or tasks do not retry in lockstep).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            attempt: 0,
        }
    }

    /// Defaults for calls to AWS and Docker: 200ms doubling up to 30s.
    pub fn standard() -> Backoff {
        Backoff::new(Duration::from_millis(200), Duration::from_secs(30))
    }

    /// The next delay; each call doubles the ceiling up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = exp / 2;
        let jitter_ms = half.as_millis() as u64;
        let extra = if jitter_ms == 0 {
            0
        } else {
            rand::random_range(0..=jitter_ms)
        };
        half + Duration::from_millis(extra)
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Back to the initial delay after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Calls `op` until it succeeds, fails permanently, or `max_attempts` were made.
pub async fn retry<T, E, F, Fut>(
    mut backoff: Backoff,
    max_attempts: u32,
    classify: impl Fn(&E) -> Class,
    mut op: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < max_attempts && classify(&e) == Class::Transient => {
                tokio::time::sleep(backoff.next_delay()).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_is_one_line_without_repeats() {
        let inner =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        #[derive(Debug, thiserror::Error)]
        #[error("dispatch failure")]
        struct Outer(#[source] std::io::Error);
        assert_eq!(
            error_chain(&Outer(inner)),
            "dispatch failure: connection refused"
        );
    }

    #[test]
    fn a_full_disk_is_transient_a_denied_write_is_not() {
        let enospc = std::io::Error::from_raw_os_error(28);
        assert_eq!(classify_io(&enospc), Class::Transient);
        let edquot = std::io::Error::from_raw_os_error(122);
        assert_eq!(classify_io(&edquot), Class::Transient);
        let eacces = std::io::Error::from_raw_os_error(13);
        assert_eq!(classify_io(&eacces), Class::Permanent);
    }

    #[test]
    fn a_registry_refusal_is_permanent_other_5xx_transient() {
        use bollard::errors::Error as E;
        let refused = E::DockerResponseServerError {
            status_code: 500,
            message: "Head \"http://127.0.0.1:5000/v2/x/manifests/1\": unauthorized: authentication required".into(),
        };
        assert!(registry_refused(&refused));
        assert_eq!(classify_docker(&refused), Class::Permanent);
        let in_stream = E::DockerStreamError {
            error: "pull access denied for x, repository does not exist".into(),
        };
        assert_eq!(classify_docker(&in_stream), Class::Permanent);
        let down = E::DockerResponseServerError {
            status_code: 500,
            message: "Get \"http://127.0.0.1:5999/v2/\": dial tcp: connection refused".into(),
        };
        assert!(!registry_refused(&down));
        assert_eq!(classify_docker(&down), Class::Transient);
        let missing = E::DockerResponseServerError {
            status_code: 404,
            message: "manifest unknown".into(),
        };
        assert_eq!(classify_docker(&missing), Class::Permanent);
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let d: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(100));
        assert!(d[3] >= Duration::from_millis(400) && d[3] <= Duration::from_millis(800));
        for x in &d[5..] {
            assert!(*x >= Duration::from_millis(500) && *x <= Duration::from_secs(1));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn retries_only_transient_errors() {
        let quick = Backoff::new(Duration::from_millis(1), Duration::from_millis(2));
        let mut calls = 0;
        let r: Result<(), &str> = retry(
            quick.clone(),
            5,
            |_| Class::Transient,
            || {
                calls += 1;
                async { Err("busy") }
            },
        )
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 5);

        let mut calls = 0;
        let r: Result<(), &str> = retry(
            quick.clone(),
            5,
            |_| Class::Permanent,
            || {
                calls += 1;
                async { Err("denied") }
            },
        )
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);

        let mut calls = 0;
        let r = retry(
            quick,
            5,
            |_: &&str| Class::Transient,
            || {
                calls += 1;
                let n = calls;
                async move { if n < 3 { Err("busy") } else { Ok(n) } }
            },
        )
        .await;
        assert_eq!(r, Ok(3));
    }
}
