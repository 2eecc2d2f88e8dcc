//! Ships managed containers' stdout/stderr to CloudWatch Logs: nothing lost,
//! nothing twice, and a CloudWatch outage never touches a container.
//!
//! ## How
//! - **Discovery** (this file): the Docker event stream (`type=container`,
//!   `label=csagent.managed=true`, `start`/`destroy`) is opened with `since` a
//!   moment before the containers are listed, so a container started between the
//!   list and the stream is still seen (Docker replays events since then); both
//!   are re-done after any error. Only containers whose `csagent.developer` is a
//!   configured developer are shipped. One task per container
//!   ([`container`]); a start event for a container whose task is still
//!   draining makes that task follow it again rather than start a second one.
//! - **Read** ([`tail`], [`jsonfile`]): a container with the json-file driver
//!   (csagent creates them so) has its log file read directly from its
//!   `LogPath`, following rotations across `max-file`, from a checkpointed
//!   inode and offset; dockerd then only writes the file. The container's stop
//!   is learnt from Docker's wait (after which the file is complete).
//! - **Follow** ([`follow`]): any other driver: `docker logs --follow
//!   --timestamps` from the checkpoint; Docker's `since` is whole seconds, so
//!   already shipped messages are skipped by position. Both readers keep that
//!   position, and an old checkpoint with only a position is carried over to
//!   the file reader without a line shipped twice or skipped.
//! - **Batch** ([`batch`]): every PutLogEvents limit in one place. A batch goes
//!   when full, 200 ms after the log went quiet, or 2 s after its first line,
//!   whichever comes first ([`flush`]).
//! - **Deliver** ([`sink`]): group (with retention) and stream created when
//!   missing; retries with jittered backoff; an ambiguous failure is settled by
//!   reading the stream back before trying again.
//! - **Checkpoint** ([`checkpoint`]): per container, written atomically before
//!   (in-flight record) and after every put; the position advances only after a
//!   successful put. A start that finds an in-flight record reads the stream back
//!   to learn whether that batch landed, so a SIGKILL between put and checkpoint
//!   neither loses nor repeats it.
//! - **Checkpoint write errors**: a write the disk may accept later (ENOSPC,
//!   quota) is retried in place with backoff, the status showing why
//!   ([`DeveloperLogs::checkpoint_error`]); the batch already put is neither put
//!   again nor lost, since the in-memory checkpoint is kept and the in-flight
//!   record on disk settles it by read-back should the agent stop first.
//! - **Drained**: when a container stops, its task ships and checkpoints what is
//!   left, then publishes the container as drained ([`LogsStatusHandle::wait_drained`]);
//!   the container reconciler waits for that before it removes the container.
//! - **Back-pressure**: each container has a byte budget
//!   ([`ShipperOptions::buffer_bytes`]); when it is spent the follower stops
//!   reading the log. The container is untouched — we only read its log, and
//!   json-file keeps the lines until we come back (within its rotation limits:
//!   `containers.log_max_size` × `log_max_files`; an outage long enough to rotate
//!   unread lines away loses them, as it would for any reader of the log).
//!
//! - **Host logs** ([`host`]): journal entries of docker, containerd and
//!   systemd about csagent, and kernel OOM kills, to the `system` and `docker`
//!   groups with the same batching, delivery and checkpoint-after-put.
//!
//! ## Stream naming
//! Group: `logs.group` rendered for the developer (one group per developer).
//! Stream: **the instance id**. A developer's container is recreated on every
//! password rotation and config change; one stream per instance keeps the
//! developer's log in one place, in order, across recreations — the new
//! container's lines start after the old one's (it is created after the old one
//! stopped) and CloudWatch orders a stream by timestamp. A container id in the
//! name would scatter one developer's day over many streams. A replaced instance
//! gets a new stream, so two hosts never write the same stream.
//!
//! ## Limits of the guarantee
//! - Lines Docker no longer has (removed container, rotated json-file) cannot be
//!   shipped; a removed container's lines already read are still delivered (an
//!   open file is read to its end after its name is gone). A checkpointed file
//!   rotated away while the agent was down is reported and reading starts at
//!   the oldest file left.
//! - json-file with `max-file = 1` truncates in place; the reader notices when
//!   the file shrank below its offset and starts over at its start.
//! - After a crash while one output (stdout/stderr) is in the middle of a line
//!   longer than 16 KiB, lines of the other output written meanwhile may be
//!   shipped twice (never lost): see [`follow`].
//! - Lines longer than ~1 MiB are passed on in ~1 MiB parts, each split into
//!   events; a crash between two parts' batches repeats nothing, since each part
//!   has its own checkpoint.

