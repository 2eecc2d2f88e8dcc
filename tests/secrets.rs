//! Developer credentials from Secrets Manager (moto) with rotation pickup, and how
//! they reach a container (the local test image): the argon2id hash at `/login`,
//! the Claude key file on a tmpfs, rewritten in place for a running container.
//!
//! Every test uses its own project name, so they share one moto; the API-call
//! count test runs its own moto with request recording. All tracing output of
//! this binary is captured and each test checks its secret values are not in it.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use argon2::password_hash::PasswordVerifier;
use argon2::password_hash::phc::PasswordHash;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::interceptors::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_secretsmanager::config::{ConfigBag, Intercept, RuntimeComponents};
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::CreateContainerOptionsBuilder;
use common::*;
use csagent::Secret;
use csagent::config::{ApplyPolicy, Config};
use csagent::secrets::{
    ApiCalls, ApplyDecision, ClaudeKeyState, CredentialError, CredentialFiles, Credentials,
    DeveloperSecrets, PLACEHOLDER_KEY, RotationEvent, SecretKind, SecretsError, SecretsManager,
    decide, image_command, is_idle,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

// ---------------------------------------------------------------------------
// Everything the tracing subscriber prints, for the "no value in logs" checks.
// ---------------------------------------------------------------------------

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once per binary) a subscriber that keeps every event at every level,
/// from every crate, in memory.
fn capture_logs() {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = buf.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
            .with_ansi(false)
            .with_writer(move || Capture(w.clone()))
            .init();
        buf
    });
}

fn logs() -> String {
    let buf = LOGS.get().expect("capture_logs() first");
    String::from_utf8_lossy(&buf.lock().expect("log buffer")).into_owned()
}

/// None of `values` is in the captured logs or in any of `outputs` (status JSON,
/// Debug output, error messages). The message never prints the value itself.
fn assert_no_value_leaked(values: &[String], outputs: &[String]) {
    let logs = logs();
    assert!(
        logs.len() > 1000,
        "the capture holds the tests' logs ({} bytes)",
        logs.len()
    );
    for (i, v) in values.iter().enumerate() {
        assert!(v.len() >= 12, "test values are long enough to be unique");
        assert!(
            !logs.contains(v.as_str()),
            "secret value #{i} appears in the tracing output"
        );
        for (j, out) in outputs.iter().enumerate() {
            assert!(
                !out.contains(v.as_str()),
                "secret value #{i} appears in output #{j}"
            );
        }
    }
}

/// What a test can compare against logs and outputs without revealing values.
fn outputs_of(m: &SecretsManager) -> Vec<String> {
    let mut out = vec![
        serde_json::to_string(&m.status()).expect("status is JSON"),
        format!("{:?}", m.status()),
        format!("{m:?}"),
    ];
    for d in m.status().developers.keys() {
        out.push(format!("{:?}", m.get(d)));
    }
    out
}

// ---------------------------------------------------------------------------
// SDK interceptors: an honest count of requests, and a role without batch rights.
// ---------------------------------------------------------------------------

/// Counts every HTTP request the client sends, by operation (`X-Amz-Target`).
#[derive(Debug, Clone, Default)]
struct CallCounter(Arc<Mutex<BTreeMap<String, u64>>>);

impl CallCounter {
    fn get(&self, op: &str) -> u64 {
        self.0
            .lock()
            .expect("counter")
            .get(op)
            .copied()
            .unwrap_or(0)
    }
    fn total(&self) -> u64 {
        self.0.lock().expect("counter").values().sum()
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let target = context
            .request()
            .headers()
            .get("x-amz-target")
            .unwrap_or("unknown");
        let op = target.rsplit('.').next().unwrap_or(target).to_string();
        *self.0.lock().expect("counter").entry(op).or_default() += 1;
        Ok(())
    }
}

/// Answers every BatchGetSecretValue with the AccessDeniedException a role
/// without `secretsmanager:BatchGetSecretValue` gets.
#[derive(Debug, Default)]
struct DenyBatch {
    batch_in_flight: Mutex<bool>,
}

impl Intercept for DenyBatch {
    fn name(&self) -> &'static str {
        "DenyBatch"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let is_batch = context.request().headers().get("x-amz-target")
            == Some("secretsmanager.BatchGetSecretValue");
        *self.batch_in_flight.lock().expect("flag") = is_batch;
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if *self.batch_in_flight.lock().expect("flag") {
            let response = context.response_mut();
            *response.status_mut() = 400u16.try_into()?;
            response.headers_mut().remove("content-length");
            response
                .headers_mut()
                .insert("x-amzn-errortype", "AccessDeniedException");
            *response.body_mut() = concat!(
                r#"{"__type":"AccessDeniedException","message":"User: arn:aws:iam::123456789012:role/csagent "#,
                r#"is not authorized to perform: secretsmanager:BatchGetSecretValue"}"#
            )
            .into();
        }
        Ok(())
    }
}

