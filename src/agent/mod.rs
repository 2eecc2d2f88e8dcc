//! `csagent run`: wires the capabilities in order — config → volume ready →
//! secrets fetched → containers converged → logs (and metrics) running — then
//! keeps them converged: rotation polls, Docker events, periodic resync,
//! SIGHUP/`csagent reload`, SIGTERM shutdown.
//!
//! systemd hears READY=1 once the first convergence pass finished, STATUS= text
//! along the way, and WATCHDOG=1 only while the main loop or the reconciler makes
//! progress (a wedged loop stops the pings and systemd restarts us). Background
//! tasks that panic are logged and started again in-process.
//! Containers keep running when the agent stops: stopping or upgrading it never
//! interrupts a developer.
//!
//! Each capability publishes what it observed into one [`Observations`]; the
//! control socket answers `status` from a snapshot of it, without going through
//! the main loop.
//!
//! | file | job |
//! |---|---|
//! | `mod.rs` | start order, the control socket, status |
//! | `converge.rs` | desired state from secrets, one convergence pass, rotation polls |
//! | `main_loop.rs` | the select loop: signals, timers, events, commands; shutdown |
//! | `reload.rs` | a new config without a restart |
//! | `developers.rs` | the developer set published in SSM: at start, polled, on reload |
//! | `background.rs` | starting and stopping the log shipper and metrics loop |
//! | `watchdog.rs` | the systemd watchdog pings |
//! | `footprint.rs` | start-up code paged out once the agent idles |

mod background;
mod converge;
mod developers;
pub mod footprint;
mod main_loop;
mod reload;
mod watchdog;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use sd_notify::NotifyState;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::containers::{ContainerCredentials, EcrTokens, Reconciler};
use crate::control::{self, Command, Response};
use crate::exit;
use crate::observe::Observations;
use crate::secrets::{CredentialFiles, SecretsManager};
use crate::status::{self, HostMemory, StatusReport};
use crate::supervise::spawn_supervised;

/// Runs the agent; returns the process exit code.
pub async fn run(config_path: &Path, once: bool) -> i32 {
    let (config, file_text) = match Config::load_with_text(config_path) {
        Ok((c, text)) => (Arc::new(c), text),
        Err(e) => {
            eprintln!("error: {e}");
            notify(&[NotifyState::Status(&format!("bad config: {e}"))]);
            return exit::CONFIG;
        }
    };
    crate::tracing_setup::init(config.agent.log_format, &config.agent.log_level);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config_path.display(),
        developers = config.developers.len(),
        "csagent starting"
    );
    let mut agent = match Agent::start(config, file_text, config_path.to_path_buf(), once).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            notify(&[NotifyState::Status(&format!("failed: {e}"))]);
            return exit::FAILED;
        }
    };
    let converged = agent.converge_all().await;
    if once {
        return if converged { exit::OK } else { exit::FAILED };
    }
    agent.start_background();
    // Start-up is the agent's busiest moment (volume, secrets, every container
    // created); what it freed need not stay resident while the agent idles.
    crate::secrets::release_freed_memory();
    tokio::spawn(async {
        tokio::time::sleep(footprint::AFTER_START).await;
        match tokio::task::spawn_blocking(footprint::page_out_executable).await {
            Ok(Ok(bytes)) => tracing::debug!(bytes, "start-up code paged out"),
            Ok(Err(e)) => tracing::debug!(error = %e, "start-up code not paged out"),
            Err(e) => tracing::debug!(error = %e, "start-up code not paged out"),
        }
    });
    agent.run_loop().await
}

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

fn progress(text: &str) {
    tracing::info!("{text}");
    notify(&[NotifyState::Status(text)]);
}

/// Answers `csagent status` from a snapshot of the observations: no probe, no
/// write, never waiting on the main loop.
struct LiveStatus(Observations);

impl control::StatusSource for LiveStatus {
    fn report(&self) -> StatusReport {
        status::report(&self.0.snapshot(), HostMemory::read(), SystemTime::now())
    }
}

