//! Reading the journal through `journalctl --follow --output=json`: systemd's
//! own reader, so every journal format the host's systemd writes (compact,
//! compressed, rotated, vacuumed) is read correctly, and its cursors are the
//! journal's own. One child process per source; its stdout pipe is the
//! back-pressure (while a batch is being delivered nothing is read, journalctl
//! blocks, and the journal keeps the entries).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// The program; found on PATH (`/usr/bin/journalctl` on every systemd host).
const JOURNALCTL: &str = "journalctl";
/// Most stderr lines kept to explain why journalctl ended.
const STDERR_LINES: usize = 5;

/// Where reading starts, and what is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// A journal file or directory; None: the host's system journal.
    pub journal: Option<PathBuf>,
    /// Resume after this entry (the checkpoint).
    pub after_cursor: Option<String>,
    /// Without a cursor: entries from this time on (seconds since the epoch).
    pub since_secs: i64,
    /// journalctl match arguments (`FIELD=value`, `+` between alternatives).
    pub matches: Vec<String>,
}

/// The journalctl arguments for `q`. `journal_is_dir` says how a configured
/// path is passed (`--directory` or `--file`).
pub fn args(q: &Query, journal_is_dir: bool) -> Vec<String> {
    let mut a: Vec<String> = [
        "--follow",
        // Follow mode shows only the last 10 entries unless told otherwise.
        "--no-tail",
        "--output=json",
        // Fields longer than 4 KiB would otherwise come as null.
        "--all",
        "--no-pager",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    match &q.journal {
        Some(p) if journal_is_dir => a.push(format!("--directory={}", p.display())),
        Some(p) => a.push(format!("--file={}", p.display())),
        // The units and the kernel are all in the system journal.
        None => a.push("--system".to_string()),
    }
    match &q.after_cursor {
        Some(c) => a.push(format!("--after-cursor={c}")),
        None => a.push(format!("--since=@{}", q.since_secs.max(0))),
    }
    a.extend(q.matches.iter().cloned());
    a
}

/// One journal entry, as far as shipping needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub cursor: String,
    /// `__REALTIME_TIMESTAMP`, microseconds since the epoch.
    pub realtime_us: i64,
    pub message: Vec<u8>,
    /// `SYSLOG_IDENTIFIER`, else `_COMM`.
    pub identifier: Option<String>,
    pub pid: Option<String>,
    pub transport: Option<String>,
}

impl Entry {
    /// Milliseconds since the epoch.
    pub fn timestamp_ms(&self) -> i64 {
        self.realtime_us.div_euclid(1000)
    }

    /// The line shipped, as `journalctl --output=short` shows it without the
    /// time and host (CloudWatch stamps the event, the stream names the host):
    /// `dockerd[812]: message`, `kernel: message`.
    pub fn line(&self) -> Vec<u8> {
        let ident = self.identifier.as_deref().unwrap_or("unknown");
        let mut out = match (&self.pid, self.transport.as_deref()) {
            (Some(pid), t) if t != Some("kernel") => format!("{ident}[{pid}]: "),
            _ => format!("{ident}: "),
        }
        .into_bytes();
        out.extend_from_slice(&self.message);
        out
    }

    /// The message as text (invalid UTF-8 replaced), for selection.
    pub fn message_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.message)
    }
}

/// Why a line of journalctl's output is not an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("no {0} field")]
    Missing(&'static str),
}

/// Parses one line of `journalctl --output=json`.
pub fn parse(line: &[u8]) -> Result<Entry, ParseError> {
    let v: Value = serde_json::from_slice(line).map_err(|e| ParseError::Json(e.to_string()))?;
    let cursor = text(&v, "__CURSOR").ok_or(ParseError::Missing("__CURSOR"))?;
    let realtime_us = text(&v, "__REALTIME_TIMESTAMP")
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or(ParseError::Missing("__REALTIME_TIMESTAMP"))?;
    Ok(Entry {
        cursor,
        realtime_us,
        message: bytes(&v, "MESSAGE").unwrap_or_default(),
        identifier: text(&v, "SYSLOG_IDENTIFIER").or_else(|| text(&v, "_COMM")),
        pid: text(&v, "_PID").or_else(|| text(&v, "SYSLOG_PID")),
        transport: text(&v, "_TRANSPORT"),
    })
}

/// A field's value as bytes. journalctl writes a string, an array of byte
/// values (not UTF-8, or binary), or an array of those when the entry has the
/// field more than once (the first is taken).
fn bytes(v: &Value, field: &str) -> Option<Vec<u8>> {
    fn one(v: &Value) -> Option<Vec<u8>> {
        match v {
            Value::String(s) => Some(s.clone().into_bytes()),
            Value::Array(items) if items.iter().all(Value::is_u64) => Some(
                items
                    .iter()
                    .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                    .collect(),
            ),
            _ => None,
        }
    }
    let v = v.get(field)?;
    one(v).or_else(|| v.as_array()?.iter().find_map(one))
}

