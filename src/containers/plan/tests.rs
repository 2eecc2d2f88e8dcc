//! One test per branch of [`plan`], and the readers of Docker's answers.

use std::collections::HashMap;

use bollard::models::{ContainerConfig, ContainerState, Health, MountPoint};
use nix::sys::stat::makedev;

use super::*;
use crate::containers::spec::tests::{config, creds, image};
use ContainerStateStatusEnum::{CREATED, EXITED, RESTARTING, RUNNING};

struct Fixture {
    config: Config,
    desired: DesiredDeveloper,
    image: Result<ImageInfo, String>,
    disks: Disks,
}

/// The data volume's device in these tests, and the root disk's.
fn volume_dev() -> u64 {
    makedev(7, 3)
}

fn root_dev() -> u64 {
    makedev(259, 1)
}

impl Fixture {
    fn new() -> Fixture {
        let config = config("");
        let desired = DesiredDeveloper {
            developer: config.developers[0].clone(),
            credentials: Ok(creds("v1")),
        };
        let mut f = Fixture {
            config,
            desired,
            image: Ok(image()),
            disks: Disks::default(),
        };
        // As a container started on the mounted volume sees it: data binds on
        // the volume, the key directory on its tmpfs.
        f.disks = Disks {
            volume: Some(volume_dev()),
            binds: binds(&f.spec())
                .into_iter()
                .map(|(dest, source)| {
                    let dev = if source.starts_with("/data/") {
                        volume_dev()
                    } else {
                        makedev(0, 25)
                    };
                    (dest, dev)
                })
                .collect(),
        };
        f
    }

    fn desired(&self) -> Desired<'_> {
        Desired {
            config: &self.config,
            developer: &self.desired,
        }
    }

    /// The spec this fixture's developer should run with.
    fn spec(&self) -> DesiredSpec {
        let (Ok(image), Ok(creds)) = (&self.image, &self.desired.credentials) else {
            panic!("fixture has no image or credentials");
        };
        DesiredSpec::new(&self.config, &self.desired.developer, image, creds)
    }

    /// A container exactly as csagent would have created it, in `state`.
    fn ours(&self, state: ContainerStateStatusEnum) -> Existing {
        let spec = self.spec();
        Existing {
            managed: true,
            project: Some(spec.project.clone()),
            developer: Some(spec.developer.clone()),
            spec_hash: Some(spec.hash()),
            password_version: Some(spec.password_version.clone()),
            state: Some(state),
            health: Some(HealthStatusEnum::HEALTHY),
            bind_sources: binds(&spec),
            pid: Some(4242),
        }
    }

    fn step(&self, container: Found, crash_looping: bool) -> Step<'_> {
        let observed = Observed {
            container,
            image: &self.image,
            crash_looping,
            disks: self.disks.clone(),
        };
        plan(&observed, &self.desired())
    }
}

/// The spec's bind mounts as `Existing::bind_sources` reads them back.
fn binds(spec: &DesiredSpec) -> BTreeMap<String, String> {
    spec.mounts
        .iter()
        .map(|m| (m.target.clone(), m.source.clone()))
        .collect()
}

fn recreate_why(step: Step<'_>) -> String {
    match step {
        Step::Recreate { launch, why } => {
            assert_eq!(launch.spec.developer, "dev1");
            why
        }
        other => panic!("expected Recreate, got {other:?}"),
    }
}

fn skip_why(step: Step<'_>) -> String {
    match step {
        Step::Skip { why } => why,
        other => panic!("expected Skip, got {other:?}"),
    }
}

#[test]
fn missing_is_created_with_the_desired_spec() {
    let f = Fixture::new();
    match f.step(Found::Missing, false) {
        Step::Create(launch) => {
            assert_eq!(launch.spec.hash(), f.spec().hash());
            assert_eq!(launch.credentials.password_version, "v1");
        }
        other => panic!("expected Create, got {other:?}"),
    }
}

