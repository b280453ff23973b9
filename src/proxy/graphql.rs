//! Step 3 on GraphQL routes: after the caller holds the route's scope, the
//! body is read whole (bounded by `max_body`), every operation of every
//! batch item is analysed, and `policy::graphql` decides. The caller's
//! original bytes are what is forwarded: nothing is re-serialised.

use axum::body::Body;
use axum::extract::Request;
use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;

use crate::body::caller_fault;
use crate::error::ProxyError;
use crate::graphql::{analyse_cached, request, AnalysisCache, OperationKind, Summary};
use crate::policy::{self, Caller, GraphqlRule, ScopeNames};

/// A GraphQL request that passed the checks.
pub(super) struct Checked {
    /// The caller's request, body restored.
    pub request: Request,
    /// The selected operation, for the log and the limits.
    pub summary: Summary,
    /// When every operation is a query, what the request asks, per batch
    /// item: its normalised document and its other parameters.
    pub read: Option<Vec<(Box<str>, Box<str>)>>,
}

/// Reads and checks a GraphQL request.
pub(super) async fn check(
    request: Request,
    rule: &GraphqlRule,
    cache: &std::sync::Arc<AnalysisCache>,
    caller: Caller<'_>,
    scopes: &ScopeNames,
) -> Result<Checked, ProxyError> {
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
        analysed.push(analyse_cached(cache, &rule.limits, item).await?);
    }
    policy::graphql(analysed.iter().flat_map(|a| a.operations.iter()), is_get, caller, rule, scopes)?;

    let selected = items.first().zip(analysed.first()).and_then(|(item, a)| match &item.operation_name {
        Some(name) => a.operations.iter().find(|op| op.name.as_deref() == Some(name.as_str())),
        None => a.operations.first(),
    });
    let summary = Summary {
        kind: selected.map(|op| op.kind),
        name: selected.and_then(|op| op.name.clone()),
        operations: items.len() as u64,
        depth: selected.map_or(0, |op| op.depth),
        nodes: selected.map_or(0, |op| op.nodes),
    };
    let read = analysed
        .iter()
        .all(|a| a.operations.iter().all(|op| op.kind == OperationKind::Query))
        .then(|| items.into_iter().zip(&analysed).map(|(item, a)| (a.normalized.clone(), item.params)).collect());
    Ok(Checked { request: Request::from_parts(parts, Body::from(bytes)), summary, read })
}

/// Reads the whole body (already limited to `max_body` by `CallerBody`).
pub(super) async fn read_body(body: Body) -> Result<Bytes, ProxyError> {
    match body.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(caller_fault(&e)
            .map_or_else(|| ProxyError::BadRequest("the request body could not be read".into()), ProxyError::from)),
    }
}
