//! How a refusal is written for the caller: in the shape of the API it
//! speaks to (GraphQL on `kind = "graphql"` routes, MachineMetrics' REST
//! shape elsewhere), with HTTP's own headers (`WWW-Authenticate` on 401,
//! `Allow` on 405, `Retry-After` and the IETF rate-limit headers on 429).

use axum::response::Response;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

use super::ProxyError;

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers-08 and later).
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (same draft).
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The methods a REST route forwards (CONNECT and TRACE never are).
pub const REST_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
/// The methods a GraphQL route accepts.
pub const GRAPHQL_METHODS: &str = "GET, POST";

/// The media type of a GraphQL refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphqlMedia {
    /// `application/graphql-response+json` (GraphQL-over-HTTP).
    GraphqlResponse,
    /// `application/json`.
    Json,
}

/// The shape of a refusal's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `{"code","message","request_id"}`, as MachineMetrics' REST errors.
    Rest,
    /// `{"errors":[{"message","extensions":{"code","request_id"}}]}`.
    Graphql(GraphqlMedia),
}

/// What a refusal's response depends on besides the error itself.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// Returned in the body (and, by the caller, in `X-Request-Id`).
    pub request_id: &'a str,
    /// The body's shape.
    pub shape: Shape,
    /// What `Allow` says on a 405: the methods of the matched route.
    pub allow: &'static str,
}

/// The media type a GraphQL caller prefers, from its `Accept`:
/// `application/graphql-response+json` when its q is the highest, or tied
/// and named explicitly (Apollo Client 4 sends
/// `application/graphql-response+json,application/json;q=0.9`);
/// `application/json` otherwise, for `*/*` and for no `Accept` at all.
pub fn negotiate(accept: Option<&HeaderValue>) -> GraphqlMedia {
    let Some(accept) = accept.and_then(|v| v.to_str().ok()) else {
        return GraphqlMedia::Json;
    };
    // The q of each candidate: the most specific range that matches it, and
    // whether that range names it exactly.
    let mut best = [(0u8, 0.0f32, false); 2];
    for range in accept.split(',') {
        let Ok(mime) = range.trim().parse::<mime::Mime>() else { continue };
        let q = mime.get_param("q").and_then(|q| q.as_str().parse::<f32>().ok()).unwrap_or(1.0).clamp(0.0, 1.0);
        for (i, candidate) in ["application/graphql-response+json", "application/json"].into_iter().enumerate() {
            // `essence_str`: mime splits `graphql-response+json` into a subtype and a suffix.
            let specificity = match (mime.essence_str(), mime.type_().as_str(), mime.subtype().as_str()) {
                (essence, ..) if essence.eq_ignore_ascii_case(candidate) => 3,
                (_, "application", "*") => 2,
                (_, "*", "*") => 1,
                _ => continue,
            };
            if specificity > best[i].0 {
                best[i] = (specificity, q, specificity == 3);
            }
        }
    }
    let [(_, graphql_q, graphql_named), (_, json_q, _)] = best;
    if graphql_q > 0.0 && (graphql_q > json_q || (graphql_q == json_q && graphql_named)) {
        GraphqlMedia::GraphqlResponse
    } else {
        GraphqlMedia::Json
    }
}

