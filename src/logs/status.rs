//! What the shipper observed, per developer, for `csagent status` and metrics.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

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
}

/// Every developer's log shipping.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LogsStatus {
    pub enabled: bool,
    /// When (ms since the epoch) CloudWatch Logs last accepted a put.
    pub last_put_ms: Option<i64>,
    pub developers: BTreeMap<String, DeveloperLogs>,
}

#[derive(Debug, Default)]
struct Inner {
    enabled: bool,
    last_put_ms: Option<i64>,
    developers: BTreeMap<String, Entry>,
}

#[derive(Debug, Default)]
struct Entry {
    logs: DeveloperLogs,
    /// Timestamp of the oldest buffered line when nothing was shipped yet.
    first_buffered_ms: Option<i64>,
}

/// A cheap, cloneable handle onto the shipper's status.
#[derive(Debug, Clone, Default)]
pub struct LogsStatusHandle {
    inner: Arc<Mutex<Inner>>,
}

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
        }
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
    }

    pub(crate) fn following(&self, developer: &str, container_id: &str, group: &str, stream: &str) {
        self.with(developer, |e| {
            e.logs.container_id = Some(container_id.to_string());
            e.logs.group = group.to_string();
            e.logs.stream = stream.to_string();
        });
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
