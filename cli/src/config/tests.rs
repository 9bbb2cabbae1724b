//! Tests of [`super`]: kept beside it so that the module itself reads on one screen.

use super::*;
use std::collections::HashMap;

fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

const FULL: &str = r#"
output_dir = "out"

[coordinator]
listen = "127.0.0.1:7700"
data = "state"
metrics_listen = "127.0.0.1:9700"
heartbeat_ms = 500
lease_ttl_ms = 3000

[worker]
name = "w1"
generate_slots = 8
eval_slots = 3
scanner = "bare"
rules = "my-rules"
repo_url_template = "file:///srv/{repo}"
docker = "off"

[[runs]]
model_name = "gpt-x"
batch = "b1"
dataset = "tasks.json"
context = "ctx.json"
rounds = 2
[runs.model]
provider = "openai"
base_url = "http://127.0.0.1:9/v1"
model = "gpt-x"
api_key_env = "MY_KEY"
temperature = 0.2
[runs.limits]
max_inflight_model_calls = 2
requests_per_minute = 60
max_attempts = 5

[[runs]]
model_name = "ref"
dataset = "tasks.json"
model = { provider = "reference" }
"#;

fn write_full(dir: &Path) -> PathBuf {
    std::fs::write(dir.join("tasks.json"), "[]").unwrap();
    std::fs::write(dir.join("ctx.json"), "[]").unwrap();
    let p = dir.join("ase.toml");
    std::fs::write(&p, FULL).unwrap();
    p
}

#[test]
fn a_full_file_parses_with_paths_relative_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = load_file(&write_full(dir.path())).unwrap();
    assert_eq!(c.output_dir, Some(dir.path().join("out")));
    assert_eq!(c.coordinator.data, Some(dir.path().join("state")));
    assert_eq!(c.coordinator.listen.port(), 7700);
    assert_eq!(c.coordinator.lease_ttl_ms, 3000);
    assert_eq!(c.worker.name, "w1");
    assert_eq!(c.worker.generate_slots, 8);
    assert_eq!(c.worker.docker, DockerUse::Off);
    assert_eq!(c.worker.rules, Some(dir.path().join("my-rules")));
    assert_eq!(c.runs.len(), 2);
    let r = &c.runs[0];
    assert_eq!(r.run_id(), "gpt-x__b1");
    assert_eq!(r.dataset, dir.path().join("tasks.json"));
    assert_eq!(r.rounds, 2);
    assert_eq!(r.limits.requests_per_minute, 60);
    assert_eq!(r.limits.max_attempts, 5);
    c.validate("ase.toml").unwrap();
    let spec = r.run_spec("ase.toml").unwrap();
    match &spec.model {
        ModelSpec::Openai { config } => {
            assert_eq!(config.base_url, "http://127.0.0.1:9/v1");
            assert_eq!(config.temperature, Some(0.2));
            assert_eq!(config.api_key, ApiKeySource::None);
        }
        other => panic!("{other:?}"),
    }
    // The spec is what workers accept.
    let json = serde_json::to_vec(&spec).unwrap();
    let back: RunSpec = serde_json::from_slice(&json).unwrap();
    assert_eq!(back.run_name(), "gpt-x__b1");
    assert_eq!(c.runs[1].run_id(), "ref__default");
    assert_eq!(c.runs[1].rounds, 3);
    assert_eq!(c.runs[1].model, ModelSettings::Reference);
}

#[test]
fn an_empty_file_is_all_defaults() {
    let c = parse("", "empty.toml").unwrap();
    assert_eq!(c, AseConfig::default());
    assert_eq!(c.coordinator.listen, SocketAddr::from(([127, 0, 0, 1], 0)));
    assert_eq!(c.coordinator.heartbeat_ms, 2_000);
    assert_eq!(c.worker.generate_slots, 4);
    assert_eq!(c.worker.eval_slots, 2);
    assert_eq!(c.worker.scanner, ScannerKind::Bare);
    assert_eq!(c.worker.docker, DockerUse::Auto);
    assert!(c.runs.is_empty());
    c.validate("empty.toml").unwrap();
}

