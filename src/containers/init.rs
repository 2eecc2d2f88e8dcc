//! What runs first in a developer's container when `containers.disk_quota` is
//! set: `csagent container-init -- <the image's entrypoint and cmd>`.
//!
//! Linux lets a file's owner change its project id (`FS_IOC_FSSETXATTR`, what
//! `chattr -p 0 FILE` does), which would move files out of the developer's
//! quota. Docker's own seccomp profile allows that ioctl and Docker takes only
//! one profile per container, so instead this adds a second filter, stacked on
//! Docker's (both apply): the ioctl is refused with EPERM, everything else is
//! left to Docker's profile. The filter is inherited by every process the
//! entrypoint starts and cannot be removed. Then the image's own entrypoint is
//! exec'd, so it is still PID 1's program.
//!
//! The agent bind-mounts its own binary read-only at [`CONTAINER_INIT`], so the
//! image needs glibc (code-server's does). Not with `containers.sudo`: the
//! filter needs `no-new-privileges`, and a developer who can be root in the
//! container can change any project id in their home anyway.

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::config::Config;

/// Where the agent's binary is mounted in the container.
pub const CONTAINER_INIT: &str = "/run/csagent-init";
/// The subcommand that installs the filter and execs the rest.
pub const SUBCOMMAND: &str = "container-init";
/// Where the agent binary is installed, when its own path cannot be read.
const INSTALLED: &str = "/usr/bin/csagent";

/// Whether containers start through [`CONTAINER_INIT`].
pub fn wraps(config: &Config) -> bool {
    config.containers.disk_quota.is_some() && !config.containers.sudo
}

/// This program's path on the host, to mount into containers. After an upgrade
/// replaced the running binary, the installed path (the new binary).
pub fn host_binary() -> PathBuf {
    match std::env::current_exe() {
        Ok(p) if !p.as_os_str().as_bytes().ends_with(b" (deleted)") => p,
        _ => PathBuf::from(INSTALLED),
    }
}

/// The entrypoint that runs `entrypoint` (the image's) through the filter.
pub fn wrap(entrypoint: &[String]) -> Vec<String> {
    [CONTAINER_INIT, SUBCOMMAND, "--"]
        .into_iter()
        .map(String::from)
        .chain(entrypoint.iter().cloned())
        .collect()
}

fn arch() -> Result<TargetArch, String> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())
}

/// Allow everything (Docker's filter decides the rest) except setting a file's
/// fsxattr, compared on the low 32 bits: the kernel reads ioctl's command as an
/// unsigned int, so high bits must not be a way around the rule.
pub fn filter() -> Result<BpfProgram, String> {
    let refuse = SeccompRule::new(vec![
        SeccompCondition::new(
            1,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Eq,
            crate::volume::FS_IOC_FSSETXATTR,
        )
        .map_err(|e| e.to_string())?,
    ])
    .map_err(|e| e.to_string())?;
    let rules = BTreeMap::from([(libc::SYS_ioctl, vec![refuse])]);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch()?,
    )
    .map_err(|e| e.to_string())?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| e.to_string())
}

/// `csagent container-init -- PROGRAM ARGS...`: returns only when the exec
/// failed (the exit code). A filter that cannot be installed is reported on
/// stderr (the container's log) and the program runs anyway: the developer
/// keeps working; the quota is then only as strict as without the filter.
pub fn exec(command: &[OsString]) -> i32 {
    let Some(program) = command.first() else {
        eprintln!(
            "csagent {SUBCOMMAND}: no program to run (usage: csagent {SUBCOMMAND} -- PROGRAM ARGS...)"
        );
        return crate::exit::CONFIG;
    };
    match filter().and_then(|f| seccompiler::apply_filter(&f).map_err(|e| e.to_string())) {
        Ok(()) => {}
        Err(e) => eprintln!(
            "csagent {SUBCOMMAND}: cannot install the seccomp filter that keeps files in their disk quota ({e}); starting without it"
        ),
    }
    let args: Result<Vec<CString>, _> =
        command.iter().map(|a| CString::new(a.as_bytes())).collect();
    let (Ok(path), Ok(args)) = (CString::new(program.as_bytes()), args) else {
        eprintln!("csagent {SUBCOMMAND}: an argument contains a NUL byte");
        return 127;
    };
    let err = match nix::unistd::execvp(&path, &args) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    eprintln!(
        "csagent {SUBCOMMAND}: cannot run {}: {err}",
        Path::new(program).display()
    );
    // 127 (not found) / 126 (found, not runnable), as a shell does.
    if err == nix::errno::Errno::ENOENT {
        127
    } else {
        126
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_builds_for_this_machine() {
        let program = filter().unwrap();
        assert!(!program.is_empty());
    }

    #[test]
    fn wrap_puts_the_init_in_front_of_the_image_entrypoint() {
        let image = ["/usr/bin/entrypoint.sh".to_string(), "--bind-addr".into()];
        assert_eq!(
            wrap(&image),
            [
                CONTAINER_INIT,
                SUBCOMMAND,
                "--",
                "/usr/bin/entrypoint.sh",
                "--bind-addr"
            ]
        );
    }
}
