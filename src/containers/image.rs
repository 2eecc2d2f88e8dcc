//! The image every developer's container runs: present per `containers.pull`,
//! pulled with progress in the log, and what it would run by itself.

use std::sync::atomic::Ordering;

use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt;

use super::{ImageInfo, Reconciler, unix_now};
use crate::config::PullPolicy;

impl Reconciler {
    /// Makes sure the image is present per `containers.pull`, with pull progress
    /// in the log. An error here is reported per developer; nothing else stops.
    pub async fn ensure_image(&self) -> Result<ImageInfo, String> {
        let image = &self.config.containers.image;
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

    async fn pull(&self, image: &str) -> Result<(), String> {
        let (from_image, tag) = match image.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, t),
            _ => (image, "latest"),
        };
        let opts = CreateImageOptionsBuilder::new()
            .from_image(from_image)
            .tag(tag)
            .build();
        let mut stream = self.docker.create_image(Some(opts), None, None);
        let mut last_status = String::new();
        while let Some(item) = stream.next().await {
            self.progress.store(unix_now(), Ordering::Relaxed);
            let info = item.map_err(|e| e.to_string())?;
            if let Some(status) = info.status
                && status != last_status
            {
                tracing::info!(image, progress = %status, "pulling");
                last_status = status;
            }
        }
        Ok(())
    }
}
