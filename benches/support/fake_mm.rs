//! A fake MachineMetrics API that enforces its published limits, for the
//! quota tests (`tests/it/quota.rs`) and the dashboard-fleet benchmark
//! (`benches/quota_fleet.rs`):
//!
//! - 1000 GraphQL operations a minute per company (one company here), as a
//!   sliding window: over it, 429 with `Retry-After`;
//! - per operation, depth 5 and 5 nodes, counted as MachineMetrics counts
//!   them: over them, a 200 with GraphQL `errors`, as the real API answers;
//! - a fixed latency (60 ms by default) on every answer.
//!
//! It counts calls, operations and 429s, numbers every answer (`serial`) so a
//! test can tell one upstream answer given to many callers from many
//! answers, and can hold every answer until released.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use http::{header, StatusCode};
use mmgate::graphql::{analyse, Limits};
use tokio::sync::watch;

/// What MachineMetrics publishes.
pub const OPERATIONS_PER_MINUTE: usize = 1000;

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: http::Method,
    pub target: String,
    pub authorization: Option<String>,
    pub request_id: Option<String>,
    pub body: Bytes,
    pub at: Instant,
}

struct Inner {
    latency: Duration,
    per_minute: usize,
    window: Mutex<VecDeque<Instant>>,
    calls: AtomicU64,
    operations: AtomicU64,
    throttled: AtomicU64,
    serial: AtomicU64,
    held: watch::Sender<bool>,
    received: Mutex<Vec<Received>>,
}

/// The running fake.
#[derive(Clone)]
pub struct FakeMm {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl FakeMm {
    /// Starts it with `latency` per answer and `per_minute` operations a minute.
    pub async fn start(latency: Duration, per_minute: usize) -> Self {
        let inner = Arc::new(Inner {
            latency,
            per_minute,
            window: Mutex::default(),
            calls: AtomicU64::new(0),
            operations: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            serial: AtomicU64::new(0),
            held: watch::channel(false).0,
            received: Mutex::default(),
        });
        let app = Router::new().fallback(answer).with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, inner }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received.
    pub fn calls(&self) -> u64 {
        self.inner.calls.load(Ordering::SeqCst)
    }

    /// GraphQL operations admitted (not throttled).
    pub fn operations(&self) -> u64 {
        self.inner.operations.load(Ordering::SeqCst)
    }

    /// 429s answered.
    pub fn throttled(&self) -> u64 {
        self.inner.throttled.load(Ordering::SeqCst)
    }

    /// Every request received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().unwrap().clone()
    }

    /// From now on, answers wait until `release`.
    pub fn hold(&self) {
        self.inner.held.send_replace(true);
    }

    /// Lets every held answer (and later ones) go.
    pub fn release(&self) {
        self.inner.held.send_replace(false);
    }
}

fn json(status: StatusCode, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
    response
}

async fn answer(State(inner): State<Arc<Inner>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let text = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    inner.received.lock().unwrap().push(Received {
        method: parts.method.clone(),
        target: parts.uri.path_and_query().map(ToString::to_string).unwrap_or_default(),
        authorization: text("authorization"),
        request_id: text("x-request-id"),
        body: body.clone(),
        at: Instant::now(),
    });
    inner.calls.fetch_add(1, Ordering::SeqCst);
    let _ = inner.held.subscribe().wait_for(|held| !held).await;
    tokio::time::sleep(inner.latency).await;
    let serial = inner.serial.fetch_add(1, Ordering::SeqCst) + 1;

    let path = parts.uri.path();
    if path.ends_with("graphql") {
        return graphql(&inner, parts.uri.query(), &body, serial);
    }
    if let Some(code) = path.rsplit_once("/status/").and_then(|(_, c)| c.parse::<u16>().ok()) {
        return json(StatusCode::from_u16(code).unwrap(), format!(r#"{{"status":{code},"serial":{serial}}}"#));
    }
    if let Some(size) = path.rsplit_once("/bytes/").and_then(|(_, n)| n.parse::<usize>().ok()) {
        let mut response = Response::new(Body::from(vec![b'x'; size]));
        response.headers_mut().insert("x-serial", serial.into());
        return response;
    }
    let target = parts.uri.path_and_query().map(ToString::to_string).unwrap_or_default();
    json(StatusCode::OK, format!(r#"{{"serial":{serial},"target":{}}}"#, serde_json::json!(target)))
}

/// The operations of a request: (query, operationName) per batch item.
fn operations(query_string: Option<&str>, body: &[u8]) -> Option<Vec<(String, Option<String>)>> {
    let item = |v: &serde_json::Value| {
        let query = v.get("query")?.as_str()?.to_owned();
        Some((query, v.get("operationName").and_then(|n| n.as_str()).map(str::to_owned)))
    };
    if body.is_empty() {
        let params: Vec<(String, String)> =
            form_urlencoded::parse(query_string.unwrap_or_default().as_bytes()).into_owned().collect();
        let find = |name: &str| params.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        return Some(vec![(find("query")?, find("operationName"))]);
    }
    match serde_json::from_slice::<serde_json::Value>(body).ok()? {
        serde_json::Value::Array(items) => items.iter().map(item).collect(),
        one => Some(vec![item(&one)?]),
    }
}

fn graphql(inner: &Inner, query_string: Option<&str>, body: &[u8], serial: u64) -> Response {
    let Some(items) = operations(query_string, body) else {
        return json(StatusCode::BAD_REQUEST, r#"{"errors":[{"message":"Must provide query string."}]}"#.into());
    };
    // The company's sliding window of operations.
    {
        let now = Instant::now();
        let mut window = inner.window.lock().unwrap();
        while window.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60)) {
            window.pop_front();
        }
        if window.len() + items.len() > inner.per_minute {
            inner.throttled.fetch_add(1, Ordering::SeqCst);
            let oldest = window.front().copied().unwrap_or(now);
            let retry = (Duration::from_secs(60).saturating_sub(now.duration_since(oldest))).as_secs() + 1;
            let mut response =
                json(StatusCode::TOO_MANY_REQUESTS, r#"{"errors":[{"message":"Too many requests"}]}"#.into());
            response.headers_mut().insert(header::RETRY_AFTER, retry.into());
            return response;
        }
        window.extend(std::iter::repeat_n(now, items.len()));
    }
    inner.operations.fetch_add(items.len() as u64, Ordering::SeqCst);
    let limits = Limits {
        max_depth: 5,
        max_nodes: 5,
        max_aliases: 10_000,
        max_root_fields: 10_000,
        max_tokens: 1_000_000,
        introspection: true,
    };
    let results: Vec<serde_json::Value> = items
        .iter()
        .map(|(query, name)| match analyse(query, name.as_deref(), &limits) {
            Err(e) => serde_json::json!({ "data": null, "errors": [{ "message": e.to_string() }] }),
            Ok(_) if query.contains("boom") => {
                serde_json::json!({ "data": { "boom": null }, "errors": [{ "message": "boom failed" }] })
            }
            Ok(_) => serde_json::json!({ "data": { "serial": serial, "query": query } }),
        })
        .collect();
    let batch = body.first() == Some(&b'[');
    let body = if batch { serde_json::Value::Array(results) } else { results.into_iter().next().unwrap() };
    json(StatusCode::OK, body.to_string())
}
