//! The validated configuration: plain data, read-only once built. Request
//! code never sees the TOML shape (`raw`), and nothing here caches or holds
//! a handle: the running proxy (`runtime`) is compiled from it.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::HeaderValue;
use rustls::pki_types::CertificateDer;

use super::ConfigOrigin;
use crate::client::ClientTable;
use crate::keys::KeySource;
use crate::limit::{Limit, SharedSettings};
use crate::policy::{GraphqlRule, Mode, Scope, ScopeNames, ScopeSet};
use crate::route::RouteTable;

/// An address to listen on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP socket address.
    Tcp(SocketAddr),
    /// A Unix domain socket path (`unix:/path`).
    Unix(PathBuf),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// `[server]`, validated.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Where callers connect.
    pub listen: ListenAddr,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub admin_listen: ListenAddr,
    /// Largest request body forwarded, in bytes.
    pub max_body: u64,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// Most headers in a request.
    pub max_headers: usize,
    /// Most proxy connections open at once.
    pub max_connections: usize,
    /// Time allowed for a request head to arrive.
    pub header_timeout: Duration,
    /// Time a keep-alive connection may stay idle.
    pub idle_timeout: Duration,
    /// Longest pause allowed inside a caller's request body.
    pub body_idle_timeout: Duration,
    /// How long in-flight requests get at shutdown.
    pub shutdown_grace: Duration,
    /// Whether a rejected or stale key makes `/readyz` fail.
    pub unready_on_rejected_key: bool,
    /// How often key files are re-read when no change event arrives.
    pub key_poll_interval: Duration,
    /// Whether key files are watched for changes (else only polled).
    pub watch_key_files: bool,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// The mode of every policy without one of its own.
    pub mode: Mode,
}

/// How log lines are written (`server.log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, fields at the top level.
    Json,
}

/// `[upstream]`, validated: the only place a request is ever sent.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// The URL as configured, for messages.
    pub url: String,
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Host and port, as requests carry it.
    pub authority: Authority,
    /// `Host` (the host, and the port when not the default), prepared once
    /// when every connection is HTTP/1.1 (`http://`, or `http2 = false`);
    /// where ALPN may pick HTTP/2 the client writes `Host` or `:authority`.
    pub host_header: Option<HeaderValue>,
    /// Path prefix joined before every request path, without a trailing `/`.
    pub base_path: String,
    /// TCP + TLS connection deadline.
    pub connect_timeout: Duration,
    /// Deadline for the response headers.
    pub timeout: Duration,
    /// Longest pause allowed inside a response body.
    pub body_idle_timeout: Duration,
    /// Cap on an upstream 429 cool-down.
    pub max_cooldown: Duration,
    /// Connections open to the upstream at most.
    pub max_connections: usize,
    /// `ca_file`, and the certificates read from it (checked to parse).
    pub extra_roots: Option<(PathBuf, Vec<CertificateDer<'static>>)>,
    /// Offer HTTP/2 by ALPN on https connections.
    pub http2: bool,
    /// Direct, or through an egress proxy.
    pub egress: Egress,
}

/// How the upstream is reached (`upstream.proxy`, else the proxy variables).
#[derive(Clone, PartialEq, Eq)]
pub enum Egress {
    /// A TCP connection to the upstream itself.
    Direct,
    /// A `CONNECT` tunnel through an HTTP proxy.
    Proxy {
        /// `http://host:port` of the proxy, without credentials.
        uri: http::Uri,
        /// `Proxy-Authorization` (Basic, from the URL's user and password), marked sensitive.
        auth: Option<HeaderValue>,
        /// Where it was configured: `upstream.proxy` or the variable's name.
        from: &'static str,
    },
}

impl fmt::Debug for Egress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `direct`, or the proxy's address and where it came from; never its credentials.
impl fmt::Display for Egress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Direct => f.write_str("direct"),
            Self::Proxy { uri, auth, from } => {
                let credentials = if auth.is_some() { ", with credentials" } else { "" };
                write!(f, "through proxy {uri} (CONNECT; from {from}{credentials})")
            }
        }
    }
}

/// `[budgets.NAME]`, validated.
#[derive(Debug, Clone)]
pub struct BudgetSpec {
    /// The budget's name.
    pub name: String,
    /// The limit shared by every key naming this budget.
    pub limit: Limit,
    /// How long a request over the budget may wait for its turn.
    pub max_wait: Option<Duration>,
    /// The budget limit's own mode.
    pub mode: Option<Mode>,
}

/// One configured key: its source and what it may do.
#[derive(Debug, Clone)]
pub struct KeySpec {
    /// The name in `[keys.NAME]`.
    pub name: String,
    /// Where the secret is read from.
    pub source: KeySource,
    /// Scopes granted to the key upstream.
    pub scopes: ScopeSet,
    /// Limit shared by every client using this key.
    pub limit: Option<Limit>,
    /// Index of the budget this key shares, if any.
    pub budget: Option<usize>,
    /// Cap on concurrent upstream requests with this key.
    pub max_in_flight: Option<std::num::NonZeroU32>,
    /// How long a request over the key's limit may wait for its turn.
    pub max_wait: Option<Duration>,
    /// Its limit's own mode.
    pub limit_mode: Option<Mode>,
}

