//! The request path, in order. Each step lives in its own module; this file
//! only sequences them, so DESIGN.md's steps read top to bottom here:
//!
//! 0. protocol checks: CONNECT, TRACE and upgrades refused (head limits:
//!    hyper, in `server`)
//! 1. `route`: normalise the path, pick the route (404 before any auth)
//! 2. `client`: who is calling (401)
//! 3. `policy`: may it use this route (403)
//! 4. `limit`: rate limits (429)
//! 5. `forward`: swap credentials, stream to the upstream and back
//! 6. `error`: anything refused above becomes one JSON error response

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};

use crate::access::{Exchange, Observed};
use crate::body::{BoxError, CallerBody};
use crate::client::Peer;
use crate::conn::RequestGuard;
use crate::error::ProxyError;
use crate::forward::{self, Outbound, X_REQUEST_ID};
use crate::keys::{self, KeySlot};
use crate::limit::{Refusal, SharedCheck, SharedRefusal};
use crate::route::{KeyId, RouteKind};
use crate::state::{Gate, Runtime};
use crate::{graphql, limit, policy, route};

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
    let mut exchange = Exchange::begin(&gate, request_id, request.method().clone(), request_guard);
    let runtime = gate.runtime();
    let server = &runtime.settings.server;
    let (count, max_body, idle) = (exchange.bytes_in(), server.max_body, server.body_idle_timeout);
    let request = request.map(|body| Body::new(CallerBody::new(body, count, max_body, idle)));
    let mut response = match checked_forward(&runtime, request, peer, &mut exchange).await {
        Ok(response) => response,
        Err(e) => {
            exchange.failed(&e);
            e.into_response(exchange.request_id.to_str().unwrap_or_default())
        }
    };
    response.headers_mut().insert(X_REQUEST_ID.clone(), exchange.request_id.clone());
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
    let settings = &runtime.settings;
    refuse_tunnels(request.method(), request.headers())?;

    // A cheap clone (shared bytes) so the path can outlive moving the request.
    let uri = request.uri().clone();
    let path = route::normalise(uri.path())?;
    let route = settings.routes.find(&path).ok_or(ProxyError::NoRoute)?;
    exchange.route = Some(Arc::clone(&route.pattern));

    let client = settings.clients.identify(request.headers(), peer)?;
    exchange.client = Some(Arc::clone(&client.name));

    policy::require(client.scopes, route.scope, &settings.scopes, &format_args!("route `{}`", route.pattern))?;
    let request = match &route.kind {
        RouteKind::Rest => request,
        RouteKind::Graphql(policy) => {
            let (request, summary) = graphql::check(request, policy, client, &settings.scopes).await?;
            exchange.graphql = Some(summary);
            request
        }
    };
    // Before the limits, so that a refused body costs no quota (a GraphQL
    // body was read whole above, within the same limit).
    let max_body = settings.server.max_body;
    if declared_length(request.headers()).is_some_and(|len| len > max_body) {
        return Err(ProxyError::BodyTooLarge { limit: max_body });
    }

    let refused = |r: Refusal| {
        exchange.metrics().refused(r.kind, &r.name);
        ProxyError::from(r)
    };
    let admission = runtime.limiters.admit(client.id, route.key).map_err(refused)?;
    match runtime.limiters.admit_shared(client.id, route.key).await {
        Ok(SharedCheck::Passed) => {}
        Ok(SharedCheck::WithoutRedis) => exchange.metrics().shared_unavailable(),
        Err(SharedRefusal::Limit(r)) => return Err(refused(r)),
        Err(SharedRefusal::Unavailable) => {
            exchange.metrics().shared_unavailable();
            return Err(ProxyError::LimiterUnavailable);
        }
    }

    let key = runtime.keys.slot(route.key).and_then(|slot| slot.current()).ok_or(ProxyError::KeyUnavailable)?;
    let upstream = &settings.upstream;
    let out = Outbound {
        uri: forward::upstream_uri(upstream, &path, uri.query())?,
        authorization: key.authorization(),
        request_id: &exchange.request_id,
        host: upstream.host_header.as_ref(),
    };
    let outbound = forward::upstream_request(request, out);
    let sent = Instant::now();
    // The admission (the key's in-flight permit) is held until the upstream
    // has answered, even if the caller leaves, and then until the response
    // body is done.
    let (response, admission) =
        forward::send(&runtime.upstream, outbound, upstream.timeout, upstream.body_idle_timeout, admission).await?;
    exchange.admission = admission;
    exchange.upstream_latency = Some(sent.elapsed());
    match response.status() {
        StatusCode::UNAUTHORIZED => {
            exchange.metrics().unauthorized(key_name(runtime, route.key));
            key_refused(runtime, route.key);
        }
        status => {
            if status == StatusCode::TOO_MANY_REQUESTS {
                upstream_throttled(runtime, route.key, response.headers());
            }
            if runtime.keys.slot(route.key).is_some_and(KeySlot::record_accepted) {
                tracing::info!(key = key_name(runtime, route.key), "key accepted by the upstream again");
            }
        }
    }
    Ok(response)
}

