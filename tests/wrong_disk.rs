//! A host reboot, emulated: the data volume is not mounted yet when dockerd
//! starts the containers (the EBS volume attaches late, or dockerd starts the
//! `unless-stopped` containers before the agent runs), so their bind sources
//! are directories on the root disk and the developer writes there. The agent,
//! started next, must mount the volume, see from each container's own mount
//! table that its data is on the wrong disk, recreate it on the volume, and move
//! what was written on the root disk into quarantine: nothing lost, nothing
//! deleted, and status says where it is.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn inspect(name: &str, format: &str) -> String {
    run("docker", &["inspect", "-f", format, name])
        .trim()
        .to_string()
}

/// (destination, source) of every bind of the container whose host source is
/// under `mount_point`: its developer data, whether it came from `Binds` or
/// `Mounts`.
fn data_binds(name: &str, mount_point: &Path) -> Vec<(String, PathBuf)> {
    let json = inspect(name, "{{json .Mounts}}");
    let mounts: Vec<serde_json::Value> = serde_json::from_str(&json).expect("mounts json");
    mounts
        .iter()
        .filter(|m| m["Type"] == "bind")
        .filter_map(|m| {
            let source = PathBuf::from(m["Source"].as_str()?);
            source
                .starts_with(mount_point)
                .then(|| (m["Destination"].as_str().unwrap_or("").to_string(), source))
        })
        .collect()
}

/// The device each data bind has inside the running container, seen through
/// its init process's root.
fn devices_in_container(name: &str, binds: &[(String, PathBuf)]) -> Vec<u64> {
    let pid = inspect(name, "{{.State.Pid}}");
    binds
        .iter()
        .map(|(dest, _)| {
            std::fs::metadata(format!("/proc/{pid}/root{dest}"))
                .map(|m| m.dev())
                .unwrap_or(0)
        })
        .collect()
}

