//! DESIGN.md step 1: normalisation comes before routing; no spelling of a
//! path reaches a route the caller may not use.

use crate::support::*;

#[tokio::test]
async fn traversal_into_another_route_is_judged_by_that_route() {
    // `dashboard` holds `reporting` only; /erp/* needs `erp`.
    let (gate, upstream, _keys) = Mmgate::with_upstream("").await;
    for path in [
        "/reports/../erp/jobdispatch/1",
        "/reports/%2e%2e/erp/jobdispatch/1",
        "/reports/%2E%2E/erp/jobdispatch/1",
        "/reports/.%2e/erp/jobdispatch/1",
        "/reports/./../erp/jobdispatch/1",
        "//erp/jobdispatch/1",
        "/reports/x/../../erp/jobdispatch/1",
        "/%65rp/jobdispatch/1",
    ] {
        let reply = get(&gate.url(path), &[AS_DASHBOARD]).await;
        let message = reply.assert_error(403, "scope_denied");
        assert!(message.contains("`erp`"), "{path}: {message}");
    }
    upstream.assert_untouched();
}

#[tokio::test]
async fn traversal_forms_reach_the_normalised_path_upstream() {
    let (gate, upstream, _keys) = Mmgate::with_upstream("").await;
    let reply = get(&gate.url("/reports/../reports/./production?day=2024-01-01&x=%2F"), &[AS_DASHBOARD]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(upstream.only().target, "/reports/production?day=2024-01-01&x=%2F");

    let (gate, upstream, _keys) = Mmgate::with_upstream("").await;
    let reply = post(
        &gate.url("/erp/%2e%2e/graphql"),
        &[AS_DASHBOARD, ("content-type", "application/json")],
        r#"{"query":"{machines{name}}"}"#,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = upstream.only();
    assert_eq!(seen.target, "/graphql");
    assert_eq!(seen.header("authorization"), Some(&*format!("Bearer {REPORTING_KEY}")));
}

#[tokio::test]
async fn encoded_separators_and_climbing_are_bad_requests() {
    let (gate, upstream, _keys) = Mmgate::with_upstream("").await;
    for path in [
        "/reports/..%2fgraphql",
        "/reports/..%2Ferp/x",
        "/reports/..%5cerp/x",
        "/reports/..%5Cerp/x",
        "/reports/%2F",
        "/..",
        "/reports/../../etc/passwd",
        "/reports/%zz",
    ] {
        let reply = get(&gate.url(path), &[AS_DASHBOARD]).await;
        reply.assert_error(400, "bad_request");
    }
    upstream.assert_untouched();
}

#[tokio::test]
async fn unknown_paths_are_404_before_authentication() {
    let (gate, upstream, _keys) = Mmgate::with_upstream("").await;
    for path in ["/", "/reports", "/Reports/production", "/graphql/x", "/GRAPHQL", "/accounts/current"] {
        // No token at all: the route is judged first, so the answer is 404, not 401.
        let reply = get(&gate.url(path), &[]).await;
        let message = reply.assert_error(404, "no_route");
        assert!(!message.is_empty());
    }
    upstream.assert_untouched();
}

#[tokio::test]
async fn prefix_routes_match_the_slash_and_below() {
    let (gate, upstream, _keys) = Mmgate::with_upstream("").await;
    assert_eq!(get(&gate.url("/reports/"), &[AS_DASHBOARD]).await.status, 200);
    assert_eq!(get(&gate.url("/reports/production/sub"), &[AS_DASHBOARD]).await.status, 200);
    let targets: Vec<String> = upstream.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/reports/", "/reports/production/sub"]);
}

#[tokio::test]
async fn upstream_base_path_is_joined() {
    let upstream = Upstream::start().await;
    let keys = KeyDir::new();
    let gate = Mmgate::start(&config(&format!("{}/api/v1/", upstream.url()), &keys, "")).await;
    let reply = get(&gate.url("/reports/production?a=b"), &[AS_DASHBOARD]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(upstream.only().target, "/api/v1/reports/production?a=b");
}
