//! The table `csagent status` prints from a [`StatusReport`].

use std::borrow::Cow;
use std::io::Write;

use bytesize::ByteSize;

use super::StatusReport;
use crate::volume::QuotaMode;

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
                printable(v.error.as_deref().unwrap_or("unknown"))
            )
        };
        writeln!(out, "volume  {vol}")?;
        if let Some(q) = &v.quota {
            let each = q
                .configured_bytes
                .map(|b| format!(", {} per developer", ByteSize(b).display().iec()))
                .unwrap_or_default();
            let mode = match q.mode {
                QuotaMode::Off => "off (usage only)".to_string(),
                QuotaMode::Enforced => format!("enforced{each}"),
                QuotaMode::NextMount => paint(&format!("applies at the next mount{each}"), "33"),
                QuotaMode::Unavailable => paint(&format!("NOT ENFORCED{each}"), "33"),
            };
            let used: Vec<String> = self
                .developers
                .iter()
                .filter_map(|d| {
                    let used = ByteSize(d.disk_used_bytes?).display().iec();
                    Some(match d.disk_limit_bytes {
                        Some(l) if l > 0 => format!(
                            "{} {used}/{} ({:.0}%)",
                            d.name,
                            ByteSize(l).display().iec(),
                            d.disk_used_bytes.unwrap_or(0) as f64 * 100.0 / l as f64
                        ),
                        _ => format!("{} {used}", d.name),
                    })
                })
                .collect();
            if used.is_empty() {
                writeln!(out, "quota   {mode}")?;
            } else {
                writeln!(out, "quota   {mode} — {}", used.join(", "))?;
            }
        }
        if !v.quarantine.is_empty() {
            let bytes: u64 = v.quarantine.iter().map(|q| q.bytes).sum();
            writeln!(
                out,
                "{}  {} item(s), {} of stray root-disk content (see the warnings)",
                paint("quarantine", "33"),
                v.quarantine.len(),
                ByteSize(bytes).display().iec()
            )?;
        }
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
        let set = &self.developer_set;
        let source = match &set.parameter {
            Some(p) => format!(
                "SSM parameter {} version {}{} (written {}), in force since {}{}",
                printable(p),
                set.version.map_or("-".to_string(), |v| v.to_string()),
                if set.from_saved { ", saved copy" } else { "" },
                set.modified_at.as_deref().unwrap_or("?"),
                set.applied_at.as_deref().unwrap_or("?"),
                if set.refused.is_some() {
                    paint(" — a newer version was REFUSED (see the warnings)", "31")
                } else {
                    String::new()
                }
            ),
            None => format!(
                "the config file, in force since {}",
                set.applied_at.as_deref().unwrap_or("?")
            ),
        };
        writeln!(
            out,
            "team    {} developer(s) from {source}",
            self.developers.len()
        )?;
        if let Some(i) = &self.image {
            let state = match (&i.pulling, &i.last_pull_error, &i.last_pull_at) {
                (Some(p), _, _) => format!(
                    "pulling: {}/{} layers, {} of {}",
                    p.layers_done,
                    p.layers_total,
                    ByteSize(p.bytes_done).display().iec(),
                    ByteSize(p.bytes_total).display().iec()
                ),
                (None, Some(e), at) => paint(
                    &format!(
                        "last pull FAILED at {}: {}",
                        at.as_deref().unwrap_or("?"),
                        printable(e)
                    ),
                    "31",
                ),
                (None, None, Some(at)) => format!("last pull ok at {at}"),
                (None, None, None) => "not pulled by this agent".to_string(),
            };
            writeln!(
                out,
                "image   {} (registry {}, auth {}) — {state}",
                printable(&i.reference),
                printable(&i.registry),
                i.auth
            )?;
        }
        if let Some(r) = &self.rollout {
            let total = r.done.len() + r.pending.len();
            let line = match (&r.halted, &r.in_flight) {
                (Some(why), _) => paint(&format!("HALTED: {}", printable(why)), "31"),
                (None, Some(dev)) => format!(
                    "{}: {} of {total} done; waiting for {} to become healthy ({}s)",
                    r.state,
                    r.done.len(),
                    printable(dev),
                    r.in_flight_secs.unwrap_or(0)
                ),
                (None, None) => format!("{}: {} of {total} done", r.state, r.done.len()),
            };
            writeln!(out, "rollout {} — {line}", r.strategy)?;
        }
        for (name, h) in &self.host_logs {
            let state = match (h.reading, &h.last_error) {
                (true, None) => format!(
                    "up to {}, lag {:.0}s, {} shipped",
                    h.cursor_at.as_deref().unwrap_or("nothing yet"),
                    h.lag_secs,
                    h.shipped_events
                ),
                (true, Some(e)) => paint(
                    &format!(
                        "up to {}, retrying: {}",
                        h.cursor_at.as_deref().unwrap_or("nothing yet"),
                        printable(e)
                    ),
                    "33",
                ),
                (false, e) => paint(
                    &format!(
                        "not reading: {}",
                        printable(e.as_deref().unwrap_or("starting"))
                    ),
                    "33",
                ),
            };
            writeln!(out, "hostlog {name} → {} — {state}", printable(&h.group))?;
        }
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
            let (d_state, d_health) = (printable(&d.state), printable(&d.health));
            let state = match d.state.as_str() {
                "running" => paint(&format!("{d_state:<10}"), "32"),
                _ => paint(&format!("{d_state:<10}"), "31"),
            };
            let health = match d.health.as_str() {
                "healthy" => paint(&format!("{d_health:<9}"), "32"),
                "starting" | "none" => format!("{d_health:<9}"),
                _ => paint(&format!("{d_health:<9}"), "31"),
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
                    short_id(v),
                    human_secs(age),
                    if d.pending_rotation { " ROT" } else { "" }
                ),
                (Some(v), None) => format!(
                    "{}{}",
                    short_id(v),
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
                writeln!(out, "{} {}", paint("warning:", "33"), printable(w))?;
            }
        }
        Ok(())
    }
}

