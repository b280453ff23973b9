//! Configuration: figment reads the TOML file (or the embedded default) and
//! `MMGATE_` environment overrides into `RawConfig`; `Settings::try_from`
//! validates it all at once into the runtime types the request path uses.
//!
//! Request code only ever sees `Settings`. Every mistake is reported together,
//! each naming the key path and the fix, prefixed by the file it came from.

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

impl Settings {
    /// Loads the configuration from `origin` with `MMGATE_` environment overrides.
    pub fn load(origin: ConfigOrigin) -> Result<Self, ConfigError> {
        let base = match &origin {
            ConfigOrigin::Embedded | ConfigOrigin::Inline => Figment::from(Toml::string(EMBEDDED_DEFAULT)),
            ConfigOrigin::File(path) => Figment::from(Toml::string(&read_file(path)?)),
        };
        // MMGATE_CONFIG names the file; it is not a setting.
        let figment = base.merge(Env::prefixed("MMGATE_").split("__").ignore(&["config"]));
        Self::from_figment(figment, origin)
    }

    /// Parses TOML text alone, without environment overrides (for tests and tools).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_figment(Figment::from(Toml::string(text)), ConfigOrigin::Inline)
    }

    fn from_figment(figment: Figment, origin: ConfigOrigin) -> Result<Self, ConfigError> {
        let raw: RawConfig = figment.extract().map_err(|e| ConfigError::Parse {
            origin: origin.clone(),
            message: e.into_iter().map(|e| describe_figment_error(&e)).collect::<Vec<_>>().join("; "),
        })?;
        validate::settings(raw, origin.clone()).map_err(|problems| ConfigError::Invalid { origin, problems })
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

fn describe_figment_error(e: &figment::Error) -> String {
    let key = e.path.join(".");
    let from_env = e.metadata.as_ref().is_some_and(|m| m.name.contains("environment"));
    let what = match &e.kind {
        figment::error::Kind::UnknownField(field, expected) => {
            format!("unknown key `{field}`; expected one of: {}", expected.join(", "))
        }
        kind => kind.to_string(),
    };
    let place = if from_env { " (from an MMGATE_ environment variable)" } else { "" };
    if key.is_empty() {
        format!("{what}{place}")
    } else {
        format!("{key}: {what}{place}")
    }
}
