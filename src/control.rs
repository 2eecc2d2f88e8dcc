//! The control socket: a Unix socket (mode 0660, root and the `agent.socket_group`
//! group) speaking one JSON object per line.
//!
//! Protocol version 1. Request: `{"v":1,"cmd":"status"|"reload"|"refresh-secrets"}`.
//! Response: `{"v":1,"ok":true,"status":{…}}` for status (the [`StatusReport`]
//! schema), `{"v":1,"ok":true,"message":"…"}` for the others, or
//! `{"v":1,"ok":false,"error":"…"}`. Unknown fields are ignored; an unknown
//! command or version is answered with an error, never a hang-up.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::status::StatusReport;

pub const PROTOCOL_VERSION: u32 = 1;

/// Longest request line: a request is a few dozen bytes; anything longer is
/// refused before it is buffered, so a socket-group member cannot make the root
/// agent (which the kernel spares over developers) allocate without bound.
pub const MAX_REQUEST_BYTES: usize = 4096;
/// Connections served at once; more are told to retry and closed.
const MAX_CONNECTIONS: usize = 8;
/// Requests per second over all connections, in bursts of up to [`BURST`].
const REQUESTS_PER_SEC: f64 = 20.0;
const BURST: f64 = 40.0;
/// A reload or secrets refresh at most this often: each runs a full pass.
const COMMAND_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Reload,
    RefreshSecrets,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub v: u32,
    pub cmd: String,
}

#[derive(Debug, Serialize, Deserialize, Default)]
pub struct Response {
    pub v: u32,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    fn error(e: impl Into<String>) -> Response {
        Response {
            v: PROTOCOL_VERSION,
            ok: false,
            error: Some(e.into()),
            ..Default::default()
        }
    }
    fn message(m: impl Into<String>) -> Response {
        Response {
            v: PROTOCOL_VERSION,
            ok: true,
            message: Some(m.into()),
            ..Default::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {message}")]
    Socket { path: PathBuf, message: String },
}

/// Builds status on demand, without going through the main loop (which may be
/// busy pulling an image): it reads a snapshot of what the reconcilers observed,
/// and never probes a device or writes state.
pub trait StatusSource: Send + Sync + 'static {
    fn report(&self) -> StatusReport;
}

/// A command for the main loop, with where to send its answer.
pub type CommandSender = mpsc::Sender<(Command, oneshot::Sender<Response>)>;

/// Binds the socket: removes a stale one, sets mode 0660 and the group.
pub fn bind(path: &Path, group: &str) -> Result<UnixListener, ControlError> {
    let err = |message: String| ControlError::Socket {
        path: path.to_path_buf(),
        message,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(format!("create {}: {e}", dir.display())))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(err("another csagent is already listening there".into()));
        }
        std::fs::remove_file(path).map_err(|e| err(format!("remove stale socket: {e}")))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| err(format!("bind: {e}")))?;
    let gid = match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Some(g.gid),
        _ => {
            tracing::warn!(
                group,
                "socket group does not exist; only root can use the control socket"
            );
            None
        }
    };
    nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(0)), gid)
        .map_err(|e| err(format!("chown: {e}")))?;
    let mode = if gid.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| err(format!("chmod: {e}")))?;
    Ok(listener)
}

/// The request budget shared by every connection: a token bucket for all
/// requests, and a minimum spacing for the commands that run a full pass.
#[derive(Debug)]
pub struct Limits {
    tokens: f64,
    refilled: Instant,
    last_command: Option<Instant>,
}

impl Limits {
    pub fn new(now: Instant) -> Limits {
        Limits {
            tokens: BURST,
            refilled: now,
            last_command: None,
        }
    }

    /// Whether a request of this kind may run now; `Err` says how long to wait.
    pub fn admit(&mut self, now: Instant, command: bool) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * REQUESTS_PER_SEC).min(BURST);
        self.refilled = now;
        if self.tokens < 1.0 {
            return Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / REQUESTS_PER_SEC,
            ));
        }
        if command
            && let Some(last) = self.last_command
            && now.saturating_duration_since(last) < COMMAND_INTERVAL
        {
            return Err(COMMAND_INTERVAL - now.saturating_duration_since(last));
        }
        self.tokens -= 1.0;
        if command {
            self.last_command = Some(now);
        }
        Ok(())
    }
}

