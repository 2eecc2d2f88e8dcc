//! A password rotation recreates a developer's container in the middle of a log
//! flood, with `csagent run` against dockerd, moto and a loop device: the old
//! container gets SIGTERM and its grace period (and uses it to write more), its
//! log is shipped to the end before it is removed, and every line of the old
//! container and of the new one reaches CloudWatch Logs exactly once.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bollard::query_parameters::EventsOptionsBuilder;
use common::cwlogs::*;
use common::*;
use csagent::config::Config;
use futures_util::StreamExt;

/// The test image with an entrypoint that, on SIGTERM, goes on writing for two
/// seconds before it stops code-server, as a process finishing its work would.
const SLOW_TERM_IMAGE: &str = "csagent-test/code-server-slowterm:latest";
const INSTANCE: &str = "i-0123456789abcdef0";
/// How long the entrypoint keeps writing after SIGTERM.
const TERM_WORK: Duration = Duration::from_secs(2);
const LINES_PER_CHUNK: u64 = 100;

const ENTRYPOINT: &str = r#"#!/bin/sh
# Test image: the fake code-server, but SIGTERM first makes this script write
# for a while (the grace period at work), then stops the server.
/usr/bin/fake-code-server "$@" &
child=$!
on_term() {
  echo "slowterm: SIGTERM received"
  sleep 2
  echo "slowterm: last line"
  kill -TERM "$child"
  wait "$child"
  exit 0
}
trap on_term TERM
wait "$child"
"#;

fn build_slow_term_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {TEST_IMAGE}\nCOPY entrypoint.sh /usr/bin/entrypoint.sh\n"),
    )
    .expect("Dockerfile");
    let script = dir.path().join("entrypoint.sh");
    std::fs::write(&script, ENTRYPOINT).expect("entrypoint");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = std::process::Command::new("docker")
        .args(["build", "-q", "-t", SLOW_TERM_IMAGE, path_str(dir.path())])
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .expect("docker build");
    assert!(
        out.status.success(),
        "docker build {SLOW_TERM_IMAGE} (is {TEST_IMAGE} built? scripts/build-test-image.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One request to the fake code-server asking for a numbered chunk of lines;
/// true when it answered 200 (the lines were written before the answer).
fn print_chunk(port: u16, chunk: u64) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!(
        "GET /print?count={LINES_PER_CHUNK}&prefix=f{chunk}- HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out.starts_with(b"HTTP/1.1 200") || out.starts_with(b"HTTP/1.0 200")
}

/// A Docker event of the test's project.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    id: String,
    action: String,
    signal: Option<String>,
    name: Option<String>,
}

fn container_of(name: &str) -> (String, i64) {
    let out = run(
        "docker",
        &["inspect", "-f", "{{.Id}} {{.RestartCount}}", name],
    );
    let mut parts = out.split_whitespace();
    let id = parts.next().unwrap_or_default().to_string();
    let restarts = parts.next().and_then(|r| r.parse().ok()).unwrap_or(-1);
    (id, restarts)
}

