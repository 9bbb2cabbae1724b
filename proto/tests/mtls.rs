//! Mutual TLS over real loopback connections: a tonic server with the generated `WorkerApi` and
//! `ClientApi` (trivial implementations that record who called) behind `RequireRole`.

use ase_proto::certs::{ClusterCa, IssuedCert, DEFAULT_VALIDITY_DAYS};
use ase_proto::endpoint::{
    client_endpoint, connect, server_builder, EndpointError, TransportSecurity,
};
use ase_proto::identity::{PeerIdentity, PeerRole, RequireRole};
use ase_proto::tls::{install_crypto_provider, TlsMaterial};
use ase_proto::v1::{
    Ack, CompleteRequest, DrainWorkerRequest, FailRequest, FetchReportResponse, HeartbeatRequest,
    HeartbeatResponse, LeaseRequest, LeaseResponse, ListRunsRequest, ListRunsResponse,
    ListWorkersRequest, ListWorkersResponse, ModelCallRequest, ModelCallResponse, ProgressReport,
    RegisterRequest, RegisterResponse, RunProgress, RunRef, RunSpecBlob, RunSpecRef, SubmitRunPart,
    SubmitRunResponse, WatchRunRequest,
};
use ase_proto::{
    ClientApi, ClientApiClient, ClientApiServer, WorkerApi, WorkerApiClient, WorkerApiServer,
};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Response, Status};

/// Identities the services saw, in call order (`None`: no identity in the extensions).
type Seen = Arc<Mutex<Vec<Option<PeerIdentity>>>>;

fn record<T>(seen: &Seen, req: &Request<T>) -> Option<PeerIdentity> {
    let identity = req.extensions().get::<PeerIdentity>().cloned();
    seen.lock().unwrap().push(identity.clone());
    identity
}

struct TestWorkerApi {
    seen: Seen,
}

#[tonic::async_trait]
impl WorkerApi for TestWorkerApi {
    async fn register(
        &self,
        req: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let identity = record(&self.seen, &req);
        if let Some(identity) = &identity {
            identity.check_worker_name(&req.get_ref().worker_name)?;
        }
        Ok(Response::new(RegisterResponse {
            worker_id: req.get_ref().worker_name.clone(),
            session: 1,
            heartbeat_interval_ms: 1000,
            lease_ttl_ms: 10_000,
        }))
    }
    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        record(&self.seen, &req);
        Ok(Response::new(HeartbeatResponse::default()))
    }
    async fn lease_work(
        &self,
        req: Request<LeaseRequest>,
    ) -> Result<Response<LeaseResponse>, Status> {
        record(&self.seen, &req);
        Ok(Response::new(LeaseResponse::default()))
    }
    async fn report_progress(&self, req: Request<ProgressReport>) -> Result<Response<Ack>, Status> {
        record(&self.seen, &req);
        Ok(Response::new(Ack::default()))
    }
    async fn complete_unit(&self, req: Request<CompleteRequest>) -> Result<Response<Ack>, Status> {
        record(&self.seen, &req);
        Ok(Response::new(Ack::default()))
    }
    async fn fail_unit(&self, req: Request<FailRequest>) -> Result<Response<Ack>, Status> {
        record(&self.seen, &req);
        Ok(Response::new(Ack::default()))
    }
    async fn fetch_run_spec(
        &self,
        req: Request<RunSpecRef>,
    ) -> Result<Response<RunSpecBlob>, Status> {
        record(&self.seen, &req);
        Ok(Response::new(RunSpecBlob::default()))
    }
    async fn acquire_model_call(
        &self,
        req: Request<ModelCallRequest>,
    ) -> Result<Response<ModelCallResponse>, Status> {
        record(&self.seen, &req);
        Ok(Response::new(ModelCallResponse::default()))
    }
}

struct TestClientApi {
    seen: Seen,
}

#[tonic::async_trait]
impl ClientApi for TestClientApi {
    type WatchRunStream = tonic::codegen::BoxStream<RunProgress>;

    async fn submit_run(
        &self,
        req: Request<tonic::Streaming<SubmitRunPart>>,
    ) -> Result<Response<SubmitRunResponse>, Status> {
        record(&self.seen, &req);
        Ok(Response::new(SubmitRunResponse::default()))
    }
    async fn watch_run(
        &self,
        req: Request<WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        record(&self.seen, &req);
        let progress = RunProgress {
            run_id: req.get_ref().run_id.clone(),
            ..Default::default()
        };
        Ok(Response::new(Box::pin(tonic::codegen::tokio_stream::once(
            Ok(progress),
        ))))
    }
    async fn cancel_run(&self, req: Request<RunRef>) -> Result<Response<Ack>, Status> {
        record(&self.seen, &req);
        Ok(Response::new(Ack::default()))
    }
    async fn list_runs(
        &self,
        req: Request<ListRunsRequest>,
    ) -> Result<Response<ListRunsResponse>, Status> {
        record(&self.seen, &req);
        Ok(Response::new(ListRunsResponse::default()))
    }
    async fn list_workers(
        &self,
        req: Request<ListWorkersRequest>,
    ) -> Result<Response<ListWorkersResponse>, Status> {
        record(&self.seen, &req);
        Ok(Response::new(ListWorkersResponse::default()))
    }
    async fn drain_worker(
        &self,
        req: Request<DrainWorkerRequest>,
    ) -> Result<Response<Ack>, Status> {
        record(&self.seen, &req);
        Ok(Response::new(Ack::default()))
    }
    async fn fetch_report(
        &self,
        req: Request<RunRef>,
    ) -> Result<Response<FetchReportResponse>, Status> {
        record(&self.seen, &req);
        Ok(Response::new(FetchReportResponse::default()))
    }
}

