//! README.md's "Configuration reference" table and `packaging/config.toml` state the
//! defaults an admin reads; these tests hold both to the constants in `defaults.rs`.
//!
//! A stated default is checked by writing it into a config and parsing that the way
//! the agent does: the result must equal the config with the key left out. So "4GiB"
//! is compared as a size, "60s" as a duration, `{project}` templates after rendering.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value as Json;
use toml::Value;

use super::Config;

/// Every key that has a literal default; both documents must state each one once.
const DEFAULTED_KEYS: &[&str] = &[
    "project",
    "volume.mount_point",
    "volume.filesystem",
    "volume.label",
    "volume.wait_timeout",
    "volume.fstab",
    "volume.by_id_dir",
    "containers.image",
    "containers.pull",
    "containers.registry_auth",
    "containers.base_port",
    "containers.cpus",
    "containers.memory",
    "containers.memory_reservation",
    "containers.pids_limit",
    "containers.uid",
    "containers.gid",
    "containers.network",
    "containers.subnet",
    "containers.log_max_size",
    "containers.log_max_files",
    "containers.health_interval",
    "containers.health_start_period",
    "containers.stop_grace",
    "containers.block_metadata",
    "containers.isolate_host",
    "containers.sudo",
    "developers.count",
    "developers.poll_interval",
    "secrets.password_name",
    "secrets.claude_api_key_name",
    "secrets.poll_interval",
    "secrets.apply",
    "secrets.max_delay",
    "rollout.strategy",
    "rollout.apply",
    "rollout.max_delay",
    "rollout.health_timeout",
    "metrics.enabled",
    "metrics.namespace",
    "metrics.interval",
    "logs.enabled",
    "logs.group",
    "logs.agent_group",
    "logs.retention_days",
    "logs.host",
    "logs.system_group",
    "logs.docker_group",
    "logs.hold_rotated_files",
    "agent.state_dir",
    "agent.runtime_dir",
    "agent.socket",
    "agent.socket_group",
    "agent.log_format",
    "agent.log_level",
];

/// Keys the documents may show without a default (read from IMDSv2, or one of the
/// two volume keys, which is required). `[[developer]]` lines are examples too.
const NO_DEFAULT: &[&str] = &[
    "region",
    "instance_id",
    "aws.endpoint_url",
    "volume.volume_id",
    "volume.device",
    "containers.subnet_v6",
    "logs.journal",
    "developers.parameter",
    "containers.disk_quota",
];

/// The required key, so that every other key can be left out.
const DEVICE: (&str, &str) = ("volume.device", "/dev/loop7");

/// One stated default: key, the value as written, and where (for messages).
struct Stated {
    key: String,
    raw: String,
    at: String,
}

