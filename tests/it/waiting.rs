//! Spending the quota as MachineMetrics counts it: operations cost one unit
//! each, what it would refuse is refused locally, and requests over a key's
//! or budget's limit wait for their turn (`max_wait`), fairly between
//! clients, instead of getting 429 at once.

use std::time::{Duration, Instant};

use crate::quota::{gql, metrics_of, start};
use crate::support::*;

/// A distinct query (so nothing is shared or cached) for request `n`.
fn nth(n: usize) -> String {
    gql(&format!("query Q{n} {{ machines {{ name }} }}"), serde_json::json!({}))
}

fn key_limit(limit: &'static str) -> impl FnOnce(String) -> String {
    move |toml| with_lines(&toml, "keys.reporting", &format!("limit = {limit}"))
}

#[tokio::test]
async fn machinemetrics_limits_are_refused_locally_as_it_counts_them() {
    let (gate, fake, _keys) = start("", |t| t).await;
    let url = gate.url("/graphql");
    for allowed in [
        "{ machines { name } }",
        "{ machines { name annotations { startAt } currentStates { label } } }",
        "{ machines { annotations { annotationType { name } } } }",
        "{ a { b { c { d { e { f } } } } } }",
        "{ __schema { types { fields { type { ofType { ofType { name } } } } } } }",
    ] {
        let reply = post(&url, &[AS_DASHBOARD, JSON], gql(allowed, serde_json::json!({}))).await;
        assert_eq!(reply.status, 200, "{allowed}: {}", reply.text());
    }
    for (refused, message) in [
        ("{ a { b { c { d { e { f { g } } } } } } }", "max_depth exceeded: depth 6, at most 5"),
        ("{ a { x } b { x } c { x } d { x } e { x } f { x } }", "max_nodes exceeded: 6 nodes, at most 5"),
        ("{ m: machines { id } ...F } fragment F on Query { a { x } b { x } c { x } d { x } e { x } }", "max_nodes"),
        ("{ __typename a { b { c { d { e { f { g } } } } } } }", "max_depth"),
    ] {
        let reply = post(&url, &[AS_DASHBOARD, JSON], gql(refused, serde_json::json!({}))).await;
        let got = reply.assert_error(400, "graphql_limit");
        assert!(got.contains(message), "{refused}: {got}");
    }
    assert_eq!(fake.calls(), 5, "only what MachineMetrics accepts goes upstream");
    assert_eq!(fake.throttled(), 0);
    let text = metrics_of(&gate).await;
    let avoided = r#"mmgate_upstream_requests_avoided_total{route="/graphql",reason="local_refusal"}"#;
    assert_eq!(metric(&text, avoided), Some(4.0));
}

#[tokio::test]
async fn a_batch_costs_one_unit_per_operation() {
    let (gate, fake, _keys) =
        start("", |toml| with_lines(&toml, "clients.dashboard", "limit = { per_minute = 60, burst = 5 }")).await;
    let url = gate.url("/graphql");
    let batch = |from: usize, n: usize| {
        let items: Vec<serde_json::Value> = (from..from + n).map(|i| serde_json::from_str(&nth(i)).unwrap()).collect();
        serde_json::Value::Array(items).to_string()
    };
    assert_eq!(post(&url, &[AS_DASHBOARD, JSON], batch(0, 3)).await.status, 200);
    let refused = post(&url, &[AS_DASHBOARD, JSON], batch(10, 3)).await;
    assert!(refused.assert_error(429, "rate_limited").contains("client `dashboard`"), "2 units left, 3 asked");
    assert_eq!(post(&url, &[AS_DASHBOARD, JSON], batch(20, 2)).await.status, 200, "the refusal charged nothing");
    let never = post(&url, &[AS_DASHBOARD, JSON], batch(30, 6)).await;
    let message = never.assert_error(400, "graphql_limit");
    assert!(message.contains("6 operations") && message.contains("burst") && message.contains("(5)"), "{message}");
    assert_eq!((fake.calls(), fake.operations()), (2, 5));
}

