//! Forwarding: step 5 of the request path, after every check has passed.
//!
//! Builds the upstream request from config alone (scheme, host, base path),
//! never from the caller's `Host` or absolute-form target; strips the caller's
//! credentials and hop-by-hop headers; injects the route's key; and streams
//! both bodies. Redirects are returned, never followed: the pooled client
//! below has no redirect logic at all.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;
use tower_http::timeout::TimeoutBody;

use crate::body::caller_fault;
use crate::config::UpstreamSettings;
use crate::error::ProxyError;

/// A request body on its way upstream (the caller's, already counted and limited).
pub type ForwardBody = Body;

mod egress;

/// The pooled HTTP client that talks to the upstream.
pub type UpstreamClient = Client<HttpsConnector<egress::Connector>, ForwardBody>;

/// The `X-Request-Id` header.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Idle upstream connections kept open for reuse (HTTP/1.1; HTTP/2 needs one).
pub const MAX_IDLE_UPSTREAM: usize = 128;

/// Builds the pooled client for `upstream`: rustls trusting the webpki roots
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
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        // Like nginx's `keepalive`: enough idle connections for a steady
        // MAX_IDLE_UPSTREAM concurrent requests; beyond that, a burst's extra
        // connections are closed once done instead of each holding ~17 KiB
        // of buffers until the idle timeout.
        .pool_max_idle_per_host(MAX_IDLE_UPSTREAM)
        // One HTTP/2 connection carries every request: find a dead one by
        // ping rather than by requests timing out.
        .http2_keep_alive_interval(Duration::from_secs(30))
        .http2_keep_alive_timeout(Duration::from_secs(10))
        // Only requests never written to a connection are retried (the pooled
        // connection had closed): nothing that reached the upstream is resent.
        .retry_canceled_requests(true)
        .build(https)
}

/// Headers that describe one connection and never cross a proxy (RFC 9110 §7.6.1).
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Headers a caller cannot get dropped by naming them in `Connection`: they
/// describe the body mmgate checked, so the upstream must see them too.
fn is_protected(name: &str) -> bool {
    name.eq_ignore_ascii_case("content-type") || name.eq_ignore_ascii_case("content-length")
}

/// Removes hop-by-hop headers, including every header named in `Connection`.
///
/// Names listed in `Connection` are removed one by one (linear in the list,
/// which a caller controls); the fixed hop-by-hop names by one pass over the
/// (few) names present, as most requests carry none of them.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .filter(|n| !is_protected(n.as_str()))
        .collect();
    for name in named {
        headers.remove(name);
    }
    let doomed: Vec<HeaderName> =
        headers.keys().filter(|name| HOP_BY_HOP.contains(name) || *name == header::UPGRADE).cloned().collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// The upstream URI: configured scheme, host and base path, then the normalised path and the query.
pub fn upstream_uri(upstream: &UpstreamSettings, path: &str, query: Option<&str>) -> Result<Uri, ProxyError> {
    let mut path_and_query =
        String::with_capacity(upstream.base_path.len() + path.len() + query.map_or(0, |q| q.len() + 1));
    path_and_query.push_str(&upstream.base_path);
    path_and_query.push_str(path);
    if let Some(q) = query {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    Uri::builder()
        .scheme(upstream.scheme.clone())
        .authority(upstream.authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|_| ProxyError::BadRequest("the request target cannot be forwarded".into()))
}

/// What to forward: the caller's request with its path normalised.
pub struct Outbound<'a> {
    /// The upstream URI.
    pub uri: Uri,
    /// `Bearer <key>`, marked sensitive.
    pub authorization: &'a HeaderValue,
    /// The request id to pass on.
    pub request_id: &'a HeaderValue,
    /// The `Host` to send, when known before the connection is chosen.
    pub host: Option<&'a HeaderValue>,
}

/// Turns the caller's request into the upstream request.
pub fn upstream_request(mut request: Request<Body>, out: Outbound<'_>) -> Request<ForwardBody> {
    let headers = request.headers_mut();
    strip_hop_by_hop(headers);
    headers.remove(header::AUTHORIZATION);
    // The upstream's `Host`: prepared at load for HTTP/1.1-only upstreams;
    // otherwise the client writes it from the URI on HTTP/1.1 (the same
    // value) and `:authority` on HTTP/2, where `Host` does not belong.
    match out.host {
        Some(host) => headers.insert(header::HOST, host.clone()),
        None => headers.remove(header::HOST),
    };
    headers.insert(header::AUTHORIZATION, out.authorization.clone());
    headers.insert(X_REQUEST_ID.clone(), out.request_id.clone());
    *request.uri_mut() = out.uri;
    // The connection decides: HTTP/2 if ALPN chose it, else HTTP/1.1,
    // whatever the caller spoke.
    *request.version_mut() = http::Version::HTTP_11;
    request
}

/// An upstream call in progress, and what it holds while the upstream works
/// on it (the key's in-flight permit).
///
/// Dropped before the upstream answered (the caller left), the call goes on
/// in a task of its own until the upstream answers or `deadline` passes: the
/// upstream keeps working on a request whose caller left, so a caller that
/// fires and aborts must not free the permit before it does.
struct Call<H: Send + Unpin + 'static> {
    future: Option<ResponseFuture>,
    hold: Option<H>,
    deadline: Instant,
}

impl<H: Send + Unpin + 'static> Future for Call<H> {
    type Output = Result<(http::Response<hyper::body::Incoming>, Option<H>), hyper_util::client::legacy::Error>;

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
) -> Result<(Response, Option<H>), ProxyError> {
    let deadline = Instant::now() + timeout;
    let call = Call { future: Some(client.request(request)), hold: Some(hold), deadline };
    let (response, hold) = match tokio::time::timeout_at(deadline, call).await {
        Err(_) => return Err(ProxyError::UpstreamTimeout),
        Ok(Err(e)) => return Err(classify(&e)),
        Ok(Ok(answered)) => answered,
    };
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // Callers are served HTTP/1.1, whatever the upstream spoke.
    parts.version = http::Version::HTTP_11;
    Ok((Response::from_parts(parts, Body::new(TimeoutBody::new(body_idle_timeout, body))), hold))
}

/// Maps a client error: a fault of the caller's body (too large, malformed,
/// stalled, abandoned) is the caller's; the rest is the upstream's.
fn classify(error: &hyper_util::client::legacy::Error) -> ProxyError {
    if let Some(fault) = caller_fault(error) {
        return fault.into();
    }
    tracing::warn!(error = %chain(error), connect = error.is_connect(), "upstream request failed");
    ProxyError::UpstreamUnreachable
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_headers_go_but_content_type_stays() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close, X-Secret, authorization, content-type"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-type", "x-kept"]);

        // A long Connection list costs time in proportion to its length.
        let mut h = HeaderMap::new();
        let list: Vec<String> = (0..20_000).map(|i| format!("x-{i}")).collect();
        h.insert(header::CONNECTION, HeaderValue::from_str(&list.join(", ")).unwrap());
        for i in (0..20_000).step_by(100) {
            h.insert(HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap(), HeaderValue::from_static("1"));
        }
        h.insert("x-kept", HeaderValue::from_static("1"));
        let started = std::time::Instant::now();
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["x-kept"]);
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "{:?}", started.elapsed());

        let mut untouched = HeaderMap::new();
        untouched.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        untouched.insert("x-custom", HeaderValue::from_static("1"));
        let before = untouched.clone();
        strip_hop_by_hop(&mut untouched);
        assert_eq!(untouched, before);
    }
}
