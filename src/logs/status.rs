//! What the shipper observed, per developer, for `csagent status` and metrics;
//! and, per container, whether its log was shipped to its end ("drained"), which
//! the container reconciler waits for before it removes a stopped container.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

/// One developer's log shipping.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeveloperLogs {
    /// CloudWatch Logs group and stream the lines go to.
    pub group: String,
    pub stream: String,
    /// The container followed most recently.
    pub container_id: Option<String>,
    /// How far behind the shipper is: now minus the timestamp of the last shipped
    /// line while lines are waiting to be shipped, 0 when caught up (an idle
    /// container is not "behind").
    pub lag_seconds: f64,
    /// Timestamp (ms since the epoch) of the last shipped line.
    pub last_shipped_ms: Option<i64>,
    /// Events accepted by CloudWatch, and their message bytes.
    pub shipped_events: u64,
    pub shipped_bytes: u64,
    /// Events not sent or not accepted because they were outside the window
    /// CloudWatch accepts (counted, never retried).
    pub rejected_too_old: u64,
    pub rejected_too_new: u64,
    /// Failed attempts (put, create, read-back) that were retried.
    pub retries: u64,
    /// The most recent failure, and when (ms since the epoch); cleared by the next
    /// successful put.
    pub last_error: Option<String>,
    pub last_error_ms: Option<i64>,
    /// Events read from Docker and not yet shipped, and their bytes (bounded by
    /// the buffer budget; when full the shipper stops reading from Docker).
    pub buffered_events: u64,
    pub buffered_bytes: u64,
    /// Batches whose fate after a crash or an ambiguous error was settled by
    /// reading the stream back (found landed → not sent again).
    pub readback_landed: u64,
    /// Why the checkpoint cannot be written (a full state directory, say):
    /// shipping for this developer waits, retrying, until it can (Docker keeps
    /// the lines meanwhile). Cleared by the next successful write.
    pub checkpoint_error: Option<String>,
    /// Rotated json-file logs held open because the shipper is behind (disk
    /// Docker freed only once they are read; bounded by `logs.hold_rotated_files`).
    pub held_log_files: u64,
    /// Rotated json-file logs Docker deleted before they were read (beyond the
    /// hold), and their sizes when last seen: their lines are lost.
    pub lost_log_files: u64,
    pub lost_log_bytes: u64,
    /// Times the shipper found files gone it never saw (it did not look for a
    /// whole `max-file` of rotations, or a checkpointed file went while the
    /// agent was down): an unknown number of lines may be lost.
    pub log_gaps: u64,
}

/// One host-log source: the journal entries it selects, to one group.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HostLogs {
    /// CloudWatch Logs group and stream the entries go to.
    pub group: String,
    pub stream: String,
    /// journalctl runs and is being read.
    pub reading: bool,
    /// Timestamp (ms since the epoch) of the journal entry at the checkpoint's
    /// cursor: everything up to it is settled.
    pub cursor_ms: Option<i64>,
    /// As for a developer: now minus the last shipped entry's time while read
    /// entries wait to be shipped, 0 when caught up.
    pub lag_seconds: f64,
    /// Timestamp (ms since the epoch) of the last shipped entry.
    pub last_shipped_ms: Option<i64>,
    /// Events accepted by CloudWatch, and their message bytes.
    pub shipped_events: u64,
    pub shipped_bytes: u64,
    /// Entries journalctl returned that this source does not ship (kernel
    /// messages other than OOM kills).
    pub skipped_entries: u64,
    /// Events outside the window CloudWatch accepts (counted, never retried).
    pub rejected_too_old: u64,
    pub rejected_too_new: u64,
    /// Failed attempts (journalctl, put, read-back, checkpoint) that were retried.
    pub retries: u64,
    /// The most recent failure, and when (ms since the epoch); cleared by the
    /// next successful put.
    pub last_error: Option<String>,
    pub last_error_ms: Option<i64>,
    /// Events read and not yet shipped.
    pub buffered_events: u64,
    /// Batches found already stored by reading the stream back.
    pub readback_landed: u64,
}

/// Every developer's log shipping.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LogsStatus {
    pub enabled: bool,
    /// When (ms since the epoch) CloudWatch Logs last accepted a put.
    pub last_put_ms: Option<i64>,
    pub developers: BTreeMap<String, DeveloperLogs>,
    /// Host-log sources by name (`system`, `docker`); empty when off.
    pub host: BTreeMap<String, HostLogs>,
}

#[derive(Debug, Default)]
struct Inner {
    enabled: bool,
    last_put_ms: Option<i64>,
    developers: BTreeMap<String, Entry>,
    host: BTreeMap<String, HostLogs>,
    /// Per container id followed by this shipper.
    containers: HashMap<String, ContainerLog>,
    /// Counts drains, so a waiter can tell a drain after its stop from an
    /// earlier one.
    drains: u64,
}