#[test]
fn running_as_desired_is_left_alone() {
    let f = Fixture::new();
    for state in [RUNNING, RESTARTING] {
        let step = f.step(Found::Present(f.ours(state)), false);
        assert!(matches!(step, Step::Nothing), "{state}: {step:?}");
    }
    let step = f.step(Found::Present(f.ours(RUNNING)), true);
    assert!(
        matches!(step, Step::Nothing),
        "a running one is left to Docker's restart policy even when looping: {step:?}"
    );
}

#[test]
fn stopped_as_desired_is_started() {
    let f = Fixture::new();
    for state in [EXITED, CREATED] {
        let step = f.step(Found::Present(f.ours(state)), false);
        assert!(matches!(step, Step::Start), "{state}: {step:?}");
    }
    let mut no_state = f.ours(EXITED);
    no_state.state = None;
    assert!(matches!(
        f.step(Found::Present(no_state), false),
        Step::Start
    ));
}

#[test]
fn crash_loop_is_not_restarted() {
    let f = Fixture::new();
    let why = skip_why(f.step(Found::Present(f.ours(EXITED)), true));
    assert_eq!(
        why,
        "crash-looping; not restarting it (see its last log lines)"
    );
}

#[test]
fn same_name_but_not_ours_is_left_alone() {
    let f = Fixture::new();
    let unlabelled = Existing {
        state: Some(RUNNING),
        ..Existing::default()
    };
    let why = skip_why(f.step(Found::Present(unlabelled), false));
    assert_eq!(
        why,
        "a container named code-server-dev1 exists without the csagent.managed label; csagent leaves it alone: remove or rename it"
    );
    let mut not_true = f.ours(RUNNING);
    not_true.managed = false;
    assert!(skip_why(f.step(Found::Present(not_true), false)).contains("without the"));
}

#[test]
fn another_projects_container_is_left_alone() {
    let f = Fixture::new();
    let mut theirs = f.ours(RUNNING);
    theirs.project = Some("other".into());
    theirs.spec_hash = Some("their-hash".into());
    theirs.password_version = Some("their-version".into());
    let why = skip_why(f.step(Found::Present(theirs.clone()), false));
    assert!(why.contains("project \"other\""), "{why}");
    theirs.project = None;
    let why = skip_why(f.step(Found::Present(theirs), false));
    assert!(why.contains("belongs to project \"\""), "{why}");
}

#[test]
fn spec_drift_recreates() {
    let f = Fixture::new();
    let mut drifted = f.ours(RUNNING);
    drifted.spec_hash = Some("older".into());
    assert_eq!(
        recreate_why(f.step(Found::Present(drifted.clone()), false)),
        "spec changed"
    );
    drifted.spec_hash = None;
    assert_eq!(
        recreate_why(f.step(Found::Present(drifted), false)),
        "spec changed",
        "a managed container without a hash label"
    );
    // A stopped or crash-looping one is recreated too: drift is checked first.
    let mut stopped = f.ours(EXITED);
    stopped.spec_hash = Some("older".into());
    assert_eq!(
        recreate_why(f.step(Found::Present(stopped), true)),
        "spec changed"
    );
}

#[test]
fn password_rotation_recreates() {
    let mut f = Fixture::new();
    let before = f.ours(RUNNING);
    f.desired.credentials = Ok(creds("v2"));
    match f.step(Found::Present(before), false) {
        Step::Recreate { launch, why } => {
            assert_eq!(why, "credentials rotated");
            assert_eq!(launch.spec.password_version, "v2");
            assert_eq!(launch.credentials.password_version, "v2");
        }
        other => panic!("expected Recreate, got {other:?}"),
    }
}

#[test]
fn image_missing_fails() {
    let mut f = Fixture::new();
    let running = f.ours(RUNNING);
    f.image = Err("image x is not present and containers.pull is \"never\"".into());
    for found in [Found::Missing, Found::Present(running)] {
        match f.step(found, false) {
            Step::Fail { why } => assert_eq!(
                why,
                "image x is not present and containers.pull is \"never\""
            ),
            other => panic!("expected Fail, got {other:?}"),
        }
    }
}

