//! Workers that join with a token instead of a certificate made for them (issue 17), between
//! real processes over gRPC with TLS: a coordinator started with `--join-ca-key`, tokens made
//! with `ase token create`, workers started with `ase worker --join-file --ca`.
//!
//! Needs `cargo build -p ase` first (or ASE_BIN), and osemgrep (skipped outside CI without it).

use ase_cluster_tests::client::{ase_client, ase_client_output, worker_status};
use ase_cluster_tests::join::{
    create_token, joined_name, spawn_joining_worker, token_file, token_id,
};
use ase_cluster_tests::{LocalCluster, ModelBehaviour};
use ase_proto::identity::{PeerIdentity, PeerRole};
use ase_proto::join::{join_endpoint, make_csr};
use ase_proto::v1::{JoinRequest, RegisterRequest};
use ase_proto::{JoinApiClient, WorkerApiClient};
use std::time::Duration;

/// Two workers joining with one token get different names and, with a static worker beside
/// them, run a campaign to the end: every unit once, one model call each.
#[test]
fn workers_joining_with_one_token_get_unique_names_and_complete_a_run() {
    let behaviour = ModelBehaviour {
        delay: Duration::from_millis(200),
    };
    let Some(cluster) = LocalCluster::start_admitting_joins(&["w1"], 4, 2, behaviour, "24h") else {
        return;
    };
    let token = create_token(&cluster.access, "1h");
    let file = token_file(&cluster.tmp.path().join("secrets"), &token);
    let mut joined = Vec::new();
    for i in 0..2 {
        let opts = cluster.worker_options(&format!("j{i}"), 1, 1);
        joined.push(spawn_joining_worker(
            &cluster.access,
            &cluster.tmp.path().join(format!("cache-j{i}")),
            &opts,
            &file,
            false,
            cluster.log_path(&format!("worker-j{i}")),
        ));
    }
    let names: Vec<String> = joined
        .iter_mut()
        .map(|w| joined_name(w, Duration::from_secs(60)))
        .collect();
    assert_ne!(names[0], names[1], "one token, two joins, two names");
    // Registration is bound to the certificate's name: registering under it proves the
    // granted certificate is `worker:NAME`.
    for (w, name) in joined.iter_mut().zip(&names) {
        w.wait_for_count(
            &format!("registered as {name} session"),
            1,
            Duration::from_secs(30),
        );
    }
    // A static worker with its own certificate works beside them.
    let _static_worker = cluster.start_worker(&cluster.worker_options("w1", 1, 1));

    let mut submit = cluster.submit_watch();
    cluster.wait_run_completed(&mut submit, Duration::from_secs(300));
    cluster.assert_report_has_every_unit_once();
    cluster.assert_model_calls(0);

    let status = ase_client(&cluster.access, "status", &[]);
    let completed: u64 = names
        .iter()
        .map(|n| {
            worker_status(&status, n)
                .unwrap_or_else(|| panic!("{n} in ase status:\n{status}"))
                .2
        })
        .sum();
    assert!(
        completed > 0,
        "the joined workers completed units:\n{status}"
    );
    let listed = ase_client(&cluster.access, "token", &["list"]);
    let line = listed
        .lines()
        .find(|l| l.starts_with(&token_id(&token)))
        .unwrap_or_else(|| panic!("token in ase token list:\n{listed}"));
    assert!(
        line.split_whitespace().collect::<Vec<_>>()[3] == "2" && line.ends_with("valid"),
        "two joins, still valid: {line}"
    );
    eprintln!("joined as {names:?}; units completed by them: {completed}");
}

