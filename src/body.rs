//! The caller's request body as mmgate reads it: bytes counted for the
//! access log, cut at `max_body`, given up on when it stalls longer than
//! `server.body_idle_timeout`, and every failure told apart, so that a fault
//! of the caller's is answered as one (400, 408, 413, or a caller that left)
//! and never counted against the upstream (`error` maps each fault).
//!
//! One wrapper does all of it, whether the body is read whole (GraphQL) or
//! streamed to the upstream: the upstream client reports a body error as
//! its own failure, and `caller_fault` finds ours inside it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// Boxed error type of bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a caller's body failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerBodyError {
    /// More than `max_body` bytes.
    TooLarge { limit: u64 },
    /// Not valid HTTP framing (a bad chunk).
    Malformed(String),
    /// No bytes for longer than `server.body_idle_timeout`.
    Stalled { after: Duration },
    /// The connection closed or failed mid-body: the caller left.
    Gone,
}

impl fmt::Display for CallerBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { limit } => write!(f, "request body over {limit} bytes"),
            Self::Malformed(why) => write!(f, "malformed request body: {why}"),
            Self::Stalled { after } => write!(f, "request body stalled for {}", humantime::format_duration(*after)),
            Self::Gone => f.write_str("the caller left mid-body"),
        }
    }
}

impl std::error::Error for CallerBodyError {}

/// The caller's fault behind `error`, if any (looked for down its sources).
pub fn caller_fault(error: &(dyn std::error::Error + 'static)) -> Option<CallerBodyError> {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(fault) = e.downcast_ref::<CallerBodyError>() {
            return Some(fault.clone());
        }
        source = e.source();
    }
    None
}

/// What went wrong with the bytes under the body (hyper's error): bad
/// framing is the caller's mistake; anything else means the connection is gone.
fn classify(error: BoxError) -> CallerBodyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&*error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(io.kind(), std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput) {
                return CallerBodyError::Malformed(io.to_string());
            }
        }
        source = e.source();
    }
    CallerBodyError::Gone
}

pin_project_lite::pin_project! {
    /// A caller's request body, counted, limited and watched for stalls.
    pub struct CallerBody<B> {
        #[pin]
        inner: B,
        count: Arc<AtomicU64>,
        read: u64,
        limit: u64,
        stall: StallTimer,
        failed: bool,
    }
}

impl<B> CallerBody<B> {
    /// Wraps `inner`; bytes read are added to `count`.
    pub fn new(inner: B, count: Arc<AtomicU64>, limit: u64, idle: Duration) -> Self {
        Self { inner, count, read: 0, limit, stall: StallTimer::new(idle), failed: false }
    }
}

/// Gives up on a body that sends nothing for `idle`. The timer exists only
/// once the body has had to wait: a body whose bytes are already there (most
/// answers) never touches the runtime's timer wheel, where a timer per frame
/// (tower-http's `TimeoutBody`) cost a registration and a removal each.
#[derive(Debug)]
pub struct StallTimer {
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl StallTimer {
    /// No timer yet.
    pub fn new(idle: Duration) -> Self {
        Self { idle, timer: None }
    }

    /// A frame arrived: the wait starts over.
    pub fn frame(&mut self) {
        if let Some(timer) = &mut self.timer {
            timer.as_mut().reset(Instant::now() + self.idle);
        }
    }

    /// The body is waiting: true once it has waited `idle` since its last frame.
    pub fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        let idle = self.idle;
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        timer.as_mut().poll(cx).is_ready()
    }

    /// The idle time it allows.
    pub fn idle(&self) -> Duration {
        self.idle
    }
}

impl<B> Body for CallerBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = CallerBodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, CallerBodyError>>> {
        let this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        let fail = |failed: &mut bool, e| {
            *failed = true;
            Poll::Ready(Some(Err(e)))
        };
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.read += data.len() as u64;
                    this.count.fetch_add(data.len() as u64, Ordering::Relaxed);
                    if *this.read > *this.limit {
                        return fail(this.failed, CallerBodyError::TooLarge { limit: *this.limit });
                    }
                }
                this.stall.frame();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => fail(this.failed, classify(e.into())),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if this.stall.stalled(cx) {
                    return fail(this.failed, CallerBodyError::Stalled { after: this.stall.idle() });
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn body(chunks: Vec<Result<Bytes, BoxError>>) -> impl Body<Data = Bytes, Error = BoxError> {
        http_body_util::StreamBody::new(futures_util::stream::iter(chunks.into_iter().map(|c| c.map(Frame::data))))
    }

    #[tokio::test]
    async fn counts_limits_and_tells_faults_apart() {
        let count = Arc::new(AtomicU64::new(0));
        let ok =
            CallerBody::new(body(vec![Ok("ab".into()), Ok("cd".into())]), count.clone(), 4, Duration::from_secs(1));
        assert_eq!(ok.collect().await.unwrap().to_bytes(), "abcd");
        assert_eq!(count.load(Ordering::Relaxed), 4);

        let big =
            CallerBody::new(body(vec![Ok("abc".into()), Ok("de".into())]), count.clone(), 4, Duration::from_secs(1));
        assert_eq!(big.collect().await.unwrap_err(), CallerBodyError::TooLarge { limit: 4 });

        let bad: BoxError = Box::new(std::io::Error::new(std::io::ErrorKind::InvalidData, "invalid chunk size"));
        let malformed = CallerBody::new(body(vec![Err(bad)]), count.clone(), 4, Duration::from_secs(1));
        assert!(matches!(malformed.collect().await.unwrap_err(), CallerBodyError::Malformed(_)));

        let eof: BoxError = Box::new(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "eof"));
        let gone = CallerBody::new(body(vec![Err(eof)]), count, 4, Duration::from_secs(1));
        assert_eq!(gone.collect().await.unwrap_err(), CallerBodyError::Gone);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_after_the_idle_timeout() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
        let body =
            CallerBody::new(http_body_util::StreamBody::new(stream), Arc::default(), 100, Duration::from_secs(30));
        tx.send(Ok(Frame::data(Bytes::from("a")))).await.unwrap();
        let started = Instant::now();
        let err = body.collect().await.unwrap_err();
        assert_eq!(err, CallerBodyError::Stalled { after: Duration::from_secs(30) });
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        drop(tx);
    }

    #[test]
    fn faults_are_found_inside_other_errors() {
        #[derive(Debug)]
        struct Outer(CallerBodyError);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("client error")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        assert_eq!(caller_fault(&Outer(CallerBodyError::Gone)), Some(CallerBodyError::Gone));
        assert_eq!(caller_fault(&std::io::Error::other("x")), None);
    }
}
