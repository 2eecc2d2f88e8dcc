//! Reading and writing a container's checkpoint off the async runtime, and
//! retrying a write the disk refuses for now (ENOSPC) in place.

use super::ShipperState;
use super::checkpoint::{Checkpoint, CheckpointError, Store};
use super::container::{TaskError, short};
use crate::retry::Class;

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CheckpointError> + Send + 'static,
) -> Result<T, CheckpointError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(CheckpointError::Io {
            path: Default::default(),
            op: "checkpoint task",
            source: std::io::Error::other(e.to_string()),
        }),
    }
}

async fn save(store: &Store, cp: &Checkpoint) -> Result<(), CheckpointError> {
    let (store, cp) = (store.clone(), cp.clone());
    blocking(move || store.save(&cp)).await
}

/// Writes the checkpoint, retrying in place (jittered backoff) while the error
/// is one the disk recovers from (full, over quota) until it succeeds or the
/// shipper stops; status shows the error meanwhile. The in-memory checkpoint is
/// the truth here: after a put, retrying its write neither repeats the batch
/// nor loses it, and should the agent stop first, the in-flight record already
/// on disk makes the next start read the stream back. Other errors end the pass.
pub(super) async fn save_retrying(
    ctx: &ShipperState,
    cp: &Checkpoint,
    developer: &str,
) -> Result<(), TaskError> {
    let mut backoff = ctx.options.backoff.clone();
    loop {
        let e = match save(&ctx.store, cp).await {
            Ok(()) => {
                if backoff.attempts() > 0 {
                    tracing::info!(developer = %developer, container = %short(&cp.container_id), "log checkpoint written again; shipping resumes");
                }
                ctx.status.checkpoint_ok(developer);
                return Ok(());
            }
            Err(e) => e,
        };
        ctx.status.checkpoint_failed(developer, &e.to_string());
        if e.class() != Class::Transient {
            return Err(e.into());
        }
        let delay = backoff.next_delay();
        if backoff.attempts() == 1 {
            tracing::error!(developer = %developer, container = %short(&cp.container_id), error = %e, "cannot write the log checkpoint; shipping waits and retries (Docker keeps the lines)");
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = ctx.stop.requested() => return Err(TaskError::Stopped),
        }
    }
}

pub(super) async fn load(
    store: &Store,
    id: &str,
    developer: &str,
) -> Result<Checkpoint, CheckpointError> {
    let (s, i) = (store.clone(), id.to_string());
    match blocking(move || s.load(&i)).await {
        Ok(Some(cp)) => Ok(cp),
        Ok(None) => Ok(Checkpoint::new(id, developer)),
        Err(e @ CheckpointError::Corrupt { .. }) => {
            // Cannot happen with atomic writes; if it does, ship the container's
            // log again from its start rather than skip anything.
            tracing::error!(container = %short(id), error = %e, "log checkpoint unreadable; shipping this container's log from its start");
            Ok(Checkpoint::new(id, developer))
        }
        Err(e) => Err(e),
    }
}
