//! The developer's whole home on the data volume (issue 16.1), on real loop
//! devices as root: a volume holding the layout before it (`<dev>/workspace`,
//! `<dev>/config`) is migrated in place into `<dev>/home` with every inode and
//! byte kept and nothing copied; a pass killed at any step is completed by the
//! next; a target that exists is never overwritten; and a container running on
//! the old layout keeps working while its directories move, then is recreated
//! on the home with its files at the same paths.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::PasswordHasher;
use common::*;
use csagent::config::Config;
use csagent::containers::{Action, ContainerCredentials, DesiredDeveloper, Reconciler};
use csagent::volume::{self, VolumeStatus};
use sha2::{Digest, Sha256};

const UID: u32 = 1000;
const GID: u32 = 1000;

/// An ext4 loop device mounted at `<dir>/mnt` (as the agent finds a volume it
/// mounted before), with the fstab and by-id directory the config points at.
/// `leftovers` goes first: a test's containers pin the mount.
struct Volume {
    leftovers: Option<Leftovers>,
    disk: LoopDevice,
    dir: tempfile::TempDir,
}

impl Volume {
    fn new() -> Volume {
        let disk = LoopDevice::new("256M");
        run("mkfs.ext4", &["-q", disk.path()]);
        let dir = tempfile::Builder::new()
            .prefix("csagent-home-")
            .tempdir()
            .expect("tempdir");
        let v = Volume {
            leftovers: None,
            disk,
            dir,
        };
        std::fs::create_dir(v.mnt()).expect("mkdir");
        run("mount", &[v.disk.path(), path_str(&v.mnt())]);
        v
    }

    fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    /// `top`: top-level keys; `tables`: more tables after `[volume]`.
    fn config(&self, developers: &[&str], top: &str, tables: &str) -> Config {
        let text = self.config_text(developers, top, tables);
        Config::from_toml(&text, Path::new("test.toml")).expect("test config is valid")
    }

    fn config_text(&self, developers: &[&str], top: &str, tables: &str) -> String {
        let mut text = format!(
            "{top}[volume]\ndevice = \"{dev}\"\nmount_point = \"{mnt}\"\nfstab = \"{root}/fstab\"\n\
             by_id_dir = \"{root}/by-id\"\nwait_timeout = \"10s\"\n{tables}",
            dev = self.disk.path(),
            mnt = self.mnt().display(),
            root = self.dir.path().display(),
        );
        for d in developers {
            text.push_str(&format!("[[developer]]\nname = \"{d}\"\n"));
        }
        text
    }

    fn used_bytes(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.mnt()).expect("statvfs");
        #[allow(clippy::useless_conversion)]
        let (blocks, free, frsize) = (
            u64::from(s.blocks()),
            u64::from(s.blocks_free()),
            u64::from(s.fragment_size()),
        );
        (blocks - free) * frsize
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        self.leftovers.take();
        let _ = std::process::Command::new("umount")
            .arg(self.mnt())
            .status();
    }
}

fn prepare(config: &Config) -> VolumeStatus {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("csagent=debug")
        .with_test_writer()
        .try_init();
    volume::prepare(config, &|_: &str| {}).unwrap_or_else(|e| panic!("prepare failed: {e}"))
}

