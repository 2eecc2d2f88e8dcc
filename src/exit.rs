//! Process exit codes. The systemd unit's RestartPreventExitStatus uses CONFIG.

/// Everything converged / all developers healthy.
pub const OK: i32 = 0;
/// A run failed (restart me), or `status` found something degraded.
pub const FAILED: i32 = 1;
/// The config is invalid: restarting will not help, an admin must edit it.
/// `status` also uses 2 when the agent cannot be reached.
pub const CONFIG: i32 = 2;
