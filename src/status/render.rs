//! The table `csagent status` prints from a [`StatusReport`].

use std::io::Write;

use bytesize::ByteSize;

use super::StatusReport;

impl StatusReport {
    /// Renders the human table. Colours only when `color` (a TTY).
    pub fn render(&self, out: &mut impl Write, color: bool) -> std::io::Result<()> {
        let paint = |s: &str, code: &str| {
            if color {
                format!("\x1b[{code}m{s}\x1b[0m")
            } else {
                s.to_string()
            }
        };
        writeln!(
            out,
            "csagent {} (pid {}, up {}) — {} — project {} — instance {} in {}",
            self.agent.version,
            self.agent.pid,
            human_secs(self.agent.uptime_secs),
            self.agent.phase,
            self.instance.project,
            self.instance.instance_id,
            self.instance.region
        )?;
        let v = &self.volume;
        let vol = if v.mounted {
            format!(
                "{} {} at {} — {} of {} used ({:.0}%)",
                v.volume_id
                    .as_deref()
                    .unwrap_or(v.device.as_deref().unwrap_or("?")),
                v.filesystem.as_deref().unwrap_or("?"),
                v.mount_point,
                ByteSize(v.used_bytes.unwrap_or(0)).display().iec(),
                ByteSize(v.size_bytes.unwrap_or(0)).display().iec(),
                v.used_percent.unwrap_or(0.0)
            )
        } else {
            format!(
                "NOT MOUNTED at {}: {}",
                v.mount_point,
                v.error.as_deref().unwrap_or("unknown")
            )
        };
        writeln!(out, "volume  {vol}")?;
        writeln!(
            out,
            "memory  {} of {} used ({:.0}%)",
            ByteSize(self.host.mem_used_bytes).display().iec(),
            ByteSize(self.host.mem_total_bytes).display().iec(),
            self.host.mem_used_percent
        )?;
        let aws: Vec<String> = self
            .aws_last_success
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.as_deref().unwrap_or("never")))
            .collect();
        writeln!(out, "aws     last success — {}", aws.join(", "))?;
        writeln!(out)?;
        writeln!(
            out,
            "{:<12} {:<24} {:<10} {:<9} {:>7} {:>6} {:>17} {:>4} {:<18} {:>8}",
            "DEVELOPER",
            "URL",
            "STATE",
            "HEALTH",
            "UPTIME",
            "CPU%",
            "MEMORY",
            "RST",
            "CREDENTIALS",
            "LOG LAG"
        )?;
        for d in &self.developers {
            let state = match d.state.as_str() {
                "running" => paint(&format!("{:<10}", d.state), "32"),
                _ => paint(&format!("{:<10}", d.state), "31"),
            };
            let health = match d.health.as_str() {
                "healthy" => paint(&format!("{:<9}", d.health), "32"),
                "starting" | "none" => format!("{:<9}", d.health),
                _ => paint(&format!("{:<9}", d.health), "31"),
            };
            let mem = match d.mem_used_bytes {
                Some(m) => format!(
                    "{}/{}",
                    ByteSize(m).display().iec_short(),
                    ByteSize(d.mem_limit_bytes).display().iec_short()
                ),
                None => format!("-/{}", ByteSize(d.mem_limit_bytes).display().iec_short()),
            };
            let creds = match (&d.password_version, d.password_age_secs) {
                (Some(v), Some(age)) => format!(
                    "{} {}{}",
                    &v[..v.len().min(8)],
                    human_secs(age),
                    if d.pending_rotation { " ROT" } else { "" }
                ),
                (Some(v), None) => format!(
                    "{}{}",
                    &v[..v.len().min(8)],
                    if d.pending_rotation { " ROT" } else { "" }
                ),
                _ => "-".to_string(),
            };
            writeln!(
                out,
                "{:<12} {:<24} {} {} {:>7} {:>6} {:>17} {:>4} {:<18} {:>8}",
                d.name,
                d.url,
                state,
                health,
                d.uptime_secs.map(human_secs).unwrap_or_else(|| "-".into()),
                d.cpu_percent
                    .map(|c| format!("{c:.1}"))
                    .unwrap_or_else(|| "-".into()),
                mem,
                d.restarts,
                creds,
                d.log_lag_secs
                    .map(|l| format!("{l:.0}s"))
                    .unwrap_or_else(|| "-".into()),
            )?;
        }
        if !self.warnings.is_empty() {
            writeln!(out)?;
            for w in &self.warnings {
                writeln!(out, "{} {w}", paint("warning:", "33"))?;
            }
        }
        Ok(())
    }
}

pub fn human_secs(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::status::tests::row;

    #[test]
    fn table_has_a_row_per_developer_and_no_colour_off_tty() {
        let mut r = StatusReport {
            developers: vec![
                row("dev1", "running", "healthy"),
                row("dev2", "missing", "none"),
            ],
            ..Default::default()
        };
        r.finish(None, Duration::from_secs(300));
        let mut out = Vec::new();
        r.render(&mut out, false).expect("render");
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.contains("dev1") && text.contains("dev2"));
        assert!(!text.contains('\x1b'));
    }
}
