//! Every error mmgate answers itself, and the one place that turns it into a
//! response: a status, a code and a message here; the JSON shape and HTTP's
//! own headers in `answer`. The request path's
//! steps refuse with errors of their own (`PathError`, `IdentityError`,
//! `Denied`, `CarrierError`, `AnalysisError`, `Refusal`, `CallerBodyError`,
//! `UpstreamError`); each becomes a `ProxyError` here, and only here.
//!
//! 4xx messages tell the caller what it did wrong; 5xx messages reveal nothing
//! internal (no upstream address, no key name, no OS error text).

mod answer;

use http::StatusCode;

pub use answer::{negotiate, Answer, Shape, GRAPHQL_METHODS, REST_METHODS};

use crate::body::CallerBodyError;
use crate::client::IdentityError;
use crate::forward::UpstreamError;
use crate::graphql::{AnalysisError, CarrierError};
use crate::limit::{LimitError, LimitKind, Per, Refusal};
use crate::policy::Denied;
use crate::route::PathError;

/// An error that mmgate answers without (or instead of) the upstream's response.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    BadGraphql(String),
    #[error("{0}")]
    GraphqlLimit(String),
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
    #[error("{}", .0.message)]
    RateLimited(RateLimited),
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

/// A 429 of mmgate's: what the caller is told, when to retry, and the limit
/// as the IETF rate-limit headers describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimited {
    /// The message, naming the limit.
    pub message: String,
    /// Whole seconds, rounded up, at least 1.
    pub retry_after_secs: u64,
    /// `kind:name` of the limit that refused, for the access log.
    pub limit: String,
    /// The refused rate as `RateLimit-Policy` gives it: a name, a quota, a window.
    pub policy: Option<(String, u32, u32)>,
}

impl ProxyError {
    /// A refusal by the limits (429, an unreachable shared limiter, or a
    /// cost over a burst): the request was not served, so what it was
    /// charged earlier is given back.
    pub fn is_limit_refusal(&self) -> bool {
        matches!(self, Self::RateLimited(_) | Self::LimiterUnavailable | Self::GraphqlLimit(_))
    }
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
            AnalysisError::Limit { .. } => Self::GraphqlLimit(e.to_string()),
            AnalysisError::Malformed(message) => Self::BadGraphql(message),
        }
    }
}

impl From<Refusal> for ProxyError {
    fn from(r: Refusal) -> Self {
        // Whole seconds, rounded up, at least 1: a client that retries after
        // `Retry-After` must not be refused again.
        let secs = (r.retry_after.as_secs() + u64::from(r.retry_after.subsec_nanos() > 0)).max(1);
        let message = match r.kind {
            LimitKind::Cooldown => format!(
                "the upstream answered 429 (too many requests): {} pauses until it allows more; retry in {secs} s",
                r.limit
            ),
            LimitKind::InFlight => format!("{} reached; retry in {secs} s", r.limit),
            _ => format!("rate limit {} exceeded; retry in {secs} s", r.limit),
        };
        let policy = r.rate.map(|rate| {
            let window = match rate.per {
                Per::Second => 1,
                Per::Minute => 60,
            };
            (format!("{}-{}", r.kind.as_str(), r.name), rate.count.get(), window)
        });
        let limit = format!("{}:{}", r.kind.as_str(), r.name);
        Self::RateLimited(RateLimited { message, retry_after_secs: secs, limit, policy })
    }
}

impl From<LimitError> for ProxyError {
    fn from(e: LimitError) -> Self {
        match e {
            LimitError::Refused(r) => r.into(),
            LimitError::TooCostly { limit, cost, burst } => Self::GraphqlLimit(format!(
                "this request carries {cost} operations, more than the burst of {limit} ({burst}): it could never pass; send fewer operations per request"
            )),
        }
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
            Self::BadRequest(_) | Self::BadGraphql(_) | Self::GraphqlLimit(_) => StatusCode::BAD_REQUEST,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::ScopeDenied(_) => StatusCode::FORBIDDEN,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
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
            Self::GraphqlLimit(_) => "graphql_limit",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::ScopeDenied(_) => "scope_denied",
            Self::NoRoute => "no_route",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::RateLimited(_) => "rate_limited",
            Self::HeadersTooLarge { .. } => "headers_too_large",
            Self::RequestTimeout(_) => "request_timeout",
            Self::CallerGone => "caller_gone",
            Self::UpstreamUnreachable => "upstream_unreachable",
            Self::KeyUnavailable => "key_unavailable",
            Self::LimiterUnavailable => "limiter_unavailable",
            Self::UpstreamTimeout => "upstream_timeout",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let r = |ms| {
            ProxyError::from(Refusal {
                kind: LimitKind::Key,
                name: "k".into(),
                limit: "k".into(),
                retry_after: std::time::Duration::from_millis(ms),
                rate: None,
            })
        };
        for (ms, secs) in [(1, 1), (999, 1), (1000, 1), (1001, 2), (0, 1)] {
            match r(ms) {
                ProxyError::RateLimited(r) => assert_eq!(r.retry_after_secs, secs, "{ms} ms"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn refusals_name_their_limit_once() {
        use std::num::NonZeroU32;
        let rate = crate::limit::Limit { count: NonZeroU32::MIN, per: Per::Minute, burst: NonZeroU32::MIN };
        let r = Refusal {
            kind: LimitKind::Client,
            name: "dashboard".into(),
            limit: "client `dashboard` (1/min burst 1)".into(),
            retry_after: std::time::Duration::from_secs(60),
            rate: Some(rate),
        };
        let ProxyError::RateLimited(limited) = ProxyError::from(r) else { panic!() };
        assert_eq!(limited.message, "rate limit client `dashboard` (1/min burst 1) exceeded; retry in 60 s");
        assert_eq!(limited.limit, "client:dashboard");
        assert_eq!(limited.policy, Some(("client-dashboard".into(), 1, 60)));
    }
}
