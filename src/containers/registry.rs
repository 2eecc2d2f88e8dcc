//! Which registry an image comes from, and how a pull authenticates to it.
//!
//! Pure: parses the image reference the way Docker does (the first path component
//! is a registry host when it has a `.` or a `:` or is `localhost`; otherwise the
//! image is on Docker Hub) and decides, from `containers.registry_auth`, whether
//! the pull needs ECR credentials and in which region to ask for them.

use crate::config::RegistryAuth;

/// Docker Hub, as dockerd names it when a reference has no registry host.
pub const DOCKER_HUB: &str = "docker.io";

/// An image reference split the way the pull needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `host[:port]`, or [`DOCKER_HUB`].
    pub registry: String,
    /// What `fromImage` gets: the reference without its tag (and with its host).
    pub from_image: String,
    /// The tag, or the digest (`sha256:...`) for a reference pinned by digest.
    pub tag: String,
}

impl ImageRef {
    pub fn parse(image: &str) -> ImageRef {
        let (from_image, tag) = if let Some((name, digest)) = image.split_once('@') {
            (name, digest)
        } else {
            match image.rsplit_once(':') {
                // A ':' inside the last path component is the tag; one before a '/'
                // is a registry port.
                Some((n, t)) if !t.contains('/') => (n, t),
                _ => (image, "latest"),
            }
        };
        let registry = match from_image.split_once('/') {
            Some((first, _))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                first.to_string()
            }
            _ => DOCKER_HUB.to_string(),
        };
        ImageRef {
            registry,
            from_image: from_image.to_string(),
            tag: tag.to_string(),
        }
    }

    /// The repository without the registry host (`team/code-server`).
    pub fn repository(&self) -> &str {
        self.from_image
            .strip_prefix(&self.registry)
            .and_then(|r| r.strip_prefix('/'))
            .unwrap_or(&self.from_image)
    }
}

/// How one pull authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullAuth {
    /// Anonymous.
    Anonymous,
    /// An ECR authorization token, asked for in `region` (None: the agent's region).
    Ecr { region: Option<String> },
}

impl PullAuth {
    pub fn as_str(&self) -> &'static str {
        match self {
            PullAuth::Anonymous => "none",
            PullAuth::Ecr { .. } => "ecr",
        }
    }
}

/// The ECR account and region of a registry host `<account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]`.
pub fn ecr_host(registry: &str) -> Option<(&str, &str)> {
    let host = registry.split(':').next().unwrap_or(registry);
    let mut parts = host.split('.');
    let account = parts.next()?;
    let is_account = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
    let (dkr, ecr, region) = (parts.next()?, parts.next()?, parts.next()?);
    let rest: Vec<&str> = parts.collect();
    let suffix_ok = rest == ["amazonaws", "com"] || rest == ["amazonaws", "com", "cn"];
    let region_ok = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    (is_account && dkr == "dkr" && (ecr == "ecr" || ecr == "ecr-fips") && region_ok && suffix_ok)
        .then_some((account, region))
}

/// What `containers.registry_auth` means for `image`'s registry.
pub fn auth_for(mode: RegistryAuth, image: &ImageRef) -> PullAuth {
    let ecr = ecr_host(&image.registry);
    match (mode, ecr) {
        (RegistryAuth::None, _) => PullAuth::Anonymous,
        (RegistryAuth::Auto | RegistryAuth::Ecr, Some((_, region))) => PullAuth::Ecr {
            region: Some(region.to_string()),
        },
        (RegistryAuth::Ecr, None) => PullAuth::Ecr { region: None },
        (RegistryAuth::Auto, None) => PullAuth::Anonymous,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_like_docker_does() {
        let r = ImageRef::parse("codercom/code-server:4.96.4");
        assert_eq!(r.registry, DOCKER_HUB);
        assert_eq!(r.from_image, "codercom/code-server");
        assert_eq!(r.tag, "4.96.4");
        assert_eq!(r.repository(), "codercom/code-server");

        let r = ImageRef::parse("127.0.0.1:5000/team/code-server:1");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.from_image, "127.0.0.1:5000/team/code-server");
        assert_eq!(r.tag, "1");
        assert_eq!(r.repository(), "team/code-server");

        let r = ImageRef::parse("localhost:5000/x");
        assert_eq!(
            (r.registry.as_str(), r.tag.as_str()),
            ("localhost:5000", "latest")
        );

        let r = ImageRef::parse("123456789012.dkr.ecr.eu-west-1.amazonaws.com/team@sha256:abc");
        assert_eq!(r.registry, "123456789012.dkr.ecr.eu-west-1.amazonaws.com");
        assert_eq!(r.tag, "sha256:abc");
        assert_eq!(r.repository(), "team");

        assert_eq!(ImageRef::parse("busybox").registry, DOCKER_HUB);
        assert_eq!(ImageRef::parse("busybox").tag, "latest");
    }

    #[test]
    fn ecr_hosts_are_recognised_and_nothing_else() {
        assert_eq!(
            ecr_host("123456789012.dkr.ecr.ap-southeast-7.amazonaws.com"),
            Some(("123456789012", "ap-southeast-7"))
        );
        assert_eq!(
            ecr_host("123456789012.dkr.ecr-fips.us-east-1.amazonaws.com"),
            Some(("123456789012", "us-east-1"))
        );
        assert_eq!(
            ecr_host("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"),
            Some(("123456789012", "cn-north-1"))
        );
        for not in [
            "docker.io",
            "127.0.0.1:5000",
            "12345678901.dkr.ecr.eu-west-1.amazonaws.com",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com.evil.example",
            "123456789012.dkr.ecr.amazonaws.com",
            "public.ecr.aws",
        ] {
            assert_eq!(ecr_host(not), None, "{not}");
        }
    }

    #[test]
    fn auth_follows_the_mode_and_the_host() {
        let ecr = ImageRef::parse("123456789012.dkr.ecr.eu-west-1.amazonaws.com/team:1");
        let local = ImageRef::parse("127.0.0.1:5000/team:1");
        let in_region = PullAuth::Ecr {
            region: Some("eu-west-1".into()),
        };
        assert_eq!(auth_for(RegistryAuth::Auto, &ecr), in_region);
        assert_eq!(auth_for(RegistryAuth::Auto, &local), PullAuth::Anonymous);
        assert_eq!(auth_for(RegistryAuth::Ecr, &ecr), in_region);
        assert_eq!(
            auth_for(RegistryAuth::Ecr, &local),
            PullAuth::Ecr { region: None }
        );
        assert_eq!(auth_for(RegistryAuth::None, &ecr), PullAuth::Anonymous);
    }
}
