//! Docker logs → lines: parses the `timestamps=true` prefix, puts Docker's 16 KiB
//! partial messages back together, and knows which messages a resumed follow has
//! already shipped.
//!
//! ## Resuming from a checkpoint
//! Docker's `since` is whole seconds, so a resumed follow starts at the second of
//! the checkpoint and must skip what was shipped. A [`Position`] names a place in
//! a container's log in a way that survives that:
//!
//! - each message gets an *effective* timestamp, the largest Docker timestamp seen
//!   so far (stdout and stderr are copied by separate goroutines, so the json-file
//!   order is not always timestamp order; the effective timestamp is monotonic);
//! - a position is (effective timestamp of the last message consumed, how many
//!   consumed messages have that effective timestamp *and* a Docker timestamp
//!   inside `since`'s second, i.e. would be returned again).
//!
//! A follow resumes with `since` one second before the checkpoint's second, so a
//! message written after the checkpoint but stamped slightly earlier (the other
//! output's copier) is still returned; reordering by more than a second would
//! need the json-file logger's mutex held that long. Docker returns exactly the
//! messages whose own timestamp is ≥ `since`; their effective timestamps come out
//! the same as in the first pass (the maximum that defines each one is among the
//! returned messages), and the counts agree, so "skip until the position is
//! passed" skips exactly what was consumed before — no line twice, none lost.

use super::checkpoint::FilePos;

/// Where a follower resumes once a line is shipped: the Docker-API position
/// and, when the log is read from its json-file, the file position. Both are
/// kept, so either reader can take over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mark {
    pub position: Position,
    pub file: Option<FilePos>,
}

/// A place in a container's log (see the module doc).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Position {
    /// Effective timestamp of the last consumed message, nanoseconds since the epoch.
    pub ts_ns: i64,
    /// Consumed messages at exactly `ts_ns` whose own timestamp is at or after
    /// [`Position::since_secs`], i.e. that Docker returns again when resumed.
    pub count: u64,
}

const NS: i64 = 1_000_000_000;

impl Position {
    /// Docker's `since` (whole seconds) to resume from here: one second early,
    /// for messages stamped slightly out of order (0, from the start, when empty).
    pub fn since_secs(&self) -> i64 {
        (self.ts_ns.div_euclid(NS) - 1).max(0)
    }
}

/// Advances positions message by message and says which were already consumed
/// before the resume point.
#[derive(Debug, Clone)]
pub struct Tracker {
    pos: Position,
    resume: Position,
}

impl Tracker {
    /// A follow that resumes after `resume` (the default position: from the start).
    pub fn new(resume: Position) -> Tracker {
        Tracker {
            pos: Position::default(),
            resume,
        }
    }

    /// A reader that continues exactly after `pos` (the json-file, read from a
    /// file offset): nothing is skipped, and positions come out as one
    /// uninterrupted follow would have counted them.
    pub fn continuing(pos: Position) -> Tracker {
        Tracker {
            pos,
            resume: Position::default(),
        }
    }

    /// Where the last consumed message left the log; what the next follow
    /// resumes from.
    pub fn position(&self) -> Position {
        self.pos.max(self.resume)
    }

    /// Consumes one Docker message with its own timestamp (`None` when it had
    /// none); returns its effective timestamp and whether it was already consumed
    /// before the resume point (skip it).
    pub fn advance(&mut self, raw_ns: Option<i64>) -> (i64, bool) {
        let raw = raw_ns.unwrap_or(self.pos.ts_ns);
        if raw > self.pos.ts_ns {
            self.pos = Position {
                ts_ns: raw,
                count: 1,
            };
        } else if raw >= self.pos.since_secs() * NS {
            self.pos.count += 1;
        }
        (self.pos.ts_ns, self.pos <= self.resume)
    }
}

/// Which output a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Stdout,
    Stderr,
}

/// A complete line.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Effective timestamp of its last message (monotonic in emission order).
    pub ts_ns: i64,
    pub source: Source,
    /// Without the trailing newline; not yet UTF-8 checked.
    pub bytes: Vec<u8>,
    /// Where to resume once this line is shipped.
    pub end: Mark,
}

/// A line begun but not finished (Docker split it into 16 KiB messages).
#[derive(Debug, Default)]
struct Partial {
    bytes: Vec<u8>,
    /// Position before its first message.
    start: Mark,
}

