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

mod app;
mod graphql;
mod request_id;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::{header, HeaderMap, Method, StatusCode};

pub use app::{app, App};
pub use request_id::new_request_id;
use request_id::request_id;

use crate::access::{Exchange, Observed};
use crate::body::{BoxError, CallerBody};
use crate::client::Peer;
use crate::config::RouteKind;
use crate::conn::RequestGuard;
use crate::error::ProxyError;
use crate::forward::{self, Outbound, X_REQUEST_ID};
use crate::gate::Gate;
use crate::limit::{Refusal, SharedCheck, SharedRefusal};
use crate::policy::{self, Caller};
use crate::route;
use crate::runtime::Runtime;

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
    let mut response = match checked_forward(&runtime, request, peer, &mut exchange).await {
        Ok(response) => response,
        Err(e) => {
            exchange.failed(&e);
            e.into_response(&exchange.answer())
        }
    };
    response.headers_mut().insert(X_REQUEST_ID.clone(), exchange.request_id.clone());
    exchange.status = response.status().as_u16();
    // The access log line is written, and the request stops counting as in
    // flight, when the response body is done.
    response.map(|body| exchange.finish(body))
}

async fn checked_forward(
    runtime: &Runtime,
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
    if let RouteKind::Graphql(_) = route.spec.kind {
        exchange.graphql_accept = Some(request.headers().get(header::ACCEPT).cloned());
    }

    // 2. Identify.
    let client = settings.clients().identify(request.headers(), peer)?;
    exchange.client = Some(Arc::clone(&client.name));

    // 3. Scope, and on GraphQL routes every operation.
    let scopes = settings.scopes();
    policy::require(client.scopes, route.spec.scope, scopes, &format_args!("route `{}`", route.spec.pattern))?;
    let request = match (&route.spec.kind, &route.cache) {
        (RouteKind::Graphql(rule), Some(cache)) => {
            let caller = Caller { scopes: client.scopes, graphql_fields: client.graphql_fields.as_deref() };
            let (request, summary) = graphql::check(request, rule, cache, caller, scopes).await?;
            exchange.graphql = Some(summary);
            request
        }
        _ => request,
    };

    // 4. Limits: a body declared too large first, so that it costs no quota
    // (a GraphQL body was read whole above, within the same limit).
    let max_body = settings.server().max_body;
    if declared_length(request.headers()).is_some_and(|len| len > max_body) {
        return Err(ProxyError::BodyTooLarge { limit: max_body });
    }
    let limiters = runtime.limiters();
    let refused = |r: Refusal| {
        exchange.metrics().refused(r.kind.as_str(), &r.name);
        ProxyError::from(r)
    };
    let admission = limiters.admit(client.id, route.spec.key).map_err(refused)?;
    match limiters.admit_shared(client.id, route.spec.key).await {
        Ok(SharedCheck::Passed) => {}
        Ok(SharedCheck::WithoutRedis) => exchange.metrics().shared_unavailable(),
        Err(SharedRefusal::Limit(r)) => return Err(refused(r)),
        Err(SharedRefusal::Unavailable) => {
            exchange.metrics().shared_unavailable();
            return Err(ProxyError::LimiterUnavailable);
        }
    }

    // 5. Forward with the route's key. The admission (the key's in-flight
    // permit) is held until the upstream has answered, even if the caller
    // leaves, and then until the response body is done.
    let slot = runtime.keys().slot(route.spec.key).ok_or(ProxyError::KeyUnavailable)?;
    let key = slot.current().ok_or(ProxyError::KeyUnavailable)?;
    let upstream = settings.upstream();
    let out = Outbound {
        uri: forward::upstream_uri(upstream, &path, uri.query())?,
        authorization: key.authorization(),
        request_id: &exchange.request_id,
        host: upstream.host_header.as_ref(),
    };
    let sent = Instant::now();
    let outbound = forward::upstream_request(request, out);
    let (response, admission) =
        forward::send(runtime.upstream(), outbound, upstream.timeout, upstream.body_idle_timeout, admission).await?;
    exchange.admission = admission;
    exchange.upstream_latency = Some(sent.elapsed());
    exchange.answered(response.status().as_u16());

    // What the answer says about the key and the company's quota.
    if response.status() == StatusCode::UNAUTHORIZED {
        exchange.metrics().unauthorized(runtime.key_name(route.spec.key));
    }
    if response.status() == StatusCode::TOO_MANY_REQUESTS {
        limiters.upstream_throttled(route.spec.key, response.headers());
    }
    slot.answered(response.status());
    Ok(response)
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
