//! `RawConfig` -> `Settings`: every check, every problem collected, each
//! naming its key path and the fix. One file per table (`server`, `keys`,
//! `routes`, `clients`); this one checks what spans them.

mod clients;
mod keys;
mod routes;
mod server;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use super::raw::{RawConfig, RawLimit, RawLimits, RawMode};
use super::{
    BudgetSpec, CacheSettings, ConfigOrigin, KeySpec, ListenAddr, Overrides, Problem, ProxyEnv, RouteKind, RouteSpec,
    Settings,
};
use crate::client::{Client, ClientTable, Credential};
use crate::limit::{Limit, Per, SharedSettings};
use crate::policy::{GraphqlRule, Scope, ScopeNames, ScopeSet, MAX_SCOPES, PUBLISHED_SCOPES};
use crate::route::{PathPattern, RouteTable};

/// Collects problems and warnings while checking, and interns scope names.
struct Checker {
    problems: Vec<Problem>,
    warnings: Vec<String>,
    scopes: ScopeNames,
}

impl Checker {
    fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem { key: key.into(), message: message.into() });
    }

    fn scope(&mut self, key: &str, name: &str) -> Option<Scope> {
        if name.trim().is_empty() {
            self.problem(key, "a scope name cannot be empty");
            return None;
        }
        let scope = self.scopes.intern(name);
        if scope.is_none() {
            self.problem(key, format!("more than {MAX_SCOPES} distinct scope names; use fewer"));
        }
        scope
    }

    fn scope_set(&mut self, key: &str, names: &[String]) -> ScopeSet {
        let mut set = ScopeSet::default();
        for (i, name) in names.iter().enumerate() {
            if let Some(scope) = self.scope(&format!("{key}[{i}]"), name) {
                set.insert(scope);
            }
        }
        set
    }

    fn name(&mut self, key: &str, name: &str) {
        if !super::valid_name(name) {
            self.problem(key, "a name must be 1 to 64 of A-Z a-z 0-9 _ - .");
        }
    }

    fn listen(&mut self, key: &str, value: &str) -> Option<ListenAddr> {
        if let Some(path) = value.strip_prefix("unix:") {
            if path.is_empty() {
                self.problem(key, "`unix:` needs a socket path, e.g. `unix:/run/mmgate/mmgate.sock`");
                return None;
            }
            return Some(ListenAddr::Unix(PathBuf::from(path)));
        }
        match value.parse::<SocketAddr>() {
            Ok(addr) => Some(ListenAddr::Tcp(addr)),
            Err(_) => {
                self.problem(
                    key,
                    format!(
                        "`{value}` is not an address; write `127.0.0.1:8080`, `[::1]:8080` or `unix:/path/to.sock`"
                    ),
                );
                None
            }
        }
    }

    fn positive(&mut self, key: &str, d: Duration) -> Duration {
        if d.is_zero() {
            self.problem(key, "must be more than zero, e.g. \"30s\"");
        }
        d
    }

    fn limit(&mut self, key: &str, raw: &RawLimit) -> Option<Limit> {
        let (count, per) = match (raw.per_second, raw.per_minute) {
            (Some(n), None) => (n, Per::Second),
            (None, Some(n)) => (n, Per::Minute),
            _ => {
                self.problem(key, "set exactly one of `per_second` or `per_minute`");
                return None;
            }
        };
        let Some(count) = NonZeroU32::new(count) else {
            self.problem(key, "the rate must be at least 1; to block a client, remove its scopes instead");
            return None;
        };
        let Some(burst) = NonZeroU32::new(raw.burst.unwrap_or(count.get())) else {
            self.problem(format!("{key}.burst"), "must be at least 1");
            return None;
        };
        Some(Limit { count, per, burst })
    }

    /// A limit's `max_wait`: for keys and budgets only (a client's own limit
    /// refuses at once, so that one tool's burst never queues behind itself).
    fn max_wait(&mut self, key: &str, raw: &RawLimit, allowed: bool) -> Option<Duration> {
        let wait = raw.max_wait?.0;
        if !allowed {
            self.problem(
                format!("{key}.max_wait"),
                "a client's own limit refuses at once; set max_wait on the key's or the budget's limit",
            );
            return None;
        }
        if wait.is_zero() {
            self.problem(format!("{key}.max_wait"), "must be more than zero, e.g. \"2s\" (or remove it)");
        }
        Some(wait)
    }
}