/// Runs `script` in the container as `user`.
fn exec(name: &str, user: &str, script: &str) -> std::process::Output {
    Command::new("docker")
        .args(["exec", "-u", user, name, "sh", "-c", script])
        .output()
        .expect("docker exec")
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_started_before_the_volume_are_moved_onto_it() {
    require_root();
    let disk = LoopDevice::new("128M");
    let volume_dev = std::fs::metadata(disk.path()).expect("loop device").rdev();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let runtime = tempfile::Builder::new()
        .prefix("csagent-wrongdisk-")
        .tempdir_in("/dev/shm")
        .expect("tmpfs dir");
    let project = unique("wd").replace('-', "");
    let base = port_block(3);
    let subnet = test_subnet();
    let mnt = dir.path().join("data");
    let _cleanup = Leftovers {
        project: project.clone(),
        network: format!("csagent-{project}"),
        subnet: subnet.clone(),
        mount: Some(mnt.clone()),
    };
    let devs: Vec<String> = (1..=2).map(|i| format!("{project}-d{i}")).collect();
    let name = |d: &str| format!("code-server-{d}");

    let sm = aws_sdk_secretsmanager::Client::new(&aws().await);
    for d in &devs {
        for (kind, value) in [
            ("password", format!("pw-{d}")),
            ("claude-api-key", "REPLACE_WITH_ACTUAL_KEY".to_string()),
        ] {
            sm.create_secret()
                .name(format!("{project}/{d}/{kind}"))
                .secret_string(value)
                .send()
                .await
                .expect("create secret");
        }
    }
    let mut text = format!(
        "project = \"{project}\"\nregion = \"{REGION}\"\ninstance_id = \"i-0123456789abcdef0\"\n\
         [aws]\nendpoint_url = \"{moto}\"\n\
         [volume]\ndevice = \"{dev}\"\nmount_point = \"{mnt}\"\nfstab = \"{root}/fstab\"\nwait_timeout = \"10s\"\n\
         [containers]\nimage = \"{TEST_IMAGE}\"\npull = \"never\"\ncpus = 0.25\nmemory = \"256MiB\"\nmemory_reservation = \"128MiB\"\n\
         network = \"csagent-{project}\"\nsubnet = \"{subnet}\"\nhealth_interval = \"1s\"\nhealth_start_period = \"0s\"\n\
         [secrets]\npoll_interval = \"2s\"\n\
         [metrics]\nenabled = false\n\
         [logs]\nenabled = false\n\
         [agent]\nstate_dir = \"{root}/state\"\nruntime_dir = \"{run}\"\nsocket = \"{root}/ctl/csagent.sock\"\nsocket_group = \"adm\"\n",
        moto = moto_url(),
        dev = disk.path(),
        mnt = mnt.display(),
        root = dir.path().display(),
        run = runtime.path().display(),
    );
    for (i, d) in devs.iter().enumerate() {
        text.push_str(&format!(
            "[[developer]]\nname = \"{d}\"\nport = {}\n",
            base + 1 + i as u16
        ));
    }
    let config = dir.path().join("config.toml");
    std::fs::write(&config, text).expect("write config");
    std::fs::create_dir_all(dir.path().join("ctl")).expect("ctl dir");

    // 1. The agent converges on the volume; a developer has work on it.
    let mut agent = AgentDaemon::start(&config);
    agent.wait_status(
        "both developers healthy",
        Duration::from_secs(90),
        |c, s| all_developers_healthy(c, s, 2),
    );
    let binds = data_binds(&name(&devs[0]), &mnt);
    assert!(
        !binds.is_empty(),
        "dev1 has developer-data binds under {}",
        mnt.display()
    );
    let (dest, source) = binds[0].clone();
    let on_volume = source.join("on-volume.txt");
    let work = b"fn main() { println!(\"written on the volume\"); }\n".to_vec();
    std::fs::write(&on_volume, &work).expect("write on the volume");
    nix::unistd::chown(&on_volume, Some(1000.into()), Some(1000.into())).expect("chown");

    // 2. Reboot, emulated: agent and containers stop, the volume is not mounted
    // at boot, dockerd starts the containers, creating their bind sources as
    // directories on the root disk (done here explicitly, so the test holds
    // with `Binds`, which create them, and with `Mounts`, which would refuse).
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent.exited().is_none() {
        assert!(Instant::now() < deadline, "agent stops on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(agent);
    let all_binds: Vec<Vec<(String, PathBuf)>> =
        devs.iter().map(|d| data_binds(&name(d), &mnt)).collect();
    for d in &devs {
        run("docker", &["stop", "-t", "1", &name(d)]);
    }
    run("umount", &[path_str(&mnt)]);
    for (_, source) in all_binds.iter().flatten() {
        std::fs::create_dir_all(source).expect("bind source on the root disk");
    }
    let old_ids: Vec<String> = devs.iter().map(|d| inspect(&name(d), "{{.Id}}")).collect();
    for d in &devs {
        run("docker", &["start", &name(d)]);
    }
    let root_dev = std::fs::metadata(dir.path()).expect("root disk").dev();
    assert!(
        devices_in_container(&name(&devs[0]), &binds)
            .iter()
            .all(|d| *d == root_dev),
        "the containers now run on the root disk"
    );
    // The developer works on, unaware, on the root disk.
    let stray = format!("notes written while the volume was missing, {project}\n").into_bytes();
    // As root: the directories dockerd creates on the root disk are root's.
    let out = exec(
        &name(&devs[0]),
        "0",
        &format!(
            "printf '%s\\n' 'notes written while the volume was missing, {project}' > '{dest}/stray.txt' && test ! -e '{dest}/on-volume.txt'"
        ),
    );
    assert!(out.status.success(), "write inside the container: {out:?}");
    assert_eq!(
        std::fs::read(source.join("stray.txt")).expect("on the root disk"),
        stray
    );

    // 3. The agent starts: it mounts the volume, finds the containers on the
    // wrong disk, and moves them and what they wrote.
    let started = Instant::now();
    let agent = AgentDaemon::start(&config);
    let moved = |d: usize| {
        let id = inspect(&name(&devs[d]), "{{.Id}}");
        id != old_ids[d]
            && inspect(&name(&devs[d]), "{{.State.Running}}") == "true"
            && devices_in_container(&name(&devs[d]), &all_binds[d])
                .iter()
                .all(|dev| *dev == volume_dev)
    };
    let status = agent.wait_status(
        "both developers healthy on the volume, quarantine reported",
        Duration::from_secs(90),
        |c, s| {
            all_developers_healthy(c, s, 2)
                && (0..devs.len()).all(moved)
                && s["volume"]["quarantine"]
                    .as_array()
                    .is_some_and(|q| q.iter().any(|i| i["developer"] == devs[0].as_str()))
        },
    );
    let converged = started.elapsed();

    // On the volume: the container sees the work written there before.
    let out = exec(
        &name(&devs[0]),
        "1000",
        &format!("cat '{dest}/on-volume.txt'"),
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        out.stdout, work,
        "the volume's data is what the container sees"
    );
    assert_eq!(
        std::fs::read(&on_volume).expect("still on the volume"),
        work
    );

    // The stray file is in quarantine, byte for byte, where status says.
    let item = status["volume"]["quarantine"]
        .as_array()
        .and_then(|q| q.iter().find(|i| i["developer"] == devs[0].as_str()))
        .expect("dev1 quarantined")
        .clone();
    assert_eq!(item["left_in_place"], false, "{item}");
    assert_eq!(item["from"], mnt.join(&devs[0]).display().to_string());
    let quarantined = PathBuf::from(item["path"].as_str().expect("path"));
    assert!(
        quarantined.starts_with(dir.path().join("state/quarantine")),
        "{}",
        quarantined.display()
    );
    let rel = source.strip_prefix(mnt.join(&devs[0])).expect("under dev1");
    let stray_now = quarantined.join(rel).join("stray.txt");
    let files_lost = usize::from(std::fs::read(&stray_now).ok().as_ref() != Some(&stray))
        + usize::from(std::fs::read(&on_volume).ok().as_ref() != Some(&work));
    assert_eq!(files_lost, 0, "stray file at {}", stray_now.display());
    assert!(item["bytes"].as_u64() >= Some(stray.len() as u64), "{item}");
    let warned = status["warnings"].as_array().is_some_and(|w| {
        w.iter().any(|w| {
            w.as_str()
                .is_some_and(|w| w.starts_with("quarantine: ") && w.contains(&devs[0]))
        })
    });
    assert!(warned, "status warns: {status:#}");

    // A reload (a new volume pass and convergence) changes nothing: each
    // container was recreated once, none needlessly.
    let new_ids: Vec<String> = devs.iter().map(|d| inspect(&name(d), "{{.Id}}")).collect();
    let out = Command::new(csagent_bin())
        .args(["reload", "--config", path_str(&config)])
        .output()
        .expect("csagent reload");
    assert!(out.status.success(), "reload: {out:?}\n{}", agent.log());
    agent.wait_status("healthy after reload", Duration::from_secs(30), |c, s| {
        all_developers_healthy(c, s, 2)
    });
    let after: Vec<String> = devs.iter().map(|d| inspect(&name(d), "{{.Id}}")).collect();
    let needless = new_ids.iter().zip(&after).filter(|(a, b)| a != b).count();
    assert_eq!(needless, 0, "no container recreated by the reload");
    assert!(
        agent
            .log()
            .contains("container's data is not on the data volume"),
        "the agent says why it recreated them"
    );

    report_fault(
        "host reboot emulated: volume unmounted, containers started by Docker first",
        0,
        0,
        0,
        files_lost,
        needless,
        converged,
    );
}
