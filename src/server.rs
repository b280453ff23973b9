//! Listeners and connections: binds the proxy and admin addresses, serves
//! HTTP/1.1 on them with hyper, and shuts down gracefully.
//!
//! hyper is driven directly (not through `axum::serve`) because the proxy
//! needs the HTTP/1 buffer bounded by `max_header_bytes`, and shutdown must
//! be bounded by `shutdown_grace` rather than wait for ever.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::{service_fn, HttpService};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};

use crate::client::PeerUid;
use crate::config::ListenAddr;
use crate::state::Gate;
use crate::{admin, keys, proxy};

/// A bound listening socket.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// A Unix socket, removed again when the listener is dropped.
    Unix(UnixListener, UnixSocketFile),
}

/// Removes a Unix socket's file when dropped.
#[derive(Debug)]
pub struct UnixSocketFile(PathBuf);

impl Drop for UnixSocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Listener {
    /// Binds `addr`. A stale Unix socket file is replaced; any other file is left alone.
    pub async fn bind(addr: &ListenAddr) -> io::Result<Self> {
        match addr {
            ListenAddr::Tcp(addr) => Ok(Self::Tcp(TcpListener::bind(addr).await?)),
            ListenAddr::Unix(path) => {
                use std::os::unix::fs::{FileTypeExt, PermissionsExt};
                if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                    std::fs::remove_file(path)?;
                }
                let listener = UnixListener::bind(path)?;
                let file = UnixSocketFile(path.clone());
                // Callers in the socket's group may connect; others may not.
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
                Ok(Self::Unix(listener, file))
            }
        }
    }

    /// The bound TCP address (useful after binding port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Tcp(l) => l.local_addr().ok(),
            Self::Unix(..) => None,
        }
    }
}

/// Both listeners of a running mmgate, bound and ready to serve.
pub struct Server {
    gate: Arc<Gate>,
    proxy: Listener,
    admin: Listener,
}

impl Server {
    /// Binds the proxy and admin addresses of the gate's current config.
    pub async fn bind(gate: Arc<Gate>) -> io::Result<Self> {
        let runtime = gate.runtime();
        let server = &runtime.settings.server;
        let proxy = Listener::bind(&server.listen)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {}: {e}", server.listen)))?;
        let admin = Listener::bind(&server.admin_listen)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {}: {e}", server.admin_listen)))?;
        Ok(Self { gate, proxy, admin })
    }

    /// The proxy's TCP address.
    pub fn proxy_addr(&self) -> Option<SocketAddr> {
        self.proxy.local_addr()
    }

    /// The admin listener's TCP address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.local_addr()
    }

    /// Serves until `shutdown` resolves, then drains as DESIGN.md's shutdown says.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let Self { gate, proxy, admin } = self;
        let runtime = gate.runtime();
        let max_header_bytes = runtime.settings.server.max_header_bytes;
        let grace = runtime.settings.server.shutdown_grace;
        let server = &runtime.settings.server;
        let key_watcher = keys::watch(Arc::clone(&gate), server.key_poll_interval, server.watch_key_files);
        drop(runtime);

        let (stop_admin, admin_stopped) = tokio::sync::watch::channel(false);
        let admin_app = admin::app(Arc::clone(&gate));
        let admin_service = move |_peer| TowerToHyperService::new(admin_app.clone());
        let admin_task = tokio::spawn(accept_loop(admin, admin_service, builder(16 * 1024), async move {
            let mut stopped = admin_stopped;
            let _ = stopped.wait_for(|s| *s).await;
        }));

        gate.set_serving(true);
        tracing::info!("mmgate is serving");
        let proxy_gate = Arc::clone(&gate);
        // hyper calls `proxy::handle` directly: no router or tower layers, as
        // every method and path goes to the one handler, and each layer cost
        // a box and a future map per request. The handler's future (about
        // 3 KiB) is boxed per request: hyper keeps a slot of the service
        // future's size for every connection, idle ones included.
        let service_gate = Arc::clone(&gate);
        let proxy_service = move |peer: Option<PeerUid>| {
            let gate = Arc::clone(&service_gate);
            service_fn(move |request: Request<Incoming>| {
                let gate = Arc::clone(&gate);
                Box::pin(async move { Ok::<_, Infallible>(proxy::handle(gate, peer, request).await) })
            })
        };
        let connections = accept_loop(proxy, proxy_service, builder(max_header_bytes), async move {
            shutdown.await;
            // Fail readiness before the listener closes, so load balancers
            // stop sending before connections start being refused.
            proxy_gate.set_serving(false);
        })
        .await;

        let in_flight = gate.in_flight();
        tracing::info!(in_flight, grace_secs = grace.as_secs_f64(), "shutting down: listener closed, draining");
        if tokio::time::timeout(grace, connections.shutdown()).await.is_err() {
            tracing::warn!(cut = gate.in_flight(), "shutdown grace ran out; cutting the requests still in flight");
        } else {
            tracing::info!("all requests finished");
        }
        key_watcher.abort();
        let _ = stop_admin.send(true);
        if let Ok(admin_connections) = admin_task.await {
            let _ = tokio::time::timeout(Duration::from_secs(1), admin_connections.shutdown()).await;
        }
    }
}

/// HTTP/1 settings: the read buffer bounds the request head.
fn builder(max_header_bytes: usize) -> http1::Builder {
    let mut builder = http1::Builder::new();
    // Heads up to `max_header_bytes` reach the handler, which answers 431 in
    // JSON; hyper's own bare 431 only catches heads twice that size.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size((max_header_bytes * 2).max(16 * 1024))
        .keep_alive(true);
    builder
}

/// Accepts connections until `stop` resolves; returns the handle that drains them.
/// `service` makes each connection's service, given the peer's uid on a Unix socket.
async fn accept_loop<S>(
    listener: Listener,
    service: impl Fn(Option<PeerUid>) -> S,
    builder: http1::Builder,
    stop: impl Future<Output = ()> + Send,
) -> GracefulShutdown
where
    S: HttpService<Incoming> + Send + 'static,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as http_body::Body>::Data: Send,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            () = &mut stop => break,
            accepted = accept(&listener) => accepted,
        };
        match accepted {
            Ok(Accepted::Tcp(stream)) => {
                let _ = stream.set_nodelay(true);
                spawn_connection(&graceful, &builder, service(None), stream);
            }
            Ok(Accepted::Unix(stream)) => {
                // The peer's uid identifies `unix_uid` clients; a peer whose
                // credentials cannot be read is served as an unknown caller.
                let peer = stream.peer_cred().ok().map(|cred| PeerUid(cred.uid()));
                spawn_connection(&graceful, &builder, service(peer), stream);
            }
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    graceful
}

enum Accepted {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> io::Result<Accepted> {
    match listener {
        Listener::Tcp(l) => l.accept().await.map(|(s, _)| Accepted::Tcp(s)),
        Listener::Unix(l, _) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}

fn spawn_connection<S, T>(graceful: &GracefulShutdown, builder: &http1::Builder, service: T, stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: HttpService<Incoming> + Send + 'static,
    T::Future: Send + 'static,
    T::ResBody: Send + 'static,
    <T::ResBody as http_body::Body>::Data: Send,
    <T::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    });
}
