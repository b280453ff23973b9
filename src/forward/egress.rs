//! The way out to the upstream: direct, or through an HTTP proxy with a
//! `CONNECT` tunnel (factory networks often reach the internet only through
//! one). TLS runs end to end inside the tunnel, so the proxy sees the
//! upstream's host and port, never the API key; a plain `http://` upstream
//! is tunnelled too, never sent as an absolute-form request the proxy could
//! read. hyper-util's `Tunnel` does the `CONNECT`; this module only picks
//! direct or tunnel, and bounds the whole connection by `connect_timeout`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

use crate::body::BoxError;
use crate::config::Egress;

/// Connects to the upstream, directly or through the proxy, within `timeout`.
#[derive(Clone)]
pub struct Connector {
    inner: Inner,
    timeout: Duration,
}

#[derive(Clone)]
enum Inner {
    Direct(HttpConnector),
    Tunnel(Tunnel<HttpConnector>),
}

impl Connector {
    /// The connector for `egress`, over `tcp` (which connects to the upstream
    /// or to the proxy).
    pub fn new(egress: &Egress, tcp: HttpConnector, timeout: Duration) -> Self {
        let inner = match egress {
            Egress::Direct => Inner::Direct(tcp),
            Egress::Proxy { uri, auth, .. } => {
                let tunnel = Tunnel::new(uri.clone(), tcp);
                Inner::Tunnel(match auth {
                    Some(auth) => tunnel.with_auth(auth.clone()),
                    None => tunnel,
                })
            }
        };
        Self { inner, timeout }
    }
}

type Connecting = Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, BoxError>> + Send>>;

impl Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match &mut self.inner {
            Inner::Direct(c) => c.poll_ready(cx).map_err(Into::into),
            Inner::Tunnel(c) => c.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, dst: Uri) -> Connecting {
        let timeout = self.timeout;
        let connecting: Connecting = match &mut self.inner {
            Inner::Direct(c) => {
                let f = c.call(dst);
                Box::pin(async move { f.await.map_err(Into::into) })
            }
            Inner::Tunnel(c) => {
                let f = c.call(dst);
                Box::pin(async move { f.await.map_err(Into::into) })
            }
        };
        // The TCP connect has its own timeout; the proxy's CONNECT answer does not.
        Box::pin(async move {
            tokio::time::timeout(timeout, connecting)
                .await
                .unwrap_or_else(|_| Err("connecting to the upstream timed out".into()))
        })
    }
}
