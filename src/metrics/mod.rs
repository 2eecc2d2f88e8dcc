//! Health, disk and memory metrics to CloudWatch: csagent replaces the CloudWatch
//! agent on this host.
//!
//! Every `metrics.interval` (60 s) the agent collects one sample ([`collect`]),
//! turns it into datums ([`datums`]), appends them to a bounded buffer and sends
//! the buffer ([`publish`]). Namespace `metrics.namespace` (default `CodeServer`),
//! StorageResolution 60, all datums of one interval share its timestamp.
//!
//! | metric | dimensions | unit | meaning |
//! |---|---|---|---|
//! | `mem_used_percent` | InstanceId | Percent | host memory, (total − available) / total |
//! | `disk_used_percent` | InstanceId, path | Percent | `df` Use% of the data mount and of `/` |
//! | `disk_free` | InstanceId, path | Bytes | `df` Avail |
//! | `container_healthy` | InstanceId, Developer | Count | 1 when Docker's health check says healthy |
//! | `container_running` | InstanceId, Developer | Count | 1 when the container runs |
//! | `cpu_percent` | InstanceId, Developer | Percent | `docker stats` CPU% ÷ the container's CPU limit |
//! | `mem_used_bytes` | InstanceId, Developer | Bytes | `docker stats` MEM USAGE (without inactive file cache) |
//! | `mem_used_percent` | InstanceId, Developer | Percent | of the container's memory limit |
//! | `restarts` | InstanceId, Developer | Count | Docker's restart count of the container |
//! | `active` | InstanceId, Developer | Count | 1 when code-server's `/healthz` says `"alive"` |
//! | `disk_quota_used_bytes` | InstanceId, Developer | Bytes | the home's use as its project quota counts it (with `containers.disk_quota`) |
//! | `disk_quota_used_percent` | InstanceId, Developer | Percent | of the developer's disk quota (while a limit is in force) |
//! | `developers_healthy` | InstanceId | Count | developers with container_healthy = 1 |
//! | `developers_active` | InstanceId | Count | developers with active = 1 |
//! | `agent_heartbeat` | InstanceId | Count | 1 every interval (alarm on missing data) |
//! | `secrets_staleness_seconds` | InstanceId | Seconds | since the last successful secrets poll |
//! | `log_lag_seconds` | InstanceId | Seconds | log shipper's lag (left out while unknown) |
//! | `log_files_lost` | InstanceId | Count | container log files rotated away unread since the previous interval (left out without a shipper) |
//! | `metrics_dropped` | InstanceId | Count | datums dropped since the previous interval |
//!
//! For 8 developers that is 5 host + 56 per-developer + 2 rollup + 5 agent = 68
//! custom metrics, sent in one PutMetricData call per interval: at ~$0.30 per
//! metric-month and 43,200 calls a month ($0.01 per 1,000) about $20.83 a month
//! (`docs/metrics.md` has the breakdown).
//!
//! A stopped or missing container reports running 0, healthy 0, active 0 and zero
//! CPU and memory. When Docker itself cannot be asked, that developer's datums are
//! left out for the interval (missing data, not invented zeros).
//!
//! When CloudWatch cannot be reached or throttles, datums wait in memory, bounded
//! to one hour of intervals (the current one included); beyond that the oldest are
//! dropped and counted in [`MetricsStatus::dropped_datums`] and the
//! `metrics_dropped` metric. The backlog is sent later, oldest first, with its
//! original timestamps. Retries use [`crate::retry`] (SDK retries off): a few
//! jittered attempts per interval, then the next interval tries again.

pub mod collect;
pub mod datums;
pub mod publish;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::watch;

use crate::aws::Identity;
use crate::config::Config;
use collect::{Collector, DeveloperSample};
use datums::{AgentSample, Sample};
use publish::Publisher;

/// How much backlog is kept while CloudWatch is unreachable.
pub const BUFFER_SPAN: Duration = Duration::from_secs(3600);

/// Logs how one interval's publishing went.
fn log_interval(r: Result<usize, MetricsError>) {
    match r {
        Ok(n) => tracing::debug!(published = n, "metrics: interval done"),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: publishing failed; will retry next interval")
        }
    }
}

/// Longest the final flush on shutdown may take.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "PutMetricData to namespace {namespace} failed ({buffered} datums kept for the next try): {message}"
    )]
    Publish {
        namespace: String,
        buffered: usize,
        message: String,
    },
    #[error(
        "PutMetricData to namespace {namespace} did not finish within {budget:?} ({buffered} datums kept for the next try)"
    )]
    Timeout {
        namespace: String,
        budget: Duration,
        buffered: usize,
    },
}

