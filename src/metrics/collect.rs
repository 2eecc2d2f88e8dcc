//! Gathering one interval's numbers: the host through sysinfo and statvfs, each
//! developer's container straight from Docker (inspect + one stats sample) and its
//! code-server's `/healthz`. Nothing here depends on the reconciler having run, so
//! metrics keep flowing while the reconciler is stuck.
//!
//! CPU: `docker stats` computes CPU% from two samples (`precpu_stats` and
//! `cpu_stats`). Asking the daemon for that (`one-shot=false`) makes it wait for its
//! next 1-second sample, per container, and measures only that second. So the first
//! time a container is seen it is asked that way (a truthful value right away);
//! after that it is asked `one-shot=true` (answers at once, no `precpu`) and the CPU%
//! is computed with docker's own formula against *our* previous sample: the average
//! over the whole interval, which is what a 60-second datapoint should mean. A
//! container that restarted (new id, or its counters went backwards) starts over.
//!
//! Memory: exactly `docker stats`' number: `usage` minus `total_inactive_file`
//! (cgroup v1) or `inactive_file` (cgroup v2) when smaller than `usage`; percent of
//! `memory_stats.limit` (the container's limit, or the host's memory without one).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    ContainerInspectResponse, ContainerMemoryStats, ContainerStatsResponse, HealthStatusEnum,
};
use bollard::query_parameters::{InspectContainerOptions, StatsOptionsBuilder};
use futures_util::StreamExt;
use sysinfo::{MemoryRefreshKind, System};

use crate::config::Developer;
use crate::containers::spec::{
    CONTAINER_PORT, LABEL_DEVELOPER, LABEL_MANAGED, LABEL_PROJECT, container_name,
};
use crate::secrets::is_idle;

/// Longest wait for one Docker call (a stats call with `one-shot=false` takes ~1-2 s).
const DOCKER_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, PartialEq)]
pub struct DiskSample {
    /// The mount point it was measured at (the `path` dimension).
    pub path: String,
    /// `df`'s Use%: used / (used + available to non-root) × 100.
    pub used_percent: f64,
    /// Bytes available to non-root users (`df`'s Avail).
    pub free_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostSample {
    /// (total − available) / total × 100, as the CloudWatch agent computes it.
    pub mem_used_percent: Option<f64>,
    pub disks: Vec<DiskSample>,
}

/// One developer's container in one interval. A stopped or missing container is
/// running 0, healthy 0, active 0 and uses no CPU or memory.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeveloperSample {
    pub developer: String,
    pub running: bool,
    /// Docker's health check says healthy (and the container runs).
    pub healthy: bool,
    /// Percent of the container's CPU limit; None when stats could not be read.
    pub cpu_percent: Option<f64>,
    pub mem_used_bytes: Option<u64>,
    /// Percent of the container's memory limit.
    pub mem_used_percent: Option<f64>,
    /// Docker's restart count of the current container.
    pub restarts: i64,
    /// code-server's `/healthz` reports `"alive"` (a recent heartbeat).
    pub active: bool,
}

impl DeveloperSample {
    fn absent(developer: &str, restarts: i64) -> DeveloperSample {
        DeveloperSample {
            developer: developer.to_string(),
            running: false,
            healthy: false,
            cpu_percent: Some(0.0),
            mem_used_bytes: Some(0),
            mem_used_percent: Some(0.0),
            restarts,
            active: false,
        }
    }
}

/// Cumulative CPU counters of one container at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuReading {
    pub container_id: String,
    /// Container CPU time, ns.
    pub total_usage: u64,
    /// Host CPU time over all CPUs, ns (`system_cpu_usage`).
    pub system_usage: u64,
    pub online_cpus: u32,
}

impl CpuReading {
    fn from_stats(container_id: &str, s: &ContainerStatsResponse, pre: bool) -> Option<Self> {
        let cpu = if pre {
            s.precpu_stats.as_ref()?
        } else {
            s.cpu_stats.as_ref()?
        };
        let total_usage = cpu.cpu_usage.as_ref()?.total_usage?;
        let system_usage = cpu.system_cpu_usage?;
        let online_cpus = cpu.online_cpus.filter(|n| *n > 0).unwrap_or_else(|| {
            cpu.cpu_usage
                .as_ref()
                .and_then(|u| u.percpu_usage.as_ref())
                .map_or(0, |v| v.len() as u32)
        });
        Some(CpuReading {
            container_id: container_id.to_string(),
            total_usage,
            system_usage,
            online_cpus,
        })
    }
}

