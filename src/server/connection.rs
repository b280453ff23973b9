//! One caller connection, driven from accept to close: hyper's HTTP/1 codec
//! over a `Guarded` stream, plus what hyper does not do the way DESIGN
//! wants: a head that does not arrive within `header_timeout` gets 408 in
//! mmgate's JSON shape, an idle keep-alive connection is closed after
//! `idle_timeout`, and a shutdown lets the request in progress finish.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use http_body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::guard::{Guarded, HeadLimits};
use crate::config::ServerSettings;
use crate::conn::{Activity, Waiting};
use crate::error::ProxyError;

/// The per-connection settings, read from the snapshot current at accept.
#[derive(Debug, Clone)]
pub struct ConnSettings {
    limits: HeadLimits,
    header_timeout: Duration,
    idle_timeout: Duration,
}

impl ConnSettings {
    /// The connection settings of `server`.
    pub fn of(server: &ServerSettings) -> Self {
        Self {
            limits: HeadLimits { max_header_bytes: server.max_header_bytes, max_headers: server.max_headers },
            header_timeout: server.header_timeout,
            idle_timeout: server.idle_timeout,
        }
    }

    /// hyper's HTTP/1 settings: it enforces the head limits exactly.
    fn builder(&self) -> http1::Builder {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            // Timeouts are the driver's: hyper's would also close idle connections.
            .header_read_timeout(None)
            .max_header_size(self.limits.max_header_bytes)
            .max_buf_size((self.limits.max_header_bytes * 2).max(16 * 1024))
            .keep_alive(true);
        // hyper keeps up to 100 headers on the stack, more on the heap for
        // every request: only ask for more when the config does.
        if self.limits.max_headers != 100 {
            builder.max_headers(self.limits.max_headers);
        }
        builder
    }
}

/// Serves one connection until it closes, its timeouts expire, or `stop`
/// turns true (then the request in progress finishes and it closes).
pub async fn drive<IO, S>(
    io: IO,
    activity: Arc<Activity>,
    service: S,
    settings: ConnSettings,
    mut stop: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<Incoming> + Unpin,
    S::Future: Unpin,
    S::ResBody: 'static,
    <S::ResBody as Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let guarded = Guarded::new(io, Arc::clone(&activity), settings.limits);
    let mut connection = settings.builder().serve_connection(TokioIo::new(guarded), service);
    let (header_timeout, idle_timeout) = (settings.header_timeout, settings.idle_timeout);
    // One timer for the connection's life, re-armed rather than re-created.
    let now = Instant::now();
    let timeouts = (header_timeout, idle_timeout);
    let timer =
        tokio::time::sleep_until(Activity::recheck(activity.deadline(header_timeout, idle_timeout), timeouts, now));
    tokio::pin!(timer);
    let mut stopping = false;
    loop {
        tokio::select! {
            ended = poll_fn(|cx| Pin::new(&mut connection).poll_without_shutdown(cx)) => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                let mut io = connection.into_parts().io.into_inner();
                let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
                return;
            }
            () = &mut timer => {
                let now = Instant::now();
                match activity.deadline(header_timeout, idle_timeout) {
                    Some((at, Waiting::Head)) if at <= now => {
                        return answer_timeout(connection.into_parts().io.into_inner(), header_timeout).await;
                    }
                    Some((at, Waiting::Idle)) if at <= now => {
                        // No request is in progress: nothing is cut.
                        let mut io = connection.into_parts().io.into_inner();
                        let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
                        return;
                    }
                    // Not due yet, or a request is in progress: look again later.
                    deadline => timer.as_mut().reset(Activity::recheck(deadline, timeouts, now)),
                }
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_err() || *stop.borrow() {
                    Pin::new(&mut connection).graceful_shutdown();
                }
            }
        }
    }
}

/// Answers a head that did not arrive in time with 408, then closes.
async fn answer_timeout<IO: AsyncWrite + Unpin>(mut io: Guarded<IO>, after: Duration) {
    let error = ProxyError::RequestTimeout(format!(
        "the request head did not arrive within {} (server.header_timeout)",
        humantime::format_duration(after)
    ));
    let id = crate::proxy::new_request_id();
    let bytes = error.to_http1(id.to_str().unwrap_or_default());
    let write = async {
        io.write_all(&bytes).await?;
        io.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}
