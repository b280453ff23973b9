//! The opt-in answer cache (`cache = { ttl }` on a route): hits, expiry,
//! bypass, what is never kept, and keys told apart by fingerprint.

use std::time::Duration;

use crate::cli::{spawn, terminate};
use crate::quota::{extra, gql, metrics_of, start, QUERY};
use crate::support::*;

fn cache_header(reply: &Reply) -> &str {
    reply.headers.get("x-mmgate-cache").map_or("(none)", |v| v.to_str().unwrap())
}

#[tokio::test]
async fn a_cached_answer_is_served_until_its_ttl_then_fetched_again() {
    let (gate, fake, _keys) = start("", |t| t).await;
    let url = gate.url("/cached/graphql");
    let body = gql(QUERY, serde_json::json!({}));
    let miss = post(&url, &[AS_DASHBOARD, JSON], body.clone()).await;
    assert_eq!((miss.status.as_u16(), cache_header(&miss)), (200, "miss"));
    assert!(!miss.headers.contains_key("age"));
    let hit = post(&url, &[AS_DASHBOARD, JSON], body.clone()).await;
    assert_eq!((hit.status.as_u16(), cache_header(&hit)), (200, "hit"));
    assert_eq!(hit.body, miss.body);
    assert!(hit.headers["age"].to_str().unwrap().parse::<u64>().unwrap() <= 3);
    assert_ne!(hit.headers["x-request-id"], miss.headers["x-request-id"]);
    assert_eq!(fake.calls(), 1);
    let text = metrics_of(&gate).await;
    assert_eq!(
        metric(&text, r#"mmgate_upstream_requests_avoided_total{route="/cached/graphql",reason="cache"}"#),
        Some(1.0)
    );
    assert_eq!(metric(&text, "mmgate_cache_entries"), Some(1.0));
    assert!(metric(&text, "mmgate_cache_bytes").unwrap() > miss.body.len() as f64);
    // The route's ttl is 3 s: the answer expires and is fetched again.
    let again = eventually("the cached answer expires", Duration::from_secs(10), || async {
        let reply = post(&url, &[AS_DASHBOARD, JSON], body.clone()).await;
        (cache_header(&reply) == "miss").then_some(reply)
    })
    .await;
    assert_eq!(again.json()["data"]["serial"], 2);
    assert_eq!(fake.calls(), 2);
}

#[tokio::test]
async fn no_cache_from_the_caller_bypasses_the_cache_and_refreshes_it() {
    let (gate, fake, _keys) = start("", |t| t).await;
    let url = gate.url("/creports/summary");
    assert_eq!(cache_header(&get(&url, &[AS_DASHBOARD]).await), "miss");
    let fresh = get(&url, &[AS_DASHBOARD, ("cache-control", "no-cache")]).await;
    assert_eq!((fresh.status.as_u16(), cache_header(&fresh)), (200, "bypass"));
    assert_eq!(fresh.json()["serial"], 2);
    let hit = get(&url, &[AS_DASHBOARD]).await;
    assert_eq!((cache_header(&hit), hit.json()["serial"].as_u64()), ("hit", Some(2)), "the refreshed answer");
    assert_eq!(fake.calls(), 2);
}

#[tokio::test]
async fn errors_and_failures_are_never_cached() {
    let (gate, fake, _keys) = start("", |t| t).await;
    let graphql = gate.url("/cached/graphql");
    let failing = gql("{ machines { boom { id } } }", serde_json::json!({}));
    for _ in 0..2 {
        let reply = post(&graphql, &[AS_DASHBOARD, JSON], failing.clone()).await;
        assert_eq!((reply.status.as_u16(), cache_header(&reply)), (200, "miss"));
        assert!(reply.json()["errors"].is_array());
    }
    for path in ["/creports/status/500", "/creports/status/404", "/creports/status/503"] {
        for _ in 0..2 {
            let reply = get(&gate.url(path), &[AS_DASHBOARD]).await;
            assert_eq!(cache_header(&reply), "miss", "{path}");
        }
    }
    assert_eq!(fake.calls(), 8);
}

#[tokio::test]
async fn answers_are_kept_per_key_so_a_rotated_key_starts_afresh() {
    let (gate, fake, keys) = start("", |t| t).await;
    let url = gate.url("/creports/summary");
    assert_eq!(cache_header(&get(&url, &[AS_DASHBOARD]).await), "miss");
    assert_eq!(cache_header(&get(&url, &[AS_DASHBOARD]).await), "hit");
    std::fs::write(keys.path("reporting.key"), "rotated-key-value\n").unwrap();
    eventually("the new key is in use", Duration::from_secs(5), || async {
        let reply = get(&url, &[AS_DASHBOARD]).await;
        (cache_header(&reply) == "miss").then_some(())
    })
    .await;
    let last = fake.received().pop().unwrap();
    assert_eq!(last.authorization.as_deref(), Some("Bearer rotated-key-value"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_says_how_each_read_was_served() {
    let fake = FakeMm::start(Duration::ZERO, 1000).await;
    let keys = KeyDir::new();
    let (port, admin, toml) = on_free_ports(&config(&fake.url(), &keys, &extra()));
    let path = keys.path("mmgate.toml");
    std::fs::write(&path, toml).unwrap();
    let child = spawn(&path, &[("MMGATE_SERVER__LOG_FORMAT", "json")], admin);
    let url = format!("http://127.0.0.1:{port}/creports/logged");
    for id in ["first", "second"] {
        assert_eq!(get(&url, &[AS_DASHBOARD, ("x-request-id", id)]).await.status, 200);
    }
    eventually("both access lines", Duration::from_secs(2), || async {
        child.logs().contains("\"request_id\":\"second\"").then_some(())
    })
    .await;
    let (_, logs) = terminate(child);
    let served: Vec<String> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "mmgate::access")
        .map(|v| v["cache"].as_str().unwrap_or("(none)").to_owned())
        .collect();
    assert_eq!(served, ["miss", "hit"]);
}

#[tokio::test]
async fn every_answer_on_a_cached_route_says_how_it_was_served() {
    let (gate, fake, _keys) = start("", |t| t).await;
    let url = gate.url("/cached/graphql");
    let mutation = gql("mutation { touch { id } }", serde_json::json!({}));
    let written = post(&url, &[crate::quota::AS_WRITER, JSON], mutation.clone()).await;
    assert_eq!((written.status.as_u16(), cache_header(&written)), (200, "bypass"), "a write is never from the cache");
    let refused = post(&url, &[crate::quota::AS_OUTSIDER, JSON], gql(QUERY, serde_json::json!({}))).await;
    refused.assert_error(403, "scope_denied");
    assert_eq!(cache_header(&refused), "miss");
    let ranged = get(&gate.url("/creports/file"), &[AS_DASHBOARD, ("range", "bytes=0-1")]).await;
    assert_eq!(cache_header(&ranged), "bypass");
    assert_eq!(
        cache_header(&get(&gate.url("/creports/file"), &[AS_DASHBOARD, ("range", "bytes=0-1")]).await),
        "bypass"
    );
    assert_eq!(fake.calls(), 3);
}