#[tokio::test]
async fn over_a_key_limit_requests_wait_their_turn_within_max_wait() {
    let (gate, fake, _keys) = start("", key_limit(r#"{ per_second = 5, burst = 1, max_wait = "5s" }"#)).await;
    let started = Instant::now();
    let pending: Vec<_> = (0..4)
        .map(|n| {
            let url = gate.url("/graphql");
            tokio::spawn(async move { post(&url, &[AS_DASHBOARD, JSON], nth(n)).await })
        })
        .collect();
    for p in pending {
        let reply = p.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    // One at once, then one every 200 ms.
    assert!(started.elapsed() >= Duration::from_millis(550), "{:?}", started.elapsed());
    assert_eq!(fake.calls(), 4);
    let text = metrics_of(&gate).await;
    assert_eq!(metric(&text, r#"mmgate_limit_wait_seconds_count{limit="key",name="reporting"}"#), Some(3.0));
    assert_eq!(metric(&text, "mmgate_limit_waiting"), Some(0.0));
}

#[tokio::test]
async fn a_wait_longer_than_max_wait_and_the_clients_own_limit_refuse_at_once() {
    let (gate, fake, _keys) = start("", |toml| {
        let toml = key_limit(r#"{ per_minute = 6, burst = 1, max_wait = "1s" }"#)(toml);
        with_lines(&toml, "clients.erp-sync", "limit = { per_minute = 60, burst = 1 }")
    })
    .await;
    let url = gate.url("/graphql");
    assert_eq!(post(&url, &[AS_DASHBOARD, JSON], nth(0)).await.status, 200);
    let started = Instant::now();
    // The next turn is 10 s away, beyond max_wait: no point waiting.
    let message = post(&url, &[AS_DASHBOARD, JSON], nth(1)).await.assert_error(429, "rate_limited");
    assert!(message.contains("key `reporting`"), "{message}");
    assert!(started.elapsed() < Duration::from_millis(500));
    // A client's own limit never waits.
    let erp = [("authorization", "Bearer erp-token-2"), JSON];
    let message = post(&gate.url("/erp/x"), &erp, "x").await;
    assert_eq!(message.status, 200);
    let message = post(&gate.url("/erp/x"), &erp, "y").await.assert_error(429, "rate_limited");
    assert!(message.contains("client `erp-sync`"), "{message}");
    assert_eq!(fake.calls(), 2);
}

#[tokio::test]
async fn a_waiting_caller_that_leaves_is_dropped_and_spends_nothing() {
    let (gate, fake, _keys) = start("", key_limit(r#"{ per_minute = 60, burst = 1, max_wait = "30s" }"#)).await;
    let url = gate.url("/graphql");
    assert_eq!(post(&url, &[AS_DASHBOARD, JSON], nth(0)).await.status, 200);
    let leaving = tokio::spawn({
        let url = url.clone();
        async move { post(&url, &[AS_DASHBOARD, JSON], nth(1)).await }
    });
    metric_reaches(gate.admin, "mmgate_limit_waiting", 1.0).await;
    leaving.abort();
    metric_reaches(gate.admin, "mmgate_limit_waiting", 0.0).await;
    // The next caller gets the turn the one that left would have had.
    let started = Instant::now();
    assert_eq!(post(&url, &[AS_DASHBOARD, JSON], nth(2)).await.status, 200);
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
    let targets: Vec<_> = fake.received().iter().map(|r| String::from_utf8_lossy(&r.body).into_owned()).collect();
    assert_eq!(targets, [nth(0), nth(2)], "the caller that left never reached the upstream");
}

#[tokio::test]
async fn waiting_turns_go_round_robin_so_a_greedy_client_cannot_starve_a_light_one() {
    let (gate, fake, _keys) = start("", key_limit(r#"{ per_second = 10, burst = 1, max_wait = "10s" }"#)).await;
    let greedy: Vec<_> = (0..20)
        .map(|n| {
            let url = gate.url("/graphql");
            tokio::spawn(async move { post(&url, &[AS_DASHBOARD, JSON], nth(n)).await })
        })
        .collect();
    eventually("the greedy client's requests queue", Duration::from_secs(5), || async {
        let text = metrics_of(&gate).await;
        (metric(&text, "mmgate_limit_waiting").unwrap_or(0.0) >= 10.0).then_some(())
    })
    .await;
    let served_before = fake.calls();
    let light = [("authorization", "Bearer erp-token-2"), JSON];
    let reply = post(&gate.url("/graphql"), &light, nth(100)).await;
    assert_eq!(reply.status, 200);
    let position = fake.received().iter().position(|r| r.body == nth(100)).unwrap() as u64;
    assert!(
        position <= served_before + 2,
        "the light client waited behind {} greedy requests",
        position - served_before
    );
    for g in greedy {
        assert_eq!(g.await.unwrap().status, 200);
    }
    assert_eq!(fake.calls(), 21);
}
