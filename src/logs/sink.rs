//! CloudWatch Logs: the group (with retention) and stream, and delivering one
//! batch exactly once.
//!
//! PutLogEvents is sent with the SDK's own retries off: this module's loop is the
//! only retry (jittered backoff from [`crate::retry`]), because a retry after an
//! *ambiguous* failure (timeout, dropped connection, 5xx — the service may have
//! stored the batch) first reads the stream back to see whether the batch landed.
//! Definite failures (throttling, 4xx) are simply retried. Events the service
//! rejects as too old/new/expired are counted, never retried.

use std::time::Duration;

use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::config::retry::RetryConfig;
use aws_sdk_cloudwatchlogs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatchlogs::types::InputLogEvent;

use super::Stop;
use super::batch::Batch;
use super::checkpoint::Tail;
use super::status::LogsStatusHandle;
use crate::retry::{Backoff, Class, classify_aws};

/// A failed CloudWatch Logs call, naming the call and where.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{op} {group} / {stream}: {message}")]
pub struct SinkError {
    pub op: &'static str,
    pub group: String,
    pub stream: String,
    pub message: String,
    pub class: Class,
    /// The group or stream does not exist (deleted under us): create it again.
    pub not_found: bool,
    /// The call may have taken effect although it failed.
    pub ambiguous: bool,
}

/// The shipper stopped (shutdown and the flush time ran out) before the batch
/// was delivered; its in-flight record stays for the next start to settle.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("stopped before the batch was delivered")]
pub struct Aborted;

/// How a batch was settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// PutLogEvents succeeded; events in `accepted` (indexes) were stored.
    Sent {
        accepted: std::ops::Range<usize>,
        too_old: u64,
        too_new: u64,
    },
    /// An earlier attempt (or the agent before a crash) stored it: read back.
    Landed,
}

/// One log stream.
#[derive(Debug, Clone)]
pub struct Sink {
    client: Client,
    group: String,
    stream: String,
    retention_days: Option<u32>,
    ready: bool,
    /// This agent created the group and has not yet set its retention.
    retention_pending: bool,
    /// How long after an ambiguous put the stream is read back (CloudWatch may
    /// take a moment to show new events).
    settle: Duration,
}

impl Sink {
    pub fn new(
        client: Client,
        group: String,
        stream: String,
        retention_days: Option<u32>,
        settle: Duration,
    ) -> Sink {
        Sink {
            client,
            group,
            stream,
            retention_days,
            ready: false,
            retention_pending: false,
            settle,
        }
    }

