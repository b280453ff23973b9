//! Reading a GraphQL request from its HTTP carrier exactly as a GraphQL
//! server would, or refusing it: POST `application/json` (one object or a
//! batch array), POST `application/graphql`, GET `?query=`.
//!
//! JSON is read strictly: a duplicate key at any depth is refused, because
//! servers disagree on whether the first or the last one wins. serde_json
//! decodes `\u` escapes in keys and strings before anything is compared.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::HeaderMap;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// Why a request is not a GraphQL request mmgate can check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CarrierError {
    /// Malformed or ambiguous (400 `bad_graphql`).
    #[error("{0}")]
    Bad(String),
    /// Not a media type or encoding GraphQL is read from (415).
    #[error("{0}")]
    UnsupportedMedia(String),
}

/// One GraphQL request: the document and the operation it selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphqlRequest {
    /// The document text.
    pub query: String,
    /// `operationName`, if given and not empty.
    pub operation_name: Option<String>,
}

fn bad(message: impl Into<String>) -> CarrierError {
    CarrierError::Bad(message.into())
}

/// The GraphQL parameters a URL query string carries.
#[derive(Default)]
struct UrlParams {
    query: Option<String>,
    operation_name: Option<String>,
    any: bool,
}

fn url_params(query_string: Option<&str>) -> Result<UrlParams, CarrierError> {
    let mut params = UrlParams::default();
    let mut seen: Vec<Cow<'_, str>> = Vec::new();
    for (name, value) in form_urlencoded::parse(query_string.unwrap_or_default().as_bytes()) {
        if !matches!(name.as_ref(), "query" | "operationName" | "variables" | "extensions") {
            continue;
        }
        if seen.contains(&name) {
            return Err(bad(format!("`{name}` is given twice in the URL")));
        }
        params.any = true;
        match name.as_ref() {
            "query" => params.query = Some(value.into_owned()),
            "operationName" => params.operation_name = Some(value.into_owned()).filter(|v| !v.is_empty()),
            _ => {}
        }
        seen.push(name);
    }
    Ok(params)
}

/// Reads a GET request: everything is in the URL, and the body must be empty.
pub fn from_get(query_string: Option<&str>, body: &[u8]) -> Result<Vec<GraphqlRequest>, CarrierError> {
    if !body.is_empty() {
        return Err(bad("a GET request carries its GraphQL in the URL, not in a body"));
    }
    let params = url_params(query_string)?;
    let Some(query) = params.query else {
        return Err(bad("GET needs `?query=`; a persisted-query hash without the query text cannot be checked"));
    };
    Ok(vec![GraphqlRequest { query, operation_name: params.operation_name }])
}

/// The media types a POST may use.
enum Media {
    Json,
    Graphql,
}

fn media(headers: &HeaderMap) -> Result<Media, CarrierError> {
    if headers.contains_key(CONTENT_ENCODING) {
        return Err(CarrierError::UnsupportedMedia("send GraphQL bodies without Content-Encoding".into()));
    }
    let unsupported = || {
        CarrierError::UnsupportedMedia(
            "GraphQL requests must be POSTed as `application/json` or `application/graphql` (UTF-8)".into(),
        )
    };
    let value = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).ok_or_else(unsupported)?;
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    for param in parts {
        let (name, val) = param.split_once('=').unwrap_or((param, ""));
        let val = val.trim().trim_matches('"');
        if name.trim().eq_ignore_ascii_case("charset") && !val.eq_ignore_ascii_case("utf-8") {
            return Err(unsupported());
        }
    }
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(Media::Json)
    } else if essence.eq_ignore_ascii_case("application/graphql") {
        Ok(Media::Graphql)
    } else {
        Err(unsupported())
    }
}

