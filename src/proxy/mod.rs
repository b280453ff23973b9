//! The request path, in order. Each step lives in its own module; this file
//! only sequences them, so DESIGN.md's steps read top to bottom in
//! `checked_forward`:
//!
//! 0. protocol checks: CONNECT, TRACE and upgrades refused (the head limits
//!    are hyper's, in `server`)
//! 1. `route`: normalise the path, pick the route (404 before any auth)
//! 2. `client`: who is calling (401)
//! 3. `policy`: may it use this route (403); on GraphQL routes, every
//!    operation (`graphql` here: read, analyse, decide)
//! 4. `limit`: a declared body too large, then rate limits (413, 429)
//! 5. `forward`: swap credentials, stream to the upstream and back; what the
//!    upstream answered is told to `keys` (401) and `limit` (429)
//! 6. `error`: anything refused above becomes one JSON error response

mod admit;
mod app;
mod graphql;
mod request_id;
mod share;
mod upstream;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method};
use tracing::Instrument;

pub use app::{app, App};
pub use request_id::new_request_id;
use request_id::request_id;

use crate::access::{Exchange, Observed};
use crate::body::{BoxError, CallerBody};
use crate::client::Peer;
use crate::config::RouteKind;
use crate::conn::RequestGuard;
use crate::error::ProxyError;
use crate::forward::{self, X_REQUEST_ID};
use crate::gate::Gate;
use crate::policy::{self, Caller, Mode};
use crate::route;
use crate::runtime::Runtime;
use crate::share::{Served, X_MMGATE_CACHE};
use admit::Next;
use upstream::Call;

/// The proxy's only handler: every method, every path, straight from hyper
/// (routing follows DESIGN.md's normalisation rules, not a framework's
/// matcher). `peer` is who is connected; `request_guard` keeps the
/// connection's timeouts waiting until the response has ended.
pub async fn handle<B>(
    gate: Arc<Gate>,
    peer: Peer,
    request_guard: Option<RequestGuard>,
    request: http::Request<B>,
) -> http::Response<Observed>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let request_id = request_id(request.headers());
    let mut exchange = Exchange::begin(&gate, request_id, (request.method(), request.headers()), peer, request_guard);
    let runtime = gate.runtime();
    let server = runtime.settings().server();
    let (count, max_body, idle) = (exchange.bytes_in(), server.max_body, server.body_idle_timeout);
    let request = request.map(|body| Body::new(CallerBody::new(body, count, max_body, idle)));
    // With telemetry, the request's span (ended with the exchange, its
    // attributes the access line's); without, none at all.
    let forwarded = if crate::telemetry::traced(request.headers()) {
        let span = crate::telemetry::request_span(request.method(), request.headers());
        exchange.span = Some(span.clone());
        checked_forward(&runtime, request, peer, &mut exchange).instrument(span).await
    } else {
        checked_forward(&runtime, request, peer, &mut exchange).await
    };
    let mut response = match forwarded {
        Ok(response) => response,
        Err(e) => {
            exchange.failed(&e);
            e.into_response(&exchange.answer())
        }
    };
    response.headers_mut().insert(X_REQUEST_ID.clone(), exchange.request_id.clone());
    if exchange.cached_route {
        // Every answer on a cached route says how it was served; one that
        // never reached the cache (a refusal) was not served from it.
        let served = *exchange.served.get_or_insert(Served::Miss);
        response.headers_mut().entry(&X_MMGATE_CACHE).or_insert(HeaderValue::from_static(served.as_str()));
    }
    exchange.status = response.status().as_u16();
    // The access log line is written, and the request stops counting as in
    // flight, when the response body is done.
    response.map(|body| exchange.finish(body))
}