    fn error<E>(
        &self,
        op: &'static str,
        e: &SdkError<E, aws_sdk_cloudwatchlogs::config::http::HttpResponse>,
    ) -> SinkError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let class = classify_aws(e);
        let ambiguous = match e {
            SdkError::ServiceError(_) => {
                class == Class::Transient && e.code().is_none_or(|c| !c.contains("Throttl"))
            }
            SdkError::ConstructionFailure(_) => false,
            _ => true,
        };
        SinkError {
            op,
            group: self.group.clone(),
            stream: self.stream.clone(),
            message: crate::retry::error_chain(e),
            class,
            not_found: e.code() == Some("ResourceNotFoundException"),
            ambiguous,
        }
    }

    /// Creates the group (with its retention) and the stream when missing;
    /// "already exists" is success. Retention is set only on a group this agent
    /// creates, so a retention changed by hand (or by the stack) is kept.
    pub async fn ensure(&mut self) -> Result<(), SinkError> {
        match self
            .client
            .create_log_group()
            .log_group_name(&self.group)
            .send()
            .await
        {
            Ok(_) => self.retention_pending = self.retention_days.is_some(),
            Err(e) if e.code() == Some("ResourceAlreadyExistsException") => {}
            Err(e) => return Err(self.error("CreateLogGroup", &e)),
        }
        // Still owed if the call failed after we created the group.
        if let (true, Some(days)) = (self.retention_pending, self.retention_days) {
            self.client
                .put_retention_policy()
                .log_group_name(&self.group)
                .retention_in_days(i32::try_from(days).unwrap_or(i32::MAX))
                .send()
                .await
                .map_err(|e| self.error("PutRetentionPolicy", &e))?;
            self.retention_pending = false;
        }
        match self
            .client
            .create_log_stream()
            .log_group_name(&self.group)
            .log_stream_name(&self.stream)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == Some("ResourceAlreadyExistsException") => {}
            Err(e) => return Err(self.error("CreateLogStream", &e)),
        }
        self.ready = true;
        Ok(())
    }

    /// One PutLogEvents attempt, without the SDK's retries.
    async fn put(&self, events: Vec<InputLogEvent>) -> Result<Delivered, SinkError> {
        let n = events.len();
        let out = self
            .client
            .put_log_events()
            .log_group_name(&self.group)
            .log_stream_name(&self.stream)
            .set_log_events(Some(events))
            .customize()
            .config_override(
                aws_sdk_cloudwatchlogs::config::Config::builder()
                    .retry_config(RetryConfig::disabled()),
            )
            .send()
            .await
            .map_err(|e| self.error("PutLogEvents", &e))?;
        let accepted = match out.rejected_log_events_info() {
            Some(r) => accepted_range(
                n,
                r.too_old_log_event_end_index(),
                r.expired_log_event_end_index(),
                r.too_new_log_event_start_index(),
            ),
            None => 0..n,
        };
        let (too_old, too_new) = (accepted.start as u64, (n - accepted.end) as u64);
        Ok(Delivered::Sent {
            accepted,
            too_old,
            too_new,
        })
    }

    /// Events in the stream with timestamps in `[first_ms, last_ms]`, read to the
    /// end of the stream (see [`count_pages`]).
    pub async fn count_between(&self, first_ms: i64, last_ms: i64) -> Result<u64, SinkError> {
        count_pages(MAX_READBACK_PAGES, |token| async move {
            let out = self
                .client
                .get_log_events()
                .log_group_name(&self.group)
                .log_stream_name(&self.stream)
                .start_time(first_ms)
                .end_time(last_ms + 1) // exclusive
                .start_from_head(true)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| self.error("GetLogEvents", &e))?;
            Ok(Page {
                events: out.events().len() as u64,
                next_token: out.next_forward_token().map(str::to_string),
            })
        })
        .await
        .map_err(|e| match e {
            ReadBack::Call(e) => e,
            ReadBack::TooLong { pages } => SinkError {
                op: "GetLogEvents",
                group: self.group.clone(),
                stream: self.stream.clone(),
                message: format!("no end of stream after {pages} pages; deciding later"),
                class: Class::Transient,
                not_found: false,
                ambiguous: true,
            },
        })
    }

    /// Whether a batch of `events` events in `[first_ms, last_ms]` is in the
    /// stream, given `before` of this container's events already there from
    /// earlier batches. A put stores all its accepted events or none, so any
    /// more than `before` means it landed.
    pub async fn landed(
        &self,
        first_ms: i64,
        last_ms: i64,
        before: u64,
    ) -> Result<bool, SinkError> {
        Ok(self.count_between(first_ms, last_ms).await? > before)
    }

    /// Delivers `batch` exactly once: retries until it is stored (or found
    /// stored), or until `stop` says the flush time is over.
    pub async fn deliver<P>(
        &mut self,
        batch: &Batch<P>,
        tail: Tail,
        backoff: Backoff,
        status: &LogsStatusHandle,
        developer: &str,
        stop: &Stop,
    ) -> Result<Delivered, Aborted> {
        self.deliver_reporting(batch, tail, backoff, stop, |e, delay| {
            status.failed(developer, &e.to_string());
            tracing::warn!(
                developer = %developer,
                error = %e,
                retry_in = ?delay,
                "shipping container logs failed; retrying"
            );
        })
        .await
    }

    /// [`Sink::deliver`], telling `on_retry` of each failed attempt and the
    /// delay before the next.
    pub async fn deliver_reporting<P>(
        &mut self,
        batch: &Batch<P>,
        tail: Tail,
        backoff: Backoff,
        stop: &Stop,
        mut on_retry: impl FnMut(&SinkError, Duration),
    ) -> Result<Delivered, Aborted> {
        let (Some(first_ms), Some(last_ms)) = (batch.first_ms(), batch.last_ms()) else {
            return Ok(Delivered::Sent {
                accepted: 0..0,
                too_old: 0,
                too_new: 0,
            });
        };
        let build = || {
            let mut events = Vec::with_capacity(batch.events.len());
            for (ts, msg) in &batch.events {
                // Both fields are set, so this cannot fail.
                if let Ok(e) = InputLogEvent::builder().timestamp(*ts).message(msg).build() {
                    events.push(e);
                }
            }
            events
        };
        // Built once for the first attempt; a retry builds them again (the SDK
        // takes them by value), so the common case copies each message once.
        let mut events = Some(build());
        let mut backoff = backoff;
        let mut check_first = false;
        let mut doubtful_put: Option<tokio::time::Instant> = None;
        loop {
            let attempt = async {
                if !self.ready {
                    self.ensure().await?;
                }
                if check_first {
                    if let Some(at) = doubtful_put {
                        tokio::time::sleep_until(at + self.settle).await;
                    }
                    if self
                        .landed(first_ms, last_ms, tail.before(first_ms))
                        .await?
                    {
                        return Ok(Delivered::Landed);
                    }
                    check_first = false;
                }
                self.put(events.take().unwrap_or_else(build)).await
            };
            let result = tokio::select! {
                r = attempt => r,
                _ = stop.expired() => return Err(Aborted),
            };
            match result {
                Ok(d) => return Ok(d),
                Err(e) => {
                    let delay = backoff.next_delay();
                    on_retry(&e, delay);
                    if e.not_found {
                        self.ready = false;
                    }
                    // Once in doubt, stay in doubt until a read-back answers.
                    if e.ambiguous && e.op == "PutLogEvents" {
                        doubtful_put = Some(tokio::time::Instant::now());
                    }
                    check_first |= e.ambiguous;
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.expired() => return Err(Aborted),
                    }
                }
            }
        }
    }
}

