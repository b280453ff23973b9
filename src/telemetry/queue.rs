//! A bounded queue between finished spans and the exporter: the request
//! path only tries to enqueue (never waits); a thread of its own, with its
//! own runtime, exports what is queued in batches. A span that finds the
//! queue full, or whose export fails, is dropped and counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter, SpanProcessor};
use tokio::sync::mpsc;

static DROPPED: AtomicU64 = AtomicU64::new(0);
static EXPORTED: AtomicU64 = AtomicU64::new(0);

/// Spans dropped: the queue was full, or their export failed.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Spans the collector accepted.
pub fn exported() -> u64 {
    EXPORTED.load(Ordering::Relaxed)
}

/// Spans exported per call at most.
const BATCH: usize = 512;

/// The span processor in front of the queue.
#[derive(Debug)]
pub struct Queue {
    spans: mpsc::Sender<SpanData>,
}

impl Queue {
    /// Starts the export thread, holding at most `capacity` spans.
    pub fn start<E: SpanExporter + 'static>(exporter: E, capacity: usize) -> Result<Self, String> {
        let (spans, queued) = mpsc::channel(capacity);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("telemetry: cannot start the export thread's runtime: {e}"))?;
        std::thread::Builder::new()
            .name("mmgate-otlp".into())
            .spawn(move || runtime.block_on(export(exporter, queued)))
            .map_err(|e| format!("telemetry: cannot start the export thread: {e}"))?;
        Ok(Self { spans })
    }
}

async fn export<E: SpanExporter>(exporter: E, mut queued: mpsc::Receiver<SpanData>) {
    let mut batch = Vec::with_capacity(BATCH);
    while queued.recv_many(&mut batch, BATCH).await > 0 {
        let n = batch.len() as u64;
        match exporter.export(std::mem::take(&mut batch)).await {
            Ok(()) => EXPORTED.fetch_add(n, Ordering::Relaxed),
            Err(e) => {
                tracing::debug!(error = %e, spans = n, "telemetry: export failed; spans dropped");
                DROPPED.fetch_add(n, Ordering::Relaxed)
            }
        };
    }
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.spans.try_send(span).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        // Give the export thread a moment to send what is queued.
        let deadline = std::time::Instant::now() + timeout.min(Duration::from_secs(2));
        while self.spans.capacity() < self.spans.max_capacity() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}