fn key_name(runtime: &Runtime, key: KeyId) -> &str {
    runtime.settings.keys.get(key).map_or("?", |k| k.name.as_str())
}

/// An upstream 401 means the key may have been rotated or revoked: re-read
/// its source at once (a rotated file is picked up before the next poll),
/// and after several in a row report it `rejected` on `/readyz`.
fn key_refused(runtime: &Arc<Runtime>, key: KeyId) {
    let Some(slot) = runtime.keys.slot(key) else { return };
    let in_a_row = slot.record_unauthorized();
    if in_a_row == keys::REJECTED_AFTER {
        tracing::error!(
            key = slot.name(),
            in_a_row,
            "the upstream refused this key repeatedly: deleted or revoked? /readyz reports it rejected"
        );
    }
    // One re-read at a time: a burst of 401s must not queue a file read each.
    if !slot.begin_reread() {
        return;
    }
    let runtime = Arc::clone(runtime);
    tokio::task::spawn_blocking(move || {
        if let Some(slot) = runtime.keys.slot(key) {
            slot.refresh_and_log("upstream answered 401");
            slot.end_reread();
        }
    });
}

/// An upstream 429 passes through to the caller, and pauses the key (and its
/// budget) so that nobody else's request hits the upstream meanwhile.
fn upstream_throttled(runtime: &Runtime, key: KeyId, headers: &HeaderMap) {
    let retry_after = headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| limit::parse_retry_after(v, std::time::SystemTime::now()));
    if let Some(cooldown) = runtime.limiters.cool_down(key, retry_after) {
        let name = runtime.settings.keys.get(key).map_or("?", |k| k.name.as_str());
        tracing::warn!(
            key = name,
            cooldown_secs = cooldown.as_secs_f64(),
            "upstream answered 429: cooling down this key"
        );
    }
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

/// The caller's `X-Request-Id` when well formed (1 to 128 of `A-Za-z0-9._-`), else a new one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(value) = headers.get(&X_REQUEST_ID) {
        let bytes = value.as_bytes();
        let well_formed = (1..=128).contains(&bytes.len())
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if well_formed {
            return value.clone();
        }
    }
    new_request_id()
}

/// A process-unique id: a random per-process prefix and a counter, cheap and never repeated.
pub fn new_request_id() -> HeaderValue {
    static PREFIX: OnceLock<String> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let mut bytes = [0u8; 6];
        // Uniqueness comes from the counter; a failed random read only makes
        // ids of two processes easier to confuse.
        let _ = getrandom::fill(&mut bytes);
        hex::encode(bytes)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // `{prefix}-{n:08x}`, without `core::fmt` (a tenth of the handler's own work).
    let mut digits = [0u8; 16];
    let _ = hex::encode_to_slice(n.to_be_bytes(), &mut digits);
    let first = digits.iter().take(8).position(|&d| d != b'0').unwrap_or(8);
    let mut id = String::with_capacity(prefix.len() + 1 + 16);
    id.push_str(prefix);
    id.push('-');
    id.extend(digits[first..].iter().map(|&d| char::from(d)));
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_only_when_well_formed() {
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc.DEF_1-2"));
        assert_eq!(request_id(&h), "abc.DEF_1-2");
        for bad in ["", "a b", "a/b", "ü"] {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(bad) {
                h.insert(&X_REQUEST_ID, v);
            }
            assert_ne!(request_id(&h).as_bytes(), bad.as_bytes());
        }
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_str(&"a".repeat(129)).unwrap());
        assert_eq!(request_id(&h).len(), 21);
        assert_ne!(new_request_id(), new_request_id());
        let id = new_request_id();
        let (prefix, n) = id.to_str().unwrap().split_once('-').unwrap();
        assert_eq!((prefix.len(), n.len()), (12, 8), "{id:?}");
        assert!(n.bytes().all(|b| b.is_ascii_hexdigit()), "{id:?}");
    }
}
