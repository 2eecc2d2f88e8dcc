//! Names of the per-developer secrets and log groups, as templates with the placeholders
//! `{project}` and `{developer}`. They are the agent's defaults (`secrets.password_name`,
//! `logs.group`, ...) and the names the template gives the resources it creates.

/// A developer's code-server password secret.
pub const PASSWORD_SECRET: &str = "{project}/{developer}/password";
/// A developer's Claude API key secret.
pub const CLAUDE_KEY_SECRET: &str = "{project}/{developer}/claude-api-key";
/// A developer's container log group.
pub const CONTAINER_LOG_GROUP: &str = "/aws/ec2/{project}/containers/{developer}";
/// The agent's own log group (no `{developer}`).
pub const AGENT_LOG_GROUP: &str = "/aws/ec2/{project}/agent";
/// The host's journal: kernel OOM kills and systemd's record of the agent's unit.
pub const SYSTEM_LOG_GROUP: &str = "/aws/ec2/{project}/system";
/// The host's journal: docker.service and containerd.service.
pub const DOCKER_LOG_GROUP: &str = "/aws/ec2/{project}/docker";

/// The SSM parameter (type String) holding one host's developer set: TOML text with exactly
/// the `[[developer]]` tables the agent's config file accepts. Placeholders `{project}` and
/// `{host}` (1, 2, ...). The template publishes it; the agent (`developers.parameter`) polls it.
pub const DEVELOPERS_PARAMETER: &str = "/{project}/csagent/host-{host}/developers";

/// The name of host `host`'s developer-set parameter (hosts count from 1).
pub fn developers_parameter(project: &str, host: u32) -> String {
    DEVELOPERS_PARAMETER
        .replace("{project}", project)
        .replace("{host}", &host.to_string())
}

/// `template` with `{project}` and `{developer}` filled in.
pub fn render(template: &str, project: &str, developer: &str) -> String {
    template
        .replace("{project}", project)
        .replace("{developer}", developer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_both_placeholders() {
        assert_eq!(render(PASSWORD_SECRET, "p", "dev3"), "p/dev3/password");
        assert_eq!(
            render(CONTAINER_LOG_GROUP, "${ProjectName}", "dev1"),
            "/aws/ec2/${ProjectName}/containers/dev1"
        );
        assert_eq!(render(AGENT_LOG_GROUP, "p", "dev1"), "/aws/ec2/p/agent");
        assert_eq!(render(SYSTEM_LOG_GROUP, "p", ""), "/aws/ec2/p/system");
        assert_eq!(render(DOCKER_LOG_GROUP, "p", ""), "/aws/ec2/p/docker");
        assert_eq!(
            developers_parameter("team", 1),
            "/team/csagent/host-1/developers"
        );
    }
}
