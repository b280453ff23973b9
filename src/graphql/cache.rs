//! A bounded cache of document analyses, keyed by the exact document text
//! and operation name.
//!
//! Parsing dominates the cost of a GraphQL check (tens of microseconds for a
//! kilobyte), while dashboards and scripts send the same documents over and
//! over. A hit compares the whole text, so a hash collision can never hand
//! one document another's verdict. Entries are weighed by size, so large
//! documents cannot pin much memory.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use quick_cache::sync::Cache;
use quick_cache::{Equivalent, Weighter};

use super::analyse::{analyse, AnalysisError, Limits, Operation};

/// Bytes of document text one route's cache may hold.
const CAPACITY_BYTES: u64 = 8 * 1024 * 1024;

/// A document's operations and its token sequence, or why it is refused.
pub type Analysed = Result<Arc<Analysis>, AnalysisError>;

/// What the request path needs to know of a document, once per document.
#[derive(Debug)]
pub struct Analysis {
    /// Every operation.
    pub operations: Vec<Operation>,
    /// Its tokens, one space apart: what two documents are compared by when
    /// deciding whether they ask the same (whitespace, commas and comments
    /// are ignored tokens in GraphQL; nothing else is).
    pub normalized: Box<str>,
}

/// The document's significant tokens, one space apart.
pub fn normalize(document: &str) -> Box<str> {
    use apollo_parser::{Lexer, TokenKind};
    let mut out = String::with_capacity(document.len());
    for token in Lexer::new(document).flatten() {
        if matches!(token.kind(), TokenKind::Whitespace | TokenKind::Comma | TokenKind::Comment | TokenKind::Eof) {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(token.data());
    }
    out.into_boxed_str()
}

#[derive(PartialEq, Eq)]
struct Key {
    query: Box<str>,
    operation_name: Option<Box<str>>,
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Lookup { query: &self.query, operation_name: self.operation_name.as_deref() }.hash(state);
    }
}

#[derive(Hash)]
struct Lookup<'a> {
    query: &'a str,
    operation_name: Option<&'a str>,
}

impl Equivalent<Key> for Lookup<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        *self.query == *key.query && self.operation_name == key.operation_name.as_deref()
    }
}

#[derive(Clone)]
struct BySize;

impl Weighter<Key, Analysed> for BySize {
    fn weight(&self, key: &Key, _: &Analysed) -> u64 {
        (key.query.len() + key.operation_name.as_ref().map_or(0, |n| n.len()) + 128) as u64
    }
}

/// One GraphQL route's cache of analyses (its limits are fixed for its life).
pub struct AnalysisCache(Cache<Key, Analysed, BySize>);

impl fmt::Debug for AnalysisCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnalysisCache").field("entries", &self.0.len()).finish()
    }
}

impl Default for AnalysisCache {
    fn default() -> Self {
        Self(Cache::with_weighter(4096, CAPACITY_BYTES, BySize))
    }
}

impl AnalysisCache {
    /// The analysis of this exact document, if it was seen before.
    pub fn cached(&self, query: &str, operation_name: Option<&str>) -> Option<Analysed> {
        self.0.get(&Lookup { query, operation_name })
    }

    /// `analyse`, answered from the cache when this exact document was seen.
    pub fn analyse(&self, query: &str, operation_name: Option<&str>, limits: &Limits) -> Analysed {
        if let Some(hit) = self.cached(query, operation_name) {
            return hit;
        }
        let analysed = Self::analyse_once(query, operation_name, limits);
        let key = Key { query: query.into(), operation_name: operation_name.map(Into::into) };
        self.0.insert(key, analysed.clone());
        analysed
    }

    /// Analyses under other limits than the route's, so nothing is cached
    /// (a shadowed policy looking past what the route refuses).
    pub fn analyse_once(query: &str, operation_name: Option<&str>, limits: &Limits) -> Analysed {
        analyse(query, operation_name, limits)
            .map(|operations| Arc::new(Analysis { operations, normalized: normalize(query) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_require_the_same_text_and_name() {
        let cache = AnalysisCache::default();
        let limits = Limits::default();
        let first = cache.analyse("query A { a } query B { b }", Some("A"), &limits).unwrap();
        let again = cache.analyse("query A { a } query B { b }", Some("A"), &limits).unwrap();
        assert_eq!(&*first.normalized, "query A { a } query B { b }");
        assert!(Arc::ptr_eq(&first, &again));
        assert!(cache.analyse("query A { a } query B { b }", None, &limits).is_err());
        assert!(cache.analyse("query A { a } query B { b }", Some("C"), &limits).is_err());
        let other = cache.analyse("mutation A { a }", Some("A"), &limits).unwrap();
        assert!(!Arc::ptr_eq(&first, &other));
    }

    #[test]
    fn normalizing_ignores_only_whitespace_commas_and_comments() {
        let same = [
            "{ machines(limit: 1, offset: 2) { name } }",
            "{machines(limit:1 offset:2){name}}",
            "# hi\n{\n  machines( limit: 1,,, offset: 2 ) { name } # there\n}",
        ];
        for doc in same {
            assert_eq!(&*normalize(doc), "{ machines ( limit : 1 offset : 2 ) { name } }", "{doc}");
        }
        assert_ne!(normalize("{ a(s: \"x y\") }"), normalize("{ a(s: \"x  y\") }"), "strings are not whitespace");
        assert_ne!(normalize("{ a }"), normalize("{ b }"));
    }
}
