//! Per-container checkpoints under `<state_dir>/logs/<container id>.json`,
//! written atomically (temp file, fsync, rename, fsync the directory: `fsutil`).
//!
//! A checkpoint says where the follower resumes ([`Position`]) and, for
//! exactly-once across crashes, which batch was in flight: the record is written
//! *before* PutLogEvents and cleared after it succeeds. Finding one on start means
//! the agent died between the two; the shipper then asks CloudWatch whether that
//! batch landed (see `sink::Sink::landed`) and settles it either way. The position
//! advances only after a put succeeded (or was found to have landed).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::follow::Position;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("log checkpoint {path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("log checkpoint {path}: not valid JSON: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

impl CheckpointError {
    /// Whether writing again later may succeed (a full disk, say).
    pub fn class(&self) -> crate::retry::Class {
        match self {
            CheckpointError::Io { source, .. } => crate::retry::classify_io(source),
            CheckpointError::Corrupt { .. } => crate::retry::Class::Permanent,
        }
    }
}

/// Events this container already has in its stream at the last shipped
/// millisecond; a later batch starting in that millisecond is judged against it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tail {
    pub ts_ms: i64,
    pub count: u64,
}

impl Tail {
    /// The tail after `events` (timestamps, chronological) were accepted.
    pub fn after(self, timestamps: impl DoubleEndedIterator<Item = i64>) -> Tail {
        let mut rev = timestamps.rev();
        let Some(last) = rev.next() else {
            return self;
        };
        let mut count = 1 + rev.take_while(|t| *t == last).count() as u64;
        if last == self.ts_ms {
            count += self.count;
        }
        Tail { ts_ms: last, count }
    }

    /// How many of this container's events the stream already holds in
    /// `[first_ms, ..]` before a batch starting at `first_ms`.
    pub fn before(self, first_ms: i64) -> u64 {
        if self.ts_ms == first_ms {
            self.count
        } else {
            0
        }
    }
}

/// A place in a container's json-file log, read directly from the file: the
/// file (inode, and a hash of its first line so a reused inode is not taken
/// for it) and the byte offset after the last consumed entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePos {
    pub inode: u64,
    pub offset: u64,
    /// Hash of the file's first line (`tail::head_hash`); 0 while unknown
    /// (offset 0: nothing read from it yet).
    pub head: u64,
}

/// A put that was started but not known to have finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inflight {
    /// Position once the batch is settled.
    pub end: Option<Position>,
    /// File position once the batch is settled (json-file containers read from
    /// the file; absent in checkpoints written before the agent read files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_file: Option<FilePos>,
    pub first_ms: i64,
    pub last_ms: i64,
    pub events: u64,
    /// The stream's tail if it landed.
    pub tail_after: Tail,
    /// Wall clock when the put started (ms), to let CloudWatch settle first.
    pub started_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub container_id: String,
    pub developer: String,
    /// Everything up to here is shipped. Kept up to date when the log is read
    /// from the file too, so either reader can resume from it.
    pub position: Position,
    /// Everything up to here in the json-file log is shipped. None: not read
    /// from the file yet (a new container, a driver other than json-file, or a
    /// checkpoint written by an agent that read the Docker API only: then the
    /// file is read from its start, skipping what `position` says is shipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FilePos>,
    pub tail: Tail,
    pub inflight: Option<Inflight>,
}

impl Checkpoint {
    pub fn new(container_id: &str, developer: &str) -> Checkpoint {
        Checkpoint {
            container_id: container_id.to_string(),
            developer: developer.to_string(),
            position: Position::default(),
            file: None,
            tail: Tail::default(),
            inflight: None,
        }
    }
}

