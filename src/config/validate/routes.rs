//! `[[routes]]`: patterns, keys, scopes, and the GraphQL rules.

use std::collections::HashMap;

use super::Checker;
use crate::config::raw::{RawRoute, RawRouteKind};
use crate::config::{KeySpec, RouteKind, RouteSpec};
use crate::graphql::Limits;
use crate::policy::{GraphqlRule, PUBLISHED_SCOPES};
use crate::route::PathPattern;

pub(super) fn route_spec(
    c: &mut Checker,
    i: usize,
    raw: &RawRoute,
    keys: &[KeySpec],
) -> Option<(PathPattern, RouteSpec)> {
    let at = format!("routes[{i}]");
    let matcher = PathPattern::parse(&raw.path);
    if matcher.is_none() {
        c.problem(
            format!("{at}.path"),
            format!("`{}` is not a path pattern; write an exact normalised path like \"/graphql\" or a prefix like \"/reports/*\"", raw.path),
        );
    }
    let key = keys.iter().position(|k| k.name == raw.key);
    if key.is_none() {
        let known: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
        c.problem(
            format!("{at}.key"),
            format!("no key named `{}`; define [keys.{}] or use one of: {}", raw.key, raw.key, known.join(", ")),
        );
    }
    let scope = c.scope(&format!("{at}.scope"), &raw.scope);
    let kind = match raw.kind {
        None | Some(RawRouteKind::Rest) => {
            let graphql_only = [
                raw.mutation_scope.is_some(),
                raw.max_depth.is_some(),
                raw.max_nodes.is_some(),
                raw.max_aliases.is_some(),
                raw.max_root_fields.is_some(),
                raw.max_tokens.is_some(),
                raw.introspection.is_some(),
            ];
            if graphql_only.into_iter().any(|set| set) {
                c.problem(
                    &at,
                    "`mutation_scope`, `max_depth`, `max_nodes`, `max_aliases`, `max_root_fields`, `max_tokens` and `introspection` need kind = \"graphql\"",
                );
            }
            RouteKind::Rest
        }
        Some(RawRouteKind::Graphql) => {
            if raw.read_only.is_some() {
                c.problem(
                    format!("{at}.read_only"),
                    "GraphQL routes tell reads from the document (queries are reads, mutations are not); remove it",
                );
            }
            let mutation_scope = match &raw.mutation_scope {
                Some(s) => Some(c.scope(&format!("{at}.mutation_scope"), s)?),
                None => None,
            };
            let defaults = Limits::default();
            let mut at_least_one = |key: &str, value: Option<u32>, default: u32| {
                let value = value.unwrap_or(default);
                if value == 0 {
                    c.problem(format!("{at}.{key}"), "must be at least 1");
                }
                value
            };
            let limits = Limits {
                max_depth: at_least_one("max_depth", raw.max_depth, defaults.max_depth),
                max_nodes: at_least_one("max_nodes", raw.max_nodes, defaults.max_nodes),
                max_aliases: raw.max_aliases.unwrap_or(defaults.max_aliases),
                max_root_fields: at_least_one("max_root_fields", raw.max_root_fields, defaults.max_root_fields),
                max_tokens: at_least_one("max_tokens", raw.max_tokens, defaults.max_tokens),
                introspection: raw.introspection.unwrap_or(defaults.introspection),
            };
            RouteKind::Graphql(GraphqlRule { mutation_scope, limits })
        }
    };
    let (matcher, key, scope) = (matcher?, key?, scope?);
    if let Some(spec) = keys.get(key) {
        if !spec.scopes.contains(scope) {
            c.problem(
                format!("{at}.scope"),
                format!(
                    "key `{}` is not granted scope `{}`; add it to keys.{}.scopes (and to the key upstream) or use another key",
                    spec.name, raw.scope, spec.name
                ),
            );
        }
        // A scope of the config's own (like `write`) only gates callers;
        // a published one is what MachineMetrics checks on the key.
        if let (RouteKind::Graphql(g), Some(name)) = (&kind, raw.mutation_scope.as_deref()) {
            let needed = g.mutation_scope.filter(|s| !spec.scopes.contains(*s));
            if needed.is_some() && PUBLISHED_SCOPES.contains(&name) {
                c.problem(
                    format!("{at}.mutation_scope"),
                    format!(
                        "key `{}` is not granted scope `{name}`, which mutations here need upstream; add it to keys.{}.scopes (and to the key upstream) or use another key",
                        spec.name, spec.name
                    ),
                );
            }
        }
    }
    let cache_ttl = raw.cache.as_ref().map(|cache| cache.ttl.0);
    if cache_ttl.is_some_and(|ttl| ttl.is_zero()) {
        c.problem(format!("{at}.cache.ttl"), "must be more than zero, e.g. \"10s\" (or remove `cache`)");
    }
    let read_only = raw.read_only.unwrap_or(false);
    let mode = raw.mode.map(Into::into);
    Some((matcher, RouteSpec { pattern: raw.path.as_str().into(), key, scope, kind, read_only, cache_ttl, mode }))
}

pub(super) fn duplicate_routes(c: &mut Checker, routes: &[RawRoute]) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, route) in routes.iter().enumerate() {
        if let Some(first) = seen.insert(route.path.as_str(), i) {
            c.problem(format!("routes[{i}].path"), format!("`{}` is already routes[{first}]; keep one", route.path));
        }
    }
}
