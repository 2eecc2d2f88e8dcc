//! The Docker engine connection and its event stream: connecting at start
//! (waiting for dockerd), and following events for managed containers in a task
//! of its own that reconnects when dockerd goes away, so the agent converges
//! again as soon as a developer's container dies or was missed.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use bollard::Docker;
use bollard::query_parameters::EventsOptionsBuilder;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::spec::{LABEL_DEVELOPER, LABEL_MANAGED, LABEL_PROJECT};
use super::{ContainersError, Reconciler, reconnect_backoff};
use crate::supervise::spawn_supervised;

/// Failed attempts to reach dockerd before the agent gives up starting.
const CONNECT_ATTEMPTS: u32 = 10;

/// Connects to the local engine, waiting (with backoff) while it is not up yet;
/// `progress` hears each wait.
pub async fn connect(progress: &dyn Fn(&str)) -> Result<Docker, String> {
    let mut backoff = reconnect_backoff();
    loop {
        let attempt = match Docker::connect_with_local_defaults() {
            Ok(d) => d.negotiate_version().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match attempt {
            Ok(d) => return Ok(d),
            Err(e) if backoff.attempts() < CONNECT_ATTEMPTS => {
                progress(&format!("waiting for the Docker engine: {e}"));
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => return Err(format!("docker: cannot reach the engine: {e}")),
        }
    }
}

/// Follows Docker events in its own task, reconnecting with backoff when dockerd
/// goes away; each relevant event (and each reconnect) sends the developer's
/// name (empty: everyone) to `tx`, asking for a convergence.
pub fn spawn_event_follower(
    follower: Reconciler,
    tx: mpsc::UnboundedSender<String>,
) -> JoinHandle<()> {
    let mut restarted = false;
    spawn_supervised("docker events", move || {
        // Events may have been missed while the follower was down: converge.
        if std::mem::replace(&mut restarted, true) {
            let _ = tx.send(String::new());
        }
        follow_reconnecting(follower.clone(), tx.clone())
    })
}

async fn follow_reconnecting(follower: Reconciler, tx: mpsc::UnboundedSender<String>) {
    let mut backoff = reconnect_backoff();
    loop {
        let tx2 = tx.clone();
        let followed_since = Instant::now();
        let result = follower
            .follow_events(move |dev, action| {
                // A health change may let a staged rollout take its next step.
                if matches!(
                    action.as_str(),
                    "die" | "destroy" | "stop" | "kill" | "oom" | "health_status"
                ) {
                    let _ = tx2.send(dev);
                }
            })
            .await;
        match result {
            Ok(()) => tracing::warn!("docker event stream ended; reconnecting"),
            Err(e) => tracing::warn!(error = %e, "docker event stream failed; reconnecting"),
        }
        // Wait (with backoff) until the engine answers again, then converge:
        // events may have been missed while disconnected.
        loop {
            tokio::time::sleep(backoff.next_delay()).await;
            if follower.docker().ping().await.is_ok() {
                break;
            }
        }
        // A stream that held for a while was healthy: start the backoff over.
        // One that fails at once keeps growing it, so a broken events API
        // cannot spin this loop.
        if followed_since.elapsed() > Duration::from_secs(30) {
            backoff.reset();
        }
        tracing::info!("docker engine is back; converging");
        let _ = tx.send(String::new());
    }
}

impl Reconciler {
    /// Follows Docker events for managed containers and reacts at once: a `die`
    /// feeds the crash-loop guard, and any lifecycle event triggers `on_event`
    /// for that developer. Returns when the stream ends (dockerd gone).
    pub async fn follow_events(
        &self,
        mut on_event: impl FnMut(String, String),
    ) -> Result<(), ContainersError> {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "label".to_string(),
                vec![
                    format!("{LABEL_MANAGED}=true"),
                    format!("{LABEL_PROJECT}={}", self.config.project),
                ],
            ),
        ]);
        let opts = EventsOptionsBuilder::new().filters(&filters).build();
        let mut stream = self.docker.events(Some(opts));
        while let Some(ev) = stream.next().await {
            let ev = ev.map_err(|e| ContainersError::Docker {
                what: "event stream".into(),
                source: e,
            })?;
            let action = ev.action.unwrap_or_default();
            let dev = ev
                .actor
                .and_then(|a| a.attributes)
                .and_then(|a| a.get(LABEL_DEVELOPER).cloned())
                .unwrap_or_default();
            if dev.is_empty() {
                continue;
            }
            if action == "die"
                && let Ok(mut c) = self.crash.lock()
            {
                c.record(&dev, SystemTime::now());
            }
            let base = action.split(':').next().unwrap_or("").to_string();
            if matches!(
                base.as_str(),
                "die"
                    | "health_status"
                    | "destroy"
                    | "start"
                    | "stop"
                    | "kill"
                    | "oom"
                    | "pause"
                    | "unpause"
                    | "restart"
            ) {
                self.observe_one(&dev).await;
                on_event(dev, base);
            }
        }
        Ok(())
    }
}
