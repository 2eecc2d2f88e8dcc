//! What `csagent status` shows about the image: the pull running now (layers and
//! bytes), and how the last pull ended. [`Progress`] folds dockerd's pull stream
//! (one JSON message per layer event) into counts; pure, so it is tested here.

use std::collections::BTreeMap;
use std::time::SystemTime;

use bollard::models::CreateImageInfo;

/// The image section of the observations; the reconciler is its only writer.
#[derive(Debug, Clone, Default)]
pub struct PullStatus {
    /// The configured image reference.
    pub image: String,
    /// `host[:port]` it is pulled from.
    pub registry: String,
    /// `ecr` or `none`.
    pub auth: String,
    /// The pull running now, if one is.
    pub running: Option<PullProgress>,
    /// When the last pull ended, and its error (None: it succeeded).
    pub last_pull: Option<(SystemTime, Option<String>)>,
    /// The last pull's counts when it ended.
    pub last_progress: Option<PullProgress>,
}

impl PullStatus {
    /// The last pull's error, if it failed.
    pub fn last_error(&self) -> Option<&str> {
        self.last_pull.as_ref().and_then(|(_, e)| e.as_deref())
    }
}

/// A running pull, as counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullProgress {
    pub started: Option<SystemTime>,
    pub layers_done: u32,
    pub layers_total: u32,
    /// Bytes downloaded so far, of the layers whose size is known yet.
    pub bytes_done: u64,
    pub bytes_total: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Layer {
    done: bool,
    current: u64,
    total: u64,
}

/// Per-layer state of one pull.
#[derive(Debug, Default)]
pub struct Progress {
    layers: BTreeMap<String, Layer>,
}

impl Progress {
    /// Takes one message of the pull stream.
    pub fn update(&mut self, info: &CreateImageInfo) {
        let (Some(id), Some(status)) = (info.id.as_deref(), info.status.as_deref()) else {
            return;
        };
        // "Pulling from team/x" carries the tag as its id; it is not a layer.
        if status.starts_with("Pulling from") {
            return;
        }
        let layer = self.layers.entry(id.to_string()).or_default();
        let detail = info.progress_detail.as_ref();
        let (current, total) = (
            detail.and_then(|d| d.current).unwrap_or(0).max(0) as u64,
            detail.and_then(|d| d.total).unwrap_or(0).max(0) as u64,
        );
        match status {
            "Downloading" => {
                layer.total = layer.total.max(total);
                layer.current = current;
            }
            "Download complete" | "Verifying Checksum" | "Extracting" => {
                layer.current = layer.total;
            }
            "Pull complete" | "Already exists" => {
                layer.current = layer.total;
                layer.done = true;
            }
            _ => {}
        }
    }

    pub fn view(&self, started: SystemTime) -> PullProgress {
        let mut p = PullProgress {
            started: Some(started),
            ..Default::default()
        };
        for l in self.layers.values() {
            p.layers_total += 1;
            p.layers_done += u32::from(l.done);
            p.bytes_done += l.current;
            p.bytes_total += l.total;
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use bollard::models::ProgressDetail;

    use super::*;

    fn msg(id: &str, status: &str, progress: Option<(i64, i64)>) -> CreateImageInfo {
        CreateImageInfo {
            id: Some(id.into()),
            status: Some(status.into()),
            progress_detail: progress.map(|(current, total)| ProgressDetail {
                current: Some(current),
                total: Some(total),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn layers_and_bytes_are_counted_from_the_stream() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut p = Progress::default();
        p.update(&msg("4.96.4", "Pulling from team/code-server", None));
        p.update(&msg("aaa", "Already exists", None));
        p.update(&msg("bbb", "Pulling fs layer", None));
        p.update(&msg("ccc", "Waiting", None));
        p.update(&msg("bbb", "Downloading", Some((100, 1000))));
        let v = p.view(t0);
        assert_eq!((v.layers_done, v.layers_total), (1, 3));
        assert_eq!((v.bytes_done, v.bytes_total), (100, 1000));
        assert_eq!(v.started, Some(t0));

        p.update(&msg("bbb", "Download complete", None));
        p.update(&msg("ccc", "Downloading", Some((50, 500))));
        p.update(&msg("bbb", "Extracting", Some((10, 1000))));
        let v = p.view(t0);
        assert_eq!((v.bytes_done, v.bytes_total), (1050, 1500));
        assert_eq!(v.layers_done, 1);

        p.update(&msg("bbb", "Pull complete", None));
        p.update(&msg("ccc", "Pull complete", None));
        let v = p.view(t0);
        assert_eq!((v.layers_done, v.layers_total), (3, 3));
        assert_eq!((v.bytes_done, v.bytes_total), (1500, 1500));
        // The summary lines have no layer id.
        p.update(&CreateImageInfo {
            status: Some("Digest: sha256:abc".into()),
            ..Default::default()
        });
        assert_eq!(p.view(t0).layers_total, 3);
    }
}