/// Makes `path` and its missing parents, each owned by `uid:uid` with `mode`.
fn mkdir(path: &Path, uid: u32, mode: u32) {
    let missing: Vec<&Path> = path.ancestors().take_while(|p| !p.exists()).collect();
    for dir in missing.into_iter().rev() {
        std::fs::create_dir(dir).expect("mkdir");
        std::os::unix::fs::chown(dir, Some(uid), Some(uid)).expect("chown");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
}

fn write(path: &Path, bytes: &[u8], uid: u32, mode: u32) {
    std::fs::write(path, bytes).expect("write");
    std::os::unix::fs::chown(path, Some(uid), Some(uid + 1)).expect("chown");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A developer directory as csagent made it before the whole home persisted,
/// holding files, nested directories, a symlink, an empty directory, odd owners
/// and modes, and 2 MiB of random bytes.
fn old_layout(dev_dir: &Path) {
    mkdir(dev_dir, UID, 0o750);
    let ws = dev_dir.join("workspace");
    mkdir(&ws.join("proj/src"), UID, 0o750);
    mkdir(&ws.join("proj/.git"), UID, 0o755);
    mkdir(&ws.join("empty"), 4242, 0o700);
    write(&ws.join("proj/src/main.rs"), b"fn main() {}\n", UID, 0o644);
    write(&ws.join("proj/.git/config"), b"[core]\n", UID, 0o644);
    write(&ws.join("notes.txt"), b"private", 4242, 0o600);
    write(&ws.join("run.sh"), b"#!/bin/sh\necho hi\n", UID, 0o755);
    let random: Vec<u8> = (0..2 << 20)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    write(&ws.join("big.bin"), &random, UID, 0o640);
    std::os::unix::fs::symlink("proj/src/main.rs", ws.join("link")).expect("symlink");
    std::os::unix::fs::lchown(ws.join("link"), Some(UID), Some(GID)).expect("lchown");
    std::fs::set_permissions(&ws, std::fs::Permissions::from_mode(0o750)).expect("chmod");
    let cfg = dev_dir.join("config");
    mkdir(&cfg.join("Machine"), UID, 0o750);
    mkdir(&cfg.join("User"), UID, 0o700);
    write(&cfg.join("Machine/settings.json"), b"{\"a\":1}", UID, 0o644);
    write(&cfg.join("User/settings.json"), b"{\"b\":2}", UID, 0o600);
    write(&cfg.join("coder.json"), b"{}", UID, 0o644);
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o750)).expect("chmod");
}

/// What a tree holds, by relative path ("" is the root): inode, type and mode,
/// owner, size, and the content's SHA-256 or the link's target.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    ino: u64,
    mode: u32,
    owner: (u32, u32),
    len: u64,
    content: String,
    /// Only compared by [`unchanged`]: a rename changes the moved inode's ctime.
    ctime: (i64, i64),
}

fn inventory(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let path = root.join(&rel);
        let m =
            std::fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let content = if m.is_file() {
            hex::encode(Sha256::digest(std::fs::read(&path).expect("read")))
        } else if m.is_symlink() {
            std::fs::read_link(&path)
                .expect("readlink")
                .display()
                .to_string()
        } else {
            for e in std::fs::read_dir(&path).expect("readdir") {
                todo.push(rel.join(e.expect("entry").file_name()));
            }
            String::new()
        };
        out.insert(
            rel.display().to_string(),
            Entry {
                ino: m.ino(),
                mode: m.mode(),
                owner: (m.uid(), m.gid()),
                len: m.len(),
                content,
                ctime: (m.ctime(), m.ctime_nsec()),
            },
        );
    }
    out
}

/// The inventory without ctimes: what a move must keep.
fn moved(mut inv: BTreeMap<String, Entry>) -> BTreeMap<String, Entry> {
    for e in inv.values_mut() {
        e.ctime = (0, 0);
    }
    inv
}