mod batch;
mod checkpoint;
mod container;
mod flush;
mod follow;
pub mod host;
mod jsonfile;
mod own;
mod persist;
mod sink;
mod status;
mod tail;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{EventsOptionsBuilder, ListContainersOptionsBuilder};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use own::{QueueWriter as AgentLogWriter, disable as disable_agent_log};

use crate::aws::Identity;
use crate::config::Config;
use crate::retry::Backoff;
use csagent_contract::labels;

pub use batch::{
    Batch, Batcher, EVENT_OVERHEAD, Event, Limits, MAX_BATCH_BYTES, MAX_BATCH_EVENTS,
    MAX_MESSAGE_BYTES, MAX_SPAN_MS, split_message,
};
pub use checkpoint::{Checkpoint, CheckpointError, FilePos, Inflight, Store, Tail};
pub use follow::{Mark, Position};
pub use host::HostShipper;
use sink::Sink;
pub use sink::SinkError;
pub use status::{DeveloperLogs, Drain, DrainMark, HostLogs, LogsStatus, LogsStatusHandle};

/// Why the shipper could not run at all (everything else is retried).
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("container logs: cannot use the checkpoint directory: {0}")]
    State(#[from] CheckpointError),
}

/// Tuning; the defaults suit the agent, tests shorten them.
#[derive(Debug, Clone)]
pub struct ShipperOptions {
    /// Longest a line waits before its batch is sent.
    pub flush_interval: Duration,
    /// Once no new lines have come for this long, what is held is sent without
    /// waiting out `flush_interval`: the end of a burst (an error and its stack
    /// trace) reaches CloudWatch in a fraction of a second. Puts per stream stay
    /// under one per `quiet_flush` while lines trickle, and a steady stream
    /// still fills its batches.
    pub quiet_flush: Duration,
    /// After shutdown, how long buffered lines may take to be delivered.
    pub flush_timeout: Duration,
    /// Bytes each container may hold between Docker and CloudWatch (messages plus
    /// 64 bytes per event); when spent, the follower stops reading Docker.
    pub buffer_bytes: usize,
    /// Retry delays for CloudWatch calls (jittered exponential).
    pub backoff: Backoff,
    /// How long after a put of unknown outcome (a crash, a timeout, a dropped
    /// connection) the stream is read back to see whether its batch landed
    /// (CloudWatch may take a moment to show new events).
    pub readback_settle: Duration,
}

impl Default for ShipperOptions {
    fn default() -> Self {
        ShipperOptions {
            flush_interval: Duration::from_secs(2),
            quiet_flush: Duration::from_millis(200),
            flush_timeout: Duration::from_secs(10),
            buffer_bytes: 4 * 1024 * 1024,
            // Capped at 10 s rather than 30 s so lag after an outage stays short.
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(10)),
            readback_settle: Duration::from_secs(5),
        }
    }
}

/// Shutdown as the tasks see it: requested, and the flush deadline after it.
#[derive(Debug, Clone)]
pub(crate) struct Stop {
    rx: watch::Receiver<bool>,
    flush_timeout: Duration,
    deadline: Arc<OnceLock<Instant>>,
}

impl Stop {
    fn new(rx: watch::Receiver<bool>, flush_timeout: Duration) -> Stop {
        Stop {
            rx,
            flush_timeout,
            deadline: Arc::new(OnceLock::new()),
        }
    }