/// One request line of at most [`MAX_REQUEST_BYTES`]: `Ok(None)` at the end of
/// the stream, `Err` (InvalidData) for a longer line, which is never buffered whole.
pub async fn read_request_line(
    reader: &mut (impl AsyncBufRead + Unpin),
) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = reader
        .take(MAX_REQUEST_BYTES as u64 + 1)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > MAX_REQUEST_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("request longer than {MAX_REQUEST_BYTES} bytes"),
        ));
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "request is not UTF-8"))
}

/// Serves connections until the task is dropped.
pub async fn serve(
    listener: UnixListener,
    group: String,
    status: Arc<dyn StatusSource>,
    commands: CommandSender,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let limits = Arc::new(Mutex::new(Limits::new(Instant::now())));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            let mut stream = stream;
            let busy = reply_line(Response::error(format!(
                "busy: {MAX_CONNECTIONS} connections already open; try again"
            )));
            // Best effort, bounded: a client that does not read is dropped.
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(busy.as_bytes()))
                .await;
            continue;
        };
        let status = status.clone();
        let commands = commands.clone();
        let group = group.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &group, status, commands, &limits).await {
                tracing::debug!(error = %e, "control connection ended");
            }
            drop(slot);
        });
    }
}

/// Root, or a member of the socket group (primary or supplementary).
fn peer_allowed(stream: &UnixStream, group: &str) -> bool {
    let Ok(cred) = stream.peer_cred() else {
        return false;
    };
    if cred.uid() == 0 {
        return true;
    }
    let Ok(Some(g)) = nix::unistd::Group::from_name(group) else {
        return false;
    };
    if cred.gid() == g.gid.as_raw() {
        return true;
    }
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(cred.uid())) {
        Ok(Some(u)) => g.mem.contains(&u.name),
        _ => false,
    }
}

async fn handle(
    stream: UnixStream,
    group: &str,
    status: Arc<dyn StatusSource>,
    commands: CommandSender,
    limits: &Mutex<Limits>,
) -> std::io::Result<()> {
    let allowed = peer_allowed(&stream, group);
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let reply = reply_line;
    if !allowed {
        write
            .write_all(
                reply(Response::error(format!(
                    "permission denied: root or group {group} only"
                )))
                .as_bytes(),
            )
            .await?;
        return Ok(());
    }
    loop {
        let line =
            match tokio::time::timeout(Duration::from_secs(30), read_request_line(&mut reader))
                .await
            {
                Ok(Ok(Some(line))) => line,
                Ok(Ok(None)) | Err(_) => break,
                Ok(Err(e)) => {
                    // Answer, then hang up: the rest of an over-long line is not read.
                    write
                        .write_all(reply(Response::error(format!("bad request: {e}"))).as_bytes())
                        .await?;
                    break;
                }
            };
        let request = serde_json::from_str::<Request>(&line);
        let is_command = matches!(&request, Ok(r) if r.cmd != "status");
        let admitted = limits
            .lock()
            .map(|mut l| l.admit(Instant::now(), is_command))
            .unwrap_or(Ok(()));
        if let Err(wait) = admitted {
            let e = format!("rate limited: try again in {:.1}s", wait.as_secs_f64());
            write
                .write_all(reply(Response::error(e)).as_bytes())
                .await?;
            continue;
        }
        let response = match request {
            Err(e) => Response::error(format!("bad request: {e}")),
            Ok(r) if r.v != PROTOCOL_VERSION => Response::error(format!(
                "unsupported protocol version {} (this agent speaks {PROTOCOL_VERSION})",
                r.v
            )),
            Ok(r) => match r.cmd.as_str() {
                "status" => {
                    let s = status.clone();
                    match tokio::task::spawn_blocking(move || s.report()).await {
                        Ok(report) => Response {
                            v: PROTOCOL_VERSION,
                            ok: true,
                            status: Some(report),
                            ..Default::default()
                        },
                        Err(e) => Response::error(format!("status failed: {e}")),
                    }
                }
                "reload" => send(&commands, Command::Reload).await,
                "refresh-secrets" => send(&commands, Command::RefreshSecrets).await,
                other => Response::error(format!(
                    "unknown command {other:?} (status, reload, refresh-secrets)"
                )),
            },
        };
        write.write_all(reply(response).as_bytes()).await?;
    }
    Ok(())
}

