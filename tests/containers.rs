//! The container reconciler against the real Docker engine and the local test
//! image: desired state, limits, ownership labels, recreation rules.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::PasswordHasher;
use bollard::Docker;
use bollard::models::{ContainerInspectResponse, MountType};
use bollard::query_parameters::InspectContainerOptions;
use common::*;
use csagent::config::{Config, PullPolicy};
use csagent::containers::{
    Action, ContainerCredentials, ContainerStatus, DesiredDeveloper, Reconciler,
};

struct Env {
    docker: Docker,
    dir: tempfile::TempDir,
    prefix: String,
    base_port: u16,
    subnet: String,
    network: String,
}

/// Removes the test's containers, network and rule even when it fails.
impl Drop for Env {
    fn drop(&mut self) {
        drop(self.leftovers());
    }
}

impl Env {
    async fn new(n: u16) -> Env {
        let prefix = unique("t").replace('-', "");
        Env {
            docker: docker().await,
            dir: tempfile::tempdir().expect("tempdir"),
            base_port: port_block(n),
            subnet: test_subnet(),
            network: format!("csagent-{prefix}"),
            prefix,
        }
    }

    fn dev(&self, i: usize) -> String {
        format!("{}-dev{i}", self.prefix)
    }

    /// A config with developers 1..=n, optionally overriding one's memory.
    fn config(&self, devs: &[usize], memory_override: Option<(usize, &str)>) -> Config {
        let mut toml = format!(
            "project = \"{prefix}\"\n[volume]\ndevice = \"/dev/null\"\nmount_point = \"{root}/data\"\n\
             [containers]\nimage = \"{TEST_IMAGE}\"\npull = \"never\"\ncpus = 0.25\nmemory = \"512MiB\"\nmemory_reservation = \"256MiB\"\n\
             network = \"{net}\"\nsubnet = \"{subnet}\"\nhealth_interval = \"1s\"\nhealth_start_period = \"0s\"\n\
             [agent]\nruntime_dir = \"{root}/run\"\nstate_dir = \"{root}/state\"\n",
            root = self.dir.path().display(),
            prefix = self.prefix,
            net = self.network,
            subnet = self.subnet,
        );
        for &i in devs {
            toml.push_str(&format!(
                "[[developer]]\nname = \"{}\"\nport = {}\n",
                self.dev(i),
                self.base_port + i as u16
            ));
            if let Some((j, mem)) = memory_override
                && j == i
            {
                toml.push_str(&format!("memory = \"{mem}\"\n"));
            }
        }
        Config::from_toml(&toml, Path::new("test.toml")).expect("test config is valid")
    }

    fn desired(
        &self,
        config: &Config,
        versions: &BTreeMap<String, (String, String)>,
    ) -> Vec<DesiredDeveloper> {
        config
            .developers
            .iter()
            .map(|d| {
                let (version, password) = versions
                    .get(&d.name)
                    .cloned()
                    .unwrap_or(("v1".into(), format!("pw-{}", d.name)));
                let key_dir = config.agent.runtime_dir.join(&d.name);
                std::fs::create_dir_all(&key_dir).expect("key dir");
                make_home(&config.volume.mount_point.join(&d.name));
                DesiredDeveloper {
                    developer: d.clone(),
                    credentials: Ok(ContainerCredentials {
                        hashed_password: hash(&password),
                        password_version: version,
                        key_dir,
                    }),
                }
            })
            .collect()
    }

    /// The developer's container as Docker shows it (None: there is none).
    async fn inspect(&self, dev: &str) -> Option<ContainerInspectResponse> {
        self.docker
            .inspect_container(
                &format!("code-server-{dev}"),
                None::<InspectContainerOptions>,
            )
            .await
            .ok()
    }

    async fn id_of(&self, dev: &str) -> Option<String> {
        self.inspect(dev).await.and_then(|c| c.id)
    }

    fn leftovers(&self) -> Leftovers {
        Leftovers {
            project: self.prefix.clone(),
            network: self.network.clone(),
            subnet: self.subnet.clone(),
            mount: None,
        }
    }
}

/// `<dev>/home/workspace` as the volume pass makes them (owned by the image's
/// user, so the container can write its home): the home bind's source must exist.
fn make_home(dev_dir: &Path) {
    let home = dev_dir.join("home");
    std::fs::create_dir_all(home.join("workspace")).expect("data dir");
    for dir in [&home, &home.join("workspace")] {
        std::os::unix::fs::chown(dir, Some(1000), Some(1000)).expect("chown");
    }
}

fn hash(password: &str) -> String {
    Argon2::default()
        .hash_password(password.as_bytes())
        .expect("hash")
        .to_string()
}