impl ProxyError {
    /// The body and headers of this error's response.
    fn parts(&self, answer: &Answer<'_>) -> (HeaderMap, Bytes) {
        #[derive(Serialize)]
        struct Rest<'a> {
            code: &'static str,
            message: &'a str,
            request_id: &'a str,
        }
        #[derive(Serialize)]
        struct Graphql<'a> {
            errors: [GraphqlError<'a>; 1],
        }
        #[derive(Serialize)]
        struct GraphqlError<'a> {
            message: &'a str,
            extensions: Extensions<'a>,
        }
        #[derive(Serialize)]
        struct Extensions<'a> {
            code: &'static str,
            request_id: &'a str,
        }
        let (message, code, request_id) = (self.to_string(), self.code(), answer.request_id);
        // Serialising strings cannot fail; the fallback keeps this total.
        let (json, media) = match answer.shape {
            Shape::Rest => (serde_json::to_vec(&Rest { code, message: &message, request_id }), "application/json"),
            Shape::Graphql(media) => (
                serde_json::to_vec(&Graphql {
                    errors: [GraphqlError { message: &message, extensions: Extensions { code, request_id } }],
                }),
                match media {
                    GraphqlMedia::GraphqlResponse => "application/graphql-response+json",
                    GraphqlMedia::Json => "application/json",
                },
            ),
        };
        let mut headers = HeaderMap::with_capacity(6);
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            Self::Unauthenticated(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"mmgate\""));
            }
            Self::MethodNotAllowed(_) => {
                headers.insert(header::ALLOW, HeaderValue::from_static(answer.allow));
            }
            Self::RateLimited(limited) => {
                let secs = limited.retry_after_secs;
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
                // Structured fields; names are config names (A-Za-z0-9_-.), safe in a string.
                let name = limited.policy.as_ref().map_or_else(|| limited.limit.replace(':', "-"), |p| p.0.clone());
                if let Some((_, quota, window)) = &limited.policy {
                    let policy = format!("\"{name}\";q={quota};w={window}");
                    if let Ok(value) = HeaderValue::from_str(&policy) {
                        headers.insert(RATELIMIT_POLICY.clone(), value);
                    }
                }
                if let Ok(value) = HeaderValue::from_str(&format!("\"{name}\";r=0;t={secs}")) {
                    headers.insert(RATELIMIT.clone(), value);
                }
            }
            _ => {}
        }
        (headers, Bytes::from(json.unwrap_or_else(|_| b"{}".to_vec())))
    }

    /// The response for this error.
    pub fn into_response(self, answer: &Answer<'_>) -> Response {
        let (headers, body) = self.parts(answer);
        let mut response = Response::new(axum::body::Body::from(body));
        *response.status_mut() = self.status();
        *response.headers_mut() = headers;
        response
    }

    /// The whole response as HTTP/1.1 bytes in the REST shape, closing the
    /// connection: for the refusals made below hyper (a head too large or too
    /// slow), before any route is known and where no response object can be
    /// handed to it.
    pub fn to_http1(&self, request_id: &str) -> Vec<u8> {
        let (headers, body) = self.parts(&Answer { request_id, shape: Shape::Rest, allow: REST_METHODS });
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
    use http_body_util::BodyExt;

    use super::*;
    use crate::error::RateLimited;

    fn answer(shape: Shape) -> Answer<'static> {
        Answer { request_id: "abc", shape, allow: GRAPHQL_METHODS }
    }

    async fn body(response: Response) -> String {
        String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn rest_and_graphql_shapes() {
        let rest = ProxyError::ScopeDenied("no".into()).into_response(&answer(Shape::Rest));
        assert_eq!(rest.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(body(rest).await, r#"{"code":"scope_denied","message":"no","request_id":"abc"}"#);
        let graphql =
            ProxyError::ScopeDenied("no".into()).into_response(&answer(Shape::Graphql(GraphqlMedia::GraphqlResponse)));
        assert_eq!(graphql.status(), 403);
        assert_eq!(graphql.headers()[header::CONTENT_TYPE], "application/graphql-response+json");
        assert_eq!(
            body(graphql).await,
            r#"{"errors":[{"message":"no","extensions":{"code":"scope_denied","request_id":"abc"}}]}"#
        );
    }

    #[test]
    fn accept_picks_graphql_response_json_only_when_preferred() {
        let pick = |accept: &str| negotiate(Some(&HeaderValue::from_str(accept).unwrap()));
        use GraphqlMedia::{GraphqlResponse, Json};
        assert_eq!(negotiate(None), Json);
        assert_eq!(pick("application/graphql-response+json,application/json;q=0.9"), GraphqlResponse);
        assert_eq!(pick("application/graphql-response+json, application/json"), GraphqlResponse);
        assert_eq!(pick("application/json, application/graphql-response+json"), GraphqlResponse);
        assert_eq!(pick("application/json;q=1, application/graphql-response+json;q=0.5"), Json);
        assert_eq!(pick("application/graphql-response+json"), GraphqlResponse);
        assert_eq!(pick("application/json"), Json);
        assert_eq!(pick("*/*"), Json);
        assert_eq!(pick("application/*"), Json);
        assert_eq!(pick("application/graphql-response+json;q=0, */*"), Json);
        assert_eq!(pick("text/html"), Json);
        assert_eq!(pick("not a media type, application/graphql-response+json"), GraphqlResponse);
    }

    #[test]
    fn http_headers_of_refusals() {
        let unauthenticated =
            ProxyError::Unauthenticated(crate::client::IdentityError::UnknownToken).into_response(&answer(Shape::Rest));
        assert_eq!(unauthenticated.headers()[header::WWW_AUTHENTICATE], "Bearer realm=\"mmgate\"");
        let not_allowed = ProxyError::MethodNotAllowed("x").into_response(&answer(Shape::Rest));
        assert_eq!(not_allowed.headers()[header::ALLOW], "GET, POST");
        let limited = ProxyError::RateLimited(RateLimited {
            message: "m".into(),
            retry_after_secs: 7,
            limit: "key:reporting".into(),
            policy: Some(("key-reporting".into(), 10, 1)),
        })
        .into_response(&answer(Shape::Rest));
        assert_eq!(limited.headers()[header::RETRY_AFTER], "7");
        assert_eq!(limited.headers()["ratelimit-policy"], "\"key-reporting\";q=10;w=1");
        assert_eq!(limited.headers()["ratelimit"], "\"key-reporting\";r=0;t=7");
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
        assert_eq!(json["code"], "headers_too_large");
        assert_eq!(json["request_id"], "id-1");
    }
}
