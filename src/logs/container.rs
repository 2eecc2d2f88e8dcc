//! One managed container: a follower reads its Docker log into a bounded buffer,
//! and an uploader batches, delivers and checkpoints, in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptionsBuilder;
use futures_util::StreamExt;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use super::batch::{Batch, Batcher, Event, Limits, MAX_MESSAGE_BYTES, split_message};
use super::checkpoint::{Checkpoint, CheckpointError, Inflight};
use super::follow::{Line, Position, Reassembler, Source};
use super::persist::{load, save_retrying};
use super::sink::{Delivered, Sink, settle_delay};
use super::status::now_ms;
use super::{Finish, ShipperState};
use crate::retry::Backoff;

/// Longest line held before it is passed on unfinished: under four maximal
/// events even after one more 16 KiB Docker message, so a line fits one batch.
const MAX_LINE: usize = 4 * MAX_MESSAGE_BYTES - 64 * 1024;
/// Budget charged per event on top of its message bytes (bookkeeping).
const EVENT_COST: usize = 64;

/// One line's events on their way to the uploader.
#[derive(Debug)]
struct LineEvents {
    events: Vec<Event>,
    /// Budget it holds until its batch is settled.
    cost: usize,
}

/// How a pass over a container's log ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// The container stopped or went: everything it wrote is delivered and
    /// checkpointed.
    Drained,
    /// The shipper stops (or the follower had to give up): the rest is read
    /// from the checkpoint next time.
    Interrupted,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum TaskError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("shipping was stopped")]
    Stopped,
}

/// Ships container `id` of `developer` until it stops and its lines are
/// delivered, following it again if it restarts meanwhile.
pub(super) async fn run(ctx: Arc<ShipperState>, id: String, developer: String) {
    let mut backoff = Backoff::standard();
    loop {
        match ship(&ctx, &id, &developer).await {
            Ok(Pass::Drained) => {
                backoff.reset();
                ctx.status.drained(&id);
            }
            Ok(Pass::Interrupted) | Err(TaskError::Stopped) => backoff.reset(),
            Err(e) => {
                // The checkpoint cannot be read or written (and retrying the
                // write in place did not help): without checkpoints nothing
                // can be shipped exactly once, so wait and try again.
                let delay = backoff.next_delay();
                tracing::error!(developer = %developer, container = %short(&id), error = %e, retry_in = ?delay, "container log shipping failed");
                ctx.status.failed(&developer, &e.to_string());
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = ctx.stop.requested() => {}
                }
            }
        }
        if ctx.stop.is_set() {
            ctx.registry.release(&id);
            return;
        }
        match ctx.registry.finish(&id) {
            Finish::Restart => continue,
            Finish::Done { destroyed } => {
                if destroyed && let Err(e) = ctx.store.remove(&id) {
                    tracing::warn!(container = %short(&id), error = %e, "cannot remove log checkpoint");
                }
                return;
            }
        }
    }
}