    /// Shutdown was requested (or its sender dropped).
    pub(crate) fn is_set(&self) -> bool {
        *self.rx.borrow() || self.rx.has_changed().is_err()
    }

    /// Resolves once shutdown is requested.
    pub(crate) async fn requested(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|v| *v).await;
    }

    /// Resolves once the flush time after shutdown is over.
    pub(crate) async fn expired(&self) {
        self.requested().await;
        let at = *self
            .deadline
            .get_or_init(|| Instant::now() + self.flush_timeout);
        tokio::time::sleep_until(at).await;
    }
}

/// Containers with a running task.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    tasks: Mutex<HashMap<String, TaskState>>,
}

#[derive(Debug, Default)]
struct TaskState {
    /// Started again while its task was finishing: follow it again.
    restart: bool,
    /// Removed: its checkpoint can go with it.
    destroyed: bool,
}

pub(crate) enum Finish {
    Restart,
    Done { destroyed: bool },
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, TaskState>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when the caller should start a task for `id`; otherwise the running
    /// task is told to follow it again when it finishes.
    fn claim(&self, id: &str) -> bool {
        let mut tasks = self.lock();
        match tasks.get_mut(id) {
            Some(t) => {
                t.restart = true;
                false
            }
            None => {
                tasks.insert(id.to_string(), TaskState::default());
                true
            }
        }
    }

    /// The container was removed; true when no task has it (remove the
    /// checkpoint now), else its task does when it finishes.
    fn destroyed(&self, id: &str) -> bool {
        match self.lock().get_mut(id) {
            Some(t) => {
                t.destroyed = true;
                false
            }
            None => true,
        }
    }

    fn active(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    /// Called by a task about to end: under the same lock as [`Registry::claim`],
    /// so a start seen meanwhile is never lost.
    pub(crate) fn finish(&self, id: &str) -> Finish {
        let mut tasks = self.lock();
        match tasks.get_mut(id) {
            Some(t) if t.restart && !t.destroyed => {
                t.restart = false;
                Finish::Restart
            }
            _ => {
                let destroyed = tasks.remove(id).is_some_and(|t| t.destroyed);
                Finish::Done { destroyed }
            }
        }
    }

    pub(crate) fn release(&self, id: &str) {
        self.lock().remove(id);
    }
}

/// What every container task shares.
pub(crate) struct ShipperState {
    pub(crate) docker: Docker,
    pub(crate) client: aws_sdk_cloudwatchlogs::Client,
    pub(crate) config: Arc<Config>,
    pub(crate) stream: String,
    pub(crate) store: Store,
    pub(crate) status: LogsStatusHandle,
    pub(crate) options: ShipperOptions,
    pub(crate) registry: Registry,
    pub(crate) stop: Stop,
    /// Read json-file containers' logs from their files (else: the Docker API).
    pub(crate) read_files: bool,
}

/// Ships every managed container's log; see the module doc.
pub struct Shipper {
    docker: Docker,
    client: aws_sdk_cloudwatchlogs::Client,
    config: Arc<Config>,
    stream: String,
    options: ShipperOptions,
    status: LogsStatusHandle,
    read_files: bool,
}

impl Shipper {
    pub fn new(
        docker: Docker,
        logs: aws_sdk_cloudwatchlogs::Client,
        config: &Config,
        identity: &Identity,
    ) -> Self {
        let status = LogsStatusHandle::default();
        status.set_enabled(config.logs.enabled);
        Shipper {
            docker,
            client: logs,
            config: Arc::new(config.clone()),
            stream: identity.instance_id.clone(),
            options: ShipperOptions::default(),
            status,
            read_files: true,
        }
    }

    /// `false`: read every container's log through the Docker logs API, as
    /// agents before the json-file reader did (tests use it to write such
    /// agents' checkpoints, and to compare).
    pub fn reading_files(mut self, read_files: bool) -> Self {
        self.read_files = read_files;
        self
    }

