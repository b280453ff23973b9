//! Every error mmgate answers itself, and the one place that turns it into a
//! response: a status and the JSON body of DESIGN.md. The request path's
//! steps refuse with errors of their own (`PathError`, `IdentityError`,
//! `Denied`, `CarrierError`, `AnalysisError`, `Refusal`, `CallerBodyError`,
//! `UpstreamError`); each becomes a `ProxyError` here, and only here.
//!
//! 4xx messages tell the caller what it did wrong; 5xx messages reveal nothing
//! internal (no upstream address, no key name, no OS error text).

use axum::response::Response;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde::Serialize;

use crate::body::CallerBodyError;
use crate::client::IdentityError;
use crate::forward::UpstreamError;
use crate::graphql::{AnalysisError, CarrierError};
use crate::limit::Refusal;
use crate::policy::Denied;
use crate::route::PathError;

/// An error that mmgate answers without (or instead of) the upstream's response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    BadGraphql(String),
    #[error("{0}")]
    Unauthenticated(IdentityError),
    #[error("{0}")]
    ScopeDenied(String),
    #[error("no route for this path")]
    NoRoute,
    #[error("{0}")]
    MethodNotAllowed(&'static str),
    #[error("request body is larger than the {limit}-byte limit")]
    BodyTooLarge { limit: u64 },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("rate limit `{limit}` exceeded; retry in {retry_after_secs} s")]
    RateLimited { limit: String, retry_after_secs: u64 },
    #[error("the request head is larger than {limit} bytes or has more than {max_headers} headers")]
    HeadersTooLarge { limit: usize, max_headers: usize },
    #[error("{0}")]
    RequestTimeout(String),
    /// The caller went away before its answer (logged as 499; nobody reads it).
    #[error("the caller closed the connection")]
    CallerGone,
    #[error("the upstream API could not be reached")]
    UpstreamUnreachable,
    #[error("the API key for this route is not available")]
    KeyUnavailable,
    #[error("the shared rate limiter is unavailable")]
    LimiterUnavailable,
    #[error("the upstream API did not answer in time")]
    UpstreamTimeout,
}

impl From<PathError> for ProxyError {
    fn from(e: PathError) -> Self {
        Self::BadRequest(e.to_string())
    }
}

impl From<IdentityError> for ProxyError {
    fn from(e: IdentityError) -> Self {
        Self::Unauthenticated(e)
    }
}

impl From<Denied> for ProxyError {
    fn from(e: Denied) -> Self {
        match e {
            Denied::Scope(message) => Self::ScopeDenied(message),
            Denied::MutationOverGet => Self::MethodNotAllowed("a mutation cannot be sent with GET; use POST"),
        }
    }
}

impl From<CarrierError> for ProxyError {
    fn from(e: CarrierError) -> Self {
        match e {
            CarrierError::Bad(message) => Self::BadGraphql(message),
            CarrierError::UnsupportedMedia(message) => Self::UnsupportedMediaType(message),
        }
    }
}

impl From<AnalysisError> for ProxyError {
    fn from(e: AnalysisError) -> Self {
        match e {
            // Introspection is a policy of the route, not a malformed document.
            AnalysisError::Introspection => Self::ScopeDenied(e.to_string()),
            e => Self::BadGraphql(e.to_string()),
        }
    }
}

impl From<Refusal> for ProxyError {
    fn from(r: Refusal) -> Self {
        // Whole seconds, rounded up, at least 1: a client that retries after
        // `Retry-After` must not be refused again.
        let secs = r.retry_after.as_secs() + u64::from(r.retry_after.subsec_nanos() > 0);
        Self::RateLimited { limit: r.limit, retry_after_secs: secs.max(1) }
    }
}

impl From<CallerBodyError> for ProxyError {
    fn from(e: CallerBodyError) -> Self {
        match e {
            CallerBodyError::TooLarge { limit } => Self::BodyTooLarge { limit },
            CallerBodyError::Malformed(why) => Self::BadRequest(format!("the request body is malformed ({why})")),
            CallerBodyError::Stalled { after } => Self::RequestTimeout(format!(
                "the request body stalled for more than {} (server.body_idle_timeout)",
                humantime::format_duration(after)
            )),
            CallerBodyError::Gone => Self::CallerGone,
        }
    }
}

impl From<UpstreamError> for ProxyError {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::Unreachable => Self::UpstreamUnreachable,
            UpstreamError::Timeout => Self::UpstreamTimeout,
            UpstreamError::Caller(fault) => fault.into(),
            UpstreamError::BadTarget => Self::BadRequest("the request target cannot be forwarded".into()),
        }
    }
}

