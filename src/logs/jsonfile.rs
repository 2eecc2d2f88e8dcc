//! One line of Docker's json-file log, `{"log":"…","stream":"stdout","time":"…"}`,
//! parsed without allocating: the message is borrowed from the line when it
//! has no escapes, else unescaped into a reused buffer.
//!
//! Docker writes the keys in this order (plus `attrs` when log labels are set),
//! but any order is accepted and unknown keys are skipped. Strings are JSON:
//! `\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t` and `\uXXXX` (surrogate pairs
//! joined; a lone surrogate becomes U+FFFD, as Go's decoder does).

use super::follow::{Source, parse_rfc3339_ns};

/// Why a line is not a json-file entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not a JSON object")]
    NotObject,
    #[error("malformed JSON at byte {0}")]
    Malformed(usize),
    #[error("no \"log\" string")]
    NoLog,
}

/// One entry. The message is `log` (borrowed from the line) or, when it had
/// escapes, the scratch buffer given to [`parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub source: Source,
    /// Docker's timestamp, nanoseconds since the epoch (None when missing or unreadable).
    pub time_ns: Option<i64>,
    /// Where the message is: `Some(range)` of the line, or `None`: in scratch.
    log: Option<(usize, usize)>,
}

impl Entry {
    /// The message bytes (with the trailing `\n` of a complete line).
    pub fn log<'a>(&self, line: &'a [u8], scratch: &'a [u8]) -> &'a [u8] {
        match self.log {
            Some((a, b)) => &line[a..b],
            None => scratch,
        }
    }
}