fn text(v: &Value, field: &str) -> Option<String> {
    bytes(v, field).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// A running `journalctl --follow`; killed when dropped.
pub struct Reader {
    child: Child,
    stdout: BufReader<ChildStdout>,
    /// A line being read (kept across a cancelled read).
    partial: Vec<u8>,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

/// Why journalctl could not be started or read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot start journalctl: {0}")]
    Spawn(std::io::Error),
    #[error("reading journalctl's output: {0}")]
    Read(std::io::Error),
}

impl Reader {
    /// Starts journalctl for `q`.
    pub fn start(q: &Query) -> Result<Reader, ReadError> {
        let is_dir = q.journal.as_deref().is_some_and(Path::is_dir);
        let mut cmd = Command::new(JOURNALCTL);
        cmd.args(args(q, is_dir))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("SYSTEMD_PAGER", "")
            .kill_on_drop(true);
        // SAFETY: prctl(2) is async-signal-safe and touches no memory of ours.
        // Should the agent be killed (SIGKILL, no chance to clean up), the
        // kernel ends journalctl too instead of leaving a follower behind.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(ReadError::Spawn)?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(ReadError::Spawn(std::io::Error::other(
                "no stdout/stderr pipe",
            )));
        };
        let kept = Arc::new(Mutex::new(VecDeque::new()));
        {
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::warn!(journalctl = %line, "host logs: journalctl says");
                    let mut k = kept.lock().unwrap_or_else(|p| p.into_inner());
                    if k.len() == STDERR_LINES {
                        k.pop_front();
                    }
                    k.push_back(line);
                }
            });
        }
        Ok(Reader {
            child,
            stdout: BufReader::new(stdout),
            partial: Vec::new(),
            stderr: kept,
        })
    }

    /// The next output line (without its newline); None when journalctl
    /// ended. Cancel-safe: a line cut short by a cancelled call is completed
    /// by the next.
    pub async fn next_line(&mut self) -> Result<Option<Vec<u8>>, ReadError> {
        loop {
            let n = self
                .stdout
                .read_until(b'\n', &mut self.partial)
                .await
                .map_err(ReadError::Read)?;
            if self.partial.last() == Some(&b'\n') {
                let mut line = std::mem::take(&mut self.partial);
                line.pop();
                return Ok(Some(line));
            }
            if n == 0 {
                // End of output; a last line without newline is incomplete.
                return Ok(None);
            }
        }
    }

    /// Stops journalctl and says how it ended, with its last stderr lines.
    pub async fn finish(mut self) -> String {
        let status: Option<ExitStatus> = match self.child.try_wait() {
            Ok(Some(s)) => Some(s),
            _ => {
                let _ = self.child.start_kill();
                self.child.wait().await.ok()
            }
        };
        let said: Vec<String> = self
            .stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let status = status.map_or_else(|| "unknown status".to_string(), |s| s.to_string());
        if said.is_empty() {
            format!("journalctl ended ({status})")
        } else {
            format!("journalctl ended ({status}): {}", said.join(" / "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumes_after_the_cursor_or_from_the_window() {
        let mut q = Query {
            journal: None,
            after_cursor: None,
            since_secs: 1_700_000_000,
            matches: vec!["_TRANSPORT=kernel".into(), "+".into(), "UNIT=x".into()],
        };
        let a = args(&q, false);
        assert!(a.contains(&"--system".to_string()));
        assert!(a.contains(&"--since=@1700000000".to_string()));
        assert!(a.contains(&"--no-tail".to_string()) && a.contains(&"--all".to_string()));
        assert_eq!(a[a.len() - 3..], ["_TRANSPORT=kernel", "+", "UNIT=x"]);
        q.after_cursor = Some("s=1;i=2".into());
        q.journal = Some("/t/x.journal".into());
        let a = args(&q, false);
        assert!(a.contains(&"--after-cursor=s=1;i=2".to_string()));
        assert!(a.contains(&"--file=/t/x.journal".to_string()));
        assert!(
            !a.iter()
                .any(|x| x.starts_with("--since") || x == "--system")
        );
        assert!(args(&q, true).contains(&"--directory=/t/x.journal".to_string()));
    }

    #[test]
    fn parses_text_binary_and_repeated_fields() {
        let e = parse(br#"{"__CURSOR":"c1","__REALTIME_TIMESTAMP":"1700000000123456","MESSAGE":"hello","SYSLOG_IDENTIFIER":"dockerd","_PID":"812","_TRANSPORT":"stdout"}"#).unwrap();
        assert_eq!(e.cursor, "c1");
        assert_eq!(e.timestamp_ms(), 1_700_000_000_123);
        assert_eq!(e.line(), b"dockerd[812]: hello");

        let e = parse(br#"{"__CURSOR":"c2","__REALTIME_TIMESTAMP":"1","MESSAGE":[104,105,255],"_COMM":"containerd","_PID":["7","8"]}"#).unwrap();
        assert_eq!(e.message, b"hi\xff");
        assert_eq!(e.message_text(), "hi\u{FFFD}");
        assert_eq!(e.line(), b"containerd[7]: hi\xff");

        let e = parse(br#"{"__CURSOR":"c3","__REALTIME_TIMESTAMP":"5","MESSAGE":"Out of memory","SYSLOG_IDENTIFIER":"kernel","_TRANSPORT":"kernel","_PID":"1"}"#).unwrap();
        assert_eq!(e.line(), b"kernel: Out of memory");

        let e = parse(br#"{"__CURSOR":"c4","__REALTIME_TIMESTAMP":"5"}"#).unwrap();
        assert_eq!(e.line(), b"unknown: ");
    }

    #[test]
    fn an_entry_without_cursor_or_time_is_an_error() {
        assert_eq!(
            parse(br#"{"__REALTIME_TIMESTAMP":"5"}"#),
            Err(ParseError::Missing("__CURSOR"))
        );
        assert_eq!(
            parse(br#"{"__CURSOR":"c","__REALTIME_TIMESTAMP":"x"}"#),
            Err(ParseError::Missing("__REALTIME_TIMESTAMP"))
        );
        assert!(matches!(parse(b"{"), Err(ParseError::Json(_))));
    }
}
