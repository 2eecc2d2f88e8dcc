//! The config the infra template's user data writes is one the agent accepts.

use std::path::Path;

use csagent::config::{Config, VolumeSource};
use csagent_contract::names;

#[test]
fn infra_user_data_config_passes_check_config() {
    for (devs, port) in [(1u32, 8443u16), (8, 8443), (40, 9000), (64, 8443)] {
        let parameter = names::developers_parameter("code-server-multi-dev", 1);
        let text = infra::agent_config_toml(
            "code-server-multi-dev",
            "ap-southeast-7",
            "vol-0123456789abcdef0",
            &parameter,
            port,
        );
        // The user data's file alone: valid, the developers still to be read.
        let c = Config::from_toml(&text, Path::new("user-data.toml"))
            .unwrap_or_else(|e| panic!("{devs} developers: {e}\n{text}"));
        assert!(c.developers.is_empty());
        assert_eq!(
            c.developer_set.parameter.as_deref(),
            Some(parameter.as_str())
        );
        // With the value the template publishes in that parameter.
        let settings = infra::Settings {
            developers: devs,
            base_port: port,
            ..infra::Settings::default()
        };
        let set = infra::developer_set_toml(&settings.developer_list());
        let c =
            Config::from_toml_with_developers(&text, Path::new("user-data.toml"), &set, &parameter)
                .unwrap_or_else(|e| panic!("{devs} developers: {e}\n{set}"));
        assert_eq!(c.developers.len(), devs as usize);
        assert_eq!(c.developers[devs as usize - 1].name, format!("dev{devs}"));
        assert_eq!(c.developers[0].port, port);
        assert_eq!(c.region.as_deref(), Some("ap-southeast-7"));
        assert_eq!(
            c.volume.source,
            VolumeSource::VolumeId("vol-0123456789abcdef0".into())
        );
        // The secret names the template creates are the ones the agent reads.
        assert_eq!(
            c.render(&c.secrets.password_name, "dev1"),
            "code-server-multi-dev/dev1/password"
        );
        assert_eq!(
            c.render(&c.secrets.claude_api_key_name, "dev1"),
            "code-server-multi-dev/dev1/claude-api-key"
        );
        assert_eq!(
            c.render(&c.logs.group, "dev1"),
            "/aws/ec2/code-server-multi-dev/containers/dev1"
        );
        // The agent's defaults are the contract's, which the template is built from.
        assert_eq!(c.secrets.password_name, names::PASSWORD_SECRET);
        assert_eq!(c.secrets.claude_api_key_name, names::CLAUDE_KEY_SECRET);
        assert_eq!(c.logs.group, names::CONTAINER_LOG_GROUP);
        assert_eq!(
            c.logs.agent_group.as_deref(),
            Some(names::render(names::AGENT_LOG_GROUP, &c.project, "").as_str())
        );
        assert_eq!(
            c.logs.retention_days,
            Some(csagent_contract::DEFAULT_LOG_RETENTION_DAYS)
        );
        assert_eq!(c.metrics.namespace, csagent_contract::metrics::NAMESPACE);
        assert_eq!(
            c.volume.mount_point,
            Path::new(csagent_contract::DATA_MOUNT)
        );
    }
}

#[test]
fn infra_team_image_is_pulled_with_ecr_credentials() {
    let s = infra::Settings {
        team_image_tag: "4.96.4-team.1".into(),
        ..infra::Settings::default()
    };
    let text = infra::sample_agent_config(&s);
    let c = Config::from_toml(&text, Path::new("user-data.toml"))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let image = csagent::containers::registry::ImageRef::parse(&c.containers.image);
    assert_eq!(
        csagent::containers::registry::auth_for(c.containers.registry_auth, &image),
        csagent::containers::registry::PullAuth::Ecr {
            region: Some("ap-southeast-7".into())
        },
        "{}",
        c.containers.image
    );
    assert_eq!(
        image.repository(),
        "code-server-multi-dev/code-server-0a1b2c3d"
    );
    assert_eq!(image.tag, "4.96.4-team.1");
}

/// Each host's developer set (hosts 2.. run dev11.., on their own ports) is one the agent
/// accepts, and the sizes the capacity model counted are the ones the agent applies: its
/// defaults when infra is given none, the published values otherwise.
#[test]
fn every_host_s_developer_set_carries_the_sizes_the_capacity_model_counted() {
    const GIB: u64 = 1024 * 1024 * 1024;
    for (memory, reservation, cpu_millis) in [(4, 3, 1500), (6, 2, 2500)] {
        let settings = infra::Settings {
            developers: 40,
            developer_memory_gib: memory,
            developer_memory_reservation_gib: reservation,
            developer_cpu_millis: cpu_millis,
            template_url_prefix: "https://b.s3.amazonaws.com/t/".into(),
            ..infra::Settings::default()
        };
        settings.validate().unwrap();
        for host in settings.host_list() {
            let parameter = names::developers_parameter("code-server-multi-dev", host.number);
            let text = infra::agent_config_toml(
                "code-server-multi-dev",
                "ap-southeast-7",
                "vol-0123456789abcdef0",
                &parameter,
                settings.base_port,
            );
            let set = infra::agent_config::developer_set_value(&settings, &host.developers);
            let c = Config::from_toml_with_developers(
                &text,
                Path::new("user-data.toml"),
                &set,
                &parameter,
            )
            .unwrap_or_else(|e| panic!("host {}: {e}\n{set}", host.number));
            assert_eq!(c.developers.len(), host.developers.len());
            for (got, want) in c.developers.iter().zip(&host.developers) {
                assert_eq!(got.name, want.name);
                assert_eq!(got.port, want.port);
                assert_eq!(got.memory, u64::from(memory) * GIB);
                assert_eq!(got.memory_reservation, u64::from(reservation) * GIB);
                assert_eq!(got.cpus, f64::from(cpu_millis) / 1000.0);
            }
        }
    }
}
