//! A real image registry on loopback for the pull tests: Debian's `docker-registry`
//! (distribution 2.8) run as `docker-registry serve CONFIG` on `127.0.0.1:PORT` with htpasswd
//! basic auth (bcrypt: distribution accepts nothing else). The daemon pulls from `127.0.0.1:*`
//! without TLS (loopback is an insecure registry by default). Killed when dropped.
//!
//! Also: a small image of the test's own, built on the v2 test image with a layer unique to
//! the test, pushed with credentials and removed from the daemon again, so the evaluation
//! really has to pull it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, PushImageOptionsBuilder, RemoveImageOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

pub const USER: &str = "ase-puller";
/// Distinctive, so a test can look for it in every message.
pub const PASSWORD: &str = "pw-7Hq2-never-logged";

pub struct TestRegistry {
    pub addr: String,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

/// Why the registry cannot run here, or None when its tools are installed.
pub fn missing_tools() -> Option<String> {
    for tool in ["docker-registry", "htpasswd"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !found {
            return Some(format!("{tool} not installed"));
        }
    }
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl TestRegistry {
    /// Starts a registry accepting [`USER`]/[`PASSWORD`], and waits (bounded) until it answers.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let htpasswd = dir.path().join("htpasswd");
        // -i: the password on stdin, not on a command line.
        let mut h = Command::new("htpasswd")
            .args(["-Bic", htpasswd.to_str().unwrap(), USER])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("htpasswd runs");
        h.stdin
            .take()
            .unwrap()
            .write_all(PASSWORD.as_bytes())
            .unwrap();
        assert!(h.wait().unwrap().success(), "htpasswd failed");
        let mut reg = TestRegistry {
            addr: String::new(),
            child: None,
            dir,
        };
        reg.serve(free_port());
        reg
    }

    fn serve(&mut self, port: u16) {
        let root = self.dir.path();
        let config = root.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: ase-test\n    path: {}\n",
                root.join("data").display(),
                root.join("htpasswd").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(root.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry starts");
        self.child = Some(child);
        self.addr = format!("127.0.0.1:{port}");
        // Up when /v2/ answers (401 without credentials).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(&self.addr).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "docker-registry exited ({status}): {}",
                    std::fs::read_to_string(root.join("registry.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {} within 20 s",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts it again on the same port with the same storage (after [`Self::stop`]).
    pub fn restart(&mut self) {
        self.stop();
        let port = self
            .addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .expect("an address with a port");
        self.serve(port);
    }

    /// Stops the registry (its port then refuses connections).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `127.0.0.1:PORT/ase-pull-test/NAME:TAG`.
    pub fn reference(&self, name: &str, tag: &str) -> String {
        format!("{}/ase-pull-test/{name}:{tag}", self.addr)
    }

    pub fn credentials(&self, password: &str) -> DockerCredentials {
        DockerCredentials {
            username: Some(USER.into()),
            password: Some(password.into()),
            serveraddress: Some(self.addr.clone()),
            ..Default::default()
        }
    }

    /// A Docker config directory (what `DOCKER_CONFIG` names) whose `auths` entry for this
    /// registry holds `password`, as `docker login` writes it.
    pub fn docker_config(&self, password: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"));
        std::fs::write(
            dir.path().join("config.json"),
            format!(r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#, self.addr),
        )
        .unwrap();
        dir
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Removes the image references it holds from the daemon when dropped (also on a panic).
pub struct ImageCleanup(pub Vec<String>);

impl Drop for ImageCleanup {
    fn drop(&mut self) {
        for r in &self.0 {
            // Synchronous on purpose: Drop runs outside any runtime's reach on a panic.
            let _ = Command::new("docker")
                .args(["rmi", "-f", r])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Builds `reference` on `base` with one layer unique to it, pushes it to its registry with
/// `creds`, and removes it from the daemon (the unique layer with it). Returns the digest the
/// registry answered.
pub async fn build_push_remove(
    docker: &Docker,
    base: &str,
    reference: &str,
    creds: DockerCredentials,
) -> String {
    // Half a MiB that does not compress, so the daemon reports the layer's download bytes
    // (it sends no progress for a layer of a few bytes).
    let mut marker = format!("{reference} {}\n", std::process::id()).into_bytes();
    let mut rng = fastrand::Rng::with_seed(marker.len() as u64 ^ u64::from(std::process::id()));
    marker.extend((0..512 * 1024).map(|_| rng.u8(..)));
    let dockerfile = format!("FROM {base}\nCOPY marker /ase-pull-marker\n");
    let context = tar_of(&[("Dockerfile", dockerfile.as_bytes()), ("marker", &marker)]);
    let options = BuildImageOptionsBuilder::new()
        .dockerfile("Dockerfile")
        .t(reference)
        .rm(true)
        .build();
    let mut build = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while let Some(item) = tokio::time::timeout_at(deadline, build.next())
        .await
        .expect("the build ends within 120 s")
    {
        let info = item.expect("build");
        if let Some(e) = info.error_detail {
            panic!("building {reference}: {e:?}");
        }
    }
    let digest = push(docker, reference, creds).await;
    remove_image(docker, reference).await;
    digest
}

/// Pushes the local image `source` to the registry as `reference`, then drops that name from
/// the daemon (`source` stays: the layers are shared, so a pull fetches manifest and config).
/// Returns the digest the registry answered.
pub async fn push_as(
    docker: &Docker,
    source: &str,
    reference: &str,
    creds: DockerCredentials,
) -> String {
    let (name, tag) = reference.rsplit_once(':').unwrap();
    docker
        .tag_image(
            source,
            Some(
                bollard::query_parameters::TagImageOptionsBuilder::new()
                    .repo(name)
                    .tag(tag)
                    .build(),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("tagging {source} as {reference}: {e}"));
    let digest = push(docker, reference, creds).await;
    let opts = RemoveImageOptionsBuilder::new().noprune(true).build();
    docker
        .remove_image(reference, Some(opts), None)
        .await
        .unwrap_or_else(|e| panic!("untagging {reference}: {e}"));
    digest
}

async fn push(docker: &Docker, reference: &str, creds: DockerCredentials) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let (name, tag) = reference.rsplit_once(':').unwrap();
    let mut push = docker.push_image(
        name,
        Some(PushImageOptionsBuilder::new().tag(tag).build()),
        Some(creds),
    );
    let mut digest = String::new();
    while let Some(item) = tokio::time::timeout_at(deadline, push.next())
        .await
        .expect("the push ends within 120 s")
    {
        let info = item.unwrap_or_else(|e| panic!("pushing {reference}: {e}"));
        if let Some(status) = info.status {
            if let Some(at) = status.find("digest: sha256:") {
                digest = status[at + "digest: ".len()..]
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
            }
        }
    }
    assert!(digest.starts_with("sha256:"), "no digest from the push");
    digest
}

/// Removes `reference` (and its layers nobody else uses) from the daemon.
pub async fn remove_image(docker: &Docker, reference: &str) {
    let opts = RemoveImageOptionsBuilder::new().force(true).build();
    match docker.remove_image(reference, Some(opts), None).await {
        Ok(_)
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => panic!("removing {reference}: {e}"),
    }
}

pub fn config_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().to_path_buf()
}
