//! Decides what a device holds before anything is written to it.
//!
//! A device counts as blank only when three independent checks agree:
//! 1. `blkid -p` (low-level probe, no cache) finds no filesystem, partition table,
//!    RAID/LVM member, LUKS header or other signature;
//! 2. `wipefs` (which lists *every* signature libblkid knows, not just the first)
//!    lists none;
//! 3. the first MiB reads back as zeros. A fresh EBS volume reads as zeros; a
//!    filesystem whose superblock magic was damaged does not, and must never be
//!    formatted over (fsck could still recover it). The read also fails loudly on
//!    a device with I/O errors, where blkid would merely report "nothing found".

use std::collections::BTreeMap;
use std::io::Read;

use serde::Deserialize;

use super::discover::Device;
use super::{VolumeError, cmd};

/// How much of the device start must be zero for it to count as blank.
const ZERO_CHECK_BYTES: u64 = 1024 * 1024;

/// What the device holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Contents {
    /// No signature and zeros at the start: safe to format.
    Blank,
    /// A filesystem directly on the device.
    Filesystem {
        fstype: String,
        uuid: Option<String>,
        label: Option<String>,
    },
    /// Anything else libblkid recognises (partition table, LUKS, LVM, RAID, swap…),
    /// described for the error message.
    Other { description: String },
}

/// Probes `device`. Read-only.
pub(crate) fn probe(device: &Device) -> Result<Contents, VolumeError> {
    let about = device.path.display().to_string();
    let out = cmd::output(
        "blkid",
        &[
            "-p".as_ref(),
            "-o".as_ref(),
            "export".as_ref(),
            device.path.as_os_str(),
        ],
        &about,
    )?;
    match out.code {
        Some(0) => return Ok(classify(&parse_export(&out.stdout))),
        // 2: nothing was recognised. Confirm below before calling it blank.
        Some(2) => {}
        // 8: ambivalent result, several signatures that contradict each other.
        Some(8) => {
            return Ok(Contents::Other {
                description: format!(
                    "several conflicting signatures (blkid -p: {})",
                    out.stderr.split_whitespace().collect::<Vec<_>>().join(" ")
                ),
            });
        }
        _ => return Err(out.failed(&about)),
    }

    let signatures = wipefs_signatures(device)?;
    if !signatures.is_empty() {
        return Ok(Contents::Other {
            description: signatures.join(", "),
        });
    }

    if let Some(offset) = first_nonzero(device, ZERO_CHECK_BYTES)? {
        return Err(VolumeError::UnrecognisedData {
            device: device.path.clone(),
            offset,
        });
    }
    Ok(Contents::Blank)
}

