//! Containers cannot reach the instance metadata address; the host can.
//!
//! Real packets against a stand-in metadata service: a network namespace of this
//! test's own holds 169.254.169.254 (never a host interface: traffic to a host-local
//! address goes through INPUT, not FORWARD, so it would not exercise the
//! DOCKER-USER rule, and it could shadow a real metadata service). The host reaches
//! the namespace over a veth pair with a link-local /30. Routing to 169.254.169.254
//! through the veth is policy routing in a table of the test's own, selected only
//! for this test's container subnet and the host end's address: the main table,
//! and so every other process and container on the host, is untouched (a real
//! cloud host keeps reaching its real metadata service, and other tests asking
//! IMDS see nothing new). Every request is bounded (`curl --max-time`) and goes
//! only to the address inside that namespace.
//!
//! Needs root, `ip` (iproute2), busybox (httpd) and curl; `.ci/run` installs them.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::PasswordHasher;
use common::*;
use csagent::config::Config;
use csagent::containers::{Action, ContainerCredentials, DesiredDeveloper, Reconciler};

const METADATA_IP: &str = "169.254.169.254";
/// How long a request may take; a dropped SYN makes curl give up with exit 28.
const CURL_MAX_TIME: &str = "3";
const CURL_TIMED_OUT: i32 = 28;

/// The reconciler's world for one developer: config, data dirs, and the cleanup
/// of what the reconciler made (container, network, firewall rule) on drop.
struct Env {
    dir: tempfile::TempDir,
    prefix: String,
    port: u16,
    subnet: String,
    /// Used only by the IPv6 test (`containers.subnet_v6`).
    subnet_v6: String,
    network: String,
}

impl Env {
    fn new() -> Env {
        let prefix = unique("ni").replace('-', "");
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
            port: port_block(1),
            // Not overlapping any Docker network, leaked ones included.
            subnet: unused_test_subnet(),
            // A ULA /64 of this run's own: fd00:c5a:<pid>:<n>::/64.
            subnet_v6: format!(
                "fd00:c5a:{:x}:{:x}::/64",
                std::process::id() % 0xffff,
                NEXT_V6.fetch_add(1, Ordering::Relaxed)
            ),
            network: format!("csagent-{prefix}"),
            prefix,
        }
    }

    fn developer(&self) -> String {
        format!("{}-dev1", self.prefix)
    }

    fn container(&self) -> String {
        format!("code-server-{}", self.developer())
    }

    fn config(&self) -> Config {
        self.config_with("")
    }

    /// The config with `extra` lines added to `[containers]`.
    fn config_with(&self, extra: &str) -> Config {
        let toml = format!(
            "project = \"{prefix}\"\n[volume]\ndevice = \"/dev/null\"\nmount_point = \"{root}/data\"\n\
             [containers]\nimage = \"{TEST_IMAGE}\"\npull = \"never\"\ncpus = 0.25\nmemory = \"256MiB\"\nmemory_reservation = \"128MiB\"\n\
             network = \"{net}\"\nsubnet = \"{subnet}\"\nhealth_interval = \"1s\"\nhealth_start_period = \"0s\"\n\
             block_metadata = true\n{extra}\
             [agent]\nruntime_dir = \"{root}/run\"\nstate_dir = \"{root}/state\"\n\
             [[developer]]\nname = \"{dev}\"\nport = {port}\n",
            root = self.dir.path().display(),
            prefix = self.prefix,
            net = self.network,
            subnet = self.subnet,
            dev = self.developer(),
            port = self.port,
        );
        Config::from_toml(&toml, Path::new("test.toml")).expect("test config is valid")
    }

    fn desired(&self, config: &Config) -> Vec<DesiredDeveloper> {
        config
            .developers
            .iter()
            .map(|d| {
                let key_dir = config.agent.runtime_dir.join(&d.name);
                std::fs::create_dir_all(&key_dir).expect("key dir");
                // The home bind's source must exist (Docker no longer creates it).
                std::fs::create_dir_all(config.volume.mount_point.join(&d.name).join("home"))
                    .expect("data dir");
                let hashed_password = Argon2::default()
                    .hash_password(format!("pw-{}", d.name).as_bytes())
                    .expect("hash")
                    .to_string();
                DesiredDeveloper {
                    developer: d.clone(),
                    credentials: Ok(ContainerCredentials {
                        hashed_password,
                        password_version: "v1".into(),
                        key_dir,
                    }),
                }
            })
            .collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.container()])
            .output();
        let _ = Command::new("docker")
            .args(["network", "rm", &self.network])
            .output();
        delete_metadata_rule(&self.subnet);
        delete_host_rule(&self.subnet);
        for rule in [
            metadata_rule_v6(&self.subnet_v6),
            host_rule_v6(&self.subnet_v6),
        ] {
            while ip6tables("-D", &rule) {}
        }
    }
}

