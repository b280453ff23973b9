//! The floor: a proxy that does only what every proxy must (parse the
//! request, drop the caller's hop-by-hop headers, inject the key and `Host`,
//! stream to one upstream and back), on the same hyper, tokio and allocator
//! as mmgate, each caller connection owning one upstream HTTP/1.1
//! connection. What mmgate spends above it is mmgate's own work: identity,
//! routing, limits, sharing, timeouts, the access line, metrics.
//!
//! `mmgate-floor LISTEN UPSTREAM KEY`, or `mmgate-floor --config IGNORED`
//! for bench/instructions.sh's ports and key. It unwraps freely: it is a
//! measuring stick, never deployed.

use std::sync::{Arc, Mutex};

use http::{header, HeaderValue, Request};
use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Upstream = Arc<Mutex<Option<client::SendRequest<Incoming>>>>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (listen, upstream, key) = match args.get(1).map(String::as_str) {
        Some("--config") => ("127.0.0.1:18183".into(), "127.0.0.1:18181".into(), "bench-key".into()),
        _ => (args[1].clone(), args[2].clone(), args[3].clone()),
    };
    let authorization = HeaderValue::from_str(&format!("Bearer {key}")).unwrap();
    let host = HeaderValue::from_str(&upstream).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let listener = TcpListener::bind(&listen).await.unwrap();
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => accepted.unwrap().0,
                _ = tokio::signal::ctrl_c() => return,
            };
            stream.set_nodelay(true).unwrap();
            let (address, authorization, host) = (upstream.clone(), authorization.clone(), host.clone());
            tokio::spawn(async move {
                let upstream: Upstream = Arc::default();
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let (upstream, address) = (Arc::clone(&upstream), address.clone());
                    let (authorization, host) = (authorization.clone(), host.clone());
                    async move {
                        let (mut parts, body) = request.into_parts();
                        for name in [header::CONNECTION, header::TE, header::TRAILER, header::UPGRADE] {
                            parts.headers.remove(&name);
                        }
                        parts.headers.insert(header::AUTHORIZATION, authorization);
                        parts.headers.insert(header::HOST, host);
                        let reused = upstream.lock().unwrap().take().filter(|s| !s.is_closed());
                        let mut sender = match reused {
                            Some(sender) => sender,
                            None => {
                                let tcp = TcpStream::connect(&address).await.unwrap();
                                tcp.set_nodelay(true).unwrap();
                                let (sender, connection) = client::handshake(TokioIo::new(tcp)).await.unwrap();
                                tokio::spawn(connection);
                                sender
                            }
                        };
                        sender.ready().await?;
                        let response = sender.send_request(Request::from_parts(parts, body));
                        *upstream.lock().unwrap() = Some(sender);
                        response.await
                    }
                });
                let _ = server::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
}
