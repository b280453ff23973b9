//! The handler as a tower `Service`, so that tests and benches drive the
//! real request path without sockets (`app(gate).oneshot(request)`). The
//! server calls `handle` directly: one service per connection, no box per
//! layer.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::access::Observed;
use crate::body::BoxError;
use crate::client::Peer;
use crate::gate::Gate;

/// The proxy's request path for one caller (by default on loopback).
#[derive(Debug, Clone)]
pub struct App {
    gate: Arc<Gate>,
    peer: Peer,
}

/// The request path of `gate`, as a `tower::Service`.
pub fn app(gate: Arc<Gate>) -> App {
    App { gate, peer: Peer::Tcp(([127, 0, 0, 1], 0).into()) }
}

impl App {
    /// The same path for a caller connected as `peer`.
    pub fn with_peer(self, peer: Peer) -> Self {
        Self { peer, ..self }
    }
}

impl<B> tower_service::Service<http::Request<B>> for App
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<Observed>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (gate, peer) = (Arc::clone(&self.gate), self.peer);
        Box::pin(async move { Ok(super::handle(gate, peer, None, request).await) })
    }
}
