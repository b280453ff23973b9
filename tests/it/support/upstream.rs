//! A fake MachineMetrics API: records every request it receives in full, and
//! answers according to the path so tests can ask for slow, stalled, large,
//! redirecting or failing responses.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};

/// One request as the upstream received it (only recorded once its body was read whole).
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    /// Path and query, as received.
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When the request (headers and whole body) had arrived.
    pub at: std::time::Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// The running fake upstream.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Recorded>>>,
    valid_key: Arc<Mutex<Option<String>>>,
}

#[derive(Clone)]
struct Shared {
    seen: Arc<Mutex<Vec<Recorded>>>,
    valid_key: Arc<Mutex<Option<String>>>,
}

impl Upstream {
    pub async fn start() -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let valid_key = Arc::new(Mutex::new(None));
        let app =
            Router::new().fallback(answer).with_state(Shared { seen: seen.clone(), valid_key: valid_key.clone() });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            // Served like axum::serve, but taking up to 1000 headers (hyper's
            // default is 100), so tests see what mmgate forwards.
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.max_headers(1000);
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                tokio::spawn(connection);
            }
        });
        Self { addr, seen, valid_key }
    }

    /// From now on, paths under `/reports/auth` answer 401 unless they carry this key.
    pub fn accept_only(&self, key: &str) {
        *self.valid_key.lock().unwrap() = Some(key.to_owned());
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }

    /// The only request received; panics unless exactly one arrived.
    pub fn only(&self) -> Recorded {
        let all = self.requests();
        assert_eq!(all.len(), 1, "expected exactly one upstream request, got {all:#?}");
        all.into_iter().next().unwrap()
    }

    /// Asserts the upstream was never called.
    pub fn assert_untouched(&self) {
        let all = self.requests();
        assert!(all.is_empty(), "upstream was called: {all:#?}");
    }
}

async fn answer(State(shared): State<Shared>, request: Request) -> Response {
    let seen = shared.seen;
    let (parts, body) = request.into_parts();
    let target = parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        // An aborted body: the request never fully arrived, so it is not recorded.
        return Response::new(Body::empty());
    };
    seen.lock().unwrap().push(Recorded {
        method: parts.method.clone(),
        target: target.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
        at: std::time::Instant::now(),
    });
    let path = parts.uri.path();
    let mut response = Response::new(Body::empty());
    response.headers_mut().insert("x-upstream", "fake-mm".parse().unwrap());
    if path.starts_with("/reports/auth") {
        let valid = shared.valid_key.lock().unwrap().clone();
        let presented = parts.headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
        if valid.is_some_and(|k| presented != format!("Bearer {k}")) {
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            *response.body_mut() = Body::from(r#"{"message":"Unauthorized"}"#);
            return response;
        }
    }
    if path.ends_with("/slow") {
        tokio::time::sleep(Duration::from_secs(3)).await;
    } else if path.ends_with("/redirect") {
        *response.status_mut() = StatusCode::FOUND;
        response.headers_mut().insert("location", "https://elsewhere.example/next?x=1".parse().unwrap());
        return response;
    } else if let Some(code) = path.rsplit_once("/status/").and_then(|(_, c)| c.parse::<u16>().ok()) {
        *response.status_mut() = StatusCode::from_u16(code).unwrap();
        *response.body_mut() = Body::from(format!(r#"{{"upstream_status":{code}}}"#));
        return response;
    } else if path.ends_with("/stall") {
        // Two chunks, then silence longer than mmgate's body_idle_timeout.
        let stream = async_stream(vec![Bytes::from_static(b"first,"), Bytes::from_static(b"second,")]);
        *response.body_mut() = Body::from_stream(stream);
        return response;
    } else if let Some(size) = path.rsplit_once("/bytes/").and_then(|(_, n)| n.parse::<usize>().ok()) {
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let chunks = (0..size.div_ceil(chunk.len())).map(move |_| Ok::<_, std::io::Error>(chunk.clone()));
        *response.body_mut() = Body::from_stream(futures_util::stream::iter(chunks));
        return response;
    }
    *response.body_mut() = Body::from(format!(
        r#"{{"method":"{}","target":"{}","received_bytes":{}}}"#,
        parts.method,
        target.replace('"', "'"),
        body.len()
    ));
    response
}

/// Yields `chunks`, then stalls for 5 s before ending.
fn async_stream(chunks: Vec<Bytes>) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold((chunks.into_iter(), false), |(mut it, stalled)| async move {
        match it.next() {
            Some(chunk) => Some((Ok(chunk), (it, stalled))),
            None if !stalled => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Some((Ok(Bytes::from_static(b"late")), (it, true)))
            }
            None => None,
        }
    })
}