#[test]
fn another_bind_path_on_the_volume_is_kept() {
    // The hash covers the desired binds and the device check covers the disk:
    // a container whose labels match and whose binds are on the volume is kept
    // even when it mounts another directory (only a hand-made container can).
    let f = Fixture::new();
    let mut wrong = f.ours(RUNNING);
    wrong
        .bind_sources
        .insert("/home/coder".into(), "/data/dev2/home".into());
    assert_ne!(wrong.bind_sources, f.ours(RUNNING).bind_sources);
    assert!(matches!(
        f.step(Found::Present(wrong), false),
        Step::Nothing
    ));
}

fn relocate(step: Step<'_>) -> (bool, String) {
    match step {
        Step::Relocate { launch, why } => {
            if let Some(l) = &launch {
                assert_eq!(l.spec.developer, "dev1");
            }
            (launch.is_some(), why)
        }
        other => panic!("expected Relocate, got {other:?}"),
    }
}

#[test]
fn a_data_bind_on_another_disk_relocates() {
    let mut f = Fixture::new();
    f.disks.binds.insert("/home/coder".into(), root_dev());
    let (relaunched, why) = relocate(f.step(Found::Present(f.ours(RUNNING)), false));
    assert!(relaunched);
    assert_eq!(
        why,
        "bind /home/coder (/data/dev1/home) is on device 259:1, not on the data volume (7:3): the container started before the volume was mounted"
    );
    // Checked before the spec hash: a drifted one on the wrong disk is relocated
    // (and so its stray content quarantined), not merely recreated.
    let mut drifted = f.ours(RUNNING);
    drifted.spec_hash = Some("older".into());
    assert!(relocate(f.step(Found::Present(drifted), false)).0);
}

#[test]
fn every_data_bind_is_checked_whatever_its_destination() {
    // Whatever binds the spec has (`home` moves to one bind of the whole home):
    // every bind whose host source is under the mount point counts.
    let mut f = Fixture::new();
    let mut c = f.ours(RUNNING);
    c.bind_sources = BTreeMap::from([
        ("/home/coder".into(), "/data/dev1/home".into()),
        ("/run/csagent".into(), "/run/csagent/dev1".into()),
    ]);
    f.disks.binds = BTreeMap::from([
        ("/home/coder".into(), volume_dev()),
        ("/run/csagent".into(), makedev(0, 25)),
    ]);
    assert!(
        matches!(f.step(Found::Present(c.clone()), false), Step::Nothing),
        "the key directory's tmpfs bind is not developer data"
    );
    f.disks.binds.insert("/home/coder".into(), root_dev());
    let (_, why) = relocate(f.step(Found::Present(c), false));
    assert!(
        why.starts_with("bind /home/coder (/data/dev1/home) is on device 259:1"),
        "{why}"
    );
}

#[test]
fn nothing_is_decided_without_both_devices() {
    let mut f = Fixture::new();
    f.disks.binds.insert("/home/coder".into(), root_dev());
    let mut unknown_volume = f.disks.clone();
    unknown_volume.volume = None;
    let no_table = Disks {
        volume: Some(volume_dev()),
        binds: BTreeMap::new(),
    };
    for disks in [unknown_volume, no_table] {
        f.disks = disks;
        let step = f.step(Found::Present(f.ours(RUNNING)), false);
        assert!(matches!(step, Step::Nothing), "{step:?}");
    }
}

#[test]
fn on_the_wrong_disk_without_credentials_or_image_it_is_only_removed() {
    let mut f = Fixture::new();
    f.disks.binds.insert("/home/coder".into(), root_dev());
    let wrong = f.ours(RUNNING);
    f.desired.credentials = Err("password secret x does not exist".into());
    let (relaunched, why) = relocate(f.step(Found::Present(wrong.clone()), false));
    assert!(!relaunched);
    assert!(
        why.ends_with("; not started again: password secret x does not exist"),
        "{why}"
    );

    let mut f2 = Fixture::new();
    f2.disks = f.disks.clone();
    f2.image = Err("image x is not present".into());
    let (relaunched, why) = relocate(f2.step(Found::Present(wrong), false));
    assert!(!relaunched);
    assert!(
        why.ends_with("; not started again: image x is not present"),
        "{why}"
    );
}

