//! Step 4, the limits, and where the request goes next: the client's own
//! limit for everyone; then a read others may share goes to `share`, and
//! anything else straight to the key's limits and the upstream.

use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;

use super::share;
use super::upstream::Call;
use crate::access::Exchange;
use crate::client::Client;
use crate::error::ProxyError;
use crate::limit::{Charge, LimitError, SharedCheck, SharedRefusal};
use crate::policy::Mode;
use crate::runtime::{Route, Runtime};

/// Where a request goes after its client's limit.
pub(super) enum Next {
    /// Nobody shares it: straight to the key's limits and the upstream.
    Direct(Request),
    /// A read, body read whole (and, on GraphQL, what each batch item asks).
    Shared(http::request::Parts, Bytes, Option<Vec<(Box<str>, Box<str>)>>),
}

/// A refusal by a policy in `mode`: in shadow mode, recorded and let
/// through; enforced, returned.
pub(super) fn shadow(mode: Mode, refusal: ProxyError, exchange: &mut Exchange) -> Result<(), ProxyError> {
    match mode {
        Mode::Shadow => {
            exchange.would_refuse(&refusal);
            Ok(())
        }
        Mode::Enforce => Err(refusal),
    }
}

/// The client's own limit, `cost` units, refusing at once (or, in shadow
/// mode, recording). Returns what it charged, to give back if a later limit refuses.
pub(super) fn client(
    runtime: &Runtime,
    client: &Client,
    (cost, mode): (u32, Mode),
    exchange: &mut Exchange,
) -> Result<Charge, ProxyError> {
    let admitted = runtime.limiters().admit_client(client.id, cost, mode).map_err(|e| {
        if let LimitError::Refused(r) = &e {
            exchange.metrics().refused(r.kind.as_str(), &r.name);
        }
        ProxyError::from(e)
    })?;
    if let Some(would) = admitted.shadowed {
        exchange.would_refuse(&would.into());
    }
    Ok(admitted.charge)
}

/// A read others may share: the client's limit across replicas, then the
/// cache, a read in flight, or the upstream (`share`).
pub(super) async fn shared_read(
    call: &Call,
    route: &Route,
    (parts, body): (http::request::Parts, Bytes),
    graphql_read: Option<Vec<(Box<str>, Box<str>)>>,
    (path, query): (&str, Option<&str>),
    exchange: &mut Exchange,
) -> Result<Response, ProxyError> {
    let runtime = &call.runtime;
    match runtime.limiters().admit_shared((Some(call.client), None), call.cost, call.mode).await {
        Ok(SharedCheck::Passed) => {}
        Ok(SharedCheck::Shadowed(r)) => exchange.would_refuse(&r.into()),
        Ok(SharedCheck::WithoutRedis) => exchange.metrics().shared_unavailable(),
        Err(SharedRefusal::Limit(r)) => {
            exchange.metrics().refused(r.kind.as_str(), &r.name);
            return Err(r.into());
        }
        Err(SharedRefusal::Unavailable) => {
            exchange.metrics().shared_unavailable();
            return Err(ProxyError::LimiterUnavailable);
        }
    }
    let slot = runtime.keys().slot(route.spec.key).ok_or(ProxyError::KeyUnavailable)?;
    let key = slot.current().ok_or(ProxyError::KeyUnavailable)?;
    let asks = match &graphql_read {
        Some(items) => share::Asks::Graphql(items),
        None => share::Asks::Rest { method: &parts.method, path, query, body: &body },
    };
    let read = share::Read::new(route, (slot.name(), key.fingerprint()), &parts.headers, asks);
    let call = Call { shared_client: false, ..call.clone() };
    share::serve(read, route, call, (parts, body), exchange).await
}

/// A request nobody shares: the key's limits, then the upstream.
pub(super) async fn direct(call: &Call, request: Request, exchange: &mut Exchange) -> Result<Response, ProxyError> {
    let admission = call.admit().await?;
    let called = call.send(request, admission).await?;
    Ok(called.streamed_to(exchange))
}
