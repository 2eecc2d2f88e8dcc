//! The log shipper and the metrics loop. They read the config when they start,
//! so a reload starts them again, except that the log shipper keeps running
//! when nothing it reads changed (a restart would only interrupt it); either
//! restarts after a crash. They report into the same observation sections for
//! the whole process.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle};

use super::Agent;
use crate::config::{Config, LogsConfig};

/// How long SIGTERM waits for the log shipper to flush and checkpoint.
pub(super) const SHUTDOWN_FLUSH: Duration = Duration::from_secs(15);

/// What the log shipper reads from the config when it starts.
#[derive(Debug, PartialEq)]
struct ShipperInputs {
    logs: LogsConfig,
    project: String,
    state_dir: PathBuf,
    developers: BTreeSet<String>,
}

impl ShipperInputs {
    fn of(c: &Config) -> ShipperInputs {
        ShipperInputs {
            logs: c.logs.clone(),
            project: c.project.clone(),
            state_dir: c.agent.state_dir.clone(),
            developers: c.developers.iter().map(|d| d.name.clone()).collect(),
        }
    }
}

/// One running background task and the switch that stops it.
struct Task {
    shutdown: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

/// The running log shipper (with what it started from) and metrics loop.
#[derive(Default)]
pub(super) struct Background {
    logs: Option<(Task, ShipperInputs)>,
    metrics: Option<Task>,
}

impl Background {
    /// One of them ended (a panic, or an error it cannot retry).
    pub(super) fn any_finished(&self) -> bool {
        self.logs
            .as_ref()
            .is_some_and(|(t, _)| t.handle.is_finished())
            || self
                .metrics
                .as_ref()
                .is_some_and(|t| t.handle.is_finished())
    }
}

impl Agent {
    /// Starts the log shipper and the metrics loop for the current config.
    pub(super) fn start_background(&mut self) {
        self.start_logs();
        self.start_metrics();
    }

    fn start_logs(&mut self) {
        if self.once {
            return;
        }
        if !self.config.logs.enabled {
            self.observations.logs.reset(false);
            return;
        }
        let (shutdown, rx) = watch::channel(false);
        let shipper = crate::logs::Shipper::new(
            self.docker.clone(),
            aws_sdk_cloudwatchlogs::Client::new(&self.sdk),
            &self.config,
            self.observations.identity(),
        )
        .reporting_to(self.observations.logs.clone());
        let handle = tokio::spawn(async move {
            if let Err(e) = shipper.run(rx).await {
                tracing::error!(error = %e, "log shipper stopped");
            }
        });
        self.background.logs = Some((Task { shutdown, handle }, ShipperInputs::of(&self.config)));
    }

    fn start_metrics(&mut self) {
        if self.once {
            return;
        }
        if !self.config.metrics.enabled {
            self.observations.metrics.reset(false);
            return;
        }
        let (shutdown, rx) = watch::channel(false);
        let metrics = crate::metrics::Metrics::new(
            aws_sdk_cloudwatch::Client::new(&self.sdk),
            self.docker.clone(),
            &self.config,
            self.observations.identity(),
        )
        .reporting_to(self.observations.metrics.clone());
        let observations = self.observations.clone();
        let handle = tokio::spawn(metrics.run(move || observations.agent_readings(), rx));
        self.background.metrics = Some(Task { shutdown, handle });
    }

    /// Tells the shipper and metrics loop to stop, and waits (bounded) for their
    /// final flush and checkpoints.
    pub(super) async fn stop_background(&mut self) -> Vec<JoinError> {
        let logs = self.background.logs.take().map(|(t, _)| t);
        let metrics = self.background.metrics.take();
        stop(logs.into_iter().chain(metrics).collect()).await
    }

    /// After a reload: the metrics loop starts again with the new config; the
    /// log shipper only when something it reads changed. Stopping it would
    /// make it put down every container mid-stream, and a new one start over
    /// from the checkpoints — needless work, and lines held back meanwhile.
    pub(super) async fn restart_background_for(&mut self, config: &Config) {
        let metrics = self.background.metrics.take();
        stop(metrics.into_iter().collect()).await;
        self.start_metrics();
        let keep = self.background.logs.as_ref().is_some_and(|(t, inputs)| {
            !t.handle.is_finished() && *inputs == ShipperInputs::of(config)
        });
        if keep {
            tracing::info!("log shipper settings unchanged; it keeps running");
            return;
        }
        let logs = self.background.logs.take().map(|(t, _)| t);
        stop(logs.into_iter().collect()).await;
        self.start_logs();
    }
}

async fn stop(tasks: Vec<Task>) -> Vec<JoinError> {
    if tasks.is_empty() {
        return Vec::new();
    }
    let mut handles = Vec::new();
    for t in tasks {
        let _ = t.shutdown.send(true);
        handles.push(t.handle);
    }
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(extra: &str, developers: &[&str]) -> Config {
        let mut text = format!("[volume]\ndevice = \"/dev/loop7\"\n{extra}");
        for d in developers {
            text.push_str(&format!("[[developer]]\nname = \"{d}\"\n"));
        }
        Config::from_toml(&text, Path::new("test.toml")).expect("config")
    }

    #[test]
    fn the_shipper_restarts_only_for_what_it_reads() {
        let base = ShipperInputs::of(&config("", &["a", "b"]));
        assert_eq!(
            base,
            ShipperInputs::of(&config("[containers]\nstop_grace = \"3s\"\n", &["b", "a"])),
            "a container setting or the developers' order: keep it running"
        );
        assert_ne!(base, ShipperInputs::of(&config("", &["a", "b", "c"])));
        assert_ne!(
            base,
            ShipperInputs::of(&config("[logs]\nretention_days = 7\n", &["a", "b"]))
        );
    }
}
