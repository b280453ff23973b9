//! What `suggest` prints: TOML snippets to paste, or, given the current
//! configuration, that file edited in place (its comments kept) to the least
//! privilege the traffic needed, with what to remove said in comments.

use std::fmt::Write as _;
use std::path::Path;

use toml_edit::{Array, DocumentMut, InlineTable, Item, Key, Table, TableLike, Value};

use super::{suggest_limit, when, Observed, Read, Suggested};
use crate::config::{ConfigOrigin, RouteKind, Settings};
use crate::limit::Per;

fn key(name: &str) -> String {
    Key::new(name).display_repr().into_owned()
}

fn header(observed: &Observed, read: &Read) -> String {
    let mut out = String::new();
    let (first, last) = observed.span.unwrap_or_default();
    let _ = writeln!(
        out,
        "# mmgate suggest: {} requests that went through, {} to {}{}.",
        observed.used,
        when(first),
        when(last),
        if read.malformed > 0 { format!(" ({} unreadable lines skipped)", read.malformed) } else { String::new() }
    );
    out.push_str(
        "# Least privilege for this traffic: per client the scopes it used and a limit at twice\n\
         # its busiest minute (in units: requests, or GraphQL operations), per key the same,\n\
         # per GraphQL route the deepest and largest operation seen.\n",
    );
    if !observed.would_refuse.is_empty() {
        out.push_str("# Refusals that policies in shadow mode recorded (the requests were forwarded):\n");
        for ((client, route, code), n) in &observed.would_refuse {
            let _ = writeln!(out, "#   client {client} on {route}: {n} x {code}");
        }
    }
    out
}

fn limit_comment(s: Suggested, capped_by: Option<&str>) -> String {
    let cap = capped_by.map_or(String::new(), |b| format!(", capped by budget {b}"));
    let units = if s.peak == 1 { "unit" } else { "units" };
    format!(" # busiest minute: {} {units}{cap}", s.peak)
}

/// Snippets to merge into a configuration.
pub fn render(observed: &Observed, read: &Read) -> String {
    let mut out = header(observed, read);
    out.push_str("# Merge into your configuration; check the result with `mmgate check`.\n");
    for (name, seen) in &observed.clients {
        let s = suggest_limit(&seen.arrivals, None);
        let scopes: Vec<String> = seen.scopes.iter().map(|s| format!("{s:?}")).collect();
        let _ = writeln!(out, "\n[clients.{}]\nscopes = [{}]", key(name), scopes.join(", "));
        let _ =
            writeln!(out, "limit = {{ per_minute = {}, burst = {} }}{}", s.per_minute, s.burst, limit_comment(s, None));
    }
    for (path, seen) in observed.routes.iter().filter(|(_, r)| r.depth.is_some()) {
        let _ = writeln!(out, "\n[[routes]] # merge into the route with this path\npath = {path:?}");
        let _ = writeln!(out, "max_depth = {} # deepest operation seen", seen.depth.unwrap_or(1).max(1));
        let _ = writeln!(out, "max_nodes = {} # most nodes seen", seen.nodes.unwrap_or(1).max(1));
    }
    out
}

/// A limit table's new value: the suggestion, keeping its `mode` and `max_wait`.
fn limit_value(old: Option<&Item>, s: Suggested) -> Value {
    let mut table = InlineTable::new();
    table.insert("per_minute", i64::from(s.per_minute).into());
    table.insert("burst", i64::from(s.burst).into());
    if let Some(old) = old.and_then(Item::as_table_like) {
        for kept in ["max_wait", "mode"] {
            if let Some(v) = old.get(kept).and_then(Item::as_value) {
                table.insert(kept, v.clone());
            }
        }
    }
    Value::InlineTable(table)
}

fn set_limit(table: &mut dyn TableLike, s: Suggested, capped_by: Option<&str>) {
    let mut value = limit_value(table.get("limit"), s);
    value.decor_mut().set_suffix(limit_comment(s, capped_by));
    table.insert("limit", Item::Value(value));
}

/// Puts a comment above a `[table]` (an inline table has nowhere to put one).
fn mark(item: &mut Item, note: &str) {
    if let Some(t) = item.as_table_mut() {
        mark_table(t, note);
    }
}

fn mark_table(t: &mut Table, note: &str) {
    let prefix = t.decor().prefix().and_then(|p| p.as_str()).unwrap_or("\n").to_owned();
    t.decor_mut().set_prefix(format!("{prefix}# mmgate suggest: {note}\n"));
}

/// What `settings` would refuse of the requests that went through: clients
/// it does not know, scopes it does not grant them, routes it does not have.
fn refused_now(settings: &Settings, read: &Read) -> std::collections::BTreeMap<(String, String, &'static str), u64> {
    let mut refused = std::collections::BTreeMap::new();
    for line in read.lines.iter().filter(|l| l.passed()) {
        let code = if !settings.routes().iter().any(|r| *r.pattern == *line.route) {
            Some("no_route")
        } else {
            match settings.clients().iter().find(|c| *c.name == *line.client) {
                None => Some("unauthenticated"),
                Some(client) => {
                    let held: Vec<&str> = client.scopes.iter().map(|s| settings.scopes().name(s)).collect();
                    let mut used = line.scope.iter().flat_map(|s| s.split(','));
                    used.any(|s| !held.contains(&s)).then_some("scope_denied")
                }
            }
        };
        if let Some(code) = code {
            *refused.entry((line.client.clone(), line.route.clone(), code)).or_default() += 1;
        }
    }
    refused
}

