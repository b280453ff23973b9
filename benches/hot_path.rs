//! Criterion benchmarks of the per-request work mmgate adds: the real
//! request path up to the upstream call (`mmgate::app`), client lookup,
//! GraphQL analysis and its worst shapes.
//! Run: `cargo bench --bench hot_path`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http::{HeaderMap, HeaderValue};
use http::{Method, Request};
use http_body_util::Full;
use mmgate::config::Settings;
use mmgate::graphql::{analyse, request, AnalysisCache, Limits};
use mmgate::{app, Gate, Runtime};
use sha2::Digest;
use tower::ServiceExt;

/// A typical dashboard query, about 1 KB.
fn query_1k() -> String {
    let q = r#"query MachineUtilization($start: timestamptz!, $end: timestamptz!, $group: String) {
  machines(where: {_and: [{decommissionedAt: {_is_null: true}}, {machineGroup: {name: {_eq: $group}}}]}, order_by: {name: asc}) {
    machineRef
    name
    machineGroup { name }
    activities(where: {startAt: {_gte: $start}, endAt: {_lte: $end}}, order_by: {startAt: asc}, limit: 500) {
      activityRef
      startAt
      endAt
      state
      activitySet { activitySetRef name }
    }
    operatorRuns(where: {startAt: {_gte: $start}}, limit: 50) {
      operatorRunRef
      startAt
      endAt
      operator { name }
    }
    ...MachineStatus
  }
}
fragment MachineStatus on Machine {
  status { state since reason { name category } }
  currentJob { jobRef name partCount expectedPartCount }
  latestAnnotation { annotationRef message createdAt author { name } }
  downtime(where: {reason: {category: {_neq: "planned"}}}) { durationSeconds reason { name } }
}
"#;
    assert!((950..1200).contains(&q.len()), "{}", q.len());
    q.to_owned()
}

/// A large generated query, about 20 KB: many aliased sections and fragments.
fn query_20k() -> String {
    let mut q = String::from("query Big($start: timestamptz!) {\n");
    let mut i = 0;
    while q.len() < 19_000 {
        q.push_str(&format!(
            "  m{i}: machines(where: {{machineRef: {{_eq: {i}}}}}) {{ machineRef name ...MachineFields activities(where: {{startAt: {{_gte: $start}}}}, limit: 10) {{ startAt endAt state }} }}\n"
        ));
        i += 1;
    }
    q.push_str("}\nfragment MachineFields on Machine { machineGroup { name } status { state since } }\n");
    q
}

fn graphql(c: &mut Criterion) {
    let limits = Limits { max_aliases: 1_000, max_root_fields: 1_000, ..Limits::default() };
    let mut group = c.benchmark_group("graphql");
    for (name, query) in [("analyse_1k", query_1k()), ("analyse_20k", query_20k())] {
        group.throughput(Throughput::Bytes(query.len() as u64));
        group.bench_function(name, |b| b.iter(|| analyse(black_box(&query), None, &limits).map(|ops| ops.len())));
    }
    let body = serde_json::json!({ "query": query_1k(), "variables": { "start": "2024-01-01T00:00:00Z", "end": "2024-01-02T00:00:00Z" } })
        .to_string();
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let cache = AnalysisCache::default();
    for (name, query) in [("cached_1k", query_1k()), ("cached_20k", query_20k())] {
        group.throughput(Throughput::Bytes(query.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| cache.analyse(black_box(&query), None, &limits).map(|a| a.operations.len()))
        });
    }
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("json_body_1k_then_cached", |b| {
        b.iter(|| {
            let items = request::from_post(&headers, None, black_box(body.as_bytes())).map_err(|e| e.to_string())?;
            cache.analyse(&items[0].query, None, &limits).map(|a| a.operations.len()).map_err(|e| e.to_string())
        })
    });
    group.bench_function("json_body_1k_then_analyse", |b| {
        b.iter(|| {
            let items = request::from_post(&headers, None, black_box(body.as_bytes())).map_err(|e| e.to_string())?;
            analyse(&items[0].query, None, &limits).map(|ops| ops.len()).map_err(|e| e.to_string())
        })
    });
    group.finish();
}

#[path = "support/graphql_shapes.rs"]
mod graphql_shapes;

