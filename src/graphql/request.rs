//! Reading a GraphQL request from its HTTP carrier exactly as a GraphQL
//! server would, or refusing it: POST `application/json` (one object or a
//! batch array), POST `application/graphql`, GET `?query=`.
//!
//! JSON is read strictly: a duplicate key at any depth is refused, because
//! servers disagree on whether the first or the last one wins. serde_json
//! decodes `\u` escapes in keys and strings before anything is compared.

use std::borrow::Cow;
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
    /// Every other parameter (`variables`, `extensions`, `operationName`…)
    /// as canonical JSON, keys sorted: two requests with the same document
    /// ask the same only if these are equal too.
    pub params: Box<str>,
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
    /// Every parameter but `query`, JSON ones parsed, for `GraphqlRequest::params`.
    others: serde_json::Map<String, serde_json::Value>,
}

fn url_params(query_string: Option<&str>) -> Result<UrlParams, CarrierError> {
    let mut params = UrlParams::default();
    let mut seen: Vec<Cow<'_, str>> = Vec::new();
    for (name, value) in form_urlencoded::parse(query_string.unwrap_or_default().as_bytes()) {
        if !matches!(name.as_ref(), "query" | "operationName" | "variables" | "extensions") {
            // Forwarded too, so part of what the request asks.
            let entry = params.others.entry(format!("url:{name}")).or_insert_with(|| serde_json::json!([]));
            if let serde_json::Value::Array(values) = entry {
                values.push(serde_json::Value::String(value.into_owned()));
            }
            continue;
        }
        if seen.contains(&name) {
            return Err(bad(format!("`{name}` is given twice in the URL")));
        }
        params.any = true;
        match name.as_ref() {
            "query" => params.query = Some(value.into_owned()),
            "operationName" => {
                params.operation_name = Some(value.to_string()).filter(|v| !v.is_empty());
                params.others.insert(name.to_string(), serde_json::Value::String(value.into_owned()));
            }
            _ => {
                // JSON text compared as a JSON value when it is one.
                let parsed = serde_json::from_str::<StrictValue>(&value)
                    .map_or_else(|_| serde_json::Value::String(value.to_string()), |v| v.0);
                params.others.insert(name.to_string(), parsed);
            }
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
    let others = canonical(&serde_json::Value::Object(params.others));
    Ok(vec![GraphqlRequest { query, operation_name: params.operation_name, params: others }])
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
            let others = canonical(&serde_json::Value::Object(params.others));
            Ok(vec![GraphqlRequest { query: query.to_owned(), operation_name: params.operation_name, params: others }])
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
                    Some(query) => Ok(GraphqlRequest {
                        query,
                        operation_name: item.operation_name,
                        params: canonical(&serde_json::Value::Object(item.others)),
                    }),
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
    /// Every member but `query`.
    others: serde_json::Map<String, serde_json::Value>,
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
        let mut item = Item { query: None, operation_name: None, persisted: false, others: serde_json::Map::new() };
        let mut seen_query = false;
        while let Some(key) = map.next_key::<String>()? {
            if (key == "query" && seen_query) || item.others.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key `{key}`")));
            }
            if key == "query" {
                seen_query = true;
                item.query = map.next_value::<Option<String>>()?;
                continue;
            }
            let value = map.next_value::<StrictValue>()?.0;
            match key.as_str() {
                "operationName" => match &value {
                    serde_json::Value::String(name) => {
                        item.operation_name = Some(name.clone()).filter(|n| !n.is_empty())
                    }
                    serde_json::Value::Null => {}
                    _ => return Err(de::Error::custom("`operationName` must be a string")),
                },
                "extensions" => match &value {
                    serde_json::Value::Object(members) => item.persisted = members.contains_key("persistedQuery"),
                    serde_json::Value::Null => {}
                    _ => return Err(de::Error::custom("`extensions` must be an object")),
                },
                _ => {}
            }
            item.others.insert(key, value);
        }
        Ok(item)
    }
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ItemVisitor)
    }
}

/// Any JSON value, refused if an object at any depth repeats a key.
struct StrictValue(serde_json::Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

/// Builds a `serde_json::Value`, refusing duplicate keys (serde_json's own
/// `Value` keeps the last one silently).
struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = serde_json::Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut values = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            values.push(v);
        }
        Ok(values.into())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if members.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key `{key}`")));
            }
            let StrictValue(value) = map.next_value()?;
            members.insert(key, value);
        }
        Ok(members.into())
    }
}

/// `value` as JSON text with every object's keys sorted, so that equal JSON
/// values (members in any order) give equal text whatever map type
/// serde_json was built with.
pub fn canonical(value: &serde_json::Value) -> Box<str> {
    // Written straight into one buffer by serde_json's serializer (what
    // `Value`'s `Display` uses too), not through `to_string` per member.
    fn write(value: &serde_json::Value, out: &mut Vec<u8>) -> serde_json::Result<()> {
        match value {
            serde_json::Value::Object(members) => {
                let mut sorted: Vec<_> = members.iter().collect();
                sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
                out.push(b'{');
                for (i, (key, value)) in sorted.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut *out, key)?;
                    out.push(b':');
                    write(value, out)?;
                }
                out.push(b'}');
            }
            serde_json::Value::Array(values) => {
                out.push(b'[');
                for (i, value) in values.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(value, out)?;
                }
                out.push(b']');
            }
            scalar => serde_json::to_writer(&mut *out, scalar)?,
        }
        Ok(())
    }
    let mut out = Vec::with_capacity(64);
    // Writing JSON into memory cannot fail, and serde_json writes UTF-8;
    // were either ever untrue, the request's full text still tells it apart.
    match write(value, &mut out).ok().and_then(|()| String::from_utf8(out).ok()) {
        Some(text) => text.into_boxed_str(),
        None => value.to_string().into_boxed_str(),
    }
}

#[cfg(test)]
mod tests;
