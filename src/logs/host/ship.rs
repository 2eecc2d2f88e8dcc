//! One source: settle a batch left in flight, then follow journalctl from the
//! checkpointed cursor, batch, deliver, and advance the cursor after each put.

use std::sync::Arc;

use tokio::time::Instant;

use super::checkpoint::{HostCheckpoint, HostInflight};
use super::journal::{Query, ReadError, Reader, parse};
use super::{HostCtx, Source};
use crate::logs::batch::{Batch, Batcher, Event, Limits, MAX_MESSAGE_BYTES, split_message};
use crate::logs::flush::FlushTimer;
use crate::logs::sink::{Delivered, Sink, settle_delay};
use crate::logs::status::now_ms;
use crate::logs::{CheckpointError, SinkError};
use crate::retry::{Backoff, Class};

/// Where the journal is settled up to once an event is shipped.
#[derive(Debug, Clone, PartialEq, Eq)]
struct At {
    cursor: String,
    /// The entry's own timestamp (ms), for status.
    ms: i64,
}

#[derive(Debug, thiserror::Error)]
enum PassError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Journal(#[from] ReadError),
    #[error("{0}")]
    Ended(String),
    #[error("shipping was stopped")]
    Stopped,
}

/// Ships `source` until the shipper stops; journalctl ending or a checkpoint
/// that cannot be written starts the pass again after a backoff.
pub(super) async fn run(ctx: Arc<HostCtx>, source: Source) {
    let mut backoff = Backoff::standard();
    loop {
        let result = pass(&ctx, &source, &mut backoff).await;
        ctx.status.host_reading(source.name, false);
        let e = match result {
            Ok(()) | Err(PassError::Stopped) => return,
            Err(e) => e,
        };
        if ctx.stop.is_set() {
            return;
        }
        let delay = backoff.next_delay();
        ctx.status.host_failed(source.name, &e.to_string());
        tracing::warn!(source = source.name, error = %e, retry_in = ?delay, "host logs: reading the journal failed; starting again");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = ctx.stop.requested() => return,
        }
    }
}

/// One run of journalctl, until the stop (Ok) or until it ends (Err).
async fn pass(ctx: &HostCtx, source: &Source, backoff: &mut Backoff) -> Result<(), PassError> {
    let name = source.name;
    let mut cp = load(ctx, source).await?;
    if let Some(inflight) = cp.inflight.clone() {
        // Settled in the group it was sent to, even if the config moved on.
        let mut old = sink(ctx, &cp.group);
        settle_inflight(ctx, name, &mut old, &mut cp, &inflight).await?;
        save(ctx, name, &cp).await?;
    }
    if cp.group != source.group {
        // A new group: its stream holds nothing of ours yet. The timestamp
        // floor stays.
        cp.group = source.group.clone();
        cp.tail.count = 0;
    }
    let mut sink = sink(ctx, &source.group);
    ctx.status
        .host_source(name, &source.group, &ctx.stream, cp.cursor_ms);

    let limits = Limits::for_retention(ctx.retention_days);
    let query = Query {
        journal: ctx.journal.clone(),
        after_cursor: cp.cursor.clone(),
        since_secs: (now_ms() - limits.max_age_ms) / 1000,
        matches: source.matches.clone(),
    };
    let mut reader = Reader::start(&query)?;
    ctx.status.host_reading(name, true);

    let mut batcher: Batcher<At> = Batcher::new(limits);
    // Never stamp an event earlier than one already shipped (module doc).
    let mut floor = cp.tail.ts_ms;
    // The newest entry read, when it was not selected: the cursor may move
    // there once nothing selected before it is waiting.
    let mut skipped: Option<At> = None;
    let mut timer = FlushTimer::new(ctx.options.flush_interval, ctx.options.quiet_flush);
    let ended = loop {
        tokio::select! {
            biased;
            _ = ctx.stop.requested() => break None,
            line = reader.next_line() => match line {
                Ok(Some(line)) => {
                    let entry = match parse(&line) {
                        Ok(e) => e,
                        Err(e) => {
                            tracing::warn!(source = name, error = %e, "host logs: journalctl wrote a line that is not an entry; skipped");
                            continue;
                        }
                    };
                    let at = At { cursor: entry.cursor.clone(), ms: entry.timestamp_ms() };
                    timer.line(Instant::now());
                    if !source.keeps(&entry) {
                        ctx.status.host_skipped(name);
                        skipped = Some(at);
                        continue;
                    }
                    skipped = None;
                    let ts = entry.timestamp_ms().max(floor);
                    floor = ts;
                    let pieces = split_message(&entry.line(), MAX_MESSAGE_BYTES);
                    let n = pieces.len();
                    let mut end = Some(at);
                    let events = pieces
                        .into_iter()
                        .enumerate()
                        .map(|(i, message)| Event {
                            timestamp_ms: ts,
                            message,
                            end: if i + 1 == n { end.take() } else { None },
                        })
                        .collect();
                    ctx.status.host_buffered(name, n as i64);
                    // The cost is the event count: status counts what waits.
                    for batch in batcher.push_line(events, n, now_ms()) {
                        ship_batch(ctx, name, &mut sink, &mut cp, &batch).await?;
                        backoff.reset();
                    }
                }
                Ok(None) => break Some(None),
                Err(e) => break Some(Some(e.to_string())),
            },
            _ = timer.wait() => {
                timer.clear();
                if let Some(batch) = batcher.take() {
                    ship_batch(ctx, name, &mut sink, &mut cp, &batch).await?;
                    backoff.reset();
                }
                if let Some(at) = skipped.take() {
                    advance_past_skipped(ctx, name, &mut cp, at).await?;
                }
            }
        }
    };
    // Stopping, or journalctl ended: deliver what was read (bounded by the
    // flush time after a stop), then stop journalctl.
    if let Some(batch) = batcher.take() {
        ship_batch(ctx, name, &mut sink, &mut cp, &batch).await?;
    }
    if let Some(at) = skipped.take() {
        advance_past_skipped(ctx, name, &mut cp, at).await?;
    }
    let how = reader.finish().await;
    match ended {
        None => Ok(()),
        Some(None) => Err(PassError::Ended(how)),
        Some(Some(read_error)) => Err(PassError::Ended(format!("{read_error}; {how}"))),
    }
}

