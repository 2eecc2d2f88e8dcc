//! The capacity model: how many developers one host holds.
//!
//! A host of type T (memory `M` GiB, `V` vCPUs) holds `n` developers, each with a memory limit
//! `L` GiB, a soft memory reservation `R` GiB and a CPU limit `C`, when
//!
//! 1. `n × R + H ≤ M`: every developer's reservation plus the host's headroom `H` (OS, agent,
//!    dockerd, journald: [`HEADROOM_GIB`]) fits the memory. The reservation is what Docker
//!    reclaims a container down to when the host runs short, so this is what the host must
//!    be able to give everyone at once; the limit `L` is a per-container ceiling, and
//! 2. `L + H ≤ M`: one developer may use its whole limit;
//! 3. `n × C ≤ V × CPU_OVERCOMMIT`: CPU limits are CFS ceilings, not reservations, and an
//!    IDE is idle most of the time, so twice the vCPUs may be promised ([`CPU_OVERCOMMIT`]).
//!
//! With the agent's defaults (L 4 GiB, R 3 GiB, C 1.5) a t3.2xlarge (32 GiB, 8 vCPUs) holds
//! 10: 10 × 3 + 2 = 32 ≤ 32 and 10 × 1.5 = 15 ≤ 16. The sum of the limits (40 GiB) is
//! above the memory: a memory overcommit of `L / R` that the reservations keep honest.

use crate::settings::Settings;
use std::fmt;

/// Host memory (GiB) kept for the OS, the agent, dockerd and journald.
pub const HEADROOM_GIB: u32 = 2;

/// How many times the vCPUs the developers' CPU limits may add up to.
pub const CPU_OVERCOMMIT: u32 = 2;

/// An instance type infra offers: x86_64 (the AMI is amd64), memory and vCPUs as AWS lists
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceType {
    /// e.g. `t3.2xlarge`.
    pub name: &'static str,
    /// Memory in GiB.
    pub memory_gib: u32,
    /// vCPUs.
    pub vcpus: u32,
}

const fn it(name: &'static str, memory_gib: u32, vcpus: u32) -> InstanceType {
    InstanceType {
        name,
        memory_gib,
        vcpus,
    }
}

/// The instance types infra offers (x86_64, general purpose and memory optimised), from
/// the EC2 instance type pages (December 2026).
pub const INSTANCE_TYPES: [InstanceType; 29] = [
    it("t3.large", 8, 2),
    it("t3.xlarge", 16, 4),
    it("t3.2xlarge", 32, 8),
    it("t3a.large", 8, 2),
    it("t3a.xlarge", 16, 4),
    it("t3a.2xlarge", 32, 8),
    it("m5.large", 8, 2),
    it("m5.xlarge", 16, 4),
    it("m5.2xlarge", 32, 8),
    it("m5.4xlarge", 64, 16),
    it("m5.8xlarge", 128, 32),
    it("m6i.large", 8, 2),
    it("m6i.xlarge", 16, 4),
    it("m6i.2xlarge", 32, 8),
    it("m6i.4xlarge", 64, 16),
    it("m6i.8xlarge", 128, 32),
    it("m7i.large", 8, 2),
    it("m7i.xlarge", 16, 4),
    it("m7i.2xlarge", 32, 8),
    it("m7i.4xlarge", 64, 16),
    it("m7i.8xlarge", 128, 32),
    it("r6i.large", 16, 2),
    it("r6i.xlarge", 32, 4),
    it("r6i.2xlarge", 64, 8),
    it("r6i.4xlarge", 128, 16),
    it("r6i.8xlarge", 256, 32),
    it("c6i.2xlarge", 16, 8),
    it("c6i.4xlarge", 32, 16),
    it("c6i.8xlarge", 64, 32),
];

/// The table entry of `name`.
pub fn instance_type(name: &str) -> Option<InstanceType> {
    INSTANCE_TYPES.iter().copied().find(|t| t.name == name)
}

/// What one developer is given (the agent's `containers.memory`, `memory_reservation`,
/// `cpus`, or the values infra publishes for them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeveloperSize {
    /// Memory limit, GiB.
    pub memory_gib: u32,
    /// Soft memory reservation, GiB.
    pub reservation_gib: u32,
    /// CPU limit in thousandths of a CPU.
    pub cpu_millis: u32,
}

impl DeveloperSize {
    /// The size `settings` asks for.
    pub fn of(s: &Settings) -> Self {
        DeveloperSize {
            memory_gib: s.developer_memory_gib,
            reservation_gib: s.developer_memory_reservation_gib,
            cpu_millis: s.developer_cpu_millis,
        }
    }
}

/// Why `n` developers do not fit a host: the numbers of the rule that fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overload {
    /// Rule 1: `n × R + H > M`.
    Reservations {
        /// Developers on the host.
        n: u32,
        /// Reservation each, GiB.
        reservation_gib: u32,
        /// Instance type.
        host: InstanceType,
    },
    /// Rule 2: `L + H > M`.
    Limit {
        /// Memory limit, GiB.
        memory_gib: u32,
        /// Instance type.
        host: InstanceType,
    },
    /// Rule 3: `n × C > V × CPU_OVERCOMMIT`.
    Cpus {
        /// Developers on the host.
        n: u32,
        /// CPU limit each, thousandths.
        cpu_millis: u32,
        /// Instance type.
        host: InstanceType,
    },
}

