//! Keeps one fstab line for the data volume, identified by its mount point:
//!
//! `UUID=<uuid> <mount_point> <fs> defaults,noatime,nosuid,nodev,nofail,x-systemd.device-timeout=30s 0 2`
//!
//! - no line for the mount point: ours is appended;
//! - one line that mounts this volume (by `UUID=`, `/dev/disk/by-uuid/`, or a device
//!   path that resolves to it): kept if its fields already match, else replaced
//!   by ours (the agent owns that line);
//! - a line that mounts anything else there (another UUID, a label, a tmpfs), or
//!   several lines: refused, never rewritten. Someone else put it there, and at
//!   boot it would put a different disk under the developers' data.
//!
//! Every other line (comments, blank lines, odd spacing) is kept byte for byte.
//! A change is written atomically: a temp file in the same directory with the
//! original's mode and owner, fsync, rename, fsync of the directory. Nothing is
//! written when the line is already right.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::VolumeError;
use crate::config::Filesystem;

/// Mount options of our line: `nofail` so a missing volume does not stop the boot,
/// a short device timeout so it does not hold it up either, and nosuid/nodev as
/// the agent mounts it.
pub(crate) const OPTIONS: &str =
    "defaults,noatime,nosuid,nodev,nofail,x-systemd.device-timeout=30s";

/// Our line, without its newline; `extra` is the filesystem's own option
/// (`prjquota` for disk quotas), appended to [`OPTIONS`].
pub(crate) fn line_for(
    uuid: &str,
    mount_point: &Path,
    fs: Filesystem,
    extra: Option<&str>,
) -> Vec<u8> {
    let mut line = format!("UUID={uuid} ").into_bytes();
    line.extend(escape(mount_point.as_os_str().as_bytes()));
    let extra = extra.map(|o| format!(",{o}")).unwrap_or_default();
    line.extend(format!(" {fs} {OPTIONS}{extra} 0 2").into_bytes());
    line
}

/// What to do to the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Already right.
    Keep,
    /// No line for the mount point yet.
    Append,
    /// Line `index` (0-based) is ours but differs.
    Replace { index: usize },
}

/// Decides what to do. `desired` is our line, or `None` for a read-only check
/// before formatting (the UUID is not known yet). `is_ours` says whether an
/// fstab source (first field) names this volume.
pub(crate) fn plan(
    text: &[u8],
    path: &Path,
    mount_point: &Path,
    desired: Option<&[u8]>,
    is_ours: &dyn Fn(&str) -> bool,
) -> Result<Plan, VolumeError> {
    let matches: Vec<(usize, Vec<&[u8]>)> = text
        .split(|b| *b == b'\n')
        .enumerate()
        .filter_map(|(i, line)| {
            let fields = fields(line);
            let target = unescape(fields.get(1)?);
            (Path::new(OsStr::from_bytes(&target)) == mount_point).then_some((i, fields))
        })
        .collect();
    let conflict = |message: String| VolumeError::FstabConflict {
        path: path.to_path_buf(),
        message,
    };
    match matches.as_slice() {
        [] => Ok(Plan::Append),
        [(index, f)] => {
            let source = String::from_utf8_lossy(f[0]);
            if !is_ours(&source) {
                return Err(conflict(format!(
                    "line {} already mounts {source} at {}, which is not this volume; remove or \
                     change that line (csagent then adds its own), or set volume.mount_point to \
                     another directory",
                    index + 1,
                    mount_point.display()
                )));
            }
            match desired {
                Some(d) if !same_entry(&fields(d), f) => Ok(Plan::Replace { index: *index }),
                _ => Ok(Plan::Keep),
            }
        }
        several => Err(conflict(format!(
            "lines {} all mount something at {}; keep at most one",
            several
                .iter()
                .map(|(i, _)| (i + 1).to_string())
                .collect::<Vec<_>>()
                .join(", "),
            mount_point.display()
        ))),
    }
}

/// The new file content for a plan.
pub(crate) fn apply(text: &[u8], plan: &Plan, line: &[u8]) -> Vec<u8> {
    match plan {
        Plan::Keep => text.to_vec(),
        Plan::Append => {
            let mut out = text.to_vec();
            if !out.is_empty() && !out.ends_with(b"\n") {
                out.push(b'\n');
            }
            out.extend_from_slice(line);
            out.push(b'\n');
            out
        }
        Plan::Replace { index } => {
            let mut out = Vec::with_capacity(text.len() + line.len());
            for (i, chunk) in text.split_inclusive(|b| *b == b'\n').enumerate() {
                if i == *index {
                    out.extend_from_slice(line);
                    if chunk.ends_with(b"\n") {
                        out.push(b'\n');
                    }
                } else {
                    out.extend_from_slice(chunk);
                }
            }
            out
        }
    }
}