/// The directory of checkpoints.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Checkpoints in `<state_dir>/logs`.
    pub fn new(state_dir: &Path) -> Store {
        Store {
            dir: state_dir.join("logs"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the directory (mode 0700: container ids and positions only, but
    /// nobody else needs them).
    pub fn create(&self) -> Result<(), CheckpointError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|source| CheckpointError::Io {
                path: self.dir.clone(),
                op: "create directory",
                source,
            })
    }

    fn path(&self, container_id: &str) -> PathBuf {
        self.dir.join(format!("{container_id}.json"))
    }

    pub fn load(&self, container_id: &str) -> Result<Option<Checkpoint>, CheckpointError> {
        let path = self.path(container_id);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CheckpointError::Io {
                    path,
                    op: "read",
                    source,
                });
            }
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|source| CheckpointError::Corrupt { path, source })
    }

    /// Replaces the container's checkpoint atomically ([`crate::fsutil::write_atomic`]):
    /// after a crash at any point the file holds the old checkpoint or the new one,
    /// complete.
    pub fn save(&self, cp: &Checkpoint) -> Result<(), CheckpointError> {
        let path = self.path(&cp.container_id);
        let body = serde_json::to_vec_pretty(cp).map_err(|source| CheckpointError::Corrupt {
            path: path.clone(),
            source,
        })?;
        let perms = crate::fsutil::Perms {
            mode: Some(0o600),
            owner: None,
        };
        crate::fsutil::write_atomic(&path, &body, perms).map_err(|source| CheckpointError::Io {
            path,
            op: "write",
            source,
        })
    }

    pub fn remove(&self, container_id: &str) -> Result<(), CheckpointError> {
        let path = self.path(container_id);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(CheckpointError::Io {
                path,
                op: "remove",
                source,
            }),
        }
    }

    /// Container ids that have a checkpoint.
    pub fn ids(&self) -> Result<Vec<String>, CheckpointError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| CheckpointError::Io {
            path: self.dir.clone(),
            op: "list",
            source,
        })?;
        Ok(entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let id = name.strip_suffix(".json")?;
                (!id.starts_with('.')).then(|| id.to_string())
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_replace_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        store.create().unwrap();
        assert_eq!(store.load("abc").unwrap(), None);
        let mut cp = Checkpoint::new("abc", "dev1");
        store.save(&cp).unwrap();
        assert_eq!(store.load("abc").unwrap(), Some(cp.clone()));
        cp.position = Position { ts_ns: 5, count: 2 };
        cp.file = Some(FilePos {
            inode: 7,
            offset: 120,
            head: 99,
        });
        cp.inflight = Some(Inflight {
            end: Some(cp.position),
            end_file: cp.file,
            first_ms: 1,
            last_ms: 2,
            events: 3,
            tail_after: Tail { ts_ms: 2, count: 1 },
            started_ms: 9,
        });
        store.save(&cp).unwrap();
        assert_eq!(store.load("abc").unwrap(), Some(cp));
        assert_eq!(store.ids().unwrap(), vec!["abc".to_string()]);
        let names: Vec<_> = std::fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temp file left behind: {names:?}");
        store.remove("abc").unwrap();
        store.remove("abc").unwrap();
        assert_eq!(store.load("abc").unwrap(), None);
    }

    #[test]
    fn a_checkpoint_of_the_api_reader_loads_without_a_file_position() {
        // As an agent that read only the Docker API wrote it.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        store.create().unwrap();
        std::fs::write(
            store.dir().join("old.json"),
            r#"{"container_id":"old","developer":"dev1",
               "position":{"ts_ns":1709210096000000001,"count":3},
               "tail":{"ts_ms":1709210096000,"count":2},
               "inflight":{"end":{"ts_ns":1709210097000000000,"count":1},"first_ms":1,
                           "last_ms":2,"events":3,"tail_after":{"ts_ms":2,"count":1},"started_ms":9}}"#,
        )
        .unwrap();
        let cp = store.load("old").unwrap().unwrap();
        assert_eq!(cp.file, None);
        assert_eq!(cp.position.count, 3);
        let inflight = cp.inflight.clone().unwrap();
        assert_eq!(inflight.end_file, None);
        assert_eq!(inflight.end.unwrap().count, 1);
        // Written back without file fields it is the old format still.
        store.save(&cp).unwrap();
        let text = std::fs::read_to_string(store.dir().join("old.json")).unwrap();
        assert!(!text.contains("file"), "{text}");
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        store.create().unwrap();
        std::fs::write(store.dir().join("x.json"), "{").unwrap();
        let e = store.load("x").unwrap_err();
        assert!(e.to_string().contains("x.json"), "{e}");
    }

    #[test]
    fn tail_counts_events_in_the_last_millisecond() {
        let t = Tail::default().after([5, 7, 7].into_iter());
        assert_eq!(t, Tail { ts_ms: 7, count: 2 });
        let t = t.after([7, 7, 7].into_iter());
        assert_eq!(t, Tail { ts_ms: 7, count: 5 });
        let t = t.after([8].into_iter());
        assert_eq!(t, Tail { ts_ms: 8, count: 1 });
        assert_eq!(t.after(std::iter::empty()), t);
        assert_eq!(t.before(8), 1);
        assert_eq!(t.before(9), 0);
    }
}