/// The configuration at `path`, edited to what the traffic needed.
pub fn render_with_config(observed: &Observed, read: &Read, path: &Path) -> Result<String, String> {
    let settings = Settings::load(ConfigOrigin::File(path.to_owned())).map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut doc: DocumentMut = text.parse().map_err(|e| format!("{}: {e}", path.display()))?;
    let mut remove = Vec::new();

    // Units a minute and burst of each key's budget, the cap of its limits.
    let budget_of = |key: usize| {
        let spec = settings.keys().get(key)?;
        let budget = settings.budgets().get(spec.budget?)?;
        let per_minute = budget.limit.count.get().saturating_mul(if budget.limit.per == Per::Second { 60 } else { 1 });
        Some((budget.name.clone(), (per_minute, budget.limit.burst.get())))
    };
    let route_key = |pattern: &str| settings.routes().iter().find(|r| &*r.pattern == pattern).map(|r| r.key);

    if let Some(clients) = doc.get_mut("clients").and_then(Item::as_table_like_mut) {
        for (name, item) in clients.iter_mut() {
            let Some(seen) = observed.clients.get(name.get()) else {
                remove.push(format!("clients.{}: never seen in these logs", name.get()));
                mark(item, "never seen in these logs; remove it if nothing else uses it");
                continue;
            };
            let Some(table) = item.as_table_like_mut() else { continue };
            let granted = table
                .get("scopes")
                .and_then(Item::as_array)
                .map_or_else(Vec::new, |a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect());
            let unused: Vec<&String> = granted.iter().filter(|s| !seen.scopes.contains(*s)).collect();
            if !unused.is_empty() {
                remove.push(format!("clients.{}: scopes never used: {unused:?}", name.get()));
            }
            let scopes: Array = seen.scopes.iter().map(String::as_str).collect();
            table.insert("scopes", Item::Value(Value::Array(scopes)));
            // A client's limit is never above the budget of the keys it used.
            let cap = seen.routes.iter().filter_map(|pattern| budget_of(route_key(pattern)?)).map(|(_, cap)| cap).max();
            set_limit(table, suggest_limit(&seen.arrivals, cap), None);
        }
    }

    // Each key's traffic: the requests on every route using it.
    if let Some(keys) = doc.get_mut("keys").and_then(Item::as_table_like_mut) {
        for (name, item) in keys.iter_mut() {
            let Some(id) = settings.keys().iter().position(|k| k.name == name.get()) else { continue };
            let arrivals: Vec<(u64, u64)> = observed
                .routes
                .iter()
                .filter(|(pattern, _)| route_key(pattern) == Some(id))
                .flat_map(|(_, r)| r.arrivals.iter().copied())
                .collect();
            if arrivals.is_empty() {
                remove.push(format!("keys.{}: no request in these logs used it", name.get()));
                mark(item, "no request in these logs used this key");
                continue;
            }
            let Some(table) = item.as_table_like_mut() else { continue };
            let budget = budget_of(id);
            let s = suggest_limit(&arrivals, budget.as_ref().map(|(_, cap)| *cap));
            set_limit(table, s, budget.as_ref().map(|(b, _)| b.as_str()));
        }
    }

    if let Some(routes) = doc.get_mut("routes").and_then(Item::as_array_of_tables_mut) {
        for table in routes.iter_mut() {
            let Some(path) = table.get("path").and_then(Item::as_str).map(str::to_owned) else { continue };
            let graphql =
                settings.routes().iter().any(|r| *r.pattern == *path && matches!(r.kind, RouteKind::Graphql(_)));
            match observed.routes.get(&path) {
                None => {
                    remove.push(format!("routes (path {path:?}): never hit in these logs"));
                    mark_table(table, "never hit in these logs");
                }
                Some(seen) if graphql => {
                    let depth = i64::try_from(seen.depth.unwrap_or(1).max(1)).unwrap_or(i64::MAX);
                    let nodes = i64::try_from(seen.nodes.unwrap_or(1).max(1)).unwrap_or(i64::MAX);
                    let mut d = Value::from(depth);
                    d.decor_mut().set_suffix(" # deepest operation seen");
                    let mut n = Value::from(nodes);
                    n.decor_mut().set_suffix(" # most nodes seen");
                    table.insert("max_depth", Item::Value(d));
                    table.insert("max_nodes", Item::Value(n));
                }
                Some(_) => {}
            }
        }
    }

    let mut out = header(observed, read);
    out.push_str(&format!("# Edited from {}; its modes are unchanged (enforce when ready).\n", path.display()));
    let refused = refused_now(&settings, read);
    if !refused.is_empty() {
        out.push_str(&format!("# What {} as it is would refuse of this traffic:\n", path.display()));
        for ((client, route, code), n) in &refused {
            let _ = writeln!(out, "#   client {client} on {route}: {n} x {code}");
        }
    }
    if !remove.is_empty() {
        out.push_str("# To remove (least privilege):\n");
        for r in &remove {
            let _ = writeln!(out, "#   {r}");
        }
    }
    out.push('\n');
    out.push_str(&doc.to_string());
    Ok(out)
}