/// Read-back pages before the count is given up as undecided (and retried later):
/// a batch spans at most 10,000 events, so a healthy stream ends long before.
const MAX_READBACK_PAGES: usize = 1_000;

/// One GetLogEvents page, as far as counting needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub events: u64,
    pub next_token: Option<String>,
}

/// Why a read-back gave no count.
#[derive(Debug)]
pub enum ReadBack<E> {
    Call(E),
    /// The stream did not end within the page bound.
    TooLong {
        pages: usize,
    },
}

/// Counts the events of a forward read from the head. CloudWatch Logs may return
/// empty pages with more events after them; the end of the stream is the page
/// whose forward token is the one just sent. So only a repeated token (or none)
/// ends the count, never an empty page; a stream that does not end within
/// `max_pages` leaves the decision open rather than guessing (an undercount
/// would re-put a stored batch, an overcount would accept a lost one).
pub async fn count_pages<E, F, Fut>(max_pages: usize, mut fetch: F) -> Result<u64, ReadBack<E>>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<Page, E>>,
{
    let mut total = 0u64;
    let mut token: Option<String> = None;
    for _ in 0..max_pages {
        let page = fetch(token.clone()).await.map_err(ReadBack::Call)?;
        total += page.events;
        match page.next_token {
            None => return Ok(total),
            Some(next) if token.as_deref() == Some(next.as_str()) => return Ok(total),
            next => token = next,
        }
    }
    Err(ReadBack::TooLong { pages: max_pages })
}

/// Which of `n` events the service stored, from `rejectedLogEventsInfo`: those
/// up to the too-old and expired end indexes (inclusive) and from the too-new
/// start index on were rejected.
fn accepted_range(
    n: usize,
    too_old_end: Option<i32>,
    expired_end: Option<i32>,
    too_new_start: Option<i32>,
) -> std::ops::Range<usize> {
    let after = |i: Option<i32>| i.map_or(0, |i| usize::try_from(i).map_or(0, |i| i + 1));
    let end = too_new_start.map_or(n, |i| usize::try_from(i).unwrap_or(0).min(n));
    let start = after(too_old_end).max(after(expired_end)).min(end);
    start..end
}

