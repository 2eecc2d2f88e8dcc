//! `csagent check-config` as an admin runs it: bad files exit 2 with one line
//! naming the key; good files exit 0 and list developers and ports.

mod common;

use std::process::Command;

fn check(path: &str) -> (i32, String, String) {
    let out = Command::new(common::csagent_bin())
        .args(["check-config", "--config", path])
        .output()
        .expect("run csagent");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_examples_exit_2_naming_the_key() {
    let cases = [
        ("unknown-key", "volume.colour"),
        (
            "port-clash",
            "developer[2].port: 8443 is already used by dev1",
        ),
        ("bad-size", "containers.memory"),
        ("bad-subnet-v6", "containers.subnet_v6"),
        (
            "both-volume-id-and-device",
            "volume: set volume_id or device, not both",
        ),
        ("count-zero", "developers.count: must be 1..=64"),
        ("bad-filesystem", "volume.filesystem"),
        ("bad-duration", "secrets.poll_interval"),
        ("syntax", "line 3"),
    ];
    for (file, expected) in cases {
        let path = format!(
            "{}/tests/fixtures/bad/{file}.toml",
            env!("CARGO_MANIFEST_DIR")
        );
        let (code, stdout, stderr) = check(&path);
        assert_eq!(code, 2, "{file}: exit code; stderr: {stderr}");
        assert!(stdout.is_empty(), "{file}: nothing on stdout");
        assert_eq!(stderr.lines().count(), 1, "{file}: one line: {stderr}");
        assert!(
            stderr.contains(expected),
            "{file}: {stderr:?} should contain {expected:?}"
        );
    }
}

#[test]
fn missing_file_exits_2() {
    let (code, _, stderr) = check("/nonexistent/csagent.toml");
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/csagent.toml"), "{stderr}");
}

#[test]
fn shipped_and_example_configs_are_valid() {
    for file in ["packaging/config.toml", "examples/local.toml"] {
        let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
        let (code, stdout, stderr) = check(&path);
        assert_eq!(code, 0, "{file}: {stderr}");
        assert!(stdout.contains("developers (8):"), "{stdout}");
        for port in 8443..=8450 {
            assert!(
                stdout.contains(&port.to_string()),
                "{file}: port {port} listed"
            );
        }
        assert!(stdout.contains("dev8"));
    }
}

#[test]
fn version_prints_package_version() {
    for args in [&["version"][..], &["--version"][..]] {
        let out = Command::new(common::csagent_bin())
            .args(args)
            .output()
            .expect("run csagent");
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    }
}
