//! Runs the block-device tools (util-linux, e2fsprogs, xfsprogs) with a stable
//! locale, no standard input, and errors that name the command and what it was for.

use std::ffi::OsStr;
use std::process::{Command, Stdio};

use super::VolumeError;

/// What a tool printed and how it ended.
#[derive(Debug)]
pub(crate) struct Output {
    pub code: Option<i32>,
    pub status: String,
    pub stdout: String,
    pub stderr: String,
    pub command: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The error for a run that ended badly.
    pub fn failed(&self, about: &str) -> VolumeError {
        VolumeError::Command {
            command: self.command.clone(),
            about: about.to_string(),
            status: self.status.clone(),
            stderr: one_line(&self.stderr),
        }
    }

    /// The error for output that could not be understood.
    pub fn unexpected(&self, about: &str, message: impl Into<String>) -> VolumeError {
        VolumeError::ToolOutput {
            command: self.command.clone(),
            about: about.to_string(),
            message: message.into(),
        }
    }
}

/// The Debian/Ubuntu package that ships each tool, for "is it installed?".
fn package_of(program: &str) -> &'static str {
    match program {
        "mkfs.ext4" | "resize2fs" | "dumpe2fs" | "tune2fs" => "e2fsprogs",
        "mkfs.xfs" | "xfs_growfs" => "xfsprogs",
        _ => "util-linux",
    }
}

/// Runs `program args…` and returns its output whatever the exit status.
/// `about` names the device or path the run concerns, for messages.
pub(crate) fn output<S: AsRef<OsStr>>(
    program: &str,
    args: &[S],
    about: &str,
) -> Result<Output, VolumeError> {
    let command = std::iter::once(program.to_string())
        .chain(
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned()),
        )
        .collect::<Vec<_>>()
        .join(" ");
    tracing::debug!(command = %command, "running");
    let out = Command::new(program)
        .args(args)
        // Parsed output must not depend on the admin's locale.
        .env("LC_ALL", "C")
        // mkfs and friends must never wait for an answer.
        .stdin(Stdio::null())
        .output()
        .map_err(|source| VolumeError::Spawn {
            program: program.to_string(),
            about: about.to_string(),
            package: package_of(program),
            source,
        })?;
    Ok(Output {
        code: out.status.code(),
        status: out.status.to_string(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        command,
    })
}

/// Runs `program args…` and returns its output, or an error unless it exited 0.
pub(crate) fn checked<S: AsRef<OsStr>>(
    program: &str,
    args: &[S],
    about: &str,
) -> Result<Output, VolumeError> {
    let out = output(program, args, about)?;
    if out.success() {
        Ok(out)
    } else {
        Err(out.failed(about))
    }
}

fn one_line(s: &str) -> String {
    let joined = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.is_empty() {
        "(no error output)".to_string()
    } else {
        joined
    }
}
