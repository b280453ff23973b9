//! The upstream's connections: at most `upstream.max_connections` open;
//! beyond, requests wait for one. A kept-alive connection the upstream
//! closed is not used again, and a request the upstream read is never sent twice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

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

#[tokio::test]
async fn a_request_the_upstream_read_is_never_sent_again_on_a_reused_connection() {
    // DESIGN.md: "mmgate never retries a request that reached the upstream",
    // even a GET, even when it went out on a kept-alive connection that then
    // failed (the case a pool retries when the request was never written).
    for method in [Method::GET, Method::POST] {
        let upstream = RawUpstream::start(Script::AnswerFirstThenDrop).await;
        let keys = KeyDir::new();
        let gate = Mmgate::start(&config(&upstream.url(), &keys, "")).await;
        let first = send(method.clone(), &gate.url("/reports/one"), &[AS_DASHBOARD], "1").await;
        assert_eq!(first.status, 200, "{method}: {}", first.text());
        // Sent on the connection the first one kept alive; read, then dropped unanswered.
        send(method.clone(), &gate.url("/reports/two"), &[AS_DASHBOARD], "2")
            .await
            .assert_error(502, "upstream_unreachable");
        assert_eq!(upstream.requests(), [format!("{method} /reports/one"), format!("{method} /reports/two")]);
        assert_eq!(upstream.connections(), 1, "{method}: no second connection, no second try");
    }
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_not_used_again() {
    let upstream = RawUpstream::start(Script::AnswerThenClose).await;
    let keys = KeyDir::new();
    let gate = Mmgate::start(&config(&upstream.url(), &keys, "")).await;
    assert_eq!(get(&gate.url("/reports/one"), &[AS_DASHBOARD]).await.status, 200);
    // Answered in full, so the connection is back among the idle ones: now
    // the upstream closes its side, and mmgate's side closing in turn is the
    // evidence that it noticed.
    upstream.close.notify_one();
    eventually("mmgate closes the connection the upstream closed", Duration::from_secs(5), || async {
        (upstream.closed_by_mmgate() == 1).then_some(())
    })
    .await;
    assert_eq!(get(&gate.url("/reports/two"), &[AS_DASHBOARD]).await.status, 200);
    assert_eq!(upstream.requests(), ["GET /reports/one", "GET /reports/two"]);
    assert_eq!(upstream.connections(), 2);
}

/// What the raw upstream does with the requests it reads.
#[derive(Clone, Copy)]
enum Script {
    /// The first request gets a kept-alive 200; every later one is read,
    /// then its connection closed without an answer.
    AnswerFirstThenDrop,
    /// Every request gets a 200; then, once told (`close`), the upstream
    /// closes its side of the connection and waits for mmgate to close the other.
    AnswerThenClose,
}

/// An HTTP/1.1 upstream on a raw socket (hyper would not let a test drop a
/// connection between reading a request and answering it), recording the
/// request lines it read and the connections it saw.
struct RawUpstream {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    connections: Arc<AtomicUsize>,
    closed_by_mmgate: Arc<AtomicUsize>,
    close: Arc<tokio::sync::Notify>,
}

impl RawUpstream {
    async fn start(script: Script) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = Self {
            addr: listener.local_addr().unwrap(),
            seen: Arc::default(),
            connections: Arc::default(),
            closed_by_mmgate: Arc::default(),
            close: Arc::default(),
        };
        let (seen, connections, closed, close) = (
            upstream.seen.clone(),
            upstream.connections.clone(),
            upstream.closed_by_mmgate.clone(),
            upstream.close.clone(),
        );
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                connections.fetch_add(1, Ordering::SeqCst);
                let (seen, closed, close) = (seen.clone(), closed.clone(), close.clone());
                tokio::spawn(async move {
                    let mut stream = tokio::io::BufReader::new(stream);
                    while let Some(line) = read_request(&mut stream).await {
                        let n = {
                            let mut seen = seen.lock().unwrap();
                            seen.push(line);
                            seen.len()
                        };
                        if matches!(script, Script::AnswerFirstThenDrop) && n > 1 {
                            return; // dropped: closed without an answer
                        }
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.get_mut().write_all(answer).await.is_err() {
                            return;
                        }
                        if matches!(script, Script::AnswerThenClose) {
                            close.notified().await;
                            let _ = stream.get_mut().shutdown().await;
                            let mut rest = Vec::new();
                            if stream.read_to_end(&mut rest).await.is_ok() {
                                closed.fetch_add(1, Ordering::SeqCst);
                            }
                            return;
                        }
                    }
                });
            }
        });
        upstream
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn closed_by_mmgate(&self) -> usize {
        self.closed_by_mmgate.load(Ordering::SeqCst)
    }
}

/// Reads one request (head, and a body of its Content-Length): its method
/// and target, or None once the connection ends.
async fn read_request(stream: &mut tokio::io::BufReader<tokio::net::TcpStream>) -> Option<String> {
    let mut request_line = String::new();
    if stream.read_line(&mut request_line).await.ok()? == 0 {
        return None;
    }
    let mut length = 0;
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).await.ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.ok()?;
    let mut words = request_line.split_whitespace();
    Some(format!("{} {}", words.next()?, words.next()?))
}