/// A client on `sdk` whose requests `counter` counts; with `deny_batch`, a role
/// that may not call BatchGetSecretValue.
fn client_with(sdk: &aws_config::SdkConfig, counter: &CallCounter, deny_batch: bool) -> Client {
    let mut builder =
        aws_sdk_secretsmanager::config::Builder::from(sdk).interceptor(counter.clone());
    if deny_batch {
        builder = builder.interceptor(DenyBatch::default());
    }
    Client::from_conf(builder.build())
}

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// A config for `devs` developers dev1..devN of a fresh project.
fn config_for(project: &str, devs: usize, extra: &str) -> Config {
    Config::from_toml(
        &format!(
            "project = \"{project}\"\n[developers]\ncount = {devs}\n[volume]\ndevice = \"/dev/null\"\n{extra}\n"
        ),
        Path::new("secrets-test.toml"),
    )
    .expect("test config is valid")
}

/// A value nobody else uses, long and random enough that finding it in a log
/// can only mean it leaked.
fn value(prefix: &str) -> String {
    format!(
        "{prefix}-{:016x}{:08x}",
        rand::random::<u64>(),
        rand::random::<u32>()
    )
}

fn password_name(c: &Config, dev: &str) -> String {
    c.render(&c.secrets.password_name, dev)
}

fn key_name(c: &Config, dev: &str) -> String {
    c.render(&c.secrets.claude_api_key_name, dev)
}

/// Creates the secret; returns its first version id.
async fn create(sm: &Client, name: &str, value: &str) -> String {
    sm.create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e:?}"))
        .version_id()
        .expect("version id")
        .to_string()
}

/// PutSecretValue: a new AWSCURRENT version; returns its id.
async fn rotate(sm: &Client, name: &str, value: &str) -> String {
    sm.put_secret_value()
        .secret_id(name)
        .secret_string(value)
        .send()
        .await
        .unwrap_or_else(|e| panic!("rotate {name}: {e:?}"))
        .version_id()
        .expect("version id")
        .to_string()
}

/// What was stored for one developer.
#[derive(Clone)]
struct Stored {
    password: String,
    password_version: String,
    key: String,
    key_version: String,
}

/// Creates both secrets for every developer of `c`; returns them by developer.
async fn create_all(sm: &Client, c: &Config) -> BTreeMap<String, Stored> {
    let mut out = BTreeMap::new();
    for d in &c.developers {
        let password = value("pw");
        let key = value("sk-ant-api03");
        let password_version = create(sm, &password_name(c, &d.name), &password).await;
        let key_version = create(sm, &key_name(c, &d.name), &key).await;
        out.insert(
            d.name.clone(),
            Stored {
                password,
                password_version,
                key,
                key_version,
            },
        );
    }
    out
}

fn values_of(stored: &BTreeMap<String, Stored>) -> Vec<String> {
    stored
        .values()
        .flat_map(|s| [s.password.clone(), s.key.clone()])
        .collect()
}

fn creds<'a>(m: &'a SecretsManager, dev: &str) -> &'a Credentials {
    match m.get(dev) {
        Some(DeveloperSecrets::Ready(c)) => c,
        other => panic!("{dev} is not ready: {other:?}"),
    }
}

fn assert_matches_stored(m: &SecretsManager, dev: &str, s: &Stored) {
    let c = creds(m, dev);
    assert!(c.password.expose() == s.password, "{dev}: password value");
    assert_eq!(c.password_version, s.password_version, "{dev}");
    assert!(
        c.claude_key.as_ref().map(Secret::expose) == Some(s.key.as_str()),
        "{dev}: key value"
    );
    assert_eq!(
        c.claude_key_version.as_deref(),
        Some(s.key_version.as_str())
    );
}

