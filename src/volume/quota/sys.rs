//! The kernel interfaces project quotas need, as thin safe wrappers:
//! `FS_IOC_FSGETXATTR`/`FS_IOC_FSSETXATTR` (a file's project id and the
//! directory flag that makes new entries inherit it) and quotactl(2) with
//! `PRJQUOTA` (limits and usage, and whether the filesystem accounts/enforces).
//!
//! System calls rather than `chattr -p`/`setquota -P`/`xfs_quota`: one code path
//! for ext4 and xfs, no extra packages, no output to parse, and errors come back
//! as an errno we can name. libc has quotactl(2) and `struct dqblk`; the fsxattr
//! ioctls are defined here from linux/fs.h.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;

/// `struct fsxattr` (linux/fs.h).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct FsXattr {
    fsx_xflags: u32,
    fsx_extsize: u32,
    fsx_nextents: u32,
    fsx_projid: u32,
    fsx_cowextsize: u32,
    fsx_pad: [u8; 8],
}

/// `_IOR('X', 31, struct fsxattr)` and `_IOW('X', 32, struct fsxattr)`.
const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
pub(crate) const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401c_5820;
/// New entries of a directory with this flag get its project id.
pub(crate) const FS_XFLAG_PROJINHERIT: u32 = 0x0000_0200;

/// quotactl's quota type for projects (linux/quota.h).
const PRJQUOTA: libc::c_int = 2;
/// `Q_XGETQSTAT` (linux/dqblk_xfs.h: `XQM_CMD(5)`), answered by ext4 and xfs alike.
const Q_XGETQSTAT: libc::c_int = (('X' as libc::c_int) << 8) + 5;
/// `Q_XQUOTAON` (`XQM_CMD(1)`): on ext4, turns enforcement on where accounting is.
const Q_XQUOTAON: libc::c_int = (('X' as libc::c_int) << 8) + 1;
/// `fs_quota_stat.qs_flags` bits for project quotas.
const FS_QUOTA_PDQ_ACCT: u16 = 0x0010;
const FS_QUOTA_PDQ_ENFD: u16 = 0x0020;
/// quotactl counts block limits in 1 KiB units (`QIF_DQBLKSIZE`).
const QIF_DQBLKSIZE: u64 = 1024;

/// `QCMD(cmd, PRJQUOTA)`.
fn qcmd(cmd: libc::c_int) -> libc::c_int {
    ((cmd as u32) << 8 | (PRJQUOTA as u32 & 0xff)) as libc::c_int
}

/// A file's project id and whether (for a directory) new entries inherit it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Project {
    pub id: u32,
    pub inherit: bool,
}

fn get_raw(fd: BorrowedFd<'_>) -> Result<FsXattr, Errno> {
    let mut attr = FsXattr::default();
    // SAFETY: the ioctl writes one `struct fsxattr` into `attr`, which is that struct.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSGETXATTR, &mut attr as *mut FsXattr) };
    Errno::result(r).map(|_| attr)
}

/// The project of the open file `fd`.
pub(crate) fn project_of(fd: BorrowedFd<'_>) -> Result<Project, Errno> {
    let attr = get_raw(fd)?;
    Ok(Project {
        id: attr.fsx_projid,
        inherit: attr.fsx_xflags & FS_XFLAG_PROJINHERIT != 0,
    })
}

/// Puts the open file `fd` in project `id`; a directory also gets the inherit
/// flag. Other flags are kept. Nothing is written when it is already so.
/// Returns whether anything changed.
pub(crate) fn set_project(fd: BorrowedFd<'_>, id: u32, is_dir: bool) -> Result<bool, Errno> {
    let mut attr = get_raw(fd)?;
    let flags = if is_dir {
        attr.fsx_xflags | FS_XFLAG_PROJINHERIT
    } else {
        attr.fsx_xflags
    };
    if attr.fsx_projid == id && attr.fsx_xflags == flags {
        return Ok(false);
    }
    attr.fsx_projid = id;
    attr.fsx_xflags = flags;
    // SAFETY: the ioctl reads one `struct fsxattr` from `attr`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSSETXATTR, &attr as *const FsXattr) };
    Errno::result(r).map(|_| true)
}

/// Whether the filesystem on `device` accounts and enforces project quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QuotaState {
    pub accounting: bool,
    pub enforcing: bool,
}

