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
use crate::graphql::{analyse_cached, request, AnalysisCache, AnalysisError, Limits, OperationKind, Summary};
use crate::policy::{self, Caller, Denied, GraphqlRule, ScopeNames};

/// A GraphQL request that passed the checks.
pub(super) struct Checked {
    /// The caller's request, body restored.
    pub request: Request,
    /// The selected operation, for the log and the limits.
    pub summary: Summary,
    /// When every operation is a query, what the request asks, per batch
    /// item: its normalised document and its other parameters.
    pub read: Option<Vec<(Box<str>, Box<str>)>>,
    /// Whether it carries a mutation (so it used the route's `mutation_scope`).
    pub mutates: bool,
    /// What the operation policy refused, when it runs in shadow mode.
    pub denied: Option<ProxyError>,
}

/// Reads and checks a GraphQL request. With `shadow`, what the operation
/// policy refuses (scopes, fields, introspection, subscriptions) is returned
/// in `denied` instead; the document's shape is always enforced.
pub(super) async fn check(
    request: Request,
    rule: &GraphqlRule,
    cache: &std::sync::Arc<AnalysisCache>,
    (caller, shadow): (Caller<'_>, bool),
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
    let mut denied = None;
    for item in &items {
        match analyse_cached(cache, &rule.limits, item).await {
            Ok(analysis) => analysed.push(analysis),
            // Introspection is the route's policy, not a malformed document.
            Err(e @ AnalysisError::Introspection) if shadow => {
                denied.get_or_insert(ProxyError::from(e));
                let open = Limits { introspection: true, ..rule.limits.clone() };
                analysed.push(AnalysisCache::analyse_once(&item.query, item.operation_name.as_deref(), &open)?);
            }
            Err(e) => return Err(e.into()),
        }
    }
    let operations = analysed.iter().flat_map(|a| a.operations.iter());
    match policy::graphql(operations, is_get, caller, rule, scopes) {
        Ok(()) => {}
        Err(Denied::Scope(message)) if shadow => {
            denied.get_or_insert(ProxyError::ScopeDenied(message));
        }
        Err(e) => return Err(e.into()),
    }

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
    let all_ops = || analysed.iter().flat_map(|a| a.operations.iter());
    let mutates = all_ops().any(|op| op.kind == OperationKind::Mutation);
    let read = all_ops()
        .all(|op| op.kind == OperationKind::Query)
        .then(|| items.into_iter().zip(&analysed).map(|(item, a)| (a.normalized.clone(), item.params)).collect());
    Ok(Checked { request: Request::from_parts(parts, Body::from(bytes)), summary, read, mutates, denied })
}

/// Reads the whole body (already limited to `max_body` by `CallerBody`).
pub(super) async fn read_body(body: Body) -> Result<Bytes, ProxyError> {
    match body.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(caller_fault(&e)
            .map_or_else(|| ProxyError::BadRequest("the request body could not be read".into()), ProxyError::from)),
    }
}
