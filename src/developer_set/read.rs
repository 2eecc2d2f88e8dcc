//! GetParameter with the one retry classifier and backoff.

use std::time::Duration;

use super::Published;
use crate::retry::{self, Backoff, Class};

/// Why the parameter could not be read.
#[derive(Debug, thiserror::Error)]
#[error("GetParameter {parameter}: {message}")]
pub struct ReadError {
    pub parameter: String,
    pub message: String,
    /// Permanent: not found, access denied; retrying soon will not help.
    pub class: Class,
}

/// Reads one parameter.
#[derive(Debug, Clone)]
pub struct ParameterReader {
    client: aws_sdk_ssm::Client,
}

impl ParameterReader {
    pub fn new(sdk: &aws_config::SdkConfig) -> ParameterReader {
        // csagent retries (below), so every request is one call.
        let config = aws_sdk_ssm::config::Builder::from(sdk)
            .retry_config(aws_sdk_ssm::config::retry::RetryConfig::disabled())
            .build();
        ParameterReader {
            client: aws_sdk_ssm::Client::from_conf(config),
        }
    }

    /// Reads `name`, retrying transient errors up to `attempts` times.
    pub async fn read(&self, name: &str, attempts: u32) -> Result<Published, ReadError> {
        let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let out = retry::retry(backoff, attempts, retry::classify_aws, || {
            self.client.get_parameter().name(name).send()
        })
        .await
        .map_err(|e| ReadError {
            parameter: name.to_string(),
            message: retry::error_chain(&e),
            class: retry::classify_aws(&e),
        })?;
        let p = out.parameter().ok_or_else(|| ReadError {
            parameter: name.to_string(),
            message: "the answer holds no parameter".to_string(),
            class: Class::Transient,
        })?;
        Ok(Published {
            parameter: name.to_string(),
            value: p.value().unwrap_or_default().to_string(),
            version: p.version(),
            modified_ms: p
                .last_modified_date()
                .map(|d| d.secs() * 1000 + i64::from(d.subsec_nanos() / 1_000_000)),
        })
    }
}