impl ProxyError {
    /// The HTTP status DESIGN.md assigns to this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::BadGraphql(_) => StatusCode::BAD_REQUEST,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::ScopeDenied(_) => StatusCode::FORBIDDEN,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            // nginx's "client closed request": only ever seen in logs and metrics.
            Self::CallerGone => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            Self::UpstreamUnreachable => StatusCode::BAD_GATEWAY,
            Self::KeyUnavailable | Self::LimiterUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The stable machine-readable code in the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::BadGraphql(_) => "bad_graphql",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::ScopeDenied(_) => "scope_denied",
            Self::NoRoute => "no_route",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::RateLimited { .. } => "rate_limited",
            Self::HeadersTooLarge { .. } => "headers_too_large",
            Self::RequestTimeout(_) => "request_timeout",
            Self::CallerGone => "caller_gone",
            Self::UpstreamUnreachable => "upstream_unreachable",
            Self::KeyUnavailable => "key_unavailable",
            Self::LimiterUnavailable => "limiter_unavailable",
            Self::UpstreamTimeout => "upstream_timeout",
        }
    }

    /// The JSON body and headers of this error's response, carrying `request_id`.
    fn parts(&self, request_id: &str) -> (HeaderMap, Bytes) {
        #[derive(Serialize)]
        struct Body<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            code: &'static str,
            message: &'a str,
            request_id: &'a str,
        }
        let message = self.to_string();
        let body = Body { error: Inner { code: self.code(), message: &message, request_id } };
        // Serialising three strings cannot fail; the fallback keeps this total.
        let json = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
        let mut headers = HeaderMap::with_capacity(4);
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            Self::RateLimited { retry_after_secs, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Self::MethodNotAllowed(_) => {
                headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"));
            }
            _ => {}
        }
        (headers, Bytes::from(json))
    }

    /// The response for this error, carrying `request_id` in its body.
    pub fn into_response(self, request_id: &str) -> Response {
        let (headers, body) = self.parts(request_id);
        let mut response = Response::new(axum::body::Body::from(body));
        *response.status_mut() = self.status();
        *response.headers_mut() = headers;
        response
    }

    /// The whole response as HTTP/1.1 bytes, closing the connection: for the
    /// refusals made below hyper (a head too large or too slow), where no
    /// response object can be handed to it.
    pub fn to_http1(&self, request_id: &str) -> Vec<u8> {
        let (headers, body) = self.parts(request_id);
        let status = self.status();
        let mut out = Vec::with_capacity(256 + body.len());
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("Error").as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &headers {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"x-request-id: ");
        out.extend_from_slice(request_id.as_bytes());
        out.extend_from_slice(b"\r\nconnection: close\r\ncontent-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(&body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn body_is_the_design_shape() {
        let response = ProxyError::ScopeDenied("no".into()).into_response("abc");
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], br#"{"error":{"code":"scope_denied","message":"no","request_id":"abc"}}"#);
    }

    #[test]
    fn raw_responses_parse_as_http_with_the_same_body() {
        let error = ProxyError::HeadersTooLarge { limit: 8192, max_headers: 200 };
        let raw = error.to_http1("id-1");
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut response = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(head) = response.parse(&raw).unwrap() else { panic!("incomplete") };
        assert_eq!(response.code, Some(431));
        let header = |name: &str| response.headers.iter().find(|h| h.name == name).map(|h| h.value);
        assert_eq!(header("x-request-id"), Some(&b"id-1"[..]));
        assert_eq!(header("connection"), Some(&b"close"[..]));
        assert_eq!(header("content-type"), Some(&b"application/json"[..]));
        let body = &raw[head..];
        assert_eq!(header("content-length"), Some(body.len().to_string().as_bytes()));
        let json: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(json["error"]["code"], "headers_too_large");
        assert_eq!(json["error"]["request_id"], "id-1");
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let r = |ms| {
            ProxyError::from(Refusal {
                kind: crate::limit::LimitKind::Key,
                name: "k".into(),
                limit: "k".into(),
                retry_after: std::time::Duration::from_millis(ms),
            })
        };
        for (ms, secs) in [(1, 1), (999, 1), (1000, 1), (1001, 2), (0, 1)] {
            match r(ms) {
                ProxyError::RateLimited { retry_after_secs, .. } => assert_eq!(retry_after_secs, secs, "{ms} ms"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn rate_limited_carries_retry_after() {
        let response =
            ProxyError::RateLimited { limit: "client dashboard".into(), retry_after_secs: 3 }.into_response("x");
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
    }
}