static NEXT_V6: AtomicU32 = AtomicU32::new(1);

/// A stand-in metadata service: `busybox httpd` on 169.254.169.254:80 inside a
/// network namespace of its own, reached from the host over a veth pair, routed
/// to only for the given container subnet and the host end's address. Drop
/// removes everything it made, in reverse order, whatever failed in between.
struct MetadataHost {
    netns: Option<String>,
    /// Host end of the veth pair (deleting it deletes the namespace end too).
    host_if: Option<String>,
    /// The host end's address, `curl --interface` binds to it.
    host_addr: String,
    table: u32,
    /// `ip rule` selectors added (`from X`), all at `priority`.
    rules: Vec<String>,
    priority: u32,
    route_added: bool,
    server: Option<Child>,
    /// What the server answers on `/`, unique to this run.
    token: String,
    www: tempfile::TempDir,
}

/// Runs `ip` with `args`; Err with its stderr when it fails.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("spawn ip: {e} (install iproute2)"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl MetadataHost {
    fn new(container_subnet: &str) -> MetadataHost {
        assert_eq!(
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
                .unwrap_or_default()
                .trim(),
            "1",
            "net.ipv4.ip_forward must be 1 (dockerd sets it) for containers to reach anything"
        );
        let main = ip(&["-4", "route", "show", "table", "main", "exact", METADATA_IP])
            .unwrap_or_else(|e| panic!("{e}"));
        if !main.trim().is_empty() {
            // Left exactly as it is: this test only adds a table of its own.
            eprintln!(
                "note: the main table routes {METADATA_IP} ({}); only this test's subnet and veth address are steered to the stand-in",
                main.trim()
            );
        }
        let (slot, net) = free_slot();
        let www = tempfile::tempdir().expect("tempdir");
        let token = format!("csagent-stand-in-imds-{}", unique("tok"));
        std::fs::write(www.path().join("index.html"), &token).expect("write index.html");
        let mut host = MetadataHost {
            netns: None,
            host_if: None,
            host_addr: format!("169.254.{}.{}", net[2], net[3] + 1),
            table: 20000 + slot,
            rules: Vec::new(),
            priority: 20000 + slot,
            route_added: false,
            server: None,
            token,
            www,
        };
        if let Err(e) = host.build(slot, net, container_subnet) {
            panic!("setting up the stand-in metadata host: {e}");
        }
        host
    }

    /// Each step is recorded before the next, so Drop undoes exactly what exists.
    fn build(&mut self, slot: u32, net: [u8; 4], container_subnet: &str) -> Result<(), String> {
        let ns = unique("csagent-imds");
        ip(&["netns", "add", &ns])?;
        self.netns = Some(ns.clone());

        let host_if = format!("cimds{slot}");
        let peer = format!("cimdsp{slot}");
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &peer,
        ])?;
        self.host_if = Some(host_if.clone());
        ip(&["link", "set", &peer, "netns", &ns])?;

        let ns_addr = format!("169.254.{}.{}", net[2], net[3] + 2);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", self.host_addr),
            "dev",
            &host_if,
        ])?;
        ip(&["link", "set", &host_if, "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{ns_addr}/30"),
            "dev",
            &peer,
        ])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{METADATA_IP}/32"),
            "dev",
            &peer,
        ])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns, "link", "set", &peer, "up"])?;
        // Replies to the host end and to anything behind it (the containers).
        ip(&["-n", &ns, "route", "add", "default", "via", &self.host_addr])?;

        let table = self.table.to_string();
        let priority = self.priority.to_string();
        ip(&[
            "route",
            "add",
            &format!("{METADATA_IP}/32"),
            "dev",
            &host_if,
            "table",
            &table,
        ])?;
        self.route_added = true;
        for from in [
            format!("{}/32", self.host_addr),
            container_subnet.to_string(),
        ] {
            ip(&[
                "rule", "add", "from", &from, "lookup", &table, "priority", &priority,
            ])?;
            self.rules.push(from);
        }

        let www = self.www.path().to_str().expect("UTF-8 path").to_string();
        let server = Command::new("ip")
            .args(["netns", "exec", &ns, "busybox", "httpd", "-f", "-p"])
            .arg(format!("{METADATA_IP}:80"))
            .args(["-h", &www])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("start busybox httpd in {ns}: {e}"))?;
        self.server = Some(server);

        let start = Instant::now();
        loop {
            match self.host_get() {
                Ok(body) if body == self.token => return Ok(()),
                other if start.elapsed() > Duration::from_secs(15) => {
                    return Err(format!(
                        "the host cannot reach the stand-in at {METADATA_IP}: {other:?}"
                    ));
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// GET / from the host itself (OUTPUT path, source = the veth's host end).
    fn host_get(&self) -> Result<String, String> {
        curl_result(
            Command::new("curl")
                .args(["-s", "--max-time", CURL_MAX_TIME, "--interface"])
                .arg(&self.host_addr)
                .arg(format!("http://{METADATA_IP}/"))
                .output(),
        )
    }
}

impl Drop for MetadataHost {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
        let priority = self.priority.to_string();
        let table = self.table.to_string();
        for from in self.rules.drain(..) {
            let _ = ip(&[
                "rule", "del", "from", &from, "lookup", &table, "priority", &priority,
            ]);
        }
        if self.route_added {
            let _ = ip(&["route", "flush", "table", &table]);
        }
        if let Some(i) = self.host_if.take() {
            let _ = ip(&["link", "del", &i]);
        }
        if let Some(ns) = self.netns.take() {
            let _ = ip(&["netns", "del", &ns]);
        }
    }
}

/// A link-local /30 (in 169.254.200.0/22, away from the addresses AWS uses in
/// 169.254.169.0/24 and 169.254.170.0/24) plus a routing table and rule priority
/// that nothing on the host uses now.
fn free_slot() -> (u32, [u8; 4]) {
    let addrs = ip(&["-4", "-o", "addr", "show"]).unwrap_or_else(|e| panic!("{e}"));
    let rules = ip(&["-4", "rule", "show"]).unwrap_or_else(|e| panic!("{e}"));
    let start = std::process::id() % 256;
    for i in 0..256 {
        let slot = (start + i) % 256;
        let net = [169, 254, 200 + (slot / 64) as u8, ((slot % 64) * 4) as u8];
        let prefix = format!("169.254.{}.", net[2]);
        let taken_addr = (0..4).any(|o| addrs.contains(&format!(" {prefix}{}/", net[3] + o)));
        let taken_if = Path::new(&format!("/sys/class/net/cimds{slot}")).exists();
        let taken_rule = rules
            .lines()
            .any(|l| l.starts_with(&format!("{}:", 20000 + slot)));
        let taken_table = ip(&["-4", "route", "show", "table", &(20000 + slot).to_string()])
            .map(|t| !t.trim().is_empty())
            .unwrap_or(false);
        if !(taken_addr || taken_if || taken_rule || taken_table) {
            return (slot, net);
        }
    }
    panic!("no free link-local /30 in 169.254.200.0/22 for the stand-in metadata host");
}

/// curl's body on success, else its exit code and stderr.
fn curl_result(out: std::io::Result<std::process::Output>) -> Result<String, String> {
    let out = out.map_err(|e| format!("spawn: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// GET http://169.254.169.254/ from inside the container: (curl's exit code, body).
fn container_get(container: &str) -> (Option<i32>, String) {
    let out = Command::new("docker")
        .args(["exec", container, "curl", "-s", "--max-time", CURL_MAX_TIME])
        .arg(format!("http://{METADATA_IP}/"))
        .output()
        .expect("docker exec curl");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Packets the metadata rule for `subnet` has matched so far.
fn rule_packets(subnet: &str) -> u64 {
    let listing = run("iptables", &["-w", "-L", "DOCKER-USER", "-n", "-v", "-x"]);
    listing
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 9 && f[2] == "DROP" && f[7] == subnet && f[8] == METADATA_IP)
        .filter_map(|f| f[0].parse::<u64>().ok())
        .sum()
}

async fn wait_running(r: &Reconciler, developer: &str, container: &str) {
    let start = Instant::now();
    loop {
        r.observe_one(developer).await;
        let state = r.status_handle().snapshot()[developer].state.clone();
        // The image has curl but no `true`.
        let exec = Command::new("docker")
            .args(["exec", container, "curl", "--version"])
            .output()
            .expect("docker exec");
        if state == "running" && exec.status.success() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{container} not running within 30s (state {state}; docker exec: {})",
            String::from_utf8_lossy(&exec.stderr).trim()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn containers_cannot_reach_the_metadata_address_but_the_host_can() {
    require_root();
    let env = Env::new();
    let config = Arc::new(env.config());
    assert!(config.containers.block_metadata);
    let imds = MetadataHost::new(&env.subnet);
    let container = env.container();

    // The reconciler creates the network, the rule and the container.
    let r = Reconciler::new(docker().await, config.clone());
    let res = r.converge(&env.desired(&config)).await.expect("converge");
    assert_eq!(res, vec![(env.developer(), Action::Created)]);
    assert!(
        metadata_rule_present(&env.subnet),
        "converge installs the DOCKER-USER rule for {}",
        env.subnet
    );
    wait_running(&r, &env.developer(), &container).await;

    // The host reaches the stand-in (the setup works, through OUTPUT).
    assert_eq!(imds.host_get().as_deref(), Ok(imds.token.as_str()));

    // The container cannot: its packets are dropped in FORWARD by the rule.
    let before = rule_packets(&env.subnet);
    let (code, body) = container_get(&container);
    assert_eq!(
        code,
        Some(CURL_TIMED_OUT),
        "with the rule, curl from {container} must time out (packets silently dropped); body {body:?}"
    );
    assert!(
        rule_packets(&env.subnet) > before,
        "the csagent rule itself dropped the packets:\n{}",
        run("iptables", &["-w", "-L", "DOCKER-USER", "-n", "-v", "-x"])
    );

    // Control: the same container, same network, without the rule reaches it. So
    // the rule, nothing else, is what blocks.
    assert!(delete_metadata_rule(&env.subnet), "delete the rule");
    let (code, body) = container_get(&container);
    assert_eq!(
        (code, body.as_str()),
        (Some(0), imds.token.as_str()),
        "without the rule {container} must reach the stand-in"
    );

    // A convergence pass puts the rule back, touching nothing else, and the
    // container is blocked again.
    let res = r.converge(&env.desired(&config)).await.expect("converge");
    assert_eq!(res, vec![(env.developer(), Action::Unchanged)]);
    assert!(
        metadata_rule_present(&env.subnet),
        "the next converge re-installs the rule"
    );
    let (code, body) = container_get(&container);
    assert_eq!(
        code,
        Some(CURL_TIMED_OUT),
        "blocked again after converge; body {body:?}"
    );
    // The host still can.
    assert_eq!(imds.host_get().as_deref(), Ok(imds.token.as_str()));
}

/// GET http://<addr>:<port>/healthz from inside the container: curl's exit code.
fn container_get_from(container: &str, url: &str) -> Option<i32> {
    Command::new("docker")
        .args([
            "exec",
            container,
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "--max-time",
            CURL_MAX_TIME,
            url,
        ])
        .output()
        .expect("docker exec curl")
        .status
        .code()
}

/// A developer cannot reach another developer's code-server through its port
/// published on the host (the bridge gateway), around the disabled
/// inter-container traffic; the host itself still can.
#[tokio::test]
async fn containers_cannot_open_connections_to_the_host() {
    require_root();
    let env = Env::new();
    let config = Arc::new(env.config());
    assert!(config.containers.isolate_host);
    let container = env.container();
    let r = Reconciler::new(docker().await, config.clone());
    r.converge(&env.desired(&config)).await.expect("converge");
    wait_running(&r, &env.developer(), &container).await;
    let gateway = env.subnet.replace(".0/24", ".1");
    let via_gateway = format!("http://{gateway}:{}/healthz", env.port);

    // The host reaches the published port.
    assert_eq!(http_get_status(env.port, "/healthz"), Some(200));
    // The container cannot open a connection to the host's published port.
    assert_eq!(
        container_get_from(&container, &via_gateway),
        Some(CURL_TIMED_OUT)
    );

    // Control: without the rule it can, so the rule is what blocks.
    assert!(delete_host_rule(&env.subnet), "the rule was installed");
    assert_eq!(container_get_from(&container, &via_gateway), Some(0));

    // The next pass restores it.
    r.converge(&env.desired(&config)).await.expect("converge");
    assert_eq!(
        container_get_from(&container, &via_gateway),
        Some(CURL_TIMED_OUT)
    );
    assert_eq!(http_get_status(env.port, "/healthz"), Some(200));
}

const METADATA_IP_V6: &str = "fd00:ec2::254";

/// The ip6tables rules the agent installs for an IPv6 subnet, after the operation:
/// the IPv4 ones with FORWARD for DOCKER-USER and the IPv6 metadata address.
fn metadata_rule_v6(subnet: &str) -> Vec<String> {
    let mut rule = metadata_rule_spec(subnet);
    rule[0] = "FORWARD".into();
    rule[4] = format!("{METADATA_IP_V6}/128");
    rule
}

fn host_rule_v6(subnet: &str) -> Vec<String> {
    host_rule_spec(subnet)
}

/// `ip6tables -w <op> <rule>`; true when it succeeded.
fn ip6tables(op: &str, rule: &[String]) -> bool {
    Command::new("ip6tables")
        .args(["-w", op])
        .args(rule)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Packets an ip6tables rule (by its comment, in `chain`) has matched so far.
fn rule_packets_v6(chain: &str, subnet: &str) -> u64 {
    let listing = run("ip6tables", &["-w", "-L", chain, "-n", "-v", "-x"]);
    listing
        .lines()
        .filter(|l| l.contains("csagent:") && l.contains(subnet))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// `busybox httpd` serving a token on `[addr]:port`, in network namespace `netns`
/// when given; killed on drop.
struct Httpd {
    child: Child,
    token: String,
    _www: tempfile::TempDir,
}

impl Httpd {
    fn start(netns: Option<&str>, listen: &str) -> Httpd {
        let www = tempfile::tempdir().expect("tempdir");
        let token = unique("csagent-v6-token");
        std::fs::write(www.path().join("index.html"), &token).expect("write index.html");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "busybox"]);
                c
            }
            None => Command::new("busybox"),
        };
        let child = cmd
            .args(["httpd", "-f", "-p", listen, "-h"])
            .arg(www.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start busybox httpd");
        Httpd {
            child,
            token,
            _www: www,
        }
    }
}

impl Drop for Httpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stand-in for the IPv6 metadata address: fd00:ec2::254 inside a network
/// namespace of this test's own, reached over a veth pair and routed to only for
/// the test's container subnet (a routing table and rule of its own), as the
/// IPv4 stand-in does. Drop removes what it made.
struct MetadataHostV6 {
    netns: String,
    host_if: String,
    table: String,
    subnet: String,
    server: Option<Httpd>,
}

impl MetadataHostV6 {
    fn new(container_subnet: &str) -> MetadataHostV6 {
        let (slot, _) = free_slot();
        let mut host = MetadataHostV6 {
            netns: unique("csagent-imds6"),
            host_if: format!("cimds6{slot}"),
            table: (21000 + slot).to_string(),
            subnet: container_subnet.to_string(),
            server: None,
        };
        let link = format!("fd00:c5b:{slot:x}::");
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), host.netns.clone()],
            vec![
                "link".into(),
                "add".into(),
                host.host_if.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                format!("cimds6p{slot}"),
            ],
            vec![
                "link".into(),
                "set".into(),
                format!("cimds6p{slot}"),
                "netns".into(),
                host.netns.clone(),
            ],
            vec![
                "-6".into(),
                "addr".into(),
                "add".into(),
                format!("{link}1/126"),
                "dev".into(),
                host.host_if.clone(),
                "nodad".into(),
            ],
            vec![
                "link".into(),
                "set".into(),
                host.host_if.clone(),
                "up".into(),
            ],
            vec![
                "-n".into(),
                host.netns.clone(),
                "-6".into(),
                "addr".into(),
                "add".into(),
                format!("{link}2/126"),
                "dev".into(),
                format!("cimds6p{slot}"),
                "nodad".into(),
            ],
            vec![
                "-n".into(),
                host.netns.clone(),
                "-6".into(),
                "addr".into(),
                "add".into(),
                format!("{METADATA_IP_V6}/128"),
                "dev".into(),
                format!("cimds6p{slot}"),
                "nodad".into(),
            ],
            vec![
                "-n".into(),
                host.netns.clone(),
                "link".into(),
                "set".into(),
                "lo".into(),
                "up".into(),
            ],
            vec![
                "-n".into(),
                host.netns.clone(),
                "link".into(),
                "set".into(),
                format!("cimds6p{slot}"),
                "up".into(),
            ],
            vec![
                "-n".into(),
                host.netns.clone(),
                "-6".into(),
                "route".into(),
                "add".into(),
                "default".into(),
                "via".into(),
                format!("{link}1"),
            ],
            vec![
                "-6".into(),
                "route".into(),
                "add".into(),
                format!("{METADATA_IP_V6}/128"),
                "via".into(),
                format!("{link}2"),
                "dev".into(),
                host.host_if.clone(),
                "table".into(),
                host.table.clone(),
            ],
            vec![
                "-6".into(),
                "rule".into(),
                "add".into(),
                "from".into(),
                container_subnet.into(),
                "lookup".into(),
                host.table.clone(),
                "priority".into(),
                host.table.clone(),
            ],
        ];
        for step in &steps {
            let args: Vec<&str> = step.iter().map(String::as_str).collect();
            if let Err(e) = ip(&args) {
                panic!("setting up the IPv6 stand-in metadata host: {e}");
            }
        }
        host.server = Some(Httpd::start(
            Some(&host.netns),
            &format!("[{METADATA_IP_V6}]:80"),
        ));
        host
    }

    fn token(&self) -> &str {
        self.server.as_ref().map_or("", |s| s.token.as_str())
    }
}

impl Drop for MetadataHostV6 {
    fn drop(&mut self) {
        self.server.take();
        let _ = ip(&[
            "-6",
            "rule",
            "del",
            "from",
            &self.subnet,
            "lookup",
            &self.table,
            "priority",
            &self.table,
        ]);
        let _ = ip(&["-6", "route", "flush", "table", &self.table]);
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.netns]);
    }
}