/// What `csagent status` shows about metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MetricsStatus {
    /// A metrics loop reports here (`metrics.enabled`); status shows metrics only then.
    pub enabled: bool,
    pub last_publish: Option<SystemTime>,
    /// Datums CloudWatch accepted since the agent started.
    pub published_datums: u64,
    /// Successful PutMetricData calls since the agent started.
    pub put_calls: u64,
    /// Datums waiting to be sent.
    pub buffered_datums: usize,
    /// Datums given up on (buffer full, or rejected by CloudWatch).
    pub dropped_datums: u64,
    pub last_error: Option<String>,
    /// The last interval's per-developer readings (status shows CPU% and memory).
    pub developers: BTreeMap<String, DeveloperSample>,
}

/// A cheap clone of the live status.
#[derive(Debug, Clone, Default)]
pub struct MetricsStatusHandle(Arc<Mutex<MetricsStatus>>);

impl MetricsStatusHandle {
    pub fn snapshot(&self) -> MetricsStatus {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Starts over: a new metrics loop (or none, when `enabled` is false).
    pub fn reset(&self, enabled: bool) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = MetricsStatus {
            enabled,
            ..MetricsStatus::default()
        };
    }
}

/// Readings about the agent that other capabilities own (secrets, logs), handed
/// in each interval for the agent datums.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentReadings {
    pub secrets_staleness_seconds: f64,
    /// None until the log shipper knows its lag; the metric is then left out.
    pub log_lag_seconds: Option<f64>,
    /// Container log files lost since the shipper started (files plus gaps, all
    /// developers); None without a shipper. A total: the interval's datum is
    /// its growth.
    pub log_files_lost: Option<u64>,
    /// Each developer's disk quota use, from the volume's last refresh (empty
    /// without quota accounting).
    pub disk_quota: Vec<QuotaReading>,
}

/// The growth of the counter `total` since `reported`, which becomes `total`. A
/// total below `reported` means its owner started over (a restarted shipper):
/// all of it is new.
fn since_last(total: u64, reported: &mut u64) -> u64 {
    let new = total.checked_sub(*reported).unwrap_or(total);
    *reported = total;
    new
}

/// One developer's home use against their disk quota.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaReading {
    pub developer: String,
    pub used_bytes: u64,
    /// The hard limit in force; None: no limit (only the bytes are sent).
    pub limit_bytes: Option<u64>,
}

/// Collects and publishes; one per agent.
pub struct Metrics {
    enabled: bool,
    interval: Duration,
    namespace: String,
    instance_id: String,
    collector: Collector,
    publisher: Publisher,
    status: MetricsStatusHandle,
    /// Dropped count already reported in a `metrics_dropped` datum.
    reported_dropped: u64,
    /// Lost log files already reported in a `log_files_lost` datum.
    reported_log_files_lost: u64,
}

impl Metrics {
    pub fn new(
        cw: aws_sdk_cloudwatch::Client,
        docker: bollard::Docker,
        config: &Config,
        identity: &Identity,
    ) -> Metrics {
        let collector = Collector::new(
            docker,
            &config.project,
            config.developers.clone(),
            &config.volume.mount_point,
        );
        let quota = if config.containers.disk_quota.is_some() {
            datums::PER_DEVELOPER_QUOTA.len() * collector.developer_count()
        } else {
            0
        };
        let per_interval =
            datums::datums_per_interval(collector.developer_count(), collector.disk_count())
                + quota;
        let capacity = per_interval * buffered_intervals(config.metrics.interval);
        let status = MetricsStatusHandle::default();
        status.reset(config.metrics.enabled);
        Metrics {
            enabled: config.metrics.enabled,
            interval: config.metrics.interval,
            namespace: config.metrics.namespace.clone(),
            instance_id: identity.instance_id.clone(),
            collector,
            publisher: Publisher::new(cw, &config.metrics.namespace, capacity, status.clone()),
            status,
            reported_dropped: 0,
            reported_log_files_lost: 0,
        }
    }

    pub fn status_handle(&self) -> MetricsStatusHandle {
        self.status.clone()
    }

    /// Reports into `status` (the agent's long-lived section) instead of a
    /// handle of its own; what an earlier loop left there is cleared.
    pub fn reporting_to(mut self, status: MetricsStatusHandle) -> Metrics {
        status.reset(self.enabled);
        self.publisher.set_status(status.clone());
        self.status = status;
        self
    }

    /// Datums the buffer holds at most.
    pub fn buffer_capacity(&self) -> usize {
        self.publisher.buffer().capacity()
    }

    /// How long one interval's publishing may take before it is left for the next.
    fn flush_budget(&self) -> Duration {
        (self.interval * 3 / 4).clamp(Duration::from_secs(2), Duration::from_secs(45))
    }

