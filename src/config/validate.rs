//! `RawConfig` -> `Settings`: every check, every problem collected, each
//! naming its key path and the fix.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use http::uri::Scheme;
use http::{HeaderValue, Uri};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::raw::{
    RawClient, RawConfig, RawKey, RawLimit, RawLimits, RawLogFormat, RawRoute, RawRouteKind, RawServer, RawUpstream,
};
use super::{
    BudgetSpec, ConfigOrigin, Egress, ListenAddr, LogFormat, Overrides, Problem, ProxyEnv, ServerSettings, Settings,
    UpstreamSettings,
};
use crate::client::{Client, ClientTable, Credential, TokenHash};
use crate::graphql::Limits;
use crate::keys::{KeySource, KeySpec};
use crate::limit::{Limit, Per, SharedSettings};
use crate::policy::{Scope, ScopeNames, ScopeSet, MAX_SCOPES, PUBLISHED_SCOPES};
use crate::route::{GraphqlRoute, PathPattern, Route, RouteKind, RouteTable};

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
}

/// Validates `raw` into `Settings`, or every problem found.
pub(super) fn settings(
    raw: RawConfig,
    origin: ConfigOrigin,
    overrides: &Overrides,
    proxies: &ProxyEnv,
) -> Result<Settings, Vec<Problem>> {
    let mut c = Checker { problems: Vec::new(), warnings: Vec::new(), scopes: ScopeNames::default() };
    let server = server(&mut c, &raw.server);
    let upstream = upstream(&mut c, &raw.upstream, proxies);

    let mut budgets = Vec::new();
    for (name, budget) in &raw.budgets {
        c.name(&format!("budgets.{name}"), name);
        if let Some(limit) = c.limit(&format!("budgets.{name}.limit"), &budget.limit) {
            budgets.push(BudgetSpec { name: name.clone(), limit });
        }
    }
    let keys: Vec<KeySpec> =
        raw.keys.iter().filter_map(|(name, key)| key_spec(&mut c, name, key, &budgets, overrides)).collect();
    let routes: Vec<Route> =
        raw.routes.iter().enumerate().filter_map(|(i, route)| route_spec(&mut c, i, route, &keys)).collect();
    if raw.routes.is_empty() {
        c.problem("routes", "no routes; add a [[routes]] table with `path`, `key` and `scope`");
    }
    duplicate_routes(&mut c, &raw.routes);
    let clients = clients(&mut c, &raw.clients);
    let shared = shared(&mut c, &raw.limits);

    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    let (Some(server), Some(upstream)) = (server, upstream) else {
        return Err(c.problems);
    };
    least_privilege(&mut c, &keys, &routes, &clients);
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
        warnings: c.warnings,
    })
}

fn server(c: &mut Checker, raw: &RawServer) -> Option<ServerSettings> {
    let listen = c.listen("server.listen", &raw.listen);
    let admin_listen = c.listen("server.admin_listen", &raw.admin_listen);
    let port_zero = matches!(&listen, Some(ListenAddr::Tcp(a)) if a.port() == 0);
    if listen.is_some() && listen == admin_listen && !port_zero {
        c.problem("server.admin_listen", "must differ from server.listen");
    }
    if raw.max_body.0 == 0 {
        c.problem("server.max_body", "must be more than zero, e.g. \"1MiB\"");
    }
    let max_header_bytes = usize::try_from(raw.max_header_bytes.0).unwrap_or(usize::MAX);
    if !(1024..=1024 * 1024).contains(&max_header_bytes) {
        c.problem("server.max_header_bytes", "must be between 1KiB and 1MiB, e.g. \"32KiB\"");
    }
    if !(1..=10_000).contains(&raw.max_headers) {
        c.problem("server.max_headers", "must be between 1 and 10000, e.g. 200");
    }
    if raw.max_connections == 0 {
        c.problem("server.max_connections", "must be at least 1, e.g. 10000");
    }
    Some(ServerSettings {
        listen: listen?,
        admin_listen: admin_listen?,
        max_body: raw.max_body.0,
        max_header_bytes,
        max_headers: usize::try_from(raw.max_headers).unwrap_or(usize::MAX),
        max_connections: usize::try_from(raw.max_connections).unwrap_or(usize::MAX),
        header_timeout: c.positive("server.header_timeout", raw.header_timeout.0),
        idle_timeout: c.positive("server.idle_timeout", raw.idle_timeout.0),
        body_idle_timeout: c.positive("server.body_idle_timeout", raw.body_idle_timeout.0),
        shutdown_grace: raw.shutdown_grace.0,
        unready_on_rejected_key: raw.unready_on_rejected_key,
        key_poll_interval: c.positive("server.key_poll_interval", raw.key_poll_interval.0),
        watch_key_files: raw.watch_key_files,
        log_format: match raw.log_format {
            RawLogFormat::Text => LogFormat::Text,
            RawLogFormat::Json => LogFormat::Json,
        },
    })
}