fn reply_line(r: Response) -> String {
    let mut s = serde_json::to_string(&r).unwrap_or_else(|_| "{\"v\":1,\"ok\":false}".into());
    s.push('\n');
    s
}

async fn send(commands: &CommandSender, cmd: Command) -> Response {
    let (tx, rx) = oneshot::channel();
    if commands.send((cmd, tx)).await.is_err() {
        return Response::error("the agent is shutting down");
    }
    match tokio::time::timeout(Duration::from_secs(120), rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Response::error("the agent dropped the request"),
        Err(_) => Response::message("accepted; still working (see the journal)"),
    }
}

/// Sends one request and returns the answer (client side of `csagent status`).
pub async fn request(path: &Path, cmd: &str) -> Result<Response, String> {
    let stream = tokio::time::timeout(Duration::from_secs(5), UnixStream::connect(path))
        .await
        .map_err(|_| format!("timed out connecting to {}", path.display()))?
        .map_err(|e| format!("cannot connect to {}: {e}", path.display()))?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(&Request {
        v: PROTOCOL_VERSION,
        cmd: cmd.to_string(),
    })
    .map_err(|e| e.to_string())?;
    line.push('\n');
    write
        .write_all(line.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut lines = BufReader::new(read).lines();
    let answer = tokio::time::timeout(Duration::from_secs(130), lines.next_line())
        .await
        .map_err(|_| "the agent did not answer within 130s".to_string())?
        .map_err(|e| format!("read: {e}"))?
        .ok_or_else(|| "the agent closed the connection".to_string())?;
    serde_json::from_str(&answer).map_err(|e| format!("bad answer from the agent: {e}"))
}

/// Command-side helper for the main loop.
pub fn reply(tx: oneshot::Sender<Response>, result: Result<String, String>) {
    let _ = tx.send(match result {
        Ok(m) => Response::message(m),
        Err(e) => Response::error(e),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_budgeted_and_commands_spaced() {
        let t0 = Instant::now();
        let mut l = Limits::new(t0);
        for i in 0..BURST as usize {
            assert!(l.admit(t0, false).is_ok(), "request {i} of the burst");
        }
        let wait = l.admit(t0, false).expect_err("the burst is spent");
        assert!(wait <= Duration::from_millis(50), "{wait:?}");
        let t1 = t0 + Duration::from_millis(100);
        assert!(l.admit(t1, false).is_ok(), "refilled at 20/s");

        let mut l = Limits::new(t0);
        assert!(l.admit(t0, true).is_ok(), "first reload");
        let soon = t0 + Duration::from_millis(300);
        let wait = l.admit(soon, true).expect_err("too soon");
        assert_eq!(wait, Duration::from_millis(700));
        assert!(l.admit(soon, false).is_ok(), "status still served");
        assert!(l.admit(t0 + COMMAND_INTERVAL, true).is_ok());
    }

    #[tokio::test]
    async fn request_lines_are_bounded() {
        let mut ok = BufReader::new(&b"{\"v\":1,\"cmd\":\"status\"}\nnext\n"[..]);
        assert_eq!(
            read_request_line(&mut ok).await.expect("line").as_deref(),
            Some("{\"v\":1,\"cmd\":\"status\"}")
        );
        assert_eq!(
            read_request_line(&mut ok).await.expect("line").as_deref(),
            Some("next")
        );
        assert_eq!(read_request_line(&mut ok).await.expect("eof"), None);

        let exact = [vec![b'a'; MAX_REQUEST_BYTES], b"\n".to_vec()].concat();
        let mut r = BufReader::new(&exact[..]);
        assert_eq!(
            read_request_line(&mut r)
                .await
                .expect("fits")
                .map(|l| l.len()),
            Some(MAX_REQUEST_BYTES)
        );

        // 64 MiB without a newline: refused after MAX_REQUEST_BYTES + 1 bytes.
        let flood = vec![b'x'; 64 << 20];
        let mut r = BufReader::new(&flood[..]);
        let err = read_request_line(&mut r).await.expect_err("too long");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("4096"), "{err}");
        let mut bad = BufReader::new(&b"\xff\xfe\n"[..]);
        assert!(read_request_line(&mut bad).await.is_err());
    }
}
