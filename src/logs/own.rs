//! The agent's own log lines to CloudWatch Logs (`logs.agent_group`, default
//! `/aws/ec2/<project>/agent`, stream = instance id), so an admin can read why
//! the agent is unhappy without SSH.
//!
//! Best effort, unlike container logs: the journal keeps the full log, and a
//! logger must never block the code that logs. Lines wait in a bounded queue in
//! memory (oldest dropped and counted when full) from the moment logging starts,
//! so the start-up lines (volume wait, first convergence) ship once the shipper
//! runs. Only `csagent` events at INFO and above are queued (the logging layer
//! filters), never the SDK's chatter.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{LazyLock, Mutex, MutexGuard};

use tokio::sync::Notify;
use tracing_subscriber::fmt::MakeWriter;

use super::batch::{Batcher, Event, Limits, MAX_MESSAGE_BYTES, split_message};
use super::checkpoint::Tail;
use super::sink::Sink;
use super::status::{LogsStatusHandle, now_ms};
use super::{ShipperOptions, Stop};

/// Bytes of lines the queue holds before it drops the oldest.
const QUEUE_BYTES: usize = 2 * 1024 * 1024;

static QUEUE: LazyLock<Queue> = LazyLock::new(Queue::default);

#[derive(Debug, Default)]
struct Queue {
    inner: Mutex<Inner>,
    /// Signalled on every queued line, so the shipper sleeps while nothing is
    /// logged instead of waking every flush interval to find the queue empty.
    queued: Notify,
}

#[derive(Debug, Default)]
struct Inner {
    lines: VecDeque<(i64, String)>,
    bytes: usize,
    dropped: u64,
    /// Agent log shipping is off in the config: queue nothing.
    off: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Plain data: a panic while holding the lock leaves nothing half-done.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, ts_ms: i64, line: String) {
        {
            let mut q = self.lock();
            if q.off {
                return;
            }
            q.bytes += line.len();
            q.lines.push_back((ts_ms, line));
            while q.bytes > QUEUE_BYTES {
                let Some((_, old)) = q.lines.pop_front() else {
                    break;
                };
                q.bytes -= old.len();
                q.dropped += 1;
            }
        }
        // Stores a permit when the shipper is not waiting (busy delivering, or not
        // started yet): its next wait returns at once, so no line is left behind.
        self.queued.notify_one();
    }

    /// Returns once a line was queued since the last call returned.
    async fn wait_queued(&self) {
        self.queued.notified().await;
    }

    fn drain(&self) -> (Vec<(i64, String)>, u64) {
        let mut q = self.lock();
        q.bytes = 0;
        (q.lines.drain(..).collect(), std::mem::take(&mut q.dropped))
    }

    fn set_off(&self, off: bool) {
        let mut q = self.lock();
        q.off = off;
        if off {
            q.lines.clear();
            q.bytes = 0;
        }
    }
}

/// Stops queueing (and forgets queued lines): agent log shipping is off.
pub fn disable() {
    QUEUE.set_off(true);
}

/// The `MakeWriter` for the tracing layer that feeds the queue: each formatted
/// event arrives as one write and becomes one line.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueWriter;

impl<'a> MakeWriter<'a> for QueueWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter(Vec::new())
    }
}

/// Collects one event's text; queued when dropped.
#[derive(Debug)]
pub struct LineWriter(Vec<u8>);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let line = text.trim();
        if !line.is_empty() {
            QUEUE.push(now_ms(), line.to_string());
        }
    }
}

/// Ships queued lines until `stop`, then once more: once a line is queued, the
/// lines of the next `flush_interval` go together.
pub(crate) async fn ship(
    mut sink: Sink,
    retention_days: Option<u32>,
    options: ShipperOptions,
    stop: Stop,
) {
    QUEUE.set_off(false);
    // Required by `Sink::deliver`; the agent stream is not a developer's, so
    // this status is not shown anywhere.
    let status = LogsStatusHandle::default();
    let mut tail = Tail::default();
    loop {
        // The agent is quiet while idle: no timer runs until a line is queued.
        let stopping = tokio::select! {
            _ = QUEUE.wait_queued() => tokio::select! {
                _ = tokio::time::sleep(options.flush_interval) => false,
                _ = stop.requested() => true,
            },
            _ = stop.requested() => true,
        };
        let (lines, dropped) = QUEUE.drain();
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "agent log: queue was full; oldest lines not shipped (the journal has them)"
            );
        }
        let mut batcher: Batcher = Batcher::new(Limits::for_retention(retention_days));
        let mut batches = Vec::new();
        let now = now_ms();
        for (ts, line) in lines {
            let events = split_message(line.as_bytes(), MAX_MESSAGE_BYTES)
                .into_iter()
                .map(|message| Event {
                    timestamp_ms: ts,
                    message,
                    end: None,
                })
                .collect();
            batches.extend(batcher.push_line(events, 0, now));
        }
        batches.extend(batcher.take());
        for batch in batches.into_iter().filter(|b| !b.events.is_empty()) {
            let delivered = sink
                .deliver(
                    &batch,
                    tail,
                    options.backoff.clone(),
                    &status,
                    "(agent)",
                    &stop,
                )
                .await;
            match delivered {
                Ok(super::sink::Delivered::Sent { accepted, .. }) => {
                    tail = tail.after(batch.events[accepted].iter().map(|e| e.0));
                }
                Ok(super::sink::Delivered::Landed) => {
                    tail = tail.after(batch.events.iter().map(|e| e.0));
                }
                // Shutdown and the flush time ran out.
                Err(_) => return,
            }
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_is_bounded_and_counts_what_it_drops() {
        let q = Queue::default();
        let line = "x".repeat(1024);
        for i in 0..(QUEUE_BYTES / 1024 + 10) {
            q.push(i as i64, line.clone());
        }
        let (lines, dropped) = q.drain();
        assert_eq!(dropped, 10);
        assert_eq!(lines.len(), QUEUE_BYTES / 1024);
        assert_eq!(lines[0].0, 10, "the oldest went first");
        assert_eq!(q.drain(), (Vec::new(), 0));
        q.set_off(true);
        q.push(1, "ignored".into());
        assert!(q.drain().0.is_empty());
    }

    #[tokio::test]
    async fn the_shipper_sleeps_until_a_line_is_queued() {
        let q = Queue::default();
        let short = std::time::Duration::from_millis(50);
        assert!(
            tokio::time::timeout(short, q.wait_queued()).await.is_err(),
            "nothing queued: no wake-up"
        );
        // Queued while nobody waited (the shipper busy delivering): the next
        // wait returns at once.
        q.push(1, "before the wait".into());
        assert!(tokio::time::timeout(short, q.wait_queued()).await.is_ok());
        assert!(tokio::time::timeout(short, q.wait_queued()).await.is_err());
        // Queued while waiting.
        let waiter = async {
            tokio::time::timeout(std::time::Duration::from_secs(5), q.wait_queued()).await
        };
        let push = async {
            tokio::time::sleep(short).await;
            q.push(2, "during the wait".into());
        };
        let (woke, ()) = tokio::join!(waiter, push);
        assert!(woke.is_ok(), "a queued line wakes the shipper");
        assert_eq!(q.drain().0.len(), 2);
        // A line refused because shipping is off wakes nobody.
        q.set_off(true);
        q.push(3, "ignored".into());
        assert!(tokio::time::timeout(short, q.wait_queued()).await.is_err());
    }
}