struct TestServer {
    addr: SocketAddr,
    seen: Seen,
    _shutdown: oneshot::Sender<()>,
}

impl TestServer {
    fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn start_server(security: TransportSecurity) -> TestServer {
    install_crypto_provider();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let plaintext = security.is_plaintext();
    let seen: Seen = Arc::default();
    let (_, health) = tonic_health::server::health_reporter();
    let router = server_builder(addr, &security)
        .unwrap()
        .add_service(health)
        .add_service(WorkerApiServer::with_interceptor(
            TestWorkerApi { seen: seen.clone() },
            RequireRole::new(PeerRole::Worker, plaintext),
        ))
        .add_service(ClientApiServer::with_interceptor(
            TestClientApi { seen: seen.clone() },
            RequireRole::new(PeerRole::Client, plaintext),
        ));
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        router
            .serve_with_incoming_shutdown(incoming, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    TestServer {
        addr,
        seen,
        _shutdown: tx,
    }
}

struct Cluster {
    ca: ClusterCa,
    coordinator: IssuedCert,
}

impl Cluster {
    fn new() -> Self {
        let ca = ClusterCa::generate("test", DEFAULT_VALIDITY_DAYS).unwrap();
        let coordinator = ca.issue_coordinator(&["coord.test".into()]).unwrap();
        Cluster { ca, coordinator }
    }
    fn material(&self, cert: &IssuedCert) -> TransportSecurity {
        TransportSecurity::MutualTls(
            TlsMaterial::from_pem(
                self.ca.cert_pem(),
                cert.cert_pem.as_bytes(),
                cert.key_pem.as_bytes(),
            )
            .unwrap(),
        )
    }
    async fn server(&self) -> TestServer {
        start_server(self.material(&self.coordinator)).await
    }
}

fn register(name: &str) -> RegisterRequest {
    RegisterRequest {
        worker_name: name.into(),
        held: Vec::new(),
        capabilities: None,
    }
}

#[tokio::test]
async fn worker_certificate_is_accepted_and_its_identity_seen() {
    let cluster = Cluster::new();
    let server = cluster.server().await;
    let worker = cluster.material(&cluster.ca.issue_worker("w1").unwrap());
    let uri = format!("https://127.0.0.1:{}", server.addr.port());
    let channel = connect(&uri, &worker, None).await.unwrap();
    let reply = WorkerApiClient::new(channel.clone())
        .register(register("w1"))
        .await
        .unwrap();
    assert_eq!(reply.get_ref().worker_id, "w1");
    let seen = server.seen.lock().unwrap().clone();
    let identity = seen[0].clone().expect("identity in the extensions");
    assert_eq!(identity.role, PeerRole::Worker);
    assert_eq!(identity.name, "w1");
    assert_eq!(identity.common_name, "worker:w1");

    // The readiness service answers over the same mutual TLS channel.
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    assert_eq!(
        health.get_ref().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test]
async fn the_coordinator_is_reached_by_any_of_its_names() {
    let cluster = Cluster::new();
    let server = cluster.server().await;
    let worker = cluster.material(&cluster.ca.issue_worker("w1").unwrap());
    let port = server.addr.port();
    for (uri, domain) in [
        (format!("https://localhost:{port}"), None),
        (format!("https://127.0.0.1:{port}"), Some("coord.test")),
    ] {
        let channel = connect(&uri, &worker, domain).await.unwrap();
        WorkerApiClient::new(channel)
            .heartbeat(HeartbeatRequest::default())
            .await
            .unwrap();
    }
    // A name the certificate does not carry: the worker refuses the coordinator.
    let channel = client_endpoint(
        &format!("https://127.0.0.1:{port}"),
        &worker,
        Some("impostor.test"),
    )
    .unwrap()
    .connect()
    .await;
    let refused = match channel {
        Err(_) => true,
        Ok(ch) => WorkerApiClient::new(ch)
            .heartbeat(HeartbeatRequest::default())
            .await
            .is_err(),
    };
    assert!(refused);
    assert_eq!(server.calls(), 2);
}

#[tokio::test]
async fn a_worker_name_other_than_the_certificates_is_refused() {
    let cluster = Cluster::new();
    let server = cluster.server().await;
    let worker = cluster.material(&cluster.ca.issue_worker("w1").unwrap());
    let uri = format!("https://127.0.0.1:{}", server.addr.port());
    let status = WorkerApiClient::new(connect(&uri, &worker, None).await.unwrap())
        .register(register("w2"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
}

#[tokio::test]
async fn roles_keep_clients_off_worker_api_and_workers_off_client_api() {
    let cluster = Cluster::new();
    let server = cluster.server().await;
    let uri = format!("https://127.0.0.1:{}", server.addr.port());
    let client = cluster.material(&cluster.ca.issue_client("admin").unwrap());
    let worker = cluster.material(&cluster.ca.issue_worker("w1").unwrap());
    let client_channel = connect(&uri, &client, None).await.unwrap();
    let worker_channel = connect(&uri, &worker, None).await.unwrap();

    let status = WorkerApiClient::new(client_channel.clone())
        .register(register("admin"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = ClientApiClient::new(worker_channel.clone())
        .list_runs(ListRunsRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // Refused calls never reach the handlers.
    assert_eq!(server.calls(), 0);

    ClientApiClient::new(client_channel)
        .list_runs(ListRunsRequest {})
        .await
        .unwrap();
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let identity = seen[0].clone().unwrap();
    assert_eq!(
        (identity.role, identity.name.as_str()),
        (PeerRole::Client, "admin")
    );
}

/// The connection is refused by TLS itself, not by the role check behind it (which answers
/// with Unauthenticated or PermissionDenied).
async fn refused_by_transport(endpoint: Endpoint) -> bool {
    match endpoint.connect().await {
        Err(_) => true,
        Ok(channel) => match WorkerApiClient::new(channel)
            .heartbeat(HeartbeatRequest::default())
            .await
        {
            Ok(_) => false,
            Err(status) => !matches!(
                status.code(),
                Code::Unauthenticated | Code::PermissionDenied
            ),
        },
    }
}

#[tokio::test]
async fn a_certificate_of_another_ca_is_refused() {
    let cluster = Cluster::new();
    let server = cluster.server().await;
    let other_ca = ClusterCa::generate("other", DEFAULT_VALIDITY_DAYS).unwrap();
    let foreign = other_ca.issue_worker("w1").unwrap();
    // Trusts the right CA (so the coordinator is accepted) but presents a foreign certificate.
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(cluster.ca.cert_pem()))
        .identity(Identity::from_pem(&foreign.cert_pem, &foreign.key_pem))
        .domain_name("localhost");
    let endpoint = Endpoint::from_shared(format!("https://127.0.0.1:{}", server.addr.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap();
    assert!(refused_by_transport(endpoint).await);
    assert_eq!(server.calls(), 0);
}

#[tokio::test]
async fn a_coordinator_of_another_ca_is_refused_by_the_worker() {
    let cluster = Cluster::new();
    let impostor = Cluster::new();
    let server = impostor.server().await;
    let worker = cluster.material(&cluster.ca.issue_worker("w1").unwrap());
    let endpoint = client_endpoint(
        &format!("https://127.0.0.1:{}", server.addr.port()),
        &worker,
        None,
    )
    .unwrap();
    assert!(refused_by_transport(endpoint).await);
    assert_eq!(server.calls(), 0);
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let cluster = Cluster::new();
    let server = cluster.server().await;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(cluster.ca.cert_pem()))
        .domain_name("localhost");
    let endpoint = Endpoint::from_shared(format!("https://127.0.0.1:{}", server.addr.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap();
    assert!(refused_by_transport(endpoint).await);
    assert_eq!(server.calls(), 0);
}

#[tokio::test]
async fn a_plaintext_client_against_the_tls_server_is_refused() {
    let cluster = Cluster::new();
    let server = cluster.server().await;
    let uri = format!("http://127.0.0.1:{}", server.addr.port());
    // Our client builder refuses http:// in TLS mode outright...
    let worker = cluster.material(&cluster.ca.issue_worker("w1").unwrap());
    assert!(matches!(
        client_endpoint(&uri, &worker, None),
        Err(EndpointError::HttpWithoutPlaintext { .. })
    ));
    // ...and a plaintext h2 client gets nowhere with the server.
    let endpoint = client_endpoint(&uri, &TransportSecurity::Plaintext, None).unwrap();
    assert!(refused_by_transport(endpoint).await);
    assert_eq!(server.calls(), 0);
}

#[tokio::test]
async fn plaintext_mode_works_on_loopback_without_identities() {
    let server = start_server(TransportSecurity::Plaintext).await;
    let uri = format!("http://127.0.0.1:{}", server.addr.port());
    let channel = connect(&uri, &TransportSecurity::Plaintext, None)
        .await
        .unwrap();
    WorkerApiClient::new(channel.clone())
        .register(register("w1"))
        .await
        .unwrap();
    ClientApiClient::new(channel)
        .list_runs(ListRunsRequest {})
        .await
        .unwrap();
    assert_eq!(server.seen.lock().unwrap().clone(), vec![None, None]);
    // The same server mode refuses to bind anything but loopback.
    assert!(matches!(
        server_builder("0.0.0.0:0".parse().unwrap(), &TransportSecurity::Plaintext),
        Err(EndpointError::PlaintextNonLoopback { .. })
    ));
}
