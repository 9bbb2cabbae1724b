//! Workers that join with a token (`ase token create`, `ase worker --join-file`) against a
//! coordinator started with `--join-ca-key`.

use crate::{ase_bin, client::ase_client, worker_args, CoordinatorAccess, Proc, WorkerOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The flags that make a coordinator admit joins: the CA key of `ase certs init` and the
/// joined certificates' lifetime.
pub fn join_flags(tls_dir: &Path, cert_ttl: &str) -> Vec<String> {
    vec![
        "--join-ca-key".into(),
        tls_dir.join("ca.key").display().to_string(),
        "--join-cert-ttl".into(),
        cert_ttl.into(),
    ]
}

/// `ase token create --ttl TTL`: the token it printed.
pub fn create_token(access: &CoordinatorAccess, ttl: &str) -> String {
    let out = ase_client(access, "token", &["create", "--ttl", ttl]);
    let token = out.trim().to_string();
    assert!(
        token.starts_with("asejt."),
        "ase token create printed {out:?}"
    );
    token
}

/// The id of a token (`asejt.ID.SECRET`).
pub fn token_id(token: &str) -> String {
    token
        .split('.')
        .nth(1)
        .expect("asejt.ID.SECRET")
        .to_string()
}

/// Writes `token` to a file, as a Docker secret holds it (with a newline).
pub fn token_file(dir: &Path, token: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("token-{}", token_id(token)));
    std::fs::write(&path, format!("{token}\n")).unwrap();
    path
}

/// Starts `ase worker --join-file FILE --ca ca.pem` (bare scanner, no Docker), asking for
/// `opts.name` when `ask_name`, else letting the coordinator derive one.
pub fn spawn_joining_worker(
    coord: &CoordinatorAccess,
    cache: &Path,
    opts: &WorkerOptions,
    token_file: &Path,
    ask_name: bool,
    log: PathBuf,
) -> Proc {
    let static_args = worker_args(coord, cache, opts);
    let mut args = Vec::new();
    let mut it = static_args.into_iter();
    while let Some(a) = it.next() {
        if a == "--name" || a == "--tls-dir" {
            it.next();
            continue;
        }
        args.push(a);
    }
    args.extend([
        "--join-file".into(),
        token_file.display().to_string(),
        "--ca".into(),
        coord.tls_dir.join("ca.pem").display().to_string(),
    ]);
    if ask_name {
        args.extend(["--name".into(), opts.name.clone()]);
    }
    Proc::spawn(
        &format!("joining worker {}", opts.name),
        &ase_bin(),
        &args,
        &[],
        log,
    )
}

/// Waits for the worker's `joined as NAME` line and returns NAME.
pub fn joined_name(worker: &mut Proc, timeout: Duration) -> String {
    worker.wait_for_count("joined as ", 1, timeout);
    let log = worker.log_text();
    let line = log
        .lines()
        .find(|l| l.starts_with("joined as "))
        .expect("the joined line");
    line["joined as ".len()..]
        .split_whitespace()
        .next()
        .expect("a name")
        .to_string()
}