    pub fn with_options(mut self, options: ShipperOptions) -> Self {
        self.options = options;
        self
    }

    pub fn status_handle(&self) -> LogsStatusHandle {
        self.status.clone()
    }

    /// Reports into `status` (the agent's long-lived section) instead of a
    /// handle of its own; what an earlier shipper left there is cleared.
    pub fn reporting_to(mut self, status: LogsStatusHandle) -> Self {
        status.reset(self.config.logs.enabled);
        self.status = status;
        self
    }

    /// Runs until `shutdown` becomes true (or its sender is dropped); then
    /// delivers what it holds, bounded by `flush_timeout`, and returns. Errors
    /// only when the checkpoint directory cannot be created; Docker and AWS
    /// failures are retried for as long as it runs.
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> Result<(), LogsError> {
        let stop = Stop::new(shutdown, self.options.flush_timeout);
        if !self.config.logs.enabled {
            own::disable();
            tracing::info!("container logs: disabled in the config");
            stop.requested().await;
            return Ok(());
        }
        let store = Store::new(&self.config.agent.state_dir);
        {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.create())
                .await
                .map_err(|e| {
                    LogsError::State(CheckpointError::Io {
                        path: Default::default(),
                        op: "create directory",
                        source: std::io::Error::other(e.to_string()),
                    })
                })??;
        }
        let developers: HashSet<String> = self
            .config
            .developers
            .iter()
            .map(|d| d.name.clone())
            .collect();
        let ctx = Arc::new(ShipperState {
            docker: self.docker,
            client: self.client,
            config: self.config,
            stream: self.stream,
            store,
            status: self.status,
            options: self.options,
            registry: Registry::default(),
            stop: stop.clone(),
            read_files: self.read_files,
        });
        tracing::info!(stream = %ctx.stream, developers = developers.len(), "container logs: shipping to CloudWatch Logs");

        let mut tasks = JoinSet::new();
        match &ctx.config.logs.agent_group {
            Some(group) => {
                let sink = Sink::new(
                    ctx.client.clone(),
                    group.clone(),
                    ctx.stream.clone(),
                    ctx.config.logs.retention_days,
                    ctx.options.readback_settle,
                );
                tasks.spawn(own::ship(
                    sink,
                    ctx.config.logs.retention_days,
                    ctx.options.clone(),
                    stop.clone(),
                ));
            }
            None => own::disable(),
        }
        host::spawn(
            &mut tasks,
            ctx.client.clone(),
            &ctx.config,
            &ctx.stream,
            ctx.status.clone(),
            ctx.options.clone(),
            stop.clone(),
        );
        let mut backoff = Backoff::standard();
        'discover: loop {
            // Replay from a moment before the list, so nothing falls in between.
            let since = (status::now_ms() / 1000 - 2).to_string();
            let project = project_filter(&ctx.config.project);
            let filters: HashMap<&str, Vec<&str>> = HashMap::from([
                ("type", vec!["container"]),
                ("label", vec![labels::MANAGED_FILTER, &project]),
                ("event", vec!["start", "destroy"]),
            ]);
            let mut events = ctx
                .docker
                .events(Some(
                    EventsOptionsBuilder::new()
                        .since(&since)
                        .filters(&filters)
                        .build(),
                ))
                .boxed();
            let problem = match discover(&ctx, &developers, &mut tasks).await {
                Ok(()) => loop {
                    tokio::select! {
                        _ = stop.requested() => break 'discover,
                        Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                            if let Err(e) = done {
                                tracing::error!(error = %e, "container log task failed");
                            }
                        }
                        event = events.next() => match event {
                            Some(Ok(event)) => {
                                backoff.reset();
                                on_event(&ctx, &developers, &mut tasks, event);
                            }
                            Some(Err(e)) => break e.to_string(),
                            None => break "the Docker event stream ended".to_string(),
                        },
                    }
                },
                Err(e) => e.to_string(),
            };
            let delay = backoff.next_delay();
            tracing::warn!(error = %problem, retry_in = ?delay, "container logs: watching Docker failed; listing again");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.requested() => break 'discover,
            }
        }

        // Shutdown: tasks deliver what they hold until the flush deadline.
        let grace = ctx.options.flush_timeout + Duration::from_secs(2);
        let drained = tokio::time::timeout(grace, async {
            while let Some(done) = tasks.join_next().await {
                if let Err(e) = done {
                    tracing::error!(error = %e, "container log task failed");
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "container logs: tasks still busy after the flush timeout; stopping them"
            );
            tasks.shutdown().await;
        }
        Ok(())
    }
}

