//! Configuration: figment reads the TOML file (or the embedded default) and
//! `MMGATE_` environment overrides into `RawConfig`; `Settings::try_from`
//! validates it all at once into the runtime types the request path uses.
//!
//! Request code only ever sees `Settings`. Every mistake is reported together,
//! each naming the key path and the fix, prefixed by the file it came from.

mod egress;
mod raw;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use http::uri::{Authority, Scheme};
use http::HeaderValue;
use rustls::pki_types::CertificateDer;

pub use raw::{schema, RawConfig};

use crate::client::ClientTable;
use crate::keys::KeySpec;
use crate::limit::{Limit, SharedSettings};
use crate::policy::ScopeNames;
use crate::route::RouteTable;

/// The configuration `mmgate` runs with when given no file.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../config/default.toml");

/// Where a configuration came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOrigin {
    /// A TOML file on disk.
    File(PathBuf),
    /// The embedded default.
    Embedded,
    /// TOML text handed to `Settings::from_toml`.
    Inline,
}

impl ConfigOrigin {
    /// `--config`, else `MMGATE_CONFIG`, else the embedded default.
    pub fn resolve(cli: Option<PathBuf>) -> Self {
        cli.or_else(|| std::env::var_os("MMGATE_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from))
            .map_or(Self::Embedded, Self::File)
    }
}

impl fmt::Display for ConfigOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Embedded => f.write_str("the embedded default config"),
            Self::Inline => f.write_str("inline config"),
        }
    }
}

/// One invalid setting: where, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key path, e.g. `routes[1].key`.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("{origin}: {message}")]
    Parse { origin: ConfigOrigin, message: String },
    #[error("{origin}: invalid configuration:\n{}", list(.problems))]
    Invalid { origin: ConfigOrigin, problems: Vec<Problem> },
}

fn list(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
}

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

/// The proxy variables of the environment, read once per load: `upstream.proxy`
/// wins over them, and loopback upstreams ignore them.
#[derive(Debug, Clone, Default)]
pub struct ProxyEnv {
    /// `(variable name, value)` of the first set of each: HTTPS_PROXY / https_proxy, HTTP_PROXY / http_proxy, ALL_PROXY / all_proxy.
    pub https: Option<(&'static str, String)>,
    /// See `https`.
    pub http: Option<(&'static str, String)>,
    /// See `https`.
    pub all: Option<(&'static str, String)>,
    /// NO_PROXY / no_proxy.
    pub no: Option<String>,
}

impl ProxyEnv {
    /// The proxy variables of this process, upper case first (as curl reads them).
    pub fn from_env() -> Self {
        let first = |names: [&'static str; 2]| {
            names.into_iter().find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()).map(|v| (n, v)))
        };
        Self {
            https: first(["HTTPS_PROXY", "https_proxy"]),
            http: first(["HTTP_PROXY", "http_proxy"]),
            all: first(["ALL_PROXY", "all_proxy"]),
            no: first(["NO_PROXY", "no_proxy"]).map(|(_, v)| v),
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
}

/// The validated configuration every request is served with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where it came from.
    pub origin: ConfigOrigin,
    /// `[server]`.
    pub server: ServerSettings,
    /// `[upstream]`.
    pub upstream: UpstreamSettings,
    /// The names behind every interned scope.
    pub scopes: ScopeNames,
    /// `[keys.*]`, in name order; routes refer to them by index.
    pub keys: Vec<KeySpec>,
    /// `[budgets.*]`, in name order; keys refer to them by index.
    pub budgets: Vec<BudgetSpec>,
    /// `[[routes]]`.
    pub routes: RouteTable,
    /// `[clients.*]`.
    pub clients: ClientTable,
    /// `[limits]`: the limiter shared by replicas, if configured.
    pub shared: Option<SharedSettings>,
    /// Things that work but that an operator should look at.
    pub warnings: Vec<String>,
}

/// The environment's configuration overrides: only `MMGATE_<TABLE>__<KEY>`
/// (`__` between levels) is one. Every other variable that merely starts
/// with `MMGATE_` is ignored: Kubernetes puts `MMGATE_PORT=tcp://...`,
/// `MMGATE_SERVICE_HOST` and the like into every pod of a namespace with a
/// Service named `mmgate`, and `MMGATE_CONFIG` names the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Each override: the variable's name and the key path it sets.
    vars: Vec<(String, Vec<String>)>,
}

impl Overrides {
    const PREFIX: &'static str = "MMGATE_";

    /// The overrides among this process's environment variables.
    pub fn from_env() -> Self {
        Self::from_names(std::env::vars_os().filter_map(|(name, _)| name.into_string().ok()))
    }

