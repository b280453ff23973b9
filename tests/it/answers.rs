//! What callers see (DESIGN step 6): GraphQL-shaped refusals on GraphQL
//! routes, read by a GraphQL client's own response model, in the media type
//! the caller's `Accept` prefers; MachineMetrics' REST shape elsewhere; and
//! HTTP's own headers on 401, 405 and 429.

use std::time::Duration;

use graphql_client::Response as GraphqlResponse;

use crate::cli::{spawn, terminate};
use crate::support::*;

/// What Apollo Client 4 sends.
const APOLLO: (&str, &str) = ("accept", "application/graphql-response+json,application/json;q=0.9");

fn limited() -> String {
    format!(
        "\n[clients.limited]\ntoken_sha256 = \"{}\"\nscopes = [\"reporting\"]\nlimit = {{ per_minute = 1, burst = 1 }}\n",
        sha("limited-token")
    )
}

/// Parses a refusal as a GraphQL client does; returns (message, code, request_id).
fn as_graphql_client_reads_it(reply: &Reply) -> (String, String, String) {
    let response: GraphqlResponse<serde_json::Value> =
        serde_json::from_slice(&reply.body).unwrap_or_else(|e| panic!("{e}: {}", reply.text()));
    assert!(response.data.is_none());
    let errors = response.errors.expect("errors");
    assert_eq!(errors.len(), 1);
    let extensions = errors[0].extensions.as_ref().expect("extensions");
    (
        errors[0].message.clone(),
        extensions["code"].as_str().unwrap().to_owned(),
        extensions["request_id"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn graphql_routes_answer_graphql_responses_in_the_type_the_caller_prefers() {
    let (gate, upstream, _keys) = Mmgate::with_upstream("").await;
    let url = gate.url("/graphql");
    let mutation = r#"{"query":"mutation Start { startJob(id: 1) { id } }"}"#;
    let reply = post(&url, &[AS_DASHBOARD, JSON, APOLLO], mutation).await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.headers["content-type"], "application/graphql-response+json");
    let (message, code, request_id) = as_graphql_client_reads_it(&reply);
    assert_eq!(message, "mutation `Start` needs scope `write`, which this client does not hold");
    assert_eq!(code, "scope_denied");
    assert_eq!(reply.headers["x-request-id"], request_id.as_str());
    // The exact bytes a GraphQL-over-HTTP client parses.
    assert_eq!(
        reply.text(),
        format!(
            r#"{{"errors":[{{"message":"{message}","extensions":{{"code":"scope_denied","request_id":"{request_id}"}}}}]}}"#
        )
    );
    // No Accept, or */*: plain JSON, the same body.
    for accept in [None, Some("*/*"), Some("application/json")] {
        let mut headers = vec![AS_DASHBOARD, JSON];
        headers.extend(accept.map(|a| ("accept", a)));
        let reply = post(&url, &headers, mutation).await;
        assert_eq!(reply.headers["content-type"], "application/json", "{accept:?}");
        assert_eq!(as_graphql_client_reads_it(&reply).1, "scope_denied");
    }
    // Refusals before the route's GraphQL check are GraphQL-shaped too.
    let reply = post(&url, &[("authorization", "Bearer not-a-token"), JSON, APOLLO], mutation).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.headers["www-authenticate"], "Bearer realm=\"mmgate\"");
    assert_eq!(as_graphql_client_reads_it(&reply).1, "unauthenticated");
    upstream.assert_untouched();
}

#[tokio::test]
async fn rest_routes_and_unrouted_paths_answer_in_machinemetrics_rest_shape() {
    let (gate, upstream, _keys) = Mmgate::with_upstream("").await;
    for (url, status, code) in [
        (gate.url("/erp/jobdispatch/start"), 403, "scope_denied"),
        (gate.url("/nowhere"), 404, "no_route"),
        (gate.url("/reports/..%2fgraphql"), 400, "bad_request"),
    ] {
        let reply = get(&url, &[AS_DASHBOARD, APOLLO]).await;
        assert_eq!(reply.headers["content-type"], "application/json");
        let json = reply.json();
        assert_eq!(json["code"], code);
        assert_eq!(json["request_id"], reply.headers["x-request-id"].to_str().unwrap());
        assert!(json["message"].is_string());
        reply.assert_error(status, code);
    }
    upstream.assert_untouched();
}

#[tokio::test]
async fn http_headers_say_what_to_do_next() {
    let (gate, _upstream, _keys) = Mmgate::with_upstream(&limited()).await;
    // 401: the scheme, and an old MachineMetrics key left in a tool is explained.
    let reply = get(&gate.url("/reports/a"), &[("authorization", "Bearer mm-old-api-key")]).await;
    let message = reply.assert_error(401, "unauthenticated");
    assert_eq!(reply.headers["www-authenticate"], "Bearer realm=\"mmgate\"");
    assert!(message.contains("mmgate holds the MachineMetrics API key"), "{message}");
    // 405: exactly the route's methods.
    let reply = send(http::Method::PUT, &gate.url("/graphql"), &[AS_DASHBOARD, JSON], "{}").await;
    assert_eq!(as_graphql_client_reads_it(&reply).1, "method_not_allowed");
    assert_eq!(reply.headers["allow"], "GET, POST");
    let reply = send(http::Method::TRACE, &gate.url("/reports/a"), &[AS_DASHBOARD], "").await;
    reply.assert_error(405, "method_not_allowed");
    assert_eq!(reply.headers["allow"], "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
    // 429: Retry-After and the IETF rate-limit headers of the limit that refused.
    let limited = ("authorization", "Bearer limited-token");
    assert_eq!(get(&gate.url("/reports/a"), &[limited]).await.status, 200);
    let reply = get(&gate.url("/reports/a"), &[limited]).await;
    let message = reply.assert_error(429, "rate_limited");
    assert_eq!(message, "rate limit client `limited` (1/min burst 1) exceeded; retry in 60 s");
    assert_eq!(reply.headers["retry-after"], "60");
    assert_eq!(reply.headers["ratelimit-policy"], "\"client-limited\";q=1;w=60");
    assert_eq!(reply.headers["ratelimit"], "\"client-limited\";r=0;t=60");
}

#[tokio::test]
async fn graphql_limits_name_the_limit_the_value_and_the_allowed_value() {
    let extra = "\n[[routes]]\npath = \"/strict/graphql\"\nkey = \"reporting\"\nscope = \"reporting\"\nkind = \"graphql\"\nmax_depth = 2\n";
    let (gate, upstream, _keys) = Mmgate::with_upstream(extra).await;
    let body = serde_json::json!({ "query": "{ a { b { c { d } } } }" }).to_string();
    let reply = post(&gate.url("/strict/graphql"), &[AS_DASHBOARD, JSON, APOLLO], body).await;
    assert_eq!(reply.status, 400);
    let (message, code, _) = as_graphql_client_reads_it(&reply);
    assert_eq!((message.as_str(), code.as_str()), ("max_depth exceeded: depth 3, at most 2", "graphql_limit"));
    upstream.assert_untouched();
}

/// Splits a text access line's `name=value` fields (values as `{:?}` prints strings).
fn text_fields(line: &str) -> Vec<(String, serde_json::Value)> {
    let rest = line.split_once("mmgate::access: ").expect("an access line").1;
    let mut fields = Vec::new();
    let mut chars = rest.chars().peekable();
    while chars.peek().is_some() {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let value = if chars.peek() == Some(&'"') {
            let mut raw = String::from(chars.next().unwrap());
            while let Some(c) = chars.next() {
                raw.push(c);
                if c == '\\' {
                    raw.push(chars.next().unwrap());
                } else if c == '"' {
                    break;
                }
            }
            chars.next(); // the space
            serde_json::from_str(&raw).unwrap()
        } else {
            let raw: String = chars.by_ref().take_while(|c| *c != ' ').collect();
            serde_json::from_str(&raw).unwrap_or(serde_json::Value::String(raw))
        };
        fields.push((name.trim().to_owned(), value));
    }
    fields
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_lines_carry_every_field_the_same_in_text_and_json() {
    let upstream = Upstream::start().await;
    let keys = KeyDir::new();
    let mut lines = Vec::new();
    for format in ["text", "json"] {
        let toml =
            with_lines(&config(&upstream.url(), &keys, &limited()), "server", &format!("log_format = \"{format}\""));
        let (port, admin, toml) = on_free_ports(&toml);
        let path = keys.path(&format!("{format}.toml"));
        std::fs::write(&path, toml).unwrap();
        let child = spawn(&path, &[], admin);
        let base = format!("http://127.0.0.1:{port}");
        let body = r#"[{"query":"query Machines { machines { name annotations { startAt } } }"},{"query":"{ a }"}]"#;
        let headers = [AS_DASHBOARD, JSON, ("user-agent", "dash/1.0"), ("x-request-id", "fields-1")];
        let reply = post(&format!("{base}/graphql"), &headers, body).await;
        assert_eq!(reply.status, 200);
        let limited = ("authorization", "Bearer limited-token");
        assert_eq!(get(&format!("{base}/reports/./a"), &[limited]).await.status, 200);
        get(&format!("{base}/reports/./a"), &[limited, ("x-request-id", "fields-2")])
            .await
            .assert_error(429, "rate_limited");
        // Lines reach the output within 100 ms of the response's end (about
        // 80 ms here; the bound leaves room for a busy machine).
        let started = std::time::Instant::now();
        eventually("access lines", Duration::from_secs(2), || async {
            (child.logs().contains("fields-1") && child.logs().contains("fields-2")).then_some(())
        })
        .await;
        assert!(started.elapsed() < Duration::from_millis(500), "lines took {:?}", started.elapsed());
        let (_, logs) = terminate(child);
        lines.push(logs);
    }
    let find = |logs: &str, id: &str| {
        logs.lines().find(|l| l.contains("mmgate::access") && l.contains(id)).unwrap().to_owned()
    };
    for id in ["fields-1", "fields-2"] {
        let text = text_fields(&find(&lines[0], id));
        let json: serde_json::Value = serde_json::from_str(&find(&lines[1], id)).unwrap();
        let json_fields: Vec<&String> = json
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| !["timestamp", "level", "target"].contains(&k.as_str()))
            .collect();
        assert_eq!(text.len(), json_fields.len(), "{text:?}\n{json}");
        for (name, value) in &text {
            let volatile = ["peer", "duration_us", "upstream_latency_us"].contains(&name.as_str());
            if !volatile {
                assert_eq!(&json[name], value, "{name}");
            }
            assert!(!json[name].is_null(), "{name} missing from the JSON line");
        }
    }
    let graphql: serde_json::Value = serde_json::from_str(&find(&lines[1], "fields-1")).unwrap();
    for (field, value) in [
        ("method", serde_json::json!("POST")),
        ("route", serde_json::json!("/graphql")),
        ("path", serde_json::json!("/graphql")),
        ("client", serde_json::json!("dashboard")),
        ("user_agent", serde_json::json!("dash/1.0")),
        ("status", serde_json::json!(200)),
        ("by", serde_json::json!("upstream")),
        ("upstream_status", serde_json::json!(200)),
        ("operation", serde_json::json!("query")),
        ("operation_name", serde_json::json!("Machines")),
        ("operations", serde_json::json!(2)),
        ("depth", serde_json::json!(2)),
        ("nodes", serde_json::json!(2)),
    ] {
        assert_eq!(graphql[field], value, "{field}: {graphql}");
    }
    assert!(graphql["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{graphql}");
    let refused: serde_json::Value = serde_json::from_str(&find(&lines[1], "fields-2")).unwrap();
    for (field, value) in [
        ("path", serde_json::json!("/reports/a")),
        ("status", serde_json::json!(429)),
        ("by", serde_json::json!("mmgate")),
        ("code", serde_json::json!("rate_limited")),
        ("limit", serde_json::json!("client:limited")),
    ] {
        assert_eq!(refused[field], value, "{field}: {refused}");
    }
    assert!(refused.get("upstream_status").is_none(), "{refused}");
}

#[test]
fn an_invalid_rust_log_stops_start_up() {
    let output = crate::cli::mmgate().env("RUST_LOG", "mmgate=verbose").env("MM_API_KEY", "k").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("RUST_LOG=`mmgate=verbose` is not a log filter"), "{stderr}");
}
