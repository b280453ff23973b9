//! GraphQL routes: part of step 3 of the request path. After the caller is
//! identified and holds the route's scope, the body is read (bounded by
//! `max_body`), every operation of every batch item is analysed, and
//! `policy::graphql` decides. The caller's original bytes are what is
//! forwarded: nothing is re-serialised. Analyses are cached per route by
//! document text, as tools send the same few documents again and again.

pub mod analyse;
mod cache;
pub mod request;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;

pub use analyse::{analyse, AnalysisError, Limits, Operation, OperationKind};
pub use cache::AnalysisCache;
pub use request::GraphqlRequest;

use crate::body::caller_fault;
use crate::client::Client;
use crate::error::ProxyError;
use crate::policy::{self, ScopeNames};
use crate::route::GraphqlRoute;

/// What the access log reports about a checked GraphQL request.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// The type of the (first) selected operation.
    pub kind: Option<OperationKind>,
    /// Its name, when it has one.
    pub name: Option<String>,
}

/// Reads and checks a GraphQL request; returns it, body restored, with a summary.
pub async fn check(
    request: Request,
    route: &GraphqlRoute,
    client: &Client,
    scopes: &ScopeNames,
) -> Result<(Request, Summary), ProxyError> {
    let is_get = match *request.method() {
        Method::GET => true,
        Method::POST => false,
        _ => return Err(ProxyError::MethodNotAllowed("GraphQL routes accept GET and POST only")),
    };
    let (parts, body) = request.into_parts();
    let bytes = read_body(body).await?;
    let query_string = parts.uri.query();
    let items = if is_get {
        request::from_get(query_string, &bytes)?
    } else {
        request::from_post(&parts.headers, query_string, &bytes)?
    };

    let mut analysed = Vec::with_capacity(items.len());
    for item in &items {
        let operations = match analyse_item(route, item).await {
            Ok(operations) => operations,
            Err(e @ AnalysisError::Introspection) => return Err(ProxyError::ScopeDenied(e.to_string())),
            Err(e) => return Err(ProxyError::BadGraphql(e.to_string())),
        };
        analysed.push(operations);
    }
    policy::graphql(analysed.iter().flat_map(|ops| ops.iter()), is_get, client, route, scopes)?;

    let summary = items
        .first()
        .zip(analysed.first())
        .and_then(|(item, ops)| {
            let selected = match &item.operation_name {
                Some(name) => ops.iter().find(|op| op.name.as_deref() == Some(name.as_str())),
                None => ops.first(),
            }?;
            Some(Summary { kind: Some(selected.kind), name: selected.name.clone() })
        })
        .unwrap_or_default();
    Ok((Request::from_parts(parts, Body::from(bytes)), summary))
}

/// Documents above this size that were not analysed before are analysed on
/// the blocking pool: at about 0.15 µs a byte (release build, the worst
/// shapes of `benches/support/graphql_shapes.rs`), 32 KiB is some 5 ms that
/// would otherwise hold up every other request on the same worker.
const OFFLOAD_BYTES: usize = 32 * 1024;

async fn analyse_item(route: &GraphqlRoute, item: &GraphqlRequest) -> Result<Arc<[Operation]>, AnalysisError> {
    let name = item.operation_name.as_deref();
    if item.query.len() <= OFFLOAD_BYTES {
        return route.cache.analyse(&item.query, name, &route.limits);
    }
    if let Some(hit) = route.cache.cached(&item.query, name) {
        return hit;
    }
    let (cache, limits) = (Arc::clone(&route.cache), route.limits.clone());
    let (query, name) = (item.query.clone(), item.operation_name.clone());
    tokio::task::spawn_blocking(move || cache.analyse(&query, name.as_deref(), &limits))
        .await
        .unwrap_or_else(|_| Err(AnalysisError::Malformed("the document could not be analysed".into())))
}

/// Reads the whole body (already limited to `max_body` by `CallerBody`).
async fn read_body(body: Body) -> Result<Bytes, ProxyError> {
    match body.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(caller_fault(&e)
            .map_or_else(|| ProxyError::BadRequest("the request body could not be read".into()), ProxyError::from)),
    }
}