/// Reads the fstab; a missing file reads as empty.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, VolumeError> {
    match std::fs::read(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(VolumeError::io("cannot read", path, e)),
    }
}

/// Makes the fstab hold our line. Returns whether the file was written.
pub(crate) fn ensure(
    path: &Path,
    mount_point: &Path,
    line: &[u8],
    is_ours: &dyn Fn(&str) -> bool,
) -> Result<bool, VolumeError> {
    let text = read(path)?;
    let plan = plan(&text, path, mount_point, Some(line), is_ours)?;
    if plan == Plan::Keep {
        tracing::debug!(fstab = %path.display(), "fstab line already right");
        return Ok(false);
    }
    if let Plan::Replace { index } = plan {
        let old = text
            .split(|b| *b == b'\n')
            .nth(index)
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .unwrap_or_default();
        tracing::info!(fstab = %path.display(), line = index + 1, old = %old, "replacing the data volume's fstab line");
    }
    write_atomic(path, &apply(&text, &plan, line))?;
    tracing::info!(fstab = %path.display(), line = %String::from_utf8_lossy(line), "fstab updated");
    Ok(true)
}

/// Replaces `path` with `content` atomically, keeping its mode and owner.
pub(crate) fn write_atomic(path: &Path, content: &[u8]) -> Result<(), VolumeError> {
    // /etc is root's: an fstab that is a symlink (some images link it elsewhere)
    // is written where it points, as every other tool that edits it does.
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    crate::fsutil::write_atomic(&path, content, crate::fsutil::Perms::default())
        .map_err(|e| VolumeError::io("cannot write atomically", &path, e))
}

/// Same fields, the mount point (already matched as a path, so "/mnt/x/" equals
/// "/mnt/x") aside.
fn same_entry(a: &[&[u8]], b: &[&[u8]]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .enumerate()
            .all(|(i, (x, y))| i == 1 || x == y)
}

/// Whitespace-separated fields of a non-comment line.
fn fields(line: &[u8]) -> Vec<&[u8]> {
    let first = line.iter().position(|b| !b.is_ascii_whitespace());
    match first {
        None => Vec::new(),
        Some(i) if line[i] == b'#' => Vec::new(),
        Some(_) => line
            .split(|b| b.is_ascii_whitespace())
            .filter(|f| !f.is_empty())
            .collect(),
    }
}

/// fstab's octal escapes for characters that would split a field.
fn escape(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b' ' | b'\t' | b'\n' | b'\\' => out.extend(format!("\\{b:03o}").into_bytes()),
            _ => out.push(b),
        }
    }
    out
}

fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && let Some(oct) = field.get(i + 1..i + 4)
            && oct.iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = oct
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            if let Ok(b) = u8::try_from(v) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

