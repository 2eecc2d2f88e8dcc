//! The main loop: one `select!` over signals, the watchdog tick, the rotation
//! poll, the periodic resync, Docker events and control-socket commands; then
//! shutdown (containers keep running).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::{Agent, notify, watchdog};
use crate::containers::{spawn_event_follower, unix_now};
use crate::control::{self, Command};
use crate::exit;

/// Full resync even without events (events can be missed across reconnects).
const RESYNC_EVERY: Duration = Duration::from_secs(60);
/// Docker events this close together are one burst (one restart emits several).
const EVENT_COALESCE: Duration = Duration::from_millis(300);

impl Agent {
    pub(super) async fn run_loop(&mut self) -> i32 {
        let (mut term, mut int, mut hup) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(t), Ok(i), Ok(h)) => (t, i, h),
            _ => {
                tracing::error!("cannot install signal handlers");
                return exit::FAILED;
            }
        };
        notify(&[
            NotifyState::Ready,
            NotifyState::Status("running: converged, watching"),
        ]);
        // The main loop stamps `alive` every tick and the reconciler stamps its
        // progress; the watchdog task pings systemd only while one of them is
        // recent and every background task lives. A long image pull keeps
        // stamping; a wedged call does not, and systemd restarts us.
        let alive = Arc::new(AtomicU64::new(unix_now()));
        let tasks_ok = Arc::new(AtomicBool::new(true));
        let limit = sd_notify::watchdog_enabled();
        if let Some(limit) = limit {
            self.tasks.push((
                "watchdog",
                watchdog::spawn(
                    limit,
                    alive.clone(),
                    self.reconciler.progress(),
                    tasks_ok.clone(),
                ),
            ));
        }
        let tick = limit
            .map(|l| l / 4)
            .unwrap_or(Duration::from_secs(10))
            .max(Duration::from_millis(200));
        let mut watchdog_tick = tokio::time::interval(tick);
        let mut resync = tokio::time::interval(RESYNC_EVERY);
        resync.tick().await;
        let poll_sleep = tokio::time::sleep(self.secrets.next_poll_in());
        tokio::pin!(poll_sleep);
        let devset_sleep = tokio::time::sleep(self.devset.next_poll_in(&self.config));
        tokio::pin!(devset_sleep);

        let (event_tx, mut event_rx) = mpsc::unbounded_channel::<String>();
        self.tasks.push((
            "docker events",
            spawn_event_follower(self.reconciler.clone(), event_tx),
        ));
        self.refresh_volume().await;

        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: stopping; containers keep running"); break; }
                _ = int.recv() => { tracing::info!("SIGINT: stopping; containers keep running"); break; }
                _ = hup.recv() => { let _ = self.reload().await; }
                _ = watchdog_tick.tick() => {
                    alive.store(unix_now(), Ordering::Relaxed);
                    self.check_tasks(&tasks_ok).await;
                }
                _ = &mut poll_sleep => {
                    if self.poll_secrets().await { self.converge_all().await; }
                    poll_sleep.as_mut().reset(tokio::time::Instant::now() + self.secrets.next_poll_in());
                }
                _ = &mut devset_sleep, if self.devset.watching(&self.config) => {
                    self.poll_developer_set().await;
                    let next = self.devset.next_poll_in(&self.config);
                    devset_sleep.as_mut().reset(tokio::time::Instant::now() + next);
                }
                _ = resync.tick() => {
                    self.refresh_volume().await;
                    self.converge_all().await;
                }
                Some(dev) = event_rx.recv() => {
                    // Coalesce bursts.
                    tokio::time::sleep(EVENT_COALESCE).await;
                    while event_rx.try_recv().is_ok() {}
                    tracing::debug!(developer = %dev, "docker event: converging");
                    self.converge_all().await;
                }
                Some((cmd, reply)) = self.commands.recv() => {
                    let result = match cmd {
                        Command::Reload => self.reload().await,
                        Command::RefreshSecrets => {
                            let needed = self.poll_secrets().await;
                            if needed { self.converge_all().await; }
                            Ok(format!("secrets refreshed{}", if needed { "; containers converged" } else { "; no change" }))
                        }
                    };
                    control::reply(reply, result);
                }
            }
        }
        self.stop().await;
        exit::OK
    }

    /// Restarts the log shipper and metrics loop when one ended; stops feeding
    /// the watchdog when any other background task ended.
    async fn check_tasks(&mut self, tasks_ok: &AtomicBool) {
        // A dead background task means something is wrong that a restart
        // fixes: stop feeding the watchdog.
        let dead: Vec<&str> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.is_finished())
            .map(|(n, _)| *n)
            .collect();
        // The log shipper or metrics loop ended (a panic, or an error it cannot
        // retry): stop the other one too, say why, start both again.
        if self.background.any_finished() {
            for panic in self.stop_background().await {
                tracing::error!(error = %panic, "logs/metrics task panicked");
            }
            tracing::warn!("restarting the log shipper and metrics loop");
            self.start_background();
        }
        if !dead.is_empty() && tasks_ok.swap(false, Ordering::Relaxed) {
            tracing::error!(tasks = ?dead, "background task ended; withholding the watchdog ping");
        }
    }

    async fn stop(&mut self) {
        notify(&[
            NotifyState::Stopping,
            NotifyState::Status("stopping: flushing logs and metrics"),
        ]);
        self.stop_background().await;
        for (_, t) in &self.tasks {
            t.abort();
        }
        let _ = std::fs::remove_file(&self.config.agent.socket);
        tracing::info!("stopped");
    }
}