/// Docker's label filter for this project's containers: another project's on
/// the same host (same developer names) is never followed or shipped here.
fn project_filter(project: &str) -> String {
    format!("{}={project}", labels::PROJECT)
}

/// Lists managed containers, starts a task for each configured developer's, and
/// drops checkpoints of containers that no longer exist.
async fn discover(
    ctx: &Arc<ShipperState>,
    developers: &HashSet<String>,
    tasks: &mut JoinSet<()>,
) -> Result<(), bollard::errors::Error> {
    let project = project_filter(&ctx.config.project);
    let filters: HashMap<&str, Vec<&str>> =
        HashMap::from([("label", vec![labels::MANAGED_FILTER, &project])]);
    let containers = ctx
        .docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await?;
    let mut present = HashSet::new();
    for c in containers {
        let Some(id) = c.id else { continue };
        present.insert(id.clone());
        let developer = c
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::DEVELOPER))
            .cloned();
        if let Some(dev) = developer.filter(|d| developers.contains(d)) {
            spawn(ctx, tasks, id, dev);
        }
    }
    match ctx.store.ids() {
        Ok(ids) => {
            for id in ids {
                if !present.contains(&id)
                    && !ctx.registry.active(&id)
                    && let Err(e) = ctx.store.remove(&id)
                {
                    tracing::warn!(error = %e, "cannot remove a stale log checkpoint");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot list log checkpoints"),
    }
    Ok(())
}

fn on_event(
    ctx: &Arc<ShipperState>,
    developers: &HashSet<String>,
    tasks: &mut JoinSet<()>,
    event: bollard::models::EventMessage,
) {
    let Some(actor) = event.actor else { return };
    let Some(id) = actor.id else { return };
    match event.action.as_deref() {
        Some("start") => {
            let developer = actor
                .attributes
                .as_ref()
                .and_then(|a| a.get(labels::DEVELOPER))
                .cloned();
            if let Some(dev) = developer.filter(|d| developers.contains(d)) {
                spawn(ctx, tasks, id, dev);
            }
        }
        Some("destroy") => {
            ctx.status.forget(&id);
            if ctx.registry.destroyed(&id)
                && let Err(e) = ctx.store.remove(&id)
            {
                tracing::warn!(error = %e, "cannot remove the log checkpoint of a removed container");
            }
        }
        _ => {}
    }
}

fn spawn(ctx: &Arc<ShipperState>, tasks: &mut JoinSet<()>, id: String, developer: String) {
    if ctx.registry.claim(&id) {
        tracing::info!(developer = %developer, container = %container::short(&id), "following container log");
        tasks.spawn(container::run(ctx.clone(), id, developer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_while_the_task_finishes_is_not_lost() {
        let r = Registry::default();
        assert!(r.claim("a"), "first start: spawn");
        assert!(!r.claim("a"), "already followed: no second task");
        assert!(
            matches!(r.finish("a"), Finish::Restart),
            "started meanwhile: follow again"
        );
        assert!(matches!(r.finish("a"), Finish::Done { destroyed: false }));
        assert!(!r.active("a"));
        assert!(r.claim("a"), "a later start spawns again");
        assert!(!r.destroyed("a"), "its task removes the checkpoint");
        assert!(!r.claim("a"));
        assert!(
            matches!(r.finish("a"), Finish::Done { destroyed: true }),
            "removed: no restart"
        );
        assert!(r.destroyed("b"), "no task: remove the checkpoint now");
    }
}
