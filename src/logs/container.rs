//! One managed container: a follower reads its Docker log into a bounded buffer,
//! and an uploader batches, delivers and checkpoints, in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::query_parameters::{LogsOptionsBuilder, WaitContainerOptionsBuilder};
use futures_util::StreamExt;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use super::batch::{Batch, Batcher, Event, Limits, MAX_MESSAGE_BYTES, split_message};
use super::checkpoint::{Checkpoint, CheckpointError, Inflight};
use super::flush::FlushTimer;
use super::follow::{Line, Mark, Position, Reassembler, Source};
use super::jsonfile;
use super::persist::{load, save_retrying};
use super::sink::{Delivered, Sink, settle_delay};
use super::status::now_ms;
use super::tail::{Lost, Read2, Start, Tail};
use super::{Finish, ShipperState};
use crate::retry::Backoff;

/// Longest line held before it is passed on unfinished: under four maximal
/// events even after one more 16 KiB Docker message, so a line fits one batch.
const MAX_LINE: usize = 4 * MAX_MESSAGE_BYTES - 64 * 1024;
/// Budget charged per event on top of its message bytes (bookkeeping).
const EVENT_COST: usize = 64;

/// Lines' events on their way to the uploader (a line's pieces are together,
/// the last one carrying the line's end).
#[derive(Debug)]
struct Chunk {
    events: Vec<Event<Mark>>,
    /// Budget it holds until its batches are settled.
    cost: usize,
}