/// `KEY=value` lines of `blkid -o export`.
pub(crate) fn parse_export(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Turns blkid's tags into [`Contents`].
pub(crate) fn classify(tags: &BTreeMap<String, String>) -> Contents {
    let get = |k: &str| tags.get(k).filter(|v| !v.is_empty()).cloned();
    let fstype = get("TYPE");
    let usage = get("USAGE");
    if let Some(pt) = get("PTTYPE") {
        let mut description = format!("a {pt} partition table");
        if let Some(t) = &fstype {
            description.push_str(&format!(" and a {t} signature"));
        }
        return Contents::Other { description };
    }
    match (fstype, usage.as_deref()) {
        (Some(fstype), Some("filesystem")) => Contents::Filesystem {
            fstype,
            uuid: get("UUID"),
            label: get("LABEL"),
        },
        (Some(t), usage) => {
            let kind = match usage {
                Some("crypto") => "an encrypted-volume header",
                Some("raid") => "a RAID or LVM member signature",
                Some("filesystem") => "a filesystem",
                _ => "a signature",
            };
            let mut description = format!("{kind} ({t}");
            if let Some(u) = get("UUID") {
                description.push_str(&format!(", UUID {u}"));
            }
            description.push(')');
            Contents::Other { description }
        }
        (None, _) => {
            // blkid said it found something, but not what: never call that blank.
            let found = tags
                .iter()
                .filter(|(k, _)| k.as_str() != "DEVNAME")
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ");
            Contents::Other {
                description: format!("an unidentified signature ({found})"),
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct WipefsOut {
    #[serde(default)]
    signatures: Vec<WipefsSignature>,
}

#[derive(Debug, Deserialize)]
struct WipefsSignature {
    #[serde(rename = "type")]
    kind: Option<String>,
    offset: Option<String>,
}

/// Every signature wipefs lists, as "TYPE at OFFSET". `--no-act`: it only reads.
fn wipefs_signatures(device: &Device) -> Result<Vec<String>, VolumeError> {
    let about = device.path.display().to_string();
    let out = cmd::checked(
        "wipefs",
        &[
            "--no-act".as_ref(),
            "--json".as_ref(),
            device.path.as_os_str(),
        ],
        &about,
    )?;
    parse_wipefs(&out.stdout).map_err(|m| out.unexpected(&about, m))
}

pub(crate) fn parse_wipefs(stdout: &str) -> Result<Vec<String>, String> {
    // wipefs prints nothing at all when there is nothing to list.
    if stdout.trim().is_empty() {
        return Ok(Vec::new());
    }
    let parsed: WipefsOut = serde_json::from_str(stdout).map_err(|e| e.to_string())?;
    Ok(parsed
        .signatures
        .into_iter()
        .map(|s| {
            format!(
                "a {} signature at offset {}",
                s.kind.as_deref().unwrap_or("unknown"),
                s.offset.as_deref().unwrap_or("?")
            )
        })
        .collect())
}

/// Offset of the first non-zero byte among the first `len` bytes, if any.
fn first_nonzero(device: &Device, len: u64) -> Result<Option<u64>, VolumeError> {
    let file = std::fs::File::open(&device.path)
        .map_err(|e| VolumeError::io("cannot open", &device.path, e))?;
    let mut buf = Vec::new();
    file.take(len)
        .read_to_end(&mut buf)
        .map_err(|e| VolumeError::io("cannot read", &device.path, e))?;
    Ok(buf.iter().position(|b| *b != 0).map(|p| p as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(text: &str) -> BTreeMap<String, String> {
        parse_export(text)
    }

    #[test]
    fn ext4_is_a_filesystem() {
        let c = classify(&tags(
            "DEVNAME=/dev/loop0\nLABEL=t\nUUID=db37f730-7cf2-47f4-a5e6-46adf2f9bba3\nVERSION=1.0\nBLOCK_SIZE=1024\nTYPE=ext4\nUSAGE=filesystem\n",
        ));
        assert_eq!(
            c,
            Contents::Filesystem {
                fstype: "ext4".into(),
                uuid: Some("db37f730-7cf2-47f4-a5e6-46adf2f9bba3".into()),
                label: Some("t".into()),
            }
        );
    }

    #[test]
    fn everything_else_is_not_blank() {
        let gpt = classify(&tags("DEVNAME=/dev/loop0\nPTUUID=faf1\nPTTYPE=gpt\n"));
        assert_eq!(
            gpt,
            Contents::Other {
                description: "a gpt partition table".into()
            }
        );
        let luks = classify(&tags(
            "DEVNAME=/dev/loop0\nVERSION=2\nUUID=bac0\nTYPE=crypto_LUKS\nUSAGE=crypto\n",
        ));
        assert_eq!(
            luks,
            Contents::Other {
                description: "an encrypted-volume header (crypto_LUKS, UUID bac0)".into()
            }
        );
        let lvm = classify(&tags("TYPE=LVM2_member\nUSAGE=raid\n"));
        assert!(
            matches!(lvm, Contents::Other { ref description } if description.contains("LVM2_member"))
        );
        let swap = classify(&tags("TYPE=swap\nUSAGE=other\n"));
        assert!(
            matches!(swap, Contents::Other { ref description } if description.contains("swap"))
        );
        let odd = classify(&tags("DEVNAME=/dev/loop0\nSBMAGIC=xyz\n"));
        assert!(
            matches!(odd, Contents::Other { ref description } if description.contains("SBMAGIC=xyz"))
        );
    }

    #[test]
    fn wipefs_json() {
        assert_eq!(parse_wipefs(""), Ok(vec![]));
        assert_eq!(parse_wipefs("{\"signatures\": []}"), Ok(vec![]));
        let two = parse_wipefs(
            r#"{"signatures": [{"device":"loop0","offset":"0x200","type":"gpt","uuid":null,"label":null},
                {"device":"loop0","offset":"0x1fe","type":"PMBR","uuid":null,"label":null}]}"#,
        )
        .expect("valid json");
        assert_eq!(
            two,
            vec![
                "a gpt signature at offset 0x200".to_string(),
                "a PMBR signature at offset 0x1fe".to_string()
            ]
        );
        assert!(parse_wipefs("not json").is_err());
    }
}
