//! A small stand-in for code-server, for tests: it behaves like code-server
//! wherever csagent depends on it, and nowhere else.
//!
//! - listens on `--bind-addr` (default 0.0.0.0:8080);
//! - `GET /healthz` → `{"status":"alive"|"expired","lastHeartbeat":ms}` without auth;
//!   "expired" once no activity was seen for `FAKE_IDLE_AFTER` seconds (default 300);
//! - `POST /login` with form field `password` → 302 + cookie when it matches
//!   `HASHED_PASSWORD` (argon2 PHC, as code-server verifies it) or else `PASSWORD`,
//!   200 with "Incorrect password" otherwise; each attempt is logged on stdout;
//! - `POST /heartbeat` marks activity (what an open editor does);
//! - `GET /print?count=N&prefix=P` writes N numbered lines `P<i>` to stdout;
//!   `POST /print` writes the request body to stdout byte for byte;
//! - `GET /env?name=X` → 200 "set" / 404 "unset" for an environment variable, and
//!   `GET /file?path=X` → 200 "readable" / 404 — so tests can check what a container
//!   was given without the value ever leaving it;
//! - `POST /chproj?path=X&id=N` sets file X's project id to N (as `chattr -p`):
//!   200 "changed", or 403 with the error;
//! - `FAKE_PRINT_LINES=N` prints N numbered lines at start (`FAKE_PRINT_PREFIX`).

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use tiny_http::{Header, Method, Request, Response, Server};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bind = args
        .iter()
        .position(|a| a == "--bind-addr")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "0.0.0.0:8080".to_string());

    // PID 1 in a container ignores SIGTERM unless it installs a handler.
    if let Err(e) = ctrlc::set_handler(|| {
        println!("fake-code-server: received termination signal, exiting");
        std::process::exit(0);
    }) {
        eprintln!("fake-code-server: cannot install signal handler: {e}");
    }

    let idle_after = Duration::from_secs(
        std::env::var("FAKE_IDLE_AFTER")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300),
    );
    let server = match Server::http(&bind) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fake-code-server: cannot listen on {bind}: {e}");
            std::process::exit(1);
        }
    };
    println!("[fake-code-server] HTTP server listening on http://{bind}/");
    if let Ok(n) = std::env::var("FAKE_PRINT_LINES") {
        let prefix = std::env::var("FAKE_PRINT_PREFIX").unwrap_or_else(|_| "line ".into());
        print_lines(&prefix, n.parse().unwrap_or(0));
    }

    let last_activity = Mutex::new((Instant::now(), now_ms()));
    for request in server.incoming_requests() {
        handle(request, &last_activity, idle_after);
    }
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn print_lines(prefix: &str, count: u64) {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for i in 1..=count {
        let _ = writeln!(out, "{prefix}{i}");
    }
    let _ = out.flush();
}

fn query<'a>(url: &'a str, key: &str) -> Option<&'a str> {
    let q = url.split_once('?')?.1;
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Decodes application/x-www-form-urlencoded.
fn form_value(body: &str, key: &str) -> Option<String> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn password_ok(given: &str) -> bool {
    if let Ok(hash) = std::env::var("HASHED_PASSWORD")
        && !hash.is_empty()
    {
        if hash.contains("$argon") {
            return PasswordHash::new(&hash)
                .map(|h| {
                    Argon2::default()
                        .verify_password(given.as_bytes(), &h)
                        .is_ok()
                })
                .unwrap_or(false);
        }
        return false;
    }
    match std::env::var("PASSWORD") {
        Ok(p) => !p.is_empty() && p == given,
        Err(_) => false,
    }
}