/// Whether an fstab source names the filesystem with this UUID (or, through a
/// device path, this device).
pub(crate) fn source_is(source: &str, uuid: Option<&str>, device_rdev: u64) -> bool {
    let unquoted = |s: &str| s.trim_matches('"').to_string();
    if let Some(u) = uuid {
        if let Some(v) = source.strip_prefix("UUID=")
            && unquoted(v).eq_ignore_ascii_case(u)
        {
            return true;
        }
        if let Some(v) = source.strip_prefix("/dev/disk/by-uuid/")
            && v.eq_ignore_ascii_case(u)
        {
            return true;
        }
    }
    if source.starts_with('/') {
        use std::os::unix::fs::FileTypeExt;
        let path = OsStr::from_bytes(&unescape(source.as_bytes())).to_owned();
        if let Ok(m) = std::fs::metadata(&path) {
            return m.file_type().is_block_device() && m.rdev() == device_rdev;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const UUID: &str = "db37f730-7cf2-47f4-a5e6-46adf2f9bba3";

    fn ours(s: &str) -> bool {
        source_is(s, Some(UUID), u64::MAX)
    }

    fn mp() -> &'static Path {
        Path::new("/mnt/ebs-data")
    }

    fn desired() -> Vec<u8> {
        line_for(UUID, mp(), Filesystem::Ext4, None)
    }

    #[test]
    fn line_format() {
        assert_eq!(
            String::from_utf8(desired()).expect("utf8"),
            format!(
                "UUID={UUID} /mnt/ebs-data ext4 defaults,noatime,nosuid,nodev,nofail,x-systemd.device-timeout=30s 0 2"
            )
        );
        let spaced = line_for(UUID, Path::new("/mnt/my data"), Filesystem::Xfs, None);
        assert!(
            String::from_utf8_lossy(&spaced).contains(" /mnt/my\\040data xfs "),
            "{}",
            String::from_utf8_lossy(&spaced)
        );
        assert_eq!(unescape(b"/mnt/my\\040data"), b"/mnt/my data");
        assert_eq!(unescape(b"a\\b\\999"), b"a\\b\\999");
    }

    #[test]
    fn append_keeps_every_other_byte() {
        let text = b"# /etc/fstab\n\nLABEL=cloudimg-rootfs\t/\t ext4\tdiscard,errors=remount-ro 0 1\n   # indented comment\nLABEL=UEFI /boot/efi vfat umask=0077 0 1";
        let p = plan(text, Path::new("f"), mp(), Some(&desired()), &ours).expect("plan");
        assert_eq!(p, Plan::Append);
        let out = apply(text, &p, &desired());
        assert!(out.starts_with(text));
        let mut expected = text.to_vec();
        expected.push(b'\n');
        expected.extend(desired());
        expected.push(b'\n');
        assert_eq!(out, expected);
        assert_eq!(
            apply(b"", &Plan::Append, b"L"),
            b"L\n",
            "an empty file gets just our line"
        );
    }

    #[test]
    fn correct_line_is_kept_even_with_other_spacing() {
        let text = format!(
            "# c\nUUID={UUID}\t/mnt/ebs-data/   ext4  defaults,noatime,nosuid,nodev,nofail,x-systemd.device-timeout=30s 0 2\n"
        );
        let p = plan(
            text.as_bytes(),
            Path::new("f"),
            mp(),
            Some(&desired()),
            &ours,
        )
        .expect("plan");
        assert_eq!(p, Plan::Keep);
    }

    #[test]
    fn our_line_with_other_options_is_replaced_in_place() {
        let text = format!("a b c d 0 0\nUUID={UUID} /mnt/ebs-data ext4 defaults 0 0\n# tail");
        let p = plan(
            text.as_bytes(),
            Path::new("f"),
            mp(),
            Some(&desired()),
            &ours,
        )
        .expect("plan");
        assert_eq!(p, Plan::Replace { index: 1 });
        let out = apply(text.as_bytes(), &p, &desired());
        let mut expected = b"a b c d 0 0\n".to_vec();
        expected.extend(desired());
        expected.extend(b"\n# tail");
        assert_eq!(out, expected);
        let by_path = format!("/dev/disk/by-uuid/{UUID} /mnt/ebs-data ext4 defaults 0 0\n");
        assert_eq!(
            plan(
                by_path.as_bytes(),
                Path::new("f"),
                mp(),
                Some(&desired()),
                &ours
            )
            .expect("plan"),
            Plan::Replace { index: 0 }
        );
    }

    #[test]
    fn foreign_or_duplicate_lines_are_refused() {
        let other = b"UUID=11111111-2222-3333-4444-555555555555 /mnt/ebs-data ext4 defaults 0 2\n";
        let e = plan(
            other,
            Path::new("/etc/fstab"),
            mp(),
            Some(&desired()),
            &ours,
        )
        .expect_err("foreign");
        let msg = e.to_string();
        assert!(
            msg.contains("/etc/fstab") && msg.contains("line 1"),
            "{msg}"
        );
        // Before formatting (no UUID yet), any line for the mount point is foreign.
        let ours_by_uuid = format!("UUID={UUID} /mnt/ebs-data ext4 defaults 0 2\n");
        assert!(
            plan(ours_by_uuid.as_bytes(), Path::new("f"), mp(), None, &|s| {
                source_is(s, None, 1)
            })
            .is_err()
        );
        let tmpfs = b"tmpfs /mnt/ebs-data tmpfs defaults 0 0\n";
        assert!(plan(tmpfs, Path::new("f"), mp(), Some(&desired()), &ours).is_err());
        let twice = format!(
            "UUID={UUID} /mnt/ebs-data ext4 defaults 0 2\nUUID={UUID} /mnt/ebs-data ext4 defaults 0 2\n"
        );
        let e = plan(
            twice.as_bytes(),
            Path::new("f"),
            mp(),
            Some(&desired()),
            &ours,
        )
        .expect_err("duplicate");
        assert!(e.to_string().contains("lines 1, 2"), "{e}");
        // A commented-out line is not a line.
        let commented = b"#UUID=1111 /mnt/ebs-data ext4 defaults 0 2\n";
        assert_eq!(
            plan(commented, Path::new("f"), mp(), Some(&desired()), &ours).expect("plan"),
            Plan::Append
        );
    }

    #[test]
    fn atomic_write_keeps_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("fstab");
        std::fs::write(&f, b"old\n").expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        write_atomic(&f, b"new\n").expect("write_atomic");
        assert_eq!(std::fs::read(&f).expect("read"), b"new\n");
        let mode = std::fs::metadata(&f).expect("stat").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("readdir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
