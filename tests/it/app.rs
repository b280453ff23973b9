//! The request path without sockets: `app(gate).oneshot(request)` for every
//! refusal mmgate makes before forwarding. The upstream is an address where
//! nothing listens, so a request that got that far would fail with 502, not
//! with the refusal asserted here; each whole JSON body is asserted.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use mmgate::config::Settings;
use mmgate::{app, Gate, Runtime};
use tower::ServiceExt;

use crate::support::*;

fn gate() -> (std::sync::Arc<Gate>, KeyDir) {
    let keys = KeyDir::new();
    let extra = format!(
        r#"
[clients.narrow]
token_sha256 = "{narrow}"
scopes = ["reporting"]
graphql_fields = ["machines"]
limit = {{ per_minute = 1, burst = 1 }}

[[routes]]
path = "/strict/graphql"
key = "reporting"
scope = "reporting"
kind = "graphql"
introspection = false
"#,
        narrow = sha("narrow-token"),
    );
    let toml = config(&format!("http://127.0.0.1:{}", free_port()), &keys, &extra);
    let settings = Settings::from_toml(&toml).unwrap();
    (Gate::new(Runtime::load(settings).unwrap()), keys)
}

struct Case {
    method: Method,
    target: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
}

fn case(method: Method, target: &'static str) -> Case {
    Case { method, target, headers: Vec::new(), body: Bytes::new() }
}

impl Case {
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn by_dashboard(self) -> Self {
        self.header("authorization", format!("Bearer {DASH_TOKEN}"))
    }

    fn json(self, body: &str) -> Self {
        let mut case = self.header("content-type", "application/json");
        case.body = Bytes::copy_from_slice(body.as_bytes());
        case
    }

    /// Sends it through the app; returns the status, the headers and the JSON body.
    async fn send(self, gate: &std::sync::Arc<Gate>) -> Reply {
        let mut request = Request::builder().method(self.method).uri(self.target);
        for (name, value) in &self.headers {
            request = request.header(*name, value);
        }
        let response = app(gate.clone()).oneshot(request.body(Full::new(self.body)).unwrap()).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply { status: parts.status, headers: parts.headers, body }
    }
}

/// Asserts the status, code and exact message of a refusal.
async fn refused(gate: &std::sync::Arc<Gate>, case: Case, status: u16, code: &str, message: &str) -> Reply {
    let what = format!("{} {}", case.method, case.target);
    let reply = case.send(gate).await;
    let got = reply.assert_error(status, code);
    assert_eq!(got, message, "{what}");
    reply
}

#[tokio::test]
async fn paths_and_routes() {
    let (gate, _keys) = gate();
    for (target, message) in [
        ("/reports/..%2fgraphql", "an encoded `/` or `\\` is not allowed in the path"),
        ("/reports/a%5cb", "an encoded `/` or `\\` is not allowed in the path"),
        ("/reports/%zz", "malformed percent-escape in the path"),
        ("/reports/../..", "the path climbs above `/`"),
    ] {
        refused(&gate, case(Method::GET, target).by_dashboard(), 400, "bad_request", message).await;
    }
    refused(&gate, case(Method::GET, "/accounts/current").by_dashboard(), 404, "no_route", "no route for this path")
        .await;
    // 404 comes before identity.
    refused(&gate, case(Method::GET, "/nowhere"), 404, "no_route", "no route for this path").await;
}

#[tokio::test]
async fn identity() {
    let (gate, _keys) = gate();
    let target = "/reports/production";
    refused(
        &gate,
        case(Method::GET, target),
        401,
        "unauthenticated",
        "this route needs `Authorization: Bearer <token>`",
    )
    .await;
    let unknown = case(Method::GET, target).header("authorization", "Bearer mm-old-machinemetrics-key");
    let reply = unknown.send(&gate).await;
    let message = reply.assert_error(401, "unauthenticated");
    assert!(message.starts_with("unknown token: mmgate holds the MachineMetrics API key itself"), "{message}");
    assert_eq!(reply.headers["www-authenticate"], "Bearer realm=\"mmgate\"");
    let basic = case(Method::GET, target).header("authorization", "Basic YTpi");
    refused(&gate, basic, 401, "unauthenticated", "Authorization must be `Bearer <token>`").await;
    let twice = case(Method::GET, target).by_dashboard().by_dashboard();
    refused(&gate, twice, 401, "unauthenticated", "send one Authorization header, not several").await;
}