fn sink(ctx: &HostCtx, group: &str) -> Sink {
    Sink::new(
        ctx.client.clone(),
        group.to_string(),
        ctx.stream.clone(),
        ctx.retention_days,
        ctx.options.readback_settle,
    )
}

/// Nothing selected waits before `at` (the batcher is empty): the cursor moves
/// past the unselected entries without a put, so a restart does not read them
/// again.
async fn advance_past_skipped(
    ctx: &HostCtx,
    name: &'static str,
    cp: &mut HostCheckpoint,
    at: At,
) -> Result<(), PassError> {
    cp.cursor = Some(at.cursor);
    cp.cursor_ms = Some(at.ms);
    save(ctx, name, cp).await?;
    ctx.status.host_checkpoint(name, cp.cursor_ms);
    Ok(())
}

/// Delivers one batch and advances the cursor: in-flight record first, then
/// the put, then the new cursor.
async fn ship_batch(
    ctx: &HostCtx,
    name: &'static str,
    sink: &mut Sink,
    cp: &mut HostCheckpoint,
    batch: &Batch<At>,
) -> Result<(), PassError> {
    let mut rejected = (batch.too_old, batch.too_new);
    if let (Some(first_ms), Some(last_ms)) = (batch.first_ms(), batch.last_ms()) {
        let inflight = HostInflight {
            end: batch.end.as_ref().map(|a| a.cursor.clone()),
            end_ms: batch.end.as_ref().map(|a| a.ms),
            first_ms,
            last_ms,
            events: batch.events.len() as u64,
            tail_after: cp.tail.after(batch.events.iter().map(|e| e.0)),
            started_ms: now_ms(),
        };
        cp.inflight = Some(inflight.clone());
        save(ctx, name, cp).await?;
        let delivered = sink
            .deliver_reporting(
                batch,
                cp.tail,
                ctx.options.backoff.clone(),
                &ctx.stop,
                |e: &SinkError, delay| {
                    ctx.status.host_failed(name, &e.to_string());
                    tracing::warn!(source = name, error = %e, retry_in = ?delay, "shipping host logs failed; retrying");
                },
            )
            .await
            .map_err(|_| PassError::Stopped)?;
        match delivered {
            Delivered::Sent {
                accepted,
                too_old,
                too_new,
            } => {
                let stored = batch.events.get(accepted).unwrap_or_default();
                cp.tail = cp.tail.after(stored.iter().map(|e| e.0));
                let bytes: usize = stored.iter().map(|e| e.1.len()).sum();
                ctx.status.host_shipped(
                    name,
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
                    .host_shipped(name, inflight.events, bytes as u64, Some(last_ms));
                ctx.status.host_landed(name);
            }
        }
    }
    if rejected.0 + rejected.1 > 0 {
        tracing::warn!(
            source = name,
            too_old = rejected.0,
            too_new = rejected.1,
            "journal entries outside CloudWatch's accepted time window were not shipped"
        );
        ctx.status.host_rejected(name, rejected.0, rejected.1);
    }
    if let Some(end) = &batch.end {
        cp.cursor = Some(end.cursor.clone());
        cp.cursor_ms = Some(end.ms);
    }
    cp.inflight = None;
    save(ctx, name, cp).await?;
    ctx.status.host_checkpoint(name, cp.cursor_ms);
    ctx.status.host_buffered(name, -(batch.cost as i64));
    Ok(())
}

/// A batch was in flight when the agent stopped: find out whether it landed
/// (after giving CloudWatch a moment) and settle the checkpoint accordingly.
async fn settle_inflight(
    ctx: &HostCtx,
    name: &'static str,
    sink: &mut Sink,
    cp: &mut HostCheckpoint,
    inflight: &HostInflight,
) -> Result<(), PassError> {
    let wait = settle_delay(inflight.started_ms, now_ms(), ctx.options.readback_settle);
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = ctx.stop.requested() => return Err(PassError::Stopped),
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
                ctx.status.host_failed(name, &e.to_string());
                let delay = backoff.next_delay();
                tracing::warn!(source = name, error = %e, retry_in = ?delay, "host logs: cannot read back the batch in flight; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = ctx.stop.requested() => return Err(PassError::Stopped),
                }
            }
        }
    };
    tracing::info!(
        source = name,
        landed,
        events = inflight.events,
        "host logs: settled the batch in flight at the last stop"
    );
    if landed {
        if inflight.end.is_some() {
            cp.cursor = inflight.end.clone();
            cp.cursor_ms = inflight.end_ms;
        }
        cp.tail = inflight.tail_after;
        ctx.status.host_landed(name);
    }
    cp.inflight = None;
    Ok(())
}

