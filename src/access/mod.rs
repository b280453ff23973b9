//! One request's record, from arrival to the last byte of its response: the
//! access log line and the request metrics are written when the response
//! body ends (or the caller goes away), so bytes out and the full latency are
//! known, and the request counts as in flight until then.

mod line;
mod span;
mod timestamp;

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderValue, Method};
use http_body::{Body as HttpBody, Frame, SizeHint};

pub use line::{write_lines_to, AccessLine};

use crate::client::Peer;
use crate::conn::RequestGuard;
use crate::error::{negotiate, Answer, ProxyError, Shape, GRAPHQL_METHODS, REST_METHODS};
use crate::gate::{Gate, InFlight};
use crate::graphql::Summary;
use crate::limit::Admission;
use crate::metrics::{Label, Metrics};
use crate::share::Served;

/// Who produced the status a caller got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// mmgate refused or failed.
    Mmgate,
    /// The upstream's answer, passed through.
    Upstream,
}

/// What is known about a request so far; logged and counted when dropped.
pub struct Exchange {
    gate: Arc<Gate>,
    _in_flight: InFlight,
    /// Marks the connection busy until the response ends (its timeouts wait).
    _request: Option<RequestGuard>,
    started: Instant,
    /// The request id sent upstream and returned to the caller.
    pub request_id: HeaderValue,
    method: Method,
    peer: Peer,
    user_agent: Option<HeaderValue>,
    /// The matched route's pattern.
    pub route: Option<Arc<str>>,
    /// The normalised path, once read.
    pub path: Option<Box<str>>,
    /// The identified client's name.
    pub client: Option<Arc<str>>,
    /// The checked GraphQL operation, on GraphQL routes.
    pub graphql: Option<Summary>,
    /// The response status.
    pub status: u16,
    by: By,
    code: Option<&'static str>,
    limit: Option<String>,
    upstream_status: Option<u16>,
    bytes_in: Arc<AtomicU64>,
    bytes_out: u64,
    /// Time to the upstream's response headers, when the upstream was called.
    pub upstream_latency: Option<Duration>,
    body_failed: bool,
    /// The key's in-flight permit, released with the response.
    pub admission: Option<Admission>,
    /// On a GraphQL route: the caller's `Accept`, which picks a refusal's media type.
    pub graphql_accept: Option<Option<HeaderValue>>,
    /// How a shared read was served.
    pub served: Option<Served>,
    /// Whether the route caches answers (its answers say how they were served).
    pub cached_route: bool,
    /// How long the request waited for its turn under `max_wait`.
    pub waited: Option<Duration>,
    /// The request's trace span, when telemetry is on: it ends with the exchange.
    pub span: Option<tracing::Span>,
    /// The scopes the request used (`reporting`, or `reporting,write` with a mutation).
    pub scope: Option<Box<str>>,
    /// What a policy in shadow mode would have refused (its error code).
    would_refuse: Option<&'static str>,
}

impl Exchange {
    /// Starts the record of a request from `peer` (`request`: its
    /// connection's guard, if any). Boxed: the record rides along with the
    /// response body, which hyper moves several times per request, and a
    /// pointer is cheaper to move than the record's 660 bytes.
    pub fn begin(
        gate: &Arc<Gate>,
        request_id: HeaderValue,
        (method, headers): (&Method, &http::HeaderMap),
        peer: Peer,
        request: Option<RequestGuard>,
    ) -> Box<Self> {
        Box::new(Self {
            gate: Arc::clone(gate),
            _in_flight: gate.track(),
            _request: request,
            started: Instant::now(),
            request_id,
            method: method.clone(),
            peer,
            user_agent: headers.get(http::header::USER_AGENT).cloned(),
            route: None,
            path: None,
            client: None,
            graphql: None,
            status: 0,
            by: By::Mmgate,
            code: None,
            limit: None,
            upstream_status: None,
            bytes_in: Arc::default(),
            bytes_out: 0,
            upstream_latency: None,
            body_failed: false,
            admission: None,
            graphql_accept: None,
            served: None,
            cached_route: false,
            waited: None,
            span: None,
            scope: None,
            would_refuse: None,
        })
    }

