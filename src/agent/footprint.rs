//! Handing start-up code back to the kernel once the agent idles.
//!
//! The agent's executable is mapped from the page cache; every page it ever ran
//! stays in its RSS until memory runs short. Start-up (volume, secrets, creating
//! every container) runs code idling never needs again, so a while after start
//! the agent asks the kernel to page its clean executable mappings out
//! (`MADV_PAGEOUT`). What idling runs faults straight back in within a few
//! minutes; the rest stays out. Only mappings of the executable's own file
//! that hold no anonymous (copy-on-write) pages are touched: no data is
//! involved, and a refault reads the same bytes from the file.
//! (docs/benchmarks.md, "Issue 20: footprint, third pass".)

use std::path::Path;

/// How long after start the pageout comes: the first metrics interval, the
/// log tails and a reconcile have run by then, so what is paged out is code
/// that idling does not use (and what it does use comes back).
pub const AFTER_START: std::time::Duration = std::time::Duration::from_secs(120);

/// One mapping to page out: start address and length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: usize,
    pub len: usize,
}

/// The executable's clean file mappings in `/proc/self/smaps` text: mapped from
/// `exe`, not writable, and without anonymous pages (which rules out RELRO,
/// relocated at start and so copy-on-write).
pub fn clean_exe_mappings(smaps: &str, exe: &Path) -> Vec<Range> {
    let exe = exe.as_os_str().to_string_lossy();
    let mut out = Vec::new();
    // The mapping being read: Some while it is a candidate.
    let mut current: Option<Range> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((start, end)) = first.split_once('-').and_then(|(s, e)| {
            Some((
                usize::from_str_radix(s, 16).ok()?,
                usize::from_str_radix(e, 16).ok()?,
            ))
        }) {
            // A mapping header: `start-end perms offset dev inode path`.
            if let Some(r) = current.take() {
                out.push(r);
            }
            let perms = fields.next().unwrap_or("");
            // The path is the rest of the line (it may hold spaces).
            let from_exe = line
                .strip_suffix(&*exe)
                .is_some_and(|head| head.ends_with(char::is_whitespace));
            if from_exe && !perms.contains('w') && end > start {
                current = Some(Range {
                    start,
                    len: end - start,
                });
            }
        } else if first == "Anonymous:" && fields.next().is_some_and(|kb| kb != "0") {
            current = None;
        }
    }
    out.extend(current);
    out
}

/// Pages out the executable's clean mappings. Errors are reported, never fatal:
/// a kernel before 5.4 has no `MADV_PAGEOUT`, and nothing depends on it.
pub fn page_out_executable() -> Result<usize, String> {
    let exe = std::fs::read_link("/proc/self/exe").map_err(|e| format!("/proc/self/exe: {e}"))?;
    let smaps = std::fs::read_to_string("/proc/self/smaps")
        .map_err(|e| format!("/proc/self/smaps: {e}"))?;
    let mut bytes = 0;
    for r in clean_exe_mappings(&smaps, &exe) {
        let Some(addr) = std::ptr::NonNull::new(r.start as *mut std::ffi::c_void) else {
            continue;
        };
        // SAFETY: the range is one whole mapping of this process, read from
        // smaps just now; MADV_PAGEOUT only drops clean file pages (the kernel
        // reads them back from the file on the next access) and never changes
        // the mapping or its contents.
        unsafe { nix::sys::mman::madvise(addr, r.len, nix::sys::mman::MmapAdvise::MADV_PAGEOUT) }
            .map_err(|e| format!("madvise(MADV_PAGEOUT) at {:#x}: {e}", r.start))?;
        bytes += r.len;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0400000 r--p 00000000 fd:01 1234 /usr/bin/csagent
Size:               4096 kB
Rss:                2048 kB
Anonymous:             0 kB
55d0c0400000-55d0c1000000 r-xp 00400000 fd:01 1234 /usr/bin/csagent
Size:              12288 kB
Anonymous:             0 kB
55d0c1000000-55d0c1080000 r--p 01000000 fd:01 1234 /usr/bin/csagent
Size:                512 kB
Anonymous:           512 kB
55d0c1080000-55d0c1090000 rw-p 01080000 fd:01 1234 /usr/bin/csagent
Anonymous:            36 kB
7f0000000000-7f0000200000 r-xp 00000000 fd:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f0000400000-7f0000500000 rw-p 00000000 00:00 0
Anonymous:          1024 kB
";

    #[test]
    fn only_the_executables_clean_mappings_are_chosen() {
        let r = clean_exe_mappings(SMAPS, Path::new("/usr/bin/csagent"));
        assert_eq!(
            r,
            vec![
                Range {
                    start: 0x55d0c0000000,
                    len: 0x400000
                },
                Range {
                    start: 0x55d0c0400000,
                    len: 0xc00000
                },
            ],
            "text and read-only data; not RELRO (anonymous pages), .data (writable), libc"
        );
        assert!(clean_exe_mappings(SMAPS, Path::new("/usr/bin/other")).is_empty());
    }

    /// Resident pages of this test binary's own file mappings, in KiB.
    fn exe_rss_kib() -> u64 {
        let exe = std::fs::read_link("/proc/self/exe").expect("exe");
        let exe = exe.to_string_lossy().into_owned();
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let mut mine = false;
        let mut kib = 0;
        for line in smaps.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.first()
                .is_some_and(|x| x.contains('-') && !x.ends_with(':'))
            {
                mine = f.get(5) == Some(&exe.as_str());
            } else if mine && f.first() == Some(&"Rss:") {
                kib += f[1].parse::<u64>().expect("kB");
            }
        }
        kib
    }

    #[test]
    fn the_kernel_takes_the_pages_back() {
        let before = exe_rss_kib();
        let bytes = page_out_executable().expect("MADV_PAGEOUT (kernel ≥ 5.4)");
        let after = exe_rss_kib();
        assert!(bytes > 0);
        // Other test threads run meanwhile and fault some pages back in.
        assert!(
            after < before / 2,
            "resident KiB of the executable: {before} before, {after} after"
        );
    }
}
