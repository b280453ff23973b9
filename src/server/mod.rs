//! Listeners and connections: binds the proxy and admin addresses, serves
//! HTTP/1.1 on them with hyper, and shuts down gracefully.
//!
//! hyper is driven directly (not through `axum::serve`): the proxy needs its
//! head limits exact and answered in JSON (`guard`), timeouts per connection
//! state (`connection`), a connection cap, and a shutdown bounded by
//! `shutdown_grace` rather than one that waits for ever. The admin listener
//! runs on a thread and runtime of its own with a small connection budget,
//! so that `/healthz` keeps answering when the proxy's workers are saturated.

mod connection;
mod guard;
mod listen;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

pub use connection::ConnSettings;
pub use listen::{Bound, Listener};

use crate::client::Peer;
use crate::conn::Activity;
use crate::gate::Gate;
use crate::{admin, keys, proxy};

/// Admin connections served at once; more wait in the backlog.
const ADMIN_CONNECTIONS: usize = 64;

/// Both listeners of a running mmgate, bound and ready to serve.
pub struct Server {
    gate: Arc<Gate>,
    proxy: Bound,
    admin: Bound,
}

impl Server {
    /// Binds the proxy and admin addresses of the gate's current config.
    pub async fn bind(gate: Arc<Gate>) -> io::Result<Self> {
        let runtime = gate.runtime();
        let server = &runtime.settings().server();
        let bind =
            |addr| Bound::bind(addr).map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")));
        let proxy = bind(&server.listen)?;
        let admin = bind(&server.admin_listen)?;
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
        let (watched, refreshed) = (Arc::clone(&gate), Arc::clone(&gate));
        let key_watcher = keys::watch(
            move || watched.runtime().watched_keys(),
            move |why| refreshed.runtime().keys().refresh_files(why),
        );
        let admin = AdminThread::start(admin, Arc::clone(&gate));
        let proxy = match proxy.into_tokio() {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(error = %e, "cannot serve the proxy listener");
                return;
            }
        };

        gate.set_serving(true);
        tracing::info!("mmgate is serving");
        crate::notify::ready();
        let (stop, stopped) = watch::channel(false);
        let live = Arc::new(watch::Sender::new(0usize));
        let stop_gate = Arc::clone(&gate);
        accept_proxy(&gate, proxy, &stopped, &live, async move {
            shutdown.await;
            // Fail readiness before the listener closes, so load balancers
            // stop sending before connections start being refused.
            stop_gate.set_serving(false);
        })
        .await;

        crate::notify::stopping();
        // Read now: a reload may have changed it since start.
        let grace = gate.runtime().settings().server().shutdown_grace;
        let in_flight = gate.in_flight();
        tracing::info!(in_flight, grace_secs = grace.as_secs_f64(), "shutting down: listener closed, draining");
        let _ = stop.send(true);
        let mut count = live.subscribe();
        if tokio::time::timeout(grace, count.wait_for(|n| *n == 0)).await.is_err() {
            tracing::warn!(cut = gate.in_flight(), "shutdown grace ran out; cutting the requests still in flight");
        } else {
            tracing::info!("all requests finished");
        }
        key_watcher.abort();
        admin.stop();
    }
}

/// Counts a live connection until dropped.
struct LiveGuard(Arc<watch::Sender<usize>>);

