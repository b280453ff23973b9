//! The key's side of step 4 and step 5: a request that goes upstream passes
//! its key's cool-down, in-flight cap and limits (waiting for its turn
//! under `max_wait`), then is sent with the key; what the upstream answers
//! is told to the key's slot and the limiters.
//!
//! It owns everything it uses, so that a shared read's upstream call can run
//! in a task of its own and outlive the caller that started it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::response::Response;
use http::{HeaderValue, StatusCode, Uri};

use tracing::Instrument;

use crate::access::Exchange;
use crate::error::ProxyError;
use crate::forward::{self, Outbound};
use crate::gate::Gate;
use crate::limit::{Admission, LimitError, SharedCheck, SharedRefusal};
use crate::policy::Mode;
use crate::runtime::Runtime;

/// One request's way upstream.
#[derive(Clone)]
pub(super) struct Call {
    pub runtime: Arc<Runtime>,
    pub gate: Arc<Gate>,
    pub client: usize,
    pub key: usize,
    /// Units it costs (its GraphQL operations, else 1).
    pub cost: u32,
    /// The mode of limits without one of their own (the client's, route's or server's).
    pub mode: Mode,
    /// Whether the client's limit shared across replicas is still to be
    /// checked (with the key's, in one round trip).
    pub shared_client: bool,
    /// The upstream URI.
    pub uri: Uri,
    /// The request id sent upstream.
    pub request_id: HeaderValue,
}

/// What came back from the upstream.
pub(super) struct Called {
    pub response: Response,
    /// The key's in-flight permit, held until the response body is done.
    pub admission: Option<Admission>,
    /// Time to the response headers.
    pub latency: Duration,
}

impl Called {
    /// Tells the access line what the upstream call was: its latency and
    /// status, the time waited for a turn, what a shadowed limit would have refused.
    pub fn record(&self, exchange: &mut Exchange) {
        exchange.upstream_latency = Some(self.latency);
        exchange.answered(self.response.status().as_u16());
        if let Some(admission) = &self.admission {
            exchange.waited = admission.waited.as_ref().map(|w| w.0);
            if let Some(would) = &admission.shadowed {
                exchange.would_refuse(&would.clone().into());
            }
        }
    }

    /// Records the call and hands its response to the caller, the key's
    /// in-flight permit with it (held until the response body ends).
    pub fn streamed_to(self, exchange: &mut Exchange) -> Response {
        self.record(exchange);
        exchange.admission = self.admission;
        self.response
    }
}

impl Call {
    /// Passes the key's limits (cool-down, in-flight cap, key and budget,
    /// then those shared across replicas), waiting under `max_wait`. What a
    /// limit in shadow mode would have refused is in `Admission::shadowed`.
    pub async fn admit(&self) -> Result<Admission, ProxyError> {
        let limiters = self.runtime.limiters();
        let metrics = &self.gate.metrics;
        let mut admission = limiters.admit_key(self.client, self.key, self.cost, self.mode).await.map_err(|e| {
            if let LimitError::Refused(r) = &e {
                metrics.refused(r.kind.as_str(), &r.name);
            }
            ProxyError::from(e)
        })?;
        if let Some((waited, kind, name)) = &admission.waited {
            metrics.limit_wait(kind.as_str(), name, *waited);
        }
        let client = self.shared_client.then_some(self.client);
        match limiters.admit_shared((client, Some(self.key)), self.cost, self.mode).await {
            Ok(SharedCheck::Passed) => Ok(admission),
            Ok(SharedCheck::Shadowed(r)) => {
                admission.shadowed.get_or_insert(LimitError::Refused(r));
                Ok(admission)
            }
            Ok(SharedCheck::WithoutRedis) => {
                metrics.shared_unavailable();
                Ok(admission)
            }
            Err(SharedRefusal::Limit(r)) => {
                admission.charge.refund();
                metrics.refused(r.kind.as_str(), &r.name);
                Err(r.into())
            }
            Err(SharedRefusal::Unavailable) => {
                admission.charge.refund();
                metrics.shared_unavailable();
                Err(ProxyError::LimiterUnavailable)
            }
        }
    }

    /// Sends `request` with the route's key. The admission (the key's
    /// in-flight permit) is held until the upstream has answered, even if
    /// the caller leaves, then handed back with the response.
    pub async fn send(&self, request: Request, admission: Admission) -> Result<Called, ProxyError> {
        let runtime = &self.runtime;
        let slot = runtime.keys().slot(self.key).ok_or(ProxyError::KeyUnavailable)?;
        let key = slot.current().ok_or(ProxyError::KeyUnavailable)?;
        let upstream = runtime.settings().upstream();
        let out = Outbound {
            uri: self.uri.clone(),
            authorization: key.authorization(),
            request_id: &self.request_id,
            host: upstream.host_header.as_ref(),
        };
        let sent = Instant::now();
        let mut outbound = forward::upstream_request(request, out);
        let send = |outbound| {
            forward::send(runtime.upstream(), outbound, upstream.timeout, upstream.body_idle_timeout, admission)
        };
        // Under a traced request only: an unsampled one has no span to be a child of.
        let (response, admission) = if crate::telemetry::enabled() && !tracing::Span::current().is_none() {
            // A child of the request's span, sent upstream as `traceparent`.
            let span = crate::telemetry::upstream_span(outbound.headers_mut());
            let answered = send(outbound).instrument(span.clone()).await;
            crate::telemetry::upstream_answered(&span, &answered, (slot.name(), key.fingerprint()));
            answered?
        } else {
            send(outbound).await?
        };
        let latency = sent.elapsed();

        // What the answer says about the key and the company's quota.
        if response.status() == StatusCode::UNAUTHORIZED {
            self.gate.metrics.unauthorized(runtime.key_name(self.key));
        }
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            self.gate.metrics.upstream_throttled(runtime.key_name(self.key));
            runtime.limiters().upstream_throttled(self.key, response.headers());
        }
        slot.answered(response.status());
        Ok(Called { response, admission, latency })
    }
}
