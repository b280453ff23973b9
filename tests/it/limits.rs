//! DESIGN.md step 4: client, key and budget limits; upstream 429 cool-downs;
//! the in-flight cap. A refused request never reaches the upstream.

use std::time::Duration;

use crate::support::*;

async fn start(edit: impl Fn(String) -> String) -> (Mmgate, Upstream, KeyDir) {
    let upstream = Upstream::start().await;
    let keys = KeyDir::new();
    let gate = Mmgate::start(&edit(config(&upstream.url(), &keys, ""))).await;
    (gate, upstream, keys)
}

fn retry_after(reply: &Reply) -> u64 {
    reply.headers["retry-after"].to_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_burst_then_429_with_retry_after_in_whole_seconds() {
    let (gate, upstream, _keys) =
        start(|t| with_lines(&t, "clients.dashboard", "limit = { per_minute = 6, burst = 2 }")).await;
    let url = gate.url("/reports/production");
    assert_eq!(get(&url, &[AS_DASHBOARD]).await.status, 200);
    assert_eq!(get(&url, &[AS_DASHBOARD]).await.status, 200);
    let reply = get(&url, &[AS_DASHBOARD]).await;
    let message = reply.assert_error(429, "rate_limited");
    assert!(message.contains("client `dashboard`"), "{message}");
    // One request every 10 s: the wait is just under 10 s, rounded up.
    assert_eq!(retry_after(&reply), 10);
    assert_eq!(upstream.requests().len(), 2);
    // Another client is not affected by dashboard's limit.
    assert_eq!(get(&url, &[AS_ERP]).await.status, 200);
}

#[tokio::test]
async fn clients_share_their_key_limit() {
    let (gate, upstream, _keys) =
        start(|t| with_lines(&t, "keys.reporting", "limit = { per_minute = 60, burst = 3 }")).await;
    let url = gate.url("/reports/production");
    for who in [AS_DASHBOARD, AS_ERP, AS_DASHBOARD] {
        assert_eq!(get(&url, &[who]).await.status, 200);
    }
    let message = get(&url, &[AS_ERP]).await.assert_error(429, "rate_limited");
    assert!(message.contains("key `reporting`"), "{message}");
    assert_eq!(upstream.requests().len(), 3);
    // The erp key has no limit of its own.
    assert_eq!(post(&gate.url("/erp/jobdispatch/start"), &[AS_ERP], "{}").await.status, 200);
}

#[tokio::test]
async fn keys_share_a_budget_and_refusals_charge_nothing() {
    let (gate, upstream, _keys) = start(|t| {
        let t = with_lines(&t, "keys.reporting", "budget = \"acme\"");
        let t = with_lines(&t, "keys.erp", "budget = \"acme\"");
        let t = with_lines(&t, "clients.erp-sync", "limit = { per_minute = 60, burst = 4 }");
        t + "\n[budgets.acme]\nlimit = { per_minute = 60, burst = 2 }\n"
    })
    .await;
    assert_eq!(get(&gate.url("/reports/a"), &[AS_ERP]).await.status, 200);
    assert_eq!(post(&gate.url("/erp/jobdispatch/start"), &[AS_ERP], "{}").await.status, 200);
    for _ in 0..5 {
        let message = get(&gate.url("/reports/b"), &[AS_ERP]).await.assert_error(429, "rate_limited");
        assert!(message.contains("budget `acme`"), "{message}");
    }
    assert_eq!(upstream.requests().len(), 2);
    // Once the budget refills (1 s), erp-sync is let through: the five
    // refusals did not spend its own burst of 4.
    let url = gate.url("/reports/c");
    eventually("the budget never let erp-sync through", Duration::from_secs(3), || async {
        (get(&url, &[AS_ERP]).await.status == 200).then_some(())
    })
    .await;
    assert_eq!(upstream.requests().len(), 3);
}

#[tokio::test]
async fn an_upstream_429_passes_through_and_cools_the_key_down() {
    let (gate, upstream, _keys) = start(|t| t).await;
    let reply = get(&gate.url("/reports/status/429"), &[AS_DASHBOARD]).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.text(), r#"{"upstream_status":429}"#, "the upstream's own answer");
    // During the cool-down (1 s: no Retry-After upstream) the key is paused locally.
    let reply = get(&gate.url("/reports/production"), &[AS_ERP]).await;
    let message = reply.assert_error(429, "rate_limited");
    assert!(message.contains("cool-down"), "{message}");
    assert_eq!(retry_after(&reply), 1);
    // Other keys are not paused.
    assert_eq!(post(&gate.url("/erp/jobdispatch/start"), &[AS_ERP], "{}").await.status, 200);
    assert_eq!(upstream.requests().len(), 2);
    // The cool-down ends: the key works again, without more upstream calls meanwhile.
    let url = gate.url("/reports/production");
    eventually("the cool-down never ended", Duration::from_secs(3), || async {
        (get(&url, &[AS_DASHBOARD]).await.status == 200).then_some(())
    })
    .await;
    assert_eq!(upstream.requests().len(), 3);
}

#[tokio::test]
async fn the_in_flight_cap_refuses_while_full() {
    let (gate, upstream, _keys) = start(|t| with_lines(&t, "keys.reporting", "max_in_flight = 1")).await;
    let url = gate.url("/reports/slow");
    let slow = tokio::spawn(async move { get(&url, &[AS_DASHBOARD]).await });
    while upstream.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let message = get(&gate.url("/reports/production"), &[AS_ERP]).await.assert_error(429, "rate_limited");
    assert!(message.contains("max_in_flight"), "{message}");
    slow.await.unwrap().assert_error(504, "upstream_timeout");
    assert_eq!(get(&gate.url("/reports/production"), &[AS_ERP]).await.status, 200);
}
