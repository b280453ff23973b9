//! The upstream's connections: at most `upstream.max_connections` open;
//! beyond, requests wait for one.

use std::time::Duration;

use crate::quota::{metrics_of, start};
use crate::support::*;

#[tokio::test]
async fn beyond_max_connections_a_request_waits_for_a_connection() {
    let (gate, fake, _keys) = start("", |t| with_lines(&t, "upstream", "max_connections = 1")).await;
    let first = held_at_the_upstream(&gate, &fake).await;
    let second = tokio::spawn({
        let url = gate.url("/reports/two");
        async move { get(&url, &[AS_DASHBOARD]).await }
    });
    // Both are in mmgate, one upstream: the second waits for the only connection.
    metric_reaches(gate.admin, "mmgate_requests_in_flight", 2.0).await;
    assert_eq!(fake.calls(), 1);
    fake.release();
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(second.await.unwrap().status, 200);
    assert_eq!(fake.calls(), 2);
    assert_eq!(metric(&metrics_of(&gate).await, "mmgate_requests_in_flight"), Some(0.0));
}

#[tokio::test]
async fn waiting_for_a_connection_is_bounded_by_the_upstream_timeout() {
    // The test config's upstream.timeout is 1 s.
    let (gate, fake, _keys) = start("", |t| with_lines(&t, "upstream", "max_connections = 1")).await;
    let first = held_at_the_upstream(&gate, &fake).await;
    let started = std::time::Instant::now();
    get(&gate.url("/reports/two"), &[AS_DASHBOARD]).await.assert_error(504, "upstream_timeout");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    first.await.unwrap().assert_error(504, "upstream_timeout");
    fake.release();
}

/// A first request, sent and held by the upstream (which answers once released).
async fn held_at_the_upstream(gate: &Mmgate, fake: &FakeMm) -> tokio::task::JoinHandle<Reply> {
    fake.hold();
    let first = tokio::spawn({
        let url = gate.url("/reports/one");
        async move { get(&url, &[AS_DASHBOARD]).await }
    });
    eventually("the first request reaches the upstream", Duration::from_secs(5), || async {
        (fake.calls() == 1).then_some(())
    })
    .await;
    first
}
