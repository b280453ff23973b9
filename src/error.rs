//! Every error mmgate answers itself, and the one place that turns it into a
//! response: a status and the JSON body of DESIGN.md.
//!
//! 4xx messages tell the caller what it did wrong; 5xx messages reveal nothing
//! internal (no upstream address, no key name, no OS error text).

use axum::response::Response;
use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use serde::Serialize;

/// An error that mmgate answers without (or instead of) the upstream's response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    BadGraphql(String),
    #[error("{0}")]
    Unauthenticated(&'static str),
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
    #[error("request headers are larger than the {limit}-byte limit")]
    HeadersTooLarge { limit: usize },
    #[error("the upstream API could not be reached")]
    UpstreamUnreachable,
    #[error("the API key for this route is not available")]
    KeyUnavailable,
    #[error("the shared rate limiter is unavailable")]
    LimiterUnavailable,
    #[error("the upstream API did not answer in time")]
    UpstreamTimeout,
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
            Self::UpstreamUnreachable => "upstream_unreachable",
            Self::KeyUnavailable => "key_unavailable",
            Self::LimiterUnavailable => "limiter_unavailable",
            Self::UpstreamTimeout => "upstream_timeout",
        }
    }

    /// The response for this error, carrying `request_id` in its body.
    pub fn into_response(self, request_id: &str) -> Response {
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
        let mut response = Response::new(axum::body::Body::from(Bytes::from(json)));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match &self {
            Self::RateLimited { retry_after_secs, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Self::MethodNotAllowed(_) => {
                headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"));
            }
            _ => {}
        }
        response
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
    fn rate_limited_carries_retry_after() {
        let response =
            ProxyError::RateLimited { limit: "client dashboard".into(), retry_after_secs: 3 }.into_response("x");
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
    }
}