/// Where one container's log shipping stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContainerLog {
    Following,
    /// The container stopped (or went) and every line it wrote was delivered
    /// and checkpointed; `seq` orders it among drains.
    Drained {
        seq: u64,
    },
}

/// A point in the sequence of drains, taken before stopping a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainMark(u64);

/// The outcome of [`LogsStatusHandle::wait_drained`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Every line the container wrote is in CloudWatch and checkpointed.
    Drained,
    /// No shipper runs (logs disabled, or `--once`): nothing to wait for.
    NotShipping,
    /// The shipper never picked the container up: nothing of it is shipped.
    NotFollowed,
    /// Still shipping when the wait ended.
    TimedOut,
}

#[derive(Debug, Default)]
struct Entry {
    logs: DeveloperLogs,
    /// Timestamp of the oldest buffered line when nothing was shipped yet.
    first_buffered_ms: Option<i64>,
}

/// A cheap, cloneable handle onto the shipper's status.
#[derive(Debug, Clone)]
pub struct LogsStatusHandle {
    inner: Arc<Mutex<Inner>>,
    /// Rung whenever a container's state changes, for [`Self::wait_drained`].
    bell: Arc<watch::Sender<()>>,
}

impl Default for LogsStatusHandle {
    fn default() -> Self {
        LogsStatusHandle {
            inner: Arc::default(),
            bell: Arc::new(watch::channel(()).0),
        }
    }
}

