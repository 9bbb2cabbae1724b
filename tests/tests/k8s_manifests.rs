//! The Kubernetes manifests of deploy/k8s/, checked without a cluster (none is available
//! here; deploy/README.md says they were never applied to one): every document parses, the
//! kustomization lists them, and their parts refer to each other: selectors and pod labels,
//! volume mounts and volumes, Secrets, Services and the ports and names the containers dial,
//! the image, and the `ase` arguments, checked against the binary's own `--help`; the
//! workers join with the token of the `ase-join` Secret (issue 17), as deploy/stack.yaml's do.

use serde::Deserialize;
use serde_yaml::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn k8s_dir() -> PathBuf {
    ase_cluster_tests::repo_root().join("deploy/k8s")
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            Value::deserialize(d).unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    get(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path:?} is not a string in {v:?}"))
}

fn get<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    let mut cur = v;
    for key in path {
        cur = cur
            .get(*key)
            .unwrap_or_else(|| panic!("{path:?}: no `{key}` in {cur:?}"));
    }
    cur
}

fn seq<'a>(v: &'a Value, path: &[&str]) -> &'a Vec<Value> {
    get(v, path)
        .as_sequence()
        .unwrap_or_else(|| panic!("{path:?} is not a list"))
}

fn opt_seq<'a>(v: &'a Value, key: &str) -> Vec<&'a Value> {
    v.get(key)
        .and_then(Value::as_sequence)
        .map(|s| s.iter().collect())
        .unwrap_or_default()
}

/// Every resource of the kustomization, with its file.
fn resources() -> (Value, Vec<(String, Value)>) {
    let kustomization = documents(&k8s_dir().join("kustomization.yaml")).remove(0);
    let mut out = Vec::new();
    for file in seq(&kustomization, &["resources"]) {
        let file = file.as_str().expect("a resource is a file name");
        for doc in documents(&k8s_dir().join(file)) {
            out.push((file.to_string(), doc));
        }
    }
    (kustomization, out)
}