    /// The overrides among the variables `names`.
    pub fn from_names(names: impl IntoIterator<Item = String>) -> Self {
        let mut vars: Vec<(String, Vec<String>)> = names
            .into_iter()
            .filter_map(|name| {
                let rest = name.strip_prefix(Self::PREFIX)?;
                let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
                (path.len() > 1 && path.iter().all(|p| !p.is_empty())).then_some((name, path))
            })
            .collect();
        vars.sort();
        Self { vars }
    }

    /// Whether a variable sets exactly this key path.
    pub fn sets(&self, path: &[&str]) -> bool {
        self.vars.iter().any(|(_, p)| p.iter().map(String::as_str).eq(path.iter().copied()))
    }

    /// The first variable whose key path starts with `path`.
    fn var_under(&self, path: &[String]) -> Option<&str> {
        self.vars.iter().find(|(_, p)| p.starts_with(path)).map(|(name, _)| name.as_str())
    }

    /// Overrides that can never apply: arrays are set in the file only.
    fn refuse_arrays(&self, origin: &ConfigOrigin) -> Result<(), ConfigError> {
        match self.vars.iter().find(|(_, path)| path[0] == "routes") {
            Some((name, _)) => Err(ConfigError::Parse {
                origin: origin.clone(),
                message: format!(
                    "{name}: [[routes]] is an array and cannot be overridden from the environment; edit the config file"
                ),
            }),
            None => Ok(()),
        }
    }

    /// figment's reader of exactly these variables.
    fn provider(&self) -> Env {
        let keys: Vec<String> = self.vars.iter().map(|(_, path)| path.join("__")).collect();
        Env::prefixed(Self::PREFIX).filter(move |key| keys.iter().any(|k| key == k.as_str())).split("__")
    }
}

impl Settings {
    /// Loads the configuration from `origin` with `MMGATE_` environment overrides.
    pub fn load(origin: ConfigOrigin) -> Result<Self, ConfigError> {
        Self::load_with(origin, &Overrides::from_env(), &ProxyEnv::from_env())
    }

    /// Loads the configuration from `origin` with `overrides` and proxy variables `proxies`.
    pub fn load_with(origin: ConfigOrigin, overrides: &Overrides, proxies: &ProxyEnv) -> Result<Self, ConfigError> {
        let base = match &origin {
            ConfigOrigin::Embedded | ConfigOrigin::Inline => Figment::from(Toml::string(EMBEDDED_DEFAULT)),
            ConfigOrigin::File(path) => Figment::from(Toml::string(&read_file(path)?)),
        };
        overrides.refuse_arrays(&origin)?;
        Self::from_figment(base.merge(overrides.provider()), origin, overrides, proxies)
    }

    /// Parses TOML text alone, without environment overrides (for tests and tools).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let (overrides, proxies) = (Overrides::default(), ProxyEnv::default());
        Self::from_figment(Figment::from(Toml::string(text)), ConfigOrigin::Inline, &overrides, &proxies)
    }

    fn from_figment(
        figment: Figment,
        origin: ConfigOrigin,
        overrides: &Overrides,
        proxies: &ProxyEnv,
    ) -> Result<Self, ConfigError> {
        let raw: RawConfig = figment.extract().map_err(|e| ConfigError::Parse {
            origin: origin.clone(),
            message: e.into_iter().map(|e| describe_figment_error(&e, overrides)).collect::<Vec<_>>().join("; "),
        })?;
        validate::settings(raw, origin.clone(), overrides, proxies)
            .map_err(|problems| ConfigError::Invalid { origin, problems })
    }
}

/// Whether `name` can name a key, budget or client: 1 to 64 of `A-Za-z0-9_-.`
/// (names become log fields and metric labels).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    // figment would silently fall back to defaults for a missing file.
    std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
        path: path.display().to_string(),
        reason: match e.kind() {
            std::io::ErrorKind::NotFound => "no such file; pass an existing file with --config".into(),
            _ => e.to_string(),
        },
    })
}

/// One figment error, naming the key path, or the variable when an
/// environment override caused it.
fn describe_figment_error(e: &figment::Error, overrides: &Overrides) -> String {
    // figment tags a bad value with the provider it came from; an unknown
    // key with the table that holds it, so a variable setting it is looked for.
    let mut from_env = e.metadata.as_ref().is_some_and(|m| m.name.contains("environment"));
    let what = match &e.kind {
        figment::error::Kind::UnknownField(field, expected) => {
            from_env = true;
            format!("unknown key `{field}`; expected one of: {}", expected.join(", "))
        }
        kind => kind.to_string(),
    };
    if from_env {
        if let Some(var) = overrides.var_under(&e.path) {
            return format!("{var}: {what} (this variable overrides `{}`)", e.path.join("."));
        }
    }
    let key = e.path.join(".");
    if key.is_empty() {
        what
    } else {
        format!("{key}: {what}")
    }
}
