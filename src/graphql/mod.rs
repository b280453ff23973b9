//! GraphQL documents and their carriers, as pure functions and types: what
//! a document would do (`analyse`), how a request carries it (`request`),
//! and a per-route cache of analyses (`cache`). The request path
//! (`proxy::graphql`) reads the body, runs these and asks `policy`.

pub mod analyse;
mod cache;
pub mod request;

use std::sync::Arc;

pub use analyse::{analyse, AnalysisError, Limits, Operation, OperationKind, ShapeLimit};
pub use cache::{Analysed, AnalysisCache};
pub use request::{CarrierError, GraphqlRequest};

/// What the access log reports about a checked GraphQL request: the
/// operation that will run (of the first batch item), and how many the
/// request carries.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// The type of the selected operation.
    pub kind: Option<OperationKind>,
    /// Its name, when it has one.
    pub name: Option<String>,
    /// Operations in the request: one per batch item.
    pub operations: u64,
    /// The selected operation's depth, as MachineMetrics counts it.
    pub depth: u32,
    /// The selected operation's nodes, as MachineMetrics counts them.
    pub nodes: u64,
}

/// Documents above this size that were not analysed before are analysed on
/// the blocking pool: at about 0.15 µs a byte (release build, the worst
/// shapes of `benches/support/graphql_shapes.rs`), 32 KiB is some 5 ms that
/// would otherwise hold up every other request on the same worker.
const OFFLOAD_BYTES: usize = 32 * 1024;

/// `item` analysed under `limits`, from `cache` when it was seen before.
pub async fn analyse_cached(cache: &Arc<AnalysisCache>, limits: &Limits, item: &GraphqlRequest) -> Analysed {
    let name = item.operation_name.as_deref();
    if item.query.len() <= OFFLOAD_BYTES {
        return cache.analyse(&item.query, name, limits);
    }
    if let Some(hit) = cache.cached(&item.query, name) {
        return hit;
    }
    let (cache, limits) = (Arc::clone(cache), limits.clone());
    let (query, name) = (item.query.clone(), item.operation_name.clone());
    tokio::task::spawn_blocking(move || cache.analyse(&query, name.as_deref(), &limits))
        .await
        .unwrap_or_else(|_| Err(AnalysisError::Malformed("the document could not be analysed".into())))
}