/// The worst documents we can build, under the default limits: DESIGN
/// allows 50 ms of CPU for any document up to `max_body`.
fn graphql_worst(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("graphql_worst");
    group.sample_size(20);
    for (name, doc) in graphql_shapes::worst_shapes() {
        // The operation many_operations selects; the others have one.
        let operation = (name == "many_operations").then_some(graphql_shapes::MANY_OPERATIONS_SELECTED);
        group.throughput(Throughput::Bytes(doc.len() as u64));
        group.bench_function(name, |b| b.iter(|| analyse(black_box(&doc), operation, &limits).map(|ops| ops.len())));
    }
    group.finish();
}

const CONFIG: &str = r#"
[upstream]
url = "http://127.0.0.1:9"

[keys.reporting]
env = "MM_BENCH_KEY"
scopes = ["reporting", "erp"]
limit = { per_second = 1000000000, burst = 1000000000 }
budget = "acme"

[budgets.acme]
limit = { per_second = 1000000000, burst = 1000000000 }

[[routes]]
path = "/graphql"
key = "reporting"
scope = "reporting"
kind = "graphql"

[[routes]]
path = "/reports/*"
key = "reporting"
scope = "reporting"

[[routes]]
path = "/erp/jobdispatch/*"
key = "reporting"
scope = "erp"
"#;

/// The real request path (`mmgate::app`), up to the upstream call: ten token
/// clients, and client `c7` allowed one request a minute, so that after the
/// first, each request is normalised, routed, identified, scope-checked (and
/// on /graphql read and analysed), then refused by its limit: everything
/// mmgate does before forwarding, the access record and the 429 included.
fn request_path(c: &mut Criterion) {
    std::env::set_var("MM_BENCH_KEY", "bench-key");
    let mut config = CONFIG.to_owned();
    for i in 0..10 {
        let hash = hex::encode(sha2::Sha256::digest(format!("token-{i}").as_bytes()));
        let limit =
            if i == 7 { "{ per_minute = 1, burst = 1 }" } else { "{ per_second = 1000000000, burst = 1000000000 }" };
        config.push_str(&format!(
            "[clients.c{i}]\ntoken_sha256 = \"{hash}\"\nscopes = [\"reporting\"]\nlimit = {limit}\n"
        ));
    }
    let settings = Settings::from_toml(&config).expect("bench config");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let gate = runtime.block_on(async { Gate::new(Runtime::load(settings).expect("keys")) });
    let app = app(gate);
    let request = |method: Method, target: &str, body: &str| {
        Request::builder()
            .method(method)
            .uri(target)
            .header("authorization", "Bearer token-7")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .expect("request")
    };
    let status = |req| runtime.block_on(app.clone().oneshot(req)).map(|r| r.status().as_u16()).unwrap_or(0);
    // The one request the limit allows goes to the (absent) upstream.
    status(request(Method::GET, "/reports/production", ""));

    let mut group = c.benchmark_group("request_path");
    group.bench_function("rest_get_to_the_limit", |b| {
        b.iter(|| assert_eq!(status(request(Method::GET, black_box("/reports/production"), "")), 429))
    });
    group.bench_function("rest_get_dotted_path_to_the_limit", |b| {
        b.iter(|| assert_eq!(status(request(Method::GET, black_box("/reports/./x/../production"), "")), 429))
    });
    let body = serde_json::json!({ "query": query_1k(), "variables": { "start": "2024-01-01T00:00:00Z" } }).to_string();
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("graphql_1k_checked_to_the_limit", |b| {
        b.iter(|| assert_eq!(status(request(Method::POST, "/graphql", black_box(&body))), 429))
    });
    group.finish();

    // Identity alone: SHA-256 of the token and ten constant-time comparisons.
    let settings = Settings::from_toml(&config).expect("bench config");
    let mut headers = HeaderMap::new();
    headers.insert("authorization", HeaderValue::from_static("Bearer token-7"));
    let peer = mmgate::Peer::Tcp(([127, 0, 0, 1], 1).into());
    c.bench_function("identify_among_10_clients", |b| {
        b.iter(|| settings.clients().identify(black_box(&headers), peer).map(|c| c.scopes).ok())
    });
}

criterion_group!(benches, graphql, graphql_worst, request_path);
criterion_main!(benches);
