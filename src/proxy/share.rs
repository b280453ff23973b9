//! Step 4 for reads others may share (DESIGN.md, "Saving the company's
//! quota"): after the caller's own client limit, the answer cache, then a
//! read already in flight, and only then — for the one caller that leads —
//! the key's limits and the upstream call.
//!
//! The leader's upstream call runs in its caller's task, and moves to a task
//! of its own if that caller leaves: the others waiting on it still get its
//! answer (Apollo Router's deduplication cancels them all). It gives up only
//! while nobody waits on it and it has not been sent yet.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::{header, HeaderMap, Method};
use http_body_util::BodyExt;
use tokio::sync::oneshot;

use super::upstream::{Call, Called};
use crate::access::Exchange;
use crate::error::ProxyError;
use crate::keys::Fingerprint;
use crate::runtime::Route;
use crate::share::{Arrival, Flight, Outcome, ReadKey, Served, Shares, Stored};

/// A read others may share: what it is compared by, and whether its caller
/// asked not to be served from the cache (`Cache-Control: no-cache`).
pub(super) struct Read {
    key: ReadKey,
    bypass: bool,
}

/// Whether a request of `method` with `headers` on `route` is a read others
/// may share, before its body is read (a GraphQL request also needs every
/// operation to be a query).
pub(super) fn may_share(route: &Route, method: &Method, headers: &HeaderMap) -> bool {
    let read_method = match route.spec.kind {
        crate::config::RouteKind::Graphql(_) => true,
        crate::config::RouteKind::Rest => {
            *method == Method::GET || *method == Method::HEAD || (*method == Method::POST && route.spec.read_only)
        }
    };
    // A partial or conditional answer is the caller's own.
    read_method && !headers.contains_key(header::RANGE) && !headers.keys().any(|name| name.as_str().starts_with("if-"))
}

/// What a read is: one per GraphQL batch item (its normalised document and
/// other parameters), or the REST request itself.
pub(super) enum Asks<'a> {
    Graphql(&'a [(Box<str>, Box<str>)]),
    Rest { method: &'a Method, path: &'a str, query: Option<&'a str>, body: &'a [u8] },
}

impl Read {
    /// The read `asks` on `route` with the key `(name, fingerprint)`.
    pub(super) fn new(route: &Route, key: (&str, Fingerprint), headers: &HeaderMap, asks: Asks<'_>) -> Self {
        let values =
            |name: header::HeaderName| move || headers.get_all(&name).into_iter().map(http::HeaderValue::as_bytes);
        let mut builder = ReadKey::builder()
            .field(route.spec.pattern.as_bytes())
            .field(key.0)
            .field(key.1.bytes())
            .joined(values(header::ACCEPT))
            .joined(values(header::ACCEPT_ENCODING));
        builder = match asks {
            Asks::Graphql(items) => items
                .iter()
                .fold(builder.field("graphql"), |b, (doc, params)| b.field(doc.as_bytes()).field(params.as_bytes())),
            Asks::Rest { method, path, query, body } => {
                builder.field("rest").field(method.as_str()).field(path).optional(query).field(body)
            }
        };
        let bypass = headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|d| d.trim().eq_ignore_ascii_case("no-cache"))));
        Self { key: builder.build(), bypass }
    }
}

/// What the leader's caller gets back from the task that called the upstream.
enum Led {
    /// The answer, whole (also given to everyone waiting).
    Answer(Arc<Stored>, Called),
    /// The answer streamed to the leader alone (nobody else waited, or too large to share).
    Stream(Called),
    /// Refused or failed (everyone waiting gets the same).
    Failed(ProxyError),
}

/// Serves a read: from the cache, from a read in flight, or by leading one.
/// The request's body was read whole (`body`).
pub(super) async fn serve(
    read: Read,
    route: &Route,
    call: Call,
    (parts, body): (Parts, Bytes),
    exchange: &mut Exchange,
) -> Result<Response, ProxyError> {
    let shares = Arc::clone(call.runtime.shares());
    let cached_route = route.spec.cache_ttl.is_some();
    let pattern = &route.spec.pattern;
    if cached_route && !read.bypass {
        if let Some(hit) = shares.cached(&read.key, Instant::now()) {
            exchange.metrics().avoided(pattern, "cache");
            return Ok(served(exchange, &hit, Served::Hit, cached_route));
        }
    }
    let flight = if read.bypass {
        None
    } else {
        match shares.arrive(read.key.clone()) {
            Arrival::Lead(flight) => Some(flight),
            Arrival::Join(joined) => match joined.outcome().await {
                Outcome::Answer(stored) => {
                    exchange.metrics().avoided(pattern, "coalesced");
                    return Ok(served(exchange, &stored, Served::Coalesced, cached_route));
                }
                Outcome::Failed(e) => return Err(e),
                // The answer could not be shared: this caller makes its own call.
                Outcome::Alone => {
                    let request = Request::from_parts(parts, Body::from(body));
                    return super::admit::direct(&call, request, exchange).await;
                }
            },
        }
    };
    let served_as = if read.bypass { Served::Bypass } else { Served::Miss };
    let keep = Keep {
        key: read.key,
        ttl: route.spec.cache_ttl,
        graphql: matches!(route.spec.kind, crate::config::RouteKind::Graphql(_)),
        max_entry: shares.settings().max_entry_bytes,
    };
    // Dropped with this future, `_present` tells the call its leader left.
    let (present, _present) = oneshot::channel();
    let led = Handoff(Some(Box::pin(lead(shares, flight, call, (parts, body), keep, present)))).await;
    // No answer only once abandoned, which needs this caller gone.
    match led.unwrap_or(Led::Failed(ProxyError::UpstreamUnreachable)) {
        Led::Answer(stored, called) => {
            called.record(exchange);
            Ok(served(exchange, &stored, served_as, cached_route))
        }
        Led::Stream(called) => {
            exchange.served = cached_route.then_some(served_as);
            let mut response = called.streamed_to(exchange);
            if cached_route {
                response
                    .headers_mut()
                    .insert(crate::share::X_MMGATE_CACHE.clone(), http::HeaderValue::from_static(served_as.as_str()));
            }
            Ok(response)
        }
        Led::Failed(e) => Err(e),
    }
}

