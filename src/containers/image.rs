//! The image every developer's container runs: present per `containers.pull`,
//! pulled with the registry's credentials (ECR through the instance role, see
//! `registry.rs` and `ecr.rs`), with progress in the log and in status, and what
//! it would run by itself.
//!
//! A pull that fails never touches a container: the error is returned for every
//! developer (or only logged when an older copy of the image is present), and
//! status keeps it until the next pull succeeds.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use bollard::auth::DockerCredentials;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt;

use super::pull::{Progress, PullStatus};
use super::registry::{ImageRef, PullAuth, auth_for};
use super::{ImageInfo, Reconciler, unix_now};
use crate::config::PullPolicy;
use crate::retry::{Backoff, classify_docker, registry_refused, retry};

/// Attempts per pull for transient failures (registry or dockerd briefly away).
const PULL_ATTEMPTS: u32 = 3;
/// How often a running pull's progress is published and logged.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

impl Reconciler {
    /// Makes sure the image is present per `containers.pull`, with pull progress
    /// in the log and status. An error here is reported per developer; nothing else stops.
    pub async fn ensure_image(&self) -> Result<ImageInfo, String> {
        let image = &self.config.containers.image;
        self.publish_image(image);
        let present = self.docker.inspect_image(image).await.ok();
        let pull = match self.config.containers.pull {
            PullPolicy::Always => true,
            PullPolicy::IfNotPresent => present.is_none(),
            PullPolicy::Never => false,
        };
        if pull && let Err(e) = self.pull(image).await {
            if present.is_none() {
                return Err(format!(
                    "image {image} is not present and cannot be pulled: {e}"
                ));
            }
            tracing::warn!(image = %image, error = %e, "pull failed; using the image already present");
        }
        let inspect = match self.docker.inspect_image(image).await {
            Ok(i) => i,
            Err(_) if self.config.containers.pull == PullPolicy::Never => {
                return Err(format!(
                    "image {image} is not present and containers.pull is \"never\""
                ));
            }
            Err(e) => return Err(format!("image {image}: {e}")),
        };
        let cfg = inspect.config.unwrap_or_default();
        Ok(ImageInfo {
            id: inspect.id.unwrap_or_default(),
            entrypoint: cfg.entrypoint.unwrap_or_default(),
            cmd: cfg.cmd.unwrap_or_default(),
        })
    }

    /// Which image status reports on; the last pull's outcome is kept while the
    /// image stays the same.
    fn publish_image(&self, image: &str) {
        let r = ImageRef::parse(image);
        let auth = auth_for(self.config.containers.registry_auth, &r);
        let previous = self.pulls.get();
        self.pulls.set(PullStatus {
            image: image.to_string(),
            registry: r.registry,
            auth: auth.as_str().to_string(),
            running: None,
            last_pull: previous.last_pull.filter(|_| previous.image == image),
            last_progress: previous.last_progress.filter(|_| previous.image == image),
        });
    }

    /// One pull, its outcome published for status.
    async fn pull(&self, image: &str) -> Result<(), String> {
        let r = ImageRef::parse(image);
        let auth = auth_for(self.config.containers.registry_auth, &r);
        let result = self.pull_with_auth(&r, &auth).await;
        let mut status = self.pulls.get();
        status.last_progress = status.running.take();
        status.last_pull = Some((SystemTime::now(), result.as_ref().err().cloned()));
        self.pulls.set(status);
        match &result {
            Ok(()) => tracing::info!(image, registry = %r.registry, "pulled"),
            Err(e) => tracing::warn!(image, registry = %r.registry, error = %e, "pull failed"),
        }
        result
    }

    /// Pulls with the credentials `auth` asks for; a cached ECR token the
    /// registry refuses is dropped and a new one tried, once.
    async fn pull_with_auth(&self, r: &ImageRef, auth: &PullAuth) -> Result<(), String> {
        let mut refreshed = false;
        loop {
            let creds = match auth {
                PullAuth::Anonymous => None,
                PullAuth::Ecr { region } => {
                    let tokens = self.ecr.as_ref().ok_or_else(|| {
                        format!(
                            "registry {} needs ECR credentials but the agent has no AWS client",
                            r.registry
                        )
                    })?;
                    Some(
                        tokens
                            .credentials(region.as_deref(), &r.registry)
                            .await
                            .map_err(|e| e.to_string())?,
                    )
                }
            };
            let docker_creds = creds.as_ref().map(|c| c.credentials.clone());
            let result = retry(Backoff::standard(), PULL_ATTEMPTS, classify_docker, || {
                self.pull_once(r, docker_creds.clone())
            })
            .await;
            let e = match result {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if registry_refused(&e)
                && let (Some(c), Some(tokens)) = (&creds, &self.ecr)
                && !c.fresh
                && !refreshed
            {
                tracing::info!(registry = %r.registry, "registry refused the cached ECR token; getting a new one");
                tokens.invalidate().await;
                refreshed = true;
                continue;
            }
            return Err(describe(r, auth, &e));
        }
    }

    async fn pull_once(
        &self,
        r: &ImageRef,
        credentials: Option<DockerCredentials>,
    ) -> Result<(), bollard::errors::Error> {
        let opts = CreateImageOptionsBuilder::new()
            .from_image(&r.from_image)
            .tag(&r.tag)
            .build();
        // Each attempt counts as progress: a registry that does not answer costs one
        // attempt's timeout, not all of them, before the watchdog hears from us.
        self.progress.store(unix_now(), Ordering::Relaxed);
        let mut stream = self.docker.create_image(Some(opts), None, credentials);
        let started = SystemTime::now();
        let mut progress = Progress::default();
        let mut last_publish = Instant::now();
        while let Some(item) = stream.next().await {
            self.progress.store(unix_now(), Ordering::Relaxed);
            let info = item?;
            progress.update(&info);
            if last_publish.elapsed() >= PUBLISH_EVERY {
                last_publish = Instant::now();
                let view = progress.view(started);
                tracing::info!(
                    image = %r.from_image,
                    layers = format!("{}/{}", view.layers_done, view.layers_total),
                    bytes = format!("{}/{}", view.bytes_done, view.bytes_total),
                    "pulling"
                );
                let mut status = self.pulls.get();
                status.running = Some(view);
                self.pulls.set(status);
            }
        }
        let mut status = self.pulls.get();
        status.running = Some(progress.view(started));
        self.pulls.set(status);
        Ok(())
    }
}

/// The pull error in words an admin can act on: which registry, which tag, and
/// whether the credentials were refused.
fn describe(r: &ImageRef, auth: &PullAuth, e: &bollard::errors::Error) -> String {
    use bollard::errors::Error as E;
    let registry = &r.registry;
    if registry_refused(e) {
        let creds = match auth {
            PullAuth::Ecr { .. } => "the ECR token of the instance role",
            PullAuth::Anonymous => "an anonymous pull",
        };
        return format!("registry {registry} refused {creds}: {e}");
    }
    match e {
        E::DockerResponseServerError {
            status_code: 404, ..
        } => format!(
            "tag {} of {} not found in registry {registry}: {e}",
            r.tag,
            r.repository()
        ),
        _ => format!("pull from registry {registry} failed: {e}"),
    }
}
