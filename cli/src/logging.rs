//! The log filter: `ASE_LOG`, else `RUST_LOG` (what Compose files, Kubernetes manifests and most
//! Rust tooling set), else warnings only. A filter that does not parse is said on stderr rather
//! than silently replaced, so an operator who asked for `debug` knows why they see nothing.

use tracing_subscriber::EnvFilter;

const DEFAULT: &str = "warn";

/// The directives to use and the variable they came from.
fn chosen(ase_log: Option<String>, rust_log: Option<String>) -> (String, &'static str) {
    let set = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    match (set(ase_log), set(rust_log)) {
        (Some(v), _) => (v, "ASE_LOG"),
        (None, Some(v)) => (v, "RUST_LOG"),
        (None, None) => (DEFAULT.to_string(), "the default"),
    }
}

/// The filter for this process, from its environment.
pub fn filter_from_env() -> EnvFilter {
    let (directives, from) = chosen(
        std::env::var("ASE_LOG").ok(),
        std::env::var("RUST_LOG").ok(),
    );
    match EnvFilter::try_new(&directives) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "ase: {from} {directives:?} is not a log filter ({e}); logging warnings only"
            );
            EnvFilter::new(DEFAULT)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ase_log_wins_then_rust_log_then_warnings() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(chosen(s("debug"), s("info")), ("debug".into(), "ASE_LOG"));
        assert_eq!(chosen(None, s("info")), ("info".into(), "RUST_LOG"));
        assert_eq!(chosen(s(" "), s("info")), ("info".into(), "RUST_LOG"));
        assert_eq!(chosen(None, None), ("warn".into(), "the default"));
    }
}