/// The X-Amz-Target of every request in moto's own recording.
fn recorded_targets(moto: &MotoServer) -> Vec<String> {
    moto.recording()
        .iter()
        .filter_map(|entry| {
            entry["headers"].as_object().and_then(|h| {
                h.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("x-amz-target"))
                    .and_then(|(_, v)| v.as_str().map(str::to_string))
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Secrets Manager: fetch, watch, failures
// ---------------------------------------------------------------------------

#[tokio::test]
async fn eight_developers_are_read_in_one_batch_call() {
    capture_logs();
    // Our own moto, recording requests, so its log holds only this test's calls.
    let moto = MotoServer::start(&[("MOTO_ENABLE_RECORDING", "true")]);
    let sdk = moto.sdk_config().await;
    let setup = Client::new(&sdk);
    let config = config_for(&unique("proj"), 8, "");
    let stored = create_all(&setup, &config).await;
    moto.reset_recording();

    let counter = CallCounter::default();
    let mut m = SecretsManager::new(client_with(&sdk, &counter, false), &config);
    m.fetch_all().await.expect("initial fetch");

    for (dev, s) in &stored {
        assert_matches_stored(&m, dev, s);
    }
    let st = m.status();
    assert_eq!(
        st.api_calls,
        ApiCalls {
            batch_get_secret_value: 1,
            get_secret_value: 0,
            failed: 0
        },
        "our own counters"
    );
    assert_eq!(counter.get("BatchGetSecretValue"), 1, "SDK interceptor");
    assert_eq!(counter.total(), 1, "no other request: {:?}", counter.0);
    assert_eq!(
        recorded_targets(&moto),
        vec!["secretsmanager.BatchGetSecretValue".to_string()],
        "moto's own request log"
    );
    assert_eq!(st.batch_supported, Some(true));
    assert_eq!(st.developers.len(), 8);
    for d in st.developers.values() {
        assert!(d.ready && d.error.is_none());
        assert_eq!(d.claude_key, ClaudeKeyState::Set);
        assert!(d.pending_rotation.is_none());
    }

    // Steady state: one poll is one more call, and nothing rotated.
    assert!(m.poll().await.is_empty());
    assert_eq!(m.status().api_calls.batch_get_secret_value, 2);
    assert_eq!(counter.total(), 2);
    assert_eq!(recorded_targets(&moto).len(), 2);

    assert_no_value_leaked(&values_of(&stored), &outputs_of(&m));
}

#[tokio::test]
async fn forty_developers_take_four_batch_calls_per_poll() {
    capture_logs();
    let sdk = aws().await;
    let setup = Client::new(&sdk);
    let config = config_for(&unique("proj"), 40, "");
    let stored = create_all(&setup, &config).await;

    let counter = CallCounter::default();
    let mut m = SecretsManager::new(client_with(&sdk, &counter, false), &config);
    m.fetch_all().await.expect("initial fetch");
    assert_eq!(counter.get("BatchGetSecretValue"), 4, "ceil(80 / 20)");
    assert_eq!(counter.total(), 4);
    for (dev, s) in &stored {
        assert_matches_stored(&m, dev, s);
    }
    assert!(m.poll().await.is_empty());
    assert_eq!(counter.get("BatchGetSecretValue"), 8);
    assert_eq!(m.status().api_calls.batch_get_secret_value, 8);
    assert_eq!(m.status().api_calls.get_secret_value, 0);

    assert_no_value_leaked(&values_of(&stored), &outputs_of(&m));
}

#[tokio::test]
async fn rotation_is_seen_in_one_poll_for_that_developer_only() {
    capture_logs();
    let sdk = aws().await;
    let setup = Client::new(&sdk);
    let config = config_for(&unique("proj"), 8, "");
    let mut stored = create_all(&setup, &config).await;
    let mut m = SecretsManager::new(Client::new(&sdk), &config);
    m.fetch_all().await.expect("initial fetch");
    assert!(m.poll().await.is_empty(), "no rotation yet");

    // The hash is computed once per password version.
    let hash1 = m.password_hash("dev3").expect("hash");
    assert_eq!(
        m.password_hash("dev3").expect("hash"),
        hash1,
        "cached (a new hash would have a new salt)"
    );

    let old = stored["dev3"].clone();
    let new_password = value("pw");
    let new_version = rotate(&setup, &password_name(&config, "dev3"), &new_password).await;
    let before_poll = SystemTime::now();
    let events = m.poll().await;
    assert_eq!(events.len(), 1, "{events:?}");
    let RotationEvent {
        developer,
        which,
        old_version,
        new_version: seen_version,
        seen_at,
    } = events[0].clone();
    assert_eq!(developer, "dev3");
    assert_eq!(which, SecretKind::Password);
    assert_eq!(old_version.as_deref(), Some(old.password_version.as_str()));
    assert_eq!(seen_version, new_version);
    assert!(seen_at >= before_poll);

    let s3 = stored.get_mut("dev3").expect("dev3");
    s3.password = new_password.clone();
    s3.password_version = new_version.clone();
    for (dev, s) in &stored {
        assert_matches_stored(&m, dev, s);
    }
    let st = m.status();
    for (dev, d) in &st.developers {
        if dev == "dev3" {
            let p = d.pending_rotation.as_ref().expect("dev3 pending");
            assert_eq!(p.which, vec![SecretKind::Password]);
        } else {
            assert!(d.pending_rotation.is_none(), "{dev} untouched");
        }
    }

    // The new hash verifies the new password only.
    let hash2 = m.password_hash("dev3").expect("hash");
    assert_ne!(hash2, hash1);
    let parsed = PasswordHash::new(&hash2).expect("PHC");
    let argon = argon2::Argon2::default();
    assert!(
        argon
            .verify_password(new_password.as_bytes(), &parsed)
            .is_ok()
    );
    assert!(
        argon
            .verify_password(old.password.as_bytes(), &parsed)
            .is_err()
    );

    // Default policy is immediate; applying clears the pending mark.
    assert_eq!(
        m.decide_for("dev3", SystemTime::now(), Some(false)),
        Some(ApplyDecision::ApplyNow)
    );
    assert_eq!(m.decide_for("dev4", SystemTime::now(), None), None);
    let applied = creds(&m, "dev3").clone();
    m.mark_applied("dev3", &applied);
    assert!(m.status().developers["dev3"].pending_rotation.is_none());

    // A key rotation is its own event, for its own developer.
    let new_key = value("sk-ant-api03");
    let key_version = rotate(&setup, &key_name(&config, "dev5"), &new_key).await;
    let events = m.poll().await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].developer, "dev5");
    assert_eq!(events[0].which, SecretKind::ClaudeKey);
    assert_eq!(events[0].new_version, key_version);
    assert!(creds(&m, "dev5").claude_key.as_ref().map(Secret::expose) == Some(new_key.as_str()));
    assert!(
        m.status().developers["dev5"].pending_rotation.is_none(),
        "a key rotation waits for no recreation: its file is rewritten in place: {:?}",
        m.status().developers["dev5"]
    );
    assert_eq!(m.pending_since("dev5"), None);
    assert!(m.poll().await.is_empty(), "seen once, reported once");

    // Our own lines name versions by their first 8 characters (the SDK's TRACE
    // lines print whole response structs, values redacted).
    let ours: Vec<String> = logs()
        .lines()
        .filter(|l| l.contains("csagent::secrets"))
        .map(str::to_string)
        .collect();
    assert!(
        ours.iter().any(|l| l.contains("rotation detected")
            && l.contains("developer=dev3")
            && l.contains(&new_version[..8])),
        "rotation logged with the short version id"
    );
    assert!(!ours.iter().any(|l| l.contains(&new_version)));
    let mut values = values_of(&stored);
    values.extend([old.password, new_key]);
    assert_no_value_leaked(&values, &outputs_of(&m));
}

#[tokio::test]
async fn missing_password_secret_isolates_one_developer() {
    capture_logs();
    let sdk = aws().await;
    let setup = Client::new(&sdk);
    let config = config_for(&unique("proj"), 4, "");
    let mut stored = BTreeMap::new();
    for d in ["dev1", "dev2", "dev3", "dev4"] {
        let (p, k) = (value("pw"), value("sk-ant-api03"));
        let pv = if d == "dev2" {
            String::new()
        } else {
            create(&setup, &password_name(&config, d), &p).await
        };
        let kv = create(&setup, &key_name(&config, d), &k).await;
        stored.insert(
            d.to_string(),
            Stored {
                password: p,
                password_version: pv,
                key: k,
                key_version: kv,
            },
        );
    }
    let mut m = SecretsManager::new(Client::new(&sdk), &config);
    m.fetch_all().await.expect("the others were read");

    let name = password_name(&config, "dev2");
    match m.get("dev2") {
        Some(DeveloperSecrets::Failed { reason }) => {
            assert!(
                reason.contains(&name) && reason.contains("does not exist"),
                "{reason}"
            );
        }
        other => panic!("dev2 should have failed: {other:?}"),
    }
    for d in ["dev1", "dev3", "dev4"] {
        assert_matches_stored(&m, d, &stored[d]);
    }
    let st = m.status();
    assert!(!st.developers["dev2"].ready);
    assert!(
        st.developers["dev2"]
            .error
            .as_deref()
            .is_some_and(|e| e.contains(&name))
    );
    assert!(st.developers["dev1"].ready && st.developers["dev1"].error.is_none());
    assert_eq!(
        st.consecutive_failures, 0,
        "a missing secret is not an outage"
    );
    assert!(matches!(
        m.password_hash("dev2"),
        Err(SecretsError::NotReady { .. })
    ));
    assert!(m.poll().await.is_empty());
    assert!(matches!(
        m.get("dev2"),
        Some(DeveloperSecrets::Failed { .. })
    ));

    // The secret appears: dev2 becomes ready with an event, nobody else moves.
    let p2 = stored["dev2"].password.clone();
    let v2 = create(&setup, &name, &p2).await;
    let events = m.poll().await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (
            events[0].developer.as_str(),
            events[0].which,
            events[0].old_version.as_deref()
        ),
        ("dev2", SecretKind::Password, None)
    );
    stored.get_mut("dev2").expect("dev2").password_version = v2;
    for (dev, s) in &stored {
        assert_matches_stored(&m, dev, s);
    }
    assert_no_value_leaked(&values_of(&stored), &outputs_of(&m));
}

#[tokio::test]
async fn placeholder_empty_and_missing_claude_keys() {
    capture_logs();
    let sdk = aws().await;
    let setup = Client::new(&sdk);
    let config = config_for(&unique("proj"), 4, "");
    let mut values = Vec::new();
    for d in ["dev1", "dev2", "dev3", "dev4"] {
        let p = value("pw");
        create(&setup, &password_name(&config, d), &p).await;
        values.push(p);
    }
    create(&setup, &key_name(&config, "dev1"), PLACEHOLDER_KEY).await;
    create(&setup, &key_name(&config, "dev2"), "   ").await;
    // dev3: no key secret at all.
    let real = value("sk-ant-api03");
    create(&setup, &key_name(&config, "dev4"), &real).await;
    values.push(real.clone());

    let mut m = SecretsManager::new(Client::new(&sdk), &config);
    m.fetch_all().await.expect("fetch");
    let st = m.status();
    let expect = [
        ("dev1", ClaudeKeyState::Placeholder),
        ("dev2", ClaudeKeyState::Placeholder),
        ("dev3", ClaudeKeyState::Missing),
        ("dev4", ClaudeKeyState::Set),
    ];
    for (dev, state) in expect {
        assert!(st.developers[dev].ready, "{dev} still gets a container");
        assert_eq!(st.developers[dev].claude_key, state, "{dev}");
        assert_eq!(
            creds(&m, dev).claude_key.is_some(),
            state == ClaudeKeyState::Set,
            "{dev}"
        );
    }
    let json = serde_json::to_value(&st).expect("json");
    assert_eq!(json["developers"]["dev1"]["claude_key"], "placeholder");
    assert_eq!(json["developers"]["dev3"]["claude_key"], "missing");
    assert_eq!(json["developers"]["dev4"]["claude_key"], "set");

    // A real key replaces the placeholder: one event; the real one becomes a placeholder: one event.
    let k1 = value("sk-ant-api03");
    values.push(k1.clone());
    let v1 = rotate(&setup, &key_name(&config, "dev1"), &k1).await;
    rotate(&setup, &key_name(&config, "dev4"), PLACEHOLDER_KEY).await;
    let mut events = m.poll().await;
    events.sort_by(|a, b| a.developer.cmp(&b.developer));
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        (events[0].developer.as_str(), events[0].which),
        ("dev1", SecretKind::ClaudeKey)
    );
    assert_eq!(events[0].new_version, v1);
    assert_eq!(
        (events[1].developer.as_str(), events[1].which),
        ("dev4", SecretKind::ClaudeKey)
    );
    assert!(creds(&m, "dev1").claude_key.as_ref().map(Secret::expose) == Some(k1.as_str()));
    assert!(creds(&m, "dev4").claude_key.is_none());
    assert_eq!(
        m.status().developers["dev4"].claude_key,
        ClaudeKeyState::Placeholder
    );
    assert!(logs().contains("no Claude API key"));
    assert_no_value_leaked(&values, &outputs_of(&m));
}