fn served(exchange: &mut Exchange, stored: &Stored, served: Served, cached_route: bool) -> Response {
    // On routes without a cache, only sharing is worth logging.
    if cached_route || served == Served::Coalesced {
        exchange.served = Some(served);
    }
    if exchange.upstream_latency.is_none() {
        // Another caller's upstream answer, given as is.
        exchange.answered(stored.status.as_u16());
    }
    stored.response(served, cached_route, Instant::now())
}

/// What the leader's task needs to keep an answer.
struct Keep {
    key: ReadKey,
    ttl: Option<std::time::Duration>,
    graphql: bool,
    max_entry: u64,
}

/// A future that, dropped before it is done, finishes in a task of its own.
struct Handoff<F: Future + Send + 'static>(Option<Pin<Box<F>>>)
where
    F::Output: Send;

impl<F: Future + Send + 'static> Future for Handoff<F>
where
    F::Output: Send,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(work) = self.0.as_mut() else { return Poll::Pending };
        let done = std::task::ready!(work.as_mut().poll(cx));
        self.0 = None;
        Poll::Ready(done)
    }
}

impl<F: Future + Send + 'static> Drop for Handoff<F>
where
    F::Output: Send,
{
    fn drop(&mut self) {
        if let (Some(work), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(work);
        }
    }
}

/// The leader's upstream call: admitted by the key's limits, sent, and its
/// answer shared with everyone waiting (and cached, when it may be). `None`
/// when it was given up: its leader and every follower had left.
async fn lead(
    shares: Arc<Shares>,
    flight: Option<Arc<Flight>>,
    call: Call,
    (parts, body): (Parts, Bytes),
    keep: Keep,
    mut leader: oneshot::Sender<()>,
) -> Option<Led> {
    let finish = |outcome: Outcome| {
        if let Some(flight) = &flight {
            shares.finish(flight, outcome);
        }
    };
    let admitted = {
        let admit = call.admit();
        tokio::pin!(admit);
        loop {
            tokio::select! {
                admitted = &mut admit => break admitted,
                () = everyone_left(&mut leader, flight.as_deref()) => {
                    // Nobody waits any more and nothing was sent: give up.
                    if flight.as_deref().is_none_or(|f| shares.abandon_if_unwatched(f)) {
                        return None;
                    }
                }
            }
        }
    };
    let admission = match admitted {
        Ok(admission) => admission,
        Err(e) => {
            finish(Outcome::Failed(e.clone()));
            return Some(Led::Failed(e));
        }
    };
    let called = match call.send(Request::from_parts(parts, Body::from(body)), admission).await {
        Ok(called) => called,
        Err(e) => {
            finish(Outcome::Failed(e.clone()));
            return Some(Led::Failed(e));
        }
    };

    // Nobody to share with and nothing to keep: stream it to the leader.
    let followers = flight.as_ref().map_or(0, |f| f.followers());
    let declared = called.response.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
    if (followers == 0 && keep.ttl.is_none()) || declared.is_some_and(|len: u64| len > keep.max_entry) {
        finish(Outcome::Alone);
        return Some(Led::Stream(called));
    }
    let Called { response, admission, latency } = called;
    let (parts, body) = response.into_parts();
    match collect_up_to(body, keep.max_entry).await {
        Collected::Whole(bytes) => {
            let stored = Arc::new(Stored::new(&parts, bytes, Instant::now(), keep.ttl, keep.graphql));
            if stored.cacheable_answer() {
                shares.keep(keep.key, Arc::clone(&stored));
            }
            finish(Outcome::Answer(Arc::clone(&stored)));
            let response = Response::from_parts(parts, Body::empty());
            Some(Led::Answer(stored, Called { response, admission, latency }))
        }
        Collected::TooLarge(body) => {
            finish(Outcome::Alone);
            let response = Response::from_parts(parts, body);
            Some(Led::Stream(Called { response, admission, latency }))
        }
        Collected::Failed => {
            let e = ProxyError::UpstreamUnreachable;
            finish(Outcome::Failed(e.clone()));
            Some(Led::Failed(e))
        }
    }
}

/// Resolves when the leader's caller and every follower have left.
async fn everyone_left(leader: &mut oneshot::Sender<()>, flight: Option<&Flight>) {
    leader.closed().await;
    if let Some(flight) = flight {
        flight.unwatched().await;
    }
}

/// A response body read up to a bound.
enum Collected {
    Whole(Bytes),
    /// Over the bound: what was read, then the rest, as one body.
    TooLarge(Body),
    Failed,
}

async fn collect_up_to(mut body: Body, max: u64) -> Collected {
    let mut read = BytesMut::new();
    loop {
        match body.frame().await {
            None => return Collected::Whole(read.freeze()),
            Some(Err(_)) => return Collected::Failed,
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else { continue };
                read.extend_from_slice(&data);
                if read.len() as u64 > max {
                    let head = futures_util::stream::once(std::future::ready(Ok::<_, axum::Error>(read.freeze())));
                    let rest = body.into_data_stream();
                    return Collected::TooLarge(Body::from_stream(futures_util::StreamExt::chain(head, rest)));
                }
            }
        }
    }
}