/// Validates `raw` into `Settings`, or every problem found.
pub(super) fn settings(
    raw: RawConfig,
    origin: ConfigOrigin,
    overrides: &Overrides,
    proxies: &ProxyEnv,
) -> Result<Settings, Vec<Problem>> {
    let mut c = Checker { problems: Vec::new(), warnings: Vec::new(), scopes: ScopeNames::default() };
    let server = server::server(&mut c, &raw.server);
    let upstream = server::upstream(&mut c, &raw.upstream, proxies);

    let mut budgets = Vec::new();
    for (name, budget) in &raw.budgets {
        c.name(&format!("budgets.{name}"), name);
        let at = format!("budgets.{name}.limit");
        if let Some(limit) = c.limit(&at, &budget.limit) {
            let max_wait = c.max_wait(&at, &budget.limit, true);
            let mode = budget.limit.mode.map(Into::into);
            budgets.push(BudgetSpec { name: name.clone(), limit, max_wait, mode });
        }
    }
    let keys: Vec<KeySpec> =
        raw.keys.iter().filter_map(|(name, key)| keys::key_spec(&mut c, name, key, &budgets, overrides)).collect();
    let routes: Vec<(PathPattern, RouteSpec)> =
        raw.routes.iter().enumerate().filter_map(|(i, route)| routes::route_spec(&mut c, i, route, &keys)).collect();
    if raw.routes.is_empty() {
        c.problem("routes", "no routes; add a [[routes]] table with `path`, `key` and `scope`");
    }
    routes::duplicate_routes(&mut c, &raw.routes);
    let clients = clients::clients(&mut c, &raw.clients);
    let shared = shared(&mut c, &raw.limits);
    let cache = CacheSettings { max_bytes: raw.cache.max_bytes.0, max_entry_bytes: raw.cache.max_entry_bytes.0 };
    let telemetry = server::telemetry(&mut c, &raw.telemetry);
    if cache.max_entry_bytes > cache.max_bytes {
        c.problem("cache.max_entry_bytes", "must not be more than cache.max_bytes");
    }

    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    let (Some(server), Some(upstream)) = (server, upstream) else {
        return Err(c.problems);
    };
    least_privilege(&mut c, &keys, routes.iter().map(|(_, r)| r), &clients);
    shadowed(&mut c, &raw);
    if !matches!(server.listen, ListenAddr::Unix(_)) {
        for client in clients.iter().filter(|cl| matches!(cl.credential, Credential::UnixUid(_))) {
            c.warnings.push(format!(
                "clients.{}.unix_uid: only matches on a Unix socket listener; server.listen is TCP",
                client.name
            ));
        }
    }
    if let ListenAddr::Tcp(addr) = &server.listen {
        let open = clients.iter().find(|cl| cl.credential == Credential::Anonymous && cl.anonymous_from.is_empty());
        if let (false, Some(client)) = (addr.ip().is_loopback(), open) {
            c.problem(
                format!("clients.{}.anonymous_from", client.name),
                format!(
                    "server.listen {addr} is not a loopback address: say which networks may call without a token (e.g. [\"172.16.0.0/12\"] for Docker's bridges), or give callers tokens; anyone who can reach it would get this client's scopes and spend the key"
                ),
            );
            return Err(c.problems);
        }
    }
    Ok(Settings {
        origin,
        server,
        upstream,
        scopes: c.scopes,
        keys,
        budgets,
        routes: RouteTable::new(routes),
        clients: ClientTable::new(clients),
        shared,
        cache,
        telemetry,
        warnings: c.warnings,
    })
}

/// The scopes a route's callers and key need: its scope, and its GraphQL mutation scope.
fn route_needs(route: &RouteSpec) -> ScopeSet {
    let mut needed = ScopeSet::default();
    needed.insert(route.scope);
    if let RouteKind::Graphql(GraphqlRule { mutation_scope: Some(s), .. }) = &route.kind {
        needed.insert(*s);
    }
    needed
}

