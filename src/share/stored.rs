//! An upstream answer held whole: given to every caller of a shared read,
//! and kept by the answer cache while fresh.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use serde::de::IgnoredAny;
use serde::Deserialize;

/// Says how an answer on a cached route was served.
pub static X_MMGATE_CACHE: HeaderName = HeaderName::from_static("x-mmgate-cache");

/// An upstream answer, whole.
#[derive(Debug)]
pub struct Stored {
    /// Its status.
    pub status: StatusCode,
    /// Its headers (hop-by-hop ones already removed).
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
    /// When it was received.
    pub received: Instant,
    /// Until when the cache may serve it (`None`: not cacheable).
    expires: Option<Instant>,
}

/// How an answer is told to its caller in `X-Mmgate-Cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// From the cache.
    Hit,
    /// From the upstream, for this caller.
    Miss,
    /// From an upstream call another caller's identical read made.
    Coalesced,
    /// From the upstream: the caller asked not to be served from the cache.
    Bypass,
}

impl Served {
    /// The header's (and the access log's) value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Coalesced => "coalesced",
            Self::Bypass => "bypass",
        }
    }
}

/// A GraphQL response's top level, as far as caching cares.
#[derive(Deserialize)]
struct GraphqlResult {
    #[serde(default)]
    errors: Option<IgnoredAny>,
}

impl Stored {
    /// The answer `parts` and `body`, received at `received`; kept for `ttl`
    /// when it is one a cache may keep (see `cacheable`).
    pub fn new(
        parts: &http::response::Parts,
        body: Bytes,
        received: Instant,
        ttl: Option<Duration>,
        graphql: bool,
    ) -> Self {
        let mut stored = Self { status: parts.status, headers: parts.headers.clone(), body, received, expires: None };
        if stored.cacheable(graphql) {
            stored.expires = ttl.map(|ttl| received + ttl);
        }
        stored
    }

    /// Successful, for everyone, and (on GraphQL) without errors: an
    /// answer the cache may keep.
    fn cacheable(&self, graphql: bool) -> bool {
        if !self.status.is_success() || self.headers.contains_key(header::SET_COOKIE) {
            return false;
        }
        let forbids = self.headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .map(str::trim)
                    .any(|d| d.eq_ignore_ascii_case("no-store") || d.eq_ignore_ascii_case("private"))
            })
        });
        if forbids {
            return false;
        }
        if !graphql {
            return true;
        }
        // A compressed body cannot be checked for errors.
        if self.headers.get(header::CONTENT_ENCODING).is_some_and(|v| v != "identity") {
            return false;
        }
        match serde_json::from_slice::<GraphqlResult>(&self.body) {
            Ok(result) => result.errors.is_none(),
            Err(_) => serde_json::from_slice::<Vec<GraphqlResult>>(&self.body)
                .is_ok_and(|batch| batch.iter().all(|r| r.errors.is_none())),
        }
    }

    /// Whether the cache may keep it, and whether it may still serve it at `now`.
    pub fn fresh_at(&self, now: Instant) -> bool {
        self.expires.is_some_and(|expires| now < expires)
    }

    /// Whether the cache may keep it at all.
    pub fn cacheable_answer(&self) -> bool {
        self.expires.is_some()
    }

    /// Roughly the bytes it holds.
    pub fn weight(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 32).sum();
        self.body.len() + headers + 128
    }

    /// A response carrying it, told as `served` (with `Age` on a hit), on a
    /// cached route (`X-Mmgate-Cache`) or not.
    pub fn response(&self, served: Served, on_cached_route: bool, now: Instant) -> Response {
        let mut response = Response::new(Body::from(self.body.clone()));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        if served == Served::Hit {
            // Time spent here, on top of any the upstream reported (RFC 9111 §4.2.3).
            let upstream_age =
                self.headers.get(header::AGE).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
            let age = now.saturating_duration_since(self.received).as_secs().saturating_add(upstream_age.unwrap_or(0));
            response.headers_mut().insert(header::AGE, HeaderValue::from(age));
        }
        if on_cached_route {
            response.headers_mut().insert(X_MMGATE_CACHE.clone(), HeaderValue::from_static(served.as_str()));
        }
        response
    }
}
