//! Every PutLogEvents limit, in one place: what goes into one call, and how a
//! Docker line becomes CloudWatch events.
//!
//! - at most [`MAX_BATCH_EVENTS`] events and [`MAX_BATCH_BYTES`] bytes per call,
//!   counting each event as its UTF-8 message bytes plus [`EVENT_OVERHEAD`];
//! - events in chronological order, the whole batch spanning less than 24 h;
//! - only events inside the accepted age window (14 days, or the group's
//!   retention if shorter, back; 2 h ahead) are sent; the rest are counted as
//!   rejected, never retried;
//! - a message is at most [`MAX_MESSAGE_BYTES`]; longer lines are split on UTF-8
//!   character boundaries, and invalid UTF-8 is replaced (U+FFFD), not dropped.

use super::follow::Position;

/// Most events in one PutLogEvents call.
pub const MAX_BATCH_EVENTS: usize = 10_000;
/// Most bytes in one call: the sum of message bytes plus [`EVENT_OVERHEAD`] each.
pub const MAX_BATCH_BYTES: usize = 1_048_576;
/// What CloudWatch Logs adds to every event when it counts a batch's size.
pub const EVENT_OVERHEAD: usize = 26;
/// Largest message we send in one event (256 KiB event size less the overhead).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 - EVENT_OVERHEAD;
/// A batch must span less than this (first to last timestamp).
pub const MAX_SPAN_MS: i64 = 24 * 3600 * 1000;
/// Events older than this are rejected by the service.
pub const MAX_AGE_MS: i64 = 14 * 24 * 3600 * 1000;
/// Events further ahead than this are rejected by the service.
pub const MAX_AHEAD_MS: i64 = 2 * 3600 * 1000;

/// One CloudWatch event as it leaves the follower. `P` is where its reader
/// resumes (a Docker log position, a journal cursor).
#[derive(Debug, Clone, PartialEq)]
pub struct Event<P = Position> {
    /// Milliseconds since the epoch.
    pub timestamp_ms: i64,
    pub message: String,
    /// Set on the last piece of a line: where the follower may resume once this
    /// event is shipped (the checkpoint).
    pub end: Option<P>,
}

/// The limits a [`Batcher`] enforces. [`Limits::for_retention`] gives the
/// service's; tests shrink them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_events: usize,
    pub max_bytes: usize,
    pub max_span_ms: i64,
    pub max_age_ms: i64,
    pub max_ahead_ms: i64,
}

impl Limits {
    /// The service's limits for a group keeping events `retention_days` (events
    /// older than the retention are rejected as expired).
    pub fn for_retention(retention_days: Option<u32>) -> Limits {
        let max_age_ms = retention_days
            .map(|d| i64::from(d) * 24 * 3600 * 1000)
            .unwrap_or(MAX_AGE_MS)
            .min(MAX_AGE_MS);
        Limits {
            max_events: MAX_BATCH_EVENTS,
            max_bytes: MAX_BATCH_BYTES,
            max_span_ms: MAX_SPAN_MS,
            max_age_ms,
            max_ahead_ms: MAX_AHEAD_MS,
        }
    }
}

/// What one PutLogEvents call carries, and what it settles.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch<P = Position> {
    /// Events to send, chronological.
    pub events: Vec<(i64, String)>,
    /// Size as CloudWatch counts it (message bytes + 26 per event).
    pub bytes: usize,
    /// Checkpoint once the batch is settled: the last line end it contains
    /// (including lines whose events were all rejected).
    pub end: Option<P>,
    /// Events dropped before sending because the service would reject them.
    pub too_old: u64,
    pub too_new: u64,
    /// Buffer budget the batch holds (released once it is settled).
    pub cost: usize,
}

impl<P> Default for Batch<P> {
    fn default() -> Self {
        Batch {
            events: Vec::new(),
            bytes: 0,
            end: None,
            too_old: 0,
            too_new: 0,
            cost: 0,
        }
    }
}

impl<P> Batch<P> {
    /// Nothing to send and nothing to settle.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.end.is_none() && self.too_old == 0 && self.too_new == 0
    }

    pub fn first_ms(&self) -> Option<i64> {
        self.events.first().map(|e| e.0)
    }

    pub fn last_ms(&self) -> Option<i64> {
        self.events.last().map(|e| e.0)
    }
}