#[test]
fn the_data_folder_defaults_follow_xdg_then_home() {
    let c = AseConfig::default();
    let xdg = env_of(&[("XDG_DATA_HOME", "/x"), ("HOME", "/h")]);
    assert_eq!(c.data_dir(&xdg), PathBuf::from("/x/ase-cluster"));
    let home = env_of(&[("HOME", "/h")]);
    let data = c.data_dir(&home);
    assert_eq!(data, PathBuf::from("/h/.local/share/ase-cluster"));
    assert_eq!(c.tls_dir(&data), data.join("certs"));
    assert_eq!(c.cache_dir(&data), data.join("cache"));
    assert_eq!(c.output_dir(&data), data.join("results"));
    let mut c = AseConfig::default();
    c.apply_env(&env_of(&[("ASE_DATA_DIR", "/d")]), "t")
        .unwrap();
    assert_eq!(c.data_dir(&xdg), PathBuf::from("/d"));
}

#[test]
fn environment_variables_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = load_file(&write_full(dir.path())).unwrap();
    let env = env_of(&[
        ("ASE_DATA_DIR", "/env/data"),
        ("ASE_OUTPUT_DIR", "/env/out"),
        ("ASE_LISTEN", "127.0.0.1:7801"),
        ("ASE_GENERATE_SLOTS", "16"),
        ("ASE_EVAL_SLOTS", "5"),
        ("ASE_DOCKER", "on"),
        ("ASE_SCANNER", "container"),
        ("ASE_SAST_IMAGE", "ase-sast:abc"),
        ("ASE_REPO_URL_TEMPLATE", "file:///mirror/{repo}"),
        ("ASE_OSEMGREP", "/opt/osemgrep"),
    ]);
    c.apply_env(&env, "ase.toml").unwrap();
    assert_eq!(c.coordinator.data, Some(PathBuf::from("/env/data")));
    assert_eq!(c.output_dir, Some(PathBuf::from("/env/out")));
    assert_eq!(c.coordinator.listen.port(), 7801);
    assert_eq!(c.worker.generate_slots, 16);
    assert_eq!(c.worker.eval_slots, 5);
    assert_eq!(c.worker.docker, DockerUse::On);
    assert_eq!(c.worker.scanner, ScannerKind::Container);
    assert_eq!(c.worker.sast_image.as_deref(), Some("ase-sast:abc"));
    assert_eq!(
        c.worker.repo_url_template.as_deref(),
        Some("file:///mirror/{repo}")
    );
    assert_eq!(
        c.worker.osemgrep_or_default(&env),
        PathBuf::from("/opt/osemgrep")
    );
    c.validate("ase.toml").unwrap();
}

