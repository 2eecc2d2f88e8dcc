//! csagent: a host agent that runs one code-server container per developer.
//!
//! Data flows one way: [`config`] → desired state → reconcilers (volume,
//! secrets, containers, metrics, logs) → Docker/AWS; status reads what the
//! reconcilers observed.

pub mod agent;
pub mod aws;
pub mod cli;
pub mod commands;
pub mod config;
pub mod containers;
pub mod control;
pub mod developer_set;
pub mod exit;
pub mod fsutil;
pub mod logs;
pub mod metrics;
pub mod observe;
pub mod restore;
pub mod retry;
pub mod secrets;
pub mod status;
pub mod supervise;
pub mod tracing_setup;
pub mod volume;

pub use secrets::Secret;