async fn login(port: u16, password: &str) -> u16 {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            "-d",
            &format!("password={password}"),
            &format!("http://127.0.0.1:{port}/login"),
        ])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

async fn wait_healthy(r: &Reconciler, devs: &[String], timeout: Duration) {
    let start = Instant::now();
    loop {
        for d in devs {
            r.observe_one(d).await;
        }
        let snap = r.status_handle().snapshot();
        let all = devs
            .iter()
            .all(|d| snap.get(d).is_some_and(|s| s.health == "healthy"));
        if all {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "not healthy within {timeout:?}: {:#?}",
            snap.values()
                .map(|s| (&s.developer, &s.state, &s.health))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn eight_developers_converge_with_limits_and_no_plaintext() {
    let env = Env::new(9).await;
    let devs: Vec<usize> = (1..=8).collect();
    let config = Arc::new(env.config(&devs, None));
    let r = Reconciler::new(env.docker.clone(), config.clone());
    let versions = BTreeMap::new();
    let result = r
        .converge(&env.desired(&config, &versions))
        .await
        .expect("converge");
    assert_eq!(
        result.iter().filter(|(_, a)| *a == Action::Created).count(),
        8,
        "{result:?}"
    );
    let names: Vec<String> = devs.iter().map(|&i| env.dev(i)).collect();
    wait_healthy(&r, &names, Duration::from_secs(60)).await;

    for (&i, name) in devs.iter().zip(&names) {
        let c = env.inspect(name).await.expect("inspect");
        let hc = c.host_config.clone().expect("host config");
        assert_eq!(hc.nano_cpus, Some(250_000_000));
        assert_eq!(hc.memory, Some(512 << 20));
        assert_eq!(hc.memory_reservation, Some(256 << 20));
        assert_eq!(
            hc.restart_policy
                .and_then(|p| p.name)
                .map(|n| n.to_string())
                .as_deref(),
            Some("unless-stopped")
        );
        let port = hc
            .port_bindings
            .and_then(|p| p.get("8080/tcp").cloned().flatten())
            .and_then(|b| b.first().and_then(|b| b.host_port.clone()));
        assert_eq!(port, Some((env.base_port + i as u16).to_string()));
        assert_eq!(
            hc.binds, None,
            "no Binds: a missing source must not be created"
        );
        let mounts = hc.mounts.clone().unwrap_or_default();
        assert!(
            mounts.iter().any(|m| m.typ == Some(MountType::BIND)
                && m.target.as_deref() == Some("/home/coder")
                && m.source
                    .as_deref()
                    .is_some_and(|s| s.ends_with(&format!("/data/{name}/home")))),
            "{mounts:?}"
        );
        assert!(
            hc.security_opt
                .unwrap_or_default()
                .iter()
                .any(|s| s.starts_with("no-new-privileges"))
        );
        let json = serde_json::to_string(&c).expect("json");
        assert!(
            !json.contains(&format!("pw-{name}")),
            "plaintext password in docker inspect"
        );
        assert!(json.contains("HASHED_PASSWORD=$argon2id$"));
    }
    // The password the hash was made from logs in; another does not.
    assert_eq!(
        login(env.base_port + 5, &format!("pw-{}", env.dev(5))).await,
        302
    );
    assert_eq!(login(env.base_port + 5, "wrong").await, 200);
    // The metadata rule is in DOCKER-USER.
    let rules = run("iptables", &["-w", "-S", "DOCKER-USER"]);
    assert!(
        rules.contains(&format!("-s {} -d 169.254.169.254/32", env.subnet)),
        "{rules}"
    );

    // A second pass changes nothing.
    let again = r
        .converge(&env.desired(&config, &versions))
        .await
        .expect("converge");
    assert!(
        again.iter().all(|(_, a)| *a == Action::Unchanged),
        "{again:?}"
    );
}

#[tokio::test]
async fn changes_touch_only_the_affected_developer() {
    let env = Env::new(4).await;
    let config = Arc::new(env.config(&[1, 2, 3], None));
    let mut r = Reconciler::new(env.docker.clone(), config.clone());
    let mut versions = BTreeMap::new();
    r.converge(&env.desired(&config, &versions))
        .await
        .expect("converge");
    let ids: Vec<Option<String>> =
        futures_util::future::join_all((1..=3).map(|i| env.id_of_owned(i))).await;
    assert!(ids.iter().all(Option::is_some));

    // docker kill one: the next pass (or the restart policy) brings it back, same container.
    run("docker", &["kill", &format!("code-server-{}", env.dev(2))]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let res = r
        .converge(&env.desired(&config, &versions))
        .await
        .expect("converge");
    assert!(
        res.iter()
            .all(|(_, a)| matches!(a, Action::Unchanged | Action::Started)),
        "{res:?}"
    );
    r.observe_one(&env.dev(2)).await;
    assert_eq!(r.status_handle().snapshot()[&env.dev(2)].state, "running");

    // One developer's memory changes: only that one is recreated.
    let changed = Arc::new(env.config(&[1, 2, 3], Some((3, "768MiB"))));
    r.set_config(changed.clone());
    let res = r
        .converge(&env.desired(&changed, &versions))
        .await
        .expect("converge");
    let by_dev: BTreeMap<_, _> = res.into_iter().collect();
    assert_eq!(
        by_dev[&env.dev(3)],
        Action::Recreated("spec changed".into())
    );
    assert_eq!(env.id_of(&env.dev(1)).await, ids[0]);
    assert_eq!(env.id_of(&env.dev(2)).await, ids[1]);
    assert_ne!(env.id_of(&env.dev(3)).await, ids[2]);

    // Password rotation for dev1: only dev1 is recreated; new password works, old fails.
    versions.insert(env.dev(1), ("v2".to_string(), "rotated-pw".to_string()));
    let id3 = env.id_of(&env.dev(3)).await;
    let res = r
        .converge(&env.desired(&changed, &versions))
        .await
        .expect("converge");
    let by_dev: BTreeMap<_, _> = res.into_iter().collect();
    assert_eq!(
        by_dev[&env.dev(1)],
        Action::Recreated("credentials rotated".into())
    );
    assert_eq!(by_dev[&env.dev(2)], Action::Unchanged);
    assert_eq!(env.id_of(&env.dev(3)).await, id3);
    wait_healthy(&r, &[env.dev(1)], Duration::from_secs(30)).await;
    assert_eq!(login(env.base_port + 1, "rotated-pw").await, 302);
    assert_eq!(
        login(env.base_port + 1, &format!("pw-{}", env.dev(1))).await,
        200
    );

    // Developer 2 removed from the config: its container goes, its data stays.
    let marker = changed
        .volume
        .mount_point
        .join(env.dev(2))
        .join("home/workspace/keep.txt");
    std::fs::write(&marker, "mine").expect("write");
    let fewer = Arc::new(env.config(&[1, 3], Some((3, "768MiB"))));
    r.set_config(fewer.clone());
    let res = r
        .converge(&env.desired(&fewer, &versions))
        .await
        .expect("converge");
    assert!(res.contains(&(env.dev(2), Action::Removed)), "{res:?}");
    assert_eq!(env.id_of(&env.dev(2)).await, None);
    assert_eq!(std::fs::read_to_string(&marker).expect("data kept"), "mine");
}

#[tokio::test]
async fn unlabelled_container_named_like_ours_is_left_alone() {
    let env = Env::new(2).await;
    let config = Arc::new(env.config(&[1], None));
    let name = format!("code-server-{}", env.dev(1));
    run("docker", &["create", "--name", &name, TEST_IMAGE]);
    // Not ours, so the label-based cleanup would not remove it.
    let _remove = RemoveContainerOnDrop(name.clone());
    let seen = env
        .assert_left_alone(&config, "without the csagent.managed label")
        .await;
    assert!(seen.problem.is_some());
}

#[tokio::test]
async fn another_projects_container_named_like_ours_is_left_alone() {
    let env = Env::new(2).await;
    let config = Arc::new(env.config(&[1], None));
    let name = format!("code-server-{}", env.dev(1));
    // Managed, but by another project on the same host (say, a second config).
    run(
        "docker",
        &[
            "create",
            "--name",
            &name,
            "--label",
            "csagent.managed=true",
            "--label",
            "csagent.project=someone-else",
            "--label",
            &format!("csagent.developer={}", env.dev(1)),
            TEST_IMAGE,
        ],
    );
    let _remove = RemoveContainerOnDrop(name.clone());
    env.assert_left_alone(&config, "belongs to project \"someone-else\"")
        .await;
}

impl Env {
    /// Converges dev1, whose name a container that is not ours holds: it is
    /// skipped for `why`, left as it was, and shown unmanaged.
    async fn assert_left_alone(&self, config: &Arc<Config>, why: &str) -> ContainerStatus {
        let before = self.id_of(&self.dev(1)).await;
        let r = Reconciler::new(self.docker.clone(), config.clone());
        let res = r
            .converge(&self.desired(config, &BTreeMap::new()))
            .await
            .expect("converge");
        match &res[0].1 {
            Action::Skipped(skipped) => assert!(skipped.contains(why), "{skipped}"),
            other => panic!("expected Skipped, got {other:?}"),
        }
        assert_eq!(self.id_of(&self.dev(1)).await, before, "not touched");
        let seen = r.status_handle().snapshot()[&self.dev(1)].clone();
        assert!(seen.state.starts_with("unmanaged"), "{seen:?}");
        seen
    }

    async fn id_of_owned(&self, i: usize) -> Option<String> {
        self.id_of(&self.dev(i)).await
    }
}

/// A container that exits at once: Docker's restart policy keeps restarting it;
/// csagent reports it as crash-looping with its last log lines and does not
/// fight the policy.
#[tokio::test]
async fn crash_loop_is_reported_with_last_log_lines() {
    let env = Env::new(2).await;
    let image = format!("csagent-test/crasher:{}", env.prefix);
    let tmp = format!("csagent-crasher-src-{}", env.prefix);
    run("docker", &["create", "--name", &tmp, TEST_IMAGE]);
    run(
        "docker",
        &[
            "commit",
            "--change",
            r#"ENTRYPOINT ["/bin/sh", "-c", "echo crashing now; exit 3"]"#,
            &tmp,
            &image,
        ],
    );
    run("docker", &["rm", &tmp]);
    struct RemoveImage(String);
    impl Drop for RemoveImage {
        fn drop(&mut self) {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "-f", &self.0])
                .output();
        }
    }
    let _image_guard = RemoveImage(image.clone());

    let mut config = env.config(&[1], None);
    config.containers.image = image.clone();
    let config = Arc::new(config);
    let r = Reconciler::new(env.docker.clone(), config.clone());
    let follower = r.clone();
    let events = tokio::spawn(async move { follower.follow_events(|_, _| {}).await });
    // Let the event stream open before the container starts dying.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let res = r
        .converge(&env.desired(&config, &BTreeMap::new()))
        .await
        .expect("converge");
    assert_eq!(res[0].1, Action::Created);

    let dev = env.dev(1);
    let start = Instant::now();
    loop {
        let snap = r.status_handle().snapshot();
        let s = &snap[&dev];
        if s.crash_looping {
            assert!(
                s.last_log_lines.iter().any(|l| l.contains("crashing now")),
                "last log lines: {:?}",
                s.last_log_lines
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not reported as crash-looping: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The container is Docker's to restart: the same container, never recreated.
    let id = env.id_of(&dev).await;
    let res = r
        .converge(&env.desired(&config, &BTreeMap::new()))
        .await
        .expect("converge");
    assert!(
        matches!(&res[0].1, Action::Unchanged | Action::Skipped(_)),
        "{res:?}"
    );
    assert_eq!(env.id_of(&dev).await, id);
    events.abort();
}

/// No registry is reachable here, which is exactly the case this covers: a pull
/// that fails for an image already present is only a warning; an image neither
/// present nor pullable is reported for each developer, and containers already
/// running are left running rather than removed.
#[tokio::test]
async fn image_pull_failures_are_reported_per_developer_and_never_remove_containers() {
    let env = Env::new(3).await;
    let devs = [env.dev(1), env.dev(2)];
    let with = |image: Option<String>, pull: PullPolicy| {
        let mut c = env.config(&[1, 2], None);
        if let Some(image) = image {
            c.containers.image = image;
        }
        c.containers.pull = pull;
        Arc::new(c)
    };
    let versions = BTreeMap::new();

    // pull = "always", image present locally, the pull fails: the local one is used.
    let config = with(None, PullPolicy::Always);
    let mut r = Reconciler::new(env.docker.clone(), config.clone());
    let res = r
        .converge(&env.desired(&config, &versions))
        .await
        .expect("converge");
    assert!(
        res.iter().all(|(_, a)| *a == Action::Created),
        "created from the image already present: {res:?}"
    );
    wait_healthy(&r, &devs, Duration::from_secs(30)).await;
    let ids = [env.id_of(&devs[0]).await, env.id_of(&devs[1]).await];

    // An image that is neither present nor pullable, for each pull policy.
    let missing = format!("csagent-missing/{}:1", env.prefix);
    for (pull, says) in [
        (
            PullPolicy::IfNotPresent,
            "is not present and cannot be pulled",
        ),
        (PullPolicy::Always, "is not present and cannot be pulled"),
        (
            PullPolicy::Never,
            "is not present and containers.pull is \"never\"",
        ),
    ] {
        let config = with(Some(missing.clone()), pull);
        r.set_config(config.clone());
        let res = r
            .converge(&env.desired(&config, &versions))
            .await
            .expect("converge");
        assert_eq!(res.len(), 2, "{res:?}");
        for (dev, action) in &res {
            match action {
                Action::Failed(e) => assert!(
                    e.contains(&missing) && e.contains(says),
                    "{dev} with pull {pull}: {e}"
                ),
                other => panic!("{dev} with pull {pull}: expected a failure, got {other:?}"),
            }
        }
        let status = r.status_handle().snapshot();
        for dev in &devs {
            let problem = status[dev].problem.clone().unwrap_or_default();
            assert!(problem.contains(says), "status for {dev}: {problem:?}");
        }
        // The running containers are untouched.
        assert_eq!(
            [env.id_of(&devs[0]).await, env.id_of(&devs[1]).await],
            ids,
            "containers kept while the image is missing (pull {pull})"
        );
    }
}

/// `docker exec` of a shell script as the image's user: (exit code, stdout).
fn exec(container: &str, script: &str) -> (i32, String) {
    let out = std::process::Command::new("docker")
        .args(["exec", "-u", "1000", container, "sh", "-c", script])
        .output()
        .expect("docker exec");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

impl Env {
    /// Whether the developer's container runs with `no-new-privileges`.
    async fn no_new_privileges(&self, dev: &str) -> bool {
        let c = self
            .docker
            .inspect_container(
                &format!("code-server-{dev}"),
                None::<InspectContainerOptions>,
            )
            .await
            .expect("inspect");
        c.host_config
            .and_then(|h| h.security_opt)
            .unwrap_or_default()
            .iter()
            .any(|o| o.starts_with("no-new-privileges"))
    }
}

/// Issue 16.1 and 16.5: anything written under ~ (not only ~/workspace) survives
/// a recreation, and `containers.sudo` is part of the spec: toggling it recreates
/// the container with or without `no-new-privileges`, the home kept.
#[tokio::test]
async fn the_whole_home_survives_recreation_and_sudo_toggles_no_new_privileges() {
    let env = Env::new(2).await;
    let dev = env.dev(1);
    let name = format!("code-server-{dev}");
    let config = Arc::new(env.config(&[1], None));
    let mut r = Reconciler::new(env.docker.clone(), config.clone());
    let mut versions = BTreeMap::new();
    let res = r
        .converge(&env.desired(&config, &versions))
        .await
        .expect("converge");
    assert_eq!(res, [(dev.clone(), Action::Created)]);
    assert!(env.no_new_privileges(&dev).await, "the default keeps it");

    let gitconfig = "[user] name = Dev One";
    let (code, _) = exec(
        &name,
        &format!("echo '{gitconfig}' > ~/.gitconfig && echo 'echo hi' > ~/.bash_history"),
    );
    assert_eq!(code, 0, "the home is writable by the developer");
    let on_volume = config.volume.mount_point.join(&dev).join("home/.gitconfig");
    assert_eq!(
        std::fs::read_to_string(&on_volume).expect("on the volume"),
        format!("{gitconfig}\n")
    );

    // A password rotation recreates the container: ~/.gitconfig is still there.
    let id1 = env.id_of(&dev).await;
    versions.insert(dev.clone(), ("v2".to_string(), "rotated-pw".to_string()));
    let res = r
        .converge(&env.desired(&config, &versions))
        .await
        .expect("converge");
    assert_eq!(
        res,
        [(dev.clone(), Action::Recreated("credentials rotated".into()))]
    );
    assert_ne!(env.id_of(&dev).await, id1, "a new container");
    assert_eq!(
        exec(&name, "cat ~/.gitconfig ~/.bash_history"),
        (0, format!("{gitconfig}\necho hi\n"))
    );

    // containers.sudo = true: a spec change; no-new-privileges is gone.
    for sudo in [true, false] {
        let mut c = env.config(&[1], None);
        c.containers.sudo = sudo;
        let c = Arc::new(c);
        r.set_config(c.clone());
        let res = r
            .converge(&env.desired(&c, &versions))
            .await
            .expect("converge");
        assert_eq!(
            res,
            [(dev.clone(), Action::Recreated("spec changed".into()))],
            "sudo = {sudo}"
        );
        assert_eq!(env.no_new_privileges(&dev).await, !sudo, "sudo = {sudo}");
        assert_eq!(
            exec(&name, "cat ~/.gitconfig"),
            (0, format!("{gitconfig}\n")),
            "sudo = {sudo}"
        );
    }
}

/// The team image gives coder passwordless sudo, as upstream's does: it works
/// with `containers.sudo = true` only; the default's no-new-privileges stops it.
#[tokio::test]
async fn sudo_works_in_the_team_image_only_when_enabled() {
    if !real_code_server_image_or_skip("sudo_works_in_the_team_image_only_when_enabled") {
        return;
    }
    let env = Env::new(2).await;
    let name = format!("code-server-{}", env.dev(1));
    let versions = BTreeMap::new();
    let mut r: Option<Reconciler> = None;
    for sudo in [false, true] {
        let mut c = env.config(&[1], None);
        c.containers.image = REAL_CODE_SERVER_IMAGE.to_string();
        c.containers.sudo = sudo;
        let c = Arc::new(c);
        let r = r.get_or_insert_with(|| Reconciler::new(env.docker.clone(), c.clone()));
        r.set_config(c.clone());
        let res = r
            .converge(&env.desired(&c, &versions))
            .await
            .expect("converge");
        assert!(
            matches!(res[0].1, Action::Created | Action::Recreated(_)),
            "{res:?}"
        );
        let (code, out) = exec(&name, "sudo -n id -u 2>&1");
        if sudo {
            assert_eq!((code, out.trim()), (0, "0"), "sudo works: {out}");
        } else {
            assert_ne!(code, 0, "no-new-privileges stops sudo: {out}");
            assert!(out.contains("no new privileges"), "{out}");
        }
    }
}

/// Issue 16.5: user-level installs live in the home and persist with it. In the team
/// image `pip install --user` passes Debian's PEP 668 guard (for the user site only),
/// its console script lands in ~/.local/bin, which is on PATH, and both still work
/// after the container is recreated.
#[tokio::test]
async fn user_level_installs_persist_in_the_team_image() {
    if !real_code_server_image_or_skip("user_level_installs_persist_in_the_team_image") {
        return;
    }
    let env = Env::new(2).await;
    let dev = env.dev(1);
    let name = format!("code-server-{dev}");
    let mut c = env.config(&[1], None);
    c.containers.image = real_code_server_image();
    let config = Arc::new(c);
    let r = Reconciler::new(env.docker.clone(), config.clone());
    let mut versions = BTreeMap::new();
    let res = r
        .converge(&env.desired(&config, &versions))
        .await
        .expect("converge");
    assert_eq!(res, [(dev.clone(), Action::Created)]);

    // A package from a local directory: no index, no build isolation (offline).
    let install = "mkdir -p ~/src/hello_csagent && cd ~/src/hello_csagent \
        && printf 'def main():\\n    print(\"hello from the user site\")\\n' > hello_csagent.py \
        && printf 'from setuptools import setup\\nsetup(name=\"hello-csagent\", version=\"1.0\", py_modules=[\"hello_csagent\"], entry_points={\"console_scripts\": [\"hello-csagent=hello_csagent:main\"]})\\n' > setup.py \
        && python3 -m pip install --user --no-index --no-build-isolation --quiet . 2>&1 \
        && printf '#!/bin/sh\\necho own tool\\n' > ~/.local/bin/own-tool && chmod +x ~/.local/bin/own-tool \
        && echo installed";
    let (code, out) = exec(&name, install);
    assert_eq!(
        (code, out.trim().lines().last()),
        (0, Some("installed")),
        "{out}"
    );
    let (code, out) = exec(&name, "hello-csagent && own-tool");
    assert_eq!(
        (code, out.as_str()),
        (0, "hello from the user site\nown tool\n")
    );

    // Recreated (a password rotation): the installs are still there and on PATH.
    let before = env.id_of(&dev).await;
    versions.insert(dev.clone(), ("v2".to_string(), "rotated-pw".to_string()));
    r.converge(&env.desired(&config, &versions))
        .await
        .expect("converge");
    assert_ne!(env.id_of(&dev).await, before, "a new container");
    let (code, out) = exec(&name, "hello-csagent && own-tool && echo \"$PATH\"");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("hello from the user site\nown tool\n/home/coder/.local/bin:"),
        "{out}"
    );
}

/// The home is a `Mounts` bind: when its directory is missing (the data volume
/// not mounted, say), Docker refuses the container instead of creating an empty
/// root-owned directory where the home should be, on whatever disk that is.
#[tokio::test]
async fn a_missing_home_is_refused_by_docker_never_created() {
    let env = Env::new(2).await;
    let dev = env.dev(1);
    let config = Arc::new(env.config(&[1], None));
    let desired = env.desired(&config, &BTreeMap::new());
    let dev_dir = config.volume.mount_point.join(&dev);
    std::fs::remove_dir_all(&dev_dir).expect("remove the home");
    let r = Reconciler::new(env.docker.clone(), config.clone());
    let res = r.converge(&desired).await.expect("converge");
    match &res[..] {
        [(d, Action::Failed(why))] if d == &dev => {
            assert!(why.contains("bind source path does not exist"), "{why}")
        }
        other => panic!("expected a failure for {dev}, got {other:?}"),
    }
    assert!(!dev_dir.exists(), "Docker created {}", dev_dir.display());
    r.observe_one(&dev).await;
    let seen = r.status_handle().snapshot()[&dev].clone();
    assert_ne!(seen.state, "running", "{seen:?}");
}

/// A variant of the test image (`FROM` it, plus `extra` Dockerfile lines), tagged
/// `csagent-test/<name>:latest`; a label makes its image id differ.
fn build_variant(name: &str, extra: &str) -> String {
    use std::io::Write;
    let tag = format!("csagent-test/{name}:latest");
    let mut child = std::process::Command::new("docker")
        .args(["build", "-q", "-t", &tag, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("docker build");
    let dockerfile = format!("FROM {TEST_IMAGE}\nLABEL csagent.test-variant={name}\n{extra}\n");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(dockerfile.as_bytes())
        .expect("write Dockerfile");
    let out = child.wait_with_output().expect("docker build");
    assert!(
        out.status.success(),
        "docker build {tag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tag
}

impl Env {
    /// The image id each developer's container runs.
    async fn images(&self, devs: &[String]) -> Vec<Option<String>> {
        let mut out = Vec::new();
        for d in devs {
            out.push(
                self.docker
                    .inspect_container(&format!("code-server-{d}"), None::<InspectContainerOptions>)
                    .await
                    .ok()
                    .and_then(|c| c.image),
            );
        }
        out
    }
}

fn image_id(tag: &str) -> String {
    run("docker", &["image", "inspect", "-f", "{{.Id}}", tag])
        .trim()
        .to_string()
}

/// Issue 19.3: an image change reaches one developer at a time, the next only once
/// the last is healthy on it; a new image that fails its health check halts the
/// rollout and leaves the others on the image they run; a fixed image then goes to
/// the halted developer first. Status shows where it stands.
#[tokio::test]
async fn an_image_change_rolls_out_one_at_a_time_and_a_failing_image_halts_it() {
    let env = Env::new(4).await;
    let good = build_variant("rollout-good", "");
    let bad = build_variant("rollout-bad", r#"ENTRYPOINT ["/bin/sleep", "3600"]"#);
    let devs: Vec<String> = (1..=3).map(|i| env.dev(i)).collect();
    let versions = BTreeMap::new();
    let config_with = |image: &str| {
        let mut c = env.config(&[1, 2, 3], None);
        c.containers.image = image.to_string();
        c.rollout.health_timeout = Duration::from_secs(60);
        Arc::new(c)
    };
    let base = config_with(TEST_IMAGE);
    let mut r = Reconciler::new(env.docker.clone(), base.clone());
    r.converge(&env.desired(&base, &versions))
        .await
        .expect("converge");
    wait_healthy(&r, &devs, Duration::from_secs(60)).await;
    let old = image_id(TEST_IMAGE);
    assert!(
        env.images(&devs)
            .await
            .iter()
            .all(|i| i.as_deref() == Some(old.as_str()))
    );

    // The good image: one pass recreates dev1 only; the others wait for it.
    let c = config_with(&good);
    r.set_config(c.clone());
    let new = image_id(&good);
    let mut order: Vec<String> = Vec::new();
    let start = Instant::now();
    loop {
        let res = r
            .converge(&env.desired(&c, &versions))
            .await
            .expect("converge");
        let recreated: Vec<&String> = res
            .iter()
            .filter(|(_, a)| matches!(a, Action::Recreated(_)))
            .map(|(d, _)| d)
            .collect();
        assert!(recreated.len() <= 1, "one at a time: {res:?}");
        order.extend(recreated.into_iter().cloned());
        let images = env.images(&devs).await;
        // Never more than one developer on the new image and not yet healthy.
        let snap = r.status_handle().snapshot();
        let unsettled = devs
            .iter()
            .zip(&images)
            .filter(|(d, i)| i.as_deref() == Some(new.as_str()) && snap[*d].health != "healthy")
            .count();
        assert!(unsettled <= 1, "{images:?} {snap:#?}");
        if images.iter().all(|i| i.as_deref() == Some(new.as_str())) {
            break;
        }
        if order.len() == 1 && order[0] == devs[0] {
            let waiting = res
                .iter()
                .filter(|(_, a)| matches!(a, Action::Waiting(_)))
                .count();
            assert!(waiting <= 2, "{res:?}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "rollout did not finish: {order:?} {res:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(order, devs, "in config order");
    wait_healthy(&r, &devs, Duration::from_secs(30)).await;
    r.converge(&env.desired(&c, &versions))
        .await
        .expect("converge");
    let st = r.rollout_status();
    assert_eq!((st.state.as_str(), st.done.len()), ("idle", 3), "{st:?}");

    // The bad image: dev1 goes first, turns unhealthy, and the rollout halts.
    let c = config_with(&bad);
    r.set_config(c.clone());
    let ids_before: Vec<Option<String>> =
        futures_util::future::join_all(devs.iter().map(|d| env.id_of(d))).await;
    let start = Instant::now();
    let halted = loop {
        let res = r
            .converge(&env.desired(&c, &versions))
            .await
            .expect("converge");
        for (d, a) in &res {
            if d != &devs[0] {
                assert!(matches!(a, Action::Waiting(_)), "{d}: {a:?}");
            }
        }
        let st = r.rollout_status();
        if let Some(why) = st.halted.clone() {
            break why;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no halt: {st:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        halted.starts_with(&format!("{}'s new container is unhealthy", devs[0])),
        "{halted}"
    );
    // Halted: more passes change nothing; dev2 and dev3 keep their containers.
    for _ in 0..3 {
        r.converge(&env.desired(&c, &versions))
            .await
            .expect("converge");
    }
    let ids_after: Vec<Option<String>> =
        futures_util::future::join_all(devs.iter().map(|d| env.id_of(d))).await;
    assert_ne!(ids_after[0], ids_before[0], "dev1 moved to the bad image");
    assert_eq!(
        ids_after[1..],
        ids_before[1..],
        "the others were not touched"
    );
    assert_eq!(
        env.images(&devs).await[1..],
        [Some(new.clone()), Some(new.clone())]
    );
    let snap = r.status_handle().snapshot();
    assert!(
        snap[&devs[1]]
            .pending_update
            .as_deref()
            .is_some_and(|p| p.starts_with("rollout halted")),
        "{:?}",
        snap[&devs[1]]
    );

    // Back to the good image: the halt lifts, dev1 goes back first; the others
    // already run it and are not touched.
    let c = config_with(&good);
    r.set_config(c.clone());
    let res = r
        .converge(&env.desired(&c, &versions))
        .await
        .expect("converge");
    assert!(matches!(&res[0].1, Action::Recreated(_)), "{res:?}");
    assert!(
        res[1..].iter().all(|(_, a)| *a == Action::Unchanged),
        "{res:?}"
    );
    wait_healthy(&r, &devs, Duration::from_secs(30)).await;
    r.converge(&env.desired(&c, &versions))
        .await
        .expect("converge");
    assert_eq!(r.rollout_status().halted, None);
}

/// `POST /chproj` in the fake code-server: sets a file's project id from the
/// server process itself (what `chattr -p` does), so under whatever seccomp
/// filters the container's process tree carries. Returns (status, body).
async fn chproj(port: u16, path: &str, id: u32) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-w",
            "\n%{http_code}",
            "--max-time",
            "5",
            "-X",
            "POST",
            &format!("http://127.0.0.1:{port}/chproj?path={path}&id={id}"),
        ])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// With `containers.disk_quota` the container starts through `csagent
/// container-init`: the developer cannot move a file out of their project (the
/// ioctl is refused under Docker's own profile, stacked), the image's server
/// still runs and serves; without the quota nothing is wrapped and the same
/// call goes through to the filesystem.
#[tokio::test]
async fn a_disk_quota_keeps_project_ids_out_of_the_developers_reach() {
    let env = Env::new(1).await;
    let name = env.dev(1);
    let port = env.base_port + 1;
    let mut config = env.config(&[1], None);
    config.containers.disk_quota = Some(10 << 30);
    config.containers.init_binary = csagent_bin();
    let config = Arc::new(config);
    let r = Reconciler::new(env.docker.clone(), config.clone());
    let versions = BTreeMap::new();
    let desired = env.desired(&config, &versions);
    // A file of the developer's own in their home (the server runs as uid 1000).
    let probe = config.volume.mount_point.join(&name).join("home/probe");
    std::fs::write(&probe, "x").expect("probe");
    std::os::unix::fs::chown(&probe, Some(1000), Some(1000)).expect("chown probe");

    r.converge(&desired).await.expect("converge");
    wait_healthy(&r, std::slice::from_ref(&name), Duration::from_secs(60)).await;
    let c = env.inspect(&name).await.expect("inspect");
    let entrypoint = c.config.and_then(|c| c.entrypoint).unwrap_or_default();
    assert_eq!(
        entrypoint[..4],
        [
            "/run/csagent-init",
            "container-init",
            "--",
            "/usr/bin/entrypoint.sh"
        ],
        "{entrypoint:?}"
    );
    let (status, body) = chproj(port, "/home/coder/probe", 0).await;
    assert_eq!(
        (status, body.contains("Operation not permitted")),
        (403, true),
        "the project id change is refused: {body}"
    );
    // The server behind the init is the image's: it still logs people in.
    assert_eq!(login(port, &format!("pw-{name}")).await, 302);

    // Without the quota the container is recreated unwrapped, and the same
    // call reaches the filesystem (0 is the file's project already).
    let mut plain = (*config).clone();
    plain.containers.disk_quota = None;
    let plain = Arc::new(plain);
    let r = Reconciler::new(env.docker.clone(), plain.clone());
    r.converge(&env.desired(&plain, &versions))
        .await
        .expect("converge");
    wait_healthy(&r, std::slice::from_ref(&name), Duration::from_secs(60)).await;
    let (status, body) = chproj(port, "/home/coder/probe", 0).await;
    assert_eq!((status, body.as_str()), (200, "changed"));
}
