//! The admin listener: liveness and readiness, never a key.

use std::time::Duration;

use crate::support::*;
use sha2::Digest;

#[tokio::test]
async fn healthz_and_readyz_report_keys_by_fingerprint() {
    let (gate, _upstream, _keys) = Mmgate::with_upstream("").await;
    let health = get(&format!("http://{}/healthz", gate.admin), &[]).await;
    assert_eq!(health.status, 200);
    let ready = get(&format!("http://{}/readyz", gate.admin), &[]).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    let fp = |k: &str| hex::encode(&sha2::Sha256::digest(k.as_bytes())[..4]);
    assert_eq!(
        ready.json(),
        serde_json::json!({
            "ready": true,
            "keys": [
                {"name": "erp", "fingerprint": fp(ERP_KEY), "state": "loaded"},
                {"name": "reporting", "fingerprint": fp(REPORTING_KEY), "state": "loaded"},
            ]
        })
    );
    assert!(!ready.text().contains(REPORTING_KEY));
    // The admin listener does not proxy.
    assert_eq!(get(&format!("http://{}/reports/production", gate.admin), &[AS_DASHBOARD]).await.status, 404);
}

#[tokio::test]
async fn shutdown_fails_readiness_closes_the_listener_and_drains() {
    let (mut gate, upstream, _keys) = Mmgate::with_upstream("").await;
    let (addr, admin) = (gate.addr, gate.admin);
    // A request that takes the whole upstream timeout (1 s) to answer.
    let url = gate.url("/reports/slow");
    let slow = tokio::spawn(async move { get(&url, &[AS_DASHBOARD]).await });
    while upstream.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gate.begin_stop();
    let ready = eventually("readiness fails once shutdown starts", Duration::from_secs(2), || async {
        let ready = get(&format!("http://{admin}/readyz"), &[]).await;
        (ready.status == 503).then_some(ready)
    })
    .await;
    assert_eq!(ready.json()["ready"], false);
    eventually("the proxy listener closes", Duration::from_secs(2), || async {
        tokio::net::TcpStream::connect(addr).await.is_err().then_some(())
    })
    .await;

    // The in-flight request still gets its (timeout) answer, not a cut connection.
    let reply = slow.await.unwrap();
    reply.assert_error(504, "upstream_timeout");
    tokio::time::timeout(Duration::from_secs(3), gate.stopped()).await.expect("drained within the grace");
}

#[tokio::test]
async fn metrics_are_gzipped_for_a_scraper_that_asks() {
    let (gate, _upstream, _keys) = Mmgate::with_upstream("").await;
    assert_eq!(get(&gate.url("/reports/production"), &[AS_DASHBOARD]).await.status, 200);
    let url = format!("http://{}/metrics", gate.admin);
    let plain = get(&url, &[]).await;
    assert_eq!(plain.status, 200);
    assert!(plain.headers.get("content-encoding").is_none());
    let zipped = get(&url, &[("accept-encoding", "gzip")]).await;
    assert_eq!(zipped.status, 200);
    assert_eq!(zipped.headers.get("content-encoding").map(|v| v.as_bytes()), Some(&b"gzip"[..]));
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&zipped.body[..]), &mut text).unwrap();
    assert!(text.contains("mmgate_requests_total{"), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(zipped.body.len() * 4 < plain.body.len(), "{} vs {} bytes", zipped.body.len(), plain.body.len());
}
