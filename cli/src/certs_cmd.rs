//! `ase certs init`: create a cluster's certificates (CA, coordinator, workers, a client) as PEM
//! files. Keys are written 0600, certificates 0644; existing files are kept unless `--force`.
//!
//! Layout of DIR: `ca.pem`, `ca.key` (keep offline: it mints certificates), `coordinator.pem`/
//! `.key`, `worker-NAME.pem`/`.key` per worker, `client-NAME.pem`/`.key`. A node loads
//! `ca.pem` and its own pair (`ase_proto::tls::TlsFiles::in_dir(DIR, STEM)`).

use anyhow::{bail, Context};
use ase_proto::certs::{check_name, ClusterCa, IssuedCert, DEFAULT_VALIDITY_DAYS};
use ase_proto::identity::PeerRole;
use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const MAX_WORKERS: u32 = 1000;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: CertsCommand,
}

#[derive(clap::Subcommand)]
enum CertsCommand {
    /// Create a new cluster CA and the coordinator, worker and client certificates.
    Init(InitArgs),
    /// Print a new join token (`asejt.ID.SECRET`), made here without a coordinator: for
    /// `ase coordinator --join-token-file`, which registers it at start, and the workers'
    /// `--join-file` (one secret for both).
    JoinToken,
}

#[derive(clap::Args)]
struct InitArgs {
    /// Directory to write the PEM files into (created 0700 when missing).
    #[arg(long)]
    out: PathBuf,
    /// DNS name or IP address workers and clients use to reach the coordinator; repeatable.
    /// `localhost` and `127.0.0.1` are always included.
    #[arg(long = "coordinator-name")]
    coordinator_names: Vec<String>,
    /// Number of worker certificates, named w1..wN (zero-padded to the width of N).
    #[arg(long, conflicts_with = "worker")]
    workers: Option<u32>,
    /// Name of a worker certificate; repeatable. Default: one worker, w1.
    #[arg(long)]
    worker: Vec<String>,
    /// Name of the client (submitter) certificate.
    #[arg(long, default_value = "admin")]
    client: String,
    /// Validity of the CA and of every certificate, in days.
    #[arg(long, default_value_t = DEFAULT_VALIDITY_DAYS)]
    valid_days: u32,
    /// Replace existing files.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        CertsCommand::Init(a) => init(a),
        CertsCommand::JoinToken => {
            let token = ase_proto::join::JoinToken::generate()?;
            eprintln!("join token {}", token.id);
            println!("{}", token.reveal());
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(crate) struct PemFile {
    pub name: String,
    pub content: String,
    pub secret: bool,
}

fn worker_names(args: &InitArgs) -> anyhow::Result<Vec<String>> {
    let names: Vec<String> = match args.workers {
        Some(0) => bail!("--workers must be at least 1"),
        Some(n) if n > MAX_WORKERS => bail!("--workers {n} is more than {MAX_WORKERS}"),
        Some(n) => {
            let width = n.to_string().len();
            (1..=n).map(|i| format!("w{i:0width$}")).collect()
        }
        None if args.worker.is_empty() => vec!["w1".to_string()],
        None => args.worker.clone(),
    };
    let mut seen = BTreeSet::new();
    for name in &names {
        check_name(PeerRole::Worker, name)?;
        if !seen.insert(name) {
            bail!("worker name {name:?} is given twice");
        }
    }
    Ok(names)
}

/// The CA's certificate and (secret) key.
pub(crate) fn ca_files(ca: &ClusterCa) -> [PemFile; 2] {
    [
        PemFile {
            name: "ca.pem".into(),
            content: ca.cert_pem().to_string(),
            secret: false,
        },
        PemFile {
            name: "ca.key".into(),
            content: ca.key_pem().to_string(),
            secret: true,
        },
    ]
}

pub(crate) fn pair(stem: &str, cert: IssuedCert) -> [PemFile; 2] {
    [
        PemFile {
            name: format!("{stem}.pem"),
            content: cert.cert_pem,
            secret: false,
        },
        PemFile {
            name: format!("{stem}.key"),
            content: cert.key_pem,
            secret: true,
        },
    ]
}

fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    let workers = worker_names(&args)?;
    check_name(PeerRole::Client, &args.client)?;

    let label = args
        .coordinator_names
        .first()
        .map(String::as_str)
        .unwrap_or("localhost");
    let ca = ClusterCa::generate(label, args.valid_days)?;
    let mut files = Vec::from(ca_files(&ca));
    files.extend(pair(
        "coordinator",
        ca.issue_coordinator(&args.coordinator_names)?,
    ));
    for worker in &workers {
        files.extend(pair(&format!("worker-{worker}"), ca.issue_worker(worker)?));
    }
    files.extend(pair(
        &format!("client-{}", args.client),
        ca.issue_client(&args.client)?,
    ));

    prepare_dir(&args.out)?;
    // All or nothing: look for every existing file before writing any.
    let existing: Vec<String> = files
        .iter()
        .filter(|f| args.out.join(&f.name).symlink_metadata().is_ok())
        .map(|f| f.name.clone())
        .collect();
    if !existing.is_empty() && !args.force {
        bail!(
            "{} already holds {}; refusing to overwrite (use --force)",
            args.out.display(),
            existing.join(", ")
        );
    }
    for file in &files {
        write_pem(&args.out, file)?;
    }
    for file in &files {
        println!("{}", args.out.join(&file.name).display());
    }
    eprintln!(
        "wrote {} files; keep ca.key offline: only ca.pem and each node's own pair are deployed",
        files.len()
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the directory {}", dir.display()))
}

/// Writes through a temporary file renamed into place, so a key never exists with looser
/// permissions or half-written.
pub(crate) fn write_pem(dir: &Path, file: &PemFile) -> anyhow::Result<()> {
    let path = dir.join(&file.name);
    let tmp = dir.join(format!(".{}.tmp", file.name));
    let mode = if file.secret { 0o600 } else { 0o644 };
    let _ = std::fs::remove_file(&tmp);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    // The umask may have narrowed the mode; a certificate stays readable, a key stays private.
    out.set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", tmp.display()))?;
    out.write_all(file.content.as_bytes())
        .and_then(|()| out.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
}