#[test]
fn a_bad_environment_value_names_the_variable() {
    let mut c = AseConfig::default();
    let err = c
        .apply_env(&env_of(&[("ASE_EVAL_SLOTS", "many")]), "ase.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("ASE_EVAL_SLOTS"), "{err}");
    assert!(err.contains("many"), "{err}");
    let err = c
        .apply_env(&env_of(&[("ASE_DOCKER", "maybe")]), "ase.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("ASE_DOCKER"), "{err}");
}

#[test]
fn an_unknown_key_is_named_with_the_file() {
    let err = parse("[coordinator]\nlisten_on = \"127.0.0.1:1\"\n", "my.toml")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("my.toml: "), "{err}");
    assert!(err.contains("listen_on"), "{err}");
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn a_wrong_type_is_named_with_the_key() {
    let err = parse("[worker]\ngenerate_slots = \"four\"\n", "my.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("my.toml"), "{err}");
    assert!(err.contains("generate_slots"), "{err}");
}

#[test]
fn a_run_without_a_model_is_refused() {
    let err = parse(
        "[[runs]]\nmodel_name = \"m\"\ndataset = \"d.json\"\n",
        "my.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("model"), "{err}");
}

#[test]
fn validation_names_the_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_full(dir.path());
    let base = load_file(&path).unwrap();
    type Change = Box<dyn Fn(&mut AseConfig)>;
    let cases: Vec<(Change, &str)> = vec![
        (
            Box::new(|c| c.coordinator.lease_ttl_ms = 100),
            "coordinator.lease_ttl_ms",
        ),
        (Box::new(|c| c.worker.eval_slots = 0), "worker.eval_slots"),
        (
            Box::new(|c| c.worker.name = "bad name".into()),
            "worker.name",
        ),
        (Box::new(|c| c.runs[0].rounds = 0), "runs[0].rounds"),
        (
            Box::new(|c| c.runs[1].dataset = PathBuf::from("/nonexistent/t.json")),
            "runs[1].dataset",
        ),
        (Box::new(|c| c.runs[1].batch = "b1".into()), ""),
        (
            Box::new(|c| c.runs[1].batch = "b".repeat(5_000)),
            "runs[1].batch",
        ),
        (
            Box::new(|c| c.runs[0].batch = "a/b".into()),
            "runs[0].batch",
        ),
        (
            Box::new(|c| c.runs[0].model_name = "m\u{202e}".into()),
            "runs[0].model_name",
        ),
        (
            Box::new(|c| {
                c.runs[0].model = ModelSettings::Openai {
                    base_url: "ftp://x".into(),
                    model: "m".into(),
                    api_key_env: None,
                    temperature: None,
                    top_p: None,
                    max_gen_token: None,
                    request_timeout_secs: None,
                }
            }),
            "runs[0].model.base_url",
        ),
        (
            Box::new(|c| c.worker.repo_url_template = Some("https://x/".into())),
            "worker.repo_url_template",
        ),
        (
            Box::new(|c| c.worker.scanner = ScannerKind::Container),
            "worker.sast_image",
        ),
    ];
    for (change, key) in cases {
        let mut c = base.clone();
        change(&mut c);
        if key.is_empty() {
            // Not an error: another batch of another model.
            c.validate("ase.toml").unwrap();
            continue;
        }
        let err = c.validate("ase.toml").unwrap_err().to_string();
        assert!(err.starts_with("ase.toml: key `"), "{err}");
        assert!(err.contains(&format!("`{key}`")), "{key}: {err}");
    }
    // Every problem is reported, each with its key, not only the first.
    let mut many = base.clone();
    many.coordinator.heartbeat_ms = 0;
    many.worker.eval_slots = 0;
    many.runs[0].rounds = 0;
    many.runs[1].batch = "a/b".into();
    let err = many.validate("ase.toml").unwrap_err();
    assert!(
        matches!(err, ConfigError::Several(ref p) if p.len() == 4),
        "{err}"
    );
    let text = err.to_string();
    for key in [
        "coordinator.heartbeat_ms",
        "worker.eval_slots",
        "runs[0].rounds",
        "runs[1].batch",
    ] {
        assert!(
            text.contains(&format!("ase.toml: key `{key}`")),
            "{key}: {text}"
        );
    }
    assert_eq!(text.lines().count(), 4, "{text}");
    let mut twice = base.clone();
    twice.runs.push(twice.runs[0].clone());
    let err = twice.validate("ase.toml").unwrap_err().to_string();
    assert!(err.contains("gpt-x__b1 is listed twice"), "{err}");
}

#[test]
fn the_effective_config_shows_where_the_key_is_never_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let c = load_file(&write_full(dir.path())).unwrap();
    let secret = "sk-do-not-print-123";
    let set = env_of(&[("MY_KEY", secret), ("HOME", "/h")]);
    let text = c.effective_toml(&set);
    assert!(!text.contains(secret), "{text}");
    assert!(text.contains("api_key = \"<set from MY_KEY>\""), "{text}");
    // Defaults are spelled out.
    assert!(text.contains("eval_slots = 3"), "{text}");
    assert!(text.contains("cache_dir = "), "{text}");
    assert!(text.contains("max_attempts = 5"), "{text}");
    let unset = env_of(&[("HOME", "/h")]);
    let text = c.effective_toml(&unset);
    assert!(
        text.contains("api_key = \"<unset: MY_KEY is empty>\""),
        "{text}"
    );
    // The printed form is itself a valid config.
    let back = parse(&text.replace("api_key = ", "# api_key = "), "printed").unwrap();
    assert_eq!(back.runs.len(), 2);
}

#[test]
fn the_fallback_key_variable_is_ase_api_key() {
    let run = RunSettings {
        model_name: "m".into(),
        batch: "b".into(),
        dataset: "d".into(),
        context: None,
        cut_repos: None,
        rounds: 1,
        count_scope: CountScopeSetting::WholeTree,
        max_context_token: 10,
        model: ModelSettings::Openai {
            base_url: "http://h/v1".into(),
            model: "m".into(),
            api_key_env: None,
            temperature: None,
            top_p: None,
            max_gen_token: None,
            request_timeout_secs: None,
        },
        limits: RunLimits::default(),
    };
    let env = env_of(&[("ASE_API_KEY", "k1")]);
    assert_eq!(run.api_key(&env).as_deref(), Some("k1"));
    assert_eq!(key_origin(None, &env), "<set from ASE_API_KEY>");
    assert_eq!(key_origin(None, &env_of(&[])), "<unset>");
    assert_eq!(run.api_key(&env_of(&[])), None);
}

#[test]
fn predictions_are_read_into_the_spec_and_bad_lines_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("preds.jsonl");
    std::fs::write(
        &p,
        "{\"instance_id\":\"t1\",\"answer\":\"x\"}\n\n{\"instance_id\":\"t2\",\"answer\":\"y\"}\n",
    )
    .unwrap();
    let mut run: RunSettings = toml::from_str(&format!(
            "model_name = \"p\"\ndataset = \"d\"\nmodel = {{ provider = \"predictions\", file = {:?} }}\n",
            p.display().to_string()
        ))
        .unwrap();
    match run.run_spec("c.toml").unwrap().model {
        ModelSpec::Predictions { entries } => assert_eq!(entries.len(), 2),
        other => panic!("{other:?}"),
    }
    std::fs::write(&p, "{\"instance_id\":\"t1\"}\nnot json\n").unwrap();
    let err = run.run_spec("c.toml").unwrap_err().to_string();
    assert!(err.contains("line 2"), "{err}");
    assert!(err.contains("runs[p__default].model.file"), "{err}");
    // The one reader of the format: what the worker would refuse is refused here, before
    // anything is sent (a unit answered twice, a line without an answer).
    std::fs::write(
        &p,
        "{\"instance_id\":\"t1\",\"answer\":\"a\"}\n{\"instance_id\":\"t1\",\"answer\":\"b\"}\n",
    )
    .unwrap();
    let err = run.run_spec("c.toml").unwrap_err().to_string();
    assert!(
        err.contains("line 2") && err.contains("already given on line 1"),
        "{err}"
    );
    run.model = ModelSettings::Original;
    assert_eq!(run.run_spec("c.toml").unwrap().model, ModelSpec::Original);
}

const AGENT: &str = r#"
[[runs]]
model_name = "mini"
dataset = "tasks.json"
[runs.model]
provider = "agent"
preset = "mini-swe-agent"
base_url = "http://127.0.0.1:9/v1"
model = "gpt-x"
api_key_env = "MY_KEY"
env = { EXTRA = "1" }
[runs.model.limits]
wall_secs = 60
max_turns = 7
"#;

#[test]
fn an_agent_run_parses_into_an_agent_spec_without_its_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tasks.json"), "[]").unwrap();
    let p = dir.path().join("ase.toml");
    std::fs::write(&p, AGENT).unwrap();
    let c = load_file(&p).unwrap();
    c.validate("ase.toml").unwrap();
    let r = &c.runs[0];
    assert_eq!(
        r.api_key(&env_of(&[("MY_KEY", "sk-1")])).as_deref(),
        Some("sk-1")
    );
    let spec = r.run_spec("ase.toml").unwrap();
    let ModelSpec::Agent { config } = &spec.model else {
        panic!("{:?}", spec.model);
    };
    assert_eq!(config.preset, Some(AgentPreset::MiniSweAgent));
    assert_eq!(config.limits.wall_secs, 60);
    assert_eq!(config.limits.max_turns, 7);
    assert_eq!(config.upstream.api_key, ApiKeySource::None);
    assert_eq!(config.env["EXTRA"], "1");
    let json = serde_json::to_string(&spec).unwrap();
    assert!(!json.contains("sk-1"));
    let back: RunSpec = serde_json::from_str(&json).unwrap();
    assert_eq!(back, spec);
    // The effective config says where the key comes from, never the key.
    let shown = c.effective_toml(&env_of(&[("MY_KEY", "sk-1")]));
    assert!(
        shown.contains("<set from MY_KEY>") && !shown.contains("sk-1"),
        "{shown}"
    );

    // Gemini CLI's API is not served by the proxy; copying the key into the container is refused.
    for (from, to) in [
        ("preset = \"mini-swe-agent\"", "preset = \"gemini-cli\""),
        ("env = { EXTRA = \"1\" }", "env_from = { K = \"MY_KEY\" }"),
    ] {
        std::fs::write(&p, AGENT.replace(from, to)).unwrap();
        let err = load_file(&p)
            .unwrap()
            .validate("ase.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("runs[0].model"), "{err}");
    }
}

#[test]
fn placement_by_image_and_prefetching_are_on_unless_turned_off() {
    let c = parse("", "ase.toml").unwrap();
    assert!(c.coordinator.image_affinity && c.worker.prefetch_images);
    let c = parse(
        "[coordinator]\nimage_affinity = false\n[worker]\nprefetch_images = false\n",
        "ase.toml",
    )
    .unwrap();
    assert!(!c.coordinator.image_affinity && !c.worker.prefetch_images);
}