/// The first 8 characters of a version id, for the table. Ids come from AWS:
/// cut on a character boundary, never a byte index, so no value can panic here.
pub fn short_id(id: &str) -> &str {
    id.char_indices().nth(8).map_or(id, |(end, _)| &id[..end])
}

/// `text` (from a container log, Docker or AWS) made safe for an admin's
/// terminal: escape sequences (CSI, OSC, other ESC pairs) are removed and any
/// other control character, C1 included, shows as U+FFFD, so a log line cannot
/// move the cursor, retitle the terminal or hide the rest of the report.
pub fn printable(text: &str) -> Cow<'_, str> {
    let is_control = |c: char| c.is_control() && c != '\t';
    if !text.chars().any(is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                // CSI: parameters and intermediates up to a final byte @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC, DCS, SOS, PM, APC: up to BEL or ST (ESC \\).
                Some(']' | 'P' | 'X' | '^' | '_') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' {
                            break;
                        }
                        if c == '\x1b' && chars.peek() == Some(&'\\') {
                            chars.next();
                            break;
                        }
                    }
                }
                // Any other ESC pair (and a lone trailing ESC) goes too.
                _ => {}
            },
            '\t' => out.push(c),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
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
    fn version_ids_are_cut_on_characters_whatever_they_hold() {
        assert_eq!(short_id("0123456789abcdef"), "01234567");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(short_id(""), "");
        assert_eq!(short_id("ééééééééé"), "éééééééé");
        assert_eq!(short_id("版本版本版本版本版本"), "版本版本版本版本");
        assert_eq!(short_id("a🦀b🦀c🦀d🦀e"), "a🦀b🦀c🦀d🦀");
    }

    #[test]
    fn escape_sequences_and_controls_never_reach_the_terminal() {
        assert_eq!(printable("plain line"), "plain line");
        assert!(matches!(printable("plain"), Cow::Borrowed(_)));
        assert_eq!(printable("\x1b[2J\x1b[1;31mred\x1b[0m ok"), "red ok");
        assert_eq!(printable("\x1b]0;owned title\x07after"), "after");
        assert_eq!(
            printable("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\"),
            "link"
        );
        assert_eq!(
            printable("a\rb\x08c\u{9b}31md"),
            "a\u{fffd}b\u{fffd}c\u{fffd}31md"
        );
        assert_eq!(printable("tab\tkept"), "tab\tkept");
        assert_eq!(printable("trailing \x1b"), "trailing ");
        assert_eq!(printable("\x1b[12;"), "", "an unterminated CSI goes whole");
    }

    /// Every string in a report can come from Docker, AWS or a container: none
    /// of them, however odd, may panic the table or leak an escape sequence.
    #[test]
    fn outside_strings_render_without_panic_or_escapes() {
        let mut d = row("dev1", "running\x1b[2J", "\u{9b}healthy");
        d.password_version = Some("版本-ü-🦀-0123456789".into());
        d.password_age_secs = Some(30);
        d.crash_looping = true;
        d.last_log_lines = vec!["\x1b]0;pwned\x07boom \u{fffd} é".into()];
        d.problem = Some("bad \x1b[31mthing".into());
        let mut r = StatusReport {
            developers: vec![d.clone()],
            ..Default::default()
        };
        r.volume.error = Some("blkid: \x1b[1mgone".into());
        r.finish(None, Duration::from_secs(300));
        let mut out = Vec::new();
        r.render(&mut out, false).expect("render");
        let text = String::from_utf8(out).expect("utf8");
        assert!(!text.contains('\x1b') && !text.contains('\u{9b}'), "{text}");
        assert!(text.contains("版本-ü-🦀-0 30s"), "{text}");
        assert!(text.contains("boom"), "{text}");
        d.password_age_secs = None;
        r.developers = vec![d];
        r.render(&mut Vec::new(), true).expect("render with colour");
    }

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
