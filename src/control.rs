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
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::status::StatusReport;

pub const PROTOCOL_VERSION: u32 = 1;

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

/// Serves connections until the task is dropped.
pub async fn serve(
    listener: UnixListener,
    group: String,
    status: Arc<dyn StatusSource>,
    commands: CommandSender,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let status = status.clone();
        let commands = commands.clone();
        let group = group.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &group, status, commands).await {
                tracing::debug!(error = %e, "control connection ended");
            }
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
) -> std::io::Result<()> {
    let allowed = peer_allowed(&stream, group);
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let reply = |r: Response| {
        let mut s = serde_json::to_string(&r).unwrap_or_else(|_| "{\"v\":1,\"ok\":false}".into());
        s.push('\n');
        s
    };
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
    while let Ok(Some(line)) = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap_or(Ok(None))
    {
        let response = match serde_json::from_str::<Request>(&line) {
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
