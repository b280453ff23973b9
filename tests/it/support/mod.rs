//! Test harness: a fake MachineMetrics upstream that records what it
//! receives, mmgate started in-process on port 0, and small HTTP clients.

#![allow(dead_code)]

pub mod collector;
#[path = "../../../benches/support/fake_mm.rs"]
pub mod fake_mm;
pub mod proxy;
pub mod redis;
pub mod tls;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mmgate::config::Settings;
use mmgate::Server;
use mmgate::{Gate, Runtime};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

pub use fake_mm::FakeMm;
pub use proxy::ConnectProxy;
pub use tls::{tls_fixture, TlsUpstream};
pub use upstream::Upstream;

/// The reporting key the harness writes to its key file.
pub const REPORTING_KEY: &str = "mm-reporting-key-0123456789abcdef";
/// The ERP key the harness writes to its key file.
pub const ERP_KEY: &str = "mm-erp-key-fedcba9876543210";
/// Token of client `dashboard` (scope reporting).
pub const DASH_TOKEN: &str = "dash-token-1";
/// Token of client `erp-sync` (scopes reporting, erp).
pub const ERP_TOKEN: &str = "erp-token-2";

/// SHA-256 hex, as `token_sha256` expects.
pub fn sha(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A temporary directory holding the key files.
pub struct KeyDir {
    pub dir: tempfile::TempDir,
}

impl KeyDir {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("reporting.key"), format!("{REPORTING_KEY}\n")).unwrap();
        std::fs::write(dir.path().join("erp.key"), ERP_KEY).unwrap();
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The standard test config: two keys, three routes, two token clients.
/// `extra` is appended (more clients, an anonymous client...).
pub fn config(upstream_url: &str, keys: &KeyDir, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
max_body = "64KiB"
max_header_bytes = "8KiB"
shutdown_grace = "2s"

[upstream]
url = "{upstream_url}"
connect_timeout = "1s"
timeout = "1s"
body_idle_timeout = "1s"

[keys.reporting]
file = "{reporting}"
scopes = ["reporting"]

[keys.erp]
file = "{erp}"
scopes = ["erp"]

[[routes]]
path = "/graphql"
key = "reporting"
scope = "reporting"
kind = "graphql"
mutation_scope = "write"

[[routes]]
path = "/reports/*"
key = "reporting"
scope = "reporting"

[[routes]]
path = "/erp/*"
key = "erp"
scope = "erp"

[clients.dashboard]
token_sha256 = "{dash}"
scopes = ["reporting"]

[clients.erp-sync]
token_sha256 = "{erp_token}"
scopes = ["reporting", "erp"]
{extra}
"#,
        reporting = keys.path("reporting.key").display(),
        erp = keys.path("erp.key").display(),
        dash = sha(DASH_TOKEN),
        erp_token = sha(ERP_TOKEN),
    )
}

/// mmgate running in-process.
pub struct Mmgate {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub gate: Arc<Gate>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Mmgate {
    /// Starts mmgate on `toml`.
    pub async fn start(toml: &str) -> Self {
        Self::start_settings(Settings::from_toml(toml).unwrap_or_else(|e| panic!("test config invalid: {e}"))).await
    }

    /// Starts mmgate on `settings`.
    pub async fn start_settings(settings: Settings) -> Self {
        let gate = Gate::new(Runtime::load(settings).unwrap_or_else(|e| panic!("keys: {e:?}")));
        let server = Server::bind(gate.clone()).await.unwrap();
        let addr = server.proxy_addr().unwrap();
        let admin = server.admin_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        while !gate.is_serving() {
            tokio::task::yield_now().await;
        }
        Self { addr, admin, gate, stop: Some(stop), task: Some(task) }
    }

    /// Starts the fake upstream, the key files and mmgate on the standard config.
    pub async fn with_upstream(extra: &str) -> (Self, Upstream, KeyDir) {
        let upstream = Upstream::start().await;
        let keys = KeyDir::new();
        let gate = Self::start(&config(&upstream.url(), &keys, extra)).await;
        (gate, upstream, keys)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Signals shutdown without waiting; `stopped` then waits for `run` to return.
    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for `run` to return after `begin_stop`.
    pub async fn stopped(mut self) {
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    /// Signals shutdown and waits for `run` to return.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

/// A response as the test client saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {:?}", self.body))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts one of mmgate's error shapes with `status` and `code`: REST
    /// (`{"code","message","request_id"}`) or, on GraphQL routes, a GraphQL
    /// response (`{"errors":[{"message","extensions":{"code","request_id"}}]}`);
    /// returns the message.
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        let json = self.json();
        for secret in [REPORTING_KEY, ERP_KEY, DASH_TOKEN, ERP_TOKEN] {
            assert!(!self.text().contains(secret), "secret in error body");
        }
        let (fields, message) = if let Some(errors) = json.get("errors") {
            let content_type = self.headers["content-type"].to_str().unwrap();
            assert!(matches!(content_type, "application/json" | "application/graphql-response+json"), "{content_type}");
            let error = &errors.as_array().unwrap()[0];
            assert_eq!(json.as_object().unwrap().len(), 1, "{json}");
            assert_eq!(errors.as_array().unwrap().len(), 1, "{json}");
            let keys: Vec<&String> = error.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["extensions", "message"], "{json}");
            let extensions: Vec<&String> = error["extensions"].as_object().unwrap().keys().collect();
            assert_eq!(extensions, ["code", "request_id"], "{json}");
            (error["extensions"].clone(), error["message"].clone())
        } else {
            assert_eq!(self.headers["content-type"], "application/json");
            let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["code", "message", "request_id"], "{json}");
            (json.clone(), json["message"].clone())
        };
        assert_eq!(fields["code"], code, "{json}");
        assert_eq!(self.headers["x-request-id"], fields["request_id"].as_str().unwrap());
        message.as_str().unwrap().to_owned()
    }
}