/// Index of a key in `Settings::keys`.
pub type KeyId = usize;

/// One configured route, as validated.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// The pattern as configured (`"/reports/*"`), used in logs and metrics.
    pub pattern: Arc<str>,
    /// The key injected for this route.
    pub key: KeyId,
    /// The scope a caller needs (for GraphQL: to run queries).
    pub scope: Scope,
    /// REST or GraphQL.
    pub kind: RouteKind,
    /// REST: POSTs are reads (GET and HEAD always are; on GraphQL, queries).
    pub read_only: bool,
    /// How long successful read answers are kept, when the route caches.
    pub cache_ttl: Option<Duration>,
    /// The mode of its scope checks (and of limits without a mode of their own).
    pub mode: Option<Mode>,
}

/// `[telemetry]`, validated: traces are exported only with an endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySettings {
    /// Where spans go: the collector's `/v1/traces` (`http://` only).
    pub endpoint: http::Uri,
    /// Whether a caller's `traceparent` is continued.
    pub trust_incoming: bool,
    /// The share of new traces kept, 0..=1.
    pub sampling_ratio: f64,
    /// Finished spans waiting for export at most.
    pub max_queued_spans: usize,
    /// Longest export call.
    pub export_timeout: Duration,
    /// `service.name`.
    pub service_name: String,
}

/// `[cache]`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// Bytes every cached answer may use together.
    pub max_bytes: u64,
    /// Larger answers are neither cached nor shared between callers.
    pub max_entry_bytes: u64,
}

/// What mmgate checks in a route's requests beyond the route's scope.
#[derive(Debug, Clone)]
pub enum RouteKind {
    /// Forwarded as is; only the route's scope is checked.
    Rest,
    /// Every GraphQL operation is parsed and checked.
    Graphql(GraphqlRule),
}

/// The validated configuration every request is served with. Built only by
/// validation (`Settings::load`, `Settings::from_toml`); read through its accessors.
#[derive(Debug, Clone)]
pub struct Settings {
    pub(super) origin: ConfigOrigin,
    pub(super) server: ServerSettings,
    pub(super) upstream: UpstreamSettings,
    pub(super) scopes: ScopeNames,
    pub(super) keys: Vec<KeySpec>,
    pub(super) budgets: Vec<BudgetSpec>,
    pub(super) routes: RouteTable<RouteSpec>,
    pub(super) clients: ClientTable,
    pub(super) shared: Option<SharedSettings>,
    pub(super) cache: CacheSettings,
    pub(super) telemetry: Option<TelemetrySettings>,
    pub(super) warnings: Vec<String>,
}

impl Settings {
    /// Where it came from.
    pub fn origin(&self) -> &ConfigOrigin {
        &self.origin
    }

    /// `[server]`.
    pub fn server(&self) -> &ServerSettings {
        &self.server
    }

    /// `[upstream]`.
    pub fn upstream(&self) -> &UpstreamSettings {
        &self.upstream
    }

    /// The names behind every interned scope.
    pub fn scopes(&self) -> &ScopeNames {
        &self.scopes
    }

    /// `[keys.*]`, in name order; routes refer to them by index.
    pub fn keys(&self) -> &[KeySpec] {
        &self.keys
    }

    /// `[budgets.*]`, in name order; keys refer to them by index.
    pub fn budgets(&self) -> &[BudgetSpec] {
        &self.budgets
    }

    /// `[[routes]]`, most specific first.
    pub fn routes(&self) -> &RouteTable<RouteSpec> {
        &self.routes
    }

    /// `[clients.*]`.
    pub fn clients(&self) -> &ClientTable {
        &self.clients
    }

    /// `[limits]`: the limiter shared by replicas, if configured.
    pub fn shared(&self) -> Option<&SharedSettings> {
        self.shared.as_ref()
    }

    /// `[cache]`.
    pub fn cache(&self) -> CacheSettings {
        self.cache
    }

    /// OpenTelemetry traces, when configured.
    pub fn telemetry(&self) -> Option<&TelemetrySettings> {
        self.telemetry.as_ref()
    }

    /// Things that work but that an operator should look at.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Keeps `running`'s addresses: a reload cannot move the listeners, so
    /// the settings say where they really are. Returns the settings changed.
    pub fn keep_addresses(&mut self, running: &ServerSettings) -> Vec<(&'static str, ListenAddr, ListenAddr)> {
        let mut kept = Vec::new();
        for (name, was, now) in [
            ("listen", &running.listen, &mut self.server.listen),
            ("admin_listen", &running.admin_listen, &mut self.server.admin_listen),
        ] {
            if was != now {
                kept.push((name, was.clone(), std::mem::replace(now, was.clone())));
            }
        }
        kept
    }
}
