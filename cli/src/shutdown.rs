//! How a long-running command (`ase coordinator`, `ase worker`, `ase run`) learns it must stop.

/// Resolves at the first SIGTERM or SIGINT.
pub async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        (term, int) => {
            let e = term.err().or(int.err());
            tracing::warn!(error = ?e, "cannot listen for SIGTERM and SIGINT; ctrl-c only");
            // Without signal handlers Ctrl-C still works through the default disposition.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
