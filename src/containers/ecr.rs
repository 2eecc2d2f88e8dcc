//! ECR pull credentials: `GetAuthorizationToken` with the instance role, decoded
//! into Docker credentials and kept in one cache until shortly before the token
//! expires (ECR tokens last 12 hours). The puller drops the cached token when the
//! registry refuses it ([`EcrTokens::invalidate`]) and asks once more.
//!
//! The token is `base64("AWS:<password>")`; the password never reaches a log.

use std::time::{Duration, SystemTime};

use aws_config::{Region, SdkConfig};
use base64::Engine;
use bollard::auth::DockerCredentials;
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use crate::retry::{Backoff, classify_aws, error_chain, retry};

/// Refresh this long before the token's own expiry, so a pull never starts with
/// a token that lapses halfway.
const MARGIN: Duration = Duration::from_secs(5 * 60);
/// The longest ECR issues a token for; a later `expiresAt` is not believed.
const MAX_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Used when `expiresAt` is absent or already past by our clock (a skewed clock,
/// or an emulator: moto answers 2015-01-01). A refused token is refreshed anyway.
const FALLBACK_LIFETIME: Duration = Duration::from_secs(3600);
/// Longest the token call may take, retries included: the reconciler stamps no
/// progress meanwhile, and the systemd watchdog (120 s) must not fire.
const CALL_TIMEOUT: Duration = Duration::from_secs(45);

#[derive(Debug, thiserror::Error)]
pub enum EcrError {
    #[error(
        "ECR GetAuthorizationToken in {region} failed (the instance role needs ecr:GetAuthorizationToken): {message}"
    )]
    Call { region: String, message: String },
    #[error("ECR GetAuthorizationToken in {region} answered without a usable token: {what}")]
    Malformed { region: String, what: &'static str },
}

/// Credentials for one pull, and whether they were fetched for it (a refused
/// fresh token is not worth asking for again).
#[derive(Clone)]
pub struct PullCredentials {
    pub credentials: DockerCredentials,
    pub fresh: bool,
}

struct Cached {
    region: String,
    username: String,
    password: Zeroizing<String>,
    until: SystemTime,
}

/// The one token cache, shared by every clone of the reconciler.
pub struct EcrTokens {
    sdk: SdkConfig,
    cache: Mutex<Option<Cached>>,
}

impl EcrTokens {
    /// `sdk` carries the agent's region, endpoint and the instance role's credentials.
    pub fn new(sdk: &SdkConfig) -> EcrTokens {
        EcrTokens {
            sdk: sdk.clone(),
            cache: Mutex::new(None),
        }
    }

    /// Credentials for `registry` from a token issued in `region` (None: the SDK
    /// config's region), from the cache while it is valid.
    pub async fn credentials(
        &self,
        region: Option<&str>,
        registry: &str,
    ) -> Result<PullCredentials, EcrError> {
        let region = region
            .map(str::to_string)
            .or_else(|| self.sdk.region().map(|r| r.to_string()))
            .unwrap_or_default();
        // Held across the call: concurrent callers wait for one token, not fetch two.
        let mut cache = self.cache.lock().await;
        let now = SystemTime::now();
        let mut fresh = false;
        if !cache
            .as_ref()
            .is_some_and(|c| c.region == region && now < c.until)
        {
            *cache = Some(self.fetch(&region, now).await?);
            fresh = true;
        }
        let c = cache.as_ref().ok_or_else(|| EcrError::Malformed {
            region: region.clone(),
            what: "no token",
        })?;
        Ok(PullCredentials {
            credentials: DockerCredentials {
                username: Some(c.username.clone()),
                password: Some(c.password.to_string()),
                serveraddress: Some(registry.to_string()),
                ..Default::default()
            },
            fresh,
        })
    }

    /// Forgets the cached token (the registry refused it).
    pub async fn invalidate(&self) {
        *self.cache.lock().await = None;
    }

    async fn fetch(&self, region: &str, now: SystemTime) -> Result<Cached, EcrError> {
        let conf = aws_sdk_ecr::config::Builder::from(&self.sdk)
            .region(Region::new(region.to_string()))
            .build();
        let client = aws_sdk_ecr::Client::from_conf(conf);
        let call = retry(Backoff::standard(), 3, classify_aws, || {
            client.get_authorization_token().send()
        });
        let out = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| EcrError::Call {
                region: region.to_string(),
                message: format!("no answer within {}s", CALL_TIMEOUT.as_secs()),
            })?
            .map_err(|e| EcrError::Call {
                region: region.to_string(),
                message: error_chain(&e),
            })?;
        let malformed = |what| EcrError::Malformed {
            region: region.to_string(),
            what,
        };
        let data = out
            .authorization_data()
            .first()
            .ok_or_else(|| malformed("no authorizationData"))?;
        let token = data
            .authorization_token()
            .ok_or_else(|| malformed("no authorizationToken"))?;
        let (username, password) = decode_token(token).ok_or_else(|| {
            malformed("the authorizationToken is not base64 of \"user:password\"")
        })?;
        let expires = data
            .expires_at()
            .and_then(|t| SystemTime::try_from(*t).ok());
        let until = valid_until(now, expires);
        tracing::info!(
            region,
            valid_for_secs = until.duration_since(now).unwrap_or_default().as_secs(),
            "got an ECR authorization token"
        );
        Ok(Cached {
            region: region.to_string(),
            username,
            password,
            until,
        })
    }
}

/// `base64("user:password")` into its two parts.
fn decode_token(token: &str) -> Option<(String, Zeroizing<String>)> {
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(token.trim())
            .ok()?,
    );
    let text = std::str::from_utf8(&bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    (!user.is_empty() && !password.is_empty())
        .then(|| (user.to_string(), Zeroizing::new(password.to_string())))
}

/// Until when a token that expires at `expires` is used; see the constants.
fn valid_until(now: SystemTime, expires: Option<SystemTime>) -> SystemTime {
    let left = expires.and_then(|e| e.duration_since(now).ok());
    match left {
        None => now + FALLBACK_LIFETIME,
        Some(left) if left <= MARGIN * 2 => now + left / 2,
        Some(left) => now + (left - MARGIN).min(MAX_LIFETIME),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_decode_into_user_and_password() {
        let (u, p) = decode_token("QVdTOnNlY3JldDpwYXJ0").expect("AWS:secret:part");
        assert_eq!(u, "AWS");
        assert_eq!(p.as_str(), "secret:part", "only the first ':' splits");
        assert!(decode_token("not base64!").is_none());
        assert!(decode_token("QVdT").is_none(), "AWS without a password");
        assert!(
            decode_token("QVdTOg==").is_none(),
            "AWS: with an empty password"
        );
    }

    #[test]
    fn a_token_is_used_until_shortly_before_it_expires() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(valid_until(now, Some(now + h(12))), now + h(12) - MARGIN);
        assert_eq!(
            valid_until(now, Some(now + h(48))),
            now + MAX_LIFETIME,
            "never longer than ECR issues tokens for"
        );
        assert_eq!(
            valid_until(now, Some(now + Duration::from_secs(60))),
            now + Duration::from_secs(30),
            "a token about to lapse is used briefly"
        );
        assert_eq!(
            valid_until(now, Some(now - h(1))),
            now + FALLBACK_LIFETIME,
            "an expiry already past (clock skew, moto) is not believed"
        );
        assert_eq!(valid_until(now, None), now + FALLBACK_LIFETIME);
    }
}
