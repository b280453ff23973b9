//! Forwarding: step 5 of the request path, after every check has passed.
//!
//! Builds the upstream request from config alone (scheme, host, base path),
//! never from the caller's `Host` or absolute-form target; strips the caller's
//! credentials and hop-by-hop headers; injects the route's key; and streams
//! both bodies. Redirects are returned, never followed: the pooled client
//! below has no redirect logic at all.

mod client;
mod egress;
mod pool;

use axum::body::Body;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Request, Uri};

pub use client::{client, send, UpstreamClient};

use crate::body::CallerBodyError;
use crate::config::UpstreamSettings;

/// A request body on its way upstream (the caller's, already counted and limited).
pub type ForwardBody = Body;

/// The `X-Request-Id` header.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Why forwarding failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream could not be reached, or failed mid-exchange (502).
    #[error("the upstream API could not be reached")]
    Unreachable,
    /// No response headers within `upstream.timeout` (504).
    #[error("the upstream API did not answer in time")]
    Timeout,
    /// The caller's body failed: its fault, not the upstream's.
    #[error("{0}")]
    Caller(CallerBodyError),
    /// The request target cannot be joined to the upstream's URL (400).
    #[error("the request target cannot be forwarded")]
    BadTarget,
}

/// Headers that describe one connection and never cross a proxy (RFC 9110
/// §7.6.1), and `Upgrade` (mmgate never switches protocols). `Connection`
/// first: the names it lists go too.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The place of `name` in `HOP_BY_HOP`, by one string match (comparing
/// `HeaderName`s one by one costs a byte comparison per custom name).
fn hop_by_hop(name: &HeaderName) -> Option<u32> {
    Some(match name.as_str() {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "te" => 5,
        "trailer" => 6,
        "transfer-encoding" => 7,
        "upgrade" => 8,
        _ => return None,
    })
}

/// Headers a caller cannot get dropped by naming them in `Connection`: they
/// describe the body mmgate checked, so the upstream must see them too.
fn is_protected(name: &str) -> bool {
    name.eq_ignore_ascii_case("content-type") || name.eq_ignore_ascii_case("content-length")
}

/// Removes hop-by-hop headers, including every header named in `Connection`.
///
/// Names listed in `Connection` are removed one by one (linear in the list,
/// which a caller controls).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass notes which are present; most messages carry none (a
    // keep-alive `Connection` at most).
    let present = headers.keys().filter_map(hop_by_hop).fold(0u32, |set, i| set | 1 << i);
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        // Usually only `keep-alive` or `close`: hop-by-hop already, or no
        // header at all, so nothing is collected (nor allocated).
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|n| !n.is_empty() && !n.eq_ignore_ascii_case("close") && !is_protected(n))
            .filter(|n| !HOP_BY_HOP.iter().any(|h| n.eq_ignore_ascii_case(h.as_str())))
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & 1 << i != 0 {
            headers.remove(name);
        }
    }
}

/// The upstream URI: configured scheme, host and base path, then the normalised path and the query.
pub fn upstream_uri(upstream: &UpstreamSettings, path: &str, query: Option<&str>) -> Result<Uri, UpstreamError> {
    let mut path_and_query =
        String::with_capacity(upstream.base_path.len() + path.len() + query.map_or(0, |q| q.len() + 1));
    path_and_query.push_str(&upstream.base_path);
    path_and_query.push_str(path);
    if let Some(q) = query {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    Uri::builder()
        .scheme(upstream.scheme.clone())
        .authority(upstream.authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|_| UpstreamError::BadTarget)
}

/// What to forward: the caller's request with its path normalised.
pub struct Outbound<'a> {
    /// The upstream URI.
    pub uri: Uri,
    /// `Bearer <key>`, marked sensitive.
    pub authorization: &'a HeaderValue,
    /// The request id to pass on.
    pub request_id: &'a HeaderValue,
    /// The `Host` to send, when known before the connection is chosen.
    pub host: Option<&'a HeaderValue>,
}

/// Turns the caller's request into the upstream request.
pub fn upstream_request(mut request: Request<Body>, out: Outbound<'_>) -> Request<ForwardBody> {
    let headers = request.headers_mut();
    strip_hop_by_hop(headers);
    headers.remove(header::AUTHORIZATION);
    // The upstream's `Host`: prepared at load for HTTP/1.1-only upstreams;
    // otherwise the client writes it from the URI on HTTP/1.1 (the same
    // value) and `:authority` on HTTP/2, where `Host` does not belong.
    match out.host {
        Some(host) => headers.insert(header::HOST, host.clone()),
        None => headers.remove(header::HOST),
    };
    headers.insert(header::AUTHORIZATION, out.authorization.clone());
    headers.insert(X_REQUEST_ID.clone(), out.request_id.clone());
    *request.uri_mut() = out.uri;
    // The connection decides: HTTP/2 if ALPN chose it, else HTTP/1.1,
    // whatever the caller spoke.
    *request.version_mut() = http::Version::HTTP_11;
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_hop_by_hop_name_is_found_at_its_place() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop(name), u32::try_from(i).ok(), "{name}");
        }
        assert_eq!(hop_by_hop(&header::CONTENT_TYPE), None);
    }

    #[test]
    fn connection_named_headers_go_but_content_type_stays() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close, X-Secret, authorization, content-type"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-type", "x-kept"]);

        // A long Connection list costs time in proportion to its length.
        let mut h = HeaderMap::new();
        let list: Vec<String> = (0..20_000).map(|i| format!("x-{i}")).collect();
        h.insert(header::CONNECTION, HeaderValue::from_str(&list.join(", ")).unwrap());
        for i in (0..20_000).step_by(100) {
            h.insert(HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap(), HeaderValue::from_static("1"));
        }
        h.insert("x-kept", HeaderValue::from_static("1"));
        let started = std::time::Instant::now();
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["x-kept"]);
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "{:?}", started.elapsed());

        let mut untouched = HeaderMap::new();
        untouched.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        untouched.insert("x-custom", HeaderValue::from_static("1"));
        let before = untouched.clone();
        strip_hop_by_hop(&mut untouched);
        assert_eq!(untouched, before);
    }
}