/// `curl` from inside the container: (exit code, body).
fn container_curl(container: &str, url: &str) -> (Option<i32>, String) {
    let out = Command::new("docker")
        .args([
            "exec",
            container,
            "curl",
            "-s",
            "-g",
            "--max-time",
            CURL_MAX_TIME,
            url,
        ])
        .output()
        .expect("docker exec curl");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// With `containers.subnet_v6` the network is dual-stack, and the metadata and host
/// rules go into ip6tables too: real IPv6 packets from a container to fd00:ec2::254
/// (a stand-in) and to the host (the bridge gateway) are dropped by csagent's rules,
/// and reach their target when those rules are deleted.
#[tokio::test]
async fn ipv6_network_gets_the_same_rules_in_ip6tables() {
    require_root();
    let env = Env::new();
    let v6 = env.subnet_v6.clone();
    let config = Arc::new(env.config_with(&format!("subnet_v6 = \"{v6}\"\n")));
    assert_eq!(config.containers.subnet_v6.as_deref(), Some(v6.as_str()));
    let imds = MetadataHostV6::new(&v6);
    let gateway = v6.replace("::/64", "::1");
    let host_port = port_block(1);
    let host = Httpd::start(None, &format!("[::]:{host_port}"));
    let container = env.container();

    let r = Reconciler::new(docker().await, config.clone());
    r.converge(&env.desired(&config)).await.expect("converge");
    wait_running(&r, &env.developer(), &container).await;
    let enabled = run(
        "docker",
        &["network", "inspect", "-f", "{{.EnableIPv6}}", &env.network],
    );
    assert_eq!(enabled.trim(), "true", "the network has IPv6");
    for rule in [metadata_rule_v6(&v6), host_rule_v6(&v6)] {
        assert!(ip6tables("-C", &rule), "ip6tables rule installed: {rule:?}");
    }

    let imds_url = format!("http://[{METADATA_IP_V6}]/");
    let host_url = format!("http://[{gateway}]:{host_port}/");
    let blocked = || {
        let before = (
            rule_packets_v6("FORWARD", &v6),
            rule_packets_v6("INPUT", &v6),
        );
        let (imds_code, body) = container_curl(&container, &imds_url);
        assert_eq!(
            imds_code,
            Some(CURL_TIMED_OUT),
            "IMDS over IPv6 must time out; body {body:?}"
        );
        let (host_code, body) = container_curl(&container, &host_url);
        assert_eq!(
            host_code,
            Some(CURL_TIMED_OUT),
            "the host over IPv6 must time out; body {body:?}"
        );
        let after = (
            rule_packets_v6("FORWARD", &v6),
            rule_packets_v6("INPUT", &v6),
        );
        assert!(
            after.0 > before.0 && after.1 > before.1,
            "csagent's ip6tables rules dropped them: {before:?} -> {after:?}"
        );
    };
    blocked();

    // Control: without the rules both are reachable, so the rules are what block.
    for rule in [metadata_rule_v6(&v6), host_rule_v6(&v6)] {
        assert!(ip6tables("-D", &rule), "delete {rule:?}");
    }
    assert_eq!(
        container_curl(&container, &imds_url),
        (Some(0), imds.token().to_string())
    );
    assert_eq!(
        container_curl(&container, &host_url),
        (Some(0), host.token.clone())
    );

    // The next pass restores them, touching nothing else.
    let res = r.converge(&env.desired(&config)).await.expect("converge");
    assert_eq!(res, vec![(env.developer(), Action::Unchanged)]);
    blocked();
}

/// Without `subnet_v6` Docker gives the containers no IPv6 at all, so no IPv6 rule
/// is needed: if a Docker version changed that, this test says so.
#[tokio::test]
async fn ipv4_only_network_leaves_containers_without_ipv6() {
    require_root();
    let env = Env::new();
    let config = Arc::new(env.config());
    let container = env.container();
    let r = Reconciler::new(docker().await, config.clone());
    r.converge(&env.desired(&config)).await.expect("converge");
    wait_running(&r, &env.developer(), &container).await;
    let disabled = run(
        "docker",
        &[
            "exec",
            &container,
            "cat",
            "/proc/sys/net/ipv6/conf/eth0/disable_ipv6",
        ],
    );
    assert_eq!(disabled.trim(), "1", "IPv6 is off inside the container");
    let addrs = run("docker", &["exec", &container, "cat", "/proc/net/if_inet6"]);
    assert!(!addrs.contains("eth0"), "eth0 has no IPv6 address: {addrs}");
}