fn handle(mut request: Request, last: &Mutex<(Instant, u128)>, idle_after: Duration) {
    let url = request.url().to_string();
    let path = url.split('?').next().unwrap_or("").to_string();
    let method = request.method().clone();
    let mut body = Vec::new();
    let _ = request.as_reader().read_to_end(&mut body);

    let touch = || {
        if let Ok(mut l) = last.lock() {
            *l = (Instant::now(), now_ms());
        }
    };
    let response = match (method, path.as_str()) {
        (Method::Get, "/healthz") => {
            let (at, ms) = last.lock().map(|l| *l).unwrap_or((Instant::now(), 0));
            let status = if at.elapsed() > idle_after {
                "expired"
            } else {
                "alive"
            };
            json(format!(
                "{{\"status\":\"{status}\",\"lastHeartbeat\":{ms}}}"
            ))
        }
        (Method::Post, "/heartbeat") => {
            touch();
            Response::from_string("ok").boxed()
        }
        (Method::Post, "/login") => {
            touch();
            let text = String::from_utf8_lossy(&body);
            let given = form_value(&text, "password").unwrap_or_default();
            let addr = request
                .remote_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            if password_ok(&given) {
                println!("[fake-code-server] login attempt from {addr}: success");
                Response::empty(302)
                    .with_header(header("Location", "./"))
                    .with_header(header("Set-Cookie", "code-server-session=fake; HttpOnly"))
                    .boxed()
            } else {
                println!("[fake-code-server] login attempt from {addr}: incorrect password");
                Response::from_string("Incorrect password").boxed()
            }
        }
        (Method::Get, "/print") => {
            let count = query(&url, "count")
                .and_then(|c| c.parse().ok())
                .unwrap_or(1);
            let prefix = query(&url, "prefix")
                .map(percent_decode)
                .unwrap_or_default();
            print_lines(&prefix, count);
            Response::from_string("printed").boxed()
        }
        (Method::Post, "/print") => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let _ = out.write_all(&body);
            let _ = out.flush();
            Response::from_string("printed").boxed()
        }
        (Method::Get, "/env") => {
            let name = query(&url, "name").unwrap_or("");
            match std::env::var(name) {
                Ok(v) if !v.is_empty() => Response::from_string("set").boxed(),
                _ => Response::from_string("unset").with_status_code(404).boxed(),
            }
        }
        (Method::Get, "/file") => {
            let p = query(&url, "path").map(percent_decode).unwrap_or_default();
            match std::fs::read(&p) {
                Ok(_) => Response::from_string("readable").boxed(),
                Err(e) => Response::from_string(e.to_string())
                    .with_status_code(404)
                    .boxed(),
            }
        }
        (Method::Post, "/chproj") => {
            // What `chattr -p ID FILE` does, from this process (so under any
            // seccomp filter its process tree carries).
            let p = query(&url, "path").map(percent_decode).unwrap_or_default();
            let id = query(&url, "id").and_then(|v| v.parse().ok()).unwrap_or(0);
            match set_project(&p, id) {
                Ok(()) => Response::from_string("changed").boxed(),
                Err(e) => Response::from_string(e.to_string())
                    .with_status_code(403)
                    .boxed(),
            }
        }
        (_, "/") => Response::from_string("fake code-server").boxed(),
        _ => Response::from_string("not found")
            .with_status_code(404)
            .boxed(),
    };
    let _ = request.respond(response);
}

/// `struct fsxattr` of linux/fs.h.
#[repr(C)]
#[derive(Default)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

/// Sets a file's project id with FS_IOC_FSGETXATTR / FS_IOC_FSSETXATTR.
fn set_project(path: &str, id: u32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    const GET: libc::c_ulong = 0x801c_581f;
    const SET: libc::c_ulong = 0x401c_5820;
    let f = std::fs::File::open(path)?;
    let mut attr = FsXattr::default();
    // SAFETY: the fd is open and `attr` is a live struct fsxattr.
    if unsafe { libc::ioctl(f.as_raw_fd(), GET, &mut attr as *mut FsXattr) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    attr.projid = id;
    // SAFETY: as above.
    if unsafe { libc::ioctl(f.as_raw_fd(), SET, &attr as *const FsXattr) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn json(s: String) -> tiny_http::ResponseBox {
    Response::from_string(s)
        .with_header(header("Content-Type", "application/json"))
        .boxed()
}

fn header(k: &str, v: &str) -> Header {
    // Both parts are ASCII constants here, so this cannot fail.
    Header::from_bytes(k.as_bytes(), v.as_bytes()).unwrap_or_else(|_| {
        Header::from_bytes(&b"X-Invalid"[..], &b"1"[..]).unwrap_or_else(|_| unreachable!())
    })
}