/// Where an event went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Into the current batch.
    Added,
    /// Counted as too old or too new; its line end still advances the checkpoint.
    TooOld,
    TooNew,
}

/// Collects events into batches that satisfy [`Limits`].
#[derive(Debug)]
pub struct Batcher<P = Position> {
    limits: Limits,
    current: Batch<P>,
}

impl<P> Batcher<P> {
    pub fn new(limits: Limits) -> Batcher<P> {
        Batcher {
            limits,
            current: Batch::default(),
        }
    }

    /// Adds one line's events (the pieces of a split line, all with the same
    /// timestamp), costing `cost` of the buffer budget, judged against the clock
    /// `now_ms`. A line is kept in one batch when it fits in one (a line of up to
    /// four maximal pieces always does), so a batch boundary, and hence a
    /// checkpoint, never falls inside it. Returns the batches closed on the way.
    pub fn push_line(&mut self, events: Vec<Event<P>>, cost: usize, now_ms: i64) -> Vec<Batch<P>> {
        let mut closed = Vec::new();
        if let Some(first) = events.first()
            && events.len() > 1
            && self.in_window(first.timestamp_ms, now_ms).is_none()
        {
            let size: usize = events
                .iter()
                .map(|e| e.message.len() + EVENT_OVERHEAD)
                .sum();
            if self.would_overflow(first.timestamp_ms, events.len(), size) {
                closed.extend(self.take());
            }
        }
        let mut cost = Some(cost);
        for event in events {
            let (_, batch) = self.push(event, cost.take().unwrap_or(0), now_ms);
            closed.extend(batch);
        }
        closed
    }

    /// `Some(rejection)` when the service would not accept `ts`.
    fn in_window(&self, ts: i64, now_ms: i64) -> Option<Pushed> {
        if ts < now_ms.saturating_sub(self.limits.max_age_ms) {
            Some(Pushed::TooOld)
        } else if ts > now_ms.saturating_add(self.limits.max_ahead_ms) {
            Some(Pushed::TooNew)
        } else {
            None
        }
    }

    /// Whether `n` more events of `size` bytes at `ts` break a limit of the
    /// current batch.
    fn would_overflow(&self, ts: i64, n: usize, size: usize) -> bool {
        let l = &self.limits;
        let Some(&(first, _)) = self.current.events.first() else {
            return false;
        };
        let last = self.current.events.last().map_or(first, |e| e.0);
        self.current.events.len() + n > l.max_events
            || self.current.bytes + size > l.max_bytes
            || ts - first >= l.max_span_ms
            // Never reorder: an earlier timestamp starts a new batch.
            || ts < last
    }

    /// Adds one event (costing `cost` of the buffer budget), judged against the
    /// clock `now_ms`. Returns the batch that had to be closed first when the
    /// event would have broken a limit.
    pub fn push(
        &mut self,
        event: Event<P>,
        cost: usize,
        now_ms: i64,
    ) -> (Pushed, Option<Batch<P>>) {
        match self.in_window(event.timestamp_ms, now_ms) {
            Some(Pushed::TooOld) => {
                self.current.too_old += 1;
                self.settle(event.end, cost);
                return (Pushed::TooOld, None);
            }
            Some(rejected) => {
                self.current.too_new += 1;
                self.settle(event.end, cost);
                return (rejected, None);
            }
            None => {}
        }
        let size = event.message.len() + EVENT_OVERHEAD;
        let closed = if self.would_overflow(event.timestamp_ms, 1, size) {
            self.take()
        } else {
            None
        };
        self.current.bytes += size;
        self.current
            .events
            .push((event.timestamp_ms, event.message));
        self.settle(event.end, cost);
        (Pushed::Added, closed)
    }

    fn settle(&mut self, end: Option<P>, cost: usize) {
        if end.is_some() {
            self.current.end = end;
        }
        self.current.cost += cost;
    }

    /// The current batch, if it holds anything; a new one is started.
    pub fn take(&mut self) -> Option<Batch<P>> {
        if self.current.is_empty() && self.current.cost == 0 {
            return None;
        }
        Some(std::mem::take(&mut self.current))
    }

    pub fn is_empty(&self) -> bool {
        self.current.is_empty() && self.current.cost == 0
    }

    /// Events in the current batch.
    pub fn len(&self) -> usize {
        self.current.events.len()
    }
}

