//! The log shipper and the metrics loop. They read the developer list when they
//! start, so a reload (or a crash of either) stops both and starts them again;
//! they report into the same observation sections for the whole process.

use std::time::Duration;

use tokio::sync::watch;

use super::Agent;

/// How long SIGTERM waits for the log shipper to flush and checkpoint.
pub(super) const SHUTDOWN_FLUSH: Duration = Duration::from_secs(15);

impl Agent {
    /// Starts the log shipper and the metrics loop for the current config.
    pub(super) fn start_background(&mut self) {
        if self.once {
            return;
        }
        let (shutdown, rx) = watch::channel(false);
        let mut handles = Vec::new();
        let identity = self.observations.identity().clone();
        if self.config.logs.enabled {
            let shipper = crate::logs::Shipper::new(
                self.docker.clone(),
                aws_sdk_cloudwatchlogs::Client::new(&self.sdk),
                &self.config,
                &identity,
            )
            .reporting_to(self.observations.logs.clone());
            let rx = rx.clone();
            handles.push(tokio::spawn(async move {
                if let Err(e) = shipper.run(rx).await {
                    tracing::error!(error = %e, "log shipper stopped");
                }
            }));
        } else {
            self.observations.logs.reset(false);
        }
        if self.config.metrics.enabled {
            let metrics = crate::metrics::Metrics::new(
                aws_sdk_cloudwatch::Client::new(&self.sdk),
                self.docker.clone(),
                &self.config,
                &identity,
            )
            .reporting_to(self.observations.metrics.clone());
            let observations = self.observations.clone();
            handles.push(tokio::spawn(
                metrics.run(move || observations.agent_readings(), rx),
            ));
        } else {
            self.observations.metrics.reset(false);
        }
        self.background = Some((shutdown, handles));
    }

    /// Tells the shipper and metrics loop to stop, and waits (bounded) for their
    /// final flush and checkpoints.
    pub(super) async fn stop_background(&mut self) -> Vec<tokio::task::JoinError> {
        let Some((shutdown, handles)) = self.background.take() else {
            return Vec::new();
        };
        let _ = shutdown.send(true);
        let aborts: Vec<_> = handles.iter().map(|h| h.abort_handle()).collect();
        match tokio::time::timeout(SHUTDOWN_FLUSH, futures_util::future::join_all(handles)).await {
            Ok(results) => results.into_iter().filter_map(Result::err).collect(),
            Err(_) => {
                tracing::warn!(
                    "logs/metrics did not finish flushing in {SHUTDOWN_FLUSH:?}; checkpoints hold what was shipped"
                );
                // Never leave a second shipper running beside a new one.
                for a in aborts {
                    a.abort();
                }
                Vec::new()
            }
        }
    }
}