#[tokio::test]
async fn outage_keeps_last_values_and_recovers() {
    capture_logs();
    let moto_addr = moto_url()
        .trim_start_matches("http://")
        .parse()
        .expect("AWS_ENDPOINT_URL is http://IP:PORT");
    let mut proxy = TcpProxy::start(moto_addr).await;
    let direct = Client::new(&aws().await);
    let project = unique("proj");
    let config = config_for(&project, 3, "");
    let mut stored = create_all(&direct, &config).await;

    let mut via_proxy = aws_sdk_secretsmanager::config::Builder::from(&aws().await);
    via_proxy.set_endpoint_url(Some(proxy.url()));
    let mut m = SecretsManager::new(Client::from_conf(via_proxy.build()), &config);
    m.fetch_all().await.expect("fetch");
    assert_eq!(m.status().staleness_seconds, Some(0));

    proxy.stop().await;
    assert!(m.poll().await.is_empty());
    for (dev, s) in &stored {
        assert_matches_stored(&m, dev, s);
    }
    let st = m.status();
    assert_eq!(st.consecutive_failures, 1);
    assert!(st.last_error.is_some());
    assert!(st.api_calls.failed >= 1);
    assert!(st.developers.values().all(|d| d.ready && d.error.is_some()));
    let stale1 = st.staleness_seconds.expect("had a success");
    let backoff = m.next_poll_in();
    assert!(
        backoff < config.secrets.poll_interval,
        "retries sooner than the interval while failing: {backoff:?}"
    );

    // Rotated during the outage; seen after it.
    let p2 = value("pw");
    let v2 = rotate(&direct, &password_name(&config, "dev2"), &p2).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(m.poll().await.is_empty());
    let st = m.status();
    assert_eq!(st.consecutive_failures, 2);
    let stale2 = st.staleness_seconds.expect("had a success");
    assert!(stale2 > stale1, "staleness grows: {stale1} then {stale2}");
    assert!(st.developers.values().all(|d| d.stale_secs >= Some(1)));
    assert_matches_stored(&m, "dev2", &stored["dev2"]);

    proxy.resume().await;
    let events = m.poll().await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].developer.as_str(), events[0].which),
        ("dev2", SecretKind::Password)
    );
    let s2 = stored.get_mut("dev2").expect("dev2");
    s2.password = p2;
    s2.password_version = v2;
    let st = m.status();
    assert_eq!(st.consecutive_failures, 0);
    assert_eq!(st.staleness_seconds, Some(0));
    assert!(st.last_error.is_none());
    assert!(st.developers.values().all(|d| d.error.is_none()));
    assert_eq!(m.next_poll_in(), config.secrets.poll_interval);
    for (dev, s) in &stored {
        assert_matches_stored(&m, dev, s);
    }
    let warned = logs()
        .lines()
        .filter(|l| l.contains(&project) && l.contains("keeping the last good values"))
        .count();
    assert_eq!(warned, 2, "one warning per failed poll");
    let mut values = values_of(&stored);
    values.push(stored["dev2"].password.clone());
    assert_no_value_leaked(&values, &outputs_of(&m));
}