    /// How a refusal of this request is written: in the API's own shape, with
    /// the matched route's methods in `Allow`.
    pub fn answer(&self) -> Answer<'_> {
        let request_id = self.request_id.to_str().unwrap_or_default();
        match &self.graphql_accept {
            Some(accept) => {
                Answer { request_id, shape: Shape::Graphql(negotiate(accept.as_ref())), allow: GRAPHQL_METHODS }
            }
            None => Answer { request_id, shape: Shape::Rest, allow: REST_METHODS },
        }
    }

    /// The counter of request body bytes read, for the caller's body to add to.
    pub fn bytes_in(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.bytes_in)
    }

    /// The process's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.gate.metrics
    }

    /// The gate this request came through.
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// Records mmgate's own answer: its code, the limit behind a 429, and
    /// what it says about the upstream.
    pub fn failed(&mut self, error: &ProxyError) {
        self.by = By::Mmgate;
        self.code = Some(error.code());
        match error {
            ProxyError::UpstreamUnreachable => self.metrics().upstream_error("unreachable"),
            ProxyError::UpstreamTimeout => self.metrics().upstream_error("timeout"),
            ProxyError::RateLimited(limited) => self.limit = Some(limited.limit.clone()),
            _ => {}
        }
    }

    /// Records what a policy in shadow mode would have refused (the first
    /// one only: enforcement would have stopped there). It is counted when
    /// the request ends, if it was answered by the upstream after all.
    pub fn would_refuse(&mut self, error: &ProxyError) {
        if self.would_refuse.is_some() {
            return;
        }
        self.would_refuse = Some(error.code());
        if let ProxyError::RateLimited(limited) = error {
            self.limit = Some(limited.limit.clone());
        }
    }

    /// Records that the upstream answered with `status`.
    pub fn answered(&mut self, status: u16) {
        self.by = By::Upstream;
        self.upstream_status = Some(status);
    }

    /// Wraps the response body; the record is written when that body ends.
    pub fn finish(self: Box<Self>, body: Body) -> Observed {
        Observed { inner: body, exchange: self }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        // Dropped before a response existed: the caller went away first
        // (nginx's 499, "client closed request").
        if self.status == 0 {
            self.status = 499;
            self.code = Some("caller_gone");
        }
        let duration = self.started.elapsed();
        let route = Label(self.route.clone().unwrap_or_else(none));
        let client = Label(self.client.clone().unwrap_or_else(none));
        let metrics = &self.gate.metrics;
        metrics.request((&route, &client), self.status, duration, self.upstream_latency);
        if self.body_failed {
            metrics.upstream_error("body");
        }
        if let (Some(code), By::Upstream) = (self.would_refuse, self.by) {
            metrics.shadow_refusal(&route, &client, code);
        }
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let peer = peer_text(self.peer);
        let graphql = self.graphql.as_ref();
        let line = AccessLine {
            request_id: self.request_id.to_str().unwrap_or_default(),
            method: self.method.as_str(),
            route: &route.0,
            path: self.path.as_deref(),
            client: &client.0,
            peer: &peer,
            user_agent: self.user_agent.as_ref().and_then(|v| v.to_str().ok()),
            status: self.status,
            by: match self.by {
                By::Mmgate => "mmgate",
                By::Upstream => "upstream",
            },
            code: self.code,
            limit: self.limit.as_deref(),
            upstream_status: self.upstream_status,
            operation: graphql.and_then(|g| g.kind).map(|k| k.as_str()),
            operation_name: graphql.and_then(|g| g.name.as_deref()),
            operations: graphql.map(|g| g.operations),
            depth: graphql.map(|g| u64::from(g.depth)),
            nodes: graphql.map(|g| g.nodes),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out,
            duration_us: micros(duration),
            upstream_latency_us: self.upstream_latency.map(micros),
            body_cut: self.body_failed,
            cache: self.served.map(Served::as_str),
            wait_us: self.waited.map(micros),
            scope: self.scope.as_deref(),
            would_refuse: self.would_refuse,
        };
        line.log();
        if let Some(span) = self.span.take() {
            span::record(&span, &line);
        }
    }
}

/// The label of a request with no route or no client: one shared value, so
/// that its metrics series are found by identity like the others.
fn none() -> Arc<str> {
    static NONE: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| "none".into());
    Arc::clone(&NONE)
}

/// The peer as the access line shows it: `address:port`, `uid:N` or `unix`.
/// IPv4 is written digit by digit: `SocketAddr`'s `Display` goes through
/// the formatting machinery and costs ten times as much.
fn peer_text(peer: Peer) -> String {
    match peer {
        Peer::Tcp(std::net::SocketAddr::V4(addr)) => {
            let mut text = String::with_capacity(21);
            let mut digits = itoa::Buffer::new();
            for (i, octet) in addr.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    text.push('.');
                }
                text.push_str(digits.format(octet));
            }
            text.push(':');
            text.push_str(digits.format(addr.port()));
            text
        }
        Peer::Tcp(addr) => addr.to_string(),
        Peer::Unix { uid: Some(uid) } => format!("uid:{uid}"),
        Peer::Unix { uid: None } => "unix".to_owned(),
    }
}

pin_project_lite::pin_project! {
    /// A response body that reports to its exchange.
    pub struct Observed {
        #[pin]
        inner: Body,
        exchange: Box<Exchange>,
    }
}

impl HttpBody for Observed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.exchange.bytes_out += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(_))) => this.exchange.body_failed = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