/// The settle time before reading back a batch a crashed agent left in flight.
pub fn settle_delay(started_ms: i64, now_ms: i64, settle: Duration) -> Duration {
    let age = Duration::from_millis(now_ms.saturating_sub(started_ms).max(0) as u64);
    settle.saturating_sub(age)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_indexes_to_the_accepted_range() {
        assert_eq!(accepted_range(10, None, None, None), 0..10);
        assert_eq!(accepted_range(10, Some(2), None, None), 3..10);
        assert_eq!(accepted_range(10, Some(2), Some(4), None), 5..10);
        assert_eq!(accepted_range(10, None, None, Some(7)), 0..7);
        assert_eq!(accepted_range(10, Some(9), None, None), 10..10);
        assert_eq!(accepted_range(10, Some(5), None, Some(3)), 3..3);
        assert_eq!(accepted_range(10, None, None, Some(0)), 0..0);
    }

    /// A fake GetLogEvents: `pages[i]` is (events, next token) for the i-th call;
    /// records the tokens it was sent.
    async fn count_fake(
        pages: &[(u64, Option<&str>)],
        max: usize,
    ) -> (Result<u64, String>, Vec<Option<String>>) {
        let sent = std::cell::RefCell::new(Vec::new());
        let result = count_pages(max, |token| {
            let i = sent.borrow().len();
            sent.borrow_mut().push(token);
            let page = pages.get(i).map(|(n, t)| Page {
                events: *n,
                next_token: t.map(str::to_string),
            });
            async move { page.ok_or_else(|| "read past the fake's pages".to_string()) }
        })
        .await
        .map_err(|e| match e {
            ReadBack::Call(e) => e,
            ReadBack::TooLong { pages } => format!("too long: {pages}"),
        });
        (result, sent.into_inner())
    }

    #[tokio::test]
    async fn empty_pages_before_the_end_do_not_stop_the_count() {
        let pages = [
            (0, Some("a")),
            (0, Some("b")),
            (3, Some("c")),
            (0, Some("d")),
            (2, Some("e")),
            (0, Some("e")), // the token sent comes back: end of stream
        ];
        let (count, sent) = count_fake(&pages, 100).await;
        assert_eq!(count, Ok(5));
        let sent: Vec<_> = sent.iter().map(|t| t.as_deref()).collect();
        assert_eq!(
            sent,
            [None, Some("a"), Some("b"), Some("c"), Some("d"), Some("e")]
        );
    }

    #[tokio::test]
    async fn a_repeated_token_ends_the_count_and_no_token_too() {
        let (count, sent) = count_fake(&[(4, Some("x")), (1, Some("x"))], 100).await;
        assert_eq!((count, sent.len()), (Ok(5), 2));
        let (count, sent) = count_fake(&[(0, Some("x")), (7, None)], 100).await;
        assert_eq!((count, sent.len()), (Ok(7), 2));
        let (count, _) = count_fake(&[(0, None)], 100).await;
        assert_eq!(count, Ok(0), "an empty stream counts zero");
    }

    #[tokio::test]
    async fn a_stream_without_end_is_undecided_not_guessed() {
        let pages: Vec<(u64, Option<&str>)> =
            ["1", "2", "3", "4"].iter().map(|t| (0, Some(*t))).collect();
        let (count, sent) = count_fake(&pages, 3).await;
        assert_eq!(count, Err("too long: 3".to_string()));
        assert_eq!(sent.len(), 3);
    }

    #[tokio::test]
    async fn a_failed_page_fails_the_count() {
        let (count, _) = count_fake(&[(2, Some("a"))], 100).await;
        assert_eq!(count, Err("read past the fake's pages".to_string()));
    }

    #[test]
    fn settle_waits_only_for_what_is_left() {
        let s = Duration::from_secs(5);
        assert_eq!(settle_delay(1_000, 3_000, s), Duration::from_secs(3));
        assert_eq!(settle_delay(1_000, 9_000, s), Duration::ZERO);
        assert_eq!(
            settle_delay(9_000, 1_000, s),
            s,
            "clock went back: wait it all"
        );
    }
}
