//! AWS SDK configuration shared by the secrets, metrics and logs clients, and the
//! instance identity (region, instance id) from the config or IMDSv2.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "{what} is not set in the config and the instance metadata service did not answer ({source}); set `{key}` in {path}"
    )]
    Imds {
        what: &'static str,
        key: &'static str,
        path: String,
        source: aws_config::imds::client::error::ImdsError,
    },
}

/// Where the agent runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Identity {
    pub region: String,
    pub instance_id: String,
}

/// Region and instance id: from the config when set, else from IMDSv2.
pub async fn identity(config: &Config) -> Result<Identity, IdentityError> {
    let path = config.path.display().to_string();
    let imds = || {
        aws_config::imds::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .read_timeout(Duration::from_secs(2))
            .build()
    };
    let region = match &config.region {
        Some(r) => r.clone(),
        None => imds()
            .get("/latest/meta-data/placement/region")
            .await
            .map(String::from)
            .map_err(|source| IdentityError::Imds {
                what: "region",
                key: "region",
                path: path.clone(),
                source,
            })?,
    };
    let instance_id = match &config.instance_id {
        Some(i) => i.clone(),
        None => imds()
            .get("/latest/meta-data/instance-id")
            .await
            .map(String::from)
            .map_err(|source| IdentityError::Imds {
                what: "instance id",
                key: "instance_id",
                path,
                source,
            })?,
    };
    Ok(Identity {
        region,
        instance_id,
    })
}

/// SDK config for `region`. The endpoint comes from `aws.endpoint_url`, else the
/// SDK's own `AWS_ENDPOINT_URL` handling. Timeouts are bounded so a dead endpoint
/// makes a call fail (and be retried by us) instead of hanging a task.
pub async fn sdk_config(config: &Config, region: &str) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(20))
                .operation_timeout(Duration::from_secs(60))
                .build(),
        );
    if let Some(url) = &config.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}
