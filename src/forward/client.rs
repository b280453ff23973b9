//! The upstream client and one upstream call: rustls over the egress
//! connector, the pool of connections (`pool`), and the call that holds the
//! key's in-flight permit until the upstream has answered.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use http::uri::Scheme;
use http::{HeaderValue, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::time::Instant;

use super::pool::Pool;
use super::{egress, strip_hop_by_hop, ForwardBody, UpstreamError};
use crate::body::{caller_fault, BoxError, StallTimer};
use crate::config::UpstreamSettings;

/// The upstream's connections (one upstream per configuration).
pub type UpstreamClient = Arc<Pool>;

/// Builds the connections for `upstream`: rustls trusting the webpki roots
/// (and `ca_file`), keep-alive, HTTP/2 when the upstream offers it, and the
/// egress proxy's tunnel when there is one.
pub fn client(upstream: &UpstreamSettings) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(upstream.connect_timeout));
    http.set_nodelay(true);
    // The connector sees only URIs built from config; `https` is required
    // unless the operator configured `http://` (checked and warned at load).
    http.enforce_http(false);
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some((_, certs)) = &upstream.extra_roots {
        // Each was added to a store once already when the config was validated.
        let _ = roots.add_parsable_certificates(certs.iter().cloned());
    }
    let tls = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1();
    // ALPN offers h2 first on TLS: one multiplexed connection instead of one
    // per concurrent request. Plain http stays HTTP/1.1 (no h2c).
    let connector = egress::Connector::new(&upstream.egress, http, upstream.connect_timeout);
    let https = if upstream.http2 {
        builder.enable_http2().wrap_connector(connector)
    } else {
        builder.wrap_connector(connector)
    };
    let target = Uri::builder()
        .scheme(upstream.scheme.clone())
        .authority(upstream.authority.clone())
        .path_and_query("/")
        .build()
        .unwrap_or_default();
    Pool::new(https, target, host_header(upstream), upstream.max_connections)
}

/// `Host` on HTTP/1.1: the authority, its port only when not the scheme's default.
fn host_header(upstream: &UpstreamSettings) -> HeaderValue {
    if let Some(host) = &upstream.host_header {
        return host.clone();
    }
    let default_port = if upstream.scheme == Scheme::HTTPS { 443 } else { 80 };
    let host = match upstream.authority.port_u16() {
        Some(port) if port != default_port => format!("{}:{port}", upstream.authority.host()),
        _ => upstream.authority.host().to_owned(),
    };
    HeaderValue::from_str(&host).unwrap_or_else(|_| HeaderValue::from_static("localhost"))
}

/// An upstream call in progress, and what it holds while the upstream works
/// on it (the key's in-flight permit).
///
/// Dropped before the upstream answered (the caller left), the call goes on
/// in a task of its own until the upstream answers or `deadline` passes: the
/// upstream keeps working on a request whose caller left, so a caller that
/// fires and aborts must not free the permit before it does.
type Sending = Pin<Box<dyn Future<Output = Result<http::Response<Body>, BoxError>> + Send>>;

struct Call<H: Send + Unpin + 'static> {
    future: Option<Sending>,
    hold: Option<H>,
    deadline: Instant,
}

impl<H: Send + Unpin + 'static> Future for Call<H> {
    type Output = Result<(http::Response<Body>, Option<H>), BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(future) = this.future.as_mut() else {
            return Poll::Pending;
        };
        let outcome = std::task::ready!(Pin::new(future).poll(cx));
        this.future = None;
        Poll::Ready(outcome.map(|response| (response, this.hold.take())))
    }
}

impl<H: Send + Unpin + 'static> Drop for Call<H> {
    fn drop(&mut self) {
        let (Some(future), Ok(runtime)) = (self.future.take(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        let (hold, deadline) = (self.hold.take(), self.deadline);
        runtime.spawn(async move {
            let _ = tokio::time::timeout_at(deadline, future).await;
            drop(hold);
        });
    }
}

/// Sends `request`, holding `hold` until the upstream's response headers
/// arrive (then handing it back), and waits up to `timeout` for them.
pub async fn send<H: Send + Unpin + 'static>(
    client: &UpstreamClient,
    request: Request<ForwardBody>,
    timeout: Duration,
    body_idle_timeout: Duration,
    hold: H,
) -> Result<(Response, Option<H>), UpstreamError> {
    let deadline = Instant::now() + timeout;
    let pool = Arc::clone(client);
    let call = Call { future: Some(Box::pin(async move { pool.send(request).await })), hold: Some(hold), deadline };
    let (response, hold) = match tokio::time::timeout_at(deadline, call).await {
        Err(_) => return Err(UpstreamError::Timeout),
        Ok(Err(e)) => return Err(classify(&*e)),
        Ok(Ok(answered)) => answered,
    };
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // Callers are served HTTP/1.1, whatever the upstream spoke.
    parts.version = http::Version::HTTP_11;
    let body = UpstreamBody { inner: body, stall: StallTimer::new(body_idle_timeout) };
    Ok((Response::from_parts(parts, Body::new(body)), hold))
}

/// An upstream answer's body, given up on when it sends nothing for
/// `upstream.body_idle_timeout` (then the caller's response is cut).
struct UpstreamBody {
    inner: Body,
    stall: StallTimer,
}

/// The upstream's body sent nothing for `upstream.body_idle_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the upstream's answer stalled for {}", humantime::format_duration(*.0))]
struct Stalled(Duration);

impl http_body::Body for UpstreamBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.stall.frame();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending if this.stall.stalled(cx) => Poll::Ready(Some(Err(Stalled(this.stall.idle()).into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Maps a client error: a fault of the caller's body (too large, malformed,
/// stalled, abandoned) is the caller's; the rest is the upstream's.
fn classify(error: &(dyn std::error::Error + Send + Sync + 'static)) -> UpstreamError {
    if let Some(fault) = caller_fault(error) {
        return UpstreamError::Caller(fault);
    }
    tracing::warn!(error = %chain(error), "upstream request failed");
    UpstreamError::Unreachable
}

fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
