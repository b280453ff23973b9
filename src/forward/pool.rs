//! Connections to the upstream, on hyper's connection API rather than
//! hyper-util's general pooled client (which costs a pool key hashed with
//! SipHash, per-host maps and checkout futures on every request, about a
//! fifth of a proxied request's instructions here).
//!
//! One upstream, so one pool: a LIFO stack of idle HTTP/1.1 connections (the
//! most recently used first, warm in every cache), or, when TLS's ALPN chose
//! HTTP/2, one shared multiplexed connection. What hyper-util's pool gave is
//! kept: at most `upstream.max_connections` open (beyond, a request waits
//! for one, within `upstream.timeout`), at most `MAX_IDLE` idle, none idle
//! longer than `IDLE_TIMEOUT`; a request is retried on a fresh connection
//! only when it was never written to a reused one (its connection had
//! closed meanwhile); TLS and the egress proxy are the connector's.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, Uri};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tower_service::Service;

use super::{egress, ForwardBody};
use crate::body::BoxError;

/// Idle HTTP/1.1 connections kept for reuse, like nginx's `keepalive`:
/// enough for a steady 128 concurrent requests; a burst's extra connections
/// close once done instead of each holding ~17 KiB of buffers.
pub const MAX_IDLE: usize = 128;

/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

type Connector = HttpsConnector<egress::Connector>;

struct Idle {
    sender: http1::SendRequest<ForwardBody>,
    since: Instant,
}

/// The upstream's connections.
pub struct Pool {
    connector: Connector,
    /// `scheme://authority/`: where connections go.
    target: Uri,
    /// `Host` for HTTP/1.1 (`:authority` on HTTP/2 comes from the URI).
    host: HeaderValue,
    idle: Mutex<Vec<Idle>>,
    h2: Mutex<Option<http2::SendRequest<ForwardBody>>>,
    open: Arc<Semaphore>,
    /// Signalled when a connection goes back to the idle stack.
    returned: Notify,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("target", &self.target).finish_non_exhaustive()
    }
}

/// A connection taken for one request.
enum Lease {
    H1 { sender: http1::SendRequest<ForwardBody>, reused: bool },
    H2(http2::SendRequest<ForwardBody>),
}

impl Pool {
    /// A pool connecting through `connector` to `target` (`scheme://host:port`),
    /// with at most `max_open` connections.
    pub fn new(connector: Connector, target: Uri, host: HeaderValue, max_open: usize) -> Arc<Self> {
        Arc::new(Self {
            connector,
            target,
            host,
            idle: Mutex::default(),
            h2: Mutex::default(),
            open: Arc::new(Semaphore::new(max_open)),
            returned: Notify::new(),
        })
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Idle>> {
        // A plain list: consistent between statements, usable after a panic elsewhere.
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn shared_h2(&self) -> MutexGuard<'_, Option<http2::SendRequest<ForwardBody>>> {
        self.h2.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends `request` (absolute URI) on a connection of the pool.
    pub async fn send(self: &Arc<Self>, mut request: Request<ForwardBody>) -> Result<Response<Body>, BoxError> {
        loop {
            match self.lease().await? {
                Lease::H2(mut sender) => {
                    // `:authority` comes from the URI; `Host` does not belong in HTTP/2.
                    request.headers_mut().remove(header::HOST);
                    let response = sender.send_request(request).await?;
                    return Ok(response.map(Body::new));
                }
                Lease::H1 { mut sender, reused } => {
                    let absolute = request.uri().clone();
                    if let Some(origin) = absolute.path_and_query() {
                        *request.uri_mut() = Uri::from(origin.clone());
                    }
                    request.headers_mut().entry(header::HOST).or_insert_with(|| self.host.clone());
                    match sender.try_send_request(request).await {
                        // An empty body may never be polled: the connection is free already.
                        Ok(response) if response.body().is_end_stream() => {
                            self.put(sender);
                            return Ok(response.map(Body::new));
                        }
                        Ok(response) => {
                            let pool = Arc::clone(self);
                            return Ok(response.map(|body| Body::new(Returning { body, sender: Some(sender), pool })));
                        }
                        Err(mut failed) => match failed.take_message() {
                            // Never written, on a connection that had closed meanwhile: once more, afresh.
                            Some(unsent) if reused => {
                                request = unsent;
                                *request.uri_mut() = absolute;
                            }
                            _ => return Err(failed.into_error().into()),
                        },
                    }
                }
            }
        }
    }

    /// The shared HTTP/2 connection, an idle HTTP/1.1 one, or a new one.
    async fn lease(&self) -> Result<Lease, BoxError> {
        loop {
            let shared = self.shared_h2().as_ref().filter(|s| !s.is_closed()).cloned();
            if let Some(sender) = shared {
                return Ok(Lease::H2(sender));
            }
            loop {
                let next = self.idle().pop();
                let Some(Idle { mut sender, since }) = next else { break };
                if sender.is_closed() || since.elapsed() > IDLE_TIMEOUT {
                    continue;
                }
                // Put back when its last response ended: ready at once, or as
                // soon as hyper has seen that end.
                if sender.ready().await.is_ok() {
                    return Ok(Lease::H1 { sender, reused: true });
                }
            }
            // None idle: a new connection when one may be opened, else the
            // next one put back.
            let notified = self.returned.notified();
            tokio::select! {
                permit = Arc::clone(&self.open).acquire_owned() => {
                    // Boxed: connecting (TLS, HTTP/2 handshakes) is a 6.5 KiB
                    // future, rare, and would otherwise make every request's
                    // future that large, copied at each move.
                    return Box::pin(self.connect(permit.map_err(|_| "the upstream pool is closed")?)).await;
                }
                () = notified => {}
            }
        }
    }

    async fn connect(&self, permit: OwnedSemaphorePermit) -> Result<Lease, BoxError> {
        let io = self.connector.clone().call(self.target.clone()).await?;
        if io.connected().is_negotiated_h2() {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                // One connection carries every request: find a dead one by
                // ping rather than by requests timing out.
                .keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(10))
                .handshake(io)
                .await?;
            tokio::spawn(async move {
                let _ = connection.await;
                drop(permit);
            });
            *self.shared_h2() = Some(sender.clone());
            return Ok(Lease::H2(sender));
        }
        let (sender, connection) = http1::Builder::new().handshake(io).await?;
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
        Ok(Lease::H1 { sender, reused: false })
    }

    /// Takes back a connection whose response has ended.
    fn put(&self, sender: http1::SendRequest<ForwardBody>) {
        if sender.is_closed() {
            return;
        }
        {
            let mut idle = self.idle();
            if idle.len() >= MAX_IDLE {
                return;
            }
            idle.push(Idle { sender, since: Instant::now() });
        }
        self.returned.notify_one();
    }
}

pin_project_lite::pin_project! {
    /// An HTTP/1.1 response body that gives its connection back to the pool
    /// once it has been read to the end (a body dropped earlier leaves the
    /// connection unusable, and hyper closes it).
    struct Returning {
        #[pin]
        body: Incoming,
        sender: Option<http1::SendRequest<ForwardBody>>,
        pool: Arc<Pool>,
    }
}

impl http_body::Body for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        let polled = this.body.as_mut().poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => this.body.is_end_stream(),
            _ => false,
        };
        if ended {
            if let Some(sender) = this.sender.take() {
                this.pool.put(sender);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
