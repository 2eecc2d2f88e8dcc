//! Taking a developer's container away (replaced after a rotation or a config
//! change, or its developer no longer configured) without cutting it or its
//! log short: SIGTERM and `containers.stop_grace` for the processes to exit,
//! then a bounded wait until the log shipper has delivered and checkpointed
//! every line the container wrote, then removal. Docker forgets a removed
//! container's log, so removing first would lose whatever was not read yet.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bollard::query_parameters::{RemoveContainerOptionsBuilder, StopContainerOptionsBuilder};

use super::{Reconciler, unix_now};
use crate::logs::Drain;

/// Longest wait for a stopped container's log to be shipped to its end; past it
/// the container is removed anyway (lines the shipper had not read are lost,
/// lines it had read are still delivered). Enough to drain a full buffer
/// through a slow CloudWatch, short enough that a developer is not kept out.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

impl Reconciler {
    /// Stops `name` (SIGTERM, then SIGKILL after the grace period), waits for
    /// its log to be drained, and removes it. A missing container is fine.
    pub(super) async fn retire(&self, developer: &str, name: &str) -> Result<(), String> {
        let (id, running) = match self.docker.inspect_container(name, None).await {
            Ok(c) => (
                c.id.unwrap_or_default(),
                c.state.and_then(|s| s.running).unwrap_or(false),
            ),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(()),
            Err(e) => return Err(format!("inspect {name}: {e}")),
        };
        // Drains before this point were of an earlier run of the container.
        let mark = self.logs.drain_mark();
        let grace = self.config.containers.stop_grace;
        // Docker counts whole seconds; round up so the grace is never shorter.
        let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        let opts = StopContainerOptionsBuilder::new()
            .t(i32::try_from(secs).unwrap_or(i32::MAX))
            .build();
        let stopped = stamping(&self.progress, self.docker.stop_container(name, Some(opts))).await;
        match stopped {
            // 304: it had stopped already.
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => {}
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(()),
            Err(e) => return Err(format!("stop {name}: {e}")),
        }
        let waited = std::time::Instant::now();
        let drain = stamping(
            &self.progress,
            self.logs.wait_drained(&id, mark, running, DRAIN_TIMEOUT),
        )
        .await;
        match drain {
            Drain::Drained => {
                tracing::debug!(developer = %developer, container = %name, waited = ?waited.elapsed(), "container log shipped to its end")
            }
            Drain::NotShipping | Drain::NotFollowed => {}
            Drain::TimedOut => tracing::warn!(
                developer = %developer,
                container = %name,
                "the container's log was not shipped to its end within {DRAIN_TIMEOUT:?}; removing it anyway (lines not yet read are lost)"
            ),
        }
        self.remove(name).await
    }

    /// Removes `name` at once (after [`Reconciler::retire`] stopped it, this
    /// only reaps it). A missing container is fine.
    pub(super) async fn remove(&self, name: &str) -> Result<(), String> {
        let opts = RemoveContainerOptionsBuilder::new().force(true).build();
        match self.docker.remove_container(name, Some(opts)).await {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(format!("remove {name}: {e}")),
        }
    }
}

/// Awaits `work`, stamping `progress` every second: a stop within its grace
/// period or a drain within its timeout is progress, not a wedged reconciler.
/// Both are bounded by their own timeouts.
async fn stamping<T>(progress: &AtomicU64, work: impl Future<Output = T>) -> T {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => progress.store(unix_now(), Ordering::Relaxed),
        }
    }
}
