//! Sending datums to CloudWatch: a bounded in-memory buffer (oldest dropped first,
//! and counted), batches that respect PutMetricData's limits, and the shared retry
//! policy ([`crate::retry`]) with the SDK's own retries turned off.
//!
//! Datums leave the buffer only after CloudWatch accepted them, oldest first, each
//! with the timestamp of the interval it was collected in. A flush that fails (or is
//! cut short by the caller's time budget) leaves the rest for the next interval.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::config::retry::RetryConfig;
use aws_sdk_cloudwatch::error::ProvideErrorMetadata;

use super::datums::Datum;
use super::{MetricsError, MetricsStatusHandle};
use crate::retry::{Backoff, Class, classify_aws, retry};

/// PutMetricData: at most 1,000 datums per request.
pub const MAX_DATUMS_PER_REQUEST: usize = 1000;
/// PutMetricData: at most 1 MB per request; kept below it with a margin for the
/// namespace and the request's own fields.
pub const MAX_REQUEST_BYTES: usize = 1_000_000;

/// Attempts per batch within one flush; a batch that still fails waits in the
/// buffer for the next interval.
const ATTEMPTS: u32 = 3;

/// Codes that mean the request itself is bad: retrying the same batch can never
/// succeed, so it is dropped (and counted) instead of blocking everything behind it.
const REJECTED_CODES: &[&str] = &[
    "InvalidParameterValue",
    "InvalidParameterCombination",
    "MissingParameter",
    "MissingRequiredParameter",
];

/// An upper estimate of one datum's size in the form-encoded request body.
pub fn encoded_size(d: &Datum) -> usize {
    // `MetricData.member.NNNN.` prefixes, MetricName, Value, Unit,
    // StorageResolution, Timestamp; each dimension's Name and Value, with room for
    // percent-encoding of the value.
    220 + d.name.len()
        + d.dimensions
            .iter()
            .map(|(k, v)| 110 + k.len() + 3 * v.len())
            .sum::<usize>()
}

/// How many datums from the front of `items` go into one request.
pub fn batch_len<'a>(items: impl IntoIterator<Item = &'a Datum>) -> usize {
    let mut n = 0;
    let mut bytes = 0;
    for d in items {
        let size = encoded_size(d);
        if n == MAX_DATUMS_PER_REQUEST || (n > 0 && bytes + size > MAX_REQUEST_BYTES) {
            break;
        }
        n += 1;
        bytes += size;
    }
    n
}

/// Datums waiting to be sent, oldest first, never more than `capacity`.
#[derive(Debug)]
pub struct Buffer {
    items: VecDeque<Datum>,
    capacity: usize,
    dropped: u64,
}

impl Buffer {
    pub fn new(capacity: usize) -> Buffer {
        Buffer {
            items: VecDeque::new(),
            capacity: capacity.max(1),
            dropped: 0,
        }
    }

    /// Appends, dropping the oldest datums when full; returns how many were dropped.
    pub fn push(&mut self, datums: impl IntoIterator<Item = Datum>) -> u64 {
        let mut dropped = 0;
        for d in datums {
            if self.items.len() == self.capacity {
                self.items.pop_front();
                dropped += 1;
            }
            self.items.push_back(d);
        }
        self.dropped += dropped;
        dropped
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Datums dropped since the buffer was made (full buffer or rejected batch).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The next request's datums (from the front; they stay until [`Buffer::sent`]).
    pub fn next_batch(&self) -> impl Iterator<Item = &Datum> {
        let n = batch_len(&self.items);
        self.items.iter().take(n)
    }

    /// The first `n` datums were accepted.
    pub fn sent(&mut self, n: usize) {
        self.items.drain(..n.min(self.items.len()));
    }

    /// The first `n` datums can never be sent: drop and count them.
    pub fn reject(&mut self, n: usize) {
        let n = n.min(self.items.len());
        self.items.drain(..n);
        self.dropped += n as u64;
    }

    pub fn iter(&self) -> impl Iterator<Item = &Datum> {
        self.items.iter()
    }
}

/// The buffer and the client that empties it.
pub struct Publisher {
    client: aws_sdk_cloudwatch::Client,
    namespace: String,
    buffer: Buffer,
    backoff: Backoff,
    status: MetricsStatusHandle,
}

impl Publisher {
    /// `client` is used with the SDK's own retries turned off (ours apply).
    pub fn new(
        client: aws_sdk_cloudwatch::Client,
        namespace: &str,
        capacity: usize,
        status: MetricsStatusHandle,
    ) -> Publisher {
        let conf = client
            .config()
            .to_builder()
            .retry_config(RetryConfig::disabled())
            .build();
        Publisher {
            client: aws_sdk_cloudwatch::Client::from_conf(conf),
            namespace: namespace.to_string(),
            buffer: Buffer::new(capacity),
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(10)),
            status,
        }
    }