    /// One interval: collect, enqueue, send the backlog (this interval's datums
    /// included). Returns the number of datums CloudWatch accepted in this call;
    /// on an error they stay buffered for the next call.
    pub async fn collect_and_publish(
        &mut self,
        readings: &AgentReadings,
    ) -> Result<usize, MetricsError> {
        let timestamp = datums::whole_seconds(SystemTime::now());
        let host = self.collector.host();
        let developers = self.collector.developers().await;
        {
            let mut s = self.status.0.lock().unwrap_or_else(|e| e.into_inner());
            s.developers = developers
                .iter()
                .map(|d| (d.developer.clone(), d.clone()))
                .collect();
        }
        let dropped = self.publisher.buffer().dropped();
        let sample = Sample {
            timestamp,
            host,
            developers,
            agent: AgentSample {
                secrets_staleness_seconds: readings.secrets_staleness_seconds,
                log_lag_seconds: readings.log_lag_seconds,
                log_files_lost_since_last: readings
                    .log_files_lost
                    .map(|total| since_last(total, &mut self.reported_log_files_lost)),
                disk_quota: readings.disk_quota.clone(),
                dropped_since_last: since_last(dropped, &mut self.reported_dropped),
            },
        };
        let batch = datums::build(&self.instance_id, &sample);
        tracing::debug!(
            datums = batch.len(),
            developers = sample.developers.len(),
            "metrics: collected"
        );
        self.publisher.enqueue(batch);
        self.flush_within(self.flush_budget()).await
    }

    /// Sends what is buffered, giving up (keeping the rest) after `budget`.
    pub async fn flush_within(&mut self, budget: Duration) -> Result<usize, MetricsError> {
        match tokio::time::timeout(budget, self.publisher.flush()).await {
            Ok(r) => r,
            Err(_) => {
                let err = MetricsError::Timeout {
                    namespace: self.namespace.clone(),
                    budget,
                    buffered: self.publisher.buffer().len(),
                };
                let mut s = self.status.0.lock().unwrap_or_else(|e| e.into_inner());
                s.last_error = Some(err.to_string());
                Err(err)
            }
        }
    }

    /// Collects and publishes every `metrics.interval` until `shutdown` turns true
    /// (or its sender goes away), then makes one last flush of at most
    /// [`SHUTDOWN_FLUSH`]. Returns at once when metrics are disabled.
    pub async fn run(
        mut self,
        readings: impl Fn() -> AgentReadings + Send + 'static,
        mut shutdown: watch::Receiver<bool>,
    ) {
        if !self.enabled {
            tracing::info!("metrics: disabled in the config");
            return;
        }
        tracing::info!(
            namespace = %self.namespace,
            interval = ?self.interval,
            buffer = self.buffer_capacity(),
            "metrics: publishing to CloudWatch"
        );
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stopped(&mut shutdown) => break,
                _ = ticker.tick() => {}
            }
            let values = readings();
            let publish = self.collect_and_publish(&values);
            tokio::pin!(publish);
            let stopping = tokio::select! {
                biased;
                r = &mut publish => {
                    log_interval(r);
                    false
                }
                _ = stopped(&mut shutdown) => {
                    // Let the call in flight finish: dropped after CloudWatch accepted the
                    // batch, it would leave the batch buffered and the final flush would send
                    // it a second time (seen as two heartbeats in one second after a stop).
                    match tokio::time::timeout(SHUTDOWN_FLUSH, &mut publish).await {
                        Ok(r) => log_interval(r),
                        Err(_) => tracing::warn!("metrics: interval still publishing at shutdown; the final flush may repeat it"),
                    }
                    true
                }
            };
            if stopping {
                break;
            }
        }
        if !self.publisher.buffer().is_empty() {
            match self.flush_within(SHUTDOWN_FLUSH).await {
                Ok(n) => tracing::info!(published = n, "metrics: final flush done"),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: final flush incomplete; datums lost")
                }
            }
        }
    }
}

/// Intervals in [`BUFFER_SPAN`], at least one.
fn buffered_intervals(interval: Duration) -> usize {
    let secs = interval.as_secs_f64().max(0.001);
    ((BUFFER_SPAN.as_secs_f64() / secs).ceil() as usize).max(1)
}

/// Resolves when `rx` says true or its sender is gone.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_report_their_growth_and_a_restart_counts_in_full() {
        let mut reported = 0;
        assert_eq!(since_last(7, &mut reported), 7);
        assert_eq!(since_last(7, &mut reported), 0);
        assert_eq!(since_last(9, &mut reported), 2);
        // The shipper restarted: its counters began at 0 again.
        assert_eq!(since_last(1, &mut reported), 1);
        assert_eq!(reported, 1);
    }

    #[test]
    fn buffer_holds_an_hour() {
        assert_eq!(buffered_intervals(Duration::from_secs(60)), 60);
        assert_eq!(buffered_intervals(Duration::from_secs(7200)), 1);
        assert_eq!(buffered_intervals(Duration::from_millis(1500)), 2400);
        assert_eq!(datums::datums_per_interval(8, 2) * 60, 4080);
    }

    #[tokio::test]
    async fn stopped_on_true_or_closed_sender() {
        let (tx, mut rx) = watch::channel(false);
        let wait = tokio::time::timeout(Duration::from_millis(50), stopped(&mut rx)).await;
        assert!(wait.is_err(), "false keeps running");
        tx.send_replace(true);
        stopped(&mut rx).await;
        let (tx, mut rx) = watch::channel(false);
        drop(tx);
        stopped(&mut rx).await;
    }
}