/// Reads a POST request from its headers, URL query string and whole body.
pub fn from_post(
    headers: &HeaderMap,
    query_string: Option<&str>,
    body: &[u8],
) -> Result<Vec<GraphqlRequest>, CarrierError> {
    let media = media(headers)?;
    let params = url_params(query_string)?;
    match media {
        Media::Graphql => {
            if params.query.is_some() {
                return Err(bad("`query` is given both in the URL and in the body"));
            }
            let query = std::str::from_utf8(body).map_err(|_| bad("the body is not valid UTF-8"))?;
            Ok(vec![GraphqlRequest { query: query.to_owned(), operation_name: params.operation_name }])
        }
        Media::Json => {
            if params.any {
                return Err(bad(if params.query.is_some() {
                    "`query` is given both in the URL and in the body"
                } else {
                    "GraphQL parameters must not be split between the URL and the JSON body"
                }));
            }
            let parsed: Body = serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON body: {e}")))?;
            let items = match parsed {
                Body::One(item) => vec![item],
                Body::Batch(items) if items.is_empty() => return Err(bad("an empty batch")),
                Body::Batch(items) => items,
            };
            items
                .into_iter()
                .map(|item| match item.query {
                    Some(query) => Ok(GraphqlRequest { query, operation_name: item.operation_name }),
                    None if item.persisted => {
                        Err(bad("a persisted-query hash without the query text cannot be checked; send `query`"))
                    }
                    None => Err(bad("the request has no `query`")),
                })
                .collect()
        }
    }
}

/// A JSON request body: one object or a batch array of them.
enum Body {
    One(Item),
    Batch(Vec<Item>),
}

/// One JSON request object, read strictly.
struct Item {
    query: Option<String>,
    operation_name: Option<String>,
    persisted: bool,
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Body;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a GraphQL request object or an array of them")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Body, A::Error> {
                ItemVisitor.visit_map(map).map(Body::One)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Body, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Item>()? {
                    items.push(item);
                }
                Ok(Body::Batch(items))
            }
        }
        deserializer.deserialize_any(V)
    }
}

struct ItemVisitor;

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = Item;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a GraphQL request object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item, A::Error> {
        let mut item = Item { query: None, operation_name: None, persisted: false };
        let mut seen = KeySet::default();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                return Err(de::Error::custom(format_args!("duplicate key `{key}`")));
            }
            match key.as_str() {
                "query" => item.query = map.next_value::<Option<String>>()?,
                "operationName" => item.operation_name = map.next_value::<Option<String>>()?.filter(|n| !n.is_empty()),
                "extensions" => item.persisted = map.next_value::<Extensions>()?.persisted,
                _ => {
                    map.next_value::<Strict>()?;
                }
            }
            seen.insert(key);
        }
        Ok(item)
    }
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ItemVisitor)
    }
}

/// `extensions`: only whether it carries `persistedQuery` matters.
struct Extensions {
    persisted: bool,
}

impl<'de> Deserialize<'de> for Extensions {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Extensions;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an extensions object")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Extensions, E> {
                Ok(Extensions { persisted: false })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Extensions, A::Error> {
                let keys = StrictVisitor.visit_map(map)?;
                Ok(Extensions { persisted: keys.contains("persistedQuery") })
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Any JSON value, checked for duplicate keys at every depth and discarded.
struct Strict;

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(|_| Strict)
    }
}

/// The keys of one JSON object: a short list while it is short (most are),
/// a hash set once it is not, so that finding duplicates among many keys
/// costs linear time, not quadratic.
#[derive(Default)]
struct KeySet {
    few: Vec<String>,
    many: HashSet<String>,
}

impl KeySet {
    const FEW: usize = 16;

    fn contains(&self, key: &str) -> bool {
        self.few.iter().any(|k| k == key) || self.many.contains(key)
    }

    fn insert(&mut self, key: String) {
        if self.few.len() < Self::FEW {
            self.few.push(key);
        } else {
            self.many.insert(key);
        }
    }
}

/// Visits any JSON value; for an object, returns its keys.
struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = KeySet;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(KeySet::default())
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(KeySet::default())
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(KeySet::default())
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(KeySet::default())
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(KeySet::default())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(KeySet::default())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<Strict>()?.is_some() {}
        Ok(KeySet::default())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut keys = KeySet::default();
        while let Some(key) = map.next_key::<String>()? {
            if keys.contains(&key) {
                return Err(de::Error::custom(format_args!("duplicate key `{key}`")));
            }
            map.next_value::<Strict>()?;
            keys.insert(key);
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests;
