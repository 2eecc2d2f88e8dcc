//! Host logs: journal entries of the units that make the host work, and the
//! kernel's OOM kills, to CloudWatch Logs, exactly once across agent restarts.
//!
//! ## What goes where (stream = the instance id, as for containers)
//! - `logs.docker_group` (`/aws/ec2/<project>/docker`): everything docker.service
//!   and containerd.service write, and systemd's messages about those units
//!   (started, stopped, failed, restarted).
//! - `logs.system_group` (`/aws/ec2/<project>/system`): the kernel's OOM kills
//!   (`Out of memory: Killed process …`, `Memory cgroup out of memory: Killed
//!   process …`, `oom-kill:…`; a container at its memory limit is one of these),
//!   and systemd's messages about csagent.service: starts, exits with their
//!   status, watchdog kills, restarts — what the agent cannot ship itself
//!   because it is not running at that moment.
//! - The agent's own lines are in `logs.agent_group` already ([`super::own`]),
//!   so the system group does not repeat them; with `logs.agent_group = ""`
//!   it carries them from the journal instead.
//!
//! ## How
//! One task per source ([`ship`]): `journalctl --follow --output=json` with the
//! source's matches ([`journal`]) from the checkpointed cursor, selection in
//! [`Source::keeps`], batching by the same limits as containers
//! ([`crate::logs::Batcher`]), delivery by the same sink (read-back settlement
//! of an ambiguous put), and a checkpoint ([`checkpoint`]) with the same
//! in-flight record: written before the put, the cursor advanced after it. A
//! start that finds an in-flight record reads the stream back first, so a
//! SIGKILL at any point neither loses nor repeats a batch.
//!
//! Timestamps never go backwards within a stream: an entry stamped earlier
//! than the last one shipped (the clock was stepped back) is shipped with the
//! last timestamp. The read-back count of an in-flight batch relies on it (no
//! later batch can fall in its time range).
//!
//! ## Limits
//! - Entries the journal no longer holds (vacuumed while the agent was down
//!   or CloudWatch unreachable) cannot be shipped; journalctl resumes at the
//!   oldest entry still there.
//! - Without a checkpoint (first start) reading starts as far back as
//!   CloudWatch accepts events (14 days, or the retention if shorter).

mod checkpoint;
mod journal;
mod ship;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::status::LogsStatusHandle;
use super::{ShipperOptions, Stop};
use crate::aws::Identity;
use crate::config::Config;

pub use checkpoint::{HostCheckpoint, HostInflight, HostStore};
pub use journal::{Entry, Query, args as journalctl_args, parse as parse_entry};

/// The agent's own unit.
pub const AGENT_UNIT: &str = "csagent.service";
/// The container runtime's units.
pub const DOCKER_UNITS: [&str; 2] = ["docker.service", "containerd.service"];

/// One group fed from the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// `system` or `docker`: names the checkpoint and the status entry.
    pub name: &'static str,
    pub group: String,
    /// journalctl match arguments.
    pub matches: Vec<String>,
    /// Kernel entries are read for their OOM kills only.
    pub kernel_oom_only: bool,
}

impl Source {
    /// Whether `entry` (one of those the matches returned) is shipped.
    pub fn keeps(&self, entry: &Entry) -> bool {
        if self.kernel_oom_only && entry.transport.as_deref() == Some("kernel") {
            return is_oom_kill(&entry.message_text());
        }
        true
    }
}

/// A kernel message reporting that the OOM killer killed a process (host-wide
/// or in a memory cgroup such as a container's); not the memory dump before it.
pub fn is_oom_kill(message: &str) -> bool {
    message.starts_with("oom-kill:")
        || message.contains("Out of memory: Killed process")
        || message.contains("out of memory: Killed process")
}

/// The sources `config` asks for (none when host logs are off).
pub fn sources(config: &Config) -> Vec<Source> {
    let l = &config.logs;
    if !l.enabled || !l.host {
        return Vec::new();
    }
    let mut out = Vec::new();
    if let Some(group) = &l.system_group {
        let mut matches = vec![
            "_TRANSPORT=kernel".to_string(),
            "+".to_string(),
            // systemd (PID 1) about the unit.
            format!("UNIT={AGENT_UNIT}"),
            "_PID=1".to_string(),
        ];
        if l.agent_group.is_none() {
            matches.extend(["+".to_string(), format!("_SYSTEMD_UNIT={AGENT_UNIT}")]);
        }
        out.push(Source {
            name: "system",
            group: group.clone(),
            matches,
            kernel_oom_only: true,
        });
    }
    if let Some(group) = &l.docker_group {
        let mut matches: Vec<String> = DOCKER_UNITS
            .iter()
            .map(|u| format!("_SYSTEMD_UNIT={u}"))
            .collect();
        matches.push("+".to_string());
        matches.extend(DOCKER_UNITS.iter().map(|u| format!("UNIT={u}")));
        matches.push("_PID=1".to_string());
        out.push(Source {
            name: "docker",
            group: group.clone(),
            matches,
            kernel_oom_only: false,
        });
    }
    out
}

/// What every source task shares.
pub(crate) struct HostCtx {
    pub(crate) client: aws_sdk_cloudwatchlogs::Client,
    pub(crate) stream: String,
    pub(crate) journal: Option<PathBuf>,
    pub(crate) retention_days: Option<u32>,
    pub(crate) store: HostStore,
    pub(crate) status: LogsStatusHandle,
    pub(crate) options: ShipperOptions,
    pub(crate) stop: Stop,
}