/// docker's CPU% (`calculateCPUPercentUnix`: 100 = one whole CPU) between two
/// readings; None when they do not make a valid pair (restart, same instant).
pub fn docker_cpu_percent(prev: &CpuReading, cur: &CpuReading) -> Option<f64> {
    if prev.container_id != cur.container_id
        || cur.total_usage < prev.total_usage
        || cur.system_usage <= prev.system_usage
    {
        return None;
    }
    let cpu_delta = (cur.total_usage - prev.total_usage) as f64;
    let system_delta = (cur.system_usage - prev.system_usage) as f64;
    let online = f64::from(cur.online_cpus.max(1));
    Some(cpu_delta / system_delta * online * 100.0)
}

/// `docker stats`' memory usage (`calculateMemUsageUnixNoCache`).
pub fn docker_mem_used(m: &ContainerMemoryStats) -> Option<u64> {
    let usage = m.usage?;
    let stats = m.stats.as_ref();
    let get = |k: &str| stats.and_then(|s| s.get(k)).copied();
    if let Some(v) = get("total_inactive_file")
        && v < usage
    {
        return Some(usage - v);
    }
    if let Some(v) = get("inactive_file")
        && v < usage
    {
        return Some(usage - v);
    }
    Some(usage)
}

/// The CPU limit in CPUs: `NanoCpus`, else quota/period, else None (unlimited).
fn cpu_limit(c: &ContainerInspectResponse) -> Option<f64> {
    let hc = c.host_config.as_ref()?;
    if let Some(n) = hc.nano_cpus.filter(|n| *n > 0) {
        return Some(n as f64 / 1e9);
    }
    match (hc.cpu_quota, hc.cpu_period) {
        (Some(q), Some(p)) if q > 0 && p > 0 => Some(q as f64 / p as f64),
        _ => None,
    }
}

/// The host port code-server's 8080 is published on.
fn published_port(c: &ContainerInspectResponse) -> Option<u16> {
    c.host_config
        .as_ref()?
        .port_bindings
        .as_ref()?
        .get(CONTAINER_PORT)?
        .as_ref()?
        .iter()
        .find_map(|b| b.host_port.as_deref()?.parse().ok())
}

/// statvfs on `path`, in `df`'s terms.
pub fn disk_usage(path: &Path) -> Result<DiskSample, nix::Error> {
    let s = nix::sys::statvfs::statvfs(path)?;
    let frag = s.fragment_size() as u64;
    let blocks = s.blocks() as u64;
    let used = blocks.saturating_sub(s.blocks_free() as u64) * frag;
    let avail = s.blocks_available() as u64 * frag;
    let used_percent = if used + avail == 0 {
        0.0
    } else {
        used as f64 / (used + avail) as f64 * 100.0
    };
    Ok(DiskSample {
        path: path.display().to_string(),
        used_percent,
        free_bytes: avail,
    })
}

/// Gathers samples; keeps the previous CPU reading per developer.
pub struct Collector {
    docker: Docker,
    project: String,
    developers: Vec<Developer>,
    disks: Vec<std::path::PathBuf>,
    system: System,
    cpu_prev: HashMap<String, CpuReading>,
}

impl Collector {
    pub fn new(
        docker: Docker,
        project: &str,
        developers: Vec<Developer>,
        mount_point: &Path,
    ) -> Collector {
        let mut disks = vec![mount_point.to_path_buf()];
        if mount_point != Path::new("/") {
            disks.push("/".into());
        }
        Collector {
            docker,
            project: project.to_string(),
            developers,
            disks,
            system: System::new(),
            cpu_prev: HashMap::new(),
        }
    }

    /// How many disk paths are measured (for sizing the buffer).
    pub fn disk_count(&self) -> usize {
        self.disks.len()
    }

    pub fn developer_count(&self) -> usize {
        self.developers.len()
    }