/// An expired and a revoked token are refused, and the worker says why; a name asked for is
/// granted once; the certificate a join returns is `worker:NAME` of the granted name; and a
/// peer without a certificate reaches nothing but the join.
#[test]
fn expired_and_revoked_tokens_are_refused_and_a_join_grants_a_worker_certificate() {
    let Some(cluster) =
        LocalCluster::start_admitting_joins(&["w1"], 1, 1, ModelBehaviour::default(), "1h")
    else {
        return;
    };
    let secrets = cluster.tmp.path().join("secrets");
    let opts = cluster.worker_options("asked", 1, 1);
    let refused = |file: &std::path::Path, stem: &str| {
        let mut w = spawn_joining_worker(
            &cluster.access,
            &cluster.tmp.path().join(format!("cache-{stem}")),
            &opts,
            file,
            false,
            cluster.log_path(stem),
        );
        let status = w
            .wait_exit(Duration::from_secs(60))
            .unwrap_or_else(|| panic!("{stem}: the refused worker exits; log:\n{}", w.log_text()));
        assert!(!status.success(), "{stem}: {status}");
        w.log_text()
    };

    let expired = create_token(&cluster.access, "1s");
    std::thread::sleep(Duration::from_millis(2_500));
    let log = refused(&token_file(&secrets, &expired), "expired");
    assert!(
        log.contains("refused by the coordinator")
            && log.contains(&format!("the join token {} expired", token_id(&expired))),
        "the worker says the token expired:\n{log}"
    );

    let revoked = create_token(&cluster.access, "1h");
    ase_client(&cluster.access, "token", &["revoke", &token_id(&revoked)]);
    let log = refused(&token_file(&secrets, &revoked), "revoked");
    assert!(
        log.contains(&format!(
            "the join token {} was revoked",
            token_id(&revoked)
        )),
        "the worker says the token was revoked:\n{log}"
    );
    let unknown = ase_client_output(&cluster.access, "token", &["revoke", "0123456789abcdef"]);
    assert!(!unknown.status.success());

    // A name asked for is granted, then never again.
    let good = create_token(&cluster.access, "1h");
    let file = token_file(&secrets, &good);
    let mut asked = spawn_joining_worker(
        &cluster.access,
        &cluster.tmp.path().join("cache-asked"),
        &opts,
        &file,
        true,
        cluster.log_path("asked"),
    );
    assert_eq!(joined_name(&mut asked, Duration::from_secs(60)), "asked");
    asked.wait_for_count("registered as asked session", 1, Duration::from_secs(30));
    let mut again = spawn_joining_worker(
        &cluster.access,
        &cluster.tmp.path().join("cache-asked-2"),
        &opts,
        &file,
        true,
        cluster.log_path("asked-2"),
    );
    let status = again.wait_exit(Duration::from_secs(60)).expect("exits");
    let log = again.log_text();
    assert!(
        !status.success() && log.contains("already granted"),
        "{log}"
    );

    // In process: the certificate of a join names the granted worker, and only a worker.
    let ca_pem = std::fs::read(cluster.access.tls_dir.join("ca.pem")).unwrap();
    ase_proto::tls::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let endpoint = join_endpoint(&cluster.access.url, &ca_pem, Some("localhost")).unwrap();
        let channel = endpoint
            .connect()
            .await
            .expect("TLS without a client certificate");
        let (key, csr_pem) = make_csr().unwrap();
        let granted = JoinApiClient::new(channel.clone())
            .join(JoinRequest {
                token: good.clone(),
                name: String::new(),
                csr_pem,
                name_prefix: "in-process".into(),
            })
            .await
            .expect("join")
            .into_inner();
        let der = ase_proto::tls::TlsMaterial::from_pem(
            ca_pem.clone(),
            granted.cert_pem.clone(),
            key.clone(),
        )
        .unwrap()
        .certificate_der()
        .clone();
        let identity = PeerIdentity::from_der(&der).unwrap();
        assert_eq!(identity.role, PeerRole::Worker);
        assert_eq!(identity.name, granted.name);
        assert!(granted.name.starts_with("in-process-"), "{}", granted.name);
        // The anonymous connection reaches nothing else: WorkerApi wants a certificate.
        let refused = WorkerApiClient::new(channel)
            .register(RegisterRequest {
                worker_name: "w1".into(),
                ..Default::default()
            })
            .await
            .expect_err("registration without a certificate");
        assert_eq!(
            refused.code(),
            ase_proto::tonic::Code::Unauthenticated,
            "{refused:?}"
        );
        // Admitting peers without a certificate admits no certificate of another CA: a
        // foreign worker certificate is refused in the handshake (or its call fails).
        let foreign_ca = ase_proto::certs::ClusterCa::generate("foreign", 30).unwrap();
        let foreign = foreign_ca.issue_worker("w1").unwrap();
        let material = ase_proto::tls::TlsMaterial::from_pem(
            ca_pem.clone(),
            foreign.cert_pem.clone(),
            foreign.key_pem.clone(),
        )
        .unwrap();
        let security = ase_proto::endpoint::TransportSecurity::MutualTls(material);
        let refused =
            match ase_proto::endpoint::connect(&cluster.access.url, &security, Some("localhost"))
                .await
            {
                Err(_) => true,
                Ok(channel) => WorkerApiClient::new(channel)
                    .register(RegisterRequest {
                        worker_name: "w1".into(),
                        ..Default::default()
                    })
                    .await
                    .is_err(),
            };
        assert!(refused, "a certificate of another CA got through");
    });
    let coordinator_log = cluster.coordinator.log_text();
    assert!(
        coordinator_log.contains("join refused"),
        "{coordinator_log}"
    );
    asked.terminate(Duration::from_secs(10));
}

/// A joined worker's certificate lives 30 s; the worker renews it (by its current certificate)
/// before it expires, twice, and stays registered under its name.
#[test]
fn a_joined_worker_renews_its_certificate_before_it_expires() {
    let Some(cluster) =
        LocalCluster::start_admitting_joins(&["w1"], 1, 1, ModelBehaviour::default(), "30s")
    else {
        return;
    };
    let token = create_token(&cluster.access, "1h");
    let file = token_file(&cluster.tmp.path().join("secrets"), &token);
    let opts = cluster.worker_options("renewing", 1, 1);
    let mut worker = spawn_joining_worker(
        &cluster.access,
        &cluster.tmp.path().join("cache-renewing"),
        &opts,
        &file,
        false,
        cluster.log_path("renewing"),
    );
    let name = joined_name(&mut worker, Duration::from_secs(60));
    // Two renewals come after about 20 s and 20 s more (plus the agent's restarts): the
    // first certificate has expired by then.
    worker.wait_for_count(
        &format!("renewed the certificate of {name}"),
        2,
        Duration::from_secs(150),
    );
    worker.wait_for_count(
        &format!("registered as {name} session"),
        3,
        Duration::from_secs(30),
    );
    let status = ase_client(&cluster.access, "status", &[]);
    let (alive, _, _) =
        worker_status(&status, &name).unwrap_or_else(|| panic!("{name} in ase status:\n{status}"));
    assert!(alive, "the renewed worker is alive:\n{status}");
    let coordinator_log = cluster.coordinator.log_text();
    assert!(
        coordinator_log
            .matches("worker certificate renewed")
            .count()
            >= 2,
        "{coordinator_log}"
    );
    worker.terminate(Duration::from_secs(10));
}
