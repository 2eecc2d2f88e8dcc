//! The small checks every section uses; each error names the key it was given.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

use bytesize::ByteSize;

use super::Validator;
use crate::config::ConfigError;

impl Validator<'_> {
    pub(super) fn absolute(&self, key: &str, p: &Path) -> Result<(), ConfigError> {
        if p.is_absolute() {
            Ok(())
        } else {
            Err(self.err(key, format!("{} must be an absolute path", p.display())))
        }
    }

    pub(super) fn duration(&self, key: &str, s: &str) -> Result<Duration, ConfigError> {
        humantime::parse_duration(s).map_err(|e| {
            self.err(
                key,
                format!("{s:?} is not a duration like \"60s\" or \"5m\": {e}"),
            )
        })
    }

    /// A duration key: parsed when written, `default` when absent.
    pub(super) fn duration_or(
        &self,
        key: &str,
        written: Option<&str>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        written.map_or(Ok(default), |s| self.duration(key, s))
    }

    pub(super) fn at_least(&self, key: &str, d: Duration, secs: u64) -> Result<(), ConfigError> {
        if d < Duration::from_secs(secs) {
            Err(self.err(key, format!("must be at least {secs}s")))
        } else {
            Ok(())
        }
    }

    pub(super) fn size(&self, key: &str, s: &str) -> Result<u64, ConfigError> {
        // Require a unit: a bare "4" is almost certainly a mistake for 4GiB.
        let has_unit = s
            .trim()
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphabetic());
        let parsed = if has_unit {
            s.trim().parse::<ByteSize>().ok()
        } else {
            None
        };
        match parsed {
            Some(b) if b.as_u64() > 0 => Ok(b.as_u64()),
            _ => Err(self.err(
                key,
                format!("{s:?} is not a size like \"4GiB\" or \"512MiB\""),
            )),
        }
    }

    /// A size key: parsed when written, `default` (bytes) when absent.
    pub(super) fn size_or(
        &self,
        key: &str,
        written: Option<&str>,
        default: u64,
    ) -> Result<u64, ConfigError> {
        written.map_or(Ok(default), |s| self.size(key, s))
    }

    pub(super) fn cpus(&self, key: &str, v: f64) -> Result<f64, ConfigError> {
        if v.is_finite() && (0.01..=64.0).contains(&v) {
            Ok(v)
        } else {
            Err(self.err(key, format!("must be 0.01..=64 CPUs (got {v})")))
        }
    }

    pub(super) fn port(&self, key: &str, p: u32) -> Result<u16, ConfigError> {
        if (1024..=65535).contains(&p) {
            Ok(p as u16)
        } else {
            Err(self.err(key, format!("must be 1024..=65535 (got {p})")))
        }
    }

    pub(super) fn memory_pair(
        &self,
        table: &str,
        memory: u64,
        reservation: u64,
    ) -> Result<(), ConfigError> {
        // Docker refuses limits under 6 MiB; code-server needs far more to start at all.
        if memory < 256 * 1024 * 1024 {
            return Err(self.err(
                format!("{table}.memory"),
                format!("{} is below the 256MiB code-server needs", ByteSize(memory)),
            ));
        }
        if reservation > memory {
            return Err(self.err(
                format!("{table}.memory_reservation"),
                format!(
                    "{} is above {table}.memory {}",
                    ByteSize(reservation),
                    ByteSize(memory)
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn template(&self, key: &str, t: &str) -> Result<(), ConfigError> {
        if !t.contains("{developer}") {
            return Err(self.err(
                key,
                format!("{t:?} must contain {{developer}} so each developer gets their own"),
            ));
        }
        let rest = t.replace("{project}", "").replace("{developer}", "");
        if rest.contains('{') || rest.contains('}') {
            return Err(self.err(
                key,
                format!("{t:?} may use only the placeholders {{project}} and {{developer}}"),
            ));
        }
        Ok(())
    }
}

pub(super) fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit())
}

pub(super) fn is_name(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Developer names become container names, directory names, secret names and log
/// group names (and DNS labels in infra): the contract keeps one definition.
pub use csagent_contract::validate::is_developer_name;

/// Parses "a.b.c.d/n".
/// An IPv6 network in CIDR form with its host bits zero.
pub fn parse_cidr_v6(s: &str) -> Option<(Ipv6Addr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: Ipv6Addr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    if len > 128 {
        return None;
    }
    let host_bits = u128::MAX.checked_shr(u32::from(len)).unwrap_or(0);
    (u128::from(ip) & host_bits == 0).then_some((ip, len))
}

pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    (len <= 32).then_some((ip, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_networks_need_zero_host_bits() {
        assert_eq!(
            parse_cidr_v6("fd00:c5a::/64"),
            Some(("fd00:c5a::".parse().unwrap(), 64))
        );
        assert!(parse_cidr_v6("fd00:c5a:0:0:8000::/65").is_some());
        assert!(parse_cidr_v6("fd00:c5a::1/64").is_none(), "host bits set");
        assert!(parse_cidr_v6("::/0").is_some());
        assert!(parse_cidr_v6("fd00::/129").is_none());
        assert!(parse_cidr_v6("172.30.0.0/24").is_none());
        assert!(parse_cidr_v6("fd00::").is_none(), "no prefix length");
    }
}
