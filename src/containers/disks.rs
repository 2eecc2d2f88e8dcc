//! Which disk a running container's binds are really on: the device number of
//! each bind destination in the container's own mount table
//! (`/proc/<pid>/mountinfo`). The bind's host path says nothing (it is the same
//! path whether or not the volume was mounted when the container started); the
//! mount table says which filesystem the container got.

use std::collections::BTreeMap;

/// Device number (`st_dev`) per bind destination, for the destinations found in
/// the mount table of process `pid` (the container's init). Empty when the
/// table cannot be read (the container just stopped): nothing is decided then.
pub fn bind_devices<'a>(
    pid: i64,
    destinations: impl Iterator<Item = &'a str>,
) -> BTreeMap<String, u64> {
    let path = format!("/proc/{pid}/mountinfo");
    match std::fs::read_to_string(&path) {
        Ok(text) => devices(&text, destinations),
        Err(e) => {
            tracing::debug!(path = %path, error = %e, "cannot read a container's mount table");
            BTreeMap::new()
        }
    }
}

/// The device of each destination: that of the last (topmost) mount at exactly
/// that path. Destinations not mounted are left out.
pub fn devices<'a>(
    mountinfo: &str,
    destinations: impl Iterator<Item = &'a str>,
) -> BTreeMap<String, u64> {
    let mounts: Vec<(String, u64)> = mountinfo.lines().filter_map(parse_line).collect();
    destinations
        .filter_map(|dest| {
            let dest_path = std::path::Path::new(dest);
            mounts
                .iter()
                .rev()
                .find(|(point, _)| std::path::Path::new(point) == dest_path)
                .map(|(_, dev)| (dest.to_string(), *dev))
        })
        .collect()
}

/// (mount point, device number) of one mountinfo line:
/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw`.
fn parse_line(line: &str) -> Option<(String, u64)> {
    let mut fields = line.split(' ');
    let (_id, _parent) = (fields.next()?, fields.next()?);
    let (major, minor) = fields.next()?.split_once(':')?;
    let _root = fields.next()?;
    let point = unescape(fields.next()?);
    let dev = nix::sys::stat::makedev(major.parse().ok()?, minor.parse().ok()?);
    Some((point, dev))
}

/// The kernel writes space, tab, newline and backslash in paths as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::stat::makedev;

    const TABLE: &str = "\
1412 1300 0:180 / / rw,relatime master:1 - overlay overlay rw,lowerdir=/x
1413 1412 0:183 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1429 1412 259:1 /data/dev1/workspace /home/coder/workspace rw,relatime - ext4 /dev/nvme0n1p1 rw
1430 1412 7:3 /dev1/config /home/coder/.local/share/code-server rw,nosuid,nodev,noatime - ext4 /dev/loop3 rw
1431 1412 0:25 /csagent/dev1 /run/csagent ro,nosuid,nodev - tmpfs tmpfs rw
1432 1429 7:3 /dev1/workspace /home/coder/workspace rw,noatime - ext4 /dev/loop3 rw
1433 1412 7:3 /dev1/my\\040dir /home/coder/my\\040dir rw - ext4 /dev/loop3 rw
";

    #[test]
    fn each_destination_gets_its_topmost_mount() {
        let got = devices(
            TABLE,
            [
                "/home/coder/workspace",
                "/home/coder/.local/share/code-server",
                "/run/csagent",
                "/home/coder/my dir",
                "/not/mounted",
            ]
            .into_iter(),
        );
        assert_eq!(
            got.get("/home/coder/workspace"),
            Some(&makedev(7, 3)),
            "the later mount covers the first"
        );
        assert_eq!(
            got.get("/home/coder/.local/share/code-server"),
            Some(&makedev(7, 3))
        );
        assert_eq!(got.get("/run/csagent"), Some(&makedev(0, 25)));
        assert_eq!(got.get("/home/coder/my dir"), Some(&makedev(7, 3)));
        assert_eq!(got.get("/not/mounted"), None);
    }

    #[test]
    fn a_bind_on_the_root_disk_shows_its_device() {
        let first_only: String = TABLE.lines().take(3).map(|l| format!("{l}\n")).collect();
        let got = devices(&first_only, ["/home/coder/workspace"].into_iter());
        assert_eq!(got.get("/home/coder/workspace"), Some(&makedev(259, 1)));
    }

    #[test]
    fn odd_lines_are_skipped_not_fatal() {
        let got = devices(
            "garbage\n1 2 x:y / /a rw - ext4 s rw\n\n1 2 8:1 / /a\\\\ rw - x y z\n",
            ["/a\\"].into_iter(),
        );
        assert_eq!(
            got.get("/a\\"),
            None,
            "a literal backslash is written \\134"
        );
        assert_eq!(unescape("/a\\134b\\011c\\0"), "/a\\b\tc\\0");
    }

    #[test]
    fn no_table_no_answer() {
        assert!(bind_devices(i64::from(i32::MAX), ["/"].into_iter()).is_empty());
    }
}
