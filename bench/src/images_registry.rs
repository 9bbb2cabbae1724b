//! The registry side of `bench images`: images pushed and pulled over the registry's HTTP API
//! (distribution's `/v2/`), with the test registry's basic-auth credentials.
//!
//! An image is a config blob and one layer of random bytes (so no two images share a layer,
//! and nothing compresses). A pull fetches the manifest and every blob the worker's store does
//! not hold, checks each blob's sha256 and writes it under the store; the download is paced to
//! a rate standing for the worker's link to a remote registry (loopback is not one).

use anyhow::Context;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";

#[derive(Clone)]
pub(crate) struct RegistryClient {
    http: reqwest::Client,
    base: String,
    user: String,
    password: String,
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl RegistryClient {
    pub(crate) fn new(addr: &str, user: &str, password: &str) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(600))
                .build()?,
            base: format!("http://{addr}/v2"),
            user: user.into(),
            password: password.into(),
        })
    }

    fn req(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, url)
            .basic_auth(&self.user, Some(&self.password))
    }

    async fn push_blob(&self, name: &str, bytes: Vec<u8>) -> anyhow::Result<String> {
        let digest = sha256(&bytes);
        let started = self
            .req(
                reqwest::Method::POST,
                &format!("{}/{name}/blobs/uploads/", self.base),
            )
            .send()
            .await?
            .error_for_status()?;
        let location = started
            .headers()
            .get(reqwest::header::LOCATION)
            .context("upload without a Location")?
            .to_str()?
            .to_string();
        let url = if location.starts_with("http") {
            location
        } else {
            format!("{}{location}", self.base.trim_end_matches("/v2"))
        };
        let sep = if url.contains('?') { '&' } else { '?' };
        self.req(reqwest::Method::PUT, &format!("{url}{sep}digest={digest}"))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(bytes)
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("pushing a blob of {name}"))?;
        Ok(digest)
    }

    /// Pushes `name:tag`: a config and one layer of `layer_bytes` random bytes.
    pub(crate) async fn push_image(
        &self,
        name: &str,
        tag: &str,
        layer_bytes: usize,
    ) -> anyhow::Result<()> {
        let mut layer = vec![0u8; layer_bytes];
        let mut rng = fastrand::Rng::new();
        rng.fill(&mut layer);
        let layer_len = layer.len();
        let layer_digest = self.push_blob(name, layer).await?;
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            "config": {}
        }))?;
        let config_len = config.len();
        let config_digest = self.push_blob(name, config).await?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_V2,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "size": config_len, "digest": config_digest},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "size": layer_len, "digest": layer_digest}]
        });
        self.req(
            reqwest::Method::PUT,
            &format!("{}/{name}/manifests/{tag}", self.base),
        )
        .header(reqwest::header::CONTENT_TYPE, MANIFEST_V2)
        .body(serde_json::to_vec(&manifest)?)
        .send()
        .await?
        .error_for_status()
        .with_context(|| format!("pushing the manifest of {name}:{tag}"))?;
        Ok(())
    }

    /// Pulls `name:tag` into `store` (blobs by digest); returns the bytes downloaded.
    pub(crate) async fn pull_image(
        &self,
        name: &str,
        tag: &str,
        store: &Path,
        bytes_per_sec: Option<u64>,
    ) -> anyhow::Result<u64> {
        let manifest: serde_json::Value = self
            .req(
                reqwest::Method::GET,
                &format!("{}/{name}/manifests/{tag}", self.base),
            )
            .header(reqwest::header::ACCEPT, MANIFEST_V2)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let mut digests = vec![manifest["config"]["digest"].as_str().map(str::to_string)];
        digests.extend(
            manifest["layers"]
                .as_array()
                .context("a manifest without layers")?
                .iter()
                .map(|l| l["digest"].as_str().map(str::to_string)),
        );
        let mut downloaded = 0;
        for digest in digests {
            let digest = digest.context("a manifest entry without a digest")?;
            let path: PathBuf = store.join(digest.replace(':', "_"));
            if path.exists() {
                continue;
            }
            downloaded += self.pull_blob(name, &digest, &path, bytes_per_sec).await?;
        }
        Ok(downloaded)
    }

    async fn pull_blob(
        &self,
        name: &str,
        digest: &str,
        path: &Path,
        bytes_per_sec: Option<u64>,
    ) -> anyhow::Result<u64> {
        let mut response = self
            .req(
                reqwest::Method::GET,
                &format!("{}/{name}/blobs/{digest}", self.base),
            )
            .send()
            .await?
            .error_for_status()?;
        let started = Instant::now();
        let mut hasher = Sha256::new();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            hasher.update(&chunk);
            body.extend_from_slice(&chunk);
            if let Some(rate) = bytes_per_sec.filter(|r| *r > 0) {
                let due = Duration::from_secs_f64(body.len() as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        let got = format!("sha256:{}", hex::encode(hasher.finalize()));
        anyhow::ensure!(got == digest, "blob {digest} of {name} arrived as {got}");
        let len = body.len() as u64;
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let tmp = path.with_extension("partial");
            std::fs::write(&tmp, &body)?;
            std::fs::rename(&tmp, &path)
        })
        .await??;
        Ok(len)
    }
}