/// How long [`LogsStatusHandle::wait_drained`] gives the shipper to pick up a
/// container it does not know yet (it learns of new ones from Docker's events
/// within a second or two).
const PICK_UP: Duration = Duration::from_secs(5);

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl LogsStatusHandle {
    /// The status now (lag computed against the current clock).
    pub fn snapshot(&self) -> LogsStatus {
        let now = now_ms();
        let inner = self.lock();
        LogsStatus {
            enabled: inner.enabled,
            last_put_ms: inner.last_put_ms,
            developers: inner
                .developers
                .iter()
                .map(|(name, e)| {
                    let mut logs = e.logs.clone();
                    logs.lag_seconds = if logs.buffered_events == 0 {
                        0.0
                    } else {
                        let since = logs.last_shipped_ms.or(e.first_buffered_ms).unwrap_or(now);
                        (now - since).max(0) as f64 / 1000.0
                    };
                    (name.clone(), logs)
                })
                .collect(),
            host: inner
                .host
                .iter()
                .map(|(name, h)| {
                    let mut h = h.clone();
                    h.lag_seconds = match (h.buffered_events, h.last_shipped_ms) {
                        (0, _) => 0.0,
                        (_, since) => {
                            (now - since.or(h.cursor_ms).unwrap_or(now)).max(0) as f64 / 1000.0
                        }
                    };
                    (name.clone(), h)
                })
                .collect(),
        }
    }

    fn with_host(&self, source: &str, f: impl FnOnce(&mut HostLogs)) {
        let mut inner = self.lock();
        f(inner.host.entry(source.to_string()).or_default());
    }

    /// A host-log source starts (again), reading into `group` / `stream`.
    pub(crate) fn host_source(
        &self,
        source: &str,
        group: &str,
        stream: &str,
        cursor_ms: Option<i64>,
    ) {
        self.with_host(source, |h| {
            h.group = group.to_string();
            h.stream = stream.to_string();
            h.cursor_ms = cursor_ms;
        });
    }

    pub(crate) fn host_reading(&self, source: &str, reading: bool) {
        self.with_host(source, |h| h.reading = reading);
    }

    /// `events` read, waiting to be shipped (negative: settled).
    pub(crate) fn host_buffered(&self, source: &str, events: i64) {
        self.with_host(source, |h| {
            h.buffered_events = h.buffered_events.saturating_add_signed(events);
        });
    }

    pub(crate) fn host_skipped(&self, source: &str) {
        self.with_host(source, |h| h.skipped_entries += 1);
    }

    pub(crate) fn host_shipped(&self, source: &str, events: u64, bytes: u64, last_ms: Option<i64>) {
        self.lock().last_put_ms = Some(now_ms());
        self.with_host(source, |h| {
            h.shipped_events += events;
            h.shipped_bytes += bytes;
            if last_ms.is_some() {
                h.last_shipped_ms = last_ms;
            }
            h.last_error = None;
        });
    }

    pub(crate) fn host_checkpoint(&self, source: &str, cursor_ms: Option<i64>) {
        self.with_host(source, |h| h.cursor_ms = cursor_ms);
    }

    pub(crate) fn host_rejected(&self, source: &str, too_old: u64, too_new: u64) {
        self.with_host(source, |h| {
            h.rejected_too_old += too_old;
            h.rejected_too_new += too_new;
        });
    }

    pub(crate) fn host_failed(&self, source: &str, error: &str) {
        self.with_host(source, |h| {
            h.retries += 1;
            h.last_error = Some(error.to_string());
            h.last_error_ms = Some(now_ms());
        });
    }

    pub(crate) fn host_landed(&self, source: &str) {
        self.with_host(source, |h| h.readback_landed += 1);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain counters behind: keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with(&self, developer: &str, f: impl FnOnce(&mut Entry)) {
        let mut inner = self.lock();
        // Called per line: no allocation once the developer is known.
        if let Some(e) = inner.developers.get_mut(developer) {
            return f(e);
        }
        f(inner.developers.entry(developer.to_string()).or_default());
    }

    pub(crate) fn set_enabled(&self, enabled: bool) {
        self.lock().enabled = enabled;
    }

    /// Starts over: a new shipper (or none, when `enabled` is false).
    pub fn reset(&self, enabled: bool) {
        *self.lock() = Inner {
            enabled,
            ..Inner::default()
        };
        self.bell.send_replace(());
    }

    /// The json-file reader's rotation bookkeeping: files held now, and what
    /// went unread since the last report (added to the totals).
    pub(crate) fn log_files(&self, developer: &str, held: u64, lost: super::tail::Lost) {
        self.with(developer, |e| {
            e.logs.held_log_files = held;
            e.logs.lost_log_files += lost.files;
            e.logs.lost_log_bytes += lost.bytes;
            e.logs.log_gaps += lost.gaps;
        });
    }

    pub(crate) fn following(&self, developer: &str, container_id: &str, group: &str, stream: &str) {
        {
            let mut inner = self.lock();
            inner
                .containers
                .insert(container_id.to_string(), ContainerLog::Following);
            let e = inner.developers.entry(developer.to_string()).or_default();
            e.logs.container_id = Some(container_id.to_string());
            e.logs.group = group.to_string();
            e.logs.stream = stream.to_string();
        }
        self.bell.send_replace(());
    }

    /// The container stopped and everything it wrote is shipped and checkpointed.
    pub(crate) fn drained(&self, container_id: &str) {
        {
            let mut inner = self.lock();
            inner.drains += 1;
            let seq = inner.drains;
            inner
                .containers
                .insert(container_id.to_string(), ContainerLog::Drained { seq });
        }
        self.bell.send_replace(());
    }

    /// The container was removed: nothing more to say about it.
    pub(crate) fn forget(&self, container_id: &str) {
        self.lock().containers.remove(container_id);
    }

    /// Taken before stopping a container: only drains after it count for that
    /// container (an earlier drain was of an earlier run of it).
    pub fn drain_mark(&self) -> DrainMark {
        DrainMark(self.lock().drains)
    }

    /// Waits, at most `timeout`, until the shipper has shipped container
    /// `container_id`'s log to its end. `mark` is from before the container was
    /// stopped; `was_running: false` (it had stopped already) accepts a drain
    /// from before the mark too.
    pub async fn wait_drained(
        &self,
        container_id: &str,
        mark: DrainMark,
        was_running: bool,
        timeout: Duration,
    ) -> Drain {
        let started = Instant::now();
        let mut bell = self.bell.subscribe();
        loop {
            let (enabled, state) = {
                let inner = self.lock();
                (inner.enabled, inner.containers.get(container_id).copied())
            };
            let waited = started.elapsed();
            match state {
                _ if !enabled => return Drain::NotShipping,
                Some(ContainerLog::Drained { seq }) if seq > mark.0 || !was_running => {
                    return Drain::Drained;
                }
                None if waited >= PICK_UP.min(timeout) => return Drain::NotFollowed,
                _ if waited >= timeout => return Drain::TimedOut,
                _ => {}
            }
            let until = match state {
                None => started + PICK_UP.min(timeout),
                Some(_) => started + timeout,
            };
            // Either the bell rings (a change to look at) or the time is up;
            // a closed bell cannot happen (this handle holds the sender).
            let _ = tokio::time::timeout_at(until, bell.changed()).await;
        }
    }

    pub(crate) fn buffered(&self, developer: &str, events: u64, bytes: u64, first_ms: i64) {
        self.with(developer, |e| {
            if e.logs.buffered_events == 0 && e.first_buffered_ms.is_none() {
                e.first_buffered_ms = Some(first_ms);
            }
            e.logs.buffered_events += events;
            e.logs.buffered_bytes += bytes;
        });
    }

    pub(crate) fn unbuffered(&self, developer: &str, events: u64, bytes: u64) {
        self.with(developer, |e| {
            e.logs.buffered_events = e.logs.buffered_events.saturating_sub(events);
            e.logs.buffered_bytes = e.logs.buffered_bytes.saturating_sub(bytes);
            if e.logs.buffered_events == 0 {
                e.first_buffered_ms = None;
            }
        });
    }

    pub(crate) fn shipped(&self, developer: &str, events: u64, bytes: u64, last_ms: Option<i64>) {
        self.lock().last_put_ms = Some(now_ms());
        self.with(developer, |e| {
            e.logs.shipped_events += events;
            e.logs.shipped_bytes += bytes;
            if let Some(ms) = last_ms {
                e.logs.last_shipped_ms = Some(ms);
            }
            e.logs.last_error = None;
        });
    }

    pub(crate) fn rejected(&self, developer: &str, too_old: u64, too_new: u64) {
        if too_old + too_new > 0 {
            self.with(developer, |e| {
                e.logs.rejected_too_old += too_old;
                e.logs.rejected_too_new += too_new;
            });
        }
    }

    pub(crate) fn failed(&self, developer: &str, error: &str) {
        self.with(developer, |e| {
            e.logs.retries += 1;
            e.logs.last_error = Some(error.to_string());
            e.logs.last_error_ms = Some(now_ms());
        });
    }

    pub(crate) fn landed_by_readback(&self, developer: &str) {
        self.with(developer, |e| e.logs.readback_landed += 1);
    }

    /// A checkpoint write failed; shipping waits for it.
    pub(crate) fn checkpoint_failed(&self, developer: &str, error: &str) {
        self.failed(developer, error);
        self.with(developer, |e| {
            e.logs.checkpoint_error = Some(error.to_string())
        });
    }

    /// A checkpoint write succeeded.
    pub(crate) fn checkpoint_ok(&self, developer: &str) {
        self.with(developer, |e| {
            if e.logs.checkpoint_error.take().is_some() {
                e.logs.last_error = None;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_ends_with_a_drain_after_the_stop_only() {
        let h = LogsStatusHandle::default();
        let long = Duration::from_secs(30);
        assert_eq!(
            h.wait_drained("c1", h.drain_mark(), true, long).await,
            Drain::NotShipping,
            "no shipper: no wait"
        );
        h.set_enabled(true);
        h.following("dev1", "c1", "g", "s");
        h.drained("c1");
        // A drain from before the stop is of an earlier run of the container.
        let mark = h.drain_mark();
        h.following("dev1", "c1", "g", "s");
        let waiter = {
            let h = h.clone();
            tokio::spawn(async move { h.wait_drained("c1", mark, true, long).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "still following: waits");
        h.drained("c1");
        let got = tokio::time::timeout(Duration::from_secs(2), waiter).await;
        assert_eq!(got.ok().and_then(|r| r.ok()), Some(Drain::Drained));

        // Already stopped before the stop: an earlier drain counts.
        let mark = h.drain_mark();
        assert_eq!(
            h.wait_drained("c1", mark, false, long).await,
            Drain::Drained
        );
        let short = Duration::from_millis(100);
        assert_eq!(
            h.wait_drained("c1", mark, true, short).await,
            Drain::TimedOut
        );
        assert_eq!(
            h.wait_drained("unknown", mark, true, short).await,
            Drain::NotFollowed
        );
        h.forget("c1");
        assert_eq!(
            h.wait_drained("c1", mark, false, short).await,
            Drain::NotFollowed
        );
    }

    #[test]
    fn lag_is_zero_when_caught_up_and_grows_while_behind() {
        let h = LogsStatusHandle::default();
        h.following("dev1", "abc", "g", "s");
        h.shipped("dev1", 3, 30, Some(now_ms() - 5_000));
        assert_eq!(h.snapshot().developers["dev1"].lag_seconds, 0.0);
        assert!(
            h.snapshot()
                .last_put_ms
                .is_some_and(|t| now_ms() - t < 5_000)
        );
        h.buffered("dev1", 2, 20, now_ms());
        let lag = h.snapshot().developers["dev1"].lag_seconds;
        assert!((4.5..10.0).contains(&lag), "{lag}");
        h.unbuffered("dev1", 2, 20);
        h.failed("dev1", "boom");
        let s = h.snapshot();
        let d = &s.developers["dev1"];
        assert_eq!((d.lag_seconds, d.retries), (0.0, 1));
        assert_eq!(d.last_error.as_deref(), Some("boom"));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["developers"]["dev1"]["shipped_events"], 3);
    }
}