/// Splits `"<RFC3339Nano> <payload>"` into (timestamp ns, payload).
pub fn parse_frame(frame: &[u8]) -> (Option<i64>, &[u8]) {
    let Some(sp) = frame.iter().position(|b| *b == b' ') else {
        return (None, frame);
    };
    match std::str::from_utf8(&frame[..sp])
        .ok()
        .and_then(parse_rfc3339_ns)
    {
        Some(ns) => (Some(ns), &frame[sp + 1..]),
        None => (None, frame),
    }
}

/// Nanoseconds since the epoch from Docker's `2006-01-02T15:04:05.000000000Z`
/// (any fraction length, `Z` or `±hh:mm`).
pub fn parse_rfc3339_ns(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut frac: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let mut digits = 0;
        while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
            if digits < 9 {
                frac = frac * 10 + i64::from(c - b'0');
                digits += 1;
            }
            i += 1;
        }
        while digits < 9 {
            frac *= 10;
            digits += 1;
        }
    }
    let offset_s = match b.get(i) {
        Some(b'Z') | Some(b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let o = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if *sign == b'+' { -o } else { o }
        }
        _ => return None,
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec + offset_s;
    secs.checked_mul(NS)?.checked_add(frac)
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// How many bytes at the end of `bytes` are the start of a UTF-8 character whose
/// remaining bytes have not arrived yet (0 when it ends on a boundary, or when
/// the tail is invalid anyway: waiting would not make it valid).
fn incomplete_utf8_tail(bytes: &[u8]) -> usize {
    // A character is at most 4 bytes: look back at most 3 for its lead byte.
    for back in 1..=bytes.len().min(3) {
        let b = bytes[bytes.len() - back];
        if b & 0xC0 == 0x80 {
            continue; // continuation byte: the lead is further back
        }
        let needed = match b {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => return 0, // ASCII or an invalid lead
        };
        return if needed > back { back } else { 0 };
    }
    0
}

/// Turns Docker messages into lines, tracking positions.
#[derive(Debug)]
pub struct Reassembler {
    tracker: Tracker,
    stdout: Partial,
    stderr: Partial,
    /// Most bytes held for one unfinished line before it is emitted anyway.
    max_line: usize,
    /// File position after the last message consumed (json-file reader).
    file: Option<FilePos>,
    /// Reading the json-file from its start for a checkpoint that has only a
    /// Docker-API position: messages Docker's `since` would not return (older
    /// than this, ns) are shipped already, until the first message past the
    /// position.
    migrating_since: Option<i64>,
}

impl Reassembler {
    /// For the Docker logs API, resumed with `since` at `resume`.
    pub fn new(resume: Position, max_line: usize) -> Reassembler {
        Reassembler {
            tracker: Tracker::new(resume),
            stdout: Partial::default(),
            stderr: Partial::default(),
            max_line,
            file: None,
            migrating_since: None,
        }
    }

    /// For the json-file read from its start while the checkpoint has only a
    /// Docker-API position (written by an agent that did not read files):
    /// skips exactly what a Docker follow resumed at `resume` would have skipped,
    /// and what it would not have returned before that.
    pub fn migrating(resume: Position, max_line: usize) -> Reassembler {
        let mut r = Reassembler::new(resume, max_line);
        if resume != Position::default() {
            r.migrating_since = Some(resume.since_secs() * NS);
        }
        r
    }

    /// For the json-file read from a checkpointed file offset: continues after
    /// `resume` without skipping anything.
    pub fn continuing(resume: Mark, max_line: usize) -> Reassembler {
        Reassembler {
            tracker: Tracker::continuing(resume.position),
            stdout: Partial::default(),
            stderr: Partial::default(),
            max_line,
            file: resume.file,
            migrating_since: None,
        }
    }

    fn mark(&self) -> Mark {
        Mark {
            position: self.tracker.position(),
            file: self.file,
        }
    }

    /// A json-file line that is not an entry (a torn write): consumed, nothing
    /// to ship.
    pub fn skip_entry(&mut self, after: FilePos) {
        self.file = Some(after);
    }

    /// Feeds one json-file entry (`before`/`after`: the file positions around
    /// its line); returns the line it completes, if any.
    pub fn push_entry(
        &mut self,
        source: Source,
        time_ns: Option<i64>,
        log: &[u8],
        before: FilePos,
        after: FilePos,
    ) -> Option<Line> {
        if let Some(since) = self.migrating_since {
            if time_ns.is_some_and(|t| t < since) {
                self.file = Some(after);
                return None;
            }
        }
        self.file = Some(before);
        let start = self.mark();
        self.file = Some(after);
        self.push_message(source, time_ns, log, start)
    }

    /// A fresh follow from Docker (after a reconnect or a restart): positions are
    /// counted again from `position()`, unfinished lines are kept.
    pub fn resume(&mut self) {
        self.tracker = Tracker::new(self.tracker.position());
    }

    /// Where the next follow starts (`since`), and what it skips.
    pub fn position(&self) -> Position {
        self.tracker.position()
    }

    /// Feeds one Docker message (a frame with the timestamp prefix); returns the
    /// line it completes, if any.
    pub fn push(&mut self, source: Source, frame: &[u8]) -> Option<Line> {
        let before = self.mark();
        let (raw, payload) = parse_frame(frame);
        self.push_message(source, raw, payload, before)
    }

    fn push_message(
        &mut self,
        source: Source,
        raw: Option<i64>,
        payload: &[u8],
        before: Mark,
    ) -> Option<Line> {
        let (ts_ns, skip) = self.tracker.advance(raw);
        if skip {
            return None;
        }
        self.migrating_since = None;
        let (complete, body) = match payload.strip_suffix(b"\n") {
            Some(b) => (true, b),
            None => (false, payload),
        };
        let max_line = self.max_line;
        let partial = self.partial(source);
        if partial.bytes.is_empty() {
            partial.start = before;
        }
        partial.bytes.extend_from_slice(body);
        if complete {
            let bytes = std::mem::take(&mut partial.bytes);
            return Some(self.line(source, ts_ns, bytes));
        }
        if partial.bytes.len() < max_line {
            return None;
        }
        // An over-long line is emitted in pieces, each cut on a UTF-8 character
        // boundary: Docker's 16 KiB messages may end inside a character, so wait
        // for the message that completes it. Only past twice the bound (every
        // message ending mid-character) is the unfinished character carried into
        // the next piece instead.
        let tail = incomplete_utf8_tail(&partial.bytes);
        if tail > 0 && partial.bytes.len() < max_line.saturating_mul(2) {
            return None;
        }
        let carry = partial.bytes.split_off(partial.bytes.len() - tail);
        let bytes = std::mem::replace(&mut partial.bytes, carry);
        partial.start = before;
        Some(self.line(source, ts_ns, bytes))
    }

    /// Emits unfinished lines (the container stopped: they are final).
    pub fn flush(&mut self) -> Vec<Line> {
        let ts_ns = self.tracker.position().ts_ns;
        let mut out = Vec::new();
        for source in [Source::Stdout, Source::Stderr] {
            let bytes = std::mem::take(&mut self.partial(source).bytes);
            if !bytes.is_empty() {
                out.push(self.line(source, ts_ns, bytes));
            }
        }
        out
    }

    fn partial(&mut self, source: Source) -> &mut Partial {
        match source {
            Source::Stdout => &mut self.stdout,
            Source::Stderr => &mut self.stderr,
        }
    }

    fn line(&self, source: Source, ts_ns: i64, bytes: Vec<u8>) -> Line {
        // While the other output has an unfinished line, resuming past this one
        // would skip the unfinished line's first messages: hold the checkpoint at
        // its start (after a crash this line may be shipped twice; none is lost).
        let other = match source {
            Source::Stdout => &self.stderr,
            Source::Stderr => &self.stdout,
        };
        let end = if other.bytes.is_empty() {
            self.mark()
        } else {
            other.start
        };
        Line {
            ts_ns,
            source,
            bytes,
            end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ts: &str, payload: &str) -> Vec<u8> {
        format!("{ts} {payload}").into_bytes()
    }

    #[test]
    fn parses_docker_timestamps() {
        assert_eq!(
            parse_rfc3339_ns("1970-01-01T00:00:01.000000002Z"),
            Some(1_000_000_002)
        );
        assert_eq!(
            parse_rfc3339_ns("2024-02-29T12:34:56.123456789Z"),
            Some(1_709_210_096_123_456_789)
        );
        assert_eq!(
            parse_rfc3339_ns("2024-02-29T12:34:56Z"),
            Some(1_709_210_096_000_000_000)
        );
        assert_eq!(
            parse_rfc3339_ns("2024-02-29T14:34:56.5+02:00"),
            Some(1_709_210_096_500_000_000)
        );
        assert_eq!(parse_rfc3339_ns("yesterday"), None);
        assert_eq!(parse_rfc3339_ns("2024-13-29T12:34:56Z"), None);
        let (ts, rest) = parse_frame(b"2024-02-29T12:34:56.000000001Z hello world\n");
        assert_eq!(ts, Some(1_709_210_096_000_000_001));
        assert_eq!(rest, b"hello world\n");
        let (ts, rest) = parse_frame(b"no timestamp here");
        assert_eq!((ts, rest), (None, &b"no timestamp here"[..]));
    }

    const T: &str = "2024-02-29T12:34:56";

    /// Every line of `frames` from a follow resumed at `resume`.
    fn lines(resume: Position, frames: &[(Source, Vec<u8>)]) -> Vec<Line> {
        let mut r = Reassembler::new(resume, 1 << 20);
        frames.iter().filter_map(|(s, f)| r.push(*s, f)).collect()
    }

    fn text(lines: &[Line]) -> Vec<String> {
        lines
            .iter()
            .map(|l| String::from_utf8_lossy(&l.bytes).into_owned())
            .collect()
    }

    #[test]
    fn resuming_skips_exactly_what_was_shipped() {
        use Source::*;
        // Several lines share a nanosecond, one stderr line is out of order, and
        // the first lines are in an earlier second that `since` will not return.
        let frames: Vec<(Source, Vec<u8>)> = vec![
            (Stdout, frame(&format!("{T}.900000000Z"), "a\n")),
            (Stdout, frame(&format!("{T}.999999999Z"), "b\n")),
            (Stdout, frame("2024-02-29T12:34:57.000000001Z", "c\n")),
            (Stdout, frame("2024-02-29T12:34:57.000000001Z", "d\n")),
            (Stderr, frame(&format!("{T}.999999999Z"), "e\n")), // out of order, earlier second
            (Stdout, frame("2024-02-29T12:34:57.000000001Z", "f\n")),
            (Stderr, frame("2024-02-29T12:34:57.000000000Z", "g\n")), // out of order, same second
            (Stdout, frame("2024-02-29T12:34:57.5Z", "h\n")),
            (Stdout, frame("2024-02-29T12:34:59.000000001Z", "i\n")),
            (Stderr, frame("2024-02-29T12:34:58.999999999Z", "j\n")), // earlier second than i
            (Stdout, frame("2024-02-29T12:34:59.000000001Z", "k\n")),
        ];
        let all = lines(Position::default(), &frames);
        assert_eq!(
            text(&all),
            ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"]
        );
        for cut in 0..all.len() {
            let resume = all[cut].end.position;
            // What Docker returns for since = floor(resume): messages whose own
            // timestamp is in that second or later, in file order.
            let since_ns = resume.since_secs() * NS;
            let returned: Vec<_> = frames
                .iter()
                .filter(|(_, f)| parse_frame(f).0.unwrap() >= since_ns)
                .cloned()
                .collect();
            let again = lines(resume, &returned);
            assert_eq!(
                text(&again),
                text(&all[cut + 1..]),
                "resumed after line {cut} ({resume:?})"
            );
            for (a, b) in again.iter().zip(&all[cut + 1..]) {
                assert_eq!(a.end, b.end);
                assert_eq!(a.ts_ns, b.ts_ns);
            }
        }
    }

    /// A json-file entry: (source, raw ts, payload, position before, after).
    type FileEntry = (Source, Option<i64>, Vec<u8>, FilePos, FilePos);

    /// The frames as json-file entries.
    fn entries(frames: &[(Source, Vec<u8>)]) -> Vec<FileEntry> {
        let mut offset = 0;
        frames
            .iter()
            .map(|(s, f)| {
                let (ts, payload) = parse_frame(f);
                let pos = |offset| FilePos {
                    inode: 42,
                    offset,
                    head: 7,
                };
                let before = pos(offset);
                offset += 100;
                (*s, ts, payload.to_vec(), before, pos(offset))
            })
            .collect()
    }

    fn file_lines(mut r: Reassembler, entries: &[FileEntry]) -> Vec<Line> {
        entries
            .iter()
            .filter_map(|(s, ts, p, b, a)| r.push_entry(*s, *ts, p, *b, *a))
            .collect()
    }

    /// Frames with out-of-order stderr, shared nanoseconds and a partial line.
    fn tricky_frames() -> Vec<(Source, Vec<u8>)> {
        use Source::*;
        vec![
            (Stdout, frame(&format!("{T}.900000000Z"), "a\n")),
            (Stdout, frame(&format!("{T}.999999999Z"), "b\n")),
            (Stdout, frame("2024-02-29T12:34:57.000000001Z", "c\n")),
            (Stdout, frame("2024-02-29T12:34:57.000000001Z", "d\n")),
            (Stderr, frame(&format!("{T}.999999999Z"), "e\n")),
            (Stdout, frame("2024-02-29T12:34:57.000000001Z", "f1 ")),
            (Stderr, frame("2024-02-29T12:34:57.000000000Z", "g\n")),
            (Stdout, frame("2024-02-29T12:34:57.2Z", "f2\n")),
            (Stdout, frame("2024-02-29T12:34:57.5Z", "h\n")),
            (Stdout, frame("2024-02-29T12:34:59.000000001Z", "i\n")),
            (Stderr, frame("2024-02-29T12:34:58.999999999Z", "j\n")),
            (Stdout, frame("2024-02-29T12:34:59.000000001Z", "k\n")),
        ]
    }

    #[test]
    fn an_api_checkpoint_migrates_to_the_file_without_repeats_or_gaps() {
        let frames = tricky_frames();
        let all = lines(Position::default(), &frames);
        assert_eq!(
            text(&all),
            ["a", "b", "c", "d", "e", "g", "f1 f2", "h", "i", "j", "k"]
        );
        let entries = entries(&frames);
        for (cut, shipped) in all.iter().enumerate() {
            // What an agent reading the API checkpointed after line `cut`.
            let resume = shipped.end.position;
            let again = file_lines(Reassembler::migrating(resume, 1 << 20), &entries);
            // Held before an unfinished line, the API reader repeats what
            // follows it; the migration repeats exactly what the API would.
            let api = lines(
                resume,
                &frames
                    .iter()
                    .filter(|(_, f)| parse_frame(f).0.unwrap() >= resume.since_secs() * NS)
                    .cloned()
                    .collect::<Vec<_>>(),
            );
            assert_eq!(
                text(&again),
                text(&api),
                "resumed after line {cut} ({resume:?})"
            );
            assert!(again.iter().all(|l| l.end.file.is_some()));
        }
        // From nothing: everything.
        let again = file_lines(
            Reassembler::migrating(Position::default(), 1 << 20),
            &entries,
        );
        assert_eq!(text(&again), text(&all));
    }

    #[test]
    fn resuming_at_a_file_position_continues_exactly() {
        let entries = entries(&tricky_frames());
        let all = file_lines(
            Reassembler::migrating(Position::default(), 1 << 20),
            &entries,
        );
        for cut in 0..all.len() {
            let end = all[cut].end;
            let file = end.file.expect("file position");
            let rest: Vec<_> = entries
                .iter()
                .filter(|e| e.3.offset >= file.offset)
                .cloned()
                .collect();
            let again = file_lines(Reassembler::continuing(end, 1 << 20), &rest);
            // A checkpoint held before the unfinished "f1" (after "g") repeats
            // "g" (the documented limit); every other cut continues exactly.
            let shipped = &all[..=cut];
            let repeats = again
                .iter()
                .filter(|l| shipped.iter().any(|s| s.bytes == l.bytes && s.end == l.end))
                .count();
            assert_eq!(repeats, usize::from(cut == 5), "cut {cut}");
            let got: Vec<&Line> = again.iter().skip(repeats).collect();
            let want: Vec<&Line> = all[cut + 1..].iter().collect();
            assert_eq!(got.len(), want.len(), "cut {cut}");
            for (a, b) in got.iter().zip(&want) {
                assert_eq!(
                    (&a.bytes, a.end, a.ts_ns),
                    (&b.bytes, b.end, b.ts_ns),
                    "cut {cut}"
                );
            }
        }
    }

    #[test]
    fn effective_timestamps_are_monotonic() {
        use Source::*;
        let all = lines(
            Position::default(),
            &[
                (Stdout, frame(&format!("{T}.5Z"), "x\n")),
                (Stderr, frame(&format!("{T}.4Z"), "y\n")),
                (Stdout, frame("garbage-no-space", "")),
            ],
        );
        assert_eq!(all[0].ts_ns, all[1].ts_ns);
        assert_eq!(
            all.len(),
            1 + 1,
            "a frame without timestamp and newline waits"
        );
    }

    #[test]
    fn partial_messages_are_joined() {
        use Source::*;
        let frames = vec![
            (Stdout, frame(&format!("{T}.1Z"), "first half ")),
            (Stderr, frame(&format!("{T}.2Z"), "err\n")),
            (Stdout, frame(&format!("{T}.3Z"), "second half\n")),
            (Stdout, frame(&format!("{T}.4Z"), "next\n")),
        ];
        let all = lines(Position::default(), &frames);
        assert_eq!(text(&all), ["err", "first half second half", "next"]);
        // The stderr line's checkpoint is held before the unfinished stdout line.
        assert_eq!(all[0].end.position, Position::default());
        assert!(all[1].end.position > all[0].end.position);
        // Resuming after the joined line skips all its messages.
        let again = lines(all[1].end.position, &frames);
        assert_eq!(text(&again), ["next"]);
        // Resuming at the held checkpoint repeats the stderr line, loses nothing.
        let again = lines(all[0].end.position, &frames);
        assert_eq!(text(&again), ["err", "first half second half", "next"]);
    }

    #[test]
    fn incomplete_tail_is_measured() {
        assert_eq!(incomplete_utf8_tail(b""), 0);
        assert_eq!(incomplete_utf8_tail(b"abc"), 0);
        let euro = "€".as_bytes(); // 3 bytes
        assert_eq!(incomplete_utf8_tail(euro), 0);
        assert_eq!(incomplete_utf8_tail(&euro[..1]), 1);
        assert_eq!(incomplete_utf8_tail(&euro[..2]), 2);
        let crab = "🦀".as_bytes(); // 4 bytes
        assert_eq!(incomplete_utf8_tail(&[b"x", &crab[..3]].concat()), 3);
        assert_eq!(incomplete_utf8_tail(&[b"x", crab].concat()), 0);
        // A stray continuation byte or an invalid lead is not worth waiting for.
        assert_eq!(incomplete_utf8_tail(&[0x80, 0x80, 0x80]), 0);
        assert_eq!(incomplete_utf8_tail(&[b'a', 0xFF]), 0);
    }

    #[test]
    fn over_long_lines_are_cut_on_character_boundaries() {
        let text = "€".repeat(10); // 30 bytes
        let bytes = text.as_bytes();
        let payload = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        // Messages ending mid-character (as Docker's 16 KiB pieces may): 8, 8, 2, 12.
        let mut r = Reassembler::new(Position::default(), 10);
        let mut pieces = Vec::new();
        for chunk in [&bytes[..8], &bytes[8..16], &bytes[16..18], &bytes[18..]] {
            // Build the frame from raw bytes: the chunk is not valid UTF-8 alone.
            let mut f = format!("{T}Z ").into_bytes();
            f.extend_from_slice(chunk);
            pieces.extend(r.push(Source::Stdout, &f));
        }
        pieces.extend(r.flush());
        for p in &pieces {
            assert!(
                std::str::from_utf8(&p.bytes).is_ok(),
                "cut inside a character: {:?}",
                p.bytes
            );
        }
        let joined: Vec<u8> = pieces.iter().flat_map(|p| p.bytes.clone()).collect();
        assert_eq!(joined, bytes, "no byte lost or repeated");
        // Past 10 bytes the second message still ended mid-character: the piece
        // waited for the third, which completes it (under the 20-byte hard bound).
        assert_eq!(payload(&pieces[0].bytes), "€".repeat(6));
        assert_eq!(pieces.len(), 2);

        // Past twice the bound the unfinished character moves to the next piece.
        let mut r = Reassembler::new(Position::default(), 2);
        let mut f = format!("{T}Z ").into_bytes();
        f.extend_from_slice(&bytes[..4]); // one € and the first byte of the next
        let first = r
            .push(Source::Stdout, &f)
            .expect("emitted at the hard bound");
        assert_eq!(first.bytes, "€".as_bytes());
        let mut f = format!("{T}Z ").into_bytes();
        f.extend_from_slice(&bytes[4..6]); // the rest of the second €
        let second = r.push(Source::Stdout, &f).expect("a whole character again");
        assert_eq!(second.bytes, "€".as_bytes());
    }

    #[test]
    fn flush_emits_unfinished_lines_and_max_line_bounds_memory() {
        let mut r = Reassembler::new(Position::default(), 8);
        assert_eq!(
            r.push(Source::Stdout, &frame(&format!("{T}Z"), "1234")),
            None
        );
        let l = r
            .push(Source::Stdout, &frame(&format!("{T}Z"), "5678"))
            .unwrap();
        assert_eq!(l.bytes, b"12345678");
        assert_eq!(
            r.push(Source::Stdout, &frame(&format!("{T}Z"), "tail")),
            None
        );
        let rest = r.flush();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].bytes, b"tail");
        assert_eq!(rest[0].end.position, r.position());
    }
}