#[tokio::test]
async fn initial_fetch_fails_only_when_nothing_could_be_read() {
    capture_logs();
    let config = config_for(&unique("proj"), 2, "");
    let mut dead = aws_sdk_secretsmanager::config::Builder::from(&aws().await);
    dead.set_endpoint_url(Some(format!("http://127.0.0.1:{}", free_port())));
    let mut m = SecretsManager::new(Client::from_conf(dead.build()), &config);
    let err = m.fetch_all().await.expect_err("nothing answers");
    assert!(
        matches!(err, SecretsError::NothingFetched { total: 4, .. }),
        "{err}"
    );
    for d in ["dev1", "dev2"] {
        assert!(matches!(m.get(d), Some(DeveloperSecrets::Failed { .. })));
    }
    let st = m.status();
    assert_eq!(st.staleness_seconds, None, "never succeeded");
    assert_eq!(
        st.api_calls.failed,
        st.api_calls.total(),
        "every attempt failed"
    );
    assert_eq!(
        st.api_calls.batch_get_secret_value, 3,
        "3 attempts with backoff"
    );
}

#[tokio::test]
async fn batch_access_denied_falls_back_to_get_secret_value_and_says_so_once() {
    capture_logs();
    let sdk = aws().await;
    let setup = Client::new(&sdk);
    let project = unique("proj");
    let config = config_for(&project, 4, "");
    let stored = create_all(&setup, &config).await;
    let counter = CallCounter::default();
    let mut m = SecretsManager::new(client_with(&sdk, &counter, true), &config);
    m.fetch_all().await.expect("fallback reads everything");
    for (dev, s) in &stored {
        assert_matches_stored(&m, dev, s);
    }
    let st = m.status();
    assert_eq!(st.batch_supported, Some(false));
    assert_eq!(st.api_calls.get_secret_value, 8);
    assert_eq!(
        counter.get("BatchGetSecretValue"),
        1,
        "tried once, not retried"
    );
    assert_eq!(counter.get("GetSecretValue"), 8);

    assert!(m.poll().await.is_empty());
    assert_eq!(counter.get("BatchGetSecretValue"), 1, "not tried again");
    assert_eq!(
        counter.get("GetSecretValue"),
        16,
        "2 per developer per poll"
    );

    let warnings = logs()
        .lines()
        .filter(|l| l.contains(&project) && l.contains("falling back to one GetSecretValue"))
        .count();
    assert_eq!(warnings, 1, "said once");
    assert_no_value_leaked(&values_of(&stored), &outputs_of(&m));
}