fn read(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `key | default | meaning` rows of README.md's configuration reference that
/// give a literal (backquoted) default. A row may name several keys of one table
/// (`containers.uid` / `gid`), with one default each or one for all.
fn readme_defaults(readme: &str) -> Result<Vec<Stated>, String> {
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Configuration reference"))
        .ok_or("README.md has no \"## Configuration reference\"")?;
    let mut rows = section.lines().filter(|l| l.starts_with('|'));
    if rows.next().map(cells) != Some(vec!["key", "default", "meaning"]) {
        return Err("README.md: the table's columns are no longer key | default | meaning".into());
    }
    let mut out = Vec::new();
    for row in rows.skip(1) {
        let [key_cell, default_cell, ..] = cells(row)[..] else {
            return Err(format!("README.md: cannot read row {row:?}"));
        };
        let keys = quoted(key_cell);
        let defaults = quoted(default_cell);
        if defaults.is_empty() {
            continue;
        }
        let table = keys.first().and_then(|k| k.split_once('.')).map(|(t, _)| t);
        for (i, key) in keys.iter().enumerate() {
            let raw = match defaults.len() {
                1 => defaults[0],
                n if n == keys.len() => defaults[i],
                _ => {
                    return Err(format!(
                        "README.md: row {row:?}: keys and defaults differ in number"
                    ));
                }
            };
            let key = match table {
                Some(t) if !key.contains('.') => format!("{t}.{key}"),
                _ => key.to_string(),
            };
            out.push(Stated {
                key,
                raw: raw.to_string(),
                at: format!("README.md row {row:?}"),
            });
        }
    }
    Ok(out)
}

fn cells(row: &str) -> Vec<&str> {
    row.trim_matches('|').split('|').map(str::trim).collect()
}

/// The `code` spans of a table cell.
fn quoted(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// The `key = value` lines of packaging/config.toml, written or commented out, with
/// the table they are under (a commented-out `# [[developer]]` counts as a table).
fn packaging_lines(text: &str) -> Vec<Stated> {
    let mut table = String::new();
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        let line = line.strip_prefix('#').map_or(line, str::trim);
        if line.starts_with('[') && line.ends_with(']') {
            table = line.trim_matches(['[', ']']).to_string();
        } else if let Some((key, value)) = line.split_once(" = ")
            && !key.is_empty()
            && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        {
            out.push(Stated {
                key: if table.is_empty() {
                    key.to_string()
                } else {
                    format!("{table}.{key}")
                },
                raw: value.to_string(),
                at: format!("packaging/config.toml line {}", n + 1),
            });
        }
    }
    out
}

/// A value as a document writes it: TOML when it parses as TOML (`8443`, `true`,
/// `"4GiB"` with a trailing comment), else the bare text of a README cell (`4GiB`).
fn value_of(raw: &str) -> Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_string()))
}

/// The config with `set` written, as the agent parses it, in JSON for comparing.
fn config_with(set: &[(&str, Value)]) -> Result<Json, String> {
    let mut doc = toml::Table::new();
    for (key, value) in set {
        let (table, name) = match key.split_once('.') {
            Some((t, k)) => (
                doc.entry(t)
                    .or_insert_with(|| Value::Table(toml::Table::new()))
                    .as_table_mut()
                    .ok_or(format!("{t} is not a table"))?,
                k,
            ),
            None => (&mut doc, *key),
        };
        table.insert(name.to_string(), value.clone());
    }
    let text = toml::to_string(&doc).map_err(|e| e.to_string())?;
    let config = Config::from_toml(&text, Path::new("stated.toml")).map_err(|e| e.to_string())?;
    serde_json::to_value(&config).map_err(|e| e.to_string())
}

/// Where two JSON values first differ, as `path: stated vs default`.
fn first_difference(path: &str, stated: &Json, default: &Json) -> Option<String> {
    match (stated, default) {
        (Json::Object(a), Json::Object(b)) => a
            .iter()
            .find_map(|(k, v)| first_difference(&format!("{path}.{k}"), v, &b[k])),
        (Json::Array(a), Json::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| first_difference(&format!("{path}[{i}]"), x, y)),
        _ => (stated != default).then(|| format!("{path}: {stated} vs the code's {default}")),
    }
}

/// Every disagreement between the stated defaults and the code, one line each.
fn problems(stated: &[Stated], source: &str) -> Vec<String> {
    let Ok(default) = config_with(&[(DEVICE.0, Value::String(DEVICE.1.into()))]) else {
        return vec!["the minimal config does not parse".into()];
    };
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for s in stated {
        if NO_DEFAULT.contains(&s.key.as_str()) || s.key.starts_with("developer.") {
            continue;
        }
        if !DEFAULTED_KEYS.contains(&s.key.as_str()) {
            out.push(format!("{}: {} is not a key with a default", s.at, s.key));
            continue;
        }
        *seen.entry(&s.key).or_default() += 1;
        let set = [
            (DEVICE.0, Value::String(DEVICE.1.into())),
            (s.key.as_str(), value_of(&s.raw)),
        ];
        match config_with(&set) {
            Err(e) => out.push(format!("{}: {} = {}: {e}", s.at, s.key, s.raw)),
            Ok(c) => out.extend(
                first_difference("config", &c, &default)
                    .map(|d| format!("{}: {} = {} is not the default: {d}", s.at, s.key, s.raw)),
            ),
        }
    }
    for key in DEFAULTED_KEYS {
        match seen.get(key) {
            Some(1) => {}
            Some(n) => out.push(format!("{source} states the default of {key} {n} times")),
            None => out.push(format!("{source} does not state the default of {key}")),
        }
    }
    out
}