/// Starts one task per source in `tasks`; they end after `stop` (delivering
/// what they hold within the flush time).
pub(crate) fn spawn(
    tasks: &mut JoinSet<()>,
    client: aws_sdk_cloudwatchlogs::Client,
    config: &Config,
    stream: &str,
    status: LogsStatusHandle,
    options: ShipperOptions,
    stop: Stop,
) {
    let sources = sources(config);
    if sources.is_empty() {
        return;
    }
    let ctx = Arc::new(HostCtx {
        client,
        stream: stream.to_string(),
        journal: config.logs.journal.clone(),
        retention_days: config.logs.retention_days,
        store: HostStore::new(&config.agent.state_dir),
        status,
        options,
        stop,
    });
    for source in sources {
        tracing::info!(source = source.name, group = %source.group, "host logs: shipping journal entries");
        tasks.spawn(ship::run(ctx.clone(), source));
    }
}

/// Runs only the host-log sources (no Docker needed): for tests and tools.
/// The agent runs them inside [`super::Shipper`].
pub struct HostShipper {
    client: aws_sdk_cloudwatchlogs::Client,
    config: Config,
    stream: String,
    options: ShipperOptions,
    status: LogsStatusHandle,
}

impl HostShipper {
    pub fn new(
        client: aws_sdk_cloudwatchlogs::Client,
        config: &Config,
        identity: &Identity,
    ) -> HostShipper {
        let status = LogsStatusHandle::default();
        status.set_enabled(config.logs.enabled);
        HostShipper {
            client,
            config: config.clone(),
            stream: identity.instance_id.clone(),
            options: ShipperOptions::default(),
            status,
        }
    }

    pub fn with_options(mut self, options: ShipperOptions) -> Self {
        self.options = options;
        self
    }

    pub fn status_handle(&self) -> LogsStatusHandle {
        self.status.clone()
    }

    /// Ships until `shutdown` becomes true (or its sender is dropped), then
    /// delivers what it holds within the flush timeout.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let stop = Stop::new(shutdown, self.options.flush_timeout);
        let mut tasks = JoinSet::new();
        spawn(
            &mut tasks,
            self.client,
            &self.config,
            &self.stream,
            self.status,
            self.options.clone(),
            stop,
        );
        // After the stop each task delivers what it holds, bounded by the
        // flush timeout, and ends.
        while tasks.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<Config, crate::config::ConfigError> {
        let text = format!("{extra}\n[volume]\ndevice = \"/dev/loop7\"\n");
        Config::from_toml(&text, std::path::Path::new("test.toml"))
    }

    fn entry(transport: &str, message: &str) -> Entry {
        Entry {
            cursor: "c".into(),
            realtime_us: 0,
            message: message.as_bytes().to_vec(),
            identifier: None,
            pid: None,
            transport: Some(transport.into()),
        }
    }

    #[test]
    fn oom_kills_are_recognised_and_the_dump_is_not() {
        for m in [
            "Out of memory: Killed process 1234 (node) total-vm:1kB, anon-rss:1kB",
            "Memory cgroup out of memory: Killed process 99 (node) total-vm:1kB",
            "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),task=node,pid=99,uid=1000",
        ] {
            assert!(is_oom_kill(m), "{m}");
        }
        for m in [
            "node invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0",
            "Mem-Info:",
            "EXT4-fs (loop3): mounted filesystem",
        ] {
            assert!(!is_oom_kill(m), "{m}");
        }
    }

    #[test]
    fn units_go_to_their_groups() {
        let c = parse("").unwrap();
        let s = sources(&c);
        let names: Vec<_> = s.iter().map(|s| (s.name, s.group.as_str())).collect();
        assert_eq!(
            names,
            [
                ("system", "/aws/ec2/code-server-multi-dev/system"),
                ("docker", "/aws/ec2/code-server-multi-dev/docker")
            ]
        );
        assert_eq!(
            s[0].matches,
            ["_TRANSPORT=kernel", "+", "UNIT=csagent.service", "_PID=1"]
        );
        assert_eq!(
            s[1].matches,
            [
                "_SYSTEMD_UNIT=docker.service",
                "_SYSTEMD_UNIT=containerd.service",
                "+",
                "UNIT=docker.service",
                "UNIT=containerd.service",
                "_PID=1"
            ]
        );
        assert!(s[0].keeps(&entry("kernel", "Out of memory: Killed process 1 (x)")));
        assert!(!s[0].keeps(&entry("kernel", "eth0: link up")));
        assert!(s[0].keeps(&entry("journal", "csagent.service: Main process exited")));
        assert!(s[1].keeps(&entry("stdout", "anything")));

        // The agent's own lines come from the journal only when not shipped
        // by the agent itself.
        let c = parse("[logs]\nagent_group = \"\"\n").unwrap();
        assert_eq!(
            sources(&c)[0].matches[4..],
            ["+", "_SYSTEMD_UNIT=csagent.service"]
        );

        let off = ["[logs]\nhost = false\n", "[logs]\nenabled = false\n"];
        for text in off {
            let c = parse(text).unwrap();
            assert!(sources(&c).is_empty(), "{text}");
        }
        let c = parse("[logs]\nsystem_group = \"\"\n").unwrap();
        let names: Vec<_> = sources(&c).iter().map(|s| s.name).collect();
        assert_eq!(names, ["docker"]);
    }
}
