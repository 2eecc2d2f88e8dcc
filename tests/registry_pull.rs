//! Pulls from a private registry with ECR credentials, against real parts: Debian's
//! `docker-registry` on 127.0.0.1 with htpasswd auth (plain HTTP: dockerd allows
//! 127.0.0.0/8 registries without TLS), moto's ECR for GetAuthorizationToken (each
//! test runs its own moto, recording requests, to count the calls), and dockerd.
//!
//! moto's token is `base64("AWS:<account>-auth-token")`; the registry's htpasswd
//! holds that password, so the token the agent gets is the one the registry takes.
//! `containers.registry_auth = "ecr"` forces ECR auth on the 127.0.0.1 host.

mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::PasswordHasher;
use base64::Engine;
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{InspectContainerOptions, PushImageOptionsBuilder};
use common::*;
use csagent::config::Config;
use csagent::containers::{Action, ContainerCredentials, DesiredDeveloper, EcrTokens, Reconciler};
use futures_util::StreamExt;

const ECR_TARGET: &str = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken";

/// `docker-registry serve` on a free 127.0.0.1 port, htpasswd user `AWS` with
/// `password`; killed (and its storage removed) on drop.
struct LocalRegistry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl LocalRegistry {
    fn start(password: &str) -> LocalRegistry {
        let bin = which("docker-registry").expect(
            "docker-registry not found: apt-get install docker-registry (scripts/lib/services.sh does)",
        );
        let htpasswd = which("htpasswd").expect(
            "htpasswd not found: apt-get install apache2-utils (scripts/lib/services.sh does)",
        );
        let dir = tempfile::Builder::new()
            .prefix("csagent-registry-")
            .tempdir()
            .expect("tempdir");
        // bcrypt is the only hash the registry's htpasswd auth accepts.
        let entry = run(&htpasswd, &["-Bbn", "AWS", password]);
        std::fs::write(dir.path().join("htpasswd"), entry.trim()).expect("htpasswd file");
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}/data\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: csagent-test\n\
             auth:\n  htpasswd:\n    realm: csagent-test\n    path: {root}/htpasswd\n",
            root = dir.path().display()
        );
        std::fs::write(dir.path().join("config.yml"), config).expect("registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = Command::new(bin)
            .args(["serve", path_str(&dir.path().join("config.yml"))])
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let registry = LocalRegistry {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        // 401 without credentials: up, and asking for them.
        while http_get_status(port, "/v2/") != Some(401) {
            assert!(
                Instant::now() < deadline,
                "registry did not answer on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        registry
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(cmd: &str) -> Option<String> {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// The test image plus one layer of 2 MiB random bytes (so a pull downloads
/// something: the base layers are on the host already), pushed as `reference`
/// with `password`, then removed locally so the agent must pull it.
async fn push_unique_image(docker: &Docker, reference: &str, password: &str) {
    let ctx = tempfile::tempdir().expect("build context");
    let blob: Vec<u8> = (0..2 * 1024 * 1024).map(|_| rand::random::<u8>()).collect();
    std::fs::write(ctx.path().join("blob"), blob).expect("blob");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {TEST_IMAGE}\nCOPY blob /opt/csagent-pull-test\n"),
    )
    .expect("Dockerfile");
    run(
        "docker",
        &["build", "-q", "-t", reference, path_str(ctx.path())],
    );
    let (name, tag) = reference.rsplit_once(':').expect("tagged reference");
    let creds = DockerCredentials {
        username: Some("AWS".into()),
        password: Some(password.into()),
        serveraddress: Some(name.split('/').next().unwrap_or_default().into()),
        ..Default::default()
    };
    let mut push = docker.push_image(
        name,
        Some(PushImageOptionsBuilder::new().tag(tag).build()),
        Some(creds),
    );
    while let Some(item) = push.next().await {
        item.unwrap_or_else(|e| panic!("push {reference}: {e}"));
    }
    run("docker", &["rmi", reference]);
}

/// The password moto's GetAuthorizationToken hands out (asked once before the
/// counting starts).
async fn moto_ecr_password(moto: &MotoServer) -> String {
    let ecr = aws_sdk_ecr::Client::new(&moto.sdk_config().await);
    let out = ecr
        .get_authorization_token()
        .send()
        .await
        .expect("moto GetAuthorizationToken");
    let token = out.authorization_data()[0]
        .authorization_token()
        .expect("token")
        .to_string();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token)
        .expect("base64");
    let text = String::from_utf8(decoded).expect("utf8");
    text.split_once(':').expect("AWS:password").1.to_string()
}

fn token_calls(moto: &MotoServer) -> usize {
    moto.recording()
        .iter()
        .filter(|entry| {
            entry["headers"].as_object().is_some_and(|h| {
                h.iter().any(|(k, v)| {
                    k.eq_ignore_ascii_case("x-amz-target") && v.as_str() == Some(ECR_TARGET)
                })
            })
        })
        .count()
}

struct Env {
    docker: Docker,
    dir: tempfile::TempDir,
    prefix: String,
    base_port: u16,
    subnet: String,
    network: String,
    /// What the test pushed (and the agent pulled): removed after the containers.
    images: std::sync::Mutex<Vec<String>>,
}

impl Drop for Env {
    fn drop(&mut self) {
        drop(Leftovers {
            project: self.prefix.clone(),
            network: self.network.clone(),
            subnet: self.subnet.clone(),
            mount: None,
        });
        for image in self.images.lock().map(|i| i.clone()).unwrap_or_default() {
            let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
        }
    }
}

impl Env {
    async fn new() -> Env {
        let prefix = unique("r").replace('-', "");
        Env {
            docker: docker().await,
            dir: tempfile::tempdir().expect("tempdir"),
            base_port: port_block(3),
            subnet: test_subnet(),
            network: format!("csagent-{prefix}"),
            prefix,
            images: Default::default(),
        }
    }

    fn dev(&self, i: usize) -> String {
        format!("{}-dev{i}", self.prefix)
    }

    fn config(&self, image: &str, pull: &str) -> Arc<Config> {
        let mut toml = format!(
            "project = \"{prefix}\"\n[volume]\ndevice = \"/dev/null\"\nmount_point = \"{root}/data\"\n\
             [containers]\nimage = \"{image}\"\npull = \"{pull}\"\nregistry_auth = \"ecr\"\n\
             cpus = 0.25\nmemory = \"512MiB\"\nmemory_reservation = \"256MiB\"\n\
             network = \"{net}\"\nsubnet = \"{subnet}\"\nhealth_interval = \"1s\"\nhealth_start_period = \"0s\"\n\
             [agent]\nruntime_dir = \"{root}/run\"\nstate_dir = \"{root}/state\"\n",
            root = self.dir.path().display(),
            prefix = self.prefix,
            net = self.network,
            subnet = self.subnet,
        );
        for i in 1..=2 {
            toml.push_str(&format!(
                "[[developer]]\nname = \"{}\"\nport = {}\n",
                self.dev(i),
                self.base_port + i as u16
            ));
        }
        Arc::new(Config::from_toml(&toml, Path::new("test.toml")).expect("test config is valid"))
    }

    fn desired(&self, config: &Config) -> Vec<DesiredDeveloper> {
        config
            .developers
            .iter()
            .map(|d| {
                let key_dir = config.agent.runtime_dir.join(&d.name);
                std::fs::create_dir_all(&key_dir).expect("key dir");
                std::fs::create_dir_all(config.volume.mount_point.join(&d.name).join("home"))
                    .expect("home dir");
                DesiredDeveloper {
                    developer: d.clone(),
                    credentials: Ok(ContainerCredentials {
                        hashed_password: Argon2::default()
                            .hash_password(format!("pw-{}", d.name).as_bytes())
                            .expect("hash")
                            .to_string(),
                        password_version: "v1".into(),
                        key_dir,
                    }),
                }
            })
            .collect()
    }

    /// Container id and image of each developer's container.
    async fn containers(&self) -> Vec<Option<(String, String)>> {
        let mut out = Vec::new();
        for i in 1..=2 {
            let c = self
                .docker
                .inspect_container(
                    &format!("code-server-{}", self.dev(i)),
                    None::<InspectContainerOptions>,
                )
                .await
                .ok();
            out.push(c.and_then(|c| Some((c.id?, c.config?.image?))));
        }
        out
    }

    async fn wait_healthy(&self, r: &Reconciler) {
        let start = Instant::now();
        let devs = [self.dev(1), self.dev(2)];
        loop {
            for d in &devs {
                r.observe_one(d).await;
            }
            let snap = r.status_handle().snapshot();
            if devs
                .iter()
                .all(|d| snap.get(d).is_some_and(|s| s.health == "healthy"))
            {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "not healthy: {snap:#?}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// Every developer failed with a message that holds each of `says` (the image
/// first), in the converge result and in status; the running containers are the
/// same ones.
async fn assert_failed_untouched(
    env: &Env,
    r: &Reconciler,
    res: &[(String, Action)],
    says: &[&str],
    before: &[Option<(String, String)>],
) {
    assert_eq!(res.len(), 2, "{res:?}");
    for (dev, action) in res {
        match action {
            Action::Failed(e) => {
                for s in says {
                    assert!(e.contains(s), "{dev}: {e:?} does not say {s:?}");
                }
            }
            other => panic!("{dev}: expected a failure, got {other:?}"),
        }
    }
    let status = r.status_handle().snapshot();
    for i in 1..=2 {
        let problem = status[&env.dev(i)].problem.clone().unwrap_or_default();
        for s in says {
            assert!(problem.contains(s), "status of dev{i}: {problem:?}");
        }
    }
    // Status keeps the image and the pull's error side by side.
    let pulled = r.pull_status();
    assert_eq!(pulled.image, says[0]);
    let error = pulled.last_error().unwrap_or_default();
    for s in &says[1..] {
        assert!(
            error.contains(s),
            "last pull error {error:?} does not say {s:?}"
        );
    }
    assert_eq!(
        env.containers().await,
        before,
        "running containers are never touched by a failed pull"
    );
}

#[tokio::test]
async fn pulls_with_an_ecr_token_once_cached_and_names_a_missing_tag() {
    let env = Env::new().await;
    let moto = MotoServer::start(&[("MOTO_ENABLE_RECORDING", "true")]);
    let password = moto_ecr_password(&moto).await;
    let registry = LocalRegistry::start(&password);
    let repo = format!(
        "{}/csagent-test-{}/code-server",
        registry.host(),
        env.prefix
    );
    let image = format!("{repo}:t1");
    env.images.lock().expect("images").push(image.clone());
    push_unique_image(&env.docker, &image, &password).await;
    moto.reset_recording();

    let config = env.config(&image, "if-not-present");
    let mut r = Reconciler::new(env.docker.clone(), config.clone())
        .with_ecr(EcrTokens::new(&moto.sdk_config().await));
    let started = Instant::now();
    let res = r.converge(&env.desired(&config)).await.expect("converge");
    let pull_and_create = started.elapsed();
    assert!(
        res.iter().all(|(_, a)| *a == Action::Created),
        "created from the pulled image: {res:?}"
    );
    env.wait_healthy(&r).await;
    let running = env.containers().await;
    assert!(
        running
            .iter()
            .all(|c| c.as_ref().is_some_and(|(_, i)| *i == image)),
        "{running:?}"
    );
    let pulled = r.pull_status();
    assert_eq!(pulled.last_error(), None);
    assert_eq!(pulled.registry, registry.host());
    assert_eq!(pulled.auth, "ecr");
    let counts = pulled.last_progress.expect("counts of the pull");
    assert!(
        counts.layers_total >= 2 && counts.layers_done == counts.layers_total,
        "{counts:?}"
    );
    assert!(
        counts.bytes_total >= 2 * 1024 * 1024 && counts.bytes_done == counts.bytes_total,
        "the new layer was downloaded: {counts:?}"
    );
    eprintln!("pull (2 MiB layer) and create of 2 developers: {pull_and_create:?}");

    // Pull on every pass: the token is asked for once.
    let config = env.config(&image, "always");
    r.set_config(config.clone());
    for _ in 0..3 {
        let res = r.converge(&env.desired(&config)).await.expect("converge");
        assert!(res.iter().all(|(_, a)| *a == Action::Unchanged), "{res:?}");
    }
    assert_eq!(
        token_calls(&moto),
        1,
        "one GetAuthorizationToken for 4 pulls"
    );

    // A tag that is not there: a per-developer error naming it; nothing stops.
    let missing = format!("{repo}:no-such-tag");
    let config = env.config(&missing, "if-not-present");
    r.set_config(config.clone());
    let res = r.converge(&env.desired(&config)).await.expect("converge");
    assert_failed_untouched(
        &env,
        &r,
        &res,
        &[&missing, "tag no-such-tag", "not found", &registry.host()],
        &running,
    )
    .await;
    assert_eq!(
        token_calls(&moto),
        1,
        "a missing tag is no reason for a new token"
    );
}

#[tokio::test]
async fn refused_credentials_fail_per_developer_and_leave_containers_running() {
    let env = Env::new().await;
    let moto = MotoServer::start(&[("MOTO_ENABLE_RECORDING", "true")]);
    let password = moto_ecr_password(&moto).await;
    let good = LocalRegistry::start(&password);
    // A registry whose password is not the ECR token.
    let other = LocalRegistry::start("not-the-ecr-token");
    let image = format!("{}/csagent-test-{}/code-server:t1", good.host(), env.prefix);
    let refused = format!(
        "{}/csagent-test-{}/code-server:t1",
        other.host(),
        env.prefix
    );
    env.images
        .lock()
        .expect("images")
        .extend([image.clone(), refused.clone()]);
    push_unique_image(&env.docker, &image, &password).await;
    push_unique_image(&env.docker, &refused, "not-the-ecr-token").await;
    moto.reset_recording();

    let config = env.config(&image, "if-not-present");
    let mut r = Reconciler::new(env.docker.clone(), config.clone())
        .with_ecr(EcrTokens::new(&moto.sdk_config().await));
    let res = r.converge(&env.desired(&config)).await.expect("converge");
    assert!(res.iter().all(|(_, a)| *a == Action::Created), "{res:?}");
    env.wait_healthy(&r).await;
    let running = env.containers().await;
    assert_eq!(token_calls(&moto), 1);

    let config = env.config(&refused, "always");
    r.set_config(config.clone());
    let res = r.converge(&env.desired(&config)).await.expect("converge");
    assert_failed_untouched(
        &env,
        &r,
        &res,
        &[
            &refused,
            &format!("registry {} refused the ECR token", other.host()),
        ],
        &running,
    )
    .await;
    assert_eq!(
        token_calls(&moto),
        2,
        "the refused cached token is replaced once, not in a loop"
    );
    // Still healthy, and a second pass changes nothing either.
    env.wait_healthy(&r).await;
    r.converge(&env.desired(&config)).await.expect("converge");
    assert_eq!(env.containers().await, running);
}
