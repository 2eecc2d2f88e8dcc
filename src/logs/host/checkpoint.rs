//! Per source, `<state_dir>/host-logs/<source>.json`, written atomically like the
//! container checkpoints (a directory of its own, so the container shipper's
//! clean-up of checkpoints without a container never sees these).
//!
//! The position is the journal cursor of the last entry settled; the in-flight
//! record is written before PutLogEvents and cleared after it, exactly as for
//! containers ([`crate::logs::Inflight`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::logs::{CheckpointError, Tail};

/// A put that was started but not known to have finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInflight {
    /// The cursor once the batch is settled, and its entry's timestamp (ms).
    pub end: Option<String>,
    pub end_ms: Option<i64>,
    pub first_ms: i64,
    pub last_ms: i64,
    pub events: u64,
    /// The stream's tail if it landed.
    pub tail_after: Tail,
    /// Wall clock when the put started (ms), to let CloudWatch settle first.
    pub started_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCheckpoint {
    /// The group the tail and the in-flight batch belong to.
    pub group: String,
    /// Every entry up to this one is settled (shipped, or not selected).
    pub cursor: Option<String>,
    /// Timestamp (ms) of the entry at `cursor`, for status.
    pub cursor_ms: Option<i64>,
    /// This source's events in its stream at the last shipped millisecond. Its
    /// `ts_ms` is also the earliest timestamp the next event may carry (see
    /// the module doc of `host`).
    pub tail: Tail,
    pub inflight: Option<HostInflight>,
}

/// The directory of host-log checkpoints.
#[derive(Debug, Clone)]
pub struct HostStore {
    dir: PathBuf,
}

impl HostStore {
    pub fn new(state_dir: &Path) -> HostStore {
        HostStore {
            dir: state_dir.join("host-logs"),
        }
    }

    fn path(&self, source: &str) -> PathBuf {
        self.dir.join(format!("{source}.json"))
    }

    fn io(path: &Path, op: &'static str, source: std::io::Error) -> CheckpointError {
        CheckpointError::Io {
            path: path.to_path_buf(),
            op,
            source,
        }
    }

    /// The checkpoint, or None when there is none yet.
    pub fn load(&self, source: &str) -> Result<Option<HostCheckpoint>, CheckpointError> {
        let path = self.path(source);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::io(&path, "read", e)),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|source| CheckpointError::Corrupt { path, source })
    }

    /// Replaces the checkpoint atomically (creating the directory, 0700).
    pub fn save(&self, source: &str, cp: &HostCheckpoint) -> Result<(), CheckpointError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| Self::io(&self.dir, "create directory", e))?;
        let path = self.path(source);
        let body = serde_json::to_vec_pretty(cp).map_err(|source| CheckpointError::Corrupt {
            path: path.clone(),
            source,
        })?;
        let perms = crate::fsutil::Perms {
            mode: Some(0o600),
            owner: None,
        };
        crate::fsutil::write_atomic(&path, &body, perms).map_err(|e| Self::io(&path, "write", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_replace() {
        let dir = tempfile::tempdir().unwrap();
        let store = HostStore::new(dir.path());
        assert_eq!(store.load("system").unwrap(), None);
        let mut cp = HostCheckpoint {
            group: "/g".into(),
            cursor: Some("s=1;i=5".into()),
            cursor_ms: Some(7),
            tail: Tail { ts_ms: 7, count: 2 },
            inflight: None,
        };
        store.save("system", &cp).unwrap();
        assert_eq!(store.load("system").unwrap(), Some(cp.clone()));
        cp.inflight = Some(HostInflight {
            end: Some("s=1;i=9".into()),
            end_ms: Some(9),
            first_ms: 7,
            last_ms: 9,
            events: 3,
            tail_after: Tail { ts_ms: 9, count: 1 },
            started_ms: 10,
        });
        store.save("system", &cp).unwrap();
        assert_eq!(store.load("system").unwrap(), Some(cp));
        assert_eq!(store.load("docker").unwrap(), None);
        std::fs::write(dir.path().join("host-logs/docker.json"), "{").unwrap();
        let e = store.load("docker").unwrap_err();
        assert!(e.to_string().contains("docker.json"), "{e}");
    }
}
