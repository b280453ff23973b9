//! A fake OpenTelemetry collector: accepts OTLP/HTTP protobuf trace exports
//! on `/v1/traces` and keeps the spans, and the raw bodies (to search them
//! for secrets).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

#[derive(Default)]
struct Seen {
    spans: Vec<Span>,
    bodies: Vec<Bytes>,
}

pub struct Collector {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl Collector {
    pub async fn start() -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let app = Router::new().route("/v1/traces", post(receive)).with_state(Arc::clone(&seen));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, seen }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<Span> {
        self.seen.lock().unwrap().spans.clone()
    }

    pub fn bodies(&self) -> Vec<Bytes> {
        self.seen.lock().unwrap().bodies.clone()
    }
}

async fn receive(State(seen): State<Arc<Mutex<Seen>>>, body: Bytes) -> &'static str {
    let request = ExportTraceServiceRequest::decode(body.clone()).expect("an OTLP protobuf export");
    let mut seen = seen.lock().unwrap();
    seen.bodies.push(body);
    for resource in request.resource_spans {
        for scope in resource.scope_spans {
            seen.spans.extend(scope.spans);
        }
    }
    ""
}

/// A span attribute's value as text (strings and integers).
pub fn attribute(span: &Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    let value = span.attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()?;
    Some(match value {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        other => format!("{other:?}"),
    })
}
