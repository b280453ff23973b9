//! GraphQL routes: what the upstream would run is decided from the parsed
//! document, whatever the carrier or encoding. Each case asserts whether the
//! upstream was called.

use http::Method;

use crate::support::*;

const AS_WRITER: (&str, &str) = ("authorization", "Bearer writer-token");
const AS_NARROW: (&str, &str) = ("authorization", "Bearer narrow-token");

fn extra() -> String {
    format!(
        r#"
[clients.writer]
token_sha256 = "{writer}"
scopes = ["reporting", "write"]

[clients.narrow]
token_sha256 = "{narrow}"
scopes = ["reporting"]
graphql_fields = ["machines"]

[[routes]]
path = "/strict/graphql"
key = "reporting"
scope = "reporting"
kind = "graphql"
max_depth = 2
max_aliases = 2
max_root_fields = 2
introspection = false
"#,
        writer = sha("writer-token"),
        narrow = sha("narrow-token"),
    )
}

async fn setup() -> (Mmgate, Upstream, KeyDir) {
    Mmgate::with_upstream(&extra()).await
}

#[tokio::test]
async fn queries_are_forwarded_byte_for_byte() {
    let (gate, upstream, _keys) = setup().await;
    let body = "{ \"query\" : \"{ machines(where: {name: {_eq: \\\"mutation\\\"}}) { name } }\",\n \"variables\": {\"a\": \"\\u00e9\"} }";
    let reply = post(&gate.url("/graphql"), &[AS_DASHBOARD, JSON], body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = upstream.only();
    assert_eq!(seen.body, body.as_bytes());
    assert_eq!(seen.header("authorization"), Some(&*format!("Bearer {REPORTING_KEY}")));
    assert_eq!(seen.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn mutations_need_the_mutation_scope() {
    let (gate, upstream, _keys) = setup().await;
    let body = r#"{"query":"mutation Start { startJob(id: 1) { id } }"}"#;
    let message = post(&gate.url("/graphql"), &[AS_DASHBOARD, JSON], body).await.assert_error(403, "scope_denied");
    assert!(message.contains("mutation `Start`") && message.contains("`write`"), "{message}");
    upstream.assert_untouched();
    assert_eq!(post(&gate.url("/graphql"), &[AS_WRITER, JSON], body).await.status, 200);
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn mutations_are_denied_where_no_mutation_scope_is_set() {
    let (gate, upstream, _keys) = setup().await;
    let body = r#"{"query":"mutation { x }"}"#;
    let message = post(&gate.url("/strict/graphql"), &[AS_WRITER, JSON], body).await.assert_error(403, "scope_denied");
    assert!(message.contains("denied"), "{message}");
    upstream.assert_untouched();
}

#[tokio::test]
async fn every_operation_counts_not_only_the_selected_one() {
    let (gate, upstream, _keys) = setup().await;
    let body = r#"{"query":"query Read { machines { name } } mutation Write { drop }","operationName":"Read"}"#;
    post(&gate.url("/graphql"), &[AS_DASHBOARD, JSON], body).await.assert_error(403, "scope_denied");
    // Several operations and no operationName, or one naming nothing: 400.
    let body = r#"{"query":"query A { a } query B { b }"}"#;
    post(&gate.url("/graphql"), &[AS_DASHBOARD, JSON], body).await.assert_error(400, "bad_graphql");
    let body = r#"{"query":"query A { a }","operationName":"B"}"#;
    post(&gate.url("/graphql"), &[AS_DASHBOARD, JSON], body).await.assert_error(400, "bad_graphql");
    upstream.assert_untouched();
}

#[tokio::test]
async fn batches_are_checked_item_by_item() {
    let (gate, upstream, _keys) = setup().await;
    let body = r#"[{"query":"{ machines { name } }"},{"query":"mutation { drop }"}]"#;
    post(&gate.url("/graphql"), &[AS_DASHBOARD, JSON], body).await.assert_error(403, "scope_denied");
    upstream.assert_untouched();
    let body = r#"[{"query":"{ machines { name } }"},{"query":"{ activities { id } }"}]"#;
    assert_eq!(post(&gate.url("/graphql"), &[AS_DASHBOARD, JSON], body).await.status, 200);
    assert_eq!(upstream.only().body, body.as_bytes());
}

#[tokio::test]
async fn subscriptions_are_refused() {
    let (gate, upstream, _keys) = setup().await;
    let body = r#"{"query":"subscription { ticks }"}"#;
    let message = post(&gate.url("/graphql"), &[AS_WRITER, JSON], body).await.assert_error(403, "scope_denied");
    assert!(message.contains("subscription"), "{message}");
    upstream.assert_untouched();
}

#[tokio::test]
async fn json_is_read_as_the_upstream_would_or_refused() {
    let (gate, upstream, _keys) = setup().await;
    for body in [
        r#"{"query":"{ a }","query":"mutation { b }"}"#,
        r#"{"query":"{ a }","qu\u0065ry":"mutation { b }"}"#,
        r#"{"extensions":{"persistedQuery":{"version":1,"sha256Hash":"ecf4edb46db40b5132295c0291d62fb65d6759a9eedfa4d5d612dd5ec54a6b38"}}}"#,
        r#""{ a }""#,
        "17",
        "[]",
        "{not json",
        r#"{"query":"{ a "}"#,
    ] {
        post(&gate.url("/graphql"), &[AS_DASHBOARD, JSON], body).await.assert_error(400, "bad_graphql");
    }
    // An escaped keyword is decoded before the check.
    let body = r#"{"query":"\u006dutation { drop }"}"#;
    post(&gate.url("/graphql"), &[AS_DASHBOARD, JSON], body).await.assert_error(403, "scope_denied");
    upstream.assert_untouched();
}

#[tokio::test]
async fn syntax_errors_say_where() {
    let (gate, upstream, _keys) = setup().await;
    let body = r#"{"query":"{\n  machines {\n    name(\n  }\n}"}"#;
    let message = post(&gate.url("/graphql"), &[AS_DASHBOARD, JSON], body).await.assert_error(400, "bad_graphql");
    assert!(message.contains("line"), "{message}");
    upstream.assert_untouched();
}

#[tokio::test]
async fn carriers() {
    let (gate, upstream, _keys) = setup().await;
    // application/graphql
    let reply =
        post(&gate.url("/graphql"), &[AS_DASHBOARD, ("content-type", "application/graphql")], "{ machines { name } }")
            .await;
    assert_eq!(reply.status, 200);
    // GET ?query=
    let reply = get(&gate.url("/graphql?query=%7B%20machines%20%7B%20name%20%7D%20%7D"), &[AS_DASHBOARD]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(upstream.requests()[1].target, "/graphql?query=%7B%20machines%20%7B%20name%20%7D%20%7D");
    assert_eq!(upstream.requests().len(), 2);

    // A mutation over GET is 405 even for a client allowed to mutate.
    let reply = get(&gate.url("/graphql?query=mutation%20%7B%20drop%20%7D"), &[AS_WRITER]).await;
    reply.assert_error(405, "method_not_allowed");
    // Other media types and encodings: 415.
    for (name, value) in [("content-type", "text/plain"), ("content-type", "application/x-www-form-urlencoded")] {
        post(&gate.url("/graphql"), &[AS_DASHBOARD, (name, value)], "query={a}")
            .await
            .assert_error(415, "unsupported_media_type");
    }
    post(&gate.url("/graphql"), &[AS_DASHBOARD], r#"{"query":"{a}"}"#)
        .await
        .assert_error(415, "unsupported_media_type");
    post(&gate.url("/graphql"), &[AS_DASHBOARD, JSON, ("content-encoding", "gzip")], r#"{"query":"{a}"}"#)
        .await
        .assert_error(415, "unsupported_media_type");
    // The query in both the URL and the body: 400.
    post(&gate.url("/graphql?query=%7Bb%7D"), &[AS_DASHBOARD, JSON], r#"{"query":"{a}"}"#)
        .await
        .assert_error(400, "bad_graphql");
    // Duplicate URL parameters: 400.
    get(&gate.url("/graphql?query=%7Ba%7D&query=mutation%7Bb%7D"), &[AS_WRITER]).await.assert_error(400, "bad_graphql");
    // Other methods: 405.
    send(Method::PUT, &gate.url("/graphql"), &[AS_DASHBOARD, JSON], r#"{"query":"{a}"}"#)
        .await
        .assert_error(405, "method_not_allowed");
    assert_eq!(upstream.requests().len(), 2);
}

#[tokio::test]
async fn shape_limits_and_introspection() {
    let (gate, upstream, _keys) = setup().await;
    let strict = gate.url("/strict/graphql");
    for (query, code, expected) in [
        ("{ a { b { c { d } } } }", 400, "graphql_limit"), // depth 3 > 2 (a, b, c select)
        ("{ a { ...F } } fragment F on T { b { c { d } } }", 400, "graphql_limit"), // through a fragment
        ("{ ...A } fragment A on Q { ...B } fragment B on Q { ...A }", 400, "bad_graphql"), // cycle
        ("{ x: a y: a z: a }", 400, "graphql_limit"),      // 3 aliases > 2
        ("{ a b c }", 400, "graphql_limit"),               // 3 root fields > 2
        ("{ __schema { types { name } } }", 403, "scope_denied"), // introspection off
        ("{ m: machines { ...on Machine { __type(name: \"X\") { name } } } }", 403, "scope_denied"),
    ] {
        let body = serde_json::json!({ "query": query }).to_string();
        let reply = post(&strict, &[AS_DASHBOARD, JSON], body).await;
        let message = reply.assert_error(code, expected);
        if expected == "graphql_limit" {
            assert!(message.contains(" exceeded: ") && message.contains("at most"), "{message}");
        }
    }
    upstream.assert_untouched();
    let body = serde_json::json!({ "query": "{ __typename a { b { c } } }" }).to_string();
    assert_eq!(post(&strict, &[AS_DASHBOARD, JSON], body).await.status, 200);
    // Introspection stays available where the route allows it.
    let body = serde_json::json!({ "query": "{ __schema { types { name } } }" }).to_string();
    assert_eq!(post(&gate.url("/graphql"), &[AS_DASHBOARD, JSON], body).await.status, 200);
}

#[tokio::test]
async fn per_client_root_field_allowlist() {
    let (gate, upstream, _keys) = setup().await;
    let url = gate.url("/graphql");
    let ok = serde_json::json!({ "query": "{ machines { name } m2: machines { id } __typename }" }).to_string();
    assert_eq!(post(&url, &[AS_NARROW, JSON], ok).await.status, 200);
    for query in [
        "{ activities { id } }",
        "{ machines { name } ...F } fragment F on Query { operatorRuns { id } }",
        "{ ... on Query { activitySets { id } } }",
        "{ machines: activities { id } }",
    ] {
        let body = serde_json::json!({ "query": query }).to_string();
        let message = post(&url, &[AS_NARROW, JSON], body).await.assert_error(403, "scope_denied");
        assert!(message.contains("graphql_fields"), "{message}");
    }
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn oversized_graphql_bodies_are_413_before_the_upstream() {
    let (gate, upstream, _keys) = setup().await;
    let big = format!(r#"{{"query":"{{ machines {{ name }} }}","pad":"{}"}}"#, "x".repeat(70 * 1024));
    post(&gate.url("/graphql"), &[AS_DASHBOARD, JSON], big).await.assert_error(413, "body_too_large");
    let mut request = b"POST /graphql HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dash-token-1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..5 {
        request.extend_from_slice(format!("{:x}\r\n{}\r\n", 16 * 1024, " ".repeat(16 * 1024)).as_bytes());
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let response = raw(gate.addr, &request).await;
    assert_eq!(raw_status(&response), 413, "{response}");
    upstream.assert_untouched();
}
