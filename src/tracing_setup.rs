//! tracing to stderr (journald picks it up), text or JSON; and, when logs are
//! shipped, a copy of the agent's own INFO-and-above lines for CloudWatch Logs
//! (`logs::AgentLogWriter`).

use tracing::Level;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, fmt};

use crate::config::LogFormat;
use crate::logs::AgentLogWriter;

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Installs the global subscriber. `RUST_LOG` wins over the config's level so an
/// admin can turn up one module without editing the file.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // journald adds its own timestamps; keep them anyway for `csagent run` by hand.
    let stderr: BoxedLayer = match format {
        LogFormat::Text => fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(true)
            .with_ansi(is_tty())
            .boxed(),
        LogFormat::Json => fmt::layer()
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .boxed(),
    };
    // CloudWatch stamps each event itself; only our own lines, never the SDK's.
    let ours = filter_fn(|m| m.target().starts_with("csagent") && *m.level() <= Level::INFO);
    let agent_log: BoxedLayer = match format {
        LogFormat::Text => fmt::layer()
            .with_writer(AgentLogWriter)
            .with_ansi(false)
            .without_time()
            .with_filter(ours)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .with_writer(AgentLogWriter)
            .json()
            .flatten_event(true)
            .without_time()
            .with_filter(ours)
            .boxed(),
    };
    let result = tracing_subscriber::registry()
        .with(vec![stderr, agent_log])
        .with(filter)
        .try_init();
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = result;
}

fn is_tty() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}