#[tokio::test]
async fn scopes_and_protocols() {
    let (gate, _keys) = gate();
    let erp = case(Method::POST, "/erp/jobdispatch/start").by_dashboard();
    refused(&gate, erp, 403, "scope_denied", "route `/erp/*` needs scope `erp`, which this client does not hold").await;
    for (method, message) in [(Method::CONNECT, "CONNECT is not supported"), (Method::TRACE, "TRACE is not supported")]
    {
        let reply = refused(&gate, case(method, "/reports/x").by_dashboard(), 405, "method_not_allowed", message).await;
        assert!(reply.headers.contains_key("allow"));
    }
    let upgrade =
        case(Method::GET, "/reports/x").by_dashboard().header("connection", "upgrade").header("upgrade", "websocket");
    refused(&gate, upgrade, 405, "method_not_allowed", "protocol upgrades (WebSocket) are not supported").await;
}

#[tokio::test]
async fn graphql_refusals() {
    let (gate, _keys) = gate();
    let put = case(Method::PUT, "/graphql").by_dashboard().json(r#"{"query":"{a}"}"#);
    refused(&gate, put, 405, "method_not_allowed", "GraphQL routes accept GET and POST only").await;
    let get_mutation = case(Method::GET, "/graphql?query=mutation%20%7Bx%7D").by_dashboard();
    refused(&gate, get_mutation, 405, "method_not_allowed", "a mutation cannot be sent with GET; use POST").await;
    let text = case(Method::POST, "/graphql").by_dashboard().header("content-type", "text/plain");
    refused(
        &gate,
        text,
        415,
        "unsupported_media_type",
        "GraphQL requests must be POSTed as `application/json` or `application/graphql` (UTF-8)",
    )
    .await;
    let syntax = case(Method::POST, "/graphql").by_dashboard().json(r#"{"query":"{ a "}"#);
    let reply = syntax.send(&gate).await;
    assert!(reply.assert_error(400, "bad_graphql").starts_with("syntax error at line 1"), "{}", reply.text());
    let duplicate = case(Method::POST, "/graphql").by_dashboard().json(r#"{"query":"{a}","query":"{b}"}"#);
    let reply = duplicate.send(&gate).await;
    assert!(reply.assert_error(400, "bad_graphql").contains("duplicate key `query`"), "{}", reply.text());
    let mutation = case(Method::POST, "/graphql").by_dashboard().json(r#"{"query":"mutation M { x }"}"#);
    refused(&gate, mutation, 403, "scope_denied", "mutation `M` needs scope `write`, which this client does not hold")
        .await;
    let subscription = case(Method::POST, "/graphql").by_dashboard().json(r#"{"query":"subscription { tick }"}"#);
    refused(&gate, subscription, 403, "scope_denied", "subscription: subscriptions are not supported").await;
    let introspection =
        case(Method::POST, "/strict/graphql").by_dashboard().json(r#"{"query":"{ __schema { types { name } } }"}"#);
    refused(
        &gate,
        introspection,
        403,
        "scope_denied",
        "introspection (`__schema`, `__type`) is disabled on this route",
    )
    .await;
    let field = case(Method::POST, "/graphql")
        .header("authorization", "Bearer narrow-token")
        .json(r#"{"query":"{ activities { id } }"}"#);
    refused(&gate, field, 403, "scope_denied", "query: field `activities` is not in this client's graphql_fields")
        .await;
}

#[tokio::test]
async fn sizes_and_limits() {
    let (gate, _keys) = gate();
    let big = case(Method::POST, "/reports/production").by_dashboard().header("content-length", "100000");
    refused(&gate, big, 413, "body_too_large", "request body is larger than the 65536-byte limit").await;
    let mut big_graphql = case(Method::POST, "/graphql").by_dashboard().json("{}");
    big_graphql.body = Bytes::from(vec![b' '; 70_000]);
    refused(&gate, big_graphql, 413, "body_too_large", "request body is larger than the 65536-byte limit").await;
    // `narrow` may send one request a minute: the first reaches the (absent)
    // upstream, the second is refused before it.
    let first = case(Method::GET, "/reports/a").header("authorization", "Bearer narrow-token").send(&gate).await;
    first.assert_error(502, "upstream_unreachable");
    let second = case(Method::GET, "/reports/a").header("authorization", "Bearer narrow-token");
    let reply = refused(
        &gate,
        second,
        429,
        "rate_limited",
        "rate limit client `narrow` (1/min burst 1) exceeded; retry in 60 s",
    )
    .await;
    assert_eq!(reply.headers["retry-after"], "60");
    assert_eq!(reply.headers["ratelimit-policy"], "\"client-narrow\";q=1;w=60");
    assert_eq!(reply.headers["ratelimit"], "\"client-narrow\";r=0;t=60");
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
}