async fn checked_forward(
    runtime: &Arc<Runtime>,
    request: Request,
    peer: Peer,
    exchange: &mut Exchange,
) -> Result<Response, ProxyError> {
    let settings = runtime.settings();
    refuse_tunnels(request.method(), request.headers())?;

    // 1. Route. A cheap clone (shared bytes) so the path can outlive moving the request.
    let uri = request.uri().clone();
    let path = route::normalise(uri.path())?;
    exchange.path = Some(path.as_ref().into());
    let route = runtime.routes().find(&path).ok_or(ProxyError::NoRoute)?;
    exchange.route = Some(Arc::clone(&route.spec.pattern));
    exchange.cached_route = route.spec.cache_ttl.is_some();
    if let RouteKind::Graphql(_) = route.spec.kind {
        exchange.graphql_accept = Some(request.headers().get(header::ACCEPT).cloned());
    }

    // 2. Identify.
    let client = settings.clients().identify(request.headers(), peer)?;
    exchange.client = Some(Arc::clone(&client.name));

    // 3. Scope, and on GraphQL routes every operation. A policy in shadow
    // mode (the client's, else the route's, else the server's) records what
    // it would refuse and lets the request on.
    let mode = client.mode.or(route.spec.mode).unwrap_or(settings.server().mode);
    let scopes = settings.scopes();
    if let Err(denied) =
        policy::require(client.scopes, route.spec.scope, scopes, &format_args!("route `{}`", route.spec.pattern))
    {
        admit::shadow(mode, denied.into(), exchange)?;
    }
    exchange.scope = Some(scopes.name(route.spec.scope).into());
    let shareable = share::may_share(route, request.method(), request.headers());
    let (request, graphql_read) = match (&route.spec.kind, &route.cache) {
        (RouteKind::Graphql(rule), Some(cache)) => {
            let caller = Caller { scopes: client.scopes, graphql_fields: client.graphql_fields.as_deref() };
            let shadow = mode == Mode::Shadow;
            let checked = graphql::check(request, rule, cache, (caller, shadow), scopes).await.inspect_err(|e| {
                if matches!(e, ProxyError::GraphqlLimit(_)) {
                    exchange.metrics().avoided(&route.spec.pattern, "local_refusal");
                }
            })?;
            exchange.graphql = Some(checked.summary);
            if let (true, Some(write)) = (checked.mutates, rule.mutation_scope) {
                exchange.scope = Some(format!("{},{}", scopes.name(route.spec.scope), scopes.name(write)).into());
            }
            if let Some(denied) = checked.denied {
                exchange.would_refuse(&denied);
            }
            (checked.request, checked.read)
        }
        _ => (request, None),
    };

    // 4. Limits: a body declared too large first, so that it costs no quota
    // (a GraphQL body was read whole above, within the same limit).
    let max_body = settings.server().max_body;
    if declared_length(request.headers()).is_some_and(|len| len > max_body) {
        return Err(ProxyError::BodyTooLarge { limit: max_body });
    }
    // A read others may share is read whole now, before it costs anything.
    // (On GraphQL routes, a read is a request whose operations are all queries.)
    let is_read = shareable && (graphql_read.is_some() || matches!(route.spec.kind, RouteKind::Rest));
    let next = if is_read {
        let (parts, body) = request.into_parts();
        let body = graphql::read_body(body).await?;
        Next::Shared(parts, body, graphql_read)
    } else {
        // Never from the cache.
        exchange.served = exchange.cached_route.then_some(Served::Bypass);
        Next::Direct(request)
    };

    // Units: one per GraphQL operation (MachineMetrics counts operations), else 1.
    let cost = exchange.graphql.as_ref().map_or(1, |g| u32::try_from(g.operations).unwrap_or(u32::MAX));
    let charged = admit::client(runtime, client, (cost, mode), exchange)?;
    let call = Call {
        runtime: Arc::clone(runtime),
        gate: Arc::clone(exchange.gate()),
        client: client.id,
        key: route.spec.key,
        cost,
        mode,
        shared_client: matches!(next, Next::Direct(_)),
        uri: forward::upstream_uri(settings.upstream(), &path, uri.query())?,
        request_id: exchange.request_id.clone(),
    };
    let answered = match next {
        Next::Direct(request) => admit::direct(&call, request, exchange).await,
        Next::Shared(parts, body, graphql) => {
            admit::shared_read(&call, route, (parts, body), graphql, (&path, uri.query()), exchange).await
        }
    };
    // Charged only if it passes every limit: a refusal after the client's
    // own limit gives its units back.
    if answered.as_ref().is_err_and(ProxyError::is_limit_refusal) {
        charged.refund();
    }
    answered
}

/// CONNECT and protocol upgrades would turn mmgate into a tunnel it cannot
/// check; TRACE would echo the injected key back to the caller.
fn refuse_tunnels(method: &Method, headers: &HeaderMap) -> Result<(), ProxyError> {
    if method == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed("CONNECT is not supported"));
    }
    if method == Method::TRACE {
        return Err(ProxyError::MethodNotAllowed("TRACE is not supported"));
    }
    let upgrade_requested = headers.contains_key(header::UPGRADE)
        || headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")));
    if upgrade_requested {
        return Err(ProxyError::MethodNotAllowed("protocol upgrades (WebSocket) are not supported"));
    }
    Ok(())
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}
