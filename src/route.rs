//! Path normalisation and route matching: step 1 of the request path.
//!
//! The path is normalised before anything looks at it, so that every later
//! decision (scope, key, upstream path) is made on the one spelling the
//! upstream will act on: unreserved percent-escapes are decoded, `.` and `..`
//! resolved, `//` merged. Encoded separators (`%2F`, `%5C`) and paths that
//! climb above `/` are refused, because servers disagree on what they mean.

use std::borrow::Cow;

/// Why a request path is refused (400 `bad_request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request target must be a path starting with `/`")]
    NotAbsolute,
    #[error("a backslash is not allowed in the path")]
    Backslash,
    #[error("malformed percent-escape in the path")]
    MalformedEscape,
    #[error("an encoded `/` or `\\` is not allowed in the path")]
    EncodedSeparator,
    #[error("the path climbs above `/`")]
    AboveRoot,
}

/// How a route's path pattern matches a normalised path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// The whole path, byte for byte.
    Exact(String),
    /// Everything under this prefix, which ends with `/` (from `"/reports/*"`).
    Prefix(String),
}

impl PathPattern {
    /// Parses `"/graphql"` or `"/reports/*"`; `None` when it is not such a pattern.
    pub fn parse(pattern: &str) -> Option<Self> {
        if !pattern.starts_with('/') {
            return None;
        }
        let literal = pattern.strip_suffix('*').unwrap_or(pattern);
        if literal.contains(['*', '%', '\\', '?', '#']) {
            return None;
        }
        // A pattern must itself be normalised, or it could never match.
        if normalise(literal).ok().as_deref() != Some(literal) {
            return None;
        }
        if pattern.ends_with("/*") {
            Some(Self::Prefix(literal.to_owned()))
        } else if pattern.ends_with('*') {
            None
        } else {
            Some(Self::Exact(literal.to_owned()))
        }
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => p == path,
            Self::Prefix(p) => path.starts_with(p.as_str()),
        }
    }
}

/// Routes of any kind, ordered so that the first match is the most specific
/// one: exact paths first, then prefixes, longest first.
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    routes: Vec<(PathPattern, T)>,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        Self { routes: Vec::new() }
    }
}

impl<T> RouteTable<T> {
    /// Orders `routes` by specificity.
    pub fn new(mut routes: Vec<(PathPattern, T)>) -> Self {
        routes.sort_by_key(|(pattern, _)| match pattern {
            PathPattern::Exact(_) => (0, 0),
            PathPattern::Prefix(p) => (1, usize::MAX - p.len()),
        });
        Self { routes }
    }

    /// The route for a normalised path.
    pub fn find(&self, path: &str) -> Option<&T> {
        self.routes.iter().find(|(pattern, _)| pattern.matches(path)).map(|(_, route)| route)
    }

    /// Every route, most specific first.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.routes.iter().map(|(_, route)| route)
    }

    /// The same table with each route turned into something else.
    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> RouteTable<U> {
        RouteTable { routes: self.routes.iter().map(|(pattern, route)| (pattern.clone(), f(route))).collect() }
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes the unreserved escapes of one segment; other escapes are kept, in upper case.
fn decode_segment(segment: &str) -> Result<Cow<'_, str>, PathError> {
    if segment.contains('\\') {
        return Err(PathError::Backslash);
    }
    if !segment.contains('%') {
        return Ok(Cow::Borrowed(segment));
    }
    let bytes = segment.as_bytes();
    let mut out = String::with_capacity(segment.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            out.push(char::from(b));
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) =
            (bytes.get(i + 1).copied().and_then(hex_value), bytes.get(i + 2).copied().and_then(hex_value))
        else {
            return Err(PathError::MalformedEscape);
        };
        let decoded = hi << 4 | lo;
        if decoded == b'/' || decoded == b'\\' {
            return Err(PathError::EncodedSeparator);
        }
        if is_unreserved(decoded) {
            out.push(char::from(decoded));
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(hi)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(lo)]));
        }
        i += 3;
    }
    Ok(Cow::Owned(out))
}

