//! Bounded cost for every input, and every fault blamed on the right side
//! (issue 11): each test is named after the defect it pins, and sends what
//! an adversarial caller on the same host would.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// One fragment of 5,000 distinct fields spread 1,000 times: 34 KB, under
/// every token limit; its analysis used to take ~20 s of CPU.
fn fragment_fan_out() -> String {
    let mut doc = String::from("query Q {");
    for _ in 0..1000 {
        doc.push_str(" ...F");
    }
    doc.push_str(" } fragment F on Query {");
    for i in 0..5000 {
        doc.push_str(&format!(" f{i}"));
    }
    doc.push_str(" }");
    serde_json::json!({ "query": doc }).to_string()
}

/// The metrics text of `gate`, once `ready` holds for it (2 s at most).
async fn metrics_when(gate: &Mmgate, ready: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        let text = get(&format!("http://{}/metrics", gate.admin), &[]).await.text();
        if ready(&text) {
            return text;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "metrics never matched:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn no_upstream_errors(text: &str) -> bool {
    !text.lines().any(|l| l.starts_with("mmgate_upstream_errors_total{") && !l.ends_with(" 0"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_fragment_fan_out_neither_stalls_nor_starves_probes() {
    let (gate, upstream, _keys) = Mmgate::with_upstream("").await;
    let bomb = fragment_fan_out();
    let started = Instant::now();
    let bombs: Vec<_> = (0..6)
        .map(|_| {
            let (url, bomb) = (gate.url("/graphql"), bomb.clone());
            tokio::spawn(async move { post(&url, &[AS_DASHBOARD, JSON], bomb).await })
        })
        .collect();
    // While they are analysed, probes and ordinary requests are answered.
    let health = get(&format!("http://{}/healthz", gate.admin), &[]).await;
    assert_eq!(health.status, 200);
    assert_eq!(get(&gate.url("/reports/a"), &[AS_DASHBOARD]).await.status, 200);
    for bomb in bombs {
        let message = bomb.await.unwrap().assert_error(400, "graphql_limit");
        assert_eq!(message, "max_root_fields exceeded: 5000000 root fields, at most 20");
    }
    // Six analyses took minutes before; seconds are plenty even in a debug build.
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert_eq!(upstream.requests().len(), 1, "only the ordinary request went upstream");
}

#[tokio::test]
async fn head_limits_answer_431_in_json_and_never_forward() {
    let (gate, upstream, _keys) = Mmgate::with_upstream("").await;
    let head = |extra: &str| {
        format!("GET /reports/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dash-token-1\r\n{extra}Connection: close\r\n\r\n")
    };
    // 150 headers: more than hyper's default of 100, fewer than max_headers (200).
    let many: String = (0..150).map(|i| format!("X-H{i}: 1\r\n")).collect();
    let response = raw(gate.addr, head(&many).as_bytes()).await;
    assert_eq!(raw_status(&response), 200, "{response}");
    assert_eq!(upstream.requests().len(), 1);

    let too_many: String = (0..250).map(|i| format!("X-H{i}: 1\r\n")).collect();
    let huge_header = format!("X-Big: {}\r\n", "v".repeat(200 * 1024));
    let long_target =
        format!("GET /reports/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "a".repeat(40 * 1024));
    for (what, request) in
        [("250 headers", head(&too_many)), ("a 200 KiB header", head(&huge_header)), ("a 40 KiB target", long_target)]
    {
        let response = raw(gate.addr, request.as_bytes()).await;
        let reply = parse_raw(&response);
        let message = reply.assert_error(431, "headers_too_large");
        assert!(message.contains("8192 bytes") && message.contains("200 headers"), "{what}: {message}");
    }
    assert_eq!(upstream.requests().len(), 1, "nothing over the limits was forwarded");
    // A head hyper cannot parse gets mmgate's JSON too.
    let response = raw(gate.addr, b"GET /reports/a HTTP/1.1\r\nBad Header: 1\r\n\r\n").await;
    parse_raw(&response).assert_error(400, "bad_request");
    // And the process is alive and serving.
    assert_eq!(get(&gate.url("/reports/b"), &[AS_DASHBOARD]).await.status, 200);
}

#[tokio::test]
async fn max_headers_is_configurable() {
    let upstream = Upstream::start().await;
    let keys = KeyDir::new();
    let gate = Mmgate::start(&with_lines(&config(&upstream.url(), &keys, ""), "server", "max_headers = 10")).await;
    let headers: String = (0..11).map(|i| format!("X-H{i}: 1\r\n")).collect();
    let request = format!("GET /reports/a HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n");
    let message = parse_raw(&raw(gate.addr, request.as_bytes()).await).assert_error(431, "headers_too_large");
    assert!(message.contains("10 headers"), "{message}");
    upstream.assert_untouched();
}

#[tokio::test]
async fn a_slow_head_gets_408_and_an_idle_connection_outlives_the_header_timeout() {
    let upstream = Upstream::start().await;
    let keys = KeyDir::new();
    let gate = with_timeouts(&upstream, &keys, "header_timeout = \"300ms\"\nidle_timeout = \"900ms\"").await;

    // Half a head, then nothing: 408 in JSON, then the connection closes.
    let slow = TcpStream::connect(gate.addr).await.unwrap();
    half_head_gets_408(slow, b"GET /reports/a HTTP/1.1\r\nHost: x\r\n").await;

    // A keep-alive connection idle for longer than header_timeout still serves...
    let mut idle = TcpStream::connect(gate.addr).await.unwrap();
    let request = b"GET /reports/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dash-token-1\r\n\r\n";
    idle.write_all(request).await.unwrap();
    assert_eq!(raw_status(&read_response(&mut idle).await), 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    idle.write_all(request).await.unwrap();
    assert_eq!(raw_status(&read_response(&mut idle).await), 200);
    // ...and is closed once idle for longer than idle_timeout, with nothing written.
    let started = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), idle.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(started.elapsed() >= Duration::from_millis(700), "{:?}", started.elapsed());
    assert_eq!(upstream.requests().len(), 2);
}

#[tokio::test]
async fn timeouts_hold_through_a_long_request_and_for_a_head_started_while_idle() {
    let upstream = Upstream::start().await;
    let keys = KeyDir::new();

    // A response that takes ten header timeouts neither cuts the request nor
    // keeps the connection open past idle_timeout afterwards.
    let gate = with_timeouts(&upstream, &keys, "header_timeout = \"300ms\"\nidle_timeout = \"900ms\"").await;
    let closed = closed_after_slow_answer(&gate).await;
    assert!(closed >= Duration::from_millis(700), "{closed:?}");

    // A head started on a connection idle for a while is owed within
    // header_timeout, long before the idle timeout would close it.
    let gate = with_timeouts(&upstream, &keys, "header_timeout = \"300ms\"\nidle_timeout = \"20s\"").await;
    let mut idle = TcpStream::connect(gate.addr).await.unwrap();
    idle.write_all(b"GET /reports/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dash-token-1\r\n\r\n").await.unwrap();
    assert_eq!(raw_status(&read_response(&mut idle).await), 200);
    // Idle for over two header timeouts (the driver's timer has been re-armed
    // for the idle deadline meanwhile), then half a head.
    tokio::time::sleep(Duration::from_millis(700)).await;
    half_head_gets_408(idle, b"GET /reports/a HTTP/1.1\r\n").await;

    // An idle timeout shorter than the header timeout: after a request that
    // outlasted a look at the connection, idle_timeout still counts from the
    // response's end, not from the next look header_timeout later.
    let gate = with_timeouts(&upstream, &keys, "header_timeout = \"2s\"\nidle_timeout = \"300ms\"").await;
    let closed = closed_after_slow_answer(&gate).await;
    assert!(closed >= Duration::from_millis(200) && closed < Duration::from_millis(800), "{closed:?}");
}

/// mmgate with these `[server]` timeouts, and an upstream timeout that
/// lets `/reports/slow` (3 s) answer.
async fn with_timeouts(upstream: &Upstream, keys: &KeyDir, server: &str) -> Mmgate {
    let toml = with_lines(&config(&upstream.url(), keys, ""), "server", server);
    Mmgate::start(&toml.replace("\ntimeout = \"1s\"", "\ntimeout = \"5s\"")).await
}

/// Writes `half` a head on `stream`, then nothing: a 408 in JSON no sooner
/// than a 300 ms header_timeout allows (250 ms: timer slack), then the
/// connection closes.
async fn half_head_gets_408(mut stream: TcpStream, half: &[u8]) {
    stream.write_all(half).await.unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await.unwrap().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250), "{:?}", started.elapsed());
    parse_raw(&String::from_utf8_lossy(&out)).assert_error(408, "request_timeout");
}

/// How long after a 3 s answer mmgate closes the keep-alive connection,
/// having written nothing more.
async fn closed_after_slow_answer(gate: &Mmgate) -> Duration {
    let mut long = TcpStream::connect(gate.addr).await.unwrap();
    long.write_all(b"GET /reports/slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dash-token-1\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(raw_status(&read_response(&mut long).await), 200);
    let ended = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), long.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    ended.elapsed()
}

#[tokio::test]
async fn a_malformed_chunk_is_the_callers_400_not_an_upstream_error() {
    let (gate, upstream, _keys) = Mmgate::with_upstream("").await;
    for path in ["/reports/production", "/graphql"] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dash-token-1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\n{{\"a\"\r\nzz\r\n"
        );
        let response = raw(gate.addr, request.as_bytes()).await;
        let message = parse_raw(&response).assert_error(400, "bad_request");
        assert!(message.contains("malformed"), "{path}: {message}");
    }
    let text =
        metrics_when(&gate, |t| t.contains(r#"status="400"} 2"#) || t.matches(r#"status="400"} 1"#).count() == 2).await;
    assert!(no_upstream_errors(&text), "{text}");
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());
}

#[tokio::test]
async fn a_caller_leaving_mid_upload_is_a_client_abort_not_an_upstream_error() {
    let (gate, _upstream, _keys) = Mmgate::with_upstream("").await;
    let mut stream = TcpStream::connect(gate.addr).await.unwrap();
    let head = "POST /reports/production HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dash-token-1\r\nContent-Length: 1000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[b'a'; 100]).await.unwrap();
    // The request is in mmgate's hands (its body being streamed) before the caller leaves.
    metric_reaches(gate.admin, "mmgate_requests_in_flight", 1.0).await;
    drop(stream);
    let text = metrics_when(&gate, |t| t.contains(r#"client="dashboard",status="499"} 1"#)).await;
    assert!(no_upstream_errors(&text), "{text}");
}

#[tokio::test]
async fn a_stalled_upload_is_408_not_an_upstream_timeout() {
    let upstream = Upstream::start().await;
    let keys = KeyDir::new();
    let toml = with_lines(&config(&upstream.url(), &keys, ""), "server", "body_idle_timeout = \"300ms\"");
    let gate = Mmgate::start(&toml.replace("\ntimeout = \"1s\"", "\ntimeout = \"5s\"")).await;
    let (tx, body) = body_channel();
    let url = gate.url("/reports/production");
    let upload = tokio::spawn(async move { send_streaming(&url, &[AS_DASHBOARD], body).await });
    tx.send(bytes::Bytes::from_static(b"first part")).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(3), upload).await.expect("answered").unwrap();
    let message = reply.assert_error(408, "request_timeout");
    assert!(message.contains("body_idle_timeout"), "{message}");
    drop(tx);
    let text = metrics_when(&gate, |t| t.contains(r#"status="408"} 1"#)).await;
    assert!(no_upstream_errors(&text), "{text}");
}

#[tokio::test]
async fn an_oversized_declared_body_is_refused_before_it_costs_quota() {
    let upstream = Upstream::start().await;
    let keys = KeyDir::new();
    let toml =
        with_lines(&config(&upstream.url(), &keys, ""), "clients.dashboard", "limit = { per_minute = 1, burst = 1 }");
    let gate = Mmgate::start(&toml).await;
    for _ in 0..3 {
        post(&gate.url("/reports/production"), &[AS_DASHBOARD], vec![b'x'; 100 * 1024])
            .await
            .assert_error(413, "body_too_large");
    }
    // The one request the limit allows is still there.
    assert_eq!(post(&gate.url("/reports/production"), &[AS_DASHBOARD], "{}").await.status, 200);
    get(&gate.url("/reports/production"), &[AS_DASHBOARD]).await.assert_error(429, "rate_limited");
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn max_in_flight_holds_while_the_upstream_works_even_after_the_caller_left() {
    let upstream = Upstream::start().await;
    let keys = KeyDir::new();
    let gate =
        Mmgate::start(&with_lines(&config(&upstream.url(), &keys, ""), "keys.reporting", "max_in_flight = 1")).await;
    // Fire and abort: the caller leaves as soon as the upstream has the request.
    let mut stream = TcpStream::connect(gate.addr).await.unwrap();
    stream
        .write_all(b"GET /reports/slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dash-token-1\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    while upstream.requests().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(stream);
    // The caller is logged as gone...
    metrics_when(&gate, |t| t.contains(r#"status="499"} 1"#)).await;
    // ...yet the upstream is still working on its request (until upstream.timeout, 1 s).
    let message = get(&gate.url("/reports/a"), &[AS_ERP]).await.assert_error(429, "rate_limited");
    assert!(message.contains("max_in_flight"), "{message}");
    // Once the upstream call has ended, the permit is back.
    let started = Instant::now();
    while get(&gate.url("/reports/a"), &[AS_ERP]).await.status != 200 {
        assert!(started.elapsed() < Duration::from_secs(3), "the permit never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn connections_beyond_max_connections_wait_and_the_admin_listener_still_answers() {
    let upstream = Upstream::start().await;
    let keys = KeyDir::new();
    let gate = Mmgate::start(&with_lines(&config(&upstream.url(), &keys, ""), "server", "max_connections = 2")).await;
    let request = b"GET /reports/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dash-token-1\r\n\r\n";
    let mut first = TcpStream::connect(gate.addr).await.unwrap();
    let mut second = TcpStream::connect(gate.addr).await.unwrap();
    for stream in [&mut first, &mut second] {
        stream.write_all(request).await.unwrap();
        assert_eq!(raw_status(&read_response(stream).await), 200);
    }
    // A third connection is accepted by the kernel, not served by mmgate.
    let mut third = TcpStream::connect(gate.addr).await.unwrap();
    third.write_all(request).await.unwrap();
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), third.read(&mut buf)).await.is_err(),
        "the third connection was served"
    );
    assert_eq!(get(&format!("http://{}/healthz", gate.admin), &[]).await.status, 200);
    drop(first);
    assert_eq!(raw_status(&read_response(&mut third).await), 200, "served once a slot was free");
}

/// Reads one response (head and a Content-Length body) from a keep-alive connection.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(6), stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if out.len() >= end + 4 + length {
                return text;
            }
        }
    }
}