    pub fn host(&mut self) -> HostSample {
        self.system
            .refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        let total = self.system.total_memory();
        let mem_used_percent = (total > 0).then(|| {
            total.saturating_sub(self.system.available_memory()) as f64 / total as f64 * 100.0
        });
        let mut disks = Vec::with_capacity(self.disks.len());
        for path in &self.disks {
            match disk_usage(path) {
                Ok(d) => disks.push(d),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "metrics: statvfs failed; disk metrics for this path skipped")
                }
            }
        }
        HostSample {
            mem_used_percent,
            disks,
        }
    }

    /// Every configured developer, concurrently. A developer whose container Docker
    /// could not report on (daemon down) is left out and logged.
    pub async fn developers(&mut self) -> Vec<DeveloperSample> {
        let prev = &self.cpu_prev;
        let jobs = self.developers.iter().map(|d| {
            let prev = prev.get(&d.name).cloned();
            observe(&self.docker, &self.project, d, prev)
        });
        let results = futures_util::future::join_all(jobs).await;
        let mut out = Vec::with_capacity(results.len());
        for (d, r) in self.developers.iter().zip(results) {
            match r {
                Ok((sample, reading)) => {
                    match reading {
                        Some(r) => self.cpu_prev.insert(d.name.clone(), r),
                        None => self.cpu_prev.remove(&d.name),
                    };
                    out.push(sample);
                }
                Err(e) => {
                    tracing::warn!(developer = %d.name, error = %e, "metrics: cannot read the container's state from Docker; its metrics are skipped this interval");
                }
            }
        }
        out
    }
}

async fn stats_once(
    docker: &Docker,
    name: &str,
    one_shot: bool,
) -> Result<ContainerStatsResponse, String> {
    let opts = StatsOptionsBuilder::new()
        .stream(false)
        .one_shot(one_shot)
        .build();
    let what = format!("docker stats {name}");
    let next = tokio::time::timeout(DOCKER_TIMEOUT, docker.stats(name, Some(opts)).next()).await;
    match next {
        Ok(Some(Ok(s))) => Ok(s),
        Ok(Some(Err(e))) => Err(format!("{what}: {e}")),
        Ok(None) => Err(format!("{what}: empty answer")),
        Err(_) => Err(format!("{what}: no answer within {DOCKER_TIMEOUT:?}")),
    }
}