struct Agent {
    config: Arc<Config>,
    config_path: PathBuf,
    observations: Observations,
    secrets: SecretsManager,
    files: CredentialFiles,
    reconciler: Reconciler,
    /// Credentials each developer's container was last converged with; kept while
    /// a when-idle rotation waits, so waiting does not recreate the container.
    applied: BTreeMap<String, ContainerCredentials>,
    /// Developers whose pending rotation the policy says to apply now.
    apply_now: BTreeSet<String>,
    commands: mpsc::Receiver<(Command, oneshot::Sender<Response>)>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    /// Log shipper and metrics loop.
    background: background::Background,
    /// Where the developers come from (the file, or an SSM parameter).
    devset: developers::DeveloperSet,
    docker: bollard::Docker,
    sdk: aws_config::SdkConfig,
    once: bool,
}

impl Agent {
    async fn start(
        config: Arc<Config>,
        file_text: String,
        config_path: PathBuf,
        once: bool,
    ) -> Result<Agent, String> {
        let identity = crate::aws::identity(&config)
            .await
            .map_err(|e| e.to_string())?;
        let sdk = crate::aws::sdk_config(&config, &identity.region).await;
        // Who the developers are, before the volume pass makes their directories.
        let (config, devset) = developers::DeveloperSet::start(config, file_text, &sdk).await;
        let observations = Observations::new(config.clone(), identity.clone());
        observations.developer_set.set(devset.status.clone());

        let cfg = config.clone();
        let volume = tokio::task::spawn_blocking(move || {
            crate::volume::prepare(&cfg, &|t: &str| progress(t))
        })
        .await
        .map_err(|e| format!("volume task: {e}"))?
        .map_err(|e| format!("volume: {e}"))?;
        progress(&format!(
            "volume ready: {} mounted at {}",
            volume.device.as_deref().unwrap_or("?"),
            config.volume.mount_point.display()
        ));
        observations.volume.set(volume);

        let mut secrets = SecretsManager::new(aws_sdk_secretsmanager::Client::new(&sdk), &config);
        progress("reading developer credentials from Secrets Manager");
        if let Err(e) = secrets.fetch_all().await {
            // Keep going: developers without credentials are reported, not started.
            tracing::error!(error = %e, "initial secrets read failed; retrying on the next poll");
        }
        observations.secrets.set(Some(secrets.status()));
        let files =
            CredentialFiles::from_config(&config).map_err(|e| format!("credential files: {e}"))?;

        progress("connecting to the Docker engine");
        let docker = crate::containers::connect(&progress).await?;
        let reconciler = Reconciler::new(docker.clone(), config.clone())
            .reporting_to(
                observations.containers.clone(),
                observations.firewall.clone(),
            )
            .draining_logs_of(observations.logs.clone())
            .reporting_pulls_to(observations.image.clone())
            .reporting_rollout_to(observations.rollout.clone())
            .with_ecr(EcrTokens::new(&sdk));

        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let mut tasks = Vec::new();
        if !once {
            tasks.push((
                "control socket",
                serve_control(&config, observations.clone(), cmd_tx)?,
            ));
        }
        Ok(Agent {
            config,
            config_path,
            observations,
            secrets,
            files,
            reconciler,
            applied: BTreeMap::new(),
            apply_now: BTreeSet::new(),
            commands: cmd_rx,
            tasks,
            background: background::Background::default(),
            devset,
            docker,
            sdk,
            once,
        })
    }
}

/// Binds the control socket now, so a bad socket path or a second agent stops
/// the start, and serves it in a supervised task (a restarted task binds afresh).
fn serve_control(
    config: &Config,
    observations: Observations,
    cmd_tx: control::CommandSender,
) -> Result<JoinHandle<()>, String> {
    let mut first = Some(
        control::bind(&config.agent.socket, &config.agent.socket_group)
            .map_err(|e| e.to_string())?,
    );
    let source: Arc<dyn control::StatusSource> = Arc::new(LiveStatus(observations));
    let (path, group) = (
        config.agent.socket.clone(),
        config.agent.socket_group.clone(),
    );
    let serve = move || {
        let listener = first
            .take()
            .map(Ok)
            .unwrap_or_else(|| control::bind(&path, &group));
        let (group, source, cmd_tx) = (group.clone(), source.clone(), cmd_tx.clone());
        async move {
            match listener {
                Ok(l) => control::serve(l, group, source, cmd_tx).await,
                Err(e) => tracing::error!(error = %e, "control socket unavailable"),
            }
        }
    };
    Ok(spawn_supervised("control socket", serve))
}
