//! The systemd watchdog: WATCHDOG=1 only while the main loop or the reconciler
//! made progress recently and every background task lives, so a wedged agent is
//! restarted by systemd.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::task::JoinHandle;

use super::notify;
use crate::containers::unix_now;

/// What the watchdog does this tick.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Ping,
    /// Nothing moved for `stalled`, or a task died.
    Withhold {
        stalled: Duration,
    },
}

/// `last_alive` (the main loop) and `last_progress` (the reconciler) are unix
/// seconds; a long image pull keeps stamping progress, a wedged call does not.
fn verdict(
    tasks_ok: bool,
    last_alive: u64,
    last_progress: u64,
    now: u64,
    limit: Duration,
) -> Verdict {
    let stalled = Duration::from_secs(now.saturating_sub(last_alive.max(last_progress)));
    if tasks_ok && stalled < limit {
        Verdict::Ping
    } else {
        Verdict::Withhold { stalled }
    }
}

/// Awaits `work` (a blocking step the main loop waits on, such as the volume
/// pass after a reload) while stamping `progress` every second, for at most
/// `bound`: a step that is merely long keeps the watchdog fed, one that hangs
/// past its own worst case stops feeding it and systemd restarts the agent.
pub(super) async fn keep_alive_while<T>(
    progress: &AtomicU64,
    bound: Duration,
    work: impl std::future::Future<Output = T>,
) -> T {
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => {
                if started.elapsed() < bound {
                    progress.store(unix_now(), Ordering::Relaxed);
                }
            }
        }
    }
}

/// Pings the systemd watchdog every `limit / 2` while the main loop or the
/// reconciler made progress within `limit` and the background tasks live.
pub(super) fn spawn(
    limit: Duration,
    alive: Arc<AtomicU64>,
    progress: Arc<AtomicU64>,
    tasks_ok: Arc<AtomicBool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval((limit / 2).max(Duration::from_millis(100)));
        let mut warned = false;
        loop {
            tick.tick().await;
            match verdict(
                tasks_ok.load(Ordering::Relaxed),
                alive.load(Ordering::Relaxed),
                progress.load(Ordering::Relaxed),
                unix_now(),
                limit,
            ) {
                Verdict::Ping => {
                    notify(&[NotifyState::Watchdog]);
                    warned = false;
                }
                Verdict::Withhold { stalled } if !warned => {
                    tracing::error!(stalled = ?stalled, "main loop stalled or a task died; withholding the watchdog ping");
                    warned = true;
                }
                Verdict::Withhold { .. } => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(30);

    #[test]
    fn pings_while_either_stamp_is_recent() {
        assert_eq!(verdict(true, 100, 0, 110, LIMIT), Verdict::Ping);
        assert_eq!(
            verdict(true, 0, 100, 129, LIMIT),
            Verdict::Ping,
            "a long image pull keeps the reconciler's stamp fresh"
        );
        assert_eq!(
            verdict(true, 100, 90, 130, LIMIT),
            Verdict::Withhold {
                stalled: Duration::from_secs(30)
            }
        );
    }

    #[test]
    fn a_dead_task_withholds_even_when_fresh() {
        assert_eq!(
            verdict(false, 100, 100, 100, LIMIT),
            Verdict::Withhold {
                stalled: Duration::ZERO
            }
        );
    }

    #[test]
    fn a_clock_stepping_back_is_not_a_stall() {
        assert_eq!(verdict(true, 200, 0, 150, LIMIT), Verdict::Ping);
    }

    #[tokio::test]
    async fn a_long_step_is_kept_alive_only_within_its_bound() {
        let progress = AtomicU64::new(0);
        // Done in 1.5 s within a 10 s bound: stamped along the way, and its
        // result comes back.
        let out = keep_alive_while(&progress, Duration::from_secs(10), async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            7
        })
        .await;
        assert_eq!(out, 7);
        assert!(
            progress.load(Ordering::Relaxed) > 0,
            "stamped while working"
        );

        // Hung past its bound (zero here): never fed.
        progress.store(0, Ordering::Relaxed);
        let hung = keep_alive_while(&progress, Duration::ZERO, std::future::pending::<()>());
        let _ = tokio::time::timeout(Duration::from_millis(1500), hung).await;
        assert_eq!(
            progress.load(Ordering::Relaxed),
            0,
            "never fed past the bound"
        );
    }
}
