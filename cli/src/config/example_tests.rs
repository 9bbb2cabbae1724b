//! The shipped example config (`examples/ase.toml`) loads and validates.

use super::*;

const EXAMPLE: &str = include_str!("../../../examples/ase.toml");

#[test]
fn the_example_file_parses() {
    let c = parse(EXAMPLE, "examples/ase.toml").unwrap();
    assert_eq!(c.runs.len(), 2);
    assert_eq!(c.runs[0].run_id(), "gpt-4o-mini__v1-full");
    assert!(matches!(c.runs[1].model, ModelSettings::Predictions { .. }));
}

/// Every key of every table appears in the example (set or commented out), so the example
/// documents them all.
#[test]
fn the_example_file_mentions_every_key() {
    let mut c = parse(EXAMPLE, "examples/ase.toml").unwrap();
    // Fill every optional key so that it serialises.
    c.output_dir = Some("o".into());
    c.coordinator.data = Some("d".into());
    c.coordinator.tls_dir = Some("t".into());
    c.coordinator.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 1)));
    c.worker.cache_dir = Some("c".into());
    c.worker.cache_max_bytes = Some(1);
    c.worker.osemgrep = Some("o".into());
    c.worker.rules = Some("r".into());
    c.worker.sast_image = Some("i".into());
    c.worker.repo_url_template = Some("{repo}".into());
    c.runs[0].model = ModelSettings::Openai {
        base_url: "u".into(),
        model: "m".into(),
        api_key_env: Some("K".into()),
        temperature: Some(0.0),
        top_p: Some(1.0),
        max_gen_token: Some(1),
        request_timeout_secs: Some(1.0),
    };
    let doc = toml::Table::try_from(&c).unwrap();
    let mut keys = Vec::new();
    fn walk(t: &toml::Table, keys: &mut Vec<String>) {
        for (k, v) in t {
            keys.push(k.clone());
            match v {
                toml::Value::Table(t) => walk(t, keys),
                toml::Value::Array(a) => a
                    .iter()
                    .filter_map(|v| v.as_table())
                    .for_each(|t| walk(t, keys)),
                _ => {}
            }
        }
    }
    walk(&doc, &mut keys);
    assert!(keys.len() > 40, "{keys:?}");
    for k in keys {
        let documented = EXAMPLE.lines().any(|l| {
            let l = l.trim_start_matches(['#', ' ']);
            l.starts_with(&format!("{k} ="))
                || l.starts_with(&format!("[{k}"))
                || l.starts_with(&format!("[[{k}"))
                || l.starts_with(&format!("[runs.{k}"))
                || l.contains(&format!("{k} = "))
        });
        assert!(documented, "key `{k}` is not in examples/ase.toml");
    }
}
