//! The byte stream under hyper on a proxy connection: it reports reads to
//! the connection's `Activity` (for the header and idle timeouts) and
//! replaces hyper's own bare error answers with mmgate's JSON ones.
//!
//! hyper enforces `max_header_bytes` and `max_headers` exactly, and answers a
//! head it cannot or will not parse by itself, before any handler runs:
//! `HTTP/1.1 431|400|414 ...` with `connection: close` and an empty body.
//! DESIGN wants every refusal in mmgate's JSON shape, and hyper has no hook
//! for those answers, so they are recognised here as they are written: a
//! response head with status 400, 414 or 431 and `content-length: 0` that
//! lacks `x-request-id`, which every response of mmgate's handler carries.
//! (Should such a head ever share a write with earlier bytes, it passes
//! unchanged: the caller then gets hyper's bare answer, nothing worse.)

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::conn::Activity;
use crate::error::ProxyError;

/// A caller connection's stream, as hyper sees it.
pub struct Guarded<IO> {
    inner: IO,
    activity: Arc<Activity>,
    /// JSON answer replacing one of hyper's, and how much of it is written.
    replacement: Option<(Vec<u8>, usize)>,
    /// Describes the limits for the JSON answers.
    limits: HeadLimits,
}

/// The head limits in force on this connection, for the messages.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// `server.max_header_bytes`.
    pub max_header_bytes: usize,
    /// `server.max_headers`.
    pub max_headers: usize,
}

impl<IO> Guarded<IO> {
    /// Wraps a freshly accepted stream.
    pub fn new(inner: IO, activity: Arc<Activity>, limits: HeadLimits) -> Self {
        Self { inner, activity, replacement: None, limits }
    }

    /// The error mmgate answers instead of hyper's bare response starting `buf`, if it is one.
    fn replaces(&self, buf: &[u8]) -> Option<ProxyError> {
        let rest = buf.strip_prefix(b"HTTP/1.1 ")?;
        let error = match rest.get(..4)? {
            b"431 " | b"414 " => ProxyError::HeadersTooLarge {
                limit: self.limits.max_header_bytes,
                max_headers: self.limits.max_headers,
            },
            b"400 " => ProxyError::BadRequest("the request is not valid HTTP/1.1".into()),
            _ => return None,
        };
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = &buf[..end + 2];
        let has = |needle: &[u8]| head.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle));
        (has(b"\r\ncontent-length: 0\r\n") && !has(b"\r\nx-request-id:")).then_some(error)
    }
}

impl<IO: AsyncWrite + Unpin> Guarded<IO> {
    /// Writes what is left of a replacement answer.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.replacement {
            let rest = bytes.get(*written..).unwrap_or_default();
            if rest.is_empty() {
                self.replacement = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `buf` as written when it is one of hyper's bare answers, queuing ours instead.
    fn intercept(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Option<Poll<io::Result<usize>>> {
        let error = self.replaces(buf)?;
        let request_id = crate::proxy::new_request_id();
        let bytes = error.to_http1(request_id.to_str().unwrap_or_default());
        self.replacement = Some((bytes, 0));
        Some(match self.poll_replacement(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            // hyper's bytes count as written either way; ours follow on flush.
            _ => Poll::Ready(Ok(buf.len())),
        })
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.activity.on_read();
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_replacement(cx))?;
        if let Some(done) = this.intercept(cx, buf) {
            return done;
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_replacement(cx))?;
        // hyper's bare answers are a head alone, so they arrive as one slice.
        let mut written = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (written.next(), written.next()) {
            if let Some(done) = this.intercept(cx, only) {
                return done;
            }
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
