//! `csagent container-init`, the program containers start through when
//! `containers.disk_quota` is set, run on the host against the real kernel:
//! a file's project id cannot be changed under it (not even by root), anything
//! else runs as it would without it.

use std::process::Command;

fn csagent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_csagent"))
}

fn chattr_p0(file: &std::path::Path) -> std::process::Output {
    Command::new("chattr")
        .arg("-p")
        .arg("0")
        .arg(file)
        .output()
        .expect("chattr (e2fsprogs) runs")
}

#[test]
fn chattr_p_is_refused_under_container_init_and_allowed_without() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("f");
    std::fs::write(&file, "x").expect("file");

    // Without it, the same call reaches the filesystem (0 is already the
    // file's project, so ext4 accepts it even without the project feature).
    let plain = chattr_p0(&file);
    assert!(
        plain.status.success(),
        "chattr -p 0 without container-init: {}",
        String::from_utf8_lossy(&plain.stderr)
    );

    let out = csagent()
        .args(["container-init", "--", "chattr", "-p", "0"])
        .arg(&file)
        .output()
        .expect("csagent container-init");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused: {stderr}");
    assert!(stderr.contains("Operation not permitted"), "{stderr}");
    assert!(
        !stderr.contains("csagent"),
        "the filter was installed: {stderr}"
    );

    // Reading the project id is not affected.
    let out = csagent()
        .args(["container-init", "--", "lsattr", "-p"])
        .arg(&file)
        .output()
        .expect("lsattr");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_program_runs_with_its_arguments_environment_and_exit_code() {
    let out = csagent()
        .args([
            "container-init",
            "--",
            "sh",
            "-c",
            "echo \"$1 $PROBE\"; exit 7",
            "sh",
            "--bind-addr",
        ])
        .env("PROBE", "kept")
        .output()
        .expect("csagent container-init");
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "--bind-addr kept\n");
}

#[test]
fn a_missing_program_is_named_and_exits_127() {
    let out = csagent()
        .args(["container-init", "--", "/nonexistent/entrypoint.sh"])
        .output()
        .expect("csagent container-init");
    assert_eq!(out.status.code(), Some(127));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot run /nonexistent/entrypoint.sh"),
        "{stderr}"
    );
}