async fn load(ctx: &HostCtx, source: &Source) -> Result<HostCheckpoint, PassError> {
    let (store, name) = (ctx.store.clone(), source.name);
    let fresh = || HostCheckpoint {
        group: source.group.clone(),
        ..HostCheckpoint::default()
    };
    match blocking(move || store.load(name)).await {
        Ok(Some(cp)) => Ok(cp),
        Ok(None) => Ok(fresh()),
        Err(e @ CheckpointError::Corrupt { .. }) => {
            // Cannot happen with atomic writes; if it does, ship again rather
            // than skip anything.
            tracing::error!(source = name, error = %e, "host log checkpoint unreadable; shipping from the start of the window");
            Ok(fresh())
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes the checkpoint, retrying in place while the disk may accept it later
/// (full, over quota), as the container shipper does.
async fn save(ctx: &HostCtx, name: &'static str, cp: &HostCheckpoint) -> Result<(), PassError> {
    let mut backoff = ctx.options.backoff.clone();
    loop {
        let (store, c) = (ctx.store.clone(), cp.clone());
        let e = match blocking(move || store.save(name, &c)).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        ctx.status.host_failed(name, &e.to_string());
        if e.class() != Class::Transient {
            return Err(e.into());
        }
        let delay = backoff.next_delay();
        if backoff.attempts() == 1 {
            tracing::error!(source = name, error = %e, "cannot write the host log checkpoint; shipping waits and retries (the journal keeps the entries)");
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = ctx.stop.requested() => return Err(PassError::Stopped),
        }
    }
}

async fn blocking<T: Send + 'static>(
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