impl LiveGuard {
    fn new(live: &Arc<watch::Sender<usize>>) -> Self {
        live.send_modify(|n| *n += 1);
        Self(Arc::clone(live))
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// The proxy listener's connection budget, resized when a reload changes
/// `server.max_connections` (connections already open keep their permits).
struct Budget {
    size: usize,
    semaphore: Arc<Semaphore>,
}

impl Budget {
    fn new(size: usize) -> Self {
        Self { size, semaphore: Arc::new(Semaphore::new(size)) }
    }

    async fn acquire(&mut self, wanted: usize) -> Option<OwnedSemaphorePermit> {
        if wanted != self.size {
            *self = Self::new(wanted);
        }
        Arc::clone(&self.semaphore).acquire_owned().await.ok()
    }
}

/// Accepts proxy connections until `stop` resolves. Beyond
/// `max_connections`, accepting pauses and new connections wait in the
/// kernel's backlog.
async fn accept_proxy(
    gate: &Arc<Gate>,
    listener: Listener,
    stopped: &watch::Receiver<bool>,
    live: &Arc<watch::Sender<usize>>,
    stop: impl Future<Output = ()> + Send,
) {
    tokio::pin!(stop);
    let mut budget = Budget::new(gate.runtime().settings().server().max_connections);
    loop {
        let wanted = gate.runtime().settings().server().max_connections;
        let permit = tokio::select! {
            () = &mut stop => break,
            permit = budget.acquire(wanted) => permit,
        };
        let accepted = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        let (peer, stream) = match accepted {
            Ok(listen::Accepted::Tcp(stream, addr)) => {
                let _ = stream.set_nodelay(true);
                (Peer::Tcp(addr), Stream::Tcp(stream))
            }
            // The peer's uid identifies `unix_uid` clients; a peer whose
            // credentials cannot be read is served as an unknown caller.
            Ok(listen::Accepted::Unix(stream)) => {
                (Peer::Unix { uid: stream.peer_cred().ok().map(|cred| cred.uid()) }, Stream::Unix(stream))
            }
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let settings = ConnSettings::of(gate.runtime().settings().server());
        let activity = Activity::new();
        let service = proxy_service(Arc::clone(gate), peer, Arc::clone(&activity));
        let guards = (permit, LiveGuard::new(live));
        let stopped = stopped.clone();
        tokio::spawn(async move {
            match stream {
                Stream::Tcp(s) => connection::drive(s, activity, service, settings, stopped).await,
                Stream::Unix(s) => connection::drive(s, activity, service, settings, stopped).await,
            }
            drop(guards);
        });
    }
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// The proxy's service for one connection: every request goes to
/// `proxy::handle` directly (no router or tower layers: every method and
/// path goes to the one handler, and each layer cost a box and a future map
/// per request). The handler's future (about 3 KiB) is boxed per request:
/// hyper keeps a slot of the service future's size in every connection,
/// idle ones included.
fn proxy_service(
    gate: Arc<Gate>,
    peer: Peer,
    activity: Arc<Activity>,
) -> impl hyper::service::Service<Request<Incoming>, Response = ProxyResponse, Error = Infallible, Future = ProxyFuture>
       + Unpin {
    service_fn(move |request: Request<Incoming>| {
        let gate = Arc::clone(&gate);
        let guard = activity.begin();
        Box::pin(async move { Ok(proxy::handle(gate, peer, Some(guard), request).await) }) as ProxyFuture
    })
}

type ProxyResponse = http::Response<crate::access::Observed>;
type ProxyFuture = Pin<Box<dyn Future<Output = Result<ProxyResponse, Infallible>> + Send>>;

/// The admin listener, served by its own thread and single-threaded runtime.
struct AdminThread {
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AdminThread {
    fn start(bound: Bound, gate: Arc<Gate>) -> Self {
        let (stop, stopped) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("mmgate-admin".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(e) => return tracing::error!(error = %e, "cannot start the admin listener's runtime"),
                };
                runtime.block_on(serve_admin(bound, gate, stopped));
            })
            .map_err(|e| tracing::error!(error = %e, "cannot start the admin listener's thread"))
            .ok();
        Self { stop, thread }
    }

    /// Stops accepting, gives open admin connections a second, and joins.
    fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve_admin(bound: Bound, gate: Arc<Gate>, mut stopped: watch::Receiver<bool>) {
    let listener = match bound.into_tokio() {
        Ok(listener) => listener,
        Err(e) => return tracing::error!(error = %e, "cannot serve the admin listener"),
    };
    let app = admin::app(gate);
    let budget = Arc::new(Semaphore::new(ADMIN_CONNECTIONS));
    let mut builder = http1::Builder::new();
    // Probes and scrapes are short: the header timeout also closes idle ones.
    builder.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(10)).max_buf_size(16 * 1024);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = stopped.wait_for(|s| *s) => break,
            permit = Arc::clone(&budget).acquire_owned() => permit,
        };
        let accepted = tokio::select! {
            _ = stopped.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = match accepted {
            Ok(listen::Accepted::Tcp(stream, _)) => {
                builder.serve_connection(TokioIo::new(Stream::Tcp(stream)), service)
            }
            Ok(listen::Accepted::Unix(stream)) => builder.serve_connection(TokioIo::new(Stream::Unix(stream)), service),
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        connections.spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    let _ =
        tokio::time::timeout(Duration::from_secs(1), async { while connections.join_next().await.is_some() {} }).await;
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Self::Unix(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Self::Unix(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Unix(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(s) => s.is_write_vectored(),
            Self::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => std::pin::Pin::new(s).poll_flush(cx),
            Self::Unix(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Self::Unix(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}