/// Bind sources of a container under `root`.
fn binds_under(name: &str, root: &Path) -> Vec<String> {
    let out = run(
        "docker",
        &[
            "inspect",
            "-f",
            "{{range .Mounts}}{{.Source}}\n{{end}}",
            name,
        ],
    );
    out.lines()
        .filter(|l| Path::new(l).starts_with(root))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn password_rotation_during_a_log_flood_ships_every_line_once() {
    require_root();
    build_slow_term_image();
    let disk = LoopDevice::new("128M");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let runtime = tempfile::Builder::new()
        .prefix("csagent-drain-")
        .tempdir_in("/dev/shm")
        .expect("tmpfs dir");
    let project = unique("drn").replace('-', "");
    let base = port_block(3);
    let subnet = test_subnet();
    let _cleanup = Leftovers {
        project: project.clone(),
        network: format!("csagent-{project}"),
        subnet: subnet.clone(),
        mount: Some(dir.path().join("data")),
    };
    let sdk = aws().await;
    let sm = aws_sdk_secretsmanager::Client::new(&sdk);
    for i in 1..=2 {
        for (kind, value) in [
            ("password", format!("pw-{project}-{i}")),
            ("claude-api-key", "REPLACE_WITH_ACTUAL_KEY".to_string()),
        ] {
            sm.create_secret()
                .name(format!("{project}/{project}-d{i}/{kind}"))
                .secret_string(value)
                .send()
                .await
                .expect("create secret");
        }
    }
    let mut text = format!(
        "project = \"{project}\"\nregion = \"{REGION}\"\ninstance_id = \"{INSTANCE}\"\n\
         [aws]\nendpoint_url = \"{moto}\"\n\
         [volume]\ndevice = \"{dev}\"\nmount_point = \"{root}/data\"\nfstab = \"{root}/fstab\"\nwait_timeout = \"10s\"\n\
         [containers]\nimage = \"{SLOW_TERM_IMAGE}\"\npull = \"never\"\ncpus = 0.5\nmemory = \"256MiB\"\nmemory_reservation = \"128MiB\"\n\
         network = \"csagent-{project}\"\nsubnet = \"{subnet}\"\nhealth_interval = \"1s\"\nhealth_start_period = \"0s\"\nstop_grace = \"10s\"\n\
         [secrets]\npoll_interval = \"1s\"\napply = \"immediate\"\n\
         [metrics]\nenabled = false\n\
         [logs]\nenabled = true\n\
         [agent]\nstate_dir = \"{root}/state\"\nruntime_dir = \"{run}\"\nsocket = \"{root}/ctl/csagent.sock\"\nsocket_group = \"adm\"\n",
        moto = moto_url(),
        dev = disk.path(),
        root = dir.path().display(),
        run = runtime.path().display(),
    );
    for i in 1..=2 {
        text.push_str(&format!(
            "[[developer]]\nname = \"{project}-d{i}\"\nport = {}\n",
            base + i
        ));
    }
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, text).expect("write config");
    std::fs::create_dir_all(dir.path().join("ctl")).expect("ctl dir");
    let config = Config::load(&config_path).expect("config");
    let (d1, d2) = (format!("{project}-d1"), format!("{project}-d2"));
    let (name1, name2) = (format!("code-server-{d1}"), format!("code-server-{d2}"));
    let group = config.render(&config.logs.group, &d1);
    let cwl = aws_sdk_cloudwatchlogs::Client::new(&sdk);

    let daemon = AgentDaemon::start(&config_path);
    daemon.wait_status("2 healthy developers", Duration::from_secs(90), |c, s| {
        all_developers_healthy(c, s, 2)
    });
    let (old1, _) = container_of(&name1);
    let (id2, restarts2) = container_of(&name2);

    // A developer file, in a directory the container has bound from the volume.
    let data = dir.path().join("data");
    let bind = binds_under(&name1, &data)
        .into_iter()
        .next()
        .expect("d1 has a bind from the data volume");
    let keep = Path::new(&bind).join("keep-through-rotation.txt");
    std::fs::write(&keep, "work in progress\n").expect("write developer file");

    // Docker's events for the project's containers, from before the rotation.
    let docker = docker().await;
    let events: Arc<std::sync::Mutex<Vec<Seen>>> = Arc::default();
    let watcher = {
        let (docker, events) = (docker.clone(), events.clone());
        let label = format!("csagent.project={project}");
        tokio::spawn(async move {
            let filters: HashMap<&str, Vec<&str>> =
                HashMap::from([("type", vec!["container"]), ("label", vec![label.as_str()])]);
            let mut stream =
                docker.events(Some(EventsOptionsBuilder::new().filters(&filters).build()));
            while let Some(Ok(ev)) = stream.next().await {
                let actor = ev.actor.unwrap_or_default();
                let attrs = actor.attributes.unwrap_or_default();
                events.lock().expect("events").push(Seen {
                    at: Instant::now(),
                    id: actor.id.unwrap_or_default(),
                    action: ev.action.unwrap_or_default(),
                    signal: attrs.get("signal").cloned(),
                    name: attrs.get("name").cloned(),
                });
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The flood: chunks of numbered lines as fast as the container answers.
    let flooding = Arc::new(AtomicBool::new(true));
    let flood = {
        let flooding = flooding.clone();
        let port = base + 1;
        std::thread::spawn(move || {
            let mut outcomes = Vec::new();
            let mut chunk = 0;
            while flooding.load(Ordering::SeqCst) {
                chunk += 1;
                outcomes.push((chunk, print_chunk(port, chunk)));
                std::thread::sleep(Duration::from_millis(10));
            }
            outcomes
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Rotation: a new AWSCURRENT password for d1.
    let rotated = Instant::now();
    sm.put_secret_value()
        .secret_id(format!("{project}/{d1}/password"))
        .secret_string(format!("pw-{project}-1-rotated"))
        .send()
        .await
        .expect("rotate the password");
    daemon.wait_status(
        "d1 recreated and healthy",
        Duration::from_secs(90),
        |c, s| {
            let d = status_developer(s, &d1);
            c == 0
                && d["state"] == "running"
                && d["health"] == "healthy"
                && d["container_id"]
                    .as_str()
                    .is_some_and(|id| !old1.starts_with(id))
        },
    );
    let converged = rotated.elapsed();
    // The new container floods for a while too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    flooding.store(false, Ordering::SeqCst);
    let outcomes = flood.join().expect("flood thread");
    let answered: Vec<u64> = outcomes.iter().filter(|o| o.1).map(|o| o.0).collect();
    let (new1, new_restarts1) = container_of(&name1);
    assert_ne!(new1, old1, "d1's container was replaced");
    assert!(
        answered.len() > 20,
        "the flood ran: {} chunks",
        answered.len()
    );

    // Every answered chunk must arrive whole; any other chunk whole or not at all.
    let want_answered = answered.len() * LINES_PER_CHUNK as usize;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let have = read_stream(&cwl, &group, INSTANCE)
            .await
            .iter()
            .filter(|m| m.starts_with('f'))
            .count();
        if have >= want_answered || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // would a repeat show up?
    let stream = read_stream(&cwl, &group, INSTANCE).await;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for m in &stream {
        *counts.entry(m.as_str()).or_default() += 1;
    }
    let (mut lost, mut dup, mut partial) = (0usize, 0usize, Vec::new());
    for (chunk, ok) in &outcomes {
        let seen: Vec<usize> = (1..=LINES_PER_CHUNK)
            .map(|i| {
                counts
                    .get(format!("f{chunk}-{i}").as_str())
                    .copied()
                    .unwrap_or(0)
            })
            .collect();
        dup += seen.iter().map(|c| c.saturating_sub(1)).sum::<usize>();
        let missing = seen.iter().filter(|c| **c == 0).count();
        // A chunk the container never answered may not have been written at all
        // (connection refused while no container listened); never half.
        if *ok || missing < seen.len() {
            lost += missing;
            if missing > 0 {
                partial.push((*chunk, *ok, missing));
            }
        }
    }
    let once = |line: &str| counts.get(line).copied().unwrap_or(0);
    let term_lines = [
        once("slowterm: SIGTERM received"),
        once("slowterm: last line"),
        once("fake-code-server: received termination signal, exiting"),
    ];

    // What Docker did to the old container: SIGTERM, never SIGKILL, and it was
    // removed only after it had used its time.
    let seen = events.lock().expect("events").clone();
    watcher.abort();
    let of_old: Vec<&Seen> = seen.iter().filter(|e| e.id == old1).collect();
    let term_at = of_old
        .iter()
        .find(|e| e.action == "kill" && e.signal.as_deref() == Some("15"))
        .map(|e| e.at);
    let killed = of_old
        .iter()
        .any(|e| e.action == "kill" && e.signal.as_deref() == Some("9"));
    let destroyed_at = of_old.iter().find(|e| e.action == "destroy").map(|e| e.at);
    let creates = seen.iter().filter(|e| e.action == "create").count();
    let (id2_after, restarts2_after) = container_of(&name2);
    let needless = usize::from(id2_after != id2)
        + usize::try_from(restarts2_after - restarts2).unwrap_or(1)
        + usize::try_from(new_restarts1).unwrap_or(1)
        + creates.saturating_sub(1);
    let files_lost = usize::from(
        std::fs::read_to_string(&keep).ok().as_deref() != Some("work in progress\n")
            || !binds_under(&name1, &data).contains(&bind),
    );
    report_fault(
        "password rotation during a log flood",
        answered.len() * LINES_PER_CHUNK as usize,
        lost,
        dup,
        files_lost,
        needless,
        converged,
    );
    eprintln!(
        "{} chunks, {} answered; events of the old container: {:?}",
        outcomes.len(),
        answered.len(),
        of_old
            .iter()
            .map(|e| (e.action.as_str(), e.signal.as_deref(), e.name.as_deref()))
            .collect::<Vec<_>>()
    );
    if lost + dup > 0 {
        eprintln!("partial chunks (chunk, answered, missing): {partial:?}");
        eprintln!("agent log:\n{}", daemon.log());
    }
    assert_eq!(
        term_lines,
        [1, 1, 1],
        "the old container's last lines, once each"
    );
    let (term_at, destroyed_at) = (
        term_at.expect("the old container got SIGTERM"),
        destroyed_at.expect("the old container was removed"),
    );
    assert!(!killed, "no SIGKILL within the grace period: {of_old:?}");
    assert!(
        destroyed_at.duration_since(term_at) >= TERM_WORK,
        "removed only after it used its time after SIGTERM: {:?}",
        destroyed_at.duration_since(term_at)
    );
    assert_eq!(
        (lost, dup, files_lost, needless),
        (0, 0, 0, 0),
        "lost, duplicated, files lost, needless restarts"
    );
    assert!(converged < Duration::from_secs(60), "{converged:?}");
    assert!(
        daemon.log().contains("container log shipped to its end"),
        "the agent waited for the old container's log before removing it"
    );

    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let mut daemon = daemon;
    let deadline = Instant::now() + Duration::from_secs(25);
    while daemon.exited().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
