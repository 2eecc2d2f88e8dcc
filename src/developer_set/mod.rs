//! The developer set published in SSM: with `developers.parameter` set, the
//! developers come from that parameter's value (TOML text with exactly the
//! `[[developer]]` tables the config file accepts) instead of the file, and the
//! agent polls it every `developers.poll_interval`. infra writes the parameter, so
//! a stack update adds or removes developers without touching the instance.
//!
//! 1. At start: the last good set saved in the state dir (`saved.rs`) is the
//!    fallback, then the parameter is read (`read.rs`, the retry classifier and
//!    backoff). A restart while SSM is unreachable still starts the right people.
//! 2. Every poll: a new value is checked with the config's own validator against
//!    the file it belongs to, and [`decide`] says what it means: unchanged, the
//!    same developers, a new set to apply, or refused (the last good set stays in
//!    force; status says why, the log says it once).
//! 3. Applying is the agent's reload path (`agent/reload.rs`): added developers
//!    get secrets, log shipping and a container; removed ones are retired, their
//!    data kept; everyone else's container is untouched.
//!
//! [`DeveloperSetStatus`] is what `csagent status` shows.

pub mod decide;
mod read;
mod saved;

use std::time::SystemTime;

pub use decide::{Decision, decide};
pub use read::{ParameterReader, ReadError};
pub use saved::{SavedSet, load_saved, save};

/// One version of the parameter.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Published {
    /// The parameter's name.
    pub parameter: String,
    /// Its value: `[[developer]]` tables.
    pub value: String,
    /// SSM's version number of this value.
    pub version: i64,
    /// When it was written to SSM (LastModifiedDate), in ms since the epoch.
    pub modified_ms: Option<i64>,
}

/// Where the developer set in force comes from and how the last reads went.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeveloperSetStatus {
    /// The SSM parameter; None: the config file lists the developers.
    pub parameter: Option<String>,
    /// SSM version of the set in force (None: none read yet, or from the file).
    pub version: Option<i64>,
    /// When that version was written to SSM.
    pub modified_ms: Option<i64>,
    /// When this agent put the set in force (start, reload or a change).
    pub applied_at: Option<SystemTime>,
    /// The set in force is the copy saved in the state dir: SSM not read since start.
    pub from_saved: bool,
    /// The last successful read of the parameter.
    pub last_read: Option<SystemTime>,
    /// Why the last read failed (None after a successful one).
    pub read_error: Option<String>,
    /// A published version that was refused, and why (the parameter and the key).
    pub refused: Option<Refusal>,
}

/// A value that failed validation; cleared once a good one is in force again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub version: i64,
    pub reason: String,
}