/// One developer: its sample and the CPU reading to compare against next time.
async fn observe(
    docker: &Docker,
    project: &str,
    dev: &Developer,
    prev: Option<CpuReading>,
) -> Result<(DeveloperSample, Option<CpuReading>), String> {
    let name = container_name(&dev.name);
    let inspected = tokio::time::timeout(
        DOCKER_TIMEOUT,
        docker.inspect_container(&name, None::<InspectContainerOptions>),
    )
    .await;
    let c = match inspected {
        Ok(Ok(c)) => c,
        Ok(Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        })) => return Ok((DeveloperSample::absent(&dev.name, 0), None)),
        Ok(Err(e)) => return Err(format!("docker inspect {name}: {e}")),
        Err(_) => {
            return Err(format!(
                "docker inspect {name}: no answer within {DOCKER_TIMEOUT:?}"
            ));
        }
    };
    let labels = c.config.as_ref().and_then(|c| c.labels.as_ref());
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    let ours = label(LABEL_MANAGED) == Some("true")
        && label(LABEL_DEVELOPER) == Some(dev.name.as_str())
        && label(LABEL_PROJECT).is_none_or(|p| p == project);
    if !ours {
        // Someone else's container under our name: not this developer's.
        return Ok((DeveloperSample::absent(&dev.name, 0), None));
    }
    let restarts = c.restart_count.unwrap_or(0);
    let state = c.state.as_ref();
    let running = state.and_then(|s| s.running).unwrap_or(false);
    if !running {
        return Ok((DeveloperSample::absent(&dev.name, restarts), None));
    }
    let healthy = state.and_then(|s| s.health.as_ref()).and_then(|h| h.status)
        == Some(HealthStatusEnum::HEALTHY);
    let id = c.id.clone().unwrap_or_else(|| name.clone());
    let port = published_port(&c).unwrap_or(dev.port);

    let stats_job = async {
        let prev = prev.filter(|p| p.container_id == id);
        let first = stats_once(docker, &name, prev.is_some()).await?;
        let cur = CpuReading::from_stats(&id, &first, false);
        let interval_pct = match (&prev, &cur) {
            (Some(p), Some(c)) => docker_cpu_percent(p, c),
            _ => None,
        };
        let (pct, stats) = match interval_pct {
            Some(p) => (Some(p), first),
            None => {
                // No usable previous reading: the daemon's own two samples.
                let s = if prev.is_some() {
                    stats_once(docker, &name, false).await?
                } else {
                    first
                };
                let pre = CpuReading::from_stats(&id, &s, true);
                let now = CpuReading::from_stats(&id, &s, false);
                let pct = match (&pre, &now) {
                    (Some(a), Some(b)) => docker_cpu_percent(a, b).or(Some(0.0)),
                    _ => None,
                };
                (pct, s)
            }
        };
        Ok::<_, String>((pct, stats))
    };
    let (stats, alive) = tokio::join!(stats_job, is_idle(port));
    let active = alive == Some(false);

    let (cpu_percent, mem_used_bytes, mem_used_percent, reading) = match stats {
        Ok((pct, s)) => {
            let online = s
                .cpu_stats
                .as_ref()
                .and_then(|c| c.online_cpus)
                .filter(|n| *n > 0)
                .map_or(1.0, f64::from);
            let limit = cpu_limit(&c).unwrap_or(online);
            let cpu = pct.map(|p| p / limit);
            let mem = s.memory_stats.as_ref();
            let used = mem.and_then(docker_mem_used);
            let mem_limit = mem.and_then(|m| m.limit).filter(|l| *l > 0).or_else(|| {
                c.host_config
                    .as_ref()
                    .and_then(|h| h.memory)
                    .filter(|m| *m > 0)
                    .map(|m| m as u64)
            });
            let pct_mem = match (used, mem_limit) {
                (Some(u), Some(l)) => Some(u as f64 / l as f64 * 100.0),
                _ => None,
            };
            (cpu, used, pct_mem, CpuReading::from_stats(&id, &s, false))
        }
        Err(e) => {
            tracing::warn!(developer = %dev.name, error = %e, "metrics: container stats unavailable this interval");
            (None, None, None, None)
        }
    };
    Ok((
        DeveloperSample {
            developer: dev.name.clone(),
            running,
            healthy,
            cpu_percent,
            mem_used_bytes,
            mem_used_percent,
            restarts,
            active,
        },
        reading,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(id: &str, total: u64, system: u64) -> CpuReading {
        CpuReading {
            container_id: id.into(),
            total_usage: total,
            system_usage: system,
            online_cpus: 2,
        }
    }

    #[test]
    fn cpu_percent_is_dockers_formula() {
        // 0.5 s of container CPU over 2 s of host CPU time on 2 CPUs (1 s wall):
        // half a CPU = 50%.
        let p = docker_cpu_percent(
            &reading("a", 1_000_000_000, 10_000_000_000),
            &reading("a", 1_500_000_000, 12_000_000_000),
        );
        assert_eq!(p, Some(50.0));
        // Restarted container or counters going backwards: no value.
        assert_eq!(
            docker_cpu_percent(&reading("a", 10, 10), &reading("b", 20, 20)),
            None
        );
        assert_eq!(
            docker_cpu_percent(&reading("a", 10, 10), &reading("a", 5, 20)),
            None
        );
        assert_eq!(
            docker_cpu_percent(&reading("a", 10, 10), &reading("a", 10, 10)),
            None
        );
    }

    #[test]
    fn memory_matches_docker_stats_on_v1_and_v2() {
        let m = |usage: u64, stats: &[(&str, u64)]| ContainerMemoryStats {
            usage: Some(usage),
            stats: Some(stats.iter().map(|(k, v)| (k.to_string(), *v)).collect()),
            ..Default::default()
        };
        // cgroup v1: total_inactive_file is subtracted (not `cache`).
        assert_eq!(
            docker_mem_used(&m(
                1000,
                &[
                    ("total_inactive_file", 300),
                    ("cache", 500),
                    ("inactive_file", 100)
                ]
            )),
            Some(700)
        );
        // cgroup v2.
        assert_eq!(
            docker_mem_used(&m(1000, &[("inactive_file", 100)])),
            Some(900)
        );
        // Never below zero.
        assert_eq!(
            docker_mem_used(&m(100, &[("total_inactive_file", 300)])),
            Some(100)
        );
        assert_eq!(docker_mem_used(&ContainerMemoryStats::default()), None);
    }

    #[test]
    fn root_disk_is_measurable() {
        let d = disk_usage(Path::new("/")).expect("statvfs /");
        assert!((0.0..=100.0).contains(&d.used_percent), "{d:?}");
        assert_eq!(d.path, "/");
    }
}