/// Turns one line's bytes into event messages: invalid UTF-8 replaced with
/// U+FFFD, then split into pieces of at most `max_bytes` on character boundaries.
/// An empty line becomes a single space (the service rejects empty messages), so
/// line counts stay intact.
pub fn split_message(bytes: &[u8], max_bytes: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    if text.is_empty() {
        return vec![" ".to_string()];
    }
    if text.len() <= max_bytes {
        return vec![text.into_owned()];
    }
    let max_bytes = max_bytes.max(4); // room for any one character
    let mut pieces = Vec::with_capacity(text.len() / max_bytes + 1);
    let mut rest: &str = &text;
    while !rest.is_empty() {
        let mut cut = rest.len().min(max_bytes);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        pieces.push(head.to_string());
        rest = tail;
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn ev(ts: i64, msg: &str) -> Event {
        Event {
            timestamp_ms: ts,
            message: msg.to_string(),
            end: Some(Position {
                ts_ns: ts * 1_000_000,
                count: 1,
            }),
        }
    }

    fn service() -> Batcher {
        Batcher::new(Limits::for_retention(Some(30)))
    }

    /// Pushes everything and returns the closed batches plus the final one.
    fn run(b: &mut Batcher, events: Vec<Event>) -> Vec<Batch> {
        let mut out = Vec::new();
        for e in events {
            if let (_, Some(batch)) = b.push(e, 1, NOW) {
                out.push(batch);
            }
        }
        out.extend(b.take());
        out
    }

    #[test]
    fn at_most_10000_events() {
        let mut b = service();
        let batches = run(
            &mut b,
            (0..25_000).map(|i| ev(NOW, &format!("{i}"))).collect(),
        );
        let sizes: Vec<usize> = batches.iter().map(|b| b.events.len()).collect();
        assert_eq!(sizes, vec![10_000, 10_000, 5_000]);
        assert_eq!(batches[0].events[0].1, "0");
        assert_eq!(batches[1].events[0].1, "10000");
    }

    #[test]
    fn at_most_1_mib_counting_26_per_event() {
        let mut b = service();
        // 1000-byte messages: each costs 1026, so 1022 fit (1,048,572 bytes).
        let line = "x".repeat(1000);
        let batches = run(&mut b, (0..3000).map(|_| ev(NOW, &line)).collect());
        assert_eq!(batches[0].events.len(), 1022);
        for batch in &batches {
            let counted: usize = batch.events.iter().map(|e| e.1.len() + 26).sum();
            assert_eq!(counted, batch.bytes);
            assert!(batch.bytes <= MAX_BATCH_BYTES, "{}", batch.bytes);
        }
        assert_eq!(batches.iter().map(|b| b.events.len()).sum::<usize>(), 3000);
        // A batch exactly at the limit is allowed.
        let mut b = service();
        let exact = "y".repeat(MAX_BATCH_BYTES / 4 - 26);
        let batches = run(&mut b, (0..4).map(|_| ev(NOW, &exact)).collect());
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].bytes, MAX_BATCH_BYTES);
    }

    #[test]
    fn span_under_24_hours_and_chronological() {
        let mut b = service();
        let h = 3600 * 1000;
        let batches = run(
            &mut b,
            vec![
                ev(NOW - 30 * h, "a"),
                ev(NOW - 7 * h, "b"),
                ev(NOW - 6 * h - 1, "c"), // 24h - 1ms after a: same batch
                ev(NOW - 6 * h, "d"),     // exactly 24h after a: new batch
                ev(NOW - 7 * h, "e"),     // earlier than d: new batch, not reordered
            ],
        );
        let msgs: Vec<Vec<&str>> = batches
            .iter()
            .map(|b| b.events.iter().map(|e| e.1.as_str()).collect())
            .collect();
        assert_eq!(msgs, vec![vec!["a", "b", "c"], vec!["d"], vec!["e"]]);
        for batch in &batches {
            assert!(batch.events.windows(2).all(|w| w[0].0 <= w[1].0));
            assert!(batch.last_ms().unwrap() - batch.first_ms().unwrap() < MAX_SPAN_MS);
        }
    }

    #[test]
    fn age_window_counts_rejections_and_still_advances() {
        let mut b = Batcher::new(Limits::for_retention(None));
        let day = 24 * 3600 * 1000;
        let batches = run(
            &mut b,
            vec![
                ev(NOW - 15 * day, "old"),
                ev(NOW - 13 * day, "ok-old"),
                ev(NOW + 3 * 3600 * 1000, "future"),
                ev(NOW + 3600 * 1000, "ok-ahead"),
            ],
        );
        // 13 days back and 1 hour ahead are accepted (in two batches: > 24 h apart).
        let msgs: Vec<Vec<&str>> = batches
            .iter()
            .map(|b| b.events.iter().map(|e| e.1.as_str()).collect())
            .collect();
        assert_eq!(msgs, vec![vec!["ok-old"], vec!["ok-ahead"]]);
        assert_eq!((batches[0].too_old, batches[0].too_new), (1, 1));
        assert_eq!(
            batches[0].cost, 3,
            "rejected events release their budget too"
        );

        // Only rejected events: nothing to send, but the checkpoint moves.
        let mut b = service();
        let batches = run(&mut b, vec![ev(NOW - 40 * day, "x")]);
        assert!(batches[0].events.is_empty());
        assert!(batches[0].end.is_some());
        assert_eq!(batches[0].too_old, 1);

        // A 7-day retention rejects what is 8 days old.
        let mut b = Batcher::new(Limits::for_retention(Some(7)));
        let batches = run(&mut b, vec![ev(NOW - 8 * day, "x")]);
        assert_eq!(batches[0].too_old, 1);
    }

    #[test]
    fn long_lines_split_on_char_boundaries() {
        let line = "é".repeat(200_000); // 400,000 bytes of 2-byte characters
        let pieces = split_message(line.as_bytes(), MAX_MESSAGE_BYTES);
        assert_eq!(pieces.len(), 2);
        assert!(pieces.iter().all(|p| p.len() <= MAX_MESSAGE_BYTES));
        assert_eq!(pieces.concat(), line);
        assert_eq!(pieces[0].len(), MAX_MESSAGE_BYTES); // 262118 is even

        let ascii = "a".repeat(600 * 1024);
        let pieces = split_message(ascii.as_bytes(), MAX_MESSAGE_BYTES);
        let lens: Vec<usize> = pieces.iter().map(|p| p.len()).collect();
        assert_eq!(lens, vec![262_118, 262_118, 90_164]);

        let euro = "€".repeat(10); // 3-byte characters
        let pieces = split_message(euro.as_bytes(), 7);
        assert_eq!(pieces, vec!["€€", "€€", "€€", "€€", "€€"]);
    }

    #[test]
    fn invalid_utf8_replaced_not_dropped() {
        let pieces = split_message(b"abc\xff\xfedef", MAX_MESSAGE_BYTES);
        assert_eq!(pieces, vec!["abc\u{FFFD}\u{FFFD}def"]);
        assert_eq!(split_message(b"", 10), vec![" "]);
    }

    #[test]
    fn a_split_line_stays_in_one_batch() {
        let mut b = service();
        let piece = "p".repeat(MAX_MESSAGE_BYTES);
        let closed = b.push_line(vec![ev(NOW, "small")], 1, NOW);
        assert!(closed.is_empty());
        // Four maximal pieces fill a batch exactly: the small line's batch closes
        // first, and the line is not split across two batches.
        let mut pieces: Vec<Event> = (0..4).map(|_| ev(NOW, &piece)).collect();
        for p in &mut pieces[..3] {
            p.end = None;
        }
        let closed = b.push_line(pieces, 4, NOW);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].events.len(), 1);
        let rest = b.take().unwrap();
        assert_eq!(rest.events.len(), 4);
        assert_eq!(rest.bytes, MAX_BATCH_BYTES);
        assert!(rest.end.is_some());
        assert_eq!(rest.cost, 4);
    }

    #[test]
    fn end_is_the_last_line_end_and_cost_adds_up() {
        let mut b = service();
        let mut first = ev(NOW, "a");
        first.end = None; // first piece of a split line
        b.push(first, 10, NOW);
        b.push(ev(NOW + 1, "b"), 5, NOW);
        let batch = b.take().unwrap();
        assert_eq!(
            batch.end,
            Some(Position {
                ts_ns: (NOW + 1) * 1_000_000,
                count: 1
            })
        );
        assert_eq!(batch.cost, 15);
        assert!(b.take().is_none());
    }
}