/// The flags `ase SUBCOMMAND --help` lists.
fn ase_flags(subcommand: &str) -> BTreeSet<String> {
    let o = std::process::Command::new(ase_cluster_tests::ase_bin())
        .args([subcommand, "--help"])
        .output()
        .expect("run ase");
    assert!(o.status.success(), "ase {subcommand} --help");
    String::from_utf8_lossy(&o.stdout)
        .split(|c: char| c.is_whitespace() || c == ',' || c == '=')
        .filter(|w| w.starts_with("--"))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_manifests_parse_and_every_reference_resolves() {
    let (kustomization, docs) = resources();
    let namespace = s(&kustomization, &["namespace"]);
    let kinds: Vec<String> = docs
        .iter()
        .map(|(_, d)| s(d, &["kind"]).to_string())
        .collect();
    for kind in ["Namespace", "Service", "StatefulSet", "Deployment"] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
    for (file, d) in &docs {
        assert!(d.get("apiVersion").is_some(), "{file}: apiVersion");
        let ns = d
            .get("metadata")
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str);
        let kind = s(d, &["kind"]);
        if kind == "Namespace" {
            assert_eq!(s(d, &["metadata", "name"]), namespace, "{file}");
        } else {
            assert_eq!(
                ns,
                Some(namespace),
                "{file}: {kind} in namespace {namespace}"
            );
        }
    }

    let services: Vec<&Value> = docs
        .iter()
        .map(|(_, d)| d)
        .filter(|d| s(d, &["kind"]) == "Service")
        .collect();
    let workloads: Vec<&Value> = docs
        .iter()
        .map(|(_, d)| d)
        .filter(|d| matches!(s(d, &["kind"]), "StatefulSet" | "Deployment"))
        .collect();
    assert_eq!(workloads.len(), 2, "the coordinator and the workers");
    // The workers scale as one Deployment (they join, no identity per pod); the coordinator
    // is a StatefulSet of one (its store).
    for (name, kind) in [("worker", "Deployment"), ("coordinator", "StatefulSet")] {
        assert!(
            workloads
                .iter()
                .any(|w| s(w, &["metadata", "name"]) == name && s(w, &["kind"]) == kind),
            "the {name} is a {kind}"
        );
    }
    let image_name = s(&seq(&kustomization, &["images"])[0], &["name"]).to_string();
    let secrets = ["ase-certs", "ase-join", "ase-api-key"];

    for w in &workloads {
        let name = s(w, &["metadata", "name"]);
        let pod_labels = get(w, &["spec", "template", "metadata", "labels"]);
        // The selector picks the template's pods.
        for (k, v) in get(w, &["spec", "selector", "matchLabels"])
            .as_mapping()
            .unwrap()
        {
            assert_eq!(pod_labels.get(k), Some(v), "{name}: selector label {k:?}");
        }
        if s(w, &["kind"]) == "StatefulSet" {
            let svc = s(w, &["spec", "serviceName"]);
            assert!(
                services.iter().any(|x| s(x, &["metadata", "name"]) == svc),
                "{name}: serviceName {svc} is no Service"
            );
        }
        let pod = get(w, &["spec", "template", "spec"]);
        let mut volumes: BTreeSet<String> = opt_seq(pod, "volumes")
            .iter()
            .map(|v| s(v, &["name"]).to_string())
            .collect();
        for v in opt_seq(pod, "volumes") {
            if let Some(secret) = v.get("secret") {
                let secret = s(secret, &["secretName"]);
                assert!(secrets.contains(&secret), "{name}: unknown Secret {secret}");
            }
        }
        for t in opt_seq(get(w, &["spec"]), "volumeClaimTemplates") {
            volumes.insert(s(t, &["metadata", "name"]).to_string());
        }
        let mut mounted = BTreeSet::new();
        for c in seq(pod, &["containers"]) {
            let cname = s(c, &["name"]);
            for m in opt_seq(c, "volumeMounts") {
                let v = s(m, &["name"]);
                assert!(
                    volumes.contains(v),
                    "{name}/{cname}: mount of unknown volume {v}"
                );
                mounted.insert(v.to_string());
            }
            for e in opt_seq(c, "env") {
                if let Some(r) = e.get("valueFrom").and_then(|f| f.get("secretKeyRef")) {
                    let secret = s(r, &["name"]);
                    assert!(secrets.contains(&secret), "{name}/{cname}: Secret {secret}");
                }
            }
            let image = s(c, &["image"]);
            if cname != "dind" {
                assert_eq!(
                    image.split(':').next(),
                    Some(image_name.as_str()),
                    "{name}/{cname}: the node image the kustomization sets"
                );
                check_ase_container(name, pod, c, &services);
            }
        }
        assert_eq!(mounted, volumes, "{name}: every volume is mounted");
    }

    for svc in &services {
        let name = s(svc, &["metadata", "name"]);
        let selector = get(svc, &["spec", "selector"]);
        let target = workloads
            .iter()
            .find(|w| {
                let labels = get(w, &["spec", "template", "metadata", "labels"]);
                selector
                    .as_mapping()
                    .unwrap()
                    .iter()
                    .all(|(k, v)| labels.get(k) == Some(v))
            })
            .unwrap_or_else(|| panic!("Service {name} selects no pods"));
        let container_ports: BTreeSet<String> =
            seq(target, &["spec", "template", "spec", "containers"])
                .iter()
                .flat_map(|c| opt_seq(c, "ports"))
                .map(|p| s(p, &["name"]).to_string())
                .collect();
        for p in opt_seq(get(svc, &["spec"]), "ports") {
            let t = s(p, &["targetPort"]);
            assert!(
                container_ports.contains(t),
                "Service {name}: targetPort {t}"
            );
        }
    }
}