/// `1500` → `1.5`.
pub fn cpus_text(millis: u32) -> String {
    let text = format!("{:.3}", f64::from(millis) / 1000.0);
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

impl fmt::Display for Overload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Overload::Reservations {
                n,
                reservation_gib,
                host,
            } => write!(
                f,
                "{n} developers × {reservation_gib} GiB reserved + {HEADROOM_GIB} GiB headroom = {} GiB > {}'s {} GiB",
                n * reservation_gib + HEADROOM_GIB,
                host.name,
                host.memory_gib
            ),
            Overload::Limit { memory_gib, host } => write!(
                f,
                "one developer's {memory_gib} GiB limit + {HEADROOM_GIB} GiB headroom = {} GiB > {}'s {} GiB",
                memory_gib + HEADROOM_GIB,
                host.name,
                host.memory_gib
            ),
            Overload::Cpus {
                n,
                cpu_millis,
                host,
            } => write!(
                f,
                "{n} developers × {} CPUs = {} > {}'s {} vCPUs × {CPU_OVERCOMMIT}",
                cpus_text(cpu_millis),
                cpus_text(n * cpu_millis),
                host.name,
                host.vcpus
            ),
        }
    }
}

/// Whether `n` developers of `size` fit `host`; the first rule that fails otherwise.
pub fn check(host: InstanceType, size: DeveloperSize, n: u32) -> Result<(), Overload> {
    if size.memory_gib + HEADROOM_GIB > host.memory_gib {
        return Err(Overload::Limit {
            memory_gib: size.memory_gib,
            host,
        });
    }
    if n * size.reservation_gib + HEADROOM_GIB > host.memory_gib {
        return Err(Overload::Reservations {
            n,
            reservation_gib: size.reservation_gib,
            host,
        });
    }
    if n * size.cpu_millis > host.vcpus * CPU_OVERCOMMIT * 1000 {
        return Err(Overload::Cpus {
            n,
            cpu_millis: size.cpu_millis,
            host,
        });
    }
    Ok(())
}

/// The most developers of `size` `host` holds (0: not even one), at most `cap`.
pub fn most(host: InstanceType, size: DeveloperSize, cap: u32) -> u32 {
    (1..=cap)
        .take_while(|&n| check(host, size, n).is_ok())
        .last()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: DeveloperSize = DeveloperSize {
        memory_gib: 4,
        reservation_gib: 3,
        cpu_millis: 1500,
    };

    fn host(name: &str) -> InstanceType {
        instance_type(name).unwrap()
    }

    #[test]
    fn a_t3_2xlarge_holds_ten_default_developers() {
        let t3 = host("t3.2xlarge");
        assert_eq!(most(t3, DEFAULT, 64), 10);
        assert_eq!(check(t3, DEFAULT, 8), Ok(()));
        assert_eq!(check(t3, DEFAULT, 9), Ok(()));
        assert_eq!(
            check(t3, DEFAULT, 11).unwrap_err().to_string(),
            "11 developers × 3 GiB reserved + 2 GiB headroom = 35 GiB > t3.2xlarge's 32 GiB"
        );
    }

    #[test]
    fn cpu_and_limit_rules_name_their_numbers() {
        let size = DeveloperSize {
            cpu_millis: 4000,
            ..DEFAULT
        };
        assert_eq!(
            check(host("t3.2xlarge"), size, 5).unwrap_err().to_string(),
            "5 developers × 4 CPUs = 20 > t3.2xlarge's 8 vCPUs × 2"
        );
        // t3.large: 2 × 3 + 2 = 8 ≤ 8 GiB, 2 × 1.5 = 3 ≤ 4; a third does not fit.
        assert_eq!(most(host("t3.large"), DEFAULT, 64), 2);
        let big = DeveloperSize {
            memory_gib: 31,
            ..DEFAULT
        };
        assert_eq!(
            check(host("t3.2xlarge"), big, 1).unwrap_err().to_string(),
            "one developer's 31 GiB limit + 2 GiB headroom = 33 GiB > t3.2xlarge's 32 GiB"
        );
        assert_eq!(most(host("t3.2xlarge"), big, 64), 0);
    }

    #[test]
    fn the_cap_bounds_the_count() {
        assert_eq!(most(host("r6i.8xlarge"), DEFAULT, 64), 42);
        assert_eq!(most(host("r6i.8xlarge"), DEFAULT, 20), 20);
    }

    #[test]
    fn cpus_print_without_trailing_zeros() {
        assert_eq!(cpus_text(1500), "1.5");
        assert_eq!(cpus_text(2000), "2");
        assert_eq!(cpus_text(250), "0.25");
    }
}
