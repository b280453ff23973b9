//! DESIGN.md steps 5 and 6: what reaches the upstream, and what comes back.

use std::time::{Duration, Instant};

use http::Method;

use crate::support::*;

#[tokio::test]
async fn the_key_replaces_the_callers_credentials() {
    let (gate, upstream, _keys) = Mmgate::with_upstream("").await;
    let reply = get(
        &gate.url("/reports/production?x=1"),
        &[AS_DASHBOARD, ("proxy-authorization", "Basic abc"), ("x-custom", "kept"), ("host", "evil.example")],
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["x-upstream"], "fake-mm");
    let seen = upstream.only();
    assert_eq!(seen.target, "/reports/production?x=1");
    assert_eq!(seen.headers.get_all("authorization").iter().count(), 1);
    assert_eq!(seen.header("authorization"), Some(&*format!("Bearer {REPORTING_KEY}")));
    assert_eq!(seen.header("proxy-authorization"), None);
    assert_eq!(seen.header("host"), Some(&*upstream.addr.to_string()));
    assert_eq!(seen.header("x-custom"), Some("kept"));
}

#[tokio::test]
async fn connection_cannot_strip_the_injected_key() {
    let (gate, upstream, _keys) = Mmgate::with_upstream("").await;
    let reply = get(
        &gate.url("/reports/production"),
        &[
            AS_DASHBOARD,
            ("connection", "Authorization, X-Drop-Me, Host"),
            ("x-drop-me", "1"),
            ("te", "trailers"),
            ("keep-alive", "timeout=5"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200);
    let seen = upstream.only();
    assert_eq!(seen.header("authorization"), Some(&*format!("Bearer {REPORTING_KEY}")));
    assert_eq!(seen.header("host"), Some(&*upstream.addr.to_string()));
    for dropped in ["x-drop-me", "te", "keep-alive"] {
        assert_eq!(seen.header(dropped), None, "{dropped} should not be forwarded");
    }
}

#[tokio::test]
async fn request_ids_are_kept_or_made_and_returned() {
    let (gate, upstream, _keys) = Mmgate::with_upstream("").await;
    let reply = get(&gate.url("/reports/a"), &[AS_DASHBOARD, ("x-request-id", "caller-id_1.2")]).await;
    assert_eq!(reply.headers["x-request-id"], "caller-id_1.2");
    let reply = get(&gate.url("/reports/b"), &[AS_DASHBOARD, ("x-request-id", "bad id with spaces")]).await;
    let made = reply.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(made, "bad id with spaces");
    assert!(made.len() <= 128 && made.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
    let long = "a".repeat(129);
    let reply = get(&gate.url("/reports/c"), &[AS_DASHBOARD, ("x-request-id", &long)]).await;
    assert_ne!(reply.headers["x-request-id"], long.as_str());
    let ids: Vec<String> = upstream.requests().iter().map(|r| r.header("x-request-id").unwrap().to_owned()).collect();
    assert_eq!(ids[0], "caller-id_1.2");
    assert_eq!(ids[1], made);
    // Errors carry the id too, in the header and the body.
    let reply = get(&gate.url("/nowhere"), &[("x-request-id", "err-1")]).await;
    reply.assert_error(404, "no_route");
    assert_eq!(reply.json()["request_id"], "err-1");
}

#[tokio::test]
async fn absolute_form_targets_and_host_headers_never_redirect_traffic() {
    let (gate, upstream, _keys) = Mmgate::with_upstream("").await;
    let request = "GET http://evil.example:9999/reports/production?q=1 HTTP/1.1\r\nHost: evil.example:9999\r\nAuthorization: Bearer dash-token-1\r\nConnection: close\r\n\r\n";
    let response = raw(gate.addr, request.as_bytes()).await;
    assert_eq!(raw_status(&response), 200, "{response}");
    let seen = upstream.only();
    assert_eq!(seen.target, "/reports/production?q=1");
    assert_eq!(seen.header("host"), Some(&*upstream.addr.to_string()));
}

#[tokio::test]
async fn upstream_statuses_and_redirects_pass_through_unchanged() {
    let (gate, upstream, _keys) = Mmgate::with_upstream("").await;
    for code in [201u16, 400, 401, 404, 418, 500, 503] {
        let reply = get(&gate.url(&format!("/reports/status/{code}")), &[AS_DASHBOARD]).await;
        assert_eq!(reply.status.as_u16(), code);
        assert_eq!(reply.text(), format!(r#"{{"upstream_status":{code}}}"#));
        assert_eq!(reply.headers["x-upstream"], "fake-mm");
    }
    let reply = get(&gate.url("/reports/redirect"), &[AS_DASHBOARD]).await;
    assert_eq!(reply.status, 302);
    assert_eq!(reply.headers["location"], "https://elsewhere.example/next?x=1");
    // The redirect was not followed: the upstream saw one request for it.
    assert_eq!(upstream.requests().iter().filter(|r| r.target == "/reports/redirect").count(), 1);
}

#[tokio::test]
async fn bodies_stream_both_ways() {
    let (gate, upstream, _keys) = Mmgate::with_upstream("").await;
    let body: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
    let reply = post(
        &gate.url("/reports/production"),
        &[AS_DASHBOARD, ("content-type", "application/octet-stream")],
        body.clone(),
    )
    .await;
    assert_eq!(reply.status, 200);
    let seen = upstream.only();
    assert_eq!(seen.body, body);
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.header("content-type"), Some("application/octet-stream"));

    // 8 MiB back, far above max_body: responses are not limited, only streamed.
    let reply = get(&gate.url(&format!("/reports/bytes/{}", 8 * 1024 * 1024)), &[AS_DASHBOARD]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), 8 * 1024 * 1024);
}

#[tokio::test]
async fn declared_oversized_bodies_are_413_and_never_forwarded() {
    let (gate, upstream, _keys) = Mmgate::with_upstream("").await;
    let reply = post(&gate.url("/reports/production"), &[AS_DASHBOARD], vec![b'a'; 64 * 1024 + 1]).await;
    let message = reply.assert_error(413, "body_too_large");
    assert!(message.contains("65536"), "{message}");
    // Exactly at the limit is fine.
    let reply = post(&gate.url("/reports/production"), &[AS_DASHBOARD], vec![b'a'; 64 * 1024]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(upstream.only().body.len(), 64 * 1024);
}

#[tokio::test]
async fn chunked_oversized_bodies_are_413() {
    let (gate, upstream, _keys) = Mmgate::with_upstream("").await;
    let mut request = b"POST /reports/production HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dash-token-1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    let chunk = vec![b'z'; 16 * 1024];
    for _ in 0..6 {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(&chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let response = raw(gate.addr, &request).await;
    assert_eq!(raw_status(&response), 413, "{response}");
    assert!(response.contains(r#""code":"body_too_large""#), "{response}");
    // The upstream never received a complete request.
    upstream.assert_untouched();
}

#[tokio::test]
async fn smuggling_content_length_with_chunked_is_refused_or_chunked_wins() {
    let (gate, upstream, _keys) = Mmgate::with_upstream("").await;
    let request = b"POST /reports/production HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dash-token-1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let response = raw(gate.addr, request).await;
    let status = raw_status(&response);
    if status == 200 {
        let seen = upstream.only();
        assert_eq!(&seen.body[..], b"hello");
    } else {
        assert_eq!(status, 400, "{response}");
        upstream.assert_untouched();
    }
}

#[tokio::test]
async fn oversized_headers_are_431() {
    let (gate, upstream, _keys) = Mmgate::with_upstream("").await;
    let big = "v".repeat(9 * 1024);
    let reply = get(&gate.url("/reports/production"), &[AS_DASHBOARD, ("x-big", &big)]).await;
    reply.assert_error(431, "headers_too_large");
    upstream.assert_untouched();
}

#[tokio::test]
async fn unreachable_upstream_is_502() {
    // Bind then drop a listener: nothing listens on that port any more.
    let port = free_port();
    let keys = KeyDir::new();
    let gate = Mmgate::start(&config(&format!("http://127.0.0.1:{port}"), &keys, "")).await;
    let reply = get(&gate.url("/reports/production"), &[AS_DASHBOARD]).await;
    let message = reply.assert_error(502, "upstream_unreachable");
    assert!(!message.contains("127.0.0.1"), "5xx bodies reveal nothing internal: {message}");
    // Still serving afterwards.
    assert_eq!(get(&format!("http://{}/healthz", gate.admin), &[]).await.status, 200);
}

#[tokio::test]
async fn slow_upstream_is_504_after_the_timeout() {
    let (gate, upstream, _keys) = Mmgate::with_upstream("").await;
    let started = Instant::now();
    let reply = get(&gate.url("/reports/slow"), &[AS_DASHBOARD]).await;
    reply.assert_error(504, "upstream_timeout");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_millis(2900), "{waited:?}");
    assert_eq!(upstream.requests().len(), 1, "sent once, never retried");
}

#[tokio::test]
async fn a_stalled_response_body_is_cut() {
    let (gate, _upstream, _keys) = Mmgate::with_upstream("").await;
    let request =
        "GET /reports/stall HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dash-token-1\r\nConnection: close\r\n\r\n";
    let started = Instant::now();
    let response = raw(gate.addr, request.as_bytes()).await;
    assert_eq!(raw_status(&response), 200);
    assert!(response.contains("first,") && response.contains("second,"), "{response}");
    assert!(!response.contains("late"), "the body should be cut before the stalled chunk");
    // Cut after body_idle_timeout (1 s), well before the upstream's 5 s stall ends.
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    // A chunked response that is cut never gets its terminating chunk.
    assert!(!response.ends_with("0\r\n\r\n"), "{response:?}");
}

#[tokio::test]
async fn tunnels_and_trace_are_405() {
    let (gate, upstream, _keys) = Mmgate::with_upstream("").await;
    let connect = "CONNECT api.machinemetrics.com:443 HTTP/1.1\r\nHost: api.machinemetrics.com:443\r\nAuthorization: Bearer dash-token-1\r\n\r\n";
    let response = raw(gate.addr, connect.as_bytes()).await;
    assert_eq!(raw_status(&response), 405, "{response}");
    assert!(response.contains(r#""code":"method_not_allowed""#), "{response}");

    let reply = get(
        &gate.url("/graphql"),
        &[
            AS_DASHBOARD,
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
    )
    .await;
    reply.assert_error(405, "method_not_allowed");

    let reply = send(Method::TRACE, &gate.url("/reports/production"), &[AS_DASHBOARD], "").await;
    reply.assert_error(405, "method_not_allowed");
    upstream.assert_untouched();
}

#[tokio::test]
async fn other_methods_are_forwarded() {
    let (gate, upstream, _keys) = Mmgate::with_upstream("").await;
    for method in [Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS, Method::HEAD] {
        let reply = send(method.clone(), &gate.url("/reports/x"), &[AS_DASHBOARD], "").await;
        assert_eq!(reply.status, 200, "{method}");
    }
    let methods: Vec<Method> = upstream.requests().into_iter().map(|r| r.method).collect();
    assert_eq!(methods, [Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS, Method::HEAD]);
}

#[tokio::test]
async fn head_answers_carry_the_length_but_no_body_and_keep_the_connection() {
    let (gate, upstream, _keys) = Mmgate::with_upstream("").await;
    let auth = "Authorization: Bearer dash-token-1\r\n";
    let request = format!(
        "HEAD /reports/status/200 HTTP/1.1\r\nHost: x\r\n{auth}\r\n\
         GET /reports/status/200 HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    );
    let text = raw(gate.addr, request.as_bytes()).await;
    let body = r#"{"upstream_status":200}"#;
    let (head_reply, get_reply) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{text}"));
    assert!(head_reply.starts_with("HTTP/1.1 200"), "{text}");
    assert!(head_reply.to_ascii_lowercase().contains(&format!("content-length: {}", body.len())), "{text}");
    // Nothing between the HEAD answer's head and the next response.
    assert!(get_reply.starts_with("HTTP/1.1 200"), "{text}");
    assert!(get_reply.ends_with(body), "{text}");
    let methods: Vec<Method> = upstream.requests().into_iter().map(|r| r.method).collect();
    assert_eq!(methods, [Method::HEAD, Method::GET]);
}

#[tokio::test]
async fn a_connect_that_hangs_is_502_after_connect_timeout() {
    // A listener whose accept queue is full: the kernel drops further SYNs,
    // so connecting hangs, like a firewalled host.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let _filler = std::net::TcpStream::connect(addr).unwrap();

    let keys = KeyDir::new();
    let toml = config(&format!("http://{addr}"), &keys, "")
        .replace("connect_timeout = \"1s\"", "connect_timeout = \"200ms\"")
        .replace("\ntimeout = \"1s\"", "\ntimeout = \"5s\"");
    let gate = Mmgate::start(&toml).await;
    let started = Instant::now();
    let reply = get(&gate.url("/reports/production"), &[AS_DASHBOARD]).await;
    reply.assert_error(502, "upstream_unreachable");
    assert!(started.elapsed() < Duration::from_millis(1500), "{:?}", started.elapsed());
    drop(listener);
}