/// Parses one line (without its newline). `scratch` is cleared and holds the
/// unescaped message when it had escapes.
pub fn parse(line: &[u8], scratch: &mut Vec<u8>) -> Result<Entry, ParseError> {
    let mut p = Parser { b: line, i: 0 };
    p.ws();
    if !p.eat(b'{') {
        return Err(ParseError::NotObject);
    }
    let mut log = None;
    let mut source = Source::Stdout;
    let mut time_ns = None;
    p.ws();
    if p.eat(b'}') {
        return Err(ParseError::NoLog);
    }
    loop {
        p.ws();
        let key = p.raw_string()?;
        p.ws();
        if !p.eat(b':') {
            return Err(p.err());
        }
        p.ws();
        match key {
            (a, b, false) if &line[a..b] == b"log" => {
                log = Some(p.string_into(scratch)?);
            }
            (a, b, false) if &line[a..b] == b"stream" => {
                let (s, e, escaped) = p.raw_string()?;
                if !escaped && &line[s..e] == b"stderr" {
                    source = Source::Stderr;
                }
            }
            (a, b, false) if &line[a..b] == b"time" => {
                let (s, e, _) = p.raw_string()?;
                time_ns = std::str::from_utf8(&line[s..e])
                    .ok()
                    .and_then(parse_rfc3339_ns);
            }
            _ => p.skip_value(0)?,
        }
        p.ws();
        if p.eat(b',') {
            continue;
        }
        if p.eat(b'}') {
            break;
        }
        return Err(p.err());
    }
    match log {
        Some(log) => Ok(Entry {
            source,
            time_ns,
            log,
        }),
        None => Err(ParseError::NoLog),
    }
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn err(&self) -> ParseError {
        ParseError::Malformed(self.i)
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\r' | b'\n') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// A string's raw contents `(start, end, has_escapes)`, escapes not decoded.
    fn raw_string(&mut self) -> Result<(usize, usize, bool), ParseError> {
        if !self.eat(b'"') {
            return Err(self.err());
        }
        let start = self.i;
        let mut escaped = false;
        loop {
            let Some(k) = memchr::memchr2(b'"', b'\\', &self.b[self.i..]) else {
                return Err(ParseError::Malformed(self.b.len()));
            };
            self.i += k;
            if self.b[self.i] == b'"' {
                let end = self.i;
                self.i += 1;
                return Ok((start, end, escaped));
            }
            escaped = true;
            self.i += 2; // the backslash and the escaped character
            if self.i > self.b.len() {
                return Err(ParseError::Malformed(self.b.len()));
            }
        }
    }

    /// A string: `Some(range)` when it has no escapes, else decoded into `out`.
    fn string_into(&mut self, out: &mut Vec<u8>) -> Result<Option<(usize, usize)>, ParseError> {
        if !self.eat(b'"') {
            return Err(self.err());
        }
        let start = self.i;
        // Fast path: no backslash before the closing quote.
        let Some(k) = memchr::memchr2(b'"', b'\\', &self.b[self.i..]) else {
            return Err(ParseError::Malformed(self.b.len()));
        };
        if self.b[self.i + k] == b'"' {
            self.i += k + 1;
            return Ok(Some((start, start + k)));
        }
        out.clear();
        loop {
            let Some(k) = memchr::memchr2(b'"', b'\\', &self.b[self.i..]) else {
                return Err(ParseError::Malformed(self.b.len()));
            };
            out.extend_from_slice(&self.b[self.i..self.i + k]);
            self.i += k;
            if self.b[self.i] == b'"' {
                self.i += 1;
                return Ok(None);
            }
            self.i += 1;
            let Some(&c) = self.b.get(self.i) else {
                return Err(self.err());
            };
            self.i += 1;
            match c {
                b'"' => out.push(b'"'),
                b'\\' => out.push(b'\\'),
                b'/' => out.push(b'/'),
                b'b' => out.push(0x08),
                b'f' => out.push(0x0c),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'u' => {
                    let hi = self.hex4()?;
                    let ch = if (0xD800..0xDC00).contains(&hi) {
                        // A high surrogate: joined with a following low one.
                        let save = self.i;
                        let lo = if self.b.get(self.i) == Some(&b'\\')
                            && self.b.get(self.i + 1) == Some(&b'u')
                        {
                            self.i += 2;
                            Some(self.hex4()?)
                        } else {
                            None
                        };
                        match lo {
                            Some(lo) if (0xDC00..0xE000).contains(&lo) => {
                                char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                            }
                            _ => {
                                self.i = save; // not a pair: decode the next escape on its own
                                None
                            }
                        }
                    } else {
                        char::from_u32(hi)
                    };
                    let ch = ch.unwrap_or(char::REPLACEMENT_CHARACTER);
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                _ => return Err(ParseError::Malformed(self.i - 1)),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let Some(h) = self.b.get(self.i..self.i + 4) else {
            return Err(self.err());
        };
        let mut v = 0u32;
        for &c in h {
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return Err(self.err()),
            };
            v = v * 16 + u32::from(d);
        }
        self.i += 4;
        Ok(v)
    }

    /// Skips any JSON value (for keys we do not use, such as `attrs`).
    fn skip_value(&mut self, depth: usize) -> Result<(), ParseError> {
        if depth > 32 {
            return Err(self.err());
        }
        self.ws();
        match self.b.get(self.i) {
            Some(b'"') => self.raw_string().map(|_| ()),
            Some(b'{') | Some(b'[') => {
                let close = if self.b[self.i] == b'{' { b'}' } else { b']' };
                let object = close == b'}';
                self.i += 1;
                self.ws();
                if self.eat(close) {
                    return Ok(());
                }
                loop {
                    if object {
                        self.ws();
                        self.raw_string()?;
                        self.ws();
                        if !self.eat(b':') {
                            return Err(self.err());
                        }
                    }
                    self.skip_value(depth + 1)?;
                    self.ws();
                    if self.eat(b',') {
                        continue;
                    }
                    if self.eat(close) {
                        return Ok(());
                    }
                    return Err(self.err());
                }
            }
            Some(_) => {
                // A number, true, false or null.
                let start = self.i;
                while let Some(c) = self.b.get(self.i) {
                    if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n') {
                        break;
                    }
                    self.i += 1;
                }
                if self.i == start {
                    Err(self.err())
                } else {
                    Ok(())
                }
            }
            None => Err(self.err()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(line: &str) -> (Source, Option<i64>, Vec<u8>) {
        let mut scratch = Vec::new();
        let e = parse(line.as_bytes(), &mut scratch).expect(line);
        (
            e.source,
            e.time_ns,
            e.log(line.as_bytes(), &scratch).to_vec(),
        )
    }

    /// What serde_json (a full JSON decoder) makes of the `log` field.
    fn reference(line: &str) -> Vec<u8> {
        let v: serde_json::Value = serde_json::from_str(line).expect(line);
        v["log"].as_str().expect("log string").as_bytes().to_vec()
    }

    #[test]
    fn docker_lines() {
        let (s, t, m) = msg(
            r#"{"log":"hello world\n","stream":"stdout","time":"2024-02-29T12:34:56.000000001Z"}"#,
        );
        assert_eq!(
            (s, t, m),
            (
                Source::Stdout,
                Some(1_709_210_096_000_000_001),
                b"hello world\n".to_vec()
            )
        );
        let (s, _, m) = msg(r#"{"log":"partial","stream":"stderr","time":"2024-02-29T12:34:56Z"}"#);
        assert_eq!((s, m), (Source::Stderr, b"partial".to_vec()));
        // attrs (log labels), keys in another order, spaces.
        let (s, t, m) = msg(
            r#" { "stream" : "stderr", "attrs":{"a":"b\"}","n":[1,{"x":null}],"t":true}, "time":"2024-02-29T12:34:56Z" , "log" : "x" } "#,
        );
        assert_eq!(
            (s, t, m),
            (
                Source::Stderr,
                Some(1_709_210_096_000_000_000),
                b"x".to_vec()
            )
        );
    }

    #[test]
    fn escapes_as_go_writes_them() {
        let cases = [
            r#"{"log":"tab\there \"quoted\" back\\slash\/ \u003chtml\u003e \u0026\n","stream":"stdout","time":"2024-02-29T12:34:56Z"}"#,
            r#"{"log":"\u0000\u0001\u001f\b\f\r\n","stream":"stdout","time":"2024-02-29T12:34:56Z"}"#,
            r#"{"log":"é € 🦀 \u00e9 \u20ac \ud83e\udd80 \u2028\u2029\n","stream":"stdout","time":"2024-02-29T12:34:56Z"}"#,
            r#"{"log":"invalid → \ufffd\ufffd\n","stream":"stdout","time":"2024-02-29T12:34:56Z"}"#,
            r#"{"log":"\\u0041 is not an escape\n","stream":"stdout","time":"2024-02-29T12:34:56Z"}"#,
            r#"{"log":"","stream":"stdout","time":"2024-02-29T12:34:56Z"}"#,
        ];
        for line in cases {
            assert_eq!(msg(line).2, reference(line), "{line}");
        }
        // Lone surrogates: U+FFFD (serde_json refuses them; Go replaces them).
        let (_, _, m) = msg(r#"{"log":"a\ud800b\udc00c\ud800\u0041","stream":"stdout"}"#);
        assert_eq!(
            String::from_utf8(m).unwrap(),
            "a\u{FFFD}b\u{FFFD}c\u{FFFD}A"
        );
    }

    #[test]
    fn malformed_lines_are_errors_not_panics() {
        let mut scratch = Vec::new();
        for bad in [
            "",
            "not json",
            "{",
            "{}",
            r#"{"log":"unterminated"#,
            r#"{"log":"bad escape \q"}"#,
            r#"{"log":"short \u12"}"#,
            r#"{"log":"x\"#,
            r#"{"log":"x","stream":"stdout""#,
            r#"{"stream":"stdout","time":"2024-02-29T12:34:56Z"}"#,
            r#"{"log":"x",}"#,
            r#"{"log" "x"}"#,
            r#"{"a":[1,2,{"b":}],"log":"x"}"#,
        ] {
            assert!(parse(bad.as_bytes(), &mut scratch).is_err(), "{bad}");
        }
    }

    /// Random messages of every awkward kind, encoded by serde_json (a JSON
    /// writer like Go's) with and without `\u` escapes for everything
    /// non-ASCII, decode back to themselves; truncations never panic.
    #[test]
    fn fuzzish_round_trip() {
        let alphabet: Vec<char> =
            "aZ09 \"\\/\n\r\t\u{0}\u{1}\u{1f}\u{7f}é€🦀\u{2028}\u{fffd}<>&{}[]:,"
                .chars()
                .collect();
        let mut scratch = Vec::new();
        for round in 0..3000 {
            let len = rand::random_range(0..40);
            let text: String = (0..len)
                .map(|_| alphabet[rand::random_range(0..alphabet.len())])
                .collect();
            let encoded = serde_json::to_string(&text).unwrap();
            let ascii: String = if round % 2 == 0 {
                encoded.clone()
            } else {
                // Every non-ASCII character as \u escapes (surrogate pairs beyond the BMP).
                encoded
                    .chars()
                    .map(|c| {
                        if c.is_ascii() {
                            c.to_string()
                        } else {
                            let mut units = [0u16; 2];
                            c.encode_utf16(&mut units)
                                .iter()
                                .map(|u| format!("\\u{u:04x}"))
                                .collect()
                        }
                    })
                    .collect()
            };
            let line =
                format!(r#"{{"log":{ascii},"stream":"stdout","time":"2024-02-29T12:34:56.5Z"}}"#);
            let e = parse(line.as_bytes(), &mut scratch).expect(&line);
            assert_eq!(e.log(line.as_bytes(), &scratch), text.as_bytes(), "{line}");
            assert_eq!(e.time_ns, Some(1_709_210_096_500_000_000));
            for cut in 0..line.len() {
                let _ = parse(&line.as_bytes()[..cut], &mut scratch);
            }
        }
    }
}