#[tokio::test]
async fn reload_adds_and_removes_developers() {
    capture_logs();
    let sdk = aws().await;
    let setup = Client::new(&sdk);
    let project = unique("proj");
    let three = config_for(&project, 3, "");
    let four = config_for(&project, 4, "");
    let stored = create_all(&setup, &four).await;
    let mut m = SecretsManager::new(Client::new(&sdk), &three);
    m.fetch_all().await.expect("fetch");
    m.password_hash("dev3").expect("hash");
    assert!(m.get("dev4").is_none());

    let reloaded = Config::from_toml(
        &format!(
            "project = \"{project}\"\n[volume]\ndevice = \"/dev/null\"\n[[developer]]\nname = \"dev1\"\n[[developer]]\nname = \"dev2\"\n[[developer]]\nname = \"dev4\"\n"
        ),
        Path::new("reloaded.toml"),
    )
    .expect("config");
    m.set_config(&reloaded);
    assert!(m.get("dev3").is_none(), "forgotten");
    assert!(matches!(
        m.password_hash("dev3"),
        Err(SecretsError::NotReady { .. })
    ));
    assert!(
        m.poll().await.is_empty(),
        "a new developer is not a rotation"
    );
    for d in ["dev1", "dev2", "dev4"] {
        assert_matches_stored(&m, d, &stored[d]);
    }
    assert_eq!(
        m.status().developers.keys().cloned().collect::<Vec<_>>(),
        vec!["dev1", "dev2", "dev4"]
    );
    assert_no_value_leaked(&values_of(&stored), &outputs_of(&m));
}

// ---------------------------------------------------------------------------
// Hand-over to a container (test image)
// ---------------------------------------------------------------------------

/// Removes the container when the test ends, whatever happened.
struct ContainerGuard(String);

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