/// Adds a chunk's events to the batcher, each charged its share of the chunk's
/// cost; returns the batches closed on the way.
fn push_chunk(batcher: &mut Batcher<Mark>, chunk: Chunk, now_ms: i64) -> Vec<Batch<Mark>> {
    let mut closed = Vec::new();
    let mut left = chunk.cost;
    let mut line: Vec<Event<Mark>> = Vec::new();
    let mut line_cost = 0;
    for event in chunk.events {
        let cost = (event.message.len() + EVENT_COST).min(left);
        left -= cost;
        if event.end.is_some() && line.is_empty() {
            let (_, batch) = batcher.push(event, cost, now_ms);
            closed.extend(batch);
            continue;
        }
        // A piece of a split line: the line goes into one batch together.
        let last = event.end.is_some();
        line.push(event);
        line_cost += cost;
        if last {
            closed.extend(batcher.push_line(std::mem::take(&mut line), line_cost, now_ms));
            line_cost = 0;
        }
    }
    if !line.is_empty() {
        closed.extend(batcher.push_line(line, line_cost, now_ms));
    }
    closed
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
    let (tx, mut rx) = mpsc::channel::<Chunk>(1024);
    let buffered = Arc::new(Buffered::default());
    let follower = tokio::spawn(follow(
        ctx.clone(),
        id.to_string(),
        developer.to_string(),
        Mark {
            position: cp.position,
            file: cp.file,
        },
        Outbox {
            tx,
            budget: budget.clone(),
            budget_total,
            buffered: buffered.clone(),
        },
    ));

    let limits = Limits::for_retention(ctx.config.logs.retention_days);
    let mut batcher = Batcher::<Mark>::new(limits);
    let mut timer = FlushTimer::new(ctx.options.flush_interval, ctx.options.quiet_flush);
    let result = loop {
        let batches: Vec<Batch<Mark>> = tokio::select! {
            // Lines already queued come before the timer: the log is not quiet.
            biased;
            chunk = rx.recv() => match chunk {
                Some(chunk) => {
                    timer.line(Instant::now());
                    push_chunk(&mut batcher, chunk, now_ms())
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
            _ = timer.wait() => {
                timer.clear();
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
        timer.sent(!batcher.is_empty(), Instant::now());
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

async fn ship_all(
    ctx: &ShipperState,
    sink: &mut Sink,
    cp: &mut Checkpoint,
    batches: Vec<Batch<Mark>>,
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
    batch: &Batch<Mark>,
    developer: &str,
) -> Result<(), TaskError> {
    let mut rejected = (batch.too_old, batch.too_new);
    if let (Some(first_ms), Some(last_ms)) = (batch.first_ms(), batch.last_ms()) {
        let inflight = Inflight {
            end: batch.end.map(|m| m.position),
            end_file: batch.end.and_then(|m| m.file),
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
        cp.position = end.position;
        // None from the API reader: a later file reader then starts from the
        // position, never from a stale offset.
        cp.file = end.file;
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
            cp.file = inflight.end_file;
        }
        cp.tail = inflight.tail_after;
        ctx.status.landed_by_readback(developer);
    }
    cp.inflight = None;
    Ok(())
}

/// Reads the container's log from `resume` into the outbox, within the byte
/// budget, until the container stops (or is removed: [`Pass::Drained`]) or the
/// shipper stops ([`Pass::Interrupted`]): from its json-file when it has one,
/// else through the Docker logs API.
async fn follow(
    ctx: Arc<ShipperState>,
    id: String,
    developer: String,
    resume: Mark,
    out: Outbox,
) -> Pass {
    let path = if ctx.read_files {
        match json_log_path(&ctx, &id, &developer).await {
            Some(p) => p,
            None => return Pass::Interrupted,
        }
    } else {
        None
    };
    match path {
        Some(path) => follow_file(ctx, id, developer, path, resume, out).await,
        None => follow_api(ctx, id, developer, resume.position, out).await,
    }
}

/// The container's json-file log, when it logs with that driver (`Some(None)`
/// for another driver, or a container already gone). Docker failing to answer
/// is retried rather than taken for "no file": the API reader it would fall
/// back to loses rotated files without counting them. A container created but
/// not yet started has no log file yet (the startup listing includes it): this
/// waits for the start. None: the shipper stops.
async fn json_log_path(
    ctx: &ShipperState,
    id: &str,
    developer: &str,
) -> Option<Option<std::path::PathBuf>> {
    use bollard::models::ContainerStateStatusEnum;
    let mut backoff = Backoff::standard();
    loop {
        let delay = match ctx.docker.inspect_container(id, None).await {
            Ok(c) => {
                let driver = c
                    .host_config
                    .as_ref()
                    .and_then(|h| h.log_config.as_ref())
                    .and_then(|l| l.typ.as_deref());
                if driver != Some("json-file") {
                    return Some(None);
                }
                if let Some(path) = c.log_path.filter(|p| !p.is_empty()) {
                    return Some(Some(path.into()));
                }
                let created = c.state.as_ref().and_then(|s| s.status)
                    == Some(ContainerStateStatusEnum::CREATED);
                if !created {
                    return Some(None);
                }
                tracing::debug!(developer = %developer, container = %short(id), "container not started yet; waiting for its log file");
                backoff.next_delay().min(Duration::from_secs(5))
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Some(None),
            Err(e) => {
                let delay = backoff.next_delay().min(Duration::from_secs(5));
                tracing::warn!(developer = %developer, container = %short(id), error = %e, retry_in = ?delay, "inspecting the container for its log file failed; retrying");
                delay
            }
        };
        tokio::select! {
            _ = ctx.stop.requested() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Cost of the lines one chunk carries to the uploader, at most.
fn chunk_limit(budget_total: usize) -> usize {
    (budget_total / 4).clamp(1, 512 * 1024)
}

/// Safety poll of the log file when inotify wakes us (and when it cannot).
/// inotify reports every write, rename and create in the log's directory (an
/// overflowed queue still wakes us), so the poll only guards against the
/// unforeseen; it is long because every idle container pays it.
const POLL_WITH_INOTIFY: Duration = Duration::from_secs(30);
const POLL_WITHOUT_INOTIFY: Duration = Duration::from_millis(250);

/// Tails the json-file log at `path` (see [`super::tail`]); the container's
/// stop is learnt from Docker's wait, after which the file holds all it wrote.
async fn follow_file(
    ctx: Arc<ShipperState>,
    id: String,
    developer: String,
    path: std::path::PathBuf,
    resume: Mark,
    out: Outbox,
) -> Pass {
    let opened = {
        let (path, file) = (path.clone(), resume.file);
        let hold = ctx.config.logs.hold_rotated_files as usize;
        tokio::task::spawn_blocking(move || Tail::open(&path, file, hold)).await
    };
    let (mut tail, start) = match opened {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::warn!(developer = %developer, container = %short(&id), path = %path.display(), error = %e, "cannot read the container's json-file log; following it through the Docker API");
            return follow_api(ctx, id, developer, resume.position, out).await;
        }
        Err(e) => {
            tracing::warn!(developer = %developer, container = %short(&id), error = %e, "opening the container log failed; following it through the Docker API");
            return follow_api(ctx, id, developer, resume.position, out).await;
        }
    };
    let mut re = match (&start, resume.file) {
        (Start::Resumed, Some(_)) => Reassembler::continuing(resume, MAX_LINE),
        (Start::Lost(why), _) => {
            tracing::warn!(developer = %developer, container = %short(&id), why = %why, "the checkpointed container log file was rotated away; lines in it that were not shipped are lost");
            Reassembler::continuing(
                Mark {
                    position: resume.position,
                    file: None,
                },
                MAX_LINE,
            )
        }
        // From the start; a checkpoint written by the Docker-API reader says
        // what of it is shipped already.
        _ => Reassembler::migrating(resume.position, MAX_LINE),
    };
    let watcher = path.parent().and_then(Watcher::new);
    let poll = if watcher.is_some() {
        POLL_WITH_INOTIFY
    } else {
        POLL_WITHOUT_INOTIFY
    };
    let exited = container_stopped(&ctx, &id);
    tokio::pin!(exited);
    let mut stopped = false;
    let limit = chunk_limit(out.budget_total);
    let mut scratch = Vec::new();
    let mut pending: Vec<Line> = Vec::new();
    let mut pending_cost = 0;
    let mut bad_lines = 0u64;
    let mut backoff = Backoff::standard();
    let mut files = FilesReported::default();
    files.report(&ctx, &developer, &id, &tail);
    loop {
        // Lines until a chunk is full (then hand it over and read on) or the
        // buffer is empty (then read more first).
        let mut full = false;
        while let Some(raw) = tail.next_line() {
            let line = match jsonfile::parse(raw.bytes, &mut scratch) {
                Ok(e) => re.push_entry(
                    e.source,
                    e.time_ns,
                    e.log(raw.bytes, &scratch),
                    raw.before,
                    raw.after,
                ),
                Err(e) => {
                    bad_lines += 1;
                    if bad_lines == 1 || bad_lines.is_power_of_two() {
                        tracing::warn!(developer = %developer, container = %short(&id), error = %e, lines = bad_lines, "skipping a line of the json-file log that is not a log entry");
                    }
                    re.skip_entry(raw.after);
                    None
                }
            };
            if let Some(line) = line {
                pending_cost += line.bytes.len() + EVENT_COST;
                pending.push(line);
                if pending_cost >= limit {
                    full = true;
                    break;
                }
            }
        }
        let read = if full {
            Ok(Read2::Data)
        } else {
            let read = tail.read();
            files.report(&ctx, &developer, &id, &tail);
            read
        };
        // A full chunk, or caught up: hand over what was read before waiting.
        if (full || !matches!(read, Ok(Read2::Data))) && !pending.is_empty() {
            pending_cost = 0;
            let lines = std::mem::take(&mut pending);
            if !send_looking_ahead(
                &ctx,
                &out,
                (&developer, &id),
                lines,
                &mut tail,
                &mut files,
                watcher.as_ref(),
            )
            .await
            {
                return Pass::Interrupted;
            }
        }
        let idle = matches!(read, Ok(Read2::Idle));
        let wait = match read {
            Ok(Read2::Data) => {
                backoff.reset();
                continue;
            }
            // Stopped: Docker no longer writes or rotates, so a missing
            // successor means the log went with the container.
            Ok(Read2::Idle | Read2::Rotating) if stopped => {
                // Stopped, and its log read to the end: unfinished lines are final.
                if !out.send(&ctx, &developer, re.flush()).await {
                    return Pass::Interrupted;
                }
                return Pass::Drained;
            }
            Ok(Read2::Idle) => poll,
            Ok(Read2::Rotating) => Duration::from_millis(20),
            Err(e) => {
                let delay = backoff.next_delay().min(Duration::from_secs(5));
                ctx.status
                    .failed(&developer, &format!("reading {}: {e}", path.display()));
                tracing::warn!(developer = %developer, container = %short(&id), path = %path.display(), error = %e, retry_in = ?delay, "reading the container log failed; retrying");
                delay
            }
        };
        let mut wait = wait;
        if let (Some(w), true) = (&watcher, idle) {
            // Armed now, so a write from here on wakes us; one from before it
            // would not: look once more.
            if w.arm(Watch::Writes).is_err() {
                wait = POLL_WITHOUT_INOTIFY;
            }
            if tail.grew() {
                continue;
            }
        }
        tokio::select! {
            biased;
            _ = ctx.stop.requested() => return Pass::Interrupted,
            _ = &mut exited, if !stopped => stopped = true,
            _ = wake(watcher.as_ref()) => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// What of a tail's rotation bookkeeping reached the status (and the log).
#[derive(Default)]
struct FilesReported {
    held: usize,
    lost: Lost,
}

impl FilesReported {
    fn report(&mut self, ctx: &ShipperState, developer: &str, id: &str, tail: &Tail) {
        let (held, lost) = (tail.held(), tail.lost());
        if held == self.held && lost == self.lost {
            return;
        }
        let new = Lost {
            files: lost.files - self.lost.files,
            bytes: lost.bytes - self.lost.bytes,
            gaps: lost.gaps - self.lost.gaps,
        };
        if new.files > 0 {
            tracing::warn!(developer = %developer, container = %short(id), files = new.files, bytes = new.bytes, hold = ctx.config.logs.hold_rotated_files, "container log files rotated away before they were shipped; their lines are lost (the shipper is behind by more than logs.hold_rotated_files)");
        }
        if new.gaps > 0 {
            tracing::warn!(developer = %developer, container = %short(id), "container log files may have rotated away unseen; lines in them are lost");
        }
        ctx.status.log_files(developer, held as u64, new);
        (self.held, self.lost) = (held, lost);
    }
}

/// How often a tail looks for new rotations while its lines wait for upload
/// budget and inotify says nothing (a safety net; inotify wakes it at once).
const LOOK_AHEAD_POLL: Duration = Duration::from_millis(500);

/// [`Outbox::send`], holding the log's newer files open while it waits for
/// budget: a back-pressured reader is where Docker's rotation could outrun it.
async fn send_looking_ahead(
    ctx: &ShipperState,
    out: &Outbox,
    (developer, id): (&str, &str),
    lines: Vec<Line>,
    tail: &mut Tail,
    files: &mut FilesReported,
    watcher: Option<&Watcher>,
) -> bool {
    let send = out.send(ctx, developer, lines);
    tokio::pin!(send);
    loop {
        if let Some(w) = watcher {
            // Only rotations matter while the reader waits; a watch on writes
            // would fire at once and cost dockerd.
            let _ = w.arm(Watch::Rotations);
        }
        tokio::select! {
            biased;
            sent = &mut send => return sent,
            _ = wake(watcher) => {}
            _ = tokio::time::sleep(LOOK_AHEAD_POLL) => {}
        }
        if let Err(e) = tail.look_ahead() {
            tracing::debug!(developer = %developer, error = %e, "looking for rotated log files failed; retrying");
        }
        files.report(ctx, developer, id, tail);
    }
}

/// Resolves once the container is not running (or is gone). Docker reports a
/// container stopped only after its log driver is closed, so by then the
/// json-file holds every line it wrote.
async fn container_stopped(ctx: &ShipperState, id: &str) {
    let mut backoff = Backoff::standard();
    loop {
        let options = WaitContainerOptionsBuilder::new()
            .condition("not-running")
            .build();
        let first = ctx.docker.wait_container(id, Some(options)).next().await;
        match first {
            Some(Ok(_))
            | Some(Err(bollard::errors::Error::DockerContainerWaitError { .. }))
            | Some(Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                ..
            })) => return,
            _ => {}
        }
        // The wait broke off (dockerd restarting?): ask, then wait again.
        let delay = match ctx.docker.inspect_container(id, None).await {
            Ok(c) if !c.state.as_ref().and_then(|s| s.running).unwrap_or(false) => return,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return,
            Ok(_) => {
                // Running: Docker answers again; wait again soon.
                backoff.reset();
                Duration::from_millis(100)
            }
            Err(_) => backoff.next_delay().min(Duration::from_secs(5)),
        };
        tokio::time::sleep(delay).await;
    }
}

async fn wake(watcher: Option<&Watcher>) {
    match watcher {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

/// inotify on the log's directory: Docker writing, rotating or creating the file.
///
/// The watch is one-shot, armed just before the reader waits: a watch left on
/// while Docker writes makes every write (one per line) queue an event in
/// dockerd's own write path, which measured at about a tenth of dockerd's CPU
/// during a flood (docs/benchmarks.md, "Issue 20").
struct Watcher {
    fd: tokio::io::unix::AsyncFd<InotifyFd>,
    dir: std::path::PathBuf,
}

/// What a reader waits for.
#[derive(Debug, Clone, Copy)]
enum Watch {
    /// Anything: more lines, or a rotation (caught up, waiting for lines).
    Writes,
    /// Files created, renamed or deleted (back-pressured: only rotations matter).
    Rotations,
}

struct InotifyFd(nix::sys::inotify::Inotify);

impl std::os::fd::AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

impl Watcher {
    fn new(dir: &std::path::Path) -> Option<Watcher> {
        use nix::sys::inotify::{InitFlags, Inotify};
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
        // SAFETY: InotifyFd owns the inotify descriptor (nix's Inotify holds an
        // OwnedFd) and always returns it; it stays open until the AsyncFd drops it.
        let fd = unsafe { tokio::io::unix::AsyncFd::register(InotifyFd(inotify)) };
        let w = Watcher {
            fd: fd.ok()?,
            dir: dir.to_path_buf(),
        };
        w.arm(Watch::Writes).ok()?;
        Some(w)
    }

    /// Arms the one-shot watch (replacing one still armed): the next event
    /// of this kind wakes [`changed`](Self::changed), then the watch is gone.
    fn arm(&self, what: Watch) -> nix::Result<()> {
        use nix::sys::inotify::AddWatchFlags as F;
        let rotations = F::IN_CREATE | F::IN_MOVED_FROM | F::IN_MOVED_TO | F::IN_DELETE;
        let mask = match what {
            Watch::Writes => rotations | F::IN_MODIFY | F::IN_CLOSE_WRITE,
            Watch::Rotations => rotations,
        };
        self.fd
            .get_ref()
            .0
            .add_watch(&self.dir, mask | F::IN_ONESHOT)
            .map(drop)
    }

    /// Resolves after something changed in the directory (events drained).
    async fn changed(&self) {
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                return std::future::pending().await;
            };
            match guard.try_io(|fd| fd.get_ref().0.read_events().map_err(std::io::Error::from)) {
                Ok(_) => return,
                Err(_would_block) => continue,
            }
        }
    }
}

/// Through the Docker logs API (drivers other than json-file): reads the log
/// from `resume` into the outbox until the container stops (or is removed:
/// [`Pass::Drained`]) or the shipper stops ([`Pass::Interrupted`]).
async fn follow_api(
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
                && !out.send(&ctx, &developer, vec![line]).await
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
            if !out.send(&ctx, &developer, re.flush()).await {
                return Pass::Interrupted;
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
    tx: mpsc::Sender<Chunk>,
    budget: Arc<Semaphore>,
    budget_total: usize,
    buffered: Arc<Buffered>,
}

impl Outbox {
    /// Turns lines into events and hands them over as one chunk, waiting for
    /// budget (this is the back-pressure: while the buffer is full, the log is
    /// not read). False when the shipper stops.
    async fn send(&self, ctx: &ShipperState, developer: &str, lines: Vec<Line>) -> bool {
        if lines.is_empty() {
            return true;
        }
        let mut events = Vec::with_capacity(lines.len());
        let mut cost = 0;
        let first_ms = lines[0].ts_ns.div_euclid(1_000_000);
        for line in lines {
            let timestamp_ms = line.ts_ns.div_euclid(1_000_000);
            let end = line.end;
            let pieces = match messages(line.bytes) {
                Ok(message) => {
                    cost += message.len() + EVENT_COST;
                    events.push(Event {
                        timestamp_ms,
                        message,
                        end: Some(end),
                    });
                    continue;
                }
                Err(pieces) => pieces,
            };
            let n = pieces.len();
            for (i, message) in pieces.into_iter().enumerate() {
                cost += message.len() + EVENT_COST;
                events.push(Event {
                    timestamp_ms,
                    message,
                    end: (i + 1 == n).then_some(end),
                });
            }
        }
        let cost = cost.min(self.budget_total);
        let n = events.len() as u64;
        let permits = u32::try_from(cost).unwrap_or(u32::MAX);
        tokio::select! {
            p = self.budget.acquire_many(permits) => match p {
                Ok(p) => p.forget(),
                Err(_) => return false,
            },
            _ = ctx.stop.requested() => return false,
        }
        self.buffered.add(n, cost as u64);
        ctx.status.buffered(developer, n, cost as u64, first_ms);
        self.tx.send(Chunk { events, cost }).await.is_ok()
    }
}

/// A line's event message: the line itself when it is valid UTF-8 and fits one
/// event (no copy, the common case), else [`split_message`]'s pieces.
fn messages(bytes: Vec<u8>) -> Result<String, Vec<String>> {
    if !bytes.is_empty() && bytes.len() <= MAX_MESSAGE_BYTES {
        return match String::from_utf8(bytes) {
            Ok(s) => Ok(s),
            Err(e) => Err(split_message(e.as_bytes(), MAX_MESSAGE_BYTES)),
        };
    }
    Err(split_message(&bytes, MAX_MESSAGE_BYTES))
}