fn upstream(c: &mut Checker, raw: &RawUpstream, proxies: &ProxyEnv) -> Option<UpstreamSettings> {
    let connect_timeout = c.positive("upstream.connect_timeout", raw.connect_timeout.0);
    let timeout = c.positive("upstream.timeout", raw.timeout.0);
    let body_idle_timeout = c.positive("upstream.body_idle_timeout", raw.body_idle_timeout.0);
    let max_cooldown = c.positive("upstream.max_cooldown", raw.max_cooldown.0);
    let fix = "write the API's base URL, e.g. \"https://api.machinemetrics.com\"";
    let Ok(uri) = raw.url.parse::<Uri>() else {
        c.problem("upstream.url", format!("`{}` is not a URL; {fix}", raw.url));
        return None;
    };
    let scheme = match uri.scheme_str() {
        Some("https") => Scheme::HTTPS,
        Some("http") => Scheme::HTTP,
        _ => {
            c.problem("upstream.url", format!("must start with https:// (or http:// for a local test server); {fix}"));
            return None;
        }
    };
    let Some(authority) = uri.authority().cloned() else {
        c.problem("upstream.url", format!("has no host; {fix}"));
        return None;
    };
    if authority.as_str().contains('@') {
        c.problem("upstream.url", "must not carry a user name or password; keys go in [keys.*]");
        return None;
    }
    if uri.query().is_some() {
        c.problem("upstream.url", "must not have a query string");
        return None;
    }
    let default_port = if scheme == Scheme::HTTPS { 443 } else { 80 };
    let host_header = match authority.port_u16() {
        Some(port) if port != default_port => authority.as_str().to_owned(),
        _ => authority.host().to_owned(),
    };
    // The HTTP/1 client builds `Host` from the URL, and must be able to.
    let Ok(host_header) = HeaderValue::from_str(&host_header) else {
        c.problem("upstream.url", "has a host that is not a valid Host header");
        return None;
    };
    let http1_only = scheme == Scheme::HTTP || !raw.http2;
    if scheme == Scheme::HTTP && !is_loopback_host(authority.host()) {
        c.warnings.push(format!(
            "upstream.url: {} is plain http to a host that is not loopback: keys would cross the network unencrypted",
            raw.url
        ));
    }
    let egress = match super::egress::resolve(raw.proxy.as_deref(), &uri, is_loopback_host(authority.host()), proxies) {
        Ok(egress) => egress,
        Err((key, why)) => {
            c.problem(key, why);
            Egress::Direct
        }
    };
    Some(UpstreamSettings {
        url: raw.url.clone(),
        scheme,
        authority: authority.clone(),
        host_header: http1_only.then_some(host_header),
        base_path: uri.path().trim_end_matches('/').to_owned(),
        connect_timeout,
        timeout,
        body_idle_timeout,
        max_cooldown,
        extra_roots: raw.ca_file.as_deref().and_then(|file| extra_roots(c, file)),
        http2: raw.http2,
        egress,
    })
}

/// Reads `upstream.ca_file`: at least one certificate, each usable as a trust anchor.
fn extra_roots(c: &mut Checker, file: &str) -> Option<(PathBuf, Vec<CertificateDer<'static>>)> {
    let key = "upstream.ca_file";
    let fix = "give a PEM file of CA certificates (-----BEGIN CERTIFICATE-----), or remove the line";
    let path = PathBuf::from(file);
    let certs = match CertificateDer::pem_file_iter(&path) {
        Ok(certs) => certs.collect::<Result<Vec<_>, _>>(),
        Err(e) => {
            c.problem(key, format!("cannot read {}: {e}; {fix}", path.display()));
            return None;
        }
    };
    let certs = match certs {
        Ok(certs) if !certs.is_empty() => certs,
        Ok(_) => {
            c.problem(key, format!("{} holds no certificate; {fix}", path.display()));
            return None;
        }
        Err(e) => {
            c.problem(key, format!("{} is not valid PEM: {e}; {fix}", path.display()));
            return None;
        }
    };
    let mut store = rustls::RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        if let Err(e) = store.add(cert.clone()) {
            c.problem(key, format!("certificate {} of {} is not a usable CA certificate: {e}", i + 1, path.display()));
            return None;
        }
    }
    Some((path, certs))
}

fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn key_spec(
    c: &mut Checker,
    name: &str,
    raw: &RawKey,
    budgets: &[BudgetSpec],
    overrides: &Overrides,
) -> Option<KeySpec> {
    let at = format!("keys.{name}");
    c.name(&at, name);
    // A key's `env` or `file` set from the environment replaces the other source.
    let (env, file) = match (overrides.sets(&["keys", name, "env"]), overrides.sets(&["keys", name, "file"])) {
        (true, false) => (&raw.env, &None),
        (false, true) => (&None, &raw.file),
        _ => (&raw.env, &raw.file),
    };
    let source = match (env, file) {
        (Some(var), None) => {
            let valid = !var.is_empty() && var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                c.problem(format!("{at}.env"), "must be an environment variable name, e.g. \"MM_REPORTING_KEY\"");
            } else if var.to_ascii_uppercase().starts_with("MMGATE_") {
                c.problem(
                    format!("{at}.env"),
                    "must not start with MMGATE_ (those variables override config values); use e.g. \"MM_REPORTING_KEY\"",
                );
            }
            KeySource::Env(var.clone())
        }
        (None, Some(file)) if !file.trim().is_empty() => KeySource::File(PathBuf::from(file)),
        (None, Some(_)) => {
            c.problem(format!("{at}.file"), "must be a path, e.g. \"/run/secrets/mm-reporting\"");
            return None;
        }
        _ => {
            c.problem(&at, "set exactly one of `env` (a variable name) or `file` (a path)");
            return None;
        }
    };
    if raw.scopes.is_empty() {
        c.problem(format!("{at}.scopes"), "list the scopes granted to this key upstream, e.g. [\"reporting\"]");
    }
    for (i, scope) in raw.scopes.iter().enumerate() {
        if !PUBLISHED_SCOPES.contains(&scope.as_str()) {
            c.warnings.push(format!(
                "{at}.scopes[{i}]: `{scope}` is not a MachineMetrics scope (published: {})",
                PUBLISHED_SCOPES.join(", ")
            ));
        }
    }
    let scopes = c.scope_set(&format!("{at}.scopes"), &raw.scopes);
    let limit = raw.limit.as_ref().and_then(|l| c.limit(&format!("{at}.limit"), l));
    let budget = match &raw.budget {
        None => None,
        Some(b) => match budgets.iter().position(|x| &x.name == b) {
            Some(i) => Some(i),
            None => {
                c.problem(format!("{at}.budget"), format!("no budget named `{b}`; add [budgets.{b}] with a `limit`"));
                None
            }
        },
    };
    let max_in_flight = match raw.max_in_flight {
        None => None,
        Some(n) => {
            let n = NonZeroU32::new(n);
            if n.is_none() {
                c.problem(format!("{at}.max_in_flight"), "must be at least 1 (omit it for no cap)");
            }
            n
        }
    };
    Some(KeySpec { name: name.to_owned(), source, scopes, limit, budget, max_in_flight })
}

fn route_spec(c: &mut Checker, i: usize, raw: &RawRoute, keys: &[KeySpec]) -> Option<Route> {
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
                raw.max_aliases.is_some(),
                raw.max_root_fields.is_some(),
                raw.max_tokens.is_some(),
                raw.introspection.is_some(),
            ];
            if graphql_only.into_iter().any(|set| set) {
                c.problem(
                    &at,
                    "`mutation_scope`, `max_depth`, `max_aliases`, `max_root_fields`, `max_tokens` and `introspection` need kind = \"graphql\"",
                );
            }
            RouteKind::Rest
        }
        Some(RawRouteKind::Graphql) => {
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
                max_aliases: raw.max_aliases.unwrap_or(defaults.max_aliases),
                max_root_fields: at_least_one("max_root_fields", raw.max_root_fields, defaults.max_root_fields),
                max_tokens: at_least_one("max_tokens", raw.max_tokens, defaults.max_tokens),
                introspection: raw.introspection.unwrap_or(defaults.introspection),
            };
            RouteKind::Graphql(GraphqlRoute { mutation_scope, limits, cache: Default::default() })
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
    Some(Route { pattern: raw.path.as_str().into(), matcher, key, scope, kind })
}