    /// Reports into `status` from now on.
    pub(super) fn set_status(&mut self, status: MetricsStatusHandle) {
        self.status = status;
    }

    pub fn buffer(&self) -> &Buffer {
        &self.buffer
    }

    /// Adds one interval's datums (dropping the oldest if full).
    pub fn enqueue(&mut self, datums: Vec<Datum>) {
        let dropped = self.buffer.push(datums);
        if dropped > 0 {
            tracing::warn!(
                dropped,
                capacity = self.buffer.capacity(),
                "metrics: buffer full, oldest datapoints dropped"
            );
        }
        self.update_status(|s| {
            s.buffered_datums = self.buffer.len();
            s.dropped_datums = self.buffer.dropped();
        });
    }

    fn update_status(&self, f: impl FnOnce(&mut super::MetricsStatus)) {
        let mut s = self.status.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s);
    }

    /// Sends the whole buffer, oldest first, in as few requests as the limits
    /// allow. Returns how many datums were accepted. On an error the unsent datums
    /// stay buffered. Cancelling the future is safe: a batch leaves the buffer only
    /// after CloudWatch accepted it.
    pub async fn flush(&mut self) -> Result<usize, MetricsError> {
        let mut accepted = 0;
        while !self.buffer.is_empty() {
            let batch: Vec<_> = self.buffer.next_batch().map(Datum::to_sdk).collect();
            let n = batch.len();
            let client = &self.client;
            let namespace = &self.namespace;
            let result = retry(self.backoff.clone(), ATTEMPTS, classify_aws, || {
                client
                    .put_metric_data()
                    .namespace(namespace)
                    .set_metric_data(Some(batch.clone()))
                    .send()
            })
            .await;
            match result {
                Ok(_) => {
                    self.buffer.sent(n);
                    accepted += n;
                    self.update_status(|s| {
                        s.put_calls += 1;
                        s.published_datums += n as u64;
                        s.last_publish = Some(SystemTime::now());
                        s.buffered_datums = self.buffer.len();
                        s.last_error = None;
                    });
                }
                Err(e) => {
                    let rejected = classify_aws(&e) == Class::Permanent
                        && e.code().is_some_and(|c| REJECTED_CODES.contains(&c));
                    let message = crate::retry::error_chain(&e);
                    if rejected {
                        self.buffer.reject(n);
                        tracing::error!(datums = n, error = %message, "metrics: CloudWatch rejected a batch; dropped");
                    }
                    let err = MetricsError::Publish {
                        namespace: self.namespace.clone(),
                        buffered: self.buffer.len(),
                        message,
                    };
                    self.update_status(|s| {
                        s.buffered_datums = self.buffer.len();
                        s.dropped_datums = self.buffer.dropped();
                        s.last_error = Some(err.to_string());
                    });
                    if !rejected {
                        return Err(err);
                    }
                }
            }
        }
        Ok(accepted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::datums::Unit;
    use std::time::UNIX_EPOCH;

    fn datum(i: u64) -> Datum {
        Datum {
            name: "agent_heartbeat",
            dimensions: vec![("InstanceId", "i-0123456789abcdef0".into())],
            value: i as f64,
            unit: Unit::Count,
            timestamp: UNIX_EPOCH + Duration::from_secs(1_700_000_000 + i),
        }
    }

    /// Splits a buffer into requests the way `flush` does.
    fn batches(buf: &mut Buffer) -> Vec<Vec<Datum>> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let b: Vec<Datum> = buf.next_batch().cloned().collect();
            buf.sent(b.len());
            out.push(b);
        }
        out
    }

    #[test]
    fn batches_hold_at_most_1000_datums_in_order() {
        let mut buf = Buffer::new(10_000);
        buf.push((0..2500).map(datum));
        let b = batches(&mut buf);
        assert_eq!(
            b.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![1000, 1000, 500]
        );
        let values: Vec<f64> = b.iter().flatten().map(|d| d.value).collect();
        assert_eq!(values, (0..2500).map(|i| i as f64).collect::<Vec<_>>());
        assert!(buf.is_empty());
    }

    #[test]
    fn one_interval_of_eight_developers_is_one_request() {
        let mut buf = Buffer::new(10_000);
        buf.push((0..67).map(datum));
        assert_eq!(batches(&mut buf).len(), 1);
    }

    #[test]
    fn batches_stay_under_the_byte_limit() {
        let big = |i| Datum {
            dimensions: vec![("Developer", "x".repeat(250)); 10],
            ..datum(i)
        };
        let size = encoded_size(&big(0));
        assert!(size * 1000 > MAX_REQUEST_BYTES, "test needs big datums");
        let mut buf = Buffer::new(10_000);
        buf.push((0..1000).map(big));
        let b = batches(&mut buf);
        assert!(b.len() > 1);
        for batch in &b {
            assert!(batch.iter().map(encoded_size).sum::<usize>() <= MAX_REQUEST_BYTES);
        }
        assert_eq!(b.iter().map(Vec::len).sum::<usize>(), 1000);
    }

    #[test]
    fn full_buffer_drops_oldest_first_and_counts() {
        let mut buf = Buffer::new(5);
        assert_eq!(buf.push((0..3).map(datum)), 0);
        assert_eq!(buf.push((3..8).map(datum)), 3);
        assert_eq!(buf.len(), 5);
        assert_eq!(buf.dropped(), 3);
        let kept: Vec<f64> = buf.iter().map(|d| d.value).collect();
        assert_eq!(kept, vec![3.0, 4.0, 5.0, 6.0, 7.0]);
        // Timestamps are the original ones, not "now".
        assert_eq!(
            buf.iter().next().map(|d| d.timestamp),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_003))
        );
        assert_eq!(buf.push((8..9).map(datum)), 1);
        assert_eq!(buf.dropped(), 4);
        assert_eq!(buf.iter().next().map(|d| d.value), Some(4.0));
    }

    #[test]
    fn unsent_batch_stays_at_the_front_and_rejected_one_is_counted() {
        let mut buf = Buffer::new(100);
        buf.push((0..10).map(datum));
        // A failed send takes nothing out.
        let first: Vec<f64> = buf.next_batch().map(|d| d.value).collect();
        assert_eq!(first.len(), 10);
        assert_eq!(buf.len(), 10);
        buf.sent(4);
        assert_eq!(buf.iter().next().map(|d| d.value), Some(4.0));
        buf.reject(2);
        assert_eq!(buf.dropped(), 2);
        assert_eq!(buf.iter().next().map(|d| d.value), Some(6.0));
        buf.sent(100);
        assert!(buf.is_empty());
    }

    #[test]
    fn zero_capacity_still_keeps_the_newest() {
        let mut buf = Buffer::new(0);
        buf.push((0..3).map(datum));
        assert_eq!(buf.len(), 1);
        assert_eq!(buf.dropped(), 2);
    }
}
