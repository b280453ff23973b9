//! HTTPS to the upstream: certificate checking, extra CAs (`ca_file`), and
//! HTTP/2 chosen by ALPN when the upstream offers it.

use http::Version;
use mmgate::config::{ConfigError, Settings};

use crate::support::*;

/// mmgate in front of `upstream`, trusting the test CA; `upstream_lines`
/// go into `[upstream]`.
async fn gate_for(upstream: &TlsUpstream, keys: &KeyDir, upstream_lines: &str) -> Mmgate {
    let toml = config(&upstream.url(), keys, "");
    Mmgate::start(&with_lines(&toml, "upstream", upstream_lines)).await
}

fn trusting_test_ca() -> String {
    format!("ca_file = \"{}\"", tls_fixture("ca.pem").display())
}

#[tokio::test]
async fn http2_is_spoken_when_the_upstream_offers_it() {
    let upstream = TlsUpstream::start(&[b"h2", b"http/1.1"]).await;
    let keys = KeyDir::new();
    let gate = gate_for(&upstream, &keys, &trusting_test_ca()).await;

    let reply = get(&gate.url("/reports/production"), &[AS_DASHBOARD, ("host", "evil.example")]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), r#"{"version":"HTTP/2.0"}"#);
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].version, Version::HTTP_2);
    assert_eq!(seen[0].authority.as_deref(), Some(&*format!("localhost:{}", upstream.addr.port())));
    assert_eq!(seen[0].host, None, "HTTP/2 carries the authority, not a Host header");
    assert_eq!(seen[0].authorization.as_deref(), Some(&*format!("Bearer {REPORTING_KEY}")));
    assert_eq!(seen[0].path, "/reports/production");

    // The caller is answered in HTTP/1.1 whatever the upstream spoke.
    let raw_reply = raw(
        gate.addr,
        b"GET /reports/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dash-token-1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(raw_reply.starts_with("HTTP/1.1 200 OK\r\n"), "{raw_reply}");
}

#[tokio::test]
async fn concurrent_requests_share_one_http2_connection() {
    let upstream = TlsUpstream::start(&[b"h2", b"http/1.1"]).await;
    let keys = KeyDir::new();
    let gate = gate_for(&upstream, &keys, &trusting_test_ca()).await;
    // One request first: the connection exists before the burst, as in
    // steady operation (a cold burst may race several handshakes).
    assert_eq!(get(&gate.url("/reports/first"), &[AS_DASHBOARD]).await.status, 200);

    // Distinct reads: identical ones in flight at once would share one upstream call.
    let urls: Vec<_> = (0..20).map(|i| gate.url(&format!("/reports/wait?n={i}"))).collect();
    let replies = futures_util::future::join_all(urls.iter().map(|url| get(url, &[AS_DASHBOARD]))).await;
    assert!(replies.iter().all(|r| r.status == 200));
    assert_eq!(upstream.requests().len(), 21);
    assert_eq!(upstream.connections(), 1, "20 overlapping requests, one multiplexed connection");
}

#[tokio::test]
async fn http2_false_speaks_http1_with_a_host_header() {
    let upstream = TlsUpstream::start(&[b"h2", b"http/1.1"]).await;
    let keys = KeyDir::new();
    let gate = gate_for(&upstream, &keys, &format!("{}\nhttp2 = false", trusting_test_ca())).await;

    let urls: Vec<_> = (0..5).map(|i| gate.url(&format!("/reports/wait?n={i}"))).collect();
    let replies = futures_util::future::join_all(urls.iter().map(|url| get(url, &[AS_DASHBOARD]))).await;
    assert!(replies.iter().all(|r| r.status == 200 && r.text() == r#"{"version":"HTTP/1.1"}"#));
    for seen in upstream.requests() {
        assert_eq!(seen.version, Version::HTTP_11);
        assert_eq!(seen.host.as_deref(), Some(&*format!("localhost:{}", upstream.addr.port())));
        assert_eq!(seen.authorization.as_deref(), Some(&*format!("Bearer {REPORTING_KEY}")));
    }
    assert_eq!(upstream.connections(), 5, "HTTP/1.1: one connection per overlapping request");
}

#[tokio::test]
async fn an_upstream_offering_only_http1_gets_http1() {
    let upstream = TlsUpstream::start(&[b"http/1.1"]).await;
    let keys = KeyDir::new();
    let gate = gate_for(&upstream, &keys, &trusting_test_ca()).await;
    let reply = get(&gate.url("/reports/production"), &[AS_DASHBOARD]).await;
    assert_eq!(reply.status, 200);
    let seen = upstream.requests();
    assert_eq!(seen[0].version, Version::HTTP_11);
    assert_eq!(seen[0].host.as_deref(), Some(&*format!("localhost:{}", upstream.addr.port())));
}

#[tokio::test]
async fn an_untrusted_certificate_is_502_and_no_request_is_sent() {
    let upstream = TlsUpstream::start(&[b"h2", b"http/1.1"]).await;
    let keys = KeyDir::new();
    // No ca_file: only the public roots, which did not sign the test certificate.
    let gate = gate_for(&upstream, &keys, "").await;
    let reply = get(&gate.url("/reports/production"), &[AS_DASHBOARD]).await;
    reply.assert_error(502, "upstream_unreachable");
    assert!(upstream.requests().is_empty(), "no request may cross an unverified connection");
    assert!(upstream.failed_handshakes() >= 1);
    // Still serving.
    assert_eq!(get(&format!("http://{}/healthz", gate.admin), &[]).await.status, 200);
}

fn ca_file_problems(line: &str) -> Vec<String> {
    let keys = KeyDir::new();
    let toml = with_lines(&config("https://localhost:1", &keys, ""), "upstream", line);
    match Settings::from_toml(&toml) {
        Ok(_) => panic!("config should be invalid with {line}"),
        Err(ConfigError::Invalid { problems, .. }) => problems.iter().map(ToString::to_string).collect(),
        Err(other) => vec![other.to_string()],
    }
}

#[test]
fn a_bad_ca_file_is_a_config_error_naming_the_key_and_file() {
    let missing = ca_file_problems("ca_file = \"/nonexistent/ca.pem\"");
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert!(missing[0].contains("upstream.ca_file") && missing[0].contains("/nonexistent/ca.pem"), "{missing:?}");

    // A PEM file with a key and no certificate.
    let key_only = tls_fixture("server.key");
    let no_cert = ca_file_problems(&format!("ca_file = \"{}\"", key_only.display()));
    assert!(no_cert[0].contains("upstream.ca_file") && no_cert[0].contains("no certificate"), "{no_cert:?}");
    assert!(!no_cert[0].contains("PRIVATE"), "the file's content is never echoed: {no_cert:?}");
}

#[tokio::test]
async fn http1_connections_are_kept_and_reused() {
    let upstream = TlsUpstream::start(&[b"http/1.1"]).await;
    let keys = KeyDir::new();
    let gate = gate_for(&upstream, &keys, &trusting_test_ca()).await;
    for n in 0..5 {
        assert_eq!(get(&gate.url(&format!("/reports/{n}")), &[AS_DASHBOARD]).await.status, 200);
    }
    assert_eq!(upstream.requests().len(), 5);
    assert_eq!(upstream.connections(), 1, "one kept-alive connection for five requests in turn");
}