/// The host's /etc/skel regular files, which a new home gets.
fn skel() -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir("/etc/skel")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| {
                    let bytes = std::fs::read(e.path()).expect("read skel");
                    (e.file_name().to_string_lossy().into_owned(), bytes)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Names under `root` that only a pass in progress leaves.
fn temporaries(root: &Path) -> Vec<String> {
    inventory(root)
        .into_keys()
        .filter(|p| p.contains("csagent-new") || p.contains("csagent-skel"))
        .collect()
}

/// Asserts the developer's old data sits in its home, inode for inode.
fn assert_migrated(
    mnt: &Path,
    dev: &str,
    ws: &BTreeMap<String, Entry>,
    cfg: &BTreeMap<String, Entry>,
) {
    let base = mnt.join(dev);
    assert_eq!(
        moved(inventory(&base.join("home/workspace"))),
        moved(ws.clone()),
        "{dev}: workspace"
    );
    assert_eq!(
        moved(inventory(&base.join("home/.local/share/code-server"))),
        moved(cfg.clone()),
        "{dev}: code-server's data"
    );
    assert!(
        !base.join("workspace").exists(),
        "{dev}: nothing left at the old path"
    );
    assert!(
        !base.join("config").exists(),
        "{dev}: nothing left at the old path"
    );
    for dir in ["home", "home/.local", "home/.local/share"] {
        let m = std::fs::symlink_metadata(base.join(dir)).expect("stat");
        assert!(m.is_dir());
        assert_eq!((m.uid(), m.gid()), (UID, GID), "{dev}/{dir} owner");
    }
    assert_eq!(temporaries(&base), Vec::<String>::new(), "{dev}");
}

#[test]
fn old_layout_moves_into_home_with_every_inode_and_byte_kept() {
    let v = Volume::new();
    let mnt = v.mnt();
    old_layout(&mnt.join("alice"));
    let ws = inventory(&mnt.join("alice/workspace"));
    let cfg = inventory(&mnt.join("alice/config"));
    let used_before = v.used_bytes();
    let config = v.config(&["alice", "bob"], "", "");

    let status = prepare(&config);
    assert!(status.blocked.is_empty(), "{:?}", status.blocked);
    assert_migrated(&mnt, "alice", &ws, &cfg);
    // Renames only: the 2 MiB moved cost no space (new: a few directories and dotfiles).
    let grew = v.used_bytes().saturating_sub(used_before);
    assert!(
        grew < 256 << 10,
        "the volume grew by {grew} bytes: data was copied"
    );

    // Both homes are seeded with /etc/skel's dotfiles, owned by the developer;
    // the new developer gets home/workspace directly.
    for dev in ["alice", "bob"] {
        let home = mnt.join(dev).join("home");
        assert_eq!(
            std::fs::metadata(&home).expect("home").mode() & 0o7777,
            0o750
        );
        for (name, bytes) in skel() {
            assert_eq!(
                std::fs::read(home.join(&name)).expect("seeded"),
                bytes,
                "{dev}: {name}"
            );
            assert_eq!(
                std::fs::metadata(home.join(&name)).expect("stat").uid(),
                UID
            );
        }
    }
    let bob_ws = std::fs::metadata(mnt.join("bob/home/workspace")).expect("bob's workspace");
    assert_eq!((bob_ws.uid(), bob_ws.mode() & 0o7777), (UID, 0o750));
    assert!(!mnt.join("bob/workspace").exists() && !mnt.join("bob/config").exists());

    // A second pass changes nothing at all (ctimes included).
    let before = inventory(&mnt);
    let again = prepare(&config);
    assert!(again.blocked.is_empty());
    assert_eq!(inventory(&mnt), before);
}

/// A pass can be killed between any two of its steps; each developer here is
/// left in one of those states (built with renames, which keep inodes, as the
/// steps do), and one pass completes them all.
#[test]
fn a_migration_killed_at_any_step_completes_on_the_next_pass() {
    let v = Volume::new();
    let mnt = v.mnt();
    let states = ["s0", "s1", "s2", "s3", "s4", "s5", "s6"];
    let mut before = HashMap::new();
    for dev in states {
        let base = mnt.join(dev);
        old_layout(&base);
        before.insert(
            dev,
            (
                inventory(&base.join("workspace")),
                inventory(&base.join("config")),
            ),
        );
    }
    let rename = |dev: &str, from: &str, to: &str| {
        std::fs::rename(mnt.join(dev).join(from), mnt.join(dev).join(to)).expect("rename")
    };
    let skel = skel();
    // s0: nothing done yet.
    // s1: killed right after the home's temporary directory was made.
    mkdir(&mnt.join("s1/.home.csagent-new"), 0, 0o700);
    // s2: killed while seeding it: one dotfile whole, one half-written.
    mkdir(&mnt.join("s2/.home.csagent-new"), UID, 0o750);
    write(
        &mnt.join("s2/.home.csagent-new/.profile"),
        b"# whole\n",
        UID,
        0o644,
    );
    write(
        &mnt.join("s2/.home.csagent-new/.csagent-skel.bashrc"),
        b"# half",
        UID,
        0o644,
    );
    // s3: killed after the home was renamed into place.
    mkdir(&mnt.join("s3/home"), UID, 0o750);
    // s4: killed while making home/.local/share (its temporary left behind).
    mkdir(&mnt.join("s4/home/.local"), UID, 0o750);
    mkdir(&mnt.join("s4/home/.local/.share.csagent-new"), 0, 0o700);
    // s5: killed between the two moves.
    mkdir(&mnt.join("s5/home/.local/share"), UID, 0o750);
    rename("s5", "workspace", "home/workspace");
    // s6: the other order (an admin started by hand): config moved, workspace not.
    mkdir(&mnt.join("s6/home/.local/share"), UID, 0o750);
    rename("s6", "config", "home/.local/share/code-server");

    let config = v.config(&states, "", "");
    let status = prepare(&config);
    assert!(status.blocked.is_empty(), "{:?}", status.blocked);
    for dev in states {
        let (ws, cfg) = &before[dev];
        assert_migrated(&mnt, dev, ws, cfg);
    }
    // A home seeded to the end, whatever the kill interrupted; never over a file.
    for dev in ["s0", "s1", "s2"] {
        for (name, bytes) in &skel {
            let got = std::fs::read(mnt.join(dev).join("home").join(name)).expect("seeded");
            if dev == "s2" && name == ".profile" {
                assert_eq!(got, b"# whole\n", "a file already there is kept");
            } else {
                assert_eq!(&got, bytes, "{dev}: {name}");
            }
        }
    }

    let after = inventory(&mnt);
    let again = prepare(&config);
    assert!(again.blocked.is_empty());
    assert_eq!(
        inventory(&mnt),
        after,
        "a finished migration changes nothing"
    );
}

#[test]
fn a_target_that_exists_is_never_overwritten() {
    let v = Volume::new();
    let mnt = v.mnt();
    // alice: ~/workspace exists in the home as well as the old one.
    old_layout(&mnt.join("alice"));
    mkdir(&mnt.join("alice/home/workspace"), UID, 0o750);
    write(
        &mnt.join("alice/home/workspace/other.txt"),
        b"other",
        UID,
        0o644,
    );
    // bob: code-server's data exists in the home as well as the old one.
    old_layout(&mnt.join("bob"));
    mkdir(&mnt.join("bob/home/.local/share/code-server"), UID, 0o750);
    write(
        &mnt.join("bob/home/.local/share/code-server/coder.json"),
        b"{\"new\":1}",
        UID,
        0o644,
    );
    // carol: an empty old workspace (what Docker's Binds would make) beside the real one.
    mkdir(&mnt.join("carol/workspace"), 0, 0o755);
    mkdir(&mnt.join("carol/home/workspace"), UID, 0o750);
    write(
        &mnt.join("carol/home/workspace/work.txt"),
        b"work",
        UID,
        0o644,
    );
    let untouched = |dev: &str, paths: &[&str]| -> Vec<BTreeMap<String, Entry>> {
        paths
            .iter()
            .map(|p| inventory(&mnt.join(dev).join(p)))
            .collect()
    };
    let alice = untouched("alice", &["workspace", "home/workspace"]);
    let bob = untouched("bob", &["config", "home/.local/share/code-server"]);
    let carol = untouched("carol", &["workspace", "home/workspace"]);
    let alice_cfg = inventory(&mnt.join("alice/config"));
    let bob_ws = inventory(&mnt.join("bob/workspace"));

    let config = v.config(&["alice", "bob", "carol", "dave"], "", "");
    for pass in 0..2 {
        let status = prepare(&config);
        let blocked = &status.blocked;
        assert_eq!(
            blocked.keys().collect::<Vec<_>>(),
            ["alice", "bob", "carol"],
            "pass {pass}"
        );
        let says = |dev: &str, old: &str, new: &str| {
            let why = &blocked[dev];
            assert!(
                why.contains(&format!("{dev}/{old}"))
                    && why.contains(&format!("{dev}/home/{new}"))
                    && why.contains("moves nothing over existing data"),
                "{dev}: {why}"
            );
        };
        says("alice", "workspace", "workspace");
        says("bob", "config", ".local/share/code-server");
        says("carol", "workspace", "workspace");
        assert!(
            blocked["carol"].contains("the old one is empty"),
            "{}",
            blocked["carol"]
        );
        assert!(!blocked["alice"].contains("empty"), "{}", blocked["alice"]);
        // Both sides as they were, byte for byte and inode for inode.
        assert_eq!(untouched("alice", &["workspace", "home/workspace"]), alice);
        assert_eq!(
            untouched("bob", &["config", "home/.local/share/code-server"]),
            bob
        );
        assert_eq!(untouched("carol", &["workspace", "home/workspace"]), carol);
        // What did not conflict moved.
        assert_eq!(
            moved(inventory(&mnt.join("alice/home/.local/share/code-server"))),
            moved(alice_cfg.clone())
        );
        assert_eq!(
            moved(inventory(&mnt.join("bob/home/workspace"))),
            moved(bob_ws.clone())
        );
    }

    // The admin resolves carol's (rmdir the empty one): the next pass unblocks her.
    std::fs::remove_dir(mnt.join("carol/workspace")).expect("rmdir");
    let status = prepare(&config);
    assert_eq!(status.blocked.keys().collect::<Vec<_>>(), ["alice", "bob"]);
    assert_eq!(untouched("carol", &["home/workspace"]), carol[1..]);
}

/// Inside the home the developer decides what is there: a ~/workspace they
/// replaced with a symlink (or a link planted at the agent's temporary name) is
/// never followed and never fails the pass for anyone.
#[test]
fn what_a_developer_puts_in_their_home_never_fails_the_pass() {
    let v = Volume::new();
    let mnt = v.mnt();
    let outside = tempfile::tempdir().expect("tempdir");
    let config = v.config(&["alice", "bob", "carol"], "", "");
    prepare(&config);
    std::fs::remove_dir(mnt.join("alice/home/workspace")).expect("rmdir");
    std::os::unix::fs::symlink(outside.path(), mnt.join("alice/home/workspace")).expect("symlink");
    std::fs::remove_dir(mnt.join("bob/home/workspace")).expect("rmdir");
    std::os::unix::fs::symlink(outside.path(), mnt.join("bob/home/.workspace.csagent-new"))
        .expect("symlink");
    std::fs::remove_dir(mnt.join("carol/home/workspace")).expect("rmdir");

    let status = prepare(&config);
    assert!(status.blocked.is_empty(), "{:?}", status.blocked);
    assert_eq!(
        std::fs::read_dir(outside.path()).expect("readdir").count(),
        0,
        "nothing through a link"
    );
    assert!(
        std::fs::symlink_metadata(mnt.join("alice/home/workspace"))
            .expect("kept")
            .is_symlink()
    );
    assert!(!mnt.join("bob/home/workspace").exists());
    let carol = std::fs::symlink_metadata(mnt.join("carol/home/workspace")).expect("made again");
    assert!(carol.is_dir() && carol.uid() == UID);
}

/// A container csagent started on the old layout keeps reading and writing its
/// files while the volume pass moves them (bind mounts follow the inode); the
/// next convergence recreates it on the whole home, files at the same paths.
#[tokio::test]
async fn a_running_container_keeps_its_files_while_they_move_then_runs_on_the_home() {
    let mut v = Volume::new();
    let mnt = v.mnt();
    let project = unique("h").replace('-', "");
    let dev = format!("{project}-dev1");
    let name = format!("code-server-{dev}");
    let (network, subnet) = (format!("csagent-{project}"), test_subnet());
    v.leftovers = Some(Leftovers {
        project: project.clone(),
        network: network.clone(),
        subnet: subnet.clone(),
        mount: None,
    });
    old_layout(&mnt.join(&dev));
    let base = mnt.join(&dev);
    let bind = |sub: &str, at: &str| format!("{}:{at}", base.join(sub).display());
    // As an older csagent created it: Binds, its labels, an older spec hash.
    run(
        "docker",
        &[
            "run",
            "-d",
            "--name",
            &name,
            "-e",
            "PASSWORD=x",
            "--label",
            "csagent.managed=true",
            "--label",
            &format!("csagent.project={project}"),
            "--label",
            &format!("csagent.developer={dev}"),
            "--label",
            "csagent.spec-hash=old",
            "--label",
            "csagent.password-version=v1",
            "-v",
            &bind("workspace", "/home/coder/workspace"),
            "-v",
            &bind("config", "/home/coder/.local/share/code-server"),
            TEST_IMAGE,
        ],
    );
    let exec = |script: &str| run("docker", &["exec", "-u", "1000", &name, "sh", "-c", script]);
    exec("echo before > ~/workspace/before.txt");

    let port = port_block(2);
    let config = Arc::new(v.config(
        &[],
        &format!("project = \"{project}\"\n"),
        &format!(
            "[containers]\nimage = \"{TEST_IMAGE}\"\npull = \"never\"\n\
             network = \"{network}\"\nsubnet = \"{subnet}\"\nmemory = \"512MiB\"\nmemory_reservation = \"256MiB\"\n\
             [agent]\nruntime_dir = \"{root}/run\"\n[[developer]]\nname = \"{dev}\"\nport = {port}\n",
            root = v.dir.path().display(),
        ),
    ));
    let status = prepare(&config);
    assert!(status.blocked.is_empty(), "{:?}", status.blocked);
    assert!(!base.join("workspace").exists());

    // Still the old container: its mounts follow the moved directories.
    assert_eq!(exec("cat ~/workspace/before.txt"), "before\n");
    exec(
        "echo during > ~/workspace/during.txt && echo '{}' > ~/.local/share/code-server/during.json",
    );
    assert_eq!(
        std::fs::read_to_string(base.join("home/workspace/during.txt")).expect("moved"),
        "during\n"
    );
    assert!(
        base.join("home/.local/share/code-server/during.json")
            .exists()
    );
    assert!(
        !base.join("workspace").exists(),
        "nothing recreated at the old path"
    );

    // The next convergence: a spec change; the new container mounts the whole home.
    let key_dir = config.agent.runtime_dir.join(&dev);
    std::fs::create_dir_all(&key_dir).expect("key dir");
    let desired = [DesiredDeveloper {
        developer: config.developers[0].clone(),
        credentials: Ok(ContainerCredentials {
            hashed_password: Argon2::default()
                .hash_password(b"pw")
                .expect("hash")
                .to_string(),
            password_version: "v1".into(),
            key_dir,
        }),
    }];
    let r = Reconciler::new(docker().await, config.clone());
    let res = r.converge(&desired).await.expect("converge");
    assert_eq!(
        res,
        [(dev.clone(), Action::Recreated("spec changed".into()))]
    );
    assert_eq!(
        exec("cat ~/workspace/before.txt ~/workspace/during.txt ~/workspace/proj/src/main.rs"),
        "before\nduring\nfn main() {}\n"
    );
    assert_eq!(
        exec("cat ~/.local/share/code-server/Machine/settings.json"),
        "{\"a\":1}"
    );
    exec("echo '[user]' > ~/.gitconfig");
    assert!(base.join("home/.gitconfig").exists());
}

/// The agent itself: a developer whose migration conflicts is not started and
/// `csagent status` says why, while the others run on their migrated homes;
/// once the admin moves the extra directory away, a reload migrates and starts it.
#[tokio::test(flavor = "multi_thread")]
async fn the_agent_does_not_start_a_conflicting_developer_until_it_is_resolved() {
    let mut v = Volume::new();
    let mnt = v.mnt();
    let project = unique("hm").replace('-', "");
    let (a, b) = (format!("{project}-a"), format!("{project}-b"));
    let subnet = test_subnet();
    v.leftovers = Some(Leftovers {
        project: project.clone(),
        network: format!("csagent-{project}"),
        subnet: subnet.clone(),
        mount: None,
    });
    let runtime = tempfile::Builder::new()
        .prefix("csagent-home-")
        .tempdir_in("/dev/shm")
        .expect("tmpfs dir");
    let sm = aws_sdk_secretsmanager::Client::new(&aws().await);
    for dev in [&a, &b] {
        for (kind, value) in [
            ("password", "pw"),
            ("claude-api-key", "REPLACE_WITH_ACTUAL_KEY"),
        ] {
            sm.create_secret()
                .name(format!("{project}/{dev}/{kind}"))
                .secret_string(value)
                .send()
                .await
                .expect("create secret");
        }
    }
    // a: an old workspace and one in the home; b: a plain old layout.
    old_layout(&mnt.join(&a));
    mkdir(&mnt.join(&a).join("home/workspace"), UID, 0o750);
    old_layout(&mnt.join(&b));
    let ws_b = inventory(&mnt.join(&b).join("workspace"));

    let root = v.dir.path().to_path_buf();
    std::fs::create_dir_all(root.join("ctl")).expect("ctl dir");
    let port = port_block(3);
    let text = v.config_text(
        &[],
        &format!(
            "project = \"{project}\"\nregion = \"{REGION}\"\ninstance_id = \"i-0123456789abcdef0\"\n\
             [aws]\nendpoint_url = \"{moto}\"\n",
            moto = moto_url()
        ),
        &format!(
            "[containers]\nimage = \"{TEST_IMAGE}\"\npull = \"never\"\ncpus = 0.25\nmemory = \"256MiB\"\n\
             memory_reservation = \"128MiB\"\nnetwork = \"csagent-{project}\"\nsubnet = \"{subnet}\"\n\
             health_interval = \"1s\"\nhealth_start_period = \"0s\"\n\
             [secrets]\npoll_interval = \"2s\"\n[metrics]\nenabled = false\n[logs]\nenabled = false\n\
             [agent]\nstate_dir = \"{root}/state\"\nruntime_dir = \"{run}\"\n\
             socket = \"{root}/ctl/csagent.sock\"\nsocket_group = \"adm\"\n\
             [[developer]]\nname = \"{a}\"\nport = {pa}\n[[developer]]\nname = \"{b}\"\nport = {pb}\n",
            root = root.display(),
            run = runtime.path().display(),
            pa = port + 1,
            pb = port + 2,
        ),
    );
    let config = root.join("config.toml");
    std::fs::write(&config, text).expect("write config");

    let daemon = AgentDaemon::start(&config);
    let s = daemon.wait_status(
        "b running, a not started",
        Duration::from_secs(90),
        |_, s| {
            status_developer(s, &b)["state"] == "running"
                && status_developer(s, &a)["problem"]
                    .as_str()
                    .is_some_and(|p| p.contains("home not migrated"))
        },
    );
    let problem = status_developer(&s, &a)["problem"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        problem.contains(&format!("{a}/workspace"))
            && problem.contains(&format!("{a}/home/workspace")),
        "{problem}"
    );
    assert!(
        s["warnings"].as_array().is_some_and(|w| w
            .iter()
            .any(|w| w.as_str().unwrap_or("").contains("home not migrated"))),
        "{s:#}"
    );
    assert_ne!(s["healthy"], true);
    assert!(
        run(
            "docker",
            &["ps", "-aq", "--filter", &format!("name=^code-server-{a}$")]
        )
        .trim()
        .is_empty(),
        "no container for the blocked developer"
    );
    assert_eq!(
        moved(inventory(&mnt.join(&b).join("home/workspace"))),
        moved(ws_b)
    );
    assert!(
        daemon.log().contains("home not migrated"),
        "the journal says so too"
    );

    // The admin moves the extra (empty) directory away and reloads.
    std::fs::remove_dir(mnt.join(&a).join("home/workspace")).expect("rmdir");
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    daemon.wait_status("both running", Duration::from_secs(60), |_, s| {
        [&a, &b]
            .iter()
            .all(|d| status_developer(s, d)["state"] == "running")
    });
    assert!(
        mnt.join(&a)
            .join("home/workspace/proj/src/main.rs")
            .exists()
    );
    assert!(!mnt.join(&a).join("workspace").exists());
}
