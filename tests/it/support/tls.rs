//! A TLS upstream for the HTTP/2 tests: a certificate for `localhost` signed
//! by tests/fixtures/tls/ca.pem (which mmgate trusts through
//! `upstream.ca_file`), ALPN offering whatever protocols a test chooses, and
//! a record of each request's protocol, authority and credentials, and of
//! how many TLS connections carried them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// One request as the TLS upstream received it.
#[derive(Debug, Clone)]
pub struct TlsSeen {
    pub version: Version,
    /// The URI's authority: HTTP/2's `:authority`.
    pub authority: Option<String>,
    pub host: Option<String>,
    pub authorization: Option<String>,
    pub path: String,
}

/// The running TLS upstream.
pub struct TlsUpstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<TlsSeen>>>,
    connections: Arc<AtomicUsize>,
    failed_handshakes: Arc<AtomicUsize>,
}

/// A file under tests/fixtures/tls.
pub fn tls_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls").join(name)
}

impl TlsUpstream {
    /// Serves with ALPN offering `protocols` (e.g. `[b"h2", b"http/1.1"]`).
    /// Paths ending in `/wait` answer after 300 ms, so that requests overlap.
    pub async fn start(protocols: &[&[u8]]) -> Self {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(tls_fixture("server.pem")).unwrap().collect::<Result<_, _>>().unwrap();
        let key = PrivateKeyDer::from_pem_file(tls_fixture("server.key")).unwrap();
        let mut config = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).unwrap();
        config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let failed_handshakes = Arc::new(AtomicUsize::new(0));
        let (seen2, connections2, failed2) = (seen.clone(), connections.clone(), failed_handshakes.clone());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (acceptor, seen, connections, failed) =
                    (acceptor.clone(), seen2.clone(), connections2.clone(), failed2.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        failed.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    connections.fetch_add(1, Ordering::SeqCst);
                    let service = service_fn(move |request: Request<Incoming>| {
                        let seen = seen.clone();
                        async move { Ok::<_, Infallible>(answer(&seen, &request).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(tls), service).await;
                });
            }
        });
        Self { addr, seen, connections, failed_handshakes }
    }

    /// `https://localhost:PORT`, the name the certificate is for.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    pub fn requests(&self) -> Vec<TlsSeen> {
        self.seen.lock().unwrap().clone()
    }

    /// TLS connections that completed the handshake.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn failed_handshakes(&self) -> usize {
        self.failed_handshakes.load(Ordering::SeqCst)
    }
}

async fn answer(seen: &Mutex<Vec<TlsSeen>>, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let header = |name: &str| request.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    seen.lock().unwrap().push(TlsSeen {
        version: request.version(),
        authority: request.uri().authority().map(|a| a.to_string()),
        host: header("host"),
        authorization: header("authorization"),
        path: request.uri().path().to_owned(),
    });
    if request.uri().path().ends_with("/wait") {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut response = Response::new(Full::new(Bytes::from(format!("{{\"version\":\"{:?}\"}}", request.version()))));
    response.headers_mut().insert("content-type", "application/json".parse().unwrap());
    response
}