pub(super) fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// One pass: settle a batch left in flight, then follow and ship until the
/// container stops (and everything read is delivered) or the shipper stops.
async fn ship(ctx: &Arc<ShipperState>, id: &str, developer: &str) -> Result<Pass, TaskError> {
    let mut cp = load(&ctx.store, id, developer).await?;
    let group = ctx.config.render(&ctx.config.logs.group, developer);
    let mut sink = Sink::new(
        ctx.client.clone(),
        group.clone(),
        ctx.stream.clone(),
        ctx.config.logs.retention_days,
        ctx.options.readback_settle,
    );
    ctx.status.following(developer, id, &group, &ctx.stream);

    if let Some(inflight) = cp.inflight.clone() {
        settle_inflight(ctx, &mut sink, &mut cp, &inflight, developer).await?;
        save_retrying(ctx, &cp, developer).await?;
    }

    let budget_total = ctx.options.buffer_bytes.max(1);
    let budget = Arc::new(Semaphore::new(budget_total));
    let (tx, mut rx) = mpsc::channel::<LineEvents>(4096);
    let buffered = Arc::new(Buffered::default());
    let follower = tokio::spawn(follow(
        ctx.clone(),
        id.to_string(),
        developer.to_string(),
        cp.position,
        Outbox {
            tx,
            budget: budget.clone(),
            budget_total,
            buffered: buffered.clone(),
        },
    ));

    let limits = Limits::for_retention(ctx.config.logs.retention_days);
    let mut batcher = Batcher::new(limits);
    let mut flush_at: Option<Instant> = None;
    let result = loop {
        let batches: Vec<Batch> = tokio::select! {
            line = rx.recv() => match line {
                Some(line) => {
                    let closed = batcher.push_line(line.events, line.cost, now_ms());
                    if flush_at.is_none() {
                        flush_at = Some(Instant::now() + ctx.options.flush_interval);
                    }
                    closed
                }
                None => {
                    // The follower is done: ship the rest and finish.
                    let last = batcher.take();
                    match ship_all(ctx, &mut sink, &mut cp, last.into_iter().collect(), &budget, &buffered, developer).await {
                        Ok(()) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                }
            },
            _ = sleep_until_opt(flush_at) => {
                flush_at = None;
                batcher.take().into_iter().collect()
            }
        };
        if batches.is_empty() {
            continue;
        }
        if let Err(e) = ship_all(
            ctx, &mut sink, &mut cp, batches, &budget, &buffered, developer,
        )
        .await
        {
            break Err(e);
        }
        flush_at = (!batcher.is_empty()).then(|| Instant::now() + ctx.options.flush_interval);
    };
    // A follower waiting for budget that will never come back (the uploader
    // failed) must not hang this task: closing the budget wakes it.
    budget.close();
    drop(rx);
    let ended = follower.await.unwrap_or(Pass::Interrupted);
    // Whatever was never shipped was never checkpointed: the next start reads
    // it from Docker again. It is no longer buffered here.
    let (events, bytes) = buffered.take();
    ctx.status.unbuffered(developer, events, bytes);
    result.map(|()| ended)
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn ship_all(
    ctx: &ShipperState,
    sink: &mut Sink,
    cp: &mut Checkpoint,
    batches: Vec<Batch>,
    budget: &Semaphore,
    buffered: &Buffered,
    developer: &str,
) -> Result<(), TaskError> {
    for batch in batches {
        ship_batch(ctx, sink, cp, &batch, developer).await?;
        budget.add_permits(batch.cost);
        let events = batch.events.len() as u64 + batch.too_old + batch.too_new;
        buffered.sub(events, batch.cost as u64);
        ctx.status.unbuffered(developer, events, batch.cost as u64);
    }
    Ok(())
}

/// Delivers one batch and advances the checkpoint: in-flight record first, then
/// the put, then the new position.
async fn ship_batch(
    ctx: &ShipperState,
    sink: &mut Sink,
    cp: &mut Checkpoint,
    batch: &Batch,
    developer: &str,
) -> Result<(), TaskError> {
    let mut rejected = (batch.too_old, batch.too_new);
    if let (Some(first_ms), Some(last_ms)) = (batch.first_ms(), batch.last_ms()) {
        let inflight = Inflight {
            end: batch.end,
            first_ms,
            last_ms,
            events: batch.events.len() as u64,
            tail_after: cp.tail.after(batch.events.iter().map(|e| e.0)),
            started_ms: now_ms(),
        };
        cp.inflight = Some(inflight.clone());
        let started = Instant::now();
        save_retrying(ctx, cp, developer).await?;
        let saved = started.elapsed();
        let delivered = sink
            .deliver(
                batch,
                cp.tail,
                ctx.options.backoff.clone(),
                &ctx.status,
                developer,
                &ctx.stop,
            )
            .await
            .map_err(|_| TaskError::Stopped)?;
        tracing::debug!(
            developer = %developer,
            events = batch.events.len(),
            in_flight_record = ?saved,
            put = ?started.elapsed().saturating_sub(saved),
            "batch delivered"
        );
        match delivered {
            Delivered::Sent {
                accepted,
                too_old,
                too_new,
            } => {
                let stored = batch.events.get(accepted).unwrap_or_default();
                cp.tail = cp.tail.after(stored.iter().map(|e| e.0));
                let bytes: usize = stored.iter().map(|e| e.1.len()).sum();
                ctx.status.shipped(
                    developer,
                    stored.len() as u64,
                    bytes as u64,
                    stored.last().map(|e| e.0),
                );
                rejected.0 += too_old;
                rejected.1 += too_new;
            }
            Delivered::Landed => {
                cp.tail = inflight.tail_after;
                let bytes: usize = batch.events.iter().map(|e| e.1.len()).sum();
                ctx.status
                    .shipped(developer, inflight.events, bytes as u64, Some(last_ms));
                ctx.status.landed_by_readback(developer);
            }
        }
    }
    if rejected.0 + rejected.1 > 0 {
        tracing::warn!(developer = %developer, too_old = rejected.0, too_new = rejected.1, "log events outside CloudWatch's accepted time window were not shipped");
        ctx.status.rejected(developer, rejected.0, rejected.1);
    }
    if let Some(end) = batch.end {
        cp.position = end;
    }
    cp.inflight = None;
    let started = Instant::now();
    save_retrying(ctx, cp, developer).await?;
    tracing::debug!(
        developer = %developer,
        events = batch.events.len(),
        bytes = batch.bytes,
        checkpoint = ?started.elapsed(),
        "batch settled"
    );
    Ok(())
}

/// A batch was in flight when the agent stopped: find out whether it landed
/// (after giving CloudWatch a moment), and settle the checkpoint accordingly.
async fn settle_inflight(
    ctx: &ShipperState,
    sink: &mut Sink,
    cp: &mut Checkpoint,
    inflight: &Inflight,
    developer: &str,
) -> Result<(), TaskError> {
    let wait = settle_delay(inflight.started_ms, now_ms(), ctx.options.readback_settle);
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = ctx.stop.requested() => return Err(TaskError::Stopped),
    }
    let mut backoff = ctx.options.backoff.clone();
    let landed = loop {
        let attempt = async {
            sink.ensure().await?;
            sink.landed(
                inflight.first_ms,
                inflight.last_ms,
                cp.tail.before(inflight.first_ms),
            )
            .await
        };
        match attempt.await {
            Ok(l) => break l,
            Err(e) => {
                ctx.status.failed(developer, &e.to_string());
                let delay = backoff.next_delay();
                tracing::warn!(developer = %developer, error = %e, retry_in = ?delay, "cannot read back the batch in flight; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = ctx.stop.requested() => return Err(TaskError::Stopped),
                }
            }
        }
    };
    tracing::info!(developer = %developer, container = %short(&cp.container_id), landed, events = inflight.events, "settled the log batch in flight at the last stop");
    if landed {
        if let Some(end) = inflight.end {
            cp.position = end;
        }
        cp.tail = inflight.tail_after;
        ctx.status.landed_by_readback(developer);
    }
    cp.inflight = None;
    Ok(())
}

/// Reads the container's log from `resume` into `tx`, within the byte budget,
/// until the container stops (or is removed: [`Pass::Drained`]) or the shipper
/// stops ([`Pass::Interrupted`]).
async fn follow(
    ctx: Arc<ShipperState>,
    id: String,
    developer: String,
    resume: Position,
    out: Outbox,
) -> Pass {
    let mut re = Reassembler::new(resume, MAX_LINE);
    let mut backoff = Backoff::standard();
    loop {
        let since = i32::try_from(re.position().since_secs()).unwrap_or(i32::MAX);
        let options = LogsOptionsBuilder::new()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .since(since)
            .build();
        let mut stream = ctx.docker.logs(&id, Some(options));
        let ended = loop {
            let item = tokio::select! {
                biased;
                _ = ctx.stop.requested() => return Pass::Interrupted,
                item = stream.next() => item,
            };
            let (source, message) = match item {
                Some(Ok(LogOutput::StdOut { message }))
                | Some(Ok(LogOutput::Console { message })) => (Source::Stdout, message),
                Some(Ok(LogOutput::StdErr { message })) => (Source::Stderr, message),
                Some(Ok(LogOutput::StdIn { .. })) => continue,
                Some(Err(e)) => break Some(e),
                None => break None,
            };
            if let Some(line) = re.push(source, &message)
                && !out.send(&ctx, &developer, line).await
            {
                return Pass::Interrupted;
            }
        };
        let running = match ended {
            Some(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => false,
            Some(e) => {
                ctx.status
                    .failed(&developer, &format!("docker logs {}: {e}", short(&id)));
                tracing::warn!(developer = %developer, container = %short(&id), error = %e, "following container log failed; following again");
                true
            }
            None => match ctx.docker.inspect_container(&id, None).await {
                Ok(c) => c.state.and_then(|s| s.running).unwrap_or(false),
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => false,
                Err(e) => {
                    tracing::warn!(container = %short(&id), error = %e, "cannot inspect container; following again");
                    true
                }
            },
        };
        if !running {
            // Stopped or removed: unfinished lines are final.
            for line in re.flush() {
                if !out.send(&ctx, &developer, line).await {
                    return Pass::Interrupted;
                }
            }
            return Pass::Drained;
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay.min(Duration::from_secs(5))) => {}
            _ = ctx.stop.requested() => return Pass::Interrupted,
        }
        re.resume();
    }
}

/// Events read but not yet settled by this task, mirrored into the status.
#[derive(Debug, Default)]
struct Buffered {
    events: AtomicU64,
    bytes: AtomicU64,
}

impl Buffered {
    fn add(&self, events: u64, bytes: u64) {
        self.events.fetch_add(events, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn sub(&self, events: u64, bytes: u64) {
        self.events.fetch_sub(
            events.min(self.events.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        self.bytes.fetch_sub(
            bytes.min(self.bytes.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
    }

    fn take(&self) -> (u64, u64) {
        (
            self.events.swap(0, Ordering::Relaxed),
            self.bytes.swap(0, Ordering::Relaxed),
        )
    }
}

/// The follower's side of the bounded buffer.
struct Outbox {
    tx: mpsc::Sender<LineEvents>,
    budget: Arc<Semaphore>,
    budget_total: usize,
    buffered: Arc<Buffered>,
}

impl Outbox {
    /// Turns a line into events and hands them over, waiting for budget (this is
    /// the back-pressure: while the buffer is full, Docker is not read). False
    /// when the shipper stops.
    async fn send(&self, ctx: &ShipperState, developer: &str, line: Line) -> bool {
        let timestamp_ms = line.ts_ns.div_euclid(1_000_000);
        let pieces = split_message(&line.bytes, MAX_MESSAGE_BYTES);
        let n = pieces.len();
        let cost = pieces
            .iter()
            .map(|p| p.len() + EVENT_COST)
            .sum::<usize>()
            .min(self.budget_total);
        let events = pieces
            .into_iter()
            .enumerate()
            .map(|(i, message)| Event {
                timestamp_ms,
                message,
                end: (i + 1 == n).then_some(line.end),
            })
            .collect();
        let permits = u32::try_from(cost).unwrap_or(u32::MAX);
        tokio::select! {
            p = self.budget.acquire_many(permits) => match p {
                Ok(p) => p.forget(),
                Err(_) => return false,
            },
            _ = ctx.stop.requested() => return false,
        }
        self.buffered.add(n as u64, cost as u64);
        ctx.status
            .buffered(developer, n as u64, cost as u64, timestamp_ms);
        self.tx.send(LineEvents { events, cost }).await.is_ok()
    }
}
