//! Cluster nodes as containers of the `ase-node` image (deploy/images/build.sh) on a private
//! Docker network: the network and every container the test starts carry one label unique to
//! the test, and the [`DockerNet`] guard removes them all when dropped, a failing test included.
//! Driven through the `docker` CLI, as an operator would.

use crate::support::unavailable;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The label key every test object carries; its value is the test's unique name.
pub const TEST_LABEL: &str = "ase.test";

/// `docker ARGS`, its output whatever the exit status.
pub fn docker_output(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("docker {args:?}: cannot run: {e}"))
}

/// `docker ARGS`, which must succeed; its stdout, trimmed.
pub fn docker(args: &[&str]) -> String {
    let o = docker_output(args);
    assert!(
        o.status.success(),
        "docker {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Whether a Docker daemon answers; outside CI a missing one is reported as a skip.
pub fn docker_or_skip() -> bool {
    match Command::new("docker").arg("info").output() {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            unavailable(&format!(
                "the Docker daemon does not answer: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
            false
        }
        Err(e) => {
            unavailable(&format!("no docker CLI: {e}"));
            false
        }
    }
}

/// The node image to run: `ASE_NODE_IMAGE`, else the one `deploy/images/build.sh node` builds
/// (in seconds when up to date) from the `ase` binary under test, so that containers never
/// run a stale build.
pub fn node_image() -> String {
    if let Ok(image) = std::env::var("ASE_NODE_IMAGE") {
        return image;
    }
    let script = crate::repo_root().join("deploy/images/build.sh");
    let o = Command::new(&script)
        .arg("node")
        .env("ASE_BIN", crate::ase_bin())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{} node: {}\n{}",
        script.display(),
        stdout,
        String::from_utf8_lossy(&o.stderr)
    );
    stdout
        .lines()
        .find(|l| l.starts_with("ase-node:") && !l.ends_with(":latest"))
        .unwrap_or_else(|| panic!("build.sh printed no ase-node tag: {stdout}"))
        .to_string()
}

/// A name no other test (or earlier run) uses.
pub fn unique_name(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

/// A private bridge network; removes itself and every container labelled with its name.
pub struct DockerNet {
    pub name: String,
    /// The host's address on the network: what containers reach the host's servers at.
    pub gateway: IpAddr,
}

impl DockerNet {
    pub fn create(name: &str) -> DockerNet {
        docker(&[
            "network",
            "create",
            "--driver",
            "bridge",
            "--label",
            &format!("{TEST_LABEL}={name}"),
            name,
        ]);
        // From here on the guard owns the network, even if the inspection below fails.
        let mut net = DockerNet {
            name: name.to_string(),
            gateway: IpAddr::from([0, 0, 0, 0]),
        };
        let gw = docker(&[
            "network",
            "inspect",
            "-f",
            "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
            name,
        ]);
        net.gateway = gw
            .parse()
            .unwrap_or_else(|e| panic!("network {name}: gateway {gw:?}: {e}"));
        net
    }

    /// `docker run -d` of `image` on this network, named `{network}-{alias}`, reachable as
    /// `alias` from the other containers. `extra` goes before the image (mounts, ports, env).
    pub fn run(&self, alias: &str, extra: &[String], image: &str, args: &[String]) -> Container {
        let name = format!("{}-{alias}", self.name);
        let mut argv: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--name".into(),
            name.clone(),
            "--label".into(),
            format!("{TEST_LABEL}={}", self.name),
            "--network".into(),
            self.name.clone(),
            "--network-alias".into(),
            alias.into(),
            "-e".into(),
            "RUST_LOG=info".into(),
        ];
        argv.extend(extra.iter().cloned());
        argv.push(image.into());
        argv.extend(args.iter().cloned());
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        docker(&refs);
        Container {
            name,
            alias: alias.into(),
        }
    }

    pub fn disconnect(&self, c: &Container) {
        docker(&["network", "disconnect", &self.name, &c.name]);
    }

    pub fn connect(&self, c: &Container) {
        docker(&[
            "network", "connect", "--alias", &c.alias, &self.name, &c.name,
        ]);
    }

    /// Ids of the containers carrying this network's label, running or not.
    pub fn labelled_containers(&self) -> Vec<String> {
        docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label={TEST_LABEL}={}", self.name),
        ])
        .lines()
        .map(str::to_string)
        .collect()
    }
}

impl Drop for DockerNet {
    fn drop(&mut self) {
        let ids = docker_output(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label={TEST_LABEL}={}", self.name),
        ]);
        let ids = String::from_utf8_lossy(&ids.stdout).into_owned();
        let ids: Vec<&str> = ids.lines().filter(|l| !l.is_empty()).collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids.iter().copied());
            let o = docker_output(&args);
            if !o.status.success() {
                eprintln!(
                    "cleanup: docker rm {ids:?}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        }
        let o = docker_output(&["network", "rm", &self.name]);
        if !o.status.success() {
            eprintln!(
                "cleanup: docker network rm {}: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
}

/// A container started by [`DockerNet::run`] (removed with its network).
#[derive(Debug, Clone)]
pub struct Container {
    pub name: String,
    pub alias: String,
}

impl Container {
    /// stdout and stderr so far.
    pub fn logs(&self) -> String {
        let o = docker_output(&["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    }

    /// The host port published for `container_port` (published with `-p 127.0.0.1::PORT`).
    pub fn host_port(&self, container_port: u16) -> u16 {
        let out = docker(&["port", &self.name, &format!("{container_port}/tcp")]);
        let line = out.lines().next().unwrap_or_default();
        line.rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{}: no published port in {out:?}", self.name))
    }

    pub fn running(&self) -> bool {
        docker_output(&["inspect", "-f", "{{.State.Running}}", &self.name])
            .stdout
            .starts_with(b"true")
    }

    /// Waits until the log holds `needle` `n` times; panics with the log when the container
    /// stops first or `timeout` passes.
    pub fn wait_log(&self, needle: &str, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let logs = self.logs();
            if logs.matches(needle).count() >= n {
                return;
            }
            assert!(
                self.running(),
                "{} stopped before logging `{needle}` {n}x:\n{logs}",
                self.name
            );
            assert!(
                Instant::now() < deadline,
                "{}: no `{needle}` {n}x within {timeout:?}:\n{logs}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// `-v HOST:CONTAINER[:ro]` arguments.
pub fn mount(host: &Path, container: &str, read_only: bool) -> [String; 2] {
    let ro = if read_only { ":ro" } else { "" };
    ["-v".into(), format!("{}:{container}{ro}", host.display())]
}

/// A plain `GET path` over HTTP/1.0 on 127.0.0.1:port (the coordinator's /metrics).
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    body
}

/// The value of an unlabelled metric line `name VALUE` in a Prometheus exposition.
pub fn metric(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(name))
            .then(|| it.next().and_then(|v| v.parse().ok()))
            .flatten()
    })
}