fn special(device: &Path) -> Result<CString, Errno> {
    CString::new(device.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

/// `Q_XGETQSTAT`: the project quota flags of the filesystem on `device`.
pub(crate) fn quota_state(device: &Path) -> Result<QuotaState, Errno> {
    let dev = special(device)?;
    // struct fs_quota_stat is 80 bytes; qs_flags is the u16 at offset 2.
    let mut buf = [0u8; 128];
    // SAFETY: the kernel writes at most sizeof(struct fs_quota_stat) bytes into buf.
    let r = unsafe {
        libc::quotactl(
            qcmd(Q_XGETQSTAT),
            dev.as_ptr(),
            0,
            buf.as_mut_ptr().cast::<libc::c_char>(),
        )
    };
    Errno::result(r)?;
    let flags = u16::from_ne_bytes([buf[2], buf[3]]);
    Ok(QuotaState {
        accounting: flags & FS_QUOTA_PDQ_ACCT != 0,
        enforcing: flags & FS_QUOTA_PDQ_ENFD != 0,
    })
}

/// `Q_XQUOTAON` with `FS_QUOTA_PDQ_ENFD`: enforce project limits on a mounted
/// ext4 filesystem that accounts them (has the features) but was mounted
/// without `prjquota`. A remount with the option does not do it: ext4 turns
/// quotas on at a remount only when going from read-only to read-write.
pub(crate) fn enforce(device: &Path) -> Result<(), Errno> {
    let dev = special(device)?;
    let mut flags: u32 = FS_QUOTA_PDQ_ENFD.into();
    // SAFETY: Q_XQUOTAON reads one u32 of flags.
    let r = unsafe {
        libc::quotactl(
            qcmd(Q_XQUOTAON),
            dev.as_ptr(),
            0,
            (&mut flags as *mut u32).cast::<libc::c_char>(),
        )
    };
    Errno::result(r).map(|_| ())
}

/// One project's use and hard limit, in bytes (limit 0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    pub used_bytes: u64,
    pub limit_bytes: u64,
}

fn get_dqblk(dev: &CString, id: u32) -> Result<libc::dqblk, Errno> {
    // SAFETY: dqblk is plain integers; all-zero is a valid value.
    let mut q: libc::dqblk = unsafe { std::mem::zeroed() };
    // SAFETY: Q_GETQUOTA writes one `struct if_dqblk` (libc's dqblk) into q.
    let r = unsafe {
        libc::quotactl(
            qcmd(libc::Q_GETQUOTA),
            dev.as_ptr(),
            id as libc::c_int,
            (&mut q as *mut libc::dqblk).cast::<libc::c_char>(),
        )
    };
    Errno::result(r).map(|_| q)
}

/// `Q_GETQUOTA` for project `id`. ESRCH: the filesystem does not account
/// project quotas (not mounted with them).
pub(crate) fn usage(device: &Path, id: u32) -> Result<Usage, Errno> {
    let q = get_dqblk(&special(device)?, id)?;
    Ok(Usage {
        used_bytes: q.dqb_curspace,
        limit_bytes: q.dqb_bhardlimit.saturating_mul(QIF_DQBLKSIZE),
    })
}

/// The hard limit quotactl will store for `bytes` (whole KiB, rounded up).
pub(crate) fn stored_limit(bytes: u64) -> u64 {
    bytes.div_ceil(QIF_DQBLKSIZE) * QIF_DQBLKSIZE
}

/// `Q_SETQUOTA`: project `id`'s block hard limit (0: none), no soft limit;
/// nothing else (inode limits, grace times) is touched. Returns whether it
/// changed anything.
pub(crate) fn set_limit(device: &Path, id: u32, bytes: u64) -> Result<bool, Errno> {
    let dev = special(device)?;
    let current = get_dqblk(&dev, id)?;
    let blocks = stored_limit(bytes) / QIF_DQBLKSIZE;
    if current.dqb_bhardlimit == blocks && current.dqb_bsoftlimit == 0 {
        return Ok(false);
    }
    // SAFETY: as above.
    let mut q: libc::dqblk = unsafe { std::mem::zeroed() };
    q.dqb_bhardlimit = blocks;
    q.dqb_bsoftlimit = 0;
    q.dqb_valid = libc::QIF_BLIMITS;
    // SAFETY: Q_SETQUOTA reads one `struct if_dqblk` from q.
    let r = unsafe {
        libc::quotactl(
            qcmd(libc::Q_SETQUOTA),
            dev.as_ptr(),
            id as libc::c_int,
            (&mut q as *mut libc::dqblk).cast::<libc::c_char>(),
        )
    };
    Errno::result(r).map(|_| true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_and_commands_match_the_kernel_headers() {
        assert_eq!(std::mem::size_of::<FsXattr>(), 28);
        // _IOR('X', 31, 28 bytes) / _IOW('X', 32, 28 bytes).
        assert_eq!(FS_IOC_FSGETXATTR, (2 << 30) | (28 << 16) | (0x58 << 8) | 31);
        assert_eq!(FS_IOC_FSSETXATTR, (1 << 30) | (28 << 16) | (0x58 << 8) | 32);
        assert_eq!(qcmd(libc::Q_GETQUOTA) as u32, 0x8000_0702);
        assert_eq!(qcmd(Q_XGETQSTAT) as u32, 0x0058_0502);
        assert_eq!(stored_limit(1), 1024);
        assert_eq!(stored_limit(100 << 30), 100 << 30);
    }
}