#[test]
fn no_credentials_creates_nothing_and_keeps_what_runs() {
    let mut f = Fixture::new();
    let running = f.ours(RUNNING);
    f.desired.credentials = Err("password secret x does not exist".into());
    assert_eq!(
        skip_why(f.step(Found::Missing, false)),
        "not started: password secret x does not exist"
    );
    // What runs is said to stay, not to be "not started".
    assert_eq!(
        skip_why(f.step(Found::Present(running), false)),
        "left as it is (not updated): password secret x does not exist"
    );
    // Not-ours is said first, whatever the credentials.
    assert!(skip_why(f.step(Found::Present(Existing::default()), false)).contains("without the"));
}

#[test]
fn unreadable_fails_before_anything_else() {
    let mut f = Fixture::new();
    f.desired.credentials = Err("none".into());
    match f.step(Found::Unreadable("connection refused".into()), true) {
        Step::Fail { why } => assert_eq!(why, "inspect code-server-dev1: connection refused"),
        other => panic!("expected Fail, got {other:?}"),
    }
}

#[test]
fn inspect_is_read_into_existing() {
    let inspect = ContainerInspectResponse {
        config: Some(ContainerConfig {
            labels: Some(HashMap::from([
                (LABEL_MANAGED.to_string(), "true".to_string()),
                (LABEL_PROJECT.to_string(), "p".to_string()),
                (LABEL_DEVELOPER.to_string(), "dev1".to_string()),
                (LABEL_SPEC_HASH.to_string(), "h".to_string()),
                (LABEL_PASSWORD_VERSION.to_string(), "v1".to_string()),
            ])),
            ..Default::default()
        }),
        state: Some(ContainerState {
            status: Some(RUNNING),
            pid: Some(4242),
            health: Some(Health {
                status: Some(HealthStatusEnum::STARTING),
                ..Default::default()
            }),
            ..Default::default()
        }),
        mounts: Some(vec![
            MountPoint {
                typ: Some("bind".into()),
                source: Some("/data/dev1/home".into()),
                destination: Some("/home/coder".into()),
                ..Default::default()
            },
            MountPoint {
                typ: Some("volume".into()),
                source: Some("/var/lib/docker/volumes/x".into()),
                destination: Some("/x".into()),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    assert_eq!(
        Existing::from_inspect(&inspect),
        Existing {
            managed: true,
            project: Some("p".into()),
            developer: Some("dev1".into()),
            spec_hash: Some("h".into()),
            password_version: Some("v1".into()),
            state: Some(RUNNING),
            health: Some(HealthStatusEnum::STARTING),
            bind_sources: BTreeMap::from([("/home/coder".into(), "/data/dev1/home".into())]),
            pid: Some(4242),
        }
    );
    let unlabelled = Existing::from_inspect(&ContainerInspectResponse::default());
    assert!(!unlabelled.managed);
    assert_eq!(unlabelled, Existing::default());
}

#[test]
fn unconfigured_developers_are_removed() {
    let listed = |developer: &str, name: &str| Listed {
        developer: developer.into(),
        name: name.into(),
    };
    let configured = BTreeSet::from(["dev1".to_string()]);
    let gone = to_remove(
        vec![
            listed("dev1", "code-server-dev1"),
            listed("dev2", "code-server-dev2"),
            // Without a developer label it belongs to nobody configured.
            listed("", "code-server-x"),
        ],
        &configured,
    );
    assert_eq!(
        gone,
        [
            listed("dev2", "code-server-dev2"),
            listed("", "code-server-x")
        ]
    );
}

#[test]
fn summary_is_read_into_listed() {
    let summary = ContainerSummary {
        names: Some(vec!["/code-server-dev2".into()]),
        labels: Some(HashMap::from([(
            LABEL_DEVELOPER.to_string(),
            "dev2".to_string(),
        )])),
        ..Default::default()
    };
    assert_eq!(
        Listed::from_summary(&summary),
        Listed {
            developer: "dev2".into(),
            name: "code-server-dev2".into(),
        }
    );
    assert_eq!(
        Listed::from_summary(&ContainerSummary::default()),
        Listed {
            developer: String::new(),
            name: String::new(),
        }
    );
}
