//! CloudFormation's per-template limits, checked on what infra emits: a template past one is
//! refused with the numbers and what to change, instead of failing at deploy time.
//!
//! The parent holds the shared resources, every host's own resources and log groups, and
//! host 1's developers; each child holds one further host's developers. So the parent grows
//! with the number of hosts and with the developers per host, a child with the developers
//! per host.

use crate::Templates;
use serde_json::Value;
use std::fmt;

/// Resources per template.
pub const MAX_RESOURCES: usize = 500;
/// Parameters per template.
pub const MAX_PARAMETERS: usize = 200;
/// Outputs per template.
pub const MAX_OUTPUTS: usize = 200;
/// Template body read from S3, bytes (the only way in for a template this size).
pub const MAX_BODY_BYTES: usize = 1_048_576;

/// A template past a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitError {
    /// `the parent template` or `host 2's child template`.
    pub template: String,
    /// e.g. `resources`.
    pub what: &'static str,
    /// How many it has.
    pub count: usize,
    /// CloudFormation's limit.
    pub limit: usize,
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} would have {} {}, more than CloudFormation's {} per template; lower --developers-per-host (host 1's developers and every host's resources are in the parent, each further host's developers in a child), or --developers",
            self.template, self.count, self.what, self.limit
        )
    }
}

impl std::error::Error for LimitError {}

fn count(template: &Value, section: &str) -> usize {
    template[section].as_object().map_or(0, |m| m.len())
}

/// Checks one template whose rendered body has `body_len` bytes.
pub fn check_one(name: &str, template: &Value, body_len: usize) -> Result<(), LimitError> {
    for (what, n, limit) in [
        ("resources", count(template, "Resources"), MAX_RESOURCES),
        ("parameters", count(template, "Parameters"), MAX_PARAMETERS),
        ("outputs", count(template, "Outputs"), MAX_OUTPUTS),
        ("bytes", body_len, MAX_BODY_BYTES),
    ] {
        if n > limit {
            return Err(LimitError {
                template: name.to_string(),
                what,
                count: n,
                limit,
            });
        }
    }
    Ok(())
}

/// Checks the parent (rendered: `parent_len` bytes) and every child (as pretty JSON, the
/// way they are written).
pub fn check(t: &Templates, parent_len: usize) -> Result<(), LimitError> {
    check_one("the parent template", &t.parent, parent_len)?;
    for c in &t.children {
        let len = serde_json::to_string_pretty(&c.template).map_or(usize::MAX, |s| s.len() + 1);
        check_one(
            &format!("host {}'s child template", c.host),
            &c.template,
            len,
        )?;
    }
    Ok(())
}