/// An `ase` container: its subcommand and flags exist, what it dials is a Service it may
/// reach, its TLS directory is the certificates' mount, and `$(VAR)`s are defined.
fn check_ase_container(workload: &str, pod: &Value, c: &Value, services: &[&Value]) {
    let args: Vec<&str> = seq(c, &["args"])
        .iter()
        .map(|a| a.as_str().expect("args are strings"))
        .collect();
    let sub = args[0];
    let flags = ase_flags(sub);
    for a in &args[1..] {
        if a.starts_with("--") {
            assert!(flags.contains(*a), "{workload}: `ase {sub}` has no {a}");
        }
    }
    let value_of = |flag: &str| {
        args.iter()
            .position(|a| *a == flag)
            .map(|i| args[i + 1])
            .unwrap_or_else(|| panic!("{workload}: no {flag}"))
    };
    // The directory a flag's file is in is the mount of a Secret volume of the pod.
    let mount_of = |flag: &str| {
        let path = value_of(flag);
        let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or(path);
        let mount = opt_seq(c, "volumeMounts")
            .into_iter()
            .find(|m| s(m, &["mountPath"]) == dir)
            .unwrap_or_else(|| panic!("{workload}: {flag} {path} is on no mount"));
        s(mount, &["name"]).to_string()
    };
    let secret_of = |volume: &str| {
        opt_seq(pod, "volumes")
            .into_iter()
            .find(|v| s(v, &["name"]) == volume)
            .and_then(|v| v.get("secret"))
            .map(|sec| s(sec, &["secretName"]).to_string())
            .unwrap_or_else(|| panic!("{workload}: volume {volume} is no Secret"))
    };
    let env: BTreeSet<&str> = opt_seq(c, "env").iter().map(|e| s(e, &["name"])).collect();
    for a in &args {
        if let Some(var) = a.strip_prefix("$(").and_then(|r| r.strip_suffix(')')) {
            assert!(env.contains(var), "{workload}: $({var}) is not in env");
        }
    }
    if sub == "worker" {
        let url = value_of("--coordinator");
        let hostport = url
            .strip_prefix("https://")
            .unwrap_or_else(|| panic!("{workload}: {url} is not https"));
        let (host, port) = hostport.split_once(':').expect("host:port");
        let svc = services
            .iter()
            .find(|x| s(x, &["metadata", "name"]) == host)
            .unwrap_or_else(|| panic!("{workload}: {host} is no Service"));
        assert!(
            opt_seq(get(svc, &["spec"]), "ports")
                .iter()
                .any(|p| p.get("port").and_then(Value::as_u64) == port.parse().ok()),
            "{workload}: Service {host} has no port {port}"
        );
        let cache = value_of("--cache");
        assert!(
            opt_seq(c, "volumeMounts")
                .iter()
                .any(|m| s(m, &["mountPath"]) == cache),
            "{workload}: --cache {cache} is not on a volume"
        );
        // The join flow: no certificate per worker, the token and the CA from `ase-join`.
        assert!(
            !args.contains(&"--tls-dir") && !args.contains(&"--name"),
            "{workload}: a joining worker has no certificate or name of its own"
        );
        assert_eq!(
            secret_of(&mount_of("--join-file")),
            "ase-join",
            "{workload}"
        );
        assert_eq!(secret_of(&mount_of("--ca")), "ase-join", "{workload}");
        assert_eq!(
            secret_of(&mount_of("--api-key-file")),
            "ase-api-key",
            "{workload}"
        );
        // Ready once registered: the probe tests the file the worker writes then.
        let probe: Vec<&str> = seq(c, &["readinessProbe", "exec", "command"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            probe.contains(&value_of("--ready-file")),
            "{workload}: the readiness probe {probe:?} tests --ready-file"
        );
    } else {
        let tls = value_of("--tls-dir");
        let certs_mount = opt_seq(c, "volumeMounts")
            .into_iter()
            .find(|m| s(m, &["name"]) == "certs")
            .unwrap_or_else(|| panic!("{workload}: certificates not mounted"));
        assert_eq!(s(certs_mount, &["mountPath"]), tls, "{workload}: --tls-dir");
        assert_eq!(secret_of("certs"), "ase-certs", "{workload}");
        // It signs joined workers' certificates and knows the workers' token.
        assert_eq!(
            secret_of(&mount_of("--join-ca-key")),
            "ase-certs",
            "{workload}"
        );
        assert_eq!(
            secret_of(&mount_of("--join-token-file")),
            "ase-join",
            "{workload}"
        );
        let listen = value_of("--listen");
        let port = listen.rsplit(':').next().unwrap();
        assert!(
            opt_seq(c, "ports")
                .iter()
                .any(|p| p.get("containerPort").and_then(Value::as_u64) == port.parse().ok()),
            "{workload}: --listen {listen} is not a container port"
        );
        let data = value_of("--data");
        assert!(
            opt_seq(c, "volumeMounts")
                .iter()
                .any(|m| s(m, &["mountPath"]) == data),
            "{workload}: --data {data} is not on a volume"
        );
    }
}
