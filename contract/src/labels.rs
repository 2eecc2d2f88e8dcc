//! Docker labels on the containers the agent runs. Only containers with
//! [`MANAGED`]`=true` are ever changed or removed, by the reconciler, the log shipper, the
//! metrics collector or `csagent status`.

// A macro, so the `label=...` filter below is built from the same literal with `concat!`.
macro_rules! managed {
    () => {
        "csagent.managed"
    };
}

/// Marks a container csagent manages (value `true`).
pub const MANAGED: &str = managed!();
/// Docker `label` filter that lists only managed containers.
pub const MANAGED_FILTER: &str = concat!(managed!(), "=true");
/// The developer a managed container belongs to.
pub const DEVELOPER: &str = "csagent.developer";
/// The project the container was created for.
pub const PROJECT: &str = "csagent.project";
/// Hash of the container's spec; a different hash means "recreate".
pub const SPEC_HASH: &str = "csagent.spec-hash";
/// Secrets Manager version of the password the container was started with.
pub const PASSWORD_VERSION: &str = "csagent.password-version";