fn readme_problems(readme: &str) -> Vec<String> {
    match readme_defaults(readme) {
        Ok(stated) => problems(&stated, "README.md"),
        Err(e) => vec![e],
    }
}

fn packaging_problems(text: &str) -> Vec<String> {
    problems(&packaging_lines(text), "packaging/config.toml")
}

#[test]
fn readme_states_the_code_defaults() {
    let p = readme_problems(&read("README.md"));
    assert!(p.is_empty(), "{}", p.join("\n"));
}

#[test]
fn packaging_config_states_the_code_defaults() {
    let p = packaging_problems(&read("packaging/config.toml"));
    assert!(p.is_empty(), "{}", p.join("\n"));
}

/// `text` with `from` replaced by `to`, which must occur exactly once.
fn edited(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} occurs once");
    text.replacen(from, to, 1)
}

fn mentions(problems: &[String], key: &str) -> bool {
    problems.iter().any(|p| p.contains(key))
}

#[test]
fn a_wrong_or_missing_default_is_caught() {
    let readme = read("README.md");
    for (from, to, key) in [
        (
            "| `containers.base_port` | `8443` |",
            "| `containers.base_port` | `8444` |",
            "containers.base_port",
        ),
        ("| `4GiB` |", "| `4GB` |", "containers.memory"),
        (
            "| `volume.wait_timeout` | `5m` |",
            "| `volume.wait_timeout` | `6m` |",
            "volume.wait_timeout",
        ),
        (
            "`csagent` / `172.30",
            "`csagent` / `172.31",
            "containers.subnet",
        ),
        ("| `1000` |", "| `1001` |", "containers.gid"),
        ("| `text` / `info` |", "| `text` |", "agent.log_level"),
    ] {
        let p = readme_problems(&edited(&readme, from, to));
        assert!(mentions(&p, key), "README {to:?}: {p:?}");
    }
    let row = readme
        .lines()
        .find(|l| l.starts_with("| `metrics.enabled`"))
        .expect("metrics row");
    let p = readme_problems(&edited(&readme, &format!("{row}\n"), ""));
    assert!(
        mentions(&p, "does not state the default of metrics.interval"),
        "{p:?}"
    );

    let packaging = read("packaging/config.toml");
    for (from, to, key) in [
        (
            "memory = \"4GiB\"",
            "memory = \"5GiB\"",
            "containers.memory",
        ),
        (
            "poll_interval = \"60s\"",
            "poll_interval = \"61s\"",
            "secrets.poll_interval",
        ),
        (
            "isolate_host = true",
            "isolate_host = false",
            "containers.isolate_host",
        ),
        (
            "max_delay.\napply = \"immediate\"",
            "max_delay.\napply = \"when-idle\"",
            "secrets.apply",
        ),
        (
            "# by_id_dir = \"/dev/disk/by-id\"",
            "# by_id_dir = \"/dev\"",
            "volume.by_id_dir",
        ),
        (
            "retention_days = 30\n",
            "",
            "does not state the default of logs.retention_days",
        ),
        ("count = 8", "colour = 8", "developers.colour is not a key"),
    ] {
        let p = packaging_problems(&edited(&packaging, from, to));
        assert!(mentions(&p, key), "packaging {to:?}: {p:?}");
    }
}
