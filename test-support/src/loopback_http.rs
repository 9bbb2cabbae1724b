//! One HTTP/1 server on its own thread and runtime, for the tests' model servers (the fake
//! OpenAI server, the scripted agent models): each gives only its handler. Stopped when dropped.

use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

pub struct LoopbackServer {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl LoopbackServer {
    /// Serves `handle` on `bind` (e.g. `127.0.0.1:0`) in a thread named `name`.
    pub fn start<F, Fut, B>(name: &str, bind: SocketAddr, handle: F) -> LoopbackServer
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let listener = std::net::TcpListener::bind(bind)
            .unwrap_or_else(|e| panic!("{name}: bind {bind}: {e}"));
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    loop {
                        let (stream, _) = tokio::select! {
                            _ = &mut rx => return,
                            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                        };
                        let handle = handle.clone();
                        tokio::spawn(async move {
                            let svc = hyper::service::service_fn(handle);
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                });
            })
            .unwrap();
        LoopbackServer {
            addr,
            shutdown: Some(tx),
        }
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