async fn start_test_container(
    name: &str,
    port: u16,
    env: Vec<String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    binds: Vec<String>,
) -> ContainerGuard {
    let docker = docker().await;
    let body = ContainerCreateBody {
        image: Some(TEST_IMAGE.to_string()),
        env: Some(env),
        entrypoint,
        cmd,
        labels: Some(HashMap::from([(
            "csagent.test".to_string(),
            "true".to_string(),
        )])),
        exposed_ports: Some(vec!["8080/tcp".to_string()]),
        host_config: Some(HostConfig {
            binds: Some(binds),
            port_bindings: Some(HashMap::from([(
                "8080/tcp".to_string(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".to_string()),
                    host_port: Some(port.to_string()),
                }]),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    };
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(name).build()),
            body,
        )
        .await
        .unwrap_or_else(|e| {
            panic!("create {name} from {TEST_IMAGE} (built by scripts/build-test-image.sh): {e}")
        });
    let guard = ContainerGuard(name.to_string());
    docker
        .start_container(name, None)
        .await
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    wait_ready(port).await;
    guard
}

async fn wait_ready(port: u16) {
    let start = Instant::now();
    while http_get_status(port, "/healthz") != Some(200) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "test container on {port} never answered /healthz"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// POST /login; the status code and body.
fn login(port: u16, password: &str) -> (u16, String) {
    let out = run(
        "curl",
        &[
            "-s",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code}",
            "--data-urlencode",
            &format!("password={password}"),
            &format!("http://127.0.0.1:{port}/login"),
        ],
    );
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn docker_inspect(name: &str) -> String {
    run("docker", &["inspect", name])
}

#[tokio::test]
async fn hashed_password_is_accepted_by_code_server_and_plaintext_stays_out_of_inspect() {
    capture_logs();
    let sdk = aws().await;
    let setup = Client::new(&sdk);
    let config = config_for(&unique("proj"), 1, "");
    let stored = create_all(&setup, &config).await;
    let password = stored["dev1"].password.clone();
    let mut m = SecretsManager::new(Client::new(&sdk), &config);
    m.fetch_all().await.expect("fetch");
    let hash = m.password_hash("dev1").expect("hash");
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    let parsed = PasswordHash::new(&hash).expect("PHC string");
    let argon = argon2::Argon2::default();
    assert!(argon.verify_password(password.as_bytes(), &parsed).is_ok());
    assert!(argon.verify_password(b"not-the-password", &parsed).is_err());

    let name = unique("csagent-t-secrets-login");
    let port = port_block(1);
    let _guard = start_test_container(
        &name,
        port,
        vec![
            format!("HASHED_PASSWORD={hash}"),
            "FAKE_IDLE_AFTER=3".to_string(),
        ],
        None,
        None,
        vec![],
    )
    .await;

    let (code, _) = login(port, &password);
    assert_eq!(code, 302, "the right password logs in");
    let (code, body) = login(port, "not-the-password");
    assert_eq!(code, 200);
    assert!(body.contains("Incorrect password"), "{body}");

    let inspect = docker_inspect(&name);
    assert!(
        inspect.contains(&hash),
        "inspect shows the hash it was given"
    );
    assert!(
        !inspect.contains(&password),
        "docker inspect holds no plaintext password"
    );

    // The idle probe and the when-idle policy against the same code-server: busy
    // right after a login, idle (status "expired") once FAKE_IDLE_AFTER passed.
    let seen = SystemTime::now();
    let busy = is_idle(port).await;
    assert_eq!(busy, Some(false));
    let hours8 = Duration::from_secs(8 * 3600);
    assert!(matches!(
        decide(ApplyPolicy::WhenIdle, hours8, seen, SystemTime::now(), busy),
        ApplyDecision::Wait { .. }
    ));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let idle = is_idle(port).await;
    assert_eq!(idle, Some(true));
    assert_eq!(
        decide(ApplyPolicy::WhenIdle, hours8, seen, SystemTime::now(), idle),
        ApplyDecision::ApplyNow
    );
    assert_no_value_leaked(&values_of(&stored), &outputs_of(&m));
}

/// A tmpfs mounted on a fresh directory; unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn new() -> Tmpfs {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("csagent-tmpfs-")
            .tempdir()
            .expect("tempdir");
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                "size=1m,mode=0755",
                "tmpfs",
                path_str(dir.path()),
            ],
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// What an earlier csagent left (a key directory owned by the container user),
/// with a symlink planted in it by that user: root must not write through it.
#[test]
fn key_file_writes_never_follow_a_planted_symlink() {
    let tmpfs = Tmpfs::new();
    let victim_dir = tempfile::tempdir().expect("tempdir");
    let victim = victim_dir.path().join("shadow");
    std::fs::write(&victim, "root:secret-hash").expect("write");

    let dir = tmpfs.path().join("dev1");
    std::fs::create_dir(&dir).expect("mkdir");
    std::os::unix::fs::symlink(&victim, dir.join("claude-api-key")).expect("plant link");
    std::os::unix::fs::chown(&dir, Some(1000), Some(1000)).expect("chown");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o500))
        .expect("chmod");

    let files = CredentialFiles::new(tmpfs.path(), 1000, 1000).expect("tmpfs");
    let key = Secret::new(value("sk-ant-api03"));
    files.write("dev1", Some(&key)).expect("write key file");

    assert_eq!(
        std::fs::read_to_string(&victim).expect("read victim"),
        "root:secret-hash",
        "the link target is untouched"
    );
    let meta = std::fs::symlink_metadata(files.key_path("dev1")).expect("lstat");
    assert!(
        meta.file_type().is_file(),
        "the link was replaced by the key file"
    );
    assert_eq!((meta.mode() & 0o7777, meta.uid()), (0o400, 1000));
    let dir_meta = std::fs::symlink_metadata(&dir).expect("lstat dir");
    assert_eq!(
        (dir_meta.mode() & 0o7777, dir_meta.uid(), dir_meta.gid()),
        (0o750, 0, 1000),
        "the old directory is root's now"
    );

    // A runtime directory someone else owns is refused, naming it.
    let foreign = Tmpfs::new();
    std::os::unix::fs::chown(foreign.path(), Some(1000), Some(1000)).expect("chown");
    let err = CredentialFiles::new(foreign.path(), 1000, 1000).expect_err("foreign dir");
    assert!(
        err.to_string()
            .contains(&foreign.path().display().to_string())
            && err.to_string().contains("uid 1000"),
        "{err}"
    );
}

