//! `mmgate check` and `mmgate token`: what an operator runs before deploying.
//!
//! Output names keys, sources and fingerprints, never a key or a token.

use std::fmt::Write as _;

use crate::client::{token_sha256_hex, Credential};
use crate::config::RouteKind;
use crate::config::Settings;
use crate::keys::LoadedKey;

/// What `check` found: the printable summary and whether it passed.
pub struct Report {
    /// The summary, ready to print.
    pub text: String,
    /// False when a key could not be loaded.
    pub ok: bool,
}

/// Summarises `settings`; reads every key unless `skip_keys`.
pub fn check(settings: &Settings, skip_keys: bool) -> Report {
    let mut out = String::new();
    let mut errors = Vec::new();
    let s = settings;
    // `write!` into a String cannot fail.
    let _ = writeln!(out, "config        {}", s.origin());
    let _ = writeln!(out, "listen        {}", s.server().listen);
    let _ = writeln!(out, "admin_listen  {}", s.server().admin_listen);
    let _ = write!(out, "upstream      {}", s.upstream().url);
    if s.upstream().scheme == http::uri::Scheme::HTTPS {
        let _ = write!(out, "  ({})", if s.upstream().http2 { "HTTP/2 or HTTP/1.1 by ALPN" } else { "HTTP/1.1 only" });
    }
    if let Some((path, certs)) = &s.upstream().extra_roots {
        let _ = write!(out, "  extra CAs {} ({} certificates)", path.display(), certs.len());
    }
    out.push('\n');
    let _ = writeln!(out, "egress        {}", s.upstream().egress);
    if let Some(t) = s.telemetry() {
        let parent = if t.trust_incoming { "continues callers' traces" } else { "new trace per request" };
        let _ = writeln!(out, "telemetry     OTLP {} ({parent}, sampling {})", t.endpoint, t.sampling_ratio);
    }
    if let Some(shared) = &s.shared() {
        let when_down = if shared.fail_open { "fail open" } else { "fail closed" };
        let _ = writeln!(out, "shared limits {} ({when_down}, timeout {:?})", shared.display, shared.timeout);
    }

    let _ = writeln!(out, "\nroutes");
    for route in s.routes().iter() {
        let key = s.keys().get(route.key).map_or("?", |k| k.name.as_str());
        let _ = write!(out, "  {:<20} key {key}  scope {}", route.pattern, s.scopes().name(route.scope));
        if let RouteKind::Graphql(g) = &route.kind {
            let mutations = g.mutation_scope.map_or("denied".to_owned(), |m| format!("scope {}", s.scopes().name(m)));
            let l = &g.limits;
            let _ = write!(
                out,
                "  graphql (mutations: {mutations}; max_depth {}, max_nodes {}, max_aliases {}, max_root_fields {}, max_tokens {}, introspection {})",
                l.max_depth,
                l.max_nodes,
                l.max_aliases,
                l.max_root_fields,
                l.max_tokens,
                if l.introspection { "on" } else { "off" }
            );
        }
        // What is shared: identical reads always; answers only with a cache.
        let reads = match &route.kind {
            RouteKind::Graphql(_) => "queries",
            RouteKind::Rest if route.read_only => "GET, HEAD, POST",
            RouteKind::Rest => "GET, HEAD",
        };
        let _ = write!(out, "  shares identical {reads}");
        match route.cache_ttl {
            Some(ttl) => {
                let _ = write!(out, "  cache ttl {}", humantime::format_duration(ttl));
            }
            None => out.push_str("  no cache"),
        }
        out.push('\n');
    }
    let cache = s.cache();
    let _ = writeln!(
        out,
        "  (cache: max_bytes {}, max_entry_bytes {}; larger answers are neither cached nor shared)",
        bytesize::ByteSize::b(cache.max_bytes).display().iec(),
        bytesize::ByteSize::b(cache.max_entry_bytes).display().iec()
    );

    let _ = writeln!(out, "\nkeys");
    for key in s.keys() {
        let _ = write!(out, "  {:<20} {}  scopes {}", key.name, key.source, s.scopes().list(key.scopes));
        if let Some(limit) = &key.limit {
            let _ = write!(out, "  limit {limit}");
        }
        match key.max_wait {
            Some(wait) if key.limit.is_some() => {
                let _ = write!(out, " (over it: wait up to {})", humantime::format_duration(wait));
            }
            _ => {}
        }
        if let Some(max) = key.max_in_flight {
            let _ = write!(out, "  max_in_flight {max}");
        }
        if let Some(budget) = key.budget.and_then(|b| s.budgets().get(b)) {
            let _ = write!(out, "  budget {}", budget.name);
        }
        if skip_keys {
            out.push_str("  fingerprint (not read: --skip-keys)");
        } else {
            match LoadedKey::load(&key.name, &key.source) {
                Ok(loaded) => {
                    let _ = write!(out, "  fingerprint {}", loaded.fingerprint());
                }
                Err(e) => {
                    out.push_str("  NOT LOADED");
                    errors.push(e.to_string());
                }
            }
        }
        out.push('\n');
    }
    if !s.budgets().is_empty() {
        let _ = writeln!(out, "\nbudgets");
        for budget in s.budgets() {
            let _ = write!(out, "  {:<20} limit {}", budget.name, budget.limit);
            if let Some(wait) = budget.max_wait {
                let _ = write!(out, " (over it: wait up to {})", humantime::format_duration(wait));
            }
            out.push('\n');
        }
    }

    let _ = writeln!(out, "\nclients");
    for client in s.clients().iter() {
        let how = match client.credential {
            Credential::Token(_) => "token".to_owned(),
            Credential::Anonymous => {
                let nets: Vec<String> = client.anonymous_from.iter().map(ToString::to_string).collect();
                let from = ["loopback".to_owned(), "unix socket".to_owned()].into_iter().chain(nets);
                format!("anonymous (from {})", from.collect::<Vec<_>>().join(", "))
            }
            Credential::UnixUid(uid) => format!("unix_uid {uid}"),
        };
        let _ = write!(out, "  {:<20} {how}  scopes {}", client.name, s.scopes().list(client.scopes));
        if let Some(limit) = &client.limit {
            let _ = write!(out, "  limit {limit}");
        }
        if let Some(fields) = &client.graphql_fields {
            let _ = write!(out, "  graphql_fields [{}]", fields.join(", "));
        }
        out.push('\n');
    }

    if !s.warnings().is_empty() {
        let _ = writeln!(out, "\nwarnings");
        for w in s.warnings() {
            let _ = writeln!(out, "  - {w}");
        }
    }
    if !errors.is_empty() {
        let _ = writeln!(out, "\nerrors");
        for e in &errors {
            let _ = writeln!(out, "  - {e}");
        }
    }
    let ok = errors.is_empty();
    let verdict = if ok { "OK" } else { "FAILED" };
    let _ = writeln!(out, "\n{verdict}: {} error(s), {} warning(s)", errors.len(), s.warnings().len());
    Report { text: out, ok }
}

/// Mints a random client token; returns the token and the config lines to paste.
pub fn mint_token(name: &str) -> Result<(String, String), getrandom::Error> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes)?;
    let token = format!("mmg_{}", hex::encode(bytes));
    let snippet =
        format!("[clients.{name}]\ntoken_sha256 = \"{}\"\nscopes = [\"reporting\"]\n", token_sha256_hex(&token));
    Ok((token, snippet))
}
