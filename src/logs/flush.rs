//! When a held batch is sent: at the latest `flush_interval` after its first
//! line, and sooner once the log has been quiet for `quiet_flush`. A steady
//! stream still fills its batches (each line pushes the quiet time back); the
//! end of a burst is sent within `quiet_flush` instead of waiting out the
//! interval.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub(super) struct FlushTimer {
    interval: Duration,
    quiet: Duration,
    /// `flush_interval` after the first line held.
    due: Option<Instant>,
    /// `quiet_flush` after the last line read (or the last put).
    quiet_at: Option<Instant>,
}

impl FlushTimer {
    pub(super) fn new(interval: Duration, quiet: Duration) -> FlushTimer {
        FlushTimer {
            interval,
            quiet,
            due: None,
            quiet_at: None,
        }
    }

    /// A line was read and is held.
    pub(super) fn line(&mut self, now: Instant) {
        self.due.get_or_insert(now + self.interval);
        self.quiet_at = Some(now + self.quiet);
    }

    /// Batches were sent; `holding` says whether lines are still held. The
    /// time spent in the put does not count as quiet: the reader may have been
    /// waiting for buffer budget meanwhile.
    pub(super) fn sent(&mut self, holding: bool, now: Instant) {
        if holding {
            self.due = Some(now + self.interval);
            self.quiet_at = Some(now + self.quiet);
        } else {
            self.clear();
        }
    }

    /// What was held has been taken.
    pub(super) fn clear(&mut self) {
        self.due = None;
        self.quiet_at = None;
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        match (self.due, self.quiet_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Resolves at the deadline; never while nothing is held.
    pub(super) async fn wait(&self) {
        match self.deadline() {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(2);
    const QUIET: Duration = Duration::from_millis(200);

    #[test]
    fn nothing_held_means_no_deadline() {
        let t = FlushTimer::new(INTERVAL, QUIET);
        assert_eq!(t.deadline(), None);
    }

    #[test]
    fn a_quiet_log_is_sent_after_the_quiet_time() {
        let t0 = Instant::now();
        let mut t = FlushTimer::new(INTERVAL, QUIET);
        t.line(t0);
        t.line(t0 + Duration::from_millis(50));
        assert_eq!(t.deadline(), Some(t0 + Duration::from_millis(250)));
    }

    #[test]
    fn a_steady_trickle_is_sent_at_the_interval() {
        // A line every 100 ms never leaves 200 ms of quiet: the interval after
        // the first line bounds the wait.
        let t0 = Instant::now();
        let mut t = FlushTimer::new(INTERVAL, QUIET);
        for i in 0..30 {
            t.line(t0 + Duration::from_millis(100 * i));
        }
        assert_eq!(t.deadline(), Some(t0 + INTERVAL));
    }

    #[test]
    fn after_a_put_both_times_start_again_or_end() {
        let t0 = Instant::now();
        let mut t = FlushTimer::new(INTERVAL, QUIET);
        t.line(t0);
        let after_put = t0 + Duration::from_millis(700);
        t.sent(true, after_put);
        assert_eq!(t.deadline(), Some(after_put + QUIET));
        t.sent(false, after_put);
        assert_eq!(t.deadline(), None);
        t.line(after_put);
        t.clear();
        assert_eq!(t.deadline(), None);
    }
}