fn duplicate_routes(c: &mut Checker, routes: &[RawRoute]) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, route) in routes.iter().enumerate() {
        if let Some(first) = seen.insert(route.path.as_str(), i) {
            c.problem(format!("routes[{i}].path"), format!("`{}` is already routes[{first}]; keep one", route.path));
        }
    }
}

fn token_hash(c: &mut Checker, key: &str, hex_text: &str) -> Option<TokenHash> {
    let mut hash = [0u8; 32];
    if hex_text.len() != 64 || hex::decode_to_slice(hex_text, &mut hash).is_err() {
        c.problem(
            key,
            "must be 64 hex digits (the SHA-256 of the token); `mmgate token NAME` prints a token and its hash",
        );
        return None;
    }
    Some(hash)
}

fn clients(c: &mut Checker, raw: &BTreeMap<String, RawClient>) -> Vec<Client> {
    let mut out: Vec<Client> = Vec::new();
    let mut anonymous: Option<&str> = None;
    for (name, client) in raw {
        let at = format!("clients.{name}");
        c.name(&at, name);
        let credential = match (&client.token_sha256, client.anonymous, client.unix_uid) {
            (Some(hex_text), false, None) => match token_hash(c, &format!("{at}.token_sha256"), hex_text) {
                Some(hash) => Credential::Token(hash),
                None => continue,
            },
            (None, true, None) => {
                if let Some(first) = anonymous {
                    c.problem(
                        format!("{at}.anonymous"),
                        format!("clients.{first} is already the anonymous client; keep one"),
                    );
                }
                anonymous = Some(name);
                Credential::Anonymous
            }
            (None, false, Some(uid)) => Credential::UnixUid(uid),
            _ => {
                c.problem(
                    &at,
                    "set exactly one of `token_sha256 = \"<64 hex>\"`, `anonymous = true` or `unix_uid = <uid>`",
                );
                continue;
            }
        };
        if let Some(other) = out.iter().find(|o| o.credential == credential && credential != Credential::Anonymous) {
            let (key, what) = match credential {
                Credential::UnixUid(_) => ("unix_uid", "the same uid as"),
                _ => ("token_sha256", "the same hash as"),
            };
            c.problem(
                format!("{at}.{key}"),
                format!("{what} clients.{}; mint a token per client with `mmgate token {name}`", other.name),
            );
        }
        let scopes = c.scope_set(&format!("{at}.scopes"), &client.scopes);
        let limit = client.limit.as_ref().and_then(|l| c.limit(&format!("{at}.limit"), l));
        if client.graphql_fields.as_ref().is_some_and(Vec::is_empty) {
            c.warnings.push(format!("{at}.graphql_fields: empty, so this client can select no GraphQL field"));
        }
        let graphql_fields = client.graphql_fields.clone();
        if !client.anonymous_from.is_empty() && credential != Credential::Anonymous {
            c.problem(
                format!("{at}.anonymous_from"),
                "only the anonymous client (`anonymous = true`) takes anonymous_from",
            );
        }
        let mut anonymous_from = Vec::new();
        for (i, net) in client.anonymous_from.iter().enumerate() {
            match net.parse::<ipnet::IpNet>().or_else(|_| net.parse::<IpAddr>().map(ipnet::IpNet::from)) {
                Ok(net) => anonymous_from.push(net.trunc()),
                Err(_) => c.problem(
                    format!("{at}.anonymous_from[{i}]"),
                    format!("`{net}` is not a network; write a CIDR range such as \"172.16.0.0/12\" or an address"),
                ),
            }
        }
        out.push(Client {
            id: 0,
            name: name.as_str().into(),
            credential,
            scopes,
            limit,
            graphql_fields,
            anonymous_from,
        });
    }
    out
}

fn least_privilege(c: &mut Checker, keys: &[KeySpec], routes: &[Route], clients: &[Client]) {
    let mut needed_by_any = ScopeSet::default();
    for route in routes {
        needed_by_any.insert(route.scope);
        if let RouteKind::Graphql(GraphqlRoute { mutation_scope: Some(s), .. }) = &route.kind {
            needed_by_any.insert(*s);
        }
    }
    for (id, key) in keys.iter().enumerate() {
        let mut needed = ScopeSet::default();
        let mut used = false;
        for route in routes.iter().filter(|r| r.key == id) {
            used = true;
            needed.insert(route.scope);
            if let RouteKind::Graphql(GraphqlRoute { mutation_scope: Some(s), .. }) = &route.kind {
                needed.insert(*s);
            }
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