fn least_privilege<'a>(
    c: &mut Checker,
    keys: &[KeySpec],
    routes: impl Iterator<Item = &'a RouteSpec> + Clone,
    clients: &[Client],
) {
    let needed_by_any = routes.clone().fold(ScopeSet::default(), |all, r| all.union(route_needs(r)));
    for (id, key) in keys.iter().enumerate() {
        let mut needed = ScopeSet::default();
        let mut used = false;
        for route in routes.clone().filter(|r| r.key == id) {
            used = true;
            needed = needed.union(route_needs(route));
        }
        if !used {
            c.warnings.push(format!("keys.{}: no route uses this key; remove it", key.name));
            continue;
        }
        let extra = key.scopes.difference(needed);
        if !extra.is_empty() {
            c.warnings.push(format!(
                "keys.{}: granted {} that no route using it needs; least privilege: remove them here and from the key upstream",
                key.name,
                c.scopes.list(extra)
            ));
        }
    }
    for client in clients {
        let extra = client.scopes.difference(needed_by_any);
        if client.scopes.is_empty() {
            c.warnings.push(format!("clients.{}: holds no scope, so it can use no route", client.name));
        } else if !extra.is_empty() {
            let (known, unknown): (Vec<Scope>, Vec<Scope>) =
                extra.iter().partition(|s| PUBLISHED_SCOPES.contains(&c.scopes.name(*s)));
            for s in unknown {
                c.warnings.push(format!(
                    "clients.{}: scope `{}` is unknown: no route needs it and MachineMetrics does not publish it (a typo?)",
                    client.name,
                    c.scopes.name(s)
                ));
            }
            if !known.is_empty() {
                let names: Vec<&str> = known.iter().map(|s| c.scopes.name(*s)).collect();
                c.warnings.push(format!(
                    "clients.{}: holds [{}] that no route needs; least privilege: remove them",
                    client.name,
                    names.join(", ")
                ));
            }
        }
    }
}

/// Every policy in shadow mode is a warning, so that none is forgotten in production.
fn shadowed(c: &mut Checker, raw: &RawConfig) {
    let shadow = |mode: Option<RawMode>| mode == Some(RawMode::Shadow);
    let mut at = Vec::new();
    if raw.server.mode == RawMode::Shadow {
        at.push("server.mode (every policy without a mode of its own)".to_owned());
    }
    for (i, route) in raw.routes.iter().enumerate() {
        if shadow(route.mode) {
            at.push(format!("routes[{i}].mode ({})", route.path));
        }
    }
    for (name, client) in &raw.clients {
        if shadow(client.mode) {
            at.push(format!("clients.{name}.mode"));
        }
        if shadow(client.limit.and_then(|l| l.mode)) {
            at.push(format!("clients.{name}.limit.mode"));
        }
    }
    for (name, key) in &raw.keys {
        if shadow(key.limit.and_then(|l| l.mode)) {
            at.push(format!("keys.{name}.limit.mode"));
        }
    }
    for (name, budget) in &raw.budgets {
        if shadow(budget.limit.mode) {
            at.push(format!("budgets.{name}.limit.mode"));
        }
    }
    for place in at {
        c.warnings.push(format!(
            "{place} is \"shadow\": what it would refuse is forwarded and only recorded; set \"enforce\" once mmgate_shadow_refusals_total shows it is right"
        ));
    }
}

fn shared(c: &mut Checker, raw: &RawLimits) -> Option<SharedSettings> {
    let url = raw.redis.as_ref()?;
    let fix = "write e.g. \"redis://127.0.0.1:6379\" (a password goes in the URL: redis://:PASSWORD@host:6379)";
    let Some(rest) = url.strip_prefix("redis://") else {
        c.problem("limits.redis", format!("must start with redis://; {fix}"));
        return None;
    };
    if redis::Client::open(url.as_str()).is_err() {
        c.problem("limits.redis", format!("is not a Redis URL; {fix}"));
        return None;
    }
    let timeout = c.positive("limits.redis_timeout", raw.redis_timeout.0);
    let valid_prefix = !raw.redis_prefix.is_empty() && !raw.redis_prefix.contains(['{', '}', ' ']);
    if !valid_prefix {
        c.problem("limits.redis_prefix", "must be non-empty, without spaces or braces");
    }
    // Never show a password: keep only what follows the userinfo.
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    Some(SharedSettings {
        url: secrecy::SecretString::from(url.clone()),
        display: format!("redis://{host}"),
        fail_open: raw.fail_open,
        timeout,
        prefix: raw.redis_prefix.clone(),
    })
}