#[tokio::test]
async fn claude_key_file_on_tmpfs_reaches_the_running_container_by_its_file() {
    capture_logs();
    let tmpfs = Tmpfs::new();
    let files = CredentialFiles::new(tmpfs.path(), 1000, 1000).expect("a tmpfs is accepted");
    let key = Secret::new(value("sk-ant-api03"));

    let dir = files.write("dev1", Some(&key)).expect("write key file");
    assert_eq!(dir, tmpfs.path().join("dev1"));
    let dir_meta = std::fs::metadata(&dir).expect("dir");
    assert_eq!(
        (dir_meta.mode() & 0o7777, dir_meta.uid(), dir_meta.gid()),
        (0o750, 0, 1000),
        "root's directory, the container's group reads it"
    );
    let file: PathBuf = files.key_path("dev1");
    let meta = std::fs::metadata(&file).expect("key file");
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o400, 1000, 1000)
    );
    assert!(std::fs::read_to_string(&file).expect("read") == key.expose());
    files.write("dev1", Some(&key)).expect("same key again");
    assert_eq!(
        std::fs::metadata(&file).expect("key file").ino(),
        meta.ino(),
        "an unchanged key is not rewritten"
    );

    // A directory on a disk is refused unless a test says otherwise.
    let disk = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let on_memory = nix::sys::statfs::statfs(disk.path())
        .map(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
        .unwrap_or(true);
    if !on_memory {
        assert!(matches!(
            CredentialFiles::new(disk.path(), 1000, 1000),
            Err(CredentialError::NotTmpfs { .. })
        ));
    }

    // The image's own entrypoint, unwrapped; the key directory mounted read-only.
    let docker = docker().await;
    let image = image_command(&docker, TEST_IMAGE)
        .await
        .expect("inspect image");
    assert_eq!(
        image.entrypoint,
        ["/usr/bin/entrypoint.sh", "--bind-addr", "0.0.0.0:8080", "."]
    );
    let name = unique("csagent-t-secrets-key");
    let port = port_block(1);
    let _guard = start_test_container(
        &name,
        port,
        vec!["PASSWORD=unused-in-this-test".to_string()],
        Some(image.entrypoint.clone()),
        Some(image.cmd.clone()),
        vec![format!(
            "{}:{}:ro",
            dir.display(),
            csagent::secrets::CONTAINER_KEY_DIR
        )],
    )
    .await;
    let in_container = format!(
        "{}/{}",
        csagent::secrets::CONTAINER_KEY_DIR,
        csagent::secrets::KEY_FILE_NAME
    );
    let key_in_container = format!("/file?path={in_container}");
    // What uid 1000 (the container's user, as Claude Code's apiKeyHelper runs)
    // reads from the file right now.
    let read_as_user = || {
        let out = Command::new("docker")
            .args(["exec", "-u", "1000:1000", &name, "cat", &in_container])
            .output()
            .expect("docker exec cat");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    assert_eq!(
        http_get_status(port, &key_in_container),
        Some(200),
        "readable as uid 1000"
    );
    assert!(read_as_user().as_deref() == Some(key.expose()));
    // No environment carries it: an ANTHROPIC_API_KEY would win over the
    // apiKeyHelper and pin the key the container started with.
    assert_eq!(
        http_get_status(port, "/env?name=ANTHROPIC_API_KEY"),
        Some(404)
    );
    assert_eq!(http_get_status(port, "/env?name=CLAUDE_API_KEY"), Some(404));
    assert!(
        !docker_inspect(&name).contains(key.expose()),
        "docker inspect holds no key"
    );
    let started = run(
        "docker",
        &["inspect", "-f", "{{.Id}} {{.State.StartedAt}}", &name],
    );

    // A rotated key: a new file renamed over the old one, seen at once inside the
    // running container through the directory mount.
    let rotated = Secret::new(value("sk-ant-api03-rotated"));
    files
        .write("dev1", Some(&rotated))
        .expect("rotate key file");
    assert_ne!(
        std::fs::metadata(&file).expect("key file").ino(),
        meta.ino(),
        "replaced by rename, not written in place"
    );
    assert!(read_as_user().as_deref() == Some(rotated.expose()));
    assert_eq!(
        run(
            "docker",
            &["inspect", "-f", "{{.Id}} {{.State.StartedAt}}", &name]
        ),
        started,
        "the container was neither recreated nor restarted"
    );

    // Placeholder: the file goes (seen live through the directory mount).
    files.write("dev1", None).expect("remove key");
    assert!(!file.exists());
    assert_eq!(http_get_status(port, &key_in_container), Some(404));
    assert_eq!(read_as_user(), None);

    files.remove("dev1").expect("remove dir");
    assert!(!dir.exists());
    assert_no_value_leaked(
        &[key.expose().to_string(), rotated.expose().to_string()],
        &[],
    );
}
