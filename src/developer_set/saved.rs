//! The last good set, saved in `<state_dir>/developer-set.json` (atomic write)
//! so that a restart while SSM is unreachable still starts the right developers.
//! Not a secret: names and ports.

use std::path::{Path, PathBuf};

use super::Published;

/// The file under the state dir.
pub const FILE: &str = "developer-set.json";

/// What was saved, read back.
pub type SavedSet = Published;

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// The saved set for `parameter`; None when there is none, it names another
/// parameter, or it cannot be read (said in the log: the parameter is read next).
pub fn load_saved(state_dir: &Path, parameter: &str) -> Option<SavedSet> {
    let p = path(state_dir);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %p.display(), error = %e, "cannot read the saved developer set");
            return None;
        }
    };
    match serde_json::from_slice::<SavedSet>(&bytes) {
        Ok(s) if s.parameter == parameter => Some(s),
        Ok(s) => {
            tracing::info!(saved = %s.parameter, configured = %parameter, "the saved developer set is of another parameter; not used");
            None
        }
        Err(e) => {
            tracing::warn!(path = %p.display(), error = %e, "the saved developer set is corrupt; not used");
            None
        }
    }
}

/// Saves `set` as the last good one.
pub fn save(state_dir: &Path, set: &Published) -> std::io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    let body = serde_json::to_vec_pretty(set).map_err(std::io::Error::other)?;
    let perms = crate::fsutil::Perms {
        mode: Some(0o644),
        owner: None,
    };
    crate::fsutil::write_atomic(&path(state_dir), &body, perms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_round_trips_and_another_parameter_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        assert_eq!(load_saved(&state, "/p/csagent/host-1/developers"), None);
        let set = Published {
            parameter: "/p/csagent/host-1/developers".into(),
            value: "[[developer]]\nname = \"dev1\"\n".into(),
            version: 3,
            modified_ms: Some(1_700_000_000_000),
        };
        save(&state, &set).expect("save");
        assert_eq!(
            load_saved(&state, "/p/csagent/host-1/developers"),
            Some(set)
        );
        assert_eq!(load_saved(&state, "/p/csagent/host-2/developers"), None);
        std::fs::write(state.join(FILE), b"{ torn").expect("write");
        assert_eq!(load_saved(&state, "/p/csagent/host-1/developers"), None);
    }
}