/// Normalises a request path as DESIGN.md step 1 says; borrows when it is already normal.
pub fn normalise(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    // Non-ASCII bytes cannot come from a valid URI; `path` is ASCII-checked by
    // `http::Uri`, and `decode_segment` only ever produces ASCII.
    let already_normal =
        !path.contains(['%', '\\']) && !path.contains("//") && !path.split('/').any(|s| s == "." || s == "..");
    if already_normal {
        return Ok(Cow::Borrowed(path));
    }

    let mut stack: Vec<Cow<'_, str>> = Vec::new();
    let mut trailing_slash = false;
    for raw in path[1..].split('/') {
        let segment = decode_segment(raw)?;
        trailing_slash = false;
        match segment.as_ref() {
            "" | "." => trailing_slash = true,
            ".." => {
                if stack.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing_slash = true;
            }
            _ => stack.push(segment),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &stack {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || stack.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, String> {
        normalise(p).map(|c| c.into_owned()).map_err(|e| e.to_string())
    }

    #[test]
    fn normal_paths_are_borrowed() {
        assert!(matches!(normalise("/graphql").unwrap(), Cow::Borrowed(_)));
        assert!(matches!(normalise("/reports/production").unwrap(), Cow::Borrowed(_)));
        assert!(matches!(normalise("/a.b/c..d/").unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn dot_segments_and_empty_segments_resolve() {
        assert_eq!(norm("/reports/../graphql").unwrap(), "/graphql");
        assert_eq!(norm("/reports/%2e%2e/graphql").unwrap(), "/graphql");
        assert_eq!(norm("/reports/.%2E/graphql").unwrap(), "/graphql");
        assert_eq!(norm("/reports/./production").unwrap(), "/reports/production");
        assert_eq!(norm("//graphql").unwrap(), "/graphql");
        assert_eq!(norm("/reports//production").unwrap(), "/reports/production");
        assert_eq!(norm("/reports/.").unwrap(), "/reports/");
        assert_eq!(norm("/reports/x/..").unwrap(), "/reports/");
        assert_eq!(norm("/reports/").unwrap(), "/reports/");
        assert_eq!(norm("/").unwrap(), "/");
        assert_eq!(norm("/a/..").unwrap(), "/");
    }

    #[test]
    fn unreserved_escapes_decode_and_others_stay() {
        assert_eq!(norm("/%67raphql").unwrap(), "/graphql");
        assert_eq!(norm("/reports/a%20b").unwrap(), "/reports/a%20b");
        assert_eq!(norm("/reports/a%3fb").unwrap(), "/reports/a%3Fb");
        // `%25` is a literal percent sign: it is never decoded twice.
        assert_eq!(norm("/reports/%252e%252e").unwrap(), "/reports/%252e%252e");
    }

    #[test]
    fn encoded_separators_and_climbing_are_refused() {
        for bad in [
            "/reports/..%2fgraphql",
            "/reports/..%2Fgraphql",
            "/reports/..%5cgraphql",
            "/reports/..%5Cgraphql",
            "/reports/a\\b",
            "/..",
            "/reports/../..",
            "/%2e%2e/x",
            "/reports/%zz",
            "/reports/%2",
            "",
            "*",
        ] {
            assert!(norm(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn patterns_parse() {
        assert_eq!(PathPattern::parse("/graphql"), Some(PathPattern::Exact("/graphql".into())));
        assert_eq!(PathPattern::parse("/reports/*"), Some(PathPattern::Prefix("/reports/".into())));
        assert_eq!(PathPattern::parse("/*"), Some(PathPattern::Prefix("/".into())));
        for bad in ["graphql", "/reports*", "/a/*/b", "/a/../b", "/a//b", "/a%2Fb", ""] {
            assert_eq!(PathPattern::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn most_specific_route_wins() {
        let route = |p: &'static str| (PathPattern::parse(p).unwrap(), p);
        let table = RouteTable::new(vec![route("/*"), route("/reports/*"), route("/reports/special")]);
        let find = |p: &str| table.find(p).copied();
        assert_eq!(find("/reports/special"), Some("/reports/special"));
        assert_eq!(find("/reports/production"), Some("/reports/*"));
        assert_eq!(find("/reports/"), Some("/reports/*"));
        assert_eq!(find("/reports"), Some("/*"));
        let table = RouteTable::new(vec![route("/reports/*")]);
        assert!(table.find("/reports").is_none());
        assert!(table.find("/Reports/x").is_none());
    }
}