/// Sends one request with a pooled hyper client.
pub async fn send(method: Method, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client.request(request.body(Full::new(body.into())).unwrap()).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Reply { status: parts.status, headers: parts.headers, body }
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    send(Method::GET, url, headers, Bytes::new()).await
}

pub async fn post(url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
    send(Method::POST, url, headers, body).await
}

/// The `dashboard` client's Authorization header.
pub const AS_DASHBOARD: (&str, &str) = ("authorization", "Bearer dash-token-1");
/// A JSON body's Content-Type.
pub const JSON: (&str, &str) = ("content-type", "application/json");
/// The `erp-sync` client's Authorization header.
pub const AS_ERP: (&str, &str) = ("authorization", "Bearer erp-token-2");

/// Writes raw bytes to `addr` and reads until the server closes; returns the text.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A raw HTTP/1.1 response text as a `Reply` (head parsed by httparse).
pub fn parse_raw(response: &str) -> Reply {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head)) = parsed.parse(response.as_bytes()) else {
        panic!("not an HTTP response: {response:?}");
    };
    let mut map = HeaderMap::new();
    for h in parsed.headers.iter() {
        map.append(
            http::HeaderName::from_bytes(h.name.as_bytes()).unwrap(),
            http::HeaderValue::from_bytes(h.value).unwrap(),
        );
    }
    Reply {
        status: StatusCode::from_u16(parsed.code.unwrap()).unwrap(),
        headers: map,
        body: Bytes::copy_from_slice(&response.as_bytes()[head..]),
    }
}

/// Status code of a raw HTTP response text.
pub fn raw_status(response: &str) -> u16 {
    response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Inserts `lines` into the `[table]` section of `toml` (right after its header).
pub fn with_lines(toml: &str, table: &str, lines: &str) -> String {
    let header = format!("[{table}]\n");
    assert!(toml.contains(&header), "no [{table}] in config");
    toml.replacen(&header, &format!("{header}{lines}\n"), 1)
}

/// A request body fed chunk by chunk by the test.
pub type StreamingBody = http_body_util::StreamBody<
    futures_util::stream::BoxStream<'static, Result<http_body::Frame<Bytes>, std::convert::Infallible>>,
>;

/// A sender of body chunks, and the body they make; dropping the sender ends the body.
pub fn body_channel() -> (tokio::sync::mpsc::Sender<Bytes>, StreamingBody) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok(http_body::Frame::data(chunk)), rx))
    });
    (tx, http_body_util::StreamBody::new(Box::pin(stream) as futures_util::stream::BoxStream<'static, _>))
}

/// POSTs a streaming body.
pub async fn send_streaming(url: &str, headers: &[(&str, &str)], body: StreamingBody) -> Reply {
    let client: Client<_, StreamingBody> = Client::builder(TokioExecutor::new()).build_http();
    let mut request = Request::builder().method(Method::POST).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client.request(request.body(body).unwrap()).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Reply { status: parts.status, headers: parts.headers, body }
}

/// Polls `probe` until it yields `Some`, every 10 ms for at most `within`;
/// fails naming `what`. For waiting on evidence (a metric, a state, a log
/// line), never on a fixed sleep.
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    within: std::time::Duration,
    mut probe: impl FnMut() -> F,
) -> T {
    let started = std::time::Instant::now();
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The value of one sample line (`name{labels} value`) in a metrics text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Waits until the admin listener at `admin` reports `series` at `value`.
pub async fn metric_reaches(admin: std::net::SocketAddr, series: &str, value: f64) {
    eventually(&format!("{series} = {value}"), std::time::Duration::from_secs(3), || async {
        let text = get(&format!("http://{admin}/metrics"), &[]).await.text();
        (metric(&text, series) == Some(value)).then_some(())
    })
    .await;
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `toml` (the standard config) moved to free proxy and admin ports, for a test that runs the binary.
pub fn on_free_ports(toml: &str) -> (u16, u16, String) {
    let (port, admin) = (free_port(), free_port());
    let toml = toml
        .replace("\nlisten = \"127.0.0.1:0\"", &format!("\nlisten = \"127.0.0.1:{port}\""))
        .replace("\nadmin_listen = \"127.0.0.1:0\"", &format!("\nadmin_listen = \"127.0.0.1:{admin}\""));
    (port, admin, toml)
}
